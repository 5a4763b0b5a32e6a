//! The host side of one sandboxed interpreter: the store data, the private channel to the driver (served by our own
//! `fd_read` / `fd_write` imports), and the state machine that turns frames into cell outcomes and sub-calls.
//!
//! Everything here runs on the session's dedicated OS thread, inside the driver's single long `_start` call: the
//! guest asks for input by reading the channel, and that read is where the host waits for the next job.

use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use rlm_protocol::{CellError, CellOutcome, ContextInfo, FinalVar, SubCall, SubCallHost, SubCallKind};
use serde::Deserialize;
use serde_json::json;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use wasmtime::{Caller, Extern, Linker, StoreLimits};
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::error::{WasmError, WasmResult};

/// The file descriptor of the host channel inside the guest: standard input, used in both directions. Our own
/// `fd_read` / `fd_write` serve it (WASI's stdin stays closed), so the interpreter's stdout and stderr (fd 1 and 2,
/// which user code can write to directly) never mix with the protocol. (A descriptor outside WASI's table would be
/// cleaner, but the module's embedded file system layer (wasi-vfs) rejects unknown descriptors before they reach the
/// host.) The driver replaces `sys.stdin`, so user code does not read it by accident.
pub(crate) const CHANNEL_FD: i32 = 0;

/// Frame header: `<u32 LE json_len><u32 LE payload_len>`.
const HEADER_LEN: usize = 8;

/// How much of the interpreter's own stdout/stderr (fd 1 and 2, outside any cell capture) is kept for diagnostics.
const DIAGNOSTIC_TAIL: usize = 8 * 1024;

/// Fuel while no cell runs (start-up, between cells): effectively unlimited, the epoch deadline bounds it.
const UNMETERED_FUEL: u64 = u64::MAX / 4;

// WASI preview 1 errno values.
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;

/// A request from the async side of a session to its thread.
#[derive(Debug)]
pub(crate) enum Job {
    Cell { code: String, reply: oneshot::Sender<WasmResult<CellOutcome>> },
    Get { name: String, reply: oneshot::Sender<WasmResult<Option<String>>> },
    Names { reply: oneshot::Sender<WasmResult<Vec<String>>> },
}

/// A cell that ran to completion (with or without a Python exception), kept to rebuild the namespace after a trap.
#[derive(Debug, Clone)]
pub(crate) struct CellRecord {
    pub(crate) number: u64,
    pub(crate) code: String,
    /// The answers its sub-calls got, batch by batch, replayed instead of calling the host again.
    pub(crate) answers: Vec<Vec<String>>,
}

/// How the context enters the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContextKind {
    Text,
    Json,
}

impl ContextKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// A reply owed to the async side once the sandbox has been rebuilt after a trap.
#[derive(Debug)]
pub(crate) enum Owed {
    Cell(oneshot::Sender<WasmResult<CellOutcome>>, CellOutcome),
    Get(oneshot::Sender<WasmResult<Option<String>>>, WasmError),
    Names(oneshot::Sender<WasmResult<Vec<String>>>, WasmError),
}

impl Owed {
    pub(crate) fn deliver(self) {
        // A receiver that is gone (the caller stopped waiting) is not an error.
        match self {
            Self::Cell(reply, outcome) => drop(reply.send(Ok(outcome))),
            Self::Get(reply, err) => drop(reply.send(Err(err))),
            Self::Names(reply, err) => drop(reply.send(Err(err))),
        }
    }

    pub(crate) fn fail(self, message: &str) {
        match self {
            Self::Cell(reply, _) => drop(reply.send(Err(WasmError::Dead(message.to_owned())))),
            Self::Get(reply, _) => drop(reply.send(Err(WasmError::Dead(message.to_owned())))),
            Self::Names(reply, _) => drop(reply.send(Err(WasmError::Dead(message.to_owned())))),
        }
    }
}

/// What survives from one instance of the sandbox to the next.
pub(crate) struct Control {
    pub(crate) jobs: Receiver<Job>,
    pub(crate) host: Arc<dyn SubCallHost>,
    pub(crate) handle: Handle,
    pub(crate) cell_timeout: Duration,
    pub(crate) boot_timeout: Duration,
    pub(crate) max_chars: usize,
    pub(crate) fuel_per_cell: Option<u64>,
    pub(crate) context_kind: ContextKind,
    /// The context as sent to the guest (UTF-8 text or JSON), kept to rebuild the sandbox after a trap.
    pub(crate) context: Arc<Vec<u8>>,
    /// Cells run so far (the next cell is number `cells + 1`; numbers are never reused).
    pub(crate) cells: u64,
    pub(crate) history: Vec<CellRecord>,
    pub(crate) info: Option<ContextInfo>,
    /// Told once the first start-up finished (or failed).
    pub(crate) boot_reply: Option<oneshot::Sender<WasmResult<ContextInfo>>>,
    /// A reply to send once the sandbox has been rebuilt (the job whose cell trapped).
    pub(crate) owed: Option<Owed>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("cells", &self.cells)
            .field("history", &self.history.len())
            .field("context_bytes", &self.context.len())
            .finish_non_exhaustive()
    }
}

/// What the host is waiting for from the guest.
#[derive(Debug)]
pub(crate) enum Phase {
    /// The driver is starting: `init` sent, `ready` expected.
    Boot,
    /// Re-running `history[index]` after a trap.
    Replay {
        index: usize,
        batch: usize,
    },
    /// Nothing in flight: the next read of the channel waits for a job.
    Idle,
    /// A cell is running.
    Cell {
        reply: Option<oneshot::Sender<WasmResult<CellOutcome>>>,
        record: CellRecord,
        started: Instant,
    },
    Get {
        reply: Option<oneshot::Sender<WasmResult<Option<String>>>>,
    },
    Names {
        reply: Option<oneshot::Sender<WasmResult<Vec<String>>>>,
    },
    /// `exit` sent; the driver returns from `_start`.
    Exiting,
}

/// The data of one `Store`.
pub(crate) struct GuestState {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) limits: StoreLimits,
    pub(crate) ctl: Control,
    pub(crate) phase: Phase,
    /// Wall-clock limit of what runs now (start-up, a cell, a query); `None` while idle.
    pub(crate) deadline: Option<Instant>,
    /// Set when the deadline passed: the trap that follows is a timeout.
    pub(crate) timed_out: bool,
    inbox: Vec<u8>,
    inbox_pos: usize,
    outbox: Vec<u8>,
    /// Tail of what the interpreter wrote to fd 1 / fd 2 itself (fatal errors at start-up), for error messages.
    pub(crate) diagnostics: Vec<u8>,
}

impl GuestState {
    pub(crate) fn new(wasi: WasiP1Ctx, limits: StoreLimits, ctl: Control) -> Self {
        let mut state = Self {
            wasi,
            limits,
            ctl,
            phase: Phase::Boot,
            deadline: None,
            timed_out: false,
            inbox: Vec::new(),
            inbox_pos: 0,
            outbox: Vec::new(),
            diagnostics: Vec::new(),
        };
        state.deadline = Some(Instant::now() + state.ctl.boot_timeout);
        let header = json!({"op": "init", "context_kind": state.ctl.context_kind.as_str()});
        let context = Arc::clone(&state.ctl.context);
        state.queue_frame(&header, &context);
        state
    }

    pub(crate) fn diagnostics_text(&self) -> String {
        String::from_utf8_lossy(&self.diagnostics).trim().to_owned()
    }

    fn queue_frame(&mut self, header: &serde_json::Value, payload: &[u8]) {
        let header = header.to_string();
        if self.inbox_pos >= self.inbox.len() {
            self.inbox.clear();
            self.inbox_pos = 0;
        }
        self.inbox.reserve(HEADER_LEN + header.len() + payload.len());
        self.inbox.extend_from_slice(&(header.len() as u32).to_le_bytes());
        self.inbox.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.inbox.extend_from_slice(header.as_bytes());
        self.inbox.extend_from_slice(payload);
    }

    fn inbox_empty(&self) -> bool {
        self.inbox_pos >= self.inbox.len()
    }

    fn push_diagnostics(&mut self, bytes: &[u8]) {
        self.diagnostics.extend_from_slice(bytes);
        if self.diagnostics.len() > DIAGNOSTIC_TAIL {
            let cut = self.diagnostics.len() - DIAGNOSTIC_TAIL;
            self.diagnostics.drain(..cut);
        }
    }
}

/// The error a host function or the epoch callback raises to stop the guest when its deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("the time limit was reached")]
pub(crate) struct DeadlineReached;

/// The guest broke the channel protocol (or user code wrote garbage into it).
#[derive(Debug, thiserror::Error)]
#[error("channel protocol error: {0}")]
pub(crate) struct ProtocolError(pub(crate) String);

/// Registers the shadowing `fd_read` / `fd_write` on a linker that already has WASI preview 1.
pub(crate) fn add_channel_to_linker(linker: &mut Linker<GuestState>) -> WasmResult<()> {
    linker.allow_shadowing(true);
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "fd_read",
        |mut caller: Caller<'_, GuestState>, fd: i32, iovs: i32, iovs_len: i32, nread: i32| -> wasmtime::Result<i32> {
            fd_read(&mut caller, fd, iovs as u32, iovs_len as u32, nread as u32)
        },
    )?;
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "fd_write",
        |mut caller: Caller<'_, GuestState>,
         fd: i32,
         iovs: i32,
         iovs_len: i32,
         nwritten: i32|
         -> wasmtime::Result<i32> { fd_write(&mut caller, fd, iovs as u32, iovs_len as u32, nwritten as u32) },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

fn memory(caller: &mut Caller<'_, GuestState>) -> wasmtime::Result<wasmtime::Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => Err(wasmtime::Error::new(ProtocolError("the module exports no memory".to_owned()))),
    }
}

fn read_u32(mem: &[u8], at: u32) -> Option<u32> {
    let at = at as usize;
    let bytes = mem.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn write_u32(mem: &mut [u8], at: u32, value: u32) -> bool {
    let at = at as usize;
    match at.checked_add(4).and_then(|end| mem.get_mut(at..end)) {
        Some(slot) => {
            slot.copy_from_slice(&value.to_le_bytes());
            true
        }
        None => false,
    }
}

/// `(buf, len)` pairs of an iovec array.
fn iovecs(mem: &[u8], iovs: u32, count: u32) -> Option<Vec<(u32, u32)>> {
    (0..count)
        .map(|i| {
            let entry = iovs.checked_add(i.checked_mul(8)?)?;
            Some((read_u32(mem, entry)?, read_u32(mem, entry.checked_add(4)?)?))
        })
        .collect()
}

fn fd_read(caller: &mut Caller<'_, GuestState>, fd: i32, iovs: u32, count: u32, nread: u32) -> wasmtime::Result<i32> {
    if fd != CHANNEL_FD {
        // Nothing else is readable outside the module (no preopens, no sockets; fd 1 and 2 are write-only).
        return Ok(ERRNO_BADF);
    }
    if caller.data().inbox_empty() {
        next_input(caller)?;
    }
    let memory = memory(caller)?;
    let (mem, state) = memory.data_and_store_mut(&mut *caller);
    let Some(vecs) = iovecs(mem, iovs, count) else { return Ok(ERRNO_FAULT) };
    let mut total: usize = 0;
    for (buf, len) in vecs {
        let available = state.inbox.len() - state.inbox_pos;
        if available == 0 {
            break;
        }
        let n = available.min(len as usize);
        let start = buf as usize;
        let Some(dest) = start.checked_add(n).and_then(|end| mem.get_mut(start..end)) else {
            return Ok(ERRNO_FAULT);
        };
        dest.copy_from_slice(&state.inbox[state.inbox_pos..state.inbox_pos + n]);
        state.inbox_pos += n;
        total += n;
    }
    if state.inbox_empty() {
        // Free a big payload (the context) as soon as the guest has it.
        state.inbox = Vec::new();
        state.inbox_pos = 0;
    }
    let Ok(total) = u32::try_from(total) else { return Ok(ERRNO_INVAL) };
    Ok(if write_u32(mem, nread, total) { ERRNO_SUCCESS } else { ERRNO_FAULT })
}

fn fd_write(
    caller: &mut Caller<'_, GuestState>,
    fd: i32,
    iovs: u32,
    count: u32,
    nwritten: u32,
) -> wasmtime::Result<i32> {
    if fd != CHANNEL_FD && fd != 1 && fd != 2 {
        return Ok(ERRNO_BADF);
    }
    let memory = memory(caller)?;
    let (mem, state) = memory.data_and_store_mut(&mut *caller);
    let Some(vecs) = iovecs(mem, iovs, count) else { return Ok(ERRNO_FAULT) };
    let mut total: usize = 0;
    for (buf, len) in vecs {
        let start = buf as usize;
        let Some(src) = start.checked_add(len as usize).and_then(|end| mem.get(start..end)) else {
            return Ok(ERRNO_FAULT);
        };
        if fd == CHANNEL_FD {
            state.outbox.extend_from_slice(src);
        } else {
            state.push_diagnostics(src);
        }
        total += src.len();
    }
    let Ok(total) = u32::try_from(total) else { return Ok(ERRNO_INVAL) };
    if !write_u32(mem, nwritten, total) {
        return Ok(ERRNO_FAULT);
    }
    if fd == CHANNEL_FD {
        while let Some((header, payload)) = take_frame(&mut caller.data_mut().outbox)? {
            handle_frame(caller, header, payload)?;
        }
    }
    Ok(ERRNO_SUCCESS)
}

/// Splits one complete frame off the front of `buf`, if there is one.
fn take_frame(buf: &mut Vec<u8>) -> wasmtime::Result<Option<(serde_json::Value, Vec<u8>)>> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let json_len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let payload_len = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    let end = HEADER_LEN + json_len + payload_len;
    if buf.len() < end {
        return Ok(None);
    }
    let header: serde_json::Value = serde_json::from_slice(&buf[HEADER_LEN..HEADER_LEN + json_len])
        .map_err(|err| wasmtime::Error::new(ProtocolError(format!("bad frame header: {err}"))))?;
    let payload = buf[HEADER_LEN + json_len..end].to_vec();
    buf.drain(..end);
    Ok(Some((header, payload)))
}

fn protocol(message: impl Into<String>) -> wasmtime::Error {
    wasmtime::Error::new(ProtocolError(message.into()))
}

fn set_fuel(caller: &mut Caller<'_, GuestState>, fuel: u64) -> wasmtime::Result<()> {
    if caller.data().ctl.fuel_per_cell.is_some() { caller.set_fuel(fuel) } else { Ok(()) }
}

/// Starts the next cell, either from the replay list or (when idle) the next job; blocks while there is none.
fn next_input(caller: &mut Caller<'_, GuestState>) -> wasmtime::Result<()> {
    if !matches!(caller.data().phase, Phase::Idle) {
        return Err(protocol("the guest waits for input while the host waits for its reply"));
    }
    let job = caller.data().ctl.jobs.recv();
    let now = Instant::now();
    let state = caller.data_mut();
    let timeout = state.ctl.cell_timeout;
    match job {
        Ok(Job::Cell { code, reply }) => {
            state.ctl.cells += 1;
            let number = state.ctl.cells;
            let header = json!({"op": "cell", "n": number, "limit": state.ctl.max_chars});
            state.queue_frame(&header, code.as_bytes());
            state.deadline = Some(now + timeout);
            state.phase = Phase::Cell {
                reply: Some(reply),
                record: CellRecord { number, code, answers: Vec::new() },
                started: now,
            };
            if let Some(fuel) = state.ctl.fuel_per_cell {
                set_fuel(caller, fuel)?;
            }
        }
        Ok(Job::Get { name, reply }) => {
            state.queue_frame(&json!({"op": "get", "name": name}), &[]);
            state.deadline = Some(now + timeout);
            state.phase = Phase::Get { reply: Some(reply) };
        }
        Ok(Job::Names { reply }) => {
            state.queue_frame(&json!({"op": "names"}), &[]);
            state.deadline = Some(now + timeout);
            state.phase = Phase::Names { reply: Some(reply) };
        }
        Err(_) => {
            // The session was closed or dropped.
            state.queue_frame(&json!({"op": "exit"}), &[]);
            state.deadline = Some(now + timeout);
            state.phase = Phase::Exiting;
        }
    }
    Ok(())
}

/// Sends the replay cell `index` (or, past the end of the history, becomes idle).
fn start_replay(caller: &mut Caller<'_, GuestState>, index: usize) -> wasmtime::Result<()> {
    let state = caller.data_mut();
    let Some(record) = state.ctl.history.get(index) else {
        become_idle(caller)?;
        return Ok(());
    };
    let header = json!({"op": "cell", "n": record.number, "limit": state.ctl.max_chars});
    let code = record.code.clone();
    state.queue_frame(&header, code.as_bytes());
    state.deadline = Some(Instant::now() + state.ctl.cell_timeout);
    state.phase = Phase::Replay { index, batch: 0 };
    if let Some(fuel) = state.ctl.fuel_per_cell {
        set_fuel(caller, fuel)?;
    }
    Ok(())
}

fn become_idle(caller: &mut Caller<'_, GuestState>) -> wasmtime::Result<()> {
    let state = caller.data_mut();
    state.phase = Phase::Idle;
    state.deadline = None;
    if let Some(reply) = state.ctl.boot_reply.take()
        && let Some(info) = state.ctl.info.clone()
    {
        drop(reply.send(Ok(info)));
    }
    if let Some(owed) = state.ctl.owed.take() {
        owed.deliver();
    }
    set_fuel(caller, UNMETERED_FUEL)
}

#[derive(Deserialize)]
struct ReadyFrame {
    python_type: String,
    total_chars: u64,
    chunk_lengths: Vec<u64>,
    chunk_count: u64,
}

#[derive(Deserialize)]
struct DoneFrame {
    error: Option<CellError>,
    dropped: u64,
    answer: Option<String>,
    final_var: Option<FinalVar>,
    stdout_len: usize,
    stderr_len: usize,
}

#[derive(Deserialize)]
struct SubFrame {
    kind: String,
    model: Option<String>,
    lens: Vec<usize>,
}

fn parse<T: serde::de::DeserializeOwned>(header: serde_json::Value) -> wasmtime::Result<T> {
    serde_json::from_value(header).map_err(|err| protocol(format!("bad frame: {err}")))
}

fn split_utf8(payload: &[u8], lens: &[usize]) -> wasmtime::Result<Vec<String>> {
    let mut out = Vec::with_capacity(lens.len());
    let mut start = 0usize;
    for &len in lens {
        let end =
            start.checked_add(len).filter(|&end| end <= payload.len()).ok_or_else(|| protocol("short payload"))?;
        out.push(String::from_utf8_lossy(&payload[start..end]).into_owned());
        start = end;
    }
    Ok(out)
}

fn handle_frame(
    caller: &mut Caller<'_, GuestState>,
    header: serde_json::Value,
    payload: Vec<u8>,
) -> wasmtime::Result<()> {
    let op = header.get("op").and_then(|op| op.as_str()).unwrap_or_default().to_owned();
    match op.as_str() {
        "ready" => {
            if !matches!(caller.data().phase, Phase::Boot) {
                return Err(protocol("unexpected ready frame"));
            }
            let ready: ReadyFrame = parse(header)?;
            let mut chunk_lengths = ready.chunk_lengths;
            chunk_lengths.truncate(ContextInfo::MAX_CHUNKS_LISTED);
            let info = ContextInfo {
                python_type: ready.python_type,
                total_chars: ready.total_chars,
                chunk_lengths,
                chunk_count: ready.chunk_count,
            };
            caller.data_mut().ctl.info.get_or_insert(info);
            start_replay(caller, 0)
        }
        "init_error" => {
            if !matches!(caller.data().phase, Phase::Boot) {
                return Err(protocol("unexpected init_error frame"));
            }
            let message = header.get("message").and_then(|m| m.as_str()).unwrap_or("unknown error").to_owned();
            let state = caller.data_mut();
            let kind = match state.ctl.context_kind {
                ContextKind::Text => "UTF-8 text",
                ContextKind::Json => "JSON",
            };
            let err = WasmError::InvalidInput(format!("the context is not valid {kind}: {message}"));
            if let Some(reply) = state.ctl.boot_reply.take() {
                drop(reply.send(Err(err)));
            } else if let Some(owed) = state.ctl.owed.take() {
                owed.fail("the sandbox could not be restarted: the context no longer loads");
            }
            // The driver returns from `_start` after this frame.
            state.phase = Phase::Exiting;
            Ok(())
        }
        "sub" => answer_sub_calls(caller, header, &payload),
        "done" => {
            let done: DoneFrame = parse(header)?;
            let stdout_end = done.stdout_len.min(payload.len());
            let stderr_end = stdout_end.saturating_add(done.stderr_len).min(payload.len());
            let phase = std::mem::replace(&mut caller.data_mut().phase, Phase::Idle);
            match phase {
                Phase::Cell { reply, record, started } => {
                    let outcome = CellOutcome {
                        stdout: String::from_utf8_lossy(&payload[..stdout_end]).into_owned(),
                        stderr: String::from_utf8_lossy(&payload[stdout_end..stderr_end]).into_owned(),
                        error: done.error,
                        duration: started.elapsed(),
                        dropped_chars: done.dropped,
                        final_var: done.final_var,
                        answer: done.answer,
                    };
                    caller.data_mut().ctl.history.push(record);
                    become_idle(caller)?;
                    if let Some(reply) = reply {
                        drop(reply.send(Ok(outcome)));
                    }
                    Ok(())
                }
                Phase::Replay { index, .. } => start_replay(caller, index + 1),
                _ => Err(protocol("unexpected done frame")),
            }
        }
        "value" => {
            let value = header.get("value").and_then(|v| v.as_str()).map(str::to_owned);
            match std::mem::replace(&mut caller.data_mut().phase, Phase::Idle) {
                Phase::Get { reply } => {
                    become_idle(caller)?;
                    if let Some(reply) = reply {
                        drop(reply.send(Ok(value)));
                    }
                    Ok(())
                }
                _ => Err(protocol("unexpected value frame")),
            }
        }
        "names" => {
            let names: Vec<String> = header
                .get("names")
                .and_then(|n| n.as_array())
                .map(|names| names.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            match std::mem::replace(&mut caller.data_mut().phase, Phase::Idle) {
                Phase::Names { reply } => {
                    become_idle(caller)?;
                    if let Some(reply) = reply {
                        drop(reply.send(Ok(names)));
                    }
                    Ok(())
                }
                _ => Err(protocol("unexpected names frame")),
            }
        }
        other => Err(protocol(format!("unknown frame {other:?}"))),
    }
}

/// Serves one `llm_query*` / `rlm_query*` batch: from the host (a live cell) or from the log (a replayed cell).
fn answer_sub_calls(
    caller: &mut Caller<'_, GuestState>,
    header: serde_json::Value,
    payload: &[u8],
) -> wasmtime::Result<()> {
    let sub: SubFrame = parse(header)?;
    let prompts = split_utf8(payload, &sub.lens)?;
    let count = prompts.len();
    let kind = match sub.kind.as_str() {
        "llm" => SubCallKind::Llm,
        "rlm" => SubCallKind::Rlm,
        other => return Err(protocol(format!("unknown sub-call kind {other:?}"))),
    };
    let state = caller.data_mut();
    let answers: Vec<String> = match &mut state.phase {
        Phase::Replay { index, batch } => {
            let logged = state.ctl.history.get(*index).and_then(|record| record.answers.get(*batch)).cloned();
            *batch += 1;
            logged.unwrap_or_else(|| {
                vec![
                    "Error: this sub-call was not recorded, so it cannot be replayed after the restart".to_owned();
                    count
                ]
            })
        }
        Phase::Cell { record, .. } => {
            let calls: Vec<SubCall> =
                prompts.into_iter().map(|prompt| SubCall { kind, prompt, model: sub.model.clone() }).collect();
            let host = Arc::clone(&state.ctl.host);
            let deadline = state.deadline.map(tokio::time::Instant::from_std);
            let results = if count == 0 {
                Some(Vec::new())
            } else {
                // This is the session's own thread (not a runtime worker), so blocking on the runtime is fine. A
                // runtime that is shutting down (or a host that panics) must not unwind through the guest.
                let handle = state.ctl.handle.clone();
                let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                    handle.block_on(async move {
                        match deadline {
                            Some(deadline) => tokio::time::timeout_at(deadline, host.sub_calls(calls)).await.ok(),
                            None => Some(host.sub_calls(calls).await),
                        }
                    })
                }));
                match waited {
                    Ok(results) => results,
                    Err(_) => Some(vec![Err("the host failed while serving this sub-call".to_owned()); count]),
                }
            };
            let Some(results) = results else {
                // The cell ran out of time while waiting: stop it like any other timeout.
                state.timed_out = true;
                return Err(wasmtime::Error::new(DeadlineReached));
            };
            let mut answers: Vec<String> = results
                .into_iter()
                .take(count)
                .map(|answer| answer.unwrap_or_else(|message| format!("Error: {message}")))
                .collect();
            while answers.len() < count {
                answers.push("Error: the host returned no answer for this prompt".to_owned());
            }
            record.answers.push(answers.clone());
            answers
        }
        _ => return Err(protocol("sub-call outside of a cell")),
    };
    let mut lens = Vec::with_capacity(answers.len());
    let mut joined = Vec::with_capacity(answers.iter().map(String::len).sum());
    for answer in &answers {
        lens.push(answer.len());
        joined.extend_from_slice(answer.as_bytes());
    }
    caller.data_mut().queue_frame(&json!({"op": "answers", "lens": lens}), &joined);
    Ok(())
}

/// The epoch callback: stops the guest once the current deadline has passed; otherwise checks again later.
pub(crate) fn on_epoch(state: &mut GuestState) -> wasmtime::Result<wasmtime::UpdateDeadline> {
    const TICK_MS: u128 = crate::engine::EPOCH_TICK.as_millis();
    match state.deadline {
        None => Ok(wasmtime::UpdateDeadline::Continue(100)),
        Some(deadline) => {
            let now = Instant::now();
            if now >= deadline {
                state.timed_out = true;
                return Err(wasmtime::Error::new(DeadlineReached));
            }
            let remaining_ticks = (deadline - now).as_millis() / TICK_MS.max(1);
            Ok(wasmtime::UpdateDeadline::Continue(remaining_ticks.clamp(1, 100) as u64))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_only_when_complete() -> wasmtime::Result<()> {
        let header = br#"{"op":"x"}"#;
        let mut buf = Vec::new();
        buf.extend_from_slice(&(header.len() as u32).to_le_bytes());
        buf.extend_from_slice(&3u32.to_le_bytes());
        buf.extend_from_slice(header);
        buf.extend_from_slice(b"ab");
        assert!(take_frame(&mut buf)?.is_none());
        buf.extend_from_slice(b"c");
        buf.extend_from_slice(b"rest");
        let (h, p) = take_frame(&mut buf)?.ok_or_else(|| protocol("no frame"))?;
        assert_eq!(h["op"], "x");
        assert_eq!(p, b"abc");
        assert_eq!(buf, b"rest");
        Ok(())
    }

    #[test]
    fn iovecs_are_bounds_checked() {
        let mut mem = vec![0u8; 32];
        assert!(write_u32(&mut mem, 0, 16));
        assert!(write_u32(&mut mem, 4, 5));
        assert_eq!(iovecs(&mem, 0, 1), Some(vec![(16, 5)]));
        assert_eq!(iovecs(&mem, 28, 1), None);
        assert!(!write_u32(&mut mem, 30, 1));
        assert_eq!(read_u32(&mem, u32::MAX), None);
    }

    #[test]
    fn payloads_split_by_lengths() -> wasmtime::Result<()> {
        assert_eq!(split_utf8("héllo!".as_bytes(), &[6, 1])?, vec!["héllo".to_owned(), "!".to_owned()]);
        assert!(split_utf8(b"ab", &[3]).is_err());
        Ok(())
    }
}
