"""Shared helpers for the Python interop scripts (not part of the stand-in)."""

import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from ZODB.FileStorage import FileStorage     # noqa: E402
from ZODB.utils import p64, u64              # noqa: E402

__all__ = ['open_readonly', 'h16', 'p64', 'u64', 'tid_from_hex']


def h16(b):
    """8-byte oid/tid -> 16 lowercase hex digits."""
    return b.hex()


def tid_from_hex(s):
    if len(s) != 16:
        raise ValueError('tid/oid %r: need 16 hex digits' % s)
    return bytes.fromhex(s)


_py2_compat_on = False


def enable_py2_compat():
    """Make ZODB's object unpickler read Py2 `str` values that are not ASCII.

    Python 3 ZODB unpickles object states with encoding='ASCII' (strict), so a
    Py2 database whose ZBlk0/ZData states are non-ASCII `str` (pickle protocol
    1/2, SHORT_BINSTRING/BINSTRING) cannot be loaded. zodbpickle supports
    errors='bytes' (decode as ASCII str when possible, keep bytes otherwise),
    which is what ZODB._compat.loads uses for other metadata; use it for object
    states too. Harmless for Python 3 databases."""
    global _py2_compat_on
    if _py2_compat_on:
        return
    import zodbpickle.pickle
    import ZODB.serialize

    class _Unpickler(zodbpickle.pickle.Unpickler):
        def __init__(self, f, find_global):
            super().__init__(f, encoding='ASCII', errors='bytes')
            self._find_global = find_global

        def find_class(self, modulename, name):
            if self._find_global is None:
                return super().find_class(modulename, name)
            return self._find_global(modulename, name)

    def PersistentUnpickler(find_global, load_persistent, f):
        u = _Unpickler(f, find_global)
        if load_persistent is not None:
            u.persistent_load = load_persistent
        return u

    ZODB.serialize.PersistentUnpickler = PersistentUnpickler
    _py2_compat_on = True


class _ROStorage(object):
    """FileStorage opened read-only, plus cleanup of a temporary copy."""

    def __init__(self, path, use_index=True):
        self.tmpdir = None
        with open(path, 'rb') as f:
            magic = f.read(4)
        if magic == b'FS21':
            # Python 3 ZODB refuses the Python 2 magic although the format is
            # otherwise identical (its pickles are decoded with
            # ZODB._compat.loads); read a copy with the magic patched. The Py2
            # .index is not copied: Python 3 cannot unpickle it anyway.
            self.tmpdir = tempfile.mkdtemp(prefix='zfs21-')
            cpath = os.path.join(self.tmpdir, os.path.basename(path))
            shutil.copyfile(path, cpath)
            with open(cpath, 'r+b') as f:
                f.write(b'FS30')
            path = cpath
            enable_py2_compat()
        elif not use_index:
            # FileStorage always uses PATH.index when present: open PATH via a
            # symlink in an empty directory, so the index is rebuilt (in memory)
            self.tmpdir = tempfile.mkdtemp(prefix='zfsnoidx-')
            lpath = os.path.join(self.tmpdir, os.path.basename(path))
            os.symlink(os.path.abspath(path), lpath)
            path = lpath
        self.path = path
        self.storage = FileStorage(path, read_only=True)

    def close(self):
        try:
            self.storage.close()
        finally:
            if self.tmpdir:
                shutil.rmtree(self.tmpdir, ignore_errors=True)


def open_readonly(path, use_index=True):
    """-> object with .storage (read-only FileStorage), .path and .close().

    Never writes next to `path` (no lock file, no index). use_index=False
    ignores PATH.index (the index is rebuilt in memory by a forward scan)."""
    return _ROStorage(path, use_index)
