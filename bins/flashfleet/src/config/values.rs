//! Value types of the configuration that read more than one spelling: durations, the upload
//! size limit and the API throttle rate.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration: integer seconds (`1500`) or a humantime string (`"1500s"`, `"3m"`,
/// `"1h 30m"`). Written back as whole seconds (`"1500s"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(Duration);

impl HumanDuration {
    /// A duration of `seconds` seconds.
    pub const fn from_secs(seconds: u64) -> Self {
        Self(Duration::from_secs(seconds))
    }

    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl From<Duration> for HumanDuration {
    fn from(duration: Duration) -> Self {
        Self(duration)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.subsec_nanos() == 0 {
            write!(formatter, "{}s", self.0.as_secs())
        } else {
            write!(formatter, "{}", humantime::format_duration(self.0))
        }
    }
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if let Ok(seconds) = text.parse::<u64>() {
            return Ok(Self::from_secs(seconds));
        }
        humantime::parse_duration(text).map(Self).map_err(|error| {
            format!(
                "`{text}` is not a duration ({error}); write \"90s\", \"3m\" or a number of seconds"
            )
        })
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = HumanDuration;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a number of seconds or a duration such as \"90s\" or \"3m\"")
            }

            fn visit_u64<E: de::Error>(self, seconds: u64) -> Result<HumanDuration, E> {
                Ok(HumanDuration::from_secs(seconds))
            }

            fn visit_i64<E: de::Error>(self, seconds: i64) -> Result<HumanDuration, E> {
                u64::try_from(seconds)
                    .map(HumanDuration::from_secs)
                    .map_err(|_| E::custom(format!("a duration cannot be negative ({seconds})")))
            }

            fn visit_f64<E: de::Error>(self, seconds: f64) -> Result<HumanDuration, E> {
                Duration::try_from_secs_f64(seconds)
                    .map(HumanDuration)
                    .map_err(|_| E::custom(format!("`{seconds}` is not a valid number of seconds")))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<HumanDuration, E> {
                text.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(DurationVisitor)
    }
}

impl JsonSchema for HumanDuration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": ["string", "integer"] })
    }
}

/// The largest firmware file accepted: a number of bytes, or unlimited (`0` or `"unlimited"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxFileSize(Option<u64>);

impl MaxFileSize {
    /// Upstream's default, 30 MiB.
    pub const DEFAULT: MaxFileSize = MaxFileSize(Some(30 * 1024 * 1024));

    /// No limit.
    pub const UNLIMITED: MaxFileSize = MaxFileSize(None);

    /// The limit in bytes; `None` when unlimited.
    pub fn bytes(self) -> Option<u64> {
        self.0
    }
}

impl Serialize for MaxFileSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(bytes) => serializer.serialize_u64(bytes),
            None => serializer.serialize_str("unlimited"),
        }
    }
}

impl<'de> Deserialize<'de> for MaxFileSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = MaxFileSize;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a number of bytes, 0 or \"unlimited\"")
            }

            fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<MaxFileSize, E> {
                Ok(MaxFileSize((bytes > 0).then_some(bytes)))
            }

            fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<MaxFileSize, E> {
                u64::try_from(bytes)
                    .map_err(|_| E::custom(format!("a file size cannot be negative ({bytes})")))
                    .and_then(|bytes| self.visit_u64(bytes))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<MaxFileSize, E> {
                let text = text.trim();
                if text.eq_ignore_ascii_case("unlimited") {
                    return Ok(MaxFileSize::UNLIMITED);
                }
                text.parse::<u64>()
                    .map_err(|_| {
                        E::custom(format!(
                            "`{text}` is not a file size: write a number of bytes, 0 or \"unlimited\""
                        ))
                    })
                    .and_then(|bytes| self.visit_u64(bytes))
            }
        }

        deserializer.deserialize_any(SizeVisitor)
    }
}

impl JsonSchema for MaxFileSize {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "MaxFileSize".into()
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": ["integer", "string"] })
    }
}

/// How many API requests one client may make per period (Django REST framework's rate
/// syntax): `"1000/minute"`, also `/second`, `/hour` and `/day`; `"none"` disables throttling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Throttle {
    /// No limit.
    Disabled,
    /// At most `requests` requests per `period`.
    Rate {
        /// Requests allowed per period; never 0.
        requests: u32,
        /// The period.
        period: ThrottlePeriod,
    },
}

/// The period of a [`Throttle`] rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThrottlePeriod {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day.
    Day,
}

impl ThrottlePeriod {
    /// Its length.
    pub fn duration(self) -> Duration {
        Duration::from_secs(match self {
            ThrottlePeriod::Second => 1,
            ThrottlePeriod::Minute => 60,
            ThrottlePeriod::Hour => 3600,
            ThrottlePeriod::Day => 86_400,
        })
    }

    fn name(self) -> &'static str {
        match self {
            ThrottlePeriod::Second => "second",
            ThrottlePeriod::Minute => "minute",
            ThrottlePeriod::Hour => "hour",
            ThrottlePeriod::Day => "day",
        }
    }
}

impl Throttle {
    /// The API's rate, `None` when disabled.
    pub fn to_api(&self) -> Option<flashfleet_api::Throttle> {
        match self {
            Throttle::Disabled => None,
            Throttle::Rate { requests, period } => Some(flashfleet_api::Throttle {
                requests: std::num::NonZeroU32::new(*requests)?,
                per: std::time::Duration::from_secs(match period {
                    ThrottlePeriod::Second => 1,
                    ThrottlePeriod::Minute => 60,
                    ThrottlePeriod::Hour => 3600,
                    ThrottlePeriod::Day => 86_400,
                }),
            }),
        }
    }

    /// Upstream's default, 1000 requests per minute.
    pub const DEFAULT: Throttle = Throttle::Rate {
        requests: 1000,
        period: ThrottlePeriod::Minute,
    };
}

impl fmt::Display for Throttle {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Throttle::Disabled => formatter.write_str("none"),
            Throttle::Rate { requests, period } => {
                write!(formatter, "{requests}/{}", period.name())
            }
        }
    }
}

impl FromStr for Throttle {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("none") {
            return Ok(Throttle::Disabled);
        }
        let invalid = || {
            format!(
                "`{text}` is not a throttle rate: write \"<requests>/<second|minute|hour|day>\" or \"none\""
            )
        };
        let (requests, period) = text.split_once('/').ok_or_else(invalid)?;
        let requests: u32 = requests.trim().parse().map_err(|_| invalid())?;
        if requests == 0 {
            return Err(format!(
                "`{text}` allows no request at all; write \"none\" to disable throttling"
            ));
        }
        let period = match period.trim().to_ascii_lowercase().as_str() {
            "s" | "sec" | "second" => ThrottlePeriod::Second,
            "m" | "min" | "minute" => ThrottlePeriod::Minute,
            "h" | "hour" => ThrottlePeriod::Hour,
            "d" | "day" => ThrottlePeriod::Day,
            _ => return Err(invalid()),
        };
        Ok(Throttle::Rate { requests, period })
    }
}

impl Serialize for Throttle {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Throttle {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl JsonSchema for Throttle {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Throttle".into()
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize)]
    struct Holder<T> {
        value: T,
    }

    fn parse<T: serde::de::DeserializeOwned>(toml_value: &str) -> Result<T, toml::de::Error> {
        toml::from_str::<Holder<T>>(&format!("value = {toml_value}")).map(|holder| holder.value)
    }

    #[test]
    fn durations_read_seconds_and_humantime_and_write_seconds() {
        assert_eq!(
            parse::<HumanDuration>("1500").unwrap(),
            HumanDuration::from_secs(1500)
        );
        assert_eq!(
            parse::<HumanDuration>("\"3m\"").unwrap(),
            HumanDuration::from_secs(180)
        );
        assert_eq!(
            parse::<HumanDuration>("\"1h 30m\"").unwrap(),
            HumanDuration::from_secs(5400)
        );
        assert_eq!(
            parse::<HumanDuration>("\"20\"").unwrap(),
            HumanDuration::from_secs(20)
        );
        assert_eq!(
            parse::<HumanDuration>("0.5").unwrap().get(),
            Duration::from_millis(500)
        );
        assert!(parse::<HumanDuration>("-1").is_err());
        let error = parse::<HumanDuration>("\"soon\"").unwrap_err().to_string();
        assert!(error.contains("`soon` is not a duration"), "{error}");
        assert_eq!(HumanDuration::from_secs(1500).to_string(), "1500s");
        assert_eq!(
            HumanDuration::from(Duration::from_millis(1500)).to_string(),
            "1s 500ms"
        );
    }

    #[test]
    fn file_sizes_are_bytes_or_unlimited() {
        assert_eq!(parse::<MaxFileSize>("1024").unwrap().bytes(), Some(1024));
        assert_eq!(parse::<MaxFileSize>("0").unwrap(), MaxFileSize::UNLIMITED);
        assert_eq!(
            parse::<MaxFileSize>("\"Unlimited\"").unwrap(),
            MaxFileSize::UNLIMITED
        );
        assert!(parse::<MaxFileSize>("-5").is_err());
        assert!(parse::<MaxFileSize>("\"big\"").is_err());
        assert_eq!(MaxFileSize::DEFAULT.bytes(), Some(31_457_280));
        let written = toml::to_string(&Holder {
            value: MaxFileSize::UNLIMITED,
        })
        .unwrap();
        assert_eq!(written.trim(), "value = \"unlimited\"");
    }

    #[test]
    fn throttle_rates_follow_django_rest_framework() {
        assert_eq!(Throttle::DEFAULT.to_string(), "1000/minute");
        assert_eq!(
            "50/hour".parse::<Throttle>().unwrap(),
            Throttle::Rate {
                requests: 50,
                period: ThrottlePeriod::Hour
            }
        );
        assert_eq!("5/s".parse::<Throttle>().unwrap().to_string(), "5/second");
        assert_eq!("none".parse::<Throttle>().unwrap(), Throttle::Disabled);
        assert!("0/day".parse::<Throttle>().is_err());
        assert!("10/fortnight".parse::<Throttle>().is_err());
        assert!("many".parse::<Throttle>().is_err());
        assert_eq!(ThrottlePeriod::Day.duration(), Duration::from_secs(86_400));
    }
}
