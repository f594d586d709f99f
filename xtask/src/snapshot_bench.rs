//! `cargo xtask bench --snapshot`: how long `teardown-trace --leaks` takes, and how much
//! memory, on a host with tens of thousands of CLOSE_WAIT and TIME_WAIT sockets.
//!
//! The sockets are real: in a private namespace, `teardown-lab churn` leaves its server's
//! sockets in TIME_WAIT, and `teardown-lab leak-many` has four processes hold sockets in
//! CLOSE_WAIT (their client's ends wait as FIN_WAIT2 mini-sockets). `ss -tanp`, which
//! does the same work (sock_diag and /proc/PID/fd), runs beside it for comparison.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use crate::bench::{bin, reap};

/// A namespace of this run, removed when dropped.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One run of a command: wall and CPU seconds, peak RSS (KiB), first line of its output.
struct Run {
    wall: f64,
    cpu: f64,
    rss_kb: u64,
    first_line: String,
}

fn measure(cmd: &mut Command) -> Result<Run> {
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("{cmd:?}"))?;
    let pid = child.id() as i32;
    let mut stdout = String::new();
    let mut reader = BufReader::new(child.stdout.context("stdout")?);
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 {
        // Only the first line is kept: `ss` prints one per socket.
        if stdout.is_empty() {
            stdout = line.clone();
        }
        line.clear();
    }
    let usage = reap(pid).with_context(|| format!("{cmd:?} failed"))?;
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    Ok(Run {
        wall: started.elapsed().as_secs_f64(),
        cpu: secs(usage.ru_utime) + secs(usage.ru_stime),
        rss_kb: usage.ru_maxrss as u64,
        first_line: stdout,
    })
}

fn number_after(text: &str, key: &str) -> u64 {
    text.find(key)
        .map(|i| &text[i + key.len()..])
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0)
}

pub fn run_bench(sockets: u64) -> Result<()> {
    let ns = Netns(format!("td-bench-snapshot-{}", std::process::id()));
    run(Command::new("ip").args(["netns", "add", &ns.0]))?;
    run(Command::new("ip").args(["-n", &ns.0, "link", "set", "lo", "up"]))?;
    // One client address, one server port: the whole port range is needed, and room for
    // both kinds of mini-socket.
    for setting in [
        "net.ipv4.ip_local_port_range=1024 65535",
        "net.ipv4.tcp_max_tw_buckets=262144",
    ] {
        run(Command::new("ip").args(["netns", "exec", &ns.0, "sysctl", "-qw", setting]))?;
    }
    eprintln!("bench: {sockets} TIME_WAIT (churn)...");
    // Sixteen server ports: connect() walks the port range two ports at a time per
    // destination, and a client port that comes back to the same server port recycles its
    // TIME_WAIT (with four ports, 50,000 closes left only 45,213).
    const SERVER_PORTS: u64 = 16;
    for port in 9200..9200 + SERVER_PORTS {
        run(Command::new(bin("teardown-lab"))
            .args(["churn", "--netns", &ns.0, "--port", &port.to_string()])
            .args(["--count", &(sockets / SERVER_PORTS).to_string()])
            .args(["--concurrency", "2"]))?;
    }
    eprintln!("bench: {sockets} CLOSE_WAIT held by 4 processes (leak-many)...");
    let mut lab: Child = Command::new(bin("teardown-lab"))
        .args([
            "leak-many",
            "--netns",
            &ns.0,
            "--port",
            "9300",
            "--servers",
            "4",
        ])
        .args(["--count", &(sockets / 4).to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting teardown-lab leak-many")?;
    let mut ready = String::new();
    BufReader::new(lab.stdout.as_mut().context("stdout")?).read_line(&mut ready)?;
    if !ready.contains("server_pids") {
        let _ = lab.kill();
        bail!("teardown-lab leak-many did not get ready: {ready:?}");
    }

    let trace = bin("teardown-trace");
    let mut runs = Vec::new();
    for round in 1..=5 {
        let run = measure(Command::new(&trace).args(["--leaks", "--json"]))?;
        eprintln!(
            "bench: round {round}: {:.3} s wall, {:.3} s CPU",
            run.wall, run.cpu
        );
        runs.push(run);
    }
    let ss = measure(Command::new("ip").args(["netns", "exec", &ns.0, "ss", "-tanpH"]))?;
    drop(lab.stdin.take());
    let _ = lab.wait();

    let json = &runs[0].first_line;
    let close_wait = number_after(json, "\"close_wait\":{\"count\":");
    let minis = number_after(json, "\"time_wait\":{\"count\":");
    let fin_wait2 = number_after(
        json,
        &format!("\"time_wait\":{{\"count\":{minis},\"fin_wait2\":"),
    );
    let sorted = |f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (wall, cpu) = (sorted(|r| r.wall), sorted(|r| r.cpu));
    let rss = runs.iter().map(|r| r.rss_kb).max().unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?").to_string();
    println!("\n## snapshot: `teardown-trace --leaks --json`, {close_wait} CLOSE_WAIT, {} TIME_WAIT and {fin_wait2} FIN_WAIT2 mini-sockets\n", minis - fin_wait2);
    println!("Whole process, 5 runs: every namespace entered, sock_diag, /proc/PID/fd, grouping, JSON. Load average {load}.\n");
    println!("| measure | median | fastest | slowest |");
    println!("|---|---|---|---|");
    println!(
        "| wall | {:.3} s | {:.3} s | {:.3} s |",
        wall[2], wall[0], wall[4]
    );
    println!(
        "| CPU (user + system) | {:.3} s | {:.3} s | {:.3} s |",
        cpu[2], cpu[0], cpu[4]
    );
    println!(
        "\npeak RSS {:.1} MB. For comparison, `ss -tanpH` in the bench namespace alone: {:.3} s wall, {:.3} s CPU, {:.1} MB.",
        rss as f64 / 1024.0,
        ss.wall,
        ss.cpu,
        ss.rss_kb as f64 / 1024.0
    );
    Ok(())
}
