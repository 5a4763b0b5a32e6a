-- rlm trajectory store: raw events plus typed tables for latency, model interactions, code executions and runs.
-- Every primary key includes the time column, as TimescaleDB hypertables require.

CREATE TABLE IF NOT EXISTS rlm_events (
    time            timestamptz NOT NULL,
    event_id        uuid        NOT NULL,
    run_id          uuid        NOT NULL,
    parent_run_id   uuid,
    parent_event_id uuid,
    depth           integer     NOT NULL,
    iteration       integer,
    event_type      text        NOT NULL,
    event           jsonb       NOT NULL,
    PRIMARY KEY (event_id, time)
);
CREATE INDEX IF NOT EXISTS rlm_events_run_idx ON rlm_events (run_id, time);

CREATE TABLE IF NOT EXISTS rlm_latency_events (
    time          timestamptz      NOT NULL,
    event_id      uuid             NOT NULL,
    run_id        uuid             NOT NULL,
    parent_run_id uuid,
    -- root_model | recursive_model | code_execution
    event_type    text             NOT NULL,
    -- root_model: iteration | final_answer; recursive_model: llm | rlm (a child run) ; code_execution: cell
    subtype       text             NOT NULL,
    model         text,
    start_time    timestamptz      NOT NULL,
    end_time      timestamptz      NOT NULL,
    duration_ms   double precision NOT NULL,
    iteration     integer,
    depth         integer          NOT NULL,
    max_depth     integer,
    success       boolean          NOT NULL,
    error         text,
    PRIMARY KEY (event_id, time)
);
CREATE INDEX IF NOT EXISTS rlm_latency_events_run_idx ON rlm_latency_events (run_id, time);
CREATE INDEX IF NOT EXISTS rlm_latency_events_model_idx ON rlm_latency_events (model, time);

CREATE TABLE IF NOT EXISTS rlm_model_interactions (
    time              timestamptz      NOT NULL,
    event_id          uuid             NOT NULL,
    run_id            uuid             NOT NULL,
    -- root_model | recursive_model
    call_type         text             NOT NULL,
    subtype           text             NOT NULL,
    model             text             NOT NULL,
    prompt_tokens     bigint           NOT NULL,
    completion_tokens bigint           NOT NULL,
    cached_tokens     bigint           NOT NULL,
    total_tokens      bigint           NOT NULL,
    -- USD from the price table; NULL when the model has no price
    cost_usd          double precision,
    -- characters of the request: all messages sent (root calls) or the prompt (sub-calls)
    context_chars     bigint           NOT NULL,
    history_len       integer,
    response_chars    bigint           NOT NULL,
    latency_ms        double precision NOT NULL,
    iteration         integer,
    depth             integer          NOT NULL,
    success           boolean          NOT NULL,
    error             text,
    PRIMARY KEY (event_id, time)
);
CREATE INDEX IF NOT EXISTS rlm_model_interactions_run_idx ON rlm_model_interactions (run_id, time);
CREATE INDEX IF NOT EXISTS rlm_model_interactions_model_idx ON rlm_model_interactions (model, time);

CREATE TABLE IF NOT EXISTS rlm_code_executions (
    time            timestamptz      NOT NULL,
    event_id        uuid             NOT NULL,
    run_id          uuid             NOT NULL,
    cell_index      integer          NOT NULL,
    code            text             NOT NULL,
    code_sha256     text             NOT NULL,
    code_chars      bigint           NOT NULL,
    stdout_chars    bigint           NOT NULL,
    stderr_chars    bigint           NOT NULL,
    truncated_chars bigint           NOT NULL,
    duration_ms     double precision NOT NULL,
    iteration       integer,
    depth           integer          NOT NULL,
    success         boolean          NOT NULL,
    error_kind      text,
    error_message   text,
    PRIMARY KEY (event_id, time)
);
CREATE INDEX IF NOT EXISTS rlm_code_executions_run_idx ON rlm_code_executions (run_id, time);

-- One row per run (top-level and child runs), written at its `final` event; `time` is when it ended.
CREATE TABLE IF NOT EXISTS rlm_runs (
    time              timestamptz      NOT NULL,
    run_id            uuid             NOT NULL,
    parent_run_id     uuid,
    parent_event_id   uuid,
    depth             integer          NOT NULL,
    started_at        timestamptz      NOT NULL,
    -- final | final_var | answer | limit | cancelled | error
    status            text             NOT NULL,
    limit_kind        text,
    error             text,
    root_model        text,
    query             text,
    iterations        integer          NOT NULL,
    sub_calls         bigint           NOT NULL,
    -- usage of the run and its descendants, and its cost from the price table
    prompt_tokens     bigint           NOT NULL,
    completion_tokens bigint           NOT NULL,
    cached_tokens     bigint           NOT NULL,
    cost_usd          double precision,
    duration_ms       double precision NOT NULL,
    answer_chars      bigint,
    -- this run's own events (kept current as late events arrive)
    model_calls       integer          NOT NULL DEFAULT 0,
    cells             integer          NOT NULL DEFAULT 0,
    failed_events     integer          NOT NULL DEFAULT 0,
    model_p50_ms      double precision,
    model_p95_ms      double precision,
    model_p99_ms      double precision,
    code_p50_ms       double precision,
    code_p95_ms       double precision,
    code_p99_ms       double precision,
    PRIMARY KEY (run_id, time)
);
CREATE INDEX IF NOT EXISTS rlm_runs_duration_idx ON rlm_runs (time, duration_ms);

-- TimescaleDB when the server has it; plain PostgreSQL otherwise. Both give the same tables, the same
-- `rlm_bucket(width, time)` function and the same `rlm_latency_per_minute` relation.
DO $rlm$
DECLARE
    has_timescale boolean := false;
    t text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS timescaledb;
            has_timescale := true;
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE 'rlm: timescaledb is installed but cannot be enabled (%), using plain PostgreSQL', SQLERRM;
        END;
    ELSIF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        has_timescale := true;
    END IF;

    IF has_timescale THEN
        FOREACH t IN ARRAY ARRAY['rlm_events', 'rlm_latency_events', 'rlm_model_interactions',
                                 'rlm_code_executions', 'rlm_runs'] LOOP
            PERFORM create_hypertable(t::regclass, 'time', chunk_time_interval => INTERVAL '1 day',
                                      if_not_exists => true, migrate_data => true);
            EXECUTE format('ALTER TABLE %I SET (timescaledb.compress, timescaledb.compress_segmentby = %L, '
                           'timescaledb.compress_orderby = %L)', t, 'run_id',
                           CASE WHEN t = 'rlm_runs' THEN 'time DESC' ELSE 'time DESC, event_id' END);
            PERFORM add_compression_policy(t::regclass, INTERVAL '7 days', if_not_exists => true);
            PERFORM add_retention_policy(t::regclass, INTERVAL '90 days', if_not_exists => true);
        END LOOP;
        EXECUTE $f$CREATE OR REPLACE FUNCTION rlm_bucket(width interval, ts timestamptz) RETURNS timestamptz
                   LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT time_bucket(width, ts)'$f$;
        EXECUTE $v$CREATE MATERIALIZED VIEW IF NOT EXISTS rlm_latency_per_minute
            WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
            SELECT time_bucket(INTERVAL '1 minute', time) AS bucket, event_type, model,
                   count(*) AS calls,
                   count(*) FILTER (WHERE NOT success) AS failures,
                   avg(duration_ms) AS avg_ms,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50_ms,
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_ms,
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99_ms,
                   max(duration_ms) AS max_ms
            FROM rlm_latency_events
            GROUP BY 1, 2, 3
            WITH NO DATA$v$;
        PERFORM add_continuous_aggregate_policy('rlm_latency_per_minute',
            start_offset => INTERVAL '7 days', end_offset => INTERVAL '1 minute',
            schedule_interval => INTERVAL '1 minute', if_not_exists => true);
    ELSE
        EXECUTE $f$CREATE OR REPLACE FUNCTION rlm_bucket(width interval, ts timestamptz) RETURNS timestamptz
                   LANGUAGE sql IMMUTABLE PARALLEL SAFE
                   AS 'SELECT date_bin(width, ts, TIMESTAMPTZ ''2000-01-03 00:00:00+00'')'$f$;
        EXECUTE $v$CREATE OR REPLACE VIEW rlm_latency_per_minute AS
            SELECT rlm_bucket(INTERVAL '1 minute', time) AS bucket, event_type, model,
                   count(*) AS calls,
                   count(*) FILTER (WHERE NOT success) AS failures,
                   avg(duration_ms) AS avg_ms,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50_ms,
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_ms,
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99_ms,
                   max(duration_ms) AS max_ms
            FROM rlm_latency_events
            GROUP BY 1, 2, 3$v$;
    END IF;
END
$rlm$;
