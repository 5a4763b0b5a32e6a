//! Prometheus metrics in the text exposition format, written by hand: a few counters, a gauge and a histogram.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rlm::{FinishedBy, UsageReport};

/// Upper bounds (seconds) of the run-duration histogram buckets.
const DURATION_BUCKETS: [f64; 12] = [0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];

const FINISHED_BY: [FinishedBy; 7] = [
    FinishedBy::Final,
    FinishedBy::FinalVar,
    FinishedBy::Answer,
    FinishedBy::Limit,
    FinishedBy::Cancelled,
    FinishedBy::Error,
    FinishedBy::Direct,
];

#[derive(Debug, Default)]
pub struct Metrics {
    started: AtomicU64,
    rejected_busy: AtomicU64,
    in_flight: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    finished: BTreeMap<&'static str, u64>,
    /// Cumulative counts per bucket of [`DURATION_BUCKETS`].
    buckets: [u64; DURATION_BUCKETS.len()],
    duration_sum: f64,
    duration_count: u64,
    /// Per model: (prompt tokens, completion tokens, cached tokens, calls).
    models: BTreeMap<String, [u64; 4]>,
}

impl Metrics {
    pub fn run_started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn run_rejected_busy(&self) {
        self.rejected_busy.fetch_add(1, Ordering::Relaxed);
    }

    /// A run ended; `usage` is that of the whole run tree.
    pub fn run_finished(&self, finished_by: FinishedBy, duration: Duration, usage: Option<&UsageReport>) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let secs = duration.as_secs_f64();
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        *inner.finished.entry(finished_by.as_str()).or_default() += 1;
        for (bucket, bound) in inner.buckets.iter_mut().zip(DURATION_BUCKETS) {
            if secs <= bound {
                *bucket += 1;
            }
        }
        inner.duration_sum += secs;
        inner.duration_count += 1;
        for (model, usage) in usage.map(|u| &u.by_model).into_iter().flatten() {
            let counts = inner.models.entry(model.clone()).or_default();
            counts[0] += usage.prompt_tokens;
            counts[1] += usage.completion_tokens;
            counts[2] += usage.cached_tokens;
            counts[3] += usage.calls;
        }
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self, max_concurrent_runs: usize) -> String {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut lines = String::new();
        let _ = writeln!(lines, "# HELP rlm_runs_started_total Runs started.");
        let _ = writeln!(lines, "# TYPE rlm_runs_started_total counter");
        let _ = writeln!(lines, "rlm_runs_started_total {}", self.started.load(Ordering::Relaxed));
        let _ = writeln!(lines, "# HELP rlm_runs_finished_total Runs finished, by how they ended.");
        let _ = writeln!(lines, "# TYPE rlm_runs_finished_total counter");
        for finished_by in FINISHED_BY {
            let name = finished_by.as_str();
            let count = inner.finished.get(name).copied().unwrap_or(0);
            let _ = writeln!(lines, "rlm_runs_finished_total{{finished_by=\"{name}\"}} {count}");
        }
        let _ = writeln!(lines, "# HELP rlm_runs_rejected_total Run requests refused because all run slots were busy.");
        let _ = writeln!(lines, "# TYPE rlm_runs_rejected_total counter");
        let _ = writeln!(
            lines,
            "rlm_runs_rejected_total{{reason=\"busy\"}} {}",
            self.rejected_busy.load(Ordering::Relaxed)
        );
        let _ = writeln!(lines, "# HELP rlm_runs_in_flight Runs executing now.");
        let _ = writeln!(lines, "# TYPE rlm_runs_in_flight gauge");
        let _ = writeln!(lines, "rlm_runs_in_flight {}", self.in_flight());
        let _ = writeln!(lines, "# HELP rlm_runs_max_concurrent Runs that may execute at once.");
        let _ = writeln!(lines, "# TYPE rlm_runs_max_concurrent gauge");
        let _ = writeln!(lines, "rlm_runs_max_concurrent {max_concurrent_runs}");

        let _ = writeln!(lines, "# HELP rlm_run_duration_seconds Wall-clock duration of finished runs.");
        let _ = writeln!(lines, "# TYPE rlm_run_duration_seconds histogram");
        for (bound, count) in DURATION_BUCKETS.iter().zip(inner.buckets) {
            let _ = writeln!(lines, "rlm_run_duration_seconds_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(lines, "rlm_run_duration_seconds_bucket{{le=\"+Inf\"}} {}", inner.duration_count);
        let _ = writeln!(lines, "rlm_run_duration_seconds_sum {}", inner.duration_sum);
        let _ = writeln!(lines, "rlm_run_duration_seconds_count {}", inner.duration_count);

        let _ = writeln!(lines, "# HELP rlm_model_tokens_total Model tokens used by finished runs (whole run trees).");
        let _ = writeln!(lines, "# TYPE rlm_model_tokens_total counter");
        for (model, counts) in &inner.models {
            let model = escape_label(model);
            for (kind, count) in [("prompt", counts[0]), ("completion", counts[1]), ("cached", counts[2])] {
                let _ = writeln!(lines, "rlm_model_tokens_total{{model=\"{model}\",kind=\"{kind}\"}} {count}");
            }
        }
        let _ = writeln!(lines, "# HELP rlm_model_calls_total Model calls made by finished runs (whole run trees).");
        let _ = writeln!(lines, "# TYPE rlm_model_calls_total counter");
        for (model, counts) in &inner.models {
            let _ = writeln!(lines, "rlm_model_calls_total{{model=\"{}\"}} {}", escape_label(model), counts[3]);
        }
        lines
    }
}

/// Escapes a label value: backslash, double quote and newline.
fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use rlm::Usage;

    use super::*;

    #[test]
    fn renders_counters_histogram_and_tokens() {
        let metrics = Metrics::default();
        metrics.run_started();
        metrics.run_started();
        let mut usage = UsageReport::default();
        usage.add(
            "m\"x",
            Usage { prompt_tokens: 10, completion_tokens: 3, cached_tokens: 1, calls: 2, ..Usage::default() },
        );
        metrics.run_finished(FinishedBy::Final, Duration::from_millis(700), Some(&usage));
        metrics.run_rejected_busy();
        let text = metrics.render(4);
        assert!(text.contains("rlm_runs_started_total 2\n"), "{text}");
        assert!(text.contains("rlm_runs_finished_total{finished_by=\"final\"} 1\n"), "{text}");
        assert!(text.contains("rlm_runs_finished_total{finished_by=\"cancelled\"} 0\n"), "{text}");
        assert!(text.contains("rlm_runs_in_flight 1\n"), "{text}");
        assert!(text.contains("rlm_runs_rejected_total{reason=\"busy\"} 1\n"), "{text}");
        assert!(text.contains("rlm_run_duration_seconds_bucket{le=\"0.5\"} 0\n"), "{text}");
        assert!(text.contains("rlm_run_duration_seconds_bucket{le=\"1\"} 1\n"), "{text}");
        assert!(text.contains("rlm_run_duration_seconds_count 1\n"), "{text}");
        assert!(text.contains("rlm_model_tokens_total{model=\"m\\\"x\",kind=\"prompt\"} 10\n"), "{text}");
        assert!(text.contains("rlm_model_calls_total{model=\"m\\\"x\"} 2\n"), "{text}");
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap_or_default();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
