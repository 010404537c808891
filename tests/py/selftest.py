#!/usr/bin/env python3
"""End-to-end self test of the Python interop scripts.

Usage: selftest.py [WORKDIR] [--txns N] [--seed N]

  1. check_fixtures.py
  2. gen_db.py twice with the same seed -> byte-identical databases
  3. dump_db.py, then an independent brute-force recomputation of every
     "files" entry (fresh historical connection per revision, load_block of
     every block, no caching) must give the same JSON
  4. check_db.py DB dump.json must pass
  5. check_db.py DB tampered.json must fail, for several kinds of tampering
Prints "N passed, N failed" at the end; exit 1 if anything failed.
"""

import argparse
import copy
import hashlib
import json
import os
import subprocess
import sys
import shutil
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
PY = sys.executable


def run(args, **kw):
    t0 = time.time()
    p = subprocess.run([PY] + args, capture_output=True, text=True, **kw)
    return p, time.time() - t0


def brute_force(path, doc):
    """recompute every files entry without any cache."""
    import ZODB
    from ZODB.POSException import POSKeyError
    from ZODB.utils import p64, u64
    from zfsutil import open_readonly
    from wendelin.bigfile.file_zodb import ZBigFile, load_block, file_size
    from btutil import tree_depth
    errs = []
    ro = open_readonly(path)
    db = ZODB.DB(ro.storage)
    try:
        for e in doc['files']:
            before = p64(u64(bytes.fromhex(e['tid'])) + 1)
            oid = bytes.fromhex(e['oid'])
            try:
                r = ro.storage.loadBefore(oid, before)
                status = 'absent' if r is None else 'ok'
            except POSKeyError:
                status = 'deleted'
            if status != e['status']:
                errs.append('%s@%s: status %s != %s' % (e['oid'], e['tid'], status, e['status']))
                continue
            if status != 'ok':
                continue
            conn = db.open(before=before)
            zf = conn.get(oid)
            assert isinstance(zf, ZBigFile)
            got = {'blksize': zf.blksize, 'size': file_size(zf),
                   'blktab': zf.blktab._p_oid.hex(), 'blktab_depth': tree_depth(zf.blktab),
                   'serial': (zf._p_activate(), zf._p_serial.hex())[1]}
            n = got['size'] // zf.blksize
            got['blocks'] = [hashlib.sha256(load_block(zf, b)).hexdigest() for b in range(n)]
            got['zblk'] = [zf.blktab[b]._p_oid.hex() if b in zf.blktab else None
                           for b in range(n)]
            for k, v in got.items():
                if e.get(k) != v:
                    errs.append('%s@%s: %s differs' % (e['oid'], e['tid'], k))
            conn.close()
            conn.cacheMinimize()
    finally:
        db.close()
        ro.close()
    return errs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--keep', action='store_true', help='keep a temporary WORKDIR')
    ap.add_argument('workdir', nargs='?')
    ap.add_argument('--txns', type=int, default=60)
    ap.add_argument('--seed', type=int, default=1)
    args = ap.parse_args()
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
        return run_all(args, args.workdir)
    wd = tempfile.mkdtemp(prefix='wcfs-pytest-')
    try:
        return run_all(args, wd)
    finally:
        if not args.keep:
            shutil.rmtree(wd, ignore_errors=True)


def run_all(args, wd):
    npass = nfail = 0

    def result(name, ok, detail=''):
        nonlocal npass, nfail
        if ok:
            npass += 1
        else:
            nfail += 1
        print('%s %s%s' % ('PASS' if ok else 'FAIL', name,
                           (': ' + detail) if detail and not ok else ''))
        sys.stdout.flush()

    p, dt = run([os.path.join(HERE, 'check_fixtures.py')])
    result('check_fixtures (%.1fs)' % dt, p.returncode == 0, p.stdout + p.stderr)

    db = os.path.join(wd, 'gen.fs')
    db2 = os.path.join(wd, 'gen2.fs')
    common = ['--seed', str(args.seed), '--txns', str(args.txns), '--force']
    p, dt = run([os.path.join(HERE, 'gen_db.py'), db] + common +
                ['--events', os.path.join(wd, 'events.json')])
    result('gen_db (%.1fs)' % dt, p.returncode == 0, p.stderr.strip())
    p2, _ = run([os.path.join(HERE, 'gen_db.py'), db2] + common)
    same = p2.returncode == 0 and open(db, 'rb').read() == open(db2, 'rb').read()
    result('gen_db deterministic', same)

    out = os.path.join(wd, 'dump.json')
    p, dt = run([os.path.join(HERE, 'dump_db.py'), db, out])
    result('dump_db (%.1fs, %d bytes)' % (dt, os.path.getsize(out) if os.path.exists(out) else 0),
           p.returncode == 0, p.stderr.strip())
    doc = json.load(open(out))
    result('dump has no consistency errors', not doc['consistency_errors'],
           str(doc['consistency_errors'][:3]))
    kinds = {}
    for e in doc['files']:
        kinds[e['status']] = kinds.get(e['status'], 0) + 1
    result('dump covers ok/absent/deleted file states',
           all(kinds.get(k) for k in ('ok', 'absent', 'deleted')), str(kinds))
    depth = max(e.get('blktab_depth', 0) for e in doc['files'])
    result('some blktab has depth >= 3', depth >= 3, 'max depth %d' % depth)
    revs = [r for o in doc['objects'] for r in o['revisions']]
    result('DB has deletion records and backpointers',
           any(r['deleted'] for r in revs) and any(r['data_tid'] for r in revs))

    t0 = time.time()
    errs = brute_force(db, doc)
    result('brute-force recomputation == dump (%.1fs)' % (time.time() - t0), not errs,
           '; '.join(errs[:5]))

    p, dt = run([os.path.join(HERE, 'check_db.py'), db, out])
    result('check_db on matching dump (%.1fs)' % dt, p.returncode == 0,
           (p.stdout + p.stderr).strip()[-2000:])

    # tampering: each must make check_db fail
    def tampered(name, fn):
        d = copy.deepcopy(doc)
        fn(d)
        path = os.path.join(wd, 'tampered-%s.json' % name)
        with open(path, 'w') as f:
            json.dump(d, f)
        p, dt = run([os.path.join(HERE, 'check_db.py'), db, path])
        result('check_db detects tampering: %s' % name,
               p.returncode == 1 and 'MISMATCH' in p.stdout, p.stdout.strip()[-500:])

    def ok_entries(d):
        return [e for e in d['files'] if e['status'] == 'ok' and e['blocks']]

    def flip_block(d):
        e = ok_entries(d)[len(ok_entries(d)) // 2]
        i = len(e['blocks']) // 2
        e['blocks'][i] = hashlib.sha256(b'tampered').hexdigest()

    def drop_entry(d):
        del d['files'][len(d['files']) // 2]

    def wrong_size(d):
        e = ok_entries(d)[-1]
        e['size'] += e['blksize']
        e['blocks'].append(e['blocks'][-1])

    def hole_vs_zblk(d):
        for e in ok_entries(d):
            if None in e['zblk']:
                i = e['zblk'].index(None)
                e['zblk'][i] = '00000000000000ff'
                return
        raise AssertionError('no hole')

    def status(d):
        for e in d['files']:
            if e['status'] == 'deleted':
                e['status'] = 'absent'
                return

    def txn_missing(d):
        del d['transactions'][3]

    def obj_sha(d):
        d['objects'][5]['revisions'][0]['sha256'] = '0' * 64

    def loadbefore(d):
        for o in d['loadbefore']:
            for i, r in enumerate(o['at']):
                if isinstance(r, dict):
                    o['at'][i] = None
                    return

    for name, fn in [('block sha256', flip_block), ('dropped file entry', drop_entry),
                     ('size', wrong_size), ('hole zblk', hole_vs_zblk),
                     ('status', status), ('missing transaction', txn_missing),
                     ('object sha256', obj_sha), ('loadbefore', loadbefore)]:
        tampered(name, fn)

    # a corrupt database (one byte of one pickle flipped) must fail too
    bad = os.path.join(wd, 'corrupt.fs')
    data = bytearray(open(db, 'rb').read())
    data[len(data) // 2] ^= 0xff
    with open(bad, 'wb') as f:
        f.write(data)
    p, dt = run([os.path.join(HERE, 'check_db.py'), bad, out])
    result('check_db detects a corrupted database', p.returncode != 0, p.stdout.strip()[-300:])

    # a wrong PATH.index must be detected
    import shutil
    from ZODB.fsIndex import fsIndex
    xdb = os.path.join(wd, 'badindex.fs')
    shutil.copyfile(db, xdb)
    info = fsIndex.load(db + '.index')
    ix = info['index']
    k = list(ix.keys())[len(ix) // 2]
    ix[k] = ix[k] + 1
    ix.save(info['pos'], xdb + '.index')
    p, dt = run([os.path.join(HERE, 'check_db.py'), xdb, out])
    result('check_db detects a wrong .index', p.returncode == 1 and 'index:' in p.stdout,
           p.stdout.strip()[-300:])

    # committer: tids printed in order, "done", each txn seen exactly once
    import struct
    cdb = os.path.join(wd, 'committer.fs')
    for sfx in ('', '.index', '.lock', '.tmp'):
        if os.path.exists(cdb + sfx):
            os.unlink(cdb + sfx)
    p, dt = run([os.path.join(HERE, 'committer.py'), cdb, '--txns', '12', '--delay-ms', '5'])
    lines = p.stdout.split()
    tids = lines[:-1]
    ok = (p.returncode == 0 and lines[-1:] == ['done'] and len(tids) == 12 and
          all(len(t) == 16 for t in tids) and tids == sorted(set(tids)))
    result('committer prints 12 increasing tids + done (%.1fs)' % dt, ok, p.stdout + p.stderr)
    if ok:
        cout = os.path.join(wd, 'committer.json')
        run([os.path.join(HERE, 'dump_db.py'), cdb, cout])
        cdoc = json.load(open(cout))
        import ZODB
        from ZODB.utils import p64, u64
        from zfsutil import open_readonly
        from wendelin.bigfile.file_zodb import load_block
        ro = open_readonly(cdb)
        zdb = ZODB.DB(ro.storage)
        seqs = []
        for t in tids:
            c = zdb.open(before=p64(u64(bytes.fromhex(t)) + 1))
            seqs.append(struct.unpack('>Q', load_block(c.root()['committer'], 0)[:8])[0])
            c.close()
        zdb.close()
        ro.close()
        txn_tids = [t['tid'] for t in cdoc['transactions']]
        result('committer: block 0 holds seq 1..12 at the printed tids',
               seqs == list(range(1, 13)) and txn_tids[1:] == tids, str(seqs))

    # bench_load
    p, dt = run([os.path.join(HERE, 'bench_load.py'), db, 'root:big'])
    try:
        b = json.loads(p.stdout)
        ok = set(b) == {'blocks', 'bytes', 'seconds'} and b['bytes'] == b['blocks'] * 64
    except ValueError:
        ok = False
    result('bench_load root:big: %s' % p.stdout.strip(), ok, p.stderr)

    print('%d passed, %d failed' % (npass, nfail))
    return 1 if nfail else 0


if __name__ == '__main__':
    sys.exit(main())
