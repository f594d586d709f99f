//! `--record` / `--replay`: the raw event stream in a compact, versioned file.
//!
//! ```text
//! file    = magic "TDREC" version:u8 names records* end
//! names   = count:u16 (len:u8 bytes)*           reset-reason names, by value
//! record  = 0x01 kind old new flags source reason tcp_flags family:u8
//!           ts_delta:zigzag-varint skaddr:u64le sport:u16le dport:u16le
//!           saddr daddr (4 bytes each for IPv4, 16 for IPv6)
//!           owner_pid:varint task_pid:varint owner_comm task_comm (len:u8 bytes)
//!           netns:varint seq
//! seq     = seq_flags:u8, and when it has KNOWN: snd_una:u32le (snd_nxt-snd_una):varint
//!           (write_seq-snd_nxt):varint rcv_nxt:u32le   (differences modulo 2^32)
//! end     = 0x02 lost_events:varint lost_owners:varint end_delta:varint 0xff
//! ```
//! `end_delta` (since version 2): when recording stopped, after the last event's timestamp;
//! sockets still closing then were in their state until that moment. Version 1 files,
//! without it, still replay. `seq` (since version 3): the socket's sequence and ACK state;
//! older files replay with none.
//! About half the size of the in-memory event. A file without its end marker was cut short
//! (the recorder was killed); that, and any corruption, is an error naming the byte offset.

use std::io::{self, BufRead, Write};

use teardown_common::{seq_flags, Event, AF_INET, AF_INET6, COMM_LEN};

use crate::output::KernelNames;

const MAGIC: &[u8; 5] = b"TDREC";
pub const VERSION: u8 = 3;
const TAG_EVENT: u8 = 0x01;
const TAG_COUNTS: u8 = 0x02;
const TAG_END: u8 = 0xff;

pub struct Recorder<W: Write> {
    out: W,
    last_ts: u64,
    buf: Vec<u8>,
}

fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn comm(buf: &mut Vec<u8>, raw: &[u8; COMM_LEN]) {
    let bytes = crate::event::comm(raw);
    buf.push(bytes.len() as u8);
    buf.extend_from_slice(bytes);
}

impl<W: Write> Recorder<W> {
    pub fn new(mut out: W, names: &KernelNames) -> io::Result<Self> {
        let mut buf = MAGIC.to_vec();
        buf.push(VERSION);
        let reasons = &names.reset_reasons[..names.reset_reasons.len().min(u16::MAX as usize)];
        buf.extend_from_slice(&(reasons.len() as u16).to_le_bytes());
        for name in reasons {
            let bytes = &name.as_bytes()[..name.len().min(255)];
            buf.push(bytes.len() as u8);
            buf.extend_from_slice(bytes);
        }
        out.write_all(&buf)?;
        Ok(Recorder {
            out,
            last_ts: 0,
            buf,
        })
    }

    pub fn event(&mut self, e: &Event) -> io::Result<()> {
        let b = &mut self.buf;
        b.clear();
        let v6 = e.family == AF_INET6;
        b.extend_from_slice(&[
            TAG_EVENT,
            e.kind,
            e.oldstate,
            e.newstate,
            e.sock_flags,
            e.owner_source,
            e.reason,
            e.tcp_flags,
            e.family as u8,
        ]);
        let delta = e.ts_ns.wrapping_sub(self.last_ts) as i64;
        varint(b, ((delta << 1) ^ (delta >> 63)) as u64);
        self.last_ts = e.ts_ns;
        b.extend_from_slice(&e.skaddr.to_le_bytes());
        b.extend_from_slice(&e.sport.to_le_bytes());
        b.extend_from_slice(&e.dport.to_le_bytes());
        let len = if v6 { 16 } else { 4 };
        b.extend_from_slice(&e.saddr[..len]);
        b.extend_from_slice(&e.daddr[..len]);
        varint(b, e.owner_pid.into());
        varint(b, e.task_pid.into());
        comm(b, &e.owner_comm);
        comm(b, &e.task_comm);
        varint(b, e.netns.into());
        b.push(e.seq_flags);
        if e.seq_flags & seq_flags::KNOWN != 0 {
            b.extend_from_slice(&e.snd_una.to_le_bytes());
            varint(b, e.snd_nxt.wrapping_sub(e.snd_una).into());
            varint(b, e.write_seq.wrapping_sub(e.snd_nxt).into());
            b.extend_from_slice(&e.rcv_nxt.to_le_bytes());
        }
        self.out.write_all(b)
    }

    /// Writes the counters, the time recording stopped (`end_ns`) and the end marker.
    pub fn finish(mut self, lost_events: u64, lost_owners: u64, end_ns: u64) -> io::Result<W> {
        self.buf.clear();
        self.buf.push(TAG_COUNTS);
        varint(&mut self.buf, lost_events);
        varint(&mut self.buf, lost_owners);
        varint(&mut self.buf, end_ns.saturating_sub(self.last_ts));
        self.buf.push(TAG_END);
        self.out.write_all(&self.buf)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Why a recording could not be read, and where.
#[derive(Debug, PartialEq, Eq)]
pub struct ReadError {
    pub offset: u64,
    pub reason: String,
}

pub struct Replay<R: BufRead> {
    input: R,
    version: u8,
    offset: u64,
    last_ts: u64,
    pub names: KernelNames,
    /// Set once the end marker is read.
    pub counts: Option<(u64, u64)>,
    /// When recording stopped; set at the end marker of a version 2 file.
    pub end_ns: Option<u64>,
}

impl<R: BufRead> Replay<R> {
    pub fn open(mut input: R) -> Result<Self, ReadError> {
        let mut r = Replay {
            input: &mut input,
            version: VERSION,
            offset: 0,
            last_ts: 0,
            names: KernelNames::default(),
            counts: None,
            end_ns: None,
        };
        let mut magic = [0u8; 5];
        r.exact(&mut magic, "file header")?;
        if &magic != MAGIC {
            return Err(r.error(0, "not a teardown recording (bad magic)".into()));
        }
        let version = r.byte("version")?;
        if !(1..=VERSION).contains(&version) {
            return Err(r.error(
                5,
                format!(
                    "recording format version {version}; this teardown reads versions 1 to {VERSION}"
                ),
            ));
        }
        let mut count = [0u8; 2];
        r.exact(&mut count, "reset-reason names")?;
        let mut reasons = Vec::new();
        for _ in 0..u16::from_le_bytes(count) {
            let len = r.byte("reset-reason name")?;
            let mut name = vec![0; len as usize];
            r.exact(&mut name, "reset-reason name")?;
            reasons.push(String::from_utf8_lossy(&name).into_owned());
        }
        let offset = r.offset;
        Ok(Replay {
            input,
            version,
            offset,
            last_ts: 0,
            names: KernelNames {
                reset_reasons: reasons,
            },
            counts: None,
            end_ns: None,
        })
    }

    fn error(&self, offset: u64, reason: String) -> ReadError {
        ReadError { offset, reason }
    }

    fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), ReadError> {
        let at = self.offset;
        self.input.read_exact(buf).map_err(|e| {
            let reason = if e.kind() == io::ErrorKind::UnexpectedEof {
                format!("truncated in the middle of {what}")
            } else {
                e.to_string()
            };
            self.error(at, reason)
        })?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn byte(&mut self, what: &str) -> Result<u8, ReadError> {
        let mut b = [0u8];
        self.exact(&mut b, what)?;
        Ok(b[0])
    }

    fn varint(&mut self, what: &str) -> Result<u64, ReadError> {
        let at = self.offset;
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte(what)?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error(at, format!("{what} is not a valid number")))
    }

    fn comm(&mut self) -> Result<[u8; COMM_LEN], ReadError> {
        let at = self.offset;
        let len = self.byte("task name")? as usize;
        if len > COMM_LEN {
            return Err(self.error(at, format!("task name of {len} bytes (at most {COMM_LEN})")));
        }
        let mut out = [0u8; COMM_LEN];
        self.exact(&mut out[..len], "task name")?;
        Ok(out)
    }

    /// The next event; `Ok(None)` at the end marker.
    pub fn next_event(&mut self) -> Result<Option<Event>, ReadError> {
        let at = self.offset;
        let tag = match self.input.fill_buf() {
            Ok([]) => {
                return Err(self.error(
                    at,
                    "truncated: no end marker (was the recorder killed?)".into(),
                ))
            }
            Ok(_) => self.byte("record tag")?,
            Err(e) => return Err(self.error(at, e.to_string())),
        };
        match tag {
            TAG_EVENT => self.event().map(Some),
            TAG_COUNTS => {
                let lost_events = self.varint("lost-event count")?;
                let lost_owners = self.varint("lost-owner count")?;
                if self.version >= 2 {
                    let delta = self.varint("end time")?;
                    self.end_ns = Some(self.last_ts.saturating_add(delta));
                }
                let end_at = self.offset;
                if self.byte("end marker")? != TAG_END {
                    return Err(self.error(end_at, "bad end marker".into()));
                }
                self.counts = Some((lost_events, lost_owners));
                Ok(None)
            }
            other => Err(self.error(at, format!("unknown record tag {other:#04x}"))),
        }
    }

    fn event(&mut self) -> Result<Event, ReadError> {
        let at = self.offset;
        let mut head = [0u8; 8];
        self.exact(&mut head, "event")?;
        let [kind, oldstate, newstate, sock_flags, owner_source, reason, tcp_flags, family] = head;
        let family = u16::from(family);
        if family != AF_INET && family != AF_INET6 {
            return Err(self.error(at + 7, format!("unknown address family {family}")));
        }
        let zigzag = self.varint("timestamp")?;
        let delta = ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64);
        let ts_ns = self.last_ts.wrapping_add(delta as u64);
        self.last_ts = ts_ns;
        let mut fixed = [0u8; 12];
        self.exact(&mut fixed, "event")?;
        let mut e: Event = unsafe { std::mem::zeroed() };
        e.ts_ns = ts_ns;
        e.skaddr = u64::from_le_bytes(fixed[..8].try_into().unwrap_or_default());
        e.sport = u16::from_le_bytes([fixed[8], fixed[9]]);
        e.dport = u16::from_le_bytes([fixed[10], fixed[11]]);
        let len = if family == AF_INET6 { 16 } else { 4 };
        self.exact(&mut e.saddr[..len], "address")?;
        self.exact(&mut e.daddr[..len], "address")?;
        let pid_at = self.offset;
        let owner_pid = self.varint("pid")?;
        let task_pid = self.varint("pid")?;
        let to_pid = |v: u64| {
            u32::try_from(v).map_err(|_| self.error(pid_at, format!("pid {v} out of range")))
        };
        e.owner_pid = to_pid(owner_pid)?;
        e.task_pid = to_pid(task_pid)?;
        e.owner_comm = self.comm()?;
        e.task_comm = self.comm()?;
        let netns_at = self.offset;
        let netns = self.varint("network namespace")?;
        e.netns = u32::try_from(netns)
            .map_err(|_| self.error(netns_at, format!("network namespace {netns} out of range")))?;
        if self.version >= 3 {
            self.seq(&mut e)?;
        }
        (e.kind, e.oldstate, e.newstate, e.sock_flags) = (kind, oldstate, newstate, sock_flags);
        (e.owner_source, e.reason, e.tcp_flags, e.family) =
            (owner_source, reason, tcp_flags, family);
        Ok(e)
    }
}

impl<R: BufRead> Replay<R> {
    fn u32le(&mut self, what: &str) -> Result<u32, ReadError> {
        let mut bytes = [0u8; 4];
        self.exact(&mut bytes, what)?;
        Ok(u32::from_le_bytes(bytes))
    }

    /// A difference between two sequence numbers, modulo 2^32.
    fn seq_delta(&mut self, base: u32) -> Result<u32, ReadError> {
        let at = self.offset;
        let delta = self.varint("sequence number")?;
        let delta = u32::try_from(delta)
            .map_err(|_| self.error(at, format!("sequence difference {delta} out of range")))?;
        Ok(base.wrapping_add(delta))
    }

    fn seq(&mut self, e: &mut Event) -> Result<(), ReadError> {
        e.seq_flags = self.byte("sequence state")?;
        if e.seq_flags & seq_flags::KNOWN != 0 {
            e.snd_una = self.u32le("sequence number")?;
            e.snd_nxt = self.seq_delta(e.snd_una)?;
            e.write_seq = self.seq_delta(e.snd_nxt)?;
            e.rcv_nxt = self.u32le("sequence number")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::ev;
    use teardown_common::state::*;

    fn sample() -> Vec<Event> {
        let mut v6 = ev(5, 9, 443, 50000, FIN_WAIT1, FIN_WAIT2);
        v6.family = AF_INET6;
        v6.saddr = std::net::Ipv6Addr::LOCALHOST.octets();
        v6.daddr = [0xfe; 16];
        let mut owned = ev(3, 7, 80, 5000, ESTABLISHED, CLOSE_WAIT);
        owned.owner_pid = 4_000_000;
        owned.owner_comm[..6].copy_from_slice(b"nginx\xff");
        owned.task_pid = 12;
        owned.task_comm[..16].copy_from_slice(b"sixteen-bytes-xx");
        owned.sock_flags = 5;
        owned.reason = 2;
        owned.tcp_flags = 0x11;
        owned.netns = 4_026_531_840;
        owned.seq_flags = seq_flags::KNOWN | seq_flags::ACK_SCHEDULED;
        (owned.snd_una, owned.snd_nxt) = (u32::MAX - 5, 10);
        (owned.write_seq, owned.rcv_nxt) = (1_000_010, 77);
        // Out of order on purpose: deltas go backwards too.
        vec![
            ev(1_000_000_000, 7, 80, 5000, ESTABLISHED, FIN_WAIT1),
            owned,
            v6,
        ]
    }

    fn record(events: &[Event]) -> Vec<u8> {
        let names = KernelNames {
            reset_reasons: vec!["NOT_SPECIFIED".into(), "NO_SOCKET".into()],
        };
        let mut rec = Recorder::new(Vec::new(), &names).unwrap();
        for e in events {
            rec.event(e).unwrap();
        }
        rec.finish(3, 1, 1_500_000_000).unwrap()
    }

    fn replay(bytes: &[u8]) -> Result<(Vec<Event>, Replay<&[u8]>), ReadError> {
        let mut r = Replay::open(bytes)?;
        let mut out = Vec::new();
        while let Some(e) = r.next_event()? {
            out.push(e);
        }
        Ok((out, r))
    }

    #[test]
    fn round_trips_every_field() {
        let bytes = record(&sample());
        let (events, r) = replay(&bytes).unwrap();
        assert_eq!(events, sample());
        assert_eq!(r.counts, Some((3, 1)));
        assert_eq!(r.end_ns, Some(1_500_000_000));
        assert_eq!(r.names.reset_reason(1), Some("NO_SOCKET"));
        assert!(
            bytes.len() < 3 * std::mem::size_of::<Event>() * 2 / 3,
            "compact: {} bytes",
            bytes.len()
        );
    }

    /// The sample without sequence state, recorded as version 2 wrote it: no seq byte.
    fn version_2() -> (Vec<Event>, Vec<u8>) {
        let bare: Vec<Event> = sample()
            .into_iter()
            .map(|e| Event {
                seq_flags: 0,
                snd_una: 0,
                snd_nxt: 0,
                write_seq: 0,
                rcv_nxt: 0,
                ..e
            })
            .collect();
        let mut rec = Recorder::new(Vec::new(), &KernelNames::default()).unwrap();
        for e in &bare {
            rec.event(e).unwrap();
            assert_eq!(
                rec.out.pop(),
                Some(0),
                "an unknown sequence state is one 0 byte"
            );
        }
        let mut bytes = rec.finish(3, 1, 1_500_000_000).unwrap();
        bytes[5] = 2;
        (bare, bytes)
    }

    #[test]
    fn version_2_files_replay_without_sequence_state() {
        let (events, bytes) = version_2();
        let (replayed, r) = replay(&bytes).unwrap();
        assert_eq!(replayed, events);
        assert_eq!(r.end_ns, Some(1_500_000_000));
    }

    #[test]
    fn version_1_files_replay_without_an_end_time() {
        let (events, mut bytes) = version_2();
        bytes[5] = 1;
        // Version 1 ends: counts, then the marker, with no end time between them.
        let end_time = bytes.len() - 1 - 5;
        bytes.drain(end_time..bytes.len() - 1);
        let (replayed, r) = replay(&bytes).unwrap();
        assert_eq!(replayed, events);
        assert_eq!((r.counts, r.end_ns), (Some((3, 1)), None));
    }

    #[test]
    fn truncation_anywhere_is_an_error_with_an_offset() {
        let bytes = record(&sample());
        for cut in 0..bytes.len() {
            let err = replay(&bytes[..cut])
                .err()
                .unwrap_or_else(|| panic!("cut at {cut} accepted"));
            assert!(err.offset <= cut as u64, "cut {cut}: {err:?}");
            assert!(
                err.reason.contains("truncated") || err.reason.contains("magic"),
                "cut {cut}: {err:?}"
            );
        }
    }

    #[test]
    fn corruption_is_named() {
        let mut bytes = record(&sample());
        assert_eq!(
            replay(b"GARBAGE!").err().unwrap().reason,
            "not a teardown recording (bad magic)"
        );
        bytes[5] = 9;
        assert!(replay(&bytes).err().unwrap().reason.contains("version 9"));
        let mut bytes = record(&sample());
        let first_record = 5 + 1 + 2 + (1 + 13) + (1 + 9);
        bytes[first_record] = 0x42;
        let err = replay(&bytes).err().unwrap();
        assert_eq!(
            (err.offset, err.reason.as_str()),
            (first_record as u64, "unknown record tag 0x42")
        );
    }
}
