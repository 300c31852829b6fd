//! Which upgrader handles which connection type (upstream's `OPENWISP_FIRMWARE_UPGRADERS_MAP`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use flashfleet_models::credentials::ConnectionType;

use crate::Upgrader;

/// Upgraders by connection type.
///
/// Integrators add their own upgraders or replace built-in ones with
/// [`UpgraderRegistry::register`].
#[derive(Clone)]
pub struct UpgraderRegistry {
    upgraders: BTreeMap<ConnectionType, Arc<dyn Upgrader>>,
}

impl UpgraderRegistry {
    /// A registry without any upgrader.
    pub fn empty() -> Self {
        Self {
            upgraders: BTreeMap::new(),
        }
    }

    /// Registers `upgrader` for `connection_type`, replacing any earlier one; returns the
    /// registry for chaining.
    pub fn register(&mut self, connection_type: &str, upgrader: Arc<dyn Upgrader>) -> &mut Self {
        self.upgraders
            .insert(ConnectionType::new(connection_type), upgrader);
        self
    }

    /// The upgrader of `connection_type`, if one is registered.
    pub fn get(&self, connection_type: &ConnectionType) -> Option<Arc<dyn Upgrader>> {
        self.upgraders.get(connection_type).cloned()
    }

    /// The registered connection types, in order.
    pub fn connection_types(&self) -> impl Iterator<Item = &ConnectionType> {
        self.upgraders.keys()
    }
}

impl Default for UpgraderRegistry {
    /// The built-in upgraders: with the `openwrt` feature, `openwrt-ssh` is the
    /// [`OpenWrtUpgrader`](crate::openwrt::OpenWrtUpgrader) with upstream's default settings.
    /// Without it, the registry is empty.
    fn default() -> Self {
        #[cfg_attr(
            not(feature = "openwrt"),
            expect(unused_mut, reason = "nothing to register")
        )]
        let mut registry = Self::empty();
        #[cfg(feature = "openwrt")]
        registry.register(
            ConnectionType::OPENWRT_SSH,
            Arc::new(crate::openwrt::OpenWrtUpgrader::new(
                crate::openwrt::OpenWrtSettings::default(),
            )),
        );
        registry
    }
}

impl fmt::Debug for UpgraderRegistry {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_list()
            .entries(self.upgraders.keys())
            .finish()
    }
}
