//! `cargo bench -p rlm-cli --bench sandbox_load` — bounded in time, loopback only.
//!
//! 64 concurrent sessions run cells for a fixed time through the sandbox service over HTTP (the remote executor
//! against `rlm-sandbox` on 127.0.0.1), then the same load straight on the wasm executor in this process. Prints
//! cells/s and p50/p99 cell latency for both, and the ratio: what the network hop and the service cost.
//! `RLM_BENCH_SECONDS` sets the duration of each phase (default 10).

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rlm::{Context, Executor, NoModelHost, SessionSpec};
use rlm_executor_remote::{RemoteConfig, RemoteExecutor};
use rlm_executor_wasm::{WasmConfig, WasmExecutor};
use rlm_sandbox::{Sandbox, SandboxConfig};

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

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn main() {
    let seconds: u64 = std::env::var("RLM_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let wasm = Arc::new(WasmExecutor::new(WasmConfig::default()).unwrap());
        let config = SandboxConfig { max_sessions: SESSIONS * 2, ..SandboxConfig::default() };
        let workers = config.max_concurrent_cells;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(rlm_sandbox::serve(listener, Sandbox::new(wasm.clone(), config), async {
            let _ = stopped.await;
        }));

        let remote = Arc::new(RemoteExecutor::new(RemoteConfig::new(&url)).unwrap());
        let phase = Duration::from_secs(seconds);
        let over_http = drive(remote.clone(), SESSIONS, phase, None).await;
        let direct = drive(wasm.clone(), SESSIONS, phase, Some(workers)).await;
        let single_http = drive(remote, 1, phase / 2, None).await;
        let single_direct = drive(wasm, 1, phase / 2, None).await;
        let _ = stop.send(());
        server.await.unwrap().unwrap();

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
