//! Deliberate seqlock faults, for the tests that prove the torn-read detector works.
//!
//! Compiled in only with the `fault-injection` feature (the cross-process test crate enables
//! it); without it both checks are constant `false` and vanish. With it, a process breaks its
//! seqlock only after [`inject`] is called, which only the test worker does on request.

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
