//! RFC 8785 JSON Canonicalization Scheme.
//!
//! Serialization is done by `serde_json_canonicalizer` (checked against the RFC's examples in
//! this module's tests and in `tests/vectors/jcs.json`). Numbers are IEEE 754 doubles
//! formatted as ECMAScript does, so integers beyond ±2^53 are rounded, exactly as RFC 8785
//! §3.2.2.3 prescribes; applications needing larger integers should send them as strings.
//!
//! Text input is parsed strictly: RFC 8785 requires I-JSON (RFC 7493), so duplicate member
//! names, lone surrogates and out-of-range numbers are errors instead of being silently
//! resolved.

use std::fmt;

use serde::Serialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Why a value could not be canonicalized.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CanonicalError {
    /// The input text is not I-JSON (syntax error, duplicate member, lone surrogate, …).
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// The value cannot be represented in RFC 8785 form (NaN, infinity, non-string map key).
    #[error("value has no RFC 8785 form: {0}")]
    NotRepresentable(String),
}

/// The RFC 8785 canonical UTF-8 bytes of `value`.
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    serde_json_canonicalizer::to_vec(value).map_err(|e| CanonicalError::NotRepresentable(e.to_string()))
}

/// The RFC 8785 canonical text of `value`.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, CanonicalError> {
    serde_json_canonicalizer::to_string(value).map_err(|e| CanonicalError::NotRepresentable(e.to_string()))
}

/// Parses JSON text as I-JSON, rejecting duplicate member names.
pub fn parse_strict(text: &str) -> Result<Value, CanonicalError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = StrictValue
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| CanonicalError::InvalidJson(e.to_string()))?;
    Ok(value)
}

/// Parses JSON text strictly and returns its RFC 8785 canonical form.
pub fn canonicalize(text: &str) -> Result<String, CanonicalError> {
    to_string(&parse_strict(text)?)
}

/// Lowercase hex SHA-256 of the canonical form of `value`.
pub fn sha256_hex<T: Serialize>(value: &T) -> Result<String, CanonicalError> {
    Ok(hex::encode(Sha256::digest(to_vec(value)?)))
}

/// A `serde_json::Value` builder that refuses duplicate object members.
struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(StrictValue)?;
            if members.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate member name {key:?}")));
            }
            members.insert(key, value);
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8785_section_3_2_2_example() {
        let input = r#"{
            "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
            "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
            "literals": [null, true, false]
        }"#;
        assert_eq!(
            canonicalize(input).unwrap(),
            "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],\
             \"string\":\"€$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}"
        );
    }

    #[test]
    fn rfc8785_section_3_2_3_sorts_by_utf16_code_units() {
        let input = r#"{
            "\u20ac": "Euro Sign",
            "\r": "Carriage Return",
            "\ufb33": "Hebrew Letter Dalet With Dagesh",
            "1": "One",
            "\ud83d\ude00": "Emoji: Grinning Face",
            "\u0080": "Control",
            "\u00f6": "Latin Small Letter O With Diaeresis"
        }"#;
        let out = canonicalize(input).unwrap();
        let keys: Vec<String> = {
            let v: Value = serde_json::from_str(&out).unwrap();
            // serde_json's map is sorted by UTF-8; read the order from the text instead.
            let mut found: Vec<(usize, String)> = v
                .as_object()
                .unwrap()
                .keys()
                .map(|k| {
                    (
                        out.find(&format!("{}:", serde_json::to_string(k).unwrap())).unwrap(),
                        k.clone(),
                    )
                })
                .collect();
            found.sort();
            found.into_iter().map(|(_, k)| k).collect()
        };
        assert_eq!(
            keys,
            ["\r", "1", "\u{80}", "\u{f6}", "\u{20ac}", "\u{1f600}", "\u{fb33}"]
        );
    }

    #[test]
    fn rejects_duplicates_and_lone_surrogates() {
        assert!(matches!(
            canonicalize(r#"{"a":1,"a":2}"#),
            Err(CanonicalError::InvalidJson(_))
        ));
        assert!(matches!(
            canonicalize(r#"{"a":{"b":1,"b":1}}"#),
            Err(CanonicalError::InvalidJson(_))
        ));
        assert!(canonicalize(r#""\ud800""#).is_err());
        assert!(canonicalize("1e400").is_err());
        assert!(canonicalize("{} x").is_err());
    }

    #[test]
    fn large_integers_follow_ieee754() {
        assert_eq!(canonicalize("9007199254740993").unwrap(), "9007199254740992");
        assert_eq!(canonicalize("-0").unwrap(), "0");
        assert_eq!(canonicalize("1e21").unwrap(), "1e+21");
        assert_eq!(canonicalize("123456789012345678901").unwrap(), "123456789012345680000");
    }
}
