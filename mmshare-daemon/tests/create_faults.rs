//! No failure of a create leaves half an object behind: every step of making an array or a
//! stream that can fail (the library's temporary file, its space, header, sync, rename and
//! directory sync; the daemon's opening, control state, mapping and the client's descriptors)
//! is made to fail in turn with the errors it meets in the field (out of descriptors, out of
//! space, an I/O error, out of memory). Each time the client gets the error kind that names
//! the resource, with the object's kind and name; afterwards the name is free (NotFound, and
//! a create succeeds), no file is left in either directory and nothing stays charged.

use mmshare::fail_step;
use mmshare::internal::FaultStep;
use mmshare::internal::proto::{self, Backing, ErrorKind, Request, Response, WireOrder};
use mmshare_daemon::fuzzing::{Harness, creds};

const EMFILE: i32 = 24;
const ENOSPC: i32 = 28;
const EIO: i32 = 5;
const ENOMEM: i32 = 12;

/// Steps of the library's create (the object is not visible under its name before the
/// rename; the directory sync comes after it).
const LIBRARY_STEPS: [FaultStep; 6] = [
    FaultStep::OpenTemp,
    FaultStep::Reserve,
    FaultStep::WriteHeader,
    FaultStep::SyncFile,
    FaultStep::Rename,
    FaultStep::SyncDir,
];

/// Steps of the daemon's, after the object's files are under its name.
const DAEMON_STEPS: [FaultStep; 3] = [FaultStep::OpenData, FaultStep::MakeControl, FaultStep::Map];

/// The kind a failure with `errno` must be reported as.
fn kind_for(errno: i32) -> ErrorKind {
    match errno {
        EMFILE | ENOMEM => ErrorKind::Busy,
        ENOSPC => ErrorKind::NoSpace,
        _ => ErrorKind::Internal,
    }
}

fn create(kind: &str, name: &str, backing: Backing) -> Request {
    match kind {
        "array" => Request::Create {
            name: name.into(),
            dtype: "<f8".into(),
            shape: vec![16],
            order: WireOrder::C,
            backing,
            mode: 0o600,
            exist_ok: false,
            stripes: 2,
            sparse: false,
        },
        _ => Request::CreateStream {
            name: name.into(),
            dtype: "u1".into(),
            shape: vec![64],
            order: WireOrder::C,
            slots: 4,
            max_subscribers: 2,
            backing,
            mode: 0o600,
            exist_ok: false,
            stall: Default::default(),
            history: 0,
            // A frame-info table too, so that its part of the file is made under the faults.
            header: "<u8".into(),
            variable: true,
            // Two lanes: each lane's files are made (and cleaned up) under the faults too.
            max_publishers: 2,
        },
    }
}

fn send(h: &Harness, request: &Request) -> Response {
    h.feed(&proto::encode(request).unwrap(), creds(0)).response
}

/// Fails `step` with `errno` in a create of a `kind` and checks that nothing is left.
fn fails_cleanly(h: &Harness, kind: &str, backing: Backing, step: FaultStep, errno: i32) {
    let name = "victim";
    let what = format!("{kind} ({backing:?}) with {step:?} failing with errno {errno}");
    fail_step(Some((step, errno)));
    let reply = send(h, &create(kind, name, backing));
    fail_step(None);
    match &reply {
        Response::Error { kind: got, message } => {
            assert_eq!(*got, kind_for(errno), "{what}: {message}");
            assert!(
                message.contains(kind) && message.contains(name),
                "{what}: the message names neither the {kind} nor its name: {message}"
            );
        }
        other => panic!("{what}: the create succeeded: {other:?}"),
    }
    h.check()
        .unwrap_or_else(|e| panic!("{what}: left behind: {e}"));
    match send(h, &Request::Stat { name: name.into() }) {
        Response::Error {
            kind: ErrorKind::NotFound,
            ..
        } => {}
        other => panic!("{what}: the name is not free afterwards: {other:?}"),
    }
    match send(h, &create(kind, name, backing)) {
        Response::Array(_) | Response::Stream(_) => {}
        other => panic!("{what}: a create afterwards fails: {other:?}"),
    }
    match send(h, &Request::Delete { name: name.into() }) {
        Response::Deleted => {}
        other => panic!("{what}: delete: {other:?}"),
    }
    h.check()
        .unwrap_or_else(|e| panic!("{what}: after the retry: {e}"));
}

#[test]
fn every_failing_step_of_an_array_create_leaves_nothing() {
    let h = Harness::new().unwrap();
    for backing in [Backing::File, Backing::Memory] {
        for step in LIBRARY_STEPS {
            for errno in [EMFILE, ENOSPC, EIO] {
                fails_cleanly(&h, "array", backing, step, errno);
            }
        }
        for step in DAEMON_STEPS.into_iter().chain([FaultStep::ClientFiles]) {
            for errno in [EMFILE, ENOMEM, EIO] {
                fails_cleanly(&h, "array", backing, step, errno);
            }
        }
    }
}

#[test]
fn every_failing_step_of_a_stream_create_leaves_nothing() {
    let h = Harness::new().unwrap();
    for backing in [Backing::File, Backing::Memory] {
        for step in [FaultStep::MakeTempDir].into_iter().chain(LIBRARY_STEPS) {
            for errno in [EMFILE, ENOSPC, EIO] {
                fails_cleanly(&h, "stream", backing, step, errno);
            }
        }
        for step in DAEMON_STEPS {
            for errno in [EMFILE, ENOMEM, EIO] {
                fails_cleanly(&h, "stream", backing, step, errno);
            }
        }
    }
}

/// A stream's message about space names the stream and its own size, not an array's or its
/// control state's.
#[test]
fn a_stream_out_of_space_is_called_a_stream_with_its_size() {
    let h = Harness::new().unwrap();
    fail_step(Some((FaultStep::Reserve, ENOSPC)));
    let reply = send(&h, &create("stream", "cam", Backing::Memory));
    fail_step(None);
    let Response::Error {
        kind: ErrorKind::NoSpace,
        message,
    } = reply
    else {
        panic!("{reply:?}")
    };
    // 4096-byte header, then 4 slots of 64 bytes each with their own header line.
    assert!(message.contains("stream \"cam\""), "{message}");
    assert!(!message.contains("array"), "{message}");
    assert!(message.contains("data file needs"), "{message}");
}
