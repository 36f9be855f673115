//! How the CLI reports: results on stdout, one `error:` line (plus an optional `hint:`) on
//! stderr, and an exit status. Once a command has chosen JSON logs, its warnings and its error
//! are log events instead (docs/decisions.md, "Logs for machines").

use std::fmt::Display;
use std::io::Write as _;
use std::process::ExitCode;

/// Exit status for a command that ran but whose answer is "no" (e.g. an invalid token).
pub(crate) const EXIT_REJECTED: u8 = 1;
/// Exit status for bad usage, unreadable input, or failures to do the work.
pub(crate) const EXIT_FAILURE: u8 = 2;

/// A failure to report: one line, an optional hint, an exit status.
#[derive(Debug)]
pub(crate) struct CliError {
    message: String,
    hint: Option<String>,
    code: u8,
}

impl CliError {
    pub(crate) fn new(message: impl Display) -> Self {
        Self {
            message: message.to_string(),
            hint: None,
            code: EXIT_FAILURE,
        }
    }

    pub(crate) fn hint(mut self, hint: impl Display) -> Self {
        self.hint = Some(hint.to_string());
        self
    }

    pub(crate) fn exit_code(mut self, code: u8) -> Self {
        self.code = code;
        self
    }

    pub(crate) fn report(self) -> ExitCode {
        if aip_http::logs::json() {
            match &self.hint {
                Some(hint) => tracing::error!(target: aip_http::logs::NOTICE_TARGET, hint = %hint, "{}", self.message),
                None => tracing::error!(target: aip_http::logs::NOTICE_TARGET, "{}", self.message),
            }
            return ExitCode::from(self.code);
        }
        let mut stderr = std::io::stderr().lock();
        // One line each: flatten any newline a message might carry.
        let _ = writeln!(stderr, "error: {}", self.message.replace('\n', " "));
        if let Some(hint) = self.hint {
            let _ = writeln!(stderr, "hint: {}", hint.replace('\n', " "));
        }
        ExitCode::from(self.code)
    }
}

/// Prints a JSON value to stdout, pretty when `pretty`.
pub(crate) fn print_json(value: &serde_json::Value, pretty: bool) -> Result<(), CliError> {
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    }
    .map_err(|e| CliError::new(format!("cannot format output: {e}")))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").map_err(|e| CliError::new(format!("cannot write output: {e}")))
}

/// Prints a line to stdout.
pub(crate) fn print_line(line: impl Display) -> Result<(), CliError> {
    writeln!(std::io::stdout().lock(), "{line}").map_err(|e| CliError::new(format!("cannot write output: {e}")))
}

/// Prints a `warning:` line to stderr (a `warn` event when logs are JSON).
pub(crate) fn warn(message: impl Display) {
    if aip_http::logs::json() {
        tracing::warn!(target: aip_http::logs::NOTICE_TARGET, "{message}");
    } else {
        let _ = writeln!(std::io::stderr().lock(), "warning: {message}");
    }
}

/// A time as RFC 3339 text.
pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// A single-threaded runtime for a client command.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("cannot start: {e}")))
}
