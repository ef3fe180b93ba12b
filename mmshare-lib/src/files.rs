//! Crash-safe creation of the files of a directory's objects (arrays, their control files,
//! streams): a temporary file under a name no object can have, space reserved, then a rename
//! that never replaces anything and a sync of the directory.
//!
//! Shared by `array::create`, `array::control` and `stream::files`, which say what goes in
//! each file.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::{CWD, RenameFlags, renameat_with};

use crate::error::CreateError;
use crate::fault::{Step, step};
use crate::format::now_ns;
use crate::sys::reserve_space;

/// Prefix of temporary files made by an unfinished create.
pub const TEMP_PREFIX: &str = ".tmp-";

/// How many leading bytes of the array name a temporary file name carries (for diagnostics).
/// `.tmp-` + pid (≤ 10 digits) + nanoseconds (≤ 20) + sequence (≤ 20) + 3 dashes + this is
/// at most 158 bytes, under the 255-byte limit of a file name.
pub const TEMP_NAME_PREFIX_LEN: usize = 100;

/// Distinguishes temporary files of creates started in the same nanosecond by one process.
static TEMP_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The temporary file name for a create of `name`: never longer than 158 bytes.
pub(crate) fn temp_name(name: &str) -> String {
    // Names are ASCII (validated), so cutting at a byte index is a character boundary.
    let short = name
        .get(..name.len().min(TEMP_NAME_PREFIX_LEN))
        .unwrap_or("");
    format!(
        "{TEMP_PREFIX}{}-{}-{}-{short}",
        std::process::id(),
        now_ns(),
        TEMP_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Renames `temp` to `target` (never replacing anything) and syncs `dir`, so the new name
/// survives a crash. A failure after the rename takes the new name away again with `remove`
/// (the object is then neither under its name nor half-made: the caller removes only the
/// temporary name, which no longer exists).
pub(crate) fn publish(
    temp: &Path,
    target: &Path,
    dir: &Path,
    needed: u64,
    remove: impl Fn(&Path) -> io::Result<()>,
) -> Result<(), CreateError> {
    let io_err = failed_in(dir, needed);
    step(Step::Rename)
        .map_err(|e| rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO))
        .and_then(|()| renameat_with(CWD, temp, CWD, target, RenameFlags::NOREPLACE))
        .map_err(|e| {
            if e == rustix::io::Errno::EXIST {
                CreateError::AlreadyExists(target.to_owned())
            } else {
                io_err(e.into())
            }
        })?;
    let synced = step(Step::SyncDir).and_then(|()| File::open(dir).and_then(|d| d.sync_all()));
    if let Err(e) = synced {
        let _ = remove(target);
        let _ = File::open(dir).and_then(|d| d.sync_all());
        return Err(io_err(e));
    }
    Ok(())
}

/// Creates the temporary file `path` of a create: read-write, mode 0600, never an existing
/// file (a fault point of the tests).
pub(crate) fn new_temp_file(path: &Path) -> io::Result<File> {
    step(Step::OpenTemp)?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// The error for a step of a create in `dir` of a file of `needed` bytes that failed with
/// `source`: [`CreateError::NoSpace`] when the filesystem is full or over a quota (a write or
/// a sync can say so as well as the reservation), else [`CreateError::Io`].
pub(crate) fn failed_in(dir: &Path, needed: u64) -> impl Fn(io::Error) -> CreateError + '_ {
    move |source: io::Error| {
        use rustix::io::Errno;
        let no_room = [Errno::NOSPC, Errno::DQUOT, Errno::FBIG].map(Errno::raw_os_error);
        if source
            .raw_os_error()
            .is_some_and(|code| no_room.contains(&code))
        {
            CreateError::NoSpace {
                needed,
                dir: dir.to_owned(),
            }
        } else {
            CreateError::Io {
                dir: dir.to_owned(),
                source,
            }
        }
    }
}

/// Reserves `needed` bytes for `file` (in `dir`), reporting a full filesystem (`ENOSPC`,
/// `EDQUOT`, or `EFBIG`: larger than the largest file it allows) as [`CreateError::NoSpace`].
pub(crate) fn reserve(file: &File, needed: u64, dir: &Path) -> Result<(), CreateError> {
    step(Step::Reserve)
        .and_then(|()| reserve_space(file, needed))
        .map_err(failed_in(dir, needed))
}
