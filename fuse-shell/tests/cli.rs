//! `wcfs cat` / `wcfs ls` / `wcfs mkdemo` as a user runs them: the fixture
//! bytes through the binary, and one-line errors (never a panic) for every
//! kind of bad input.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SHA_FILE: &str = "f5e88fa297e175efe54852026392a5f0ff5b6b5151ef63bb4cf85245a09b1eef";
const SHA_BLK3: &str = "af8030ee7eb050d7679286cb0ba3731f57ac6692ad1652efc11aeb205cde103e";

fn wcfs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wcfs"))
        .args(args)
        .output()
        .expect("run wcfs")
}

fn fixture(kind: &str) -> (tempfile::TempDir, PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/zblk")
        .join(kind)
        .join("zblk.fs");
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("zblk.fs");
    std::fs::copy(src, &dst).unwrap();
    (dir, dst)
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A failed run: non-zero exit, exactly one line on stderr naming `what`.
fn assert_one_line_error(o: &Output, what: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "succeeded: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    assert!(err.contains(what), "{err:?} does not mention {what:?}");
    // no cause repeated at the end (an OS error printed twice, say)
    let parts: Vec<&str> = err.trim_end().split(": ").collect();
    assert!(
        parts.len() < 2 || parts[parts.len() - 1] != parts[parts.len() - 2],
        "repeated cause: {err:?}"
    );
}

#[test]
fn cat_fixtures() {
    for kind in ["py2_pickle1", "py2_pickle2", "py2_pickle3", "py3_pickle3"] {
        let (_d, fs) = fixture(kind);
        let fs = fs.to_str().unwrap();
        let o = wcfs(&["cat", fs, "0000000000000001"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            (o.stdout.len(), sha(&o.stdout).as_str()),
            (8388608, SHA_FILE),
            "{kind}"
        );
        let url = format!("file://{fs}");
        let o = wcfs(&[
            "cat",
            &url,
            "0000000000000001",
            "--blk",
            "3",
            "--at",
            "0285cbac3851eb99",
        ]);
        assert_eq!(sha(&o.stdout), SHA_BLK3, "{kind}");
        let o = wcfs(&["ls", fs]);
        let out = String::from_utf8(o.stdout).unwrap();
        let rows: Vec<Vec<&str>> = out
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows,
            vec![vec!["0000000000000001", "2097152", "8388608"]],
            "{kind}"
        );
    }
}

#[test]
fn bad_input_is_one_line_error() {
    let (dir, fs) = fixture("py3_pickle3");
    let fs = fs.to_str().unwrap();
    let oid1 = "0000000000000001";
    assert_one_line_error(&wcfs(&["cat", fs, "00000000000000ff"]), "no such object");
    assert_one_line_error(&wcfs(&["cat", fs, "0000000000000002"]), "not a ZBigFile");
    assert_one_line_error(
        &wcfs(&["cat", fs, oid1, "--at", "0285cbac20da7419"]),
        "did not exist yet",
    );
    assert_one_line_error(
        &wcfs(&["cat", fs, oid1, "--at", "7000000000000000"]),
        "beyond the database head",
    );
    assert_one_line_error(&wcfs(&["cat", "http://x/y", oid1]), "unknown scheme");
    let missing = dir.path().join("nope.fs");
    assert_one_line_error(&wcfs(&["cat", missing.to_str().unwrap(), oid1]), "nope.fs");
    // malformed ids are rejected by the argument parser (exit 2), one line each
    for (args, what) in [
        (vec!["cat", fs, "1"], "16 hex digits"),
        (vec!["cat", fs, oid1, "--at", "zz"], "16 hex digits"),
        (vec!["cat", fs, oid1, "--blk", "x"], "invalid digit"),
    ] {
        let o = wcfs(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(what) && !err.contains("panicked"), "{err}");
    }
    // a corrupt database: the last transaction's redundant length disagrees
    // with its header (a tlen pointing past the end would instead look like
    // a commit in progress, which a reader must simply not see)
    let bad = dir.path().join("bad.fs");
    let mut b = std::fs::read(fs).unwrap();
    let n = b.len();
    b[n - 1] ^= 0x10;
    std::fs::write(&bad, &b).unwrap();
    let o = wcfs(&["cat", bad.to_str().unwrap(), oid1]);
    assert_one_line_error(&o, "bad.fs");
}

#[test]
fn mkdemo_then_cat() {
    let dir = tempfile::tempdir().unwrap();
    let fs = dir.path().join("Data.fs");
    let o = wcfs(&["mkdemo", fs.to_str().unwrap(), "--blocks", "3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let oids: Vec<String> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(oids.len(), 2);
    for oid in &oids {
        let o = wcfs(&["cat", fs.to_str().unwrap(), oid]);
        assert!(o.status.success());
        assert_eq!(o.stdout.len(), 3 * 2097152);
        assert_eq!(o.stdout, zodb::demo::expected_content(3), "{oid}");
    }
    // refuses to overwrite
    assert_one_line_error(&wcfs(&["mkdemo", fs.to_str().unwrap()]), "exists");
}
