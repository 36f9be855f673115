//! Policy evaluation (spec 4): methods, then tool calls in the order of spec 4.3.
//!
//! The identity steps 0b/0c take their input from a [`Grant`]: the capabilities of an AAT that
//! the caller has already verified. Evaluation itself never does I/O and never blocks beyond a
//! rate-limit bucket's mutex.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use aip_aat::jsonrpc::ErrorCode;
use serde_json::{Map, Value};

use crate::normalize::normalize;
use crate::policy::{Action, CapabilitiesMode, Mode, Policy, ToolRule, expand_home};

/// Why a call or method was refused; each kind has its spec 11 code.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DenialKind {
    /// -32006: the JSON-RPC method is not allowed.
    MethodNotAllowed,
    /// -32001: the tool is not allowed, blocked, or its arguments fail validation.
    Forbidden,
    /// -32002: the tool's rate limit is exhausted.
    RateLimited,
    /// -32007: an argument names a protected path.
    ProtectedPath,
    /// -32013: the tool's schema does not match its `schema_hash`.
    SchemaMismatch,
    /// -32017: the tool is not among the AAT's capabilities.
    CapabilityDenied {
        /// The agent.
        agent_id: String,
        /// What the AAT grants.
        granted: Vec<String>,
    },
    /// -32004: a human refused the held call.
    UserDenied,
    /// -32005: nobody answered the held call in time.
    UserTimeout,
    /// -32014: DLP could not scan or redact the message.
    DlpFailed,
}

impl DenialKind {
    /// The JSON-RPC error it is answered with (spec 11).
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::Forbidden => ErrorCode::Forbidden,
            Self::RateLimited => ErrorCode::RateLimited,
            Self::UserDenied => ErrorCode::UserDenied,
            Self::UserTimeout => ErrorCode::UserTimeout,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::ProtectedPath => ErrorCode::ProtectedPath,
            Self::SchemaMismatch => ErrorCode::SchemaMismatch,
            Self::DlpFailed => ErrorCode::DlpFailed,
            Self::CapabilityDenied { .. } => ErrorCode::CapabilityDenied,
        }
    }

    /// The JSON-RPC error code.
    pub fn code(&self) -> i32 {
        self.error_code().code()
    }

    /// The JSON-RPC error message.
    pub fn message(&self) -> &'static str {
        self.error_code().message()
    }

    /// Whether monitor mode refuses this too (spec 4.4).
    pub fn always_enforced(&self) -> bool {
        matches!(
            self,
            Self::RateLimited | Self::ProtectedPath | Self::UserDenied | Self::UserTimeout | Self::DlpFailed
        )
    }
}

/// A refusal with its explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The kind (and so the error code).
    pub kind: DenialKind,
    /// A sentence for the caller and the audit log.
    pub reason: String,
    /// The argument that failed validation.
    pub failed_arg: Option<String>,
    /// The rule (pattern, path or check) that failed.
    pub failed_rule: Option<String>,
}

impl Denial {
    /// A denial without argument details.
    pub fn new(kind: DenialKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
            failed_arg: None,
            failed_rule: None,
        }
    }
}

/// The policy's answer before the mode is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forward.
    Allow,
    /// Hold for a human.
    Ask,
    /// Refuse (or, in monitor mode, forward and log).
    Deny(Denial),
}

/// The decision recorded in the audit log (spec 12.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// A violation forwarded because the policy is in monitor mode.
    AllowMonitor,
    /// Refused.
    Block,
    /// Refused by a rate limit.
    RateLimited,
    /// Held for approval.
    Ask,
}

impl Decision {
    /// The audit string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "ALLOW",
            Self::AllowMonitor => "ALLOW_MONITOR",
            Self::Block => "BLOCK",
            Self::RateLimited => "RATE_LIMITED",
            Self::Ask => "ASK",
        }
    }
}

/// A verdict with the mode applied: what to do with the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// The audit decision.
    pub decision: Decision,
    /// The violation found: refused, or forwarded in monitor mode (`ALLOW_MONITOR`).
    pub denial: Option<Denial>,
}

impl Resolution {
    /// Whether a violation was found (also for forwarded monitor-mode violations).
    pub fn violation(&self) -> bool {
        self.denial.is_some()
    }

    /// The refusal to send back, when the message is not forwarded.
    pub fn refusal(&self) -> Option<&Denial> {
        match self.decision {
            Decision::Block | Decision::RateLimited => self.denial.as_ref(),
            Decision::Allow | Decision::AllowMonitor | Decision::Ask => None,
        }
    }
}

/// What a verified AAT contributes to evaluation (spec 4.3 step 0c).
#[derive(Clone, Copy, Debug)]
pub struct Grant<'a> {
    /// The agent.
    pub agent_id: &'a str,
    /// The AAT's `capabilities.tools`, as issued (compared after normalization).
    pub capabilities: &'a [String],
    /// How they combine with the policy.
    pub mode: CapabilitiesMode,
}

impl Grant<'_> {
    /// Whether the grant lets the (normalized) tool through step 0c.
    pub fn covers(&self, normalized: &str) -> bool {
        self.mode == CapabilitiesMode::PolicyOnly || self.capabilities.iter().any(|c| normalize(c) == normalized)
    }
}

/// What the proxy has learned about tool schemas from `tools/list`: whether pinned tools match
/// their `schema_hash` (spec 3.5.4), and for the others the digest first listed in this session,
/// so that a tool whose description or input schema changes afterwards (a "rug pull") is
/// refused until an operator accepts the change.
#[derive(Debug, Default)]
pub struct SchemaBook {
    seen: Mutex<HashMap<String, bool>>,
    listed: Mutex<HashMap<String, Listed>>,
}

/// An unpinned tool's digests.
#[derive(Debug)]
struct Listed {
    /// First listed, or last accepted.
    reference: String,
    /// The digest listed since, when it differs from `reference`.
    changed_to: Option<String>,
}

/// How a listed unpinned tool compares with what the session saw before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    /// Listed for the first time, or as before.
    Unchanged,
    /// Different from the reference, and newly so (or differently again).
    Changed,
    /// Different from the reference, as it already was.
    StillChanged,
}

impl SchemaBook {
    /// Records whether the listed schema of a (normalized) tool matched its `schema_hash`.
    pub fn record(&self, normalized_tool: &str, matches: bool) {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(normalized_tool.to_owned(), matches);
    }

    /// `Some(true)` verified, `Some(false)` mismatched, `None` never listed.
    pub fn status(&self, normalized_tool: &str) -> Option<bool> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(normalized_tool)
            .copied()
    }

    /// Compares the digest of an unpinned tool as listed now with its reference (the first
    /// listing of the session, or the last accepted change).
    pub fn observe(&self, normalized_tool: &str, digest: String) -> Listing {
        let mut listed = self.listed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(entry) = listed.get_mut(normalized_tool) else {
            listed.insert(
                normalized_tool.to_owned(),
                Listed {
                    reference: digest,
                    changed_to: None,
                },
            );
            return Listing::Unchanged;
        };
        if entry.reference == digest {
            entry.changed_to = None;
            return Listing::Unchanged;
        }
        if entry.changed_to.as_deref() == Some(digest.as_str()) {
            return Listing::StillChanged;
        }
        entry.changed_to = Some(digest);
        Listing::Changed
    }

    /// Whether the tool changed since its reference listing and was not accepted.
    pub fn changed(&self, normalized_tool: &str) -> bool {
        self.listed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(normalized_tool)
            .is_some_and(|l| l.changed_to.is_some())
    }

    /// An operator accepts the tool as it is now listed; false when it has no change to accept.
    pub fn accept(&self, normalized_tool: &str) -> bool {
        let mut listed = self.listed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match listed.get_mut(normalized_tool) {
            Some(entry) => match entry.changed_to.take() {
                Some(digest) => {
                    entry.reference = digest;
                    true
                }
                None => false,
            },
            None => false,
        }
    }
}

/// A compiled policy ready to evaluate.
#[derive(Debug)]
pub struct Engine {
    policy: Policy,
    cwd: Option<PathBuf>,
    home: Option<String>,
}

impl Engine {
    /// Wraps a policy. Relative paths in arguments are resolved against the current directory
    /// (the one the wrapped server inherits), and `~` against `$HOME`, both read once here.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            cwd: std::env::current_dir().ok(),
            home: std::env::var("HOME").ok(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Whether `tools/list` shows a (normalized) tool: allowed by `allowed_tools` or by a rule
    /// that does not block it, not in `denied_tools`, and not a look-alike of a configured name.
    pub fn lists_tool(&self, normalized: &str) -> bool {
        self.lists_tool_for(normalized, None)
    }

    /// As [`Engine::lists_tool`] for a client holding `grant`: the tool must also be among the
    /// AAT's capabilities (unless `policy_only`), and with `aat_only` they replace
    /// `allowed_tools`.
    pub fn lists_tool_for(&self, normalized: &str, grant: Option<&Grant<'_>>) -> bool {
        if self.policy.denied_tools().contains(normalized) || self.policy.confusable_with(normalized).is_some() {
            return false;
        }
        if let Some(grant) = grant
            && !grant.covers(normalized)
        {
            return false;
        }
        let aat_only = grant.is_some_and(|g| g.mode == CapabilitiesMode::AatOnly);
        match self.policy.rule(normalized) {
            Some(rule) => rule.action != Action::Block,
            None => aat_only || self.policy.allowed_tools().contains(normalized),
        }
    }

    /// Spec 4.2.
    pub fn check_method(&self, method: &str) -> Verdict {
        if self.policy.method_allowed(method) {
            Verdict::Allow
        } else {
            Verdict::Deny(Denial::new(
                DenialKind::MethodNotAllowed,
                format!("Method {method:?} is not allowed by policy"),
            ))
        }
    }

    /// Spec 4.3, steps 0c to 6, for a `tools/call` of `tool` with `arguments`.
    pub fn check_tool_call(
        &self,
        tool: &str,
        arguments: Option<&Map<String, Value>>,
        grant: Option<&Grant<'_>>,
        schemas: &SchemaBook,
        now: Instant,
    ) -> Verdict {
        let name = normalize(tool);
        let name = name.as_ref();
        let empty = Map::new();
        let args = arguments.unwrap_or(&empty);

        if self.policy.denied_tools().contains(name) {
            let mut denial = Denial::new(DenialKind::Forbidden, "Tool is in denied_tools");
            denial.failed_rule = Some(format!("denied_tools:{name}"));
            return Verdict::Deny(denial);
        }
        if let Some(grant) = grant
            && !grant.covers(name)
        {
            return Verdict::Deny(Denial::new(
                DenialKind::CapabilityDenied {
                    agent_id: grant.agent_id.to_owned(),
                    granted: grant.capabilities.to_vec(),
                },
                "Tool not in AAT capabilities",
            ));
        }
        if let Some(lookalike) = self.policy.confusable_with(name) {
            let mut denial = Denial::new(
                DenialKind::Forbidden,
                format!("Tool name {tool:?} is confusable with {lookalike:?}"),
            );
            denial.failed_rule = Some(format!("confusable:{lookalike}"));
            return Verdict::Deny(denial);
        }

        let rule = self.policy.rule(name);
        // A tool that changed since this session first listed it, unless pinned (the pin
        // decides then) or accepted by an operator.
        if rule.is_none_or(|r| r.schema_hash.is_none()) && schemas.changed(name) {
            let mut denial = Denial::new(
                DenialKind::SchemaMismatch,
                "Tool description or input schema changed since it was first listed; refused until an operator accepts the change",
            );
            denial.failed_rule = Some("tool_changed".into());
            return Verdict::Deny(denial);
        }
        // Step 1: rate limits.
        if let Some(limit) = rule.and_then(|r| r.rate_limit.as_ref())
            && !limit.try_acquire(now)
        {
            return Verdict::Deny(Denial::new(
                DenialKind::RateLimited,
                format!(
                    "Rate limit of {} per {} s exceeded",
                    limit.count,
                    limit.period.as_secs()
                ),
            ));
        }
        // Step 2: protected paths.
        if let Some(path) = self.protected_path_in(args) {
            let mut denial = Denial::new(DenialKind::ProtectedPath, "Argument names a protected path");
            denial.failed_arg = Some(path.0);
            denial.failed_rule = Some(path.1);
            return Verdict::Deny(denial);
        }
        // Step 3: tool rules.
        if let Some(rule) = rule {
            match rule.action {
                Action::Block => {
                    return Verdict::Deny(Denial::new(DenialKind::Forbidden, "Tool is blocked by policy"));
                }
                Action::Ask => {
                    return match validate_arguments(rule, args) {
                        Ok(()) => Verdict::Ask,
                        Err(denial) => Verdict::Deny(denial),
                    };
                }
                Action::Allow => {}
            }
            if let Some(expected) = &rule.schema_hash {
                match schemas.status(name) {
                    Some(true) => {}
                    Some(false) => {
                        let mut denial = Denial::new(
                            DenialKind::SchemaMismatch,
                            "Tool schema does not match the policy's schema_hash",
                        );
                        denial.failed_rule = Some(format!("schema_hash:{}", expected.digest));
                        return Verdict::Deny(denial);
                    }
                    None => {
                        return Verdict::Deny(Denial::new(
                            DenialKind::Forbidden,
                            "Tool schema not verified: the tool was not seen in tools/list",
                        ));
                    }
                }
            }
        }
        // Step 4: allowed_tools (a rule with action allow also allows its tool).
        let aat_only = grant.is_some_and(|g| g.mode == CapabilitiesMode::AatOnly);
        if !aat_only && rule.is_none() && !self.policy.allowed_tools().contains(name) {
            return Verdict::Deny(Denial::new(DenialKind::Forbidden, "Tool not in allowed_tools list"));
        }
        // Steps 5 and 6: arguments.
        if let Some(rule) = rule {
            if let Err(denial) = validate_arguments(rule, args) {
                return Verdict::Deny(denial);
            }
            if rule.strict_args.unwrap_or(self.policy.strict_args_default())
                && let Some(extra) = args.keys().find(|k| !rule.allow_args.iter().any(|(a, _, _)| a == *k))
            {
                let mut denial = Denial::new(
                    DenialKind::Forbidden,
                    format!("Argument {extra:?} is not declared in allow_args (strict_args)"),
                );
                denial.failed_arg = Some(extra.clone());
                denial.failed_rule = Some("strict_args".into());
                return Verdict::Deny(denial);
            }
        }
        Verdict::Allow
    }

    /// Applies the policy mode (spec 4.4).
    pub fn resolve(&self, verdict: Verdict) -> Resolution {
        match verdict {
            Verdict::Allow => Resolution {
                decision: Decision::Allow,
                denial: None,
            },
            Verdict::Ask => Resolution {
                decision: Decision::Ask,
                denial: None,
            },
            Verdict::Deny(denial) => {
                let decision = if self.policy.mode() == Mode::Monitor && !denial.kind.always_enforced() {
                    Decision::AllowMonitor
                } else if denial.kind == DenialKind::RateLimited {
                    Decision::RateLimited
                } else {
                    Decision::Block
                };
                Resolution {
                    decision,
                    denial: Some(denial),
                }
            }
        }
    }

    /// The first (argument, protected path) pair where a string argument names a protected path.
    fn protected_path_in(&self, args: &Map<String, Value>) -> Option<(String, String)> {
        let protected = self.policy.protected_paths();
        if protected.is_empty() {
            return None;
        }
        for (key, value) in args {
            let mut found = None;
            visit_strings(value, 0, &mut |s| {
                if found.is_none() {
                    found = protected
                        .iter()
                        .find(|p| names_path(s, p, self.home.as_deref(), self.cwd.as_deref()))
                        .cloned();
                }
            });
            if let Some(path) = found {
                return Some((key.clone(), path));
            }
        }
        None
    }
}

/// Calls `f` on every string (values and keys) inside `value`, to a bounded depth.
fn visit_strings(value: &Value, depth: usize, f: &mut dyn FnMut(&str)) {
    if depth > 128 {
        return;
    }
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().for_each(|v| visit_strings(v, depth + 1, f)),
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            f(k);
            visit_strings(v, depth + 1, f);
        }),
        _ => {}
    }
}

/// Whether `text` names the protected path `protected`: the path appears in it at path
/// boundaries, after `~` expansion and lexical resolution of `.` and `..`; relative paths are
/// also tried against the working directory.
fn names_path(text: &str, protected: &str, home: Option<&str>, cwd: Option<&Path>) -> bool {
    // Fast exit: a string that never mentions the path's last component can only name it
    // through `~`, `.` or `..`.
    let last = protected.trim_end_matches('/').rsplit('/').next().unwrap_or(protected);
    if !last.is_empty() && !text.contains(last) && !text.contains('~') && !text.contains("..") && text != "." {
        return false;
    }
    if contains_at_boundary(text, protected) {
        return true;
    }
    let expanded = expand_home(text, home);
    let lexical = lexical_normal(Path::new(expanded.as_ref()));
    if contains_at_boundary(&lexical.to_string_lossy(), protected) || contains_at_boundary(&expanded, protected) {
        return true;
    }
    if let Some(cwd) = cwd.filter(|_| !expanded.starts_with('/')) {
        let joined = lexical_normal(&cwd.join(expanded.as_ref()));
        return contains_at_boundary(&joined.to_string_lossy(), protected);
    }
    false
}

fn lexical_normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn contains_at_boundary(text: &str, needle: &str) -> bool {
    let needle = needle.trim_end_matches('/');
    if needle.is_empty() {
        return false;
    }
    let name_char = |c: char| c.is_alphanumeric() || matches!(c, '.' | '_' | '-');
    text.match_indices(needle).any(|(at, _)| {
        let before_ok = needle.starts_with('/') || text[..at].chars().next_back().is_none_or(|c| !name_char(c));
        let after_ok = text[at + needle.len()..].chars().next().is_none_or(|c| !name_char(c));
        before_ok && after_ok
    })
}

/// Spec 4.5: every constrained argument present and fully matching.
fn validate_arguments(rule: &ToolRule, args: &Map<String, Value>) -> Result<(), Denial> {
    for (arg, pattern, regex) in &rule.allow_args {
        let Some(value) = args.get(arg) else {
            let mut denial = Denial::new(DenialKind::Forbidden, format!("Required argument {arg:?} is missing"));
            denial.failed_arg = Some(arg.clone());
            denial.failed_rule = Some(pattern.clone());
            return Err(denial);
        };
        if !regex.is_match(&argument_string(value)) {
            let mut denial = Denial::new(
                DenialKind::Forbidden,
                format!("Argument {arg:?} does not match the allowed pattern"),
            );
            denial.failed_arg = Some(arg.clone());
            denial.failed_rule = Some(pattern.clone());
            return Err(denial);
        }
    }
    Ok(())
}

/// The STRING() of spec 4.5.
pub fn argument_string(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed(""),
        Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Value::Number(n) => Cow::Owned(n.to_string()),
        other => Cow::Owned(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::SignaturePolicy;

    fn engine(yaml: &str) -> Engine {
        Engine::new(Policy::parse(yaml, None, SignaturePolicy::NoKey).unwrap())
    }

    fn call(engine: &Engine, tool: &str, args: Value) -> Verdict {
        engine.check_tool_call(tool, args.as_object(), None, &SchemaBook::default(), Instant::now())
    }

    #[test]
    fn boundaries() {
        assert!(contains_at_boundary("/root/.ssh/id_rsa", "/root/.ssh"));
        assert!(contains_at_boundary("cat /root/.ssh", "/root/.ssh"));
        assert!(!contains_at_boundary("/root/.sshx", "/root/.ssh"));
        assert!(contains_at_boundary("app/.env", ".env"));
        assert!(contains_at_boundary(".env", ".env"));
        assert!(!contains_at_boundary("x.env", ".env"));
        assert!(!contains_at_boundary(".envrc", ".env"));
    }

    #[test]
    fn protected_paths_see_through_dots_and_tilde() {
        let e = engine(
            "apiVersion: aip.io/v1alpha1\nkind: AgentPolicy\nmetadata:\n  name: t\nspec:\n  allowed_tools: [read_file]\n  protected_paths: [/srv/secret]\n",
        );
        for path in ["/srv/secret", "/srv/./secret/a", "/srv/x/../secret", "//srv//secret"] {
            let verdict = call(&e, "read_file", serde_json::json!({ "path": path }));
            assert!(
                matches!(
                    verdict,
                    Verdict::Deny(Denial {
                        kind: DenialKind::ProtectedPath,
                        ..
                    })
                ),
                "{path}"
            );
        }
        let nested = call(
            &e,
            "read_file",
            serde_json::json!({ "opts": { "paths": ["/tmp", "/srv/secret"] } }),
        );
        assert!(matches!(
            nested,
            Verdict::Deny(Denial {
                kind: DenialKind::ProtectedPath,
                ..
            })
        ));
        assert_eq!(
            call(&e, "read_file", serde_json::json!({ "path": "/srv/secrets" })),
            Verdict::Allow
        );
    }

    #[test]
    fn cyrillic_lookalike_is_named_as_such() {
        let e = engine(
            "apiVersion: aip.io/v1alpha1\nkind: AgentPolicy\nmetadata:\n  name: t\nspec:\n  allowed_tools: [delete_file]\n",
        );
        let Verdict::Deny(denial) = call(&e, "d\u{0435}l\u{0435}t\u{0435}_fil\u{0435}", Value::Null) else {
            panic!("a confusable name must be refused");
        };
        assert_eq!(denial.kind, DenialKind::Forbidden);
        assert_eq!(denial.failed_rule.as_deref(), Some("confusable:delete_file"));
    }

    #[test]
    fn argument_strings_follow_spec_4_5() {
        assert_eq!(argument_string(&serde_json::json!(8080)), "8080");
        assert_eq!(argument_string(&serde_json::json!(true)), "true");
        assert_eq!(argument_string(&Value::Null), "");
        assert_eq!(argument_string(&serde_json::json!(["a", 1])), "[\"a\",1]");
    }
}
