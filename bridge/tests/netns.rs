//! The bridge between two hosts made of network namespaces (tests/hosts): every frame of a
//! lossless stream (small, large, mixed, and behind a slow local subscriber), exact counts
//! for a lossy one, a lossy link, bridges killed and restarted, the link taken down and up,
//! and an array's newest version. Root only; each test says "skipped" and passes otherwise.

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

/// A stream `name` of `(slots, history)` on host A, exported (`export` is `--export` or
/// `--export-lossy`) to host B and imported there, and a lossless subscriber to it on host B;
/// returns when host A's exporter has subscribed.
fn carried(
    hosts: &mut Hosts,
    name: &str,
    (slots, history): (u32, u32),
    export: &str,
    config: Option<&str>,
) -> (Client, Subscriber<u64>) {
    let a = hosts.a.client();
    make_stream(&a, name, slots, history);
    bridge_pair(hosts, name, export, config);
    let sub = subscribe(&hosts.b.client(), name, Delivery::Lossless);
    exporter_ready(&a, name);
    (a, sub)
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
    let (_, sub) = carried(&mut hosts, "cam", (64, 0), "--export", None);
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
    // The same counters on each host's metrics endpoint and in `mmshare top`.
    let a_metrics = hosts.a.metrics();
    let b_metrics = hosts.b.metrics();
    for (text, direction) in [(&a_metrics, "out"), (&b_metrics, "in")] {
        let line = format!(
            "mmshare_bridge_frames_total{{object=\"cam\",direction=\"{direction}\"}} 10000"
        );
        assert!(text.contains(&line), "{line} not in\n{text}");
        assert!(text.contains(&format!(
            "mmshare_bridge_lost_frames_total{{object=\"cam\",direction=\"{direction}\"}} 0"
        )));
    }
    assert!(b_metrics.contains(&format!(
        "mmshare_bridge_copied_bytes_total{{object=\"cam\",direction=\"in\"}} {}",
        10_000 * (frame_bytes + 8)
    )));
    let top = hosts.b.top();
    let rows = top.as_array().expect("a list");
    let bridged: Vec<_> = rows.iter().filter(|r| r["kind"] == "bridged").collect();
    assert_eq!(bridged.len(), 1, "{top}");
    assert_eq!(bridged[0]["object"], "cam");
    assert_eq!(bridged[0]["direction"], "in");
    assert_eq!(bridged[0]["frames"], 10_000);
    assert_eq!(bridged[0]["connected"], true);
    assert!(
        rows.iter().all(|r| !r["name"]
            .as_str()
            .unwrap_or("")
            .starts_with("mmshare-bridge.")),
        "the counter arrays are not listed as arrays: {top}"
    );
}

/// Frames of 160 KB, past what the importer writes on Zenoh's receiving thread: they are
/// handed to the importer's own thread, and each one is a Zenoh message that its transport
/// cuts into fragments. Every frame arrives whole, once, in order, its header with it.
#[test]
fn frames_larger_than_a_zenoh_batch_arrive_whole_in_order_exactly_once() {
    if !hosts::can_run("large_frames") {
        return;
    }
    const LEN: u64 = 20_000;
    fn big(i: u64) -> Vec<u64> {
        (0..LEN).map(|k| i * 1_000_000 + k).collect()
    }
    let options = StreamOptions::new("big", "<u8", &[LEN])
        .slots(16)
        .header("<u8");
    carry_whole(&mut Hosts::new(), ("big", &options), 300, big);
}

/// Publishes frames `data(0..n)` on host A, each with its number as header, into a new stream
/// of `options` exported to host B; checks on host B that each arrives whole, once and in
/// order, and that the importer lost, duplicated and dropped none and copied each byte once.
fn carry_whole(
    hosts: &mut Hosts,
    (name, options): (&str, &StreamOptions),
    n: u64,
    data: fn(u64) -> Vec<u64>,
) {
    let a = hosts.a.client();
    a.create_stream(options)
        .expect("create the stream on host A");
    bridge_pair(hosts, name, "--export", None);
    let sub = subscribe(&hosts.b.client(), name, Delivery::Lossless);
    exporter_ready(&a, name);
    let publishing = std::thread::spawn({
        let (socket, name) = (hosts.a.socket.clone(), name.to_owned());
        move || {
            let client = Client::connect(socket).unwrap();
            let mut publisher = client.publisher::<u64>(&name).expect("publisher on host A");
            for i in 0..n {
                publisher.send_with_header(&data(i), &i).expect("publish");
            }
        }
    });
    let mut bytes = 0;
    for i in 0..n {
        let sample = sub
            .receive_timeout(WAIT)
            .unwrap_or_else(|e| panic!("frame {i} on host B: {e}"));
        assert_eq!(
            *sample.header::<u64>().expect("header"),
            i,
            "frame {i} is not the next to arrive"
        );
        assert!(sample[..] == data(i)[..], "frame {i} arrived changed");
        bytes += sample.len() as u64 * 8 + 8;
    }
    publishing.join().unwrap();
    let inn = eventually("the importer's counters", WAIT, || {
        let w = hosts.b.stats("in", name);
        (w[2] == n).then_some(w)
    });
    assert_eq!(inn[10], bytes, "the importer copied each byte once");
    assert_eq!(
        (inn[4], inn[6], inn[13]),
        (0, 0, 0),
        "lost, duplicates, dropped"
    );
}

/// A local subscriber on host B slower than the link, now and then: the importer, which writes
/// small frames on Zenoh's receiving thread, finds its ring full in the middle of a message of
/// several frames. It must not wait there: the rest of that message, and the stream's next
/// messages, go to its own thread, which waits for the slots. Every frame arrives once, in
/// order, none counted lost, duplicated or dropped.
#[test]
fn a_slow_local_subscriber_gets_every_frame_once_in_order() {
    if !hosts::can_run("slow_subscriber") {
        return;
    }
    const N: u64 = 5_000;
    let mut hosts = Hosts::new();
    // A ring of 16: the exporter lends up to 7 frames, several to a message.
    let (_, sub) = carried(&mut hosts, "slow", (16, 0), "--export", None);
    let publishing = std::thread::spawn({
        let socket = hosts.a.socket.clone();
        move || publish(&Client::connect(socket).unwrap(), "slow", 0..N, None)
    });
    let mut got = Vec::with_capacity(N as usize);
    while got.len() < N as usize {
        got.extend(receive(&sub, 100));
        // The importer's ring (16 frames) fills while this sleeps.
        std::thread::sleep(Duration::from_millis(3));
    }
    publishing.join().unwrap();
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    assert_eq!(sub.missed(), 0);
    let inn = eventually("the importer's counters", WAIT, || {
        let w = hosts.b.stats("in", "slow");
        (w[2] == N).then_some(w)
    });
    assert_eq!(
        (inn[4], inn[6], inn[13]),
        (0, 0, 0),
        "lost, duplicates, dropped"
    );
    assert_eq!(
        inn[10],
        N * ((ROW * 8) as u64 + 8),
        "the importer copied each byte once"
    );
}

/// A stream whose frames vary in size: every even frame is 100 KiB (a message the importer
/// hands to its own thread), every odd one a row of 64 bytes (a message small enough for
/// Zenoh's receiving thread), published as fast as they go. A small message that arrives
/// while the large one before it still waits for the importer's thread must wait too: every
/// frame arrives whole, once, in order.
#[test]
fn small_frames_never_overtake_a_large_one_waiting_for_the_importer() {
    if !hosts::can_run("order_guard") {
        return;
    }
    const BIG_ROWS: u64 = 1_600;
    fn mixed(i: u64) -> Vec<u64> {
        let rows = if i.is_multiple_of(2) { BIG_ROWS } else { 1 };
        (0..rows * 8).map(|k| i * 1_000_000 + k).collect()
    }
    let options = StreamOptions::new("mixed", "<u8", &[BIG_ROWS, 8])
        .variable(true)
        .slots(16)
        .header("<u8");
    carry_whole(&mut Hosts::new(), ("mixed", &options), 2_000, mixed);
}

/// Publishes `range` on host A from a thread, paced (a pause every few frames) so that the
/// test can act mid-stream.
fn publish_paced(
    hosts: &Hosts,
    name: &str,
    range: std::ops::Range<u64>,
    pause: Duration,
) -> std::thread::JoinHandle<()> {
    let socket = hosts.a.socket.clone();
    let name = name.to_owned();
    std::thread::spawn(move || {
        publish(
            &Client::connect(socket).unwrap(),
            &name,
            range,
            Some((5, pause)),
        );
    })
}

/// Receives on host B until frame `last` of host A arrives.
fn receive_until(sub: &Subscriber<u64>, last: u64) -> Vec<u64> {
    let mut got = Vec::new();
    loop {
        let i = receive(sub, 1)[0];
        got.push(i);
        if i == last {
            return got;
        }
    }
}

#[test]
fn a_lossy_export_counts_every_frame_it_does_not_deliver() {
    if !hosts::can_run("lossy_counts") {
        return;
    }
    let mut hosts = Hosts::new();
    // Lossless on host B: whatever the importer publishes, this subscriber gets.
    let (a, sub) = carried(&mut hosts, "fast", (16, 0), "--export-lossy", None);
    const LAST: u64 = 20_000;
    // Host B reads while host A publishes. A subscriber that read nothing yet would keep the
    // importer waiting for a slot and the link full, and the frame after the pause could be
    // dropped too.
    let reading = std::thread::spawn(move || receive_until(&sub, LAST));
    publish(&a, "fast", 0..LAST, None);
    // Whatever was dropped at the end, a frame sent after a pause arrives and closes the count.
    std::thread::sleep(Duration::from_millis(500));
    publish(&a, "fast", LAST..LAST + 1, None);
    let got = reading.join().expect("host B's reader");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "frames out of order");
    let out = eventually("the exporter's counters", WAIT, || {
        let w = hosts.a.stats("out", "fast");
        (w[9] == LAST + 1).then_some(w)
    });
    let inn = eventually("the importer's counters", WAIT, || {
        let w = hosts.b.stats("in", "fast");
        (w[9] == LAST + 1).then_some(w)
    });
    // Every frame is either carried or counted lost, on each side.
    assert_eq!(
        out[2] + out[4],
        LAST + 1,
        "exporter: carried {} + lost {}",
        out[2],
        out[4]
    );
    assert_eq!(
        inn[2],
        got.len() as u64,
        "importer: frames published on host B"
    );
    assert_eq!(
        inn[2] + inn[4],
        LAST + 1 - got[0],
        "importer: carried {} + lost {} from frame {}",
        inn[2],
        inn[4],
        got[0]
    );
    eprintln!(
        "lossy: {} of {} frames delivered; exporter lost {}, importer lost {}",
        got.len(),
        LAST + 1,
        out[4],
        inn[4]
    );
}

/// Drops 1 % of the packets leaving each end of the link (nftables, `numgen random`).
fn drop_one_percent(hosts: &Hosts) -> bool {
    if std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_err()
    {
        return false;
    }
    for host in [&hosts.a, &hosts.b] {
        host.exec(&["nft", "add", "table", "inet", "lossy"]);
        host.exec(&[
            "nft",
            "add",
            "chain",
            "inet",
            "lossy",
            "out",
            "{ type filter hook output priority 0 ; }",
        ]);
        host.exec(&[
            "nft", "add", "rule", "inet", "lossy", "out", "oifname", &host.veth, "numgen",
            "random", "mod", "100", "<", "1", "drop",
        ]);
    }
    true
}

#[test]
fn a_lossless_stream_crosses_a_link_that_drops_one_packet_in_a_hundred() {
    if !hosts::can_run("one_percent_loss") {
        return;
    }
    let mut hosts = Hosts::new();
    assert!(
        drop_one_percent(&hosts),
        "no `nft` command: install Debian's nftables (./scripts/test does, as root)"
    );
    let (_, sub) = carried(&mut hosts, "cam", (64, 0), "--export", None);
    let publishing = std::thread::spawn({
        let socket = hosts.a.socket.clone();
        move || publish(&Client::connect(socket).unwrap(), "cam", 0..10_000, None)
    });
    let got = receive(&sub, 10_000);
    publishing.join().unwrap();
    assert_eq!(got, (0..10_000).collect::<Vec<_>>());
    let dropped = String::from_utf8_lossy(
        &std::process::Command::new("ip")
            .args(["netns", "exec", &hosts.a.ns, "nft", "list", "ruleset"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    eprintln!("{dropped}");
}

/// Checks that frames 0..10,000 of host A arrived on host B once each, in order, none
/// counted lost; returns host B's counters.
fn every_frame_once(hosts: &Hosts, got: &[u64]) -> Vec<u64> {
    assert_eq!(
        got,
        (0..10_000).collect::<Vec<_>>(),
        "every frame once, in order"
    );
    let inn = hosts.b.stats("in", "cam");
    assert_eq!(inn[4], 0, "frames lost");
    inn
}

/// A stream with a long history: frames a bridge missed while it was down are still offered.
fn restart_test(which: char) {
    let mut hosts = Hosts::new();
    // Host B's bridge connects again within half a second (Zenoh's own default backs off to
    // several seconds, longer than the history lasts here).
    let config = hosts.short_lease_config();
    let (_, sub) = carried(&mut hosts, "cam", (4096, 4000), "--export", Some(&config));
    // About 1,000 frames a second: the 4,000 frames of history last 4 s.
    let publishing = publish_paced(&hosts, "cam", 0..10_000, Duration::from_millis(5));
    let mut got = receive(&sub, 2_000);
    let host = if which == 'A' {
        &mut hosts.a
    } else {
        &mut hosts.b
    };
    host.kill_bridge();
    std::thread::sleep(Duration::from_millis(300));
    if which == 'A' {
        hosts.a.start_bridge(
            "hostA",
            &[
                "--export",
                "cam",
                "--listen",
                "tcp/10.77.0.1:7447",
                "--config",
                &config,
            ],
        );
    } else {
        hosts.b.start_bridge(
            "hostB",
            &[
                "--import",
                "hostA/*",
                "--connect",
                "tcp/10.77.0.1:7447",
                "--config",
                &config,
            ],
        );
    }
    got.extend(receive(&sub, 8_000));
    publishing.join().unwrap();
    let inn = every_frame_once(&hosts, &got);
    assert!(inn[7] >= 1, "the importer asked to resume: {inn:?}");
}

#[test]
fn the_importing_bridge_killed_and_restarted_resumes_where_it_stopped() {
    if hosts::can_run("importer_restart") {
        restart_test('B');
    }
}

#[test]
fn the_exporting_bridge_killed_and_restarted_resumes_where_it_stopped() {
    if hosts::can_run("exporter_restart") {
        restart_test('A');
    }
}

#[test]
fn frames_the_source_no_longer_has_are_exactly_the_ones_reported_lost() {
    if !hosts::can_run("reported_lost") {
        return;
    }
    let mut hosts = Hosts::new();
    let (a, sub) = carried(&mut hosts, "cam", (16, 0), "--export", None);
    publish(&a, "cam", 0..1_000, None);
    let mut got = receive(&sub, 1_000);
    hosts.b.kill_bridge();
    // While host B's bridge is down, 1,000 frames go by a ring of 16.
    publish(&a, "cam", 1_000..2_000, None);
    hosts.b.start_bridge(
        "hostB",
        &["--import", "hostA/*", "--connect", "tcp/10.77.0.1:7447"],
    );
    exporter_ready(&a, "cam");
    publish(&a, "cam", 2_000..3_000, None);
    got.extend(receive_until(&sub, 2_999));
    // What arrived: 0..1000, then from some frame g on, everything; g - 1000 counted lost.
    let g = got[1_000];
    assert!((1_000..3_000).contains(&g), "resumed at {g}");
    let expected: Vec<u64> = (0..1_000).chain(g..3_000).collect();
    assert_eq!(got, expected);
    let inn = eventually("the importer's counters", WAIT, || {
        let w = hosts.b.stats("in", "cam");
        (w[9] == 3_000).then_some(w)
    });
    assert_eq!(inn[4], g - 1_000, "frames reported lost: {inn:?}");
    eprintln!("lost frames 1000..{g}, as reported");
}

#[test]
fn a_stream_carries_on_after_the_link_goes_down_and_up() {
    if !hosts::can_run("link_down_up") {
        return;
    }
    let mut hosts = Hosts::new();
    let config = hosts.short_lease_config();
    let (_, sub) = carried(&mut hosts, "cam", (4096, 4000), "--export", Some(&config));
    // About 500 frames a second: the 4,000 frames of history last 8 s, more than the link
    // is down, the lease runs out and host B's bridge takes to connect again.
    let publishing = publish_paced(&hosts, "cam", 0..10_000, Duration::from_millis(10));
    let mut got = receive(&sub, 2_000);
    hosts.link(false);
    // Longer than the lease: both sides close the session; host B's bridge connects again.
    std::thread::sleep(Duration::from_millis(2500));
    hosts.link(true);
    got.extend(receive(&sub, 8_000));
    publishing.join().unwrap();
    let inn = every_frame_once(&hosts, &got);
    assert!(inn[5] >= 1, "a reconnect was counted: {inn:?}");
}

#[test]
fn an_arrays_newest_version_reaches_the_other_host() {
    if !hosts::can_run("array_newest") {
        return;
    }
    let mut hosts = Hosts::new();
    let a = hosts.a.client();
    let array = a
        .create_array::<f64>("state", &[256, 256])
        .expect("array on host A");
    array.write_all(&vec![1.0; 256 * 256]).unwrap();
    // Written before either bridge starts: host B gets it by asking for the newest version.
    hosts.a.start_bridge(
        "hostA",
        &["--export", "state", "--listen", "tcp/10.77.0.1:7447"],
    );
    hosts.b.start_bridge(
        "hostB",
        &["--import", "hostA/*", "--connect", "tcp/10.77.0.1:7447"],
    );
    let b = hosts.b.client();
    let first = eventually("the array on host B", WAIT, || {
        let local = b.open::<f64>("state", mmshare::Access::Read).ok()?;
        let data = local.read_to_vec().ok()?;
        (data[0] == 1.0).then_some(data)
    });
    assert!(first.iter().all(|&x| x == 1.0));
    // Fifty versions in a burst: the last one arrives (earlier ones may be coalesced).
    for v in 2..=51 {
        array.write_all(&vec![v as f64; 256 * 256]).unwrap();
    }
    let last = eventually("version 51's data on host B", WAIT, || {
        let local = b.open::<f64>("state", mmshare::Access::Read).ok()?;
        let data = local.read_to_vec().ok()?;
        (data[0] == 51.0).then_some(data)
    });
    assert!(last.iter().all(|&x| x == 51.0), "a torn or mixed version");
    let inn = eventually("the importer's counters", WAIT, || {
        let w = hosts.b.stats("in", "state");
        (w[9] == 52).then_some(w)
    });
    assert!(inn[2] >= 2 && inn[2] <= 51, "versions written: {inn:?}");
}

#[test]
fn a_stream_deleted_and_made_again_is_imported_afresh() {
    if !hosts::can_run("made_again") {
        return;
    }
    let mut hosts = Hosts::new();
    let (a, sub) = carried(&mut hosts, "cam", (64, 0), "--export", None);
    publish(&a, "cam", 0..500, None);
    let mut got = receive(&sub, 500);
    // The same name, another stream: numbered from 0 again.
    a.delete("cam").expect("delete on host A");
    make_stream(&a, "cam", 64, 0);
    exporter_ready(&a, "cam");
    publish(&a, "cam", 0..500, None);
    got.extend(receive(&sub, 500));
    let expected: Vec<u64> = (0..500).chain(0..500).collect();
    assert_eq!(got, expected);
    assert!(
        hosts.b.log().contains("was made again"),
        "{}",
        hosts.b.log()
    );
}
