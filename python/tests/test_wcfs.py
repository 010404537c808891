"""The `wcfs` Python package against a real server and real Python ZODB.

The truth is always what Python ZODB loads (the stand-in wendelin.core
classes' `read`, through a ZODB connection at the same transaction), or
the arrays the test wrote itself.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy
import pytest
import transaction
import ZODB
from ZODB.FileStorage import FileStorage

import wcfs
from conftest import BS, TESTS_PY, Zeo
from wendelin.bigarray.array_zodb import read, write
from wendelin.bigfile import file_zodb


def commit_blocks(path, name, changes):
    """Change array `name` of the database at `path`: `changes` is a list of
    (slice of the flat array, value). Returns the new tid (int)."""
    db = ZODB.DB(FileStorage(path))
    try:
        c = db.open()
        z = c.root()[name]
        a = read(z).reshape(-1)
        for sl, v in changes:
            a[sl] = v
        write(z, a.reshape(z.shape))
        transaction.commit()
        c.close()
        return int.from_bytes(db.storage.lastTransaction(), "big")
    finally:
        db.close()


def zarrays(path):
    """root's ZBigArrays as ZODB loads them now: {name: (zarr, ndarray)}
    (the objects stay usable for their shape/dtype/file after close)."""
    db = ZODB.DB(FileStorage(path, read_only=True))
    try:
        c = db.open()
        out = {k: (v, read(v)) for k, v in c.root().items()}
        for z, _ in out.values():
            z.zfile._p_activate()
        return out
    finally:
        db.close()


def pfns(a):
    """Physical frame of every page of ndarray `a` (touched first)."""
    a.sum()  # fault every page in
    addr = a.__array_interface__["data"][0]
    n = a.nbytes // 4096
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(addr // 4096 * 8)
        raw = f.read(8 * n)
    ents = numpy.frombuffer(raw, dtype=numpy.uint64)
    assert (ents >> numpy.uint64(63)).all(), "a page is not present"
    return ents & numpy.uint64((1 << 55) - 1)


# ---- basics ----

def test_ids_in_every_form(served):
    at = served.at0
    forms = [at, at.to_bytes(8, "big"), "%016x" % at]
    for f in forms:
        c = served.wc.connect(f)
        assert c.at() == at
        c.close()
    with pytest.raises(ValueError):
        served.wc.connect(b"1234")
    with pytest.raises(ValueError):
        served.wc.connect("12")
    with pytest.raises(TypeError):
        served.wc.connect(1.5)


def test_whole_multiblock_array_and_holes(served):
    zs = zarrays(served.path)
    c = served.wc.connect(served.at0)
    for name, (z, want) in zs.items():
        a = wcfs.array(c, z)
        assert a.shape == want.shape and a.dtype == want.dtype
        assert numpy.array_equal(a, want), name
        assert not a.flags.writeable
    # B's block 1 (rows 16..31) and 3 were never written: holes read zeros
    b = wcfs.array(c, zs["B"][0])
    assert (b[16:48] == 0).all() and (b[56:] == 0).all()
    c.close()


def test_mapping_buffer_protocol(served):
    zs = zarrays(served.path)
    c = served.wc.connect(served.at0)
    f = c.open(zs["A"][0].zfile._p_oid)
    assert f.blksize == BS and f.size == 8 * BS
    m = f.mmap(2, 3)
    assert (m.blk_start, m.blk_stop, len(m)) == (2, 5, 3 * BS)
    mv = memoryview(m)
    assert mv.readonly and mv.nbytes == 3 * BS
    a = numpy.frombuffer(m, dtype=numpy.int64)
    # zero-copy: the array's memory is the mapping's
    assert a.__array_interface__["data"][0] == numpy.frombuffer(mv, numpy.uint8).__array_interface__["data"][0]
    assert numpy.array_equal(a, zs["A"][1][2 * BS // 8:5 * BS // 8])
    f.close()
    c.close()


def test_unmap_with_live_export_raises(served):
    zs = zarrays(served.path)
    c = served.wc.connect(served.at0)
    f = c.open(zs["A"][0].zfile._p_oid)
    m = f.mmap(0, 1)
    mv = memoryview(m)
    with pytest.raises(BufferError):
        m.unmap()
    a = numpy.frombuffer(m, dtype=numpy.uint8)
    del mv
    with pytest.raises(BufferError):
        m.unmap()
    assert a[8] == zs["A"][1].view(numpy.uint8)[8]
    del a
    m.unmap()
    m.unmap()  # twice is fine
    with pytest.raises(BufferError):
        memoryview(m)
    c.close()


def test_read_only(served):
    zs = zarrays(served.path)
    c = served.wc.connect(served.at0)
    a = wcfs.array(c, zs["A"][0])
    with pytest.raises(ValueError):
        a[0] = 1
    with pytest.raises(ValueError):
        a.setflags(write=True)
    f = c.open(zs["A"][0].zfile._p_oid)
    m = f.mmap(0, 1)
    with pytest.raises(TypeError):
        memoryview(m)[0] = 1
    # asking for a writable buffer is refused (ctypes turns our
    # BufferError into its TypeError), and readinto cannot write either
    with pytest.raises((BufferError, TypeError)):
        _writable_export(m)
    with open("/dev/zero", "rb", buffering=0) as z:
        with pytest.raises((BufferError, TypeError)):
            z.readinto(m)
    assert numpy.array_equal(a, zs["A"][1])  # nothing changed
    c.close()


def _writable_export(m):
    import ctypes
    # ctypes' from_buffer requires a writable buffer: the export must refuse
    ctypes.c_char.from_buffer(m)


# ---- views at different transactions ----

def test_two_views_own_data_shared_pages(served):
    zs = zarrays(served.path)
    za, a0 = zs["A"]
    at1 = commit_blocks(served.path, "A", [(slice(BS // 8, 2 * BS // 8), -1)])  # block 1
    served.wc.connect(at1).close()  # waits for the server to reach at1
    c0 = served.wc.connect(served.at0)
    c1 = served.wc.connect(at1)
    x0, x1 = wcfs.array(c0, za), wcfs.array(c1, za)
    a1 = a0.copy()
    a1[BS // 8:2 * BS // 8] = -1
    assert numpy.array_equal(x0, a0)
    assert numpy.array_equal(x1, a1)
    p0, p1 = pfns(x0), pfns(x1)
    per = BS // 4096
    for blk in range(8):
        s = slice(blk * per, (blk + 1) * per)
        if blk == 1:
            assert not numpy.intersect1d(p0[s], p1[s]).size, "changed block shares pages"
        else:
            assert numpy.array_equal(p0[s], p1[s]), "block %d not shared" % blk
    c0.close()
    c1.close()


def test_resync_forward_after_python_commits(served):
    zs = zarrays(served.path)
    za, want = zs["A"]
    c = served.wc.connect(served.at0)
    x = wcfs.array(c, za)
    addr = x.__array_interface__["data"][0]
    for k in range(5):
        lo = (k * 3 % 8) * BS // 8
        at = commit_blocks(served.path, "A", [(slice(lo, lo + 100), 1000 + k)])
        # the old view does not move by itself
        assert numpy.array_equal(x, want)
        want = want.copy()
        want[lo:lo + 100] = 1000 + k
        c.resync(at)
        assert c.at() == at
        assert numpy.array_equal(x, want), "after resync to commit %d" % k
    assert x.__array_interface__["data"][0] == addr  # the same mapping
    c.close()


def test_growth(served):
    zs = zarrays(served.path)
    za, want = zs["A"]
    # grow A by 3 blocks, the last written, the middle ones holes
    db = ZODB.DB(FileStorage(served.path))
    c = db.open()
    z = c.root()["A"]
    n = want.size
    z.resize((n + 3 * BS // 8,))
    big = numpy.zeros(n + 3 * BS // 8, dtype=numpy.int64)
    big[:n] = want
    big[-10:] = 7
    write(z, big)
    transaction.commit()
    at1 = int.from_bytes(db.storage.lastTransaction(), "big")
    c.close()
    db.close()
    w = served.wc.connect(served.at0)
    old = wcfs.array(w, za)
    w.resync(at1)
    assert numpy.array_equal(old, want)  # its shape is its own
    znew = zarrays(served.path)["A"][0]
    new = wcfs.array(w, znew)
    assert numpy.array_equal(new, big)
    w.close()


# ---- errors ----

def test_errors_are_exceptions(served, tmp_path):
    c = served.wc.connect(served.at0)
    with pytest.raises(wcfs.Error) as e:
        c.open(0x7777)
    assert "0000000000007777" in str(e.value)
    with pytest.raises(wcfs.Error):
        wcfs.WCFS.open(str(tmp_path / "nothing-mounted-here"))
    with pytest.raises(wcfs.Error):
        wcfs.join(str(tmp_path / "none.fs"), autostart=False)
    f = c.open(zarrays(served.path)["A"][0].zfile._p_oid)
    with pytest.raises(wcfs.Error):
        f.mmap(-1, 1)
    with pytest.raises(wcfs.Error):
        c.resync(served.at0 - 1)  # backwards
    c.close()
    c.close()
    with pytest.raises(wcfs.Error):
        c.open(1)
    served.wc.close()
    with pytest.raises(wcfs.Error):
        served.wc.connect(served.at0)


def test_server_killed_mid_use(served):
    zs = zarrays(served.path)
    c = served.wc.connect(served.at0)
    f = c.open(zs["A"][0].zfile._p_oid)
    f.mmap(0, 1)
    served.server.proc.send_signal(signal.SIGKILL)
    served.server.proc.wait()
    t0 = time.monotonic()
    with pytest.raises(wcfs.Error):
        c.open(zs["B"][0].zfile._p_oid)
    with pytest.raises(wcfs.Error):
        served.wc.connect(served.at0)
    assert time.monotonic() - t0 < 60


# ---- fork ----

def test_fork_child_gets_errors_parent_unaffected(served):
    zs = zarrays(served.path)
    za, want = zs["A"]
    c = served.wc.connect(served.at0)
    f = c.open(za.zfile._p_oid)
    m = f.mmap(0, 8)
    x = numpy.frombuffer(m, dtype=numpy.int64)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        out = []
        for what, fn in [("open", lambda: c.open(za.zfile._p_oid)),
                         ("mmap", lambda: f.mmap(0, 1)),
                         ("export", lambda: memoryview(m)),
                         ("resync", lambda: c.resync(served.at0))]:
            try:
                fn()
                out.append("%s: no error" % what)
            except wcfs.ForkedError:
                out.append("%s: ForkedError" % what)
            except BaseException as e:
                out.append("%s: %s %s" % (what, type(e).__name__, e))
        os.write(w, "\n".join(out).encode())
        os._exit(0)
    os.close(w)
    got = b""
    while True:
        d = os.read(r, 4096)
        if not d:
            break
        got += d
    os.close(r)
    _, st = os.waitpid(pid, 0)
    assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0
    assert got.decode().splitlines() == [
        "open: ForkedError", "mmap: ForkedError", "export: ForkedError",
        "resync: ForkedError"]
    # the parent's link and mapping still work, pins included
    at1 = commit_blocks(served.path, "A", [(slice(0, 10), 5)])
    assert numpy.array_equal(x, want)
    c.resync(at1)
    want = want.copy()
    want[:10] = 5
    assert numpy.array_equal(x, want)
    c.close()


# ---- ZODB connection sync ----

COMMITTER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, %(tests_py)r)
    import ZODB, transaction, numpy
    from ZEO.ClientStorage import ClientStorage
    from wendelin.bigarray.array_zodb import read, write
    st = ClientStorage(%(addr)r)
    db = ZODB.DB(st)
    c = db.open()
    rng = numpy.random.default_rng(7)
    for k in range(%(n)d):
        z = c.root()['A']
        a = read(z).reshape(-1)
        lo = int(rng.integers(0, a.size - 200))
        a[lo:lo + 200] = k + 1
        write(z, a.reshape(z.shape))
        transaction.commit()
        print(int.from_bytes(db.storage.lastTransaction(), 'big'), flush=True)
        time.sleep(0.01)
    c.close(); db.close()
""")


def test_zodb_connection_sync_under_a_committing_process(served):
    from ZEO.ClientStorage import ClientStorage
    zeo = Zeo(served.path)
    proc = None
    db = None
    try:
        db = ZODB.DB(ClientStorage(zeo.addr))
        tm = transaction.TransactionManager()
        zconn = db.open(transaction_manager=tm)
        wconn = wcfs.conn_of(zconn, served.wc)
        assert wconn.at() == wcfs._zsync.zconn_at(zconn)
        x = wcfs.array(wconn, zconn.root()["A"])
        proc = subprocess.Popen(
            [sys.executable, "-c", COMMITTER % dict(
                tests_py=TESTS_PY, addr=zeo.addr, n=40)],
            stdout=subprocess.PIPE, text=True)
        checked = 0
        t0 = time.monotonic()
        while proc.poll() is None or checked < 5:
            tm.begin()
            at = wcfs._zsync.zconn_at(zconn)
            assert wconn.at() == at, "the view did not follow begin()"
            want = read(zconn.root()["A"])
            assert numpy.array_equal(x, want), "array != ZODB @%016x" % at
            # a fresh array agrees too
            assert numpy.array_equal(wcfs.array(wconn, zconn.root()["A"]), want)
            checked += 1
            assert time.monotonic() - t0 < 90
            time.sleep(0.005)
        assert proc.wait() == 0
        lines = proc.stdout.read().split()
        assert len(lines) == 40
        # the last state too
        tm.begin()
        assert wconn.at() == int(lines[-1])
        assert numpy.array_equal(x, read(zconn.root()["A"]))
        # close: the view goes; reopened from the pool: a new one, in sync
        tm.abort()
        zconn.close()
        with pytest.raises(wcfs.Error):
            wconn.open(1)
        zconn2 = db.open(transaction_manager=tm)
        assert zconn2 is zconn  # the pool gave it back
        w2 = wcfs.conn_of(zconn2, served.wc)
        assert w2 is not wconn and w2.at() == wcfs._zsync.zconn_at(zconn2)
        assert numpy.array_equal(wcfs.array(w2, zconn2.root()["A"]),
                                 read(zconn2.root()["A"]))
        assert checked >= 5
        zconn2.close()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if db is not None:
            db.close()
        zeo.close()


def test_zbigarray_read_as_broken_object(served):
    # without the class importable, ZODB gives a Broken object that keeps
    # the state: the layout comes from there
    code = textwrap.dedent("""
        import numpy
        import ZODB, wcfs  # and NOT tests/py: no wendelin classes
        from ZODB.FileStorage import FileStorage
        db = ZODB.DB(FileStorage(%(path)r, read_only=True))
        c = db.open()
        z = c.root()['A']
        wc = wcfs.WCFS.open(%(mnt)r)
        w = wc.connect(int.from_bytes(db.storage.lastTransaction(), 'big'))
        a = wcfs.array(w, z)
        print(type(z).__name__, a.shape, a.dtype, int(a[:10].sum()), int(a[-1]))
    """) % dict(path=served.path, mnt=served.mnt)
    out = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    n = 8 * BS // 8
    assert out.stdout.split() == ["ZBigArray", "(%d,)" % n, "int64", "45", str(n - 1)]


# ---- the README's example ----

def test_readme_example_runs_as_written():
    ex = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "examples", "quickstart.py")
    with open(ex) as f:
        code = f.read()
    readme = os.path.join(os.path.dirname(TESTS_PY), "..", "README.md")
    with open(readme) as f:
        assert code.strip() in f.read(), "README's example differs from examples/quickstart.py"
    env = dict(os.environ, PYTHONPATH=TESTS_PY)
    out = subprocess.run([sys.executable, ex], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == [
        "before: 1048576.0", "after: 2097152.0 old view: 1048576.0"]


def test_gil_released_while_waiting(served):
    # connect to a state the server reaches only after a commit that this
    # thread makes meanwhile: with the GIL held by the waiting call, the
    # commit could not run
    import threading
    zs = zarrays(served.path)
    got = {}

    def later():
        try:
            c = served.wc.connect(served.at0 + (1 << 20))  # ahead of head
            got["at"] = c.at()
            c.close()
        except BaseException as e:
            got["err"] = e

    t = threading.Thread(target=later)
    t.start()
    time.sleep(0.2)
    assert t.is_alive(), "connect did not wait for head/at"
    at1 = 0
    for _ in range(3):  # a tid 1<<20 ahead: commits until head passes it
        at1 = commit_blocks(served.path, "A", [(slice(0, 1), 9)])
        time.sleep(0.05)
        if at1 >= served.at0 + (1 << 20):
            break
    t.join(60)
    assert not t.is_alive()
    assert "err" not in got, got.get("err")
    assert got["at"] == served.at0 + (1 << 20)
    del zs
