//! The text the root model reads: the system prompt, the first user message, observations after each turn, and the
//! last request for an answer when a limit runs out.

use std::fmt::Write as _;

use rlm_protocol::{CellOutcome, ContextInfo, LimitKind};

use crate::config::Limits;

/// What the system prompt needs to know about the run it starts.
#[derive(Debug, Clone)]
pub struct PromptFacts<'a> {
    pub context: &'a ContextInfo,
    pub limits: &'a Limits,
    pub depth: u32,
    pub sub_model: &'a str,
}

pub fn system_prompt(facts: &PromptFacts<'_>) -> String {
    let PromptFacts { context, limits, depth, sub_model } = facts;
    let mut text = String::with_capacity(4096);
    text.push_str(
        "You answer a query about data that is too large to show you. The data is loaded in a Python REPL as the \
         variable `context`; you never see it directly. You explore it by writing Python code, and you see only \
         what your code prints.\n\n",
    );
    let _ = writeln!(text, "## The context\n{}\n", describe_context(context));
    text.push_str(
        "## The REPL\n\
         Write code in fenced blocks that start with ```repl and end with ```. Every block in your reply runs, in \
         order, in one persistent Python session: variables, imports and functions stay defined between turns. The \
         standard library is available.\n",
    );
    let _ = writeln!(
        text,
        "After your reply you get each block's printed output (stdout, then errors). Output longer than {} \
         characters is cut, so print summaries, lengths and short slices rather than whole texts, and keep \
         intermediate results in variables.\n",
        limits.max_output_chars
    );
    text.push_str("## Functions in the REPL\n");
    let _ = writeln!(
        text,
        "- `llm_query(prompt, model=None) -> str`: asks a language model (default `{sub_model}`) and returns its \
         answer. That model has a large window of its own (hundreds of thousands of characters), so give it big \
         chunks of `context` together with precise instructions."
    );
    let _ = writeln!(
        text,
        "- `llm_query_batched(prompts, model=None) -> list[str]`: the same for a list of prompts, run concurrently \
         (up to {} at a time) — much faster than a loop of `llm_query`. A failed prompt gives a string starting \
         with \"Error:\" in its place.",
        limits.batch_concurrency
    );
    if *depth < limits.max_depth {
        text.push_str(
            "- `rlm_query(prompt, model=None) -> str` and `rlm_query_batched(prompts, model=None) -> list[str]`: \
             hand a sub-task to a helper that works like you, with its own REPL whose `context` is the prompt. Use \
             it for sub-tasks that need several steps of code themselves.\n",
        );
    } else {
        text.push_str(
            "- `rlm_query(prompt, model=None)` and `rlm_query_batched(prompts, model=None)`: at this depth they are \
             plain model calls, like `llm_query`.\n",
        );
    }
    text.push_str(
        "- `SHOW_VARS()`: lists the variables you have defined.\n\
         - `FINAL_VAR(name)`: ends the run with `str()` of the variable called `name` as the answer.\n\n",
    );
    text.push_str("## Budget\n");
    let _ = writeln!(text, "- You have {} turns.", limits.max_iterations);
    if let Some(max) = limits.max_sub_calls {
        let _ = writeln!(text, "- At most {max} sub-calls in total (each prompt of a batch counts as one).");
    }
    if let Some(timeout) = limits.timeout {
        let _ = writeln!(text, "- {} seconds of wall-clock time in total.", timeout.as_secs());
    }
    let _ = writeln!(text, "- Each code block may run for at most {} seconds.\n", limits.cell_timeout.as_secs());
    text.push_str(
        "## How to finish\n\
         When you are sure of the answer, reply with FINAL(your answer) outside any code block, or with \
         FINAL_VAR(variable_name) to answer with a variable's value. In code you may instead set \
         answer[\"content\"] = ... and answer[\"ready\"] = True. Only answer after your code has shown you the \
         evidence; if a block raised an error, fix it before answering.\n\n\
         Work step by step: first look at the context's structure (type, length, a few short samples), then search \
         or split it and use sub-calls on the parts that matter, then combine the results.",
    );
    text
}

fn describe_context(info: &ContextInfo) -> String {
    let mut text = format!(
        "`context` is a Python `{}` with {} characters in total",
        info.python_type,
        group_thousands(info.total_chars)
    );
    if info.python_type != "str" {
        let _ = write!(text, ", in {} items", group_thousands(info.chunk_count));
        if !info.chunk_lengths.is_empty() {
            let shown: Vec<String> = info.chunk_lengths.iter().map(|n| group_thousands(*n)).collect();
            let more = info.chunk_count.saturating_sub(info.chunk_lengths.len() as u64);
            let _ = write!(text, " of these lengths: {}", shown.join(", "));
            if more > 0 {
                let _ = write!(text, " and {more} more");
            }
        }
    }
    text.push('.');
    text
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    grouped
}

pub fn first_user_message(query: &str) -> String {
    format!(
        "Query: {query}\n\nYou have not looked at `context` yet. Start by writing a ```repl block that inspects it; \
         do not answer before your code has shown you the evidence."
    )
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
            if !error.traceback.is_empty() {
                text.push_str(error.traceback.trim_end());
                text.push('\n');
            }
            let _ = writeln!(text, "{error}");
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

pub const NO_CODE_NOTE: &str = "Your reply had no ```repl block and no FINAL(...). Write a ```repl block to examine \
                                `context`, or reply FINAL(your answer) if you already have it from your code's output.";

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
        "You have reached {}; no more code can run. Reply now with your best final answer, based on what you have \
         found so far, as FINAL(your answer).",
        limit.describe()
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rlm_protocol::CellError;

    use super::*;

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
    }

    #[test]
    fn system_prompt_states_context_shape_and_budgets() {
        let info = ContextInfo {
            python_type: "list".into(),
            total_chars: 1_234_567,
            chunk_lengths: vec![1000, 2000],
            chunk_count: 5,
        };
        let limits = Limits { max_sub_calls: Some(40), ..Limits::default() };
        let text = system_prompt(&PromptFacts { context: &info, limits: &limits, depth: 0, sub_model: "mini" });
        assert!(text.contains("`list` with 1,234,567 characters in total, in 5 items of these lengths: 1,000, 2,000"));
        assert!(text.contains("and 3 more"));
        assert!(text.contains("At most 40 sub-calls"));
        assert!(text.contains("You have 30 turns"));
        assert!(text.contains("cut"));
        assert!(text.contains("FINAL_VAR"));
        assert!(text.contains("default `mini`"));
    }
}
