//! How replicas learn of each other's new revocation list versions at once: a write that
//! publishes a version ([`crate::Lock::publishing`]) sends `NOTIFY` on [`VERSION_CHANNEL`] in
//! its own transaction (PostgreSQL delivers it when, and only if, the transaction commits),
//! and [`Database::watch_versions`] listens for it. On SQLite nothing is sent: replicas of one
//! SQLite file poll.

use std::time::Duration;

use sqlx::postgres::PgListener;

use crate::{Database, Dialect, Script};

/// The PostgreSQL channel of revocation list versions; the payload is the version.
pub(crate) const VERSION_CHANNEL: &str = "aip_revocation_version";

/// How long the watcher waits before connecting again after a failure.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Adds the announcement of list version `version` to `script`, the last statements of the
/// write that publishes it (nothing on SQLite).
pub(crate) fn announce(script: &mut Script, version: u64) {
    if script.dialect() != Dialect::Postgres {
        return;
    }
    let (channel, payload) = (script.param(), script.param());
    script.push(format!("SELECT pg_notify({channel}, {payload})"));
    script.bind(VERSION_CHANNEL).bind(version.to_string());
}

impl Database {
    /// Calls `wake` whenever another replica (or this process) commits a new revocation list
    /// version, and whenever one may have been missed (after connecting or reconnecting), for
    /// as long as the future runs. On PostgreSQL it keeps a connection of its own listening on
    /// [`VERSION_CHANNEL`], reconnecting after failures; on SQLite it returns at once and
    /// callers poll.
    pub async fn watch_versions(&self, wake: &(dyn Fn() + Send + Sync)) {
        let Some(url) = self.listen_url.as_deref() else {
            return;
        };
        loop {
            match PgListener::connect(url).await {
                Ok(mut listener) => match listener.listen(VERSION_CHANNEL).await {
                    Ok(()) => loop {
                        // First for whatever was committed before the LISTEN took effect, then
                        // once per notice.
                        wake();
                        match listener.try_recv().await {
                            // A notice, or a lost connection (notices may have been lost
                            // meanwhile; the listener reconnects on the next call).
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "listening for revocation versions failed; reconnecting");
                                break;
                            }
                        }
                    },
                    Err(e) => tracing::warn!(error = %e, "cannot listen for revocation versions; retrying"),
                },
                Err(e) => tracing::warn!(error = %e, "cannot connect to listen for revocation versions; retrying"),
            }
            tokio::time::sleep(RECONNECT_DELAY).await;
        }
    }
}
