//! This kernel's layout: the offsets of every field the kernel program reads, and the
//! kernel's names for values, from its BTF.

use teardown_common::{KernelNames, SockLayout, TimeWaitLayout};

use super::btf;
use crate::error::{Error, Result};

/// Offsets of the kernel fields the kernel program reads, from this kernel's BTF.
/// The tracepoint records' offsets (`accept_ret`, `state_*`) are left 0: they come from
/// tracefs.
pub fn sock_layout(kernel: &btf::Btf) -> Result<SockLayout> {
    let field = |strukt: &str, path: &str, size: u32| sized_field(kernel, strukt, path, size);
    let sock = |path: &str, size: u32| field("sock", path, size);
    let protocol = kernel.field("sock", "sk_protocol")?;
    Ok(SockLayout {
        family: sock("__sk_common.skc_family", 2)?,
        protocol: protocol.offset,
        protocol_size: protocol.size,
        state: sock("__sk_common.skc_state", 1)?,
        shutdown: sock("sk_shutdown", 1)?,
        flags: sock("__sk_common.skc_flags", 8)?,
        flag_dead: kernel.enum_value("sock_flags", "SOCK_DEAD")?,
        flag_done: kernel.enum_value("sock_flags", "SOCK_DONE")?,
        sport: field("inet_sock", "inet_sport", 2)?,
        dport: sock("__sk_common.skc_dport", 2)?,
        rcv_saddr: sock("__sk_common.skc_rcv_saddr", 4)?,
        daddr: sock("__sk_common.skc_daddr", 4)?,
        // IPv6 fields exist only when the kernel has IPv6.
        v6_rcv_saddr: sock("__sk_common.skc_v6_rcv_saddr", 16).unwrap_or(SockLayout::NONE),
        v6_daddr: sock("__sk_common.skc_v6_daddr", 16).unwrap_or(SockLayout::NONE),
        task_files: field("task_struct", "files", 8)?,
        files_fdt: field("files_struct", "fdt", 8)?,
        fdt_max_fds: field("fdtable", "max_fds", 4)?,
        fdt_fd: field("fdtable", "fd", 8)?,
        file_private_data: field("file", "private_data", 8)?,
        socket_sk: field("socket", "sk", 8)?,
        accept_ret: 0,
        state_skaddr: 0,
        state_oldstate: 0,
        state_newstate: 0,
        skb_tcp_flags: skb_tcp_flags(kernel).unwrap_or(SockLayout::NONE),
        // Without network namespaces (CONFIG_NET_NS=n) every socket is in one.
        sk_net: sock("__sk_common.skc_net.net", 8).unwrap_or(SockLayout::NONE),
        net_inum: field("net", "ns.inum", 4).unwrap_or(SockLayout::NONE),
        // Without them, sockets from the snapshot get their owner only when they close.
        sk_socket: sock("sk_socket", 8).unwrap_or(SockLayout::NONE),
        socket_file: field("socket", "file", 8).unwrap_or(SockLayout::NONE),
        file_inode: field("file", "f_inode", 8).unwrap_or(SockLayout::NONE),
        inode_ino: field("inode", "i_ino", 8).unwrap_or(SockLayout::NONE),
        // Needed only by a tracer outside the initial pid namespace (see `numbers_pids`).
        task_group_leader: field("task_struct", "group_leader", 8).unwrap_or(SockLayout::NONE),
        task_thread_pid: field("task_struct", "thread_pid", 8).unwrap_or(SockLayout::NONE),
        pid_level: field("pid", "level", 4).unwrap_or(SockLayout::NONE),
        // A flexible array (`numbers[1]` on older kernels): only its offset matters.
        pid_numbers: kernel
            .field("pid", "numbers")
            .map_or(SockLayout::NONE, |f| f.offset),
        upid_size: kernel.struct_size("upid").unwrap_or(SockLayout::NONE),
        upid_nr: field("upid", "nr", 4).unwrap_or(SockLayout::NONE),
        upid_ns: field("upid", "ns", 8).unwrap_or(SockLayout::NONE),
        pidns_inum: field("pid_namespace", "ns.inum", 4).unwrap_or(SockLayout::NONE),
        // Without it an active reset is stamped when its tracepoint runs, after the send.
        tcp_clock_cache: field("tcp_sock", "tcp_clock_cache", 8).unwrap_or(SockLayout::NONE),
        ..tcp_seq_layout(kernel).unwrap_or(NO_TCP_SEQ)
    })
}

/// Whether the kernel program can number processes as a pid namespace other than the
/// initial one does.
pub fn numbers_pids(layout: &SockLayout) -> bool {
    [
        layout.task_group_leader,
        layout.task_thread_pid,
        layout.pid_level,
        layout.pid_numbers,
        layout.upid_size,
        layout.upid_nr,
        layout.upid_ns,
        layout.pidns_inum,
    ]
    .iter()
    .all(|&offset| offset != SockLayout::NONE)
}

/// The TIME_WAIT mini-socket's fields. The kernel program reads its `sock_common` at a
/// socket's offsets, so both must begin with it.
pub fn time_wait_layout(kernel: &btf::Btf) -> Result<TimeWaitLayout> {
    let tw = |path: &str, size: u32| sized_field(kernel, "inet_timewait_sock", path, size);
    let common = kernel.field("inet_timewait_sock", "__tw_common")?.offset;
    if common != 0 || kernel.field("sock", "__sk_common")?.offset != 0 {
        return Err(Error::KernelLayout(btf::BtfError::Missing(
            "sock_common at the start of inet_timewait_sock and sock".into(),
        )));
    }
    Ok(TimeWaitLayout {
        num: tw("__tw_common.skc_num", 2)?,
        substate: tw("tw_substate", 1)?,
        timer: kernel.field("inet_timewait_sock", "tw_timer")?.offset,
        // Without network namespaces none goes away.
        net_exit_list: kernel
            .field("net", "exit_list")
            .map_or(SockLayout::NONE, |f| f.offset),
    })
}

/// The offset of `strukt.path`, which must be `size` bytes.
fn sized_field(kernel: &btf::Btf, strukt: &str, path: &str, size: u32) -> Result<u32> {
    let f = kernel.field(strukt, path)?;
    if f.size != size {
        return Err(Error::KernelLayout(btf::BtfError::Missing(format!(
            "{size}-byte {strukt}.{path} (it has {} bytes)",
            f.size
        ))));
    }
    Ok(f.offset)
}

/// The layout with none of the `tcp_sock` sequence and ACK fields.
const NO_TCP_SEQ: SockLayout = SockLayout {
    snd_una: SockLayout::NONE,
    snd_nxt: SockLayout::NONE,
    write_seq: SockLayout::NONE,
    rcv_nxt: SockLayout::NONE,
    ack_pending: SockLayout::NONE,
    ack_pingpong: SockLayout::NONE,
    ack_sched_bit: 0,
    ack_timer_bit: 0,
    ..zero_layout()
};

const fn zero_layout() -> SockLayout {
    // SAFETY: plain u32 fields; all-zero is valid.
    unsafe { std::mem::zeroed() }
}

/// The `tcp_sock` sequence numbers and the delayed-ACK state, all or none (only these
/// fields of the result are meant to be used).
fn tcp_seq_layout(kernel: &btf::Btf) -> Result<SockLayout> {
    let tcp = |path: &str| sized_field(kernel, "tcp_sock", path, 4);
    let icsk = |path: &str| sized_field(kernel, "inet_connection_sock", path, 1);
    let bit = |name: &str| kernel.enum_value("inet_csk_ack_state_t", name);
    Ok(SockLayout {
        snd_una: tcp("snd_una")?,
        snd_nxt: tcp("snd_nxt")?,
        write_seq: tcp("write_seq")?,
        rcv_nxt: tcp("rcv_nxt")?,
        ack_pending: icsk("icsk_ack.pending")?,
        ack_pingpong: icsk("icsk_ack.pingpong")?,
        ack_sched_bit: bit("ICSK_ACK_SCHED")?,
        ack_timer_bit: bit("ICSK_ACK_TIMER")?,
        ..zero_layout()
    })
}

/// Where the low byte of `tcp_skb_cb.tcp_flags` sits in `struct sk_buff` (TCP keeps its
/// per-segment control block in `cb`).
fn skb_tcp_flags(kernel: &btf::Btf) -> Result<u32> {
    let cb = kernel.field("sk_buff", "cb")?;
    let flags = kernel.field("tcp_skb_cb", "tcp_flags")?;
    let low_byte = if cfg!(target_endian = "big") {
        flags.size - 1
    } else {
        0
    };
    Ok(cb.offset + flags.offset + low_byte)
}

/// `enum sk_rst_reason` (Linux 6.10+) by value, without its prefix.
pub fn kernel_names(kernel: &btf::Btf) -> KernelNames {
    let mut reset_reasons = Vec::new();
    for (name, value) in kernel.enum_variants("sk_rst_reason").unwrap_or_default() {
        let value = value as usize;
        if value < 256 {
            if reset_reasons.len() <= value {
                reset_reasons.resize(value + 1, String::new());
            }
            reset_reasons[value] = name.trim_start_matches("SK_RST_REASON_").to_string();
        }
    }
    KernelNames { reset_reasons }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_comes_from_btf() {
        let kernel = btf::Btf::parse(&btf::tests::mini_kernel()).unwrap();
        let layout = sock_layout(&kernel).unwrap();
        assert_eq!(layout.family, 16);
        assert_eq!(layout.sport, 640);
        assert_eq!(layout.dport, 12);
        assert_eq!(layout.daddr, 0);
        assert_eq!(layout.rcv_saddr, 4);
        assert_eq!(layout.v6_daddr, 32);
        assert_eq!(layout.protocol, 516);
        assert_eq!(layout.protocol_size, 2);
        assert_eq!(layout.state, 18);
        assert_eq!(layout.shutdown, 518);
        assert_eq!(
            (layout.flags, layout.flag_dead, layout.flag_done),
            (24, 0, 1)
        );
        assert_eq!(
            (
                layout.task_files,
                layout.files_fdt,
                layout.fdt_max_fds,
                layout.fdt_fd
            ),
            (2000, 32, 0, 8)
        );
        assert_eq!((layout.file_private_data, layout.socket_sk), (200, 24));
        assert_eq!(layout.skb_tcp_flags, 40 + 12);
        assert_eq!((layout.sk_net, layout.net_inum), (64, 20));
        assert_eq!(
            (
                layout.sk_socket,
                layout.socket_file,
                layout.file_inode,
                layout.inode_ino
            ),
            (520, 16, 32, 64)
        );
        assert_eq!(
            (
                layout.snd_una,
                layout.snd_nxt,
                layout.write_seq,
                layout.rcv_nxt
            ),
            (1500, 1504, 1600, 1700)
        );
        assert_eq!((layout.ack_pending, layout.ack_pingpong), (1300, 1302));
        assert_eq!(layout.tcp_clock_cache, 1800);
        assert_eq!((layout.ack_sched_bit, layout.ack_timer_bit), (1, 2));
    }
}
