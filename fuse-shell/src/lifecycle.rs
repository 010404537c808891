//! Server lifecycle (spec §12): `wcfs status` and `wcfs stop`, and the
//! helpers they are built from, which `wcfs serve` and its tests reuse to
//! clean up a mount whatever state it is in.
//!
//! Nothing here touches the mounted filesystem except through
//! [`read_with_timeout`]: the mount entry, its device (= the FUSE
//! connection) and the server process are all found through `/proc`, so a
//! stuck or dead server cannot hang `status` or `stop`.
//!
//! **The server process** of `(zurl, mnt)` ([`find_server`]) is a process,
//! other than us, that has `/dev/fuse` among its open files and whose argv
//! ends with `<zurl> <mnt>` (the mountpoint compared as an absolute path,
//! a relative one resolved against the process's cwd), or, for a server
//! started on the default mountpoint, whose argv ends with `<zurl>` when
//! `mnt` is the default mountpoint of `zurl`. The zurl is compared as
//! given, not normalized: that is what `serve` puts in argv and in the
//! mount's source.
//!
//! **`stop`** ([`stop`]) works within a budget (25 s for the CLI), each
//! stage getting a fifth of it:
//! 1. `fusermount3 -u`. If that fails: SIGTERM the server and wait; if the
//!    mount is still there, abort the FUSE connection (which fails every
//!    request in flight and every blocked client with ECONNABORTED), try a
//!    clean unmount again and then a lazy one (`fusermount3 -u -z`; as
//!    root `umount2` is the fallback of both) so that clients still holding
//!    files open do not keep the mount entry alive;
//! 2. wait for the server to exit; escalate to SIGTERM, then SIGKILL;
//! 3. `rmdir` the mountpoint (ENOENT is fine);
//! 4. check that no mount entry is left.
//!
//! Stopping when nothing is mounted and no server runs is not an error:
//! `stop` says so, removes a leftover mountpoint directory, and succeeds.

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The fstype of a wcfs mount (`fuse.` + subtype).
pub(crate) const FSTYPE: &str = "fuse.wcfs";

/// The budget `wcfs stop` gives itself.
pub(crate) const STOP_BUDGET: Duration = Duration::from_secs(25);

/// How long `wcfs status` waits for the filesystem to answer.
pub(crate) const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    /// The mount id (field 1).
    pub(crate) mount_id: u32,
    /// The device of the mounted filesystem (field 3, `major:minor`).
    pub(crate) major: u32,
    /// See `major`.
    pub(crate) minor: u32,
    /// Where it is mounted (field 5, unescaped).
    pub(crate) mountpoint: PathBuf,
    /// The filesystem type (`fuse.wcfs`).
    pub(crate) fstype: String,
    /// The mount source (fsname: the zurl for wcfs).
    pub(crate) source: String,
}

impl MountEntry {
    /// Whether this is a wcfs mount serving `zurl`.
    pub(crate) fn is_wcfs_of(&self, zurl: &str) -> bool {
        self.fstype == FSTYPE && self.source == zurl
    }

    /// The FUSE connection number: the kernel names
    /// `/sys/fs/fuse/connections/<N>` after the superblock's `dev_t`
    /// (`major << 20 | minor`, which is the minor for FUSE's anonymous
    /// devices).
    pub(crate) fn fuse_conn(&self) -> u32 {
        (self.major << 20) | self.minor
    }
}

/// Undo the octal escapes (`\040` for a space, ...) of mountinfo fields.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse mountinfo text; lines that do not parse are skipped.
fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    let parse = |line: &str| -> Option<MountEntry> {
        let (pre, post) = line.split_once(" - ")?;
        let f: Vec<&str> = pre.split(' ').collect();
        let p: Vec<&str> = post.split(' ').collect();
        let (major, minor) = f.get(2)?.split_once(':')?;
        Some(MountEntry {
            mount_id: f.first()?.parse().ok()?,
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
            mountpoint: PathBuf::from(unescape(f.get(4)?)),
            fstype: unescape(p.first()?),
            source: unescape(p.get(1)?),
        })
    };
    text.lines().filter_map(parse).collect()
}

/// The topmost mount at `mnt` (an absolute path), if any.
pub(crate) fn mount_entry(mnt: &Path) -> Result<Option<MountEntry>> {
    let text =
        std::fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text)
        .into_iter()
        .rev()
        .find(|e| e.mountpoint == mnt))
}

/// The server process of `(zurl, mnt)`, by the rule in the module doc.
pub(crate) fn find_server(zurl: &str, mnt: &Path) -> Option<Pid> {
    let me = std::process::id();
    let default_mnt = crate::mountpoint::default_mountpoint(zurl).ok();
    let on_default = default_mnt.as_deref() == Some(mnt);
    let procs = std::fs::read_dir("/proc").ok()?;
    for e in procs.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let dir = e.path();
        let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline
            .strip_suffix(b"\0")
            .unwrap_or(&cmdline)
            .split(|&c| c == 0)
            .collect();
        let n = args.len();
        let last_is = |k: usize, want: &[u8]| n >= k && args[n - k] == want;
        let argv_matches = (last_is(2, zurl.as_bytes()) && {
            let m = Path::new(std::str::from_utf8(args[n - 1]).unwrap_or(""));
            let abs = if m.is_absolute() {
                Some(m.to_path_buf())
            } else {
                std::fs::read_link(dir.join("cwd"))
                    .ok()
                    .map(|cwd| cwd.join(m))
            };
            abs.map(|a| lexical_clean(&a)) == Some(lexical_clean(mnt))
        }) || (on_default && last_is(1, zurl.as_bytes()));
        if argv_matches && has_dev_fuse(&dir) {
            return Some(Pid::from_raw(pid as i32));
        }
    }
    None
}

/// `p` with `.`, `..` and repeated or trailing slashes resolved lexically.
fn lexical_clean(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn has_dev_fuse(procdir: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(procdir.join("fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == Path::new("/dev/fuse")))
}

/// Read a file of the mount in a helper thread, giving up after `timeout`
/// (a stuck server would block the read; the thread is then left behind,
/// and is woken with an error when the connection is aborted).
pub(crate) fn read_with_timeout(path: &Path, timeout: Duration) -> Result<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.to_path_buf();
    std::thread::Builder::new()
        .name("read-timeout".into())
        .spawn(move || {
            let _ = tx.send(std::fs::read_to_string(&p));
        })
        .context("spawn reader thread")?;
    match rx.recv_timeout(timeout) {
        Ok(r) => r.with_context(|| format!("read {}", path.display())),
        Err(_) => bail!("read {}: no answer in {timeout:?}", path.display()),
    }
}

/// Whether process `pid` is gone (or a zombie waiting to be reaped).
pub(crate) fn is_exited(pid: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('Z' | 'X'))),
    }
}

/// Wait up to `timeout` for `pid` to exit; whether it did.
pub(crate) fn wait_exit(pid: Pid, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if is_exited(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Send `sig` to `pid`; a process already gone is not an error.
pub(crate) fn signal(pid: Pid, sig: Signal) -> Result<()> {
    match nix::sys::signal::kill(pid, sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(anyhow!("kill -{} {pid}: {e}", sig.as_str())),
    }
}

/// Stop `pid` within `timeout`: wait a third of it for it to exit on its
/// own, SIGTERM and wait another third, then SIGKILL. Whether it is gone.
pub(crate) fn terminate(pid: Pid, timeout: Duration) -> Result<bool> {
    let step = timeout / 3;
    if wait_exit(pid, step) {
        return Ok(true);
    }
    signal(pid, Signal::SIGTERM)?;
    if wait_exit(pid, step) {
        return Ok(true);
    }
    signal(pid, Signal::SIGKILL)?;
    Ok(wait_exit(pid, step))
}

/// Run a command with a timeout; its stderr's last line on failure.
fn run_timeout(cmd: &mut Command, timeout: Duration) -> Result<()> {
    let what = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {what}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().with_context(|| format!("wait {what}"))? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            // Reap it without waiting here: a helper stuck on a dead mount
            // may take its time to die.
            std::thread::spawn(move || child.wait());
            bail!("{what}: no answer in {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if status.success() {
        return Ok(());
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    let line = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    bail!(
        "{what}: {status}{}{line}",
        if line.is_empty() { "" } else { ": " }
    )
}

/// `fusermount3` with `/bin:/usr/bin` appended to `$PATH` (spec §12).
fn fusermount(args: &[&str], mnt: &Path) -> Command {
    let mut c = Command::new("fusermount3");
    let path = std::env::var("PATH").unwrap_or_default();
    c.env("PATH", format!("{path}:/bin:/usr/bin"))
        .args(args)
        .arg(mnt);
    c
}

/// Unmount `mnt`: `fusermount3 -u` (with `-z` if `lazy`), then, if that
/// fails and we are root, `umount2` (`MNT_DETACH` if `lazy`): it also
/// works where fuse3's tools are not installed.
pub(crate) fn unmount(mnt: &Path, lazy: bool, timeout: Duration) -> Result<()> {
    use nix::mount::MntFlags;
    let args: &[&str] = if lazy { &["-u", "-z"] } else { &["-u"] };
    match run_timeout(&mut fusermount(args, mnt), timeout) {
        Ok(()) => Ok(()),
        Err(e) if nix::unistd::geteuid().is_root() => {
            let flags = if lazy {
                MntFlags::MNT_DETACH
            } else {
                MntFlags::empty()
            };
            nix::mount::umount2(mnt, flags).map_err(|e2| {
                let how = if lazy { ", MNT_DETACH" } else { "" };
                anyhow!("{e:#}; umount2({}{how}): {e2}", mnt.display())
            })
        }
        Err(e) => Err(e),
    }
}

const FUSECTL: &str = "/sys/fs/fuse/connections";

/// Abort FUSE connection `conn`: every request in flight and every
/// later one fails with ECONNABORTED, the server's `/dev/fuse` reads with
/// ENODEV. Mounts fusectl first if needed (root).
pub(crate) fn abort_fuse(conn: u32) -> Result<()> {
    let abort = PathBuf::from(format!("{FUSECTL}/{conn}/abort"));
    if !abort.exists() && !fusectl_mounted() {
        nix::mount::mount(
            Some("fusectl"),
            FUSECTL,
            Some("fusectl"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .with_context(|| format!("mount fusectl on {FUSECTL}"))?;
    }
    std::fs::write(&abort, b"1\n").with_context(|| format!("write {}", abort.display()))
}

fn fusectl_mounted() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t).iter().any(|e| e.fstype == "fusectl"))
        .unwrap_or(false)
}

/// `rmdir mnt`, a missing directory being fine.
pub(crate) fn rmdir_mountpoint(mnt: &Path) -> Result<()> {
    match std::fs::remove_dir(mnt) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("rmdir {}", mnt.display())),
    }
}

/// What [`stop`] did, for the user.
#[derive(Debug, Default)]
pub(crate) struct StopReport {
    /// Whether anything (a mount, a server) was there to stop.
    pub(crate) found: bool,
    /// The steps taken, in order, for the log and the user.
    pub(crate) steps: Vec<String>,
}

/// Stop the wcfs serving `zurl` on `mnt` (module doc), within `budget`.
/// A mount at `mnt` that is not wcfs for `zurl` is left alone (error).
pub(crate) fn stop(zurl: &str, mnt: &Path, budget: Duration) -> Result<StopReport> {
    let stage = budget / 5;
    let mut rep = StopReport::default();
    let entry = mount_entry(mnt)?;
    if let Some(e) = &entry {
        if !e.is_wcfs_of(zurl) {
            bail!(
                "{} is mounted by {} {:?}, not by wcfs for {zurl:?}: not touching it",
                mnt.display(),
                e.fstype,
                e.source
            );
        }
    }
    let pid = find_server(zurl, mnt);
    rep.found = entry.is_some() || pid.is_some();

    // ---- 1) unmount; SIGTERM, abort and lazy unmount if that fails ----
    if let Some(e) = &entry {
        match unmount(mnt, false, stage) {
            Ok(()) => rep.steps.push("unmounted".into()),
            Err(err) => {
                rep.steps.push(format!("unmount failed ({err:#})"));
                if let Some(pid) = pid {
                    signal(pid, Signal::SIGTERM)?;
                    let gone = wait_exit(pid, stage);
                    rep.steps.push(format!(
                        "SIGTERM server {pid}: {}",
                        if gone { "exited" } else { "still running" }
                    ));
                }
                if mount_entry(mnt)?.is_some() {
                    match abort_fuse(e.fuse_conn()) {
                        Ok(()) => rep
                            .steps
                            .push(format!("aborted FUSE connection {}", e.fuse_conn())),
                        Err(err) => rep.steps.push(format!("abort failed ({err:#})")),
                    }
                    if unmount(mnt, false, stage / 2).is_ok() {
                        rep.steps.push("unmounted".into());
                    } else {
                        unmount(mnt, true, stage / 2).context("lazy unmount")?;
                        rep.steps.push("unmounted lazily".into());
                    }
                }
            }
        }
    }

    // ---- 2) the server exits ----
    if let Some(pid) = pid {
        if !terminate(pid, stage)? {
            bail!("server {pid} did not exit on SIGKILL");
        }
        rep.steps.push(format!("server {pid} exited"));
    }

    // ---- 3) no mountpoint left ----
    if let Some(e) = mount_entry(mnt)? {
        bail!(
            "{} still mounted ({} {}) after stop",
            mnt.display(),
            e.fstype,
            e.source
        );
    }
    let existed = mnt.exists();
    rmdir_mountpoint(mnt)?;
    if existed {
        rep.steps.push(format!("removed {}", mnt.display()));
    }
    Ok(rep)
}

/// What `wcfs status` found about a serving server.
#[derive(Debug)]
pub(crate) struct Status {
    /// The server process.
    pub(crate) pid: Pid,
    /// The content of `head/at`.
    pub(crate) head_at: String,
}

/// Whether wcfs serves `zurl` on `mnt`: the mount entry, the server
/// process, `.wcfs/zurl` reading back `zurl`, `head/at`. Each failure is
/// a one-line error saying which.
pub(crate) fn status(zurl: &str, mnt: &Path, timeout: Duration) -> Result<Status> {
    let Some(e) = mount_entry(mnt)? else {
        bail!("not mounted");
    };
    if !e.is_wcfs_of(zurl) {
        bail!(
            "mounted by {} {:?}, not by wcfs for {zurl:?}",
            e.fstype,
            e.source
        );
    }
    let Some(pid) = find_server(zurl, mnt) else {
        bail!("mounted, but no server process (crashed mount; `wcfs stop` cleans it up)");
    };
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let got = read_with_timeout(&mnt.join(".wcfs/zurl"), left())?;
    if got.trim_end_matches('\n') != zurl {
        bail!(".wcfs/zurl reads {got:?}, not {zurl:?}");
    }
    let head_at = read_with_timeout(&mnt.join("head/at"), left())?
        .trim()
        .to_string();
    Ok(Status { pid, head_at })
}

/// `wcfs status`: print what was found; an error (exit non-zero) unless
/// a server serves.
pub(crate) fn cmd_status(zurl: &str, mnt: Option<&Path>) -> Result<()> {
    let mnt = crate::mountpoint::resolve(zurl, mnt)?;
    println!("mountpoint: {}", mnt.display());
    match status(zurl, &mnt, STATUS_TIMEOUT) {
        Ok(st) => {
            println!("pid: {}", st.pid);
            println!("head/at: {}", st.head_at);
            println!("ok - serving {zurl}");
            Ok(())
        }
        Err(e) => Err(e.context(format!("status {zurl}: not serving"))),
    }
}

/// `wcfs stop`.
pub(crate) fn cmd_stop(zurl: &str, mnt: Option<&Path>) -> Result<()> {
    let mnt = crate::mountpoint::resolve(zurl, mnt)?;
    let rep = stop(zurl, &mnt, STOP_BUDGET).with_context(|| format!("stop {zurl}"))?;
    if rep.found {
        eprintln!(
            "wcfs: stopped {zurl} on {}: {}",
            mnt.display(),
            rep.steps.join(", ")
        );
    } else {
        eprintln!(
            "wcfs: {zurl}: not mounted at {}, no server: nothing to stop",
            mnt.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo() {
        let t = "36 35 98:0 /mnt1 /mnt1 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                 610 30 0:58 / /dev/shm/wcfs/ab\\040c rw,nosuid,nodev,relatime shared:300 - fuse.wcfs file:///tmp/a\\040b.fs rw,user_id=0,group_id=0\n\
                 garbage\n";
        let v = parse_mountinfo(t);
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[1],
            MountEntry {
                mount_id: 610,
                major: 0,
                minor: 58,
                mountpoint: "/dev/shm/wcfs/ab c".into(),
                fstype: "fuse.wcfs".into(),
                source: "file:///tmp/a b.fs".into(),
            }
        );
        assert_eq!(v[1].fuse_conn(), 58);
        assert!(v[1].is_wcfs_of("file:///tmp/a b.fs"));
        assert!(!v[0].is_wcfs_of("/dev/root"));
        assert_eq!(unescape("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape("tail\\04"), "tail\\04");
    }

    #[test]
    fn clean() {
        assert_eq!(
            lexical_clean(Path::new("/a//b/./c/../d/")),
            Path::new("/a/b/d")
        );
    }
}
