//! Request/response: zero-copy calls between processes, built from streams of several
//! publishers.
//!
//! # The design
//!
//! A service `NAME` for at most R requesters and S servers is R + S streams, every one of
//! them the lossless, lane-per-publisher stream of the `stream` module, so that everything
//! that module proves (no frame lost, torn or read while rewritten; no system call when
//! nobody sleeps; one wake-up per frame when the other side sleeps; dead participants found
//! by the kernel's locks) holds for requests and responses alike:
//!
//! * `NAME.req.S` (one per server slot S): the requests for server S. It has R lanes, one per
//!   requester slot, and exactly one subscriber record, which the server of slot S holds.
//!   Each frame is one request; its per-frame header is `[('id', '<u8'), ('requester',
//!   '<u8')]`: the requester's correlation id and its nonce.
//! * `NAME.resp.R` (one per requester slot R): the responses for requester R. It has S lanes,
//!   one per server slot, and exactly one subscriber record, which the requester of slot R
//!   holds. Each frame is one response, with the header of the request it answers.
//!
//! A **requester** takes a requester slot by taking the single record of `NAME.resp.R` (the
//! first R it can), then publishes in lane R of every `NAME.req.S`. A **server** takes a
//! server slot by taking the single record of `NAME.req.S`, and publishes its responses in
//! lane S of `NAME.resp.R` for the requester R it answers (attached on its first response to
//! R). So no two processes ever publish in one lane, each ring has one reader, and a
//! request travels requester → server → requester through two single-producer rings with
//! no lock, no copy and no daemon on the way.
//!
//! * **Which server.** A requester sends each request to one server: the next present one
//!   after the last it used (a server is present while its slot's record is taken, as the
//!   requester's publisher handle on that stream sees). Each request is answered by exactly
//!   the server it was sent to; servers never compete for requests, so nothing has to be
//!   claimed.
//! * **Correlation.** The requester numbers its requests 0, 1, 2, ... (its correlation ids)
//!   and writes the id and its nonce (a random word, new for every requester) in the
//!   request's header; the server echoes both in the response's header. A requester takes
//!   only responses with its nonce, so a response meant for a requester that died and was
//!   replaced in its slot is dropped, never delivered to the new one.
//! * **A requester dies.** The kernel drops its locks: its record in `NAME.resp.R` is
//!   reclaimed (by the daemon, or by a server whose response loan it holds back: the server
//!   reclaims dead records itself before it gives up), and its lanes in the request streams
//!   are free for the next requester. Its pending requests are still answered, into a ring
//!   nobody reads.
//! * **A server dies.** A requester waiting for responses checks, whenever nothing arrives
//!   for 100 ms, whether each server it has requests pending at still holds its record (the
//!   kernel's word: `Publisher::reclaim_dead_subscribers` takes the record's liveness lock if
//!   its holder is gone). If not, it first takes every response that server published before
//!   it died, then fails with [`ServiceError::ServerLost`], naming the ids that will never
//!   be answered. A requester sending to no server at all waits for one up to its timeout
//!   ([`ServiceError::NoServer`]).
//! * **Waiting.** Both sides wait as stream subscribers and publishers do: spinning, yielding,
//!   then asleep on the stream's futex words, woken by the other side's publish. When both
//!   are busy nobody makes a system call; when both sleep, a call costs one wake-up each way.
//!
//! The streams are ordinary streams: `mmshare ls` lists them, and their files are laid out as
//! docs/FORMAT.md says. [`Client::delete_service`] deletes them all.

use std::cell::{RefCell, RefMut};
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use crate::client::{Client, ClientError, StreamOptions};
use crate::dtype::Element;
use crate::error::StreamError;
use crate::proto::{Backing, ErrorKind, StreamInfo, StreamRole};
use crate::stream::{
    Delivery, LoanToken, Publisher, Sample, StartAt, StreamFiles, SubscribeOptions, Subscriber,
};

/// The per-frame header of requests and responses: the correlation id, then the requester's
/// nonce (little-endian `u64` each).
pub const CALL_HEADER: &str = "[('id', '<u8'), ('requester', '<u8')]";

/// Most requesters, and most servers, a service may have (a stream's lane limit).
pub const MAX_SLOTS: u32 = crate::format::MAX_PUBLISHERS;

/// How often a waiting requester checks that the servers it waits for are alive.
const LIVENESS_CHECK: Duration = Duration::from_millis(100);

/// The request stream of server slot `server`.
pub fn request_stream(service: &str, server: u32) -> String {
    format!("{service}.req.{server}")
}

/// The response stream of requester slot `requester`.
pub fn response_stream(service: &str, requester: u32) -> String {
    format!("{service}.resp.{requester}")
}

/// What [`Client::create_service`] creates: the request and response frames, and how many
/// requesters and servers may use it at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceOptions {
    /// The service's name (its streams are `NAME.req.S` and `NAME.resp.R`).
    pub name: String,
    /// NumPy dtype string of a request's elements.
    pub request_dtype: String,
    /// A request's shape.
    pub request_shape: Vec<u64>,
    /// NumPy dtype string of a response's elements.
    pub response_dtype: String,
    /// A response's shape.
    pub response_shape: Vec<u64>,
    /// Requesters at once (default 8, at most 16 ([`crate::MAX_PUBLISHERS`])).
    pub max_requesters: u32,
    /// Servers at once (default 2, at most 16 ([`crate::MAX_PUBLISHERS`])).
    pub max_servers: u32,
    /// Requests (and responses) each ring holds: how many a requester may have in flight to
    /// one server, and a server to one requester, before it waits (default 4).
    pub slots: u32,
    /// File (default) or memory backing.
    pub backing: Backing,
    /// Permission bits (default 0600): read and write are both needed to call or to serve.
    pub mode: u32,
    /// Succeed if the service exists with the same shape.
    pub exist_ok: bool,
}

impl ServiceOptions {
    /// A service taking requests of `request_dtype` and `request_shape` and answering with
    /// responses of `response_dtype` and `response_shape`: 8 requesters, 2 servers, rings of
    /// 4, file-backed, mode 0600.
    pub fn new(
        name: impl Into<String>,
        request_dtype: impl Into<String>,
        request_shape: &[u64],
        response_dtype: impl Into<String>,
        response_shape: &[u64],
    ) -> ServiceOptions {
        ServiceOptions {
            name: name.into(),
            request_dtype: request_dtype.into(),
            request_shape: request_shape.to_vec(),
            response_dtype: response_dtype.into(),
            response_shape: response_shape.to_vec(),
            max_requesters: 8,
            max_servers: 2,
            slots: 4,
            backing: Backing::File,
            mode: 0o600,
            exist_ok: false,
        }
    }

    /// Requesters at once.
    pub fn max_requesters(mut self, n: u32) -> Self {
        self.max_requesters = n;
        self
    }

    /// Servers at once.
    pub fn max_servers(mut self, n: u32) -> Self {
        self.max_servers = n;
        self
    }

    /// Requests each ring holds.
    pub fn slots(mut self, slots: u32) -> Self {
        self.slots = slots;
        self
    }

    /// Back it with the daemon's tmpfs directory.
    pub fn memory(mut self) -> Self {
        self.backing = Backing::Memory;
        self
    }

    /// Permission bits.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Succeed if the service exists with the same shape.
    pub fn exist_ok(mut self, yes: bool) -> Self {
        self.exist_ok = yes;
        self
    }

    fn stream(&self, name: String, dtype: &str, shape: &[u64], lanes: u32) -> StreamOptions {
        let mut options = StreamOptions::new(name, dtype, shape)
            .slots(self.slots)
            .max_subscribers(1)
            .max_publishers(lanes)
            .header(CALL_HEADER)
            .mode(self.mode)
            .exist_ok(self.exist_ok);
        if self.backing == Backing::Memory {
            options = options.memory();
        }
        options
    }
}

/// What [`Client::create_service`] made: the service's shape, as its streams describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// The service's name.
    pub name: String,
    /// Requesters at once.
    pub max_requesters: u32,
    /// Servers at once.
    pub max_servers: u32,
    /// Server slot 0's request stream (dtype and shape of requests).
    pub requests: StreamInfo,
    /// Requester slot 0's response stream (dtype and shape of responses).
    pub responses: StreamInfo,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// No server was attached to the service within the wait.
    #[error("service {name:?} has no server (waited {waited:?}); start one (Client::server)")]
    NoServer {
        /// The service.
        name: String,
        /// How long the request waited for one.
        waited: Duration,
    },
    /// The server that had these requests died before it answered them: they will never be
    /// answered (send them again; another server may be there).
    #[error(
        "service {name:?}: server {server} is gone, with {} request(s) it will never answer (ids {pending:?}); send them again",
        pending.len()
    )]
    ServerLost {
        /// The service.
        name: String,
        /// The server slot that died.
        server: u32,
        /// The correlation ids of the requests it had.
        pending: Vec<u64>,
    },
    /// No response came within the wait.
    #[error("service {name:?}: no response within {waited:?} ({pending} request(s) pending)")]
    Timeout {
        /// The service.
        name: String,
        /// How long it waited.
        waited: Duration,
        /// Requests sent and not answered yet.
        pending: usize,
    },
    /// Every requester slot (or server slot) of the service is taken.
    #[error("service {name:?} already has {max} {what} attached, its limit")]
    Full {
        /// The service.
        name: String,
        /// "requesters" or "servers".
        what: &'static str,
        /// The limit.
        max: u32,
    },
    /// A request of another shape than the service's.
    #[error("service {name:?}: {what} of {given} elements, the service's are {expected}")]
    WrongLength {
        /// The service.
        name: String,
        /// "a request" or "a response".
        what: &'static str,
        /// Elements given.
        given: usize,
        /// Elements expected.
        expected: usize,
    },
    /// A stream of the service failed (its files, a loan that timed out, ...).
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The daemon refused, or the connection failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Reads the id and the requester nonce of a call header.
fn read_header(bytes: &[u8]) -> (u64, u64) {
    let word = |at: usize| {
        bytes
            .get(at..at + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    (word(0), word(8))
}

/// Writes the id and the requester nonce of a call header at `ptr` (16 bytes).
///
/// # Safety
/// `ptr` is the per-frame header of a loaned slot of a stream whose header is
/// [`CALL_HEADER`] (16 bytes, 8-byte aligned), and nothing else writes it meanwhile.
unsafe fn write_header(ptr: *mut u8, id: u64, requester: u64) {
    // SAFETY: the caller's contract.
    unsafe {
        std::ptr::copy_nonoverlapping(id.to_le_bytes().as_ptr(), ptr, 8);
        std::ptr::copy_nonoverlapping(requester.to_le_bytes().as_ptr(), ptr.add(8), 8);
    }
}

fn full(name: &str, what: &'static str, max: u32) -> ServiceError {
    ServiceError::Full {
        name: name.to_owned(),
        what,
        max,
    }
}

/// Whether `e` says that the only record of a stream is taken (its slot is someone else's).
fn record_taken(e: &ClientError) -> bool {
    matches!(e, ClientError::Stream(StreamError::NoRecord { .. }))
}

/// Takes the only record of one of the streams `names` yields (the first it can) with
/// `subscribe`: a slot. If every record looks taken, the records whose holders are gone (the
/// kernel's word: their liveness locks) are freed, and each is tried once more.
fn take_slot<T: Element>(
    client: &Client,
    names: impl Iterator<Item = (u32, String)> + Clone,
    subscribe: impl Fn(&str, SubscribeOptions) -> Result<Subscriber<T>, ClientError>,
) -> Result<Option<(u32, Subscriber<T>)>, ClientError> {
    // Two held at once if the ring allows (a server answering two requests together, a
    // requester comparing two responses); fewer are granted on a ring of 3 slots.
    let options = SubscribeOptions::new(Delivery::Lossless)
        .max_held(2)
        .start(StartAt::Next);
    for round in 0..2 {
        for (slot, name) in names.clone() {
            match subscribe(&name, options) {
                Ok(sub) => return Ok(Some((slot, sub))),
                Err(e) if record_taken(&e) => {}
                Err(e) => return Err(e),
            }
        }
        if round == 0 {
            for (_, name) in names.clone() {
                if let Ok((lanes, _lease)) = client.open_stream_files(&name, StreamRole::Subscribe)
                {
                    for files in &lanes {
                        files.reclaim_subscribers(|_| crate::sys::Liveness::Unknown);
                    }
                }
            }
        }
    }
    Ok(None)
}

/// How a handle of `T` is attached to one lane's files (`Publisher::attach`, or
/// `Publisher::attach_bytes` for byte handles).
type AttachLane<T> = fn(StreamFiles) -> Result<Publisher<T>, StreamError>;

/// A publisher of lane `lane` of stream `name`.
fn lane_publisher<T: Element>(
    client: &Client,
    name: &str,
    lane: u32,
    attach: AttachLane<T>,
) -> Result<Publisher<T>, ClientError> {
    let (mut lanes, lease) = client.open_stream_files(name, StreamRole::Publish)?;
    if lane as usize >= lanes.len() {
        return Err(ClientError::Stream(StreamError::Lanes {
            name: name.to_owned(),
            reason: format!("it has {} lanes, not lane {lane}", lanes.len()),
        }));
    }
    let files = lanes.swap_remove(lane as usize);
    Ok(attach(files)?.with_lease(lease))
}

impl Client {
    /// Creates the service `options` describes: its request streams (one per server slot)
    /// and response streams (one per requester slot). See the `service` module docs.
    ///
    /// # Errors
    /// As [`Client::create_stream`] for each stream (nothing is left behind: streams made
    /// before a failure are deleted again); `InvalidShape` for 0 or more than 16 ([`crate::MAX_PUBLISHERS`])
    /// requesters or servers.
    pub fn create_service(&self, options: &ServiceOptions) -> Result<ServiceInfo, ClientError> {
        for (what, n) in [
            ("max_requesters", options.max_requesters),
            ("max_servers", options.max_servers),
        ] {
            if !(1..=MAX_SLOTS).contains(&n) {
                return Err(ClientError::Server {
                    kind: ErrorKind::InvalidShape,
                    message: format!("a service has 1 to {MAX_SLOTS} {what}, not {n}"),
                });
            }
        }
        let mut made = Vec::new();
        let mut infos = Vec::new();
        let plan = (0..options.max_servers)
            .map(|s| {
                options.stream(
                    request_stream(&options.name, s),
                    &options.request_dtype,
                    &options.request_shape,
                    options.max_requesters,
                )
            })
            .chain((0..options.max_requesters).map(|r| {
                options.stream(
                    response_stream(&options.name, r),
                    &options.response_dtype,
                    &options.response_shape,
                    options.max_servers,
                )
            }));
        for stream in plan {
            match self.create_stream(&stream) {
                Ok(info) => {
                    made.push(stream.name.clone());
                    infos.push(info);
                }
                Err(e) => {
                    if !options.exist_ok || e.kind() != Some(ErrorKind::AlreadyExists) {
                        for name in made {
                            let _ = self.delete(&name);
                        }
                    }
                    return Err(e);
                }
            }
        }
        let responses = infos.swap_remove(options.max_servers as usize);
        let requests = infos.swap_remove(0);
        Ok(ServiceInfo {
            name: options.name.clone(),
            max_requesters: options.max_requesters,
            max_servers: options.max_servers,
            requests,
            responses,
        })
    }

    /// Deletes every stream of service `name` (processes using them keep working on them).
    ///
    /// # Errors
    /// As [`Client::delete`]; `NotFound` if the service has no streams.
    pub fn delete_service(&self, name: &str) -> Result<(), ClientError> {
        let (requesters, servers) = self.service_shape(name)?;
        let names = (0..servers)
            .map(|s| request_stream(name, s))
            .chain((0..requesters).map(|r| response_stream(name, r)));
        let mut first_error = None;
        for stream in names {
            if let Err(e) = self.delete(&stream)
                && e.kind() != Some(ErrorKind::NotFound)
            {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The requester and server slots of service `name`, from its streams' descriptions.
    fn service_shape(&self, name: &str) -> Result<(u32, u32), ClientError> {
        let describe = |stream: String| match self.describe(&stream)? {
            crate::proto::ObjectInfo::Stream(info) => Ok(info),
            crate::proto::ObjectInfo::Array(_) => Err(ClientError::Server {
                kind: ErrorKind::WrongKind,
                message: format!("{stream:?} is an array, not a stream of service {name:?}"),
            }),
        };
        let requests = describe(request_stream(name, 0))?;
        let responses = describe(response_stream(name, 0))?;
        Ok((
            requests.max_publishers.max(1),
            responses.max_publishers.max(1),
        ))
    }

    /// Attaches as a requester of service `name` (read and write permission), in the first
    /// free requester slot.
    ///
    /// # Errors
    /// `NotFound` and the like from the daemon; [`ServiceError::Full`] when every requester
    /// slot is taken; a dtype mismatch of `Req` or `Resp`.
    pub fn requester<Req: Element, Resp: Element>(
        &self,
        name: &str,
    ) -> Result<Requester<Req, Resp>, ServiceError> {
        Requester::attach(
            self,
            name,
            |n, o| self.subscribe_with::<Resp>(n, o),
            Publisher::<Req>::attach,
        )
    }

    /// Attaches as a server of service `name` (read and write permission), in the first free
    /// server slot.
    ///
    /// # Errors
    /// As [`Client::requester`], with server slots.
    pub fn server<Req: Element, Resp: Element>(
        &self,
        name: &str,
    ) -> Result<Server<Req, Resp>, ServiceError> {
        Server::attach(
            self,
            name,
            |n, o| self.subscribe_with::<Req>(n, o),
            Publisher::<Resp>::attach,
        )
    }

    /// [`Client::requester`] handling requests and responses as bytes (for bindings).
    ///
    /// # Errors
    /// As [`Client::requester`], without the dtype checks.
    pub fn requester_bytes(&self, name: &str) -> Result<Requester<u8, u8>, ServiceError> {
        Requester::attach(
            self,
            name,
            |n, o| self.subscribe_bytes(n, o),
            Publisher::attach_bytes,
        )
    }

    /// [`Client::server`] handling requests and responses as bytes (for bindings).
    ///
    /// # Errors
    /// As [`Client::server`], without the dtype checks.
    pub fn server_bytes(&self, name: &str) -> Result<Server<u8, u8>, ServiceError> {
        Server::attach(
            self,
            name,
            |n, o| self.subscribe_bytes(n, o),
            Publisher::attach_bytes,
        )
    }
}

/// The calling side of a service: sends requests (loaned and filled in place), receives
/// their responses in place.
///
/// Not `Sync` (responses borrow it). Dropping it frees its slot.
pub struct Requester<Req: Element, Resp: Element> {
    name: String,
    slot: u32,
    nonce: u64,
    /// Lane `slot` of each server's request stream.
    to: Vec<Publisher<Req>>,
    /// Its response stream.
    from: Subscriber<Resp>,
    /// The next correlation id.
    next_id: u64,
    /// The server the last request went to.
    last_server: Option<usize>,
    /// Requests sent and not answered yet, with their server slot and that server (the owner
    /// word of its record when the request was sent: a server that replaced it in the slot
    /// never saw the request).
    pending: RefCell<std::collections::BTreeMap<u64, (u32, u64)>>,
    timeout: Duration,
    _types: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req: Element, Resp: Element> std::fmt::Debug for Requester<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requester")
            .field("service", &self.name)
            .field("slot", &self.slot)
            .field("next_id", &self.next_id)
            .field("pending", &self.pending.borrow().len())
            .finish_non_exhaustive()
    }
}

impl<Req: Element, Resp: Element> Requester<Req, Resp> {
    fn attach(
        client: &Client,
        name: &str,
        subscribe: impl Fn(&str, SubscribeOptions) -> Result<Subscriber<Resp>, ClientError>,
        attach: AttachLane<Req>,
    ) -> Result<Self, ServiceError> {
        let (requesters, servers) = client.service_shape(name)?;
        let slots = (0..requesters).map(|r| (r, response_stream(name, r)));
        let Some((slot, from)) = take_slot(client, slots, subscribe)? else {
            return Err(full(name, "requesters", requesters));
        };
        let to = (0..servers)
            .map(|s| lane_publisher(client, &request_stream(name, s), slot, attach))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Requester {
            name: name.to_owned(),
            slot,
            nonce: crate::stream::subscription_nonce(),
            to,
            from,
            next_id: 0,
            last_server: None,
            pending: RefCell::new(std::collections::BTreeMap::new()),
            timeout: crate::array::raw::DEFAULT_TIMEOUT,
            _types: PhantomData,
        })
    }

    /// Its requester slot, `0..max_requesters`.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// Elements per request.
    pub fn request_len(&self) -> usize {
        self.to[0].frame_len()
    }

    /// Elements per response.
    pub fn response_len(&self) -> usize {
        self.from.frame_len()
    }

    /// How long loans and receives wait by default (10 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Requests sent and not answered yet.
    pub fn pending(&self) -> usize {
        self.pending.borrow().len()
    }

    /// The server slots with a server attached now.
    pub fn servers(&self) -> Vec<u32> {
        (0..self.to.len() as u32)
            .filter(|&s| self.to[s as usize].subscriber_count() > 0)
            .collect()
    }

    /// The next server to send to: the next present one after the last used.
    fn pick_server(&mut self, deadline: Instant) -> Result<usize, ServiceError> {
        let n = self.to.len();
        let start = self.last_server.map_or(0, |s| s + 1);
        let mut backoff =
            crate::backoff::Backoff::new(deadline.saturating_duration_since(Instant::now()));
        loop {
            for k in 0..n {
                let s = (start + k) % n;
                if self.to[s].subscriber_count() > 0 {
                    self.last_server = Some(s);
                    return Ok(s);
                }
            }
            match backoff.step() {
                crate::backoff::Step::TimedOut => {
                    return Err(ServiceError::NoServer {
                        name: self.name.clone(),
                        waited: backoff.elapsed(),
                    });
                }
                crate::backoff::Step::Spun => {}
                crate::backoff::Step::Sleep(at_most) => {
                    // Woken when a server joins any request stream (its membership futex).
                    let _ = self.to[start % n].wait_for_subscribers(1, at_most);
                }
            }
        }
    }

    /// Loans a request slot of the next server, waiting up to the requester's timeout for a
    /// server and for room: fill it in place, then [`RequestMut::send`].
    ///
    /// # Errors
    /// [`ServiceError::NoServer`]; a loan timeout (in [`ServiceError::Stream`]) while that
    /// server is a whole ring of requests behind.
    pub fn loan(&mut self) -> Result<RequestMut<'_, Req, Resp>, ServiceError> {
        let deadline = Instant::now() + self.timeout;
        let (server, token) = loop {
            let server = self.pick_server(deadline)?;
            let left = deadline.saturating_duration_since(Instant::now());
            match self.to[server].loan_token(left.min(LIVENESS_CHECK)) {
                Ok(token) => break (server, token),
                // Its ring is full: it may be dead with our requests in it (its record then
                // goes, the kernel's word, and the next pick takes another server), or slow.
                Err(StreamError::LoanTimeout { .. }) if left > LIVENESS_CHECK => {
                    self.to[server]
                        .files()
                        .reclaim_subscribers(|_| crate::sys::Liveness::Unknown);
                }
                Err(e) => return Err(e.into()),
            }
        };
        let id = self.next_id;
        Ok(RequestMut {
            requester: self,
            server,
            token: Some(token),
            id,
        })
    }

    /// Sends `request` (copied into a loaned slot); returns its correlation id.
    ///
    /// # Errors
    /// [`ServiceError::WrongLength`] for a request of another length; as
    /// [`Requester::loan`].
    pub fn send(&mut self, request: &[Req]) -> Result<u64, ServiceError> {
        let expected = self.request_len();
        if request.len() != expected {
            return Err(ServiceError::WrongLength {
                name: self.name.clone(),
                what: "a request",
                given: request.len(),
                expected,
            });
        }
        let mut loan = self.loan()?;
        loan.copy_from_slice(request);
        loan.send()
    }

    /// The next response to one of its requests, waiting up to `timeout`; in any order of
    /// the requests (each response says which: [`Response::id`]).
    ///
    /// # Errors
    /// [`ServiceError::Timeout`]; [`ServiceError::ServerLost`] when a server with requests
    /// of this requester pending died (after the responses it published before it died);
    /// [`StreamError::HoldLimit`] (in [`ServiceError::Stream`]) while a response is held.
    pub fn receive_timeout(&self, timeout: Duration) -> Result<Response<'_, Resp>, ServiceError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(response) = self.try_receive()? {
                return Ok(response);
            }
            if let Some(server) = self.dead_server() {
                // What it published before it died is in our ring by now (its stores came
                // before the kernel dropped its lock, which we just took): take that first.
                if let Some(response) = self.try_receive()? {
                    return Ok(response);
                }
                return Err(self.lose(server));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ServiceError::Timeout {
                    name: self.name.clone(),
                    waited: timeout,
                    pending: self.pending(),
                });
            }
            match self
                .from
                .receive_timeout((deadline - now).min(LIVENESS_CHECK))
            {
                Ok(sample) => {
                    if let Some(response) = self.accept(sample) {
                        return Ok(response);
                    }
                }
                Err(StreamError::ReceiveTimeout { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A response if one has arrived; never waits.
    ///
    /// # Errors
    /// As [`Requester::receive_timeout`], but for the timeout and lost servers.
    pub fn try_receive(&self) -> Result<Option<Response<'_, Resp>>, ServiceError> {
        while let Some(sample) = self.from.receive()? {
            if let Some(response) = self.accept(sample) {
                return Ok(Some(response));
            }
        }
        Ok(None)
    }

    /// The response in `sample`, if it answers one of this requester's requests (a response
    /// for an earlier requester of this slot is dropped).
    fn accept<'a>(&'a self, sample: Sample<'a, Resp>) -> Option<Response<'a, Resp>> {
        let (id, nonce) = read_header(sample.header_bytes());
        if nonce != self.nonce || self.pending.borrow_mut().remove(&id).is_none() {
            return None;
        }
        Some(Response { sample, id })
    }

    /// A server with requests of ours pending that is gone: its record's liveness lock is
    /// free (the kernel's word; the record is freed on the way), or another server holds its
    /// slot now (which started after our requests, and never sees them).
    fn dead_server(&self) -> Option<(u32, u64)> {
        let servers: std::collections::BTreeSet<(u32, u64)> =
            self.pending.borrow().values().copied().collect();
        servers.into_iter().find(|&(server, owner)| {
            let to = &self.to[server as usize];
            to.files()
                .reclaim_subscribers(|_| crate::sys::Liveness::Unknown);
            !to.files().started_owners().contains(&owner)
        })
    }

    /// Forgets the requests pending at `server` (that server, `owner`) and says they are
    /// lost.
    fn lose(&self, (server, owner): (u32, u64)) -> ServiceError {
        let mut pending = self.pending.borrow_mut();
        let lost: Vec<u64> = pending
            .iter()
            .filter(|&(_, &s)| s == (server, owner))
            .map(|(&id, _)| id)
            .collect();
        for id in &lost {
            pending.remove(id);
        }
        ServiceError::ServerLost {
            name: self.name.clone(),
            server,
            pending: lost,
        }
    }

    /// [`Requester::receive_timeout`] for bindings: the response's correlation id and its
    /// sample, held until [`Requester::release_response`].
    ///
    /// # Errors
    /// As [`Requester::receive_timeout`].
    pub fn receive_token(
        &self,
        timeout: Duration,
    ) -> Result<(u64, crate::stream::SampleToken), ServiceError> {
        let response = self.receive_timeout(timeout)?;
        Ok((response.id, response.sample.into_token()))
    }

    /// The first byte of the response `token` holds (read-only, valid until released).
    pub fn response_ptr(&self, token: &crate::stream::SampleToken) -> *const u8 {
        self.from.frame_ptr(token)
    }

    /// Releases the response of `token`.
    pub fn release_response(&self, token: crate::stream::SampleToken) {
        self.from.release_token(token);
    }

    /// [`Requester::loan`] for bindings: a request loan `(server, id, token)`, until
    /// [`Requester::send_token`] or [`Requester::abandon_token`].
    ///
    /// # Errors
    /// As [`Requester::loan`].
    pub fn loan_token(&mut self) -> Result<(u32, u64, LoanToken), ServiceError> {
        let mut loan = self.loan()?;
        let token = loan.token.take().expect("just loaned");
        Ok((loan.server as u32, loan.id, token))
    }

    /// The first byte of the request loan `token` of server `server` (writable until sent).
    pub fn request_ptr(&self, server: u32, token: &LoanToken) -> *mut u8 {
        self.to[server as usize].frame_ptr(token)
    }

    /// Sends the request loan `token` (made by [`Requester::loan_token`] for `server`);
    /// returns its correlation id.
    ///
    /// # Errors
    /// As [`RequestMut::send`].
    pub fn send_token(&mut self, server: u32, token: LoanToken) -> Result<u64, ServiceError> {
        RequestMut {
            id: self.next_id,
            requester: self,
            server: server as usize,
            token: Some(token),
        }
        .send()
    }

    /// Gives the request loan `token` of `server` back unsent.
    pub fn abandon_token(&mut self, server: u32, token: LoanToken) {
        self.to[server as usize].abandon_token(token);
    }

    /// Sends `request` and waits (up to the requester's timeout) for its response, taking
    /// only that one (responses to other requests it has pending stay for later receives).
    ///
    /// # Errors
    /// As [`Requester::send`] and [`Requester::receive_timeout`].
    pub fn call(&mut self, request: &[Req]) -> Result<Response<'_, Resp>, ServiceError> {
        if self.pending() > 0 {
            // Simple and safe: a call waits for its own response only when nothing else is
            // in flight (otherwise use send and receive).
            return Err(ServiceError::Stream(StreamError::LoanOutstanding {
                name: self.name.clone(),
            }));
        }
        let id = self.send(request)?;
        let timeout = self.timeout;
        let response = self.receive_timeout(timeout)?;
        debug_assert_eq!(response.id(), id);
        Ok(response)
    }
}

/// A request being filled in place ([`Requester::loan`]): a plain `&mut [Req]` over shared
/// memory. [`RequestMut::send`] sends it; dropping it unsent gives the slot back.
pub struct RequestMut<'a, Req: Element, Resp: Element> {
    requester: &'a mut Requester<Req, Resp>,
    server: usize,
    token: Option<LoanToken>,
    id: u64,
}

impl<Req: Element, Resp: Element> std::fmt::Debug for RequestMut<'_, Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMut")
            .field("id", &self.id)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl<Req: Element, Resp: Element> RequestMut<'_, Req, Resp> {
    /// The correlation id it will have.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The server slot it goes to.
    pub fn server(&self) -> u32 {
        self.server as u32
    }

    /// Sends it; returns its correlation id.
    ///
    /// # Errors
    /// As `Publisher::publish_token` (the requester's lane was taken over).
    pub fn send(mut self) -> Result<u64, ServiceError> {
        let token = self.token.take().expect("sent once");
        let publisher = &mut self.requester.to[self.server];
        if let Some(header) = publisher.header_ptr(&token) {
            // SAFETY: the loaned slot's header, 16 bytes of CALL_HEADER, ours until published.
            unsafe { write_header(header, self.id, self.requester.nonce) };
        }
        // The server this request goes to, before it is published: if it is replaced before
        // it takes the request, the request is lost with it (and reported so).
        let server = publisher
            .files()
            .started_owners()
            .first()
            .copied()
            .unwrap_or(0);
        publisher.publish_token(token)?;
        self.requester
            .pending
            .borrow_mut()
            .insert(self.id, (self.server as u32, server));
        self.requester.next_id += 1;
        Ok(self.id)
    }
}

impl<Req: Element, Resp: Element> Deref for RequestMut<'_, Req, Resp> {
    type Target = [Req];
    fn deref(&self) -> &[Req] {
        let publisher = &self.requester.to[self.server];
        let token = self.token.as_ref().expect("not sent");
        // SAFETY: the loaned slot (the publisher's alone until published), `frame_len`
        // elements, page aligned, every bit pattern a valid `Req` (`Element`: `Pod`).
        unsafe {
            std::slice::from_raw_parts(
                publisher.frame_ptr(token).cast::<Req>(),
                publisher.frame_len(),
            )
        }
    }
}

impl<Req: Element, Resp: Element> DerefMut for RequestMut<'_, Req, Resp> {
    fn deref_mut(&mut self) -> &mut [Req] {
        let publisher = &self.requester.to[self.server];
        let token = self.token.as_ref().expect("not sent");
        // SAFETY: as `deref`, and `&mut self` makes this the only view.
        unsafe {
            std::slice::from_raw_parts_mut(
                publisher.frame_ptr(token).cast::<Req>(),
                publisher.frame_len(),
            )
        }
    }
}

impl<Req: Element, Resp: Element> Drop for RequestMut<'_, Req, Resp> {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            self.requester.to[self.server].abandon_token(token);
        }
    }
}

/// A response, read in place; dropping it releases the slot.
pub struct Response<'a, Resp: Element> {
    sample: Sample<'a, Resp>,
    id: u64,
}

impl<Resp: Element> Response<'_, Resp> {
    /// The correlation id of the request it answers.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The server slot that answered.
    pub fn server(&self) -> u32 {
        self.sample.lane() as u32
    }

    /// The response as a stream sample (its publish time, its publisher).
    pub fn sample(&self) -> &Sample<'_, Resp> {
        &self.sample
    }
}

impl<Resp: Element> Deref for Response<'_, Resp> {
    type Target = [Resp];
    fn deref(&self) -> &[Resp] {
        &self.sample
    }
}

impl<Resp: Element> std::fmt::Debug for Response<'_, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("id", &self.id)
            .field("server", &self.server())
            .finish()
    }
}

/// The serving side of a service: receives requests in place, answers each with a response
/// filled in place and sent to its requester only.
///
/// Not `Sync` (requests borrow it). Dropping it frees its slot.
pub struct Server<Req: Element, Resp: Element> {
    name: String,
    slot: u32,
    client: Client,
    attach: AttachLane<Resp>,
    /// Bytes per response (from the response streams' description).
    response_nbytes: usize,
    /// Lane `slot` of each requester's response stream, attached at the first response.
    /// Declared (so dropped) before `from`: the slot is given up last, so a server that
    /// takes it next finds these lanes free.
    to: Vec<RefCell<Option<Publisher<Resp>>>>,
    /// Its request stream (lane r: requester slot r's requests).
    from: Subscriber<Req>,
    timeout: Duration,
}

impl<Req: Element, Resp: Element> std::fmt::Debug for Server<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("service", &self.name)
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl<Req: Element, Resp: Element> Server<Req, Resp> {
    fn attach(
        client: &Client,
        name: &str,
        subscribe: impl Fn(&str, SubscribeOptions) -> Result<Subscriber<Req>, ClientError>,
        attach: AttachLane<Resp>,
    ) -> Result<Self, ServiceError> {
        let (requesters, servers) = client.service_shape(name)?;
        let slots = (0..servers).map(|s| (s, request_stream(name, s)));
        let Some((slot, from)) = take_slot(client, slots, subscribe)? else {
            return Err(full(name, "servers", servers));
        };
        let response_nbytes = match client.describe(&response_stream(name, 0))? {
            crate::proto::ObjectInfo::Stream(info) => info.frame_len as usize,
            crate::proto::ObjectInfo::Array(_) => 0,
        };
        Ok(Server {
            response_nbytes,
            name: name.to_owned(),
            slot,
            client: client.clone(),
            attach,
            from,
            to: (0..requesters).map(|_| RefCell::new(None)).collect(),
            timeout: crate::array::raw::DEFAULT_TIMEOUT,
        })
    }

    /// Its server slot, `0..max_servers`.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// How long response loans wait by default (10 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The next request, waiting up to `timeout` (requests of each requester in the order
    /// sent; of several requesters, in order of arrival).
    ///
    /// # Errors
    /// A receive timeout (in [`ServiceError::Stream`]); as `Subscriber::receive`.
    pub fn receive_timeout(&self, timeout: Duration) -> Result<Request<'_, Req>, ServiceError> {
        let sample = self.from.receive_timeout(timeout)?;
        Ok(Request::new(sample))
    }

    /// A request if one has arrived; never waits.
    ///
    /// # Errors
    /// As `Subscriber::receive`.
    pub fn try_receive(&self) -> Result<Option<Request<'_, Req>>, ServiceError> {
        Ok(self.from.receive()?.map(Request::new))
    }

    /// The publisher of requester slot `requester`'s responses (attached now if not yet).
    fn responder(&self, requester: usize) -> Result<RefMut<'_, Publisher<Resp>>, ServiceError> {
        let cell = self.to.get(requester).ok_or_else(|| {
            ServiceError::Stream(StreamError::Lanes {
                name: self.name.clone(),
                reason: format!("no requester slot {requester}"),
            })
        })?;
        let mut slot = cell.try_borrow_mut().map_err(|_| {
            // A response to this requester is loaned already (one loan per ring at a time).
            ServiceError::Stream(StreamError::LoanOutstanding {
                name: response_stream(&self.name, requester as u32),
            })
        })?;
        if slot.is_none() {
            let name = response_stream(&self.name, requester as u32);
            *slot = Some(lane_publisher(&self.client, &name, self.slot, self.attach)?);
        }
        Ok(RefMut::map(slot, |p| p.as_mut().expect("attached above")))
    }

    /// Loans the response to `request`: fill it in place (the request stays readable), then
    /// [`ResponseMut::send`] sends it to the request's requester only. Waits up to the
    /// server's timeout while that requester is a whole ring of responses behind (freeing
    /// its slot if it died meanwhile).
    ///
    /// # Errors
    /// A loan timeout (in [`ServiceError::Stream`]); a response still loaned
    /// (`LoanOutstanding`).
    pub fn loan_response(
        &self,
        request: &Request<'_, Req>,
    ) -> Result<ResponseMut<'_, Resp>, ServiceError> {
        let (publisher, token) =
            self.loan_for(request.requester_slot() as usize, request.id, request.nonce)?;
        Ok(ResponseMut {
            publisher,
            token: Some(token),
        })
    }

    /// A response loan for the request `id` of requester `nonce` in slot `requester`, its
    /// header written.
    fn loan_for(
        &self,
        requester: usize,
        id: u64,
        nonce: u64,
    ) -> Result<(RefMut<'_, Publisher<Resp>>, LoanToken), ServiceError> {
        let mut publisher = self.responder(requester)?;
        let deadline = Instant::now() + self.timeout;
        let token = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match publisher.loan_token(left.min(LIVENESS_CHECK)) {
                Ok(token) => break token,
                // The requester may have died holding its record (the daemon frees it too,
                // but later): free it if the kernel says so, and look again.
                Err(StreamError::LoanTimeout { .. }) if !left.is_zero() => {
                    publisher
                        .files()
                        .reclaim_subscribers(|_| crate::sys::Liveness::Unknown);
                }
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(header) = publisher.header_ptr(&token) {
            // SAFETY: the loaned slot's header, 16 bytes of CALL_HEADER, ours until published.
            unsafe { write_header(header, id, nonce) };
        }
        Ok((publisher, token))
    }

    /// [`Server::receive_timeout`] for bindings whose requests outlive a call: the request
    /// detached from the borrow of the server, held until [`Server::release_request`].
    ///
    /// # Errors
    /// As [`Server::receive_timeout`].
    pub fn receive_token(&self, timeout: Duration) -> Result<RequestToken, ServiceError> {
        Ok(self.receive_timeout(timeout)?.into_token())
    }

    /// The first byte of the request `token` holds (read-only, valid until released).
    pub fn request_ptr(&self, token: &RequestToken) -> *const u8 {
        self.from.frame_ptr(&token.sample)
    }

    /// Releases the request of `token`.
    pub fn release_request(&self, token: RequestToken) {
        self.from.release_token(token.sample);
    }

    /// [`Server::loan_response`] for bindings: the response to the request of `request`
    /// (which may have been released), loaned until [`Server::send_response`] or
    /// [`Server::abandon_response`].
    ///
    /// # Errors
    /// As [`Server::loan_response`].
    pub fn loan_response_token(
        &self,
        request: &RequestToken,
    ) -> Result<ResponseToken, ServiceError> {
        let (publisher, token) =
            self.loan_for(request.requester as usize, request.id, request.nonce)?;
        drop(publisher);
        Ok(ResponseToken {
            requester: request.requester as usize,
            token,
        })
    }

    /// The first byte of the response `token` holds (writable until sent or abandoned).
    ///
    /// # Errors
    /// `LoanOutstanding` while a [`ResponseMut`] to the same requester is alive.
    pub fn response_ptr(&self, token: &ResponseToken) -> Result<*mut u8, ServiceError> {
        Ok(self.responder(token.requester)?.frame_ptr(&token.token))
    }

    /// Sends the response of `token` to its requester.
    ///
    /// # Errors
    /// As [`ResponseMut::send`]; `LoanOutstanding` while a [`ResponseMut`] to the same
    /// requester is alive.
    pub fn send_response(&self, token: ResponseToken) -> Result<(), ServiceError> {
        self.responder(token.requester)?
            .publish_token(token.token)?;
        Ok(())
    }

    /// Gives the response loan of `token` back unsent.
    ///
    /// # Errors
    /// `LoanOutstanding` while a [`ResponseMut`] to the same requester is alive.
    pub fn abandon_response(&self, token: ResponseToken) -> Result<(), ServiceError> {
        self.responder(token.requester)?.abandon_token(token.token);
        Ok(())
    }

    /// Elements per request (bytes, for a byte handle).
    pub fn request_len(&self) -> usize {
        self.from.frame_len()
    }

    /// Bytes per response.
    pub fn response_nbytes(&self) -> usize {
        self.response_nbytes
    }

    /// Answers `request` with `response` (copied into a loaned slot).
    ///
    /// # Errors
    /// [`ServiceError::WrongLength`]; as [`Server::loan_response`].
    pub fn respond(
        &self,
        request: &Request<'_, Req>,
        response: &[Resp],
    ) -> Result<(), ServiceError> {
        let mut loan = self.loan_response(request)?;
        if response.len() != loan.len() {
            return Err(ServiceError::WrongLength {
                name: self.name.clone(),
                what: "a response",
                given: response.len(),
                expected: loan.len(),
            });
        }
        loan.copy_from_slice(response);
        loan.send()
    }

    /// Serves one request, waiting up to `timeout` for it: `handle` reads the request and
    /// fills the response in place. Returns the request's correlation id.
    ///
    /// # Errors
    /// As [`Server::receive_timeout`] and [`Server::loan_response`].
    pub fn serve_one(
        &self,
        timeout: Duration,
        handle: impl FnOnce(&Request<'_, Req>, &mut [Resp]),
    ) -> Result<u64, ServiceError> {
        let request = self.receive_timeout(timeout)?;
        let mut response = self.loan_response(&request)?;
        handle(&request, &mut response);
        response.send()?;
        Ok(request.id())
    }
}

/// A request, read in place; dropping it releases the slot.
pub struct Request<'a, Req: Element> {
    sample: Sample<'a, Req>,
    id: u64,
    nonce: u64,
}

impl<'a, Req: Element> Request<'a, Req> {
    fn new(sample: Sample<'a, Req>) -> Request<'a, Req> {
        let (id, nonce) = read_header(sample.header_bytes());
        Request { sample, id, nonce }
    }

    /// Its correlation id (per requester).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The requester slot it came from.
    pub fn requester_slot(&self) -> u32 {
        self.sample.lane() as u32
    }

    /// The requester's process id.
    pub fn requester_pid(&self) -> Option<u32> {
        self.sample.publisher().map(|p| p.pid())
    }

    /// The request as a stream sample (its publish time, its publisher).
    pub fn sample(&self) -> &Sample<'a, Req> {
        &self.sample
    }

    /// Keeps the request held but ends its borrow of the server (for bindings):
    /// [`Server::release_request`] releases it.
    pub fn into_token(self) -> RequestToken {
        RequestToken {
            requester: self.requester_slot(),
            pid: self.requester_pid().unwrap_or(0),
            id: self.id,
            nonce: self.nonce,
            sample: self.sample.into_token(),
        }
    }
}

/// A held request detached from the borrow of its server ([`Request::into_token`]).
#[derive(Debug)]
#[must_use = "a request token holds its slot until released"]
pub struct RequestToken {
    sample: crate::stream::SampleToken,
    requester: u32,
    pid: u32,
    id: u64,
    nonce: u64,
}

impl RequestToken {
    /// As [`Request::id`].
    pub fn id(&self) -> u64 {
        self.id
    }

    /// As [`Request::requester_slot`].
    pub fn requester_slot(&self) -> u32 {
        self.requester
    }

    /// As [`Request::requester_pid`] (0 if unknown).
    pub fn requester_pid(&self) -> u32 {
        self.pid
    }
}

/// A response loan detached from the borrow of its server ([`Server::loan_response_token`]).
#[derive(Debug)]
#[must_use = "a response loan must be sent or abandoned"]
pub struct ResponseToken {
    requester: usize,
    token: LoanToken,
}

impl<Req: Element> Deref for Request<'_, Req> {
    type Target = [Req];
    fn deref(&self) -> &[Req] {
        &self.sample
    }
}

impl<Req: Element> std::fmt::Debug for Request<'_, Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("id", &self.id)
            .field("requester", &self.requester_slot())
            .finish()
    }
}

/// A response being filled in place ([`Server::loan_response`]). [`ResponseMut::send`] sends
/// it to its requester; dropping it unsent gives the slot back.
pub struct ResponseMut<'a, Resp: Element> {
    publisher: RefMut<'a, Publisher<Resp>>,
    token: Option<LoanToken>,
}

impl<Resp: Element> std::fmt::Debug for ResponseMut<'_, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseMut").finish_non_exhaustive()
    }
}

impl<Resp: Element> ResponseMut<'_, Resp> {
    /// Sends it to the requester of its request.
    ///
    /// # Errors
    /// As `Publisher::publish_token` (this server's lane was taken over).
    pub fn send(mut self) -> Result<(), ServiceError> {
        let token = self.token.take().expect("sent once");
        self.publisher.publish_token(token)?;
        Ok(())
    }
}

impl<Resp: Element> Deref for ResponseMut<'_, Resp> {
    type Target = [Resp];
    fn deref(&self) -> &[Resp] {
        let token = self.token.as_ref().expect("not sent");
        // SAFETY: as `RequestMut::deref`.
        unsafe {
            std::slice::from_raw_parts(
                self.publisher.frame_ptr(token).cast::<Resp>(),
                self.publisher.frame_len(),
            )
        }
    }
}

impl<Resp: Element> DerefMut for ResponseMut<'_, Resp> {
    fn deref_mut(&mut self) -> &mut [Resp] {
        let token = self.token.as_ref().expect("not sent");
        // SAFETY: as `RequestMut::deref_mut`.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.publisher.frame_ptr(token).cast::<Resp>(),
                self.publisher.frame_len(),
            )
        }
    }
}

impl<Resp: Element> Drop for ResponseMut<'_, Resp> {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            self.publisher.abandon_token(token);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Async (feature `async`)

#[cfg(feature = "async")]
mod asynchronous {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;
    use crate::waiter::AsyncWait;

    impl<Req: Element, Resp: Element> Requester<Req, Resp> {
        /// The next response, awaited without blocking a thread: woken by the server's
        /// publish (one wake-up), and by the waiter thread's check once a second, which also
        /// finds a server that died ([`ServiceError::ServerLost`], after the responses it
        /// published). No timeout of its own (wrap it in the runtime's). Cancel-safe: a
        /// dropped future took no response. `&mut self`, so that the future is `Send`.
        pub fn recv(&mut self) -> RecvResponse<'_, Req, Resp> {
            RecvResponse {
                requester: std::ptr::NonNull::from(self),
                done: false,
                wait: AsyncWait::new(),
                _borrow: PhantomData,
            }
        }

        /// A request slot, awaited without blocking a thread: while no server is attached
        /// (woken when one joins), and while the chosen server is a whole ring of requests
        /// behind (woken when it takes one). No timeout of its own. Cancel-safe.
        pub fn loan_async(&mut self) -> LoanRequest<'_, Req, Resp> {
            let joins = (0..self.to.len()).map(|_| AsyncWait::new()).collect();
            LoanRequest {
                requester: Some(self),
                server: None,
                joins,
                wait: AsyncWait::new(),
            }
        }
    }

    /// The future of [`Requester::recv`].
    #[must_use = "futures do nothing unless awaited"]
    pub struct RecvResponse<'a, Req: Element, Resp: Element> {
        /// The requester, borrowed exclusively for `'a` (`_borrow`): the future hands out
        /// shared references of `'a` from it (the response it resolves to borrows the
        /// requester for `'a`), which a `&'a mut` field could not do without giving itself up
        /// on every poll.
        requester: std::ptr::NonNull<Requester<Req, Resp>>,
        /// Resolved: the wait is ended and the response handed out.
        done: bool,
        wait: AsyncWait,
        _borrow: PhantomData<&'a mut Requester<Req, Resp>>,
    }

    // The `Send` below claims nothing about the wait: it is `Send` itself (checked here).
    const _: fn() = || {
        fn send<T: Send>() {}
        send::<AsyncWait>();
    };

    // SAFETY: the future has the requester to itself for `'a` (it holds the exclusive
    // borrow), so moving it to another thread moves that exclusive access with it, as
    // `&'a mut Requester` would: `Send` exactly when the requester is.
    unsafe impl<Req: Element, Resp: Element> Send for RecvResponse<'_, Req, Resp> where
        Requester<Req, Resp>: Send
    {
    }

    impl<'a, Req: Element, Resp: Element> RecvResponse<'a, Req, Resp> {
        fn requester(&self) -> &'a Requester<Req, Resp> {
            // SAFETY: made from a `&'a mut Requester` that this future holds for `'a`, and
            // only shared references are made from it.
            unsafe { self.requester.as_ref() }
        }
    }

    impl<Req: Element, Resp: Element> std::fmt::Debug for RecvResponse<'_, Req, Resp> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RecvResponse")
                .field("done", &self.done)
                .finish_non_exhaustive()
        }
    }

    impl<'a, Req: Element, Resp: Element> std::future::Future for RecvResponse<'a, Req, Resp> {
        type Output = Result<Response<'a, Resp>, ServiceError>;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            assert!(!self.done, "polled after it resolved");
            let requester = self.requester();
            let this = &mut *self;
            let got = loop {
                match requester.try_receive() {
                    Ok(None) => {}
                    other => break other.map(|r| r.expect("matched Some")),
                }
                if let Some(server) = requester.dead_server() {
                    // Its responses published before it died come first.
                    break match requester.try_receive() {
                        Ok(Some(response)) => Ok(response),
                        Ok(None) => Err(requester.lose(server)),
                        Err(e) => Err(e),
                    };
                }
                match requester
                    .from
                    .poll_receive_token(&mut this.wait, cx.waker())
                {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => break Err(e.into()),
                    Poll::Ready(Ok(token)) => {
                        let sample = Sample::from_token(&requester.from, token);
                        if let Some(response) = requester.accept(sample) {
                            break Ok(response);
                        }
                        // An earlier requester's: dropped; look again.
                    }
                }
            };
            requester.from.end_wait(&mut this.wait);
            this.done = true;
            Poll::Ready(got)
        }
    }

    impl<Req: Element, Resp: Element> Drop for RecvResponse<'_, Req, Resp> {
        fn drop(&mut self) {
            if !self.done {
                let requester = self.requester();
                requester.from.end_wait(&mut self.wait);
            }
        }
    }

    /// The future of [`Requester::loan_async`].
    #[must_use = "futures do nothing unless awaited"]
    pub struct LoanRequest<'a, Req: Element, Resp: Element> {
        requester: Option<&'a mut Requester<Req, Resp>>,
        /// The server chosen, once one is present.
        server: Option<usize>,
        /// Waits for a server to join, one per server slot.
        joins: Vec<AsyncWait>,
        /// The wait for room in the chosen server's ring.
        wait: AsyncWait,
    }

    impl<Req: Element, Resp: Element> std::fmt::Debug for LoanRequest<'_, Req, Resp> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("LoanRequest")
                .field("server", &self.server)
                .finish_non_exhaustive()
        }
    }

    impl<Req: Element, Resp: Element> LoanRequest<'_, Req, Resp> {
        fn end_waits(&mut self) {
            if let Some(r) = self.requester.as_deref() {
                for (to, wait) in r.to.iter().zip(&mut self.joins) {
                    to.files().end_member_wait(wait);
                }
                if let Some(s) = self.server {
                    r.to[s].end_wait(&mut self.wait);
                }
            }
        }
    }

    impl<'a, Req: Element, Resp: Element> std::future::Future for LoanRequest<'a, Req, Resp> {
        type Output = Result<RequestMut<'a, Req, Resp>, ServiceError>;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let this = &mut *self;
            if this.server.is_none() {
                let requester = this
                    .requester
                    .as_deref_mut()
                    .expect("polled after it resolved");
                let n = requester.to.len();
                let start = requester.last_server.map_or(0, |s| s + 1);
                let mut found = None;
                for k in 0..n {
                    let s = (start + k) % n;
                    // Registers for the join of a server in each slot, or finds one there.
                    let joined = requester.to[s].files().poll_members(
                        |count| count > 0,
                        &mut this.joins[s],
                        cx.waker(),
                    );
                    if joined.is_ready() && found.is_none() {
                        found = Some(s);
                    }
                }
                let Some(s) = found else {
                    return Poll::Pending;
                };
                for (to, wait) in requester.to.iter().zip(&mut this.joins) {
                    to.files().end_member_wait(wait);
                }
                requester.last_server = Some(s);
                this.server = Some(s);
            }
            let server = this.server.expect("chosen above");
            let requester = this
                .requester
                .as_deref_mut()
                .expect("polled after it resolved");
            match requester.to[server].poll_loan_token(&mut this.wait, cx.waker()) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) => {
                    this.requester = None;
                    Poll::Ready(Err(e.into()))
                }
                Poll::Ready(Ok(token)) => {
                    let requester = this.requester.take().expect("not yet resolved");
                    let id = requester.next_id;
                    Poll::Ready(Ok(RequestMut {
                        requester,
                        server,
                        token: Some(token),
                        id,
                    }))
                }
            }
        }
    }

    impl<Req: Element, Resp: Element> Drop for LoanRequest<'_, Req, Resp> {
        fn drop(&mut self) {
            self.end_waits();
        }
    }

    impl<Req: Element, Resp: Element> Server<Req, Resp> {
        /// The next request, awaited without blocking a thread (woken by the requester's
        /// publish). No timeout of its own. Cancel-safe. `&self`, so that the server can
        /// answer the request while it holds it ([`Server::loan_response`]); the future is
        /// therefore not `Send` (run a server on a current-thread runtime, or a `LocalSet`).
        pub fn recv(&self) -> RecvRequest<'_, Req, Resp> {
            RecvRequest {
                server: Some(self),
                wait: AsyncWait::new(),
            }
        }
    }

    /// The future of [`Server::recv`].
    #[must_use = "futures do nothing unless awaited"]
    pub struct RecvRequest<'a, Req: Element, Resp: Element> {
        server: Option<&'a Server<Req, Resp>>,
        wait: AsyncWait,
    }

    impl<Req: Element, Resp: Element> std::fmt::Debug for RecvRequest<'_, Req, Resp> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RecvRequest").finish_non_exhaustive()
        }
    }

    impl<'a, Req: Element, Resp: Element> std::future::Future for RecvRequest<'a, Req, Resp> {
        type Output = Result<Request<'a, Req>, ServiceError>;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let this = &mut *self;
            let server = this.server.expect("polled after it resolved");
            match server.from.poll_receive_token(&mut this.wait, cx.waker()) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(got) => {
                    this.server = None;
                    Poll::Ready(
                        got.map(|token| Request::new(Sample::from_token(&server.from, token)))
                            .map_err(ServiceError::from),
                    )
                }
            }
        }
    }

    impl<Req: Element, Resp: Element> Drop for RecvRequest<'_, Req, Resp> {
        fn drop(&mut self) {
            if let Some(s) = self.server {
                s.from.end_wait(&mut self.wait);
            }
        }
    }
}

#[cfg(feature = "async")]
pub use asynchronous::{LoanRequest, RecvRequest, RecvResponse};
