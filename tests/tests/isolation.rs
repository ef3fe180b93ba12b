//! One daemon shared by several users: what a participant of another uid can and cannot do to
//! the daemon and to the other participants (docs/SECURITY.md). Every test runs its attackers
//! as real other uids (`setpriv`); CI runs as root, elsewhere they skip and say so.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::{Daemon, Worker, can_switch_uid};
use mmshare::{Access, CreateOptions, StreamOptions};

const WATCHDOG: Duration = Duration::from_secs(60);
/// Two unprivileged uids with no name in /etc/passwd.
const ALICE: u32 = 4101;
const MALLORY: u32 = 4102;

/// A daemon (root) that every uid may connect to, as the README's multi-user set-up.
fn shared_daemon(extra: &[&str]) -> Daemon {
    let mut args = vec!["--socket-mode", "0666"];
    args.extend_from_slice(extra);
    let d = Daemon::start(&args);
    std::fs::set_permissions(d.root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// Waits (watchdog `WATCHDOG`) until `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < WATCHDOG, "watchdog: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn socket(d: &Daemon) -> String {
    d.socket.display().to_string()
}

/// The lines of a `control-attack` worker run as `uid`.
fn attack(uid: u32, d: &Daemon, name: &str, kind: &str) -> Vec<String> {
    let (status, lines) =
        Worker::spawn_as(uid, &["control-attack", &socket(d), name, kind, "all"]).finish(WATCHDOG);
    assert!(status.success(), "attacker: {status:?} {lines:?}");
    lines
}

fn expect(lines: &[String], wanted: &[&str]) {
    for w in wanted {
        assert!(
            lines.iter().any(|l| l == w),
            "{w:?} not among the attacker's lines {lines:?}"
        );
    }
}

/// What a reader of another uid gets cannot change size: the data descriptor is read-only
/// (cannot be truncated, grown, or reopened read-write through /proc) and the control state
/// is a sealed memfd (truncate, grow and fallocate all EPERM, also when reopened).
const RESIZE_REFUSED: &[&str] = &[
    "fd0_reopen_rw=EACCES",
    "fd0_truncate=EINVAL",
    "fd0_grow=EINVAL",
    "fd0_fallocate=EBADF",
    "fd1_truncate=EPERM",
    "fd1_grow=EPERM",
    "fd1_fallocate=EPERM",
    "fd1_reopened_truncate=EPERM",
    "fd1_reopened_fallocate=EPERM",
    "fd1_add_seals=EPERM",
];

/// Finding 1: any user who could connect killed the daemon by truncating the array's control
/// file (handed out read-write even to readers) and faking a dead writer, whose recovery then
/// read the truncated page (SIGBUS). Now the truncation is refused, the recovery happens, and
/// the daemon serves on.
#[test]
fn a_reader_cannot_resize_control_state_and_the_daemon_survives_a_recovery() {
    if !can_switch_uid() {
        return;
    }
    let d = shared_daemon(&[]);
    let c = d.client();
    c.create(
        &CreateOptions::new("victim", "u1", &[8])
            .memory()
            .mode(0o666),
    )
    .unwrap();
    let lines = attack(MALLORY, &d, "victim", "array");
    expect(&lines, &["fds=2"]);
    expect(&lines, RESIZE_REFUSED);
    expect(&lines, &["fd1_len_after=4096"]);
    // Now a dead writer: Mallory takes the write side and dies holding it.
    let mut holder = Worker::spawn_as(MALLORY, &["client-hold", &socket(&d), "victim"]);
    holder.expect_line("holding", WATCHDOG);
    holder.kill();
    let reader = c.open_raw("victim", Access::Read).unwrap();
    eventually("the dead writer is recovered", || reader.is_torn());
    assert!(
        d.client().stat("victim").is_ok(),
        "the daemon stopped serving"
    );
}

/// Finding 2: a read-only reader crashed the array's writers (of another uid) the same way.
/// Now the writer writes on undisturbed while the reader tries every resize.
#[test]
fn a_reader_cannot_crash_a_writer_of_another_uid() {
    if !can_switch_uid() {
        return;
    }
    let d = shared_daemon(&[]);
    d.client()
        .create(
            &CreateOptions::new("shared", "u8", &[512])
                .memory()
                .mode(0o666),
        )
        .unwrap();
    let writer = Worker::spawn_as(ALICE, &["client-writer", &socket(&d), "shared", "2"]);
    for _ in 0..5 {
        expect(&attack(MALLORY, &d, "shared", "array"), RESIZE_REFUSED);
    }
    let (status, lines) = writer.finish(WATCHDOG);
    assert_eq!(
        status.signal(),
        None,
        "the writer died of a signal: {lines:?}"
    );
    assert!(status.success(), "writer: {status:?} {lines:?}");
}

/// Finding 3: under `--max-bytes 1M`, a reader grew /dev/shm by 2 GiB with `fallocate` on the
/// control descriptor it received. Now the control state cannot grow, and the daemon's memory
/// directory holds what the arrays need and nothing more.
#[test]
fn a_reader_cannot_grow_memory_past_the_byte_limit() {
    if !can_switch_uid() {
        return;
    }
    let d = shared_daemon(&["--max-bytes", "1M"]);
    d.client()
        .create(
            &CreateOptions::new("small", "u1", &[1000])
                .memory()
                .mode(0o644),
        )
        .unwrap();
    d.client()
        .create_stream(
            &StreamOptions::new("frames", "u1", &[1000])
                .memory()
                .mode(0o644),
        )
        .unwrap();
    let used = |dir: &std::path::Path| -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
            .sum()
    };
    // Memory-backed files and memfds both count as Shmem.
    let shmem = || -> u64 {
        let info = std::fs::read_to_string("/proc/meminfo").unwrap();
        let line = info.lines().find(|l| l.starts_with("Shmem:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    let (before, shmem_before) = (used(&d.mem_dir()), shmem());
    let array = attack(MALLORY, &d, "small", "array");
    expect(&array, &["fd1_fallocate=EPERM", "fd1_len_after=4096"]);
    let stream = attack(MALLORY, &d, "frames", "stream");
    expect(
        &stream,
        &[
            "fd0_fallocate=EBADF",
            "fd1_fallocate=EPERM",
            "fd1_reopened_fallocate=EPERM",
        ],
    );
    assert_eq!(used(&d.mem_dir()), before, "the memory directory grew");
    // The attack asked for 2 GiB twice; other tests running meanwhile use far less.
    let grown = shmem().saturating_sub(shmem_before);
    assert!(grown < 1 << 30, "shared memory grew by {grown} bytes");
}

/// The same for streams: a subscriber of another uid cannot resize the stream's control state
/// while a publisher and a lossless subscriber of the owner run; both finish normally with
/// every frame delivered.
#[test]
fn a_subscriber_cannot_crash_a_pipeline_of_another_uid() {
    if !can_switch_uid() {
        return;
    }
    let d = shared_daemon(&[]);
    d.client()
        .create_stream(
            &StreamOptions::new("cam", "u8", &[64])
                .memory()
                .mode(0o666)
                .slots(8),
        )
        .unwrap();
    let sock = socket(&d);
    let mut sub = Worker::spawn_as(
        ALICE,
        &["stream-sub", &sock, "cam", "lossless", "19999", "20"],
    );
    sub.expect_line("subscribed next=0", WATCHDOG);
    let publisher = Worker::spawn_as(ALICE, &["stream-pub", &sock, "cam", "20000"]);
    for _ in 0..5 {
        expect(&attack(MALLORY, &d, "cam", "stream"), RESIZE_REFUSED);
    }
    let (status, lines) = publisher.finish(WATCHDOG);
    assert!(status.success(), "publisher: {status:?} {lines:?}");
    let (status, lines) = sub.finish(WATCHDOG);
    assert!(status.success(), "subscriber: {status:?} {lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("received=20000 missed=0")),
        "{lines:?}"
    );
}

/// Finding 6: another user created `camera.frame` (mode 0666) first, and the owner's
/// README-style `create(..., exist_ok=True)` silently adopted it (streams needed only read
/// permission). Now `exist_ok` adopts only an object the caller owns; another user's is an
/// error that says the name is taken, and the squatter's own `exist_ok` still adopts its own.
#[test]
fn exist_ok_never_adopts_another_users_object() {
    if !can_switch_uid() {
        return;
    }
    let d = shared_daemon(&[]);
    let sock = socket(&d);
    let run = |uid: u32, name: &str, kind: &str| -> String {
        let (status, lines) =
            Worker::spawn_as(uid, &["create-exist-ok", &sock, name, kind]).finish(WATCHDOG);
        assert!(status.success(), "{lines:?}");
        lines.last().cloned().unwrap_or_default()
    };
    for (name, kind) in [("camera.frame", "array"), ("camera.stream", "stream")] {
        assert_eq!(run(MALLORY, name, kind), "created");
        let alice = run(ALICE, name, kind);
        assert!(
            alice.starts_with("refused=AlreadyExists:") && alice.contains("only its owner"),
            "{kind}: {alice}"
        );
        assert!(alice.contains(&format!("uid {MALLORY}")), "{alice}");
        // The squatter's own exist_ok is still an adoption.
        assert_eq!(run(MALLORY, name, kind), "created");
    }
    // Alice was never handed the array: it is still at version 0.
    let info = d.client().stat("camera.frame").unwrap();
    assert_eq!((info.owner_uid, info.version), (MALLORY, 0));
}

/// Finding 9: Stat of a 0600 object answered PermissionDenied naming owner and mode (an
/// unknown name answered NotFound), AlreadyExists described dtype, shape and order, and `path`
/// and NoSpace messages showed the daemon's directories (the NoSpace wording for other users
/// is checked by a unit test in the daemon's registry). Now every request by the name of an
/// object the caller may not read is answered exactly as for a name that does not exist (a
/// create: "taken", nothing more), and no reply shows a path to a user other than root or the
/// daemon's own.
#[test]
fn an_object_a_user_may_not_read_is_answered_as_a_name_that_does_not_exist() {
    if !can_switch_uid() {
        return;
    }
    let d = shared_daemon(&[]);
    let c = d.client();
    c.create(
        &CreateOptions::new("secret", "f8", &[3, 5])
            .memory()
            .mode(0o600),
    )
    .unwrap();
    c.create_stream(
        &StreamOptions::new("secret.s", "u2", &[7])
            .memory()
            .mode(0o600),
    )
    .unwrap();
    let root_path = d.root.path().display().to_string();
    for (hidden, absent) in [("secret", "nothing"), ("secret.s", "nothing.s")] {
        let (status, lines) =
            Worker::spawn_as(MALLORY, &["names-probe", &socket(&d), hidden, absent])
                .finish(WATCHDOG);
        assert!(status.success(), "{lines:?}");
        let answer = |op: &str, label: &str| -> String {
            let prefix = format!("{op} {label}=");
            lines
                .iter()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no {prefix} in {lines:?}"))
                .to_owned()
        };
        for op in [
            "stat",
            "describe",
            "open_read",
            "open_write",
            "subscribe",
            "publish",
            "delete",
            "listed",
        ] {
            assert_eq!(answer(op, "hidden"), answer(op, "absent"), "{hidden}: {op}");
        }
        assert_eq!(answer("stat", "hidden").split(':').next(), Some("NotFound"));
        for op in ["create", "create_stream"] {
            let taken = answer(op, "hidden");
            assert!(
                taken.contains("AlreadyExists")
                    && taken.contains("the name \"NAME\" is taken by an object of another user"),
                "{op}: {taken}"
            );
            for detail in ["f8", "<f8", "u2", "(3, 5)", "0o600", "uid 0", "order"] {
                assert!(!taken.contains(detail), "{op} leaks {detail:?}: {taken}");
            }
        }
        for line in &lines {
            assert!(!line.contains(&root_path), "a path leaked: {line}");
        }
        // An array larger than the memory: refused by the user's share before the filesystem
        // is asked, naming sizes but no directory (checked above for every line).
        let huge = line_with(&lines, "nospace=");
        assert!(huge.contains("--user-share"), "{huge}");
        assert!(lines.contains(&"own_path=".to_owned()), "{lines:?}");
        assert!(lines.contains(&"own_stat_path=".to_owned()), "{lines:?}");
    }
    // Root (and the daemon's uid) still see paths.
    assert!(c.stat("secret").unwrap().path.starts_with(&root_path));
}

fn line_with<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in {lines:?}"))
}

fn number(lines: &[String], key: &str) -> u64 {
    let rest = line_with(lines, &format!("{key}="));
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// Finding 7, idle connections: 1024 connections that said Hello and then idled were never
/// timed out, and the daemon's own user then got Busy. Now each other uid holds at most its
/// own share of connections, users other than the daemon's own and root never take the
/// reserved slots, and a connection that holds nothing and sends nothing is closed after
/// `--idle-timeout`. Judged by counts: how many got in, how many were refused, how many the
/// daemon closed.
#[test]
fn idle_connections_of_other_users_cannot_lock_the_owner_out() {
    if !can_switch_uid() {
        return;
    }
    let d = shared_daemon(&[
        "--max-connections",
        "40",
        "--reserved-connections",
        "8",
        "--max-connections-per-user",
        "20",
        "--idle-timeout",
        "2",
    ]);
    let sock = socket(&d);
    let mut mallory = Worker::spawn_as(MALLORY, &["hold-connections", &sock, "30", "60"]);
    let held = mallory.expect_line("connected=", WATCHDOG);
    assert!(held.starts_with("connected=20 busy=10"), "{held}");
    assert!(held.contains("--max-connections-per-user 20"), "{held}");
    let mut alice = Worker::spawn_as(ALICE, &["hold-connections", &sock, "20", "60"]);
    let held = alice.expect_line("connected=", WATCHDOG);
    assert!(held.starts_with("connected=12 busy=8"), "{held}");
    assert!(held.contains("--reserved-connections 8"), "{held}");
    // The daemon's owner (root here) is served all the same.
    let c = d.client();
    for i in 0..8 {
        c.create(&CreateOptions::new(format!("owner-{i}"), "u1", &[8]))
            .unwrap();
    }
    // And every idle connection is closed by the daemon after --idle-timeout.
    for (who, worker, n) in [("mallory", mallory, 20), ("alice", alice, 12)] {
        let (status, lines) = worker.finish(WATCHDOG);
        assert!(status.success(), "{who}: {lines:?}");
        assert_eq!(number(&lines, "closed"), n, "{who}: {lines:?}");
    }
}

/// Finding 7, churn: after each close of a connection that held a stream, the daemon
/// waited up to 2 s for the client process to exit while still holding the connection's slot,
/// so a process that opens and closes connections quickly (and lives on) ran out of slots.
/// Now the slot is given back before that wait: 80 connect-open-close rounds under a limit of
/// 5 connections per user are all served.
#[test]
fn a_connection_slot_is_free_again_before_the_post_close_wait() {
    if !can_switch_uid() {
        return;
    }
    let d = shared_daemon(&["--max-connections-per-user", "5"]);
    d.client()
        .create_stream(&StreamOptions::new("churned", "u1", &[8]).mode(0o666))
        .unwrap();
    let (status, lines) =
        Worker::spawn_as(MALLORY, &["churn", &socket(&d), "churned", "80"]).finish(WATCHDOG);
    assert!(status.success(), "{lines:?}");
    assert_eq!(line_with(&lines, ""), "ok=80 busy=0");
}

/// Finding 8, per-user limits: under `--max-bytes` one user could take the whole budget and
/// lock the daemon's owner out. Now each other user's objects take at most `--user-share` of
/// what the daemon could hold, users other than the owner and root together at most what
/// `--reserve` leaves them, and the refusals name the limit, its value and the usage. The
/// owner can still create in the reserved room.
#[test]
fn one_user_cannot_take_the_whole_byte_budget() {
    if !can_switch_uid() {
        return;
    }
    let d = shared_daemon(&["--max-bytes", "64M", "--user-share", "40"]);
    let sock = socket(&d);
    let run = |uid: u32, prefix: &str| {
        let (status, lines) =
            Worker::spawn_as(uid, &["create-until", &sock, prefix, "1", "memory"]).finish(WATCHDOG);
        assert!(status.success(), "{lines:?}");
        (
            number(&lines, "created"),
            line_with(&lines, "refused=").to_owned(),
        )
    };
    // 40% of 64 MiB is 26.8 MB: 25 arrays of 1 MiB (+ header and control state).
    let (n, why) = run(MALLORY, "m");
    assert_eq!(n, 25, "{why}");
    assert!(
        why.starts_with("QuotaExceeded:") && why.contains(&format!("uid {MALLORY} has")),
        "{why}"
    );
    assert!(why.contains("--user-share 40%"), "{why}");
    // Together, other users may have 75% of 64 MiB: Alice gets the rest of that, not 25.
    let (n, why) = run(ALICE, "a");
    assert!(n < 25, "alice created {n}: {why}");
    assert!(why.contains("--reserve 25%"), "{why}");
    // The owner (root) creates in the room kept for it.
    let c = d.client();
    for i in 0..12 {
        c.create(&CreateOptions::new(format!("owner-{i}"), "u1", &[1 << 20]).memory())
            .unwrap();
    }
}

/// Finding 8, no default limit: with default flags one user created a memory array as large
/// as it liked, with nothing between it and the whole tmpfs (all of RAM). Now a user other
/// than the daemon's own and root gets at most a quarter of what the daemon could hold in its
/// memory directory, and is told so before anything is allocated.
#[test]
fn by_default_a_user_gets_a_share_of_memory_not_all_of_it() {
    if !can_switch_uid() {
        return;
    }
    let d = shared_daemon(&[]);
    let fs = rustix::fs::statvfs(d.mem_dir()).unwrap();
    // A third of the memory filesystem: more than a quarter of it, refused by the share
    // before anything is allocated, however much is free (a size capped at the free space
    // fell under the share on a disk less than a quarter free, and was created).
    let mib = ((fs.f_blocks * fs.f_frsize / 3) >> 20).max(1);
    let (status, lines) = Worker::spawn_as(
        MALLORY,
        &[
            "create-until",
            &socket(&d),
            "big",
            &mib.to_string(),
            "memory",
        ],
    )
    .finish(WATCHDOG);
    assert!(status.success(), "{lines:?}");
    assert_eq!(number(&lines, "created"), 0, "{lines:?}");
    let why = line_with(&lines, "refused=");
    assert!(
        why.starts_with("QuotaExceeded:") && why.contains("--user-share 25%"),
        "{why}"
    );
}

/// A writer (trusted with contents, not with the daemon) truncates its array's file to 0 and
/// back as fast as it can while the daemon answers Stat and runs its periodic checks, which
/// read that file's mapping: the daemon's size check races with the truncation, and the
/// truncation guard turns what would be SIGBUS into a zero page. The daemon survives and
/// serves everyone else. (`guard::tests` shows the guard itself deterministically.)
#[test]
fn a_writer_truncating_its_file_cannot_crash_the_daemon() {
    if !can_switch_uid() {
        return;
    }
    let mut d = shared_daemon(&[]);
    let c = d.client();
    c.create(
        &CreateOptions::new("cut", "u8", &[4096])
            .memory()
            .mode(0o666),
    )
    .unwrap();
    c.create(&CreateOptions::new("bystander", "u1", &[8]).memory())
        .unwrap();
    let writer = Worker::spawn_as(MALLORY, &["truncate-loop", &socket(&d), "cut", "3"]);
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let _ = c.stat("cut");
        let _ = c.list_all("");
    }
    let (status, lines) = writer.finish(WATCHDOG);
    assert!(status.success(), "{lines:?}");
    assert!(d.is_running(), "the daemon died");
    assert!(c.stat("bystander").is_ok());
}

/// A writer of another uid that grows its array's file (`fallocate` through its read-write
/// descriptor) to take memory past its share has it cut back to the array's size by the
/// daemon's next periodic check (judged by the size, not by a clock).
#[test]
fn a_writer_growing_its_file_is_cut_back() {
    if !can_switch_uid() {
        return;
    }
    let d = shared_daemon(&[]);
    d.client()
        .create(
            &CreateOptions::new("grown", "u1", &[4096])
                .memory()
                .mode(0o666),
        )
        .unwrap();
    let (status, lines) =
        Worker::spawn_as(MALLORY, &["grow", &socket(&d), "grown", "64"]).finish(WATCHDOG);
    assert!(status.success(), "{lines:?}");
    assert_eq!(number(&lines, "grown"), 8192 + (64 << 20), "{lines:?}");
    assert_eq!(number(&lines, "cut_back"), 8192, "{lines:?}");
    assert!(
        d.client().stat("grown").is_ok(),
        "the array is still served"
    );
}

/// A client whose connection the daemon closed as idle (it held nothing) dials again on its
/// next request, which is served as if nothing happened.
#[test]
fn an_idle_clients_next_request_dials_again() {
    let d = Daemon::start(&["--idle-timeout", "1"]);
    // Made through another connection: a create takes a write lease, and a connection that
    // holds one is never idle.
    d.client()
        .create(&CreateOptions::new("later", "u1", &[8]))
        .unwrap();
    let c = d.client();
    assert_eq!(c.stat("later").unwrap().name, "later");
    eventually("the daemon closes the idle connection", || {
        d.log_has("holding nothing: closing")
    });
    assert_eq!(c.stat("later").unwrap().name, "later");
}

/// A user that creates memory arrays, keeps them mapped and deletes them holds their memory
/// all the same (tmpfs pages live while mapped): a deleted object stays counted against its
/// owner while any process maps it, so the loop stops at the user's share.
#[test]
fn deleting_what_one_still_maps_does_not_free_ones_share() {
    if !can_switch_uid() {
        return;
    }
    let d = shared_daemon(&["--max-bytes", "64M", "--user-share", "40"]);
    let (status, lines) =
        Worker::spawn_as(MALLORY, &["map-and-delete", &socket(&d), "md", "1", "100"])
            .finish(WATCHDOG);
    assert!(status.success(), "{lines:?}");
    assert_eq!(number(&lines, "created"), 25, "{lines:?}");
    assert!(
        line_with(&lines, "refused=").starts_with("QuotaExceeded:"),
        "{lines:?}"
    );
    // Once that process is gone, its deleted arrays are given back (by the daemon's next
    // periodic check): it may create as many again.
    let mut attempt = 0;
    let created = loop {
        let prefix = format!("again{attempt}");
        let (status, lines) = Worker::spawn_as(
            MALLORY,
            &["create-until", &socket(&d), &prefix, "1", "memory"],
        )
        .finish(WATCHDOG);
        assert!(status.success(), "{lines:?}");
        let n = number(&lines, "created");
        if n > 0 || attempt == 200 {
            break n;
        }
        attempt += 1;
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(created, 25);
}

/// No user can take every place the daemon has for open objects by holding objects open: a
/// user stops at its share of them (`--user-share`, here 25 % of 53 places under a 256
/// descriptor limit: 13) with QuotaExceeded naming it, and the daemon's owner still opens its
/// own objects.
#[test]
fn one_user_cannot_hold_every_open_place() {
    if !can_switch_uid() {
        return;
    }
    let d = Daemon::start_with_nofile(
        &[
            "--socket-mode",
            "0666",
            "--max-connections",
            "16",
            "--reserved-connections",
            "4",
        ],
        256,
    );
    std::fs::set_permissions(d.root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut hog = Worker::spawn_as(MALLORY, &["hold-many", &socket(&d), "hog", "40"]);
    let refused = hog.expect_line("refused", WATCHDOG);
    assert!(
        refused.contains("QuotaExceeded")
            && refused.contains(&format!("uid {MALLORY} already has 13 objects held open"))
            && refused.contains("--user-share 25%"),
        "{refused}"
    );
    assert_eq!(hog.expect_line("held=", WATCHDOG), "held=13");
    // The owner opens 30 objects of its own while the hog holds its share.
    let c = d.client();
    let mine: Vec<_> = (0..30)
        .map(|i| {
            c.create(&CreateOptions::new(format!("mine-{i}"), "u1", &[8]).memory())
                .unwrap_or_else(|e| {
                    panic!("the owner's create {i} while a user holds its share: {e}")
                })
        })
        .collect();
    drop(mine);
    hog.kill();
}
