//! The test storage backend: FileStorage (the default) or, with
//! `WCFS_TEST_ON_ZEO=1`, a real ZEO server (Python ZEO from the test venv,
//! `tests/py/zeo_server.py serve`) on the test's Data.fs, through which the
//! test's writer commits and which `wcfs serve` is pointed at (`zeo://`).
//! So the same FUSE tests run on both.

use crate::py_common;
use crate::server::ZURL_OF;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use zodb::zwrite::{ZBackend, ZWriter};
use zodb::{Oid, Storage, Tid};

#[derive(Debug)]
/// A running `zeo_server.py serve`; stopped on drop (it also exits when
/// its stdin closes, i.e. when the test process dies).
pub(crate) struct Zeo {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    pub(crate) addr: String,
}

impl Zeo {
    /// Serve `fs` on `listen` (`127.0.0.1:0` picks a port).
    pub(crate) fn start(fs: &Path, listen: &str) -> Zeo {
        let mut child =
            py_common::py_cmd("zeo_server.py", &["serve", fs.to_str().unwrap(), listen])
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
        let mut z = Zeo {
            child: Some(child),
            stdin,
            addr: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => {
                    if let Some(a) = l.strip_prefix("READY ") {
                        z.addr = a.to_owned();
                        return z;
                    }
                }
                Err(e) => panic!("zeo_server.py did not get ready: {e}"),
            }
        }
    }

    pub(crate) fn zurl(&self) -> String {
        format!("zeo://{}", self.addr)
    }

    /// Kill it (as a crash would).
    pub(crate) fn stop(&mut self) {
        drop(self.stdin.take());
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Zeo {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether this test process runs its FUSE tests on zeo:// (see the
/// module docs).
pub(crate) fn on_zeo() -> bool {
    std::env::var_os("WCFS_TEST_ON_ZEO").is_some_and(|v| v != "0" && !v.is_empty())
}

/// A test writer's backend: the FileStorage itself, or a ZEO server on it
/// (kept running while the writer lives; `wcfs serve` of the Data.fs is
/// pointed at it meanwhile).
#[derive(Debug)]
pub(crate) enum AnyWriter {
    File(zodb::fs1::Writer),
    Zeo(Box<ZeoSide>),
}

/// [`AnyWriter::Zeo`]'s parts.
#[derive(Debug)]
pub(crate) struct ZeoSide {
    w: zodb::zeo::ZeoWriter,
    zeo: Zeo,
    db: PathBuf,
}

impl ZBackend for AnyWriter {
    type Reader = Arc<dyn Storage>;
    fn reader(&self) -> Arc<dyn Storage> {
        match self {
            AnyWriter::File(w) => Arc::new(w.reader()),
            AnyWriter::Zeo(z) => Arc::new(z.w.reader()),
        }
    }
    fn head(&self) -> Tid {
        match self {
            AnyWriter::File(w) => w.head(),
            AnyWriter::Zeo(z) => z.w.head(),
        }
    }
    fn alloc_oid(&mut self) -> Oid {
        match self {
            AnyWriter::File(w) => w.alloc_oid(),
            AnyWriter::Zeo(z) => z.w.alloc_oid(),
        }
    }
    fn commit_txn(&mut self, txn: zodb::fs1::NewTxn) -> zodb::Result<Tid> {
        match self {
            AnyWriter::File(w) => w.commit_txn(txn),
            AnyWriter::Zeo(z) => z.w.commit_txn(txn),
        }
    }
}

impl Drop for AnyWriter {
    fn drop(&mut self) {
        if let AnyWriter::Zeo(z) = self {
            let mut m = ZURL_OF.lock().unwrap_or_else(|p| p.into_inner());
            m.retain(|(d, _)| *d != z.db);
            z.zeo.stop();
        }
    }
}

/// The writer of a test's database `db` (created if needed): to the file,
/// or through a ZEO server started on it (see [`on_zeo`]).
pub(crate) fn open_writer(db: &Path) -> ZWriter<AnyWriter> {
    if !on_zeo() {
        let w = zodb::fs1::Writer::open(db, true).expect("open the test database");
        return ZWriter::from_backend(AnyWriter::File(w)).expect("root object");
    }
    if !db.exists() {
        // the ZEO server's FileStorage creates it, but with its own root:
        // make ours first so that both backends start alike
        drop(zodb::zwrite::ZWriter::open(db).expect("create the test database"));
    }
    let zeo = Zeo::start(db, "127.0.0.1:0");
    let w = zodb::zeo::ZeoWriter::open(&zeo.addr, "1").expect("connect to the test ZEO server");
    ZURL_OF
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((db.to_owned(), zeo.zurl()));
    ZWriter::from_backend(AnyWriter::Zeo(Box::new(ZeoSide {
        w,
        zeo,
        db: db.to_owned(),
    })))
    .expect("root object")
}
