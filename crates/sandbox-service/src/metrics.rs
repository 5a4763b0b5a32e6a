//! Counters for `GET /metrics`, in the Prometheus text exposition format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the cell-duration histogram buckets.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0];

#[derive(Debug, Default)]
pub struct Metrics {
    pub sessions_created: AtomicU64,
    pub sessions_closed: AtomicU64,
    pub sessions_evicted: AtomicU64,
    pub cells_ok: AtomicU64,
    pub cells_error: AtomicU64,
    pub cells_timeout: AtomicU64,
    /// Cells whose interpreter trapped and was rebuilt.
    pub traps: AtomicU64,
    pub sub_call_suspensions: AtomicU64,
    pub rejected_session_limit: AtomicU64,
    pub rejected_unauthorized: AtomicU64,
    pub rejected_busy: AtomicU64,
    pub rejected_owner_limit: AtomicU64,
    /// Connections refused because every open connection was answering a request.
    pub rejected_connections: AtomicU64,
    pub executes: AtomicU64,
    cell_seconds_micros: AtomicU64,
    cell_buckets: [AtomicU64; BUCKETS.len()],
    cell_count: AtomicU64,
}

fn add(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub fn inc(&self, counter: impl Fn(&Self) -> &AtomicU64) {
        add(counter(self));
    }

    /// Counts a finished cell by its result.
    pub fn record_cell(&self, outcome: &rlm_protocol::CellOutcome) {
        self.observe_cell(outcome.duration);
        match &outcome.error {
            None => add(&self.cells_ok),
            Some(error) if error.kind == "TimeoutError" => add(&self.cells_timeout),
            Some(_) => add(&self.cells_error),
        }
        // The wasm executor rebuilds a trapped interpreter and says so in the error.
        if outcome.error.as_ref().is_some_and(|e| e.message.contains("sandbox was restarted")) {
            add(&self.traps);
        }
    }

    fn observe_cell(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        add(&self.cell_count);
        self.cell_seconds_micros.fetch_add(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        for (bound, bucket) in BUCKETS.iter().zip(&self.cell_buckets) {
            if seconds <= *bound {
                add(bucket);
            }
        }
    }

    /// The exposition text; `sessions_active` and `cells_running` are gauges read by the caller.
    pub fn render(&self, sessions_active: usize, cells_running: usize, capacity: usize) -> String {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut out = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        metric("rlm_sandbox_sessions_active", "gauge", "REPL sessions open now.", &[("", sessions_active as u64)]);
        metric(
            "rlm_sandbox_sessions_capacity",
            "gauge",
            "Most sessions the service will hold.",
            &[("", capacity as u64)],
        );
        metric(
            "rlm_sandbox_sessions_total",
            "counter",
            "Sessions by how they started or ended.",
            &[
                ("{event=\"created\"}", get(&self.sessions_created)),
                ("{event=\"closed\"}", get(&self.sessions_closed)),
                ("{event=\"evicted\"}", get(&self.sessions_evicted)),
            ],
        );
        metric("rlm_sandbox_cells_running", "gauge", "Cells executing now.", &[("", cells_running as u64)]);
        metric(
            "rlm_sandbox_cells_total",
            "counter",
            "Finished cells by result.",
            &[
                ("{result=\"ok\"}", get(&self.cells_ok)),
                ("{result=\"error\"}", get(&self.cells_error)),
                ("{result=\"timeout\"}", get(&self.cells_timeout)),
            ],
        );
        metric(
            "rlm_sandbox_traps_total",
            "counter",
            "Interpreters killed by a trap and rebuilt.",
            &[("", get(&self.traps))],
        );
        metric(
            "rlm_sandbox_sub_call_suspensions_total",
            "counter",
            "Times a cell suspended to wait for sub-call results.",
            &[("", get(&self.sub_call_suspensions))],
        );
        metric("rlm_sandbox_executes_total", "counter", "One-shot /execute requests.", &[("", get(&self.executes))]);
        metric(
            "rlm_sandbox_rejections_total",
            "counter",
            "Requests refused, by reason.",
            &[
                ("{reason=\"session_limit\"}", get(&self.rejected_session_limit)),
                ("{reason=\"unauthorized\"}", get(&self.rejected_unauthorized)),
                ("{reason=\"busy\"}", get(&self.rejected_busy)),
                ("{reason=\"owner_session_limit\"}", get(&self.rejected_owner_limit)),
                ("{reason=\"connection_limit\"}", get(&self.rejected_connections)),
            ],
        );
        let _ = writeln!(
            out,
            "# HELP rlm_sandbox_cell_duration_seconds Wall-clock time of finished cells.\n\
             # TYPE rlm_sandbox_cell_duration_seconds histogram"
        );
        for (bound, bucket) in BUCKETS.iter().zip(&self.cell_buckets) {
            let _ = writeln!(out, "rlm_sandbox_cell_duration_seconds_bucket{{le=\"{bound}\"}} {}", get(bucket));
        }
        let count = get(&self.cell_count);
        let _ = writeln!(out, "rlm_sandbox_cell_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let sum = get(&self.cell_seconds_micros) as f64 / 1e6;
        let _ = writeln!(out, "rlm_sandbox_cell_duration_seconds_sum {sum}");
        let _ = writeln!(out, "rlm_sandbox_cell_duration_seconds_count {count}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let metrics = Metrics::default();
        let cell = |ms| rlm_protocol::CellOutcome { duration: Duration::from_millis(ms), ..Default::default() };
        metrics.record_cell(&cell(3));
        metrics.record_cell(&cell(2000));
        let text = metrics.render(1, 0, 64);
        assert!(text.contains("rlm_sandbox_cell_duration_seconds_bucket{le=\"0.001\"} 0"));
        assert!(text.contains("rlm_sandbox_cell_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("rlm_sandbox_cell_duration_seconds_bucket{le=\"5\"} 2"));
        assert!(text.contains("rlm_sandbox_cell_duration_seconds_count 2"));
        assert!(text.contains("rlm_sandbox_cells_total{result=\"ok\"} 2"));
        assert!(text.contains("rlm_sandbox_sessions_active 1"));
    }
}
