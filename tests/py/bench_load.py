#!/usr/bin/env python3
"""Time loading every block of a ZBigFile through Python ZODB.

Usage: bench_load.py PATH OID [--cache-size N]

OID: the ZBigFile's oid in hex (16 digits; a "0x" prefix and fewer digits are
accepted), or "root:NAME" for the ZBigFile stored under key NAME of the root
mapping.

PATH is opened read-only (nothing is written next to it). Pass 1 loads every
block once (warms the OS page cache; not timed). Pass 2 opens a fresh
FileStorage + DB + connection (so the ZODB object cache is cold) and times,
with time.perf_counter, getting the ZBigFile from the connection and
load_block() of blocks 0 .. size/blksize-1 at the latest state (holes count
as blocks; they cost only a blktab lookup). Opening the storage (index load)
is not timed. The ZODB cache is big enough for all objects of the file.

Prints one JSON line: {"blocks": n, "bytes": total, "seconds": s}
(bytes = n * blksize).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ZODB                                            # noqa: E402
from zfsutil import open_readonly                      # noqa: E402
from wendelin.bigfile.file_zodb import (               # noqa: E402
    ZBigFile, load_block, file_size)


def parse_oid(s, path):
    if not s.startswith('root:'):
        t = s[2:] if s.lower().startswith('0x') else s
        if not t or len(t) > 16:
            raise SystemExit('bench_load: invalid oid %r' % s)
        return int(t, 16).to_bytes(8, 'big')
    s = s[len('root:'):]
    ro = open_readonly(path)
    db = ZODB.DB(ro.storage)
    try:
        conn = db.open()
        oid = conn.root()[s]._p_oid
        conn.close()
        return oid
    finally:
        db.close()
        ro.close()


def one_pass(path, oid, cache_size):
    ro = open_readonly(path)
    db = ZODB.DB(ro.storage, cache_size=cache_size)
    try:
        conn = db.open()
        t0 = time.perf_counter()
        zf = conn.get(oid)
        if not isinstance(zf, ZBigFile):
            raise SystemExit('bench_load: %s is not a ZBigFile (%s)'
                             % (oid.hex(), type(zf).__name__))
        n = file_size(zf) // zf.blksize
        total = 0
        for blk in range(n):
            total += len(load_block(zf, blk))
        dt = time.perf_counter() - t0
        conn.close()
        return n, total, dt
    finally:
        db.close()
        ro.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('path')
    ap.add_argument('oid')
    ap.add_argument('--cache-size', type=int, default=1000000,
                    help='ZODB cache size in objects (default 1000000)')
    args = ap.parse_args(argv)
    oid = parse_oid(args.oid, args.path)
    one_pass(args.path, oid, args.cache_size)              # warm OS page cache
    n, total, dt = one_pass(args.path, oid, args.cache_size)
    print(json.dumps({'blocks': n, 'bytes': total, 'seconds': round(dt, 6)}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
