//! `cargo bench -p rlm-cli --bench engine`
//!
//! 1. Harness overhead per root iteration, against the scripted model server with zero latency. Baseline, measured
//!    in the same run: the same model requests sent straight through the same client (no engine), plus the same
//!    cells run straight in a REPL session. The difference is what the loop itself costs.
//!    Also the CPU time of the thread that awaits each of the three (the loop runs on it), which waiting for other
//!    threads does not inflate. The three are measured in turn, each round starting one later (see docs/benchmarks.md,
//!    session 9: what ran just before moves a part's time); min of 30 rounds, after half a second of the same rounds
//!    unkept (the engine's start-up state, see [`harness_overhead`]).
//! 2. Loading a 100 MB and a 1 GB context: wall time and peak RSS of `rlm exec --context FILE` against plain
//!    `python3` reading the same file into a `str` in the same run.
//!
//! 3. Fan-out over a 100 MB context: one cell cuts the context into 16 prompts of ~6 MB and sends them with
//!    `llm_query_batched`; the cell itself measures the batch's wall time (the sub-call window) and the process's peak
//!    RSS. `rlm run` (a new process, local executor) against the official Python `rlms` 0.1.3 driven by the same
//!    replies from the same kind of server, in the same run. `RLM_BENCH_SKIP_FANOUT=1` skips it.
//!
//! 4. Process start to the first root model call of `rlm run` with a 100 MB and a 1 GB context file, against one
//!    copy of the same file into fresh memory in the same run.
//!
//! Set `RLM_BENCH_SKIP_1GB=1` to skip the 1 GB case (it needs ~1 GB of disk and ~3 GB of free memory), and
//! `RLM_BENCH_HARNESS_ROUNDS=N` to keep N rounds of the harness part instead of 30.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rlm::{ChatMessage, Context, ModelClient, OpenAiClient, OpenAiConfig, Rlm, SessionSpec, TraceTarget};
use rlm_protocol::{ModelRequest, Role};
use rlm_test_support::{Reply, ScriptedServer};

const ITERATIONS: u32 = 60;
/// The last reply ends the run through the `answer` dict, which both this engine and the Python original accept.
const FINAL_REPLY: &str = "Done.\n```repl\nanswer['content'] = 'done'\nanswer['ready'] = True\n```";
const ROUNDS: usize = 3;
/// Rounds of the harness part (each takes a few tens of milliseconds); `RLM_BENCH_HARNESS_ROUNDS` overrides it.
const HARNESS_ROUNDS: usize = 30;
/// How long the harness part runs before its rounds count (see [`harness_overhead`]).
const WARM_UP: Duration = Duration::from_millis(500);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!("rlm benchmark — harness overhead, context loading, start to first call and fan-out\n");
    runtime.block_on(harness_overhead());
    context_loading();
    runtime.block_on(first_root_call());
    if std::env::var_os("RLM_BENCH_SKIP_FANOUT").is_none() {
        runtime.block_on(fan_out());
    }
}

const FANOUT_BYTES: usize = 100_000_000;
const FANOUT_PROMPTS: usize = 16;

/// The cell both programs run; it writes `window_seconds peak_rss_kb answers` to the file named by
/// `RLM_FANOUT_STATS` (both programs run cells in their own process, with its environment).
const FANOUT_CELL: &str = r#"import os, re, time
n = 16
size = len(context) // n
prompts = ["Does this text contain the word NEEDLE? Answer yes or no.\n\n" + context[i * size:(i + 1) * size] for i in range(n)]
started = time.perf_counter()
answers = llm_query_batched(prompts)
window = time.perf_counter() - started
del prompts
hwm = re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1)
open(os.environ["RLM_FANOUT_STATS"], "w").write(f"{window} {hwm} {len(answers)}")
print(window, hwm)"#;

/// A server that answers the fan-out cell, then the final answer, to the root, and "no" to every sub-call.
async fn fan_out_server() -> ScriptedServer {
    ScriptedServer::builder()
        .rule(|request| {
            let first_user = request.messages.iter().find(|(role, _)| role == "user").map(|(_, c)| c.as_str());
            if first_user.is_some_and(|text| text.starts_with("Does this text contain the word NEEDLE?")) {
                return Some(Reply::text("no"));
            }
            let turns = request.messages.iter().filter(|(role, _)| role == "assistant").count();
            let cell = FANOUT_CELL.to_owned();
            Some(Reply::text(if turns == 0 {
                format!("Searching.\n```repl\n{cell}\n```")
            } else {
                FINAL_REPLY.to_owned()
            }))
        })
        .start()
        .await
        .unwrap()
}

/// (wall seconds of the whole program, sub-call window seconds, peak RSS MB) from the stats file the cell wrote.
fn fan_out_stats(stats: &Path, wall: Duration) -> Option<(f64, f64, f64)> {
    let text = std::fs::read_to_string(stats).ok()?;
    let mut parts = text.split_whitespace();
    let window: f64 = parts.next()?.parse().ok()?;
    let hwm_kb: f64 = parts.next()?.parse().ok()?;
    let answers: usize = parts.next()?.parse().ok()?;
    (answers == FANOUT_PROMPTS).then_some((wall.as_secs_f64(), window, hwm_kb / 1024.0))
}

async fn fan_out() {
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("needle-100mb.txt");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&context).unwrap());
        let line = b"the quick brown fox jumps over the lazy dog, again and again and again\n";
        let mut written = 0;
        while written + line.len() <= FANOUT_BYTES {
            if written >= FANOUT_BYTES / 2 && written < FANOUT_BYTES / 2 + line.len() {
                file.write_all(b"the NEEDLE is here\n").unwrap();
                written += 19;
                continue;
            }
            file.write_all(line).unwrap();
            written += line.len();
        }
        file.write_all(&vec![b'.'; FANOUT_BYTES - written]).unwrap();
    }
    let mut ours = Vec::new();
    let mut official = Vec::new();
    for round in 0..ROUNDS {
        let server = fan_out_server().await;
        let stats = dir.path().join(format!("rlm-{round}.txt"));
        let started = Instant::now();
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_rlm"))
            .args([
                "run",
                "--executor",
                "local",
                "--no-trace",
                "--quiet",
                "-m",
                "root",
                "--sub-model",
                "sub",
                "-q",
                "q",
            ])
            .arg("--base-url")
            .arg(server.base_url())
            .arg("--context")
            .arg(&context)
            .env("RLM_FANOUT_STATS", &stats)
            .env("OPENAI_API_KEY", "unused")
            .output()
            .await
            .unwrap();
        let wall = started.elapsed();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        ours.push(fan_out_stats(&stats, wall).expect("rlm's fan-out cell did not report"));
        match official_fan_out(&context, &dir.path().join(format!("official-{round}.txt"))).await {
            Ok(row) => official.push(row),
            Err(why) => println!("official Python `rlms` fan-out not measured: {why}"),
        }
    }
    let best = |rows: &[(f64, f64, f64)], pick: fn(&(f64, f64, f64)) -> f64| {
        rows.iter().map(pick).fold(f64::INFINITY, f64::min)
    };
    let context_mb = FANOUT_BYTES as f64 / 1e6;
    println!(
        "## Fan-out: 100 MB context, {FANOUT_PROMPTS} sub-calls of ~6 MB in one llm_query_batched, min of {ROUNDS}"
    );
    println!("{:<36} {:>10} {:>14} {:>14} {:>12}", "program", "wall s", "window s", "peak RSS MB", "RSS/context");
    for (name, rows) in [("rlm run (local executor)", &ours), ("official Python `rlms` 0.1.3", &official)] {
        if rows.is_empty() {
            continue;
        }
        let rss = best(rows, |r| r.2);
        println!(
            "{name:<36} {:>10.3} {:>14.3} {:>14.1} {:>11.2}x",
            best(rows, |r| r.0),
            best(rows, |r| r.1),
            rss,
            rss * 1.048_576 / context_mb
        );
    }
    if !official.is_empty() {
        println!(
            "{:<36} {:>10.2}x {:>13.2}x {:>13.2}x",
            "ratio rlm / official",
            best(&ours, |r| r.0) / best(&official, |r| r.0),
            best(&ours, |r| r.1) / best(&official, |r| r.1),
            best(&ours, |r| r.2) / best(&official, |r| r.2)
        );
    }
    println!();
}

/// The official package on the same context, replies and cell; `None` when its venv cannot be set up.
async fn official_fan_out(context: &Path, stats: &Path) -> Result<(f64, f64, f64), String> {
    let python = official_python()?;
    let driver = r#"
import sys
from rlm import RLM
url, path = sys.argv[1], sys.argv[2]
rlm = RLM(backend="openai", backend_kwargs={"model_name": "root", "base_url": url, "api_key": "unused"},
          environment="local", max_iterations=4)
rlm.completion(open(path).read(), root_prompt="q")
"#;
    let server = fan_out_server().await;
    let started = Instant::now();
    let output = tokio::process::Command::new(&python)
        .args(["-c", driver, &server.base_url()])
        .arg(context)
        .env("RLM_FANOUT_STATS", stats)
        .output()
        .await
        .map_err(|e| e.to_string())?;
    let wall = started.elapsed();
    fan_out_stats(stats, wall).ok_or_else(|| {
        format!("its cell did not report: {}", String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or(""))
    })
}

fn role(name: &str) -> Role {
    match name {
        "system" => Role::System,
        "assistant" => Role::Assistant,
        _ => Role::User,
    }
}

async fn harness_overhead() {
    // Each turn's code differs (the engine stops a run that repeats the same code), at the same cost.
    let cell = |turn: u32| format!("x = len(context) + {turn}\nprint(x)");
    // Per part (run, client only, cells only): the best wall time, and the CPU time of this thread (the one
    // `block_on` runs the loop on), min of the kept rounds. Unlike the wall time the CPU time does not count waiting
    // for other threads, so a busy machine moves it less.
    let mut best = [Duration::MAX; 3];
    let mut best_cpu = [u64::MAX; 3];
    let trace_dir = tempfile::tempdir().unwrap();
    let rounds = std::env::var("RLM_BENCH_HARNESS_ROUNDS").ok().and_then(|n| n.parse().ok()).unwrap_or(HARNESS_ROUNDS);
    let scripted = || async {
        let replies = (1..ITERATIONS)
            .map(|turn| Reply::text(format!("Checking.\n```repl\n{}\n```", cell(turn))))
            .chain([Reply::text(FINAL_REPLY)]);
        let server = ScriptedServer::builder().script("root", replies).start().await.unwrap();
        let rlm = Rlm::builder()
            .base_url(server.base_url())
            .model("root")
            .max_iterations(ITERATIONS)
            .trace(TraceTarget::Directory(trace_dir.path().to_owned()))
            .build()
            .unwrap();
        (server, rlm)
    };
    // One run first, not measured: it starts the interpreter, and its requests are the ones the client-only baseline
    // replays (every run sends the same ones).
    let (server, rlm) = scripted().await;
    assert_eq!(rlm.completion("some context", "q").await.unwrap().iterations, ITERATIONS);
    let executor = rlm.engine().executor().clone();
    let requests: Vec<ModelRequest> = server
        .requests()
        .into_iter()
        .map(|r| ModelRequest {
            model: r.model,
            messages: Arc::new(
                r.messages.into_iter().map(|(who, content)| ChatMessage { role: role(&who), content }).collect(),
            ),
            max_output_tokens: None,
            temperature: None,
        })
        .collect();
    drop((server, rlm));
    // Rounds that start within `WARM_UP` are not kept: the first ones run before the engine knows whether a core is
    // free (its CPU watcher's first sample takes 250 ms, and until then nobody waits by watching), a state the rest of
    // a run is never in. Then each part is measured right after another one, in turn: what ran just before moves a
    // part's time (on the development VM a run measured right after another run took about 0.7× as long as one
    // measured first in its round), so every part gets every place equally often.
    let warm_up = Instant::now();
    let mut kept_rounds = 0;
    let mut round = 0;
    while kept_rounds < rounds {
        let keep = warm_up.elapsed() >= WARM_UP;
        for step in 0..3 {
            let part = (round + step) % 3;
            let (wall, cpu) = match part {
                0 => {
                    let (_server, rlm) = scripted().await;
                    let cpu = thread_cpu_ns();
                    let started = Instant::now();
                    let done = rlm.completion("some context", "q").await.unwrap();
                    let measured = (started.elapsed(), thread_cpu_ns().saturating_sub(cpu));
                    assert_eq!(done.iterations, ITERATIONS);
                    measured
                }
                1 => {
                    // Baseline 1: the very same requests, straight through the client.
                    let replay = ScriptedServer::builder()
                        .rule(|_| Some(Reply::text("Checking.\n```repl\nx = 1\n```")))
                        .start()
                        .await
                        .unwrap();
                    let client_replay = OpenAiClient::new(OpenAiConfig::new(replay.base_url())).unwrap();
                    let cpu = thread_cpu_ns();
                    let started = Instant::now();
                    for request in &requests {
                        client_replay.complete(request.clone()).await.unwrap();
                    }
                    (started.elapsed(), thread_cpu_ns().saturating_sub(cpu))
                }
                _ => {
                    // Baseline 2: the same cells, straight in a session.
                    let mut session = executor
                        .start_session(SessionSpec::new(Context::from("some context")), Arc::new(rlm::NoModelHost))
                        .await
                        .unwrap();
                    let cpu = thread_cpu_ns();
                    let started = Instant::now();
                    for turn in 1..ITERATIONS {
                        session.run_cell(&cell(turn)).await.unwrap();
                    }
                    let measured = (started.elapsed(), thread_cpu_ns().saturating_sub(cpu));
                    session.close().await.unwrap();
                    measured
                }
            };
            if keep {
                best[part] = best[part].min(wall);
                best_cpu[part] = best_cpu[part].min(cpu);
            }
        }
        round += 1;
        kept_rounds += usize::from(keep);
    }
    let [best_run, best_model, best_cells] = best;
    let [cpu_run, cpu_model, cpu_cells] = best_cpu;
    let per = |d: Duration| d.as_secs_f64() * 1000.0 / f64::from(ITERATIONS);
    let baseline = per(best_model) + per(best_cells);
    println!(
        "## Harness overhead per root iteration ({ITERATIONS} iterations, zero-latency scripted model, JSONL trace on), \
         min of {rounds} rounds after {} ms of warm-up",
        WARM_UP.as_millis()
    );
    println!("{:<52} {:>10}", "", "ms/iter");
    println!("{:<52} {:>10.3}", "rlm run (loop + model call + cell + trace)", per(best_run));
    println!("{:<52} {:>10.3}", "baseline: same model requests, client only", per(best_model));
    println!("{:<52} {:>10.3}", "baseline: same cells, REPL session only", per(best_cells));
    println!("{:<52} {:>10.3}", "harness overhead (run - baselines)", per(best_run) - baseline);
    println!("{:<52} {:>10.2}x", "ratio run / baselines", per(best_run) / baseline);
    if thread_cpu_ns() > 0 {
        let cpu_per = |ns: u64| ns as f64 / 1000.0 / f64::from(ITERATIONS);
        println!("{:<52} {:>10}", "CPU of the thread that awaits it (min of rounds)", "us/iter");
        println!("{:<52} {:>10.1}", "  rlm run", cpu_per(cpu_run));
        println!("{:<52} {:>10.1}", "  same model requests, client only", cpu_per(cpu_model));
        println!("{:<52} {:>10.1}", "  same cells, REPL session only", cpu_per(cpu_cells));
        println!("{:<52} {:>10.1}", "  run - baselines", cpu_per(cpu_run) - cpu_per(cpu_model) - cpu_per(cpu_cells));
    }
    match official_python_rlm(&cell).await {
        Ok(official) => {
            println!("{:<52} {:>10.3}", "official Python `rlms` 0.1.3, same script and server", official);
            println!("{:<52} {:>10.2}x", "ratio official / rlm", official / per(best_run));
        }
        Err(why) => println!("official Python `rlms` baseline not measured: {why}"),
    }
    println!();
}

/// CPU time this thread has used (ns), from the kernel's scheduler statistics; 0 where they are not available.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|ns| ns.parse().ok()))
        .unwrap_or(0)
}

/// The Python original on the same scripted replies and the same kind of server: ms per root iteration (min of
/// the rounds). Installs `rlms==0.1.3` into a venv under target/ on first use.
async fn official_python_rlm(cell: &impl Fn(u32) -> String) -> Result<f64, String> {
    let python = official_python()?;
    let driver = r#"
import sys, time
from rlm import RLM
url, iterations = sys.argv[1], int(sys.argv[2])
rlm = RLM(backend="openai", backend_kwargs={"model_name": "root", "base_url": url, "api_key": "unused"},
          environment="local", max_iterations=iterations)
started = time.perf_counter()
result = rlm.completion("some context", root_prompt="q")
print(time.perf_counter() - started)
"#;
    let mut best = f64::MAX;
    for _ in 0..ROUNDS {
        let replies = (1..ITERATIONS)
            .map(|turn| Reply::text(format!("Checking.\n```repl\n{}\n```", cell(turn))))
            .chain([Reply::text(FINAL_REPLY)]);
        let server = ScriptedServer::builder().script("root", replies).start().await.map_err(|e| e.to_string())?;
        let output = tokio::process::Command::new(&python)
            .args(["-c", driver, &server.base_url(), &ITERATIONS.to_string()])
            .output()
            .await
            .map_err(|e| e.to_string())?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let seconds: f64 = stdout.lines().last().and_then(|l| l.trim().parse().ok()).ok_or_else(|| {
            format!("the driver failed: {}", String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or(""))
        })?;
        let turns = server.requests_for("root").len();
        if turns != ITERATIONS as usize {
            return Err(format!("it made {turns} root calls instead of {ITERATIONS}"));
        }
        best = best.min(seconds * 1000.0 / turns as f64);
    }
    Ok(best)
}

/// The venv's python with `rlms==0.1.3` (installed under target/ on first use).
fn official_python() -> Result<std::path::PathBuf, String> {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-venv-rlms");
    let python = venv.join("bin/python");
    let installed = Command::new(&python).args(["-c", "import rlm"]).output().is_ok_and(|o| o.status.success());
    if !installed {
        let created = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().map_err(|e| e.to_string())?;
        let pip = Command::new(&python).args(["-m", "pip", "install", "-q", "rlms==0.1.3"]).status();
        if !created.success() || !pip.is_ok_and(|s| s.success()) {
            return Err("could not install rlms==0.1.3 into a venv".into());
        }
    }
    Ok(python)
}

/// Peak RSS (kB) printed by the measured program itself, and the wall time of the whole process.
fn measure(command: &mut Command) -> (Duration, u64, String) {
    let started = Instant::now();
    let output = command.output().unwrap();
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let hwm =
        stdout.split(|c: char| !c.is_ascii_digit()).rfind(|s| !s.is_empty()).and_then(|s| s.parse().ok()).unwrap_or(0);
    (elapsed, hwm, stdout)
}

const PEAK_RSS: &str = "import re\nprint(len(context))\nprint(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n";

fn context_loading() {
    let rlm_bin = env!("CARGO_BIN_EXE_rlm");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("peak.py");
    std::fs::write(&script, PEAK_RSS).unwrap();
    let native = format!("context = open(__import__('sys').argv[1]).read()\n{PEAK_RSS}");
    let native_script = dir.path().join("native.py");
    std::fs::write(&native_script, native).unwrap();

    println!("## Loading a context (ASCII text file), min of {ROUNDS} processes");
    println!("{:<10} {:<28} {:>10} {:>14} {:>12}", "size", "program", "wall s", "peak RSS MB", "RSS/size");
    let mut sizes = vec![100usize];
    if std::env::var_os("RLM_BENCH_SKIP_1GB").is_none() {
        sizes.push(1000);
    }
    for mb in sizes {
        let path = dir.path().join(format!("ctx-{mb}.txt"));
        write_context(&path, mb * 1_000_000);
        let mut rows = Vec::new();
        for (name, mut make) in [
            (
                "rlm exec (local executor)",
                Box::new(|| {
                    let mut c = Command::new(rlm_bin);
                    c.arg("exec").arg("--context").arg(&path).arg(&script);
                    c
                }) as Box<dyn FnMut() -> Command>,
            ),
            (
                "python3 open().read()",
                Box::new(|| {
                    let mut c = Command::new("python3");
                    c.arg(&native_script).arg(&path);
                    c
                }),
            ),
        ] {
            let mut best = (Duration::MAX, u64::MAX);
            for _ in 0..ROUNDS {
                let (elapsed, hwm, stdout) = measure(&mut make());
                assert!(stdout.contains(&(mb * 1_000_000).to_string()), "{stdout}");
                best = (best.0.min(elapsed), best.1.min(hwm));
            }
            rows.push((name, best));
        }
        for (name, (elapsed, hwm)) in &rows {
            let rss_mb = *hwm as f64 / 1000.0;
            println!(
                "{:<10} {name:<28} {:>10.3} {rss_mb:>14.1} {:>12.2}",
                format!("{mb} MB"),
                elapsed.as_secs_f64(),
                rss_mb / mb as f64
            );
        }
        let (rlm_row, py_row) = (rows[0].1, rows[1].1);
        println!(
            "{:<10} {:<28} {:>10.2}x {:>13.2}x",
            "",
            "ratio rlm / python3",
            rlm_row.0.as_secs_f64() / py_row.0.as_secs_f64(),
            rlm_row.1 as f64 / py_row.1 as f64
        );
        std::fs::remove_file(&path).unwrap();
    }
}

/// Process start to the first root model call of `rlm run --context FILE` (local executor, page cache warm): the
/// context is loaded into the REPL before the first call. Baseline in the same run: one copy of the same file into
/// fresh memory (`std::fs::read` in this process), the floor the issue sets for loading it.
async fn first_root_call() {
    let dir = tempfile::tempdir().unwrap();
    let mut sizes = vec![100usize];
    if std::env::var_os("RLM_BENCH_SKIP_1GB").is_none() {
        sizes.push(1000);
    }
    println!("## Start to first root call, `rlm run --context FILE` (ASCII text, warm page cache), min of {ROUNDS}");
    println!("{:<10} {:>26} {:>26} {:>10}", "size", "start -> first call s", "one copy (fs::read) s", "ratio");
    for mb in sizes {
        let path = dir.path().join(format!("first-call-{mb}.txt"));
        write_context(&path, mb * 1_000_000);
        drop(std::fs::read(&path).unwrap()); // the page cache holds the file from here on
        let mut best_call = f64::INFINITY;
        let mut best_copy = f64::INFINITY;
        for _ in 0..ROUNDS {
            let first_call: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
            let seen = Arc::clone(&first_call);
            let server = ScriptedServer::builder()
                .rule(move |_| {
                    seen.lock().unwrap().get_or_insert_with(Instant::now);
                    Some(Reply::text(FINAL_REPLY))
                })
                .start()
                .await
                .unwrap();
            let started = Instant::now();
            let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_rlm"))
                .args(["run", "--executor", "local", "--no-trace", "--quiet", "-m", "root", "-q", "q"])
                .arg("--base-url")
                .arg(server.base_url())
                .arg("--context")
                .arg(&path)
                .env("OPENAI_API_KEY", "unused")
                .output()
                .await
                .unwrap();
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            let called = first_call.lock().unwrap().expect("rlm run made no model call");
            best_call = best_call.min((called - started).as_secs_f64());
            // Interleaved with the runs above: the baseline sees the same load.
            let started = Instant::now();
            let copy = std::fs::read(&path).unwrap();
            best_copy = best_copy.min(started.elapsed().as_secs_f64());
            assert_eq!(copy.len(), mb * 1_000_000);
        }
        println!("{:<10} {best_call:>26.3} {best_copy:>26.3} {:>9.2}x", format!("{mb} MB"), best_call / best_copy);
        std::fs::remove_file(&path).unwrap();
    }
    println!();
}

fn write_context(path: &Path, bytes: usize) {
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let line = b"line of filler text about nothing in particular, with a number 1234567\n";
    let mut written = 0;
    while written + line.len() <= bytes {
        file.write_all(line).unwrap();
        written += line.len();
    }
    file.write_all(&vec![b'x'; bytes - written]).unwrap();
    file.flush().unwrap();
}
