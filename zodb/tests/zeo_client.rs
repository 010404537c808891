//! The ZEO client driver (`zodb::zeo`) against a real ZEO 5 server.
//!
//! Each test starts `tests/py/zeo_server.py serve` (Python ZEO's
//! `StorageServer` over a FileStorage the test made) on a loopback port the
//! server picks, or on a UNIX socket in a temp dir, and kills it when done
//! (`Server`'s Drop; the server also exits when its stdin closes, so a
//! killed test leaves nothing running). The truth is the same `Data.fs` read
//! directly by our fs1 driver and the brute-force model the writer filled.
//!
//! - `loads_and_iteration_match_filestorage`: a random history (commits,
//!   deletions, undos) written by our Writer; through ZEO, `last_tid`, every
//!   object at every tid (and the tids around each; NoSuchObject, NotYet,
//!   Deleted with their tids), and iterate equal the model and fs1; loads
//!   from 8 threads at once give the same answers.
//! - `watch_follows_python_commits`: Python ZODB commits through the same
//!   server while our watcher waits: every tid arrives once, in order, with
//!   fs1's oids, while other threads load through the same connection;
//!   `sync` then returns the last one; a watcher from 0 replays
//!   the history (iterate) and then follows, with nothing twice.
//! - `unix_socket_and_zurl`: `zurl::open` of `zeo://<socket path>`, of
//!   `zeo://host:port?storage=NAME` and of `zeo://:port` (this host) give
//!   working storages.
//! - `clear_errors`: a wrong storage name, a msgpack server, peers that are
//!   not ZEO servers, a refused connection, a server that dies under us:
//!   each a typed error, no panic, no hang.
//! - `reconnect_after_restart`: the server restarted under a connected
//!   storage, with Python commits while it was down and right after: the
//!   head stays and loads fail within the bound while down; then the
//!   watcher reports every transaction once, in order (fs1 is the truth);
//!   a server of another database on that address (older head, or newer
//!   but without our last transaction) is refused.
//! - `load_waits_for_reconnect`: loads made while the server is down
//!   answer once it is back (within the bound), as fs1 does.
//! - `rust_commits_through_zeo`: our ZWriter commits through ZEO between
//!   Python ZODB commits; fs1, Python (check_db.py) and the model agree at
//!   every tid, Python's changes are kept, a stale commit is a conflict.
//! - `scripted_server_invalidations`: a fake server sends what a real one
//!   does only by chance: invalidations before the register reply, a
//!   `lastTransaction` ahead of its invalidation, duplicate oids, a tid
//!   going back.
//!
//! The Python venv is required (as for the interop tests): no venv, failure.

mod fs1_common;
mod py_common;

use fs1_common::{seed, Model, Rng};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use zodb::fs1::{FileStorage, NewData, NewTxn, Writer};
use zodb::pickle::{Pickler, Unpickler, Value};
use zodb::zeo::{ZeoError, ZeoOptions, ZeoStorage};
use zodb::{Error, Oid, Storage, Tid, TxnInfo};

/// A running `zeo_server.py serve`; killed on drop.
struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    addr: String,
}

impl Server {
    fn start(fs: &Path, listen: &str, extra: &[&str]) -> Server {
        let mut args = vec!["serve", fs.to_str().unwrap(), listen];
        args.extend(extra);
        let mut child = py_common::py_cmd("zeo_server.py", &args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start zeo_server.py");
        let stdin = child.stdin.take();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut s = Server {
            child,
            stdin,
            addr: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => {
                    if let Some(a) = l.strip_prefix("READY ") {
                        s.addr = a.to_owned();
                        return s;
                    }
                }
                Err(e) => panic!("zeo_server.py did not get ready: {e}"),
            }
        }
    }

    fn stop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A random history written by our Writer (commits with new, changed and
/// deleted objects, undos), and its model.
fn random_db(path: &Path, seed: u64, nops: usize) -> Model {
    let mut rng = Rng::new(seed);
    let mut w = Writer::open(path, true).unwrap();
    let mut m = Model::default();
    for i in 0..nops {
        if rng.below(100) < 80 || m.txns.is_empty() {
            let n = 1 + rng.below(5) as usize;
            let mut recs: Vec<(Oid, Option<Vec<u8>>)> = Vec::new();
            for _ in 0..n {
                let existing = m.oids();
                let oid = if existing.is_empty() || rng.chance(30) {
                    w.new_oid()
                } else {
                    existing[rng.below(existing.len() as u64) as usize]
                };
                if recs.iter().any(|r| r.0 == oid) {
                    continue;
                }
                let live = matches!(m.latest(oid), Some((_, Some(_))));
                if live && rng.chance(15) {
                    recs.push((oid, None));
                } else {
                    let len = if rng.chance(5) {
                        70_000
                    } else {
                        1 + rng.below(300) as usize
                    };
                    recs.push((oid, Some(rng.bytes(len))));
                }
            }
            let t = w
                .commit(NewTxn {
                    user: format!("user{i}").into_bytes(),
                    description: format!("txn {i}").into_bytes(),
                    records: recs
                        .iter()
                        .map(|(o, d)| (*o, d.clone().map_or(NewData::Delete, NewData::Data)))
                        .collect(),
                    ..NewTxn::default()
                })
                .unwrap();
            for (o, d) in &recs {
                m.revs.insert((*o, t), d.clone());
            }
            m.txns.push((t, recs.iter().map(|r| r.0).collect()));
        } else {
            let (ut, oids) = m.txns[rng.below(m.txns.len() as u64) as usize].clone();
            if oids.iter().any(|o| m.latest(*o).unwrap().0 != ut) {
                continue; // would conflict
            }
            let t = w.undo(ut).unwrap();
            for o in &oids {
                let before = m
                    .revs
                    .range((*o, Tid::ZERO)..(*o, ut))
                    .next_back()
                    .and_then(|(_, v)| v.clone());
                m.revs.insert((*o, t), before);
            }
            m.txns.push((t, oids));
        }
    }
    // always at least one deletion, so that loads meet Deleted
    let live = m
        .oids()
        .into_iter()
        .find(|o| matches!(m.latest(*o), Some((_, Some(_)))));
    if let Some(oid) = live {
        let t = w
            .commit(NewTxn {
                records: vec![(oid, NewData::Delete)],
                ..NewTxn::default()
            })
            .unwrap();
        m.revs.insert((oid, t), None);
        m.txns.push((t, vec![oid]));
    }
    m
}

/// The extension as a value (empty -> None), to compare re-pickled ones.
fn ext_value(b: &[u8]) -> Option<zodb::pickle::Value> {
    (!b.is_empty()).then(|| Unpickler::new(b.to_vec().into()).load().unwrap())
}

fn same_txn(a: &TxnInfo, b: &TxnInfo) -> bool {
    a.tid == b.tid
        && a.status == b.status
        && a.user == b.user
        && a.description == b.description
        && a.oids == b.oids
        && ext_value(&a.extension) == ext_value(&b.extension)
}

/// What a load gives, in a comparable form.
fn outcome(st: &dyn Storage, oid: Oid, at: Tid) -> String {
    match st.load(oid, at) {
        Ok(l) => format!("ok {} {:?}", l.serial, l.data),
        Err(e @ (Error::NoSuchObject { .. } | Error::NotYet { .. } | Error::Deleted { .. })) => {
            format!("{e}")
        }
        Err(e) => panic!("load({oid}, {at}): {e}"),
    }
}

#[test]
fn loads_and_iteration_match_filestorage() {
    let seed = seed("zeo loads_and_iteration_match_filestorage");
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("Data.fs");
    let m = random_db(&p, seed, 40);
    let srv = Server::start(&p, "127.0.0.1:0", &[]);
    let zeo = ZeoStorage::open(&srv.addr, "1").unwrap();
    assert_eq!(zeo.url(), format!("zeo://{}", srv.addr));
    let fs = FileStorage::open(&p).unwrap();
    assert_eq!(zeo.last_tid().unwrap(), fs.last_tid().unwrap());
    assert_eq!(zeo.sync().unwrap(), fs.last_tid().unwrap());

    // every object at every interesting tid, and iterate, as the model says
    m.check(&zeo, &format!("seed {seed} zeo"));

    // iterate in full (user, description, status, extension) as fs1
    let want: Vec<TxnInfo> = fs
        .iterate(Tid::ZERO, Tid::MAX)
        .unwrap()
        .map(|t| t.unwrap())
        .collect();
    let got: Vec<TxnInfo> = zeo
        .iterate(Tid::ZERO, Tid::MAX)
        .unwrap()
        .map(|t| t.unwrap())
        .collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!(same_txn(g, w), "iterate: got {g:?}, want {w:?}");
    }
    // a sub-range, and an iterator dropped early (iterator_gc) leaves the
    // connection working
    let (lo, hi) = (m.txns[3].0, m.txns[10].0);
    let sub: Vec<Tid> = zeo
        .iterate(lo, hi)
        .unwrap()
        .map(|t| t.unwrap().tid)
        .collect();
    let want_sub: Vec<Tid> = m
        .txns
        .iter()
        .map(|t| t.0)
        .filter(|t| (lo..=hi).contains(t))
        .collect();
    assert_eq!(sub, want_sub);
    let mut it = zeo.iterate(Tid::ZERO, Tid::MAX).unwrap();
    it.next().unwrap().unwrap();
    drop(it);
    assert!(zeo.iterate(Tid::MAX, Tid::MAX).unwrap().next().is_none());

    // concurrent loads from several threads give what fs1 gives
    let mut oids = m.oids();
    oids.push(Oid(oids.iter().map(|o| o.0).max().unwrap() + 1));
    let tids = m.probe_tids();
    std::thread::scope(|s| {
        for k in 0..8usize {
            let (zeo, fs, oids, tids) = (&zeo, &fs, &oids, &tids);
            s.spawn(move || {
                for (i, &oid) in oids.iter().enumerate() {
                    for (j, &at) in tids.iter().enumerate() {
                        if (i + j) % 8 == k {
                            assert_eq!(
                                outcome(zeo, oid, at),
                                outcome(fs, oid, at),
                                "load({oid}, {at})"
                            );
                        }
                    }
                }
            });
        }
    });
}

#[test]
fn watch_follows_python_commits() {
    const N: usize = 15;
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("Data.fs");
    // a database with some history already, so that replay has work
    let m = random_db(&p, 1, 5);
    let srv = Server::start(&p, "127.0.0.1:0", &[]);
    let zeo = ZeoStorage::open(&srv.addr, "1").unwrap();
    let head0 = zeo.last_tid().unwrap();
    assert_eq!(head0, m.txns.last().unwrap().0);
    let mut w = zeo.watch(head0).unwrap();
    // nothing yet
    assert!(w.next(Some(Duration::from_millis(100))).unwrap().is_none());

    // While Python commits (invalidations are pushed), 4 threads keep
    // loading the state at head0: replies and pushes interleave on the one
    // connection, and each reply must reach its own caller.
    let fs0 = FileStorage::open(&p).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let out = std::thread::scope(|s| {
        for k in 0..4usize {
            let (zeo, fs0, m, stop) = (&zeo, &fs0, &m, &stop);
            s.spawn(move || {
                let oids = m.oids();
                let mut i = k;
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < oids.len() {
                    let oid = oids[i % oids.len()];
                    assert_eq!(outcome(zeo, oid, head0), outcome(fs0, oid, head0));
                    i += 1;
                    n += 1;
                }
            });
        }
        // stop the loaders even if the commit panics (else the scope hangs)
        struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let _stop = Stop(&stop);
        py_common::run_py(
            "zeo_server.py",
            &["commit", &srv.addr, &N.to_string(), "--seed", "7"],
        )
    });
    let py_tids: Vec<Tid> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("TID "))
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(py_tids.len(), N);

    let fs = FileStorage::open(&p).unwrap();
    let want: Vec<TxnInfo> = fs
        .iterate(Tid(head0.0 + 1), Tid::MAX)
        .unwrap()
        .map(|t| t.unwrap())
        .collect();
    // Python's DB() first commits the root object (our writer made none)
    let want_tids: Vec<Tid> = want.iter().map(|t| t.tid).collect();
    assert!(
        want_tids.ends_with(&py_tids),
        "{want_tids:?} vs {py_tids:?}"
    );
    assert!(want.len() <= N + 1);

    let mut got = Vec::new();
    for _ in 0..want.len() {
        let t = w
            .next(Some(Duration::from_secs(10)))
            .unwrap()
            .expect("a commit did not arrive within 10 s");
        got.push(t);
    }
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((g.tid, &g.oids), (w.tid, &w.oids), "watched transaction");
    }
    assert!(
        w.next(Some(Duration::from_millis(200))).unwrap().is_none(),
        "a transaction twice"
    );
    assert_eq!(zeo.sync().unwrap(), *py_tids.last().unwrap());
    assert_eq!(zeo.last_tid().unwrap(), *py_tids.last().unwrap());

    // from the beginning: the history by iterate, then nothing twice
    let all: Vec<TxnInfo> = fs
        .iterate(Tid::ZERO, Tid::MAX)
        .unwrap()
        .map(|t| t.unwrap())
        .collect();
    let mut w0 = zeo.watch(Tid::ZERO).unwrap();
    for t in &all {
        let g = w0.next(Some(Duration::from_secs(5))).unwrap().unwrap();
        assert!(same_txn(&g, t), "replayed {g:?}, want {t:?}");
    }
    assert!(w0.next(Some(Duration::from_millis(100))).unwrap().is_none());
    // ... and it follows new commits too, as does the first watcher
    py_common::run_py("zeo_server.py", &["commit", &srv.addr, "2", "--seed", "8"]);
    for w in [&mut w, &mut w0] {
        let a = w.next(Some(Duration::from_secs(10))).unwrap().unwrap();
        let b = w.next(Some(Duration::from_secs(10))).unwrap().unwrap();
        assert!(a.tid < b.tid);
        assert!(a.tid > *py_tids.last().unwrap());
    }
    // loads see the new state; the data equal fs1's
    let fs = FileStorage::open(&p).unwrap();
    let head = fs.last_tid().unwrap();
    assert_eq!(zeo.sync().unwrap(), head);
    let root = zeo.load(Oid(0), head).unwrap();
    assert_eq!(root, fs.load(Oid(0), head).unwrap());
}

#[test]
fn unix_socket_and_zurl() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("Data.fs");
    let m = random_db(&p, 2, 10);
    let sock = tmp.path().join("zeo.sock");
    let srv = Server::start(&p, sock.to_str().unwrap(), &["--name", "main"]);
    assert_eq!(srv.addr, sock.to_str().unwrap());
    let st = zodb::zurl::open(&format!("zeo://{}?storage=main", sock.display())).unwrap();
    assert_eq!(st.url(), format!("zeo://{}?storage=main", sock.display()));
    m.check(&*st, "unix socket");
    drop(st);
    drop(srv);

    let srv = Server::start(&p, "127.0.0.1:0", &[]);
    let st = zodb::zurl::open(&format!("zeo://{}", srv.addr)).unwrap();
    assert_eq!(st.last_tid().unwrap(), m.txns.last().unwrap().0);
    // `:port`: TCP to this host, as Go dials it (wendelin.core writes it
    // for a server listening on all addresses), not a socket named `:port`
    let port = srv.addr.rsplit_once(':').unwrap().1;
    let st = zodb::zurl::open(&format!("zeo://:{port}")).unwrap();
    assert_eq!(st.last_tid().unwrap(), m.txns.last().unwrap().0);
    m.check(&*st, "zeo://:port");
    // credentials mean nothing to ZEO 5 and are dropped
    let st = zodb::zurl::open(&format!("zeo://u:pw@{}?storage=1", srv.addr)).unwrap();
    assert_eq!(st.url(), format!("zeo://{}", srv.addr));
    let e = zodb::zurl::open(&format!("zeo://{}?storage=2", srv.addr))
        .err()
        .unwrap();
    assert!(e.to_string().contains("no storage named \"2\""), "{e}");
}

/// A TCP peer that is not a ZEO server: accepts once and runs `f` on the
/// connection.
fn fake_peer(f: impl FnOnce(std::net::TcpStream) + Send + 'static) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        if let Ok((s, _)) = l.accept() {
            f(s);
        }
    });
    addr
}

#[test]
fn clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("Data.fs");
    random_db(&p, 3, 3);
    let zerr = |e: &Error| ZeoError::find(e).cloned();

    // wrong storage name: the server's ValueError, saying so
    let mut srv = Server::start(&p, "127.0.0.1:0", &[]);
    let e = ZeoStorage::open(&srv.addr, "nosuch").unwrap_err();
    assert!(
        matches!(zerr(&e), Some(ZeoError::Remote { ref class, .. }) if class == "builtins.ValueError"),
        "{e}"
    );
    assert!(e.to_string().contains("no storage named \"nosuch\""), "{e}");

    // a server that dies under us: the watcher waits (nothing to report),
    // loads and sync fail once the bound passed, nothing hangs
    let opts = ZeoOptions {
        wait: Duration::from_millis(300),
        ..ZeoOptions::default()
    };
    let zeo = ZeoStorage::open_with(&srv.addr, "1", opts).unwrap();
    let mut w = zeo.watch(zeo.last_tid().unwrap()).unwrap();
    zeo.sync().unwrap();
    srv.stop();
    assert!(w.next(Some(Duration::from_millis(500))).unwrap().is_none());
    let t0 = Instant::now();
    let e = zeo.load(Oid(0), Tid::MAX).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(30), "load hung");
    assert!(
        matches!(zerr(&e), Some(ZeoError::Unavailable { .. })),
        "{e}"
    );
    assert!(zeo.sync().is_err());
    drop((w, zeo));
    // a refused connection (the port is free again)
    let e = ZeoStorage::open(&srv.addr, "1").unwrap_err();
    assert!(matches!(e, Error::Io { op: "connect", .. }), "{e}");

    // a msgpack server: refused with a clear Unsupported
    let srv = Server::start(&p, "127.0.0.1:0", &["--msgpack"]);
    let e = ZeoStorage::open(&srv.addr, "1").unwrap_err();
    assert!(
        matches!(e, Error::Unsupported(ref m) if m.contains("msgpack")),
        "{e}"
    );
    drop(srv);

    // not ZEO servers: an HTTP-ish banner, a short non-ZEO frame, a peer
    // that hangs up, a handshake then garbage
    let http = fake_peer(|mut s| {
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    });
    let e = ZeoStorage::open(&http, "1").unwrap_err();
    assert!(matches!(zerr(&e), Some(ZeoError::NotZeo(_))), "{e}");
    let short = fake_peer(|mut s| {
        let _ = s.write_all(b"\0\0\0\x07SSH-2.0");
    });
    let e = ZeoStorage::open(&short, "1").unwrap_err();
    assert!(matches!(zerr(&e), Some(ZeoError::NotZeo(_))), "{e}");
    let hangup = fake_peer(drop);
    let e = ZeoStorage::open(&hangup, "1").unwrap_err();
    assert!(matches!(zerr(&e), Some(ZeoError::NotZeo(_))), "{e}");
    let garbage = fake_peer(|mut s| {
        let _ = s.write_all(b"\0\0\0\x02Z5\0\0\0\x03abc");
        std::thread::sleep(Duration::from_millis(500));
    });
    let e = ZeoStorage::open(&garbage, "1").unwrap_err();
    assert!(matches!(zerr(&e), Some(ZeoError::Protocol(_))), "{e}");
}

/// The tids a Python script printed (`TID <hex>` or bare 16-hex lines).
fn printed_tids(out: &[u8]) -> Vec<Tid> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| {
            let t = l.strip_prefix("TID ").unwrap_or(l);
            (t.len() == 16).then(|| t.parse().ok()).flatten()
        })
        .collect()
}

/// Restart the server under a connected storage, with Python commits made
/// while it was down (straight into the Data.fs: nobody was connected) and
/// right after it came back (through ZEO, racing our reconnect): during
/// the outage the head stays and loads fail within the bound; afterwards
/// the watcher reports every transaction after the last one it had, once
/// and in order (the fs1 iteration of the same Data.fs is the truth), and
/// loads work again. Then servers of other databases on the same address
/// (an older head; a newer one without our last transaction) are refused:
/// loads fail, the head does not go back.
#[test]
fn reconnect_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("Data.fs");
    // another database, older: served on the same address at the end
    let p2 = tmp.path().join("Other.fs");
    random_db(&p2, 5, 2);
    random_db(&p, 4, 5);
    let mut srv = Server::start(&p, "127.0.0.1:0", &[]);
    let addr = srv.addr.clone();
    let opts = ZeoOptions {
        wait: Duration::from_secs(1),
        backoff_max: Duration::from_millis(200),
        ..ZeoOptions::default()
    };
    let zeo = ZeoStorage::open_with(&addr, "1", opts).unwrap();
    let head0 = zeo.last_tid().unwrap();
    let mut w = zeo.watch(head0).unwrap();
    let mut got = Vec::new();
    let out = py_common::run_py("zeo_server.py", &["commit", &addr, "3", "--seed", "1"]);
    let before: Vec<Tid> = printed_tids(&out.stdout);
    assert_eq!(before.len(), 3);
    while got.last() != before.last() {
        let t = w
            .next(Some(Duration::from_secs(10)))
            .unwrap()
            .expect("commit lost");
        got.push(t.tid);
    }
    let head1 = *before.last().unwrap();
    assert_eq!(zeo.sync().unwrap(), head1);

    // down
    srv.stop();
    let t0 = Instant::now();
    let e = zeo.load(Oid(0), head1).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(30), "load hung");
    assert!(
        matches!(ZeoError::find(&e), Some(ZeoError::Unavailable { .. })),
        "{e}"
    );
    assert!(w.next(Some(Duration::from_millis(200))).unwrap().is_none());
    assert_eq!(zeo.last_tid().unwrap(), head1);
    let out = py_common::run_py("committer.py", &[p.to_str().unwrap(), "--txns", "4"]);
    let down = printed_tids(&out.stdout);
    assert_eq!(down.len(), 4);
    assert_eq!(zeo.last_tid().unwrap(), head1, "head moved while down");

    // up again on the same address, and Python commits at once
    let srv = Server::start(&p, &addr, &[]);
    assert_eq!(srv.addr, addr);
    let out = py_common::run_py("zeo_server.py", &["commit", &addr, "3", "--seed", "2"]);
    let after = printed_tids(&out.stdout);
    assert_eq!(after.len(), 3);
    let last = *after.last().unwrap();
    while got.last() != Some(&last) {
        let t = w
            .next(Some(Duration::from_secs(20)))
            .unwrap()
            .expect("a transaction did not arrive within 20 s");
        got.push(t.tid);
    }
    assert!(
        w.next(Some(Duration::from_millis(300))).unwrap().is_none(),
        "one twice"
    );
    let fs = FileStorage::open(&p).unwrap();
    let want: Vec<Tid> = fs
        .iterate(Tid(head0.0 + 1), Tid::MAX)
        .unwrap()
        .map(|t| t.unwrap().tid)
        .collect();
    assert_eq!(got, want, "watched vs the Data.fs");
    assert!(want.ends_with(&after) && want.windows(4).any(|x| x == down));
    assert!(zeo.connections() >= 2);
    assert_eq!(zeo.sync().unwrap(), last);
    assert_eq!(
        zeo.load(Oid(0), last).unwrap(),
        fs.load(Oid(0), last).unwrap()
    );
    drop(srv);

    // another database on that address: older head, refused
    let _srv = Server::start(&p2, &addr, &[]);
    let e = loop {
        // until the old connection's loss was noticed and a reconnect refused
        match zeo.load(Oid(0), last) {
            Err(e) => break e,
            Ok(_) => assert!(Instant::now() - t0 < Duration::from_secs(60)),
        }
    };
    let Some(ZeoError::Unavailable { last: why, .. }) = ZeoError::find(&e) else {
        panic!("{e}")
    };
    // the first attempts may still find the port closed
    let t1 = Instant::now();
    let mut why = (**why).clone();
    while !matches!(&why, ZeoError::Protocol(m) if m.contains("not the same database")) {
        assert!(t1.elapsed() < Duration::from_secs(30), "{why}");
        match zeo.load(Oid(0), last) {
            Err(e) => match ZeoError::find(&e) {
                Some(ZeoError::Unavailable { last, .. }) => why = (**last).clone(),
                _ => panic!("{e}"),
            },
            Ok(l) => panic!("loaded {l:?} from another database"),
        }
    }
    assert_eq!(zeo.last_tid().unwrap(), last);
    drop(_srv);

    // another database with a newer head: it lacks our last transaction
    let p3 = tmp.path().join("Newer.fs");
    random_db(&p3, 6, 2);
    let _srv = Server::start(&p3, &addr, &[]);
    let t1 = Instant::now();
    loop {
        assert!(
            t1.elapsed() < Duration::from_secs(30),
            "newer database not refused"
        );
        match zeo.load(Oid(0), last) {
            Err(e) => match ZeoError::find(&e) {
                Some(ZeoError::Unavailable { last, .. }) if matches!(&**last, ZeoError::Protocol(m) if m.contains("has no transaction")) => {
                    break
                }
                Some(ZeoError::Unavailable { .. }) => {}
                _ => panic!("{e}"),
            },
            Ok(l) => panic!("loaded {l:?} from another database"),
        }
    }
    assert_eq!(zeo.last_tid().unwrap(), last);
}

/// A load made while the server is down waits for the reconnect (within
/// `ZeoOptions::wait`) and then answers from the restarted server, equal
/// to fs1's answer; `sync` too.
#[test]
fn load_waits_for_reconnect() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("Data.fs");
    let m = random_db(&p, 7, 6);
    let mut srv = Server::start(&p, "127.0.0.1:0", &[]);
    let addr = srv.addr.clone();
    let opts = ZeoOptions {
        wait: Duration::from_secs(25),
        backoff_max: Duration::from_millis(200),
        ..ZeoOptions::default()
    };
    let zeo = ZeoStorage::open_with(&addr, "1", opts).unwrap();
    let head = zeo.last_tid().unwrap();
    srv.stop();
    let fs = FileStorage::open(&p).unwrap();
    let oids = m.oids();
    let got = std::thread::scope(|s| {
        let (zeo, oids) = (&zeo, &oids);
        let h = s.spawn(move || {
            oids.iter()
                .map(|o| outcome(zeo, *o, head))
                .collect::<Vec<_>>()
        });
        // (the loads above are waiting for a connection meanwhile)
        let srv = Server::start(&p, &addr, &[]);
        let got = h.join().unwrap();
        assert_eq!(zeo.sync().unwrap(), head);
        drop(srv);
        got
    });
    let want: Vec<String> = oids.iter().map(|o| outcome(&fs, *o, head)).collect();
    assert_eq!(got, want);
    assert_eq!(zeo.connections(), 2);
}

/// Our ZWriter commits through ZEO (read-write registration, new_oids,
/// tpc_begin/storea/deleteObject/vote/tpc_finish), interleaved with Python
/// ZODB commits through the same server: every file state at every tid is
/// what the model says, read by our ZEO reader and by fs1 from the Data.fs;
/// Python ZODB (check_db.py, which also runs BTrees.check and fstest) reads
/// the same; Python's commits were not lost (the root keeps its entries);
/// a stale write is refused with a conflict, not lost.
#[test]
fn rust_commits_through_zeo() {
    use std::collections::BTreeMap;
    use zodb::zbigfile::{ZBigFile, ZBlkFormat};
    use zodb::zwrite::ZWriter;
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("Data.fs");
    let mut srv = Server::start(&p, "127.0.0.1:0", &[]);
    let mut zw = ZWriter::open_zeo(&srv.addr, "1").unwrap();
    let mut rng = Rng::new(seed("rust_commits_through_zeo"));
    // name -> (oid, blksize, blocks)
    type Files = BTreeMap<&'static str, (Oid, usize, BTreeMap<i64, Vec<u8>>)>;
    let mut files: Files = BTreeMap::new();
    let mut history: Vec<(Tid, Files)> = Vec::new();
    for (name, blksize, nblk) in [("a", 4096usize, 6i64), ("big", 2 << 20, 2)] {
        let blocks: BTreeMap<i64, Vec<u8>> = (0..nblk).map(|i| (i, rng.bytes(blksize))).collect();
        let ch: Vec<_> = blocks
            .iter()
            .map(|(i, d)| (*i, Some((ZBlkFormat::ZBlk1, &d[..]))))
            .collect();
        let (oid, tid) = zw.create_file(name, blksize as u64, &ch).unwrap();
        files.insert(name, (oid, blksize, blocks));
        history.push((tid, files.clone()));
    }
    for step in 0..12 {
        if step % 4 == 1 {
            // Python commits through the same server (it changes the root)
            py_common::run_py(
                "zeo_server.py",
                &["commit", &srv.addr, "2", "--seed", &step.to_string()],
            );
        }
        let name = if rng.chance(50) { "a" } else { "big" };
        let (oid, bs, blocks) = files.get_mut(name).unwrap();
        let blk = rng.below(4) as i64;
        let fmt = if rng.chance(50) {
            ZBlkFormat::ZBlk0
        } else {
            ZBlkFormat::ZBlk1
        };
        let tid = if rng.chance(20) {
            blocks.remove(&blk);
            zw.update_file(*oid, &[(blk, None)]).unwrap()
        } else {
            let n = 1 + rng.below(*bs as u64) as usize;
            let d = rng.bytes(n);
            let t = zw.update_file(*oid, &[(blk, Some((fmt, &d[..])))]).unwrap();
            blocks.insert(blk, d);
            t
        };
        history.push((tid, files.clone()));
    }
    // a commit computed from a stale state is refused, not applied
    let stale = zw.backend().snapshot();
    // (its first commit adds its ZBigFile to the root)
    let zurl = format!("zeo://{}", srv.addr);
    py_common::run_py("committer.py", &[&zurl, "--txns", "1"]);
    let root = zodb::record::load(&stale, Oid(0), stale.last_tid().unwrap()).unwrap();
    let e = zw
        .commit_objects(
            "stale root",
            vec![zodb::zbigfile::NewObject {
                oid: Oid(0),
                class: zodb::zwrite::PERSISTENT_MAPPING,
                state: root.state,
            }],
        )
        .unwrap_err();
    assert!(e.to_string().contains("ConflictError"), "{e}");
    let zeo_head = zw.head();
    drop(zw);

    // our ZEO reader, and fs1 on the Data.fs, at every tid
    let zeo = ZeoStorage::open(&srv.addr, "1").unwrap();
    assert_eq!(zeo.last_tid().unwrap(), zeo_head);
    let fs = FileStorage::open(&p).unwrap();
    assert_eq!(fs.last_tid().unwrap(), zeo_head);
    // every tid of the database: the model's files as of it (checked
    // through both readers), Python's file as fs1 reads it
    let mut expect = Vec::new();
    let tids: Vec<Tid> = fs
        .iterate(Tid::ZERO, Tid::MAX)
        .unwrap()
        .map(|t| t.unwrap().tid)
        .collect();
    assert!(history.iter().all(|h| tids.contains(&h.0)));
    for at in &tids {
        let m = history
            .iter()
            .rev()
            .find(|h| h.0 <= *at)
            .map(|h| h.1.clone())
            .unwrap_or_default();
        for zf in zodb::zbigfile::list(&fs, *at).unwrap() {
            let bs = zf.blksize as usize;
            let size = zf.size(&fs, *at).unwrap();
            let model = m.values().find(|f| f.0 == zf.oid);
            let mut shas = Vec::new();
            for i in 0..(size / bs as u64) as i64 {
                let got = zf.load_blk(&fs, i, *at).unwrap().to_vec();
                if let Some((_, _, blocks)) = model {
                    let mut want = blocks.get(&i).cloned().unwrap_or_default();
                    want.resize(bs, 0);
                    assert!(got == want, "{}@{at} blk {i}", zf.oid);
                    let z = ZBigFile::load(&zeo, zf.oid, *at).unwrap();
                    assert!(z.load_blk(&zeo, i, *at).unwrap().to_vec() == want);
                }
                shas.push(sha256_hex(&got));
            }
            if let Some((_, _, blocks)) = model {
                let want = blocks
                    .keys()
                    .next_back()
                    .map_or(0, |k| (*k as u64 + 1) * bs as u64);
                assert_eq!(size, want, "{}@{at}", zf.oid);
            }
            expect.push(serde_json::json!({
                "tid": at.to_string(), "oid": zf.oid.to_string(), "status": "ok", "reachable": true,
                "blksize": bs, "size": size, "blocks": shas,
            }));
        }
    }
    for (at, m) in &history {
        for (oid, _, _) in m.values() {
            assert!(ZBigFile::load(&fs, *oid, *at).is_ok());
        }
    }
    drop(zeo);
    srv.stop();
    // Python's objects are still in the root (no lost update)
    let root = zodb::record::load(&fs, Oid(0), zeo_head).unwrap();
    let text = format!("{:?}", root.state);
    assert!(
        text.contains("zeo-obj-0")
            && text.contains("committer")
            && text.contains("\"a\"")
            && text.contains("\"big\""),
        "{text}"
    );
    let ex = tmp.path().join("expect.json");
    let doc = serde_json::json!({ "format": "wcfs-interop-dump/1", "head": fs.last_tid().unwrap().to_string(), "files": expect });
    std::fs::write(&ex, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = py_common::run_py("check_db.py", &[p.to_str().unwrap(), ex.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("check_db: OK"), "{text}");
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

// ---- a scripted fake server: what a real one does not do on demand ----

fn send_frame(s: &mut std::net::TcpStream, body: &[u8]) {
    let mut b = (body.len() as u32).to_be_bytes().to_vec();
    b.extend(body);
    s.write_all(&b).unwrap();
}

fn recv_frame(s: &mut std::net::TcpStream) -> Vec<u8> {
    use std::io::Read;
    let mut n = [0u8; 4];
    s.read_exact(&mut n).unwrap();
    let mut b = vec![0u8; u32::from_be_bytes(n) as usize];
    s.read_exact(&mut b).unwrap();
    b
}

fn msg(msgid: i64, flags: Value, method: &str, args: Value) -> Vec<u8> {
    let mut p = Pickler::new(3);
    p.dump(&Value::Tuple(vec![
        Value::Int(msgid),
        flags,
        Value::Unicode(method.into()),
        args,
    ]));
    p.finish()
}

fn id(x: u64) -> Value {
    Value::Bytes(x.to_be_bytes().to_vec().into())
}

fn inval(tid: u64, oids: &[u64]) -> Vec<u8> {
    let oids = Value::List(oids.iter().map(|o| id(*o)).collect());
    msg(
        0,
        Value::Bool(true),
        "invalidateTransaction",
        Value::Tuple(vec![id(tid), oids]),
    )
}

/// The call a client sent: (msgid, method).
fn recv_call(s: &mut std::net::TcpStream) -> (i64, String) {
    let v = Unpickler::new(recv_frame(s).into()).load().unwrap();
    let Value::Tuple(t) = v else {
        panic!("not a tuple")
    };
    let Value::Unicode(m) = &t[2] else {
        panic!("method")
    };
    (t[0].as_i64().unwrap(), m.clone())
}

/// Answer one watcher's read of transaction `tid` (iterate over just it)
/// with records for `oids`.
fn answer_iteration(s: &mut std::net::TcpStream, tid: u64, oids: &[u64]) {
    let b = |x: &[u8]| Value::Bytes(x.to_vec().into());
    let mut recs = oids.iter().copied();
    let mut nexts = 0;
    loop {
        let (m, method) = recv_call(s);
        let reply = match method.as_str() {
            "iterator_start" => Value::Int(7),
            "iterator_next" => {
                nexts += 1;
                match nexts {
                    1 => Value::Tuple(vec![id(tid), b(b" "), b(b""), b(b""), Value::Dict(vec![])]),
                    _ => Value::None,
                }
            }
            "iterator_record_start" => Value::Int(8),
            "iterator_record_next" => match recs.next() {
                Some(o) => Value::Tuple(vec![id(o), id(tid), b(b"x"), Value::None]),
                None => Value::None,
            },
            "iterator_gc" => continue,
            other => panic!("unexpected call {other}"),
        };
        send_frame(s, &msg(m, Value::Int(0), ".reply", reply));
        if nexts == 2 {
            return;
        }
    }
}

/// A server that cannot iterate: the watcher says once that the changes
/// up to the pushed tid are unknown (its user must assume everything
/// changed), then follows the next commit as usual.
#[test]
fn server_that_cannot_iterate_means_changes_unknown() {
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let addr = fake_peer(move |mut s| {
        send_frame(&mut s, b"Z5");
        assert_eq!(recv_frame(&mut s), b"Z5");
        let (m, method) = recv_call(&mut s);
        assert_eq!(method, "register");
        send_frame(&mut s, &msg(m, Value::Int(0), ".reply", id(10)));
        send_frame(&mut s, &inval(12, &[1]));
        let (m, method) = recv_call(&mut s);
        assert_eq!(method, "iterator_start");
        let exc = Value::Tuple(vec![
            Value::Unicode("builtins.AttributeError".into()),
            Value::Tuple(vec![Value::Unicode("no iterator here".into())]),
        ]);
        send_frame(&mut s, &msg(m, Value::Int(2), ".reply", exc));
        let _ = done_rx.recv_timeout(Duration::from_secs(10));
        send_frame(&mut s, &inval(13, &[2]));
        answer_iteration(&mut s, 13, &[2]);
        std::thread::sleep(Duration::from_millis(500));
    });
    let zeo = ZeoStorage::open(&addr, "1").unwrap();
    let mut w = zeo.watch(Tid(10)).unwrap();
    let e = w.next(Some(Duration::from_secs(10))).unwrap_err();
    assert!(
        matches!(&e, Error::ChangesUnknown { head, why } if *head == Tid(12) && why.contains("no iterator here")),
        "{e}"
    );
    done_tx.send(()).unwrap();
    let t = w.next(Some(Duration::from_secs(10))).unwrap().unwrap();
    assert_eq!((t.tid, t.oids), (Tid(13), vec![Oid(2)]));
}

/// Invalidations before the register reply (kept if after it, dropped if
/// not), `sync` waiting for the invalidation of `lastTransaction`, a
/// pushed transaction read with iterate (duplicate oids once), and a tid
/// that goes back (a protocol error that breaks
/// the connection for callers and watchers).
#[test]
fn scripted_server_invalidations() {
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let addr = fake_peer(move |mut s| {
        send_frame(&mut s, b"Z5");
        assert_eq!(recv_frame(&mut s), b"Z5");
        let (m, method) = recv_call(&mut s);
        assert_eq!(method, "register");
        send_frame(&mut s, &inval(5, &[1]));
        send_frame(&mut s, &inval(12, &[2, 2, 3]));
        send_frame(&mut s, &msg(m, Value::Int(0), ".reply", id(10)));
        let (m, method) = recv_call(&mut s);
        assert_eq!(method, "lastTransaction");
        send_frame(&mut s, &msg(m, Value::Int(0), ".reply", id(13)));
        std::thread::sleep(Duration::from_millis(200));
        send_frame(
            &mut s,
            &msg(
                0,
                Value::Bool(true),
                "info",
                Value::Tuple(vec![Value::Dict(vec![])]),
            ),
        );
        send_frame(&mut s, &inval(13, &[4, 5, 4]));
        // the watcher reads transaction 13 itself (iterate: the push need
        // not name every object, ZEO leaves deletions out)
        answer_iteration(&mut s, 13, &[4, 5, 4]);
        let _ = done_rx.recv_timeout(Duration::from_secs(10));
        send_frame(&mut s, &inval(11, &[]));
        std::thread::sleep(Duration::from_millis(500));
    });
    let opts = ZeoOptions {
        wait: Duration::from_millis(300),
        ..ZeoOptions::default()
    };
    let zeo = ZeoStorage::open_with(&addr, "1", opts).unwrap();
    assert_eq!(zeo.last_tid().unwrap(), Tid(12));
    let mut w = zeo.watch(Tid(12)).unwrap();
    assert_eq!(zeo.sync().unwrap(), Tid(13));
    let t = w.next(Some(Duration::from_secs(1))).unwrap().unwrap();
    assert_eq!((t.tid, t.oids), (Tid(13), vec![Oid(4), Oid(5)]));
    done_tx.send(()).unwrap();
    // the connection breaks on it; reconnecting finds nobody listening: the
    // watcher has nothing to report, the head stays, calls fail with the cause
    let t0 = Instant::now();
    let e = loop {
        match zeo.sync() {
            Err(e) => break e,
            Ok(_) => assert!(t0.elapsed() < Duration::from_secs(30), "sync kept working"),
        }
    };
    assert!(w.next(Some(Duration::from_millis(300))).unwrap().is_none());
    assert_eq!(zeo.last_tid().unwrap(), Tid(13));
    let e = match ZeoError::find(&e) {
        Some(ZeoError::Unavailable { last, .. }) => (**last).clone(),
        Some(z) => z.clone(),
        None => panic!("{e}"),
    };
    assert!(
        matches!(&e, ZeoError::Protocol(m) if m.contains("not after"))
            || matches!(&e, ZeoError::Disconnected(_)),
        "{e}"
    );
}
