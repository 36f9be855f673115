//! Shared helpers for the end-to-end tests that run the real `aip-proxy` binary: a child process
//! with line-oriented, time-limited I/O, a scriptable fake MCP server, and a tiny HTTP client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long any single expected event may take before the test fails.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// The binary under test.
pub(crate) fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_aip-proxy")
}

/// A `Command` for the binary with the environment variables it reads cleared.
pub(crate) fn command() -> Command {
    let mut cmd = Command::new(bin());
    for var in ["AIP_POLICY", "AIP_POLICY_KEY", "AIP_PROXY_TOKEN", "AIP_LOG"] {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs the binary to completion (stdin closed), failing the test if it takes too long.
pub(crate) fn run<I, S>(args: I, cwd: Option<&Path>) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = command();
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    let child = cmd.spawn().expect("spawn aip-proxy");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(TIMEOUT * 3)
        .expect("aip-proxy did not finish in time")
        .expect("aip-proxy output")
}

/// A running proxy: newline-delimited messages over its stdin/stdout.
pub(crate) struct Proxy {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Vec<u8>>,
    stderr: Arc<Mutex<String>>,
}

impl Proxy {
    /// Starts the binary with `args` and extra environment variables.
    pub(crate) fn spawn<I, S>(args: I, envs: &[(&str, &str)]) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = command();
        cmd.args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn aip-proxy");
        let stdout = child.stdout.take().unwrap();
        let stderr_pipe = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                        }
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut reader = BufReader::new(stderr_pipe);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        Self {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
        }
    }

    /// The child's process id.
    pub(crate) fn child(&self) -> &Child {
        &self.child
    }

    /// What the proxy wrote on stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr contains `needle`.
    pub(crate) fn wait_stderr(&self, needle: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if self.stderr().contains(needle) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("stderr never mentioned {needle:?}; stderr:\n{}", self.stderr());
    }

    /// Sends one message (a newline is appended).
    pub(crate) fn send(&mut self, line: &str) {
        self.send_bytes(line.as_bytes());
    }

    /// Sends raw bytes followed by a newline.
    pub(crate) fn send_bytes(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin.write_all(bytes).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Hands the stdin pipe over (e.g. to a writer thread).
    pub(crate) fn take_stdin(&mut self) -> ChildStdin {
        self.stdin.take().expect("stdin already taken")
    }

    /// Closes the proxy's stdin: the end of the client's session.
    pub(crate) fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// The next line the proxy writes on stdout, as bytes without the newline.
    pub(crate) fn recv_bytes(&self) -> Vec<u8> {
        match self.lines.recv_timeout(TIMEOUT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!("no message from the proxy in time; stderr:\n{}", self.stderr()),
            Err(RecvTimeoutError::Disconnected) => {
                panic!("the proxy closed its stdout; stderr:\n{}", self.stderr())
            }
        }
    }

    /// The next line the proxy writes, as text.
    pub(crate) fn recv(&self) -> String {
        String::from_utf8(self.recv_bytes()).expect("the proxy wrote invalid UTF-8")
    }

    /// The next line, parsed.
    pub(crate) fn recv_json(&self) -> Value {
        let line = self.recv();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Sends `line` and returns the next message.
    pub(crate) fn call(&mut self, line: &str) -> Value {
        self.send(line);
        self.recv_json()
    }

    /// Asserts nothing arrives for `quiet`.
    pub(crate) fn assert_quiet(&self, quiet: Duration) {
        match self.lines.recv_timeout(quiet) {
            Ok(line) => panic!("unexpected message: {}", String::from_utf8_lossy(&line)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => panic!("the proxy closed its stdout"),
        }
    }

    /// Waits for the proxy to exit.
    pub(crate) fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the proxy did not exit in time; stderr:\n{}", self.stderr());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Closes stdin and waits for the exit.
    pub(crate) fn finish(&mut self) -> ExitStatus {
        self.close_stdin();
        self.wait()
    }

    /// Sends a signal to the proxy.
    pub(crate) fn signal(&self, signal: rustix::process::Signal) {
        rustix::process::kill_process(rustix::process::Pid::from_child(&self.child), signal).unwrap();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scriptable MCP server. Every line read is appended to `<dir>/seen.log` before anything is
/// answered. Requests are answered with `{"result":{"echo":<the request line>}}`, except:
/// - `tools/list`: `{"tools": <dir>/tools.json>}` (empty when the file is missing);
/// - `tools/call` `exit` `{code}`: exit with that status at once;
/// - `tools/call` `raw` `{line}` or `{hex}`: print `line` verbatim, or the bytes `hex` spells
///   (which need not be UTF-8), with no answer of its own;
/// - `tools/call` `emit` `{lines}`: print each line verbatim, then answer the call with the echo of
///   the next response (a message without method) the client sends;
/// - `tools/call` `size`: `{"len": <bytes of the request line>}`;
/// - `tools/call` `secret`: a text result holding an AWS access key id;
/// - `tools/call` `stderr` `{text}`: write `text` on stderr, then answer with the echo;
/// - `tools/call` `stall`: answer after 0.5 s, then stop reading stdin for 20 s.
/// - `tools/call` `slow` `{ms}`: answer with the echo after `ms` milliseconds;
/// - `tools/call` `big` `{n}`: answer with a result padded to at least `n` bytes;
///
/// Notifications are answered with a `notifications/message` notification echoing them. An
/// unparseable line gets a -32700 error with `id: null`. On EOF it writes `<dir>/eof` and exits 0;
/// on SIGTERM or SIGINT it writes the signal's name to `<dir>/terminated` and exits 0.
pub(crate) const FAKE_SERVER: &str = r#"
import json, os, signal, sys, threading, time
d = sys.argv[1]
seen = open(os.path.join(d, "seen.log"), "ab")
def out(line):
    if not isinstance(line, str):
        line = json.dumps(line)
    sys.stdout.buffer.write(line.encode("utf-8") + b"\n")
    sys.stdout.buffer.flush()
# A Python-level handler runs between bytecodes, so a signal landing just before a blocking read
# would wait for the next input; blocked signals taken by sigwait on a thread are never missed.
STOP = {signal.SIGTERM, signal.SIGINT}
signal.pthread_sigmask(signal.SIG_BLOCK, STOP)
def term():
    sig = signal.sigwait(STOP)
    open(os.path.join(d, "terminated"), "w").write(signal.Signals(sig).name)
    os._exit(0)
threading.Thread(target=term, daemon=True).start()
pending = None
while True:
    raw = sys.stdin.buffer.readline()
    if not raw:
        open(os.path.join(d, "eof"), "w").write("EOF")
        sys.exit(0)
    seen.write(raw)
    seen.flush()
    line = raw.rstrip(b"\n").decode("utf-8", "replace")
    try:
        msg = json.loads(line)
    except Exception:
        out({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "server: parse error"}})
        continue
    if not isinstance(msg, dict):
        out({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "server: not an object"}})
        continue
    method = msg.get("method")
    mid = msg.get("id")
    if method is None:
        if pending is not None:
            out({"jsonrpc": "2.0", "id": pending, "result": {"echo": line}})
            pending = None
        continue
    if "id" not in msg:
        out({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": line}})
        continue
    if method == "tools/list":
        path = os.path.join(d, "tools.json")
        tools = json.load(open(path)) if os.path.exists(path) else []
        out({"jsonrpc": "2.0", "id": mid, "result": {"tools": tools}})
        continue
    if method == "tools/call":
        params = msg.get("params") or {}
        name = params.get("name")
        args = params.get("arguments") or {}
        if name == "exit":
            os._exit(int(args.get("code", 0)))
        if name == "raw":
            if "hex" in args:
                sys.stdout.buffer.write(bytes.fromhex(args["hex"]) + b"\n")
                sys.stdout.buffer.flush()
            else:
                out(args["line"])
            continue
        if name == "emit":
            for l in args["lines"]:
                out(l)
            pending = mid
            continue
        if name == "size":
            out({"jsonrpc": "2.0", "id": mid, "result": {"len": len(raw.rstrip(b"\n"))}})
            continue
        if name == "stderr":
            sys.stderr.write(args["text"] + "\n")
            sys.stderr.flush()
            out({"jsonrpc": "2.0", "id": mid, "result": {"echo": line}})
            continue
        if name == "secret":
            out({"jsonrpc": "2.0", "id": mid, "result": {"content": [{"type": "text", "text": "aws_access_key_id = AKIAIOSFODNN7EXAMPLE"}]}})
            continue
        if name == "slow":
            time.sleep(args["ms"] / 1000)
            out({"jsonrpc": "2.0", "id": mid, "result": {"echo": line}})
            continue
        if name == "big":
            out({"jsonrpc": "2.0", "id": mid, "result": {"pad": "x" * args["n"]}})
            continue
        if name == "stall":
            time.sleep(0.5)
            out({"jsonrpc": "2.0", "id": mid, "result": {"echo": line}})
            time.sleep(20)
            os._exit(0)
    out({"jsonrpc": "2.0", "id": mid, "result": {"echo": line}})
"#;

/// A temporary directory with a policy, the fake server and an audit log path.
pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
}

impl Fixture {
    /// A fixture whose policy has the given `spec:` body (indented by two spaces).
    pub(crate) fn new(spec: &str) -> Self {
        let dir = tempfile::TempDir::new().unwrap();
        std::fs::write(dir.path().join("server.py"), FAKE_SERVER).unwrap();
        let fixture = Self { dir };
        fixture.write_policy(&policy_yaml(spec));
        fixture
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn policy(&self) -> PathBuf {
        self.path("policy.yaml")
    }

    pub(crate) fn audit(&self) -> PathBuf {
        self.path("audit.jsonl")
    }

    pub(crate) fn write_policy(&self, text: &str) {
        // Write-and-rename so that a concurrent reload never sees half a file.
        let tmp = self.path("policy.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.policy()).unwrap();
    }

    /// The tools the fake server lists.
    pub(crate) fn write_tools(&self, tools: &Value) {
        std::fs::write(self.path("tools.json"), tools.to_string()).unwrap();
    }

    /// The `--target` command running the fake server.
    pub(crate) fn target(&self) -> String {
        format!(
            "python3 -u {} {}",
            self.path("server.py").display(),
            self.dir.path().display()
        )
    }

    /// Starts the proxy over the fake server with an audit log and `extra` arguments.
    pub(crate) fn start(&self, extra: &[&str]) -> Proxy {
        self.start_with(extra, &[])
    }

    pub(crate) fn start_with(&self, extra: &[&str], envs: &[(&str, &str)]) -> Proxy {
        let mut args: Vec<String> = vec![
            "--policy".into(),
            self.policy().display().to_string(),
            "--target".into(),
            self.target(),
            "--audit".into(),
            self.audit().display().to_string(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        Proxy::spawn(args, envs)
    }

    /// Everything the fake server has read so far.
    pub(crate) fn seen(&self) -> String {
        std::fs::read_to_string(self.path("seen.log")).unwrap_or_default()
    }

    /// The audit records (read after the proxy exited, when everything is on disk).
    pub(crate) fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(self.audit())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// A full policy document around a `spec:` body.
pub(crate) fn policy_yaml(spec: &str) -> String {
    format!("apiVersion: aip.io/v1alpha3\nkind: AgentPolicy\nmetadata:\n  name: relay-test\nspec:\n{spec}")
}

/// A `tools/call` line.
pub(crate) fn tool_call(id: &str, name: &str, arguments: &Value) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{name}","arguments":{arguments}}}}}"#
    )
}

/// The `error.code` of a response.
pub(crate) fn error_code(message: &Value) -> i64 {
    message["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not an error response: {message}"))
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An HTTP reply.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One bodiless HTTP/1.1 exchange with a bearer token; connecting is retried until the server
/// is up.
pub(crate) fn http(addr: SocketAddr, method: &str, path: &str, token: &str) -> Reply {
    http_request(addr, method, path, Some(token), &[], None)
}

/// One hand-written HTTP/1.1 exchange over a real socket: optional bearer token, extra headers
/// and a body with its content type. Connecting is retried until the server is up.
pub(crate) fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Reply {
    let deadline = Instant::now() + TIMEOUT;
    let mut stream = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("cannot connect to {addr}: {e}"),
        }
    };
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let payload = match body {
        Some((content_type, bytes)) => {
            head.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                bytes.len()
            ));
            bytes
        }
        None => {
            head.push_str("Content-Length: 0\r\n");
            &[][..]
        }
    };
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading a large body, and close.
    let _ = stream.write_all(payload);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response: {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect::<Vec<_>>();
    assert!(
        !headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")),
        "this client reads only sized bodies"
    );
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}
