//! The host side of one sandboxed interpreter: the store data, the channels to the driver (served by our own
//! `fd_read` / `fd_write` imports), and the state machine that turns frames into cell outcomes and sub-calls.
//!
//! Everything here runs on the session's dedicated OS thread, inside the driver's single long call (`_main`): the
//! guest asks for input by reading the channel, and that read is where the host waits for the next job.
//!
//! Nothing the guest sends is believed on its word (see docs/security.md):
//! * a cell's stdout and stderr are what the host itself received on fd 1 and fd 2 while the cell ran, capped here;
//! * control frames (`done`, `value`, `names`) count only when the driver's main loop wrote them, recognised by the
//!   wasm call stack ([`crate::stack`]); anything else on the channel (user code writing to or reading from fd 0 while
//!   a job runs) stops the sandbox;
//! * every size the guest announces is checked against [`ChannelLimits`] before it is buffered;
//! * a cell's time limit holds until the main loop asks for its next job, whatever frames arrived before.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rlm_protocol::{CellError, CellOutcome, ContextInfo, FinalVar, SubCall, SubCallHost, SubCallKind};
use serde::Deserialize;
use serde_json::json;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use wasmtime::{Caller, Extern, Linker, StoreLimits};
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::error::{WasmError, WasmResult};
use crate::frame::{self, Frame, HEADER_LEN};
use crate::sched::{CpuScheduler, CpuTurn};
use crate::stack::{Calibration, MainLoop, StackSample};

/// The file descriptor of the control channel inside the guest: standard input, used in both directions. Our own
/// `fd_read` / `fd_write` serve it (WASI's stdin stays closed). (A descriptor outside WASI's table would be cleaner,
/// but the module's embedded file system layer (wasi-vfs) rejects unknown descriptors before they reach the host.)
/// The driver replaces `sys.stdin`, so user code does not read it by accident.
pub(crate) const CHANNEL_FD: i32 = 0;

/// How much of the interpreter's own stdout/stderr (fd 1 and 2, outside any cell) is kept for diagnostics.
const DIAGNOSTIC_TAIL: usize = 8 * 1024;

/// Fuel while no cell runs (start-up, between cells): effectively unlimited, the epoch deadline bounds it.
const UNMETERED_FUEL: u64 = u64::MAX / 4;

/// How often a thread blocked for the next job checks whether its session was aborted.
const ABORT_POLL: Duration = Duration::from_millis(50);

// WASI preview 1 errno values.
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;

/// Caps on what may leave the guest, enforced by the host (the driver checks them first, to give the model a clear
/// Python exception; a guest that goes past them anyway is stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelLimits {
    /// Largest single sub-call prompt, in UTF-8 bytes.
    pub prompt_bytes: usize,
    /// Most prompts in one `llm_query_batched` / `rlm_query_batched` call.
    pub batch_len: usize,
    /// Largest batch, all prompts together, in bytes.
    pub batch_bytes: usize,
    /// Largest answer (`answer["content"]`, `FINAL(...)`, `FINAL_VAR`) and variable value, in bytes.
    pub answer_bytes: usize,
    /// Most bytes one cell may send on the control channel in total (sub-call prompts, its reply).
    pub cell_bytes: u64,
}

impl Default for ChannelLimits {
    fn default() -> Self {
        Self {
            prompt_bytes: 16 << 20,
            batch_len: 10_000,
            batch_bytes: 32 << 20,
            answer_bytes: 4 << 20,
            cell_bytes: 256 << 20,
        }
    }
}

impl ChannelLimits {
    fn max_payload(&self) -> usize {
        self.batch_bytes.max(self.answer_bytes.saturating_mul(2))
    }

    fn to_json(self) -> serde_json::Value {
        json!({
            "prompt_bytes": self.prompt_bytes,
            "batch_len": self.batch_len,
            "batch_bytes": self.batch_bytes,
            "answer_bytes": self.answer_bytes,
        })
    }
}

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
    /// How long it ran, which is what replaying it will cost.
    pub(crate) duration: Duration,
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

/// A reply owed to the async side: held until the driver asks for its next job (so the job's time limit covers
/// everything the guest does until then), or until the sandbox has been rebuilt after a trap.
#[derive(Debug)]
pub(crate) enum Owed {
    Cell(oneshot::Sender<WasmResult<CellOutcome>>, CellOutcome),
    Get(oneshot::Sender<WasmResult<Option<String>>>, WasmResult<Option<String>>),
    Names(oneshot::Sender<WasmResult<Vec<String>>>, WasmResult<Vec<String>>),
}

impl Owed {
    pub(crate) fn deliver(self) {
        // A receiver that is gone (the caller stopped waiting) is not an error.
        match self {
            Self::Cell(reply, outcome) => drop(reply.send(Ok(outcome))),
            Self::Get(reply, result) => drop(reply.send(result)),
            Self::Names(reply, result) => drop(reply.send(result)),
        }
    }

    pub(crate) fn fail(self, message: &str) {
        let dead = || WasmError::Dead(message.to_owned());
        match self {
            Self::Cell(reply, _) => drop(reply.send(Err(dead()))),
            Self::Get(reply, _) => drop(reply.send(Err(dead()))),
            Self::Names(reply, _) => drop(reply.send(Err(dead()))),
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
    pub(crate) limits: ChannelLimits,
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
    /// Set by [`rlm_protocol::AbortHandle`]: the guest is stopped at the next epoch tick and never rebuilt.
    pub(crate) aborted: Arc<AtomicBool>,
    pub(crate) cpu: Arc<CpuScheduler>,
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

impl Control {
    pub(crate) fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Relaxed)
    }
}

/// What the host is waiting for from the guest.
#[derive(Debug)]
pub(crate) enum Phase {
    /// The driver is starting: `init` sent; `calibrate`, `probe` and `ready` expected.
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
    /// The driver replied; the reply goes out when its main loop asks for the next job.
    Replied(Owed),
    /// `exit` sent; the driver returns.
    Exiting,
}

/// What a cell wrote to fd 1 and fd 2, capped on this side.
#[derive(Debug, Default)]
pub(crate) struct CellOutput {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    kept_chars: usize,
    dropped_chars: u64,
    /// Bytes the cell sent on the control channel so far.
    channel_bytes: u64,
}

impl CellOutput {
    fn take(&mut self, fd: i32, bytes: &[u8], max_chars: usize) {
        let room = max_chars.saturating_sub(self.kept_chars);
        let keep = frame::prefix_with_chars(bytes, room);
        let kept = frame::utf8_chars(&bytes[..keep]);
        self.kept_chars += kept;
        self.dropped_chars += frame::utf8_chars(&bytes[keep..]) as u64;
        let target = if fd == 1 { &mut self.stdout } else { &mut self.stderr };
        target.extend_from_slice(&bytes[..keep]);
    }
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
    /// Set when the guest broke the channel's rules: the trap that follows says so.
    pub(crate) violation: Option<String>,
    /// This thread's share of the CPU: held while the guest runs, given up while it waits.
    pub(crate) turn: Option<CpuTurn>,
    inbox: Vec<u8>,
    inbox_pos: usize,
    outbox: Vec<u8>,
    calibration: Option<Calibration>,
    main_loop: Option<MainLoop>,
    output: CellOutput,
    /// Tail of what the interpreter wrote to fd 1 / fd 2 outside of cells (fatal errors at start-up).
    pub(crate) diagnostics: Vec<u8>,
    /// Set only in the store that builds a pre-initialised snapshot (`snapshot.rs`).
    pub(crate) snapshot: Option<crate::snapshot::Capture>,
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
            violation: None,
            turn: None,
            inbox: Vec::new(),
            inbox_pos: 0,
            outbox: Vec::new(),
            calibration: Some(Calibration::default()),
            main_loop: None,
            output: CellOutput::default(),
            diagnostics: Vec::new(),
            snapshot: None,
        };
        state.deadline = Some(Instant::now() + state.ctl.boot_timeout);
        let header = json!({
            "op": "init",
            "context_kind": state.ctl.context_kind.as_str(),
            "limits": state.ctl.limits.to_json(),
        });
        let context = Arc::clone(&state.ctl.context);
        state.queue_frame(&header, &context);
        state
    }

    pub(crate) fn diagnostics_text(&self) -> String {
        String::from_utf8_lossy(&self.diagnostics).trim().to_owned()
    }

    fn queue_frame(&mut self, header: &serde_json::Value, payload: &[u8]) {
        if self.inbox_pos >= self.inbox.len() {
            self.inbox.clear();
            self.inbox_pos = 0;
        }
        frame::push_frame(&mut self.inbox, header, payload);
    }

    fn inbox_empty(&self) -> bool {
        self.inbox_pos >= self.inbox.len()
    }

    fn push_diagnostics(&mut self, bytes: &[u8]) {
        let bytes = &bytes[bytes.len().saturating_sub(DIAGNOSTIC_TAIL)..];
        self.diagnostics.extend_from_slice(bytes);
        if self.diagnostics.len() > DIAGNOSTIC_TAIL {
            let cut = self.diagnostics.len() - DIAGNOSTIC_TAIL;
            self.diagnostics.drain(..cut);
        }
    }

    /// Gives up the CPU (before blocking); the thread must [`GuestState::take_cpu`] before the guest runs again.
    pub(crate) fn give_up_cpu(&mut self) {
        self.turn = None;
    }

    pub(crate) fn take_cpu(&mut self) {
        if self.turn.is_none() {
            self.turn = Some(self.ctl.cpu.take_turn(&self.ctl.aborted));
        }
    }
}

/// The error a host function or the epoch callback raises to stop the guest when its deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("the time limit was reached")]
pub(crate) struct DeadlineReached;

/// The session was aborted from outside.
#[derive(Debug, thiserror::Error)]
#[error("the session was aborted")]
pub(crate) struct Aborted;

/// The guest broke the channel protocol (user code wrote to the control channel, or the driver failed).
#[derive(Debug, thiserror::Error)]
#[error("channel protocol error: {0}")]
pub(crate) struct ProtocolError(pub(crate) String);

fn violation(caller: &mut Caller<'_, GuestState>, message: impl Into<String>) -> wasmtime::Error {
    let message = message.into();
    caller.data_mut().violation = Some(message.clone());
    wasmtime::Error::new(ProtocolError(message))
}

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
        // The guest asks for its next job. Whoever reads, a reply counts only if the main loop wrote it (checked at the
        // write), and a read while a job runs stops the sandbox (`next_input`).
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
    match fd {
        CHANNEL_FD => channel_write(caller, iovs, count, nwritten),
        1 | 2 => output_write(caller, fd, iovs, count, nwritten),
        _ => Ok(ERRNO_BADF),
    }
}

/// fd 1 / fd 2: captured for the running cell (capped here), dropped during a replay, kept as diagnostics otherwise.
/// Always reports everything as written, so a flood costs the guest its time and nothing else.
fn output_write(
    caller: &mut Caller<'_, GuestState>,
    fd: i32,
    iovs: u32,
    count: u32,
    nwritten: u32,
) -> wasmtime::Result<i32> {
    let memory = memory(caller)?;
    let (mem, state) = memory.data_and_store_mut(&mut *caller);
    let Some(vecs) = iovecs(mem, iovs, count) else { return Ok(ERRNO_FAULT) };
    let mut total: usize = 0;
    for (buf, len) in vecs {
        let start = buf as usize;
        let Some(src) = start.checked_add(len as usize).and_then(|end| mem.get(start..end)) else {
            return Ok(ERRNO_FAULT);
        };
        match state.phase {
            Phase::Cell { .. } => state.output.take(fd, src, state.ctl.max_chars),
            Phase::Replay { .. } => {}
            _ => state.push_diagnostics(src),
        }
        total += src.len();
    }
    let Ok(total) = u32::try_from(total) else { return Ok(ERRNO_INVAL) };
    Ok(if write_u32(mem, nwritten, total) { ERRNO_SUCCESS } else { ERRNO_FAULT })
}

/// The control channel. Accepts at most the rest of the frame being assembled (a short write; the guest writes the
/// remainder with another call), so the host never holds more than one frame, whose size was checked as soon as its
/// 8-byte prefix arrived.
fn channel_write(caller: &mut Caller<'_, GuestState>, iovs: u32, count: u32, nwritten: u32) -> wasmtime::Result<i32> {
    // A reply must be written whole by one call (the main loop's are): bytes left by an earlier call taint it.
    let started_here = caller.data().outbox.is_empty();
    let memory = memory(caller)?;
    let (mem, state) = memory.data_and_store_mut(&mut *caller);
    let Some(vecs) = iovecs(mem, iovs, count) else { return Ok(ERRNO_FAULT) };
    let max_payload = state.ctl.limits.max_payload();
    let mut accepted: usize = 0;
    let mut refused = None;
    'copy: for (buf, len) in vecs {
        let start = buf as usize;
        let Some(mut src) = start.checked_add(len as usize).and_then(|end| mem.get(start..end)) else {
            return Ok(ERRNO_FAULT);
        };
        while !src.is_empty() {
            let end = match frame::announced_len(&state.outbox, max_payload) {
                Ok(Some(end)) => end,
                Ok(None) => HEADER_LEN,
                Err(err) => {
                    refused = Some(err.to_string());
                    break 'copy;
                }
            };
            let wanted = end - state.outbox.len();
            if wanted == 0 {
                break 'copy;
            }
            let n = wanted.min(src.len());
            state.outbox.extend_from_slice(&src[..n]);
            src = &src[n..];
            accepted += n;
        }
    }
    let Ok(written) = u32::try_from(accepted) else { return Ok(ERRNO_INVAL) };
    if !write_u32(mem, nwritten, written) {
        return Ok(ERRNO_FAULT);
    }
    if let Some(message) = refused {
        return Err(violation(caller, format!("the guest announced {message}")));
    }
    let state = caller.data_mut();
    if matches!(state.phase, Phase::Cell { .. }) {
        state.output.channel_bytes += accepted as u64;
        if state.output.channel_bytes > state.ctl.limits.cell_bytes {
            let limit = state.ctl.limits.cell_bytes;
            return Err(violation(caller, format!("the cell sent more than {limit} bytes to the host")));
        }
    }
    let taken = frame::take_frame(&mut state.outbox, max_payload);
    match taken {
        Ok(Some(frame)) => {
            // Only frames whose sender matters pay for a look at the stack (sub-calls may come from anywhere).
            let booting = matches!(state.phase, Phase::Boot);
            let sample =
                (booting || matches!(frame.op(), "done" | "value" | "names")).then(|| StackSample::capture(&*caller));
            let state = caller.data();
            let trusted = match (&state.main_loop, &sample) {
                (Some(main), Some(sample)) => started_here && main.is_main_loop(sample),
                // Before `ready`, no user code exists yet.
                (None, _) => booting,
                (Some(_), None) => false,
            };
            handle_frame(caller, frame, trusted, sample.as_ref())?;
        }
        Ok(None) => {}
        Err(err) => return Err(violation(caller, format!("the guest sent {err}"))),
    }
    Ok(ERRNO_SUCCESS)
}

fn set_fuel(caller: &mut Caller<'_, GuestState>, fuel: u64) -> wasmtime::Result<()> {
    if caller.data().ctl.fuel_per_cell.is_some() { caller.set_fuel(fuel) } else { Ok(()) }
}

/// The driver's main loop asks for its next job: delivers the reply it gave to the previous one, then waits for a
/// job (or a replay cell) and starts it. Blocks while there is none.
fn next_input(caller: &mut Caller<'_, GuestState>) -> wasmtime::Result<()> {
    match std::mem::replace(&mut caller.data_mut().phase, Phase::Idle) {
        Phase::Replied(owed) => {
            become_idle(caller)?;
            owed.deliver();
        }
        Phase::Idle => {}
        other => {
            caller.data_mut().phase = other;
            return Err(violation(caller, "the guest asked for a job while the host waits for its reply"));
        }
    }
    let state = caller.data_mut();
    state.give_up_cpu();
    let job = loop {
        match state.ctl.jobs.recv_timeout(ABORT_POLL) {
            Ok(job) => break Ok(job),
            Err(RecvTimeoutError::Timeout) if !state.ctl.is_aborted() => continue,
            Err(RecvTimeoutError::Timeout) => break Err(true),
            Err(RecvTimeoutError::Disconnected) => break Err(false),
        }
    };
    if matches!(job, Err(true)) {
        return Err(wasmtime::Error::new(Aborted));
    }
    state.take_cpu();
    let now = Instant::now();
    let timeout = state.ctl.cell_timeout;
    match job {
        Ok(Job::Cell { code, reply }) => {
            state.ctl.cells += 1;
            let number = state.ctl.cells;
            let header = json!({"op": "cell", "n": number, "limit": state.ctl.max_chars});
            state.queue_frame(&header, code.as_bytes());
            state.deadline = Some(now + timeout);
            state.output = CellOutput::default();
            state.phase = Phase::Cell {
                reply: Some(reply),
                record: CellRecord { number, code, answers: Vec::new(), duration: Duration::ZERO },
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
        return become_idle(caller);
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
struct DoneFinalVar {
    name: String,
    len: Option<usize>,
}

#[derive(Deserialize)]
struct DoneFrame {
    error: Option<CellError>,
    dropped: u64,
    answer_len: Option<usize>,
    final_var: Option<DoneFinalVar>,
}

#[derive(Deserialize)]
struct ValueFrame {
    len: Option<usize>,
}

#[derive(Deserialize)]
struct NamesFrame {
    names: Vec<String>,
}

#[derive(Deserialize)]
struct SubFrame {
    kind: String,
    model: Option<String>,
    lens: Vec<usize>,
}

fn parse<T: serde::de::DeserializeOwned>(
    caller: &mut Caller<'_, GuestState>,
    frame: Frame,
) -> wasmtime::Result<(T, Vec<u8>)> {
    match serde_json::from_value(serde_json::Value::Object(frame.header)) {
        Ok(parsed) => Ok((parsed, frame.payload)),
        Err(err) => Err(violation(caller, format!("a malformed frame: {err}"))),
    }
}

/// Splits a payload at `len` bytes after checking the guest's claim against the payload and the cap.
fn cut(payload: &[u8], at: usize, len: Option<usize>, cap: usize) -> Option<(Option<String>, usize)> {
    match len {
        None => Some((None, at)),
        Some(len) if len <= cap => {
            let end = at.checked_add(len).filter(|&end| end <= payload.len())?;
            Some((Some(String::from_utf8_lossy(&payload[at..end]).into_owned()), end))
        }
        Some(_) => None,
    }
}

fn handle_frame(
    caller: &mut Caller<'_, GuestState>,
    frame: Frame,
    trusted: bool,
    sample: Option<&StackSample>,
) -> wasmtime::Result<()> {
    let op = frame.op().to_owned();
    let booting = matches!(caller.data().phase, Phase::Boot);
    match op.as_str() {
        "snapshot" | "calibrate" | "probe" | "ready" | "init_error" if !booting => {
            Err(violation(caller, format!("a {op:?} frame after start-up")))
        }
        "snapshot" => {
            // Only a store building a snapshot listens (no user code exists at that point); otherwise ignored.
            if caller.data().snapshot.is_some() {
                let (claim, _) = parse(caller, frame)?;
                if let Some(capture) = caller.data_mut().snapshot.as_mut() {
                    capture.claim = Some(claim);
                }
            }
            Ok(())
        }
        "calibrate" => {
            if let (Some(calibration), Some(sample)) = (caller.data_mut().calibration.as_mut(), sample) {
                calibration.main_loop(sample);
            }
            Ok(())
        }
        "probe" => {
            if let (Some(calibration), Some(sample)) = (caller.data_mut().calibration.as_mut(), sample) {
                calibration.nested(sample.clone());
            }
            Ok(())
        }
        "ready" => {
            let calibration = caller.data_mut().calibration.take().unwrap_or_default();
            let main = match calibration.finish() {
                Ok(main) => main,
                Err(reason) => return Err(violation(caller, format!("cannot recognise the driver's stack: {reason}"))),
            };
            if !sample.is_some_and(|sample| main.is_main_loop(sample)) {
                return Err(violation(caller, "the ready frame did not come from the driver's main loop"));
            }
            caller.data_mut().main_loop = Some(main);
            let (ready, _): (ReadyFrame, _) = parse(caller, frame)?;
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
            let message = frame.header.get("message").and_then(|m| m.as_str()).unwrap_or("unknown error").to_owned();
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
            // The driver returns after this frame.
            state.phase = Phase::Exiting;
            Ok(())
        }
        "sub" => answer_sub_calls(caller, frame),
        "done" | "value" | "names" if !trusted => {
            Err(violation(caller, format!("code in the cell wrote a {op:?} frame to the sandbox's control channel")))
        }
        "done" | "value" | "names" if !caller.data().inbox_empty() => {
            Err(violation(caller, "the driver replied before reading the host's last frame"))
        }
        "done" => finish_cell(caller, frame),
        "value" => {
            let (value, payload): (ValueFrame, _) = parse(caller, frame)?;
            let cap = caller.data().ctl.limits.answer_bytes;
            let Some((value, end)) = cut(&payload, 0, value.len, cap) else {
                return Err(violation(caller, "a value frame whose length does not match its payload"));
            };
            if end != payload.len() {
                return Err(violation(caller, "a value frame with extra payload"));
            }
            match std::mem::replace(&mut caller.data_mut().phase, Phase::Idle) {
                Phase::Get { reply: Some(reply) } => {
                    caller.data_mut().phase = Phase::Replied(Owed::Get(reply, Ok(value)));
                    Ok(())
                }
                _ => Err(violation(caller, "an unexpected value frame")),
            }
        }
        "names" => {
            let (names, _): (NamesFrame, _) = parse(caller, frame)?;
            match std::mem::replace(&mut caller.data_mut().phase, Phase::Idle) {
                Phase::Names { reply: Some(reply) } => {
                    caller.data_mut().phase = Phase::Replied(Owed::Names(reply, Ok(names.names)));
                    Ok(())
                }
                _ => Err(violation(caller, "an unexpected names frame")),
            }
        }
        other => Err(violation(caller, format!("an unknown frame {other:?}"))),
    }
}

/// A `done` frame from the main loop: the cell's outcome is the output the host captured plus what the frame says
/// (error, answer, `FINAL_VAR`), each checked against the caps.
fn finish_cell(caller: &mut Caller<'_, GuestState>, frame: Frame) -> wasmtime::Result<()> {
    let (done, payload): (DoneFrame, _) = parse(caller, frame)?;
    let cap = caller.data().ctl.limits.answer_bytes;
    let parts = cut(&payload, 0, done.answer_len, cap).and_then(|(answer, at)| {
        let var_len = done.final_var.as_ref().and_then(|var| var.len);
        let (value, end) = cut(&payload, at, var_len, cap)?;
        (end == payload.len()).then_some((answer, value))
    });
    let Some((answer, value)) = parts else {
        return Err(violation(caller, "a done frame whose lengths do not match its payload or exceed the caps"));
    };
    let final_var = done.final_var.map(|var| FinalVar { name: var.name.chars().take(200).collect(), value });
    let state = caller.data_mut();
    match std::mem::replace(&mut state.phase, Phase::Idle) {
        Phase::Cell { reply, mut record, started } => {
            let output = std::mem::take(&mut state.output);
            let outcome = CellOutcome {
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
                error: done.error,
                duration: started.elapsed(),
                dropped_chars: output.dropped_chars.saturating_add(done.dropped),
                final_var,
                answer,
            };
            record.duration = outcome.duration;
            state.ctl.history.push(record);
            match reply {
                Some(reply) => state.phase = Phase::Replied(Owed::Cell(reply, outcome)),
                None => state.phase = Phase::Idle,
            }
            Ok(())
        }
        Phase::Replay { index, .. } => start_replay(caller, index + 1),
        other => {
            caller.data_mut().phase = other;
            Err(violation(caller, "an unexpected done frame"))
        }
    }
}

/// Serves one `llm_query*` / `rlm_query*` batch: from the host (a live cell) or from the log (a replayed cell).
fn answer_sub_calls(caller: &mut Caller<'_, GuestState>, frame: Frame) -> wasmtime::Result<()> {
    let (sub, payload): (SubFrame, _) = parse(caller, frame)?;
    let limits = caller.data().ctl.limits;
    if sub.lens.len() > limits.batch_len {
        let message = format!("a batch of {} prompts (the limit is {})", sub.lens.len(), limits.batch_len);
        return Err(violation(caller, message));
    }
    if let Some(len) = sub.lens.iter().find(|&&len| len > limits.prompt_bytes) {
        let message = format!("a prompt of {len} bytes (the limit is {})", limits.prompt_bytes);
        return Err(violation(caller, message));
    }
    let Some(prompts) = frame::split_utf8(&payload, &sub.lens) else {
        return Err(violation(caller, "a sub-call frame whose lengths do not match its payload"));
    };
    drop(payload);
    let count = prompts.len();
    let kind = match sub.kind.as_str() {
        "llm" => SubCallKind::Llm,
        "rlm" => SubCallKind::Rlm,
        other => return Err(violation(caller, format!("an unknown sub-call kind {other:?}"))),
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
        Phase::Cell { .. } => {
            let calls: Vec<SubCall> = prompts
                .into_iter()
                .map(|prompt| SubCall { kind, prompt: prompt.into(), model: sub.model.clone() })
                .collect();
            let results = if count == 0 { Some(Vec::new()) } else { wait_for_host(state, calls) };
            let Some(results) = results else {
                if state.ctl.is_aborted() {
                    return Err(wasmtime::Error::new(Aborted));
                }
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
            if let Phase::Cell { record, .. } = &mut state.phase {
                record.answers.push(answers.clone());
            }
            answers
        }
        _ => return Err(violation(caller, "a sub-call outside of a cell")),
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

/// Blocks this session's thread (not a runtime worker, so blocking on the runtime is fine) until the host answered,
/// the cell's deadline passed or the session was aborted (`None` for the last two). The CPU is given up meanwhile.
fn wait_for_host(state: &mut GuestState, calls: Vec<SubCall>) -> Option<Vec<rlm_protocol::SubCallResult>> {
    let count = calls.len();
    let host = Arc::clone(&state.ctl.host);
    let deadline = state.deadline.map(tokio::time::Instant::from_std);
    let aborted = Arc::clone(&state.ctl.aborted);
    let handle = state.ctl.handle.clone();
    state.give_up_cpu();
    // A runtime that is shutting down (or a host that panics) must not unwind through the guest.
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        handle.block_on(async move {
            let abort = async {
                while !aborted.load(Ordering::Relaxed) {
                    tokio::time::sleep(ABORT_POLL).await;
                }
            };
            let answered = async {
                match deadline {
                    Some(deadline) => tokio::time::timeout_at(deadline, host.sub_calls(calls)).await.ok(),
                    None => Some(host.sub_calls(calls).await),
                }
            };
            tokio::select! {
                results = answered => results,
                () = abort => None,
            }
        })
    }));
    state.take_cpu();
    match waited {
        Ok(results) => results,
        Err(_) => Some(vec![Err("the host failed while serving this sub-call".to_owned()); count]),
    }
}

/// The epoch callback: stops the guest once the current deadline has passed or the session was aborted, and gives
/// other sessions their turn on the CPU; otherwise checks again later.
pub(crate) fn on_epoch(state: &mut GuestState) -> wasmtime::Result<wasmtime::UpdateDeadline> {
    if state.ctl.is_aborted() {
        return Err(wasmtime::Error::new(Aborted));
    }
    if let Some(turn) = state.turn.as_mut() {
        turn.yield_if_due(&state.ctl.aborted);
    }
    match state.deadline {
        Some(deadline) if Instant::now() >= deadline => {
            state.timed_out = true;
            Err(wasmtime::Error::new(DeadlineReached))
        }
        _ => {
            // Back at the next tick: the CPU scheduler may want this turn for a waiting session.
            Ok(wasmtime::UpdateDeadline::Continue(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn output_is_capped_in_characters_on_the_host() {
        let mut output = CellOutput::default();
        output.take(1, "héllo".as_bytes(), 3);
        output.take(2, "wörld".as_bytes(), 3);
        assert_eq!(output.stdout, "hél".as_bytes());
        assert!(output.stderr.is_empty());
        assert_eq!(output.dropped_chars, 2 + 5);
    }

    #[test]
    fn payload_cuts_check_lengths_and_caps() {
        assert_eq!(cut(b"abcdef", 0, Some(3), 4), Some((Some("abc".to_owned()), 3)));
        assert_eq!(cut(b"abcdef", 3, None, 4), Some((None, 3)));
        assert_eq!(cut(b"abcdef", 0, Some(5), 4), None);
        assert_eq!(cut(b"abc", 2, Some(2), 4), None);
    }
}
