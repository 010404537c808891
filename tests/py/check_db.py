#!/usr/bin/env python3
"""Check a database (e.g. written by the Rust writer) against EXPECT.json.

Usage: check_db.py PATH EXPECT.json [--max-print N] [--no-fstest]

PATH is opened read-only with Python ZODB (nothing is written next to it).
EXPECT.json has the schema of dump_db.py's output (see README.md); it is what
the other side believes the database holds. Checks:

  1. ZODB.scripts.fstest.check(PATH): the FileStorage structure.
  2. the dump of PATH (computed exactly like dump_db.py) against EXPECT:
     - "files" (required): every entry of EXPECT must match the actual entry
       with the same (tid, oid); every actual entry with "reachable": true
       must be present in EXPECT. Compared: status; for status "ok" also
       blksize, size, blocks (sha256 per block) and, when present in EXPECT,
       zblk, serial, blktab, blktab_depth, reachable, block_errors (keys).
     - "transactions", "head", "zbigfile_oids", "objects", "loadbefore":
       compared when present in EXPECT (see README.md for the rules).
  3. BTrees.check.check() of every blktab LOBTree and every ZBlk1 chunktab
     IOBTree of every ZBigFile, at every revision where the tree or any of its
     nodes changed (so every revision's tree is checked at least once).
  4. loadBefore of every object right after each of its records returns that
     record (the `prev` back-chain agrees with the forward transaction scan).
  5. if PATH.index exists: it loads with ZODB's fsIndex, its `pos` is the end
     of a committed transaction, and it maps every oid to the position of its
     last data record before `pos` (exactly the oids stored before `pos`).

Exit 0 if everything matches; otherwise print every mismatch (up to
--max-print lines, then a count) and exit 1.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from zfsutil import open_readonly      # noqa: E402
import zdump                           # noqa: E402


class Report(object):
    def __init__(self, max_print):
        self.n = 0
        self.max_print = max_print

    def __call__(self, msg):
        self.n += 1
        if self.n <= self.max_print:
            print('MISMATCH ' + msg)


def _short(v):
    s = json.dumps(v)
    return s if len(s) <= 200 else s[:200] + '...'


def compare_files(act, exp, bad):
    A = {}
    for e in act:
        A[(e['tid'], e['oid'])] = e
    E = {}
    for e in exp:
        try:
            key = (e['tid'].lower(), e['oid'].lower())
        except (KeyError, AttributeError):
            bad('files: EXPECT entry without tid/oid: %s' % _short(e))
            continue
        if key in E:
            bad('files: duplicate EXPECT entry tid=%s oid=%s' % key)
        E[key] = e
    for key, e in E.items():
        a = A.get(key)
        where = 'files[tid=%s oid=%s]' % key
        if a is None:
            bad('%s: in EXPECT (status %r) but the database has no such revision '
                'of a ZBigFile' % (where, e.get('status')))
            continue
        if e.get('status') != a['status']:
            bad('%s: status: expect %r, actual %r%s' % (
                where, e.get('status'), a['status'],
                (' (%s)' % a['error']) if a.get('error') else ''))
            continue
        for f in ('reachable', 'serial'):
            if f in e and e[f] != a.get(f):
                bad('%s: %s: expect %r, actual %r' % (where, f, e[f], a.get(f)))
        if a['status'] != 'ok':
            continue
        for f in ('blksize', 'size'):
            if e.get(f) != a[f]:
                bad('%s: %s: expect %r, actual %r' % (where, f, e.get(f), a[f]))
        for f in ('blktab', 'blktab_depth'):
            if f in e and e[f] != a[f]:
                bad('%s: %s: expect %r, actual %r' % (where, f, e[f], a[f]))
        _cmp_list(where, 'blocks', e.get('blocks'), a['blocks'], bad)
        if 'zblk' in e:
            _cmp_list(where, 'zblk', e['zblk'], a['zblk'], bad)
        if 'block_errors' in e or 'block_errors' in a:
            ek = sorted(e.get('block_errors', {}))
            ak = sorted(a.get('block_errors', {}))
            if ek != ak:
                bad('%s: blocks with errors: expect %s, actual %s (%s)' % (
                    where, ek, ak, _short(a.get('block_errors', {}))))
    for key, a in A.items():
        if a.get('reachable') and key not in E:
            bad('files[tid=%s oid=%s]: reachable ZBigFile (status %s) missing from EXPECT'
                % (key[0], key[1], a['status']))


def _cmp_list(where, what, e, a, bad, maxdiff=10):
    if not isinstance(e, list):
        bad('%s: %s: EXPECT has %s, not a list' % (where, what, type(e).__name__))
        return
    if len(e) != len(a):
        bad('%s: %s: expect %d entries, actual %d' % (where, what, len(e), len(a)))
    diffs = [i for i in range(min(len(e), len(a)))
             if (e[i].lower() if isinstance(e[i], str) else e[i]) != a[i]]
    for i in diffs[:maxdiff]:
        bad('%s: %s[%d]: expect %r, actual %r' % (where, what, i, e[i], a[i]))
    if len(diffs) > maxdiff:
        bad('%s: %s: ... %d more differing entries' % (where, what, len(diffs) - maxdiff))


def compare_transactions(act, exp, bad):
    at = [t['tid'] for t in act]
    et = [t.get('tid', '').lower() for t in exp]
    if at != et:
        sa, se = set(at), set(et)
        bad('transactions: tid lists differ: %d actual, %d expected; only in DB: %s; '
            'only in EXPECT: %s' % (len(at), len(et), sorted(sa - se)[:10],
                                    sorted(se - sa)[:10]))
        if sa == se:
            bad('transactions: same tids in a different order')
    A = {t['tid']: t for t in act}
    for e in exp:
        a = A.get(e.get('tid', '').lower())
        if a is None:
            continue
        for f in ('status', 'user', 'description', 'extension_sha256'):
            if f in e and e[f] != a[f]:
                bad('transactions[%s]: %s: expect %r, actual %r' % (a['tid'], f, e[f], a[f]))
        if 'oids' in e:
            eo = sorted(o.lower() for o in e['oids'])
            ao = sorted(a['oids'])
            if eo != ao:
                bad('transactions[%s]: changed oids differ: only in DB %s, only in EXPECT %s'
                    % (a['tid'], sorted(set(ao) - set(eo))[:10], sorted(set(eo) - set(ao))[:10]))


def compare_objects(act, exp, bad):
    A = {o['oid']: o['revisions'] for o in act}
    E = {}
    for o in exp:
        E[o['oid'].lower()] = o['revisions']
    for oid in sorted(set(A) | set(E)):
        if oid not in E:
            bad('objects[%s]: in the database but not in EXPECT' % oid)
            continue
        if oid not in A:
            bad('objects[%s]: in EXPECT but not in the database' % oid)
            continue
        ar, er = A[oid], E[oid]
        if [r['tid'] for r in ar] != [r.get('tid', '').lower() for r in er]:
            bad('objects[%s]: revision tids: expect %s, actual %s' % (
                oid, [r.get('tid') for r in er][:8], [r['tid'] for r in ar][:8]))
            continue
        for a, e in zip(ar, er):
            for f in ('deleted', 'sha256', 'len', 'class', 'data_tid'):
                if f in e or f in ('deleted', 'sha256'):
                    if e.get(f, False if f == 'deleted' else None) != a[f]:
                        bad('objects[%s]@%s: %s: expect %r, actual %r'
                            % (oid, a['tid'], f, e.get(f), a[f]))


def compare_loadbefore(act, exp, tids, bad):
    A = {o['oid']: o['at'] for o in act}
    for o in exp:
        oid = o['oid'].lower()
        at = o['at']
        a = A[oid]
        if len(at) != len(a):
            bad('loadbefore[%s]: %d results, expect one per transaction (%d)'
                % (oid, len(at), len(a)))
        for i, (e, r) in enumerate(zip(at, a)):
            if isinstance(e, dict) and isinstance(r, dict):
                diff = [f for f in ('serial', 'next_serial', 'sha256', 'len')
                        if f in e and e[f] != r[f]]
                if not diff:
                    continue
            elif e == r:
                continue
            bad('loadbefore[%s] at %s: expect %s, actual %s'
                % (oid, tids[i] if i < len(tids) else i, _short(e), _short(r)))


def check_index(path, bad):
    """PATH.index (ZODB fsIndex format) against a forward scan of PATH."""
    from ZODB.fsIndex import fsIndex
    from ZODB.FileStorage import FileIterator
    idx = path + '.index'
    if not os.path.exists(idx):
        return False
    try:
        info = fsIndex.load(idx)
        index, pos = info['index'], int(info['pos'])
    except Exception as e:
        bad('index: %s: cannot load: %s: %s' % (idx, type(e).__name__, e))
        return True
    want = {}
    ends = {4}
    it = FileIterator(path)
    try:
        for t in it:
            if t._tpos >= pos:
                break
            for r in t:
                want[r.oid] = r.pos
            ends.add(t._tend + 8)
    finally:
        it.close()
    if pos not in ends:
        bad('index: pos %d is not the end of a committed transaction' % pos)
    got = dict(index.items())
    for oid in sorted(set(got) | set(want)):
        if got.get(oid) != want.get(oid):
            bad('index: oid %s -> %r, but the last data record before pos %d is at %r'
                % (oid.hex(), got.get(oid), pos, want.get(oid)))
    maxoid = info.get('oid')
    if maxoid is not None and want and maxoid < max(want):
        bad('index: oid %s < the largest stored oid %s' % (maxoid.hex(), max(want).hex()))
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('path')
    ap.add_argument('expect')
    ap.add_argument('--max-print', type=int, default=200)
    ap.add_argument('--no-fstest', action='store_true')
    args = ap.parse_args(argv)

    t0 = time.time()
    if args.expect == '-':
        exp = json.load(sys.stdin)
    else:
        with open(args.expect) as f:
            exp = json.load(f)
    if not isinstance(exp, dict) or 'files' not in exp:
        print('check_db: %s: not a dump document (no "files")' % args.expect)
        return 2
    if exp.get('format', zdump.FORMAT) != zdump.FORMAT:
        print('check_db: warning: EXPECT format %r, checker knows %r'
              % (exp.get('format'), zdump.FORMAT), file=sys.stderr)

    bad = Report(args.max_print)
    with open(args.path, 'rb') as f:
        if f.read(4) == b'FS30':
            index_state = 'ok' if check_index(args.path, bad) else 'absent'
        else:
            index_state = 'not checked (FS21)'  # Python 3 cannot read a Py2 index
    # the content checks do not depend on PATH.index (checked above)
    ro = open_readonly(args.path, use_index=False)
    try:
        if not args.no_fstest:
            from ZODB.scripts import fstest
            try:
                fstest.check(ro.path)
            except fstest.FormatError as e:
                bad('fstest: %s' % e)
        d = zdump.Dumper(ro.storage, check_trees=True)
        d.scan()
        d.check_chains()
        objects = d.objects_json()
        lb_oids = [bytes.fromhex(o['oid']) for o in exp.get('loadbefore', [])]
        loadbefore = d.loadbefore_json(lb_oids) if lb_oids else []
        files = d.files()           # closes the storage
    except Exception as e:
        import traceback
        traceback.print_exc()
        print('check_db: FAIL: reading the database crashed: %s: %s'
              % (type(e).__name__, e))
        return 1
    finally:
        ro.close()
    txns = [{k: v for k, v in t.items() if not k.startswith('_')} for t in d.txns]

    for msg in d.consistency_errors:
        bad('storage consistency: ' + msg)
    for tid, what, msg in d.tree_errors:
        bad('BTrees.check at %s: %s: %s' % (tid, what, msg.replace('\n', ' | ')))

    if 'transactions' in exp:
        compare_transactions(txns, exp['transactions'], bad)
    if 'head' in exp:
        head = txns[-1]['tid'] if txns else None
        if (exp['head'] or None) != head:
            bad('head: expect %r, actual %r' % (exp['head'], head))
    if 'zbigfile_oids' in exp:
        ez = sorted(o.lower() for o in exp['zbigfile_oids'])
        az = [zdump.h(o) for o in d.zbigfile_oids]
        if ez != az:
            bad('zbigfile_oids: expect %s, actual %s' % (ez, az))
    compare_files(files, exp['files'], bad)
    if 'objects' in exp:
        compare_objects(objects, exp['objects'], bad)
    if 'loadbefore' in exp:
        compare_loadbefore(loadbefore, exp['loadbefore'], [t['tid'] for t in txns], bad)

    if bad.n > bad.max_print:
        print('... %d more mismatches not shown' % (bad.n - bad.max_print))
    dt = time.time() - t0
    if bad.n:
        print('check_db: FAIL: %d mismatch(es) (%d transactions, %d file entries, %.1fs)'
              % (bad.n, len(txns), len(files), dt))
        return 1
    print('check_db: OK (%d transactions, %d file entries, %d objects, fstest %s, '
          'index %s, %.1fs)'
          % (len(txns), len(files), len(objects),
             'skipped' if args.no_fstest else 'ok', index_state, dt))
    return 0


if __name__ == '__main__':
    sys.exit(main())
