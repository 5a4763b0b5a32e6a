//! When a proposed answer may end a run, and what the model is told when it may not.

use crate::notes;

/// Why a proposed answer does not end the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    Placeholder(&'static str),
    /// It came from an `llm_query` that was given none of the context.
    Ungrounded,
    /// No code had run (small models: no output of code that read the context had been seen).
    NoEvidence,
    /// It only repeats words of the question.
    EchoesQuestion,
    /// Written next to new code, and not in any output seen.
    Unsupported,
}

impl Refusal {
    /// What the model is told, with what to do instead.
    pub fn note(self, answer: &str, query: &str) -> String {
        match self {
            Self::Placeholder(reason) => notes::placeholder_note(answer, reason),
            Self::Ungrounded => notes::ungrounded_answer_note(),
            Self::NoEvidence => notes::answer_before_evidence_note(query),
            Self::EchoesQuestion | Self::Unsupported => notes::unsupported_answer_note(),
        }
    }

    /// Why, for the run's error when a limit ends on a refused answer.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Placeholder(reason) => reason,
            Self::Ungrounded => "it came from an llm_query that was given none of the context",
            Self::NoEvidence => "no code had shown it any evidence yet",
            Self::EchoesQuestion => "it only repeats words of the question",
            Self::Unsupported => "it was written next to new code and is in no output seen",
        }
    }
}

/// The words of an answer that carry meaning, lower-cased: three or more letters, or any number.
fn answer_words(answer: &str) -> impl Iterator<Item = String> + '_ {
    answer
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| word.chars().count() >= 3 || word.chars().any(|c| c.is_ascii_digit()))
        .map(str::to_lowercase)
}

/// Whether every word of `answer` occurs in `seen` (lower-cased output).
pub(super) fn supported_by(answer: &str, seen: &str) -> bool {
    let mut words = answer_words(answer).peekable();
    words.peek().is_some() && words.all(|word| seen.contains(word.as_str()))
}

/// Whether `answer` has a word the question does not: an answer that only restates the question's words (the key
/// instead of its value) tells nothing.
pub(super) fn adds_to(answer: &str, query: &str) -> bool {
    let query = query.to_lowercase();
    answer_words(answer).any(|word| !query.contains(word.as_str()))
}

/// Whether code reads the data: names `context` or calls the `search` helper.
pub(super) fn reads_context(code: &str) -> bool {
    code.contains("context") || code.contains("search(")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_supported_only_by_output_that_contains_them() {
        let seen = " 1 match(es) for 'olive-orchard': one of the special magic numbers for olive-orchard is: 5313471.";
        assert!(supported_by("5313471", seen));
        assert!(supported_by("The special magic number is 5313471.", seen));
        assert!(!supported_by("hollow-valley mentioned in the provided text is 123.", seen));
        assert!(!supported_by("42", seen));
        assert!(!supported_by("", seen));
        let query = "What is the special magic number for brisk-pebble mentioned in the provided text?";
        assert!(!adds_to(" brisk-pebble", query));
        assert!(adds_to("4473224", query));
        assert!(adds_to("The special magic number is 4473224.", query));
        assert!(
            reads_context("print(search(\"x\"))") && reads_context("len(context)") && !reads_context("SHOW_VARS()")
        );
    }
}
