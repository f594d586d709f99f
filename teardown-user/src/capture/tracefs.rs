//! tracefs: where classic tracepoints are attached and their record layouts are published.
//! A fresh machine may not have it mounted; as root we mount it where the kernel expects it.

use std::{
    ffi::CString,
    fs,
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

pub const TRACEFS: &str = "/sys/kernel/tracing";
/// Where older systems have it, under debugfs.
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// Where tracefs is: already mounted (at [`TRACEFS`] or under debugfs), or mounted now at
/// [`TRACEFS`]. `hook` (`category:name`) is the tracepoint it is wanted for, named in errors.
pub fn ensure_mounted(hook: &'static str) -> Result<PathBuf> {
    for dir in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(dir.into());
        }
    }
    let cstr = |s: &str| CString::new(s).expect("no NUL in a constant");
    let (source, target, fstype) = (cstr("nodev"), cstr(TRACEFS), cstr("tracefs"));
    // SAFETY: plain mount(2) with valid NUL-terminated strings and no data.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        return Ok(TRACEFS.into());
    }
    let error = std::io::Error::last_os_error();
    // Mounted, but not readable by us (CAP_BPF and CAP_PERFMON without root): say so,
    // rather than that it could not be mounted.
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if let Some(dir) = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .find(|&dir| dir == TRACEFS || dir == DEBUGFS_TRACING)
    {
        return Err(Error::Hook {
            action: "read tracefs for",
            hook,
            reason: format!("{dir}/events is not readable: {error}"),
        });
    }
    Err(Error::Hook {
        action: "mount tracefs for",
        hook,
        reason: error.to_string(),
    })
}

/// The offsets of `fields` in the record of the tracepoint `hook` (`category:name`), from
/// its `format` file under `tracefs`.
pub fn field_offsets<const N: usize>(
    tracefs: &Path,
    hook: &'static str,
    fields: [&str; N],
) -> Result<[u32; N]> {
    let (category, name) = split_hook(hook);
    let path = tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let format = fs::read_to_string(&path).map_err(|e| Error::Hook {
        action: "read the format of",
        hook,
        reason: format!("{}: {e}", path.display()),
    })?;
    let mut offsets = [0; N];
    for (offset, field) in offsets.iter_mut().zip(fields) {
        *offset = parse_field_offset(&format, field).ok_or_else(|| Error::Hook {
            action: "find its fields in the record of",
            hook,
            reason: format!("{} has no field `{field}`", path.display()),
        })?;
    }
    Ok(offsets)
}

/// A classic tracepoint's `category:name`, in its two parts.
pub fn split_hook(hook: &str) -> (&str, &str) {
    let parts = hook.split_once(':');
    debug_assert!(parts.is_some(), "{hook} is not category:name");
    parts.unwrap_or(("", hook))
}

/// Parses lines like `field:long ret; offset:16; size:8; signed:1;` (tab-separated).
pub fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let declaration = parts.next()?.strip_prefix("field:")?;
        let name = declaration.rsplit([' ', '*']).next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        parts.find_map(|p| p.strip_prefix("offset:"))?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYS_EXIT_ACCEPT4: &str = "name: sys_exit_accept4
ID: 2233
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;

print fmt: \"0x%lx\", REC->ret
";

    #[test]
    fn finds_fields_by_name() {
        assert_eq!(parse_field_offset(SYS_EXIT_ACCEPT4, "ret"), Some(16));
        assert_eq!(
            parse_field_offset(SYS_EXIT_ACCEPT4, "__syscall_nr"),
            Some(8)
        );
        assert_eq!(
            parse_field_offset(SYS_EXIT_ACCEPT4, "pid"),
            None,
            "not a suffix match"
        );
        assert_eq!(parse_field_offset("garbage", "ret"), None);
    }

    #[test]
    fn handles_pointers_and_arrays() {
        let f = "\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:__u8 saddr[4];\toffset:28;\tsize:4;\tsigned:0;";
        assert_eq!(parse_field_offset(f, "skaddr"), Some(8));
        assert_eq!(parse_field_offset(f, "saddr"), Some(28));
    }
}
