//! JSON-RPC framing: the parts of a message the proxy reads, and the one place refusals become
//! JSON-RPC errors (spec 11.1).

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::engine::{Denial, DenialKind};

/// The envelope of one JSON-RPC message, borrowing from the line it was read from.
#[derive(Debug)]
pub struct Envelope<'a> {
    /// `id` exactly as sent (absent for notifications).
    pub id: Option<&'a RawValue>,
    /// The method of a request or notification.
    pub method: Option<std::borrow::Cow<'a, str>>,
    /// `params`, unparsed.
    pub params: Option<&'a RawValue>,
    /// `result` of a response, unparsed.
    pub result: Option<&'a RawValue>,
    /// `error` of a response, unparsed.
    pub error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<&'a RawValue>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

impl<'a> Envelope<'a> {
    /// Parses the envelope of a message. `None` unless the text is a JSON object that is either
    /// a request or notification (`method` a string) or a response (`result` or `error`, no
    /// `method`): arrays (batches), a non-string `method` and memberless objects are refused.
    pub fn parse(text: &'a str) -> Option<Self> {
        if !text.trim_start().starts_with('{') {
            return None;
        }
        let raw: RawEnvelope<'a> = serde_json::from_str(text).ok()?;
        let method = match raw.method {
            None => {
                if raw.result.is_none() && raw.error.is_none() {
                    return None;
                }
                None
            }
            Some(m) => Some(match serde_json::from_str::<&'a str>(m.get()) {
                Ok(borrowed) => std::borrow::Cow::Borrowed(borrowed),
                Err(_) => std::borrow::Cow::Owned(serde_json::from_str::<String>(m.get()).ok()?),
            }),
        };
        // `"id": null` is kept as given; JSON-RPC reserves it for errors.
        Some(Self {
            id: raw.id,
            method,
            params: raw.params,
            result: raw.result,
            error: raw.error,
        })
    }
}

/// The `params` of a `tools/call`.
#[derive(Debug, Deserialize)]
pub struct ToolCallParams {
    /// The tool.
    pub name: String,
    /// Its arguments (must be an object when present).
    #[serde(default)]
    pub arguments: Option<Value>,
    /// The AAT (spec 7.6.1), stripped before forwarding.
    #[serde(default, rename = "_aip_aat")]
    pub aat: Option<String>,
    /// The per-call proof (DESIGN §7), stripped before forwarding.
    #[serde(default, rename = "_aip_proof")]
    pub proof: Option<String>,
}

/// The credentials of a request other than `tools/call` (`tools/list`).
#[derive(Debug, Default, Deserialize)]
pub struct Credentials {
    /// The AAT.
    #[serde(default, rename = "_aip_aat")]
    pub aat: Option<String>,
    /// The per-call proof.
    #[serde(default, rename = "_aip_proof")]
    pub proof: Option<String>,
}

/// The message without `params._aip_aat` and `params._aip_proof`, re-serialized; `None` when it
/// is not a JSON object with object `params`.
pub fn strip_credentials(text: &str) -> Option<String> {
    use std::collections::BTreeMap;
    let mut message: BTreeMap<String, &RawValue> = serde_json::from_str(text).ok()?;
    let mut params: BTreeMap<String, &RawValue> = serde_json::from_str(message.get("params")?.get()).ok()?;
    params.remove("_aip_aat");
    params.remove("_aip_proof");
    let params = RawValue::from_string(serde_json::to_string(&params).ok()?).ok()?;
    message.insert("params".into(), &params);
    serde_json::to_string(&message).ok()
}

/// A JSON-RPC error response with `id` echoed byte-for-byte (`null` when the request had none
/// or could not be read).
pub fn error_response(id: Option<&RawValue>, code: i32, message: &str, data: Option<&Value>) -> String {
    let mut error = Map::new();
    error.insert("code".into(), code.into());
    error.insert("message".into(), message.into());
    if let Some(data) = data {
        error.insert("data".into(), data.clone());
    }
    let error = Value::Object(error);
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{},\"error\":{}}}",
        id.map_or("null", RawValue::get),
        error
    )
}

/// The `error.data` for a refusal: `tool` (or `method`), `reason`, and the kind's own members.
pub fn denial_data(denial: &Denial, tool: Option<&str>, method: Option<&str>) -> Value {
    let mut data = Map::new();
    match (&denial.kind, tool, method) {
        (DenialKind::MethodNotAllowed, _, Some(method)) => {
            data.insert("method".into(), method.into());
        }
        (_, Some(tool), _) => {
            data.insert("tool".into(), tool.into());
        }
        _ => {}
    }
    data.insert("reason".into(), denial.reason.clone().into());
    if let DenialKind::CapabilityDenied { agent_id, granted } = &denial.kind {
        data.insert("agent_id".into(), agent_id.clone().into());
        data.insert("granted_capabilities".into(), json!(granted));
    }
    if let Some(arg) = &denial.failed_arg {
        data.insert("failed_arg".into(), arg.clone().into());
    }
    Value::Object(data)
}

/// The full error response for a refusal.
pub fn denial_response(id: Option<&RawValue>, denial: &Denial, tool: Option<&str>, method: Option<&str>) -> String {
    let data = denial_data(denial, tool, method);
    error_response(id, denial.kind.code(), denial.kind.message(), Some(&data))
}

/// JSON-RPC -32700: the line is not JSON.
pub const PARSE_ERROR: i32 = -32700;
/// JSON-RPC -32600: not a valid request object.
pub const INVALID_REQUEST: i32 = -32600;
/// JSON-RPC -32602: bad params.
pub const INVALID_PARAMS: i32 = -32602;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_objects_with_a_role_are_messages() {
        assert!(Envelope::parse(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#).is_some());
        assert!(Envelope::parse(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).is_some());
        assert!(Envelope::parse(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#).is_some());
        assert!(
            Envelope::parse(r#"{"jsonrpc":"2.0","id":"a\u0062","method":"to\u006fls/call"}"#)
                .is_some_and(|e| e.method.as_deref() == Some("tools/call"))
        );
        for bad in [
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call"}]"#,
            "[]",
            r#"{"jsonrpc":"2.0","id":1,"method":null,"params":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            "{}",
            "7",
        ] {
            assert!(Envelope::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn ids_are_echoed_exactly() {
        for id in ["123", "\"abc-123\"", "1.0e3", "\"\\u00e9\""] {
            let raw = RawValue::from_string(id.to_owned()).unwrap();
            let denial = Denial::new(DenialKind::Forbidden, "Tool not in allowed_tools list");
            let line = denial_response(Some(&raw), &denial, Some("x"), None);
            assert!(
                line.starts_with(&format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},")),
                "{line}"
            );
            let parsed: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(parsed["error"]["code"], -32001);
            assert_eq!(parsed["error"]["data"]["tool"], "x");
        }
        assert!(error_response(None, PARSE_ERROR, "Parse error", None).contains("\"id\":null"));
    }
}
