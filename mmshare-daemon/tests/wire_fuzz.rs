//! The bounded wire fuzz run of `./scripts/test`, and the fuzz target's seed corpus.
//!
//! `mutated_scripts_never_break_decoding_or_dispatch` feeds 20,000 scripts (messages from
//! several clients, see `mmshare_daemon::fuzzing`) to the daemon's decoder and dispatch: the
//! protocol vectors of docs/PROTOCOL.md mutated (bit flips, interesting bytes, truncation,
//! splices, inserted and overwritten varint extremes, random bytes) and well-formed requests
//! with random fields, from a fixed seed, so every run is the same. A panic or a broken
//! invariant fails it and writes the session as a reproducer, which the `replay` test (and
//! the libFuzzer target) replays (docs/TESTING.md, "Fuzzing"). The longer, coverage-guided
//! run is `fuzz/` (cargo-fuzz).

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use mmshare::internal::proto::{
    self, Backing, ErrorKind, OpenAccess, Request, Response, StreamRole, WireOrder,
};
use mmshare_daemon::fuzzing::{CLIENTS, Harness, SEPARATOR, check_reply, creds, script};

/// The request vectors of docs/protocol_vectors.json: (name, bytes).
fn request_vectors() -> Vec<(String, Vec<u8>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol_vectors.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let all: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    all.into_iter()
        .filter(|v| v["type"] == "Request")
        .map(|v| {
            let hex = v["hex"].as_str().unwrap();
            let bytes = hex
                .split_whitespace()
                .map(|b| u8::from_str_radix(b, 16).unwrap())
                .collect();
            (v["name"].as_str().unwrap().to_owned(), bytes)
        })
        .collect()
}

/// The seed corpus: every request vector alone (from client 0), and scripts that use them
/// together (create, open and look from every client, delete), named `seed-NN-what`.
fn seeds() -> BTreeMap<String, Vec<u8>> {
    let vectors = request_vectors();
    let get = |name: &str| -> &[u8] {
        &vectors
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no vector {name:?}"))
            .1
    };
    let mut out = BTreeMap::new();
    for (i, (name, bytes)) in vectors.iter().enumerate() {
        out.insert(
            format!("seed-{i:02}-{}", slug(name)),
            script([(0, bytes.as_slice())]),
        );
    }
    let arrays = script([
        (0, get("Create request")),
        (1, get("Open request (write)")),
        (2, get("Open request (read)")),
        (3, get("Stat request")),
        (1, get("List request, first page")),
        (2, get("ListAll request, first page")),
        (1, get("Delete request")),
        (0, get("Delete request")),
        (
            0,
            get("Create request (File backing, order F, 0-d shape, exist_ok false)"),
        ),
        (
            0,
            get("Create request (File backing, order F, 0-d shape, exist_ok false)"),
        ),
    ]);
    out.insert("seed-90-arrays-script".into(), arrays);
    let streams = script([
        (0, get("CreateStream request")),
        (0, get("OpenStream request (publish)")),
        (1, get("OpenStream request (subscribe)")),
        (3, get("OpenStream request (publish)")),
        (2, get("Stat request")),
        (0, get("ListAll request, next page")),
        (0, get("Create request")),
        (0, get("Open request (write)")),
        (3, get("Delete request")),
        (
            2,
            get(
                "CreateStream request (File backing, order F, 4096 slots, 1024 subscribers, exist_ok true)",
            ),
        ),
    ]);
    out.insert("seed-91-streams-script".into(), streams);
    out
}

fn slug(name: &str) -> String {
    let mut s = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    s.trim_end_matches('-').chars().take(60).collect()
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/wire")
}

/// fuzz/corpus/wire holds exactly these seeds under `seed-*` (the fuzzer adds files of its
/// own, named by hash, which this ignores). `MMSHARE_UPDATE_SEEDS=1` rewrites them.
#[test]
fn the_seed_corpus_is_the_protocol_vectors() {
    let want = seeds();
    let dir = corpus_dir();
    if std::env::var_os("MMSHARE_UPDATE_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("seed-")
            {
                std::fs::remove_file(path).unwrap();
            }
        }
        for (name, bytes) in &want {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    let mut have = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("seed-") {
            have.insert(name, std::fs::read(&path).unwrap());
        }
    }
    assert!(
        have == want,
        "fuzz/corpus/wire/seed-* differ from docs/protocol_vectors.json: run \
         MMSHARE_UPDATE_SEEDS=1 cargo test -p mmshare-daemon --test wire_fuzz"
    );
}

/// Every seed passes the harness's checks as it is.
#[test]
fn every_seed_passes_the_checks() {
    for (name, bytes) in seeds() {
        let h = Harness::new().unwrap();
        let fed = h.run(&bytes);
        assert!(!fed.is_empty(), "{name}");
    }
}

/// Replays the script in the file `MMSHARE_FUZZ_REPLAY` names (a libFuzzer artifact, or the
/// reproducer the bounded run writes; a relative path is taken from the repository's root)
/// without cargo-fuzz; does nothing without it.
#[test]
fn replay() {
    if let Some(path) = std::env::var_os("MMSHARE_FUZZ_REPLAY") {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
        let input = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for fed in Harness::new().unwrap().run(&input) {
            eprintln!("{:?}\n  -> {:?}", fed.request, fed.response);
        }
    }
}

/// xorshift64*: small, fast, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Varint encodings at the edges: u32::MAX, u64::MAX, u32::MAX + 1, non-minimal zero and one,
/// an unterminated run, and one more byte than any varint may have.
const VARINTS: &[&[u8]] = &[
    &[0xff, 0xff, 0xff, 0xff, 0x0f],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[0x80, 0x80, 0x80, 0x80, 0x10],
    &[0x80, 0x00],
    &[0x81, 0x80, 0x00],
    &[0x80, 0x80, 0x80],
    &[0xff; 11],
    &[0x7f],
    &[0x80, 0x01],
];

fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>, pool: &[Vec<u8>]) {
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(bytes.len() + 1);
        let last = bytes.len().saturating_sub(1);
        match rng.below(10) {
            0 if !bytes.is_empty() => bytes[at.min(last)] ^= 1 << rng.below(8),
            1 if !bytes.is_empty() => {
                bytes[at.min(last)] = *rng.pick(&[0, 1, 2, 0x7f, 0x80, 0xfe, 0xff])
            }
            2 => bytes.truncate(at),
            3 => {
                for _ in 0..1 + rng.below(16) {
                    bytes.push(rng.next() as u8);
                }
            }
            4 => {
                let v = rng.pick(VARINTS);
                bytes.splice(at..at, v.iter().copied());
            }
            5 => {
                let v = rng.pick(VARINTS);
                let end = (at + v.len()).min(bytes.len());
                bytes.splice(at..end, v.iter().copied());
            }
            6 => {
                let other = rng.pick(pool);
                let from = rng.below(other.len() + 1);
                bytes.truncate(at);
                bytes.extend_from_slice(&other[from..]);
            }
            7 if at < bytes.len() => {
                let end = at + rng.below(bytes.len() - at) + 1;
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
            8 if at < bytes.len() => {
                let end = at + rng.below(bytes.len() - at) + 1;
                bytes.drain(at..end);
            }
            _ => {
                bytes.clear();
                for _ in 0..rng.below(48) {
                    bytes.push(rng.next() as u8);
                }
            }
        }
    }
}

/// What a session's well-formed requests are like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    /// Everything, evenly.
    Mixed,
    /// Mostly creates of small objects under long, distinct names, and listings (deletes are
    /// rare): objects pile up until `List` and `ListAll` need more than one page, and the
    /// other users together reach what `--reserve` leaves them.
    Crowd,
    /// A crowd that one user (client 1) makes most of: it reaches `--max-objects-per-user`.
    Hog,
    /// Mostly creates of arrays of 1 to 4 MiB in memory, mostly by the users other than the
    /// daemon's and root: they reach their share of the bytes, and together the reserve.
    Heavy,
}

/// A well-formed request with fields from the values the daemon treats differently: good and
/// bad names, dtypes and modes, shapes from empty to over the quota and past `u64`, ring
/// geometries at and beyond their limits; in a session of `flavor`.
/// A stall policy: mostly the default, else either kind with any wait.
fn random_stall(rng: &mut Rng) -> proto::WireStall {
    let after_ms = *rng.pick(&[0, 1, 200, u32::MAX]);
    match rng.below(4) {
        0 => proto::WireStall::Demote { after_ms },
        1 => proto::WireStall::Evict { after_ms },
        _ => proto::WireStall::Block,
    }
}

fn request(rng: &mut Rng, flavor: Flavor) -> Request {
    let crowd = matches!(flavor, Flavor::Crowd | Flavor::Hog);
    const NAMES: &[&str] = &[
        "frames", "points", "ring", "a", "b", "a.b", "x-1", "ab", "f",
    ];
    const DTYPES: &[&str] = &[
        "<f4",
        "f8",
        "u1",
        "|b1",
        "<c16",
        "float64",
        "int32",
        ">i2",
        "<f2",
        "S10",
        "<U3",
        "O",
        "",
        "f4 ",
        "<M8[ns]",
        "V8",
        "<i8",
        "m8[us]",
        "V0",
        "M8",
        "[('x', '<f4'), ('', '|V4'), ('id', '<u8')]",
        "[('p', [('x', 'f4'), ('y', 'f4')], (2,)), ('t', 'M8[ns]')]",
        "[('a', 'f4'), ('a', 'f4')]",
        "[('a', 'O')]",
        "[('a', 'f4', (65536, 65536))]",
        "[[[[[[[[[[[[[[[[[[[[[[[[",
        "[('a', '<f4')",
    ];
    // Per-frame header dtypes: none, plain, a record, refused ones, one too large.
    const HEADERS: &[&str] = &[
        "",
        "",
        "",
        "<u8",
        "[('t', '<M8[ns]'), ('exposure', '<f4')]",
        "O",
        "V65529",
        "V65528",
        "[('a', 'f4')",
    ];
    const DIMS: &[u64] = &[
        0,
        1,
        2,
        3,
        7,
        100,
        1000,
        4096,
        1 << 20,
        1 << 40,
        u32::MAX as u64 + 1,
        u64::MAX,
    ];
    const MODES: &[u32] = &[
        0o600,
        0o644,
        0o640,
        0o604,
        0o666,
        0o777,
        0,
        0o1777,
        u32::MAX,
    ];
    let name = match rng.below(12) {
        _ if crowd && !rng.chance(8) => format!("{}{}", "n".repeat(250), rng.below(100_000)),
        _ if flavor == Flavor::Heavy && !rng.chance(4) => format!("h{}", rng.below(64)),
        0 => rng
            .pick(&["", ".hidden", "a/b", "x.corrupt", "é", "..", "a b"])
            .to_string(),
        1 => "n".repeat(255),
        2 => "n".repeat(256),
        _ => rng.pick(NAMES).to_string(),
    };
    let shape = |rng: &mut Rng| -> Vec<u64> {
        let dims = if rng.chance(20) {
            20 + rng.below(20)
        } else {
            rng.below(4)
        };
        (0..dims)
            .map(|_| {
                if rng.chance(3) {
                    *rng.pick(DIMS)
                } else {
                    rng.below(12) as u64
                }
            })
            .collect()
    };
    let order = if rng.chance(2) {
        WireOrder::C
    } else {
        WireOrder::F
    };
    let backing = if rng.chance(2) {
        Backing::File
    } else {
        Backing::Memory
    };
    let prefix = |rng: &mut Rng| rng.pick(&["", "a", "f", "fr", "p", "n", "zz"]).to_string();
    let after = |rng: &mut Rng| match rng.below(3) {
        0 => None,
        _ => Some(
            rng.pick(&["", "a", "a.b", "frames", "points", "~"])
                .to_string(),
        ),
    };
    if flavor == Flavor::Heavy && rng.chance(2) {
        return Request::Create {
            name,
            dtype: "u1".into(),
            shape: vec![(1 + rng.below(4) as u64) << 20],
            order,
            backing: Backing::Memory,
            mode: *rng.pick(MODES),
            exist_ok: false,
            // Striped, or the daemon's choice (striped too at these sizes).
            stripes: *rng.pick(&[0, 2, 32]),
            // Memory-backed: never sparse (that is refused; the crowd and the rest ask).
            sparse: false,
        };
    }
    if crowd && rng.chance(8) {
        // A listing of the crowd, from the start or from within it.
        let prefix = rng.pick(&["", "n"]).to_string();
        let after = rng.chance(2).then(|| name.clone());
        return if rng.chance(2) {
            Request::List { prefix, after }
        } else {
            Request::ListAll { prefix, after }
        };
    }
    if crowd && rng.below(10) < 8 {
        // A small array or stream under a long name: hundreds fit in the quota.
        let shape = vec![1 + rng.below(64) as u64; rng.below(3)];
        return if rng.chance(6) {
            Request::CreateStream {
                name,
                dtype: "u1".into(),
                shape,
                order,
                slots: 3,
                max_subscribers: 1,
                backing,
                mode: *rng.pick(MODES),
                exist_ok: rng.chance(2),
                stall: random_stall(rng),
                history: *rng.pick(&[0, 0, 0, 0, 0, 0, 0, 1, 2]),
                header: rng.pick(HEADERS).to_string(),
                variable: rng.chance(3),
                max_publishers: 1,
            }
        } else {
            Request::Create {
                name,
                dtype: "<f8".into(),
                shape,
                order,
                backing,
                mode: *rng.pick(MODES),
                exist_ok: rng.chance(2),
                stripes: *rng.pick(&[0, 1, 4]),
                // Sparse only where it may be: the crowd is for listings.
                sparse: backing == Backing::File && rng.chance(4),
            }
        };
    }
    match rng.below(13) {
        0 => Request::Hello {
            version: *rng.pick(&[0, 1, 2, u32::MAX]),
            client: "fuzz".into(),
        },
        1..=3 => Request::Create {
            name,
            dtype: rng.pick(DTYPES).to_string(),
            shape: shape(rng),
            order,
            backing,
            mode: *rng.pick(MODES),
            exist_ok: rng.chance(2),
            // Out of range (33, u32::MAX) included: refused by name.
            stripes: *rng.pick(&[0, 0, 1, 2, 7, 32, 33, u32::MAX]),
            sparse: rng.chance(3),
        },
        4 => Request::Open {
            name,
            access: if rng.chance(2) {
                OpenAccess::Read
            } else {
                OpenAccess::Write
            },
        },
        5 => Request::Stat { name },
        6 => Request::List {
            prefix: prefix(rng),
            after: after(rng),
        },
        7 | 8 if !crowd || rng.chance(4) => Request::Delete { name },
        7..=10 => Request::CreateStream {
            name,
            dtype: rng.pick(DTYPES).to_string(),
            shape: shape(rng),
            order,
            slots: *rng.pick(&[0, 2, 3, 4, 8, 4096, 4097, u32::MAX]),
            max_subscribers: *rng.pick(&[0, 1, 2, 16, 1024, 1025, u32::MAX]),
            backing,
            mode: *rng.pick(MODES),
            exist_ok: rng.chance(2),
            stall: random_stall(rng),
            history: *rng.pick(&[0, 0, 1, 2, 6, 7, u32::MAX]),
            header: rng.pick(HEADERS).to_string(),
            variable: rng.chance(3),
            max_publishers: *rng.pick(&[0, 1, 1, 1, 1, 1, 1, 2, 3, 17, u32::MAX]),
        },
        11 => Request::OpenStream {
            name,
            role: if rng.chance(2) {
                StreamRole::Publish
            } else {
                StreamRole::Subscribe
            },
        },
        12 if rng.chance(3) => Request::WaitFor {
            name,
            timeout_ms: *rng.pick(&[0, 1, u64::MAX]),
        },
        12 if rng.chance(3) => Request::Watch {
            prefix: prefix(rng),
        },
        _ => Request::ListAll {
            prefix: prefix(rng),
            after: after(rng),
        },
    }
}

/// Inputs fed, and scripts per harness (a registry lives through a session, so objects pile
/// up to the limits). Sessions of each `Flavor` but `Mixed` are one in eight each.
const INPUTS: usize = 20_000;
const SESSION: usize = 100;
const SEED: u64 = 0x6d6d_7368_6172_6531;

#[test]
fn mutated_scripts_never_break_decoding_or_dispatch() {
    let pool: Vec<Vec<u8>> = request_vectors().into_iter().map(|(_, b)| b).collect();
    let started = std::time::Instant::now();
    // Sessions are independent (each has its own harness and seed), so two threads share them
    // out; the run is the same whichever thread runs which.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let outcomes = std::sync::Mutex::new(BTreeMap::<String, usize>::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let session = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if session >= INPUTS / SESSION {
                        return;
                    }
                    let counts = run_session(session, &pool);
                    let mut all = outcomes.lock().unwrap_or_else(|p| p.into_inner());
                    for (k, n) in counts {
                        *all.entry(k).or_default() += n;
                    }
                }
            });
        }
    });
    let outcomes = outcomes.into_inner().unwrap();
    eprintln!(
        "{INPUTS} scripts in {:.1?}; replies: {outcomes:?}",
        started.elapsed()
    );
    // The run reaches the registry, not only the decoder: every kind of success and the
    // refusals that need state (quota, existing names, permissions) happen.
    for want in [
        "Array",
        "Stream",
        "Deleted",
        "List",
        "List (more)",
        "Objects",
        "Objects (more)",
        "Hello",
        "ProtocolError",
        "QuotaExceeded --reserve",
        "QuotaExceeded --reserve --max-arrays",
        "QuotaExceeded --max-objects-per-user",
        "QuotaExceeded --user-share",
        "QuotaExceeded --max-bytes",
        "AlreadyExists",
        "PermissionDenied",
        "NotFound",
        "InvalidName",
        "InvalidDtype",
        "InvalidShape",
        "WrongKind",
    ] {
        assert!(
            outcomes.get(want).is_some_and(|&n| n >= 10),
            "fewer than 10 {want} replies: {outcomes:?}"
        );
    }
}

/// Runs session `session`: `SESSION` scripts on one harness; returns the replies by kind.
fn run_session(session: usize, pool: &[Vec<u8>]) -> BTreeMap<String, usize> {
    let mut rng = Rng(SEED ^ (session as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut outcomes = BTreeMap::new();
    let harness = Harness::new().unwrap();
    let flavor = match session % 8 {
        3 => Flavor::Heavy,
        5 => Flavor::Hog,
        7 => Flavor::Crowd,
        _ => Flavor::Mixed,
    };
    let crowd = matches!(flavor, Flavor::Crowd | Flavor::Hog);
    let mut history: Vec<Vec<u8>> = Vec::new();
    for _ in 0..SESSION {
        let messages: Vec<(u8, Vec<u8>)> = (0..1 + rng.below(8))
            .map(|_| {
                let selector = if flavor == Flavor::Hog && !rng.chance(4) {
                    1
                } else if matches!(flavor, Flavor::Heavy | Flavor::Crowd) && !rng.chance(4) {
                    // Mostly the users `--reserve` limits: a crowd of them reaches it.
                    *rng.pick(&[1, 2, 4, 5])
                } else {
                    rng.below(usize::from(CLIENTS)) as u8
                };
                // Crowd sessions are mostly well-formed requests (the crowd must grow).
                let roll = if flavor != Flavor::Mixed && rng.chance(2) {
                    0
                } else {
                    rng.below(20)
                };
                let message = match roll {
                    0..=9 => proto::encode(&request(&mut rng, flavor)).unwrap(),
                    10..=16 => {
                        let mut m = if rng.chance(2) {
                            rng.pick(pool).clone()
                        } else {
                            proto::encode(&request(&mut rng, flavor)).unwrap()
                        };
                        mutate(&mut rng, &mut m, pool);
                        m
                    }
                    17 if rng.chance(50) => {
                        vec![rng.next() as u8; proto::MAX_MESSAGE + rng.below(3)]
                    }
                    _ => rng.pick(pool).clone(),
                };
                (selector, message)
            })
            .collect();
        let input = script(messages.iter().map(|(s, m)| (*s, m.as_slice())));
        history.push(input.clone());
        match std::panic::catch_unwind(AssertUnwindSafe(|| harness.run(&input))) {
            Ok(fed) => {
                for f in fed {
                    *outcomes.entry(outcome(&f.response)).or_default() += 1;
                }
            }
            Err(panic) => {
                let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
                    .join(format!("wire-fuzz-failure-session-{session}"));
                std::fs::write(&path, history.join(SEPARATOR)).unwrap();
                eprintln!(
                    "session {session}: its last script failed; the session so far, as one \
                     script, is in {} (replay: MMSHARE_FUZZ_REPLAY={} cargo test -p \
                     mmshare-daemon --test wire_fuzz replay -- --nocapture)",
                    path.display(),
                    path.display()
                );
                std::panic::resume_unwind(panic);
            }
        }
    }
    if crowd {
        page_through(&harness, &mut outcomes);
    }
    outcomes
}

/// Every client pages through `List` and `ListAll` of everything, checking each page.
fn page_through(harness: &Harness, outcomes: &mut BTreeMap<String, usize>) {
    for selector in 0..CLIENTS {
        let who = creds(selector);
        for all in [false, true] {
            let mut after = None;
            loop {
                let prefix = String::new();
                let request = if all {
                    Request::ListAll { prefix, after }
                } else {
                    Request::List { prefix, after }
                };
                let fed = harness.feed(&proto::encode(&request).unwrap(), who);
                check_reply(&fed, who).unwrap_or_else(|e| panic!("{request:?}: {e}"));
                *outcomes.entry(outcome(&fed.response)).or_default() += 1;
                after = match fed.response {
                    Response::List { arrays, more: true } => arrays.last().map(|a| a.name.clone()),
                    Response::Objects {
                        objects,
                        more: true,
                    } => objects.last().map(|o| o.name().to_owned()),
                    _ => break,
                };
                assert!(
                    after.is_some(),
                    "{request:?}: an empty page with more to come"
                );
            }
        }
    }
}

/// The limits a quota refusal may name (all it names make its key: the reserve of objects
/// also names `--max-arrays`, of which it is a share).
const LIMITS: &[&str] = &[
    "--reserve",
    "--max-objects-per-user",
    "--user-share",
    "--max-bytes",
    "--max-arrays",
];

fn outcome(r: &Response) -> String {
    match r {
        // A quota refusal names its limit (docs/SECURITY.md): count each limit apart.
        Response::Error {
            kind: ErrorKind::QuotaExceeded,
            message,
        } => {
            let named: Vec<&str> = LIMITS
                .iter()
                .copied()
                .filter(|l| message.contains(l))
                .collect();
            format!("QuotaExceeded {}", named.join(" "))
        }
        Response::Error { kind, .. } => format!("{kind:?}"),
        Response::Hello { .. } => "Hello".into(),
        Response::Array(_) => "Array".into(),
        Response::List { more: false, .. } => "List".into(),
        Response::List { more: true, .. } => "List (more)".into(),
        Response::Deleted => "Deleted".into(),
        Response::Stream(_) => "Stream".into(),
        Response::Objects { more: false, .. } => "Objects".into(),
        Response::Objects { more: true, .. } => "Objects (more)".into(),
        Response::Event(_) => "Event".into(),
    }
}
