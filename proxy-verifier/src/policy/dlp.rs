//! `spec.dlp` (spec 3.6): the DLP options and patterns, compiled into the scanner.

use serde_saphyr::Spanned;

use crate::dlp::{Dlp, DlpPatternSpec, DlpSettings, PatternScope, RequestAction};
use crate::user_regex::user_regex;

use super::error::{PolicyError, line_of};
use super::raw;
use super::units::parse_size;

pub(super) fn compile_dlp(dlp: Spanned<raw::Dlp>) -> Result<Option<Dlp>, PolicyError> {
    let at = line_of(&dlp);
    let dlp = dlp.value;
    if dlp.enabled == Some(false) {
        return Ok(None);
    }
    let max_scan_size = match &dlp.max_scan_size {
        None => 1 << 20,
        Some(text) => parse_size(&text.value).map_err(|m| PolicyError::invalid("spec.dlp.max_scan_size", text, m))?,
    };
    let on_request_match = match dlp.on_request_match.as_ref().map(|s| s.value.as_str()) {
        None | Some("block") => RequestAction::Block,
        Some("redact") => RequestAction::Redact,
        Some(other) => {
            return Err(PolicyError::invalid_at(
                "spec.dlp.on_request_match",
                dlp.on_request_match.as_ref().and_then(line_of),
                format!("unknown value {other:?}: use block or redact"),
            ));
        }
    };
    let block_on_failure = match dlp.on_redaction_failure.as_ref().map(|s| s.value.as_str()) {
        None | Some("block") => true,
        Some("allow") => false,
        Some(other) => {
            return Err(PolicyError::invalid_at(
                "spec.dlp.on_redaction_failure",
                dlp.on_redaction_failure.as_ref().and_then(line_of),
                format!("unknown value {other:?}: use block or allow"),
            ));
        }
    };
    let mut patterns = Vec::new();
    for (i, pattern) in dlp.patterns.into_iter().flatten().enumerate() {
        let field = format!("spec.dlp.patterns[{i}]");
        let name = pattern.name.value.trim().to_owned();
        if name.is_empty() || name.contains(']') {
            return Err(PolicyError::invalid(
                format!("{field}.name"),
                &pattern.name,
                "must be non-empty and must not contain ']'",
            ));
        }
        let regex = user_regex(&pattern.regex.value)
            .map_err(|m| PolicyError::invalid(format!("{field}.regex"), &pattern.regex, m))?;
        if regex.is_match("") {
            return Err(PolicyError::invalid(
                format!("{field}.regex"),
                &pattern.regex,
                "the pattern matches the empty string, so it would redact everywhere",
            ));
        }
        let scope = match pattern.scope.as_ref().map(|s| s.value.as_str()) {
            None | Some("all") | Some("both") => PatternScope::All,
            Some("request") => PatternScope::Request,
            Some("response") => PatternScope::Response,
            Some(other) => {
                return Err(PolicyError::invalid_at(
                    format!("{field}.scope"),
                    pattern.scope.as_ref().and_then(line_of),
                    format!("unknown scope {other:?}: use request, response or all"),
                ));
            }
        };
        patterns.push(DlpPatternSpec {
            name,
            source: pattern.regex.value,
            regex,
            scope,
        });
    }
    let compiled = Dlp::new(
        patterns,
        DlpSettings {
            scan_requests: dlp.scan_requests.unwrap_or(false),
            scan_responses: dlp.scan_responses.unwrap_or(true),
            detect_encoding: dlp.detect_encoding.unwrap_or(false),
            filter_stderr: dlp.filter_stderr.unwrap_or(false),
            max_scan_size,
            on_request_match,
            block_on_failure,
            log_original_on_failure: dlp.log_original_on_failure.unwrap_or(false),
        },
    )
    .map_err(|m| PolicyError::invalid_at("spec.dlp.patterns", at, m))?;
    Ok(Some(compiled))
}
