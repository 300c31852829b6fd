//! Upgrade options: what the operator asks the upgrader to do differently, as a JSON object.
//!
//! Each upgrader defines which options it takes. The OpenWrt upgrader's options are
//! sysupgrade's flags (upstream §1.7), checked here so that the API can refuse bad options
//! before anything is queued.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::ValidationErrors;

/// Options for an upgrader, as the JSON object upstream stores (`{}` by default).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UpgradeOptions(pub serde_json::Map<String, serde_json::Value>);

/// The sysupgrade flags the OpenWrt upgrader accepts, in upstream's schema order, with their
/// titles.
pub const OPENWRT_FLAGS: [(&str, &str); 7] = [
    ("c", "Attempt to preserve all changed files in /etc/ (-c)"),
    (
        "o",
        "Attempt to preserve all changed files in /, except those from packages but including changed confs. (-o)",
    ),
    ("n", "Do not save configuration over reflash (-n)"),
    (
        "u",
        "Skip from backup files that are equal to those in /rom (-u)",
    ),
    (
        "p",
        "Do not attempt to restore the partition table after flash. (-p)",
    ),
    (
        "k",
        "Include in backup a list of current installed packages at /etc/backup/installed_packages.txt (-k)",
    ),
    (
        "F",
        "Flash image even if image checks fail, this is dangerous! (-F)",
    ),
];

impl UpgradeOptions {
    /// Options from a JSON value, which must be an object.
    pub fn from_json(value: serde_json::Value) -> Result<Self, ValidationErrors> {
        match value {
            serde_json::Value::Object(map) => Ok(Self(map)),
            serde_json::Value::Null => Ok(Self::default()),
            _ => Err(ValidationErrors::field(
                "upgrade_options",
                "The upgrade options are invalid",
            )),
        }
    }

    /// Whether no option is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The boolean option `key`, `None` when absent.
    pub fn flag(&self, key: &str) -> Option<bool> {
        self.0.get(key).and_then(serde_json::Value::as_bool)
    }

    /// Checks the options against the OpenWrt upgrader's schema and rules: only the keys of
    /// [`OPENWRT_FLAGS`], boolean values, `-n` with neither `-o` nor `-c`, and `-F` (which
    /// flashes images that fail their checks) only when `allow_force` is true.
    pub fn validate_openwrt(&self, allow_force: bool) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let known: BTreeSet<&str> = OPENWRT_FLAGS.iter().map(|(key, _)| *key).collect();
        for (key, value) in &self.0 {
            if !known.contains(key.as_str()) || !value.is_boolean() {
                errors.add(
                    ValidationErrors::NON_FIELD,
                    "The upgrade options are invalid",
                );
                return errors.into_result();
            }
        }
        if self.flag("n") == Some(true) {
            if self.flag("o") == Some(true) {
                errors.add(
                    "upgrade_options",
                    "The \"-n\" and \"-o\" options cannot be used together",
                );
            }
            if self.flag("c") == Some(true) {
                errors.add(
                    "upgrade_options",
                    "The \"-n\" and \"-c\" options cannot be used together",
                );
            }
        }
        if self.flag("F") == Some(true) && !allow_force {
            errors.add(
                "upgrade_options",
                "The \"-F\" option (flash even if image checks fail) is not allowed for this user",
            );
        }
        errors.into_result()
    }

    /// The sysupgrade flags these options give, in schema order: each flag set to `true`, and
    /// `-c` when `c` is absent, unless `-n` is set.
    ///
    /// Upstream appends the default `-c` even when `-n` is set, producing the combination its
    /// own validation forbids (`-n -c`, upstream §9.7); flashfleet does not.
    pub fn sysupgrade_flags(&self) -> Vec<String> {
        OPENWRT_FLAGS
            .iter()
            .filter(|(key, _)| match self.flag(key) {
                Some(value) => value,
                None => *key == "c" && self.flag("n") != Some(true),
            })
            .map(|(key, _)| format!("-{key}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn options(value: serde_json::Value) -> UpgradeOptions {
        UpgradeOptions::from_json(value).unwrap()
    }

    #[test]
    fn empty_options_keep_the_configuration() {
        assert!(options(json!({})).validate_openwrt(false).is_ok());
        assert_eq!(options(json!({})).sysupgrade_flags(), ["-c"]);
    }

    #[test]
    fn flags_follow_upstreams_examples() {
        let all =
            options(json!({"c":true,"o":false,"u":false,"n":false,"p":false,"k":false,"F":true}));
        assert_eq!(all.sysupgrade_flags(), ["-c", "-F"]);
        assert_eq!(
            options(json!({"F":true,"n":true,"c":false})).sysupgrade_flags(),
            ["-n", "-F"]
        );
        let none =
            options(json!({"c":false,"o":false,"u":false,"n":false,"p":false,"k":false,"F":false}));
        assert!(none.sysupgrade_flags().is_empty());
    }

    #[test]
    fn dropping_the_configuration_never_adds_the_default_keep_flag() {
        let drop_config = options(json!({"n": true}));
        assert!(drop_config.validate_openwrt(false).is_ok());
        assert_eq!(drop_config.sysupgrade_flags(), ["-n"]);
    }

    #[test]
    fn exclusive_flags_are_refused_with_upstreams_messages() {
        let errors = options(json!({"n": true, "o": true, "c": true}))
            .validate_openwrt(false)
            .unwrap_err();
        assert_eq!(
            errors.messages("upgrade_options"),
            [
                "The \"-n\" and \"-o\" options cannot be used together",
                "The \"-n\" and \"-c\" options cannot be used together"
            ]
        );
    }

    #[test]
    fn unknown_keys_and_non_booleans_are_invalid() {
        for bad in [json!({"x": true}), json!({"c": "yes"})] {
            assert_eq!(
                options(bad)
                    .validate_openwrt(true)
                    .unwrap_err()
                    .messages("__all__"),
                ["The upgrade options are invalid"]
            );
        }
        assert!(UpgradeOptions::from_json(json!([1])).is_err());
    }

    #[test]
    fn force_needs_explicit_permission() {
        let force = options(json!({"F": true}));
        assert!(force.validate_openwrt(false).is_err());
        assert!(force.validate_openwrt(true).is_ok());
    }
}
