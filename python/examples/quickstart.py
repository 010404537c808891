# A ZBigArray in a FileStorage, served by WCFS; two views of it, one
# before and one after a commit. (Run with the repository's tests/py on
# sys.path for the stand-in wendelin classes, or with wendelin.core.)
import sys, tempfile, numpy, transaction, ZODB
from ZODB.FileStorage import FileStorage
from wendelin.bigarray.array_zodb import ZBigArray, write
import wcfs

d = tempfile.mkdtemp()
path = d + "/Data.fs"
db = ZODB.DB(FileStorage(path))
zconn = db.open()
root = zconn.root()
root["A"] = A = ZBigArray((1 << 20,), numpy.float64)   # 8 MiB: 4 blocks
write(A, numpy.ones(1 << 20))
transaction.commit()

server = wcfs.start(path, mountpoint=d + "/mnt")       # python -m wcfs serve
wc = wcfs.WCFS.open(server.mountpoint)
wconn = wcfs.conn_of(zconn, wc)        # follows zconn's transactions
a = wcfs.array(wconn, root["A"])       # a numpy view of A, zero-copy
print("before:", a.sum())              # 1048576.0

old = wc.connect(wconn.at())           # a second view, kept where it is
a_old = wcfs.array(old, root["A"])

write(A, numpy.full(1 << 20, 2.0))     # change every block and commit
transaction.commit()                   # (zconn moves on, and so does a)
print("after:", a.sum(), "old view:", a_old.sum())   # 2097152.0 1048576.0

old.close()
zconn.close()                          # releases wconn and its arrays
db.close()
server.stop()
