//! The bridge between two hosts made of network namespaces (tests/hosts): every frame of a
//! lossless stream, exact counts for a lossy one, a lossy link, bridges killed and restarted,
//! the link taken down and up, and an array's newest version. Root only; each test says
//! "skipped" and passes otherwise.

mod hosts;

use std::time::Duration;

use hosts::{Hosts, eventually};
use mmshare::{Client, Delivery, StartAt, StreamOptions, SubscribeOptions, Subscriber};

const ROW: usize = 64;
const WAIT: Duration = Duration::from_secs(60);

/// Frame `i`: its elements say which frame it is, and its per-frame header too.
fn frame(i: u64) -> Vec<u64> {
    (0..ROW as u64).map(|k| i * 1000 + k).collect()
}

fn make_stream(client: &Client, name: &str, slots: u32, history: u32) {
    client
        .create_stream(
            &StreamOptions::new(name, "<u8", &[ROW as u64])
                .slots(slots)
                .history(history)
                .header("<u8"),
        )
        .expect("create the stream on host A");
}

/// Host A exports `name`, host B imports it; returns when B has the stream and A's exporter
/// has subscribed (a Zenoh subscriber on B matches it).
fn bridge_pair(hosts: &mut Hosts, name: &str, export: &str, config: Option<&str>) {
    let mut a_args = vec![export, name, "--listen", "tcp/10.77.0.1:7447"];
    let mut b_args = vec!["--import", "hostA/*", "--connect", "tcp/10.77.0.1:7447"];
    if let Some(c) = config {
        a_args.extend(["--config", c]);
        b_args.extend(["--config", c]);
    }
    hosts.a.start_bridge("hostA", &a_args);
    hosts.b.start_bridge("hostB", &b_args);
    let b = hosts.b.client();
    eventually("the imported stream on host B", WAIT, || {
        b.wait_for(name, Duration::from_millis(200)).ok()
    });
}

/// Publishes frames `range` on host A, each with its number as header.
fn publish(
    client: &Client,
    name: &str,
    range: std::ops::Range<u64>,
    pause_every: Option<(u64, Duration)>,
) {
    let mut publisher = client.publisher::<u64>(name).expect("publisher on host A");
    for i in range {
        publisher.send_with_header(&frame(i), &i).expect("publish");
        if let Some((every, pause)) = pause_every
            && i % every == every - 1
        {
            std::thread::sleep(pause);
        }
    }
}

/// Receives `n` frames on host B, checking each one's bytes and header; returns the frame
/// numbers of host A that arrived, in order.
fn receive(sub: &Subscriber<u64>, n: usize) -> Vec<u64> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let sample = sub
            .receive_timeout(WAIT)
            .unwrap_or_else(|e| panic!("frame {} of {n} on host B: {e}", got.len()));
        let i = sample[0] / 1000;
        assert_eq!(&sample[..], &frame(i)[..], "frame {i} arrived changed");
        assert_eq!(
            *sample.header::<u64>().expect("header"),
            i,
            "frame {i}'s header"
        );
        got.push(i);
    }
    got
}

fn subscribe(client: &Client, name: &str, delivery: Delivery) -> Subscriber<u64> {
    client
        .subscribe_with::<u64>(
            name,
            SubscribeOptions::new(delivery).start(StartAt::Frame(0)),
        )
        .expect("subscribe on host B")
}

/// Waits until host A's exporter is subscribed to `name`.
fn exporter_ready(client: &Client, name: &str) {
    let publisher = client.publisher::<u64>(name).expect("publisher on host A");
    publisher
        .wait_for_subscribers(1, WAIT)
        .expect("the exporting bridge subscribes");
}

#[test]
fn ten_thousand_frames_arrive_in_order_exactly_once() {
    if !hosts::can_run("ten_thousand_frames") {
        return;
    }
    let mut hosts = Hosts::new();
    let a = hosts.a.client();
    make_stream(&a, "cam", 64, 0);
    bridge_pair(&mut hosts, "cam", "--export", None);
    let b = hosts.b.client();
    let sub = subscribe(&b, "cam", Delivery::Lossless);
    exporter_ready(&a, "cam");
    let publishing = std::thread::spawn({
        let socket = hosts.a.socket.clone();
        move || publish(&Client::connect(socket).unwrap(), "cam", 0..10_000, None)
    });
    let got = receive(&sub, 10_000);
    publishing.join().unwrap();
    assert_eq!(got, (0..10_000).collect::<Vec<_>>());
    assert_eq!(sub.missed(), 0);
    // The counters, and the copies each side made: the exporter none of the frame bytes
    // (only the 8-byte headers), the importer each byte once (into the slot).
    let out = eventually("the exporter's counters", WAIT, || {
        let w = hosts.a.stats("out", "cam");
        (w[2] == 10_000).then_some(w)
    });
    let inn = eventually("the importer's counters", WAIT, || {
        let w = hosts.b.stats("in", "cam");
        (w[2] == 10_000).then_some(w)
    });
    let frame_bytes = (ROW * 8) as u64;
    assert_eq!(out[3], 10_000 * (frame_bytes + 8), "bytes sent");
    assert_eq!(out[10], 10_000 * 8, "the exporter copied the headers only");
    assert_eq!(inn[3], 10_000 * (frame_bytes + 8), "bytes received");
    assert_eq!(
        inn[10],
        10_000 * (frame_bytes + 8),
        "the importer copied each byte once"
    );
    assert_eq!(
        (out[4], inn[4], inn[6], inn[13]),
        (0, 0, 0, 0),
        "lost, duplicates, dropped"
    );
}
