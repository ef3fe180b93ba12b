//! `mmshared`: the mmshare daemon. All the work is in the `mmshare_daemon` library.
#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    let config = mmshare_daemon::Config::parse();
    mmshare_daemon::main_with(config)
}
