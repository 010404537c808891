#!/usr/bin/env python3
"""A ZEO server and a ZEO committer for the Rust ZEO client tests (zodb/tests/zeo_*.rs).

Usage:
  zeo_server.py serve PATH LISTEN [--name NAME] [--msgpack]
      Serve the FileStorage PATH as storage NAME (default "1") on LISTEN:
      "HOST:PORT" (PORT 0 picks a free port) or a UNIX socket path. Prints
      "READY <addr>" (the bound "HOST:PORT", or the path) once it accepts,
      then serves until stdin reaches EOF (the test closes it, or dies) or
      SIGTERM.

  zeo_server.py commit ADDR N [--name NAME] [--seed S]
      Commit N transactions through the ZEO server at ADDR with Python ZODB:
      each changes 1-3 persistent objects (PersistentMapping), sometimes
      creating new ones. Prints "TID <16 hex>" after each commit, flushed.
"""

import argparse
import os
import random
import signal
import sys
import threading


def parse_addr(s):
    if '/' not in s and ':' in s:
        host, port = s.rsplit(':', 1)
        return (host, int(port))
    return s


def serve(args):
    import ZODB.FileStorage
    import ZEO.StorageServer
    fs = ZODB.FileStorage.FileStorage(args.path)
    server = ZEO.StorageServer.StorageServer(
        parse_addr(args.listen), {args.name: fs}, msgpack=args.msgpack)
    addr = server.acceptor.addr
    if isinstance(addr, tuple):
        addr = '%s:%d' % (addr[0], addr[1])
    elif isinstance(addr, bytes):
        addr = addr.decode()
    t = threading.Thread(target=server.loop, daemon=True)
    t.start()
    print('READY %s' % addr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    sys.stdin.read()  # until EOF
    try:
        server.close()
    finally:
        fs.close()
        os._exit(0)


def commit(args):
    import ZEO
    import ZODB
    import transaction
    from persistent.mapping import PersistentMapping
    rng = random.Random(args.seed)
    storage = ZEO.client(parse_addr(args.addr), storage=args.name, wait_timeout=10)
    db = ZODB.DB(storage)
    conn = db.open()
    root = conn.root()
    objs = [v for k, v in sorted(root.items()) if k.startswith('zeo-obj-')]
    for i in range(args.n):
        changed = []
        if not objs or rng.random() < 0.3:
            o = PersistentMapping()
            root['zeo-obj-%d' % len(objs)] = o
            objs.append(o)
            changed.append(root)
        for o in rng.sample(objs, min(len(objs), rng.randint(1, 3))):
            o['v'] = (i, rng.random())
            changed.append(o)
        txn = transaction.get()
        txn.note('zeo commit %d' % i)
        txn.commit()
        tid = changed[-1]._p_serial
        print('TID %s' % tid.hex(), flush=True)
    conn.close()
    db.close()


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest='cmd', required=True)
    s = sub.add_parser('serve')
    s.add_argument('path')
    s.add_argument('listen')
    s.add_argument('--name', default='1')
    s.add_argument('--msgpack', action='store_true')
    c = sub.add_parser('commit')
    c.add_argument('addr')
    c.add_argument('n', type=int)
    c.add_argument('--name', default='1')
    c.add_argument('--seed', type=int, default=0)
    args = ap.parse_args()
    {'serve': serve, 'commit': commit}[args.cmd](args)


if __name__ == '__main__':
    main()
