//! The isolation protocol end to end: `wcfs serve` mounted for real, and
//! clients that speak the raw `head/watch` grammar (wcfs-protocol.md §4,
//! §5, §7) from this process (one reader thread per link) and from child
//! processes of this test binary (`child_role`), against databases that
//! our writer builds and changes.
//!
//! What is held:
//! - grammar: the exact error lines, which of them close the link (bad
//!   frames, replies on unexpected streams) and which do not (bad watch
//!   requests, unknown files); `bye`; frames split over and joined in
//!   writes, 1-byte reads; a stream with leading zeros; `@ffffffffffffffff`;
//! - setup: the pins of the spec's worked example (`test_wcfs_watch_setup`)
//!   and of each step of moving a watch forward, unpins included; `ok`
//!   only after every setup pin is acked; no pins at head; going back,
//!   too far back and an epoch in `(at, head]` refused; a setup ahead of
//!   head waits for the commit (and pins what it changed); `watch -`;
//!   setups of different files concurrent, of one file serialized;
//! - lazy pins on READ (read(2) and page faults): the reader stays blocked
//!   until the ack, all watches are pinned in parallel, no re-pin, no pin
//!   for blocks unchanged since `at`, one pin for concurrent READs, pins
//!   past the old EOF; several links and processes each get pins for
//!   their own `at`; `.wcfs/stats` counters;
//! - isolation itself under concurrent commits and READs;
//! - faulty clients (no ack, wrong stream, nak, garbage, close or `bye`
//!   mid-pin, SIGSTOP, link opened by a thread gone since, no pinner
//!   thread): killed (SIGBUS, then SIGKILL) — or for close and `bye` only
//!   dropped — while a well-behaved watcher and the reader keep working;
//!   the kill comes before the READ that pinned the client returns;
//! - clients killed by others (in read(2) of the link, mid-pin); blocked
//!   setups go away with their link.
//!
//! Every test runs under a watchdog and an unmount guard (support module),
//! kills and reaps its children on drop, and ends with `Server::finish`
//! (exit 0, no mount entry left). Needs root, /dev/fuse and fusermount3.

#[path = "support/server.rs"]
#[allow(dead_code)]
mod server;
#[path = "support/watch_support.rs"]
mod watch_support;

use client::proto::{self, Pin};
use memmap2::Mmap;
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};
use watch_support::*;
use zodb::zbigfile::ZBlkFormat;
use zodb::zwrite::{BlkChange, ZWriter};
use zodb::{Oid, Tid};

const BS: u64 = 16 << 10;

/// Not a test: the body of the child processes (`Proc::spawn`); returns at
/// once unless `$WCFS_WATCH_ROLE` is set.
#[test]
fn child_role() {
    child_main();
}

/// Block contents of a file: blk -> bytes.
type Model = BTreeMap<i64, Vec<u8>>;

/// Full-block data, distinct per (tag, blk).
fn data(tag: u64, blk: i64) -> Vec<u8> {
    pattern(tag * 1000 + blk as u64 + 1, BS as usize)
}

/// Commit `blks` of `oid` with data tagged `tag`; update the model.
fn commit(zw: &mut ZWriter, oid: Oid, m: &mut Model, tag: u64, blks: &[i64]) -> Tid {
    let d: Vec<(i64, Vec<u8>)> = blks.iter().map(|&b| (b, data(tag, b))).collect();
    let ch: Vec<BlkChange<'_>> = d
        .iter()
        .map(|(b, v)| (*b, Some((ZBlkFormat::ZBlk0, v.as_slice()))))
        .collect();
    let tid = zw.update_file(oid, &ch).unwrap();
    for (b, v) in d {
        m.insert(b, v);
    }
    tid
}

/// Expected bytes of block `blk` (a hole reads as zeros).
fn want(m: &Model, blk: i64) -> Vec<u8> {
    m.get(&blk).cloned().unwrap_or_else(|| vec![0; BS as usize])
}

/// A database with file "f" holding blocks `blks` (tag 0), one commit.
fn db_with(dir: &Path, blks: &[i64]) -> (ZWriter, Oid, Model) {
    let db = dir.join("Data.fs");
    let mut zw = ZWriter::open(&db).unwrap();
    let m: Model = blks.iter().map(|&b| (b, data(0, b))).collect();
    let ch: Vec<BlkChange<'_>> = m
        .iter()
        .map(|(b, v)| (*b, Some((ZBlkFormat::ZBlk0, v.as_slice()))))
        .collect();
    let (oid, _) = zw.create_file("f", BS, &ch).unwrap();
    (zw, oid, m)
}

/// A server with `--pintimeout pt` over a database of file "f" holding
/// `blks`, each block read once through head/ (so tracked): (the writer,
/// the file, its model, the server, head/at, head/bigfile/f).
fn served_and_read(
    dir: &Path,
    blks: &[i64],
    pt: u64,
) -> (ZWriter, Oid, Model, Server, Tid, std::path::PathBuf) {
    let (zw, oid, m) = db_with(dir, blks);
    let srv = Server::start_opts(
        dir,
        &dir.join("Data.fs"),
        &["--pintimeout", &pt.to_string()],
    );
    let at0 = srv.head_at();
    let p = srv.head_file(oid);
    for &b in blks {
        eq_blk(&read_blk(&p, b, BS), &want(&m, b), &format!("#{b} @at0"));
    }
    (zw, oid, m, srv, at0, p)
}

fn eq_blk(got: &[u8], want: &[u8], what: &str) {
    assert!(
        got == want,
        "{what}: data differs (len {} vs {})",
        got.len(),
        want.len()
    );
}

/// The next tid after `t` (what a watch "ahead of head" asks for).
fn after(t: Tid) -> Tid {
    Tid(t.0 + 1)
}

// ---- 1) grammar ----

/// The exact error lines of §4: bad frames and replies on unexpected
/// streams close the link, bad watch requests do not; `bye` closes it.
#[test]
fn grammar() {
    let dir = tempfile::tempdir().unwrap();
    let (mut zw, oid, _) = db_with(dir.path(), &[0]);
    // a second ZBigFile that nobody looks up
    let (goid, _) = zw
        .create_file("g", BS, &[(0, Some((ZBlkFormat::ZBlk0, b"g")))])
        .unwrap();
    let srv = Server::start_opts(dir.path(), &dir.path().join("Data.fs"), &[]);
    let head = srv.head_at();
    let f = File::open(srv.head_file(oid)).unwrap();

    // frames that are fatal for the link
    for (raw, suffix) in [
        ("hello\n", ""),
        ("\n", ""),
        ("x1 watch\n", " (invalid stream)"),
        (" watch\n", " (invalid stream)"),
        ("-1 watch\n", " (invalid stream)"),
        ("+1 watch\n", " (invalid stream)"),
        ("18446744073709551616 watch\n", " (invalid stream)"),
        ("1\twatch\n", ""),
    ] {
        let mut l = Link::open(&srv, &format!("link {raw:?}"), false);
        l.send_raw(raw).unwrap();
        let want = format!("0 error: invalid frame: {}{suffix}", proto::go_quote(raw));
        assert_eq!(l.line("bad frame"), want, "frame {raw:?}");
        l.expect_eof(&format!("after bad frame {raw:?}"));
    }

    // bad watch requests: an error reply on the request's stream, the link
    // stays usable
    let mut l = Link::open(&srv, "requests", false);
    let at = format!("@{head}");
    for (msg, err) in [
        (
            "watch".to_owned(),
            r#"not a watch request: "watch""#.to_owned(),
        ),
        (
            "hello".to_owned(),
            r#"not a watch request: "hello""#.to_owned(),
        ),
        (
            format!("watch {oid}"),
            "expected 2 arguments, got 1".to_owned(),
        ),
        (
            format!("watch {oid} {at} x"),
            "expected 2 arguments, got 3".to_owned(),
        ),
        (
            format!("watch {oid}  {at}"),
            "expected 2 arguments, got 3".to_owned(),
        ),
        (format!("watch zzz {at}"), "invalid oid".to_owned()),
        (
            format!("watch {}X {at}", &oid.to_string()[1..]),
            "invalid oid".to_owned(),
        ),
        (format!("watch {oid} @xyz"), "invalid at".to_owned()),
        (format!("watch {oid} {head}"), "invalid at".to_owned()),
        (
            format!("watch {oid} @{}", &head.to_string()[1..]),
            "invalid at".to_owned(),
        ),
    ] {
        let s = l.request(&msg);
        let (r, p) = l.reply(s, &msg);
        assert_eq!(r, format!("error bad watch: {err}"), "request {msg:?}");
        assert!(p.is_empty());
    }
    // a file not yet looked up under head/ (only under @<head>/), a file
    // that does not exist
    std::fs::metadata(srv.p(&format!("@{head}/bigfile/{goid}"))).unwrap();
    for o in [goid, Oid(0x7fff_0000_0000_0001)] {
        let (r, _) = l.watch(o, &at);
        assert_eq!(
            r,
            format!(
                "error setup watch f<{o}> {at}: file not yet known to wcfs or is not a ZBigFile"
            ),
        );
    }
    // still usable
    assert_eq!(l.watch_ok(oid, head), pins(&[]));
    assert_eq!(l.watch(oid, "-").0, "ok");
    // an even-stream reply to no pending pin, stream 0 included: fatal
    let mut l0 = Link::open(&srv, "stream 0", false);
    l0.send(0, "ack");
    assert_eq!(
        l0.line("stream 0"),
        "0 error: 0: reply on unexpected stream"
    );
    l0.expect_eof("after stream 0");
    drop(l0);
    l.send(2, "ack");
    assert_eq!(
        l.line("stray ack"),
        "0 error: 2: reply on unexpected stream"
    );
    l.expect_eof("after stray ack");
    drop(l); // a link counts until its fd is closed
    let mut l = Link::open(&srv, "stray nak", false);
    l.send(4, "nak: what");
    assert_eq!(
        l.line("stray nak"),
        "0 error: 4: reply on unexpected stream"
    );
    l.expect_eof("after stray nak");
    drop(l);

    // bye: no reply, EOF
    let mut l = Link::open(&srv, "bye", false);
    assert_eq!(l.watch_ok(oid, head), pins(&[]));
    l.bye();

    // stream semantics: a frame split over writes, two frames in one
    // write, replies read one byte at a time
    let raw = open_watch(&srv);
    let w = |s: &str| std::io::Write::write_all(&mut &raw, s.as_bytes()).unwrap();
    let rd_line = || {
        let mut l = Vec::new();
        loop {
            let mut b = [0u8; 1];
            let n = std::io::Read::read(&mut &raw, &mut b).unwrap();
            if n == 0 {
                return None;
            }
            if b[0] == b'\n' {
                return Some(String::from_utf8(l).unwrap());
            }
            l.push(b[0]);
        }
    };
    w("1 wat");
    w(&format!("ch {oid} @{head}\n"));
    assert_eq!(rd_line().as_deref(), Some("1 ok"), "a frame in two writes");
    w(&format!("3 watch {oid} -\n5 watch {oid} @{head}\n"));
    let mut two = [rd_line(), rd_line()];
    two.sort();
    assert_eq!(
        two,
        [Some("3 ok".to_owned()), Some("5 ok".to_owned())],
        "two frames in one write"
    );
    w("7 bye\n");
    assert_eq!(rd_line(), None, "EOF after bye");
    drop(raw);

    srv.wait_stat("WatchLink", 0);
    srv.wait_stat("Watch", 0);
    drop(f); // an open file would hold up the unmount
    srv.finish();
}

/// Lines that are not UTF-8 are quoted in error texts byte by byte, as
/// Go's `%q` does (`"\xff"`), not as U+FFFD.
#[test]
fn grammar_non_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let (_zw, _oid, _) = db_with(dir.path(), &[0]);
    let srv = Server::start_opts(dir.path(), &dir.path().join("Data.fs"), &[]);
    let mut l = Link::open(&srv, "not utf-8", false);
    std::io::Write::write_all(&mut l.file(), b"1 \xff\n").unwrap();
    let got = l.line("non-UTF-8 request");
    let mut l2 = Link::open(&srv, "not utf-8 frame", false);
    std::io::Write::write_all(&mut l2.file(), b"\xff\xfe\n").unwrap();
    let got2 = l2.line("non-UTF-8 frame");
    l2.expect_eof("after the non-UTF-8 frame");
    drop(l2);
    assert_eq!(
        (got.as_str(), got2.as_str()),
        (
            r#"1 error bad watch: not a watch request: "\xff""#,
            r#"0 error: invalid frame: "\xff\xfe\n""#
        )
    );
    l.bye();
    srv.wait_stat("WatchLink", 0);
    srv.finish();
}

// ---- 2) watch setup ----

/// The spec's worked example (§5, `test_wcfs_watch_setup`), then watch
/// updates on the same link through to head, a watch at head, going back,
/// a watch ahead of head, and `watch -`.
#[test]
fn watch_setup() {
    let dir = tempfile::tempdir().unwrap();
    let (mut zw, oid, mut m) = db_with(dir.path(), &[]);
    let srv = Server::start_opts(dir.path(), &dir.path().join("Data.fs"), &[]);
    let at0 = srv.head_at();
    let f = File::open(srv.head_file(oid)).unwrap();
    let at1 = commit(&mut zw, oid, &mut m, 1, &[2]);
    let at2 = commit(&mut zw, oid, &mut m, 2, &[2, 3, 4, 5]);
    let at3 = commit(&mut zw, oid, &mut m, 3, &[0, 2, 5]);
    let at4 = commit(&mut zw, oid, &mut m, 4, &[2, 4, 5]);
    let at5 = commit(&mut zw, oid, &mut m, 5, &[3, 5]);
    srv.wait_head(at5);
    // blocks 0, 2, 3, 5 are read through head/ (block 4 never)
    for b in [0, 2, 3, 5] {
        eq_blk(
            &read_blk(&srv.head_file(oid), b, BS),
            &want(&m, b),
            &format!("head #{b}"),
        );
    }

    // a new watch @at1; `ok` waits for the ack of every pin
    let mut l1 = Link::open(&srv, "l1", false);
    let s = l1.request(&format!("watch {oid} @{at1}"));
    let (s0, p0) = l1.pin("first setup pin @at1");
    let mut got = vec![p0];
    // no ok while a pin is not acked (other pins may come meanwhile)
    let t0 = Instant::now();
    while t0.elapsed() < QUIET {
        if let Some(ev) = l1.recv(QUIET / 4) {
            let Ev::Line(line) = &ev else {
                panic!("l1: {ev:?}")
            };
            let (ps, p) =
                as_pin(line).unwrap_or_else(|| panic!("l1: before the first ack: {ev:?}"));
            got.push(p);
            l1.ack(ps);
        }
    }
    l1.ack(s0);
    let (r, rest) = l1.reply(s, "watch @at1");
    assert_eq!(r, "ok");
    got.extend(rest);
    assert_eq!(
        pin_map(oid, &got),
        pins(&[
            (0, Some(at0)),
            (2, Some(at1)),
            (3, Some(at0)),
            (5, Some(at0))
        ]),
        "watch @at1 (at0={at0} at1={at1} at2={at2} at3={at3} at4={at4} at5={at5})"
    );

    // a link @at2, moved forward step by step
    let mut l2 = Link::open(&srv, "l2", false);
    assert_eq!(
        l2.watch_ok(oid, at2),
        pins(&[
            (0, Some(at0)),
            (2, Some(at2)),
            (3, Some(at2)),
            (5, Some(at2))
        ]),
        "watch @at2"
    );
    assert_eq!(
        l2.watch_ok(oid, at3),
        pins(&[(0, None), (2, Some(at3)), (5, Some(at3))]),
        "watch @at2 -> @at3"
    );
    assert_eq!(
        l2.watch_ok(oid, at4),
        pins(&[(2, None), (5, Some(at4))]),
        "watch @at3 -> @at4"
    );
    assert_eq!(
        l2.watch_ok(oid, at5),
        pins(&[(3, None), (5, None)]),
        "watch @at4 -> @at5"
    );
    assert_eq!(l2.watch_ok(oid, at5), pins(&[]), "watch @at5 again");

    // at head: no pins
    let mut l3 = Link::open(&srv, "l3", false);
    assert_eq!(l3.watch_ok(oid, at5), pins(&[]), "new watch @head");

    // going back in history on the same link
    let (r, p) = l2.watch(oid, &format!("@{at1}"));
    assert_eq!(
        r,
        format!("error setup watch f<{oid}> @{at1}: going back in history is forbidden")
    );
    assert!(p.is_empty(), "{p:?}");

    // ahead of head: ok only once a commit reaches it (the commit changes
    // block 4, which nobody read: no pins)
    let ahead = after(at5);
    let s = l3.request(&format!("watch {oid} @{ahead}"));
    l3.expect_quiet("watch ahead of head, before the commit");
    let at6 = commit(&mut zw, oid, &mut m, 6, &[4]);
    assert!(at6 >= ahead);
    let (r, p) = l3.reply(s, "watch ahead of head, after the commit");
    assert_eq!(r, "ok");
    assert!(p.is_empty(), "{p:?}");
    srv.wait_head(at6);

    // `watch -`: later reads do not pin this link
    assert_eq!(l1.watch(oid, "-").0, "ok");
    assert_eq!(l2.watch(oid, "-").0, "ok");
    assert_eq!(srv.stat("Watch"), 1);
    let at7 = commit(&mut zw, oid, &mut m, 7, &[2]);
    srv.wait_head(at7);
    let rd = read_blk_bg(srv.head_file(oid), 2, BS);
    // l3 (@at6) gets the lazy pin of block 2, changed at at7
    let (s, p) = l3.pin("lazy pin on l3");
    assert_eq!(
        p,
        Pin {
            oid,
            blk: 2,
            rev: Some(at4)
        }
    );
    l3.ack(s);
    eq_blk(&wait_read(&rd, WAIT, "#2"), &want(&m, 2), "head #2 @at7");
    l1.expect_quiet("l1 after watch -");
    l2.expect_quiet("l2 after watch -");

    // `watch -` of a file never watched on this link is fine too
    let mut l4 = Link::open(&srv, "l4", false);
    assert_eq!(l4.watch(oid, "-").0, "ok");
    for l in [l1, l2, l3, l4] {
        l.bye();
    }
    srv.wait_stat("WatchLink", 0);
    srv.wait_stat("Watch", 0);
    drop(f); // an open file would hold up the unmount
    srv.finish();
}

/// Edges of setup: a stream with leading zeros is accepted (and answered
/// without them), `@ffffffffffffffff` removes the watch like `-`, an `at`
/// before the history tail is refused.
#[test]
fn watch_setup_edges() {
    let dir = tempfile::tempdir().unwrap();
    let (mut zw, oid, mut m) = db_with(dir.path(), &[0, 1]);
    let c0 = zw.head();
    let c1 = commit(&mut zw, oid, &mut m, 1, &[1]);
    let srv = Server::start_opts(dir.path(), &dir.path().join("Data.fs"), &[]);
    assert_eq!(srv.head_at(), c1);
    let f = File::open(srv.head_file(oid)).unwrap();

    let mut l = Link::open(&srv, "edges", false);
    l.send_raw(&format!("007 watch {oid} @{c1}\n")).unwrap();
    assert_eq!(l.reply(7, "stream 007"), ("ok".to_owned(), vec![]));
    assert_eq!(srv.stat("Watch"), 1);
    let (r, _) = l.watch(oid, "@ffffffffffffffff");
    assert_eq!(r, "ok", "@ffffffffffffffff");
    srv.wait_stat("Watch", 0);

    // the tail is head/at at start: c0 is before it
    let (r, _) = l.watch(oid, &format!("@{c0}"));
    let want =
        format!("error setup watch f<{oid}> @{c0}: too far away back from head/at (@{c1}); δt = ");
    assert!(r.starts_with(&want), "{r:?}, want {want:?}...");
    // the link stays usable
    assert_eq!(l.watch_ok(oid, c1), pins(&[]));

    // a file created after the watch's at: its epoch is in (at, head]
    let (goid, c2) = zw
        .create_file("g", BS, &[(0, Some((ZBlkFormat::ZBlk0, b"g")))])
        .unwrap();
    srv.wait_head(c2);
    let g = File::open(srv.head_file(goid)).unwrap();
    let (r, _) = l.watch(goid, &format!("@{c1}"));
    assert_eq!(
        r,
        format!(
            "error setup watch f<{goid}> @{c1}: file epoch detected @{c2} in between (at,head=@{c2}]"
        )
    );
    assert_eq!(l.watch_ok(goid, c2), pins(&[]));
    l.bye();
    srv.wait_stat("WatchLink", 0);
    drop(f); // an open file would hold up the unmount
    drop(g); // an open file would hold up the unmount
    srv.finish();
}

/// One setup with many pins (all sent before `ok`), then many unpins.
#[test]
fn many_pins_in_one_setup() {
    const N: i64 = 64;
    let dir = tempfile::tempdir().unwrap();
    let (mut zw, oid, mut m) = db_with(dir.path(), &(0..N).collect::<Vec<_>>());
    let srv = Server::start_opts(dir.path(), &dir.path().join("Data.fs"), &[]);
    let at0 = srv.head_at();
    let p = srv.head_file(oid);
    for b in 0..N {
        eq_blk(&read_blk(&p, b, BS), &want(&m, b), &format!("#{b}"));
    }
    let at1 = commit(&mut zw, oid, &mut m, 1, &(0..N).collect::<Vec<_>>());
    srv.wait_head(at1);
    let mut l = Link::open(&srv, "l", false);
    let all: Vec<(i64, Option<Tid>)> = (0..N).map(|b| (b, Some(at0))).collect();
    // sent in parallel: all of them come before any is acked
    let c = l.request(&format!("watch {oid} @{at0}"));
    let got: Vec<(u64, Pin)> = (0..N)
        .map(|i| l.pin(&format!("setup pin {i}, none acked")))
        .collect();
    l.expect_quiet("no ok before the acks");
    for (s, _) in &got {
        l.ack(*s);
    }
    assert_eq!(l.reply(c, "setup @at0"), ("ok".to_owned(), vec![]));
    let got: Vec<Pin> = got.into_iter().map(|(_, p)| p).collect();
    assert_eq!(pin_map(oid, &got), pins(&all));
    assert_eq!(srv.stat("PinnedBlk"), N as u64);
    let none: Vec<(i64, Option<Tid>)> = (0..N).map(|b| (b, None)).collect();
    assert_eq!(l.watch_ok(oid, at1), pins(&none));
    assert_eq!(srv.stat("PinnedBlk"), 0);
    assert_eq!(srv.stat("pin"), 2 * N as u64);
    l.bye();
    srv.wait_stat("WatchLink", 0);
    srv.finish();
}

// ---- 3) lazy pins on READ ----

/// A READ of a block changed after a watch's `at` pins it on the watch and
/// returns only after the ack; the same block is not pinned again; a block
/// unchanged since `at` is not pinned; mmap page faults pin the same way.
#[test]
fn lazy_pin_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let (mut zw, oid, mut m) = db_with(dir.path(), &[0, 1, 2, 3]);
    let old = m.clone();
    let srv = Server::start_opts(dir.path(), &dir.path().join("Data.fs"), &[]);
    let at0 = srv.head_at();
    let p = srv.head_file(oid);
    for b in 0..4 {
        eq_blk(&read_blk(&p, b, BS), &want(&m, b), &format!("#{b} @at0"));
    }
    let mut w = Link::open(&srv, "w", false);
    assert_eq!(w.watch_ok(oid, at0), pins(&[]));
    // mapped before the commit, touched after
    let mf = File::open(&p).unwrap();
    // SAFETY (test): read-only mapping of a file nobody truncates.
    let map = unsafe { Mmap::map(&mf) }.unwrap();
    // no readahead around faults (it would READ and pin other blocks)
    map.advise(memmap2::Advice::Random).unwrap();
    let at1 = commit(&mut zw, oid, &mut m, 1, &[1, 2]);
    srv.wait_head(at1);
    assert_eq!(srv.stat("pin"), 0);

    // read(2) of block 1 in another thread: pinned to @at0 and blocked
    let rd = read_blk_bg(p.clone(), 1, BS);
    let (s, pin) = w.pin("lazy pin of #1");
    assert_eq!(
        pin,
        Pin {
            oid,
            blk: 1,
            rev: Some(at0)
        }
    );
    // what a client maps for the pin, read before the ack
    eq_blk(
        &read_blk(&srv.p(&format!("@{at0}/bigfile/{oid}")), 1, BS),
        &want(&old, 1),
        "@at0 #1",
    );
    assert!(
        rd.recv_timeout(QUIET).is_err(),
        "the read of #1 returned before the pin was acked"
    );
    w.ack(s);
    eq_blk(&wait_read(&rd, WAIT, "#1"), &want(&m, 1), "head #1 @at1");
    assert_eq!(srv.stat("pin"), 1);

    // again, out of the page cache: a READ, but no new pin
    drop_cache(&p);
    let rd = read_blk_bg(p.clone(), 1, BS);
    eq_blk(
        &wait_read(&rd, WAIT, "#1 again"),
        &want(&m, 1),
        "head #1 again",
    );
    w.expect_quiet("second read of #1");
    // a block unchanged since at0: no pin
    drop_cache(&p);
    let rd = read_blk_bg(p.clone(), 3, BS);
    eq_blk(&wait_read(&rd, WAIT, "#3"), &want(&m, 3), "head #3");
    w.expect_quiet("read of #3");
    assert_eq!(srv.stat("pin"), 1);

    // a page fault on block 2 through the old mapping pins it too
    let (tx, rx) = std::sync::mpsc::channel();
    let off = (2 * BS) as usize;
    std::thread::scope(|sc| {
        let map = &map;
        sc.spawn(move || {
            let _ = tx.send(map[off..off + BS as usize].to_vec());
        });
        let (s, pin) = w.pin("lazy pin of #2 by a page fault");
        assert_eq!(
            pin,
            Pin {
                oid,
                blk: 2,
                rev: Some(at0)
            }
        );
        assert!(
            rx.recv_timeout(QUIET).is_err(),
            "the fault returned before the ack"
        );
        w.ack(s);
        eq_blk(&wait_read(&rx, WAIT, "fault #2"), &want(&m, 2), "mapped #2");
    });
    assert_eq!(srv.stat("pin"), 2);
    assert_eq!(srv.stat("PinnedBlk"), 2);
    drop(map);
    drop(mf);
    w.bye();
    srv.wait_stat("WatchLink", 0);
    srv.finish();
}

/// Early pins (`option early-pins`, our extension): a commit pins such a
/// link's watches with no READ, and head/at moves only once they are
/// acked (the changed blocks leave the cache after the pins); a link
/// without the option still gets lazy pins only, and an unknown option is
/// an error that keeps the link. A never-acking early client holds head/at
/// back by about a second (`serve::early::EARLY_WAIT`), not by its pin
/// timeout, and is still killed at that timeout.
#[test]
fn early_pins() {
    const PINTIMEOUT: u64 = 12;
    let dir = tempfile::tempdir().unwrap();
    let (mut zw, oid, mut m, srv, at0, p) = served_and_read(dir.path(), &[0, 1, 2, 3], PINTIMEOUT);
    let mut e = Link::open(&srv, "early", false);
    let s = e.request(proto::OPTION_EARLY_PINS);
    assert_eq!(e.reply(s, "option early-pins").0, "ok");
    let s = e.request("option nope");
    assert_eq!(
        e.reply(s, "option nope").0,
        r#"error unknown option: "nope""#
    );
    let mut l = Link::open(&srv, "lazy", false);
    assert_eq!(e.watch_ok(oid, at0), pins(&[]));
    assert_eq!(l.watch_ok(oid, at0), pins(&[]));

    let at1 = commit(&mut zw, oid, &mut m, 1, &[1, 2]);
    let (s1, p1) = e.pin("early pin");
    let (s2, p2) = e.pin("early pin");
    assert_eq!(
        pin_map(oid, &[p1, p2]),
        pins(&[(1, Some(at0)), (2, Some(at0))])
    );
    std::thread::sleep(QUIET);
    assert_eq!(
        srv.head_at(),
        at0,
        "head/at moved before the early pins were acked"
    );
    l.expect_quiet("lazy link at a commit");
    e.ack(s1);
    e.ack(s2);
    srv.wait_head(at1);
    // a READ of #1 now pins the lazy link only
    let rd = read_blk_bg(p.clone(), 1, BS);
    let (s, pin) = l.pin("lazy pin of #1");
    assert_eq!(
        pin,
        Pin {
            oid,
            blk: 1,
            rev: Some(at0)
        }
    );
    l.ack(s);
    eq_blk(&wait_read(&rd, WAIT, "#1"), &want(&m, 1), "head #1 @at1");
    e.expect_quiet("early link: #1 is pinned already");
    l.bye();
    assert_eq!(e.watch_ok(oid, at1), pins(&[(1, None), (2, None)]));

    // a never-acking early client
    let mut c = Proc::spawn("early-noack", &srv, oid, at1);
    eq_blk(&read_blk(&p, 3, BS), &want(&m, 3), "#3 @at1");
    let t0 = Instant::now();
    let at2 = commit(&mut zw, oid, &mut m, 2, &[3]);
    let (s, pin) = e.pin("early pin of #3");
    // (to the block's own revision, as any pin)
    assert_eq!(
        pin,
        Pin {
            oid,
            blk: 3,
            rev: Some(at0)
        }
    );
    e.ack(s);
    srv.wait_head(at2);
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(PINTIMEOUT / 2),
        "head/at waited {took:?} for a client that never acks (pin timeout {PINTIMEOUT} s)"
    );
    let line = c.expect("line", "the child's early pin");
    assert!(line.contains("pin ") && line.contains("#3"), "{line}");
    // the pin nobody READ for is still settled at the pin timeout
    let st = c.wait_exit(Duration::from_secs(3 * PINTIMEOUT + 6));
    let sig = term_signal(st);
    assert!(
        sig == Some(Signal::SIGBUS as i32) || sig == Some(Signal::SIGKILL as i32),
        "early-noack child: {st}"
    );
    srv.wait_stat("pinkill", 1);
    e.bye();
    srv.wait_stat("WatchLink", 0);
    srv.finish();
}

/// A READ pins all watches of the file in parallel (both pins arrive
/// before either is acked) and returns only after the last ack; a link
/// that watches two files gets the pins of each with its oid.
#[test]
fn pins_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let (mut zw, oid, mut m) = db_with(dir.path(), &[0, 1, 2]);
    let gd = data(9, 0);
    let (goid, _) = zw
        .create_file("g", BS, &[(0, Some((ZBlkFormat::ZBlk0, &gd[..])))])
        .unwrap();
    let mut gm: Model = [(0, gd.clone())].into();
    let srv = Server::start_opts(dir.path(), &dir.path().join("Data.fs"), &[]);
    let at0 = srv.head_at();
    let (p, pg) = (srv.head_file(oid), srv.head_file(goid));
    for b in 0..3 {
        eq_blk(&read_blk(&p, b, BS), &want(&m, b), &format!("f #{b}"));
    }
    eq_blk(&read_blk(&pg, 0, BS), &gd, "g #0");
    let mut l1 = Link::open(&srv, "l1", false);
    let mut l2 = Link::open(&srv, "l2", false);
    assert_eq!(l1.watch_ok(oid, at0), pins(&[]));
    assert_eq!(l1.watch_ok(goid, at0), pins(&[]));
    assert_eq!(l2.watch_ok(oid, at0), pins(&[]));
    assert_eq!(srv.stat("Watch"), 3);
    let at1 = commit(&mut zw, oid, &mut m, 1, &[1]);
    let at2 = commit(&mut zw, goid, &mut gm, 2, &[0]);
    srv.wait_head(at2);

    let rd = read_blk_bg(p.clone(), 1, BS);
    let (s1, p1) = l1.pin("l1: pin of f #1");
    let (s2, p2) = l2.pin("l2: pin of f #1 (before l1's ack)");
    let want_pin = Pin {
        oid,
        blk: 1,
        rev: Some(at0),
    };
    assert_eq!((p1, p2), (want_pin, want_pin));
    l1.ack(s1);
    assert!(
        rd.recv_timeout(QUIET).is_err(),
        "the read returned with l2's pin pending"
    );
    l2.ack(s2);
    eq_blk(&wait_read(&rd, WAIT, "f #1"), &want(&m, 1), "f #1 @at1");

    let rd = read_blk_bg(pg.clone(), 0, BS);
    let (s, pin) = l1.pin("l1: pin of g #0");
    assert_eq!(
        pin,
        Pin {
            oid: goid,
            blk: 0,
            rev: Some(at0)
        },
        "at1={at1}"
    );
    l1.ack(s);
    eq_blk(&wait_read(&rd, WAIT, "g #0"), &want(&gm, 0), "g #0 @at2");
    l2.expect_quiet("l2 does not watch g");
    assert_eq!(srv.stat("pin"), 3);
    assert_eq!(srv.stat("PinnedBlk"), 3);
    l1.bye();
    l2.bye();
    srv.wait_stat("WatchLink", 0);
    srv.wait_stat("PinnedBlk", 0);
    srv.finish();
}

/// Replies to `streams` (any order) with the pins acked meanwhile.
fn replies(l: &mut Link, streams: &[u64], what: &str) -> (BTreeMap<u64, String>, Vec<Pin>) {
    let (mut got, mut pins) = (BTreeMap::new(), Vec::new());
    while got.len() < streams.len() {
        let line = l.line(what);
        if let Some((s, p)) = as_pin(&line) {
            pins.push(p);
            l.ack(s);
            continue;
        }
        let fr = proto::parse_frame(&line).unwrap();
        assert!(streams.contains(&fr.stream), "{what}: unexpected {line:?}");
        assert!(
            got.insert(fr.stream, fr.msg.to_owned()).is_none(),
            "{what}: {line:?}"
        );
    }
    (got, pins)
}

/// On one link, setups of different files run concurrently (one is done
/// while the other waits for an ack), and a second setup of the same file
/// waits for the first; it then unpins what the first pinned.
#[test]
fn setups_on_one_link() {
    let dir = tempfile::tempdir().unwrap();
    let (mut zw, oid, mut m) = db_with(dir.path(), &[0, 1]);
    let gd = data(9, 0);
    let (goid, _) = zw
        .create_file("g", BS, &[(0, Some((ZBlkFormat::ZBlk0, &gd[..])))])
        .unwrap();
    let mut gm: Model = [(0, gd)].into();
    let srv = Server::start_opts(dir.path(), &dir.path().join("Data.fs"), &[]);
    let at0 = srv.head_at();
    let (p, pg) = (srv.head_file(oid), srv.head_file(goid));
    eq_blk(&read_blk(&p, 0, BS), &want(&m, 0), "f #0");
    eq_blk(&read_blk(&pg, 0, BS), &want(&gm, 0), "g #0");
    let at1 = commit(&mut zw, oid, &mut m, 1, &[0]);
    let at2 = commit(&mut zw, goid, &mut gm, 2, &[0]);
    srv.wait_head(at2);

    let mut l = Link::open(&srv, "l", false);
    let a = l.request(&format!("watch {oid} @{at0}"));
    let (sa, pa) = l.pin("f's setup pin");
    assert_eq!(
        pa,
        Pin {
            oid,
            blk: 0,
            rev: Some(at0)
        }
    );
    // g's setup completes while f's pin waits
    let b = l.request(&format!("watch {goid} @{at0}"));
    let (sb, pb) = l.pin("g's setup pin, f's not acked");
    assert_eq!(
        pb,
        Pin {
            oid: goid,
            blk: 0,
            rev: Some(at0)
        }
    );
    l.ack(sb);
    assert_eq!(l.line("g's reply"), format!("{b} ok"));
    // a second setup of f waits for the first
    let c = l.request(&format!("watch {oid} @{at1}"));
    l.expect_quiet("f's second setup while the first waits for its ack");
    l.ack(sa);
    let (got, pins) = replies(&mut l, &[a, c], "both setups of f");
    assert_eq!(got, [(a, "ok".to_owned()), (c, "ok".to_owned())].into());
    assert_eq!(
        pin_map(oid, &pins),
        self::pins(&[(0, None)]),
        "f @at0 -> @at1"
    );
    assert_eq!(srv.stat("Watch"), 2);
    l.bye();
    srv.wait_stat("WatchLink", 0);
    srv.finish();
}

/// Setups and lazy pins of one watch meet: a setup does not wait for a
/// lazy pin in flight (it unpins that block at once, queued after the lazy
/// pin, with nothing re-pinned after it); while setup pins are in flight the new `at` already holds for
/// READs (a block it covers is not pinned and its READ does not wait), and
/// a READ of a block being setup-pinned waits for that pin without a
/// second one.
#[test]
fn setup_and_read_races() {
    let dir = tempfile::tempdir().unwrap();
    let (mut zw, oid, mut m) = db_with(dir.path(), &[0, 1, 2, 3]);
    let srv = Server::start_opts(dir.path(), &dir.path().join("Data.fs"), &[]);
    let at0 = srv.head_at();
    let p = srv.head_file(oid);
    for b in 0..4 {
        eq_blk(&read_blk(&p, b, BS), &want(&m, b), &format!("#{b}"));
    }
    let mut w = Link::open(&srv, "w", false);
    assert_eq!(w.watch_ok(oid, at0), pins(&[]));
    let at1 = commit(&mut zw, oid, &mut m, 1, &[1]);
    srv.wait_head(at1);

    // a lazy pin in flight, then a setup to at1
    let rd = read_blk_bg(p.clone(), 1, BS);
    let (s1, pin) = w.pin("lazy pin of #1");
    assert_eq!(
        pin,
        Pin {
            oid,
            blk: 1,
            rev: Some(at0)
        }
    );
    // The setup does not wait for the lazy pin in flight (nothing waits
    // for a client while holding what others need): it moves the watch and
    // unpins #1 at once, queued after the lazy pin, so a client that takes
    // its pins in order ends with #1 at head, as at1 wants.
    let c = w.request(&format!("watch {oid} @{at1}"));
    let (s2, unpin) = w.pin("the setup's unpin of #1");
    assert_eq!(
        unpin,
        Pin {
            oid,
            blk: 1,
            rev: None
        },
        "setup @at0 -> @at1"
    );
    assert!(s2 > s1, "queued after the lazy pin");
    w.expect_quiet("the setup waits for its unpin's ack");
    w.ack(s1);
    eq_blk(&wait_read(&rd, WAIT, "#1"), &want(&m, 1), "#1 @at1");
    w.expect_quiet("the setup still waits for its unpin's ack");
    w.ack(s2);
    let (r, got) = w.reply(c, "setup @at1");
    assert_eq!(r, "ok");
    assert_eq!(pin_map(oid, &got), pins(&[]), "nothing more");
    w.expect_quiet("after the setup");

    // setup pins in flight, READs meanwhile
    let at2 = commit(&mut zw, oid, &mut m, 2, &[2]);
    let at3 = commit(&mut zw, oid, &mut m, 3, &[3]);
    srv.wait_head(at3);
    let c = w.request(&format!("watch {oid} @{at2}"));
    let (s3, pin) = w.pin("setup pin of #3");
    assert_eq!(
        pin,
        Pin {
            oid,
            blk: 3,
            rev: Some(at0)
        },
        "at2={at2} at3={at3}"
    );
    // #2 changed at at2: covered by the new at, no pin, no wait
    let rd2 = read_blk_bg(p.clone(), 2, BS);
    eq_blk(
        &wait_read(&rd2, WAIT, "#2"),
        &want(&m, 2),
        "#2 @at3, setup pin pending",
    );
    // #3: waits for the setup's pin, no second pin
    let rd3 = read_blk_bg(p.clone(), 3, BS);
    w.expect_quiet("READ of #3 while its setup pin is in flight");
    assert!(
        rd3.try_recv().is_err(),
        "#3 returned before its pin was acked"
    );
    w.ack(s3);
    assert_eq!(w.reply(c, "setup @at2"), ("ok".to_owned(), vec![]));
    eq_blk(&wait_read(&rd3, WAIT, "#3"), &want(&m, 3), "#3 @at3");
    w.expect_quiet("after the setup @at2");
    assert_eq!(srv.stat("pin"), 3);
    w.bye();
    srv.wait_stat("WatchLink", 0);
    srv.finish();
}

/// A commit that changes a block while the setup's unpin of that block
/// (to @head) is in flight: whether the commit waits for the setup or not,
/// the next READ of the block pins it back to the watch's `at`, so the
/// client never sees the newer data.
#[test]
fn commit_during_unpin() {
    let dir = tempfile::tempdir().unwrap();
    let (mut zw, oid, mut m) = db_with(dir.path(), &[0, 1]);
    let srv = Server::start_opts(dir.path(), &dir.path().join("Data.fs"), &[]);
    let at0 = srv.head_at();
    let p = srv.head_file(oid);
    eq_blk(&read_blk(&p, 1, BS), &want(&m, 1), "#1");
    let mut w = Link::open(&srv, "w", false);
    assert_eq!(w.watch_ok(oid, at0), pins(&[]));
    let at1 = commit(&mut zw, oid, &mut m, 1, &[1]);
    srv.wait_head(at1);
    let m1 = m.clone();
    let rd = read_blk_bg(p.clone(), 1, BS);
    let (s, pin) = w.pin("lazy pin of #1");
    assert_eq!(
        pin,
        Pin {
            oid,
            blk: 1,
            rev: Some(at0)
        }
    );
    w.ack(s);
    eq_blk(&wait_read(&rd, WAIT, "#1"), &want(&m, 1), "#1 @at1");

    // move to at1: #1 is unpinned; a commit changes #1 meanwhile
    let c = w.request(&format!("watch {oid} @{at1}"));
    let (s, pin) = w.pin("unpin of #1");
    assert_eq!(
        pin,
        Pin {
            oid,
            blk: 1,
            rev: None
        }
    );
    let at2 = commit(&mut zw, oid, &mut m, 2, &[1]);
    std::thread::sleep(QUIET);
    w.ack(s);
    assert_eq!(w.reply(c, "setup @at1"), ("ok".to_owned(), vec![]));
    srv.wait_head(at2);
    // the next READ of #1 pins it to at1 before anyone gets the at2 data
    let rd = read_blk_bg(p.clone(), 1, BS);
    let (s, pin) = w.pin("#1 pinned back to at1");
    assert_eq!(
        pin,
        Pin {
            oid,
            blk: 1,
            rev: Some(at1)
        },
        "at2={at2}"
    );
    eq_blk(
        &read_blk(&srv.p(&format!("@{at1}/bigfile/{oid}")), 1, BS),
        &want(&m1, 1),
        "@at1 #1",
    );
    w.ack(s);
    eq_blk(&wait_read(&rd, WAIT, "#1"), &want(&m, 1), "#1 @at2");
    w.bye();
    srv.wait_stat("WatchLink", 0);
    srv.finish();
}

/// What a pinner does to handle a pin — look up, open and read
/// `@<rev>/bigfile/<oid>`, stat the head file — does not wait for a commit
/// that itself waits for the READ that sent the pin (else the client and
/// the commit deadlock until the pin times out).
#[test]
fn pinner_not_blocked_by_waiting_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (mut zw, oid, mut m) = db_with(dir.path(), &[0, 1, 2]);
    let old = m.clone();
    let srv = Server::start_opts(dir.path(), &dir.path().join("Data.fs"), &[]);
    let at0 = srv.head_at();
    let p = srv.head_file(oid);
    for b in 0..3 {
        eq_blk(&read_blk(&p, b, BS), &want(&m, b), &format!("#{b}"));
    }
    let mut w = Link::open(&srv, "w", false);
    assert_eq!(w.watch_ok(oid, at0), pins(&[]));
    let at1 = commit(&mut zw, oid, &mut m, 1, &[1]);
    srv.wait_head(at1);

    let rd = read_blk_bg(p.clone(), 1, BS);
    let (s, pin) = w.pin("lazy pin of #1");
    assert_eq!(
        pin,
        Pin {
            oid,
            blk: 1,
            rev: Some(at0)
        }
    );
    // a commit arrives while the pin is in flight
    let at2 = commit(&mut zw, oid, &mut m, 2, &[2]);
    std::thread::sleep(QUIET);
    // the pinner's work, in a thread: it must finish with the pin unacked
    let (tx, rx) = std::sync::mpsc::channel();
    let (revf, headf) = (srv.p(&format!("@{at0}/bigfile/{oid}")), p.clone());
    std::thread::spawn(move || {
        let size = std::fs::metadata(&headf).map(|md| md.len());
        let data = read_blk(&revf, 1, BS);
        let _ = tx.send((size, data));
    });
    let got = rx.recv_timeout(Duration::from_secs(5));
    w.ack(s);
    let (size, data) = got.expect("the pinner's lookups and reads waited for the commit");
    assert_eq!(size.unwrap(), 3 * BS);
    eq_blk(&data, &want(&old, 1), "@at0 #1");
    eq_blk(&wait_read(&rd, WAIT, "#1"), &want(&m, 1), "#1");
    srv.wait_head(at2);
    let rd = read_blk_bg(p.clone(), 2, BS);
    let (s, pin) = w.pin("lazy pin of #2");
    assert_eq!(
        pin,
        Pin {
            oid,
            blk: 2,
            rev: Some(at0)
        }
    );
    w.ack(s);
    eq_blk(&wait_read(&rd, WAIT, "#2"), &want(&m, 2), "#2 @at2");
    w.bye();
    srv.wait_stat("WatchLink", 0);
    srv.finish();
}

/// A client killed while blocked in read(2) of its link dies at once (the
/// server answers the INTERRUPT) and its link goes; one killed while a pin
/// to it is pending is not counted as a kill, and the READ completes.
#[test]
fn clients_killed_by_others() {
    let dir = tempfile::tempdir().unwrap();
    let (mut zw, oid, mut m) = db_with(dir.path(), &[0, 1]);
    let srv = Server::start_opts(
        dir.path(),
        &dir.path().join("Data.fs"),
        &["--pintimeout", "3"],
    );
    let at0 = srv.head_at();
    let p = srv.head_file(oid);
    eq_blk(&read_blk(&p, 1, BS), &want(&m, 1), "#1");

    let mut c = Proc::spawn("good", &srv, oid, at0);
    std::thread::sleep(QUIET);
    c.signal(Signal::SIGKILL);
    let st = c.wait_exit(Duration::from_secs(5));
    assert_eq!(term_signal(st), Some(Signal::SIGKILL as i32), "{st}");
    srv.wait_stat("WatchLink", 0);
    srv.wait_stat("Watch", 0);

    let mut c = Proc::spawn("noack", &srv, oid, at0);
    let at1 = commit(&mut zw, oid, &mut m, 1, &[1]);
    srv.wait_head(at1);
    let rd = read_blk_bg(p.clone(), 1, BS);
    c.expect("line ", "the pin");
    c.signal(Signal::SIGKILL);
    eq_blk(&wait_read(&rd, WAIT, "#1"), &want(&m, 1), "#1 @at1");
    c.wait_exit(Duration::from_secs(5));
    srv.wait_stat("WatchLink", 0);
    assert_eq!(srv.stat("pinkill"), 0);
    srv.finish();
}

/// Shapes of lazy pins: concurrent READs of one block send one pin and
/// all wait for its ack; one read(2) over several changed blocks pins each
/// of them; a block past the old EOF (the file grew after `at`) pins to
/// the tail (it was a hole as of `at`).
#[test]
fn lazy_pin_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut zw, oid, mut m) = db_with(dir.path(), &[0, 1, 2, 3, 4]);
    let srv = Server::start_opts(dir.path(), &dir.path().join("Data.fs"), &[]);
    let at0 = srv.head_at();
    let p = srv.head_file(oid);
    for b in 0..5 {
        eq_blk(&read_blk(&p, b, BS), &want(&m, b), &format!("#{b}"));
    }
    let mut w = Link::open(&srv, "w", false);
    assert_eq!(w.watch_ok(oid, at0), pins(&[]));
    commit(&mut zw, oid, &mut m, 1, &[0, 2, 3, 4, 7]);
    // and #1 becomes a hole
    let at1 = zw.update_file(oid, &[(1, None)]).unwrap();
    m.remove(&1);
    srv.wait_head(at1);
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 8 * BS);

    // three readers of #0 at once: one pin
    let rds: Vec<_> = (0..3).map(|_| read_blk_bg(p.clone(), 0, BS)).collect();
    let (s, pin) = w.pin("pin of #0");
    assert_eq!(
        pin,
        Pin {
            oid,
            blk: 0,
            rev: Some(at0)
        }
    );
    for rd in &rds {
        assert!(
            rd.recv_timeout(QUIET / 3).is_err(),
            "a read of #0 returned before the ack"
        );
    }
    w.ack(s);
    for rd in &rds {
        eq_blk(&wait_read(rd, WAIT, "#0"), &want(&m, 0), "#0 @at1");
    }
    w.expect_quiet("after the reads of #0");

    // one read(2) of #2..#4
    let (tx, rx) = std::sync::mpsc::channel();
    let pp = p.clone();
    std::thread::spawn(move || {
        let f = File::open(&pp).unwrap();
        nix::fcntl::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_RANDOM,
        )
        .unwrap();
        let _ = tx.send(read_at(&f, 2 * BS, 3 * BS as usize));
    });
    let mut got = Vec::new();
    for i in 0..3 {
        let (s, pin) = w.pin(&format!("pin {i} of the read of #2..#4"));
        got.push(pin);
        w.ack(s);
    }
    let data = wait_read(&rx, WAIT, "#2..#4");
    assert_eq!(
        pin_map(oid, &got),
        pins(&[(2, Some(at0)), (3, Some(at0)), (4, Some(at0))])
    );
    let mut all = want(&m, 2);
    all.extend(want(&m, 3));
    all.extend(want(&m, 4));
    eq_blk(&data, &all, "#2..#4 @at1");

    // #7 did not exist as of at0
    let rd = read_blk_bg(p.clone(), 7, BS);
    let (s, pin) = w.pin("pin of #7");
    assert_eq!(
        pin,
        Pin {
            oid,
            blk: 7,
            rev: Some(at0)
        }
    );
    w.ack(s);
    eq_blk(&wait_read(&rd, WAIT, "#7"), &want(&m, 7), "#7 @at1");
    // #1, deleted: reads as zeros, pinned to its data as of at0
    let rd = read_blk_bg(p.clone(), 1, BS);
    let (s, pin) = w.pin("pin of #1");
    assert_eq!(
        pin,
        Pin {
            oid,
            blk: 1,
            rev: Some(at0)
        }
    );
    w.ack(s);
    eq_blk(
        &wait_read(&rd, WAIT, "#1"),
        &vec![0; BS as usize],
        "#1 @at1 (deleted)",
    );
    // a hole that stayed a hole: no pin
    let rd = read_blk_bg(p.clone(), 5, BS);
    eq_blk(&wait_read(&rd, WAIT, "#5"), &want(&m, 5), "#5 (hole)");
    w.expect_quiet("read of the hole #5");
    assert_eq!(srv.stat("pin"), 6);
    w.bye();
    srv.wait_stat("WatchLink", 0);
    srv.finish();
}

/// Many links of one process on one file: one READ pins them all, with
/// their own revisions, and returns after the last ack.
#[test]
fn many_links_one_read() {
    const LINKS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let (mut zw, oid, mut m) = db_with(dir.path(), &[0]);
    let srv = Server::start_opts(dir.path(), &dir.path().join("Data.fs"), &[]);
    let p = srv.head_file(oid);
    eq_blk(&read_blk(&p, 0, BS), &want(&m, 0), "#0");
    // link i watches at ats[i / 10]: the state after i / 10 commits
    let mut ats = vec![srv.head_at()];
    for k in 1..4 {
        ats.push(commit(&mut zw, oid, &mut m, k, &[0]));
    }
    srv.wait_head(ats[3]);
    let mut links: Vec<Link> = (0..LINKS)
        .map(|i| Link::open(&srv, &format!("link {i}"), true))
        .collect();
    for (i, l) in links.iter_mut().enumerate() {
        let at = ats[i / 10];
        let want_pins = if at == ats[3] {
            pins(&[])
        } else {
            pins(&[(0, Some(at))])
        };
        assert_eq!(l.watch_ok(oid, at), want_pins, "link {i} @{at}");
    }
    assert_eq!(srv.stat("WatchLink"), LINKS as u64);
    let at4 = commit(&mut zw, oid, &mut m, 4, &[0]);
    srv.wait_head(at4);
    let rd = read_blk_bg(p.clone(), 0, BS);
    eq_blk(&wait_read(&rd, WAIT, "#0"), &want(&m, 0), "#0 @at4");
    for (i, l) in links.iter().enumerate() {
        // links at ats[0..3] have #0 pinned at their at already; those at
        // ats[3] get it now
        let want_pins = if i / 10 == 3 {
            pins(&[(0, Some(ats[3]))])
        } else {
            pins(&[])
        };
        assert_eq!(pin_map(oid, &l.take_pins()), want_pins, "link {i}");
    }
    for l in links {
        l.bye();
    }
    srv.wait_stat("WatchLink", 0);
    srv.finish();
}

/// The default readahead (128 KiB, README "Readahead") keeps a page
/// fault's read-around inside its block unless the fault is within 64 KiB
/// of the edge: faults 200 KiB before a 2 MiB block's end and 200 KiB
/// after another's start pin those two blocks and no neighbour (at 1 MiB
/// both would pull in, and pin, the blocks next to them).
#[test]
fn default_readahead_stays_in_the_block() {
    const BIG: u64 = 2 << 20;
    const NEAR: u64 = 200 << 10;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Data.fs");
    let mut zw = ZWriter::open(&db).unwrap();
    let gen = |tag: u64, b: i64| pattern(tag * 1000 + b as u64 + 1, BIG as usize);
    let blocks = |tag: u64| -> Vec<(i64, Vec<u8>)> { (0..4).map(|b| (b, gen(tag, b))).collect() };
    let d0 = blocks(0);
    let ch: Vec<BlkChange<'_>> = d0
        .iter()
        .map(|(b, v)| (*b, Some((ZBlkFormat::ZBlk0, v.as_slice()))))
        .collect();
    let (oid, _) = zw.create_file("f", BIG, &ch).unwrap();
    let srv = Server::start_opts(dir.path(), &db, &[]);
    let p = srv.head_file(oid);
    {
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(&srv.mnt).unwrap().dev();
        let (major, minor) = ((dev >> 8) & 0xfff, (dev & 0xff) | ((dev >> 12) & 0xfff00));
        let ra = std::fs::read_to_string(format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb"))
            .unwrap();
        assert_eq!(ra.trim(), "128", "the mount's readahead");
    }
    let at0 = srv.head_at();
    for (b, v) in &d0 {
        eq_blk(&read_blk(&p, *b, BIG), v, &format!("#{b} @at0"));
    }
    drop_cache(&p);
    let mut w = Link::open(&srv, "w", true);
    assert_eq!(w.watch_ok(oid, at0), pins(&[]));
    let d1 = blocks(1);
    let ch: Vec<BlkChange<'_>> = d1
        .iter()
        .map(|(b, v)| (*b, Some((ZBlkFormat::ZBlk0, v.as_slice()))))
        .collect();
    let at1 = zw.update_file(oid, &ch).unwrap();
    srv.wait_head(at1);
    assert_eq!(srv.stat("pin"), 0);
    let mf = File::open(&p).unwrap();
    // SAFETY (test): read-only mapping of a file nobody truncates.
    let map = unsafe { Mmap::map(&mf) }.unwrap();
    // near block 0's end, near block 3's start
    for (b, off) in [(0i64, BIG - NEAR), (3, 3 * BIG + NEAR)] {
        let got = map[off as usize];
        assert_eq!(
            got,
            d1[b as usize].1[(off % BIG) as usize],
            "#{b} at {off:#x}"
        );
    }
    let mut got: Vec<i64> = w.take_pins().iter().map(|p| p.blk).collect();
    got.sort();
    assert_eq!(got, vec![0, 3], "blocks pinned by the two faults");
    drop(map);
    w.bye();
    srv.wait_stat("WatchLink", 0);
    srv.finish();
}

/// Pages of `m` resident in the page cache, per `BS` block: how many of
/// its pages each block has (mincore; the mapping is never read).
fn resident_pages(m: &Mmap) -> Vec<usize> {
    let mut v = vec![0u8; m.len().div_ceil(4096)];
    // SAFETY: [ptr, ptr+len) is the live mapping `m`; v has one byte per
    // page of it.
    let r = unsafe { libc::mincore(m.as_ptr() as *mut libc::c_void, m.len(), v.as_mut_ptr()) };
    assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
    v.chunks(BS as usize / 4096)
        .map(|c| c.iter().filter(|&&b| b & 1 != 0).count())
        .collect()
}

/// Before a commit's invalidation drops a changed block from head/, the
/// server reads the block back from the kernel (NOTIFY_RETRIEVE) and puts
/// it into the cache of `@<rev>/bigfile/<oid>` (NOTIFY_STORE), if a READ
/// of the watched file served it whole at a view showing that revision
/// and the kernel still has all of it (issue 14, item 9; `serve/keep.rs`).
/// Checked with mincore on the `@rev` file (nobody reads it) and by
/// reading it with no READ reaching the server; a block cached only in
/// part, or never read, is not kept.
#[test]
fn old_data_kept_for_rev() {
    let dir = tempfile::tempdir().unwrap();
    let (mut zw, oid, mut m) = db_with(dir.path(), &[0, 1, 2, 3]);
    let old = m.clone();
    let srv = Server::start_opts(dir.path(), &dir.path().join("Data.fs"), &[]);
    let at0 = srv.head_at();
    let p = srv.head_file(oid);
    std::fs::metadata(&p).unwrap(); // known to wcfs, nothing read
    let mut w = Link::open(&srv, "w", true);
    assert_eq!(w.watch_ok(oid, at0), pins(&[]));
    // #0, #1 read whole, #2 half, #3 not at all
    for b in [0, 1] {
        eq_blk(&read_blk(&p, b, BS), &want(&m, b), &format!("#{b} @at0"));
    }
    {
        let f = File::open(&p).unwrap();
        nix::fcntl::posix_fadvise(
            f.as_raw_fd(),
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_RANDOM,
        )
        .unwrap();
        let half = read_at(&f, 2 * BS, BS as usize / 2);
        eq_blk(&half, &want(&m, 2)[..BS as usize / 2], "half of #2");
    }
    // a client of @at0 has it open (as a pinned client would)
    let rp = srv.p(&format!("@{at0}/bigfile/{oid}"));
    let rf = File::open(&rp).unwrap();
    // SAFETY (test): read-only mapping of an immutable @rev file.
    let rmap = unsafe { Mmap::map(&rf) }.unwrap();
    assert_eq!(resident_pages(&rmap), vec![0; 4], "@at0 before the commit");

    let at1 = commit(&mut zw, oid, &mut m, 1, &[0, 1, 2, 3]);
    srv.wait_head(at1);
    let full = BS as usize / 4096;
    assert_eq!(
        resident_pages(&rmap),
        vec![full, full, 0, 0],
        "@at0 after the commit: #0 and #1 kept"
    );
    assert_eq!(srv.stat("kept_blocks"), 2);
    assert_eq!(srv.stat("keep_missed"), 1, "#2: cached in part");
    // the kept bytes are the old blocks, served from the cache
    let reads = srv.stat("reads");
    for b in [0usize, 1] {
        let lo = b * BS as usize;
        eq_blk(
            &rmap[lo..lo + BS as usize],
            &old[&(b as i64)],
            &format!("@at0 #{b}"),
        );
    }
    assert_eq!(srv.stat("reads"), reads, "no READ for the kept blocks");
    eq_blk(&rmap[2 * BS as usize..3 * BS as usize], &old[&2], "@at0 #2");
    // head/ has the new data (reading it pins the watch to @at0)
    for b in 0..4 {
        eq_blk(&read_blk(&p, b, BS), &want(&m, b), &format!("#{b} @at1"));
    }
    drop((rmap, rf));
    w.bye();
    srv.wait_stat("WatchLink", 0);
    srv.finish();
}

// ---- 4) several links and processes ----

/// Links in this process and in two children, each at its own `at`: setup
/// pins and lazy pins with each one's own revisions; stats follow.
#[test]
fn many_links_and_processes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut zw, oid, mut m) = db_with(dir.path(), &[0, 1, 2, 3]);
    let srv = Server::start_opts(dir.path(), &dir.path().join("Data.fs"), &[]);
    let at0 = srv.head_at();
    let p = srv.head_file(oid);
    for b in 0..4 {
        eq_blk(&read_blk(&p, b, BS), &want(&m, b), &format!("#{b} @at0"));
    }
    let at1 = commit(&mut zw, oid, &mut m, 1, &[0, 1]);
    let at2 = commit(&mut zw, oid, &mut m, 2, &[0, 2]);
    let at3 = commit(&mut zw, oid, &mut m, 3, &[0]);
    srv.wait_head(at3);
    let ats = format!("at0={at0} at1={at1} at2={at2} at3={at3}");

    let mut la = Link::open(&srv, "la", true);
    let mut lb = Link::open(&srv, "lb", true);
    let mut lc = Link::open(&srv, "lc", true);
    assert_eq!(
        la.watch_ok(oid, at0),
        pins(&[(0, Some(at0)), (1, Some(at0)), (2, Some(at0))]),
        "la @at0 {ats}"
    );
    assert_eq!(
        lb.watch_ok(oid, at1),
        pins(&[(0, Some(at1)), (2, Some(at0))]),
        "lb @at1 {ats}"
    );
    assert_eq!(lc.watch_ok(oid, at3), pins(&[]), "lc @at3 {ats}");
    let mut p1 = Proc::spawn("good", &srv, oid, at1);
    let mut p2 = Proc::spawn("good", &srv, oid, at2);
    let setup = |p: &mut Proc| -> Vec<String> {
        p.drain()
            .iter()
            .filter(|m| m.starts_with("setup-"))
            .cloned()
            .collect()
    };
    let mut s1 = setup(&mut p1);
    s1.sort();
    assert_eq!(
        s1,
        [
            format!("setup-pin pin {oid} #0 @{at1}"),
            format!("setup-pin pin {oid} #2 @{at0}")
        ],
        "p1 @at1 {ats}"
    );
    assert_eq!(
        setup(&mut p2),
        [format!("setup-pin pin {oid} #0 @{at2}")],
        "p2 @at2 {ats}"
    );
    assert_eq!(srv.stat("WatchLink"), 5);
    assert_eq!(srv.stat("Watch"), 5);
    assert_eq!(srv.stat("pin"), 3 + 2 + 2 + 1);

    // one more commit, then reads of 0, 1, 3 through head/: pins only where
    // a watch has no pin of that block at that revision yet
    let at4 = commit(&mut zw, oid, &mut m, 4, &[0, 3]);
    srv.wait_head(at4);
    for b in [0, 1, 3] {
        let rd = read_blk_bg(p.clone(), b, BS);
        eq_blk(
            &wait_read(&rd, WAIT, &format!("#{b}")),
            &want(&m, b),
            &format!("head #{b} @at4"),
        );
    }
    let ats = format!("{ats} at4={at4}");
    assert_eq!(
        pin_map(oid, &la.take_pins()),
        pins(&[(3, Some(at0))]),
        "la {ats}"
    );
    assert_eq!(
        pin_map(oid, &lb.take_pins()),
        pins(&[(3, Some(at0))]),
        "lb {ats}"
    );
    assert_eq!(
        pin_map(oid, &lc.take_pins()),
        pins(&[(0, Some(at3)), (3, Some(at0))]),
        "lc {ats}"
    );
    // the children acked before the reads returned; their reports follow
    for (p, name) in [(&mut p1, "p1"), (&mut p2, "p2")] {
        p.expect("line ", &format!("{name}: lazy pin"));
    }
    std::thread::sleep(QUIET);
    for (p, name) in [(&mut p1, "p1"), (&mut p2, "p2")] {
        let got = p.pins_seen();
        assert_eq!(pin_map(oid, &got), pins(&[(3, Some(at0))]), "{name} {ats}");
    }
    assert_eq!(srv.stat("pin"), 8 + 1 + 1 + 2 + 1 + 1);

    // the children say bye and exit; then the links here
    p1.finish();
    p2.finish();
    srv.wait_stat("WatchLink", 3);
    srv.wait_stat("Watch", 3);
    for l in [la, lb, lc] {
        l.bye();
    }
    srv.wait_stat("WatchLink", 0);
    srv.wait_stat("Watch", 0);
    srv.wait_stat("PinnedBlk", 0);
    srv.finish();
}

// ---- isolation under concurrency ----

/// The data as of `t`: the last state committed at or before it.
fn model_at(hist: &[(Tid, Model)], t: Tid) -> &Model {
    &hist
        .iter()
        .rev()
        .find(|(tid, _)| *tid <= t)
        .expect("t before history")
        .1
}

/// Apply pins, in arrival order, to a client's pinned map.
fn apply_pins(pinned: &mut BTreeMap<i64, Tid>, pins: Vec<Pin>) {
    for p in pins {
        match p.rev {
            Some(r) => pinned.insert(p.blk, r),
            None => pinned.remove(&p.blk),
        };
    }
}

/// Isolation itself, while commits and READs of other threads run: for a
/// client at `at`, every block reads as of `at` — from `@<rev>/` where the
/// server pinned it (and then the block must not change in `(rev, at]`),
/// else from head/. One client stays at its first `at` (history must be
/// kept for it), the other moves forward every few commits.
#[test]
fn isolation_under_commits_and_reads() {
    const NBLK: i64 = 8;
    let dir = tempfile::tempdir().unwrap();
    let (mut zw, oid, mut m) = db_with(dir.path(), &(0..NBLK).collect::<Vec<_>>());
    let srv = Server::start_opts(dir.path(), &dir.path().join("Data.fs"), &[]);
    let at0 = srv.head_at();
    let p = srv.head_file(oid);
    for b in 0..NBLK {
        eq_blk(&read_blk(&p, b, BS), &want(&m, b), &format!("#{b} @at0"));
    }
    let mut hist = vec![(at0, m.clone())];
    // (client, its at, its pins)
    let mut clients = Vec::new();
    for name in ["stays @at0", "moves"] {
        let mut l = Link::open(&srv, name, true);
        assert_eq!(l.watch_ok(oid, at0), pins(&[]));
        clients.push((l, at0, BTreeMap::new()));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|i| {
            let (p, stop) = (p.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = i;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if n % 5 == 0 {
                        drop_cache(&p);
                    }
                    let _ = read_blk(&p, n % NBLK, BS);
                    n += 3;
                }
            })
        })
        .collect();

    let check =
        |hist: &[(Tid, Model)], clients: &mut Vec<(Link, Tid, BTreeMap<i64, Tid>)>, what: &str| {
            for (l, at, pinned) in clients.iter_mut() {
                let want_at = model_at(hist, *at);
                for b in 0..NBLK {
                    let head = read_blk(&p, b, BS);
                    // the read returned: its pins are acked and logged
                    apply_pins(pinned, l.take_pins());
                    let ctx = format!("{what}: client @{at}, #{b}, pinned {pinned:?}");
                    match pinned.get(&b) {
                        Some(&rev) => {
                            assert!(rev <= *at, "{ctx}: pinned after at");
                            let at_rev = want(model_at(hist, rev), b);
                            assert!(at_rev == want(want_at, b), "{ctx}: changed in (rev, at]");
                            let got = read_blk(&srv.p(&format!("@{rev}/bigfile/{oid}")), b, BS);
                            eq_blk(&got, &at_rev, &format!("{ctx}: @rev data"));
                        }
                        None => eq_blk(&head, &want(want_at, b), &format!("{ctx}: head data")),
                    }
                }
            }
        };

    for round in 1..=40u64 {
        let blks: Vec<i64> = (0..(round % 3 + 1) as i64)
            .map(|k| ((round as i64) * 5 + k * 3) % NBLK)
            .collect();
        let tid = commit(&mut zw, oid, &mut m, round, &blks);
        hist.push((tid, m.clone()));
        if round % 3 == 0 {
            // the moving client goes to a recent (not always the newest) at
            let to = hist[hist.len() - 2].0;
            srv.wait_head(to);
            let (l, at, pinned) = &mut clients[1];
            let (r, got) = l.watch(oid, &format!("@{to}"));
            assert_eq!(r, "ok", "watch @{to}");
            apply_pins(pinned, got);
            *at = to;
        }
        check(
            &hist,
            &mut clients,
            &format!("round {round} (commit {tid} of {blks:?})"),
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    srv.wait_head(hist.last().unwrap().0);
    check(&hist, &mut clients, "at the end");
    eprintln!("stats at the end: {:?}", srv.stats());
    for (l, _, _) in clients {
        l.bye();
    }
    srv.wait_stat("WatchLink", 0);
    srv.finish();
}

// ---- 5) faulty clients ----

/// A child in `role` and a well-behaved watcher here both watch f @at0; a
/// commit changes blocks 1 and 2; a read of #1 pins both. The child
/// misbehaves on its pin: it must end up killed (SIGBUS, or SIGKILL when
/// SIGBUS does not end it) within ~3×pintimeout — or for `close` and
/// `bye`, only be dropped — while the reader completes with head data and the watcher
/// keeps getting its pins.
fn faulty(child_role: &str) {
    faulty_with(child_role, false);
}

/// `faulty`; with `dead_first`, the child must also be dead (a zombie or
/// gone) when the READ that pinned it returns: the kill is part of the
/// failed pin, which comes before the reply (§7, §8 steps 4-5), so that
/// the new data never reaches the page cache while the faulty client can
/// still look at it.
fn faulty_with(child_role: &str, dead_first: bool) {
    const PINTIMEOUT: u64 = 2;
    let role = child_role.strip_suffix("-thread").unwrap_or(child_role);
    let dir = tempfile::tempdir().unwrap();
    let (mut zw, oid, mut m) = db_with(dir.path(), &[0, 1, 2, 3]);
    let old = m.clone();
    let srv = Server::start_opts(
        dir.path(),
        &dir.path().join("Data.fs"),
        &["--pintimeout", &PINTIMEOUT.to_string()],
    );
    let at0 = srv.head_at();
    assert_eq!(
        std::fs::read_to_string(srv.p(".wcfs/pintimeout")).unwrap(),
        "2.0"
    );
    let p = srv.head_file(oid);
    for b in 0..4 {
        eq_blk(&read_blk(&p, b, BS), &want(&m, b), &format!("#{b} @at0"));
    }
    let mut w = Link::open(&srv, "watcher", true);
    assert_eq!(w.watch_ok(oid, at0), pins(&[]));
    let mut c = Proc::spawn(child_role, &srv, oid, at0);
    assert_eq!(srv.stat("WatchLink"), 2);
    let at1 = commit(&mut zw, oid, &mut m, 1, &[1, 2]);
    srv.wait_head(at1);
    if role == "stop" {
        c.signal(Signal::SIGSTOP);
    }

    let t0 = Instant::now();
    let limit = Duration::from_secs(3 * PINTIMEOUT + 6);
    let rd = read_blk_bg(p.clone(), 1, BS);
    eq_blk(&wait_read(&rd, limit, "#1"), &want(&m, 1), "head #1 @at1");
    let read_took = t0.elapsed();
    let state_at_read = std::fs::read_to_string(format!("/proc/{}/stat", c.pid()))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .split(' ')
                .nth(1)
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_else(|e| e.to_string());
    eprintln!("{role}: the read returned after {read_took:?}, child state then: {state_at_read}");
    if dead_first {
        assert!(
            state_at_read == "Z" || state_at_read.contains("No such file"),
            "{role} child: the READ that pinned it returned after {read_took:?} with the \
             child still alive (state {state_at_read}): the new data was served before the kill"
        );
    }
    let st = c.wait_exit(limit.saturating_sub(t0.elapsed()));
    let took = t0.elapsed();
    let seen = c.drain().to_vec();
    eprintln!("{role} child: {st} after {took:?}; reported {seen:?}");
    if role == "close" || role == "bye" {
        assert_eq!(st.code(), Some(0), "{role} child: {st}, reported {seen:?}");
        assert!(
            !seen.iter().any(|l| l == "SIGBUS"),
            "{role} child: {seen:?}"
        );
        assert_eq!(srv.stat("pinkill"), 0, "the {role} child was not killed");
    } else {
        if role != "stop" {
            // (a stopped process runs no handler: its SIGBUS stays pending)
            assert!(
                seen.iter().any(|l| l == "SIGBUS"),
                "{role} child: no SIGBUS: {seen:?}"
            );
        }
        let sig = term_signal(st);
        assert!(
            sig == Some(Signal::SIGBUS as i32) || sig == Some(Signal::SIGKILL as i32),
            "{role} child: {st} after {took:?}, reported {seen:?}"
        );
        srv.wait_stat("pinkill", 1);
    }
    let pin1 = seen
        .iter()
        .filter_map(|l| l.strip_prefix("line "))
        .find_map(as_pin);
    if role != "stop" {
        let (_, p1) = pin1.unwrap_or_else(|| panic!("{role} child got no pin: {seen:?}"));
        assert_eq!(
            p1,
            Pin {
                oid,
                blk: 1,
                rev: Some(at0)
            },
            "{role} child"
        );
    }
    // what the server said to the child before dropping it
    let said = |p: &str| seen.iter().any(|l| l.starts_with(&format!("line {p}")));
    match role {
        "noack" | "nak" => assert!(said(&format!("0 fatal: pin #1 @{at0}: ")), "{seen:?}"),
        "wrongstream" => {
            let s = pin1.unwrap().0 + 2;
            assert!(
                said(&format!("0 error: {s}: reply on unexpected stream")),
                "{seen:?}"
            );
        }
        "garbage" => assert!(said(r#"0 error: invalid frame: "garbage\n""#), "{seen:?}"),
        "bye" => assert!(seen.iter().any(|l| l == "eof"), "{seen:?}"),
        _ => {}
    }

    // the watcher got its pin and keeps working; the child's link is gone
    assert_eq!(pin_map(oid, &w.take_pins()), pins(&[(1, Some(at0))]));
    srv.wait_stat("WatchLink", 1);
    srv.wait_stat("Watch", 1);
    let t1 = Instant::now();
    let rd = read_blk_bg(p.clone(), 2, BS);
    eq_blk(&wait_read(&rd, WAIT, "#2"), &want(&m, 2), "head #2 @at1");
    assert!(
        t1.elapsed() < Duration::from_secs(PINTIMEOUT),
        "the read of #2 took {:?}: a pin to the dropped child?",
        t1.elapsed()
    );
    assert_eq!(pin_map(oid, &w.take_pins()), pins(&[(2, Some(at0))]));
    eq_blk(
        &read_blk(&srv.p(&format!("@{at0}/bigfile/{oid}")), 2, BS),
        &want(&old, 2),
        "@at0 #2",
    );
    // and a new watch still sets up with the right pins
    let mut w2 = Link::open(&srv, "watcher 2", true);
    assert_eq!(
        w2.watch_ok(oid, at0),
        pins(&[(1, Some(at0)), (2, Some(at0))])
    );
    w2.bye();
    w.bye();
    drop(c);
    srv.wait_stat("WatchLink", 0);
    srv.finish();
}

/// A client that never acks: killed after the pin timeout.
#[test]
fn faulty_noack() {
    faulty("noack");
}

/// A client that acks on another stream: `reply on unexpected stream`,
/// killed.
#[test]
fn faulty_wrong_stream() {
    faulty("wrongstream");
}

/// A client that nacks: killed.
#[test]
fn faulty_nak() {
    faulty("nak");
}

/// A client that sends a line that is not a frame while a pin is pending:
/// `invalid frame`, killed.
#[test]
fn faulty_garbage() {
    faulty("garbage");
}

/// A client that closes its link (no `bye`) while a pin is pending and
/// exits normally soon after: dropped, not killed.
#[test]
fn faulty_close_mid_pin() {
    faulty("close");
}

/// A client that says `bye` instead of answering a pin: the pin is
/// cancelled, the client is not killed.
#[test]
fn faulty_bye_mid_pin() {
    faulty("bye");
}

/// A client that never acks is dead before the READ that pinned it
/// returns (upstream: `_pin` → `shutdown` → `badPinKill`, all inside the
/// READ's pin step).
#[test]
fn faulty_noack_dead_before_read_returns() {
    faulty_with("noack", true);
}

/// A client that nacks is dead before the READ that pinned it returns.
#[test]
fn faulty_nak_dead_before_read_returns() {
    faulty_with("nak", true);
}

/// A client that never acks, whose link was opened by a thread that has
/// exited since: the server must still find and kill the process.
#[test]
fn faulty_noack_opener_thread_gone() {
    faulty("noack-thread");
}

/// A client that is stopped while a pin to it is pending: killed (a
/// stopped process only dies of SIGKILL).
#[test]
fn faulty_sigstop() {
    faulty("stop");
}

/// A client that reads a block itself while nobody handles its link (no
/// pinner thread): its own pin times out and it is killed — while its
/// READ is the one waiting for that pin, so the kill must not wait for a
/// process stuck in that very READ. The server keeps serving.
#[test]
fn faulty_self_read() {
    const PINTIMEOUT: u64 = 2;
    let dir = tempfile::tempdir().unwrap();
    let (mut zw, oid, mut m, srv, at0, p) = served_and_read(dir.path(), &[0, 1, 2], PINTIMEOUT);
    let mut w = Link::open(&srv, "watcher", true);
    assert_eq!(w.watch_ok(oid, at0), pins(&[]));
    let mut c = Proc::spawn("selfread", &srv, oid, at0);
    let at1 = commit(&mut zw, oid, &mut m, 1, &[1, 2]);
    srv.wait_head(at1);
    let t0 = Instant::now();
    c.tell(&format!("go 1 {BS}"));
    c.expect("reading", "the child's read");
    let st = c.wait_exit(Duration::from_secs(3 * PINTIMEOUT + 6));
    let seen = c.drain().to_vec();
    eprintln!(
        "selfread child: {st} after {:?}; reported {seen:?}",
        t0.elapsed()
    );
    let sig = term_signal(st);
    assert!(
        sig == Some(Signal::SIGBUS as i32) || sig == Some(Signal::SIGKILL as i32),
        "{st}, reported {seen:?}"
    );
    srv.wait_stat("pinkill", 1);
    w.expect_quiet("after the kill");
    assert_eq!(pin_map(oid, &w.take_pins()), pins(&[(1, Some(at0))]));
    // the server still serves
    let mut srv = srv;
    srv.assert_alive();
    srv.wait_stat("WatchLink", 1);
    eq_blk(&read_blk(&p, 2, BS), &want(&m, 2), "#2 @at1");
    assert_eq!(pin_map(oid, &w.take_pins()), pins(&[(2, Some(at0))]));
    w.bye();
    srv.wait_stat("WatchLink", 0);
    srv.finish();
}

/// A client that does not ack the pins of its own watch setup: no `ok`,
/// killed after the pin timeout; another client's setup and reads go on.
#[test]
fn faulty_setup_noack() {
    const PINTIMEOUT: u64 = 2;
    let dir = tempfile::tempdir().unwrap();
    let (mut zw, oid, mut m) = db_with(dir.path(), &[0, 1]);
    let srv = Server::start_opts(
        dir.path(),
        &dir.path().join("Data.fs"),
        &["--pintimeout", &PINTIMEOUT.to_string()],
    );
    let at0 = srv.head_at();
    let p = srv.head_file(oid);
    eq_blk(&read_blk(&p, 1, BS), &want(&m, 1), "#1");
    let at1 = commit(&mut zw, oid, &mut m, 1, &[1]);
    srv.wait_head(at1);
    let t0 = Instant::now();
    let mut c = Proc::spawn_nowait("setup-noack", &srv, oid, at0);
    c.expect("setup-pin", "the child's setup pin");
    // meanwhile a well-behaved client sets up and reads
    let mut w = Link::open(&srv, "watcher", true);
    assert_eq!(w.watch_ok(oid, at0), pins(&[(1, Some(at0))]));
    eq_blk(&read_blk(&p, 1, BS), &want(&m, 1), "#1 @at1");
    let st = c.wait_exit(Duration::from_secs(3 * PINTIMEOUT + 6));
    let seen = c.drain().to_vec();
    eprintln!(
        "setup-noack child: {st} after {:?}; reported {seen:?}",
        t0.elapsed()
    );
    let sig = term_signal(st);
    assert!(
        sig == Some(Signal::SIGBUS as i32) || sig == Some(Signal::SIGKILL as i32),
        "{st}, reported {seen:?}"
    );
    assert!(!seen.iter().any(|l| l == "ready"), "{seen:?}");
    assert!(
        seen.iter()
            .any(|l| l.starts_with(&format!("setup-line 0 fatal: pin #1 @{at0}: "))),
        "{seen:?}"
    );
    srv.wait_stat("pinkill", 1);
    srv.wait_stat("WatchLink", 1);
    assert_eq!(srv.stat("Watch"), 1);
    w.bye();
    srv.wait_stat("WatchLink", 0);
    srv.finish();
}

// ---- 6) blocked setups go away with their link ----

/// A watch ahead of head blocks; closing the link (without `bye`) or
/// saying `bye` releases it; the server keeps serving.
#[test]
fn blocked_setup_released() {
    let dir = tempfile::tempdir().unwrap();
    let (mut zw, oid, mut m) = db_with(dir.path(), &[0, 1]);
    let srv = Server::start_opts(dir.path(), &dir.path().join("Data.fs"), &[]);
    let at0 = srv.head_at();
    let p = srv.head_file(oid);
    eq_blk(&read_blk(&p, 0, BS), &want(&m, 0), "#0");
    let ahead = after(at0);

    // closed without bye, with no reader on it
    let mut raw = open_watch(&srv);
    std::io::Write::write_all(&mut raw, format!("1 watch {oid} @{ahead}\n").as_bytes()).unwrap();
    // (a setup that waits for head/at is not a `Watch` yet, as upstream,
    // where the watch is registered only after the wait)
    std::thread::sleep(QUIET);
    assert_eq!(srv.stat("WatchLink"), 1);
    drop(raw);
    srv.wait_stat("WatchLink", 0);
    srv.wait_stat("Watch", 0);

    // bye while the setup waits: EOF (a reply on the setup's stream, if
    // any, must be an error)
    let mut l = Link::open(&srv, "bye", false);
    let s = l.request(&format!("watch {oid} @{ahead}"));
    l.expect_quiet("setup ahead of head");
    l.request("bye");
    match l.recv(WAIT) {
        Some(Ev::Eof) => {}
        Some(Ev::Line(x)) if x.starts_with(&format!("{s} error ")) => l.expect_eof("after bye"),
        ev => panic!("after bye: want EOF, got {ev:?}"),
    }
    drop(l);
    srv.wait_stat("WatchLink", 0);
    srv.wait_stat("Watch", 0);

    // the server still serves: reads, commits, new watches; a setup that
    // waited for a commit pins what that commit changed after its at
    let mut l = Link::open(&srv, "after", false);
    assert_eq!(l.watch_ok(oid, at0), pins(&[]));
    let mut la = Link::open(&srv, "ahead", false);
    let s = la.request(&format!("watch {oid} @{ahead}"));
    la.expect_quiet("setup ahead of head");
    let at1 = commit(&mut zw, oid, &mut m, 1, &[0, 1]);
    assert!(at1 >= ahead);
    let (r, got) = la.reply(s, "setup ahead, after the commit");
    assert_eq!(r, "ok");
    // (#0 was read, #1 never: only #0 is tracked)
    let want_pins = if at1 > ahead {
        pins(&[(0, Some(at0))])
    } else {
        pins(&[])
    };
    assert_eq!(pin_map(oid, &got), want_pins, "ahead={ahead} at1={at1}");
    srv.wait_head(at1);
    let rd = read_blk_bg(p.clone(), 0, BS);
    let (s0, pin) = l.pin("l @at0: pin of #0");
    assert_eq!(
        pin,
        Pin {
            oid,
            blk: 0,
            rev: Some(at0)
        }
    );
    l.ack(s0);
    eq_blk(&wait_read(&rd, WAIT, "#0"), &want(&m, 0), "#0 @at1");
    la.expect_quiet("la already has #0 pinned");
    assert_eq!(l.watch_ok(oid, at1), pins(&[(0, None)]));
    la.bye();
    l.bye();
    srv.wait_stat("WatchLink", 0);
    srv.finish();
}
