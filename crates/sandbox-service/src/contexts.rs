//! Contexts uploaded once by content hash and reused by later sessions (`PUT /v1/contexts/{sha256}`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use rlm_protocol::sandbox::ContextKind;

#[derive(Debug)]
pub(crate) struct StoredContext {
    pub kind: ContextKind,
    pub bytes: Vec<u8>,
}

/// A byte-bounded store; the least recently uploaded or used context goes first when it is full.
#[derive(Debug)]
pub(crate) struct ContextStore {
    capacity_bytes: usize,
    used_bytes: usize,
    entries: HashMap<String, Arc<StoredContext>>,
    /// Oldest first.
    order: VecDeque<String>,
}

impl ContextStore {
    pub fn new(capacity_bytes: usize) -> Self {
        Self { capacity_bytes, used_bytes: 0, entries: HashMap::new(), order: VecDeque::new() }
    }

    pub fn capacity_bytes(&self) -> usize {
        self.capacity_bytes
    }

    pub fn get(&mut self, sha256: &str) -> Option<Arc<StoredContext>> {
        let found = self.entries.get(sha256).cloned()?;
        self.order.retain(|key| key != sha256);
        self.order.push_back(sha256.to_owned());
        Some(found)
    }

    /// Stores a context; `false` when it is larger than the whole store.
    pub fn insert(&mut self, sha256: String, context: StoredContext) -> bool {
        let size = context.bytes.len();
        if size > self.capacity_bytes {
            return false;
        }
        if let Some(old) = self.entries.remove(&sha256) {
            self.used_bytes -= old.bytes.len();
            self.order.retain(|key| key != &sha256);
        }
        while self.used_bytes + size > self.capacity_bytes {
            let Some(oldest) = self.order.pop_front() else { break };
            if let Some(evicted) = self.entries.remove(&oldest) {
                self.used_bytes -= evicted.bytes.len();
            }
        }
        self.used_bytes += size;
        self.order.push_back(sha256.clone());
        self.entries.insert(sha256, Arc::new(context));
        true
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(digest: impl AsRef<[u8]>) -> String {
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(size: usize) -> StoredContext {
        StoredContext { kind: ContextKind::Text, bytes: vec![b'x'; size] }
    }

    #[test]
    fn the_least_recently_used_context_is_evicted_first() {
        let mut store = ContextStore::new(10);
        assert!(store.insert("a".into(), context(4)));
        assert!(store.insert("b".into(), context(4)));
        assert!(store.get("a").is_some());
        assert!(store.insert("c".into(), context(4)));
        assert!(store.get("b").is_none(), "b was the least recently used");
        assert!(store.get("a").is_some());
        assert!(store.get("c").is_some());
        assert!(!store.insert("huge".into(), context(11)));
    }

    #[test]
    fn hashes_are_lower_case_hex() {
        use sha2::Digest;
        let hex = sha256_hex(sha2::Sha256::digest(b"abc"));
        assert_eq!(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(is_sha256_hex(&hex));
        assert!(!is_sha256_hex("ABC"));
    }
}
