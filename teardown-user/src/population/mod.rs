//! Populations: every teardown folded into counts and latency percentiles per process and
//! local port, for a host too busy to read a line per connection. Pure: fed with each
//! timeline the reconstruction hands out and, now and then, with the sockets still closing.
//!
//! - [`Population`]: the aggregate (HDR histograms for the percentiles), rendered by
//!   [`render`] as a terminal table or a JSON object (`--summary`, the `-o` document).
//! - [`metrics`]: the same folded into Prometheus metrics, served over HTTP (`--metrics`).
//! - [`sink`]: both, as one output of a run.

pub mod metrics;
pub mod render;
pub mod sink;

use std::{
    collections::{BTreeMap, HashSet, VecDeque},
    hash::BuildHasherDefault,
};

use hdrhistogram::Histogram;
use teardown_common::{state, COMM_LEN};

use teardown_common::KernelNames;

use crate::reconstruct::{FastHasher, Reset, Role, Timeline, CLOSING_STATES, FIN_TIMEOUT_NS};

/// Distinct process names counted apart; the rest share [`Process::Other`]. Bounds the
/// memory of the summary and the number of series a Prometheus has to keep.
pub const MAX_COMMS: usize = 100;

/// How long a socket handed to TIME_WAIT stays there (Linux's `TCP_TIMEWAIT_LEN`, fixed at
/// 60 s; the FIN_WAIT2 substate of an orphan times out after `tcp_fin_timeout`, also 60 s by
/// default).
pub const TIME_WAIT_NS: u64 = FIN_TIMEOUT_NS;
const SECOND_NS: u64 = 1_000_000_000;

/// A phase whose latency is measured: the time spent in a closing state, or the whole
/// teardown (leaving ESTABLISHED to CLOSE).
pub const PHASES: [&str; 6] = [
    "FIN_WAIT1",
    "FIN_WAIT2",
    "CLOSE_WAIT",
    "LAST_ACK",
    "CLOSING",
    "teardown",
];
const TEARDOWN_PHASE: usize = 5;

/// The states counted in [`Now`]: the closing states, then TIME_WAIT.
pub const NOW_STATES: [u8; 6] = [
    state::FIN_WAIT1,
    state::FIN_WAIT2,
    state::CLOSE_WAIT,
    state::LAST_ACK,
    state::CLOSING,
    state::TIME_WAIT,
];

/// Roles as counted, `unknown` last (a socket first seen mid-close in a state that does not
/// tell, see `Timeline::role`).
pub const ROLES: [&str; 5] = ["active", "passive", "simultaneous", "reset", "unknown"];

/// Who owned the sockets of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Process {
    Named([u8; COMM_LEN]),
    /// No moment owned by a process was seen.
    Unowned,
    /// Past [`MAX_COMMS`] names.
    Other,
}

/// What the sockets of a group share: their owner's name, and their local port when it is
/// one of the ports counted apart (`None`: any other port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Group {
    pub process: Process,
    pub port: Option<u16>,
}

impl Group {
    /// The owner's name as a label: `?` for no owner, `other` past the limit.
    pub fn comm(&self) -> String {
        match self.process {
            Process::Named(comm) => {
                String::from_utf8_lossy(teardown_common::comm(&comm)).into_owned()
            }
            Process::Unowned => "?".into(),
            Process::Other => "other".into(),
        }
    }

    pub fn port(&self) -> String {
        self.port.map_or_else(|| "other".into(), |p| p.to_string())
    }
}

/// Decides each socket's group, keeping the number of groups bounded.
#[derive(Debug, Default)]
pub struct Grouping {
    /// Local ports counted apart.
    ports: Vec<u16>,
    comms: HashSet<[u8; COMM_LEN], BuildHasherDefault<FastHasher>>,
}

impl Grouping {
    pub fn new(ports: Vec<u16>) -> Self {
        Grouping {
            ports,
            comms: HashSet::default(),
        }
    }

    pub fn group(&mut self, t: &Timeline) -> Group {
        let process = match t.owner {
            None => Process::Unowned,
            Some(owner) => {
                let comm = owner.task.comm;
                if self.comms.contains(&comm)
                    || (self.comms.len() < MAX_COMMS && self.comms.insert(comm))
                {
                    Process::Named(comm)
                } else {
                    Process::Other
                }
            }
        };
        Group {
            process,
            port: self.ports.contains(&t.lport).then_some(t.lport),
        }
    }
}

/// The index of a role in [`ROLES`].
pub fn role_index(role: Option<Role>) -> usize {
    role.and_then(|r| Role::ALL.iter().position(|x| *x == r))
        .unwrap_or(ROLES.len() - 1)
}

/// A reset as counted: the kernel's reason for one sent, `received` for one received (the
/// kernel gives no reason then), `unknown` for a reason this kernel does not name.
pub fn reset_reason<'a>(reset: &Reset, names: &'a KernelNames) -> &'a str {
    if reset.sent {
        names.reset_reason(reset.reason).unwrap_or("unknown")
    } else {
        "received"
    }
}

/// Segments carrying this side's FIN that were sent again.
pub fn fin_retransmits(t: &Timeline) -> u64 {
    t.retransmits.iter().filter(|r| r.fin).count() as u64
}

/// Each phase this timeline measured, by index in [`PHASES`], in ns.
pub fn phases_ns(t: &Timeline) -> impl Iterator<Item = (usize, u64)> {
    let states = t.durations_ns().into_iter().filter_map(|(st, ns)| {
        CLOSING_STATES
            .iter()
            .position(|s| *s == st)
            .map(|i| (i, ns))
    });
    states.chain(t.teardown_ns().map(|ns| (TEARDOWN_PHASE, ns)))
}

/// Latencies from 1 ns to an hour (longer ones count as an hour), to 2 significant digits:
/// ~19 KB a phase, created when first needed.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 2).expect("valid bounds")
}

/// Percentiles of one phase, in ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

/// What the teardowns of one group added up to.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// By [`ROLES`].
    pub closes: [u64; 5],
    /// Handed out still closing (tracing stopped, or too many sockets were open).
    pub incomplete: u64,
    /// By [`reset_reason`].
    pub resets: BTreeMap<String, u64>,
    pub fin_retransmits: u64,
    /// By [`PHASES`].
    phases: [Option<Histogram<u64>>; 6],
}

impl Stats {
    pub fn closes(&self) -> u64 {
        self.closes.iter().sum()
    }

    /// Percentiles by [`PHASES`]; `None` for a phase never measured.
    pub fn percentiles(&self) -> [Option<Percentiles>; 6] {
        self.phases.each_ref().map(|h| {
            h.as_ref().map(|h| Percentiles {
                count: h.len(),
                p50: h.value_at_quantile(0.5),
                p90: h.value_at_quantile(0.9),
                p99: h.value_at_quantile(0.99),
                max: h.max(),
            })
        })
    }
}

/// Sockets of each group in each state right now, by [`NOW_STATES`]. TIME_WAIT is an
/// estimate: sockets handed to TIME_WAIT by closes traced in the last 60 s.
pub type Now = BTreeMap<Group, [u64; 6]>;

#[derive(Debug, Default)]
pub struct Population {
    grouping: Grouping,
    pub groups: BTreeMap<Group, Stats>,
    /// Closes handed to TIME_WAIT per second, oldest first: (second, count per group).
    /// A second per entry, not a close: at full churn a minute holds millions of closes.
    time_wait: VecDeque<(u64, BTreeMap<Group, u64>)>,
}

impl Population {
    pub fn new(grouping: Grouping) -> Self {
        Population {
            grouping,
            ..Population::default()
        }
    }

    /// Counts one teardown handed out by the reconstruction; returns its group.
    pub fn add(&mut self, t: &Timeline, names: &KernelNames) -> Group {
        let group = self.grouping.group(t);
        let stats = self.groups.entry(group).or_default();
        stats.closes[role_index(t.role())] += 1;
        if !t.complete() {
            stats.incomplete += 1;
        }
        for reset in &t.resets {
            *stats
                .resets
                .entry(reset_reason(reset, names).to_string())
                .or_default() += 1;
        }
        stats.fin_retransmits += fin_retransmits(t);
        for (phase, ns) in phases_ns(t) {
            stats.phases[phase]
                .get_or_insert_with(new_histogram)
                .saturating_record(ns);
        }
        if let (Some(_), Some(closed)) = (t.time_wait(), t.closed_ns()) {
            let second = closed / SECOND_NS;
            // Timelines come out nearly in order; a late one only ages out a bit late.
            if self.time_wait.back().is_none_or(|(last, _)| *last < second) {
                self.time_wait.push_back((second, BTreeMap::new()));
            }
            if let Some((_, counts)) = self.time_wait.back_mut() {
                *counts.entry(group).or_default() += 1;
            }
        }
        group
    }

    /// Sockets in each closing state at `now_ns`: `open` are the sockets the reconstruction
    /// still follows; TIME_WAIT counts the closes of the last 60 s that went there.
    pub fn now<'a>(&mut self, now_ns: u64, open: impl Iterator<Item = &'a Timeline>) -> Now {
        // A second's closes leave once the last of them has been there 60 s.
        let gone = |second: u64| (second + 1) * SECOND_NS + TIME_WAIT_NS <= now_ns;
        while self
            .time_wait
            .front()
            .is_some_and(|(second, _)| gone(*second))
        {
            self.time_wait.pop_front();
        }
        let mut now = Now::new();
        let states = open.filter_map(|t| Some((t, t.state()?)));
        for (t, st) in states {
            if let Some(i) = NOW_STATES.iter().position(|s| *s == st) {
                now.entry(self.grouping.group(t)).or_default()[i] += 1;
            }
        }
        for (group, n) in self.time_wait.iter().flat_map(|(_, counts)| counts) {
            now.entry(*group).or_default()[NOW_STATES.len() - 1] += n;
        }
        now
    }
}

#[cfg(test)]
mod tests;
