//! The directories the daemon creates files in, opened so that it never writes into another
//! user's directory or follows a symlink planted in its way.
//!
//! `/tmp` and `/dev/shm` are writable by every user, and the default names the daemon uses
//! there (`/tmp/mmshare-$UID`, `/dev/shm/mmshare-$UID`) are predictable: another user can
//! create them first, as a directory of theirs or as a symlink. So before the daemon creates
//! anything in an array directory it opens it with `O_DIRECTORY | O_NOFOLLOW` and checks, with
//! `fstat` on that descriptor, that it is a directory owned by the daemon's effective uid;
//! the lock file is then opened relative to that descriptor, with `O_NOFOLLOW`, so a symlink
//! planted as the lock file is refused, never followed. The socket's directory must belong to
//! the daemon too (clients find the daemon by the socket's path). There are no exceptions for
//! sticky directories or for root: a root daemon refuses a directory of another user as well.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

/// The lock file in each array directory (one daemon per directory).
pub(crate) const LOCK_FILE: &str = ".mmshared.lock";

/// The daemon's effective uid: the owner of everything it creates.
pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Why a path is not a directory the daemon may use.
#[derive(Debug)]
pub(crate) enum DirError {
    /// Nothing at that path (or one of its ancestors is missing).
    Missing,
    /// A symlink, owned by `owner` (refused even when it points at a directory of ours).
    Symlink {
        /// Owner of the link.
        owner: u32,
    },
    /// Something other than a directory.
    NotADirectory,
    /// A directory of another user.
    Foreign {
        /// Its owner.
        owner: u32,
    },
    /// A directory that the daemon creates something in, owned by root but writable by
    /// others without the sticky bit (anyone could rename what the daemon makes there).
    Unsafe {
        /// Its mode bits.
        mode: u32,
    },
    /// Any other failure.
    Io(io::Error),
}

impl DirError {
    /// One phrase about `path`: "PATH belongs to uid 1001, not to this daemon's uid 1000".
    pub(crate) fn explain(&self, path: &Path) -> String {
        let p = path.display();
        match self {
            DirError::Missing => format!("{p} does not exist"),
            DirError::Symlink { owner } => format!(
                "{p} is a symlink (owned by uid {owner}); mmshared does not follow a symlink \
                 to the directories it writes in"
            ),
            DirError::NotADirectory => format!("{p} is not a directory"),
            DirError::Foreign { owner } => format!(
                "{p} belongs to uid {owner}, not to this daemon's uid {}",
                euid()
            ),
            DirError::Unsafe { mode } => format!(
                "{p} (owned by root, mode {mode:o}) is writable by other users and not sticky"
            ),
            DirError::Io(e) => format!("{p}: {e}"),
        }
    }

    /// Whether another user (or something that is no directory of ours) holds the path: a
    /// reason to fall back to another name, where one exists.
    pub(crate) fn is_taken(&self) -> bool {
        matches!(
            self,
            DirError::Symlink { .. } | DirError::NotADirectory | DirError::Foreign { .. }
        )
    }
}

impl From<Errno> for DirError {
    fn from(e: Errno) -> DirError {
        DirError::Io(e.into())
    }
}

/// A directory that the daemon's effective uid owns, held open.
#[derive(Debug)]
pub(crate) struct OwnDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// Opens `path` as a directory of the daemon's own: not a symlink (`O_NOFOLLOW` on the last
/// component), a directory (`O_DIRECTORY`), owned by the daemon's effective uid (`fstat` on
/// the descriptor just opened, so the check and the use are of the same directory).
///
/// # Errors
/// What is wrong with the path.
pub(crate) fn open_own(path: &Path) -> Result<OwnDir, DirError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Err(DirError::Missing),
        // ELOOP for a symlink, ENOTDIR for another file: tell them apart for the message.
        Err(Errno::LOOP | Errno::NOTDIR) => {
            return Err(match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => DirError::Symlink { owner: m.uid() },
                Ok(_) => DirError::NotADirectory,
                Err(e) if e.kind() == io::ErrorKind::NotFound => DirError::Missing,
                Err(e) => DirError::Io(e),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let stat = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
        return Err(DirError::NotADirectory);
    }
    if stat.st_uid != euid() {
        return Err(DirError::Foreign { owner: stat.st_uid });
    }
    Ok(OwnDir {
        fd,
        path: path.to_owned(),
    })
}

/// Creates `path` as a private directory (0700) if nothing is there, with its missing
/// parents when `parents` (only the documented default directories), then opens it with
/// [`open_own`]. Whatever already exists at `path` is left as it is and judged.
///
/// # Errors
/// What is wrong with the path; [`DirError::Missing`] when the parent is missing and
/// `parents` is false.
pub(crate) fn ensure_own(path: &Path, parents: bool) -> Result<OwnDir, DirError> {
    match std::fs::DirBuilder::new()
        .recursive(parents)
        .mode(0o700)
        .create(path)
    {
        Ok(()) => {}
        // Made by someone else (or earlier): judged below.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(DirError::Missing),
        Err(e) => return Err(DirError::Io(e)),
    }
    open_own(path)
}

/// Checks the directory a default directory is created in (or lives in): it must belong to
/// the daemon, or to root and then not be writable by others unless it is sticky (`/tmp`,
/// `/dev/shm`), so that nobody else can rename or replace what the daemon puts there.
///
/// # Errors
/// What is wrong with it.
pub(crate) fn check_parent(parent: &Path) -> Result<(), DirError> {
    let meta = std::fs::metadata(parent).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => DirError::Missing,
        _ => DirError::Io(e),
    })?;
    if !meta.is_dir() {
        return Err(DirError::NotADirectory);
    }
    let me = euid();
    if meta.uid() == me {
        return Ok(());
    }
    if meta.uid() != 0 {
        return Err(DirError::Foreign { owner: meta.uid() });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(DirError::Unsafe { mode });
    }
    Ok(())
}

/// Checks the directory the socket is bound in: a directory that belongs to the daemon's
/// effective uid. Its last component may be a symlink only if the link belongs to the
/// daemon or to root (nobody else can then point it elsewhere).
///
/// # Errors
/// What is wrong with it.
pub(crate) fn check_socket_dir(dir: &Path) -> Result<(), DirError> {
    let link = std::fs::symlink_metadata(dir).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => DirError::Missing,
        _ => DirError::Io(e),
    })?;
    let me = euid();
    if link.file_type().is_symlink() && link.uid() != me && link.uid() != 0 {
        return Err(DirError::Symlink { owner: link.uid() });
    }
    let meta = std::fs::metadata(dir).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => DirError::Missing,
        _ => DirError::Io(e),
    })?;
    if !meta.is_dir() {
        return Err(DirError::NotADirectory);
    }
    if meta.uid() != me {
        return Err(DirError::Foreign { owner: meta.uid() });
    }
    Ok(())
}

/// Creates a new private directory next to `base`, named `base` + `-` + 16 random hex
/// digits (from getrandom), with mode 0700. An existing path is never reused: a name that
/// exists already is skipped for another.
///
/// # Errors
/// The OS error (after a few names that all existed, `AlreadyExists`).
pub(crate) fn create_fallback(base: &Path) -> io::Result<OwnDir> {
    let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
    for _ in 0..8 {
        let mut random = [0u8; 8];
        let mut filled = 0;
        while filled < random.len() {
            match rustix::rand::getrandom(
                &mut random[filled..],
                rustix::rand::GetRandomFlags::empty(),
            ) {
                Ok(n) => filled += n,
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let path = fallback_path(base, u64::from_ne_bytes(random));
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                last = e;
                continue;
            }
            Err(e) => return Err(e),
        }
        return open_own(&path).map_err(|e| io::Error::other(e.explain(&path)));
    }
    Err(last)
}

fn fallback_path(base: &Path, suffix: u64) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(format!("-{suffix:016x}"));
    PathBuf::from(name)
}

/// Whether `path` is a name [`create_fallback`] makes for `base`.
pub(crate) fn is_fallback_of(base: &Path, path: &Path) -> bool {
    let (Some(base), Some(path)) = (base.to_str(), path.to_str()) else {
        return false;
    };
    path.strip_prefix(base)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Why the lock of a directory could not be taken.
#[derive(Debug)]
pub(crate) enum LockError {
    /// Another daemon holds it.
    Held,
    /// The lock file cannot be opened or is not a regular file (the message says why).
    Refused(String),
}

/// The exclusive lock of an array directory, held while this value lives. Its file also
/// keeps a small record: in the storage directory, the memory directory the daemon fell
/// back to.
#[derive(Debug)]
pub(crate) struct DirLock {
    file: File,
}

impl OwnDir {
    /// The path it was opened by.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the directory's lock: opens `.mmshared.lock` relative to this directory's
    /// descriptor (`openat` with `O_CREAT | O_NOFOLLOW`, mode 0600), checks that it is a
    /// regular file, and takes an exclusive `flock` without waiting.
    ///
    /// # Errors
    /// [`LockError::Held`] while another daemon holds it; [`LockError::Refused`] for a
    /// symlink or anything else where the lock file should be.
    pub(crate) fn lock(&self) -> Result<DirLock, LockError> {
        let lock_path = self.path.join(LOCK_FILE);
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, LOCK_FILE, flags, Mode::from_raw_mode(0o600))
            .map_err(|e| {
                LockError::Refused(match e {
                    Errno::LOOP => format!(
                        "{} is a symlink; mmshared does not follow it (remove it)",
                        lock_path.display()
                    ),
                    e => format!(
                        "cannot open {}: {}",
                        lock_path.display(),
                        io::Error::from(e)
                    ),
                })
            })?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| {
            LockError::Refused(format!(
                "cannot inspect {}: {}",
                lock_path.display(),
                io::Error::from(e)
            ))
        })?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(LockError::Refused(format!(
                "{} is not a regular file (remove it)",
                lock_path.display()
            )));
        }
        rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|_| LockError::Held)?;
        Ok(DirLock {
            file: File::from(fd),
        })
    }

    /// Removes the group and other permission bits, if any (array directories are 0700).
    ///
    /// # Errors
    /// The OS error.
    pub(crate) fn make_private(&self) -> io::Result<()> {
        let stat = rustix::fs::fstat(&self.fd)?;
        if stat.st_mode & 0o077 != 0 {
            rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(0o700))?;
        }
        Ok(())
    }
}

impl DirLock {
    /// The text recorded in the lock file (empty when nothing was recorded).
    ///
    /// # Errors
    /// The OS error.
    pub(crate) fn record(&self) -> io::Result<String> {
        let len = self.file.metadata()?.len().min(4096) as usize;
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            match self.file.read_at(&mut buf[got..], got as u64)? {
                0 => break,
                n => got += n,
            }
        }
        buf.truncate(got);
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Replaces the recorded text, and syncs it to disk.
    ///
    /// # Errors
    /// The OS error.
    pub(crate) fn set_record(&self, text: &str) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.write_all_at(text.as_bytes(), 0)?;
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_names_are_recognised_and_nothing_else() {
        let base = Path::new("/dev/shm/mmshare-1000");
        assert!(is_fallback_of(
            base,
            &fallback_path(base, 0x0123_4567_89ab_cdef)
        ));
        assert!(is_fallback_of(base, &fallback_path(base, 0)));
        for other in [
            "/dev/shm/mmshare-1000",
            "/dev/shm/mmshare-1000-",
            "/dev/shm/mmshare-1000-0123",
            "/dev/shm/mmshare-1000-0123456789abcdeg",
            "/dev/shm/mmshare-1000-0123456789abcdef/x",
            "/tmp/mmshare-1000-0123456789abcdef",
        ] {
            assert!(!is_fallback_of(base, Path::new(other)), "{other}");
        }
    }

    #[test]
    fn a_symlinked_lock_file_is_refused_and_its_target_never_created() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        let target = root.path().join("target");
        std::os::unix::fs::symlink(&target, dir.join(LOCK_FILE)).unwrap();
        let own = open_own(&dir).unwrap();
        match own.lock() {
            Err(LockError::Refused(m)) => assert!(m.contains("symlink"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(!target.exists());
    }

    #[test]
    fn a_symlinked_directory_is_refused_and_a_real_one_is_locked_once() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(open_own(&link), Err(DirError::Symlink { .. })));
        assert!(matches!(
            open_own(&root.path().join("none")),
            Err(DirError::Missing)
        ));
        let own = ensure_own(&real, false).unwrap();
        let lock = own.lock().unwrap();
        assert!(matches!(own.lock(), Err(LockError::Held)));
        lock.set_record("memory_dir=/x\n").unwrap();
        assert_eq!(lock.record().unwrap(), "memory_dir=/x\n");
    }
}
