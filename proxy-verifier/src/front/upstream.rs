//! The remote MCP server behind the front door, over Streamable HTTP: the front door's own
//! client (rustls; the system roots or the one configured CA; no redirects), the upstream's
//! credentials added to every request, and its answers read under the message size cap.
//!
//! Nothing of the client's request reaches the upstream but the message the relay let through
//! and the protocol headers (`Mcp-Session-Id` translated, `MCP-Protocol-Version`,
//! `Last-Event-ID`): never the client's `Authorization` or `DPoP` (no token passthrough).

use std::pin::Pin;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};

use super::options::HttpUpstream;
use super::session::SESSION_ID;
use super::sse::{Event, Parser};

/// `MCP-Protocol-Version`.
pub(super) const PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// `Last-Event-ID`.
pub(super) const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
/// Connection (and TLS handshake) timeout to the upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest CA file read.
const MAX_CA_BYTES: u64 = 1 << 20;

/// Events of a stream, as they come.
pub(super) type Events = Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>;

/// What the upstream answered.
pub(super) enum Answer {
    /// `202 Accepted`: a notification or response taken.
    Accepted,
    /// One JSON message, with its status.
    Message(StatusCode, Vec<u8>),
    /// A stream of events.
    Stream(Events),
    /// Any other status, without a message the client needs (404 for a session the upstream
    /// forgot, 405 for a stream it does not offer…).
    Status(StatusCode),
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Accepted => f.write_str("Accepted"),
            Self::Message(status, body) => write!(f, "Message({status}, {} bytes)", body.len()),
            Self::Stream(_) => f.write_str("Stream"),
            Self::Status(status) => write!(f, "Status({status})"),
        }
    }
}

/// An answer and the upstream's session id, when it sent one.
#[derive(Debug)]
pub(super) struct Posted {
    pub(super) answer: Answer,
    pub(super) session: Option<HeaderValue>,
}

/// The protocol headers carried from the client's request.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Carried<'a> {
    /// The upstream's session id (translated from the front door's).
    pub(super) session: Option<&'a HeaderValue>,
    pub(super) protocol: Option<&'a HeaderValue>,
    pub(super) last_event_id: Option<&'a HeaderValue>,
}

/// The client for one remote MCP server.
#[derive(Debug)]
pub(super) struct HttpServer {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    max_message: usize,
}

impl HttpServer {
    /// A client for `upstream`: its header values read now, its URL and CA checked.
    pub(super) fn new(upstream: &HttpUpstream, max_message: usize) -> Result<Self, String> {
        let url = reqwest::Url::parse(&upstream.url).map_err(|e| format!("--upstream {:?}: {e}", upstream.url))?;
        if !matches!(url.scheme(), "http" | "https") || !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "--upstream {:?}: must be an http(s) URL without credentials (use --upstream-header)",
                upstream.url
            ));
        }
        if url.scheme() == "http" && !super::options::is_loopback(&url) {
            return Err(format!(
                "--upstream {:?}: plain http only to a loopback server; use https",
                upstream.url
            ));
        }
        let mut headers = HeaderMap::new();
        for configured in &upstream.headers {
            headers.append(configured.name.clone(), configured.value()?);
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("aip-proxy/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &upstream.ca_cert {
            let pem = read_ca(path)?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|_| format!("{}: not a PEM certificate bundle", path.display()))?;
            if roots.is_empty() {
                return Err(format!("{}: no certificate in it", path.display()));
            }
            builder = builder.tls_certs_only(roots);
        }
        let client = builder
            .build()
            .map_err(|e| format!("the upstream's HTTP client cannot be built: {e}"))?;
        Ok(Self {
            client,
            url,
            headers,
            max_message,
        })
    }

    /// The upstream's URL.
    pub(super) fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// POSTs one message.
    pub(super) async fn post(&self, body: Vec<u8>, carried: Carried<'_>) -> Result<Posted, String> {
        let request = self
            .request(reqwest::Method::POST, carried)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .body(body);
        self.answer(request).await
    }

    /// Opens the server's stream (GET).
    pub(super) async fn get(&self, carried: Carried<'_>) -> Result<Posted, String> {
        let request = self
            .request(reqwest::Method::GET, carried)
            .header(header::ACCEPT, "text/event-stream");
        self.answer(request).await
    }

    /// Ends the session (DELETE): the upstream's status.
    pub(super) async fn delete(&self, carried: Carried<'_>) -> Result<StatusCode, String> {
        let response = self
            .request(reqwest::Method::DELETE, carried)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        Ok(response.status())
    }

    fn request(&self, method: reqwest::Method, carried: Carried<'_>) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .request(method, self.url.clone())
            .headers(self.headers.clone());
        for (name, value) in [
            (SESSION_ID, carried.session),
            (PROTOCOL_VERSION, carried.protocol),
            (LAST_EVENT_ID, carried.last_event_id),
        ] {
            if let Some(value) = value {
                request = request.header(name, value);
            }
        }
        request
    }

    async fn answer(&self, request: reqwest::RequestBuilder) -> Result<Posted, String> {
        let response = request.send().await.map_err(|e| describe(&e))?;
        let status = response.status();
        let session = response.headers().get(SESSION_ID).cloned();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
            .unwrap_or_default();
        let answer = if status == StatusCode::ACCEPTED {
            Answer::Accepted
        } else if content_type == "text/event-stream" && status.is_success() {
            Answer::Stream(events(response, self.max_message))
        } else if content_type == "application/json" {
            Answer::Message(status, self.read_body(response).await?)
        } else {
            Answer::Status(status)
        };
        Ok(Posted { answer, session })
    }

    /// The body, refused past the size cap (declared or read).
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, String> {
        let too_large = || format!("the server's answer exceeds {} bytes", self.max_message);
        if response
            .content_length()
            .is_some_and(|n| n > u64::try_from(self.max_message).unwrap_or(u64::MAX))
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
            if body.len() + chunk.len() > self.max_message {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// The events of a `text/event-stream` answer, each at most `max` bytes; a read error or an
/// oversized event ends the stream with an error.
fn events(response: reqwest::Response, max: usize) -> Events {
    let bytes = response.bytes_stream();
    let stream = futures_util::stream::unfold(
        (bytes, Parser::new(max), std::collections::VecDeque::new(), false),
        |(mut bytes, mut parser, mut ready, mut failed)| async move {
            loop {
                if let Some(event) = ready.pop_front() {
                    return Some((Ok(event), (bytes, parser, ready, failed)));
                }
                if failed {
                    return None;
                }
                let chunk: Bytes = match bytes.next().await {
                    None => return None,
                    Some(Ok(chunk)) => chunk,
                    Some(Err(e)) => {
                        failed = true;
                        return Some((Err(describe(&e)), (bytes, parser, ready, failed)));
                    }
                };
                match parser.feed(&chunk) {
                    Ok(events) => ready.extend(events),
                    Err(e) => {
                        failed = true;
                        let why = match e {
                            super::sse::SseError::TooLarge(max) => format!("the server sent an event over {max} bytes"),
                            super::sse::SseError::NotUtf8 => "the server's event stream is not UTF-8".to_owned(),
                        };
                        return Some((Err(why), (bytes, parser, ready, failed)));
                    }
                }
            }
        },
    );
    Box::pin(stream)
}

fn read_ca(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut pem = Vec::new();
    file.take(MAX_CA_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if pem.len() as u64 > MAX_CA_BYTES {
        return Err(format!("{}: larger than {MAX_CA_BYTES} bytes", path.display()));
    }
    Ok(pem)
}

/// A transport failure in words safe to show the client: what failed, never a header.
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "the server did not answer in time".into()
    } else if error.is_connect() {
        "the server cannot be reached".into()
    } else {
        "the connection to the server failed".into()
    }
}
