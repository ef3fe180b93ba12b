//! Isolation between users on one machine (issue 17, findings 4 and 5): another user who takes
//! the default socket path or plants the predictable memory directory gets nothing. Real
//! daemons and clients run as real uids (numeric, no /etc/passwd entries): uid 1001 plays
//! the attacker, uid 1002 (or root) the victim. Tests that switch uid need root (CI runs as
//! root); elsewhere they print why and skip.

mod common;

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use mmshare::{Access, Client, ClientError, ConnectOptions, CreateOptions};

const WATCHDOG: Duration = Duration::from_secs(30);
/// The user who takes paths that belong to someone else.
const ATTACKER: u32 = 1001;
/// The user whose paths are taken.
const VICTIM: u32 = 1002;

/// Whether this process can switch to other uids; prints why the test is skipped if not.
fn can_switch_uid(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    eprintln!(
        "skipped {test}: running processes as uids {ATTACKER} and {VICTIM} needs root (CI runs as root)"
    );
    false
}

fn my_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// A scratch directory that other uids can traverse (0755), removed at the end.
fn scratch() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    t
}

/// Creates directory `path` owned by `uid` with `mode`, as that user would.
fn dir_of(path: &Path, uid: u32, mode: u32) -> PathBuf {
    std::fs::create_dir(path).unwrap();
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_owned()
}

/// Paths removed (recursively) when dropped: what tests put in the real /dev/shm.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// `mmshared ARGS` as `uid` (None: as this process), with a clean mmshare environment plus
/// `env`.
fn mmshared(uid: Option<u32>, args: &[&OsStr], env: &[(&str, &OsStr)]) -> Command {
    let mut cmd = Command::new(common::daemon_path());
    cmd.args(args)
        .env("RUST_LOG", "info")
        .env_remove("MMSHARE_SOCKET")
        .env_remove("MMSHARE_DIR")
        .env_remove("MMSHARE_SERVER_UID")
        .env_remove("XDG_RUNTIME_DIR")
        .envs(env.iter().copied());
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    cmd
}

/// A daemon that started: killed when dropped.
struct Running {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// The memory directory its start line names.
    memory: PathBuf,
}

impl Running {
    fn log_has(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What became of a daemon started with [`launch`].
enum Outcome {
    /// It said `listening on`.
    Listening(Running),
    /// It exited first: its exit code and what it wrote on stderr.
    Exited(Option<i32>, String),
}

impl Outcome {
    fn listening(self, what: &str) -> Running {
        match self {
            Outcome::Listening(r) => r,
            Outcome::Exited(code, err) => {
                panic!("{what}: mmshared refused to start (exit {code:?}): {err}")
            }
        }
    }

    fn refused(self, what: &str) -> (Option<i32>, String) {
        match self {
            Outcome::Exited(code, err) => (code, err),
            Outcome::Listening(r) => panic!(
                "{what}: mmshared started instead of refusing; it said {:?}",
                r.log()
            ),
        }
    }
}

/// Starts `cmd` and waits (with a watchdog) until it listens or exits.
fn launch(mut cmd: Command) -> Outcome {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mmshared");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line.clone());
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    loop {
        match rx.recv_timeout(WATCHDOG) {
            Ok(line) if line.contains("listening on") => {
                let memory = line
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix("memory="))
                    .expect("the start line names the memory directory")
                    .into();
                return Outcome::Listening(Running { child, log, memory });
            }
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().unwrap();
                let err = log.lock().unwrap().join("\n");
                return Outcome::Exited(status.code(), err);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("watchdog: mmshared neither listened nor exited; said {log:?}");
            }
        }
    }
}

/// Runs the worker's `connect-as TARGET UID NAME` as `uid` with `env` (and no other mmshare
/// variables): its exit code and stdout.
fn connect_as(
    uid: Option<u32>,
    target: &str,
    server_uid: &str,
    name: &str,
    env: &[(&str, &OsStr)],
) -> (i32, String) {
    let mut cmd = Command::new(common::worker_path());
    cmd.args(["connect-as", target, server_uid, name])
        .env_remove("MMSHARE_SOCKET")
        .env_remove("MMSHARE_SERVER_UID")
        .env_remove("XDG_RUNTIME_DIR")
        .envs(env.iter().copied());
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let out = cmd.output().expect("run the worker");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        out.status
            .code()
            .unwrap_or_else(|| panic!("worker killed: {stderr}")),
        format!("{stdout}{stderr}"),
    )
}

/// Whether `path` names a directory [`fallback`] of `predictable` would: the same name plus
/// `-` and 16 hex digits.
fn is_fallback_of(predictable: &Path, path: &Path) -> bool {
    path.to_str()
        .and_then(|p| p.strip_prefix(predictable.to_str()?))
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn os(p: &Path) -> &OsStr {
    p.as_os_str()
}

/// Another user who made the default socket directory and runs a daemon there gets nothing
/// from a victim: the victim's client (default path through XDG_RUNTIME_DIR, or through
/// MMSHARE_SOCKET) refuses it naming both uids, and creates nothing in it.
#[test]
fn a_client_refuses_another_users_daemon_on_the_default_socket_and_creates_nothing_there() {
    if !can_switch_uid("a_client_refuses_another_users_daemon_on_the_default_socket") {
        return;
    }
    let t = scratch();
    // The attacker made the directory the victim's default socket path is in.
    let xdg = dir_of(&t.path().join("xdg"), ATTACKER, 0o755);
    let socket_dir = dir_of(&xdg.join("mmshare"), ATTACKER, 0o777);
    let socket = socket_dir.join("mmshared.sock");
    let home = dir_of(&t.path().join("attacker"), ATTACKER, 0o700);
    let attacker = launch(mmshared(
        Some(ATTACKER),
        &[
            "--socket".as_ref(),
            os(&socket),
            "--dir".as_ref(),
            os(&home.join("data")),
            "--mem-dir".as_ref(),
            os(&home.join("mem")),
            "--socket-mode".as_ref(),
            "0666".as_ref(),
        ],
        &[],
    ))
    .listening("the attacker's daemon");

    for env in [
        [("XDG_RUNTIME_DIR", os(&xdg))],
        [("MMSHARE_SOCKET", os(&socket))],
    ] {
        let (code, out) = connect_as(Some(VICTIM), "default", "-", "victim.secret", &env);
        assert_eq!(code, 1, "{env:?}: {out}");
        assert!(
            out.contains(&format!(
                "error=WrongServer expected={VICTIM} actual={ATTACKER}"
            )),
            "{env:?}: {out}"
        );
        let message = out.lines().find(|l| l.starts_with("message=")).unwrap();
        for needle in [
            format!("{}", socket.display()),
            format!("uid {ATTACKER}"),
            format!("uid {VICTIM} (this user)"),
            "MMSHARE_SERVER_UID".into(),
        ] {
            assert!(message.contains(&needle), "{needle:?} not in {message}");
        }
        assert!(!out.contains("connected"), "{out}");
    }

    // Nothing of the victim's reached the attacker's daemon.
    let spy = Client::connect_with(&ConnectOptions::new(&socket).server_uid(ATTACKER)).unwrap();
    assert!(spy.list_all("").unwrap().is_empty());
    let mem: Vec<_> = std::fs::read_dir(home.join("mem"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != ".mmshared.lock" && n != ".keeper.sock")
        .collect();
    assert!(mem.is_empty(), "{mem:?}");

    // A daemon that is meant to be another user's is reached by naming its uid.
    let (code, out) = connect_as(
        Some(VICTIM),
        "default",
        "-",
        "shared.ok",
        &[
            ("XDG_RUNTIME_DIR", os(&xdg)),
            ("MMSHARE_SERVER_UID", "1001".as_ref()),
        ],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = connect_as(
        Some(VICTIM),
        "default",
        "1001",
        "-",
        &[("MMSHARE_SOCKET", os(&socket))],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(spy.list_all("").unwrap().len(), 1);
    drop(attacker);
}

/// A daemon refuses to listen in a socket directory of another user, sticky or not, whether
/// it runs as another uid or as root, and whether the directory was named or is the default
/// one; it says whose directory it is and creates nothing, not even its --dir.
#[test]
fn a_daemon_refuses_a_socket_directory_of_another_user_sticky_or_not() {
    if !can_switch_uid("a_daemon_refuses_a_socket_directory_of_another_user") {
        return;
    }
    let t = scratch();
    for (i, (daemon_uid, mode)) in [(VICTIM, 0o777), (VICTIM, 0o1777), (0, 0o755), (0, 0o1777)]
        .into_iter()
        .enumerate()
    {
        let taken = dir_of(&t.path().join(format!("taken-{i}")), ATTACKER, mode);
        let own = dir_of(&t.path().join(format!("own-{i}")), daemon_uid, 0o700);
        let what = format!("daemon uid {daemon_uid}, directory mode {mode:o}");
        let (code, err) = launch(mmshared(
            Some(daemon_uid),
            &[
                "--socket".as_ref(),
                os(&taken.join("mmshared.sock")),
                "--dir".as_ref(),
                os(&own.join("data")),
                "--mem-dir".as_ref(),
                os(&own.join("mem")),
            ],
            &[],
        ))
        .refused(&what);
        assert_eq!(code, Some(1), "{what}: {err}");
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        for needle in [
            format!("{} belongs to uid {ATTACKER}", taken.display()),
            format!("this daemon's uid {daemon_uid}"),
        ] {
            assert!(err.contains(&needle), "{what}: {needle:?} not in {err}");
        }
        assert_eq!(std::fs::read_dir(&taken).unwrap().count(), 0, "{what}");
        assert!(!own.join("data").exists(), "{what}: --dir created");
    }

    // The default socket directory (here under XDG_RUNTIME_DIR), made first by another user.
    let xdg = dir_of(&t.path().join("xdg"), VICTIM, 0o700);
    let taken = dir_of(&xdg.join("mmshare"), ATTACKER, 0o1777);
    let own = dir_of(&t.path().join("own-default"), VICTIM, 0o700);
    let (code, err) = launch(mmshared(
        Some(VICTIM),
        &[
            "--dir".as_ref(),
            os(&own.join("data")),
            "--mem-dir".as_ref(),
            os(&own.join("mem")),
        ],
        &[("XDG_RUNTIME_DIR", os(&xdg))],
    ))
    .refused("the default socket directory");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("{} belongs to uid {ATTACKER}", taken.display())),
        "{err}"
    );
    assert!(err.contains("another user may have created it"), "{err}");
    assert_eq!(std::fs::read_dir(&taken).unwrap().count(), 0);
}

/// The predictable memory directory of a daemon with this home, learnt from a first start
/// (and removed again, as if never made).
fn predictable_memory_dir(uid: u32, home: &Path) -> PathBuf {
    let first =
        launch(mmshared(Some(uid), &["--home".as_ref(), os(home)], &[])).listening("a first start");
    let dir = first.memory.clone();
    drop(first);
    std::fs::remove_dir_all(&dir).unwrap();
    let name = dir.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        dir.starts_with("/dev/shm") && name.starts_with(&format!("mmshare-{uid}-")),
        "{}",
        dir.display()
    );
    dir
}

/// Another user plants the predictable memory directory with `.mmshared.lock` a symlink to a
/// path of their choosing: the daemon (root, or a plain user) never creates or touches that
/// path, leaves the planted directory as it was, starts on a fresh private directory, and a
/// restart finds that same directory with the memory arrays in it.
#[test]
fn a_planted_memory_directory_is_left_alone_for_a_private_one_that_survives_a_restart() {
    if !can_switch_uid("a_planted_memory_directory_is_left_alone") {
        return;
    }
    let t = scratch();
    for daemon_uid in [0, VICTIM] {
        let home = dir_of(
            &t.path().join(format!("home-{daemon_uid}")),
            daemon_uid,
            0o700,
        );
        let planted = predictable_memory_dir(daemon_uid, &home);
        let mut cleanup = Cleanup(vec![planted.clone()]);
        // A path the daemon could create if it followed the link.
        let target = home.join("chosen-by-the-attacker");
        dir_of(&planted, ATTACKER, 0o777);
        let link = planted.join(".mmshared.lock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(ATTACKER), Some(ATTACKER)).unwrap();

        let args: [&OsStr; 2] = ["--home".as_ref(), os(&home)];
        let started = launch(mmshared(Some(daemon_uid), &args, &[]));
        assert!(
            !target.exists(),
            "daemon uid {daemon_uid} created the symlink's target"
        );
        let daemon = started.listening("planted");
        let fallback = daemon.memory.clone();
        cleanup.0.push(fallback.clone());
        assert!(
            is_fallback_of(&planted, &fallback),
            "{} is not a private directory next to {}",
            fallback.display(),
            planted.display()
        );
        let meta = std::fs::symlink_metadata(&fallback).unwrap();
        assert!(meta.is_dir());
        assert_eq!((meta.uid(), meta.mode() & 0o777), (daemon_uid, 0o700));
        assert!(!target.exists(), "the daemon created the symlink's target");
        let left: Vec<OsString> = std::fs::read_dir(&planted)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [OsString::from(".mmshared.lock")]);
        assert_eq!(std::fs::read_link(&link).unwrap(), target);
        assert!(
            daemon.log_has(&format!("{} belongs to uid {ATTACKER}", planted.display()))
                && daemon.log_has(&format!("{}", fallback.display())),
            "no warning naming both directories: {:?}",
            daemon.log()
        );

        let client = Client::connect(home.join("mmshared.sock")).unwrap();
        let kept = client
            .create(&CreateOptions::new("kept", "u1", &[4]).memory())
            .unwrap()
            .typed::<u8>()
            .unwrap();
        kept.write_all(&[1, 2, 3, 4]).unwrap();
        assert!(kept.info().path.starts_with(fallback.to_str().unwrap()));
        drop((kept, client));

        drop(daemon);
        let daemon = launch(mmshared(Some(daemon_uid), &args, &[])).listening("restart");
        assert_eq!(daemon.memory, fallback, "a restart chose another directory");
        let client = Client::connect(home.join("mmshared.sock")).unwrap();
        let kept = client.open::<u8>("kept", Access::Read).unwrap();
        assert_eq!(kept.read_to_vec().unwrap(), [1, 2, 3, 4]);
        assert!(!target.exists());
        drop((kept, client, daemon));
    }
}

/// A plain `mkdir` of the predictable memory directory by another user does not stop the
/// daemon from starting (it uses a private directory instead and leaves that one empty).
#[test]
fn a_plain_directory_planted_at_the_predictable_memory_path_does_not_stop_the_daemon() {
    if !can_switch_uid("a_plain_directory_planted_at_the_predictable_memory_path") {
        return;
    }
    let t = scratch();
    for daemon_uid in [VICTIM, 0] {
        let home = dir_of(
            &t.path().join(format!("home-{daemon_uid}")),
            daemon_uid,
            0o700,
        );
        let planted = predictable_memory_dir(daemon_uid, &home);
        let mut cleanup = Cleanup(vec![planted.clone()]);
        dir_of(&planted, ATTACKER, 0o755);
        let daemon = launch(mmshared(
            Some(daemon_uid),
            &["--home".as_ref(), os(&home)],
            &[],
        ))
        .listening("a planted plain directory");
        cleanup.0.push(daemon.memory.clone());
        assert!(
            is_fallback_of(&planted, &daemon.memory),
            "{:?}",
            daemon.memory
        );
        assert_eq!(std::fs::read_dir(&planted).unwrap().count(), 0);
        let client = Client::connect(home.join("mmshared.sock")).unwrap();
        client
            .create(&CreateOptions::new("works", "f4", &[2]).memory())
            .unwrap();
    }
}

/// A --mem-dir that belongs to another user is refused in one line naming it and its owner,
/// with no fallback, and nothing in it is created or followed (not even a symlinked lock).
#[test]
fn an_explicit_mem_dir_of_another_user_is_refused_and_left_untouched() {
    if !can_switch_uid("an_explicit_mem_dir_of_another_user_is_refused") {
        return;
    }
    let t = scratch();
    for daemon_uid in [VICTIM, 0] {
        let home = dir_of(
            &t.path().join(format!("home-{daemon_uid}")),
            daemon_uid,
            0o700,
        );
        let theirs = dir_of(
            &t.path().join(format!("theirs-{daemon_uid}")),
            ATTACKER,
            0o777,
        );
        let target = home.join("chosen-by-the-attacker");
        std::os::unix::fs::symlink(&target, theirs.join(".mmshared.lock")).unwrap();
        let (code, err) = launch(mmshared(
            Some(daemon_uid),
            &[
                "--home".as_ref(),
                os(&home),
                "--mem-dir".as_ref(),
                os(&theirs),
            ],
            &[],
        ))
        .refused("--mem-dir of another user");
        assert!(
            !target.exists(),
            "daemon uid {daemon_uid} followed the planted lock"
        );
        assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 1);
        assert_eq!(code, Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!(
                "--mem-dir {} belongs to uid {ATTACKER}, not to this daemon's uid {daemon_uid}",
                theirs.display()
            )),
            "{err}"
        );
    }
}

/// A daemon of another uid (uid 1001 when this test runs as root, else this user's own daemon
/// against a uid it is not): a client given the daemon's uid connects, one given another uid
/// is refused naming the socket and both uids (whether the uid comes from the program or from
/// MMSHARE_SERVER_UID), a named path without a uid is not checked, and a malformed
/// MMSHARE_SERVER_UID is an error of its own.
#[test]
fn a_client_given_the_daemons_uid_connects_and_one_given_another_is_refused_naming_both() {
    let t = scratch();
    let daemon_uid = if my_uid() == 0 { ATTACKER } else { my_uid() };
    let dir = dir_of(&t.path().join("d"), daemon_uid, 0o755);
    let socket = dir.join("mmshared.sock");
    let _daemon = launch(mmshared(
        (daemon_uid != my_uid()).then_some(daemon_uid),
        &[
            "--socket".as_ref(),
            os(&socket),
            "--dir".as_ref(),
            os(&dir.join("data")),
            "--mem-dir".as_ref(),
            os(&dir.join("mem")),
            "--socket-mode".as_ref(),
            "0666".as_ref(),
        ],
        &[],
    ))
    .listening("the daemon");
    let wrong = daemon_uid + 1;

    let right = Client::connect_with(&ConnectOptions::new(&socket).server_uid(daemon_uid));
    assert!(right.is_ok(), "{:?}", right.err());
    match Client::connect_with(&ConnectOptions::new(&socket).server_uid(wrong)) {
        Err(e @ ClientError::WrongServer { .. }) => {
            let ClientError::WrongServer {
                ref path,
                expected,
                actual,
            } = e
            else {
                unreachable!()
            };
            assert_eq!(
                (path.as_path(), expected, actual),
                (socket.as_path(), wrong, daemon_uid)
            );
            let message = e.to_string();
            for needle in [
                format!(
                    "the daemon at {} runs as uid {daemon_uid}",
                    socket.display()
                ),
                format!("not as uid {wrong}"),
                "or root".into(),
            ] {
                assert!(message.contains(&needle), "{needle:?} not in {message}");
            }
        }
        other => panic!(
            "expected WrongServer, got {:?}",
            other.map(|c| c.server_name().to_owned())
        ),
    }
    // A path the program names, with no uid to check against: no check.
    assert!(Client::connect(&socket).is_ok());

    let s = socket.to_str().unwrap();
    let wrong_text = wrong.to_string();
    let (code, out) = connect_as(
        None,
        s,
        "-",
        "-",
        &[("MMSHARE_SERVER_UID", wrong_text.as_ref())],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "error=WrongServer expected={wrong} actual={daemon_uid}"
        )),
        "{out}"
    );
    let right_text = daemon_uid.to_string();
    let (code, out) = connect_as(
        None,
        s,
        "-",
        "-",
        &[("MMSHARE_SERVER_UID", right_text.as_ref())],
    );
    assert_eq!(code, 0, "{out}");
    // The program's uid wins over the environment's.
    let (code, out) = connect_as(
        None,
        s,
        &right_text,
        "-",
        &[("MMSHARE_SERVER_UID", wrong_text.as_ref())],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = connect_as(
        None,
        s,
        "-",
        "-",
        &[("MMSHARE_SERVER_UID", "alice".as_ref())],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("error=BadServerUid"), "{out}");
    assert!(
        out.contains("MMSHARE_SERVER_UID=\"alice\" is not a uid"),
        "{out}"
    );
    // The default path (from MMSHARE_SOCKET) must be this user's daemon, or root's.
    let (code, out) = connect_as(
        None,
        "default",
        "-",
        "-",
        &[("MMSHARE_SOCKET", os(&socket))],
    );
    if daemon_uid == my_uid() {
        assert_eq!(code, 0, "{out}");
    } else {
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains(&format!(
                "error=WrongServer expected={} actual={daemon_uid}",
                my_uid()
            )),
            "{out}"
        );
    }
}

/// A daemon that runs as root (as one started by systemd's socket activation reports) is
/// accepted by every client: on the default path of a plain user, and whatever uid is
/// expected.
#[test]
fn a_daemon_running_as_root_is_accepted_whatever_uid_is_expected() {
    if !can_switch_uid("a_daemon_running_as_root_is_accepted") {
        return;
    }
    let t = scratch();
    let dir = dir_of(&t.path().join("d"), 0, 0o755);
    let socket = dir.join("mmshared.sock");
    let _daemon = launch(mmshared(
        None,
        &[
            "--socket".as_ref(),
            os(&socket),
            "--dir".as_ref(),
            os(&dir.join("data")),
            "--mem-dir".as_ref(),
            os(&dir.join("mem")),
            "--socket-mode".as_ref(),
            "0666".as_ref(),
        ],
        &[],
    ))
    .listening("root's daemon");
    let s = socket.to_str().unwrap();
    for (target, uid, env) in [
        ("default", "-", vec![("MMSHARE_SOCKET", os(&socket))]),
        ("default", "1001", vec![("MMSHARE_SOCKET", os(&socket))]),
        (s, "1001", vec![]),
        (s, "-", vec![("MMSHARE_SERVER_UID", "1001".as_ref())]),
    ] {
        let (code, out) = connect_as(Some(VICTIM), target, uid, "-", &env);
        assert_eq!(code, 0, "{target} {uid} {env:?}: {out}");
        assert!(out.contains(&format!("connected euid={VICTIM}")), "{out}");
    }
}

/// `--home DIR` with the socket elsewhere (`--socket`) still creates DIR and its arrays
/// directory (the socket-directory checks do not skip it).
#[test]
fn a_home_with_the_socket_elsewhere_is_still_created() {
    let t = scratch();
    let home = t.path().join("home");
    let daemon = launch(mmshared(
        None,
        &[
            "--home".as_ref(),
            os(&home),
            "--socket".as_ref(),
            os(&t.path().join("s.sock")),
            "--mem-dir".as_ref(),
            os(&t.path().join("mem")),
        ],
        &[],
    ))
    .listening("--home with --socket");
    assert!(home.join("arrays").is_dir());
    drop(daemon);
}
