//! A tokio service that serves the newest frame of a stream over HTTP, with no thread per
//! waiter: one task awaits frames (`Subscriber::recv`, lossy, so a slow service never holds
//! the camera back) and keeps a summary of the newest in a `watch` channel; each HTTP
//! connection is a task that answers with it.
//!
//! Terminal 1: the daemon, `cargo run --release -p mmshare-daemon --bin mmshared`.
//! Terminal 2: the camera of the `stream` example (480×640 `u8` frames, about 100 a second):
//!     `cargo run --release -p mmshare --example stream -- publish`
//! Terminal 3: this service: `cargo run --release -p mmshare --features tokio --example
//!     serve_latest -- 127.0.0.1:8080`, then `curl -s localhost:8080` from anywhere prints
//!     the newest frame's number, age and mean, and how many frames the service skipped.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mmshare::{Client, Delivery};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAME: &str = "demo.camera";

#[derive(Clone, Debug, Default)]
struct Newest {
    number: u64,
    published_ns: u64,
    mean: f64,
    missed: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let client = Client::connect_default()?;
    let mut sub = client.subscribe::<u8>(NAME, Delivery::Lossy)?;
    let (tx, rx) = tokio::sync::watch::channel(None::<Newest>);

    // The one task that waits for frames: it sleeps (no thread blocked) until a publish.
    tokio::spawn(async move {
        loop {
            let sample = match sub.recv().await {
                Ok(sample) => sample,
                Err(e) => {
                    eprintln!("serve_latest: {e}");
                    std::process::exit(1);
                }
            };
            let sum: u64 = sample.iter().map(|&b| u64::from(b)).sum();
            let newest = Newest {
                number: sample.number(),
                published_ns: sample.published_ns(),
                mean: sum as f64 / sample.len() as f64,
                missed: 0,
            };
            drop(sample); // released before the next recv
            let _ = tx.send(Some(Newest {
                missed: sub.missed(),
                ..newest
            }));
        }
    });

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("serving the newest frame of {NAME} on http://{addr}/");
    loop {
        let (mut conn, _) = listener.accept().await?;
        let rx = rx.clone();
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.read(&mut request)).await;
            let body = match rx.borrow().clone() {
                None => format!("no frame of {NAME} yet: is its publisher running?\n"),
                Some(n) => {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64);
                    format!(
                        "frame {} of {NAME}: published {:.1} ms ago, mean {:.2}; {} frames skipped so far\n",
                        n.number,
                        now.saturating_sub(n.published_ns) as f64 / 1e6,
                        n.mean,
                        n.missed
                    )
                }
            };
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
        });
    }
}
