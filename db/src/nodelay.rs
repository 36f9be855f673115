//! `TCP_NODELAY` on PostgreSQL connections.
//!
//! sqlx 0.9.0 leaves Nagle's algorithm on for the TCP connections it opens (sqlx issue 4335,
//! fixed upstream after that release). A message larger than the socket's send buffer — a
//! group commit of a few dozen issuances is one — then goes out in two writes, and the second
//! waits for the server to acknowledge the first, which Linux delays by 40 ms. Measured on
//! loopback: a 40 ms stall on every large batch, against none over a Unix socket.
//!
//! sqlx does not hand out its socket, so each new connection asks the server for the port it
//! connected from (`inet_client_port()`), finds the process's TCP sockets bound to that local
//! port, and sets the option on each through a duplicate of its descriptor (`pidfd_getfd` on
//! the process itself; the duplicate shares the socket and is closed at once). Where that is
//! not possible (not Linux, a sandbox that forbids the call, an address translated between
//! here and the server), the connection is used as it is, and the reason is logged at debug
//! level. Remove this once a sqlx release sets the option itself.

use sqlx::AnyConnection;

/// Sets `TCP_NODELAY` on the socket of `conn`, a new PostgreSQL connection, if it is a TCP
/// connection. Never fails: a server that cannot say the port (one that only speaks
/// PostgreSQL's protocol, say) leaves the connection as it is.
pub(super) async fn set_nodelay(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    let port: Option<i32> = match sqlx::query_scalar("SELECT inet_client_port()")
        .fetch_one(&mut *conn)
        .await
    {
        Ok(port) => port,
        Err(e) => {
            tracing::debug!(error = %e, "TCP_NODELAY not set: the server does not report the client port");
            return Ok(());
        }
    };
    // NULL over a Unix socket, where Nagle's algorithm does not apply.
    let Some(port) = port.and_then(|p| u16::try_from(p).ok()) else {
        return Ok(());
    };
    match sockets_on_port(port) {
        Ok(0) => tracing::debug!(
            port,
            "TCP_NODELAY not set: no socket of this process has the local port"
        ),
        Ok(_) => {}
        Err(e) => tracing::debug!(port, error = %e, "TCP_NODELAY not set"),
    }
    Ok(())
}

/// Sets `TCP_NODELAY` on every TCP socket of this process bound to local port `port`;
/// returns how many there were.
#[cfg(target_os = "linux")]
fn sockets_on_port(port: u16) -> std::io::Result<usize> {
    each_socket_on_port(port, |socket| rustix::net::sockopt::set_tcp_nodelay(socket, true))
}

/// Calls `f` with (a duplicate of) every TCP socket of this process bound to local port
/// `port`; returns how many there were.
#[cfg(target_os = "linux")]
fn each_socket_on_port(
    port: u16,
    mut f: impl FnMut(&std::os::fd::OwnedFd) -> rustix::io::Result<()>,
) -> std::io::Result<usize> {
    use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};

    let process = pidfd_open(getpid(), PidfdFlags::empty())?;
    let mut found = 0;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // Only sockets; the descriptor may have been closed since the listing.
        let is_socket = std::fs::read_link(entry.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        let Ok(socket) = pidfd_getfd(&process, fd, PidfdGetfdFlags::empty()) else {
            continue;
        };
        let stream = rustix::net::sockopt::socket_type(&socket).is_ok_and(|t| t == rustix::net::SocketType::STREAM);
        let local = rustix::net::getsockname(&socket)
            .ok()
            .and_then(|address| std::net::SocketAddr::try_from(address).ok());
        if stream && local.is_some_and(|address| address.port() == port) {
            f(&socket)?;
            found += 1;
        }
    }
    Ok(found)
}

#[cfg(not(target_os = "linux"))]
fn sockets_on_port(_port: u16) -> std::io::Result<usize> {
    Err(std::io::Error::other("only implemented on Linux"))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::net::{TcpListener, TcpStream, UdpSocket};

    use rustix::net::sockopt::tcp_nodelay;
    use sqlx::any::AnyPoolOptions;

    use super::{each_socket_on_port, set_nodelay, sockets_on_port};

    #[test]
    fn the_socket_on_the_port_gets_the_option() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert!(!client.nodelay().unwrap());
        let port = client.local_addr().unwrap().port();
        // A datagram socket on the same port number is not a TCP socket and is left alone.
        let _datagram = UdpSocket::bind(("127.0.0.1", port)).unwrap();
        assert!(sockets_on_port(port).unwrap() >= 1);
        assert!(client.nodelay().unwrap());
        // The peer's socket has another local port and keeps its setting.
        assert!(!server.nodelay().unwrap());
        assert_eq!(sockets_on_port(0).unwrap(), 0, "no socket is bound to port 0");
    }

    /// A real PostgreSQL connection made with the hook has the option set. Skipped without
    /// `AIP_TEST_POSTGRES_URL`, except under `CI`, where it fails.
    #[tokio::test]
    async fn postgres_connections_get_the_option() {
        let Ok(url) = std::env::var("AIP_TEST_POSTGRES_URL") else {
            assert!(std::env::var_os("CI").is_none(), "AIP_TEST_POSTGRES_URL is not set");
            eprintln!("skipped: AIP_TEST_POSTGRES_URL is not set");
            return;
        };
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .after_connect(|conn, _| Box::pin(set_nodelay(conn)))
            .connect(&url)
            .await
            .unwrap();
        let port: i32 = sqlx::query_scalar("SELECT inet_client_port()")
            .fetch_one(&pool)
            .await
            .unwrap();
        let mut on = Vec::new();
        let found = each_socket_on_port(u16::try_from(port).unwrap(), |socket| {
            on.push(tcp_nodelay(socket)?);
            Ok(())
        })
        .unwrap();
        assert!(found >= 1, "the connection's socket is found");
        assert!(on.iter().all(|&set| set), "{on:?}");
    }
}
