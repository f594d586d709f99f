//! One socket's teardown as this host saw it, and what can be concluded from it.

use std::net::IpAddr;

use teardown_common::{sock_flags, state, Family, COMM_LEN};

/// Who closed first, as this socket lived it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Left ESTABLISHED for FIN_WAIT1: sent the first FIN.
    Active,
    /// ESTABLISHED → CLOSE_WAIT: the peer's FIN came first.
    Passive,
    /// Went through CLOSING: both FINs crossed.
    Simultaneous,
    /// Reached CLOSE from ESTABLISHED, CLOSE_WAIT or a handshake state without a FIN
    /// exchange: a reset sent or received (or a failed connect).
    Reset,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Active, Role::Passive, Role::Simultaneous, Role::Reset];

    pub fn name(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Passive => "passive",
            Role::Simultaneous => "simultaneous",
            Role::Reset => "reset",
        }
    }
}

/// How a wave's time is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// A state change or socket flag of this socket, at that moment.
    Observed,
    /// Concluded from how TCP works, or read off the peer socket on this host.
    Inferred,
    /// Happened out of this socket's sight (for example inside a TIME_WAIT mini-socket).
    NotObserved,
}

impl Evidence {
    pub fn name(self) -> &'static str {
        match self {
            Evidence::Observed => "observed",
            Evidence::Inferred => "inferred",
            Evidence::NotObserved => "not_observed",
        }
    }
}

/// One of the four segments of the close, from this side's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaveKind {
    FinSent,
    AckReceived,
    FinReceived,
    AckSent,
}

impl WaveKind {
    pub fn name(self) -> &'static str {
        match self {
            WaveKind::FinSent => "fin_sent",
            WaveKind::AckReceived => "ack_received",
            WaveKind::FinReceived => "fin_received",
            WaveKind::AckSent => "ack_sent",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wave {
    pub what: WaveKind,
    pub ts_ns: Option<u64>,
    pub evidence: Evidence,
    /// Where the time comes from.
    pub basis: &'static str,
}

impl Wave {
    /// A wave whose time, when there is one, is known as `evidence` says.
    fn known_as(
        evidence: Evidence,
        what: WaveKind,
        ts_ns: Option<u64>,
        basis: &'static str,
    ) -> Wave {
        let evidence = if ts_ns.is_some() {
            evidence
        } else {
            Evidence::NotObserved
        };
        Wave {
            what,
            ts_ns,
            evidence,
            basis,
        }
    }
}

/// A process, as the kernel names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Task {
    pub pid: u32,
    pub comm: [u8; COMM_LEN],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub task: Task,
    /// `owner_source::*`: which call showed the owner.
    pub source: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: u8,
    pub to: u8,
    pub ts_ns: u64,
    /// The task running when it happened: often softirq or the peer, not the owner.
    pub task: Task,
    /// `sock_flags::*` at that moment.
    pub sock_flags: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reset {
    pub ts_ns: u64,
    pub sent: bool,
    /// The kernel's `enum sk_rst_reason` value (resets sent only).
    pub reason: u8,
}

impl Reset {
    /// From a `RESET_SENT` or `RESET_RECEIVED` event.
    pub fn of(event: &teardown_common::Event) -> Reset {
        Reset {
            ts_ns: event.ts_ns,
            sent: event.kind == teardown_common::kind::RESET_SENT,
            reason: event.reason,
        }
    }
}

/// A segment sent again while closing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retransmit {
    pub ts_ns: u64,
    /// The state the socket was in.
    pub state: u8,
    /// The segment carried this side's FIN.
    pub fin: bool,
}

/// The other end of the connection, when it is a socket on this host too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub id: u64,
    pub owner: Option<Owner>,
    pub role: Option<Role>,
    /// When the peer sent its FIN (entered FIN_WAIT1 or LAST_ACK), if it did.
    pub fin_sent_ns: Option<u64>,
    /// When the peer's socket reached CLOSE, if it has.
    pub closed_ns: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeline {
    /// Unique within one run; peers refer to each other by it.
    pub id: u64,
    pub sock: u64,
    pub family: Family,
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
    /// The network namespace (inode number); 0 when the kernel has none to tell.
    pub netns: u32,
    pub owner: Option<Owner>,
    pub transitions: Vec<Transition>,
    pub resets: Vec<Reset>,
    pub retransmits: Vec<Retransmit>,
    pub peer: Option<Peer>,
    /// The first transition seen did not leave ESTABLISHED: tracing began mid-close.
    pub first_seen_mid_close: bool,
    /// This timeline may lack events: a transition did not start where the previous one
    /// ended, or the kernel lost events while it was followed.
    pub gap: bool,
    /// For a socket still closing at exit: whether the kernel still had it (`None`: not
    /// looked for). Gone means its end was lost.
    pub in_kernel_at_exit: Option<bool>,
    /// Set when the socket was still closing as the trace stopped following it (tracing
    /// ended, or too many sockets were open): that moment.
    pub followed_until_ns: Option<u64>,
    /// The socket was already open when tracing started: what the snapshot saw then.
    pub before_trace: Option<BeforeTrace>,
}

/// A socket as the snapshot taken when tracing started found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BeforeTrace {
    pub state: u8,
    /// CLOCK_MONOTONIC of the snapshot.
    pub snapshot_ns: u64,
    /// For CLOSE_WAIT: ms since the peer's FIN at the snapshot, `(at_least, at_most)`
    /// (`snapshot::Socket::since_fin_ms`).
    pub since_fin_ms: Option<(u32, u32)>,
}

/// Where a socket still closing was when the trace stopped following it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Still {
    pub state: u8,
    /// When it entered that state.
    pub since_ns: u64,
    /// How long it had been there.
    pub for_ns: u64,
    /// Whether the kernel still had the socket at exit (`None`: not looked for).
    pub in_kernel: Option<bool>,
}

/// A connection end, as peers are matched: the 4-tuple, plus the network namespace for
/// loopback, where every namespace has its own 127.0.0.1 (two containers can hold the same
/// loopback tuple at once). Other addresses link across namespaces: a container talking to
/// its host is one connection.
pub type Tuple = (u32, IpAddr, u16, IpAddr, u16);

pub fn link_tuple(netns: u32, laddr: IpAddr, lport: u16, raddr: IpAddr, rport: u16) -> Tuple {
    let netns = if laddr.is_loopback() { netns } else { 0 };
    (netns, laddr, lport, raddr, rport)
}

/// The closing states whose time is reported.
pub const CLOSING_STATES: [u8; 5] = [
    state::FIN_WAIT1,
    state::FIN_WAIT2,
    state::CLOSE_WAIT,
    state::LAST_ACK,
    state::CLOSING,
];

impl Timeline {
    pub fn state(&self) -> Option<u8> {
        self.transitions.last().map(|t| t.to)
    }

    pub fn complete(&self) -> bool {
        self.state() == Some(state::CLOSE)
    }

    /// For a socket still closing at the end: its state and for how long (a CLOSE_WAIT
    /// that keeps growing is a leak). `None` if it closed, or if no transition was seen.
    pub fn still(&self) -> Option<Still> {
        let until = self.followed_until_ns.filter(|_| !self.complete())?;
        let last = self.transitions.last()?;
        Some(Still {
            state: last.to,
            since_ns: last.ts_ns,
            for_ns: until.saturating_sub(last.ts_ns),
            in_kernel: self.in_kernel_at_exit,
        })
    }

    fn find(&self, from: &[u8], to: u8) -> Option<&Transition> {
        self.transitions
            .iter()
            .find(|t| t.to == to && (from.is_empty() || from.contains(&t.from)))
    }

    /// Every transition from an open connection to CLOSE was seen, each starting where the
    /// previous one ended: no transition can be missing from it, whatever was lost
    /// meanwhile (a lost reset or retransmission note could be).
    pub fn whole(&self) -> bool {
        let opened = self.transitions.first().is_some_and(|t| {
            matches!(
                t.from,
                state::ESTABLISHED | state::SYN_SENT | state::SYN_RECV
            )
        });
        opened && self.complete() && !self.gap && !self.first_seen_mid_close
    }

    /// The first and last moments an event of this socket was seen.
    pub fn seen_span(&self) -> Option<(u64, u64)> {
        let times = self
            .transitions
            .iter()
            .map(|t| t.ts_ns)
            .chain(self.resets.iter().map(|r| r.ts_ns))
            .chain(self.retransmits.iter().map(|r| r.ts_ns));
        times.fold(None, |span, ts| match span {
            None => Some((ts, ts)),
            Some((first, last)) => Some((first.min(ts), last.max(ts))),
        })
    }

    /// `None` until the socket has left ESTABLISHED in a way that tells.
    pub fn role(&self) -> Option<Role> {
        let last = self.transitions.last()?;
        let handshake = [
            state::ESTABLISHED,
            state::CLOSE_WAIT,
            state::SYN_SENT,
            state::SYN_RECV,
        ];
        if last.to == state::CLOSE && handshake.contains(&last.from) {
            Some(Role::Reset)
        } else if self.find(&[], state::CLOSING).is_some() {
            Some(Role::Simultaneous)
        } else if self.find(&[], state::FIN_WAIT1).is_some() {
            Some(Role::Active)
        } else if self.find(&[], state::CLOSE_WAIT).is_some() {
            Some(Role::Passive)
        } else if !self.resets.is_empty() {
            Some(Role::Reset)
        } else {
            None
        }
    }

    /// Nanoseconds spent in each closing state this socket left.
    pub fn durations_ns(&self) -> Vec<(u8, u64)> {
        let mut out = Vec::new();
        for pair in self.transitions.windows(2) {
            let (enter, leave) = (pair[0], pair[1]);
            if CLOSING_STATES.contains(&enter.to) && leave.from == enter.to {
                let spent = leave.ts_ns.saturating_sub(enter.ts_ns);
                match out.iter_mut().find(|(s, _)| *s == enter.to) {
                    Some((_, total)) => *total += spent,
                    None => out.push((enter.to, spent)),
                }
            }
        }
        out
    }

    /// From leaving ESTABLISHED to CLOSE, when both were seen.
    pub fn teardown_ns(&self) -> Option<u64> {
        let first = self.transitions.first()?;
        let last = self.transitions.last()?;
        (!self.first_seen_mid_close && last.to == state::CLOSE)
            .then(|| last.ts_ns.saturating_sub(first.ts_ns))
    }

    /// The application shut down sending with shutdown() but kept the socket (and could go
    /// on reading): a half-close.
    pub fn half_close(&self) -> bool {
        self.find(&[state::ESTABLISHED, state::SYN_RECV], state::FIN_WAIT1)
            .is_some_and(|t| t.sock_flags & sock_flags::RCV_SHUTDOWN == 0)
    }

    /// What this side handed to TIME_WAIT: `Some(TIME_WAIT)` once the peer's FIN was in,
    /// `Some(FIN_WAIT2)` for an orphan still waiting for it in the mini-socket.
    pub fn time_wait(&self) -> Option<u8> {
        let last = self.transitions.last()?;
        match (last.from, last.to) {
            (state::CLOSING, state::CLOSE) => Some(state::TIME_WAIT),
            (state::FIN_WAIT2, state::CLOSE) if last.sock_flags & sock_flags::FIN_RECEIVED != 0 => {
                Some(state::TIME_WAIT)
            }
            (state::FIN_WAIT2, state::CLOSE) => Some(state::FIN_WAIT2),
            _ => None,
        }
    }

    /// The four segments of the close as far as this side can tell.
    pub fn waves(&self) -> Vec<Wave> {
        let at = |from: &[u8], to: u8| self.find(from, to).map(|t| t.ts_ns);
        let observed = |what, ts, basis| Wave::known_as(Evidence::Observed, what, ts, basis);
        let inferred = |what, ts, basis| Wave::known_as(Evidence::Inferred, what, ts, basis);
        let peer_fin = self.peer.and_then(|p| p.fin_sent_ns);
        let peer_closed = self.peer.and_then(|p| p.closed_ns);
        match self.role() {
            Some(Role::Active) => {
                let fin_sent = at(&[], state::FIN_WAIT1);
                let ack_received = at(&[state::FIN_WAIT1], state::FIN_WAIT2);
                let mut waves = vec![
                    observed(WaveKind::FinSent, fin_sent, "ESTABLISHED->FIN_WAIT1"),
                    observed(WaveKind::AckReceived, ack_received, "FIN_WAIT1->FIN_WAIT2"),
                ];
                if self.time_wait() == Some(state::TIME_WAIT) {
                    let fin_in = self.transitions.last().map(|t| t.ts_ns);
                    waves.push(observed(
                        WaveKind::FinReceived,
                        fin_in,
                        "FIN_WAIT2->CLOSE with SOCK_DONE set",
                    ));
                    waves.push(inferred(
                        WaveKind::AckSent,
                        fin_in,
                        "a FIN is acknowledged at once",
                    ));
                } else if peer_fin.is_some() {
                    waves.push(inferred(
                        WaveKind::FinReceived,
                        peer_fin,
                        "peer socket on this host sent its FIN",
                    ));
                    waves.push(inferred(
                        WaveKind::AckSent,
                        peer_closed,
                        "peer socket on this host got the last ACK",
                    ));
                } else {
                    let basis = if self.time_wait() == Some(state::FIN_WAIT2) {
                        "after hand-over to the TIME_WAIT mini-socket"
                    } else {
                        "not seen"
                    };
                    waves.push(observed(WaveKind::FinReceived, None, basis));
                    waves.push(observed(WaveKind::AckSent, None, basis));
                }
                waves
            }
            Some(Role::Passive) => {
                let fin_in = at(&[], state::CLOSE_WAIT);
                vec![
                    observed(WaveKind::FinReceived, fin_in, "ESTABLISHED->CLOSE_WAIT"),
                    inferred(
                        WaveKind::AckSent,
                        fin_in,
                        "a FIN is acknowledged at once (or with our FIN)",
                    ),
                    observed(
                        WaveKind::FinSent,
                        at(&[state::CLOSE_WAIT], state::LAST_ACK),
                        "CLOSE_WAIT->LAST_ACK",
                    ),
                    observed(
                        WaveKind::AckReceived,
                        at(&[state::LAST_ACK], state::CLOSE),
                        "LAST_ACK->CLOSE",
                    ),
                ]
            }
            Some(Role::Simultaneous) => {
                let crossing = at(&[state::FIN_WAIT1], state::CLOSING);
                vec![
                    observed(
                        WaveKind::FinSent,
                        at(&[], state::FIN_WAIT1),
                        "ESTABLISHED->FIN_WAIT1",
                    ),
                    observed(WaveKind::FinReceived, crossing, "FIN_WAIT1->CLOSING"),
                    inferred(WaveKind::AckSent, crossing, "a FIN is acknowledged at once"),
                    observed(
                        WaveKind::AckReceived,
                        at(&[state::CLOSING], state::CLOSE),
                        "CLOSING->CLOSE",
                    ),
                ]
            }
            Some(Role::Reset) | None => Vec::new(),
        }
    }

    /// The peer socket's tuple, as it would report it.
    pub fn peer_tuple(&self) -> Tuple {
        link_tuple(self.netns, self.raddr, self.rport, self.laddr, self.lport)
    }

    pub fn tuple(&self) -> Tuple {
        link_tuple(self.netns, self.laddr, self.lport, self.raddr, self.rport)
    }

    /// When the peer would have seen this side's FIN, for the peer's waves.
    pub fn fin_sent_ns(&self) -> Option<u64> {
        self.find(&[state::ESTABLISHED, state::SYN_RECV], state::FIN_WAIT1)
            .or_else(|| self.find(&[state::CLOSE_WAIT], state::LAST_ACK))
            .map(|t| t.ts_ns)
    }

    pub fn closed_ns(&self) -> Option<u64> {
        self.complete()
            .then(|| self.transitions.last().map(|t| t.ts_ns))
            .flatten()
    }
}
