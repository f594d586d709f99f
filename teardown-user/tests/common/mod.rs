//! The real-kernel test harness shared by every kernel test file: each test creates a
//! network namespace, starts the real `teardown-trace` (which loads the real eBPF programs),
//! drives real TCP connections between two `teardown-lab` processes on the namespace's
//! loopback, and checks what the tracer reports.
//!
//! These tests need root. Without it they print SKIPPED and return; under CI (`CI` set)
//! they fail instead, so a CI run can never pass without them.
#![allow(dead_code)] // each test file uses part of the harness

use std::{
    io::{BufRead, BufReader, Write as _},
    path::PathBuf,
    process::{Child, Output, Stdio},
    sync::{
        atomic::{AtomicU16, Ordering},
        mpsc, Mutex,
    },
};
pub use std::{
    process::Command,
    time::{Duration, Instant},
};

pub use serde_json::Value;

pub const TRACE: &str = env!("CARGO_BIN_EXE_teardown-trace");
pub const LAB: &str = env!("CARGO_BIN_EXE_teardown-lab");
/// Hides kernel features from the tracer's start-up probe (a debug build only).
pub const PROBE_HIDE: &str = "TEARDOWN_PROBE_HIDE";
/// How long a wait for a condition may take before the test gives up: a guard against a
/// hang, not a bound on timing. 20 s at native speed; an emulated kernel (vm-test's TCG
/// guests, where a process runs 100 times slower and Prometheus was seen taking more than
/// 20 s to be ready) sets `TEARDOWN_TEST_WAIT_SECS`.
pub static WAIT: std::sync::LazyLock<Duration> = std::sync::LazyLock::new(|| {
    let secs = std::env::var("TEARDOWN_TEST_WAIT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(secs)
});

/// One test at a time: timing assertions should not fight over the two cores.
pub static SERIAL: Mutex<()> = Mutex::new(());
pub static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

pub fn privileged(test: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: the kernel tests must run as root in CI");
        }
        // Straight to stderr: libtest captures eprintln! of passing tests, and a skip must
        // never look like a pass.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: needs root (run `sudo cargo xtask test`)"
        );
        return None;
    }
    Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
}

/// A port no other test uses. The tracer sees every namespace of the host, so `-P` would
/// also count other sockets on the same port: below the ephemeral range (32768 and up,
/// where clients of any namespace get their ports).
pub fn port() -> u16 {
    20_000 + (std::process::id() % 1000) as u16 * 10 + NEXT_PORT.fetch_add(1, Ordering::Relaxed)
}

/// A namespace of this test's own, removed when dropped.
pub struct Netns(pub String, teardown_user::lab::Netns);

impl Netns {
    pub fn new() -> Netns {
        static N: AtomicU16 = AtomicU16::new(0);
        let name = format!(
            "td-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let netns = teardown_user::lab::Netns::create(&name).unwrap_or_else(|e| panic!("{e}"));
        Netns(name, netns)
    }
}

pub fn run(cmd: &mut Command) -> Output {
    teardown_user::lab::run(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// A running `teardown-trace` whose stdout lines arrive on a channel.
pub struct Tracer {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub stderr: mpsc::Receiver<String>,
    /// What it said before it started tracing (its warnings).
    pub started_with: Vec<String>,
}

pub fn reader(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Tracer {
    pub fn start(args: &[&str]) -> Tracer {
        Tracer::spawn(Command::new(TRACE).args(args))
    }

    /// A command that ends in `teardown-trace` (through `unshare`, say), once it is tracing.
    pub fn spawn(command: &mut Command) -> Tracer {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start teardown-trace");
        let lines = reader(child.stdout.take().unwrap());
        let stderr = reader(child.stderr.take().unwrap());
        let deadline = Instant::now() + *WAIT;
        let mut started_with = Vec::new();
        loop {
            match stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.starts_with("Tracing") => break,
                Ok(line) => {
                    eprintln!("tracer: {line}");
                    started_with.push(line);
                }
                Err(_) => panic!("teardown-trace did not start: {:?}", child.try_wait()),
            }
        }
        Tracer {
            child,
            lines,
            stderr,
            started_with,
        }
    }

    /// Stdout lines, each turned into an item by `parse`, until `done` says enough, or
    /// panics after `WAIT`.
    pub fn until<T: std::fmt::Debug>(
        &self,
        parse: impl Fn(String) -> T,
        mut done: impl FnMut(&[T]) -> bool,
    ) -> Vec<T> {
        let deadline = Instant::now() + *WAIT;
        let mut got = Vec::new();
        while !done(&got) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("timed out; got so far: {got:#?}"));
            got.push(parse(line));
        }
        got
    }

    /// NDJSON records until `done` says enough.
    pub fn json_until(&self, done: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
        let parse =
            |line: String| serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        self.until(parse, done)
    }

    /// Text lines until `done` says enough.
    pub fn lines_until(&self, done: impl FnMut(&[String]) -> bool) -> Vec<String> {
        self.until(|line| line, done)
    }

    /// SIGINT, then the exit status and everything printed after.
    pub fn stop(self, signal: i32) -> (i32, Vec<String>, Vec<String>) {
        let Tracer {
            mut child,
            lines,
            stderr,
            ..
        } = self;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().expect("wait for teardown-trace");
        (
            status.code().unwrap_or(-1),
            lines.iter().collect(),
            stderr.iter().collect(),
        )
    }
}

/// A tracer writing a document (`-o`) and a recording (`--record`) for one port.
pub struct Traced {
    pub tracer: Tracer,
    pub doc: PathBuf,
    pub rec: PathBuf,
}

impl Traced {
    pub fn start(name: &str, port: u16) -> Traced {
        Traced::hiding(name, port, "")
    }

    /// The same, with the kernel features in `hidden` hidden from the tracer's start-up
    /// probe (`TEARDOWN_PROBE_HIDE`; a debug build only).
    pub fn hiding(name: &str, port: u16, hidden: &str) -> Traced {
        let doc = std::env::temp_dir().join(format!("td-{name}-{port}.json"));
        let rec = std::env::temp_dir().join(format!("td-{name}-{port}.tdrec"));
        Traced::spawn(doc, rec, port, Command::new(TRACE).env(PROBE_HIDE, hidden))
    }

    /// The document and the recording at the paths given.
    pub fn at(doc: PathBuf, rec: PathBuf, port: u16) -> Traced {
        Traced::spawn(doc, rec, port, &mut Command::new(TRACE))
    }

    fn spawn(doc: PathBuf, rec: PathBuf, port: u16, tracer: &mut Command) -> Traced {
        let tracer = Tracer::spawn(tracer.args([
            "-o",
            doc.to_str().unwrap(),
            "--record",
            rec.to_str().unwrap(),
            "-P",
            &port.to_string(),
        ]));
        Traced { tracer, doc, rec }
    }

    /// Stops the tracer with `signal`; returns its document and the recording replayed
    /// with `replay_args`, a line per item.
    pub fn stop(self, signal: i32, replay_args: &[&str]) -> (Value, Vec<String>) {
        assert_eq!(self.tracer.stop(signal).0, 0);
        let doc = std::fs::read(&self.doc).expect("document written");
        let replayed = Command::new(TRACE)
            .args(["--replay", self.rec.to_str().unwrap()])
            .args(replay_args)
            .output()
            .unwrap();
        std::fs::remove_file(&self.doc).ok();
        std::fs::remove_file(&self.rec).ok();
        assert!(replayed.status.success());
        let lines = String::from_utf8_lossy(&replayed.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        (serde_json::from_slice(&doc).expect("valid JSON"), lines)
    }
}

/// Who played what in a `teardown-lab` run.
pub struct Played {
    pub server: u64,
    pub client: u64,
    pub child: Child,
}

pub fn play(pattern: &str, netns: &Netns, port: u16, extra: &[&str]) -> Played {
    let mut child = Command::new(LAB)
        .args([pattern, "--netns", &netns.0, "--port", &port.to_string()])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start teardown-lab");
    let mut first = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    let v: Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    Played {
        server: v["server_pid"].as_u64().unwrap(),
        client: v["client_pid"].as_u64().unwrap(),
        child,
    }
}

impl Played {
    pub fn finish(mut self) -> Played {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "teardown-lab failed: {status}");
        self
    }
}

pub fn timeline_of(timelines: &[Value], lport: u16) -> Option<&Value> {
    timelines.iter().find(|t| t["lport"] == lport)
}

pub fn both_ends(timelines: &[Value], port: u16) -> bool {
    timeline_of(timelines, port).is_some() && timelines.iter().any(|t| t["rport"] == port)
}

pub fn ends(timelines: &[Value], port: u16) -> (&Value, &Value) {
    let server = timeline_of(timelines, port).expect("server timeline");
    let client = timelines
        .iter()
        .find(|t| t["rport"] == port)
        .expect("client timeline");
    (server, client)
}

/// Runs `teardown-trace ARGS` as user nobody, with no privileges at all.
pub fn as_nobody(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", TRACE])
        .args(args)
        .output()
        .expect("setpriv")
}

/// Plays `pattern` in a new namespace under `teardown-trace --json -P PORT`; returns who
/// played what, the timelines of both ends and the port, once the tracer has stopped cleanly
/// without losing events.
pub fn traced(pattern: &str, extra: &[&str]) -> (Played, Vec<Value>, u16) {
    let (ns, port) = (Netns::new(), port());
    let tracer = Tracer::start(&["--json", "-P", &port.to_string()]);
    let played = play(pattern, &ns, port, extra).finish();
    let timelines = tracer.json_until(|got| both_ends(got, port));
    let (code, _, stderr) = tracer.stop(libc::SIGINT);
    assert_eq!(code, 0, "{stderr:?}");
    // Each socket names the namespace it lives in: the one this test made.
    let inode = std::os::unix::fs::MetadataExt::ino(
        &std::fs::metadata(format!("/run/netns/{}", ns.0)).expect("netns file"),
    );
    for t in &timelines {
        assert_eq!(t["netns"], inode, "{t}");
    }
    assert!(
        stderr.iter().any(|l| l.contains(" 0 lost events")),
        "{stderr:?}"
    );
    (played, timelines, port)
}

pub fn ms(v: &Value) -> f64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}")) as f64 / 1e6
}

pub fn transitions(t: &Value) -> Vec<(String, String)> {
    t["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tr| {
            (
                tr["from"].as_str().unwrap().into(),
                tr["to"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// When timeline `t` made the change `from` -> `to` (its last such change).
pub fn last_ts(t: &Value, from: &str, to: &str) -> u64 {
    t["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|tr| tr["from"] == from && tr["to"] == to)
        .and_then(|tr| tr["ts_ns"].as_u64())
        .unwrap_or_else(|| panic!("{from} -> {to} in {t}"))
}

pub fn pair(from: &str, to: &str) -> (String, String) {
    (from.into(), to.into())
}

/// CLOCK_MONOTONIC, the clock of the tracer's timestamps.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + *WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How many TCP sockets of the namespace `ss` lists in `state` (e.g. `close-wait`).
pub fn sockets_in(ns: &Netns, state: &str) -> usize {
    let out = run(Command::new("ip").args(["netns", "exec", &ns.0, "ss", "-Htan", "state", state]));
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// Firings of a kernel tracepoint that the BPF program of the same name neither ran for nor
/// counted as missed, since `start`: the oracle for firings the kernel runs no BPF program
/// for. ftrace counts the firings, in a tracefs instance of its own (a small ring that
/// overwrites: written = entries + overrun); the kernel's statistics count the program's
/// runs and misses (`BpfStats` must be on).
pub struct UnrunFirings {
    instance: PathBuf,
    /// The program whose runs and misses account for the firings.
    pub program: &'static str,
    before: (u64, u64),
}

impl UnrunFirings {
    /// Of `sock:inet_sock_set_state`, against the state program the running tracer loaded
    /// (its classic tracepoint variant on a kernel that may preempt a BTF program).
    pub fn of_transitions() -> UnrunFirings {
        let classic = "inet_sock_set_state_classic";
        let program = if newest_program(classic).is_some() {
            classic
        } else {
            "inet_sock_set_state"
        };
        UnrunFirings::start("sock", "inet_sock_set_state", program)
    }

    fn start(category: &str, event: &str, program: &'static str) -> UnrunFirings {
        static N: AtomicU16 = AtomicU16::new(0);
        let tracefs = PathBuf::from("/sys/kernel/tracing");
        let name = format!(
            "td-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let instance = tracefs.join("instances").join(name);
        std::fs::create_dir(&instance).unwrap_or_else(|e| panic!("{}: {e}", instance.display()));
        std::fs::write(instance.join("buffer_size_kb"), "64").unwrap();
        let enable = instance
            .join("events")
            .join(category)
            .join(event)
            .join("enable");
        std::fs::write(&enable, "1").unwrap_or_else(|e| panic!("{}: {e}", enable.display()));
        UnrunFirings {
            instance,
            program,
            before: program_stats(program),
        }
    }

    pub fn count(&self) -> u64 {
        let (runs, misses) = program_stats(self.program);
        let accounted = (runs - self.before.0) + (misses - self.before.1);
        self.fired().saturating_sub(accounted)
    }

    fn fired(&self) -> u64 {
        std::fs::read_dir(self.instance.join("per_cpu"))
            .unwrap()
            .filter_map(|cpu| std::fs::read_to_string(cpu.ok()?.path().join("stats")).ok())
            .flat_map(|stats| {
                stats
                    .lines()
                    .filter_map(|l| {
                        let (key, value) = l.split_once(": ")?;
                        matches!(key, "entries" | "overrun").then(|| value.trim().parse().ok())?
                    })
                    .collect::<Vec<u64>>()
            })
            .sum()
    }
}

impl Drop for UnrunFirings {
    fn drop(&mut self) {
        std::fs::write(self.instance.join("events").join("enable"), "0").ok();
        std::fs::remove_dir(&self.instance).ok();
    }
}

/// Turns on `kernel.bpf_stats_enabled` (run counts) for as long as it lives.
pub struct BpfStats(String);

impl BpfStats {
    const KNOB: &str = "/proc/sys/kernel/bpf_stats_enabled";

    pub fn enable() -> BpfStats {
        let before = std::fs::read_to_string(Self::KNOB).unwrap();
        std::fs::write(Self::KNOB, "1").unwrap();
        BpfStats(before)
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        std::fs::write(Self::KNOB, self.0.trim()).ok();
    }
}

/// `bpftool prog show`'s line for the newest loaded program called `name`, if any.
fn newest_program(name: &str) -> Option<String> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "name", name])
        .output()
        .expect("bpftool");
    String::from_utf8_lossy(&out.stdout)
        .split('\n')
        .rfind(|l| l.split_whitespace().skip_while(|w| *w != "name").nth(1) == Some(name))
        .map(str::to_string)
}

/// `run_cnt` and `recursion_misses` of the newest loaded program called `name`.
pub fn program_stats(name: &str) -> (u64, u64) {
    let newest = newest_program(name).unwrap_or_else(|| panic!("no program {name} loaded"));
    let number_after = |key: &str| {
        let mut words = newest.split_whitespace().skip_while(|w| *w != key);
        words.nth(1).map_or(0, |n| n.parse().unwrap())
    };
    (number_after("run_cnt"), number_after("recursion_misses"))
}
