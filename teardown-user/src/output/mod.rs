//! Output: renderers only. They turn timelines and events into text or JSON; where it goes
//! (stdout, a file) is decided by the caller.

pub mod document;
pub mod json;
pub mod text;

pub use document::DocumentWriter;
pub use json::KernelNames;
pub use text::{Clock, ExchangePrinter, RawPrinter, Summary};

#[cfg(test)]
mod tests;
