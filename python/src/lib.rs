//! `wcfs._wcfs`: the Python bindings of the `client` crate, and the `wcfs`
//! command itself (so that `python -m wcfs serve ...` needs no other
//! binary).
//!
//! The classes mirror wendelin.core's `wendelin.wcfs` client: [`PyWcfs`]
//! (`WCFS`) → `connect(at)` → [`PyConn`] (`Conn`) → `open(oid)` →
//! [`PyFileH`] (`FileH`) → `mmap(blk_start, blk_len)` → [`PyMapping`]
//! (`Mapping`), which exports its memory through the buffer protocol,
//! read-only and without copying: `memoryview(m)` and `numpy.frombuffer(m)`
//! point at the mapping itself, which the client's pinner keeps showing the
//! Conn's view (pins remap pages at the same address).
//!
//! # Rules at the boundary
//!
//! - Nothing panics into Python: every client error becomes `wcfs.Error`
//!   (`wcfs.ForkedError` for objects used in a forked child) with the Rust
//!   error's text; a Rust panic inside PyO3 would become `PanicException`,
//!   and none of the code below unwraps.
//! - The GIL is released around every call that may wait: for the server
//!   (connect, open, resync, close: they wait for replies, during which
//!   the server may pin us), for the mount (mmap, head/at) or for time.
//! - A `Mapping` counts its buffer exports; `unmap()` with one alive raises
//!   `BufferError`, and the memory stays mapped until the last export is
//!   released and the mapping is unmapped or collected. An export holds a
//!   reference to the `Mapping` (`Py_buffer.obj`), so the mapping cannot be
//!   collected under a live array.
//!
//! # Locks
//!
//! Each object's `Mutex` guards only its `Option` (taken by `close` /
//! `unmap`). It is held to clone or take the Rust handle, never while
//! waiting for the server: the blocking calls work on a clone (`Conn` and
//! `FileH` are cheap handles) with the GIL released.

use pyo3::create_exception;
use pyo3::exceptions::{PyBufferError, PyException, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use std::ffi::c_int;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

create_exception!(
    _wcfs,
    Error,
    PyException,
    "A WCFS client error (the text is the Rust error's)."
);
create_exception!(
    _wcfs,
    ForkedError,
    Error,
    "A WCFS object made before a fork was used in the child."
);

fn err(e: client::Error) -> PyErr {
    match e {
        client::Error::Forked => ForkedError::new_err(e.to_string()),
        e => Error::new_err(e.to_string()),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An oid or tid as Python gives it: an int, 8 bytes (ZODB's big-endian
/// form) or 16 hex digits.
fn id64(what: &str, v: &Bound<'_, PyAny>) -> PyResult<u64> {
    if let Ok(b) = v.downcast::<PyBytes>() {
        let b = b.as_bytes();
        let a: [u8; 8] = b
            .try_into()
            .map_err(|_| PyValueError::new_err(format!("{what}: {} bytes, want 8", b.len())))?;
        return Ok(u64::from_be_bytes(a));
    }
    if let Ok(s) = v.downcast::<PyString>() {
        let s = s.to_str()?;
        if s.len() != 16 {
            return Err(PyValueError::new_err(format!(
                "{what}: {s:?}: want 16 hex digits"
            )));
        }
        return u64::from_str_radix(s, 16)
            .map_err(|_| PyValueError::new_err(format!("{what}: {s:?}: want 16 hex digits")));
    }
    if let Ok(n) = v.extract::<u64>() {
        return Ok(n);
    }
    Err(PyTypeError::new_err(format!(
        "{what}: want an int, 8 bytes or 16 hex digits, not {}",
        v.get_type().name()?
    )))
}

fn tid(v: &Bound<'_, PyAny>) -> PyResult<client::Tid> {
    Ok(client::Tid(id64("tid", v)?))
}

fn oid(v: &Bound<'_, PyAny>) -> PyResult<client::Oid> {
    Ok(client::Oid(id64("oid", v)?))
}

/// A mounted wcfs server (wendelin.core's `WCFS`).
#[pyclass(name = "WCFS", module = "wcfs._wcfs", frozen)]
pub struct PyWcfs {
    inner: client::WCFS,
    /// Set by `close`: no new connections (existing ones live on).
    /// Relaxed: a flag on its own, it publishes no other data.
    closed: std::sync::atomic::AtomicBool,
}

impl PyWcfs {
    fn of(inner: client::WCFS) -> PyWcfs {
        PyWcfs {
            inner,
            closed: Default::default(),
        }
    }
}

#[pymethods]
impl PyWcfs {
    /// The server mounted at `mountpoint` (its `head/at` must read).
    #[staticmethod]
    fn open(py: Python<'_>, mountpoint: std::path::PathBuf) -> PyResult<PyWcfs> {
        let inner = py.detach(|| client::WCFS::open(&mountpoint)).map_err(err)?;
        Ok(PyWcfs::of(inner))
    }

    /// The server of `zurl` on its default mountpoint.
    #[staticmethod]
    fn from_zurl(py: Python<'_>, zurl: String) -> PyResult<PyWcfs> {
        let inner = py.detach(|| client::WCFS::from_zurl(&zurl)).map_err(err)?;
        Ok(PyWcfs::of(inner))
    }

    /// Where it is mounted.
    #[getter]
    fn mountpoint(&self) -> String {
        self.inner.mountpoint().to_string_lossy().into_owned()
    }

    /// The server's current view, `head/at`, as an int.
    fn head_at(&self, py: Python<'_>) -> PyResult<u64> {
        let w = self.inner.clone();
        py.detach(move || w.head_at()).map(|t| t.0).map_err(err)
    }

    /// A connection whose view is the database as of `at` (waits for the
    /// server to reach it).
    fn connect(&self, py: Python<'_>, at: &Bound<'_, PyAny>) -> PyResult<PyConn> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(Error::new_err(format!(
                "{}: WCFS closed",
                self.inner.mountpoint().display()
            )));
        }
        let at = tid(at)?;
        let w = self.inner.clone();
        let c = py.detach(move || w.connect(at)).map_err(err)?;
        Ok(PyConn {
            inner: Mutex::new(Some(Arc::new(c))),
        })
    }

    /// No more connections through this handle (those made stay usable
    /// until closed themselves). Closing twice is fine.
    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    fn __repr__(&self) -> String {
        format!("<wcfs.WCFS {}>", self.inner.mountpoint().display())
    }
}

/// A connection: a view of the database as of one transaction, kept by
/// the server's pins (wendelin.core's `Conn`).
#[pyclass(name = "Conn", module = "wcfs._wcfs", frozen)]
pub struct PyConn {
    inner: Mutex<Option<Arc<client::Conn>>>,
}

impl PyConn {
    fn get(&self) -> PyResult<Arc<client::Conn>> {
        lock(&self.inner)
            .clone()
            .ok_or_else(|| err(client::Error::Closed))
    }
}

#[pymethods]
impl PyConn {
    /// The view's transaction id, as an int.
    fn at(&self) -> PyResult<u64> {
        Ok(self.get()?.at().0)
    }

    /// Open ZBigFile `oid` at this view.
    fn open(&self, py: Python<'_>, oid: &Bound<'_, PyAny>) -> PyResult<PyFileH> {
        let foid = self::oid(oid)?;
        let c = self.get()?;
        let c2 = c.clone();
        let f = py.detach(move || c2.open(foid)).map_err(err)?;
        Ok(PyFileH {
            inner: Mutex::new(Some((f, c))),
        })
    }

    /// Move the view forward to `at` (every open file and mapping follows).
    fn resync(&self, py: Python<'_>, at: &Bound<'_, PyAny>) -> PyResult<()> {
        let at = tid(at)?;
        let c = self.get()?;
        py.detach(move || c.resync(at)).map_err(err)
    }

    /// Close the connection: its files stop being watched and their
    /// mappings become inaccessible. Closing twice is fine.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let c = lock(&self.inner).take();
        match c {
            Some(c) => py.detach(move || c.close()).map_err(err),
            None => Ok(()),
        }
    }

    fn __repr__(&self) -> String {
        match &*lock(&self.inner) {
            Some(c) => format!("<wcfs.Conn @{}>", c.at()),
            None => "<wcfs.Conn closed>".to_owned(),
        }
    }
}

/// An open ZBigFile of a connection (wendelin.core's `FileH`). It keeps
/// its connection alive (a Conn object collected while files or mappings
/// of it are in use does not close it; `Conn.close()` does).
#[pyclass(name = "FileH", module = "wcfs._wcfs", frozen)]
pub struct PyFileH {
    inner: Mutex<Option<(client::FileH, Arc<client::Conn>)>>,
}

impl PyFileH {
    fn get(&self) -> PyResult<(client::FileH, Arc<client::Conn>)> {
        lock(&self.inner)
            .clone()
            .ok_or_else(|| err(client::Error::InvalidArg("file handle closed".into())))
    }
}

#[pymethods]
impl PyFileH {
    /// The file's block size.
    #[getter]
    fn blksize(&self) -> PyResult<u64> {
        Ok(self.get()?.0.blksize())
    }

    /// The file's size as of the view (bytes).
    #[getter]
    fn size(&self) -> PyResult<u64> {
        Ok(self.get()?.0.size())
    }

    /// The file's oid, as an int.
    #[getter]
    fn oid(&self) -> PyResult<u64> {
        Ok(self.get()?.0.foid().0)
    }

    /// Map blocks `[blk_start, blk_start + blk_len)` read-only, as of the
    /// connection's view.
    fn mmap(&self, py: Python<'_>, blk_start: i64, blk_len: i64) -> PyResult<PyMapping> {
        let (f, c) = self.get()?;
        let f2 = f.clone();
        let m = py
            .detach(move || f2.mmap(blk_start, blk_len))
            .map_err(err)?;
        Ok(PyMapping::new(m, f, c))
    }

    /// Close this handle (the file stays open while other handles or
    /// mappings of it live). Closing twice is fine.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = lock(&self.inner).take();
        match f {
            Some((f, c)) => py
                .detach(move || {
                    let r = f.close();
                    drop(c);
                    r
                })
                .map_err(err),
            None => Ok(()),
        }
    }

    fn __repr__(&self) -> String {
        match &*lock(&self.inner) {
            Some((f, _)) => format!("<wcfs.FileH {} blksize {}>", f.foid(), f.blksize()),
            None => "<wcfs.FileH closed>".to_owned(),
        }
    }
}

/// The Rust side of a live mapping: the mapping, then the file and the
/// connection it keeps open (dropped in that order).
type Mapped = (client::Mapping, client::FileH, Arc<client::Conn>);

/// A read-only mapping of blocks of a file, as of its connection's view
/// (wendelin.core's `Mapping`). Supports the buffer protocol, read-only and
/// zero-copy. It keeps its file open (and the file its connection).
#[pyclass(name = "Mapping", module = "wcfs._wcfs", frozen)]
pub struct PyMapping {
    inner: Mutex<Option<Mapped>>,
    /// Live buffer exports. Changed under `inner`'s lock (so that `unmap`
    /// sees a stable count); read without it only for `__repr__`.
    exports: AtomicUsize,
    addr: usize,
    len: usize,
    blk_start: i64,
    blk_len: i64,
}

impl PyMapping {
    fn new(m: client::Mapping, f: client::FileH, c: Arc<client::Conn>) -> PyMapping {
        PyMapping {
            addr: m.as_ptr() as usize,
            len: m.len(),
            blk_start: m.blk_start(),
            blk_len: m.blk_len(),
            exports: AtomicUsize::new(0),
            inner: Mutex::new(Some((m, f, c))),
        }
    }
}

#[pymethods]
impl PyMapping {
    /// First block mapped.
    #[getter]
    fn blk_start(&self) -> i64 {
        self.blk_start
    }

    /// One past the last block mapped.
    #[getter]
    fn blk_stop(&self) -> i64 {
        self.blk_start + self.blk_len
    }

    fn __len__(&self) -> usize {
        self.len
    }

    /// Unmap now. Raises `BufferError` while a buffer export (a
    /// memoryview, a numpy array) of it is alive; unmapping twice is fine.
    fn unmap(&self, py: Python<'_>) -> PyResult<()> {
        let m = {
            let mut g = lock(&self.inner);
            if self.exports.load(Ordering::Relaxed) > 0 {
                return Err(PyBufferError::new_err(format!(
                    "cannot unmap: {} buffer export(s) of it are alive",
                    self.exports.load(Ordering::Relaxed)
                )));
            }
            g.take()
        };
        py.detach(move || drop(m));
        Ok(())
    }

    /// Export the mapped bytes, read-only, without copying.
    ///
    /// # Safety
    ///
    /// Called by CPython with a valid `view` to fill (or null) and the
    /// buffer flags.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("null view"));
        }
        if flags & ffi::PyBUF_WRITABLE == ffi::PyBUF_WRITABLE {
            return Err(PyBufferError::new_err(
                "a WCFS mapping is read-only (it shows the database as of a transaction)",
            ));
        }
        let (addr, len) = (slf.get().addr, slf.get().len);
        {
            let me = slf.get();
            let g = lock(&me.inner);
            let Some((m, _, _)) = g.as_ref() else {
                return Err(PyBufferError::new_err("the mapping is unmapped"));
            };
            // in a forked child the memory is gone (PROT_NONE): refuse
            let mut probe = [0u8; 0];
            m.read_at(0, &mut probe).map_err(err)?;
            me.exports.fetch_add(1, Ordering::Relaxed);
        }
        let owner = slf.into_any().unbind();
        // SAFETY: `view` is non-null and CPython hands it to us to fill;
        // `buf` points at our mapping, which stays mapped while this export
        // lives (unmap refuses while `exports` > 0, and the export holds a
        // reference to us in `obj`, so we are not collected); `shape` and
        // `strides` point into the view itself, as CPython allows for
        // 1-dimensional buffers; `format` is a static C string.
        unsafe {
            (*view).obj = owner.into_ptr();
            (*view).buf = addr as *mut std::ffi::c_void;
            (*view).len = len as ffi::Py_ssize_t;
            (*view).readonly = 1;
            (*view).itemsize = 1;
            (*view).format = if flags & ffi::PyBUF_FORMAT == ffi::PyBUF_FORMAT {
                c"B".as_ptr() as *mut std::ffi::c_char
            } else {
                std::ptr::null_mut()
            };
            (*view).ndim = 1;
            (*view).shape = if flags & ffi::PyBUF_ND == ffi::PyBUF_ND {
                &mut (*view).len
            } else {
                std::ptr::null_mut()
            };
            (*view).strides = if flags & ffi::PyBUF_STRIDES == ffi::PyBUF_STRIDES {
                &mut (*view).itemsize
            } else {
                std::ptr::null_mut()
            };
            (*view).suboffsets = std::ptr::null_mut();
            (*view).internal = std::ptr::null_mut();
        }
        Ok(())
    }

    /// An export ended.
    ///
    /// # Safety
    ///
    /// Called by CPython once per successful `__getbuffer__`.
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        let _g = lock(&self.inner);
        self.exports.fetch_sub(1, Ordering::Relaxed);
    }

    fn __repr__(&self) -> String {
        let state = if lock(&self.inner).is_some() {
            format!("{} exports", self.exports.load(Ordering::Relaxed))
        } else {
            "unmapped".to_owned()
        };
        format!(
            "<wcfs.Mapping #[{}, {}) at {:#x}, {}>",
            self.blk_start,
            self.blk_start + self.blk_len,
            self.addr,
            state
        )
    }
}

/// Run the `wcfs` command with `argv` (`argv[0]` the program name) in this
/// process, GIL released; returns its exit status. `python -m wcfs` is
/// this.
#[pyfunction]
fn main(py: Python<'_>, argv: Vec<String>) -> u8 {
    py.detach(move || wcfs::main_with(argv))
}

/// The default mountpoint of `zurl`, as the server computes it.
#[pyfunction]
fn default_mountpoint(zurl: &str) -> PyResult<String> {
    client::WCFS::default_mountpoint(zurl)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(err)
}

/// The extension module.
#[pymodule]
fn _wcfs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyWcfs>()?;
    m.add_class::<PyConn>()?;
    m.add_class::<PyFileH>()?;
    m.add_class::<PyMapping>()?;
    m.add("Error", m.py().get_type::<Error>())?;
    m.add("ForkedError", m.py().get_type::<ForkedError>())?;
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add_function(wrap_pyfunction!(default_mountpoint, m)?)?;
    Ok(())
}
