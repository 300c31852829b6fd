//! `FLASHFLEET_*` environment variables laid over the configuration file.
//!
//! `FLASHFLEET_<KEY>` sets a top-level key and `FLASHFLEET_<SECTION>__<KEY>` a key of a section
//! (`FLASHFLEET_ENGINE__RETRY__MAX_RETRIES=7`), names in any case. `FLASHFLEET_DATABASE_URL` is
//! the short form of `FLASHFLEET_DATABASE__URL`. A value is read as a TOML value when it is one
//! (`7`, `true`, `["a", "b"]`, `"quoted"`) and as a plain string otherwise, so write
//! `FLASHFLEET_ENGINE__NAME='"42"'` for a string that looks like a number. Variables whose first
//! key is not a setting (`FLASHFLEET_TEST_POSTGRES_URL`, used by the tests) are left alone and
//! reported back, so the caller can log them.

use anyhow::{Context as _, bail};
use toml::{Table, Value};

use crate::config::Config;

const PREFIX: &str = "FLASHFLEET_";

/// Short names of nested keys.
const ALIASES: &[(&str, &[&str])] = &[("DATABASE_URL", &["database", "url"])];

/// Sets the keys named by the `FLASHFLEET_*` variables of `environment` in `table`, in the
/// order of the variables' names; returns the names of the variables that name no setting.
pub(crate) fn apply(
    table: &mut Table,
    environment: &[(String, String)],
) -> anyhow::Result<Vec<String>> {
    let settings = top_level_keys();
    let mut variables: Vec<&(String, String)> = environment
        .iter()
        .filter(|(name, _)| name.starts_with(PREFIX))
        .collect();
    variables.sort();
    let mut ignored = Vec::new();
    for (name, raw_value) in variables {
        let path = key_path(&name[PREFIX.len()..]);
        if !path.first().is_some_and(|first| settings.contains(first)) {
            ignored.push(name.clone());
            continue;
        }
        if path.iter().any(String::is_empty) {
            bail!("environment variable {name}: empty key (use `__` between keys)");
        }
        set(table, &path, parse_value(raw_value))
            .with_context(|| format!("environment variable {name}"))?;
    }
    Ok(ignored)
}

/// The keys of the configuration file a variable name (without the prefix) stands for.
fn key_path(name: &str) -> Vec<String> {
    if let Some((_, path)) = ALIASES
        .iter()
        .find(|(alias, _)| alias.eq_ignore_ascii_case(name))
    {
        return path.iter().map(|key| (*key).to_owned()).collect();
    }
    name.split("__").map(str::to_ascii_lowercase).collect()
}

/// The top-level keys of [`Config`], from its schema.
fn top_level_keys() -> Vec<String> {
    let schema = schemars::schema_for!(Config);
    schema
        .get("properties")
        .and_then(serde_json::Value::as_object)
        .map(|properties| properties.keys().cloned().collect())
        .unwrap_or_default()
}

/// A variable's value as a TOML value if it is one, else as a string. Dates stay strings.
fn parse_value(raw_value: &str) -> Value {
    let parsed = toml::from_str::<Table>(&format!("value = {raw_value}"))
        .ok()
        .filter(|table| table.len() == 1)
        .and_then(|mut table| table.remove("value"))
        .filter(|value| !matches!(value, Value::Datetime(_)));
    parsed.unwrap_or_else(|| Value::String(raw_value.to_owned()))
}

fn set(table: &mut Table, path: &[String], value: Value) -> anyhow::Result<()> {
    let Some((last, parents)) = path.split_last() else {
        bail!("no key");
    };
    let mut current = table;
    for (depth, key) in parents.iter().enumerate() {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        current = match entry {
            Value::Table(nested) => nested,
            _ => bail!("`{}` is not a section", path[..=depth].join(".")),
        };
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn nested_keys_aliases_and_typed_values() {
        let mut table = Table::new();
        let ignored = apply(
            &mut table,
            &environment(&[
                ("FLASHFLEET_ENGINE__RETRY__JITTER", "false"),
                ("FLASHFLEET_DATABASE_URL", "postgres://db/x"),
                ("FLASHFLEET_OPENWRT__NON_CRITICAL_SERVICES", "[\"uhttpd\"]"),
                ("FLASHFLEET_ENGINE__NAME", "\"42\""),
                ("FLASHFLEET_LOG_LEVEL", "debug"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert!(ignored.is_empty());
        let expected: Table = toml::from_str(
            "log_level = \"debug\"\n[engine]\nname = \"42\"\n[engine.retry]\njitter = false\n\
             [database]\nurl = \"postgres://db/x\"\n[openwrt]\nnon_critical_services = [\"uhttpd\"]\n",
        )
        .unwrap();
        assert_eq!(table, expected);
    }

    #[test]
    fn variables_that_name_no_setting_are_reported_not_applied() {
        let mut table = Table::new();
        let ignored = apply(
            &mut table,
            &environment(&[
                ("FLASHFLEET_TEST_POSTGRES_URL", "postgres://x"),
                ("FLASHFLEET_LISTN", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(
            ignored,
            ["FLASHFLEET_LISTN", "FLASHFLEET_TEST_POSTGRES_URL"]
        );
        assert!(table.is_empty());
    }

    #[test]
    fn a_value_where_a_section_is_expected_is_an_error() {
        let mut table: Table = toml::from_str("engine = 5").unwrap();
        let error = apply(
            &mut table,
            &environment(&[("FLASHFLEET_ENGINE__LEASE", "3")]),
        )
        .unwrap_err();
        assert!(
            format!("{error:#}").contains("`engine` is not a section"),
            "{error:#}"
        );
        let error = apply(
            &mut Table::new(),
            &environment(&[("FLASHFLEET_ENGINE____X", "3")]),
        )
        .unwrap_err();
        assert!(error.to_string().contains("empty key"), "{error}");
    }

    #[test]
    fn values_that_are_not_toml_are_strings() {
        assert_eq!(
            parse_value("127.0.0.1:8000"),
            Value::String("127.0.0.1:8000".to_owned())
        );
        assert_eq!(
            parse_value("2024-01-01"),
            Value::String("2024-01-01".to_owned())
        );
        assert_eq!(
            parse_value("1\nlisten = 2"),
            Value::String("1\nlisten = 2".to_owned())
        );
        assert_eq!(parse_value("1500"), Value::Integer(1500));
    }
}
