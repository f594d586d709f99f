//! Truth on the wire: tcpdump captures the lab namespace's loopback while the real tracer
//! runs, and every wave the tracer reports is compared with its packet: the sequence number
//! must be the packet's, an observed time must be near the packet's stamp (50 µs, or what
//! this kernel's own handshake shows it needs: see `Capture::slack_ns`), an inferred or
//! unobserved time must hold the packet within the bounds it states, and the
//! FINs, their ACKs and the resets must be as many on the wire as in the report.
//!
//! On loopback a packet is stamped when the receive side picks it up, a few µs after the
//! send path: a sending socket's transition reads a little *before* its packet.
//!
//! These tests need root and tcpdump. Without root they print SKIPPED and return; under CI
//! (`CI` set) they fail instead.

mod common;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::{Child, Stdio},
    sync::mpsc,
};

use common::*;

/// How far an observed wave may be from its packet's stamp on a kernel running at native
/// speed (this host: a few µs to tens of µs).
const SLACK_NS: i128 = 50_000;

/// How many of the slowest handshake turnaround a wave may be from its packet (see
/// `Capture::slack_ns`).
const TURNAROUNDS: i128 = 2;

/// Connections made in the capture only to time the kernel's handshake turnarounds, in each
/// of the calibration rounds: one just before the pattern, one just after it.
const CALIBRATION_CONNECTIONS: usize = 100;
const CALIBRATION_ROUNDS: usize = 2;

/// Spawns `cmd` and waits until a stderr line contains `ready` (or panics after `WAIT`).
/// Stdout and stderr keep draining into the returned channels.
fn start_until(
    mut cmd: Command,
    ready: &str,
) -> (Child, mpsc::Receiver<String>, mpsc::Receiver<String>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let lines = reader(child.stdout.take().unwrap());
    let stderr = reader(child.stderr.take().unwrap());
    let deadline = Instant::now() + *WAIT;
    loop {
        match stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains(ready) => break,
            Ok(line) => eprintln!("{line}"),
            Err(_) => panic!("{cmd:?} did not start: {:?}", child.try_wait()),
        }
    }
    (child, lines, stderr)
}

/// SIGINT, and the exit code.
fn interrupt(mut child: Child) -> i32 {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    child.wait().expect("wait").code().unwrap_or(-1)
}

/// One TCP segment from the capture.
#[derive(Clone, Copy, Debug)]
struct Packet {
    /// Unix time, ns.
    ts_ns: i128,
    src: (IpAddr, u16),
    dst_port: u16,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    fin: bool,
    rst: bool,
    len: u32,
}

impl Packet {
    /// The sequence number the FIN occupies: after the data it carries.
    fn fin_seq(&self) -> Option<u32> {
        self.fin.then(|| self.seq.wrapping_add(self.len))
    }
}

/// A pcap file with nanosecond stamps (`--time-stamp-precision=nano`), Ethernet framing (what
/// tcpdump records for `lo`): its TCP segments.
fn parse_pcap(bytes: &[u8]) -> Vec<Packet> {
    let u32le = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!(u32le(0), 0xa1b2_3c4d, "a little-endian nanosecond pcap");
    assert_eq!(u32le(20), 1, "Ethernet link type");
    let mut packets = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let ts_ns = i128::from(u32le(at)) * 1_000_000_000 + i128::from(u32le(at + 4));
        let caplen = u32le(at + 8) as usize;
        // tcpdump may be writing the last record right now.
        let Some(frame) = bytes.get(at + 16..at + 16 + caplen) else {
            break;
        };
        at += 16 + caplen;
        let be16 = |b: &[u8], i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let be32 = |b: &[u8], i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
        let (src, tcp, payload_and_tcp) = match be16(frame, 12) {
            0x0800 if frame[14 + 9] == 6 => {
                let ip = &frame[14..];
                let ihl = usize::from(ip[0] & 0xf) * 4;
                let total = usize::from(be16(ip, 2));
                let src = IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]));
                (src, &ip[ihl..total], total - ihl)
            }
            0x86dd if frame[14 + 6] == 6 => {
                let ip = &frame[14..];
                let src: [u8; 16] = ip[8..24].try_into().unwrap();
                let len = usize::from(be16(ip, 4));
                (IpAddr::V6(Ipv6Addr::from(src)), &ip[40..40 + len], len)
            }
            _ => continue,
        };
        let offset = usize::from(tcp[12] >> 4) * 4;
        let flags = tcp[13];
        packets.push(Packet {
            ts_ns,
            src: (src, be16(tcp, 0)),
            dst_port: be16(tcp, 2),
            seq: be32(tcp, 4),
            ack: (flags & 0x10 != 0).then(|| be32(tcp, 8)),
            syn: flags & 0x02 != 0,
            fin: flags & 0x01 != 0,
            rst: flags & 0x04 != 0,
            len: (payload_and_tcp - offset) as u32,
        });
    }
    packets
}

/// CLOCK_REALTIME minus CLOCK_MONOTONIC: the tracer stamps in the second, tcpdump in the
/// first.
fn monotonic_to_unix_ns() -> i128 {
    let read = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec we own.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    };
    let before = read(libc::CLOCK_REALTIME);
    let mono = read(libc::CLOCK_MONOTONIC);
    let after = read(libc::CLOCK_REALTIME);
    (before + after) / 2 - mono
}

/// One lab pattern played under both the tracer and tcpdump.
struct Capture {
    timelines: Vec<Value>,
    packets: Vec<Packet>,
    /// The calibration connections' segments (see `Capture::slack_ns`).
    calibration: Vec<Packet>,
    offset_ns: i128,
}

fn captured(pattern: &str, extra: &[&str]) -> Capture {
    let (ns, port) = (Netns::new(), port());
    let pcap = std::env::temp_dir().join(format!("td-wire-{pattern}-{port}.pcap"));
    let _ = std::fs::remove_file(&pcap);
    let mut tcpdump = Command::new("ip");
    tcpdump.args(["netns", "exec", &ns.0, "tcpdump", "-i", "lo", "-U", "-w"]);
    tcpdump
        .arg(&pcap)
        .args(["--time-stamp-precision=nano", "tcp"]);
    // "listening on lo" is printed once the capture is active.
    let (capture, _, _) = start_until(tcpdump, "listening on");
    let mut trace = Command::new(TRACE);
    trace.args(["--json", "-P", &port.to_string()]);
    let (tracer, lines, tracer_err) = start_until(trace, "Tracing");

    // Handshakes to other ports, in the same capture and under the same load, whose
    // turnarounds set the bound on a slow kernel (`Capture::slack_ns`): just before the
    // pattern and just after it, so that they sample the stalls of the time it ran (a
    // 5.10 guest's ACK, 43 ms into the pattern, came 342 µs after its packet, with 100
    // handshakes after the pattern giving a bound of 337 µs).
    let calibration_ports: [u16; CALIBRATION_ROUNDS] = std::array::from_fn(|_| common::port());
    let calibrate = |port: u16| {
        play(
            "churn",
            &ns,
            port,
            &["--count", &CALIBRATION_CONNECTIONS.to_string()],
        )
        .finish()
    };
    let [before, after] = calibration_ports;
    calibrate(before);
    let status = Command::new(LAB)
        .args([pattern, "--netns", &ns.0, "--port", &port.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .status()
        .expect("teardown-lab");
    assert!(status.success(), "teardown-lab {pattern}: {status}");
    calibrate(after);
    let mut timelines: Vec<Value> = Vec::new();
    let deadline = Instant::now() + *WAIT;
    while timelines.len() < 2 {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("timed out; got {timelines:#?}"));
        timelines.push(serde_json::from_str(&line).unwrap());
    }
    assert_eq!(interrupt(tracer), 0);
    let summary: Vec<String> = tracer_err.iter().collect();
    assert!(
        summary.iter().any(|l| l.contains(" 0 lost events")),
        "{summary:?}"
    );
    // Every FIN copy and RST the tracer saw must reach the file before tcpdump stops;
    // check_counts then holds the file to exactly these. So must the calibration
    // connections' FINs, the last segments sent: tcpdump stops without writing what it
    // has not read yet, and an emulated guest's tcpdump lags far behind (without them the
    // bound fell back to the native 50 µs, and slow kernels' waves failed it).
    let (fins, rsts) = segments_reported(&timelines);
    let read = || parse_pcap(&std::fs::read(&pcap).unwrap_or_default());
    let is_calibration = |p: &Packet| {
        calibration_ports.contains(&p.src.1) || calibration_ports.contains(&p.dst_port)
    };
    let deadline = Instant::now() + *WAIT;
    while {
        let packets = read();
        let (calibration, traced): (Vec<Packet>, Vec<Packet>) =
            packets.into_iter().partition(is_calibration);
        traced.iter().filter(|p| p.fin).count() < fins
            || traced.iter().filter(|p| p.rst).count() < rsts
            // Two FINs per calibration connection.
            || calibration.iter().filter(|p| p.fin).count()
                < 2 * CALIBRATION_ROUNDS * CALIBRATION_CONNECTIONS
    } {
        assert!(
            Instant::now() < deadline,
            "the capture lacks segments: {:#?}",
            read()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(interrupt(capture), 0, "tcpdump");
    let (calibration, packets) = read().into_iter().partition(is_calibration);
    let _ = std::fs::remove_file(&pcap);
    Capture {
        timelines,
        packets,
        calibration,
        offset_ns: monotonic_to_unix_ns(),
    }
}

/// FIN copies (first transmissions and retransmissions) and RSTs the timelines report sent.
fn segments_reported(timelines: &[Value]) -> (usize, usize) {
    let count = |t: &Value, list: &str, keep: &dyn Fn(&Value) -> bool| {
        t[list]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| keep(v))
            .count()
    };
    let fins = timelines
        .iter()
        .map(|t| {
            count(t, "waves", &|w| w["what"] == "fin_sent")
                + count(t, "retransmits", &|r| r["fin"] == true)
        })
        .sum();
    let rsts = timelines
        .iter()
        .map(|t| count(t, "resets", &|r| r["direction"] == "sent"))
        .sum();
    (fins, rsts)
}

fn endpoint(t: &Value, side: &str) -> (IpAddr, u16) {
    let addr = t[format!("{side}addr")].as_str().unwrap().parse().unwrap();
    (addr, t[format!("{side}port")].as_u64().unwrap() as u16)
}

fn opt_ns(v: &Value) -> Option<i128> {
    v.as_u64().map(i128::from)
}

/// What a wave was compared with, for the test's output.
#[derive(Debug)]
struct Match {
    id: u64,
    what: String,
    evidence: String,
    seq: u32,
    /// Wave time minus packet stamp, µs (None for a wave without a time).
    delta_us: Option<f64>,
}

impl Capture {
    /// Segments from `src` for which `pick` is true.
    fn from(&self, src: (IpAddr, u16), pick: impl Fn(&Packet) -> bool) -> Vec<&Packet> {
        self.packets
            .iter()
            .filter(|p| p.src == src && pick(p))
            .collect()
    }

    /// The slowest handshake turnaround of the calibration connections: from a SYN's stamp
    /// to its SYN-ACK's, and from the SYN-ACK's to the ACK answering it. Each is one pass of
    /// the kernel from a segment's stamp through TCP to the stamp of the segment it sends at
    /// once, in softirq, with no process in between: the same kind of path as from a wave's
    /// transition to its packet's stamp, and stalled by the same things (on an emulated
    /// kernel, the host descheduling the whole guest for milliseconds).
    fn turnaround_ns(&self) -> i128 {
        let packets = &self.calibration;
        let (mut slowest, mut measured) = (0, 0);
        for synack in packets.iter().filter(|p| p.syn && p.ack.is_some()) {
            // The last SYN it answers (a retransmitted SYN's first copy went unanswered).
            let syn = packets.iter().rfind(|p| {
                p.syn
                    && p.ack.is_none()
                    && p.ts_ns <= synack.ts_ns
                    && synack.ack == Some(p.seq.wrapping_add(1))
            });
            let ack = packets.iter().find(|p| {
                !p.syn && p.ts_ns >= synack.ts_ns && p.ack == Some(synack.seq.wrapping_add(1))
            });
            if let (Some(syn), Some(ack)) = (syn, ack) {
                slowest = slowest
                    .max(synack.ts_ns - syn.ts_ns)
                    .max(ack.ts_ns - synack.ts_ns);
                measured += 1;
            }
        }
        let made = CALIBRATION_ROUNDS * CALIBRATION_CONNECTIONS;
        assert!(
            measured >= made,
            "{measured} calibration handshakes in the capture, {made} made"
        );
        slowest
    }

    /// How far an observed wave may be from its packet: 50 µs, or on a slower kernel twice
    /// the slowest of the 400 turnarounds the same kernel took in the same capture, measured
    /// on the wire by the same tcpdump (an emulated kernel under QEMU's TCG on a loaded host
    /// was seen 0.1 to 3.6 ms from its packets; its single handshake's turnarounds, 0.35 to
    /// 0.53 ms, missed the stalls). The bound follows the kernel's measured speed and
    /// stalls, not a guess at them.
    fn slack_ns(&self) -> i128 {
        let turnaround = self.turnaround_ns();
        let slack = SLACK_NS.max(TURNAROUNDS * turnaround);
        eprintln!(
            "  handshake turnaround {:.1} µs: slack {:.1} µs",
            turnaround as f64 / 1e3,
            slack as f64 / 1e3
        );
        slack
    }

    /// Compares every wave of every timeline with its packet; returns what was compared.
    fn check_waves(&self) -> Vec<Match> {
        let slack = self.slack_ns();
        let mut matches = Vec::new();
        for t in &self.timelines {
            let (local, remote) = (endpoint(t, "l"), endpoint(t, "r"));
            let waves = t["waves"].as_array().unwrap();
            let queued = waves.iter().find(|w| w["what"] == "fin_queued");
            let sent = waves.iter().find(|w| w["what"] == "fin_sent");
            if let (Some(q), Some(s)) = (queued, sent) {
                assert_eq!(q["seq"], s["seq"], "one FIN queued and sent: {t}");
            }
            for w in waves.iter().filter(|w| w["what"] != "fin_queued") {
                let what = w["what"].as_str().unwrap();
                let evidence = w["evidence"].as_str().unwrap();
                let Some(seq) = w["seq"].as_u64().map(|s| s as u32) else {
                    // Only a wave out of the tracer's sight may lack its number.
                    assert_eq!(
                        evidence, "not_observed",
                        "{what} has no sequence number: {t}"
                    );
                    continue;
                };
                // Each wave's segment, in all its copies: a FIN by the sequence number it
                // occupies, an ACK by the number it acknowledges.
                let copies = match what {
                    "fin_sent" => self.from(local, |p| p.fin_seq() == Some(seq)),
                    "fin_received" => self.from(remote, |p| p.fin_seq() == Some(seq)),
                    "ack_sent" => self.from(local, |p| p.ack == Some(seq)),
                    "ack_received" => self.from(remote, |p| p.ack == Some(seq)),
                    other => panic!("unknown wave {other}"),
                };
                let id = t["id"].as_u64().unwrap();
                // Every segment of the close crosses this loopback: none may be missing.
                assert!(
                    !copies.is_empty(),
                    "#{id} {what} seq {seq}: no such segment on the wire: {t}"
                );
                let ts = opt_ns(&w["ts_ns"]).map(|ts| ts + self.offset_ns);
                let earliest = opt_ns(&w["earliest_ns"]).map(|ts| ts + self.offset_ns);
                let latest = opt_ns(&w["latest_ns"]).map(|ts| ts + self.offset_ns);
                // With several copies (a retransmission), the one nearest the wave's time.
                let nearest = |at: i128| {
                    copies
                        .iter()
                        .min_by_key(|p| (p.ts_ns - at).abs())
                        .copied()
                        .unwrap()
                };
                let delta_us = match (evidence, ts) {
                    ("observed", Some(ts)) => {
                        let packet = nearest(ts);
                        let delta = ts - packet.ts_ns;
                        // A FIN is observed where its receiver takes it in, which can be
                        // later than the wire by whatever is queued ahead of it (a megabyte
                        // of data; a slow kernel's softirq); the receiver's ACK of it, on
                        // the wire, comes after. Between the two is the truth.
                        let acked_by = match what {
                            "fin_sent" => Some(remote),
                            "fin_received" => Some(local),
                            _ => None,
                        }
                        .and_then(|receiver| {
                            let ack = seq.wrapping_add(1);
                            self.from(receiver, |p| p.ack == Some(ack) && p.ts_ns >= packet.ts_ns)
                                .first()
                                .map(|p| p.ts_ns)
                        });
                        let within = match acked_by {
                            Some(acked) => {
                                copies.iter().any(|p| p.ts_ns - slack <= ts) && ts <= acked + slack
                            }
                            None => delta.abs() <= slack,
                        };
                        assert!(
                            within,
                            "#{id} {what} observed {:.1} µs from its packet (its ACK: {}): {t}",
                            delta as f64 / 1e3,
                            acked_by.map_or("none".into(), |a| format!(
                                "{:+.1} µs",
                                (a - packet.ts_ns) as f64 / 1e3
                            ))
                        );
                        Some(delta as f64 / 1e3)
                    }
                    ("observed", None) => panic!("#{id} {what}: observed without a time"),
                    _ => {
                        assert!(
                            evidence == "not_observed" || earliest.is_some(),
                            "#{id} {what}: inferred without a stated bound: {t}"
                        );
                        let lo = earliest.map_or(i128::MIN, |e| e - slack);
                        let hi = latest.map_or(i128::MAX, |l| l + slack);
                        let within = copies.iter().any(|p| (lo..=hi).contains(&p.ts_ns));
                        assert!(
                            within || (earliest.is_none() && latest.is_none()),
                            "#{id} {what} ({evidence}): no copy within its bounds: {t}\n{copies:?}"
                        );
                        ts.map(|ts| (ts - nearest(ts).ts_ns) as f64 / 1e3)
                    }
                };
                matches.push(Match {
                    id,
                    what: what.into(),
                    evidence: evidence.into(),
                    seq,
                    delta_us,
                });
            }
        }
        for m in &matches {
            eprintln!(
                "  #{} {:<13} {:<12} seq {:<10} wave - packet: {}",
                m.id,
                m.what,
                m.evidence,
                m.seq,
                m.delta_us.map_or("-".into(), |d| format!("{d:+.1} µs"))
            );
        }
        matches
    }

    /// FINs and their ACKs: as many distinct ones on the wire as the tracer reports, and
    /// every FIN copy on the wire is the first transmission or a retransmission it saw.
    fn check_counts(&self) {
        let slack = self.slack_ns();
        for t in &self.timelines {
            let local = endpoint(t, "l");
            let fin_copies = self.from(local, |p| p.fin).len();
            let resent = t["retransmits"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["fin"] == true)
                .count();
            let fins_reported = t["waves"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|w| w["what"] == "fin_sent")
                .count();
            assert_eq!(
                fin_copies,
                fins_reported + resent,
                "FIN copies from {local:?} on the wire vs. FINs + FIN retransmissions: {t}"
            );
            // Each FIN this side took in was acknowledged by it, on the wire too.
            for w in t["waves"].as_array().unwrap() {
                if w["what"] == "ack_sent" {
                    let ack = w["seq"].as_u64().unwrap() as u32;
                    assert!(
                        !self.from(local, |p| p.ack == Some(ack)).is_empty(),
                        "ACK {ack} not on the wire: {t}"
                    );
                }
            }
            let rsts = self.from(local, |p| p.rst);
            let sent: Vec<&Value> = t["resets"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["direction"] == "sent")
                .collect();
            assert_eq!(rsts.len(), sent.len(), "RSTs from {local:?}: {t}");
            for (packet, reset) in rsts.iter().zip(sent) {
                let delta = opt_ns(&reset["ts_ns"]).unwrap() + self.offset_ns - packet.ts_ns;
                eprintln!(
                    "  RST from {local:?}: reset - packet {:+.1} µs",
                    delta as f64 / 1e3
                );
                assert!(
                    delta.abs() <= slack,
                    "RST {:.1} µs off: {t}",
                    delta as f64 / 1e3
                );
            }
        }
    }

    fn role(&self, role: &str) -> &Value {
        self.timelines
            .iter()
            .find(|t| t["role"] == role)
            .unwrap_or_else(|| panic!("no {role} timeline: {:#?}", self.timelines))
    }
}

fn wave<'a>(t: &'a Value, what: &str) -> &'a Value {
    t["waves"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["what"] == what)
        .unwrap_or_else(|| panic!("no {what}: {t}"))
}

/// Plays `pattern` and checks every wave against the wire.
fn oracle(test: &str, pattern: &str, extra: &[&str]) -> Option<Capture> {
    let _serial = privileged(test)?;
    let capture = captured(pattern, extra);
    eprintln!("{pattern} {extra:?}:");
    let matches = capture.check_waves();
    assert!(!matches.is_empty() || pattern == "reset");
    capture.check_counts();
    Some(capture)
}

#[test]
fn server_closes_on_the_wire() {
    let Some(c) = oracle("server_closes_on_the_wire", "server-closes", &[]) else {
        return;
    };
    // The client's ACK of the server's FIN is delayed, and observed at the server.
    let ack = wave(c.role("passive"), "ack_sent");
    assert_eq!(ack["evidence"], "observed", "{ack}");
    let fin_in = wave(c.role("passive"), "fin_received");
    assert!(ack["ts_ns"].as_u64() > fin_in["ts_ns"].as_u64());
}

#[test]
fn client_closes_on_the_wire() {
    oracle("client_closes_on_the_wire", "client-closes", &[]);
}

#[test]
fn half_close_on_the_wire() {
    oracle("half_close_on_the_wire", "half-close", &[]);
}

#[test]
fn a_lost_fin_on_the_wire() {
    let Some(c) = oracle("a_lost_fin_on_the_wire", "lost-fin", &[]) else {
        return;
    };
    let active = c.role("active");
    assert!(active["retransmits"][0]["fin"] == true, "{active}");
}

#[test]
fn simultaneous_close_on_the_wire() {
    oracle("simultaneous_close_on_the_wire", "simultaneous", &[]);
}

#[test]
fn a_reset_on_the_wire() {
    oracle("a_reset_on_the_wire", "reset", &[]);
}

#[test]
fn a_fin_queued_behind_a_megabyte_on_the_wire() {
    let Some(c) = oracle(
        "a_fin_queued_behind_a_megabyte_on_the_wire",
        "fin-behind-data",
        &[],
    ) else {
        return;
    };
    let active = c.role("active");
    let close = &active["at_close"];
    assert!(
        close["unsent_bytes"].as_u64().unwrap() > 500_000,
        "most of the megabyte unsent at close: {active}"
    );
    let queued = wave(active, "fin_queued");
    let sent = wave(active, "fin_sent");
    // Queued at close, on the wire only once the slow reader drained the data (its
    // --delay-ms of 200 ms).
    let waited = sent["ts_ns"].as_u64().unwrap() - queued["ts_ns"].as_u64().unwrap();
    assert!(
        waited > 100_000_000,
        "FIN left {waited} ns after close: {active}"
    );
}

/// Whether the client closing at once beats its delayed ACK depends on scheduling: each
/// run must agree with the wire either way, and the merged FIN+ACK must show within a few.
#[test]
fn a_passive_side_that_closes_at_once_merges_its_ack_into_its_fin() {
    let test = "a_passive_side_that_closes_at_once_merges_its_ack_into_its_fin";
    for _ in 0..5 {
        let Some(c) = oracle(test, "server-closes", &["--delay-ms", "0"]) else {
            return;
        };
        let passive = c.role("passive");
        let ack = wave(passive, "ack_sent");
        let reported_merged = ack["basis"].as_str().unwrap().starts_with("merged");
        // On the wire: is the first segment acknowledging the server's FIN the client's FIN?
        let local = endpoint(passive, "l");
        let ack_seq = ack["seq"].as_u64().unwrap() as u32;
        let first = c.from(local, |p| p.ack == Some(ack_seq))[0];
        assert_eq!(reported_merged, first.fin, "{passive}\n{first:?}");
        if reported_merged {
            return;
        }
    }
    panic!("the ACK never rode on the FIN in five runs");
}
