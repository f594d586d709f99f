//! Loading details: the filter maps, taking maps out of the object, attaching programs, and
//! errors made one line.

use aya::{
    maps::HashMap,
    programs::{BtfTracePoint, Program, TracePoint},
    Ebpf,
};

use crate::{
    error::{Error, Result},
    filter::Filter,
    limits::diagnosed,
};

pub fn fill_filter_maps(ebpf: &mut Ebpf, filter: &Filter) -> Result<()> {
    let bpf_err =
        |e: aya::maps::MapError| Error::Bpf(format!("setting up filters: {}", first_line(e)));
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

pub fn map_mut<'a, M>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<M>
where
    M: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .map_mut(name)
        .ok_or_else(|| Error::Bpf(format!("kernel program has no map {name}")))?;
    M::try_from(map).map_err(|e| Error::Bpf(format!("map {name}: {}", first_line(e))))
}

/// The first line of an aya error (a verifier log would not fit on one line), with the
/// causes it does not say itself ("failed to create map" hides its errno in a source).
pub fn first_line(e: impl std::error::Error) -> String {
    let mut line = e
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end()
        .trim_end_matches(". Verifier output:")
        .to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !line.contains(&said) {
            let said = match c.downcast_ref::<std::io::Error>() {
                Some(os) => diagnosed(os),
                None => said.lines().next().unwrap_or_default().to_string(),
            };
            line = format!("{line}: {said}");
        }
        cause = c.source();
    }
    line
}

/// Attaches the program `name` to the tracepoint of the same name.
pub fn attach_btf_tracepoint(ebpf: &mut Ebpf, btf: &aya::Btf, name: &'static str) -> Result<()> {
    attach_btf_tracepoint_to(ebpf, btf, name, name)
}

/// Attaches the program `name` to `tracepoint`.
pub fn attach_btf_tracepoint_to(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    name: &'static str,
    tracepoint: &str,
) -> Result<()> {
    let hook_err = hook_error(name);
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

/// Attaches the fentry or fexit program `name` to the kernel function of the same name.
pub fn attach_traced_function(ebpf: &mut Ebpf, btf: &aya::Btf, name: &'static str) -> Result<()> {
    attach_traced_function_to(ebpf, btf, name, name)
}

/// Attaches the fentry or fexit program `name` to the kernel function `function`.
pub fn attach_traced_function_to(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    name: &'static str,
    function: &str,
) -> Result<()> {
    let hook_err = hook_error(name);
    match ebpf.program_mut(name) {
        Some(Program::FEntry(program)) => {
            program
                .load(function, btf)
                .map_err(|e| hook_err("load", e))?;
            program.attach().map_err(|e| hook_err("attach", e))?;
        }
        Some(Program::FExit(program)) => {
            program
                .load(function, btf)
                .map_err(|e| hook_err("load", e))?;
            program.attach().map_err(|e| hook_err("attach", e))?;
        }
        _ => return Err(Error::Bpf(format!("kernel program has no {name}"))),
    }
    Ok(())
}

/// Attaches the classic tracepoint program `name` to `hook` (`category:name`).
pub fn attach_tracepoint(ebpf: &mut Ebpf, name: &'static str, hook: &'static str) -> Result<()> {
    attach_classic(ebpf, name, hook, &[hook])
}

/// One program on both accept syscalls.
pub fn attach_accept(ebpf: &mut Ebpf) -> Result<()> {
    attach_classic(
        ebpf,
        "sys_exit_accept",
        "syscalls:sys_exit_accept",
        &["syscalls:sys_exit_accept4", "syscalls:sys_exit_accept"],
    )
}

/// Loads the classic tracepoint program `name` once and attaches it to each of `hooks`
/// (`category:name`); errors name `hook`.
fn attach_classic(
    ebpf: &mut Ebpf,
    name: &'static str,
    hook: &'static str,
    hooks: &[&str],
) -> Result<()> {
    let hook_err = hook_error(hook);
    let program: &mut TracePoint = ebpf
        .program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| Error::Bpf(format!("kernel program has no {name}")))?;
    program.load().map_err(|e| hook_err("load", e))?;
    for tracepoint in hooks {
        let (category, tracepoint) = super::tracefs::split_hook(tracepoint);
        program
            .attach(category, tracepoint)
            .map_err(|e| hook_err("attach", e))?;
    }
    Ok(())
}

/// Makes an aya error in `action` ("load", "attach") on `hook` one line.
fn hook_error(hook: &'static str) -> impl Fn(&'static str, aya::programs::ProgramError) -> Error {
    move |action, e| Error::Hook {
        action,
        hook,
        reason: first_line(e),
    }
}
