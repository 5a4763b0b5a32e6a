//! What the machine is doing: its cores, and how many of them other processes keep busy (from `/proc/stat` and
//! `/proc/self/stat`, so only on Linux; elsewhere every answer is "not known").
//!
//! Two users: the embedded model picks its thread count from the cores that other processes leave free, and the
//! local executor waits actively at a hand-off only while a core is free (see [`a_core_is_free`]).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The shortest window over which busy cores are measured: `/proc/stat` counts in clock ticks (usually 100 a
/// second), so a shorter one says too little.
pub const MIN_CPU_WINDOW: Duration = Duration::from_millis(200);

/// How often the watcher behind [`a_core_is_free`] samples, and after how many samples nobody asked for it ends.
const WATCH_PERIOD: Duration = Duration::from_millis(250);
const WATCH_IDLE_SAMPLES: u32 = 40;

/// The cores this process may run on.
pub fn cores() -> u32 {
    static CORES: OnceLock<u32> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1)))
}

/// CPU time counters: of the whole machine (`/proc/stat`, all cores) and of this process (`/proc/self/stat`), in
/// clock ticks.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    taken: Instant,
    machine_busy: u64,
    machine_total: u64,
    own: u64,
}

impl CpuSample {
    pub fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        Self::parse(&stat, &own)
    }

    /// When the sample was taken.
    pub fn taken(&self) -> Instant {
        self.taken
    }

    fn parse(stat: &str, own_stat: &str) -> Option<Self> {
        // "cpu  user nice system idle iowait irq softirq steal ...": idle and iowait are the time nothing ran.
        let ticks: Vec<u64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .take(8)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let machine_total: u64 = ticks.iter().sum();
        let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
        // The command (field 2) is in parentheses and may hold spaces: fields count from after its closing one.
        let after_name = &own_stat[own_stat.rfind(')')? + 1..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name (0-based from field 3).
        let own = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(Self { taken: Instant::now(), machine_busy: machine_total.checked_sub(idle)?, machine_total, own })
    }
}

/// Cores kept busy by other processes between two samples, rounded; `None` when the window is too short to say.
pub fn busy_cores_between(before: &CpuSample, after: &CpuSample, cores: u32) -> Option<u32> {
    let total = after.machine_total.checked_sub(before.machine_total)?;
    if total == 0 || after.taken.duration_since(before.taken) < MIN_CPU_WINDOW / 2 {
        return None;
    }
    let busy = after.machine_busy.saturating_sub(before.machine_busy);
    let others = busy.saturating_sub(after.own.saturating_sub(before.own));
    let share = others as f64 / total as f64;
    Some((share * f64::from(cores)).round().clamp(0.0, f64::from(cores)) as u32)
}

/// Cores other processes kept busy over the watcher's last period; `u32::MAX` while not known.
static OTHERS_BUSY: AtomicU32 = AtomicU32::new(u32::MAX);
static WATCHING: AtomicBool = AtomicBool::new(false);
static ASKED: AtomicBool = AtomicBool::new(false);

/// Whether other processes left at least one core free over the last quarter of a second. `false` while that is
/// not known: for the first period after the first question, and where `/proc` cannot be read.
///
/// The first call starts a thread that samples every 250 ms; it ends after 10 s in which nobody asked, and the
/// next call starts it again.
pub fn a_core_is_free() -> bool {
    // Where the counters cannot be read, a watcher would end at once and the next call would start another.
    static READABLE: OnceLock<bool> = OnceLock::new();
    if !*READABLE.get_or_init(|| CpuSample::now().is_some()) {
        return false;
    }
    ASKED.store(true, Ordering::Relaxed);
    // Loaded first so that the common case (a watcher running) writes nothing shared but `ASKED`.
    if !WATCHING.load(Ordering::Acquire)
        && !WATCHING.swap(true, Ordering::AcqRel)
        && std::thread::Builder::new().name("rlm-cpu-watch".to_owned()).spawn(watch).is_err()
    {
        WATCHING.store(false, Ordering::Release);
    }
    let busy = OTHERS_BUSY.load(Ordering::Relaxed);
    busy != u32::MAX && busy < cores()
}

fn watch() {
    let mut before = CpuSample::now();
    let mut unasked = 0;
    while unasked < WATCH_IDLE_SAMPLES && before.is_some() {
        std::thread::sleep(WATCH_PERIOD);
        let after = CpuSample::now();
        let busy = before.zip(after).and_then(|(before, after)| busy_cores_between(&before, &after, cores()));
        OTHERS_BUSY.store(busy.unwrap_or(u32::MAX), Ordering::Relaxed);
        before = after;
        unasked = if ASKED.swap(false, Ordering::Relaxed) { 0 } else { unasked + 1 };
    }
    OTHERS_BUSY.store(u32::MAX, Ordering::Relaxed);
    WATCHING.store(false, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_cores_are_what_other_processes_used_between_two_samples() {
        let own = |ticks: u64| format!("4242 (rlm bench (x)) S 1 2 3 4 5 6 7 8 9 10 {ticks} 0 0 0 20 0");
        let sample = |user: u64, idle: u64, own_ticks: u64| {
            CpuSample::parse(&format!("cpu  {user} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 2 3 4"), &own(own_ticks))
                .expect("a sample")
        };
        let before = sample(1000, 5000, 100);
        // 200 ticks of two cores passed: 100 busy, all of them this process's own.
        let mut after = sample(1100, 5100, 200);
        after.taken = before.taken + MIN_CPU_WINDOW;
        assert_eq!(busy_cores_between(&before, &after, 2), Some(0));
        // 100 busy, 10 of them this process's: 90/200 of two cores is about one core.
        let mut loaded = sample(1100, 5100, 110);
        loaded.taken = before.taken + MIN_CPU_WINDOW;
        assert_eq!(busy_cores_between(&before, &loaded, 2), Some(1));
        // Too short a window says nothing.
        assert_eq!(busy_cores_between(&before, &sample(1100, 5100, 110), 2), None);
        assert!(CpuSample::parse("garbage", &own(1)).is_none());
        assert!(CpuSample::parse("cpu  1 2 3 4 5 6 7 8", "no parenthesis").is_none());
        // On Linux the real files parse.
        if cfg!(target_os = "linux") {
            assert!(CpuSample::now().is_some());
        }
    }

    #[test]
    fn the_watcher_answers_after_its_first_period() {
        if !cfg!(target_os = "linux") {
            return;
        }
        // Not known before the first sample is in; known (either way) after it.
        let _ = a_core_is_free();
        std::thread::sleep(WATCH_PERIOD * 3);
        let _ = a_core_is_free();
        assert_ne!(OTHERS_BUSY.load(Ordering::Relaxed), u32::MAX);
        assert!(WATCHING.load(Ordering::Acquire));
    }
}
