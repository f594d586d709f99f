//! The library's errors. Each renders as one line a user can act on; the binary adds context
//! with `anyhow` and never shows a backtrace.

use std::path::PathBuf;

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
    #[error("cannot write {path}: {source}")]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt recording {path} at byte {offset}: {reason}")]
    Recording {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// Not a `source`: the message already says it, and anyhow would print it twice.
    #[error("cannot serve metrics on {addr}: {error}")]
    Metrics {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
