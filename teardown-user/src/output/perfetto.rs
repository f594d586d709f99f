//! `--perfetto FILE`: a Perfetto trace that ui.perfetto.dev opens. Each process is a track
//! group, each socket a track in it, each closing state a slice on that track; a FIN links
//! the end that sent it to the end that received it with a flow arrow; resets,
//! retransmissions and the final CLOSE are instants.
//!
//! The format is Perfetto's own protobuf (`Trace` of `TracePacket`s with `TrackDescriptor`
//! and `TrackEvent`), written by hand: a dozen fields need only varints and length-delimited
//! bytes. Unlike the Chrome JSON format it nests socket tracks under their process by
//! explicit ids (not by faking threads), and it is streamed: a trace is a plain sequence of
//! packets, so each timeline is written as it completes and memory does not grow.
//! Timestamps are the kernel's CLOCK_MONOTONIC nanoseconds, as in the JSON output.

use std::{collections::HashSet, path::Path};

use teardown_common::{sock_flags, state, KernelNames};

use crate::{
    clock::Clock,
    error::Result,
    reconstruct::{Role, Timeline, Transition},
};

use super::{
    mermaid::entered,
    safe_file::SafeFile,
    text::{comm, endpoint},
    TimelineSink,
};

/// Field numbers from perfetto/protos/perfetto/trace/*.proto.
mod field {
    pub const TRACE_PACKET: u32 = 1;
    pub const PACKET_TIMESTAMP: u32 = 8;
    pub const PACKET_SEQUENCE_ID: u32 = 10;
    pub const PACKET_TRACK_EVENT: u32 = 11;
    pub const PACKET_SEQUENCE_FLAGS: u32 = 13;
    pub const PACKET_TRACK_DESCRIPTOR: u32 = 60;
    pub const TRACK_UUID: u32 = 1;
    pub const TRACK_NAME: u32 = 2;
    pub const TRACK_PROCESS: u32 = 3;
    pub const TRACK_PARENT_UUID: u32 = 5;
    pub const PROCESS_PID: u32 = 1;
    pub const PROCESS_NAME: u32 = 6;
    pub const EVENT_TYPE: u32 = 9;
    pub const EVENT_TRACK_UUID: u32 = 11;
    pub const EVENT_CATEGORIES: u32 = 22;
    pub const EVENT_NAME: u32 = 23;
    pub const EVENT_FLOW_IDS: u32 = 47;
    pub const EVENT_TERMINATING_FLOW_IDS: u32 = 48;
}

/// `TrackEvent.Type`.
#[derive(Clone, Copy)]
enum Kind {
    SliceBegin = 1,
    SliceEnd = 2,
    Instant = 3,
}

/// `TracePacket.SEQ_INCREMENTAL_STATE_CLEARED`: the sequence starts here.
const SEQ_INCREMENTAL_STATE_CLEARED: u64 = 1;
/// All packets come from this one writer.
const SEQUENCE_ID: u64 = 1;

/// Track and flow ids are 64-bit and global to the trace: one range per kind.
const PROCESS_TRACK: u64 = 1 << 32;
const SOCKET_TRACK: u64 = 2 << 32;
const NO_OWNER_TRACK: u64 = 3 << 32;
const FIN_FLOW: u64 = 4 << 32;

/// A protobuf message being written. Fields must be added in field-number order, as
/// protobuf's own encoders do, so that a decode and re-encode gives the same bytes.
#[derive(Default)]
struct Message(Vec<u8>);

impl Message {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire_type: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire_type));
    }

    fn uint(&mut self, field: u32, v: u64) -> &mut Self {
        self.key(field, 0);
        self.varint(v);
        self
    }

    fn fixed64(&mut self, field: u32, v: u64) -> &mut Self {
        self.key(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn bytes(&mut self, field: u32, bytes: &[u8]) -> &mut Self {
        self.key(field, 2);
        self.varint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
        self
    }

    fn message(&mut self, field: u32, m: &Message) -> &mut Self {
        self.bytes(field, &m.0)
    }
}

/// One `TracePacket`, framed as a `Trace.packet` field.
fn packet(out: &mut Vec<u8>, ts_ns: Option<u64>, build: impl FnOnce(&mut Message)) {
    let mut p = Message::default();
    if let Some(ts) = ts_ns {
        p.uint(field::PACKET_TIMESTAMP, ts);
    }
    p.uint(field::PACKET_SEQUENCE_ID, SEQUENCE_ID);
    build(&mut p);
    let mut framed = Message(std::mem::take(out));
    framed.message(field::TRACE_PACKET, &p);
    *out = framed.0;
}

struct Event<'a> {
    ts_ns: u64,
    kind: Kind,
    track: u64,
    name: &'a str,
    flow: Option<u64>,
    terminating_flow: Option<u64>,
}

fn track_event(out: &mut Vec<u8>, e: Event) {
    let mut m = Message::default();
    m.uint(field::EVENT_TYPE, e.kind as u64)
        .uint(field::EVENT_TRACK_UUID, e.track)
        .bytes(field::EVENT_CATEGORIES, b"tcp");
    if !matches!(e.kind, Kind::SliceEnd) {
        m.bytes(field::EVENT_NAME, e.name.as_bytes());
    }
    if let Some(flow) = e.flow {
        m.fixed64(field::EVENT_FLOW_IDS, flow);
    }
    if let Some(flow) = e.terminating_flow {
        m.fixed64(field::EVENT_TERMINATING_FLOW_IDS, flow);
    }
    packet(out, Some(e.ts_ns), |p| {
        p.message(field::PACKET_TRACK_EVENT, &m);
    });
}

/// The transition sent this socket's FIN.
fn sends_fin(tr: &Transition) -> bool {
    matches!(
        (tr.from, tr.to),
        (state::ESTABLISHED | state::SYN_RECV, state::FIN_WAIT1)
            | (state::CLOSE_WAIT, state::LAST_ACK)
    )
}

/// The transition happened because the peer's FIN arrived.
fn receives_fin(tr: &Transition) -> bool {
    match (tr.from, tr.to) {
        (state::ESTABLISHED, state::CLOSE_WAIT) | (state::FIN_WAIT1, state::CLOSING) => true,
        (state::FIN_WAIT2 | state::FIN_WAIT1, state::CLOSE) => {
            tr.sock_flags & sock_flags::FIN_RECEIVED != 0
        }
        _ => false,
    }
}

/// The packets of one socket: its track (and its process's, the first time), a slice per
/// state it was in, instants for resets, retransmissions and its CLOSE, and the ends of the
/// FIN flows to and from its peer.
fn socket(out: &mut Vec<u8>, t: &Timeline, names: &KernelNames, described: &mut HashSet<u64>) {
    let parent = match t.owner {
        Some(o) => PROCESS_TRACK + u64::from(o.task.pid),
        None => NO_OWNER_TRACK,
    };
    if described.insert(parent) {
        let mut d = Message::default();
        d.uint(field::TRACK_UUID, parent);
        match t.owner {
            Some(o) => {
                let mut process = Message::default();
                process
                    .uint(field::PROCESS_PID, u64::from(o.task.pid))
                    .bytes(field::PROCESS_NAME, comm(&o.task.comm).as_bytes());
                d.message(field::TRACK_PROCESS, &process);
            }
            None => {
                d.bytes(field::TRACK_NAME, b"sockets with no known owner");
            }
        }
        packet(out, None, |p| {
            p.message(field::PACKET_TRACK_DESCRIPTOR, &d);
        });
    }
    let track = SOCKET_TRACK + t.id;
    let name = format!(
        "#{} {} → {} {}",
        t.id,
        endpoint(t.laddr, t.lport),
        endpoint(t.raddr, t.rport),
        t.role().map_or("unknown", Role::name)
    );
    let mut d = Message::default();
    d.uint(field::TRACK_UUID, track)
        .bytes(field::TRACK_NAME, name.as_bytes())
        .uint(field::TRACK_PARENT_UUID, parent);
    packet(out, None, |p| {
        p.message(field::PACKET_TRACK_DESCRIPTOR, &d);
    });

    let peer = t.peer.map(|p| p.id);
    let mut marks: Vec<(u64, String)> = Vec::new();
    for r in &t.resets {
        let what = match (r.sent, names.sent_reason(r.sent, r.reason)) {
            (true, Some(reason)) => format!("RST sent: {reason}"),
            (true, None) => "RST sent".into(),
            (false, _) => "RST received".into(),
        };
        marks.push((r.ts_ns, what));
    }
    for r in &t.retransmits {
        let what = if r.fin {
            "FIN retransmitted"
        } else {
            "retransmission"
        };
        marks.push((r.ts_ns, format!("{what} in {}", state::name(r.state))));
    }
    if let Some(mini) = t.mini {
        if let Some(at) = mini.fin_received_ns {
            marks.push((at, "FIN taken in by the mini-socket: TIME_WAIT".into()));
        }
        if let Some(at) = mini.reused_ns {
            marks.push((at, "TIME_WAIT reused by a new connection".into()));
        }
        if let Some(end) = mini.end {
            marks.push((end.ts_ns, format!("mini-socket {}", end.describe())));
        }
    }
    marks.sort_by_key(|(ts, _)| *ts);
    let mut marks = marks.into_iter().peekable();

    // Instants that happened up to `until`, in their place among the slices.
    let mut instants_until = |out: &mut Vec<u8>, until: u64| {
        while let Some((ts, name)) = marks.next_if(|(ts, _)| *ts <= until) {
            track_event(
                out,
                Event {
                    ts_ns: ts,
                    kind: Kind::Instant,
                    track,
                    name: &name,
                    flow: None,
                    terminating_flow: None,
                },
            );
        }
    };
    let end_of_trace = t.followed_until_ns;
    for (i, tr) in t.transitions.iter().enumerate() {
        instants_until(out, tr.ts_ns);
        let event = Event {
            ts_ns: tr.ts_ns,
            kind: if tr.to == state::CLOSE {
                Kind::Instant
            } else {
                Kind::SliceBegin
            },
            track,
            name: &entered(t, i),
            flow: peer.filter(|_| sends_fin(tr)).map(|_| FIN_FLOW + t.id),
            terminating_flow: peer.filter(|_| receives_fin(tr)).map(|p| FIN_FLOW + p),
        };
        let is_slice = matches!(event.kind, Kind::SliceBegin);
        track_event(out, event);
        if is_slice {
            let end = t
                .transitions
                .get(i + 1)
                .map(|next| next.ts_ns)
                .or(end_of_trace)
                .unwrap_or(tr.ts_ns);
            instants_until(out, end);
            track_event(
                out,
                Event {
                    ts_ns: end,
                    kind: Kind::SliceEnd,
                    track,
                    name: "",
                    flow: None,
                    terminating_flow: None,
                },
            );
        }
    }
    // The TIME_WAIT mini-socket's life after the CLOSE, where fentry showed it.
    if let Some(mini) = t.mini {
        if let Some(end) = mini.end.map(|e| e.ts_ns).or(end_of_trace) {
            let name = format!("TIME_WAIT mini-socket ({})", state::name(mini.substate));
            instants_until(out, mini.entered_ns);
            let slice = |ts_ns, kind, name| Event {
                ts_ns,
                kind,
                track,
                name,
                flow: None,
                terminating_flow: None,
            };
            track_event(out, slice(mini.entered_ns, Kind::SliceBegin, &name));
            instants_until(out, end);
            track_event(out, slice(end, Kind::SliceEnd, ""));
        }
    }
    instants_until(out, u64::MAX);
}

/// The file `--perfetto` writes, a socket at a time.
pub struct PerfettoFile {
    file: SafeFile,
    described: HashSet<u64>,
    buf: Vec<u8>,
}

impl PerfettoFile {
    /// Creates the file now, so an unwritable path fails before tracing starts.
    pub fn create(path: &Path) -> Result<Self> {
        let mut buf = Vec::new();
        packet(&mut buf, None, |p| {
            p.uint(field::PACKET_SEQUENCE_FLAGS, SEQ_INCREMENTAL_STATE_CLEARED);
        });
        let mut file = PerfettoFile {
            file: SafeFile::create(path)?,
            described: HashSet::new(),
            buf,
        };
        file.write_buf()?;
        Ok(file)
    }

    fn write_buf(&mut self) -> Result<()> {
        let written = self.file.write_all(&self.buf);
        self.buf.clear();
        written
    }
}

impl TimelineSink for PerfettoFile {
    fn timeline(&mut self, t: &Timeline, _: &Clock, names: &KernelNames) -> Result<()> {
        socket(&mut self.buf, t, names, &mut self.described);
        self.write_buf()
    }

    fn finish(self: Box<Self>, _: &Clock, _: &KernelNames) -> Result<()> {
        self.file.finish()
    }
}

#[cfg(test)]
mod tests;
