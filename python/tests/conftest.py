"""pytest tooling for the `wcfs` package: databases written by real Python
ZODB with the stand-in wendelin.core classes (tests/py/wendelin), a real
`wcfs serve` (the package's own, `python -m wcfs serve`) under a watchdog,
and a ZEO server for tests that commit from another process.

Every server and ZEO server is stopped whatever happens (fixture
teardown), and a watchdog stops a test's server after `LIMIT` seconds,
which fails whatever in the test was waiting on the mount instead of
hanging the run.
"""

import os
import subprocess
import sys
import threading

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TESTS_PY = os.path.join(REPO, "tests", "py")
sys.path.insert(0, TESTS_PY)

import numpy  # noqa: E402
import transaction  # noqa: E402
import ZODB  # noqa: E402
from ZODB.FileStorage import FileStorage  # noqa: E402

import wcfs  # noqa: E402
from wendelin.bigarray.array_zodb import ZBigArray, write  # noqa: E402

#: A test's time limit, seconds (the watchdog then stops its server).
LIMIT = 120

#: Block size of the test arrays' files.
BS = 64 << 10


def make_db(path, arrays):
    """A FileStorage at `path` holding root[name] = ZBigArray for each
    (name, ndarray) of `arrays`, in one commit; returns the last tid (int)."""
    db = ZODB.DB(FileStorage(path))
    try:
        c = db.open()
        root = c.root()
        for name, a in arrays:
            z = ZBigArray(a.shape, a.dtype, blksize=BS)
            root[name] = z
            write(z, a)
        transaction.commit()
        c.close()
        return int.from_bytes(db.storage.lastTransaction(), "big")
    finally:
        db.close()


class Served:
    """A database file and the server serving it."""

    def __init__(self, tmp_path, arrays):
        self.path = str(tmp_path / "Data.fs")
        self.at0 = make_db(self.path, arrays)
        self.mnt = str(tmp_path / "mnt")
        self.log = str(tmp_path / "wcfs.log")
        self.server = wcfs.start(self.path, mountpoint=self.mnt, log=self.log)
        self.wc = wcfs.WCFS.open(self.mnt)
        self._dog = threading.Timer(LIMIT, self._timeout)
        self._dog.daemon = True
        self._dog.start()
        self.timed_out = False

    def _timeout(self):
        self.timed_out = True
        sys.stderr.write("test over %d s: stopping its server\n" % LIMIT)
        self.stop()

    def stop(self):
        try:
            wcfs.stop(self.path, mountpoint=self.mnt)
        except wcfs.Error as e:
            sys.stderr.write("wcfs stop: %s\n" % e)
        try:
            self.server.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.server.proc.kill()
            self.server.proc.wait()

    def close(self):
        self._dog.cancel()
        self.stop()
        with open("/proc/self/mountinfo") as f:
            assert self.mnt not in f.read(), "mount entry left behind"
        assert not self.timed_out, "the test ran over %d s" % LIMIT


def base_arrays():
    """'A': 8 blocks of int64 (a multi-block file); 'B': 2-D float32 with a
    hole (its middle block all zeros) and a tail past the last block set."""
    a = numpy.arange(8 * BS // 8, dtype=numpy.int64)
    b = numpy.zeros((64, 1024), dtype=numpy.float32)   # 4 blocks
    b[:16] = 1.5
    b[48:56] = numpy.arange(8 * 1024, dtype=numpy.float32).reshape(8, 1024)
    return [("A", a), ("B", b)]


@pytest.fixture
def served(tmp_path):
    s = Served(tmp_path, base_arrays())
    try:
        yield s
    finally:
        s.close()


class Zeo:
    """A ZEO server over a Data.fs (tests/py/zeo_server.py), stopped on
    close."""

    def __init__(self, path):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(TESTS_PY, "zeo_server.py"), "serve",
             path, "127.0.0.1:0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "READY":
            self.close()
            raise RuntimeError("zeo_server.py: %r" % (line,))
        host, port = line[1].rsplit(":", 1)
        self.addr = (host, int(port))

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(15)
        except Exception:
            self.proc.kill()
            self.proc.wait()
