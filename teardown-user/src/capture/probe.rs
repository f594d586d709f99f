//! What this kernel offers, read before anything is loaded: below the minimum (a BPF ring
//! buffer, Linux 5.8; BTF; a BTF tracepoint on `inet_sock_set_state`) the tracer refuses
//! with one line, above it the probe names what the output loses on this kernel.
//!
//! The decision ([`Probe::verdict`]) is pure, so it is tested on recorded probe results.

use super::btf::Btf;
use crate::error::{Error, Result};

/// The BTF tracepoints the programs attach to. `inet_sock_set_state` is the minimum.
const TRACEPOINTS: [&str; 4] = [
    "inet_sock_set_state",
    "tcp_send_reset",
    "tcp_receive_reset",
    "tcp_retransmit_skb",
];

/// Before Linux 6.10, `tcp_send_reset` has no reason argument (it has `sk` and `skb` only).
const RESET_WITHOUT_REASON: &str =
    "tcp_send_reset has no reason argument (Linux < 6.10): reset reasons are unavailable";

/// A debug build hides the features named here (comma-separated: `ring_buf`, `btf`,
/// `unpreempted_btf_programs`, or a tracepoint's name) from the probe, so that a test on a full kernel sees the refusal or
/// the degradation a poorer kernel gets. Release builds ignore it.
pub const HIDE_VAR: &str = "TEARDOWN_PROBE_HIDE";

/// What the probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub ring_buf: bool,
    pub btf: bool,
    /// Each tracepoint's argument count as BTF gives it (`btf_trace_NAME`), `None` where
    /// this kernel has no such BTF tracepoint.
    pub tracepoints: Vec<(&'static str, Option<u32>)>,
    /// The kernel may preempt a BTF tracepoint program (see [`btf_programs_preemptible`]).
    pub preemptible_btf_programs: bool,
    /// The kernel may preempt an fentry program, and then skip it for other tasks on its
    /// CPU (see [`traced_functions_preemptible`]).
    pub preemptible_traced_functions: bool,
}

/// Where a kernel built to choose its preemption model at boot says which one it runs.
const PREEMPT_MODE: &str = "/sys/kernel/debug/sched/preempt";

/// Whether the kernel `release` (as `uname -r` gives it) may preempt a BTF tracepoint
/// program, given its preemption model as [`PREEMPT_MODE`] lists them, the current one in
/// parentheses (`None`: unreadable). Linux 7.0 made tracepoint callbacks preemptible
/// (commit a46023d5616e, "tracing: Guard __DECLARE_TRACE() use of __DO_TRACE_CALL() with
/// SRCU-fast"); before it every tracepoint ran with preemption off. A kernel that does not
/// preempt kernel code (`none`, `voluntary`) still never preempts one. Where the model is
/// unknown, preemptible: a program that cannot be preempted is only dearer.
pub fn btf_programs_preemptible(release: &str, preempt_mode: Option<&str>) -> bool {
    version(release) >= Some((7, 0)) && current_mode(preempt_mode).is_none_or(preempts_kernel_code)
}

/// Whether the kernel may preempt an fentry/fexit program and skip it meanwhile for other
/// tasks on its CPU. Trampolines only pin the CPU wherever kernel code is preemptible;
/// the skip (the per-program recursion check) arrived in Linux 5.12. Where the model is
/// unknown, `build` (as `uname -v` gives it) says whether the kernel was built preemptible:
/// `PREEMPT`, `PREEMPT_RT`, or `PREEMPT_DYNAMIC`, whose boot choice is unknown here and
/// counts as preemptible (the second hand-over program this adds is only dearer).
pub fn traced_functions_preemptible(
    release: &str,
    build: &str,
    preempt_mode: Option<&str>,
) -> bool {
    if version(release) < Some((5, 12)) {
        return false;
    }
    match current_mode(preempt_mode) {
        Some(mode) => preempts_kernel_code(mode),
        None => build
            .split_whitespace()
            .any(|word| word.starts_with("PREEMPT")),
    }
}

/// `(major, minor)` of a release as `uname -r` prints it.
fn version(release: &str) -> Option<(u32, u32)> {
    let mut numbers = release.split(['.', '-', '+']).map(str::parse::<u32>);
    match (numbers.next(), numbers.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => Some((major, minor)),
        _ => None,
    }
}

/// Whether the preemption model `mode` preempts kernel code.
fn preempts_kernel_code(mode: &str) -> bool {
    !matches!(mode, "none" | "voluntary")
}

/// The current model in [`PREEMPT_MODE`]'s list: the one in parentheses.
fn current_mode(preempt_mode: Option<&str>) -> Option<&str> {
    let (_, rest) = preempt_mode?.split_once('(')?;
    rest.split_once(')').map(|(mode, _)| mode.trim())
}

/// The running kernel's release and build, as `uname -r` and `uname -v` print them.
fn kernel_release() -> (String, String) {
    // SAFETY: uname fills the zeroed struct; its strings are NUL-terminated.
    unsafe {
        let mut names: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut names) != 0 {
            return Default::default();
        }
        let text = |field: &[libc::c_char]| {
            std::ffi::CStr::from_ptr(field.as_ptr())
                .to_string_lossy()
                .into_owned()
        };
        (text(&names.release), text(&names.version))
    }
}

impl Probe {
    /// Reads the kernel: `ring_buf` as the caller tested it, the tracepoints from `btf`
    /// (`None`: the kernel has no BTF). A debug build then hides what [`HIDE_VAR`] names.
    pub fn read(ring_buf: bool, btf: Option<&Btf>) -> Probe {
        let (release, build) = kernel_release();
        let preempt_mode = std::fs::read_to_string(PREEMPT_MODE).ok();
        let preempt_mode = preempt_mode.as_deref();
        let probe = Probe {
            ring_buf,
            btf: btf.is_some(),
            tracepoints: TRACEPOINTS
                .iter()
                .map(|&name| (name, btf.and_then(|b| b.tracepoint_arg_count(name).ok())))
                .collect(),
            preemptible_btf_programs: btf_programs_preemptible(&release, preempt_mode),
            preemptible_traced_functions: traced_functions_preemptible(
                &release,
                &build,
                preempt_mode,
            ),
        };
        match std::env::var(HIDE_VAR) {
            Ok(hidden) if cfg!(debug_assertions) => probe.hiding(&hidden),
            _ => probe,
        }
    }

    /// The same findings with the features in `list` (comma-separated) missing.
    fn hiding(mut self, list: &str) -> Probe {
        for feature in list.split(',').map(str::trim) {
            match feature {
                "ring_buf" => self.ring_buf = false,
                "btf" => self.btf = false,
                "unpreempted_btf_programs" => self.preemptible_btf_programs = true,
                name => {
                    for (tracepoint, args) in &mut self.tracepoints {
                        if *tracepoint == name {
                            *args = None;
                        }
                    }
                }
            }
        }
        self
    }

    /// The argument count of `tracepoint`, `None` where the kernel lacks it.
    pub fn args(&self, tracepoint: &str) -> Option<u32> {
        self.tracepoints
            .iter()
            .find(|(name, _)| *name == tracepoint)
            .and_then(|&(_, args)| args)
    }

    /// Refuses a kernel below the minimum; otherwise what the output loses on it.
    pub fn verdict(&self) -> Result<Vec<String>> {
        if !self.ring_buf {
            return Err(Error::NoRingBuf);
        }
        if !self.btf {
            return Err(Error::NoBtf(super::VMLINUX_BTF.into()));
        }
        if self.args("inet_sock_set_state").is_none() {
            return Err(Error::NoBtfTracepoint("inet_sock_set_state"));
        }
        let mut degraded = Vec::new();
        for name in ["tcp_send_reset", "tcp_receive_reset"] {
            if self.args(name).is_none() {
                degraded.push(format!(
                    "no BTF tracepoint {name}: resets are inferred from transitions only"
                ));
            }
        }
        if self.args("tcp_send_reset") == Some(2) {
            degraded.push(RESET_WITHOUT_REASON.into());
        }
        if self.args("tcp_retransmit_skb").is_none() {
            degraded.push(
                "no BTF tracepoint tcp_retransmit_skb: retransmitted FINs are not observed".into(),
            );
        }
        Ok(degraded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the probe read on Debian's 5.10 and on 6.12 (vm-test guests).
    fn linux_5_10() -> Probe {
        Probe {
            ring_buf: true,
            btf: true,
            tracepoints: vec![
                ("inet_sock_set_state", Some(3)),
                ("tcp_send_reset", Some(2)),
                ("tcp_receive_reset", Some(1)),
                ("tcp_retransmit_skb", Some(2)),
            ],
            preemptible_btf_programs: false,
            preemptible_traced_functions: false,
        }
    }

    fn linux_6_12() -> Probe {
        let mut probe = linux_5_10();
        probe.tracepoints[1].1 = Some(3);
        probe
    }

    #[test]
    fn a_kernel_with_everything_degrades_nothing() {
        assert_eq!(linux_6_12().verdict().unwrap(), Vec::<String>::new());
    }

    #[test]
    fn before_6_10_the_reset_reason_is_degraded() {
        assert_eq!(
            linux_5_10().verdict().unwrap(),
            vec![RESET_WITHOUT_REASON.to_string()]
        );
    }

    #[test]
    fn below_the_minimum_the_tracer_refuses_in_one_line() {
        for (hidden, says) in [
            ("ring_buf", "Linux 5.8 or later is needed"),
            ("btf", "CONFIG_DEBUG_INFO_BTF=y"),
            ("inet_sock_set_state", "BTF tracepoint inet_sock_set_state"),
        ] {
            let error = linux_6_12()
                .hiding(hidden)
                .verdict()
                .unwrap_err()
                .to_string();
            assert!(error.contains(says), "{hidden}: {error}");
            assert!(!error.contains('\n'), "{error}");
        }
    }

    #[test]
    fn fentry_programs_are_preemptible_from_linux_5_12_where_kernel_code_is() {
        let debian = "#1 SMP PREEMPT_DYNAMIC Debian 6.12.117-1 (2026-10-02)";
        let full = Some("none voluntary (full) lazy");
        assert!(traced_functions_preemptible("6.18.44-fc-v857", "", full));
        assert!(traced_functions_preemptible("5.15.0", "", Some("(full)")));
        assert!(traced_functions_preemptible(
            "7.2.13+deb14-amd64",
            debian,
            Some("full (lazy) \n")
        ));
        assert!(
            !traced_functions_preemptible("5.11.0", "#1 SMP PREEMPT", full),
            "no recursion check, no skip"
        );
        assert!(!traced_functions_preemptible(
            "6.12.117+deb13-amd64",
            debian,
            Some("none (voluntary) full \n")
        ));
        // The model unknown: the build says.
        assert!(traced_functions_preemptible("6.1.0", debian, None));
        assert!(traced_functions_preemptible(
            "5.14.0",
            "#1 SMP PREEMPT_RT Tue",
            None
        ));
        assert!(traced_functions_preemptible(
            "6.8.0",
            "#1 SMP PREEMPT Mon",
            None
        ));
        assert!(!traced_functions_preemptible(
            "5.10.0-46-amd64",
            "#1 SMP Debian 5.10.250-1",
            None
        ));
        assert!(!traced_functions_preemptible(
            "6.1.0",
            "#1 SMP Debian 6.1.1",
            None
        ));
    }

    #[test]
    fn btf_programs_are_preemptible_from_linux_7_where_kernel_code_is() {
        // What the vm-test guests and this project's machine read.
        assert!(!btf_programs_preemptible("5.10.0-46-amd64", None));
        let voluntary = "none (voluntary) full \n";
        assert!(!btf_programs_preemptible(
            "6.12.117+deb13-amd64",
            Some(voluntary)
        ));
        assert!(!btf_programs_preemptible(
            "6.18.44-fc-v857",
            Some("none voluntary (full) lazy")
        ));
        assert!(btf_programs_preemptible(
            "7.2.13+deb14-amd64",
            Some("full (lazy) \n")
        ));
        assert!(btf_programs_preemptible(
            "7.0.0",
            Some("none voluntary (full) lazy")
        ));
        assert!(!btf_programs_preemptible("7.1.0-rc1", Some(voluntary)));
        assert!(!btf_programs_preemptible(
            "7.1.0",
            Some("(none) voluntary full")
        ));
        assert!(
            btf_programs_preemptible("7.2.13+deb14-amd64", None),
            "unknown: preemptible"
        );
        assert!(btf_programs_preemptible("10.0", Some("garbage")));
        assert!(
            !btf_programs_preemptible("", None),
            "no release: as before 7.0"
        );
    }

    #[test]
    fn missing_optional_tracepoints_are_degraded_not_refused() {
        let degraded = linux_6_12()
            .hiding("tcp_send_reset, tcp_retransmit_skb")
            .verdict()
            .unwrap();
        assert_eq!(degraded.len(), 2, "{degraded:?}");
        assert!(degraded[0].contains("resets are inferred"), "{degraded:?}");
        assert!(degraded[1].contains("retransmitted FINs"), "{degraded:?}");
    }
}
