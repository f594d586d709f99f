//! Every way a connection closes, as the tracer reconstructs it from the real kernel. Needs root (see `common`).

mod common;

use common::*;

#[test]
fn active_and_passive_close_with_200ms_in_close_wait() {
    let Some(_serial) = privileged("active_and_passive_close_with_200ms_in_close_wait") else {
        return;
    };
    let (played, timelines, port) = traced("server-closes", &["--delay-ms", "200"]);
    let (server, client) = ends(&timelines, port);

    assert_eq!(server["role"], "active");
    assert_eq!(server["pid"], played.server);
    assert_eq!(server["owner_source"], "accept");
    assert_eq!(transitions(server)[0], pair("ESTABLISHED", "FIN_WAIT1"));
    assert_eq!(server["complete"], true);
    // The closed server is an orphan. Usually the kernel hands it to a FIN_WAIT2 mini-socket
    // as soon as its FIN is acknowledged, and the client's FIN 200 ms later reaches only the
    // mini-socket; when timing keeps it a full socket (tcp_rcv_state_process arms the FIN
    // timer instead, e.g. while the socket is still owned), that FIN is seen arriving.
    let handed_over = last_ts(server, "FIN_WAIT2", "CLOSE");
    let client_fin = last_ts(client, "CLOSE_WAIT", "LAST_ACK");
    let fin_in = &server["waves"][3];
    assert_eq!(fin_in["what"], "fin_received", "{}", server["waves"]);
    match server["time_wait"].as_str() {
        Some("FIN_WAIT2") => {
            // Observed where fentry shows the mini-socket taking it in (tests/time_wait.rs).
            let evidence = if server["time_wait_socket"].is_null() {
                "inferred"
            } else {
                "observed"
            };
            assert_eq!(fin_in["evidence"], evidence, "{}", server["waves"]);
            assert!(
                handed_over + 100_000_000 < client_fin,
                "handed over {handed_over} before the client's FIN {client_fin}"
            );
        }
        Some("TIME_WAIT") => {
            assert_eq!(fin_in["evidence"], "observed", "{}", server["waves"]);
            assert!(
                handed_over.abs_diff(client_fin) < 5_000_000,
                "FIN_WAIT2 ends with the client's FIN: {handed_over} vs {client_fin}"
            );
        }
        other => panic!("time_wait {other:?}: {server}"),
    }

    assert_eq!(client["role"], "passive");
    assert_eq!(client["pid"], played.client);
    let close_wait = ms(&client["durations_ns"]["CLOSE_WAIT"]);
    assert!(
        (195.0..700.0).contains(&close_wait),
        "CLOSE_WAIT {close_wait} ms"
    );
    assert!(ms(&client["teardown_ns"]) >= close_wait);
    assert_eq!(client["waves"][0]["what"], "fin_received");
    assert_eq!(client["waves"][0]["evidence"], "observed");

    assert_eq!(server["peer"]["id"], client["id"]);
    assert_eq!(client["peer"]["id"], server["id"]);
    assert_eq!(client["peer"]["pid"], played.server);
}

#[test]
fn half_close_waits_200ms_in_fin_wait2_for_the_real_fin() {
    let Some(_serial) = privileged("half_close_waits_200ms_in_fin_wait2_for_the_real_fin") else {
        return;
    };
    let (played, timelines, port) = traced("half-close", &["--delay-ms", "200"]);
    let (server, client) = ends(&timelines, port);
    assert_eq!(server["role"], "active");
    assert_eq!(server["half_close"], true);
    assert_eq!(server["pid"], played.server);
    // The client closes 200 ms after it read the FIN; the server waits in FIN_WAIT1 until
    // its FIN is acknowledged (delayed ACK: longer on a busy host), then in FIN_WAIT2 until
    // the client's FIN, which is what ends FIN_WAIT2.
    let fin_wait1 = ms(&server["durations_ns"]["FIN_WAIT1"]);
    let fin_wait2 = ms(&server["durations_ns"]["FIN_WAIT2"]);
    assert!(
        (199.0..700.0).contains(&(fin_wait1 + fin_wait2)),
        "FIN_WAIT1 {fin_wait1} + FIN_WAIT2 {fin_wait2} ms"
    );
    assert!(fin_wait2 > 0.0);
    // Ends with the peer's FIN: after the client queued it, and before the client took
    // in the server's ACK of it (the server sends that ACK as it leaves FIN_WAIT2). By
    // causes, not by a time bound, which emulated kernels are too slow for.
    let client_fin = last_ts(client, "CLOSE_WAIT", "LAST_ACK");
    let client_acked = last_ts(client, "LAST_ACK", "CLOSE");
    let fin_wait2_end = last_ts(server, "FIN_WAIT2", "CLOSE");
    assert!(
        client_fin <= fin_wait2_end && fin_wait2_end <= client_acked,
        "FIN_WAIT2 ends with the peer's FIN: {fin_wait2_end}, the FIN queued at \
         {client_fin}, its ACK taken in at {client_acked}"
    );
    assert_eq!(server["time_wait"], "TIME_WAIT");
    let fin_in = &server["waves"][3];
    assert_eq!(
        (fin_in["what"].as_str(), fin_in["evidence"].as_str()),
        (Some("fin_received"), Some("observed"))
    );
    // The FIN_WAIT2 -> CLOSE ran in the client's process, the owner stays the server.
    let last = server["transitions"].as_array().unwrap().last().unwrap();
    assert_eq!(last["task_pid"], played.client);
    assert_eq!(client["role"], "passive");
}

#[test]
fn simultaneous_close_goes_through_closing_on_both_sides() {
    let Some(_serial) = privileged("simultaneous_close_goes_through_closing_on_both_sides") else {
        return;
    };
    let (_, timelines, port) = traced("simultaneous", &[]);
    let (server, client) = ends(&timelines, port);
    // Both sent FIN before receiving one. After the retransmissions, the FINs usually cross
    // and both sides go through CLOSING; if one arrives first, its ACK moves that side on
    // to FIN_WAIT2 instead, and only the other sees CLOSING. Both are real TCP.
    for t in [server, client] {
        assert_eq!(transitions(t)[0], pair("ESTABLISHED", "FIN_WAIT1"), "{t}");
        assert_eq!(t["time_wait"], "TIME_WAIT", "{t}");
    }
    let crossing = [server, client]
        .iter()
        .filter(|t| transitions(t).contains(&pair("FIN_WAIT1", "CLOSING")))
        .inspect(|t| assert_eq!(t["role"], "simultaneous", "{t}"))
        .count();
    assert!(crossing >= 1, "{server}\n{client}");
}

#[test]
fn resets_are_seen_from_both_sides_with_the_reason() {
    let Some(_serial) = privileged("resets_are_seen_from_both_sides_with_the_reason") else {
        return;
    };
    // The kernel gives a sent reset's reason since Linux 6.10, as an argument of the
    // tracepoint; before, the tracer must say that it has none.
    let send_reset = "/sys/kernel/tracing/events/tcp/tcp_send_reset/format";
    let mut has_reason = true;
    for pattern in ["reset", "reset-unread"] {
        let (played, timelines, port) = traced(pattern, &[]);
        let format = std::fs::read_to_string(send_reset).expect("the tracer mounted tracefs");
        has_reason = format.contains(" reason;");
        let (server, client) = ends(&timelines, port);
        assert_eq!(server["role"], "reset", "{pattern}: {server}");
        assert_eq!(server["pid"], played.server);
        assert_eq!(
            transitions(server),
            vec![pair("ESTABLISHED", "CLOSE")],
            "{pattern}"
        );
        assert_eq!(
            server["resets"][0]["direction"], "sent",
            "{pattern}: {server}"
        );
        assert_eq!(
            server["resets"][0]["reason"].is_string(),
            has_reason,
            "{pattern}: {server}"
        );
        assert_eq!(client["role"], "reset", "{pattern}: {client}");
        assert_eq!(
            client["resets"][0]["direction"], "received",
            "{pattern}: {client}"
        );
        assert_eq!(client["pid"], played.client);
    }
    if !has_reason {
        let path = std::env::temp_dir().join(format!("td-no-reason-{}.json", port()));
        let out = run(Command::new(TRACE).args(["-d", "1", "-o", path.to_str().unwrap()]));
        let said = String::from_utf8_lossy(&out.stderr);
        let warned = said
            .lines()
            .filter(|l| l.contains("reset reasons are unavailable"));
        assert_eq!(warned.count(), 1, "{said}");
        let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        std::fs::remove_file(&path).ok();
        let degraded = doc["degraded"].to_string();
        assert!(degraded.contains("reset reasons are unavailable"), "{doc}");
    }
}

#[test]
fn a_lost_fin_shows_its_retransmission_time_in_fin_wait1() {
    let Some(_serial) = privileged("a_lost_fin_shows_its_retransmission_time_in_fin_wait1") else {
        return;
    };
    let (_, timelines, port) = traced("lost-fin", &[]);
    let (server, _) = ends(&timelines, port);
    let resent = &server["retransmits"][0];
    assert_eq!(
        (resent["state"].as_str(), resent["fin"].as_bool()),
        (Some("FIN_WAIT1"), Some(true)),
        "{server}"
    );
    let fin_wait1 = ms(&server["durations_ns"]["FIN_WAIT1"]);
    assert!(
        fin_wait1 >= 150.0,
        "the FIN was dropped, then retransmitted: {fin_wait1} ms"
    );
}

#[test]
fn exchange_shows_both_ends_as_one_sequence() {
    let Some(_serial) = privileged("exchange_shows_both_ends_as_one_sequence") else {
        return;
    };
    let (ns, port) = (Netns::new(), port());
    let tracer = Tracer::start(&["-x", "-P", &port.to_string()]);
    play("half-close", &ns, port, &["--delay-ms", "50"]).finish();
    let lines = tracer.lines_until(|got| got.iter().filter(|l| l.contains(" -> ")).count() >= 6);
    tracer.stop(libc::SIGINT);
    let head = lines
        .iter()
        .position(|l| l.starts_with("== "))
        .expect("an exchange block");
    let block = &lines[head..];
    assert!(block[0].contains("closed first"), "{block:#?}");
    let meanings: Vec<&str> = block[1..7]
        .iter()
        // Without the sequence numbers that follow in brackets.
        .map(|l| l.rsplit("  ").next().unwrap().split(" [").next().unwrap())
        .collect();
    assert_eq!(
        meanings,
        [
            "queues FIN (application closed)",
            "receives FIN",
            "receives the ACK of its FIN",
            "queues FIN (application closed)",
            "receives FIN, sends the last ACK: TIME_WAIT",
            "receives the last ACK: closed",
        ],
        "{block:#?}"
    );
}

#[test]
fn ipv6_connections_are_traced_and_filtered_by_family() {
    let Some(_serial) = privileged("ipv6_connections_are_traced_and_filtered_by_family") else {
        return;
    };
    let (ns, port) = (Netns::new(), port());
    let tracer = Tracer::start(&["--json", "-6", "-P", &port.to_string()]);
    play("server-closes", &ns, port, &["--delay-ms", "0"]).finish(); // IPv4: filtered out
    let played = play("server-closes", &ns, port, &["--delay-ms", "0", "--ipv6"]).finish();
    let timelines = tracer.json_until(|got| both_ends(got, port));
    let (code, rest, _) = tracer.stop(libc::SIGINT);
    assert_eq!(code, 0);
    assert!(rest.is_empty(), "{rest:?}");
    let (server, client) = ends(&timelines, port);
    for t in [server, client] {
        assert_eq!(t["family"], "ipv6", "{t}");
        assert_eq!(
            (t["laddr"].as_str(), t["raddr"].as_str()),
            (Some("::1"), Some("::1")),
            "{t}"
        );
    }
    assert_eq!(server["role"], "active");
    assert_eq!(server["pid"], played.server);
    assert_eq!(client["role"], "passive");
    assert_eq!(client["pid"], played.client);
    assert_eq!(server["peer"]["id"], client["id"]);
    assert_eq!(
        timelines.len(),
        2,
        "only the IPv6 connection: {timelines:?}"
    );
}
