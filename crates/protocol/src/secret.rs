//! [`Secret`]: a value (an API key, a token, a URL with a password) that is never shown.

use std::fmt;

/// A value that must not appear in logs, errors or `Debug` output: its `Debug` is `<redacted>`, so configuration
/// that holds one can derive `Debug`. Code that uses the value reads it with [`Secret::expose`]; nothing else shows
/// it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps `value`.
    pub const fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// The value itself, unwrapped.
    pub fn into_exposed(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret<String> {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        #[derive(Debug)]
        #[allow(dead_code, reason = "only Debug reads the field")]
        struct Config {
            key: Option<Secret<String>>,
        }
        let shown = format!("{:?}", Config { key: Some("sk-secret-123".into()) });
        assert_eq!(shown, "Config { key: Some(<redacted>) }");
        assert_eq!(Secret::<String>::from("sk-secret-123").expose(), "sk-secret-123");
        assert_eq!(Secret::new(7).into_exposed(), 7);
    }
}
