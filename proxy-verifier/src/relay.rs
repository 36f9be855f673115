//! The stdio relay: newline-delimited JSON-RPC between an MCP client (our stdin/stdout) and the
//! wrapped server (its stdin/stdout), with the policy applied on the way.
//!
//! Two OS threads carry the two directions, so a slow or stopped side never stalls the other;
//! no async runtime sits on the call path. What the proxy does not change is forwarded
//! byte-for-byte: the original line, not a re-serialization. Writes are buffered and flushed as
//! soon as the reading side has nothing more waiting, so a burst of pipelined calls costs one
//! write system call per burst while a lone call is never held back.
//!
//! Per message, upstream (client → server):
//! 1. lines longer than the size cap, non-UTF-8 and non-JSON lines are answered with JSON-RPC
//!    errors and not forwarded; responses to server requests (sampling, roots) pass unchanged;
//! 2. the method is checked (spec 4.2); `tools/call` is evaluated (spec 4.3), its arguments
//!    optionally DLP-scanned, and refused calls are answered by the proxy with the request id
//!    echoed exactly; `ask` calls are held without blocking later messages;
//! 3. `tools/list` requests are remembered so that their responses can be filtered.
//!
//! Downstream (server → client): `tools/list` results are filtered to what the policy allows and
//! checked against `schema_hash`; every message is DLP-scanned when the policy asks for it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};

use aip_aat::proof::Call;
use aip_aat::token::VerifiedAat;

use crate::audit::{AuditLog, Record};
use crate::dlp::{Direction, Scan};
use crate::engine::{Decision, Denial, DenialKind, Engine, Grant, Resolution, SchemaBook, Verdict};
use crate::hitl::{Hitl, HoldOutcome, HoldRequest};
use crate::identity::{self, Check, Identity, Presented, Rejection, Verified, grant_of};
use crate::jsonrpc::{self, Envelope, ToolCallParams};
use crate::metrics;
use crate::normalize::normalize;
use crate::policy::{HashAlgorithm, Mode};
use crate::state::PolicyHandle;

/// Default cap on one message, each direction.
pub const DEFAULT_MAX_MESSAGE: usize = 16 << 20;

/// A shared, flushable output.
pub type Sink = Arc<Mutex<Box<dyn Write + Send>>>;

/// Wraps a writer as a [`Sink`].
pub fn sink(writer: impl Write + Send + 'static) -> Sink {
    Arc::new(Mutex::new(Box::new(io::BufWriter::with_capacity(64 << 10, writer))))
}

/// How tool arguments appear in the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditArgs {
    /// Only `args_hash` (default): nothing of the content is kept.
    Hash,
    /// `args` with every string DLP-redacted, plus `args_hash`.
    Redacted,
}

/// Relay settings.
#[derive(Clone, Debug)]
pub struct RelayOptions {
    /// The longest accepted message, in bytes, in either direction.
    pub max_message: usize,
    /// How arguments are recorded.
    pub audit_args: AuditArgs,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            max_message: DEFAULT_MAX_MESSAGE,
            audit_args: AuditArgs::Hash,
        }
    }
}

/// The state both directions share.
pub struct Relay {
    policy: Arc<PolicyHandle>,
    schemas: Arc<SchemaBook>,
    audit: Arc<AuditLog>,
    hitl: Arc<Hitl>,
    identity: Option<Arc<Identity>>,
    options: RelayOptions,
    /// Ids (raw JSON text) of `tools/list` requests awaiting their response, with the AAT the
    /// request carried.
    lists: Mutex<HashMap<Box<str>, Option<Arc<VerifiedAat>>>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The result of reading one line.
enum Line {
    Eof,
    Complete,
    TooLong,
}

/// Reads one `\n`-terminated line into `buf` (terminator included), refusing to buffer more than
/// `max` bytes: the rest of an oversized line is consumed and dropped.
fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(match (too_long, buf.is_empty()) {
                (true, _) => Line::TooLong,
                (false, true) => Line::Eof,
                (false, false) => Line::Complete,
            });
        }
        let (chunk, done) = match memchr_newline(available) {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let used = chunk.len();
        if !too_long {
            if buf.len() + used > max + 1 {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        reader.consume(used);
        if done {
            return Ok(if too_long { Line::TooLong } else { Line::Complete });
        }
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

fn lock(sink: &Sink) -> std::sync::MutexGuard<'_, Box<dyn Write + Send>> {
    sink.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes one message (adding the newline when `text` lacks it) and flushes if asked.
fn send(sink: &Sink, text: &[u8], flush: bool) -> io::Result<()> {
    let mut out = lock(sink);
    out.write_all(text)?;
    if !text.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    if flush { out.flush() } else { Ok(()) }
}

fn strip_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl Relay {
    /// Builds a relay over shared state.
    pub fn new(
        policy: Arc<PolicyHandle>,
        schemas: Arc<SchemaBook>,
        audit: Arc<AuditLog>,
        hitl: Arc<Hitl>,
        identity: Option<Arc<Identity>>,
        options: RelayOptions,
    ) -> Arc<Self> {
        Arc::new(Self {
            policy,
            schemas,
            audit,
            hitl,
            identity,
            options,
            lists: Mutex::new(HashMap::new()),
        })
    }

    /// Client → server until the client closes its output. Returns when `input` ends; dropping
    /// `server` afterwards closes the server's stdin.
    pub fn upstream<R: Read>(
        self: &Arc<Self>,
        mut input: BufReader<R>,
        client: &Sink,
        server: &Sink,
    ) -> io::Result<()> {
        let mut buf = Vec::with_capacity(4096);
        loop {
            let read = read_line(&mut input, &mut buf, self.options.max_message)?;
            // Nothing more already read: flush now rather than wait for the next message.
            let idle = input.buffer().is_empty();
            match read {
                Line::Eof => return flush_both(client, server),
                Line::TooLong => {
                    let text = jsonrpc::error_response(
                        None,
                        jsonrpc::INVALID_REQUEST,
                        "Invalid Request",
                        Some(&serde_json::json!({
                            "reason": format!("message exceeds {} bytes", self.options.max_message)
                        })),
                    );
                    self.audit_protocol("upstream", "message too large");
                    send(client, text.as_bytes(), true)?;
                }
                Line::Complete => self.upstream_line(&buf, client, server, idle)?,
            }
        }
    }

    fn upstream_line(self: &Arc<Self>, line: &[u8], client: &Sink, server: &Sink, idle: bool) -> io::Result<()> {
        let body = strip_newline(line);
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let Ok(text) = std::str::from_utf8(body) else {
            self.audit_protocol("upstream", "message is not UTF-8");
            let text = jsonrpc::error_response(
                None,
                jsonrpc::PARSE_ERROR,
                "Parse error",
                Some(&reason("message is not valid UTF-8")),
            );
            return send(client, text.as_bytes(), true);
        };
        let Some(envelope) = Envelope::parse(text) else {
            let why = if text.trim_start().starts_with('[') {
                "batch requests are not supported; send one message per line"
            } else {
                "message is not a JSON-RPC object"
            };
            self.audit_protocol("upstream", why);
            let code = if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
                jsonrpc::INVALID_REQUEST
            } else {
                jsonrpc::PARSE_ERROR
            };
            let message = if code == jsonrpc::PARSE_ERROR {
                "Parse error"
            } else {
                "Invalid Request"
            };
            let text = jsonrpc::error_response(None, code, message, Some(&reason(why)));
            return send(client, text.as_bytes(), true);
        };
        let Some(method) = envelope.method.as_deref() else {
            // A response to a server-to-client request (sampling, roots, elicitation).
            return send(server, line, idle);
        };
        let engine = self.policy.current();
        let started = Instant::now();
        // Branch on the normalized name (spec 4.1), exactly as the method check compares it:
        // `TOOLS/CALL` is a tool call too.
        let normalized = normalize(method);
        let method_verdict = engine.check_method(method);
        if method_verdict != Verdict::Allow {
            let resolution = engine.resolve(method_verdict);
            return self.finish_method(
                &engine, &envelope, method, resolution, line, client, server, idle, started,
            );
        }
        if normalized == "tools/list" {
            return self.tools_list(&engine, &envelope, text, line, client, server, idle, started);
        }
        if normalized != "tools/call" {
            return send(server, line, idle);
        }
        self.tool_call(&engine, &envelope, text, line, client, server, idle, started)
    }

    /// `tools/list`: the AAT it carries (if any) is checked and stripped, and the request is
    /// remembered so that its response can be filtered by policy ∩ AAT.
    #[allow(clippy::too_many_arguments)]
    fn tools_list(
        &self,
        engine: &Engine,
        envelope: &Envelope<'_>,
        text: &str,
        line: &[u8],
        client: &Sink,
        server: &Sink,
        idle: bool,
        started: Instant,
    ) -> io::Result<()> {
        // Params that cannot be read (not an object, a credential given twice or not as a
        // string) are refused like those of `tools/call`: never forwarded as they are, since
        // they may hold credentials.
        let read = envelope.params.map(|raw| {
            let params = jsonrpc::Params::parse(raw)?;
            let stripped = params.forwarded(text)?;
            Ok::<_, jsonrpc::ParamsError>((params, stripped))
        });
        let (params, stripped) = match read {
            None => (None, None),
            Some(Ok((params, stripped))) => (Some(params), stripped),
            Some(Err(_)) => return self.invalid_params(envelope, "tools/list params cannot be read", client, idle),
        };
        let call = Call {
            method: "tools/list",
            tool: "",
            arguments: None,
        };
        let presented = Presented {
            aat: params.as_ref().and_then(|p| p.aat.as_deref()),
            proof: params.as_ref().and_then(|p| p.proof.as_deref()),
        };
        let verified = match self.authenticate(engine, envelope, presented, &call, client, idle, started) {
            Ok(verified) => verified,
            Err(answered) => return answered,
        };
        if let Some(id) = envelope.id
            && engine.policy().mode() == Mode::Enforce
        {
            self.lists
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id.get().into(), verified);
        }
        match stripped {
            Some(text) => send(server, text.as_bytes(), idle),
            None => send(server, line, idle),
        }
    }

    /// Spec 4.3 step 0b for `call`: `Ok` with the verified AAT (`None`: anonymous, or an
    /// optional AAT that failed), `Err` with the result of answering a refusal to the client.
    #[allow(clippy::too_many_arguments)]
    fn authenticate(
        &self,
        engine: &Engine,
        envelope: &Envelope<'_>,
        presented: Presented<'_>,
        call: &Call<'_>,
        client: &Sink,
        idle: bool,
        started: Instant,
    ) -> Result<Option<Arc<VerifiedAat>>, io::Result<()>> {
        let Some(identity) = &self.identity else {
            return Ok(None);
        };
        let tool = (call.method == "tools/call").then_some(call.tool);
        match identity.check(presented, call) {
            Check::Anonymous => Ok(None),
            Check::Verified(v) => Ok(Some(self.validated(engine, v, tool))),
            Check::Rejected(r) => {
                self.rejected(engine, envelope, tool, call.method, &r, started);
                if r.enforced {
                    return Err(self.refuse_identity(envelope, tool, &r, client, idle));
                }
                Ok(None)
            }
        }
    }

    /// Records the first use of a verified AAT (`AAT_VALIDATED`) and hands the token on.
    fn validated(&self, engine: &Engine, verified: Verified, tool: Option<&str>) -> Arc<VerifiedAat> {
        if verified.first_use {
            let mut record = Record::new("upstream", "ALLOW", engine.policy().mode().as_str(), false);
            record.event = Some("AAT_VALIDATED".into());
            record.tool = tool.map(str::to_owned);
            record.policy_hash = Some(engine.policy().hash().to_owned());
            identity::audit_fields(&verified.aat, &mut record);
            record.capabilities_granted = Some(verified.aat.claims().capabilities.tools.clone());
            self.audit.record(record);
        }
        if let Some(mode) = verified.failover {
            tracing::warn!(mode, "revocation not checked: registry data unavailable");
        }
        verified.aat
    }

    /// Records an `AAT_REJECTED` event (refused, or only logged when the AAT was optional).
    fn rejected(
        &self,
        engine: &Engine,
        envelope: &Envelope<'_>,
        tool: Option<&str>,
        method: &str,
        rejection: &Rejection,
        started: Instant,
    ) {
        let decision = if rejection.enforced { "BLOCK" } else { "ALLOW" };
        metrics::record_decision(decision, Some("aat_invalid"), started.elapsed());
        let mut record = Record::new("upstream", decision, engine.policy().mode().as_str(), true);
        record.event = Some("AAT_REJECTED".into());
        record.method = Some(method.to_owned());
        record.tool = tool.map(str::to_owned);
        record.request_id = envelope.id.and_then(|id| serde_json::from_str(id.get()).ok());
        record.policy_hash = Some(engine.policy().hash().to_owned());
        record.aat_error = rejection.refusal.aat_error().map(str::to_owned);
        record.reason = Some(if rejection.enforced {
            rejection.refusal.reason()
        } else {
            format!("AAT not required; evaluated without it: {}", rejection.refusal.reason())
        });
        if rejection.enforced {
            record.error_code = Some(rejection.refusal.error(tool).0);
        }
        if let Some(aat) = &rejection.aat {
            identity::audit_fields(aat, &mut record);
        }
        record.duration_us = Some(elapsed_us(started));
        if rejection.enforced {
            tracing::info!(tool, "refused: {}", rejection.refusal.reason());
        } else {
            tracing::warn!(
                tool,
                "invalid AAT presented but not required: {}",
                rejection.refusal.reason()
            );
        }
        self.audit.record(record);
    }

    fn refuse_identity(
        &self,
        envelope: &Envelope<'_>,
        tool: Option<&str>,
        rejection: &Rejection,
        client: &Sink,
        idle: bool,
    ) -> io::Result<()> {
        if envelope.id.is_none() {
            return Ok(());
        }
        let (code, message, data) = rejection.refusal.error(tool);
        let text = jsonrpc::error_response(envelope.id, code, message, Some(&data));
        send(client, text.as_bytes(), idle)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_method(
        &self,
        engine: &Engine,
        envelope: &Envelope<'_>,
        method: &str,
        resolution: Resolution,
        line: &[u8],
        client: &Sink,
        server: &Sink,
        idle: bool,
        started: Instant,
    ) -> io::Result<()> {
        let record = self.record(engine, &resolution, Some(method), None, envelope.id, started);
        self.audit.record(record);
        match resolution.refusal() {
            None => send(server, line, idle),
            Some(denial) => {
                tracing::info!(method, code = denial.kind.code(), "refused: {}", denial.reason);
                if envelope.id.is_none() {
                    // A notification gets no answer.
                    return Ok(());
                }
                let text = jsonrpc::denial_response(envelope.id, denial, None, Some(method));
                send(client, text.as_bytes(), idle)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn tool_call(
        self: &Arc<Self>,
        engine: &Arc<Engine>,
        envelope: &Envelope<'_>,
        text: &str,
        line: &[u8],
        client: &Sink,
        server: &Sink,
        idle: bool,
        started: Instant,
    ) -> io::Result<()> {
        let Some(Ok(mut params)) = envelope.params.map(ToolCallParams::parse) else {
            return self.invalid_params(
                envelope,
                "tools/call needs params {name: string, arguments?: object}",
                client,
                idle,
            );
        };
        // The credentials never reach the server (spec 7.6.1).
        let mut forward: Cow<'_, [u8]> = match params.params.forwarded(text) {
            Ok(Some(stripped)) => Cow::Owned(stripped.into_bytes()),
            Ok(None) => Cow::Borrowed(line),
            Err(_) => return self.invalid_params(envelope, "tools/call params cannot be read", client, idle),
        };
        let call = Call::tools_call(&params.name, params.arguments.as_ref());
        let presented = Presented {
            aat: params.params.aat.as_deref(),
            proof: params.params.proof.as_deref(),
        };
        let verified = match self.authenticate(engine, envelope, presented, &call, client, idle, started) {
            Ok(verified) => verified,
            Err(answered) => return answered,
        };
        let grant = verified
            .as_ref()
            .zip(self.identity.as_ref())
            .map(|(aat, identity)| grant_of(aat, identity));
        let args = params.arguments.as_ref().and_then(Value::as_object);
        let verdict = engine.check_tool_call(&params.name, args, grant.as_ref(), &self.schemas, started);
        let mut dlp_events = Vec::new();
        let verdict = match verdict {
            held_or_allowed @ (Verdict::Allow | Verdict::Ask) => {
                match self.scan_request(engine, &forward, &params.name) {
                    Ok(Some((text, events))) => {
                        forward = Cow::Owned(text.into_bytes());
                        dlp_events = events;
                        held_or_allowed
                    }
                    Ok(None) => held_or_allowed,
                    Err(denial) => Verdict::Deny(denial),
                }
            }
            denied => denied,
        };
        let resolution = engine.resolve(verdict);
        let mut record = self.record(
            engine,
            &resolution,
            Some("tools/call"),
            Some(&params.name),
            envelope.id,
            started,
        );
        if let Some(aat) = &verified {
            identity::audit_fields(aat, &mut record);
        }
        let preview =
            (resolution.decision == Decision::Ask).then(|| preview_arguments(engine, params.arguments.as_ref()));
        self.audit_args(engine, &mut record, params.arguments.take());
        if !dlp_events.is_empty() {
            record.event = Some("DLP_TRIGGERED".into());
            record.dlp = Some(dlp_events.into_iter().map(Into::into).collect());
        }
        if let Some(denial) = resolution.refusal() {
            record.duration_us = Some(elapsed_us(started));
            self.audit.record(record);
            tracing::info!(tool = %params.name, code = denial.kind.code(), "refused: {}", denial.reason);
            let text = jsonrpc::denial_response(envelope.id, denial, Some(&params.name), None);
            return send(client, text.as_bytes(), idle);
        }
        if resolution.decision == Decision::Ask {
            record.duration_us = Some(elapsed_us(started));
            let preview = preview.unwrap_or_default();
            return self.hold(
                engine,
                envelope,
                &params.name,
                preview,
                forward.into_owned(),
                record,
                client,
                server,
            );
        }
        record.duration_us = Some(elapsed_us(started));
        self.audit.record(record);
        tracing::debug!(tool = %params.name, decision = resolution.decision.as_str(), "forwarded");
        send(server, &forward, idle)
    }

    /// Answers -32602 with `why` for params the proxy cannot read, logged as a protocol event.
    fn invalid_params(&self, envelope: &Envelope<'_>, why: &str, client: &Sink, idle: bool) -> io::Result<()> {
        let method = envelope.method.as_deref().unwrap_or_default();
        self.audit_protocol("upstream", &format!("{method} without valid params"));
        let text = jsonrpc::error_response(
            envelope.id,
            jsonrpc::INVALID_PARAMS,
            "Invalid params",
            Some(&reason(why)),
        );
        send(client, text.as_bytes(), idle)
    }

    /// DLP on the arguments of a call: `Ok(Some(..))` redacted line, `Err` refusal.
    fn scan_request(
        &self,
        engine: &Engine,
        line: &[u8],
        tool: &str,
    ) -> Result<Option<(String, Vec<crate::dlp::DlpEvent>)>, Denial> {
        let Some(dlp) = engine.policy().dlp().filter(|d| d.scans(Direction::Request)) else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(strip_newline(line));
        match dlp.scan_message(&text, Direction::Request) {
            Scan::Clean => Ok(None),
            Scan::TooLarge if dlp.settings().block_on_failure => Err(Denial::new(
                DenialKind::DlpFailed,
                "Request exceeds dlp.max_scan_size and cannot be scanned",
            )),
            Scan::TooLarge => Ok(None),
            Scan::Redacted { text, events } => match dlp.settings().on_request_match {
                crate::dlp::RequestAction::Redact => {
                    tracing::info!(tool, "request redacted by DLP");
                    Ok(Some((text, events)))
                }
                crate::dlp::RequestAction::Block => {
                    let rules: Vec<&str> = events.iter().map(|e| e.rule.as_str()).collect();
                    let mut denial = Denial::new(
                        DenialKind::Forbidden,
                        format!("Request contains sensitive data ({})", rules.join(", ")),
                    );
                    denial.failed_rule = Some(format!("dlp:{}", rules.join(",")));
                    Err(denial)
                }
            },
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn hold(
        self: &Arc<Self>,
        engine: &Arc<Engine>,
        envelope: &Envelope<'_>,
        tool: &str,
        arguments_preview: String,
        forward: Vec<u8>,
        record: Record,
        client: &Sink,
        server: &Sink,
    ) -> io::Result<()> {
        let request = HoldRequest {
            tool: tool.to_owned(),
            arguments_preview,
            policy_name: engine.policy().name().to_owned(),
            rule: format!("tool_rules[{tool}].action=ask"),
            agent_id: None,
        };
        let id: Option<Box<RawValue>> = envelope.id.map(ToOwned::to_owned);
        let held_tool = tool.to_owned();
        let allow_on_timeout = engine.policy().hitl().allow_on_timeout;
        let (relay, client, server) = (Arc::clone(self), Arc::clone(client), Arc::clone(server));
        let hold_id = self.hitl.submit(
            request,
            Box::new(move |outcome| {
                let mut record = record;
                let allowed = match outcome {
                    HoldOutcome::Approved => true,
                    HoldOutcome::TimedOut => allow_on_timeout,
                    HoldOutcome::Denied => false,
                };
                record.event = Some("HITL_RESOLVED".into());
                let result = if allowed {
                    record.decision = Decision::Allow.as_str().into();
                    record.reason = Some(format!("approval: {}", outcome_name(outcome)));
                    relay.audit.record(record);
                    send(&server, &forward, true)
                } else {
                    let kind = if outcome == HoldOutcome::TimedOut {
                        DenialKind::UserTimeout
                    } else {
                        DenialKind::UserDenied
                    };
                    let denial = Denial::new(kind, format!("approval: {}", outcome_name(outcome)));
                    record.decision = Decision::Block.as_str().into();
                    record.violation = true;
                    record.error_code = Some(denial.kind.code());
                    record.reason = Some(denial.reason.clone());
                    relay.audit.record(record);
                    let text = jsonrpc::denial_response(id.as_deref(), &denial, Some(&held_tool), None);
                    send(&client, text.as_bytes(), true)
                };
                if let Err(e) = result {
                    tracing::warn!("could not deliver the outcome of a held call: {e}");
                }
            }),
        );
        tracing::info!(tool, hold_id = %hold_id, "call held for approval");
        Ok(())
    }

    /// Server → client until the server closes its output.
    pub fn downstream<R: Read>(&self, mut input: BufReader<R>, client: &Sink) -> io::Result<()> {
        let mut buf = Vec::with_capacity(4096);
        loop {
            let read = read_line(&mut input, &mut buf, self.options.max_message)?;
            // Nothing more already read: flush now rather than wait for the next message.
            let idle = input.buffer().is_empty();
            match read {
                Line::Eof => return lock(client).flush(),
                Line::TooLong => {
                    self.audit_protocol("downstream", "server message too large");
                    let text = jsonrpc::error_response(
                        None,
                        -32603,
                        "Internal error",
                        Some(&reason(&format!(
                            "server message exceeds {} bytes",
                            self.options.max_message
                        ))),
                    );
                    send(client, text.as_bytes(), idle)?;
                }
                Line::Complete => self.downstream_line(&buf, client, idle)?,
            }
        }
    }

    fn downstream_line(&self, line: &[u8], client: &Sink, idle: bool) -> io::Result<()> {
        let engine = self.policy.current();
        let body = strip_newline(line);
        // Decode the text, and read the envelope, only when something needs them: a pending
        // `tools/list`, DLP, or the id of a DLP record. Otherwise the line goes out as it came.
        // `from_utf8` validates a word at a time, `from_utf8_lossy` a byte at a time, so the
        // lossy decode is kept for the lines that need it.
        let text = std::cell::OnceCell::new();
        let text = || {
            text.get_or_init(|| match std::str::from_utf8(body) {
                Ok(text) => Cow::Borrowed(text),
                Err(_) => String::from_utf8_lossy(body),
            })
        };
        let mut replaced: Option<String> = None;
        let envelope = std::cell::OnceCell::new();
        let envelope = || envelope.get_or_init(|| Envelope::parse(text())).as_ref();
        let id = || envelope().and_then(|e| e.id);
        let listed = {
            let mut lists = self.lists.lock().unwrap_or_else(PoisonError::into_inner);
            if lists.is_empty() {
                None
            } else if let Some(Envelope {
                method: None,
                id: Some(id),
                ..
            }) = envelope()
            {
                lists.remove(id.get())
            } else {
                None
            }
        };
        if let Some(aat) = listed
            && envelope().is_some_and(|e| e.result.is_some())
        {
            let grant = aat
                .as_ref()
                .zip(self.identity.as_ref())
                .map(|(aat, identity)| grant_of(aat, identity));
            replaced = self.filter_tools_list(&engine, text(), grant.as_ref());
        }
        if let Some(dlp) = engine.policy().dlp() {
            let current = replaced.as_deref().unwrap_or(text());
            match dlp.scan_message(current, Direction::Response) {
                Scan::Clean => {}
                Scan::Redacted { text, events } => {
                    let mut record = Record::new("downstream", "ALLOW", engine.policy().mode().as_str(), false);
                    record.event = Some("DLP_TRIGGERED".into());
                    record.policy_hash = Some(engine.policy().hash().to_owned());
                    record.request_id = id().and_then(|id| serde_json::from_str(id.get()).ok());
                    record.dlp = Some(events.into_iter().map(Into::into).collect());
                    self.audit.record(record);
                    replaced = Some(text);
                }
                Scan::TooLarge => {
                    let block = dlp.settings().block_on_failure;
                    let mut record = Record::new(
                        "downstream",
                        if block { "BLOCK" } else { "ALLOW" },
                        engine.policy().mode().as_str(),
                        block,
                    );
                    record.event = Some("DLP_SCAN_FAILED".into());
                    record.reason = Some("response exceeds dlp.max_scan_size".into());
                    if block {
                        record.error_code = Some(-32014);
                        self.audit.record(record);
                        let text = jsonrpc::error_response(
                            id(),
                            -32014,
                            "DLP redaction failed",
                            Some(&reason("response exceeds dlp.max_scan_size and cannot be scanned")),
                        );
                        return send(client, text.as_bytes(), idle);
                    }
                    self.audit.record(record);
                }
            }
        }
        match replaced {
            Some(text) => send(client, text.as_bytes(), idle),
            None => send(client, line, idle),
        }
    }

    /// Removes tools the policy does not allow from a `tools/list` result, and checks
    /// `schema_hash` for the tools that have one. `None` when nothing changes.
    fn filter_tools_list(&self, engine: &Engine, text: &str, grant: Option<&Grant<'_>>) -> Option<String> {
        let mut message: Map<String, Value> = serde_json::from_str(text).ok()?;
        let tools = message.get_mut("result")?.get_mut("tools")?.as_array_mut()?;
        let before = tools.len();
        tools.retain(|tool| {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                return false;
            };
            let normalized = normalize(name);
            if !engine.lists_tool_for(&normalized, grant) {
                return false;
            }
            let Some(expected) = engine.policy().rule(&normalized).and_then(|r| r.schema_hash.as_ref()) else {
                return true;
            };
            let matches = schema_digest(tool, expected.algorithm).is_some_and(|d| d == expected.digest);
            self.schemas.record(&normalized, matches);
            if !matches {
                tracing::warn!(
                    tool = name,
                    "tool schema does not match schema_hash: hidden and blocked"
                );
                let mut record = Record::new("downstream", "BLOCK", engine.policy().mode().as_str(), true);
                record.event = Some("SCHEMA_MISMATCH".into());
                record.tool = Some(name.to_owned());
                record.error_code = Some(-32013);
                record.policy_hash = Some(engine.policy().hash().to_owned());
                self.audit.record(record);
            }
            matches
        });
        if tools.len() == before {
            return None;
        }
        serde_json::to_string(&message).ok()
    }

    /// The audit record of an upstream decision, with the violation's details; also counts the
    /// decision in the metrics.
    fn record(
        &self,
        engine: &Engine,
        resolution: &Resolution,
        method: Option<&str>,
        tool: Option<&str>,
        id: Option<&RawValue>,
        started: Instant,
    ) -> Record {
        let denial = resolution.denial.as_ref();
        metrics::record_decision(
            resolution.decision.as_str(),
            denial.map(metrics::violation_type),
            started.elapsed(),
        );
        let mut record = Record::new(
            "upstream",
            resolution.decision.as_str(),
            engine.policy().mode().as_str(),
            resolution.violation(),
        );
        record.method = method.map(str::to_owned);
        record.tool = tool.map(str::to_owned);
        record.request_id = id.and_then(|id| serde_json::from_str(id.get()).ok());
        record.policy_hash = Some(engine.policy().hash().to_owned());
        record.duration_us = Some(elapsed_us(started));
        if let Some(denial) = denial {
            record.reason = Some(match resolution.refusal() {
                Some(_) => denial.reason.clone(),
                None => format!("forwarded in monitor mode: {}", denial.reason),
            });
            record.error_code = resolution.refusal().map(|d| d.kind.code());
            record.failed_arg.clone_from(&denial.failed_arg);
            record.failed_rule.clone_from(&denial.failed_rule);
        }
        record
    }

    /// Hands the call's arguments to the record: hashed by the audit writer thread, off the
    /// call path, and also kept redacted with `--audit-args redacted`.
    fn audit_args(&self, engine: &Engine, record: &mut Record, arguments: Option<Value>) {
        let Some(Value::Object(args)) = arguments else {
            return;
        };
        if !self.audit.is_enabled() {
            return;
        }
        if self.options.audit_args == AuditArgs::Redacted {
            record.args = Some(redacted_arguments(engine, &args));
        }
        record.hash_args = Some(Value::Object(args));
    }

    fn audit_protocol(&self, direction: &str, why: &str) {
        let engine = self.policy.current();
        let mut record = Record::new(direction, "BLOCK", engine.policy().mode().as_str(), true);
        record.event = Some("PROTOCOL_ERROR".into());
        record.reason = Some(why.to_owned());
        record.policy_hash = Some(engine.policy().hash().to_owned());
        self.audit.record(record);
        tracing::warn!("{direction}: {why}");
    }
}

/// Spec 3.5.4: digest of the RFC 8785 form of `{name, description, inputSchema}` (absent
/// members as `null`).
pub fn schema_digest(tool: &Value, algorithm: HashAlgorithm) -> Option<String> {
    let schema = serde_json::json!({
        "name": tool.get("name").cloned().unwrap_or(Value::Null),
        "description": tool.get("description").cloned().unwrap_or(Value::Null),
        "inputSchema": tool.get("inputSchema").cloned().unwrap_or(Value::Null),
    });
    let canonical = aip_aat::jcs::to_vec(&schema).ok()?;
    Some(match algorithm {
        HashAlgorithm::Sha256 => hex::encode(Sha256::digest(&canonical)),
        HashAlgorithm::Sha384 => hex::encode(Sha384::digest(&canonical)),
        HashAlgorithm::Sha512 => hex::encode(Sha512::digest(&canonical)),
    })
}

/// Arguments with every string passed through DLP (when configured) and cut to 256 characters.
fn redacted_arguments(engine: &Engine, args: &Map<String, Value>) -> Value {
    fn walk(engine: &Engine, value: &Value, depth: usize) -> Value {
        match value {
            Value::String(s) => {
                let redacted = engine
                    .policy()
                    .dlp()
                    .and_then(|d| d.redact_text(s, Direction::Request).map(|(t, _)| t))
                    .unwrap_or_else(|| s.clone());
                Value::String(redacted.chars().take(256).collect())
            }
            Value::Array(items) if depth < 32 => {
                Value::Array(items.iter().map(|v| walk(engine, v, depth + 1)).collect())
            }
            Value::Object(map) if depth < 32 => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), walk(engine, v, depth + 1)))
                    .collect(),
            ),
            Value::Array(_) | Value::Object(_) => Value::String("[too deep]".into()),
            other => other.clone(),
        }
    }
    walk(engine, &Value::Object(args.clone()), 0)
}

/// A short, redacted view of a held call's arguments for the approver.
fn preview_arguments(engine: &Engine, args: Option<&Value>) -> String {
    let Some(Value::Object(args)) = args else {
        return "{}".into();
    };
    let text = redacted_arguments(engine, args).to_string();
    if text.chars().count() > 512 {
        format!("{}…", text.chars().take(512).collect::<String>())
    } else {
        text
    }
}

fn outcome_name(outcome: HoldOutcome) -> &'static str {
    match outcome {
        HoldOutcome::Approved => "approved",
        HoldOutcome::Denied => "denied",
        HoldOutcome::TimedOut => "timed out",
    }
}

fn reason(text: &str) -> Value {
    serde_json::json!({ "reason": text })
}

fn elapsed_us(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn flush_both(a: &Sink, b: &Sink) -> io::Result<()> {
    let first = lock(a).flush();
    let second = lock(b).flush();
    first.and(second)
}
