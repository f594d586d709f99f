//! Network namespaces: found from every process's `/proc/PID/ns/net` and from the named
//! ones in `/run/netns`, each entered in a short-lived thread of its own (`setns` changes
//! only the calling thread), where a sock_diag socket is opened and the namespace's
//! port and TIME_WAIT settings are read. The socket stays in that namespace after the
//! thread is gone, so the dump itself runs on the caller's thread.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    path::PathBuf,
};

use super::diag;

/// The per-namespace settings that decide how long closing sockets stay and how many
/// local ports connect() may use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// `net.ipv4.ip_local_port_range`.
    pub ephemeral: Option<(u16, u16)>,
    /// `net.ipv4.tcp_tw_reuse` (0 off, 1 on, 2 loopback only).
    pub tw_reuse: Option<u32>,
    /// `net.ipv4.tcp_fin_timeout`, seconds.
    pub fin_timeout_s: Option<u32>,
}

/// A namespace entered: its inode, a sock_diag socket inside it and its settings.
pub struct Entered {
    pub inode: u64,
    pub diag: OwnedFd,
    pub settings: Settings,
}

/// What enumeration found: namespaces by inode, with a path to enter each by.
#[derive(Debug, Default)]
pub struct Found {
    pub paths: BTreeMap<u64, PathBuf>,
    /// Processes whose namespace could not be looked at (another user's, without
    /// privileges): their namespaces may be missing from `paths`.
    pub unreadable: u64,
    /// The first of them and why, so the warning names it.
    pub first_unreadable: Option<String>,
}

/// Every network namespace visible from here, by inode.
pub fn find() -> Found {
    let mut found = Found::default();
    if let Ok(own) = fs::metadata("/proc/self/ns/net") {
        found.paths.insert(own.ino(), "/proc/self/ns/net".into());
    }
    if let Ok(dir) = fs::read_dir("/run/netns") {
        for entry in dir.flatten() {
            if let Ok(meta) = fs::metadata(entry.path()) {
                found.paths.entry(meta.ino()).or_insert(entry.path());
            }
        }
    }
    for pid in super::owners::pids() {
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        match fs::metadata(&path) {
            Ok(meta) => {
                found.paths.entry(meta.ino()).or_insert(path);
            }
            // The process may have exited since /proc was listed: not a blind spot.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                found.unreadable += 1;
                found.first_unreadable.get_or_insert_with(|| {
                    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                    format!("pid {pid} {}: {e}", comm.trim())
                });
            }
        }
    }
    found
}

/// The inode of the caller's own network namespace.
pub fn own() -> Option<u64> {
    fs::metadata("/proc/self/ns/net").ok().map(|m| m.ino())
}

/// Enters the namespace at `path` in a thread of its own and comes back with a sock_diag
/// socket and the settings there. Needs CAP_SYS_ADMIN unless it is the caller's own.
pub fn enter(inode: u64, path: &PathBuf, own: Option<u64>) -> io::Result<Entered> {
    if Some(inode) == own {
        return Ok(Entered {
            inode,
            diag: diag::open()?,
            settings: settings(),
        });
    }
    let file = File::open(path)?;
    std::thread::scope(|scope| {
        // Builder: a thread that cannot be made (no memory for its stack) is an error,
        // not a panic.
        std::thread::Builder::new()
            .spawn_scoped(scope, || {
                // SAFETY: setns on a namespace fd we hold; it moves this thread only, which
                // ends right after.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(Entered {
                    inode,
                    diag: diag::open()?,
                    settings: settings(),
                })
            })?
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace thread failed")))
    })
}

/// Read in the namespace at hand: `/proc/sys/net` shows the reading thread's namespace.
fn settings() -> Settings {
    let read = |name: &str| fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).ok();
    let number = |name: &str| read(name).and_then(|s| s.trim().parse().ok());
    Settings {
        ephemeral: read("ip_local_port_range").and_then(|s| port_range(&s)),
        tw_reuse: number("tcp_tw_reuse"),
        fin_timeout_s: number("tcp_fin_timeout"),
    }
}

fn port_range(s: &str) -> Option<(u16, u16)> {
    let mut parts = s.split_whitespace().map(str::parse::<u16>);
    match (parts.next(), parts.next()) {
        (Some(Ok(low)), Some(Ok(high))) if low <= high => Some((low, high)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_as_the_kernel_prints_them() {
        assert_eq!(port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(port_range("9 1"), None);
        assert_eq!(port_range("x"), None);
    }

    #[test]
    fn the_own_namespace_is_found_and_entered_without_privileges() {
        let found = find();
        let own = own().unwrap();
        assert!(found.paths.contains_key(&own));
        let entered = enter(own, &found.paths[&own], Some(own)).unwrap();
        assert!(entered.settings.ephemeral.is_some());
    }
}
