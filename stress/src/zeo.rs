//! `--zeo`: a ZEO server (Python ZEO from the test venv,
//! `tests/py/zeo_server.py serve`) on a loopback port the server picks,
//! serving the run's Data.fs; killed on drop. The server also exits when
//! its stdin closes, so a killed harness leaves nothing running.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The helper script (the repository's, found from this crate's source).
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/py/zeo_server.py");

pub(crate) struct ZeoServer {
    child: Child,
    stdin: Option<ChildStdin>,
    /// `127.0.0.1:<port>`.
    pub(crate) addr: String,
}

impl ZeoServer {
    /// Serve `db` (created if missing). Python is `$WCFS_PYTHON` (what
    /// `./dev` exports: the venv with ZODB and ZEO), else `python3`.
    pub(crate) fn start(db: &Path) -> Result<ZeoServer> {
        let py =
            std::env::var_os("WCFS_PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from);
        let mut cmd = Command::new(&py);
        // started from the main thread (see procs)
        crate::procs::tie_to_harness(&mut cmd, libc::SIGTERM);
        let mut child = cmd
            .arg(SCRIPT)
            .args(["serve"])
            .arg(db)
            .arg("127.0.0.1:0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {} {SCRIPT}", py.display()))?;
        let stdin = child.stdin.take();
        let out = child.stdout.take().context("zeo_server.py stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut z = ZeoServer {
            child,
            stdin,
            addr: String::new(),
        };
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(l) => {
                    if let Some(a) = l.strip_prefix("READY ") {
                        z.addr = a.to_owned();
                        return Ok(z);
                    }
                }
                Err(_) => bail!(
                    "zeo_server.py did not get ready in 30 s (is ZEO installed for {}? \
                     set WCFS_PYTHON to the venv's python, scripts/pyenv.sh makes it)",
                    py.display()
                ),
            }
        }
    }
}

impl Drop for ZeoServer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
