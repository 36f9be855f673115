//! How the long-running programs (`aip-ca serve`, `aip-proxy`, `aip-agent`) log: to stderr,
//! filtered by `AIP_LOG`, as text for people or as one JSON object per line for machines
//! (`--log-format json`, `AIP_LOG_FORMAT`).
//!
//! Text logs are coloured only when stderr is a terminal; JSON logs never are. In JSON, the
//! event's fields are at the top level (`timestamp`, `level`, `target`, `message`, …) beside
//! `span` and `spans`, the spans it happened in (for the authority's requests, the
//! `request` span with its `request_id`: [`crate::request_id`]).
//!
//! Notices — where a program listens, its warnings and its last error — are written
//! whatever `AIP_LOG` says: as they always were in text, as JSON objects (target
//! [`NOTICE_TARGET`]) in JSON, so that every line of a JSON log parses.

use std::fmt;
use std::io::{IsTerminal as _, Write as _};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

/// The environment variable holding the log filter (`tracing_subscriber`'s `EnvFilter`
/// syntax, e.g. `info` or `warn,aip_http=debug`).
pub const ENV_LOG: &str = "AIP_LOG";
/// The environment variable holding the log format (`text` or `json`), under the flag.
pub const ENV_LOG_FORMAT: &str = "AIP_LOG_FORMAT";
/// The target of notices (see the module's documentation): always enabled.
pub const NOTICE_TARGET: &str = "aip::notice";

/// Whether the installed log subscriber writes JSON.
static JSON: AtomicBool = AtomicBool::new(false);

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, coloured when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line, never coloured.
    Json,
}

impl LogFormat {
    /// The names the flag and `AIP_LOG_FORMAT` take, in the order of the variants.
    pub const NAMES: [&'static str; 2] = ["text", "json"];
}

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(UnknownLogFormat),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// A log format name other than `text` and `json`.
#[derive(Debug, thiserror::Error)]
#[error("the log format must be text or json")]
pub struct UnknownLogFormat;

/// Installs the process's log subscriber (once; later calls do nothing): to stderr, in
/// `format`, filtered by `AIP_LOG` or else by `default_filter`.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env(ENV_LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let filter = match format!("{NOTICE_TARGET}=info").parse() {
        Ok(notices) => filter.add_directive(notices),
        Err(_) => filter,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_ansi(false).try_init(),
    };
    if installed.is_ok() && format == LogFormat::Json {
        JSON.store(true, Ordering::Relaxed);
    }
}

/// Whether logs are written as JSON (the subscriber [`init`] installed).
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Writes a notice: `text` alone on a line of stderr, or in JSON logs an `info` event.
pub fn notice(text: impl fmt::Display) {
    if json() {
        tracing::info!(target: NOTICE_TARGET, "{text}");
    } else {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_by_name_and_print_the_same() {
        for (name, format) in LogFormat::NAMES.iter().zip([LogFormat::Text, LogFormat::Json]) {
            assert_eq!(name.parse::<LogFormat>().unwrap(), format);
            assert_eq!(format.to_string(), *name);
        }
        for wrong in ["", "JSON", "yaml", "json "] {
            assert!(wrong.parse::<LogFormat>().is_err(), "{wrong:?}");
        }
        assert_eq!(LogFormat::default(), LogFormat::Text);
    }
}
