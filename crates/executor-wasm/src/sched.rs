//! Fair shares of the CPU for the sessions of one executor.
//!
//! Each session runs on its own OS thread, so without this a few sessions spinning at their cell limit would take
//! every core and a bystander's `1 + 1` would wait for the OS to get round to it, behind them. Here a guest runs only
//! while its thread holds one of `slots` turns (one per core by default). A thread gives its turn up while it waits
//! (for the next job, for sub-call answers, in `time.sleep`). There are two queues: a thread that starts work (a new
//! job, or back from waiting) queues as *fresh*; a guest that was sent to the back after using up a time slice queues
//! as *long-running*. Fresh threads are served first, and a running guest gives its turn up at the next epoch tick
//! once a fresh thread waits (after a short minimum, so turns are not thrashed) or, when only long-running ones wait,
//! once it has used a whole slice. So a short cell next to spinning sessions waits about one epoch tick, and spinning
//! sessions share what is left round-robin.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long a guest may run while long-running guests wait for a turn.
pub(crate) const DEFAULT_SLICE: Duration = Duration::from_millis(50);

/// How long a guest runs at least before it gives its turn to a fresh thread.
const MIN_TURN: Duration = Duration::from_millis(5);

/// How often a waiting thread checks whether its session was aborted.
const ABORT_POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Default)]
struct Queue {
    running: usize,
    next_ticket: u64,
    /// Threads starting work, served first.
    fresh: VecDeque<u64>,
    /// Guests sent to the back after a full slice.
    long_running: VecDeque<u64>,
}

impl Queue {
    fn next_up(&self) -> Option<u64> {
        self.fresh.front().or(self.long_running.front()).copied()
    }

    fn remove(&mut self, ticket: u64) {
        self.fresh.retain(|&t| t != ticket);
        self.long_running.retain(|&t| t != ticket);
    }

    fn pop(&mut self, ticket: u64) {
        if self.fresh.front() == Some(&ticket) {
            self.fresh.pop_front();
        } else if self.long_running.front() == Some(&ticket) {
            self.long_running.pop_front();
        }
    }
}

/// Which queue a thread waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Priority {
    Fresh,
    LongRunning,
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
        let counted = self.wait_for_slot(aborted, Priority::Fresh);
        CpuTurn { scheduler: Arc::clone(self), since: Instant::now(), counted }
    }

    fn wait_for_slot(&self, aborted: &AtomicBool, priority: Priority) -> bool {
        let mut queue = self.lock();
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        match priority {
            Priority::Fresh => queue.fresh.push_back(ticket),
            Priority::LongRunning => queue.long_running.push_back(ticket),
        }
        loop {
            if queue.running < self.slots && queue.next_up() == Some(ticket) {
                queue.pop(ticket);
                queue.running += 1;
                self.changed.notify_all();
                return true;
            }
            if aborted.load(Ordering::Relaxed) {
                queue.remove(ticket);
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

    /// Whether a guest that has run for `ran` should give its turn up now.
    fn should_yield(&self, ran: Duration) -> bool {
        let queue = self.lock();
        (!queue.fresh.is_empty() && ran >= MIN_TURN) || (!queue.long_running.is_empty() && ran >= self.slice)
    }

    #[cfg(test)]
    fn has_waiters(&self) -> bool {
        let queue = self.lock();
        !queue.fresh.is_empty() || !queue.long_running.is_empty()
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
    /// At an epoch tick: gives the turn to whoever should run now (see the module docs) and queues for another.
    pub(crate) fn yield_if_due(&mut self, aborted: &AtomicBool) {
        if !self.counted || !self.scheduler.should_yield(self.since.elapsed()) {
            return;
        }
        self.scheduler.release();
        self.counted = self.scheduler.wait_for_slot(aborted, Priority::LongRunning);
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
        std::thread::sleep(MIN_TURN * 2);
        // The spinner's tick: it yields, the waiter runs and finishes, the spinner gets its turn back.
        spinner.yield_if_due(&aborted);
        assert!(waiter.join().is_ok());
        assert_eq!(scheduler.running(), 1);
        drop(spinner);
        assert_eq!(scheduler.running(), 0);
    }

    #[test]
    fn fresh_work_goes_before_long_running_guests() {
        let scheduler = CpuScheduler::new(1, Duration::from_millis(1));
        let aborted = AtomicBool::new(false);
        let mut queue = scheduler.lock();
        queue.long_running.push_back(100);
        queue.fresh.push_back(101);
        assert_eq!(queue.next_up(), Some(101));
        queue.pop(101);
        assert_eq!(queue.next_up(), Some(100));
        queue.remove(100);
        assert_eq!(queue.next_up(), None);
        drop(queue);
        // Only long-running waiters: a guest keeps its turn until its slice is used up.
        let turn = scheduler.take_turn(&aborted);
        scheduler.lock().long_running.push_back(7);
        assert!(!scheduler.should_yield(Duration::ZERO));
        assert!(scheduler.should_yield(Duration::from_millis(2)));
        scheduler.lock().long_running.clear();
        scheduler.lock().fresh.push_back(8);
        assert!(!scheduler.should_yield(Duration::from_millis(1)));
        assert!(scheduler.should_yield(MIN_TURN));
        drop(turn);
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
