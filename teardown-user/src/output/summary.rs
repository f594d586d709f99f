//! What a run saw, counted: the closing summary line and the document's `summary`.

use std::fmt::Write as _;

use teardown_common::state;

use crate::reconstruct::{Role, Timeline, CLOSING_STATES};

/// Completed teardowns and sockets still closing are counted apart: a socket that sat in
/// CLOSE_WAIT when tracing stopped has not been torn down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Kernel events handled.
    pub events: u64,
    /// Raw modes: events printed (nothing is reconstructed then).
    pub shown: Option<u64>,
    /// Completed teardowns by role, in `Role::ALL` order.
    pub by_role: [u64; 4],
    /// Completed teardowns whose role nothing seen tells.
    pub unknown_role: u64,
    /// Sockets still closing when tracing stopped following them, by `CLOSING_STATES`
    /// index (anything else in `still_other`).
    pub still: [u64; CLOSING_STATES.len()],
    pub still_other: u64,
    /// Timelines that may have lost an event (`gap`).
    pub damaged: u64,
    pub lost_events: u64,
    pub lost_owners: u64,
    pub evicted: u64,
}

impl Summary {
    pub fn count(&mut self, t: &Timeline) {
        if t.gap {
            self.damaged += 1;
        }
        if !t.complete() {
            match t
                .state()
                .and_then(|s| CLOSING_STATES.iter().position(|&c| c == s))
            {
                Some(i) => self.still[i] += 1,
                None => self.still_other += 1,
            }
            return;
        }
        match t.role() {
            Some(role) => self.by_role[role as usize] += 1,
            None => self.unknown_role += 1,
        }
    }

    pub fn completed(&self) -> u64 {
        self.by_role.iter().sum::<u64>() + self.unknown_role
    }

    pub fn still_closing(&self) -> u64 {
        self.still.iter().sum::<u64>() + self.still_other
    }

    /// The line printed at exit.
    pub fn line(&self) -> String {
        let mut out = String::new();
        if let Some(shown) = self.shown {
            let _ = write!(out, "{shown} events shown, ");
        } else {
            let _ = write!(out, "{} teardowns (", self.completed());
            for (role, n) in Role::ALL.iter().zip(self.by_role) {
                let _ = write!(out, "{} {n}, ", role.name());
            }
            let _ = write!(
                out,
                "unknown {}), {} still closing",
                self.unknown_role,
                self.still_closing()
            );
            let states: Vec<String> = CLOSING_STATES
                .iter()
                .zip(self.still)
                .filter(|(_, n)| *n > 0)
                .map(|(s, n)| format!("{} {n}", state::name(*s)))
                .collect();
            if !states.is_empty() {
                let _ = write!(out, " ({})", states.join(", "));
            }
            out.push_str(", ");
        }
        let _ = write!(
            out,
            "{} events seen, {} lost events",
            self.events, self.lost_events
        );
        if self.damaged > 0 {
            let _ = write!(out, ", {} timelines marked gap", self.damaged);
        }
        if self.lost_owners > 0 {
            let _ = write!(
                out,
                ", {} owners not recorded (owner table full, or busy on that CPU)",
                self.lost_owners
            );
        }
        if self.evicted > 0 {
            let _ = write!(
                out,
                ", {} sockets reported early (too many open)",
                self.evicted
            );
        }
        out
    }
}
