"""Core of dump_db.py / check_db.py: compute the JSON "truth" of a database.

Schema: see README.md ("dump JSON schema"). Everything is computed with Python
ZODB (FileStorage, Connection, BTrees) and the wendelin.bigfile.file_zodb
stand-in, revision by revision in tid order. To stay fast, results are reused
from the previous revision unless an object they were computed from changed in
the current transaction (exact: the state at revision i is the state at i-1
plus the records of transaction i).
"""

import hashlib
import random
import sys
from collections import deque

import zfsutil                                           # noqa: F401  (sys.path)
import ZODB
from BTrees.check import check as btree_check
from ZODB.POSException import POSKeyError
from ZODB.serialize import referencesf
from ZODB.utils import get_pickle_metadata, p64, u64

from btutil import tree_nodes
from wendelin.bigfile.file_zodb import (
    ZBigFile, ZBlk0, ZBlk1, blk_data, BlkError)

FORMAT = 'wcfs-interop-dump/1'
ZBIGFILE_CLASS = 'wendelin.bigfile.file_zodb.ZBigFile'
Z64 = b'\0' * 8


def h(b):
    return None if b is None else b.hex()


def sha(data):
    return hashlib.sha256(data).hexdigest()


def class_of(data):
    try:
        mod, name = get_pickle_metadata(data)
        return '%s.%s' % (mod, name)
    except Exception:
        return None


def _err(e):
    return '%s: %s' % (type(e).__name__, e)


class _Always(object):
    """dependency set that intersects every change set."""

    def isdisjoint(self, other):
        return False


ALWAYS = _Always()


class Dumper(object):
    def __init__(self, storage, check_trees=False, sample=300, seed=0,
                 progress=False, log=None):
        self.stor = storage
        self.check_trees = check_trees
        self.sample = sample            # number of oids in "loadbefore" (-1: all)
        self.seed = seed
        self.progress = progress
        self.tree_errors = []           # [(tid, what, message)]
        self.consistency_errors = []    # [message]
        self.log = log or (lambda msg: print(msg, file=sys.stderr))

    # ---- pass 1: transaction records ----

    def scan(self):
        txns = []
        history = {}                # oid -> [rev dict]
        zbf = set()
        for t in self.stor.iterator():
            oids = []
            for r in t:
                oids.append(r.oid)
                if r.data is None:
                    rev = {'tid': h(r.tid), 'deleted': True, 'sha256': None,
                           'len': None, 'class': None, 'data_tid': h(r.data_txn)}
                else:
                    klass = class_of(r.data)
                    rev = {'tid': h(r.tid), 'deleted': False, 'sha256': sha(r.data),
                           'len': len(r.data), 'class': klass,
                           'data_tid': h(r.data_txn)}
                    if klass == ZBIGFILE_CLASS:
                        zbf.add(r.oid)
                history.setdefault(r.oid, []).append(rev)
            ext = t.extension_bytes if hasattr(t, 'extension_bytes') else b''
            txns.append({'tid': h(t.tid), 'status': t.status,
                         'user': _text(t.user), 'description': _text(t.description),
                         'extension_sha256': sha(ext) if ext else None,
                         'oids': [h(o) for o in oids],
                         '_tid': t.tid, '_oids': set(oids)})
        self.txns = txns
        self.history = history
        self.zbigfile_oids = sorted(zbf)

    # ---- object level ----

    def objects_json(self):
        out = []
        for oid in sorted(self.history):
            out.append({'oid': h(oid), 'revisions': self.history[oid]})
        return out

    def check_chains(self):
        """loadBefore right after each record of every oid must return that
        record (checks the `prev` back-chain against the forward scan)."""
        stor = self.stor
        for oid, revs in self.history.items():
            checks = [(revs[0]['tid'], None)]       # just before creation
            for i, rev in enumerate(revs):
                nxt = revs[i + 1]['tid'] if i + 1 < len(revs) else None
                checks.append((rev['tid'], (rev, nxt)))
            for tidhex, want in checks:
                t = u64(bytes.fromhex(tidhex))
                before = p64(t + 1) if want is not None else p64(t)
                got = _load_before(stor, oid, before)
                if want is None:
                    ok = got is None
                    wantj = None
                else:
                    rev, nxt = want
                    if rev['deleted']:
                        wantj = 'deleted'
                    else:
                        wantj = {'serial': rev['tid'], 'next_serial': nxt,
                                 'sha256': rev['sha256'], 'len': rev['len']}
                    ok = got == wantj
                if not ok:
                    self.consistency_errors.append(
                        'oid %s: loadBefore(%s) = %r, but the transaction scan says %r'
                        % (h(oid), h(before), got, wantj))

    def loadbefore_json(self, oids=None):
        explicit = oids is not None
        oids = sorted(oids) if explicit else sorted(self.history)
        if not explicit and self.sample >= 0 and len(oids) > self.sample:
            # always: root, ZBigFiles, LOBTree nodes, objects that ever had a
            # deletion record or a backpointer; fill up with a deterministic
            # random sample of the other oids
            must = {Z64}
            must.update(self.zbigfile_oids)
            for oid, revs in self.history.items():
                if any(r['deleted'] or r['data_tid'] for r in revs):
                    must.add(oid)
                if any(r['class'] in ('BTrees.LOBTree.LOBTree',) for r in revs):
                    must.add(oid)
            rest = [o for o in oids if o not in must]
            k = max(0, self.sample - len(must))
            rng = random.Random(self.seed)
            pick = sorted(rng.sample(rest, min(k, len(rest))))
            oids = sorted(set(must) | set(pick))
        out = []
        for oid in oids:
            at = []
            if oid not in self.history:     # never existed (not in the index)
                out.append({'oid': h(oid), 'at': [None] * len(self.txns)})
                continue
            for t in self.txns:
                before = p64(u64(t['_tid']) + 1)
                at.append(_load_before(self.stor, oid, before))
            out.append({'oid': h(oid), 'at': at})
        return out

    # ---- pass 2: ZBigFiles at every revision ----

    def files(self):
        stor = self.stor
        out = []
        if not self.txns:
            return out
        db = ZODB.DB(stor, cache_size=100000, historical_pool_size=2,
                     historical_cache_size=100000)
        try:
            reach_deps = None       # oids visited by the reachability walk
            reachable = set()
            fstate = {}             # file oid -> _FileState
            zcache = {}             # (zblk oid, blksize) -> (sha, deps)
            zrdeps = {}             # dep oid -> set of zcache keys
            nt = len(self.txns)
            for i, t in enumerate(self.txns):
                tid = t['_tid']
                changed = t['_oids']
                before = p64(u64(tid) + 1)
                # invalidate
                for oid in changed:
                    for key in zrdeps.pop(oid, ()):
                        zcache.pop(key, None)
                if reach_deps is None or not reach_deps.isdisjoint(changed):
                    reachable, reach_deps = self._reachable(before)
                conn = _LazyConn(db, before)
                try:
                    for foid in sorted(reachable | set(self.zbigfile_oids)):
                        st = fstate.get(foid)
                        if st is None or not st.deps.isdisjoint(changed):
                            st = fstate[foid] = self._walk_file(conn, foid, before, tid)
                        entry = self._entry(conn, st, tid, zcache, zrdeps)
                        entry['reachable'] = foid in reachable
                        out.append(entry)
                finally:
                    conn.close()
                if self.progress and (i % 10 == 9 or i == nt - 1):
                    self.log('dump: %d/%d revisions' % (i + 1, nt))
        finally:
            db.close()
        return out

    def _reachable(self, before):
        """ZBigFile oids reachable from the root (not descending into ZBigFiles)."""
        seen = set()
        files = set()
        q = deque([Z64])
        while q:
            oid = q.popleft()
            if oid in seen:
                continue
            seen.add(oid)
            try:
                r = self.stor.loadBefore(oid, before)
            except POSKeyError:
                continue
            if r is None:
                continue
            data = r[0]
            if class_of(data) == ZBIGFILE_CLASS:
                files.add(oid)
                continue
            try:
                refs = referencesf(data)
            except Exception:
                continue
            for ref in refs:
                if ref not in seen:
                    q.append(ref)
        return files, seen

    def _walk_file(self, conn, foid, before, tid):
        st = _FileState(foid)
        try:
            r = self.stor.loadBefore(foid, before)
        except POSKeyError:
            st.status = 'deleted'
            st.deps = {foid}
            return st
        if r is None:
            st.status = 'absent'
            st.deps = {foid}
            return st
        st.serial = h(r[1])
        klass = class_of(r[0])
        if klass != ZBIGFILE_CLASS:
            st.status = 'error'
            st.error = 'not a ZBigFile: %s' % klass
            st.deps = {foid}
            return st
        try:
            zf = conn.get().get(foid)
            zf._p_activate()
            if not isinstance(zf, ZBigFile):
                raise BlkError('not a ZBigFile: %r' % (zf,))
            blksize, blktab = zf.blksize, zf.blktab
            if not isinstance(blksize, int) or blksize <= 0:
                raise BlkError('invalid blksize %r' % (blksize,))
            from BTrees.LOBTree import LOBTree
            if not isinstance(blktab, LOBTree):
                raise BlkError('blktab is %s, not LOBTree' % type(blktab).__name__)
            depth, nodes = tree_nodes(blktab)
            deps = {foid}
            deps.update(n._p_oid for n in nodes)
            if self.check_trees:
                try:
                    btree_check(blktab)
                except AssertionError as e:
                    self.tree_errors.append((h(tid), 'blktab %s of file %s'
                                             % (h(blktab._p_oid), h(foid)), str(e)))
            zblk = {}
            for blk, z in blktab.items():
                zblk[blk] = z._p_oid if z is not None else None
            st.status = 'ok'
            st.blksize = blksize
            st.blktab = h(blktab._p_oid)
            st.depth = depth
            st.zblk = zblk
            st.nblk = (max(zblk) + 1) if zblk else 0
            st.deps = deps
        except Exception as e:
            st.status = 'error'
            st.error = _err(e)
            st.deps = ALWAYS
        return st

    def _entry(self, conn, st, tid, zcache, zrdeps):
        e = {'tid': h(tid), 'oid': h(st.oid), 'status': st.status}
        if st.status != 'ok':
            if st.error:
                e['error'] = st.error
            if st.serial:
                e['serial'] = st.serial
            return e
        e['serial'] = st.serial
        e['blksize'] = st.blksize
        e['size'] = st.nblk * st.blksize
        e['blktab'] = st.blktab
        e['blktab_depth'] = st.depth
        blksize = st.blksize
        hole = _zero_sha(blksize)
        blocks = []
        zoids = []
        errors = {}
        for blk in range(st.nblk):
            zoid = st.zblk.get(blk)
            if zoid is None:
                blocks.append(hole)
                zoids.append(None)
                continue
            zoids.append(h(zoid))
            key = (zoid, blksize)
            c = zcache.get(key)
            if c is None:
                try:
                    s, deps = self._zblk_sha(conn, zoid, blksize, tid)
                except Exception as ex:
                    blocks.append(None)
                    errors[str(blk)] = _err(ex)
                    continue
                zcache[key] = s
                for d in deps:
                    zrdeps.setdefault(d, set()).add(key)
                c = s
            blocks.append(c)
        e['blocks'] = blocks
        e['zblk'] = zoids
        if errors:
            e['block_errors'] = errors
        return e

    def _zblk_sha(self, conn, zoid, blksize, tid):
        zblk = conn.get().get(zoid)
        zblk._p_activate()
        deps = {zoid}
        if isinstance(zblk, ZBlk1):
            from BTrees.IOBTree import IOBTree
            if not isinstance(zblk.chunktab, IOBTree):
                raise BlkError('ZBlk1 chunktab is %s' % type(zblk.chunktab).__name__)
            _, nodes = tree_nodes(zblk.chunktab)
            deps.update(n._p_oid for n in nodes)
            for zd in zblk.chunktab.values():
                if zd is not None and getattr(zd, '_p_oid', None) is not None:
                    deps.add(zd._p_oid)
            if self.check_trees:
                try:
                    btree_check(zblk.chunktab)
                except AssertionError as e:
                    self.tree_errors.append((h(tid), 'chunktab %s of ZBlk1 %s'
                                             % (h(zblk.chunktab._p_oid), h(zoid)), str(e)))
        elif not isinstance(zblk, ZBlk0):
            raise BlkError('%s is not a ZBlk (%s)' % (h(zoid), type(zblk).__name__))
        data = blk_data(zblk, blksize)
        return sha(data), deps


def _load_before(stor, oid, before):
    try:
        r = stor.loadBefore(oid, before)
    except POSKeyError:
        return 'deleted'
    if r is None:
        return None
    data, serial, nxt = r
    return {'serial': h(serial), 'next_serial': h(nxt), 'sha256': sha(data),
            'len': len(data)}


_zero_shas = {}


def _zero_sha(blksize):
    s = _zero_shas.get(blksize)
    if s is None:
        s = _zero_shas[blksize] = sha(b'\0' * blksize)
    return s


def _text(b):
    if isinstance(b, bytes):
        return b.decode('utf-8', 'backslashreplace')
    return b


class _FileState(object):
    def __init__(self, oid):
        self.oid = oid
        self.status = None
        self.error = None
        self.serial = None
        self.deps = ALWAYS


class _LazyConn(object):
    """historical connection opened on first use."""

    def __init__(self, db, before):
        self.db = db
        self.before = before
        self.conn = None

    def get(self):
        if self.conn is None:
            self.conn = self.db.open(before=self.before)
        return self.conn

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def dump(storage, check_trees=False, sample=300, seed=0, progress=False,
         objects=True):
    """-> (document dict, Dumper)"""
    d = Dumper(storage, check_trees=check_trees, sample=sample, seed=seed,
               progress=progress)
    d.scan()
    doc = {
        'format': FORMAT,
        'head': d.txns[-1]['tid'] if d.txns else None,
        'transactions': [{k: v for k, v in t.items() if not k.startswith('_')}
                         for t in d.txns],
        'zbigfile_oids': [h(o) for o in d.zbigfile_oids],
    }
    if objects:
        d.check_chains()
        doc['objects'] = d.objects_json()
        doc['loadbefore'] = d.loadbefore_json()
        doc['consistency_errors'] = d.consistency_errors
    doc['files'] = d.files()        # NOTE closes the storage (ZODB.DB.close)
    return doc, d
