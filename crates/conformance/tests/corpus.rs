//! Runs the conformance corpora (`corpus/` at the workspace root; see `corpus/README.md`).
//!
//! * `corpus_headers_are_valid`: the corpora are big enough and every header parses.
//! * `differential_corpus_matches_python3`: every differential snippet on every target, compared with `python3`.
//! * `hostile_corpus_is_contained_locally`: the `# local: yes` hostile snippets on the local executor.
//! * `hostile_corpus_is_contained_by_wasm`: every hostile snippet on the wasm sandbox.
//!
//! The targets are `python3` (the reference), `local` and `wasm`. The wasm interpreter module is installed by
//! `scripts/fetch-python-wasm.sh` when missing (as the executor-wasm tests do).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]

use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Once, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rlm_conformance::compare::Comparison;
use rlm_conformance::hostile::{HostileConfig, HostileReport, run_hostile};
use rlm_conformance::{
    DifferentialSnippet, ExecutorTarget, Expectation, HostileSnippet, Observation, Python3Target, Target, compare,
    context_path, corpus_dir, load_differential, load_hostile,
};
use rlm_executor_local::LocalExecutor;
use rlm_executor_wasm::{WasmConfig, WasmExecutor};
use rlm_protocol::{Context, Executor};

const MIN_DIFFERENTIAL: usize = 90;
const MIN_HOSTILE: usize = 40;
/// Cell time limit of the executor targets in the differential run (no snippet comes near it).
const DIFFERENTIAL_CELL_TIMEOUT: Duration = Duration::from_secs(5);
/// Wall-clock limit of one `python3` subprocess.
const PYTHON3_TIMEOUT: Duration = Duration::from_secs(30);
/// Cell time limit in the hostile run on the local executor: every `timeout` snippet costs this much.
const HOSTILE_CELL_TIMEOUT: Duration = Duration::from_secs(3);
/// Cell time limit on the wasm sandbox for the hostile snippets that must end on their own (not `timeout`): they run
/// concurrently on two cores, next to the other tests, and `recursion_bomb.py` needs about 2 s of CPU there.
const WASM_FINISHING_CELL_TIMEOUT: Duration = Duration::from_secs(30);
const HOSTILE_MAX_CAPTURED_CHARS: usize = 100_000;
/// Snippets run at the same time (per target) in the differential run.
const PARALLEL_SNIPPETS: usize = 4;
/// Hostile snippets run at the same time on the wasm sandbox (each in its own interpreter). Most of the time is spent
/// waiting for cell time limits, so this is more than the number of cores.
const WASM_CONCURRENCY: usize = 6;

/// Fake credentials put in the host process's environment: no hostile snippet may print them.
const FAKE_SECRETS: &[(&str, &str)] =
    &[("OPENAI_API_KEY", "sk-fake-conformance-openai-5f1e2d"), ("LLM_API_KEY", "fake-conformance-llm-key-93ab17")];
const BYSTANDER_SECRET: &str = "bystander-secret-value-0c4f9a61";

/// Sets the fake credentials once, before any test of this binary starts an interpreter or a thread of its own.
fn setup_environment() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (name, value) in FAKE_SECRETS {
            // SAFETY: every test calls this first, under `Once`, before it starts a runtime, an interpreter or a
            // subprocess, so no other thread of this process reads the environment while it is being written.
            unsafe { std::env::set_var(name, value) };
        }
    });
}

fn corpus_context() -> Context {
    Context::Text(std::fs::read_to_string(context_path()).expect("corpus/context.txt"))
}

/// Installs python.wasm with the project's script when the default location has none (set-up, not run time).
fn ensure_wasm_module() {
    let path = WasmConfig::default().module_path;
    if !path.is_file() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-python-wasm.sh");
        let status = std::process::Command::new("bash")
            .arg(script)
            .arg(&path)
            .status()
            .expect("run scripts/fetch-python-wasm.sh");
        assert!(status.success(), "scripts/fetch-python-wasm.sh failed");
    }
    assert!(path.is_file(), "{} is missing", path.display());
}

/// One wasm executor (default configuration) for the whole test binary: the module is loaded once.
fn wasm_executor() -> Arc<WasmExecutor> {
    static EXECUTOR: OnceLock<Arc<WasmExecutor>> = OnceLock::new();
    Arc::clone(EXECUTOR.get_or_init(|| {
        ensure_wasm_module();
        let started = Instant::now();
        let executor = WasmExecutor::new(WasmConfig::default()).expect("wasm executor");
        eprintln!("WasmExecutor::new ({:?}): {:.2} s", executor.module_source(), started.elapsed().as_secs_f64());
        Arc::new(executor)
    }))
}

/// The targets compared with `python3`.
fn differential_targets() -> Vec<Arc<dyn Target>> {
    let local = ExecutorTarget::new(Arc::new(LocalExecutor::new()), corpus_context(), DIFFERENTIAL_CELL_TIMEOUT);
    let wasm = ExecutorTarget::new(wasm_executor(), corpus_context(), DIFFERENTIAL_CELL_TIMEOUT);
    vec![Arc::new(local), Arc::new(wasm)]
}

/// Runs only the snippets whose file name contains this variable's value (to investigate one snippet).
const ONLY_VAR: &str = "RLM_CONFORMANCE_ONLY";

fn selected(file: &str) -> bool {
    std::env::var(ONLY_VAR).map_or(true, |only| file.contains(&only))
}

fn hostile_config(cell_timeout: Duration, concurrency: usize) -> HostileConfig {
    HostileConfig {
        context: corpus_context(),
        cell_timeout,
        max_captured_chars: HOSTILE_MAX_CAPTURED_CHARS,
        secrets: FAKE_SECRETS.iter().map(|(_, value)| (*value).to_owned()).collect(),
        bystander_secret: BYSTANDER_SECRET.to_owned(),
        concurrency,
    }
}

/// Prints one line per snippet (shown with `--nocapture`) and collects every failure into one text.
fn hostile_failures(report: &HostileReport) -> String {
    let mut failures = String::new();
    for result in &report.results {
        let outcome = match &result.observation.failure {
            Some(failure) => format!("executor failure: {failure}"),
            None => format!("errors {:?}", result.observation.error_kinds()),
        };
        let message = match result.observation.last_error() {
            Some(error) => error.message.clone(),
            // What the snippet reported (`blocked: <Kind>` lines), on one line.
            None => result.observation.stdout.split_whitespace().collect::<Vec<_>>().join(" "),
        };
        let message: String = message.chars().take(110).collect();
        eprintln!(
            "  {:<40} expect {:<28} {outcome} ({:.2} s) {message}",
            result.file,
            result.expect.to_string(),
            result.observation.duration.as_secs_f64()
        );
        if !result.failures.is_empty() {
            writeln!(failures, "\n{}:", result.file).unwrap();
            for failure in &result.failures {
                writeln!(failures, "  {failure}").unwrap();
            }
        }
    }
    for failure in &report.bystander_failures {
        writeln!(failures, "\nbystander: {failure}").unwrap();
    }
    failures
}

#[test]
fn corpus_headers_are_valid() {
    setup_environment();
    let differential = load_differential(&corpus_dir().join("differential")).expect("differential corpus");
    let hostile = load_hostile(&corpus_dir().join("hostile")).expect("hostile corpus");
    assert!(differential.len() >= MIN_DIFFERENTIAL, "{} differential snippets", differential.len());
    assert!(hostile.len() >= MIN_HOSTILE, "{} hostile snippets", hostile.len());
    let context = std::fs::read_to_string(context_path()).expect("corpus/context.txt");
    assert!(context.len() < 200_000, "context.txt is {} bytes", context.len());

    // Every intended difference is listed in the README, with its file name.
    let readme = std::fs::read_to_string(corpus_dir().join("README.md")).expect("corpus/README.md");
    for snippet in differential.iter().filter(|s| s.differs.is_some()) {
        assert!(
            readme.contains(&snippet.file),
            "{} has `# differs:` but is not listed in corpus/README.md",
            snippet.file
        );
    }
    assert!(hostile.iter().any(|s| s.local), "no hostile snippet is marked `# local: yes`");
}

/// The outcome of one snippet on every target.
struct SnippetRun {
    snippet: DifferentialSnippet,
    reference: Observation,
    results: Vec<(String, Observation, Comparison)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn differential_corpus_matches_python3() {
    setup_environment();
    let started = Instant::now();
    let mut snippets = load_differential(&corpus_dir().join("differential")).expect("differential corpus");
    snippets.retain(|s| selected(&s.file));
    let reference: Arc<dyn Target> = Arc::new(Python3Target::new(context_path(), PYTHON3_TIMEOUT));
    let targets = tokio::task::spawn_blocking(differential_targets).await.expect("targets");

    let runs: Vec<SnippetRun> = futures::stream::iter(snippets)
        .map(|snippet| {
            let reference = Arc::clone(&reference);
            let targets = targets.clone();
            async move {
                let expected = reference.run(&snippet.cells).await;
                let mut results = Vec::new();
                for target in &targets {
                    let actual = target.run(&snippet.cells).await;
                    let comparison = compare(&snippet, &expected, &actual);
                    results.push((target.name().to_owned(), actual, comparison));
                }
                SnippetRun { snippet, reference: expected, results }
            }
        })
        .buffer_unordered(PARALLEL_SNIPPETS)
        .collect()
        .await;

    let mut report = String::new();
    let mut intended = String::new();
    let mut failures = 0;
    let mut sorted: Vec<&SnippetRun> = runs.iter().collect();
    sorted.sort_by(|a, b| a.snippet.file.cmp(&b.snippet.file));
    for run in &sorted {
        for (target, actual, comparison) in &run.results {
            let header = format!("{} ({}) on {target}", run.snippet.file, run.snippet.name);
            if !comparison.mismatches.is_empty() {
                failures += 1;
                writeln!(report, "\n{header}:").unwrap();
                for mismatch in &comparison.mismatches {
                    writeln!(report, "  {}: {}", mismatch.aspect, mismatch.detail).unwrap();
                }
                if !actual.stderr.is_empty() || !run.reference.stderr.is_empty() {
                    let tail =
                        |s: &str| s.chars().rev().take(300).collect::<Vec<_>>().into_iter().rev().collect::<String>();
                    writeln!(report, "  stderr (python3): {:?}", tail(&run.reference.stderr)).unwrap();
                    writeln!(report, "  stderr ({target}): {:?}", tail(&actual.stderr)).unwrap();
                }
            }
            if let Some(reason) = &run.snippet.differs {
                writeln!(intended, "  {header}: {reason}").unwrap();
                for mismatch in &comparison.intended {
                    writeln!(intended, "    {}: {}", mismatch.aspect, mismatch.detail).unwrap();
                }
                if comparison.intended.is_empty() {
                    writeln!(intended, "    (no difference observed this time)").unwrap();
                }
            }
        }
    }
    let slowest = runs.iter().map(|r| (r.reference.duration, &r.snippet.file)).max();
    eprintln!(
        "differential corpus: {} snippets x {} target(s) in {:.1} s (slowest python3 run: {slowest:?})",
        runs.len(),
        targets.len(),
        started.elapsed().as_secs_f64()
    );
    if !intended.is_empty() {
        eprintln!("intended differences (documented in corpus/README.md):\n{intended}");
    }
    assert!(failures == 0, "{failures} snippet run(s) differ from python3:{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_corpus_is_contained_locally() {
    setup_environment();
    let started = Instant::now();
    let snippets = load_hostile(&corpus_dir().join("hostile")).expect("hostile corpus");
    let local_snippets: Vec<&HostileSnippet> = snippets.iter().filter(|s| s.local && selected(&s.file)).collect();
    // One after another: local sessions share one interpreter.
    let report =
        run_hostile(Arc::new(LocalExecutor::new()), &local_snippets, &hostile_config(HOSTILE_CELL_TIMEOUT, 1)).await;
    let failures = hostile_failures(&report);
    eprintln!(
        "hostile corpus: {} of {} snippets run on local in {:.1} s",
        report.results.len(),
        snippets.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(report.results.len() == local_snippets.len());
    assert!(!report.failed(), "hostile snippets not contained on the local executor:{failures}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_corpus_is_contained_by_wasm() {
    setup_environment();
    let snippets = load_hostile(&corpus_dir().join("hostile")).expect("hostile corpus");
    let all: Vec<&HostileSnippet> = snippets.iter().filter(|s| selected(&s.file)).collect();
    let executor = tokio::task::spawn_blocking(wasm_executor).await.expect("wasm executor");
    let started = Instant::now();
    let executor: Arc<dyn Executor> = executor;
    // Two rounds: the snippets that must end on their own get a generous time limit (the recursion bomb needs about
    // 2 s of CPU, more while other tests share the two cores); the ones that must be stopped get a short one.
    let (stopped, finishing): (Vec<&HostileSnippet>, Vec<&HostileSnippet>) =
        all.iter().partition(|s| s.expect == Expectation::Timeout);
    let mut report =
        run_hostile(Arc::clone(&executor), &finishing, &hostile_config(WASM_FINISHING_CELL_TIMEOUT, WASM_CONCURRENCY))
            .await;
    let second = run_hostile(executor, &stopped, &hostile_config(HOSTILE_CELL_TIMEOUT, WASM_CONCURRENCY)).await;
    report.results.extend(second.results);
    report.bystander_failures.extend(second.bystander_failures);
    report.results.sort_by(|a, b| a.file.cmp(&b.file));
    let failures = hostile_failures(&report);
    eprintln!(
        "hostile corpus: all {} snippets run on wasm in {:.1} s ({WASM_CONCURRENCY} at a time)",
        report.results.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(report.results.len() == all.len());
    assert!(all.len() == snippets.len() || std::env::var_os(ONLY_VAR).is_some());
    assert!(!report.failed(), "hostile snippets not contained by the wasm sandbox:{failures}");
}
