//! Where logs go: stderr, a file, or both, each with its own filter
//! (`tracing` filter syntax; `$WCFS_LOG` overrides every one).

use anyhow::Context;
use std::path::PathBuf;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The log outputs and their filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogTo {
    /// stderr, with this filter.
    pub(crate) stderr: Option<String>,
    /// A file appended to, with this filter.
    pub(crate) file: Option<(PathBuf, String)>,
}

impl LogTo {
    /// Our own CLI's: `--log-file` if given, else stderr, at `level`.
    pub(crate) fn ours(level: &str, file: Option<PathBuf>) -> LogTo {
        match file {
            Some(p) => LogTo {
                stderr: None,
                file: Some((p, level.to_owned())),
            },
            None => LogTo {
                stderr: Some(level.to_owned()),
                file: None,
            },
        }
    }

    /// Install the subscriber.
    pub(crate) fn init(&self) -> anyhow::Result<()> {
        let env = std::env::var("WCFS_LOG").ok().filter(|f| !f.is_empty());
        let filter = |f: &str| {
            EnvFilter::try_new(env.as_deref().unwrap_or(f))
                .with_context(|| format!("bad log filter {:?}", env.as_deref().unwrap_or(f)))
        };
        let stderr = match &self.stderr {
            Some(f) => Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(filter(f)?),
            ),
            None => None,
        };
        let file = match &self.file {
            Some((p, f)) => {
                let w = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("open log file {}", p.display()))?;
                Some(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(false)
                        .with_writer(std::sync::Mutex::new(w))
                        .with_filter(filter(f)?),
                )
            }
            None => None,
        };
        tracing_subscriber::registry()
            .with(stderr)
            .with(file)
            .try_init()
            .context("install the logger")
    }
}
