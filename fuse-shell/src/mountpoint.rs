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
/// another mode), then `mkdir -p mnt`.
pub(crate) fn prepare(mnt: &Path) -> Result<()> {
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
    std::fs::create_dir_all(mnt).with_context(|| format!("mkdir -p {}", mnt.display()))
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
        prepare(&mnt).unwrap();
        assert!(mnt.is_dir());
        let md = std::fs::metadata(MOUNT_BASE).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o1777);
        prepare(&mnt).unwrap(); // idempotent
        std::fs::remove_dir(&mnt).unwrap();
        std::fs::remove_dir(mnt.parent().unwrap()).unwrap();
    }
}
