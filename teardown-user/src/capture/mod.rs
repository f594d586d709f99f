//! Capture: loads the kernel program, fills in this kernel's layout and the user's filters,
//! attaches the hooks and hands out the ring buffer's [`Event`]s.
//!
//! Everything privileged lives here; the rest of the crate only sees [`Event`]s.

pub mod btf;
pub mod tracefs;

use std::{
    fs,
    os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
};

use aya::{
    maps::{HashMap, MapData, MapType, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, TracePoint},
    sys::is_map_supported,
    Ebpf, EbpfLoader,
};
use teardown_common::{counter, filter as bits, Config, Event, SockLayout};

use crate::{
    error::{Error, Result},
    filter::Filter,
    output::KernelNames,
};

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The compiled kernel program, embedded by `build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/teardown"));

#[derive(Clone, Debug)]
pub struct CaptureOptions {
    pub filter: Filter,
    /// Drop connection-opening transitions in the kernel (everything but `--raw`).
    pub closing_only: bool,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Live sockets whose owner the kernel can hold at once.
    pub max_sockets: u32,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            filter: Filter::default(),
            closing_only: false,
            ring_bytes: 4 << 20,
            max_sockets: 1 << 17,
        }
    }
}

/// Prints what the kernel program logs (rare conditions only) as one line on stderr.
struct KernelLog;

impl log::Log for KernelLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        eprintln!("teardown-trace: kernel: {}", record.args());
    }
    fn flush(&self) {}
}

/// The programs whose runs are events, and the one whose runs are owners. (The runs
/// `inet_sock_set_state_nested` misses are ones where the main program ran.)
const EVENT_PROGRAMS: [&str; 4] = [
    "inet_sock_set_state",
    "tcp_send_reset",
    "tcp_receive_reset",
    "tcp_retransmit_skb",
];
const OWNER_PROGRAMS: [&str; 1] = ["sys_exit_accept"];
const NESTED_LOSES: &str =
    "transitions the kernel skips while the program runs on that CPU are counted, not recovered";

/// What the kernel could not hand over, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lost {
    /// Events dropped because the ring buffer was full.
    pub ring_full: u64,
    /// Hook firings the kernel skipped because our program was already running on that CPU
    /// (a softirq interrupted it), less those `inet_sock_set_state_nested` handled.
    pub skipped: u64,
    /// Owners not recorded: the owner table was full, or accept()'s program was skipped.
    pub owners: u64,
}

impl Lost {
    pub fn events(&self) -> u64 {
        self.ring_full + self.skipped
    }
}

/// A running capture. Dropping it detaches everything.
pub struct Capture {
    ring: RingBuf<MapData>,
    log: aya_log::EbpfLogger<KernelLog>,
    counters: PerCpuArray<MapData, u64>,
    /// Hooks this kernel lacks, and what the output loses because of it.
    pub degraded: Vec<String>,
    /// Names this kernel gives to values in events.
    pub names: KernelNames,
    /// Keeps the programs loaded and attached; read for their statistics.
    ebpf: Ebpf,
}

impl Capture {
    pub fn start(options: &CaptureOptions) -> Result<Capture> {
        check_privileges()?;
        let btf_bytes = fs::read(VMLINUX_BTF).map_err(|_| Error::NoBtf(VMLINUX_BTF.into()))?;
        let kernel = btf::Btf::parse(&btf_bytes)?;
        if !is_map_supported(MapType::RingBuf).unwrap_or(false) {
            return Err(Error::NoRingBuf);
        }
        let mut degraded = Vec::new();
        let mut layout = sock_layout(&kernel)?;
        // accept() owners come from a classic tracepoint, which lives in tracefs.
        let accept_hook = tracefs::ensure_mounted()
            .and_then(|()| tracefs::field_offset("syscalls", "sys_exit_accept4", "ret"));
        match accept_hook {
            Ok(offset) => layout.accept_ret = offset,
            Err(e) => degraded.push(format!("{e}: {ACCEPT_LOSES}")),
        }

        let mut filters = options.filter.kernel_bits();
        if options.closing_only {
            filters |= bits::CLOSING_ONLY;
        }
        let config = Config {
            layout,
            filters,
            // Wake the reader when an eighth of the ring is used; below that it polls.
            wakeup_bytes: options.ring_bytes / 8,
            send_reset_nargs: kernel.tracepoint_arg_count("tcp_send_reset").unwrap_or(0),
        };
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .map_max_entries("EVENTS", options.ring_bytes)
            .map_max_entries("OWNERS", options.max_sockets)
            .load(EBPF_OBJECT)
            .map_err(|e| Error::Bpf(format!("loading the kernel program: {}", first_line(e))))?;
        fill_filter_maps(&mut ebpf, &options.filter)?;
        let log = aya_log::EbpfLogger::init_with_logger(&mut ebpf, KernelLog)
            .map_err(|e| Error::Bpf(format!("kernel log: {e}")))?;

        let aya_btf = aya::Btf::parse(&btf_bytes, aya::Endianness::default())
            .map_err(|e| Error::Bpf(format!("parsing kernel BTF: {e}")))?;
        attach_btf_tracepoint(&mut ebpf, &aya_btf, "inet_sock_set_state")?;
        // After the main program, so that it runs second on every transition.
        let nested = "inet_sock_set_state_nested";
        if let Err(e) = attach_btf_tracepoint_to(&mut ebpf, &aya_btf, nested, "inet_sock_set_state")
        {
            degraded.push(format!("{e}: {NESTED_LOSES}"));
        }
        for name in ["tcp_send_reset", "tcp_receive_reset"] {
            if let Err(e) = attach_btf_tracepoint(&mut ebpf, &aya_btf, name) {
                degraded.push(format!("{e}: resets are inferred from transitions only"));
            }
        }
        if config.send_reset_nargs == 2 {
            degraded.push(RESET_WITHOUT_REASON.into());
        }
        let retransmits = if layout.skb_tcp_flags == SockLayout::NONE {
            Err(Error::KernelLayout(btf::BtfError::Missing(
                "tcp_skb_cb.tcp_flags".into(),
            )))
        } else {
            attach_btf_tracepoint(&mut ebpf, &aya_btf, "tcp_retransmit_skb")
        };
        if let Err(e) = retransmits {
            degraded.push(format!("{e}: retransmitted FINs are not observed"));
        }
        if layout.accept_ret != 0 {
            if let Err(e) = attach_accept(&mut ebpf) {
                degraded.push(format!("{e}: {ACCEPT_LOSES}"));
            }
        }

        let ring = take_map(&mut ebpf, "EVENTS")?;
        let counters = take_map(&mut ebpf, "COUNTERS")?;
        Ok(Capture {
            ring,
            log,
            counters,
            degraded,
            names: kernel_names(&kernel),
            ebpf,
        })
    }

    /// Hands every event waiting in the ring buffer to `sink`; returns how many.
    pub fn drain(&mut self, mut sink: impl FnMut(&Event)) -> usize {
        self.log.flush();
        let mut count = 0;
        while let Some(item) = self.ring.next() {
            if item.len() >= size_of::<Event>() {
                // SAFETY: the kernel wrote a whole `Event`; ring records are 8-byte aligned
                // but read_unaligned does not rely on it.
                let event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) };
                sink(&event);
                count += 1;
            }
        }
        count
    }

    /// Everything lost so far.
    pub fn lost(&self) -> Lost {
        Lost {
            ring_full: self.counter(counter::LOST_EVENTS),
            skipped: self
                .skipped_runs(&EVENT_PROGRAMS)
                .saturating_sub(self.counter(counter::NESTED_RUNS)),
            owners: self.counter(counter::LOST_OWNERS) + self.skipped_runs(&OWNER_PROGRAMS),
        }
    }

    fn skipped_runs(&self, programs: &[&str]) -> u64 {
        programs
            .iter()
            .filter_map(|name| self.ebpf.program(name)?.fd().ok())
            .map(|fd| recursion_misses(fd.as_fd()).unwrap_or(0))
            .sum()
    }

    fn counter(&self, index: u32) -> u64 {
        self.counters
            .get(&index, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }
}

impl AsRawFd for Capture {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

/// How often the kernel skipped the program because it was already running on that CPU
/// (`bpf_prog_info.recursion_misses`, Linux 5.12+; aya does not expose it).
fn recursion_misses(program: BorrowedFd<'_>) -> std::io::Result<u64> {
    use aya_obj::generated::{bpf_attr, bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, bpf_prog_info};
    // SAFETY: both are plain C structs for which all-zero is valid.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.info.bpf_fd = program.as_raw_fd() as u32;
    attr.info.info_len = size_of::<bpf_prog_info>() as u32;
    attr.info.info = std::ptr::addr_of_mut!(info) as u64;
    // SAFETY: the kernel writes at most `info_len` bytes into `info`, which we own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            std::ptr::addr_of_mut!(attr),
            size_of::<bpf_attr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(info.recursion_misses)
}

/// Tracing needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN on older kernels).
fn check_privileges() -> Result<()> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = fs::read_to_string("/proc/self/status")?;
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective >> cap & 1 == 1;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        Ok(())
    } else {
        Err(Error::NotPermitted)
    }
}

const ACCEPT_LOSES: &str = "accepted sockets get their owner only when they close";
/// Before Linux 6.10, `tcp_send_reset` has no reason argument (it has `sk` and `skb` only).
const RESET_WITHOUT_REASON: &str =
    "tcp_send_reset has no reason argument (Linux < 6.10): reset reasons are unavailable";

/// Offsets of the kernel fields the kernel program reads, from this kernel's BTF.
/// `accept_ret` is left 0: it comes from tracefs.
pub fn sock_layout(kernel: &btf::Btf) -> Result<SockLayout> {
    let field = |strukt: &str, path: &str, size: u32| -> Result<u32> {
        let f = kernel.field(strukt, path)?;
        if f.size != size {
            return Err(Error::KernelLayout(btf::BtfError::Missing(format!(
                "{size}-byte {strukt}.{path} (it has {} bytes)",
                f.size
            ))));
        }
        Ok(f.offset)
    };
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
        skb_tcp_flags: skb_tcp_flags(kernel).unwrap_or(SockLayout::NONE),
        // Without network namespaces (CONFIG_NET_NS=n) every socket is in one.
        sk_net: sock("__sk_common.skc_net.net", 8).unwrap_or(SockLayout::NONE),
        net_inum: field("net", "ns.inum", 4).unwrap_or(SockLayout::NONE),
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

fn fill_filter_maps(ebpf: &mut Ebpf, filter: &Filter) -> Result<()> {
    let bpf_err = |e: aya::maps::MapError| Error::Bpf(format!("setting up filters: {e}"));
    let mut ports: HashMap<_, u16, u32> = map_mut(ebpf, "PORTS")?;
    for (port, roles) in filter.port_roles() {
        ports.insert(port, roles, 0).map_err(bpf_err)?;
    }
    let mut pids: HashMap<_, u32, u8> = map_mut(ebpf, "PIDS")?;
    for &pid in &filter.pids {
        pids.insert(pid, 1, 0).map_err(bpf_err)?;
    }
    Ok(())
}

fn map_mut<'a, M>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<M>
where
    M: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .map_mut(name)
        .ok_or_else(|| Error::Bpf(format!("kernel program has no map {name}")))?;
    M::try_from(map).map_err(|e| Error::Bpf(format!("map {name}: {e}")))
}

fn take_map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| Error::Bpf(format!("kernel program has no map {name}")))?;
    M::try_from(map).map_err(|e| Error::Bpf(format!("map {name}: {e}")))
}

/// The first line of an aya error: a verifier log would not fit on one line.
fn first_line(e: impl std::fmt::Display) -> String {
    e.to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches(". Verifier output:")
        .to_string()
}

/// Attaches the program `name` to the tracepoint of the same name.
fn attach_btf_tracepoint(ebpf: &mut Ebpf, btf: &aya::Btf, name: &'static str) -> Result<()> {
    attach_btf_tracepoint_to(ebpf, btf, name, name)
}

/// Attaches the program `name` to `tracepoint`.
fn attach_btf_tracepoint_to(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    name: &'static str,
    tracepoint: &str,
) -> Result<()> {
    let hook_err = |action, e: aya::programs::ProgramError| Error::Hook {
        action,
        hook: name,
        reason: first_line(e),
    };
    let program: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| Error::Bpf(format!("kernel program has no {name}")))?;
    program
        .load(tracepoint, btf)
        .map_err(|e| hook_err("load", e))?;
    program.attach().map_err(|e| hook_err("attach", e))?;
    Ok(())
}

/// One program on both accept syscalls.
fn attach_accept(ebpf: &mut Ebpf) -> Result<()> {
    let hook_err = |action, e: aya::programs::ProgramError| Error::Hook {
        action,
        hook: "syscalls:sys_exit_accept",
        reason: first_line(e),
    };
    let program: &mut TracePoint = ebpf
        .program_mut("sys_exit_accept")
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| Error::Bpf("kernel program has no sys_exit_accept".into()))?;
    program.load().map_err(|e| hook_err("load", e))?;
    for name in ["sys_exit_accept4", "sys_exit_accept"] {
        program
            .attach("syscalls", name)
            .map_err(|e| hook_err("attach", e))?;
    }
    Ok(())
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
    }

    #[test]
    fn the_embedded_object_is_a_bpf_elf() {
        assert_eq!(&EBPF_OBJECT[..4], b"\x7fELF");
    }
}
