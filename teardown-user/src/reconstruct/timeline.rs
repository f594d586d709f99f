//! One socket's teardown as this host saw it, and what can be concluded from it.

use std::net::IpAddr;

use teardown_common::{seq_flags, sock_flags, state, time_wait_end, Family, COMM_LEN};

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

/// One of the segments of the close, from this side's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaveKind {
    /// The application closed: the FIN is queued, not a segment yet.
    FinQueued,
    /// The FIN on the wire.
    FinSent,
    AckReceived,
    FinReceived,
    AckSent,
}

/// Waves a close has at most: one of each kind.
const WAVES: usize = 5;

impl WaveKind {
    pub fn name(self) -> &'static str {
        match self {
            WaveKind::FinQueued => "fin_queued",
            WaveKind::FinSent => "fin_sent",
            WaveKind::AckReceived => "ack_received",
            WaveKind::FinReceived => "fin_received",
            WaveKind::AckSent => "ack_sent",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wave {
    /// What happened: `fin_queued` (the application closed: not a segment yet), `fin_sent`
    /// (on the wire), `ack_received`, `fin_received`, `ack_sent`.
    pub what: WaveKind,
    pub ts_ns: Option<u64>,
    pub evidence: Evidence,
    /// Where the time comes from.
    pub basis: &'static str,
    /// For a FIN its sequence number (the seed article's u or w); for an ACK the number it
    /// acknowledges (u+1 or w+1).
    pub seq: Option<u32>,
    /// When the time is inferred or not observed: the moments it certainly lies between
    /// (`None` where open-ended).
    pub earliest_ns: Option<u64>,
    pub latest_ns: Option<u64>,
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
            seq: None,
            earliest_ns: None,
            latest_ns: None,
        }
    }

    fn seq(self, seq: Option<u32>) -> Wave {
        Wave { seq, ..self }
    }

    /// Between `earliest` and `latest`.
    fn within(self, earliest: Option<u64>, latest: Option<u64>) -> Wave {
        Wave {
            earliest_ns: earliest,
            latest_ns: latest,
            ..self
        }
    }
}

/// A TCP socket's sequence state at a transition (`struct tcp_sock`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seq {
    pub snd_una: u32,
    pub snd_nxt: u32,
    pub write_seq: u32,
    pub rcv_nxt: u32,
    /// `seq_flags::ACK_*` and `PINGPONG`.
    pub flags: u8,
}

impl Seq {
    /// From an event, when the kernel read the socket's sequence state.
    pub fn of(event: &teardown_common::Event) -> Option<Seq> {
        (event.seq_flags & seq_flags::KNOWN != 0).then_some(Seq {
            snd_una: event.snd_una,
            snd_nxt: event.snd_nxt,
            write_seq: event.write_seq,
            rcv_nxt: event.rcv_nxt,
            flags: event.seq_flags,
        })
    }

    /// Bytes the application wrote that had not been sent yet.
    pub fn unsent(&self) -> u32 {
        self.write_seq.wrapping_sub(self.snd_nxt)
    }

    /// Bytes sent and not acknowledged by the peer yet.
    pub fn unacked(&self) -> u32 {
        self.snd_nxt.wrapping_sub(self.snd_una)
    }

    /// An ACK was owed to the peer and not sent yet (scheduled, or its delayed-ACK timer
    /// running).
    pub fn ack_owed(&self) -> bool {
        self.flags & (seq_flags::ACK_SCHEDULED | seq_flags::ACK_TIMER) != 0
    }
}

/// What the application left to send when it closed (or shut down) the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtClose {
    pub ts_ns: u64,
    pub unsent: u32,
    pub unacked: u32,
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
    /// The socket's sequence state, when the kernel could read it.
    pub seq: Option<Seq>,
}

impl Transition {
    /// close() after shutdown(): the kernel re-enters the same state as the application
    /// lets go of the socket, which becomes an orphan.
    pub fn is_release(&self) -> bool {
        self.from == self.to
    }
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

/// The TIME_WAIT mini-socket the kernel handed this socket's end to, as its fentry/fexit
/// hooks saw it (absent where the kernel refuses them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MiniSocket {
    pub entered_ns: u64,
    /// Its substate at the hand-over: TIME_WAIT, or FIN_WAIT2 for an orphan still waiting
    /// for the peer's FIN.
    pub substate: u8,
    /// The peer's FIN reaching it in FIN_WAIT2 substate (it then enters TIME_WAIT).
    pub fin_received_ns: Option<u64>,
    /// A new connection took over its 4-tuple (`tcp_tw_reuse`).
    pub reused_ns: Option<u64>,
    pub end: Option<MiniSocketEnd>,
}

impl MiniSocket {
    pub fn entered(ts_ns: u64, substate: u8) -> MiniSocket {
        MiniSocket {
            entered_ns: ts_ns,
            substate,
            fin_received_ns: None,
            reused_ns: None,
            end: None,
        }
    }

    /// Still waiting for the peer's FIN, with nothing else to tell its end yet.
    pub fn awaits_fin(&self) -> bool {
        self.substate == state::FIN_WAIT2 && self.fin_received_ns.is_none() && self.end.is_none()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MiniSocketEnd {
    pub ts_ns: u64,
    pub cause: MiniSocketEndCause,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MiniSocketEndCause {
    /// Its timer ran out.
    Expired,
    /// Taken down before its time (reused, reset, its namespace gone), as it happened.
    Killed,
    /// Its network namespace went away, which purges every mini-socket in it: the kill
    /// itself was not seen, and `ts_ns` is when the purge had finished (it ended before).
    NamespaceGone,
}

impl MiniSocketEnd {
    /// From a `TIME_WAIT_END` event's reason.
    pub fn of(ts_ns: u64, reason: u8) -> MiniSocketEnd {
        let cause = if reason == time_wait_end::EXPIRED {
            MiniSocketEndCause::Expired
        } else {
            MiniSocketEndCause::Killed
        };
        MiniSocketEnd { ts_ns, cause }
    }

    pub fn how(&self) -> &'static str {
        match self.cause {
            MiniSocketEndCause::Expired => "expired",
            MiniSocketEndCause::Killed | MiniSocketEndCause::NamespaceGone => "killed",
        }
    }

    /// `how`, with what it was known from when that was not the kill itself.
    pub fn describe(&self) -> &'static str {
        match self.cause {
            MiniSocketEndCause::NamespaceGone => "killed with its namespace",
            _ => self.how(),
        }
    }

    pub fn evidence(&self) -> Evidence {
        match self.cause {
            MiniSocketEndCause::NamespaceGone => Evidence::Inferred,
            _ => Evidence::Observed,
        }
    }

    pub fn basis(&self) -> &'static str {
        match self.cause {
            MiniSocketEndCause::Expired => "its timer ran out (tw_timer_handler)",
            MiniSocketEndCause::Killed => "taken down before its time (inet_twsk_deschedule_put)",
            MiniSocketEndCause::NamespaceGone => {
                "its network namespace went away: the kernel purged its mini-sockets by then"
            }
        }
    }
}

/// The other end of the connection, when it is a socket on this host too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub id: u64,
    pub owner: Option<Owner>,
    pub role: Option<Role>,
    /// When the peer queued its FIN (entered FIN_WAIT1 or LAST_ACK), if it did.
    pub fin_sent_ns: Option<u64>,
    /// The peer FIN's sequence number.
    pub fin_seq: Option<u32>,
    /// When the peer's socket took in this side's FIN: the FIN's arrival on the wire.
    pub fin_received_ns: Option<u64>,
    /// When the peer's socket took in the ACK of its own FIN (FIN_WAIT1->FIN_WAIT2,
    /// CLOSING->CLOSE or LAST_ACK->CLOSE): that ACK's arrival on the wire.
    pub ack_received_ns: Option<u64>,
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
    /// Its TIME_WAIT mini-socket, where the kernel lets it be observed.
    pub mini: Option<MiniSocket>,
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

    /// The socket was in state `s` while traced: it entered it, or was first seen leaving it.
    fn was_in(&self, s: u8) -> bool {
        self.transitions.first().is_some_and(|t| t.from == s) || self.find(&[], s).is_some()
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

    /// A handshake that ended without a reset: a connect() that timed out, or a child the
    /// kernel cloned twice for one handshake (two segments completing it at once on two
    /// CPUs) and dropped. Never a connection, so no teardown.
    pub fn never_opened(&self) -> bool {
        matches!(
            self.transitions.as_slice(),
            [only] if only.to == state::CLOSE
                && matches!(only.from, state::SYN_SENT | state::SYN_RECV)
        ) && self.resets.is_empty()
    }

    /// `None` until the socket has been in a state that tells: one it entered, or the one
    /// it was first seen leaving (tracing began mid-close: `first_seen_mid_close`).
    pub fn role(&self) -> Option<Role> {
        let last = self.transitions.last()?;
        // Only a reset or an abort takes an open connection straight to CLOSE. A handshake
        // that ends there is a reset only where one was seen (see `never_opened`).
        if last.to == state::CLOSE && matches!(last.from, state::ESTABLISHED | state::CLOSE_WAIT) {
            Some(Role::Reset)
        } else if self.was_in(state::CLOSING) {
            Some(Role::Simultaneous)
        } else if self.fin_queued_first().is_some()
            // Its FIN was acknowledged before any of the peer's came in: none can cross it.
            || self.was_in(state::FIN_WAIT2)
            // First seen in FIN_WAIT1, it tells once it left without crossing a FIN (until
            // then one still could).
            || self.find(&[state::FIN_WAIT1], state::CLOSE).is_some()
        {
            Some(Role::Active)
        } else if self.was_in(state::CLOSE_WAIT) || self.was_in(state::LAST_ACK) {
            // LAST_ACK is only reached from CLOSE_WAIT.
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
        self.fin_queued_first()
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

    /// The close's segments as far as this side can tell, each with its sequence number.
    /// (Allocated once at their full number: grown from two, the vector was reallocated
    /// twice per timeline.)
    pub fn waves(&self) -> Vec<Wave> {
        let at = |from: &[u8], to: u8| self.find(from, to);
        let ts = |t: Option<&Transition>| t.map(|t| t.ts_ns);
        let seq = |t: Option<&Transition>, f: fn(&Seq) -> u32| t.and_then(|t| t.seq).map(|s| f(&s));
        let observed =
            |what, t: Option<u64>, basis| Wave::known_as(Evidence::Observed, what, t, basis);
        let inferred =
            |what, t: Option<u64>, basis| Wave::known_as(Evidence::Inferred, what, t, basis);
        let peer = self.peer;
        // The FIN taken in: its number is one below what the socket expects next.
        let fin_in_seq = |t| seq(t, |s| s.rcv_nxt.wrapping_sub(1));
        match self.role() {
            Some(Role::Active) => {
                let close = self.fin_queued_first();
                let acked = at(&[state::FIN_WAIT1], state::FIN_WAIT2);
                let mut waves = Vec::with_capacity(WAVES);
                waves.extend(self.own_fin(close, "ESTABLISHED->FIN_WAIT1", acked));
                waves.push(
                    observed(WaveKind::AckReceived, ts(acked), "FIN_WAIT1->FIN_WAIT2")
                        .seq(seq(acked, |s| s.snd_una)),
                );
                if self.time_wait() == Some(state::TIME_WAIT) {
                    let fin_in = self.transitions.last();
                    waves.push(
                        observed(
                            WaveKind::FinReceived,
                            ts(fin_in),
                            "FIN_WAIT2->CLOSE with SOCK_DONE set",
                        )
                        .seq(fin_in_seq(fin_in)),
                    );
                    waves.push(self.ack_at_once(fin_in, "FIN_WAIT2"));
                } else if let Some(fin_in) = self.mini.and_then(|m| m.fin_received_ns) {
                    // The mini-socket takes in a FIN only at the number the socket expected
                    // next when it handed over (any other segment is reset or dropped).
                    let fin_seq = seq(self.transitions.last(), |s| s.rcv_nxt);
                    waves.push(
                        observed(
                            WaveKind::FinReceived,
                            Some(fin_in),
                            "reached the TIME_WAIT mini-socket in FIN_WAIT2 substate",
                        )
                        .seq(fin_seq),
                    );
                    waves.push(self.acked_at_once(
                        Some(fin_in),
                        fin_seq.map(|w| w.wrapping_add(1)),
                        "the TIME_WAIT mini-socket acknowledges a FIN at once (TCP_TW_ACK)",
                    ));
                } else if let Some(p) = peer.filter(|p| p.fin_sent_ns.is_some()) {
                    waves.push(
                        inferred(
                            WaveKind::FinReceived,
                            p.fin_sent_ns,
                            "peer socket on this host sent its FIN",
                        )
                        .seq(p.fin_seq)
                        .within(p.fin_sent_ns, p.ack_received_ns),
                    );
                    waves.push(
                        observed(
                            WaveKind::AckSent,
                            p.ack_received_ns,
                            "peer socket on this host received it (LAST_ACK->CLOSE)",
                        )
                        .seq(p.fin_seq.map(|w| w.wrapping_add(1))),
                    );
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
                let close = at(&[state::CLOSE_WAIT], state::LAST_ACK);
                let acked = at(&[state::LAST_ACK], state::CLOSE);
                let mut waves = Vec::with_capacity(WAVES);
                waves.push(
                    observed(WaveKind::FinReceived, ts(fin_in), "ESTABLISHED->CLOSE_WAIT")
                        .seq(fin_in_seq(fin_in)),
                );
                waves.push(self.passive_ack(fin_in, close, acked));
                // In LAST_ACK it had closed, even where that was before it was first seen.
                if self.was_in(state::LAST_ACK) {
                    waves.extend(self.own_fin(close, "CLOSE_WAIT->LAST_ACK", acked));
                }
                waves.push(
                    observed(WaveKind::AckReceived, ts(acked), "LAST_ACK->CLOSE")
                        .seq(seq(acked, |s| s.snd_una)),
                );
                waves
            }
            Some(Role::Simultaneous) => {
                let close = self.fin_queued_first();
                let crossing = at(&[state::FIN_WAIT1], state::CLOSING);
                let acked = at(&[state::CLOSING], state::CLOSE);
                let mut waves = Vec::with_capacity(WAVES);
                waves.extend(self.own_fin(close, "ESTABLISHED->FIN_WAIT1", acked));
                waves.push(
                    observed(WaveKind::FinReceived, ts(crossing), "FIN_WAIT1->CLOSING")
                        .seq(fin_in_seq(crossing)),
                );
                waves.push(self.ack_at_once(crossing, "FIN_WAIT1"));
                waves.push(
                    observed(WaveKind::AckReceived, ts(acked), "CLOSING->CLOSE")
                        .seq(seq(acked, |s| s.snd_una)),
                );
                waves
            }
            Some(Role::Reset) | None => Vec::new(),
        }
    }

    /// This side's FIN: queued when the application closed (`close`, leaving by `basis`),
    /// then on the wire, which is seen only from a peer on this host or deduced when
    /// nothing could hold it back. `acked` is when its ACK came back: it left before that.
    fn own_fin(
        &self,
        close: Option<&Transition>,
        basis: &'static str,
        acked: Option<&Transition>,
    ) -> [Wave; 2] {
        let fin_seq = close.and_then(|t| t.seq).map(|s| s.write_seq);
        let queued_ns = close.map(|t| t.ts_ns);
        let acked_ns = acked.map(|t| t.ts_ns);
        let queued =
            Wave::known_as(Evidence::Observed, WaveKind::FinQueued, queued_ns, basis).seq(fin_seq);
        let first_resend = self.retransmits.iter().find(|r| r.fin).map(|r| r.ts_ns);
        let wire = |evidence, ts, basis| {
            Wave::known_as(evidence, WaveKind::FinSent, ts, basis).seq(fin_seq)
        };
        let sent = if let Some(arrived) = self.peer.and_then(|p| p.fin_received_ns) {
            wire(
                Evidence::Observed,
                Some(arrived),
                "peer socket on this host received it",
            )
        } else if first_resend.is_some() {
            wire(
                Evidence::NotObserved,
                None,
                "queued, then retransmitted: the first copy was lost or failed locally",
            )
            .within(queued_ns, first_resend)
        } else {
            match close.and_then(|t| t.seq) {
                Some(s) if s.unsent() == 0 && s.unacked() == 0 => wire(
                    Evidence::Inferred,
                    queued_ns,
                    "nothing unsent or in flight at close: tcp_send_fin() sends it at once",
                )
                .within(queued_ns, acked_ns),
                Some(s) if s.unsent() > 0 => wire(
                    Evidence::NotObserved,
                    None,
                    "queued behind unsent data: left once it drained",
                )
                .within(queued_ns, acked_ns),
                _ => wire(Evidence::NotObserved, None, "not seen").within(queued_ns, acked_ns),
            }
        };
        [queued, sent]
    }

    /// The ACK of a FIN taken in at `fin_in` in FIN_WAIT1 or FIN_WAIT2: `tcp_fin()` sends it
    /// at once, just before the state changes; the peer on this host sees it arrive.
    fn ack_at_once(&self, fin_in: Option<&Transition>, state_name: &'static str) -> Wave {
        let basis = match state_name {
            "FIN_WAIT1" => "tcp_fin() acknowledges a FIN in FIN_WAIT1 at once, then enters CLOSING",
            _ => "tcp_fin() acknowledges a FIN in FIN_WAIT2 at once, then enters TIME_WAIT",
        };
        let ack_seq = fin_in.and_then(|t| t.seq).map(|s| s.rcv_nxt);
        self.acked_at_once(fin_in.map(|t| t.ts_ns), ack_seq, basis)
    }

    /// An ACK sent at once on a FIN taken in at `fin_in` (as `basis` says why), unless the
    /// peer on this host saw it arrive.
    fn acked_at_once(
        &self,
        fin_in: Option<u64>,
        ack_seq: Option<u32>,
        basis: &'static str,
    ) -> Wave {
        if let Some(arrived) = self.peer.and_then(|p| p.ack_received_ns) {
            return Wave::known_as(
                Evidence::Observed,
                WaveKind::AckSent,
                Some(arrived),
                "peer socket on this host received it",
            )
            .seq(ack_seq);
        }
        Wave::known_as(Evidence::Inferred, WaveKind::AckSent, fin_in, basis)
            .seq(ack_seq)
            .within(fin_in, fin_in)
    }

    /// The passive side's ACK of the peer's FIN. A FIN puts the socket in delayed-ACK
    /// (pingpong) mode, so it is not sent at once: seen arriving at a peer on this host, or
    /// told from whether the ACK was still owed when the application closed.
    fn passive_ack(
        &self,
        fin_in: Option<&Transition>,
        close: Option<&Transition>,
        acked: Option<&Transition>,
    ) -> Wave {
        let ack_seq = fin_in.and_then(|t| t.seq).map(|s| s.rcv_nxt);
        let wave = |evidence, ts, basis| {
            Wave::known_as(evidence, WaveKind::AckSent, ts, basis).seq(ack_seq)
        };
        let fin_in_ns = fin_in.map(|t| t.ts_ns);
        let owed_at_close = close.and_then(|t| t.seq).is_some_and(|s| s.ack_owed());
        if let Some(arrived) = self.peer.and_then(|p| p.ack_received_ns) {
            let basis = if owed_at_close {
                "merged into our FIN: the peer socket on this host received them together"
            } else {
                "peer socket on this host received it (FIN_WAIT1->FIN_WAIT2)"
            };
            return wave(Evidence::Observed, Some(arrived), basis);
        }
        let close_ns = close.map(|t| t.ts_ns);
        match close.and_then(|t| t.seq) {
            Some(s) if s.ack_owed() => wave(
                Evidence::Inferred,
                close_ns,
                "merged into our FIN: still owed when the application closed (FIN+ACK)",
            )
            .within(close_ns, acked.map(|t| t.ts_ns)),
            Some(_) => wave(
                Evidence::NotObserved,
                None,
                "delayed (delayed-ACK mode after a FIN): sent before the application closed",
            )
            .within(fin_in_ns, close_ns),
            None => wave(
                Evidence::NotObserved,
                None,
                "delayed-ACK mode after a FIN: not seen",
            )
            .within(fin_in_ns, close_ns),
        }
    }

    /// What was left to send when the application closed or shut down the socket.
    pub fn at_close(&self) -> Option<AtClose> {
        let close = self.fin_queued()?;
        let seq = close.seq?;
        Some(AtClose {
            ts_ns: close.ts_ns,
            unsent: seq.unsent(),
            unacked: seq.unacked(),
        })
    }

    /// close() after shutdown(): when the application let go of the socket.
    pub fn released_ns(&self) -> Option<u64> {
        self.transitions
            .iter()
            .find(|t| t.is_release())
            .map(|t| t.ts_ns)
    }

    /// When this side took in the peer's FIN, as the peer of this socket would want to know.
    pub fn fin_received_ns(&self) -> Option<u64> {
        self.transitions
            .iter()
            .find(|t| match (t.from, t.to) {
                (state::ESTABLISHED, state::CLOSE_WAIT) | (state::FIN_WAIT1, state::CLOSING) => {
                    true
                }
                (state::FIN_WAIT2, state::CLOSE) => t.sock_flags & sock_flags::FIN_RECEIVED != 0,
                _ => false,
            })
            .map(|t| t.ts_ns)
            .or(self.mini.and_then(|m| m.fin_received_ns))
    }

    /// When this side took in the ACK of its own FIN.
    pub fn ack_received_ns(&self) -> Option<u64> {
        self.transitions
            .iter()
            .find(|t| {
                matches!(
                    (t.from, t.to),
                    (state::FIN_WAIT1, state::FIN_WAIT2)
                        | (state::CLOSING, state::CLOSE)
                        | (state::LAST_ACK, state::CLOSE)
                )
            })
            .map(|t| t.ts_ns)
    }

    /// The transition where this side queued its FIN before any came from the peer: close()
    /// or shutdown() of an open connection, not a close() after a shutdown() (FIN_WAIT1 ->
    /// FIN_WAIT1), which sends nothing.
    fn fin_queued_first(&self) -> Option<&Transition> {
        self.find(&[state::ESTABLISHED, state::SYN_RECV], state::FIN_WAIT1)
    }

    /// The transition where this side queued its FIN, first or after the peer's.
    fn fin_queued(&self) -> Option<&Transition> {
        self.fin_queued_first()
            .or_else(|| self.find(&[state::CLOSE_WAIT], state::LAST_ACK))
    }

    /// When this side queued its FIN before any from the peer (ESTABLISHED -> FIN_WAIT1):
    /// `Some(0)` for a socket first seen past that point (in FIN_WAIT1, FIN_WAIT2 or
    /// CLOSING), which queued it before anything was traced.
    pub fn fin_queued_first_ns(&self) -> Option<u64> {
        let first = self.transitions.first()?;
        if self.first_seen_mid_close
            && matches!(
                first.from,
                state::FIN_WAIT1 | state::FIN_WAIT2 | state::CLOSING
            )
        {
            return Some(0);
        }
        self.fin_queued_first().map(|t| t.ts_ns)
    }

    /// This side's FIN's sequence number.
    pub fn fin_seq(&self) -> Option<u32> {
        self.fin_queued().and_then(|t| t.seq).map(|s| s.write_seq)
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
        self.fin_queued().map(|t| t.ts_ns)
    }

    pub fn closed_ns(&self) -> Option<u64> {
        self.complete()
            .then(|| self.transitions.last().map(|t| t.ts_ns))
            .flatten()
    }
}
