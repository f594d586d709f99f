//! Owners: every close transition attributed to the process that owns the socket, whichever task ran it. Needs root (see `common`).

mod common;

use common::*;

#[test]
fn raw_shows_every_close_transition_with_the_right_owner() {
    let Some(_serial) = privileged("raw_shows_every_close_transition_with_the_right_owner") else {
        return;
    };
    let (ns, port) = (Netns::new(), port());
    let tracer = Tracer::start(&["--raw", "--json", "-P", &port.to_string()]);
    let played = play("server-closes", &ns, port, &["--delay-ms", "100"]).finish();
    let events = tracer.json_until(|got| {
        let closed = |from: &str| got.iter().any(|e| e["from"] == from && e["to"] == "CLOSE");
        closed("FIN_WAIT2") && closed("LAST_ACK")
    });
    let (code, _, _) = tracer.stop(libc::SIGINT);
    assert_eq!(code, 0);

    let of =
        |lport: u16| -> Vec<&Value> { events.iter().filter(|e| e["lport"] == lport).collect() };
    let server: Vec<_> = of(port);
    let client: Vec<_> = events
        .iter()
        .filter(|e| e["rport"] == port && e["lport"] != port)
        .collect();
    let steps = |evs: &[&Value]| -> Vec<(String, String)> {
        evs.iter()
            .filter(|e| e["event"] == "state")
            .map(|e| {
                (
                    e["from"].as_str().unwrap().into(),
                    e["to"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    let server_steps = steps(&server);
    for want in [
        pair("ESTABLISHED", "FIN_WAIT1"),
        pair("FIN_WAIT1", "FIN_WAIT2"),
        pair("FIN_WAIT2", "CLOSE"),
    ] {
        assert!(
            server_steps.contains(&want),
            "server lacks {want:?}: {server_steps:?}"
        );
    }
    let client_steps = steps(&client);
    for want in [
        pair("ESTABLISHED", "CLOSE_WAIT"),
        pair("CLOSE_WAIT", "LAST_ACK"),
        pair("LAST_ACK", "CLOSE"),
    ] {
        assert!(
            client_steps.contains(&want),
            "client lacks {want:?}: {client_steps:?}"
        );
    }
    // Every close transition carries its own socket's owner ...
    for e in server
        .iter()
        .filter(|e| e["event"] == "state" && e["from"] != "SYN_RECV" && e["from"] != "LISTEN")
    {
        assert_eq!(e["pid"], played.server, "server socket event {e}");
    }
    for e in client.iter().filter(|e| e["event"] == "state") {
        assert_eq!(e["pid"], played.client, "client socket event {e}");
    }
    // ... even where the transition ran in the other process (loopback delivers in the sender).
    let ran_elsewhere = client
        .iter()
        .find(|e| e["to"] == "CLOSE_WAIT")
        .expect("CLOSE_WAIT event");
    assert_eq!(ran_elsewhere["task_pid"], played.server, "{ran_elsewhere}");
    assert_eq!(ran_elsewhere["pid"], played.client);
    assert_eq!(ran_elsewhere["owner_source"], "connect");
    let accepted = server.iter().find(|e| e["to"] == "FIN_WAIT1").unwrap();
    assert_eq!(accepted["comm"], "teardown-lab");
}

#[test]
fn raw_text_has_tcpstates_like_columns() {
    let Some(_serial) = privileged("raw_text_has_tcpstates_like_columns") else {
        return;
    };
    let (ns, port) = (Netns::new(), port());
    let tracer = Tracer::start(&["--raw", "-P", &port.to_string()]);
    let played = play("server-closes", &ns, port, &["--delay-ms", "0"]).finish();
    let lines = tracer.lines_until(|got| got.iter().any(|l| l.contains("LAST_ACK    -> CLOSE")));
    let (code, rest, stderr) = tracer.stop(libc::SIGINT);
    assert_eq!(code, 0);
    // Nothing is reconstructed in raw mode: the summary counts what was printed.
    let shown = lines.len() - 1 + rest.len();
    assert!(
        stderr
            .iter()
            .any(|l| l.starts_with(&format!("{shown} events shown, "))),
        "{shown} lines: {stderr:?}"
    );
    assert!(
        lines[0].starts_with("TIME") && lines[0].contains("OLDSTATE"),
        "{}",
        lines[0]
    );
    let close_wait = lines
        .iter()
        .find(|l| l.contains("-> CLOSE_WAIT"))
        .expect("CLOSE_WAIT line");
    assert!(
        close_wait.contains(&format!(" {} ", played.client)),
        "{close_wait}"
    );
    assert!(
        close_wait.contains(&format!("{}/teardown-lab", played.server)),
        "context: {close_wait}"
    );
}

#[test]
fn pid_filter_keeps_only_that_process_and_learns_owners_of_older_sockets() {
    let Some(_serial) = privileged("pid_filter_keeps_only_that_process") else {
        return;
    };
    let (ns, port) = (Netns::new(), port());
    // The connection exists (and the client has closed) before tracing starts.
    let played = play("close-wait-leak", &ns, port, &["--hold-ms", "60000"]);
    wait_for("a socket in CLOSE_WAIT", || {
        sockets_in(&ns, "close-wait") == 1
    });
    let tracer = Tracer::start(&["--json", "-p", &played.server.to_string()]);
    // Once tracing runs (seconds under emulation), the server exits: its exit closes the socket.
    // SAFETY: signalling the lab's server, a process we started.
    unsafe { libc::kill(played.server as i32, libc::SIGTERM) };
    let mut lab = played.child;
    lab.wait().ok();
    let timelines = tracer.json_until(|got| !got.is_empty());
    let (code, rest, _) = tracer.stop(libc::SIGINT);
    assert_eq!(code, 0);
    assert!(rest.is_empty(), "only the server's socket: {rest:?}");
    let t = &timelines[0];
    assert_eq!(t["pid"], played.server);
    assert_eq!(t["first_seen_mid_close"], true);
    assert_eq!(
        transitions(t),
        vec![pair("CLOSE_WAIT", "LAST_ACK"), pair("LAST_ACK", "CLOSE")]
    );
    assert_eq!(t["teardown_ns"], Value::Null, "its start was not seen");
}

#[test]
fn a_full_owner_table_is_said_once_and_counted() {
    let Some(_serial) = privileged("a_full_owner_table_is_said_once_and_counted") else {
        return;
    };
    let (ns, port) = (Netns::new(), port());
    // One slot: the lab's listener takes it, the client's connect finds the table full.
    let tracer = Tracer::start(&["--json", "--max-sockets", "1", "-P", &port.to_string()]);
    play("server-closes", &ns, port, &["--delay-ms", "0"]).finish();
    tracer.json_until(|got| both_ends(got, port));
    let (code, _, stderr) = tracer.stop(libc::SIGINT);
    assert_eq!(code, 0);
    let warnings = stderr
        .iter()
        .filter(|l| l.contains("kernel: owner table full"))
        .count();
    assert!(warnings >= 1, "{stderr:?}");
    assert!(warnings <= 2, "once per CPU at most: {stderr:?}");
    assert!(
        stderr.iter().any(|l| l.contains("owners not recorded")),
        "{stderr:?}"
    );
}
