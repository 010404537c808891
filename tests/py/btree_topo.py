#!/usr/bin/env python3
"""Print the topology of a treegen tree at every revision, as Python sees it.

Usage: btree_topo.py PATH

PATH is a database made by the Rust `engine::testkit::treegen::TreeGen`:
root['treegen/tree'] is an LOBTree whose values are ZBlk0 objects named in
root['treegen/values'] (name -> ZBlk0). For every committed transaction this
reads the tree with real Python ZODB/BTrees (read-only), encodes its exact
shape in the topology text form (engine/src/testkit/topology.rs: level
order, '/' between levels, '-' between nodes, T<keys>, B<k:v,...>, 'T/B:'
for the empty tree) and runs BTrees.check.check on it, plus a check that iterating the tree (firstbucket, then next
pointers, read from the states) gives the items its structure holds. Output: one JSON
document, a list of {"tid": hex16, "topo": str, "check": null | str}.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import zfsutil  # noqa: E402  (read-only open of FS21/FS30 files)
from BTrees.check import check  # noqa: E402
from ZODB import DB  # noqa: E402
from ZODB.utils import p64, u64  # noqa: E402


def state_of(obj):
    obj._p_activate()
    return obj.__getstate__()


def topo(tree, names):
    """Level-order text of `tree`'s shape."""
    def bucket_text(items):
        if not items:
            return 'B:'
        kv = []
        for i in range(0, len(items), 2):
            kv.append('%d:%s' % (items[i], names.get(items[i + 1]._p_oid, '?')))
        return 'B' + ','.join(kv)

    st = state_of(tree)
    if st is None:
        return 'T/B:'
    items = st[0]
    if len(st) == 1:  # one inlined bucket: ((bucket_state,),)
        return 'T/' + bucket_text(items[0][0])
    levels = []
    level = [('T', tree)]
    while level:
        texts, nxt = [], []
        for kind, node in level:
            if kind == 'B':
                texts.append(bucket_text(state_of(node)[0]))
                continue
            s = state_of(node)
            if s is None:
                texts.append('T')
                nxt.append(('B', None))
                continue
            children = s[0][0::2]
            keys = s[0][1::2]
            texts.append('T' + ','.join(str(k) for k in keys))
            for c in children:
                nxt.append(('T' if type(c).__name__.endswith('BTree') else 'B', c))
        levels.append('-'.join(texts))
        level = nxt
    return '/'.join(levels)


def walk_items(tree):
    """Items by descending the structure (children lists), not next pointers."""
    out = []

    def visit(node, is_tree):
        st = state_of(node)
        if st is None:
            return
        if not is_tree:
            items = st[0]
            out.extend(zip(items[0::2], items[1::2]))
            return
        if len(st) == 1:
            b = st[0][0][0]
            out.extend(zip(b[0::2], b[1::2]))
            return
        for c in st[0][0::2]:
            visit(c, type(c).__name__.endswith('BTree'))
    visit(tree, True)
    return out


def chain_items(tree):
    """Items along the bucket chain: the root's firstbucket, then each
    bucket's next pointer (what BTrees' iteration follows; read from the
    states because its C iterator refuses empty buckets mid-chain)."""
    st = state_of(tree)
    if st is None:
        return []
    if len(st) == 1:
        b = st[0][0][0]
        return list(zip(b[0::2], b[1::2]))
    out = []
    bucket = st[1]
    seen = 0
    while bucket is not None:
        seen += 1
        if seen > 1000000:
            raise AssertionError('bucket chain loops')
        bst = state_of(bucket)
        out.extend(zip(bst[0][0::2], bst[0][1::2]))
        bucket = bst[1] if len(bst) > 1 else None
    return out


def iteration_error(tree):
    """The bucket chain must give the items the structure holds (BTrees.check
    looks at neither firstbucket nor next pointers)."""
    want = [(k, v._p_oid) for k, v in walk_items(tree)]
    got = [(k, v._p_oid) for k, v in chain_items(tree)]
    if got != want:
        return 'bucket chain (firstbucket/next) gives %r, structure has %r' % (got, want)
    return None


def main():
    path = sys.argv[1]
    ro = zfsutil.open_readonly(path)
    db = DB(ro.storage)
    try:
        out = []
        for txn in ro.storage.iterator():
            conn = db.open(before=p64(u64(txn.tid) + 1))
            try:
                root = conn.root()
                if 'treegen/tree' not in root:
                    continue
                tree = root['treegen/tree']
                names = {z._p_oid: n for n, z in root['treegen/values'].items()}
                try:
                    check(tree)
                    err = iteration_error(tree)
                except AssertionError as e:
                    err = str(e) or 'check failed'
                out.append({'tid': '%016x' % u64(txn.tid), 'topo': topo(tree, names), 'check': err})
            finally:
                conn.close()
        json.dump(out, sys.stdout)
    finally:
        db.close()
        ro.close()


if __name__ == '__main__':
    main()
