//! Our own `clock_time_get` and `poll_oneoff` for the guest, shadowing WASI's.
//!
//! WASI's `poll_oneoff` (behind `time.sleep`, `select`) blocks the session thread inside a host call, where epoch
//! interruption cannot reach it: `time.sleep(10**6)` would hold the sandbox for eleven days, whatever the cell time
//! limit. Ours sleeps only until the earlier of the wake-up time and the current deadline, and stops the guest like
//! any other timeout when the deadline comes first. The guest has nothing else to wait for (no sockets, no pipes, no
//! readable descriptors), so file-descriptor subscriptions are answered at once: writable for stdout and stderr,
//! `EBADF` for everything else (including the host channel, which only the driver reads).
//!
//! `clock_time_get` is shadowed too, so that the absolute monotonic deadlines the guest computes (CPython's
//! `time.sleep` uses `clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`) are measured on the clock we sleep on.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Extern, Linker};

use crate::error::WasmResult;
use crate::guest::{Aborted, DeadlineReached, GuestState};

// WASI preview 1 constants.
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;
const CLOCK_REALTIME: u32 = 0;
const CLOCK_MONOTONIC: u32 = 1;
const EVENTTYPE_CLOCK: u8 = 0;
const EVENTTYPE_FD_READ: u8 = 1;
const EVENTTYPE_FD_WRITE: u8 = 2;
const SUBCLOCKFLAGS_ABSTIME: u16 = 1;
const SUBSCRIPTION_SIZE: usize = 48;
const EVENT_SIZE: usize = 32;

/// The origin of the guest's monotonic clock (shared by all sessions of the process).
fn monotonic_origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn monotonic_now() -> u64 {
    u64::try_from(monotonic_origin().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn realtime_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
}

/// Sleeps until `until`, waking early when the session is aborted; returns whether it was.
fn sleep_until(until: Instant, aborted: &std::sync::atomic::AtomicBool) -> bool {
    const STEP: std::time::Duration = std::time::Duration::from_millis(50);
    loop {
        if aborted.load(std::sync::atomic::Ordering::Relaxed) {
            return true;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(left.min(STEP));
    }
}

/// One subscription of a `poll_oneoff` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subscription {
    Clock { userdata: u64, id: u32, timeout: u64, flags: u16 },
    Fd { userdata: u64, kind: u8, fd: u32 },
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

/// Decodes one 48-byte `subscription`; `None` for an unknown tag.
fn parse_subscription(raw: &[u8]) -> Option<Subscription> {
    let userdata = u64_at(raw, 0);
    match raw[8] {
        EVENTTYPE_CLOCK => Some(Subscription::Clock {
            userdata,
            id: u32_at(raw, 16),
            timeout: u64_at(raw, 24),
            flags: u16_at(raw, 40),
        }),
        kind @ (EVENTTYPE_FD_READ | EVENTTYPE_FD_WRITE) => {
            Some(Subscription::Fd { userdata, kind, fd: u32_at(raw, 16) })
        }
        _ => None,
    }
}

/// Encodes one 32-byte `event`.
fn encode_event(userdata: u64, error: u16, kind: u8, nbytes: u64) -> [u8; EVENT_SIZE] {
    let mut event = [0u8; EVENT_SIZE];
    event[0..8].copy_from_slice(&userdata.to_le_bytes());
    event[8..10].copy_from_slice(&error.to_le_bytes());
    event[10] = kind;
    event[16..24].copy_from_slice(&nbytes.to_le_bytes());
    event
}

/// When a clock subscription fires, as a host instant; `None` for an unsupported clock.
fn wake_time(id: u32, timeout: u64, flags: u16, now: Instant) -> Option<Instant> {
    let absolute = flags & SUBCLOCKFLAGS_ABSTIME != 0;
    let wait = match (id, absolute) {
        (CLOCK_MONOTONIC | CLOCK_REALTIME, false) => timeout,
        (CLOCK_MONOTONIC, true) => timeout.saturating_sub(monotonic_now()),
        (CLOCK_REALTIME, true) => timeout.saturating_sub(realtime_now()),
        _ => return None,
    };
    // Far beyond any deadline: saturate instead of overflowing `Instant`.
    Some(now.checked_add(Duration::from_nanos(wait)).unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600)))
}

fn memory(caller: &mut Caller<'_, GuestState>) -> Option<wasmtime::Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Some(memory),
        _ => None,
    }
}

fn clock_time_get(caller: &mut Caller<'_, GuestState>, id: u32, result: u32) -> i32 {
    let now = match id {
        CLOCK_REALTIME => realtime_now(),
        CLOCK_MONOTONIC => monotonic_now(),
        // Like WASI: no CPU-time clocks.
        _ => return ERRNO_BADF,
    };
    let Some(memory) = memory(caller) else { return ERRNO_FAULT };
    let at = result as usize;
    match at.checked_add(8).and_then(|end| memory.data_mut(&mut *caller).get_mut(at..end)) {
        Some(slot) => {
            slot.copy_from_slice(&now.to_le_bytes());
            ERRNO_SUCCESS
        }
        None => ERRNO_FAULT,
    }
}

fn poll_oneoff(
    caller: &mut Caller<'_, GuestState>,
    subs_ptr: u32,
    events_ptr: u32,
    count: u32,
    nevents_ptr: u32,
) -> wasmtime::Result<i32> {
    if count == 0 {
        return Ok(ERRNO_INVAL);
    }
    let Some(memory) = memory(caller) else { return Ok(ERRNO_FAULT) };
    let count = count as usize;
    let subscriptions: Option<Vec<Subscription>> = {
        let mem = memory.data(&*caller);
        let start = subs_ptr as usize;
        let Some(raw) = count
            .checked_mul(SUBSCRIPTION_SIZE)
            .and_then(|len| start.checked_add(len))
            .and_then(|end| mem.get(start..end))
        else {
            return Ok(ERRNO_FAULT);
        };
        raw.chunks_exact(SUBSCRIPTION_SIZE).map(parse_subscription).collect()
    };
    let Some(subscriptions) = subscriptions else { return Ok(ERRNO_INVAL) };

    let now = Instant::now();
    let mut clocks = Vec::new();
    let mut events: Vec<[u8; EVENT_SIZE]> = Vec::new();
    for subscription in &subscriptions {
        match *subscription {
            Subscription::Clock { userdata, id, timeout, flags } => match wake_time(id, timeout, flags, now) {
                Some(wake) => clocks.push((userdata, wake)),
                None => return Ok(ERRNO_INVAL),
            },
            Subscription::Fd { userdata, kind, fd } => {
                let writable = kind == EVENTTYPE_FD_WRITE && (fd == 1 || fd == 2);
                let error = if writable { 0 } else { ERRNO_BADF as u16 };
                events.push(encode_event(userdata, error, kind, u64::from(writable)));
            }
        }
    }
    if events.is_empty() {
        // Only clocks: sleep until the first fires, unless the deadline of what runs now comes first.
        let wake = clocks.iter().map(|(_, wake)| *wake).min().unwrap_or(now);
        let deadline = caller.data().deadline;
        let state = caller.data_mut();
        // A sleeping guest uses no CPU: let other sessions have it meanwhile.
        state.give_up_cpu();
        let until = match deadline {
            Some(deadline) if deadline < wake => deadline,
            _ => wake,
        };
        let aborted = sleep_until(until, &state.ctl.aborted);
        state.take_cpu();
        if aborted {
            return Err(wasmtime::Error::new(Aborted));
        }
        if deadline.is_some_and(|deadline| deadline < wake) {
            state.timed_out = true;
            return Err(wasmtime::Error::new(DeadlineReached));
        }
    }
    let now = Instant::now();
    for (userdata, wake) in clocks {
        if wake <= now {
            events.push(encode_event(userdata, 0, EVENTTYPE_CLOCK, 0));
        }
    }
    let mem = memory.data_mut(&mut *caller);
    let start = events_ptr as usize;
    let Some(out) = events
        .len()
        .checked_mul(EVENT_SIZE)
        .and_then(|len| start.checked_add(len))
        .and_then(|end| mem.get_mut(start..end))
    else {
        return Ok(ERRNO_FAULT);
    };
    for (slot, event) in out.chunks_exact_mut(EVENT_SIZE).zip(&events) {
        slot.copy_from_slice(event);
    }
    let written = u32::try_from(events.len()).unwrap_or(u32::MAX);
    let at = nevents_ptr as usize;
    match at.checked_add(4).and_then(|end| mem.get_mut(at..end)) {
        Some(slot) => {
            slot.copy_from_slice(&written.to_le_bytes());
            Ok(ERRNO_SUCCESS)
        }
        None => Ok(ERRNO_FAULT),
    }
}

/// Registers the shadowing `clock_time_get` and `poll_oneoff` on a linker that already has WASI preview 1.
pub(crate) fn add_to_linker(linker: &mut Linker<GuestState>) -> WasmResult<()> {
    // Fix the origin before any guest reads the clock.
    monotonic_origin();
    linker.allow_shadowing(true);
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "clock_time_get",
        |mut caller: Caller<'_, GuestState>, id: i32, _precision: i64, result: i32| -> wasmtime::Result<i32> {
            if caller.data().snapshot.as_ref().is_some_and(crate::snapshot::Capture::is_armed) {
                // Building a snapshot: the driver reads the clock right after its `snapshot` frame (see
                // `snapshot.rs`); stopping here leaves the interpreter in the state the snapshot keeps.
                return Err(wasmtime::Error::new(crate::snapshot::SnapshotPoint));
            }
            Ok(clock_time_get(&mut caller, id as u32, result as u32))
        },
    )?;
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "poll_oneoff",
        |mut caller: Caller<'_, GuestState>,
         subs: i32,
         events: i32,
         count: i32,
         nevents: i32|
         -> wasmtime::Result<i32> {
            poll_oneoff(&mut caller, subs as u32, events as u32, count as u32, nevents as u32)
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock_subscription(userdata: u64, id: u32, timeout: u64, flags: u16) -> [u8; SUBSCRIPTION_SIZE] {
        let mut raw = [0u8; SUBSCRIPTION_SIZE];
        raw[0..8].copy_from_slice(&userdata.to_le_bytes());
        raw[8] = EVENTTYPE_CLOCK;
        raw[16..20].copy_from_slice(&id.to_le_bytes());
        raw[24..32].copy_from_slice(&timeout.to_le_bytes());
        raw[32..40].copy_from_slice(&1000u64.to_le_bytes());
        raw[40..42].copy_from_slice(&flags.to_le_bytes());
        raw
    }

    #[test]
    fn subscriptions_decode() {
        let raw = clock_subscription(7, CLOCK_MONOTONIC, 5_000, SUBCLOCKFLAGS_ABSTIME);
        assert_eq!(
            parse_subscription(&raw),
            Some(Subscription::Clock { userdata: 7, id: CLOCK_MONOTONIC, timeout: 5_000, flags: 1 })
        );
        let mut fd = [0u8; SUBSCRIPTION_SIZE];
        fd[0] = 3;
        fd[8] = EVENTTYPE_FD_WRITE;
        fd[16] = 2;
        assert_eq!(parse_subscription(&fd), Some(Subscription::Fd { userdata: 3, kind: EVENTTYPE_FD_WRITE, fd: 2 }));
        fd[8] = 9;
        assert_eq!(parse_subscription(&fd), None);
    }

    #[test]
    fn events_encode() {
        let event = encode_event(0x0102, 8, EVENTTYPE_FD_READ, 1);
        assert_eq!(u64_at(&event, 0), 0x0102);
        assert_eq!(u16_at(&event, 8), 8);
        assert_eq!(event[10], EVENTTYPE_FD_READ);
        assert_eq!(u64_at(&event, 16), 1);
    }

    #[test]
    fn wake_times_follow_the_clocks() {
        let now = Instant::now();
        let relative = wake_time(CLOCK_MONOTONIC, 1_000_000, 0, now);
        assert_eq!(relative, Some(now + Duration::from_millis(1)));
        // An absolute time in the past fires at once; one far in the future saturates instead of overflowing.
        assert_eq!(wake_time(CLOCK_MONOTONIC, 0, SUBCLOCKFLAGS_ABSTIME, now), Some(now));
        assert!(wake_time(CLOCK_REALTIME, u64::MAX, 0, now).is_some_and(|wake| wake > now));
        let target = realtime_now() + 2_000_000_000;
        let wake = wake_time(CLOCK_REALTIME, target, SUBCLOCKFLAGS_ABSTIME, now).unwrap_or(now);
        assert!(wake > now + Duration::from_secs(1) && wake <= now + Duration::from_secs(2));
        assert_eq!(wake_time(2, 0, 0, now), None);
    }
}
