//! Strict JSON shapes. serde's derived `Deserialize` for structs also accepts a JSON array of
//! the fields in declaration order; for tokens and other signed or untrusted documents that is
//! a parser differential waiting to happen, so every struct read from the wire is required to
//! be a JSON object through these helpers.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, Deserializer, MapAccess, Visitor};

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map))
    }
}

/// `deserialize_with` for a struct field that must be a JSON object.
pub fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<T, D::Error> {
    deserializer.deserialize_map(ObjectVisitor(PhantomData))
}

/// `deserialize_with` for an optional struct field: absent (with `#[serde(default)]`),
/// `null`, or a JSON object.
pub fn option_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    struct OptionVisitor<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for OptionVisitor<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("null or a JSON object")
        }
        fn visit_none<E>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<T>, D::Error> {
            object(deserializer).map(Some)
        }
    }
    deserializer.deserialize_option(OptionVisitor(PhantomData))
}

/// Parses bytes whose top level must be a JSON object.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = object(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Converts a parsed value whose top level must be a JSON object.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> serde_json::Result<T> {
    object(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    struct Pair {
        a: u8,
        #[serde(default, deserialize_with = "option_object")]
        inner: Option<Inner>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Inner {
        b: u8,
    }

    #[test]
    fn only_objects_are_accepted() {
        assert_eq!(from_slice::<Pair>(br#"{"a":1}"#).unwrap(), Pair { a: 1, inner: None });
        assert_eq!(
            from_slice::<Pair>(br#"{"a":1,"inner":{"b":2}}"#).unwrap().inner,
            Some(Inner { b: 2 })
        );
        assert_eq!(from_slice::<Pair>(br#"{"a":1,"inner":null}"#).unwrap().inner, None);
        assert!(
            serde_json::from_slice::<Pair>(b"[1]").is_ok(),
            "serde alone would accept this"
        );
        assert!(from_slice::<Pair>(b"[1]").is_err());
        assert!(from_slice::<Pair>(br#"{"a":1,"inner":[2]}"#).is_err());
        assert!(from_slice::<Pair>(br#"{"a":1} {}"#).is_err());
        assert!(from_value::<Pair>(serde_json::json!([1])).is_err());
    }
}
