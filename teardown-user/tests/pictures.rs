//! The pictures, drawn from a real close and judged by the real renderers: the Mermaid
//! diagram must render with mermaid-cli (on Debian's Chromium), the Perfetto trace must
//! decode with Perfetto's own schema (`perfetto_check.py`). `cargo xtask setup` installs
//! both under /var/cache/teardown-tools (or `TEARDOWN_TOOLS`).
//!
//! Needs root, like every kernel test (see `common`): without it the test prints SKIPPED; under CI it fails.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Child,
    sync::mpsc,
};

use common::*;

/// `teardown-trace --json ARGS`, once it says it is tracing.
fn start_tracer(args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let args: Vec<&str> = std::iter::once("--json")
        .chain(args.iter().copied())
        .collect();
    let tracer = Tracer::start(&args);
    (tracer.child, tracer.lines)
}

fn tools() -> PathBuf {
    std::env::var_os("TEARDOWN_TOOLS")
        .map_or_else(|| PathBuf::from("/var/cache/teardown-tools"), PathBuf::from)
}

fn tool(relative: &str) -> PathBuf {
    let path = tools().join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask setup`",
        path.display()
    );
    path
}

/// Renders every diagram of a `--mermaid` file with mermaid-cli; panics with mermaid's
/// message if it rejects one. Returns the SVGs.
fn render_mermaid(markdown: &Path, dir: &Path) -> Vec<String> {
    let config = dir.join("puppeteer.json");
    // Puppeteer waits for Chromium's endpoint, then for each page, for at most 30 s and
    // 180 s: guesses at native speed. Under emulation (vm-test's TCG guests) Chromium alone
    // takes longer than 30 s to start, so the waits end on the condition, with 10 minutes
    // left only to catch a hang.
    std::fs::write(
        &config,
        r#"{"executablePath":"/usr/bin/chromium","args":["--no-sandbox","--headless=new"],"timeout":600000,"protocolTimeout":600000}"#,
    )
    .unwrap();
    // The page's own waits (loading mermaid's page, 30 s) mermaid-cli offers no setting
    // for: a module Node loads first lifts Puppeteer's default for them (a 6.12 guest's
    // Chromium once took longer to load the page).
    let timeouts = dir.join("timeouts.mjs");
    let settings =
        tool("mermaid/node_modules/puppeteer-core/lib/esm/puppeteer/common/TimeoutSettings.js");
    std::fs::write(
        &timeouts,
        format!(
            "import {{ TimeoutSettings }} from 'file://{}';\n\
             TimeoutSettings.prototype.timeout = () => 600000;\n\
             TimeoutSettings.prototype.navigationTimeout = () => 600000;\n",
            settings.display()
        ),
    )
    .unwrap();
    run(Command::new(tool("mermaid/node_modules/.bin/mmdc"))
        .env(
            "NODE_OPTIONS",
            format!("--import=file://{}", timeouts.display()),
        )
        .arg("-p")
        .arg(&config)
        .arg("-i")
        .arg(markdown)
        .arg("-o")
        .arg(dir.join("out.svg")));
    (1..)
        .map(|i| dir.join(format!("out-{i}.svg")))
        .take_while(|p| p.exists())
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// What Perfetto's schema reads in a `--perfetto` file (see perfetto_check.py).
fn read_perfetto(trace: &Path) -> Value {
    let check = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/perfetto_check.py");
    let out = run(Command::new(tool("venv/bin/python")).arg(check).arg(trace));
    serde_json::from_slice(&out.stdout).expect("perfetto_check.py prints JSON")
}

/// Each list of a `read_perfetto` result in a canonical order.
fn sorted(mut trace: Value) -> Value {
    for list in trace.as_object_mut().unwrap().values_mut() {
        list.as_array_mut().unwrap().sort_by_key(|v| v.to_string());
    }
    trace
}

/// The diagram's arrows, `A->>B: FIN=1` and so on, in order.
fn arrows(markdown: &str) -> Vec<String> {
    markdown
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("A-") || l.starts_with("B-"))
        // Without the sequence numbers, which differ from run to run.
        .map(|l| {
            l.split(" +")
                .next()
                .unwrap()
                .split(", seq=")
                .next()
                .unwrap()
        })
        .map(|l| l.split(", ack=").next().unwrap().to_string())
        .collect()
}

#[test]
fn a_real_half_close_draws_a_sequence_diagram_and_a_perfetto_trace_that_render() {
    let Some(_serial) =
        privileged("a_real_half_close_draws_a_sequence_diagram_and_a_perfetto_trace_that_render")
    else {
        return;
    };
    let ns = Netns::new();
    let port = (43_000 + std::process::id() % 1000).to_string();
    let dir = std::env::temp_dir().join(format!("td-pictures-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (md, pf, rec) = (file("live.md"), file("live.pftrace"), file("run.tdrec"));
    let (mut tracer, stdout) = start_tracer(&[
        "-P",
        &port,
        "--mermaid",
        &md,
        "--perfetto",
        &pf,
        "--record",
        &rec,
    ]);

    let lab = run(Command::new(LAB).args([
        "half-close",
        "--netns",
        &ns.0,
        "--port",
        &port,
        "--delay-ms",
        "50",
    ]));
    let played: Value = serde_json::from_slice(
        lab.stdout
            .split(|&b| b == b'\n')
            .next()
            .expect("teardown-lab says who played"),
    )
    .unwrap();
    let (server, client) = (&played["server_pid"], &played["client_pid"]);
    let deadline = Instant::now() + *WAIT;
    let mut closed = 0;
    while closed < 2 {
        let line = stdout
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("both ends' timelines");
        let t: Value = serde_json::from_str(&line).unwrap();
        closed += usize::from(t["complete"] == true);
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    assert!(tracer.wait().unwrap().success());

    // The seed's picture: FIN, its ACK, the other FIN, the last ACK, all observed.
    let markdown = std::fs::read_to_string(&md).unwrap();
    assert_eq!(
        arrows(&markdown),
        [
            "A->>B: FIN=1",
            "B->>A: ACK=1",
            "B->>A: FIN=1",
            "A->>B: ACK=1"
        ],
        "{markdown}"
    );
    assert!(
        markdown.contains(&format!(
            "participant A as 127.0.0.1#58;{port}<br/>teardown-lab {server}"
        )),
        "the server closed first: {markdown}"
    );
    for note in [
        "FIN_WAIT1",
        "CLOSE_WAIT",
        "FIN_WAIT2",
        "LAST_ACK",
        "TIME_WAIT",
    ] {
        assert!(
            markdown.contains(&format!(": {note} +")) || markdown.contains(&format!(": {note} -")),
            "{note}: {markdown}"
        );
    }
    let svgs = render_mermaid(Path::new(&md), &dir);
    assert_eq!(svgs.len(), 1);
    assert!(svgs[0].contains("<svg") && svgs[0].contains("FIN=1"));

    // Perfetto: each socket a track under its process, its states as slices, each FIN a
    // flow from the end that sent it to the state its arrival caused.
    let trace = read_perfetto(Path::new(&pf));
    let tracks = trace["tracks"].as_array().unwrap();
    let process = |pid: &Value| {
        tracks
            .iter()
            .find(|t| &t["pid"] == pid)
            .unwrap_or_else(|| panic!("no process track for {pid}: {trace}"))["uuid"]
            .clone()
    };
    let socket = |pid: &Value| {
        let parent = process(pid);
        let sockets: Vec<&Value> = tracks.iter().filter(|t| t["parent"] == parent).collect();
        assert_eq!(sockets.len(), 1, "{trace}");
        sockets[0]["uuid"].clone()
    };
    let (server_track, client_track) = (socket(server), socket(client));
    let slices = |track: &Value| -> Vec<String> {
        trace["slices"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| &s["track"] == track)
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(slices(&server_track), ["FIN_WAIT1", "FIN_WAIT2"]);
    assert_eq!(slices(&client_track), ["CLOSE_WAIT", "LAST_ACK"]);
    let flows: Vec<(Value, String, Value, String)> = trace["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["from_track"].clone(),
                f["from"].as_str().unwrap().to_string(),
                f["to_track"].clone(),
                f["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(flows.len(), 2, "{trace}");
    for flow in [
        (
            server_track.clone(),
            "FIN_WAIT1".into(),
            client_track.clone(),
            "CLOSE_WAIT".into(),
        ),
        (
            client_track,
            "LAST_ACK".into(),
            server_track,
            "TIME_WAIT".into(),
        ),
    ] {
        assert!(flows.contains(&flow), "{flow:?}: {trace}");
    }

    // The recording draws the same pictures without privileges (the Perfetto trace with the
    // same times: they are the kernel's; only the order of sockets may differ).
    let (md2, pf2) = (file("replayed.md"), file("replayed.pftrace"));
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", TRACE])
        .args(["--replay", &rec, "--mermaid", &md2, "--perfetto", &pf2]));
    assert_eq!(
        sorted(read_perfetto(Path::new(&pf2))),
        sorted(trace),
        "the same tracks, slices, instants and flows"
    );
    let replayed = std::fs::read_to_string(&md2).unwrap();
    assert_eq!(arrows(&replayed), arrows(&markdown));

    // --color: on a terminal (a pty from `script`) the roles are coloured, unless NO_COLOR
    // says otherwise; piped, only `--color always` colours.
    let on_terminal = |no_color: bool| {
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &format!("{TRACE} --replay {rec}"), "/dev/null"])
            .env("TERM", "xterm");
        if no_color {
            cmd.env("NO_COLOR", "1");
        } else {
            cmd.env_remove("NO_COLOR");
        }
        String::from_utf8_lossy(&run(&mut cmd).stdout).into_owned()
    };
    let piped = |color: &str| {
        let out = run(Command::new(TRACE).args(["--replay", &rec, "--color", color]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let active = "\x1b[36mactive\x1b[0m";
    assert!(on_terminal(false).contains(active));
    assert!(!on_terminal(true).contains('\x1b'));
    assert!(!piped("auto").contains('\x1b'));
    assert!(piped("always").contains(active));
    std::fs::remove_dir_all(&dir).ok();
}

/// Whatever a process is called, and over IPv6, the diagram still parses: mermaid-cli
/// renders an orphan's close whose owner's name is full of Mermaid's own syntax.
#[test]
fn any_process_name_and_address_renders_with_mermaid_cli() {
    use teardown_common::{sock_flags, state::*, Family, KernelNames};
    use teardown_user::{
        clock::Clock,
        output::mermaid,
        reconstruct::{Owner, Task, Timeline, Transition},
    };

    let mut comm = [0u8; 16];
    comm[..15].copy_from_slice(b"a;b#c%%\n:<x>\"}-");
    let task = Task { pid: 7, comm };
    let at = |ts_ns, from, to, sock_flags| Transition {
        from,
        to,
        ts_ns,
        task,
        sock_flags,
        seq: None,
    };
    let timeline = Timeline {
        id: 1,
        sock: 1,
        family: Family::Ipv6,
        laddr: "::1".parse().unwrap(),
        lport: 80,
        raddr: "fe80::1".parse().unwrap(),
        rport: 5000,
        netns: 0,
        owner: Some(Owner { task, source: 0 }),
        transitions: vec![
            at(0, ESTABLISHED, FIN_WAIT1, 0),
            at(50_000, FIN_WAIT1, FIN_WAIT2, 0),
            at(52_000, FIN_WAIT2, CLOSE, sock_flags::ORPHAN),
        ],
        resets: Vec::new(),
        retransmits: Vec::new(),
        peer: None,
        first_seen_mid_close: false,
        gap: false,
        in_kernel_at_exit: None,
        followed_until_ns: None,
        before_trace: None,
        mini: None,
    };
    let diagram = mermaid::connection(&timeline, None, &Clock::default(), &KernelNames::default());
    let dir = std::env::temp_dir().join(format!("td-pictures-names-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let md = dir.join("names.md");
    std::fs::write(&md, format!("```mermaid\n{diagram}```\n")).unwrap();
    let svgs = render_mermaid(&md, &dir);
    assert_eq!(svgs.len(), 1);
    // The name is shown as it is, not taken for syntax.
    assert!(svgs[0].contains("a;b#c%%"), "{diagram}");
    std::fs::remove_dir_all(&dir).ok();
}
