//! Database URLs ("zurl"): parsing, the normalized form and the default
//! mountpoint live in `ztypes::zurl` (shared with the client library);
//! here is [`open`], the storage a zurl names.

use crate::error::{Error, Result};
use crate::storage::Storage;
use std::sync::Arc;

pub use ztypes::zurl::{default_mountpoint, normalize, parse, Zurl, MOUNT_BASE};

impl From<ztypes::ZurlError> for Error {
    fn from(e: ztypes::ZurlError) -> Error {
        Error::BadZurl {
            zurl: e.zurl,
            what: e.what,
        }
    }
}

/// Open the storage a zurl names, read-only.
pub fn open(zurl: &str) -> Result<Arc<dyn Storage>> {
    match parse(zurl)? {
        Zurl::File { path } => Ok(Arc::new(crate::fs1::FileStorage::open(&path)?)),
        Zurl::Zeo { addr, storage } => {
            // ZEO 5 has no authentication: `user:password@` (which
            // `normalize` drops too) names nothing; a socket path keeps its `@`.
            let addr = match addr.rsplit_once('@') {
                Some((_, host)) if !addr.contains('/') => host,
                _ => &addr,
            };
            Ok(Arc::new(crate::zeo::ZeoStorage::open_with(
                addr,
                &storage,
                crate::zeo::ZeoOptions::from_env(),
            )?))
        }
        Zurl::Neo { .. } => Err(Error::BadZurl {
            zurl: zurl.to_owned(),
            what: "neo:// is not supported".into(),
        }),
    }
}
