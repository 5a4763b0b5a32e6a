//! Connecting, migrating and writing batches of rows.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::TraceDbError;
use crate::rows::{Batch, CodeRows, EventRows, LatencyRows, ModelRows, RunRows};

/// The embedded migrations (`crates/trace-postgres/migrations`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Connects a pool to `url` (`postgres://user:password@host:port/db`). Use `max_connections = 1` for servers that
/// take a single connection at a time (PGlite).
pub async fn connect(url: &str, max_connections: u32, acquire_timeout: Duration) -> Result<PgPool, TraceDbError> {
    let options =
        PgConnectOptions::from_str(url).map_err(|e| TraceDbError::Config(format!("bad database URL: {e}")))?;
    let pool = pool_options(max_connections, acquire_timeout).connect_with(options).await?;
    Ok(pool)
}

/// Pool settings shared by [`connect`] and the sink. A new connection first drops any prepared statements: a
/// single-session server (PGlite) keeps them from the previous client, whose statement names sqlx would reuse.
pub(crate) fn pool_options(max_connections: u32, acquire_timeout: Duration) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .min_connections(0)
        .acquire_timeout(acquire_timeout)
        .after_connect(|connection, _| {
            Box::pin(async move {
                sqlx::Executor::execute(connection, "DEALLOCATE ALL").await?;
                Ok(())
            })
        })
}

/// Creates or updates the schema. Detects TimescaleDB at this point: with it, the tables become hypertables with
/// compression and retention policies and `rlm_latency_per_minute` is a continuous aggregate; without it, the same
/// tables stay plain and `rlm_latency_per_minute` is a view.
pub async fn migrate(pool: &PgPool) -> Result<(), TraceDbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Whether the database has the `timescaledb` extension enabled.
pub async fn has_timescaledb(pool: &PgPool) -> Result<bool, TraceDbError> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetch_optional(pool).await?;
    Ok(found.is_some())
}

/// Brings the per-run aggregates of the summary rows up to date with the events stored so far (events of a run may
/// arrive after its `final` event, e.g. from a spool).
const REFRESH_RUNS: &str = "
UPDATE rlm_runs r SET
    model_calls = s.model_calls, cells = s.cells, failed_events = s.failed,
    model_p50_ms = s.m50, model_p95_ms = s.m95, model_p99_ms = s.m99,
    code_p50_ms = s.c50, code_p95_ms = s.c95, code_p99_ms = s.c99
FROM (
    SELECT run_id,
        (count(*) FILTER (WHERE event_type <> 'code_execution'))::int4 AS model_calls,
        (count(*) FILTER (WHERE event_type = 'code_execution'))::int4 AS cells,
        (count(*) FILTER (WHERE NOT success))::int4 AS failed,
        percentile_cont(0.50) WITHIN GROUP (ORDER BY duration_ms) FILTER (WHERE event_type <> 'code_execution') AS m50,
        percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) FILTER (WHERE event_type <> 'code_execution') AS m95,
        percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) FILTER (WHERE event_type <> 'code_execution') AS m99,
        percentile_cont(0.50) WITHIN GROUP (ORDER BY duration_ms) FILTER (WHERE event_type = 'code_execution') AS c50,
        percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) FILTER (WHERE event_type = 'code_execution') AS c95,
        percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) FILTER (WHERE event_type = 'code_execution') AS c99
    FROM rlm_latency_events
    WHERE run_id = ANY($1)
    GROUP BY run_id
) s
WHERE r.run_id = s.run_id";

const REFRESH_RUN_METADATA: &str = "
UPDATE rlm_runs r SET root_model = e.event->>'root_model', query = e.event->>'query'
FROM rlm_events e
WHERE r.run_id = ANY($1) AND r.root_model IS NULL AND e.run_id = r.run_id AND e.event_type = 'metadata'";

/// Writes `batch` in one transaction and returns how many of its events were new. Idempotent: rows already stored
/// (same event id and time) are skipped.
pub(crate) async fn write_batch(pool: &PgPool, batch: &Batch) -> Result<u64, TraceDbError> {
    if batch.len() == 0 {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    let inserted = insert_rows(&mut tx, batch).await?;
    refresh_runs(&mut tx, &batch.touched_runs).await?;
    tx.commit().await?;
    Ok(inserted)
}

async fn insert_rows(tx: &mut Transaction<'_, Postgres>, batch: &Batch) -> Result<u64, TraceDbError> {
    let inserted = batch.events.bind(sqlx::query(EventRows::insert_sql())).execute(&mut **tx).await?.rows_affected();
    if !batch.latency.is_empty() {
        batch.latency.bind(sqlx::query(LatencyRows::insert_sql())).execute(&mut **tx).await?;
    }
    if !batch.models.is_empty() {
        batch.models.bind(sqlx::query(ModelRows::insert_sql())).execute(&mut **tx).await?;
    }
    if !batch.code.is_empty() {
        batch.code.bind(sqlx::query(CodeRows::insert_sql())).execute(&mut **tx).await?;
    }
    if !batch.runs.is_empty() {
        batch.runs.bind(sqlx::query(RunRows::insert_sql())).execute(&mut **tx).await?;
    }
    Ok(inserted)
}

async fn refresh_runs(tx: &mut Transaction<'_, Postgres>, runs: &[Uuid]) -> Result<(), TraceDbError> {
    if runs.is_empty() {
        return Ok(());
    }
    sqlx::query(REFRESH_RUNS).bind(runs).execute(&mut **tx).await?;
    sqlx::query(REFRESH_RUN_METADATA).bind(runs).execute(&mut **tx).await?;
    Ok(())
}
