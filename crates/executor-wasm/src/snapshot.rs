//! Pre-initialised sessions: CPython and the driver are booted once, their memory is captured into a new module,
//! and every session starts from that module's memory image instead of booting CPython again.
//!
//! # How a snapshot is made
//!
//! CPython for WASI (`python.wasm`) is a command module: its only entry point is `_start`, which initialises the
//! interpreter and runs the driver from the top. The snapshot is taken in the middle of that run:
//!
//! 1. The module is *instrumented* ([`instrument`]): it additionally exports its function table and every global, so
//!    the host can read them. Sessions without a snapshot use this module too (the extra exports change nothing).
//! 2. A store runs `_start` with an empty context. Once everything in the driver is defined, the driver sends a
//!    `snapshot` frame (where `_main` lives, and what the function type looks like) and reads the clock. The host
//!    stops the interpreter at that clock read (a call CPython makes while it holds the GIL) with a trap.
//! 3. The host reads linear memory and the globals, and writes a new module ([`snapshot_module`]): the same code,
//!    imports and table, the captured memory as its data, the captured globals as their initial values, and no
//!    `_start`. Three extra exported constants say how to continue: the table slot of the function type's `tp_call`
//!    (`PyVectorcall_Call` in CPython 3.12), the address of `_main` and of the empty tuple.
//! 4. Before the snapshot is cached, a trial session starts from it and must reach `ready`.
//!
//! A session instantiates the snapshot module (wasmtime maps its memory image copy-on-write: every instance gets
//! private pages; nothing is shared between sessions) and calls `tp_call(_main, (), NULL)` through the table. That is
//! a call back into an interpreter that was interrupted inside a C function: the abandoned C frames stay above the
//! captured stack pointer, untouched, and the new call runs below them.
//!
//! # What the host trusts
//!
//! The snapshot is built by the host from the module and the driver, before any user code exists in it; the addresses
//! in the `snapshot` frame are checked against the captured memory (the function type's header must hold the type
//! object, basic size and item size the driver reported, and the function and method types must share one `tp_call`).
//! Nothing a session's guest writes is used. Each session still calibrates the driver's main loop (`stack.rs`) in its
//! own start-up, before any user code runs in it, exactly as a freshly booted interpreter does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use rlm_protocol::{ContextInfo, SubCall, SubCallHost, SubCallResult};
use serde::Deserialize;
use wasm_encoder::{
    ConstExpr, DataSection, ExportKind, ExportSection, GlobalSection, GlobalType, MemorySection, MemoryType,
    RawSection, ValType,
};
use wasmparser::{ExternalKind, Parser, Payload, TypeRef};
use wasmtime::{Engine, Instance, InstancePre, Linker, Module, Store, Val};

use crate::engine::{self, ModuleSource, WASMTIME_VERSION};
use crate::error::{WasmError, WasmResult};
use crate::guest::{ContextKind, Control, GuestState, ProtocolError};
use crate::session::{Entry, Runtime, run_instance};

/// Bumped whenever the layout of instrumented or snapshot modules changes (it is part of their cache names).
pub(crate) const FORMAT: u32 = 1;

/// The function table, exported by instrumented and snapshot modules.
pub(crate) const TABLE_EXPORT: &str = "rlm_table";
/// Prefix of the exported globals of an instrumented module (followed by the global index).
const GLOBAL_EXPORT_PREFIX: &str = "rlm_global_";
/// Exported constants of a snapshot module: the table slot to call, and its first two arguments.
const RESUME_SLOT: &str = "rlm_resume_slot";
const RESUME_CALLABLE: &str = "rlm_resume_callable";
const RESUME_ARGS: &str = "rlm_resume_args";

/// The export that a snapshot module must not keep: running it would initialise the interpreter a second time.
const START_EXPORT: &str = "_start";

const WASM_PAGE: usize = 64 << 10;
const HOST_PAGE: usize = 4 << 10;

/// Offsets in CPython 3.12's `PyTypeObject` on wasm32 (4-byte pointers and `Py_ssize_t`).
const OB_TYPE: u32 = 4;
const TP_BASICSIZE: u32 = 16;
const TP_ITEMSIZE: u32 = 20;
const TP_CALL: u32 = 64;

/// How long the build (and the trial session) may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(300);

/// What the driver's `snapshot` frame says: addresses in linear memory, believed only while building a snapshot
/// (no user code exists then) and only after they check out against the captured memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) struct ResumeClaim {
    callable: u32,
    args: u32,
    function_type: u32,
    type_type: u32,
    method_type: u32,
    basicsize: u32,
    itemsize: u32,
}

/// The snapshot-building state of a store.
#[derive(Debug, Default)]
pub(crate) struct Capture {
    pub(crate) claim: Option<ResumeClaim>,
}

impl Capture {
    /// Whether the `snapshot` frame arrived, so the next clock read is the snapshot point.
    pub(crate) fn is_armed(&self) -> bool {
        self.claim.is_some()
    }
}

/// The trap that stops the interpreter at the snapshot point.
#[derive(Debug, thiserror::Error)]
#[error("the snapshot point was reached")]
pub(crate) struct SnapshotPoint;

/// How a session continues from a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Resume {
    slot: u32,
    callable: u32,
    args: u32,
}

fn snapshot_error(message: impl Into<String>) -> WasmError {
    WasmError::Module(format!("cannot build the pre-initialised interpreter: {}", message.into()))
}

fn parse_error(err: wasmparser::BinaryReaderError) -> WasmError {
    snapshot_error(format!("malformed module: {err}"))
}

/// The instrumented module: `original` plus exports of its table and of every global it defines, without custom
/// sections (debug information the executor never reads).
pub(crate) fn instrument(original: &[u8]) -> WasmResult<Vec<u8>> {
    let mut out = wasm_encoder::Module::new();
    let mut imported_globals = 0u32;
    let mut defined_globals = 0u32;
    let mut has_table = false;
    let mut exported = false;
    for payload in Parser::new(0).parse_all(original) {
        let payload = payload.map_err(parse_error)?;
        match &payload {
            Payload::ImportSection(reader) => {
                for import in reader.clone().into_imports() {
                    match import.map_err(parse_error)?.ty {
                        TypeRef::Global(_) => imported_globals += 1,
                        TypeRef::Table(_) | TypeRef::Memory(_) => {
                            return Err(snapshot_error("the module imports a table or a memory"));
                        }
                        _ => {}
                    }
                }
            }
            Payload::TableSection(reader) => has_table = reader.count() > 0,
            Payload::GlobalSection(reader) => defined_globals = reader.count(),
            Payload::ExportSection(reader) => {
                let mut exports = ExportSection::new();
                for export in reader.clone() {
                    let export = export.map_err(parse_error)?;
                    exports.export(export.name, export_kind(export.kind)?, export.index);
                }
                if has_table {
                    exports.export(TABLE_EXPORT, ExportKind::Table, 0);
                }
                for index in imported_globals..imported_globals + defined_globals {
                    exports.export(&format!("{GLOBAL_EXPORT_PREFIX}{index}"), ExportKind::Global, index);
                }
                out.section(&exports);
                exported = true;
                continue;
            }
            Payload::CustomSection(_) => continue,
            _ => {}
        }
        if let Some((id, range)) = payload.as_section() {
            out.section(&RawSection { id, data: &original[range] });
        }
    }
    if !exported || !has_table {
        return Err(snapshot_error("the module has no export section or no function table"));
    }
    Ok(out.finish())
}

fn export_kind(kind: ExternalKind) -> WasmResult<ExportKind> {
    Ok(match kind {
        ExternalKind::Func => ExportKind::Func,
        ExternalKind::Table => ExportKind::Table,
        ExternalKind::Memory => ExportKind::Memory,
        ExternalKind::Global => ExportKind::Global,
        ExternalKind::Tag => ExportKind::Tag,
        other => return Err(snapshot_error(format!("an export of kind {other:?}"))),
    })
}

fn const_of(value: &Val) -> WasmResult<(ValType, ConstExpr)> {
    Ok(match value {
        Val::I32(v) => (ValType::I32, ConstExpr::i32_const(*v)),
        Val::I64(v) => (ValType::I64, ConstExpr::i64_const(*v)),
        Val::F32(bits) => (ValType::F32, ConstExpr::f32_const(f32::from_bits(*bits).into())),
        Val::F64(bits) => (ValType::F64, ConstExpr::f64_const(f64::from_bits(*bits).into())),
        _ => return Err(snapshot_error("a global of a reference or vector type")),
    })
}

/// The part of `memory` that holds anything: from the first to the last host page that is not all zeros.
fn data_span(memory: &[u8]) -> Option<(usize, usize)> {
    let nonzero = |chunk: &[u8]| chunk.iter().any(|&b| b != 0);
    let first = memory.chunks(HOST_PAGE).position(nonzero)?;
    let last = memory.chunks(HOST_PAGE).rposition(nonzero)?;
    Some((first * HOST_PAGE, ((last + 1) * HOST_PAGE).min(memory.len())))
}

/// The snapshot module: `instrumented` with `memory` as its initial memory (one dense data segment, so wasmtime can
/// always map it as a copy-on-write image), `globals` (by global index) as the globals' initial values, no `_start`,
/// and the exported constants of `resume`.
fn snapshot_module(
    instrumented: &[u8],
    memory: &[u8],
    globals: &HashMap<u32, Val>,
    resume: Resume,
) -> WasmResult<Vec<u8>> {
    if !memory.len().is_multiple_of(WASM_PAGE) {
        return Err(snapshot_error("the memory is not a whole number of pages"));
    }
    let pages = (memory.len() / WASM_PAGE) as u64;
    let mut out = wasm_encoder::Module::new();
    let mut imported_globals = 0u32;
    let mut total_globals = 0u32;
    let mut wrote_data = false;
    for payload in Parser::new(0).parse_all(instrumented) {
        let payload = payload.map_err(parse_error)?;
        match &payload {
            Payload::ImportSection(reader) => {
                for import in reader.clone().into_imports() {
                    if matches!(import.map_err(parse_error)?.ty, TypeRef::Global(_)) {
                        imported_globals += 1;
                    }
                }
            }
            Payload::MemorySection(reader) => {
                let mut memories = MemorySection::new();
                let mut count = 0;
                for ty in reader.clone() {
                    let ty = ty.map_err(parse_error)?;
                    if ty.memory64 || ty.shared || ty.page_size_log2.is_some() {
                        return Err(snapshot_error("a 64-bit, shared or custom-page memory"));
                    }
                    memories.memory(MemoryType {
                        minimum: pages,
                        maximum: ty.maximum,
                        memory64: false,
                        shared: false,
                        page_size_log2: None,
                    });
                    count += 1;
                }
                if count != 1 {
                    return Err(snapshot_error("the module must define exactly one memory"));
                }
                out.section(&memories);
                continue;
            }
            Payload::GlobalSection(reader) => {
                let mut section = GlobalSection::new();
                for (offset, global) in reader.clone().into_iter().enumerate() {
                    let global = global.map_err(parse_error)?;
                    let index = imported_globals + offset as u32;
                    let value = globals
                        .get(&index)
                        .ok_or_else(|| snapshot_error(format!("global {index} was not captured")))?;
                    let (val_type, init) = const_of(value)?;
                    section.global(GlobalType { val_type, mutable: global.ty.mutable, shared: false }, &init);
                }
                total_globals = imported_globals + reader.count();
                for value in [resume.slot, resume.callable, resume.args] {
                    let global = GlobalType { val_type: ValType::I32, mutable: false, shared: false };
                    section.global(global, &ConstExpr::i32_const(value as i32));
                }
                out.section(&section);
                continue;
            }
            Payload::ExportSection(reader) => {
                let mut exports = ExportSection::new();
                for export in reader.clone() {
                    let export = export.map_err(parse_error)?;
                    if export.name == START_EXPORT || export.name.starts_with(GLOBAL_EXPORT_PREFIX) {
                        continue;
                    }
                    exports.export(export.name, export_kind(export.kind)?, export.index);
                }
                for (offset, name) in [RESUME_SLOT, RESUME_CALLABLE, RESUME_ARGS].into_iter().enumerate() {
                    exports.export(name, ExportKind::Global, total_globals + offset as u32);
                }
                out.section(&exports);
                continue;
            }
            Payload::StartSection { .. } | Payload::DataCountSection { .. } => {
                return Err(snapshot_error("the module has a start section or passive data segments"));
            }
            Payload::DataSection(_) => {
                // Its effect is part of the captured memory.
                out.section(&snapshot_data(memory));
                wrote_data = true;
                continue;
            }
            Payload::CustomSection(_) => continue,
            _ => {}
        }
        if let Some((id, range)) = payload.as_section() {
            out.section(&RawSection { id, data: &instrumented[range] });
        }
    }
    if !wrote_data {
        // No data section in the original: a module's last section may be the code section, which comes before data.
        out.section(&snapshot_data(memory));
    }
    if total_globals == 0 {
        return Err(snapshot_error("the module defines no globals (no stack pointer to restore)"));
    }
    Ok(out.finish())
}

fn snapshot_data(memory: &[u8]) -> DataSection {
    let mut data = DataSection::new();
    if let Some((start, end)) = data_span(memory) {
        data.active(0, &ConstExpr::i32_const(start as i32), memory[start..end].iter().copied());
    }
    data
}

fn read_u32(memory: &[u8], at: u32) -> Option<u32> {
    let at = at as usize;
    let bytes = memory.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Checks the driver's claim against the captured memory; gives the table slot of the function type's `tp_call`.
fn verify_claim(memory: &[u8], claim: &ResumeClaim) -> WasmResult<Resume> {
    let at = |base: u32, offset: u32| base.checked_add(offset).and_then(|addr| read_u32(memory, addr));
    let expect = |what: &str, found: Option<u32>, wanted: u32| {
        if found == Some(wanted) {
            Ok(())
        } else {
            Err(snapshot_error(format!("the interpreter's layout is not CPython 3.12's ({what})")))
        }
    };
    expect("type of the function type", at(claim.function_type, OB_TYPE), claim.type_type)?;
    expect("type of _main", at(claim.callable, OB_TYPE), claim.function_type)?;
    expect("tp_basicsize", at(claim.function_type, TP_BASICSIZE), claim.basicsize)?;
    expect("tp_itemsize", at(claim.function_type, TP_ITEMSIZE), claim.itemsize)?;
    let slot = at(claim.function_type, TP_CALL).filter(|&slot| slot != 0);
    let Some(slot) = slot else { return Err(snapshot_error("the function type has no tp_call")) };
    expect("tp_call of methods", at(claim.method_type, TP_CALL), slot)?;
    Ok(Resume { slot, callable: claim.callable, args: claim.args })
}

/// Continues a session from a snapshot: calls `_main` through the table (see the module documentation).
pub(crate) fn resume(store: &mut Store<GuestState>, instance: &Instance) -> wasmtime::Result<()> {
    let missing = |what: &str| wasmtime::Error::new(ProtocolError(format!("the snapshot module has no {what}")));
    let mut constant = |name: &str| -> wasmtime::Result<i32> {
        let global = instance.get_global(&mut *store, name).ok_or_else(|| missing(name))?;
        global.get(&mut *store).i32().ok_or_else(|| missing(name))
    };
    let slot = constant(RESUME_SLOT)?;
    let callable = constant(RESUME_CALLABLE)?;
    let args = constant(RESUME_ARGS)?;
    let table = instance.get_table(&mut *store, TABLE_EXPORT).ok_or_else(|| missing(TABLE_EXPORT))?;
    let entry = table.get(&mut *store, u64::from(slot as u32)).ok_or_else(|| missing("table slot"))?;
    let func = entry.unwrap_func().cloned().ok_or_else(|| missing("function in its table slot"))?;
    let call = func.typed::<(i32, i32, i32), i32>(&*store)?;
    match call.call(&mut *store, (callable, args, 0))? {
        0 => Err(wasmtime::Error::new(ProtocolError("the driver ended with a Python exception".to_owned()))),
        _ => Ok(()),
    }
}

/// A snapshot module, compiled for the engine.
pub(crate) struct LoadedSnapshot {
    pub(crate) pre: InstancePre<GuestState>,
    pub(crate) source: ModuleSource,
    pub(crate) cache_file: PathBuf,
}

/// Name of the cached snapshot: like the compiled module's, plus a digest of everything the driver's start-up
/// depends on (its source and arguments).
fn cache_file_name(module_sha256: &str, args: &[String], engine: &Engine) -> String {
    let mut recipe = Vec::new();
    for arg in args {
        recipe.extend_from_slice(arg.as_bytes());
        recipe.push(0);
    }
    let recipe = engine::sha256_hex(&recipe);
    let short = module_sha256.get(..16).unwrap_or(module_sha256);
    let recipe = recipe.get(..16).unwrap_or(&recipe);
    format!(
        "python-{short}-snapshot{FORMAT}-{recipe}-wasmtime-{WASMTIME_VERSION}-{:016x}.cwasm",
        engine::engine_config_hash(engine)
    )
}

/// Loads the snapshot from the cache, or builds, checks and caches it. `fresh` is the executor's runtime starting
/// from `_start`; `module_path` is read again only when a snapshot has to be built.
pub(crate) fn load_or_build(
    fresh: &Runtime,
    linker: &Linker<GuestState>,
    module_path: &Path,
    module_sha256: &str,
    cache_dir: &Path,
) -> WasmResult<LoadedSnapshot> {
    let Entry::Fresh { pre, args } = &fresh.entry else {
        return Err(snapshot_error("the base runtime is already a snapshot"));
    };
    let engine = pre.module().engine().clone();
    let cache_file = cache_dir.join(cache_file_name(module_sha256, args, &engine));
    if cache_file.is_file() {
        // SAFETY: as for the compiled module (`engine::load_module`): only files this crate wrote, renamed into place
        // whole, under a name keyed by the module, the driver, the wasmtime version and the engine settings; wasmtime
        // checks the header and refuses an incompatible file.
        match unsafe { Module::deserialize_file(&engine, &cache_file) } {
            Ok(module) => {
                let pre = linker.instantiate_pre(&module)?;
                return Ok(LoadedSnapshot { pre, source: ModuleSource::Cache, cache_file });
            }
            Err(err) => tracing::warn!(file = %cache_file.display(), %err, "ignoring an unusable snapshot"),
        }
    }
    let original = std::fs::read(module_path)
        .map_err(|err| WasmError::io(format!("cannot read {}", module_path.display()), err))?;
    if engine::sha256_hex(&original) != module_sha256 {
        return Err(snapshot_error(format!("{} changed while it was being loaded", module_path.display())));
    }
    let instrumented = instrument(&original)?;
    drop(original);
    let runtime = fresh.clone();
    let wasm = on_session_thread(move || capture(&runtime, &instrumented))??;
    let module = Module::new(&engine, &wasm).map_err(|err| snapshot_error(format!("{err:#}")))?;
    drop(wasm);
    let pre = linker.instantiate_pre(&module)?;
    let mut trial = fresh.clone();
    trial.entry = Entry::Snapshot { pre: pre.clone() };
    on_session_thread(move || trial_boot(&trial))??;
    match module.serialize() {
        Ok(bytes) => {
            let name = cache_file.file_name().and_then(|n| n.to_str()).unwrap_or("python-snapshot.cwasm");
            if let Err(err) = engine::write_atomically(cache_dir, name, &bytes) {
                tracing::warn!(file = %cache_file.display(), %err, "cannot write the snapshot cache");
            }
        }
        Err(err) => tracing::warn!(%err, "cannot serialise the snapshot"),
    }
    // Sessions map the memory image from the cache file when they can (copy-on-write from the page cache).
    if cache_file.is_file() {
        // SAFETY: the file was just written by us, as above.
        if let Ok(module) = unsafe { Module::deserialize_file(&engine, &cache_file) } {
            let pre = linker.instantiate_pre(&module)?;
            return Ok(LoadedSnapshot { pre, source: ModuleSource::Compiled, cache_file });
        }
    }
    Ok(LoadedSnapshot { pre, source: ModuleSource::Compiled, cache_file })
}

/// Runs `work` on a thread with a session's stack size (the guest runs on the calling thread's stack).
fn on_session_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> WasmResult<T> {
    std::thread::Builder::new()
        .name("rlm-wasm-snapshot".to_owned())
        .stack_size(engine::SESSION_THREAD_STACK)
        .spawn(work)
        .map_err(|err| WasmError::io("cannot start the snapshot thread", err))?
        .join()
        .map_err(|_| snapshot_error("the snapshot thread panicked"))
}

/// Answers no sub-call (none is made while building or trying a snapshot).
struct NoSubCalls;

#[async_trait::async_trait]
impl SubCallHost for NoSubCalls {
    async fn sub_calls(&self, calls: Vec<SubCall>) -> Vec<SubCallResult> {
        calls.iter().map(|_| Err("no sub-calls while the sandbox is being prepared".to_owned())).collect()
    }
}

/// A control block for a store that runs without a session: empty text context, no jobs (the job channel is closed,
/// so the driver is told to exit as soon as it is idle).
fn offline_control(
    runtime: &Runtime,
    boot_reply: tokio::sync::oneshot::Sender<WasmResult<ContextInfo>>,
) -> WasmResult<(Control, tokio::runtime::Runtime)> {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|err| WasmError::io("cannot start a runtime for the snapshot", err))?;
    let (_, jobs) = std::sync::mpsc::channel();
    let ctl = Control {
        jobs,
        host: Arc::new(NoSubCalls),
        handle: tokio.handle().clone(),
        cell_timeout: BUILD_TIMEOUT,
        boot_timeout: BUILD_TIMEOUT,
        max_chars: 1000,
        fuel_per_cell: runtime.fuel_per_cell,
        limits: runtime.limits,
        context_kind: ContextKind::Text,
        context: Arc::new(Vec::new()),
        cells: 0,
        history: Vec::new(),
        info: None,
        boot_reply: Some(boot_reply),
        owed: None,
        aborted: Arc::new(AtomicBool::new(false)),
        cpu: Arc::clone(&runtime.cpu),
    };
    Ok((ctl, tokio))
}

/// Runs the instrumented module to the snapshot point and writes the snapshot module.
fn capture(runtime: &Runtime, instrumented: &[u8]) -> WasmResult<Vec<u8>> {
    let (boot_reply, _) = tokio::sync::oneshot::channel();
    let (ctl, _tokio) = offline_control(runtime, boot_reply)?;
    let mut store = crate::session::new_store(runtime, ctl);
    store.data_mut().snapshot = Some(Capture::default());
    let Entry::Fresh { pre, .. } = &runtime.entry else {
        return Err(snapshot_error("the base runtime is already a snapshot"));
    };
    let mut initial_globals = HashMap::new();
    let outcome = (|| -> wasmtime::Result<Instance> {
        crate::session::set_start_fuel(runtime, &mut store)?;
        store.data_mut().take_cpu();
        let instance = pre.instantiate(&mut store)?;
        initial_globals = read_globals(&mut store, &instance);
        let start = instance.get_typed_func::<(), ()>(&mut store, START_EXPORT)?;
        match start.call(&mut store, ()) {
            Err(err) if err.is::<SnapshotPoint>() => Ok(instance),
            Err(err) => Err(err),
            Ok(()) => Err(wasmtime::Error::msg("the driver never reached the snapshot point")),
        }
    })();
    store.data_mut().give_up_cpu();
    let instance = outcome.map_err(|err| {
        let diagnostics = store.data().diagnostics_text();
        snapshot_error(format!("{err:#} {diagnostics}"))
    })?;
    let claim = store.data().snapshot.as_ref().and_then(|capture| capture.claim);
    let Some(claim) = claim else { return Err(snapshot_error("no snapshot frame")) };
    let memory =
        instance.get_memory(&mut store, "memory").ok_or_else(|| snapshot_error("the module exports no memory"))?;
    let globals = read_globals(&mut store, &instance);
    for (index, value) in &globals {
        if let (Some(before), Some(after)) = (initial_globals.get(index).and_then(Val::i32), value.i32()) {
            // The stack pointer moves down by what the interrupted start-up still holds on the C stack.
            tracing::debug!(global = index, before, after, "snapshot global");
        }
    }
    let bytes = memory.data(&store);
    let resume = verify_claim(bytes, &claim)?;
    let table = instance.get_table(&mut store, TABLE_EXPORT).ok_or_else(|| snapshot_error("no table"))?;
    let entry = table.get(&mut store, u64::from(resume.slot)).and_then(|entry| entry.unwrap_func().cloned());
    let callable_type = entry.map(|func| func.typed::<(i32, i32, i32), i32>(&store).is_ok());
    if callable_type != Some(true) {
        return Err(snapshot_error("tp_call's table slot does not hold a function of its type"));
    }
    snapshot_module(instrumented, memory.data(&store), &globals, resume)
}

/// The values of the globals an instrumented module exports, by global index.
fn read_globals(store: &mut Store<GuestState>, instance: &Instance) -> HashMap<u32, Val> {
    let names: Vec<(u32, String)> = instance
        .exports(&mut *store)
        .filter_map(|export| {
            let index = export.name().strip_prefix(GLOBAL_EXPORT_PREFIX)?.parse().ok()?;
            Some((index, export.name().to_owned()))
        })
        .collect();
    let mut globals = HashMap::new();
    for (index, name) in names {
        if let Some(global) = instance.get_global(&mut *store, &name) {
            globals.insert(index, global.get(&mut *store));
        }
    }
    globals
}

/// Starts a session from the new snapshot with an empty context; it must reach `ready` and exit cleanly.
fn trial_boot(runtime: &Runtime) -> WasmResult<()> {
    let (boot_reply, mut booted) = tokio::sync::oneshot::channel();
    let (ctl, _tokio) = offline_control(runtime, boot_reply)?;
    let (result, state) = run_instance(runtime, ctl);
    let diagnostics = state.diagnostics_text();
    let info = booted.try_recv();
    match (result, info) {
        (Ok(()), Ok(Ok(info))) if info.python_type == "str" && info.total_chars == 0 => Ok(()),
        (result, info) => Err(snapshot_error(format!(
            "a session started from it did not boot: {:?}, {:?} {diagnostics}",
            result.err().map(|err| format!("{err:#}")),
            info.map(|info| info.map(|_| ()).map_err(|err| err.to_string()))
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module shaped like CPython for WASI, in miniature: imports a function, defines a table, a memory with
    /// data, a mutable stack-pointer global and `_start`.
    fn tiny_module() -> Vec<u8> {
        use wasm_encoder::{
            CodeSection, ElementSection, Elements, EntityType, Function, FunctionSection, ImportSection, Instruction,
            RefType, TableSection, TableType, TypeSection,
        };
        let mut module = wasm_encoder::Module::new();
        let mut types = TypeSection::new();
        types.ty().function([], []);
        types.ty().function([ValType::I32, ValType::I32, ValType::I32], [ValType::I32]);
        module.section(&types);
        let mut imports = ImportSection::new();
        imports.import("env", "f", EntityType::Function(0));
        module.section(&imports);
        let mut functions = FunctionSection::new();
        functions.function(0);
        functions.function(1);
        module.section(&functions);
        let mut tables = TableSection::new();
        tables.table(TableType {
            element_type: RefType::FUNCREF,
            minimum: 4,
            maximum: None,
            table64: false,
            shared: false,
        });
        module.section(&tables);
        let mut memories = MemorySection::new();
        memories.memory(MemoryType { minimum: 1, maximum: None, memory64: false, shared: false, page_size_log2: None });
        module.section(&memories);
        let mut globals = GlobalSection::new();
        globals
            .global(GlobalType { val_type: ValType::I32, mutable: true, shared: false }, &ConstExpr::i32_const(65536));
        module.section(&globals);
        let mut exports = ExportSection::new();
        exports.export("memory", ExportKind::Memory, 0);
        exports.export("_start", ExportKind::Func, 1);
        module.section(&exports);
        let mut elements = ElementSection::new();
        elements.active(Some(0), &ConstExpr::i32_const(1), Elements::Functions(std::borrow::Cow::Borrowed(&[2])));
        module.section(&elements);
        let mut code = CodeSection::new();
        let mut start = Function::new([]);
        start.instruction(&Instruction::End);
        code.function(&start);
        let mut add = Function::new([]);
        add.instruction(&Instruction::LocalGet(0));
        add.instruction(&Instruction::LocalGet(1));
        add.instruction(&Instruction::I32Add);
        add.instruction(&Instruction::LocalGet(2));
        add.instruction(&Instruction::I32Add);
        add.instruction(&Instruction::End);
        code.function(&add);
        module.section(&code);
        let mut data = DataSection::new();
        data.active(0, &ConstExpr::i32_const(16), b"hello".iter().copied());
        module.section(&data);
        module.section(&wasm_encoder::CustomSection { name: "debug".into(), data: b"x".as_slice().into() });
        module.finish()
    }

    fn exports_of(wasm: &[u8]) -> Vec<String> {
        let mut names = Vec::new();
        for payload in Parser::new(0).parse_all(wasm) {
            if let Ok(Payload::ExportSection(reader)) = payload {
                names.extend(reader.into_iter().filter_map(Result::ok).map(|export| export.name.to_owned()));
            }
        }
        names
    }

    #[test]
    fn instrumenting_exports_table_and_globals_and_drops_custom_sections() -> Result<(), Box<dyn std::error::Error>> {
        let instrumented = instrument(&tiny_module())?;
        wasmparser::validate(&instrumented)?;
        assert_eq!(exports_of(&instrumented), ["memory", "_start", TABLE_EXPORT, "rlm_global_0"]);
        let custom = Parser::new(0)
            .parse_all(&instrumented)
            .filter(|payload| matches!(payload, Ok(Payload::CustomSection(_))))
            .count();
        assert_eq!(custom, 0);
        Ok(())
    }

    #[test]
    fn a_snapshot_module_starts_with_the_captured_state() -> Result<(), Box<dyn std::error::Error>> {
        let instrumented = instrument(&tiny_module())?;
        let mut memory = vec![0u8; 2 * WASM_PAGE];
        memory[70_000..70_005].copy_from_slice(b"state");
        let globals = HashMap::from([(0, Val::I32(4096))]);
        let resume = Resume { slot: 1, callable: 10, args: 20 };
        let wasm = snapshot_module(&instrumented, &memory, &globals, resume)?;
        wasmparser::validate(&wasm)?;
        assert_eq!(exports_of(&wasm), ["memory", TABLE_EXPORT, RESUME_SLOT, RESUME_CALLABLE, RESUME_ARGS]);

        let engine = Engine::default();
        let module = Module::new(&engine, &wasm)?;
        let mut linker = Linker::new(&engine);
        linker.func_wrap("env", "f", || {})?;
        let mut store = Store::new(&engine, ());
        let instance = linker.instantiate(&mut store, &module)?;
        let memory_export = instance.get_memory(&mut store, "memory").ok_or("no memory")?;
        // The captured memory replaced the original data ("hello" at 16 is gone), at the captured size.
        assert_eq!(memory_export.data(&store).len(), 2 * WASM_PAGE);
        assert_eq!(&memory_export.data(&store)[70_000..70_005], b"state");
        assert_eq!(&memory_export.data(&store)[16..21], [0; 5]);
        let slot = instance.get_global(&mut store, RESUME_SLOT).ok_or("no slot")?.get(&mut store).i32();
        assert_eq!(slot, Some(1));
        // The resume slot holds the function the element segment put there.
        let table = instance.get_table(&mut store, TABLE_EXPORT).ok_or("no table")?;
        let func = table.get(&mut store, 1).and_then(|entry| entry.unwrap_func().cloned()).ok_or("empty slot")?;
        let sum = func.typed::<(i32, i32, i32), i32>(&store)?.call(&mut store, (1, 2, 3))?;
        assert_eq!(sum, 6);
        Ok(())
    }

    #[test]
    fn only_the_used_span_of_memory_becomes_data() {
        let mut memory = vec![0u8; WASM_PAGE];
        assert_eq!(data_span(&memory), None);
        memory[5000] = 1;
        memory[9000] = 1;
        assert_eq!(data_span(&memory), Some((4096, 12288)));
    }

    #[test]
    fn claims_are_checked_against_memory() {
        let mut memory = vec![0u8; 4096];
        let put = |memory: &mut Vec<u8>, at: u32, value: u32| {
            memory[at as usize..at as usize + 4].copy_from_slice(&value.to_le_bytes());
        };
        let claim = ResumeClaim {
            callable: 100,
            args: 200,
            function_type: 1000,
            type_type: 2000,
            method_type: 3000,
            basicsize: 72,
            itemsize: 0,
        };
        put(&mut memory, 100 + OB_TYPE, 1000);
        put(&mut memory, 1000 + OB_TYPE, 2000);
        put(&mut memory, 1000 + TP_BASICSIZE, 72);
        put(&mut memory, 1000 + TP_CALL, 77);
        put(&mut memory, 3000 + TP_CALL, 77);
        assert_eq!(verify_claim(&memory, &claim).ok(), Some(Resume { slot: 77, callable: 100, args: 200 }));
        put(&mut memory, 3000 + TP_CALL, 78);
        assert!(verify_claim(&memory, &claim).is_err());
        put(&mut memory, 3000 + TP_CALL, 77);
        put(&mut memory, 1000 + TP_BASICSIZE, 80);
        assert!(verify_claim(&memory, &claim).is_err());
        let outside = ResumeClaim { function_type: 4094, ..claim };
        assert!(verify_claim(&memory, &outside).is_err());
    }

    #[test]
    fn cache_names_depend_on_the_driver() -> WasmResult<()> {
        let engine = engine::engine(false)?;
        let a = cache_file_name("aaaaaaaaaaaaaaaaaaaa", &["python".to_owned(), "one".to_owned()], &engine);
        let b = cache_file_name("aaaaaaaaaaaaaaaaaaaa", &["python".to_owned(), "two".to_owned()], &engine);
        assert_ne!(a, b);
        assert!(a.contains(WASMTIME_VERSION) && a.contains("snapshot"));
        Ok(())
    }
}
