//! A stdio MCP server served over HTTP (`--serve ADDR --target "cmd"`): one process per MCP
//! session, started by its `initialize` and stopped when the session ends.
//!
//! Messages go to the process's stdin one line each. A thread reads its stdout: an answer goes
//! to the request waiting for its id; anything else the server sends (its own requests,
//! notifications) waits for the session's GET stream, up to [`MAX_QUEUED`] messages (the
//! oldest are dropped beyond). When the process exits, every request still waiting is told.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Child, ChildStdin};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{Notify, oneshot};

use crate::jsonrpc::Envelope;
use crate::state::PolicyHandle;
use crate::target::{filter_stderr_lines, spawn_target};

use super::exchange::id_key;

/// Server messages kept for a GET stream that is not open.
pub(super) const MAX_QUEUED: usize = 256;

/// One session's server process.
pub(super) struct StdioServer {
    child: Mutex<Child>,
    stdin: Mutex<Option<ChildStdin>>,
    routes: Arc<Routes>,
}

impl std::fmt::Debug for StdioServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdioServer").finish_non_exhaustive()
    }
}

/// Where the server's output goes.
#[derive(Default)]
struct Routes {
    state: Mutex<RouteState>,
    /// Wakes the GET stream when a message is queued or the server exits.
    queued: Notify,
}

#[derive(Default)]
struct RouteState {
    waiting: HashMap<String, oneshot::Sender<Vec<u8>>>,
    queue: VecDeque<Vec<u8>>,
    exited: bool,
}

impl Routes {
    fn state(&self) -> MutexGuard<'_, RouteState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why a message could not be delivered.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum StdioError {
    /// The process is gone.
    Exited,
    /// Writing to it failed.
    Write(String),
}

impl std::fmt::Display for StdioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exited => f.write_str("the server exited"),
            Self::Write(e) => write!(f, "the server's input cannot be written: {e}"),
        }
    }
}

impl StdioServer {
    /// Starts `command`; its stderr goes through DLP when the policy filters it.
    pub(super) fn start(command: &str, policy: &Arc<PolicyHandle>, max_message: usize) -> std::io::Result<Arc<Self>> {
        let filter = policy
            .current()
            .policy()
            .dlp()
            .is_some_and(|d| d.settings().filter_stderr);
        let mut child = spawn_target(command, filter)?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("the target's stdio pipes are missing"));
        };
        if let Some(stderr) = child.stderr.take() {
            let policy = Arc::clone(policy);
            std::thread::spawn(move || filter_stderr_lines(stderr, &policy));
        }
        let routes = Arc::new(Routes::default());
        let reader = Arc::clone(&routes);
        std::thread::spawn(move || read_output(BufReader::new(stdout), &reader, max_message));
        Ok(Arc::new(Self {
            child: Mutex::new(child),
            stdin: Mutex::new(Some(stdin)),
            routes,
        }))
    }

    /// Writes one message; for a request (`id` as JSON text), the receiver of its answer.
    pub(super) fn send(
        &self,
        message: &[u8],
        id: Option<&str>,
    ) -> Result<Option<oneshot::Receiver<Vec<u8>>>, StdioError> {
        let answer = match id {
            Some(id) => {
                let (tx, rx) = oneshot::channel();
                let mut state = self.routes.state();
                if state.exited {
                    return Err(StdioError::Exited);
                }
                state.waiting.insert(id_key(id), tx);
                Some(rx)
            }
            None => None,
        };
        let mut stdin = self.stdin.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(pipe) = stdin.as_mut() else {
            return Err(StdioError::Exited);
        };
        let written = tokio::task::block_in_place(|| {
            pipe.write_all(message)?;
            pipe.write_all(b"\n")?;
            pipe.flush()
        });
        written.map_err(|e| StdioError::Write(e.to_string()))?;
        Ok(answer)
    }

    /// The next message the server sent on its own; `None` once it exited.
    pub(super) async fn next_message(&self) -> Option<Vec<u8>> {
        loop {
            let notified = self.routes.queued.notified();
            {
                let mut state = self.routes.state();
                if let Some(message) = state.queue.pop_front() {
                    return Some(message);
                }
                if state.exited {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Stops the process (its input closed, then killed).
    pub(super) fn stop(&self) {
        drop(self.stdin.lock().unwrap_or_else(PoisonError::into_inner).take());
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for StdioServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server's output, line by line, until it ends.
fn read_output(mut reader: BufReader<std::process::ChildStdout>, routes: &Routes, max_message: usize) {
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(u64::try_from(max_message).unwrap_or(u64::MAX) + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.len() > max_message {
            tracing::warn!("the server wrote a message over {max_message} bytes: the session's server is stopped");
            break;
        }
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        if line.is_empty() {
            continue;
        }
        let answered = std::str::from_utf8(&line)
            .ok()
            .and_then(Envelope::parse)
            .and_then(|e| match e {
                Envelope {
                    method: None,
                    id: Some(id),
                    ..
                } => Some(id_key(id.get())),
                _ => None,
            });
        let mut state = routes.state();
        if let Some(waiting) = answered.and_then(|id| state.waiting.remove(&id)) {
            let _ = waiting.send(line.clone());
            continue;
        }
        if state.queue.len() == MAX_QUEUED {
            state.queue.pop_front();
            tracing::warn!("server messages are not being read (no GET stream): the oldest was dropped");
        }
        state.queue.push_back(line.clone());
        drop(state);
        routes.queued.notify_waiters();
    }
    let mut state = routes.state();
    state.exited = true;
    // Dropping the senders tells each waiting request.
    state.waiting.clear();
    drop(state);
    routes.queued.notify_waiters();
}
