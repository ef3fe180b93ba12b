//! Terminal 3 of the two-terminal example: opens the frame read-only and prints every new
//! version it sees, with a checksum of a consistent copy. See examples/README.md.
//!
//! Run: `cargo run --release -p mmshare --example subscribe [NAME]`

use std::error::Error;
use std::time::{Duration, Instant};

use mmshare::{Access, Client};

fn main() -> Result<(), Box<dyn Error>> {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "demo.frame".into());
    let client = Client::connect_default()?;
    let frame = client.open::<f32>(&name, Access::Read)?;
    println!(
        "reading {name} {:?} {} (Ctrl-C to stop)",
        frame.shape(),
        frame.dtype()
    );
    let mut copy = vec![0f32; frame.len()];
    let mut seen = frame.version();
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
        let snap = frame.read_into(&mut copy)?;
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
