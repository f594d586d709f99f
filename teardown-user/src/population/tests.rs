use teardown_common::{kind, owner_source, sock_flags, state::*, tcp_flag, Event};

use super::{
    metrics::Metrics,
    render::{self, Health},
    Group, Grouping, Population, Process, MAX_COMMS, TIME_WAIT_NS,
};
use teardown_common::KernelNames;

use crate::{
    filter::Filter,
    reconstruct::{Reconstructor, Timeline},
    testing::ev,
};

const MS: u64 = 1_000_000;

fn names() -> KernelNames {
    KernelNames {
        reset_reasons: vec!["NOT_SPECIFIED".into(), "NO_SOCKET".into()],
    }
}

fn comm(name: &str) -> [u8; 16] {
    let mut comm = [0u8; 16];
    comm[..name.len()].copy_from_slice(name.as_bytes());
    comm
}

fn owned(mut e: Event, name: &str) -> Event {
    e.owner_pid = 100;
    e.owner_comm = comm(name);
    e.owner_source = owner_source::ACCEPT;
    e
}

/// Events as the kernel sends them, in order; returns what the reconstruction hands out
/// (tracing stops at `end_ns`) and what is still open just before.
fn replay(events: &[Event], end_ns: u64) -> (Vec<Timeline>, Vec<Timeline>) {
    let mut r = Reconstructor::new(Filter::default());
    events.iter().for_each(|e| r.push(e));
    let mut done = Vec::new();
    r.advance(u64::MAX, &mut |t| done.push(t));
    let open = r.open_timelines().cloned().collect();
    r.finish(end_ns, &mut |t| done.push(t));
    (done, open)
}

/// Server `nginx` on 443 closes first, three times with FIN_WAIT1 lasting 1, 2 and 100 ms
/// (the last one after retransmitting its FIN); its clients, `curl`, spend 5 ms in
/// CLOSE_WAIT; one connection is reset by the server; one `curl` never closes.
fn traffic() -> Vec<Event> {
    let mut events = Vec::new();
    for (i, fin_wait1_ms) in [1u64, 2, 100].into_iter().enumerate() {
        let (t0, server, client, cport) = (
            i as u64 * 1000 * MS,
            10 + i as u64,
            20 + i as u64,
            5000 + i as u16,
        );
        events.push(owned(
            ev(t0, server, 443, cport, ESTABLISHED, FIN_WAIT1),
            "nginx",
        ));
        events.push(owned(
            ev(t0 + MS / 10, client, cport, 443, ESTABLISHED, CLOSE_WAIT),
            "curl",
        ));
        if fin_wait1_ms == 100 {
            let mut retransmit = owned(
                ev(t0 + 50 * MS, server, 443, cport, FIN_WAIT1, FIN_WAIT1),
                "nginx",
            );
            retransmit.kind = kind::RETRANSMIT;
            retransmit.tcp_flags = tcp_flag::FIN;
            events.push(retransmit);
        }
        let acked = t0 + fin_wait1_ms * MS;
        events.push(owned(
            ev(acked, server, 443, cport, FIN_WAIT1, FIN_WAIT2),
            "nginx",
        ));
        events.push(owned(
            ev(t0 + 5 * MS, client, cport, 443, CLOSE_WAIT, LAST_ACK),
            "curl",
        ));
        let mut fin_in = owned(
            ev(
                acked.max(t0 + 5 * MS) + 10,
                server,
                443,
                cport,
                FIN_WAIT2,
                CLOSE,
            ),
            "nginx",
        );
        fin_in.sock_flags = sock_flags::FIN_RECEIVED;
        events.push(fin_in);
        events.push(owned(
            ev(
                acked.max(t0 + 5 * MS) + 20,
                client,
                cport,
                443,
                LAST_ACK,
                CLOSE,
            ),
            "curl",
        ));
    }
    let t0 = 4000 * MS;
    events.push(owned(ev(t0, 30, 443, 6000, ESTABLISHED, CLOSE), "nginx"));
    let mut rst = owned(ev(t0 + 10, 30, 443, 6000, CLOSE, CLOSE), "nginx");
    rst.kind = kind::RESET_SENT;
    rst.reason = 1;
    events.push(rst);
    events.push(owned(
        ev(t0 + 20, 31, 6000, 443, ESTABLISHED, CLOSE),
        "curl",
    ));
    let mut rst_in = owned(ev(t0 + 15, 31, 6000, 443, ESTABLISHED, ESTABLISHED), "curl");
    rst_in.kind = kind::RESET_RECEIVED;
    events.push(rst_in);
    events.push(owned(
        ev(t0 + MS, 40, 7000, 443, ESTABLISHED, CLOSE_WAIT),
        "curl",
    ));
    events.sort_by_key(|e| e.ts_ns);
    events
}

fn group(name: &str, port: Option<u16>) -> Group {
    Group {
        process: Process::Named(comm(name)),
        port,
    }
}

fn population(grouping: Grouping) -> (Population, super::Now) {
    let end = 5000 * MS;
    let (done, open) = replay(&traffic(), end);
    let mut population = Population::new(grouping);
    let now = population.now(end, open.iter());
    for t in &done {
        population.add(t, &names());
    }
    (population, now)
}

#[test]
fn closes_resets_and_retransmits_add_up_per_process_and_port() {
    let (population, _) = population(Grouping::new(vec![443]));
    let nginx = &population.groups[&group("nginx", Some(443))];
    assert_eq!(nginx.closes, [3, 0, 0, 1, 0], "3 active, 1 reset");
    assert_eq!(nginx.fin_retransmits, 1);
    assert_eq!(nginx.resets.get("NO_SOCKET"), Some(&1));
    let curl = &population.groups[&group("curl", None)];
    assert_eq!(curl.closes, [0, 4, 0, 1, 0], "3 passive, the leak, 1 reset");
    assert_eq!(
        curl.incomplete, 1,
        "the CLOSE_WAIT leak, still open at the end"
    );
    assert_eq!(curl.resets.get("received"), Some(&1));
}

#[test]
fn sockets_first_seen_mid_close_count_under_the_role_their_state_proves() {
    let events = [
        // In CLOSE_WAIT when tracing started, closed while traced: passive.
        owned(ev(0, 50, 6379, 7000, CLOSE_WAIT, LAST_ACK), "redis"),
        owned(ev(MS, 50, 6379, 7000, LAST_ACK, CLOSE), "redis"),
        // Released in FIN_WAIT1 and still there: its FIN could yet cross the peer's.
        owned(ev(0, 51, 6379, 7001, FIN_WAIT1, FIN_WAIT1), "redis"),
    ];
    let (done, _) = replay(&events, 10 * MS);
    let mut population = Population::new(Grouping::new(vec![6379]));
    for t in &done {
        population.add(t, &names());
    }
    let redis = &population.groups[&group("redis", Some(6379))];
    assert_eq!(redis.closes, [0, 1, 0, 0, 1], "1 passive, 1 unknown");
    assert_eq!(redis.incomplete, 1);
}

#[test]
fn phase_percentiles_come_from_the_recorded_durations() {
    let (population, _) = population(Grouping::new(vec![443]));
    let [fin_wait1, .., teardown] = population.groups[&group("nginx", Some(443))].percentiles();
    let fin_wait1 = fin_wait1.expect("measured");
    assert_eq!(fin_wait1.count, 3);
    // Two significant digits: within 1 %.
    let near = |got: u64, want: u64| got.abs_diff(want) * 100 <= want;
    assert!(near(fin_wait1.p50, 2 * MS), "{fin_wait1:?}");
    assert!(near(fin_wait1.p99, 100 * MS), "{fin_wait1:?}");
    assert!(near(fin_wait1.max, 100 * MS), "{fin_wait1:?}");
    // The reset has no phases; its teardown (ESTABLISHED -> CLOSE at once) is 0 ns.
    assert_eq!(teardown.expect("measured").count, 4);
    let curl = population.groups[&group("curl", None)].percentiles();
    assert_eq!(
        curl[2].expect("CLOSE_WAIT").count,
        3,
        "the leak has not left it"
    );
    assert!(curl[0].is_none(), "curl never was in FIN_WAIT1");
}

#[test]
fn close_wait_now_is_the_open_sockets_and_time_wait_lasts_60_s() {
    let (mut population, now) = population(Grouping::new(vec![]));
    let [.., close_wait, _, _, time_wait] = now[&group("curl", None)];
    assert_eq!(close_wait, 1, "{now:?}");
    assert_eq!(time_wait, 0, "counted before the closes were added");
    let later = population.now(5000 * MS, std::iter::empty());
    assert_eq!(
        later[&group("nginx", None)][5],
        3,
        "three went to TIME_WAIT"
    );
    assert_eq!(
        later.get(&group("curl", None)),
        None,
        "the passive side does not"
    );
    // Counted by the second they closed in: 0.005 s, 1.005 s and 2.100 s.
    let gone = population.now(2000 * MS + TIME_WAIT_NS, std::iter::empty());
    assert_eq!(gone[&group("nginx", None)][5], 1, "the first two aged out");
    let gone = population.now(3000 * MS + TIME_WAIT_NS, std::iter::empty());
    assert_eq!(gone.get(&group("nginx", None)), None, "all aged out");
}

#[test]
fn process_names_past_the_limit_share_one_group() {
    let mut grouping = Grouping::new(vec![]);
    let (done, _) = replay(&[owned(ev(1, 1, 80, 9, ESTABLISHED, CLOSE), "x")], 10);
    let mut t = done[0].clone();
    for i in 0..=MAX_COMMS {
        t.owner.as_mut().unwrap().task.comm = comm(&format!("p{i}"));
        let g = grouping.group(&t);
        assert_eq!(g.process == Process::Other, i == MAX_COMMS, "{i}");
    }
    t.owner = None;
    assert_eq!(grouping.group(&t).comm(), "?");
    t.owner = done[0].owner;
    t.owner.as_mut().unwrap().task.comm = comm("p3");
    assert_eq!(
        grouping.group(&t).comm(),
        "p3",
        "a name already counted keeps its group"
    );
}

#[test]
fn summary_json_and_table_show_each_group() {
    let (population, now) = population(Grouping::new(vec![443]));
    let health = Health {
        events: 30,
        lost_events: 0,
        lost_owners: 0,
        degraded: 1,
        at_unix_ns: 1_764_400_000_123_456_789,
    };
    let mut out = Vec::new();
    render::json(&mut out, &population, &now, &health);
    let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
    let groups = v["groups"].as_array().unwrap();
    let nginx = groups.iter().find(|g| g["comm"] == "nginx").unwrap();
    assert_eq!(nginx["port"], "443");
    assert_eq!(nginx["closes"]["active"], 3);
    assert_eq!(nginx["resets"]["NO_SOCKET"], 1);
    assert_eq!(nginx["phases_ns"]["FIN_WAIT1"]["count"], 3);
    assert_eq!(nginx["fin_retransmits"], 1);
    let curl = groups.iter().find(|g| g["comm"] == "curl").unwrap();
    assert_eq!(curl["port"], "other");
    assert_eq!(curl["now"]["CLOSE_WAIT"], 1);
    assert_eq!(v["degraded"], 1);
    assert_eq!(v["at_unix_ns"], 1_764_400_000_123_456_789u64);

    let table = render::table(&population, &now, &health);
    let line = |comm: &str| {
        table
            .lines()
            .find(|l| l.starts_with(comm))
            .unwrap()
            .to_string()
    };
    assert!(line("nginx").contains("443"), "{table}");
    assert!(line("nginx").ends_with("NO_SOCKET 1"), "{table}");
    assert!(table.contains("FIN_WAIT1   ms  n 3"), "{table}");
}

#[test]
fn metrics_follow_prometheus_conventions_and_bounded_labels() {
    let end = 5000 * MS;
    let (done, open) = replay(&traffic(), end);
    let mut population = Population::new(Grouping::new(vec![443]));
    let mut metrics = Metrics::new(1024);
    for t in &done {
        let g = population.add(t, &names());
        metrics.add(g, t, &names());
    }
    let now = population.now(end, open.iter());
    let health = Health {
        events: 30,
        lost_events: 2,
        lost_owners: 0,
        degraded: 0,
        at_unix_ns: 0,
    };
    metrics.refresh(&now, &health);
    let text = metrics.encode();
    for line in [
        "teardown_closes_total{comm=\"nginx\",port=\"443\",role=\"active\"} 3",
        "teardown_closes_total{comm=\"curl\",port=\"other\",role=\"passive\"} 4",
        "teardown_resets_total{comm=\"nginx\",port=\"443\",reason=\"NO_SOCKET\"} 1",
        "teardown_fin_retransmits_total{comm=\"nginx\",port=\"443\"} 1",
        "teardown_state_duration_seconds_count{comm=\"nginx\",port=\"443\",state=\"FIN_WAIT1\"} 3",
        "teardown_teardown_duration_seconds_count{comm=\"nginx\",port=\"443\"} 4",
        "teardown_sockets{comm=\"curl\",port=\"other\",state=\"CLOSE_WAIT\"} 1",
        "teardown_lost_events_total 2",
        "teardown_owner_table_capacity 1024",
        "# EOF",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    assert!(
        !text.contains("127.0.0.1") && !text.contains("pid"),
        "{text}"
    );
    // A socket that leaves CLOSE_WAIT drops to 0, and stays a series.
    metrics.refresh(&population.now(end, std::iter::empty()), &health);
    assert!(metrics
        .encode()
        .contains("teardown_sockets{comm=\"curl\",port=\"other\",state=\"CLOSE_WAIT\"} 0"));
}

/// The JSON object and its schema name the same fields, at every level the schema closes.
#[test]
fn the_json_matches_its_schema_fields() {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../../schema/population.schema.json")).unwrap();
    let (population, now) = population(Grouping::new(vec![443]));
    let mut out = Vec::new();
    render::json(&mut out, &population, &now, &Health::default());
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    let required = |s: &serde_json::Value| -> Vec<String> {
        let mut keys: Vec<String> = serde_json::from_value(s["required"].clone()).unwrap();
        keys.sort();
        keys
    };
    assert_eq!(keys(&v), required(&schema));
    assert_eq!(keys(&schema["properties"]), required(&schema));
    let group = &schema["properties"]["groups"]["items"];
    let phases = keys(&group["properties"]["phases_ns"]["properties"]);
    for g in v["groups"].as_array().unwrap() {
        assert_eq!(keys(g), required(group));
        for field in ["closes", "now"] {
            assert_eq!(keys(&g[field]), required(&group["properties"][field]));
        }
        for (phase, p) in g["phases_ns"].as_object().unwrap() {
            assert!(phases.contains(phase), "{phase} not in the schema");
            let pct = &group["properties"]["phases_ns"]["properties"][phase];
            assert_eq!(keys(p), required(pct));
        }
    }
}
