//! `wcfs`: the WCFS command.
//!
//! `serve` mounts a database as a FUSE filesystem (the `serve` module); the
//! read-side tools `cat` and `ls` work over any database the zodb crate can
//! open, and `mkdemo` creates a database to try them on. The binary is
//! [`main`] over this library.

#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(unsafe_op_in_unsafe_fn)]

mod cli;
mod lifecycle;
mod mountpoint;
/// The server. Public only with the `testing` feature (this package's own
/// tests: the filesystem without a mount, `tests/no_mount.rs`).
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod serve;
#[cfg(not(feature = "testing"))]
mod serve;
mod tools;

use anyhow::Context;
use clap::Parser;
use std::process::ExitCode;

fn init_logging(log: &cli::LogArgs) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("WCFS_LOG") {
        Ok(f) if !f.is_empty() => EnvFilter::try_new(f),
        _ => EnvFilter::try_new(&log.log_level),
    }
    .context("bad --log-level")?;
    let b = tracing_subscriber::fmt().with_env_filter(filter);
    match &log.log_file {
        None => b.with_writer(std::io::stderr).init(),
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("open log file {}", p.display()))?;
            b.with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .init()
        }
    }
    Ok(())
}

/// The `wcfs` command: parse the command line, run it, map its error to a
/// one-line message and the exit status.
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let run = || -> anyhow::Result<()> {
        init_logging(&cli.log)?;
        tools::run(cli.cmd)
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed stdout (`wcfs cat ... | head`) is not an error worth a message.
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            eprintln!("wcfs: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, as `{:#}` prints them, but
/// without a cause that the message before it already ends with (zodb
/// errors show their OS error in their own message, as wcfs does).
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.ends_with(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}
