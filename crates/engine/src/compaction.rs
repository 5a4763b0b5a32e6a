//! Compaction: when the root conversation would fill too much of the root model's window, the older turns are
//! summarised by the root model and the summary stands in for them. The full messages stay reachable in the REPL as
//! `history`, so nothing the model saw is lost, only moved out of the prompt.

use std::time::Instant;

use chrono::Utc;
use rlm_protocol::{ChatMessage, CompactionRecord, EventBody, ModelRequest, ReplSession, Role, Usage};

use crate::prompt::CHARS_PER_TOKEN;
use crate::run::{Interrupted, Loop, cancellable, with_deadline, writing_trace_meanwhile};

/// The REPL variable that holds the full messages of a compacted conversation.
pub const HISTORY_VARIABLE: &str = "history";

/// Messages at the end of the conversation that are never summarised: the latest reply and what it produced.
const KEPT_TAIL: usize = 2;

/// Per-message tokens of the chat template (role markers, separators), estimated on the high side.
const MESSAGE_OVERHEAD_TOKENS: u64 = 8;

/// Tokens kept free for the reply when no output limit is configured.
const DEFAULT_REPLY_TOKENS: u64 = 1024;

/// What a loop remembers across its compactions.
#[derive(Debug, Default)]
pub(crate) struct Compactor {
    /// The first user message as the loop wrote it, before any summary was added to it.
    original_first: Option<String>,
    /// Every message replaced so far, in order.
    replaced: Vec<ChatMessage>,
}

/// Prompt tokens of `messages`, estimated on the high side.
pub fn estimate_tokens(messages: &[ChatMessage]) -> u64 {
    messages
        .iter()
        .map(|message| (message.content.chars().count() as u64).div_ceil(CHARS_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS)
        .sum()
}

/// `value` as a Python expression that evaluates to it: a JSON string literal is a valid Python string literal (the
/// JSON serializer escapes quotes, backslashes and control characters the way Python reads them).
pub(crate) fn python_json_expression(value: &serde_json::Value) -> String {
    let text = serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned());
    let literal = serde_json::to_string(&text).unwrap_or_else(|_| "\"null\"".to_owned());
    format!("__import__('json').loads({literal})")
}

/// Python code that binds `name` to `messages` as a list of `{"role", "content"}` dicts.
pub(crate) fn bind_messages_code(name: &str, messages: &[ChatMessage]) -> String {
    let value = serde_json::to_value(messages).unwrap_or_default();
    format!("{name} = {}", python_json_expression(&value))
}

fn transcript(messages: &[ChatMessage], max_chars: usize) -> String {
    let mut text = String::new();
    for message in messages {
        let label = match message.role {
            Role::Assistant => "[your reply]",
            Role::User => "[REPL output and notes]",
            Role::System => "[instructions]",
        };
        text.push_str(label);
        text.push('\n');
        text.push_str(&message.content);
        text.push_str("\n\n");
    }
    let chars = text.chars().count();
    if chars <= max_chars {
        return text;
    }
    // The latest turns matter most for what to do next: keep the end.
    let skip = chars - max_chars;
    let tail: String = text.chars().skip(skip).collect();
    format!("[... {skip} earlier characters left out ...]\n{tail}")
}

fn summary_request_messages(query: &str, turns: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::system(
            "You condense the working notes of an assistant that answers a query by writing Python code for a REPL. \
             Summarise the turns you are given so the assistant can continue without them: what it has found \
             (exact numbers, names, quotes), which REPL variables hold what, what failed, and what remains to do. \
             Be brief and factual; write no code and no final answer.",
        ),
        ChatMessage::user(format!("The query: {query}\n\nThe turns to summarise:\n\n{turns}")),
    ]
}

impl Loop<'_> {
    /// Summarises older turns when the next request would pass the configured share of the root model's window.
    /// Only a cancellation is an error: a failed summary still drops the older turns (they are in `history`) so the
    /// run keeps going.
    pub(crate) async fn compact_if_needed(
        &mut self,
        session: &mut dyn ReplSession,
        messages: &mut Vec<ChatMessage>,
    ) -> Result<(), Interrupted> {
        let settings = self.engine.config.compaction;
        let Some(window) = self.engine.config.window(self.model) else { return Ok(()) };
        if !settings.enabled || messages.len() < 3 + KEPT_TAIL {
            return Ok(());
        }
        let reply_tokens = self.engine.config.max_output_tokens(self.profile).map_or(DEFAULT_REPLY_TOKENS, u64::from);
        let tokens_before = estimate_tokens(messages);
        let allowed = (window as f64 * settings.threshold) as u64;
        if tokens_before + reply_tokens <= allowed {
            return Ok(());
        }

        let started_at = Utc::now();
        let started = Instant::now();
        let unsent = messages.len().saturating_sub(self.sent);
        let tail_start = messages.len() - KEPT_TAIL;
        let older: Vec<ChatMessage> = messages[2..tail_start].to_vec();
        let original_first = self.compaction.original_first.get_or_insert_with(|| messages[1].content.clone()).clone();
        self.compaction.replaced.extend(older.iter().cloned());

        // The summary call must itself fit: the turns get what the window has left after the reply and the wording.
        let summary_tokens = (window / 8).clamp(128, 2048);
        let turn_chars = (allowed.saturating_sub(summary_tokens + 512) * CHARS_PER_TOKEN) as usize;
        let query_text = messages[1].content.clone();
        let request = ModelRequest {
            model: self.model.to_owned(),
            messages: summary_request_messages(&query_text, &transcript(&older, turn_chars.max(2000))).into(),
            max_output_tokens: Some(u32::try_from(summary_tokens).unwrap_or(u32::MAX)),
            temperature: self.engine.config.temperature,
        };
        let call = writing_trace_meanwhile(self.tree.trace.as_ref(), self.tree.model.complete(request));
        let call = with_deadline(self.tree.work_deadline, call);
        let (summary, usage, error) = match cancellable(&self.tree.cancel, call).await {
            None => return Err(Interrupted::Cancelled),
            Some(None) => (None, Usage::default(), Some("the time limit was reached".to_owned())),
            Some(Some(Err(err))) => (None, Usage::default(), Some(err.to_string())),
            Some(Some(Ok(response))) => {
                self.scope.add_usage(self.tree, self.model, response.usage);
                (Some(response.content.trim().to_owned()), response.usage, None)
            }
        };
        let note = match &summary {
            Some(summary) => format!(
                "Earlier turns of this conversation were summarised to save space (the full messages are in the REPL \
                 variable `{HISTORY_VARIABLE}`, a list of {{\"role\", \"content\"}} dicts):\n{summary}"
            ),
            None => format!(
                "Earlier turns of this conversation were removed to save space; their full messages are in the REPL \
                 variable `{HISTORY_VARIABLE}` (a list of {{\"role\", \"content\"}} dicts). Read it if you need them."
            ),
        };
        let tail: Vec<ChatMessage> = messages.drain(tail_start..).collect();
        messages.truncate(2);
        messages[1].content = format!("{original_first}\n\n{note}");
        messages.extend(tail.iter().cloned());
        self.sent = messages.len() - unsent.min(KEPT_TAIL);

        let mut full = vec![messages[0].clone(), ChatMessage::user(original_first)];
        full.extend(self.compaction.replaced.iter().cloned());
        full.extend(tail);
        let mut error = error;
        match session.run_cell(&bind_messages_code(HISTORY_VARIABLE, &full)).await {
            Ok(outcome) => {
                if let Some(failure) = outcome.error {
                    error.get_or_insert(format!("could not set `{HISTORY_VARIABLE}`: {failure}"));
                }
            }
            Err(err) => {
                error.get_or_insert(format!("could not set `{HISTORY_VARIABLE}`: {err}"));
            }
        }

        let record = CompactionRecord {
            model: self.model.to_owned(),
            replaced_messages: older.len(),
            tokens_before,
            tokens_after: estimate_tokens(messages),
            window_tokens: window,
            threshold: settings.threshold,
            summary,
            history_variable: HISTORY_VARIABLE.to_owned(),
            usage,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            error,
        };
        self.tree.trace.record(&self.scope.event(started_at, EventBody::Compaction(record)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcripts_keep_their_end_when_cut() {
        let messages = vec![ChatMessage::assistant("a".repeat(50)), ChatMessage::user("the latest output")];
        let cut = transcript(&messages, 40);
        assert!(cut.starts_with("[... "));
        assert!(cut.ends_with("the latest output\n\n"));
        assert!(transcript(&messages, 10_000).starts_with("[your reply]\naaaa"));
    }

    #[test]
    fn token_estimates_grow_with_the_text() {
        let short = estimate_tokens(&[ChatMessage::user("hi")]);
        let long = estimate_tokens(&[ChatMessage::user("x".repeat(3000))]);
        assert_eq!(short, 1 + MESSAGE_OVERHEAD_TOKENS);
        assert_eq!(long, 1000 + MESSAGE_OVERHEAD_TOKENS);
    }

    #[test]
    fn json_expressions_are_python_string_literals() {
        let code = bind_messages_code("h", &[ChatMessage::user("quote \" backslash \\ newline \n tab \t é")]);
        assert!(code.starts_with("h = __import__('json').loads(\""));
        assert!(!code.contains('\n'));
    }
}
