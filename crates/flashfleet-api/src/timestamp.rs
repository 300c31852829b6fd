//! Times on the wire: RFC 3339 in UTC with microseconds (`2026-11-22T05:33:32.581978Z`), what
//! upstream (DRF) writes for a server in UTC.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use utoipa::ToSchema;

/// A time as the API writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ToSchema)]
#[schema(value_type = String, format = DateTime, example = "2026-11-22T05:33:32.581978Z")]
pub struct Timestamp(pub DateTime<Utc>);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.to_rfc3339_opts(SecondsFormat::Micros, true))
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(time: DateTime<Utc>) -> Self {
        Timestamp(time)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn times_have_microseconds_and_z() {
        let time = Utc.timestamp_opt(1_763_789_612, 581_978_000).unwrap();
        assert_eq!(
            serde_json::to_value(Timestamp(time)).unwrap(),
            "2025-11-22T05:33:32.581978Z"
        );
    }
}
