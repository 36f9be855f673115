//! JSON-RPC framing: the parts of a message the proxy reads, and the one place refusals become
//! JSON-RPC errors (spec 11.1).

use std::borrow::Cow;

use aip_aat::jsonrpc::ErrorCode;
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
    pub method: Option<Cow<'a, str>>,
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
            Some(m) => Some(serde_json::from_str::<Text<'a>>(m.get()).ok()?.0),
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

/// Whether `text` is one JSON object: what a line that is not a JSON-RPC envelope must at least
/// be to be relayed. Read without building anything.
pub fn is_json_object(text: &str) -> bool {
    text.trim_start().starts_with('{') && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// The `id` of a message read from the first bytes of its line (the rest of an oversized line is
/// never buffered): the top-level members are skipped one by one until `id`, which is returned
/// as written when it is a string, a number or `null` that ends inside `prefix`. `None` when the
/// prefix ends first or is not the start of a JSON object.
pub fn id_in_prefix(prefix: &[u8]) -> Option<&str> {
    let mut at = skip_space(prefix, 0);
    if prefix.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    loop {
        at = skip_space(prefix, at);
        if prefix.get(at) != Some(&b'"') {
            return None;
        }
        let key_end = value_end(prefix, at)?;
        let key = &prefix[at..key_end];
        at = skip_space(prefix, key_end);
        if prefix.get(at) != Some(&b':') {
            return None;
        }
        at = skip_space(prefix, at + 1);
        let end = value_end(prefix, at)?;
        if key == b"\"id\"" {
            let id = std::str::from_utf8(&prefix[at..end]).ok()?;
            let value: Value = serde_json::from_str(id).ok()?;
            return (value.is_string() || value.is_number() || value.is_null()).then_some(id);
        }
        at = skip_space(prefix, end);
        if prefix.get(at) != Some(&b',') {
            return None;
        }
        at += 1;
    }
}

fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

/// Where the JSON value starting at `at` ends (exclusive), if it ends inside `bytes` and
/// something follows it (so that a number cut by the end of the prefix is not taken whole).
fn value_end(bytes: &[u8], at: usize) -> Option<usize> {
    let end = match *bytes.get(at)? {
        b'"' => string_end(bytes, at)?,
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match *bytes.get(i)? {
                    b'"' => {
                        i = string_end(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            break i + 1;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let scalar = bytes[at..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b':') || b.is_ascii_whitespace())?;
            at + scalar
        }
    };
    (end > at && end < bytes.len()).then_some(end)
}

/// Where the string literal starting at `at` ends (just after its closing quote).
fn string_end(bytes: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    loop {
        match *bytes.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// `params._aip_aat` and `params._aip_proof` (spec 7.6.1; docs/architecture.md, "The AAT on the wire").
const AAT_MEMBER: &str = "_aip_aat";
const PROOF_MEMBER: &str = "_aip_proof";

/// Why `params` could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamsError;

/// The `params` of a request, read once from the message text: the credentials are borrowed
/// from it, and the message can be forwarded without them, byte-for-byte otherwise.
#[derive(Debug)]
pub struct Params<'a> {
    /// `params` exactly as sent.
    raw: &'a RawValue,
    /// Its members in order, keys decoded.
    members: Vec<(Cow<'a, str>, &'a RawValue)>,
    /// The AAT (spec 7.6.1).
    pub aat: Option<Cow<'a, str>>,
    /// The per-call proof (docs/architecture.md, "The AAT on the wire").
    pub proof: Option<Cow<'a, str>>,
}

impl<'a> Params<'a> {
    /// Reads `params`, which must be an object whose credential members, when present, are
    /// strings (or `null`) given once.
    pub fn parse(raw: &'a RawValue) -> Result<Self, ParamsError> {
        let members = serde_json::from_str::<Members<'a>>(raw.get())
            .map_err(|_| ParamsError)?
            .0;
        let mut params = Self {
            raw,
            members,
            aat: None,
            proof: None,
        };
        params.aat = params.credential(AAT_MEMBER)?;
        params.proof = params.credential(PROOF_MEMBER)?;
        Ok(params)
    }

    /// The raw value of the member `key`; a key given twice is an error.
    pub fn member(&self, key: &str) -> Result<Option<&'a RawValue>, ParamsError> {
        let mut found = self.members.iter().filter(|(k, _)| k == key).map(|(_, v)| *v);
        let first = found.next();
        if found.next().is_some() {
            return Err(ParamsError);
        }
        Ok(first)
    }

    fn credential(&self, key: &str) -> Result<Option<Cow<'a, str>>, ParamsError> {
        match self.member(key)? {
            None => Ok(None),
            Some(raw) if raw.get() == "null" => Ok(None),
            Some(raw) => serde_json::from_str::<Text<'a>>(raw.get())
                .map(|t| Some(t.0))
                .map_err(|_| ParamsError),
        }
    }

    /// `message` (the text `params` was read from) without the credential members (even
    /// `null` ones): the rest of the text is kept byte-for-byte. `Ok(None)` when there is
    /// nothing to remove; an error when `params` is not part of `message`, so that a message
    /// is never forwarded with its credentials.
    pub fn forwarded(&self, message: &str) -> Result<Option<String>, ParamsError> {
        if !self.members.iter().any(|(k, _)| is_credential(k)) {
            return Ok(None);
        }
        let object = self.raw.get();
        let object_at = offset_in(message, object).ok_or(ParamsError)?;
        let mut out = String::with_capacity(message.len());
        out.push_str(&message[..object_at]);
        out.push('{');
        // Each member runs from just after the `{` or the `,` before it to the end of its value.
        let mut start = 1;
        let mut end = 1;
        let mut kept = 0;
        for (key, value) in &self.members {
            end = offset_in(object, value.get()).ok_or(ParamsError)? + value.get().len();
            if !is_credential(key) {
                if kept > 0 {
                    out.push(',');
                }
                out.push_str(&object[start..end]);
                kept += 1;
            }
            // Between a value and the next member there is only whitespace and one comma.
            start = object[end..].find(',').map_or(end, |comma| end + comma + 1);
        }
        out.push_str(&object[end..]);
        out.push_str(&message[object_at + object.len()..]);
        Ok(Some(out))
    }
}

fn is_credential(key: &str) -> bool {
    key == AAT_MEMBER || key == PROOF_MEMBER
}

/// Where `part`, a slice of `whole`, starts in it.
fn offset_in(whole: &str, part: &str) -> Option<usize> {
    let offset = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (offset + part.len() <= whole.len()).then_some(offset)
}

/// The members of a JSON object, in order, values unparsed.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some(Text(key)) = map.next_key()? {
                    members.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// A JSON string, borrowed from the message unless it holds escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// The `params` of a `tools/call`.
#[derive(Debug)]
pub struct ToolCallParams<'a> {
    /// The tool.
    pub name: String,
    /// Its arguments (an object when present).
    pub arguments: Option<Value>,
    /// All of `params`, with the credentials.
    pub params: Params<'a>,
}

impl<'a> ToolCallParams<'a> {
    /// Reads `{name: string, arguments?: object, _aip_aat?, _aip_proof?, …}`.
    pub fn parse(raw: &'a RawValue) -> Result<Self, ParamsError> {
        let params = Params::parse(raw)?;
        let name = params.member("name")?.ok_or(ParamsError)?;
        let name: String = serde_json::from_str(name.get()).map_err(|_| ParamsError)?;
        let arguments = match params.member("arguments")? {
            None => None,
            Some(raw) => serde_json::from_str::<Option<Value>>(raw.get()).map_err(|_| ParamsError)?,
        };
        if arguments.as_ref().is_some_and(|a| !a.is_object()) {
            return Err(ParamsError);
        }
        Ok(Self {
            name,
            arguments,
            params,
        })
    }
}

/// A JSON-RPC error response with `id` echoed byte-for-byte (`null` when the request had none
/// or could not be read): [`aip_aat::jsonrpc::error_response`].
pub fn error_response(id: Option<&RawValue>, code: ErrorCode, data: Option<Value>) -> String {
    aip_aat::jsonrpc::error_response(id.map(RawValue::get), code, data)
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
    error_response(id, denial.kind.error_code(), Some(data))
}

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

    fn forwarded(message: &str) -> Option<String> {
        let envelope = Envelope::parse(message).unwrap();
        Params::parse(envelope.params.unwrap())
            .unwrap()
            .forwarded(message)
            .unwrap()
    }

    #[test]
    fn credentials_are_cut_out_and_the_rest_kept_byte_for_byte() {
        let cases = [
            (
                r#"{"id":1,"method":"tools/call","params":{"_aip_aat":"t","_aip_proof":"p","arguments":{"b":1, "a":[2]},"name":"x"}}"#,
                r#"{"id":1,"method":"tools/call","params":{"arguments":{"b":1, "a":[2]},"name":"x"}}"#,
            ),
            (
                r#"{"method":"tools/call", "params": { "name" : "x" ,  "_aip_aat" : "t" , "arguments":{} } ,"id":"q"}"#,
                r#"{"method":"tools/call", "params": { "name" : "x", "arguments":{} } ,"id":"q"}"#,
            ),
            (
                r#"{"id":1,"method":"tools/call","params":{"name":"x","_aip_proof":"p"}}"#,
                r#"{"id":1,"method":"tools/call","params":{"name":"x"}}"#,
            ),
            (
                r#"{"id":1,"method":"tools/list","params":{"_aip_aat":"t","_aip_proof":null}}"#,
                r#"{"id":1,"method":"tools/list","params":{}}"#,
            ),
            (
                r#"{"id":1,"method":"tools/call","params":{"name":"a,b","\u005faip_aat":"t,","x":"},{"}}"#,
                r#"{"id":1,"method":"tools/call","params":{"name":"a,b","x":"},{"}}"#,
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(forwarded(message).as_deref(), Some(expected), "{message}");
            let _: Value = serde_json::from_str(expected).unwrap();
        }
        let plain = r#"{"id":1,"method":"tools/call","params":{"name":"x","arguments":{"_aip_aat":"kept"}}}"#;
        assert_eq!(forwarded(plain), None);
        // Params read from another text cannot be cut out of this one: an error, never the
        // message with its credentials.
        let elsewhere = RawValue::from_string(r#"{"name":"x","_aip_aat":"t"}"#.to_owned()).unwrap();
        let message = r#"{"id":1,"method":"tools/call","params":{"name":"x","_aip_aat":"t"}}"#;
        assert_eq!(Params::parse(&elsewhere).unwrap().forwarded(message), Err(ParamsError));
    }

    #[test]
    fn tool_call_params_are_checked() {
        let raw = |text: &str| RawValue::from_string(text.to_owned()).unwrap();
        let ok = raw(r#"{"name":"x","arguments":{"a":1},"_aip_aat":"t","_aip_proof":"p"}"#);
        let params = ToolCallParams::parse(&ok).unwrap();
        assert_eq!(params.name, "x");
        assert_eq!(params.arguments, Some(json!({"a": 1})));
        assert_eq!(params.params.aat.as_deref(), Some("t"));
        assert!(
            matches!(params.params.proof, Some(Cow::Borrowed("p"))),
            "credentials are borrowed"
        );
        let escaped = raw(r#"{"name":"x","_aip_aat":"a\u0062"}"#);
        assert_eq!(
            ToolCallParams::parse(&escaped).unwrap().params.aat.as_deref(),
            Some("ab")
        );
        let null_arguments = raw(r#"{"name":"x","arguments":null}"#);
        assert_eq!(ToolCallParams::parse(&null_arguments).unwrap().arguments, None);
        for bad in [
            r#"{"arguments":{}}"#,
            r#"{"name":5}"#,
            r#"{"name":"x","arguments":[1]}"#,
            r#"{"name":"x","name":"y"}"#,
            r#"{"name":"x","_aip_aat":"t","_aip_aat":"u"}"#,
            r#"{"name":"x","_aip_aat":"t","\u005faip_aat":"u"}"#,
            r#"{"name":"x","_aip_proof":7}"#,
            r#"["x"]"#,
        ] {
            assert!(ToolCallParams::parse(&raw(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_id_is_read_from_the_start_of_a_line() {
        let cases: [(&[u8], Option<&str>); 10] = [
            (
                br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"na"#,
                Some("7"),
            ),
            (
                br#"{ "method" : "x", "params":{"id":1,"a":[{"}"}]} , "id" : "a\"b" ,"#,
                Some(r#""a\"b""#),
            ),
            (br#"{"result":{"id":3},"id":null}"#, Some("null")),
            (br#"{"jsonrpc":"2.0","id":12"#, None),
            (br#"{"jsonrpc":"2.0","id":"ab"#, None),
            (br#"{"jsonrpc":"2.0","params":{"x":"#, None),
            (br#"{"id":{"a":1},"x":1}"#, None),
            (br#"{"id":tru,"x":1}"#, None),
            (br#"[{"id":1}]"#, None),
            (b"{\"id\":1\xff,", None),
        ];
        for (prefix, id) in cases {
            assert_eq!(id_in_prefix(prefix), id, "{}", String::from_utf8_lossy(prefix));
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
        assert!(error_response(None, ErrorCode::ParseError, None).contains("\"id\":null"));
    }
}
