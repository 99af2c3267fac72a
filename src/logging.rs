//! Log setup: text for people, JSON for log pipelines, filtered by `--log-level`.
//!
//! Nothing that reaches a log may hold secret data: credentials are never formatted, and the
//! Secret types the sync handles are logged by name only.

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, global = true, env = "PSI_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter, in tracing's EnvFilter syntax (`info`, `pullsecret_injector=debug`).
    #[arg(long, global = true, env = "PSI_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(args: &LogArgs) {
    let filter = EnvFilter::try_new(&args.log_level).unwrap_or_else(|error| {
        eprintln!(
            "warning: bad --log-level {:?} ({error}); using info",
            args.log_level
        );
        EnvFilter::new("info")
    });
    // A closed or full log pipe must never take the server down: without this, a failed
    // write makes tracing-subscriber `eprintln!`, which panics the task that logged.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
