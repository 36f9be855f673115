//! A request id for every request a service answers: taken from the client's `X-Request-Id`
//! when it is one (1 to [`MAX_LEN`] visible ASCII characters), else made here (32 random hex
//! digits); recorded on the `request` span everything logged for the request happens in, and
//! echoed in the response's `X-Request-Id`.
//!
//! The span holds the method and the path, never the query or a header (where credentials
//! travel). The request's outcome is logged when its response is ready: at `info` for a
//! refusal or failure (status 400 and above), at `debug` otherwise — so a default log shows
//! every failed authentication with its id, and `AIP_LOG=debug` (or `aip_http=debug`) adds
//! an access log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

/// The header carrying the request id, both ways.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// The longest request id taken from a client.
pub const MAX_LEN: usize = 64;

/// Middleware: gives the request its id (see the module's documentation), runs it in the
/// `request` span and logs its outcome.
pub async fn trace_requests(request: Request, next: Next) -> Response {
    let id = from_client(request.headers()).map_or_else(generate, str::to_owned);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status >= 400 {
            tracing::info!(status, elapsed_ms, "request refused");
        } else {
            tracing::debug!(status, elapsed_ms, "request served");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

/// The client's request id, when it is one we keep: 1 to [`MAX_LEN`] visible ASCII
/// characters (no space, no control character).
pub fn from_client(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(HEADER)?.as_bytes();
    let visible = !value.is_empty() && value.len() <= MAX_LEN && value.iter().all(|b| b.is_ascii_graphic());
    // Visible ASCII is UTF-8.
    visible.then(|| std::str::from_utf8(value).ok()).flatten()
}

/// A new request id: 32 random hex digits (a per-process counter if the system's random
/// source fails).
fn generate() -> String {
    let mut bytes = [0_u8; 16];
    if getrandom::fill(&mut bytes).is_ok() {
        return bytes.iter().map(|b| format!("{b:02x}")).collect();
    }
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{:032x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt as _;

    fn headers(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_bytes(value).unwrap());
        headers
    }

    #[test]
    fn only_short_visible_ascii_ids_are_taken_from_clients() {
        assert_eq!(from_client(&headers(b"req-42.a_b:c/d")), Some("req-42.a_b:c/d"));
        let longest = "x".repeat(MAX_LEN);
        assert_eq!(from_client(&headers(longest.as_bytes())), Some(longest.as_str()));
        for refused in [
            "x".repeat(MAX_LEN + 1).into_bytes(),
            b"two words".to_vec(),
            b"tab\there".to_vec(),
            "caf\u{e9}".as_bytes().to_vec(),
            Vec::new(),
        ] {
            assert_eq!(from_client(&headers(&refused)), None, "{refused:?}");
        }
        assert_eq!(from_client(&HeaderMap::new()), None);
    }

    #[test]
    fn generated_ids_are_32_hex_digits_and_differ() {
        let (a, b) = (generate(), generate());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
    }

    async fn request_id(router: &Router, sent: Option<&[u8]>) -> String {
        let mut request = Request::builder().uri("/x");
        if let Some(value) = sent {
            request = request.header(HEADER, value);
        }
        let response = router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        response.headers()[HEADER].to_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn the_response_echoes_the_clients_id_or_a_new_one() {
        let router = Router::new()
            .route("/x", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(trace_requests));
        assert_eq!(request_id(&router, Some(b"abc-123")).await, "abc-123");
        let replaced = request_id(&router, Some(b"bad id")).await;
        assert_eq!(replaced.len(), 32, "{replaced}");
        let made = request_id(&router, None).await;
        assert_eq!(made.len(), 32, "{made}");
    }
}
