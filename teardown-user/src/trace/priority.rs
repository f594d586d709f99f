//! The handling thread's CPU priority (the drain, which keeps the ring empty, runs at
//! real-time priority on its own: `capture::Drain`).
//!
//! At nice 10 the consumer runs mostly when a CPU has time to spare, instead of preempting
//! the processes whose connections it traces (`cargo xtask bench --concurrency 1`: 0.89 ->
//! 0.92 of the untraced rate). Events it has not handled wait in memory, so yielding costs
//! no events; but once many wait, it takes a normal share until it has caught up, so that
//! the wait (and the memory it holds) stays short.

/// Events waiting from which the consumer stops yielding.
const BEHIND: usize = 1 << 16;
/// Events waiting below which it yields again.
const CAUGHT_UP: usize = 1 << 12;

pub const YIELDING_NICE: i32 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Yielding,
    Behind,
}

pub struct Priority {
    level: Level,
}

impl Priority {
    pub fn yielding() -> Self {
        let priority = Priority {
            level: Level::Yielding,
        };
        priority.apply();
        priority
    }

    /// After handling what was there, with `waiting` events still to handle. True when the
    /// level changed and must be applied.
    pub fn after_drain(&mut self, waiting: usize) -> bool {
        let level = if waiting >= BEHIND {
            Level::Behind
        } else if waiting < CAUGHT_UP {
            Level::Yielding
        } else {
            self.level
        };
        let changed = level != self.level;
        self.level = level;
        changed
    }

    /// Best effort: only root, which tracing needs anyway, may raise its priority again.
    pub fn apply(&self) {
        let nice = match self.level {
            Level::Yielding => YIELDING_NICE,
            Level::Behind => 0,
        };
        // SAFETY: plain syscall on the calling thread.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level_after(waiting: &[usize]) -> Level {
        let mut priority = Priority {
            level: Level::Yielding,
        };
        for &w in waiting {
            priority.after_drain(w);
        }
        priority.level
    }

    #[test]
    fn the_consumer_yields_unless_many_events_wait() {
        assert_eq!(level_after(&[0, 1000]), Level::Yielding);
        assert_eq!(level_after(&[BEHIND - 1]), Level::Yielding);
        assert_eq!(level_after(&[BEHIND]), Level::Behind);
        assert_eq!(
            level_after(&[BEHIND, CAUGHT_UP]),
            Level::Behind,
            "still behind"
        );
        assert_eq!(level_after(&[BEHIND, CAUGHT_UP - 1]), Level::Yielding);
    }
}
