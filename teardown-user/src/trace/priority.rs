//! The consumer's CPU priority.

use teardown_common::Event;

/// The consumer yields to the traced workload: at nice 10 it runs mostly when a CPU has
/// time to spare, instead of preempting the processes whose connections it is tracing
/// (`cargo xtask bench --concurrency 1`: 0.89 -> 0.92 of the untraced rate).
pub const YIELDING_NICE: i32 = 10;

/// It drops to `YIELDING_NICE` and goes back to a normal share for good once it falls
/// behind: a drain that finds the ring half full, or any lost event, means the host is busy
/// enough that yielding would cost events.
pub struct Priority {
    nice: i32,
    ring_bytes: usize,
}

impl Priority {
    pub fn yielding(ring_bytes: usize) -> Self {
        let priority = Priority {
            nice: YIELDING_NICE,
            ring_bytes,
        };
        priority.apply();
        priority
    }

    /// After a drain of `events` events; `lost` says whether events were lost since.
    /// True when the priority changed and must be applied.
    pub fn after_drain(&mut self, events: usize, lost: bool) -> bool {
        let behind = lost || events * size_of::<Event>() >= self.ring_bytes / 2;
        let changed = behind && self.nice != 0;
        if changed {
            self.nice = 0;
        }
        changed
    }

    pub fn apply(&self) {
        // SAFETY: plain syscall on this process. Best effort: only root, which tracing
        // needs anyway, may raise its priority again.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, self.nice) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_after(drains: &[(usize, bool)]) -> i32 {
        let mut priority = Priority {
            nice: YIELDING_NICE,
            ring_bytes: 4 << 20,
        };
        for &(events, lost) in drains {
            priority.after_drain(events, lost);
        }
        priority.nice
    }

    #[test]
    fn the_consumer_yields_until_it_falls_behind_then_keeps_a_normal_share() {
        let half_ring = (2usize << 20).div_ceil(size_of::<Event>());
        assert_eq!(nice_after(&[(0, false), (1000, false)]), YIELDING_NICE);
        assert_eq!(nice_after(&[(half_ring - 1, false)]), YIELDING_NICE);
        assert_eq!(nice_after(&[(half_ring, false), (0, false)]), 0);
        assert_eq!(nice_after(&[(10, true), (0, false)]), 0, "a lost event");
    }
}
