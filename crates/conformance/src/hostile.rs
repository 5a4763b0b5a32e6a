//! Running hostile snippets on an [`Executor`] while a bystander session keeps working next to them.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use rlm_protocol::{Context, Executor, ReplSession, SessionSpec};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::corpus::{Expectation, HostileSnippet, LEAK_MARKER};
use crate::target::{ExecutorTarget, NoModels, Observation, Target};

/// The variable the bystander session defines; hostile snippets hunt for it and print [`LEAK_MARKER`] if found.
pub const BYSTANDER_SECRET_NAME: &str = "OTHER_SESSION_SECRET";

/// How hostile snippets are run.
#[derive(Debug, Clone)]
pub struct HostileConfig {
    pub context: Context,
    pub cell_timeout: Duration,
    /// Capture limit of each hostile session; the captured output must stay within it.
    pub max_captured_chars: usize,
    /// Values that must never appear in a hostile snippet's output (fake API keys set in the host process, the
    /// bystander's secret).
    pub secrets: Vec<String>,
    /// The value the bystander binds to [`BYSTANDER_SECRET_NAME`].
    pub bystander_secret: String,
    /// Snippets run at the same time (each in its own session); 1 runs them one after another. Only for executors
    /// whose sessions are isolated from each other (a sandbox): on the local executor, snippets that tamper with the
    /// shared interpreter would see each other.
    pub concurrency: usize,
}

/// The verdict on one hostile snippet.
#[derive(Debug, Clone)]
pub struct HostileResult {
    pub file: String,
    pub expect: Expectation,
    pub observation: Observation,
    /// Empty when the snippet was contained as expected.
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct HostileReport {
    pub results: Vec<HostileResult>,
    /// Problems the bystander session saw while it ran cells in the background.
    pub bystander_failures: Vec<String>,
}

impl HostileReport {
    pub fn failed(&self) -> bool {
        !self.bystander_failures.is_empty() || self.results.iter().any(|r| !r.failures.is_empty())
    }
}

/// Whether `observation` meets `expect`; the reason when it does not.
pub fn check_expectation(expect: &Expectation, observation: &Observation) -> Result<(), String> {
    let kinds = observation.error_kinds();
    let got = || match &observation.failure {
        Some(failure) => format!("executor failure: {failure}"),
        None => {
            format!("cell errors {kinds:?} ({})", observation.last_error().map(ToString::to_string).unwrap_or_default())
        }
    };
    let met = match expect {
        Expectation::Error(expected) => {
            observation.failure.is_none()
                && observation.last_error().is_some_and(|error| expected.contains(&error.kind))
        }
        Expectation::Timeout => observation.failure.is_none() && kinds.iter().any(|k| k == "TimeoutError"),
        Expectation::Contained => observation.failure.is_none() && observation.errors.iter().all(Option::is_none),
        Expectation::Memory => {
            observation.failure.is_some() || kinds.iter().any(|k| k == "MemoryError" || k == "RecursionError")
        }
    };
    if met { Ok(()) } else { Err(format!("expected {expect}, got {}", got())) }
}

/// Runs `snippets`, each in a fresh session of `executor` ([`HostileConfig::concurrency`] at a time), and checks
/// after each one that the process, a bystander session started before them all, and a fresh session still work.
/// The results are in the order of `snippets`.
pub async fn run_hostile(
    executor: Arc<dyn Executor>,
    snippets: &[&HostileSnippet],
    config: &HostileConfig,
) -> HostileReport {
    let target = ExecutorTarget::new(Arc::clone(&executor), config.context.clone(), config.cell_timeout)
        .with_max_captured_chars(config.max_captured_chars);
    let mut report = HostileReport::default();
    let bystander = match Bystander::start(Arc::clone(&executor), config).await {
        Ok(bystander) => bystander,
        Err(err) => {
            report.bystander_failures.push(err);
            return report;
        }
    };
    let signals_before = watched_signal_dispositions();
    let (target, watcher, executor, signals_before) = (&target, &bystander, executor.as_ref(), &signals_before);
    report.results = futures::stream::iter(snippets.iter().copied())
        .map(|snippet| async move {
            let observation = target.run(&snippet.cells).await;
            let mut failures = check_snippet(snippet, &observation, config);
            if let Err(err) = watcher.probe().await {
                failures.push(format!("bystander session after the snippet: {err}"));
            }
            if let Err(err) = fresh_session_probe(executor, config).await {
                failures.push(format!("fresh session after the snippet: {err}"));
            }
            let signals_after = watched_signal_dispositions();
            if signals_after != *signals_before {
                failures.push(format!(
                    "the host process's signal dispositions changed: {signals_before:?} -> {signals_after:?}"
                ));
            }
            HostileResult { file: snippet.file.clone(), expect: snippet.expect.clone(), observation, failures }
        })
        .buffered(config.concurrency.max(1))
        .collect()
        .await;
    report.bystander_failures.extend(bystander.stop().await);
    report
}

/// What is wrong with one snippet's observation: the expectation, leaks, secrets, the capture limit, host paths.
fn check_snippet(snippet: &HostileSnippet, observation: &Observation, config: &HostileConfig) -> Vec<String> {
    let mut failures = Vec::new();
    if let Err(reason) = check_expectation(&snippet.expect, observation) {
        failures.push(reason);
    }
    for (stream, text) in [("stdout", &observation.stdout), ("stderr", &observation.stderr)] {
        if text.contains(LEAK_MARKER) {
            failures.push(format!("{stream} contains {LEAK_MARKER}: {}", excerpt(text, LEAK_MARKER)));
        }
        for secret in config.secrets.iter().chain([&config.bystander_secret]) {
            if text.contains(secret.as_str()) {
                failures.push(format!("{stream} contains a secret value: {}", excerpt(text, secret)));
            }
        }
    }
    let captured = observation.stdout.chars().count() + observation.stderr.chars().count();
    if captured > config.max_captured_chars {
        failures.push(format!("captured {captured} chars, over the limit of {}", config.max_captured_chars));
    }
    for path in &snippet.host_absent {
        if path.exists() {
            failures.push(format!("{} exists on the host", path.display()));
        }
    }
    failures
}

/// Signals whose disposition hostile code might change to keep the host from being stopped or to kill it later:
/// SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGTERM (bit `n - 1` for signal `n`).
const WATCHED_SIGNALS: u64 = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 9) | (1 << 11) | (1 << 13) | (1 << 14);

/// Which of the [`WATCHED_SIGNALS`] this process ignores and catches (`SigIgn` / `SigCgt` of `/proc/self/status`),
/// or `None` where that file does not exist. (Other signals are left out: wasmtime installs its own handlers for
/// SIGSEGV and friends when the first engine is created, which may happen while the snippets run.)
pub fn watched_signal_dispositions() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .map(|bits| bits & WATCHED_SIGNALS)
    };
    Some((mask("SigIgn:")?, mask("SigCgt:")?))
}

fn excerpt(text: &str, needle: &str) -> String {
    let at = text.find(needle).unwrap_or(0);
    let start = text[..at].char_indices().rev().nth(40).map_or(0, |(i, _)| i);
    let shown: String = text[start..].chars().take(120).collect();
    format!("{shown:?}")
}

/// A new session must start and run a cell with print and echo correctly.
async fn fresh_session_probe(executor: &dyn Executor, config: &HostileConfig) -> Result<(), String> {
    let spec = SessionSpec {
        context: config.context.clone(),
        cell_timeout: Duration::from_secs(30),
        max_captured_chars: 10_000,
    };
    let mut session =
        executor.start_session(spec, Arc::new(NoModels)).await.map_err(|e| format!("cannot start: {e}"))?;
    let result = check_cell(session.as_mut(), "probe = sum(range(10))\nprint(probe)\nprobe + 1", "45\n46\n").await;
    session.close().await.map_err(|e| format!("cannot close: {e}"))?;
    result
}

async fn check_cell(session: &mut dyn ReplSession, code: &str, expected_stdout: &str) -> Result<(), String> {
    let outcome = session.run_cell(code).await.map_err(|e| format!("run_cell failed: {e}"))?;
    if let Some(error) = outcome.error {
        return Err(format!("cell failed with {error}"));
    }
    if outcome.stdout != expected_stdout || !outcome.stderr.is_empty() {
        return Err(format!(
            "expected stdout {expected_stdout:?}, got {:?} (stderr {:?})",
            outcome.stdout, outcome.stderr
        ));
    }
    Ok(())
}

type ProbeRequest = oneshot::Sender<Result<(), String>>;

/// A second session, started before the hostile snippets, that keeps running small cells in the background and
/// answers probes between snippets. It holds [`BYSTANDER_SECRET_NAME`].
#[derive(Debug)]
struct Bystander {
    probes: mpsc::Sender<ProbeRequest>,
    task: JoinHandle<Vec<String>>,
}

/// Pause between two background cells of the bystander.
const BYSTANDER_INTERVAL: Duration = Duration::from_millis(50);

impl Bystander {
    async fn start(executor: Arc<dyn Executor>, config: &HostileConfig) -> Result<Self, String> {
        let spec = SessionSpec {
            context: config.context.clone(),
            cell_timeout: Duration::from_secs(60),
            max_captured_chars: 10_000,
        };
        let mut session =
            executor.start_session(spec, Arc::new(NoModels)).await.map_err(|e| format!("bystander: {e}"))?;
        let setup = format!("{BYSTANDER_SECRET_NAME} = {:?}\ncounter = 0\n", config.bystander_secret);
        check_cell(session.as_mut(), &setup, "").await.map_err(|e| format!("bystander setup: {e}"))?;
        let secret_len = config.bystander_secret.chars().count();
        let (probes, mut requests) = mpsc::channel::<ProbeRequest>(1);
        let task = tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut counter = 0_u64;
            loop {
                tokio::select! {
                    request = requests.recv() => {
                        let Some(reply) = request else { break };
                        counter += 1;
                        let _ = reply.send(Self::step(session.as_mut(), counter, secret_len).await);
                    }
                    () = tokio::time::sleep(BYSTANDER_INTERVAL) => {
                        counter += 1;
                        if let Err(err) = Self::step(session.as_mut(), counter, secret_len).await {
                            failures.push(format!("background cell {counter}: {err}"));
                        }
                    }
                }
            }
            if let Err(err) = session.close().await {
                failures.push(format!("close: {err}"));
            }
            failures
        });
        Ok(Self { probes, task })
    }

    /// One cell: bumps the counter, uses an import, print and the echo, and checks its own variables are intact.
    async fn step(session: &mut dyn ReplSession, counter: u64, secret_len: usize) -> Result<(), String> {
        let code = format!(
            "counter += 1\nimport json\nprint(json.dumps({{'n': counter, 'secret': len({BYSTANDER_SECRET_NAME})}}))\n\
             counter * 2"
        );
        let expected = format!("{{\"n\": {counter}, \"secret\": {secret_len}}}\n{}\n", counter * 2);
        check_cell(session, &code, &expected).await
    }

    async fn probe(&self) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.probes.send(reply).await.map_err(|_| "the bystander task has ended".to_owned())?;
        answer.await.map_err(|_| "the bystander task has ended".to_owned())?
    }

    async fn stop(self) -> Vec<String> {
        drop(self.probes);
        self.task.await.unwrap_or_else(|err| vec![format!("the bystander task panicked: {err}")])
    }
}
