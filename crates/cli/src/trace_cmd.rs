//! The trajectory store from the command line: `rlm run --trace-db URL`, `rlm trace import`, `rlm stats`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use rlm::{FanoutSink, TraceSink};
use rlm_trace_postgres::{PostgresSink, PostgresSinkConfig, Prices};

/// How long `rlm run` waits at the end for the database writer before leaving the rest in the spool file.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// `rlm run` flags of the PostgreSQL / TimescaleDB trace store.
#[derive(Debug, Clone, Args)]
pub struct TraceDbArgs {
    /// Also store the trajectory in this PostgreSQL / TimescaleDB database (postgres://user:pass@host:port/db).
    /// Events are queued and written in batches; while the database is unreachable they go to a spool file in
    /// $RLM_TRACE_DIR/spool (or ./rlm-traces/spool) and are written when it answers again.
    #[arg(long = "trace-db", env = "RLM_TRACE_DB", hide_env_values = true, value_name = "URL")]
    pub url: Option<String>,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(subcommand)]
    pub command: TraceCommand,
}

#[derive(Debug, Subcommand)]
pub enum TraceCommand {
    /// Load JSONL trajectories (or spool files) into the database. Importing a file twice adds nothing.
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// JSONL trace files.
    #[arg(required = true, value_name = "FILE.jsonl")]
    pub files: Vec<PathBuf>,
    /// The database (postgres://user:pass@host:port/db).
    #[arg(long, env = "RLM_TRACE_DB", hide_env_values = true, value_name = "URL")]
    pub db: String,
    /// JSON price table overriding the built-in prices.
    #[arg(long, env = "RLM_PRICES", value_name = "FILE")]
    pub prices: Option<PathBuf>,
    /// Connections to the database (1 for servers that take one at a time, such as PGlite).
    #[arg(long, default_value_t = 1)]
    pub connections: u32,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The database (postgres://user:pass@host:port/db).
    #[arg(long, env = "RLM_TRACE_DB", hide_env_values = true, value_name = "URL")]
    pub db: String,
    /// Only what happened since then: 30m, 1h, 7d, 2026-11-01 or an RFC 3339 time (default: all).
    #[arg(long)]
    pub since: Option<String>,
    /// How many of the slowest runs to list.
    #[arg(long, default_value_t = 10)]
    pub slowest: i64,
}

/// The writer's settings, when a database is given; costs from the built-in prices overridden by `prices`.
pub fn sink_config(args: &TraceDbArgs, prices: Option<&Path>) -> Result<Option<PostgresSinkConfig>> {
    let Some(url) = args.url.as_deref().map(str::trim).filter(|u| !u.is_empty()) else { return Ok(None) };
    let prices = Prices::load(prices)?;
    let mut config = PostgresSinkConfig { prices, ..PostgresSinkConfig::new(url) };
    if let Some(dir) = std::env::var_os("RLM_TRACE_DIR").filter(|dir| !dir.is_empty()) {
        config.spool_dir = PathBuf::from(dir).join("spool");
    }
    Ok(Some(config))
}

/// Starts the database sink of `rlm run` when a URL is given.
pub fn start_sink(args: &TraceDbArgs, prices: Option<&Path>) -> Result<Option<Arc<PostgresSink>>> {
    let Some(config) = sink_config(args, prices)? else { return Ok(None) };
    let sink = PostgresSink::start(config).context("cannot start the trace database writer")?;
    Ok(Some(Arc::new(sink)))
}

/// `observer` plus the database sink, if any.
pub fn with_sink(observer: Option<Arc<dyn TraceSink>>, sink: &Option<Arc<PostgresSink>>) -> Option<Arc<dyn TraceSink>> {
    match (observer, sink) {
        (observer, None) => observer,
        (None, Some(sink)) => Some(sink.clone()),
        (Some(observer), Some(sink)) => Some(Arc::new(FanoutSink::new(vec![observer, sink.clone()]))),
    }
}

/// Stops the database sink and says where events that could not be written yet are.
#[allow(clippy::print_stderr, reason = "a command-line program talks through stderr")]
pub fn finish_sink(sink: Option<Arc<PostgresSink>>) {
    let Some(sink) = sink else { return };
    let status = sink.close(CLOSE_TIMEOUT);
    if status.lost > 0 {
        eprintln!("warning: {} trace events could not be stored anywhere", status.lost);
    }
    if let Some(file) = &status.rejected_file {
        eprintln!(
            "warning: the trace database refused {} events; they are kept in {}",
            status.rejected,
            file.display()
        );
    }
    if !status.spool_files.is_empty() {
        let files: Vec<String> = status.spool_files.iter().map(|p| p.display().to_string()).collect();
        eprintln!(
            "warning: the trace database could not be written ({}); the events are kept in {} — load them with \
             `rlm trace import {} --db URL`",
            status.last_error.as_deref().unwrap_or("still busy"),
            files.join(", "),
            files.join(" ")
        );
    }
}

#[allow(clippy::print_stdout, reason = "a command-line program talks through stdout")]
pub async fn trace(args: TraceArgs) -> Result<()> {
    match args.command {
        TraceCommand::Import(args) => {
            let prices = Prices::load(args.prices.as_deref())?;
            let pool = rlm_trace_postgres::connect(&args.db, args.connections, Duration::from_secs(10)).await?;
            let report = rlm_trace_postgres::import_jsonl(&pool, &args.files, &prices, 1000).await?;
            pool.close().await;
            println!(
                "imported {} new events of {} read from {} files{}",
                report.inserted,
                report.events,
                report.files,
                if report.skipped_lines > 0 {
                    format!(" ({} lines skipped)", report.skipped_lines)
                } else {
                    String::new()
                }
            );
            Ok(())
        }
    }
}

#[allow(clippy::print_stdout, reason = "a command-line program talks through stdout")]
pub async fn stats(args: StatsArgs) -> Result<()> {
    let since = args.since.as_deref().map(rlm_trace_postgres::parse_since_now).transpose()?;
    let pool = rlm_trace_postgres::connect(&args.db, 1, Duration::from_secs(10)).await?;
    let stats = rlm_trace_postgres::stats(&pool, since, args.slowest).await?;
    pool.close().await;
    print!("{stats}");
    Ok(())
}
