//! Client → server: each line is read under the size cap, parsed, checked and then forwarded,
//! answered by the proxy, or held for approval.
//!
//! 1. lines longer than the size cap, non-UTF-8 and non-JSON lines are answered with JSON-RPC
//!    errors and not forwarded; responses to server requests (sampling, roots) pass unchanged;
//! 2. the method is checked (spec 4.2); `tools/call` is evaluated (spec 4.3), its arguments
//!    optionally DLP-scanned, and refused calls are answered by the proxy with the request id
//!    echoed exactly; `ask` calls are held without blocking later messages;
//! 3. `tools/list` requests are remembered so that their responses can be filtered.

use std::borrow::Cow;
use std::io::{self, BufReader, Read};
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use aip_aat::jsonrpc::ErrorCode;
use serde_json::Value;
use serde_json::value::RawValue;

use aip_aat::proof::Call;

use crate::audit::Record;
use crate::dlp::{Direction, DlpEvent, RequestAction, Scan};
use crate::engine::{Decision, Denial, DenialKind, Engine, Resolution, Verdict};
use crate::hitl::{HoldOutcome, HoldRequest};
use crate::identity::{self, Presented, grant_of};
use crate::jsonrpc::{self, Envelope, ToolCallParams};
use crate::normalize::normalize;
use crate::policy::Mode;

use super::context::Message;
use super::lines::{Line, Sink, flush_both, read_line, send, strip_newline};
use super::records::preview_arguments;
use super::shared::{Relay, elapsed_us, reason};

impl Relay {
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
                    // Answered with the request's id when its first bytes name it, so that the
                    // client does not wait for an answer that never comes.
                    let id = jsonrpc::id_in_prefix(&buf);
                    let text = aip_aat::jsonrpc::error_response(
                        id,
                        ErrorCode::InvalidRequest,
                        Some(reason(&format!("message exceeds {} bytes", self.options.max_message))),
                    );
                    self.audit_protocol("upstream", "message too large", id);
                    send(client, text.as_bytes(), true)?;
                }
                Line::Complete => self.upstream_line(&buf, client, server, idle, None)?,
            }
        }
    }

    /// One client message that came over HTTP with `credentials` from its headers: answered on
    /// `client`, forwarded on `server`, or held for approval (the hold keeps both sinks until
    /// it resolves). Every output is flushed: each flush is one whole message.
    pub fn client_message(
        self: &Arc<Self>,
        body: &[u8],
        credentials: Presented<'_>,
        client: &Sink,
        server: &Sink,
    ) -> io::Result<()> {
        self.upstream_line(body, client, server, true, Some(credentials))
    }

    fn upstream_line(
        self: &Arc<Self>,
        line: &[u8],
        client: &Sink,
        server: &Sink,
        idle: bool,
        credentials: Option<Presented<'_>>,
    ) -> io::Result<()> {
        let body = strip_newline(line);
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let Ok(text) = std::str::from_utf8(body) else {
            self.audit_protocol("upstream", "message is not UTF-8", None);
            let text = jsonrpc::error_response(None, ErrorCode::ParseError, Some(reason("message is not valid UTF-8")));
            return send(client, text.as_bytes(), true);
        };
        let Some(envelope) = Envelope::parse(text) else {
            let why = if text.trim_start().starts_with('[') {
                "batch requests are not supported; send one message per line"
            } else {
                "message is not a JSON-RPC object"
            };
            self.audit_protocol("upstream", why, None);
            let code = if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
                ErrorCode::InvalidRequest
            } else {
                ErrorCode::ParseError
            };
            let text = jsonrpc::error_response(None, code, Some(reason(why)));
            return send(client, text.as_bytes(), true);
        };
        let Some(method) = envelope.method.as_deref() else {
            // A response to a server-to-client request (sampling, roots, elicitation).
            return send(server, line, idle);
        };
        let engine = self.policy.current();
        let started = Instant::now();
        let msg = Message {
            engine: &engine,
            envelope: &envelope,
            text,
            line,
            client,
            server,
            idle,
            started,
            credentials,
        };
        // Branch on the normalized name (spec 4.1), exactly as the method check compares it:
        // `TOOLS/CALL` is a tool call too.
        let normalized = normalize(method);
        let method_verdict = engine.check_method(method);
        if method_verdict != Verdict::Allow {
            let resolution = engine.resolve(method_verdict);
            return self.finish_method(&msg, method, resolution);
        }
        if normalized == "tools/list" {
            return self.tools_list(&msg);
        }
        if normalized != "tools/call" {
            return self.forward(&msg, line);
        }
        self.tool_call(&msg)
    }

    /// `tools/list`: the AAT it carries (if any) is checked and stripped, and the request is
    /// remembered so that its response can be filtered by policy ∩ AAT.
    fn tools_list(&self, msg: &Message<'_>) -> io::Result<()> {
        // Params that cannot be read (not an object, a credential given twice or not as a
        // string) are refused like those of `tools/call`: never forwarded as they are, since
        // they may hold credentials.
        let read = msg.envelope.params.map(|raw| {
            let params = jsonrpc::Params::parse(raw)?;
            let stripped = params.forwarded(msg.text)?;
            Ok::<_, jsonrpc::ParamsError>((params, stripped))
        });
        let (params, stripped) = match read {
            None => (None, None),
            Some(Ok((params, stripped))) => (Some(params), stripped),
            Some(Err(_)) => return self.invalid_params(msg, "tools/list params cannot be read"),
        };
        let call = Call {
            method: "tools/list",
            tool: "",
            arguments: None,
        };
        let presented = msg.credentials.unwrap_or(Presented {
            aat: params.as_ref().and_then(|p| p.aat.as_deref()),
            proof: params.as_ref().and_then(|p| p.proof.as_deref()),
            dpop: None,
            verified: None,
        });
        let verified = match self.authenticate(msg, presented, &call) {
            Ok(verified) => verified,
            Err(answered) => return answered,
        };
        if let Some(id) = msg.envelope.id
            && msg.engine.policy().mode() == Mode::Enforce
        {
            self.lists
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id.get().into(), verified);
        }
        match stripped {
            Some(text) => self.forward(msg, text.as_bytes()),
            None => self.forward(msg, msg.line),
        }
    }

    /// Forwards a client message to the server; a request is remembered until it is answered.
    fn forward(&self, msg: &Message<'_>, line: &[u8]) -> io::Result<()> {
        if let Some(id) = msg.envelope.id {
            self.pending.forwarded(id.get(), msg.engine.policy().call_timeout());
        }
        send(msg.server, line, msg.idle)
    }

    fn finish_method(&self, msg: &Message<'_>, method: &str, resolution: Resolution) -> io::Result<()> {
        let record = self.record(msg, &resolution, Some(method), None);
        self.audit.record(record);
        match resolution.refusal() {
            None => self.forward(msg, msg.line),
            Some(denial) => {
                tracing::info!(method, code = denial.kind.code(), "refused: {}", denial.reason);
                if msg.envelope.id.is_none() {
                    // A notification gets no answer.
                    return Ok(());
                }
                let text = jsonrpc::denial_response(msg.envelope.id, denial, None, Some(method));
                send(msg.client, text.as_bytes(), msg.idle)
            }
        }
    }

    fn tool_call(self: &Arc<Self>, msg: &Message<'_>) -> io::Result<()> {
        let (engine, envelope, started) = (msg.engine, msg.envelope, msg.started);
        let Some(Ok(mut params)) = envelope.params.map(ToolCallParams::parse) else {
            return self.invalid_params(msg, "tools/call needs params {name: string, arguments?: object}");
        };
        // The credentials never reach the server (spec 7.6.1).
        let mut forward: Cow<'_, [u8]> = match params.params.forwarded(msg.text) {
            Ok(Some(stripped)) => Cow::Owned(stripped.into_bytes()),
            Ok(None) => Cow::Borrowed(msg.line),
            Err(_) => return self.invalid_params(msg, "tools/call params cannot be read"),
        };
        let call = Call::tools_call(&params.name, params.arguments.as_ref());
        let presented = msg.credentials.unwrap_or(Presented {
            aat: params.params.aat.as_deref(),
            proof: params.params.proof.as_deref(),
            dpop: None,
            verified: None,
        });
        let verified = match self.authenticate(msg, presented, &call) {
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
        let mut record = self.record(msg, &resolution, Some("tools/call"), Some(&params.name));
        if let Some(aat) = &verified {
            identity::audit_fields(aat, &mut record);
            record.proof = presented.proof_kind().map(str::to_owned);
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
            return send(msg.client, text.as_bytes(), msg.idle);
        }
        if resolution.decision == Decision::Ask {
            record.duration_us = Some(elapsed_us(started));
            let preview = preview.unwrap_or_default();
            return self.hold(msg, &params.name, preview, forward.into_owned(), record);
        }
        record.duration_us = Some(elapsed_us(started));
        self.audit.record(record);
        tracing::debug!(tool = %params.name, decision = resolution.decision.as_str(), "forwarded");
        self.forward(msg, &forward)
    }

    /// Answers -32602 with `why` for params the proxy cannot read, logged as a protocol event.
    fn invalid_params(&self, msg: &Message<'_>, why: &str) -> io::Result<()> {
        let method = msg.envelope.method.as_deref().unwrap_or_default();
        self.audit_protocol(
            "upstream",
            &format!("{method} without valid params"),
            msg.envelope.id.map(RawValue::get),
        );
        let text = jsonrpc::error_response(msg.envelope.id, ErrorCode::InvalidParams, Some(reason(why)));
        send(msg.client, text.as_bytes(), msg.idle)
    }

    /// DLP on the arguments of a call: `Ok(Some(..))` redacted line, `Err` refusal.
    fn scan_request(
        &self,
        engine: &Engine,
        line: &[u8],
        tool: &str,
    ) -> Result<Option<(String, Vec<DlpEvent>)>, Denial> {
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
                RequestAction::Redact => {
                    tracing::info!(tool, "request redacted by DLP");
                    Ok(Some((text, events)))
                }
                RequestAction::Block => {
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

    /// Holds an `ask` call for approval; the outcome forwards it or answers the refusal.
    fn hold(
        self: &Arc<Self>,
        msg: &Message<'_>,
        tool: &str,
        arguments_preview: String,
        forward: Vec<u8>,
        record: Record,
    ) -> io::Result<()> {
        let engine = msg.engine;
        // Stamped now: the record is written when the hold resolves, but tells when the call
        // was decided.
        let mut record = record;
        record.stamp(self.audit.clock());
        let request = HoldRequest {
            tool: tool.to_owned(),
            arguments_preview,
            policy_name: engine.policy().name().to_owned(),
            rule: format!("tool_rules[{tool}].action=ask"),
            agent_id: None,
        };
        let id: Option<Box<RawValue>> = msg.envelope.id.map(ToOwned::to_owned);
        let held_tool = tool.to_owned();
        let allow_on_timeout = engine.policy().hitl().allow_on_timeout;
        let call_timeout = engine.policy().call_timeout();
        let (relay, client, server) = (Arc::clone(self), Arc::clone(msg.client), Arc::clone(msg.server));
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
                    if let Some(id) = &id {
                        relay.pending.forwarded(id.get(), call_timeout);
                    }
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
}

fn outcome_name(outcome: HoldOutcome) -> &'static str {
    match outcome {
        HoldOutcome::Approved => "approved",
        HoldOutcome::Denied => "denied",
        HoldOutcome::TimedOut => "timed out",
    }
}
