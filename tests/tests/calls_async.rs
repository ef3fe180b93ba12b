//! Request/response with async Rust: a server and a requester, each on a current-thread tokio
//! runtime of its own thread, awaiting each other's publishes; a requester awaiting a server that a
//! worker process runs and that is SIGKILLed with requests pending (the await ends with
//! `ServerLost`); and a loan awaited until a server joins. One file apart from calls.rs: the
//! waiter threads are global to the process.

mod common;

use std::time::Duration;

use common::{Daemon, Worker};
use mmshare::{ServiceError, ServiceOptions};

const WATCHDOG: Duration = Duration::from_secs(120);

fn create(daemon: &Daemon, name: &str) {
    daemon
        .client()
        .create_service(
            &ServiceOptions::new(name, "<u8", &[8], "<u8", &[8])
                .max_requesters(2)
                .max_servers(1)
                .memory(),
        )
        .unwrap();
}

#[test]
fn async_requester_and_server_tasks_call_each_other() {
    const CALLS: u64 = 2_000;
    let daemon = Daemon::start(&[]);
    create(&daemon, "aio");
    let client = daemon.client();
    let server = client.server::<u64, u64>("aio").unwrap();
    let mut requester = client.requester::<u64, u64>("aio").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // The real exchange: the server answers from its own thread's runtime while the requester
    // awaits on this one.
    let handle = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async move {
            for _ in 0..CALLS {
                let request = server.recv().await.unwrap();
                let mut response = server_loan(&server, &request);
                for (out, &x) in response.iter_mut().zip(request.iter()) {
                    *out = x * 2 + 1;
                }
                response.send().unwrap();
            }
        });
    });
    runtime.block_on(async {
        for k in 0..CALLS {
            let mut request = requester.loan_async().await.unwrap();
            request.fill(k);
            let id = request.send().unwrap();
            assert_eq!(id, k);
            let response = tokio::time::timeout(WATCHDOG, requester.recv())
                .await
                .expect("watchdog")
                .unwrap();
            assert_eq!((response.id(), response[7]), (k, k * 2 + 1));
        }
    });
    handle.join().unwrap();
}

/// The server's response loan, from a request it holds (a plain loan: the requester's ring
/// has room).
fn server_loan<'a>(
    server: &'a mmshare::Server<u64, u64>,
    request: &mmshare::Request<'_, u64>,
) -> mmshare::ResponseMut<'a, u64> {
    server.loan_response(request).unwrap()
}

#[test]
fn an_awaited_response_from_a_server_that_dies_ends_with_server_lost() {
    let daemon = Daemon::start(&[]);
    create(&daemon, "doomed");
    let sock = daemon.socket.display().to_string();
    let client = daemon.client();
    let mut requester = client.requester::<u64, u64>("doomed").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // No server yet: the loan waits for one to join.
    let mut stalled = None;
    runtime.block_on(async {
        let joined = async {
            let mut w = Worker::spawn(&["service-serve", &sock, "doomed", "stall"]);
            w.expect_line("serving slot=0", WATCHDOG);
            stalled = Some(w);
        };
        let (loaned, ()) = tokio::join!(
            tokio::time::timeout(WATCHDOG, requester.loan_async()),
            async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                joined.await;
            }
        );
        let request = loaned.expect("watchdog").unwrap();
        assert_eq!(request.server(), 0);
        request.send().unwrap();
    });
    let mut stalled = stalled.unwrap();
    stalled.expect_line("holding 1", WATCHDOG);
    // Killed from another thread while the requester's task awaits, woken by nothing of
    // this runtime's: the waiter thread's periodic look (once a second) finds it.
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        stalled.kill();
    });
    let err = runtime.block_on(async {
        tokio::time::timeout(WATCHDOG, requester.recv())
            .await
            .expect("watchdog")
            .unwrap_err()
    });
    killer.join().unwrap();
    assert!(
        matches!(&err, ServiceError::ServerLost { server: 0, pending, .. } if pending == &[0]),
        "{err}"
    );
}
