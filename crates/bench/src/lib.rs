//! Benchmarks of rlm against a real model endpoint.
//!
//! [`sniah`] generates single-needle retrieval tasks; [`run_task`] answers one with a configured [`rlm::Rlm`] (the
//! base model is an `Rlm` whose route is forced to `direct`); [`summarize`] and [`render_table`] turn results into
//! the per-size table `rlm bench sniah` prints.

pub mod sniah;

use std::fmt::Write as _;

use rlm::{CancellationToken, Completion, Rlm, RlmError};
use serde::Serialize;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid size {0:?}: use a number of characters of at least 1000, or a number with k or m (8k, 1m)")]
    InvalidSize(String),
}

/// Which system answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum System {
    /// The model alone, given the whole context in one call.
    Base,
    /// rlm, with its routing.
    Rlm,
}

impl System {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Base => "base",
            Self::Rlm => "rlm",
        }
    }
}

/// The outcome of one task for one system.
#[derive(Debug, Clone, Serialize)]
pub struct TaskResult {
    pub task: String,
    pub size: String,
    pub system: System,
    pub correct: bool,
    pub expected: String,
    pub answer: Option<String>,
    /// `direct` or `rlm`: the path the run took.
    pub path: String,
    pub finished_by: String,
    pub iterations: u32,
    pub sub_calls: u64,
    pub tokens: u64,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Answers `task` with `rlm` and scores the answer.
pub async fn run_task(rlm: &Rlm, system: System, task: &sniah::Task, cancel: CancellationToken) -> TaskResult {
    let outcome = rlm.completion_with(rlm::Context::text(task.context.clone()), &task.query, cancel, None).await;
    let (completion, failure): (Completion, Option<String>) = match outcome {
        Ok(completion) => (completion, None),
        Err(RlmError::Failed { message, completion }) => (*completion, Some(message)),
        Err(err) => {
            return TaskResult {
                task: task.id.clone(),
                size: task.size_label.clone(),
                system,
                correct: false,
                expected: task.value.clone(),
                answer: None,
                path: String::new(),
                finished_by: "error".to_owned(),
                iterations: 0,
                sub_calls: 0,
                tokens: 0,
                seconds: 0.0,
                error: Some(err.to_string()),
            };
        }
    };
    let answer = failure.is_none().then(|| completion.answer.clone());
    TaskResult {
        task: task.id.clone(),
        size: task.size_label.clone(),
        system,
        correct: sniah::is_correct(answer.as_deref(), &task.value),
        expected: task.value.clone(),
        answer,
        path: completion.path.as_str().to_owned(),
        finished_by: completion.finished_by.as_str().to_owned(),
        iterations: completion.iterations,
        sub_calls: completion.sub_calls,
        tokens: completion.usage.total.total_tokens(),
        seconds: completion.duration_secs,
        error: failure.or(completion.error),
    }
}

/// Totals of one system at one size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub size: String,
    pub system: System,
    pub tasks: usize,
    pub correct: usize,
    pub mean_iterations: f64,
    pub mean_sub_calls: f64,
    pub mean_tokens: f64,
    pub mean_seconds: f64,
    /// How many runs took the direct path.
    pub direct: usize,
    /// How many runs ended without an answer (errors, refusals, limits).
    pub failed: usize,
}

/// One summary per (size, system), in the order sizes and systems first appear in `results`.
pub fn summarize(results: &[TaskResult]) -> Vec<Summary> {
    let mut keys: Vec<(String, System)> = Vec::new();
    for result in results {
        let key = (result.size.clone(), result.system);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.into_iter()
        .map(|(size, system)| {
            let group: Vec<&TaskResult> = results.iter().filter(|r| r.size == size && r.system == system).collect();
            let n = group.len().max(1) as f64;
            let mean = |f: &dyn Fn(&TaskResult) -> f64| group.iter().map(|r| f(r)).sum::<f64>() / n;
            Summary {
                size,
                system,
                tasks: group.len(),
                correct: group.iter().filter(|r| r.correct).count(),
                mean_iterations: mean(&|r| f64::from(r.iterations)),
                mean_sub_calls: mean(&|r| r.sub_calls as f64),
                mean_tokens: mean(&|r| r.tokens as f64),
                mean_seconds: mean(&|r| r.seconds),
                direct: group.iter().filter(|r| r.path == "direct").count(),
                failed: group.iter().filter(|r| r.answer.is_none()).count(),
            }
        })
        .collect()
}

/// A fixed-width table of `summaries`, with a total row per system.
pub fn render_table(summaries: &[Summary]) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{:<6} {:<5} {:>9} {:>7} {:>6} {:>10} {:>10} {:>9} {:>7}",
        "size", "sys", "accuracy", "iters", "subs", "tokens", "s/task", "direct", "failed"
    );
    let row = |text: &mut String, size: &str, s: &Summary| {
        let _ = writeln!(
            text,
            "{:<6} {:<5} {:>9} {:>7.1} {:>6.1} {:>10.0} {:>10.1} {:>9} {:>7}",
            size,
            s.system.as_str(),
            format!("{}/{}", s.correct, s.tasks),
            s.mean_iterations,
            s.mean_sub_calls,
            s.mean_tokens,
            s.mean_seconds,
            format!("{}/{}", s.direct, s.tasks),
            s.failed,
        );
    };
    for summary in summaries {
        row(&mut text, &summary.size, summary);
    }
    for system in [System::Base, System::Rlm] {
        let group: Vec<&Summary> = summaries.iter().filter(|s| s.system == system).collect();
        if group.len() < 2 {
            continue;
        }
        let tasks: usize = group.iter().map(|s| s.tasks).sum();
        let weighted = |f: &dyn Fn(&Summary) -> f64| {
            group.iter().map(|s| f(s) * s.tasks as f64).sum::<f64>() / tasks.max(1) as f64
        };
        let total = Summary {
            size: "all".to_owned(),
            system,
            tasks,
            correct: group.iter().map(|s| s.correct).sum(),
            mean_iterations: weighted(&|s| s.mean_iterations),
            mean_sub_calls: weighted(&|s| s.mean_sub_calls),
            mean_tokens: weighted(&|s| s.mean_tokens),
            mean_seconds: weighted(&|s| s.mean_seconds),
            direct: group.iter().map(|s| s.direct).sum(),
            failed: group.iter().map(|s| s.failed).sum(),
        };
        row(&mut text, "all", &total);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(size: &str, system: System, correct: bool, seconds: f64, path: &str) -> TaskResult {
        TaskResult {
            task: format!("{size}-1"),
            size: size.to_owned(),
            system,
            correct,
            expected: "1234567".to_owned(),
            answer: correct.then(|| "1234567".to_owned()),
            path: path.to_owned(),
            finished_by: "final".to_owned(),
            iterations: 2,
            sub_calls: 0,
            tokens: 1000,
            seconds,
            error: None,
        }
    }

    #[test]
    fn summaries_group_by_size_and_system() {
        let results = [
            result("8k", System::Base, true, 2.0, "direct"),
            result("8k", System::Rlm, true, 4.0, "direct"),
            result("8k", System::Base, false, 4.0, "direct"),
            result("128k", System::Rlm, true, 30.0, "rlm"),
        ];
        let summaries = summarize(&results);
        assert_eq!(summaries.len(), 3);
        assert_eq!((summaries[0].correct, summaries[0].tasks, summaries[0].mean_seconds), (1, 2, 3.0));
        assert_eq!(summaries[0].failed, 1);
        let table = render_table(&summaries);
        assert!(table.contains("8k     base        1/2"), "{table}");
        assert!(table.contains("all    rlm         2/2"), "{table}");
        assert!(!table.contains("all    base"), "one size of base needs no total row:\n{table}");
    }
}
