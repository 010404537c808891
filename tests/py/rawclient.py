#!/usr/bin/env python3
"""A wcfs client that speaks the raw protocol, as a wendelin.core user's
tools would (written from wcfs-protocol.md, not from any client library).

Usage:
  rawclient.py zhead MNT N
      Read N lines from MNT/.wcfs/debug/zhead. For each, print
      "zhead <tid> headat <head/at read right after>" (stdout, flushed).
  rawclient.py watch MNT OID AT BLK
      Open MNT/head/watch, send "watch OID @AT" from the main thread while
      a pinner thread answers every pin with "ack" and prints
      "pin <msg>"; after "ok", print "ok", read block BLK of
      MNT/head/bigfile/OID (its st_blksize bytes) and print
      "read <n> <sha1 of the bytes>"; then send "bye", wait for EOF and
      print "eof".
Errors go to stderr with exit status 1.
"""

import hashlib
import os
import sys
import threading


def zhead(mnt, n):
    with open(os.path.join(mnt, ".wcfs/debug/zhead"), "rb", buffering=0) as f:
        buf = b""
        got = 0
        while got < n:
            chunk = f.read(4096)
            if not chunk:
                raise SystemExit("zhead: EOF after %d lines" % got)
            buf += chunk
            while b"\n" in buf and got < n:
                line, buf = buf.split(b"\n", 1)
                with open(os.path.join(mnt, "head/at"), "rb") as h:
                    headat = h.read().decode()
                print("zhead %s headat %s" % (line.decode(), headat), flush=True)
                got += 1


def watch(mnt, oid, at, blk):
    fd = os.open(os.path.join(mnt, "head/watch"), os.O_RDWR)
    wlock = threading.Lock()

    def send(stream, msg):
        with wlock:
            os.write(fd, b"%d %s\n" % (stream, msg.encode()))

    replies = {}
    cond = threading.Condition()
    eof = threading.Event()

    def pinner():
        buf = b""
        while True:
            chunk = os.read(fd, 4096)
            if not chunk:
                eof.set()
                with cond:
                    cond.notify_all()
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                sp = line.index(b" ")
                stream, msg = int(line[:sp]), line[sp + 1:].decode()
                if stream == 0:
                    print("control %s" % msg, flush=True)
                elif stream % 2 == 0:
                    print("pin %s" % msg, flush=True)
                    send(stream, "ack")
                else:
                    with cond:
                        replies[stream] = msg
                        cond.notify_all()

    t = threading.Thread(target=pinner, daemon=True)
    t.start()
    send(1, "watch %s @%s" % (oid, at))
    with cond:
        while 1 not in replies and not eof.is_set():
            cond.wait(30)
    r = replies.get(1)
    if r != "ok":
        raise SystemExit("watch: reply %r" % r)
    print("ok", flush=True)
    path = os.path.join(mnt, "head/bigfile", oid)
    bs = os.stat(path).st_blksize
    with open(path, "rb", buffering=0) as f:
        data = os.pread(f.fileno(), bs, blk * bs)
    print("read %d %s" % (len(data), hashlib.sha1(data).hexdigest()), flush=True)
    send(3, "bye")
    if not eof.wait(30):
        raise SystemExit("no EOF after bye")
    print("eof", flush=True)
    os.close(fd)


def main(argv):
    if len(argv) == 3 and argv[0] == "zhead":
        zhead(argv[1], int(argv[2]))
    elif len(argv) == 5 and argv[0] == "watch":
        watch(argv[1], argv[2], argv[3], int(argv[4]))
    else:
        sys.stderr.write(__doc__)
        raise SystemExit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
