//! `cargo bench -p rlm-cli --bench sandbox_load` — bounded in time, loopback only.
//!
//! 64 concurrent sessions run cells for a fixed time through the sandbox service over HTTP (the remote executor
//! against `rlm-sandbox` on 127.0.0.1), then the same load straight on the wasm executor in this process. Prints
//! cells/s and p50/p99 cell latency for both, and the ratio: what the network hop and the service cost.
//! `RLM_BENCH_SECONDS` sets the duration of each phase (default 10).
//!
//! Before the load: how long opening a session takes (open, then close, one at a time), over HTTP and in-process,
//! with sessions started from the pre-initialised snapshot and, as the baseline, with CPython booted per session.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rlm::{Context, Executor, NoModelHost, SessionSpec};
use rlm_executor_remote::{RemoteConfig, RemoteExecutor};
use rlm_executor_wasm::{WasmConfig, WasmExecutor};
use rlm_sandbox_service::{Sandbox, SandboxConfig};

const SESSIONS: usize = 64;
const CELL: &str = "total = sum(i * i for i in range(2000))";

struct Load {
    cells: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// Runs cells in `sessions` concurrent sessions for `duration`; `workers` bounds the cells executing at once (the
/// service has such a pool; for the in-process phase the same bound is applied here, so both phases schedule alike).
async fn drive(
    executor: Arc<dyn Executor>,
    sessions_wanted: usize,
    duration: Duration,
    workers: Option<usize>,
) -> Load {
    let pool = workers.map(|n| Arc::new(tokio::sync::Semaphore::new(n)));
    let mut sessions = Vec::new();
    for _ in 0..sessions_wanted {
        let spec = SessionSpec::new(Context::from("some context"));
        sessions.push(executor.start_session(spec, Arc::new(NoModelHost)).await.unwrap());
    }
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|mut session| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let cell_started = Instant::now();
                    let _permit = match &pool {
                        Some(pool) => Some(pool.clone().acquire_owned().await.unwrap()),
                        None => None,
                    };
                    let outcome = session.run_cell(CELL).await.unwrap();
                    assert!(outcome.error.is_none(), "{:?}", outcome.error);
                    latencies.push(cell_started.elapsed());
                }
                session.close().await.unwrap();
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Load { cells: latencies.len(), elapsed, latencies }
}

/// Opens and closes `count` sessions one after the other; the sorted time each `start_session` took.
async fn open_latencies(executor: &dyn Executor, count: usize) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let session = executor
            .start_session(SessionSpec::new(Context::from("some context")), Arc::new(NoModelHost))
            .await
            .unwrap();
        latencies.push(started.elapsed());
        session.close().await.unwrap();
    }
    latencies.sort();
    latencies
}

async fn start_service(
    executor: Arc<WasmExecutor>,
    config: SandboxConfig,
) -> (String, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(rlm_sandbox_service::serve(listener, Sandbox::new(executor, config), async {
        let _ = stopped.await;
    }));
    (url, stop, server)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn main() {
    let seconds: u64 = std::env::var("RLM_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let wasm = Arc::new(WasmExecutor::new(WasmConfig::default()).unwrap());
        assert!(wasm.snapshot_source().is_some(), "the wasm executor could not build its snapshot");
        let config = SandboxConfig { max_sessions: SESSIONS * 2, ..SandboxConfig::default() };
        let workers = config.max_concurrent_cells;
        let (url, stop, server) = start_service(wasm.clone(), config.clone()).await;
        let remote = Arc::new(RemoteExecutor::new(RemoteConfig::new(&url)).unwrap());

        const OPENS: usize = 41;
        let booting = Arc::new(WasmExecutor::new(WasmConfig { snapshot: false, ..WasmConfig::default() }).unwrap());
        let (boot_url, boot_stop, boot_server) = start_service(booting.clone(), config).await;
        let boot_remote = RemoteExecutor::new(RemoteConfig::new(&boot_url)).unwrap();
        // One of each first: connections, lazily built state.
        open_latencies(remote.as_ref(), 1).await;
        open_latencies(&boot_remote, 1).await;
        let opens = [
            ("over HTTP, from the snapshot", open_latencies(remote.as_ref(), OPENS).await),
            ("in-process, from the snapshot", open_latencies(wasm.as_ref(), OPENS).await),
            ("over HTTP, booting CPython (baseline)", open_latencies(&boot_remote, OPENS).await),
            ("in-process, booting CPython", open_latencies(booting.as_ref(), OPENS).await),
        ];
        let _ = boot_stop.send(());
        boot_server.await.unwrap().unwrap();
        drop(booting);

        let phase = Duration::from_secs(seconds);
        let over_http = drive(remote.clone(), SESSIONS, phase, None).await;
        let direct = drive(wasm.clone(), SESSIONS, phase, Some(workers)).await;
        let single_http = drive(remote, 1, phase / 2, None).await;
        let single_direct = drive(wasm, 1, phase / 2, None).await;
        let _ = stop.send(());
        server.await.unwrap().unwrap();

        println!("## Opening a session (open + close, one at a time, {OPENS} each)\n");
        println!("{:<40} {:>10} {:>10}", "", "p50 ms", "p99 ms");
        for (name, latencies) in &opens {
            println!("{name:<40} {:>10.3} {:>10.3}", percentile(latencies, 0.5), percentile(latencies, 0.99));
        }
        println!(
            "{:<40} {:>9.1}x\n",
            "baseline / snapshot, over HTTP, p50",
            percentile(&opens[2].1, 0.5) / percentile(&opens[0].1, 0.5)
        );
        println!(
            "## Sandbox service under load: {SESSIONS} concurrent sessions, {seconds} s per phase, cell `{CELL}`, \
             {workers} cell workers\n"
        );
        println!("{:<36} {:>10} {:>10} {:>10} {:>10}", "", "cells", "cells/s", "p50 ms", "p99 ms");
        for (name, load) in
            [("sandbox service over HTTP (loopback)", &over_http), ("wasm executor in-process", &direct)]
        {
            println!(
                "{name:<36} {:>10} {:>10.1} {:>10.2} {:>10.2}",
                load.cells,
                load.cells as f64 / load.elapsed.as_secs_f64(),
                percentile(&load.latencies, 0.50),
                percentile(&load.latencies, 0.99)
            );
        }
        let rate = |l: &Load| l.cells as f64 / l.elapsed.as_secs_f64();
        println!(
            "{:<36} {:>10} {:>9.2}x {:>9.2}x {:>9.2}x",
            "ratio HTTP / in-process",
            "",
            rate(&over_http) / rate(&direct),
            percentile(&over_http.latencies, 0.5) / percentile(&direct.latencies, 0.5),
            percentile(&over_http.latencies, 0.99) / percentile(&direct.latencies, 0.99)
        );
        println!("\none session, cells back to back (the per-cell cost of the hop without queueing):");
        for (name, load) in [("over HTTP", &single_http), ("in-process", &single_direct)] {
            println!(
                "{name:<36} {:>10} {:>10.1} {:>10.3} {:>10.3}",
                load.cells,
                load.cells as f64 / load.elapsed.as_secs_f64(),
                percentile(&load.latencies, 0.50),
                percentile(&load.latencies, 0.99)
            );
        }
        println!(
            "{:<36} {:>10} {:>10} {:>10.3}",
            "HTTP hop per cell, p50 ms",
            "",
            "",
            percentile(&single_http.latencies, 0.5) - percentile(&single_direct.latencies, 0.5)
        );
    });
}
