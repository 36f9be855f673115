//! How long a connection may take and how many may be open, so that slow or idle clients
//! cannot hold a listener's descriptors: a bound on concurrent connections, a deadline for the
//! TLS handshake and for each request's header, and an idle timeout on every connection (no
//! byte read or written for that long closes it). The authority (`[connections]` in aip.toml)
//! and the proxy's MCP front door serve through the same [`Admission`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// How many connections may be open and how slow they may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time a client has to send a request's header (the first one from the moment it
    /// connects; later ones from the end of the previous answer).
    pub header_read_timeout: Duration,
    /// Time a connection may go without a byte read or written.
    pub idle_timeout: Duration,
    /// Time a client has to complete the TLS handshake.
    pub tls_handshake_timeout: Duration,
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
