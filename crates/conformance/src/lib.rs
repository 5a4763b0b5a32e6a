//! Conformance corpora for rlm's REPL executors, and the machinery that runs them.
//!
//! Two corpora live in `corpus/` at the workspace root (see `corpus/README.md`):
//!
//! * **differential** (`corpus/differential/*.py`): ordinary long-context code. Every snippet runs on every
//!   [`Target`] and each target's [`Observation`] is compared with the reference target, plain `python3`
//!   ([`Python3Target`]), according to the snippet's [`CompareMode`].
//! * **hostile** (`corpus/hostile/*.py`): code that tries to escape, exhaust or tamper with the executor. Each snippet
//!   states the [`Expectation`] a sandbox must meet; [`hostile::run_hostile`] runs a selection of them on any
//!   [`rlm_protocol::Executor`] while a bystander session keeps working next to them.
//!
//! The tests are in `tests/corpus.rs`; adding an executor there is a matter of one more [`ExecutorTarget`].

pub mod compare;
pub mod corpus;
pub mod hostile;
pub mod target;

pub use compare::{Mismatch, compare, first_difference};
pub use corpus::{
    CompareMode, CorpusError, DifferentialSnippet, Expectation, HostileSnippet, context_path, corpus_dir,
    load_differential, load_hostile,
};
pub use target::{ExecutorTarget, Observation, Python3Target, Target};
