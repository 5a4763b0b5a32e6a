//! Single-needle-in-a-haystack tasks in the style of RULER's `niah_single`: one key with a 7-digit value hidden at a
//! chosen depth of filler text; the question asks for the value of the key. Generation is deterministic per seed.

use serde::Serialize;

use crate::BenchError;

/// Kinds of filler, rotated over the tasks of a size so that no single kind decides the score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Filler {
    /// RULER's repeated "noise" sentences.
    Noise,
    /// Varied prose built from sentence templates.
    Essay,
    /// Application log lines, full of (shorter) numbers.
    Log,
}

impl Filler {
    pub(crate) const ALL: [Self; 3] = [Self::Noise, Self::Essay, Self::Log];
}

/// One task.
#[derive(Debug, Clone, Serialize)]
pub struct Task {
    /// `<size>-<index>`, e.g. `32k-3`.
    pub id: String,
    pub size_label: String,
    pub key: String,
    /// The 7-digit answer.
    pub value: String,
    /// Where the needle sits, as a fraction of the text (0 = start).
    pub depth: f64,
    pub filler: Filler,
    pub query: String,
    #[serde(skip)]
    pub context: String,
}

/// A size in characters from `8k`, `128K`, `1m` or a plain number (k = 1,000; m = 1,000,000).
pub fn parse_size(text: &str) -> Result<usize, BenchError> {
    let lower = text.trim().to_ascii_lowercase();
    let (digits, scale) = match lower.strip_suffix('k') {
        Some(digits) => (digits, 1_000),
        None => match lower.strip_suffix('m') {
            Some(digits) => (digits, 1_000_000),
            None => (lower.as_str(), 1),
        },
    };
    match digits.parse::<usize>() {
        Ok(n) if n > 0 && n.checked_mul(scale).is_some_and(|chars| chars >= 1_000) => Ok(n * scale),
        _ => Err(BenchError::InvalidSize(text.to_owned())),
    }
}

/// The label of a size: `8k`, `1m`, or the number of characters.
pub fn size_label(chars: usize) -> String {
    if chars.is_multiple_of(1_000_000) {
        format!("{}m", chars / 1_000_000)
    } else if chars.is_multiple_of(1_000) {
        format!("{}k", chars / 1_000)
    } else {
        chars.to_string()
    }
}

pub(crate) const ADJECTIVES: [&str; 24] = [
    "amber", "brisk", "calm", "dusty", "eager", "faded", "gentle", "hollow", "icy", "jolly", "keen", "lucky", "mellow",
    "nimble", "olive", "proud", "quiet", "rustic", "silent", "tender", "upbeat", "vivid", "wise", "young",
];
pub(crate) const NOUNS: [&str; 24] = [
    "anchor", "badger", "canyon", "dolphin", "ember", "falcon", "garden", "harbor", "island", "jungle", "kettle",
    "lantern", "meadow", "needle", "orchard", "pebble", "quarry", "river", "saddle", "tunnel", "umbrella", "valley",
    "walrus", "yonder",
];

const NOISE: &str = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";

const SUBJECTS: [&str; 12] = [
    "The committee",
    "A young engineer",
    "The old bakery",
    "Our neighbour",
    "The city council",
    "A travelling musician",
    "The research team",
    "The harbour master",
    "A quiet student",
    "The museum",
    "The local paper",
    "The gardener",
];
const VERBS: [&str; 12] = [
    "postponed",
    "described",
    "repaired",
    "questioned",
    "celebrated",
    "measured",
    "painted",
    "ignored",
    "rebuilt",
    "compared",
    "announced",
    "borrowed",
];
const OBJECTS: [&str; 12] = [
    "the annual report",
    "an unusual bridge",
    "the winter schedule",
    "a set of old maps",
    "the river crossing",
    "the new library",
    "a forgotten recipe",
    "the morning market",
    "the railway timetable",
    "a broken clock",
    "the festival plans",
    "the village archive",
];
const CODAS: [&str; 10] = [
    "after a long debate",
    "without much notice",
    "to everyone's surprise",
    "during the storm",
    "before the holidays",
    "with great care",
    "for the second time",
    "late in the evening",
    "despite the cost",
    "as planned",
];

const SERVICES: [&str; 6] = ["api", "worker", "scheduler", "cache", "auth", "billing"];
const EVENTS: [&str; 8] = [
    "request served",
    "job finished",
    "cache miss",
    "connection opened",
    "retrying upload",
    "batch flushed",
    "token refreshed",
    "health check ok",
];

/// Appends filler sentences (or lines) to `out` until it holds at least `chars` characters.
pub(crate) fn fill(out: &mut String, chars: usize, filler: Filler, rng: &mut fastrand::Rng) {
    while out.len() < chars {
        match filler {
            Filler::Noise => out.push_str(NOISE),
            Filler::Essay => {
                let subject = SUBJECTS[rng.usize(..SUBJECTS.len())];
                let verb = VERBS[rng.usize(..VERBS.len())];
                let object = OBJECTS[rng.usize(..OBJECTS.len())];
                let coda = CODAS[rng.usize(..CODAS.len())];
                out.push_str(&format!("{subject} {verb} {object} {coda}. "));
                if rng.usize(..6) == 0 {
                    out.push_str("\n\n");
                }
            }
            Filler::Log => {
                let service = SERVICES[rng.usize(..SERVICES.len())];
                let event = EVENTS[rng.usize(..EVENTS.len())];
                out.push_str(&format!(
                    "{:02}:{:02}:{:02} INFO {service}-{} {event} in {} ms (queue {})\n",
                    rng.u32(..24),
                    rng.u32(..60),
                    rng.u32(..60),
                    rng.u32(1..9),
                    rng.u32(1..5000),
                    rng.u32(..300),
                ));
            }
        }
    }
}

/// `count` tasks for each size (in characters), the same for the same seed.
pub fn generate(sizes: &[usize], count: usize, seed: u64) -> Vec<Task> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut tasks = Vec::with_capacity(sizes.len() * count);
    for &size in sizes {
        let label = size_label(size);
        for index in 0..count {
            let filler = Filler::ALL[index % Filler::ALL.len()];
            // Depths spread evenly over the text, each jittered within its slot.
            let depth = (index as f64 + rng.f64()) / count.max(1) as f64;
            let key = format!("{}-{}", ADJECTIVES[rng.usize(..ADJECTIVES.len())], NOUNS[rng.usize(..NOUNS.len())]);
            let value = rng.u32(1_000_000..10_000_000).to_string();
            let needle = format!("One of the special magic numbers for {key} is: {value}.");
            let query = format!("What is the special magic number for {key} mentioned in the provided text?");

            let filler_chars = size.saturating_sub(needle.len() + 2);
            let mut text = String::with_capacity(size + 256);
            fill(&mut text, (filler_chars as f64 * depth) as usize, filler, &mut rng);
            let separator = if filler == Filler::Log || text.ends_with('\n') || text.is_empty() { "" } else { " " };
            let at = text.len();
            let before_len = at;
            text.push_str(separator);
            text.push_str(&needle);
            text.push(if filler == Filler::Log { '\n' } else { ' ' });
            let mut rest = String::new();
            fill(&mut rest, filler_chars.saturating_sub(before_len), filler, &mut rng);
            text.push_str(&rest);
            let mut context = text;
            // Cut to the size at a boundary the filler has anyway (all generated text is ASCII).
            if context.len() > size {
                let cut = context[..size].rfind(['.', '\n']).map_or(size, |i| i + 1).max(at + needle.len() + 1);
                context.truncate(cut);
            }
            tasks.push(Task {
                id: format!("{label}-{}", index + 1),
                size_label: label.clone(),
                key,
                value,
                depth,
                filler,
                query,
                context,
            });
        }
    }
    tasks
}

/// Whether `answer` gives the task's value: the value appears as a whole number, and no other 7-digit number does
/// (an answer listing several candidates is wrong).
pub fn is_correct(answer: Option<&str>, value: &str) -> bool {
    let Some(answer) = answer else { return false };
    let numbers: Vec<&str> =
        answer.split(|c: char| !c.is_ascii_digit()).filter(|run| run.len() == value.len()).collect();
    !numbers.is_empty() && numbers.iter().all(|number| *number == value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("8k").ok(), Some(8_000));
        assert_eq!(parse_size("128K").ok(), Some(128_000));
        assert_eq!(parse_size("1m").ok(), Some(1_000_000));
        assert_eq!(parse_size("5000").ok(), Some(5_000));
        assert!(parse_size("0k").is_err());
        assert!(parse_size("12").is_err());
        assert!(parse_size("lots").is_err());
        assert_eq!(size_label(32_000), "32k");
        assert_eq!(size_label(1_000_000), "1m");
    }

    #[test]
    fn tasks_hide_one_needle_at_the_stated_depth() {
        let tasks = generate(&[8_000, 32_000], 5, 7);
        assert_eq!(tasks.len(), 10);
        for task in &tasks {
            let needle = format!("One of the special magic numbers for {} is: {}.", task.key, task.value);
            assert_eq!(task.context.matches(&needle).count(), 1, "{}", task.id);
            assert_eq!(task.context.matches("special magic number").count(), 1, "{}", task.id);
            assert_eq!(task.value.len(), 7);
            let size = if task.size_label == "8k" { 8_000 } else { 32_000 };
            assert!(task.context.len() <= size + 100 && task.context.len() >= size * 9 / 10, "{}", task.context.len());
            let position = task.context.find(&needle).unwrap_or_default() as f64 / task.context.len() as f64;
            assert!((position - task.depth).abs() < 0.1, "{}: depth {} found at {position}", task.id, task.depth);
            assert!(task.query.contains(&task.key));
        }
        let fillers: Vec<Filler> = tasks.iter().take(3).map(|t| t.filler).collect();
        assert_eq!(fillers, [Filler::Noise, Filler::Essay, Filler::Log]);
    }

    #[test]
    fn generation_is_deterministic_per_seed() {
        let a = generate(&[8_000], 3, 42);
        let b = generate(&[8_000], 3, 42);
        let c = generate(&[8_000], 3, 43);
        assert_eq!(a.iter().map(|t| &t.context).collect::<Vec<_>>(), b.iter().map(|t| &t.context).collect::<Vec<_>>());
        assert_ne!(a.iter().map(|t| &t.value).collect::<Vec<_>>(), c.iter().map(|t| &t.value).collect::<Vec<_>>());
    }

    #[test]
    fn scoring_wants_the_value_and_nothing_else() {
        assert!(is_correct(Some("5279348"), "5279348"));
        assert!(is_correct(Some("The special magic number is 5279348."), "5279348"));
        assert!(!is_correct(Some("5279348 or 1234567"), "5279348"));
        assert!(!is_correct(Some("52793481"), "5279348"));
        assert!(!is_correct(Some("quiet-meadow"), "5279348"));
        assert!(!is_correct(None, "5279348"));
    }
}
