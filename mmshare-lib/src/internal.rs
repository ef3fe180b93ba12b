//! What the daemon, the command line, the Python and C bindings and the tests of the same
//! version use beyond the user-facing API: the wire protocol, the control files, process
//! liveness, creation steps and diagnostics.
//!
//! **No stability promise.** Anything here may change in any release, together with the
//! daemon (which is why `mmshare-daemon` and `mmshare-cli` depend on an exact version of this
//! crate). Applications use the crate root; tools that read the files themselves use
//! [`crate::format`].

/// The wire protocol between clients and the daemon (postcard messages; docs/PROTOCOL.md is
/// its prose twin).
pub mod proto {
    pub use crate::proto::*;
}

pub use crate::array::create::create_array_data;
pub use crate::dtype::ALL_DTYPES;
pub use crate::files::TEMP_PREFIX;
// For the daemon's fault points: `fault_step` is a constant `Ok` without the feature.
pub use crate::array::control::{
    CONTROL_DIR, control_path, create_control, is_array_control, new_array_control,
};
pub use crate::array::raw::peek_array_state;
pub use crate::fault::{Step as FaultStep, step as fault_step};
pub use crate::stream::{
    CONTROL_FILE, DATA_FILE, Membership, create_stream_data, new_stream_control,
    peek_stream_counters,
};
pub use crate::sys::{
    CONTROL_SEALS, futex_wait_any, futex_wait_calls, futex_wake_all, futex_wake_calls,
    futex_wakeups, has_participants, hold_participant_lock, is_sealed, reopen, reserve_space,
    sealed_memfd,
};
#[cfg(feature = "async")]
pub use crate::waiter::{
    WORDS_PER_THREAD, registered_waiters, waiter_polls, waiter_threads, waiter_wakeups,
};
