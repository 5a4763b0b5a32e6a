//! Scoring of free-text answers against what a generator knows is true.
//!
//! Models wrap answers in prose ("The answer is 42 lines."), so the scorers look for the expected kind of thing
//! inside the answer instead of comparing strings. They never reward hedging: an answer that names several
//! candidates for one label, or several different numbers, scores 0; sets and pairs are scored by F1, so every
//! wrong item listed costs precision.

use std::collections::BTreeSet;

/// Numbers written as numbers in `answer`: `42`, `1,234`, `3.5`, `42.` (the trailing dot ends a sentence). Digits
/// that belong to identifiers (`u1101`, `vault-17`, `api-1`), dates (`2026-03-14`) and times (`06:56`) are not numbers.
pub fn numbers_in(answer: &str) -> Vec<f64> {
    let chars: Vec<char> = answer.chars().collect();
    let mut numbers = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let attached_before =
            i > 0 && (chars[i - 1].is_alphanumeric() || matches!(chars[i - 1], '-' | '_' | '.' | ':' | '/' | '#'));
        let start = i;
        let mut text = String::new();
        while i < chars.len() {
            let c = chars[i];
            let digit_follows = chars.get(i + 1).is_some_and(char::is_ascii_digit);
            if c.is_ascii_digit() {
                text.push(c);
            } else if c == ',' && chars.get(i + 1..i + 4).is_some_and(|d| d.iter().all(char::is_ascii_digit)) {
                // A thousands separator, not a list separator: exactly three digits follow and then no digit.
                if chars.get(i + 4).is_some_and(char::is_ascii_digit) {
                    break;
                }
            } else if c == '.' && digit_follows && !text.contains('.') {
                text.push(c);
            } else {
                break;
            }
            i += 1;
        }
        let next = chars.get(i).copied();
        let digit_after_next = chars.get(i + 1).is_some_and(char::is_ascii_digit);
        let attached_after = matches!(next, Some('-' | ':' | '/' | '_')) && digit_after_next
            || next.is_some_and(|c| c == '_' || c.is_ascii_digit());
        if !attached_before
            && !attached_after
            && start < i
            && let Ok(value) = text.parse::<f64>()
        {
            numbers.push(value);
        }
    }
    numbers
}

/// OOLONG's score for a number: 1 for the exact value, 0.75^|error| otherwise. The answer must state exactly one
/// number (repeating it is fine); an answer with two different numbers scores 0.
pub fn score_number(answer: &str, expected: i64) -> f64 {
    let mut distinct: Vec<f64> = Vec::new();
    for value in numbers_in(answer) {
        if !distinct.contains(&value) {
            distinct.push(value);
        }
    }
    match distinct.as_slice() {
        [value] => 0.75_f64.powf((value - expected as f64).abs()),
        _ => 0.0,
    }
}

/// Whether `term` occurs in `haystack` (both lower case) as a whole term: not as part of a longer word or identifier,
/// so `vault-17` is not found in `vault-170` and `error` is not found in `errors`.
pub fn contains_term(haystack: &str, term: &str) -> bool {
    if term.is_empty() {
        return false;
    }
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(offset) = haystack[from..].find(term) {
        let start = from + offset;
        let end = start + term.len();
        let before = haystack[..start].chars().next_back();
        let after = haystack[end..].chars().next();
        let after_next = haystack[end..].chars().nth(1);
        let joined_before = before.is_some_and(|c| is_word(c) || (c == '-' && start >= 2));
        let joined_after = after.is_some_and(is_word) || (after == Some('-') && after_next.is_some_and(is_word));
        // A hyphen before the term joins it to a word only when that word is right there (`x-17`), not at the
        // start of a list item (`- 17`).
        let joined_before = joined_before
            && !(before == Some('-') && haystack[..start - 1].chars().next_back().is_none_or(char::is_whitespace));
        if !joined_before && !joined_after {
            return true;
        }
        from = start + haystack[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// The shape of a value: digits become `9`, letters `a`, everything else stays. Values of one task share a shape,
/// so a token of that shape in an answer is an answer item.
pub fn shape(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                '9'
            } else if c.is_alphabetic() {
                'a'
            } else {
                c
            }
        })
        .collect()
}

/// The tokens of `answer` (runs of letters, digits, `-` and `_`, without leading or trailing hyphens), lower case.
fn tokens(answer: &str) -> Vec<String> {
    answer
        .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
        .map(|t| t.trim_matches('-').to_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Whether `answer` names `expected` and no other of `candidates` (all the labels the context offers for this
/// question). When the expected label holds a digit (a code, an id), any other token of its shape also counts as a
/// second candidate, so listing a made-up code next to the right one is wrong too.
pub fn score_label(answer: &str, expected: &str, candidates: &[String]) -> f64 {
    // `on_time` may come back as `on time`.
    let normal = |text: &str| text.to_lowercase().replace('_', " ");
    let lower = normal(answer);
    let expected = normal(expected);
    if !contains_term(&lower, &expected) {
        return 0.0;
    }
    let other_candidate = candidates
        .iter()
        .map(|c| normal(c))
        .any(|c| c != expected && !expected.contains(&c) && contains_term(&lower, &c));
    let expected_shape = shape(&expected);
    let other_shaped = expected.chars().any(|c| c.is_ascii_digit())
        && tokens(&lower).iter().any(|t| *t != expected && shape(t) == expected_shape);
    if other_candidate || other_shaped { 0.0 } else { 1.0 }
}

/// The items of `answer` that count for a set whose items look like `gold`: tokens of the items' shape when the
/// items hold digits, else the `candidates` named in the answer.
fn predicted_items(answer: &str, gold: &[String], candidates: &[String]) -> BTreeSet<String> {
    let lower = answer.to_lowercase();
    let shapes: BTreeSet<String> = gold.iter().map(|g| shape(&g.to_lowercase())).collect();
    if gold.iter().all(|g| g.chars().any(|c| c.is_ascii_digit())) {
        tokens(&lower).into_iter().filter(|t| shapes.contains(&shape(t))).collect()
    } else {
        candidates.iter().map(|c| c.to_lowercase()).filter(|c| contains_term(&lower, c)).collect()
    }
}

fn f1<T: Ord>(predicted: &BTreeSet<T>, gold: &BTreeSet<T>) -> f64 {
    let hits = predicted.intersection(gold).count() as f64;
    if hits == 0.0 {
        return 0.0;
    }
    let precision = hits / predicted.len() as f64;
    let recall = hits / gold.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// F1 of the items named in `answer` against `gold`, in any order and with any separators.
pub fn score_set(answer: &str, gold: &[String], candidates: &[String]) -> f64 {
    let gold_set: BTreeSet<String> = gold.iter().map(|g| g.to_lowercase()).collect();
    f1(&predicted_items(answer, gold, candidates), &gold_set)
}

/// The pairs named in `answer`: inside each pair of parentheses or brackets if the answer uses them, else on each
/// line (or `;`-separated part), consecutive items form pairs. Items are tokens of one of `item_shapes` (ids of one
/// task can differ in length); pairs are unordered.
pub fn pairs_in(answer: &str, item_shapes: &BTreeSet<String>) -> BTreeSet<(String, String)> {
    let lower = answer.to_lowercase();
    let inside = |open: char, close: char| -> Vec<&str> {
        lower.split(open).skip(1).map(|part| part.split(close).next().unwrap_or_default()).collect()
    };
    let pairs_of = |groups: Vec<&str>| -> BTreeSet<(String, String)> {
        let mut pairs = BTreeSet::new();
        for group in groups {
            let items: Vec<String> = tokens(group).into_iter().filter(|t| item_shapes.contains(&shape(t))).collect();
            for pair in items.chunks_exact(2) {
                let (a, b) = (pair[0].clone(), pair[1].clone());
                if a != b {
                    pairs.insert(if a < b { (a, b) } else { (b, a) });
                }
            }
        }
        pairs
    };
    // Parentheses that hold no pair (`Pairs (by id):`) do not make the answer a list of parenthesised pairs.
    [inside('(', ')'), inside('[', ']')]
        .into_iter()
        .map(pairs_of)
        .find(|pairs| !pairs.is_empty())
        .unwrap_or_else(|| pairs_of(lower.split(['\n', ';']).collect()))
}

/// F1 of the pairs named in `answer` against `gold`.
pub fn score_pairs(answer: &str, gold: &[(String, String)]) -> f64 {
    let shapes: BTreeSet<String> =
        gold.iter().flat_map(|(a, b)| [shape(&a.to_lowercase()), shape(&b.to_lowercase())]).collect();
    let gold_set: BTreeSet<(String, String)> = gold
        .iter()
        .map(|(a, b)| {
            let (a, b) = (a.to_lowercase(), b.to_lowercase());
            if a < b { (a, b) } else { (b, a) }
        })
        .collect();
    let predicted = pairs_in(answer, &shapes);
    f1(&predicted, &gold_set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn numbers_are_found_in_prose_but_not_in_identifiers_dates_or_times() {
        assert_eq!(numbers_in("42"), [42.0]);
        assert_eq!(numbers_in("42."), [42.0]);
        assert_eq!(numbers_in("The answer is 42."), [42.0]);
        assert_eq!(numbers_in("42 lines"), [42.0]);
        assert_eq!(numbers_in("1,234 in total"), [1234.0]);
        assert_eq!(numbers_in("3.5"), [3.5]);
        assert_eq!(numbers_in("user u1101 on api-1 at 2026-03-14T06:56:21Z: 7"), [7.0]);
        assert_eq!(numbers_in("count=12"), [12.0]);
        assert_eq!(numbers_in("12, 13"), [12.0, 13.0]);
        assert!(numbers_in("vault-17").is_empty());
    }

    #[test]
    fn numbers_score_like_oolong_and_hedges_score_zero() {
        assert_eq!(score_number("42", 42), 1.0);
        assert_eq!(score_number("The answer is 42.", 42), 1.0);
        assert_eq!(score_number("42 lines", 42), 1.0);
        assert_eq!(score_number("**42** (42 lines)", 42), 1.0);
        assert!((score_number("40", 42) - 0.5625).abs() < 1e-9);
        assert_eq!(score_number("41 or 42", 42), 0.0);
        assert_eq!(score_number("40, 41, 42, 43", 42), 0.0);
        assert_eq!(score_number("no idea", 42), 0.0);
        assert_eq!(score_number("1,234", 1234), 1.0);
    }

    #[test]
    fn terms_do_not_match_inside_longer_identifiers_or_words() {
        assert!(contains_term("the code for vault-17 is 1", "vault-17"));
        assert!(!contains_term("vault-170", "vault-17"));
        assert!(!contains_term("vault-17b", "vault-17"));
        assert!(!contains_term("errors", "error"));
        assert!(contains_term("status: error.", "error"));
        assert!(contains_term("- error", "error"));
        assert!(!contains_term("x-error", "error"));
        assert!(contains_term("\"api-1\"", "api-1"));
        assert!(!contains_term("api-10", "api-1"));
    }

    #[test]
    fn labels_tolerate_case_and_punctuation_but_not_two_candidates() {
        let hosts = strings(&["api-1", "api-2", "web-1"]);
        assert_eq!(score_label("api-1", "api-1", &hosts), 1.0);
        assert_eq!(score_label("**API-1**.", "api-1", &hosts), 1.0);
        assert_eq!(score_label("The most common host is \"api-1\"", "api-1", &hosts), 1.0);
        assert_eq!(score_label("api-1 or api-2", "api-1", &hosts), 0.0);
        assert_eq!(score_label("api-1, api-2, web-1", "api-1", &hosts), 0.0);
        assert_eq!(score_label("api-10", "api-1", &hosts), 0.0);
        assert_eq!(score_label("api-2", "api-1", &hosts), 0.0);
        let codes = strings(&["4829301", "1234567"]);
        assert_eq!(score_label("The access code for vault-17 is 4829301.", "4829301", &codes), 1.0);
        assert_eq!(score_label("4829301 or 7777777", "4829301", &codes), 0.0, "a made-up code is a second candidate");
        assert_eq!(score_label("Lyon", "lyon", &strings(&["Lyon", "Lisbon"])), 1.0);
        assert_eq!(score_label("Lyon (not Lisbon)", "lyon", &strings(&["Lyon", "Lisbon"])), 0.0);
        let returns = strings(&["on_time", "late", "lost"]);
        assert_eq!(score_label("on time", "on_time", &returns), 1.0);
        assert_eq!(score_label("`on_time`", "on_time", &returns), 1.0);
        assert_eq!(score_label("on time, then late", "on_time", &returns), 0.0);
    }

    #[test]
    fn sets_score_f1_whatever_the_separators() {
        let gold = strings(&["1111111", "2222222", "3333333"]);
        assert_eq!(score_set("1111111, 2222222, 3333333", &gold, &[]), 1.0);
        assert_eq!(score_set("- 3333333\n- 1111111\n- 2222222\n- 2222222", &gold, &[]), 1.0);
        assert_eq!(score_set("['1111111', '2222222', '3333333']", &gold, &[]), 1.0);
        let half = score_set("1111111", &gold, &[]);
        assert!((half - 0.5).abs() < 1e-9, "{half}");
        let with_extra = score_set("1111111 2222222 3333333 4444444 5555555 6666666", &gold, &[]);
        assert!((with_extra - 2.0 / 3.0).abs() < 1e-9, "{with_extra}");
        assert_eq!(score_set("none", &gold, &[]), 0.0);
        let words = strings(&["lyon", "oslo"]);
        let candidates = strings(&["lyon", "oslo", "rome"]);
        assert_eq!(score_set("Oslo and Lyon", &words, &candidates), 1.0);
    }

    #[test]
    fn pairs_parse_in_any_order_with_any_brackets() {
        let gold = vec![("u1101".to_owned(), "u1203".to_owned()), ("u1300".to_owned(), "u1400".to_owned())];
        assert_eq!(score_pairs("(u1101, u1203)\n(u1300, u1400)", &gold), 1.0);
        assert_eq!(score_pairs("(u1400, u1300), (u1203 , u1101)", &gold), 1.0);
        assert_eq!(score_pairs("u1203 - u1101\nu1400 & u1300", &gold), 1.0);
        assert_eq!(score_pairs("u1203 u1101; u1400 u1300", &gold), 1.0);
        assert_eq!(score_pairs("[['u1101', 'u1203'], ['u1300', 'u1400']]", &gold), 1.0);
        assert_eq!(score_pairs("[('u1101', 'u1203'), ('u1300', 'u1400')]", &gold), 1.0);
        assert_eq!(score_pairs("Pairs: (u1101, u1203)", &gold), 2.0 / 3.0);
        // Every pairing of the candidates: full recall but low precision.
        let everything = "(u1101,u1203)(u1101,u1300)(u1101,u1400)(u1203,u1300)(u1203,u1400)(u1300,u1400)";
        assert!((score_pairs(everything, &gold) - 0.5).abs() < 1e-9);
        assert_eq!(score_pairs("none", &gold), 0.0);
        assert_eq!(score_pairs("Pairs (by id):\nu1101, u1203\nu1300, u1400", &gold), 1.0);
        // Ids of one task may differ in length.
        let mixed = vec![("e-99871".to_owned(), "e-100234".to_owned())];
        assert_eq!(score_pairs("(E-100234, E-99871)", &mixed), 1.0);
    }
}
