//! Comparing a target's [`Observation`] with the reference one.

use crate::corpus::DifferentialSnippet;
use crate::target::Observation;

/// One way in which a target's observation differs from the reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// `stdout`, `stderr`, `error kinds` or `failure`.
    pub aspect: &'static str,
    /// A one-paragraph description, with the first differing line.
    pub detail: String,
}

/// What a comparison found: differences that fail the test and differences the snippet declares as intended.
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    pub mismatches: Vec<Mismatch>,
    pub intended: Vec<Mismatch>,
}

/// Compares `actual` with `reference` as `snippet` asks. Error kinds are always compared; stdout and stderr per the
/// snippet's [`CompareMode`], and as intended differences only when the snippet has `# differs:`.
pub fn compare(snippet: &DifferentialSnippet, reference: &Observation, actual: &Observation) -> Comparison {
    let mut comparison = Comparison::default();
    for (name, observation) in [("reference", reference), ("target", actual)] {
        if let Some(failure) = &observation.failure {
            comparison.mismatches.push(Mismatch { aspect: "failure", detail: format!("{name} failed: {failure}") });
        }
    }
    let (expected_kinds, actual_kinds) = (reference.error_kinds(), actual.error_kinds());
    if expected_kinds != actual_kinds {
        let message = |o: &Observation| o.last_error().map(ToString::to_string).unwrap_or_default();
        comparison.mismatches.push(Mismatch {
            aspect: "error kinds",
            detail: format!(
                "expected {expected_kinds:?} ({}), got {actual_kinds:?} ({})",
                message(reference),
                message(actual)
            ),
        });
    }
    let streams = [
        ("stdout", snippet.compare.compares_stdout(), &reference.stdout, &actual.stdout),
        ("stderr", snippet.compare.compares_stderr(), &reference.stderr, &actual.stderr),
    ];
    for (aspect, compared, expected, got) in streams {
        if let Some(detail) = first_difference(expected, got) {
            let mismatch = Mismatch { aspect, detail };
            if snippet.differs.is_some() {
                comparison.intended.push(mismatch);
            } else if compared {
                comparison.mismatches.push(mismatch);
            }
        }
    }
    comparison
}

/// Shows at most this many characters of a differing line.
const SHOWN_CHARS: usize = 160;

fn shown(line: Option<&str>) -> String {
    match line {
        None => "<no line>".to_owned(),
        Some(line) if line.chars().count() > SHOWN_CHARS => {
            let head: String = line.chars().take(SHOWN_CHARS).collect();
            format!("{head:?}... ({} chars)", line.chars().count())
        }
        Some(line) => format!("{line:?}"),
    }
}

/// `None` when the texts are equal; otherwise the first differing line of each and the sizes.
pub fn first_difference(expected: &str, actual: &str) -> Option<String> {
    if expected == actual {
        return None;
    }
    let (mut expected_lines, mut actual_lines) = (expected.split('\n'), actual.split('\n'));
    let mut number = 1;
    loop {
        let (e, a) = (expected_lines.next(), actual_lines.next());
        if e.is_none() && a.is_none() {
            return Some("the texts differ".to_owned());
        }
        if e != a {
            return Some(format!(
                "first difference at line {number}:\n      expected: {}\n      actual:   {}\n      \
                 ({} vs {} chars, {} vs {} lines)",
                shown(e),
                shown(a),
                expected.chars().count(),
                actual.chars().count(),
                expected.split('\n').count(),
                actual.split('\n').count()
            ));
        }
        number += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_difference_names_the_line() {
        assert_eq!(first_difference("a\nb\n", "a\nb\n"), None);
        let diff = first_difference("a\nb\nc", "a\nx\nc").unwrap_or_default();
        assert!(diff.contains("line 2"), "{diff}");
        assert!(diff.contains("\"b\"") && diff.contains("\"x\""), "{diff}");
        let diff = first_difference("a\n", "a\nmore").unwrap_or_default();
        assert!(diff.contains("line 2") && diff.contains("\"more\""), "{diff}");
    }
}
