//! JSON rendering by hand: no allocation per value, and strings built from kernel bytes stay
//! valid JSON whatever they hold (invalid UTF-8 becomes U+FFFD; control characters are
//! escaped, so a record never spans two lines).

use std::io::Write as _;

use teardown_common::{comm, kind, owner_source, sock_flags, state, Event, Family, KernelNames};

use crate::reconstruct::{Owner, Seq, Timeline};

/// Appends `bytes` as a JSON string literal.
pub fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    // Nearly every name is plain printable ASCII: copy it in one go. The check has no early
    // exit, so that it compiles to a few vector instructions.
    let needs_escaping = bytes.iter().fold(false, |any, &b| {
        any | !(0x20..0x7f).contains(&b) | (b == b'"') | (b == b'\\')
    });
    if !needs_escaping {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut utf8 = [0u8; 4];
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => push(out, "\\\""),
                '\\' => push(out, "\\\\"),
                '\n' => push(out, "\\n"),
                '\r' => push(out, "\\r"),
                '\t' => push(out, "\\t"),
                c if (c as u32) < 0x20 || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => push(out, c.encode_utf8(&mut utf8)),
            }
        }
        if !chunk.invalid().is_empty() {
            push(out, "\u{fffd}");
        }
    }
    out.push(b'"');
}

/// Appends text as it is. Inlined, so that a constant text can be copied without a call.
#[inline(always)]
pub fn push(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
}

/// Appends a decimal integer (`core::fmt` was the largest share of the JSON cost).
#[inline]
pub fn num(out: &mut Vec<u8>, v: u64) {
    push(out, itoa::Buffer::new().format(v));
}

/// Writes each item with `write`, commas in between.
pub fn separated<T>(
    out: &mut Vec<u8>,
    items: impl IntoIterator<Item = T>,
    mut write: impl FnMut(&mut Vec<u8>, T),
) {
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, item);
    }
}

/// Appends a kernel address as a quoted `0x…` string, as `{:#x}` would (`core::fmt` took
/// ~500 instructions per address under callgrind).
pub fn hex(out: &mut Vec<u8>, v: u64) {
    let digits = (64 - (v | 1).leading_zeros()).div_ceil(4) as usize;
    let mut text = *b"\"0x0000000000000000\"";
    for (i, slot) in text[3..3 + digits].iter_mut().enumerate() {
        let nibble = (v >> (4 * (digits - 1 - i))) & 0xf;
        *slot = b"0123456789abcdef"[nibble as usize];
    }
    text[3 + digits] = b'"';
    out.extend_from_slice(&text[..4 + digits]);
}

/// `value` as `write` puts it, or `null`.
#[inline(always)]
pub fn or_null<T>(out: &mut Vec<u8>, value: Option<T>, write: impl FnOnce(&mut Vec<u8>, T)) {
    match value {
        Some(v) => write(out, v),
        None => push(out, "null"),
    }
}

fn ip(out: &mut Vec<u8>, addr: std::net::IpAddr) {
    out.push(b'"');
    match addr {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                num(out, octet.into());
            }
        }
        v6 => {
            let _ = write!(out, "{v6}");
        }
    }
    out.push(b'"');
}

fn family(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "\"ipv4\"",
        Family::Ipv6 => "\"ipv6\"",
    }
}

#[inline(always)]
fn bool(out: &mut Vec<u8>, v: bool) {
    push(out, if v { "true" } else { "false" });
}

#[inline(always)]
fn quoted(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    push(out, s);
    out.push(b'"');
}

fn owner_fields(out: &mut Vec<u8>, owner: Option<Owner>) {
    match owner {
        Some(o) => {
            push(out, "\"pid\":");
            num(out, o.task.pid.into());
            push(out, ",\"comm\":");
            string(out, comm(&o.task.comm));
            push(out, ",\"owner_source\":");
            quoted(out, owner_source::name(o.source));
        }
        None => push(out, "\"pid\":null,\"comm\":null,\"owner_source\":null"),
    }
}

fn role(out: &mut Vec<u8>, role: Option<crate::reconstruct::Role>) {
    or_null(out, role, |out, role| quoted(out, role.name()));
}

/// The kernel's name for a reset's reason, when it gave one.
fn reset_reason(out: &mut Vec<u8>, names: &KernelNames, sent: bool, reason: u8) {
    or_null(out, names.sent_reason(sent, reason), |out, name| {
        string(out, name.as_bytes())
    });
}

fn endpoints(
    out: &mut Vec<u8>,
    fam: Family,
    laddr: std::net::IpAddr,
    lport: u16,
    raddr: std::net::IpAddr,
    rport: u16,
) {
    push(out, "\"family\":");
    push(out, family(fam));
    push(out, ",\"laddr\":");
    ip(out, laddr);
    push(out, ",\"lport\":");
    num(out, lport.into());
    push(out, ",\"raddr\":");
    ip(out, raddr);
    push(out, ",\"rport\":");
    num(out, rport.into());
}

/// The socket's sequence and delayed-ACK state, or `null`.
fn seq(out: &mut Vec<u8>, seq: Option<Seq>) {
    use teardown_common::seq_flags::{ACK_SCHEDULED, ACK_TIMER, PINGPONG};
    or_null(out, seq, |out, s| {
        push(out, "{\"snd_una\":");
        num(out, s.snd_una.into());
        push(out, ",\"snd_nxt\":");
        num(out, s.snd_nxt.into());
        push(out, ",\"write_seq\":");
        num(out, s.write_seq.into());
        push(out, ",\"rcv_nxt\":");
        num(out, s.rcv_nxt.into());
        push(out, ",\"ack_scheduled\":");
        bool(out, s.flags & ACK_SCHEDULED != 0);
        push(out, ",\"delayed_ack_timer\":");
        bool(out, s.flags & ACK_TIMER != 0);
        push(out, ",\"pingpong\":");
        bool(out, s.flags & PINGPONG != 0);
        out.push(b'}');
    });
}

/// One timeline as a single-line JSON object (no trailing newline).
pub fn timeline(out: &mut Vec<u8>, t: &Timeline, names: &KernelNames) {
    push(out, "{\"id\":");
    num(out, t.id);
    push(out, ",\"sock\":");
    hex(out, t.sock);
    out.push(b',');
    endpoints(out, t.family, t.laddr, t.lport, t.raddr, t.rport);
    push(out, ",\"netns\":");
    num(out, t.netns.into());
    out.push(b',');
    owner_fields(out, t.owner);
    push(out, ",\"role\":");
    role(out, t.role());
    push(out, ",\"complete\":");
    bool(out, t.complete());
    push(out, ",\"still\":");
    or_null(out, t.still(), |out, still| {
        push(out, "{\"state\":");
        quoted(out, state::name(still.state));
        push(out, ",\"since_ns\":");
        num(out, still.since_ns);
        push(out, ",\"for_ns\":");
        num(out, still.for_ns);
        push(out, ",\"in_kernel\":");
        or_null(out, still.in_kernel, bool);
        out.push(b'}');
    });
    push(out, ",\"transitions\":[");
    separated(out, t.transitions.iter(), |out, tr| {
        push(out, "{\"from\":");
        quoted(out, state::name(tr.from));
        push(out, ",\"to\":");
        quoted(out, state::name(tr.to));
        push(out, ",\"ts_ns\":");
        num(out, tr.ts_ns);
        push(out, ",\"task_pid\":");
        num(out, tr.task.pid.into());
        push(out, ",\"task_comm\":");
        string(out, comm(&tr.task.comm));
        push(out, ",\"fin_received\":");
        bool(out, tr.sock_flags & sock_flags::FIN_RECEIVED != 0);
        push(out, ",\"orphan\":");
        bool(out, tr.sock_flags & sock_flags::ORPHAN != 0);
        push(out, ",\"seq\":");
        seq(out, tr.seq);
        out.push(b'}');
    });
    push(out, "],\"durations_ns\":{");
    separated(out, t.durations_ns().iter(), |out, (st, ns)| {
        quoted(out, state::name(*st));
        out.push(b':');
        num(out, *ns);
    });
    push(out, "},\"teardown_ns\":");
    or_null(out, t.teardown_ns(), num);
    push(out, ",\"waves\":[");
    separated(out, t.waves().iter(), |out, w| {
        push(out, "{\"what\":");
        quoted(out, w.what.name());
        push(out, ",\"ts_ns\":");
        or_null(out, w.ts_ns, num);
        push(out, ",\"evidence\":");
        quoted(out, w.evidence.name());
        push(out, ",\"basis\":");
        quoted(out, w.basis);
        push(out, ",\"seq\":");
        or_null(out, w.seq, |out, v| num(out, v.into()));
        push(out, ",\"earliest_ns\":");
        or_null(out, w.earliest_ns, num);
        push(out, ",\"latest_ns\":");
        or_null(out, w.latest_ns, num);
        out.push(b'}');
    });
    push(out, "],\"at_close\":");
    or_null(out, t.at_close(), |out, c| {
        push(out, "{\"ts_ns\":");
        num(out, c.ts_ns);
        push(out, ",\"unsent_bytes\":");
        num(out, c.unsent.into());
        push(out, ",\"unacked_bytes\":");
        num(out, c.unacked.into());
        out.push(b'}');
    });
    push(out, ",\"released_ns\":");
    or_null(out, t.released_ns(), num);
    push(out, ",\"time_wait\":");
    or_null(out, t.time_wait(), |out, substate| {
        quoted(out, state::name(substate))
    });
    push(out, ",\"time_wait_socket\":");
    or_null(out, t.mini, |out, m| {
        push(out, "{\"entered_ns\":");
        num(out, m.entered_ns);
        push(out, ",\"substate\":");
        quoted(out, state::name(m.substate));
        push(out, ",\"fin_received_ns\":");
        or_null(out, m.fin_received_ns, num);
        push(out, ",\"reused_ns\":");
        or_null(out, m.reused_ns, num);
        push(out, ",\"end\":");
        or_null(out, m.end, |out, end| {
            push(out, "{\"ts_ns\":");
            num(out, end.ts_ns);
            push(out, ",\"how\":");
            quoted(out, end.how());
            push(out, ",\"evidence\":");
            quoted(out, end.evidence().name());
            push(out, ",\"basis\":");
            quoted(out, end.basis());
            out.push(b'}');
        });
        out.push(b'}');
    });
    push(out, ",\"half_close\":");
    bool(out, t.half_close());
    push(out, ",\"resets\":[");
    separated(out, t.resets.iter(), |out, r| {
        push(out, "{\"ts_ns\":");
        num(out, r.ts_ns);
        push(out, ",\"direction\":");
        quoted(out, if r.sent { "sent" } else { "received" });
        push(out, ",\"reason\":");
        reset_reason(out, names, r.sent, r.reason);
        out.push(b'}');
    });
    push(out, "],\"retransmits\":[");
    separated(out, t.retransmits.iter(), |out, r| {
        push(out, "{\"ts_ns\":");
        num(out, r.ts_ns);
        push(out, ",\"state\":");
        quoted(out, state::name(r.state));
        push(out, ",\"fin\":");
        bool(out, r.fin);
        out.push(b'}');
    });
    push(out, "],\"peer\":");
    or_null(out, t.peer, |out, p| {
        push(out, "{\"id\":");
        num(out, p.id);
        out.push(b',');
        owner_fields(out, p.owner);
        push(out, ",\"role\":");
        role(out, p.role);
        out.push(b'}');
    });
    push(out, ",\"first_seen_mid_close\":");
    bool(out, t.first_seen_mid_close);
    push(out, ",\"before_trace\":");
    or_null(out, t.before_trace, |out, b| {
        push(out, "{\"state\":");
        quoted(out, state::name(b.state));
        push(out, ",\"snapshot_ns\":");
        num(out, b.snapshot_ns);
        push(out, ",\"since_fin_ms\":");
        or_null(out, b.since_fin_ms, |out, (at_least, at_most)| {
            push(out, "{\"at_least\":");
            num(out, at_least.into());
            push(out, ",\"at_most\":");
            num(out, at_most.into());
            out.push(b'}');
        });
        out.push(b'}');
    });
    push(out, ",\"gap\":");
    bool(out, t.gap);
    out.push(b'}');
}

/// One raw kernel event as a single-line JSON object (`--raw --json`).
pub fn raw_event(out: &mut Vec<u8>, e: &Event, names: &KernelNames) {
    let what = match e.kind {
        kind::RESET_SENT => "reset_sent",
        kind::RESET_RECEIVED => "reset_received",
        kind::OWNER => "owner",
        kind::RETRANSMIT => "retransmit",
        kind::TIME_WAIT_ENTER => "time_wait_enter",
        kind::TIME_WAIT_SEGMENT => "time_wait_segment",
        kind::TIME_WAIT_REUSE => "time_wait_reuse",
        kind::TIME_WAIT_END => "time_wait_end",
        kind::NAMESPACE_GONE => "namespace_gone",
        _ => "state",
    };
    let _ = write!(
        out,
        "{{\"event\":\"{what}\",\"ts_ns\":{},\"sock\":",
        e.ts_ns
    );
    hex(out, e.skaddr);
    out.push(b',');
    endpoints(
        out,
        e.family(),
        e.local_ip(),
        e.sport,
        e.remote_ip(),
        e.dport,
    );
    push(out, ",\"netns\":");
    num(out, e.netns.into());
    let _ = write!(
        out,
        ",\"from\":\"{}\",\"to\":\"{}\",",
        state::name(e.oldstate),
        state::name(e.newstate)
    );
    let owner = (e.owner_pid != 0).then_some(Owner {
        task: crate::reconstruct::Task {
            pid: e.owner_pid,
            comm: e.owner_comm,
        },
        source: e.owner_source,
    });
    owner_fields(out, owner);
    let _ = write!(out, ",\"task_pid\":{},\"task_comm\":", e.task_pid);
    string(out, comm(&e.task_comm));
    push(out, ",\"reason\":");
    reset_reason(out, names, e.kind == kind::RESET_SENT, e.reason);
    let _ = write!(
        out,
        ",\"fin_received\":{},\"orphan\":{},\"seq\":",
        e.sock_flags & sock_flags::FIN_RECEIVED != 0,
        e.sock_flags & sock_flags::ORPHAN != 0
    );
    seq(out, Seq::of(e));
    out.push(b'}');
}
