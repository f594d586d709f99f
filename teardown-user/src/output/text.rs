//! Human-readable renderers: one line per teardown (the default), one line per raw
//! transition (`--raw`, tcpstates-like columns) and the summary printed at exit.

use std::{collections::HashMap, fmt::Write as _};

use teardown_common::{kind, owner_source, state};

use crate::{
    event::{self, Event},
    reconstruct::{Owner, Role, Timeline, Transition},
};

use super::{json::KernelNames, pairs::Pairs};

/// Converts kernel monotonic timestamps to wall-clock time of day.
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC, in ns.
    pub realtime_offset_ns: i128,
}

impl Clock {
    /// `HH:MM:SS.mmm` (UTC) of a monotonic timestamp.
    pub fn time_of_day(&self, ts_ns: u64) -> String {
        let unix_ns = ts_ns as i128 + self.realtime_offset_ns;
        let ms_of_day = (unix_ns / 1_000_000).rem_euclid(86_400_000);
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            ms_of_day / 3_600_000,
            ms_of_day / 60_000 % 60,
            ms_of_day / 1000 % 60,
            ms_of_day % 1000
        )
    }
}

/// A task name for a terminal: printable ASCII as is, anything else escaped.
pub fn comm(raw: &[u8; 16]) -> String {
    let mut out = String::new();
    for &b in event::comm(raw) {
        if b.is_ascii_graphic() || b == b' ' {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

pub(crate) fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

pub(crate) fn endpoint(ip: std::net::IpAddr, port: u16) -> String {
    match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        v4 => format!("{v4}:{port}"),
    }
}

fn owner_columns(owner: Option<Owner>) -> (String, String) {
    match owner {
        Some(o) => (o.task.pid.to_string(), comm(&o.task.comm)),
        None => ("?".into(), "?".into()),
    }
}

pub const TIMELINE_HEADER: &str =
    "TIME         ROLE          PID     COMM             LOCAL                  REMOTE                 CLOSE_MS  PHASES (ms)";

/// One completed (or abandoned) teardown.
pub fn timeline(t: &Timeline, clock: &Clock, names: &KernelNames) -> String {
    let when = t.transitions.first().map(|tr| tr.ts_ns).unwrap_or(0);
    let (pid, comm) = owner_columns(t.owner);
    let role = t.role().map_or("unknown", Role::name);
    let total = t.teardown_ns().map_or_else(|| "-".to_string(), ms);
    let mut phases = String::new();
    for (st, ns) in t.durations_ns() {
        let _ = write!(phases, "{} {} > ", state::name(st), ms(ns));
    }
    if t.complete() {
        match t.time_wait() {
            Some(state::FIN_WAIT2) => {
                phases.push_str("TIME_WAIT mini-socket in FIN_WAIT2");
                let fin_in = t.waves().into_iter().find(|w| w.what == "fin_received");
                match (fin_in.and_then(|w| w.ts_ns), t.transitions.last()) {
                    (Some(fin), Some(last)) => {
                        let _ = write!(
                            phases,
                            ", peer FIN {} later (from peer)",
                            ms(fin.saturating_sub(last.ts_ns))
                        );
                    }
                    _ => phases.push_str(", peer FIN not seen"),
                }
            }
            Some(_) => phases.push_str("TIME_WAIT"),
            None => phases.push_str("CLOSE"),
        }
    } else if let Some(still) = t.still() {
        let _ = write!(
            phases,
            "still {} for {}",
            state::name(still.state),
            ms(still.for_ns)
        );
    } else {
        let _ = write!(phases, "still {}", t.state().map_or("?", state::name));
    }
    if t.half_close() {
        phases.push_str(" [half-close]");
    }
    if let Some(reset) = t.resets.first() {
        match (reset.sent, names.reset_reason(reset.reason)) {
            (true, Some(reason)) => {
                let _ = write!(phases, " [RST sent: {reason}]");
            }
            (true, None) => phases.push_str(" [RST sent]"),
            (false, _) => phases.push_str(" [RST received]"),
        }
    }
    let fins = t.retransmits.iter().filter(|r| r.fin).count();
    if fins > 0 {
        let _ = write!(phases, " [FIN retransmitted x{fins}]");
    } else if !t.retransmits.is_empty() {
        let _ = write!(phases, " [{} retransmissions]", t.retransmits.len());
    }
    if let Some(peer) = t.peer {
        let _ = write!(phases, " [peer #{}]", peer.id);
    }
    format!(
        "{:<12} {:<13} {:<7} {:<16} {:<22} {:<22} {:>9}  #{} {}",
        clock.time_of_day(when),
        role,
        pid,
        comm,
        endpoint(t.laddr, t.lport),
        endpoint(t.raddr, t.rport),
        total,
        t.id,
        phases
    )
}

/// What a transition tells about the segments on the wire, in the words of the four-way
/// close.
fn meaning(tr: &Transition) -> &'static str {
    use teardown_common::sock_flags::{FIN_RECEIVED, ORPHAN};
    match (tr.from, tr.to) {
        (state::ESTABLISHED | state::SYN_RECV, state::FIN_WAIT1) => "sends FIN",
        (state::ESTABLISHED, state::CLOSE_WAIT) => "receives FIN, ACKs it",
        (state::FIN_WAIT1, state::FIN_WAIT2) => "receives the ACK of its FIN",
        (state::FIN_WAIT1, state::CLOSING) => "receives FIN before the ACK of its own (crossing)",
        (state::CLOSE_WAIT, state::LAST_ACK) => "sends FIN",
        (state::LAST_ACK, state::CLOSE) => "receives the last ACK: closed",
        (state::CLOSING, state::CLOSE) => "receives the ACK of its FIN: TIME_WAIT",
        (state::FIN_WAIT2, state::CLOSE) if tr.sock_flags & FIN_RECEIVED != 0 => {
            "receives FIN, sends the last ACK: TIME_WAIT"
        }
        (state::FIN_WAIT2, state::CLOSE) if tr.sock_flags & ORPHAN != 0 => {
            "orphan handed to a TIME_WAIT mini-socket, which waits for the FIN"
        }
        (state::FIN_WAIT1, state::CLOSE) => "closed without the ACK of its FIN (reset or timeout)",
        (_, state::CLOSE) => "closed without a FIN exchange (reset)",
        _ => "",
    }
}

/// `--exchange`: both ends of a connection on this host, as one exchange in time order,
/// printed when the second end's timeline is out.
#[derive(Default)]
pub struct ExchangePrinter {
    pairs: Pairs,
}

impl ExchangePrinter {
    pub fn timeline(&mut self, t: &Timeline, clock: &Clock, names: &KernelNames) -> Option<String> {
        let first = self.pairs.offer(t, &mut |_| {})?;
        Some(exchange(&first, t, clock, names))
    }
}

fn who(t: &Timeline) -> String {
    let (pid, comm) = owner_columns(t.owner);
    format!("#{} {} ({comm} {pid})", t.id, endpoint(t.laddr, t.lport))
}

/// Both ends' transitions merged in time, each with what it means on the wire; resets and
/// retransmissions in their place among them.
pub fn exchange(a: &Timeline, b: &Timeline, clock: &Clock, names: &KernelNames) -> String {
    let mut lines: Vec<(u64, String)> = Vec::new();
    for t in [a, b] {
        let at = endpoint(t.laddr, t.lport);
        for tr in &t.transitions {
            let (from, to) = (state::name(tr.from), state::name(tr.to));
            lines.push((
                tr.ts_ns,
                format!("{at:<22} {from:<11} -> {to:<11}  {}", meaning(tr)),
            ));
        }
        for r in &t.resets {
            let what = if r.sent { "sends RST" } else { "receives RST" };
            let reason = names.sent_reason(r.sent, r.reason).unwrap_or("");
            lines.push((r.ts_ns, format!("{at:<22} {what} {reason}")));
        }
        for r in &t.retransmits {
            let what = if r.fin {
                "retransmits its FIN (no ACK yet)"
            } else {
                "retransmits a segment"
            };
            lines.push((r.ts_ns, format!("{at:<22} {what}")));
        }
    }
    lines.sort_by_key(|(ts, _)| *ts);
    // Time runs from the first transition, as the header says.
    let transitions = a.transitions.iter().chain(&b.transitions);
    let start = transitions.map(|tr| tr.ts_ns).min().unwrap_or(0);
    let how = match (a.role(), b.role()) {
        (Some(Role::Active), _) => format!("#{} closed first", a.id),
        (_, Some(Role::Active)) => format!("#{} closed first", b.id),
        (Some(Role::Simultaneous), _) | (_, Some(Role::Simultaneous)) => {
            "both closed at once".into()
        }
        (Some(Role::Reset), _) | (_, Some(Role::Reset)) => "reset".into(),
        _ => "seen mid-close".into(),
    };
    let mut out = format!(
        "== {} <-> {}: {how}, at {}",
        who(a),
        who(b),
        clock.time_of_day(start)
    );
    for (ts, line) in lines {
        let since = format!("+{}", ms(ts.saturating_sub(start)));
        let _ = write!(out, "\n  {since:>12} ms  {}", line.trim_end());
    }
    out
}

pub const RAW_HEADER: &str = "TIME         SKADDR             PID     COMM             LOCAL                  REMOTE                 OLDSTATE    -> NEWSTATE    MS        CONTEXT";

/// `--raw`: every transition as it comes, with the socket's owner and, apart, the task that
/// happened to be running.
#[derive(Default)]
pub struct RawPrinter {
    /// When each socket entered its current state, for the MS column.
    since: HashMap<u64, u64>,
}

impl RawPrinter {
    pub fn line(&mut self, e: &Event, clock: &Clock, names: &KernelNames) -> String {
        let (pid, owner) = if e.owner_pid == 0 {
            ("?".to_string(), "?".to_string())
        } else {
            (e.owner_pid.to_string(), comm(&e.owner_comm))
        };
        let (old, new) = match e.kind {
            kind::RESET_SENT => (state::name(e.oldstate), "RST sent"),
            kind::RESET_RECEIVED => (state::name(e.oldstate), "RST received"),
            kind::OWNER => (state::name(e.oldstate), "owner known"),
            kind::RETRANSMIT if e.tcp_flags & teardown_common::tcp_flag::FIN != 0 => {
                (state::name(e.oldstate), "FIN resent")
            }
            kind::RETRANSMIT => (state::name(e.oldstate), "resent"),
            _ => (state::name(e.oldstate), state::name(e.newstate)),
        };
        let in_state = match e.kind {
            kind::STATE => {
                let before = self.since.insert(e.skaddr, e.ts_ns);
                if e.newstate == state::CLOSE {
                    self.since.remove(&e.skaddr);
                }
                before.map_or_else(|| "-".into(), |t| ms(e.ts_ns.saturating_sub(t)))
            }
            _ => "-".into(),
        };
        let mut context = format!("{}/{}", e.task_pid, comm(&e.task_comm));
        if e.owner_pid != 0 {
            let _ = write!(context, " owner-by:{}", owner_source::name(e.owner_source));
        }
        if let Some(reason) = names.sent_reason(e.kind == kind::RESET_SENT, e.reason) {
            let _ = write!(context, " reason:{reason}");
        }
        format!(
            "{:<12} {:<18x} {:<7} {:<16} {:<22} {:<22} {:<11} -> {:<12} {:<9} {}",
            clock.time_of_day(e.ts_ns),
            e.skaddr,
            pid,
            owner,
            endpoint(event::local_ip(e), e.sport),
            endpoint(event::remote_ip(e), e.dport),
            old,
            new,
            in_state,
            context
        )
    }
}

/// What a run saw, for the closing summary and the JSON document.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Kernel events handled.
    pub events: u64,
    pub by_role: [u64; 4],
    pub unknown_role: u64,
    pub incomplete: u64,
    pub lost_events: u64,
    pub lost_owners: u64,
    pub evicted: u64,
    /// With `--raw`: events printed. Nothing is reconstructed then, so no teardowns either.
    pub raw_shown: Option<u64>,
}

impl Summary {
    pub fn count(&mut self, t: &Timeline) {
        match t.role() {
            Some(role) => {
                if let Some(i) = Role::ALL.iter().position(|r| *r == role) {
                    self.by_role[i] += 1;
                }
            }
            None => self.unknown_role += 1,
        }
        if !t.complete() {
            self.incomplete += 1;
        }
    }

    pub fn total(&self) -> u64 {
        self.by_role.iter().sum::<u64>() + self.unknown_role
    }

    pub fn line(&self) -> String {
        let mut out = String::new();
        if let Some(shown) = self.raw_shown {
            let _ = write!(out, "{shown} events shown, ");
        } else {
            let _ = write!(out, "{} teardowns (", self.total());
            for (role, n) in Role::ALL.iter().zip(self.by_role) {
                let _ = write!(out, "{} {n}, ", role.name());
            }
            let _ = write!(
                out,
                "unknown {}), {} still closing, ",
                self.unknown_role, self.incomplete
            );
        }
        let _ = write!(
            out,
            "{} events seen, {} lost events",
            self.events, self.lost_events
        );
        if self.lost_owners > 0 {
            let _ = write!(
                out,
                ", {} owners not recorded (owner table full)",
                self.lost_owners
            );
        }
        if self.evicted > 0 {
            let _ = write!(
                out,
                ", {} sockets reported early (too many open)",
                self.evicted
            );
        }
        out
    }
}
