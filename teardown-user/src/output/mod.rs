//! Output: renderers only. They turn timelines and events into text or JSON; where it goes
//! (stdout, a file) is decided by the caller.

pub mod color;
pub mod document;
pub mod json;
pub mod mermaid;
pub mod pairs;
pub mod perfetto;
pub mod safe_file;
pub mod summary;
pub mod text;

pub use document::DocumentWriter;
pub use summary::Summary;
pub use text::{ExchangePrinter, RawPrinter};

use teardown_common::KernelNames;

use crate::{clock::Clock, error::Result, reconstruct::Timeline};

/// A file that receives each timeline as it completes (`--mermaid`, `--perfetto`) and is
/// finished once tracing stops.
pub trait TimelineSink {
    fn timeline(&mut self, t: &Timeline, clock: &Clock, names: &KernelNames) -> Result<()>;
    fn finish(self: Box<Self>, clock: &Clock, names: &KernelNames) -> Result<()>;
}

#[cfg(test)]
mod tests;
