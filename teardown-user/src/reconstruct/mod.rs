//! Reconstruction: where a stream of kernel transitions becomes one [`Timeline`] per socket.
//!
//! Pure: no I/O, no clock. The caller pushes [`Event`]s as they arrive and calls
//! [`Reconstructor::advance`] with the current monotonic time; events are applied in
//! timestamp order once they are older than the reorder window (the ring buffer is shared by
//! all CPUs, so neighbouring events can arrive slightly out of order).

pub mod timeline;

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasherDefault, Hasher},
};

use teardown_common::{kind, state, tcp_flag, Event};
pub use timeline::{
    link_tuple, AtClose, BeforeTrace, Evidence, MiniSocket, MiniSocketEnd, MiniSocketEndCause,
    Owner, Peer, Reset, Retransmit, Role, Seq, Still, Task, Timeline, Transition, Tuple, Wave,
    WaveKind, CLOSING_STATES,
};

use crate::filter::Filter;

/// How long an event waits for stragglers from other CPUs before it is applied.
pub const REORDER_WINDOW_NS: u64 = 10_000_000;
/// Sockets still open are bounded; the oldest is reported incomplete when it is exceeded.
/// As many as the kernel's owner table holds by default: a storm of 100,000 sockets left
/// in CLOSE_WAIT, with their 100,000 peers closing, fits.
pub const MAX_OPEN: usize = 262_144;
/// Finished sockets remembered so that a peer finishing later can name them.
const RECENT_PEERS: usize = 16_384;
/// The kernel moves an aborted socket to CLOSE *before* sending its RST
/// (`tcp_disconnect()`, `__tcp_close()`): a reset-shaped close waits this long for it.
const RESET_GRACE_NS: u64 = 1_000_000;
/// The aborting task can be preempted between the two (for several ms under emulation): a
/// reset-shaped close whose RST has not come yet waits for it, up to this long.
const RESET_MAX_WAIT_NS: u64 = 1_000_000_000;
/// How long an orphan's TIME_WAIT mini-socket waits in FIN_WAIT2 for the peer's FIN
/// (`net.ipv4.tcp_fin_timeout`, 60 s by default).
pub const FIN_TIMEOUT_NS: u64 = 60_000_000_000;
/// The longest a TIME_WAIT mini-socket lives: up to 60 s in FIN_WAIT2 substate, then the
/// peer's FIN restarts it for TIME_WAIT's fixed 60 s; a little more for its timer to run.
/// A timeline waiting for its mini-socket's end is let go after this even if no end came.
const MINI_SOCKET_MAX_NS: u64 = 2 * FIN_TIMEOUT_NS + 10_000_000_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Open sockets reported early because `MAX_OPEN` was reached.
    pub evicted: u64,
}

/// A multiply-rotate hasher: the keys (kernel addresses, 4-tuples) are not chosen by an
/// attacker, and SipHash was a measurable share of the per-event cost.
#[derive(Default)]
pub struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u16(&mut self, v: u16) {
        self.write_u64(v.into());
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v.into());
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(v.into());
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

pub struct Reconstructor {
    /// Only its owner part applies here, as a timeline leaves: the socket filters were
    /// applied where events entered (the owner may show itself only later).
    filter: Filter,
    window_ns: u64,
    max_open: usize,
    /// Events not applied yet, in timestamp order. They arrive almost sorted, so inserting
    /// from the back is nearly always a push.
    pending: VecDeque<Event>,
    open: FastMap<u64, Timeline>,
    by_tuple: FastMap<Tuple, u64>,
    recent: FastMap<Tuple, Peer>,
    recent_order: VecDeque<Tuple>,
    /// Orphans handed to a TIME_WAIT mini-socket while their peer, on this host, has not
    /// closed yet: held until it does (the peer's FIN is when their teardown really ends),
    /// or until the mini-socket would give up.
    parked: FastMap<Tuple, Timeline>,
    parked_order: VecDeque<(u64, Tuple)>,
    /// Closed sockets whose TIME_WAIT mini-socket is observed, held by 4-tuple (the kernel
    /// lets one mini-socket hold it) until it takes in the peer's FIN or, with
    /// `follow_time_wait`, until it ends; with when they closed, oldest first.
    in_mini: FastMap<Tuple, Timeline>,
    in_mini_order: VecDeque<(u64, Tuple)>,
    follow_time_wait: bool,
    /// Reset-shaped closes waiting `RESET_GRACE_NS` for their RST, oldest first.
    just_reset: VecDeque<Timeline>,
    /// The last closes, as `(sock, tuple, (from, to), ts_ns)`: the nested-run twin may
    /// repeat a transition to CLOSE after its timeline is gone (see `is_repeated_close`).
    just_closed: VecDeque<(u64, Tuple, (u8, u8), u64)>,
    /// The twin's repeats dropped so far (see `repeats`).
    repeats: u64,
    next_id: u64,
    /// When the kernel lost events, as `(after_ns, until_ns]` spans, oldest first: every
    /// timeline that may have had an event in one is marked `gap`.
    losses: VecDeque<(u64, u64)>,
    /// At exit, whether a socket still closing still exists in the kernel.
    exit_check: Option<ExistsInKernel>,
    /// Sockets open before tracing started, by exact tuple (namespace always included):
    /// each is taken by the timeline it begins.
    before: FastMap<Tuple, BeforeTrace>,
    /// A snapshot of every socket was taken when tracing started: a socket it did not
    /// have was opened while traced, so its whole close should have been seen.
    snapshot_at_start: bool,
    pub stats: Stats,
}

/// An event's connection end, as timelines are matched.
fn tuple_of(event: &Event) -> Tuple {
    link_tuple(
        event.netns,
        event.local_ip(),
        event.sport,
        event.remote_ip(),
        event.dport,
    )
}

/// Tells whether a timeline's socket exists in the kernel.
pub type ExistsInKernel = Box<dyn Fn(&Timeline) -> bool>;

/// Loss spans remembered; older ones are merged into the oldest kept.
const MAX_LOSS_SPANS: usize = 1024;

/// Closes remembered to recognise the nested-run twin's repeat of one. It comes at once
/// unless the twin was preempted (Linux 7.x): in a 7.2 guest's storm, one came after more
/// than 64 other closes and began a timeline of its own. A second of closes at a high
/// churn; only a close of a socket not followed looks through them.
const JUST_CLOSED: usize = 4096;
/// How soon a repeat follows the transition it repeats: the same firing of the tracepoint,
/// µs natively, stretched by an emulated guest's stalls (up to 113 ms were seen under
/// QEMU on a loaded host).
const REPEAT_WINDOW_NS: u64 = 1_000_000_000;

impl Reconstructor {
    pub fn new(filter: Filter) -> Self {
        Self::with_limits(filter, REORDER_WINDOW_NS, MAX_OPEN)
    }

    pub fn with_limits(filter: Filter, window_ns: u64, max_open: usize) -> Self {
        Reconstructor {
            filter,
            window_ns,
            max_open,
            pending: VecDeque::new(),
            open: FastMap::default(),
            by_tuple: FastMap::default(),
            recent: FastMap::default(),
            recent_order: VecDeque::new(),
            parked: FastMap::default(),
            parked_order: VecDeque::new(),
            in_mini: FastMap::default(),
            in_mini_order: VecDeque::new(),
            follow_time_wait: false,
            just_reset: VecDeque::new(),
            just_closed: VecDeque::new(),
            repeats: 0,
            next_id: 1,
            losses: VecDeque::new(),
            exit_check: None,
            before: FastMap::default(),
            snapshot_at_start: false,
            stats: Stats::default(),
        }
    }

    /// Sockets already open when tracing started (from the snapshot): their timelines
    /// say so, with what the snapshot measured.
    pub fn before_trace(&mut self, sockets: impl IntoIterator<Item = (Tuple, BeforeTrace)>) {
        self.before.extend(sockets);
        self.snapshot_at_start = true;
    }

    /// Holds each timeline whose TIME_WAIT mini-socket is observed until the mini-socket
    /// ends (expired, or killed by a reuse, a reset, its namespace going): up to two minutes.
    pub fn follow_time_wait(&mut self) {
        self.follow_time_wait = true;
    }

    /// Takes an event the user's filters let through.
    pub fn push(&mut self, event: &Event) {
        let about_closing = match event.kind {
            kind::STATE => {
                event.oldstate != state::LISTEN
                    && event.newstate != state::LISTEN
                    && !state::is_opening(event.newstate)
            }
            _ => true,
        };
        if !about_closing {
            return;
        }
        // Equal timestamps keep their arrival order.
        let at = self
            .pending
            .iter()
            .rposition(|e| e.ts_ns <= event.ts_ns)
            .map_or(0, |i| i + 1);
        self.pending.insert(at, *event);
    }

    /// Applies every event older than `now_ns` minus the reorder window; finished timelines
    /// go to `emit`.
    pub fn advance(&mut self, now_ns: u64, emit: &mut impl FnMut(Timeline)) {
        let horizon = now_ns.saturating_sub(self.window_ns);
        while self.pending.front().is_some_and(|e| e.ts_ns <= horizon) {
            if let Some(event) = self.pending.pop_front() {
                self.apply(&event, emit);
            }
        }
        let waited_enough = |t: &Timeline| {
            let wait = if t.resets.is_empty() {
                RESET_MAX_WAIT_NS
            } else {
                RESET_GRACE_NS
            };
            t.closed_ns()
                .is_some_and(|closed| closed.saturating_add(wait) <= horizon)
        };
        while let Some(at) = self.just_reset.iter().position(waited_enough) {
            if let Some(timeline) = self.just_reset.remove(at) {
                self.report(timeline, emit);
            }
        }
        while self
            .in_mini_order
            .front()
            .is_some_and(|&(since, _)| since.saturating_add(MINI_SOCKET_MAX_NS) <= horizon)
        {
            if let Some((since, tuple)) = self.in_mini_order.pop_front() {
                if self.in_mini.get(&tuple).and_then(Timeline::closed_ns) == Some(since) {
                    if let Some(timeline) = self.in_mini.remove(&tuple) {
                        self.report_now(timeline, emit);
                    }
                }
            }
        }
        while self
            .parked_order
            .front()
            .is_some_and(|&(since, _)| since.saturating_add(FIN_TIMEOUT_NS) <= horizon)
        {
            if let Some((_, tuple)) = self.parked_order.pop_front() {
                if let Some(timeline) = self.parked.remove(&tuple) {
                    self.hand_out(timeline, emit);
                }
            }
        }
    }

    /// Applies everything left, then reports sockets still closing as incomplete: they
    /// were followed until `end_ns`, when tracing stopped.
    pub fn finish(mut self, end_ns: u64, emit: &mut impl FnMut(Timeline)) -> Stats {
        self.advance(u64::MAX, emit);
        while let Some(timeline) = self.just_reset.pop_front() {
            self.report(timeline, emit);
        }
        let mut open: Vec<Timeline> = self.open.drain().map(|(_, t)| t).collect();
        open.sort_by_key(|t| t.id);
        for timeline in &mut open {
            timeline.followed_until_ns = Some(end_ns);
            if let Some(exists) = &self.exit_check {
                let in_kernel = exists(timeline);
                timeline.in_kernel_at_exit = Some(in_kernel);
                // Gone without a CLOSE seen: its end was lost, not leaked.
                timeline.gap |= !in_kernel;
            }
        }
        for timeline in &open {
            self.remember(timeline);
        }
        for timeline in open {
            self.report(timeline, emit);
        }
        let mut parked: Vec<Timeline> = self.parked.drain().map(|(_, t)| t).collect();
        parked.sort_by_key(|t| t.id);
        for timeline in parked {
            self.hand_out(timeline, emit);
        }
        self.stats
    }

    /// The kernel lost events stamped after `after_ns` and up to `until_ns`: which sockets
    /// they belonged to is not known, so every timeline that may have had one says so.
    pub fn note_loss(&mut self, after_ns: u64, until_ns: u64) {
        match self.losses.back_mut() {
            Some(last) if last.1 >= after_ns => last.1 = last.1.max(until_ns),
            _ => self.losses.push_back((after_ns, until_ns)),
        }
        if self.losses.len() > MAX_LOSS_SPANS {
            if let Some((after, _)) = self.losses.pop_front() {
                if let Some(oldest) = self.losses.front_mut() {
                    oldest.0 = oldest.0.min(after);
                }
            }
        }
    }

    /// Whether an event of `timeline` may be among those lost: a loss while it was seen,
    /// or, for one first seen mid-close, any loss before (its start may be what was lost).
    fn may_have_lost(&self, timeline: &Timeline) -> bool {
        let Some((first, last)) = timeline.seen_span() else {
            return !self.losses.is_empty();
        };
        let end = timeline.followed_until_ns.unwrap_or(last).max(last);
        self.losses
            .iter()
            .any(|&(after, until)| after < end && (until >= first || timeline.first_seen_mid_close))
    }

    /// At `finish`, each socket still closing is looked for in the kernel with `exists`.
    pub fn check_open_at_exit(&mut self, exists: ExistsInKernel) {
        self.exit_check = Some(exists);
    }

    /// How many sockets are being followed.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Transitions dropped as the nested-run twin's repeats of ones the main program sent:
    /// of the twin's runs, these recovered nothing, so the kernel's count of runs the main
    /// program missed and the twin made up is its twin runs less these.
    pub fn repeats(&self) -> u64 {
        self.repeats
    }

    /// The sockets being followed: not closed yet.
    pub fn open_timelines(&self) -> impl Iterator<Item = &Timeline> {
        self.open.values()
    }

    fn apply(&mut self, event: &Event, emit: &mut impl FnMut(Timeline)) {
        if kind::is_mini_socket(event.kind) {
            self.apply_mini_socket(event, emit);
            return;
        }
        if event.kind == kind::NAMESPACE_GONE {
            self.namespace_gone(event.netns, event.ts_ns, emit);
            return;
        }
        let sock = event.skaddr;
        if event.kind != kind::STATE && event.oldstate == state::CLOSE {
            // The RST of an abort, sent just after the socket reached CLOSE.
            if let Some(t) = self.just_reset.iter_mut().rev().find(|t| t.sock == sock) {
                t.resets.push(Reset::of(event));
            }
            return;
        }
        let key = tuple_of(event);
        // The kernel reuses a socket's address after CLOSE; an open timeline with another
        // tuple means that CLOSE was lost.
        if self.open.get(&sock).is_some_and(|t| t.tuple() != key) {
            if let Some(mut stale) = self.close(sock) {
                stale.gap = true;
                self.report(stale, emit);
            }
        }
        if !self.open.contains_key(&sock) {
            if self.is_repeated_close(sock, key, event) {
                self.repeats += 1;
                return;
            }
            self.begin(sock, key, event, emit);
        }
        let Some(timeline) = self.open.get_mut(&sock) else {
            return;
        };
        if event.owner_pid != 0 {
            timeline.owner = Some(Owner {
                task: Task {
                    pid: event.owner_pid,
                    comm: event.owner_comm,
                },
                source: event.owner_source,
            });
        }
        match event.kind {
            // The nested-run twin may repeat a transition the main program sent (see
            // teardown-ebpf's programs/state.rs); a socket never makes one change twice in
            // a row.
            kind::STATE
                if event.oldstate != event.newstate
                    && timeline
                        .transitions
                        .last()
                        .is_some_and(|t| (t.from, t.to) == (event.oldstate, event.newstate)) =>
            {
                self.repeats += 1
            }
            kind::STATE => {
                match timeline.transitions.last() {
                    Some(last) if last.to != event.oldstate => timeline.gap = true,
                    None if !matches!(
                        event.oldstate,
                        state::ESTABLISHED | state::SYN_SENT | state::SYN_RECV
                    ) =>
                    {
                        timeline.first_seen_mid_close = true
                    }
                    _ => {}
                }
                timeline.transitions.push(Transition {
                    from: event.oldstate,
                    to: event.newstate,
                    ts_ns: event.ts_ns,
                    task: Task {
                        pid: event.task_pid,
                        comm: event.task_comm,
                    },
                    sock_flags: event.sock_flags,
                    seq: Seq::of(event),
                });
                if event.newstate == state::CLOSE {
                    if self.just_closed.len() >= JUST_CLOSED {
                        self.just_closed.pop_front();
                    }
                    let change = (event.oldstate, event.newstate);
                    self.just_closed.push_back((sock, key, change, event.ts_ns));
                    if let Some(done) = self.close(sock) {
                        self.remember(&done);
                        if done.role() == Some(Role::Reset) {
                            self.just_reset.push_back(done);
                        } else {
                            self.report(done, emit);
                        }
                    }
                }
            }
            kind::RETRANSMIT => timeline.retransmits.push(Retransmit {
                ts_ns: event.ts_ns,
                state: event.oldstate,
                fin: event.tcp_flags & tcp_flag::FIN != 0,
            }),
            kind::RESET_SENT | kind::RESET_RECEIVED => timeline.resets.push(Reset::of(event)),
            // A socket is handed over once: a second is the repeat of a kernel whose two
            // hand-over programs could not tell each other they ran (see teardown-ebpf's
            // programs/time_wait.rs).
            kind::TIME_WAIT_ENTER if timeline.mini.is_none() => {
                timeline.mini = Some(MiniSocket::entered(event.ts_ns, event.newstate))
            }
            // accept() handed out a socket already closing, before any transition was seen:
            // it started closing before the trace did.
            kind::OWNER
                if timeline.transitions.is_empty()
                    && !matches!(event.oldstate, state::ESTABLISHED | state::SYN_RECV) =>
            {
                timeline.first_seen_mid_close = true
            }
            _ => {}
        }
    }

    /// An event of a TIME_WAIT mini-socket, joined to its socket's timeline by the 4-tuple:
    /// held since the socket closed, or still open when the event raced the socket's CLOSE.
    fn apply_mini_socket(&mut self, event: &Event, emit: &mut impl FnMut(Timeline)) {
        let key = tuple_of(event);
        let timeline = if self.in_mini.contains_key(&key) {
            self.in_mini.get_mut(&key)
        } else {
            let sock = self.by_tuple.get(&key).copied();
            sock.and_then(|sock| self.open.get_mut(&sock))
        };
        // A mini-socket from before tracing started, or of a socket filtered out.
        let Some(mini) = timeline.and_then(|t| t.mini.as_mut()) else {
            return;
        };
        match event.kind {
            kind::TIME_WAIT_SEGMENT => {
                let fin = event.tcp_flags & tcp_flag::FIN != 0;
                if fin && event.oldstate == state::FIN_WAIT2 && mini.fin_received_ns.is_none() {
                    mini.fin_received_ns = Some(event.ts_ns);
                }
            }
            kind::TIME_WAIT_REUSE => {
                mini.reused_ns.get_or_insert(event.ts_ns);
            }
            _ => mini.end = Some(MiniSocketEnd::of(event.ts_ns, event.reason)),
        }
        if self
            .in_mini
            .get(&key)
            .is_some_and(|t| !self.awaits_mini_socket(t))
        {
            if let Some(timeline) = self.in_mini.remove(&key) {
                self.report(timeline, emit);
            }
        }
    }

    /// Network namespace `netns` went away by `ts_ns`, and the kernel purged its
    /// mini-sockets with it: those still held end there (unless their kill was seen).
    fn namespace_gone(&mut self, netns: u32, ts_ns: u64, emit: &mut impl FnMut(Timeline)) {
        let mut gone: Vec<(u64, Tuple)> = self
            .in_mini
            .iter()
            .filter(|(_, t)| t.netns == netns)
            .map(|(&tuple, t)| (t.id, tuple))
            .collect();
        gone.sort_unstable();
        for (_, tuple) in gone {
            if let Some(mut timeline) = self.in_mini.remove(&tuple) {
                if let Some(mini) = timeline.mini.as_mut() {
                    mini.end.get_or_insert(MiniSocketEnd {
                        ts_ns,
                        cause: MiniSocketEndCause::NamespaceGone,
                    });
                }
                self.report_now(timeline, emit);
            }
        }
    }

    /// Whether a closed timeline waits for more from its mini-socket: the peer's FIN, or,
    /// when following TIME_WAIT, the end.
    fn awaits_mini_socket(&self, timeline: &Timeline) -> bool {
        timeline
            .mini
            .is_some_and(|m| m.awaits_fin() || (self.follow_time_wait && m.end.is_none()))
    }

    fn begin(&mut self, sock: u64, key: Tuple, event: &Event, emit: &mut impl FnMut(Timeline)) {
        if self.open.len() >= self.max_open {
            self.evict_oldest(event.ts_ns, emit);
        }
        let id = self.next_id;
        self.next_id += 1;
        let before_trace = if self.before.is_empty() {
            None
        } else {
            self.before
                .remove(&(event.netns, key.1, key.2, key.3, key.4))
        };
        self.open.insert(
            sock,
            Timeline {
                id,
                sock,
                family: event.family(),
                laddr: key.1,
                lport: key.2,
                raddr: key.3,
                rport: key.4,
                netns: event.netns,
                owner: None,
                transitions: Vec::with_capacity(4),
                resets: Vec::new(),
                retransmits: Vec::new(),
                peer: None,
                first_seen_mid_close: false,
                in_kernel_at_exit: None,
                gap: false,
                followed_until_ns: None,
                before_trace,
                mini: None,
            },
        );
        self.by_tuple.insert(key, sock);
    }

    /// Reports the oldest sixteenth of the open sockets as incomplete, followed until
    /// `now_ns`: one scan buys room for many new sockets.
    fn evict_oldest(&mut self, now_ns: u64, emit: &mut impl FnMut(Timeline)) {
        let mut ids: Vec<(u64, u64)> = self.open.values().map(|t| (t.id, t.sock)).collect();
        let count = (ids.len() / 16).max(1);
        ids.select_nth_unstable(count - 1);
        for &(_, sock) in &ids[..count] {
            if let Some(mut timeline) = self.close(sock) {
                timeline.followed_until_ns = Some(now_ns);
                self.stats.evicted += 1;
                self.remember(&timeline);
                self.report(timeline, emit);
            }
        }
    }

    /// Takes a timeline out of the open set.
    fn close(&mut self, sock: u64) -> Option<Timeline> {
        let timeline = self.open.remove(&sock)?;
        if self.by_tuple.get(&timeline.tuple()) == Some(&sock) {
            self.by_tuple.remove(&timeline.tuple());
        }
        Some(timeline)
    }

    fn as_peer(timeline: &Timeline) -> Peer {
        Peer {
            id: timeline.id,
            owner: timeline.owner,
            role: timeline.role(),
            fin_sent_ns: timeline.fin_sent_ns(),
            fin_seq: timeline.fin_seq(),
            fin_received_ns: timeline.fin_received_ns(),
            ack_received_ns: timeline.ack_received_ns(),
            closed_ns: timeline.closed_ns(),
        }
    }

    /// Keeps a finished socket's summary for a peer that finishes later. Even a peer not
    /// seen yet may come: the receiver of an RST has its first event after the sender's
    /// CLOSE. The peer consumes the entry; entries nobody reads age out.
    /// Whether `event` repeats the transition to CLOSE that just ended this socket's
    /// timeline: the nested-run twin sends a transition again when another transition ran
    /// the main program on that CPU in between (seen under QEMU on 5.10 and 7.2), and the
    /// repeat of a CLOSE would otherwise begin a timeline of its own. Both come from one
    /// firing of the tracepoint, so the repeat follows within `REPEAT_WINDOW_NS`; a new
    /// socket at the same address and tuple could not close the same way that soon.
    fn is_repeated_close(&self, sock: u64, key: Tuple, event: &Event) -> bool {
        event.kind == kind::STATE
            && event.newstate == state::CLOSE
            && self.just_closed.iter().rev().any(|&(s, k, change, ts)| {
                s == sock
                    && k == key
                    && change == (event.oldstate, event.newstate)
                    && event.ts_ns.abs_diff(ts) <= REPEAT_WINDOW_NS
            })
    }

    fn remember(&mut self, timeline: &Timeline) {
        if self.recent_order.len() >= RECENT_PEERS {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent.remove(&old);
            }
        }
        self.recent
            .insert(timeline.tuple(), Self::as_peer(timeline));
        self.recent_order.push_back(timeline.tuple());
    }

    /// Holds a closed timeline while its mini-socket has more to tell; reports it otherwise.
    fn report(&mut self, timeline: Timeline, emit: &mut impl FnMut(Timeline)) {
        if timeline.never_opened() {
            return;
        }
        if timeline.complete() && self.awaits_mini_socket(&timeline) {
            let tuple = timeline.tuple();
            self.in_mini_order
                .push_back((timeline.closed_ns().unwrap_or(0), tuple));
            // Only when its end was lost can another timeline still hold the tuple.
            if let Some(stale) = self.in_mini.insert(tuple, timeline) {
                self.hand_out(stale, emit);
            }
            return;
        }
        self.report_now(timeline, emit);
    }

    /// Names the peer, then hands the timeline out, or parks an orphan while its peer on
    /// this host is still closing.
    fn report_now(&mut self, mut timeline: Timeline, emit: &mut impl FnMut(Timeline)) {
        let mirror = timeline.peer_tuple();
        let peer_open = self.by_tuple.contains_key(&mirror);
        timeline.peer = match self.by_tuple.get(&mirror) {
            Some(sock) => self.open.get(sock).map(Self::as_peer),
            // A connection has two ends: once read, the entry has served its purpose.
            None => self.recent.remove(&mirror),
        };
        // An observed mini-socket tells when the peer's FIN came: no need to wait for it.
        if timeline.complete()
            && timeline.time_wait() == Some(state::FIN_WAIT2)
            && timeline.mini.is_none()
            && peer_open
        {
            let since = timeline.closed_ns().unwrap_or(0);
            self.parked_order.push_back((since, timeline.tuple()));
            self.parked.insert(timeline.tuple(), timeline);
            return;
        }
        // This socket's end is what a parked peer was waiting for.
        if let Some(parked) = self.parked.remove(&mirror) {
            self.report(parked, emit);
        }
        self.hand_out(timeline, emit);
    }

    /// The one way out: applies the owner filter. With `-p`, a socket whose owner never
    /// showed is not the user's to see.
    fn hand_out(&self, mut timeline: Timeline, emit: &mut impl FnMut(Timeline)) {
        if !timeline.whole() && self.may_have_lost(&timeline) {
            timeline.gap = true;
        }
        // Opened while traced (the start snapshot did not have it), yet first seen
        // mid-close: a transition went missing that the kernel did not even count.
        if timeline.first_seen_mid_close
            && timeline.before_trace.is_none()
            && self.snapshot_at_start
        {
            timeline.gap = true;
        }
        let owner_pid = timeline.owner.map(|o| o.task.pid);
        let wanted = self.filter.pids.is_empty()
            || owner_pid.is_some_and(|pid| self.filter.matches_owner(pid));
        if wanted {
            emit(timeline);
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod time_wait_tests;
