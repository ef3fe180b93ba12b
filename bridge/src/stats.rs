//! What a bridge reports, per object it carries: a small array in the local daemon, in the
//! layout of [`mmshare::bridge_stats`] (which `mmshare top` and the daemon's metrics endpoint
//! read), rewritten a few times a second, and at once when the importer's number mapping
//! changes.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use mmshare::bridge_stats::word;
use mmshare::bridge_stats::{Direction, LAYOUT, WORDS, array_name};
use mmshare::{Array, Client, CreateOptions, Shared};

/// How often the words are rewritten while nothing forces it.
const EVERY: Duration = Duration::from_millis(250);

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
    pub fn open(
        client: &Client,
        direction: Direction,
        name: &str,
    ) -> (Stats, Option<[u64; WORDS]>) {
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
            mmshare::bridge_stats::check(&words).copied()
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
