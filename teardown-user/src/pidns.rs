//! Which pid namespace a live trace's pids are in: the tracer's own, so that `-p` takes the
//! pids its caller sees (in a container, the container's) and the output shows the same.
//! The kernel program numbers each process as that namespace does (`owner::current_pid`
//! in the kernel crate); a process outside it has no pid there and shows none.

use std::{io, os::unix::fs::MetadataExt};

/// The initial pid namespace's inode (`PROC_PID_INIT_INO`, fixed since Linux 3.8).
const INITIAL: u64 = 0xEFFF_FFFC;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PidNamespace {
    /// As `/proc/PID/ns/pid` and `lsns` show it.
    pub inode: u64,
}

impl PidNamespace {
    /// This process's.
    pub fn own() -> io::Result<PidNamespace> {
        let inode = std::fs::metadata("/proc/self/ns/pid")?.ino();
        Ok(PidNamespace { inode })
    }

    pub fn is_initial(self) -> bool {
        self.inode == INITIAL
    }

    /// The line above the text column header, where pids are not the host's.
    pub fn text_line(self) -> Option<String> {
        (!self.is_initial()).then(|| {
            format!(
                "pids as pid namespace {} numbers them (not the initial one; processes outside it show none)",
                self.inode
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_namespace_other_than_the_initial_one_is_said_in_text() {
        assert_eq!(PidNamespace { inode: INITIAL }.text_line(), None);
        let line = PidNamespace { inode: 4026532839 }.text_line().unwrap();
        assert!(line.starts_with("pids as pid namespace 4026532839 numbers them"));
    }
}
