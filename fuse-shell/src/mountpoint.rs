//! The mountpoint to serve on: the one given, or the default one of the
//! zurl (spec §12: `/dev/shm/wcfs/<sha1hex(utf8(normalize(zurl)))>`, see
//! `zodb::zurl::default_mountpoint`), and making it exist.

use anyhow::{Context, Result};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
pub(crate) use zodb::zurl::MOUNT_BASE;

/// The default mountpoint of `zurl` (not created; see [`prepare`]).
pub(crate) fn default_mountpoint(zurl: &str) -> Result<PathBuf> {
    Ok(zodb::zurl::default_mountpoint(zurl)?)
}

/// The mountpoint to use: `explicit` if given, else the default one.
pub(crate) fn resolve(zurl: &str, explicit: Option<&Path>) -> Result<PathBuf> {
    match explicit {
        Some(m) => std::path::absolute(m).with_context(|| format!("mountpoint {}", m.display())),
        None => default_mountpoint(zurl),
    }
}

/// Make `mnt` exist: if it lies in [`MOUNT_BASE`], that directory is
/// created with mode `0777|S_ISVTX` (and re-chmod'ed if it is ours with
/// another mode), then `mkdir -p mnt`. Returns the directories this made,
/// deepest first (for [`unprepare`]).
pub(crate) fn prepare(mnt: &Path) -> Result<Vec<PathBuf>> {
    let mut made: Vec<PathBuf> = mnt
        .ancestors()
        .take_while(|d| !d.exists())
        .map(Path::to_path_buf)
        .collect();
    if mnt.starts_with(MOUNT_BASE) {
        let base = Path::new(MOUNT_BASE);
        const MODE: u32 = 0o1777;
        match std::fs::create_dir(base) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("mkdir {MOUNT_BASE}")),
        }
        let md = std::fs::metadata(base).with_context(|| format!("stat {MOUNT_BASE}"))?;
        if md.mode() & 0o7777 != MODE && md.uid() == nix::unistd::geteuid().as_raw() {
            std::fs::set_permissions(base, std::fs::Permissions::from_mode(MODE))
                .with_context(|| format!("chmod {MOUNT_BASE}"))?;
        }
    }
    std::fs::create_dir_all(mnt).with_context(|| format!("mkdir -p {}", mnt.display()))?;
    // MOUNT_BASE is shared with other servers: never ours to remove
    made.retain(|d| d != Path::new(MOUNT_BASE));
    Ok(made)
}

/// Remove the directories [`prepare`] made (deepest first), where they are
/// still empty: a server that could not start leaves nothing behind.
pub(crate) fn unprepare(made: &[PathBuf]) {
    for d in made {
        if let Err(e) = std::fs::remove_dir(d) {
            tracing::debug!("rmdir {}: {e}", d.display());
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_dirs() {
        if !nix::unistd::geteuid().is_root() {
            return; // /dev/shm/wcfs may belong to someone else
        }
        let mnt = Path::new(MOUNT_BASE).join(format!("test-prepare-{}/x", std::process::id()));
        let made = prepare(&mnt).unwrap();
        assert!(mnt.is_dir());
        assert_eq!(made, vec![mnt.clone(), mnt.parent().unwrap().to_path_buf()]);
        let md = std::fs::metadata(MOUNT_BASE).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o1777);
        assert!(prepare(&mnt).unwrap().is_empty()); // idempotent
        unprepare(&made);
        assert!(!mnt.parent().unwrap().exists());
        assert!(Path::new(MOUNT_BASE).is_dir());
    }
}
