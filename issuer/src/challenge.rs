//! Single-use challenges that need no database write to hand out.
//!
//! A challenge is `ch1.<payload>.<tag>`: the payload is 16 random bytes and the expiry, the tag
//! an HMAC-SHA-256 (truncated to 128 bits) over the payload and the agent id, under a key that
//! every replica reads from the shared database. Any replica can therefore check a challenge
//! another one issued. Single use is enforced when the token is minted: the challenge's expiry
//! and random part are recorded in `used_challenges` in the same transaction, so a second use
//! fails on any replica.

use aip_aat::ids::AgentId;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const PREFIX: &str = "ch1.";
const DOMAIN: &[u8] = b"aip-challenge-v1\0";
const TAG_LEN: usize = 16;
const PAYLOAD_LEN: usize = 16 + 8;

/// Why a challenge was refused (all reported as `invalid_proof`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChallengeError {
    /// Not a challenge this issuer makes, made for another agent, or altered.
    #[error("the challenge was not issued by this issuer for this agent")]
    Unknown,
    /// Past its expiry.
    #[error("the challenge has expired; request a new one")]
    Expired,
}

/// A verified challenge: what single use is tracked by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedChallenge {
    /// The expiry (16 hex digits) and the random part (base64url): unique per challenge.
    pub id: String,
    /// When it stops being accepted.
    pub expires_at: i64,
}

/// Length of the challenge key: SHA-256's block size, so the key is used as is.
pub const KEY_LEN: usize = 64;

/// Makes and checks challenges.
#[derive(Clone)]
pub struct Challenges {
    mac: Hmac<Sha256>,
    ttl: i64,
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenges")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Challenges {
    /// Challenges under `key`, valid for `ttl` seconds (at most 60).
    pub fn new(key: &[u8; KEY_LEN], ttl: i64) -> Self {
        Self {
            mac: <Hmac<Sha256> as KeyInit>::new(&(*key).into()),
            ttl: ttl.clamp(1, 60),
        }
    }

    /// How long a challenge stays valid.
    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    fn tag(&self, agent_id: &AgentId, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(DOMAIN);
        mac.update(agent_id.as_str().as_bytes());
        mac.update(b"\0");
        mac.update(payload);
        mac
    }

    /// A new challenge for `agent_id`, and its expiry.
    pub fn issue(&self, agent_id: &AgentId, now: i64) -> Result<(String, i64), aip_aat::keys::KeyError> {
        let expires_at = now + self.ttl;
        let mut payload = [0u8; PAYLOAD_LEN];
        aip_aat::ids::fill_random(&mut payload[..16]).map_err(|_| aip_aat::keys::KeyError::Random)?;
        payload[16..].copy_from_slice(&expires_at.to_be_bytes());
        let tag = self.tag(agent_id, &payload).finalize().into_bytes();
        let challenge = format!(
            "{PREFIX}{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(&tag[..TAG_LEN])
        );
        Ok((challenge, expires_at))
    }

    /// Checks that `challenge` was issued for `agent_id` and has not expired at `now`.
    pub fn open(&self, challenge: &str, agent_id: &AgentId, now: i64) -> Result<OpenedChallenge, ChallengeError> {
        let rest = challenge.strip_prefix(PREFIX).ok_or(ChallengeError::Unknown)?;
        let (payload, tag) = rest.split_once('.').ok_or(ChallengeError::Unknown)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| ChallengeError::Unknown)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| ChallengeError::Unknown)?;
        if payload.len() != PAYLOAD_LEN || tag.len() != TAG_LEN {
            return Err(ChallengeError::Unknown);
        }
        self.tag(agent_id, &payload)
            .verify_truncated_left(&tag)
            .map_err(|_| ChallengeError::Unknown)?;
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&payload[16..]);
        let expires_at = i64::from_be_bytes(expiry);
        if now > expires_at {
            return Err(ChallengeError::Expired);
        }
        // The expiry leads the id, so the ids a database records for single use arrive in
        // order and its index grows at one end.
        Ok(OpenedChallenge {
            id: format!("{:016x}.{}", expires_at, URL_SAFE_NO_PAD.encode(&payload[..16])),
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(n: u8) -> AgentId {
        format!("ag_550e8400-e29b-41d4-a716-4466554400{n:02}").parse().unwrap()
    }

    #[test]
    fn issue_and_open() {
        let challenges = Challenges::new(&[7; KEY_LEN], 60);
        let (c, expires_at) = challenges.issue(&agent(1), 1_000).unwrap();
        assert_eq!(expires_at, 1_060);
        let opened = challenges.open(&c, &agent(1), 1_060).unwrap();
        assert_eq!(opened.expires_at, 1_060);
        assert_eq!(challenges.open(&c, &agent(1), 1_061), Err(ChallengeError::Expired));
        assert_eq!(challenges.open(&c, &agent(2), 1_010), Err(ChallengeError::Unknown));
        let (other, _) = challenges.issue(&agent(1), 1_000).unwrap();
        assert_ne!(challenges.open(&other, &agent(1), 1_000).unwrap().id, opened.id);
    }

    #[test]
    fn forgeries_are_refused() {
        let challenges = Challenges::new(&[7; KEY_LEN], 60);
        let (c, _) = challenges.issue(&agent(1), 1_000).unwrap();
        // Another key, an extended expiry, a truncated tag, garbage.
        assert_eq!(
            Challenges::new(&[8; KEY_LEN], 60).open(&c, &agent(1), 1_000),
            Err(ChallengeError::Unknown)
        );
        let (payload, tag) = c[PREFIX.len()..].split_once('.').unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(payload).unwrap();
        bytes[23] ^= 1;
        let extended = format!("{PREFIX}{}.{tag}", URL_SAFE_NO_PAD.encode(&bytes));
        assert_eq!(
            challenges.open(&extended, &agent(1), 1_000),
            Err(ChallengeError::Unknown)
        );
        assert_eq!(
            challenges.open(&c[..c.len() - 2], &agent(1), 1_000),
            Err(ChallengeError::Unknown)
        );
        for junk in ["", "ch1.", "ch1..", "x.y.z", "ch1.!!!.???"] {
            assert_eq!(challenges.open(junk, &agent(1), 1_000), Err(ChallengeError::Unknown));
        }
        assert_eq!(Challenges::new(&[0; KEY_LEN], 600).ttl(), 60);
    }
}
