//! What a bridge reports, per object it carries: a small array in the local daemon.
//!
//! Each exported object `NAME` has the array `mmshare-bridge.out.NAME`, each imported one
//! `mmshare-bridge.in.NAME`: 16 little-endian u64 words, rewritten a few times a second (and
//! at once when the importer's number mapping changes). `mmshare top` and the daemon's metrics
//! endpoint read them, so a bridge's counters show where everything else about the host does,
//! and outlive the bridge: an importer that restarts reads its own array back to learn which
//! remote frame it delivered last.
//!
//! | word | meaning |
//! |---|---|
//! | 0 | layout: [`LAYOUT`] |
//! | 1 | the bridge's pid |
//! | 2 | frames (array versions) carried |
//! | 3 | bytes carried (frame data and per-frame headers) |
//! | 4 | frames lost: numbers skipped, never delivered |
//! | 5 | reconnects: the other side came back after it had been seen |
//! | 6 | duplicates dropped (frames that arrived twice around a resume) |
//! | 7 | resumes: asked for (importer) or served (exporter) |
//! | 8 | importer: remote number minus local number of the frames it publishes (wrapping) |
//! | 9 | the next remote number expected (importer) or sent (exporter); 0 before the first |
//! | 10 | bytes the bridge itself copied (the zero-copy accounting) |
//! | 11 | when the bridge started carrying it, ns since the Unix epoch |
//! | 12 | when these words were last written, ns since the Unix epoch |
//! | 13 | frames that were torn or did not fit, dropped |
//! | 14 | 1 while the other side is connected |
//! | 15 | importer: 1 once word 8 holds the mapping of a frame it published |

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mmshare::{Array, Client, CreateOptions, Shared};

/// Word 0 of a stats array this bridge writes.
pub const LAYOUT: u64 = 0x4d4d_4252_0000_0001;
/// Words in a stats array.
pub const WORDS: usize = 16;
/// How often the words are rewritten while nothing forces it.
const EVERY: Duration = Duration::from_millis(250);

/// Word numbers.
pub mod word {
    pub const PID: usize = 1;
    pub const FRAMES: usize = 2;
    pub const BYTES: usize = 3;
    pub const LOST: usize = 4;
    pub const RECONNECTS: usize = 5;
    pub const DUPLICATES: usize = 6;
    pub const RESUMES: usize = 7;
    pub const OFFSET: usize = 8;
    pub const NEXT: usize = 9;
    pub const COPIED: usize = 10;
    pub const STARTED: usize = 11;
    pub const UPDATED: usize = 12;
    pub const DROPPED: usize = 13;
    pub const CONNECTED: usize = 14;
    pub const MAPPED: usize = 15;
}

/// The name of the stats array for `name` carried in `direction` (`"in"` or `"out"`).
pub fn array_name(direction: &str, name: &str) -> String {
    format!("mmshare-bridge.{direction}.{name}")
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One object's counters and the array they are written to.
pub struct Stats {
    /// The words, as last counted.
    pub w: [u64; WORDS],
    array: Option<Shared<Array<u64>>>,
    written: Instant,
}

impl Stats {
    /// Opens (or makes) the stats array; the words it held before (a previous run's) are
    /// returned in `previous` when their layout is this bridge's.
    pub fn open(client: &Client, direction: &str, name: &str) -> (Stats, Option<[u64; WORDS]>) {
        let array_name = array_name(direction, name);
        let options = CreateOptions::new(&array_name, "<u8", &[WORDS as u64])
            .mode(0o644)
            .exist_ok(true);
        let array = match client.create(&options).and_then(|a| a.typed::<u64>()) {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("mmshare-bridge: no stats array {array_name} ({e}); counting in memory");
                None
            }
        };
        let previous = array.as_ref().and_then(|a| {
            let words = a.read_to_vec().ok()?;
            (words.len() == WORDS && words[0] == LAYOUT)
                .then(|| words.try_into().expect("WORDS words"))
        });
        let mut w = [0u64; WORDS];
        w[0] = LAYOUT;
        w[word::PID] = u64::from(std::process::id());
        w[word::STARTED] = now_ns();
        let mut stats = Stats {
            w,
            array,
            written: Instant::now(),
        };
        stats.flush();
        (stats, previous)
    }

    /// Adds `n` to word `i`.
    pub fn add(&mut self, i: usize, n: u64) {
        self.w[i] = self.w[i].wrapping_add(n);
    }

    /// Writes the words if the last write is old enough.
    pub fn tick(&mut self) {
        if self.written.elapsed() >= EVERY {
            self.flush();
        }
    }

    /// Writes the words now.
    pub fn flush(&mut self) {
        self.w[word::UPDATED] = now_ns();
        self.written = Instant::now();
        if let Some(a) = &self.array
            && let Err(e) = a.write_all(&self.w)
        {
            eprintln!("mmshare-bridge: stats not written: {e}");
        }
    }
}
