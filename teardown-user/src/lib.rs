//! teardown: how exactly did this TCP connection end?
//!
//! - [`capture`]: the kernel program and its loader (privileged).
//! - [`reconstruct`]: kernel transitions become one timeline per socket (pure).
//! - [`output`]: timelines and events rendered as text or JSON (pure).
//! - [`population`]: timelines folded into counts and percentiles, summary and metrics.
//! - [`record`]: the raw stream saved and replayed.
//! - [`trace`]: one run, wiring a source to the reconstruction and the outputs.
//! - [`options`]: what a run does, resolved once from the command line by the binary.
pub(crate) mod capture;
pub mod cli;
pub mod clock;
pub mod docs;
pub mod error;
pub mod filter;
#[doc(hidden)]
pub mod lab;
pub mod limits;
pub mod options;
pub mod output;
pub mod pidns;
pub(crate) mod population;
pub mod reconstruct;
pub(crate) mod record;
pub mod signals;
pub mod snapshot;
pub mod trace;

#[cfg(test)]
mod testing;
