//! `cargo xtask bench`: what tracing costs a host that churns through connections.
//!
//! The load is `teardown-lab churn` (connect, one byte, server closes, client closes) on the
//! loopback of a private namespace. Each round runs it untraced, under `teardown-trace
//! --json` (reconstructing and writing JSON, to /dev/null) and under libbpf-tools'
//! `tcpstates` when installed, interleaved so that drift on this noisy machine hits all of
//! them alike. Then, separately (statistics slow every BPF program down a little):
//! BPF ns per event, memory over a million connections, and `--json` latency at light load.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::workspace_root;

#[derive(clap::Args)]
pub struct Options {
    /// Connections per churn run
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Client connections at once
    #[arg(long, default_value_t = 2)]
    concurrency: u64,
    /// Rounds of (untraced, teardown-trace, tcpstates)
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Connections for the memory run (0 skips it)
    #[arg(long, default_value_t = 1_000_000)]
    memory_count: u64,
    /// Instead: time `teardown-trace --leaks` over this many CLOSE_WAIT and as many
    /// TIME_WAIT sockets (0: the churn benchmark)
    #[arg(long, value_name = "SOCKETS", default_missing_value = "50000", num_args = 0..=1, default_value_t = 0)]
    snapshot: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tracer {
    None,
    Teardown,
    Tcpstates,
}

impl Tracer {
    fn name(self) -> &'static str {
        match self {
            Tracer::None => "untraced",
            Tracer::Teardown => "teardown-trace --json",
            Tracer::Tcpstates => "tcpstates",
        }
    }
}

/// One run's measurements.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    per_second: f64,
    /// CPU the tracer used while the churn ran (start-up excluded).
    cpu_ns: u64,
    max_rss_kb: u64,
    events: u64,
    lost: u64,
}

pub fn bin(name: &str) -> PathBuf {
    workspace_root().join("target/release").join(name)
}

fn tcpstates() -> Option<PathBuf> {
    ["/usr/sbin/tcpstates", "/usr/bin/tcpstates"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// A running tracer, whose stderr is read in the background.
struct Running {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

fn start(tracer: Tracer, extra: &[&str], stdout: Stdio) -> Result<Option<Running>> {
    let mut cmd = match tracer {
        Tracer::None => return Ok(None),
        Tracer::Teardown => {
            let mut cmd = Command::new(bin("teardown-trace"));
            cmd.arg("--json").args(extra);
            cmd
        }
        Tracer::Tcpstates => Command::new(tcpstates().context("tcpstates is not installed")?),
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", tracer.name()))?;
    let (tx, rx) = mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().context("stderr")?);
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    if tracer == Tracer::Teardown {
        // Ready once it says so; tcpstates says nothing on stderr, so give it time to attach.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("Tracing") => break,
                Ok(_) => continue,
                Err(_) => bail!("teardown-trace did not start"),
            }
        }
    } else {
        std::thread::sleep(Duration::from_secs(2));
    }
    Ok(Some(Running { child, stderr: rx }))
}

/// Waits for the child `pid`, which must exit with 0; returns its resource usage.
pub fn reap(pid: i32) -> Result<libc::rusage> {
    // SAFETY: reaping our own child; rusage is written by wait4.
    let (status, usage) = unsafe {
        let mut status = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::wait4(pid, &mut status, 0, &mut usage);
        (status, usage)
    };
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("exit status {status:#x}");
    }
    Ok(usage)
}

/// Stops a tracer with SIGINT and returns its whole CPU time, peak RSS and closing stderr.
fn stop(running: Running) -> Result<(u64, u64, Vec<String>)> {
    let pid = running.child.id() as i32;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let usage = reap(pid).context("the tracer did not exit cleanly")?;
    let tv_ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1000;
    let cpu = tv_ns(usage.ru_utime) + tv_ns(usage.ru_stime);
    let lines = running.stderr.iter().collect();
    Ok((cpu, usage.ru_maxrss as u64, lines))
}

fn churn(count: u64, concurrency: u64) -> Result<f64> {
    let out = Command::new(bin("teardown-lab"))
        .args(["churn", "--port", "9099", "--count", &count.to_string()])
        .args(["--concurrency", &concurrency.to_string()])
        .output()
        .context("running teardown-lab churn")?;
    if !out.status.success() {
        bail!("churn failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let result = text.lines().last().unwrap_or_default();
    let failures = number_after(result, "\"failures\":").unwrap_or(1);
    if failures > 0 {
        bail!("churn had {failures} failed connections: {result}");
    }
    number_after(result, "\"per_second\":")
        .map(|v| v as f64)
        .with_context(|| format!("no rate in {result:?}"))
}

fn number_after(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The number just before `suffix` in teardown-trace's summary line.
fn summary_number(lines: &[String], suffix: &str) -> u64 {
    lines
        .iter()
        .find_map(|l| {
            let end = l.find(suffix)?;
            let start = l[..end].trim_end().rfind([' ', '(']).map_or(0, |i| i + 1);
            l[start..end].trim().parse().ok()
        })
        .unwrap_or(0)
}

/// CPU time of a (single-threaded) process so far, in ns: the first field of
/// /proc/PID/schedstat, finer than the clock ticks of /proc/PID/stat.
fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn sample(tracer: Tracer, options: &Options) -> Result<Sample> {
    let running = start(tracer, &[], Stdio::null())?;
    let before = running.as_ref().map_or(0, |r| cpu_ns(r.child.id()));
    let per_second = churn(options.count, options.concurrency)?;
    let mut s = Sample {
        per_second,
        ..Default::default()
    };
    if let Some(running) = running {
        // Let the tracer drain what the churn left in the ring before reading its CPU.
        std::thread::sleep(Duration::from_millis(200));
        s.cpu_ns = cpu_ns(running.child.id()).saturating_sub(before);
        let (_, rss, lines) = stop(running)?;
        s.max_rss_kb = rss;
        s.events = summary_number(&lines, " events seen");
        s.lost = summary_number(&lines, " lost events");
    }
    Ok(s)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Average run time per invocation of each named BPF program, from `bpftool`.
fn bpf_ns_per_run(names: &[&str]) -> Result<Vec<(String, f64, u64)>> {
    let out = Command::new("bpftool")
        .args(["prog", "show"])
        .output()
        .context("bpftool")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut found = Vec::new();
    for line in text.lines() {
        let Some(name) = line.split_whitespace().skip_while(|w| *w != "name").nth(1) else {
            continue;
        };
        if !names.contains(&name) {
            continue;
        }
        let (Some(ns), Some(cnt)) = (
            number_after(line, "run_time_ns "),
            number_after(line, "run_cnt "),
        ) else {
            continue;
        };
        if cnt > 0 {
            found.push((name.to_string(), ns as f64 / cnt as f64, cnt));
        }
    }
    Ok(found)
}

fn with_bpf_stats<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    const KNOB: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let before = std::fs::read_to_string(KNOB).unwrap_or_else(|_| "0".into());
    std::fs::write(KNOB, "1").context("enabling kernel.bpf_stats_enabled")?;
    let result = f();
    let _ = std::fs::write(KNOB, before.trim());
    result
}

fn bpf_cost(
    tracer: Tracer,
    programs: &[&str],
    options: &Options,
) -> Result<Vec<(String, f64, u64)>> {
    with_bpf_stats(|| {
        let running = start(tracer, &[], Stdio::null())?.context("a tracer")?;
        churn(options.count / 2, options.concurrency)?;
        let costs = bpf_ns_per_run(programs);
        stop(running)?;
        costs
    })
}

/// Light load: one connection every 100 ms; how long after its last transition does the
/// NDJSON line for it come out?
fn json_latency() -> Result<Vec<f64>> {
    let mut running =
        start(Tracer::Teardown, &["-P", "9098"], Stdio::piped())?.context("tracer")?;
    let stdout = BufReader::new(running.child.stdout.take().context("stdout")?);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let mut now = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime writes into `now`.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
            let _ = tx.send((line, now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64));
        }
    });
    let mut latencies = Vec::new();
    for _ in 0..10 {
        let out = Command::new(bin("teardown-lab"))
            .args(["server-closes", "--port", "9098", "--delay-ms", "0"])
            .output()?;
        if !out.status.success() {
            bail!(
                "teardown-lab failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for _ in 0..2 {
            let (line, seen) = rx
                .recv_timeout(Duration::from_secs(5))
                .context("no timeline came")?;
            let closed = line
                .rfind("\"to\":\"CLOSE\",\"ts_ns\":")
                .and_then(|i| number_after(&line[i..], "\"ts_ns\":"))
                .context("timeline without CLOSE")?;
            latencies.push(seen.saturating_sub(closed) as f64 / 1e6);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop(running)?;
    Ok(latencies)
}

pub fn run(options: &Options) -> Result<()> {
    if options.snapshot > 0 {
        return crate::snapshot_bench::run_bench(options.snapshot);
    }
    let mut tracers = vec![Tracer::None, Tracer::Teardown];
    if tcpstates().is_some() {
        tracers.push(Tracer::Tcpstates);
    } else {
        eprintln!("bench: tcpstates not installed (apt-get install libbpf-tools): skipping it");
    }
    let mut samples: Vec<(Tracer, Sample)> = Vec::new();
    for round in 1..=options.rounds {
        for &tracer in &tracers {
            let s = sample(tracer, options)?;
            eprintln!(
                "bench: round {round} {:<24} {:>8.0} conn/s",
                tracer.name(),
                s.per_second
            );
            samples.push((tracer, s));
        }
    }
    let of = |t: Tracer| {
        samples
            .iter()
            .filter(move |(x, _)| *x == t)
            .map(|(_, s)| *s)
    };
    let base = median(of(Tracer::None).map(|s| s.per_second).collect());

    println!(
        "\n## churn: {} connections x {} rounds, concurrency {}\n",
        options.count, options.rounds, options.concurrency
    );
    println!("| tracer | median conn/s | vs untraced | tracer CPU per event (during churn) | peak RSS | events lost |");
    println!("|---|---|---|---|---|---|");
    for &tracer in &tracers {
        let rate = median(of(tracer).map(|s| s.per_second).collect());
        let (cpu, rss, lost) = if tracer == Tracer::None {
            ("-".to_string(), "-".to_string(), "-".to_string())
        } else {
            let per_event: Vec<f64> = of(tracer)
                .filter(|s| s.events > 0)
                .map(|s| s.cpu_ns as f64 / s.events as f64)
                .collect();
            let cpu = if per_event.is_empty() {
                "-".into()
            } else {
                format!("{:.0} ns", median(per_event))
            };
            let rss = of(tracer).map(|s| s.max_rss_kb).max().unwrap_or(0);
            let lost: u64 = of(tracer).map(|s| s.lost).sum();
            let lost = if tracer == Tracer::Teardown {
                lost.to_string()
            } else {
                "not reported".into()
            };
            (cpu, format!("{:.1} MB", rss as f64 / 1024.0), lost)
        };
        println!(
            "| {} | {rate:.0} | {:.2} | {cpu} | {rss} | {lost} |",
            tracer.name(),
            rate / base
        );
    }
    if tracers.contains(&Tracer::Tcpstates) {
        let ours = median(of(Tracer::Teardown).map(|s| s.per_second).collect());
        let theirs = median(of(Tracer::Tcpstates).map(|s| s.per_second).collect());
        println!(
            "\nteardown-trace / tcpstates throughput: {:.2}x",
            ours / theirs
        );
    }

    println!(
        "\n## BPF cost per event (kernel.bpf_stats_enabled, {} connections)\n",
        options.count / 2
    );
    println!("| tracer | program | ns per run | runs |");
    println!("|---|---|---|---|");
    let ours = [
        "inet_sock_set_state",
        "inet_sock_set_state_nested",
        "sys_exit_accept",
        "tcp_send_reset",
        "tcp_receive_reset",
    ];
    for (name, ns, runs) in bpf_cost(Tracer::Teardown, &ours, options)? {
        println!("| teardown-trace | {name} | {ns:.0} | {runs} |");
    }
    if tracers.contains(&Tracer::Tcpstates) {
        for (name, ns, runs) in bpf_cost(Tracer::Tcpstates, &["handle_set_state"], options)? {
            println!("| tcpstates | {name} | {ns:.0} | {runs} |");
        }
    }

    if options.memory_count > 0 {
        let running = start(Tracer::Teardown, &[], Stdio::null())?.context("tracer")?;
        churn(options.memory_count, options.concurrency)?;
        let (_, rss, lines) = stop(running)?;
        println!(
            "\n## memory: {} connections through teardown-trace --json: peak RSS {:.1} MB, {} events, {} lost",
            options.memory_count,
            rss as f64 / 1024.0,
            summary_number(&lines, " events seen"),
            summary_number(&lines, " lost events")
        );
    }

    let latencies = json_latency()?;
    let max = latencies.iter().copied().fold(0.0, f64::max);
    println!(
        "\n## light load: CLOSE to NDJSON line: median {:.1} ms, max {max:.1} ms ({} timelines)",
        median(latencies.clone()),
        latencies.len()
    );
    Ok(())
}
