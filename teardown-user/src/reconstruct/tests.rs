//! Reconstruction of every shape of close, from event sequences as the kernel emits them
//! (timestamps, flags and contexts follow what was captured on loopback).

use teardown_common::{kind, owner_source, seq_flags as f_ack, sock_flags as f, state::*, Event};

use super::*;
use crate::{filter::Filter, testing::ev};

pub(super) const MS: u64 = 1_000_000;
pub(super) const SERVER: u64 = 0xffff_8881_0665_ef00;
pub(super) const CLIENT: u64 = 0xffff_8881_0665_8000;

fn owned(mut e: Event, pid: u32, comm: &str) -> Event {
    e.owner_pid = pid;
    e.owner_source = owner_source::ACCEPT;
    e.owner_comm = [0; 16];
    e.owner_comm[..comm.len()].copy_from_slice(comm.as_bytes());
    e
}

/// What accept() sends for a socket it finds closing: the server (pid 100) owns it.
fn accepted(e: Event) -> Event {
    let mut e = owned(e, 100, "server");
    e.kind = kind::OWNER;
    e
}

fn ran_in(mut e: Event, pid: u32) -> Event {
    e.task_pid = pid;
    e
}

pub(super) fn flags(mut e: Event, bits: u8) -> Event {
    e.sock_flags = bits;
    e
}

/// Server (port 80, pid 100) closes first; client (port 5000, pid 200) closes 200 ms later.
/// The server's socket is orphaned, so it is handed to a TIME_WAIT mini-socket at once.
pub(super) fn normal_close() -> Vec<Event> {
    vec![
        flags(
            owned(
                ran_in(ev(1000 * MS, SERVER, 80, 5000, ESTABLISHED, FIN_WAIT1), 100),
                100,
                "server",
            ),
            f::RCV_SHUTDOWN | f::SEND_SHUTDOWN,
        ),
        flags(
            owned(
                ran_in(
                    ev(
                        1000 * MS + 30_000,
                        CLIENT,
                        5000,
                        80,
                        ESTABLISHED,
                        CLOSE_WAIT,
                    ),
                    100,
                ),
                200,
                "client",
            ),
            f::RCV_SHUTDOWN | f::FIN_RECEIVED,
        ),
        flags(
            owned(
                ev(1000 * MS + 60_000, SERVER, 80, 5000, FIN_WAIT1, FIN_WAIT2),
                100,
                "server",
            ),
            11,
        ),
        flags(
            owned(
                ev(1000 * MS + 62_000, SERVER, 80, 5000, FIN_WAIT2, CLOSE),
                100,
                "server",
            ),
            11,
        ),
        flags(
            owned(
                ran_in(ev(1200 * MS, CLIENT, 5000, 80, CLOSE_WAIT, LAST_ACK), 200),
                200,
                "client",
            ),
            7,
        ),
        flags(
            owned(
                ran_in(
                    ev(1200 * MS + 50_000, CLIENT, 5000, 80, LAST_ACK, CLOSE),
                    200,
                ),
                200,
                "client",
            ),
            15,
        ),
    ]
}

pub(super) fn run(events: &[Event]) -> Vec<Timeline> {
    run_with(Filter::default(), events)
}

fn run_with(filter: Filter, events: &[Event]) -> Vec<Timeline> {
    let mut r = Reconstructor::new(filter.clone());
    let mut out = Vec::new();
    // As the pipeline does: the socket filters where events enter.
    for e in events.iter().filter(|e| filter.matches_event(e)) {
        r.push(e);
    }
    r.finish(end_of(events), &mut |t| out.push(t));
    out
}

/// Where `run` stops tracing: a second after the last event.
fn end_of(events: &[Event]) -> u64 {
    events.iter().map(|e| e.ts_ns).max().unwrap_or(0) + 1_000 * MS
}

pub(super) fn by_port(timelines: &[Timeline], port: u16) -> &Timeline {
    timelines
        .iter()
        .find(|t| t.lport == port)
        .expect("timeline for port")
}

pub(super) fn wave(t: &Timeline, what: WaveKind) -> Wave {
    t.waves()
        .into_iter()
        .find(|w| w.what == what)
        .unwrap_or_else(|| panic!("no {} wave", what.name()))
}

#[test]
fn normal_active_close_and_its_orphan_hand_over() {
    let out = run(&normal_close());
    let server = by_port(&out, 80);
    assert_eq!(server.role(), Some(Role::Active));
    assert!(server.complete());
    assert_eq!(server.owner.unwrap().task.pid, 100);
    assert_eq!(
        server.durations_ns(),
        vec![(FIN_WAIT1, 30_000 + 30_000), (FIN_WAIT2, 2_000)]
    );
    assert_eq!(server.teardown_ns(), Some(62_000));
    // Orphaned: the CLOSE is the hand-over to the mini-socket, not the peer's FIN.
    assert_eq!(server.time_wait(), Some(FIN_WAIT2));
    assert_eq!(wave(server, WaveKind::FinSent).evidence, Evidence::Observed);
    assert_eq!(
        wave(server, WaveKind::AckReceived).ts_ns,
        Some(1000 * MS + 60_000)
    );
    // The client is on this host: its FIN tells when the server's mini-socket got it.
    let fin_in = wave(server, WaveKind::FinReceived);
    assert_eq!(
        (fin_in.ts_ns, fin_in.evidence),
        (Some(1200 * MS), Evidence::Inferred)
    );
    assert!(!server.half_close());
}

#[test]
fn passive_close_keeps_its_owner_though_the_peer_ran_the_transition() {
    let out = run(&normal_close());
    let client = by_port(&out, 5000);
    assert_eq!(client.role(), Some(Role::Passive));
    assert_eq!(client.owner.unwrap().task.pid, 200);
    assert_eq!(
        client.transitions[0].task.pid, 100,
        "ran in the server's process"
    );
    assert_eq!(
        client.durations_ns(),
        vec![(CLOSE_WAIT, 200 * MS - 30_000), (LAST_ACK, 50_000)]
    );
    let waves: Vec<_> = client
        .waves()
        .iter()
        .map(|w| (w.what, w.evidence))
        .collect();
    assert_eq!(
        waves,
        vec![
            (WaveKind::FinReceived, Evidence::Observed),
            // The server is on this host: its FIN_WAIT1->FIN_WAIT2 is the ACK's arrival.
            (WaveKind::AckSent, Evidence::Observed),
            (WaveKind::FinQueued, Evidence::Observed),
            // The server's mini-socket took it in out of sight, and these events carry no
            // sequence state to tell whether anything held it back.
            (WaveKind::FinSent, Evidence::NotObserved),
            (WaveKind::AckReceived, Evidence::Observed),
        ]
    );
    assert_eq!(
        wave(client, WaveKind::AckSent).ts_ns,
        Some(1000 * MS + 60_000)
    );
    assert_eq!(client.time_wait(), None);
}

#[test]
fn peers_on_one_host_name_each_other() {
    let out = run(&normal_close());
    let (server, client) = (by_port(&out, 80), by_port(&out, 5000));
    assert_eq!(server.peer.unwrap().id, client.id);
    assert_eq!(client.peer.unwrap().id, server.id);
    assert_eq!(client.peer.unwrap().owner.unwrap().task.pid, 100);
    assert_eq!(server.peer.unwrap().role, Some(Role::Passive));
}

#[test]
fn half_close_with_shutdown_waits_in_fin_wait2_for_the_real_fin() {
    let events = vec![
        flags(
            owned(
                ev(0, SERVER, 80, 5000, ESTABLISHED, FIN_WAIT1),
                100,
                "server",
            ),
            f::SEND_SHUTDOWN,
        ),
        flags(
            ev(10_000, SERVER, 80, 5000, FIN_WAIT1, FIN_WAIT2),
            f::SEND_SHUTDOWN,
        ),
        flags(
            ran_in(ev(200 * MS, SERVER, 80, 5000, FIN_WAIT2, CLOSE), 200),
            7,
        ),
    ];
    let t = &run(&events)[0];
    assert!(t.half_close());
    assert_eq!(t.time_wait(), Some(TIME_WAIT));
    assert_eq!(
        t.durations_ns(),
        vec![(FIN_WAIT1, 10_000), (FIN_WAIT2, 200 * MS - 10_000)]
    );
    let fin_in = wave(t, WaveKind::FinReceived);
    assert_eq!(
        (fin_in.ts_ns, fin_in.evidence),
        (Some(200 * MS), Evidence::Observed)
    );
    assert_eq!(wave(t, WaveKind::AckSent).evidence, Evidence::Inferred);
    assert_eq!(
        t.owner.unwrap().task.pid,
        100,
        "owner kept from the first event"
    );
}

#[test]
fn fin_and_ack_in_one_segment() {
    let events = vec![
        ev(0, SERVER, 80, 5000, ESTABLISHED, FIN_WAIT1),
        ev(50_000, SERVER, 80, 5000, FIN_WAIT1, FIN_WAIT2),
        flags(
            ev(50_000, SERVER, 80, 5000, FIN_WAIT2, CLOSE),
            f::FIN_RECEIVED | f::RCV_SHUTDOWN,
        ),
    ];
    let t = &run(&events)[0];
    assert_eq!(t.durations_ns(), vec![(FIN_WAIT1, 50_000), (FIN_WAIT2, 0)]);
    assert_eq!(
        wave(t, WaveKind::AckReceived).ts_ns,
        wave(t, WaveKind::FinReceived).ts_ns
    );
    assert_eq!(t.time_wait(), Some(TIME_WAIT));
}

#[test]
fn orphan_without_a_peer_on_this_host_says_the_fin_was_not_seen() {
    let events = vec![
        ev(0, SERVER, 80, 5000, ESTABLISHED, FIN_WAIT1),
        ev(50_000, SERVER, 80, 5000, FIN_WAIT1, FIN_WAIT2),
        flags(
            ev(52_000, SERVER, 80, 5000, FIN_WAIT2, CLOSE),
            f::ORPHAN | 3,
        ),
    ];
    let t = &run(&events)[0];
    let fin_in = wave(t, WaveKind::FinReceived);
    assert_eq!(
        (fin_in.ts_ns, fin_in.evidence),
        (None, Evidence::NotObserved)
    );
    assert!(fin_in.basis.contains("mini-socket"));
}

#[test]
fn simultaneous_close_goes_through_closing() {
    let events = vec![
        ev(0, SERVER, 80, 5000, ESTABLISHED, FIN_WAIT1),
        ev(1_000, SERVER, 80, 5000, FIN_WAIT1, CLOSING),
        ev(3_000, SERVER, 80, 5000, CLOSING, CLOSE),
    ];
    let t = &run(&events)[0];
    assert_eq!(t.role(), Some(Role::Simultaneous));
    assert_eq!(t.durations_ns(), vec![(FIN_WAIT1, 1_000), (CLOSING, 2_000)]);
    assert_eq!(t.time_wait(), Some(TIME_WAIT));
    assert_eq!(wave(t, WaveKind::AckReceived).ts_ns, Some(3_000));
}

#[test]
fn resets_sent_and_received() {
    let mut rst_out = ev(0, SERVER, 80, 5000, ESTABLISHED, ESTABLISHED);
    rst_out.kind = kind::RESET_SENT;
    rst_out.reason = 12;
    let mut rst_in = ev(5, CLIENT, 5000, 80, ESTABLISHED, ESTABLISHED);
    rst_in.kind = kind::RESET_RECEIVED;
    let events = vec![
        rst_out,
        ev(1, SERVER, 80, 5000, ESTABLISHED, CLOSE),
        rst_in,
        ev(6, CLIENT, 5000, 80, ESTABLISHED, CLOSE),
    ];
    let out = run(&events);
    let (server, client) = (by_port(&out, 80), by_port(&out, 5000));
    assert_eq!(server.role(), Some(Role::Reset));
    assert_eq!(
        server.resets,
        vec![Reset {
            ts_ns: 0,
            sent: true,
            reason: 12
        }]
    );
    assert_eq!(client.role(), Some(Role::Reset));
    assert!(!client.resets[0].sent);
    // The receiver's first event comes after the sender closed: still linked both ways.
    assert_eq!(server.peer.map(|p| p.id), Some(client.id));
    assert_eq!(client.peer.map(|p| p.id), Some(server.id));
    assert!(server.waves().is_empty());
    assert_eq!(
        server.teardown_ns(),
        Some(0),
        "straight from ESTABLISHED to CLOSE"
    );
}

#[test]
fn an_abort_closes_first_and_sends_its_rst_just_after() {
    let mut rst = ev(2_000, SERVER, 80, 5000, CLOSE, CLOSE);
    rst.kind = kind::RESET_SENT;
    rst.reason = 11;
    let events = vec![ev(1_000, SERVER, 80, 5000, ESTABLISHED, CLOSE), rst];
    let out = run(&events);
    assert_eq!(
        out.len(),
        1,
        "the RST belongs to the closed socket: {out:?}"
    );
    assert_eq!(
        out[0].resets,
        vec![Reset {
            ts_ns: 2_000,
            sent: true,
            reason: 11
        }]
    );

    // The aborting task was preempted for 5 ms between the two: the close waits for its RST.
    let mut late = rst;
    late.ts_ns = 1_000 + 5 * MS;
    let mut r = Reconstructor::new(Filter::default());
    let mut out = Vec::new();
    r.push(&ev(1_000, SERVER, 80, 5000, ESTABLISHED, CLOSE));
    r.advance(1_000 + 2 * MS + REORDER_WINDOW_NS, &mut |t| out.push(t));
    assert!(out.is_empty(), "still waiting for its RST");
    r.push(&late);
    r.advance(late.ts_ns + 1 + MS + REORDER_WINDOW_NS, &mut |t| {
        out.push(t)
    });
    assert_eq!(out.len(), 1, "reported once its RST came");
    assert_eq!(out[0].resets.len(), 1);

    // No RST at all (its hook is missing): reported once the grace is over.
    let mut r = Reconstructor::new(Filter::default());
    let mut out = Vec::new();
    r.push(&ev(1_000, SERVER, 80, 5000, ESTABLISHED, CLOSE));
    r.advance(1_000 + 1_001 * MS + REORDER_WINDOW_NS, &mut |t| out.push(t));
    assert_eq!(out.len(), 1, "reported once the grace is over");
    r.push(&late);
    r.finish(end_of(&[late]), &mut |t| out.push(t));
    assert_eq!(
        out.len(),
        1,
        "a stray RST on a closed socket starts nothing"
    );
    assert!(out[0].resets.is_empty());
}

#[test]
fn a_reset_in_close_wait_is_a_reset() {
    let events = vec![
        ev(0, CLIENT, 5000, 80, ESTABLISHED, CLOSE_WAIT),
        ev(9, CLIENT, 5000, 80, CLOSE_WAIT, CLOSE),
    ];
    assert_eq!(run(&events)[0].role(), Some(Role::Reset));
}

#[test]
fn lost_fin_is_retransmitted_and_shows_as_a_long_fin_wait1() {
    let events = vec![
        ev(0, SERVER, 80, 5000, ESTABLISHED, FIN_WAIT1),
        ev(212 * MS, SERVER, 80, 5000, FIN_WAIT1, FIN_WAIT2),
        flags(
            ev(212 * MS + 5, SERVER, 80, 5000, FIN_WAIT2, CLOSE),
            f::ORPHAN,
        ),
    ];
    let t = &run(&events)[0];
    assert_eq!(t.durations_ns()[0], (FIN_WAIT1, 212 * MS));
}

#[test]
fn a_retransmitted_fin_is_observed() {
    let mut again = ev(200 * MS, SERVER, 80, 5000, FIN_WAIT1, FIN_WAIT1);
    again.kind = kind::RETRANSMIT;
    again.tcp_flags = teardown_common::tcp_flag::FIN;
    let events = vec![
        ev(0, SERVER, 80, 5000, ESTABLISHED, FIN_WAIT1),
        again,
        ev(200 * MS + 40_000, SERVER, 80, 5000, FIN_WAIT1, FIN_WAIT2),
        flags(
            ev(200 * MS + 42_000, SERVER, 80, 5000, FIN_WAIT2, CLOSE),
            f::ORPHAN,
        ),
    ];
    let t = &run(&events)[0];
    assert_eq!(
        t.retransmits,
        vec![Retransmit {
            ts_ns: 200 * MS,
            state: FIN_WAIT1,
            fin: true
        }]
    );
    assert_eq!(t.transitions.len(), 3);
    assert!(!t.gap);
}

#[test]
fn identical_loopback_tuples_in_two_namespaces_link_within_their_namespace() {
    let in_ns = |mut events: Vec<Event>, netns: u32, offset: u64| {
        for e in &mut events {
            e.netns = netns;
            e.skaddr += offset;
        }
        events
    };
    let mut events = in_ns(normal_close(), 111, 0);
    events.extend(in_ns(normal_close(), 222, 0x100));
    events.sort_by_key(|e| e.ts_ns);
    let out = run(&events);
    assert_eq!(out.len(), 4);
    for t in &out {
        let peer = out
            .iter()
            .find(|p| Some(p.id) == t.peer.map(|x| x.id))
            .expect("linked");
        assert_eq!(peer.netns, t.netns, "{t:?}");
        assert_ne!(peer.lport, t.lport);
    }
}

#[test]
fn a_reused_socket_address_starts_a_new_timeline() {
    let events = vec![
        ev(0, SERVER, 80, 5000, ESTABLISHED, CLOSE_WAIT),
        ev(1, SERVER, 80, 5000, CLOSE_WAIT, LAST_ACK),
        ev(2, SERVER, 80, 5000, LAST_ACK, CLOSE),
        ev(10, SERVER, 80, 5001, ESTABLISHED, FIN_WAIT1),
        ev(11, SERVER, 80, 5001, FIN_WAIT1, FIN_WAIT2),
        ev(12, SERVER, 80, 5001, FIN_WAIT2, CLOSE),
    ];
    let out = run(&events);
    assert_eq!(out.len(), 2);
    assert_eq!((out[0].rport, out[0].role()), (5000, Some(Role::Passive)));
    assert_eq!((out[1].rport, out[1].role()), (5001, Some(Role::Active)));
    assert_ne!(out[0].id, out[1].id);
}

#[test]
fn a_lost_close_is_a_gap_when_the_address_comes_back() {
    let events = vec![
        ev(0, SERVER, 80, 5000, ESTABLISHED, CLOSE_WAIT),
        ev(10, SERVER, 80, 5001, ESTABLISHED, FIN_WAIT1),
    ];
    let out = run(&events);
    assert_eq!(out.len(), 2);
    assert!(out[0].gap && !out[0].complete());
    assert_eq!(out[0].still(), None, "it is gone, not still in CLOSE_WAIT");
}

#[test]
fn events_out_of_order_across_cpus_are_put_back_in_order() {
    let mut events = normal_close();
    events.swap(2, 3); // FIN_WAIT2->CLOSE arrives before FIN_WAIT1->FIN_WAIT2
    events.swap(0, 1);
    let out = run(&events);
    let server = by_port(&out, 80);
    assert!(!server.gap);
    assert_eq!(
        server.transitions.iter().map(|t| t.to).collect::<Vec<_>>(),
        vec![FIN_WAIT1, FIN_WAIT2, CLOSE]
    );
}

#[test]
fn an_orphan_is_held_until_its_peer_on_this_host_closes() {
    let events = normal_close();
    let mut r = Reconstructor::new(Filter::default());
    let mut out = Vec::new();
    for e in &events[..4] {
        r.push(e);
    }
    r.advance(1100 * MS, &mut |t| out.push(t));
    assert!(
        out.is_empty(),
        "the server's mini-socket still waits for the client's FIN"
    );
    for e in &events[4..] {
        r.push(e);
    }
    r.advance(1300 * MS, &mut |t| out.push(t));
    assert_eq!(
        out.iter().map(|t| t.lport).collect::<Vec<_>>(),
        vec![80, 5000]
    );
    let ack = wave(&out[0], WaveKind::AckSent);
    assert_eq!(
        (ack.ts_ns, ack.evidence),
        (Some(1200 * MS + 50_000), Evidence::Observed),
        "the client's LAST_ACK->CLOSE is the last ACK's arrival"
    );
}

#[test]
fn a_held_orphan_is_let_go_when_its_mini_socket_would_time_out() {
    let events = normal_close();
    let mut r = Reconstructor::new(Filter::default());
    let mut out = Vec::new();
    for e in &events[..4] {
        r.push(e);
    }
    r.advance(
        1000 * MS + FIN_TIMEOUT_NS + REORDER_WINDOW_NS + MS,
        &mut |t| out.push(t),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(
        wave(&out[0], WaveKind::FinReceived).evidence,
        Evidence::NotObserved
    );
    assert_eq!(r.open_count(), 1, "the client leaks in CLOSE_WAIT");
}

#[test]
fn events_wait_for_the_reorder_window_only() {
    let mut r = Reconstructor::new(Filter::default());
    let mut out = Vec::new();
    for e in &normal_close()[..2] {
        r.push(e);
    }
    r.advance(1000 * MS + REORDER_WINDOW_NS, &mut |t| out.push(t));
    assert_eq!(
        r.open_count(),
        1,
        "the second event is still inside the window"
    );
    r.advance(1000 * MS + 30_000 + REORDER_WINDOW_NS, &mut |t| out.push(t));
    assert_eq!(r.open_count(), 2);
}

#[test]
fn a_socket_first_seen_mid_close() {
    let events = vec![
        ev(0, SERVER, 80, 5000, FIN_WAIT1, FIN_WAIT2),
        ev(5, SERVER, 80, 5000, FIN_WAIT2, CLOSE),
    ];
    let t = &run(&events)[0];
    assert!(t.first_seen_mid_close);
    assert_eq!(t.teardown_ns(), None, "the start was not seen");
    assert_eq!(t.durations_ns(), vec![(FIN_WAIT2, 5)]);
    assert_eq!(
        t.role(),
        Some(Role::Active),
        "FIN_WAIT2: its FIN was acknowledged before any FIN of the peer's came in"
    );
    assert_nothing_before_it_is_observed(t);
}

/// The timeline of a socket first seen mid-close, making `changes` 1 ms apart.
fn first_seen(changes: &[(u8, u8)]) -> Timeline {
    let events: Vec<Event> = (0..)
        .zip(changes)
        .map(|(i, &(from, to))| ev(i * MS, SERVER, 80, 5000, from, to))
        .collect();
    let t = run(&events).remove(0);
    assert!(t.first_seen_mid_close);
    t
}

/// Whatever role the state it was first seen in gives a socket, its waves still observe
/// nothing from before that moment.
fn assert_nothing_before_it_is_observed(t: &Timeline) {
    let first = t.transitions[0].ts_ns;
    for w in t.waves() {
        if w.evidence == Evidence::Observed {
            assert!(w.ts_ns.is_some_and(|ts| ts >= first), "{w:?} in {t:?}");
        }
    }
}

/// A reconstruction whose start snapshot had 127.0.0.1:80 <-> :5000 (the SERVER socket of
/// these tests) in CLOSE_WAIT, the peer's FIN `since_fin_ms` before; and what it was told.
fn close_wait_before_trace(since_fin_ms: Option<(u32, u32)>) -> (Reconstructor, BeforeTrace) {
    let localhost = std::net::IpAddr::from([127, 0, 0, 1]);
    let before = BeforeTrace {
        state: CLOSE_WAIT,
        snapshot_ns: 1,
        since_fin_ms,
    };
    let mut r = Reconstructor::new(Filter::default());
    r.before_trace([((0, localhost, 80, localhost, 5000), before)]);
    (r, before)
}

#[test]
fn a_socket_in_close_wait_when_tracing_started_is_passive() {
    let (mut r, _) = close_wait_before_trace(Some((26_196, 26_196)));
    r.push(&ev(10, SERVER, 80, 5000, CLOSE_WAIT, LAST_ACK));
    r.push(&ev(20, SERVER, 80, 5000, LAST_ACK, CLOSE));
    let mut out = Vec::new();
    r.finish(100, &mut |t| out.push(t));
    let t = &out[0];
    assert_eq!(
        t.role(),
        Some(Role::Passive),
        "CLOSE_WAIT: the peer's FIN came first"
    );
    assert!(t.first_seen_mid_close && t.before_trace.is_some());
    assert_nothing_before_it_is_observed(t);
    let fin_in = wave(t, WaveKind::FinReceived);
    assert_eq!(
        (fin_in.evidence, fin_in.ts_ns),
        (Evidence::NotObserved, None)
    );
    assert_eq!(wave(t, WaveKind::FinQueued).ts_ns, Some(10));
    assert_eq!(wave(t, WaveKind::AckReceived).ts_ns, Some(20));
}

#[test]
fn a_socket_first_seen_in_last_ack_is_passive_as_if_traced_throughout() {
    // LAST_ACK is only reached from CLOSE_WAIT.
    let t = first_seen(&[(LAST_ACK, CLOSE)]);
    assert_eq!(t.role(), Some(Role::Passive));
    assert_nothing_before_it_is_observed(&t);
    // It closed, unseen: its FIN is there, not observed (not "never sent").
    let queued = wave(&t, WaveKind::FinQueued);
    assert_eq!(
        (queued.evidence, queued.ts_ns),
        (Evidence::NotObserved, None)
    );

    // The peer's RST in LAST_ACK makes a fully traced socket no reset either.
    let mut rst = ev(5, SERVER, 80, 5000, LAST_ACK, LAST_ACK);
    rst.kind = kind::RESET_RECEIVED;
    let traced = [
        ev(0, SERVER, 80, 5000, ESTABLISHED, CLOSE_WAIT),
        ev(1, SERVER, 80, 5000, CLOSE_WAIT, LAST_ACK),
        rst,
        ev(6, SERVER, 80, 5000, LAST_ACK, CLOSE),
    ];
    assert_eq!(run(&traced)[0].role(), Some(Role::Passive));
    assert_eq!(run(&traced[2..])[0].role(), Some(Role::Passive));
}

#[test]
fn a_socket_first_seen_in_closing_is_simultaneous() {
    let t = first_seen(&[(CLOSING, CLOSE)]);
    assert_eq!(t.role(), Some(Role::Simultaneous));
    assert_eq!(t.time_wait(), Some(TIME_WAIT));
    assert_nothing_before_it_is_observed(&t);
}

#[test]
fn a_socket_first_seen_in_fin_wait1_has_a_role_only_once_it_leaves() {
    // close() after shutdown() re-enters FIN_WAIT1: still there, a crossing FIN could yet
    // take it to CLOSING.
    assert_eq!(first_seen(&[(FIN_WAIT1, FIN_WAIT1)]).role(), None);
    let crossed = first_seen(&[(FIN_WAIT1, CLOSING), (CLOSING, CLOSE)]);
    assert_eq!(crossed.role(), Some(Role::Simultaneous));
    // Straight to CLOSE (a reset or an abort): no FIN came in while its own was out, as
    // for a socket seen entering FIN_WAIT1.
    let aborted = first_seen(&[(FIN_WAIT1, CLOSE)]);
    assert_eq!(aborted.role(), Some(Role::Active));
    assert_eq!(
        run(&[
            ev(0, SERVER, 80, 5000, ESTABLISHED, FIN_WAIT1),
            ev(1, SERVER, 80, 5000, FIN_WAIT1, CLOSE)
        ])[0]
            .role(),
        Some(Role::Active)
    );
    assert_nothing_before_it_is_observed(&aborted);
}

/// Shut down before tracing, closed while traced: the close() re-enters FIN_WAIT1, but the
/// FIN was queued at the shutdown(), before anything was seen.
#[test]
fn a_close_after_a_shutdown_before_tracing_is_not_the_fin_queued() {
    let t = first_seen(&[
        (FIN_WAIT1, FIN_WAIT1),
        (FIN_WAIT1, FIN_WAIT2),
        (FIN_WAIT2, CLOSE),
    ]);
    assert_eq!(t.role(), Some(Role::Active));
    let queued = t
        .waves()
        .into_iter()
        .find(|w| w.what == WaveKind::FinQueued);
    assert!(
        queued.is_none_or(|w| w.evidence != Evidence::Observed),
        "{queued:?}"
    );
    assert_eq!(t.fin_queued_first_ns(), Some(0));
}

#[test]
fn sockets_still_closing_are_incomplete() {
    let events = vec![owned(
        ev(0, CLIENT, 5000, 80, ESTABLISHED, CLOSE_WAIT),
        200,
        "leaky",
    )];
    let t = &run(&events)[0];
    assert!(!t.complete());
    assert_eq!(t.role(), Some(Role::Passive));
    assert_eq!(t.teardown_ns(), None);
    assert_eq!(
        t.owner.unwrap().task.pid,
        200,
        "a CLOSE_WAIT leak keeps its owner"
    );
    let still = Still {
        state: CLOSE_WAIT,
        since_ns: 0,
        for_ns: 1_000 * MS,
        in_kernel: None,
    };
    assert_eq!(t.still(), Some(still), "until tracing stopped, 1 s later");
}

#[test]
fn an_owner_learned_at_a_late_accept_joins_the_timeline() {
    let owner = accepted(ev(5, SERVER, 80, 5000, CLOSE_WAIT, CLOSE_WAIT));
    let events = vec![ev(0, SERVER, 80, 5000, ESTABLISHED, CLOSE_WAIT), owner];
    let out = run(&events);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].owner.unwrap().task.pid, 100);
    assert_eq!(out[0].transitions.len(), 1);
    assert!(!out[0].first_seen_mid_close);
}

#[test]
fn an_owner_sent_while_the_fin_lands_comes_before_the_transition_and_still_counts() {
    // accept() on one CPU saw RCV_SHUTDOWN while tcp_fin() on the other had not finished
    // the CLOSE_WAIT transition, whose owner lookup came too early.
    let owner = accepted(flags(
        ev(5, SERVER, 80, 5000, ESTABLISHED, ESTABLISHED),
        f::RCV_SHUTDOWN | f::FIN_RECEIVED,
    ));
    let events = vec![owner, ev(6, SERVER, 80, 5000, ESTABLISHED, CLOSE_WAIT)];
    let t = &run(&events)[0];
    assert_eq!(t.owner.unwrap().task.pid, 100);
    assert_eq!(t.role(), Some(Role::Passive));
    assert!(!t.first_seen_mid_close);
    assert!(!t.gap);
}

#[test]
fn a_socket_accepted_in_close_wait_before_the_trace_is_shown_mid_close() {
    let owner = accepted(ev(5, SERVER, 80, 5000, CLOSE_WAIT, CLOSE_WAIT));
    let t = &run(&[owner])[0];
    assert_eq!(t.owner.unwrap().task.pid, 100);
    assert!(t.first_seen_mid_close);
    assert!(!t.complete());
}

#[test]
fn opening_and_listening_transitions_are_not_teardowns() {
    let events = vec![
        ev(0, CLIENT, 5000, 80, CLOSE, SYN_SENT),
        ev(1, CLIENT, 5000, 80, SYN_SENT, ESTABLISHED),
        ev(2, SERVER, 80, 0, CLOSE, LISTEN),
        ev(3, SERVER, 80, 0, LISTEN, CLOSE),
    ];
    assert!(run(&events).is_empty());
}

#[test]
fn a_refused_connect_is_a_reset() {
    let mut refused = ev(0, CLIENT, 5000, 80, SYN_SENT, SYN_SENT);
    refused.kind = kind::RESET_RECEIVED;
    let t = &run(&[refused, ev(1, CLIENT, 5000, 80, SYN_SENT, CLOSE)])[0];
    assert_eq!(t.role(), Some(Role::Reset));
}

/// Two segments completing one handshake at once on two CPUs: the kernel clones a second
/// child and drops it at once, with no RST. Neither that nor a connect() that timed out was
/// a connection: no teardown, and certainly no reset.
#[test]
fn a_handshake_ended_without_a_reset_is_no_teardown() {
    let dropped_child = ev(0, SERVER, 80, 5000, SYN_RECV, CLOSE);
    let timed_out = ev(1, CLIENT, 5001, 80, SYN_SENT, CLOSE);
    assert!(run(&[dropped_child, timed_out]).is_empty());
}

#[test]
fn filters_apply_to_ports_and_owners() {
    let either_side = Filter {
        ports: vec![80],
        ..Default::default()
    };
    assert_eq!(run_with(either_side, &normal_close()).len(), 2);
    let local = Filter {
        lports: vec![80],
        ..Default::default()
    };
    let out = run_with(local, &normal_close());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].lport, 80);
    assert_eq!(out[0].peer, None, "the filtered-out peer was never seen");

    let pids = Filter {
        pids: vec![200],
        ..Default::default()
    };
    let out = run_with(pids, &normal_close());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].owner.unwrap().task.pid, 200);

    let unknown_owner = vec![ev(0, SERVER, 80, 5000, ESTABLISHED, CLOSE)];
    assert!(run_with(
        Filter {
            pids: vec![1],
            ..Default::default()
        },
        &unknown_owner
    )
    .is_empty());
}

#[test]
fn a_held_orphan_let_go_without_its_peer_still_obeys_the_owner_filter() {
    // The client (pid 200) leaks in CLOSE_WAIT, so the server's orphan is held until the
    // end. Its owner was never learned (say the owner table was full): -p 200 cannot claim
    // it, whichever way it is let go.
    let mut events = normal_close()[..4].to_vec();
    for e in events.iter_mut().filter(|e| e.sport == 80) {
        e.owner_pid = 0;
    }
    let pids = Filter {
        pids: vec![200],
        ..Default::default()
    };
    let out = run_with(pids.clone(), &events);
    assert_eq!(
        out.iter().map(|t| t.lport).collect::<Vec<_>>(),
        vec![5000],
        "{out:?}"
    );

    let mut r = Reconstructor::new(pids);
    let mut late = Vec::new();
    events.iter().for_each(|e| r.push(e));
    r.advance(
        1000 * MS + FIN_TIMEOUT_NS + REORDER_WINDOW_NS + MS,
        &mut |t| late.push(t),
    );
    assert!(
        late.is_empty(),
        "released at its deadline, still filtered: {late:?}"
    );
}

#[test]
fn open_sockets_are_bounded() {
    let mut r = Reconstructor::with_limits(Filter::default(), 0, 32);
    let mut out = Vec::new();
    for i in 0..100u64 {
        r.push(&ev(
            i,
            0x1000 + i,
            80,
            1000 + i as u16,
            ESTABLISHED,
            CLOSE_WAIT,
        ));
        r.advance(i, &mut |t| out.push(t));
    }
    assert!(r.open_count() <= 32);
    assert_eq!(r.stats.evicted as usize, out.len());
    assert!(out.iter().all(|t| !t.complete()));
    assert_eq!(out[0].lport, 80);
    assert_eq!(out[0].rport, 1000, "the oldest goes first");
    let still = out[0].still().expect("followed until evicted");
    assert_eq!((still.state, still.since_ns), (CLOSE_WAIT, 0));
    assert_eq!(
        still.for_ns, 32,
        "evicted when the 33rd socket came, at 32 ns"
    );
}

#[test]
fn every_timeline_that_may_have_lost_an_event_is_marked() {
    // Socket 1 was open across the loss and is still open at the end (its CLOSE may be
    // what was lost); socket 5 closed across it, every transition seen; socket 2 closes
    // entirely after it; socket 3 is first seen mid-close after it (its start may be what
    // was lost); socket 4 closed before it.
    let events = [
        ev(0, 4, 84, 9004, ESTABLISHED, CLOSE),
        ev(10 * MS, 1, 81, 9001, ESTABLISHED, FIN_WAIT1),
        ev(40 * MS, 1, 81, 9001, FIN_WAIT1, FIN_WAIT2),
        ev(10 * MS, 5, 85, 9005, ESTABLISHED, FIN_WAIT1),
        ev(40 * MS, 5, 85, 9005, FIN_WAIT1, FIN_WAIT2),
        ev(41 * MS, 5, 85, 9005, FIN_WAIT2, CLOSE),
        ev(50 * MS, 2, 82, 9002, ESTABLISHED, CLOSE),
        ev(60 * MS, 3, 83, 9003, CLOSE_WAIT, LAST_ACK),
        ev(61 * MS, 3, 83, 9003, LAST_ACK, CLOSE),
    ];
    let mut r = Reconstructor::new(Filter::default());
    events.iter().for_each(|e| r.push(e));
    r.note_loss(20 * MS, 30 * MS);
    let mut out = Vec::new();
    r.finish(100 * MS, &mut |t| out.push(t));
    let gap = |port: u16| by_port(&out, port).gap;
    assert!(gap(81), "open across the loss, never seen closing");
    assert!(
        !gap(85),
        "every transition to CLOSE seen: none can be missing"
    );
    assert!(!gap(82), "entirely after it");
    assert!(gap(83), "first seen mid-close after it");
    assert!(!gap(84), "closed before it");
}

#[test]
fn loss_spans_stay_bounded_and_keep_covering_the_past() {
    let mut r = Reconstructor::new(Filter::default());
    for i in 0..5000u64 {
        r.note_loss(i * 10, i * 10 + 1);
    }
    assert!(r.losses.len() <= MAX_LOSS_SPANS);
    assert_eq!(
        r.losses.front().map(|l| l.0),
        Some(0),
        "the oldest start is kept"
    );
}

#[test]
fn a_transition_repeated_by_the_nested_run_twin_is_dropped() {
    let events = [
        ev(0, 1, 80, 9000, ESTABLISHED, FIN_WAIT1),
        ev(5, 1, 80, 9000, ESTABLISHED, FIN_WAIT1),
        ev(10, 1, 80, 9000, FIN_WAIT1, FIN_WAIT2),
        ev(20, 1, 80, 9000, FIN_WAIT2, CLOSE),
    ];
    let t = &run(&events)[0];
    assert_eq!(t.transitions.len(), 3);
    assert!(!t.gap);
    assert_eq!(t.transitions[0].ts_ns, 0, "the first one is kept");
}

/// Seen under QEMU on 7.2: the repeat of a transition to CLOSE came after the timeline
/// had closed, and began a timeline of its own.
#[test]
fn a_close_repeated_by_the_nested_run_twin_begins_no_timeline() {
    let events = [
        ev(0, 1, 80, 9000, CLOSE_WAIT, LAST_ACK),
        ev(10, 1, 80, 9000, LAST_ACK, CLOSE),
        ev(15, 1, 80, 9000, LAST_ACK, CLOSE),
        // Later, a new socket at the same address and tuple closing the same way is one.
        ev(10_000 * MS, 1, 80, 9000, CLOSE_WAIT, LAST_ACK),
        ev(10_000 * MS + 10, 1, 80, 9000, LAST_ACK, CLOSE),
    ];
    let out = run(&events);
    assert_eq!(out.len(), 2, "{out:#?}");
    assert!(out.iter().all(|t| t.transitions.len() == 2 && !t.gap));
}

#[test]
fn a_close_repeated_by_a_preempted_twin_after_many_closes_begins_no_timeline() {
    let mut events = vec![
        ev(0, 1, 80, 9000, CLOSE_WAIT, LAST_ACK),
        ev(10, 1, 80, 9000, LAST_ACK, CLOSE),
    ];
    // A 7.2 guest's storm closed more than 64 other sockets before a preempted twin's
    // repeat came.
    for i in 0..200u16 {
        let (ts, sock) = (MS + u64::from(i) * 1000, 100 + u64::from(i));
        events.push(ev(ts, sock, 80, 10_000 + i, CLOSE_WAIT, LAST_ACK));
        events.push(ev(ts + 10, sock, 80, 10_000 + i, LAST_ACK, CLOSE));
    }
    events.push(ev(300 * MS, 1, 80, 9000, LAST_ACK, CLOSE));
    let out = run(&events);
    assert_eq!(out.len(), 201);
    assert!(out.iter().all(|t| t.transitions.len() == 2 && !t.gap));
}

/// The twin's repeats are counted: the kernel's count of runs the twin made up for is its
/// runs less these (a repeat recovered nothing).
#[test]
fn the_twins_repeats_are_counted() {
    let mut r = Reconstructor::new(Filter::default());
    for e in [
        ev(0, 1, 80, 9000, ESTABLISHED, FIN_WAIT1),
        ev(5, 1, 80, 9000, ESTABLISHED, FIN_WAIT1),
        ev(10, 1, 80, 9000, FIN_WAIT1, FIN_WAIT2),
        ev(20, 1, 80, 9000, FIN_WAIT2, CLOSE),
        ev(25, 1, 80, 9000, FIN_WAIT2, CLOSE),
        // Not a repeat: the next step.
        ev(30, 2, 80, 9001, ESTABLISHED, FIN_WAIT1),
    ] {
        r.push(&e);
    }
    r.advance(10_000 * MS, &mut |_| {});
    assert_eq!(r.repeats(), 2);
}

#[test]
fn a_socket_open_before_tracing_says_what_the_snapshot_saw() {
    let (mut r, before) = close_wait_before_trace(Some((2_000, 2_100)));
    let mut out = Vec::new();
    for e in [
        ev(10, SERVER, 80, 5000, CLOSE_WAIT, LAST_ACK),
        ev(20, SERVER, 80, 5000, LAST_ACK, CLOSE),
        // Another connection, opened while traced, has nothing from the snapshot.
        ev(30, CLIENT, 5001, 80, ESTABLISHED, FIN_WAIT1),
    ] {
        r.push(&e);
    }
    r.finish(100, &mut |t| out.push(t));
    assert_eq!(out[0].before_trace, Some(before));
    assert!(out[0].first_seen_mid_close);
    assert_eq!(out[1].before_trace, None);
}

#[test]
fn a_socket_still_closing_that_the_kernel_no_longer_has_had_its_end_lost() {
    let mut r = Reconstructor::new(Filter::default());
    for e in [
        ev(0, 1, 81, 9001, ESTABLISHED, CLOSE_WAIT),
        ev(0, 2, 82, 9002, ESTABLISHED, FIN_WAIT1),
    ] {
        r.push(&e);
    }
    // The kernel still has the CLOSE_WAIT socket; the FIN_WAIT1 one is gone.
    r.check_open_at_exit(Box::new(|t: &Timeline| t.lport == 81));
    let mut out = Vec::new();
    r.finish(10 * MS, &mut |t| out.push(t));
    let (leak, gone) = (by_port(&out, 81), by_port(&out, 82));
    assert_eq!(leak.still().unwrap().in_kernel, Some(true));
    assert!(!leak.gap, "a real leak");
    assert_eq!(gone.still().unwrap().in_kernel, Some(false));
    assert!(gone.gap, "its end was lost");
}

/// The socket's sequence state at an event: `una`, `nxt`, `write`, `rcv` and ACK bits.
fn seq(mut e: Event, una: u32, nxt: u32, write: u32, rcv: u32, ack: u8) -> Event {
    (e.snd_una, e.snd_nxt, e.write_seq, e.rcv_nxt) = (una, nxt, write, rcv);
    e.seq_flags = teardown_common::seq_flags::KNOWN | ack;
    e
}

/// `normal_close` with sequence state: the server's FIN is u = 1000, the client's w = 5000.
fn numbered_close() -> Vec<Event> {
    let e = normal_close();
    vec![
        seq(e[0], 1000, 1000, 1000, 5000, 0),
        seq(e[1], 5000, 5000, 5000, 1001, f_ack::ACK_SCHEDULED),
        seq(e[2], 1001, 1001, 1001, 5000, 0),
        seq(e[3], 1001, 1001, 1001, 5000, 0),
        seq(e[4], 5000, 5000, 5000, 1001, 0),
        seq(e[5], 5001, 5001, 5001, 1001, 0),
    ]
}

fn seqs(t: &Timeline) -> Vec<(&'static str, Option<u32>)> {
    t.waves().iter().map(|w| (w.what.name(), w.seq)).collect()
}

#[test]
fn every_wave_carries_its_sequence_number() {
    let out = run(&numbered_close());
    let (server, client) = (by_port(&out, 80), by_port(&out, 5000));
    assert_eq!(
        seqs(server),
        vec![
            ("fin_queued", Some(1000)),
            ("fin_sent", Some(1000)),
            ("ack_received", Some(1001)),
            ("fin_received", Some(5000)),
            ("ack_sent", Some(5001)),
        ]
    );
    assert_eq!(
        seqs(client),
        vec![
            ("fin_received", Some(1000)),
            ("ack_sent", Some(1001)),
            ("fin_queued", Some(5000)),
            ("fin_sent", Some(5000)),
            ("ack_received", Some(5001)),
        ]
    );
    // The server's FIN is seen arriving at the client; the client's, with nothing left to
    // send, is deduced to leave at its close, before its ACK came back.
    let fin = wave(server, WaveKind::FinSent);
    assert_eq!(
        (fin.ts_ns, fin.evidence),
        (Some(1000 * MS + 30_000), Evidence::Observed)
    );
    let fin = wave(client, WaveKind::FinSent);
    assert_eq!(
        (fin.evidence, fin.ts_ns, fin.earliest_ns, fin.latest_ns),
        (
            Evidence::Inferred,
            Some(1200 * MS),
            Some(1200 * MS),
            Some(1200 * MS + 50_000)
        )
    );
    let close = server.at_close().unwrap();
    assert_eq!((close.unsent, close.unacked), (0, 0));
}

/// The client's side alone (its peer is elsewhere), with the ACK state at its close.
fn passive_alone(ack_at_close: u8) -> Timeline {
    let events: Vec<Event> = numbered_close()
        .into_iter()
        .filter(|e| e.skaddr == CLIENT)
        .map(|mut e| {
            if e.oldstate == CLOSE_WAIT {
                e.seq_flags |= ack_at_close;
            }
            e
        })
        .collect();
    run(&events).remove(0)
}

#[test]
fn an_ack_still_owed_at_close_rides_on_the_fin() {
    let t = passive_alone(f_ack::ACK_SCHEDULED | f_ack::ACK_TIMER);
    let ack = wave(&t, WaveKind::AckSent);
    assert_eq!(
        (ack.evidence, ack.ts_ns, ack.seq),
        (Evidence::Inferred, Some(1200 * MS), Some(1001))
    );
    assert!(
        ack.basis.starts_with("merged into our FIN"),
        "{}",
        ack.basis
    );
}

#[test]
fn an_ack_sent_before_close_is_delayed_not_at_once() {
    let t = passive_alone(0);
    let ack = wave(&t, WaveKind::AckSent);
    assert_eq!(ack.evidence, Evidence::NotObserved);
    assert_eq!(
        (ack.earliest_ns, ack.latest_ns),
        (Some(1000 * MS + 30_000), Some(1200 * MS))
    );
    assert!(ack.basis.starts_with("delayed"), "{}", ack.basis);
}

#[test]
fn a_fin_queued_behind_unsent_data_is_not_said_to_be_on_the_wire() {
    let mut events: Vec<Event> = numbered_close()
        .into_iter()
        .filter(|e| e.skaddr == SERVER)
        .collect();
    // 1 MB written, 64 KiB of it sent and not acknowledged yet.
    events[0] = seq(events[0], 1000, 1000 + 65_536, 1000 + 1_048_576, 5000, 0);
    let t = run(&events).remove(0);
    let close = t.at_close().unwrap();
    assert_eq!((close.unsent, close.unacked), (1_048_576 - 65_536, 65_536));
    let queued = wave(&t, WaveKind::FinQueued);
    assert_eq!(
        (queued.evidence, queued.seq),
        (Evidence::Observed, Some(1000 + 1_048_576))
    );
    let sent = wave(&t, WaveKind::FinSent);
    assert_eq!(sent.evidence, Evidence::NotObserved);
    assert_eq!(
        (sent.earliest_ns, sent.latest_ns),
        (Some(1000 * MS), Some(1000 * MS + 60_000))
    );
}

#[test]
fn close_after_shutdown_is_the_release_of_the_socket() {
    let events = vec![
        flags(
            ev(1000 * MS, SERVER, 80, 5000, ESTABLISHED, FIN_WAIT1),
            f::SEND_SHUTDOWN,
        ),
        ev(1000 * MS + 50_000, SERVER, 80, 5000, FIN_WAIT1, FIN_WAIT2),
        flags(
            ev(1100 * MS, SERVER, 80, 5000, FIN_WAIT2, FIN_WAIT2),
            f::SEND_SHUTDOWN | f::RCV_SHUTDOWN,
        ),
        flags(
            ev(1100 * MS + 9_000, SERVER, 80, 5000, FIN_WAIT2, CLOSE),
            f::SEND_SHUTDOWN | f::RCV_SHUTDOWN | f::ORPHAN,
        ),
    ];
    let t = run(&events).remove(0);
    assert_eq!(t.released_ns(), Some(1100 * MS));
    assert!(t.transitions[2].is_release());
    assert_eq!(t.role(), Some(Role::Active));
    assert!(t.half_close());
}

#[test]
fn a_socket_opened_while_traced_but_first_seen_mid_close_lost_a_transition() {
    // The start snapshot had the socket on port 80, not the one on port 81.
    let (mut r, _) = close_wait_before_trace(None);
    for e in [
        ev(10, SERVER, 80, 5000, CLOSE_WAIT, LAST_ACK),
        ev(20, SERVER, 80, 5000, LAST_ACK, CLOSE),
        ev(30, CLIENT, 81, 5001, CLOSE_WAIT, LAST_ACK),
        ev(40, CLIENT, 81, 5001, LAST_ACK, CLOSE),
    ] {
        r.push(&e);
    }
    let mut out = Vec::new();
    r.finish(100, &mut |t| out.push(t));
    assert!(
        !by_port(&out, 80).gap,
        "open before tracing: its start was never to be seen"
    );
    assert!(
        by_port(&out, 81).gap,
        "opened while traced: its start went missing"
    );
}
