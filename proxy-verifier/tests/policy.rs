//! Policy loader tests (spec 3 and 5.2): versions, refusals that name the field and its line,
//! regex limits, the v1alpha3 `registry` and `aat` sections, protected paths, signatures and the
//! policy hash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use aip_aat::keys::{KeyPair, Signer};
use aip_proxy_verifier::engine::{Decision, DenialKind, Engine, SchemaBook, Verdict};
use aip_proxy_verifier::policy::{
    AatSettings, ApiVersion, CapabilitiesMode, HashAlgorithm, Policy, PolicyError, RegistrySettings, ReplayStore,
    RevocationMode, SchemaHash, SignaturePolicy, canonical_bytes,
};
use base64::Engine as _;
use serde_json::{Value, json};

/// A v1alpha3 policy named `test-policy` with `spec` (already indented by two spaces) as its
/// spec. The first spec line is line 6.
fn doc(spec: &str) -> String {
    format!("apiVersion: aip.io/v1alpha3\nkind: AgentPolicy\nmetadata:\n  name: test-policy\nspec:\n{spec}")
}

fn parse(text: &str) -> Result<Policy, PolicyError> {
    Policy::parse(text, None, SignaturePolicy::NoKey)
}

/// The refusal of `text`, which must be an `Invalid` error: (field, line, whole message).
fn invalid(text: &str) -> (String, Option<u64>, String) {
    match parse(text) {
        Ok(_) => panic!("the policy must be refused:\n{text}"),
        Err(e @ PolicyError::Invalid { .. }) => {
            let shown = e.to_string();
            let PolicyError::Invalid { field, line, .. } = e else {
                unreachable!()
            };
            (field, line, shown)
        }
        Err(other) => panic!("expected a field error, got {other:?}"),
    }
}

/// Asserts that `text` is refused naming `field` at `line`, with `words` in the message.
fn assert_refused(text: &str, field: &str, line: u64, words: &[&str]) {
    let (got_field, got_line, shown) = invalid(text);
    assert_eq!(got_field, field, "{shown}");
    assert_eq!(got_line, Some(line), "{shown}");
    assert!(shown.starts_with(&format!("line {line}: {field}: ")), "{shown}");
    for word in words {
        assert!(shown.contains(word), "{shown:?} should contain {word:?}");
    }
}

fn call(engine: &Engine, tool: &str, args: Value) -> Verdict {
    engine.check_tool_call(tool, args.as_object(), None, &SchemaBook::default(), Instant::now())
}

fn denial_kind(verdict: &Verdict) -> Option<&DenialKind> {
    match verdict {
        Verdict::Deny(denial) => Some(&denial.kind),
        _ => None,
    }
}

// --- versions and unknown fields -------------------------------------------------------------

#[test]
fn every_api_version_loads() {
    for (text, version) in [
        ("aip.io/v1alpha1", ApiVersion::V1Alpha1),
        ("aip.io/v1alpha2", ApiVersion::V1Alpha2),
        ("aip.io/v1alpha3", ApiVersion::V1Alpha3),
    ] {
        let policy = parse(&format!(
            "apiVersion: {text}\nkind: AgentPolicy\nmetadata:\n  name: p\nspec:\n  allowed_tools: [read_file]\n"
        ))
        .unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(policy.api_version(), version);
        assert_eq!(policy.api_version().as_str(), text);
        assert_eq!(policy.name(), "p");
        assert!(policy.allowed_tools().contains("read_file"));
    }
}

#[test]
fn unknown_api_version_is_refused_with_its_line() {
    let text = "# a comment first, so the version is on line 2\napiVersion: aip.io/v1beta9\nkind: AgentPolicy\n\
                metadata:\n  name: p\n";
    let (field, line, shown) = invalid(text);
    assert_eq!(field, "apiVersion");
    assert_eq!(line, Some(2));
    assert!(shown.starts_with("line 2: apiVersion: "), "{shown}");
    assert!(
        shown.contains("aip.io/v1beta9") && shown.contains("aip.io/v1alpha3"),
        "{shown}"
    );
}

#[test]
fn unknown_field_is_refused_with_its_line() {
    let text = doc("  mode: enforce\n  alowed_tools:\n    - read_file\n");
    let err = parse(&text).unwrap_err();
    let shown = err.to_string();
    assert!(matches!(err, PolicyError::Syntax { .. }), "{err:?}");
    assert_eq!(err.line(), Some(7), "{shown}");
    assert!(shown.starts_with("line 7: "), "{shown}");
    assert!(shown.contains("alowed_tools"), "{shown}");
    // One line, the location once, no source excerpt.
    assert!(!shown.contains('\n'), "{shown}");
    assert_eq!(shown.matches("line 7").count(), 1, "{shown}");

    let nested = doc("  tool_rules:\n    - tool: x\n      actoin: block\n");
    let err = parse(&nested).unwrap_err();
    assert_eq!(err.line(), Some(8), "{err}");
    assert!(err.to_string().contains("actoin"), "{err}");

    // A syntax error does not echo neighbouring lines of the policy, which may hold secrets.
    let secret = doc(&format!(
        "{REGISTRY}    auth:\n      type: bearer\n      token: s3cret-token\n      tokn: x\n"
    ));
    let err = parse(&secret).unwrap_err();
    assert_eq!(err.line(), Some(12), "{err}");
    assert!(!err.to_string().contains("s3cret"), "{err}");
}

#[test]
fn wrong_kind_and_empty_name_are_refused() {
    let text = "apiVersion: aip.io/v1alpha3\nkind: Policy\nmetadata:\n  name: p\n";
    let (field, line, _) = invalid(text);
    assert_eq!((field.as_str(), line), ("kind", Some(2)));
    let text = "apiVersion: aip.io/v1alpha3\nkind: AgentPolicy\nmetadata:\n  name: \"  \"\n";
    let (field, line, _) = invalid(text);
    assert_eq!((field.as_str(), line), ("metadata.name", Some(4)));
}

// --- tool rules --------------------------------------------------------------------------------

#[test]
fn bad_rate_limit_names_the_rule_and_line() {
    let text = doc(
        "  tool_rules:\n    - tool: a\n      rate_limit: 5/minute\n    - tool: b\n      rate_limit: 10/fortnight\n",
    );
    assert_refused(&text, "spec.tool_rules[1].rate_limit", 10, &["10/fortnight", "minute"]);
    let zero = doc("  tool_rules:\n    - tool: a\n      rate_limit: 0/second\n");
    assert_refused(&zero, "spec.tool_rules[0].rate_limit", 8, &["at least 1"]);
}

#[test]
fn good_rate_limit_is_compiled() {
    let policy = parse(&doc("  tool_rules:\n    - tool: a\n      rate_limit: 100/hour\n")).unwrap();
    let limit = policy.rule("a").unwrap().rate_limit.as_ref().unwrap();
    assert_eq!((limit.count, limit.period), (100, Duration::from_secs(3600)));
}

#[test]
fn bad_action_names_the_rule_and_line() {
    let text = doc("  tool_rules:\n    - tool: a\n      action: explode\n");
    assert_refused(
        &text,
        "spec.tool_rules[0].action",
        8,
        &["explode", "allow, block or ask"],
    );
}

#[test]
fn invalid_regex_names_the_argument_and_line() {
    let text = doc("  tool_rules:\n    - tool: fetch\n      allow_args:\n        url: \"([a-z\"\n");
    assert_refused(&text, "spec.tool_rules[0].allow_args.url", 9, &["invalid regex"]);
}

#[test]
fn oversized_regex_is_refused_at_load() {
    let text = doc("  tool_rules:\n    - tool: t\n      allow_args:\n        x: \"(a{1000}){1000}\"\n");
    assert_refused(&text, "spec.tool_rules[0].allow_args.x", 9, &["too complex"]);
    let dlp = doc("  dlp:\n    patterns:\n      - name: big\n        regex: \"(a{1000}){1000}\"\n");
    assert_refused(&dlp, "spec.dlp.patterns[0].regex", 9, &["too complex"]);
}

#[test]
fn nested_quantifiers_load_and_match_in_linear_time() {
    // A backtracking engine takes exponential time on this pattern with a near-miss input; the
    // regex crate's automata take time linear in the input. The test only has to finish.
    let text = doc("  tool_rules:\n    - tool: t\n      allow_args:\n        x: \"((a+)+)+\"\n");
    let engine = Engine::new(parse(&text).unwrap());
    let hostile = format!("{}!", "a".repeat(100_000));
    let verdict = call(&engine, "t", json!({ "x": hostile }));
    assert_eq!(denial_kind(&verdict), Some(&DenialKind::Forbidden));
    let fine = "a".repeat(100_000);
    assert_eq!(call(&engine, "t", json!({ "x": fine })), Verdict::Allow);
}

#[test]
fn dlp_errors_name_the_pattern() {
    let text = doc(
        "  dlp:\n    patterns:\n      - name: ok\n        regex: \"x+\"\n      - name: bad\n        regex: \"[\"\n",
    );
    assert_refused(&text, "spec.dlp.patterns[1].regex", 11, &["invalid regex"]);
    let empty = doc("  dlp:\n    patterns:\n      - name: e\n        regex: \"x*\"\n");
    assert_refused(&empty, "spec.dlp.patterns[0].regex", 9, &["empty string"]);
    let scope = doc("  dlp:\n    patterns:\n      - name: s\n        regex: \"x\"\n        scope: sideways\n");
    assert_refused(&scope, "spec.dlp.patterns[0].scope", 10, &["sideways"]);
}

#[test]
fn duplicate_rules_are_refused() {
    let text = doc("  tool_rules:\n    - tool: read_file\n    - tool: READ_FILE\n      action: block\n");
    let (field, _, shown) = invalid(&text);
    assert_eq!(field, "spec.tool_rules[1].tool", "{shown}");
}

// --- schema_hash -------------------------------------------------------------------------------

#[test]
fn schema_hash_format() {
    let digest = "ab".repeat(32);
    let good = doc(&format!(
        "  tool_rules:\n    - tool: t\n      schema_hash: \"sha256:{}\"\n",
        digest.to_uppercase()
    ));
    let policy = parse(&good).unwrap();
    assert_eq!(
        policy.rule("t").unwrap().schema_hash,
        Some(SchemaHash {
            algorithm: HashAlgorithm::Sha256,
            digest: digest.clone(),
        })
    );
    let sha512 = doc(&format!(
        "  tool_rules:\n    - tool: t\n      schema_hash: \"sha512:{}\"\n",
        "0".repeat(128)
    ));
    assert_eq!(
        parse(&sha512)
            .unwrap()
            .rule("t")
            .unwrap()
            .schema_hash
            .as_ref()
            .unwrap()
            .algorithm,
        HashAlgorithm::Sha512
    );

    let field = "spec.tool_rules[0].schema_hash";
    for (value, words) in [
        (format!("md5:{digest}"), &["unsupported algorithm", "md5"][..]),
        (format!("sha256:{}", "ab".repeat(31)), &["64 hex characters"][..]),
        (format!("sha384:{digest}"), &["96 hex characters"][..]),
        (format!("sha256:{}", "zz".repeat(32)), &["64 hex characters"][..]),
        (digest.clone(), &["<algorithm>:<hex digest>"][..]),
    ] {
        let text = doc(&format!(
            "  tool_rules:\n    - tool: t\n      schema_hash: \"{value}\"\n"
        ));
        assert_refused(&text, field, 8, words);
    }
}

// --- identity, registry, aat ---------------------------------------------------------------------

#[test]
fn identity_tokens_are_superseded_by_the_aat() {
    let on = doc("  identity:\n    enabled: true\n    token_ttl: 5m\n");
    let (field, line, shown) = invalid(&on);
    assert_eq!((field.as_str(), line), ("spec.identity", Some(7)), "{shown}");
    assert!(
        shown.contains("superseded by the Agent Authentication Token"),
        "{shown}"
    );
    assert!(shown.contains("spec.aat"), "{shown}");
    let required = doc("  identity:\n    require_token: true\n");
    assert_eq!(invalid(&required).0, "spec.identity");
    // Switched off, an old v1alpha2 identity section still loads.
    parse(&doc("  identity:\n    enabled: false\n    token_ttl: 5m\n")).unwrap();
}

const REGISTRY: &str = "  registry:\n    enabled: true\n    endpoint: \"https://registry.example/\"\n";

#[test]
fn registry_is_validated() {
    let no_endpoint = doc("  registry:\n    enabled: true\n");
    assert_refused(&no_endpoint, "spec.registry.endpoint", 7, &["required"]);
    let plain_http = doc("  registry:\n    enabled: true\n    endpoint: \"http://registry.example\"\n");
    assert_refused(&plain_http, "spec.registry.endpoint", 8, &["https://"]);
    let bad_mode = doc(&format!("{REGISTRY}    revocation:\n      mode: sometimes\n"));
    assert_refused(&bad_mode, "spec.registry.revocation.mode", 10, &["sometimes"]);
    let crl_without_path = doc(&format!("{REGISTRY}    revocation:\n      mode: crl\n"));
    assert_eq!(invalid(&crl_without_path).0, "spec.registry.revocation.crl_path");
    let bad_ttl = doc(&format!("{REGISTRY}    cache:\n      ttl: soon\n"));
    assert_refused(&bad_ttl, "spec.registry.cache.ttl", 10, &["invalid duration"]);

    // Disabled: parsed, not in force.
    assert_eq!(
        parse(&doc("  registry:\n    enabled: false\n")).unwrap().registry(),
        None
    );

    let defaults = parse(&doc(REGISTRY)).unwrap();
    assert_eq!(
        defaults.registry(),
        Some(&RegistrySettings {
            endpoint: "https://registry.example".into(),
            revocation: RevocationMode::Cached,
            check_interval: Duration::from_secs(30),
            max_staleness: Duration::from_secs(150),
            cache_enabled: true,
            cache_ttl: Duration::from_secs(300),
            cache_max_entries: 10_000,
            ca_cert: None,
            bearer_token: None,
            jwks_file: None,
        })
    );

    let full = doc(
        "  registry:\n    enabled: true\n    endpoint: \"http://127.0.0.1:8080\"\n    tls:\n      ca_cert: /etc/aip/ca.pem\n    \
         cache:\n      enabled: false\n      ttl: 1m\n      max_entries: 50\n    revocation:\n      mode: crl\n      \
         crl_path: /etc/aip/revoked.jws\n      check_interval: 5m\n    auth:\n      type: bearer\n      token: s3cret\n",
    );
    assert_eq!(
        parse(&full).unwrap().registry(),
        Some(&RegistrySettings {
            endpoint: "http://127.0.0.1:8080".into(),
            revocation: RevocationMode::Crl {
                path: "/etc/aip/revoked.jws".into(),
            },
            check_interval: Duration::from_secs(300),
            max_staleness: Duration::from_secs(1500),
            cache_enabled: false,
            cache_ttl: Duration::from_secs(60),
            cache_max_entries: 50,
            ca_cert: Some("/etc/aip/ca.pem".into()),
            bearer_token: Some("s3cret".into()),
            jwks_file: None,
        })
    );
}

#[test]
fn registry_jwks_file_and_intervals_are_validated() {
    let with_file = doc(&format!(
        "{REGISTRY}    jwks_file: /etc/aip/jwks.json
"
    ));
    let settings = parse(&with_file).unwrap().registry().cloned().unwrap();
    assert_eq!(settings.jwks_file, Some("/etc/aip/jwks.json".into()));
    let empty_file = doc(&format!("{REGISTRY}    jwks_file: \"  \"\n"));
    assert_refused(&empty_file, "spec.registry.jwks_file", 9, &["path of a JWKS file"]);
    let not_a_string = doc(&format!("{REGISTRY}    jwks_file: [a, b]\n"));
    assert!(parse(&not_a_string).is_err());

    let fast = doc(&format!("{REGISTRY}    revocation:\n      check_interval: 500ms\n"));
    assert_refused(&fast, "spec.registry.revocation.check_interval", 10, &["at least 1s"]);
    let zero_ttl = doc(&format!("{REGISTRY}    cache:\n      ttl: 0s\n"));
    assert_refused(&zero_ttl, "spec.registry.cache.ttl", 10, &["at least 1s"]);
    let quick = doc(&format!(
        "{REGISTRY}    revocation:\n      check_interval: 1s\n      max_staleness: 2s\n"
    ));
    let settings = parse(&quick).unwrap().registry().cloned().unwrap();
    assert_eq!(
        (settings.check_interval, settings.max_staleness),
        (Duration::from_secs(1), Duration::from_secs(2))
    );
}

#[test]
fn aat_is_validated() {
    let without_registry = doc("  aat:\n    enabled: true\n");
    let (field, line, shown) = invalid(&without_registry);
    assert_eq!((field.as_str(), line), ("spec.aat", Some(7)), "{shown}");
    assert!(shown.contains("spec.registry"), "{shown}");

    let bad_mode = doc(&format!(
        "{REGISTRY}  aat:\n    enabled: true\n    capabilities_mode: everything\n"
    ));
    assert_refused(
        &bad_mode,
        "spec.aat.capabilities_mode",
        11,
        &["everything", "intersect"],
    );

    let no_signature_check = doc(&format!(
        "{REGISTRY}  aat:\n    enabled: true\n    validation:\n      verify_signature: false\n"
    ));
    assert_eq!(invalid(&no_signature_check).0, "spec.aat.validation.verify_signature");

    // Disabled: parsed, not in force.
    assert_eq!(
        parse(&doc(&format!("{REGISTRY}  aat:\n    enabled: false\n")))
            .unwrap()
            .aat(),
        None
    );

    let defaults = parse(&doc(&format!("{REGISTRY}  aat:\n    enabled: true\n"))).unwrap();
    assert_eq!(
        defaults.aat(),
        Some(&AatSettings {
            enabled: true,
            require: false,
            require_proof: false,
            single_use: false,
            capabilities_mode: CapabilitiesMode::Intersect,
            trusted_issuers: Vec::new(),
            audience: "test-policy".into(),
            audience_set: false,
            verify_user_binding: true,
            verify_capabilities: true,
            max_token_age: Duration::from_secs(3600),
            clock_skew: Duration::from_secs(30),
            max_auth_age: None,
            max_calls_per_session: None,
            allowed_servers: Vec::new(),
            header_name: "X-AIP-AAT".into(),
            replay_store: ReplayStore::Local(None),
            max_delegation_depth: 3,
        })
    );

    let full = doc(&format!(
        "{REGISTRY}  aat:\n    require: true\n    capabilities_mode: aat_only\n    trusted_issuers:\n      - \
         \"https://issuer.example\"\n    audience: files-proxy\n    header_name: X-Agent-Token\n    validation:\n      \
         verify_user_binding: false\n      max_token_age: 30m\n      clock_skew: 10s\n    max_auth_age: 1d\n    \
         max_calls_per_session: 500\n"
    ));
    assert_eq!(
        parse(&full).unwrap().aat(),
        Some(&AatSettings {
            enabled: true,
            require: true,
            require_proof: true,
            single_use: false,
            capabilities_mode: CapabilitiesMode::AatOnly,
            trusted_issuers: vec!["https://issuer.example".into()],
            audience: "files-proxy".into(),
            audience_set: true,
            verify_user_binding: false,
            verify_capabilities: true,
            max_token_age: Duration::from_secs(1800),
            clock_skew: Duration::from_secs(10),
            max_auth_age: Some(Duration::from_secs(86_400)),
            max_calls_per_session: Some(500),
            allowed_servers: Vec::new(),
            header_name: "X-Agent-Token".into(),
            replay_store: ReplayStore::Local(None),
            max_delegation_depth: 3,
        })
    );
}

#[test]
fn aat_replay_store_is_a_directory_or_a_redis_url() {
    let store = |value: &str| {
        parse(&doc(&format!(
            "{REGISTRY}  aat:
    enabled: true
    replay_store: \"{value}\"\n"
        )))
        .map(|p| p.aat().unwrap().replay_store.clone())
    };
    assert_eq!(
        store("/var/lib/aip/replay").unwrap(),
        ReplayStore::Local(Some("/var/lib/aip/replay".into()))
    );
    assert_eq!(
        store("redis://10.0.0.5:6380/3").unwrap(),
        ReplayStore::Redis {
            url: "redis://10.0.0.5:6380/3".into(),
            name: "10.0.0.5:6380/3".into()
        }
    );
    assert_eq!(
        store("redis://:s3cret@cache.internal").unwrap(),
        ReplayStore::Redis {
            url: "redis://:s3cret@cache.internal".into(),
            name: "cache.internal:6379/0".into()
        }
    );
    for (value, expected) in [
        ("replay", "absolute directory path"),
        ("rediss://cache:6379", "TLS"),
        ("http://cache:6379", "unknown scheme"),
        ("redis://:s3cret@cache:6379/zero", "database"),
        ("redis://:s3cret@cache:6379/0?timeout=1", "query"),
        ("redis:///0", "host"),
    ] {
        let text = doc(&format!(
            "{REGISTRY}  aat:
    enabled: true
    replay_store: \"{value}\"\n"
        ));
        assert_refused(&text, "spec.aat.replay_store", 11, &[expected]);
        assert!(!invalid(&text).2.contains("s3cret"), "{value}");
    }
}

// --- protected paths ---------------------------------------------------------------------------

#[test]
fn tilde_in_protected_paths_is_expanded() {
    let policy = parse(&doc(
        "  protected_paths:\n    - ~/.ssh\n    - \"~\"\n    - .env\n    - /etc/~shadow\n",
    ))
    .unwrap();
    let expected: Vec<String> = match std::env::var("HOME") {
        Ok(home) => {
            let home = home.trim_end_matches('/');
            vec![
                format!("{home}/.ssh"),
                home.to_owned(),
                ".env".into(),
                "/etc/~shadow".into(),
            ]
        }
        // Without a home directory there is nothing to expand to.
        Err(_) => vec!["~/.ssh".into(), "~".into(), ".env".into(), "/etc/~shadow".into()],
    };
    assert_eq!(policy.protected_paths(), expected.as_slice());
    let empty = doc("  protected_paths:\n    - /srv\n    - \"\"\n");
    assert_refused(&empty, "spec.protected_paths[1]", 8, &["empty"]);
}

#[test]
fn the_policy_file_itself_is_protected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, doc("  mode: monitor\n  allowed_tools: [read_file]\n")).unwrap();
    let policy = Policy::load(&path, SignaturePolicy::NoKey).unwrap();
    let canonical = std::fs::canonicalize(&path).unwrap();
    assert_eq!(policy.source(), Some(canonical.as_path()));
    assert!(
        policy
            .protected_paths()
            .contains(&canonical.to_string_lossy().into_owned())
    );

    let engine = Engine::new(policy);
    for arg in [canonical.clone(), path.clone()] {
        let verdict = call(&engine, "read_file", json!({ "path": arg }));
        assert_eq!(
            denial_kind(&verdict),
            Some(&DenialKind::ProtectedPath),
            "{}",
            arg.display()
        );
        // Refused even in monitor mode (spec 4.4), with -32007.
        let resolution = engine.resolve(verdict);
        assert_eq!(resolution.decision, Decision::Block);
        assert_eq!(resolution.refusal().map(|d| d.kind.code()), Some(-32007));
    }
    assert_eq!(
        call(&engine, "read_file", json!({ "path": "/tmp/other.txt" })),
        Verdict::Allow
    );

    // A policy parsed from text has no file to protect.
    assert!(
        parse(&doc("  allowed_tools: [read_file]\n"))
            .unwrap()
            .protected_paths()
            .is_empty()
    );
}

// --- signatures and the policy hash --------------------------------------------------------------

const UNSIGNED: &str = "apiVersion: aip.io/v1alpha3\nkind: AgentPolicy\nmetadata:\n  name: signed-policy\n  version: \
                        \"1.0.0\"\nspec:\n  allowed_tools:\n    - read_file\n  tool_rules:\n    - tool: write_file\n      \
                        action: ask\n";

fn signing_key() -> KeyPair {
    KeyPair::ed25519_from_seed(&[7u8; 32])
}

/// `text` with `metadata.signature` added: the signature of its canonical bytes by `key`.
fn sign(text: &str, key: &KeyPair) -> String {
    let signature = key.sign(&canonical_bytes(text).unwrap()).unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(signature);
    text.replacen(
        "  name: signed-policy\n",
        &format!("  name: signed-policy\n  signature: \"ed25519:{encoded}\"\n"),
        1,
    )
}

#[test]
fn a_valid_signature_loads() {
    let key = signing_key();
    let vk = key.public_key().clone();
    let signed = sign(UNSIGNED, &key);
    assert!(signed.contains("signature: \"ed25519:"));
    let policy = Policy::parse(&signed, None, SignaturePolicy::Require(&vk)).unwrap();
    assert!(policy.is_signed());
    assert!(policy.allowed_tools().contains("read_file"));
    let unsigned = parse(UNSIGNED).unwrap();
    assert!(!unsigned.is_signed());
}

#[test]
fn a_modified_signed_policy_is_refused() {
    let key = signing_key();
    let vk = key.public_key().clone();
    let signed = sign(UNSIGNED, &key);
    for (from, to) in [
        ("    - read_file\n", "    - read_file\n    - delete_file\n"),
        ("action: ask", "action: allow"),
        ("version: \"1.0.0\"", "version: \"1.0.1\""),
        ("name: signed-policy", "name: signed-policy2"),
        ("aip.io/v1alpha3", "aip.io/v1alpha2"),
    ] {
        let tampered = signed.replacen(from, to, 1);
        assert_ne!(tampered, signed);
        let err = Policy::parse(&tampered, None, SignaturePolicy::Require(&vk)).unwrap_err();
        assert!(matches!(err, PolicyError::Signature(_)), "{from} -> {to}: {err:?}");
        assert!(err.to_string().contains("verification failed"), "{err}");
    }
    // Another key's signature is refused too.
    let other = KeyPair::ed25519_from_seed(&[8u8; 32]).public_key().clone();
    let err = Policy::parse(&signed, None, SignaturePolicy::Require(&other)).unwrap_err();
    assert!(matches!(err, PolicyError::Signature(_)), "{err:?}");
    // And so is a signature that is not ed25519:<base64 of 64 bytes>.
    for bad in ["rsa:AAAA", "ed25519:not base64!", "ed25519:AAAA"] {
        let text = UNSIGNED.replacen(
            "  name: signed-policy\n",
            &format!("  name: signed-policy\n  signature: \"{bad}\"\n"),
            1,
        );
        let err = Policy::parse(&text, None, SignaturePolicy::Require(&vk)).unwrap_err();
        assert!(matches!(err, PolicyError::Signature(_)), "{bad}: {err:?}");
    }
}

#[test]
fn a_signed_policy_without_a_key_is_refused() {
    let signed = sign(UNSIGNED, &signing_key());
    let err = Policy::parse(&signed, None, SignaturePolicy::NoKey).unwrap_err();
    assert!(matches!(err, PolicyError::Signature(_)), "{err:?}");
    assert!(err.to_string().contains("no verification key"), "{err}");
}

#[test]
fn an_unsigned_policy_with_a_key_is_refused() {
    let vk = signing_key().public_key().clone();
    let err = Policy::parse(UNSIGNED, None, SignaturePolicy::Require(&vk)).unwrap_err();
    assert!(matches!(err, PolicyError::Signature(_)), "{err:?}");
    assert!(err.to_string().contains("metadata.signature is absent"), "{err}");
}

#[test]
fn the_policy_hash_ignores_key_order_layout_and_the_signature() {
    let reordered = "kind: AgentPolicy\nspec:\n  tool_rules:\n    - action: ask\n      tool: write_file\n  \
                     allowed_tools: [read_file]\nmetadata:\n  version: \"1.0.0\"\n  name: signed-policy\n\
                     apiVersion: aip.io/v1alpha3\n";
    let a = parse(UNSIGNED).unwrap();
    let b = parse(reordered).unwrap();
    assert_eq!(a.hash(), b.hash());
    assert_eq!(a.hash().len(), 64);
    assert!(
        a.hash()
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_eq!(canonical_bytes(UNSIGNED).unwrap(), canonical_bytes(reordered).unwrap());

    let key = signing_key();
    let vk = key.public_key().clone();
    let signed = Policy::parse(&sign(UNSIGNED, &key), None, SignaturePolicy::Require(&vk)).unwrap();
    assert_eq!(signed.hash(), a.hash());
    // The reordered text verifies with the signature made over the original order.
    let signature_line = sign(UNSIGNED, &key)
        .lines()
        .find(|l| l.contains("signature:"))
        .unwrap()
        .to_owned();
    let reordered_signed = reordered.replacen(
        "  name: signed-policy\n",
        &format!("  name: signed-policy\n{signature_line}\n"),
        1,
    );
    assert!(
        Policy::parse(&reordered_signed, None, SignaturePolicy::Require(&vk))
            .unwrap()
            .is_signed()
    );

    // Any change of content changes the hash.
    let changed = parse(&UNSIGNED.replacen("read_file", "read_files", 1)).unwrap();
    assert_ne!(changed.hash(), a.hash());
}

#[test]
fn the_registry_token_can_come_from_the_environment() {
    // PATH is set wherever tests run; the policy names the variable, never holds the value.
    let path = std::env::var("PATH").unwrap();
    let policy = parse(&doc(&format!(
        "{REGISTRY}    auth:\n      type: bearer\n      token_env: PATH\n"
    )))
    .unwrap();
    assert_eq!(policy.registry().unwrap().bearer_token.as_deref(), Some(path.trim()));

    let (field, line, shown) = invalid(&doc(&format!(
        "{REGISTRY}    auth:\n      type: bearer\n      token_env: AIP_TEST_NO_SUCH_VARIABLE_FOR_POLICY\n"
    )));
    assert_eq!(field, "spec.registry.auth.token_env");
    assert_eq!(line, Some(11));
    assert!(
        shown.contains("AIP_TEST_NO_SUCH_VARIABLE_FOR_POLICY is not set"),
        "{shown}"
    );

    let (field, _, shown) = invalid(&doc(&format!(
        "{REGISTRY}    auth:\n      type: bearer\n      token: s3cret\n      token_env: PATH\n"
    )));
    assert_eq!(field, "spec.registry.auth.token_env");
    assert!(!shown.contains("s3cret"), "{shown}");
}
