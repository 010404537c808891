//! `wcfs`: the WCFS command.
//!
//! `serve` mounts a database as a FUSE filesystem (the `serve` module); the
//! read-side tools `cat` and `ls` work over any database the zodb crate can
//! open, and `mkdemo` creates a database to try them on. The binary is
//! [`main`] over this library.

#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(unsafe_op_in_unsafe_fn)]

mod cli;
mod gocli;
mod lifecycle;
mod logging;
mod mountpoint;
/// The server. Public only with the `testing` feature (this package's own
/// tests: the filesystem without a mount, `tests/no_mount.rs`).
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod serve;
#[cfg(not(feature = "testing"))]
mod serve;
mod tools;

use clap::Parser;
use std::process::ExitCode;

/// The `wcfs` command: parse the command line, run it, map its error to a
/// one-line message and the exit status.
pub fn main() -> ExitCode {
    ExitCode::from(main_with(std::env::args().collect()))
}

/// [`main`] with the command line given (`argv[0]` the program name),
/// returning the exit status: what the Python package's `python -m wcfs`
/// runs.
pub fn main_with(argv: Vec<String>) -> u8 {
    let args = argv.get(1..).unwrap_or_default();
    // our subcommands, as clap knows them: any other first argument means
    // the Go server's command line
    let cmd = <cli::Cli as clap::CommandFactory>::command();
    let subcommands: Vec<&str> = cmd.get_subcommands().map(|c| c.get_name()).collect();
    if !gocli::is_ours(args, &subcommands) {
        return go_main(argv.first().map_or("wcfs", |p| p.as_str()), args);
    }
    let cli = match cli::Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let run = || -> anyhow::Result<()> {
        logging::LogTo::ours(&cli.log.log_level, cli.log.log_file.clone()).init()?;
        tools::run(cli.cmd)
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            // A closed stdout (`wcfs cat ... | head`) is not an error worth a message.
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return 0;
                }
            }
            eprintln!("wcfs: {}", one_line(&e));
            1
        }
    }
}

/// The Go server's command line (`wcfs [flags] <zurl> <mntpt>`, see
/// [`gocli`]): serve as the Go server does; usage errors exit 2.
fn go_main(prog: &str, args: &[String]) -> u8 {
    let g = match gocli::parse(prog, args) {
        Ok(g) => g,
        Err(u) => {
            eprint!("{}", u.text);
            return u.code;
        }
    };
    if let Err(e) = g.log_to().init() {
        eprintln!("wcfs: {}", one_line(&e));
        return 1;
    }
    match tools::serve(g.serve_opts(), false) {
        Ok(()) => 0,
        Err(e) => {
            // (as the Go server's log.Fatal: through the log, which sends
            // errors to stderr too)
            tracing::error!("{}", one_line(&e));
            1
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
