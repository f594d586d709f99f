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
    // Nearly every name is plain printable ASCII: copy it in one go.
    if bytes.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(std::str::from_utf8(bytes).unwrap_or_default());
        out.push('"');
        return;
    }
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

/// Appends a decimal integer (faster than `core::fmt`, which showed in profiles).
pub fn num(out: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or_default());
}

fn opt_u64(out: &mut String, value: Option<u64>) {
    match value {
        Some(v) => num(out, v),
        None => out.push_str("null"),
    }
}

fn ip(out: &mut String, addr: std::net::IpAddr) {
    out.push('"');
    match addr {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                num(out, octet.into());
            }
        }
        v6 => {
            let _ = write!(out, "{v6}");
        }
    }
    out.push('"');
}

fn family(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "\"ipv4\"",
        Family::Ipv6 => "\"ipv6\"",
    }
}

fn bool(out: &mut String, v: bool) {
    out.push_str(if v { "true" } else { "false" });
}

fn quoted(out: &mut String, s: &str) {
    out.push('"');
    out.push_str(s);
    out.push('"');
}

fn owner_fields(out: &mut String, owner: Option<Owner>) {
    match owner {
        Some(o) => {
            out.push_str("\"pid\":");
            num(out, o.task.pid.into());
            out.push_str(",\"comm\":");
            string(out, event::comm(&o.task.comm));
            out.push_str(",\"owner_source\":");
            quoted(out, owner_source::name(o.source));
        }
        None => out.push_str("\"pid\":null,\"comm\":null,\"owner_source\":null"),
    }
}

fn role(out: &mut String, role: Option<crate::reconstruct::Role>) {
    match role {
        Some(role) => quoted(out, role.name()),
        None => out.push_str("null"),
    }
}

fn endpoints(out: &mut String, fam: Family, laddr: std::net::IpAddr, lport: u16, raddr: std::net::IpAddr, rport: u16) {
    out.push_str("\"family\":");
    out.push_str(family(fam));
    out.push_str(",\"laddr\":");
    ip(out, laddr);
    out.push_str(",\"lport\":");
    num(out, lport.into());
    out.push_str(",\"raddr\":");
    ip(out, raddr);
    out.push_str(",\"rport\":");
    num(out, rport.into());
}

/// One timeline as a single-line JSON object (no trailing newline).
pub fn timeline(out: &mut String, t: &Timeline, names: &KernelNames) {
    out.push_str("{\"id\":");
    num(out, t.id);
    let _ = write!(out, ",\"sock\":\"{:#x}\",", t.sock);
    endpoints(out, t.family, t.laddr, t.lport, t.raddr, t.rport);
    out.push(',');
    owner_fields(out, t.owner);
    out.push_str(",\"role\":");
    role(out, t.role());
    out.push_str(",\"complete\":");
    bool(out, t.complete());
    out.push_str(",\"transitions\":[");
    for (i, tr) in t.transitions.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"from\":");
        quoted(out, state::name(tr.from));
        out.push_str(",\"to\":");
        quoted(out, state::name(tr.to));
        out.push_str(",\"ts_ns\":");
        num(out, tr.ts_ns);
        out.push_str(",\"task_pid\":");
        num(out, tr.task.pid.into());
        out.push_str(",\"task_comm\":");
        string(out, event::comm(&tr.task.comm));
        out.push_str(",\"fin_received\":");
        bool(out, tr.sock_flags & sock_flags::FIN_RECEIVED != 0);
        out.push_str(",\"orphan\":");
        bool(out, tr.sock_flags & sock_flags::ORPHAN != 0);
        out.push('}');
    }
    out.push_str("],\"durations_ns\":{");
    for (i, (st, ns)) in t.durations_ns().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        quoted(out, state::name(*st));
        out.push(':');
        num(out, *ns);
    }
    out.push_str("},\"teardown_ns\":");
    opt_u64(out, t.teardown_ns());
    out.push_str(",\"waves\":[");
    for (i, w) in t.waves().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"what\":");
        quoted(out, w.what);
        out.push_str(",\"ts_ns\":");
        opt_u64(out, w.ts_ns);
        out.push_str(",\"evidence\":");
        quoted(out, w.evidence.name());
        out.push_str(",\"basis\":");
        quoted(out, w.basis);
        out.push('}');
    }
    out.push_str("],\"time_wait\":");
    match t.time_wait() {
        Some(substate) => quoted(out, state::name(substate)),
        None => out.push_str("null"),
    }
    out.push_str(",\"half_close\":");
    bool(out, t.half_close());
    out.push_str(",\"resets\":[");
    for (i, r) in t.resets.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"ts_ns\":");
        num(out, r.ts_ns);
        out.push_str(",\"direction\":");
        quoted(out, if r.sent { "sent" } else { "received" });
        out.push_str(",\"reason\":");
        match names.reset_reason(r.reason).filter(|_| r.sent) {
            Some(name) => string(out, name.as_bytes()),
            None => out.push_str("null"),
        }
        out.push('}');
    }
    out.push_str("],\"peer\":");
    match t.peer {
        Some(p) => {
            out.push_str("{\"id\":");
            num(out, p.id);
            out.push(',');
            owner_fields(out, p.owner);
            out.push_str(",\"role\":");
            role(out, p.role);
            out.push('}');
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"first_seen_mid_close\":");
    bool(out, t.first_seen_mid_close);
    out.push_str(",\"gap\":");
    bool(out, t.gap);
    out.push('}');
}

/// One raw kernel event as a single-line JSON object (`--raw --json`).
pub fn raw_event(out: &mut String, e: &Event, names: &KernelNames) {
    let what = match e.kind {
        kind::RESET_SENT => "reset_sent",
        kind::RESET_RECEIVED => "reset_received",
        kind::OWNER => "owner",
        _ => "state",
    };
    let _ = write!(out, "{{\"event\":\"{what}\",\"ts_ns\":{},\"sock\":\"{:#x}\",", e.ts_ns, e.skaddr);
    let (local, remote) = (event::local_ip(e), event::remote_ip(e));
    endpoints(out, event::family(e), local, e.sport, remote, e.dport);
    let _ = write!(
        out,
        ",\"from\":\"{}\",\"to\":\"{}\",",
        state::name(e.oldstate),
        state::name(e.newstate)
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
