//! Forwards the engine's `tracing` events to Python's `logging` (logger `rlm.<module path>`), so applications
//! configure rlm's logs like any other library's.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// The least severe `logging` level forwarded, in tenths (`logging.WARNING` = 30 -> 3); 0 before installation.
static MIN_LEVEL: AtomicU8 = AtomicU8::new(0);
static INSTALLED: OnceLock<bool> = OnceLock::new();

fn python_level(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 40,
        tracing::Level::WARN => 30,
        tracing::Level::INFO => 20,
        tracing::Level::DEBUG | tracing::Level::TRACE => 10,
    }
}

struct Bridge;

/// rlm's own events at or above the level; the HTTP and runtime libraries' debug chatter is not the application's.
fn forwarded(metadata: &tracing::Metadata<'_>) -> bool {
    let min = MIN_LEVEL.load(Ordering::Relaxed);
    min != 0 && python_level(metadata.level()) >= min && metadata.target().starts_with("rlm")
}

#[derive(Default)]
struct Message {
    text: String,
    fields: String,
}

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.text = format!("{value:?}");
        } else {
            self.fields.push_str(&format!(" {}={value:?}", field.name()));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.text = value.to_owned();
        } else {
            self.fields.push_str(&format!(" {}={value}", field.name()));
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Bridge {
    fn register_callsite(&self, metadata: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        if metadata.target().starts_with("rlm") {
            // The level can change at run time (`install_log_bridge` again): let tracing ask every time.
            tracing::subscriber::Interest::sometimes()
        } else {
            // Other libraries' events (HTTP, runtime) are never forwarded: tracing then skips them at no cost.
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(&self, metadata: &tracing::Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        forwarded(metadata)
    }

    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if !forwarded(event.metadata()) {
            return;
        }
        let level = python_level(event.metadata().level());
        let mut message = Message::default();
        event.record(&mut message);
        // `rlm_engine::run` -> `rlm.engine.run`; `rlm.run` (the run log) stays.
        let target = event.metadata().target();
        let name = match target.strip_prefix("rlm_") {
            Some(rest) => format!("rlm.{}", rest.replace("::", ".")),
            None => target.replace("::", "."),
        };
        // `try_attach`: events may come while the interpreter is shutting down; they are dropped then.
        let _ = Python::try_attach(|py| -> PyResult<()> {
            let logger = py.import("logging")?.call_method1("getLogger", (name,))?;
            logger.call_method1("log", (level, format!("{}{}", message.text, message.fields)))?;
            Ok(())
        });
    }
}

/// Starts forwarding events at `level` (a `logging` level number) and above. Called again, it changes the level. A
/// process that already has a `tracing` subscriber (none, normally) keeps it and gets no forwarding.
#[pyfunction]
pub(crate) fn install_log_bridge(level: u8) -> bool {
    MIN_LEVEL.store(level.max(1), Ordering::Relaxed);
    *INSTALLED.get_or_init(|| tracing_subscriber::registry().with(Bridge).try_init().is_ok())
}

/// Logs a run's steps as `INFO` events of target `rlm.run` (the original's `enable_logging`), so they reach Python's
/// `logging` through the bridge.
#[derive(Debug, Default)]
pub(crate) struct RunLog;

/// The first `limit` characters of `text` on one line.
fn preview(text: &str, limit: usize) -> String {
    let flat: String = text.trim().chars().map(|c| if c == '\n' { '⏎' } else { c }).take(limit + 1).collect();
    if flat.chars().count() > limit { format!("{}…", flat.chars().take(limit).collect::<String>()) } else { flat }
}

impl rlm::TraceSink for RunLog {
    fn record(&self, event: &rlm::TraceEvent) {
        let depth = event.depth;
        let iteration = event.iteration.unwrap_or_default();
        match &event.body {
            rlm::EventBody::Metadata(_) => {
                tracing::info!(target: "rlm.run", "depth {depth}: run {} started", event.run_id)
            }
            rlm::EventBody::ModelCall(call) => tracing::info!(
                target: "rlm.run",
                "depth {depth} iteration {iteration}: {} answered in {:.0} ms: {}",
                call.model,
                call.latency_ms,
                preview(call.response.as_deref().or(call.error.as_deref()).unwrap_or_default(), 200)
            ),
            rlm::EventBody::Cell(cell) => tracing::info!(
                target: "rlm.run",
                "depth {depth} iteration {iteration}: code ran in {:.1} ms{}: {}",
                cell.duration_ms,
                cell.error.as_ref().map(|e| format!(" ({}: {})", e.kind, preview(&e.message, 80))).unwrap_or_default(),
                preview(&cell.stdout, 200)
            ),
            rlm::EventBody::SubCall(call) => tracing::info!(
                target: "rlm.run",
                "depth {depth} iteration {iteration}: sub-call to {} in {:.0} ms",
                call.model,
                call.latency_ms
            ),
            rlm::EventBody::Compaction(record) => tracing::info!(
                target: "rlm.run",
                "depth {depth} iteration {iteration}: {} earlier messages summarised ({} -> {} tokens of a {}-token window)",
                record.replaced_messages,
                record.tokens_before,
                record.tokens_after,
                record.window_tokens
            ),
            rlm::EventBody::Final(end) => tracing::info!(
                target: "rlm.run",
                "depth {depth}: finished by {} after {} iterations, {} sub-calls: {}",
                end.finished_by.as_str(),
                end.iterations,
                end.sub_calls,
                preview(end.answer.as_deref().unwrap_or_default(), 200)
            ),
        }
    }

    fn flush(&self) -> rlm_protocol::Result<()> {
        Ok(())
    }
}
