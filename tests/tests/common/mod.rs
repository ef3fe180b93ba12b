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

/// A worker a test lets go of (a panic, a forgotten `finish`) is killed: a stray process
/// would hold the test's output pipes open, and the test run would never end.
impl Drop for Worker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
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

    /// Starts `mmshare-test-worker ARGS...` as user `uid` (group `uid`, no supplementary
    /// groups) through `setpriv`, which execs it (so [`Worker::pid`] is the worker's). Only
    /// root can; callers check [`can_switch_uid`] first.
    pub fn spawn_as(uid: u32, args: &[&str]) -> Worker {
        let id = uid.to_string();
        let mut all = vec![
            format!("--reuid={id}"),
            format!("--regid={id}"),
            "--clear-groups".to_owned(),
            worker_path().to_owned(),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        Worker::spawn_program(Path::new("setpriv"), &all, &[])
    }

    /// Starts another program (an example, say) with `args` and extra environment variables,
    /// its stdout delivered line by line like the worker's.
    pub fn spawn_program(
        program: &Path,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Worker {
        let mut child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
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

    /// Whether a line starting with `prefix` was already seen (by an earlier `expect_line`
    /// that was waiting for another line).
    pub fn has_seen(&self, prefix: &str) -> bool {
        self.seen.iter().any(|l| l.starts_with(prefix))
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
        (status, std::mem::take(&mut self.seen))
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

/// Path of the real `mmshared` binary, built next to the worker (`cargo build --workspace`;
/// `./scripts/test` does that before running the tests).
pub fn daemon_path() -> PathBuf {
    let path = Path::new(worker_path()).with_file_name("mmshared");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p mmshare-daemon` first (./scripts/test does)",
        path.display()
    );
    path
}

/// A real `mmshared` process on a temp directory, killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub root: tempfile::TempDir,
    pub socket: PathBuf,
    pub extra: Vec<String>,
    /// `RLIMIT_NOFILE` (soft and hard) to start it with, if not inherited.
    pub nofile: Option<u64>,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts a daemon with its socket and both directories under a new temp dir.
    pub fn start(extra: &[&str]) -> Daemon {
        Self::start_limited(extra, None)
    }

    /// Starts a daemon whose descriptor limit, soft and hard, is `nofile` (kept across
    /// restarts).
    pub fn start_with_nofile(extra: &[&str], nofile: u64) -> Daemon {
        Self::start_limited(extra, Some(nofile))
    }

    fn start_limited(extra: &[&str], nofile: Option<u64>) -> Daemon {
        let root = tempfile::tempdir().expect("tempdir");
        let socket = root.path().join("mmshared.sock");
        let mut d = Daemon {
            child: None,
            root,
            socket,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            nofile,
            log: Default::default(),
        };
        d.launch();
        d
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    pub fn mem_dir(&self) -> PathBuf {
        self.root.path().join("mem")
    }

    fn launch(&mut self) {
        let mut cmd = Command::new(daemon_path());
        cmd.arg("--socket").arg(&self.socket);
        if !self.extra.iter().any(|a| a == "--dir") {
            cmd.arg("--dir").arg(self.data_dir());
        }
        if !self.extra.iter().any(|a| a == "--mem-dir") {
            cmd.arg("--mem-dir").arg(self.mem_dir());
        }
        if let Some(n) = self.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is one system call, async-signal-safe; nothing else runs
            // between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let limit = rustix::process::Rlimit {
                        current: Some(n),
                        maximum: Some(n),
                    };
                    rustix::process::setrlimit(rustix::process::Resource::Nofile, limit)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let mut child = cmd
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mmshared");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
                log.lock().unwrap().push(line);
            }
        });
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = child.kill();
            panic!(
                "watchdog: mmshared did not start; log: {:?}",
                self.log.lock().unwrap()
            );
        }
        self.child = Some(child);
    }

    /// SIGKILLs the daemon and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL mmshared");
            c.wait().expect("reap mmshared");
        }
    }

    /// Starts it again on the same socket and directories.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Sends a signal and waits for the exit, with a watchdog.
    pub fn stop_with(&mut self, signal: rustix::process::Signal) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let pid = rustix::process::Pid::from_raw(c.id() as i32).expect("pid");
        rustix::process::kill_process(pid, signal).expect("signal");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = c.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("watchdog: mmshared did not exit after {signal:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Stops the daemon (SIGSTOP) and waits until every thread of it is stopped: the signal
    /// is delivered asynchronously, and a request sent right after `kill` may still be
    /// answered.
    pub fn freeze(&self) {
        let pid = self.pid();
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).expect("pid"),
            rustix::process::Signal::STOP,
        )
        .expect("SIGSTOP");
        let deadline = Instant::now() + Duration::from_secs(20);
        let stopped = || {
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|tasks| {
                    tasks.filter_map(Result::ok).all(|t| {
                        std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
                            // The state follows the command name's closing parenthesis.
                            stat.rsplit_once(") ")
                                .is_some_and(|(_, rest)| rest.starts_with(['T', 't']))
                        })
                    })
                })
                .unwrap_or(false)
        };
        while !stopped() {
            assert!(Instant::now() < deadline, "watchdog: mmshared did not stop");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Lets a frozen daemon run again (SIGCONT).
    pub fn thaw(&self) {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(self.pid() as i32).expect("pid"),
            rustix::process::Signal::CONT,
        )
        .expect("SIGCONT");
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn client(&self) -> mmshare::Client {
        mmshare::Client::connect(&self.socket).expect("connect to test daemon")
    }

    /// Whether the daemon logged a line containing `needle`. The log is collected from the
    /// daemon's stderr by another thread, so a line the daemon wrote just before the event the
    /// test saw may not be here yet: wait for it (up to a watchdog) rather than race it.
    pub fn log_has(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Open descriptors of the daemon process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Path of an example of the `mmshare` crate, built next to the worker (`cargo test` builds
/// the examples before it runs the tests).
pub fn example_path(name: &str) -> PathBuf {
    let path = Path::new(worker_path())
        .with_file_name("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p mmshare --examples` first (cargo test --workspace does)",
        path.display()
    );
    path
}

/// Whether this process may run workers as other users (root, with `setpriv`); if not, says
/// why on stderr so the skip shows in the test output.
pub fn can_switch_uid() -> bool {
    let root = rustix::process::geteuid().as_raw() == 0;
    let setpriv = Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !root || !setpriv {
        eprintln!("skipped: running workers as other uids needs root and setpriv (CI has both)");
    }
    root && setpriv
}
