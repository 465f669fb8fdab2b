//! The log output of the long-running subcommands: human-readable text on
//! standard error (coloured only on a terminal), or one JSON object per line
//! for log collectors.

use std::io::IsTerminal;

/// The environment variable that picks the format when `--log-format` is
/// not given.
pub const FORMAT_ENV: &str = "SLUICE_LOG_FORMAT";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; colours only on a terminal.
    Text,
    /// One JSON object per line: timestamp, level, message, target and the event's fields.
    Json,
}

/// The format chosen by `--log-format`, else by `$SLUICE_LOG_FORMAT`, else
/// text. A bad value of the variable is an error naming it.
pub fn resolve(flag: Option<LogFormat>) -> Result<LogFormat, String> {
    if let Some(f) = flag {
        return Ok(f);
    }
    match std::env::var(FORMAT_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(LogFormat::Text),
        Err(std::env::VarError::NotUnicode(v)) => Err(format!(
            "{FORMAT_ENV}={v:?}: not valid UTF-8; expected text or json"
        )),
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "" | "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!(
                "{FORMAT_ENV}={v:?}: unknown log format; expected text or json"
            )),
        },
    }
}

/// Installs the global subscriber: `RUST_LOG` filters (else
/// `default_filter`), lines go to standard error, which standard output's
/// users (the file sink's `file=-`, `query`) keep for themselves.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(colour()).init(),
        // Flattened: `message` and the event's fields at the top level, the
        // shape log collectors index without a mapping.
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Colour codes only where a person reads them: a terminal, and no
/// `NO_COLOR` (https://no-color.org).
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
