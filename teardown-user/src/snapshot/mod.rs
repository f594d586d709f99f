//! Snapshot: every TCP socket on the host as it is now, in every network namespace, with
//! its owners and what the kernel's own timestamps say about how long it has been closing.
//!
//! - [`netns`]: finds the namespaces and enters each one.
//! - [`diag`]: `NETLINK_SOCK_DIAG`, the kernel's socket list (what `ss` reads).
//! - [`owners`]: socket inode → processes, from `/proc/PID/fd` (what `ss -p` reads).
//! - [`leaks`]: CLOSE_WAIT and TIME_WAIT grouped for the leaks view (pure).
//!
//! Owners come from `/proc` rather than a `task_file` BPF iterator: it needs no privileges
//! for the user's own processes (the leaks view works unprivileged), no kernel program to
//! load and verify, and it is what `ss -p` does, so the two agree.

pub mod diag;
pub mod leaks;
pub mod netns;
pub mod owners;

use std::collections::{BTreeMap, HashMap};

use teardown_common::state;

use crate::reconstruct::{BeforeTrace, Tuple};

pub use diag::{DiagSocket, TcpInfo};

/// Sockets kept in detail at most (about 120 bytes each); more are counted, not kept.
pub const MAX_SOCKETS: usize = 1 << 20;

/// One socket, where it lives and who holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Socket {
    /// The network namespace's inode.
    pub netns: u64,
    pub diag: DiagSocket,
    /// Processes holding a descriptor of it (several after fork).
    pub owners: Box<[u32]>,
}

impl Socket {
    /// A TIME_WAIT mini-socket (substate TIME_WAIT or FIN_WAIT2): no process, no inode.
    pub fn is_mini(&self) -> bool {
        self.diag.timer == diag::TIMER_TIME_WAIT
    }

    /// For a CLOSE_WAIT socket: how long ago the peer's FIN arrived, in ms, as
    /// `(at_least, at_most)`. The kernel stamps every ACK it receives (`tcp_info`
    /// `last_ack_recv`) and the FIN carries one, so the FIN is at least that old unless
    /// the peer acknowledged something later; it stamps every data segment
    /// (`last_data_recv`), and the FIN comes after the last data, so it is at most that
    /// old. Both are counted in jiffies, so each is exact to one tick.
    pub fn since_fin_ms(&self) -> Option<(u32, u32)> {
        if self.diag.state != state::CLOSE_WAIT {
            return None;
        }
        let info = self.diag.info?;
        let at_most = info.last_data_recv_ms;
        Some((info.last_ack_recv_ms.min(at_most), at_most))
    }
}

/// One namespace's settings and how many sockets it had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub inode: u64,
    pub settings: netns::Settings,
    pub sockets: u64,
}

/// What the snapshot could not see, so the view can say so.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unseen {
    /// Namespaces found but not entered, and the first reason.
    pub namespaces: u64,
    pub namespace_error: Option<String>,
    /// Processes whose namespace could not be looked up, and the first of them.
    pub processes_netns: u64,
    pub first_process_netns: Option<String>,
    /// Processes whose file descriptors could not be read.
    pub processes_fds: u64,
    /// Sockets beyond `MAX_SOCKETS`.
    pub sockets_dropped: u64,
}

impl Unseen {
    /// One line saying what is missing, or `None` when nothing is.
    pub fn line(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.namespaces > 0 {
            parts.push(format!(
                "{} not entered ({})",
                leaks::counted(self.namespaces, "network namespace", "network namespaces"),
                self.namespace_error.as_deref().unwrap_or("unknown reason")
            ));
        }
        if self.processes_netns > 0 {
            parts.push(format!(
                "the network namespaces of {} not readable ({})",
                leaks::counted(self.processes_netns, "process", "processes"),
                self.first_process_netns
                    .as_deref()
                    .unwrap_or("unknown reason")
            ));
        }
        if self.processes_fds > 0 {
            parts.push(format!(
                "owners among {} whose descriptors are not readable",
                leaks::counted(self.processes_fds, "process", "processes")
            ));
        }
        if self.sockets_dropped > 0 {
            parts.push(format!(
                "{} beyond the {MAX_SOCKETS} kept",
                leaks::counted(self.sockets_dropped, "socket", "sockets")
            ));
        }
        (!parts.is_empty()).then(|| format!("not seen: {}", parts.join("; ")))
    }
}

#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// CLOCK_MONOTONIC when the snapshot was taken.
    pub taken_ns: u64,
    pub namespaces: Vec<Namespace>,
    pub sockets: Vec<Socket>,
    /// Owner pid → comm.
    pub comms: BTreeMap<u32, String>,
    pub unseen: Unseen,
}

impl Snapshot {
    /// Takes a snapshot of every namespace this process can enter. Never fails as a whole:
    /// what could not be seen is in `unseen`.
    pub fn take(taken_ns: u64) -> Snapshot {
        let found = netns::find();
        let own = netns::own();
        let mut snapshot = Snapshot {
            taken_ns,
            ..Snapshot::default()
        };
        snapshot.unseen.processes_netns = found.unreadable;
        snapshot.unseen.first_process_netns = found.first_unreadable;
        for (&inode, path) in &found.paths {
            let entered = netns::enter(inode, path, own).and_then(|entered| {
                let before = snapshot.sockets.len() as u64;
                snapshot.dump(&entered)?;
                Ok((entered, before))
            });
            match entered {
                Ok((entered, before)) => snapshot.namespaces.push(Namespace {
                    inode,
                    settings: entered.settings,
                    sockets: snapshot.sockets.len() as u64 - before,
                }),
                // Gone since it was found (its last process exited): nothing to see.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    snapshot.unseen.namespaces += 1;
                    snapshot
                        .unseen
                        .namespace_error
                        .get_or_insert_with(|| e.to_string());
                }
            }
        }
        snapshot.attach_owners();
        snapshot
    }

    fn dump(&mut self, entered: &netns::Entered) -> std::io::Result<()> {
        for family in [libc::AF_INET, libc::AF_INET6] {
            let sockets = &mut self.sockets;
            let dropped = &mut self.unseen.sockets_dropped;
            let result = diag::dump(&entered.diag, family as u16, |diag| {
                if sockets.len() < MAX_SOCKETS {
                    sockets.push(Socket {
                        netns: entered.inode,
                        diag,
                        owners: Box::default(),
                    });
                } else {
                    *dropped += 1;
                }
            });
            // A kernel without IPv6 has no sockets of that family to list.
            match result {
                Err(e) if family == libc::AF_INET6 && e.raw_os_error() == Some(libc::ENOENT) => {}
                other => other?,
            }
        }
        Ok(())
    }

    fn attach_owners(&mut self) {
        let wanted: HashMap<u32, ()> = self
            .sockets
            .iter()
            .filter(|s| s.diag.inode != 0)
            .map(|s| (s.diag.inode, ()))
            .collect();
        let mut owners = owners::scan(&wanted);
        for socket in &mut self.sockets {
            if let Some(pids) = owners.by_inode.get(&socket.diag.inode) {
                socket.owners = pids.clone().into_boxed_slice();
            }
        }
        self.unseen.processes_fds = owners.unreadable;
        self.comms = std::mem::take(&mut owners.comms);
    }

    /// Sockets whose later transitions a trace may see, for
    /// `Reconstructor::before_trace`.
    pub fn before_trace(&self) -> impl Iterator<Item = (Tuple, BeforeTrace)> + '_ {
        self.sockets
            .iter()
            .filter(|s| !s.is_mini() && s.diag.state != state::LISTEN)
            .map(|s| {
                let d = &s.diag;
                let tuple = (
                    s.netns as u32,
                    leaks::ip(d.family, &d.saddr),
                    d.sport,
                    leaks::ip(d.family, &d.daddr),
                    d.dport,
                );
                let before = BeforeTrace {
                    state: d.state,
                    snapshot_ns: self.taken_ns,
                    since_fin_ms: s.since_fin_ms(),
                };
                (tuple, before)
            })
    }

    /// The exact tuple (namespace always included) of every full socket: not the TIME_WAIT
    /// mini-sockets, which outlive the socket they were handed from under the same tuple.
    pub fn full_sockets(&self) -> impl Iterator<Item = Tuple> + '_ {
        self.sockets.iter().filter(|s| !s.is_mini()).map(|s| {
            let d = &s.diag;
            (
                s.netns as u32,
                leaks::ip(d.family, &d.saddr),
                d.sport,
                leaks::ip(d.family, &d.daddr),
                d.dport,
            )
        })
    }

    pub fn comm(&self, pid: u32) -> &str {
        self.comms.get(&pid).map_or("", String::as_str)
    }
}

/// `--leaks`: one snapshot, shown as the leaks view on stdout (what could not be seen on
/// stderr too, so that it is not missed under `--json`).
pub fn print_leaks(as_json: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    let snapshot = Snapshot::take(crate::clock::monotonic_ns());
    let view = leaks::Leaks::of(&snapshot);
    let mut stdout = std::io::stdout().lock();
    let written = if as_json {
        if let Some(line) = snapshot.unseen.line() {
            eprintln!("teardown-trace: {line}");
        }
        writeln!(stdout, "{}", leaks::json(&snapshot, &view))
    } else {
        write!(stdout, "{}", leaks::text(&snapshot, &view))
    };
    match written.and_then(|()| stdout.flush()) {
        // The reader went away (`| head`): it has what it wanted.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// The snapshots of one trace, kept rendered for its `-o` document when there is one:
/// at start, on SIGUSR1, at exit.
pub struct TraceSnapshots {
    keep: bool,
    rendered: Vec<String>,
}

impl TraceSnapshots {
    pub fn new(keep: bool) -> Self {
        TraceSnapshots {
            keep,
            rendered: Vec::new(),
        }
    }

    /// Takes one now; `at` says why (`start`, `signal`, `exit`).
    pub fn take(&mut self, at: &str) -> Snapshot {
        let snapshot = Snapshot::take(crate::clock::monotonic_ns());
        if self.keep {
            self.rendered.push(leaks::document_json(&snapshot, at));
        }
        snapshot
    }

    /// The document's `"snapshots":[...]` member.
    pub fn member(&self) -> String {
        format!("\"snapshots\":[{}]", self.rendered.join(","))
    }
}
