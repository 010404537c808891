//! Database URLs ("zurl"), as ZODB's zodburi and wendelin.core write them.
//!
//! - a plain path, or `file://PATH` (`file:///abs/Data.fs`): FileStorage;
//! - `zeo://host:port?storage=NAME`, `zeo://PATH` (UNIX socket): ZEO;
//! - `neo://name@master1,master2`, `neos://...`: NEO.
//!
//! Only FileStorage has a driver so far; the other schemes parse into
//! [`Zurl`] and [`open`] reports that their driver is missing.

use crate::error::{Error, Result};
use crate::storage::Storage;
use std::path::PathBuf;
use std::sync::Arc;

/// A parsed zurl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Zurl {
    /// A FileStorage at this path.
    File {
        /// The Data.fs path.
        path: PathBuf,
    },
    /// A ZEO server.
    Zeo {
        /// `host:port`, or a UNIX socket path.
        addr: String,
        /// Storage name (`?storage=`, default `"1"`).
        storage: String,
    },
    /// A NEO cluster (no driver; parsed so that errors are precise).
    Neo {
        /// Everything after the scheme.
        rest: String,
    },
}

/// Split `scheme:rest` if `s` starts with a URL scheme (RFC 3986: a letter,
/// then letters, digits, `+ - .`).
fn scheme(s: &str) -> Option<(String, &str)> {
    let (sch, rest) = s.split_once(':')?;
    let mut cs = sch.chars();
    let first = cs.next()?;
    if !first.is_ascii_alphabetic() || !cs.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) {
        return None;
    }
    Some((sch.to_ascii_lowercase(), rest))
}

/// Parse a zurl.
pub fn parse(zurl: &str) -> Result<Zurl> {
    let bad = |what: &str| Error::BadZurl {
        zurl: zurl.to_owned(),
        what: what.to_owned(),
    };
    if zurl.is_empty() {
        return Err(bad("empty"));
    }
    let Some((sch, rest)) = scheme(zurl) else {
        return Ok(Zurl::File { path: zurl.into() });
    };
    match sch.as_str() {
        "file" => {
            // file:///abs, file:/abs, file://rel (zodburi joins netloc and path);
            // a query (?...) carries FileStorage options we do not need.
            let rest = rest.split(['?', '#']).next().unwrap_or_default();
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(bad("no path"));
            }
            Ok(Zurl::File { path: path.into() })
        }
        "zeo" => {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let (addr, query) = rest.split_once('?').unwrap_or((rest, ""));
            if addr.is_empty() {
                return Err(bad("no server address"));
            }
            let mut storage = "1".to_owned();
            for kv in query.split('&').filter(|s| !s.is_empty()) {
                if let Some(v) = kv.strip_prefix("storage=") {
                    storage = v.to_owned();
                }
            }
            Ok(Zurl::Zeo {
                addr: addr.to_owned(),
                storage,
            })
        }
        "neo" | "neos" => Ok(Zurl::Neo {
            rest: rest.to_owned(),
        }),
        // A one-letter "scheme" is more likely a relative path like "c:x";
        // anything else is a scheme we do not know.
        _ if sch.len() == 1 => Ok(Zurl::File { path: zurl.into() }),
        _ => Err(bad(&format!("unknown scheme {sch:?}"))),
    }
}

/// Open the storage a zurl names, read-only.
pub fn open(zurl: &str) -> Result<Arc<dyn Storage>> {
    match parse(zurl)? {
        Zurl::File { path } => Ok(Arc::new(crate::fs1::FileStorage::open(&path)?)),
        Zurl::Zeo { .. } => Err(Error::BadZurl {
            zurl: zurl.to_owned(),
            what: "zeo:// has no driver yet".into(),
        }),
        Zurl::Neo { .. } => Err(Error::BadZurl {
            zurl: zurl.to_owned(),
            what: "neo:// is not supported".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        let f = |p: &str| Zurl::File { path: p.into() };
        assert_eq!(parse("/tmp/1.fs").unwrap(), f("/tmp/1.fs"));
        assert_eq!(parse("data/1.fs").unwrap(), f("data/1.fs"));
        assert_eq!(parse("file:///tmp/1.fs").unwrap(), f("/tmp/1.fs"));
        assert_eq!(parse("FILE:///tmp/1.fs?quota=3").unwrap(), f("/tmp/1.fs"));
        assert_eq!(parse("file:/tmp/1.fs").unwrap(), f("/tmp/1.fs"));
        assert_eq!(parse("file://rel/1.fs").unwrap(), f("rel/1.fs"));
        assert_eq!(
            parse("zeo://localhost:9001?storage=main").unwrap(),
            Zurl::Zeo {
                addr: "localhost:9001".into(),
                storage: "main".into()
            }
        );
        assert_eq!(
            parse("zeo:///run/zeo.sock").unwrap(),
            Zurl::Zeo {
                addr: "/run/zeo.sock".into(),
                storage: "1".into()
            }
        );
        assert!(matches!(parse("neo://db@m1,m2").unwrap(), Zurl::Neo { .. }));
        for bad in ["", "file://", "zeo://", "http://x/y", "s3://bucket/key"] {
            assert!(matches!(parse(bad), Err(Error::BadZurl { .. })), "{bad:?}");
        }
    }
}
