//! How many tokens a model's window holds: asked of the server where it says (vLLM, llama.cpp, OpenRouter,
//! LM Studio), else known per model family.

use serde_json::Value;

/// The window of well-known model families in tokens, by name. Local servers often run a model with a smaller
/// window than it was trained for; ask the server first ([`crate::OpenAiClient::probe_context_window`]).
pub fn known_context_window(model: &str) -> Option<u64> {
    let name = crate::split_spec(model).1.to_ascii_lowercase();
    let name = name.rsplit('/').next().unwrap_or(&name);
    const FAMILIES: [(&str, u64); 16] = [
        ("gpt-4.1", 1_047_576),
        ("gpt-5", 400_000),
        ("gpt-4o", 128_000),
        ("gpt-4-turbo", 128_000),
        ("o1", 200_000),
        ("o3", 200_000),
        ("o4", 200_000),
        ("claude", 200_000),
        ("gemini", 1_048_576),
        ("qwen3", 32_768),
        ("qwen2.5", 32_768),
        ("llama-3", 131_072),
        ("llama3", 131_072),
        ("mistral", 32_768),
        ("gemma-2", 8_192),
        ("phi-3-mini", 4_096),
    ];
    FAMILIES.iter().find(|(prefix, _)| name.starts_with(prefix)).map(|(_, window)| *window)
}

/// The window a `/models` entry or a llama.cpp `/props` document states, if any.
pub(crate) fn window_in(document: &Value) -> Option<u64> {
    [
        "/max_model_len",
        "/context_length",
        "/context_window",
        "/max_context_length",
        "/default_generation_settings/n_ctx",
        "/n_ctx",
    ]
    .iter()
    .find_map(|pointer| document.pointer(pointer).and_then(Value::as_u64))
    .filter(|window| *window > 0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn families_are_known_by_prefix() {
        assert_eq!(known_context_window("gpt-4o-mini"), Some(128_000));
        assert_eq!(known_context_window("Qwen/Qwen2.5-Coder-1.5B-Instruct"), Some(32_768));
        assert_eq!(known_context_window("qwen2.5-coder-0.5b"), Some(32_768));
        assert_eq!(known_context_window("my-private-model"), None);
        assert_eq!(known_context_window("anthropic:claude-sonnet-4-5"), Some(200_000));
        assert_eq!(known_context_window("gemini:gemini-2.5-flash"), Some(1_048_576));
    }

    #[test]
    fn server_documents_state_windows() {
        assert_eq!(window_in(&json!({"id": "m", "max_model_len": 32768})), Some(32_768));
        assert_eq!(window_in(&json!({"id": "m", "context_length": 8192})), Some(8_192));
        assert_eq!(window_in(&json!({"default_generation_settings": {"n_ctx": 16384}})), Some(16_384));
        assert_eq!(window_in(&json!({"id": "m", "owned_by": "me"})), None);
    }
}
