//! A record as a line of the log: its RFC 8785 form with `"hash"` appended as the last member,
//! and the check of one line against its own hash. The chain itself (the genesis hash, a
//! record's hash, how records link) is `aip_aat::chain`, shared with the authority's log.

use aip_aat::chain::{self, is_hash, record_hash};
use serde_json::Value;

/// Appends the line of a record: `body` is its canonical form without the closing brace, `hash`
/// its [`record_hash`].
pub(super) fn push_line(out: &mut Vec<u8>, body: &[u8], hash: &str) {
    out.reserve(body.len() + 77);
    out.extend_from_slice(body);
    out.extend_from_slice(b",\"hash\":\"");
    out.extend_from_slice(hash.as_bytes());
    out.extend_from_slice(b"\"}\n");
}

/// Chain fields of one valid line, owned: the line they were read from is gone once it is
/// checked. [`OwnedLink::link`] lends them as the [`chain::Link`] the chain verifier takes.
pub(super) struct OwnedLink {
    pub(super) seq: u64,
    pub(super) prev_hash: String,
    pub(super) hash: String,
}

impl OwnedLink {
    /// The fields as a [`chain::Link`].
    pub(super) fn link(&self) -> chain::Link<'_> {
        chain::Link {
            seq: self.seq,
            prev_hash: &self.prev_hash,
            hash: &self.hash,
        }
    }
}

/// What is wrong with one line on its own.
pub(super) enum LineFault {
    Unparsable(String),
    Edited { seq: u64 },
}

/// Parses one line (without its newline) and checks its hash against its content.
pub(super) fn check_line(line: &[u8]) -> Result<OwnedLink, LineFault> {
    let text = std::str::from_utf8(line).map_err(|_| LineFault::Unparsable("not UTF-8".into()))?;
    // Strict parsing: a duplicated member could show readers a value the hash does not cover.
    let value = aip_aat::jcs::parse_strict(text).map_err(|e| LineFault::Unparsable(e.to_string()))?;
    let Value::Object(mut map) = value else {
        return Err(LineFault::Unparsable("not a JSON object".into()));
    };
    let hash = match map.remove("hash") {
        Some(Value::String(hash)) if is_hash(&hash) => hash,
        _ => return Err(LineFault::Unparsable("missing or malformed \"hash\"".into())),
    };
    let seq = match map.get("seq").and_then(Value::as_u64) {
        Some(seq) if seq > 0 => seq,
        _ => return Err(LineFault::Unparsable("missing or malformed \"seq\"".into())),
    };
    let prev_hash = match map.get("prev_hash").and_then(Value::as_str) {
        Some(prev) if is_hash(prev) => prev.to_owned(),
        _ => return Err(LineFault::Unparsable("missing or malformed \"prev_hash\"".into())),
    };
    let mut canonical = aip_aat::jcs::to_vec(&map).map_err(|e| LineFault::Unparsable(e.to_string()))?;
    if record_hash(&canonical) == hash {
        return Ok(OwnedLink { seq, prev_hash, hash });
    }
    // The line as written is the canonical text followed by the hash member; hashing those bytes
    // directly is exact even where parsing a number back would not be.
    if let Some(body) = text.strip_suffix(&format!(",\"hash\":\"{hash}\"}}")) {
        canonical.clear();
        canonical.extend_from_slice(body.as_bytes());
        canonical.push(b'}');
        if record_hash(&canonical) == hash {
            return Ok(OwnedLink { seq, prev_hash, hash });
        }
    }
    Err(LineFault::Edited { seq })
}
