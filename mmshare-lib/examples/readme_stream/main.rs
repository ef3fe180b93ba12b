//! The README's stream example ("Streams: every frame, in place") as a program: the tests
//! check that the README shows exactly the code between the two marker comments, and
//! `cargo test` compiles it.
//!
//! Run, with `mmshared` running: `cargo run -p mmshare --example readme_stream`

// README: begin
use mmshare::{Client, Delivery, StartAt, StreamOptions, SubscribeOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::connect_default()?;
    // Process A: a ring of 8 frames of 480x640 bytes in RAM, and its publisher.
    client.create_stream(
        &StreamOptions::new("demo.camera", "u1", &[480, 640])
            .memory()
            .exist_ok(true),
    )?;
    let mut publisher = client.publisher::<u8>("demo.camera")?;
    // Process B (started first, it would wait with `client.wait_for("demo.camera", timeout)`):
    // every frame from the next one on (a lossless subscriber starts at frame 0 by default).
    let options = SubscribeOptions::new(Delivery::Lossless).start(StartAt::Next);
    let subscriber = client.subscribe_with::<u8>("demo.camera", options)?;
    publisher.wait_for_subscribers(1, std::time::Duration::from_secs(5))?; // B is attached

    let mut frame = publisher.loan()?; // a free slot; waits only for lossless subscribers
    frame.fill(7); // fill in place (frame.view_mut() gives an ndarray view)
    let number = frame.publish(); // frames are numbered 0, 1, 2, ...

    let sample = subscriber.receive_timeout(std::time::Duration::from_secs(5))?;
    assert_eq!((sample.number(), sample[0]), (number, 7)); // read in place
    println!(
        "frame {} missed_before {}",
        sample.number(),
        sample.missed_before()
    );
    Ok(())
}
// README: end
