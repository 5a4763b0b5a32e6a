//! Reading a model response: which code blocks to run, and whether it ends the run with `FINAL(...)` or
//! `FINAL_VAR(...)`.

/// A model response split into the code to run and the prose around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedResponse {
    /// Code blocks to execute, in order.
    pub code_blocks: Vec<String>,
    /// The response with every fenced block removed: where `FINAL(...)` counts.
    pub prose: String,
}

/// How a response asks to end the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinalDirective {
    /// `FINAL(answer)`: the text between the balanced parentheses.
    Answer(String),
    /// `FINAL_VAR(name)`: the answer is `str()` of a REPL variable.
    Variable(String),
}

struct Fence<'a> {
    language: &'a str,
    body: String,
}

/// Splits `response` into fenced blocks and prose. Blocks labelled `repl` run; when there are none, blocks labelled
/// `python`/`py`/`python3` run instead (models trained on other harnesses write those), and when there are none of
/// those either, unlabelled fences run (small models often drop the label). An unterminated fence runs to the end of
/// the response. A reply with no fence at all whose every line reads as Python (a bare `print(len(context))`) runs
/// too, unless it asks to finish. Lines the model copied from the runtime's own messages (turn headers, `Output:`,
/// `REPL variables: [...]`) are removed from code before it runs.
pub fn parse_response(response: &str) -> ParsedResponse {
    let mut fences: Vec<Fence<'_>> = Vec::new();
    let mut prose = String::with_capacity(response.len());
    let mut open: Option<Fence<'_>> = None;
    for line in response.split_inclusive('\n') {
        let trimmed = line.trim();
        match open.as_mut() {
            Some(fence) => {
                if trimmed == "```" {
                    fences.extend(open.take());
                } else {
                    fence.body.push_str(line);
                }
            }
            None => match trimmed.strip_prefix("```") {
                Some(info) if !info.contains('`') => {
                    let language = info.split_whitespace().next().unwrap_or("");
                    open = Some(Fence { language, body: String::new() });
                }
                _ => prose.push_str(line),
            },
        }
    }
    fences.extend(open);

    let is_repl = |f: &Fence<'_>| f.language.eq_ignore_ascii_case("repl");
    let is_python = |f: &Fence<'_>| matches!(f.language.to_ascii_lowercase().as_str(), "python" | "py" | "python3");
    let is_unlabelled = |f: &Fence<'_>| f.language.is_empty();
    let runs: &dyn Fn(&Fence<'_>) -> bool = if fences.iter().any(is_repl) {
        &is_repl
    } else if fences.iter().any(is_python) {
        &is_python
    } else {
        &is_unlabelled
    };
    let (chosen, shown): (Vec<Fence<'_>>, Vec<Fence<'_>>) = fences.into_iter().partition(|f| runs(f));
    let chosen: Vec<String> = chosen.into_iter().map(|f| f.body).collect();
    // A fence that does not run is text the model shows: an answer written in one counts (small models put
    // `FINAL(...)` in a plain fence after their code).
    for fence in shown {
        prose.push_str(&fence.body);
    }
    let mut code_blocks = Vec::with_capacity(chosen.len());
    for code in &chosen {
        let (code, answers) = split_answer_lines(&strip_echoes(code));
        prose.push_str(&answers);
        if !code.trim().is_empty() {
            code_blocks.push(code);
        }
    }
    // Small models write a bare statement, sometimes followed by a stray closing fence.
    if code_blocks.is_empty() && find_final(&prose).is_none() && is_bare_code(&prose) {
        code_blocks.push(strip_echoes(&prose));
        prose.clear();
    }
    ParsedResponse { code_blocks, prose }
}

/// Splits answer lines out of code: a line that starts like `Final(` or `final(`, or an unbalanced `FINAL(`, is an
/// answer the model wrote into its code block (small models do), and as code it would be a `NameError` or a
/// `SyntaxError` that keeps the whole block from running. A balanced `FINAL(...)` stays: the REPL defines it.
fn split_answer_lines(code: &str) -> (String, String) {
    let mut kept = String::with_capacity(code.len());
    let mut answers = String::new();
    for line in code.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let starts_like_final = trimmed.get(..6).is_some_and(|head| head.eq_ignore_ascii_case("final("));
        let balanced = trimmed.matches('(').count() == trimmed.matches(')').count();
        if starts_like_final && !(trimmed.starts_with("FINAL(") && balanced) {
            answers.push_str(line);
            if !line.ends_with('\n') {
                answers.push('\n');
            }
        } else {
            kept.push_str(line);
        }
    }
    (kept, answers)
}

/// Whether a line is one the runtime writes (or that a model invents in the same style) rather than code.
fn is_echoed_runtime_line(line: &str) -> bool {
    let line = line.trim();
    let lower = line.to_ascii_lowercase();
    let header_number = |rest: &str| {
        let rest = rest.trim().trim_end_matches(':').trim();
        !rest.is_empty() && rest.split('/').all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
    };
    ["turn ", "iteration ", "step "].iter().any(|word| lower.strip_prefix(word).is_some_and(header_number))
        || lower.starts_with("repl variables:")
        || matches!(lower.as_str(), "output:" | "repl output:" | "(no output)")
        || lower.strip_prefix("block ").is_some_and(|rest| rest.ends_with(" output:"))
}

/// `code` without echoed runtime lines, and without interactive prompts (`>>> `, `... `) when it was pasted from a
/// console session.
fn strip_echoes(code: &str) -> String {
    let console = code.lines().any(|line| line.starts_with(">>> "));
    let mut kept = String::with_capacity(code.len());
    for line in code.split_inclusive('\n') {
        if is_echoed_runtime_line(line) {
            continue;
        }
        let line = if console {
            match line.strip_prefix(">>> ").or_else(|| line.strip_prefix("... ")) {
                Some(rest) => rest,
                // Console output lines are not code.
                None if !line.trim().is_empty() => continue,
                None => line,
            }
        } else {
            line
        };
        kept.push_str(line);
    }
    kept
}

/// Whether unfenced text is Python a model meant to run: every non-empty line starts like a statement (a call, an
/// assignment, a keyword, a comment) rather than like an English sentence.
fn is_bare_code(text: &str) -> bool {
    let lines: Vec<&str> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !is_echoed_runtime_line(l)).collect();
    !lines.is_empty() && lines.len() <= 40 && lines.iter().all(|line| looks_like_python(line))
}

fn looks_like_python(line: &str) -> bool {
    const KEYWORDS: [&str; 16] = [
        "import ", "from ", "for ", "if ", "elif ", "else:", "while ", "def ", "return ", "with ", "try:", "except",
        "finally:", "print(", "pass", "break",
    ];
    if line.starts_with('#') || KEYWORDS.iter().any(|k| line.starts_with(k)) || line.starts_with([')', ']', '}']) {
        return true;
    }
    // An identifier (dotted, maybe subscripted) followed by a call, an assignment or a subscript.
    let ident_end = line.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.')).unwrap_or(line.len());
    if ident_end == 0 || line.starts_with(|c: char| c.is_ascii_digit()) {
        return false;
    }
    let rest = line[ident_end..].trim_start();
    let assignment =
        ["=", "+=", "-=", "*=", "/=", "|="].iter().any(|op| rest.starts_with(op)) && !rest.starts_with("==");
    let call_or_index = line[ident_end..].starts_with(['(', '[']);
    let tuple_target = rest.starts_with(',') && rest.contains('=');
    assignment || call_or_index || tuple_target
}

/// Finds the first `FINAL(...)` or `FINAL_VAR(...)` in `prose` (text outside code blocks). The argument extends to
/// the matching close parenthesis, so `FINAL(f(x))` gives `f(x)`; it may span lines. Without a matching parenthesis
/// the argument runs to the end of the text.
pub fn find_final(prose: &str) -> Option<FinalDirective> {
    // `Final(...)` counts too: small models write it so. ASCII upper-casing keeps every byte offset.
    let upper = prose.to_ascii_uppercase();
    let mut search_from = 0;
    while let Some(offset) = upper[search_from..].find("FINAL") {
        let start = search_from + offset;
        search_from = start + "FINAL".len();
        let preceded_by_identifier =
            prose[..start].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_');
        if preceded_by_identifier || !matches!(&prose[start..start + 5], "FINAL" | "Final") {
            continue;
        }
        let rest = &upper[start..];
        let (is_var, after_open) = if rest.starts_with("FINAL_VAR(") {
            (true, &prose[start + "FINAL_VAR(".len()..])
        } else if rest.starts_with("FINAL(") {
            (false, &prose[start + "FINAL(".len()..])
        } else {
            continue;
        };
        let argument = unquote(balanced_argument(after_open).trim());
        return Some(if is_var {
            FinalDirective::Variable(argument.to_owned())
        } else {
            FinalDirective::Answer(argument.to_owned())
        });
    }
    None
}

/// The text up to the parenthesis that closes an already opened one.
fn balanced_argument(after_open: &str) -> &str {
    let mut depth = 1usize;
    for (index, c) in after_open.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &after_open[..index];
                }
            }
            _ => {}
        }
    }
    after_open.trim_end()
}

/// Removes one pair of matching quotes around the whole text, when the text is a single quoted literal.
fn unquote(text: &str) -> &str {
    for quote in ['"', '\'', '`'] {
        if let Some(inner) = text.strip_prefix(quote).and_then(|t| t.strip_suffix(quote))
            && !inner.contains(quote)
        {
            return inner;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(text: &str) -> Option<FinalDirective> {
        find_final(&parse_response(text).prose)
    }

    #[test]
    fn repl_blocks_are_extracted_in_order() {
        let parsed = parse_response("Let me look.\n```repl\nprint(1)\n```\nthen\n```repl\nx = 2\n```\n");
        assert_eq!(parsed.code_blocks, vec!["print(1)\n", "x = 2\n"]);
        assert_eq!(parsed.prose, "Let me look.\nthen\n");
    }

    #[test]
    fn python_blocks_run_only_when_there_is_no_repl_block() {
        assert_eq!(parse_response("```python\na = 1\n```").code_blocks, vec!["a = 1\n"]);
        let mixed = parse_response("```python\nexample()\n```\n```repl\nreal()\n```");
        assert_eq!(mixed.code_blocks, vec!["real()\n"]);
        assert!(parse_response("```text\nnot code\n```").code_blocks.is_empty());
    }

    #[test]
    fn unlabelled_fences_run_when_nothing_is_labelled() {
        assert_eq!(parse_response("```\nprint(len(context))\n```").code_blocks, vec!["print(len(context))\n"]);
        let mixed = parse_response("```\nsome output\n```\n```python\nx = 1\n```");
        assert_eq!(mixed.code_blocks, vec!["x = 1\n"]);
    }

    #[test]
    fn echoed_turn_headers_are_stripped_from_code() {
        let parsed = parse_response(
            "```python\nTurn 2/8:\nREPL variables: ['context']\nOutput:\nprint(context[:100])\nBlock 1 output:\n```",
        );
        assert_eq!(parsed.code_blocks, vec!["print(context[:100])\n"]);
        let only_echo = parse_response("```repl\nTurn 3/8:\n```");
        assert!(only_echo.code_blocks.is_empty());
    }

    #[test]
    fn answer_lines_that_would_break_the_block_move_to_the_text() {
        // Seen from Qwen2.5-Coder-0.5B: a guess in an unbalanced `Final(` kept the search from running.
        let parsed = parse_response("```repl\nprint(search(\"hollow-valley\"))\nFinal( the number is 123.\n```");
        assert_eq!(parsed.code_blocks, vec!["print(search(\"hollow-valley\"))\n"]);
        assert!(parsed.prose.contains("Final( the number is 123."));
        let unbalanced = parse_response("```repl\nx = 1\nFINAL( 42\n```");
        assert_eq!(unbalanced.code_blocks, vec!["x = 1\n"]);
        assert_eq!(find_final(&unbalanced.prose), Some(FinalDirective::Answer("42".into())));
        let called = parse_response("```repl\nFINAL(str(x))\n```");
        assert_eq!(called.code_blocks, vec!["FINAL(str(x))\n"]);
    }

    #[test]
    fn console_prompts_are_removed() {
        let parsed = parse_response("```python\n>>> x = len(context)\n>>> print(x)\n1234\n```");
        assert_eq!(parsed.code_blocks, vec!["x = len(context)\nprint(x)\n"]);
    }

    #[test]
    fn bare_code_without_fences_runs() {
        assert_eq!(parse_response("SHOW_VARS()").code_blocks, vec!["SHOW_VARS()"]);
        assert_eq!(
            parse_response("x = context.find('key')\nprint(context[x:x+200])\n").code_blocks,
            vec!["x = context.find('key')\nprint(context[x:x+200])\n"]
        );
        assert!(parse_response("I will look at the context first.").code_blocks.is_empty());
        assert!(parse_response("The answer is 42").code_blocks.is_empty());
        assert!(parse_response("Sure! print(context)").code_blocks.is_empty());
        // A stray closing fence after a bare statement (seen from Qwen2.5-Coder-0.5B).
        assert_eq!(parse_response("print(search(\"x\"))\n```").code_blocks, vec!["print(search(\"x\"))\n"]);
        let finished = parse_response("FINAL(42)");
        assert!(finished.code_blocks.is_empty());
        assert_eq!(find_final(&finished.prose), Some(FinalDirective::Answer("42".into())));
    }

    #[test]
    fn unterminated_fence_runs_to_the_end() {
        assert_eq!(parse_response("```repl\nprint(1)\nprint(2)").code_blocks, vec!["print(1)\nprint(2)"]);
    }

    #[test]
    fn nested_parentheses_are_balanced() {
        assert_eq!(answer("FINAL(f(x))"), Some(FinalDirective::Answer("f(x)".into())));
        assert_eq!(answer("Done. FINAL(a (b) c) trailing"), Some(FinalDirective::Answer("a (b) c".into())));
    }

    #[test]
    fn multi_line_final_is_accepted() {
        assert_eq!(answer("FINAL(line one\nline two)\n"), Some(FinalDirective::Answer("line one\nline two".into())));
    }

    #[test]
    fn final_inside_a_code_block_is_ignored() {
        assert_eq!(answer("```repl\nprint('FINAL(42)')\n```\n"), None);
        assert_eq!(answer("```repl\nx = 1\n```\nFINAL(7)"), Some(FinalDirective::Answer("7".into())));
    }

    #[test]
    fn final_var_names_a_variable() {
        assert_eq!(answer("FINAL_VAR(result)"), Some(FinalDirective::Variable("result".into())));
        assert_eq!(answer("FINAL_VAR(\"result\")"), Some(FinalDirective::Variable("result".into())));
    }

    #[test]
    fn final_in_a_fence_that_does_not_run_counts() {
        // Seen from Qwen2.5-Coder-1.5B: the answer in an unlabelled fence after the code.
        let parsed = parse_response("```repl\nsearch(\"x\")\n```\n```\nFINAL(6713176)");
        assert_eq!(parsed.code_blocks, vec!["search(\"x\")\n"]);
        assert_eq!(find_final(&parsed.prose), Some(FinalDirective::Answer("6713176".into())));
    }

    #[test]
    fn title_case_final_counts_but_not_lower_case_prose() {
        assert_eq!(answer("Final(5313471)"), Some(FinalDirective::Answer("5313471".into())));
        assert_eq!(answer("Final_Var(x)"), Some(FinalDirective::Variable("x".into())));
        assert_eq!(answer("the final(ist) round"), None);
        assert_eq!(answer("Finally (at last) done"), None);
    }

    #[test]
    fn identifiers_ending_in_final_do_not_count() {
        assert_eq!(answer("MY_FINAL(3) and IS_FINAL(4)"), None);
        assert_eq!(answer("the FINAL answer is near"), None);
    }

    #[test]
    fn quotes_around_the_whole_answer_are_removed() {
        assert_eq!(answer("FINAL(\"Paris\")"), Some(FinalDirective::Answer("Paris".into())));
        assert_eq!(answer("FINAL(\"a\" and \"b\")"), Some(FinalDirective::Answer("\"a\" and \"b\"".into())));
    }

    #[test]
    fn unbalanced_final_takes_the_rest() {
        assert_eq!(answer("FINAL(the answer is (42"), Some(FinalDirective::Answer("the answer is (42".into())));
    }
}
