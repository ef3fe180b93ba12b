//! The daemon with real processes: zero copy, persistence across SIGKILL, crash-safe create,
//! dead writers, start/stop behaviour.

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::{Daemon, Worker, field};
use mmshare::{Access, CreateOptions, ErrorKind, ReadError};

const WATCHDOG: Duration = Duration::from_secs(30);

/// Create here, write in another process through its own descriptor, read here: same bytes,
/// same inode, no copy through the daemon.
#[test]
fn another_process_writes_and_this_one_reads_the_same_pages() {
    let d = Daemon::start(&[]);
    let client = d.client();
    let mine = client.create_array::<u8>("shared", &[3, 1000]).unwrap();
    assert_eq!(mine.version(), 0);
    let w = Worker::spawn(&["client-write", d.socket.to_str().unwrap(), "shared", "42"]);
    let (status, lines) = w.finish(WATCHDOG);
    assert!(status.success(), "{lines:?}");
    assert_eq!(mine.read_to_vec().unwrap(), vec![42u8; 3000]);
    assert_eq!(mine.version(), 1);
    assert_eq!(
        field(&lines[0], "inode"),
        mine.file().metadata().unwrap().ino()
    );
    // Descriptors arrive close-on-exec, so they do not leak into programs the client runs.
    let flags = rustix::io::fcntl_getfd(mine.file()).unwrap();
    assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
    let info = client.stat("shared").unwrap();
    assert_eq!(
        (info.version, info.shape.as_slice(), info.dtype.as_str()),
        (1, &[3u64, 1000][..], "|u1")
    );
}

/// Write, SIGKILL the daemon, restart it: the same names serve the same data; a process that
/// mapped the array before the kill keeps reading and writing throughout.
#[test]
fn data_survives_a_daemon_sigkill_and_mappings_keep_working() {
    let mut d = Daemon::start(&[]);
    let client = d.client();
    let file_arr = client.create_array::<u64>("persist", &[4096]).unwrap();
    let mem = client
        .create(&CreateOptions::new("inmem", "<f4", &[16]).memory())
        .unwrap()
        .typed::<f32>()
        .unwrap();
    file_arr
        .write_all(&(0..4096).collect::<Vec<u64>>())
        .unwrap();
    mem.write_all(&[1.5; 16]).unwrap();
    d.kill();
    // The daemon is gone; the mappings are not.
    file_arr.write_range(0, &[777]).unwrap();
    assert_eq!(file_arr.read_to_vec().unwrap()[..2], [777, 1]);
    d.restart();
    let again = d.client().open::<u64>("persist", Access::Read).unwrap();
    let data = again.read_to_vec().unwrap();
    assert_eq!(data[0], 777);
    assert_eq!(data[1..], (1..4096).collect::<Vec<u64>>()[..]);
    assert_eq!(again.version(), 2);
    assert_eq!(
        d.client()
            .open::<f32>("inmem", Access::Read)
            .unwrap()
            .read_to_vec()
            .unwrap(),
        vec![1.5; 16]
    );
    // The old mapping and the new one are the same pages.
    file_arr.write_range(1, &[5]).unwrap();
    assert_eq!(again.read_to_vec().unwrap()[1], 5);
}

/// SIGKILL the daemon in the middle of creates, again and again: after each restart every
/// listed array opens and validates, and no temp file is left.
#[test]
fn sigkill_during_creates_leaves_no_half_made_array() {
    let mut d = Daemon::start(&[]);
    for round in 0..5u64 {
        let mut w = Worker::spawn(&[
            "create-loop",
            d.socket.to_str().unwrap(),
            &format!("r{round}"),
            "1",
        ]);
        w.expect_line("created", WATCHDOG);
        std::thread::sleep(Duration::from_millis(30 + 17 * round));
        d.kill();
        let _ = w.finish(WATCHDOG); // it fails once the daemon is gone
        d.restart();
        let client = d.client();
        let listed = client.list("").unwrap();
        assert!(!listed.is_empty());
        for info in &listed {
            let a = client.open_raw(&info.name, Access::Read).unwrap();
            assert_eq!(a.header().data_len, 1 << 20, "{}", info.name);
        }
        let leftovers: Vec<_> = std::fs::read_dir(d.data_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp-") || n.ends_with(".corrupt"))
            .collect();
        assert!(leftovers.is_empty(), "round {round}: {leftovers:?}");
    }
}

/// A writer SIGKILLed while it holds the write side: readers waiting on the array are woken by
/// the daemon's recovery and get TORN (not a hang); the next whole write clears it.
#[test]
fn sigkilled_writer_is_marked_torn_by_the_daemon() {
    let d = Daemon::start(&[]);
    let client = d.client();
    let reader = client.create_array::<u8>("victim", &[4096]).unwrap();
    let mut w = Worker::spawn(&["client-hold", d.socket.to_str().unwrap(), "victim"]);
    let line = w.expect_line("holding", WATCHDOG);
    let before = field(&line, "version");
    assert_eq!(reader.sequence() % 2, 1, "the worker holds the write side");
    w.kill();
    // The worker's connection closed with the write side held: recovery must follow, and wake
    // this waiter, well within the watchdog.
    let v = reader.wait_for_version(before, WATCHDOG).unwrap();
    assert!(v > before);
    assert!(matches!(reader.read_to_vec(), Err(ReadError::Torn { .. })));
    assert!(client.stat("victim").unwrap().torn);
    assert!(d.log_has("writer died mid-write"));
    reader.write_all(&[0; 4096]).unwrap();
    assert_eq!(reader.read_to_vec().unwrap(), vec![0; 4096]);
    assert!(!client.stat("victim").unwrap().torn);
}

/// Delete unlinks: mappings keep working and the name is free at once.
#[test]
fn delete_frees_the_name_while_mappings_keep_working() {
    let d = Daemon::start(&[]);
    let client = d.client();
    let old = client.create_array::<i32>("gone", &[8]).unwrap();
    old.write_all(&[7; 8]).unwrap();
    client.delete("gone").unwrap();
    assert_eq!(
        client.stat("gone").unwrap_err().kind(),
        Some(ErrorKind::NotFound)
    );
    old.write_all(&[8; 8]).unwrap();
    assert_eq!(old.read_to_vec().unwrap(), vec![8; 8]);
    let new = client.create_array::<i32>("gone", &[2]).unwrap();
    assert_eq!(new.read_to_vec().unwrap(), vec![0; 2]);
    assert_eq!(
        client.delete("nope").unwrap_err().kind(),
        Some(ErrorKind::NotFound)
    );
}

/// SIGTERM: exit 0 and the socket is removed. A second daemon on a live socket refuses to start;
/// a stale socket file (left by SIGKILL) is cleaned up.
#[test]
fn start_and_stop_behave() {
    let mut d = Daemon::start(&[]);
    let second = std::process::Command::new(common::daemon_path())
        .arg("--socket")
        .arg(&d.socket)
        .arg("--dir")
        .arg(d.root.path().join("other"))
        .arg("--mem-dir")
        .arg(d.root.path().join("other-mem"))
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&second.stderr);
    assert!(msg.contains("already listening on"), "{msg}");
    let status = d.stop_with(rustix::process::Signal::TERM);
    assert_eq!(status.code(), Some(0));
    assert!(!d.socket.exists(), "socket removed on clean exit");
    d.restart();
    d.kill();
    assert!(d.socket.exists(), "SIGKILL leaves the socket file");
    d.restart();
    assert!(d.log_has("removed a stale socket file"));
    let status = d.stop_with(rustix::process::Signal::INT);
    assert_eq!(status.code(), Some(0));
}

/// Corrupt and truncated files are renamed aside (never served, never deleted), temp files of
/// interrupted creates are removed, and the daemon still starts.
#[test]
fn restart_quarantines_corrupt_files_and_removes_temp_files() {
    let mut d = Daemon::start(&[]);
    let client = d.client();
    client
        .create_array::<u8>("good", &[10])
        .unwrap()
        .write_all(&[3; 10])
        .unwrap();
    client.create_array::<u8>("cut", &[100_000]).unwrap();
    drop(client);
    d.kill();
    let data = d.data_dir();
    std::fs::write(data.join("garbage"), b"not an array at all").unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(data.join("cut"))
        .unwrap()
        .set_len(5000)
        .unwrap();
    std::fs::write(data.join(".tmp-half-1-2"), b"half").unwrap();
    d.restart();
    let client = d.client();
    let names: Vec<String> = client
        .list("")
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["good"]);
    assert!(data.join("garbage.corrupt").exists());
    assert!(data.join("cut.corrupt").exists());
    assert!(!data.join(".tmp-half-1-2").exists());
    assert!(d.log_has("quarantined"));
    assert_eq!(
        client
            .open::<u8>("good", Access::Read)
            .unwrap()
            .read_to_vec()
            .unwrap(),
        vec![3; 10]
    );
}

/// A writer that dies while the daemon is down is recovered when the daemon starts again.
#[test]
fn writer_that_died_while_the_daemon_was_down_is_recovered_at_start() {
    let mut d = Daemon::start(&[]);
    let client = d.client();
    client.create_array::<u8>("orphan", &[64]).unwrap();
    let mut w = Worker::spawn(&["client-hold", d.socket.to_str().unwrap(), "orphan"]);
    w.expect_line("holding", WATCHDOG);
    d.kill();
    w.kill();
    d.restart();
    let info = d.client().stat("orphan").unwrap();
    assert!(info.torn, "recovered at start: {info:?}");
    let a = d.client().open::<u8>("orphan", Access::Read).unwrap();
    assert_eq!(a.sequence() % 2, 0);
    assert!(matches!(a.read_to_vec(), Err(ReadError::Torn { .. })));
}

/// Asking for the wrong element type through the daemon is a clear error naming both.
#[test]
fn typed_open_of_another_dtype_is_a_clear_error() {
    let d = Daemon::start(&[]);
    let client = d.client();
    client.create_array::<f32>("f", &[4]).unwrap();
    let err = client.open::<f64>("f", Access::Read).unwrap_err();
    assert_eq!(
        err.to_string(),
        "its elements are <f4, but the program asked for <f8"
    );
    let arr = client
        .open::<f32>("f", Access::Read)
        .unwrap()
        .read_array()
        .unwrap();
    assert_eq!(arr.shape(), &[4]);
}

/// A full filesystem: Create replies NoSpace and leaves no file behind (a 1 MiB tmpfs is
/// mounted for the memory directory; needs root, which CI has).
#[test]
fn create_on_a_full_filesystem_is_nospace_and_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mnt = root.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            // Lazily: the daemon's descriptor keeper may still have its socket bound there for
            // a moment after the daemon stopped.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let d = Daemon::start(&["--mem-dir", mnt.to_str().unwrap()]);
    let client = d.client();
    let err = client
        .create(&CreateOptions::new("huge", "u1", &[4 << 20]).memory())
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::NoSpace), "{err}");
    // 4 MiB of data is striped by default: its stripe size is a 16-byte extension record.
    assert!(
        err.to_string()
            .contains("4198416 bytes (4096-byte header + data padded to 8 bytes + 16 bytes of extension records)"),
        "{err}"
    );
    let left: Vec<String> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".mmshared.lock" && n != ".keeper.sock")
        .collect();
    assert!(left.is_empty(), "temp file left behind: {left:?}");
    client
        .create(&CreateOptions::new("small", "u1", &[1000]).memory())
        .unwrap();
}

/// A writer in a child pid namespace (sharing this /proc) is judged by the pid /proc shows,
/// not its namespace-local pid (1): the daemon does not steal its write side while it lives,
/// and recovers it when it dies. Needs root for `unshare --pid`; skips elsewhere.
#[test]
fn writer_in_a_child_pid_namespace_is_judged_correctly() {
    let ok = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!(
            "skipped: `unshare --pid --fork --kill-child` is not available here (needs root)"
        );
        return;
    }
    let d = Daemon::start(&[]);
    let client = d.client();
    let reader = client.create_array::<u8>("ns", &[64]).unwrap();
    drop(reader);
    drop(client); // no lease held by this test: only the periodic check could act
    let mut holder = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child"])
        .arg(common::worker_path())
        .args(["client-hold", d.socket.to_str().unwrap(), "ns"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert!(line.starts_with("holding"), "{line}");
    assert_eq!(
        common::field(&line, "pid"),
        1,
        "the worker is pid 1 in its namespace"
    );
    // Several periodic checks pass: the live writer must keep its write side.
    std::thread::sleep(Duration::from_millis(2500));
    let info = d.client().stat("ns").unwrap();
    assert!(
        !info.torn,
        "a live writer in a pid namespace was judged dead"
    );
    let a = d.client().open::<u8>("ns", Access::Read).unwrap();
    assert_eq!(a.sequence() % 2, 1, "write side still held");
    // Read before the kill: the recovery can publish before this thread runs again, and a
    // wait for a version newer than the recovered one would wait for nothing.
    let before = a.version();
    holder.kill().unwrap(); // unshare dies; --kill-child takes the worker with it
    holder.wait().unwrap();
    let v = a.wait_for_version(before, WATCHDOG).unwrap();
    assert!(v > 0);
    assert!(matches!(a.read_to_vec(), Err(ReadError::Torn { .. })));
}

/// Many clients racing to create the same array with exist_ok all get it: none loses the race
/// with AlreadyExists, and there is one array.
#[test]
fn racing_exist_ok_creates_all_succeed() {
    let d = Daemon::start(&[]);
    let socket = d.socket.clone();
    std::thread::scope(|s| {
        for _ in 0..16 {
            let socket = socket.clone();
            s.spawn(move || {
                let c = mmshare::Client::connect(&socket).unwrap();
                let a = c
                    .create(&CreateOptions::new("shared.state", "f8", &[1 << 18]).exist_ok(true))
                    .unwrap();
                assert_eq!(a.header().data_len, 8 << 18);
            });
        }
    });
    assert_eq!(d.client().list("").unwrap().len(), 1);
}

/// `mmshared ARGS...` that is expected to refuse to start: its exit code and stderr (killed,
/// and the test failed, if it is still running after the watchdog).
fn refused_start(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(common::daemon_path())
        .args(args)
        .env_remove("MMSHARE_SOCKET")
        .env_remove("MMSHARE_DIR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + WATCHDOG;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("watchdog: mmshared {args:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.code(), err)
}

/// A daemon started with exactly `args` (no --dir/--mem-dir added), killed and its derived
/// memory directory removed when dropped.
struct BareDaemon {
    child: std::process::Child,
    memory_dir: std::path::PathBuf,
}

impl BareDaemon {
    fn start(args: &[&std::ffi::OsStr]) -> BareDaemon {
        use std::io::BufRead;
        let mut child = std::process::Command::new(common::daemon_path())
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("MMSHARE_SOCKET")
            .env_remove("MMSHARE_DIR")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(WATCHDOG) {
                Ok(line) if line.contains("listening on") => {
                    let memory_dir = line
                        .split_whitespace()
                        .find_map(|kv| kv.strip_prefix("memory="))
                        .expect("the start line names the memory directory")
                        .into();
                    return BareDaemon { child, memory_dir };
                }
                Ok(line) => seen.push(line),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("watchdog: mmshared {args:?} did not start; said {seen:?}");
                }
            }
        }
    }
}

impl Drop for BareDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.memory_dir);
    }
}

/// The README's advice for a second daemon (its own --socket and --dir) is enough: its memory
/// arrays go to a directory derived from its --dir instead of the shared
/// /dev/shm/mmshare-$UID. And `--home DIR` alone makes a whole separate daemon.
#[test]
fn a_second_daemon_with_its_own_socket_and_dir_starts_and_shares_nothing() {
    let root = tempfile::tempdir().unwrap();
    let p = |s: &str| root.path().join(s).into_os_string();
    let a = BareDaemon::start(&["--socket".as_ref(), &p("a.sock"), "--dir".as_ref(), &p("a")]);
    let b = BareDaemon::start(&["--socket".as_ref(), &p("b.sock"), "--dir".as_ref(), &p("b")]);
    let c = BareDaemon::start(&["--home".as_ref(), &p("c")]);
    assert!(a.memory_dir.starts_with("/dev/shm"), "{:?}", a.memory_dir);
    let dirs = [&a.memory_dir, &b.memory_dir, &c.memory_dir];
    assert!(
        dirs[0] != dirs[1] && dirs[1] != dirs[2] && dirs[0] != dirs[2],
        "{dirs:?}"
    );
    let mut paths = Vec::new();
    for sock in ["a.sock", "b.sock", "c/mmshared.sock"] {
        let client = mmshare::Client::connect(root.path().join(sock)).unwrap();
        let arr = client
            .create(&CreateOptions::new("same.name", "u1", &[4]).memory())
            .unwrap();
        paths.push(arr.info().path.clone());
    }
    assert!(paths[0] != paths[1] && paths[1] != paths[2], "{paths:?}");
    assert!(root.path().join("c/arrays").is_dir());
    drop((a, b, c));
}

/// Two daemons on one memory directory: the second refuses in one line that names the
/// directory and the fix.
#[test]
fn a_daemon_on_a_taken_directory_refuses_and_names_the_fix() {
    let d = Daemon::start(&[]);
    let other = d.root.path().join("other");
    let (code, err) = refused_start(&[
        "--socket".as_ref(),
        other.with_extension("sock").as_os_str(),
        "--dir".as_ref(),
        other.as_os_str(),
        "--mem-dir".as_ref(),
        d.mem_dir().as_os_str(),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&*d.mem_dir().to_string_lossy()), "{err}");
    assert!(err.contains("--home") && err.contains("--mem-dir"), "{err}");
}

/// Unknown log levels, a file given as a directory, and paths under missing directories are
/// refused in one line naming the value, and nothing is created outside the documented
/// default directories.
#[test]
fn bad_flags_and_paths_are_refused_in_one_line() {
    let root = tempfile::tempdir().unwrap();
    let sock = root.path().join("s.sock");
    let file = root.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let missing = root.path().join("no/such");
    let cases: Vec<(Vec<std::ffi::OsString>, i32, String)> = vec![
        (
            vec!["--log-level".into(), "chatty".into()],
            2,
            "unknown log level \"chatty\"".into(),
        ),
        (
            vec!["--log-level".into(), "mmshare_daemon=loud".into()],
            2,
            "\"loud\"".into(),
        ),
        (
            vec![
                "--socket".into(),
                sock.clone().into(),
                "--dir".into(),
                file.clone().into(),
            ],
            1,
            format!("--dir {} is not a directory", file.display()),
        ),
        (
            vec![
                "--socket".into(),
                missing.join("dir/s.sock").into(),
                "--dir".into(),
                root.path().join("d").into(),
            ],
            1,
            format!("directory {} does not exist", missing.join("dir").display()),
        ),
        (
            vec![
                "--socket".into(),
                sock.clone().into(),
                "--dir".into(),
                missing.join("d").into(),
            ],
            1,
            format!("--dir {}", missing.join("d").display()),
        ),
    ];
    for (args, want_code, needle) in cases {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let (code, err) = refused_start(&args);
        assert_eq!(code, Some(want_code), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(&needle), "{args:?}: {err}");
        assert!(!missing.exists(), "{args:?} created {}", missing.display());
    }
    assert!(
        !root.path().join("d").exists(),
        "a refused start created --dir"
    );
}

/// The subscribe example (examples/README.md) waits out a TORN frame, as documented, and goes
/// on with the next whole frame instead of exiting.
#[test]
fn subscribe_example_waits_out_a_torn_frame() {
    let example = common::example_path("subscribe");
    let d = Daemon::start(&[]);
    let client = d.client();
    let frame = client
        .create(&CreateOptions::new("demo.frame", "f4", &[480, 640]).memory())
        .unwrap();
    let mut sub = Worker::spawn_program(
        &example,
        &["demo.frame"],
        &[("MMSHARE_SOCKET", d.socket.as_os_str())],
    );
    sub.expect_line("reading demo.frame", WATCHDOG);
    let whole = vec![0u8; frame.header().data_len as usize];
    frame.write_bytes(0, &whole).unwrap();
    // A write whose writer "died" half-way: published marked TORN.
    frame.write_stream(|w| w.mark_torn()).unwrap();
    assert!(frame.is_torn());
    let line = sub.expect_line("version", WATCHDOG);
    assert!(line.contains("TORN"), "{line}");
    // Whole frames again: it reports them (once a second) instead of having exited.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                frame.write_bytes(0, &whole).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        // It may report the TORN frame once more before a whole one lands; the watchdog in
        // `expect_line` fails a subscriber that never reports a whole frame.
        let mut line = sub.expect_line("version", WATCHDOG);
        while line.contains("TORN") {
            line = sub.expect_line("version", WATCHDOG);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(line.contains("frames/s"), "{line}");
    });
    sub.kill();
}
