//! flashfleet's REST API inside an integrator's own actix-web application, behind the
//! integrator's own authentication.
//!
//! The integrator's portal already has its users and API keys. It mounts the whole API under
//! `/portal` with `flashfleet_api::configure`, and implements [`Authenticator`] so that its
//! own `X-Api-Key` header decides who calls; flashfleet then applies its tenancy rules to that
//! caller (here a manager of the organization `acme`). It adds one route of its own,
//! `GET /portal/whoami`, protected by the same authenticator through the [`Caller`] extractor.
//! The engine runs in the same process and upgrades devices over SSH.
//!
//! Run it with `cargo run --example embed_api`: it keeps its SQLite database and firmware files
//! in a temporary directory (removed on exit), listens on 127.0.0.1:8080 (or the address in
//! `EMBED_API_LISTEN`), and prints an API key of the portal's user `acme-noc` on standard
//! output. Then, from another terminal:
//!
//! ```text
//! KEY=<the printed key>
//! curl -s http://127.0.0.1:8080/portal/whoami -H "X-Api-Key: $KEY"
//! curl -s http://127.0.0.1:8080/portal/api/v1/users/organization/ -H "X-Api-Key: $KEY"
//! curl -s -X POST http://127.0.0.1:8080/portal/api/v1/firmware-upgrader/category/ \
//!      -H "X-Api-Key: $KEY" -H 'Content-Type: application/json' \
//!      -d '{"name": "Archer C7", "organization": "<the organization id from above>"}'
//! curl -s http://127.0.0.1:8080/portal/api/v1/firmware-upgrader/category/ -H "X-Api-Key: $KEY"
//! curl -s -i http://127.0.0.1:8080/portal/api/v1/firmware-upgrader/build/   # 401, no key
//! ```
//!
//! The OpenAPI document is at `/portal/api/v1/openapi.json`. Stop it with Ctrl-C.

#![expect(clippy::print_stdout, reason = "an example prints what it does")]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{App, HttpResponse, HttpServer, web};
use async_trait::async_trait;
use flashfleet::api::{ApiConfig, ApiState, AuthError, AuthRequest, Authenticator, Caller};
use flashfleet::db::{Db, DbConfig, SecretKey};
use flashfleet::engine::{Engine, EngineConfig, EventBus};
use flashfleet::models::repository::DirectoryRepository as _;
use flashfleet::models::{Actor, NewOrganization, NewUser, Role};
use flashfleet::storage::{FirmwareStore, FirmwareStoreOptions};
use flashfleet::upgrader::UpgraderRegistry;
use flashfleet::upgrader::openwrt::{OpenWrtSettings, OpenWrtUpgrader};
use tokio_util::sync::CancellationToken;

/// The header the portal's clients authenticate with.
const API_KEY_HEADER: &str = "x-api-key";

/// The portal's own API keys, each standing for one of its users. A real portal keeps them in
/// its own database (hashed); what flashfleet needs from it is the [`Actor`]: a user id and the
/// roles in flashfleet's organizations.
struct PortalKeys {
    actors: HashMap<String, Actor>,
}

#[async_trait]
impl Authenticator for PortalKeys {
    async fn authenticate(&self, request: &AuthRequest<'_>) -> Result<Option<Actor>, AuthError> {
        let Some(key) = request.headers.get(API_KEY_HEADER) else {
            // No key: flashfleet answers 401 "Authentication credentials were not provided."
            return Ok(None);
        };
        let key = key
            .to_str()
            .map_err(|_| AuthError::Invalid("Invalid API key.".to_owned()))?;
        match self.actors.get(key) {
            Some(actor) => Ok(Some(actor.clone())),
            None => Err(AuthError::Invalid("Invalid API key.".to_owned())),
        }
    }
}

/// `GET /portal/whoami`: the portal's own route, behind the same authentication.
async fn whoami(caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "username": caller.actor.username,
        "superuser": caller.actor.is_superuser,
        "organizations": caller
            .actor
            .memberships
            .iter()
            .map(|(organization, role)| serde_json::json!({"id": organization.0, "role": role.as_str()}))
            .collect::<Vec<_>>(),
    }))
}

/// The portal's user `acme-noc`, manager of the organization `acme`, in flashfleet's database
/// (flashfleet's objects belong to organizations, and operations record who started them).
async fn portal_user(db: &Db) -> Result<Actor, Box<dyn std::error::Error>> {
    let organization = NewOrganization::new("Acme Networks", "acme");
    organization.validate()?;
    let organization = db
        .insert_organization(&organization.into_organization())
        .await?;
    let user = NewUser::new("acme-noc");
    user.validate()?;
    let user = db.insert_user(&user.into_user()).await?;
    db.set_membership(user.id, organization.id, Role::Manager)
        .await?;
    Ok(db
        .actor(user.id)
        .await?
        .ok_or("the portal's user was just created")?)
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen: SocketAddr = std::env::var("EMBED_API_LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:8080".to_owned())
        .parse()?;
    let data = tempfile::tempdir()?;
    let db = Db::connect(&DbConfig::new(
        format!("sqlite://{}", data.path().join("portal.db").display()),
        SecretKey::generate()?,
    ))
    .await?;
    let store = FirmwareStore::local(
        data.path().join("firmware"),
        FirmwareStoreOptions::default(),
    )?;
    let mut upgraders = UpgraderRegistry::empty();
    upgraders.register(
        "openwrt-ssh",
        Arc::new(OpenWrtUpgrader::new(OpenWrtSettings::default())),
    );
    let engine = Engine::new(
        Arc::new(db.clone()),
        upgraders,
        Arc::new(store.clone()),
        EventBus::default(),
        EngineConfig::default(),
    );

    let key = uuid::Uuid::new_v4().simple().to_string();
    let keys = PortalKeys {
        actors: HashMap::from([(key.clone(), portal_user(&db).await?)]),
    };
    let api = ApiState::new(
        Arc::new(db.clone()),
        engine.clone(),
        store,
        ApiConfig::default(),
    )
    .with_authenticator(Arc::new(keys));

    let shutdown = CancellationToken::new();
    let engine_task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { engine.run(shutdown).await }
    });
    let server = HttpServer::new(move || {
        App::new().app_data(web::Data::new(api.clone())).service(
            web::scope("/portal")
                .route("/whoami", web::get().to(whoami))
                .configure(flashfleet::api::configure),
        )
    })
    .bind(listen)?
    .run();
    println!(
        "listening on http://{listen}/portal/ (data in {})",
        data.path().display()
    );
    println!("API key of acme-noc: {key}");
    // The server stops on Ctrl-C (actix-web's signal handling); then the engine stops too.
    let served = server.await;
    shutdown.cancel();
    engine_task.await??;
    served?;
    Ok(())
}
