//! The descriptor keeper: a small process that holds a copy of every control memfd the daemon
//! made, so that control state outlives a crash or a restart of the daemon.
//!
//! # Why a process
//! Control state (sleeper counts, subscriber records, hold budgets) lives in sealed memfds:
//! nobody who receives one can change its size, so no participant can turn another's (or the
//! daemon's) accesses into SIGBUS, and none can grow it past the daemon's limits. A memfd has
//! no name in any filesystem; it exists while some process holds a descriptor or a mapping
//! of it. Participants hold theirs, but a daemon that restarts has none, and would hand new
//! participants fresh state that the running ones never see (a publisher blind to a new
//! subscriber's holds). So a process whose only job is to hold descriptors keeps a copy:
//! systemd offers the same to the services it runs (its file-descriptor store), and
//! `s6-fdholderd` is the same idea as a program. The keeper is not on any request's path.
//!
//! # Lifecycle
//! The daemon connects to `<memory dir>/.keeper.sock` at start, or, when nobody answers
//! there, starts a keeper (its own executable with `--fd-keeper`, in its own process group so
//! that the terminal's Ctrl-C for the daemon does not reach it) and connects. It asks for every
//! descriptor the keeper holds (`Handover`), adopts those that still match an object (checked:
//! sealed, the right size and layout, the data file's device and inode), and from then on tells
//! the keeper of each control memfd it makes (`Keep`) or drops (`Forget`).
//!
//! While a daemon is connected the keeper only stores. While none is, it checks once a second
//! which of its descriptors still have a live participant (the participant lock on byte 0,
//! `mmshare::internal::has_participants`), drops the others, and exits when it holds nothing: so it
//! lingers after a daemon stops only while some process still uses state that a next daemon
//! must find, and a daemon that is simply stopped leaves no process behind once its
//! participants are gone.
//!
//! # Trust
//! The socket is in the memory directory, which only the daemon's uid can enter; both sides
//! also check the other's uid with `SO_PEERCRED` (the daemon's own uid only). Nothing a client
//! sends ever reaches the keeper. A keeper that dies while the daemon runs is noticed within
//! the daemon's 250 ms recovery pass, replaced and refilled. Losing the keeper and the daemon
//! at once (a `kill -9` of both) loses control state that participants still use: the next
//! daemon then starts fresh state for new participants, and the running ones go on among
//! themselves.
//!
//! # Messages
//! One SOCK_SEQPACKET message each: a tag byte, then a UTF-8 key (at most [`MAX_KEY`] bytes).
//! `K` key + one descriptor: keep (replacing a descriptor kept under that key). `F` key:
//! forget. `H`: hand over; the keeper answers with one `K` key + descriptor per entry, then
//! `E`. Keys name the object and its data file: `a/DEV/INO/CREATED_NS/NAME` for an array,
//! `s/...` for a stream.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, poll};
use rustix::net::{
    self, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use tracing::{info, warn};

/// Longest key.
pub const MAX_KEY: usize = 512;
/// The keeper's socket, in the memory directory.
pub const SOCKET_NAME: &str = ".keeper.sock";
/// How often a keeper without a daemon checks its descriptors for live participants.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// How long a reply or a send may take before the other side is given up on.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The key of an object's control state: its kind, its data file (device and inode), its
/// creation time (an inode number can be reused by the next object of the same name), its
/// name.
pub fn key(kind: char, id: (u64, u64), created_ns: u64, name: &str) -> String {
    format!("{kind}/{}/{}/{created_ns}/{name}", id.0, id.1)
}

fn seqpacket() -> io::Result<OwnedFd> {
    Ok(net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

fn same_uid(fd: &OwnedFd) -> bool {
    let me = rustix::process::geteuid().as_raw();
    net::sockopt::socket_peercred(fd).is_ok_and(|c| c.uid.as_raw() == me)
}

fn send(fd: &OwnedFd, tag: u8, key: &str, file: Option<&File>) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(1 + key.len());
    bytes.push(tag);
    bytes.extend_from_slice(key.as_bytes());
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let borrowed;
    if let Some(file) = file {
        borrowed = [file.as_fd()];
        if !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
            return Err(io::Error::other("no room for a descriptor"));
        }
    }
    let n = net::sendmsg(
        fd,
        &[io::IoSlice::new(&bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if n != bytes.len() {
        return Err(io::Error::other("short send"));
    }
    Ok(())
}

/// One received message: tag, key, descriptor; `None` when the peer closed.
fn recv(fd: &OwnedFd) -> io::Result<Option<(u8, String, Option<File>)>> {
    let mut buf = [0u8; 1 + MAX_KEY + 1];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = loop {
        match net::recvmsg(
            fd,
            &mut [io::IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    let mut file = None;
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            for fd in fds {
                // One descriptor is kept; any other is closed by being dropped.
                if file.is_none() {
                    file = Some(File::from(fd));
                }
            }
        }
    }
    if msg.bytes == 0 {
        return Ok(None);
    }
    if msg.bytes > 1 + MAX_KEY || msg.flags.contains(net::ReturnFlags::TRUNC) {
        return Err(io::Error::other("message longer than a key"));
    }
    let key = std::str::from_utf8(&buf[1..msg.bytes])
        .map_err(|_| io::Error::other("key is not UTF-8"))?
        .to_owned();
    Ok(Some((buf[0], key, file)))
}

fn set_timeouts(fd: &OwnedFd) -> io::Result<()> {
    net::sockopt::set_socket_timeout(fd, net::sockopt::Timeout::Recv, Some(IO_TIMEOUT))?;
    net::sockopt::set_socket_timeout(fd, net::sockopt::Timeout::Send, Some(IO_TIMEOUT))?;
    Ok(())
}

/// How the daemon starts a keeper: a program and its arguments, to which the socket path is
/// appended.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The program (the daemon's own executable by default).
    pub program: PathBuf,
    /// Arguments before the socket path.
    pub args: Vec<String>,
}

impl Launch {
    /// `mmshared --fd-keeper SOCKET`, with this process's own executable.
    pub fn this_executable() -> io::Result<Launch> {
        Ok(Launch {
            program: std::env::current_exe()?,
            args: vec!["--fd-keeper".into()],
        })
    }
}

/// The daemon's side: a connection to its keeper.
#[derive(Debug)]
pub struct Keeper {
    socket: PathBuf,
    launch: Launch,
    conn: Option<OwnedFd>,
}

impl Keeper {
    /// Connects to the keeper of memory directory `dir` (starting one if none answers) and
    /// takes over what it holds: key → descriptor.
    ///
    /// # Errors
    /// A keeper could not be reached or started.
    pub fn connect(dir: &Path, launch: Launch) -> io::Result<(Keeper, BTreeMap<String, File>)> {
        let mut keeper = Keeper {
            socket: dir.join(SOCKET_NAME),
            launch,
            conn: None,
        };
        // A keeper about to exit (it had nothing left) may close right after accepting: then
        // the handover fails and a fresh keeper is started, once.
        let mut last = io::Error::other("no attempt");
        for _ in 0..3 {
            match keeper.reach().and_then(|()| keeper.handover()) {
                Ok(held) => return Ok((keeper, held)),
                Err(e) => {
                    keeper.conn = None;
                    last = e;
                }
            }
        }
        Err(last)
    }

    fn try_connect(&self) -> io::Result<OwnedFd> {
        let fd = seqpacket()?;
        // Before connecting: a blocking connect to a frozen keeper's full backlog waits for
        // the send timeout, not for ever.
        set_timeouts(&fd)?;
        net::connect(&fd, &SocketAddrUnix::new(&self.socket)?)?;
        if !same_uid(&fd) {
            return Err(io::Error::other(format!(
                "the keeper at {} runs as another uid",
                self.socket.display()
            )));
        }
        Ok(fd)
    }

    /// Connects, starting a keeper if nobody listens.
    fn reach(&mut self) -> io::Result<()> {
        if let Ok(fd) = self.try_connect() {
            self.conn = Some(fd);
            return Ok(());
        }
        // Nobody listens: a stale socket file (the directory is the daemon's own and locked
        // by it, so no other keeper of this directory can be starting) is removed by the
        // keeper itself before it binds.
        let mut command = std::process::Command::new(&self.launch.program);
        command
            .args(&self.launch.args)
            .arg(&self.socket)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0);
        // Socket activation's variables name descriptors and a pid that are not the keeper's.
        for var in crate::activation::SERVICE_MANAGER_VARS {
            command.env_remove(var);
        }
        let mut child = command.spawn()?;
        info!(pid = child.id(), socket = %self.socket.display(), "started a descriptor keeper");
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            match self.try_connect() {
                Ok(fd) => {
                    self.conn = Some(fd);
                    // Reap it if it ever exits while this daemon runs (it should not), so it
                    // leaves no zombie.
                    std::thread::spawn(move || child.wait());
                    return Ok(());
                }
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(io::Error::other(format!(
                            "the keeper ({}) exited with {status} before listening: {e}",
                            self.launch.program.display()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }

    fn handover(&mut self) -> io::Result<BTreeMap<String, File>> {
        let conn = self
            .conn
            .as_ref()
            .ok_or_else(|| io::Error::other("not connected"))?;
        send(conn, b'H', "", None)?;
        let mut held = BTreeMap::new();
        loop {
            match recv(conn)? {
                Some((b'K', key, Some(file))) => {
                    held.insert(key, file);
                }
                Some((b'E', _, _)) => return Ok(held),
                Some(_) => return Err(io::Error::other("unexpected message from the keeper")),
                None => return Err(io::Error::other("the keeper closed during the handover")),
            }
        }
    }

    /// Tells the keeper to hold `file` under `key`. A keeper that went away is started again;
    /// the error is then `NotConnected`, and the caller gives it everything (`keep_all`).
    pub fn keep(&mut self, key: &str, file: &File) -> io::Result<()> {
        self.with_conn(|conn| send(conn, b'K', key, Some(file)))
    }

    /// Tells the keeper to drop `key`.
    pub fn forget(&mut self, key: &str) -> io::Result<()> {
        self.with_conn(|conn| send(conn, b'F', key, None))
    }

    fn with_conn(&mut self, f: impl Fn(&OwnedFd) -> io::Result<()>) -> io::Result<()> {
        if let Some(conn) = &self.conn {
            match f(conn) {
                Ok(()) => return Ok(()),
                Err(e) => warn!("the descriptor keeper went away ({e}); starting another"),
            }
        }
        self.conn = None;
        self.reach()?;
        // A new keeper starts empty; the caller re-sends the whole set (`keep_all`).
        Err(io::Error::new(
            io::ErrorKind::NotConnected,
            "keeper restarted",
        ))
    }

    /// Whether the keeper is still there; if it hung up (it died, or exited), starts another
    /// and returns `true`: the caller then gives it everything (`keep_all`). The keeper
    /// never sends anything unasked, so a readable connection means it closed.
    pub fn check(&mut self) -> bool {
        let gone = match &self.conn {
            None => true,
            Some(conn) => {
                let mut fds = [PollFd::new(conn, PollFlags::IN)];
                let zero = rustix::time::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
            }
        };
        if !gone {
            return false;
        }
        warn!("the descriptor keeper went away; starting another");
        self.conn = None;
        match self.reach() {
            Ok(()) => true,
            Err(e) => {
                warn!("cannot start a descriptor keeper: {e}");
                false
            }
        }
    }

    /// Gives a (new) keeper every descriptor in `all`.
    pub fn keep_all<'a>(&mut self, all: impl Iterator<Item = (String, &'a File)>) {
        let Some(conn) = &self.conn else { return };
        for (key, file) in all {
            if let Err(e) = send(conn, b'K', &key, Some(file)) {
                warn!("cannot hand control state to the descriptor keeper: {e}");
                return;
            }
        }
    }
}

/// Runs a keeper on `socket` until it holds nothing and no daemon is connected.
pub fn run(socket: &Path) -> ExitCode {
    match serve(socket) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mmshared --fd-keeper: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(socket: &Path) -> io::Result<()> {
    let listener = seqpacket()?;
    // A socket file nobody answers on is a dead keeper's.
    if std::fs::symlink_metadata(socket).is_ok() {
        std::fs::remove_file(socket)?;
    }
    net::bind(&listener, &SocketAddrUnix::new(socket)?)?;
    std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    net::listen(&listener, 8)?;
    let ours = std::fs::symlink_metadata(socket).map(|m| (m.dev(), m.ino()))?;
    let mut held: BTreeMap<String, File> = BTreeMap::new();
    let mut daemon: Option<OwnedFd> = None;
    let mut last_check = Instant::now();
    loop {
        let mut fds = vec![PollFd::new(&listener, PollFlags::IN)];
        if let Some(d) = &daemon {
            fds.push(PollFd::new(d, PollFlags::IN));
        }
        let timeout = rustix::time::Timespec {
            tv_sec: IDLE_CHECK.as_secs() as i64,
            tv_nsec: 0,
        };
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let listener_ready = !fds[0].revents().is_empty();
        let daemon_ready = fds.get(1).is_some_and(|f| !f.revents().is_empty());
        drop(fds);
        // The daemon's messages (and its hang-up) first, so that a daemon that died and its
        // successor seen in the same round are taken in that order.
        if daemon_ready && let Some(conn) = &daemon {
            match recv(conn) {
                Ok(Some((b'K', key, Some(file)))) => {
                    held.insert(key, file);
                }
                Ok(Some((b'F', key, _))) => {
                    held.remove(&key);
                }
                Ok(Some((b'H', _, _))) => {
                    let sent = held
                        .iter()
                        .try_for_each(|(key, file)| send(conn, b'K', key, Some(file)))
                        .and_then(|()| send(conn, b'E', "", None));
                    if sent.is_err() {
                        daemon = None;
                    }
                }
                // Closed, an error, or a message that makes no sense: this daemon is gone.
                _ => daemon = None,
            }
        }
        if listener_ready && let Ok(conn) = net::accept_with(&listener, SocketFlags::CLOEXEC) {
            // Only the daemon's uid, and only while no daemon is connected: one daemon holds
            // the directory's lock at a time, so a second connection is a probe or a stray
            // and must not take the daemon's place (it is closed at once).
            if daemon.is_none() && same_uid(&conn) && set_timeouts(&conn).is_ok() {
                daemon = Some(conn);
            }
        }
        if daemon.is_none() && last_check.elapsed() >= IDLE_CHECK {
            last_check = Instant::now();
            // A kernel without OFD locks cannot tell: then nothing is kept for a next daemon.
            held.retain(|_, file| mmshare::internal::has_participants(file).unwrap_or(false));
            if held.is_empty() {
                // Only remove the socket if it is still ours (a later keeper may have bound a
                // new one after this one was given up on).
                if std::fs::symlink_metadata(socket).is_ok_and(|m| (m.dev(), m.ino()) == ours) {
                    let _ = std::fs::remove_file(socket);
                }
                return Ok(());
            }
        }
    }
}
