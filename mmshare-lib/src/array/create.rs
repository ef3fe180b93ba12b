//! Crash-safe creation of an array file: nobody ever sees a half-made array under its name.
//!
//! 1. Create a temporary file `.tmp-PID-NANOS-SEQ-NAMEPREFIX` (mode 0600) in the target
//!    directory (module `files`). Only a prefix of the name goes into it, so the temporary name
//!    stays within the 255-byte file-name limit for every valid array name.
//! 2. Reserve the full size with `fallocate`, so the file is never sparse and a full disk is an
//!    error now (`NoSpace`) rather than a SIGBUS in some writer later. A *sparse* array
//!    (`ArraySpec::sparse`) gets its apparent size and only its header page: its writers
//!    allocate each region before they write it, so a full disk is that write's error.
//! 3. Write the header page and fsync the file.
//! 4. Rename it to NAME with `RENAME_NOREPLACE` (an existing array is never replaced), then
//!    fsync the directory so the name survives a machine crash.
//!
//! 5. Create the array's control file `.control/NAME` (module `array::control`).
//!
//! A crash before step 4 leaves only a `.tmp-*` file, which names can never collide with
//! (names may not start with '.') and which the daemon removes at start. A crash between 4 and
//! 5 leaves an array without a control file, which works (its writers always wake) and gets
//! one when the daemon next starts.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::CreateError;
use crate::fault::{Step, step};
use crate::files::{failed_in, new_temp_file, publish, reserve, temp_name};
use crate::format::{ArraySpec, Header};

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
    // The control file (module `array::control`) comes second: a handle opened in between simply
    // works without it.
    if let Err(source) = crate::array::control::create_control(&target) {
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
    if header.is_sparse() && in_memory(dir) {
        return Err(CreateError::SparseInMemory {
            dir: dir.to_owned(),
        });
    }
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
    if header.is_sparse() {
        // The apparent size only, and the header page: each write allocates what it writes.
        file.set_len(header.file_len()).map_err(&io_err)?;
        reserve(file, crate::format::HEADER_SIZE as u64, dir)?;
    } else {
        reserve(file, header.file_len(), dir)?;
    }
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

/// Whether `dir` is on a memory filesystem (tmpfs, ramfs), where a sparse file's holes are
/// allocated by the first read fault of a shared mapping.
fn in_memory(dir: &Path) -> bool {
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    const RAMFS_MAGIC: u64 = 0x8584_58f6;
    rustix::fs::statfs(dir).is_ok_and(|s| {
        let kind = s.f_type as u64;
        kind == TMPFS_MAGIC || kind == RAMFS_MAGIC
    })
}

/// Writes an array's extension area (its record descr, for a record dtype; its stripe size,
/// if striped) where its header says it is; nothing for an array without one.
pub fn write_array_extensions(file: &File, header: &Header) -> io::Result<()> {
    let records = header.array_extensions();
    if records.is_empty() {
        return Ok(());
    }
    let (area, _) = crate::format::encode_extensions(&records);
    file.write_all_at(&area, header.extension_offset())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::files::TEMP_PREFIX;

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
