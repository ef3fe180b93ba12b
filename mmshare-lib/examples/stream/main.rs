//! A stream of camera frames: one publisher fills 480×640 `u8` frames in place, any number of
//! subscribers read every frame (lossless) or keep up as they can (lossy, counting what they
//! miss). See `examples/README.md` ("Terminal 1 ... Terminal 2 ...").
//!
//! ```text
//! cargo run --release -p mmshare --example stream -- publish [FRAMES]
//! cargo run --release -p mmshare --example stream -- subscribe [--lossless]
//! ```

use std::time::{Duration, Instant};

use mmshare::{Client, Delivery, StartAt, StreamError, StreamOptions, SubscribeOptions};

const NAME: &str = "demo.camera";
const SHAPE: [u64; 2] = [480, 640];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let client = Client::connect_default()?;
    match args.first().map(String::as_str) {
        Some("publish") => {
            let frames: u64 = args.get(1).map_or(Ok(u64::MAX), |n| n.parse())?;
            publish(&client, frames)
        }
        Some("subscribe") => {
            let lossless = args.iter().any(|a| a == "--lossless");
            subscribe(&client, lossless)
        }
        _ => Err("usage: stream publish [FRAMES] | stream subscribe [--lossless]".into()),
    }
}

fn publish(client: &Client, frames: u64) -> Result<(), Box<dyn std::error::Error>> {
    // A ring of 8 frames in RAM; reuse it if it exists with the same shape.
    let options = StreamOptions::new(NAME, "u1", &SHAPE)
        .slots(8)
        .memory()
        .exist_ok(true);
    client.create_stream(&options)?;
    let mut publisher = client.publisher::<u8>(NAME)?;
    // Give a subscriber started alongside up to 5 s to attach, so it misses nothing (it is
    // woken by the join, no polling); then publish whoever is there.
    match publisher.wait_for_subscribers(1, Duration::from_secs(5)) {
        Ok(n) => println!("{n} subscriber(s) attached"),
        Err(_) => println!("no subscriber yet; publishing anyway"),
    }
    let started = Instant::now();
    for _ in 0..frames {
        // Loan a free slot and fill it in place: a plain &mut [u8] over shared memory.
        let mut frame = publisher.loan()?;
        let n = frame.number();
        let mut view = frame.view_mut(); // an ndarray view in the stream's shape
        view.fill((n % 251) as u8);
        view[[0, 0]] = (n % 256) as u8;
        let number = frame.publish();
        if number % 100 == 0 {
            println!("published frame {number}");
        }
        // About 100 frames per second, like a camera.
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "published {frames} frames in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn subscribe(client: &Client, lossless: bool) -> Result<(), Box<dyn std::error::Error>> {
    let delivery = if lossless {
        Delivery::Lossless
    } else {
        Delivery::Lossy
    };
    // Started before the publisher? Wait for the stream (the daemon answers when it is
    // created), then take the frames published from now on.
    println!("waiting for stream {NAME:?} (up to 60 s)");
    client.wait_for(NAME, Duration::from_secs(60))?;
    let options = SubscribeOptions::new(delivery).start(StartAt::Next);
    let subscriber = client.subscribe_with::<u8>(NAME, options)?;
    println!("subscribed ({delivery:?}), waiting for frames");
    loop {
        let sample = match subscriber.receive_timeout(Duration::from_secs(5)) {
            Ok(sample) => sample,
            Err(StreamError::ReceiveTimeout { .. }) => {
                println!(
                    "no frame for 5 s; received {}, missed {}",
                    subscriber.received(),
                    subscriber.missed()
                );
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        // Read in place: the slot is not rewritten while we hold the sample.
        let mean = sample.iter().map(|&b| u64::from(b)).sum::<u64>() / sample.len() as u64;
        if sample.number() % 100 == 0 || sample.missed_before() > 0 {
            println!(
                "frame {} (missed {} before it): mean {mean}, latency {} µs",
                sample.number(),
                sample.missed_before(),
                now_ns().saturating_sub(sample.published_ns()) / 1000
            );
        }
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
