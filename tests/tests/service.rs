//! `mmshared` under a service manager, without systemd as PID 1: socket activation through
//! `systemd-socket-activate` (Debian's `systemd` package), which passes a listening socket
//! exactly as systemd does (`LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`), and readiness
//! notifications received on a datagram socket of the test's own (`NOTIFY_SOCKET`, the
//! sd_notify(3) protocol). The units in `contrib/systemd/` rely on both.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon_path;
use mmshare::{Client, ConnectOptions, Delivery, StreamOptions};

const WAIT: Duration = Duration::from_secs(30);

/// `systemd-socket-activate`, or `None` (with a note) where it is not installed.
fn socket_activate() -> Option<PathBuf> {
    let found = [
        "/usr/bin/systemd-socket-activate",
        "/bin/systemd-socket-activate",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists());
    if found.is_none() {
        eprintln!(
            "SKIPPED: systemd-socket-activate is not installed (apt-get install systemd); \
             socket activation is untested here"
        );
    }
    found
}

/// A datagram socket standing in for the service manager's notification socket.
struct Notifications {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Notifications {
    fn bind(dir: &Path) -> Notifications {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notification socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Notifications { socket, path }
    }

    /// Waits for a notification with the line `line` (e.g. `READY=1`); returns the whole
    /// message.
    fn expect(&self, line: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                if message.lines().any(|l| l == line) {
                    return message;
                }
                seen.push(message);
            }
        }
        panic!("watchdog: no {line} within {WAIT:?}; got {seen:?}");
    }
}

/// A process whose stderr is collected by a thread, killed when dropped.
struct Running {
    child: Child,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Running {
    fn spawn(command: &mut Command) -> Running {
        let mut child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let stderr = child.stderr.take().unwrap();
        let log: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Running { child, log }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits for the process to exit on its own; its exit code.
    fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "watchdog: still running after {WAIT:?}; log: {:?}",
            self.log()
        );
    }

    fn stop(&mut self) -> Option<i32> {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        self.exit_code()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `systemd-socket-activate [options] -l SOCKET -- mmshared --home HOME [daemon_args]`, with
/// the notification socket passed through.
fn activated(
    tool: &Path,
    dir: &Path,
    socket: &Path,
    tool_args: &[&str],
    daemon_args: &[&str],
    notify: &Notifications,
) -> Running {
    let mut command = Command::new(tool);
    command
        .args(tool_args)
        .arg("--listen")
        .arg(socket)
        .arg("--setenv=NOTIFY_SOCKET")
        .arg("--setenv=RUST_LOG")
        .arg(daemon_path())
        .arg("--home")
        .arg(dir.join("home"))
        .arg("--mem-dir")
        .arg(dir.join("mem"))
        .args(daemon_args)
        .env("NOTIFY_SOCKET", &notify.path);
    Running::spawn(&mut command)
}

/// `mmshared` binding its own socket (no socket activation, no keeper), everything else in
/// `dir`, with `extra` flags.
fn own_daemon(dir: &Path, socket: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(daemon_path());
    command
        .arg("--socket")
        .arg(socket)
        .arg("--home")
        .arg(dir.join("home"))
        .arg("--mem-dir")
        .arg(dir.join("mem"))
        .arg("--no-fd-keeper")
        .args(extra);
    command
}

fn connect(socket: &Path) -> Client {
    let deadline = Instant::now() + WAIT;
    loop {
        match Client::connect_with(&ConnectOptions::new(socket)) {
            Ok(client) => return client,
            Err(e) if Instant::now() >= deadline => panic!("watchdog: cannot connect: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The daemon serves on the socket it was given: the first connection starts it, it says
/// READY=1 with a status line, serves a whole stream round trip on that socket, says
/// STOPPING=1 when told to stop, and leaves the socket, which is the service manager's, in
/// place (a daemon that bound its own removes it).
#[test]
fn a_socket_activated_daemon_serves_on_the_socket_it_is_given() {
    let Some(tool) = socket_activate() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("activated.sock");
    let notify = Notifications::bind(dir.path());
    let mut daemon = activated(&tool, dir.path(), &socket, &["--seqpacket"], &[], &notify);

    let client = connect(&socket);
    let ready = notify.expect("READY=1");
    assert!(
        ready.contains(&format!("STATUS=serving 0 objects on {}", socket.display())),
        "{ready:?}"
    );
    client
        .create_stream(&StreamOptions::new("activated.frames", "uint32", &[4]))
        .expect("create a stream through the passed socket");
    let mut publisher = client
        .publisher::<u32>("activated.frames")
        .expect("publisher");
    let other = connect(&socket);
    let subscriber = other
        .subscribe::<u32>("activated.frames", Delivery::Lossless)
        .expect("subscriber");
    for n in 0..10u32 {
        publisher.send(&[n, n + 1, n + 2, n + 3]).unwrap();
        let sample = subscriber.receive_timeout(WAIT).unwrap();
        assert_eq!(&*sample, &[n, n + 1, n + 2, n + 3]);
    }
    drop((subscriber, publisher, other, client));

    assert_eq!(daemon.stop(), Some(0), "log: {:?}", daemon.log());
    notify.expect("STOPPING=1");
    assert!(
        daemon
            .log()
            .iter()
            .any(|l| l.contains("activated=true") && l.contains("listening on")),
        "log: {:?}",
        daemon.log()
    );
    assert!(
        socket.exists(),
        "the service manager's socket was removed by the daemon"
    );
}

/// A passed socket the daemon cannot use is refused with one line that says why, before the
/// daemon does anything: a stream socket (the unit said ListenStream=), or a socket other
/// than the one `--socket` names.
#[test]
fn a_passed_socket_the_daemon_cannot_use_is_refused_with_the_reason() {
    let Some(tool) = socket_activate() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let notify = Notifications::bind(dir.path());

    // A SOCK_STREAM socket: the connection that triggers the start is a stream connection.
    let socket = dir.path().join("stream.sock");
    let mut daemon = activated(&tool, dir.path(), &socket, &[], &[], &notify);
    let _trigger = connect_stream(&socket);
    assert_eq!(daemon.exit_code(), Some(1), "log: {:?}", daemon.log());
    let log = daemon.log().join("\n");
    assert!(
        log.contains("passed a SOCK_STREAM socket; mmshared speaks SOCK_SEQPACKET"),
        "{log}"
    );
    assert!(
        !dir.path().join("home").exists(),
        "it created its home first"
    );

    // The right kind, but not the socket --socket names.
    let socket = dir.path().join("passed.sock");
    let elsewhere = dir.path().join("elsewhere.sock");
    let mut daemon = activated(
        &tool,
        dir.path(),
        &socket,
        &["--seqpacket"],
        &["--socket", elsewhere.to_str().unwrap()],
        &notify,
    );
    let _trigger = connect_seqpacket(&socket);
    assert_eq!(daemon.exit_code(), Some(1), "log: {:?}", daemon.log());
    let log = daemon.log().join("\n");
    assert!(
        log.contains(&format!(
            "--socket {} but the service manager passed the socket {}",
            elsewhere.display(),
            socket.display()
        )),
        "{log}"
    );
}

/// A bare SOCK_SEQPACKET connection (no Hello), enough to make the service manager start the
/// daemon.
fn connect_seqpacket(socket: &Path) -> std::os::fd::OwnedFd {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketType, connect, socket as new_socket};
    let deadline = Instant::now() + WAIT;
    loop {
        let fd = new_socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).unwrap();
        match connect(&fd, &SocketAddrUnix::new(socket).unwrap()) {
            Ok(()) => return fd,
            Err(e) if Instant::now() >= deadline => panic!("watchdog: cannot connect: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn connect_stream(socket: &Path) -> std::os::unix::net::UnixStream {
    let deadline = Instant::now() + WAIT;
    loop {
        match std::os::unix::net::UnixStream::connect(socket) {
            Ok(s) => return s,
            Err(e) if Instant::now() >= deadline => panic!("watchdog: cannot connect: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Without socket activation too, a daemon started with `NOTIFY_SOCKET` (a `Type=notify`
/// service that binds its own socket) says READY=1 only once it listens: a client that
/// connects right after the notification is served.
#[test]
fn a_daemon_notifies_readiness_only_once_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let notify = Notifications::bind(dir.path());
    let socket = dir.path().join("own.sock");
    let mut daemon =
        Running::spawn(own_daemon(dir.path(), &socket, &[]).env("NOTIFY_SOCKET", &notify.path));
    let ready = notify.expect("READY=1");
    assert!(ready.contains("STATUS=serving 0 objects"), "{ready:?}");
    Client::connect_with(&ConnectOptions::new(&socket).timeout(Duration::from_secs(5)))
        .expect("served right after READY=1")
        .list("")
        .expect("a request");
    assert_eq!(daemon.stop(), Some(0));
    notify.expect("STOPPING=1");
    assert!(!socket.exists(), "a daemon removes the socket it bound");
}

/// The repository's directory `contrib/systemd`.
fn units() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("contrib/systemd")
}

/// A unit file of `contrib/systemd`, with every `(from, to)` replacement made.
fn unit_text(path: &str, replace: &[(&str, &str)]) -> String {
    let text = std::fs::read_to_string(units().join(path)).unwrap();
    replace
        .iter()
        .fold(text, |text, (from, to)| text.replace(from, to))
}

/// The value of `key=` in a unit's text.
fn unit_value(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {text}"))
        .to_owned()
}

/// `systemd-analyze verify` accepts the system and the user units (with `ExecStart=` pointing
/// at the built daemon): no unknown or misspelt setting, no bad value. (The check is shown
/// to fail on a misspelt key in docs/TESTING.md.)
#[test]
fn the_systemd_units_verify() {
    let analyze = PathBuf::from("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        eprintln!("SKIPPED: systemd-analyze is not installed (apt-get install systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon_path();
    let daemon = daemon.to_str().unwrap();
    for (kind, from) in [
        ("system", "/usr/local/bin/mmshared"),
        ("user", "%h/.local/bin/mmshared"),
    ] {
        let here = dir.path().join(kind);
        std::fs::create_dir_all(&here).unwrap();
        for unit in ["mmshared.socket", "mmshared.service"] {
            let text = unit_text(&format!("{kind}/{unit}"), &[(from, daemon)]);
            std::fs::write(here.join(unit), text).unwrap();
        }
        let runtime = dir.path().join("runtime");
        std::fs::create_dir_all(&runtime).unwrap();
        let mut command = Command::new(&analyze);
        if kind == "user" {
            command.arg("--user").env("XDG_RUNTIME_DIR", &runtime);
        }
        let out = command
            .args(["verify", "--man=no"])
            .arg(here.join("mmshared.socket"))
            .arg(here.join("mmshared.service"))
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{kind} units: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The system unit's own command line, on its own socket path (both moved into a temporary
/// directory), started the way its `.socket` unit starts it: the daemon accepts the socket
/// (`--socket` names the `ListenSequentialPacket=` path) and serves.
#[test]
fn the_system_units_command_line_serves_on_the_units_socket() {
    let Some(tool) = socket_activate() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let moved = [
        ("/run/mmshare", format!("{root}/run")),
        ("/var/lib/mmshare", format!("{root}/state")),
        ("/dev/shm/mmshare", format!("{root}/mem")),
    ];
    let replace: Vec<(&str, &str)> = moved.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let socket_unit = unit_text("system/mmshared.socket", &replace);
    let service_unit = unit_text("system/mmshared.service", &replace);
    let socket = PathBuf::from(unit_value(&socket_unit, "ListenSequentialPacket"));
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let exec = unit_value(&service_unit, "ExecStart");
    let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    let notify = Notifications::bind(dir.path());
    let mut command = Command::new(tool);
    command
        .args(["--seqpacket", "--listen"])
        .arg(&socket)
        .arg("--setenv=NOTIFY_SOCKET")
        .arg("--setenv=RUST_LOG")
        .arg(daemon_path())
        .args(&args)
        .arg("--no-fd-keeper")
        .env("NOTIFY_SOCKET", &notify.path);
    let mut daemon = Running::spawn(&mut command);
    let client = connect(&socket);
    notify.expect("READY=1");
    client
        .create(&mmshare::CreateOptions::new("unit.check", "uint8", &[16]))
        .expect("a create through the unit's socket");
    assert!(
        dir.path().join("state/arrays/unit.check").exists(),
        "not stored where the unit says; log: {:?}",
        daemon.log()
    );
    drop(client);
    assert_eq!(daemon.stop(), Some(0), "log: {:?}", daemon.log());
}

/// `--log-format json`: every line the daemon logs is one JSON object, with the level, the
/// message and the event's fields (a log collector's input).
#[test]
fn a_json_log_is_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("json.sock");
    let mut daemon = Running::spawn(&mut own_daemon(
        dir.path(),
        &socket,
        &["--log-format", "json"],
    ));
    connect(&socket).list("").unwrap();
    assert_eq!(daemon.stop(), Some(0));
    let log = daemon.log();
    assert!(log.len() >= 3, "{log:?}");
    for line in &log {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        assert!(
            event["level"].is_string() && event["fields"]["message"].is_string(),
            "{line}"
        );
    }
    let listening = log
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| {
            e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("listening on"))
        })
        .expect("the listening line");
    assert_eq!(listening["fields"]["activated"], false);
}
