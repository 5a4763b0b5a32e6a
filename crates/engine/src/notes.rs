//! What the root model is told after each turn: its cells' output, and notes on what to do next (a refused answer, a
//! repeat, a missing variable, a limit).

use std::fmt::Write as _;

use rlm_protocol::{CellError, CellOutcome, LimitKind};

use crate::guard::search_terms;
use crate::prompt::group_thousands;
use crate::question::{RANKING, aggregate_cue, asks_for_ranking, asks_for_total};

/// A code line that searches `context` for the most specific words of `query`; for a question that asks for an
/// aggregate, one that gets every line with its conditions instead (search shows only a few places).
pub fn suggested_search(query: &str) -> String {
    if aggregate_cue(query).is_some() {
        return suggested_lines(query);
    }
    let terms = search_terms(query);
    let words = terms.first().cloned().unwrap_or_else(|| "a word from the question".to_owned());
    format!("print(search({words:?}))")
}

/// A code line that prints every line of `context` with the conditions `query` names.
pub fn suggested_lines(query: &str) -> String {
    format!("print({})", lines_call(query))
}

/// A `lines_with(...)` call for the conditions `query` names: its words that look like values (`status=error`,
/// `api-1`, `u1101`, a name) rather than plain words, at most three; else its most specific word.
fn lines_call(query: &str) -> String {
    // Values the question quotes ("status \"denied\" and event \"search\"") are the conditions as the lines write
    // them.
    let quoted = quoted_values(query);
    if !quoted.is_empty() {
        let words = quoted.iter().take(3).map(|value| format!("{value:?}")).collect::<Vec<_>>().join(", ");
        return format!("lines_with({words})");
    }
    let terms = search_terms(query);
    let mut conditions: Vec<&String> = terms
        .iter()
        .filter(|term| {
            term.contains(|c: char| !c.is_alphabetic())
                || (term.starts_with(char::is_uppercase) && !starts_a_sentence(query, term))
        })
        .take(3)
        .collect();
    if conditions.is_empty() {
        conditions.extend(terms.first());
    }
    let words = if conditions.is_empty() {
        "\"a word from the question\"".to_owned()
    } else {
        conditions.iter().map(|term| format!("{term:?}")).collect::<Vec<_>>().join(", ")
    };
    format!("lines_with({words})")
}

/// The values `query` puts in quotes (`"denied"`, `'lamp'`, `“north”`), each of 1 to 40 characters.
fn quoted_values(query: &str) -> Vec<String> {
    let mut values = Vec::new();
    for (open, close) in [('"', '"'), ('\u{201c}', '\u{201d}'), ('\'', '\'')] {
        let mut rest = query;
        while let Some(start) = rest.find(open) {
            let after = &rest[start + open.len_utf8()..];
            // An apostrophe inside a word ("user's") opens nothing.
            if open == '\'' && rest[..start].chars().next_back().is_some_and(char::is_alphanumeric) {
                rest = after;
                continue;
            }
            let Some(end) = after.find(close) else { break };
            let value = after[..end].trim();
            if (1..=40).contains(&value.chars().count()) && !values.iter().any(|known: &String| known == value) {
                values.push(value.to_owned());
            }
            rest = &after[end + close.len_utf8()..];
        }
        if !values.is_empty() {
            break;
        }
    }
    values
}

/// Whether `term` occurs in `query` only where a sentence starts (so its capital says nothing about it).
fn starts_a_sentence(query: &str, term: &str) -> bool {
    query.match_indices(term).all(|(at, _)| {
        let before = query[..at].trim_end();
        before.is_empty() || before.ends_with(['.', '?', '!', ':'])
    })
}

/// Why a count of `search()` places is not accepted as the answer, and how to count instead.
pub fn search_count_note(answer: &str, query: &str) -> String {
    let shown: String = answer.chars().take(80).collect();
    format!(
        "FINAL({shown}) was not accepted: that number is how many places search() found with some words, and search \
         shows only the first few of them. It is not a count of what the question asks. Count with code over all \
         lines, with one word for each condition of the question, for example:\n```repl\nprint(len({}))\n```",
        lines_call(query)
    )
}

/// Why a count of 0 is not accepted yet: the lines were matched with a word that is in no line. `helper_note` is
/// the helpers' own line about it (which words, and the count without them), when it was seen.
pub fn absent_word_zero_note(answer: &str, helper_note: Option<&str>) -> String {
    let shown: String = answer.chars().take(80).collect();
    let quoted = helper_note.map(|note| format!(" The output said: \"{note}\"")).unwrap_or_default();
    format!(
        "FINAL({shown}) was not accepted yet: that 0 comes from matching lines with a word that is in no line of \
         the text, so it says nothing about the question.{quoted} Words of the question that only name what is \
         counted (\"records\", \"entries\", \"loans\") are usually not written in the lines. Count again with only \
         the words that are in the lines, one for each condition of the question. If the answer is really 0, reply \
         FINAL(0) again."
    )
}

/// Why a count or total is not the answer to a question that asks which value: `value`, the one a printed ranking
/// gave that number to.
pub fn number_for_which_note(answer: &str, value: Option<&str>) -> String {
    let shown: String = answer.chars().take(80).collect();
    let named = match value {
        Some(value) => {
            let value: String = value.chars().take(80).collect();
            format!(
                " In the ranking printed, {shown} is the number beside {value}: if that is the one the question asks for, reply FINAL({value})."
            )
        }
        None => " Reply with the name of the value the numbers point to, not the numbers.".to_owned(),
    };
    format!(
        "FINAL({shown}) was not accepted yet: the question asks which one, and a count or total is not a value.{named} \
         If the answer really is the number, reply FINAL({shown}) again."
    )
}

/// Why an aggregate read from `search()` passages is not accepted yet, with the helper for the kind of aggregate the
/// question asks for.
pub fn aggregate_from_search_note(answer: &str, query: &str) -> String {
    let shown: String = answer.chars().take(80).collect();
    let (kind, _) = aggregate_cue(query).unwrap_or(("an aggregate", ""));
    // "Which station accounts for the most value in total?" asks for a total per value, then the largest.
    let kind = if asks_for_ranking(query) { RANKING } else { kind };
    let code = match kind {
        "a count" => format!("print(len({}))", lines_call(query)),
        "a total" | "a statistic" => {
            "rows = records(\"a condition\")\nprint(sum(r[\"a number field\"] for r in rows), len(rows))".to_owned()
        }
        _ => "print(count_by(\"a field\", \"a condition\"))\nprint(sum_by(\"a field\", \"a number field\"))".to_owned(),
    };
    format!(
        "FINAL({shown}) was not accepted yet: the question asks for {kind}, and search() shows only some of the \
         places, so an answer read from its passages is a guess. Compute it with code over all lines, with the \
         question's words in place of the quoted ones, for example:\n```repl\n{code}\n```\nIf the result is the same, \
         reply with FINAL( then the result then )."
    )
}

/// Why an answer was refused, and what to do instead.
pub fn answer_before_evidence_note(query: &str) -> String {
    format!(
        "Your answer was not accepted: you have not seen any output of code that reads `context` yet, so it cannot \
         be based on the text. Look first, for example:\n```repl\n{}\n```",
        suggested_search(query)
    )
}

pub fn unsupported_answer_note() -> String {
    "Your answer was not accepted: it only repeats words of the question, or you wrote it next to new code and it is \
     not in any output you have seen. Read the output above. If it shows the answer, reply with FINAL( then the \
     answer then ) and nothing else."
        .to_owned()
}

pub fn ungrounded_answer_note() -> String {
    "Your answer was not accepted: it came from llm_query, and that prompt contained no text from `context`, so the \
     model answering it never saw the data and guessed. Find the answer in `context` with code (for example \
     search(...)), or pass the relevant slice of `context` inside the llm_query prompt."
        .to_owned()
}

pub fn ungrounded_calls_note(count: usize) -> String {
    let calls = if count == 1 { "1 llm_query prompt".to_owned() } else { format!("{count} llm_query prompts") };
    format!(
        "Warning: {calls} contained no text from `context`. The model answering never saw the data, so its answer \
         is a guess. Include the relevant part of `context` in the prompt, e.g. llm_query(\"...\" + context[a:b])."
    )
}

pub fn placeholder_note(answer: &str, reason: &str) -> String {
    let shown: String = answer.chars().take(80).collect();
    format!(
        "FINAL({shown}) was not accepted: {reason}. Put the actual answer you found inside FINAL( ), or keep \
         searching if you have not found it."
    )
}

/// Said when the model sent the same reply again: what it did will not give anything new.
pub fn repeat_note(query: &str, had_code: bool, failure: Option<&CellError>) -> String {
    if let (true, Some(error)) = (had_code, failure) {
        // Told only that the output is the same, a weak model runs the failing code again until the run stops.
        return format!(
            "You ran the same code as before, and it failed again with the same error: {}: {}. It will fail every \
             time. Read the error and write different code: for example print a few items first to see their type \
             (print(x[:3])), or take a simpler step.",
            error.kind,
            // The message comes from model-written code and can be any size.
            error.message.chars().take(300).collect::<String>()
        );
    }
    if had_code {
        format!(
            "You ran the same code as before, so its output is the same as before. If that output shows the answer \
             to the question, reply with FINAL( then the answer then ). If it does not, do something different, for \
             example:\n```repl\n{}\n```",
            suggested_search(query)
        )
    } else {
        format!(
            "You sent the same reply as before, and it runs no code. Write a code block, for example:\n```repl\n{}\n```",
            suggested_search(query)
        )
    }
}

/// Appended to every observation for small models, which lose track of the question and of how to finish.
pub fn question_reminder(query: &str) -> String {
    match aggregate_cue(query) {
        // Told only "use code", a model that has just printed the computed result writes the same code again.
        Some((kind, _)) => {
            // "Which station accounts for the most value in total" is a total per value, then the largest: weak models
            // reach for count_by there, which counts lines instead.
            let (kind, how) = match kind {
                "a count" => (kind, "lines_with or records, then len"),
                _ if asks_for_ranking(query) && asks_for_total(query) => (
                    "a total for each value, then the highest or lowest",
                    "sum_by(\"a field\", \"a number field\") adds up the number field for each value of the field; \
                     count_by only counts lines",
                ),
                _ if asks_for_ranking(query) => (
                    RANKING,
                    "count_by(\"a field\") counts the lines of each value; sum_by(\"a field\", \"a number field\") \
                     adds up a number field for each value",
                ),
                _ => (kind, "lines_with or records, then len, sum, max or min"),
            };
            format!(
                "Question: {query}\nThis question asks for {kind}. If the output above is that result, computed by \
                 code over all lines ({how}), reply with FINAL( then the result then ). If not, write a code block \
                 that computes it. Never count what search shows."
            )
        }
        None => format!(
            "Question: {query}\nIf the output above shows the answer, reply with FINAL( then the answer then ). If it \
             does not, write another code block."
        ),
    }
}

/// Cuts `text` to at most `max_chars` characters, appending a note on how much was cut.
/// Returns the kept text and the number of characters cut.
pub fn truncate(text: &str, max_chars: usize) -> (String, u64) {
    match text.char_indices().nth(max_chars) {
        None => (text.to_owned(), 0),
        Some((byte_index, _)) => {
            let cut = text[byte_index..].chars().count() as u64;
            (format!("{}\n[... {} more characters not shown]", &text[..byte_index], group_thousands(cut)), cut)
        }
    }
}

/// What the model sees of one cell: output cut to the limit, then the error (always shown in full).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellView {
    pub stdout: String,
    pub stderr: String,
    pub truncated_chars: u64,
}

pub fn view_cell(outcome: &CellOutcome, max_chars: usize) -> CellView {
    let (stdout, cut_out) = truncate(&outcome.stdout, max_chars);
    let remaining = max_chars.saturating_sub(outcome.stdout.chars().count().min(max_chars));
    let (stderr, cut_err) = truncate(&outcome.stderr, remaining.max(1000));
    CellView { stdout, stderr, truncated_chars: cut_out + cut_err + outcome.dropped_chars }
}

/// The observation for one turn: each executed block's output, in order.
pub fn observation(cells: &[(CellView, &CellOutcome)], notes: &[String]) -> String {
    let mut text = String::new();
    for (index, (view, outcome)) in cells.iter().enumerate() {
        if cells.len() > 1 {
            let _ = writeln!(text, "Block {} output:", index + 1);
        } else {
            text.push_str("Output:\n");
        }
        let mut empty = true;
        for part in [&view.stdout, &view.stderr] {
            if !part.is_empty() {
                text.push_str(part);
                if !part.ends_with('\n') {
                    text.push('\n');
                }
                empty = false;
            }
        }
        if outcome.dropped_chars > 0 {
            let _ =
                writeln!(text, "[... {} more characters were not captured]", group_thousands(outcome.dropped_chars));
        }
        if let Some(error) = &outcome.error {
            let traceback = error.traceback.trim_end();
            if !traceback.is_empty() {
                text.push_str(traceback);
                text.push('\n');
            }
            // A traceback ends with the error's line already: the same line twice costs a weak model's attention.
            let line = error.to_string();
            if !traceback.ends_with(line.trim_end()) {
                let _ = writeln!(text, "{line}");
            }
            empty = false;
        }
        if empty {
            text.push_str("(no output)\n");
        }
        text.push('\n');
    }
    for note in notes {
        text.push_str(note);
        text.push('\n');
    }
    text.trim_end().to_owned()
}

/// Said when a reply had neither code nor an answer.
pub const NO_CODE_NOTE: &str = "Your reply had no ```repl block and no FINAL(...). Write a ```repl block to examine \
                                `context`, or reply FINAL(...) with the answer if your code's output already showed it.";

/// Said when a reply had neither code nor an answer: to small models, with a line of code to start from.
pub fn small_no_code_note(query: &str) -> String {
    format!(
        "Your reply had no code, so nothing ran. Reply with a code block, for example:\n```repl\n{}\n```",
        suggested_search(query)
    )
}

pub fn rejected_final_note() -> String {
    "Your FINAL answer was not accepted because a code block in the same reply raised an error. Fix the code and \
     check its output first."
        .to_owned()
}

pub fn missing_variable_note(name: &str, available: &[String]) -> String {
    format!(
        "FINAL_VAR({name}) failed: there is no variable called `{name}`. Variables you have defined: [{}]. Assign the \
         answer to a variable in a ```repl block first, or reply FINAL(your answer).",
        available.join(", ")
    )
}

pub fn limit_message(limit: LimitKind) -> String {
    format!(
        "You have reached {}; no more code can run. Reply now with your best final answer, based only on what your \
         code printed, as FINAL(...) with the answer inside the parentheses.",
        limit.describe()
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rlm_protocol::CellError;

    use super::*;

    #[test]
    fn aggregate_questions_get_code_over_all_lines_and_lookups_a_search() {
        let count = "How many log lines have action=logout and status=error?";
        assert_eq!(suggested_search(count), r#"print(lines_with("action=logout", "status=error"))"#);
        assert_eq!(
            suggested_lines("Which user has the most lines from host=api-1?"),
            r#"print(lines_with("host=api-1"))"#
        );
        assert_eq!(suggested_lines("How often did Alice visit Paris?"), r#"print(lines_with("Alice", "Paris"))"#);
        assert_eq!(suggested_lines("How many errors were logged?"), r#"print(lines_with("errors"))"#);
        // Quoted values are the conditions; a capital word that starts a later sentence ("Give") is not a name.
        let quoted =
            r#"What is the number of events with both status "denied" and event "search"? Give only the count."#;
        assert_eq!(suggested_lines(quoted), r#"print(lines_with("denied", "search"))"#);
        assert_eq!(suggested_lines("Is the user's status 'lost' or 'found'?"), r#"print(lines_with("lost", "found"))"#);
        assert_eq!(
            suggested_lines("How many loans were lost? Give the count for Oslo."),
            r#"print(lines_with("Oslo"))"#
        );
        let lookup = "What is the special magic number for brisk-pebble mentioned in the provided text?";
        assert_eq!(suggested_search(lookup), r#"print(search("brisk-pebble"))"#);
        assert!(question_reminder(count).contains("asks for a count"), "{}", question_reminder(count));
        assert!(!question_reminder(lookup).contains("asks for"), "{}", question_reminder(lookup));
        // A total per value, then the largest: sum_by, not count_by; a plain ranking: count_by first.
        let ranked_total = question_reminder("Which value of station accounts for the most value in total?");
        assert!(ranked_total.contains("asks for a total for each value, then the highest or lowest"), "{ranked_total}");
        assert!(ranked_total.contains("sum_by(\"a field\", \"a number field\") adds up"), "{ranked_total}");
        let ranked = question_reminder("Which user has the most log lines with status=timeout?");
        assert!(ranked.contains("asks for an extreme or a ranking") && ranked.contains("count_by(\"a field\") counts"));
        assert!(!question_reminder(count).contains("count_by"), "{}", question_reminder(count));
        let note = search_count_note("77", count);
        assert!(note.contains(r#"print(len(lines_with("action=logout", "status=error")))"#), "{note}");
    }

    #[test]
    fn truncation_says_how_much_was_cut() {
        assert_eq!(truncate("short", 10), ("short".to_owned(), 0));
        let (kept, cut) = truncate(&"é".repeat(2500), 1000);
        assert_eq!(cut, 1500);
        assert!(kept.starts_with(&"é".repeat(1000)));
        assert!(kept.ends_with("[... 1,500 more characters not shown]"));
    }

    #[test]
    fn errors_are_shown_even_when_output_is_cut() {
        let outcome = CellOutcome {
            stdout: "x".repeat(50),
            error: Some(CellError { kind: "ValueError".into(), message: "bad".into(), traceback: String::new() }),
            duration: Duration::ZERO,
            ..CellOutcome::default()
        };
        let view = view_cell(&outcome, 10);
        let text = observation(&[(view, &outcome)], &[]);
        assert!(text.contains("ValueError: bad"), "{text}");
        assert!(text.contains("40 more characters not shown"), "{text}");
        // A traceback that ends with the error's line shows it once; one that does not gets it added.
        let traceback = "Traceback (most recent call last):\n  File \"<cell 1>\", line 1\nTypeError: no\n";
        let error = CellError { kind: "TypeError".into(), message: "no".into(), traceback: traceback.into() };
        let failed = CellOutcome { error: Some(error), ..CellOutcome::default() };
        let text = observation(&[(view_cell(&failed, 100), &failed)], &[]);
        assert_eq!(text.matches("TypeError: no").count(), 1, "{text}");
        let error = CellError { kind: "KeyError".into(), message: "'x'".into(), traceback: "Traceback: ...".into() };
        let failed = CellOutcome { error: Some(error), ..CellOutcome::default() };
        let text = observation(&[(view_cell(&failed, 100), &failed)], &[]);
        assert!(text.contains("Traceback: ...\nKeyError: 'x'"), "{text}");
    }
}
