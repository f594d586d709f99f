//! The library's errors. Each renders as one line a user can act on, its cause said once;
//! the binary adds context with `anyhow` and never shows a backtrace.

use std::{
    io,
    path::{Path, PathBuf},
};

use crate::capture::btf::BtfError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "permission denied: tracing needs root (or CAP_BPF and CAP_PERFMON); try `sudo teardown-trace`"
    )]
    NotPermitted,
    #[error("this kernel has no BTF ({0} is missing): teardown needs CONFIG_DEBUG_INFO_BTF=y")]
    NoBtf(PathBuf),
    #[error("this kernel has no BPF ring buffer (Linux 5.8 or later is needed)")]
    NoRingBuf,
    #[error("this kernel has no BTF tracepoint {0} (Linux 5.8 or later is needed)")]
    NoBtfTracepoint(&'static str),
    #[error("cannot read the kernel's layout from BTF: {0}")]
    KernelLayout(#[from] BtfError),
    #[error("cannot {action} `{hook}`: {reason}")]
    Hook {
        action: &'static str,
        hook: &'static str,
        reason: String,
    },
    #[error("BPF error: {0}")]
    Bpf(String),
    /// The cause is part of the message, not a `source`: `{:#}` would print it twice.
    #[error("cannot write {}: {error}", path.display())]
    Output { path: PathBuf, error: io::Error },
    #[error("cannot read {}: {error}", path.display())]
    Input { path: PathBuf, error: io::Error },
    #[error("corrupt recording {} at byte {offset}: {reason}", path.display())]
    Recording {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// Not a `source`: the message already says it, and anyhow would print it twice.
    #[error("cannot serve metrics on {addr}: {error}")]
    Metrics {
        addr: std::net::SocketAddr,
        error: io::Error,
    },
    #[error(
        "out of file descriptors: the limit (ulimit -n) is {limit}, and at least {needed} are needed"
    )]
    Descriptors { limit: u64, needed: u64 },
    #[error(
        "out of memory: the address-space limit (ulimit -v) is {limit_kib} KiB, and at least {needed_kib} KiB are needed"
    )]
    AddressSpace { limit_kib: u64, needed_kib: u64 },
    #[error("{}", crate::limits::diagnosed(.0))]
    Io(#[from] io::Error),
}

impl Error {
    pub fn output(path: &Path, error: io::Error) -> Error {
        Error::Output {
            path: path.to_path_buf(),
            error,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
