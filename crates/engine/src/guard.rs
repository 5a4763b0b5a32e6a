//! Checks that keep a weak model from ending a run with something that is not an answer: placeholders copied from
//! instructions, and the same reply sent again and again.

/// Why `answer` is a placeholder rather than an answer, if it is one.
pub fn placeholder_reason(answer: &str) -> Option<&'static str> {
    let trimmed = answer.trim();
    if trimmed.is_empty() {
        return Some("it is empty");
    }
    let inner = trimmed.trim_matches(|c: char| matches!(c, '"' | '\'' | '`' | ' ')).trim();
    let slot = (inner.starts_with('<') && inner.ends_with('>')) || (inner.starts_with('{') && inner.ends_with('}'));
    if slot && !inner.contains('\n') && inner.len() <= 60 {
        return Some("it is a template slot, not a value");
    }
    let normalized: String = inner
        .chars()
        .map(|c| if c.is_alphanumeric() { c.to_ascii_lowercase() } else { ' ' })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if normalized.is_empty() {
        return Some("it has no letters or digits");
    }
    const PLACEHOLDERS: [&str; 19] = [
        "answer",
        "the answer",
        "your answer",
        "my answer",
        "final answer",
        "your final answer",
        "the final answer",
        "answer here",
        "your answer here",
        "insert answer here",
        "variable name",
        "var name",
        "result",
        "none",
        "null",
        "todo",
        "tbd",
        "placeholder",
        "x",
    ];
    // `variable_name` normalizes to "variable name".
    if PLACEHOLDERS.contains(&normalized.as_str()) {
        return Some("it is the placeholder text from the instructions");
    }
    None
}

/// Words of a query worth searching for, most specific first: names with digits, hyphens or capitals, then long
/// words. Used to suggest a concrete next step to a model that is stuck.
pub fn search_terms(query: &str) -> Vec<String> {
    const STOP: [&str; 40] = [
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "the",
        "and",
        "for",
        "from",
        "with",
        "that",
        "this",
        "these",
        "those",
        "there",
        "their",
        "mentioned",
        "provided",
        "text",
        "context",
        "given",
        "find",
        "tell",
        "does",
        "did",
        "are",
        "was",
        "were",
        "is",
        "about",
        "into",
        "answer",
        "please",
        "question",
        "document",
        "say",
    ];
    let mut scored: Vec<(u32, usize, String)> = Vec::new();
    for (position, raw) in query.split_whitespace().enumerate() {
        let word = raw.trim_matches(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'));
        if word.chars().count() < 3 || STOP.contains(&word.to_lowercase().as_str()) {
            continue;
        }
        if scored.iter().any(|(_, _, w)| w.eq_ignore_ascii_case(word)) {
            continue;
        }
        let mut score = word.chars().count() as u32;
        if word.contains(['-', '_']) || word.chars().any(|c| c.is_ascii_digit()) {
            score += 100;
        }
        if position > 0 && word.starts_with(char::is_uppercase) {
            score += 50;
        }
        scored.push((score, position, word.to_owned()));
    }
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, _, word)| word).collect()
}

/// Counts consecutive replies that are the same as the one before (ignoring whitespace).
#[derive(Debug, Default)]
pub struct RepeatTracker {
    previous: Option<String>,
    /// How many replies in a row repeated their predecessor.
    pub streak: u32,
}

impl RepeatTracker {
    /// Records `reply`; returns whether it repeats the previous one.
    pub fn observe(&mut self, reply: &str) -> bool {
        let normalized = reply.split_whitespace().collect::<Vec<_>>().join(" ");
        let repeated = self.previous.as_deref() == Some(normalized.as_str());
        self.streak = if repeated { self.streak + 1 } else { 0 };
        self.previous = Some(normalized);
        repeated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_recognised() {
        for text in [
            "",
            "your answer",
            "Your final answer",
            "\"your answer here\"",
            "<the answer>",
            "<answer>",
            "{answer}",
            "...",
            "…",
            "None",
        ] {
            assert!(placeholder_reason(text).is_some(), "{text:?} should be a placeholder");
        }
        for text in ["5279348", "Paris", "the answer is 42", "x = 3 and y = 4", "<b>bold</b> markup in a long answer"] {
            assert_eq!(placeholder_reason(text), None, "{text:?} is an answer");
        }
    }

    #[test]
    fn search_terms_prefer_specific_names() {
        let terms = search_terms("What is the special magic number for quiet-meadow mentioned in the provided text?");
        assert_eq!(terms.first().map(String::as_str), Some("quiet-meadow"));
        assert!(terms.contains(&"special".to_owned()));
        assert!(!terms.iter().any(|t| t == "mentioned" || t == "What"));
        assert_eq!(search_terms("Who founded Acme in Berlin?")[..2], ["Berlin".to_owned(), "Acme".to_owned()]);
    }

    #[test]
    fn repeats_are_counted_in_a_row() {
        let mut tracker = RepeatTracker::default();
        assert!(!tracker.observe("SHOW_VARS()"));
        assert!(tracker.observe("SHOW_VARS()\n"));
        assert!(tracker.observe("  SHOW_VARS() "));
        assert_eq!(tracker.streak, 2);
        assert!(!tracker.observe("print(1)"));
        assert_eq!(tracker.streak, 0);
    }
}
