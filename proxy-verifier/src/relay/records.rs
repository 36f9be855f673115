//! The audit records of client messages: the decision record with its violation's details (also
//! counted in the metrics), and how a call's arguments appear in the log and in an approval
//! prompt.

use serde_json::{Map, Value};

use crate::audit::Record;
use crate::dlp::Direction;
use crate::engine::{Engine, Resolution};
use crate::metrics;

use super::context::Message;
use super::shared::{AuditArgs, Relay, elapsed_us};

impl Relay {
    /// The audit record of an upstream decision, with the violation's details; also counts the
    /// decision in the metrics.
    pub(super) fn record(
        &self,
        msg: &Message<'_>,
        resolution: &Resolution,
        method: Option<&str>,
        tool: Option<&str>,
    ) -> Record {
        let (engine, started) = (msg.engine, msg.started);
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
        record.request_id = msg.envelope.id.and_then(|id| serde_json::from_str(id.get()).ok());
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
    pub(super) fn audit_args(&self, engine: &Engine, record: &mut Record, arguments: Option<Value>) {
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
            Value::Object(map) if depth < 32 => walk_map(engine, map, depth),
            Value::Array(_) | Value::Object(_) => Value::String("[too deep]".into()),
            other => other.clone(),
        }
    }
    /// An object at `depth` (the arguments themselves are at 0), its members walked.
    fn walk_map(engine: &Engine, map: &Map<String, Value>, depth: usize) -> Value {
        Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), walk(engine, v, depth + 1)))
                .collect(),
        )
    }
    walk_map(engine, args, 0)
}

/// A short, redacted view of a held call's arguments for the approver.
pub(super) fn preview_arguments(engine: &Engine, args: Option<&Value>) -> String {
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
