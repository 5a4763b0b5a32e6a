use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The data an RLM answers a query over. It becomes the `context` variable of the REPL and is never shown to the
/// root model.
#[derive(Debug, Clone, PartialEq)]
pub enum Context {
    /// A string, held in memory.
    Text(String),
    /// Structured data; becomes the matching Python value (a JSON array becomes a `list`, an object a `dict`).
    Json(serde_json::Value),
    /// A UTF-8 text file that the executor loads itself, so the text is copied as few times as possible.
    TextFile(PathBuf),
    /// A JSON file that the executor parses into a Python value.
    JsonFile(PathBuf),
}

impl Context {
    /// A text context.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text(text.into())
    }
}

impl From<String> for Context {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for Context {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<serde_json::Value> for Context {
    fn from(value: serde_json::Value) -> Self {
        Self::Json(value)
    }
}

/// What the root model is told about the context: its Python type and size, never its content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextInfo {
    /// Python type name of `context`: `str`, `list`, `dict`, ...
    pub python_type: String,
    /// Total characters: of the string, or summed over the elements / values of a list or dict.
    pub total_chars: u64,
    /// Character length of each element (list) or value (dict); one entry for a string. At most
    /// [`ContextInfo::MAX_CHUNKS_LISTED`] entries are kept.
    pub chunk_lengths: Vec<u64>,
    /// Number of elements (list) or keys (dict); 1 for a string.
    pub chunk_count: u64,
}

impl ContextInfo {
    /// Most chunk lengths kept in [`ContextInfo::chunk_lengths`].
    pub const MAX_CHUNKS_LISTED: usize = 100;
}
