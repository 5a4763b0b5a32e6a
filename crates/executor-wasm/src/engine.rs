//! The process-wide wasmtime engines (one per fuel setting), the epoch ticker, and the compiled interpreter module
//! with its on-disk cache.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine, Module};

use crate::error::{WasmError, WasmResult};

/// The wasmtime version this crate is pinned to (`=48.0.8` in the workspace); part of the cache key.
pub(crate) const WASMTIME_VERSION: &str = "48.0.8";

/// How often the epoch advances. Cell deadlines are checked at this granularity.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Largest stack wasm code may use. The session threads get [`SESSION_THREAD_STACK`], comfortably more.
const MAX_WASM_STACK: usize = 2 << 20;

/// Stack size of each session's OS thread (wasm runs on it synchronously).
pub(crate) const SESSION_THREAD_STACK: usize = 16 << 20;

static ENGINE_PLAIN: OnceLock<Result<Engine, String>> = OnceLock::new();
static ENGINE_FUEL: OnceLock<Result<Engine, String>> = OnceLock::new();

/// The shared engine: epoch interruption always on; fuel metering only when a fuel budget is configured (it changes
/// the generated code, so the two kinds of engine have different compiled modules). Created once per process; the
/// first call also starts the thread that ticks its epoch every [`EPOCH_TICK`].
pub(crate) fn engine(fuel: bool) -> WasmResult<Engine> {
    let slot = if fuel { &ENGINE_FUEL } else { &ENGINE_PLAIN };
    slot.get_or_init(|| create_engine(fuel).map_err(|err| err.to_string()))
        .clone()
        .map_err(|message| WasmError::Runtime(format!("cannot create the wasmtime engine: {message}")))
}

fn create_engine(fuel: bool) -> WasmResult<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.consume_fuel(fuel);
    config.max_wasm_stack(MAX_WASM_STACK);
    // The channel tells the driver's main loop from user code by the call stack (see `stack.rs`).
    config.wasm_backtrace_max_frames(std::num::NonZeroUsize::new(crate::stack::MAX_FRAMES));
    let engine = Engine::new(&config)?;
    let ticking = engine.weak();
    std::thread::Builder::new()
        .name(format!("rlm-wasm-epoch{}", if fuel { "-fuel" } else { "" }))
        .spawn(move || {
            // Ends when the engine is gone (never, in practice: it lives in a static).
            while let Some(engine) = ticking.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map_err(|err| WasmError::io("cannot start the epoch thread", err))?;
    Ok(engine)
}

/// Where a module came from, for diagnostics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleSource {
    /// Compiled from `python.wasm` in this call (and written to the cache when possible).
    Compiled,
    /// Loaded from a precompiled file in the cache directory.
    Cache,
}

/// The interpreter module, compiled for `engine`.
#[derive(Debug)]
pub(crate) struct LoadedModule {
    pub(crate) module: Module,
    pub(crate) source: ModuleSource,
    pub(crate) cache_file: PathBuf,
    /// sha256 of the module file (what the caches are keyed by).
    pub(crate) sha256: String,
}

/// Hex sha256 of a file's bytes.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// A stable 64-bit hash of what makes compiled code compatible with `engine` (its settings and target).
pub(crate) fn engine_config_hash(engine: &Engine) -> u64 {
    // `DefaultHasher::new()` uses fixed keys, so the value is stable for a given build; if it ever changed, the
    // only effect would be a cache miss (and wasmtime itself rejects incompatible files on load).
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.finish()
}

/// Name of the precompiled file for a module with this sha256 under this engine (the module as instrumented by
/// `snapshot::instrument`, whose format is part of the name).
pub(crate) fn cache_file_name(module_sha256: &str, engine: &Engine) -> String {
    let short = module_sha256.get(..16).unwrap_or(module_sha256);
    let format = crate::snapshot::FORMAT;
    format!("python-{short}-rlm{format}-wasmtime-{WASMTIME_VERSION}-{:016x}.cwasm", engine_config_hash(engine))
}

/// Loads the interpreter: from the cache when a precompiled file exists for it, else compiles `module_path` and
/// writes the result to the cache (atomically: temporary file + rename) for the next process.
pub(crate) fn load_module(engine: &Engine, module_path: &Path, cache_dir: &Path) -> WasmResult<LoadedModule> {
    if !module_path.is_file() {
        return Err(WasmError::Module(format!(
            "the Python interpreter module was not found at {}; run scripts/fetch-python-wasm.sh to install it \
             (or set RLM_PYTHON_WASM / WasmConfig::module_path to where it is)",
            module_path.display()
        )));
    }
    let read = || {
        std::fs::read(module_path).map_err(|err| WasmError::io(format!("cannot read {}", module_path.display()), err))
    };
    // Hashing 26 MB on every process start would dominate a warm start: the digest is remembered next to the cache,
    // keyed by the module file's path, size and modification time.
    let stamp = ModuleStamp::of(module_path);
    let mut bytes = None;
    let sha = match stamp.as_ref().and_then(|stamp| stamp.remembered_sha256(cache_dir)) {
        Some(sha) => sha,
        None => {
            let data = read()?;
            let sha = sha256_hex(&data);
            bytes = Some(data);
            if let Some(stamp) = &stamp {
                stamp.remember(cache_dir, &sha);
            }
            sha
        }
    };
    let cache_file = cache_dir.join(cache_file_name(&sha, engine));
    if cache_file.is_file() {
        // SAFETY: `deserialize_file` trusts the file to be the output of `Module::serialize` by a compatible
        // wasmtime, and not to be modified while mapped. We only ever put there files we wrote ourselves (below)
        // under a name keyed by the module's sha256, the wasmtime version and a hash of the engine configuration;
        // they are written to a temporary file and renamed into place, so a reader never sees a partial file; and
        // wasmtime still checks the header (version, engine settings) and refuses an incompatible file, which we
        // then replace. Someone with write access to the user's cache directory could substitute code, but such a
        // user can already run code as us.
        match unsafe { Module::deserialize_file(engine, &cache_file) } {
            Ok(module) => return Ok(LoadedModule { module, source: ModuleSource::Cache, cache_file, sha256: sha }),
            Err(err) => {
                tracing::warn!(file = %cache_file.display(), %err, "ignoring an unusable precompiled module");
            }
        }
    }
    let bytes = match bytes {
        Some(bytes) => bytes,
        None => read()?,
    };
    if sha256_hex(&bytes) != sha {
        // The file changed under the same size and time stamp: forget the stale digest and start over.
        let _ = std::fs::remove_file(cache_dir.join(STAMP_FILE));
        return Err(WasmError::Module(format!(
            "{} changed while it was being loaded; try again",
            module_path.display()
        )));
    }
    let instrumented = crate::snapshot::instrument(&bytes)?;
    drop(bytes);
    let module = Module::new(engine, &instrumented)
        .map_err(|err| WasmError::Module(format!("cannot compile {}: {err:#}", module_path.display())))?;
    drop(instrumented);
    if let Err(err) = write_cache(&module, cache_dir, &cache_file) {
        // Not fatal: the next process compiles again.
        tracing::warn!(file = %cache_file.display(), %err, "cannot write the precompiled module cache");
    }
    Ok(LoadedModule { module, source: ModuleSource::Compiled, cache_file, sha256: sha })
}

/// File in the cache directory remembering the sha256 of the last module file seen.
const STAMP_FILE: &str = "python-wasm.sha256";

/// What identifies a module file's contents cheaply: its path, size and modification time.
#[derive(Debug, PartialEq, Eq)]
struct ModuleStamp {
    line: String,
}

impl ModuleStamp {
    fn of(path: &Path) -> Option<Self> {
        let path = std::fs::canonicalize(path).ok()?;
        let meta = std::fs::metadata(&path).ok()?;
        let modified = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
        Some(Self { line: format!("{}\t{}\t{}", path.display(), meta.len(), modified.as_nanos()) })
    }

    fn remembered_sha256(&self, cache_dir: &Path) -> Option<String> {
        let text = std::fs::read_to_string(cache_dir.join(STAMP_FILE)).ok()?;
        let (key, sha) = text.trim_end().rsplit_once('\t')?;
        (key == self.line && sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit())).then(|| sha.to_owned())
    }

    /// Best effort (a failure only costs a hash next time); written atomically like the module cache.
    fn remember(&self, cache_dir: &Path, sha: &str) {
        let _ = write_atomically(cache_dir, STAMP_FILE, format!("{}\t{sha}\n", self.line).as_bytes());
    }
}

/// Writes `cache_dir/name` through a temporary file and a rename, so readers see the old file or the whole new one.
pub(crate) fn write_atomically(cache_dir: &Path, name: &str, contents: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(cache_dir)?;
    let tmp = cache_dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, cache_dir.join(name))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_cache(module: &Module, cache_dir: &Path, cache_file: &Path) -> WasmResult<()> {
    let serialized = module.serialize()?;
    let name = cache_file.file_name().and_then(|n| n.to_str()).unwrap_or("python.cwasm");
    write_atomically(cache_dir, name, &serialized)
        .map_err(|err| WasmError::io(format!("cannot write {}", cache_file.display()), err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_of_known_input() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn cache_names_depend_on_module_and_engine() -> WasmResult<()> {
        let plain = engine(false)?;
        let fuel = engine(true)?;
        let a = cache_file_name("aaaaaaaaaaaaaaaaaaaaaaaa", &plain);
        assert_eq!(a, cache_file_name("aaaaaaaaaaaaaaaaaaaaaaaa", &plain));
        assert_ne!(a, cache_file_name("bbbbbbbbbbbbbbbbbbbbbbbb", &plain));
        assert_ne!(a, cache_file_name("aaaaaaaaaaaaaaaaaaaaaaaa", &fuel));
        assert!(a.contains(WASMTIME_VERSION));
        Ok(())
    }

    #[test]
    fn module_digests_are_remembered_by_stamp() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let module = dir.path().join("m.wasm");
        std::fs::write(&module, b"one")?;
        let cache = dir.path().join("cache");
        let stamp = ModuleStamp::of(&module).ok_or("no stamp")?;
        assert_eq!(stamp.remembered_sha256(&cache), None);
        stamp.remember(&cache, &sha256_hex(b"one"));
        assert_eq!(ModuleStamp::of(&module).ok_or("no stamp")?.remembered_sha256(&cache), Some(sha256_hex(b"one")));
        std::fs::write(&module, b"three")?;
        assert_eq!(ModuleStamp::of(&module).ok_or("no stamp")?.remembered_sha256(&cache), None);
        Ok(())
    }

    #[test]
    fn missing_module_is_a_clear_error() -> WasmResult<()> {
        let engine = engine(false)?;
        let err = load_module(&engine, Path::new("/nonexistent/python.wasm"), Path::new("/nonexistent-cache"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("fetch-python-wasm.sh"), "{err}");
        Ok(())
    }
}
