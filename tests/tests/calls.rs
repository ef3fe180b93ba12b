//! Request/response across real processes and a real daemon: four requester processes and
//! two server processes, every response to the right requester with the right id and
//! content; a server killed with requests pending fails them with a clear error; and, in
//! one process, the zero-copy loans, the slot limits, a dead requester's slot taken again,
//! and bad input.

mod common;

use std::time::Duration;

use common::{Daemon, Worker, field, pattern};
use mmshare::{ServiceError, ServiceOptions};

const WATCHDOG: Duration = Duration::from_secs(120);

fn socket(daemon: &Daemon) -> String {
    daemon.socket.display().to_string()
}

/// A service of requests and responses of 8 u64 (what the workers use).
fn create(daemon: &Daemon, name: &str, requesters: u32, servers: u32) {
    daemon
        .client()
        .create_service(
            &ServiceOptions::new(name, "<u8", &[8], "<u8", &[8])
                .max_requesters(requesters)
                .max_servers(servers)
                .memory(),
        )
        .unwrap();
}

/// The workers' server answer (tests/src/main.rs `service_answer`).
fn answer(x: u64) -> u64 {
    x.rotate_left(17) ^ 0x5555_5555_5555_5555
}

/// Four requester processes send 10,000 requests each (up to 4 in flight) to two server
/// processes: every requester gets exactly its 10,000 responses, each with the id of a
/// request it sent and the content computed from that request (checked by the worker); the
/// servers answered 40,000 between them, each a share.
#[test]
fn four_requester_processes_and_two_server_processes_get_every_answer_right() {
    const CALLS: u64 = 10_000;
    let daemon = Daemon::start(&[]);
    create(&daemon, "calc", 4, 2);
    let sock = socket(&daemon);
    let mut servers: Vec<Worker> = (0..2)
        .map(|_| Worker::spawn(&["service-serve", &sock, "calc", "serve"]))
        .collect();
    let mut slots: Vec<u64> = servers
        .iter_mut()
        .map(|s| field(&s.expect_line("serving", WATCHDOG), "slot"))
        .collect();
    slots.sort_unstable();
    assert_eq!(slots, [0, 1]);
    let requesters: Vec<Worker> = (0..4)
        .map(|_| Worker::spawn(&["service-call", &sock, "calc", &CALLS.to_string(), "4"]))
        .collect();
    let mut requester_slots = Vec::new();
    for requester in requesters {
        let (status, lines) = requester.finish(WATCHDOG);
        assert!(status.success(), "requester: {status:?} {lines:?}");
        requester_slots.push(field(&lines[0], "slot"));
        assert_eq!(lines.last().unwrap(), &format!("called {CALLS} bad=0"));
    }
    requester_slots.sort_unstable();
    assert_eq!(requester_slots, [0, 1, 2, 3]);
    let mut served = Vec::new();
    for server in servers {
        let (status, lines) = server.finish(WATCHDOG);
        assert!(status.success(), "server: {status:?} {lines:?}");
        let last = lines.last().unwrap();
        served.push(last.trim_start_matches("served ").parse::<u64>().unwrap());
    }
    assert_eq!(served.iter().sum::<u64>(), 4 * CALLS);
    assert!(
        served.iter().all(|&n| n > 0),
        "both servers served: {served:?}"
    );
}

/// A server that took three requests and answered none is SIGKILLed, and a new server takes
/// its slot at once (before the requester looks): the requester's wait still ends with
/// `ServerLost` naming exactly those three ids (the new server never saw them; not a
/// timeout), and the new server answers the next request.
#[test]
fn a_server_killed_with_requests_pending_fails_them_clearly() {
    let daemon = Daemon::start(&[]);
    create(&daemon, "fragile", 2, 1);
    let sock = socket(&daemon);
    let mut stalled = Worker::spawn(&["service-serve", &sock, "fragile", "stall"]);
    stalled.expect_line("serving slot=0", WATCHDOG);
    let client = daemon.client();
    let mut requester = client.requester::<u64, u64>("fragile").unwrap();
    for k in 0..3u64 {
        assert_eq!(requester.send(&[k; 8]).unwrap(), k);
    }
    stalled.expect_line("holding 3", WATCHDOG);
    assert!(matches!(requester.try_receive(), Ok(None)));
    stalled.kill();
    let mut fresh = Worker::spawn(&["service-serve", &sock, "fragile", "serve"]);
    fresh.expect_line("serving slot=0", WATCHDOG);
    let err = requester
        .receive_timeout(Duration::from_secs(60))
        .unwrap_err();
    match &err {
        ServiceError::ServerLost {
            server, pending, ..
        } => {
            assert_eq!((*server, pending.as_slice()), (0, &[0, 1, 2][..]));
        }
        other => panic!("expected ServerLost, got {other}"),
    }
    assert!(err.to_string().contains("send them again"), "{err}");
    assert_eq!(requester.pending(), 0);
    // The new server answers the next request.
    let request: Vec<u64> = (0..8).map(|i| pattern(99, i)).collect();
    let response = requester.call(&request).unwrap();
    assert_eq!(response.id(), 3);
    let expected: Vec<u64> = request.iter().map(|&x| answer(x)).collect();
    assert_eq!(&response[..], &expected[..]);
}

/// In one process: a request loaned and filled in place, a response loaned and filled in
/// place from the request (both zero-copy), correlation ids in order, responses that come
/// in any order, the slot limits, and requests of the wrong length.
#[test]
fn calls_in_place_with_ids_limits_and_bad_input() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    let info = client
        .create_service(
            &ServiceOptions::new("echo", "<u4", &[4], "<u4", &[2])
                .max_requesters(2)
                .max_servers(1)
                .memory(),
        )
        .unwrap();
    assert_eq!((info.max_requesters, info.max_servers), (2, 1));
    assert_eq!(
        (
            info.requests.shape.as_slice(),
            info.responses.shape.as_slice()
        ),
        (&[4][..], &[2][..])
    );
    let server = client.server::<u32, u32>("echo").unwrap();
    let full = client.server::<u32, u32>("echo").unwrap_err();
    assert!(
        matches!(
            full,
            ServiceError::Full {
                what: "servers",
                max: 1,
                ..
            }
        ),
        "{full}"
    );
    let mut a = client.requester::<u32, u32>("echo").unwrap();
    let b = client.requester::<u32, u32>("echo").unwrap();
    assert_eq!((a.slot(), b.slot()), (0, 1));
    assert!(matches!(
        client.requester::<u32, u32>("echo").unwrap_err(),
        ServiceError::Full {
            what: "requesters",
            ..
        }
    ));
    drop(b);
    let _b = client.requester::<u32, u32>("echo").unwrap();
    // Two requests in flight, answered in reverse order: each response says which it is.
    for k in 0..2u32 {
        let mut request = a.loan().unwrap();
        assert_eq!(request.id(), u64::from(k));
        request.copy_from_slice(&[k, k + 1, k + 2, k + 3]);
        request.send().unwrap();
    }
    let first = server.receive_timeout(Duration::from_secs(10)).unwrap();
    let second = server.receive_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((first.id(), second.id(), first.requester_slot()), (0, 1, 0));
    assert_eq!(first.requester_pid(), Some(std::process::id()));
    // One response loan per requester ring at a time: a second is refused, not a panic.
    {
        let _loaned = server.loan_response(&first).unwrap();
        let again = server.loan_response(&second).unwrap_err();
        assert!(
            matches!(
                again,
                ServiceError::Stream(mmshare::StreamError::LoanOutstanding { .. })
            ),
            "{again}"
        );
    }
    for request in [&second, &first] {
        let mut response = server.loan_response(request).unwrap();
        response[0] = request[0] + request[3];
        response[1] = request[1] * request[2];
        response.send().unwrap();
    }
    drop((first, second));
    let got: Vec<(u64, Vec<u32>)> = (0..2)
        .map(|_| {
            let r = a.receive_timeout(Duration::from_secs(10)).unwrap();
            (r.id(), r.to_vec())
        })
        .collect();
    assert_eq!(got, [(1, vec![5, 6]), (0, vec![3, 2])]);
    assert_eq!(a.pending(), 0);
    let wrong = a.send(&[1, 2, 3]).unwrap_err();
    assert!(
        matches!(
            wrong,
            ServiceError::WrongLength {
                given: 3,
                expected: 4,
                ..
            }
        ),
        "{wrong}"
    );
    // A dtype other than the service's is refused at attach.
    assert!(client.requester::<f64, u32>("echo").is_err());
    // Deleting the service deletes its streams.
    client.delete_service("echo").unwrap();
    assert!(client.describe("echo.req.0").is_err());
}

/// A requester process that dies frees its slot for the next one, and a response meant for
/// it is never delivered to the requester that takes its slot.
#[test]
fn a_dead_requesters_slot_is_taken_again_and_its_answers_go_nowhere() {
    let daemon = Daemon::start(&[]);
    create(&daemon, "once", 1, 1);
    let sock = socket(&daemon);
    let client = daemon.client();
    let server = client.server::<u64, u64>("once").unwrap();
    let mut doomed = Worker::spawn(&["service-call", &sock, "once", "1", "1"]);
    doomed.expect_line("requester slot=0", WATCHDOG);
    let request = server.receive_timeout(Duration::from_secs(30)).unwrap();
    doomed.kill();
    // The slot is free again (its record's holder is gone: the kernel's word).
    let mut heir = client.requester::<u64, u64>("once").unwrap();
    assert_eq!(heir.slot(), 0);
    let id = heir.send(&[1; 8]).unwrap();
    assert_eq!(
        id, 0,
        "ids are the heir's own: the same id as the dead one's request"
    );
    // The dead one's answer (id 0 too) reaches the slot's ring first; the heir must not take
    // it for the answer to its own request 0.
    server.respond(&request, &[7; 8]).unwrap();
    drop(request);
    server
        .serve_one(Duration::from_secs(10), |req, resp| {
            resp.copy_from_slice(&req[..]);
        })
        .unwrap();
    let response = heir.receive_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((response.id(), &response[..]), (0, &[1u64; 8][..]));
}

/// The cost of a call in system calls: none when both sides busy-poll (no `FUTEX_WAIT`, no
/// `FUTEX_WAKE` on either side), and one wake-up each way when both sleep (each side's
/// publish wakes the other, once). Counted per thread by the library, never timed.
#[test]
fn a_call_makes_no_system_call_when_both_poll_and_one_wake_each_way_when_both_sleep() {
    use mmshare::internal::{futex_wait_calls, futex_wake_calls};
    const CALLS: u64 = 300;
    let daemon = Daemon::start(&[]);
    create(&daemon, "cost", 1, 1);
    let client = daemon.client();
    let server = client.server::<u64, u64>("cost").unwrap();
    let mut requester = client.requester::<u64, u64>("cost").unwrap();
    // Busy-polling on both sides.
    let serving = std::thread::spawn(move || {
        let before = (futex_wake_calls(), futex_wait_calls().0);
        let mut answered = 0;
        while answered < CALLS {
            if let Some(request) = server.try_receive().unwrap() {
                let value = request[0];
                server.respond(&request, &[value + 1; 8]).unwrap();
                answered += 1;
            }
        }
        let after = (futex_wake_calls(), futex_wait_calls().0);
        (server, (after.0 - before.0, after.1 - before.1))
    });
    let before = (futex_wake_calls(), futex_wait_calls().0);
    for k in 0..CALLS {
        requester.send(&[k; 8]).unwrap();
        let response = loop {
            if let Some(r) = requester.try_receive().unwrap() {
                break r;
            }
        };
        assert_eq!(response[0], k + 1);
    }
    let polled = (
        futex_wake_calls() - before.0,
        futex_wait_calls().0 - before.1,
    );
    let (server, server_polled) = serving.join().unwrap();
    assert_eq!(polled, (0, 0), "the requester made no futex call");
    assert_eq!(server_polled, (0, 0), "the server made no futex call");
    // Both asleep between calls: the request wakes the server, the response the requester.
    let serving = std::thread::spawn(move || {
        let before = futex_wake_calls();
        for _ in 0..20 {
            let request = server.receive_timeout(Duration::from_secs(30)).unwrap();
            let value = request[0];
            // Long enough for the requester to be asleep in its receive.
            std::thread::sleep(Duration::from_millis(20));
            server.respond(&request, &[value + 1; 8]).unwrap();
        }
        futex_wake_calls() - before
    });
    let before = futex_wake_calls();
    for k in 0..20u64 {
        // Long enough for the server to be asleep again (its backoff sleeps after ~1 ms).
        std::thread::sleep(Duration::from_millis(20));
        requester.send(&[k; 8]).unwrap();
        let response = requester.receive_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(response[0], k + 1);
    }
    let requester_wakes = futex_wake_calls() - before;
    let server_wakes = serving.join().unwrap();
    // At most one each way per call (exactly one when the other side was asleep, which the
    // pauses make the rule; a side still awake when the message came needs none).
    assert!(
        (1..=20).contains(&requester_wakes),
        "at most one wake per request, of the sleeping server: {requester_wakes}"
    );
    assert!(
        (1..=20).contains(&server_wakes),
        "at most one wake per response, of the sleeping requester: {server_wakes}"
    );
}
