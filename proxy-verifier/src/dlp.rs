//! Data loss prevention (spec 3.6): find sensitive data and replace it with `[REDACTED:<name>]`.
//!
//! Messages are scanned as JSON text, string literal by string literal: a literal is decoded
//! only when it holds escapes, and only literals that change are re-encoded, so everything else
//! in the message stays byte-for-byte what the sender wrote. A [`RegexSet`] over all patterns
//! answers "anything to do?" in one pass; the per-pattern regexes run only on a hit.

use std::borrow::Cow;

use base64::Engine as _;
use regex::{Regex, RegexSet, RegexSetBuilder};

use crate::user_regex::{REGEX_DFA_SIZE_LIMIT, REGEX_SIZE_LIMIT};

/// Where a pattern applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatternScope {
    /// Tool call arguments only.
    Request,
    /// Server output only.
    Response,
    /// Both.
    All,
}

/// The direction of a scanned message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client → server (tool call arguments).
    Request,
    /// Server → client.
    Response,
}

/// What a match in a request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestAction {
    /// Refuse the call.
    Block,
    /// Redact the arguments and forward.
    Redact,
}

/// One compiled pattern.
#[derive(Clone, Debug)]
pub struct DlpPatternSpec {
    /// Rule name, used in `[REDACTED:<name>]` and the audit log.
    pub name: String,
    /// The pattern as written.
    pub source: String,
    /// The compiled pattern.
    pub regex: Regex,
    /// Where it applies.
    pub scope: PatternScope,
}

/// DLP options (spec 3.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DlpSettings {
    /// Scan tool call arguments.
    pub scan_requests: bool,
    /// Scan server output.
    pub scan_responses: bool,
    /// Also look inside base64 and hex encoded strings.
    pub detect_encoding: bool,
    /// Scan the server's stderr before passing it on.
    pub filter_stderr: bool,
    /// Messages larger than this cannot be scanned.
    pub max_scan_size: usize,
    /// What a match in a request does.
    pub on_request_match: RequestAction,
    /// Whether an unscannable message is refused (true) or passed on unscanned.
    pub block_on_failure: bool,
    /// Whether the audit log may keep the unredacted content of a failed redaction.
    pub log_original_on_failure: bool,
}

/// Matches of one rule in one message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DlpEvent {
    /// The rule name.
    pub rule: String,
    /// How many matches were replaced.
    pub count: usize,
}

/// The result of scanning one message.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// Nothing matched: pass the message on unchanged.
    Clean,
    /// Something matched: the redacted message and what was found.
    Redacted {
        /// The message with every match replaced.
        text: String,
        /// Matches per rule, in pattern order.
        events: Vec<DlpEvent>,
    },
    /// The message is larger than `max_scan_size`.
    TooLarge,
}

/// A compiled DLP scanner.
#[derive(Debug)]
pub struct Dlp {
    patterns: Vec<DlpPatternSpec>,
    request: Option<(RegexSet, Vec<usize>)>,
    response: Option<(RegexSet, Vec<usize>)>,
    settings: DlpSettings,
}

impl Dlp {
    /// Builds the scanner; fails only when the combined pattern set is too large.
    pub fn new(patterns: Vec<DlpPatternSpec>, settings: DlpSettings) -> Result<Self, String> {
        let chosen = |dir: Direction| -> Vec<usize> {
            patterns
                .iter()
                .enumerate()
                .filter(|(_, p)| applies(p.scope, dir))
                .map(|(i, _)| i)
                .collect()
        };
        let set = |chosen: Vec<usize>| -> Result<Option<(RegexSet, Vec<usize>)>, String> {
            if chosen.is_empty() {
                return Ok(None);
            }
            let set = RegexSetBuilder::new(chosen.iter().map(|&i| patterns[i].source.as_str()))
                .size_limit(REGEX_SIZE_LIMIT * 4)
                .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
                .build()
                .map_err(|e| format!("the patterns together are too complex: {e}"))?;
            Ok(Some((set, chosen)))
        };
        let (for_requests, for_responses) = (chosen(Direction::Request), chosen(Direction::Response));
        // Most policies scan both directions with the same patterns: one compiled set (and its
        // matching caches) serves both then.
        let shared = for_requests == for_responses;
        let request = set(for_requests)?;
        let response = if shared { request.clone() } else { set(for_responses)? };
        Ok(Self {
            patterns,
            request,
            response,
            settings,
        })
    }

    /// The options.
    pub fn settings(&self) -> &DlpSettings {
        &self.settings
    }

    /// The patterns, in order.
    pub fn patterns(&self) -> &[DlpPatternSpec] {
        &self.patterns
    }

    /// Whether messages in `dir` are scanned at all.
    pub fn scans(&self, dir: Direction) -> bool {
        match dir {
            Direction::Request => self.settings.scan_requests && self.request.is_some(),
            Direction::Response => self.settings.scan_responses && self.response.is_some(),
        }
    }

    fn set(&self, dir: Direction) -> Option<&(RegexSet, Vec<usize>)> {
        match dir {
            Direction::Request => self.request.as_ref(),
            Direction::Response => self.response.as_ref(),
        }
    }

    /// Redacts plain text (e.g. a stderr line, or one decoded JSON string).
    pub fn redact_text(&self, text: &str, dir: Direction) -> Option<(String, Vec<DlpEvent>)> {
        let mut events = Vec::new();
        let out = self.redact_str(text, dir, &mut events)?;
        Some((out.into_owned(), merge(events)))
    }

    fn redact_str<'t>(&self, text: &'t str, dir: Direction, events: &mut Vec<DlpEvent>) -> Option<Cow<'t, str>> {
        let (set, chosen) = self.set(dir)?;
        let hits = set.matches(text);
        let mut current: Cow<'t, str> = Cow::Borrowed(text);
        if hits.matched_any() {
            for (slot, &index) in chosen.iter().enumerate() {
                if !hits.matched(slot) {
                    continue;
                }
                let pattern = &self.patterns[index];
                let mut count = 0;
                let replaced = pattern.regex.replace_all(&current, |_: &regex::Captures<'_>| {
                    count += 1;
                    format!("[REDACTED:{}]", pattern.name)
                });
                if count > 0 {
                    let replaced = replaced.into_owned();
                    current = Cow::Owned(replaced);
                    events.push(DlpEvent {
                        rule: pattern.name.clone(),
                        count,
                    });
                }
            }
        }
        if matches!(current, Cow::Borrowed(_))
            && self.settings.detect_encoding
            && let Some(rule) = self.encoded_match(text, dir)
        {
            events.push(DlpEvent {
                rule: rule.to_owned(),
                count: 1,
            });
            return Some(Cow::Owned(format!("[REDACTED:{rule}]")));
        }
        match current {
            Cow::Borrowed(_) => None,
            owned => Some(owned),
        }
    }

    /// The first rule that matches inside a base64 or hex encoded `text`.
    fn encoded_match(&self, text: &str, dir: Direction) -> Option<&str> {
        let (set, chosen) = self.set(dir)?;
        let trimmed = text.trim();
        if trimmed.len() < 16 || trimmed.len() > self.settings.max_scan_size {
            return None;
        }
        let decoded = if trimmed.len().is_multiple_of(2) && trimmed.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(trimmed).ok()
        } else {
            let engines = [
                &base64::engine::general_purpose::STANDARD,
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                &base64::engine::general_purpose::STANDARD_NO_PAD,
            ];
            engines.iter().find_map(|e| e.decode(trimmed).ok())
        }?;
        let decoded = String::from_utf8_lossy(&decoded);
        let hits = set.matches(&decoded);
        chosen
            .iter()
            .enumerate()
            .find(|(slot, _)| hits.matched(*slot))
            .map(|(_, &i)| self.patterns[i].name.as_str())
    }

    /// Scans one JSON-RPC message (or, if it is not JSON, the raw text).
    pub fn scan_message(&self, text: &str, dir: Direction) -> Scan {
        if !self.scans(dir) {
            return Scan::Clean;
        }
        if text.len() > self.settings.max_scan_size {
            return Scan::TooLarge;
        }
        let Some((set, _)) = self.set(dir) else {
            return Scan::Clean;
        };
        if !text.contains('\\') && !set.is_match(text) && !self.settings.detect_encoding {
            return Scan::Clean;
        }
        let mut events = Vec::new();
        let as_json = redact_json_strings(text, |s| self.redact_str(s, dir, &mut events).map(Cow::into_owned));
        let redacted = match as_json {
            Some(out) => out,
            None => {
                events.clear();
                self.redact_str(text, dir, &mut events).map(Cow::into_owned)
            }
        };
        match redacted {
            Some(text) if !events.is_empty() => Scan::Redacted {
                text,
                events: merge(events),
            },
            _ => Scan::Clean,
        }
    }
}

fn applies(scope: PatternScope, dir: Direction) -> bool {
    matches!(
        (scope, dir),
        (PatternScope::All, _)
            | (PatternScope::Request, Direction::Request)
            | (PatternScope::Response, Direction::Response)
    )
}

/// Sums the counts of repeated rules, keeping first-seen order.
fn merge(events: Vec<DlpEvent>) -> Vec<DlpEvent> {
    let mut merged: Vec<DlpEvent> = Vec::with_capacity(events.len());
    for event in events {
        match merged.iter_mut().find(|e| e.rule == event.rule) {
            Some(e) => e.count += event.count,
            None => merged.push(event),
        }
    }
    merged
}

/// Applies `f` to the decoded content of every string literal of the JSON text `text`, and
/// re-encodes the literals it changes. Returns `Some(None)` when nothing changed, `None` when
/// `text` is not well-formed JSON string-wise (an unterminated literal or a bad escape).
fn redact_json_strings<F>(text: &str, mut f: F) -> Option<Option<String>>
where
    F: FnMut(&str) -> Option<String>,
{
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i;
        let mut j = i + 1;
        let mut escaped = false;
        loop {
            match bytes.get(j)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    j += 2;
                }
                _ => j += 1,
            }
        }
        let end = j + 1;
        let literal = &text[start..end];
        let replaced = if escaped {
            let decoded: String = serde_json::from_str(literal).ok()?;
            f(&decoded)
        } else {
            f(&literal[1..literal.len() - 1])
        };
        if let Some(new) = replaced {
            let buf = out.get_or_insert_with(|| String::with_capacity(text.len() + 32));
            buf.push_str(&text[copied..start]);
            buf.push_str(&serde_json::to_string(&new).ok()?);
            copied = end;
        }
        i = end;
    }
    Some(out.map(|mut buf| {
        buf.push_str(&text[copied..]);
        buf
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner(patterns: &[(&str, &str)]) -> Dlp {
        let all: Vec<_> = patterns.iter().map(|(n, s)| (*n, *s, PatternScope::All)).collect();
        scoped_scanner(&all)
    }

    fn scoped_scanner(patterns: &[(&str, &str, PatternScope)]) -> Dlp {
        let patterns = patterns
            .iter()
            .map(|(name, source, scope)| DlpPatternSpec {
                name: (*name).into(),
                source: (*source).into(),
                regex: Regex::new(source).unwrap(),
                scope: *scope,
            })
            .collect();
        Dlp::new(
            patterns,
            DlpSettings {
                scan_requests: true,
                scan_responses: true,
                detect_encoding: false,
                filter_stderr: false,
                max_scan_size: 1 << 20,
                on_request_match: RequestAction::Block,
                block_on_failure: true,
                log_original_on_failure: false,
            },
        )
        .unwrap()
    }

    #[test]
    fn redacts_text_and_counts_per_rule() {
        let dlp = scanner(&[("Email", "[a-z]+@[a-z]+\\.[a-z]{2,}"), ("SSN", "\\d{3}-\\d{2}-\\d{4}")]);
        let (out, events) = dlp
            .redact_text("a@b.com, c@d.org, 123-45-6789", Direction::Response)
            .unwrap();
        assert_eq!(out, "[REDACTED:Email], [REDACTED:Email], [REDACTED:SSN]");
        assert_eq!(
            events,
            vec![
                DlpEvent {
                    rule: "Email".into(),
                    count: 2
                },
                DlpEvent {
                    rule: "SSN".into(),
                    count: 1
                }
            ]
        );
        assert_eq!(dlp.redact_text("nothing here", Direction::Response), None);
    }

    #[test]
    fn scoped_patterns_apply_in_their_direction_only() {
        let dlp = scoped_scanner(&[
            ("Ask", "ask-[0-9]+", PatternScope::Request),
            ("Tell", "tell-[0-9]+", PatternScope::Response),
            ("Both", "both-[0-9]+", PatternScope::All),
        ]);
        let text = "ask-1 tell-2 both-3";
        let (request, _) = dlp.redact_text(text, Direction::Request).unwrap();
        assert_eq!(request, "[REDACTED:Ask] tell-2 [REDACTED:Both]");
        let (response, _) = dlp.redact_text(text, Direction::Response).unwrap();
        assert_eq!(response, "ask-1 [REDACTED:Tell] [REDACTED:Both]");
        // One set serves both directions when they scan with the same patterns.
        let shared = scanner(&[("Both", "both-[0-9]+")]);
        assert_eq!(
            shared.redact_text("both-1", Direction::Request).unwrap().0,
            "[REDACTED:Both]"
        );
        assert_eq!(
            shared.redact_text("both-1", Direction::Response).unwrap().0,
            "[REDACTED:Both]"
        );
    }

    #[test]
    fn json_messages_keep_untouched_bytes() {
        let dlp = scanner(&[("AWS Key", "AKIA[A-Z0-9]{16}")]);
        let line = r#"{"jsonrpc":"2.0", "id":7,"result":{"text":"key AKIAIOSFODNN7EXAMPLE","n":1.50}}"#;
        let Scan::Redacted { text, events } = dlp.scan_message(line, Direction::Response) else {
            panic!("expected a redaction");
        };
        assert_eq!(
            text,
            r#"{"jsonrpc":"2.0", "id":7,"result":{"text":"key [REDACTED:AWS Key]","n":1.50}}"#
        );
        assert_eq!(events[0].count, 1);
        let clean = r#"{"id":1,"result":{"text":"fine \"quoted\" text"}}"#;
        assert_eq!(dlp.scan_message(clean, Direction::Response), Scan::Clean);
    }

    #[test]
    fn escapes_cannot_hide_a_secret() {
        let dlp = scanner(&[("AWS Key", "AKIA[A-Z0-9]{16}")]);
        let line = r#"{"id":1,"result":{"text":"\u0041KIAIOSFODNN7EXAMPLE\n"}}"#;
        let Scan::Redacted { text, .. } = dlp.scan_message(line, Direction::Response) else {
            panic!("expected a redaction");
        };
        assert_eq!(text, r#"{"id":1,"result":{"text":"[REDACTED:AWS Key]\n"}}"#);
    }

    #[test]
    fn oversized_messages_are_reported() {
        let mut dlp = scanner(&[("X", "x{3}")]);
        dlp.settings.max_scan_size = 8;
        assert_eq!(dlp.scan_message("\"0123456789\"", Direction::Response), Scan::TooLarge);
    }

    #[test]
    fn encoded_secrets_are_found_when_asked() {
        let mut dlp = scanner(&[("AWS Key", "AKIA[A-Z0-9]{16}")]);
        dlp.settings.detect_encoding = true;
        let encoded = base64::engine::general_purpose::STANDARD.encode("AKIAIOSFODNN7EXAMPLE");
        let line = format!(r#"{{"id":1,"result":{{"blob":"{encoded}"}}}}"#);
        let Scan::Redacted { text, .. } = dlp.scan_message(&line, Direction::Response) else {
            panic!("expected a redaction");
        };
        assert_eq!(text, r#"{"id":1,"result":{"blob":"[REDACTED:AWS Key]"}}"#);
    }

    #[test]
    fn not_json_is_scanned_as_text() {
        let dlp = scanner(&[("AWS Key", "AKIA[A-Z0-9]{16}")]);
        let Scan::Redacted { text, .. } = dlp.scan_message("oops \"AKIAIOSFODNN7EXAMPLE", Direction::Response) else {
            panic!("expected a redaction");
        };
        assert_eq!(text, "oops \"[REDACTED:AWS Key]");
    }
}
