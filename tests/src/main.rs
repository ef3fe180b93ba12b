//! `mmshare-test-worker`: the other process in cross-process and cross-language tests.
//!
//! Each subcommand plays one role against an array file and reports on stdout in `key=value`
//! lines, so tests in Rust and Python can drive it the same way. Exit codes: 0 success,
//! 2 usage error, 3 a torn snapshot was accepted (the detector fired), 4 timeout, 1 other error.
// One function (`fork_holder`) forks, which needs `unsafe`; everything else is safe code.
#![deny(unsafe_code)]

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mmshare::parse_shape;
use mmshare::{
    Access, Array, ArraySpec, Client, Complex, CreateOptions, DType, Delivery, Fault, Order,
    RawArray, ReadError, StreamError, f16, inject_fault,
};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Multiplier of the torn-read pattern: element `i` of version `v` is `v * K + i` (wrapping),
/// so every word of every version differs from every word of every other version.
const K: u64 = 0x9E37_79B9_7F4A_7C15;

fn pattern(version: u64, i: usize) -> u64 {
    version.wrapping_mul(K).wrapping_add(i as u64)
}

const USAGE: &str = "usage: mmshare-test-worker <command> ...
  writer PATH SECONDS [early-publish]   fill the u64 array with pattern(version) repeatedly
  client-writer SOCKET NAME SECONDS     the same, on an array opened through the daemon
  client-reader SOCKET NAME SECONDS     like reader, on an array opened through the daemon
  open-at-fd-limit SOCKET NAME          open NAME with no descriptor free: print the error
  hold-many SOCKET PREFIX N             create N memory arrays and hold them open
  path-sub PATH COUNT                   subscribe by path, losslessly; check COUNT frames
  client-wait SOCKET NAME               wait (through the daemon) for NAME's next version
  hold-then-exec SOCKET NAME            take NAME's write side, then exec sleep
  subscribe-then-exec SOCKET NAME       subscribe losslessly, then exec sleep
  reader PATH SECONDS [skip-recheck]    read snapshots and check each one is consistent
  hold PATH                             take the write side, print 'holding', sleep forever
  scribble PATH                         write patterns back to back forever (to be killed)
  expect-torn PATH TIMEOUT_MS           wait for the array to become torn; print 'torn'
  wait PATH NEWER_THAN TIMEOUT_MS       wait for a newer version; print version and wakeups
  sample DIR NAME DTYPE SHAPE ORDER     create an array with element i = i % 251 (per dtype)
  write-u8 PATH BYTE                    fill a u8 array with BYTE
  region-writer PATH SECS A..B [early-publish]
                                        write rows A..B ('all': every row) of a 2-d u64 array
                                        with pattern(version) repeatedly; print 'writes=N'
  region-reader PATH SECS B0,B1,.. [skip-recheck]
                                        read random row ranges; rows Bk..Bk+1 must each come
                                        from one write (exit 3 if not); whole copies exact
  huge-io PATH OPS SEED release|keep    OPS times: write a random row of a 2-d u8 array (one
                                        region), read it back, read another row, checking
                                        each; 'release' drops pages after each; print ops,
                                        bytes touched, peak resident memory (hwm_kib) and the
                                        mean time of a write and of a read in µs
  region-wait-read PATH A..B            print 'waiting', read rows A..B of a 2-d u64 array
                                        (blocked while a writer holds them); print the version
                                        and the futex wake-ups that ended its sleeps
  region-hold PATH A..B                 take the write side of rows A..B, print 'holding',
                                        sleep forever
  client-region-hold SOCKET NAME A..B   the same, on an array opened through the daemon
  client-region-writer SOCKET NAME SECS A..B
                                        region-writer on an array opened through the daemon
  client-write SOCKET NAME BYTE         open NAME (u8) for writing through the daemon, fill it
  client-hold SOCKET NAME               open NAME for writing through the daemon, hold the write side
  create-loop SOCKET PREFIX MIB         create PREFIX-0, PREFIX-1, ... of MIB MiB each, forever
  perm-probe SOCKET NAME600 NAME644     report what this uid may do with the two arrays
  client-fork-hold SOCKET NAME          open NAME for writing through the daemon, fork a child
                                        that holds the write side (inherited mapping), stay connected
  ledger-writer PATH ID                 whole writes of pattern(version) + ID, printing
                                        'w ID VERSION' inside each write, until PATH.stop exists
  ledger-reader PATH                    check every snapshot against the writer-id pattern until
                                        PATH.stop exists (exit 3 on a torn one)
  slow-writes SOCKET NAME N HOLD_MS     N whole writes through the daemon, each holding the write
                                        side HOLD_MS; print 'ok VERSION' or 'lost ERROR' per write
  stream-pub SOCKET NAME FRAMES         publish FRAMES u64 frames (element i of frame n is
                                        pattern(n, i)) as fast as the ring allows; print
                                        'published N'
  stream-sub SOCKET NAME MODE LAST [US] subscribe (lossless|lossy), print 'subscribed', take
                                        frames until frame LAST, checking each, sleeping US µs
                                        per frame; print 'received=R missed=M last=L'
  stream-hold SOCKET NAME MODE          subscribe, take one frame, print 'holding N', sleep
  stream-loan-hold SOCKET NAME          attach as publisher, loan a slot, half fill it with
                                        garbage, print 'loaned N lane=L', sleep
  fan-in-pub SOCKET NAME FRAMES [GATE] attach as one of the publishers of stream NAME (u64
                                        frames), print 'lane=L id=ID', publish FRAMES frames
                                        (element i of frame n of lane L is
                                        pattern(n + L * 2^40, i)); print 'published N' (or
                                        'refused kind=K message=M', exit 2)
  fan-in-sub SOCKET NAME COUNTS         subscribe losslessly, print 'subscribed', take frames
                                        until lane k gave COUNTS[k] (comma separated), checking
                                        each is the lane's next, whole, and tagged with its
                                        lane; print 'received=R missed=M publishers=ID,...'
  service-serve SOCKET NAME MODE        serve service NAME (requests and responses of 8 u64): print
                                        'serving slot=S', answer each request r with
                                        service_answer(r) until no request came for 3 s
                                        (MODE serve), or take requests and answer none, printing
                                        'holding N' after each (MODE stall); print 'served N'
  service-call SOCKET NAME N INFLIGHT   a requester of service NAME: print 'requester slot=R',
                                        send N requests (element i of request id is
                                        pattern(R << 32 | id, i)) with at most INFLIGHT
                                        unanswered, check every response (id, content); print
                                        'called N bad=B' (or 'lost server=S pending=K', exit 3)
  stream-latest SOCKET NAME COUNT       call latest() until it returned COUNT frames (30 s at
                                        most), checking each; print 'latest=COUNT newest=N'
                                        and the rate
  stream-scribble FILE SECONDS          write pseudo-random words at random offsets of FILE
  stream-scribble-fd SOCKET NAME SECONDS
                                        the same on the control state a subscriber receives
  names-probe SOCKET HIDDEN ABSENT      every request by name on HIDDEN (another user's object
                                        this uid may not read) and on ABSENT (no object);
                                        print 'OP hidden=KIND:MESSAGE' and 'OP absent=...' with
                                        the name replaced by NAME; then a NoSpace create
  create-exist-ok SOCKET NAME KIND      create array (KIND array: u1 (16,) in memory, 0666) or
                                        stream (u1 (16,), 0666) NAME with exist_ok; print
                                        'created' or 'refused=KIND:MESSAGE'
  hold-connections SOCKET N SECONDS     open N connections (each says Hello), print
                                        'connected=K busy=B busy_message=M', then wait up to
                                        SECONDS for the daemon to close them: 'closed=C'
  churn SOCKET NAME N                   N times: connect, subscribe to stream NAME, close the
                                        connection (this process lives on); print 'ok=K busy=B'
  create-until SOCKET PREFIX MIB BACKING
                                        create PREFIX-0, PREFIX-1, ... of MIB MiB each
                                        (file|memory) until one is refused; print 'created=N'
                                        and 'refused=KIND:MESSAGE'
  truncate-loop SOCKET NAME SECONDS     open array NAME for writing (raw protocol) and truncate
                                        its file to 0 and back, over and over; print 'rounds=N'
  grow SOCKET NAME MIB                   open array NAME for writing (raw protocol), grow its
                                        file by MIB MiB with fallocate, print 'grown=SIZE', then
                                        wait (30 s at most) until it is its own size again:
                                        'cut_back=SIZE'
  map-and-delete SOCKET PREFIX MIB N    N times: create memory array PREFIX-i of MIB MiB, keep
                                        it mapped, delete it; print 'created=K' and
                                        'refused=KIND:MESSAGE' (or 'refused=none')
  raw-hold SOCKET NAME                  subscribe to stream NAME speaking the protocol raw (no
                                        library: no participant lock of its own), print
                                        'holding', keep the descriptors, sleep
  control-attack SOCKET NAME KIND [all] speak the protocol raw: open array NAME read-only (KIND
                                        array) or subscribe to stream NAME (KIND stream), then
                                        try to resize the control descriptor received (every
                                        descriptor with 'all'); print 'fds=N' and
                                        'fdI_WHAT=ok|ERRNO' lines
  records-pub SOCKET NAME FRAMES        wait for record stream NAME and a subscriber, publish
                                        FRAMES frames of Detection records, print 'published N'
  records-check SOCKET NAME FRAMES      subscribe losslessly to record stream NAME, print
                                        'subscribed', check FRAMES frames of Detection records,
                                        print 'ok frames=N'
  frames-pub SOCKET NAME FRAMES         wait for stream NAME (u2 frames of up to 6x4, variable,
                                        with a FrameHeader per frame) and a subscriber, publish
                                        FRAMES frames of `frame_rows(n)` rows, print 'published N'
  frames-check SOCKET NAME FRAMES       subscribe losslessly to that stream, print 'subscribed',
                                        check FRAMES frames (rows, data, header), print
                                        'ok frames=N'
  client-poke SOCKET NAME...            through the daemon, publish one frame of each u64
                                        stream, element k = k + 1; print 'poked N'
  poke [a:ARRAY | s:STREAM]...          write every element of each u64 array with its index
                                        + 1; publish one frame of each u64 stream, element k =
                                        k + 1; print 'poked N'
  connect-as SOCKET|default UID|- NAME|-
                                        connect to SOCKET (or the default socket) expecting the
                                        daemon to run as UID (- for the default expectation),
                                        print 'connected euid=E path=P', then create the memory
                                        array NAME (u1, 4 elements) and print 'created NAME';
                                        on failure print 'error=VARIANT expected=E actual=A'
                                        and 'message=...', exit 1";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let outcome = match args.as_slice() {
        ["writer", path, secs, rest @ ..] => writer(path, secs.parse().unwrap_or(1.0), rest),
        ["reader", path, secs, rest @ ..] => reader(path, secs.parse().unwrap_or(1.0), rest),
        ["client-writer", socket, name, secs] => Client::connect(socket)
            .map_err(Into::into)
            .and_then(|c| Ok(c.open::<u64>(name, Access::Write)?))
            .and_then(|a| write_patterns(&a, secs.parse().unwrap_or(1.0))),
        ["client-reader", socket, name, secs] => Client::connect(socket)
            .map_err(Into::into)
            .and_then(|c| Ok(c.open::<u64>(name, Access::Read)?))
            .and_then(|a| check_patterns(&a, secs.parse().unwrap_or(1.0))),
        ["poke", targets @ ..] => poke(targets),
        ["client-poke", socket, names @ ..] => client_poke(socket, names),
        ["hold", path] => hold(path),
        ["scribble", path] => scribble(path),
        ["expect-torn", path, ms] => expect_torn(path, ms.parse().unwrap_or(10_000)),
        ["wait", path, newer, ms] => wait(
            path,
            newer.parse().unwrap_or(0),
            ms.parse().unwrap_or(10_000),
        ),
        ["sample", dir, name, dtype, shape, order] => sample(dir, name, dtype, shape, order),
        ["write-u8", path, byte] => write_u8(path, byte.parse().unwrap_or(0)),
        ["region-writer", path, secs, rows, rest @ ..] => {
            region_writer(path, secs.parse().unwrap_or(1.0), rows, rest)
        }
        ["region-reader", path, secs, blocks, rest @ ..] => {
            region_reader(path, secs.parse().unwrap_or(1.0), blocks, rest)
        }
        ["region-hold", path, rows] => region_hold(path, rows),
        ["region-wait-read", path, rows] => region_wait_read(path, rows),
        ["huge-io", path, ops, seed, pages] => huge_io(
            path,
            ops.parse().unwrap_or(1),
            seed.parse().unwrap_or(1),
            *pages == "release",
        ),
        ["client-region-hold", socket, name, rows] => client_region_hold(socket, name, rows),
        ["client-region-writer", socket, name, secs, rows] => Client::connect(socket)
            .map_err(Into::into)
            .and_then(|c| Ok(c.open::<u64>(name, Access::Write)?))
            .and_then(|a| write_region_patterns(&a, secs.parse().unwrap_or(1.0), rows)),
        ["client-write", socket, name, byte] => {
            client_write(socket, name, byte.parse().unwrap_or(0))
        }
        ["client-hold", socket, name] => client_hold(socket, name),
        ["create-loop", socket, prefix, mib] => {
            create_loop(socket, prefix, mib.parse().unwrap_or(1))
        }
        ["perm-probe", socket, n600, n644] => perm_probe(socket, n600, n644),
        ["client-fork-hold", socket, name] => fork_holder(socket, name),
        ["ledger-writer", path, id] => ledger_writer(path, id.parse().unwrap_or(0)),
        ["ledger-reader", path] => ledger_reader(path),
        ["slow-writes", socket, name, n, ms] => slow_writes(
            socket,
            name,
            n.parse().unwrap_or(1),
            ms.parse().unwrap_or(100),
        ),
        ["stream-pub", socket, name, frames] => {
            stream_pub(socket, name, frames.parse().unwrap_or(0), 0)
        }
        ["stream-pub-paced", socket, name, frames, every_us] => stream_pub(
            socket,
            name,
            frames.parse().unwrap_or(0),
            every_us.parse().unwrap_or(0),
        ),
        ["stream-sub", socket, name, mode, last, rest @ ..] => stream_sub(
            socket,
            name,
            mode,
            last.parse().unwrap_or(0),
            rest.first().and_then(|us| us.parse().ok()).unwrap_or(0),
        ),
        ["stream-hold", socket, name, mode] => stream_hold(socket, name, mode),
        ["records-pub", socket, name, frames] => {
            records_pub(socket, name, frames.parse().unwrap_or(0))
        }
        ["records-check", socket, name, frames] => {
            records_check(socket, name, frames.parse().unwrap_or(0))
        }
        ["frames-pub", socket, name, frames] => {
            frames_pub(socket, name, frames.parse().unwrap_or(0))
        }
        ["frames-check", socket, name, frames] => {
            frames_check(socket, name, frames.parse().unwrap_or(0))
        }
        ["stream-loan-hold", socket, name] => stream_loan_hold(socket, name),
        ["fan-in-pub", socket, name, frames] => fan_in_pub(socket, name, frames, None),
        ["fan-in-pub", socket, name, frames, gate] => fan_in_pub(socket, name, frames, Some(gate)),
        ["fan-in-sub", socket, name, counts] => fan_in_sub(socket, name, counts),
        ["service-serve", socket, name, mode] => service_serve(socket, name, mode),
        ["service-call", socket, name, n, inflight] => service_call(socket, name, n, inflight),
        ["stream-latest", socket, name, count] => {
            stream_latest(socket, name, count.parse().unwrap_or(1000))
        }
        ["stream-scribble", file, secs] => std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(file)
            .map_err(Into::into)
            .and_then(|f| stream_scribble(&f, secs.parse().unwrap_or(1.0))),
        ["stream-scribble-fd", socket, name, secs] => raw_request(
            socket,
            &mmshare::internal::proto::Request::OpenStream {
                name: (*name).to_owned(),
                role: mmshare::internal::proto::StreamRole::Subscribe,
            },
        )
        .and_then(|(_, fds)| {
            let control = fds.into_iter().nth(1).ok_or("no control descriptor")?;
            stream_scribble(&std::fs::File::from(control), secs.parse().unwrap_or(1.0))
        }),
        ["hold-connections", socket, n, secs] => {
            hold_connections(socket, n.parse().unwrap_or(1), secs.parse().unwrap_or(10.0))
        }
        ["churn", socket, name, n] => churn(socket, name, n.parse().unwrap_or(1)),
        ["create-until", socket, prefix, mib, backing] => {
            create_until(socket, prefix, mib.parse().unwrap_or(1), backing)
        }
        ["truncate-loop", socket, name, secs] => {
            truncate_loop(socket, name, secs.parse().unwrap_or(1.0))
        }
        ["grow", socket, name, mib] => grow(socket, name, mib.parse().unwrap_or(1)),
        ["map-and-delete", socket, prefix, mib, n] => map_and_delete(
            socket,
            prefix,
            mib.parse().unwrap_or(1),
            n.parse().unwrap_or(1),
        ),
        ["raw-hold", socket, name] => raw_request(
            socket,
            &mmshare::internal::proto::Request::OpenStream {
                name: (*name).to_owned(),
                role: mmshare::internal::proto::StreamRole::Subscribe,
            },
        )
        .map(|(_, fds)| {
            say("holding");
            std::thread::sleep(Duration::from_secs(3600));
            drop(fds);
            ExitCode::SUCCESS
        }),
        ["names-probe", socket, hidden, absent] => names_probe(socket, hidden, absent),
        ["create-exist-ok", socket, name, kind] => create_exist_ok(socket, name, kind),
        ["control-attack", socket, name, kind, rest @ ..] => {
            control_attack(socket, name, kind, rest.first() == Some(&"all"))
        }
        ["connect-as", target, uid, name] => connect_as(target, uid, name),
        ["open-at-fd-limit", socket, name] => open_at_fd_limit(socket, name),
        ["hold-many", socket, prefix, n] => hold_many(socket, prefix, n.parse().unwrap_or(1)),
        ["path-sub", path, count] => path_sub(path, count.parse().unwrap_or(1)),
        ["client-wait", socket, name] => client_wait(socket, name),
        ["hold-then-exec", socket, name] => hold_then_exec(socket, name),
        ["subscribe-then-exec", socket, name] => subscribe_then_exec(socket, name),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mmshare-test-worker: {e}");
            ExitCode::from(1)
        }
    }
}

/// Opens `name` for writing through the daemon, takes the write side (a write left
/// half-done), says `holding`, then execs `sleep 3600`: the writer's process (pid and start
/// time) goes on as another program, its write never finished.
fn hold_then_exec(socket: &str, name: &str) -> Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let client = Client::connect(socket)?;
    let array = client.open_raw(name, Access::Write)?;
    let session = array.begin_write()?;
    say(&format!("holding version={}", session.version()));
    let e = std::process::Command::new("sleep").arg("3600").exec();
    drop((session, array));
    Err(format!("exec: {e}").into())
}

/// Opens `name` for reading through the daemon, says `waiting`, and waits (up to an hour)
/// for a version newer than the current one.
fn client_wait(socket: &str, name: &str) -> Result<ExitCode> {
    let client = Client::connect(socket)?;
    let array = client.open_raw(name, Access::Read)?;
    let v = array.version();
    say("waiting");
    let got = array.wait_for_version(v, Duration::from_secs(3600))?;
    say(&format!("woken version={got}"));
    Ok(ExitCode::SUCCESS)
}

/// Subscribes losslessly by path (no daemon) to the stream at `path`, says `subscribed`, and
/// checks `count` frames in order (`received=N missed=M`).
fn path_sub(path: &str, count: u64) -> Result<ExitCode> {
    let subscriber = mmshare::Subscriber::<u64>::open(path, Delivery::Lossless)?;
    say("subscribed");
    let first = subscriber.next_number();
    for next in first..first + count {
        let sample = subscriber.receive_timeout(Duration::from_secs(30))?;
        if sample.number() != next || sample[0] != pattern(next, 0) {
            return Err(format!("got frame {} expecting {next}", sample.number()).into());
        }
    }
    say(&format!(
        "received={} missed={}",
        subscriber.received(),
        subscriber.missed()
    ));
    Ok(ExitCode::SUCCESS)
}

/// Subscribes losslessly to `name` through the daemon, says `subscribed`, then execs
/// `sleep 3600`: the same process (pid and start time) goes on as another program.
fn subscribe_then_exec(socket: &str, name: &str) -> Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let client = Client::connect(socket)?;
    let subscriber = client.subscribe::<u64>(name, Delivery::Lossless)?;
    say("subscribed");
    let e = std::process::Command::new("sleep").arg("3600").exec();
    drop(subscriber);
    Err(format!("exec: {e}").into())
}

/// Creates up to `n` small memory arrays `PREFIX-I` and keeps each open; prints
/// `refused kind=KIND message=...` at the first refusal, then `held=K`, and holds them until
/// killed.
fn hold_many(socket: &str, prefix: &str, n: usize) -> Result<ExitCode> {
    let client = Client::connect(socket)?;
    let mut held = Vec::new();
    for i in 0..n {
        match client.create(&CreateOptions::new(format!("{prefix}-{i}"), "u1", &[8]).memory()) {
            Ok(a) => held.push(a),
            Err(e) => {
                say(&format!("refused kind={:?} message={e}", e.kind()));
                break;
            }
        }
    }
    say(&format!("held={}", held.len()));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Connects to `socket`, then lowers this process's descriptor limit so that no descriptor is
/// free, and opens `name`: prints the error the client reports (`error=KIND message=...`).
fn open_at_fd_limit(socket: &str, name: &str) -> Result<ExitCode> {
    let client = Client::connect(socket)?;
    let highest = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap_or(2);
    let limit = rustix::process::Rlimit {
        current: Some(highest + 8),
        ..rustix::process::getrlimit(rustix::process::Resource::Nofile)
    };
    rustix::process::setrlimit(rustix::process::Resource::Nofile, limit)?;
    // Take every descriptor still free.
    let mut taken = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        taken.push(f);
    }
    match client.open_raw(name, Access::Read) {
        Ok(_) => say("opened"),
        Err(e @ mmshare::ClientError::OutOfDescriptors { .. }) => {
            say(&format!("error=OutOfDescriptors message={e}"));
        }
        Err(e) => say(&format!("error=other message={e:?}")),
    }
    drop(taken);
    Ok(ExitCode::SUCCESS)
}

/// Connects as a program would (the default socket, or a named one, with or without an
/// expected server uid), and creates a memory array there if asked: what a victim of a taken
/// socket path would do. Reports what happened in `key=value` lines.
fn connect_as(target: &str, uid: &str, name: &str) -> Result<ExitCode> {
    let mut options = match target {
        "default" => mmshare::ConnectOptions::default_socket(),
        path => mmshare::ConnectOptions::new(path),
    };
    if uid != "-" {
        options = options.server_uid(uid.parse()?);
    }
    let created = Client::connect_with(&options).and_then(|client| {
        say(&format!(
            "connected euid={} path={}",
            rustix::process::geteuid().as_raw(),
            client.socket_path().display()
        ));
        if name != "-" {
            client.create(&CreateOptions::new(name, "u1", &[4]).memory())?;
            say(&format!("created {name}"));
        }
        Ok(())
    });
    match created {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            match &e {
                mmshare::ClientError::WrongServer {
                    expected, actual, ..
                } => say(&format!(
                    "error=WrongServer expected={expected} actual={actual}"
                )),
                mmshare::ClientError::BadServerUid { .. } => say("error=BadServerUid"),
                other => say(&format!("error=Other kind={:?}", other.kind())),
            }
            say(&format!("message={e}"));
            Ok(ExitCode::from(1))
        }
    }
}

/// Wakes async waiters from another process: one write per array, one frame per stream.
/// Through the daemon at `socket`: publishes one frame of each u64 stream `names`, element k
/// = k + 1; prints 'poked N'.
fn client_poke(socket: &str, names: &[&str]) -> Result<ExitCode> {
    let client = Client::connect(socket)?;
    for name in names {
        let mut p = client.publisher::<u64>(name)?;
        let mut loan = p.loan()?;
        for (k, x) in loan.iter_mut().enumerate() {
            *x = k as u64 + 1;
        }
        loan.publish();
    }
    say(&format!("poked {}", names.len()));
    Ok(ExitCode::SUCCESS)
}

fn poke(targets: &[&str]) -> Result<ExitCode> {
    for target in targets {
        match target.split_once(':') {
            Some(("a", path)) => {
                let a = Array::<u64>::open(path, Access::Write)?;
                let values: Vec<u64> = (1..=a.len() as u64).collect();
                a.write_all(&values)?;
            }
            Some(("s", path)) => {
                let mut p = mmshare::Publisher::<u64>::open(path)?;
                let mut loan = p.loan()?;
                for (k, x) in loan.iter_mut().enumerate() {
                    *x = k as u64 + 1;
                }
                loan.publish();
            }
            _ => return Err(format!("poke: {target:?} is neither a:PATH nor s:PATH").into()),
        }
    }
    say(&format!("poked {}", targets.len()));
    Ok(ExitCode::SUCCESS)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn writer(path: &str, secs: f64, rest: &[&str]) -> Result<ExitCode> {
    if rest == ["early-publish"] {
        inject_fault(Fault::EarlyPublish);
    }
    let a = Array::<u64>::open(path, Access::Write)?;
    write_patterns(&a, secs)
}

fn write_patterns(a: &Array<u64>, secs: f64) -> Result<ExitCode> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut writes = 0u64;
    loop {
        a.write_with(|v| {
            let version = v.version();
            let buf: Vec<u64> = (0..v.len()).map(|i| pattern(version, i)).collect();
            v.copy_from(0, &buf);
            v.clear_torn();
        })?;
        writes += 1;
        if Instant::now() >= deadline {
            break;
        }
        // A producer publishes frames, it does not hold the lock every instant: give readers a
        // window (a yield, not a sleep, so writes still overlap reads constantly).
        std::thread::yield_now();
    }
    say(&format!("writes={writes}"));
    Ok(ExitCode::SUCCESS)
}

/// Checks one snapshot: every element must be `pattern(version, i)`.
fn consistent(version: u64, buf: &[u64]) -> bool {
    buf.iter()
        .enumerate()
        .all(|(i, &x)| x == pattern(version, i))
}

fn reader(path: &str, secs: f64, rest: &[&str]) -> Result<ExitCode> {
    if rest == ["skip-recheck"] {
        inject_fault(Fault::SkipRecheck);
    }
    let a = Array::<u64>::open(path, Access::Read)?;
    check_patterns(&a, secs)
}

fn check_patterns(a: &Array<u64>, secs: f64) -> Result<ExitCode> {
    let mut buf = vec![0u64; a.len()];
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let (mut reads, mut last_version, mut versions_seen) = (0u64, 0u64, 0u64);
    while Instant::now() < deadline {
        let snap = a.read_into(&mut buf)?;
        reads += 1;
        if snap.version == 0 {
            continue; // never written yet: all zeros
        }
        if !consistent(snap.version, &buf) {
            let bad = buf
                .iter()
                .enumerate()
                .filter(|&(i, &x)| x != pattern(snap.version, i))
                .count();
            say(&format!(
                "torn snapshot accepted: version {} has {bad} of {} elements from another version",
                snap.version,
                buf.len()
            ));
            return Ok(ExitCode::from(3));
        }
        if snap.version < last_version {
            say(&format!(
                "version went backwards: {last_version} -> {}",
                snap.version
            ));
            return Ok(ExitCode::from(3));
        }
        if snap.version > last_version {
            versions_seen += 1;
        }
        last_version = snap.version;
    }
    say(&format!(
        "reads={reads} retries={} versions={versions_seen} last={last_version}",
        a.retries()
    ));
    Ok(ExitCode::SUCCESS)
}

fn hold(path: &str) -> Result<ExitCode> {
    let a = Array::<u64>::open(path, Access::Write)?;
    a.write_with(|v| {
        // Half a write, then stop forever: the state a SIGKILL mid-write leaves.
        v.set(0, 12345);
        say(&format!("holding pid={}", std::process::id()));
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

fn scribble(path: &str) -> Result<ExitCode> {
    let a = Array::<u64>::open(path, Access::Write)?;
    say("scribbling");
    loop {
        a.write_with(|v| {
            let version = v.version();
            for i in 0..v.len() {
                v.set(i, pattern(version, i));
            }
            v.clear_torn();
        })?;
    }
}

fn expect_torn(path: &str, ms: u64) -> Result<ExitCode> {
    let mut a = Array::<u64>::open(path, Access::Read)?;
    a.raw_mut().set_timeout(Duration::from_millis(ms));
    say("waiting");
    match a.read_to_vec() {
        Err(ReadError::Torn { version }) => {
            say(&format!("torn version={version}"));
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ ReadError::Timeout { .. }) => {
            say(&format!("timeout: {e}"));
            Ok(ExitCode::from(4))
        }
        Err(e) => Err(e.into()),
        Ok(_) => {
            say("read succeeded: not torn");
            Ok(ExitCode::from(1))
        }
    }
}

fn wait(path: &str, newer_than: u64, ms: u64) -> Result<ExitCode> {
    let a = RawArray::open(path, Access::Read)?;
    say("waiting");
    match a.wait_for_version(newer_than, Duration::from_millis(ms)) {
        Ok(v) => {
            say(&format!(
                "version={v} futex_wakeups={}",
                mmshare::internal::futex_wakeups()
            ));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            say(&format!("timeout: {e}"));
            Ok(ExitCode::from(4))
        }
    }
}

fn write_u8(path: &str, byte: u8) -> Result<ExitCode> {
    let a = Array::<u8>::open(path, Access::Write)?;
    let v = a.write_all(&vec![byte; a.len()])?;
    say(&format!("version={v}"));
    Ok(ExitCode::SUCCESS)
}

/// Creates `DIR/NAME` and fills element `i` (storage order) with `i % 251` converted to the
/// dtype (bool: `i % 2`; complex: real `i % 251`, imaginary `-(i % 251)`). The Python tests
/// compute the same values with NumPy and compare through a raw `np.memmap`.
fn sample(dir: &str, name: &str, dtype: &str, shape: &str, order: &str) -> Result<ExitCode> {
    let dtype = DType::parse(dtype)?;
    let mut spec = ArraySpec::new(name, dtype.clone(), parse_shape(shape)?);
    spec.order = order.parse::<Order>()?;
    let (path, header) = mmshare::create_array_file(Path::new(dir), &spec)?;
    let raw = RawArray::open(&path, Access::Write)?;
    let n = header.len() as usize;
    let v = |i: usize| (i % 251) as u8;
    let version = match dtype {
        DType::Bool => fill(raw, n, |i| mmshare::Bool8((i % 2) as u8))?,
        DType::I8 => fill(raw, n, |i| v(i) as i8)?,
        DType::I16 => fill(raw, n, |i| i16::from(v(i)))?,
        DType::I32 => fill(raw, n, |i| i32::from(v(i)))?,
        DType::I64 => fill(raw, n, |i| i64::from(v(i)))?,
        DType::U8 => fill(raw, n, v)?,
        DType::U16 => fill(raw, n, |i| u16::from(v(i)))?,
        DType::U32 => fill(raw, n, |i| u32::from(v(i)))?,
        DType::U64 => fill(raw, n, |i| u64::from(v(i)))?,
        DType::F16 => fill(raw, n, |i| f16::from_f32(f32::from(v(i))))?,
        DType::F32 => fill(raw, n, |i| f32::from(v(i)))?,
        DType::F64 => fill(raw, n, |i| f64::from(v(i)))?,
        DType::Complex64 => fill(raw, n, |i| Complex::new(f32::from(v(i)), -f32::from(v(i))))?,
        DType::Complex128 => fill(raw, n, |i| Complex::new(f64::from(v(i)), -f64::from(v(i))))?,
        other => return Err(format!("no sample values for dtype {}", other.descr()).into()),
    };
    say(&format!("path={} version={version}", path.display()));
    Ok(ExitCode::SUCCESS)
}

fn fill<T: mmshare::Element>(raw: RawArray, n: usize, f: impl Fn(usize) -> T) -> Result<u64> {
    let a = Array::<T>::from_raw(raw)?;
    let data: Vec<T> = (0..n).map(f).collect();
    Ok(a.write_all(&data)?)
}

fn client_write(socket: &str, name: &str, byte: u8) -> Result<ExitCode> {
    use std::os::unix::fs::MetadataExt;
    let client = Client::connect(socket)?;
    let a = client.open::<u8>(name, Access::Write)?;
    let v = a.write_all(&vec![byte; a.len()])?;
    let ino = a.file().metadata()?.ino();
    say(&format!("version={v} inode={ino}"));
    Ok(ExitCode::SUCCESS)
}

fn client_hold(socket: &str, name: &str) -> Result<ExitCode> {
    let client = Client::connect(socket)?;
    let a = client.open_raw(name, Access::Write)?;
    a.write_bytes(0, &[1])?; // a complete write first, so the torn state is clearly new
    let v = a.version();
    let typed = Array::<u8>::from_raw(RawArray::from_file(a.file().try_clone()?, Access::Write)?)?;
    typed.write_with(|view| {
        view.set(0, 99);
        say(&format!("holding pid={} version={v}", std::process::id()));
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

fn create_loop(socket: &str, prefix: &str, mib: u64) -> Result<ExitCode> {
    let client = Client::connect(socket)?;
    for i in 0.. {
        let name = format!("{prefix}-{i}");
        if let Err(e) = client.create(&CreateOptions::new(&name, "u1", &[mib << 20])) {
            // Expected: the test kills the daemon under this loop.
            say(&format!("stopped: {e}"));
            return Ok(ExitCode::from(1));
        }
        say(&format!("created {name}"));
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs as another uid: every attempt prints one `what=outcome` line.
fn perm_probe(socket: &str, n600: &str, n644: &str) -> Result<ExitCode> {
    use std::os::fd::AsRawFd;
    let client = Client::connect(socket)?;
    let outcome = |r: std::result::Result<(), mmshare::ClientError>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => e
            .kind()
            .map_or_else(|| format!("error:{e}"), |k| format!("{k:?}")),
    };
    say(&format!("uid={}", rustix::process::getuid().as_raw()));
    say(&format!(
        "write600={}",
        outcome(client.open_raw(n600, Access::Write).map(drop))
    ));
    say(&format!(
        "write644={}",
        outcome(client.open_raw(n644, Access::Write).map(drop))
    ));
    say(&format!(
        "read600={}",
        outcome(client.open_raw(n600, Access::Read).map(drop))
    ));
    say(&format!("stat600={}", outcome(client.stat(n600).map(drop))));
    say(&format!("delete644={}", outcome(client.delete(n644))));
    let reader = client.open_raw(n644, Access::Read)?;
    say(&format!("read644=ok version={}", reader.version()));
    // The descriptor is read-only: mapping it writable must fail.
    let ro = reader.file().try_clone()?;
    let writable = RawArray::from_file(ro, Access::Write);
    say(&format!(
        "map_writable={}",
        if writable.is_ok() { "ok" } else { "denied" }
    ));
    // Nor can this uid reopen the file read-write through /proc.
    let proc_path = format!("/proc/self/fd/{}", reader.file().as_raw_fd());
    let reopen = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&proc_path);
    say(&format!(
        "proc_reopen_rw={}",
        match reopen {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("denied:{}", e.kind()),
        }
    ));
    Ok(ExitCode::SUCCESS)
}

/// A connected client (holding a write lease on NAME) forks a worker that inherits the
/// read-write mapping and takes the write side; the parent stays connected and idle. The
/// worker is what the test kills: the daemon must recover it although the lease stays open.
fn fork_holder(socket: &str, name: &str) -> Result<ExitCode> {
    let client = Client::connect(socket)?;
    let a = client.open::<u8>(name, Access::Write)?;
    // SAFETY: this process has a single thread (the worker never spawns any), so the child of
    // `fork` may run arbitrary code.
    #[allow(unsafe_code)]
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(std::io::Error::last_os_error().into()),
        0 => {
            a.write_with(|v| {
                v.set(0, 1);
                say(&format!("child holding pid={}", std::process::id()));
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
        child => {
            say(&format!(
                "parent connected pid={} child={child}",
                std::process::id()
            ));
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }
}

/// Multiplier that puts a writer's id into every word of its pattern.
const ID_K: u64 = 0xD6E8_FEB8_6659_FD93;

/// Word `i` of the ledger pattern: word 0 is the writer id, the others mix version and id, so
/// a snapshot mixing two writes, or two writers' stores of one version, is caught.
fn ledger_word(version: u64, id: u64, i: usize) -> u64 {
    if i == 0 {
        id
    } else {
        pattern(version, i).wrapping_add(id.wrapping_mul(ID_K))
    }
}

fn stop_requested(path: &str) -> bool {
    Path::new(&format!("{path}.stop")).exists()
}

/// Whole writes back to back; each prints `w ID VERSION` *inside* the write (before it is
/// published), so the test knows every version a writer took, even one it was killed in.
fn ledger_writer(path: &str, id: u64) -> Result<ExitCode> {
    let a = Array::<u64>::open(path, Access::Write)?;
    let mut buf = vec![0u64; a.len()];
    let mut writes = 0u64;
    while !stop_requested(path) {
        a.write_with(|v| {
            let version = v.version();
            for (i, w) in buf.iter_mut().enumerate() {
                *w = ledger_word(version, id, i);
            }
            v.copy_from(0, &buf);
            v.clear_torn();
            say(&format!("w {id} {version}"));
        })?;
        writes += 1;
    }
    say(&format!("writes={writes}"));
    Ok(ExitCode::SUCCESS)
}

/// Reads until told to stop; every accepted snapshot must be one writer's whole write of
/// exactly the snapshot's version. Torn arrays and timeouts (a killed writer not yet
/// recovered) are waited out.
fn ledger_reader(path: &str) -> Result<ExitCode> {
    let mut a = Array::<u64>::open(path, Access::Read)?;
    a.raw_mut().set_timeout(Duration::from_millis(200));
    let mut buf = vec![0u64; a.len()];
    let (mut reads, mut torn, mut timeouts, mut last) = (0u64, 0u64, 0u64, 0u64);
    while !stop_requested(path) {
        let snap = match a.read_into(&mut buf) {
            Ok(snap) => snap,
            Err(ReadError::Torn { .. }) => {
                torn += 1;
                continue;
            }
            Err(ReadError::Timeout { .. }) => {
                timeouts += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        reads += 1;
        if snap.version < last {
            say(&format!(
                "version went backwards: {last} -> {}",
                snap.version
            ));
            return Ok(ExitCode::from(3));
        }
        last = snap.version;
        if snap.version == 0 {
            continue;
        }
        let id = buf[0];
        if id > 1000
            || buf
                .iter()
                .enumerate()
                .any(|(i, &w)| w != ledger_word(snap.version, id, i))
        {
            say(&format!(
                "torn snapshot accepted: version {} word0 {id}",
                snap.version
            ));
            return Ok(ExitCode::from(3));
        }
    }
    say(&format!(
        "reads={reads} torn={torn} timeouts={timeouts} last={last}"
    ));
    Ok(ExitCode::SUCCESS)
}

/// `n` whole writes through the daemon, each holding the write side for `hold_ms`. A write
/// whose write side a recovery took over must fail cleanly (`LostWriteSide`), never succeed.
fn slow_writes(socket: &str, name: &str, n: u32, hold_ms: u64) -> Result<ExitCode> {
    let client = Client::connect(socket)?;
    let a = client.open::<u8>(name, Access::Write)?;
    say(&format!("writing pid={}", std::process::id()));
    for round in 0..n {
        let result = a.write_with(|v| {
            v.fill(round as u8);
            std::thread::sleep(Duration::from_millis(hold_ms));
            v.version()
        });
        match result {
            Ok(version) => say(&format!("ok {version}")),
            Err(e @ mmshare::WriteError::LostWriteSide { .. }) => say(&format!("lost {e}")),
            Err(e) => return Err(e.into()),
        }
    }
    say("done");
    Ok(ExitCode::SUCCESS)
}

fn delivery(mode: &str) -> Result<Delivery> {
    Ok(subscribe_options(mode)?.delivery())
}

/// `lossless` or `lossy` (each starting where it does by default), or either with `-next`
/// (starting at the next frame published).
fn subscribe_options(mode: &str) -> Result<mmshare::SubscribeOptions> {
    let (mode, next) = match mode.strip_suffix("-next") {
        Some(mode) => (mode, true),
        None => (mode, false),
    };
    let options = match mode {
        "lossless" => mmshare::SubscribeOptions::new(Delivery::Lossless),
        "lossy" => mmshare::SubscribeOptions::new(Delivery::Lossy),
        other => {
            return Err(format!("mode must be lossless or lossy (-next), not {other:?}").into());
        }
    };
    Ok(if next {
        options.start(mmshare::StartAt::Next)
    } else {
        options
    })
}

/// Whether `frame` is frame `n`'s pattern.
fn is_frame(frame: &[u64], n: u64) -> bool {
    frame.iter().enumerate().all(|(i, &x)| x == pattern(n, i))
}

/// Publishes `frames` frames of the test pattern, one every `every_us` microseconds (0: as
/// fast as the ring allows).
/// The record the cross-language record tests share: in NumPy,
/// `np.dtype({'names': ['x', 'y', 'id', 't', 'box'], 'formats': ['<f4', '<f4', '<u4',
/// '<M8[ns]', ('<f4', (2, 2))], 'offsets': [0, 4, 8, 16, 24], 'itemsize': 40})`.
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable, mmshare::Record)]
#[repr(C)]
struct Detection {
    x: f32,
    y: f32,
    id: u32,
    #[mmshare(padding)]
    _pad: [u8; 4],
    t: mmshare::DateTime64<mmshare::units::Nanos>,
    #[mmshare(rename = "box")]
    bbox: [[f32; 2]; 2],
}

/// Record `i` of frame `n` of the record tests (tests/python/test_records.py builds the same).
fn detection(n: u64, i: u64) -> Detection {
    Detection {
        x: (n + i) as f32,
        y: -((n * 2 + i) as f32),
        id: (n * 10 + i) as u32,
        _pad: [0; 4],
        t: mmshare::DateTime64::new(1_700_000_000_000_000_000 + (n * 1000 + i) as i64),
        bbox: [[i as f32, n as f32], [1.5, -2.5]],
    }
}

/// Waits for the record stream NAME and one subscriber, publishes FRAMES frames of
/// `detection` records, prints 'published N'.
fn records_pub(socket: &str, name: &str, frames: u64) -> Result<ExitCode> {
    let client = Client::connect(socket)?;
    client.wait_for(name, Duration::from_secs(60))?;
    let mut publisher = client.publisher::<Detection>(name)?;
    publisher.wait_for_subscribers(1, Duration::from_secs(60))?;
    for _ in 0..frames {
        let mut loan = publisher.loan()?;
        let n = loan.number();
        for (i, r) in loan.iter_mut().enumerate() {
            *r = detection(n, i as u64);
        }
        loan.publish();
    }
    say(&format!("published {frames}"));
    Ok(ExitCode::SUCCESS)
}

/// Subscribes (lossless, from frame 0) to the record stream NAME, prints 'subscribed', and
/// checks FRAMES frames record by record; prints 'ok frames=N' or exits 1 naming the first
/// record that differs.
fn records_check(socket: &str, name: &str, frames: u64) -> Result<ExitCode> {
    let client = Client::connect(socket)?;
    let subscriber = client.subscribe::<Detection>(name, mmshare::Delivery::Lossless)?;
    say("subscribed");
    for expected in 0..frames {
        let sample = subscriber.receive_timeout(Duration::from_secs(30))?;
        if sample.number() != expected {
            say(&format!("frame {} instead of {expected}", sample.number()));
            return Ok(ExitCode::FAILURE);
        }
        for (i, r) in sample.iter().enumerate() {
            if *r != detection(expected, i as u64) {
                say(&format!("frame {expected} record {i} is {r:?}"));
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    say(&format!("ok frames={frames}"));
    Ok(ExitCode::SUCCESS)
}

/// The per-frame header of the frame tests (tests/python/test_frame_info.py and
/// tests/c/frames.c build the same): in NumPy, `[('t', '<u8'), ('exposure', '<f4'),
/// ('roi', '<u2', (4,)), ('', '|V4')]`.
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable, mmshare::Record)]
#[repr(C)]
struct FrameHeader {
    t: u64,
    exposure: f32,
    roi: [u16; 4],
    #[mmshare(padding)]
    _pad: [u8; 4],
}

/// Frame `n` of the frame tests: `n % 7` rows (0 to 6) of 4 `u2`, element `(r, c)` =
/// `n * 100 + r * 4 + c`, and its header.
fn frame_rows(n: u64) -> u64 {
    n % 7
}

fn frame_value(n: u64, i: usize) -> u16 {
    (n * 100 + i as u64) as u16
}

fn frame_header(n: u64) -> FrameHeader {
    FrameHeader {
        t: 1_000_000 + n,
        exposure: n as f32 * 0.5,
        roi: [n as u16, n as u16 + 1, n as u16 + 2, n as u16 + 3],
        _pad: [0; 4],
    }
}

/// Waits for the frame stream NAME and one subscriber, publishes FRAMES frames (shrunk loans
/// with headers), prints 'published N'.
fn frames_pub(socket: &str, name: &str, frames: u64) -> Result<ExitCode> {
    let client = Client::connect(socket)?;
    client.wait_for(name, Duration::from_secs(60))?;
    let mut publisher = client.publisher::<u16>(name)?;
    publisher.wait_for_subscribers(1, Duration::from_secs(60))?;
    for _ in 0..frames {
        let mut loan = publisher.loan()?;
        let n = loan.number();
        loan.set_rows(frame_rows(n))?;
        for (i, x) in loan.iter_mut().enumerate() {
            *x = frame_value(n, i);
        }
        *loan.header_mut::<FrameHeader>()? = frame_header(n);
        loan.publish();
    }
    say(&format!("published {frames}"));
    Ok(ExitCode::SUCCESS)
}

/// Subscribes (lossless, from frame 0) to the frame stream NAME, prints 'subscribed', checks
/// FRAMES frames: rows, every element, the header; prints 'ok frames=N' or exits 1 naming
/// what differs.
fn frames_check(socket: &str, name: &str, frames: u64) -> Result<ExitCode> {
    let client = Client::connect(socket)?;
    let subscriber = client.subscribe::<u16>(name, mmshare::Delivery::Lossless)?;
    say("subscribed");
    for expected in 0..frames {
        let sample = subscriber.receive_timeout(Duration::from_secs(30))?;
        let n = sample.number();
        let want: Vec<u16> = (0..4 * frame_rows(n) as usize)
            .map(|i| frame_value(n, i))
            .collect();
        let header = *sample.header::<FrameHeader>()?;
        if n != expected || sample.rows() != frame_rows(n) || sample[..] != want[..] {
            say(&format!(
                "frame {n} (expected {expected}): rows {} data {:?}",
                sample.rows(),
                &sample[..]
            ));
            return Ok(ExitCode::FAILURE);
        }
        // The fields: padding bytes are nobody's.
        let want = frame_header(n);
        if (header.t, header.exposure, header.roi) != (want.t, want.exposure, want.roi) {
            say(&format!("frame {n}: header {header:?}"));
            return Ok(ExitCode::FAILURE);
        }
    }
    say(&format!("ok frames={frames}"));
    Ok(ExitCode::SUCCESS)
}

fn stream_pub(socket: &str, name: &str, frames: u64, every_us: u64) -> Result<ExitCode> {
    let client = Client::connect(socket)?;
    let mut publisher = client.publisher::<u64>(name)?;
    publisher.set_timeout(Duration::from_secs(10));
    let first = publisher.next_number();
    let start = Instant::now();
    for k in 0..frames {
        if every_us > 0 {
            let due = start + Duration::from_micros(k * every_us);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let mut loan = publisher.loan()?;
        let n = loan.number();
        for (i, x) in loan.iter_mut().enumerate() {
            *x = pattern(n, i);
        }
        loan.publish();
    }
    say(&format!(
        "published {} first={first}",
        publisher.next_number() - first
    ));
    Ok(ExitCode::SUCCESS)
}

fn stream_sub(socket: &str, name: &str, mode: &str, last: u64, delay_us: u64) -> Result<ExitCode> {
    let client = Client::connect(socket)?;
    let options = subscribe_options(mode)?.max_held(1);
    let delivery = options.delivery();
    let subscriber = client.subscribe_with::<u64>(name, options)?;
    say(&format!("subscribed next={}", subscriber.next_number()));
    let mut expected = subscriber.next_number();
    let mut first = true;
    let mut torn = 0u64;
    loop {
        let sample = match subscriber.receive_timeout(Duration::from_secs(10)) {
            Ok(sample) => sample,
            Err(StreamError::ReceiveTimeout { .. }) => return Ok(ExitCode::from(4)),
            Err(StreamError::Evicted { .. }) => {
                say(&format!(
                    "evicted received={} missed={}",
                    subscriber.received(),
                    subscriber.missed()
                ));
                return Ok(ExitCode::from(5));
            }
            Err(e) => return Err(e.into()),
        };
        let n = sample.number();
        if !is_frame(&sample, n) || !sample.is_intact() {
            torn += 1;
        }
        if n != expected + sample.missed_before() {
            say(&format!(
                "gap: expected {expected} + {} missed, got {n}",
                sample.missed_before()
            ));
            return Ok(ExitCode::from(3));
        }
        // A lossless subscriber misses nothing, unless the publisher demoted it (the
        // stream's stall policy): then it is lossy and counts what it misses. Its first
        // frame may count the frames published before it joined that the ring no longer
        // has (it starts at frame 0 unless told `-next`).
        if delivery == Delivery::Lossless
            && sample.missed_before() != 0
            && !subscriber.demoted()
            && !first
        {
            say(&format!(
                "lossless subscriber missed {} before {n}",
                sample.missed_before()
            ));
            return Ok(ExitCode::from(3));
        }
        expected = n + 1;
        first = false;
        drop(sample);
        if delay_us > 0 {
            std::thread::sleep(Duration::from_micros(delay_us));
        }
        if n >= last {
            break;
        }
    }
    say(&format!(
        "received={} missed={} last={} torn={torn} demoted={}",
        subscriber.received(),
        subscriber.missed(),
        expected - 1,
        subscriber.demoted()
    ));
    Ok(if torn == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

fn stream_hold(socket: &str, name: &str, mode: &str) -> Result<ExitCode> {
    let client = Client::connect(socket)?;
    let subscriber = client.subscribe_with::<u64>(
        name,
        mmshare::SubscribeOptions::new(delivery(mode)?).max_held(1),
    )?;
    say(&format!("subscribed next={}", subscriber.next_number()));
    let sample = subscriber.receive_timeout(Duration::from_secs(30))?;
    say(&format!("holding {}", sample.number()));
    loop {
        std::thread::sleep(Duration::from_secs(1));
        // Keep the sample (and the subscriber) alive until killed.
        std::hint::black_box(&sample);
    }
}

fn stream_loan_hold(socket: &str, name: &str) -> Result<ExitCode> {
    let client = Client::connect(socket)?;
    let mut publisher = client.publisher::<u64>(name)?;
    let publisher_lane = publisher.id().lane();
    let mut loan = publisher.loan()?;
    let half = loan.len() / 2;
    loan[..half].fill(0xBAD0_BAD0_BAD0_BAD0);
    say(&format!("loaned {} lane={}", loan.number(), publisher_lane));
    loop {
        std::thread::sleep(Duration::from_secs(1));
        std::hint::black_box(&loan);
    }
}

/// What a server of the test services answers to `request` (element-wise).
fn service_answer(request: u64) -> u64 {
    request.rotate_left(17) ^ 0x5555_5555_5555_5555
}

fn service_serve(socket: &str, name: &str, mode: &str) -> Result<ExitCode> {
    let client = Client::connect(socket)?;
    let server = client.server::<u64, u64>(name)?;
    say(&format!("serving slot={}", server.slot()));
    let mut served = 0u64;
    let mut held = Vec::new();
    loop {
        let request = match server.receive_timeout(Duration::from_secs(3)) {
            Ok(request) => request,
            Err(mmshare::ServiceError::Stream(StreamError::ReceiveTimeout { .. }))
                if mode == "serve" && served > 0 =>
            {
                break;
            }
            Err(mmshare::ServiceError::Stream(StreamError::ReceiveTimeout { .. })) => continue,
            Err(e) => return Err(e.into()),
        };
        if mode == "stall" {
            held.push(request.id());
            say(&format!("holding {}", held.len()));
            continue;
        }
        let mut response = server.loan_response(&request)?;
        for (out, &x) in response.iter_mut().zip(request.iter()) {
            *out = service_answer(x);
        }
        response.send()?;
        served += 1;
    }
    say(&format!("served {served}"));
    Ok(ExitCode::SUCCESS)
}

fn service_call(socket: &str, name: &str, n: &str, inflight: &str) -> Result<ExitCode> {
    let (n, inflight): (u64, usize) = (n.parse()?, inflight.parse()?);
    let client = Client::connect(socket)?;
    let mut requester = client.requester::<u64, u64>(name)?;
    requester.set_timeout(Duration::from_secs(30));
    let slot = u64::from(requester.slot());
    say(&format!("requester slot={slot}"));
    let mut sent = 0u64;
    let mut answered = 0u64;
    let mut bad = 0u64;
    while answered < n {
        while sent < n && requester.pending() < inflight {
            let mut request = requester.loan()?;
            let tag = slot << 32 | request.id();
            for (i, x) in request.iter_mut().enumerate() {
                *x = pattern(tag, i);
            }
            let id = request.send()?;
            if id != sent {
                bad += 1;
            }
            sent += 1;
        }
        match requester.receive_timeout(Duration::from_secs(30)) {
            Ok(response) => {
                let tag = slot << 32 | response.id();
                let right = response
                    .iter()
                    .enumerate()
                    .all(|(i, &x)| x == service_answer(pattern(tag, i)));
                if !right || response.id() >= sent {
                    bad += 1;
                }
                answered += 1;
            }
            Err(mmshare::ServiceError::ServerLost {
                server, pending, ..
            }) => {
                say(&format!(
                    "lost server={server} pending={} answered={answered}",
                    pending.len()
                ));
                return Ok(ExitCode::from(3));
            }
            Err(e) => return Err(e.into()),
        }
    }
    say(&format!("called {answered} bad={bad}"));
    Ok(ExitCode::SUCCESS)
}

/// The tag a frame of lane `lane` numbered `n` is filled from (`fan-in-pub`).
fn fan_in_tag(lane: u32, n: u64) -> u64 {
    n + (u64::from(lane) << 40)
}

fn fan_in_pub(socket: &str, name: &str, frames: &str, gate: Option<&str>) -> Result<ExitCode> {
    let frames: u64 = frames.parse()?;
    let client = Client::connect(socket)?;
    let mut publisher = match client.publisher::<u64>(name) {
        Ok(publisher) => publisher,
        Err(e) => {
            say(&format!("refused kind={:?} message={e}", e.kind()));
            return Ok(ExitCode::from(2));
        }
    };
    publisher.set_timeout(Duration::from_secs(30));
    let id = publisher.id();
    say(&format!("lane={} id={}", id.lane(), id.id()));
    // Publishing only once the gate file exists: a publisher that finished and went before
    // another attached would hand that one its lane.
    while let Some(gate) = gate
        && !Path::new(gate).exists()
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    for _ in 0..frames {
        let mut loan = publisher.loan()?;
        let tag = fan_in_tag(id.lane(), loan.number());
        for (i, x) in loan.iter_mut().enumerate() {
            *x = pattern(tag, i);
        }
        loan.publish();
    }
    say(&format!("published {frames}"));
    Ok(ExitCode::SUCCESS)
}

fn fan_in_sub(socket: &str, name: &str, counts: &str) -> Result<ExitCode> {
    let want: Vec<u64> = counts
        .split(',')
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()?;
    let client = Client::connect(socket)?;
    let options = mmshare::SubscribeOptions::new(Delivery::Lossless).max_held(1);
    let subscriber = client.subscribe_with::<u64>(name, options)?;
    if subscriber.lanes() != want.len() {
        say(&format!(
            "lanes={} expected={}",
            subscriber.lanes(),
            want.len()
        ));
        return Ok(ExitCode::from(3));
    }
    say("subscribed");
    let mut next = vec![0u64; want.len()];
    let mut publishers = std::collections::BTreeSet::new();
    while next.iter().zip(&want).any(|(n, w)| n < w) {
        let sample = match subscriber.receive_timeout(Duration::from_secs(30)) {
            Ok(sample) => sample,
            Err(StreamError::ReceiveTimeout { .. }) => {
                say(&format!("timeout next={next:?}"));
                return Ok(ExitCode::from(4));
            }
            Err(e) => return Err(e.into()),
        };
        let lane = sample.lane();
        let n = sample.number();
        let id = sample.publisher();
        let tag = fan_in_tag(lane as u32, n);
        let whole = sample
            .iter()
            .enumerate()
            .all(|(i, &x)| x == pattern(tag, i));
        if n != next[lane] || !whole || id.map(|p| p.lane() as usize) != Some(lane) {
            say(&format!(
                "bad frame: lane {lane} number {n} (expected {}), whole {whole}, publisher {id:?}",
                next[lane]
            ));
            return Ok(ExitCode::from(3));
        }
        publishers.extend(id.map(|p| p.id()));
        next[lane] += 1;
    }
    let ids: Vec<String> = publishers.iter().map(u64::to_string).collect();
    say(&format!(
        "received={} missed={} publishers={}",
        subscriber.received(),
        subscriber.missed(),
        ids.join(",")
    ));
    Ok(ExitCode::SUCCESS)
}

fn stream_latest(socket: &str, name: &str, want: u64) -> Result<ExitCode> {
    let client = Client::connect(socket)?;
    let subscriber = client.subscribe::<u64>(name, Delivery::Lossy)?;
    say("subscribed");
    let start = Instant::now();
    let (mut count, mut newest, mut bad) = (0u64, 0u64, 0u64);
    while count < want && start.elapsed() < Duration::from_secs(30) {
        if let Some(sample) = subscriber.latest()? {
            if !is_frame(&sample, sample.number()) || sample.number() < newest {
                bad += 1;
            }
            newest = sample.number();
            count += 1;
        }
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    say(&format!(
        "latest={count} newest={newest} bad={bad} per_second={rate:.0}"
    ));
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

fn stream_scribble(f: &std::fs::File, secs: f64) -> Result<ExitCode> {
    use std::os::unix::fs::FileExt as _;
    let len = f.metadata()?.len();
    let start = Instant::now();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D ^ u64::from(std::process::id());
    let mut writes = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = (x % len.max(8)) & !7;
        let value = x.rotate_left(17);
        // Mostly small numbers (plausible slots, counts, pids), sometimes anything.
        let value = if value.is_multiple_of(3) {
            value
        } else {
            value % 20
        };
        f.write_all_at(&value.to_le_bytes(), at)?;
        writes += 1;
    }
    say(&format!("scribbled={writes}"));
    Ok(ExitCode::SUCCESS)
}

/// Sends Hello then `request` on a fresh connection, the way any program can (no library
/// checks in between), and returns the reply with the descriptors attached to it.
fn raw_request(
    socket: &str,
    request: &mmshare::internal::proto::Request,
) -> Result<(
    mmshare::internal::proto::Response,
    Vec<std::os::fd::OwnedFd>,
)> {
    use mmshare::internal::proto::{self, Request};
    use rustix::net;
    let fd = net::socket_with(
        net::AddressFamily::UNIX,
        net::SocketType::SEQPACKET,
        net::SocketFlags::CLOEXEC,
        None,
    )?;
    net::connect(&fd, &net::SocketAddrUnix::new(socket)?)?;
    let call = |req: &Request| -> Result<(proto::Response, Vec<std::os::fd::OwnedFd>)> {
        net::send(&fd, &proto::encode(req)?, net::SendFlags::NOSIGNAL)?;
        let mut buf = vec![0u8; proto::MAX_MESSAGE + 1];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = net::RecvAncillaryBuffer::new(&mut space);
        let msg = net::recvmsg(
            &fd,
            &mut [std::io::IoSliceMut::new(&mut buf)],
            &mut control,
            net::RecvFlags::CMSG_CLOEXEC,
        )?;
        let mut fds = Vec::new();
        for m in control.drain() {
            if let net::RecvAncillaryMessage::ScmRights(got) = m {
                fds.extend(got);
            }
        }
        Ok((proto::decode(&buf[..msg.bytes])?, fds))
    };
    call(&Request::Hello {
        version: proto::PROTOCOL_VERSION,
        client: "attacker".into(),
    })?;
    call(request)
}

/// Tries to change the size of every descriptor an ordinary reader or subscriber receives:
/// truncate to 0, grow by truncation, grow by fallocate (2 GiB), and the same through a
/// reopened `/proc/self/fd` path.
fn control_attack(socket: &str, name: &str, kind: &str, all: bool) -> Result<ExitCode> {
    use mmshare::internal::proto::{OpenAccess, Request, StreamRole};
    use std::os::fd::AsRawFd as _;
    let request = match kind {
        "array" => Request::Open {
            name: name.to_owned(),
            access: OpenAccess::Read,
        },
        _ => Request::OpenStream {
            name: name.to_owned(),
            role: StreamRole::Subscribe,
        },
    };
    let (reply, fds) = raw_request(socket, &request)?;
    if let mmshare::internal::proto::Response::Error { kind, message } = reply {
        say(&format!("refused={kind:?} {message}"));
        return Ok(ExitCode::from(1));
    }
    say(&format!("fds={}", fds.len()));
    let outcome = |r: std::io::Result<()>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => match e.raw_os_error() {
            Some(libc::EPERM) => "EPERM".to_owned(),
            Some(libc::EACCES) => "EACCES".to_owned(),
            Some(libc::EBADF) => "EBADF".to_owned(),
            Some(libc::EINVAL) => "EINVAL".to_owned(),
            _ => e.to_string(),
        },
    };
    let count = fds.len();
    for (i, fd) in fds.into_iter().enumerate() {
        // The control state comes last in every reply that carries it.
        if !all && i + 1 != count {
            continue;
        }
        let file = std::fs::File::from(fd);
        let len = file.metadata()?.len();
        say(&format!("fd{i}_len={len}"));
        let reopened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{}", file.as_raw_fd()));
        say(&format!(
            "fd{i}_reopen_rw={}",
            outcome(
                reopened
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(0)))
            )
        ));
        let grow = |f: &std::fs::File| {
            rustix::fs::fallocate(f, rustix::fs::FallocateFlags::empty(), 0, 2 << 30)
                .map_err(std::io::Error::from)
        };
        say(&format!("fd{i}_fallocate={}", outcome(grow(&file))));
        say(&format!(
            "fd{i}_grow={}",
            outcome(file.set_len(len + (1 << 20)))
        ));
        say(&format!("fd{i}_truncate={}", outcome(file.set_len(0))));
        // A seal that forbids writing would break every later writable mapping.
        let seal = rustix::fs::fcntl_add_seals(&file, rustix::fs::SealFlags::WRITE)
            .map_err(std::io::Error::from);
        say(&format!("fd{i}_add_seals={}", outcome(seal)));
        if let Ok(r) = &reopened {
            say(&format!(
                "fd{i}_reopened_truncate={}",
                outcome(r.set_len(0))
            ));
            say(&format!("fd{i}_reopened_fallocate={}", outcome(grow(r))));
        }
        say(&format!("fd{i}_len_after={}", file.metadata()?.len()));
    }
    Ok(ExitCode::SUCCESS)
}

fn outcome_of<T>(r: &std::result::Result<T, mmshare::ClientError>, name: &str) -> String {
    match r {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!(
            "{}:{}",
            e.kind().map_or("local".to_owned(), |k| format!("{k:?}")),
            e.to_string().replace(name, "NAME")
        ),
    }
}

/// What a user learns of a name it may not read, next to what it learns of no object at all.
fn names_probe(socket: &str, hidden: &str, absent: &str) -> Result<ExitCode> {
    use mmshare::{CreateOptions, Delivery, StreamOptions};
    let client = Client::connect(socket)?;
    for (label, name) in [("hidden", hidden), ("absent", absent)] {
        let ops: Vec<(&str, String)> = vec![
            ("stat", outcome_of(&client.stat(name), name)),
            ("describe", outcome_of(&client.describe(name), name)),
            (
                "open_read",
                outcome_of(&client.open_raw(name, Access::Read), name),
            ),
            (
                "open_write",
                outcome_of(&client.open_raw(name, Access::Write), name),
            ),
            (
                "subscribe",
                outcome_of(
                    &client.subscribe_bytes(
                        name,
                        mmshare::SubscribeOptions::new(Delivery::Lossy).max_held(1),
                    ),
                    name,
                ),
            ),
            ("publish", outcome_of(&client.publisher_bytes(name), name)),
            ("delete", outcome_of(&client.delete(name), name)),
            (
                "listed",
                client
                    .list_all("")?
                    .iter()
                    .any(|o| match o {
                        mmshare::ObjectInfo::Array(a) => a.name == name,
                        mmshare::ObjectInfo::Stream(s) => s.name == name,
                    })
                    .to_string(),
            ),
        ];
        for (op, result) in ops {
            say(&format!("{op} {label}={result}"));
        }
        // A create of the name: an absent one is created (and removed again).
        let created = client.create(&CreateOptions::new(name, "u1", &[16]).memory());
        say(&format!("create {label}={}", outcome_of(&created, name)));
        if created.is_ok() {
            client.delete(name)?;
        }
        let stream = client.create_stream(
            &StreamOptions::new(name, "u1", &[16])
                .memory()
                .exist_ok(true),
        );
        say(&format!(
            "create_stream {label}={}",
            outcome_of(&stream, name)
        ));
        if stream.is_ok() {
            client.delete(name)?;
        }
    }
    let huge = format!("{absent}-huge");
    let err = client
        .create(&CreateOptions::new(&huge, "u1", &[1 << 50]).memory())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    say(&format!("nospace={err}"));
    let mine = format!("{absent}-mine");
    let own = client.create(&CreateOptions::new(&mine, "u1", &[16]).memory())?;
    say(&format!("own_path={}", own.info().path));
    say(&format!("own_stat_path={}", client.stat(&mine)?.path));
    client.delete(&mine)?;
    Ok(ExitCode::SUCCESS)
}

fn create_exist_ok(socket: &str, name: &str, kind: &str) -> Result<ExitCode> {
    use mmshare::{CreateOptions, StreamOptions};
    let client = Client::connect(socket)?;
    let result = if kind == "stream" {
        client
            .create_stream(
                &StreamOptions::new(name, "u1", &[16])
                    .memory()
                    .mode(0o666)
                    .exist_ok(true),
            )
            .map(drop)
    } else {
        client
            .create(
                &CreateOptions::new(name, "u1", &[16])
                    .memory()
                    .mode(0o666)
                    .exist_ok(true),
            )
            .map(drop)
    };
    match result {
        Ok(()) => say("created"),
        Err(e) => say(&format!(
            "refused={}:{e}",
            e.kind().map_or("local".to_owned(), |k| format!("{k:?}"))
        )),
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens `n` connections that each say Hello and then nothing, as an idle client would.
fn hold_connections(socket: &str, n: usize, secs: f64) -> Result<ExitCode> {
    use mmshare::internal::proto::{self, Request, Response};
    use rustix::net;
    let mut held = Vec::new();
    let (mut busy, mut busy_message) = (0, String::new());
    for _ in 0..n {
        let fd = net::socket_with(
            net::AddressFamily::UNIX,
            net::SocketType::SEQPACKET,
            net::SocketFlags::CLOEXEC,
            None,
        )?;
        net::connect(&fd, &net::SocketAddrUnix::new(socket)?)?;
        let hello = Request::Hello {
            version: proto::PROTOCOL_VERSION,
            client: "idle".into(),
        };
        net::send(&fd, &proto::encode(&hello)?, net::SendFlags::NOSIGNAL)?;
        let mut buf = vec![0u8; proto::MAX_MESSAGE + 1];
        let got = net::recv(&fd, &mut buf, net::RecvFlags::empty())?.0;
        match proto::decode::<Response>(&buf[..got]) {
            Ok(Response::Hello { .. }) => held.push(fd),
            Ok(Response::Error { message, .. }) => {
                busy += 1;
                busy_message = message;
            }
            other => return Err(format!("unexpected reply {other:?}").into()),
        }
    }
    say(&format!(
        "connected={} busy={busy} busy_message={busy_message}",
        held.len()
    ));
    // Now idle: count the connections the daemon closes (a recv of 0 bytes).
    let start = Instant::now();
    let mut closed = vec![false; held.len()];
    while start.elapsed().as_secs_f64() < secs && closed.iter().any(|c| !c) {
        for (fd, c) in held.iter().zip(closed.iter_mut()) {
            if *c {
                continue;
            }
            let mut byte = [0u8; 1];
            if let Ok((0, _)) = net::recv(fd, &mut byte, net::RecvFlags::DONTWAIT) {
                *c = true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    say(&format!("closed={}", closed.iter().filter(|c| **c).count()));
    Ok(ExitCode::SUCCESS)
}

/// Connects, subscribes (a stream lease), and closes the connection, `n` times in a row,
/// staying alive: the daemon's post-close recovery then waits for this process each time.
fn churn(socket: &str, name: &str, n: usize) -> Result<ExitCode> {
    let (mut ok, mut busy) = (0, 0);
    for _ in 0..n {
        let attached = Client::connect(socket).and_then(|c| {
            c.subscribe_bytes(
                name,
                mmshare::SubscribeOptions::new(mmshare::Delivery::Lossy).max_held(1),
            )
        });
        match attached {
            Ok(handle) => {
                ok += 1;
                drop(handle);
            }
            Err(e) if e.kind() == Some(mmshare::ErrorKind::Busy) => busy += 1,
            Err(e) => return Err(e.into()),
        }
    }
    say(&format!("ok={ok} busy={busy}"));
    Ok(ExitCode::SUCCESS)
}

fn create_until(socket: &str, prefix: &str, mib: u64, backing: &str) -> Result<ExitCode> {
    let client = Client::connect(socket)?;
    for i in 0.. {
        let mut options = CreateOptions::new(format!("{prefix}-{i}"), "u1", &[mib << 20]);
        if backing == "memory" {
            options = options.memory();
        }
        if let Err(e) = client.create(&options) {
            say(&format!("created={i}"));
            say(&format!(
                "refused={}:{e}",
                e.kind().map_or("local".to_owned(), |k| format!("{k:?}"))
            ));
            return Ok(ExitCode::SUCCESS);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A writer that abuses its read-write descriptor: truncates the array's file and extends it
/// again, as fast as it can.
fn truncate_loop(socket: &str, name: &str, secs: f64) -> Result<ExitCode> {
    let file = raw_open_for_writing(socket, name)?;
    let len = file.metadata()?.len();
    let start = Instant::now();
    let mut rounds = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        file.set_len(0)?;
        file.set_len(len)?;
        rounds += 1;
    }
    say(&format!("rounds={rounds}"));
    Ok(ExitCode::SUCCESS)
}

/// A writer that grows its array's file to take memory past its limits.
fn grow(socket: &str, name: &str, mib: u64) -> Result<ExitCode> {
    let file = raw_open_for_writing(socket, name)?;
    let len = file.metadata()?.len();
    rustix::fs::fallocate(
        &file,
        rustix::fs::FallocateFlags::empty(),
        0,
        len + (mib << 20),
    )?;
    say(&format!("grown={}", file.metadata()?.len()));
    let start = Instant::now();
    while file.metadata()?.len() != len && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
    }
    say(&format!("cut_back={}", file.metadata()?.len()));
    Ok(ExitCode::SUCCESS)
}

/// Holds memory past a share the way a delete makes possible: create, keep the mapping,
/// delete, again.
fn map_and_delete(socket: &str, prefix: &str, mib: u64, n: usize) -> Result<ExitCode> {
    let client = Client::connect(socket)?;
    let mut kept = Vec::new();
    for i in 0..n {
        let name = format!("{prefix}-{i}");
        match client.create(&CreateOptions::new(&name, "u1", &[mib << 20]).memory()) {
            Ok(handle) => {
                kept.push(handle);
                client.delete(&name)?;
            }
            Err(e) => {
                say(&format!("created={i}"));
                say(&format!(
                    "refused={}:{e}",
                    e.kind().map_or("local".to_owned(), |k| format!("{k:?}"))
                ));
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    say(&format!("created={n}"));
    say("refused=none");
    Ok(ExitCode::SUCCESS)
}

/// Opens array `name` for writing speaking the protocol raw, and returns its data file: the
/// read-write descriptor a writer gets.
fn raw_open_for_writing(socket: &str, name: &str) -> Result<std::fs::File> {
    use mmshare::internal::proto::{OpenAccess, Request, Response};
    let (reply, fds) = raw_request(
        socket,
        &Request::Open {
            name: name.to_owned(),
            access: OpenAccess::Write,
        },
    )?;
    if let Response::Error { message, .. } = reply {
        return Err(message.into());
    }
    Ok(std::fs::File::from(
        fds.into_iter().next().ok_or("no descriptor")?,
    ))
}

/// Rows `a..b` from `"a..b"` ("all" for every row).
fn rows_of(text: &str, a: &Array<u64>) -> Result<std::ops::Range<u64>> {
    if text == "all" {
        return Ok(0..a.shape()[0]);
    }
    let (start, end) = text.split_once("..").ok_or("rows are given as a..b")?;
    Ok(start.parse()?..end.parse()?)
}

/// Writes `rows` of a 2-d u64 array over and over for `secs`: every element of a write is
/// `pattern(v, i)`, `v` the write's version and `i` the element's index in the array, so a
/// reader can tell which write each block it copied came from.
fn region_writer(path: &str, secs: f64, rows: &str, rest: &[&str]) -> Result<ExitCode> {
    if rest == ["early-publish"] {
        inject_fault(Fault::EarlyPublish);
    }
    let a = Array::<u64>::open(path, Access::Write)?;
    write_region_patterns(&a, secs, rows)
}

fn write_region_patterns(a: &Array<u64>, secs: f64, rows: &str) -> Result<ExitCode> {
    let rows = rows_of(rows, a)?;
    let cols = a.shape()[1] as usize;
    let first = rows.start as usize * cols;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut writes = 0u64;
    let mut buf = Vec::new();
    loop {
        a.write_region(rows.clone(), |v| {
            let version = v.version();
            buf.clear();
            buf.extend((0..v.len()).map(|i| pattern(version, first + i)));
            v.copy_from(0, &buf);
            v.clear_torn();
        })?;
        writes += 1;
        if Instant::now() >= deadline {
            break;
        }
        std::thread::yield_now();
    }
    say(&format!("writes={writes}"));
    Ok(ExitCode::SUCCESS)
}

/// Reads random row ranges of a 2-d u64 array for `secs` and checks each copy: `blocks`
/// ("0,256,768,...": row boundaries) are the regions each written by one writer at a time,
/// so inside each block the copy must come from one write (one version, or never written);
/// a copy of the whole array must hold no write its version does not count, and whole
/// versions never go back. Exits 3 on the first bad copy.
fn region_reader(path: &str, secs: f64, blocks: &str, rest: &[&str]) -> Result<ExitCode> {
    if rest == ["skip-recheck"] {
        inject_fault(Fault::SkipRecheck);
    }
    let a = Array::<u64>::open(path, Access::Read)?;
    let rows = a.shape()[0];
    let cols = a.shape()[1] as usize;
    let bounds: Vec<u64> = blocks
        .split(',')
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()?;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut seed = u64::from(std::process::id());
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let (mut reads, mut whole_reads, mut last_whole) = (0u64, 0u64, 0u64);
    let mut buf = vec![0u64; rows as usize * cols];
    while Instant::now() < deadline {
        // A block, two neighbouring blocks, a random range, or everything.
        let (r0, r1) = match next(4) {
            0 => {
                let b = next(bounds.len() as u64 - 1) as usize;
                (bounds[b], bounds[b + 1])
            }
            1 => {
                let b = next(bounds.len() as u64 - 2) as usize;
                (bounds[b], bounds[b + 2])
            }
            2 => {
                let (x, y) = (next(rows), next(rows));
                (x.min(y), x.max(y) + 1)
            }
            _ => (0, rows),
        };
        let n = (r1 - r0) as usize * cols;
        let snap = a.read_region_into(r0..r1, &mut buf[..n])?;
        reads += 1;
        let whole = (r0, r1) == (0, rows);
        for w in bounds.windows(2) {
            let (b0, b1) = (w[0].max(r0), w[1].min(r1));
            if b0 >= b1 {
                continue;
            }
            let at = |row: u64| (row - r0) as usize * cols;
            let block = &buf[at(b0)..at(b1)];
            let first = b0 as usize * cols;
            let unwritten = block.iter().all(|&x| x == 0);
            // The version of the block's first element, then every element of that version.
            let version = block[0].wrapping_sub(first as u64).wrapping_mul(K_INVERSE);
            let one_write = block
                .iter()
                .enumerate()
                .all(|(i, &x)| x == pattern(version, first + i));
            if !(unwritten || one_write) {
                say(&format!(
                    "torn region accepted: rows {b0}..{b1} of a copy of rows {r0}..{r1} (version {}) mix writes",
                    snap.version
                ));
                return Ok(ExitCode::from(3));
            }
            if whole && one_write && version > snap.version {
                say(&format!(
                    "a whole copy of version {} holds rows {b0}..{b1} of version {version}",
                    snap.version
                ));
                return Ok(ExitCode::from(3));
            }
        }
        if whole {
            if snap.version < last_whole {
                say(&format!(
                    "version went back: {last_whole} -> {}",
                    snap.version
                ));
                return Ok(ExitCode::from(3));
            }
            last_whole = snap.version;
            whole_reads += 1;
        }
    }
    say(&format!(
        "reads={reads} whole={whole_reads} retries={} last={last_whole}",
        a.retries()
    ));
    Ok(ExitCode::SUCCESS)
}

/// The inverse of `K` modulo 2^64: `pattern(v, i) - i` times it is `v`.
const K_INVERSE: u64 = {
    // Newton's iteration for the inverse of an odd number modulo 2^64.
    let mut x = K;
    let mut n = 0;
    while n < 6 {
        x = x.wrapping_mul(2u64.wrapping_sub(K.wrapping_mul(x)));
        n += 1;
    }
    x
};
const _: () = assert!(K.wrapping_mul(K_INVERSE) == 1);

/// Takes the write side of `rows` of a 2-d u64 array, stores into its first element, says so,
/// and stops there forever: the state a SIGKILL in the middle of a region write leaves.
fn region_hold(path: &str, rows: &str) -> Result<ExitCode> {
    let a = Array::<u64>::open(path, Access::Write)?;
    hold_region(&a, rows)
}

fn client_region_hold(socket: &str, name: &str, rows: &str) -> Result<ExitCode> {
    let client = Client::connect(socket)?;
    let a = client.open::<u64>(name, Access::Write)?;
    hold_region(&a, rows)
}

fn hold_region(a: &Array<u64>, rows: &str) -> Result<ExitCode> {
    let rows = rows_of(rows, a)?;
    a.write_region(rows, |v| {
        v.set(0, 12345);
        say(&format!("holding pid={}", std::process::id()));
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `huge-io`: region writes and reads at random rows of a (large, sparse) 2-d u8 array, with
/// the peak resident memory they cost. Row `r` written in op `n` holds bytes
/// `tag, tag + 1, ...` (wrapping), `tag` from the seed and op; a row never written reads as
/// zeros.
fn huge_io(path: &str, ops: u64, seed: u64, release: bool) -> Result<ExitCode> {
    let mut raw = RawArray::open(path, Access::Write)?;
    raw.set_release_pages(release);
    let a = Array::<u8>::from_raw(raw)?;
    let (rows, row_len) = (a.shape()[0], a.shape()[1] as usize);
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let consistent = |row: &[u8]| {
        row.iter().all(|&b| b == 0)
            || row
                .iter()
                .enumerate()
                .all(|(i, &b)| b == row[0].wrapping_add(i as u8))
    };
    let (mut buf, mut back) = (vec![0u8; row_len], vec![0u8; row_len]);
    let (mut touched, mut write_ns, mut read_ns) = (0u64, 0u128, 0u128);
    for op in 0..ops {
        let r = next(rows);
        let tag = (seed.wrapping_mul(131).wrapping_add(op) % 251) as u8 + 1;
        for (i, b) in buf.iter_mut().enumerate() {
            *b = tag.wrapping_add(i as u8);
        }
        let t = Instant::now();
        a.write_region_from(r..r + 1, &buf)?;
        write_ns += t.elapsed().as_nanos();
        let t = Instant::now();
        a.read_region_into(r..r + 1, &mut back)?;
        read_ns += t.elapsed().as_nanos();
        if !consistent(&back) {
            say(&format!("row {r} read back inconsistent after op {op}"));
            return Ok(ExitCode::from(3));
        }
        let other = next(rows);
        a.read_region_into(other..other + 1, &mut back)?;
        if !consistent(&back) {
            say(&format!("row {other} inconsistent"));
            return Ok(ExitCode::from(3));
        }
        touched += 3 * row_len as u64;
    }
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(u64::MAX)
    };
    let ops = ops.max(1);
    say(&format!(
        "ops={ops} touched={touched} hwm_kib={} rss_kib={} write_us={} read_us={}",
        kib("VmHWM:"),
        kib("VmRSS:"),
        write_ns / 1000 / u128::from(ops),
        read_ns / 1000 / u128::from(ops),
    ));
    Ok(ExitCode::SUCCESS)
}

/// `region-wait-read`: a region read that has to wait for a writer holding its stripes.
fn region_wait_read(path: &str, rows: &str) -> Result<ExitCode> {
    let mut a = Array::<u64>::open(path, Access::Read)?;
    a.raw_mut().set_timeout(Duration::from_secs(20));
    let rows = rows_of(rows, &a)?;
    say("waiting");
    let (_, snap) = a.read_region(rows)?;
    say(&format!(
        "version={} futex_wakeups={}",
        snap.version,
        mmshare::internal::futex_wakeups()
    ));
    Ok(ExitCode::SUCCESS)
}
