//! `cargo bench -p rlm-cli --bench executors`
//!
//! The local (in-process CPython) and wasm (wasmtime + CPython for WASI) executors side by side, in one run:
//! start-up with a cached module, session start, per-cell overhead of a trivial cell, loading a 100 MB context, and
//! idle memory per session. The wasm executor runs twice: starting sessions from its pre-initialised snapshot (the
//! default) and booting CPython for each session (`snapshot: false`, `--no-wasm-snapshot`), the baseline the snapshot
//! is measured against. The wasm module must be installed (scripts/fetch-python-wasm.sh).

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rlm::{Context, Executor, LocalExecutor, NoModelHost, SessionSpec};
use rlm_executor_wasm::{WasmConfig, WasmExecutor};

const CELLS: u32 = 2000;
const SESSIONS_FOR_MEMORY: usize = 20;

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

struct Row {
    cold: Duration,
    session_start: Duration,
    per_cell: Duration,
    load_100mb: Duration,
    idle_kb: f64,
}

/// A new `rlm exec` process running one trivial cell: process start, interpreter (or cached module) load, session,
/// cell, exit. Min of 5.
fn cold_start(args: &[&str]) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_rlm"))
            .args(["exec"])
            .args(args)
            .arg("-")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        best = best.min(started.elapsed());
    }
    best
}

async fn measure(executor: Arc<dyn Executor>, cold: Duration, big: &std::path::Path) -> Row {
    let spec = |context| SessionSpec::new(context);
    // Session start: median of 21 (the first one pays one-time costs, kept out by the median).
    let mut starts = Vec::new();
    for _ in 0..21 {
        let started = Instant::now();
        let session = executor.start_session(spec(Context::from("")), Arc::new(NoModelHost)).await.unwrap();
        starts.push(started.elapsed());
        session.close().await.unwrap();
    }
    starts.sort();
    let session_start = starts[starts.len() / 2];

    let mut session = executor.start_session(spec(Context::from("")), Arc::new(NoModelHost)).await.unwrap();
    for _ in 0..50 {
        session.run_cell("x = 1").await.unwrap();
    }
    let started = Instant::now();
    for _ in 0..CELLS {
        session.run_cell("x = 1").await.unwrap();
    }
    let per_cell = started.elapsed() / CELLS;
    session.close().await.unwrap();

    let mut load_100mb = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let mut session =
            executor.start_session(spec(Context::TextFile(big.to_owned())), Arc::new(NoModelHost)).await.unwrap();
        let outcome = session.run_cell("print(len(context))").await.unwrap();
        load_100mb = load_100mb.min(started.elapsed());
        assert_eq!(outcome.stdout.trim(), "100000000");
        session.close().await.unwrap();
    }

    let before = rss_kb();
    let mut sessions = Vec::new();
    for _ in 0..SESSIONS_FOR_MEMORY {
        let mut session = executor.start_session(spec(Context::from("")), Arc::new(NoModelHost)).await.unwrap();
        session.run_cell("x = [i for i in range(10)]").await.unwrap();
        sessions.push(session);
    }
    let idle_kb = rss_kb().saturating_sub(before) as f64 / SESSIONS_FOR_MEMORY as f64;
    for session in sessions {
        session.close().await.unwrap();
    }
    Row { cold, session_start, per_cell, load_100mb, idle_kb }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("100mb.txt");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        let line = b"the quick brown fox jumps over the lazy dog, again and again and again\n";
        let mut written = 0;
        while written + line.len() <= 100_000_000 {
            file.write_all(line).unwrap();
            written += line.len();
        }
        file.write_all(&vec![b'.'; 100_000_000 - written]).unwrap();
    }
    runtime.block_on(async {
        // The compiled module and the snapshot must be in the disk cache before a cold start can only load them.
        let snapshot = WasmExecutor::new(WasmConfig::default()).unwrap();
        assert!(snapshot.snapshot_source().is_some(), "the wasm executor could not build its snapshot");
        drop(snapshot);
        let local = measure(Arc::new(LocalExecutor::new()), cold_start(&["--executor", "local"]), &big).await;
        let wasm = measure(
            Arc::new(WasmExecutor::new(WasmConfig::default()).unwrap()),
            cold_start(&["--executor", "wasm"]),
            &big,
        )
        .await;
        let fresh = measure(
            Arc::new(WasmExecutor::new(WasmConfig { snapshot: false, ..WasmConfig::default() }).unwrap()),
            cold_start(&["--executor", "wasm", "--no-wasm-snapshot"]),
            &big,
        )
        .await;

        println!(
            "## Executors side by side (local = CPython in-process, wasm = wasmtime + CPython/WASI from the \
             snapshot, wasm boot = the same booting CPython per session)\n"
        );
        println!(
            "{:<44} {:>10} {:>10} {:>10} {:>11} {:>10}",
            "", "local", "wasm", "wasm boot", "wasm/local", "boot/wasm"
        );
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let rows: [(&str, f64, f64, f64); 5] = [
            ("cold start: new `rlm exec` process, one cell, ms", ms(local.cold), ms(wasm.cold), ms(fresh.cold)),
            (
                "session start (median of 21), ms",
                ms(local.session_start),
                ms(wasm.session_start),
                ms(fresh.session_start),
            ),
            ("trivial cell `x = 1` (mean of 2000), ms", ms(local.per_cell), ms(wasm.per_cell), ms(fresh.per_cell)),
            ("100 MB text context: start + len(), ms", ms(local.load_100mb), ms(wasm.load_100mb), ms(fresh.load_100mb)),
            (
                "idle session memory (RSS / session), MB",
                local.idle_kb / 1024.0,
                wasm.idle_kb / 1024.0,
                fresh.idle_kb / 1024.0,
            ),
        ];
        for (name, l, w, f) in rows {
            println!("{name:<44} {l:>10.3} {w:>10.3} {f:>10.3} {:>10.2}x {:>9.1}x", w / l.max(1e-9), f / w.max(1e-9));
        }
    });
}
