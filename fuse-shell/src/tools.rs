//! The read-side subcommands: `cat`, `ls`, `mkdemo` (and the dispatch to `serve`).

use crate::cli::Cmd;
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::io::{BufWriter, Write};
use zodb::zbigfile::{self, ZBigFile};
use zodb::{Oid, Storage, Tid};

pub(crate) fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Serve {
            pintimeout,
            autoexit,
            debug,
            readahead_kb,
            zurl,
            mountpoint,
        } => {
            let mountpoint = crate::mountpoint::resolve(&zurl, mountpoint.as_deref())?;
            serve(
                crate::serve::ServeOpts {
                    zurl,
                    mountpoint,
                    pintimeout,
                    autoexit,
                    debug,
                    auto_unmount: true,
                    readahead_kb,
                },
                true,
            )
        }
        Cmd::Cat { zurl, oid, at, blk } => cat(&zurl, oid, at, blk),
        Cmd::Ls { zurl, at } => ls(&zurl, at),
        Cmd::Status { zurl, mountpoint } => {
            crate::lifecycle::cmd_status(&zurl, mountpoint.as_deref())
        }
        Cmd::Stop { zurl, mountpoint } => crate::lifecycle::cmd_stop(&zurl, mountpoint.as_deref()),
        Cmd::Mkdemo { path, blocks } => {
            let (tid, files) = zodb::demo::create(&path, blocks)
                .with_context(|| format!("create demo database {}", path.display()))?;
            eprintln!("created {} @{tid}", path.display());
            for f in files {
                println!("{f}");
            }
            Ok(())
        }
    }
}

/// Serve `o` on its mountpoint (refused if something is mounted there),
/// which is created if missing; with `cleanup`, a mountpoint we created
/// is removed again when serving fails before the mount (the Go form
/// leaves the mountpoint to its caller, as the Go server).
pub(crate) fn serve(o: crate::serve::ServeOpts, cleanup: bool) -> Result<()> {
    let mountpoint = o.mountpoint.clone();
    if let Some(e) = crate::lifecycle::mount_entry(&mountpoint)? {
        anyhow::bail!(
            "{}: already mounted ({} from {}); `wcfs stop {}` first",
            mountpoint.display(),
            e.fstype,
            e.source,
            o.zurl
        );
    }
    let made = crate::mountpoint::prepare(&mountpoint)?;
    let r = crate::serve::serve(o);
    if cleanup && r.is_err() && !matches!(crate::lifecycle::mount_entry(&mountpoint), Ok(Some(_))) {
        // e.g. the database could not be opened: no directory of ours is
        // left behind
        crate::mountpoint::unprepare(&made);
    }
    r
}

/// Open a database and pick the state to show: `at`, which must not be
/// beyond the head, or the head.
fn open_at(zurl: &str, at: Option<Tid>) -> Result<(std::sync::Arc<dyn Storage>, Tid)> {
    let stor = zodb::zurl::open(zurl).with_context(|| format!("open {zurl}"))?;
    let head = stor.last_tid()?;
    let at = match at {
        None => head,
        Some(at) if at > head => bail!("@{at} is beyond the database head @{head}"),
        Some(at) => at,
    };
    Ok((stor, at))
}

fn cat(zurl: &str, oid: Oid, at: Option<Tid>, blk: Option<i64>) -> Result<()> {
    let (stor, at) = open_at(zurl, at)?;
    let stor = &*stor;
    let f = ZBigFile::load(stor, oid, at).with_context(|| format!("@{at}"))?;
    let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    if let Some(blk) = blk {
        let b = f
            .load_blk(stor, blk, at)
            .with_context(|| format!("{oid} @{at}: blk #{blk}"))?;
        b.write_to(&mut out)?;
        return Ok(out.flush()?);
    }
    let size = f.size(stor, at).with_context(|| format!("{oid} @{at}"))?;
    let nblk = (size / f.blksize) as i64;
    // Load a window of blocks in parallel, write them in order.
    let window = (rayon::current_num_threads() * 2).max(2) as i64;
    let mut start = 0;
    while start < nblk {
        let end = (start + window).min(nblk);
        let blocks: Vec<_> = (start..end)
            .into_par_iter()
            .map(|b| {
                f.load_blk(stor, b, at)
                    .with_context(|| format!("{oid} @{at}: blk #{b}"))
            })
            .collect();
        for b in blocks {
            b?.write_to(&mut out)?;
        }
        start = end;
    }
    Ok(out.flush()?)
}

fn ls(zurl: &str, at: Option<Tid>) -> Result<()> {
    let (stor, at) = open_at(zurl, at)?;
    let files = zbigfile::list(&*stor, at)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<16}  {:>10}  {:>14}", "oid", "blksize", "size")?;
    for f in files {
        let size = f
            .size(&*stor, at)
            .with_context(|| format!("{} @{at}", f.oid))?;
        writeln!(out, "{}  {:>10}  {:>14}", f.oid, f.blksize, size)?;
    }
    Ok(())
}
