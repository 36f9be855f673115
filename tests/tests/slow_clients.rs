//! Slow and idle clients against a real `aip-ca serve` limited to 256 descriptors: more
//! silent, half-sent and idle connections than it has descriptors, over plain HTTP and over
//! TLS, and `/health` is still answered; `Expect: 100-continue` with a body past the limit is
//! refused at once; SIGTERM with an open event stream stops the process at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use aip_tests::Server;

/// How many slow connections each test opens: more than the server's 256 descriptors.
const SLOW: usize = 300;
/// How long `/health` may take behind them: the header and handshake deadlines (10 s by
/// default) plus room for a loaded machine.
const PATIENCE: Duration = Duration::from_secs(90);

fn address(url: &str) -> SocketAddr {
    url.split("://").nth(1).unwrap().parse().unwrap()
}

/// Lowers the server's descriptor limit to 256.
fn limit_descriptors(server: &Server) {
    let status = Command::new("prlimit")
        .args(["--pid", &server.pid().to_string(), "--nofile=256:256"])
        .status()
        .expect("prlimit");
    assert!(status.success());
}

/// Opens `SLOW` connections to `addr` and sends each one of `openings` (in turn) without
/// finishing it; the connections that could be made.
fn slow_connections(addr: SocketAddr, openings: &[&[u8]]) -> Vec<TcpStream> {
    (0..SLOW)
        .filter_map(|n| {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
            let _ = stream.write_all(openings[n % openings.len()]);
            Some(stream)
        })
        .collect()
}

/// `GET /health` with curl (`-k` for TLS): whether it answered `{"status":"ok"}`, and when.
fn health(url: &str) -> (bool, Duration) {
    let started = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "-k", "--max-time", &PATIENCE.as_secs().to_string()])
        .arg(format!("{url}/health"))
        .output()
        .expect("curl");
    (
        String::from_utf8_lossy(&out.stdout) == r#"{"status":"ok"}"#,
        started.elapsed(),
    )
}

fn assert_health_answered_despite_slow_clients(server: &Server, openings: &[&[u8]]) {
    limit_descriptors(server);
    let slow = slow_connections(address(&server.url), openings);
    assert!(slow.len() >= 250, "only {} connections made", slow.len());
    let (answered, after) = health(&server.url);
    assert!(
        answered,
        "/health unanswered after {after:?} behind {} slow connections",
        slow.len()
    );
    eprintln!(
        "/health answered after {after:?} behind {} slow connections",
        slow.len()
    );
    drop(slow);
}

#[test]
fn slow_clients_over_plain_http_do_not_hold_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("aip");
    let server = Server::start(&["--dir", dir.to_str().unwrap(), "--insecure-no-passphrase"]);
    // Silent, half a header, and a whole request and then nothing more (kept alive).
    let openings: [&[u8]; 3] = [
        b"",
        b"GET /health HTTP/1.1\r\nHost: x\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    assert_health_answered_despite_slow_clients(&server, &openings);
}

/// A self-signed certificate for 127.0.0.1 (the client does not check it: `curl -k`).
fn self_signed(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-days",
            "1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    (cert.to_str().unwrap().to_owned(), key.to_str().unwrap().to_owned())
}

#[test]
fn slow_clients_over_tls_do_not_hold_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("aip");
    let (cert, key) = self_signed(tmp.path());
    let server = Server::start(&[
        "--dir",
        dir.to_str().unwrap(),
        "--insecure-no-passphrase",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    assert!(server.url.starts_with("https://"), "{}", server.url);
    // Silent, and the first bytes of a TLS record (a handshake that never completes).
    let openings: [&[u8]; 2] = [b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"];
    assert_health_answered_despite_slow_clients(&server, &openings);
}

#[test]
fn expect_continue_with_an_oversized_body_is_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        "--dir",
        tmp.path().join("aip").to_str().unwrap(),
        "--insecure-no-passphrase",
    ]);
    let mut stream = TcpStream::connect(address(&server.url)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
        .write_all(
            b"POST /v1/challenge HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 10000000\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
    // No body is sent: the first answer must be the refusal, not `100 Continue`.
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 413"), "{status:?}");
    let mut rest = String::new();
    while reader.read_line(&mut rest).is_ok_and(|n| n > 0) && !rest.contains("}") {}
    assert!(rest.contains(r#""error":"invalid_request""#), "{rest}");
}

#[test]
fn sigterm_with_an_open_event_stream_stops_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        "--dir",
        tmp.path().join("aip").to_str().unwrap(),
        "--insecure-no-passphrase",
    ]);
    let token = server.admin_token();
    let mut stream = TcpStream::connect(address(&server.url)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream
        .write_all(
            format!("GET /v1/revocations/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status:?}");
    let mut line = String::new();
    let mut event_stream = false;
    while reader.read_line(&mut line).unwrap() > 2 {
        event_stream |= line.to_ascii_lowercase().starts_with("content-type: text/event-stream");
        line.clear();
    }
    assert!(event_stream, "not an event stream");

    let started = Instant::now();
    let exit = server.terminate();
    let took = started.elapsed();
    assert!(exit.success(), "{exit:?}");
    // Well under the 10 s grace that requests in flight get, with room for a loaded machine.
    assert!(took < Duration::from_secs(4), "stopped after {took:?}");
    eprintln!("stopped {took:?} after SIGTERM with an open event stream");
}
