//! JSON rendering by hand: no allocation per value, and strings built from kernel bytes stay
//! valid JSON whatever they hold (invalid UTF-8 becomes U+FFFD; control characters are
//! escaped, so a record never spans two lines).

use std::fmt::Write as _;

use teardown_common::{kind, owner_source, sock_flags, state};

use crate::{
    event::{self, Event},
    filter::Family,
    reconstruct::{Owner, Timeline},
};

/// Kernel names that are not fixed across kernels (read from BTF, or from a recording).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelNames {
    /// `enum sk_rst_reason` names by value, without the `SK_RST_REASON_` prefix.
    pub reset_reasons: Vec<String>,
}

impl KernelNames {
    pub fn reset_reason(&self, value: u8) -> Option<&str> {
        self.reset_reasons.get(value as usize).map(String::as_str)
    }
}

/// Appends `bytes` as a JSON string literal.
pub fn string(out: &mut String, bytes: &[u8]) {
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        if !chunk.invalid().is_empty() {
            out.push('\u{fffd}');
        }
    }
    out.push('"');
}

fn opt_u64(out: &mut String, value: Option<u64>) {
    match value {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push_str("null"),
    }
}

fn family(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "ipv4",
        Family::Ipv6 => "ipv6",
    }
}

fn owner_fields(out: &mut String, owner: Option<Owner>) {
    match owner {
        Some(o) => {
            let _ = write!(out, "\"pid\":{},\"comm\":", o.task.pid);
            string(out, event::comm(&o.task.comm));
            let _ = write!(out, ",\"owner_source\":\"{}\"", owner_source::name(o.source));
        }
        None => out.push_str("\"pid\":null,\"comm\":null,\"owner_source\":null"),
    }
}

/// One timeline as a single-line JSON object (no trailing newline).
pub fn timeline(out: &mut String, t: &Timeline, names: &KernelNames) {
    let _ = write!(
        out,
        "{{\"id\":{},\"sock\":\"{:#x}\",\"family\":\"{}\",\"laddr\":\"{}\",\"lport\":{},\"raddr\":\"{}\",\"rport\":{},",
        t.id, t.sock, family(t.family), t.laddr, t.lport, t.raddr, t.rport
    );
    owner_fields(out, t.owner);
    out.push_str(",\"role\":");
    match t.role() {
        Some(role) => {
            let _ = write!(out, "\"{}\"", role.name());
        }
        None => out.push_str("null"),
    }
    let _ = write!(out, ",\"complete\":{},\"transitions\":[", t.complete());
    for (i, tr) in t.transitions.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"from\":\"{}\",\"to\":\"{}\",\"ts_ns\":{},\"task_pid\":{},\"task_comm\":",
            state::name(tr.from),
            state::name(tr.to),
            tr.ts_ns,
            tr.task.pid
        );
        string(out, event::comm(&tr.task.comm));
        let _ = write!(
            out,
            ",\"fin_received\":{},\"orphan\":{}}}",
            tr.sock_flags & sock_flags::FIN_RECEIVED != 0,
            tr.sock_flags & sock_flags::ORPHAN != 0
        );
    }
    out.push_str("],\"durations_ns\":{");
    for (i, (st, ns)) in t.durations_ns().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "\"{}\":{ns}", state::name(*st));
    }
    out.push_str("},\"teardown_ns\":");
    opt_u64(out, t.teardown_ns());
    out.push_str(",\"waves\":[");
    for (i, w) in t.waves().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"what\":\"{}\",\"ts_ns\":", w.what);
        opt_u64(out, w.ts_ns);
        let _ = write!(out, ",\"evidence\":\"{}\",\"basis\":\"{}\"}}", w.evidence.name(), w.basis);
    }
    out.push_str("],\"time_wait\":");
    match t.time_wait() {
        Some(substate) => {
            let _ = write!(out, "\"{}\"", state::name(substate));
        }
        None => out.push_str("null"),
    }
    let _ = write!(out, ",\"half_close\":{},\"resets\":[", t.half_close());
    for (i, r) in t.resets.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let direction = if r.sent { "sent" } else { "received" };
        let _ = write!(out, "{{\"ts_ns\":{},\"direction\":\"{direction}\",\"reason\":", r.ts_ns);
        match names.reset_reason(r.reason).filter(|_| r.sent) {
            Some(name) => string(out, name.as_bytes()),
            None => out.push_str("null"),
        }
        out.push('}');
    }
    out.push_str("],\"peer\":");
    match t.peer {
        Some(p) => {
            let _ = write!(out, "{{\"id\":{},", p.id);
            owner_fields(out, p.owner);
            out.push_str(",\"role\":");
            match p.role {
                Some(role) => {
                    let _ = write!(out, "\"{}\"", role.name());
                }
                None => out.push_str("null"),
            }
            out.push('}');
        }
        None => out.push_str("null"),
    }
    let _ = write!(
        out,
        ",\"first_seen_mid_close\":{},\"gap\":{}}}",
        t.first_seen_mid_close, t.gap
    );
}

/// One raw kernel event as a single-line JSON object (`--raw --json`).
pub fn raw_event(out: &mut String, e: &Event, names: &KernelNames) {
    let what = match e.kind {
        kind::RESET_SENT => "reset_sent",
        kind::RESET_RECEIVED => "reset_received",
        kind::OWNER => "owner",
        _ => "state",
    };
    let _ = write!(
        out,
        "{{\"event\":\"{what}\",\"ts_ns\":{},\"sock\":\"{:#x}\",\"family\":\"{}\",\"laddr\":\"{}\",\"lport\":{},\"raddr\":\"{}\",\"rport\":{},\"from\":\"{}\",\"to\":\"{}\",",
        e.ts_ns,
        e.skaddr,
        family(event::family(e)),
        event::local_ip(e),
        e.sport,
        event::remote_ip(e),
        e.dport,
        state::name(e.oldstate),
        state::name(e.newstate),
    );
    let owner = (e.owner_pid != 0).then(|| Owner {
        task: crate::reconstruct::Task {
            pid: e.owner_pid,
            comm: e.owner_comm,
        },
        source: e.owner_source,
    });
    owner_fields(out, owner);
    let _ = write!(out, ",\"task_pid\":{},\"task_comm\":", e.task_pid);
    string(out, event::comm(&e.task_comm));
    out.push_str(",\"reason\":");
    match names.reset_reason(e.reason).filter(|_| e.kind == kind::RESET_SENT) {
        Some(name) => string(out, name.as_bytes()),
        None => out.push_str("null"),
    }
    let _ = write!(
        out,
        ",\"fin_received\":{},\"orphan\":{}}}",
        e.sock_flags & sock_flags::FIN_RECEIVED != 0,
        e.sock_flags & sock_flags::ORPHAN != 0
    );
}
