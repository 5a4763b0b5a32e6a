//! Adaptive routing: a context that fits the root model's window is answered with one direct call (at small inputs
//! the base model does at least as well as an RLM, for a fraction of the time); anything larger goes to the RLM.
//! Except for questions that ask for an aggregate (a count, a total, an extreme, ...; see [`crate::question`]) over
//! more than a short text: reading once, a model miscounts, and code over every matching line counts exactly.

use rlm_protocol::{ChatMessage, Context, RouteDecision, RoutePath};

use crate::config::RouteMode;
use crate::prompt::{CHARS_PER_TOKEN, PromptProfile};
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

/// Fewest other numbers written after a key's word for the key to have look-alikes.
const MIN_LOOKALIKES: usize = 2;

/// Words that come before a number without naming a key ("at 5", "in 2019", "top 10").
const NOT_KEY_WORDS: &[&str] = &[
    "a", "about", "after", "an", "and", "are", "around", "at", "before", "by", "first", "for", "from", "in", "is",
    "last", "of", "on", "or", "over", "since", "than", "the", "to", "top", "under", "until", "was", "were", "with",
];

/// A key of the question written as a word and a number (`gate 177`, `vault-17`, `case #5`, `u1101`) that the text
/// also writes with other numbers after the same word (`gate 771`, `gate 1770`): the key and how many other numbers
/// the text has for its word. Telling such look-alikes apart by reading is what small models get wrong; the RLM's
/// search matches the key exactly.
pub fn lookalike_key(query: &str, text: &str) -> Option<(String, usize)> {
    let query = query.to_lowercase();
    let text = text.to_lowercase();
    query_keys(&query).into_iter().find_map(|(word, number, key)| {
        let others = numbers_after(&text, &word).into_iter().filter(|other| *other != number).count();
        (others >= MIN_LOOKALIKES).then_some((key, others))
    })
}

/// The (word, number, key as written) keys of a lower-cased question: a number with a word right before it, joined
/// by nothing, a space, `-`, `_` or `#`.
fn query_keys(query: &str) -> Vec<(String, String, String)> {
    let chars: Vec<char> = query.chars().collect();
    let mut keys = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() || (i > 0 && chars[i - 1].is_ascii_digit()) {
            i += 1;
            continue;
        }
        let end = (i..chars.len()).find(|&j| !chars[j].is_ascii_digit()).unwrap_or(chars.len());
        let number: String = chars[i..end].iter().collect();
        let mut start = i;
        while start > 0 && i - start < 2 && matches!(chars[start - 1], ' ' | '-' | '_' | '#') {
            start -= 1;
        }
        let word_end = start;
        while start > 0 && chars[start - 1].is_alphabetic() {
            start -= 1;
        }
        let word: String = chars[start..word_end].iter().collect();
        let joined_by_space_only = word_end < i && chars[word_end..i].iter().all(|c| *c == ' ');
        let stands_alone = start == 0 || !chars[start - 1].is_alphanumeric();
        if !word.is_empty() && stands_alone && !(joined_by_space_only && NOT_KEY_WORDS.contains(&word.as_str())) {
            keys.push((word, number, chars[start..end].iter().collect()));
        }
        i = end;
    }
    keys
}

/// The different numbers a lower-cased text writes right after `word` (joined as in [`query_keys`]).
fn numbers_after(text: &str, word: &str) -> std::collections::BTreeSet<String> {
    let mut numbers = std::collections::BTreeSet::new();
    for (at, _) in text.match_indices(word) {
        if text[..at].chars().next_back().is_some_and(char::is_alphanumeric) {
            continue;
        }
        let rest = &text[at + word.len()..];
        let digits_at = rest.char_indices().take(3).find(|(_, c)| !matches!(c, ' ' | '-' | '_' | '#'));
        let Some((offset, first)) = digits_at else { continue };
        if !first.is_ascii_digit() {
            continue;
        }
        let digits: String = rest[offset..].chars().take_while(char::is_ascii_digit).collect();
        numbers.insert(digits);
        if numbers.len() > 64 {
            break;
        }
    }
    numbers
}

/// `decision`, revised for what the root model reads badly: a small model that would answer directly a question
/// about a key with look-alikes in the text runs the RLM instead. A forced route stays as it is.
pub fn for_the_reader(
    decision: RouteDecision,
    mode: RouteMode,
    profile: PromptProfile,
    context: &Context,
    query: &str,
) -> RouteDecision {
    if mode != RouteMode::Auto || decision.path != RoutePath::Direct || profile != PromptProfile::Small {
        return decision;
    }
    // The text is small enough for one call, so reading it here costs little beside that call.
    match render_context(context) {
        Ok(text) => avoid_lookalikes(decision, query, &text),
        Err(_) => decision,
    }
}

/// `decision`, or the RLM when it would answer directly a question about a key that has look-alikes in the text.
fn avoid_lookalikes(decision: RouteDecision, query: &str, text: &str) -> RouteDecision {
    if decision.path != RoutePath::Direct {
        return decision;
    }
    match lookalike_key(query, text) {
        Some((key, others)) => RouteDecision {
            path: RoutePath::Rlm,
            reason: format!(
                "{}, but the text writes {others} other numbers after the question's key {key:?}: small models \
                 reading at once confuse such look-alikes, the RLM's search matches the key exactly",
                decision.reason
            ),
            ..decision
        },
        None => decision,
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
    fn keys_with_look_alikes_are_found_in_many_spellings() {
        let text = "The call sign for gate 177 is calm-ember. gate-771 -> call sign: brisk-owl. | Gate #1770 | x |\n\
                    gate_17: call sign = quiet-fox. The gate 2 opened at 5. Room 12 is free.";
        for query in [
            "Find the call sign of gate 177 in the text and reply with just that value.",
            "What is the call sign for gate-177?",
            "Which call sign belongs to GATE #177?",
        ] {
            assert_eq!(lookalike_key(query, text).map(|(_, n)| n), Some(4), "{query}");
        }
        // One room, no look-alikes; a number after a word that names no key ("at 5").
        assert_eq!(lookalike_key("What is in room 12?", text), None);
        assert_eq!(lookalike_key("What opened at 5?", "at 5, at 6 and at 7"), None);
        // Keys written in one piece: user u1101 among other users.
        assert_eq!(
            lookalike_key("What did u1101 do?", "u1101 login\nu1102 logout\nu1203 search"),
            Some(("u1101".to_owned(), 2))
        );
        assert_eq!(lookalike_key("What is the magic number for brisk-pebble?", text), None);
        // A word inside another word is not the key's word.
        assert_eq!(lookalike_key("Where is gate 177?", "agate 1 agate 2 agate 3 gate 177"), None);

        let direct = decide(RouteMode::Auto, Some(8_000), "q", Some(16_384), None, None);
        let query = "What is the call sign for gate 177?";
        let routed = avoid_lookalikes(direct.clone(), query, text);
        assert_eq!(routed.path, RoutePath::Rlm);
        assert!(routed.reason.contains("4 other numbers after the question's key \"gate 177\""), "{}", routed.reason);
        assert_eq!(avoid_lookalikes(direct.clone(), "What is in room 12?", text).path, RoutePath::Direct);
        // Only small models, only when routing is automatic.
        let context = Context::text(text);
        let small = for_the_reader(direct.clone(), RouteMode::Auto, PromptProfile::Small, &context, query);
        assert_eq!(small.path, RoutePath::Rlm);
        let standard = for_the_reader(direct.clone(), RouteMode::Auto, PromptProfile::Standard, &context, query);
        assert_eq!(standard.path, RoutePath::Direct);
        let forced = decide(RouteMode::Direct, Some(8_000), query, Some(16_384), None, None);
        assert_eq!(
            for_the_reader(forced, RouteMode::Direct, PromptProfile::Small, &context, query).path,
            RoutePath::Direct
        );
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
