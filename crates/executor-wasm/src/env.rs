//! The environment variables this crate reads, all here: the defaults of [`crate::WasmConfig`]'s paths.

use std::path::PathBuf;

/// `$XDG_CACHE_HOME/rlm`, else `~/.cache/rlm`, else a directory under the system temp dir.
pub(crate) fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("rlm");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache").join("rlm");
    }
    std::env::temp_dir().join("rlm-cache")
}

/// `$RLM_PYTHON_WASM`, else `~/.local/share/rlm/python-3.12.0.wasm`.
pub(crate) fn default_module_path() -> PathBuf {
    if let Some(path) = std::env::var_os("RLM_PYTHON_WASM").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").filter(|d| !d.is_empty()).map(PathBuf::from).unwrap_or_default();
    home.join(".local").join("share").join("rlm").join("python-3.12.0.wasm")
}
