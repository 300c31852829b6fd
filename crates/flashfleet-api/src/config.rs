//! Settings of the API (upstream §5 and openwisp-utils' API settings).

use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Settings of the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// The scheme and host absolute URLs start with (`next`/`previous` of lists, an image's
    /// `file`), such as `https://firmware.example.com`; without it, the request's own scheme and
    /// host are used. Upstream's `OPENWISP_FIRMWARE_API_BASEURL`.
    pub base_url: Option<String>,
    /// Items per page when the request does not say (`OPENWISP_API_DEFAULT_PAGE_SIZE`, 10).
    pub default_page_size: u64,
    /// The most items per page a request may ask for (`OPENWISP_API_MAX_PAGE_SIZE`, 100).
    pub max_page_size: u64,
    /// Requests each user may make (upstream's throttle scope `firmware_upgrader`,
    /// 1000/minute); `None` disables the limit.
    pub throttle: Option<Throttle>,
    /// The largest image accepted by an upload, in bytes (upstream's
    /// `OPENWISP_FIRMWARE_UPGRADER_MAX_FILE_SIZE`, 30 MiB); `None` for no limit.
    pub max_file_size: Option<u64>,
    /// How often a live stream re-reads its object from the database, so that changes made by
    /// another server (several servers on one PostgreSQL) reach its clients too.
    #[serde(with = "seconds")]
    pub live_poll_interval: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            base_url: None,
            default_page_size: 10,
            max_page_size: 100,
            throttle: Some(Throttle::per_minute(1000)),
            max_file_size: Some(30 * 1024 * 1024),
            live_poll_interval: Duration::from_secs(2),
        }
    }
}

/// A rate: so many requests per period, written like DRF's `"1000/minute"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttle {
    /// Requests allowed per period (the burst as well).
    pub requests: NonZeroU32,
    /// The period.
    pub per: Duration,
}

impl Throttle {
    /// `requests` per minute.
    pub fn per_minute(requests: u32) -> Throttle {
        Throttle {
            requests: NonZeroU32::new(requests).unwrap_or(NonZeroU32::MIN),
            per: Duration::from_secs(60),
        }
    }
}

impl FromStr for Throttle {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (requests, period) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a rate like \"1000/minute\""))?;
        let requests: u32 = requests
            .trim()
            .parse()
            .map_err(|_| format!("`{requests}` is not a number of requests"))?;
        let requests = NonZeroU32::new(requests)
            .ok_or_else(|| "a rate of 0 requests would refuse everything".to_owned())?;
        // DRF reads only the first letter of the period.
        let per = match period.trim().chars().next() {
            Some('s') => Duration::from_secs(1),
            Some('m') => Duration::from_secs(60),
            Some('h') => Duration::from_secs(3600),
            Some('d') => Duration::from_secs(86_400),
            _ => return Err(format!("`{period}` is not second, minute, hour or day")),
        };
        Ok(Throttle { requests, per })
    }
}

impl std::fmt::Display for Throttle {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let period = match self.per.as_secs() {
            1 => "second",
            60 => "minute",
            3600 => "hour",
            _ => "day",
        };
        write!(formatter, "{}/{period}", self.requests)
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
        text.parse().map_err(serde::de::Error::custom)
    }
}

mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        duration: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(duration.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let seconds = f64::deserialize(deserializer)?;
        Duration::try_from_secs_f64(seconds).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_read_like_drf() {
        let rate: Throttle = "1000/minute".parse().unwrap();
        assert_eq!(rate.requests.get(), 1000);
        assert_eq!(rate.per, Duration::from_secs(60));
        assert_eq!(
            "5/s".parse::<Throttle>().unwrap().per,
            Duration::from_secs(1)
        );
        assert_eq!("5/hour".parse::<Throttle>().unwrap().to_string(), "5/hour");
        assert!("0/minute".parse::<Throttle>().is_err());
        assert!("many/minute".parse::<Throttle>().is_err());
        assert!("5/fortnight".parse::<Throttle>().is_err());
        assert!("5".parse::<Throttle>().is_err());
    }
}
