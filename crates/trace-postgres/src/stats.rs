//! `rlm stats`: latency percentiles, tokens and cost per model, and the slowest runs.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::Row;
use sqlx::postgres::PgPool;
use uuid::Uuid;

use crate::TraceDbError;

/// Latency, tokens and cost of one model (or of code execution / child runs) over the period.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelStats {
    /// `model` (root-loop calls and `llm_query`), `child_run` (`rlm_query` calls that ran a child RLM: their latency
    /// is the whole child run) or `code` (executed cells; model is `python`).
    pub kind: String,
    pub model: String,
    pub calls: i64,
    pub failures: i64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    /// `None` when no call of the model had a price.
    pub cost_usd: Option<f64>,
}

/// One run's summary row.
#[derive(Debug, Clone, PartialEq)]
pub struct RunStats {
    pub run_id: Uuid,
    pub depth: i32,
    pub started_at: DateTime<Utc>,
    pub status: String,
    pub root_model: Option<String>,
    pub duration_ms: f64,
    pub iterations: i32,
    pub model_calls: i32,
    pub cells: i32,
    pub tokens: i64,
    pub cost_usd: Option<f64>,
}

/// The result of [`stats`]; `Display` prints it as tables.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub since: Option<DateTime<Utc>>,
    /// Top-level runs that finished in the period.
    pub runs: i64,
    /// Tokens and cost of those runs (their whole trees).
    pub tokens: i64,
    pub cost_usd: Option<f64>,
    pub models: Vec<ModelStats>,
    pub slowest_runs: Vec<RunStats>,
}

const MODEL_STATS: &str = "
WITH lat AS (
    SELECT CASE WHEN event_type = 'code_execution' THEN 'code'
                WHEN subtype = 'rlm' THEN 'child_run' ELSE 'model' END AS kind,
           coalesce(model, 'python') AS model,
           count(*) AS calls,
           count(*) FILTER (WHERE NOT success) AS failures,
           percentile_cont(0.50) WITHIN GROUP (ORDER BY duration_ms) AS p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99,
           max(duration_ms) AS max_ms
    FROM rlm_latency_events
    WHERE time >= $1
    GROUP BY 1, 2
), tok AS (
    SELECT model,
           sum(prompt_tokens)::int8 AS prompt_tokens,
           sum(completion_tokens)::int8 AS completion_tokens,
           sum(cached_tokens)::int8 AS cached_tokens,
           sum(cost_usd) AS cost_usd
    FROM rlm_model_interactions
    WHERE time >= $1
    GROUP BY model
)
SELECT lat.kind, lat.model, lat.calls, lat.failures, lat.p50, lat.p95, lat.p99, lat.max_ms,
       coalesce(tok.prompt_tokens, 0) AS prompt_tokens, coalesce(tok.completion_tokens, 0) AS completion_tokens,
       coalesce(tok.cached_tokens, 0) AS cached_tokens, tok.cost_usd
FROM lat LEFT JOIN tok ON lat.kind = 'model' AND tok.model = lat.model
ORDER BY CASE lat.kind WHEN 'model' THEN 0 WHEN 'child_run' THEN 1 ELSE 2 END, lat.calls DESC, lat.model";

const TOTALS: &str = "
SELECT count(*) AS runs, coalesce(sum(prompt_tokens + completion_tokens), 0)::int8 AS tokens, sum(cost_usd) AS cost
FROM rlm_runs WHERE time >= $1 AND depth = 0";

const SLOWEST: &str = "
SELECT run_id, depth, started_at, status, root_model, duration_ms, iterations, model_calls, cells,
       (prompt_tokens + completion_tokens) AS tokens, cost_usd
FROM rlm_runs WHERE time >= $1
ORDER BY duration_ms DESC, run_id
LIMIT $2";

/// Statistics of everything stored since `since` (all time when `None`), with the `slowest` longest runs.
pub async fn stats(pool: &PgPool, since: Option<DateTime<Utc>>, slowest: i64) -> Result<Stats, TraceDbError> {
    let from = since.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let mut models = Vec::new();
    for row in sqlx::query(MODEL_STATS).bind(from).fetch_all(pool).await? {
        models.push(ModelStats {
            kind: row.try_get("kind")?,
            model: row.try_get("model")?,
            calls: row.try_get("calls")?,
            failures: row.try_get("failures")?,
            p50_ms: row.try_get("p50")?,
            p95_ms: row.try_get("p95")?,
            p99_ms: row.try_get("p99")?,
            max_ms: row.try_get("max_ms")?,
            prompt_tokens: row.try_get("prompt_tokens")?,
            completion_tokens: row.try_get("completion_tokens")?,
            cached_tokens: row.try_get("cached_tokens")?,
            cost_usd: row.try_get("cost_usd")?,
        });
    }
    let totals = sqlx::query(TOTALS).bind(from).fetch_one(pool).await?;
    let mut slowest_runs = Vec::new();
    for row in sqlx::query(SLOWEST).bind(from).bind(slowest.max(0)).fetch_all(pool).await? {
        slowest_runs.push(RunStats {
            run_id: row.try_get("run_id")?,
            depth: row.try_get("depth")?,
            started_at: row.try_get("started_at")?,
            status: row.try_get("status")?,
            root_model: row.try_get("root_model")?,
            duration_ms: row.try_get("duration_ms")?,
            iterations: row.try_get("iterations")?,
            model_calls: row.try_get("model_calls")?,
            cells: row.try_get("cells")?,
            tokens: row.try_get("tokens")?,
            cost_usd: row.try_get("cost_usd")?,
        });
    }
    Ok(Stats {
        since,
        runs: totals.try_get("runs")?,
        tokens: totals.try_get("tokens")?,
        cost_usd: totals.try_get("cost")?,
        models,
        slowest_runs,
    })
}

/// [`parse_since`] relative to the current time.
pub fn parse_since_now(text: &str) -> Result<DateTime<Utc>, TraceDbError> {
    parse_since(text, Utc::now())
}

/// Parses `--since`: a duration back from `now` (`90s`, `30m`, `1h`, `2d`, `1w`), a date (`2026-11-01`, midnight
/// UTC) or an RFC 3339 time.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, TraceDbError> {
    let text = text.trim();
    let bad = || {
        TraceDbError::Config(format!(
            "--since: expected e.g. 1h, 30m, 2d, 2026-11-01 or an RFC 3339 time, got {text:?}"
        ))
    };
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return date.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).ok_or_else(bad);
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit.trim() {
        "s" | "sec" | "secs" => 1,
        "m" | "min" | "mins" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 604_800,
        _ => return Err(bad()),
    };
    let delta = chrono::Duration::try_seconds(n.checked_mul(seconds).ok_or_else(bad)?).ok_or_else(bad)?;
    now.checked_sub_signed(delta).ok_or_else(bad)
}

fn ms(value: Option<f64>) -> String {
    match value {
        Some(v) if v >= 10_000.0 => format!("{:.1}s", v / 1000.0),
        Some(v) => format!("{v:.1}"),
        None => "-".into(),
    }
}

fn usd(value: Option<f64>) -> String {
    value.map(|v| format!("${v:.4}")).unwrap_or_else(|| "-".into())
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.since {
            Some(since) => writeln!(f, "since {}", since.format("%Y-%m-%d %H:%M:%S UTC"))?,
            None => writeln!(f, "all time")?,
        }
        writeln!(f, "{} runs, {} tokens, cost {}", self.runs, self.tokens, usd(self.cost_usd))?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<10} {:<28} {:>7} {:>6} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9} {:>10}",
            "kind",
            "model",
            "calls",
            "fail",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "prompt",
            "completion",
            "cached",
            "cost"
        )?;
        for m in &self.models {
            writeln!(
                f,
                "{:<10} {:<28} {:>7} {:>6} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9} {:>10}",
                m.kind,
                m.model,
                m.calls,
                m.failures,
                ms(m.p50_ms),
                ms(m.p95_ms),
                ms(m.p99_ms),
                ms(m.max_ms),
                m.prompt_tokens,
                m.completion_tokens,
                m.cached_tokens,
                if m.kind == "model" { usd(m.cost_usd) } else { "-".into() },
            )?;
        }
        writeln!(f)?;
        writeln!(f, "slowest runs")?;
        writeln!(
            f,
            "{:<36} {:>5} {:<20} {:<10} {:<24} {:>10} {:>5} {:>6} {:>5} {:>9} {:>10}",
            "run_id",
            "depth",
            "started (UTC)",
            "status",
            "root model",
            "duration",
            "iter",
            "calls",
            "cells",
            "tokens",
            "cost"
        )?;
        for r in &self.slowest_runs {
            writeln!(
                f,
                "{:<36} {:>5} {:<20} {:<10} {:<24} {:>10} {:>5} {:>6} {:>5} {:>9} {:>10}",
                r.run_id,
                r.depth,
                r.started_at.format("%Y-%m-%d %H:%M:%S"),
                r.status,
                r.root_model.as_deref().unwrap_or("-"),
                format!("{:.2}s", r.duration_ms / 1000.0),
                r.iterations,
                r.model_calls,
                r.cells,
                r.tokens,
                usd(r.cost_usd),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn since_accepts_durations_dates_and_times() -> Result<(), TraceDbError> {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).single().unwrap_or_default();
        assert_eq!(parse_since("1h", now)?, now - chrono::Duration::hours(1));
        assert_eq!(parse_since("30m", now)?, now - chrono::Duration::minutes(30));
        assert_eq!(parse_since("2d", now)?, now - chrono::Duration::days(2));
        assert_eq!(parse_since("1w", now)?, now - chrono::Duration::days(7));
        assert_eq!(
            parse_since("2026-11-01", now)?,
            Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).single().unwrap_or_default()
        );
        assert_eq!(
            parse_since("2026-11-01T10:00:00+02:00", now)?,
            Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).single().unwrap_or_default()
        );
        for bad in ["", "h", "5 parsecs", "yesterday", "99999999999999999999h"] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
        Ok(())
    }
}
