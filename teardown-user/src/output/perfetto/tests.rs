use teardown_common::{kind, state::*};

use super::*;
use crate::{
    output::tests::{server_closes, timelines_of},
    testing::ev,
};

/// A field as read back: a number or bytes.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int(u64),
    Bytes(Vec<u8>),
}

/// Reads a protobuf message into (field, value) pairs, in order (the check's own reader;
/// the kernel test decodes with Perfetto's schema).
fn fields(mut b: &[u8]) -> Vec<(u32, Value)> {
    fn varint(b: &mut &[u8]) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let byte = b[0];
            *b = &b[1..];
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return v;
            }
            shift += 7;
        }
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        let value = match key & 7 {
            0 => Value::Int(varint(&mut b)),
            1 => {
                let v = u64::from_le_bytes(b[..8].try_into().unwrap());
                b = &b[8..];
                Value::Int(v)
            }
            2 => {
                let len = varint(&mut b) as usize;
                let v = b[..len].to_vec();
                b = &b[len..];
                Value::Bytes(v)
            }
            other => panic!("wire type {other}"),
        };
        out.push(((key >> 3) as u32, value));
    }
    out
}

fn get(fields: &[(u32, Value)], field: u32) -> Option<&Value> {
    fields.iter().find(|(f, _)| *f == field).map(|(_, v)| v)
}

fn int(fields: &[(u32, Value)], field: u32) -> Option<u64> {
    match get(fields, field)? {
        Value::Int(v) => Some(*v),
        Value::Bytes(_) => None,
    }
}

fn text(fields: &[(u32, Value)], field: u32) -> Option<String> {
    match get(fields, field)? {
        Value::Bytes(b) => Some(String::from_utf8(b.clone()).unwrap()),
        Value::Int(_) => None,
    }
}

fn sub(fields: &[(u32, Value)], field: u32) -> Option<Vec<(u32, Value)>> {
    match get(fields, field)? {
        Value::Bytes(b) => Some(super::tests::fields(b)),
        Value::Int(_) => None,
    }
}

/// (ts, type, track, name, flow, terminating flow) of every track event, and the track
/// descriptors, of a trace.
#[allow(clippy::type_complexity)]
fn read(
    trace: &[u8],
) -> (
    Vec<(u64, u64, u64, Option<String>, Option<u64>, Option<u64>)>,
    Vec<Vec<(u32, Value)>>,
) {
    let (mut events, mut tracks) = (Vec::new(), Vec::new());
    for (f, p) in fields(trace) {
        assert_eq!(f, field::TRACE_PACKET);
        let Value::Bytes(p) = p else { panic!() };
        let p = fields(&p);
        assert_eq!(int(&p, field::PACKET_SEQUENCE_ID), Some(SEQUENCE_ID));
        if let Some(d) = sub(&p, field::PACKET_TRACK_DESCRIPTOR) {
            tracks.push(d);
        }
        if let Some(e) = sub(&p, field::PACKET_TRACK_EVENT) {
            events.push((
                int(&p, field::PACKET_TIMESTAMP).unwrap(),
                int(&e, field::EVENT_TYPE).unwrap(),
                int(&e, field::EVENT_TRACK_UUID).unwrap(),
                text(&e, field::EVENT_NAME),
                int(&e, field::EVENT_FLOW_IDS),
                int(&e, field::EVENT_TERMINATING_FLOW_IDS),
            ));
        }
    }
    (events, tracks)
}

fn render(ts: &[Timeline]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut described = HashSet::new();
    for t in ts {
        socket(&mut out, t, &KernelNames::default(), &mut described);
    }
    out
}

#[test]
fn varints_and_fields_are_encoded_as_protobuf_says() {
    let mut m = Message::default();
    m.uint(1, 300).bytes(2, b"hi").fixed64(47, 1);
    assert_eq!(
        m.0,
        [0x08, 0xac, 0x02, 0x12, 2, b'h', b'i', 0xf9, 0x02, 1, 0, 0, 0, 0, 0, 0, 0]
    );
}

#[test]
fn each_socket_is_a_track_under_its_process_with_a_slice_per_state() {
    let ts = timelines_of(&server_closes());
    let (events, tracks) = read(&render(&ts));

    // Two processes, two sockets, each socket's parent its process.
    assert_eq!(tracks.len(), 4);
    let pids: Vec<u64> = tracks
        .iter()
        .filter_map(|d| sub(d, field::TRACK_PROCESS))
        .map(|p| int(&p, field::PROCESS_PID).unwrap())
        .collect();
    assert_eq!(pids, [100, 200]);
    let server = tracks
        .iter()
        .find(|d| text(d, field::TRACK_NAME).is_some_and(|n| n.contains(":80 →")))
        .unwrap();
    assert_eq!(
        int(server, field::TRACK_PARENT_UUID),
        Some(PROCESS_TRACK + 100)
    );
    let server_track = int(server, field::TRACK_UUID).unwrap();

    let on_server: Vec<_> = events.iter().filter(|e| e.2 == server_track).collect();
    let kinds: Vec<(u64, Option<&str>)> = on_server.iter().map(|e| (e.1, e.3.as_deref())).collect();
    assert_eq!(
        kinds,
        [
            (1, Some("FIN_WAIT1")),
            (2, None),
            (1, Some("FIN_WAIT2")),
            (2, None),
            (
                3,
                Some("CLOSE: handed to a TIME_WAIT mini-socket in FIN_WAIT2")
            ),
        ]
    );
    assert_eq!((on_server[0].0, on_server[1].0), (0, 60_000));

    // The server's FIN flows to the client's CLOSE_WAIT; the client's FIN starts a flow
    // that nothing on this host ends (the orphan's mini-socket got it).
    let fin = on_server[0].4.expect("a flow from the FIN");
    let close_wait = events
        .iter()
        .find(|e| e.3.as_deref() == Some("CLOSE_WAIT"))
        .unwrap();
    assert_eq!(close_wait.5, Some(fin));
    assert!(events.iter().filter(|e| e.5.is_some()).count() == 1);
}

#[test]
fn resets_and_retransmissions_are_instants_and_a_leak_lasts_until_the_end() {
    let mut rst = ev(10, 1, 80, 5000, ESTABLISHED, ESTABLISHED);
    rst.kind = kind::RESET_RECEIVED;
    let mut retransmit = ev(5, 3, 81, 5001, FIN_WAIT1, FIN_WAIT1);
    retransmit.kind = kind::RETRANSMIT;
    retransmit.tcp_flags = teardown_common::tcp_flag::FIN;
    let events = [
        ev(10, 1, 80, 5000, ESTABLISHED, CLOSE),
        rst,
        ev(0, 2, 6000, 443, ESTABLISHED, CLOSE_WAIT),
        ev(1, 3, 81, 5001, ESTABLISHED, FIN_WAIT1),
        retransmit,
    ];
    let ts = timelines_of(&events);
    let (events, tracks) = read(&render(&ts));
    assert_eq!(
        text(&tracks[0], field::TRACK_NAME).as_deref(),
        Some("sockets with no known owner")
    );
    let names: Vec<_> = events
        .iter()
        .filter(|e| e.1 == 3)
        .filter_map(|e| e.3.clone())
        .collect();
    assert!(names.contains(&"RST received".to_string()), "{names:?}");
    assert!(
        names.contains(&"FIN retransmitted in FIN_WAIT1".to_string()),
        "{names:?}"
    );
    // The CLOSE_WAIT still open when tracing stopped lasts until then.
    let begin = events
        .iter()
        .position(|e| e.3.as_deref() == Some("CLOSE_WAIT"))
        .unwrap();
    assert_eq!(events[begin + 1].1, 2);
    assert_eq!(events[begin + 1].0, 1_000_000_010);
}

#[test]
fn the_time_wait_mini_socket_is_a_slice_after_the_close_with_its_reuse_and_end() {
    let mut ts = timelines_of(&server_closes());
    let server = ts.iter_mut().find(|t| t.lport == 80).unwrap();
    let closed = server.transitions.last().unwrap().ts_ns;
    server.mini = Some(crate::reconstruct::timeline::MiniSocket {
        entered_ns: closed,
        substate: TIME_WAIT,
        fin_received_ns: None,
        reused_ns: Some(closed + 5_000),
        end: Some(crate::reconstruct::timeline::MiniSocketEnd {
            ts_ns: closed + 6_000,
            cause: crate::reconstruct::timeline::MiniSocketEndCause::Killed,
        }),
    });
    let (events, _) = read(&render(&ts[..1]));
    let tail: Vec<(u64, u64, Option<&str>)> = events
        .iter()
        .skip_while(|e| e.0 < closed || e.1 != 1)
        .map(|e| (e.0 - closed, e.1, e.3.as_deref()))
        .collect();
    assert_eq!(
        tail,
        [
            (0, 1, Some("TIME_WAIT mini-socket (TIME_WAIT)")),
            (5_000, 3, Some("TIME_WAIT reused by a new connection")),
            (6_000, 3, Some("mini-socket killed")),
            (6_000, 2, None),
        ]
    );
}
