//! A PostgreSQL / TimescaleDB store for rlm trajectories.
//!
//! * [`PostgresSink`]: a [`rlm_protocol::TraceSink`] that queues events and writes them in batches from its own
//!   thread; when the database is unreachable, events go to a spool file and are replayed later. Never blocks the
//!   RLM loop, never drops or duplicates an event.
//! * [`import_jsonl`]: loads JSONL trajectories (or spool files) into the database, idempotently.
//! * [`stats`]: per-model latency percentiles, tokens and cost, and the slowest runs.
//! * [`Prices`]: the per-model price table used to compute costs (shared with runs and budgets: it lives in
//!   `rlm-models`).
//!
//! The schema (embedded migrations, see `docs/observability.md`) uses hypertables, compression and retention
//! policies and a continuous aggregate when the server has TimescaleDB, and plain tables and a view otherwise.

mod columns;
mod import;
mod rows;
mod sink;
mod spool;
mod stats;
mod store;
mod writer;

pub use import::{ImportReport, import_jsonl};
pub use rlm_models::{ModelPrice, Prices};
pub use rows::Converter;
pub use sink::{PostgresSink, PostgresSinkConfig, SinkStatus};
pub use spool::read_events;
pub use stats::{ModelStats, RunStats, Stats, parse_since, parse_since_now, stats};
pub use store::{MIGRATOR, connect, has_timescaledb, migrate};

#[derive(Debug, thiserror::Error)]
pub enum TraceDbError {
    #[error("{0}")]
    Config(String),
    #[error("trace database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("trace database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Io(String),
}

impl TraceDbError {
    /// Whether the database refused the data itself (SQLSTATE class 22, data exception, or 23, integrity constraint
    /// violation): trying again cannot help, unlike with a lost connection.
    pub fn is_rejection(&self) -> bool {
        match self {
            Self::Database(sqlx::Error::Database(err)) => {
                err.code().is_some_and(|code| code.starts_with("22") || code.starts_with("23"))
            }
            _ => false,
        }
    }
}
