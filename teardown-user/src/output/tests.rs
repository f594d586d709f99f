use teardown_common::{kind, owner_source, sock_flags, state::*, Event, KernelNames};

use super::{json, text, DocumentWriter, Summary};
use crate::{
    filter::Filter,
    reconstruct::{Reconstructor, Timeline},
    testing::ev,
};

/// Server (port 80, pid 100) closes first and lets go of its socket, so it is handed to a
/// TIME_WAIT mini-socket; the client (5000, pid 200) closes 200 ms later.
pub(super) fn server_closes() -> Vec<Event> {
    let owned = |mut e: Event, pid: u32, comm: &[u8]| {
        e.owner_pid = pid;
        e.owner_source = owner_source::ACCEPT;
        e.owner_comm[..comm.len()].copy_from_slice(comm);
        e
    };
    let mut events = vec![
        owned(ev(0, 1, 80, 5000, ESTABLISHED, FIN_WAIT1), 100, b"server"),
        owned(
            ev(30_000, 2, 5000, 80, ESTABLISHED, CLOSE_WAIT),
            200,
            b"client",
        ),
        ev(60_000, 1, 80, 5000, FIN_WAIT1, FIN_WAIT2),
        ev(62_000, 1, 80, 5000, FIN_WAIT2, CLOSE),
        ev(200_000_000, 2, 5000, 80, CLOSE_WAIT, LAST_ACK),
        ev(200_050_000, 2, 5000, 80, LAST_ACK, CLOSE),
    ];
    events[1].sock_flags = sock_flags::FIN_RECEIVED;
    events[3].sock_flags = sock_flags::ORPHAN;
    events
}

/// The timelines of `events`, in the order they come out; tracing stops a second after the
/// last event.
pub(super) fn timelines_of(events: &[Event]) -> Vec<Timeline> {
    let mut r = Reconstructor::new(Filter::default());
    events.iter().for_each(|e| r.push(e));
    let mut out = Vec::new();
    let end = events.iter().map(|e| e.ts_ns).max().unwrap_or(0) + 1_000_000_000;
    r.finish(end, &mut |t| out.push(t));
    out
}

fn names() -> KernelNames {
    KernelNames {
        reset_reasons: vec!["NOT_SPECIFIED".into(), "NO_SOCKET".into()],
    }
}

fn nasty_comm() -> [u8; 16] {
    let mut comm = [0u8; 16];
    comm[..9].copy_from_slice(b"a\"b\\c\n\xff\x01z");
    comm
}

/// A completed active close and a leaked passive socket whose owner has a hostile name.
fn timelines() -> Vec<Timeline> {
    let mut events = [
        ev(10, 1, 80, 5000, ESTABLISHED, FIN_WAIT1),
        ev(20, 1, 80, 5000, FIN_WAIT1, FIN_WAIT2),
        ev(30, 1, 80, 5000, FIN_WAIT2, CLOSE),
        ev(40, 2, 6000, 443, ESTABLISHED, CLOSE_WAIT),
    ];
    events[2].sock_flags = sock_flags::FIN_RECEIVED;
    events[0].seq_flags = teardown_common::seq_flags::KNOWN;
    (events[0].snd_una, events[0].snd_nxt) = (100, 150);
    (events[0].write_seq, events[0].rcv_nxt) = (u32::MAX, 7);
    events[3].owner_pid = 42;
    events[3].owner_source = owner_source::ACCEPT;
    events[3].owner_comm = nasty_comm();
    events[3].task_comm = nasty_comm();
    let mut r = Reconstructor::new(Filter::default());
    events.iter().for_each(|e| r.push(e));
    let mut out = Vec::new();
    // Tracing stops 2 s after the last event: the CLOSE_WAIT is still there.
    r.finish(2_000_000_040, &mut |t| out.push(t));
    out
}

#[test]
fn timeline_json_has_the_contract_fields_and_survives_any_comm() {
    for t in timelines() {
        let mut line = Vec::new();
        json::timeline(&mut line, &t, &names());
        assert!(!line.contains(&b'\n'), "NDJSON stays one line: {line:?}");
        let v: serde_json::Value = serde_json::from_slice(&line).expect("valid JSON");
        for field in [
            "laddr",
            "lport",
            "raddr",
            "rport",
            "family",
            "pid",
            "comm",
            "role",
            "transitions",
            "durations_ns",
            "teardown_ns",
            "complete",
        ] {
            assert!(v.get(field).is_some(), "missing {field} in {v}");
        }
        assert_eq!(v["family"], "ipv4");
        assert_eq!(v["laddr"], "127.0.0.1");
    }
}

#[test]
fn json_values_match_the_timeline() {
    let all = timelines();
    let mut line = Vec::new();
    json::timeline(&mut line, &all[0], &names());
    let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(v["role"], "active");
    assert_eq!(v["complete"], true);
    assert_eq!(v["teardown_ns"], 20);
    assert_eq!(v["durations_ns"]["FIN_WAIT1"], 10);
    assert_eq!(v["transitions"][0]["from"], "ESTABLISHED");
    assert_eq!(v["transitions"][2]["to"], "CLOSE");
    assert_eq!(v["time_wait"], "TIME_WAIT");
    assert_eq!(v["waves"][2]["evidence"], "observed");
    assert_eq!(v["pid"], serde_json::Value::Null);
    assert_eq!(v["still"], serde_json::Value::Null);

    line.clear();
    json::timeline(&mut line, &all[1], &names());
    let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(v["comm"], "a\"b\\c\n\u{fffd}\u{1}z");
    assert_eq!(v["pid"], 42);
    assert_eq!(v["complete"], false);
    assert_eq!(v["teardown_ns"], serde_json::Value::Null);
    assert_eq!(v["role"], "passive");
    assert_eq!(
        v["still"],
        serde_json::json!({"state": "CLOSE_WAIT", "since_ns": 40, "for_ns": 2_000_000_000u64, "in_kernel": null})
    );
}

#[test]
fn raw_events_render_as_json_with_reset_reasons() {
    let mut e = ev(5, 7, 80, 9, ESTABLISHED, ESTABLISHED);
    e.kind = kind::RESET_SENT;
    e.reason = 1;
    e.task_comm = nasty_comm();
    let mut line = Vec::new();
    json::raw_event(&mut line, &e, &names());
    let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(v["event"], "reset_sent");
    assert_eq!(v["reason"], "NO_SOCKET");
    assert_eq!(v["pid"], serde_json::Value::Null);
}

#[test]
fn text_lines_are_one_line_and_escape_names() {
    let clock = crate::clock::Clock {
        realtime_offset_ns: 3_600_000_000_000,
    };
    let all = timelines();
    let line = text::timeline(&all[1], &clock, &names());
    assert!(!line.contains('\n'));
    assert!(line.contains("a\"b\\c\\x0a\\xff\\x01z"), "{line}");
    assert!(line.contains("still CLOSE_WAIT for 2000.000"), "{line}");
    assert!(text::timeline(&all[0], &clock, &names()).starts_with("01:00:00.000 active"));

    let mut raw = text::RawPrinter::default();
    let first = raw.line(&ev(0, 1, 80, 9, ESTABLISHED, FIN_WAIT1), &clock, &names());
    let second = raw.line(
        &ev(2_500_000, 1, 80, 9, FIN_WAIT1, FIN_WAIT2),
        &clock,
        &names(),
    );
    assert!(first.contains("ESTABLISHED -> FIN_WAIT1"), "{first}");
    assert!(
        second.contains("2.500"),
        "time spent in FIN_WAIT1: {second}"
    );
}

#[test]
fn summary_counts_completed_teardowns_and_sockets_still_closing_apart() {
    let mut s = Summary::default();
    timelines().iter().for_each(|t| s.count(t));
    assert_eq!(s.completed(), 1);
    assert_eq!(s.still_closing(), 1);
    assert!(
        s.line().starts_with(
            "1 teardowns (active 1, passive 0, simultaneous 0, reset 0, unknown 0), \
             1 still closing (CLOSE_WAIT 1), "
        ),
        "a CLOSE_WAIT leak is no teardown: {}",
        s.line()
    );
}

#[test]
fn raw_mode_counts_events_not_teardowns() {
    let s = Summary {
        shown: Some(7),
        events: 10,
        ..Default::default()
    };
    assert_eq!(s.line(), "7 events shown, 10 events seen, 0 lost events");
}

#[test]
fn the_document_appears_only_when_finished() {
    let dir = std::env::temp_dir().join(format!("teardown-doc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("out.json");
    let mut doc = DocumentWriter::create(&path, b"\"version\":\"t\"").unwrap();
    for t in timelines() {
        let mut line = Vec::new();
        json::timeline(&mut line, &t, &names());
        doc.timeline(&line).unwrap();
    }
    assert!(!path.exists(), "nothing at the target before finish");
    doc.finish(b"\"lost_events\":0").unwrap();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(v["timelines"].as_array().unwrap().len(), 2);
    assert_eq!(v["lost_events"], 0);

    let empty = DocumentWriter::create(&dir.join("empty.json"), b"\"version\":\"t\"").unwrap();
    empty.finish(b"\"lost_events\":3").unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("empty.json")).unwrap()).unwrap();
    assert_eq!(v["timelines"], serde_json::json!([]));

    drop(DocumentWriter::create(&dir.join("dropped.json"), b"\"v\":1").unwrap());
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        2,
        "no temporary file left behind"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unwritable_path_fails_at_once() {
    let err = DocumentWriter::create(
        std::path::Path::new("/nonexistent/dir/out.json"),
        b"\"v\":1",
    )
    .err()
    .expect("fails");
    assert!(
        err.to_string()
            .starts_with("cannot write /nonexistent/dir/out.json"),
        "{err}"
    );
    assert!(
        DocumentWriter::create(&std::env::temp_dir(), b"\"v\":1").is_err(),
        "a directory"
    );
}

/// Every field the schema requires is emitted, and nothing is emitted that it does not
/// describe (it forbids additional properties).
#[test]
fn timelines_match_the_json_schema_fields() {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../../schema/timeline.schema.json")).unwrap();
    let keys = |v: &serde_json::Value| -> Vec<String> {
        v.as_object().unwrap().keys().cloned().collect::<Vec<_>>()
    };
    let required: Vec<String> = serde_json::from_value(schema["required"].clone()).unwrap();
    let mut declared = keys(&schema["properties"]);
    declared.sort();
    let mut required_sorted = required.clone();
    required_sorted.sort();
    assert_eq!(declared, required_sorted, "all properties are required");
    let transition_fields = keys(&schema["properties"]["transitions"]["items"]["properties"]);
    let mut wave_fields = keys(&schema["properties"]["waves"]["items"]["properties"]);
    wave_fields.sort();
    let mut seq_fields = keys(&schema["$defs"]["seq"]["oneOf"][1]["properties"]);
    seq_fields.sort();
    for t in timelines() {
        let mut line = Vec::new();
        json::timeline(&mut line, &t, &names());
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        let mut emitted = keys(&v);
        emitted.sort();
        assert_eq!(emitted, required_sorted);
        for tr in v["transitions"].as_array().unwrap() {
            let mut got = keys(tr);
            got.sort();
            let mut want = transition_fields.clone();
            want.sort();
            assert_eq!(got, want);
            if !tr["seq"].is_null() {
                let mut got = keys(&tr["seq"]);
                got.sort();
                assert_eq!(got, seq_fields);
            }
        }
        for w in v["waves"].as_array().unwrap() {
            let mut got = keys(w);
            got.sort();
            assert_eq!(got, wave_fields);
        }
    }
}

#[test]
fn numbers_and_addresses_are_written_by_hand_correctly() {
    for v in [0, 7, 10, 65535, u64::MAX] {
        let mut out = Vec::new();
        json::num(&mut out, v);
        assert_eq!(out, v.to_string().into_bytes());
    }
    for v in [0, 1, 0xf, 0x10, 0xffff_8881_02e1_ae40, u64::MAX] {
        let mut out = Vec::new();
        json::hex(&mut out, v);
        assert_eq!(out, format!("\"{v:#x}\"").into_bytes());
    }
}

#[test]
fn an_exchange_merges_both_ends_in_time_with_their_meaning() {
    let out = timelines_of(&server_closes());
    let clock = crate::clock::Clock::default();
    let mut printer = text::ExchangePrinter::default();
    assert_eq!(
        printer.timeline(&out[0], &clock, &names()),
        None,
        "waits for the other end"
    );
    let block = printer
        .timeline(&out[1], &clock, &names())
        .expect("both ends seen");
    let lines: Vec<&str> = block.lines().collect();
    assert!(lines[0].contains("#1 closed first"), "{block}");
    assert_eq!(lines.len(), 7, "{block}");
    assert!(
        lines[1].contains("127.0.0.1:80") && lines[1].ends_with("queues FIN (application closed)"),
        "{block}"
    );
    assert!(
        lines[2].contains("127.0.0.1:5000") && lines[2].ends_with("receives FIN"),
        "{block}"
    );
    assert!(lines[4].ends_with("waits for the FIN"), "{block}");
    assert!(
        lines[5].contains("+200.000 ms") && lines[5].ends_with("queues FIN (application closed)"),
        "{block}"
    );
    assert!(
        lines[6].ends_with("receives the last ACK: closed"),
        "{block}"
    );
}

/// A crossing close where the first retransmitted FIN to land is acked at once: the end
/// that closed second takes the active path (FIN_WAIT2), the other goes through CLOSING.
/// The header names who queued a FIN first, not who got the `active` role.
#[test]
fn a_crossing_close_names_who_queued_its_fin_first() {
    let events = vec![
        ev(0, 5, 80, 5000, ESTABLISHED, FIN_WAIT1),
        ev(62_000, 6, 5000, 80, ESTABLISHED, FIN_WAIT1),
        ev(208_000_000, 5, 80, 5000, FIN_WAIT1, CLOSING),
        ev(208_010_000, 6, 5000, 80, FIN_WAIT1, FIN_WAIT2),
        ev(208_020_000, 6, 5000, 80, FIN_WAIT2, CLOSE),
        ev(208_030_000, 5, 80, 5000, CLOSING, CLOSE),
    ];
    let out = timelines_of(&events);
    let clock = crate::clock::Clock::default();
    let mut printer = text::ExchangePrinter::default();
    let block = out
        .iter()
        .find_map(|t| printer.timeline(t, &clock, &names()))
        .expect("both ends seen");
    let header = block.lines().next().unwrap();
    let first = out.iter().find(|t| t.lport == 80).unwrap().id;
    assert!(
        header.contains(&format!("both closed at once, #{first} first")),
        "{block}"
    );
}

/// Sequence state for an event: `una`, `nxt`, `write`, `rcv` and ACK bits.
fn numbered(
    mut e: teardown_common::Event,
    (una, nxt, write, rcv): (u32, u32, u32, u32),
    ack: u8,
) -> teardown_common::Event {
    (e.snd_una, e.snd_nxt, e.write_seq, e.rcv_nxt) = (una, nxt, write, rcv);
    e.seq_flags = teardown_common::seq_flags::KNOWN | ack;
    e
}

#[test]
fn text_tells_the_drain_the_sequence_numbers_and_the_merged_ack() {
    use teardown_common::seq_flags::ACK_SCHEDULED;
    const MS: u64 = 1_000_000;
    // The server (80) closes with 1000 bytes unsent; the client's FIN carries its ACK.
    let mut events = [
        numbered(
            ev(0, 1, 80, 5000, ESTABLISHED, FIN_WAIT1),
            (100, 100, 1100, 7),
            0,
        ),
        numbered(
            ev(3 * MS, 2, 5000, 80, ESTABLISHED, CLOSE_WAIT),
            (7, 7, 7, 1101),
            ACK_SCHEDULED,
        ),
        numbered(
            ev(3 * MS + 10, 2, 5000, 80, CLOSE_WAIT, LAST_ACK),
            (7, 7, 7, 1101),
            ACK_SCHEDULED,
        ),
        numbered(
            ev(4 * MS, 1, 80, 5000, FIN_WAIT1, FIN_WAIT2),
            (1101, 1101, 1101, 7),
            0,
        ),
        numbered(
            ev(4 * MS + 5, 1, 80, 5000, FIN_WAIT2, CLOSE),
            (1101, 1101, 1101, 8),
            0,
        ),
        numbered(
            ev(4 * MS + 9, 2, 5000, 80, LAST_ACK, CLOSE),
            (8, 8, 8, 1101),
            0,
        ),
    ];
    events[4].sock_flags = sock_flags::FIN_RECEIVED;
    let mut r = Reconstructor::new(Filter::default());
    events.iter().for_each(|e| r.push(e));
    let mut out = Vec::new();
    r.finish(5 * MS, &mut |t| out.push(t));
    let clock = crate::clock::Clock::default();
    let server = text::timeline(&out[0], &clock, &names());
    assert!(
        server.contains("FIN_WAIT1 4.000 (draining 1000 B 3.000, then the ACK 1.000)"),
        "{server}"
    );
    assert!(
        server.contains("[FIN 1100 ACK 1101; peer FIN 7 ACK 8]"),
        "{server}"
    );
    assert!(
        server.contains("[at close: 1000 B unsent, 0 B unacked]"),
        "{server}"
    );
    let client = text::timeline(&out[1], &clock, &names());
    assert!(client.contains("[ACK merged into FIN]"), "{client}");
    let block = text::exchange(&out[0], &out[1], &clock, &names());
    assert!(
        block.contains("sends FIN with the ACK of the peer's FIN, still delayed (merged) [FIN 7]"),
        "{block}"
    );
    assert!(block.contains("[FIN 1100 behind 1000 B unsent]"), "{block}");
}

#[test]
fn a_document_never_destroys_what_it_is_given() {
    use std::os::unix::fs::{symlink, FileTypeExt};
    let dir = std::env::temp_dir().join(format!("teardown-safe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let finish = |path: &std::path::Path| {
        let mut doc = DocumentWriter::create(path, b"\"v\":1").unwrap();
        doc.timeline(b"{}").unwrap();
        doc.finish(b"\"lost_events\":0").unwrap();
    };
    // An existing file keeps its content until the document is complete.
    let file = dir.join("old.json");
    std::fs::write(&file, b"previous").unwrap();
    let doc = DocumentWriter::create(&file, b"\"v\":1").unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"previous");
    drop(doc);
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"previous",
        "an unfinished document"
    );
    // A symlink's target is written; the link stays a link.
    let link = dir.join("link.json");
    symlink(&file, &link).unwrap();
    finish(&link);
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(v["timelines"].as_array().unwrap().len(), 1);
    // A device is written into, not replaced by a regular file.
    finish(std::path::Path::new("/dev/null"));
    assert!(!std::fs::metadata("/dev/null").unwrap().is_file());
    // A FIFO is written into: what its reader gets is the whole document.
    let fifo = dir.join("fifo");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    finish(&fifo);
    let got: serde_json::Value = serde_json::from_slice(&reader.join().unwrap()).unwrap();
    assert_eq!(got["lost_events"], 0);
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A replaced output keeps the mode and owner of the file it replaces (a private file
/// stays private), and a temporary file that cannot be made beside it is named.
#[test]
fn a_replaced_document_keeps_its_mode_and_owner() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = std::env::temp_dir().join(format!("teardown-mode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Root (as CI runs) can give the file to another user; anyone else keeps their own.
    // SAFETY: getters of this process's ids.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let (uid, gid) = if uid == 0 { (65534, 65534) } else { (uid, gid) };
    for mode in [0o600, 0o640, 0o444] {
        let file = dir.join(format!("out-{mode:o}.json"));
        std::fs::write(&file, b"previous").unwrap();
        std::os::unix::fs::chown(&file, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let mut doc = DocumentWriter::create(&file, b"\"v\":1").unwrap();
        doc.timeline(b"{}").unwrap();
        doc.finish(b"\"lost_events\":0").unwrap();
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(meta.mode() & 0o7777, mode, "{}", file.display());
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{}", file.display());
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(v["lost_events"], 0);
    }
    std::fs::remove_dir_all(&dir).unwrap();
    // /proc/version exists, but nothing can be created beside it.
    let error = DocumentWriter::create(std::path::Path::new("/proc/version"), b"")
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("/proc/.version.") && error.contains("to replace it"),
        "{error}"
    );
}

/// The line's integer writers print what `core::fmt` printed: every width of the
/// millisecond fraction, rounding at the half microsecond, IPv4 and IPv6 endpoints, the
/// time of day across an hour.
#[test]
fn the_lines_numbers_are_written_as_core_fmt_wrote_them() {
    for (ns, want) in [
        (0, "0.000"),
        (499, "0.000"),
        (500, "0.001"),
        (9_000, "0.009"),
        (54_000, "0.054"),
        (309_946, "0.310"),
        (1_999_999_500, "2000.000"),
    ] {
        assert_eq!(text::ms(ns), want);
    }
    let v4 = "10.0.255.1".parse().unwrap();
    assert_eq!(text::endpoint(v4, 80), "10.0.255.1:80");
    let v6 = "::ffff:10.0.0.1".parse().unwrap();
    assert_eq!(text::endpoint(v6, 65535), "[::ffff:10.0.0.1]:65535");
    let clock = crate::clock::Clock {
        realtime_offset_ns: 3_599_999_000_000,
    };
    assert_eq!(clock.time_of_day(0), "00:59:59.999");
    assert_eq!(clock.time_of_day(1_000_000), "01:00:00.000");
}
