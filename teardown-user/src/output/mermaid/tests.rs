use teardown_common::{kind, seq_flags, sock_flags, state::*, Event};

use super::*;
use crate::{
    output::tests::{server_closes, timelines_of},
    testing::ev,
};

const MS: u64 = 1_000_000;

fn names() -> KernelNames {
    KernelNames {
        reset_reasons: vec!["NOT_SPECIFIED".into(), "NO_SOCKET".into()],
    }
}

fn owned(mut e: Event, pid: u32, comm: &[u8]) -> Event {
    e.owner_pid = pid;
    e.owner_comm = [0; 16];
    e.owner_comm[..comm.len()].copy_from_slice(comm);
    e
}

/// The diagram of a pair (both ends traced) or of one end alone, body lines only.
fn draw(ts: &[Timeline], both: bool) -> Vec<String> {
    let b = both.then(|| &ts[1]);
    let diagram = connection(&ts[0], b, &Clock::default(), &names());
    assert!(diagram.starts_with("sequenceDiagram\n"), "{diagram}");
    diagram
        .lines()
        .skip(1)
        .map(|l| l.trim().to_string())
        .collect()
}

fn arrows(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| !l.starts_with("Note") && !l.starts_with("participant"))
        .map(|l| l.split(" +").next().unwrap().to_string())
        .collect()
}

#[test]
fn both_ends_draw_the_four_way_close_with_states_as_notes() {
    // The client's timeline comes out first here: the first closer still goes on the left.
    let mut ts = timelines_of(&server_closes());
    ts.sort_by_key(|t| std::cmp::Reverse(t.lport));
    assert_eq!(ts[0].lport, 5000);
    let lines = draw(&ts, true);
    assert_eq!(
        lines[0],
        "participant A as 127.0.0.1#58;80<br/>server 100 #35;1"
    );
    assert_eq!(
        lines[1],
        "participant B as 127.0.0.1#58;5000<br/>client 200 #35;2"
    );
    assert_eq!(
        arrows(&lines),
        // B's FIN is dashed: CLOSE_WAIT->LAST_ACK only shows B's close() (the FIN queued),
        // and A had handed over to its TIME_WAIT mini-socket before the FIN arrived, so it
        // was not seen on the wire: the best left is A's inference from its peer socket.
        [
            "A->>B: FIN=1",
            "B->>A: ACK=1",
            "B-->>A: FIN=1",
            "A->>B: ACK=1"
        ],
        "{lines:#?}"
    );
    let text = lines.join("\n");
    // A's FIN is drawn where it arrived (B's CLOSE_WAIT), after A's close() queued it.
    assert!(
        text.contains("Note left of A: close()#58; FIN queued +0.000 ms"),
        "{text}"
    );
    assert!(
        text.contains(
            "A->>B: FIN=1 +0.030 ms<br/>observed: ESTABLISHED→CLOSE_WAIT at 127.0.0.1#58;5000"
        ),
        "{text}"
    );
    // B's FIN: its close() observed, the FIN itself inferred and bounded by its ACK.
    assert!(
        text.contains("Note right of B: close()#58; FIN queued +200.000 ms"),
        "{text}"
    );
    assert!(
        text.contains(
            "B-->>A: FIN=1 +200.000 ms<br/>inferred: peer socket on this host sent its FIN at 127.0.0.1#58;80<br/>between +200.000 ms and +200.050 ms"
        ),
        "{text}"
    );
    // Both ACKs were observed where they arrived, not where they left.
    assert!(
        text.contains(
            "B->>A: ACK=1 +0.060 ms<br/>observed: FIN_WAIT1→FIN_WAIT2 at 127.0.0.1#58;80"
        ),
        "{text}"
    );
    assert!(
        text.contains("Note left of A: FIN_WAIT1 +0.000 ms"),
        "{text}"
    );
    assert!(
        text.contains("Note right of B: CLOSE_WAIT +0.030 ms"),
        "{text}"
    );
    assert!(
        text.contains(
            "Note left of A: CLOSE#58; handed to a TIME_WAIT mini-socket in FIN_WAIT2 +0.062 ms"
        ),
        "{text}"
    );
    assert!(
        text.contains("A->>B: ACK=1 +200.050 ms<br/>observed: LAST_ACK→CLOSE at 127.0.0.1#58;5000"),
        "{text}"
    );
    assert!(
        text.contains("Note right of B: CLOSE +200.050 ms"),
        "{text}"
    );
    // In time order: B's FIN comes 200 ms after A's hand-over.
    let at = |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap();
    assert!(at("handed to") < at("B-->>A: FIN=1"));
    assert!(at("B: close()") < at("B-->>A: FIN=1"));
}

#[test]
fn one_end_alone_draws_the_remote_end_as_unknown_and_its_inferences_dashed() {
    // shutdown(SHUT_WR), then the peer's FIN really arrives; the peer is not traced.
    let mut events = vec![
        owned(ev(0, 1, 80, 5000, ESTABLISHED, FIN_WAIT1), 100, b"server"),
        ev(60_000, 1, 80, 5000, FIN_WAIT1, FIN_WAIT2),
        ev(200 * MS, 1, 80, 5000, FIN_WAIT2, CLOSE),
    ];
    events[0].daddr[..4].copy_from_slice(&[10, 0, 0, 9]);
    events[1].daddr = events[0].daddr;
    events[2].daddr = events[0].daddr;
    events[2].sock_flags = sock_flags::FIN_RECEIVED;
    let ts = timelines_of(&events);
    let lines = draw(&ts, false);
    assert_eq!(
        lines[1],
        "participant B as 10.0.0.9#58;5000<br/>remote end, not traced"
    );
    assert_eq!(
        arrows(&lines),
        // A's own FIN is no longer taken as observed: FIN_WAIT1 is its close() (the FIN
        // queued); with no seq state and the peer elsewhere, its leaving is only bounded,
        // between the close and the ACK that came back.
        [
            "A-->>B: FIN=1",
            "B->>A: ACK=1",
            "B->>A: FIN=1",
            "A-->>B: ACK=1"
        ],
        "{lines:#?}"
    );
    let first = lines
        .iter()
        .find(|l| l.starts_with("A-->>B: FIN=1"))
        .unwrap();
    assert!(
        first.contains("FIN=1 +0.000 ms to +0.060 ms<br/>bounded: not seen at 127.0.0.1#58;80"),
        "{first}"
    );
    let last = lines
        .iter()
        .find(|l| l.starts_with("A-->>B: ACK=1"))
        .unwrap();
    assert!(
        last.contains("inferred: tcp_fin() acknowledges a FIN in FIN_WAIT2 at once"),
        "{last}"
    );
    assert!(lines
        .iter()
        .any(|l| l == "Note left of A: TIME_WAIT +200.000 ms"));
}

#[test]
fn an_orphan_alone_says_what_it_could_not_see() {
    let mut events = server_closes();
    events.retain(|e| e.skaddr == 1);
    let ts = timelines_of(&events);
    let lines = draw(&ts, false);
    assert_eq!(
        arrows(&lines),
        // The FIN on the wire is bounded, not observed (FIN_WAIT1 is the close()).
        ["A-->>B: FIN=1", "B->>A: ACK=1"],
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"Note left of A: close()#58; FIN queued +0.000 ms".to_string()),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Note over A,B: FIN=1 from B: not seen (")
                && l.contains("mini-socket")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Note over A,B: ACK=1 from A: not seen (")
                && l.contains("mini-socket")),
        "{lines:#?}"
    );
}

#[test]
fn an_ack_that_arrives_after_the_peers_fin_rode_on_it() {
    // As seen with a retransmitted FIN: the ACK reaches the closer only with the peer's FIN.
    let mut events = vec![
        ev(0, 1, 80, 5000, ESTABLISHED, FIN_WAIT1),
        ev(205_170_000, 2, 5000, 80, ESTABLISHED, CLOSE_WAIT),
        ev(205_212_000, 2, 5000, 80, CLOSE_WAIT, LAST_ACK),
        ev(205_224_000, 1, 80, 5000, FIN_WAIT1, FIN_WAIT2),
        ev(205_236_000, 1, 80, 5000, FIN_WAIT2, CLOSE),
        ev(205_244_000, 2, 5000, 80, LAST_ACK, CLOSE),
    ];
    events[4].sock_flags = sock_flags::FIN_RECEIVED;
    let mut retransmit = ev(205_143_000, 1, 80, 5000, FIN_WAIT1, FIN_WAIT1);
    retransmit.kind = kind::RETRANSMIT;
    retransmit.tcp_flags = teardown_common::tcp_flag::FIN;
    events.insert(1, retransmit);
    let ts = timelines_of(&events);
    let lines = draw(&ts, true);
    assert_eq!(
        arrows(&lines),
        // A's FIN is now drawn where it arrived (B's CLOSE_WAIT, +205.170 ms), which is
        // after it was sent again: the close() that queued it is a note at +0.
        [
            "A->>B: FIN=1 again",
            "A->>B: FIN=1",
            "B->>A: FIN=1, ACK=1",
            "A->>B: ACK=1"
        ],
        "{lines:#?}"
    );
    let merged = lines.iter().find(|l| l.contains("FIN=1, ACK=1")).unwrap();
    assert!(
        merged.contains("carries the ACK of A#39;s FIN (seen at +205.224 ms)"),
        "{merged}"
    );
    let fin = lines
        .iter()
        .find(|l| l.starts_with("A->>B: FIN=1 +"))
        .unwrap();
    assert!(
        fin.contains("+205.170 ms<br/>observed: ESTABLISHED→CLOSE_WAIT")
            && fin.contains("arrived after being sent again"),
        "{fin}"
    );
    assert!(
        lines.contains(&"Note left of A: close()#58; FIN queued +0.000 ms".to_string()),
        "{lines:#?}"
    );
}

#[test]
fn an_ack_held_back_by_the_delayed_ack_timer_says_so() {
    let events = vec![
        ev(0, 1, 80, 5000, ESTABLISHED, FIN_WAIT1),
        ev(20_000, 2, 5000, 80, ESTABLISHED, CLOSE_WAIT),
        ev(41 * MS, 1, 80, 5000, FIN_WAIT1, FIN_WAIT2),
        ev(500 * MS, 2, 5000, 80, CLOSE_WAIT, LAST_ACK),
        ev(500 * MS + 30_000, 1, 80, 5000, FIN_WAIT2, CLOSE),
        ev(500 * MS + 60_000, 2, 5000, 80, LAST_ACK, CLOSE),
    ];
    let ts = timelines_of(&events);
    let lines = draw(&ts, true);
    let ack = lines
        .iter()
        .find(|l| l.starts_with("B->>A: ACK=1"))
        .unwrap();
    assert!(
        ack.contains("delayed ACK#58; 40.980 ms after the FIN arrived"),
        "{ack}"
    );
}

#[test]
fn a_reset_between_two_local_ends_is_drawn_once_from_its_sender_with_its_reason() {
    let mut sent = ev(0, 1, 80, 5000, ESTABLISHED, ESTABLISHED);
    sent.kind = kind::RESET_SENT;
    sent.reason = 1;
    let mut received = ev(5, 2, 5000, 80, ESTABLISHED, ESTABLISHED);
    received.kind = kind::RESET_RECEIVED;
    let events = vec![
        sent,
        ev(1, 1, 80, 5000, ESTABLISHED, CLOSE),
        received,
        ev(6, 2, 5000, 80, ESTABLISHED, CLOSE),
    ];
    let ts = timelines_of(&events);
    let lines = draw(&ts, true);
    assert_eq!(arrows(&lines), ["A-xB: RST=1 (NO_SOCKET)"], "{lines:#?}");
    // Alone, the receiving end draws it from the unknown remote end.
    let alone = draw(&[ts[1].clone()], false);
    assert_eq!(arrows(&alone), ["B-xA: RST=1"], "{alone:#?}");
}

#[test]
fn a_socket_still_closing_ends_with_how_long_it_has_been_there() {
    let events = vec![ev(0, 2, 5000, 80, ESTABLISHED, CLOSE_WAIT)];
    let ts = timelines_of(&events);
    let lines = draw(&ts, false);
    assert!(
        lines.contains(&"Note left of A: still CLOSE_WAIT after 1000.000 ms".to_string()),
        "{lines:#?}"
    );
    assert!(
        // The application never closed: no FIN was queued, let alone sent (the old model
        // named CLOSE_WAIT->LAST_ACK as the FIN's basis although it was never reached).
        lines.contains(
            &"Note over A,B: FIN=1 from A: not seen (no close() seen#58; the application had not closed at 127.0.0.1#58;5000)"
                .to_string()
        ),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("close()#58; FIN queued")),
        "{lines:#?}"
    );
}

#[test]
fn a_socket_first_seen_in_last_ack_had_closed_unseen() {
    let ts = timelines_of(&[ev(MS, 2, 5000, 80, LAST_ACK, CLOSE)]);
    let lines = draw(&ts, false);
    // Passive from its state, it sent a FIN: not seen, yet not "never closed".
    assert!(
        lines.contains(
            &"Note over A,B: FIN=1 from A: not seen (not seen at 127.0.0.1#58;5000)".to_string()
        ),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("no close() seen")),
        "{lines:#?}"
    );
    assert_eq!(arrows(&lines), ["B->>A: ACK=1"], "{lines:#?}");
}

/// `e` with the socket's sequence state read: `(snd_una, snd_nxt, write_seq, rcv_nxt)`.
fn with_seq(mut e: Event, (una, nxt, write, rcv): (u32, u32, u32, u32), flags: u8) -> Event {
    e.snd_una = una;
    e.snd_nxt = nxt;
    e.write_seq = write;
    e.rcv_nxt = rcv;
    e.seq_flags = seq_flags::KNOWN | flags;
    e
}

#[test]
fn sequence_numbers_label_the_segments_as_in_the_textbook() {
    // A's FIN is u = 1000, B's is w = 7000; each ACK acknowledges u+1 and w+1.
    let mut events = vec![
        with_seq(
            ev(0, 1, 80, 5000, ESTABLISHED, FIN_WAIT1),
            (1000, 1000, 1000, 7000),
            0,
        ),
        with_seq(
            ev(30_000, 2, 5000, 80, ESTABLISHED, CLOSE_WAIT),
            (7000, 7000, 7000, 1001),
            seq_flags::PINGPONG,
        ),
        with_seq(
            ev(60_000, 1, 80, 5000, FIN_WAIT1, FIN_WAIT2),
            (1001, 1001, 1001, 7000),
            0,
        ),
        with_seq(
            ev(MS, 2, 5000, 80, CLOSE_WAIT, LAST_ACK),
            (7000, 7000, 7000, 1001),
            0,
        ),
        with_seq(
            ev(MS + 20_000, 1, 80, 5000, FIN_WAIT2, CLOSE),
            (1001, 1001, 1001, 7001),
            0,
        ),
        with_seq(
            ev(MS + 40_000, 2, 5000, 80, LAST_ACK, CLOSE),
            (7001, 7001, 7001, 1001),
            0,
        ),
    ];
    events[4].sock_flags = sock_flags::FIN_RECEIVED;
    let ts = timelines_of(&events);
    let lines = draw(&ts, true);
    assert_eq!(
        arrows(&lines),
        [
            "A->>B: FIN=1, seq=1000",
            "B->>A: ACK=1, ack=1001",
            "B->>A: FIN=1, seq=7000",
            "A->>B: ACK=1, ack=7001"
        ],
        "{lines:#?}"
    );
    // Each FIN was seen arriving at the other end, after the close() that queued it.
    let at = |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap();
    assert!(
        at("Note left of A: close()") < at("A->>B: FIN=1"),
        "{lines:#?}"
    );
    assert!(
        at("Note right of B: close()") < at("B->>A: FIN=1"),
        "{lines:#?}"
    );
    assert!(
        lines.contains(
            &"B->>A: FIN=1, seq=7000 +1.020 ms<br/>observed: FIN_WAIT2→CLOSE with SOCK_DONE set at 127.0.0.1#58;80"
                .to_string()
        ),
        "{lines:#?}"
    );
}

#[test]
fn an_ack_still_owed_at_close_goes_out_with_the_fin() {
    // The passive end alone: its ACK of the peer's FIN was still owed when the application
    // closed, and with nothing unsent the FIN left at once: one FIN+ACK segment.
    let events = vec![
        with_seq(
            ev(0, 2, 5000, 80, ESTABLISHED, CLOSE_WAIT),
            (9000, 9000, 9000, 501),
            seq_flags::PINGPONG,
        ),
        with_seq(
            ev(MS, 2, 5000, 80, CLOSE_WAIT, LAST_ACK),
            (9000, 9000, 9000, 501),
            seq_flags::ACK_SCHEDULED,
        ),
        with_seq(
            ev(MS + 50_000, 2, 5000, 80, LAST_ACK, CLOSE),
            (9001, 9001, 9001, 501),
            0,
        ),
    ];
    let ts = timelines_of(&events);
    let lines = draw(&ts, false);
    assert_eq!(
        arrows(&lines),
        [
            "B->>A: FIN=1, seq=500",
            "A-->>B: FIN=1, ACK=1, seq=9000, ack=501",
            "B->>A: ACK=1, ack=9001"
        ],
        "{lines:#?}"
    );
    let merged = lines
        .iter()
        .find(|l| l.contains("ACK=1, seq=9000"))
        .unwrap();
    assert!(
        merged.contains("+1.000 ms<br/>inferred: nothing unsent or in flight at close")
            && merged.contains("carries the ACK of B#39;s FIN (inferred at +1.000 ms)"),
        "{merged}"
    );
    // The FIN left as the application closed: no separate close() note.
    assert!(
        !lines.iter().any(|l| l.contains("close()#58; FIN queued")),
        "{lines:#?}"
    );
}

#[test]
fn numbers_show_only_when_known() {
    assert_eq!(segment_label("FIN=1", None, None), "FIN=1");
    assert_eq!(
        segment_label("FIN=1, ACK=1", Some(7), Some(9)),
        "FIN=1, ACK=1, seq=7, ack=9"
    );
    assert_eq!(segment_label("ACK=1", None, Some(8)), "ACK=1, ack=8");
}

#[test]
fn any_process_name_becomes_plain_text() {
    let events = [owned(
        ev(0, 1, 80, 5000, ESTABLISHED, FIN_WAIT1),
        7,
        b"a;b#c%%\n:<x>\"",
    )];
    let ts = timelines_of(&events);
    let lines = draw(&ts, false);
    assert_eq!(
        lines[0],
        "participant A as 127.0.0.1#58;80<br/>a#59;b#35;c#37;#37;#92;x0a#58;#60;x#62;#34; 7 #35;1"
    );
}

#[test]
fn the_time_wait_mini_socket_is_drawn_to_its_end() {
    let mut ts = timelines_of(&server_closes());
    let server = ts.iter_mut().find(|t| t.lport == 80).unwrap();
    let closed = server.transitions.last().unwrap().ts_ns;
    server.mini = Some(crate::reconstruct::timeline::MiniSocket {
        entered_ns: closed,
        substate: FIN_WAIT2,
        fin_received_ns: Some(closed + 1_000_000),
        reused_ns: Some(closed + 2_000_000),
        end: Some(crate::reconstruct::timeline::MiniSocketEnd {
            ts_ns: closed + 2_000_000,
            cause: crate::reconstruct::timeline::MiniSocketEndCause::Killed,
        }),
    });
    let lines = draw(&ts, true);
    let notes: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("Note") && (l.contains("mini-socket") || l.contains("reused")))
        .collect();
    assert_eq!(notes.len(), 4, "{lines:#?}");
    assert!(
        notes[1].contains("TIME_WAIT#58; the mini-socket took the FIN +1.062 ms"),
        "{notes:#?}"
    );
    assert!(
        notes[2].contains("TIME_WAIT reused by a new connection +2.062 ms"),
        "{notes:#?}"
    );
    assert!(
        notes[3].contains("mini-socket killed after 2.000 ms"),
        "{notes:#?}"
    );
}
