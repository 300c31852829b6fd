//! The running parts of a server, built from the configuration: the database, firmware
//! storage, the image map, the upgraders and the engine.

use std::sync::Arc;

use anyhow::Context as _;
use flashfleet_boards::ImageMap;
use flashfleet_db::Db;
use flashfleet_engine::{Engine, EventBus};
use flashfleet_storage::FirmwareStore;

use crate::config::Config;
use crate::database;

/// Everything `serve` runs, and what commands that change devices need (the engine's hooks).
#[derive(Clone)]
pub struct Stack {
    /// The database.
    pub db: Db,
    /// Firmware storage.
    pub store: FirmwareStore,
    /// The image-to-board map (built-in OpenWrt table and custom images).
    pub image_map: Arc<ImageMap>,
    /// The engine (not running until someone calls `run`).
    pub engine: Engine,
}

impl Stack {
    /// Opens the database (creating it and applying migrations when needed) and storage, and
    /// builds the engine with the configured upgraders.
    pub async fn build(config: &Config) -> anyhow::Result<Stack> {
        let db = database::connect(config).await?;
        let store = FirmwareStore::from_config(
            &config.storage_config().to_library(),
            config.max_file_size(),
        )
        .context("could not open the firmware storage")?;
        let image_map = Arc::new(config.image_map()?);
        let engine = Engine::new(
            Arc::new(db.clone()),
            config.upgrader_registry()?,
            Arc::new(store.clone()),
            EventBus::default(),
            config.engine_config(),
        )
        .with_image_map(Arc::clone(&image_map));
        Ok(Stack {
            db,
            store,
            image_map,
            engine,
        })
    }
}
