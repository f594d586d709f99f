//! `--metrics` and `--summary` against real parts: the real tracer traces real connections
//! between `teardown-lab` processes in a namespace this test makes, while a real Prometheus
//! server (the Debian package) scrapes it on loopback. The test asks Prometheus's HTTP API,
//! not the tracer, what it recorded; and every panel of the Grafana dashboard in
//! `deploy/grafana/` is run against that Prometheus.
//!
//! These tests need root and `prometheus` (`cargo xtask test` installs it). Without root
//! they print SKIPPED and return; under CI (`CI` set) they fail instead.

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Stdio},
};

use common::*;

/// Prometheus needs a few scrapes (one a second) before rates exist; an emulated kernel
/// waits longer (`WAIT`).
fn prometheus_wait() -> Duration {
    Duration::from_secs(60).max(*WAIT)
}
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/grafana/teardown.json"
);

/// A loopback address no one listens on yet.
fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().to_string()
}

/// Plays `pattern` to its end in `netns`, its output dropped.
fn play_to_end(pattern: &str, netns: &Netns, port: u16, extra: &[&str]) {
    let status = Command::new(LAB)
        .args([pattern, "--netns", &netns.0, "--port", &port.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .status()
        .expect("start teardown-lab");
    assert!(status.success(), "teardown-lab {pattern} failed: {status}");
}

/// `GET path` over HTTP/1.0; the body of a 200 response.
fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(*WAIT)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no HTTP head")?;
    if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") {
        Ok(body.to_string())
    } else {
        Err(head.lines().next().unwrap_or_default().to_string())
    }
}

fn percent_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server of our own on loopback, scraping `target` every second.
struct Prometheus {
    child: Child,
    addr: String,
    dir: PathBuf,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(format!(
            "td-prometheus-{}-{}",
            std::process::id(),
            target.replace([':', '.'], "-")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: teardown\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = free_addr();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus (cargo xtask setup installs it)");
        let prometheus = Prometheus { child, addr, dir };
        let deadline = Instant::now() + *WAIT;
        while http_get(&prometheus.addr, "/-/ready").is_err() {
            assert!(
                Instant::now() < deadline,
                "prometheus not ready: {}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// The result vector of an instant query.
    fn query(&self, promql: &str) -> Vec<Value> {
        let body = http_get(
            &self.addr,
            &format!("/api/v1/query?query={}", percent_encoded(promql)),
        )
        .unwrap_or_else(|e| panic!("query {promql}: {e}"));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{promql}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Queries `promql` until `done` accepts its result, or panics after `prometheus_wait`.
    fn query_until(&self, promql: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + prometheus_wait();
        loop {
            let result = self.query(promql);
            if done(&result) {
                return result;
            }
            assert!(
                Instant::now() < deadline,
                "{promql}: still {result:?}\nprometheus log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A sample's value, from `[time, "value"]`.
fn value(sample: &Value) -> f64 {
    sample["value"][1].as_str().unwrap().parse().unwrap()
}

/// `{label value: sample value}` of a result vector.
fn by(label: &str, result: &[Value]) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = result
        .iter()
        .map(|s| {
            (
                s["metric"][label].as_str().unwrap_or("").to_string(),
                value(s),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn pairs(expected: &[(&str, f64)]) -> Vec<(String, f64)> {
    expected.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// The tracer for `port` with `--metrics --summary 1 --json`, and a Prometheus scraping it.
fn scraped(port: u16) -> (Tracer, Prometheus) {
    let metrics = free_addr();
    let tracer = Tracer::start(&[
        "--metrics",
        &metrics,
        "-P",
        &port.to_string(),
        "--summary",
        "1",
        "--json",
    ]);
    (tracer, Prometheus::start(&metrics))
}

#[test]
fn prometheus_scrapes_closes_by_role_and_phase_durations_and_every_dashboard_panel_has_data() {
    let Some(_serial) = privileged(
        "prometheus_scrapes_closes_by_role_and_phase_durations_and_every_dashboard_panel_has_data",
    ) else {
        return;
    };
    let (ns, port) = (Netns::new(), port());
    let (tracer, prometheus) = scraped(port);
    // 3 servers close first, 2 clients do, and 2 servers abort: 14 sockets close. In two
    // rounds: rates need an increase between two scrapes of a series, and a series starts
    // with the first close of its process and port.
    play_to_end("server-closes", &ns, port, &["--delay-ms", "20"]);
    play_to_end("reset", &ns, port, &[]);
    prometheus.query_until("teardown_resets_total", |r| r.len() == 2);
    for _ in 0..2 {
        play_to_end("server-closes", &ns, port, &["--delay-ms", "20"]);
        play_to_end("client-closes", &ns, port, &["--delay-ms", "20"]);
    }
    play_to_end("reset", &ns, port, &[]);

    let closes = r#"sum by (role) (teardown_closes_total{comm="teardown-lab"})"#;
    let want = pairs(&[
        ("active", 5.0),
        ("passive", 5.0),
        ("reset", 4.0),
        ("simultaneous", 0.0),
        ("unknown", 0.0),
    ]);
    prometheus.query_until(closes, |r| by("role", r) == want);
    // The server's port is counted apart (-P is the default of --by-port); the clients'
    // ephemeral ports are "other".
    let server = format!(r#"sum by (role) (teardown_closes_total{{port="{port}"}})"#);
    let want = pairs(&[
        ("active", 3.0),
        ("passive", 2.0),
        ("reset", 2.0),
        ("simultaneous", 0.0),
        ("unknown", 0.0),
    ]);
    // Waited for, not queried once: a scrape that timed out (1 s, emulated) leaves the
    // series stale, and an instant query then finds nothing until the next one.
    prometheus.query_until(&server, |r| by("role", r) == want);
    // Every socket's whole teardown was timed: the histogram counts the 14 closes.
    prometheus.query_until("sum(teardown_teardown_duration_seconds_count)", |r| {
        r.first().is_some_and(|s| value(s) == 14.0)
    });
    // The CLOSE_WAIT of the passive sides lasted the lab's 20 ms delay (at least).
    let close_wait = prometheus.query_until(
        r#"sum(teardown_state_duration_seconds_sum{state="CLOSE_WAIT"}) / sum(teardown_state_duration_seconds_count{state="CLOSE_WAIT"})"#,
        |r| !r.is_empty(),
    );
    let mean = value(&close_wait[0]);
    assert!((0.02..1.0).contains(&mean), "mean CLOSE_WAIT {mean} s");
    let health = prometheus.query_until("teardown_lost_events_total", |r| !r.is_empty());
    assert_eq!(value(&health[0]), 0.0, "{health:?}");

    // Every panel of the dashboard returns data from this Prometheus.
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 8, "{} panels", panels.len());
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            // A window over the whole test: over the last minute only, an emulated guest
            // can query after the histograms' last increase has left it, and a quantile of
            // rates that are all 0 is NaN.
            let promql = expr
                .replace("$__rate_interval", "15m")
                .replace("$instance", ".*")
                .replace("$comm", ".*")
                .replace("$port", ".*");
            prometheus.query_until(&promql, |r| r.iter().any(|s| value(s).is_finite()));
        }
    }

    let (code, lines, stderr) = tracer.stop(libc::SIGINT);
    assert_eq!(code, 0, "{stderr:?}");
    // --summary --json: one object a second, and the last one at exit.
    let last: Value = serde_json::from_str(lines.last().expect("a summary at exit")).unwrap();
    let groups = last["groups"].as_array().unwrap();
    let port_label = port.to_string();
    let server = groups
        .iter()
        .find(|g| g["port"] == port_label.as_str())
        .unwrap_or_else(|| panic!("{last}"));
    assert_eq!(server["comm"], "teardown-lab");
    assert_eq!(server["closes"]["active"], 3, "{server}");
    assert_eq!(server["phases_ns"]["teardown"]["count"], 7, "{server}");
    assert_eq!(server["now"]["TIME_WAIT"], 3, "{server}");
}

#[test]
fn scraping_during_a_churn_loses_no_events() {
    let Some(_serial) = privileged("scraping_during_a_churn_loses_no_events") else {
        return;
    };
    let (ns, port) = (Netns::new(), port());
    let (tracer, prometheus) = scraped(port);
    prometheus.query_until("up", |r| r.iter().any(|s| value(s) == 1.0));
    let count = 5000;
    let started = Instant::now();
    play_to_end("churn", &ns, port, &["--count", &count.to_string()]);
    let churned = started.elapsed();
    let closes = r#"sum(teardown_closes_total{comm="teardown-lab"})"#;
    prometheus.query_until(closes, |r| {
        r.first().is_some_and(|s| value(s) == 2.0 * count as f64)
    });
    // Prometheus kept scraping while the connections churned.
    let scrapes = prometheus.query(r#"count_over_time(up[5m])"#);
    assert!(value(&scrapes[0]) >= 2.0, "{scrapes:?} during {churned:?}");
    let lost = prometheus.query("teardown_lost_events_total");
    // The tracer's warnings name the program the kernel skipped most.
    let (code, _, stderr) = tracer.stop(libc::SIGINT);
    assert_eq!(value(&lost[0]), 0.0, "{stderr:?}");
    assert_eq!(code, 0, "{stderr:?}");
    let summary = stderr.last().expect("the summary line");
    assert!(
        summary.contains(&format!("{} teardowns", 2 * count)) && summary.contains(" 0 lost events"),
        "{summary}"
    );
}
