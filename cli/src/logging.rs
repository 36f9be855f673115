//! Logs for long-running commands (`aip-ca serve`, `aip-agent`): to stderr, filtered by
//! `AIP_LOG`, as text or JSON lines (`--log-format`, `AIP_LOG_FORMAT`); the subscriber is
//! [`aip_http::logs`]'s, the one `aip-proxy` installs too.

use aip_http::logs::{self, ENV_LOG_FORMAT, LogFormat};
use clap::builder::{PossibleValuesParser, TypedValueParser};

/// `--log-format` of a long-running command.
#[derive(clap::Args, Debug)]
pub(crate) struct LogArgs {
    /// How log lines are written on stderr: text, or one JSON object per line.
    #[arg(long, value_name = "FORMAT", env = ENV_LOG_FORMAT, default_value = "text", value_parser = log_format())]
    log_format: LogFormat,
}

impl LogArgs {
    /// Installs the log subscriber once, filtered by `AIP_LOG` or else by `default_filter`.
    pub(crate) fn init(&self, default_filter: &str) {
        logs::init(self.log_format, default_filter);
    }
}

/// `--log-format`: one of [`LogFormat::NAMES`].
fn log_format() -> impl TypedValueParser<Value = LogFormat> {
    PossibleValuesParser::new(LogFormat::NAMES).try_map(|name| name.parse::<LogFormat>())
}
