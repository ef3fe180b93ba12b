//! A frozen daemon (SIGSTOP) never stalls a client for longer than its timeout: a request on
//! an open connection and a new connection both end with `ClientError::Timeout` naming the
//! socket and the wait, and once the daemon runs again the same client object works (it dials
//! again). The watchdogs here are only failure conditions; nothing is judged by a clock.

mod common;

use std::process::Command;
use std::time::Duration;

use common::Daemon;
use mmshare::{Client, ClientError, ConnectOptions};

const WAIT: Duration = Duration::from_millis(300);

fn expect_timeout<T: std::fmt::Debug>(
    result: Result<T, ClientError>,
    d: &Daemon,
    doing: &str,
) -> String {
    match result {
        Err(e @ ClientError::Timeout { .. }) => {
            let message = e.to_string();
            let socket = d.socket.display().to_string();
            assert!(
                message.contains(&socket) && message.contains(&format!("{WAIT:?}")),
                "{doing}: the message names neither the socket nor the wait: {message}"
            );
            message
        }
        other => panic!("{doing} against a stopped daemon: {other:?}"),
    }
}

#[test]
fn a_stopped_daemon_times_requests_and_connects_out_and_the_client_recovers() {
    let d = Daemon::start(&[]);
    let client = Client::connect_with(&ConnectOptions::new(&d.socket).timeout(WAIT)).unwrap();
    assert!(client.list("").unwrap().is_empty());
    d.freeze();
    let message = expect_timeout(client.stat("x"), &d, "a request");
    assert!(message.contains("answer Stat"), "{message}");
    let fresh = Client::connect_with(&ConnectOptions::new(&d.socket).timeout(WAIT));
    expect_timeout(fresh, &d, "a new connection");
    d.thaw();
    // The same client object: its timed-out connection was dropped, the next request dials.
    assert!(client.list("").unwrap().is_empty());
}

/// The CLI's `--daemon-timeout`, and `$MMSHARE_TIMEOUT` under it: a clear error, and the exit
/// status of a timeout (5, listed in `mmshare --help`).
#[test]
fn the_cli_gives_up_on_a_stopped_daemon_after_its_timeout() {
    let d = Daemon::start(&[]);
    let cli = std::path::Path::new(common::worker_path()).with_file_name("mmshare");
    d.freeze();
    for (flag, env) in [(Some("0.3"), None), (None, Some("0.3"))] {
        let mut cmd = Command::new(&cli);
        cmd.arg("--socket").arg(&d.socket);
        if let Some(f) = flag {
            cmd.args(["--daemon-timeout", f]);
        }
        if let Some(e) = env {
            cmd.env("MMSHARE_TIMEOUT", e);
        }
        let out = cmd.arg("ls").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{stderr}");
        assert!(
            stderr.contains("did not") && stderr.contains("300ms"),
            "{stderr}"
        );
    }
    d.thaw();
}
