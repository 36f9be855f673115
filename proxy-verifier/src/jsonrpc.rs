//! JSON-RPC framing: the parts of a message the proxy reads, and the one place refusals become
//! JSON-RPC errors (spec 11.1).

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::engine::{Denial, DenialKind};

/// The envelope of one JSON-RPC message, borrowing from the line it was read from.
#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
    /// `id` exactly as sent (absent for notifications).
    #[serde(borrow, default)]
    pub id: Option<&'a RawValue>,
    /// The method of a request or notification.
    #[serde(default)]
    pub method: Option<std::borrow::Cow<'a, str>>,
    /// `params`, unparsed.
    #[serde(borrow, default)]
    pub params: Option<&'a RawValue>,
    /// `result` of a response, unparsed.
    #[serde(borrow, default)]
    pub result: Option<&'a RawValue>,
    /// `error` of a response, unparsed.
    #[serde(borrow, default)]
    pub error: Option<&'a RawValue>,
}

impl<'a> Envelope<'a> {
    /// Parses the envelope of a message; `None` when the text is not a JSON object.
    pub fn parse(text: &'a str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// Whether this is a request (has a method and an id).
    pub fn is_request(&self) -> bool {
        self.method.is_some() && self.id.is_some()
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
