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
    /// Opens (or makes) the stats array. Counters carry on from the words a previous run left
    /// there (read even if that run died mid-write: each word is whole, old or new), as do the
    /// importer's number mapping and source; the caller decides whether the mapping still
    /// holds. Those previous words are also returned.
    pub fn open(
        client: &Client,
        direction: Direction,
        name: &str,
    ) -> (Stats, Option<[u64; WORDS]>) {
        let array_name = array_name(direction, name);
        let options = CreateOptions::new(&array_name, "<u8", &[WORDS as u64])
            .mode(0o644)
            .exist_ok(true);
        let mut array = match client.create(&options).and_then(|a| a.typed::<u64>()) {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("mmshare-bridge: no stats array {array_name} ({e}); counting in memory");
                None
            }
        };
        let previous = array.as_mut().and_then(|a| {
            a.handle_mut().raw_mut().set_accept_torn(true);
            let words = a.read_to_vec().ok()?;
            mmshare::bridge_stats::check(&words).copied()
        });
        let mut w = [0u64; WORDS];
        if let Some(p) = previous {
            w = p;
        }
        w[0] = LAYOUT;
        w[word::PID] = u64::from(std::process::id());
        w[word::STARTED] = now_ns();
        w[word::CONNECTED] = 0;
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

    /// Writes the words now; false if they could not be written (said each time). Without a
    /// stats array (it could not be made) there is nothing to write, and that is not a failure.
    pub fn flush(&mut self) -> bool {
        self.w[word::UPDATED] = now_ns();
        self.written = Instant::now();
        match &self.array {
            Some(a) => match a.write_all(&self.w) {
                Ok(_) => true,
                Err(e) => {
                    eprintln!("mmshare-bridge: stats not written: {e}");
                    false
                }
            },
            None => true,
        }
    }
}
