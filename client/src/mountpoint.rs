//! The default mountpoint of a zurl (wcfs-protocol.md §12):
//! `/dev/shm/wcfs/<sha1hex(utf8(normalize(zurl)))>`.
//!
//! A minimal reimplementation of the server's normalization for the
//! schemes the client supports without extra knowledge: plain paths,
//! `file:`, `zeo:` and `demo:` (Python's `urlunsplit(urlsplit(zurl))`
//! round trip, with the server's additions: credentials dropped from the
//! netloc, plain paths become `file://` + the lexically absolute path).
//! `neo:`/`neos:` need parameter filtering and master sorting: not done
//! here, use [`WCFS::open`](crate::WCFS::open) with the mountpoint.

use crate::error::{Error, Result};
use sha1::{Digest, Sha1};
use std::path::{Component, Path, PathBuf};

/// Where default mountpoints live.
pub(crate) const MOUNT_BASE: &str = "/dev/shm/wcfs";

/// The default mountpoint of `zurl`.
pub(crate) fn default_mountpoint(zurl: &str) -> Result<PathBuf> {
    let norm = normalize(zurl)?;
    let d = Sha1::digest(norm.as_bytes());
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    Ok(Path::new(MOUNT_BASE).join(hex))
}

/// Normalize `zurl` (see the module docs).
pub(crate) fn normalize(zurl: &str) -> Result<String> {
    let bad = |reason: &str| Error::Zurl {
        zurl: zurl.to_owned(),
        reason: reason.to_owned(),
    };
    // urlsplit: leading C0 controls and spaces stripped; TAB, CR, LF removed.
    let s: String = zurl
        .trim_start_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\r' | '\n'))
        .collect();
    let Some((scheme, rest)) = split_scheme(&s) else {
        if s.is_empty() {
            return Err(bad("empty"));
        }
        return Ok(format!(
            "file://{}",
            lexical_absolute(Path::new(&s))?.display()
        ));
    };
    let uses_netloc = match scheme.as_str() {
        "file" => true,
        "zeo" | "demo" => false,
        "neo" | "neos" => {
            return Err(bad(
                "neo zurls are not normalized by the client: pass the mountpoint",
            ))
        }
        _ => return Err(bad("unknown scheme")),
    };
    let (rest, fragment) = rest.split_once('#').unwrap_or((rest, ""));
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (netloc, path) = match rest.strip_prefix("//") {
        Some(r) => {
            let i = r.find('/').unwrap_or(r.len());
            (&r[..i], &r[i..])
        }
        None => ("", rest),
    };
    // Credentials never take part in the mountpoint.
    let netloc = netloc.rsplit_once('@').map_or(netloc, |(_, host)| host);
    let mut url = path.to_owned();
    if !netloc.is_empty() || (uses_netloc && !url.starts_with("//")) {
        if !url.is_empty() && !url.starts_with('/') {
            url.insert(0, '/');
        }
        url = format!("//{netloc}{url}");
    }
    let mut out = format!("{scheme}:{url}");
    if !query.is_empty() {
        out.push('?');
        out.push_str(query);
    }
    if !fragment.is_empty() {
        out.push('#');
        out.push_str(fragment);
    }
    Ok(out)
}

/// `scheme:rest` if `s` starts with a URL scheme (a letter, then letters,
/// digits, `+ - .`); the scheme lowercased.
fn split_scheme(s: &str) -> Option<(String, &str)> {
    let (sch, rest) = s.split_once(':')?;
    let mut cs = sch.chars();
    let first = cs.next()?;
    if !first.is_ascii_alphabetic() || !cs.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) {
        return None;
    }
    Some((sch.to_ascii_lowercase(), rest))
}

/// `p` made absolute against the current directory, `.` and `..` resolved
/// without touching the filesystem.
fn lexical_absolute(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).map_err(|e| Error::io(p, "absolute path", e))?;
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_table() {
        for (z, want) in [
            ("file:///tmp/1.fs", "file:///tmp/1.fs"),
            ("file:/a", "file:///a"),
            ("FILE:/a", "file:///a"),
            ("/tmp/1.fs", "file:///tmp/1.fs"),
            ("/tmp/x/../1.fs", "file:///tmp/1.fs"),
            ("zeo:///s.sock", "zeo:/s.sock"),
            ("zeo://host:9001?storage=1", "zeo://host:9001?storage=1"),
            ("zeo://user:pw@host:9001", "zeo://host:9001"),
            ("zeo://h?", "zeo://h"),
            ("demo:x", "demo:x"),
            // The server's (fuse-shell) table, Python 3.11 round trips.
            ("FILE:///x?#", "file:///x"),
            ("zeo://h:1?storage=a#", "zeo://h:1?storage=a"),
            ("zeo:////x", "zeo://x"),
            ("file:", "file://"),
            (" file:///a ", "file:///a "),
            ("file:///a\tb", "file:///ab"),
            ("file://h", "file://h"),
            ("file:rel/x", "file:///rel/x"),
            ("demo:", "demo:"),
            ("zeo:a/b?q#f#g", "zeo:a/b?q#f#g"),
            ("file://user@h/x.fs", "file://h/x.fs"),
        ] {
            assert_eq!(normalize(z).unwrap(), want, "{z}");
        }
        assert!(normalize("neo://c@m").is_err());
        assert!(normalize("http://x").is_err());
        assert!(normalize("").is_err());
    }

    #[test]
    fn spec_example() {
        // wcfs-protocol.md §12.
        assert_eq!(
            default_mountpoint("file:///tmp/1.fs").unwrap(),
            Path::new("/dev/shm/wcfs/b3a5f849d7e86f4e83a900637072dd7297df37ab")
        );
    }
}
