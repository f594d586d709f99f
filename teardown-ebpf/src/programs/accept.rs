//! `syscalls:sys_exit_accept4` and `syscalls:sys_exit_accept`: the returned descriptor now
//! belongs to the calling process.

use aya_ebpf::{helpers::bpf_get_current_task, macros::tracepoint, programs::TracePointContext};
use teardown_common::{kind, owner_source, sock_flags, state};

use crate::{
    config::floor,
    emit::emit,
    owner,
    sock::{self, read, Sock, Untyped},
};

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    if floor() {
        return 0;
    }
    let offset = config!(layout.accept_ret) as usize;
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(offset) }) else {
        return 0;
    };
    if ret >= 0 {
        if let Some((sk, current)) = socket_of_fd(ret as u64) {
            let pid = owner::current_pid();
            let owner = owner::record(&ctx, sk.addr(), owner_source::ACCEPT, pid);
            // Read only once the owner is visible to a FIN landing now (`owner::behind_fin`).
            owner::full_barrier();
            let shutdown: u8 = sk.field(config!(layout.shutdown)).unwrap_or(0);
            // Its closing transitions went out, or may be going out, without an owner.
            if current != state::ESTABLISHED || shutdown & sock_flags::RCV_SHUTDOWN != 0 {
                emit(sk, &owner, pid, kind::OWNER, current, current, 0, 0);
            }
        }
    }
    0
}

/// The live TCP socket behind `fd` and its state: current->files->fdt->fd[fd]->private_data->sk.
fn socket_of_fd(fd: u64) -> Option<(Untyped, u8)> {
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, config!(layout.task_files))?;
    let fdt: u64 = read(files, config!(layout.files_fdt))?;
    let max_fds: u32 = read(fdt, config!(layout.fdt_max_fds))?;
    if fd >= max_fds as u64 {
        return None;
    }
    let fd_array: u64 = read(fdt, config!(layout.fdt_fd))?;
    let file: u64 = read(fd_array + fd * 8, 0)?;
    let socket: u64 = read(file, config!(layout.file_private_data))?;
    let sk = Untyped(read(socket, config!(layout.socket_sk))?);
    // accept() also serves Unix and other sockets: keep only live TCP ones, whose CLOSE
    // transition will remove the entry again.
    let current: u8 = sk.field(config!(layout.state))?;
    (sock::is_tcp(sk)? && current != state::CLOSE).then_some((sk, current))
}
