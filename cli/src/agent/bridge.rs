//! `aip-agent --upstream URL`: an unmodified stdio MCP client (Claude Desktop, Cursor) bridged
//! to a remote MCP front door over Streamable HTTP, every request sent with the agent's AAT as
//! `Authorization: DPoP` and a fresh DPoP proof — bound to the call (`mcp_method`, `tool`,
//! `args_hash`) for `tools/call` and `tools/list` — so the client gets full
//! sender-constraining although it does no DPoP itself.
//!
//! Each line from the client is POSTed on its own task (a slow tool call does not hold up a
//! ping); answers, one JSON message or a stream of events, go back to the client one line
//! each. The session id the front door gives with `initialize` is sent from then on, and the
//! front door's GET stream is followed for the server's own messages. When the client closes
//! its side, the session is ended (DELETE). A request the front door refuses or cannot answer
//! gets a JSON-RPC error, so the client never waits in vain.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aip_aat::jsonrpc::{ErrorCode, error_response};
use aip_aat::proof::Call;
use aip_aat::secret::SecretString;
use aip_api::agent::{AgentClient, DelegatedCredentials};
use futures_util::StreamExt as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::Mutex as AsyncMutex;

/// The session header.
const SESSION_ID: &str = "mcp-session-id";
/// The protocol version header.
const PROTOCOL_VERSION: &str = "mcp-protocol-version";
/// Largest message accepted from the front door.
const MAX_MESSAGE: usize = 16 << 20;
/// Connection timeout to the front door.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the bridge gets the AAT and a DPoP proof for one request.
pub(crate) trait DpopCredentials: Send + Sync {
    /// The current AAT and a fresh DPoP proof for a request with `method` to `uri`, bound to
    /// `call` when the request carries one.
    fn dpop_credentials(
        &self,
        method: &str,
        uri: &str,
        call: Option<&Call<'_>>,
    ) -> Result<(SecretString, String), String>;
}

impl DpopCredentials for AgentClient {
    fn dpop_credentials(
        &self,
        method: &str,
        uri: &str,
        call: Option<&Call<'_>>,
    ) -> Result<(SecretString, String), String> {
        AgentClient::dpop_credentials(self, method, uri, call).map_err(|e| e.to_string())
    }
}

/// A delegated AAT as it is held: the agent's key, the one its chain's last step names,
/// signs the proofs.
impl DpopCredentials for DelegatedCredentials {
    fn dpop_credentials(
        &self,
        method: &str,
        uri: &str,
        call: Option<&Call<'_>>,
    ) -> Result<(SecretString, String), String> {
        DelegatedCredentials::dpop_credentials(self, method, uri, call).map_err(|e| e.to_string())
    }
}

/// The bridge's state, shared by the tasks of the client's messages.
struct Bridge {
    http: reqwest::Client,
    url: String,
    credentials: Box<dyn DpopCredentials>,
    /// The session id and the negotiated protocol version, once `initialize` answered.
    session: Mutex<(Option<HeaderValue>, Option<HeaderValue>)>,
    /// Our stdout: one whole line at a time.
    out: AsyncMutex<tokio::io::Stdout>,
}

/// Bridges our stdin/stdout to the front door at `url` until the client closes its side.
pub(crate) async fn run(
    url: String,
    credentials: Box<dyn DpopCredentials>,
    ca_pem: Option<Vec<u8>>,
) -> Result<(), String> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("aip-agent/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca_pem {
        let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| "the CA file is not PEM".to_owned())?;
        builder = builder.tls_certs_only(roots);
    }
    let http = builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let bridge = Arc::new(Bridge {
        http,
        url,
        credentials,
        session: Mutex::new((None, None)),
        out: AsyncMutex::new(tokio::io::stdout()),
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stream_opened = false;
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(|e| format!("reading the client: {e}"))?
    {
        if line.trim().is_empty() {
            continue;
        }
        let message = parse(&line);
        let initialize = message.method.as_deref() == Some("initialize");
        let task = {
            let bridge = Arc::clone(&bridge);
            async move { bridge.post(line, message).await }
        };
        if initialize {
            // Everything after `initialize` needs its session: wait for it.
            task.await;
        } else {
            tasks.spawn(task);
        }
        if !stream_opened && bridge.session().0.is_some() {
            stream_opened = true;
            let bridge = Arc::clone(&bridge);
            tokio::spawn(async move { bridge.follow_stream().await });
        }
    }
    while tasks.join_next().await.is_some() {}
    bridge.end_session().await;
    Ok(())
}

/// What the bridge needs to know of a client message.
#[derive(Debug, Default, PartialEq)]
struct Message {
    method: Option<String>,
    /// The id as JSON text (for errors answered on the front door's behalf).
    id: Option<String>,
    tool: Option<String>,
    arguments: Option<Value>,
}

fn parse(line: &str) -> Message {
    let Ok(Value::Object(mut message)) = serde_json::from_str::<Value>(line) else {
        return Message::default();
    };
    let method = message.get("method").and_then(Value::as_str).map(str::to_owned);
    let id = message.get("id").map(Value::to_string);
    let mut params = match message.remove("params") {
        Some(Value::Object(params)) => params,
        _ => serde_json::Map::new(),
    };
    let tool = params.get("name").and_then(Value::as_str).map(str::to_owned);
    let arguments = params.remove("arguments").filter(|a| !a.is_null());
    Message {
        method,
        id,
        tool,
        arguments,
    }
}

impl Message {
    /// The call a proof binds: `tools/call` and `tools/list`, as the proxy checks them.
    fn call(&self) -> Option<Call<'_>> {
        match self.method.as_deref()? {
            "tools/call" => Some(Call::tools_call(self.tool.as_deref()?, self.arguments.as_ref())),
            "tools/list" => Some(Call {
                method: "tools/list",
                tool: "",
                arguments: None,
            }),
            _ => None,
        }
    }
}

impl Bridge {
    fn session(&self) -> (Option<HeaderValue>, Option<HeaderValue>) {
        self.session.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The headers of a request with `method`: the AAT, a fresh DPoP proof (bound to `call`),
    /// the session and the protocol version.
    fn headers(&self, method: &str, call: Option<&Call<'_>>) -> Result<HeaderMap, String> {
        let (aat, proof) = self.credentials.dpop_credentials(method, &self.url, call)?;
        let mut headers = HeaderMap::new();
        let mut authorization = HeaderValue::from_str(&format!("DPoP {}", aat.expose()))
            .map_err(|_| "the AAT is not a header value".to_owned())?;
        authorization.set_sensitive(true);
        headers.insert(AUTHORIZATION, authorization);
        headers.insert(
            "dpop",
            HeaderValue::from_str(&proof).map_err(|_| "the proof is not a header value".to_owned())?,
        );
        let (session, version) = self.session();
        if let Some(session) = session {
            headers.insert(SESSION_ID, session);
        }
        if let Some(version) = version {
            headers.insert(PROTOCOL_VERSION, version);
        }
        Ok(headers)
    }

    /// POSTs one client message and relays what comes back.
    async fn post(&self, line: String, message: Message) {
        let id = message.id.as_deref().filter(|_| message.method.is_some());
        let headers = match self.headers("POST", message.call().as_ref()) {
            Ok(headers) => headers,
            Err(why) => return self.refuse(id, &why).await,
        };
        let sent = self
            .http
            .post(&self.url)
            .headers(headers)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream")
            .body(line)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => return self.refuse(id, &format!("the front door cannot be reached: {e}")).await,
        };
        let status = response.status();
        if message.method.as_deref() == Some("initialize") && status.is_success() {
            let session = response.headers().get(SESSION_ID).cloned();
            self.session.lock().unwrap_or_else(PoisonError::into_inner).0 = session;
        }
        if status == reqwest::StatusCode::ACCEPTED {
            return;
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let description = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error_description").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            return self
                .refuse(
                    id,
                    &format!("the front door answered HTTP {}: {description}", status.as_u16()),
                )
                .await;
        }
        let relayed = self
            .relay(response, message.method.as_deref() == Some("initialize"))
            .await;
        if let Err(why) = relayed {
            self.refuse(id, &why).await;
        }
    }

    /// Writes an answer (JSON) or each event of a stream to the client.
    async fn relay(&self, response: reqwest::Response, initialize: bool) -> Result<(), String> {
        let is_stream = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_stream {
            let body = response.bytes().await.map_err(|e| format!("reading the answer: {e}"))?;
            if body.len() > MAX_MESSAGE {
                return Err(format!("the answer exceeds {MAX_MESSAGE} bytes"));
            }
            return self.deliver(&body, initialize).await;
        }
        let mut events = EventLines::default();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("reading the stream: {e}"))?;
            for data in events.feed(&chunk)? {
                self.deliver(data.as_bytes(), initialize).await?;
            }
        }
        Ok(())
    }

    /// One message to the client, on one line; the protocol version an `initialize` answer
    /// names is remembered.
    async fn deliver(&self, message: &[u8], initialize: bool) -> Result<(), String> {
        let value: Value = serde_json::from_slice(message).map_err(|_| "the answer is not JSON".to_owned())?;
        if initialize
            && let Some(version) = value.pointer("/result/protocolVersion").and_then(Value::as_str)
            && let Ok(version) = HeaderValue::from_str(version)
        {
            self.session.lock().unwrap_or_else(PoisonError::into_inner).1 = Some(version);
        }
        let mut line = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let mut out = self.out.lock().await;
        out.write_all(&line).await.map_err(|e| e.to_string())?;
        out.flush().await.map_err(|e| e.to_string())
    }

    /// Answers the request `id` with a JSON-RPC error (nothing for a notification).
    async fn refuse(&self, id: Option<&str>, why: &str) {
        crate::output::warn(format_args!("{why}"));
        let Some(id) = id else {
            return;
        };
        let text = error_response(
            Some(id),
            ErrorCode::InternalError,
            Some(serde_json::json!({ "reason": why })),
        );
        let _ = self.deliver(text.as_bytes(), false).await;
    }

    /// Follows the front door's GET stream: the server's own requests and notifications.
    async fn follow_stream(&self) {
        let Ok(headers) = self.headers("GET", None) else {
            return;
        };
        let sent = self
            .http
            .get(&self.url)
            .headers(headers)
            .header(ACCEPT, "text/event-stream")
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                if let Err(why) = self.relay(response, false).await {
                    crate::output::warn(format_args!("the server's stream ended: {why}"));
                }
            }
            // 405: the server sends nothing on its own.
            Ok(_) | Err(_) => {}
        }
    }

    /// Ends the session at the front door.
    async fn end_session(&self) {
        if self.session().0.is_none() {
            return;
        }
        if let Ok(headers) = self.headers("DELETE", None) {
            let _ = self.http.delete(&self.url).headers(headers).send().await;
        }
    }
}

/// The `data` of each event of a stream, fed chunk by chunk.
#[derive(Debug, Default)]
struct EventLines {
    pending: Vec<u8>,
    data: Vec<String>,
}

impl EventLines {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<String>, String> {
        self.pending.extend_from_slice(chunk);
        let mut done = Vec::new();
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = std::str::from_utf8(&line).map_err(|_| "the stream is not UTF-8".to_owned())?;
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    done.push(std::mem::take(&mut self.data).join("\n"));
                }
            } else if let Some(data) = line.strip_prefix("data:") {
                self.data.push(data.strip_prefix(' ').unwrap_or(data).to_owned());
            }
        }
        if self.pending.len() > MAX_MESSAGE {
            return Err(format!("an event exceeds {MAX_MESSAGE} bytes"));
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_calls_and_lists_are_bound_and_the_rest_is_not() {
        let call =
            parse(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"read","arguments":{"p":1}}}"#);
        let bound = call.call().unwrap();
        assert_eq!((bound.method, bound.tool), ("tools/call", "read"));
        assert_eq!(bound.arguments, Some(&serde_json::json!({"p": 1})));
        assert_eq!(call.id.as_deref(), Some("3"));
        let list = parse(r#"{"jsonrpc":"2.0","id":"a","method":"tools/list"}"#);
        assert_eq!(list.call().unwrap().method, "tools/list");
        assert!(parse(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).call().is_none());
        assert!(parse("not json").call().is_none());
    }

    #[test]
    fn event_data_is_joined_per_event() {
        let mut events = EventLines::default();
        assert!(events.feed(b"event: message\ndata: {\"a\"").unwrap().is_empty());
        assert_eq!(
            events.feed(b":1}\n\n: ka\n\ndata: x\r\ndata: y\r\n\r\n").unwrap(),
            vec!["{\"a\":1}", "x\ny"]
        );
    }
}
