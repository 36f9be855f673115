//! MCP sessions of the front door (`Mcp-Session-Id`). The front door issues its own session
//! ids — 256 random bits — and maps each to what it fronts: the upstream's session id (if the
//! upstream keeps sessions), or the process of a stdio server. A session belongs to the agent
//! whose AAT opened it: another agent presenting its id is told it does not exist, so a leaked
//! id gives nothing. Sessions unused for [`IDLE`] are forgotten; at most [`MAX_SESSIONS`]
//! exist at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::stdio::StdioServer;

/// The session header.
pub(super) const SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
/// Sessions kept at once.
pub(super) const MAX_SESSIONS: usize = 10_000;
/// How long an unused session is kept.
pub(super) const IDLE: Duration = Duration::from_secs(3_600);

/// One MCP session.
#[derive(Debug)]
pub(super) struct Session {
    /// The front door's id.
    pub(super) id: String,
    /// The agent that opened it (`None`: anonymous).
    pub(super) agent: Option<String>,
    /// The upstream's own session id.
    pub(super) upstream_id: Option<HeaderValue>,
    /// The stdio server of this session (`--target`).
    pub(super) stdio: Option<Arc<StdioServer>>,
    last_used: Mutex<Instant>,
}

/// Why a request's session cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SessionError {
    /// The header is not one id (400).
    Malformed,
    /// No such session, or not the caller's (404: the client starts a new one).
    Unknown,
}

/// The sessions in force.
#[derive(Debug, Default)]
pub(super) struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The session a request names, if it names one, checked against the caller's agent.
    pub(super) fn find(&self, headers: &HeaderMap, agent: Option<&str>) -> Result<Option<Arc<Session>>, SessionError> {
        let id = match super::headers::single(headers, &SESSION_ID) {
            Ok(None) => return Ok(None),
            Ok(Some(id)) if !id.is_empty() && id.len() <= 128 => id,
            _ => return Err(SessionError::Malformed),
        };
        let session = self.map().get(id).cloned().ok_or(SessionError::Unknown)?;
        if session.agent.as_deref() != agent {
            tracing::warn!(
                session = %session.id,
                "a session id was presented by another agent than the one that opened it: answered as unknown"
            );
            return Err(SessionError::Unknown);
        }
        *session.last_used.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        Ok(Some(session))
    }

    /// Opens a session; `None` when [`MAX_SESSIONS`] are open and none is idle.
    pub(super) fn open(
        &self,
        agent: Option<&str>,
        upstream_id: Option<HeaderValue>,
        stdio: Option<Arc<StdioServer>>,
    ) -> Option<Arc<Session>> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).ok()?;
        let session = Arc::new(Session {
            id: hex::encode(bytes),
            agent: agent.map(str::to_owned),
            upstream_id,
            stdio,
            last_used: Mutex::new(Instant::now()),
        });
        let mut map = self.map();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| s.last_used.lock().unwrap_or_else(PoisonError::into_inner).elapsed() < IDLE);
            if map.len() >= MAX_SESSIONS {
                return None;
            }
        }
        map.insert(session.id.clone(), Arc::clone(&session));
        Some(session)
    }

    /// Ends a session (its stdio server, if any, stops once no request uses it).
    pub(super) fn close(&self, id: &str) -> Option<Arc<Session>> {
        self.map().remove(id)
    }

    /// Forgets the sessions unused for [`IDLE`]: what they were.
    pub(super) fn sweep(&self) -> Vec<Arc<Session>> {
        let mut gone = Vec::new();
        self.map().retain(|_, s| {
            let keep = s.last_used.lock().unwrap_or_else(PoisonError::into_inner).elapsed() < IDLE;
            if !keep {
                gone.push(Arc::clone(s));
            }
            keep
        });
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_only_by_its_agent() {
        let sessions = Sessions::default();
        let session = sessions.open(Some("ag_1"), None, None).unwrap();
        assert_eq!(session.id.len(), 64);
        let mut headers = HeaderMap::new();
        assert!(matches!(sessions.find(&headers, Some("ag_1")), Ok(None)));
        headers.insert(SESSION_ID, HeaderValue::from_str(&session.id).unwrap());
        assert!(sessions.find(&headers, Some("ag_1")).unwrap().is_some());
        assert_eq!(
            sessions.find(&headers, Some("ag_2")).unwrap_err(),
            SessionError::Unknown
        );
        assert_eq!(sessions.find(&headers, None).unwrap_err(), SessionError::Unknown);
        headers.insert(SESSION_ID, HeaderValue::from_static("nope"));
        assert_eq!(
            sessions.find(&headers, Some("ag_1")).unwrap_err(),
            SessionError::Unknown
        );
        headers.append(SESSION_ID, HeaderValue::from_static("twice"));
        assert_eq!(
            sessions.find(&headers, Some("ag_1")).unwrap_err(),
            SessionError::Malformed
        );
        assert!(sessions.close(&session.id).is_some());
        headers.insert(SESSION_ID, HeaderValue::from_str(&session.id).unwrap());
        assert_eq!(
            sessions.find(&headers, Some("ag_1")).unwrap_err(),
            SessionError::Unknown
        );
    }
}
