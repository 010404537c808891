//! Client against a fake mount and a fake server (tests/common): what the
//! mappings show under pins, unpins and resync; what the client sends; how
//! it goes down on server misbehaviour, with no hangs (every wait times
//! out).

mod common;

use client::{Conn, Error, FileH, Oid};
use common::*;
use std::sync::Arc;
use std::time::Duration;

/// Connect at `at` over a fresh fake link.
fn connect(m: &FakeMount, at: client::Tid) -> (Arc<Conn>, FakeServer) {
    let (cli, srv) = FakeServer::pair();
    let conn = m.wcfs().connect_with_link(at, cli.into()).unwrap();
    (Arc::new(conn), srv)
}

/// Open `oid` in the background while the server answers the watch with
/// `pins` first, then `ok`.
fn open_with_pins(
    conn: &Arc<Conn>,
    srv: &mut FakeServer,
    oid: Oid,
    at: client::Tid,
    pins: &[(i64, Option<client::Tid>)],
) -> FileH {
    let c = conn.clone();
    let op = bg(move || c.open(oid));
    let s = srv.expect_req(&format!("watch {oid} @{at}"));
    for (i, (blk, rev)) in pins.iter().enumerate() {
        srv.pin(2 * (i as u64 + 1), oid, *blk, *rev);
    }
    assert!(
        op.still_running(Duration::from_millis(20)),
        "open returned before ok"
    );
    srv.send(s, "ok");
    op.wait().unwrap()
}

/// Close everything in the background, playing the server's part.
fn close_all(conn: Arc<Conn>, mut srv: FakeServer, open: &[Oid]) {
    let op = bg(move || conn.close());
    for _ in open {
        let (s, m) = srv.recv();
        assert!(open.iter().any(|o| m == format!("watch {o} -")), "{m}");
        srv.send(s, "ok");
    }
    srv.expect_bye();
    op.wait().unwrap();
}

#[test]
fn pins_before_ok_new_mappings_and_zero_tail() {
    init();
    let m = FakeMount::new(AT2);
    m.set_head(F, 3);
    m.set_rev(AT0, F, 3);
    m.set_rev(AT1, F, 2); // @at1 ends before block 2: pins to it show zeros
    let (conn, mut srv) = connect(&m, AT1);
    assert_eq!(conn.at(), AT1);

    // Pin sent before `ok` is recorded and applied to later mappings.
    let f = open_with_pins(&conn, &mut srv, F, AT1, &[(1, Some(AT0))]);
    assert_eq!(f.blksize(), BLKSIZE as u64);
    assert_eq!(f.size(), 3 * BLKSIZE as u64);

    let m1 = f.mmap(0, 5).unwrap();
    assert_eq!(
        (m1.blk_start(), m1.blk_len(), m1.len()),
        (0, 5, 5 * BLKSIZE)
    );
    let d = m1.to_vec().unwrap();
    assert_blk(&d, 0, head_byte(0), "unpinned");
    assert_blk(&d, 1, rev_byte(AT0, 1), "pinned before ok");
    assert_blk(&d, 2, head_byte(2), "unpinned");
    assert_blk(&d, 3, 0, "beyond head size");
    assert_blk(&d, 4, 0, "beyond head size");

    // A pin while mapped remaps the live mapping.
    srv.pin(4, F, 2, Some(AT0));
    let d = m1.to_vec().unwrap();
    assert_blk(&d, 2, rev_byte(AT0, 2), "pinned while mapped");

    // A pin to a revision whose file is shorter than the block: zeros.
    srv.pin(6, F, 2, Some(AT1));
    assert_blk(&m1.to_vec().unwrap(), 2, 0, "pinned past @rev size");
    srv.pin(8, F, 2, Some(AT0));

    // A new mapping applies the pins in force (range 1..3 only).
    let m2 = f.mmap(1, 2).unwrap();
    let d2 = m2.to_vec().unwrap();
    assert_blk(&d2, 0, rev_byte(AT0, 1), "new mapping, existing pin");
    assert_blk(&d2, 1, rev_byte(AT0, 2), "new mapping, existing pin");

    // Unpin: both mappings show head again.
    srv.pin(10, F, 1, None);
    assert_blk(&m1.to_vec().unwrap(), 1, head_byte(1), "unpinned @head");
    assert_blk(&m2.to_vec().unwrap(), 0, head_byte(1), "unpinned @head");
    // The raw slice sees the same.
    // SAFETY: no pin or close happens while the slice is alive.
    let s = unsafe { m2.as_slice() };
    assert_eq!(s[BLKSIZE], rev_byte(AT0, 2));

    // A dropped mapping is not remapped any more (no crash, still ack).
    drop(m2);
    srv.pin(12, F, 2, None);
    assert_blk(&m1.to_vec().unwrap(), 2, head_byte(2), "unpinned");

    drop(m1);
    // Not the last handle: nothing is sent.
    let f2 = f.clone();
    drop(f);
    assert!(srv.quiet_for(Duration::from_millis(50)));
    // The last one stops watching.
    let op = bg(move || drop(f2));
    let s = srv.expect_req(&format!("watch {F} -"));
    srv.send(s, "ok");
    op.wait();
    close_all(conn, srv, &[]);
}

#[test]
fn nak_for_unknown_foid_takes_conn_down() {
    init();
    let m = FakeMount::new(AT1);
    m.set_head(F, 1);
    let (conn, mut srv) = connect(&m, AT1);
    let f = open_with_pins(&conn, &mut srv, F, AT1, &[]);
    let mp = f.mmap(0, 1).unwrap();

    srv.send_pin(2, G, 0, Some(AT0));
    let (s, msg) = srv.recv();
    assert_eq!(s, 2);
    assert!(msg.starts_with("nak: "), "{msg}");
    assert!(msg.contains(&G.to_string()), "{msg}");
    assert!(matches!(conn.check(), Err(Error::Down(_))));
    // Down is sticky: user operations fail without talking to the server.
    assert!(matches!(conn.open(G), Err(Error::Down(_))));
    assert!(matches!(f.mmap(0, 1), Err(Error::Down(_))));
    assert!(matches!(conn.resync(AT1), Err(Error::Down(_))));
    drop(mp);
    // Closing a down Conn: no `watch -` (the link is down), still `bye`.
    let op = bg(move || drop(f));
    assert!(srv.quiet_for(Duration::from_millis(50)));
    op.wait();
    let op = bg(move || conn.close());
    srv.expect_bye();
    op.wait().unwrap();
}

#[test]
fn bad_pin_message_is_nacked() {
    init();
    let m = FakeMount::new(AT1);
    let (conn, mut srv) = connect(&m, AT1);
    srv.send(2, "pin zzz #0 @head");
    let (s, msg) = srv.recv();
    assert_eq!(s, 2);
    assert!(msg.starts_with("nak: "), "{msg}");
    assert!(conn.check().is_err());
    let op = bg(move || drop(conn));
    srv.expect_bye();
    op.wait();
}

#[test]
fn eof_wakes_pending_request() {
    init();
    let m = FakeMount::new(AT1);
    m.set_head(F, 1);
    let (conn, mut srv) = connect(&m, AT1);
    let c = conn.clone();
    let op = bg(move || c.open(F));
    srv.expect_req(&format!("watch {F} @{AT1}"));
    srv.hang_up();
    let err = op.wait().unwrap_err();
    assert!(
        matches!(err, Error::Down(ref r) if r.contains("EOF")),
        "{err}"
    );
    assert!(matches!(conn.open(F), Err(Error::Down(_))));
    // Close after EOF does not hang.
    bg(move || conn.close()).wait().unwrap();
}

#[test]
fn fatal_wakes_pending_request() {
    init();
    let m = FakeMount::new(AT1);
    m.set_head(F, 1);
    let (conn, mut srv) = connect(&m, AT1);
    let c = conn.clone();
    let op = bg(move || c.open(F));
    srv.expect_req(&format!("watch {F} @{AT1}"));
    srv.send(0, "fatal: pin #3 @head: timeout");
    let err = op.wait().unwrap_err();
    assert!(
        matches!(err, Error::Down(ref r) if r.contains("fatal: pin #3")),
        "{err}"
    );
    let op = bg(move || conn.close());
    srv.expect_bye();
    op.wait().unwrap();
}

#[test]
fn error_on_stream_0_and_garbage() {
    init();
    let m = FakeMount::new(AT1);
    let (conn, mut srv) = connect(&m, AT1);
    srv.send(0, "error: invalid frame");
    let op = bg(move || {
        // Wait (bounded) for the pinner to see it.
        for _ in 0..1000 {
            if conn.check().is_err() {
                return conn;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("0 error: did not take the conn down");
    });
    let conn = op.wait();
    assert!(matches!(conn.check(), Err(Error::Down(r)) if r.contains("invalid frame")));
    let op = bg(move || drop(conn));
    srv.expect_bye();
    op.wait();

    // A reply on a stream nobody waits on, and a line without a stream.
    for line in ["7 ok", "garbage"] {
        let (conn, mut srv) = connect(&m, AT1);
        let (s, msg) = line.split_once(' ').unwrap_or(("", line));
        if s.is_empty() {
            srv.send_raw(msg);
        } else {
            srv.send(s.parse().unwrap(), msg);
        }
        let op = bg(move || {
            for _ in 0..1000 {
                if let Err(Error::Down(r)) = conn.check() {
                    return (conn, r);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            panic!("{line}: did not take the conn down");
        });
        let (conn, r) = op.wait();
        assert!(r.contains("protocol error"), "{r}");
        let op = bg(move || drop(conn));
        srv.expect_bye();
        op.wait();
    }
}

#[test]
fn server_error_reply_fails_open_only() {
    init();
    let m = FakeMount::new(AT1);
    m.set_head(F, 1);
    let (conn, mut srv) = connect(&m, AT1);
    let c = conn.clone();
    let op = bg(move || c.open(F));
    let s = srv.expect_req(&format!("watch {F} @{AT1}"));
    let text =
        format!("setup watch f<{F}> @{AT1}: file not yet known to wcfs or is not a ZBigFile");
    srv.send(s, &format!("error {text}"));
    match op.wait() {
        Err(Error::Server { text: t, .. }) => assert_eq!(t, text),
        other => panic!("{other:?}"),
    }
    conn.check().unwrap();
    // The failed file is not kept: a new open sends a new watch.
    let f = open_with_pins(&conn, &mut srv, F, AT1, &[]);
    let op = bg(move || drop(f));
    let s = srv.expect_req(&format!("watch {F} -"));
    srv.send(s, "ok");
    op.wait();
    close_all(conn, srv, &[]);
}

#[test]
fn one_fileh_per_foid_and_bad_files() {
    init();
    let m = FakeMount::new(AT1);
    m.set_head(F, 2);
    std::fs::write(m.mnt.join(format!("head/bigfile/{G}")), [0u8; 100]).unwrap();
    let (conn, mut srv) = connect(&m, AT1);
    let f1 = open_with_pins(&conn, &mut srv, F, AT1, &[]);
    // Second open: shared, no request.
    let f2 = conn.open(F).unwrap();
    assert!(srv.quiet_for(Duration::from_millis(50)));
    // Size not a multiple of blksize: refused before any request.
    assert!(matches!(conn.open(G), Err(Error::BadFile { .. })));
    // Missing file.
    assert!(matches!(conn.open(Oid(0x99)), Err(Error::Io { .. })));
    assert!(srv.quiet_for(Duration::from_millis(50)));
    // Bad ranges.
    assert!(matches!(f1.mmap(-1, 1), Err(Error::InvalidArg(_))));
    assert!(matches!(f1.mmap(0, 0), Err(Error::InvalidArg(_))));
    assert!(matches!(f1.mmap(i64::MAX, 2), Err(Error::InvalidArg(_))));

    let mp = f2.mmap(0, 2).unwrap();
    drop(f1);
    assert!(srv.quiet_for(Duration::from_millis(50)));
    // Mapping outlives its last handle: PROT_NONE, reads fail.
    let op = bg(move || drop(f2));
    let s = srv.expect_req(&format!("watch {F} -"));
    srv.send(s, "ok");
    op.wait();
    assert!(matches!(
        mp.read_at(0, &mut [0; 1]),
        Err(Error::FileClosed(_))
    ));
    assert_eq!(prot_of(mp.as_ptr() as usize).unwrap(), "---p");
    drop(mp);
    close_all(conn, srv, &[]);
}

#[test]
fn conn_close_closes_files() {
    init();
    let m = FakeMount::new(AT1);
    m.set_head(F, 1);
    m.set_head(G, 1);
    let (conn, mut srv) = connect(&m, AT1);
    let f = open_with_pins(&conn, &mut srv, F, AT1, &[]);
    let g = open_with_pins(&conn, &mut srv, G, AT1, &[]);
    let mp = g.mmap(0, 1).unwrap();
    close_all(conn.clone(), srv, &[F, G]);
    // Handles and mappings outlive the Conn: errors, PROT_NONE; their
    // drops send nothing (the link is gone; a send would fail the drop
    // with a logged error only).
    assert!(matches!(f.mmap(0, 1), Err(Error::Closed)));
    assert!(matches!(conn.open(F), Err(Error::Closed)));
    assert_eq!(prot_of(mp.as_ptr() as usize).unwrap(), "---p");
    drop((f, g, mp));
}

#[test]
fn resync_maps_grown_data_and_rewatches() {
    init();
    let m = FakeMount::new(AT1);
    m.set_head(F, 2);
    m.set_rev(AT0, F, 2);
    let (conn, mut srv) = connect(&m, AT1);
    let f = open_with_pins(&conn, &mut srv, F, AT1, &[(0, Some(AT0))]);
    let mp = f.mmap(0, 4).unwrap();
    let d = mp.to_vec().unwrap();
    assert_blk(&d, 0, rev_byte(AT0, 0), "pinned");
    assert_blk(&d, 2, 0, "beyond size");

    // Backwards is refused (and harmless).
    assert!(matches!(conn.resync(AT0), Err(Error::Backwards { .. })));
    conn.check().unwrap();

    // The file grows to 3 blocks at @at2; resync waits for head/at.
    m.set_head(F, 3);
    let c = conn.clone();
    let op = bg(move || c.resync(AT2));
    assert!(
        op.still_running(Duration::from_millis(30)),
        "resync did not wait for head/at"
    );
    m.set_head_at(AT2);
    let s = srv.expect_req(&format!("watch {F} @{AT2}"));
    // Pins of the new view arrive before ok (the pinner runs during the
    // watch part): block 0 back to head.
    srv.pin(2, F, 0, None);
    srv.send(s, "ok");
    op.wait().unwrap();
    assert_eq!(conn.at(), AT2);
    assert_eq!(f.size(), 3 * BLKSIZE as u64);
    let d = mp.to_vec().unwrap();
    assert_blk(&d, 0, head_byte(0), "unpinned at resync");
    assert_blk(&d, 1, head_byte(1), "head");
    assert_blk(&d, 2, head_byte(2), "grown tail now mapped");
    assert_blk(&d, 3, 0, "still beyond size");

    // A failed re-watch takes the Conn down.
    let at3 = client::Tid(AT2.0 + 1);
    m.set_head_at(at3);
    let c = conn.clone();
    let op = bg(move || c.resync(at3));
    let s = srv.expect_req(&format!("watch {F} @{at3}"));
    srv.send(s, "error setup watch: too far away back from head/at");
    assert!(matches!(op.wait(), Err(Error::Server { .. })));
    assert!(matches!(conn.check(), Err(Error::Down(_))));
    drop(mp);
    let op = bg(move || drop(f));
    op.wait();
    let op = bg(move || conn.close());
    srv.expect_bye();
    op.wait().unwrap();
}

#[test]
fn resync_refuses_shrunk_file() {
    init();
    let m = FakeMount::new(AT1);
    m.set_head(F, 2);
    let (conn, mut srv) = connect(&m, AT1);
    let f = open_with_pins(&conn, &mut srv, F, AT1, &[]);
    m.set_head(F, 1);
    m.set_head_at(AT2);
    let err = bg({
        let c = conn.clone();
        move || c.resync(AT2)
    })
    .wait()
    .unwrap_err();
    assert!(
        matches!(err, Error::BadFile { ref reason, .. } if reason.contains("shrank")),
        "{err}"
    );
    assert!(matches!(conn.check(), Err(Error::Down(_))));
    // Nothing was sent for the failed resync.
    assert!(srv.quiet_for(Duration::from_millis(50)));
    drop(f);
    let op = bg(move || conn.close());
    srv.expect_bye();
    op.wait().unwrap();
}

#[test]
fn connect_waits_for_head() {
    init();
    let m = FakeMount::new(AT0);
    let w = m.wcfs();
    assert_eq!(w.head_at().unwrap(), AT0);
    let (cli, srv) = FakeServer::pair();
    let op = bg(move || w.connect_with_link(AT1, cli.into()));
    assert!(op.still_running(Duration::from_millis(30)));
    m.set_head_at(AT1);
    let conn = op.wait().unwrap();
    assert_eq!(conn.at(), AT1);
    let op = bg(move || drop(conn));
    srv.expect_bye();
    op.wait();
}

#[test]
fn concurrent_pins_during_opens_of_two_files() {
    init();
    // Two opens in flight; the server pins both files before answering
    // either: both complete with their pins recorded.
    let m = FakeMount::new(AT1);
    m.set_head(F, 2);
    m.set_head(G, 2);
    m.set_rev(AT0, F, 2);
    m.set_rev(AT0, G, 2);
    let (conn, mut srv) = connect(&m, AT1);
    let (c1, c2) = (conn.clone(), conn.clone());
    let o1 = bg(move || c1.open(F));
    let o2 = bg(move || c2.open(G));
    let mut streams = vec![];
    for _ in 0..2 {
        let (s, msg) = srv.recv();
        streams.push((s, msg));
    }
    srv.pin(2, F, 1, Some(AT0));
    srv.pin(4, G, 0, Some(AT0));
    for (s, _) in &streams {
        srv.send(*s, "ok");
    }
    let (f, g) = (o1.wait().unwrap(), o2.wait().unwrap());
    let df = f.mmap(0, 2).unwrap().to_vec().unwrap();
    let dg = g.mmap(0, 2).unwrap().to_vec().unwrap();
    assert_blk(&df, 1, rev_byte(AT0, 1), "F pinned");
    assert_blk(&df, 0, head_byte(0), "F head");
    assert_blk(&dg, 0, rev_byte(AT0, 0), "G pinned");
    assert_blk(&dg, 1, head_byte(1), "G head");
    // Drop both (in the background: each waits for its `watch -` reply).
    let op = bg(move || drop((f, g)));
    for _ in 0..2 {
        let (s, msg) = srv.recv();
        assert!(
            msg == format!("watch {F} -") || msg == format!("watch {G} -"),
            "{msg}"
        );
        srv.send(s, "ok");
    }
    op.wait();
    close_all(conn, srv, &[]);
}

#[test]
fn pin_served_while_resync_waits_for_at_mu() {
    // The deadlock hazard of the locking section: `open` holds at_mu R and
    // waits for `ok`; `resync` queues for at_mu W; the server sends a pin
    // first and waits for the ack. The pinner must get at_mu R despite the
    // queued writer, else nobody progresses.
    let m = FakeMount::new(AT2);
    m.set_head(F, 2);
    m.set_rev(AT0, F, 2);
    let (conn, mut srv) = connect(&m, AT1);
    let c = conn.clone();
    let open = bg(move || c.open(F));
    let s_open = srv.expect_req(&format!("watch {F} @{AT1}"));
    let c = conn.clone();
    let resync = bg(move || c.resync(AT2));
    assert!(
        resync.still_running(Duration::from_millis(50)),
        "resync did not wait for the open"
    );
    // Would time out (fail) if the pinner blocked behind the queued writer.
    srv.pin(2, F, 1, Some(AT0));
    srv.send(s_open, "ok");
    let f = open.wait().unwrap();
    // Now resync runs: watch part with the new view.
    let s = srv.expect_req(&format!("watch {F} @{AT2}"));
    srv.pin(4, F, 1, None);
    srv.send(s, "ok");
    resync.wait().unwrap();
    assert_eq!(conn.at(), AT2);
    let d = f.mmap(0, 2).unwrap().to_vec().unwrap();
    assert_blk(&d, 1, head_byte(1), "unpinned by resync");
    let op = bg(move || drop(f));
    let s = srv.expect_req(&format!("watch {F} -"));
    srv.send(s, "ok");
    op.wait();
    close_all(conn, srv, &[]);
}

#[test]
fn from_zurl_finds_default_mountpoint() {
    // A fake mount at the default mountpoint of a zurl nobody else uses.
    let zurl = format!(
        "file:///nonexistent/wcfs-client-test-{}.fs",
        std::process::id()
    );
    let base = std::path::Path::new("/dev/shm/wcfs");
    if !base.exists() {
        std::fs::create_dir_all(base).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o1777)).unwrap();
    }
    // sha1 of the zurl (already normalized), computed independently.
    let out = std::process::Command::new("sha1sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(zurl.as_bytes())?;
            c.wait_with_output()
        });
    let Ok(out) = out else {
        eprintln!("no sha1sum: skipped");
        return;
    };
    let hex = String::from_utf8(out.stdout).unwrap();
    let mnt = base.join(hex.split_whitespace().next().unwrap());
    std::fs::create_dir_all(mnt.join("head")).unwrap();
    std::fs::create_dir_all(mnt.join(".wcfs")).unwrap();
    std::fs::write(mnt.join("head/at"), AT1.to_string()).unwrap();
    std::fs::write(mnt.join(".wcfs/zurl"), &zurl).unwrap();
    let r = client::WCFS::from_zurl(&zurl).map(|w| (w.mountpoint().to_owned(), w.head_at()));
    // Another database served there: refused.
    std::fs::write(mnt.join(".wcfs/zurl"), "file:///other.fs").unwrap();
    let other = client::WCFS::from_zurl(&zurl);
    std::fs::remove_dir_all(&mnt).unwrap();
    let (got, at) = r.unwrap();
    assert_eq!(got, mnt);
    assert_eq!(at.unwrap(), AT1);
    assert!(matches!(other, Err(Error::Zurl { .. })), "{other:?}");
    // Not mounted at all: an I/O error naming .wcfs/zurl.
    assert!(matches!(
        client::WCFS::from_zurl(&zurl),
        Err(Error::Io { .. })
    ));
}

#[test]
fn pin_while_closing_is_acked_and_drop_of_conn_closes_files() {
    // A pin sent before the server processed `watch f -` arrives before its
    // `ok`: the file is still known, so it is acked (a nak would get the
    // process killed).
    let m = FakeMount::new(AT1);
    m.set_head(F, 1);
    m.set_head(G, 1);
    m.set_rev(AT0, F, 1);
    let (conn, mut srv) = connect(&m, AT1);
    let f = open_with_pins(&conn, &mut srv, F, AT1, &[]);
    let g = open_with_pins(&conn, &mut srv, G, AT1, &[]);
    let op = bg(move || drop(f));
    let s = srv.expect_req(&format!("watch {F} -"));
    srv.pin(2, F, 0, Some(AT0));
    srv.send(s, "ok");
    op.wait();
    conn.check().unwrap();
    // After the reply the file is gone: a pin for it is a logic error.
    srv.send_pin(4, F, 0, None);
    let (s, msg) = srv.recv();
    assert_eq!(s, 4);
    assert!(msg.starts_with("nak: "), "{msg}");

    // Dropping the Conn (not close) closes its remaining file: `watch g -`
    // is skipped because the link is down now, `bye` is still sent.
    let conn = Arc::try_unwrap(conn).unwrap();
    let op = bg(move || drop(conn));
    srv.expect_bye();
    op.wait();
    drop(g);
}

#[test]
fn drop_of_conn_sends_watch_minus_and_bye() {
    let m = FakeMount::new(AT1);
    m.set_head(F, 1);
    let (conn, mut srv) = connect(&m, AT1);
    let f = open_with_pins(&conn, &mut srv, F, AT1, &[]);
    let mp = f.mmap(0, 1).unwrap();
    let conn = Arc::try_unwrap(conn).unwrap();
    let op = bg(move || drop(conn));
    let s = srv.expect_req(&format!("watch {F} -"));
    srv.send(s, "ok");
    srv.expect_bye();
    op.wait();
    assert_eq!(prot_of(mp.as_ptr() as usize).unwrap(), "---p");
    assert!(matches!(f.mmap(0, 1), Err(Error::Closed)));
    drop((mp, f));
}
