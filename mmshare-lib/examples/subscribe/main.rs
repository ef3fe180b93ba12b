//! Terminal 3 of the publish/subscribe example: opens the frame read-only, sleeps until each new
//! version, takes a consistent copy and prints once a second what it saw. A TORN frame (the
//! publisher died mid-write) is reported and waited out. See examples/README.md.
//!
//! Run: `cargo run --release -p mmshare --example subscribe [NAME]`

use std::error::Error;
use std::time::{Duration, Instant};

use mmshare::{Access, Client, ReadError};

fn main() -> Result<(), Box<dyn Error>> {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "demo.frame".into());
    let client = Client::connect_default()?;
    let frame = client.open::<f32>(&name, Access::Read)?;
    // The version to wait past is taken before saying so: a version published after the
    // line below is then never missed.
    let mut seen = frame.version();
    println!(
        "reading {name} {:?} {} (Ctrl-C to stop)",
        frame.shape(),
        frame.dtype()
    );
    let mut copy = vec![0f32; frame.len()];
    let mut last_report = Instant::now();
    let mut count = 0u32;
    loop {
        // Sleeps on the futex in the mapping: no CPU while nothing is published.
        match frame.wait_for_version(seen, Duration::from_secs(5)) {
            Ok(v) => seen = v,
            Err(e) => {
                println!("{e}; is the publisher running?");
                continue;
            }
        }
        let snap = match frame.read_into(&mut copy) {
            Ok(snap) => snap,
            // A writer died mid-write: wait for the next whole frame instead of giving up.
            Err(ReadError::Torn { version }) => {
                println!(
                    "version {version} is TORN (its writer died mid-write); waiting for a whole frame"
                );
                continue;
            }
            // Writes kept overlapping the copy: try again with the next version.
            Err(e @ ReadError::Timeout { .. }) => {
                println!("{e}; trying again");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        count += 1;
        if last_report.elapsed() >= Duration::from_secs(1) {
            let mean = copy.iter().sum::<f32>() / copy.len() as f32;
            println!(
                "version {} ({count} frames/s), mean pixel {mean:+.4}",
                snap.version
            );
            last_report = Instant::now();
            count = 0;
        }
    }
}
