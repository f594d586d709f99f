//! Builds the eBPF crate for the BPF target so that `cargo build` yields one self-contained
//! binary (the object is embedded with `include_bytes_aligned!`).
fn main() -> anyhow::Result<()> {
    // The eBPF crate needs `-Z build-std=core`: nightly, or any toolchain with
    // RUSTC_BOOTSTRAP=1 (see README, "Building without nightly").
    println!("cargo:rerun-if-env-changed=TEARDOWN_EBPF_TOOLCHAIN");
    let toolchain = std::env::var("TEARDOWN_EBPF_TOOLCHAIN").ok();
    let toolchain = match toolchain.as_deref() {
        None | Some("") | Some("nightly") => aya_build::Toolchain::Nightly,
        Some(name) => aya_build::Toolchain::Custom(name),
    };
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../teardown-ebpf");
    let package = aya_build::Package {
        name: "teardown-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], toolchain)
}
