//! The default mountpoint of a zurl (wcfs-protocol.md §12):
//! `/dev/shm/wcfs/<sha1hex(utf8(normalize(zurl)))>`, computed by
//! `ztypes::zurl` exactly as the server computes it.

use crate::error::{Error, Result};
use std::path::PathBuf;

/// The default mountpoint of `zurl`.
pub(crate) fn default_mountpoint(zurl: &str) -> Result<PathBuf> {
    ztypes::zurl::default_mountpoint(zurl).map_err(|e| zurl_error(zurl, e))
}

/// The normalized form of `zurl` (two zurls of one database compare equal).
pub(crate) fn normalize(zurl: &str) -> Result<String> {
    ztypes::zurl::normalize(zurl).map_err(|e| zurl_error(zurl, e))
}

fn zurl_error(zurl: &str, e: ztypes::ZurlError) -> Error {
    Error::Zurl {
        zurl: zurl.to_owned(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn spec_example() {
        // wcfs-protocol.md §12.
        assert_eq!(
            default_mountpoint("file:///tmp/1.fs").unwrap(),
            Path::new("/dev/shm/wcfs/b3a5f849d7e86f4e83a900637072dd7297df37ab")
        );
        assert!(normalize("http://x").is_err());
    }
}
