//! `--mermaid FILE`: each connection's close as a Mermaid `sequenceDiagram`, in the form
//! textbooks draw the four-way close: the two ends as participants, each segment an arrow
//! with its flags and, when known, its sequence numbers (`FIN=1, seq=u`, `ACK=1, ack=u+1`),
//! each state entered a note. Each segment is drawn from the best evidence there is: a FIN
//! from its sender when it was seen on the wire or deduced to have left at once, else from
//! its arrival at the receiver; the application's close() (the FIN only queued) is a note
//! of its own when the FIN left later. Solid arrows were observed on a socket, dashed ones
//! inferred or only bounded (between two moments), with the basis written under them. An
//! ACK still owed when the application closed rides on its FIN: one `FIN=1, ACK=1`
//! segment. Times run from the first FIN, queued or sent.
//!
//! The file is Markdown, one fenced `mermaid` block per connection: GitHub and GitLab show
//! it as pictures, and `mmdc -i FILE -o out.svg` renders every block (`out-1.svg`, ...).

use std::{fmt::Write as _, path::Path};

use teardown_common::{state, KernelNames};

use crate::{
    clock::Clock,
    error::Result,
    reconstruct::{Evidence, Role, Timeline, Wave, WaveKind},
};

use super::{
    pairs::Pairs,
    safe_file::SafeFile,
    text::{comm, endpoint, ms},
    TimelineSink,
};

/// An ACK that reaches the FIN's sender this long after the FIN arrived was held back by
/// the receiver: Linux's shortest delayed-ACK timer (`TCP_DELACK_MIN`).
const DELAYED_ACK_NS: u64 = 40_000_000;

/// The two participants' aliases in the diagram: the end that closed first is on the left.
const SIDES: [&str; 2] = ["A", "B"];

/// One segment on the wire, as drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    /// Index into `SIDES` of the sender.
    from: usize,
    flags: &'static str,
    /// Sequence and acknowledgement numbers, when the timeline carries them; the label
    /// shows them only then.
    seq: Option<u32>,
    ack: Option<u32>,
    ts_ns: Option<u64>,
    /// When the time is not observed: the moments it certainly lies between.
    earliest_ns: Option<u64>,
    latest_ns: Option<u64>,
    evidence: Evidence,
    /// Where the time comes from, and on which end.
    basis: String,
    /// What is special about it: a merged or delayed ACK, a retransmitted FIN.
    remarks: Vec<Remark>,
}

impl Segment {
    /// Where it goes in time: its time, else the earliest it can have happened.
    fn at(&self) -> Option<u64> {
        self.ts_ns.or(self.earliest_ns)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Remark {
    /// A FIN that also acknowledges the FIN of side `of`; that ACK was seen at `seen_ns`.
    CarriesAck {
        of: usize,
        seen_ns: Option<u64>,
        observed: bool,
    },
    /// An ACK sent this long after the FIN it acknowledges arrived.
    Delayed { after_ns: u64 },
    /// A FIN whose sender had to send it again before it was seen arriving.
    Retransmitted,
}

/// `FIN=1, seq=..., ack=...`: the flags, then the numbers that are known.
fn segment_label(flags: &str, seq: Option<u32>, ack: Option<u32>) -> String {
    let mut out = flags.to_string();
    if let Some(seq) = seq {
        let _ = write!(out, ", seq={seq}");
    }
    if let Some(ack) = ack {
        let _ = write!(out, ", ack={ack}");
    }
    out
}

/// Text Mermaid shows as is: characters that its grammar reads (`;`, `#`, `:`, `%`, `<`,
/// quotes, ...) and anything unprintable become numeric entities (`#59;`); `->` becomes an
/// arrow.
fn escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.replace("->", "→").chars() {
        if c.is_alphanumeric() || " .,_-+=/()[]→".contains(c) {
            out.push(c);
        } else {
            let _ = write!(out, "#{};", c as u32);
        }
    }
    out
}

/// `+0.839 ms` from the origin (negative before it).
fn since(ts_ns: u64, origin_ns: u64) -> String {
    if ts_ns >= origin_ns {
        format!("+{} ms", ms(ts_ns - origin_ns))
    } else {
        format!("-{} ms", ms(origin_ns - ts_ns))
    }
}

fn wave(t: &Timeline, what: WaveKind) -> Option<Wave> {
    t.waves().into_iter().find(|w| w.what == what)
}

/// How much a wave tells of when its segment went: observed, inferred with a time,
/// bounded, nothing.
fn rank(w: &Wave) -> u8 {
    match (w.evidence, w.ts_ns) {
        (Evidence::Observed, Some(_)) => 3,
        (Evidence::Inferred, Some(_)) => 2,
        _ if w.earliest_ns.is_some() => 1,
        _ => 0,
    }
}

type Seen<'t> = Option<(Wave, &'t Timeline)>;

/// The best-known of the ways one segment was seen; on a tie the first candidate wins.
fn best<'t>(candidates: [Seen<'t>; 2]) -> Seen<'t> {
    candidates
        .into_iter()
        .flatten()
        .reduce(|a, b| if rank(&b.0) > rank(&a.0) { b } else { a })
}

fn segment(from: usize, flags: &'static str, (w, seen_by): (Wave, &Timeline)) -> Segment {
    Segment {
        from,
        flags,
        seq: None,
        ack: None,
        ts_ns: w.ts_ns,
        earliest_ns: w.earliest_ns,
        latest_ns: w.latest_ns,
        evidence: w.evidence,
        basis: format!("{} at {}", w.basis, endpoint(seen_by.laddr, seen_by.lport)),
        remarks: Vec::new(),
    }
}

/// The four segments of the close (fewer when an ACK rode on a FIN), from what each end
/// saw. `ends[1]` is `None` when the remote end is not on this host: then everything about
/// it comes from the local end's waves.
fn segments(ends: [Option<&Timeline>; 2]) -> Vec<Segment> {
    // What `side` saw of `what`, with whose view it is.
    let seen = |side: usize, what: WaveKind| -> Seen<'_> {
        let t = ends[side]?;
        Some((wave(t, what)?, t))
    };
    let mut fins: [Option<Segment>; 2] = [None, None];
    let mut acks: [Option<Segment>; 2] = [None, None];
    for s in 0..2 {
        let o = 1 - s;
        let queued = seen(s, WaveKind::FinQueued);
        let sent = seen(s, WaveKind::FinSent);
        let arrived = seen(o, WaveKind::FinReceived);
        let known = |c: &Seen, evidence: Evidence| {
            c.is_some_and(|(w, _)| w.evidence == evidence && w.ts_ns.is_some())
        };
        let fin = if known(&sent, Evidence::Observed) && known(&arrived, Evidence::Observed) {
            // The sender's "observed" is the receiver's arrival read off the peer socket:
            // the same event, told where it happened.
            arrived
        } else if known(&sent, Evidence::Observed) || known(&sent, Evidence::Inferred) {
            // On the wire as the sender knows it: seen at the peer, or deduced (nothing
            // could hold it back at close).
            sent
        } else {
            best([arrived, sent])
        };
        match fin {
            Some(fin) => {
                let mut seg = segment(s, "FIN=1", fin);
                seg.seq = [Some(fin), sent, queued, arrived]
                    .into_iter()
                    .flatten()
                    .find_map(|(w, _)| w.seq);
                let resent = ends[s].and_then(|t| t.retransmits.iter().find(|r| r.fin));
                if let (Some(r), Evidence::Observed, Some(at)) = (resent, seg.evidence, seg.ts_ns) {
                    if r.ts_ns <= at {
                        seg.remarks.push(Remark::Retransmitted);
                    }
                }
                fins[s] = Some(seg);
            }
            None => {
                // A socket left in CLOSE_WAIT: its application never closed, no FIN went.
                if let Some(t) = ends[s].filter(|t| t.role() == Some(Role::Passive)) {
                    fins[s] = Some(Segment {
                        from: s,
                        flags: "FIN=1",
                        seq: None,
                        ack: None,
                        ts_ns: None,
                        earliest_ns: None,
                        latest_ns: None,
                        evidence: Evidence::NotObserved,
                        basis: format!(
                            "no close() seen: the application had not closed at {}",
                            endpoint(t.laddr, t.lport)
                        ),
                        remarks: Vec::new(),
                    });
                }
                // Nothing went: nothing to acknowledge.
                continue;
            }
        }
        // The ACK: best where it arrived (the FIN's sender), else where it left.
        let (got, gave) = (seen(s, WaveKind::AckReceived), seen(o, WaveKind::AckSent));
        if let Some(ack) = best([got, gave]) {
            let mut seg = segment(o, "ACK=1", ack);
            seg.ack = [Some(ack), got, gave]
                .into_iter()
                .flatten()
                .find_map(|(w, _)| w.seq);
            acks[s] = Some(seg);
        }
    }
    // Orient by who closed first: the ACK of the first FIN and the second FIN.
    let closed = |s: usize| {
        seen(s, WaveKind::FinQueued)
            .and_then(|(w, _)| w.ts_ns)
            .or_else(|| fins[s].as_ref().and_then(Segment::at))
    };
    let first = match (closed(0), closed(1)) {
        (Some(a), Some(b)) if b < a => 1,
        (None, Some(_)) => 1,
        _ => 0,
    };
    let second = 1 - first;
    let mut out = Vec::new();
    let simultaneous = ends
        .iter()
        .flatten()
        .any(|t| t.role() == Some(Role::Simultaneous));
    let merged = match (&acks[first], &fins[second]) {
        (Some(ack), Some(_)) if !simultaneous => {
            let said = seen(second, WaveKind::AckSent);
            let queued = seen(second, WaveKind::FinQueued);
            if said.is_some_and(|(w, _)| w.basis.starts_with("merged")) {
                // The sequence state at close said the ACK was still owed: FIN+ACK.
                true
            } else if queued.is_some_and(|(w, _)| w.seq.is_some()) {
                // It was not owed at close: it had gone on its own.
                false
            } else {
                // Without the sequence state: an ACK that arrived only once the other end
                // had queued its FIN left with it.
                match (ack.ts_ns, closed(second)) {
                    (Some(ack_at), Some(fin_at)) => fin_at <= ack_at,
                    _ => false,
                }
            }
        }
        _ => false,
    };
    if let Some(fin) = fins[first].take() {
        out.push(fin);
    }
    if let Some(mut ack) = acks[first].take() {
        if merged {
            // The ACK rode on the other end's FIN.
            if let Some(fin) = fins[second].as_mut() {
                fin.flags = "FIN=1, ACK=1";
                fin.ack = ack.ack;
                fin.remarks.push(Remark::CarriesAck {
                    of: first,
                    seen_ns: ack.ts_ns,
                    observed: ack.evidence == Evidence::Observed,
                });
            }
        } else {
            // Measured from the FIN's arrival, where the receiving end observed it: a FIN
            // lost on the way is late, not its ACK.
            let arrived = ends[second]
                .and_then(|t| wave(t, WaveKind::FinReceived))
                .filter(|w| w.evidence == Evidence::Observed)
                .and_then(|w| w.ts_ns);
            if let (Some(ack_at), Some(fin_at)) = (ack.ts_ns, arrived) {
                if ack_at.saturating_sub(fin_at) >= DELAYED_ACK_NS {
                    ack.remarks.push(Remark::Delayed {
                        after_ns: ack_at - fin_at,
                    });
                }
            }
            out.push(ack);
        }
    }
    out.extend(fins[second].take());
    out.extend(acks[second].take());
    out
}

/// A participant's heading: its address and port, then its process and timeline id.
fn participant(alias: &str, t: Option<&Timeline>, remote: &Timeline) -> String {
    match t {
        Some(t) => {
            let who = match t.owner {
                Some(o) => format!("{} {}", comm(&o.task.comm), o.task.pid),
                None => "owner unknown".into(),
            };
            format!(
                "    participant {alias} as {}<br/>{}",
                escape(&endpoint(t.laddr, t.lport)),
                escape(&format!("{who} #{}", t.id)),
            )
        }
        None => format!(
            "    participant {alias} as {}<br/>remote end, not traced",
            escape(&endpoint(remote.raddr, remote.rport))
        ),
    }
}

/// The state a transition entered, as its note says it; CLOSE says what became of it.
pub(crate) fn entered(t: &Timeline, i: usize) -> String {
    let tr = t.transitions[i];
    let last = i + 1 == t.transitions.len();
    if tr.to == state::CLOSE && last {
        match t.time_wait() {
            Some(state::TIME_WAIT) => return "TIME_WAIT".into(),
            Some(_) => return "CLOSE: handed to a TIME_WAIT mini-socket in FIN_WAIT2".into(),
            None => {}
        }
    }
    state::name(tr.to).to_string()
}

/// The diagram of one connection: both ends when the remote one is on this host too
/// (`b`), else `a` against a remote end seen only through `a` (elsewhere, or filtered out).
pub fn connection(
    a: &Timeline,
    b: Option<&Timeline>,
    clock: &Clock,
    names: &KernelNames,
) -> String {
    let mut ends = [Some(a), b];
    let mut segs = segments(ends);
    // The end that sent the first FIN goes on the left, as the first arrow's sender.
    if b.is_some() && segs.first().is_some_and(|s| s.from == 1) {
        ends.swap(0, 1);
        segs = segments(ends);
    }
    // The application's close(), where it differs from the FIN on the wire: the FIN was
    // queued then, and left (or was seen arriving) later.
    let closes: Vec<(usize, u64)> = ends
        .iter()
        .enumerate()
        .filter_map(|(side, t)| {
            let q = wave((*t)?, WaveKind::FinQueued)?;
            let at = q.ts_ns?;
            // Deduced to have left at once: the arrow is the close.
            let same = wave((*t)?, WaveKind::FinSent)
                .is_some_and(|w| w.ts_ns == Some(at) && w.evidence == Evidence::Inferred);
            (!same).then_some((side, at))
        })
        .collect();
    let first_fin = segs
        .iter()
        .filter(|s| s.flags.starts_with("FIN"))
        .filter_map(Segment::at)
        .chain(closes.iter().map(|(_, at)| *at))
        .min();
    let origin = first_fin
        .or_else(|| {
            // No FIN: from the first thing seen (a reset comes before its CLOSE).
            let ends = ends.iter().flatten();
            let resets = ends.clone().flat_map(|t| &t.resets).map(|r| r.ts_ns);
            ends.flat_map(|t| &t.transitions)
                .map(|tr| tr.ts_ns)
                .chain(resets)
                .min()
        })
        .unwrap_or(0);

    let mut out = String::from("sequenceDiagram\n");
    for (alias, end) in SIDES.iter().zip(ends) {
        let _ = writeln!(out, "{}", participant(alias, end, a));
    }
    let _ = writeln!(
        out,
        "    Note over A,B: times from the first {} at {} UTC<br/>solid: observed, dashed: inferred or bounded",
        if first_fin.is_some() { "FIN (queued or sent)" } else { "event" },
        clock.time_of_day(origin)
    );

    // Everything timed, in time order; at one instant, arrows before the states they cause.
    let mut timed: Vec<(u64, String)> = Vec::new();
    let mut untimed = Vec::new();
    // A close() before the arrows it leads to.
    for (side, at) in &closes {
        let place = if *side == 0 { "left of" } else { "right of" };
        timed.push((
            *at,
            format!(
                "    Note {place} {}: {} {}",
                SIDES[*side],
                escape("close(): FIN queued"),
                since(*at, origin)
            ),
        ));
    }
    for s in &segs {
        let label = segment_label(s.flags, s.seq, s.ack);
        let Some(at) = s.at() else {
            untimed.push(format!(
                "    Note over A,B: {} from {}: not seen ({})",
                escape(&label),
                SIDES[s.from],
                escape(&s.basis)
            ));
            continue;
        };
        let (arrow, how) = match (s.evidence, s.ts_ns) {
            (Evidence::Observed, Some(_)) => ("->>", "observed"),
            (Evidence::Inferred, Some(_)) => ("-->>", "inferred"),
            _ => ("-->>", "bounded"),
        };
        let when = match (s.ts_ns, s.latest_ns) {
            (Some(ts), _) => since(ts, origin),
            (None, Some(latest)) => format!("{} to {}", since(at, origin), since(latest, origin)),
            (None, None) => format!("after {}", since(at, origin)),
        };
        let mut text = format!("{} {when}<br/>{how}: {}", escape(&label), escape(&s.basis));
        if s.ts_ns.is_some() && s.evidence != Evidence::Observed {
            if let (Some(e), Some(l)) = (s.earliest_ns, s.latest_ns) {
                if e != l {
                    let _ = write!(
                        text,
                        "<br/>between {} and {}",
                        since(e, origin),
                        since(l, origin)
                    );
                }
            }
        }
        for remark in &s.remarks {
            let remark = match remark {
                Remark::CarriesAck {
                    of,
                    seen_ns,
                    observed,
                } => format!(
                    "carries the ACK of {}'s FIN ({} at {})",
                    SIDES[*of],
                    if *observed { "seen" } else { "inferred" },
                    seen_ns.map_or("?".into(), |a| since(a, origin))
                ),
                Remark::Delayed { after_ns } => {
                    format!("delayed ACK: {} ms after the FIN arrived", ms(*after_ns))
                }
                Remark::Retransmitted => "arrived after being sent again".into(),
            };
            let _ = write!(text, "<br/>{}", escape(&remark));
        }
        timed.push((
            at,
            format!("    {}{arrow}{}: {text}", SIDES[s.from], SIDES[1 - s.from]),
        ));
    }
    let mut notes = Vec::new();
    for (side, t) in ends.iter().enumerate() {
        let Some(t) = t else { continue };
        let (me, other) = (SIDES[side], SIDES[1 - side]);
        let place = if side == 0 { "left of" } else { "right of" };
        for r in &t.retransmits {
            let what = if r.fin {
                "FIN=1 again"
            } else {
                "a segment again"
            };
            timed.push((
                r.ts_ns,
                format!(
                    "    {me}->>{other}: {what} {}<br/>observed: retransmitted in {}",
                    since(r.ts_ns, origin),
                    state::name(r.state)
                ),
            ));
        }
        // A reset between two ends on this host is drawn once, from its sender.
        let other_sent = ends[1 - side].is_some_and(|o| o.resets.iter().any(|r| r.sent));
        for r in t.resets.iter().filter(|r| r.sent || !other_sent) {
            let (from, to, how) = if r.sent {
                (me, other, "sent")
            } else {
                (other, me, "received")
            };
            let reason = names
                .sent_reason(r.sent, r.reason)
                .map_or(String::new(), |n| format!(" ({})", escape(n)));
            timed.push((
                r.ts_ns,
                format!(
                    "    {from}-x{to}: RST=1{reason} {}<br/>observed: {how} at {}",
                    since(r.ts_ns, origin),
                    escape(&endpoint(t.laddr, t.lport))
                ),
            ));
        }
        for (i, tr) in t.transitions.iter().enumerate() {
            notes.push((
                tr.ts_ns,
                format!(
                    "    Note {place} {me}: {} {}",
                    escape(&entered(t, i)),
                    since(tr.ts_ns, origin)
                ),
            ));
        }
        // The TIME_WAIT mini-socket's life after the socket's CLOSE (fentry, where allowed).
        if let Some(mini) = t.mini {
            let mut note = |at: u64, what: String| {
                notes.push((
                    at,
                    format!(
                        "    Note {place} {me}: {} {}",
                        escape(&what),
                        since(at, origin)
                    ),
                ))
            };
            if let Some(at) = mini.fin_received_ns {
                note(at, "TIME_WAIT: the mini-socket took the FIN".into());
            }
            if let Some(at) = mini.reused_ns {
                note(at, "TIME_WAIT reused by a new connection".into());
            }
            if let Some(end) = mini.end {
                let lived = ms(end.ts_ns.saturating_sub(mini.entered_ns));
                note(
                    end.ts_ns,
                    format!("mini-socket {} after {lived} ms", end.describe()),
                );
            }
        }
        if let Some(still) = t.still() {
            notes.push((
                still.since_ns + still.for_ns,
                format!(
                    "    Note {place} {me}: still {} after {} ms",
                    state::name(still.state),
                    ms(still.for_ns)
                ),
            ));
        }
    }
    timed.extend(notes);
    timed.sort_by_key(|(ts, _)| *ts);
    for (_, line) in timed {
        out.push_str(&line);
        out.push('\n');
    }
    for line in untimed {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `--mermaid FILE`: a Markdown file that grows by one diagram per connection, as soon as
/// both ends (or the only end on this host) have closed.
pub struct MermaidFile {
    file: SafeFile,
    pairs: Pairs,
}

impl MermaidFile {
    /// Creates the file now, so an unwritable path fails before tracing starts.
    pub fn create(path: &Path) -> Result<Self> {
        let mut file = SafeFile::create(path)?;
        file.write_all(b"# TCP closes seen by teardown-trace\n")?;
        Ok(MermaidFile {
            file,
            pairs: Pairs::default(),
        })
    }

    fn write(
        &mut self,
        a: &Timeline,
        b: Option<&Timeline>,
        clock: &Clock,
        names: &KernelNames,
    ) -> Result<()> {
        let mut title = format!("#{} {}", a.id, endpoint(a.laddr, a.lport));
        match b {
            Some(b) => {
                let _ = write!(title, " ↔ #{} {}", b.id, endpoint(b.laddr, b.lport));
            }
            None => {
                let _ = write!(title, " ↔ {}", endpoint(a.raddr, a.rport));
            }
        }
        let diagram = connection(a, b, clock, names);
        // Flushed at once: a FIFO's reader sees each close as it completes.
        let block = format!("\n## {title}\n\n```mermaid\n{diagram}```\n");
        self.file.write_all(block.as_bytes())?;
        self.file.flush()
    }
}

impl TimelineSink for MermaidFile {
    fn timeline(&mut self, t: &Timeline, clock: &Clock, names: &KernelNames) -> Result<()> {
        if t.peer.is_none() {
            return self.write(t, None, clock, names);
        }
        let mut evicted = Vec::new();
        let first = self.pairs.offer(t, &mut |old| evicted.push(old));
        for old in evicted {
            self.write(&old, None, clock, names)?;
        }
        match first {
            Some(first) => self.write(&first, Some(t), clock, names),
            None => Ok(()),
        }
    }

    fn finish(mut self: Box<Self>, clock: &Clock, names: &KernelNames) -> Result<()> {
        // Ends whose peer never came out (filtered, or still open): drawn alone.
        for t in std::mem::take(&mut self.pairs).into_waiting() {
            self.write(&t, None, clock, names)?;
        }
        self.file.finish()
    }
}

#[cfg(test)]
mod tests;
