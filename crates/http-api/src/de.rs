//! Body fields read as JSON Schema reads them, where serde's defaults differ:
//! - `3` and `3.0` are the same integer, so a field of type `integer` takes both; anything
//!   with a fraction, or out of the field's range, is refused;
//! - an object is an object: serde alone would also read a struct from an array of its
//!   fields.

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error};
use serde_json::{Map, Value};

/// An integer field.
pub fn integer<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    let number = serde_json::Number::deserialize(deserializer)?;
    let whole = number.as_i64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && (i64::MIN as f64..i64::MAX as f64).contains(f))
            .map(|f| f as i64)
    });
    whole
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| D::Error::custom(format!("{number} is not an integer in range")))
}

/// An optional integer field: absent or `null` is `None`.
pub fn optional_integer<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "integer")] i64);
    let wrapped: Option<Wrapped> = Option::deserialize(deserializer)?;
    wrapped
        .map(|Wrapped(n)| {
            T::try_from(n).map_err(|_| D::Error::custom(format!("{n} is out of range")))
        })
        .transpose()
}

/// An optional object field: absent or `null` is `None`, an array is refused.
pub fn object<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let map: Option<Map<String, Value>> = Option::deserialize(deserializer)?;
    map.map(|map| serde_json::from_value(Value::Object(map)).map_err(D::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Default, PartialEq, Deserialize)]
    struct Inner {
        #[serde(default)]
        name: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(deserialize_with = "integer")]
        count: u32,
        #[serde(default, deserialize_with = "optional_integer")]
        limit: Option<i32>,
        #[serde(default, deserialize_with = "object")]
        inner: Option<Inner>,
    }

    fn parse(value: serde_json::Value) -> Result<Body, serde_json::Error> {
        serde_json::from_value(value)
    }

    #[test]
    fn whole_numbers_are_integers_however_written() {
        let body = parse(json!({ "count": 3.0, "limit": 7 })).unwrap();
        assert_eq!((body.count, body.limit), (3, Some(7)));
        assert_eq!(
            parse(json!({ "count": 3, "limit": null })).unwrap().limit,
            None
        );
        assert_eq!(parse(json!({ "count": 3 })).unwrap().limit, None);
        let inner = parse(json!({ "count": 3, "inner": { "name": "x" } }))
            .unwrap()
            .inner;
        assert_eq!(inner.unwrap().name.as_deref(), Some("x"));
    }

    #[test]
    fn fractions_and_numbers_out_of_range_are_refused() {
        for bad in [
            json!({ "count": 3.5 }),
            json!({ "count": -1 }),
            json!({ "count": 1e20 }),
            json!({ "count": 1, "limit": 2147483648_i64 }),
            json!({ "count": "3" }),
            json!({ "count": 3, "inner": [] }),
            json!({ "count": 3, "inner": ["x"] }),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
    }
}
