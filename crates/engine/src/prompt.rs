//! The text the root model reads before its first turn: the profile's system prompt and the first user message.
//! What it reads after each turn is in `notes`.

use std::fmt::Write as _;

use rlm_protocol::ContextInfo;
use serde::{Deserialize, Serialize};

use crate::config::Limits;

/// Characters per token assumed when a window given in tokens is stated to the model in characters. Low on purpose:
/// code, numbers and non-English text take more tokens per character than prose.
pub const CHARS_PER_TOKEN: u64 = 3;

/// Which set of instructions the root model gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptProfile {
    /// Chosen from the root model's name: `small` for models of up to about 8B parameters, else `standard`.
    #[default]
    Auto,
    /// Full instructions for capable models (the frontier and large open models).
    Standard,
    /// Short, concrete instructions for small local models (Qwen2.5-Coder 0.5B–7B, Llama 3.2, Phi, Gemma 2B, ...):
    /// one small step per reply, a `search` helper, no example answers to copy.
    Small,
}

impl PromptProfile {
    /// The profile's name, as configuration and traces spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Standard => "standard",
            Self::Small => "small",
        }
    }

    /// The profile a run of `model` uses.
    pub fn resolve(self, model: &str) -> Self {
        match self {
            Self::Auto if is_small_model(model) => Self::Small,
            Self::Auto => Self::Standard,
            chosen => chosen,
        }
    }

    /// A cap on tokens per reply when none is configured: small models served locally can otherwise ramble until
    /// the server's window is full.
    pub fn default_max_output_tokens(self) -> Option<u32> {
        match self {
            Self::Small => Some(1024),
            Self::Auto | Self::Standard => None,
        }
    }
}

/// Whether a model name names a model of at most about 8B parameters (`qwen2.5-coder-1.5b`, `llama3.2:3b`,
/// `phi-3-mini`, `gemma-2-2b-it`, `SmolLM2-360M`, ...).
pub fn is_small_model(model: &str) -> bool {
    let name = model.to_ascii_lowercase();
    // `-8b`, `:3b`, `_0.5b`, `1.5b`, `360m`: a parameter count at a word boundary.
    let bytes = name.as_bytes();
    for (index, unit) in name.char_indices().filter(|(_, c)| *c == 'b' || *c == 'm') {
        let after_ok = bytes.get(index + 1).is_none_or(|b| !b.is_ascii_alphanumeric());
        let digits_start = name[..index].rfind(|c: char| !(c.is_ascii_digit() || c == '.')).map_or(0, |i| i + 1);
        let number = &name[digits_start..index];
        let before_ok = digits_start == 0 || !bytes[digits_start - 1].is_ascii_alphabetic();
        if !after_ok || !before_ok || number.is_empty() {
            continue;
        }
        if let Ok(value) = number.parse::<f64>() {
            return if unit == 'm' { true } else { value <= 8.5 };
        }
    }
    ["mini", "tiny", "small", "nano"]
        .iter()
        .any(|word| name.split(|c: char| !c.is_ascii_alphanumeric()).any(|part| part == *word))
        && !name.starts_with("gpt-")
        && !name.starts_with('o')
}

/// What the system prompt needs to know about the run it starts.
#[derive(Debug, Clone)]
pub struct PromptFacts<'a> {
    pub context: &'a ContextInfo,
    pub limits: &'a Limits,
    pub depth: u32,
    pub sub_model: &'a str,
    /// The window of the sub-model in tokens, when known.
    pub sub_window_tokens: Option<u64>,
}

impl PromptFacts<'_> {
    /// Characters one `llm_query` prompt may hold, when the sub-model's window is known (a quarter is kept for the
    /// instructions and the reply).
    fn sub_prompt_chars(&self) -> Option<u64> {
        self.sub_window_tokens.map(|tokens| tokens * CHARS_PER_TOKEN * 3 / 4)
    }
}

/// The system prompt of `profile`, or the user's `template` with its `{placeholders}` filled in.
pub fn system_prompt_for(profile: PromptProfile, template: Option<&str>, facts: &PromptFacts<'_>) -> String {
    if let Some(template) = template {
        return fill_template(template, facts);
    }
    match profile {
        PromptProfile::Small => small_system_prompt(facts),
        PromptProfile::Auto | PromptProfile::Standard => system_prompt(facts),
    }
}

/// Fills `{context_description}`, `{max_iterations}`, `{max_output_chars}`, `{sub_model}` and
/// `{sub_prompt_chars}` in a user-supplied system prompt.
pub fn fill_template(template: &str, facts: &PromptFacts<'_>) -> String {
    template
        .replace("{context_description}", &describe_context(facts.context))
        .replace("{max_iterations}", &facts.limits.max_iterations.to_string())
        .replace("{max_output_chars}", &facts.limits.max_output_chars.to_string())
        .replace("{sub_model}", facts.sub_model)
        .replace("{sub_prompt_chars}", &facts.sub_prompt_chars().map_or_else(|| "unknown".to_owned(), group_thousands))
}

/// Instructions for small models. Every sentence is one instruction; the only code shown is code worth running;
/// there is no example answer and no number that could pass for one.
pub fn small_system_prompt(facts: &PromptFacts<'_>) -> String {
    let mut text = String::with_capacity(2048);
    let _ = writeln!(
        text,
        "You answer a question about a long text. The text is stored in the Python variable `context`. It is too \
         long for you to read: it is a Python {} of {} characters. You cannot see it. You only see what your code \
         prints.\n",
        facts.context.python_type,
        rough_size(facts.context.total_chars)
    );
    text.push_str(
        "In each reply, write one short Python code block and nothing else, like this:\n\
         ```repl\n\
         print(search(\"words from the question\"))\n\
         ```\n\
         Then stop. The next message shows what the code printed.\n\n\
         Functions you can use in the code:\n\
         - search(\"words\"): finds the places in `context` that contain these words (ignoring case and plural \
         endings) and shows the first few passages. Search for the most specific words of the question, like a \
         name. It shows only some places, so never count what it shows.\n\
         - lines_with(\"word\", \"other word\"): returns a list of ALL lines of `context` that contain every one \
         of the words. Give it one word for each condition of the question. Use it to count, add up or compare, \
         like this:\n\
         ```repl\n\
         rows = lines_with(\"first condition\", \"second condition\")\n\
         print(len(rows))\n\
         ```\n\
         - records(\"word\"): like lines_with, but each line becomes a dict of its fields (key=value pairs, JSON \
         or CSV columns; numbers become numbers; a missing field is None), for sums and averages, like this:\n\
         ```repl\n\
         rows = records(\"a condition\")\n\
         print(sum(r[\"a number field\"] for r in rows))\n\
         ```\n\
         - count_by(\"field\", \"condition\"): how many records have each value of the field, most common first. \
         For which value is most common, or which of two values occurs more often.\n\
         - sum_by(\"field\", \"number field\", \"condition\"): the total of the number field for each value of \
         the field, highest first. For which value has the largest total. Like this:\n\
         ```repl\n\
         print(count_by(\"a field\", \"a condition\"))\n\
         print(sum_by(\"a field\", \"a number field\"))\n\
         ```\n",
    );
    match facts.sub_prompt_chars() {
        Some(chars) => {
            let _ = writeln!(
                text,
                "- llm_query(\"instructions and text\"): asks another model and returns its reply. It can read \
                 {} characters at once, so give it a slice of `context`, not all of it.",
                rough_size(chars)
            );
        }
        None => text.push_str(
            "- llm_query(\"instructions and text\"): asks another model and returns its reply. Give it a slice of \
             `context`, not all of it.\n",
        ),
    }
    text.push_str(
        "- context[start:end]: a slice of the text, to print or to pass to llm_query.\n\n\
         Rules:\n\
         1. Never guess. Answer only with what your code printed.\n\
         2. Never print all of `context`.\n\
         3. If a search finds nothing, search again with fewer or different words.\n\
         4. Questions about how many, how much, a total, an average, the most or the least need code over all \
         lines: lines_with or records, then len, sum, max or min; or count_by or sum_by. Print the result.\n\
         5. Give the helpers only words that are written in the lines, like field names and values. Leave out \
         words that only name what is counted (\"records\", \"entries\").\n\
         6. When the printed output shows the answer, reply with FINAL( then the answer then ) and nothing else.\n",
    );
    let _ = write!(text, "You have {} replies in total.", facts.limits.max_iterations);
    text
}

pub fn system_prompt(facts: &PromptFacts<'_>) -> String {
    let PromptFacts { context, limits, depth, sub_model, .. } = facts;
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
    let window = match facts.sub_prompt_chars() {
        Some(chars) => format!("That model reads about {} characters per prompt", group_thousands(chars)),
        None => "That model has a large window of its own".to_owned(),
    };
    let _ = writeln!(
        text,
        "- `llm_query(prompt, model=None) -> str`: asks a language model (default `{sub_model}`) and returns its \
         answer. {window}, so give it big chunks of `context` together with precise instructions."
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
        "- `search(words, max_results=10, window=200) -> list[str]`: passages of `context` that contain the words \
         (case- and plural-insensitive; when the exact phrase is absent, the passages with most of the words).\n\
         - `lines_with(*words) -> list[str]`: every line of `context` that contains all the words (as written, \
         ignoring case); `records(*words) -> list[dict]`: those lines parsed into fields (key=value pairs, JSON \
         objects or CSV columns; numbers as numbers; a missing field is None). For exact counts, sums and rankings.\n\
         - `count_by(field, *words)` and `sum_by(field, number_field, *words)` -> `list[tuple]`: over the records of \
         the lines with all the words, how many have each value of `field` (most common first), or the total of \
         `number_field` for each value of `field` (highest first).\n\
         - `SHOW_VARS()`: lists the variables you have defined.\n\
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

/// A size in words and small numbers ("about 131 thousand"), for prompts that must not contain long numbers.
pub fn rough_size(n: u64) -> String {
    match n {
        0..1_000 => format!("{n}"),
        1_000..1_000_000 => format!("about {} thousand", n / 1_000),
        _ => format!("about {:.1} million", n as f64 / 1e6),
    }
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

pub(crate) fn group_thousands(n: u64) -> String {
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

pub fn first_user_message(profile: PromptProfile, query: &str) -> String {
    match profile {
        PromptProfile::Small => {
            format!("Question: {query}\n\nWrite a ```repl code block that searches or counts in `context`.")
        }
        PromptProfile::Auto | PromptProfile::Standard => format!(
            "Query: {query}\n\nYou have not looked at `context` yet. Start by writing a ```repl block that inspects \
             it; do not answer before your code has shown you the evidence."
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_prompt_states_context_shape_and_budgets() {
        let info = ContextInfo {
            python_type: "list".into(),
            total_chars: 1_234_567,
            chunk_lengths: vec![1000, 2000],
            chunk_count: 5,
        };
        let limits = Limits { max_sub_calls: Some(40), ..Limits::default() };
        let facts =
            PromptFacts { context: &info, limits: &limits, depth: 0, sub_model: "mini", sub_window_tokens: None };
        let text = system_prompt(&facts);
        assert!(text.contains("`list` with 1,234,567 characters in total, in 5 items of these lengths: 1,000, 2,000"));
        assert!(text.contains("and 3 more"));
        assert!(text.contains("At most 40 sub-calls"));
        assert!(text.contains("You have 30 turns"));
        assert!(text.contains("cut"));
        assert!(text.contains("FINAL_VAR"));
        assert!(text.contains("default `mini`"));
        assert!(text.contains("large window"));
    }

    #[test]
    fn model_names_choose_the_profile() {
        for small in [
            "qwen2.5-coder-0.5b",
            "qwen2.5-coder-1.5b",
            "Qwen/Qwen2.5-7B-Instruct",
            "llama3.2:3b",
            "meta-llama-3.1-8b-instruct",
            "gemma-2-2b-it",
            "SmolLM2-360M-Instruct",
            "phi-3-mini-4k-instruct",
        ] {
            assert_eq!(PromptProfile::Auto.resolve(small), PromptProfile::Small, "{small}");
        }
        for large in ["gpt-4o", "gpt-4o-mini", "o3-mini", "Qwen2.5-72B-Instruct", "llama3.1:70b", "claude-sonnet-4"] {
            assert_eq!(PromptProfile::Auto.resolve(large), PromptProfile::Standard, "{large}");
        }
        assert_eq!(PromptProfile::Standard.resolve("qwen2.5-coder-0.5b"), PromptProfile::Standard);
        assert_eq!(PromptProfile::Small.resolve("gpt-4o"), PromptProfile::Small);
    }

    #[test]
    fn small_prompt_has_no_answer_to_copy_and_states_the_sub_window_in_characters() {
        let info =
            ContextInfo { python_type: "str".into(), total_chars: 131_072, chunk_lengths: vec![], chunk_count: 1 };
        let limits = Limits::default();
        let facts =
            PromptFacts { context: &info, limits: &limits, depth: 0, sub_model: "m", sub_window_tokens: Some(16_384) };
        let text = small_system_prompt(&facts);
        assert!(text.contains("about 36 thousand characters at once"), "{text}");
        assert!(text.contains("str of about 131 thousand characters"), "{text}");
        assert!(!text.contains("your answer"), "{text}");
        assert!(!text.contains("FINAL(answer"), "{text}");
        let digits_runs: Vec<&str> =
            text.split(|c: char| !(c.is_ascii_digit() || c == ',')).filter(|run| run.len() >= 4).collect();
        assert!(digits_runs.is_empty(), "no long bare numbers: {digits_runs:?}");
        let standard = system_prompt(&facts);
        assert!(standard.contains("reads about 36,864 characters per prompt"), "{standard}");
        // Both profiles offer the helpers that compute; the small one shows them in use, with placeholders only.
        for prompt in [&text, &standard] {
            assert!(prompt.contains("lines_with(") && prompt.contains("records("), "{prompt}");
        }
        assert!(text.contains("print(len(rows))") && text.contains("count_by(") && text.contains("sum_by("), "{text}");
        assert!(text.contains("never count what it shows"), "{text}");
    }

    #[test]
    fn user_templates_get_their_placeholders_filled() {
        let info = ContextInfo { python_type: "str".into(), total_chars: 5000, chunk_lengths: vec![], chunk_count: 1 };
        let limits = Limits::default();
        let facts =
            PromptFacts { context: &info, limits: &limits, depth: 0, sub_model: "m", sub_window_tokens: Some(1000) };
        let text = system_prompt_for(
            PromptProfile::Small,
            Some("Data: {context_description} Turns: {max_iterations}. Sub: {sub_model}, {sub_prompt_chars} chars."),
            &facts,
        );
        assert_eq!(
            text,
            "Data: `context` is a Python `str` with 5,000 characters in total. Turns: 30. Sub: m, 2,250 chars."
        );
    }
}
