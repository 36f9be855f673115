//! The two directions of the stdio relay between an MCP client (our stdin/stdout) and the
//! command it talks to (its stdin/stdout): newline-delimited JSON-RPC.
//!
//! Client → command: a request or notification whose `method` is `tools/call` or `tools/list`
//! gets `params._aip_aat` (the current AAT) and `params._aip_proof` (a fresh proof bound to
//! the call: docs/architecture.md, "The AAT on the wire"); every other line is forwarded byte
//! for byte, malformed ones included.
//! Command → client: every line byte for byte.
//!
//! Only the members of the message object and of `params` are re-encoded; their values are
//! copied as the client wrote them (`RawValue`), so numbers, escapes and spacing inside them
//! survive, and the proof's `args_hash` is computed over exactly the `arguments` the receiver
//! will parse.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, BufRead as _, BufReader, Read, Write};
use std::sync::{Mutex, PoisonError};

use aip_aat::jsonrpc::{ErrorCode, error_response};
use aip_aat::proof::Call;
use aip_aat::secret::SecretString;
use aip_api::agent::{AgentClient, AgentClientError, DelegatedCredentials};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::output::warn;

/// The member that carries the AAT.
const AAT_PARAM: &str = "_aip_aat";
/// The member that carries the per-call proof.
const PROOF_PARAM: &str = "_aip_proof";

/// Where the relay gets the AAT and a proof for one call.
pub(crate) trait Credentials {
    /// The current AAT and a fresh proof bound to `call`.
    fn credentials(&self, call: &Call<'_>) -> Result<(SecretString, String), AgentClientError>;
}

impl Credentials for AgentClient {
    fn credentials(&self, call: &Call<'_>) -> Result<(SecretString, String), AgentClientError> {
        AgentClient::credentials(self, call)
    }
}

/// A delegated AAT held as it is (`aip-agent --delegation-file`): nothing to refresh; each
/// call's proof is signed with the agent's key, the key the chain's last step names.
impl Credentials for DelegatedCredentials {
    fn credentials(&self, call: &Call<'_>) -> Result<(SecretString, String), AgentClientError> {
        DelegatedCredentials::credentials(self, call)
    }
}

/// The client's side of the relay (our stdout), written by both directions: one whole line
/// at a time under the lock.
pub(crate) type ClientOut = Mutex<Box<dyn Write + Send>>;

/// What becomes of one line from the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Upstream {
    /// Forward the line as it is.
    Unchanged,
    /// Forward this line (the message with the AAT and the proof) instead.
    Rewritten(Vec<u8>),
    /// Do not forward; answer the client with this line.
    Answer(Vec<u8>),
    /// Do not forward, and there is no one to answer (a notification).
    Dropped,
}

/// Just the method, to tell cheaply whether a line needs credentials.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
}

/// The members of a JSON object, values unparsed. Duplicate names keep the last value, as
/// serde_json does everywhere else.
type Members<'a> = BTreeMap<String, &'a RawValue>;

/// Decides what to do with one line from the client (`line` includes its newline, if any).
pub(crate) fn upstream(line: &[u8], credentials: &impl Credentials) -> Upstream {
    let Ok(text) = std::str::from_utf8(line) else {
        return Upstream::Unchanged;
    };
    let Ok(Probe { method: Some(method) }) = serde_json::from_str::<Probe<'_>>(text) else {
        return Upstream::Unchanged;
    };
    let is_call = match method.as_ref() {
        "tools/call" => true,
        "tools/list" => false,
        _ => return Upstream::Unchanged,
    };
    let Ok(message) = serde_json::from_str::<Members<'_>>(text) else {
        return Upstream::Unchanged;
    };
    let params = match message.get("params") {
        None => None,
        Some(raw) if raw.get() == "null" => None,
        Some(raw) => match serde_json::from_str::<Members<'_>>(raw.get()) {
            Ok(members) => Some(members),
            // An array or a scalar: nothing to add members to; the receiver answers it.
            Err(_) => return Upstream::Unchanged,
        },
    };
    let (params, name, arguments) = match (is_call, params) {
        (false, params) => (params.unwrap_or_default(), None, None),
        (true, None) => return Upstream::Unchanged,
        (true, Some(params)) => {
            let Some(name) = params
                .get("name")
                .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
            else {
                return Upstream::Unchanged;
            };
            // `"arguments": null` counts as absent, as the proxy reads it.
            let arguments = match params.get("arguments") {
                None => None,
                Some(raw) => match serde_json::from_str::<Value>(raw.get()) {
                    Ok(Value::Null) => None,
                    Ok(value) => Some(value),
                    Err(_) => return Upstream::Unchanged,
                },
            };
            (params, Some(name), arguments)
        }
    };
    let call = match &name {
        Some(name) => Call::tools_call(name, arguments.as_ref()),
        None => Call {
            method: "tools/list",
            tool: "",
            arguments: None,
        },
    };
    let id = message.get("id").copied();
    let (aat, proof) = match credentials.credentials(&call) {
        Ok(pair) => pair,
        Err(e) => return refuse(id, &e.to_string()),
    };
    match encode(message, params, aat.expose(), &proof) {
        Ok(line) => Upstream::Rewritten(line),
        Err(e) => refuse(id, &format!("cannot encode the message: {e}")),
    }
}

/// `message` with `params` plus the AAT and the proof as its `params`, as one line.
fn encode(message: Members<'_>, params: Members<'_>, aat: &str, proof: &str) -> serde_json::Result<Vec<u8>> {
    let aat = serde_json::value::to_raw_value(aat)?;
    let proof = serde_json::value::to_raw_value(proof)?;
    let mut params: Members<'_> = params;
    params.insert(AAT_PARAM.to_owned(), &aat);
    params.insert(PROOF_PARAM.to_owned(), &proof);
    let params = serde_json::value::to_raw_value(&params)?;
    let mut message: Members<'_> = message;
    message.insert("params".to_owned(), &params);
    let mut line = serde_json::to_vec(&message)?;
    line.push(b'\n');
    Ok(line)
}

/// The answer to a call that could not be given credentials: JSON-RPC "Internal error" with
/// the request's `id` as sent; nothing for a notification.
fn refuse(id: Option<&RawValue>, reason: &str) -> Upstream {
    let Some(id) = id else {
        warn(format_args!(
            "dropped a notification that could not be given an AAT: {reason}"
        ));
        return Upstream::Dropped;
    };
    let data = serde_json::json!({ "reason": reason });
    let mut line = error_response(Some(id.get()), ErrorCode::InternalError, Some(data)).into_bytes();
    line.push(b'\n');
    Upstream::Answer(line)
}

/// Client → command until the client closes its side (or the command closes its stdin).
/// Writes to `command` are flushed whenever no more input is already buffered.
pub(crate) fn client_to_command(
    mut client: BufReader<impl Read>,
    command: &mut impl Write,
    client_out: &ClientOut,
    credentials: &impl Credentials,
) -> io::Result<()> {
    let mut line = Vec::new();
    loop {
        line.clear();
        if client.read_until(b'\n', &mut line)? == 0 {
            return command.flush();
        }
        match upstream(&line, credentials) {
            Upstream::Unchanged => command.write_all(&line)?,
            Upstream::Rewritten(rewritten) => command.write_all(&rewritten)?,
            Upstream::Answer(answer) => {
                let mut out = client_out.lock().unwrap_or_else(PoisonError::into_inner);
                out.write_all(&answer)?;
                out.flush()?;
            }
            Upstream::Dropped => {}
        }
        if client.buffer().is_empty() {
            command.flush()?;
        }
    }
}

/// Command → client, byte for byte, until the command closes its stdout. Whole lines only,
/// so answers of the other direction never land inside one; flushed whenever no more output
/// is already buffered.
pub(crate) fn command_to_client(mut command: BufReader<impl Read>, client_out: &ClientOut) -> io::Result<()> {
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = command.read_until(b'\n', &mut line)?;
        let mut out = client_out.lock().unwrap_or_else(PoisonError::into_inner);
        if read == 0 {
            return out.flush();
        }
        out.write_all(&line)?;
        if command.buffer().is_empty() {
            out.flush()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Hands out `aat` and a proof naming the call and a counter, or fails.
    struct Fake {
        fail: bool,
        calls: AtomicUsize,
    }

    impl Fake {
        fn new(fail: bool) -> Self {
            Self {
                fail,
                calls: AtomicUsize::new(0),
            }
        }
    }

    impl Credentials for Fake {
        fn credentials(&self, call: &Call<'_>) -> Result<(SecretString, String), AgentClientError> {
            if self.fail {
                return Err(AgentClientError::Config("no key"));
            }
            let n = self.calls.fetch_add(1, Ordering::Relaxed);
            let hash = call.args_hash().unwrap();
            Ok((
                SecretString::new("aat"),
                format!("{}|{}|{hash}|{n}", call.method, call.tool),
            ))
        }
    }

    fn rewritten(line: &str, fake: &Fake) -> Value {
        match upstream(line.as_bytes(), fake) {
            Upstream::Rewritten(bytes) => {
                assert_eq!(bytes.last(), Some(&b'\n'));
                assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
                serde_json::from_slice(&bytes).unwrap()
            }
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn tool_calls_get_the_aat_and_a_proof_of_their_arguments() {
        let fake = Fake::new(false);
        let args = serde_json::json!({"path": "/etc/hosts", "n": [1, 2.5]});
        let hash = Call::tools_call("read_file", Some(&args)).args_hash().unwrap();
        let message = rewritten(
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_file","arguments":{"n":[1,2.5],"path":"/etc/hosts"}}}"#,
            &fake,
        );
        assert_eq!(message["id"], 7);
        assert_eq!(message["params"]["name"], "read_file");
        assert_eq!(message["params"]["arguments"], args);
        assert_eq!(message["params"]["_aip_aat"], "aat");
        assert_eq!(
            message["params"]["_aip_proof"],
            format!("tools/call|read_file|{hash}|0")
        );
    }

    #[test]
    fn tools_list_gets_params_when_it_has_none() {
        let fake = Fake::new(false);
        let empty = Call::tools_call("", None).args_hash().unwrap();
        for line in [
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/list","params":null}"#,
            "{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"tools\\/list\",\"params\":{}}\r\n",
        ] {
            let message = rewritten(line, &fake);
            assert_eq!(message["method"], "tools/list");
            assert_eq!(message["params"]["_aip_aat"], "aat", "{line}");
            let proof = message["params"]["_aip_proof"].as_str().unwrap();
            assert!(proof.starts_with(&format!("tools/list||{empty}|")), "{proof}");
        }
        let message = rewritten(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"c2"}}"#,
            &fake,
        );
        assert_eq!(message["params"]["cursor"], "c2");
    }

    #[test]
    fn values_are_copied_as_written_and_old_credentials_replaced() {
        let fake = Fake::new(false);
        let line = r#"{"method":"tools/call","id":1e0,"jsonrpc":"2.0","x":{"big":123456789012345678901234567890},"params":{"_aip_aat":"forged","name":"w\u0072ite","arguments":{"text":"caf\u00e9 1.50","size": 1.50},"_aip_proof":"old"}}"#;
        let Upstream::Rewritten(bytes) = upstream(line.as_bytes(), &fake) else {
            panic!("not rewritten");
        };
        let text = String::from_utf8(bytes).unwrap();
        for kept in [
            r#""id":1e0"#,
            r#""big":123456789012345678901234567890"#,
            r#""name":"w\u0072ite""#,
            r#"{"text":"caf\u00e9 1.50","size": 1.50}"#,
        ] {
            assert!(text.contains(kept), "{kept} not in {text}");
        }
        assert!(!text.contains("forged") && !text.contains("old"), "{text}");
        let message: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(message["params"]["_aip_aat"], "aat");
        let args: Value = serde_json::from_str(r#"{"text":"café 1.50","size":1.50}"#).unwrap();
        let hash = Call::tools_call("write", Some(&args)).args_hash().unwrap();
        assert_eq!(message["params"]["_aip_proof"], format!("tools/call|write|{hash}|0"));
    }

    #[test]
    fn everything_else_passes_unchanged() {
        let fake = Fake::new(false);
        for line in [
            "",
            "\n",
            "not json {\n",
            "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"x\"}}]\n",
            r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"TOOLS/CALL","params":{"name":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":7}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["x"]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":[]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"n":1e999}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}"#,
            r#"{"jsonrpc":"2.0","id":"s1","result":{"method":"tools/call"}}"#,
        ] {
            assert_eq!(upstream(line.as_bytes(), &fake), Upstream::Unchanged, "{line}");
        }
        assert_eq!(
            upstream(b"{\"method\":\"tools/list\",\"id\":1,\"x\":\"\xff\"}\n", &fake),
            Upstream::Unchanged
        );
        assert_eq!(fake.calls.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_call_without_credentials_is_answered_not_forwarded() {
        let fake = Fake::new(true);
        let line = r#"{"jsonrpc":"2.0","id":{"k":[1, 2]},"method":"tools/call","params":{"name":"x"}}"#;
        let Upstream::Answer(answer) = upstream(line.as_bytes(), &fake) else {
            panic!("not answered");
        };
        let text = String::from_utf8(answer).unwrap();
        assert!(text.ends_with('\n') && text.contains(r#""id":{"k":[1, 2]}"#), "{text}");
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["jsonrpc"], "2.0");
        assert_eq!(answer["error"]["code"], -32603);
        assert_eq!(answer["error"]["message"], "Internal error");
        assert!(
            answer["error"]["data"]["reason"].as_str().unwrap().contains("no key"),
            "{answer}"
        );
        let notification = r#"{"jsonrpc":"2.0","method":"tools/list"}"#;
        assert_eq!(upstream(notification.as_bytes(), &fake), Upstream::Dropped);
    }

    /// A `Write` shared with the test.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn both_directions_relay_whole_lines() {
        let fake = Fake::new(false);
        let input = "{\"id\":1,\"method\":\"initialize\"}\r\nnot json\n{\"id\":2,\"method\":\"tools/list\"}\nlast";
        let mut command = Vec::new();
        let client = Shared::default();
        let client_out: ClientOut = Mutex::new(Box::new(client.clone()));
        client_to_command(BufReader::new(input.as_bytes()), &mut command, &client_out, &fake).unwrap();
        let forwarded = String::from_utf8(command).unwrap();
        let lines: Vec<&str> = forwarded.split_inclusive('\n').collect();
        assert_eq!(lines.len(), 4, "{forwarded}");
        assert_eq!(lines[0], "{\"id\":1,\"method\":\"initialize\"}\r\n");
        assert_eq!(lines[1], "not json\n");
        assert!(lines[2].contains("\"_aip_proof\":\"tools/list||"), "{}", lines[2]);
        assert_eq!(lines[3], "last");
        assert!(client.0.lock().unwrap().is_empty());

        let output = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n  odd  \u{e9}\n\nno newline";
        command_to_client(BufReader::new(output.as_bytes()), &client_out).unwrap();
        assert_eq!(*client.0.lock().unwrap(), output.as_bytes());
    }
}
