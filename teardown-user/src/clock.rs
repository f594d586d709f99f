//! The clocks: kernel timestamps are CLOCK_MONOTONIC (`bpf_ktime_get_ns()`); people read
//! wall-clock time.

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// CLOCK_MONOTONIC, the clock of the kernel's event timestamps.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

/// Nanoseconds since the Unix epoch.
pub fn unix_ns() -> i128 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Converts kernel monotonic timestamps to wall-clock time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC, in ns.
    pub realtime_offset_ns: i128,
}

impl Clock {
    /// The offset as it is now.
    pub fn now() -> Clock {
        Clock {
            realtime_offset_ns: unix_ns() - clock_ns(libc::CLOCK_MONOTONIC),
        }
    }

    /// Nanoseconds since the Unix epoch of a monotonic timestamp.
    pub fn unix_ns(&self, ts_ns: u64) -> u64 {
        (ts_ns as i128 + self.realtime_offset_ns).max(0) as u64
    }

    /// `HH:MM:SS.mmm` (UTC) of a monotonic timestamp.
    pub fn time_of_day(&self, ts_ns: u64) -> String {
        let mut out = String::with_capacity(12);
        self.push_time_of_day(&mut out, ts_ns);
        out
    }

    /// [`Clock::time_of_day`], appended to `out` without `core::fmt` (once per line).
    pub fn push_time_of_day(&self, out: &mut String, ts_ns: u64) {
        let unix_ns = ts_ns as i128 + self.realtime_offset_ns;
        let ms_of_day = (unix_ns / 1_000_000).rem_euclid(86_400_000) as u32;
        push_padded(out, ms_of_day / 3_600_000, 2);
        out.push(':');
        push_padded(out, ms_of_day / 60_000 % 60, 2);
        out.push(':');
        push_padded(out, ms_of_day / 1000 % 60, 2);
        out.push('.');
        push_padded(out, ms_of_day % 1000, 3);
    }
}

/// Appends `n` in decimal with exactly `digits` digits, zero-padded (`n` must fit).
pub(crate) fn push_padded(out: &mut String, n: u32, digits: u32) {
    for place in (0..digits).rev() {
        out.push(char::from(b'0' + (n / 10u32.pow(place) % 10) as u8));
    }
}
