//! The Go server's command line, `wcfs [flags] <zurl> <mntpt>`, as
//! wendelin.core spawns it (`wendelin/wcfs/__init__.py`: the binary at
//! `<package>/wcfs/wcfs`, flags from `$WENDELIN_CORE_WCFS_OPTIONS` and its
//! own `-autoexit`), so that ours can replace the Go binary unchanged.
//!
//! Go `flag` syntax: flags before the positional arguments, `-x` or `--x`,
//! values as `-x=v` or `-x v`, booleans as `-x` or `-x=true` (never taking
//! the next argument), `--` ends the flags. The flags are the Go server's
//! own (`-autoexit`, `-pintimeout <Go duration>`, `-debug`, `-trace.fuse`)
//! and glog's (`-v`, `-logtostderr`, `-alsologtostderr`,
//! `-stderrthreshold`, `-log_dir`, `-vmodule`, `-log_backtrace_at`),
//! mapped onto our options and logging. Wrong usage prints what the Go
//! server prints and exits 2.
//!
//! What differs from our `wcfs serve`, as the Go server behaves: the mount
//! has no `auto_unmount` (a server that dies leaves its mount, every
//! access ENOTCONN, for wendelin.core to find and unmount), the
//! mountpoint is used as given, and argv is left as it is (wendelin.core
//! recognises its server by `argv[-2:] == (zurl, mntpt)`).

use crate::logging::LogTo;
use crate::serve::ServeOpts;
use std::path::PathBuf;

/// A flag of the Go server: name, whether it is a boolean, the name of its
/// value in the usage text, its usage text, its default as Go shows it.
struct Flag {
    name: &'static str,
    boolean: bool,
    value: &'static str,
    usage: &'static str,
    default: &'static str,
}

/// Every flag, sorted by name (as Go prints them).
const FLAGS: &[Flag] = &[
    Flag {
        name: "alsologtostderr",
        boolean: true,
        value: "",
        usage: "log to standard error as well as files",
        default: "",
    },
    Flag {
        name: "autoexit",
        boolean: true,
        value: "",
        usage: "automatically stop service when there is no client activity",
        default: "",
    },
    Flag {
        name: "debug",
        boolean: true,
        value: "",
        usage: "enable debugging features",
        default: "",
    },
    Flag {
        name: "log_backtrace_at",
        boolean: false,
        value: "value",
        usage: "when logging hits line file:N, emit a stack trace",
        default: "",
    },
    Flag {
        name: "log_dir",
        boolean: false,
        value: "string",
        usage: "If non-empty, write log files in this directory",
        default: "",
    },
    Flag {
        name: "logtostderr",
        boolean: true,
        value: "",
        usage: "log to standard error instead of files",
        default: "",
    },
    Flag {
        name: "pintimeout",
        boolean: false,
        value: "duration",
        usage: "clients are killed if they do not handle pin notification in pintimeout time",
        default: "30s",
    },
    Flag {
        name: "stderrthreshold",
        boolean: false,
        value: "value",
        usage: "logs at or above this threshold go to stderr",
        default: "2",
    },
    Flag {
        name: "trace.fuse",
        boolean: true,
        value: "",
        usage: "trace FUSE exchange",
        default: "",
    },
    Flag {
        name: "v",
        boolean: false,
        value: "value",
        usage: "log level for V logs",
        default: "",
    },
    Flag {
        name: "vmodule",
        boolean: false,
        value: "value",
        usage: "comma-separated list of pattern=N settings for file-filtered logging",
        default: "",
    },
];

/// The parsed command line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GoArgs {
    pub(crate) zurl: String,
    pub(crate) mntpt: PathBuf,
    /// Seconds.
    pub(crate) pintimeout: f64,
    pub(crate) autoexit: bool,
    pub(crate) debug: bool,
    pub(crate) trace_fuse: bool,
    /// glog `-v`.
    pub(crate) v: i32,
    pub(crate) logtostderr: bool,
    pub(crate) alsologtostderr: bool,
    /// glog severity: 0 INFO, 1 WARNING, 2 ERROR, 3 FATAL.
    pub(crate) stderrthreshold: u8,
    pub(crate) log_dir: Option<PathBuf>,
}

/// Why there is nothing to run: the text for stderr and the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) text: String,
    pub(crate) code: u8,
}

/// Go's `flag.PrintDefaults` of our flags, after `Usage of <prog>:`.
fn defaults(prog: &str) -> String {
    let mut s = format!("Usage of {prog}:\n");
    for f in FLAGS {
        let mut line = format!("  -{}", f.name);
        if !f.value.is_empty() {
            line.push(' ');
            line.push_str(f.value);
        }
        // Go: a short flag's usage on the same line, after a tab
        if line.len() <= 4 {
            line.push('\t');
        } else {
            line.push_str("\n    \t");
        }
        line.push_str(f.usage);
        if !f.default.is_empty() {
            line.push_str(&format!(" (default {})", f.default));
        }
        s.push_str(&line);
        s.push('\n');
    }
    s
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// glog's severity names and numbers.
fn parse_severity(v: &str) -> Option<u8> {
    match v.to_ascii_uppercase().as_str() {
        "INFO" | "0" => Some(0),
        "WARNING" | "1" => Some(1),
        "ERROR" | "2" => Some(2),
        "FATAL" | "3" => Some(3),
        _ => None,
    }
}

/// Parse `args` (without the program name `prog`) as the Go server does.
pub(crate) fn parse(prog: &str, args: &[String]) -> Result<GoArgs, Usage> {
    let fail = |msg: String| Usage {
        text: format!("{msg}\n{}", defaults(prog)),
        code: 2,
    };
    let mut g = GoArgs {
        zurl: String::new(),
        mntpt: PathBuf::new(),
        pintimeout: 30.0,
        autoexit: false,
        debug: false,
        trace_fuse: false,
        v: 0,
        logtostderr: false,
        alsologtostderr: false,
        stderrthreshold: 2,
        log_dir: None,
    };
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a.len() < 2 || !a.starts_with('-') {
            break;
        }
        let mut body = &a[1..];
        if let Some(b) = body.strip_prefix('-') {
            if b.is_empty() {
                i += 1; // "--": the end of the flags
                break;
            }
            body = b;
        }
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(fail(format!("bad flag syntax: {a}")));
        }
        i += 1;
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (body, None),
        };
        if name == "help" || name == "h" {
            return Err(Usage {
                text: defaults(prog),
                code: 0,
            });
        }
        let Some(f) = FLAGS.iter().find(|f| f.name == name) else {
            return Err(fail(format!("flag provided but not defined: -{name}")));
        };
        let value = match (f.boolean, value) {
            (true, None) => "true".to_owned(),
            (_, Some(v)) => v,
            (false, None) => match args.get(i) {
                Some(v) => {
                    i += 1;
                    v.clone()
                }
                None => return Err(fail(format!("flag needs an argument: -{name}"))),
            },
        };
        let bad = |why: &str| {
            if f.boolean {
                fail(format!(
                    "invalid boolean value {} for -{name}: {why}",
                    wire::go_quote(&value)
                ))
            } else {
                fail(format!(
                    "invalid value {} for flag -{name}: {why}",
                    wire::go_quote(&value)
                ))
            }
        };
        let boolean = || parse_bool(&value).ok_or_else(|| bad("parse error"));
        match name {
            "autoexit" => g.autoexit = boolean()?,
            "debug" => g.debug = boolean()?,
            "trace.fuse" => g.trace_fuse = boolean()?,
            "logtostderr" => g.logtostderr = boolean()?,
            "alsologtostderr" => g.alsologtostderr = boolean()?,
            "pintimeout" => g.pintimeout = wire::parse_go_duration(&value).map_err(|e| bad(&e))?,
            "v" => {
                g.v = value.parse().map_err(|_| {
                    bad(&format!(
                        "strconv.ParseInt: parsing {}: invalid syntax",
                        wire::go_quote(&value)
                    ))
                })?
            }
            "stderrthreshold" => {
                g.stderrthreshold = parse_severity(&value).ok_or_else(|| bad("unknown severity"))?
            }
            "log_dir" => g.log_dir = (!value.is_empty()).then(|| PathBuf::from(&value)),
            // accepted: they only tune glog's output
            "vmodule" | "log_backtrace_at" => {}
            _ => unreachable!("every flag of FLAGS is handled"),
        }
    }
    let pos = &args[i..];
    if pos.len() != 2 {
        return Err(Usage {
            text: format!("Usage: {prog} [OPTIONS] zurl mntpt\n"),
            code: 2,
        });
    }
    g.zurl = pos[0].clone();
    g.mntpt = PathBuf::from(&pos[1]);
    Ok(g)
}

impl GoArgs {
    /// What to serve: as the Go server (no auto_unmount).
    pub(crate) fn serve_opts(&self) -> ServeOpts {
        ServeOpts {
            zurl: self.zurl.clone(),
            mountpoint: self.mntpt.clone(),
            pintimeout: self.pintimeout,
            autoexit: self.autoexit,
            debug: self.debug,
            auto_unmount: false,
            readahead_kb: crate::serve::DEFAULT_READAHEAD_KB,
        }
    }

    /// Where logs go, as glog would send them: with `-logtostderr`
    /// everything to stderr; else what reaches `-stderrthreshold` to
    /// stderr (everything with `-alsologtostderr`), and everything to
    /// `wcfs.<pid>.log` in `-log_dir` (default `/tmp`, as glog's files).
    /// `-v` N > 0 adds our debug logs, `-trace.fuse` the FUSE exchange.
    pub(crate) fn log_to(&self) -> LogTo {
        let mut all = match self.v {
            v if v >= 2 => "debug".to_owned(),
            1 => "info,wcfs=debug,zodb=debug,engine=debug".to_owned(),
            _ => "info".to_owned(),
        };
        if self.trace_fuse {
            all.push_str(",fuser=debug");
        }
        if self.logtostderr {
            return LogTo {
                stderr: Some(all),
                file: None,
            };
        }
        let threshold = match self.stderrthreshold {
            0 => "info",
            1 => "warn",
            _ => "error",
        };
        let dir = self
            .log_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        LogTo {
            stderr: Some(if self.alsologtostderr {
                all.clone()
            } else {
                threshold.to_owned()
            }),
            file: Some((dir.join(format!("wcfs.{}.log", std::process::id())), all)),
        }
    }
}

/// Whether `args` (without the program name) are for our own CLI: its
/// first argument after our global logging options is one of our
/// subcommands or a help/version request. Anything else is the Go form.
pub(crate) fn is_ours(args: &[String], subcommands: &[&str]) -> bool {
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "--log-level" | "--log-file" => i += 2,
            _ if a.starts_with("--log-level=") || a.starts_with("--log-file=") => i += 1,
            _ => {
                return subcommands.contains(&a)
                    || matches!(a, "help" | "-h" | "--help" | "-V" | "--version")
            }
        }
    }
    true // nothing but our options (or nothing): our usage
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<GoArgs, Usage> {
        let v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse("/x/wcfs", &v)
    }

    #[test]
    fn flag_forms() {
        let g = p(&["-autoexit", "--pintimeout", "1.5s", "-debug=true", "z", "m"]).unwrap();
        assert_eq!((g.autoexit, g.pintimeout, g.debug), (true, 1.5, true));
        assert_eq!((g.zurl.as_str(), g.mntpt.to_str().unwrap()), ("z", "m"));
        let g = p(&[
            "-pintimeout=100ms",
            "--autoexit=false",
            "-v=2",
            "-logtostderr",
            "z",
            "m",
        ])
        .unwrap();
        assert_eq!(
            (g.pintimeout, g.autoexit, g.v, g.logtostderr),
            (0.1, false, 2, true)
        );
        let g = p(&[
            "-alsologtostderr",
            "-stderrthreshold",
            "INFO",
            "-log_dir",
            "/var/log",
            "-vmodule=a=1",
            "-log_backtrace_at",
            "x.go:1",
            "-trace.fuse",
            "-v",
            "1",
            "z",
            "m",
        ])
        .unwrap();
        assert!(g.alsologtostderr && g.trace_fuse);
        assert_eq!(g.stderrthreshold, 0);
        assert_eq!(g.log_dir.as_deref(), Some(std::path::Path::new("/var/log")));
        assert_eq!(g.v, 1);
        // a boolean never takes the next argument; `--` ends the flags
        let g = p(&["-debug", "z", "m"]).unwrap();
        assert!(g.debug);
        let g = p(&["--", "-z", "m"]).unwrap();
        assert_eq!(g.zurl, "-z");
        // defaults
        let g = p(&["z", "m"]).unwrap();
        assert_eq!((g.pintimeout, g.autoexit, g.debug), (30.0, false, false));
        assert!(g.serve_opts().auto_unmount.eq(&false));
    }

    #[test]
    fn usage_errors() {
        let u = p(&["z"]).unwrap_err();
        assert_eq!(u.code, 2);
        assert_eq!(u.text, "Usage: /x/wcfs [OPTIONS] zurl mntpt\n");
        assert_eq!(p(&["a", "b", "c"]).unwrap_err().code, 2);
        let u = p(&["-nope", "z", "m"]).unwrap_err();
        assert_eq!(u.code, 2);
        assert!(
            u.text
                .starts_with("flag provided but not defined: -nope\nUsage of /x/wcfs:\n"),
            "{}",
            u.text
        );
        assert!(
            u.text
                .contains("  -pintimeout duration\n    \tclients are killed"),
            "{}",
            u.text
        );
        assert!(u.text.contains("(default 30s)"), "{}", u.text);
        let u = p(&["-pintimeout", "30", "z", "m"]).unwrap_err();
        assert!(
            u.text.starts_with(
                r#"invalid value "30" for flag -pintimeout: time: missing unit in duration "30""#
            ),
            "{}",
            u.text
        );
        let u = p(&["-debug=maybe", "z", "m"]).unwrap_err();
        assert!(u
            .text
            .starts_with(r#"invalid boolean value "maybe" for -debug: parse error"#));
        let u = p(&["z", "m", "-pintimeout"]).unwrap_err(); // flags after positionals are positionals
        assert_eq!(u.text, "Usage: /x/wcfs [OPTIONS] zurl mntpt\n");
        assert!(p(&["-pintimeout"])
            .unwrap_err()
            .text
            .starts_with("flag needs an argument: -pintimeout\n"));
        assert!(p(&["---x", "z", "m"])
            .unwrap_err()
            .text
            .starts_with("bad flag syntax: ---x\n"));
        assert_eq!(p(&["-h"]).unwrap_err().code, 0);
    }

    #[test]
    fn ours_or_go() {
        let subs = ["serve", "cat", "ls", "mkdemo", "status", "stop"];
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(is_ours(&v(&["serve", "z"]), &subs));
        assert!(is_ours(&v(&["--log-level", "debug", "serve", "z"]), &subs));
        assert!(is_ours(&v(&["--log-level=debug", "ls", "z"]), &subs));
        assert!(is_ours(&v(&["--help"]), &subs));
        assert!(is_ours(&v(&[]), &subs));
        assert!(!is_ours(&v(&["-autoexit", "z", "m"]), &subs));
        assert!(!is_ours(
            &v(&["file:///d/Data.fs", "/dev/shm/wcfs/x"]),
            &subs
        ));
        assert!(!is_ours(&v(&["--pintimeout=3s", "z", "m"]), &subs));
    }

    #[test]
    fn logs_as_glog() {
        let g = p(&["-logtostderr", "-v=1", "z", "m"]).unwrap();
        let l = g.log_to();
        assert!(l.file.is_none());
        assert!(l.stderr.unwrap().contains("wcfs=debug"));
        let g = p(&["-log_dir", "/var/log/w", "z", "m"]).unwrap();
        let l = g.log_to();
        assert_eq!(l.stderr.as_deref(), Some("error"));
        let (path, filter) = l.file.unwrap();
        assert!(
            path.starts_with("/var/log/w") && filter == "info",
            "{path:?} {filter}"
        );
        let g = p(&["-trace.fuse", "-alsologtostderr", "z", "m"]).unwrap();
        assert!(g.log_to().stderr.unwrap().contains("fuser=debug"));
    }
}
