//! [`SharedText`]: immutable text that is shared instead of copied.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Immutable UTF-8 text behind a reference count: clones share the bytes.
///
/// Sub-call prompts are this type so that a prompt of megabytes cut from a context travels from the code runtime to
/// the request body without intermediate copies: the local executor wraps the Python `str` itself
/// ([`SharedText::from_owner`]), and the engine, the trace and the model client share it.
#[derive(Clone)]
pub struct SharedText(Arc<dyn AsRef<str> + Send + Sync>);

impl SharedText {
    /// Text that lives in `owner` (for example another runtime's string object, kept alive by `owner`). `owner`'s
    /// `as_ref` must return the same text every time.
    pub fn from_owner(owner: impl AsRef<str> + Send + Sync + 'static) -> Self {
        Self(Arc::new(owner))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        (*self.0).as_ref()
    }
}

impl Deref for SharedText {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for SharedText {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for SharedText {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Default for SharedText {
    fn default() -> Self {
        Self::from(String::new())
    }
}

impl From<String> for SharedText {
    fn from(text: String) -> Self {
        Self(Arc::new(text))
    }
}

impl From<&str> for SharedText {
    fn from(text: &str) -> Self {
        Self::from(text.to_owned())
    }
}

impl fmt::Debug for SharedText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for SharedText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for SharedText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for SharedText {}

impl PartialEq<str> for SharedText {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for SharedText {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for SharedText {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Hash for SharedText {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl Serialize for SharedText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SharedText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Borrowed(&'static str);

    impl AsRef<str> for Borrowed {
        fn as_ref(&self) -> &str {
            self.0
        }
    }

    #[test]
    fn clones_share_the_bytes_and_compare_by_content() {
        let text = SharedText::from("caf\u{e9}".to_owned());
        let clone = text.clone();
        assert!(std::ptr::eq(text.as_str(), clone.as_str()));
        let owned = SharedText::from_owner(Borrowed("caf\u{e9}"));
        assert_eq!(owned, text);
        assert_eq!(owned, "caf\u{e9}");
        assert_eq!(owned.len(), 5);
        assert_eq!(format!("{owned} {owned:?}"), "caf\u{e9} \"caf\u{e9}\"");
    }

    #[test]
    fn serialises_as_a_plain_string() -> serde_json::Result<()> {
        let text = SharedText::from_owner(Borrowed("a \"quote\"\n"));
        let json = serde_json::to_string(&text)?;
        assert_eq!(json, r#""a \"quote\"\n""#);
        assert_eq!(serde_json::from_str::<SharedText>(&json)?, text);
        Ok(())
    }
}
