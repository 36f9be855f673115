//! The `AgentPolicy` document (spec 3): loading, validation and the compiled form the engine
//! evaluates.
//!
//! Loading is all-or-nothing: a policy either compiles completely (every regex built under size
//! limits, every duration and rate parsed, the signature checked) or is refused with an error
//! naming the field and its line. Nothing is compiled lazily, so a bad pattern can never surface
//! while a call is waiting.

mod raw;
mod units;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aip_aat::keys::{Algorithm, PublicKey};
use base64::Engine as _;
use regex::Regex;
use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};

use crate::dlp::{Dlp, DlpPatternSpec, PatternScope, RequestAction};
use crate::normalize::{normalize, skeleton};
pub use crate::user_regex::{REGEX_DFA_SIZE_LIMIT, REGEX_SIZE_LIMIT, user_regex};
pub use units::{parse_duration, parse_size};

/// The longest policy file accepted.
pub const MAX_POLICY_BYTES: usize = 1 << 20;

/// The JSON-RPC methods allowed when `allowed_methods` is absent (spec 3.4.3).
pub const DEFAULT_ALLOWED_METHODS: &[&str] = &[
    "initialize",
    "initialized",
    "ping",
    "tools/call",
    "tools/list",
    "completion/complete",
    "notifications/initialized",
    "notifications/progress",
    "notifications/message",
    "notifications/resources/updated",
    "notifications/resources/list_changed",
    "notifications/tools/list_changed",
    "notifications/prompts/list_changed",
    "notifications/cancelled",
    "cancelled",
];

/// Why a policy was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy {path}: {source}")]
    Read {
        /// The policy file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The document is not valid YAML, or a field has the wrong type or is unknown.
    #[error("{}{message}", line_prefix(*line))]
    Syntax {
        /// 1-based line, when known.
        line: Option<u64>,
        /// What is wrong.
        message: String,
    },
    /// A field has a value the spec does not allow.
    #[error("{}{field}: {message}", line_prefix(*line))]
    Invalid {
        /// 1-based line, when known.
        line: Option<u64>,
        /// Dotted path of the field, e.g. `spec.tool_rules[2].rate_limit`.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// `metadata.signature` does not verify, or a signature is required and absent (-32010).
    #[error("policy signature invalid: {0}")]
    Signature(String),
}

fn line_prefix(line: Option<u64>) -> String {
    line.map_or_else(String::new, |l| format!("line {l}: "))
}

impl PolicyError {
    fn invalid<T>(field: impl Into<String>, at: &Spanned<T>, message: impl Into<String>) -> Self {
        Self::Invalid {
            line: line_of(at),
            field: field.into(),
            message: message.into(),
        }
    }

    fn invalid_at(field: impl Into<String>, line: Option<u64>, message: impl Into<String>) -> Self {
        Self::Invalid {
            line,
            field: field.into(),
            message: message.into(),
        }
    }

    /// The line the error points at, when known.
    pub fn line(&self) -> Option<u64> {
        match self {
            Self::Syntax { line, .. } | Self::Invalid { line, .. } => *line,
            Self::Read { .. } | Self::Signature(_) => None,
        }
    }
}

fn line_of<T>(at: &Spanned<T>) -> Option<u64> {
    let line = at.referenced.line();
    (line > 0).then_some(line)
}

/// The policy schema versions this implementation reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ApiVersion {
    /// `aip.io/v1alpha1`.
    V1Alpha1,
    /// `aip.io/v1alpha2`.
    V1Alpha2,
    /// `aip.io/v1alpha3`.
    V1Alpha3,
}

impl ApiVersion {
    /// The `apiVersion` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1Alpha1 => "aip.io/v1alpha1",
            Self::V1Alpha2 => "aip.io/v1alpha2",
            Self::V1Alpha3 => "aip.io/v1alpha3",
        }
    }
}

/// Enforcement mode (spec 3.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Violations are refused.
    Enforce,
    /// Violations are logged and forwarded (except those spec 4.4 always enforces).
    Monitor,
}

impl Mode {
    /// `enforce` or `monitor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Monitor => "monitor",
        }
    }
}

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

/// Human-in-the-loop settings (IETF draft 6.2.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HitlSettings {
    /// Who may approve (informational; shown with each hold).
    pub approvers: Vec<String>,
    /// How long a held call waits.
    pub timeout: Duration,
    /// Whether an unanswered hold is allowed (`on_timeout: allow`) instead of denied.
    pub allow_on_timeout: bool,
}

impl Default for HitlSettings {
    fn default() -> Self {
        Self {
            approvers: Vec::new(),
            timeout: Duration::from_secs(60),
            allow_on_timeout: false,
        }
    }
}

/// What happens when a remote dependency (validation server, registry) is unreachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailoverMode {
    /// Refuse (default).
    FailClosed,
    /// Allow, within `fail_open_constraints`.
    FailOpen,
    /// Decide with the local policy alone.
    LocalPolicy,
}

/// `spec.server.fail_open_constraints`: what `fail_open` may still let through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FailOpenConstraints {
    /// Only these tools (normalized) pass while failing open; empty means any.
    pub allowed_tools: Vec<String>,
    /// How long failing open may last.
    pub max_duration: Option<Duration>,
    /// How many calls may pass while failing open.
    pub max_requests: Option<u64>,
    /// Webhook to alert when failing open.
    pub alert_webhook: Option<String>,
    /// Whether the local policy must still allow the call.
    pub require_local_policy: bool,
}

/// `spec.server` (spec 3.8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    /// Whether the HTTP server runs.
    pub enabled: bool,
    /// Listen address.
    pub listen: String,
    /// Failover behaviour.
    pub failover_mode: FailoverMode,
    /// Validation timeout.
    pub timeout: Duration,
    /// TLS certificate and key files (PEM).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Limits on `fail_open`.
    pub fail_open: FailOpenConstraints,
    /// Endpoint paths: validate, health, metrics.
    pub validate_path: String,
    /// Health endpoint path.
    pub health_path: String,
    /// Metrics endpoint path.
    pub metrics_path: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: "127.0.0.1:9443".into(),
            failover_mode: FailoverMode::FailClosed,
            timeout: Duration::from_secs(5),
            tls: None,
            fail_open: FailOpenConstraints::default(),
            validate_path: "/v1/validate".into(),
            health_path: "/health".into(),
            metrics_path: "/metrics".into(),
        }
    }
}

/// Revocation source of spec 3.9.3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevocationMode {
    /// Ask the registry on every validation.
    Online,
    /// Poll the list with ETag and follow the SSE stream.
    Cached,
    /// Read the signed list from a file.
    Crl {
        /// The `.jws` file.
        path: PathBuf,
    },
}

/// `spec.registry` (spec 3.9), validated; enforced by the AAT verifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrySettings {
    /// The registry's base URL.
    pub endpoint: String,
    /// Revocation source.
    pub revocation: RevocationMode,
    /// Poll or re-read interval.
    pub check_interval: Duration,
    /// Revocation data older than this fails closed.
    pub max_staleness: Duration,
    /// Whether agent keys and revocation status are cached.
    pub cache_enabled: bool,
    /// Cache entry lifetime.
    pub cache_ttl: Duration,
    /// Cache size bound.
    pub cache_max_entries: u64,
    /// CA certificate for the registry's TLS.
    pub ca_cert: Option<PathBuf>,
    /// Bearer token for the registry.
    pub bearer_token: Option<String>,
    /// Issuer keys from this JWKS file instead of `{endpoint}/v1/jwks` (extension
    /// `spec.registry.jwks_file`, for proxies without network access to the registry).
    pub jwks_file: Option<PathBuf>,
}

/// `capabilities_mode` (spec 3.10.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapabilitiesMode {
    /// Tool must be in the AAT and allowed by the policy.
    Intersect,
    /// The AAT replaces `allowed_tools`.
    AatOnly,
    /// The AAT is for identity and audit only.
    PolicyOnly,
}

/// `spec.aat` (spec 3.10 and DESIGN §7), validated; enforced by the AAT verifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AatSettings {
    /// Whether AATs are validated when present.
    pub enabled: bool,
    /// Whether every tool call needs one.
    pub require: bool,
    /// Whether every call needs a per-call proof.
    pub require_proof: bool,
    /// Whether the AAT's own jti is single-use.
    pub single_use: bool,
    /// How capabilities combine with the policy.
    pub capabilities_mode: CapabilitiesMode,
    /// Accepted `iss` values (empty: any issuer whose key the registry publishes).
    pub trusted_issuers: Vec<String>,
    /// The audience expected in AATs.
    pub audience: String,
    /// Whether the user binding is checked (spec 10.3).
    pub verify_user_binding: bool,
    /// Whether capabilities are checked (`false` behaves like `policy_only`).
    pub verify_capabilities: bool,
    /// Oldest accepted AAT (`iat`).
    pub max_token_age: Duration,
    /// Clock skew tolerated.
    pub clock_skew: Duration,
    /// Longest accepted age of the user's authentication.
    pub max_auth_age: Option<Duration>,
    /// Calls allowed per session.
    pub max_calls_per_session: Option<u64>,
    /// Servers a delegation may reach.
    pub allowed_servers: Vec<String>,
    /// The HTTP header carrying the AAT.
    pub header_name: String,
}

/// A loaded, validated and compiled policy.
#[derive(Debug)]
pub struct Policy {
    api_version: ApiVersion,
    name: String,
    version: Option<String>,
    owner: Option<String>,
    mode: Mode,
    allowed_tools: HashSet<String>,
    all_methods: bool,
    allowed_methods: HashSet<String>,
    denied_methods: HashSet<String>,
    rules: HashMap<String, ToolRule>,
    /// Skeleton → normalized configured name, for confusable detection.
    skeletons: HashMap<String, String>,
    protected_paths: Vec<String>,
    strict_args_default: bool,
    dlp: Option<Dlp>,
    hitl: HitlSettings,
    server: ServerSettings,
    registry: Option<RegistrySettings>,
    aat: Option<AatSettings>,
    hash: String,
    signed: bool,
    source: Option<PathBuf>,
}

/// How a policy's signature is treated at load.
#[derive(Clone, Copy, Debug)]
pub enum SignaturePolicy<'a> {
    /// A signed policy is refused (nothing to check it against); an unsigned one loads.
    NoKey,
    /// The policy must carry a valid signature by this key.
    Require(&'a PublicKey),
}

impl Policy {
    /// Reads and compiles the policy file at `path`. The file itself becomes a protected path.
    pub fn load(path: &Path, signature: SignaturePolicy<'_>) -> Result<Self, PolicyError> {
        let read_error = |source| PolicyError::Read {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_error)?;
        if meta.len() > MAX_POLICY_BYTES as u64 {
            return Err(PolicyError::Syntax {
                line: None,
                message: format!("policy file is larger than {MAX_POLICY_BYTES} bytes"),
            });
        }
        let bytes = std::fs::read(path).map_err(read_error)?;
        let text = String::from_utf8(bytes).map_err(|e| PolicyError::Syntax {
            line: None,
            message: format!("policy is not UTF-8 (byte {})", e.utf8_error().valid_up_to()),
        })?;
        let absolute = std::path::absolute(path).map_err(read_error)?;
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| absolute.clone());
        Self::parse(&text, Some(&canonical), signature)
    }

    /// Compiles a policy from YAML text; `source` (the file it came from) becomes a protected
    /// path.
    pub fn parse(text: &str, source: Option<&Path>, signature: SignaturePolicy<'_>) -> Result<Self, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::Syntax {
                line: None,
                message: format!("policy is larger than {MAX_POLICY_BYTES} bytes"),
            });
        }
        let doc: raw::Document = serde_saphyr::from_str(text).map_err(syntax_error)?;
        let tree: serde_json::Value = serde_saphyr::from_str(text).map_err(syntax_error)?;
        let (hash, canonical) = canonical_hash(tree)?;
        let signed = check_signature(&doc, &canonical, signature)?;
        let mut policy = compile(doc, hash, signed)?;
        if let Some(source) = source {
            policy.protected_paths.push(source.to_string_lossy().into_owned());
            policy.source = Some(source.to_owned());
        }
        Ok(policy)
    }

    /// The schema version.
    pub fn api_version(&self) -> ApiVersion {
        self.api_version
    }
    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// `metadata.version`.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }
    /// `metadata.owner`.
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }
    /// Enforcement mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }
    /// Hex SHA-256 of the canonical policy (spec 5.2).
    pub fn hash(&self) -> &str {
        &self.hash
    }
    /// Whether the policy carried a verified signature.
    pub fn is_signed(&self) -> bool {
        self.signed
    }
    /// The file the policy was loaded from.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }
    /// Normalized `allowed_tools`.
    pub fn allowed_tools(&self) -> &HashSet<String> {
        &self.allowed_tools
    }
    /// The rule for a normalized tool name.
    pub fn rule(&self, normalized_tool: &str) -> Option<&ToolRule> {
        self.rules.get(normalized_tool)
    }
    /// All rules by normalized tool name.
    pub fn rules(&self) -> impl Iterator<Item = (&str, &ToolRule)> {
        self.rules.iter().map(|(k, v)| (k.as_str(), v))
    }
    /// Protected paths, `~` expanded, the policy file included.
    pub fn protected_paths(&self) -> &[String] {
        &self.protected_paths
    }
    /// `strict_args_default`.
    pub fn strict_args_default(&self) -> bool {
        self.strict_args_default
    }
    /// The compiled DLP scanner, when enabled.
    pub fn dlp(&self) -> Option<&Dlp> {
        self.dlp.as_ref()
    }
    /// Human-in-the-loop settings.
    pub fn hitl(&self) -> &HitlSettings {
        &self.hitl
    }
    /// `spec.server`.
    pub fn server(&self) -> &ServerSettings {
        &self.server
    }
    /// `spec.registry`, when enabled.
    pub fn registry(&self) -> Option<&RegistrySettings> {
        self.registry.as_ref()
    }
    /// `spec.aat`, when enabled.
    pub fn aat(&self) -> Option<&AatSettings> {
        self.aat.as_ref()
    }

    /// Whether a (raw) JSON-RPC method is allowed (spec 4.2).
    pub fn method_allowed(&self, method: &str) -> bool {
        let method = normalize(method);
        if self.denied_methods.contains(method.as_ref()) {
            return false;
        }
        self.all_methods || self.allowed_methods.contains(method.as_ref())
    }

    /// A configured tool name that `normalized` is confusable with but not equal to.
    pub fn confusable_with(&self, normalized: &str) -> Option<&str> {
        if self.rules.contains_key(normalized) || self.allowed_tools.contains(normalized) {
            return None;
        }
        self.skeletons
            .get(&skeleton(normalized))
            .filter(|name| name.as_str() != normalized)
            .map(String::as_str)
    }
}

fn syntax_error(e: serde_saphyr::Error) -> PolicyError {
    let location = e.location();
    let line = location.map(|l| l.line()).filter(|l| *l > 0);
    // The library's `Display` adds a source snippet, which would echo neighbouring policy lines
    // (tokens included) into logs, and its own location: take the plain message and drop its
    // trailing location, which `PolicyError` shows once as the `line N: ` prefix.
    let message = e.without_snippet().to_string();
    let message = match location {
        Some(l) => message
            .strip_suffix(&format!(" at line {}, column {}", l.line(), l.column()))
            .map_or(message.clone(), str::to_owned),
        None => message,
    };
    PolicyError::Syntax { line, message }
}

/// Spec 5.2: SHA-256 over RFC 8785 of the document without `metadata.signature`.
fn canonical_hash(mut tree: serde_json::Value) -> Result<(String, Vec<u8>), PolicyError> {
    if let Some(meta) = tree.get_mut("metadata").and_then(serde_json::Value::as_object_mut) {
        meta.remove("signature");
    }
    let canonical = aip_aat::jcs::to_vec(&tree).map_err(|e| PolicyError::Syntax {
        line: None,
        message: format!("policy cannot be canonicalized: {e}"),
    })?;
    let hash = hex::encode(Sha256::digest(&canonical));
    Ok((hash, canonical))
}

/// The canonical bytes of a policy text (what `metadata.signature` signs).
pub fn canonical_bytes(text: &str) -> Result<Vec<u8>, PolicyError> {
    let tree: serde_json::Value = serde_saphyr::from_str(text).map_err(syntax_error)?;
    canonical_hash(tree).map(|(_, bytes)| bytes)
}

/// The policy hash of a policy text (spec 5.2), without compiling it.
pub fn hash_of(text: &str) -> Result<String, PolicyError> {
    let tree: serde_json::Value = serde_saphyr::from_str(text).map_err(syntax_error)?;
    canonical_hash(tree).map(|(hash, _)| hash)
}

fn check_signature(doc: &raw::Document, canonical: &[u8], policy: SignaturePolicy<'_>) -> Result<bool, PolicyError> {
    let signature = doc.metadata.signature.as_ref();
    let key = match (policy, signature) {
        (SignaturePolicy::NoKey, None) => return Ok(false),
        (SignaturePolicy::NoKey, Some(_)) => {
            return Err(PolicyError::Signature(
                "the policy is signed but no verification key was given (--policy-key)".into(),
            ));
        }
        (SignaturePolicy::Require(_), None) => {
            return Err(PolicyError::Signature(
                "a policy key is configured but metadata.signature is absent".into(),
            ));
        }
        (SignaturePolicy::Require(key), Some(_)) => key,
    };
    let value = signature.map(|s| s.value.as_str()).unwrap_or_default();
    let Some(encoded) = value.strip_prefix("ed25519:") else {
        return Err(PolicyError::Signature(
            "metadata.signature must be \"ed25519:<base64>\"".into(),
        ));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded.trim()))
        .map_err(|_| PolicyError::Signature("metadata.signature is not base64".into()))?;
    if bytes.len() != 64 {
        return Err(PolicyError::Signature("metadata.signature is not 64 bytes".into()));
    }
    key.verify(Algorithm::EdDSA, canonical, &bytes)
        .map_err(|_| PolicyError::Signature("signature verification failed".into()))?;
    Ok(true)
}

fn compile(doc: raw::Document, hash: String, signed: bool) -> Result<Policy, PolicyError> {
    let api_version = match doc.api_version.value.as_str() {
        "aip.io/v1alpha1" => ApiVersion::V1Alpha1,
        "aip.io/v1alpha2" => ApiVersion::V1Alpha2,
        "aip.io/v1alpha3" => ApiVersion::V1Alpha3,
        other => {
            return Err(PolicyError::invalid(
                "apiVersion",
                &doc.api_version,
                format!(
                    "unsupported apiVersion {other:?}: use aip.io/v1alpha1, aip.io/v1alpha2 or \
                     aip.io/v1alpha3"
                ),
            ));
        }
    };
    if doc.kind.value != "AgentPolicy" {
        return Err(PolicyError::invalid(
            "kind",
            &doc.kind,
            format!("kind must be AgentPolicy, not {:?}", doc.kind.value),
        ));
    }
    let name = doc.metadata.name.value.trim().to_owned();
    if name.is_empty() {
        return Err(PolicyError::invalid(
            "metadata.name",
            &doc.metadata.name,
            "must not be empty",
        ));
    }
    let spec = doc.spec;
    let mode = match spec.mode.as_ref().map(|m| m.value.as_str()) {
        None | Some("enforce") => Mode::Enforce,
        Some("monitor") => Mode::Monitor,
        Some(other) => {
            let at = spec.mode.as_ref().and_then(line_of);
            return Err(PolicyError::invalid_at(
                "spec.mode",
                at,
                format!("unknown mode {other:?}: use enforce or monitor"),
            ));
        }
    };

    let allowed_tools = names("spec.allowed_tools", spec.allowed_tools.as_deref().unwrap_or(&[]))?;
    let (all_methods, allowed_methods) = match &spec.allowed_methods {
        None => (false, DEFAULT_ALLOWED_METHODS.iter().map(|m| (*m).to_owned()).collect()),
        Some(list) => {
            let set = names("spec.allowed_methods", list)?;
            (set.contains("*"), set)
        }
    };
    let denied_methods = names("spec.denied_methods", spec.denied_methods.as_deref().unwrap_or(&[]))?;

    let mut rules = HashMap::new();
    for (i, rule) in spec.tool_rules.into_iter().flatten().enumerate() {
        let field = format!("spec.tool_rules[{i}]");
        let compiled = compile_rule(&field, rule)?;
        let key = normalize(&compiled.tool).into_owned();
        if key.is_empty() {
            return Err(PolicyError::invalid_at(
                format!("{field}.tool"),
                None,
                "must not be empty",
            ));
        }
        if rules.insert(key.clone(), compiled).is_some() {
            return Err(PolicyError::invalid_at(
                format!("{field}.tool"),
                None,
                format!("a second rule for tool {key:?}: merge the two rules"),
            ));
        }
    }

    let mut skeletons = HashMap::new();
    for name in allowed_tools.iter().chain(rules.keys()) {
        skeletons.entry(skeleton(name)).or_insert_with(|| name.clone());
    }

    let home = std::env::var("HOME").ok();
    let mut protected_paths = Vec::new();
    for (i, path) in spec.protected_paths.iter().flatten().enumerate() {
        let value = path.value.trim();
        if value.is_empty() {
            return Err(PolicyError::invalid(
                format!("spec.protected_paths[{i}]"),
                path,
                "must not be empty",
            ));
        }
        protected_paths.push(expand_home(value, home.as_deref()).into_owned());
    }

    let dlp = match spec.dlp {
        Some(dlp) => compile_dlp(dlp)?,
        None => None,
    };
    if let Some(identity) = &spec.identity {
        let on = identity.value.enabled == Some(true) || identity.value.require_token == Some(true);
        if on {
            return Err(PolicyError::invalid(
                "spec.identity",
                identity,
                "v1alpha2 identity tokens are superseded by the Agent Authentication Token: \
                 remove spec.identity (or set enabled: false) and configure spec.aat and \
                 spec.registry instead",
            ));
        }
    }
    let hitl = compile_hitl(spec.hitl)?;
    let server = compile_server(spec.server)?;
    let registry = match spec.registry {
        Some(registry) => compile_registry(registry)?,
        None => None,
    };
    let aat = match spec.aat {
        Some(aat) => compile_aat(aat, &name, registry.is_some())?,
        None => None,
    };

    Ok(Policy {
        api_version,
        name,
        version: doc.metadata.version,
        owner: doc.metadata.owner,
        mode,
        allowed_tools,
        all_methods,
        allowed_methods,
        denied_methods,
        rules,
        skeletons,
        protected_paths,
        strict_args_default: spec.strict_args_default.unwrap_or(false),
        dlp,
        hitl,
        server,
        registry,
        aat,
        hash,
        signed,
        source: None,
    })
}

fn names(field: &str, list: &[Spanned<String>]) -> Result<HashSet<String>, PolicyError> {
    let mut set = HashSet::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let name = normalize(&item.value).into_owned();
        if name.is_empty() {
            return Err(PolicyError::invalid(format!("{field}[{i}]"), item, "must not be empty"));
        }
        set.insert(name);
    }
    Ok(set)
}

/// `path` with a leading `~` (alone or before `/`) replaced by `home`.
pub(crate) fn expand_home<'p>(path: &'p str, home: Option<&str>) -> Cow<'p, str> {
    match (path.strip_prefix('~'), home) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            Cow::Owned(format!("{}{rest}", home.trim_end_matches('/')))
        }
        _ => Cow::Borrowed(path),
    }
}

fn compile_rule(field: &str, rule: raw::ToolRule) -> Result<ToolRule, PolicyError> {
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

fn compile_dlp(dlp: Spanned<raw::Dlp>) -> Result<Option<Dlp>, PolicyError> {
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
        crate::dlp::DlpSettings {
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

fn compile_hitl(hitl: Option<raw::Hitl>) -> Result<HitlSettings, PolicyError> {
    let Some(hitl) = hitl else {
        return Ok(HitlSettings::default());
    };
    let mut settings = HitlSettings {
        approvers: hitl.approvers.unwrap_or_default(),
        ..HitlSettings::default()
    };
    if let Some(t) = &hitl.timeout_seconds {
        if t.value == 0 || t.value > 86_400 {
            return Err(PolicyError::invalid(
                "spec.hitl.timeout_seconds",
                t,
                "must be between 1 and 86400",
            ));
        }
        settings.timeout = Duration::from_secs(t.value);
    }
    settings.allow_on_timeout = match hitl.on_timeout.as_ref().map(|s| s.value.as_str()) {
        None | Some("deny") => false,
        Some("allow") => true,
        Some(other) => {
            return Err(PolicyError::invalid_at(
                "spec.hitl.on_timeout",
                hitl.on_timeout.as_ref().and_then(line_of),
                format!("unknown value {other:?}: use deny or allow"),
            ));
        }
    };
    Ok(settings)
}

fn duration_field(field: &str, value: Option<&Spanned<String>>, default: Duration) -> Result<Duration, PolicyError> {
    match value {
        None => Ok(default),
        Some(text) => parse_duration(&text.value).map_err(|m| PolicyError::invalid(field, text, m)),
    }
}

fn compile_server(server: Option<raw::Server>) -> Result<ServerSettings, PolicyError> {
    let Some(server) = server else {
        return Ok(ServerSettings::default());
    };
    let defaults = ServerSettings::default();
    let failover_mode = match server.failover_mode.as_ref().map(|s| s.value.as_str()) {
        None | Some("fail_closed") => FailoverMode::FailClosed,
        Some("fail_open") => FailoverMode::FailOpen,
        Some("local_policy") => FailoverMode::LocalPolicy,
        Some(other) => {
            return Err(PolicyError::invalid_at(
                "spec.server.failover_mode",
                server.failover_mode.as_ref().and_then(line_of),
                format!("unknown value {other:?}: use fail_closed, fail_open or local_policy"),
            ));
        }
    };
    let listen = match &server.listen {
        None => defaults.listen.clone(),
        Some(text) => {
            text.value
                .parse::<std::net::SocketAddr>()
                .map_err(|_| PolicyError::invalid("spec.server.listen", text, "use HOST:PORT with an IP address"))?;
            text.value.clone()
        }
    };
    let tls = match server.tls {
        Some(raw::Tls {
            cert: Some(cert),
            key: Some(key),
        }) => Some((PathBuf::from(cert), PathBuf::from(key))),
        Some(raw::Tls { cert: None, key: None }) | None => None,
        Some(_) => {
            return Err(PolicyError::invalid_at(
                "spec.server.tls",
                None,
                "give both cert and key",
            ));
        }
    };
    let fail_open = match server.fail_open_constraints {
        None => FailOpenConstraints::default(),
        Some(c) => FailOpenConstraints {
            allowed_tools: c
                .allowed_tools
                .unwrap_or_default()
                .iter()
                .map(|t| normalize(t).into_owned())
                .collect(),
            max_duration: match &c.max_duration {
                None => None,
                Some(text) => Some(
                    parse_duration(&text.value)
                        .map_err(|m| PolicyError::invalid("spec.server.fail_open_constraints.max_duration", text, m))?,
                ),
            },
            max_requests: c.max_requests,
            alert_webhook: c.alert_webhook,
            require_local_policy: c.require_local_policy.unwrap_or(true),
        },
    };
    let endpoints = server.endpoints.unwrap_or_default();
    let path = |p: Option<String>, default: String| -> Result<String, PolicyError> {
        match p {
            Some(p) if !p.starts_with('/') => Err(PolicyError::invalid_at(
                "spec.server.endpoints",
                None,
                format!("endpoint {p:?} must start with '/'"),
            )),
            Some(p) => Ok(p),
            None => Ok(default),
        }
    };
    Ok(ServerSettings {
        enabled: server.enabled.unwrap_or(false),
        listen,
        failover_mode,
        timeout: duration_field("spec.server.timeout", server.timeout.as_ref(), defaults.timeout)?,
        tls,
        fail_open,
        validate_path: path(endpoints.validate, defaults.validate_path)?,
        health_path: path(endpoints.health, defaults.health_path)?,
        metrics_path: path(endpoints.metrics, defaults.metrics_path)?,
    })
}

fn compile_registry(registry: Spanned<raw::Registry>) -> Result<Option<RegistrySettings>, PolicyError> {
    let at = line_of(&registry);
    let registry = registry.value;
    if registry.enabled != Some(true) {
        return Ok(None);
    }
    let Some(endpoint) = registry.endpoint else {
        return Err(PolicyError::invalid_at(
            "spec.registry.endpoint",
            at,
            "required when registry.enabled is true",
        ));
    };
    let url = endpoint.value.trim_end_matches('/').to_owned();
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| {
            url.strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
        });
    if !(url.starts_with("https://") || loopback) {
        return Err(PolicyError::invalid(
            "spec.registry.endpoint",
            &endpoint,
            "use an https:// URL (plain http only for a loopback registry)",
        ));
    }
    let revocation = registry.revocation.unwrap_or_default();
    let check_interval = duration_field(
        "spec.registry.revocation.check_interval",
        revocation.check_interval.as_ref(),
        Duration::from_secs(30),
    )?;
    at_least_a_second(
        "spec.registry.revocation.check_interval",
        revocation.check_interval.as_ref(),
        check_interval,
    )?;
    let mode = match revocation.mode.as_ref().map(|s| s.value.as_str()) {
        None | Some("cached") => RevocationMode::Cached,
        Some("online") => RevocationMode::Online,
        Some("crl") => match revocation.crl_path {
            Some(path) => RevocationMode::Crl { path: path.into() },
            None => {
                return Err(PolicyError::invalid_at(
                    "spec.registry.revocation.crl_path",
                    revocation.mode.as_ref().and_then(line_of),
                    "required when mode is crl",
                ));
            }
        },
        Some(other) => {
            return Err(PolicyError::invalid_at(
                "spec.registry.revocation.mode",
                revocation.mode.as_ref().and_then(line_of),
                format!("unknown mode {other:?}: use online, cached or crl"),
            ));
        }
    };
    let max_staleness = duration_field(
        "spec.registry.revocation.max_staleness",
        revocation.max_staleness.as_ref(),
        check_interval.saturating_mul(5),
    )?;
    if max_staleness < check_interval {
        return Err(PolicyError::invalid_at(
            "spec.registry.revocation.max_staleness",
            revocation.max_staleness.as_ref().and_then(line_of),
            "must be at least check_interval",
        ));
    }
    let jwks_file = match registry.jwks_file {
        Some(path) if path.value.trim().is_empty() => {
            return Err(PolicyError::invalid(
                "spec.registry.jwks_file",
                &path,
                "must be the path of a JWKS file, or be left out to fetch the keys from the endpoint",
            ));
        }
        Some(path) => Some(PathBuf::from(path.value.trim())),
        None => None,
    };
    let cache = registry.cache.unwrap_or_default();
    let cache_ttl = duration_field("spec.registry.cache.ttl", cache.ttl.as_ref(), Duration::from_secs(300))?;
    at_least_a_second("spec.registry.cache.ttl", cache.ttl.as_ref(), cache_ttl)?;
    let tls = registry.tls.unwrap_or_default();
    if tls.client_cert.is_some() || tls.client_key.is_some() {
        return Err(PolicyError::invalid_at(
            "spec.registry.tls.client_cert",
            at,
            "mutual TLS to the registry is not supported: use auth.type bearer",
        ));
    }
    let ca_cert = tls.ca_cert.map(PathBuf::from);
    let auth = registry.auth.unwrap_or_default();
    let bearer_token = match auth.kind.as_ref().map(|k| k.value.as_str()) {
        None => auth.token.or(auth.api_key),
        Some("bearer") => auth.token,
        Some("api_key") => auth.api_key,
        Some("mtls") => {
            return Err(PolicyError::invalid_at(
                "spec.registry.auth.type",
                auth.kind.as_ref().and_then(line_of),
                "mutual TLS to the registry is not supported: use bearer",
            ));
        }
        Some(other) => {
            return Err(PolicyError::invalid_at(
                "spec.registry.auth.type",
                auth.kind.as_ref().and_then(line_of),
                format!("unsupported type {other:?}: use bearer or api_key"),
            ));
        }
    };
    Ok(Some(RegistrySettings {
        endpoint: url,
        revocation: mode,
        check_interval,
        max_staleness,
        cache_enabled: cache.enabled.unwrap_or(true),
        cache_ttl,
        cache_max_entries: cache.max_entries.unwrap_or(10_000),
        ca_cert,
        bearer_token,
        jwks_file,
    }))
}

/// Refuses a registry interval under one second: the registry would be polled in a loop.
fn at_least_a_second(field: &str, value: Option<&Spanned<String>>, interval: Duration) -> Result<(), PolicyError> {
    if interval < Duration::from_secs(1) {
        return Err(PolicyError::invalid_at(
            field,
            value.and_then(line_of),
            "must be at least 1s",
        ));
    }
    Ok(())
}

fn compile_aat(aat: Spanned<raw::Aat>, name: &str, has_registry: bool) -> Result<Option<AatSettings>, PolicyError> {
    let at = line_of(&aat);
    let aat = aat.value;
    let require = aat.require.unwrap_or(false);
    if aat.enabled != Some(true) && !require {
        return Ok(None);
    }
    if !has_registry {
        return Err(PolicyError::invalid_at(
            "spec.aat",
            at,
            "AAT validation needs the issuer keys: enable spec.registry with its endpoint",
        ));
    }
    let capabilities_mode = match aat.capabilities_mode.as_ref().map(|s| s.value.as_str()) {
        None | Some("intersect") => CapabilitiesMode::Intersect,
        Some("aat_only") => CapabilitiesMode::AatOnly,
        Some("policy_only") => CapabilitiesMode::PolicyOnly,
        Some(other) => {
            return Err(PolicyError::invalid_at(
                "spec.aat.capabilities_mode",
                aat.capabilities_mode.as_ref().and_then(line_of),
                format!("unknown mode {other:?}: use intersect, aat_only or policy_only"),
            ));
        }
    };
    let mut trusted_issuers = Vec::new();
    for (i, issuer) in aat.trusted_issuers.iter().flatten().enumerate() {
        if issuer.value.trim().is_empty() {
            return Err(PolicyError::invalid(
                format!("spec.aat.trusted_issuers[{i}]"),
                issuer,
                "must not be empty",
            ));
        }
        trusted_issuers.push(issuer.value.trim().to_owned());
    }
    let validation = aat.validation.unwrap_or_default();
    if validation.verify_signature == Some(false) {
        return Err(PolicyError::invalid_at(
            "spec.aat.validation.verify_signature",
            at,
            "AAT signatures are always verified; remove this setting",
        ));
    }
    let max_auth_age = match &aat.max_auth_age {
        None => None,
        Some(text) => {
            Some(parse_duration(&text.value).map_err(|m| PolicyError::invalid("spec.aat.max_auth_age", text, m))?)
        }
    };
    Ok(Some(AatSettings {
        enabled: true,
        require,
        require_proof: aat.require_proof.unwrap_or(require),
        single_use: aat.single_use.unwrap_or(false),
        capabilities_mode,
        trusted_issuers,
        audience: aat.audience.unwrap_or_else(|| name.to_owned()),
        verify_user_binding: validation.verify_user_binding.unwrap_or(true),
        verify_capabilities: validation.verify_capabilities.unwrap_or(true),
        max_token_age: duration_field(
            "spec.aat.validation.max_token_age",
            validation.max_token_age.as_ref(),
            Duration::from_secs(3600),
        )?,
        clock_skew: duration_field(
            "spec.aat.validation.clock_skew",
            validation.clock_skew.as_ref(),
            Duration::from_secs(30),
        )?,
        max_auth_age,
        max_calls_per_session: aat.max_calls_per_session,
        allowed_servers: aat.allowed_servers.unwrap_or_default(),
        header_name: aat.header_name.unwrap_or_else(|| "X-AIP-AAT".into()),
    }))
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
