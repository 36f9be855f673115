//! How long a connection may take and how many may be open (`[connections]` in aip.toml), so
//! that slow or idle clients cannot hold the listener's descriptors: a bound on concurrent
//! connections, a deadline for the TLS handshake and for each request's header, and an idle
//! timeout on every connection (no byte read or written for that long closes it).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

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

/// The checked `[connections]` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// Connections served at once.
    pub max_connections: usize,
    /// See [`ConnectionSection::header_read_timeout`].
    pub header_read_timeout: Duration,
    /// See [`ConnectionSection::idle_timeout`].
    pub idle_timeout: Duration,
    /// See [`ConnectionSection::tls_handshake_timeout`].
    pub tls_handshake_timeout: Duration,
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

/// The acceptor that admits a connection when there is room for it, within the header
/// deadline, and watches it for idleness from then on (TLS handshake included, when a TLS
/// acceptor runs over it).
#[derive(Clone, Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    settings: ConnectionSettings,
}

impl Admission {
    /// Room for `settings.max_connections` connections.
    pub fn new(settings: ConnectionSettings) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(settings.max_connections)),
            settings,
        }
    }
}

impl<I, S> axum_server::accept::Accept<I, S> for Admission
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Send + 'static,
{
    type Stream = Watched<I>;
    type Service = S;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Watched<I>, S)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let slots = self.slots.clone();
        let settings = self.settings;
        Box::pin(async move {
            let slot = tokio::time::timeout(settings.header_read_timeout, slots.acquire_owned())
                .await
                .map_err(|_| io::Error::other("the connection limit was reached"))?
                .map_err(io::Error::other)?;
            Ok((Watched::new(stream, settings.idle_timeout, slot), service))
        })
    }
}

/// A connection that fails with `TimedOut` once it has gone `idle` without a byte read or
/// written, and holds its slot while open.
#[derive(Debug)]
pub struct Watched<I> {
    inner: I,
    idle: Duration,
    last: Instant,
    alarm: Pin<Box<Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl<I> Watched<I> {
    fn new(inner: I, idle: Duration, slot: OwnedSemaphorePermit) -> Self {
        let last = Instant::now();
        Self {
            inner,
            idle,
            last,
            alarm: Box::pin(tokio::time::sleep_until(last + idle)),
            _slot: slot,
        }
    }

    /// Some progress was made.
    fn active(&mut self) {
        self.last = Instant::now();
    }

    /// Whether the connection has been idle too long; re-arms the alarm otherwise (the alarm
    /// is moved only when it rings, not on every read and write).
    fn poll_idle<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        loop {
            if self.alarm.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = self.last + self.idle;
            if due <= Instant::now() {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "idle connection")));
            }
            self.alarm.as_mut().reset(due);
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.active();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx),
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(result) => {
                if result.as_ref().is_ok_and(|n| *n > 0) {
                    this.active();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                if result.as_ref().is_ok_and(|n| *n > 0) {
                    this.active();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.poll_idle(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
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

    #[tokio::test]
    async fn an_idle_connection_times_out_and_an_active_one_does_not() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let slots = Arc::new(Semaphore::new(2));
        let (client, server) = tokio::io::duplex(64);
        let mut watched = Watched::new(
            server,
            Duration::from_millis(300),
            slots.clone().try_acquire_owned().unwrap(),
        );
        let mut client = client;
        let mut byte = [0u8; 1];
        // Activity every 200 ms keeps it open past 300 ms.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            client.write_all(b"x").await.unwrap();
            watched.read_exact(&mut byte).await.unwrap();
        }
        assert_eq!(slots.available_permits(), 1);
        let error = watched.read_exact(&mut byte).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        drop(watched);
        assert_eq!(slots.available_permits(), 2, "the slot is given back");
    }
}
