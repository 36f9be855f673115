//! Regexes written by policy authors (`allow_args`, DLP patterns): built under size limits, so
//! that a pattern too large to compile is refused when the policy loads, never while a call
//! waits.

use regex::{Regex, RegexBuilder};

/// Compiled-size bound of one user regex (bytes of the compiled program).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Bound of the lazy DFA cache of one user regex.
pub const REGEX_DFA_SIZE_LIMIT: usize = 2 << 20;

/// Builds a user regex under the size limits; a pattern too large to compile is refused here.
pub fn user_regex(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
        .nest_limit(64)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => {
                format!("pattern is too complex (compiled form exceeds {limit} bytes)")
            }
            other => format!("invalid regex: {}", one_line(&other.to_string())),
        })
}

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
