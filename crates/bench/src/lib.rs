//! Benchmarks of rlm against a real model endpoint.
//!
//! Task families ([`Family`]) generate tasks deterministically from a seed: [`sniah`] single-needle retrieval,
//! [`multikey`] look-alike keys, [`multivalue`] every value of one key, [`aggregate`] OOLONG-style counts and sums
//! over records, [`pairs`] pairs of records that meet a condition, [`multihop`] two facts to chain. [`run_task`]
//! answers one with a configured [`rlm::Rlm`] (the base model is an `Rlm` whose route is forced to `direct`) and
//! scores it ([`Expected::score`]); [`summarize`] and [`render_table`] turn results into the table `rlm bench` prints.

pub mod aggregate;
mod haystack;
pub mod multihop;
pub mod multikey;
pub mod multivalue;
pub mod pairs;
pub mod records;
pub mod score;
pub mod sniah;

use std::fmt::Write as _;

use rlm::{CancellationToken, Completion, Rlm, RlmError};
use serde::Serialize;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid size {0:?}: use a number of characters of at least 1000, or a number with k or m (8k, 1m)")]
    InvalidSize(String),
    #[error("unknown task family {0:?}: use one of sniah, multikey, multivalue, aggregate, pairs, multihop, or all")]
    UnknownFamily(String),
}

/// A kind of task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// One 7-digit value hidden in filler (RULER's single needle).
    Sniah,
    /// One value of one key among statements about look-alike keys.
    Multikey,
    /// Every value stated for one key; scored by F1.
    Multivalue,
    /// Counts, sums, most-common values and comparisons over every record (OOLONG-synth style).
    Aggregate,
    /// Every pair of records that meets a condition; scored by F1 over pairs.
    Pairs,
    /// Two facts stated apart, chained.
    Multihop,
}

impl Family {
    pub const ALL: [Self; 6] =
        [Self::Sniah, Self::Multikey, Self::Multivalue, Self::Aggregate, Self::Pairs, Self::Multihop];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sniah => "sniah",
            Self::Multikey => "multikey",
            Self::Multivalue => "multivalue",
            Self::Aggregate => "aggregate",
            Self::Pairs => "pairs",
            Self::Multihop => "multihop",
        }
    }

    /// Families from a comma-separated list of names, or `all`.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, BenchError> {
        let mut families = Vec::new();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name.eq_ignore_ascii_case("all") {
                families.extend(Self::ALL);
                continue;
            }
            let family = Self::ALL
                .into_iter()
                .find(|f| f.as_str().eq_ignore_ascii_case(name))
                .ok_or_else(|| BenchError::UnknownFamily(name.to_owned()))?;
            families.push(family);
        }
        let mut unique = Vec::new();
        for family in families {
            if !unique.contains(&family) {
                unique.push(family);
            }
        }
        if unique.is_empty() {
            return Err(BenchError::UnknownFamily(text.to_owned()));
        }
        Ok(unique)
    }
}

/// What a correct answer is, and how an answer is scored against it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Expected {
    /// One number; scored 0.75^|error| (OOLONG), 0 when the answer states several different numbers.
    Number { value: i64 },
    /// One label out of `candidates` (every label the context offers for the question); the answer must name it and
    /// no other candidate.
    Label { answer: String, candidates: Vec<String> },
    /// A set of items; scored by F1.
    Set { items: Vec<String>, candidates: Vec<String> },
    /// A set of unordered pairs; scored by F1.
    Pairs { pairs: Vec<(String, String)> },
    /// Sniah's 7-digit value: right when the answer holds it and no other 7-digit number ([`sniah::is_correct`]).
    Needle { value: String },
}

impl Expected {
    /// The score of `answer`, from 0 to 1; no answer scores 0.
    pub fn score(&self, answer: Option<&str>) -> f64 {
        let Some(answer) = answer else { return 0.0 };
        match self {
            Self::Number { value } => score::score_number(answer, *value),
            Self::Label { answer: expected, candidates } => score::score_label(answer, expected, candidates),
            Self::Set { items, candidates } => score::score_set(answer, items, candidates),
            Self::Pairs { pairs } => score::score_pairs(answer, pairs),
            Self::Needle { value } => f64::from(u8::from(sniah::is_correct(Some(answer), value))),
        }
    }

    /// The correct answer as text.
    pub fn display(&self) -> String {
        match self {
            Self::Number { value } => value.to_string(),
            Self::Label { answer, .. } | Self::Needle { value: answer } => answer.clone(),
            Self::Set { items, .. } => items.join(", "),
            Self::Pairs { pairs } => pairs.iter().map(|(a, b)| format!("({a}, {b})")).collect::<Vec<_>>().join(" "),
        }
    }
}

/// What a family's generator makes for one task.
#[derive(Debug, Clone)]
pub(crate) struct Generated {
    pub context: String,
    pub query: String,
    pub expected: Expected,
    /// What this task drew: its format, question kind, filler, ... (e.g. `logs/csv/count2`).
    pub variant: String,
}

/// One task of any family.
#[derive(Debug, Clone, Serialize)]
pub struct Task {
    /// `<family>-<size>-<index>`, e.g. `aggregate-32k-3`.
    pub id: String,
    pub family: Family,
    pub size_label: String,
    pub variant: String,
    pub query: String,
    pub expected: Expected,
    #[serde(skip)]
    pub context: String,
}

/// A seed for one task, so that each task depends only on the seed, its family, size and index (and `--task`
/// filters see the same tasks as full runs).
fn task_seed(seed: u64, family: Family, size: usize, index: usize) -> u64 {
    let mut x = seed
        ^ (family as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (size as u64).rotate_left(17)
        ^ (index as u64).rotate_left(41);
    // splitmix64's finaliser: nearby inputs give unrelated seeds.
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// `count` tasks of `family` for each size (in characters), the same for the same seed.
pub fn generate(family: Family, sizes: &[usize], count: usize, seed: u64) -> Vec<Task> {
    let generator: fn(usize, usize, &mut fastrand::Rng) -> Generated = match family {
        Family::Sniah => return sniah_tasks(sizes, count, seed),
        Family::Multikey => multikey::generate,
        Family::Multivalue => multivalue::generate,
        Family::Aggregate => aggregate::generate,
        Family::Pairs => pairs::generate,
        Family::Multihop => multihop::generate,
    };
    let mut tasks = Vec::with_capacity(sizes.len() * count);
    for &size in sizes {
        let label = sniah::size_label(size);
        for index in 0..count {
            let mut rng = fastrand::Rng::with_seed(task_seed(seed, family, size, index));
            let generated = generator(size, index, &mut rng);
            tasks.push(Task {
                id: format!("{}-{label}-{}", family.as_str(), index + 1),
                family,
                size_label: label.clone(),
                variant: generated.variant,
                query: generated.query,
                expected: generated.expected,
                context: generated.context,
            });
        }
    }
    tasks
}

/// Sniah keeps its own generator, so that its tasks stay those of earlier runs and reports.
fn sniah_tasks(sizes: &[usize], count: usize, seed: u64) -> Vec<Task> {
    sniah::generate(sizes, count, seed)
        .into_iter()
        .map(|task| Task {
            id: format!("sniah-{}", task.id),
            family: Family::Sniah,
            size_label: task.size_label,
            variant: multikey::filler_name(task.filler).to_owned(),
            query: task.query,
            expected: Expected::Needle { value: task.value },
            context: task.context,
        })
        .collect()
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
    pub family: Family,
    /// What the task drew (format, question kind, ...), as in [`Task::variant`].
    pub variant: String,
    pub size: String,
    pub system: System,
    /// From 0 to 1 (see [`Expected::score`]).
    pub score: f64,
    /// Whether the score is 1.
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
pub async fn run_task(rlm: &Rlm, system: System, task: &Task, cancel: CancellationToken) -> TaskResult {
    let outcome = rlm.completion_with(rlm::Context::text(task.context.clone()), &task.query, cancel, None).await;
    let mut result = TaskResult {
        task: task.id.clone(),
        family: task.family,
        variant: task.variant.clone(),
        size: task.size_label.clone(),
        system,
        score: 0.0,
        correct: false,
        expected: task.expected.display(),
        answer: None,
        path: String::new(),
        finished_by: "error".to_owned(),
        iterations: 0,
        sub_calls: 0,
        tokens: 0,
        seconds: 0.0,
        error: None,
    };
    let (completion, failure): (Completion, Option<String>) = match outcome {
        Ok(completion) => (completion, None),
        Err(RlmError::Failed { message, completion }) => (*completion, Some(message)),
        Err(err) => {
            result.error = Some(err.to_string());
            return result;
        }
    };
    let answer = failure.is_none().then(|| completion.answer.clone());
    result.score = task.expected.score(answer.as_deref());
    result.correct = result.score >= 1.0;
    result.answer = answer;
    result.path = completion.path.as_str().to_owned();
    result.finished_by = completion.finished_by.as_str().to_owned();
    result.iterations = completion.iterations;
    result.sub_calls = completion.sub_calls;
    result.tokens = completion.usage.total.total_tokens();
    result.seconds = completion.duration_secs;
    result.error = failure.or(completion.error);
    result
}

/// Totals of one system at one size of one family.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub family: String,
    pub size: String,
    pub system: System,
    pub tasks: usize,
    pub correct: usize,
    pub mean_score: f64,
    pub mean_iterations: f64,
    pub mean_sub_calls: f64,
    pub mean_tokens: f64,
    pub mean_seconds: f64,
    /// How many runs took the direct path.
    pub direct: usize,
    /// How many runs ended without an answer (errors, refusals, limits).
    pub failed: usize,
}

/// One summary per (family, size, system), in the order they first appear in `results`.
pub fn summarize(results: &[TaskResult]) -> Vec<Summary> {
    let mut keys: Vec<(Family, String, System)> = Vec::new();
    for result in results {
        let key = (result.family, result.size.clone(), result.system);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.into_iter()
        .map(|(family, size, system)| {
            let group: Vec<&TaskResult> =
                results.iter().filter(|r| r.family == family && r.size == size && r.system == system).collect();
            let n = group.len().max(1) as f64;
            let mean = |f: &dyn Fn(&TaskResult) -> f64| group.iter().map(|r| f(r)).sum::<f64>() / n;
            Summary {
                family: family.as_str().to_owned(),
                size,
                system,
                tasks: group.len(),
                correct: group.iter().filter(|r| r.correct).count(),
                mean_score: mean(&|r| r.score),
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

/// The summary of `group` as one row labelled `family`/`size`, weighting each summary by its tasks.
fn total(family: &str, size: &str, system: System, group: &[&Summary]) -> Summary {
    let tasks: usize = group.iter().map(|s| s.tasks).sum();
    let weighted =
        |f: &dyn Fn(&Summary) -> f64| group.iter().map(|s| f(s) * s.tasks as f64).sum::<f64>() / tasks.max(1) as f64;
    Summary {
        family: family.to_owned(),
        size: size.to_owned(),
        system,
        tasks,
        correct: group.iter().map(|s| s.correct).sum(),
        mean_score: weighted(&|s| s.mean_score),
        mean_iterations: weighted(&|s| s.mean_iterations),
        mean_sub_calls: weighted(&|s| s.mean_sub_calls),
        mean_tokens: weighted(&|s| s.mean_tokens),
        mean_seconds: weighted(&|s| s.mean_seconds),
        direct: group.iter().map(|s| s.direct).sum(),
        failed: group.iter().map(|s| s.failed).sum(),
    }
}

/// A fixed-width table of `summaries`: `right` counts answers that scored 1, `score` is the mean score (partial
/// credit for numbers, sets and pairs). A total row per family and system when a family has several sizes, and one
/// per system over all families when there are several.
pub fn render_table(summaries: &[Summary]) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{:<10} {:<6} {:<5} {:>7} {:>6} {:>7} {:>6} {:>10} {:>8} {:>7} {:>6}",
        "family", "size", "sys", "right", "score", "iters", "subs", "tokens", "s/task", "direct", "failed"
    );
    let row = |text: &mut String, s: &Summary| {
        let _ = writeln!(
            text,
            "{:<10} {:<6} {:<5} {:>7} {:>6.2} {:>7.1} {:>6.1} {:>10.0} {:>8.1} {:>7} {:>6}",
            s.family,
            s.size,
            s.system.as_str(),
            format!("{}/{}", s.correct, s.tasks),
            s.mean_score,
            s.mean_iterations,
            s.mean_sub_calls,
            s.mean_tokens,
            s.mean_seconds,
            format!("{}/{}", s.direct, s.tasks),
            s.failed,
        );
    };
    let mut families: Vec<&str> = Vec::new();
    for summary in summaries {
        if !families.contains(&summary.family.as_str()) {
            families.push(&summary.family);
        }
    }
    for family in &families {
        for summary in summaries.iter().filter(|s| s.family == *family) {
            row(&mut text, summary);
        }
        for system in [System::Base, System::Rlm] {
            let group: Vec<&Summary> = summaries.iter().filter(|s| s.family == *family && s.system == system).collect();
            if group.len() >= 2 {
                row(&mut text, &total(family, "all", system, &group));
            }
        }
    }
    if families.len() >= 2 {
        for system in [System::Base, System::Rlm] {
            let group: Vec<&Summary> = summaries.iter().filter(|s| s.system == system).collect();
            if !group.is_empty() {
                row(&mut text, &total("all", "all", system, &group));
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(family: Family, size: &str, system: System, score: f64, seconds: f64, path: &str) -> TaskResult {
        TaskResult {
            task: format!("{}-{size}-1", family.as_str()),
            family,
            variant: String::new(),
            size: size.to_owned(),
            system,
            score,
            correct: score >= 1.0,
            expected: "1234567".to_owned(),
            answer: (score > 0.0).then(|| "1234567".to_owned()),
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
    fn summaries_group_by_family_size_and_system() {
        let results = [
            result(Family::Sniah, "8k", System::Base, 1.0, 2.0, "direct"),
            result(Family::Sniah, "8k", System::Rlm, 1.0, 4.0, "direct"),
            result(Family::Sniah, "8k", System::Base, 0.0, 4.0, "direct"),
            result(Family::Sniah, "128k", System::Rlm, 1.0, 30.0, "rlm"),
            result(Family::Aggregate, "8k", System::Rlm, 0.5, 10.0, "rlm"),
            result(Family::Aggregate, "8k", System::Rlm, 1.0, 10.0, "rlm"),
        ];
        let summaries = summarize(&results);
        assert_eq!(summaries.len(), 4);
        assert_eq!((summaries[0].correct, summaries[0].tasks, summaries[0].mean_seconds), (1, 2, 3.0));
        assert_eq!(summaries[0].failed, 1);
        assert_eq!((summaries[3].correct, summaries[3].mean_score), (1, 0.75));
        let table = render_table(&summaries);
        assert!(table.contains("sniah      8k     base      1/2   0.50"), "{table}");
        assert!(table.contains("sniah      all    rlm       2/2   1.00"), "{table}");
        assert!(!table.contains("sniah      all    base"), "one size of base needs no total row:\n{table}");
        assert!(table.contains("aggregate  8k     rlm       1/2   0.75"), "{table}");
        assert!(table.contains("all        all    rlm       3/4   0.88"), "{table}");
        assert!(table.contains("all        all    base      1/2   0.50"), "{table}");
    }

    #[test]
    fn families_parse_from_lists() {
        assert_eq!(Family::parse_list("aggregate").ok(), Some(vec![Family::Aggregate]));
        assert_eq!(Family::parse_list("multikey, Pairs,multikey").ok(), Some(vec![Family::Multikey, Family::Pairs]));
        assert_eq!(Family::parse_list("all").ok().map(|f| f.len()), Some(6));
        assert!(Family::parse_list("oolong").is_err());
        assert!(Family::parse_list("").is_err());
    }

    /// An answer that lists many candidates instead of choosing.
    fn hedge(expected: &Expected) -> String {
        match expected {
            Expected::Number { value } => (value - 2..=value + 2).map(|v| v.to_string()).collect::<Vec<_>>().join(", "),
            Expected::Label { candidates, .. } => candidates.join(", "),
            Expected::Needle { value } => format!("{value}, 1234567, 7654321"),
            Expected::Set { candidates, .. } => candidates.join(", "),
            // Every pairing of the ids in the gold pairs.
            Expected::Pairs { pairs } => {
                let ids: Vec<&String> = pairs.iter().flat_map(|(a, b)| [a, b]).collect();
                let mut text = String::new();
                for (i, a) in ids.iter().enumerate() {
                    for b in &ids[i + 1..] {
                        text.push_str(&format!("({a}, {b})\n"));
                    }
                }
                text
            }
        }
    }

    #[test]
    fn every_family_is_deterministic_and_answers_are_scored_right() {
        for family in Family::ALL {
            let a = generate(family, &[8_000], 6, 17);
            let b = generate(family, &[8_000], 6, 17);
            assert_eq!(a.len(), 6);
            for (x, y) in a.iter().zip(&b) {
                assert_eq!((&x.id, &x.context, &x.query, &x.expected), (&y.id, &y.context, &y.query, &y.expected));
                assert!(x.id.starts_with(family.as_str()), "{}", x.id);
                assert!(x.context.len() >= 7_000 && x.context.len() <= 8_100, "{}: {}", x.id, x.context.len());
                // The generator's own answer, as a model would write it, scores 1; nothing scores nothing.
                let answer = format!("The answer is: {}.", x.expected.display());
                assert_eq!(x.expected.score(Some(&answer)), 1.0, "{}: {answer}", x.id);
                assert_eq!(x.expected.score(None), 0.0);
                assert!(x.expected.score(Some("I could not find it")) < 1.0, "{}", x.id);
                let hedge = hedge(&x.expected);
                assert!(x.expected.score(Some(&hedge)) < 0.7, "{}: {hedge}", x.id);
            }
        }
    }
}
