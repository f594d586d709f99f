//! Human-readable renderers: one line per teardown (the default), one line per raw
//! transition (`--raw`, tcpstates-like columns) and the summary printed at exit.

use std::{collections::HashMap, fmt::Write as _};

use teardown_common::{kind, owner_source, sock_flags, state, Event, KernelNames};

use crate::{
    clock::{push_padded, Clock},
    reconstruct::{Evidence, Owner, Role, Timeline, Transition, Wave, WaveKind},
};

use super::pairs::Pairs;

/// A task name for a terminal: printable ASCII as is, anything else escaped.
pub fn comm(raw: &[u8; 16]) -> String {
    let mut out = String::new();
    push_comm(&mut out, raw);
    out
}

fn push_comm(out: &mut String, raw: &[u8; 16]) {
    for &b in teardown_common::comm(raw) {
        if b.is_ascii_graphic() || b == b' ' {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

/// Milliseconds with three decimals, from integer nanoseconds rounded to the microsecond:
/// written for every phase of every line, so without float formatting or allocation.
#[derive(Clone, Copy)]
pub(crate) struct Ms(pub u64);

impl std::fmt::Display for Ms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = String::with_capacity(24);
        push_ms(&mut out, self.0);
        f.write_str(&out)
    }
}

/// [`Ms`], appended to `out`: the line per teardown writes several.
pub(crate) fn push_ms(out: &mut String, ns: u64) {
    let us = ns.saturating_add(500) / 1000;
    num(out, us / 1000);
    out.push('.');
    push_padded(out, (us % 1000) as u32, 3);
}

/// Appends a decimal integer: `core::fmt` was most of the line's cost (callgrind: 12,900
/// instructions per line, 8,600 of them in `core::fmt::write`).
fn num(out: &mut String, v: u64) {
    out.push_str(itoa::Buffer::new().format(v));
}

pub(crate) fn ms(ns: u64) -> String {
    Ms(ns).to_string()
}

pub(crate) fn endpoint(ip: std::net::IpAddr, port: u16) -> String {
    let mut out = String::new();
    push_endpoint(&mut out, ip, port);
    out
}

fn push_endpoint(out: &mut String, ip: std::net::IpAddr, port: u16) {
    match ip {
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "[{v6}]");
        }
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                num(out, octet.into());
            }
        }
    }
    out.push(':');
    num(out, port.into());
}

/// Writes a column with `write`, then pads it with spaces to `width` (left-aligned). Every
/// column is ASCII (`push_comm` escapes the rest), so bytes are characters.
fn column(out: &mut String, width: usize, write: impl FnOnce(&mut String)) {
    let start = out.len();
    write(out);
    let len = out.len() - start;
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(len)));
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
    let mut out = String::new();
    write_timeline(&mut out, t, clock, names);
    out
}

/// [`timeline`], appended to `out`: the live path reuses one buffer for every line.
pub fn write_timeline(out: &mut String, t: &Timeline, clock: &Clock, names: &KernelNames) {
    let when = t.transitions.first().map(|tr| tr.ts_ns).unwrap_or(0);
    let waves = t.waves();
    column(out, 12, |out| clock.push_time_of_day(out, when));
    out.push(' ');
    column(out, 13, |out| {
        out.push_str(t.role().map_or("unknown", Role::name))
    });
    out.push(' ');
    match t.owner {
        Some(o) => {
            column(out, 7, |out| num(out, o.task.pid.into()));
            out.push(' ');
            column(out, 16, |out| push_comm(out, &o.task.comm));
        }
        None => {
            column(out, 7, |out| out.push('?'));
            out.push(' ');
            column(out, 16, |out| out.push('?'));
        }
    }
    out.push(' ');
    column(out, 22, |out| push_endpoint(out, t.laddr, t.lport));
    out.push(' ');
    column(out, 22, |out| push_endpoint(out, t.raddr, t.rport));
    out.push(' ');
    let total = t.teardown_ns();
    let start = out.len();
    match total {
        Some(ns) => push_ms(out, ns),
        None => out.push('-'),
    }
    // Right-aligned: the spaces go before the number.
    let len = out.len() - start;
    if len < 9 {
        out.insert_str(start, &"         "[..9 - len]);
    }
    out.push_str("  #");
    num(out, t.id);
    out.push(' ');
    for (st, ns) in t.durations_ns() {
        out.push_str(state::name(st));
        out.push(' ');
        push_ms(out, ns);
        if st == state::FIN_WAIT1 {
            draining(out, t, &waves, ns);
        }
        out.push_str(" > ");
    }
    if t.complete() {
        match t.time_wait() {
            Some(state::FIN_WAIT2) => {
                out.push_str("TIME_WAIT mini-socket in FIN_WAIT2");
                let fin_in = waves.iter().find(|w| w.what == WaveKind::FinReceived);
                match (fin_in, t.transitions.last()) {
                    (
                        Some(&Wave {
                            ts_ns: Some(fin),
                            evidence,
                            ..
                        }),
                        Some(last),
                    ) => {
                        let source = if evidence == Evidence::Observed {
                            "observed"
                        } else {
                            "from peer"
                        };
                        let _ = write!(
                            out,
                            ", peer FIN {} later ({source})",
                            Ms(fin.saturating_sub(last.ts_ns))
                        );
                    }
                    _ => out.push_str(", peer FIN not seen"),
                }
            }
            Some(_) => out.push_str("TIME_WAIT"),
            None => out.push_str("CLOSE"),
        }
    } else if let Some(still) = t.still() {
        let _ = write!(
            out,
            "still {} for {}",
            state::name(still.state),
            Ms(still.for_ns)
        );
    } else {
        let _ = write!(out, "still {}", t.state().map_or("?", state::name));
    }
    if let Some((mini, end)) = t.mini.and_then(|m| m.end.map(|end| (m, end))) {
        let reused = if mini.reused_ns.is_some() {
            "reused, "
        } else {
            ""
        };
        let _ = write!(
            out,
            " [TIME_WAIT {reused}{} after {}]",
            end.describe(),
            Ms(end.ts_ns.saturating_sub(mini.entered_ns))
        );
    }
    if t.half_close() {
        out.push_str(" [half-close]");
    }
    if let Some(before) = t.before_trace {
        let _ = write!(out, " [open before tracing: {}", state::name(before.state));
        if let Some((at_least, at_most)) = before.since_fin_ms {
            let _ = write!(out, " {at_least}-{at_most} ms");
        }
        out.push(']');
    }
    if t.released_ns().is_some() {
        out.push_str(" [released after shutdown: orphan]");
    }
    sequence(out, t, &waves);
    if let Some(reset) = t.resets.first() {
        match (reset.sent, names.reset_reason(reset.reason)) {
            (true, Some(reason)) => {
                let _ = write!(out, " [RST sent: {reason}]");
            }
            (true, None) => out.push_str(" [RST sent]"),
            (false, _) => out.push_str(" [RST received]"),
        }
    }
    let fins = t.retransmits.iter().filter(|r| r.fin).count();
    if fins > 0 {
        let _ = write!(out, " [FIN retransmitted x{fins}]");
    } else if !t.retransmits.is_empty() {
        let _ = write!(out, " [{} retransmissions]", t.retransmits.len());
    }
    if let Some(peer) = t.peer {
        out.push_str(" [peer #");
        num(out, peer.id);
        out.push(']');
    }
}

/// A FIN_WAIT1 that began with data still unsent: how long the data took to drain (until
/// the FIN reached a peer on this host), apart from the wait for the ACK.
fn draining(out: &mut String, t: &Timeline, waves: &[Wave], fin_wait1_ns: u64) {
    let Some(close) = t.at_close().filter(|c| c.unsent > 0) else {
        return;
    };
    let on_wire = waves
        .iter()
        .find(|w| w.what == WaveKind::FinSent)
        .and_then(|w| w.ts_ns);
    match on_wire {
        Some(left) => {
            let drained = left.saturating_sub(close.ts_ns);
            let _ = write!(
                out,
                " (draining {} B {}, then the ACK {})",
                close.unsent,
                Ms(drained),
                Ms(fin_wait1_ns.saturating_sub(drained))
            );
        }
        None => {
            let _ = write!(out, " (draining {} B first)", close.unsent);
        }
    }
}

/// The sequence numbers of the close (the seed article's u and w), what the application
/// left unsent when it closed, and how the passive side's ACK went.
fn sequence(out: &mut String, t: &Timeline, waves: &[Wave]) {
    let wave = |what| waves.iter().find(|w| w.what == what);
    let seq = |what| wave(what).and_then(|w| w.seq);
    if let Some(u) = seq(WaveKind::FinQueued) {
        out.push_str(" [FIN ");
        num(out, u.into());
        if let Some(ack) = seq(WaveKind::AckReceived) {
            out.push_str(" ACK ");
            num(out, ack.into());
        }
        if let Some(w) = seq(WaveKind::FinReceived) {
            out.push_str("; peer FIN ");
            num(out, w.into());
        }
        if let Some(ack) = seq(WaveKind::AckSent) {
            out.push_str(" ACK ");
            num(out, ack.into());
        }
        out.push(']');
    }
    if let Some(close) = t.at_close().filter(|c| c.unsent > 0 || c.unacked > 0) {
        let _ = write!(
            out,
            " [at close: {} B unsent, {} B unacked]",
            close.unsent, close.unacked
        );
    }
    if t.role() == Some(Role::Passive) {
        if let Some(ack) = wave(WaveKind::AckSent) {
            if ack.basis.starts_with("merged") {
                out.push_str(" [ACK merged into FIN]");
            } else if let (Some(ack_ns), Some(fin_ns)) =
                (ack.ts_ns, wave(WaveKind::FinReceived).and_then(|w| w.ts_ns))
            {
                let _ = write!(
                    out,
                    " [ACK {} after FIN]",
                    Ms(ack_ns.saturating_sub(fin_ns))
                );
            }
        }
    }
}

/// What a transition tells about the segments on the wire, in the words of the four-way
/// close, with the sequence numbers when the kernel gave them.
fn meaning(tr: &Transition) -> String {
    let text = meaning_text(tr);
    let Some(seq) = tr.seq else {
        return text.into();
    };
    let fin_in = seq.rcv_nxt.wrapping_sub(1);
    let numbers = match (tr.from, tr.to) {
        (state::ESTABLISHED | state::SYN_RECV, state::FIN_WAIT1)
        | (state::CLOSE_WAIT, state::LAST_ACK) => {
            let mut n = format!("FIN {}", seq.write_seq);
            if seq.unsent() > 0 {
                let _ = write!(n, " behind {} B unsent", seq.unsent());
            }
            n
        }
        (state::ESTABLISHED, state::CLOSE_WAIT) | (state::FIN_WAIT1, state::CLOSING) => {
            format!("FIN {fin_in}, ACK {}", seq.rcv_nxt)
        }
        (state::FIN_WAIT2, state::CLOSE) if tr.sock_flags & sock_flags::FIN_RECEIVED != 0 => {
            format!("FIN {fin_in}, ACK {}", seq.rcv_nxt)
        }
        (state::FIN_WAIT1, state::FIN_WAIT2)
        | (state::LAST_ACK, state::CLOSE)
        | (state::CLOSING, state::CLOSE) => format!("ACK {}", seq.snd_una),
        _ => return text.into(),
    };
    let merged = tr.from == state::CLOSE_WAIT && tr.to == state::LAST_ACK && seq.ack_owed();
    let text = if merged {
        "sends FIN with the ACK of the peer's FIN, still delayed (merged)"
    } else {
        text
    };
    format!("{text} [{numbers}]")
}

fn meaning_text(tr: &Transition) -> &'static str {
    use sock_flags::{FIN_RECEIVED, ORPHAN};
    if tr.is_release() {
        return "close() after shutdown(): the application let go, the socket is an orphan";
    }
    match (tr.from, tr.to) {
        (state::ESTABLISHED | state::SYN_RECV, state::FIN_WAIT1) => {
            "queues FIN (application closed)"
        }
        (state::ESTABLISHED, state::CLOSE_WAIT) => "receives FIN",
        (state::FIN_WAIT1, state::FIN_WAIT2) => "receives the ACK of its FIN",
        (state::FIN_WAIT1, state::CLOSING) => "receives FIN before the ACK of its own (crossing)",
        (state::CLOSE_WAIT, state::LAST_ACK) => "queues FIN (application closed)",
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
    // Who closed first is when each end queued its FIN, not its role: in a crossing close
    // the first retransmitted FIN to land is acked at once, so one end may take the active
    // path (FIN_WAIT2) though both closed before the other's FIN arrived.
    let how = match (a.fin_queued_first_ns(), b.fin_queued_first_ns()) {
        (Some(x), Some(y)) => {
            let first = if y < x { b.id } else { a.id };
            format!("both closed at once, #{first} first")
        }
        (Some(_), None) => format!("#{} closed first", a.id),
        (None, Some(_)) => format!("#{} closed first", b.id),
        _ if [a, b].iter().any(|t| t.role() == Some(Role::Reset)) => "reset".into(),
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
            kind::TIME_WAIT_ENTER => (state::name(e.oldstate), "TIME_WAIT mini-socket"),
            kind::TIME_WAIT_SEGMENT if e.tcp_flags & teardown_common::tcp_flag::FIN != 0 => {
                (state::name(e.oldstate), "mini-socket took a FIN")
            }
            kind::TIME_WAIT_SEGMENT => (state::name(e.oldstate), "mini-socket took a segment"),
            kind::TIME_WAIT_REUSE => (state::name(e.oldstate), "mini-socket reused"),
            kind::TIME_WAIT_END if e.reason == teardown_common::time_wait_end::EXPIRED => {
                (state::name(e.oldstate), "mini-socket expired")
            }
            kind::TIME_WAIT_END => (state::name(e.oldstate), "mini-socket killed"),
            kind::NAMESPACE_GONE => ("-", "network namespace gone"),
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
            endpoint(e.local_ip(), e.sport),
            endpoint(e.remote_ip(), e.dport),
            old,
            new,
            in_state,
            context
        )
    }
}
