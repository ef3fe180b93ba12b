//! `Connection`: one connection to the daemon (mmshare-lib's `Client`), its requests made with
//! the GIL released. Descriptions come back as dicts that `mmshare/client.py` turns into its
//! dataclasses.

use std::path::PathBuf;

use mmshare::proto::WireOrder;
use mmshare::{Access, ArrayInfo, Backing, Client, CreateOptions, Order};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::array::NativeArray;
use crate::errors;

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
    Ok(d)
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
    /// Connects to the daemon at `path` and checks its protocol version.
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let client = py
            .detach(|| Client::connect(&path))
            .map_err(|e| errors::client(py, e))?;
        Ok(Connection { client })
    }

    /// The daemon's name and version, from its hello.
    #[getter]
    fn server(&self) -> String {
        self.client.server().to_owned()
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
    ) -> PyResult<(Bound<'py, PyDict>, NativeArray)> {
        let mut options = CreateOptions::new(name, dtype, &shape)
            .order(parse_order(order)?)
            .mode(mode)
            .exist_ok(exist_ok);
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

    /// Deletes a name (an array or a stream).
    fn delete(&self, py: Python<'_>, name: String) -> PyResult<()> {
        py.detach(|| self.client.delete(&name))
            .map_err(|e| errors::client(py, e))
    }
}
