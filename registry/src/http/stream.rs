//! `GET /v1/revocations/stream`: revocation events as Server-Sent Events, resumable with
//! `Last-Event-ID`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use aip_http::ApiError;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};

use super::auth::Caller;
use super::errors::ApiResult;
use crate::metrics as m;
use crate::service::Registry;
use crate::store::StoredEvent;

struct StreamState {
    registry: Arc<Registry>,
    live: tokio::sync::broadcast::Receiver<Arc<StoredEvent>>,
    pending: std::collections::VecDeque<Arc<StoredEvent>>,
    last: u64,
    catch_up: bool,
    _subscriber: SubscriberGauge,
}

struct SubscriberGauge;

impl SubscriberGauge {
    fn new() -> Self {
        metrics::gauge!(m::EVENT_SUBSCRIBERS).increment(1.0);
        Self
    }
}

impl Drop for SubscriberGauge {
    fn drop(&mut self) {
        metrics::gauge!(m::EVENT_SUBSCRIBERS).decrement(1.0);
    }
}

fn sse_event(event: &StoredEvent) -> Event {
    let at = time::OffsetDateTime::from_unix_timestamp(event.at)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
    let data = serde_json::json!({"version": event.version, "kind": event.kind, "subject": event.subject, "at": at, "data": event.data});
    Event::default()
        .id(event.version.to_string())
        .event(event.kind.clone())
        .data(data.to_string())
}

/// Events after `start`: first from the database, then live, each exactly once and in order.
fn event_stream(registry: Arc<Registry>, start: u64) -> impl Stream<Item = Result<Event, Infallible>> {
    // Subscribe before reading the backlog, so nothing falls between the two.
    let live = registry.subscribe();
    let state = StreamState {
        registry,
        live,
        pending: Default::default(),
        last: start,
        catch_up: true,
        _subscriber: SubscriberGauge::new(),
    };
    stream::unfold(state, |mut s| async move {
        loop {
            if let Some(event) = s.pending.pop_front() {
                if event.version <= s.last {
                    continue;
                }
                if event.version > s.last + 1 {
                    // A gap (missed while lagging): fill it from the database first.
                    s.pending.clear();
                    s.catch_up = true;
                    continue;
                }
                s.last = event.version;
                return Some((Ok(sse_event(&event)), s));
            }
            if s.catch_up {
                match s.registry.events_after(s.last, 500).await {
                    Ok(events) => {
                        s.catch_up = events.len() == 500;
                        s.pending.extend(events.into_iter().map(Arc::new));
                        continue;
                    }
                    // End the stream; the client reconnects with Last-Event-ID.
                    Err(_) => return None,
                }
            }
            match s.live.recv().await {
                Ok(event) => s.pending.push_back(event),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => s.catch_up = true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

#[utoipa::path(
    get,
    path = "/v1/revocations/stream",
    tag = "publication",
    summary = "Revocation events",
    description = "Server-Sent Events, one per revocation, suspension, reactivation or key rotation, each with `id:` = the list version and data `{version, kind, subject, at, data}` (admin or reader token). Resume with `Last-Event-ID`; without it the stream starts at the current version.",
    params(("Last-Event-ID" = Option<u64>, Header, description = "The last event id (list version) seen: the events after it are sent first.")),
    security(("accessToken" = [])),
    responses(
        (status = 200, description = "The event stream.", body = String, content_type = "text/event-stream"),
        (status = 400, description = "`Last-Event-ID` is not a list version (`invalid_request`).", body = aip_api::ErrorBody),
        (status = 401, description = "No valid bearer token (`invalid_token`), with `WWW-Authenticate: Bearer`.", body = aip_api::ErrorBody),
        (status = 403, description = "The token's role does not allow this (`insufficient_scope`).", body = aip_api::ErrorBody),
    )
)]
pub(super) async fn revocation_stream(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.reader()?;
    let start = match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be an event id (a list version)"))?,
        None => registry.revocation_version().await?,
    };
    let stream = event_stream(registry, start);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
