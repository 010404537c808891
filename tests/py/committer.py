#!/usr/bin/env python3
"""Commit N transactions to a ZBigFile, for a reader that follows the database.

Usage: committer.py PATH --txns N [--delay-ms D] [--name NAME] [--blksize B]
                         [--nblk K]

Opens PATH read-write with Python ZODB (creating the database if needed) and
commits N transactions. PATH may also be zeo://HOST:PORT (or zeo://SOCKET):
then the commits go through that ZEO server (storage "1") with ZEO's client. The file is root[NAME] (default "committer"); it is
created with blksize B (default 8192) in the first transaction if missing.
After each commit the new tid is printed as 16 lowercase hex digits on its own
line (stdout, flushed); "done" is printed at the end. D milliseconds (default
0) are slept after each commit. Diagnostics go to stderr.

Content, with seq = 1, 2, ... counting commits over the whole life of the file
(it continues from the value stored in block 0 when the file exists):
  - block 0 := u64 big-endian seq, then b"committer", then zeros
              (always rewritten: seq changes, so every transaction changes it)
  - block 1 + (seq % K)        := pattern(seq, blk)   (K = --nblk, default 16)
  - block 1 + ((seq * 7) % K)  := pattern(seq, blk)   (same block possible)
  - every 5th seq: block 1 + ((seq + 3) % K) is deleted (becomes a hole)
    unless it was written in this transaction
  where pattern(seq, blk) = (u64be(seq) + u64be(blk)) repeated to blksize, cut
  to blksize. Block 0 is always a ZBlk0; the other blocks alternate ZBlk0 (odd
  seq) and ZBlk1 (even seq), so some blocks change ZBlk type.
A reader at tid T (the k-th printed tid) therefore sees seq == k + seq0 in
block 0, where seq0 is the value before this run (0 for a new file).
"""

import argparse
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import transaction                                     # noqa: E402
import ZODB                                            # noqa: E402
from ZODB.FileStorage import FileStorage               # noqa: E402
from wendelin.bigfile.file_zodb import (               # noqa: E402
    ZBigFile, set_block, del_block, load_block)


def pattern(seq, blk, blksize):
    unit = struct.pack('>QQ', seq, blk)
    n = blksize // len(unit) + 1
    return (unit * n)[:blksize]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('path')
    ap.add_argument('--txns', type=int, required=True)
    ap.add_argument('--delay-ms', type=float, default=0)
    ap.add_argument('--name', default='committer')
    ap.add_argument('--blksize', type=int, default=8192)
    ap.add_argument('--nblk', type=int, default=16)
    args = ap.parse_args(argv)

    if args.path.startswith('zeo://'):
        import ZEO
        addr = args.path[len('zeo://'):]
        if '/' not in addr and ':' in addr:
            host, port = addr.rsplit(':', 1)
            addr = (host, int(port))
        stor = ZEO.client(addr, wait_timeout=30)
    else:
        stor = FileStorage(args.path)
    db = ZODB.DB(stor)
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    try:
        for _ in range(args.txns):
            tm.begin()
            root = conn.root()
            zf = root.get(args.name)
            if zf is None:
                zf = root[args.name] = ZBigFile(args.blksize)
                seq0 = 0
            else:
                seq0 = struct.unpack('>Q', load_block(zf, 0)[:8])[0] \
                    if 0 in zf.blktab else 0
            seq = seq0 + 1
            bs = zf.blksize
            K = args.nblk
            hdr = struct.pack('>Q', seq) + b'committer'
            set_block(zf, 0, hdr[:bs], 'ZBlk0')
            fmt = 'ZBlk0' if seq % 2 else 'ZBlk1'
            written = set()
            for blk in (1 + seq % K, 1 + (seq * 7) % K):
                set_block(zf, blk, pattern(seq, blk, bs), fmt)
                written.add(blk)
            if seq % 5 == 0:
                blk = 1 + (seq + 3) % K
                if blk not in written:
                    del_block(zf, blk)
            tm.get().note(u'committer seq %d' % seq)
            tm.commit()
            tid = stor.lastTransaction()
            sys.stdout.write(tid.hex() + '\n')
            sys.stdout.flush()
            if args.delay_ms > 0:
                time.sleep(args.delay_ms / 1000.0)
    finally:
        conn.close()
        db.close()
    sys.stdout.write('done\n')
    sys.stdout.flush()
    return 0


if __name__ == '__main__':
    sys.exit(main())
