//! Adaptive routing: a context that fits the root model's window is answered with one direct call (at small inputs
//! the base model does at least as well as an RLM, for a fraction of the time); anything larger goes to the RLM.
//! Except for questions that ask for an aggregate (a count, a total, an extreme, ...; see [`crate::question`]) over
//! more than a short text: reading once, a model miscounts, and code over every matching line counts exactly.

use rlm_protocol::{ChatMessage, Context, RouteDecision, RoutePath};

use crate::config::RouteMode;
use crate::prompt::CHARS_PER_TOKEN;
use crate::question::aggregate_cue;

/// Tokens of the direct prompt's fixed wording, the chat template and a margin for the tokenizer's variance.
const PROMPT_OVERHEAD_TOKENS: u64 = 256;

/// Tokens kept free for the reply when no output limit is configured.
const DEFAULT_REPLY_TOKENS: u64 = 1024;

/// Up to this many prompt tokens an aggregate question still goes direct: a text this short is a few dozen lines,
/// which a model can count through in one reading, and the RLM's turns would cost more than they save.
pub const AGGREGATE_DIRECT_MAX_TOKENS: u64 = 1_000;

/// Characters in `context`, or an upper bound (file sizes in bytes), without loading files.
pub fn context_size_chars(context: &Context) -> std::io::Result<u64> {
    Ok(match context {
        Context::Text(text) => text.chars().count() as u64,
        Context::Json(value) => serde_json::to_string(value).map_or(0, |text| text.chars().count() as u64),
        Context::TextFile(path) | Context::JsonFile(path) => std::fs::metadata(path)?.len(),
    })
}

/// Prompt tokens of a direct call over `context_chars` characters, estimated on the high side.
pub fn estimate_direct_tokens(context_chars: u64, query: &str) -> u64 {
    (context_chars + query.chars().count() as u64).div_ceil(CHARS_PER_TOKEN) + PROMPT_OVERHEAD_TOKENS
}

/// Which path a query takes. `context_chars` is needed only by `Auto` with a known window; without it that case
/// runs the RLM. `direct_max_tokens` caps the direct prompt below the window (see
/// [`crate::EngineConfig::direct_max_tokens`]).
pub fn decide(
    mode: RouteMode,
    context_chars: Option<u64>,
    query: &str,
    window_tokens: Option<u64>,
    max_output_tokens: Option<u32>,
    direct_max_tokens: Option<u64>,
) -> RouteDecision {
    let estimated = context_chars.map(|chars| estimate_direct_tokens(chars, query));
    let decision = |path, reason: String| RouteDecision { path, reason, estimated_tokens: estimated, window_tokens };
    match (mode, window_tokens) {
        (RouteMode::Rlm, _) => decision(RoutePath::Rlm, "the route mode is rlm".to_owned()),
        (RouteMode::Direct, _) => decision(RoutePath::Direct, "the route mode is direct".to_owned()),
        (RouteMode::Auto, None) => decision(
            RoutePath::Rlm,
            "the root model's window is unknown (configure it to allow direct answers)".to_owned(),
        ),
        (RouteMode::Auto, Some(_)) if estimated.is_none() => {
            decision(RoutePath::Rlm, "the context's size could not be read".to_owned())
        }
        (RouteMode::Auto, Some(window)) => {
            let estimated = estimated.unwrap_or_default();
            let reply = max_output_tokens.map_or(DEFAULT_REPLY_TOKENS, u64::from);
            let available = window.saturating_sub(reply);
            if let Some(max) = direct_max_tokens.filter(|&max| estimated <= available && estimated > max) {
                return decision(
                    RoutePath::Rlm,
                    format!(
                        "the context and query (about {estimated} tokens) fit the {window}-token window, but this \
                         model reads prompts slowly: one call over more than {max} tokens would take longer than the \
                         RLM"
                    ),
                );
            }
            let aggregate = aggregate_cue(query).filter(|_| estimated > AGGREGATE_DIRECT_MAX_TOKENS);
            if let (Some((kind, cue)), true) = (aggregate, estimated <= available) {
                decision(
                    RoutePath::Rlm,
                    format!(
                        "the context and query (about {estimated} tokens) fit the {window}-token window, but the \
                         question asks for {kind} (\"{cue}\"): one reading miscounts, code over every matching \
                         line is exact"
                    ),
                )
            } else if estimated <= available {
                decision(
                    RoutePath::Direct,
                    format!(
                        "the context and query (about {estimated} tokens) fit the {window}-token window with \
                         {reply} tokens left for the reply"
                    ),
                )
            } else {
                decision(
                    RoutePath::Rlm,
                    format!(
                        "the context and query (about {estimated} tokens) do not fit the {window}-token window with \
                         {reply} tokens left for the reply"
                    ),
                )
            }
        }
    }
}

/// The whole context as text for a direct prompt: strings as they are, structured data as JSON.
pub fn render_context(context: &Context) -> std::io::Result<String> {
    Ok(match context {
        Context::Text(text) => text.clone(),
        Context::Json(serde_json::Value::String(text)) => text.clone(),
        Context::Json(value) => serde_json::to_string_pretty(value).unwrap_or_default(),
        Context::TextFile(path) => std::fs::read_to_string(path)?,
        Context::JsonFile(path) => {
            let text = std::fs::read_to_string(path)?;
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(serde_json::Value::String(inner)) => inner,
                _ => text,
            }
        }
    })
}

/// The messages of a direct call. The question comes after the text: models answer better when it is fresh, and
/// providers that cache prompt prefixes can reuse the text across questions.
pub fn direct_messages(context_text: &str, query: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::system(
            "Answer the question using only the text the user gives you. Reply with the answer alone, without \
             explanation. If the text does not contain the answer, say that it does not.",
        ),
        ChatMessage::user(format!("Text:\n{context_text}\n\nQuestion: {query}")),
    ]
}

/// Whether a failed direct call failed because its prompt was too long (so the RLM can still answer).
pub fn is_too_long_error(err: &rlm_protocol::Error) -> bool {
    match err {
        rlm_protocol::Error::Model { status: Some(400 | 413 | 422), message, .. } => {
            let message = message.to_ascii_lowercase();
            ["context", "too long", "too many tokens", "maximum", "exceed", "length"]
                .iter()
                .any(|word| message.contains(word))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_goes_direct_only_when_the_estimate_fits() {
        let small = decide(RouteMode::Auto, Some(8_000), "q", Some(16_384), None, None);
        assert_eq!(small.path, RoutePath::Direct, "{}", small.reason);
        let medium = decide(RouteMode::Auto, Some(32_000), "q", Some(16_384), None, None);
        assert_eq!(medium.path, RoutePath::Direct, "{}", medium.reason);
        let large = decide(RouteMode::Auto, Some(128_000), "q", Some(16_384), None, None);
        assert_eq!(large.path, RoutePath::Rlm);
        assert!(large.reason.contains("do not fit the 16384-token window"), "{}", large.reason);
        assert_eq!(large.estimated_tokens, Some(42_923));
    }

    #[test]
    fn the_reply_budget_is_kept_free() {
        // 45,000 chars ≈ 15,257 tokens: fits 16,384 with a 1,024-token reply, not with a 4,096-token one.
        assert_eq!(decide(RouteMode::Auto, Some(45_000), "q", Some(16_384), None, None).path, RoutePath::Direct);
        assert_eq!(decide(RouteMode::Auto, Some(45_000), "q", Some(16_384), Some(4_096), None).path, RoutePath::Rlm);
    }

    #[test]
    fn a_slow_reader_goes_direct_only_below_its_budget() {
        // 20,000 chars ≈ 6,923 tokens, 40,000 ≈ 13,590: both fit a 32k window.
        let small = decide(RouteMode::Auto, Some(20_000), "q", Some(32_768), None, Some(8_192));
        assert_eq!(small.path, RoutePath::Direct, "{}", small.reason);
        let medium = decide(RouteMode::Auto, Some(40_000), "q", Some(32_768), None, Some(8_192));
        assert_eq!(medium.path, RoutePath::Rlm);
        assert!(medium.reason.contains("more than 8192 tokens"), "{}", medium.reason);
        // The budget never sends a forced route elsewhere.
        let forced = decide(RouteMode::Direct, Some(40_000), "q", Some(32_768), None, Some(8_192));
        assert_eq!(forced.path, RoutePath::Direct);
    }

    #[test]
    fn aggregate_questions_go_to_the_rlm_unless_the_text_is_short() {
        let count = "How many log lines have action=logout and status=error?";
        let decision = decide(RouteMode::Auto, Some(8_000), count, Some(16_384), None, Some(8_192));
        assert_eq!(decision.path, RoutePath::Rlm, "{}", decision.reason);
        assert!(decision.reason.contains("a count (\"how many\")"), "{}", decision.reason);
        let ranking = decide(RouteMode::Auto, Some(8_000), "Which user failed most often?", Some(16_384), None, None);
        assert_eq!(ranking.path, RoutePath::Rlm, "{}", ranking.reason);
        // A lookup of the same size still goes direct; so does a count over a short text.
        let lookup = "What is the special magic number for brisk-pebble?";
        assert_eq!(decide(RouteMode::Auto, Some(8_000), lookup, Some(16_384), None, None).path, RoutePath::Direct);
        let short = decide(RouteMode::Auto, Some(2_000), count, Some(16_384), None, None);
        assert_eq!(short.path, RoutePath::Direct, "{}", short.reason);
        // A forced route stays forced.
        assert_eq!(decide(RouteMode::Direct, Some(8_000), count, Some(16_384), None, None).path, RoutePath::Direct);
    }

    #[test]
    fn an_unreadable_size_means_rlm() {
        let decision = decide(RouteMode::Auto, None, "q", Some(16_384), None, None);
        assert_eq!((decision.path, decision.estimated_tokens), (RoutePath::Rlm, None));
    }

    #[test]
    fn unknown_window_means_rlm_and_flags_force_either_path() {
        let unknown = decide(RouteMode::Auto, Some(10), "q", None, None, None);
        assert_eq!(unknown.path, RoutePath::Rlm);
        assert!(unknown.reason.contains("unknown"));
        assert_eq!(decide(RouteMode::Rlm, Some(10), "q", Some(1_000_000), None, None).path, RoutePath::Rlm);
        assert_eq!(decide(RouteMode::Direct, Some(10_000_000), "q", Some(1_000), None, None).path, RoutePath::Direct);
    }

    #[test]
    fn context_length_errors_are_recognised() {
        let too_long =
            rlm_protocol::Error::model(Some(400), "Requested tokens (42000) exceed context window of 16384", false);
        assert!(is_too_long_error(&too_long));
        assert!(!is_too_long_error(&rlm_protocol::Error::model(Some(401), "bad key", false)));
        assert!(!is_too_long_error(&rlm_protocol::Error::model(Some(500), "context exceeded", true)));
    }

    #[test]
    fn structured_contexts_render_as_json() -> std::io::Result<()> {
        assert_eq!(render_context(&Context::text("plain"))?, "plain");
        let json = render_context(&Context::Json(serde_json::json!({"a": [1, 2]})))?;
        assert!(json.contains("\"a\""), "{json}");
        Ok(())
    }
}
