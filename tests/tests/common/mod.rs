//! Helpers shared by the cross-process tests: the worker binary, array files on temp dirs, and
//! a watchdog so nothing can hang CI.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mmshare::{ArraySpec, DType, create_array_file};

/// Path of the worker binary cargo built for these tests.
pub fn worker_path() -> &'static str {
    env!("CARGO_BIN_EXE_mmshare-test-worker")
}

/// A running worker process with its stdout delivered line by line.
pub struct Worker {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Worker {
    /// Starts `mmshare-test-worker ARGS...`.
    pub fn spawn(args: &[&str]) -> Worker {
        let mut child = Command::new(worker_path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn worker");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Worker {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stdout line starting with `prefix`; panics after `timeout` (watchdog).
    pub fn expect_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "watchdog: no line starting with {prefix:?} within {timeout:?}; saw {:?}",
                        self.seen
                    );
                }
            }
        }
    }

    /// Waits for exit (killing the process and panicking after `timeout`), and returns the exit
    /// status with every stdout line.
    pub fn finish(mut self, timeout: Duration) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "watchdog: worker still running after {timeout:?}; said {:?}",
                    self.seen
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // The reader thread ends at EOF, which follows exit.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        (status, self.seen)
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Creates a fresh array file in `dir` and returns its path.
pub fn make_array(dir: &Path, name: &str, dtype: DType, shape: &[u64]) -> PathBuf {
    create_array_file(dir, &ArraySpec::new(name, dtype, shape.to_vec()))
        .expect("create array")
        .0
}

/// Parses `key=value` out of a worker line.
pub fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {line:?}"))
}

/// Element `i` of the torn-read pattern for `version` (the worker's `pattern`).
pub fn pattern(version: u64, i: usize) -> u64 {
    version
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i as u64)
}
