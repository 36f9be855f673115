//! The official AIP conformance vectors (`tests/conformance/`, see its NOTICE), Basic and Full
//! levels, run against the policy loader, the engine, the JSON-RPC error builder and DLP.
//!
//! Every vector of every `basic/*.yaml` and `full/*.yaml` is checked; nothing is skipped. The
//! test fails if any vector fails, and also if the number of vectors checked differs from the
//! number of `- id:` entries in the files, so that a vector cannot be lost silently. All
//! failures are reported together, each with its id, what was expected and what we produced.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use aip_proxy_verifier::dlp::Direction;
use aip_proxy_verifier::engine::{Decision, Denial, DenialKind, Engine, Resolution, SchemaBook, Verdict};
use aip_proxy_verifier::jsonrpc::denial_response;
use aip_proxy_verifier::normalize::normalize;
use aip_proxy_verifier::policy::{Policy, SignaturePolicy, parse_duration};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

/// One vector file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Suite {
    name: String,
    #[allow(dead_code)]
    description: String,
    #[allow(dead_code)]
    spec_version: String,
    tests: Vec<Vector>,
}

/// One test vector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    id: String,
    #[allow(dead_code)]
    description: String,
    #[allow(dead_code)]
    #[serde(default)]
    note: Option<String>,
    /// Inline policy YAML; `null` means no policy is loaded.
    policy: Option<String>,
    input: Input,
    /// Checked key by key in [`check_expected`]; a key this runner does not know fails the vector.
    expected: Map<String, Value>,
}

/// A request (`method`, with `tool` and `args` for `tools/call`) or a response to scan
/// (`type: response`, `content`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    method: Option<String>,
    tool: Option<String>,
    args: Option<Value>,
    request_id: Option<Value>,
    context: Option<Context>,
    #[serde(rename = "type")]
    kind: Option<String>,
    content: Option<String>,
}

/// What happened before or around the request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Context {
    /// Identical calls made just before this one.
    previous_calls: Option<u32>,
    /// The window the previous calls fell in (they are all made at the same instant here, which
    /// is inside any window).
    window: Option<String>,
    /// The human's answer to an ASK: `deny`, `timeout` or `approve`.
    user_response: Option<String>,
}

/// What we produced for a request vector, in the vectors' vocabulary.
#[derive(Debug)]
struct RequestOutcome {
    decision: &'static str,
    violation: bool,
    refusal: Option<Denial>,
    /// The JSON-RPC error response, when refused.
    response: Option<Value>,
}

/// What we produced for a DLP vector.
#[derive(Debug)]
struct DlpOutcome {
    redacted: bool,
    output: String,
    events: Value,
}

fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

/// The `*.yaml` files of `level`, sorted.
fn vector_files(level: &str) -> Vec<PathBuf> {
    let dir = conformance_dir().join(level);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no vectors in {}", dir.display());
    files
}

/// Counts vectors textually (`- id:` items), independently of the deserializer.
fn count_ids(text: &str) -> usize {
    text.lines().filter(|l| l.trim_start().starts_with("- id:")).count()
}

fn decision_name(decision: Decision) -> &'static str {
    match decision {
        // The vectors have no ALLOW_MONITOR: a forwarded violation is ALLOW with violation true.
        Decision::Allow | Decision::AllowMonitor => "ALLOW",
        Decision::Block => "BLOCK",
        Decision::RateLimited => "RATE_LIMITED",
        Decision::Ask => "ASK",
    }
}

/// Runs a request vector: method check, then for `tools/call` the tool check, the human's
/// answer and the mode.
fn run_request(engine: Option<&Engine>, input: &Input) -> Result<RequestOutcome, String> {
    let method = input.method.as_deref().ok_or("input has neither method nor type")?;
    let tool = input.tool.as_deref();
    let id_text = match &input.request_id {
        None => "1".to_owned(),
        Some(id) => serde_json::to_string(id).map_err(|e| e.to_string())?,
    };
    let id = RawValue::from_string(id_text).map_err(|e| e.to_string())?;

    let resolution = match engine {
        // No policy loaded: fail closed.
        None => Resolution {
            decision: Decision::Block,
            denial: Some(Denial::new(DenialKind::Forbidden, "No policy loaded")),
        },
        Some(engine) => {
            let mut verdict = engine.check_method(method);
            if verdict == Verdict::Allow && normalize(method) == "tools/call" {
                let tool = tool.ok_or("tools/call without input.tool")?;
                let args = input.args.as_ref().and_then(Value::as_object);
                let now = Instant::now();
                let context = input.context.as_ref();
                if let Some(window) = context.and_then(|c| c.window.as_deref()) {
                    parse_duration(window).map_err(|e| format!("context.window: {e}"))?;
                }
                for _ in 0..context.and_then(|c| c.previous_calls).unwrap_or(0) {
                    engine.check_tool_call(tool, args, None, &SchemaBook::default(), now);
                }
                verdict = engine.check_tool_call(tool, args, None, &SchemaBook::default(), now);
                if verdict == Verdict::Ask {
                    verdict = match context.and_then(|c| c.user_response.as_deref()) {
                        None => Verdict::Ask,
                        Some("deny") => Verdict::Deny(Denial::new(DenialKind::UserDenied, "The user denied the call")),
                        Some("timeout") => Verdict::Deny(Denial::new(
                            DenialKind::UserTimeout,
                            "Nobody answered the approval prompt in time",
                        )),
                        Some("approve" | "allow") => Verdict::Allow,
                        Some(other) => return Err(format!("unknown context.user_response {other:?}")),
                    };
                }
            }
            engine.resolve(verdict)
        }
    };

    let response = match resolution.refusal() {
        None => None,
        Some(denial) => {
            let line = denial_response(Some(&id), denial, tool, Some(method));
            Some(serde_json::from_str(&line).map_err(|e| format!("error response is not JSON: {e}: {line}"))?)
        }
    };
    Ok(RequestOutcome {
        decision: decision_name(resolution.decision),
        violation: resolution.violation(),
        refusal: resolution.refusal().cloned(),
        response,
    })
}

/// Runs a DLP vector: the content is a server response.
fn run_dlp(policy: Option<&Policy>, input: &Input) -> Result<DlpOutcome, String> {
    let content = input
        .content
        .as_deref()
        .ok_or("a response vector needs input.content")?;
    let scanned = policy
        .and_then(Policy::dlp)
        .filter(|dlp| dlp.scans(Direction::Response))
        .and_then(|dlp| dlp.redact_text(content, Direction::Response));
    Ok(match scanned {
        None => DlpOutcome {
            redacted: false,
            output: content.to_owned(),
            events: json!([]),
        },
        Some((output, events)) => DlpOutcome {
            redacted: true,
            output,
            events: serde_json::to_value(events).map_err(|e| e.to_string())?,
        },
    })
}

/// Whether `actual` has every member of `expected`, recursively (extra members are fine;
/// arrays must have the same length and match item by item).
fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => e.iter().all(|(k, v)| a.get(k).is_some_and(|av| contains(av, v))),
        (Value::Array(a), Value::Array(e)) => a.len() == e.len() && a.iter().zip(e).all(|(av, ev)| contains(av, ev)),
        (Value::Number(a), Value::Number(e)) => a.as_f64() == e.as_f64(),
        _ => actual == expected,
    }
}

/// The mismatch of one expected key, if any.
fn differ(key: &str, want: &Value, got: &Value) -> Option<String> {
    (!contains(got, want)).then(|| format!("{key}: expected {want}, got {got}"))
}

/// Compares one vector's `expected` with what we produced; the mismatches, one per key.
fn check_expected(expected: &Map<String, Value>, outcome: &Result<Outcome, String>) -> Vec<String> {
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => return vec![format!("could not run: {e}")],
    };
    let mut problems = Vec::new();
    for (key, want) in expected {
        let got = match (key.as_str(), outcome) {
            ("decision", Outcome::Request(r)) => json!(r.decision),
            ("violation", Outcome::Request(r)) => json!(r.violation),
            ("error_code", Outcome::Request(r)) => json!(r.refusal.as_ref().map(|d| d.kind.code())),
            ("error_message", Outcome::Request(r)) => json!(r.refusal.as_ref().map(|d| d.kind.message())),
            ("error_data", Outcome::Request(r)) => r
                .response
                .as_ref()
                .map_or(Value::Null, |resp| resp["error"]["data"].clone()),
            ("response_format", Outcome::Request(r)) => r.response.clone().unwrap_or(Value::Null),
            ("redacted", Outcome::Dlp(d)) => json!(d.redacted),
            ("output", Outcome::Dlp(d)) => json!(d.output),
            ("dlp_events", Outcome::Dlp(d)) => d.events.clone(),
            (other, _) => {
                problems.push(format!("expected.{other} is not checked by this runner for this input"));
                continue;
            }
        };
        problems.extend(differ(key, want, &got));
    }
    problems
}

#[derive(Debug)]
enum Outcome {
    Request(RequestOutcome),
    Dlp(DlpOutcome),
}

impl Outcome {
    fn summary(&self) -> Value {
        match self {
            Self::Request(r) => json!({
                "decision": r.decision,
                "violation": r.violation,
                "error_code": r.refusal.as_ref().map(|d| d.kind.code()),
                "error_message": r.refusal.as_ref().map(|d| d.kind.message()),
                "response": r.response,
            }),
            Self::Dlp(d) => json!({ "redacted": d.redacted, "output": d.output, "dlp_events": d.events }),
        }
    }
}

/// Loads the vector's policy and runs its input.
fn run_vector(vector: &Vector) -> Result<Outcome, String> {
    let policy = match &vector.policy {
        None => None,
        Some(text) => {
            Some(Policy::parse(text, None, SignaturePolicy::NoKey).map_err(|e| format!("policy refused: {e}"))?)
        }
    };
    if vector.input.kind.is_some() || vector.input.content.is_some() {
        return match vector.input.kind.as_deref() {
            Some("response") => run_dlp(policy.as_ref(), &vector.input).map(Outcome::Dlp),
            other => Err(format!("unknown input.type {other:?}")),
        };
    }
    let engine = policy.map(Engine::new);
    run_request(engine.as_ref(), &vector.input).map(Outcome::Request)
}

#[test]
fn conformance_vectors_basic_and_full() {
    let mut found = 0;
    let mut checked = 0;
    let mut passed = 0;
    let mut failures = Vec::new();
    for level in ["basic", "full"] {
        for path in vector_files(level) {
            let text = std::fs::read_to_string(&path).unwrap();
            let label = format!("{level}/{}", path.file_name().unwrap().to_string_lossy());
            let in_file = count_ids(&text);
            found += in_file;
            let suite: Suite = match serde_saphyr::from_str(&text) {
                Ok(suite) => suite,
                Err(e) => {
                    failures.push(format!("{label}: cannot read the vectors: {e}"));
                    continue;
                }
            };
            let mut file_passed = 0;
            for vector in &suite.tests {
                checked += 1;
                let outcome = run_vector(vector);
                let problems = check_expected(&vector.expected, &outcome);
                if problems.is_empty() {
                    file_passed += 1;
                } else {
                    let actual = outcome.as_ref().map_or_else(|e| json!(e), Outcome::summary);
                    failures.push(format!(
                        "{label} {}:\n    {}\n    expected: {}\n    actual:   {}",
                        vector.id,
                        problems.join("\n    "),
                        Value::Object(vector.expected.clone()),
                        actual
                    ));
                }
            }
            if suite.tests.len() != in_file {
                failures.push(format!(
                    "{label}: {} vectors deserialized but {in_file} `- id:` entries in the file",
                    suite.tests.len()
                ));
            }
            println!("{label} ({}): {file_passed}/{in_file} passed", suite.name);
            passed += file_passed;
        }
    }
    println!("total: {passed}/{found} passed ({checked} checked)");
    assert!(
        failures.is_empty(),
        "{} conformance failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(checked, found, "every vector found must be checked");
    assert_eq!(passed, found, "every vector found must pass");
}
