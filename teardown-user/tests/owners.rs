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
    // ... even where the transition ran in the other process: loopback delivers the FIN in
    // the sender's context, unless it finds the client's socket locked (in recv), when the
    // client's own release_sock() applies it, or the kernel left the softirq to its
    // ksoftirqd thread (both seen under emulation on 5.10 and 6.1).
    let fin_in = client
        .iter()
        .find(|e| e["to"] == "CLOSE_WAIT")
        .expect("CLOSE_WAIT event");
    let in_ksoftirqd = fin_in["task_comm"]
        .as_str()
        .is_some_and(|comm| comm.starts_with("ksoftirqd/"));
    assert!(
        fin_in["task_pid"] == played.server || fin_in["task_pid"] == played.client || in_ksoftirqd,
        "{fin_in}"
    );
    assert_eq!(fin_in["pid"], played.client);
    assert_eq!(fin_in["owner_source"], "connect");
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
    // The context: the server's close() delivers its FIN on loopback, in its own context;
    // when the FIN finds the client holding its socket's lock (in recv), the client's own
    // release_sock() applies it (seen under emulation).
    assert!(
        [played.server, played.client]
            .iter()
            .any(|pid| close_wait.contains(&format!("{pid}/teardown-lab"))),
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

#[test]
fn in_a_pid_namespace_pids_are_that_namespaces_and_the_output_says_which() {
    let Some(_serial) = privileged("in_a_pid_namespace_pids_are_that_namespaces") else {
        return;
    };
    let (ns, port) = (Netns::new(), port());
    let doc = std::env::temp_dir().join(format!("td-pidns-{port}.json"));
    let lab_out = std::env::temp_dir().join(format!("td-pidns-{port}.lab"));
    // In a new pid namespace with its own /proc, as in a container: a server left in
    // CLOSE_WAIT, then the tracer (pid 1 there) with -p of the server's pid as seen there.
    let script = format!(
        "{LAB} close-wait-leak --netns {} --port {port} --hold-ms 60000 > {lab} &
         until grep -q server_pid {lab}; do sleep 0.01; done
         exec {TRACE} -o {doc} -p $(sed 's/.*\"server_pid\":\\([0-9]*\\).*/\\1/' {lab})",
        ns.0,
        lab = lab_out.display(),
        doc = doc.display(),
    );
    let tracer = Tracer::spawn(
        Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "sh", "-c"])
            .arg(&script),
    );
    let inner: u64 = {
        let first = std::fs::read_to_string(&lab_out).unwrap();
        let v: Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
        v["server_pid"].as_u64().unwrap()
    };
    // Seen from here, the host: the tracer is unshare's child, the server is the process
    // numbered `inner` in the tracer's pid namespace.
    let tracer_pid: u32 =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", tracer.child.id()))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    let pid_ns = |pid: u32| {
        let link = std::fs::metadata(format!("/proc/{pid}/ns/pid")).ok()?;
        Some(std::os::unix::fs::MetadataExt::ino(&link))
    };
    let namespace = pid_ns(tracer_pid).unwrap();
    let host_pid = host_pid_of(namespace, inner, pid_ns).expect("the server, seen from the host");
    assert_ne!(u64::from(host_pid), inner);
    // SAFETY: signalling the lab's server, a process this test started.
    unsafe { libc::kill(host_pid as i32, libc::SIGTERM) };
    let lines = tracer.lines_until(|got| got.iter().any(|l| l.contains("teardown-lab")));
    // SAFETY: the tracer, started by this test.
    unsafe { libc::kill(tracer_pid as i32, libc::SIGINT) };
    let (code, _, stderr) = tracer.stop(0);
    assert_eq!(code, 0, "{stderr:?}");
    assert_eq!(
        lines[0],
        format!(
            "pids as pid namespace {namespace} numbers them (not the initial one; processes \
             outside it show none)"
        )
    );
    let document: Value = serde_json::from_slice(&std::fs::read(&doc).unwrap()).unwrap();
    std::fs::remove_file(&doc).ok();
    std::fs::remove_file(&lab_out).ok();
    assert_eq!(
        document["pid_namespace"],
        serde_json::json!({"inode": namespace, "initial": false})
    );
    let timelines = document["timelines"].as_array().unwrap();
    assert_eq!(
        timelines.len(),
        1,
        "only the server's socket: {timelines:?}"
    );
    let t = &timelines[0];
    assert_eq!(t["pid"], inner, "{t}");
    // The kernel numbered the task that closed it (the server exiting) the same way.
    assert_eq!(t["transitions"][0]["task_pid"], inner, "{t}");
    assert_eq!(
        transitions(t),
        vec![pair("CLOSE_WAIT", "LAST_ACK"), pair("LAST_ACK", "CLOSE")]
    );
}

/// The host's pid of the process numbered `inner` in pid namespace `namespace`, from the
/// last two numbers of its `NSpid` (the host's, then each nested namespace's).
fn host_pid_of(namespace: u64, inner: u64, pid_ns: impl Fn(u32) -> Option<u64>) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
            let nspid = status.lines().find(|l| l.starts_with("NSpid:"))?;
            let last: u64 = nspid.split_whitespace().last()?.parse().ok()?;
            (last == inner && pid_ns(pid) == Some(namespace)).then_some(pid)
        })
}
