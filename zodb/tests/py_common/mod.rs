//! Running the Python side of the interop tests (tests/py/).
//!
//! The Python is the venv `scripts/pyenv.sh` makes (`$WCFS_PYTHON` when
//! `./dev test` already made it). These tests never skip: without Python
//! ZODB there is no independent truth, so a missing venv is a failure.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The repository root.
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The venv's python.
pub(crate) fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        if let Some(p) = std::env::var_os("WCFS_PYTHON") {
            return PathBuf::from(p);
        }
        let out = Command::new(repo().join("scripts/pyenv.sh"))
            .output()
            .expect("run scripts/pyenv.sh");
        assert!(
            out.status.success(),
            "scripts/pyenv.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = String::from_utf8(out.stdout).unwrap();
        PathBuf::from(s.lines().last().expect("pyenv.sh printed no path").trim())
    })
}

/// `python tests/py/<script> args...`, which must succeed.
pub(crate) fn run_py(script: &str, args: &[&str]) -> Output {
    let out = py_cmd(script, args).output().expect("run python");
    assert!(
        out.status.success(),
        "{script} {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The command for `python tests/py/<script> args...`.
pub(crate) fn py_cmd(script: &str, args: &[&str]) -> Command {
    let mut c = Command::new(python());
    c.arg(repo().join("tests/py").join(script)).args(args);
    c
}
