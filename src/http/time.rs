//! `Timestamp`: a UTC time written as ISO 8601 with exactly six fractional digits and `Z`
//! (`2020-09-29T12:57:10.481896Z`), the one time format of the API.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ToSchema)]
// The example lies in the future: request fields such as `expiresAt` must.
#[schema(value_type = String, format = DateTime, example = "2030-09-29T12:57:10.481896Z")]
pub struct Timestamp(pub DateTime<Utc>);

impl From<DateTime<Utc>> for Timestamp {
    fn from(time: DateTime<Utc>) -> Self {
        Self(time)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.to_rfc3339_opts(SecondsFormat::Micros, true))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        crate::http::list::parse_time(&text).map(Self).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_six_fractional_digits_and_z() {
        let time = DateTime::parse_from_rfc3339("2020-09-29T12:57:10.48Z").unwrap().with_timezone(&Utc);
        assert_eq!(serde_json::to_string(&Timestamp(time)).unwrap(), "\"2020-09-29T12:57:10.480000Z\"");
        let back: Timestamp = serde_json::from_str("\"2020-09-29T12:57:10.480000Z\"").unwrap();
        assert_eq!(back.0, time);
    }
}
