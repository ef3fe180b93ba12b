//! The wire fuzz target: each input is a script of messages from several clients (see
//! `mmshare_daemon::fuzzing`), decoded and dispatched by the daemon's own code on a fresh
//! registry in a temporary directory, with the harness's checks after every message.
//!
//! Run it from `fuzz/` with `cargo fuzz run wire -s none` (docs/TESTING.md, "Fuzzing").
#![no_main]

use libfuzzer_sys::fuzz_target;
use mmshare_daemon::fuzzing::Harness;

fuzz_target!(|input: &[u8]| {
    let harness = Harness::new().expect("a temporary directory for the harness");
    harness.run(input);
});
