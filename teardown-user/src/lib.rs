//! teardown: how exactly did this TCP connection end?
//!
//! - [`capture`]: the kernel program and its loader (privileged).
//! - [`reconstruct`]: kernel transitions become one timeline per socket (pure).
//! - [`output`]: timelines and events rendered as text or JSON (pure).
//! - [`record`]: the raw stream saved and replayed.
//! - [`trace`]: one run, wiring a source to the reconstruction and the outputs.
pub mod capture;
pub mod cli;
pub mod docs;
pub mod error;
pub mod event;
pub mod filter;
pub mod output;
pub mod reconstruct;
pub mod record;
pub mod trace;
