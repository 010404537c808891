#!/usr/bin/env python3
"""Generate a FileStorage database full of ZBigFiles with real Python ZODB.

Usage: gen_db.py PATH [--seed N] [--txns N] [--big-blocks N] [--dangling]
                      [--events OUT.json] [--force]

Deterministic for a given seed and options: the clock ZODB uses to allocate
tids is replaced by a fake one (starting 2025-01-01T00:00:00Z, +1.25 s per
transaction), so the same arguments produce a byte-identical PATH.

See README.md for what the database contains.
"""

import argparse
import base64
import json
import os
import random
import struct
import sys
import time as _time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import transaction                                         # noqa: E402
import ZODB                                                # noqa: E402
import ZODB.BaseStorage                                    # noqa: E402
import ZODB.utils                                          # noqa: E402
from BTrees.LOBTree import LOBTree                         # noqa: E402
from persistent.mapping import PersistentMapping           # noqa: E402
from ZODB.Connection import TransactionMetaData            # noqa: E402
from ZODB.FileStorage import FileStorage                   # noqa: E402

from btutil import tree_nodes                              # noqa: E402
from wendelin.bigfile.file_zodb import (                   # noqa: E402
    ZBigFile, ZBlk0, ZBlk1, CHUNKSIZE, set_block, del_block, load_block,
    file_size)

MIN_TXNS = 30


# ---- deterministic clock for tid allocation ----

class FakeClock(object):
    def __init__(self, start=1735689600.0, step=1.25):    # 2025-01-01 00:00:00 UTC
        self.now = start
        self.step = step

    def time(self):
        self.now += self.step
        return self.now


def install_fake_clock(clock):
    fake = types.SimpleNamespace(time=clock.time, gmtime=_time.gmtime,
                                 sleep=_time.sleep, localtime=_time.localtime)
    ZODB.BaseStorage.time = fake
    ZODB.utils.time = fake


# ---- the generator ----

class Gen(object):
    def __init__(self, path, seed, ntxn, big_blocks, dangling):
        self.path = path
        self.rng = random.Random(seed)
        self.ntxn = ntxn
        self.big_blocks = big_blocks
        self.dangling = dangling
        self.events = []            # [{kind, tid, ...}]
        self.k = 0                  # transactions committed by us so far
        self.open()

    # -- db plumbing --

    def open(self):
        self.storage = FileStorage(self.path)
        self.db = ZODB.DB(self.storage, cache_size=200000,
                          large_record_size=1 << 30)
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(self.tm)
        self.root = self.conn.root()

    def close(self):
        self.conn.close()
        self.db.close()

    def begin(self):
        self.tm.begin()             # also syncs the connection (invalidations)

    def commit(self, desc, **event):
        prev = self.storage.lastTransaction()
        txn = self.tm.get()
        txn.note(u'gen_db %d: %s' % (self.k + 1, desc))
        self.tm.commit()
        tid = self.storage.lastTransaction()
        if tid == prev:
            # nothing changed -> ZODB wrote no transaction; force a change so
            # that every scenario step is a real transaction
            assert not event, desc
            self.begin()
            zf = self.root['b']
            blk = self.rng.randrange(0, 8)
            self.write(zf, blk, 'full')
            self.tm.get().note(u'gen_db %d: %s (+forced b:w%d)' % (self.k + 1, desc, blk))
            self.tm.commit()
            tid = self.storage.lastTransaction()
            assert tid != prev
        self.k += 1
        if event:
            event = dict(event)
            event['tid'] = tid.hex()
            event['txn'] = self.k
            self.events.append(event)
        return tid

    def undo_id(self, tid):
        for d in self.db.undoLog(0, 1000):
            if base64.decodebytes(d['id'] + b'\n') == tid:
                return d['id']
        raise KeyError('tid %s not in undoLog' % tid.hex())

    # -- data generation --

    def blkdata(self, blksize, tag, pattern=None):
        """random block content; tag (int) is put at the start when non-zero."""
        rng = self.rng
        if pattern is None:
            pattern = rng.choice(['full', 'prefix', 'prefix', 'sparse', 'sparse',
                                  'zero', 'ztail'])
        if pattern == 'zero':
            return b''
        if pattern == 'full':
            data = bytearray(rng.randbytes(blksize))
        elif pattern == 'ztail':        # non-zero up to a random point, zero tail
            data = bytearray(rng.randbytes(rng.randint(1, blksize)))
            data += bytes(blksize - len(data))
        elif pattern == 'prefix':
            n = rng.randint(1, max(1, min(blksize, 3 * CHUNKSIZE)))
            data = bytearray(rng.randbytes(n)) + bytes(blksize - n)
        elif pattern == 'sparse':       # a few non-zero islands, rest zeros
            data = bytearray(blksize)
            for _ in range(rng.randint(1, 6)):
                n = rng.randint(1, min(blksize, 300))
                off = rng.randrange(0, blksize - n + 1)
                data[off:off + n] = rng.randbytes(n)
        else:
            raise ValueError(pattern)
        hdr = struct.pack('>Q', tag & 0xffffffffffffffff)
        n = min(len(hdr), blksize)
        data[:n] = hdr[:n]
        return bytes(data)

    def fmt(self):
        return self.rng.choice(['ZBlk0', 'ZBlk1'])

    def write(self, zf, blk, pattern=None, fmt=None):
        data = self.blkdata(zf.blksize, (self.k + 1) << 32 | blk, pattern)
        return set_block(zf, blk, data, fmt or self.fmt())

    def patch(self, zf, blk):
        """small in-place change of an existing block, keeping its ZBlk type
        (for a ZBlk1 only one or two ZData change)."""
        zblk = zf.blktab.get(blk)
        if zblk is None:
            return self.write(zf, blk)
        data = bytearray(load_block(zf, blk))
        n = self.rng.randint(1, min(64, zf.blksize))
        off = self.rng.randrange(0, zf.blksize - n + 1)
        data[off:off + n] = self.rng.randbytes(n)
        fmt = 'ZBlk1' if isinstance(zblk, ZBlk1) else 'ZBlk0'
        return set_block(zf, blk, bytes(data), fmt)

    def random_ops(self, zf, nops):
        ops = []
        for _ in range(nops):
            nblk = file_size(zf) // zf.blksize
            r = self.rng.random()
            keys = list(zf.blktab.keys())
            if r < 0.40 or not keys:
                blk = self.rng.randrange(0, nblk + 3)
                self.write(zf, blk)
                ops.append('w%d' % blk)
            elif r < 0.65:
                blk = self.rng.choice(keys)
                self.patch(zf, blk)
                ops.append('p%d' % blk)
            elif r < 0.85:
                blk = self.rng.choice(keys)
                del_block(zf, blk)
                ops.append('d%d' % blk)
            elif r < 0.92:
                blk = keys[-1]
                del_block(zf, blk)          # file shrinks
                ops.append('t%d' % blk)
            else:
                blk = self.rng.choice(keys)
                set_block(zf, blk, b'', self.fmt())   # all-zero but present
                ops.append('z%d' % blk)
        return ops

    # -- scenario steps --

    def step_create(self):
        self.begin()
        r = self.root
        specs = [('a', 16384), ('b', 512), ('c', 65536), ('d', 2 * 1024 * 1024),
                 ('rebt', 4096), ('resz', 1024), ('tmp', 8192)]
        for name, blksize in specs:
            zf = r[name] = ZBigFile(blksize)
            if name == 'd':
                # one fully non-zero 2 MiB ZBlk1: 512 chunks -> multi-bucket chunktab
                self.write(zf, 1, 'full', 'ZBlk1')
                self.write(zf, 3, 'sparse', 'ZBlk1')
                self.write(zf, 4, 'sparse', 'ZBlk0')
                continue
            n = {'b': 40}.get(name, 6)
            for blk in range(n):
                if self.rng.random() < 0.2:
                    continue                # hole
                self.write(zf, blk, 'full' if blk == 0 else None,
                           'ZBlk0' if blk == 0 else None)
        self.commit('create files %s' % ' '.join(n for n, _ in specs),
                    kind='create', files=[n for n, _ in specs])

    def step_random(self, files=None):
        self.begin()
        names = files or self.rng.sample(['a', 'b', 'c', 'd', 'rebt', 'resz'],
                                         self.rng.randint(1, 3))
        desc = []
        for name in sorted(names):
            zf = self.root[name]
            nops = self.rng.randint(1, 5) if name != 'd' else 1
            if name == 'd':
                # keep the 2 MiB file cheap: patches and sparse writes only
                blk = self.rng.randrange(0, 6)
                if blk in zf.blktab and self.rng.random() < 0.7:
                    self.patch(zf, blk)
                    ops = ['p%d' % blk]
                else:
                    self.write(zf, blk, 'sparse', 'ZBlk1')
                    ops = ['w%d' % blk]
            else:
                ops = self.random_ops(zf, nops)
            desc.append('%s:%s' % (name, ','.join(ops)))
        self.commit('random ' + ' '.join(desc))

    def step_typechange(self):
        # rewrite a block committed as ZBlk0 earlier as ZBlk1 -> new ZBlk object
        self.begin()
        for name in ('a', 'b', 'c', 'rebt', 'resz'):
            zf = self.root[name]
            cand = [blk for blk, zblk in zf.blktab.items() if isinstance(zblk, ZBlk0)]
            if cand:
                break
        else:
            raise AssertionError('no ZBlk0 block to change type of')
        blk = cand[0]
        old = zf.blktab[blk]
        new = self.write(zf, blk, 'prefix', 'ZBlk1')
        assert isinstance(new, ZBlk1) and new is not old
        self.commit('%s: blk %d ZBlk0 -> ZBlk1' % (name, blk), kind='zblk_type_change',
                    file=name, blk=blk, old_zblk=old._p_oid.hex())
        self.events[-1]['new_zblk'] = new._p_oid.hex()

    def step_undo_data(self):
        # a data-changing transaction (new block + changed blocks of 'a' and
        # 'b'), immediately undone
        self.begin()
        zf = self.root['a']
        nblk = file_size(zf) // zf.blksize
        self.write(zf, nblk + 1, 'prefix', 'ZBlk0')          # new ZBlk + blktab change
        for blk in list(zf.blktab.keys())[:2]:
            self.patch(zf, blk)
        zb = self.root['b']
        for blk in list(zb.blktab.keys())[:3]:
            self.patch(zb, blk)
        tid = self.commit('a,b: changes that get undone', kind='undone_txn')
        self.begin()
        self.db.undo(self.undo_id(tid), self.tm.get())
        self.commit('undo %s' % tid.hex(), kind='undo', undone=tid.hex())

    def step_undo_create(self):
        # a transaction creating a ZBigFile, undone: its objects get deletion
        # records (data record with plen=0, back=0)
        self.begin()
        zf = self.root['undone'] = ZBigFile(4096)
        for blk in range(3):
            self.write(zf, blk, 'prefix')
        tid = self.commit('create file undone', kind='create_undone',
                          file='undone')
        self.events[-1]['oid'] = zf._p_oid.hex()
        self.begin()
        self.db.undo(self.undo_id(tid), self.tm.get())
        self.commit('undo %s (file creation)' % tid.hex(), kind='undo',
                    undone=tid.hex())
        self.begin()
        assert 'undone' not in self.root

    def step_replace_blktab(self):
        self.begin()
        zf = self.root['rebt']
        old = zf.blktab
        new = LOBTree()
        for blk, zblk in old.items():
            if blk % 2 == 0:
                new[blk] = zblk         # keep (same ZBlk objects)
        zf.blktab = new
        self.write(zf, 7, 'prefix')
        self.commit('rebt: blktab replaced', kind='blktab_replaced', file='rebt',
                    old_blktab=old._p_oid.hex())
        self.events[-1]['new_blktab'] = new._p_oid.hex()

    def step_change_blksize(self):
        self.begin()
        zf = self.root['resz']
        old = zf.blksize
        zf.blksize = old * 4       # existing ZBlk data stays valid (< new blksize)
        self.commit('resz: blksize %d -> %d' % (old, zf.blksize),
                    kind='blksize_changed', file='resz', old=old, new=zf.blksize)

    def collect_file_oids(self, zf):
        """every oid of a ZBigFile's object graph (file, tree nodes, ZBlk, chunktab, ZData)."""
        oids = [zf._p_oid]
        for node in tree_nodes(zf.blktab)[1]:
            oids.append(node._p_oid)
        for zblk in zf.blktab.values():
            oids.append(zblk._p_oid)
            if isinstance(zblk, ZBlk1):
                for node in tree_nodes(zblk.chunktab)[1]:
                    oids.append(node._p_oid)
                for zd in zblk.chunktab.values():
                    oids.append(zd._p_oid)
        assert all(o is not None for o in oids)
        return sorted(set(oids))

    def storage_delete(self, oids, desc, **event):
        """delete objects with FileStorage.deleteObject in a storage-level txn."""
        self.close()
        stor = FileStorage(self.path)
        try:
            t = TransactionMetaData(description=u'gen_db %d: %s' % (self.k + 1, desc))
            stor.tpc_begin(t)
            for oid in oids:
                _, serial = stor.load(oid)
                stor.deleteObject(oid, serial, t)
            stor.tpc_vote(t)
            stor.tpc_finish(t)
            tid = stor.lastTransaction()
        finally:
            stor.close()
        self.k += 1
        event = dict(event)
        event.update(tid=tid.hex(), txn=self.k, oids=[o.hex() for o in oids])
        self.events.append(event)
        self.open()
        return tid

    def step_delete_tmp(self):
        self.begin()
        zf = self.root['tmp']
        oids = self.collect_file_oids(zf)
        del self.root['tmp']
        self.commit('tmp: removed from root', kind='unlink', file='tmp',
                    oid=zf._p_oid.hex())
        self.storage_delete(oids, 'deleteObject of file tmp', kind='delete_objects',
                            file='tmp')

    def step_dangling(self):
        # a reachable ZBlk gets deleted: reading that block must fail
        self.begin()
        zf = self.root['dangle'] = ZBigFile(4096)
        self.write(zf, 0, 'prefix', 'ZBlk0')
        self.write(zf, 1, 'prefix', 'ZBlk0')
        self.commit('create file dangle')
        self.begin()
        oid = self.root['dangle'].blktab[1]._p_oid
        self.storage_delete([oid], 'deleteObject of a reachable ZBlk (dangle blk 1)',
                            kind='dangling', file='dangle', blk=1)

    def step_create_big(self):
        self.begin()
        zf = self.root['big'] = ZBigFile(64)
        n = self.big_blocks
        # placeholder value: never stored, every kept entry is replaced by a
        # real ZBlk below (set_block replaces values of a foreign type in place;
        # delete+reinsert would make BTrees drop buckets)
        dummy = object()
        # dense sequential insertion gives buckets of ~30 keys; then keep
        # ~1/4 of the keys: buckets keep some keys so the tree keeps its shape
        for blk in range(n):
            zf.blktab[blk] = dummy
        for blk in range(n):
            if blk % 4 != 0 and blk != n - 1:
                del zf.blktab[blk]
        for blk in list(zf.blktab.keys()):
            fmt = 'ZBlk1' if self.rng.random() < 0.1 else 'ZBlk0'
            self.write(zf, blk, self.rng.choice(['full', 'ztail', 'prefix']), fmt)
        assert dummy not in list(zf.blktab.values())
        depth = tree_nodes(zf.blktab)[0]
        assert depth >= 3, 'big: blktab depth %d < 3 (use more --big-blocks)' % depth
        self.commit('create file big (%d blocks, blktab depth %d)' % (n, depth),
                    kind='create', files=['big'], blktab_depth=depth)

    def step_big_random(self):
        self.begin()
        zf = self.root['big']
        rng = self.rng
        desc = []
        what = rng.choice(['bucketdel', 'writes', 'append', 'mixed'])
        keys = list(zf.blktab.keys())
        if what == 'bucketdel':
            # remove a whole key range -> emptied buckets disappear from the tree
            lo = rng.randrange(0, max(1, keys[-1] - 200))
            for blk in list(zf.blktab.keys(min=lo, max=lo + 150)):
                del zf.blktab[blk]
            desc.append('del[%d..%d]' % (lo, lo + 150))
        if what in ('writes', 'mixed'):
            for _ in range(rng.randint(5, 40)):
                blk = rng.randrange(0, keys[-1] + 1)
                if rng.random() < 0.5 and blk in zf.blktab:
                    self.patch(zf, blk)
                else:
                    self.write(zf, blk)
            desc.append('writes')
        if what in ('append', 'mixed'):
            start = keys[-1] + 1
            for blk in range(start, start + rng.randint(1, 100)):
                self.write(zf, blk, 'full')
            desc.append('append')
        if what == 'mixed':
            for blk in rng.sample(keys, 20):
                del_block(zf, blk)
            desc.append('holes')
        self.commit('big: ' + ' '.join(desc))

    def run(self):
        N = self.ntxn
        self.step_create()                                  # 1
        special = {
            4: self.step_typechange,
            7: self.step_undo_data,                         # 2 txns
            11: self.step_undo_create,                      # 2 txns
            15: self.step_replace_blktab,
            19: self.step_change_blksize,
            23: self.step_delete_tmp,                       # 2 txns
        }
        if self.dangling:
            special[27] = self.step_dangling                # 2 txns
        big_at = N - 6
        big = False
        while self.k < N:
            k1 = self.k + 1
            if k1 in special:
                special.pop(k1)()
            elif not big and k1 >= big_at:
                self.step_create_big()
                big = True
            elif big and self.rng.random() < 0.8:
                self.step_big_random()
            else:
                self.step_random()
        assert big, 'file big was not created (txns too small?)'
        assert not special, 'not all scenario steps ran (txns too small?)'
        # final sanity: blktab depth of big still >= 3
        self.begin()
        d = tree_nodes(self.root['big'].blktab)[0]
        assert d >= 3, d
        self.tm.abort()
        self.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('path')
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--txns', type=int, default=60,
                    help='number of transactions to commit after the root '
                         'creation (default 60, min %d)' % MIN_TXNS)
    ap.add_argument('--big-blocks', type=int, default=30600,
                    help='initial number of blocks (mostly holes) of file "big" '
                         '(blksize 64); must be enough for blktab depth >= 3')
    ap.add_argument('--dangling', action='store_true',
                    help='also delete a still referenced ZBlk (file "dangle")')
    ap.add_argument('--events', metavar='OUT.json',
                    help='write the list of special events (tids, oids) there')
    ap.add_argument('--force', action='store_true', help='overwrite PATH')
    args = ap.parse_args(argv)
    if args.txns < MIN_TXNS:
        ap.error('--txns must be >= %d' % MIN_TXNS)

    if os.path.exists(args.path):
        if not args.force:
            ap.error('%s exists (use --force)' % args.path)
    for sfx in ('', '.index', '.lock', '.tmp', '.old'):
        if os.path.exists(args.path + sfx):
            os.unlink(args.path + sfx)

    if os.path.exists(args.path + '.lock'):
        os.unlink(args.path + '.lock')
    install_fake_clock(FakeClock())
    t0 = _time.time()
    g = Gen(args.path, args.seed, args.txns, args.big_blocks, args.dangling)
    g.run()
    for sfx in ('.lock', '.tmp'):       # leave only PATH and PATH.index
        if os.path.exists(args.path + sfx):
            os.unlink(args.path + sfx)
    print('gen_db: %s: %d transactions (+ root creation), %d bytes, %.1fs'
          % (args.path, g.k, os.path.getsize(args.path), _time.time() - t0),
          file=sys.stderr)
    if args.events:
        with open(args.events, 'w') as f:
            json.dump({'events': g.events}, f, indent=1)
            f.write('\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
