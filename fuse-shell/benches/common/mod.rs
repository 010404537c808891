//! What the benchmarks share: `wcfs serve` as a child process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use zodb::Tid;

pub(crate) fn wcfs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wcfs"))
}

/// The server; dropping it stops it (`wcfs stop`, which also unmounts a
/// stuck or dead one and removes the mountpoint).
pub(crate) struct Server {
    child: Child,
    pub(crate) zurl: String,
    pub(crate) mnt: PathBuf,
}

impl Server {
    pub(crate) fn start(zurl: &str, mnt: &Path, log: &Path) -> Server {
        let child = wcfs()
            .args(["--log-level", "warn", "--log-file"])
            .arg(log)
            .args(["serve", zurl])
            .arg(mnt)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn wcfs serve");
        let s = Server {
            child,
            zurl: zurl.to_owned(),
            mnt: mnt.to_owned(),
        };
        let t0 = Instant::now();
        while std::fs::read_to_string(mnt.join(".wcfs/zurl"))
            .ok()
            .as_deref()
            != Some(zurl)
        {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "not served after 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    pub(crate) fn head_at(&self) -> Tid {
        std::fs::read_to_string(self.mnt.join("head/at"))
            .unwrap()
            .parse()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = wcfs()
            .args(["stop", &self.zurl, "--mountpoint"])
            .arg(&self.mnt)
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
