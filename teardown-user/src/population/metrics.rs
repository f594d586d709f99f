//! `--metrics ADDR`: the population as Prometheus metrics, built with the Prometheus
//! project's own client (`prometheus-client`) and served as OpenMetrics text on
//! `GET /metrics` by a task of the tracer's runtime, between two drains of the ring.
//!
//! Labels are bounded: `comm` (at most [`super::MAX_COMMS`], then `other`), `port` (only
//! the ports counted apart, else `other`), `role`, `state`, `reason`. Never addresses or pids.

use std::{collections::HashMap, io, net::SocketAddr, sync::Arc, time::Duration};

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::{Registry, Unit},
};
use teardown_common::state;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::{
    fin_retransmits, phases_ns, render::Health, reset_reason, role_index, Group, Now, NOW_STATES,
    PHASES, ROLES,
};
use teardown_common::KernelNames;

use crate::reconstruct::Timeline;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    comm: String,
    port: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    comm: String,
    port: String,
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    comm: String,
    port: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    comm: String,
    port: String,
    reason: String,
}

fn group_labels(g: &Group) -> GroupLabels {
    GroupLabels {
        comm: g.comm(),
        port: g.port(),
    }
}

/// Phase durations from 10 µs to ~3 min, each bucket 4 times the last.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-5, 4.0, 13))
}

/// One group's series, created together (at zero) the first time the group closes a
/// socket, so that a rate over any role or state exists from then on.
struct GroupSeries {
    closes: [Counter; 5],
    fin_retransmits: Counter,
    phases: [Histogram; 6],
}

pub struct Metrics {
    registry: Arc<Registry>,
    closes: Family<RoleLabels, Counter>,
    resets: Family<ReasonLabels, Counter>,
    fin_retransmits: Family<GroupLabels, Counter>,
    state_durations: Family<StateLabels, Histogram, fn() -> Histogram>,
    teardown_durations: Family<GroupLabels, Histogram, fn() -> Histogram>,
    sockets: Family<StateLabels, Gauge>,
    events: Counter,
    lost_events: Counter,
    lost_owners: Counter,
    degraded: Gauge,
    series: HashMap<Group, GroupSeries>,
    /// Groups with sockets in some state at the last refresh: set to 0 when they have none.
    with_sockets: Vec<Group>,
}

impl Metrics {
    /// `max_sockets`: the capacity of the kernel's owner table.
    pub fn new(max_sockets: u32) -> Self {
        let mut registry = Registry::with_prefix("teardown");
        let closes = Family::<RoleLabels, Counter>::default();
        registry.register(
            "closes",
            "TCP sockets whose teardown was traced, by role (active sent the first FIN, passive received it, simultaneous: both crossed, reset: no FIN exchange, unknown: first seen mid-close in a state that does not tell)",
            closes.clone(),
        );
        let resets = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "resets",
            "RSTs on closing sockets, by the kernel's reason (sk_rst_reason) for those sent; reason=received for those received",
            resets.clone(),
        );
        let fin_retransmits = Family::<GroupLabels, Counter>::default();
        registry.register(
            "fin_retransmits",
            "Retransmitted segments that carried this side's FIN",
            fin_retransmits.clone(),
        );
        let state_durations =
            Family::<StateLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register_with_unit(
            "state_duration",
            "Time a closing socket spent in each closing state it left",
            Unit::Seconds,
            state_durations.clone(),
        );
        let teardown_durations =
            Family::<GroupLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register_with_unit(
            "teardown_duration",
            "Time from leaving ESTABLISHED to CLOSE, for teardowns seen whole",
            Unit::Seconds,
            teardown_durations.clone(),
        );
        let sockets = Family::<StateLabels, Gauge>::default();
        registry.register(
            "sockets",
            "Sockets now in each closing state; TIME_WAIT is estimated from the closes traced in the last 60 s",
            sockets.clone(),
        );
        let events = Counter::default();
        registry.register("events", "Kernel events read", events.clone());
        let lost_events = Counter::default();
        registry.register(
            "lost_events",
            "Kernel events lost (ring buffer full, or a hook the kernel skipped)",
            lost_events.clone(),
        );
        let lost_owners = Counter::default();
        registry.register(
            "lost_owners",
            "Socket owners not recorded: the kernel's owner table was full, or busy on that CPU",
            lost_owners.clone(),
        );
        let owner_table = Gauge::<i64>::default();
        owner_table.set(max_sockets.into());
        registry.register(
            "owner_table_capacity",
            "Live sockets whose owner the kernel can remember at once (--max-sockets)",
            owner_table,
        );
        let degraded = Gauge::default();
        registry.register(
            "degraded_features",
            "Optional kernel hooks missing on this host (the tracer's warnings say what each costs)",
            degraded.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            closes,
            resets,
            fin_retransmits,
            state_durations,
            teardown_durations,
            sockets,
            events,
            lost_events,
            lost_owners,
            degraded,
            series: HashMap::new(),
            with_sockets: Vec::new(),
        }
    }

    fn series(&mut self, group: Group) -> &GroupSeries {
        let Metrics {
            closes,
            fin_retransmits,
            state_durations,
            teardown_durations,
            series,
            ..
        } = self;
        series.entry(group).or_insert_with(|| {
            let labels = group_labels(&group);
            let role = |role| RoleLabels {
                comm: labels.comm.clone(),
                port: labels.port.clone(),
                role,
            };
            let phase = |i: usize| match PHASES[i] {
                "teardown" => teardown_durations.get_or_create_owned(&labels),
                state => state_durations.get_or_create_owned(&StateLabels {
                    comm: labels.comm.clone(),
                    port: labels.port.clone(),
                    state,
                }),
            };
            GroupSeries {
                closes: ROLES.map(|r| closes.get_or_create_owned(&role(r))),
                fin_retransmits: fin_retransmits.get_or_create_owned(&labels),
                phases: std::array::from_fn(phase),
            }
        })
    }

    /// Counts one teardown of `group`.
    pub fn add(&mut self, group: Group, t: &Timeline, names: &KernelNames) {
        let series = self.series(group);
        series.closes[role_index(t.role())].inc();
        series.fin_retransmits.inc_by(fin_retransmits(t));
        for (phase, ns) in phases_ns(t) {
            series.phases[phase].observe(ns as f64 / 1e9);
        }
        for reset in &t.resets {
            let labels = group_labels(&group);
            self.resets
                .get_or_create(&ReasonLabels {
                    comm: labels.comm,
                    port: labels.port,
                    reason: reset_reason(reset, names).to_string(),
                })
                .inc();
        }
    }

    /// The gauges of sockets per state, and the tracer's health.
    pub fn refresh(&mut self, now: &Now, health: &Health) {
        for group in self.with_sockets.iter().filter(|g| !now.contains_key(g)) {
            self.set_sockets(group, &[0; 6]);
        }
        for (group, counts) in now {
            self.set_sockets(group, counts);
        }
        self.with_sockets = now.keys().copied().collect();
        let raise = |counter: &Counter, to: u64| {
            counter.inc_by(to.saturating_sub(counter.get()));
        };
        raise(&self.events, health.events);
        raise(&self.lost_events, health.lost_events);
        raise(&self.lost_owners, health.lost_owners);
        self.degraded.set(health.degraded as i64);
    }

    fn set_sockets(&self, group: &Group, counts: &[u64; 6]) {
        let labels = group_labels(group);
        for (st, n) in NOW_STATES.iter().zip(counts) {
            self.sockets
                .get_or_create(&StateLabels {
                    comm: labels.comm.clone(),
                    port: labels.port.clone(),
                    state: state::name(*st),
                })
                .set(*n as i64);
        }
    }

    /// The exposition, as a scrape gets it (what the tests read without a server).
    #[cfg(test)]
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Binds `addr` now, so that a port in use fails before tracing starts; the returned
    /// future (to be spawned on the run's runtime) serves scrapes until the run ends.
    pub fn serve(
        &self,
        addr: SocketAddr,
    ) -> io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let registry = Arc::clone(&self.registry);
        Ok(async move {
            loop {
                if let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(respond(stream, Arc::clone(&registry)));
                }
            }
        })
    }
}

/// A request head larger than this is not a scrape.
const MAX_REQUEST: usize = 8192;
/// A client that does not finish its request in this time is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers one HTTP/1.x request, then closes: `GET /metrics` gets the exposition.
async fn respond(mut stream: TcpStream, registry: Arc<Registry>) {
    let mut head = Vec::with_capacity(1024);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    if read != Ok(true) {
        return;
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, target) = (words.next(), words.next());
    let path = target.map(|t| t.split(|&b| b == b'?').next().unwrap_or_default());
    let (status, content_type, body) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => {
            let mut body = String::new();
            let _ = encode(&mut body, &registry);
            (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body,
            )
        }
        (Some(b"GET"), _) => (
            "404 Not Found",
            "text/plain",
            "teardown-trace serves /metrics\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
