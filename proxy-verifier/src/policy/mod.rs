//! The `AgentPolicy` document (spec 3): loading, validation and the compiled form the engine
//! evaluates.
//!
//! Loading is all-or-nothing: a policy either compiles completely (every regex built under size
//! limits, every duration and rate parsed, the signature checked) or is refused with an error
//! naming the field and its line. Nothing is compiled lazily, so a bad pattern can never surface
//! while a call is waiting.
//!
//! # Files
//!
//! - `raw` — the document as written (YAML, with line numbers);
//! - `units` — durations, sizes and rates;
//! - `error` — [`PolicyError`];
//! - `tools` — `tool_rules`: actions, rate limits, `schema_hash`, `allow_args`;
//! - `dlp` — `spec.dlp`, compiled into the scanner;
//! - `hitl`, `server`, `registry`, `aat` — the settings of those sections;
//! - this file — [`Policy`]: load, parse, hash, signature, and what the engine asks of it.

mod aat;
mod dlp;
mod error;
mod hitl;
mod raw;
mod registry;
mod server;
mod tools;
mod units;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aip_aat::keys::{Algorithm, PublicKey};
use base64::Engine as _;
use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};

use crate::dlp::Dlp;
use crate::normalize::{normalize, skeleton};

pub use crate::user_regex::{REGEX_DFA_SIZE_LIMIT, REGEX_SIZE_LIMIT, user_regex};
pub use aat::{AatSettings, CapabilitiesMode, ReplayStore};
pub use error::PolicyError;
pub use hitl::HitlSettings;
pub use registry::{RegistrySettings, RevocationMode};
pub use server::{FailOpenConstraints, FailoverMode, ServerSettings};
pub use tools::{Action, HashAlgorithm, RateLimit, SchemaHash, ToolRule};
pub use units::{parse_duration, parse_size};

use error::line_of;

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

/// A loaded, validated and compiled policy.
#[derive(Debug)]
pub struct Policy {
    api_version: ApiVersion,
    name: String,
    version: Option<String>,
    owner: Option<String>,
    mode: Mode,
    allowed_tools: HashSet<String>,
    denied_tools: HashSet<String>,
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
    call_timeout: Option<Duration>,
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
    /// `spec.call_timeout`: how long the server may take to answer a request the proxy
    /// forwarded; `None` (the default) waits as long as the server takes.
    pub fn call_timeout(&self) -> Option<Duration> {
        self.call_timeout
    }
    /// Normalized `denied_tools`: refused whatever else allows them.
    pub fn denied_tools(&self) -> &HashSet<String> {
        &self.denied_tools
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
    let denied_tools = names("spec.denied_tools", spec.denied_tools.as_deref().unwrap_or(&[]))?;
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
        let compiled = tools::compile_rule(&field, rule)?;
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
    for name in allowed_tools.iter().chain(denied_tools.iter()).chain(rules.keys()) {
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
        Some(dlp) => dlp::compile_dlp(dlp)?,
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
    let hitl = hitl::compile_hitl(spec.hitl)?;
    let call_timeout = match &spec.call_timeout {
        None => None,
        Some(text) => {
            let timeout =
                parse_duration(&text.value).map_err(|m| PolicyError::invalid("spec.call_timeout", text, m))?;
            if timeout.is_zero() {
                return Err(PolicyError::invalid(
                    "spec.call_timeout",
                    text,
                    "must be longer than zero (leave it out for no timeout)",
                ));
            }
            Some(timeout)
        }
    };
    let server = server::compile_server(spec.server)?;
    let registry = match spec.registry {
        Some(registry) => registry::compile_registry(registry)?,
        None => None,
    };
    let aat = match spec.aat {
        Some(aat) => aat::compile_aat(aat, &name, registry.is_some())?,
        None => None,
    };

    Ok(Policy {
        api_version,
        name,
        version: doc.metadata.version,
        owner: doc.metadata.owner,
        mode,
        allowed_tools,
        denied_tools,
        all_methods,
        allowed_methods,
        denied_methods,
        rules,
        skeletons,
        protected_paths,
        strict_args_default: spec.strict_args_default.unwrap_or(false),
        dlp,
        hitl,
        call_timeout,
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

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
