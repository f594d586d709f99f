//! The TIME_WAIT mini-socket, seen through fentry/fexit where the kernel allows them (the
//! `vm-test` guests), and the tracepoint-only output unchanged where it refuses them (this
//! project's own machine). Needs root (see `common`).

mod common;

use common::*;

/// The warning the tracer prints, once, where fentry/fexit are refused.
const REFUSED: &str = "TIME_WAIT mini-sockets are not observed";

/// Whether this tracer observes mini-sockets; where it does not, it said so exactly once.
fn observes_mini_sockets(tracer: &Tracer) -> bool {
    let said = tracer
        .started_with
        .iter()
        .filter(|l| l.contains(REFUSED))
        .count();
    assert!(said <= 1, "{:?}", tracer.started_with);
    said == 0
}

#[test]
fn the_clients_fin_reaching_the_servers_mini_socket_is_observed() {
    let Some(_serial) = privileged("the_clients_fin_reaching_the_servers_mini_socket_is_observed")
    else {
        return;
    };
    let (ns, port) = (Netns::new(), port());
    let tracer = Tracer::start(&["--json", "-P", &port.to_string()]);
    let observed = observes_mini_sockets(&tracer);
    play("server-closes", &ns, port, &["--delay-ms", "200"]).finish();
    let timelines = tracer.json_until(|got| both_ends(got, port));
    let (server, client) = ends(&timelines, port);
    let client_fin = last_ts(client, "CLOSE_WAIT", "LAST_ACK");
    let fin_in = &server["waves"][3];
    assert_eq!(fin_in["what"], "fin_received", "{}", server["waves"]);
    let mini = &server["time_wait_socket"];
    if !observed {
        assert!(mini.is_null(), "{server}");
        // As before the hooks: the mini-socket's FIN comes from the peer on this host.
        if server["time_wait"] == "FIN_WAIT2" {
            assert_eq!(fin_in["evidence"], "inferred", "{}", server["waves"]);
        }
        return;
    }
    // The socket entered the mini-socket as it left: after the ACK of its FIN, before its
    // CLOSE. Bounded by causes, not by a gap: anything that delays the CLOSE after the
    // hand-over (preemption on a preemptible kernel; an emulated guest's stalled vCPU)
    // would break a gap of any size.
    let fin_acked = last_ts(server, "FIN_WAIT1", "FIN_WAIT2");
    let closed = last_ts(server, "FIN_WAIT2", "CLOSE");
    let entered = mini["entered_ns"].as_u64().unwrap();
    assert!(fin_acked <= entered && entered <= closed, "{server}");
    match server["time_wait"].as_str() {
        // The orphan was handed over before the client's FIN: the mini-socket took it in.
        Some("FIN_WAIT2") => {
            assert_eq!(mini["substate"], "FIN_WAIT2", "{server}");
            let arrived = mini["fin_received_ns"].as_u64().expect("FIN seen arriving");
            // Bounded by its causes: after the client queued its FIN, before the client
            // took in the mini-socket's ACK of it.
            let client_acked = last_ts(client, "LAST_ACK", "CLOSE");
            assert!(
                client_fin <= arrived && arrived <= client_acked,
                "FIN at the mini-socket {arrived}, client's FIN {client_fin}, ACKed {client_acked}"
            );
            assert_eq!(fin_in["evidence"], "observed", "{}", server["waves"]);
            assert_eq!(fin_in["ts_ns"], arrived);
            assert_eq!(
                fin_in["basis"],
                "reached the TIME_WAIT mini-socket in FIN_WAIT2 substate"
            );
        }
        // Timing kept it a full socket until the FIN: handed over straight into TIME_WAIT.
        Some("TIME_WAIT") => {
            assert_eq!(mini["substate"], "TIME_WAIT", "{server}");
            assert_eq!(fin_in["evidence"], "observed", "{}", server["waves"]);
        }
        other => panic!("time_wait {other:?}: {server}"),
    }
    let (code, _, stderr) = tracer.stop(libc::SIGINT);
    assert_eq!(code, 0, "{stderr:?}");
}

#[test]
fn time_wait_is_followed_until_its_namespace_kills_it() {
    let Some(_serial) = privileged("time_wait_is_followed_until_its_namespace_kills_it") else {
        return;
    };
    let (ns, port) = (Netns::new(), port());
    let tracer = Tracer::start(&["--json", "--time-wait", "-P", &port.to_string()]);
    let observed = observes_mini_sockets(&tracer);
    // The server shuts down sending and keeps its socket: the client's FIN reaches the full
    // socket, which enters TIME_WAIT proper (not an orphan's FIN_WAIT2 mini-socket).
    play("half-close", &ns, port, &["--delay-ms", "50"]).finish();
    let server_is_out = |got: &[Value]| timeline_of(got, port).is_some();
    let mut all = tracer.json_until(|got| got.iter().any(|t| t["rport"] == port));
    // Followed, the server's socket waits in TIME_WAIT for 60 s: removing the namespace
    // kills its mini-socket now. Not followed, its timeline came out at its CLOSE.
    assert_eq!(server_is_out(&all), !observed, "{all:?}");
    let removed_at = monotonic_ns();
    drop(ns);
    if !server_is_out(&all) {
        all.extend(tracer.json_until(server_is_out));
    }
    let (server, _) = ends(&all, port);
    if !observed {
        assert!(server["time_wait_socket"].is_null(), "{server}");
        assert_eq!(server["time_wait"], "TIME_WAIT");
        return;
    }
    let mini = &server["time_wait_socket"];
    assert_eq!(mini["substate"], "TIME_WAIT", "{server}");
    assert!(
        mini["fin_received_ns"].is_null(),
        "the socket took the FIN itself"
    );
    let closed = last_ts(server, "FIN_WAIT2", "CLOSE");
    let entered = mini["entered_ns"].as_u64().unwrap();
    assert!(entered <= closed && closed < removed_at, "{server}");
    let end = &mini["end"];
    assert_eq!(end["how"], "killed", "{server}");
    assert!(
        end["ts_ns"].as_u64().unwrap() >= removed_at,
        "held until the kill after {removed_at}: {server}"
    );
    // Seen as it happens where the kernel calls inet_twsk_deschedule_put for it; 5.10
    // and 6.1 inline that call into the purge, which ends with the namespace's removal.
    match end["evidence"].as_str() {
        Some("observed") => assert_eq!(
            end["basis"],
            "taken down before its time (inet_twsk_deschedule_put)"
        ),
        Some("inferred") => assert!(
            end["basis"]
                .as_str()
                .unwrap()
                .starts_with("its network namespace went away"),
            "{server}"
        ),
        other => panic!("evidence {other:?}: {server}"),
    }
    assert!(mini["reused_ns"].is_null());
    let (code, _, stderr) = tracer.stop(libc::SIGINT);
    assert_eq!(code, 0, "{stderr:?}");
}

#[test]
fn a_new_connection_from_the_same_port_takes_over_the_time_wait() {
    let Some(_serial) = privileged("a_new_connection_from_the_same_port_takes_over_the_time_wait")
    else {
        return;
    };
    let (ns, port) = (Netns::new(), port());
    let tracer = Tracer::start(&["--json", "--time-wait", "-P", &port.to_string()]);
    let observed = observes_mini_sockets(&tracer);
    play("time-wait-reuse", &ns, port, &[]).finish();
    // The two server sockets come out at their CLOSE; the first client's when its
    // mini-socket ends (followed) or at its CLOSE (not followed).
    let servers = |got: &[Value]| got.iter().filter(|t| t["lport"] == port).count();
    let clients = |got: &[Value]| got.iter().filter(|t| t["rport"] == port).count();
    let all = tracer.json_until(|got| servers(got) == 2 && clients(got) >= 1);
    let first_ts = |t: &Value| t["transitions"][0]["ts_ns"].as_u64().unwrap();
    let client = all
        .iter()
        .filter(|t| t["rport"] == port)
        .min_by_key(|t| first_ts(t));
    let client = client.unwrap();
    let second_server = all
        .iter()
        .filter(|t| t["lport"] == port)
        .max_by_key(|t| first_ts(t))
        .unwrap();
    assert_eq!(client["time_wait"], "TIME_WAIT", "{client}");
    let mini = &client["time_wait_socket"];
    if !observed {
        assert!(mini.is_null(), "{client}");
        return;
    }
    assert_eq!(mini["substate"], "TIME_WAIT", "{client}");
    let reused = mini["reused_ns"].as_u64().expect("reuse seen");
    let end = &mini["end"];
    assert_eq!(end["how"], "killed", "{client}");
    let killed = end["ts_ns"].as_u64().unwrap();
    // The new connection's handshake took the 4-tuple over, then closed the old one; the
    // new connection's server socket closes after that.
    let second_close = first_ts(second_server);
    assert!(
        mini["entered_ns"].as_u64().unwrap() <= reused && reused <= killed && killed < second_close,
        "entered, reused, killed, then the new connection's close: {client} {second_server}"
    );
    let (code, _, stderr) = tracer.stop(libc::SIGINT);
    assert_eq!(code, 0, "{stderr:?}");
}

#[test]
fn an_orphans_fin_wait2_mini_socket_expires_after_tcp_fin_timeout() {
    let Some(_serial) =
        privileged("an_orphans_fin_wait2_mini_socket_expires_after_tcp_fin_timeout")
    else {
        return;
    };
    let (ns, port) = (Netns::new(), port());
    // One second instead of 60: the orphan's mini-socket waits that long for the FIN of a
    // server that never closes.
    run(Command::new("ip").args([
        "netns",
        "exec",
        &ns.0,
        "sysctl",
        "-qw",
        "net.ipv4.tcp_fin_timeout=1",
    ]));
    let tracer = Tracer::start(&["--json", "--time-wait", "-P", &port.to_string()]);
    let observed = observes_mini_sockets(&tracer);
    let leak = play("close-wait-leak", &ns, port, &["--hold-ms", "4000"]);
    let all = tracer.json_until(|got| got.iter().any(|t| t["rport"] == port));
    let client = all.iter().find(|t| t["rport"] == port).unwrap();
    let mini = &client["time_wait_socket"];
    if observed {
        assert_eq!(mini["substate"], "FIN_WAIT2", "{client}");
        assert!(
            mini["fin_received_ns"].is_null(),
            "the server never closed: {client}"
        );
        let end = &mini["end"];
        assert_eq!(end["how"], "expired", "{client}");
        // tcp_fin_timeout, or 3.5 retransmission timeouts where that is longer (700 ms at
        // loopback's 200 ms floor); before the server's 4 s hold ends.
        let lived = end["ts_ns"].as_u64().unwrap() - mini["entered_ns"].as_u64().unwrap();
        assert!(
            (600_000_000..4_000_000_000).contains(&lived),
            "lived {lived} ns: {client}"
        );
    } else {
        assert!(mini.is_null(), "{client}");
    }
    leak.finish();
    let (code, _, stderr) = tracer.stop(libc::SIGINT);
    assert_eq!(code, 0, "{stderr:?}");
}
