//! The population as an output of a run: fed every timeline; after each drain, told the
//! time, the sockets still closing and the run's health, it refreshes the metrics and says
//! when a summary is due.

use std::time::Duration;

use super::{
    metrics::Metrics,
    render::{self, Health},
    Grouping, Now, Population,
};
use teardown_common::KernelNames;

use crate::reconstruct::Timeline;

/// How often the gauges (sockets per state, health) are brought up to date.
const REFRESH_NS: u64 = 1_000_000_000;

/// How a summary is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Redrawn in place: the screen is cleared before each table.
    Terminal,
    /// A table after the other, a blank line between (a pipe, a file, a journal).
    Lines,
    /// One JSON object per line.
    Json,
}

pub struct Sink {
    population: Population,
    metrics: Option<Metrics>,
    /// `--summary`: how often, and how.
    summary: Option<(u64, Style)>,
    next_refresh_ns: u64,
    next_summary_ns: u64,
    now: Now,
    health: Health,
}

impl Sink {
    pub fn new(
        grouping: Grouping,
        summary: Option<(Duration, Style)>,
        metrics: Option<Metrics>,
    ) -> Self {
        Sink {
            population: Population::new(grouping),
            metrics,
            summary: summary.map(|(every, style)| (every.as_nanos() as u64, style)),
            next_refresh_ns: 0,
            next_summary_ns: 0,
            now: Now::new(),
            health: Health::default(),
        }
    }

    pub fn timeline(&mut self, t: &Timeline, names: &KernelNames) {
        let group = self.population.add(t, names);
        if let Some(metrics) = &mut self.metrics {
            metrics.add(group, t, names);
        }
    }

    /// Takes stock at `now_ns` of the sockets `open` still closing.
    pub fn refresh<'a>(
        &mut self,
        now_ns: u64,
        open: impl Iterator<Item = &'a Timeline>,
        health: Health,
    ) {
        self.now = self.population.now(now_ns, open);
        self.health = health;
        if let Some(metrics) = &mut self.metrics {
            metrics.refresh(&self.now, &self.health);
        }
    }

    /// After a drain: refreshes once a second, and returns the summary when one is due.
    pub fn tick<'a>(
        &mut self,
        now_ns: u64,
        open: impl Iterator<Item = &'a Timeline>,
        health: Health,
    ) -> Option<String> {
        if now_ns < self.next_refresh_ns {
            return None;
        }
        self.next_refresh_ns = now_ns.saturating_add(REFRESH_NS);
        self.refresh(now_ns, open, health);
        let (every, _) = self.summary?;
        if now_ns < self.next_summary_ns {
            return None;
        }
        self.next_summary_ns = now_ns.saturating_add(every);
        self.summary()
    }

    /// The summary as of the last refresh, when `--summary` asked for one.
    pub fn summary(&self) -> Option<String> {
        let (_, style) = self.summary?;
        Some(match style {
            Style::Json => String::from_utf8(self.json()).expect("JSON is UTF-8"),
            Style::Lines => render::table(&self.population, &self.now, &self.health),
            // Home, clear the screen, then the table.
            Style::Terminal => format!(
                "\x1b[H\x1b[2J{}",
                render::table(&self.population, &self.now, &self.health)
            ),
        })
    }

    /// The population as a JSON object, as of the last refresh.
    pub fn json(&self) -> Vec<u8> {
        let mut out = Vec::new();
        render::json(&mut out, &self.population, &self.now, &self.health);
        out
    }
}
