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
/// `python`/`py`/`python3` run instead (models trained on other harnesses write those). An unterminated fence runs to
/// the end of the response.
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
    let chosen: Vec<String> = if fences.iter().any(is_repl) {
        fences.into_iter().filter(is_repl).map(|f| f.body).collect()
    } else {
        fences.into_iter().filter(is_python).map(|f| f.body).collect()
    };
    let code_blocks = chosen.into_iter().filter(|code| !code.trim().is_empty()).collect();
    ParsedResponse { code_blocks, prose }
}

/// Finds the first `FINAL(...)` or `FINAL_VAR(...)` in `prose` (text outside code blocks). The argument extends to
/// the matching close parenthesis, so `FINAL(f(x))` gives `f(x)`; it may span lines. Without a matching parenthesis
/// the argument runs to the end of the text.
pub fn find_final(prose: &str) -> Option<FinalDirective> {
    let mut search_from = 0;
    while let Some(offset) = prose[search_from..].find("FINAL") {
        let start = search_from + offset;
        search_from = start + "FINAL".len();
        let preceded_by_identifier =
            prose[..start].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_');
        if preceded_by_identifier {
            continue;
        }
        let rest = &prose[start..];
        let (is_var, after_open) = if let Some(after) = rest.strip_prefix("FINAL_VAR(") {
            (true, after)
        } else if let Some(after) = rest.strip_prefix("FINAL(") {
            (false, after)
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
