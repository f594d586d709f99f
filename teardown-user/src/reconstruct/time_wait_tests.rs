//! The TIME_WAIT mini-socket as its fentry/fexit hooks report it, joined to the socket's
//! timeline (event sequences in the order the kernel emits them on loopback).

use teardown_common::{kind, sock_flags as f, state::*, tcp_flag, time_wait_end, Event};

use super::tests::{by_port, flags, normal_close, run, wave, CLIENT, MS, SERVER};
use super::*;
use crate::{filter::Filter, testing::ev};

/// The mini-socket's own address: not the socket's.
const MINI: u64 = 0xffff_8881_0777_0000;

/// `tcp_time_wait()` is entered, before the socket's transition to CLOSE.
fn entered(ts_ns: u64, sk: u64, port: u16, peer: u16, from: u8, substate: u8) -> Event {
    let mut e = ev(ts_ns, sk, port, peer, from, substate);
    e.kind = kind::TIME_WAIT_ENTER;
    e
}

fn mini(ts_ns: u64, port: u16, peer: u16, what: u8, substate: u8) -> Event {
    let mut e = ev(ts_ns, MINI, port, peer, substate, substate);
    e.kind = what;
    e
}

fn segment(ts_ns: u64, port: u16, peer: u16, substate: u8, tcp_flags: u8) -> Event {
    let mut e = mini(ts_ns, port, peer, kind::TIME_WAIT_SEGMENT, substate);
    e.tcp_flags = tcp_flags;
    e
}

/// The server closes first, as in `normal_close`, with its mini-socket observed: handed
/// over in FIN_WAIT2, then the client's FIN reaches it 200 ms later.
fn server_closes_observed() -> Vec<Event> {
    let mut events = normal_close();
    events.insert(
        3,
        entered(1000 * MS + 61_000, SERVER, 80, 5000, FIN_WAIT2, FIN_WAIT2),
    );
    events.insert(
        6,
        segment(
            1200 * MS + 20_000,
            80,
            5000,
            FIN_WAIT2,
            tcp_flag::FIN | 0x10,
        ),
    );
    events
}

/// The client closes first: its socket takes in the server's FIN in FIN_WAIT2 and hands
/// over to a mini-socket in TIME_WAIT; a new connect() reuses the tuple 1 s later.
fn client_closes_then_reused() -> Vec<Event> {
    vec![
        ev(1000 * MS, CLIENT, 5000, 80, ESTABLISHED, FIN_WAIT1),
        ev(
            1000 * MS + 30_000,
            SERVER,
            80,
            5000,
            ESTABLISHED,
            CLOSE_WAIT,
        ),
        ev(1000 * MS + 60_000, CLIENT, 5000, 80, FIN_WAIT1, FIN_WAIT2),
        ev(1001 * MS, SERVER, 80, 5000, CLOSE_WAIT, LAST_ACK),
        entered(1001 * MS + 20_000, CLIENT, 5000, 80, FIN_WAIT2, TIME_WAIT),
        flags(
            ev(1001 * MS + 22_000, CLIENT, 5000, 80, FIN_WAIT2, CLOSE),
            f::FIN_RECEIVED,
        ),
        ev(1001 * MS + 40_000, SERVER, 80, 5000, LAST_ACK, CLOSE),
        mini(2001 * MS, 5000, 80, kind::TIME_WAIT_REUSE, TIME_WAIT),
        {
            let mut end = mini(2001 * MS + 5_000, 5000, 80, kind::TIME_WAIT_END, TIME_WAIT);
            end.reason = time_wait_end::KILLED;
            end
        },
    ]
}

/// A reconstructor given `events` (applied as time advances), following TIME_WAIT to its
/// end or not.
fn fed(events: &[Event], follow_time_wait: bool) -> Reconstructor {
    let mut r = Reconstructor::new(Filter::default());
    if follow_time_wait {
        r.follow_time_wait();
    }
    for e in events {
        r.push(e);
    }
    r
}

#[test]
fn the_peers_fin_reaching_the_mini_socket_is_observed() {
    let timelines = run(&server_closes_observed());
    let server = by_port(&timelines, 80);
    let m = server.mini.expect("the hand-over was seen");
    assert_eq!((m.entered_ns, m.substate), (1000 * MS + 61_000, FIN_WAIT2));
    assert_eq!(m.fin_received_ns, Some(1200 * MS + 20_000));
    let fin_in = wave(server, WaveKind::FinReceived);
    assert_eq!(
        (fin_in.ts_ns, fin_in.evidence),
        (Some(1200 * MS + 20_000), Evidence::Observed),
        "observed at the mini-socket, not inferred from the peer's LAST_ACK"
    );
    assert_eq!(server.time_wait(), Some(FIN_WAIT2));
}

#[test]
fn a_hand_over_sent_by_both_twin_programs_counts_once() {
    let mut events = server_closes_observed();
    // Both of a preemptible kernel's hand-over programs ran and neither could mark it.
    let repeat = entered(1000 * MS + 61_400, SERVER, 80, 5000, FIN_WAIT2, TIME_WAIT);
    events.insert(4, repeat);
    let timelines = run(&events);
    let server = by_port(&timelines, 80);
    let m = server.mini.expect("the hand-over was seen");
    assert_eq!(
        (m.entered_ns, m.substate),
        (1000 * MS + 61_000, FIN_WAIT2),
        "the first one's"
    );
    assert_eq!(m.fin_received_ns, Some(1200 * MS + 20_000));
    assert!(!server.gap);
}

#[test]
fn without_the_hooks_the_fin_stays_inferred_from_the_peer() {
    let timelines = run(&normal_close());
    let server = by_port(&timelines, 80);
    assert_eq!(server.mini, None);
    let fin_in = wave(server, WaveKind::FinReceived);
    assert_eq!(fin_in.evidence, Evidence::Inferred);
    assert_eq!(fin_in.ts_ns, Some(1200 * MS));
}

#[test]
fn an_orphan_leaves_when_the_fin_reaches_its_mini_socket_not_when_the_peer_closes() {
    let events = server_closes_observed();
    // Everything up to the client's FIN reaching the mini-socket; not its LAST_ACK->CLOSE.
    let mut r = fed(&events[..7], false);
    let mut out = Vec::new();
    r.advance(1200 * MS + 40_000 + REORDER_WINDOW_NS, &mut |t| out.push(t));
    assert_eq!(out.iter().map(|t| t.lport).collect::<Vec<_>>(), vec![80]);
}

#[test]
fn a_segment_racing_the_sockets_close_still_joins_its_timeline() {
    let mut events = server_closes_observed();
    // The FIN reached the mini-socket on another CPU before the CLOSE transition's event.
    let fin = events.remove(6);
    let mut early = fin;
    early.ts_ns = 1000 * MS + 61_500;
    events.insert(4, early);
    let timelines = run(&events);
    let m = by_port(&timelines, 80).mini.unwrap();
    assert_eq!(m.fin_received_ns, Some(1000 * MS + 61_500));
}

#[test]
fn time_wait_is_followed_to_its_end_only_when_asked() {
    let events = client_closes_then_reused();
    let mut r = fed(&events, false);
    let mut out = Vec::new();
    r.advance(1002 * MS + REORDER_WINDOW_NS, &mut |t| out.push(t));
    let client = by_port(&out, 5000);
    assert_eq!(
        client.mini.map(|m| (m.substate, m.end)),
        Some((TIME_WAIT, None)),
        "out at its CLOSE, as without the hooks"
    );

    let mut r = fed(&events, true);
    let mut out = Vec::new();
    r.advance(1002 * MS + REORDER_WINDOW_NS, &mut |t| out.push(t));
    assert_eq!(
        out.iter().map(|t| t.lport).collect::<Vec<_>>(),
        vec![80],
        "the client waits in its mini-socket"
    );
    r.advance(2002 * MS + REORDER_WINDOW_NS, &mut |t| out.push(t));
    let m = by_port(&out, 5000).mini.unwrap();
    assert_eq!(m.reused_ns, Some(2001 * MS));
    let end = m.end.expect("killed by the reuse");
    assert_eq!((end.ts_ns, end.how()), (2001 * MS + 5_000, "killed"));
}

#[test]
fn a_followed_mini_socket_whose_end_is_lost_is_let_go_in_time() {
    let mut events = client_closes_then_reused();
    events.truncate(7);
    let mut r = fed(&events, true);
    let mut out = Vec::new();
    r.advance(1002 * MS + FIN_TIMEOUT_NS, &mut |t| out.push(t));
    assert_eq!(out.len(), 1, "still in TIME_WAIT after 60 s");
    r.advance(1002 * MS + 3 * FIN_TIMEOUT_NS, &mut |t| out.push(t));
    assert_eq!(out.len(), 2);
    assert_eq!(by_port(&out, 5000).mini.and_then(|m| m.end), None);
}

#[test]
fn a_mini_socket_from_before_tracing_makes_no_timeline() {
    let mut end = mini(5 * MS, 7000, 80, kind::TIME_WAIT_END, TIME_WAIT);
    end.reason = time_wait_end::EXPIRED;
    assert!(run(&[segment(MS, 7000, 80, TIME_WAIT, tcp_flag::FIN), end]).is_empty());
}

/// The kernel removes a network namespace (`tcp_sk_exit_batch` returned for it).
fn namespace_gone(ts_ns: u64, netns: u32) -> Event {
    // SAFETY: Event is plain data; all zeroes is a valid value.
    let mut e: Event = unsafe { std::mem::zeroed() };
    (e.ts_ns, e.kind, e.netns) = (ts_ns, kind::NAMESPACE_GONE, netns);
    e
}

#[test]
fn a_namespace_gone_ends_its_held_mini_sockets_by_inference() {
    let mut events = client_closes_then_reused();
    events.truncate(7);
    let netns = events[0].netns;
    events.push(namespace_gone(3000 * MS, netns + 1));
    events.push(namespace_gone(3001 * MS, netns));
    let mut r = fed(&events, true);
    let mut out = Vec::new();
    r.advance(3000 * MS + REORDER_WINDOW_NS, &mut |t| out.push(t));
    assert_eq!(
        out.len(),
        1,
        "another namespace's removal ends nothing here"
    );
    r.advance(3001 * MS + REORDER_WINDOW_NS, &mut |t| out.push(t));
    let end = by_port(&out, 5000).mini.and_then(|m| m.end).expect("ended");
    assert_eq!(end.ts_ns, 3001 * MS);
    assert_eq!(
        (end.how(), end.evidence()),
        ("killed", Evidence::Inferred),
        "the kill itself was not seen"
    );
    assert_eq!(end.describe(), "killed with its namespace");
}

#[test]
fn a_seen_kill_is_not_replaced_by_the_namespaces_removal() {
    let mut events = client_closes_then_reused();
    let netns = events[0].netns;
    events.push(namespace_gone(2001 * MS + 9_000, netns));
    let mut timelines = Vec::new();
    fed(&events, true).finish(u64::MAX, &mut |t| timelines.push(t));
    let end = by_port(&timelines, 5000).mini.and_then(|m| m.end).unwrap();
    assert_eq!(
        (end.ts_ns, end.evidence()),
        (2001 * MS + 5_000, Evidence::Observed)
    );
}
