//! An exact `numpy.ndarray`'s address read straight from the object, for the per-frame calls
//! (`send`, `try_receive_into`) on frames below 64 KiB.
//!
//! Borrowing an array through the buffer protocol (`PyObject_GetBuffer`, then
//! `PyBuffer_Release`) costs NumPy an allocation, the formatting of the dtype's format string
//! and a comparison of it with the one it cached, every call: in a `send` + `try_receive_into`
//! pair of 64 B frames in one process, about a sixth of the pair's time. A C extension built
//! against NumPy reads the same facts from the array object itself (`PyArray_DATA`,
//! `PyArray_DIMS`, `PyArray_FLAGS`); so does this module, once the buffer protocol has accepted
//! an array of the same dtype object and shape (see [`KnownLayout`]).
//!
//! The fields read are the first ones of NumPy's `PyArrayObject_fields` (numpy/ndarraytypes.h):
//! the same since NumPy 1.7, in 1.x and in 2.x (NumPy 2 changed the dtype object's layout, not
//! the array's: an extension built against NumPy 2 reads them with the same macros when it
//! runs on NumPy 1.x). Only an *exact* `numpy.ndarray` is read this way (a subclass, or any
//! other exporter, goes through the buffer protocol), and only by a caller that holds the GIL
//! and runs no Python code until it is done with the address: nothing can then resize or free
//! the array under it. A caller that has to wait with the GIL released borrows the buffer the
//! usual way first. (The module declares that it needs the GIL: a free-threaded Python turns
//! the GIL on for it.)
//!
//! Only arrays of a plain numeric dtype are remembered: the item size of a flexible or
//! structured dtype object (`V512`, `S4`, ...) can be changed in place from Python
//! (`dtype.__setstate__`), that of a builtin number cannot.

use std::ffi::{c_char, c_int};
use std::sync::OnceLock;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyType;

/// `PyArrayObject_fields` up to `flags` (the fields named with `_` are not read).
#[repr(C)]
struct Fields {
    _head: ffi::PyObject,
    data: *mut c_char,
    nd: c_int,
    dimensions: *const ffi::Py_ssize_t,
    _strides: *const ffi::Py_ssize_t,
    _base: *mut ffi::PyObject,
    descr: *mut ffi::PyObject,
    flags: c_int,
}

/// What is read of an array's `Fields`.
struct Facts {
    data: *mut c_char,
    nd: c_int,
    dimensions: *const ffi::Py_ssize_t,
    descr: *mut ffi::PyObject,
    flags: c_int,
}

/// `NPY_ARRAY_C_CONTIGUOUS`.
const C_CONTIGUOUS: c_int = 0x0001;
/// `NPY_ARRAY_WRITEABLE`.
const WRITEABLE: c_int = 0x0400;
/// `_NPY_ARRAY_WARN_ON_WRITE` (bit 31): a view NumPy warns about when it is written (its
/// buffer export then warns too); such an array goes through the buffer protocol.
const WARN_ON_WRITE: c_int = c_int::MIN;

/// A dtype object and a shape whose arrays the buffer protocol has accepted (C-contiguous, of
/// the frame's exact bytes), remembered once: an exact ndarray with the same dtype *object*
/// (held here, so that no other object can take its address) and the same shape has the
/// same bytes. Builtin dtypes are single objects (`np.dtype("f4") is np.zeros(1, "f4").dtype`),
/// so every array of the frame's dtype and shape matches; one with a dtype object of its own
/// (a structured dtype made again) just takes the buffer protocol's way.
#[derive(Default)]
pub(crate) struct KnownLayout(OnceLock<(Py<PyAny>, Vec<ffi::Py_ssize_t>)>);

impl KnownLayout {
    /// The data address of `array` if it has the remembered dtype object and shape and is
    /// C-contiguous (and writable if `writable`); `None` otherwise, or before anything was
    /// remembered.
    ///
    /// # Safety
    /// `array` is an exact `numpy.ndarray` (`type(array) is numpy.ndarray`), and the address
    /// is used only while the caller keeps the GIL and runs no Python code.
    pub(crate) unsafe fn address(&self, array: &Bound<'_, PyAny>, writable: bool) -> Option<usize> {
        let (descr, shape) = self.0.get()?;
        // SAFETY: the caller's promise.
        let f = unsafe { read_fields(array) };
        let mut wanted = C_CONTIGUOUS;
        if writable {
            wanted |= WRITEABLE;
        }
        if f.flags & wanted != wanted || (writable && f.flags & WARN_ON_WRITE != 0) {
            return None;
        }
        if f.descr != descr.as_ptr() || usize::try_from(f.nd).ok()? != shape.len() {
            return None;
        }
        if !shape.is_empty() {
            // SAFETY: an array of `nd` > 0 dimensions has `nd` of them at `dimensions`.
            let dims = unsafe { std::slice::from_raw_parts(f.dimensions, shape.len()) };
            if dims != shape.as_slice() {
                return None;
            }
        }
        (!f.data.is_null()).then_some(f.data as usize)
    }

    /// Remembers `array`'s dtype object and shape, if nothing is remembered yet and `format`
    /// (its buffer's) is one native number: the caller has just borrowed its buffer and found
    /// it C-contiguous and of the frame's exact bytes (and writable, where it must be). Makes
    /// no Python object (the dtype's count goes up).
    ///
    /// # Safety
    /// `array` is an exact `numpy.ndarray`; the caller holds the GIL.
    pub(crate) unsafe fn remember(&self, array: &Bound<'_, PyAny>, format: &std::ffi::CStr) {
        if self.0.get().is_some() || !plain_number(format) {
            return;
        }
        // SAFETY: the caller's promise.
        let f = unsafe { read_fields(array) };
        let Ok(nd) = usize::try_from(f.nd) else {
            return;
        };
        let shape = if nd == 0 {
            Vec::new()
        } else {
            // SAFETY: as in `address`.
            unsafe { std::slice::from_raw_parts(f.dimensions, nd) }.to_vec()
        };
        // SAFETY: an array's `descr` is a live dtype object it holds a reference to.
        let descr = unsafe { Bound::from_borrowed_ptr(array.py(), f.descr) }.unbind();
        let _ = self.0.set((descr, shape));
    }
}

/// The fields of `array` this module uses, each read through a raw pointer (no reference is
/// made to the object, whose header other code changes).
///
/// # Safety
/// `array` is an exact `numpy.ndarray` (a `PyArrayObject`, whose first fields are `Fields`),
/// and the GIL is held, so no other thread changes them meanwhile.
unsafe fn read_fields(array: &Bound<'_, PyAny>) -> Facts {
    let f = array.as_ptr().cast::<Fields>();
    // SAFETY: as the caller promises: each field lies inside the live object.
    unsafe {
        Facts {
            data: (&raw const (*f).data).read(),
            nd: (&raw const (*f).nd).read(),
            dimensions: (&raw const (*f).dimensions).read(),
            descr: (&raw const (*f).descr).read(),
            flags: (&raw const (*f).flags).read(),
        }
    }
}

/// Whether a buffer format (struct syntax) is one number in native order and alignment:
/// `B`, `q`, `d`, `?`, `Zd` (complex), ... as NumPy exports its numeric dtypes.
fn plain_number(format: &std::ffi::CStr) -> bool {
    match format.to_bytes() {
        [c] => b"?bBhHiIlLqQnNefdg".contains(c),
        [b'Z', c] => b"efdg".contains(c),
        _ => false,
    }
}

/// Checks that `ty` (what the Python layer handed over as `numpy.ndarray`) is that type: the
/// fast paths read an object of exactly this type as an array object.
pub(crate) fn check_ndarray(ty: &Bound<'_, PyType>) -> PyResult<()> {
    let ndarray = ty.py().import("numpy")?.getattr("ndarray")?;
    if ty.is(&ndarray) {
        Ok(())
    } else {
        Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "expected numpy.ndarray, got {ty}"
        )))
    }
}
