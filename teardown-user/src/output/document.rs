//! `-o FILE`: one JSON document, `{..., "timelines": [...], "lost_events": N, ...}`.
//!
//! Timelines are streamed into a temporary file beside the target as they complete, so
//! memory does not grow with the number of connections; `finish` closes the document and
//! renames it into place, so the target only ever holds a complete, valid document.

use std::{
    fs::{self, File},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use crate::{
    error::{Error, Result},
    reconstruct::Timeline,
};

use super::json::{self, KernelNames};

pub struct DocumentWriter {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<File>>,
    count: u64,
    line: Vec<u8>,
}

impl DocumentWriter {
    /// Creates the temporary file now, so an unwritable path fails before tracing starts.
    /// `header` is the document's leading members, without braces.
    pub fn create(path: &Path, header: &str) -> Result<Self> {
        let fail = |source: std::io::Error| Error::Output {
            path: path.to_path_buf(),
            source,
        };
        if path.is_dir() {
            return Err(fail(std::io::Error::other("it is a directory")));
        }
        let name = path
            .file_name()
            .ok_or_else(|| fail(std::io::Error::other("not a file name")))?;
        let tmp = path.with_file_name(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let mut file = BufWriter::new(File::create(&tmp).map_err(fail)?);
        write!(file, "{{{header},\"timelines\":[").map_err(fail)?;
        Ok(DocumentWriter {
            path: path.to_path_buf(),
            tmp,
            file: Some(file),
            count: 0,
            line: Vec::new(),
        })
    }

    pub fn timeline(&mut self, t: &Timeline, names: &KernelNames) -> Result<()> {
        self.line.clear();
        if self.count > 0 {
            self.line.push(b',');
        }
        self.line.push(b'\n');
        json::timeline(&mut self.line, t, names);
        self.count += 1;
        let file = self.file.as_mut().expect("written before finish");
        file.write_all(&self.line).map_err(|source| Error::Output {
            path: self.path.clone(),
            source,
        })
    }

    /// Closes the document with `trailer` (members after the timelines) and moves it into
    /// place.
    pub fn finish(mut self, trailer: &str) -> Result<()> {
        let fail = |source| Error::Output {
            path: self.path.clone(),
            source,
        };
        let mut file = self.file.take().expect("finished once");
        write!(file, "\n],{trailer}}}\n").map_err(fail)?;
        let file = file.into_inner().map_err(|e| fail(e.into_error()))?;
        file.sync_all().map_err(fail)?;
        fs::rename(&self.tmp, &self.path).map_err(fail)
    }
}

impl Drop for DocumentWriter {
    /// An unfinished document is never left behind half-written.
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}
