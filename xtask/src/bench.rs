//! `cargo xtask bench`: what tracing costs a host that churns through connections, measured
//! against the floor (the same hooks attached, every program returning at once).
//!
//! The load is `teardown-lab churn` (connect, one byte, server closes, client closes) on
//! loopback. Each round runs it untraced, at the floor, under teardown-trace in each output
//! mode and under libbpf-tools' `tcpstates` when installed, interleaved so that drift on this
//! noisy machine hits all of them alike; once with one client at a time and once with both
//! CPUs busy. The BPF programs' run time needs the kernel's statistics, which slow every
//! program down a little, so it is measured in rounds of its own. Then: memory over a
//! million connections, `--json` latency at light load, and the targets beside the results.

use std::{
    io::{BufRead, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::{FromRawFd, OwnedFd},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc, OnceLock,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::workspace_root;

#[derive(clap::Args)]
pub struct Options {
    /// Connections per churn run
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Client connections at once, one set of rounds each (1: one client, about the
    /// reference loop; 2: full churn, both CPUs busy)
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2])]
    concurrency: Vec<u64>,
    /// Interleaved rounds of every row
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Rounds with the kernel's BPF statistics on, for the programs' run time
    #[arg(long, default_value_t = 3)]
    bpf_rounds: usize,
    /// Also run the text and --json rows with this other build of teardown-trace (the one
    /// before a change, say), interleaved with the others
    #[arg(long, value_name = "TEARDOWN_TRACE")]
    compare: Option<PathBuf>,
    /// Connections for the memory run (0 skips it)
    #[arg(long, default_value_t = 1_000_000)]
    memory_count: u64,
    /// Instead: time `teardown-trace --leaks` over this many CLOSE_WAIT and as many
    /// TIME_WAIT sockets (0: the churn benchmark)
    #[arg(long, value_name = "SOCKETS", default_missing_value = "50000", num_args = 0..=1, default_value_t = 0)]
    snapshot: u64,
}

/// What runs beside the churn.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Row {
    Untraced,
    Floor,
    Text,
    Json,
    Summary,
    Metrics,
    Tcpstates,
    /// The text and --json rows with the `--compare` build.
    TextCompared,
    JsonCompared,
}

/// The `--compare` build.
static COMPARED: OnceLock<PathBuf> = OnceLock::new();

impl Row {
    const TEARDOWN: [Row; 4] = [Row::Text, Row::Json, Row::Summary, Row::Metrics];

    fn name(self) -> &'static str {
        match self {
            Row::Untraced => "untraced",
            Row::Floor => "floor: hooks attached, programs return at once",
            Row::Text => "teardown-trace (text)",
            Row::Json => "teardown-trace --json",
            Row::Summary => "teardown-trace --summary",
            Row::Metrics => "teardown-trace --metrics ADDR --summary 60",
            Row::Tcpstates => "tcpstates",
            Row::TextCompared => "teardown-trace (text), --compare build",
            Row::JsonCompared => "teardown-trace --json, --compare build",
        }
    }

    fn is_teardown(self) -> bool {
        Row::TEARDOWN.contains(&self)
    }
}

/// One run's measurements.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    per_second: f64,
    /// CPU of the tracer's threads while the churn ran (start-up excluded), in ns.
    user_ns: u64,
    /// Run time of the tracer's BPF programs, in ns (0 unless the statistics are on).
    bpf_ns: u64,
    bpf_runs: u64,
    max_rss_kb: u64,
    lost: u64,
    scrapes: u64,
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

/// A free port on loopback for the metrics endpoint.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running tracer, whose stderr is read in the background.
struct Running {
    child: Child,
    stderr: mpsc::Receiver<String>,
    metrics: Option<SocketAddr>,
}

fn start(row: Row, extra: &[&str], stdout: Stdio) -> Result<Option<Running>> {
    let mut metrics = None;
    let mut cmd = match row {
        Row::Untraced => return Ok(None),
        Row::Tcpstates => Command::new(tcpstates().context("tcpstates is not installed")?),
        _ => {
            let mut cmd = match row {
                Row::TextCompared | Row::JsonCompared => {
                    Command::new(COMPARED.get().context("no --compare build")?)
                }
                _ => Command::new(bin("teardown-trace")),
            };
            match row {
                Row::Floor => cmd.arg("--bench-floor"),
                Row::Json | Row::JsonCompared => cmd.arg("--json"),
                Row::Summary => cmd.arg("--summary"),
                Row::Metrics => {
                    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
                    metrics = Some(addr);
                    cmd.args(["--metrics", &addr.to_string(), "--summary", "60"])
                }
                _ => &mut cmd,
            };
            cmd.args(extra);
            cmd
        }
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", row.name()))?;
    let (tx, rx) = mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().context("stderr")?);
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    if row == Row::Tcpstates {
        // tcpstates says nothing on stderr: give it time to attach.
        std::thread::sleep(Duration::from_secs(2));
    } else {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("Tracing") => break,
                Ok(_) => continue,
                Err(_) => bail!("{} did not start", row.name()),
            }
        }
    }
    Ok(Some(Running {
        child,
        stderr: rx,
        metrics,
    }))
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

/// Stops a tracer with SIGINT; returns its peak RSS (KiB) and its stderr.
fn stop(running: Running) -> Result<(u64, Vec<String>)> {
    let pid = running.child.id() as i32;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let usage = reap(pid).context("the tracer did not exit cleanly")?;
    Ok((usage.ru_maxrss as u64, running.stderr.iter().collect()))
}

/// Events a tracer said it lost: teardown-trace warns "WARNING: N events lost (why)" as it
/// happens, whatever the mode; tcpstates says "lost N events on CPU #C".
fn lost_in(lines: &[String]) -> u64 {
    lines
        .iter()
        .filter_map(|l| {
            let rest = l
                .strip_prefix("teardown-trace: WARNING: ")
                .or_else(|| l.strip_prefix("lost "))?;
            rest.contains(" events").then(|| number_after(rest, ""))?
        })
        .sum()
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

/// CPU time of all threads of a process so far, in ns: the first field of each
/// /proc/PID/task/TID/schedstat, finer than the clock ticks of /proc/PID/stat.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Run time and run count summed over the BPF programs a process holds, from the
/// `run_time_ns` and `run_cnt` lines of their /proc/PID/fdinfo (counted only while the
/// kernel's statistics are on).
fn bpf_runtime(pid: u32) -> (u64, u64) {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return (0, 0);
    };
    let mut total = (0, 0);
    for info in fds.filter_map(|f| std::fs::read_to_string(f.ok()?.path()).ok()) {
        if !info.contains("prog_id:") {
            continue;
        }
        total.0 += number_after(&info, "run_time_ns:").unwrap_or(0);
        total.1 += number_after(&info, "run_cnt:").unwrap_or(0);
    }
    total
}

/// Turns the kernel's BPF run-time statistics on for as long as the descriptor lives
/// (`BPF_ENABLE_STATS`: counted per holder, so other users of the sysctl are not disturbed).
fn bpf_stats() -> Result<OwnedFd> {
    const BPF_ENABLE_STATS: libc::c_long = 32;
    // union bpf_attr { struct { __u32 type; } enable_stats; ... }: BPF_STATS_RUN_TIME is 0.
    let attr = [0u64; 8];
    // SAFETY: the kernel reads `size_of_val(&attr)` bytes of the zeroed attr we own.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_ENABLE_STATS,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("enabling BPF statistics");
    }
    // SAFETY: a new descriptor the kernel just gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Scrapes `http://ADDR/metrics` every half second until told to stop, as Prometheus
/// would; counts the answers that hold the tracer's series.
struct Scraper {
    done: Arc<AtomicBool>,
    scrapes: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Scraper {
    fn start(addr: SocketAddr) -> Scraper {
        let done = Arc::new(AtomicBool::new(false));
        let scrapes = Arc::new(AtomicU64::new(0));
        let (d, s) = (done.clone(), scrapes.clone());
        let thread = std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                if scrape(addr).is_some_and(|body| body.contains("teardown_events_total")) {
                    s.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        Scraper {
            done,
            scrapes,
            thread,
        }
    }

    fn stop(self) -> u64 {
        self.done.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.scrapes.load(Ordering::Relaxed)
    }
}

fn scrape(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    body.starts_with("HTTP/1.1 200").then_some(body)
}

/// Waits until the tracer has drained what the churn left (its CPU time stops rising).
fn settled_cpu_ns(pid: u32) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = cpu_ns(pid);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = cpu_ns(pid);
        if now - last < 1_000_000 || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

fn sample(row: Row, count: u64, concurrency: u64) -> Result<Sample> {
    let Some(running) = start(row, &[], Stdio::null())? else {
        return Ok(Sample {
            per_second: churn(count, concurrency)?,
            ..Default::default()
        });
    };
    let pid = running.child.id();
    let scraper = running.metrics.map(Scraper::start);
    let (cpu_before, (bpf_before, runs_before)) = (cpu_ns(pid), bpf_runtime(pid));
    let per_second = churn(count, concurrency)?;
    let (bpf_after, runs_after) = bpf_runtime(pid);
    let cpu_after = settled_cpu_ns(pid);
    let scrapes = scraper.map_or(0, Scraper::stop);
    let (max_rss_kb, lines) = stop(running)?;
    Ok(Sample {
        per_second,
        user_ns: cpu_after.saturating_sub(cpu_before),
        bpf_ns: bpf_after.saturating_sub(bpf_before),
        bpf_runs: runs_after.saturating_sub(runs_before),
        max_rss_kb,
        lost: lost_in(&lines),
        scrapes,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Connections in the light-load run: its worst case is a maximum over twice as many
/// timelines.
const LIGHT_LOAD_CONNECTIONS: usize = 50;

/// Light load: one connection every 100 ms; how long after its last transition does the
/// NDJSON line for it come out?
fn json_latency() -> Result<Vec<f64>> {
    let mut running = start(Row::Json, &["-P", "9098"], Stdio::piped())?.context("tracer")?;
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
    for _ in 0..LIGHT_LOAD_CONNECTIONS {
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

/// Every row's samples at one concurrency.
struct Churn {
    concurrency: u64,
    rows: Vec<Row>,
    rates: Vec<(Row, Sample)>,
    bpf: Vec<(Row, Sample)>,
}

/// The medians of one row.
struct Medians {
    rate: f64,
    ratio: f64,
    /// Points below the floor's ratio (negative: above it).
    to_floor: f64,
    bpf_ns: f64,
    user_ns: f64,
    lost: u64,
    rss_kb: u64,
    scrapes: u64,
}

impl Churn {
    fn of(&self, row: Row, from: &[(Row, Sample)]) -> Vec<Sample> {
        from.iter()
            .filter(|(r, _)| *r == row)
            .map(|(_, s)| *s)
            .collect()
    }

    fn result(&self, row: Row, count: u64) -> Medians {
        let rate_of = |r| {
            median(
                self.of(r, &self.rates)
                    .iter()
                    .map(|s| s.per_second)
                    .collect(),
            )
        };
        let base = rate_of(Row::Untraced);
        let rate = rate_of(row);
        let samples = self.of(row, &self.rates);
        let bpf: Vec<f64> = self
            .of(row, &self.bpf)
            .iter()
            .filter(|s| s.bpf_runs > 0)
            .map(|s| s.bpf_ns as f64 / (count / 2) as f64)
            .collect();
        Medians {
            rate,
            ratio: rate / base,
            to_floor: 100.0 * (rate_of(Row::Floor) - rate) / base,
            bpf_ns: median(bpf),
            user_ns: median(
                samples
                    .iter()
                    .map(|s| s.user_ns as f64 / count as f64)
                    .collect(),
            ),
            lost: samples.iter().map(|s| s.lost).sum(),
            rss_kb: samples.iter().map(|s| s.max_rss_kb).max().unwrap_or(0),
            scrapes: samples.iter().map(|s| s.scrapes).sum(),
        }
    }
}

fn churn_rounds(options: &Options, concurrency: u64, rows: &[Row]) -> Result<Churn> {
    let mut churn = Churn {
        concurrency,
        rows: rows.to_vec(),
        rates: Vec::new(),
        bpf: Vec::new(),
    };
    for round in 1..=options.rounds {
        for &row in rows {
            let s = sample(row, options.count, concurrency)?;
            eprintln!(
                "bench: concurrency {concurrency} round {round} {:<45} {:>8.0} conn/s",
                row.name(),
                s.per_second
            );
            churn.rates.push((row, s));
        }
    }
    let _stats = bpf_stats()?;
    for round in 1..=options.bpf_rounds {
        for &row in rows.iter().filter(|r| **r != Row::Untraced) {
            let s = sample(row, options.count / 2, concurrency)?;
            eprintln!(
                "bench: concurrency {concurrency} BPF round {round} {:<45} {:>6.0} ns per connection",
                row.name(),
                s.bpf_ns as f64 / (options.count / 2) as f64
            );
            churn.bpf.push((row, s));
        }
    }
    Ok(churn)
}

fn print_churn(churn: &Churn, options: &Options) {
    println!(
        "\n#### churn: {} connections x {} rounds, concurrency {}\n",
        options.count, options.rounds, churn.concurrency
    );
    println!(
        "| tracer | median conn/s | vs untraced | below the floor (points) | vs tcpstates \
         | BPF ns/conn | tracer process ns/conn | total ns/conn | peak RSS | events lost |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let tcpstates = churn
        .rows
        .contains(&Row::Tcpstates)
        .then(|| churn.result(Row::Tcpstates, options.count).rate);
    for &row in &churn.rows {
        let r = churn.result(row, options.count);
        let versus = match tcpstates {
            Some(t) if row.is_teardown() => format!("{:.2}x", r.rate / t),
            _ => "-".into(),
        };
        let (to_floor, cpu, rss, lost) = if row == Row::Untraced {
            (
                "-".into(),
                ["-".to_string(), "-".into(), "-".into()],
                "-".into(),
                "-".into(),
            )
        } else {
            let ns = |v: f64| {
                if v.is_nan() {
                    "-".into()
                } else {
                    format!("{v:.0}")
                }
            };
            let lost = if row == Row::Floor {
                "-".into()
            } else {
                r.lost.to_string()
            };
            (
                if row == Row::Floor {
                    "0".into()
                } else {
                    format!("{:.1}", r.to_floor)
                },
                [ns(r.bpf_ns), ns(r.user_ns), ns(r.bpf_ns + r.user_ns)],
                format!("{:.1} MB", r.rss_kb as f64 / 1024.0),
                lost,
            )
        };
        println!(
            "| {} | {:.0} | {:.3} | {to_floor} | {versus} | {} | {} | {} | {rss} | {lost} |",
            row.name(),
            r.rate,
            r.ratio,
            cpu[0],
            cpu[1],
            cpu[2]
        );
    }
    if churn.rows.contains(&Row::Metrics) {
        let scrapes = churn.result(Row::Metrics, options.count).scrapes;
        println!("\nThe metrics endpoint answered {scrapes} scrapes (one every 0.5 s) during these rounds.");
    }
}

/// One line of the targets table.
fn target(what: &str, result: String, met: bool) {
    let met = if met { "met" } else { "**not met**" };
    println!("| {what} | {result} | {met} |");
}

fn print_targets(churns: &[Churn], options: &Options, rss_kb: Option<u64>, worst_ms: f64) {
    println!("\n#### targets (issue #13; the metrics mode: #15)\n");
    println!("| target | result | |");
    println!("|---|---|---|");
    let count = options.count;
    for churn in churns {
        let c = churn.concurrency;
        let full = c > 1;
        let limits: &[(Row, f64)] = if full {
            &[
                (Row::Text, 5.0),
                (Row::Json, 8.0),
                (Row::Summary, 3.0),
                (Row::Metrics, 3.0),
            ]
        } else {
            &[(Row::Text, 2.0), (Row::Json, 2.0)]
        };
        for &(row, limit) in limits {
            let r = churn.result(row, count);
            target(
                &format!(
                    "concurrency {c}: {} within {limit} points of the floor",
                    row.name()
                ),
                format!("{:.1} points", r.to_floor),
                r.to_floor <= limit,
            );
        }
        if full && churn.rows.contains(&Row::Tcpstates) {
            let theirs = churn.result(Row::Tcpstates, count).rate;
            for row in [Row::Text, Row::Json] {
                let ours = churn.result(row, count).rate / theirs;
                target(
                    &format!("concurrency {c}: {} at >= 5x tcpstates' rate", row.name()),
                    format!("{ours:.2}x"),
                    ours >= 5.0,
                );
            }
        }
        for row in Row::TEARDOWN {
            let r = churn.result(row, count);
            let total = r.bpf_ns + r.user_ns;
            target(
                &format!("concurrency {c}: {} CPU per connection <= 3 us", row.name()),
                format!(
                    "{:.2} us ({:.2} BPF + {:.2} tracer process)",
                    total / 1e3,
                    r.bpf_ns / 1e3,
                    r.user_ns / 1e3
                ),
                total <= 3000.0,
            );
        }
    }
    let lost: u64 = churns
        .iter()
        .flat_map(|c| Row::TEARDOWN.map(|row| c.result(row, count).lost))
        .sum();
    target(
        "0 lost events (every teardown-trace row, every round)",
        lost.to_string(),
        lost == 0,
    );
    if let Some(kb) = rss_kb {
        target(
            &format!(
                "peak RSS <= 48 MB over {} connections",
                options.memory_count
            ),
            format!("{:.1} MB", kb as f64 / 1024.0),
            kb <= 48 * 1024,
        );
    }
    target(
        "light load: a teardown in --json within 50 ms, worst case",
        format!("{worst_ms:.1} ms"),
        worst_ms <= 50.0,
    );
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn run(options: &Options) -> Result<()> {
    if options.snapshot > 0 {
        return crate::snapshot_bench::run_bench(options.snapshot);
    }
    let mut rows = vec![
        Row::Untraced,
        Row::Floor,
        Row::Text,
        Row::Json,
        Row::Summary,
        Row::Metrics,
    ];
    if tcpstates().is_some() {
        rows.push(Row::Tcpstates);
    } else {
        eprintln!("bench: tcpstates not installed (apt-get install libbpf-tools): skipping it");
    }
    if let Some(path) = &options.compare {
        COMPARED.get_or_init(|| path.clone());
        rows.extend([Row::TextCompared, Row::JsonCompared]);
    }
    let load_before = load_average();
    let mut churns = Vec::new();
    for &concurrency in &options.concurrency {
        churns.push(churn_rounds(options, concurrency, &rows)?);
    }
    let load_after = load_average();

    let mut rss = None;
    let memory = if options.memory_count > 0 {
        let concurrency = options.concurrency.iter().copied().max().unwrap_or(2);
        let running = start(Row::Json, &[], Stdio::null())?.context("tracer")?;
        churn(options.memory_count, concurrency)?;
        let (kb, lines) = stop(running)?;
        rss = Some(kb);
        Some((kb, lost_in(&lines)))
    } else {
        None
    };
    let latencies = json_latency()?;
    let worst = latencies.iter().copied().fold(0.0, f64::max);

    println!("\nload average (1, 5, 15 min) before the churns: {load_before}; after: {load_after}");
    for churn in &churns {
        print_churn(churn, options);
    }
    println!(
        "\nBPF ns/conn: run time of all the tracer's programs, from the kernel's statistics (in \
         {} rounds of {} connections of their own, as they slow every program down); the \
         floor's value is what the statistics measure around programs that do nothing. Tracer \
         process: CPU of all its threads (user and system) during the churn and its drain.",
        options.bpf_rounds,
        options.count / 2
    );
    if let Some((kb, lost)) = memory {
        println!(
            "\n#### memory: {} connections through teardown-trace --json: peak RSS {:.1} MB, {lost} events lost",
            options.memory_count,
            kb as f64 / 1024.0,
        );
    }
    println!(
        "\n#### light load: CLOSE to NDJSON line: median {:.1} ms, max {worst:.1} ms ({} timelines)",
        median(latencies.clone()),
        latencies.len()
    );
    print_targets(&churns, options, rss, worst);
    Ok(())
}
