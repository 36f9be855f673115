//! `spec.tool_rules` (spec 3.5): a rule's action, rate limit, `schema_hash` and `allow_args`
//! patterns, compiled.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use regex::Regex;

use crate::user_regex::user_regex;

use super::error::{PolicyError, line_of};
use super::{raw, units};

/// A tool rule's action (spec 3.5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Permit, subject to argument validation.
    Allow,
    /// Refuse unconditionally.
    Block,
    /// Hold for a human's approval.
    Ask,
}

/// A rate limit: `count` calls per `period`, as a token bucket refilled continuously.
#[derive(Debug)]
pub struct RateLimit {
    /// Calls allowed per period (the bucket size).
    pub count: u32,
    /// The period.
    pub period: Duration,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Option<Instant>,
}

impl RateLimit {
    fn new(count: u32, period: Duration) -> Self {
        Self {
            count,
            period,
            bucket: Mutex::new(Bucket {
                tokens: f64::from(count),
                last: None,
            }),
        }
    }

    /// Takes one call from the bucket at `now`; false when the limit is exceeded.
    pub fn try_acquire(&self, now: Instant) -> bool {
        let mut bucket = self.bucket.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let capacity = f64::from(self.count);
        if let Some(last) = bucket.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            let refill = elapsed * capacity / self.period.as_secs_f64();
            bucket.tokens = (bucket.tokens + refill).min(capacity);
        }
        bucket.last = Some(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// `schema_hash` of a tool rule (spec 3.5.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaHash {
    /// `sha256`, `sha384` or `sha512`.
    pub algorithm: HashAlgorithm,
    /// Lowercase hex digest.
    pub digest: String,
}

/// Digest algorithms of `schema_hash`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlgorithm {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

/// One compiled `tool_rules` entry.
#[derive(Debug)]
pub struct ToolRule {
    /// The tool name as written.
    pub tool: String,
    /// The action.
    pub action: Action,
    /// The rate limit, if any.
    pub rate_limit: Option<RateLimit>,
    /// `strict_args` when set explicitly.
    pub strict_args: Option<bool>,
    /// The expected schema hash, if any.
    pub schema_hash: Option<SchemaHash>,
    /// Argument name → (pattern as written, compiled full-match regex).
    pub allow_args: Vec<(String, String, Regex)>,
}

pub(super) fn compile_rule(field: &str, rule: raw::ToolRule) -> Result<ToolRule, PolicyError> {
    let action = match rule.action.as_ref().map(|a| a.value.as_str()) {
        None | Some("allow") => Action::Allow,
        Some("block") => Action::Block,
        Some("ask") => Action::Ask,
        Some(other) => {
            return Err(PolicyError::invalid_at(
                format!("{field}.action"),
                rule.action.as_ref().and_then(line_of),
                format!("unknown action {other:?}: use allow, block or ask"),
            ));
        }
    };
    let rate_limit = match &rule.rate_limit {
        None => None,
        Some(text) => {
            let (count, period) = units::parse_rate(&text.value)
                .map_err(|message| PolicyError::invalid(format!("{field}.rate_limit"), text, message))?;
            Some(RateLimit::new(count, period))
        }
    };
    let schema_hash = match &rule.schema_hash {
        None => None,
        Some(text) => Some(
            parse_schema_hash(&text.value)
                .map_err(|message| PolicyError::invalid(format!("{field}.schema_hash"), text, message))?,
        ),
    };
    let mut allow_args = Vec::new();
    for (arg, pattern) in rule.allow_args.into_iter().flatten() {
        let full = format!("^(?:{})$", pattern.value);
        let regex = user_regex(&full)
            .map_err(|message| PolicyError::invalid(format!("{field}.allow_args.{arg}"), &pattern, message))?;
        allow_args.push((arg, pattern.value, regex));
    }
    Ok(ToolRule {
        tool: rule.tool.value,
        action,
        rate_limit,
        strict_args: rule.strict_args,
        schema_hash,
        allow_args,
    })
}

fn parse_schema_hash(text: &str) -> Result<SchemaHash, String> {
    let (algorithm, digest) = text
        .split_once(':')
        .ok_or_else(|| "use <algorithm>:<hex digest>, e.g. sha256:…".to_owned())?;
    let (algorithm, len) = match algorithm {
        "sha256" => (HashAlgorithm::Sha256, 64),
        "sha384" => (HashAlgorithm::Sha384, 96),
        "sha512" => (HashAlgorithm::Sha512, 128),
        other => return Err(format!("unsupported algorithm {other:?}: use sha256, sha384 or sha512")),
    };
    let digest = digest.to_ascii_lowercase();
    if digest.len() != len || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("the digest must be {len} hex characters"));
    }
    Ok(SchemaHash { algorithm, digest })
}
