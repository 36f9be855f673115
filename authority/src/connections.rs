//! How long a connection may take and how many may be open (`[connections]` in aip.toml), so
//! that slow or idle clients cannot hold the listener's descriptors: a bound on concurrent
//! connections, a deadline for the TLS handshake and for each request's header, and an idle
//! timeout on every connection (no byte read or written for that long closes it). The checks
//! live here; the acceptor that applies them is `aip_http::connections`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use aip_http::connections::ConnectionSettings;

/// `[connections]` in aip.toml.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionSection {
    /// Connections served at once; more wait (at most `header_read_timeout`) for one to end.
    /// Keep it below the process's descriptor limit.
    pub max_connections: u32,
    /// Time a client has to send a request's header (the first one from the moment it
    /// connects; later ones from the end of the previous answer).
    pub header_read_timeout: String,
    /// Time a connection may go without a byte read or written.
    pub idle_timeout: String,
    /// Time a client has to complete the TLS handshake.
    pub tls_handshake_timeout: String,
}

impl Default for ConnectionSection {
    fn default() -> Self {
        Self {
            max_connections: 1_024,
            header_read_timeout: "10s".into(),
            idle_timeout: "60s".into(),
            tls_handshake_timeout: "10s".into(),
        }
    }
}

impl ConnectionSection {
    /// The settings, with every member checked: `Err((member, message))` names the one at
    /// fault.
    pub fn settings(&self) -> Result<ConnectionSettings, (&'static str, String)> {
        let duration = |member: &'static str, text: &str, max: i64| {
            let seconds = aip_aat::clock::parse_duration(text).map_err(|m| (member, m))?;
            if !(1..=max).contains(&seconds) {
                return Err((member, format!("must be between 1 s and {max} s")));
            }
            Ok(Duration::from_secs(seconds.unsigned_abs()))
        };
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err((
                "connections.max_connections",
                format!("must be between 1 and 1000000 (got {})", self.max_connections),
            ));
        }
        let settings = ConnectionSettings {
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            header_read_timeout: duration("connections.header_read_timeout", &self.header_read_timeout, 600)?,
            idle_timeout: duration("connections.idle_timeout", &self.idle_timeout, 3_600)?,
            tls_handshake_timeout: duration("connections.tls_handshake_timeout", &self.tls_handshake_timeout, 600)?,
        };
        if settings.idle_timeout <= Duration::from_secs(15) {
            // The revocation stream writes a keep-alive every 15 s.
            return Err((
                "connections.idle_timeout",
                "must be longer than 15 s (event streams send a keep-alive every 15 s)".into(),
            ));
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_bad_values_name_their_member() {
        let settings = ConnectionSection::default().settings().unwrap();
        assert_eq!(settings.header_read_timeout, Duration::from_secs(10));
        assert_eq!(settings.max_connections, 1_024);
        let zero = ConnectionSection {
            max_connections: 0,
            ..ConnectionSection::default()
        };
        assert_eq!(zero.settings().unwrap_err().0, "connections.max_connections");
        let short = ConnectionSection {
            idle_timeout: "10s".into(),
            ..ConnectionSection::default()
        };
        assert_eq!(short.settings().unwrap_err().0, "connections.idle_timeout");
        let garbage = ConnectionSection {
            header_read_timeout: "soon".into(),
            ..ConnectionSection::default()
        };
        assert_eq!(garbage.settings().unwrap_err().0, "connections.header_read_timeout");
    }
}
