//! What a run leaves behind: the document, the recording, errors, signals. Needs root (see `common`).

mod common;

use common::*;

#[test]
fn a_close_wait_leak_is_reported_incomplete_with_its_owner_in_the_document() {
    let Some(_serial) = privileged("a_close_wait_leak_is_reported_incomplete_with_its_owner")
    else {
        return;
    };
    let (ns, port) = (Netns::new(), port());
    let traced = Traced::start("leak", port);
    let played = play("close-wait-leak", &ns, port, &["--hold-ms", "20000"]);
    // The client's FIN is acknowledged late (delayed ACK): wait until its socket has been
    // handed to the FIN_WAIT2 mini-socket, so that only the leak is still closing.
    wait_for(
        "the leak in CLOSE_WAIT, the client's mini-socket in FIN_WAIT2",
        || sockets_in(&ns, "close-wait") == 1 && sockets_in(&ns, "fin-wait-2") == 1,
    );
    let signalled = monotonic_ns();
    // The recording keeps when tracing stopped: replayed, the leak is as old as it was live.
    let (v, replayed) = traced.stop(libc::SIGTERM, &["--json"]);
    let exited = monotonic_ns();
    let replayed: Vec<Value> = replayed
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (server, client_pid, mut lab) = (played.server, played.client, played.child);
    // Its server still holds the socket; stop the lab now rather than wait for it.
    lab.kill().ok();
    lab.wait().ok();
    let timelines = v["timelines"].as_array().unwrap();
    let leak = timeline_of(timelines, port).expect("leaked socket");
    assert_eq!(leak["complete"], false);
    assert_eq!(leak["role"], "passive");
    assert_eq!(leak["pid"], server, "a CLOSE_WAIT leak keeps its owner");
    assert_eq!(leak["owner_source"], "accept");
    assert_eq!(transitions(leak), vec![pair("ESTABLISHED", "CLOSE_WAIT")]);
    assert_eq!(leak["still"]["state"], "CLOSE_WAIT");
    assert_eq!(leak["still"]["since_ns"], leak["transitions"][0]["ts_ns"]);
    let until =
        leak["still"]["since_ns"].as_u64().unwrap() + leak["still"]["for_ns"].as_u64().unwrap();
    assert!(
        (signalled..=exited).contains(&until),
        "in CLOSE_WAIT until the tracer stopped: {until}, signalled at {signalled}, exited at {exited}"
    );
    // Live, the exit snapshot still found the socket: a real leak, not a lost end.
    assert_eq!(leak["still"]["in_kernel"], true, "{leak}");
    let replayed_leak = timeline_of(&replayed, port).expect("replayed leak");
    for key in ["state", "since_ns", "for_ns"] {
        assert_eq!(replayed_leak["still"][key], leak["still"][key], "{key}");
    }
    assert_eq!(
        replayed_leak["still"]["in_kernel"],
        Value::Null,
        "a replay cannot look in the kernel"
    );
    let client = timelines
        .iter()
        .find(|t| t["rport"] == port)
        .expect("client");
    assert_eq!(client["role"], "active");
    assert_eq!(client["pid"], client_pid);
    assert_eq!(v["lost_events"], 0);
    assert_eq!(v["summary"]["incomplete"], 1, "{:#}", v);
}

#[test]
fn a_recording_replays_to_the_same_timelines_without_privileges() {
    let Some(_serial) = privileged("a_recording_replays_to_the_same_timelines") else {
        return;
    };
    let (ns, port) = (Netns::new(), port());
    let recording = std::env::temp_dir().join(format!("td-rec-{port}.tdrec"));
    let rec = recording.to_str().unwrap();
    let tracer = Tracer::start(&["--json", "--record", rec, "-P", &port.to_string()]);
    play("server-closes", &ns, port, &["--delay-ms", "50"]).finish();
    let live = tracer.json_until(|got| both_ends(got, port));
    assert_eq!(tracer.stop(libc::SIGINT).0, 0);

    std::fs::set_permissions(
        &recording,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let out = as_nobody(&["--replay", rec, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let key = |t: &Value| {
        (
            t["lport"].clone(),
            t["role"].clone(),
            t["pid"].clone(),
            t["transitions"].clone(),
        )
    };
    let mut a: Vec<_> = live.iter().map(key).collect();
    let mut b: Vec<_> = replayed.iter().map(key).collect();
    a.sort_by_key(|k| k.0.to_string());
    b.sort_by_key(|k| k.0.to_string());
    assert_eq!(a, b);

    // Filters apply to a replay as they would live, raw events included.
    let out = as_nobody(&[
        "--replay",
        rec,
        "--raw",
        "--json",
        "--lport",
        &port.to_string(),
    ]);
    assert!(out.status.success());
    let raw: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!raw.is_empty());
    assert!(raw.iter().all(|e| e["lport"] == port), "{raw:?}");

    // A recording cut short (its recorder killed) still replays every whole block, and
    // says that its end is missing.
    let bytes = std::fs::read(&recording).unwrap();
    std::fs::write(&recording, &bytes[..bytes.len() - 7]).unwrap();
    let out = as_nobody(&["--replay", rec, "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    let warning = err
        .lines()
        .find(|l| l.contains("no end marker"))
        .expect(&err);
    assert!(warning.contains("at byte"), "{warning}");
    let cut: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(cut.len(), live.len(), "every timeline was in a whole block");
    // A damaged byte is an error that says where, never replayed as data.
    let mut damaged = bytes.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x40;
    std::fs::write(&recording, &damaged).unwrap();
    let out = as_nobody(&["--replay", rec]);
    std::fs::remove_file(&recording).ok();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("at byte"), "{err}");
}

#[test]
fn bad_input_gets_one_line_and_a_non_zero_exit() {
    let Some(_serial) = privileged("bad_input_gets_one_line_and_a_non_zero_exit") else {
        return;
    };
    let trace = |args: &[&str]| Command::new(TRACE).args(args).output().unwrap();
    for (out, code, needle) in [
        (trace(&["-P", "70000"]), 2, "70000"),
        (trace(&["-p", "abc"]), 2, "abc"),
        (trace(&["--frobnicate"]), 2, "--frobnicate"),
        (
            trace(&["-o", "/nonexistent/dir/t.json"]),
            1,
            "cannot write /nonexistent/dir/t.json",
        ),
        (
            trace(&["--replay", "/nonexistent.tdrec"]),
            1,
            "cannot read /nonexistent.tdrec: No such file",
        ),
        (as_nobody(&["-d", "1"]), 1, "permission denied"),
    ] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains(needle), "{err}");
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
    }
}

#[test]
fn limits_are_said_in_one_line_with_their_cause() {
    let Some(_serial) = privileged("limits_are_said_in_one_line_with_their_cause") else {
        return;
    };
    // The limits as a shell sets them (soft and hard), then teardown-trace in its place.
    let limited = |limits: &str, run: &str| {
        Command::new("sh")
            .args(["-c", &format!("{limits}; exec {run}")])
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap()
    };
    let trace = format!("{TRACE} -d 1");
    let nobody = format!("setpriv --reuid=65534 --regid=65534 --clear-groups {trace}");
    // Address-space limits from too small to load the program up to enough (where depends
    // on the build): each runs out at another allocation (BTF, the maps, the ring's
    // mapping, a thread's stack), some once tracing has started.
    let mut out_of_memory = 0;
    for kib in (15_000..=60_000).step_by(1_000) {
        let out = limited(&format!("ulimit -v {kib}"), &trace);
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            break; // enough from here on
        }
        out_of_memory += 1;
        assert_eq!(out.status.code(), Some(1), "{kib} KiB: {err}");
        // Also when it runs out once tracing has started: the error is one line.
        let errors: Vec<_> = err.lines().filter(|l| l.contains("error:")).collect();
        assert_eq!(errors.len(), 1, "{kib} KiB: {err}");
        assert!(errors[0].contains("out of memory"), "{kib} KiB: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
    }
    assert!(out_of_memory >= 3, "{out_of_memory}");
    for (out, needle) in [
        (limited("ulimit -n 8", &trace), "out of file descriptors"),
        (limited("ulimit -n 40", &trace), "out of file descriptors"),
        (
            limited(
                "ulimit -n 8",
                &format!("{TRACE} --replay /nonexistent.tdrec"),
            ),
            "out of file descriptors",
        ),
        (limited("ulimit -n 8", &nobody), "out of file descriptors"),
        (limited("ulimit -v 200000", &nobody), "permission denied"),
    ] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains(needle), "{needle}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
    }
    // Only the soft limit low: raised to what tracing needs, and it traces.
    let out = limited("ulimit -Sn 10", &trace);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("Tracing"), "{err}");
}

#[test]
fn a_signal_leaves_a_complete_document_and_duration_stops_by_itself() {
    let Some(_serial) = privileged("a_signal_leaves_a_complete_document") else {
        return;
    };
    let doc = std::env::temp_dir().join(format!("td-sig-{}.json", port()));
    let tracer = Tracer::start(&["-o", doc.to_str().unwrap(), "-P", "1"]);
    assert!(!doc.exists(), "nothing at the target while tracing");
    // /proc/PID/stat: the nice value is field 19, counted after the `(comm)` field.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", tracer.child.id())).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let nice = after_comm.split(' ').nth(16).unwrap();
    assert_eq!(nice, "10", "yields the CPU while it keeps up: {stat}");
    assert_eq!(tracer.stop(libc::SIGINT).0, 0);
    let v: Value = serde_json::from_slice(&std::fs::read(&doc).unwrap()).unwrap();
    std::fs::remove_file(&doc).ok();
    assert_eq!(v["timelines"], serde_json::json!([]));
    assert_eq!(v["filters"]["ports"], serde_json::json!([1]));

    let started = Instant::now();
    let out = Command::new(TRACE)
        .args(["-d", "1", "-P", "1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 teardowns"));
}

#[test]
fn hangup_and_a_signal_during_start_up_end_a_run_cleanly() {
    let Some(_serial) = privileged("hangup_and_a_signal_during_start_up_end_a_run_cleanly") else {
        return;
    };
    // SIGHUP (a closed terminal) is a stop like SIGINT: a complete document, exit 0.
    let doc = std::env::temp_dir().join(format!("td-hup-{}.json", port()));
    let tracer = Tracer::start(&["-o", doc.to_str().unwrap(), "-P", "1"]);
    assert_eq!(tracer.stop(libc::SIGHUP).0, 0);
    let v: Value = serde_json::from_slice(&std::fs::read(&doc).unwrap()).unwrap();
    assert_eq!(v["timelines"], serde_json::json!([]));
    // Signalled before it has even started tracing: the same.
    std::fs::remove_file(&doc).ok();
    let mut child = Command::new(TRACE)
        .args(["-o", doc.to_str().unwrap(), "-P", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // As soon as its handlers are in place (its first instructions), well before it has
    // loaded anything.
    let status = format!("/proc/{}/status", child.id());
    wait_for("the tracer's signal handlers", || {
        std::fs::read_to_string(&status)
            .ok()
            .and_then(|s| {
                let caught = s.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
                u64::from_str_radix(caught.trim(), 16).ok()
            })
            .is_some_and(|caught| caught >> (libc::SIGHUP - 1) & 1 == 1)
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    assert!(child.wait().unwrap().success());
    let v: Value = serde_json::from_slice(&std::fs::read(&doc).unwrap()).unwrap();
    assert!(v["ended_unix_ns"].is_u64());
    let dir = doc.parent().unwrap();
    let name = doc.file_name().unwrap().to_string_lossy().into_owned();
    let leftovers = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .contains(&format!(".{name}."))
        })
        .count();
    assert_eq!(leftovers, 0, "no temporary file left");
    std::fs::remove_file(&doc).ok();
}

#[test]
fn a_closed_stdout_ends_even_a_quiet_trace_within_a_second() {
    let Some(_serial) = privileged("a_closed_stdout_ends_even_a_quiet_trace") else {
        return;
    };
    use std::io::BufRead as _;
    // A quiet tracer whose header line has come; `stop` makes it go, and its exit status
    // and how long that took come back.
    let quiet = |stop: &dyn Fn(&mut std::process::Child, Box<dyn std::io::BufRead>)| {
        let mut child = Command::new(TRACE)
            .args(["-P", "9"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut header = String::new();
        stdout.read_line(&mut header).unwrap();
        assert!(header.starts_with("TIME"), "{header}");
        let asked = Instant::now();
        stop(&mut child, Box::new(stdout));
        let deadline = asked + *WAIT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "still running");
            std::thread::sleep(Duration::from_millis(10));
        };
        (status, asked.elapsed())
    };
    // What stopping itself costs here (detaching, the exit snapshot): many times more
    // under emulation than natively.
    // SAFETY: kill(2) on our own child.
    let (_, stopping) = quiet(&|child, _| unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    });
    // The reader goes away, as `| head -1` does.
    let (status, gone) = quiet(&|_, stdout| drop(stdout));
    assert!(status.success(), "{status}");
    assert!(
        gone < stopping + Duration::from_secs(1),
        "exit {gone:?} after the reader left, {stopping:?} after SIGINT"
    );
}

#[test]
fn a_previous_recording_survives_a_start_that_fails_and_pid_lists_have_no_limit() {
    let Some(_serial) = privileged("a_previous_recording_survives_a_start_that_fails") else {
        return;
    };
    let rec = std::env::temp_dir().join(format!("td-keep-{}.tdrec", port()));
    std::fs::write(&rec, b"a previous recording").unwrap();
    std::fs::set_permissions(&rec, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let out = as_nobody(&["--record", rec.to_str().unwrap(), "-d", "1"]);
    assert_eq!(out.status.code(), Some(1), "not root");
    assert_eq!(std::fs::read(&rec).unwrap(), b"a previous recording");
    std::fs::remove_file(&rec).ok();
    // 2,000 pids and 2,000 ports: the kernel's filter maps are sized from the lists.
    let pids: Vec<String> = (1..=2000).map(|p| p.to_string()).collect();
    let ports: Vec<String> = (20_001..=22_000).map(|p| p.to_string()).collect();
    let out = Command::new(TRACE)
        .args(["-d", "1", "-p", &pids.join(","), "-P", &ports.join(",")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn one_output_failing_on_a_full_disk_leaves_the_others_complete() {
    let Some(_serial) = privileged("one_output_failing_on_a_full_disk") else {
        return;
    };
    let (ns, port) = (Netns::new(), port());
    // A tiny filesystem of the test's own, in a mount namespace, for the document.
    let full = std::env::temp_dir().join(format!("td-full-{port}"));
    std::fs::create_dir_all(&full).unwrap();
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8k", "tmpfs"])
        .arg(&full));
    let doc = full.join("doc.json");
    let rec = std::env::temp_dir().join(format!("td-healthy-{port}.tdrec"));
    let Traced { tracer, .. } = Traced::at(doc.clone(), rec.clone(), port);
    for _ in 0..10 {
        play("server-closes", &ns, port, &["--delay-ms", "0"]).finish();
    }
    tracer.json_until(|_| true).len();
    let (code, _, stderr) = tracer.stop(libc::SIGINT);
    let umount = Command::new("umount").arg(&full).output();
    std::fs::remove_dir_all(&full).ok();
    assert!(umount.unwrap().status.success());
    assert_eq!(code, 1, "{stderr:?}");
    let failures: Vec<&String> = stderr.iter().filter(|l| l.contains("error:")).collect();
    assert_eq!(failures.len(), 1, "{stderr:?}");
    assert!(
        failures[0].contains(&format!("cannot write {}", doc.display()))
            && failures[0].contains("No space left on device")
            && failures[0].matches("No space left").count() == 1,
        "the path, and the cause once: {failures:?}"
    );
    // The recording, on a healthy disk, is complete: it replays without a warning.
    let replayed = Command::new(TRACE)
        .args(["--replay", rec.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    std::fs::remove_file(&rec).ok();
    assert!(replayed.status.success());
    assert!(
        !String::from_utf8_lossy(&replayed.stderr).contains("warning"),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&replayed.stdout).lines().count(),
        20
    );
}

#[test]
fn pictures_never_destroy_what_they_are_given() {
    let Some(_serial) = privileged("pictures_never_destroy_what_they_are_given") else {
        return;
    };
    use std::os::unix::fs::{symlink, FileTypeExt};
    let (ns, port) = (Netns::new(), port());
    let dir = std::env::temp_dir().join(format!("td-pictures-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let (fifo, trace, link, rec) = (
        dir.join("closes.fifo"),
        dir.join("trace.pftrace"),
        dir.join("link.pftrace"),
        dir.join("run.tdrec"),
    );
    let c_fifo = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0);
    std::fs::write(&trace, b"previous").unwrap();
    symlink(&trace, &link).unwrap();
    // A FIFO's reader gets the diagrams; a symlink's target gets the trace, the link stays.
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    let tracer = Tracer::start(&[
        "-P",
        &port.to_string(),
        "--record",
        rec.to_str().unwrap(),
        "--mermaid",
        fifo.to_str().unwrap(),
        "--perfetto",
        link.to_str().unwrap(),
    ]);
    play("server-closes", &ns, port, &["--delay-ms", "0"]).finish();
    tracer.lines_until(|got| got.iter().filter(|l| l.contains("teardown-lab")).count() == 2);
    assert_eq!(
        std::fs::read(&trace).unwrap(),
        b"previous",
        "the old file stays until the trace is complete"
    );
    let (code, _, stderr) = tracer.stop(libc::SIGINT);
    assert_eq!(code, 0, "{stderr:?}");
    let diagrams = reader.join().unwrap();
    assert!(
        diagrams.contains("```mermaid\nsequenceDiagram"),
        "{diagrams}"
    );
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let written = std::fs::read(&trace).unwrap();
    assert_ne!(written, b"previous");
    assert!(written.len() > 100, "a trace: {} bytes", written.len());

    // A run that fails (a damaged recording, found once the outputs are open) leaves
    // existing files as they were, and no temporary file.
    let mut damaged = std::fs::read(&rec).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x40;
    std::fs::write(&rec, &damaged).unwrap();
    let (markdown, old_trace) = (dir.join("old.md"), dir.join("old.pftrace"));
    std::fs::write(&markdown, b"previous").unwrap();
    std::fs::write(&old_trace, b"previous").unwrap();
    let out = Command::new(TRACE)
        .args(["--replay", rec.to_str().unwrap(), "--mermaid"])
        .arg(&markdown)
        .arg("--perfetto")
        .arg(&old_trace)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at byte"));
    assert_eq!(std::fs::read(&markdown).unwrap(), b"previous");
    assert_eq!(std::fs::read(&old_trace).unwrap(), b"previous");
    let mut left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "closes.fifo",
            "link.pftrace",
            "old.md",
            "old.pftrace",
            "run.tdrec",
            "trace.pftrace"
        ]
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The start-up probe: below the minimum the tracer refuses in one line with a non-zero
/// exit; an optional hook missing costs one warning line and an entry in the document's
/// `degraded`. This kernel has everything, so a debug build's probe is made to see a
/// feature missing (`TEARDOWN_PROBE_HIDE`); a release build ignores that variable.
#[test]
fn the_start_up_probe_refuses_a_kernel_below_the_minimum_and_says_what_it_degrades() {
    let Some(_serial) = privileged("the_start_up_probe_refuses_a_kernel_below_the_minimum") else {
        return;
    };
    let hiding = |hidden: &str, args: &[&str]| {
        let mut cmd = Command::new(TRACE);
        cmd.args(["-d", "1"]).args(args);
        let out = cmd
            .env(PROBE_HIDE, hidden)
            .output()
            .expect("teardown-trace");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (hidden, says) in [
        (
            "ring_buf",
            "no BPF ring buffer (Linux 5.8 or later is needed)",
        ),
        ("btf", "has no BTF"),
        (
            "inet_sock_set_state",
            "no BTF tracepoint inet_sock_set_state",
        ),
    ] {
        let (code, said) = hiding(hidden, &["--json"]);
        if cfg!(debug_assertions) {
            assert_eq!(code, Some(1), "{hidden}: {said}");
            assert_eq!(said.lines().count(), 1, "{hidden}: {said}");
            assert!(said.contains(says), "{hidden}: {said}");
        } else {
            assert_eq!(
                code,
                Some(0),
                "a release build ignores the variable: {said}"
            );
        }
    }
    let doc = std::env::temp_dir().join(format!("td-probe-{}.json", port()));
    let (code, said) = hiding("tcp_retransmit_skb", &["-o", doc.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{said}");
    let v: Value = serde_json::from_slice(&std::fs::read(&doc).unwrap()).unwrap();
    std::fs::remove_file(&doc).ok();
    let degraded: Vec<&str> = v["degraded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    // Everything degraded, whatever the cause, is said in one line.
    let warnings: Vec<&str> = said.lines().filter(|l| l.contains("degraded")).collect();
    assert!(warnings.len() <= 1, "{said}");
    let missing = "retransmitted FINs are not observed";
    assert_eq!(
        degraded.iter().any(|d| d.contains(missing)),
        cfg!(debug_assertions),
        "{degraded:?}"
    );
    for d in &degraded {
        assert!(warnings[0].contains(d), "{d} not in {warnings:?}");
    }
}
