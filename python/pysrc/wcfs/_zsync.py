"""A WCFS view that follows a ZODB connection (wendelin.core's wczsync).

:func:`conn_of` gives, for a ZODB ``Connection``, the WCFS ``Conn`` at the
same database state, and keeps it there: whenever the connection moves to
a new transaction (``transaction.begin()``, ``sync()``, the end of a
transaction, being reopened from the pool) the WCFS view resyncs to the
connection's new state *inside* ZODB's own ``newTransaction`` step, before
any user code of that transaction runs; when the connection is closed the
WCFS view is released (its arrays must not be used after that: their
memory is unmapped), and a reopened connection gets a new one.

How: the connection's ``newTransaction`` is wrapped on the instance (ZODB
calls it by attribute lookup from every path above), and an
``onCloseCallback`` releases the view. A ZODB connection's state is
``zconn._storage._start - 1`` (its MVCC snapshot starts after that tid).
"""

import threading
import weakref
from typing import Any

from . import _wcfs

# guards the creation of a connection's _Sync (kept on the connection
# itself, as `_wcfs_sync`: it lives and dies with it)
_syncs_lock = threading.Lock()


def zconn_at(zconn: Any) -> int:
    """The database state a ZODB connection views, as an int tid."""
    start = zconn._storage._start
    if start is None:
        raise _wcfs.Error("ZODB connection %r has no view yet (not opened?)"
                          % (zconn,))
    return int.from_bytes(start, "big") - 1


class _Sync:
    def __init__(self, zconn: Any, wc: "_wcfs.WCFS"):
        self.wc = wc
        self.wconn = None
        self.lock = threading.Lock()
        zref = weakref.ref(zconn)
        orig = zconn.newTransaction   # the bound method of the class

        def newTransaction(transaction, sync=True):
            orig(transaction, sync)
            z = zref()
            if z is not None:
                self.follow(z)

        zconn.newTransaction = newTransaction

    def follow(self, zconn: Any) -> "_wcfs.Conn":
        """Bring the view to `zconn`'s state (making it if needed)."""
        at = zconn_at(zconn)
        with self.lock:
            if self.wconn is None:
                self.wconn = self.wc.connect(at)
                zconn.onCloseCallback(self.release)
            elif self.wconn.at() != at:
                self.wconn.resync(at)
            return self.wconn

    def release(self) -> None:
        with self.lock:
            w, self.wconn = self.wconn, None
        if w is not None:
            w.close()


def conn_of(zconn: Any, wc: "_wcfs.WCFS") -> "_wcfs.Conn":
    """The WCFS connection (through server `wc`) at ZODB connection
    `zconn`'s database state, kept in sync with it from now on (module
    docs). The same object is returned until `zconn` is closed."""
    with _syncs_lock:
        s = zconn.__dict__.get("_wcfs_sync")
        if s is None:
            s = zconn._wcfs_sync = _Sync(zconn, wc)
    return s.follow(zconn)
