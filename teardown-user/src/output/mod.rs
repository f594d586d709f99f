//! Output: renderers only. They turn timelines and events into text or JSON; where it goes
//! (stdout, a file) is decided by the caller.

pub mod document;
pub mod json;
pub mod summary;
pub mod text;

pub use document::DocumentWriter;
pub use summary::Summary;
pub use text::{ExchangePrinter, RawPrinter};

#[cfg(test)]
mod tests;
