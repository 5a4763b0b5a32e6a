//! The rlm trajectory viewer: a web page that shows RLM runs as trees (iterations, code cells, sub-calls, child RLMs
//! nested to any depth), with a timeline, live updates and lazy loading for large traces.
//!
//! [`router`] serves the page and its JSON/SSE API from any [`RunSource`]: [`FileSource`] reads JSONL trace files
//! (following them as they grow), [`MemorySource`] holds events pushed by a service; a service that already stores
//! its runs' events can keep a [`RunTree`] per run (outlines and a summary only) and implement [`RunSource`] over its
//! own store. The page and its assets are embedded in the binary; nothing is fetched from elsewhere. Mount the router
//! anywhere (`Router::new().nest("/ui", rlm_viewer::router(source))`): every URL the page uses is relative.

mod file;
mod index;
mod memory;
mod server;
mod source;
mod tree;

pub use file::{FileSource, MAX_EVENTS_PER_PAGE, MAX_OUTLINES_PER_PAGE, MAX_PAGE_BYTES};
pub use memory::MemorySource;
pub use server::{router, serve};
pub use source::{EventOutline, Page, RunSource, RunStatus, RunSummary, SourceError, Update};
pub use tree::RunTree;
