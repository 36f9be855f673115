//! Server → client: `tools/list` results are filtered to what the policy (and the AAT the
//! request carried) allows and checked against `schema_hash`; every message is DLP-scanned when
//! the policy asks for it. Anything else goes out byte-for-byte as it came.

use std::borrow::Cow;
use std::io::{self, BufReader, Read, Write};
use std::sync::PoisonError;

use aip_aat::jsonrpc::ErrorCode;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::audit::Record;
use crate::dlp::{Direction, Scan};
use crate::engine::{Engine, Grant, Listing};
use crate::identity::grant_of;
use crate::jsonrpc::{self, Envelope};
use crate::normalize::normalize;
use crate::policy::HashAlgorithm;

use super::lines::{Line, Sink, lock, read_line, send, strip_newline};
use super::pending::Answer;
use super::shared::{Relay, reason};

impl Relay {
    /// Server → client until the server closes its output. Meanwhile calls that pass
    /// `spec.call_timeout` are answered with an error; when the output ends, so is every call
    /// still waiting.
    pub fn downstream<R: Read>(&self, input: BufReader<R>, client: &Sink) -> io::Result<()> {
        std::thread::scope(|scope| {
            scope.spawn(|| self.expire_calls(client));
            let relayed = self.relay_downstream(input, client);
            // Also stops the timer thread, which the scope then joins.
            let answered = self.answer_waiting(client);
            relayed.and(answered)
        })
    }

    fn relay_downstream<R: Read>(&self, mut input: BufReader<R>, client: &Sink) -> io::Result<()> {
        let mut buf = Vec::with_capacity(4096);
        loop {
            let read = read_line(&mut input, &mut buf, self.options.max_message)?;
            // Nothing more already read: flush now rather than wait for the next message.
            let idle = input.buffer().is_empty();
            match read {
                Line::Eof => return lock(client).flush(),
                Line::TooLong => {
                    // The answer is dropped, but the call it answers is answered with an error
                    // carrying its id when the line's first bytes name it.
                    let id = jsonrpc::id_in_prefix(&buf);
                    self.audit_protocol("downstream", "server message too large", id);
                    if let Some(id) = id
                        && self.pending.answered(id) == Answer::Late
                    {
                        continue;
                    }
                    let text = aip_aat::jsonrpc::error_response(
                        id,
                        ErrorCode::InternalError,
                        Some(reason(&format!(
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

    /// Answers each call whose `spec.call_timeout` passes, until the server's output ends.
    fn expire_calls(&self, client: &Sink) {
        while let Some(id) = self.pending.next_expired() {
            tracing::warn!(id = %id, "the server did not answer in time: call answered with an error");
            if let Err(e) = self.answer_unanswered(
                client,
                &id,
                "SERVER_TIMEOUT",
                "the server did not answer within spec.call_timeout",
            ) {
                tracing::warn!("could not answer a call that timed out: {e}");
            }
        }
    }

    /// The server's output ended: every call still waiting is answered with an error.
    fn answer_waiting(&self, client: &Sink) -> io::Result<()> {
        let waiting = self.pending.close();
        if !waiting.is_empty() {
            tracing::warn!(
                calls = waiting.len(),
                "the server exited with calls unanswered: answered with errors"
            );
        }
        for id in &waiting {
            self.answer_unanswered(client, id, "SERVER_EXITED", "the server exited before answering")?;
        }
        Ok(())
    }

    /// Answers the call `id` (JSON text) with -32603 on the server's behalf, and records it.
    fn answer_unanswered(&self, client: &Sink, id: &str, event: &str, why: &str) -> io::Result<()> {
        let engine = self.policy.current();
        let mut record = Record::new("downstream", "BLOCK", engine.policy().mode().as_str(), false);
        record.event = Some(event.into());
        record.reason = Some(why.into());
        record.request_id = serde_json::from_str(id).ok();
        record.error_code = Some(ErrorCode::InternalError.code());
        record.policy_hash = Some(engine.policy().hash().to_owned());
        self.audit.record(record);
        self.lists.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
        let text = aip_aat::jsonrpc::error_response(Some(id), ErrorCode::InternalError, Some(reason(why)));
        send(client, text.as_bytes(), true)
    }

    /// One server message that came over HTTP (an answer, or an event of a stream): relayed
    /// to `client` as one flushed message, filtered and scanned as on stdio; dropped when it is
    /// not JSON.
    pub fn server_message(&self, body: &[u8], client: &Sink) -> io::Result<()> {
        self.downstream_line(body, client, true)
    }

    fn downstream_line(&self, line: &[u8], client: &Sink, idle: bool) -> io::Result<()> {
        let engine = self.policy.current();
        let body = strip_newline(line);
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        // `from_utf8` validates a word at a time, `from_utf8_lossy` a byte at a time, so the
        // lossy decode is kept for the lines that need it. Both borrow when the line is UTF-8.
        let text = match std::str::from_utf8(body) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(body),
        };
        // Every line is read as a JSON-RPC envelope (borrowed from the line: nothing is
        // allocated): DLP only knows how to scan JSON, so what is not JSON never goes out.
        let envelope = Envelope::parse(&text);
        if envelope.is_none() && !jsonrpc::is_json_object(&text) {
            self.audit_protocol(
                "downstream",
                &format!(
                    "server output that is not a JSON-RPC message dropped ({} bytes)",
                    body.len()
                ),
                None,
            );
            return Ok(());
        }
        let mut replaced: Option<String> = None;
        let id = || envelope.as_ref().and_then(|e| e.id);
        if let Some(Envelope {
            method: None,
            id: Some(answered),
            ..
        }) = &envelope
            && self.pending.answered(answered.get()) == Answer::Late
        {
            tracing::info!(
                id = answered.get(),
                "late answer dropped: the call was answered at its deadline"
            );
            return Ok(());
        }
        let listed = {
            let mut lists = self.lists.lock().unwrap_or_else(PoisonError::into_inner);
            if lists.is_empty() {
                None
            } else if let Some(Envelope {
                method: None,
                id: Some(id),
                ..
            }) = &envelope
            {
                lists.remove(id.get())
            } else {
                None
            }
        };
        if let Some(aat) = listed
            && envelope.as_ref().is_some_and(|e| e.result.is_some())
        {
            let grant = aat
                .as_ref()
                .zip(self.identity.as_ref())
                .map(|(aat, identity)| grant_of(aat, identity));
            replaced = self.filter_tools_list(&engine, &text, grant.as_ref());
        }
        if let Some(dlp) = engine.policy().dlp() {
            let current = replaced.as_deref().unwrap_or(&text);
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
                        record.error_code = Some(ErrorCode::DlpFailed.code());
                        self.audit.record(record);
                        let text = jsonrpc::error_response(
                            id(),
                            ErrorCode::DlpFailed,
                            Some(reason("response exceeds dlp.max_scan_size and cannot be scanned")),
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
                return self.unpinned_listed(engine, tool, name, &normalized);
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
                record.error_code = Some(ErrorCode::SchemaMismatch.code());
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
}

impl Relay {
    /// An unpinned tool in a `tools/list` result: kept unless it changed since the session
    /// first listed it (and no operator accepted the change); a new change is audited.
    fn unpinned_listed(&self, engine: &Engine, tool: &Value, name: &str, normalized: &str) -> bool {
        let Some(digest) = schema_digest(tool, HashAlgorithm::Sha256) else {
            return false;
        };
        match self.schemas.observe(normalized, digest) {
            Listing::Unchanged => true,
            Listing::StillChanged => false,
            Listing::Changed => {
                tracing::warn!(
                    tool = name,
                    "tool description or input schema changed since first listed: hidden and refused until accepted"
                );
                let mut record = Record::new("downstream", "BLOCK", engine.policy().mode().as_str(), true);
                record.event = Some("TOOL_CHANGED".into());
                record.tool = Some(name.to_owned());
                record.error_code = Some(ErrorCode::SchemaMismatch.code());
                record.reason = Some("description or input schema changed since first listed in this session".into());
                record.policy_hash = Some(engine.policy().hash().to_owned());
                self.audit.record(record);
                false
            }
        }
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
