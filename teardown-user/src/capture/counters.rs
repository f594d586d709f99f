//! The kernel's `counter::*`, read from a mapping of their array: no system call, so no
//! reading ever makes the kernel skip a program (see `COUNTERS` in the kernel program).

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::MapData;
use teardown_common::counter;

use super::ring::Mapping;

pub struct Counters {
    /// Kept open for the mapping's sake.
    _map: MapData,
    values: Mapping,
    cpus: usize,
}

/// The CPUs the kernel may run on, as the kernel numbers them.
const POSSIBLE_CPUS: &str = "/sys/devices/system/cpu/possible";

/// One past the highest number a CPU may have: the kernel programs index their counters
/// by CPU number, and the possible CPUs may have gaps (`0-3,8-11`).
pub fn cpu_numbers() -> io::Result<usize> {
    let possible = std::fs::read_to_string(POSSIBLE_CPUS)?;
    possible_cpu_numbers(&possible).ok_or_else(|| {
        io::Error::other(format!(
            "{POSSIBLE_CPUS}: not a CPU list: {}",
            possible.trim()
        ))
    })
}

fn possible_cpu_numbers(list: &str) -> Option<usize> {
    let highest: usize = list.trim().rsplit([',', '-']).next()?.parse().ok()?;
    Some(highest + 1)
}

impl Counters {
    /// Slots for `cpus` CPU numbers: what the array must be sized to before it is loaded.
    pub fn slots(cpus: usize) -> u32 {
        cpus as u32 * counter::PER_CPU
    }

    pub fn new(map: MapData, cpus: usize) -> io::Result<Counters> {
        let slots = map
            .info()
            .map_err(|e| io::Error::other(e.to_string()))?
            .max_entries();
        if slots < Self::slots(cpus) {
            return Err(io::Error::other(format!(
                "{slots} counters for {cpus} CPUs"
            )));
        }
        let bytes = slots as usize * size_of::<u64>();
        let values = Mapping::new(map.fd().as_fd().as_raw_fd(), bytes, libc::PROT_READ, 0)?;
        Ok(Counters {
            _map: map,
            values,
            cpus,
        })
    }

    /// `index` (a `counter::*`), summed over every CPU.
    pub fn get(&self, index: u32) -> u64 {
        (0..self.cpus)
            .map(|cpu| {
                let slot = cpu * counter::PER_CPU as usize + index as usize;
                // SAFETY: within the mapping (checked in `new`); the kernel adds to each
                // 8-byte aligned value atomically.
                let value = unsafe { &*self.values.ptr().cast::<AtomicU64>().add(slot) };
                value.load(Ordering::Relaxed)
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::possible_cpu_numbers;

    #[test]
    fn counters_reach_the_highest_cpu_number_even_past_gaps() {
        assert_eq!(possible_cpu_numbers("0\n"), Some(1));
        assert_eq!(possible_cpu_numbers("0-3\n"), Some(4));
        assert_eq!(possible_cpu_numbers("0-3,8-11\n"), Some(12));
        assert_eq!(possible_cpu_numbers("0,2\n"), Some(3));
        assert_eq!(possible_cpu_numbers("\n"), None);
    }
}
