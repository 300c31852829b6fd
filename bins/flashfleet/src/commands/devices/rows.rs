//! The rows of a device list, read from CSV or JSON with the line each starts on.
//!
//! A file that cannot be read as a whole (bad JSON, a CSV header with an unknown column) is an
//! error; a row that does not fit (a number where text is expected, an unknown key) is a row
//! error, reported with its line while the others are imported.

use std::fmt;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use secrecy::SecretString;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

/// The columns a device list may have.
pub(super) const COLUMNS: &[&str] = &[
    "id",
    "name",
    "mac_address",
    "address",
    "model",
    "board_name",
    "os",
    "organization",
    "username",
    "password",
    "key_file",
    "port",
];

/// The columns a device list must have.
const REQUIRED_COLUMNS: &[&str] = &["name", "mac_address"];

/// One device of the list, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeviceRow {
    /// The device's id (a UUID), for a device whose configuration already names it (what
    /// `uci get openwisp.http.uuid` prints on it); a new one is generated otherwise.
    #[serde(default)]
    pub(super) id: Option<uuid::Uuid>,
    /// Device name.
    pub(super) name: String,
    /// MAC address.
    pub(super) mac_address: String,
    /// Management IP address or host name.
    #[serde(default)]
    pub(super) address: Option<String>,
    /// Hardware model (/tmp/sysinfo/model).
    #[serde(default)]
    pub(super) model: Option<String>,
    /// Board name (/tmp/sysinfo/board_name).
    #[serde(default)]
    pub(super) board_name: Option<String>,
    /// OS identifier.
    #[serde(default)]
    pub(super) os: Option<String>,
    /// Organization slug.
    #[serde(default)]
    pub(super) organization: Option<String>,
    /// SSH user.
    #[serde(default)]
    pub(super) username: Option<String>,
    /// SSH password.
    #[serde(default, deserialize_with = "secret_text")]
    pub(super) password: Option<SecretString>,
    /// File holding the SSH private key.
    #[serde(default)]
    pub(super) key_file: Option<PathBuf>,
    /// SSH port.
    #[serde(default, deserialize_with = "port_number")]
    pub(super) port: Option<u16>,
}

/// A row, or why it could not be read, with the line it starts on.
pub(super) type ReadRow = (u64, Result<DeviceRow, String>);

/// Reads the rows of a CSV file with a header line.
pub(super) fn read_csv(text: &str) -> anyhow::Result<Vec<ReadRow>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .context("could not read the CSV header line")?
        .clone();
    for header in &headers {
        if !COLUMNS.contains(&header) {
            bail!(
                "unknown column `{header}` in the CSV header (columns: {})",
                COLUMNS.join(", ")
            );
        }
    }
    for required in REQUIRED_COLUMNS {
        if !headers.iter().any(|header| header == *required) {
            bail!("the CSV header lacks the column `{required}`");
        }
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                let line = error.position().map_or(0, csv::Position::line);
                rows.push((line, Err(csv_message(&error))));
                continue;
            }
        };
        let line = record.position().map_or(0, csv::Position::line);
        // Every cell is read as text (empty cells as absent), through the same path as JSON,
        // so a password is never reinterpreted as a number.
        let cells: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .zip(record.iter())
            .filter(|(_, cell)| !cell.is_empty())
            .map(|(header, cell)| {
                (
                    header.to_owned(),
                    serde_json::Value::String(cell.to_owned()),
                )
            })
            .collect();
        rows.push((line, row_from_value(serde_json::Value::Object(cells))));
    }
    Ok(rows)
}

/// Reads the rows of a JSON array of objects.
pub(super) fn read_json(text: &str) -> anyhow::Result<Vec<ReadRow>> {
    let line_of = |offset: usize| text[..offset].matches('\n').count() as u64 + 1;
    let mut position = skip_whitespace(text, 0);
    if !text[position..].starts_with('[') {
        bail!("a JSON device list is an array of objects, starting with `[`");
    }
    position = skip_whitespace(text, position + 1);
    let mut rows = Vec::new();
    if text[position..].starts_with(']') {
        return check_end(text, position + 1).map(|()| rows);
    }
    loop {
        let start = position;
        let mut stream =
            serde_json::Deserializer::from_str(&text[start..]).into_iter::<serde_json::Value>();
        let value = match stream.next() {
            Some(Ok(value)) => value,
            Some(Err(error)) => bail!(
                "invalid JSON at line {}: {error}",
                line_of(start) + error.line() as u64 - 1
            ),
            None => bail!("the JSON array ends without `]`"),
        };
        let end = start + stream.byte_offset();
        rows.push((line_of(start), row_from_value(value)));
        position = skip_whitespace(text, end);
        match text[position..].chars().next() {
            Some(',') => position = skip_whitespace(text, position + 1),
            Some(']') => return check_end(text, position + 1).map(|()| rows),
            _ => bail!(
                "invalid JSON at line {}: expected `,` or `]`",
                line_of(position)
            ),
        }
    }
}

fn row_from_value(value: serde_json::Value) -> Result<DeviceRow, String> {
    DeviceRow::deserialize(value).map_err(|error| error.to_string())
}

fn skip_whitespace(text: &str, position: usize) -> usize {
    position
        + text[position..]
            .find(|character: char| !character.is_whitespace())
            .unwrap_or(text.len() - position)
}

fn check_end(text: &str, position: usize) -> anyhow::Result<()> {
    if text[position..].trim().is_empty() {
        Ok(())
    } else {
        bail!("unexpected text after the JSON array")
    }
}

/// A CSV error without its position (the caller reports the line).
fn csv_message(error: &csv::Error) -> String {
    match error.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("{len} fields where the header has {expected_len}")
        }
        _ => error.to_string(),
    }
}

/// A password: text, or a number taken as its text, so that an error never quotes it.
fn secret_text<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SecretString>, D::Error> {
    struct SecretVisitor;

    impl<'de> Visitor<'de> for SecretVisitor {
        type Value = Option<SecretString>;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a password")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(
            self,
            deserializer: D,
        ) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_any(self)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
            Ok((!text.is_empty()).then(|| SecretString::from(text)))
        }

        fn visit_u64<E: de::Error>(self, number: u64) -> Result<Self::Value, E> {
            Ok(Some(SecretString::from(number.to_string())))
        }

        fn visit_i64<E: de::Error>(self, number: i64) -> Result<Self::Value, E> {
            Ok(Some(SecretString::from(number.to_string())))
        }

        fn visit_f64<E: de::Error>(self, _number: f64) -> Result<Self::Value, E> {
            Err(E::custom("the password must be text (quote it)"))
        }

        fn visit_bool<E: de::Error>(self, _value: bool) -> Result<Self::Value, E> {
            Err(E::custom("the password must be text"))
        }
    }

    deserializer.deserialize_option(SecretVisitor)
}

/// A port: a number, or text holding one.
fn port_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u16>, D::Error> {
    match Option::<serde_json::Value>::deserialize(deserializer)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(number)) => number
            .as_u64()
            .and_then(|port| u16::try_from(port).ok())
            .map(Some)
            .ok_or_else(|| de::Error::custom(format!("port: `{number}` is not a port number"))),
        Some(serde_json::Value::String(text)) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| de::Error::custom(format!("port: `{text}` is not a port number"))),
        Some(_) => Err(de::Error::custom("port: not a port number")),
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    #[test]
    fn csv_rows_keep_their_line_and_bad_rows_do_not_stop_the_others() {
        let rows = read_csv(
            "name,mac_address,password,port\nap-1,00:11:22:33:44:01,pw,22\nap-2,00:11:22:33:44:02,,notaport\n\
             ap-3,00:11:22:33:44:03,123456,\n",
        )
        .unwrap();
        assert_eq!(
            rows.iter().map(|(line, _)| *line).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        let first = rows[0].1.as_ref().unwrap();
        assert_eq!(first.password.as_ref().unwrap().expose_secret(), "pw");
        assert_eq!(first.port, Some(22));
        assert!(
            rows[1]
                .1
                .as_ref()
                .unwrap_err()
                .contains("`notaport` is not a port number"),
            "{:?}",
            rows[1].1
        );
        let third = rows[2].1.as_ref().unwrap();
        assert_eq!(third.password.as_ref().unwrap().expose_secret(), "123456");
        assert_eq!(third.port, None);
    }

    #[test]
    fn csv_headers_are_checked() {
        let error = read_csv("name,mac,password\n").unwrap_err().to_string();
        assert!(error.contains("unknown column `mac`"), "{error}");
        let error = read_csv("name,os\n").unwrap_err().to_string();
        assert!(error.contains("mac_address"), "{error}");
    }

    #[test]
    fn json_rows_keep_their_line() {
        let rows = read_json(
            "[\n  {\"name\": \"ap-1\", \"mac_address\": \"00:11:22:33:44:01\", \"port\": 2222},\n\n  \
             {\"name\": \"ap-2\",\n   \"mac_address\": \"x\", \"colour\": \"red\"},\n  \
             {\"name\": \"ap-3\", \"mac_address\": \"y\", \"password\": 1234}\n]\n",
        )
        .unwrap();
        assert_eq!(
            rows.iter().map(|(line, _)| *line).collect::<Vec<_>>(),
            [2, 4, 6]
        );
        assert_eq!(rows[0].1.as_ref().unwrap().port, Some(2222));
        assert!(rows[1].1.as_ref().unwrap_err().contains("colour"));
        let third = rows[2].1.as_ref().unwrap();
        assert_eq!(third.password.as_ref().unwrap().expose_secret(), "1234");
        assert!(read_json("[]").unwrap().is_empty());
    }

    #[test]
    fn malformed_json_is_a_file_error() {
        assert!(read_json("{\"name\": \"x\"}").is_err());
        assert!(read_json("[{\"name\": \"x\"").is_err());
        assert!(read_json("[{\"name\": \"x\"} {\"name\": \"y\"}]").is_err());
        assert!(read_json("[] trailing").is_err());
    }
}
