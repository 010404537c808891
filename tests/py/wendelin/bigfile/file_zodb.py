"""Pure-Python stand-in for wendelin.core's ``wendelin.bigfile.file_zodb``.

Only the persistent data model is implemented (no virtual memory, no WCFS
client): the classes pickle to / unpickle from exactly the same class paths and
states as the real wendelin.core, so databases written with this module can be
read by wendelin.core and WCFS, and vice versa.

    ZBigFile   state (blksize, blktab)     blktab: LOBTree  blk -> ZBlk0 | ZBlk1
    ZBlk0      state bytes                 block data with trailing NULs stripped
    ZBlk       alias of ZBlk0              (early wendelin versions used this name)
    ZBlk1      state IOBTree               chunktab: offset -> ZData
    ZData      state bytes                 one chunk (<= CHUNKSIZE), NULs stripped

Helpers: set_block, del_block, load_block, file_size (see their docstrings).
"""

from persistent import Persistent
from BTrees.LOBTree import LOBTree
from BTrees.IOBTree import IOBTree

__all__ = ['ZBigFile', 'ZBlk0', 'ZBlk', 'ZBlk1', 'ZData', 'CHUNKSIZE',
           'ZBLK_FORMATS', 'set_block', 'del_block', 'load_block',
           'file_size', 'blk_data', 'BlkError']

CHUNKSIZE = 4096


class BlkError(Exception):
    """Invalid on-disk ZBigFile / ZBlk structure."""


def _asbytes(x, what):
    # Py2 databases: Python 3 ZODB decodes Py2 `str` as ASCII `str` when it
    # can, and keeps `bytes` otherwise (ZODB._compat.loads, errors='bytes').
    if isinstance(x, bytes):
        return x
    if isinstance(x, bytearray):
        return bytes(x)
    if isinstance(x, str):
        return x.encode('latin-1')
    raise BlkError('%s: state is %s, expected bytes' % (what, type(x).__name__))


class ZData(Persistent):
    """One chunk of a ZBlk1. State: the chunk bytes."""

    def __init__(self, data=b''):
        Persistent.__init__(self)
        self.data = data

    def __getstate__(self):
        return self.data

    def __setstate__(self, state):
        self.data = _asbytes(state, 'ZData')


class ZBlk0(Persistent):
    """One block stored as one object. State: block bytes, trailing NULs stripped."""

    def __init__(self):
        Persistent.__init__(self)
        self.blkdata = None     # like wendelin: new ZBlk0 has no data yet

    def __getstate__(self):
        assert self.blkdata is not None, 'ZBlk0 stored without data'
        return self.blkdata

    def __setstate__(self, state):
        self.blkdata = _asbytes(state, 'ZBlk0')

    def loadblkdata(self):
        """-> bytes (possibly shorter than blksize)."""
        if self.blkdata is None:
            raise BlkError('ZBlk0 %r: no data' % (self._p_oid,))
        return self.blkdata

    def setblkdata(self, buf):
        """Store buf (a whole block). -> whether the block data changed."""
        data = bytes(buf).rstrip(b'\0')
        if self.blkdata is not None and self.blkdata == data:
            return False
        self.blkdata = data
        return True


# backward compatibility name, exactly as in wendelin.core
ZBlk = ZBlk0


class ZBlk1(Persistent):
    """One block split into CHUNKSIZE chunks. State: the chunktab IOBTree."""

    CHUNKSIZE = CHUNKSIZE

    def __init__(self):
        Persistent.__init__(self)
        self.chunktab = IOBTree()

    def __getstate__(self):
        return self.chunktab

    def __setstate__(self, state):
        if not isinstance(state, IOBTree):
            raise BlkError('ZBlk1: state is %s, expected IOBTree'
                           % type(state).__name__)
        self.chunktab = state

    def loadblkdata(self):
        """Assemble the block from its chunks (wendelin-formats.md §4)."""
        chunks = []
        for start, chunk in self.chunktab.items():
            if not isinstance(chunk, ZData):
                raise BlkError('ZBlk1 %r: chunktab[%d] is %s, not ZData'
                               % (self._p_oid, start, type(chunk).__name__))
            if start < 0:
                raise BlkError('ZBlk1 %r: negative offset %d' % (self._p_oid, start))
            chunks.append((start, chunk.data))
        if not chunks:
            return b''
        tail_start, tail = chunks[-1]
        blklen = tail_start + len(tail)
        buf = bytearray(blklen)
        buf[tail_start:] = tail
        stop = 0
        for start, data in chunks[:-1]:
            if start < stop:
                raise BlkError('ZBlk1 %r: chunks overlap at %d' % (self._p_oid, start))
            stop = start + len(data)
            if stop > blklen:
                raise BlkError('ZBlk1 %r: blkdata overrun at %d' % (self._p_oid, start))
            buf[start:stop] = data
        return bytes(buf)

    def setblkdata(self, buf):
        """Store buf (a whole block). -> whether the block data changed.

        Only chunks whose data changed get a new ZData state; all-zero chunks
        are removed from chunktab; a chunktab that does not follow CHUNKSIZE
        is cleared first (as wendelin.core does)."""
        buf = bytes(buf)
        chunktab = self.chunktab
        changed = False
        for start, chunk in chunktab.items():
            if start % CHUNKSIZE or len(chunk.data) > CHUNKSIZE:
                chunktab.clear()
                changed = True
                break
        for start in range(0, len(buf), CHUNKSIZE):
            data = buf[start:start + CHUNKSIZE].rstrip(b'\0')
            chunk = chunktab.get(start)
            if not data:
                if chunk is not None:
                    del chunktab[start]
                    changed = True
                continue
            if chunk is None:
                chunk = chunktab[start] = ZData(b'')
            if chunk.data != data:
                chunk.data = data
                changed = True
        # chunks beyond the end of buf (cannot happen with full-block buffers)
        for start in list(chunktab.keys(min=len(buf))):
            del chunktab[start]
            changed = True
        return changed


ZBLK_FORMATS = {'ZBlk0': ZBlk0, 'ZBlk1': ZBlk1}


class ZBigFile(Persistent):
    """The file. State: (blksize, blktab)."""

    def __init__(self, blksize):
        Persistent.__init__(self)
        self.__setstate__((blksize, LOBTree()))

    def __getstate__(self):
        return (self.blksize, self.blktab)

    def __setstate__(self, state):
        self.blksize, self.blktab = state


def _check_zf(zf):
    if not isinstance(zf, ZBigFile):
        raise BlkError('%r is not a ZBigFile' % (zf,))
    if not isinstance(zf.blksize, int) or zf.blksize <= 0:
        raise BlkError('ZBigFile %r: invalid blksize %r' % (zf._p_oid, zf.blksize))
    if not isinstance(zf.blktab, LOBTree):
        raise BlkError('ZBigFile %r: blktab is %s, not LOBTree'
                       % (zf._p_oid, type(zf.blktab).__name__))


def set_block(zf, blk, data, fmt='ZBlk0'):
    """Write block `blk` of ZBigFile zf := data (padded with zeros to blksize).

    fmt is 'ZBlk0' or 'ZBlk1'. If the block has no ZBlk yet, or its ZBlk has
    the other type, a new ZBlk object is created (like wendelin.core).
    When the data changed the ZBlk is marked _p_changed (also for ZBlk1 when
    only ZData objects changed). Returns the ZBlk object."""
    _check_zf(zf)
    if blk < 0:
        raise ValueError('negative blk %d' % blk)
    data = bytes(data)
    if len(data) > zf.blksize:
        raise ValueError('data (%d bytes) > blksize (%d)' % (len(data), zf.blksize))
    buf = data + b'\0' * (zf.blksize - len(data))
    klass = ZBLK_FORMATS[fmt]
    zblk = zf.blktab.get(blk)
    if zblk is None or type(zblk) is not klass:
        zblk = zf.blktab[blk] = klass()
    if zblk.setblkdata(buf):
        zblk._p_changed = True
    return zblk


def del_block(zf, blk):
    """Make block `blk` a hole (remove its blktab entry). -> whether it existed."""
    _check_zf(zf)
    if blk in zf.blktab:
        del zf.blktab[blk]
        return True
    return False


def blk_data(zblk, blksize):
    """Data of one ZBlk padded with zeros to blksize (None -> hole)."""
    if zblk is None:
        return b'\0' * blksize
    if not isinstance(zblk, (ZBlk0, ZBlk1)):
        raise BlkError('%r is not a ZBlk' % (zblk,))
    data = zblk.loadblkdata()
    if len(data) > blksize:
        raise BlkError('invalid blk: size = %d (> blksize = %d)' % (len(data), blksize))
    return data + b'\0' * (blksize - len(data))


def load_block(zf, blk):
    """-> bytes of length zf.blksize: the content of block `blk` (hole -> zeros)."""
    _check_zf(zf)
    return blk_data(zf.blktab.get(blk), zf.blksize)


def file_size(zf):
    """(max blk + 1) * blksize, or 0 when blktab is empty."""
    _check_zf(zf)
    if not zf.blktab:
        return 0
    return (zf.blktab.maxKey() + 1) * zf.blksize
