//! `cargo xtask vm-test [KERNEL...]`: the kernel tests on the kernels users run.
//!
//! Each kernel is a Debian kernel package, downloaded with a private apt state (the host's
//! apt setup is never touched), unpacked (never installed) into a cache outside the checkout,
//! and booted under QEMU with a tiny initramfs (`vmtest/init.sh`). The guest's root is the
//! host's `/`, read-only over 9p under a tmpfs overlay, so the freshly built binaries and
//! every tool the tests drive are there as on the host. Inside, this same program runs as
//! `xtask vm-guest`: it starts the tracer once to see what it loads and degrades on that
//! kernel, then runs every kernel-test binary with `CI=1`, and leaves a summary in the run
//! directory, which the host reads back.

use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::setup::{self, BuildEnv};

/// What the default set stands for, newest last.
const DEFAULT_KERNELS: [&str; 4] = ["5.10", "6.1", "6.12", "newest"];

/// Where downloaded and unpacked kernels live between runs (not in the checkout).
const DEFAULT_CACHE: &str = "/var/cache/teardown-vm";

/// How long the guest may run its command; the host allows boot and shutdown on top.
/// A kernel took 865 s under TCG on a shared 2-core host, with Chromium's start-up
/// cut short at 30 s; let Chromium start.
const GUEST_TIMEOUT: Duration = Duration::from_secs(1800);
const BOOT_ALLOWANCE: Duration = Duration::from_secs(120);

/// The modules the guest's root needs before it can mount anything from the host.
const ROOT_MODULES: [&str; 4] = ["virtio_pci", "9pnet_virtio", "9p", "overlay"];

const INIT: &str = include_str!("vmtest/init.sh");

#[derive(clap::Args, Default)]
pub struct Options {
    /// Kernels to test: 5.10, 6.1, 6.12, newest, or a Debian kernel package with its
    /// suite (PACKAGE/SUITE, generic -amd64 flavour) [default: 5.10 6.1 6.12 newest]
    pub kernels: Vec<String>,
    /// Kernels booted at once [default: the host's CPUs; each TCG guest runs on one
    /// host thread]
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Only these kernel-test targets (tests/NAME.rs), repeatable [default: all of them]
    #[arg(long = "test", value_name = "NAME")]
    pub tests: Vec<String>,
}

fn host_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The Debian suite-named package that stands for `kernel`.
fn package_of(kernel: &str) -> Result<String> {
    Ok(match kernel {
        "5.10" => "linux-image-amd64/bullseye-security",
        "6.1" => "linux-image-amd64/bookworm-security",
        "6.12" => "linux-image-amd64/trixie",
        "newest" => "linux-image-amd64/sid",
        package if package.contains('/') => package,
        other => {
            bail!("unknown kernel {other}: give 5.10, 6.1, 6.12, newest, or a Debian package/suite")
        }
    }
    .to_string())
}

pub fn run(env: &BuildEnv, options: &Options) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("vm-test needs root: it installs QEMU and the guests read the host's files as root");
    }
    let kernels: Vec<String> = if options.kernels.is_empty() {
        DEFAULT_KERNELS.iter().map(|k| k.to_string()).collect()
    } else {
        options.kernels.clone()
    };
    let packages = kernels
        .iter()
        .map(|k| package_of(k))
        .collect::<Result<Vec<_>>>()?;
    // busybox-static: the initramfs has no libraries; kmod: depmod and modprobe for the
    // unpacked kernels, and the guest's own module loading.
    setup::install_missing(&[
        "qemu-system-x86",
        "busybox-static",
        "kmod",
        "xz-utils",
        "zstd",
    ])?;

    let tests = build_tests(env, &options.tests)?;
    let cache =
        PathBuf::from(std::env::var("TEARDOWN_VM_CACHE").unwrap_or_else(|_| DEFAULT_CACHE.into()));
    let apt = PrivateApt::new(&cache)?;
    let runs = crate::workspace_root()
        .join("target/vm-test")
        .join(timestamp());
    fs::create_dir_all(&runs)?;
    let accel = accelerator();
    eprintln!(
        "xtask: vm-test: accelerator {}, artefacts in {}",
        accel.join(" "),
        runs.display()
    );

    // Downloads one after the other (one private apt state), then boots `jobs` at once.
    let unpacked: Vec<Result<Kernel>> = packages.iter().map(|p| apt.kernel(p)).collect();
    let jobs = options
        .jobs
        .unwrap_or_else(host_cpus)
        .clamp(1, kernels.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let outcomes = std::sync::Mutex::new(vec![None; kernels.len()]);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (Some(kernel), Some(unpacked)) = (kernels.get(i), unpacked.get(i)) else {
                    break;
                };
                let started = Instant::now();
                let dir = runs.join(kernel.replace('/', "@"));
                let outcome = match unpacked {
                    Ok(k) => boot(k, &accel, &dir, &tests),
                    Err(e) => Err(anyhow::anyhow!("{e:#}")),
                }
                .unwrap_or_else(|e| Outcome::failed(format!("{e:#}")));
                let line = outcome.line(kernel, started.elapsed());
                // Printed as each kernel finishes (in one piece: two kernels finish at
                // once), and all together at the end; a failure with what the test said,
                // since CI keeps only what was printed.
                let mut printed = line.clone();
                for report in failure_reports(&dir, &outcome.failed) {
                    printed += &format!("\n{report}");
                }
                println!("{printed}");
                outcomes.lock().unwrap()[i] = Some((line, outcome.passed()));
            });
        }
    });
    let outcomes: Vec<(String, bool)> = outcomes
        .into_inner()
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    let all_passed = outcomes.iter().all(|(_, passed)| *passed);
    let lines: Vec<String> = outcomes.into_iter().map(|(line, _)| line).collect();
    println!("\nvm-test ({}):", runs.display());
    for line in &lines {
        println!("  {line}");
    }
    if !all_passed {
        bail!(
            "the kernel tests failed on some kernel (artefacts in {})",
            runs.display()
        );
    }
    Ok(())
}

/// The freshly built binaries the guest runs.
struct Tests {
    tracer: PathBuf,
    /// Every integration-test executable of teardown-user: the kernel tests.
    executables: Vec<PathBuf>,
}

/// Builds the release binaries and the kernel-test executables; cargo names the latter.
fn build_tests(env: &BuildEnv, only: &[String]) -> Result<Tests> {
    let args = [
        "test",
        "--release",
        "--no-run",
        "--message-format=json-render-diagnostics",
        "-p",
        "teardown-user",
        "--tests",
    ];
    eprintln!("xtask: cargo {}", args.join(" "));
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(crate::workspace_root())
        .envs(env.vars())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the kernel tests failed ({})", out.status);
    }
    let mut executables = Vec::new();
    // Where cargo put it (CARGO_TARGET_DIR may move it out of the checkout).
    let mut tracer = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let target = &message["target"];
        let Some(exe) = message["executable"].as_str() else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        if target["kind"] == serde_json::json!(["test"]) {
            let wanted = |name: &String| target["name"] == name.as_str();
            if only.is_empty() || only.iter().any(wanted) {
                executables.push(PathBuf::from(exe));
            }
        } else if target["name"] == "teardown-trace" && message["profile"]["test"] == false {
            // The binary, not its unit-test harness.
            tracer = Some(PathBuf::from(exe));
        }
    }
    if executables.is_empty() {
        match only {
            [] => bail!("cargo built no integration test of teardown-user"),
            _ => bail!(
                "no integration test of teardown-user is called {}",
                only.join(" or ")
            ),
        }
    }
    let tracer = tracer.context("cargo built no teardown-trace")?;
    Ok(Tests {
        tracer,
        executables,
    })
}

/// QEMU's accelerator: KVM where the CPU offers it. Some hosts have a /dev/kvm that cannot
/// run a stock kernel (no vmx/svm flag, e.g. PVM): those get TCG with one host thread for
/// all vCPUs, because with one thread per vCPU a vCPU can run a stale translation of kernel
/// text the kernel just patched (seen as "Oops: int3" panics).
fn accelerator() -> Vec<&'static str> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let virt = cpuinfo
        .split_whitespace()
        .any(|flag| flag == "vmx" || flag == "svm");
    let kvm = fs::OpenOptions::new().write(true).open("/dev/kvm").is_ok();
    if virt && kvm {
        vec!["-accel", "kvm", "-cpu", "host"]
    } else {
        vec!["-accel", "tcg,thread=single", "-cpu", "max"]
    }
}

/// apt with its own sources, lists and archives under the cache.
struct PrivateApt {
    dir: PathBuf,
    options: Vec<String>,
    updated: std::cell::Cell<bool>,
}

impl PrivateApt {
    fn new(cache: &Path) -> Result<PrivateApt> {
        let dir = cache.join("apt");
        for sub in ["lists/partial", "archives/partial"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let key = "/usr/share/keyrings/debian-archive-keyring.gpg";
        let mut sources = String::new();
        for suite in [
            "bullseye",
            "bookworm",
            "bookworm-backports",
            "trixie",
            "sid",
        ] {
            sources +=
                &format!("deb [signed-by={key}] http://deb.debian.org/debian {suite} main\n");
        }
        for suite in ["bullseye-security", "bookworm-security"] {
            sources += &format!(
                "deb [signed-by={key}] http://deb.debian.org/debian-security {suite} main\n"
            );
        }
        fs::write(dir.join("sources.list"), sources)?;
        let d = dir.display();
        let options = [
            format!("Dir::Etc::sourcelist={d}/sources.list"),
            "Dir::Etc::sourceparts=-".into(),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::Cache={d}"),
            format!("Dir::Cache::archives={d}/archives"),
            "APT::Get::List-Cleanup=0".into(),
            "Acquire::Languages=none".into(),
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false".into(),
            "Acquire::Retries=3".into(),
            "Acquire::http::Timeout=30".into(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect();
        Ok(PrivateApt {
            dir,
            options,
            updated: false.into(),
        })
    }

    fn apt_get(&self, args: &[&str], cwd: &Path) -> Result<()> {
        let out = Command::new("apt-get")
            .args(&self.options)
            .args(["-q"])
            .args(args)
            .current_dir(cwd)
            .output()
            .context("running apt-get")?;
        if !out.status.success() {
            bail!(
                "apt-get {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Refreshes the private package lists once per run, and only when a kernel is missing.
    fn update(&self) -> Result<()> {
        if !self.updated.get() {
            eprintln!(
                "xtask: vm-test: apt-get update (private lists in {})",
                self.dir.display()
            );
            self.apt_get(&["update"], &self.dir)?;
            self.updated.set(true);
        }
        Ok(())
    }

    /// The kernel of `package`, downloaded and unpacked once into the cache.
    fn kernel(&self, package: &str) -> Result<Kernel> {
        let cache = self.dir.parent().expect("apt dir is in the cache");
        let root = cache.join("kernels").join(package.replace('/', "@"));
        let done = root.join(".unpacked");
        if !done.exists() {
            self.update()?;
            eprintln!("xtask: vm-test: downloading {package}");
            let debs = cache.join("debs").join(package.replace('/', "@"));
            for dir in [&root, &debs] {
                if dir.exists() {
                    fs::remove_dir_all(dir)?;
                }
                fs::create_dir_all(dir)?;
            }
            self.download_with_kernel_dependencies(package, &debs)?;
            for deb in fs::read_dir(&debs)? {
                let deb = deb?.path();
                run_quiet(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
            }
            // One layout: lib/modules/VER (trixie and later ship usr/lib/modules/VER).
            if !root.join("lib/modules").exists() && root.join("usr/lib/modules").is_dir() {
                fs::create_dir_all(root.join("lib"))?;
                std::os::unix::fs::symlink("../usr/lib/modules", root.join("lib/modules"))?;
            }
            let kernel = Kernel::at(&root)?;
            // The packages ship no modules.dep.
            run_quiet(
                Command::new("depmod")
                    .arg("-b")
                    .arg(&root)
                    .arg(&kernel.version),
            )?;
            fs::write(&done, "")?;
            fs::remove_dir_all(&debs)?;
        }
        Kernel::at(&root)
    }

    /// Downloads `package`, then the versioned kernel packages it depends on: a meta package
    /// points to an image package, and since Debian 14 the image is split into
    /// linux-binary, linux-modules and linux-base.
    fn download_with_kernel_dependencies(&self, package: &str, into: &Path) -> Result<()> {
        let mut wanted = vec![package.to_string()];
        let mut seen = BTreeSet::new();
        while !wanted.is_empty() {
            let names: Vec<&str> = wanted.iter().map(String::as_str).collect();
            let mut args = vec!["download"];
            args.extend(names);
            self.apt_get(&args, into)?;
            wanted.clear();
            for deb in fs::read_dir(into)? {
                let deb = deb?.path();
                if !seen.insert(deb.clone()) {
                    continue;
                }
                let depends = capture(
                    Command::new("dpkg-deb")
                        .args(["-f"])
                        .arg(&deb)
                        .arg("Depends"),
                )?;
                wanted.extend(kernel_dependencies(&depends));
            }
        }
        Ok(())
    }
}

/// The versioned kernel packages in a `Depends` field.
fn kernel_dependencies(depends: &str) -> Vec<String> {
    depends
        .split([',', '|'])
        .filter_map(|alternative| alternative.split_whitespace().next())
        .filter(|name| {
            [
                "linux-image-",
                "linux-binary-",
                "linux-modules-",
                "linux-base-",
            ]
            .iter()
            .any(|prefix| {
                name.strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
        })
        .map(str::to_string)
        .collect()
}

/// An unpacked kernel package.
struct Kernel {
    root: PathBuf,
    version: String,
    vmlinuz: PathBuf,
}

impl Kernel {
    fn at(root: &Path) -> Result<Kernel> {
        let modules = root.join("lib/modules");
        let version = fs::read_dir(&modules)
            .with_context(|| format!("no {}", modules.display()))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .next()
            .with_context(|| format!("nothing in {}", modules.display()))?;
        let vmlinuz = [
            root.join(format!("boot/vmlinuz-{version}")),
            modules.join(&version).join("vmlinuz"),
        ]
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| format!("no vmlinuz for {version} in {}", root.display()))?;
        Ok(Kernel {
            root: root.to_path_buf(),
            version,
            vmlinuz,
        })
    }

    fn modules(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.version)
    }

    /// The modules `name` needs, itself last, as paths in the unpacked package.
    fn module_with_dependencies(&self, name: &str) -> Result<Vec<PathBuf>> {
        let out = Command::new("modprobe")
            .arg("-d")
            .arg(&self.root)
            .args(["-S", &self.version, "--show-depends", name])
            .output()
            .context("running modprobe")?;
        if !out.status.success() {
            bail!(
                "kernel {} has no module {name} (the generic -amd64 flavour has 9p; -cloud-amd64 has not)",
                self.version
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .lines()
            .filter_map(|l| l.strip_prefix("insmod "))
            .map(|path| PathBuf::from(path.trim()))
            .collect())
    }

    /// A small initramfs: static busybox, the root's modules (decompressed: busybox's
    /// insmod reads them raw) and the init script.
    fn initramfs(&self) -> Result<Vec<u8>> {
        let mut cpio = Cpio::default();
        cpio.dir("bin");
        cpio.dir("mods");
        let busybox = fs::read("/bin/busybox").context("reading /bin/busybox (busybox-static)")?;
        cpio.file("bin/busybox", 0o755, &busybox);
        cpio.file("init", 0o755, INIT.as_bytes());
        let mut order = Vec::new();
        for module in ROOT_MODULES {
            for path in self.module_with_dependencies(module)? {
                let file = path.file_name().unwrap().to_string_lossy().into_owned();
                let (name, decompressor) = match file.rsplit_once('.') {
                    Some((name, "xz")) => (name.to_string(), Some("xz")),
                    Some((name, "zst")) => (name.to_string(), Some("zstd")),
                    _ => (file.clone(), None),
                };
                if order.contains(&name) {
                    continue;
                }
                let bytes = match decompressor {
                    Some(tool) => capture_bytes(Command::new(tool).arg("-dc").arg(&path))?,
                    None => fs::read(&path)?,
                };
                cpio.file(&format!("mods/{name}"), 0o644, &bytes);
                order.push(name);
            }
        }
        cpio.file("modules.list", 0o644, (order.join("\n") + "\n").as_bytes());
        Ok(cpio.finish())
    }
}

/// A `newc` cpio archive, the format the kernel unpacks as its initramfs.
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    inode: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.inode += 1;
        let fields = [
            self.inode,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[]);
    }

    fn file(&mut self, name: &str, permissions: u32, data: &[u8]) {
        self.entry(name, 0o100000 | permissions, data);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.bytes
    }
}

/// Boots `kernel` and runs the kernel tests in it; `dir` receives every artefact.
fn boot(kernel: &Kernel, accel: &[&str], dir: &Path, tests: &Tests) -> Result<Outcome> {
    fs::create_dir_all(dir)?;
    let initrd = dir.join("initrd.cpio");
    fs::write(&initrd, kernel.initramfs()?)?;
    let xtask = std::env::current_exe().context("finding the xtask binary")?;
    let mut cmd = format!(
        "exec {} vm-guest --out /run/vm-test --tracer {}",
        quote(&xtask),
        quote(&tests.tracer)
    );
    for exe in &tests.executables {
        cmd += &format!(" {}", quote(exe));
    }
    fs::write(dir.join("cmd.sh"), cmd + "\n")?;

    let share = |id: &str, path: &Path, readonly: bool| {
        let mut fsdev = format!("local,id={id},path={},security_model=none", path.display());
        if readonly {
            fsdev += ",readonly=on";
        }
        if id == "hostroot" {
            // The host's / spans several file systems; keep their inode numbers apart.
            fsdev += ",multidevs=remap";
        }
        [
            "-fsdev".to_string(),
            fsdev,
            "-device".into(),
            format!("virtio-9p-pci,fsdev={id},mount_tag={id}"),
        ]
    };
    let modules = fs::canonicalize(kernel.modules())?;
    let qemu_log = fs::File::create(dir.join("qemu.log"))?;
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(accel)
        .args([
            "-smp",
            "2",
            "-m",
            "2G",
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
        ])
        .arg("-serial")
        .arg(format!("file:{}", dir.join("console.log").display()))
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 rdinit=/init panic=-1 loglevel=4 vmtest.timeout={}",
            GUEST_TIMEOUT.as_secs()
        ))
        .args(share("hostroot", Path::new("/"), true))
        .args(share("mods", &modules, true))
        .args(share("out", dir, false))
        .stdout(qemu_log.try_clone()?)
        .stderr(qemu_log);
    eprintln!(
        "xtask: vm-test: booting {} ({})",
        kernel.version,
        dir.display()
    );
    let mut child = qemu.spawn().context("starting qemu-system-x86_64")?;
    let deadline = Instant::now() + GUEST_TIMEOUT + BOOT_ALLOWANCE;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let console = fs::read_to_string(dir.join("console.log")).unwrap_or_default();
    let summary = fs::read_to_string(dir.join(SUMMARY)).ok();
    let timed_out = format!(
        "timed out after {} s (see console.log)",
        (GUEST_TIMEOUT + BOOT_ALLOWANCE).as_secs()
    );
    match (summary, status) {
        (Some(summary), Some(_)) => Ok(Outcome::parse(&summary)),
        // What the guest learnt before it was stopped, and that it was.
        (Some(summary), None) => Ok(Outcome {
            error: Some(timed_out),
            ..Outcome::parse(&summary)
        }),
        (None, None) => bail!(timed_out),
        (None, Some(status)) => {
            let why = console
                .lines()
                .find(|l| l.contains("FATAL") || l.contains("Kernel panic"))
                .unwrap_or(if console.contains("vm-test-init: booted") {
                    "the guest wrote no summary (see stderr)"
                } else {
                    "the guest did not boot (see console.log)"
                });
            bail!("{} (qemu {status})", why.trim())
        }
    }
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

const SUMMARY: &str = "summary.txt";

/// What one kernel showed, as the guest's summary says.
#[derive(Default)]
struct Outcome {
    kernel: String,
    programs: Vec<String>,
    degraded: Vec<String>,
    passed: u32,
    failed: Vec<String>,
    error: Option<String>,
}

impl Outcome {
    fn failed(error: String) -> Outcome {
        Outcome {
            error: Some(error),
            ..Outcome::default()
        }
    }

    fn parse(summary: &str) -> Outcome {
        let mut outcome = Outcome::default();
        for line in summary.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.to_string();
            match key {
                "kernel" => outcome.kernel = value,
                "program" => outcome.programs.push(value),
                "degraded" => outcome.degraded.push(value),
                "passed" => outcome.passed = value.parse().unwrap_or(0),
                "failed" => outcome.failed.push(value),
                "error" => outcome.error = Some(value),
                _ => {}
            }
        }
        outcome
    }

    fn passed(&self) -> bool {
        self.error.is_none() && self.failed.is_empty() && self.passed > 0
    }

    fn line(&self, asked: &str, took: Duration) -> String {
        let mut line = format!(
            "{:<7} {:<24} {}  programs {}  degraded: {}  tests {} passed, {} failed  {:.0} s",
            if self.passed() { "ok" } else { "FAILED" },
            if self.kernel.is_empty() {
                asked
            } else {
                &self.kernel
            },
            asked,
            self.programs.len(),
            if self.degraded.is_empty() {
                "none".to_string()
            } else {
                self.degraded.join("; ")
            },
            self.passed,
            self.failed.len(),
            took.as_secs_f64()
        );
        if !self.failed.is_empty() {
            line += &format!("  failed: {}", self.failed.join(", "));
        }
        if let Some(error) = &self.error {
            line += &format!("  error: {error}");
        }
        line
    }
}

fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y%m%d-%H%M%S"])
        .output();
    out.ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| secs.to_string())
}

fn run_quiet(cmd: &mut Command) -> Result<()> {
    capture_bytes(cmd).map(drop)
}

fn capture(cmd: &mut Command) -> Result<String> {
    capture_bytes(cmd).map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn capture_bytes(cmd: &mut Command) -> Result<Vec<u8>> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// `xtask vm-guest`: runs inside the guest, as root, with the host's root as its own.
#[derive(clap::Args)]
pub struct GuestOptions {
    /// The run directory shared with the host
    #[arg(long)]
    out: PathBuf,
    /// The teardown-trace binary
    #[arg(long)]
    tracer: PathBuf,
    /// The kernel-test executables
    tests: Vec<PathBuf>,
}

/// The tracer's programs and warnings on this kernel, then every kernel test; the summary
/// goes to the run directory line by line, so that a crash still leaves what was learnt.
pub fn guest(options: &GuestOptions) -> Result<()> {
    let mut summary = fs::File::create(options.out.join(SUMMARY))?;
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")?;
    writeln!(summary, "kernel={}", release.trim())?;
    // Before Linux 5.11, BPF memory counts against RLIMIT_MEMLOCK: keep what the tests had.
    fs::copy("/proc/self/limits", options.out.join("limits.txt"))?;
    match probe_tracer(&options.tracer, &options.out) {
        Ok((programs, degraded)) => {
            for program in programs {
                writeln!(summary, "program={program}")?;
            }
            for warning in degraded {
                writeln!(summary, "degraded={warning}")?;
            }
        }
        Err(e) => writeln!(summary, "error=the tracer did not start: {e:#}")?,
    }
    let mut passed = 0;
    for exe in &options.tests {
        let name = exe.file_name().unwrap().to_string_lossy().into_owned();
        let log = options.out.join(format!("{name}.txt"));
        let status = Command::new(exe)
            .arg("--test-threads=1")
            .env("CI", "1")
            // Emulated, a storm of 100,000 sockets takes many minutes; 8 x 1,000 keeps
            // every assertion of the test.
            .env("TEARDOWN_STORM_SOCKETS", "8000")
            // Waits for conditions give up after 20 s natively; emulated, processes start
            // and run about 100 times slower.
            .env("TEARDOWN_TEST_WAIT_SECS", "300")
            .stdout(fs::File::create(&log)?)
            .stderr(fs::File::create(
                options.out.join(format!("{name}.stderr")),
            )?)
            .status()
            .with_context(|| format!("running {}", exe.display()))?;
        let text = fs::read_to_string(&log)?;
        let results = TestResults::parse(&text);
        passed += results.passed;
        for failed in &results.failed {
            writeln!(summary, "failed={failed}")?;
        }
        if !status.success() && results.failed.is_empty() {
            writeln!(summary, "failed={name} ({status})")?;
        }
    }
    writeln!(summary, "passed={passed}")?;
    Ok(())
}

/// Starts the tracer, lists the BPF programs it loaded, stops it, and reads what its
/// start-up probe degraded on this kernel from the document's `degraded`.
fn probe_tracer(tracer: &Path, out: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let doc = out.join("tracer.json");
    let mut child = Command::new(tracer)
        .args(["-P", "9", "-o"])
        .arg(&doc)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the tracer")?;
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut said = Vec::new();
    let mut line = String::new();
    while stderr.read_line(&mut line)? > 0 {
        if line.starts_with("Tracing") {
            break;
        }
        said.push(line.trim_end().to_string());
        line.clear();
    }
    fs::write(out.join("tracer.stderr"), said.join("\n") + "\n")?;
    if line.is_empty() {
        let status = child.wait()?;
        bail!("{} ({status})", said.join(" / "));
    }
    let listing = capture(Command::new("bpftool").args(["prog", "show"]));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    child.wait()?;
    let listing = listing?;
    fs::write(out.join("bpftool-prog.txt"), &listing)?;
    let programs = listing
        .lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "name").nth(1))
        .map(str::to_string)
        .collect();
    let document: serde_json::Value = serde_json::from_slice(
        &fs::read(&doc).with_context(|| format!("reading {}", doc.display()))?,
    )?;
    // Each entry is "cause: consequence"; the line keeps the consequence.
    let degraded = document["degraded"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str())
        .map(|d| {
            d.rsplit_once(": ")
                .map_or(d, |(_, consequence)| consequence)
        })
        .map(str::to_string)
        .collect();
    Ok((programs, degraded))
}

/// What each failed test printed (its panic message), from the guest's libtest logs in
/// `dir`, at most `FAILURE_LINES` lines each; for a test executable that ended without
/// verdicts (`NAME (exit status)`: a crash), the end of its output.
fn failure_reports(dir: &Path, failed: &[String]) -> Vec<String> {
    let logs: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "txt"))
        .filter_map(|path| fs::read_to_string(path).ok())
        .collect();
    failed
        .iter()
        .filter_map(|name| {
            logs.iter()
                .find_map(|log| failure_report(log, name))
                .or_else(|| crash_report(dir, name))
        })
        .collect()
}

/// The last `FAILURE_LINES` lines of stdout and stderr of the executable `failed` names.
fn crash_report(dir: &Path, failed: &str) -> Option<String> {
    let (exe, _) = failed.split_once(" (")?;
    let mut report = format!("    {failed}:");
    for stream in ["txt", "stderr"] {
        let text = fs::read_to_string(dir.join(format!("{exe}.{stream}"))).ok()?;
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(FAILURE_LINES)..];
        report += &format!("\n      [{stream}, last {} lines]", tail.len());
        for line in tail {
            report += &format!("\n      {}", cut(line));
        }
    }
    Some(report)
}

/// A line of a report, cut at `LINE_CHARS` (a test's message may hold a whole timeline).
fn cut(line: &str) -> &str {
    line.char_indices()
        .nth(LINE_CHARS)
        .map_or(line, |(at, _)| &line[..at])
}

const FAILURE_LINES: usize = 40;
const LINE_CHARS: usize = 4000;

/// The `---- NAME stdout ----` section of libtest's output, indented, cut to `FAILURE_LINES`.
fn failure_report(output: &str, name: &str) -> Option<String> {
    let header = format!("---- {name} stdout ----");
    let start = output.find(&header)? + header.len();
    let section = output[start..]
        .lines()
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.starts_with("---- ") && *l != "failures:");
    let mut report = format!("    {name}:");
    for (i, line) in section.enumerate() {
        if i == FAILURE_LINES {
            report += "\n      [cut; the whole output is in the run directory]";
            break;
        }
        report += &format!("\n      {}", cut(line));
    }
    Some(report.trim_end().to_string())
}

/// libtest's verdicts in one test executable's output.
struct TestResults {
    passed: u32,
    failed: Vec<String>,
}

impl TestResults {
    fn parse(output: &str) -> TestResults {
        let mut results = TestResults {
            passed: 0,
            failed: Vec::new(),
        };
        for line in output.lines() {
            if let Some(name) = line
                .strip_prefix("test ")
                .and_then(|l| l.strip_suffix(" ... FAILED"))
            {
                results.failed.push(name.to_string());
            } else if line.starts_with("test ") && line.ends_with(" ... ok") {
                results.passed += 1;
            }
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_packages_are_found_in_depends() {
        let depends = "linux-image-6.12.57+deb13-amd64 (= 6.12.57-1), initramfs-tools | linux-initramfs-tool, linux-base-7.2.13+deb14 | foo";
        assert_eq!(
            kernel_dependencies(depends),
            ["linux-image-6.12.57+deb13-amd64", "linux-base-7.2.13+deb14"]
        );
        assert!(kernel_dependencies("linux-image-amd64, linux-base (>= 4.3~)").is_empty());
    }

    #[test]
    fn libtest_verdicts_are_counted() {
        let out = "running 3 tests\ntest a ... ok\ntest b ... FAILED\ntest c ... ok\n\nfailures:\n";
        let results = TestResults::parse(out);
        assert_eq!((results.passed, results.failed), (2, vec!["b".to_string()]));
    }

    #[test]
    fn a_failed_tests_panic_is_reported() {
        let out = "test a ... FAILED\n\nfailures:\n\n---- a stdout ----\nthread 'a' panicked at x.rs:1:2:\nboom\n\n---- b stdout ----\nother\n\nfailures:\n    a\n";
        assert_eq!(
            failure_report(out, "a").unwrap(),
            "    a:\n      thread 'a' panicked at x.rs:1:2:\n      boom"
        );
        assert!(failure_report(out, "c").is_none());
    }

    #[test]
    fn a_crashed_executable_shows_the_end_of_its_output() {
        let dir = std::env::temp_dir().join(format!("vmtest-crash-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let many: String = (0..50).map(|i| format!("line {i}\n")).collect();
        fs::write(dir.join("wire-1.txt"), &many).unwrap();
        fs::write(
            dir.join("wire-1.stderr"),
            "fatal runtime error: stack overflow\n",
        )
        .unwrap();
        let reports = failure_reports(&dir, &["wire-1 (signal: 6)".to_string()]);
        fs::remove_dir_all(&dir).unwrap();
        let report = &reports[0];
        assert!(report.starts_with("    wire-1 (signal: 6):"), "{report}");
        assert!(
            report.contains("[txt, last 40 lines]\n      line 10\n"),
            "{report}"
        );
        assert!(
            report.ends_with(
                "line 49\n      [stderr, last 1 lines]\n      fatal runtime error: stack overflow"
            ),
            "{report}"
        );
    }

    #[test]
    fn a_cpio_entry_is_padded_to_four_bytes() {
        let mut cpio = Cpio::default();
        cpio.file("init", 0o755, b"abc");
        // 110-byte header + "init\0", padded to 116; 3 data bytes, padded to 120.
        assert_eq!(cpio.bytes.len(), 120);
        assert_eq!(&cpio.bytes[..6], b"070701");
        assert!(cpio.finish().len().is_multiple_of(4));
    }
}
