//! Our binary in place of the Go server, as wendelin.core runs it: a copy
//! at `<package>/wcfs/wcfs`, spawned as `wcfs [flags] <zurl> <mntpt>`
//! (Go flag syntax, glog flags), recognised by the process-identity rules
//! of its Python side, `.wcfs/debug/zhead` with `-debug`, and a `kill -9`
//! that leaves the dead mount (ENOTCONN) for the client to unmount. Usage
//! errors print the Go server's text and exit 2. Needs root, /dev/fuse
//! and fusermount3; every server is under the watchdog and unmount guard
//! of `support/server.rs`.

#[path = "../../zodb/tests/py_common/mod.rs"]
mod py_common;
#[path = "support/server.rs"]
#[allow(dead_code)]
mod server;

use server::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use zodb::zbigfile::ZBlkFormat;
use zodb::zwrite::ZWriter;
use zodb::Tid;

/// A copy of our binary at `<dir>/pkg/wcfs/wcfs`, where wendelin.core
/// installs (and looks for) the Go one.
fn installed(dir: &Path) -> PathBuf {
    let d = dir.join("pkg/wcfs");
    std::fs::create_dir_all(&d).unwrap();
    let exe = d.join("wcfs");
    std::fs::copy(env!("CARGO_BIN_EXE_wcfs"), &exe).unwrap();
    exe
}

fn db(dir: &Path) -> (ZWriter, zodb::Oid, PathBuf) {
    let p = dir.join("Data.fs");
    let mut zw = ZWriter::open(&p).unwrap();
    let (oid, _) = zw
        .create_file("f", 4096, &[(0, Some((ZBlkFormat::ZBlk0, b"abc")))])
        .unwrap();
    (zw, oid, p)
}

/// What wendelin.core checks of its server process (`wcfs/__init__.py`):
/// `/proc/<pid>/exe` is the installed path, comm `wcfs`, an open fd on
/// /dev/fuse, `argv[-2:] == (zurl, mntpt)`, a mount of type `fuse.wcfs`
/// whose source is the zurl; and `.wcfs/zurl` reads the zurl exactly.
#[test]
fn process_identity_and_zhead() {
    let dir = tempfile::tempdir().unwrap();
    let (mut zw, oid, p) = db(dir.path());
    let exe = installed(dir.path());
    let srv = Server::start_go(
        dir.path(),
        &p,
        &exe,
        &["-debug", "-pintimeout=3s", "-autoexit=false"],
    );
    let pid = srv.child.as_ref().unwrap().id();
    let proc = |f: &str| PathBuf::from(format!("/proc/{pid}/{f}"));
    assert_eq!(std::fs::read_link(proc("exe")).unwrap(), exe);
    assert_eq!(std::fs::read_to_string(proc("comm")).unwrap(), "wcfs\n");
    let fuse_fd = std::fs::read_dir(proc("fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .any(|t| t == Path::new("/dev/fuse"));
    assert!(fuse_fd, "no fd on /dev/fuse");
    let cmdline = std::fs::read(proc("cmdline")).unwrap();
    let argv: Vec<&[u8]> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .collect();
    let n = argv.len();
    assert_eq!(argv[n - 2], srv.zurl.as_bytes());
    assert_eq!(argv[n - 1], srv.mnt.to_str().unwrap().as_bytes());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let m = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == srv.mnt.to_str())
        .expect("mount entry");
    let f: Vec<&str> = m.split(' ').collect();
    assert_eq!((f[0], f[2]), (srv.zurl.as_str(), "fuse.wcfs"), "{m}");
    assert_eq!(
        std::fs::read_to_string(srv.p(".wcfs/zurl")).unwrap(),
        srv.zurl
    );
    assert_eq!(
        std::fs::read_to_string(srv.p(".wcfs/pintimeout")).unwrap(),
        "3.0"
    );

    // .wcfs/debug/zhead: every transaction once, in order, after its
    // invalidations (head/at shows it by then)
    let zh = std::fs::File::open(srv.p(".wcfs/debug/zhead")).unwrap();
    assert_eq!(srv.stat("ZHeadLink"), 1);
    // cache block 0, so that the commits below have invalidations to do
    assert_eq!(&std::fs::read(srv.head_file(oid)).unwrap()[..3], b"abc");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in BufReader::new(zh).lines() {
            let Ok(l) = l else { return };
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let mut tids = Vec::new();
    for i in 0..5u8 {
        let d = [b'x', b'0' + i];
        tids.push(
            zw.update_file(oid, &[(0, Some((ZBlkFormat::ZBlk0, &d[..])))])
                .unwrap(),
        );
    }
    for (i, t) in tids.iter().enumerate() {
        let l = rx.recv_timeout(WAIT).expect("a zhead line");
        assert_eq!(l, t.to_string(), "line {i}");
        assert!(srv.head_at() >= *t, "zhead said {t} before head/at");
    }
    assert_eq!(
        &std::fs::read(srv.head_file(oid)).unwrap()[..2],
        b"x4",
        "the data after the last line"
    );
    srv.finish();
}

/// `kill -9` of a Go-form server leaves its mount, every access failing
/// with ENOTCONN, for wendelin.core to unmount (it would otherwise race
/// fusermount3's auto_unmount); our own `wcfs serve` is gone from the
/// mount table by itself.
#[test]
fn kill9_leaves_the_dead_mount_in_the_go_form() {
    let dir = tempfile::tempdir().unwrap();
    let (_zw, _oid, p) = db(dir.path());
    let exe = installed(dir.path());
    let mut srv = Server::start_go(dir.path(), &p, &exe, &[]);
    srv.signal(nix::sys::signal::Signal::SIGKILL);
    srv.wait_exit(Duration::from_secs(10));
    // give a would-be auto_unmount time to act
    std::thread::sleep(Duration::from_millis(500));
    assert!(mounted(&srv.mnt), "the mount went away");
    let e = std::fs::read_to_string(srv.p(".wcfs/zurl")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "{e}");
    // the client's cleanup
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&srv.mnt)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(!mounted(&srv.mnt));

    // ours: auto_unmount
    let dir2 = tempfile::tempdir().unwrap();
    let (_zw2, _oid2, p2) = db(dir2.path());
    let mut srv2 = Server::start(dir2.path(), &p2);
    srv2.signal(nix::sys::signal::Signal::SIGKILL);
    srv2.wait_exit(Duration::from_secs(10));
    let t0 = Instant::now();
    while mounted(&srv2.mnt) {
        assert!(t0.elapsed() < WAIT, "auto_unmount did not remove the mount");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wrong usage as the Go server reports it: exit 2 and its texts.
#[test]
fn usage_errors() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_wcfs"))
            .args(args)
            .output()
            .unwrap()
    };
    let exe = env!("CARGO_BIN_EXE_wcfs");
    let o = run(&["-autoexit", "file:///x/Data.fs"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!("Usage: {exe} [OPTIONS] zurl mntpt\n")
    );
    let o = run(&["-nosuch", "z", "m"]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.starts_with(&format!(
            "flag provided but not defined: -nosuch\nUsage of {exe}:\n"
        )),
        "{e}"
    );
    let o = run(&["-pintimeout", "3", "z", "m"]);
    assert_eq!(o.status.code(), Some(2));
    // a zurl that does not open: a one-line error through the log, exit 1,
    // and the mountpoint left as it was (the caller's)
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let bad = dir.path().join("nope/Data.fs");
    let o = run(&["-logtostderr", bad.to_str().unwrap(), mnt.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(mnt.is_dir());
    assert!(!mounted(&mnt));
    // our subcommands still are ours
    let o = run(&["ls", "--help"]);
    assert!(o.status.success());
    let _ = Tid(0);
}

/// Real Python ZODB commits (tests/py/committer.py) under a Go-form server
/// with `-debug`, and a Python client that speaks the raw protocol
/// (tests/py/rawclient.py, written from the spec): `.wcfs/debug/zhead`
/// gives each committed tid once, in order, with head/at already there;
/// a watch at the first state gets the pin of block 0 (rewritten by every
/// commit) to that state when it reads the block, acks it, and reads the
/// block as of its view, then `bye` and EOF.
#[test]
fn python_commits_zhead_and_a_raw_client() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Data.fs");
    let dbs = db.to_str().unwrap();
    py_common::run_py("committer.py", &[dbs, "--txns", "1", "--blksize", "65536"]);
    use zodb::Storage;
    let stor = zodb::fs1::FileStorage::open(&db).unwrap();
    let at0 = stor.last_tid().unwrap();
    let oid = zodb::zbigfile::list(&stor, at0).unwrap()[0].oid;
    let exe = installed(dir.path());
    let srv = Server::start_go(dir.path(), &db, &exe, &["-debug"]);
    let mnt = srv.mnt.to_str().unwrap().to_owned();
    // the file must be known to the server before a watch
    let _ = std::fs::metadata(srv.head_file(oid)).unwrap();

    const N: usize = 6;
    let zh = py_common::py_cmd("rawclient.py", &["zhead", &mnt, &N.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // it has opened the stream once ZHeadLink says so
    let t0 = Instant::now();
    while srv.stat("ZHeadLink") < 1 {
        assert!(t0.elapsed() < WAIT, "rawclient did not open zhead");
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = py_common::py_cmd(
        "committer.py",
        &[
            dbs,
            "--txns",
            &N.to_string(),
            "--delay-ms",
            "30",
            "--blksize",
            "65536",
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tids: Vec<Tid> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| *l != "done")
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(tids.len(), N);
    let zout = zh.wait_with_output().unwrap();
    assert!(zout.status.success());
    let lines: Vec<String> = String::from_utf8_lossy(&zout.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), N, "{lines:?}");
    for (l, t) in lines.iter().zip(&tids) {
        let f: Vec<&str> = l.split(' ').collect();
        assert_eq!(
            (f[0], f[1], f[2]),
            ("zhead", t.to_string().as_str(), "headat"),
            "{l}"
        );
        let headat: Tid = f[3].parse().unwrap();
        assert!(headat >= *t, "head/at {headat} behind the zhead line {t}");
    }

    // a raw watch at the first of them: block 0 changed in every later
    // commit, so reading it pins it to that state
    let at1 = tids[0];
    let w = py_common::py_cmd(
        "rawclient.py",
        &["watch", &mnt, &oid.to_string(), &at1.to_string(), "0"],
    )
    .output()
    .unwrap();
    let wout = String::from_utf8_lossy(&w.stdout);
    assert!(
        w.status.success(),
        "{wout}{}",
        String::from_utf8_lossy(&w.stderr)
    );
    let wl: Vec<&str> = wout.lines().collect();
    assert_eq!(wl.first(), Some(&"ok"), "{wout}");
    assert!(
        wl.contains(&format!("pin pin {oid} #0 @{at1}").as_str()),
        "no pin of #0 to @{at1}: {wout}"
    );
    assert!(wl.iter().any(|l| l.starts_with("read 65536 ")), "{wout}");
    assert_eq!(wl.last(), Some(&"eof"), "{wout}");
    assert_eq!(srv.stat("pinkill"), 0);
    srv.finish();
}
