//! `--record` / `--replay`: the raw event stream in a compact, versioned file.
//!
//! ```text
//! file    = magic "TDREC" version:u8 names crc32:u32le block* end
//! names   = count:u16 (len:u8 bytes)*           reset-reason names, by value
//!           (crc32: CRC-32 of everything before it)
//! block   = 0x03 len:u32le crc32:u32le record*  (len bytes of records, CRC-32 of them)
//! record  = 0x01 kind old new flags source reason tcp_flags family:u8
//!           ts_delta:zigzag-varint skaddr:u64le sport:u16le dport:u16le
//!           saddr daddr (4 bytes each for IPv4, 16 for IPv6; an event about no socket,
//!           a network namespace gone, has family 0 and 4 zero bytes each)
//!           owner_pid:varint task_pid:varint owner_comm task_comm (len:u8 bytes)
//!           netns:varint seq
//! seq     = seq_flags:u8, and when it has KNOWN: snd_una:u32le (snd_nxt-snd_una):varint
//!           (write_seq-snd_nxt):varint rcv_nxt:u32le   (differences modulo 2^32)
//! end     = 0x04 len:u32le crc32:u32le counts   (a block holding the counts)
//! counts  = lost_events:varint lost_owners:varint end_delta:varint
//! ```
//! `end_delta`: when recording stopped, after the last event's timestamp; sockets still
//! closing then were in their state until that moment.
//!
//! A recording survives its recorder: blocks are written out at least every drain (40 ms),
//! so a file cut short (SIGKILL, out of memory, a full disk, a power cut) replays every
//! block written whole, and says that its end is missing. A checksum per block means a
//! damaged byte is reported with its offset, never replayed as data. Older versions still
//! replay: 3 (no `seq`), 2 (records without blocks either), 1 (nor `end_delta`).
//! About half the size of the in-memory event.

use std::io::{self, BufRead, Write};

use teardown_common::{kind, seq_flags, Event, KernelNames, AF_INET, AF_INET6, COMM_LEN};

const MAGIC: &[u8; 5] = b"TDREC";
pub const VERSION: u8 = 4;
const TAG_EVENT: u8 = 0x01;
/// Versions 1 and 2: the counts, then `TAG_END_V2`.
const TAG_COUNTS_V2: u8 = 0x02;
const TAG_END_V2: u8 = 0xff;
const TAG_BLOCK: u8 = 0x03;
const TAG_END: u8 = 0x04;
/// A block is written out once it holds this much, or at every `flush`.
const BLOCK_BYTES: usize = 64 << 10;
/// Larger blocks are never written: a length beyond this is damage.
const MAX_BLOCK_BYTES: u32 = 1 << 20;

pub struct Recorder<W: Write> {
    out: W,
    last_ts: u64,
    /// Records not written out yet.
    block: Vec<u8>,
}

fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn comm(buf: &mut Vec<u8>, raw: &[u8; COMM_LEN]) {
    let bytes = teardown_common::comm(raw);
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
        let crc = crc32fast::hash(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        out.write_all(&buf)?;
        out.flush()?;
        Ok(Recorder {
            out,
            last_ts: 0,
            block: Vec::with_capacity(BLOCK_BYTES + 256),
        })
    }

    pub fn event(&mut self, e: &Event) -> io::Result<()> {
        let b = &mut self.block;
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
        if b.len() >= BLOCK_BYTES {
            self.write_block(TAG_BLOCK)?;
        }
        Ok(())
    }

    /// Writes out what is buffered, so that it survives the recorder.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.block.is_empty() {
            self.write_block(TAG_BLOCK)?;
        }
        self.out.flush()
    }

    fn write_block(&mut self, tag: u8) -> io::Result<()> {
        let mut head = [0u8; 9];
        head[0] = tag;
        head[1..5].copy_from_slice(&(self.block.len() as u32).to_le_bytes());
        head[5..].copy_from_slice(&crc32fast::hash(&self.block).to_le_bytes());
        self.out.write_all(&head)?;
        self.out.write_all(&self.block)?;
        self.block.clear();
        Ok(())
    }

    /// Writes the counters, the time recording stopped (`end_ns`) and the end marker.
    pub fn finish(mut self, lost_events: u64, lost_owners: u64, end_ns: u64) -> io::Result<W> {
        self.flush()?;
        varint(&mut self.block, lost_events);
        varint(&mut self.block, lost_owners);
        varint(&mut self.block, end_ns.saturating_sub(self.last_ts));
        self.write_block(TAG_END)?;
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

/// How a recording ended, once `next_event` has returned `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Not reached yet.
    Unread,
    /// The end marker, and nothing after it.
    Complete,
    /// No end marker: the file stops at `offset`, after the last whole block (the recorder
    /// was killed, or its disk filled up). `cut` bytes of a last block were not whole.
    Missing { offset: u64, cut: u64 },
    /// Bytes follow the end marker at `offset` (two recordings concatenated?); not read.
    TrailingData { offset: u64 },
}

impl Ending {
    /// What a user must know about the recording's end, if anything.
    pub fn problem(&self) -> Option<String> {
        match *self {
            Ending::Unread | Ending::Complete => None,
            Ending::Missing { offset, cut: 0 } => Some(format!(
                "the recording has no end marker: it stops at byte {offset} (was the recorder \
                 killed?); every event up to there was replayed"
            )),
            Ending::Missing { offset, cut } => Some(format!(
                "the recording has no end marker: its last block, at byte {offset}, is cut short \
                 after {cut} bytes and was not replayed (was the recorder killed?); every event \
                 before it was"
            )),
            Ending::TrailingData { offset } => Some(format!(
                "data follows the recording's end marker at byte {offset} (two recordings \
                 joined?); it was not replayed"
            )),
        }
    }
}

pub struct Replay<R: BufRead> {
    input: R,
    version: u8,
    offset: u64,
    last_ts: u64,
    /// Version 3: the checked block being read, and where in it.
    block: Vec<u8>,
    in_block: usize,
    pub names: KernelNames,
    /// Set once the end marker is read.
    pub counts: Option<(u64, u64)>,
    /// When recording stopped; set at the end marker (version 2 on).
    pub end_ns: Option<u64>,
    pub ending: Ending,
}

impl<R: BufRead> Replay<R> {
    pub fn open(mut input: R) -> Result<Self, ReadError> {
        let mut r = Replay {
            input: &mut input,
            version: 1,
            offset: 0,
            last_ts: 0,
            block: Vec::new(),
            in_block: 0,
            names: KernelNames::default(),
            counts: None,
            end_ns: None,
            ending: Ending::Unread,
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
        let mut header = [&magic[..], &[version], &count].concat();
        let mut reasons = Vec::new();
        for _ in 0..u16::from_le_bytes(count) {
            let len = r.byte("reset-reason name")?;
            let mut name = vec![0; len as usize];
            r.exact(&mut name, "reset-reason name")?;
            header.push(len);
            header.extend_from_slice(&name);
            reasons.push(String::from_utf8_lossy(&name).into_owned());
        }
        if version >= 3 {
            let at = r.offset;
            let mut crc = [0u8; 4];
            r.exact(&mut crc, "file header")?;
            if u32::from_le_bytes(crc) != crc32fast::hash(&header) {
                return Err(r.error(at, "checksum mismatch: the file header is damaged".into()));
            }
        }
        let offset = r.offset;
        Ok(Replay {
            input,
            version,
            offset,
            last_ts: 0,
            block: Vec::new(),
            in_block: 0,
            names: KernelNames {
                reset_reasons: reasons,
            },
            counts: None,
            end_ns: None,
            ending: Ending::Unread,
        })
    }

    fn error(&self, offset: u64, reason: String) -> ReadError {
        ReadError { offset, reason }
    }

    /// Reads from the block being read (version 3), else from the file.
    fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), ReadError> {
        let at = self.offset;
        if self.version >= 3 {
            let rest = &self.block[self.in_block..];
            if rest.len() < buf.len() {
                return Err(self.error(at, format!("{what} runs past the end of its block")));
            }
            buf.copy_from_slice(&rest[..buf.len()]);
            self.in_block += buf.len();
            self.offset += buf.len() as u64;
            return Ok(());
        }
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

    /// The next event; `Ok(None)` at the end, which `ending` then describes.
    pub fn next_event(&mut self) -> Result<Option<Event>, ReadError> {
        if self.version < 3 {
            return self.next_unblocked();
        }
        while self.in_block == self.block.len() {
            match self.next_block()? {
                Some(TAG_BLOCK) => {}
                Some(_) => {
                    let lost_events = self.varint("lost-event count")?;
                    let lost_owners = self.varint("lost-owner count")?;
                    let delta = self.varint("end time")?;
                    self.end_ns = Some(self.last_ts.saturating_add(delta));
                    self.counts = Some((lost_events, lost_owners));
                    self.ending = match self.input.fill_buf() {
                        Ok([]) => Ending::Complete,
                        _ => Ending::TrailingData {
                            offset: self.offset,
                        },
                    };
                    return Ok(None);
                }
                None => return Ok(None),
            }
        }
        let at = self.offset;
        match self.byte("record tag")? {
            TAG_EVENT => self.event().map(Some),
            other => Err(self.error(at, format!("unknown record tag {other:#04x}"))),
        }
    }

    /// Reads and checks the next block (version 3); returns its tag, or `None` where the
    /// file stops without its end marker (`ending` says where).
    fn next_block(&mut self) -> Result<Option<u8>, ReadError> {
        let at = self.offset;
        let mut head = [0u8; 9];
        let got = read_up_to(&mut self.input, &mut head).map_err(|e| self.error(at, e))?;
        if got < head.len() {
            self.ending = Ending::Missing {
                offset: at,
                cut: got as u64,
            };
            return Ok(None);
        }
        let tag = head[0];
        if tag != TAG_BLOCK && tag != TAG_END {
            return Err(self.error(at, format!("unknown block tag {tag:#04x}")));
        }
        let len = u32::from_le_bytes(head[1..5].try_into().unwrap_or_default());
        if len > MAX_BLOCK_BYTES {
            return Err(self.error(
                at,
                format!("a block of {len} bytes: the recording is damaged"),
            ));
        }
        let crc = u32::from_le_bytes(head[5..9].try_into().unwrap_or_default());
        self.block.resize(len as usize, 0);
        let got = read_up_to(&mut self.input, &mut self.block).map_err(|e| self.error(at, e))?;
        if got < len as usize {
            self.ending = Ending::Missing {
                offset: at,
                cut: (head.len() + got) as u64,
            };
            self.block.clear();
            self.in_block = 0;
            return Ok(None);
        }
        if crc32fast::hash(&self.block) != crc {
            return Err(self.error(
                at,
                "checksum mismatch: this block is damaged and was not replayed".into(),
            ));
        }
        self.in_block = 0;
        self.offset += head.len() as u64;
        Ok(Some(tag))
    }

    /// Versions 1 and 2: records straight in the file, the end marker required.
    fn next_unblocked(&mut self) -> Result<Option<Event>, ReadError> {
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
            TAG_COUNTS_V2 => {
                let lost_events = self.varint("lost-event count")?;
                let lost_owners = self.varint("lost-owner count")?;
                if self.version >= 2 {
                    let delta = self.varint("end time")?;
                    self.end_ns = Some(self.last_ts.saturating_add(delta));
                }
                let end_at = self.offset;
                if self.byte("end marker")? != TAG_END_V2 {
                    return Err(self.error(end_at, "bad end marker".into()));
                }
                self.counts = Some((lost_events, lost_owners));
                self.ending = Ending::Complete;
                Ok(None)
            }
            other => Err(self.error(at, format!("unknown record tag {other:#04x}"))),
        }
    }

    fn event(&mut self) -> Result<Event, ReadError> {
        // The block, if any, was checked as a whole: only a damaged recorder could write a
        // bad record into it.
        let at = self.offset;
        let mut head = [0u8; 8];
        self.exact(&mut head, "event")?;
        let [event_kind, oldstate, newstate, sock_flags, owner_source, reason, tcp_flags, family] =
            head;
        let family = u16::from(family);
        let no_socket = event_kind == kind::NAMESPACE_GONE && family == 0;
        if family != AF_INET && family != AF_INET6 && !no_socket {
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
        if self.version >= 4 {
            self.seq(&mut e)?;
        }
        (e.kind, e.oldstate, e.newstate, e.sock_flags) =
            (event_kind, oldstate, newstate, sock_flags);
        (e.owner_source, e.reason, e.tcp_flags, e.family) =
            (owner_source, reason, tcp_flags, family);
        Ok(e)
    }
}

/// Fills `buf` as far as the input goes; returns how much it got.
fn read_up_to(input: &mut impl BufRead, buf: &mut [u8]) -> Result<usize, String> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(got)
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
    use crate::testing::ev;
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
        // An event about no socket: a network namespace gone, family 0.
        let mut gone: Event = unsafe { std::mem::zeroed() };
        (gone.ts_ns, gone.kind, gone.netns) = (1_200_000_000, kind::NAMESPACE_GONE, 4_026_532_174);
        // Out of order on purpose: deltas go backwards too.
        vec![
            ev(1_000_000_000, 7, 80, 5000, ESTABLISHED, FIN_WAIT1),
            owned,
            v6,
            gone,
        ]
    }

    fn names() -> KernelNames {
        KernelNames {
            reset_reasons: vec!["NOT_SPECIFIED".into(), "NO_SOCKET".into()],
        }
    }

    fn record(events: &[Event]) -> Vec<u8> {
        let mut rec = Recorder::new(Vec::new(), &names()).unwrap();
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
        let many: Vec<Event> = (0..1000).flat_map(|_| sample()).collect();
        let size = record(&many).len();
        assert!(
            size < many.len() * std::mem::size_of::<Event>() * 2 / 3,
            "compact: {size} bytes for {} events",
            many.len()
        );
    }

    /// A file in the format of versions 1 and 2: records straight in the file, then the
    /// counts (version 2: and the end time), then the end marker.
    fn legacy(events: &[Event], version: u8) -> Vec<u8> {
        let mut rec = Recorder::new(Vec::new(), &KernelNames::default()).unwrap();
        for e in events {
            rec.event(e).unwrap();
            assert_eq!(
                rec.block.pop(),
                Some(0),
                "no sequence state: one 0 byte, dropped"
            );
        }
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[version, 0, 0]);
        out.extend_from_slice(&rec.block);
        out.extend_from_slice(&[TAG_COUNTS_V2, 3, 1]);
        if version == 2 {
            varint(
                &mut out,
                1_500_000_000 - events.last().map_or(0, |e| e.ts_ns),
            );
        }
        out.push(TAG_END_V2);
        out
    }

    /// The sample as versions before 4 knew it: without sequence state.
    fn bare() -> Vec<Event> {
        sample()
            .into_iter()
            .map(|e| Event {
                seq_flags: 0,
                snd_una: 0,
                snd_nxt: 0,
                write_seq: 0,
                rcv_nxt: 0,
                ..e
            })
            .collect()
    }

    #[test]
    fn versions_1_and_2_still_replay() {
        let v2 = legacy(&bare(), 2);
        let (events, r) = replay(&v2).unwrap();
        assert_eq!(events, bare());
        assert_eq!((r.counts, r.end_ns), (Some((3, 1)), Some(1_500_000_000)));
        assert_eq!(r.ending, Ending::Complete);
        let v1 = legacy(&bare(), 1);
        let (events, r) = replay(&v1).unwrap();
        assert_eq!(events, bare());
        assert_eq!((r.counts, r.end_ns), (Some((3, 1)), None));
        let cut = legacy(&bare(), 2);
        let err = replay(&cut[..cut.len() - 1]).err().expect("no end marker");
        assert!(err.reason.contains("truncated"), "{err:?}");
    }

    /// Blocks as `Recorder` writes them when flushed after each of `events`.
    fn flushed_each(events: &[Event]) -> Vec<u8> {
        let mut rec = Recorder::new(Vec::new(), &names()).unwrap();
        for e in events {
            rec.event(e).unwrap();
            rec.flush().unwrap();
        }
        rec.finish(3, 1, 1_500_000_000).unwrap()
    }

    #[test]
    fn a_recording_cut_anywhere_replays_every_whole_block_and_says_its_end_is_missing() {
        let bytes = flushed_each(&sample());
        let header = 5 + 1 + 2 + (1 + 13) + (1 + 9) + 4;
        for cut in 0..bytes.len() {
            match replay(&bytes[..cut]) {
                Err(err) => {
                    assert!(cut < header, "cut {cut} after the header: {err:?}");
                    assert!(err.reason.contains("truncated") || err.reason.contains("magic"));
                }
                Ok((events, r)) => {
                    assert!(cut >= header, "cut {cut} inside the header accepted");
                    assert!(sample().starts_with(&events), "cut {cut}: {events:?}");
                    assert!(matches!(r.ending, Ending::Missing { .. }), "cut {cut}");
                    assert!(r.ending.problem().unwrap().contains("no end marker"));
                    assert_eq!(r.counts, None);
                }
            }
        }
        let (events, r) = replay(&bytes).unwrap();
        assert_eq!((events, r.ending), (sample(), Ending::Complete));
    }

    #[test]
    fn a_damaged_byte_is_never_replayed_as_data() {
        let bytes = flushed_each(&sample());
        for at in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[at] ^= flip;
                if let Ok((events, r)) = replay(&damaged) {
                    // Only a damaged block length can pass, as a file cut short there.
                    assert!(
                        sample().starts_with(&events) && r.ending != Ending::Complete,
                        "byte {at} ^ {flip:#x} replayed as data: {events:?} {:?}",
                        r.ending
                    );
                }
            }
        }
        let mut counts = Vec::new();
        for v in [3, 1, 1_500_000_000 - 5] {
            varint(&mut counts, v);
        }
        let end_block = bytes.len() - 9 - counts.len();
        let mut damaged = bytes.clone();
        damaged[end_block + 10] ^= 1;
        let err = replay(&damaged).err().unwrap();
        assert_eq!(err.offset, end_block as u64, "{err:?}");
        assert!(err.reason.contains("checksum mismatch"), "{err:?}");
    }

    #[test]
    fn data_after_the_end_marker_is_reported() {
        let one = flushed_each(&sample());
        let joined = [one.clone(), one.clone()].concat();
        let (events, r) = replay(&joined).unwrap();
        assert_eq!(events, sample());
        assert_eq!(
            r.ending,
            Ending::TrailingData {
                offset: one.len() as u64
            }
        );
    }

    /// A bounded fuzz: arbitrary bytes behind a valid header, and random damage to a real
    /// recording, never panic and never yield an event that was not recorded.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let good = flushed_each(&sample());
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..20_000 {
            let mut bytes = good.clone();
            if round % 2 == 0 {
                let keep = 32 + (next() % 16) as usize;
                bytes.truncate(keep.min(bytes.len()));
                for _ in 0..next() % 200 {
                    bytes.push(next() as u8);
                }
            } else {
                for _ in 0..1 + next() % 4 {
                    let at = (next() % bytes.len() as u64) as usize;
                    bytes[at] = next() as u8;
                }
            }
            if let Ok((events, _)) = replay(&bytes) {
                assert!(sample().starts_with(&events), "round {round}: {events:?}");
            }
        }
    }
}
