//! Fair shares of the CPU for the sessions of one executor.
//!
//! Each session runs on its own OS thread, so without this a few sessions spinning at their cell limit would take
//! every core and a bystander's `1 + 1` would wait for the OS to get round to it, behind them. Here a guest runs only
//! while its thread holds one of `slots` turns (one per core by default). A thread gives its turn up while it waits
//! (for the next job, for sub-call answers, in `time.sleep`), and a guest that has run for a time slice while others
//! wait goes to the back of the queue at the next epoch tick. Waiters are served first come, first served, so a short
//! cell waits at most about one slice per session ahead of it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long a guest may run while others wait for a turn.
pub(crate) const DEFAULT_SLICE: Duration = Duration::from_millis(50);

/// How often a waiting thread checks whether its session was aborted.
const ABORT_POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Default)]
struct Queue {
    running: usize,
    next_ticket: u64,
    waiting: VecDeque<u64>,
}

/// The turns of one executor's sessions.
#[derive(Debug)]
pub(crate) struct CpuScheduler {
    slots: usize,
    slice: Duration,
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl CpuScheduler {
    pub(crate) fn new(slots: usize, slice: Duration) -> Arc<Self> {
        Arc::new(Self { slots: slots.max(1), slice, queue: Mutex::new(Queue::default()), changed: Condvar::new() })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a turn (first come, first served). An aborted session gets a turn that holds no slot at once: its
    /// guest stops at the next epoch tick anyway.
    pub(crate) fn take_turn(self: &Arc<Self>, aborted: &AtomicBool) -> CpuTurn {
        let counted = self.wait_for_slot(aborted);
        CpuTurn { scheduler: Arc::clone(self), since: Instant::now(), counted }
    }

    fn wait_for_slot(&self, aborted: &AtomicBool) -> bool {
        let mut queue = self.lock();
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        queue.waiting.push_back(ticket);
        loop {
            if queue.running < self.slots && queue.waiting.front() == Some(&ticket) {
                queue.waiting.pop_front();
                queue.running += 1;
                self.changed.notify_all();
                return true;
            }
            if aborted.load(Ordering::Relaxed) {
                queue.waiting.retain(|&t| t != ticket);
                self.changed.notify_all();
                return false;
            }
            queue = self.changed.wait_timeout(queue, ABORT_POLL).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    fn release(&self) {
        let mut queue = self.lock();
        queue.running = queue.running.saturating_sub(1);
        self.changed.notify_all();
    }

    fn has_waiters(&self) -> bool {
        !self.lock().waiting.is_empty()
    }

    #[cfg(test)]
    fn running(&self) -> usize {
        self.lock().running
    }
}

/// A held turn; dropping it gives the slot back.
#[derive(Debug)]
pub(crate) struct CpuTurn {
    scheduler: Arc<CpuScheduler>,
    since: Instant,
    counted: bool,
}

impl CpuTurn {
    /// At an epoch tick: when this turn has used its slice and someone waits, goes to the back of the queue.
    pub(crate) fn yield_if_due(&mut self, aborted: &AtomicBool) {
        if !self.counted || self.since.elapsed() < self.scheduler.slice || !self.scheduler.has_waiters() {
            return;
        }
        self.scheduler.release();
        self.counted = self.scheduler.wait_for_slot(aborted);
        self.since = Instant::now();
    }
}

impl Drop for CpuTurn {
    fn drop(&mut self) {
        if self.counted {
            self.scheduler.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_are_limited_and_given_back() {
        let scheduler = CpuScheduler::new(2, Duration::from_millis(1));
        let aborted = AtomicBool::new(false);
        let first = scheduler.take_turn(&aborted);
        let second = scheduler.take_turn(&aborted);
        assert_eq!(scheduler.running(), 2);
        drop(first);
        assert_eq!(scheduler.running(), 1);
        drop(second);
        assert_eq!(scheduler.running(), 0);
    }

    #[test]
    fn a_waiter_gets_the_turn_of_a_guest_past_its_slice() {
        let scheduler = CpuScheduler::new(1, Duration::from_millis(1));
        let aborted = Arc::new(AtomicBool::new(false));
        let mut spinner = scheduler.take_turn(&aborted);
        let waiter = {
            let scheduler = Arc::clone(&scheduler);
            let aborted = Arc::clone(&aborted);
            std::thread::spawn(move || {
                let turn = scheduler.take_turn(&aborted);
                drop(turn);
            })
        };
        while !scheduler.has_waiters() {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(2));
        // The spinner's tick: it yields, the waiter runs and finishes, the spinner gets its turn back.
        spinner.yield_if_due(&aborted);
        assert!(waiter.join().is_ok());
        assert_eq!(scheduler.running(), 1);
        drop(spinner);
        assert_eq!(scheduler.running(), 0);
    }

    #[test]
    fn an_aborted_waiter_does_not_wait() {
        let scheduler = CpuScheduler::new(1, Duration::from_millis(1));
        let held = scheduler.take_turn(&AtomicBool::new(false));
        let turn = scheduler.take_turn(&AtomicBool::new(true));
        assert!(!turn.counted);
        drop(turn);
        assert_eq!(scheduler.running(), 1);
        drop(held);
    }
}
