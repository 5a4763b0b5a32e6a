//! Telling the driver's main loop from user code by the guest's call stack.
//!
//! User code runs in the same interpreter as the driver and can write anything to the control channel, so content
//! proves nothing. The wasm call stack does: the host captures it (the guest cannot forge it) at every control frame
//! and every read for the next job. The driver's main loop runs in the interpreter's outermost activation of its
//! evaluation function; user code always runs in a nested one (inside `exec`, a finalizer, or anything the main loop
//! calls through a C function). At start-up, before any user code exists, the driver writes `calibrate` frames from
//! the main loop and `probe` frames from three kinds of nested activation (`exec`, a call from C, a generator); the
//! functions that appear once more in *every* nested stack than in the main loop's are the interpreter's activation
//! markers. Later, a stack with more markers than the main loop's (or one too deep to see whole) is not the main loop.

use std::collections::HashMap;

use wasmtime::{AsContext, WasmBacktrace};

/// Youngest frames captured per stack. The main loop's stack is about thirty frames deep; a stack that fills this
/// is too deep to be the main loop.
pub(crate) const MAX_FRAMES: usize = 128;

/// Function index -> how often it is on the stack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StackSample {
    counts: HashMap<u32, u32>,
    truncated: bool,
}

impl StackSample {
    pub(crate) fn capture(store: impl AsContext) -> Self {
        let trace = WasmBacktrace::capture(store);
        let frames = trace.frames();
        let mut counts = HashMap::new();
        for frame in frames {
            *counts.entry(frame.func_index()).or_insert(0) += 1;
        }
        Self { counts, truncated: frames.len() >= MAX_FRAMES }
    }

    #[cfg(test)]
    fn of(funcs: &[u32], truncated: bool) -> Self {
        let mut counts = HashMap::new();
        for f in funcs {
            *counts.entry(*f).or_insert(0) += 1;
        }
        Self { counts, truncated }
    }

    fn count(&self, func: u32) -> u32 {
        self.counts.get(&func).copied().unwrap_or(0)
    }
}

/// What start-up showed; becomes [`MainLoop`] once the probes are in.
#[derive(Debug, Default)]
pub(crate) struct Calibration {
    /// Per function, the most it appeared on any main-loop stack.
    main: HashMap<u32, u32>,
    mains: usize,
    probes: Vec<StackSample>,
}

impl Calibration {
    pub(crate) fn main_loop(&mut self, sample: &StackSample) {
        for (&func, &count) in &sample.counts {
            let seen = self.main.entry(func).or_insert(0);
            *seen = (*seen).max(count);
        }
        self.mains += 1;
    }

    pub(crate) fn nested(&mut self, sample: StackSample) {
        self.probes.push(sample);
    }

    /// The activation markers, or why there are none.
    pub(crate) fn finish(self) -> Result<MainLoop, String> {
        if self.mains == 0 || self.probes.len() < 3 {
            return Err(format!(
                "{} main-loop and {} nested samples, expected at least 1 and 3",
                self.mains,
                self.probes.len()
            ));
        }
        let main_count = |func: u32| self.main.get(&func).copied().unwrap_or(0);
        let mut markers: Vec<(u32, u32)> = self.probes[0]
            .counts
            .keys()
            .copied()
            .filter(|&func| self.probes.iter().all(|probe| probe.count(func) > main_count(func)))
            .map(|func| (func, main_count(func)))
            .collect();
        markers.sort_unstable();
        if markers.is_empty() {
            return Err("no function marks a nested interpreter activation".to_owned());
        }
        Ok(MainLoop { markers })
    }
}

/// Recognises the driver's main loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MainLoop {
    /// (function index, how often it is on the main loop's stack).
    markers: Vec<(u32, u32)>,
}

impl MainLoop {
    pub(crate) fn is_main_loop(&self, sample: &StackSample) -> bool {
        !sample.truncated && self.markers.iter().all(|&(func, allowed)| sample.count(func) <= allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Function 7 plays the interpreter's evaluation loop; 1..=3 the bottom of the stack; 20.. call helpers.
    fn calibrated() -> Result<MainLoop, String> {
        let mut calibration = Calibration::default();
        calibration.main_loop(&StackSample::of(&[1, 2, 3, 7, 20, 21, 30], false));
        calibration.main_loop(&StackSample::of(&[1, 2, 3, 7, 30], false));
        calibration.nested(StackSample::of(&[1, 2, 3, 7, 40, 41, 7, 20, 30], false));
        calibration.nested(StackSample::of(&[1, 2, 3, 7, 50, 20, 7, 30], false));
        calibration.nested(StackSample::of(&[1, 2, 3, 7, 60, 7, 21, 30], false));
        calibration.finish()
    }

    #[test]
    fn the_evaluation_loop_is_the_marker() -> Result<(), String> {
        assert_eq!(calibrated()?, MainLoop { markers: vec![(7, 1)] });
        Ok(())
    }

    #[test]
    fn nested_and_truncated_stacks_are_not_the_main_loop() -> Result<(), String> {
        let main = calibrated()?;
        assert!(main.is_main_loop(&StackSample::of(&[1, 2, 3, 7, 21, 30], false)));
        assert!(main.is_main_loop(&StackSample::of(&[1, 2, 3, 7, 30], false)));
        assert!(!main.is_main_loop(&StackSample::of(&[1, 2, 3, 7, 99, 7, 30], false)));
        assert!(!main.is_main_loop(&StackSample::of(&[7, 30], true)));
        Ok(())
    }

    #[test]
    fn calibration_needs_every_kind_of_sample() {
        let mut calibration = Calibration::default();
        calibration.main_loop(&StackSample::of(&[1, 7], false));
        calibration.nested(StackSample::of(&[1, 7, 7], false));
        assert!(calibration.finish().is_err());
        let mut calibration = Calibration::default();
        calibration.main_loop(&StackSample::of(&[1, 7], false));
        for _ in 0..3 {
            calibration.nested(StackSample::of(&[1, 7], false));
        }
        assert!(calibration.finish().is_err());
    }
}
