//! Crash-safe creation of an array file: nobody ever sees a half-made array under its name.
//!
//! 1. Create a temporary file `.tmp-PID-NANOS-SEQ-NAMEPREFIX` (mode 0600) in the target
//!    directory. Only the first [`TEMP_NAME_PREFIX_LEN`] bytes of the name go into it, so the
//!    temporary name stays within the 255-byte file-name limit for every valid array name.
//! 2. Reserve the full size with `fallocate`, so the file is never sparse and a full disk is an
//!    error now (`NoSpace`) rather than a SIGBUS in some writer later.
//! 3. Write the header page and fsync the file.
//! 4. Rename it to NAME with `RENAME_NOREPLACE` (an existing array is never replaced), then
//!    fsync the directory so the name survives a machine crash.
//!
//! 5. Create the array's control file `.control/NAME` (module `sleepers`).
//!
//! A crash before step 4 leaves only a `.tmp-*` file, which names can never collide with
//! (names may not start with '.') and which the daemon removes at start. A crash between 4 and
//! 5 leaves an array without a control file, which works (its writers always wake) and gets
//! one when the daemon next starts.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, RenameFlags, renameat_with};

use crate::error::CreateError;
use crate::fault::{Step, step};
use crate::format::{ArraySpec, Header, now_ns};
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

/// Creates the array file `dir/spec.name` crash-safely and returns its path and header.
///
/// The data starts zeroed, at version 0.
///
/// # Errors
/// [`CreateError::Invalid`] for a bad name, shape or mode (no file is touched);
/// [`CreateError::AlreadyExists`]; [`CreateError::NoSpace`] when the filesystem cannot hold
/// the file (`ENOSPC`, `EDQUOT`, or `EFBIG`: larger than the largest file it allows);
/// [`CreateError::Io`] otherwise. On every error the temporary file is removed.
///
/// # Example
/// ```
/// use mmshare::{create_array_file, Access, Array, ArraySpec, DType};
/// let dir = tempfile::tempdir()?;
/// let (path, header) = create_array_file(dir.path(), &ArraySpec::new("grid", DType::F64, vec![4, 4]))?;
/// assert_eq!(header.data_len, 128);
/// let grid = Array::<f64>::open(&path, Access::Write)?;
/// grid.write_all(&[1.0; 16])?;
/// assert_eq!(grid.read_to_vec()?, vec![1.0; 16]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn create_array_file(dir: &Path, spec: &ArraySpec) -> Result<(PathBuf, Header), CreateError> {
    let (target, header) = create_array_data(dir, spec)?;
    // The control file (module `sleepers`) comes second: a handle opened in between simply
    // works without it.
    if let Err(source) = crate::sleepers::create_control(&target) {
        let _ = std::fs::remove_file(&target);
        return Err(CreateError::Io {
            dir: dir.to_owned(),
            source,
        });
    }
    Ok((target, header))
}

/// Creates the array file `dir/spec.name` crash-safely, as [`create_array_file`] does, but
/// without the control file beside it: for a daemon, which keeps control state in sealed
/// memory of its own (`new_array_control`) and hands it out with the file.
///
/// # Errors
/// As [`create_array_file`].
pub fn create_array_data(dir: &Path, spec: &ArraySpec) -> Result<(PathBuf, Header), CreateError> {
    let header = Header::new(spec)?;
    let target = dir.join(&header.name);
    let temp = dir.join(temp_name(&header.name));
    let io_err = failed_in(dir, header.file_len());
    let file = new_temp_file(&temp).map_err(&io_err)?;
    let result = fill_and_publish(&file, &header, &temp, &target, dir);
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result?;
    Ok((target, header))
}

fn fill_and_publish(
    file: &File,
    header: &Header,
    temp: &Path,
    target: &Path,
    dir: &Path,
) -> Result<(), CreateError> {
    let io_err = failed_in(dir, header.file_len());
    reserve(file, header.file_len(), dir)?;
    step(Step::WriteHeader)
        .and_then(|()| file.write_all_at(&header.encode()[..], 0))
        .map_err(&io_err)?;
    write_array_extensions(file, header).map_err(&io_err)?;
    step(Step::SyncFile)
        .and_then(|()| file.sync_all())
        .map_err(&io_err)?;
    publish(temp, target, dir, header.file_len(), |t| {
        std::fs::remove_file(t)
    })
}

/// Writes an array's extension area (its record descr, for a record dtype) where its header
/// says it is; nothing for an array without one.
pub fn write_array_extensions(file: &File, header: &Header) -> io::Result<()> {
    let records: Vec<_> = crate::format::dtype_extension(&header.dtype)
        .into_iter()
        .collect();
    if records.is_empty() {
        return Ok(());
    }
    let (area, _) = crate::format::encode_extensions(&records);
    file.write_all_at(&area, header.extension_offset())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    /// Every valid name length works: the temporary file name must not grow with the name
    /// (a `.tmp-NAME-...` temp file made names of 225..=255 bytes fail with ENAMETOOLONG).
    #[test]
    fn names_of_every_valid_length_can_be_created() {
        let dir = tempfile::tempdir().unwrap();
        for len in [1, 100, 224, 225, 240, 254, 255] {
            let name = "n".repeat(len - 1) + "x";
            let (path, header) = create_array_file(
                dir.path(),
                &ArraySpec::new(name.as_str(), DType::U8, vec![3]),
            )
            .unwrap_or_else(|e| panic!("name of {len} bytes: {e}"));
            assert_eq!(header.name, name);
            assert_eq!(path, dir.path().join(&name));
        }
        assert!(temp_name(&"z".repeat(255)).len() <= 158);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(TEMP_PREFIX))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }
}
