//! What one run does, resolved from the command line once (the binary's edge does that, see
//! `cli.rs`): the library takes these, never the clap struct.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::filter::Filter;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub source: Source,
    /// Which sockets: applied in the kernel where it can be, and once where events enter
    /// user space.
    pub filter: Filter,
    /// What stdout shows.
    pub mode: Mode,
    /// Also print both ends of local connections as one exchange (`-x`).
    pub exchange: bool,
    /// `--time-wait`: timelines wait for their TIME_WAIT mini-socket's end.
    pub follow_time_wait: bool,
    /// `-o`: all timelines as one JSON document.
    pub document: Option<PathBuf>,
    /// `--mermaid`: a sequence diagram per connection.
    pub mermaid: Option<PathBuf>,
    /// `--perfetto`: a trace for ui.perfetto.dev.
    pub perfetto: Option<PathBuf>,
    /// Timeline lines in colour.
    pub color: bool,
    /// `--summary`: the population, every this often (the mode is `Summary`).
    pub summary: Option<Duration>,
    /// `--summary --json`: the population as a JSON object per line.
    pub json_summary: bool,
    /// `--metrics`: where Prometheus scrapes.
    pub metrics: Option<SocketAddr>,
    /// Local ports the population counts apart (`--by-port`, else `-P` and `--lport`).
    pub counted_ports: Vec<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Trace this host's kernel.
    Live(Live),
    /// Rebuild from a recording.
    Replay(PathBuf),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Live {
    /// Stop after this long; `None` runs until a signal.
    pub duration: Option<Duration>,
    /// Ring buffer size in bytes (a power of two, a multiple of the page size).
    pub ring_bytes: u32,
    /// Live sockets whose owner the kernel can remember at once.
    pub max_sockets: u32,
    /// `--record`: the raw events saved for `--replay`.
    pub record: Option<PathBuf>,
    /// `--bench-floor` (hidden): the hooks attached, the programs returning at once.
    pub floor: bool,
}

/// What stdout shows: reconstructed timelines, or every raw event; as text or NDJSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Text,
    Ndjson,
    RawText,
    RawJson,
    /// `--summary`: the population, now and then, instead of a line per teardown.
    Summary,
}

impl Mode {
    /// Raw modes show events as they come; nothing is reconstructed.
    pub fn raw(self) -> bool {
        matches!(self, Mode::RawText | Mode::RawJson)
    }

    /// Machine-readable stdout: the closing summary goes to stderr instead.
    pub fn json(self) -> bool {
        matches!(self, Mode::Ndjson | Mode::RawJson)
    }
}
