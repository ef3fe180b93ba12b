//! `mmshared`: placeholder until the daemon issue lands. It only says so.
#![forbid(unsafe_code)]

fn main() {
    eprintln!("mmshared: the daemon is not implemented yet (see issue 3); nothing to do");
    std::process::exit(2);
}
