//! `google.protobuf.Timestamp` ↔ `chrono::DateTime<Utc>`.

use chrono::{DateTime, Utc};

/// `at` as a protobuf timestamp.
pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.timestamp(), nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0) }
}

/// A protobuf timestamp as a UTC time; `None` when it is out of chrono's range or its nanos
/// are negative or too large.
pub fn from_timestamp(timestamp: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(timestamp.seconds, u32::try_from(timestamp.nanos).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_survives_the_round_trip_to_the_nanosecond() {
        let at = DateTime::from_timestamp(1_764_000_000, 123_456_789).unwrap_or_default();
        assert_eq!(from_timestamp(&timestamp(at)), Some(at));
        assert_eq!(from_timestamp(&prost_types::Timestamp { seconds: 0, nanos: -1 }), None);
    }
}
