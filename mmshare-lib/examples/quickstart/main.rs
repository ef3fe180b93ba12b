//! The README's "Quick start in Rust" as a program: the tests check that the README shows
//! exactly the code between the two marker comments, and `cargo test` compiles it.
//!
//! Run, with `mmshared` running: `cargo run -p mmshare --example quickstart`

// README quick start: begin
use std::time::Duration;

use mmshare::{Access, Client, CreateOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::connect_default()?;

    // Process A: create (or reuse one of our own) a 480x640 f32 array in RAM that other
    // users may open.
    let options = CreateOptions::new("camera.frame", "f4", &[480, 640])
        .memory()
        .mode(0o644)
        .exist_ok(true);
    let frame = client.create(&options)?.typed::<f32>()?;
    frame.write_with(|view| view.fill(1.0))?; // closure-scoped write, publishes a version

    // Process B: a read-only mapping (it cannot write, even by mistake).
    let reader = client.open::<f32>("camera.frame", Access::Read)?;
    let version = reader.wait_for_version(0, Duration::from_secs(5))?; // sleeps on a futex
    let copy = reader.read_array()?; // consistent copy, an ndarray::ArrayD<f32>
    // Zero-copy: the closure reads the shared pages in place, then the read is validated.
    let peak = reader.read_with(|view| (0..view.len()).map(|i| view.get(i)).fold(0.0, f32::max))?;
    println!("version {version}: shape {:?}, peak {peak}", copy.shape());
    Ok(())
}
// README quick start: end
