//! Logs for long-running commands: to stderr, filtered by `AIP_LOG` (default `info`).

/// Installs the log subscriber once.
pub(crate) fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AIP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
}
