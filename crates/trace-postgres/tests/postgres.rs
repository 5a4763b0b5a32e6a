//! The trajectory store against real servers: PostgreSQL 15 (Debian's `postgresql` package) and TimescaleDB (PGlite
//! with TimescaleDB, served over the wire by pglite-socket). Each test starts its own server in a temporary
//! directory on a free loopback port and stops it at the end, also on failure. `scripts/setup-postgres.sh` installs
//! both; a missing one fails the test with a message saying so.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr, reason = "tests")]

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rlm::{CancellationToken, Context, EventBody, OpenAiConfig, Rlm, TraceEvent, TraceSink, TraceTarget};
use rlm_protocol::{
    CellError, CellRecord, ChatMessage, ContextInfo, FinalRecord, FinishedBy, ModelCallPurpose, ModelCallRecord,
    RunMetadata, SubCallKind, SubCallRecord, Usage, UsageReport,
};
use rlm_test_support::{PostgresServer as PgServer, Reply, ScriptedServer};
use rlm_trace_postgres::{PostgresSink, PostgresSinkConfig, Prices, import_jsonl, read_events};
use sqlx::PgPool;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------------------------
// Servers

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// PGlite (PostgreSQL 17 + TimescaleDB, WebAssembly) served by pglite-socket; one connection at a time.
struct PgliteServer {
    child: Child,
    port: u16,
}

impl PgliteServer {
    fn start() -> Self {
        let dir = std::env::var_os("RLM_PGLITE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/rlm/pglite"));
        let modules = dir.join("node_modules");
        assert!(
            modules.join("@electric-sql/pglite/dist/timescaledb").exists()
                && modules.join("@electric-sql/pglite-socket/package.json").exists(),
            "PGlite with TimescaleDB is not installed in {}: run scripts/setup-postgres.sh",
            dir.display()
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pglite-server.mjs");
        let port = free_port();
        let mut child = Command::new("node")
            .arg(&script)
            .arg(port.to_string())
            .env("RLM_PGLITE_MODULES", &modules)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node (install it with scripts/setup-postgres.sh): {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.trim() == "ready" {
                    let _ = tx.send(());
                }
            }
        });
        let mut server = Self { child, port };
        if rx.recv_timeout(Duration::from_secs(90)).is_err() {
            let _ = server.child.kill();
            panic!("the PGlite server did not start within 90 s");
        }
        server
    }

    fn url(&self) -> String {
        format!("postgres://postgres:pglite@127.0.0.1:{}/postgres?sslmode=disable", self.port)
    }
}

impl Drop for PgliteServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Helpers

async fn pool(url: &str, connections: u32) -> PgPool {
    rlm_trace_postgres::connect(url, connections, Duration::from_secs(20)).await.unwrap()
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

fn sink_config(url: &str, spool: &Path) -> PostgresSinkConfig {
    PostgresSinkConfig {
        spool_dir: spool.to_owned(),
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(300),
        connect_timeout: Duration::from_secs(2),
        ..PostgresSinkConfig::new(url)
    }
}

fn usage(prompt: u64, completion: u64, cached: u64) -> Usage {
    Usage { prompt_tokens: prompt, completion_tokens: completion, cached_tokens: cached, calls: 1, ..Usage::default() }
}

/// A made-up but well-formed run: metadata, `iterations` × (model call, cell, sub-call), final.
fn synthetic_run(start: DateTime<Utc>, iterations: u32, model_ms: f64, code_ms: f64) -> Vec<TraceEvent> {
    let run_id = Uuid::new_v4();
    let mut ts = start;
    let mut events = Vec::new();
    let mut push = |iteration: Option<u32>, at: DateTime<Utc>, body: EventBody| {
        events.push(TraceEvent {
            event_id: Uuid::new_v4(),
            run_id,
            parent_run_id: None,
            parent_event_id: None,
            depth: 0,
            iteration,
            ts: at,
            body,
        });
    };
    push(
        None,
        ts,
        EventBody::Metadata(RunMetadata {
            rlm_version: "test".into(),
            query: "how many?".into(),
            root_model: "gpt-4o".into(),
            sub_model: "gpt-4o-mini".into(),
            config: serde_json::json!({"limits": {"max_depth": 1}}),
            executor: "local".into(),
            context: ContextInfo {
                python_type: "str".into(),
                total_chars: 1000,
                chunk_lengths: vec![1000],
                chunk_count: 1,
            },
            route: None,
        }),
    );
    let mut report = UsageReport::default();
    for i in 1..=iterations {
        let step = chrono::Duration::milliseconds(10);
        ts += step;
        let root_usage = usage(1000, 100, 200);
        report.add("gpt-4o", root_usage);
        push(
            Some(i),
            ts,
            EventBody::ModelCall(ModelCallRecord {
                purpose: ModelCallPurpose::Iteration,
                model: "gpt-4o".into(),
                new_messages: vec![ChatMessage::user("x".repeat(50))],
                history_len: 2 * i as usize,
                response: Some("```repl\nprint(1)\n```".into()),
                usage: root_usage,
                latency_ms: model_ms,
                error: None,
            }),
        );
        ts += step;
        push(
            Some(i),
            ts,
            EventBody::Cell(CellRecord {
                index: i,
                code: format!("print({i})"),
                stdout: format!("{i}\n"),
                stderr: String::new(),
                error: (i == 2).then(|| CellError {
                    kind: "ZeroDivisionError".into(),
                    message: "division by zero".into(),
                    traceback: String::new(),
                }),
                duration_ms: code_ms,
                truncated_chars: 0,
            }),
        );
        let sub_usage = usage(300, 20, 0);
        report.add("gpt-4o-mini", sub_usage);
        push(
            Some(i),
            ts,
            EventBody::SubCall(SubCallRecord {
                kind: SubCallKind::Llm,
                model: "gpt-4o-mini".into(),
                prompt: "summarize".into(),
                response: Some("ok".into()),
                error: None,
                usage: sub_usage,
                latency_ms: model_ms / 2.0,
                batch_id: None,
                batch_index: 0,
                batch_size: 1,
                child_run_id: None,
            }),
        );
    }
    ts += chrono::Duration::milliseconds(10);
    let duration_ms = (ts - start).num_milliseconds() as f64;
    push(
        Some(iterations),
        ts,
        EventBody::Final(FinalRecord {
            answer: Some("42".into()),
            finished_by: FinishedBy::Final,
            limit: None,
            iterations,
            sub_calls: u64::from(iterations),
            usage: report,
            duration_ms,
            error: None,
        }),
    );
    events
}

fn write_jsonl(path: &Path, events: &[TraceEvent]) {
    let text: String = events.iter().map(|e| serde_json::to_string(e).unwrap() + "\n").collect();
    std::fs::write(path, text).unwrap();
}

async fn event_ids(pool: &PgPool) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT event_id FROM rlm_events").fetch_all(pool).await.unwrap()
}

/// Waits until the sink has nothing left in its spool (replayed after the database came back).
async fn wait_for_spool_drained(sink: &PostgresSink, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let status = sink.status();
        if status.spool_files.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "spool not replayed within {within:?}: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn repl(code: &str) -> String {
    format!("```repl\n{code}\n```")
}

fn openai(server: &ScriptedServer) -> OpenAiConfig {
    OpenAiConfig {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_secs(1),
        ..OpenAiConfig::new(server.base_url())
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_on_plain_postgres_create_the_schema_and_the_fallback_view() {
    let server = PgServer::start().expect("PostgreSQL starts");
    let pool = pool(&server.url(), 2).await;
    rlm_trace_postgres::migrate(&pool).await.unwrap();
    rlm_trace_postgres::migrate(&pool).await.unwrap(); // idempotent
    assert!(!rlm_trace_postgres::has_timescaledb(&pool).await.unwrap());
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' AND table_name LIKE \
         'rlm_%' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        tables,
        [
            "rlm_code_executions",
            "rlm_events",
            "rlm_latency_events",
            "rlm_latency_per_minute",
            "rlm_model_interactions",
            "rlm_runs"
        ]
    );
    // Every primary key includes the time column.
    let keys_without_time = count(
        &pool,
        "SELECT count(*) FROM information_schema.table_constraints c WHERE c.constraint_type = 'PRIMARY KEY' AND \
         c.table_name LIKE 'rlm_%' AND NOT EXISTS (SELECT 1 FROM information_schema.key_column_usage k WHERE \
         k.constraint_name = c.constraint_name AND k.column_name = 'time')",
    )
    .await;
    assert_eq!(keys_without_time, 0);
    let view =
        count(&pool, "SELECT count(*) FROM information_schema.views WHERE table_name = 'rlm_latency_per_minute'").await;
    assert_eq!(view, 1, "plain PostgreSQL gets a view in place of the continuous aggregate");
    let bucket: DateTime<Utc> =
        sqlx::query_scalar("SELECT rlm_bucket(INTERVAL '1 minute', TIMESTAMPTZ '2026-11-25 10:11:12.5+00')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(bucket.to_rfc3339(), "2026-11-25T10:11:00+00:00");

    // The same queries as on TimescaleDB work.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("runs.jsonl");
    write_jsonl(&file, &synthetic_run(Utc::now(), 3, 100.0, 5.0));
    import_jsonl(&pool, &[&file], &Prices::builtin(), 100).await.unwrap();
    let calls = count(&pool, "SELECT coalesce(sum(calls), 0)::int8 FROM rlm_latency_per_minute").await;
    assert_eq!(calls, 9);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_on_timescaledb_create_hypertables_policies_and_a_continuous_aggregate() {
    let server = PgliteServer::start();
    // PGlite serves one connection at a time.
    let pool = pool(&server.url(), 1).await;
    rlm_trace_postgres::migrate(&pool).await.unwrap();
    rlm_trace_postgres::migrate(&pool).await.unwrap();
    assert!(rlm_trace_postgres::has_timescaledb(&pool).await.unwrap());

    let hypertables: Vec<String> = sqlx::query_scalar(
        "SELECT hypertable_name::text FROM timescaledb_information.hypertables WHERE compression_enabled ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        hypertables,
        ["rlm_code_executions", "rlm_events", "rlm_latency_events", "rlm_model_interactions", "rlm_runs"]
    );
    let jobs: Vec<(String, i64)> = sqlx::query_as(
        "SELECT proc_name::text, count(*) FROM timescaledb_information.jobs WHERE hypertable_name LIKE 'rlm_%' GROUP \
         BY 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        jobs,
        [
            ("policy_compression".to_owned(), 5),
            ("policy_refresh_continuous_aggregate".to_owned(), 1),
            ("policy_retention".to_owned(), 5)
        ]
    );
    let caggs: Vec<String> =
        sqlx::query_scalar("SELECT view_name::text FROM timescaledb_information.continuous_aggregates")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(caggs, ["rlm_latency_per_minute"]);

    // Events through the sink (pool of 1), then the continuous aggregate and stats over them.
    let dir = tempfile::tempdir().unwrap();
    let events = synthetic_run(Utc::now() - chrono::Duration::minutes(10), 4, 120.0, 8.0);
    {
        let config = PostgresSinkConfig { max_connections: 1, ..sink_config(&server.url(), dir.path()) };
        // The test's own pool must let go of its connection while the sink writes.
        pool.close().await;
        let sink = PostgresSink::start(config).unwrap();
        for event in &events {
            sink.record(event);
        }
        sink.flush().unwrap();
        let status = sink.close(Duration::from_secs(30));
        assert_eq!(status.written, events.len() as u64, "{status:?}");
        assert!(status.spool_files.is_empty());
    }
    let pool = self::pool(&server.url(), 1).await;
    assert_eq!(count(&pool, "SELECT count(*) FROM rlm_events").await, events.len() as i64);
    sqlx::query("CALL refresh_continuous_aggregate('rlm_latency_per_minute', NULL, NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let (calls, p50): (i64, f64) = sqlx::query_as(
        "SELECT sum(calls)::int8, max(p50_ms) FROM rlm_latency_per_minute WHERE event_type = 'root_model' AND model \
         = 'gpt-4o'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((calls, p50), (4, 120.0));
    let stats = rlm_trace_postgres::stats(&pool, None, 5).await.unwrap();
    assert_eq!(stats.runs, 1);
    assert!(stats.models.iter().any(|m| m.model == "gpt-4o" && m.calls == 4));
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_engine_run_stores_exactly_the_events_of_its_jsonl_trace() {
    let server = PgServer::start().expect("PostgreSQL starts");
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.jsonl");
    let model = ScriptedServer::builder()
        .script(
            "gpt-4o",
            [
                Reply::text(repl("a = llm_query('hello')\nb = rlm_query('child question')\nprint(a, b)"))
                    .with_usage(1000, 50, 400),
                Reply::text(repl("1/0")).with_usage(1200, 20, 1000),
                Reply::text("FINAL(done)").with_usage(1400, 10, 1200),
            ],
        )
        // The child RLM reads its context before it answers (no answer counts before code has run).
        .rule(|request| {
            (request.model == "gpt-4o-mini")
                .then(|| Reply::text(format!("{}\nFINAL(sub)", repl("print(context)"))).with_usage(100, 5, 0))
        })
        .start()
        .await
        .unwrap();
    let rlm = Rlm::builder()
        .openai_config(openai(&model))
        .model("gpt-4o")
        .sub_model("gpt-4o-mini")
        .max_depth(1)
        // gpt-4o's window holds this context; the point here is the events of a whole RLM run.
        .route(rlm::RouteMode::Rlm)
        .trace(TraceTarget::File(trace.clone()))
        .build()
        .unwrap();
    let sink = Arc::new(PostgresSink::start(sink_config(&server.url(), &dir.path().join("spool"))).unwrap());
    let done = rlm
        .completion_with(Context::Text("some context".into()), "q", CancellationToken::new(), Some(sink.clone()))
        .await
        .unwrap();
    assert_eq!(done.answer, "done");
    sink.flush().unwrap();
    let status = sink.close(Duration::from_secs(10));
    assert_eq!((status.spooled, status.lost), (0, 0), "{status:?}");
    model.shutdown().await;

    let (jsonl, bad) = read_events(&trace).unwrap();
    assert_eq!(bad, 0);
    let pool = pool(&server.url(), 2).await;
    // The raw events are the trace, byte for byte in meaning.
    let stored: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT event FROM rlm_events ORDER BY time, event_id").fetch_all(&pool).await.unwrap();
    let mut stored: Vec<TraceEvent> = stored.into_iter().map(|v| serde_json::from_value(v).unwrap()).collect();
    let mut expected = jsonl.clone();
    stored.sort_by_key(|e| e.event_id);
    expected.sort_by_key(|e| e.event_id);
    assert_eq!(stored, expected);

    let of_type = |name: &str| {
        jsonl
            .iter()
            .filter(|e| {
                matches!(
                    (&e.body, name),
                    (EventBody::ModelCall(_), "model_call")
                        | (EventBody::Cell(_), "cell")
                        | (EventBody::SubCall(_), "sub_call")
                        | (EventBody::Final(_), "final")
                )
            })
            .count() as i64
    };
    let (model_calls, cells, sub_calls, finals) =
        (of_type("model_call"), of_type("cell"), of_type("sub_call"), of_type("final"));
    assert_eq!((sub_calls, finals), (2, 2), "one llm_query, one child run; two runs");
    assert_eq!(count(&pool, "SELECT count(*) FROM rlm_latency_events").await, model_calls + cells + sub_calls);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM rlm_latency_events WHERE event_type = 'recursive_model'").await,
        sub_calls
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM rlm_code_executions").await, cells);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM rlm_code_executions WHERE NOT success AND error_kind = 'ZeroDivisionError'")
            .await,
        1
    );
    // Model interactions: every root-loop call, plus the llm_query (the child run's calls are its own model calls).
    assert_eq!(count(&pool, "SELECT count(*) FROM rlm_model_interactions").await, model_calls + 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM rlm_runs").await, 2);

    // The top-level run's summary matches the completion; cost from the built-in prices.
    let (status, iterations, sub, prompt, completion, cached, cost, calls, run_cells, root_model): RunRow =
        sqlx::query_as(
            "SELECT status, iterations, sub_calls, prompt_tokens, completion_tokens, cached_tokens, cost_usd, \
         model_calls, cells, root_model FROM rlm_runs WHERE depth = 0",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "final");
    assert_eq!(iterations as u32, done.iterations);
    assert_eq!(sub as u64, done.sub_calls);
    assert_eq!(prompt as u64, done.usage.total.prompt_tokens);
    assert_eq!(completion as u64, done.usage.total.completion_tokens);
    assert_eq!(cached as u64, done.usage.total.cached_tokens);
    let expected_cost = Prices::builtin().report_cost(&done.usage).unwrap();
    assert!((cost.unwrap() - expected_cost).abs() < 1e-9, "{cost:?} vs {expected_cost}");
    // gpt-4o: 3600 prompt of which 2600 cached, 80 completion; gpt-4o-mini: 2 calls × (100, 5).
    let by_hand = (1000.0 * 0.0025 + 2600.0 * 0.00125 + 80.0 * 0.01 + 200.0 * 0.00015 + 10.0 * 0.0006) / 1000.0;
    assert!((expected_cost - by_hand).abs() < 1e-12, "{expected_cost} vs {by_hand}");
    assert_eq!(calls as i64, model_calls_of_run(&jsonl, 0) + 2);
    assert_eq!(run_cells, 2);
    assert_eq!(root_model.as_deref(), Some("gpt-4o"));
    let interactions_cost: f64 =
        sqlx::query_scalar("SELECT sum(cost_usd) FROM rlm_model_interactions").fetch_one(&pool).await.unwrap();
    assert!((interactions_cost - expected_cost).abs() < 1e-9, "per-call costs add up to the run's cost");
    let max_depth: Vec<Option<i32>> =
        sqlx::query_scalar("SELECT DISTINCT max_depth FROM rlm_latency_events").fetch_all(&pool).await.unwrap();
    assert_eq!(max_depth, [Some(1)]);
    pool.close().await;
}

type RunRow = (String, i32, i64, i64, i64, i64, Option<f64>, i32, i32, Option<String>);

fn model_calls_of_run(events: &[TraceEvent], depth: u32) -> i64 {
    events.iter().filter(|e| e.depth == depth && matches!(e.body, EventBody::ModelCall(_))).count() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_the_same_files_twice_adds_nothing() {
    let server = PgServer::start().expect("PostgreSQL starts");
    let pool = pool(&server.url(), 2).await;
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.jsonl");
    let b = dir.path().join("b.jsonl");
    let run_a = synthetic_run(Utc::now() - chrono::Duration::hours(2), 5, 200.0, 10.0);
    let mut run_b = synthetic_run(Utc::now() - chrono::Duration::hours(1), 3, 400.0, 30.0);
    write_jsonl(&a, &run_a);
    write_jsonl(&b, &run_b);
    // A torn last line (a crash while writing) is skipped, not fatal.
    let mut text = std::fs::read_to_string(&b).unwrap();
    text.push_str("{\"type\":\"cell\",\"event_");
    std::fs::write(&b, text).unwrap();

    let first = import_jsonl(&pool, &[&a, &b], &Prices::builtin(), 4).await.unwrap();
    assert_eq!(first.files, 2);
    assert_eq!(first.events, (run_a.len() + run_b.len()) as u64);
    assert_eq!(first.inserted, first.events);
    assert_eq!(first.skipped_lines, 1);
    let tables = ["rlm_events", "rlm_latency_events", "rlm_model_interactions", "rlm_code_executions", "rlm_runs"];
    let mut before = BTreeMap::new();
    for table in tables {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&pool)
            .await
            .unwrap();
        before.insert(table, n);
    }
    assert_eq!(before["rlm_runs"], 2);
    assert_eq!(before["rlm_latency_events"], 8 * 3);

    let second = import_jsonl(&pool, &[&a, &b], &Prices::builtin(), 1000).await.unwrap();
    assert_eq!(second.inserted, 0);
    for table in tables {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, before[table], "{table}");
    }

    // Stats over this data: what `rlm stats` prints.
    let stats = rlm_trace_postgres::stats(&pool, None, 10).await.unwrap();
    assert_eq!(stats.runs, 2);
    let root = stats.models.iter().find(|m| m.kind == "model" && m.model == "gpt-4o").unwrap();
    assert_eq!(root.calls, 8);
    assert_eq!((root.prompt_tokens, root.completion_tokens, root.cached_tokens), (8000, 800, 1600));
    // 5 calls of 200 ms and 3 of 400 ms: p50 = 200, p99 close to 400.
    assert_eq!(root.p50_ms, Some(200.0));
    assert!(root.p99_ms.unwrap() > 390.0);
    let expected_root_cost = Prices::builtin().cost("gpt-4o", &usage(8000, 800, 1600)).unwrap();
    assert!((root.cost_usd.unwrap() - expected_root_cost).abs() < 1e-9);
    let code = stats.models.iter().find(|m| m.kind == "code").unwrap();
    assert_eq!((code.calls, code.failures), (8, 2));
    assert_eq!(stats.slowest_runs.len(), 2);
    assert_eq!(stats.slowest_runs[0].run_id, run_a[0].run_id, "the five-iteration run took longest");
    assert_eq!(stats.slowest_runs[0].model_calls, 10);
    assert_eq!(stats.slowest_runs[0].cells, 5);
    let text = stats.to_string();
    eprintln!("{text}");
    assert!(text.contains("2 runs"), "{text}");
    assert!(text.contains("gpt-4o-mini"), "{text}");
    assert!(text.contains(&run_a[0].run_id.to_string()), "{text}");
    // --since excludes the older run.
    let recent = rlm_trace_postgres::stats(&pool, Some(Utc::now() - chrono::Duration::minutes(90)), 10).await.unwrap();
    assert_eq!(recent.runs, 1);
    run_b.clear();
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_stopped_mid_run_ends_with_every_event_stored_exactly_once() {
    let server = PgServer::start().expect("PostgreSQL starts");
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.jsonl");
    // Each turn differs: the same turn again and again would end the run as a repetition.
    let turn = |i: usize| repl(&format!("r = llm_query_batched(['a', 'b', 'c'])\nprint(len(r), {i})"));
    let mut script: Vec<Reply> = (0..16).map(|i| Reply::text(turn(i)).with_delay(Duration::from_millis(150))).collect();
    script.push(Reply::text("FINAL(survived)"));
    let model = ScriptedServer::builder()
        .script("root", script)
        .rule(|request| (request.model == "sub").then(|| Reply::text("x").with_delay(Duration::from_millis(50))))
        .start()
        .await
        .unwrap();
    let rlm = Rlm::builder()
        .openai_config(openai(&model))
        .model("root")
        .sub_model("sub")
        .max_iterations(20)
        .trace(TraceTarget::File(trace.clone()))
        .build()
        .unwrap();
    // Connecting gives up quickly, so the outage below is longer than one attempt and events are spooled.
    let config = PostgresSinkConfig {
        linger: Duration::from_millis(5),
        connect_timeout: Duration::from_millis(300),
        ..sink_config(&server.url(), &dir.path().join("spool"))
    };
    let sink = Arc::new(PostgresSink::start(config).unwrap());
    let run = {
        let sink = sink.clone();
        tokio::spawn(async move {
            rlm.completion_with(Context::Text("c".into()), "q", CancellationToken::new(), Some(sink)).await
        })
    };
    // Once the first events are in, stop the database; start it again a little later, while the run goes on.
    let pool = pool(&server.url(), 1).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let stored = async || -> i64 {
        // The table appears when the sink's writer has migrated.
        sqlx::query_scalar("SELECT count(*) FROM rlm_events").fetch_one(&pool).await.unwrap_or(0)
    };
    while stored().await < 3 {
        assert!(Instant::now() < deadline, "no events reached the database");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pool.close().await;
    server.stop().expect("PostgreSQL stops");
    let stopped_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.start_again().expect("PostgreSQL starts again");
    let done = run.await.unwrap().unwrap();
    assert_eq!(done.answer, "survived");
    assert!(stopped_at.elapsed() < Duration::from_secs(30));
    sink.flush().unwrap();
    wait_for_spool_drained(&sink, Duration::from_secs(30)).await;
    let status = sink.close(Duration::from_secs(10));
    eprintln!("fault test: {status:?}");
    assert!(status.spooled > 0, "the outage really spooled events: {status:?}");
    assert_eq!(status.replayed, status.spooled);
    assert_eq!(status.lost, 0);
    model.shutdown().await;

    let (jsonl, _) = read_events(&trace).unwrap();
    let pool = self::pool(&server.url(), 1).await;
    let stored = event_ids(&pool).await;
    let unique: HashSet<Uuid> = stored.iter().copied().collect();
    assert_eq!(unique.len(), stored.len(), "no duplicates");
    let expected: HashSet<Uuid> = jsonl.iter().map(|e| e.event_id).collect();
    assert_eq!(unique, expected, "every event of the trace is in the database");
    // The typed rows and the summary are complete too.
    let cells = jsonl.iter().filter(|e| matches!(e.body, EventBody::Cell(_))).count() as i64;
    assert_eq!(count(&pool, "SELECT count(*) FROM rlm_code_executions").await, cells);
    let (run_cells, calls): (i32, i32) =
        sqlx::query_as("SELECT cells, model_calls FROM rlm_runs").fetch_one(&pool).await.unwrap();
    assert_eq!(i64::from(run_cells), cells);
    assert_eq!(calls, 17 + 16 * 3);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_never_blocks_and_a_full_queue_spills_to_the_spool_without_loss() {
    let server = PgServer::start().expect("PostgreSQL starts");
    let dir = tempfile::tempdir().unwrap();
    let start = Utc::now() - chrono::Duration::minutes(30);
    let events: Vec<TraceEvent> =
        (0..800).flat_map(|i| synthetic_run(start + chrono::Duration::seconds(i), 4, 50.0, 5.0)).collect();
    let total = events.len();
    // A NUL in captured output (PostgreSQL text cannot hold one) is stored, as U+FFFD.
    let mut events = events;
    if let Some(EventBody::Cell(cell)) =
        events.iter_mut().map(|e| &mut e.body).find(|b| matches!(b, EventBody::Cell(_)))
    {
        cell.stdout = "before\0after".into();
    }

    // Throughput: a queue large enough to hold everything; time from the first record to all rows committed.
    let config = PostgresSinkConfig { queue_capacity: total, ..sink_config(&server.url(), &dir.path().join("a")) };
    let sink = PostgresSink::start(config).unwrap();
    // Let the writer connect and migrate first, so only inserts are timed.
    sink.record(&events[0]);
    sink.flush().unwrap();
    let began = Instant::now();
    let mut slowest_record = Duration::ZERO;
    for event in &events[1..] {
        let t = Instant::now();
        sink.record(event);
        slowest_record = slowest_record.max(t.elapsed());
    }
    let recorded_in = began.elapsed();
    sink.flush().unwrap();
    let elapsed = began.elapsed();
    let status = sink.close(Duration::from_secs(10));
    assert_eq!((status.written, status.spooled), (total as u64, 0), "{status:?}");
    let rate = (total - 1) as f64 / elapsed.as_secs_f64();
    eprintln!(
        "throughput: {} events in {:.2} s = {rate:.0} events/s into PostgreSQL (all tables; record() total {:.1} ms, \
         slowest {:?})",
        total - 1,
        elapsed.as_secs_f64(),
        recorded_in.as_secs_f64() * 1000.0,
        slowest_record
    );
    assert!(rate > 500.0, "insert throughput {rate:.0} events/s");
    assert!(recorded_in < elapsed, "record only enqueues");

    // Overflow: a tiny queue. Everything still ends up in the database exactly once.
    let pool = pool(&server.url(), 1).await;
    sqlx::query("TRUNCATE rlm_events, rlm_latency_events, rlm_model_interactions, rlm_code_executions, rlm_runs")
        .execute(&pool)
        .await
        .unwrap();
    let config =
        PostgresSinkConfig { queue_capacity: 16, batch_size: 64, ..sink_config(&server.url(), &dir.path().join("b")) };
    let sink = PostgresSink::start(config).unwrap();
    for event in &events {
        sink.record(event);
    }
    sink.flush().unwrap();
    wait_for_spool_drained(&sink, Duration::from_secs(60)).await;
    let status = sink.close(Duration::from_secs(10));
    eprintln!("overflow: {status:?}");
    assert!(status.overflowed > 0, "{status:?}");
    assert_eq!(status.lost, 0);
    assert_eq!(status.written, total as u64, "{status:?}");
    assert_eq!(count(&pool, "SELECT count(*) FROM rlm_events").await, total as i64);
    assert_eq!(count(&pool, "SELECT count(DISTINCT event_id) FROM rlm_events").await, total as i64);
    assert_eq!(count(&pool, "SELECT count(*) FROM rlm_runs").await, 800);
    assert_eq!(count(&pool, "SELECT count(*) FROM rlm_events WHERE event->>'stdout' = 'before\u{FFFD}after'").await, 1);
    // Summaries were refreshed even where a run's events arrived after its final event.
    assert_eq!(count(&pool, "SELECT count(*) FROM rlm_runs WHERE model_calls = 8 AND cells = 4").await, 800);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_spools_everything_and_import_loads_the_spool() {
    let port = free_port(); // nothing listens here
    let dir = tempfile::tempdir().unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable");
    let sink = PostgresSink::start(sink_config(&url, dir.path())).unwrap();
    let events = synthetic_run(Utc::now(), 2, 10.0, 1.0);
    let began = Instant::now();
    for event in &events {
        sink.record(event);
    }
    sink.flush().unwrap();
    assert!(began.elapsed() < Duration::from_secs(10));
    let status = sink.close(Duration::from_secs(10));
    assert_eq!((status.spooled, status.written, status.lost), (events.len() as u64, 0, 0), "{status:?}");
    assert!(status.last_error.is_some());
    assert!(!status.spool_files.is_empty());

    let server = PgServer::start().expect("PostgreSQL starts");
    let pool = pool(&server.url(), 1).await;
    let report = import_jsonl(&pool, &status.spool_files, &Prices::builtin(), 100).await.unwrap();
    assert_eq!(report.inserted, events.len() as u64);
    assert_eq!(count(&pool, "SELECT count(*) FROM rlm_runs").await, 1);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_database_refuses_is_set_aside_and_the_others_are_stored() {
    let server = PgServer::start().expect("PostgreSQL starts");
    let pool = pool(&server.url(), 1).await;
    rlm_trace_postgres::migrate(&pool).await.unwrap();
    // A data error for one particular cell, as a constraint or a type limit would raise it.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.code = 'poison' THEN \
         RAISE EXCEPTION 'poisoned' USING ERRCODE = '22023'; END IF; RETURN NEW; END $$; CREATE TRIGGER refuse BEFORE \
         INSERT ON rlm_code_executions FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut events = synthetic_run(Utc::now(), 3, 20.0, 2.0);
    let poisoned = events
        .iter_mut()
        .find_map(|e| match &mut e.body {
            EventBody::Cell(cell) => {
                cell.code = "poison".into();
                Some(e.event_id)
            }
            _ => None,
        })
        .unwrap();
    let sink = PostgresSink::start(sink_config(&server.url(), dir.path())).unwrap();
    for event in &events {
        sink.record(event);
    }
    sink.flush().unwrap();
    let status = sink.close(Duration::from_secs(10));
    assert_eq!((status.rejected, status.written, status.lost), (1, events.len() as u64 - 1, 0), "{status:?}");
    assert!(status.spool_files.is_empty(), "a refused event does not hold back the others: {status:?}");
    let (set_aside, _) = read_events(status.rejected_file.as_deref().unwrap()).unwrap();
    assert_eq!(set_aside.iter().map(|e| e.event_id).collect::<Vec<_>>(), [poisoned]);
    assert_eq!(count(&pool, "SELECT count(*) FROM rlm_events").await, events.len() as i64 - 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM rlm_runs").await, 1);
    pool.close().await;
}
