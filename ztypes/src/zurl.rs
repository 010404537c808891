//! Database URLs ("zurl"), as ZODB's zodburi and wendelin.core write them.
//!
//! - a plain path, or `file://PATH` (`file:///abs/Data.fs`): FileStorage;
//! - `zeo://host:port?storage=NAME`, `zeo://PATH` (UNIX socket): ZEO;
//! - `neo://name@master1,master2`, `neos://...`: NEO.
//!
//! Parsing only: the `zodb` crate opens the storage a zurl names
//! (`zodb::zurl::open`; FileStorage and ZEO have drivers, `neo://` parses
//! into [`Zurl`] and is reported as having none).

//!
//! # Default mountpoint
//!
//! [`normalize`] reproduces the original's `zurl_normalize_main`: Python's
//! `urlunsplit(urlsplit(zurl))` (as Python 3.11 does it) plus a per-scheme
//! hook, so that a Rust and a Python front end agree on the mountpoint of
//! the same database ([`default_mountpoint`]; server and client both use
//! it). Two additions of ours:
//!
//! - **credentials** (`user:password@` in the netloc) are stripped before
//!   hashing, for every scheme but `neo`/`neos`, whose `name@` is the
//!   cluster name (their credentials are the `ca`/`cert`/`key` parameters,
//!   which the NEO hook drops);
//! - a **plain path** (no scheme; opened as a FileStorage) normalizes to
//!   `file://` + the path made absolute lexically (against the current
//!   directory, `.` and `..` resolved without touching the filesystem), so
//!   `/tmp/1.fs`, `1.fs` run from `/tmp` and `file:///tmp/1.fs` share one
//!   mountpoint. The original rejects such a zurl.

use sha1::{Digest, Sha1};
use std::path::{Component, PathBuf};

/// A database URL that we cannot parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("zurl {zurl:?}: {what}")]
pub struct ZurlError {
    /// The URL as given.
    pub zurl: String,
    /// What is wrong with it.
    pub what: String,
}

/// Results of this module.
pub type Result<T> = std::result::Result<T, ZurlError>;

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
    let bad = |what: &str| ZurlError {
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

// ---- normalization and the default mountpoint ----

/// Where default mountpoints live (wcfs-protocol.md §12).
pub const MOUNT_BASE: &str = "/dev/shm/wcfs";

/// The default mountpoint of `zurl`, where `wcfs serve` mounts it when no
/// mountpoint is given: `/dev/shm/wcfs/<sha1hex(utf8(normalize(zurl)))>`.
pub fn default_mountpoint(zurl: &str) -> Result<PathBuf> {
    let norm = normalize(zurl)?;
    Ok(std::path::Path::new(MOUNT_BASE).join(sha1_hex(&norm)))
}

fn sha1_hex(s: &str) -> String {
    let d = Sha1::digest(s.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Python's `urlsplit` result.
#[derive(Debug, Default, PartialEq, Eq)]
struct Split {
    scheme: String,
    netloc: String,
    path: String,
    query: String,
    fragment: String,
}

/// Python 3.11 `urllib.parse.urlsplit` (str, `allow_fragments=True`).
fn urlsplit(url: &str) -> std::result::Result<Split, String> {
    // Leading C0 controls and spaces are stripped; tab, CR, LF removed anywhere.
    let url: String = url
        .trim_start_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\r' | '\n'))
        .collect();
    let mut s = Split::default();
    let mut rest: &str = &url;
    if let Some(i) = rest.find(':') {
        let cand = &rest[..i];
        let scheme_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.');
        if i > 0 && cand.as_bytes()[0].is_ascii_alphabetic() && cand.chars().all(scheme_char) {
            s.scheme = cand.to_ascii_lowercase();
            rest = &rest[i + 1..];
        }
    }
    if let Some(r) = rest.strip_prefix("//") {
        let end = r.find(['/', '?', '#']).unwrap_or(r.len());
        s.netloc = r[..end].to_string();
        rest = &r[end..];
        if s.netloc.contains('[') != s.netloc.contains(']') {
            return Err("invalid IPv6 URL".into());
        }
    }
    if let Some((r, f)) = rest.split_once('#') {
        s.fragment = f.to_string();
        rest = r;
    }
    if let Some((r, q)) = rest.split_once('?') {
        s.query = q.to_string();
        rest = r;
    }
    s.path = rest.to_string();
    Ok(s)
}

/// Python 3.11 `urllib.parse.uses_netloc`.
const USES_NETLOC: &[&str] = &[
    "", "ftp", "http", "gopher", "nntp", "telnet", "imap", "wais", "file", "mms", "https", "shttp",
    "snews", "prospero", "rtsp", "rtspu", "rsync", "svn", "svn+ssh", "sftp", "nfs", "git",
    "git+ssh", "ws", "wss",
];

/// Python 3.11 `urllib.parse.urlunsplit`.
fn urlunsplit(s: &Split) -> String {
    let mut url = s.path.clone();
    if !s.netloc.is_empty()
        || (!s.scheme.is_empty()
            && USES_NETLOC.contains(&s.scheme.as_str())
            && !url.starts_with("//"))
    {
        if !url.is_empty() && !url.starts_with('/') {
            url.insert(0, '/');
        }
        url = format!("//{}{url}", s.netloc);
    }
    if !s.scheme.is_empty() {
        url = format!("{}:{url}", s.scheme);
    }
    if !s.query.is_empty() {
        url = format!("{url}?{}", s.query);
    }
    if !s.fragment.is_empty() {
        url = format!("{url}#{}", s.fragment);
    }
    url
}

/// Whether the zodb crate takes `zurl` as a plain path (see
/// `zodb::zurl::parse`: no scheme, or a one-letter "scheme" like `c:x`).
fn is_plain_path(zurl: &str) -> bool {
    match zurl.find(':') {
        None => true,
        Some(i) => {
            let cand = &zurl[..i];
            let ok = cand.len() > 1
                && cand.as_bytes()[0].is_ascii_alphabetic()
                && cand
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
            !ok
        }
    }
}

/// `path` made absolute without touching the filesystem.
fn lexical_absolute(path: &str) -> Result<String> {
    let abs = std::path::absolute(path).map_err(|e| ZurlError {
        zurl: path.to_owned(),
        what: format!("make absolute: {e}"),
    })?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out.into_os_string().into_string().map_err(|p| ZurlError {
        zurl: p.to_string_lossy().into_owned(),
        what: "not UTF-8".into(),
    })
}

/// The normalized form of `zurl`, the string whose sha1 names its default
/// mountpoint (see [the section](self#default-mountpoint)).
pub fn normalize(zurl: &str) -> Result<String> {
    let bad = |what: String| ZurlError {
        zurl: zurl.to_owned(),
        what,
    };
    if zurl.is_empty() {
        return Err(bad("empty".into()));
    }
    if is_plain_path(zurl) {
        return Ok(format!("file://{}", lexical_absolute(zurl)?));
    }
    let mut s = urlsplit(zurl).map_err(bad)?;
    match s.scheme.as_str() {
        "file" | "zeo" | "demo" => strip_credentials(&mut s),
        "neo" | "neos" => normalize_neo(&mut s),
        other => return Err(bad(format!("unknown scheme {other:?}"))),
    }
    Ok(urlunsplit(&s))
}

/// Drop `user:password@` from the netloc.
fn strip_credentials(s: &mut Split) {
    if let Some((_, host)) = s.netloc.rsplit_once('@') {
        s.netloc = host.to_string();
    }
}

/// The NEO hook: credentials and client-side options do not name another
/// database, the order of masters and parameters does not matter.
fn normalize_neo(s: &mut Split) {
    let mut secure = false;
    let mut params: Vec<&str> = Vec::new();
    for p in s.query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        match k {
            "ca" | "cert" | "key" => secure |= !v.is_empty(),
            "compress" | "read-only" | "logfile" | "cache-size" => {}
            _ => params.push(p),
        }
    }
    params.sort_unstable();
    s.query = params.join("&");
    if secure {
        s.scheme = "neos".into();
    }
    let (name, masters) = match s.netloc.rsplit_once('@') {
        Some((n, m)) => (Some(n), m),
        None => (None, s.netloc.as_str()),
    };
    let mut ms: Vec<&str> = masters.split(',').collect();
    ms.sort_unstable();
    let masters = ms.join(",");
    s.netloc = match name {
        Some(n) => format!("{n}@{masters}"),
        None => masters,
    };
}

#[cfg(test)]
mod normalize_tests {
    use super::*;
    use std::path::Path;

    /// Expected values are Python 3.11.7's
    /// `urlunsplit(urlsplit(z))`, checked when written.
    #[test]
    fn roundtrip_like_python() {
        for (z, want) in [
            ("file:///tmp/1.fs", "file:///tmp/1.fs"),
            ("file:/a", "file:///a"),
            ("zeo:///s.sock", "zeo:/s.sock"),
            ("FILE:///x?#", "file:///x"),
            ("zeo://h:1?storage=a#", "zeo://h:1?storage=a"),
            ("zeo:////x", "zeo://x"),
            ("file:", "file://"),
            ("x:/a?b#c", "x:/a?b#c"),
            (" file:///a ", "file:///a "),
            ("file:///a\tb", "file:///ab"),
            ("file://h", "file://h"),
            ("file:rel/x", "file:///rel/x"),
            ("demo:", "demo:"),
            ("zeo:a/b?q#f#g", "zeo:a/b?q#f#g"),
        ] {
            assert_eq!(urlunsplit(&urlsplit(z).unwrap()), want, "{z:?}");
        }
    }

    #[test]
    fn spec_example() {
        assert_eq!(normalize("file:///tmp/1.fs").unwrap(), "file:///tmp/1.fs");
        assert_eq!(
            default_mountpoint("file:///tmp/1.fs").unwrap(),
            Path::new("/dev/shm/wcfs/b3a5f849d7e86f4e83a900637072dd7297df37ab")
        );
        assert_eq!(
            default_mountpoint("FILE:/tmp/1.fs?").unwrap(),
            default_mountpoint("file:///tmp/1.fs").unwrap()
        );
    }

    #[test]
    fn schemes() {
        for (z, want) in [
            ("zeo:///s.sock", "zeo:/s.sock"),
            (
                "zeo://u:pw@h:9001?storage=main",
                "zeo://h:9001?storage=main",
            ),
            ("file://user@h/x.fs", "file://h/x.fs"),
            (
                "neo://db@m2,m1?logfile=/l&z=1&compress=true&a=2",
                "neo://db@m1,m2?a=2&z=1",
            ),
            ("neo://db@m?ca=&cert=&key=", "neo://db@m"),
            ("neo://db@m?ca=/c&cert=/e&key=/k", "neos://db@m"),
            ("neos://db@b,a?read-only=1&cache-size=9", "neos://db@a,b"),
        ] {
            assert_eq!(normalize(z).unwrap(), want, "{z:?}");
        }
        for bad in ["", "http://x/y", "s3://b/k"] {
            assert!(normalize(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn plain_path() {
        assert_eq!(normalize("/tmp/1.fs").unwrap(), "file:///tmp/1.fs");
        assert_eq!(normalize("/tmp/./a/../1.fs").unwrap(), "file:///tmp/1.fs");
        assert_eq!(normalize("c:x").unwrap(), normalize("./c:x").unwrap());
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            normalize("rel.fs").unwrap(),
            format!("file://{}/rel.fs", cwd.display())
        );
        assert_eq!(
            default_mountpoint("/tmp/1.fs").unwrap(),
            default_mountpoint("file:///tmp/1.fs").unwrap()
        );
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
            assert!(matches!(parse(bad), Err(ZurlError { .. })), "{bad:?}");
        }
    }
}
