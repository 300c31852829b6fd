//! `flashfleet config --defaults`: the defaults as TOML, each key under its documentation.
//!
//! The documentation is the rustdoc of the configuration's fields, read back through their
//! JSON schema (schemars), so it is written once. Keys without a fixed default (because it
//! depends on another key, or because the setting is off by default) are shown commented out
//! with an example value.

use anyhow::Context as _;
use flashfleet_boards::CustomImage;
use serde_json::Value as Json;
use toml::{Table, Value};

use crate::config::{Config, StorageConfig};

/// The width comments are wrapped at.
const WIDTH: usize = 96;

const PREAMBLE: &str = "\
flashfleet configuration: the built-in defaults, as `flashfleet config --defaults` prints them.
Every key is optional. Keys shown commented out have no fixed default (it depends on another key, \
or the setting is off); their value is an example.
Environment variables override this file: FLASHFLEET_<KEY> for a top-level key, \
FLASHFLEET_<SECTION>__<KEY> for a key of a section (FLASHFLEET_ENGINE__TASK_TIMEOUT=1500), and \
FLASHFLEET_DATABASE_URL for database.url.";

/// The defaults as commented TOML.
pub(crate) fn defaults_toml() -> anyhow::Result<String> {
    let defaults =
        Table::try_from(Config::default()).context("could not serialize the defaults")?;
    let example = toml::to_string_pretty(&example()).context("could not render the defaults")?;
    let schema = schemars::schema_for!(Config);
    let root = schema.as_value();

    let mut output = String::new();
    push_comment(&mut output, PREAMBLE);
    let mut section: Vec<String> = Vec::new();
    let mut section_active = true;
    let mut value_active = true;
    for line in example.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(header) = header_path(line) {
            section = header;
            section_active = matches!(lookup(&defaults, &section), Some(Value::Table(_)));
            output.push('\n');
            if let Some(description) = schema_at(root, &section).and_then(description) {
                push_comment(&mut output, description);
            }
            push_line(&mut output, line, section_active);
            continue;
        }
        if line.starts_with([' ', '\t', ']']) {
            // The continuation of a multi-line value.
            push_line(&mut output, line, value_active);
            continue;
        }
        let key = key_of(line);
        let mut path = section.clone();
        path.push(key);
        value_active = section_active && lookup(&defaults, &path).is_some();
        if let Some(description) = schema_at(root, &path).and_then(description) {
            output.push('\n');
            push_comment(&mut output, description);
        }
        push_line(&mut output, line, value_active);
    }
    Ok(output)
}

/// The defaults with an example for every key that has no fixed default.
fn example() -> Config {
    let mut config = Config::default();
    config.secret_key_file = Some(config.secret_key_path());
    config.database.url = Some(config.database_url());
    config.storage = Some(StorageConfig::Local {
        path: config.data_dir.join("firmware"),
    });
    config.api.base_url = Some("https://firmware.example.com".to_owned());
    config.engine.name = Some("<hostname>-<pid>".to_owned());
    config.openwrt.remote_file_name = Some("firmware.bin".to_owned());
    config.custom_images = vec![CustomImage::new(
        "customimage-squashfs-sysupgrade.bin",
        "Custom WAP-1200",
        ["CWAP1200"],
    )];
    config
}

/// The path of a `[section]` or `[[array]]` header line.
fn header_path(line: &str) -> Option<Vec<String>> {
    let inner = line
        .strip_prefix("[[")
        .and_then(|rest| rest.strip_suffix("]]"))
        .or_else(|| {
            line.strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
        })?;
    Some(inner.split('.').map(unquote).collect())
}

fn key_of(line: &str) -> String {
    unquote(line.split_once(" = ").map_or(line, |(key, _)| key))
}

fn unquote(key: &str) -> String {
    key.trim().trim_matches('"').to_owned()
}

fn lookup<'a>(table: &'a Table, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let value = table.get(first)?;
    if rest.is_empty() {
        return Some(value);
    }
    match value {
        Value::Table(nested) => lookup(nested, rest),
        _ => None,
    }
}

/// The schema of the value at `path`, following references and the alternatives of optional
/// values and tagged enums.
fn schema_at<'a>(root: &'a Json, path: &[String]) -> Option<&'a Json> {
    path.iter()
        .try_fold(root, |schema, key| property(root, schema, key))
}

fn property<'a>(root: &'a Json, schema: &'a Json, key: &str) -> Option<&'a Json> {
    let schema = resolve(root, schema);
    if let Some(found) = schema
        .get("properties")
        .and_then(|properties| properties.get(key))
    {
        return Some(found);
    }
    ["anyOf", "oneOf", "allOf"]
        .iter()
        .filter_map(|combinator| schema.get(*combinator).and_then(Json::as_array))
        .flatten()
        .find_map(|alternative| property(root, alternative, key))
}

fn resolve<'a>(root: &'a Json, schema: &'a Json) -> &'a Json {
    schema
        .get("$ref")
        .and_then(Json::as_str)
        .and_then(|reference| reference.strip_prefix("#/"))
        .and_then(|pointer| root.pointer(&format!("/{pointer}")))
        .unwrap_or(schema)
}

fn description(schema: &Json) -> Option<&str> {
    schema.get("description").and_then(Json::as_str)
}

fn push_line(output: &mut String, line: &str, active: bool) {
    if !active {
        output.push_str("# ");
    }
    output.push_str(line);
    output.push('\n');
}

/// Appends `text` as `# ` comment lines wrapped at [`WIDTH`].
fn push_comment(output: &mut String, text: &str) {
    for paragraph in text.lines() {
        let mut line = String::from("#");
        for word in paragraph.split_whitespace() {
            if line.len() > 1 && line.len() + 1 + word.len() > WIDTH {
                output.push_str(&line);
                output.push('\n');
                line = String::from("#");
            }
            line.push(' ');
            line.push_str(word);
        }
        output.push_str(&line);
        output.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_read_back_as_the_defaults() {
        let rendered = defaults_toml().unwrap();
        let read: Config = toml::from_str(&rendered).unwrap();
        assert_eq!(
            toml::to_string(&read).unwrap(),
            toml::to_string(&Config::default()).unwrap()
        );
    }

    #[test]
    fn every_key_is_documented() {
        fn paths(table: &Table, prefix: &[String], found: &mut Vec<Vec<String>>) {
            for (key, value) in table {
                let mut path = prefix.to_vec();
                path.push(key.clone());
                // The keys of `[upgraders]` are connection types, not settings.
                if let Value::Table(nested) = value
                    && key != "upgraders"
                {
                    paths(nested, &path, found);
                }
                found.push(path);
            }
        }
        let example = Table::try_from(example()).unwrap();
        let schema = schemars::schema_for!(Config);
        let mut found = Vec::new();
        paths(&example, &[], &mut found);
        assert!(found.len() > 40, "{found:?}");
        // The storage section's own documentation explains its `backend` tag.
        for path in found
            .into_iter()
            .filter(|path| path.join(".") != "storage.backend")
        {
            assert!(
                schema_at(schema.as_value(), &path)
                    .and_then(description)
                    .is_some_and(|text| !text.trim().is_empty()),
                "undocumented key: {}",
                path.join(".")
            );
        }
        let rendered = defaults_toml().unwrap();
        assert!(rendered.contains("\n# url = \"sqlite://./flashfleet-data/flashfleet.db\"\n"));
        assert!(rendered.contains("\ntask_timeout = \"1500s\"\n"));
        assert!(rendered.contains("\n# [[custom_images]]\n"));
        assert!(rendered.contains("\n# [storage]\n"));
        assert!(rendered.contains("\n[engine.retry]\n"));
    }
}
