//! The replay cache shared across hosts: a Redis server (`aat.replay_store: redis://…`).
//!
//! Each identifier is one key, `aip:replay:<hex SHA-256 of scope ‖ id>`, written with
//! `SET key 1 NX PX <ms>`: Redis applies it atomically, so exactly one proxy of all those sharing
//! the server records an identifier, and the key expires on its own when the identifier can no
//! longer be accepted. The client is synchronous: the relay checks calls on OS threads, and the
//! HTTP API runs its checks on the blocking pool. Any failure (unreachable, timeout, an error
//! reply) refuses the call ([`ReplayError::Unavailable`]); nothing is accepted unchecked.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use aip_aat::replay::{DEFAULT_MIN_RETENTION_SECS, ReplayCache, ReplayError, ReplayScope};

/// How long connecting, sending or waiting for an answer may take.
const TIMEOUT: Duration = Duration::from_secs(1);
/// Connections kept open for reuse.
const MAX_IDLE: usize = 8;
/// The prefix of every key.
const KEY_PREFIX: &str = "aip:replay:";

/// A [`ReplayCache`] on a Redis server.
pub struct RedisReplayStore {
    client: redis::Client,
    /// `host:port/db`, for logs (never the password).
    name: String,
    idle: Mutex<Vec<redis::Connection>>,
}

impl std::fmt::Debug for RedisReplayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisReplayStore")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RedisReplayStore {
    /// A store on the server at `url` (`redis://[user:password@]host:port[/db]`); `name` is how
    /// logs call it. Connects on first use.
    pub fn new(url: &str, name: String) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("{name}: {}", e.category()))?;
        Ok(Self {
            client,
            name,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// How logs name the server.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let connection = self.client.get_connection_with_timeout(TIMEOUT)?;
        connection.set_read_timeout(Some(TIMEOUT))?;
        connection.set_write_timeout(Some(TIMEOUT))?;
        Ok(connection)
    }

    /// `SET key 1 NX PX ms` on `connection`: `true` when the key was set.
    fn set_new(connection: &mut redis::Connection, key: &str, millis: i64) -> redis::RedisResult<bool> {
        let reply: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(millis)
            .query(connection)?;
        Ok(reply.is_some())
    }
}

impl ReplayCache for RedisReplayStore {
    fn check_and_record(&self, scope: ReplayScope, id: &str, expires_at: i64, now: i64) -> Result<(), ReplayError> {
        let key = format!("{KEY_PREFIX}{}", hex::encode(scope.digest(id)));
        let expiry = expires_at.max(now.saturating_add(DEFAULT_MIN_RETENTION_SECS));
        // Through the end of the expiry second.
        let millis = expiry.saturating_sub(now).saturating_add(1).saturating_mul(1000);
        let pooled = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let reused = pooled.is_some();
        let outcome = match pooled {
            Some(mut connection) => match Self::set_new(&mut connection, &key, millis) {
                // A kept connection may have been closed by the server meanwhile: one more try
                // on a new one. Had the first SET arrived, the second reports a replay: a
                // refusal, never a double acceptance.
                Err(e) if e.is_connection_dropped() || e.is_io_error() => self
                    .connect()
                    .and_then(|mut c| Self::set_new(&mut c, &key, millis).map(|set| (set, c))),
                other => other.map(|set| (set, connection)),
            },
            None => self
                .connect()
                .and_then(|mut c| Self::set_new(&mut c, &key, millis).map(|set| (set, c))),
        };
        match outcome {
            Ok((set, connection)) => {
                let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                if idle.len() < MAX_IDLE {
                    idle.push(connection);
                }
                if set { Ok(()) } else { Err(ReplayError::Replayed) }
            }
            Err(e) => {
                tracing::error!(
                    reused,
                    "replay store redis://{} unavailable ({e}): refusing calls whose freshness it cannot prove",
                    self.name
                );
                Err(ReplayError::Unavailable)
            }
        }
    }
}
