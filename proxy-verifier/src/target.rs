//! The wrapped MCP server as a process: starting it (directly, or under `/bin/sh -c` when the
//! command needs a shell), its stderr through DLP, and its exit status. Used by the stdio
//! relay (one process for the proxy's life) and by the front door (one per MCP session).

use std::io::{self, BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};

use crate::dlp::Direction;
use crate::state::PolicyHandle;

/// Starts `target` with piped stdin and stdout (and stderr when `pipe_stderr`), in its own
/// process group.
pub(crate) fn spawn_target(target: &str, pipe_stderr: bool) -> io::Result<Child> {
    if target.trim().is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the target command is empty",
        ));
    }
    // A plain command line is started directly, so that signals and the exit status are the
    // server's own; anything that needs a shell runs under /bin/sh -c in its own process group,
    // so that a forwarded signal reaches the server and not only the shell.
    let mut command = match plain_words(target) {
        Some(words) => {
            let mut command = Command::new(words[0]);
            command.args(&words[1..]);
            command
        }
        None => {
            let mut command = Command::new("/bin/sh");
            command.arg("-c").arg(target);
            command
        }
    };
    command
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(if pipe_stderr { Stdio::piped() } else { Stdio::inherit() })
        .spawn()
}

/// The words of a command line that needs no shell: no quoting, expansion, redirection or
/// operators. `None` sends the line to /bin/sh.
fn plain_words(target: &str) -> Option<Vec<&str>> {
    const SHELL: &[char] = &[
        '|', '&', ';', '<', '>', '(', ')', '$', '`', '\\', '"', '\'', '*', '?', '[', ']', '#', '~', '=', '%', '{', '}',
        '!',
    ];
    if target.contains(SHELL) || target.contains('\n') {
        return None;
    }
    const BUILTINS: &[&str] = &[
        "exec", "cd", ".", "source", "export", "set", "unset", "eval", "exit", "ulimit", "umask", "if", "for", "while",
        "until", "case", "trap", "wait",
    ];
    let words: Vec<&str> = target.split_whitespace().collect();
    match words.first() {
        Some(first) if !BUILTINS.contains(first) => Some(words),
        _ => None,
    }
}

pub(crate) fn wait(child: &mut Child) -> Option<ExitStatus> {
    match child.wait() {
        Ok(status) => Some(status),
        Err(e) => {
            tracing::error!("could not wait for the target: {e}");
            None
        }
    }
}

pub(crate) fn exit_code(status: Option<ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(status) => status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1),
        None => 1,
    }
}

/// With `dlp.filter_stderr`, the server's stderr lines pass through DLP before reaching ours.
pub(crate) fn filter_stderr_lines(stderr: impl io::Read, handle: &PolicyHandle) {
    let mut reader = BufReader::new(stderr);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let engine = handle.current();
        let out = engine
            .policy()
            .dlp()
            .and_then(|d| d.redact_text(&line, Direction::Response).map(|(t, _)| t));
        let text = out.as_deref().unwrap_or(&line);
        let mut err = io::stderr().lock();
        let _ = io::Write::write_all(&mut err, text.as_bytes());
    }
}
