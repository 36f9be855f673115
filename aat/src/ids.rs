//! Identifier newtypes. Each validates on construction, so a value of the type is always
//! well-formed, and serde goes through the same validation.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::Clock;

/// Longest identifier accepted from the wire (key ids, token ids).
pub const MAX_ID_LEN: usize = 256;

/// An identifier did not have the required form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct InvalidId {
    /// Which kind of identifier was rejected.
    pub what: &'static str,
    /// Why it was rejected.
    pub reason: &'static str,
}

/// Fills `bytes` from the operating system's CSPRNG.
pub fn fill_random(bytes: &mut [u8]) -> Result<(), getrandom::Error> {
    getrandom::fill(bytes)
}

/// An array filled from the operating system's CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut bytes = [0u8; N];
    fill_random(&mut bytes)?;
    Ok(bytes)
}

/// A random UUID v4 in its canonical lowercase hyphenated form.
pub(crate) fn random_uuid() -> Result<Uuid, getrandom::Error> {
    Ok(uuid::Builder::from_random_bytes(random_bytes::<16>()?).into_uuid())
}

/// A UUID v7 (RFC 9562 §5.7): the clock's Unix time in milliseconds, then 74 random bits.
/// Ids minted in order sort in order, so a database index over them grows at one end instead
/// of touching a random page per insert.
pub(crate) fn time_ordered_uuid(clock: &dyn Clock) -> Result<Uuid, getrandom::Error> {
    let millis = u64::try_from(clock.now_millis()).unwrap_or(0);
    Ok(uuid::Builder::from_unix_timestamp_millis(millis, &random_bytes::<10>()?).into_uuid())
}

/// Checks a token-style identifier: 1..=256 visible ASCII characters (no spaces or controls).
fn check_visible_ascii(what: &'static str, s: &str) -> Result<(), InvalidId> {
    if s.is_empty() {
        return Err(InvalidId { what, reason: "empty" });
    }
    if s.len() > MAX_ID_LEN {
        return Err(InvalidId {
            what,
            reason: "longer than 256 characters",
        });
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InvalidId {
            what,
            reason: "must be visible ASCII without spaces",
        });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident, $what:literal, $check:expr) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// For values that are valid by construction (digests, formatted UUIDs).
            #[allow(dead_code)]
            pub(crate) fn new_unchecked(s: String) -> Self {
                debug_assert!(Self::try_from(s.clone()).is_ok());
                Self(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, InvalidId> {
                let check: fn(&str) -> Result<(), InvalidId> = $check;
                check(&s)?;
                Ok(Self(s))
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Self::try_from(s.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
    };
}

string_id!(
    /// An agent identifier: `ag_` followed by a UUID v4 in canonical lowercase form
    /// (spec 8.3.1), e.g. `ag_550e8400-e29b-41d4-a716-446655440000`.
    AgentId,
    "agent id",
    |s| {
        let what = "agent id";
        let Some(uuid) = s.strip_prefix("ag_") else {
            return Err(InvalidId { what, reason: "must start with `ag_`" });
        };
        match Uuid::try_parse(uuid) {
            Ok(u) if u.get_version_num() == 4 && u.hyphenated().to_string() == uuid => Ok(()),
            _ => Err(InvalidId { what, reason: "must be `ag_` and a lowercase hyphenated UUID v4" }),
        }
    }
);

impl AgentId {
    /// A fresh random agent id.
    pub fn random() -> Result<Self, getrandom::Error> {
        Ok(Self(format!("ag_{}", random_uuid()?.hyphenated())))
    }
}

string_id!(
    /// A key identifier (`kid`). Keys this toolkit creates use their RFC 7638 JWK thumbprint;
    /// keys of other issuers may use any visible-ASCII name up to 256 characters.
    KeyId,
    "key id",
    |s| check_visible_ascii("key id", s)
);

string_id!(
    /// A JWT id (`jti`): 1..=256 visible ASCII characters. Minted ids are UUIDs: v4
    /// ([`Jti::random`]) or v7 ([`Jti::time_ordered`]).
    Jti,
    "jti",
    |s| check_visible_ascii("jti", s)
);

impl Jti {
    /// A fresh random UUID v4 token id.
    pub fn random() -> Result<Self, getrandom::Error> {
        Ok(Self(random_uuid()?.hyphenated().to_string()))
    }

    /// A fresh UUID v7 token id: unique like [`Jti::random`] (74 random bits per millisecond),
    /// and ordered by the creation time `clock` gives, which keeps an issuance log's index
    /// compact.
    pub fn time_ordered(clock: &dyn Clock) -> Result<Self, getrandom::Error> {
        Ok(Self(time_ordered_uuid(clock)?.hyphenated().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    #[test]
    fn agent_id_accepts_only_canonical_v4() {
        assert!("ag_550e8400-e29b-41d4-a716-446655440000".parse::<AgentId>().is_ok());
        for bad in [
            "550e8400-e29b-41d4-a716-446655440000",
            "ag_550E8400-E29B-41D4-A716-446655440000",
            "ag_550e8400e29b41d4a716446655440000",
            "ag_550e8400-e29b-11d4-a716-446655440000", // v1
            "ag_{550e8400-e29b-41d4-a716-446655440000}",
            "ag_",
        ] {
            assert!(bad.parse::<AgentId>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn random_ids_are_valid_and_distinct() {
        let a = AgentId::random().unwrap();
        let b = AgentId::random().unwrap();
        assert_ne!(a, b);
        assert!(a.as_str().parse::<AgentId>().is_ok());
        let j = Jti::random().unwrap();
        assert_eq!(j.as_str().len(), 36);
    }

    #[test]
    fn time_ordered_ids_sort_by_creation() {
        let ids: Vec<Jti> = (0..3)
            .map(|_| {
                std::thread::sleep(std::time::Duration::from_millis(2));
                Jti::time_ordered(&SystemClock).unwrap()
            })
            .collect();
        for pair in ids.windows(2) {
            assert!(pair[0].as_str() < pair[1].as_str(), "{} !< {}", pair[0], pair[1]);
        }
        let uuid = Uuid::try_parse(ids[0].as_str()).unwrap();
        assert_eq!(uuid.get_version_num(), 7);
        assert_ne!(
            Jti::time_ordered(&SystemClock).unwrap(),
            Jti::time_ordered(&SystemClock).unwrap()
        );
    }

    #[test]
    fn key_id_rules() {
        assert!("issuer-key-2026-02".parse::<KeyId>().is_ok());
        assert!("".parse::<KeyId>().is_err());
        assert!("has space".parse::<KeyId>().is_err());
        assert!("new\nline".parse::<KeyId>().is_err());
        assert!("x".repeat(257).parse::<KeyId>().is_err());
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<Jti>("\"\"").is_err());
        let id: AgentId = serde_json::from_str("\"ag_550e8400-e29b-41d4-a716-446655440000\"").unwrap();
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"ag_550e8400-e29b-41d4-a716-446655440000\""
        );
    }
}
