//! System prompts' caches saved on disk. A CPU reads a prompt at a few dozen tokens a second, so the system prompt
//! alone is most of a short run's first turn; a new process that loads the same model and sends the same system
//! prompt (the next `rlm run` over the same file, the next task of a benchmark) loads its cells instead.
//!
//! A file holds one sequence's cells and the tokens they are for (llama.cpp's sequence state format). Its name is a
//! hash of the model file's identity, the window and those tokens, so a file is only ever tried for the prompt it
//! was made from; the tokens stored in it are checked again after loading, and a file that does not load is deleted.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use llama_cpp_2::token::LlamaToken;
use sha2::{Digest, Sha256};

/// Files kept in the directory; the least recently used go first.
const MAX_FILES: usize = 8;

/// Shorter system prompts are read again rather than saved: the file would save less than it costs.
pub(crate) const MIN_SAVED_TOKENS: usize = 64;

pub(crate) struct SavedPrompts {
    dir: PathBuf,
    /// What the cells depend on besides the tokens: the model file (path, size, modification time), the window and
    /// the build of this crate.
    model_key: Vec<u8>,
}

impl SavedPrompts {
    /// `None` when the model file cannot be identified (then nothing is saved).
    pub(crate) fn new(dir: PathBuf, model_path: &Path, n_ctx: u32) -> Option<Self> {
        let canonical = std::fs::canonicalize(model_path).ok()?;
        let metadata = std::fs::metadata(&canonical).ok()?;
        let modified = metadata.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
        let model_key = format!(
            "{}\n{}\n{}\n{}\n{}",
            canonical.display(),
            metadata.len(),
            modified.as_nanos(),
            n_ctx,
            env!("CARGO_PKG_VERSION")
        )
        .into_bytes();
        Some(Self { dir, model_key })
    }

    /// The file the cells of `tokens` are saved in.
    pub(crate) fn path_for(&self, tokens: &[LlamaToken]) -> PathBuf {
        let mut hasher = Sha256::new();
        hasher.update(&self.model_key);
        for token in tokens {
            hasher.update(token.0.to_le_bytes());
        }
        let digest = hasher.finalize();
        let name: String = digest.iter().take(16).map(|byte| format!("{byte:02x}")).collect();
        self.dir.join(format!("{name}.kv"))
    }

    /// Where a file is written before it is renamed into place, so a reader never sees half a file.
    pub(crate) fn temporary_path(&self, path: &Path) -> Option<PathBuf> {
        std::fs::create_dir_all(&self.dir).ok()?;
        Some(path.with_extension(format!("kv.{}.tmp", std::process::id())))
    }

    /// Marks a file as just used, so that pruning keeps it longest.
    pub(crate) fn mark_used(&self, path: &Path) {
        let touched = std::fs::File::options()
            .write(true)
            .open(path)
            .and_then(|file| file.set_modified(std::time::SystemTime::now()));
        if let Err(err) = touched {
            tracing::debug!(path = %path.display(), %err, "could not mark a saved prompt as used");
        }
    }

    /// Deletes the least recently used files beyond [`MAX_FILES`] (loading a file marks it used).
    pub(crate) fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "kv"))
            .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
            .collect();
        if files.len() <= MAX_FILES {
            return;
        }
        files.sort();
        for (_, path) in &files[..files.len() - MAX_FILES] {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_depend_on_the_tokens_the_model_and_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.gguf");
        std::fs::write(&model, b"weights").unwrap();
        let other = dir.path().join("n.gguf");
        std::fs::write(&other, b"weights").unwrap();
        let saved = SavedPrompts::new(dir.path().join("p"), &model, 1024).unwrap();
        let tokens = [LlamaToken(1), LlamaToken(2)];
        assert_eq!(saved.path_for(&tokens), saved.path_for(&tokens));
        assert_ne!(saved.path_for(&tokens), saved.path_for(&[LlamaToken(1), LlamaToken(3)]));
        let wider = SavedPrompts::new(dir.path().join("p"), &model, 2048).unwrap();
        assert_ne!(saved.path_for(&tokens), wider.path_for(&tokens));
        let other = SavedPrompts::new(dir.path().join("p"), &other, 1024).unwrap();
        assert_ne!(saved.path_for(&tokens), other.path_for(&tokens));
        assert!(SavedPrompts::new(dir.path().join("p"), &dir.path().join("missing.gguf"), 1024).is_none());
    }

    #[test]
    fn prune_keeps_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.gguf");
        std::fs::write(&model, b"weights").unwrap();
        let saved = SavedPrompts::new(dir.path().join("p"), &model, 1024).unwrap();
        std::fs::create_dir_all(dir.path().join("p")).unwrap();
        let base = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for i in 0..MAX_FILES + 3 {
            let path = dir.path().join("p").join(format!("{i:02}.kv"));
            let file = std::fs::File::create(&path).unwrap();
            file.set_modified(base + std::time::Duration::from_secs(i as u64)).unwrap();
        }
        std::fs::write(dir.path().join("p").join("other.txt"), b"x").unwrap();
        saved.prune();
        let mut left: Vec<String> = std::fs::read_dir(dir.path().join("p"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left.len(), MAX_FILES + 1);
        assert_eq!(left[0], "03.kv");
        assert!(left.contains(&"other.txt".to_owned()));
    }
}
