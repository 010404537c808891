"""Pure-Python stand-in for wendelin.core's ``wendelin.bigarray.array_zodb``.

Only the persistent data model: the class pickles to / unpickles from the
same class path and state as wendelin.core's ZBigArray, so databases
written with it read the same in wendelin.core, in WCFS's Python package
and here.

    ZBigArray  state ({'_dtype': numpy.dtype, '_shape': tuple,
                       '_order': 'C' | 'F', '_stridev': tuple of byte strides},
                      {'zfile': ZBigFile})

The second part is the slot ``zfile`` (wendelin's ZBigArray declares
``__slots__ = ('zfile',)`` over BigArray, whose members live in the
instance dict; persistent then pickles ``(dict, slots)``). Item
``(i0, i1, ...)`` lives at byte ``sum(ik * _stridev[k])`` of the file.
Early versions had no ``_order`` (it reads as 'C').

Helpers: ``write(zarr, ndarray)`` stores a whole array's bytes into its
file, block by block (blocks of zeros become holes); ``read(zarr)`` loads
them back as an ndarray (what Python ZODB gives without WCFS).
"""

import numpy
from persistent import Persistent

from wendelin.bigfile import file_zodb
from wendelin.bigfile.file_zodb import ZBigFile

__all__ = ['ZBigArray', 'write', 'read']


class _BigArrayBase(object):
    # BigArray: a plain class, so that instances have a __dict__ (its
    # members: _dtype, _shape, _order, _stridev; helpers named _v_*)
    pass


class ZBigArray(_BigArrayBase, Persistent):
    __slots__ = ('zfile',)

    def __init__(self, shape, dtype, order='C', blksize=2 * 1024 * 1024):
        Persistent.__init__(self)
        self._init0(tuple(shape), dtype, order)
        self.zfile = ZBigFile(blksize)

    def _init0(self, shape, dtype, order):
        self._dtype = numpy.dtype(dtype)
        self._shape = shape
        self._order = order
        if order not in ('C', 'F'):
            raise NotImplementedError('Order %s not supported' % order)
        strides = []
        for i in range(len(shape)):
            axes = shape[i + 1:] if order == 'C' else shape[:i]
            n = 1
            for a in axes:
                n *= a
            strides.append(n * self._dtype.itemsize)
        self._stridev = tuple(strides)

    def __setstate__(self, state):
        super(ZBigArray, self).__setstate__(state)
        if not hasattr(self, '_order'):
            self._order = 'C'

    @property
    def shape(self):
        return self._shape

    @property
    def dtype(self):
        return self._dtype

    @property
    def nbytes(self):
        n = self._dtype.itemsize
        for a in self._shape:
            n *= a
        return n

    def resize(self, shape):
        """Change the shape (the file keeps its blocks), as BigArray.resize."""
        self._init0(tuple(shape), self._dtype, self._order)


def write(zarr, a, fmt='ZBlk0'):
    """Store ndarray `a` (of zarr's shape) as zarr's data: every block of
    the file it covers; all-zero blocks become holes."""
    a = numpy.asarray(a, dtype=zarr._dtype)
    if a.shape != tuple(zarr._shape):
        raise ValueError('shape %r != %r' % (a.shape, zarr._shape))
    buf = bytearray(zarr.nbytes)
    numpy.ndarray(a.shape, a.dtype, buffer=buf, strides=zarr._stridev)[...] = a
    bs = zarr.zfile.blksize
    for blk in range(-(-len(buf) // bs)):
        chunk = bytes(buf[blk * bs:(blk + 1) * bs])
        if chunk.strip(b'\0'):
            file_zodb.set_block(zarr.zfile, blk, chunk, fmt)
        else:
            file_zodb.del_block(zarr.zfile, blk)


def read(zarr):
    """zarr's data as Python ZODB loads it, as an ndarray (a copy)."""
    bs = zarr.zfile.blksize
    n = zarr.nbytes
    buf = bytearray(-(-n // bs) * bs if n else 0)
    for blk in range(len(buf) // bs):
        d = file_zodb.load_block(zarr.zfile, blk)
        buf[blk * bs:blk * bs + len(d)] = d
    return numpy.ndarray(zarr._shape, zarr._dtype, buffer=buf,
                         strides=zarr._stridev).copy()
