//! An output file that is never destroyed on the way (`-o`, `--mermaid`, `--perfetto`):
//! - a regular file (or a symlink to one) is written beside its real location and renamed
//!   over it by `finish`, so it only ever holds a complete output, and the link stays;
//! - anything else that exists (a device such as /dev/null, a FIFO, `/dev/stdout`, a pipe
//!   given as `>(cmd)`) is written into directly.

use std::{
    fs::{self, File, Metadata, OpenOptions, Permissions},
    io::{self, BufWriter, Write},
    os::unix::fs::{fchown, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

pub struct SafeFile {
    /// As the user gave it, for messages.
    path: PathBuf,
    /// Where a regular file's content is written until it is renamed into place.
    staging: Option<Staging>,
    file: BufWriter<File>,
}

struct Staging {
    tmp: PathBuf,
    dest: PathBuf,
}

impl SafeFile {
    /// Opens the output now, so an unwritable path fails before tracing starts.
    pub fn create(path: &Path) -> Result<Self> {
        let fail = |error: io::Error| Error::output(path, error);
        let (file, staging) = match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {
                return Err(fail(io::Error::other("it is a directory")));
            }
            Ok(meta) if !meta.is_file() => {
                let file = OpenOptions::new().write(true).open(path).map_err(fail)?;
                (file, None)
            }
            Ok(meta) => {
                staged(&fs::canonicalize(path).map_err(fail)?, Some(&meta)).map_err(fail)?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => staged(path, None).map_err(fail)?,
            Err(e) => return Err(fail(e)),
        };
        Ok(SafeFile {
            path: path.to_path_buf(),
            staging,
            file: BufWriter::new(file),
        })
    }

    /// Writes `bytes`; an error names the file.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(|error| Error::output(&self.path, error))
    }

    /// Hands what is buffered to the file (a device or FIFO gets it now; a regular file's
    /// staged copy too, which is not at the path until `finish`).
    pub fn flush(&mut self) -> Result<()> {
        self.file
            .flush()
            .map_err(|error| Error::output(&self.path, error))
    }

    /// Flushes and, for a regular file, moves the complete content into place.
    pub fn finish(mut self) -> Result<()> {
        self.flush()?;
        if let Some(staging) = self.staging.take() {
            let moved = self
                .file
                .get_ref()
                .sync_all()
                .and_then(|()| fs::rename(&staging.tmp, &staging.dest));
            if let Err(error) = moved {
                let _ = fs::remove_file(&staging.tmp);
                return Err(Error::output(&self.path, error));
            }
        }
        Ok(())
    }
}

/// A new temporary file beside `dest`, never one that exists. It takes over the mode and,
/// where it can, the owner of the file it will replace (`existing`): a private output stays
/// private. Another user's file, or a file system that refuses chown (NFS with root_squash,
/// vfat), keeps the tracer's user as owner, and then no setuid or setgid bit.
fn staged(dest: &Path, existing: Option<&Metadata>) -> io::Result<(File, Option<Staging>)> {
    let name = dest
        .file_name()
        .ok_or_else(|| io::Error::other("not a file name"))?;
    let tmp = dest.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let beside = |error: io::Error| {
        io::Error::new(
            error.kind(),
            format!("creating {} to replace it: {error}", tmp.display()),
        )
    };
    // Private until it has the mode of the file it replaces; a new file's is the umask's.
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if existing.is_some() { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(beside)?;
    if let Some(meta) = existing {
        let owner_kept = fchown(&file, Some(meta.uid()), Some(meta.gid())).is_ok();
        let mode = meta.mode() & if owner_kept { 0o7777 } else { 0o777 };
        if let Err(error) = file.set_permissions(Permissions::from_mode(mode)) {
            let _ = fs::remove_file(&tmp);
            return Err(beside(error));
        }
    }
    let staging = Staging {
        tmp,
        dest: dest.to_path_buf(),
    };
    Ok((file, Some(staging)))
}

impl Drop for SafeFile {
    /// An unfinished output is never left behind half-written.
    fn drop(&mut self) {
        if let Some(staging) = &self.staging {
            let _ = fs::remove_file(&staging.tmp);
        }
    }
}
