"""numpy views of wendelin.core ZBigArrays through a WCFS connection.

A ``wendelin.bigarray.array_zodb.ZBigArray`` is a persistent object whose
state is ``(dict, slots)``: the dict holds ``_dtype`` (a numpy dtype),
``_shape`` (a tuple), ``_order`` (``'C'`` or ``'F'``; missing in early
versions, meaning ``'C'``) and ``_stridev`` (byte strides, one per axis);
the slot ``zfile`` is the ZBigFile holding its bytes, item ``(i0, i1, ...)``
at byte ``sum(ik * _stridev[k])`` of the file. The object may come from
ZODB as the real class (wendelin.core installed), as any class of that
name, or, where the class cannot be imported, as a ``ZODB.broken.Broken``
object that keeps the state; all three work here.
"""

from typing import Any, Tuple

import numpy

from . import _wcfs


def _state(zarr: Any) -> dict:
    broken = getattr(type(zarr), "__Broken_state__", None) is not None or \
        hasattr(zarr, "__Broken_state__")
    if broken:
        if getattr(zarr, "_p_activate", None) is not None:
            zarr._p_activate()
        st = zarr.__Broken_state__
        d, slots = st if isinstance(st, tuple) else (st, {})
        out = dict(d or {})
        out.update(slots or {})
        return out
    out = {}
    for k in ("_dtype", "_shape", "_order", "_stridev", "zfile"):
        try:
            out[k] = getattr(zarr, k)
        except AttributeError:
            pass
    return out


def zbigarray_layout(zarr: Any) -> Tuple[tuple, numpy.dtype, str, tuple, bytes]:
    """``(shape, dtype, order, strides, zfile oid)`` of a ZBigArray."""
    st = _state(zarr)
    missing = [k for k in ("_dtype", "_shape", "zfile") if k not in st]
    if missing:
        raise TypeError("%r is not a ZBigArray (no %s)"
                        % (zarr, ", ".join(missing)))
    dtype = numpy.dtype(st["_dtype"])
    shape = tuple(int(n) for n in st["_shape"])
    order = st.get("_order", "C")
    if order not in ("C", "F"):
        raise ValueError("ZBigArray order %r not supported" % (order,))
    strides = st.get("_stridev")
    if strides is None:
        strides = _strides(shape, dtype.itemsize, order)
    strides = tuple(int(s) for s in strides)
    zfile = st["zfile"]
    zoid = getattr(zfile, "_p_oid", None)
    if zoid is None:
        raise TypeError("ZBigArray %r: its zfile %r has no oid (not stored "
                        "yet?)" % (zarr, zfile))
    return shape, dtype, order, strides, zoid


def _strides(shape: tuple, itemsize: int, order: str) -> tuple:
    out = []
    for i in range(len(shape)):
        axes = shape[i + 1:] if order == "C" else shape[:i]
        n = 1
        for a in axes:
            n *= a
        out.append(n * itemsize)
    return tuple(out)


def array(conn: "_wcfs.Conn", zarr: Any) -> numpy.ndarray:
    """A read-only ``numpy.ndarray`` of ZBigArray `zarr` as of `conn`'s
    view, zero-copy over a WCFS mapping of its ZBigFile. It stays valid
    (and at `conn`'s view, following its resyncs) while `conn` is open:
    the array keeps the mapping, the mapping its file.

    `zarr` is the persistent object as ZODB loads it (through any
    connection; only its shape, dtype, order and file are read)."""
    shape, dtype, order, strides, zoid = zbigarray_layout(zarr)
    f = conn.open(zoid)
    nbytes = dtype.itemsize
    for n in shape:
        nbytes *= n
    if nbytes == 0:
        f.close()
        return numpy.ndarray(shape, dtype, order=order)
    # the last byte an item covers, for strides in any order
    end = dtype.itemsize + sum((n - 1) * s for n, s in zip(shape, strides))
    bs = f.blksize
    nblk = max(1, -(-end // bs))
    m = f.mmap(0, nblk)
    f.close()  # the mapping keeps the file open
    a = numpy.ndarray(shape, dtype, buffer=m, offset=0, strides=strides)
    return a
