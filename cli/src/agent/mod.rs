//! `aip-agent`: the agent-side shim that lets an unmodified MCP client present AATs
//! (docs/architecture.md, "Tool call").
//!
//! `aip-agent --agent-dir DIR --issuer URL --audience AUD [--tools a,b] [user flags] -- <command…>`
//! or `… --upstream URL` (no command: a remote MCP front door, [`bridge`])
//! fetches the agent's AAT (exactly as `aip-ca token` does: same flags, same client), starts
//! the command, and relays newline-delimited JSON-RPC between the MCP client (our
//! stdin/stdout) and the command (its stdin/stdout), adding the AAT and a fresh per-call proof
//! to every `tools/call` and `tools/list` ([`relay`]). The AAT is renewed in the background
//! before it expires.
//!
//! Threads: one per relay direction (blocking reads, no async hop on the call path), one that
//! passes SIGINT and SIGTERM on to the command, and a one-worker tokio runtime for the issuer
//! client. The main thread waits for the command and exits with its status.

mod bridge;
mod relay;

use std::ffi::OsString;
use std::io::{self, BufReader};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use aip_api::agent::AgentClientError;
use aip_api::issuer::TokenFormat;
use clap::{CommandFactory as _, FromArgMatches as _, Parser};
use clap_complete::Shell;
use rustix::process::{Pid, Signal};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tokio::sync::watch;

use crate::commands::token::{ClientArgs, ENV_USER_API_KEY};
use crate::logging::LogArgs;
use crate::output::{CliError, warn};
use crate::passphrase::ENV_PASSPHRASE;
use relay::ClientOut;

/// Exit status when `aip-agent` cannot start: no AAT, or the command cannot be run.
const EXIT_STARTUP: u8 = 1;
/// How long to wait, once the command has exited, for the rest of its output to be relayed.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Buffer size of each relay direction.
const BUFFER: usize = 64 << 10;
/// Largest CA file read for `--upstream-ca`.
const MAX_CA_BYTES: u64 = 1 << 20;
/// Secrets of `aip-agent` the command does not inherit.
const WITHHELD_ENV: [&str; 2] = [ENV_USER_API_KEY, ENV_PASSPHRASE];

const AFTER_HELP: &str = "\
The command gets the client's messages on its stdin and answers on its stdout; its stderr is \
aip-agent's. Every tools/call and tools/list gets params._aip_aat and params._aip_proof; \
everything else passes unchanged, both ways. The AAT is renewed before it expires.

SIGINT and SIGTERM are passed on to the command (and its process group). The command does not \
inherit AIP_USER_API_KEY or AIP_PASSPHRASE.

With --upstream URL instead of a command, the client's messages go to a remote MCP front door \
(aip-proxy --serve) over Streamable HTTP, each with Authorization: DPoP and a DPoP proof bound \
to the call; --audience must then be the front door's resource URI.

Exit status: the command's (128+N if signal N ended it); 1 if aip-agent cannot get an AAT or \
start the command (the command is then not run). With --upstream: 0 once the client closes \
its side.";

/// Run an MCP server command for an unmodified MCP client, presenting the agent's AAT.
#[derive(Parser, Debug)]
#[command(
    name = "aip-agent",
    version,
    about = "aip-agent: run an MCP server command for an MCP client, adding the agent's AAT and \
             a per-call proof to every tools/call and tools/list",
    after_help = AFTER_HELP
)]
struct Args {
    #[command(flatten)]
    client: ClientArgs,
    /// A remote MCP front door (`aip-proxy --serve`) to send the client's messages to over
    /// Streamable HTTP, with DPoP proofs, instead of running a command.
    #[arg(long, value_name = "URL", conflicts_with = "command")]
    upstream: Option<String>,
    /// Trust exactly these CA certificates (PEM) for the front door's TLS certificate.
    #[arg(long, value_name = "FILE", requires = "upstream")]
    upstream_ca: Option<std::path::PathBuf>,
    /// Present this delegated AAT (`aip-ca delegate --out`), held by this agent, instead of
    /// asking the issuer for one; the agent's key signs the per-call proofs (and, with
    /// --upstream, the DPoP proofs). Not refreshed.
    #[arg(long, value_name = "FILE")]
    delegation_file: Option<std::path::PathBuf>,
    /// The command to run after `--` (the MCP server, or `aip-proxy` in front of it) and its
    /// arguments; started directly, without a shell.
    #[arg(last = true, required_unless_present = "upstream", value_name = "COMMAND")]
    command: Vec<OsString>,
    #[command(flatten)]
    log: LogArgs,
}

/// The id of `--completions`, which [`command`] adds: the flags [`Args`] requires are not
/// required with it (and other flags are ignored), so it is read before them.
const COMPLETIONS: &str = "completions";

/// Runs `aip-agent` on the process's arguments; the exit status to return.
pub fn main() -> ExitCode {
    crate::install_crypto_provider();
    let matches = command().get_matches();
    if let Some(shell) = matches.get_one::<Shell>(COMPLETIONS) {
        return match crate::manuals::print_completions(*shell, command(), "aip-agent") {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => error.report(),
        };
    }
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    args.log.init("warn");
    match run(&args) {
        Ok(code) => code,
        Err(error) => error.exit_code(EXIT_STARTUP).report(),
    }
}

/// The definition of `aip-agent`'s command line: what it parses, and its manual page and
/// completion scripts.
pub fn command() -> clap::Command {
    Args::command()
        .arg(
            clap::Arg::new(COMPLETIONS)
                .long(COMPLETIONS)
                .value_name("SHELL")
                .value_parser(clap::value_parser!(Shell))
                .help("Print the completion script of aip-agent for SHELL and exit (other flags are then ignored)"),
        )
        .mut_arg("agent_dir", |arg| {
            arg.required(false).required_unless_present(COMPLETIONS)
        })
        .mut_arg("audience", |arg| {
            arg.required(false).required_unless_present(COMPLETIONS)
        })
        .mut_arg("command", |arg| {
            arg.required_unless_present_any(["upstream", COMPLETIONS])
        })
}

fn run(args: &Args) -> Result<ExitCode, CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("cannot start: {e}")))?;
    if let Some(path) = &args.delegation_file {
        let delegated = args.client.delegated(path)?;
        return match &args.upstream {
            Some(url) => bridge_to(url, args.upstream_ca.as_deref(), Box::new(delegated), runtime),
            None => relay_command(args, runtime, delegated),
        };
    }
    let client = args.client.start(&runtime, TokenFormat::Jwt)?;
    if let Some(url) = &args.upstream {
        let refresher = client.clone();
        runtime.spawn(async move { refresher.run_refresh(std::future::pending()).await });
        runtime.spawn(report_refresh_failures(client.subscribe_errors()));
        return bridge_to(url, args.upstream_ca.as_deref(), Box::new(client), runtime);
    }
    let refresher = client.clone();
    runtime.spawn(async move { refresher.run_refresh(std::future::pending()).await });
    runtime.spawn(report_refresh_failures(client.subscribe_errors()));
    relay_command(args, runtime, client)
}

/// Runs the command, relaying the client's messages to it with `credentials` added to every
/// call, until it exits; its status.
fn relay_command(
    args: &Args,
    runtime: tokio::runtime::Runtime,
    credentials: impl relay::Credentials + Send + 'static,
) -> Result<ExitCode, CliError> {
    // From here on SIGINT and SIGTERM no longer end aip-agent: they are passed on to the
    // command, whose exit ends aip-agent. One that comes before the command runs is passed on
    // as soon as it does.
    let mut signals =
        Signals::new([SIGINT, SIGTERM]).map_err(|e| CliError::new(format!("cannot handle signals: {e}")))?;
    let mut child = spawn(&args.command)?;
    let (Some(command_in), Some(command_out)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(CliError::new("the command's stdio pipes are missing"));
    };
    let signal_handle = signals.handle();
    let pid = Pid::from_child(&child);
    let forwarder = thread::spawn(move || {
        for signal in signals.forever() {
            let signal = if signal == SIGINT { Signal::INT } else { Signal::TERM };
            if let Err(e) = rustix::process::kill_process_group(pid, signal) {
                warn(format_args!("cannot pass a signal on to the command: {e}"));
            }
        }
    });

    let client_out: Arc<ClientOut> = Arc::new(Mutex::new(Box::new(io::BufWriter::with_capacity(BUFFER, io::stdout()))));
    {
        let client_out = Arc::clone(&client_out);
        thread::spawn(move || {
            let stdin = BufReader::with_capacity(BUFFER, io::stdin().lock());
            let mut command_in = io::BufWriter::with_capacity(BUFFER, command_in);
            if let Err(e) = relay::client_to_command(stdin, &mut command_in, &client_out, &credentials) {
                report_relay_error("client → command", &e);
            }
            // Dropping `command_in` closes the command's stdin: it sees the end of the session.
        });
    }
    let (drained, drained_rx) = mpsc::channel();
    thread::spawn(move || {
        if let Err(e) = relay::command_to_client(BufReader::with_capacity(BUFFER, command_out), &client_out) {
            report_relay_error("command → client", &e);
        }
        let _ = drained.send(());
    });

    let status = child.wait();
    signal_handle.close();
    // The client may not read its last answers at once, or the command may have left a child
    // holding its stdout: wait a little, not forever. The client → command thread may still
    // be blocked on our stdin; returning from `main` ends it.
    let _ = drained_rx.recv_timeout(DRAIN_GRACE);
    runtime.shutdown_background();
    let _ = forwarder.join();
    status
        .map(exit_status)
        .map_err(|e| CliError::new(format!("cannot wait for the command: {e}")))
}

/// `--upstream`: the client bridged to a remote front door until it closes its side.
fn bridge_to(
    url: &str,
    ca: Option<&std::path::Path>,
    credentials: Box<dyn bridge::DpopCredentials>,
    runtime: tokio::runtime::Runtime,
) -> Result<ExitCode, CliError> {
    let ca_pem = match ca {
        Some(path) => {
            use std::io::Read as _;
            let mut pem = Vec::new();
            std::fs::File::open(path)
                .and_then(|file| file.take(MAX_CA_BYTES).read_to_end(&mut pem))
                .map_err(|e| CliError::new(format!("{}: {e}", path.display())))?;
            Some(pem)
        }
        None => None,
    };
    let bridged = runtime.block_on(bridge::run(url.to_owned(), credentials, ca_pem));
    runtime.shutdown_background();
    bridged.map_err(CliError::new)?;
    Ok(ExitCode::SUCCESS)
}

/// Starts `command` (program and arguments) with piped stdin and stdout, in a process group of
/// its own so that a terminal's Ctrl-C reaches it once, through us.
fn spawn(command: &[OsString]) -> Result<Child, CliError> {
    let Some((program, arguments)) = command.split_first() else {
        return Err(CliError::new("no command given").hint("put the MCP server command after `--`"));
    };
    let mut process = Command::new(program);
    process.args(arguments);
    for name in WITHHELD_ENV {
        process.env_remove(name);
    }
    process
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| CliError::new(format!("cannot start {}: {e}", program.to_string_lossy())))
}

/// The command's exit status as ours: its code, or 128 + the signal that ended it.
fn exit_status(status: ExitStatus) -> ExitCode {
    let code = status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .and_then(|code| u8::try_from(code).ok())
        .unwrap_or(EXIT_STARTUP);
    ExitCode::from(code)
}

/// One warning line per failed renewal of the AAT (the client keeps retrying). The error text
/// never holds the AAT or the user's credential.
async fn report_refresh_failures(mut errors: watch::Receiver<Option<Arc<AgentClientError>>>) {
    while errors.changed().await.is_ok() {
        let failure = errors.borrow_and_update().clone();
        if let Some(error) = failure {
            warn(format_args!("cannot renew the AAT (retrying): {error}"));
        }
    }
}

/// A relay direction that ended on an I/O error. A side that went away (broken pipe) is how a
/// session normally ends, and is not reported.
fn report_relay_error(direction: &str, error: &io::Error) {
    if error.kind() != io::ErrorKind::BrokenPipe {
        warn(format_args!("{direction}: {error}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_the_command_follows_the_double_dash() {
        command().debug_assert();
        let args = Args::try_parse_from([
            "aip-agent",
            "--agent-dir",
            "agent",
            "--audience",
            "files-proxy",
            "--tools",
            "read_file,list_directory",
            "--",
            "aip-proxy",
            "--policy",
            "agent.yaml",
        ])
        .unwrap();
        assert_eq!(args.command, ["aip-proxy", "--policy", "agent.yaml"]);
        let missing = Args::try_parse_from(["aip-agent", "--agent-dir", "a", "--audience", "b"]);
        assert!(missing.is_err(), "a command is required");
        let two_users = Args::try_parse_from([
            "aip-agent",
            "--agent-dir",
            "a",
            "--audience",
            "b",
            "--local-user",
            "--oidc-id-token-file",
            "t",
            "--",
            "cat",
        ]);
        assert!(two_users.is_err(), "one user authorization at most");
    }

    #[test]
    fn completions_need_none_of_the_required_flags() {
        let matches = command()
            .try_get_matches_from(["aip-agent", "--completions", "zsh"])
            .unwrap();
        assert_eq!(matches.get_one::<Shell>(COMPLETIONS), Some(&Shell::Zsh));
        let with_env_flags =
            command().try_get_matches_from(["aip-agent", "--completions", "bash", "--log-format", "json"]);
        assert!(
            with_env_flags.is_ok(),
            "flags that may come from the environment do not stop it"
        );
        let missing = command().try_get_matches_from(["aip-agent", "--audience", "b", "--", "cat"]);
        assert!(missing.is_err(), "--agent-dir is required without --completions");
        let matches = command()
            .try_get_matches_from(["aip-agent", "--agent-dir", "a", "--audience", "b", "--", "cat"])
            .unwrap();
        assert!(matches.get_one::<Shell>(COMPLETIONS).is_none());
        assert!(Args::from_arg_matches(&matches).is_ok());
    }

    #[test]
    fn the_log_format_is_a_flag() {
        let json = Args::try_parse_from([
            "aip-agent",
            "--agent-dir",
            "a",
            "--audience",
            "b",
            "--log-format",
            "json",
            "--",
            "cat",
        ]);
        assert!(json.is_ok());
        let wrong = Args::try_parse_from([
            "aip-agent",
            "--agent-dir",
            "a",
            "--audience",
            "b",
            "--log-format",
            "xml",
            "--",
            "cat",
        ]);
        assert!(wrong.is_err());
    }

    #[test]
    fn the_exit_status_is_the_commands() {
        for (raw, code) in [(0, 0), (3 << 8, 3), (255 << 8, 255), (15, 143), (9, 137)] {
            assert_eq!(exit_status(ExitStatus::from_raw(raw)), ExitCode::from(code), "{raw}");
        }
    }
}
