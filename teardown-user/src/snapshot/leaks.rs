//! The leaks view: CLOSE_WAIT sockets per owning process and per local port (a CLOSE_WAIT
//! that stays is a missing `close()`), TIME_WAIT mini-sockets per local port and per remote
//! endpoint, and the sockets still pushing their FIN out. Pure: a [`Snapshot`] in, text or
//! JSON out.

use std::{
    cmp::Ordering,
    collections::{BTreeSet, HashMap},
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use teardown_common::state;

use super::{Namespace, Snapshot, Socket};
use crate::output::json;

/// Upper ends of the age histogram's buckets, in ms; the last bucket is open.
pub const AGE_BUCKETS_MS: [u64; 5] = [1_000, 10_000, 60_000, 600_000, 3_600_000];
pub const AGE_BUCKET_NAMES: [&str; 6] = ["<1s", "<10s", "<1m", "<10m", "<1h", ">=1h"];
/// Groups listed per table in JSON (text shows fewer); the rest are counted.
pub const MAX_GROUPS: usize = 100;
const TEXT_ROWS: usize = 10;

/// What the CLOSE_WAIT age means, said wherever it is shown.
pub const AGE_BOUND: &str =
    "time since the peer's FIN: at least tcp_info last_ack_recv (the FIN carries an ACK; \
     only a later ACK from the peer makes it younger), at most last_data_recv (the FIN follows \
     the last data), each to one jiffy";

pub fn bucket(age_ms: u64) -> usize {
    AGE_BUCKETS_MS
        .iter()
        .position(|&upper| age_ms < upper)
        .unwrap_or(AGE_BUCKETS_MS.len())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// Owning process; 0 when no owner could be seen.
    Process(u32),
    LocalPort {
        netns: u64,
        port: u16,
    },
    Remote {
        netns: u64,
        addr: IpAddr,
        port: u16,
    },
}

/// CLOSE_WAIT sockets sharing a key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloseWaitGroup {
    pub count: u64,
    /// The oldest socket's age bounds, ms (see [`AGE_BOUND`]).
    pub oldest_at_least_ms: u64,
    pub oldest_at_most_ms: u64,
    /// By `AGE_BUCKET_NAMES`, on the lower bound.
    pub histogram: [u64; 6],
}

/// TIME_WAIT mini-sockets sharing a key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimeWaitGroup {
    pub count: u64,
    /// In substate FIN_WAIT2: an orphan's socket still waiting for the peer's FIN.
    pub fin_wait2: u64,
    pub min_timer_ms: u64,
    pub max_timer_ms: u64,
}

/// How much of a namespace's ephemeral port range is taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortUse {
    pub netns: u64,
    pub range: (u16, u16),
    /// Distinct local ports in the range held by any socket but a listener.
    pub in_use: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Leaks {
    pub close_wait: u64,
    pub by_process: Vec<(Key, CloseWaitGroup)>,
    pub by_port: Vec<(Key, CloseWaitGroup)>,
    pub time_wait: u64,
    pub fin_wait2: u64,
    pub tw_by_port: Vec<(Key, TimeWaitGroup)>,
    pub tw_by_remote: Vec<(Key, TimeWaitGroup)>,
    pub port_use: Vec<PortUse>,
    /// FIN_WAIT1, LAST_ACK and CLOSING sockets, most bytes unacknowledged first.
    pub closing: Vec<usize>,
}

pub fn ip(family: u16, bytes: &[u8; 16]) -> IpAddr {
    if family == libc::AF_INET as u16 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    }
}

impl Leaks {
    pub fn of(snapshot: &Snapshot) -> Leaks {
        let mut leaks = Leaks::default();
        let mut by_process: HashMap<Key, CloseWaitGroup> = HashMap::new();
        let mut by_port: HashMap<Key, CloseWaitGroup> = HashMap::new();
        let mut tw_by_port: HashMap<Key, TimeWaitGroup> = HashMap::new();
        let mut tw_by_remote: HashMap<Key, TimeWaitGroup> = HashMap::new();
        let mut ports: BTreeSet<(u64, u16)> = BTreeSet::new();
        for (i, socket) in snapshot.sockets.iter().enumerate() {
            let d = &socket.diag;
            let local = Key::LocalPort {
                netns: socket.netns,
                port: d.sport,
            };
            if d.state != state::LISTEN {
                ports.insert((socket.netns, d.sport));
            }
            if let Some((at_least, at_most)) = socket.since_fin_ms() {
                leaks.close_wait += 1;
                let add = |group: &mut CloseWaitGroup| {
                    group.count += 1;
                    if at_least as u64 >= group.oldest_at_least_ms {
                        group.oldest_at_least_ms = at_least.into();
                        group.oldest_at_most_ms = at_most.into();
                    }
                    group.histogram[bucket(at_least.into())] += 1;
                };
                if socket.owners.is_empty() {
                    add(by_process.entry(Key::Process(0)).or_default());
                }
                for &pid in socket.owners.iter() {
                    add(by_process.entry(Key::Process(pid)).or_default());
                }
                add(by_port.entry(local).or_default());
            } else if socket.is_mini() {
                let fin_wait2 = d.state == state::FIN_WAIT2;
                leaks.time_wait += 1;
                leaks.fin_wait2 += u64::from(fin_wait2);
                let remote = Key::Remote {
                    netns: socket.netns,
                    addr: ip(d.family, &d.daddr),
                    port: d.dport,
                };
                for group in [
                    tw_by_port.entry(local).or_default(),
                    tw_by_remote.entry(remote).or_default(),
                ] {
                    let timer = u64::from(d.expires_ms);
                    group.min_timer_ms = if group.count == 0 {
                        timer
                    } else {
                        group.min_timer_ms.min(timer)
                    };
                    group.max_timer_ms = group.max_timer_ms.max(timer);
                    group.count += 1;
                    group.fin_wait2 += u64::from(fin_wait2);
                }
            } else if matches!(d.state, state::FIN_WAIT1 | state::LAST_ACK | state::CLOSING) {
                leaks.closing.push(i);
            }
        }
        leaks.by_process = worst_close_wait(by_process);
        leaks.by_port = worst_close_wait(by_port);
        leaks.tw_by_port = most_time_wait(tw_by_port);
        leaks.tw_by_remote = most_time_wait(tw_by_remote);
        leaks
            .closing
            .sort_by_key(|&i| std::cmp::Reverse(snapshot.sockets[i].diag.wqueue));
        leaks.port_use = port_use(&snapshot.namespaces, &ports);
        leaks
    }
}

/// Worst first: most sockets, then the oldest.
fn worst_close_wait(groups: HashMap<Key, CloseWaitGroup>) -> Vec<(Key, CloseWaitGroup)> {
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by(|(ka, a), (kb, b)| {
        (b.count, b.oldest_at_least_ms, ka).cmp(&(a.count, a.oldest_at_least_ms, kb))
    });
    groups
}

fn most_time_wait(groups: HashMap<Key, TimeWaitGroup>) -> Vec<(Key, TimeWaitGroup)> {
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by(more_time_wait);
    groups
}

/// Most sockets first; the text view ranks port and remote groups together by it.
fn more_time_wait((ka, a): &(Key, TimeWaitGroup), (kb, b): &(Key, TimeWaitGroup)) -> Ordering {
    (b.count, ka).cmp(&(a.count, kb))
}

fn port_use(namespaces: &[Namespace], ports: &BTreeSet<(u64, u16)>) -> Vec<PortUse> {
    namespaces
        .iter()
        .filter_map(|ns| {
            let (low, high) = ns.settings.ephemeral?;
            let in_use = ports.range((ns.inode, low)..=(ns.inode, high)).count() as u64;
            Some(PortUse {
                netns: ns.inode,
                range: (low, high),
                in_use,
            })
        })
        .collect()
}

fn endpoint(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// `n` and its noun, in the singular for one.
pub fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn secs(ms: u64) -> String {
    format!("{:.1}", ms as f64 / 1000.0)
}

fn histogram_text(h: &[u64; 6]) -> String {
    h.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
}

/// `shown` is the rows written, not the rows asked for: a table may write fewer.
fn more(out: &mut String, shown: usize, total: usize) {
    if total > shown {
        let _ = writeln!(out, "  ... {} more", total - shown);
    }
}

/// One CLOSE_WAIT group: two naming columns, the count, the oldest age, the histogram.
fn close_wait_row(out: &mut String, first: &str, second: &str, g: &CloseWaitGroup) {
    let oldest = format!(
        "{}-{}",
        secs(g.oldest_at_least_ms),
        secs(g.oldest_at_most_ms)
    );
    let _ = writeln!(
        out,
        "  {first:<8} {second:<16} {:>7} {oldest:>12}  {}",
        g.count,
        histogram_text(&g.histogram)
    );
}

/// The leaks view as text, worst first.
pub fn text(snapshot: &Snapshot, leaks: &Leaks) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "CLOSE_WAIT: {} in {} seen (age: {AGE_BOUND})",
        counted(leaks.close_wait, "socket", "sockets"),
        counted(
            snapshot.namespaces.len() as u64,
            "network namespace",
            "network namespaces"
        )
    );
    let _ = writeln!(
        out,
        "  {:<8} {:<16} {:>7} {:>12}  AGES {}",
        "PID",
        "COMM",
        "COUNT",
        "OLDEST_S",
        AGE_BUCKET_NAMES.join(" ")
    );
    let mut shown = 0;
    for (key, g) in leaks.by_process.iter().take(TEXT_ROWS) {
        let Key::Process(pid) = *key else { continue };
        let (pid_text, comm) = if pid == 0 {
            ("-".to_string(), "(owner not seen)")
        } else {
            (pid.to_string(), snapshot.comm(pid))
        };
        close_wait_row(&mut out, &pid_text, comm, g);
        shown += 1;
    }
    more(&mut out, shown, leaks.by_process.len());
    let _ = writeln!(
        out,
        "  {:<8} {:<16} {:>7} {:>12}  AGES",
        "LPORT", "NETNS", "COUNT", "OLDEST_S"
    );
    let mut shown = 0;
    for (key, g) in leaks.by_port.iter().take(TEXT_ROWS) {
        let Key::LocalPort { netns, port } = *key else {
            continue;
        };
        close_wait_row(&mut out, &port.to_string(), &netns.to_string(), g);
        shown += 1;
    }
    more(&mut out, shown, leaks.by_port.len());

    let _ = writeln!(
        out,
        "TIME_WAIT: {} ({} in substate FIN_WAIT2, waiting for the peer's FIN)",
        counted(leaks.time_wait, "mini-socket", "mini-sockets"),
        leaks.fin_wait2
    );
    for ns in &snapshot.namespaces {
        let s = &ns.settings;
        let used = leaks.port_use.iter().find(|u| u.netns == ns.inode);
        let range = used.map_or("ephemeral ports unknown".to_string(), |u| {
            format!(
                "ephemeral ports {}-{}: {} of {} in use",
                u.range.0,
                u.range.1,
                u.in_use,
                u32::from(u.range.1) - u32::from(u.range.0) + 1
            )
        });
        let setting = |v: Option<u32>| v.map_or("?".to_string(), |v| v.to_string());
        // Under the TIME_WAIT heading, so it says the count is of every socket.
        let _ = writeln!(
            out,
            "  netns {}: {} in any state, {range}, tcp_tw_reuse={} tcp_fin_timeout={}",
            ns.inode,
            counted(ns.sockets, "socket", "sockets"),
            setting(s.tw_reuse),
            setting(s.fin_timeout_s)
        );
    }
    let _ = writeln!(
        out,
        "  {:<22} {:<16} {:>7} {:>9} {:>14}",
        "LOCAL_PORT/REMOTE", "NETNS", "COUNT", "FIN_WAIT2", "TIMER_LEFT_S"
    );
    // Ports and remotes in one table, worst first: a remote faced by many ports, one socket
    // each, outranks those ports. Both lists are sorted, so the rows shown are among the
    // first of each.
    let rows = TEXT_ROWS * 2;
    let mut worst: Vec<_> = leaks
        .tw_by_port
        .iter()
        .take(rows)
        .chain(leaks.tw_by_remote.iter().take(rows))
        .collect();
    worst.sort_by(|a, b| more_time_wait(a, b));
    let mut shown = 0;
    for (key, g) in worst.into_iter().take(rows) {
        let (name, netns) = match *key {
            Key::LocalPort { netns, port } => (format!("port {port}"), netns),
            Key::Remote { netns, addr, port } => (format!("to {}", endpoint(addr, port)), netns),
            Key::Process(_) => continue,
        };
        let timer = format!("{}-{}", secs(g.min_timer_ms), secs(g.max_timer_ms));
        let _ = writeln!(
            out,
            "  {name:<22} {netns:<16} {:>7} {:>9} {timer:>14}",
            g.count, g.fin_wait2
        );
        shown += 1;
    }
    more(
        &mut out,
        shown,
        leaks.tw_by_port.len() + leaks.tw_by_remote.len(),
    );

    let _ = writeln!(
        out,
        "FIN_WAIT1/LAST_ACK/CLOSING: {} still sending their FIN",
        counted(leaks.closing.len() as u64, "socket", "sockets")
    );
    let mut shown = 0;
    for &i in leaks.closing.iter().take(TEXT_ROWS) {
        let s = &snapshot.sockets[i];
        let d = &s.diag;
        let info = d.info.unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<11} {:<22} -> {:<22} unacked {} ({}, {} retransmitted), \
             timeouts {}, timer {} ms",
            state::name(d.state),
            endpoint(ip(d.family, &d.saddr), d.sport),
            endpoint(ip(d.family, &d.daddr), d.dport),
            counted(d.wqueue.into(), "byte", "bytes"),
            counted(info.unacked.into(), "segment", "segments"),
            info.retrans,
            d.retrans,
            d.expires_ms
        );
        shown += 1;
    }
    more(&mut out, shown, leaks.closing.len());
    if let Some(line) = snapshot.unseen.line() {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// A table as `[{key..., group...}, ...],"more":N`: the largest groups, the rest counted.
fn groups_json<G>(
    out: &mut String,
    snapshot: &Snapshot,
    groups: &[(Key, G)],
    fields: impl Fn(&mut String, &G),
) {
    out.push('[');
    for (i, (key, g)) in groups.iter().take(MAX_GROUPS).enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = match *key {
            Key::Process(0) => write!(out, "{{\"pid\":null,\"comm\":null"),
            Key::Process(pid) => write!(
                out,
                "{{\"pid\":{pid},\"comm\":{}",
                string(snapshot.comm(pid))
            ),
            Key::LocalPort { netns, port } => write!(out, "{{\"netns\":{netns},\"lport\":{port}"),
            Key::Remote { netns, addr, port } => write!(
                out,
                "{{\"netns\":{netns},\"raddr\":\"{addr}\",\"rport\":{port}"
            ),
        };
        fields(out, g);
        out.push('}');
    }
    let _ = write!(
        out,
        "],\"more\":{}",
        groups.len().saturating_sub(MAX_GROUPS)
    );
}

fn close_wait_json(out: &mut String, snapshot: &Snapshot, groups: &[(Key, CloseWaitGroup)]) {
    groups_json(out, snapshot, groups, |out, g| {
        let _ = write!(
            out,
            ",\"count\":{},\"oldest_ms\":{{\"at_least\":{},\"at_most\":{}}},\"histogram\":{:?}",
            g.count, g.oldest_at_least_ms, g.oldest_at_most_ms, g.histogram
        );
    });
}

fn time_wait_json(out: &mut String, snapshot: &Snapshot, groups: &[(Key, TimeWaitGroup)]) {
    groups_json(out, snapshot, groups, |out, g| {
        let _ = write!(
            out,
            ",\"count\":{},\"fin_wait2\":{},\"timer_ms\":{{\"min\":{},\"max\":{}}}",
            g.count, g.fin_wait2, g.min_timer_ms, g.max_timer_ms
        );
    });
}

pub fn string(s: &str) -> String {
    let mut out = Vec::new();
    json::string(&mut out, s.as_bytes());
    String::from_utf8_lossy(&out).into_owned()
}

fn option(v: Option<u32>) -> String {
    v.map_or("null".to_string(), |v| v.to_string())
}

/// The leaks view as one JSON object.
pub fn json(snapshot: &Snapshot, leaks: &Leaks) -> String {
    let mut out = String::with_capacity(4096);
    let _ = write!(out, "{{\"taken_ns\":{},\"namespaces\":[", snapshot.taken_ns);
    for (i, ns) in snapshot.namespaces.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let s = &ns.settings;
        let _ = write!(
            out,
            "{{\"netns\":{},\"sockets\":{},\"tcp_tw_reuse\":{},\"tcp_fin_timeout_s\":{},\"ephemeral\":",
            ns.inode,
            ns.sockets,
            option(s.tw_reuse),
            option(s.fin_timeout_s)
        );
        match leaks.port_use.iter().find(|u| u.netns == ns.inode) {
            Some(u) => {
                let _ = write!(
                    out,
                    "{{\"low\":{},\"high\":{},\"in_use\":{}}}}}",
                    u.range.0, u.range.1, u.in_use
                );
            }
            None => out.push_str("null}"),
        }
    }
    let _ = write!(
        out,
        "],\"close_wait\":{{\"count\":{},\"age_bound\":{},\"histogram_buckets\":{:?},\"by_process\":{{\"groups\":",
        leaks.close_wait,
        string(AGE_BOUND),
        AGE_BUCKET_NAMES
    );
    // Each table is `{"groups": [...], "more": N}`: the largest groups, the rest counted.
    close_wait_json(&mut out, snapshot, &leaks.by_process);
    out.push_str("},\"by_port\":{\"groups\":");
    close_wait_json(&mut out, snapshot, &leaks.by_port);
    out.push('}');
    let _ = write!(
        out,
        "}},\"time_wait\":{{\"count\":{},\"fin_wait2\":{},\"by_port\":{{\"groups\":",
        leaks.time_wait, leaks.fin_wait2
    );
    time_wait_json(&mut out, snapshot, &leaks.tw_by_port);
    out.push_str("},\"by_remote\":{\"groups\":");
    time_wait_json(&mut out, snapshot, &leaks.tw_by_remote);
    out.push_str("}},\"closing\":[");
    for (n, &i) in leaks.closing.iter().take(MAX_GROUPS).enumerate() {
        if n > 0 {
            out.push(',');
        }
        socket_json(&mut out, snapshot, &snapshot.sockets[i]);
    }
    let _ = write!(
        out,
        "],\"not_seen\":{}}}",
        snapshot
            .unseen
            .line()
            .map_or("null".to_string(), |l| string(&l))
    );
    out
}

/// One socket, as the `-o` document lists them.
pub fn socket_json(out: &mut String, snapshot: &Snapshot, s: &Socket) {
    let d = &s.diag;
    let family = if d.family == libc::AF_INET as u16 {
        "ipv4"
    } else {
        "ipv6"
    };
    let _ = write!(
        out,
        "{{\"netns\":{},\"state\":\"{}\",\"mini\":{},\"family\":\"{family}\",\"laddr\":\"{}\",\"lport\":{},\
         \"raddr\":\"{}\",\"rport\":{},\"inode\":{},\"owners\":[",
        s.netns,
        state::name(d.state),
        s.is_mini(),
        ip(d.family, &d.saddr),
        d.sport,
        ip(d.family, &d.daddr),
        d.dport,
        d.inode
    );
    for (i, &pid) in s.owners.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"pid\":{pid},\"comm\":{}}}",
            string(snapshot.comm(pid))
        );
    }
    let timer = ["none", "retransmit", "keepalive", "time_wait", "probe"]
        .get(d.timer as usize)
        .copied()
        .unwrap_or("unknown");
    let _ = write!(
        out,
        "],\"timer\":\"{timer}\",\"timer_ms\":{},\"retrans\":{},\"rqueue\":{},\"wqueue\":{},\"tcp_info\":",
        d.expires_ms, d.retrans, d.rqueue, d.wqueue
    );
    match d.info {
        Some(i) => {
            let _ = write!(
                out,
                "{{\"unacked\":{},\"retrans\":{},\"retransmits\":{},\"total_retrans\":{},\
                 \"last_data_recv_ms\":{},\"last_ack_recv_ms\":{},\"last_data_sent_ms\":{}}}",
                i.unacked,
                i.retrans,
                i.retransmits,
                i.total_retrans,
                i.last_data_recv_ms,
                i.last_ack_recv_ms,
                i.last_data_sent_ms
            );
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"since_fin_ms\":");
    match s.since_fin_ms() {
        Some((at_least, at_most)) => {
            let _ = write!(out, "{{\"at_least\":{at_least},\"at_most\":{at_most}}}");
        }
        None => out.push_str("null"),
    }
    out.push('}');
}

/// A snapshot for the `-o` document: the leaks view and every socket.
pub fn document_json(snapshot: &Snapshot, at: &str) -> String {
    let leaks = Leaks::of(snapshot);
    let mut out = format!("{{\"at\":{},\"leaks\":", string(at));
    out.push_str(&json(snapshot, &leaks));
    out.push_str(",\"sockets\":[");
    for (i, s) in snapshot.sockets.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        socket_json(&mut out, snapshot, s);
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{diag::DiagSocket, netns::Settings, TcpInfo, Unseen};

    fn socket(state: u8, sport: u16, dport: u16, owners: &[u32], ages: (u32, u32)) -> Socket {
        let mut saddr = [0; 16];
        saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        Socket {
            netns: 7,
            diag: DiagSocket {
                family: libc::AF_INET as u16,
                state,
                timer: 0,
                retrans: 0,
                sport,
                dport,
                saddr,
                daddr: saddr,
                expires_ms: 0,
                rqueue: 0,
                wqueue: 0,
                uid: 0,
                inode: 1,
                info: Some(TcpInfo {
                    last_ack_recv_ms: ages.0,
                    last_data_recv_ms: ages.1,
                    ..TcpInfo::default()
                }),
            },
            owners: owners.into(),
        }
    }

    fn mini(substate: u8, sport: u16, dport: u16, timer_ms: u32) -> Socket {
        let mut s = socket(substate, sport, dport, &[], (0, 0));
        s.diag.timer = super::super::diag::TIMER_TIME_WAIT;
        s.diag.expires_ms = timer_ms;
        s.diag.info = None;
        s.diag.inode = 0;
        s
    }

    fn snapshot(sockets: Vec<Socket>) -> Snapshot {
        Snapshot {
            taken_ns: 1,
            namespaces: vec![Namespace {
                inode: 7,
                settings: Settings {
                    ephemeral: Some((40000, 40009)),
                    tw_reuse: Some(2),
                    fin_timeout_s: Some(60),
                },
                sockets: sockets.len() as u64,
            }],
            comms: [(10, "leaky".to_string()), (20, "tidy".to_string())].into(),
            sockets,
            unseen: Default::default(),
        }
    }

    /// 61 clients, each on its own port, to 4 servers: 30, 15, 10 and 6 of them.
    fn clients_of_four_servers() -> Snapshot {
        let servers = [(7000, 30), (7001, 15), (7002, 10), (7003, 6)];
        let dports = servers
            .iter()
            .flat_map(|&(port, n)| std::iter::repeat_n(port, n));
        snapshot(
            (41700..)
                .zip(dports)
                .map(|(sport, dport)| mini(state::FIN_WAIT2, sport, dport, 1_000))
                .collect(),
        )
    }

    /// The TIME_WAIT table's rows, as (name, count), and its "... N more".
    fn time_wait_rows(text: &str) -> (Vec<(String, u64)>, u64) {
        let table = text
            .lines()
            .skip_while(|l| !l.contains("LOCAL_PORT/REMOTE"))
            .skip(1)
            .take_while(|l| !l.starts_with("FIN_WAIT1"));
        let (mut rows, mut more) = (Vec::new(), 0);
        for line in table {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words[..] {
                ["...", n, "more"] => more = n.parse().unwrap(),
                [kind, name, _netns, count, ..] => {
                    rows.push((format!("{kind} {name}"), count.parse().unwrap()))
                }
                _ => panic!("{line}"),
            }
        }
        (rows, more)
    }

    #[test]
    fn ages_fall_into_buckets() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(999), 0);
        assert_eq!(bucket(1_000), 1);
        assert_eq!(bucket(59_999), 2);
        assert_eq!(bucket(3_600_000), 5);
    }

    #[test]
    fn close_wait_is_grouped_worst_first_with_ages_and_histograms() {
        let s = snapshot(vec![
            socket(state::CLOSE_WAIT, 8080, 40000, &[10], (500, 600)),
            socket(state::CLOSE_WAIT, 8080, 40001, &[10], (70_000, 71_000)),
            socket(state::CLOSE_WAIT, 9090, 40002, &[20], (2_000, 2_100)),
            socket(state::CLOSE_WAIT, 9090, 40003, &[], (3_000, 3_000)),
            socket(state::ESTABLISHED, 9090, 40004, &[20], (1, 1)),
        ]);
        let leaks = Leaks::of(&s);
        assert_eq!(leaks.close_wait, 4);
        let (key, worst) = &leaks.by_process[0];
        assert_eq!(*key, Key::Process(10));
        assert_eq!(worst.count, 2);
        assert_eq!(
            (worst.oldest_at_least_ms, worst.oldest_at_most_ms),
            (70_000, 71_000)
        );
        assert_eq!(worst.histogram, [1, 0, 0, 1, 0, 0]);
        // The socket without an owner is listed under "owner not seen", older first.
        assert_eq!(leaks.by_process[1].0, Key::Process(0));
        assert_eq!(leaks.by_port.len(), 2);
        assert_eq!(leaks.by_port[0].1.count, 2);
        let text = text(&s, &leaks);
        assert!(text.contains("leaky"), "{text}");
        assert!(text.contains("(owner not seen)"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&json(&s, &leaks)).unwrap();
        assert_eq!(
            json["close_wait"]["by_process"]["groups"][0]["comm"],
            "leaky"
        );
        assert_eq!(
            json["close_wait"]["by_process"]["groups"][0]["oldest_ms"]["at_least"],
            70_000
        );
        assert_eq!(json["close_wait"]["by_port"]["groups"][0]["count"], 2);
    }

    #[test]
    fn time_wait_is_counted_per_port_and_remote_with_timers_and_port_use() {
        let s = snapshot(vec![
            mini(state::TIME_WAIT, 8080, 40000, 50_000),
            mini(state::TIME_WAIT, 8080, 40001, 30_000),
            mini(state::FIN_WAIT2, 40002, 8080, 59_000),
            socket(state::LISTEN, 40005, 0, &[20], (0, 0)),
        ]);
        let leaks = Leaks::of(&s);
        assert_eq!((leaks.time_wait, leaks.fin_wait2), (3, 1));
        let (key, group) = &leaks.tw_by_port[0];
        assert_eq!(
            *key,
            Key::LocalPort {
                netns: 7,
                port: 8080
            }
        );
        assert_eq!(
            (group.count, group.min_timer_ms, group.max_timer_ms),
            (2, 30_000, 50_000)
        );
        assert_eq!(leaks.tw_by_remote.len(), 3);
        // 40002 is in the range; a listener's port is not an ephemeral one taken.
        assert_eq!(leaks.port_use[0].in_use, 1);
        let json: serde_json::Value = serde_json::from_str(&json(&s, &leaks)).unwrap();
        assert_eq!(
            json["time_wait"]["by_port"]["groups"][0]["timer_ms"]["max"],
            50_000
        );
        assert_eq!(json["namespaces"][0]["ephemeral"]["in_use"], 1);
        assert_eq!(json["namespaces"][0]["tcp_tw_reuse"], 2);
        let doc: serde_json::Value = serde_json::from_str(&document_json(&s, "start")).unwrap();
        assert_eq!(doc["sockets"].as_array().unwrap().len(), 4);
        assert_eq!(doc["sockets"][2]["state"], "FIN_WAIT2");
        assert_eq!(doc["sockets"][2]["mini"], true);
    }

    #[test]
    fn the_more_line_counts_the_rows_left_out() {
        let s = clients_of_four_servers();
        let leaks = Leaks::of(&s);
        let (rows, more) = time_wait_rows(&text(&s, &leaks));
        assert_eq!((leaks.tw_by_port.len(), leaks.tw_by_remote.len()), (61, 4));
        assert_eq!(rows.len() as u64 + more, 65, "{rows:?} and {more} more");
    }

    #[test]
    fn time_wait_ports_and_remotes_are_listed_together_worst_first() {
        let s = clients_of_four_servers();
        let (rows, _) = time_wait_rows(&text(&s, &Leaks::of(&s)));
        assert_eq!(rows[0], ("to 127.0.0.1:7000".to_string(), 30), "{rows:?}");
        assert!(rows.windows(2).all(|w| w[0].1 >= w[1].1), "{rows:?}");
    }

    #[test]
    fn the_namespace_line_under_time_wait_says_its_count_is_every_socket() {
        let s = snapshot(vec![
            mini(state::TIME_WAIT, 8080, 40000, 50_000),
            socket(state::ESTABLISHED, 8080, 40001, &[10], (0, 0)),
            socket(state::LISTEN, 8080, 0, &[10], (0, 0)),
        ]);
        let text = text(&s, &Leaks::of(&s));
        assert!(
            text.contains("  netns 7: 3 sockets in any state, "),
            "{text}"
        );
    }

    #[test]
    fn one_of_a_thing_is_counted_in_the_singular() {
        let mut sending = socket(state::FIN_WAIT1, 40000, 7000, &[], (0, 0));
        sending.diag.wqueue = 1;
        sending.diag.info = Some(TcpInfo {
            unacked: 1,
            retrans: 1,
            ..TcpInfo::default()
        });
        let mut s = snapshot(vec![
            socket(state::CLOSE_WAIT, 8080, 40001, &[10], (500, 600)),
            mini(state::TIME_WAIT, 8080, 40002, 50_000),
            sending,
        ]);
        s.unseen = Unseen {
            namespaces: 1,
            processes_netns: 1,
            processes_fds: 1,
            sockets_dropped: 1,
            ..Unseen::default()
        };
        let text = text(&s, &Leaks::of(&s));
        for plural in [
            "sockets",
            "mini-sockets",
            "network namespaces",
            "processes",
            "segments",
            "bytes",
        ] {
            assert!(!text.contains(&format!(" 1 {plural}")), "{text}");
        }
        assert!(text.contains("CLOSE_WAIT: 1 socket in 1 network namespace seen"));
        assert!(text.contains("TIME_WAIT: 1 mini-socket ("), "{text}");
        assert!(text.contains("unacked 1 byte (1 segment, 1 retransmitted)"));
    }
}
