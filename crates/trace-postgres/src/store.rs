//! Connecting, migrating and writing batches of rows.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::TraceDbError;
use crate::rows::Batch;

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

const INSERT_EVENTS: &str = "
INSERT INTO rlm_events (time, event_id, run_id, parent_run_id, parent_event_id, depth, iteration, event_type, event)
SELECT t, e, r, pr, pe, d, i, ty, ev::jsonb
FROM UNNEST($1::timestamptz[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::int4[], $7::int4[], $8::text[],
            $9::text[]) AS u(t, e, r, pr, pe, d, i, ty, ev)
ON CONFLICT DO NOTHING";

const INSERT_LATENCY: &str = "
INSERT INTO rlm_latency_events (time, event_id, run_id, parent_run_id, event_type, subtype, model, start_time, end_time,
                                duration_ms, iteration, depth, max_depth, success, error)
SELECT t, e, r, pr, ty, st, m, t, et, dur, i, d, md, ok, err
FROM UNNEST($1::timestamptz[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[],
            $8::timestamptz[], $9::float8[], $10::int4[], $11::int4[], $12::int4[], $13::bool[], $14::text[])
     AS u(t, e, r, pr, ty, st, m, et, dur, i, d, md, ok, err)
ON CONFLICT DO NOTHING";

const INSERT_MODELS: &str = "
INSERT INTO rlm_model_interactions (time, event_id, run_id, call_type, subtype, model, prompt_tokens, completion_tokens,
                                    cached_tokens, total_tokens, cost_usd, context_chars, history_len, response_chars,
                                    latency_ms, iteration, depth, success, error)
SELECT t, e, r, ct, st, m, pt, ctk, cached, pt + ctk, cost, cc, hl, rc, lat, i, d, ok, err
FROM UNNEST($1::timestamptz[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::int8[],
            $9::int8[], $10::float8[], $11::int8[], $12::int4[], $13::int8[], $14::float8[], $15::int4[], $16::int4[],
            $17::bool[], $18::text[])
     AS u(t, e, r, ct, st, m, pt, ctk, cached, cost, cc, hl, rc, lat, i, d, ok, err)
ON CONFLICT DO NOTHING";

const INSERT_CODE: &str = "
INSERT INTO rlm_code_executions (time, event_id, run_id, cell_index, code, code_sha256, code_chars, stdout_chars,
                                 stderr_chars, truncated_chars, duration_ms, iteration, depth, success, error_kind,
                                 error_message)
SELECT * FROM UNNEST($1::timestamptz[], $2::uuid[], $3::uuid[], $4::int4[], $5::text[], $6::text[], $7::int8[],
                     $8::int8[], $9::int8[], $10::int8[], $11::float8[], $12::int4[], $13::int4[], $14::bool[],
                     $15::text[], $16::text[])
ON CONFLICT DO NOTHING";

const INSERT_RUNS: &str = "
INSERT INTO rlm_runs (time, run_id, parent_run_id, parent_event_id, depth, started_at, status, limit_kind, error,
                      iterations, sub_calls, prompt_tokens, completion_tokens, cached_tokens, cost_usd, duration_ms,
                      answer_chars)
SELECT * FROM UNNEST($1::timestamptz[], $2::uuid[], $3::uuid[], $4::uuid[], $5::int4[], $6::timestamptz[], $7::text[],
                     $8::text[], $9::text[], $10::int4[], $11::int8[], $12::int8[], $13::int8[], $14::int8[],
                     $15::float8[], $16::float8[], $17::int8[])
ON CONFLICT DO NOTHING";

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
    let e = &batch.events;
    let inserted = sqlx::query(INSERT_EVENTS)
        .bind(&e.time)
        .bind(&e.event_id)
        .bind(&e.run_id)
        .bind(&e.parent_run_id)
        .bind(&e.parent_event_id)
        .bind(&e.depth)
        .bind(&e.iteration)
        .bind(&e.event_type)
        .bind(&e.event)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    let l = &batch.latency;
    if !l.event_id.is_empty() {
        sqlx::query(INSERT_LATENCY)
            .bind(&l.time)
            .bind(&l.event_id)
            .bind(&l.run_id)
            .bind(&l.parent_run_id)
            .bind(&l.event_type)
            .bind(&l.subtype)
            .bind(&l.model)
            .bind(&l.end_time)
            .bind(&l.duration_ms)
            .bind(&l.iteration)
            .bind(&l.depth)
            .bind(&l.max_depth)
            .bind(&l.success)
            .bind(&l.error)
            .execute(&mut **tx)
            .await?;
    }
    let m = &batch.models;
    if !m.event_id.is_empty() {
        sqlx::query(INSERT_MODELS)
            .bind(&m.time)
            .bind(&m.event_id)
            .bind(&m.run_id)
            .bind(&m.call_type)
            .bind(&m.subtype)
            .bind(&m.model)
            .bind(&m.prompt_tokens)
            .bind(&m.completion_tokens)
            .bind(&m.cached_tokens)
            .bind(&m.cost_usd)
            .bind(&m.context_chars)
            .bind(&m.history_len)
            .bind(&m.response_chars)
            .bind(&m.latency_ms)
            .bind(&m.iteration)
            .bind(&m.depth)
            .bind(&m.success)
            .bind(&m.error)
            .execute(&mut **tx)
            .await?;
    }
    let c = &batch.code;
    if !c.event_id.is_empty() {
        sqlx::query(INSERT_CODE)
            .bind(&c.time)
            .bind(&c.event_id)
            .bind(&c.run_id)
            .bind(&c.cell_index)
            .bind(&c.code)
            .bind(&c.code_sha256)
            .bind(&c.code_chars)
            .bind(&c.stdout_chars)
            .bind(&c.stderr_chars)
            .bind(&c.truncated_chars)
            .bind(&c.duration_ms)
            .bind(&c.iteration)
            .bind(&c.depth)
            .bind(&c.success)
            .bind(&c.error_kind)
            .bind(&c.error_message)
            .execute(&mut **tx)
            .await?;
    }
    let r = &batch.runs;
    if !r.run_id.is_empty() {
        sqlx::query(INSERT_RUNS)
            .bind(&r.time)
            .bind(&r.run_id)
            .bind(&r.parent_run_id)
            .bind(&r.parent_event_id)
            .bind(&r.depth)
            .bind(&r.started_at)
            .bind(&r.status)
            .bind(&r.limit_kind)
            .bind(&r.error)
            .bind(&r.iterations)
            .bind(&r.sub_calls)
            .bind(&r.prompt_tokens)
            .bind(&r.completion_tokens)
            .bind(&r.cached_tokens)
            .bind(&r.cost_usd)
            .bind(&r.duration_ms)
            .bind(&r.answer_chars)
            .execute(&mut **tx)
            .await?;
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
