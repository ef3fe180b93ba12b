//! Terminal 2 of the two-terminal example: publishes a 480×640 `f32` "frame" through the
//! daemon, about 100 times a second, until Ctrl-C. See examples/README.md.
//!
//! Run: `cargo run --release -p mmshare --example publish [NAME]`

use std::error::Error;
use std::time::{Duration, Instant};

use mmshare::{Client, CreateOptions};

fn main() -> Result<(), Box<dyn Error>> {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "demo.frame".into());
    let client = Client::connect_default()?;
    // exist_ok: restarting the publisher reuses the array (and its readers keep their mapping).
    let frame = client
        .create(
            &CreateOptions::new(&name, "f4", &[480, 640])
                .memory()
                .mode(0o644)
                .exist_ok(true),
        )?
        .typed::<f32>()?;
    println!(
        "publishing {name} {:?} {} via {} (Ctrl-C to stop)",
        frame.shape(),
        frame.dtype(),
        client.socket_path().display()
    );
    let start = Instant::now();
    let mut pixels = vec![0f32; frame.len()];
    loop {
        let t = start.elapsed().as_secs_f32();
        // A moving gradient: pixel (y, x) = sin(x/40 + t) * cos(y/40 - t).
        for (i, p) in pixels.iter_mut().enumerate() {
            let (y, x) = ((i / 640) as f32, (i % 640) as f32);
            *p = (x / 40.0 + t).sin() * (y / 40.0 - t).cos();
        }
        let version = frame.write_all(&pixels)?;
        if version % 100 == 0 {
            println!("version {version}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
