//! What every handler reaches through `web::Data<ApiState>`.

use std::sync::Arc;

use flashfleet_boards::ImageMap;
use flashfleet_engine::Engine;
use flashfleet_models::repository::Repository;
use flashfleet_storage::FirmwareStore;

use crate::auth::{Authenticator, TokenAuthenticator};
use crate::config::ApiConfig;
use crate::error::ApiError;
use crate::throttle::RequestThrottle;

/// The API's view of the application: persistence, the engine, firmware storage, who may
/// call, and the settings. Cheap to clone.
///
/// Mount the API with `app.app_data(web::Data::new(state)).configure(flashfleet_api::configure)`.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    repository: Arc<dyn Repository>,
    engine: Engine,
    store: FirmwareStore,
    authenticator: Arc<dyn Authenticator>,
    throttle: Option<RequestThrottle>,
    config: ApiConfig,
}

impl ApiState {
    /// The API over `repository`, queueing work on `engine` and keeping images in `store`,
    /// with the built-in bearer tokens ([`TokenAuthenticator`]).
    pub fn new(
        repository: Arc<dyn Repository>,
        engine: Engine,
        store: FirmwareStore,
        config: ApiConfig,
    ) -> ApiState {
        let authenticator = Arc::new(TokenAuthenticator::new(Arc::clone(&repository)));
        ApiState {
            inner: Arc::new(Inner {
                repository,
                engine,
                store,
                authenticator,
                throttle: config.throttle.map(RequestThrottle::new),
                config,
            }),
        }
    }

    /// The same API with `authenticator` deciding who calls (an embedding application's own
    /// users).
    pub fn with_authenticator(self, authenticator: Arc<dyn Authenticator>) -> ApiState {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            repository: Arc::clone(&shared.repository),
            engine: shared.engine.clone(),
            store: shared.store.clone(),
            authenticator: Arc::clone(&shared.authenticator),
            throttle: shared.config.throttle.map(RequestThrottle::new),
            config: shared.config.clone(),
        });
        ApiState {
            inner: Arc::new(Inner {
                authenticator,
                ..inner
            }),
        }
    }

    /// Persistence.
    pub fn repository(&self) -> &dyn Repository {
        self.inner.repository.as_ref()
    }

    /// The engine that runs upgrades.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Firmware storage.
    pub fn store(&self) -> &FirmwareStore {
        &self.inner.store
    }

    /// The image-to-board map (the engine's).
    pub fn image_map(&self) -> &ImageMap {
        self.inner.engine.image_map()
    }

    /// Who decides who calls.
    pub fn authenticator(&self) -> &dyn Authenticator {
        self.inner.authenticator.as_ref()
    }

    /// Who decides who calls, shared (for tasks of their own).
    pub(crate) fn authenticator_handle(&self) -> Arc<dyn Authenticator> {
        Arc::clone(&self.inner.authenticator)
    }

    /// The settings.
    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    /// Counts a request of `key` against the rate limit.
    pub(crate) fn check_throttle(&self, key: &str) -> Result<(), ApiError> {
        match &self.inner.throttle {
            Some(throttle) => throttle.check(key),
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ApiState")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}
