"""WCFS for Python: numpy arrays of ZODB ZBigArrays that keep their view.

A WCFS server serves every wendelin.core ZBigFile of a ZODB database as a
file, so that all processes of a machine share one OS page cache of its
data; each client still sees the database exactly as of its own
transaction: the server tells it, before newer data could show, to *pin*
changed blocks to the older revision. This package is such a client (the
Rust ``client`` crate underneath), and carries the server too.

The API mirrors wendelin.core's ``wendelin.wcfs``::

    import wcfs
    wc = wcfs.join(zurl)                # the server of zurl (autostarted)
    conn = wc.connect(at)               # a view as of transaction `at`
    f = conn.open(oid)                  # a ZBigFile of that view
    m = f.mmap(0, 4)                    # blocks [0, 4), read-only
    a = numpy.frombuffer(m, numpy.uint8)  # zero-copy, stays at `at`
    conn.resync(at2)                    # move the view (arrays follow)

and with ZODB::

    wconn = wcfs.conn_of(zconn, wc)     # follows zconn's transactions
    a = wcfs.array(wconn, root['A'])    # ndarray of a ZBigArray

Oids and tids are accepted as ints, 8-byte strings (ZODB's form) or 16 hex
digits; the package returns them as ints.

Functions that manage the server: :func:`join`, :func:`serve`,
:func:`start`, :func:`stop`, :func:`status`. The server runs as
``python -m wcfs serve <zurl>``; ``python -m wcfs --help`` lists the rest.
"""

from ._wcfs import Conn, Error, FileH, ForkedError, Mapping  # noqa: F401
from ._wcfs import WCFS as _WCFS
from ._wcfs import default_mountpoint
from ._server import Server, join, serve, start, status, stop
from ._array import array, zbigarray_layout
from ._zsync import conn_of

WCFS = _WCFS

__all__ = [
    "WCFS", "Conn", "FileH", "Mapping", "Error", "ForkedError",
    "Server", "join", "serve", "start", "stop", "status",
    "default_mountpoint", "array", "zbigarray_layout", "conn_of",
]
