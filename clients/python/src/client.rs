//! `Connection`: one connection to the daemon (mmshare-lib's `Client`), its requests made with
//! the GIL released. Descriptions come back as dicts that `mmshare/client.py` turns into its
//! dataclasses.

use std::path::PathBuf;

use mmshare::internal::proto::WireOrder;
use mmshare::{
    Access, ArrayInfo, Backing, Client, ConnectOptions, CreateOptions, Delivery, ObjectInfo, Order,
    StreamInfo, StreamOptions,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::array::NativeArray;
use crate::errors;
use crate::stream::{NativePublisher, NativeSubscriber};

/// The socket path used when none is given (`$MMSHARE_SOCKET`, else
/// `$XDG_RUNTIME_DIR/mmshare/mmshared.sock`, else `/tmp/mmshare-$UID/mmshared.sock`).
#[pyfunction]
pub(crate) fn default_socket_path() -> PathBuf {
    mmshare::default_socket_path()
}

/// A connection to mmshared. Requests are serialized on it, so threads may share one.
#[pyclass(frozen, module = "mmshare._native")]
pub(crate) struct Connection {
    client: Client,
}

fn order_text(order: WireOrder) -> &'static str {
    match order {
        WireOrder::C => "C",
        WireOrder::F => "F",
    }
}

fn backing_text(backing: Backing) -> &'static str {
    match backing {
        Backing::File => "file",
        Backing::Memory => "memory",
    }
}

/// An `ArrayInfo` as the keyword arguments of Python's `ArrayInfo`.
pub(crate) fn array_info<'py>(py: Python<'py>, info: &ArrayInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &info.name)?;
    d.set_item("dtype", &info.dtype)?;
    d.set_item("shape", PyTuple::new(py, &info.shape)?)?;
    d.set_item("order", order_text(info.order))?;
    d.set_item("data_offset", info.data_offset)?;
    d.set_item("data_len", info.data_len)?;
    d.set_item("version", info.version)?;
    d.set_item("backing", backing_text(info.backing))?;
    d.set_item("owner_uid", info.owner_uid)?;
    d.set_item("owner_gid", info.owner_gid)?;
    d.set_item("mode", info.mode)?;
    d.set_item("torn", info.torn)?;
    d.set_item("path", &info.path)?;
    d.set_item("stripe_bytes", info.stripe_bytes)?;
    d.set_item("sparse", info.sparse)?;
    Ok(d)
}

/// A `StreamInfo` as the keyword arguments of Python's `StreamInfo` (subscribers as dicts).
pub(crate) fn stream_info<'py>(py: Python<'py>, info: &StreamInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &info.name)?;
    d.set_item("dtype", &info.dtype)?;
    d.set_item("shape", PyTuple::new(py, &info.shape)?)?;
    d.set_item("order", order_text(info.order))?;
    d.set_item("slots", info.slots)?;
    d.set_item("max_subscribers", info.max_subscribers)?;
    d.set_item("data_offset", info.data_offset)?;
    d.set_item("frame_len", info.frame_len)?;
    d.set_item("slot_stride", info.slot_stride)?;
    d.set_item("published", info.published)?;
    d.set_item("backing", backing_text(info.backing))?;
    d.set_item("owner_uid", info.owner_uid)?;
    d.set_item("owner_gid", info.owner_gid)?;
    d.set_item("mode", info.mode)?;
    d.set_item("path", &info.path)?;
    d.set_item("publisher", info.publisher)?;
    let subscribers = info
        .subscribers
        .iter()
        .map(|s| {
            let d = PyDict::new(py);
            d.set_item("pid", s.pid)?;
            d.set_item("lossless", s.lossless)?;
            d.set_item("max_held", s.max_held)?;
            d.set_item("lag", s.lag)?;
            d.set_item("missed", s.missed)?;
            d.set_item("received", s.received)?;
            Ok(d)
        })
        .collect::<PyResult<Vec<_>>>()?;
    d.set_item("subscribers", subscribers)?;
    let (on_stall, after_ms) = match info.stall {
        mmshare::internal::proto::WireStall::Block => ("block", 0),
        mmshare::internal::proto::WireStall::Demote { after_ms } => ("demote", after_ms),
        mmshare::internal::proto::WireStall::Evict { after_ms } => ("evict", after_ms),
    };
    d.set_item("on_stall", on_stall)?;
    d.set_item("history", info.history)?;
    d.set_item("header", &info.header)?;
    d.set_item("variable", info.variable)?;
    d.set_item("max_publishers", info.max_publishers.max(1))?;
    d.set_item("publishers", PyTuple::new(py, &info.publishers)?)?;
    d.set_item("stall_after", f64::from(after_ms) / 1000.0)?;
    Ok(d)
}

/// An object's kind ("array" or "stream") and its description.
fn object_info<'py>(
    py: Python<'py>,
    info: &ObjectInfo,
) -> PyResult<(&'static str, Bound<'py, PyDict>)> {
    match info {
        ObjectInfo::Array(a) => Ok(("array", array_info(py, a)?)),
        ObjectInfo::Stream(s) => Ok(("stream", stream_info(py, s)?)),
    }
}

/// Checks that the stream attached is the one described (Python builds its frame views from
/// the description): a stream deleted and created again between the two requests, with
/// another dtype or shape, must not be viewed with the old one.
fn check_same(
    info: &ObjectInfo,
    header: &mmshare::format::Header,
) -> Result<(), mmshare::ClientError> {
    let same = match info {
        ObjectInfo::Stream(s) => {
            s.dtype == header.dtype.descr()
                && s.shape == header.shape
                && matches!(
                    (s.order, header.order),
                    (WireOrder::C, Order::C) | (WireOrder::F, Order::F)
                )
        }
        ObjectInfo::Array(_) => false,
    };
    if same {
        Ok(())
    } else {
        Err(mmshare::ClientError::Protocol(format!(
            "{:?} changed while it was being attached (deleted and created again?); try again",
            info.name()
        )))
    }
}

fn parse_order(order: &str) -> PyResult<Order> {
    match order {
        "C" => Ok(Order::C),
        "F" => Ok(Order::F),
        other => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "order must be 'C' or 'F', not {other:?}"
        ))),
    }
}

#[pymethods]
impl Connection {
    /// Connects to the daemon at `path` (None: the default socket, whose daemon must run as
    /// this user or root) and checks its protocol version; with `server_uid`, the daemon must
    /// run as that uid or root (`ConnectOptions` in mmshare-lib); with `timeout` (seconds,
    /// 0 for no limit), the wait for the daemon to accept and to answer each request.
    #[new]
    #[pyo3(signature = (path, server_uid=None, timeout=None))]
    fn new(
        py: Python<'_>,
        path: Option<PathBuf>,
        server_uid: Option<u32>,
        timeout: Option<f64>,
    ) -> PyResult<Self> {
        let mut options = match path {
            Some(path) => ConnectOptions::new(path),
            None => ConnectOptions::default_socket(),
        };
        if let Some(uid) = server_uid {
            options = options.server_uid(uid);
        }
        if let Some(seconds) = timeout {
            let wait = std::time::Duration::try_from_secs_f64(seconds).map_err(|_| {
                pyo3::exceptions::PyValueError::new_err(format!(
                    "timeout {seconds} is not a number of seconds >= 0 (0 for no limit)"
                ))
            })?;
            options = options.timeout(wait);
        }
        let client = py
            .detach(|| Client::connect_with(&options))
            .map_err(|e| errors::client(py, e))?;
        Ok(Connection { client })
    }

    /// The socket path connected to.
    #[getter]
    fn path(&self) -> PathBuf {
        self.client.socket_path().to_owned()
    }

    /// The daemon's name and version, from its hello.
    #[getter]
    fn server_name(&self) -> String {
        self.client.server_name().to_owned()
    }

    /// Creates an array; returns its description and a read-write handle.
    #[allow(clippy::too_many_arguments)]
    fn create<'py>(
        &self,
        py: Python<'py>,
        name: String,
        dtype: String,
        shape: Vec<u64>,
        order: &str,
        memory: bool,
        mode: u32,
        exist_ok: bool,
        stripes: u32,
        sparse: bool,
    ) -> PyResult<(Bound<'py, PyDict>, NativeArray)> {
        let mut options = CreateOptions::new(name, dtype, &shape)
            .order(parse_order(order)?)
            .mode(mode)
            .exist_ok(exist_ok)
            .stripes(stripes)
            .sparse(sparse);
        if memory {
            options = options.memory();
        }
        let shared = py
            .detach(|| self.client.create(&options))
            .map_err(|e| errors::client(py, e))?;
        let info = array_info(py, shared.info())?;
        Ok((info, NativeArray::new(shared)))
    }

    /// Opens an array, read-write if `writable`.
    fn open<'py>(
        &self,
        py: Python<'py>,
        name: String,
        writable: bool,
    ) -> PyResult<(Bound<'py, PyDict>, NativeArray)> {
        let access = if writable {
            Access::Write
        } else {
            Access::Read
        };
        let shared = py
            .detach(|| self.client.open_raw(&name, access))
            .map_err(|e| errors::client(py, e))?;
        let info = array_info(py, shared.info())?;
        Ok((info, NativeArray::new(shared)))
    }

    /// Describes an array.
    fn stat<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyDict>> {
        let info = py
            .detach(|| self.client.stat(&name))
            .map_err(|e| errors::client(py, e))?;
        array_info(py, &info)
    }

    /// Every array (that this uid may read) whose name starts with `prefix`.
    fn list<'py>(&self, py: Python<'py>, prefix: String) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let infos = py
            .detach(|| self.client.list(&prefix))
            .map_err(|e| errors::client(py, e))?;
        infos.iter().map(|info| array_info(py, info)).collect()
    }

    /// Creates a stream; returns its description.
    #[allow(clippy::too_many_arguments)]
    fn create_stream<'py>(
        &self,
        py: Python<'py>,
        name: String,
        dtype: String,
        shape: Vec<u64>,
        order: &str,
        slots: u32,
        max_subscribers: u32,
        memory: bool,
        mode: u32,
        exist_ok: bool,
        on_stall: &str,
        stall_after: f64,
        history: u32,
        header: Option<String>,
        variable: bool,
        max_publishers: u32,
    ) -> PyResult<Bound<'py, PyDict>> {
        let after = std::time::Duration::try_from_secs_f64(stall_after).map_err(|_| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "stall_after {stall_after} is not a number of seconds >= 0"
            ))
        })?;
        let stall = match on_stall {
            "block" => mmshare::StallPolicy::Block,
            "demote" => mmshare::StallPolicy::Demote { after },
            "evict" => mmshare::StallPolicy::Evict { after },
            other => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "on_stall must be 'block', 'demote' or 'evict', not {other:?}"
                )));
            }
        };
        let mut options = StreamOptions::new(name, dtype, &shape)
            .order(parse_order(order)?)
            .slots(slots)
            .max_subscribers(max_subscribers)
            .mode(mode)
            .exist_ok(exist_ok)
            .on_stall(stall)
            .history(history)
            .variable(variable)
            .max_publishers(max_publishers);
        if let Some(header) = header {
            options = options.header(header);
        }
        if memory {
            options = options.memory();
        }
        let info = py
            .detach(|| self.client.create_stream(&options))
            .map_err(|e| errors::client(py, e))?;
        stream_info(py, &info)
    }

    /// Creates a service; returns the descriptions of its first request and response
    /// streams and its slots.
    #[allow(clippy::too_many_arguments)]
    fn create_service<'py>(
        &self,
        py: Python<'py>,
        name: String,
        request: (String, Vec<u64>),
        response: (String, Vec<u64>),
        max_requesters: u32,
        max_servers: u32,
        slots: u32,
        memory: bool,
        mode: u32,
        exist_ok: bool,
    ) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyDict>, u32, u32)> {
        let mut options =
            mmshare::ServiceOptions::new(name, request.0, &request.1, response.0, &response.1)
                .max_requesters(max_requesters)
                .max_servers(max_servers)
                .slots(slots)
                .mode(mode)
                .exist_ok(exist_ok);
        if memory {
            options = options.memory();
        }
        let info = py
            .detach(|| self.client.create_service(&options))
            .map_err(|e| errors::client(py, e))?;
        Ok((
            stream_info(py, &info.requests)?,
            stream_info(py, &info.responses)?,
            info.max_requesters,
            info.max_servers,
        ))
    }

    /// Deletes a service's streams.
    fn delete_service(&self, py: Python<'_>, name: String) -> PyResult<()> {
        py.detach(|| self.client.delete_service(&name))
            .map_err(|e| errors::client(py, e))
    }

    /// Attaches as a requester of a service.
    fn requester(&self, py: Python<'_>, name: String) -> PyResult<crate::service::NativeRequester> {
        crate::service::requester(py, &self.client, &name)
    }

    /// Attaches as a server of a service.
    fn server(&self, py: Python<'_>, name: String) -> PyResult<crate::service::NativeServer> {
        crate::service::server(py, &self.client, &name)
    }

    /// Attaches as the publisher of a stream; returns its description too.
    fn publisher<'py>(
        &self,
        py: Python<'py>,
        name: String,
    ) -> PyResult<(Bound<'py, PyDict>, NativePublisher)> {
        let (info, publisher) = py
            .detach(|| {
                let info = self.client.describe(&name)?;
                let publisher = self.client.publisher_bytes(&name)?;
                check_same(&info, publisher.files().header())?;
                Ok((info, publisher))
            })
            .map_err(|e| errors::client(py, e))?;
        let (_, info) = object_info(py, &info)?;
        Ok((info, NativePublisher::new(publisher)))
    }

    /// Subscribes to a stream; returns its description too.
    fn subscribe<'py>(
        &self,
        py: Python<'py>,
        name: String,
        lossless: bool,
        max_held: usize,
        start: &str,
        frame: u64,
    ) -> PyResult<(Bound<'py, PyDict>, NativeSubscriber)> {
        let delivery = if lossless {
            Delivery::Lossless
        } else {
            Delivery::Lossy
        };
        let mut options = mmshare::SubscribeOptions::new(delivery).max_held(max_held);
        match start {
            "default" => {}
            "next" => options = options.start(mmshare::StartAt::Next),
            "oldest" => options = options.start(mmshare::StartAt::Oldest),
            "frame" => options = options.start(mmshare::StartAt::Frame(frame)),
            other => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "start must be 'next', 'oldest' or a frame number, not {other:?}"
                )));
            }
        }
        let (info, subscriber) = py
            .detach(|| {
                let info = self.client.describe(&name)?;
                let subscriber = self.client.subscribe_bytes(&name, options)?;
                check_same(&info, subscriber.files().header())?;
                Ok((info, subscriber))
            })
            .map_err(|e| errors::client(py, e))?;
        let (_, info) = object_info(py, &info)?;
        Ok((info, NativeSubscriber::new(subscriber)))
    }

    /// Waits (GIL released, interruptible) until an array or a stream named `name` exists;
    /// its kind and description. One request: the daemon answers when it creates it.
    fn wait_for<'py>(
        &self,
        py: Python<'py>,
        name: String,
        timeout: Option<f64>,
    ) -> PyResult<(&'static str, Bound<'py, PyDict>)> {
        let limit = crate::duration(timeout)?.min(mmshare::MAX_WAIT);
        let client = &self.client;
        // Pending signals are looked at every 100 ms, with the GIL taken back for that only.
        let mut interrupted = None;
        let got = py.detach(|| {
            client.wait_for_until(&name, limit, &mut || {
                Python::attach(|py| match py.check_signals() {
                    Ok(()) => false,
                    Err(e) => {
                        interrupted = Some(e);
                        true
                    }
                })
            })
        });
        if let Some(e) = interrupted {
            return Err(e);
        }
        match got.map_err(|e| errors::client(py, e))? {
            Some(info) => object_info(py, &info),
            None => Err(pyo3::exceptions::PyRuntimeError::new_err("wait stopped")),
        }
    }

    /// Sends a `WaitFor` request on a connection of its own and returns at once: the event
    /// loop watches its `fileno()` and takes the answer with `try_take()`.
    fn start_wait_for(
        &self,
        py: Python<'_>,
        name: String,
        timeout: Option<f64>,
    ) -> PyResult<PendingWaitFor> {
        let limit = crate::duration(timeout)?.min(mmshare::MAX_WAIT);
        let pending = py
            .detach(|| self.client.start_wait_for(&name, limit))
            .map_err(|e| errors::client(py, e))?;
        Ok(PendingWaitFor(pending))
    }

    /// Watches the objects whose names start with `prefix`.
    fn watch(&self, py: Python<'_>, prefix: String) -> PyResult<crate::watch::NativeWatch> {
        let watch = py
            .detach(|| self.client.watch(&prefix))
            .map_err(|e| errors::client(py, e))?;
        Ok(crate::watch::NativeWatch::new(watch))
    }

    /// Describes an array or a stream: its kind ("array" or "stream") and description.
    fn describe<'py>(
        &self,
        py: Python<'py>,
        name: String,
    ) -> PyResult<(&'static str, Bound<'py, PyDict>)> {
        let info = py
            .detach(|| self.client.describe(&name))
            .map_err(|e| errors::client(py, e))?;
        object_info(py, &info)
    }

    /// Every array and stream (that this uid may read) whose name starts with `prefix`.
    fn list_all<'py>(
        &self,
        py: Python<'py>,
        prefix: String,
    ) -> PyResult<Vec<(&'static str, Bound<'py, PyDict>)>> {
        let infos = py
            .detach(|| self.client.list_all(&prefix))
            .map_err(|e| errors::client(py, e))?;
        infos.iter().map(|info| object_info(py, info)).collect()
    }

    /// Deletes a name (an array or a stream).
    fn delete(&self, py: Python<'_>, name: String) -> PyResult<()> {
        py.detach(|| self.client.delete(&name))
            .map_err(|e| errors::client(py, e))
    }
}

/// A `WaitFor` request in flight (asyncio's `await_for`).
#[pyclass(frozen, module = "mmshare._native")]
pub(crate) struct PendingWaitFor(mmshare::PendingWaitFor);

#[pymethods]
impl PendingWaitFor {
    /// The connection's socket, for `add_reader`.
    fn fileno(&self) -> i32 {
        self.0.fd()
    }

    /// The object's kind and description if the answer has arrived, else None; the daemon's
    /// error (`Timeout` when the wait ran out) raised.
    fn try_take<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Option<(&'static str, Bound<'py, PyDict>)>> {
        match self.0.try_take().map_err(|e| errors::client(py, e))? {
            Some(info) => object_info(py, &info).map(Some),
            None => Ok(None),
        }
    }
}
