//! Deliberate faults, for tests: seqlock faults that prove the torn-read detector works, and
//! failing steps of a create that prove no failure leaves half an object behind.
//!
//! Compiled in only with the `fault-injection` feature (the test crates enable it); without it
//! every check is a constant and vanishes. With it, a process breaks its seqlock only after
//! [`inject`] is called, which only the test worker does on request, and a step fails only on
//! a thread that armed it with [`fail_step`].

/// A way to break the seqlock on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
pub enum Fault {
    /// Correct protocol.
    None = 0,
    /// Readers accept a copy without re-checking the sequence.
    SkipRecheck = 1,
    /// Writers publish the even sequence before writing the data.
    EarlyPublish = 2,
    /// Writers do not look at the sequence again after recording their identity, so one
    /// that stalled there past a takeover writes into a version it no longer holds.
    SkipIdentityRecheck = 3,
}

#[cfg(feature = "fault-injection")]
static FAULT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Breaks (or repairs) the seqlock in this process.
#[cfg(feature = "fault-injection")]
pub fn inject(fault: Fault) {
    FAULT.store(fault as u8, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(feature = "fault-injection")]
fn active(fault: Fault) -> bool {
    FAULT.load(std::sync::atomic::Ordering::Relaxed) == fault as u8
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
const fn active(_fault: Fault) -> bool {
    false
}

#[inline(always)]
pub(crate) fn skip_recheck() -> bool {
    active(Fault::SkipRecheck)
}

#[inline(always)]
pub(crate) fn early_publish() -> bool {
    active(Fault::EarlyPublish)
}

#[inline(always)]
pub(crate) fn skip_identity_recheck() -> bool {
    active(Fault::SkipIdentityRecheck)
}

/// A step of making or opening an object that can fail, each checked by a fault-injection
/// test (`mmshare-daemon/tests/create_faults.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Making a stream's temporary directory.
    MakeTempDir,
    /// Creating the temporary data file.
    OpenTemp,
    /// Reserving the file's space.
    Reserve,
    /// Writing the header.
    WriteHeader,
    /// Syncing the file (and a stream's temporary directory).
    SyncFile,
    /// Renaming the temporary name to the object's name.
    Rename,
    /// Syncing the directory after the rename.
    SyncDir,
    /// The daemon opening the object's data file.
    OpenData,
    /// The daemon making the object's control state.
    MakeControl,
    /// The daemon mapping the object.
    Map,
    /// The daemon opening the descriptors it sends the client.
    ClientFiles,
    /// An `msync` of a durable write.
    Sync,
    /// A durable write, right after it synced its data and before it commits: the test
    /// "crashes" there (the write returns as if the machine had stopped).
    CrashBeforeCommit,
}

#[cfg(any(test, feature = "fault-injection"))]
thread_local! {
    static FAIL_AT: std::cell::Cell<Option<(Step, i32)>> = const { std::cell::Cell::new(None) };
}

/// Makes `step` fail with the OS error `errno` on this thread, every time, until called again
/// (with `None` to fail nothing).
#[cfg(any(test, feature = "fault-injection"))]
pub fn fail_step(at: Option<(Step, i32)>) {
    FAIL_AT.with(|f| f.set(at));
}

/// The armed error if this thread armed `step` to fail.
#[cfg(any(test, feature = "fault-injection"))]
pub fn step(step: Step) -> std::io::Result<()> {
    match FAIL_AT.with(std::cell::Cell::get) {
        Some((armed, errno)) if armed == step => Err(std::io::Error::from_raw_os_error(errno)),
        _ => Ok(()),
    }
}

/// Always `Ok` without the `fault-injection` feature.
#[cfg(not(any(test, feature = "fault-injection")))]
#[inline(always)]
pub fn step(_step: Step) -> std::io::Result<()> {
    Ok(())
}
