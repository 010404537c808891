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
    #[allow(dead_code)] // not every bench passes no options
    pub(crate) fn start(zurl: &str, mnt: &Path, log: &Path) -> Server {
        Self::start_with(zurl, mnt, log, &[])
    }

    /// `start` with extra `wcfs serve` options.
    pub(crate) fn start_with(zurl: &str, mnt: &Path, log: &Path, opts: &[&str]) -> Server {
        let child = wcfs()
            .args(["--log-level", "warn", "--log-file"])
            .arg(log)
            .arg("serve")
            .args(opts)
            .arg(zurl)
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

/// Drop the kernel's clean page cache (the FUSE files' pages; tmpfs files
/// such as a Data.fs on /dev/shm stay). Needs root.
#[allow(dead_code)] // not every bench reads cold
pub(crate) fn drop_caches() {
    // SAFETY: sync(2) has no preconditions.
    unsafe { nix::libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "1").expect("drop_caches (root)");
}

/// MiB/s of one sequential read(2) pass over `path` in 1 MiB pieces, cold:
/// the page cache is dropped first. `want_len` bytes must come.
#[allow(dead_code)]
pub(crate) fn cold_read_mibs(path: &Path, want_len: u64) -> f64 {
    use std::io::Read;
    drop_caches();
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let t = Instant::now();
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    let dt = t.elapsed().as_secs_f64();
    assert_eq!(n, want_len, "{}: short read", path.display());
    (n as f64 / (1 << 20) as f64) / dt
}
