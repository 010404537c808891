#!/usr/bin/env python3
"""Check the wendelin.bigfile.file_zodb stand-in against the fixture databases
written by the real wendelin.core (shared/testdata/zblk/*/zblk.fs).

Usage: check_fixtures.py [TESTDATA_DIR]
    TESTDATA_DIR defaults to $WCFS_ZBLK_TESTDATA or <repo>/testdata/zblk.
Each database is copied to a temporary directory and opened read-only with
Python ZODB; the sha256 of the whole ZBigFile and of each block must equal the
values from shared/testdata/zblk/README.md. Exit 1 on any mismatch.
"""

import glob
import hashlib
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ZODB                                            # noqa: E402
from zfsutil import open_readonly                      # noqa: E402
from wendelin.bigfile.file_zodb import (               # noqa: E402
    ZBigFile, ZBlk0, ZBlk1, load_block, file_size)

BLKSIZE = 2 * 1024 * 1024
SHA_FILE = 'f5e88fa297e175efe54852026392a5f0ff5b6b5151ef63bb4cf85245a09b1eef'
SHA_ZERO = '5647f05ec18958947d32874eeb788fa396a05d0bab7c1b71f112ceb7e9b31eee'
SHA_BLK = [SHA_ZERO,
           'ef707ce8ef33f13b4fa2761e9f8f1af5fad5f5ac55b0f13536dcec122e34612c',
           SHA_ZERO,
           'af8030ee7eb050d7679286cb0ba3731f57ac6692ad1652efc11aeb205cde103e']
TIDS = ['0285cbac20da7419', '0285cbac3851eb99']


def default_testdata():
    env = os.environ.get('WCFS_ZBLK_TESTDATA')
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    for cand in (os.path.join(repo, 'testdata', 'zblk'),
                 os.path.join(repo, '..', 'shared', 'testdata', 'zblk')):
        if os.path.isdir(cand):
            return os.path.abspath(cand)
    return os.path.join(repo, 'testdata', 'zblk')


def check_one(fsdir, errs):
    kind = os.path.basename(fsdir)

    def err(msg):
        errs.append('%s: %s' % (kind, msg))
        print('FAIL %s: %s' % (kind, msg))

    with tempfile.TemporaryDirectory() as tmp:
        for name in ('zblk.fs', 'zblk.fs.index'):
            src = os.path.join(fsdir, name)
            if os.path.exists(src):
                shutil.copyfile(src, os.path.join(tmp, name))
        ro = open_readonly(os.path.join(tmp, 'zblk.fs'))
        stor = ro.storage
        tids = [t.tid.hex() for t in stor.iterator()]
        if tids != TIDS:
            err('transactions %r != %r' % (tids, TIDS))
        db = ZODB.DB(stor)
        try:
            conn = db.open()
            root = conn.root()
            zf = root['zbigf']
            if not isinstance(zf, ZBigFile):
                err('root["zbigf"] is %r' % (zf,))
                return
            if zf._p_oid != b'\0' * 7 + b'\1':
                err('zbigf oid %r' % zf._p_oid)
            if zf.blksize != BLKSIZE:
                err('blksize %d' % zf.blksize)
            if type(root['zblk0']) is not ZBlk0 or type(root['zblk1']) is not ZBlk1:
                err('zblk0/zblk1 types: %r %r' % (root['zblk0'], root['zblk1']))
            if zf.blktab.get(1) is not root['zblk0'] or zf.blktab.get(3) is not root['zblk1']:
                err('blktab does not map 1->zblk0, 3->zblk1')
            for zb in (root['zblk0'], root['zblk1']):
                zb._p_activate()
                if zb._p_serial.hex() != TIDS[1]:
                    err('serial of %r: %s' % (zb, zb._p_serial.hex()))
            size = file_size(zf)
            if size != 4 * BLKSIZE:
                err('size %d != %d' % (size, 4 * BLKSIZE))
            h = hashlib.sha256()
            for blk in range(size // BLKSIZE):
                data = load_block(zf, blk)
                if len(data) != BLKSIZE:
                    err('block %d: len %d' % (blk, len(data)))
                got = hashlib.sha256(data).hexdigest()
                if got != SHA_BLK[blk]:
                    err('block %d: sha256 %s != %s' % (blk, got, SHA_BLK[blk]))
                h.update(data)
            if h.hexdigest() != SHA_FILE:
                err('file sha256 %s != %s' % (h.hexdigest(), SHA_FILE))
            # the ZBlk1 chunk layout (README of wendelin-formats §7)
            z1 = root['zblk1']
            if len(z1.loadblkdata()) != 2097145:
                err('ZBlk1 data length %d != 2097145' % len(z1.loadblkdata()))
            if len(root['zblk0'].loadblkdata()) != 16384:
                err('ZBlk0 data length %d' % len(root['zblk0'].loadblkdata()))
            conn.close()
        finally:
            db.close()
            ro.close()
    if not any(e.startswith(kind + ':') for e in errs):
        print('ok   %s' % kind)


def main(argv):
    tdir = argv[1] if len(argv) > 1 else default_testdata()
    dirs = sorted(d for d in glob.glob(os.path.join(tdir, '*'))
                  if os.path.isfile(os.path.join(d, 'zblk.fs')))
    if not dirs:
        print('no fixture databases under %s' % tdir)
        return 1
    errs = []
    for d in dirs:
        try:
            check_one(d, errs)
        except Exception as e:      # a crash is a failure too
            errs.append('%s: %r' % (d, e))
            print('FAIL %s: %s: %s' % (os.path.basename(d), type(e).__name__, e))
    print('%d fixture(s), %d error(s)' % (len(dirs), len(errs)))
    return 1 if errs else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
