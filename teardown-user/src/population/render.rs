//! A population as a terminal table (`--summary`) or a JSON object (`--summary --json`,
//! the `-o` document's `population`).

use std::{fmt::Write as _, io::Write as _};

use teardown_common::state;

use super::{Group, Now, Population, Stats, NOW_STATES, PHASES, ROLES};
use crate::output::{json, text::ms};

/// What the run has seen so far, for the table's first line and the JSON's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Health {
    pub events: u64,
    pub lost_events: u64,
    pub lost_owners: u64,
    /// Optional hooks this kernel lacks.
    pub degraded: usize,
    /// When these figures were taken, in ns since the Unix epoch: everything counts from
    /// the start of the run, so two summaries' difference is what happened between them.
    pub at_unix_ns: u64,
}

/// Every group with closes or sockets now, in order.
fn rows<'a>(population: &'a Population, now: &'a Now) -> Vec<(Group, Option<&'a Stats>)> {
    let mut groups: Vec<Group> = population
        .groups
        .keys()
        .chain(now.keys())
        .copied()
        .collect();
    groups.sort();
    groups.dedup();
    groups
        .into_iter()
        .map(|g| (g, population.groups.get(&g)))
        .collect()
}

/// The table: a line per group, then that group's phase percentiles.
pub fn table(population: &Population, now: &Now, health: &Health) -> String {
    let total: u64 = population.groups.values().map(Stats::closes).sum();
    let mut out = format!(
        "{total} teardowns, {} events seen, {} lost events, {} owners lost\n\n\
         COMM             PORT    ACTIVE PASSIVE  SIMULT   RESET UNKNOWN FIN_RTX FIN_WAIT1 FIN_WAIT2 CLOSE_WAIT LAST_ACK CLOSING TIME_WAIT~  RESETS\n",
        health.events, health.lost_events, health.lost_owners
    );
    for (group, stats) in rows(population, now) {
        let counts = now.get(&group).copied().unwrap_or_default();
        let _ = write!(out, "{:<16} {:<6}", group.comm(), group.port());
        let closes = stats.map(|s| s.closes).unwrap_or_default();
        for n in closes {
            let _ = write!(out, " {n:>7}");
        }
        let _ = write!(out, " {:>7}", stats.map_or(0, |s| s.fin_retransmits));
        for (n, width) in counts.iter().zip([9, 9, 10, 8, 7, 10]) {
            let _ = write!(out, " {n:>width$}");
        }
        out.push_str("  ");
        let resets = stats.map(|s| s.resets.iter()).into_iter().flatten();
        for (i, (reason, n)) in resets.enumerate() {
            let _ = write!(out, "{}{reason} {n}", if i > 0 { ", " } else { "" });
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        let Some(stats) = stats else { continue };
        for (phase, p) in PHASES.iter().zip(stats.percentiles()) {
            let Some(p) = p else { continue };
            let _ = writeln!(
                out,
                "    {phase:<11} ms  n {:<8} p50 {:>10}  p90 {:>10}  p99 {:>10}  max {:>10}",
                p.count,
                ms(p.p50),
                ms(p.p90),
                ms(p.p99),
                ms(p.max)
            );
        }
    }
    out
}

/// `{"groups": [...], "events", "lost_events", "lost_owners", "degraded", "at_unix_ns"}`.
pub fn json(out: &mut Vec<u8>, population: &Population, now: &Now, health: &Health) {
    json::push(out, "{\"groups\":[");
    for (i, (group, stats)) in rows(population, now).into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::push(out, "{\"comm\":");
        json::string(out, group.comm().as_bytes());
        json::push(out, ",\"port\":");
        json::string(out, group.port().as_bytes());
        json::push(out, ",\"closes\":{");
        let closes = stats.map(|s| s.closes).unwrap_or_default();
        for (j, (role, n)) in ROLES.iter().zip(closes).enumerate() {
            let _ = write!(out, "{}\"{role}\":{n}", if j > 0 { "," } else { "" });
        }
        json::push(out, "},\"incomplete\":");
        json::num(out, stats.map_or(0, |s| s.incomplete));
        json::push(out, ",\"resets\":{");
        let resets = stats.map(|s| s.resets.iter()).into_iter().flatten();
        for (j, (reason, n)) in resets.enumerate() {
            if j > 0 {
                out.push(b',');
            }
            json::string(out, reason.as_bytes());
            out.push(b':');
            json::num(out, *n);
        }
        json::push(out, "},\"fin_retransmits\":");
        json::num(out, stats.map_or(0, |s| s.fin_retransmits));
        json::push(out, ",\"phases_ns\":{");
        let percentiles = stats.map(Stats::percentiles).unwrap_or_default();
        let measured = PHASES
            .iter()
            .zip(percentiles)
            .filter_map(|(n, p)| Some((n, p?)));
        for (j, (phase, p)) in measured.enumerate() {
            let _ = write!(
                out,
                "{}\"{phase}\":{{\"count\":{},\"p50\":{},\"p90\":{},\"p99\":{},\"max\":{}}}",
                if j > 0 { "," } else { "" },
                p.count,
                p.p50,
                p.p90,
                p.p99,
                p.max
            );
        }
        json::push(out, "},\"now\":{");
        let counts = now.get(&group).copied().unwrap_or_default();
        for (j, (st, n)) in NOW_STATES.iter().zip(counts).enumerate() {
            let _ = write!(
                out,
                "{}\"{}\":{n}",
                if j > 0 { "," } else { "" },
                state::name(*st)
            );
        }
        json::push(out, "}}");
    }
    let _ = write!(
        out,
        "],\"events\":{},\"lost_events\":{},\"lost_owners\":{},\"degraded\":{},\"at_unix_ns\":{}}}",
        health.events, health.lost_events, health.lost_owners, health.degraded, health.at_unix_ns
    );
}
