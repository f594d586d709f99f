//! Socket owners, as `ss -p` finds them: every process's `/proc/PID/fd/*` links that read
//! `socket:[INODE]`. Only the inodes asked for are kept, so memory follows the sockets of
//! interest, not every file descriptor on the host.

use std::{
    collections::{BTreeMap, HashMap},
    ffi::CString,
    fs,
    os::fd::AsRawFd,
};

/// The processes holding each wanted socket inode, and their names.
#[derive(Debug, Default)]
pub struct Owners {
    pub by_inode: HashMap<u32, Vec<u32>>,
    pub comms: BTreeMap<u32, String>,
    /// Processes whose file descriptors could not be read (another user's, without
    /// privileges): the sockets they hold show no owner.
    pub unreadable: u64,
}

/// Every process id in /proc.
pub fn pids() -> impl Iterator<Item = u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
}

/// Scans every process for descriptors of the sockets in `wanted`.
pub fn scan(wanted: &HashMap<u32, ()>) -> Owners {
    let mut owners = Owners::default();
    if wanted.is_empty() {
        return owners;
    }
    let mut link = [0u8; 64];
    for pid in pids() {
        let dir = format!("/proc/{pid}/fd");
        // The directory twice: listed by name, and opened, so that each link is read
        // relative to it (readlinkat) instead of walking /proc/PID/fd again per descriptor.
        let (Ok(fds), Ok(dir_file)) = (fs::read_dir(&dir), fs::File::open(&dir)) else {
            // Gone since /proc was listed, or not ours to read.
            if fs::metadata(format!("/proc/{pid}")).is_ok() {
                owners.unreadable += 1;
            }
            continue;
        };
        let mut holds_one = false;
        for fd in fds.flatten() {
            let Ok(name) = CString::new(fd.file_name().as_encoded_bytes()) else {
                continue;
            };
            // SAFETY: the kernel writes at most `link.len()` bytes into the buffer we own.
            let len = unsafe {
                libc::readlinkat(
                    dir_file.as_raw_fd(),
                    name.as_ptr(),
                    link.as_mut_ptr().cast(),
                    link.len(),
                )
            };
            let Ok(len) = usize::try_from(len) else {
                continue;
            };
            let Some(inode) = socket_inode(&link[..len]) else {
                continue;
            };
            if wanted.contains_key(&inode) {
                let pids = owners.by_inode.entry(inode).or_default();
                // A process with the socket on several descriptors is one owner.
                if pids.last() != Some(&pid) {
                    pids.push(pid);
                }
                holds_one = true;
            }
        }
        if holds_one {
            owners.comms.insert(pid, comm(pid));
        }
    }
    owners
}

/// `socket:[1234]` → 1234.
pub fn socket_inode(link: &[u8]) -> Option<u32> {
    let digits = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end_matches('\n').to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_links_are_read_like_ss_does() {
        assert_eq!(socket_inode(b"socket:[4026]"), Some(4026));
        assert_eq!(socket_inode(b"pipe:[4026]"), None);
        assert_eq!(socket_inode(b"socket:[]"), None);
        assert_eq!(socket_inode(b"/dev/null"), None);
    }

    #[test]
    fn a_socket_of_this_process_is_found_with_its_owner() {
        use std::os::unix::fs::MetadataExt;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let inode = fs::metadata(format!("/proc/self/fd/{fd}")).unwrap().ino() as u32;
        let owners = scan(&HashMap::from([(inode, ())]));
        assert_eq!(owners.by_inode[&inode], vec![std::process::id()]);
        assert!(!owners.comms[&std::process::id()].is_empty());
    }
}
