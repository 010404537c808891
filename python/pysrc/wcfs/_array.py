"""numpy views of wendelin.core ZBigArrays through a WCFS connection.

A ``wendelin.bigarray.array_zodb.ZBigArray`` is a persistent object whose
state is ``(dict, slots)``: the dict holds ``_dtype`` (a numpy dtype),
``_shape`` (a tuple), ``_order`` (``'C'`` or ``'F'``; missing in early
versions, meaning ``'C'``) and ``_stridev`` (byte strides, one per axis,
in every version);
the slot ``zfile`` is the ZBigFile holding its bytes, item ``(i0, i1, ...)``
at byte ``sum(ik * _stridev[k])`` of the file. The object may come from
ZODB as the real class (wendelin.core installed), as any class of that
name, or, where the class cannot be imported, as a ``ZODB.broken.Broken``
object that keeps the state; all three work here.
"""

from typing import Any, Tuple

import numpy

from . import _wcfs


#: What a ZBigArray's layout is read from (every version has all but
#: ``_order``).
_MEMBERS = ("_dtype", "_shape", "_stridev", "_order", "zfile")


def _state(zarr: Any) -> dict:
    """The ZBigArray's members, from the object or, for a ZODB ``Broken``
    one, from the state it kept."""
    if getattr(zarr, "_p_activate", None) is not None:
        zarr._p_activate()  # a ghost: load it (Broken keeps its state then)
    st = getattr(zarr, "__Broken_state__", None)
    if st is not None:
        d, slots = st if isinstance(st, tuple) else (st, {})
        return {**(d or {}), **(slots or {})}
    return {k: getattr(zarr, k) for k in _MEMBERS if hasattr(zarr, k)}


def zbigarray_layout(zarr: Any) -> Tuple[tuple, numpy.dtype, str, tuple, bytes]:
    """``(shape, dtype, order, strides, zfile oid)`` of a ZBigArray."""
    st = _state(zarr)
    missing = [k for k in _MEMBERS if k != "_order" and k not in st]
    if missing:
        raise TypeError("%r is not a ZBigArray (no %s)"
                        % (zarr, ", ".join(missing)))
    dtype = numpy.dtype(st["_dtype"])
    shape = tuple(int(n) for n in st["_shape"])
    order = st.get("_order", "C")
    if order not in ("C", "F"):
        raise ValueError("ZBigArray order %r not supported" % (order,))
    strides = tuple(int(s) for s in st["_stridev"])
    zoid = getattr(st["zfile"], "_p_oid", None)
    if zoid is None:
        raise TypeError("ZBigArray %r: its zfile %r has no oid (not stored "
                        "yet?)" % (zarr, st["zfile"]))
    return shape, dtype, order, strides, zoid


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
