//! Capture: loads the kernel program, fills in this kernel's layout and the user's filters,
//! attaches the hooks and hands out the ring buffer's [`Event`]s.
//!
//! Everything privileged lives here; the rest of the crate only sees [`Event`]s.

mod attach;
pub mod btf;
mod counters;
mod drain;
mod layout;
mod probe;
mod ring;
mod tracefs;

use std::{
    fs,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use aya::{
    maps::{Map, MapType},
    sys::is_map_supported,
    Ebpf, EbpfLoader,
};
use teardown_common::{
    counter, filter as bits, owner_source, Config, KernelNames, Owner, SockLayout, COMM_LEN,
};

use attach::{
    attach_accept, attach_btf_tracepoint, attach_btf_tracepoint_to, attach_traced_function,
    attach_traced_function_to, attach_tracepoint, fill_filter_maps, first_line, map_mut,
};
use counters::Counters;
pub use drain::Drain;
use layout::{kernel_names, numbers_pids, sock_layout, time_wait_layout};
use probe::Probe;
use ring::Ring;

use crate::{
    error::{Error, Result},
    filter::Filter,
    limits::thread_not_started,
    pidns::PidNamespace,
    snapshot::Snapshot,
};

/// The classic tracepoints, as tracefs names them.
const ACCEPT_HOOK: &str = "syscalls:sys_exit_accept4";
const STATE_HOOK: &str = "sock:inet_sock_set_state";
/// What a missing accept() hook costs.
const ACCEPT_LOSES: &str = "accepted sockets get their owner only when they close";

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
    /// The bench's floor: the same hooks attached, every program returning at once.
    pub floor: bool,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            filter: Filter::default(),
            closing_only: false,
            ring_bytes: 4 << 20,
            max_sockets: 1 << 18,
            floor: false,
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

/// The state program, whose skipped runs its nested twin does (the runs the twin misses
/// are ones where the state program ran).
const STATE_PROGRAM: &str = "inet_sock_set_state";
/// The state program as a classic tracepoint, for a kernel that may preempt a BTF one.
const CLASSIC_STATE_PROGRAM: &str = "inet_sock_set_state_classic";
/// The twin, and the second twin before it where the state program is the classic one
/// (the kernel may preempt the twin).
const NESTED_STATE_PROGRAM: &str = "inet_sock_set_state_nested";
const NESTED_EARLY_STATE_PROGRAM: &str = "inet_sock_set_state_nested_early";
/// The other programs whose runs are events, and the one whose runs are owners.
const EVENT_PROGRAMS: [&str; 8] = [
    "tcp_send_reset",
    "tcp_receive_reset",
    "tcp_retransmit_skb",
    "tcp_timewait_state_process",
    "tcp_twsk_unique",
    "inet_twsk_deschedule_put",
    "tw_timer_handler",
    "tcp_sk_exit_batch",
];
const OWNER_PROGRAM: &str = "sys_exit_accept";
/// The hand-over to a TIME_WAIT mini-socket, and the second program whose runs make up
/// for its skips where the kernel may preempt fentry programs (see the kernel program).
/// The early program's own skips are not counted: a hand-over is lost only where both
/// were skipped.
const HAND_OVER: &str = "tcp_time_wait";
const HAND_OVER_EARLY: &str = "tcp_time_wait_early";
const EARLY_LOSES: &str = "hand-overs to TIME_WAIT that the kernel skips while another \
     task is preempted in one are counted, not recovered";
/// The TIME_WAIT mini-socket's hooks (fentry/fexit) besides the hand-over, all or none:
/// the segments it takes in, its reuse and its kill.
const TIME_WAIT_PROGRAMS: [&str; 3] = [
    "tcp_timewait_state_process",
    "tcp_twsk_unique",
    "inet_twsk_deschedule_put",
];
const TIME_WAIT_LOSES: &str = "TIME_WAIT mini-sockets are not observed: the peer's FIN \
     after an orphan's hand-over is inferred, TIME_WAIT's reuse and end are not shown";
const EXPIRY_LOSES: &str = "a TIME_WAIT mini-socket's expiry is not observed, only its kill";
const NAMESPACE_LOSES: &str = "a TIME_WAIT mini-socket's end with its network namespace \
     is seen only where the kernel does not inline the kill";
const NESTED_LOSES: &str =
    "transitions the kernel skips while the program runs on that CPU are counted, not recovered";
const NESTED_EARLY_LOSES: &str = "transitions the kernel skips while another task is \
     preempted in the state program's twin are counted, not recovered";
const PREEMPTED_LOSES: &str = "this kernel may preempt the state program, and transitions \
     made on its CPU meanwhile are mostly counted lost, not recovered";

/// What the kernel could not hand over, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lost {
    /// Events dropped because the ring buffer was full.
    pub ring_full: u64,
    /// Hook firings the kernel skipped because our program was already running on that CPU
    /// (a softirq interrupted it), less those `inet_sock_set_state_nested` handled.
    pub skipped: u64,
    /// The program the kernel skipped most, when it skipped any.
    pub most_skipped: Option<&'static str>,
    /// Owners not recorded: the owner table was full, or accept()'s program was skipped.
    pub owners: u64,
}

impl Lost {
    pub fn events(&self) -> u64 {
        self.ring_full + self.skipped
    }

    /// Never less than `earlier`, cause by cause: a count that dipped (a twin's repeat not
    /// handled yet) and came back is no new loss.
    pub fn at_least(self, earlier: &Lost) -> Lost {
        Lost {
            ring_full: self.ring_full.max(earlier.ring_full),
            skipped: self.skipped.max(earlier.skipped),
            most_skipped: self.most_skipped.or(earlier.most_skipped),
            owners: self.owners.max(earlier.owners),
        }
    }
}

/// A running capture. Dropping it detaches everything.
pub struct Capture {
    /// Until the drain takes it.
    ring: Option<Ring>,
    /// `STATE_PROGRAM` or `CLASSIC_STATE_PROGRAM`, whichever this kernel runs.
    state_program: &'static str,
    log: aya_log::EbpfLogger<KernelLog>,
    counters: Counters,
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
        raise_memlock_limit();
        let ring_buf = is_map_supported(MapType::RingBuf).unwrap_or(false);
        let btf_bytes = match fs::read(VMLINUX_BTF) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                return Err(Error::Input {
                    path: VMLINUX_BTF.into(),
                    error,
                })
            }
        };
        // Our reader gives member offsets (aya keeps them private); it is dropped before
        // aya parses the same bytes, so the two are never in memory at once.
        let (probe, mut degraded, mut layout, names, time_wait) = {
            let kernel = btf_bytes.as_deref().map(btf::Btf::parse).transpose()?;
            let probe = Probe::read(ring_buf, kernel.as_ref());
            let degraded = probe.verdict()?;
            let kernel = kernel.expect("the verdict refuses a kernel without BTF");
            (
                probe,
                degraded,
                sock_layout(&kernel)?,
                kernel_names(&kernel),
                time_wait_layout(&kernel),
            )
        };
        let btf_bytes = btf_bytes.expect("the verdict refuses a kernel without BTF");
        if layout.snd_una == SockLayout::NONE {
            degraded.push(
                "BTF has no tcp_sock sequence numbers or delayed-ACK state: sequence numbers \
                 and the passive ACK's timing are not shown"
                    .into(),
            );
        }
        // accept() owners come from a classic tracepoint, which lives in tracefs.
        let accept_hook = tracefs::ensure_mounted(ACCEPT_HOOK)
            .and_then(|dir| tracefs::field_offsets(&dir, ACCEPT_HOOK, ["ret"]));
        match accept_hook {
            Ok([offset]) => layout.accept_ret = offset,
            Err(e) => degraded.push(format!("{e}: {ACCEPT_LOSES}")),
        }
        // Where the kernel may preempt a BTF program, the state program is the classic
        // tracepoint's, which it may not (see the kernel program).
        let mut classic_state = false;
        if probe.preemptible_btf_programs {
            let record = tracefs::ensure_mounted(STATE_HOOK).and_then(|dir| {
                tracefs::field_offsets(&dir, STATE_HOOK, ["skaddr", "oldstate", "newstate"])
            });
            match record {
                Ok([skaddr, old, new]) => {
                    layout.state_skaddr = skaddr;
                    layout.state_oldstate = old;
                    layout.state_newstate = new;
                    classic_state = true;
                }
                Err(e) => degraded.push(format!("{e}: {PREEMPTED_LOSES}")),
            }
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
            send_reset_nargs: probe.args("tcp_send_reset").unwrap_or(0),
            pid_namespace: pid_namespace(&layout)?,
            floor: options.floor.into(),
            time_wait: time_wait.as_ref().copied().unwrap_or_default(),
        };
        if options.floor {
            degraded.push("--bench-floor: every program returns at once, nothing is traced".into());
        }
        // aya's loader parses the kernel's BTF as it is made: let go of that copy and
        // give it ours, parsed once for the loader and every BTF tracepoint.
        let mut loader = EbpfLoader::new();
        loader.btf(None);
        let kernel_btf = aya::Btf::parse(&btf_bytes, aya::Endianness::default())
            .map_err(|e| Error::Bpf(format!("parsing kernel BTF: {e}")))?;
        drop(btf_bytes);
        // The filter maps hold exactly what was asked for, however much that is.
        let ports = options.filter.port_roles().len().max(1) as u32;
        let pids = options.filter.pids.len().max(1) as u32;
        let cpus = counters::cpu_numbers().map_err(|e| Error::Bpf(e.to_string()))?;
        let mut ebpf = loader
            .btf(Some(&kernel_btf))
            .override_global("CONFIG", &config, true)
            .map_max_entries("EVENTS", options.ring_bytes)
            .map_max_entries("OWNERS", options.max_sockets)
            .map_max_entries("PORTS", ports)
            .map_max_entries("PIDS", pids)
            .map_max_entries("SEEDED", options.max_sockets)
            .map_max_entries("COUNTERS", Counters::slots(cpus))
            .load(EBPF_OBJECT)
            .map_err(|e| Error::Bpf(format!("loading the kernel program: {}", first_line(e))))?;
        fill_filter_maps(&mut ebpf, &options.filter)?;
        let log = aya_log::EbpfLogger::init_with_logger(&mut ebpf, KernelLog)
            .map_err(|e| Error::Bpf(format!("kernel log: {e}")))?;

        // The classic program where it was chosen and loads; else the BTF one.
        let classic = classic_state
            && match attach_tracepoint(&mut ebpf, CLASSIC_STATE_PROGRAM, STATE_HOOK) {
                Ok(()) => true,
                Err(e) => {
                    degraded.push(format!("{e}: {PREEMPTED_LOSES}"));
                    false
                }
            };
        let state_program = if classic {
            CLASSIC_STATE_PROGRAM
        } else {
            attach_btf_tracepoint(&mut ebpf, &kernel_btf, STATE_PROGRAM)?;
            STATE_PROGRAM
        };
        // After the state program, in this order, so that they run in it on every
        // transition.
        let early = (NESTED_EARLY_STATE_PROGRAM, NESTED_EARLY_LOSES);
        let nested = (NESTED_STATE_PROGRAM, NESTED_LOSES);
        let twins = if classic {
            &[early, nested][..]
        } else {
            &[nested]
        };
        for (twin, loses) in twins {
            if let Err(e) = attach_btf_tracepoint_to(&mut ebpf, &kernel_btf, twin, STATE_PROGRAM) {
                degraded.push(format!("{e}: {loses}"));
            }
        }
        // The probe said which of these this kernel lacks (already in `degraded`).
        for name in ["tcp_send_reset", "tcp_receive_reset"] {
            if probe.args(name).is_none() {
                continue;
            }
            if let Err(e) = attach_btf_tracepoint(&mut ebpf, &kernel_btf, name) {
                degraded.push(format!("{e}: resets are inferred from transitions only"));
            }
        }
        let retransmits = if probe.args("tcp_retransmit_skb").is_none() {
            Ok(())
        } else if layout.skb_tcp_flags == SockLayout::NONE {
            Err(Error::KernelLayout(btf::BtfError::Missing(
                "tcp_skb_cb.tcp_flags".into(),
            )))
        } else {
            attach_btf_tracepoint(&mut ebpf, &kernel_btf, "tcp_retransmit_skb")
        };
        if let Err(e) = retransmits {
            degraded.push(format!("{e}: retransmitted FINs are not observed"));
        }
        let time_wait_hooks = time_wait.and_then(|tw| {
            attach_traced_function(&mut ebpf, &kernel_btf, HAND_OVER)?;
            // After it, so that it runs first: a trampoline runs the last attached first
            // (seen in the 7.2 guest: attached the other way round, it never sent).
            if probe.preemptible_traced_functions {
                if let Err(e) =
                    attach_traced_function_to(&mut ebpf, &kernel_btf, HAND_OVER_EARLY, HAND_OVER)
                {
                    degraded.push(format!("{e}: {EARLY_LOSES}"));
                }
            }
            attach_all(&mut ebpf, &kernel_btf, &TIME_WAIT_PROGRAMS).map(|_| tw)
        });
        match time_wait_hooks {
            Err(e) => degraded.push(format!("{e}: {TIME_WAIT_LOSES}")),
            Ok(tw) => {
                if let Err(e) = attach_traced_function(&mut ebpf, &kernel_btf, "tw_timer_handler") {
                    degraded.push(format!("{e}: {EXPIRY_LOSES}"));
                }
                // Without network namespaces (no offsets) none is ever removed.
                let namespaces = ![tw.net_exit_list, layout.net_inum].contains(&SockLayout::NONE);
                let attached = namespaces
                    .then(|| attach_traced_function(&mut ebpf, &kernel_btf, "tcp_sk_exit_batch"));
                if let Some(Err(e)) = attached {
                    degraded.push(format!("{e}: {NAMESPACE_LOSES}"));
                }
            }
        }
        if layout.accept_ret != 0 {
            if let Err(e) = attach_accept(&mut ebpf) {
                degraded.push(format!("{e}: {ACCEPT_LOSES}"));
            }
        }

        let ring = match ebpf.take_map("EVENTS") {
            Some(Map::RingBuf(data)) => {
                Ring::new(data).map_err(|e| Error::Bpf(format!("mapping the ring buffer: {e}")))?
            }
            _ => {
                return Err(Error::Bpf(
                    "kernel program has no ring buffer EVENTS".into(),
                ))
            }
        };
        let counters = match ebpf.take_map("COUNTERS") {
            Some(Map::Array(data)) => Counters::new(data, cpus)
                .map_err(|e| Error::Bpf(format!("mapping the counters: {e}")))?,
            _ => return Err(Error::Bpf("kernel program has no array COUNTERS".into())),
        };
        Ok(Capture {
            ring: Some(ring),
            state_program,
            log,
            counters,
            degraded,
            names,
            ebpf,
        })
    }

    /// Starts the thread that moves events out of the ring buffer (once); at most
    /// `max_waiting` events wait to be handled.
    pub fn start_drain(&mut self, max_waiting: usize) -> Result<Drain> {
        let ring = self
            .ring
            .take()
            .ok_or_else(|| Error::Bpf("the ring buffer is drained already".into()))?;
        Drain::start(ring, max_waiting)
            .map_err(|e| Error::Bpf(format!("starting the drain: {}", thread_not_started(&e))))
    }

    /// Tells the kernel who held each socket in `snapshot`, by inode, so that the later
    /// transitions of sockets opened before tracing are attributed (`owner::seeded` in the
    /// kernel program). Returns how many sockets were seeded.
    pub fn seed(&mut self, snapshot: &Snapshot) -> Result<u64> {
        let mut seeded: aya::maps::HashMap<_, u64, Owner> = map_mut(&mut self.ebpf, "SEEDED")?;
        let mut count = 0;
        for socket in &snapshot.sockets {
            let Some(&pid) = socket.owners.first() else {
                continue;
            };
            let mut comm = [0u8; COMM_LEN];
            let name = snapshot.comm(pid).as_bytes();
            let len = name.len().min(COMM_LEN - 1);
            comm[..len].copy_from_slice(&name[..len]);
            let owner = Owner {
                pid,
                source: owner_source::SNAPSHOT,
                time_wait_sender: 0,
                _pad: [0; 2],
                comm,
            };
            seeded
                .insert(u64::from(socket.diag.inode), owner, 0)
                .map_err(|e| Error::Bpf(format!("seeding owners from the snapshot: {e}")))?;
            count += 1;
        }
        Ok(count)
    }

    /// Prints what the kernel program logged.
    pub fn flush_log(&mut self) {
        self.log.flush();
    }

    /// Everything lost so far. `repeats`: the twin's runs that repeated a transition the
    /// state program did send, which user space dropped; the twin's other runs made up for
    /// the state program's skips. Repeats user space never sees (of a transition filtered
    /// out, or of an opening one not sent) cannot be told apart and still hide as many
    /// skips; a repeat seen late lowers the count until it is seen (`Lost::at_least`).
    pub fn lost(&self, repeats: u64) -> Lost {
        // Skips before the twin's runs: the kernel counts a skip before the twin makes up
        // for it, so read the other way round a skip made up for in between would show.
        let state_skips = self.skipped_runs(self.state_program);
        let recovered = self.counter(counter::NESTED_RUNS).saturating_sub(repeats);
        // Per program, so that nothing the twin did hides another program's skips.
        let state = state_skips.saturating_sub(recovered);
        // Each program's count read once (a syscall each).
        let state = (self.state_program, state);
        // The same order: the skips of `tcp_time_wait`, then what the early program made
        // up, which it counts before `tcp_time_wait` runs, and of that the runs of
        // `tcp_time_wait` before the early program's sends. A count read in between is too
        // low for a moment, never too high.
        let hand_over_skips = self.skipped_runs(HAND_OVER);
        let seen = self.counter(counter::TIME_WAIT_EARLY_SEEN);
        let made_up = self
            .counter(counter::TIME_WAIT_EARLY_SENT)
            .saturating_sub(seen);
        let hand_over = hand_over_skips.saturating_sub(made_up);
        let hand_over = (HAND_OVER, hand_over);
        let others = EVENT_PROGRAMS.map(|name| (name, self.skipped_runs(name)));
        let skips = others.iter().chain([&state, &hand_over]);
        Lost {
            ring_full: self.counter(counter::LOST_EVENTS),
            skipped: skips.clone().map(|(_, n)| n).sum(),
            most_skipped: skips
                .filter(|(_, n)| *n > 0)
                .max_by_key(|(_, n)| *n)
                .map(|(name, _)| *name),
            owners: self.counter(counter::LOST_OWNERS) + self.skipped_runs(OWNER_PROGRAM),
        }
    }

    /// Runs of `program` the kernel skipped (0 for a program not loaded).
    fn skipped_runs(&self, program: &str) -> u64 {
        self.ebpf
            .program(program)
            .and_then(|p| p.fd().ok())
            .map_or(0, |fd| recursion_misses(fd.as_fd()).unwrap_or(0))
    }

    fn counter(&self, index: u32) -> u64 {
        self.counters.get(index)
    }
}

/// Attaches every fentry/fexit program in `names`, stopping at the first the kernel refuses
/// (all of them, where fentry is refused).
fn attach_all(ebpf: &mut Ebpf, btf: &aya::Btf, names: &[&'static str]) -> Result<()> {
    names
        .iter()
        .try_for_each(|&name| attach_traced_function(ebpf, btf, name))
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

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK, whose default (64 KiB or 8 MiB)
/// does not hold the ring buffer and the owner table. Later kernels ignore it. Best effort:
/// if it cannot be raised, loading says what failed.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we own.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

/// `Config::pid_namespace`: the tracer's pid namespace, 0 for the initial one.
fn pid_namespace(layout: &SockLayout) -> Result<u32> {
    let own = PidNamespace::own().map_err(|error| Error::Input {
        path: "/proc/self/ns/pid".into(),
        error,
    })?;
    if own.is_initial() {
        return Ok(0);
    }
    if !numbers_pids(layout) {
        return Err(Error::KernelLayout(btf::BtfError::Missing(
            "struct pid and upid (to number pids as this pid namespace does)".into(),
        )));
    }
    // Namespace inodes are 32-bit (`ns_common.inum`).
    Ok(own.inode as u32)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_count_never_goes_down() {
        let earlier = Lost {
            skipped: 7,
            ring_full: 2,
            most_skipped: Some("tcp_receive_reset"),
            ..Lost::default()
        };
        let now = Lost {
            skipped: 5,
            ring_full: 3,
            ..Lost::default()
        };
        let kept = now.at_least(&earlier);
        assert_eq!((kept.skipped, kept.ring_full, kept.owners), (7, 3, 0));
        assert_eq!(kept.most_skipped, Some("tcp_receive_reset"));
    }

    #[test]
    fn the_embedded_object_is_a_bpf_elf() {
        assert_eq!(&EBPF_OBJECT[..4], b"\x7fELF");
    }
}
