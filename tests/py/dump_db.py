#!/usr/bin/env python3
"""Dump the complete content of a FileStorage database of ZBigFiles as JSON.

Usage: dump_db.py PATH OUT.json [--sample N] [--seed N] [--no-objects]
                                [--indent N] [--progress]

PATH is opened read-only with Python ZODB (nothing is written next to it; a
Python 2 database (magic FS21) is read from a temporary copy). OUT.json ("-" for
stdout) gets one JSON document; its schema is described in README.md.

  --sample N     number of oids in the "loadbefore" section (default 300,
                 -1 = every oid; the root, ZBigFiles, LOBTrees and every oid
                 ever deleted or written via a backpointer are always included)
  --seed N       seed for choosing that sample (default 0)
  --no-objects   leave out "objects", "loadbefore" and "consistency_errors"
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from zfsutil import open_readonly      # noqa: E402
import zdump                           # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('path')
    ap.add_argument('out')
    ap.add_argument('--sample', type=int, default=300)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--no-objects', action='store_true')
    ap.add_argument('--indent', type=int, default=None)
    ap.add_argument('--progress', action='store_true')
    args = ap.parse_args(argv)

    t0 = time.time()
    ro = open_readonly(args.path)
    try:
        doc, d = zdump.dump(ro.storage, sample=args.sample, seed=args.seed,
                            progress=args.progress, objects=not args.no_objects)
    finally:
        ro.close()
    kw = {'indent': args.indent} if args.indent is not None else {'separators': (',', ':')}
    if args.out == '-':
        json.dump(doc, sys.stdout, **kw)
        sys.stdout.write('\n')
    else:
        with open(args.out, 'w') as f:
            json.dump(doc, f, **kw)
            f.write('\n')
    nerr = len(doc.get('consistency_errors', []))
    print('dump_db: %d transactions, %d file entries, %d objects, %.1fs%s'
          % (len(doc['transactions']), len(doc['files']), len(doc.get('objects', [])),
             time.time() - t0,
             ', %d CONSISTENCY ERRORS' % nerr if nerr else ''), file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
