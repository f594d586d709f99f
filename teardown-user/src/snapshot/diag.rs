//! `NETLINK_SOCK_DIAG`: the kernel's own list of TCP sockets in one network namespace, with
//! each socket's timer, queues and `tcp_info` (what `ss -tei` shows).
//!
//! The request and reply layouts are the kernel's user ABI (`linux/inet_diag.h`,
//! `linux/tcp.h`), fixed since Linux 2.6; replies are parsed with bounds checks, so an odd
//! or truncated reply is skipped, never a panic.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const INET_DIAG_INFO: u16 = 2;
const NLMSG_HDR: usize = 16;
/// Header and `struct inet_diag_req_v2`.
const REQUEST: usize = NLMSG_HDR + 56;
/// `struct inet_diag_msg`.
const DIAG_MSG: usize = 72;
/// Every state (`1 << TCP_*`), TIME_WAIT and request sockets included.
const ALL_STATES: u32 = 0xffff_fffe;
/// One receive at a time: memory stays this size whatever the number of sockets.
pub const RECV_BUFFER: usize = 64 << 10;

/// What `tcp_info` tells about a full socket (absent for TIME_WAIT mini-sockets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpInfo {
    /// `icsk_retransmits`: consecutive retransmission timeouts without an ACK.
    pub retransmits: u8,
    /// Segments sent and not yet acknowledged.
    pub unacked: u32,
    /// Of those, segments retransmitted and not yet acknowledged.
    pub retrans: u32,
    /// ms since the last data segment was received (or since the connection was set up).
    pub last_data_recv_ms: u32,
    /// ms since the last ACK was received.
    pub last_ack_recv_ms: u32,
    /// ms since the last data segment was sent.
    pub last_data_sent_ms: u32,
    pub total_retrans: u32,
}

/// One socket as `inet_diag_msg` describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiagSocket {
    pub family: u16,
    /// For a TIME_WAIT mini-socket, its substate (TIME_WAIT or FIN_WAIT2): the kernel
    /// reports `tw_substate` here.
    pub state: u8,
    /// 0 none, 1 retransmit, 2 keepalive (also FIN_WAIT2's), 3 TIME_WAIT, 4 zero-window probe.
    pub timer: u8,
    /// Retransmissions (timer 1) or probes (timer 4) done so far.
    pub retrans: u8,
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// ms until the timer fires.
    pub expires_ms: u32,
    /// Receive queue; for a listener, its accept queue.
    pub rqueue: u32,
    /// Send queue: bytes not yet acknowledged (the FIN counts one).
    pub wqueue: u32,
    pub uid: u32,
    /// The socket's inode (`socket:[INODE]` in /proc/PID/fd); 0 for mini-sockets.
    pub inode: u32,
    pub info: Option<TcpInfo>,
}

pub const TIMER_TIME_WAIT: u8 = 3;

/// A netlink socket for sock_diag in the caller's network namespace.
pub fn open() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The dump request for every TCP socket of `family`, with `tcp_info`.
pub fn request(family: u16, seq: u32) -> [u8; REQUEST] {
    let mut req = [0u8; REQUEST];
    req[0..4].copy_from_slice(&(REQUEST as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[8..12].copy_from_slice(&seq.to_ne_bytes());
    let body = &mut req[NLMSG_HDR..];
    body[0] = family as u8;
    body[1] = libc::IPPROTO_TCP as u8;
    body[2] = 1 << (INET_DIAG_INFO - 1);
    body[4..8].copy_from_slice(&ALL_STATES.to_ne_bytes());
    req
}

/// Dumps every TCP socket of `family` through `fd`, handing each to `sink`.
/// Memory: one `RECV_BUFFER`, whatever the number of sockets.
pub fn dump(fd: &OwnedFd, family: u16, mut sink: impl FnMut(DiagSocket)) -> io::Result<()> {
    let seq = 1;
    let req = request(family, seq);
    // SAFETY: sending our own buffer; the kernel is the default destination of a netlink socket.
    let sent = unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        // SAFETY: the kernel writes at most `buf.len()` bytes into the buffer we own.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(());
        }
        match parse(&buf[..n as usize], &mut sink)? {
            Batch::More => {}
            Batch::Done => return Ok(()),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Batch {
    More,
    Done,
}

/// One datagram of netlink messages. A message too short for what it claims is skipped;
/// a kernel error ends the dump with that error.
pub fn parse(mut bytes: &[u8], sink: &mut impl FnMut(DiagSocket)) -> io::Result<Batch> {
    while bytes.len() >= NLMSG_HDR {
        let len = u32_at(bytes, 0) as usize;
        let kind = u16::from_ne_bytes([bytes[4], bytes[5]]);
        if len < NLMSG_HDR || len > bytes.len() {
            return Ok(Batch::More);
        }
        let body = &bytes[NLMSG_HDR..len];
        match kind {
            NLMSG_DONE => return Ok(Batch::Done),
            NLMSG_ERROR => {
                let errno = body
                    .get(..4)
                    .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                return if errno == 0 {
                    Ok(Batch::Done)
                } else {
                    Err(io::Error::from_raw_os_error(-errno))
                };
            }
            SOCK_DIAG_BY_FAMILY => {
                if let Some(socket) = socket(body) {
                    sink(socket);
                }
            }
            _ => {}
        }
        bytes = &bytes[align4(len).min(bytes.len())..];
    }
    Ok(Batch::More)
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// `struct inet_diag_msg` and its attributes.
fn socket(body: &[u8]) -> Option<DiagSocket> {
    if body.len() < DIAG_MSG {
        return None;
    }
    let family = body[0] as u16;
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    saddr.copy_from_slice(&body[8..24]);
    daddr.copy_from_slice(&body[24..40]);
    let mut socket = DiagSocket {
        family,
        state: body[1],
        timer: body[2],
        retrans: body[3],
        sport: u16::from_be_bytes([body[4], body[5]]),
        dport: u16::from_be_bytes([body[6], body[7]]),
        saddr,
        daddr,
        expires_ms: u32_at(body, 52),
        rqueue: u32_at(body, 56),
        wqueue: u32_at(body, 60),
        uid: u32_at(body, 64),
        inode: u32_at(body, 68),
        info: None,
    };
    let mut attrs = &body[DIAG_MSG..];
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            break;
        }
        if kind == INET_DIAG_INFO {
            socket.info = tcp_info(&attrs[4..len]);
        }
        attrs = &attrs[align4(len).min(attrs.len())..];
    }
    Some(socket)
}

/// The leading fields of `struct tcp_info` (the kernel may send more, or, if older, fewer:
/// too short for these is treated as absent).
fn tcp_info(b: &[u8]) -> Option<TcpInfo> {
    if b.len() < 104 {
        return None;
    }
    Some(TcpInfo {
        retransmits: b[2],
        unacked: u32_at(b, 24),
        retrans: u32_at(b, 36),
        last_data_sent_ms: u32_at(b, 44),
        last_data_recv_ms: u32_at(b, 52),
        last_ack_recv_ms: u32_at(b, 56),
        total_retrans: u32_at(b, 100),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A reply message as the kernel builds it: header, `inet_diag_msg`, optional tcp_info.
    pub fn message(
        state: u8,
        timer: u8,
        sport: u16,
        dport: u16,
        inode: u32,
        info: Option<[u32; 3]>,
    ) -> Vec<u8> {
        let mut body = vec![0u8; DIAG_MSG];
        body[0] = libc::AF_INET as u8;
        body[1] = state;
        body[2] = timer;
        body[3] = 2;
        body[4..6].copy_from_slice(&sport.to_be_bytes());
        body[6..8].copy_from_slice(&dport.to_be_bytes());
        body[8..12].copy_from_slice(&[127, 0, 0, 1]);
        body[24..28].copy_from_slice(&[127, 0, 0, 2]);
        body[52..56].copy_from_slice(&1500u32.to_ne_bytes());
        body[60..64].copy_from_slice(&1u32.to_ne_bytes());
        body[68..72].copy_from_slice(&inode.to_ne_bytes());
        if let Some([data, ack, unacked]) = info {
            let mut tcp_info = vec![0u8; 232];
            tcp_info[24..28].copy_from_slice(&unacked.to_ne_bytes());
            tcp_info[52..56].copy_from_slice(&data.to_ne_bytes());
            tcp_info[56..60].copy_from_slice(&ack.to_ne_bytes());
            body.extend_from_slice(&((4 + tcp_info.len()) as u16).to_ne_bytes());
            body.extend_from_slice(&INET_DIAG_INFO.to_ne_bytes());
            body.extend_from_slice(&tcp_info);
        }
        with_header(SOCK_DIAG_BY_FAMILY, &body)
    }

    pub fn with_header(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDR + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0u8; 10]);
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    fn all(bytes: &[u8]) -> (io::Result<Batch>, Vec<DiagSocket>) {
        let mut out = Vec::new();
        let batch = parse(bytes, &mut |s| out.push(s));
        (batch, out)
    }

    #[test]
    fn a_reply_with_tcp_info_and_a_time_wait_mini_socket() {
        let mut bytes = message(8, 0, 8080, 40000, 777, Some([2500, 2400, 0]));
        bytes.extend(message(5, TIMER_TIME_WAIT, 40001, 8080, 0, None));
        bytes.extend(with_header(NLMSG_DONE, &[0; 4]));
        let (batch, sockets) = all(&bytes);
        assert_eq!(batch.unwrap(), Batch::Done);
        assert_eq!(sockets.len(), 2);
        let close_wait = sockets[0];
        assert_eq!(
            (close_wait.state, close_wait.sport, close_wait.dport),
            (8, 8080, 40000)
        );
        assert_eq!(close_wait.inode, 777);
        assert_eq!(&close_wait.saddr[..4], &[127, 0, 0, 1]);
        let info = close_wait.info.unwrap();
        assert_eq!(
            (info.last_data_recv_ms, info.last_ack_recv_ms),
            (2500, 2400)
        );
        let mini = sockets[1];
        assert_eq!(
            (mini.state, mini.timer, mini.expires_ms, mini.info),
            (5, 3, 1500, None)
        );
    }

    #[test]
    fn odd_replies_are_skipped_or_errors_never_panics() {
        // A message claiming more bytes than arrived.
        let mut bytes = message(8, 0, 1, 2, 3, None);
        bytes[0] = 200;
        assert_eq!(all(&bytes).1.len(), 0);
        // A body too short for inet_diag_msg, an attribute longer than its message, a
        // tcp_info too short: skipped or left out.
        let short = with_header(SOCK_DIAG_BY_FAMILY, &[0u8; 20]);
        assert_eq!(all(&short).1.len(), 0);
        let mut bad_attr = message(8, 0, 1, 2, 3, Some([1, 1, 1]));
        bad_attr[NLMSG_HDR + DIAG_MSG] = 0xff;
        bad_attr[NLMSG_HDR + DIAG_MSG + 1] = 0xff;
        assert_eq!(all(&bad_attr).1[0].info, None);
        for cut in 0..bytes.len() {
            let _ = all(&message(8, 0, 1, 2, 3, Some([1, 1, 1]))[..cut]);
        }
        // The kernel's error ends the dump with it.
        let error = with_header(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes());
        assert_eq!(all(&error).0.unwrap_err().raw_os_error(), Some(libc::EPERM));
    }

    #[test]
    fn the_request_asks_for_every_state_and_tcp_info() {
        let req = request(libc::AF_INET6 as u16, 7);
        assert_eq!(u32_at(&req, 0) as usize, req.len());
        assert_eq!(req[NLMSG_HDR], libc::AF_INET6 as u8);
        assert_eq!(req[NLMSG_HDR + 1], 6);
        assert_eq!(req[NLMSG_HDR + 2], 2, "INET_DIAG_INFO");
        assert_eq!(u32_at(&req, NLMSG_HDR + 4) & (1 << 6), 1 << 6, "TIME_WAIT");
    }
}
