//! Timestamps: UTC, with microsecond precision.
//!
//! PostgreSQL keeps microseconds; SQLite would keep whatever it is given. Truncating here keeps
//! both backends returning exactly the value that was stored, so the same test passes on both.

use chrono::{DateTime, SubsecRound, Utc};

/// The current time in UTC, truncated to whole microseconds.
pub fn now() -> DateTime<Utc> {
    truncate(Utc::now())
}

/// `time` truncated to whole microseconds.
pub fn truncate(time: DateTime<Utc>) -> DateTime<Utc> {
    time.trunc_subsecs(6)
}
