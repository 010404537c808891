//! `.wcfs/debug/zhead` (with `--debug` / the Go form's `-debug`): each
//! open is a stream that gets one line `<tid>\n` per transaction, in
//! order, once the server has fully processed it (head/at shows it: its
//! invalidations are done). The original's tools wait on it to know that
//! the server caught up with a commit. Counted in `.wcfs/stats` as
//! `ZHeadLink`.
//!
//! A stream nobody reads is cut at [`MAX_UNREAD`] bytes (its reads then
//! get EIO) rather than holding the server back, as the original's would.
//!
//! # Locks
//!
//! `streams` is a leaf lock, held to queue lines and take parked READs,
//! never while a READ is answered. [`Zhead::publish`] runs under the
//! invalidator's `st` (which publishes head/at in commit order): it takes
//! nothing else, and answers READs with a write to /dev/fuse, which does
//! not wait for the kernel.

use super::fs::lock;
use super::link::ReadReply;
use fuser::Errno;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use zodb::Tid;

/// Unread bytes after which a stream is cut (about 60 000 transactions).
pub const MAX_UNREAD: usize = 1 << 20;

#[derive(Default)]
struct Stream {
    out: VecDeque<u8>,
    /// READs waiting for a line, oldest first: (reply, size).
    parked: VecDeque<(ReadReply, u32)>,
    /// Cut for not being read.
    cut: bool,
}

/// The open streams of `.wcfs/debug/zhead`.
#[derive(Default)]
pub struct Zhead {
    /// The last file handle given. Relaxed: only its uniqueness matters
    /// (the FUSE adapter routes by inode, so handles need not differ from
    /// the links').
    next: AtomicU64,
    streams: Mutex<HashMap<u64, Stream>>,
}

/// A READ's answer, given after the lock is released.
type Answer = (ReadReply, Result<Vec<u8>, Errno>);

fn answer(a: Vec<Answer>) {
    for (reply, r) in a {
        match r {
            Ok(b) => reply(Ok(&b)),
            Err(e) => reply(Err(e)),
        }
    }
}

fn drain(s: &mut Stream) -> Vec<Answer> {
    let mut out = Vec::new();
    while let Some((_, size)) = s.parked.front() {
        if s.cut {
            let (reply, _) = s.parked.pop_front().expect("non-empty");
            out.push((reply, Err(Errno::EIO)));
            continue;
        }
        if s.out.is_empty() {
            break;
        }
        let n = (*size as usize).min(s.out.len());
        let (reply, _) = s.parked.pop_front().expect("non-empty");
        out.push((reply, Ok(s.out.drain(..n).collect())));
    }
    out
}

impl Zhead {
    /// A new stream: its file handle.
    pub fn open(&self) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        lock(&self.streams).insert(fh, Stream::default());
        fh
    }

    /// A READ of stream `fh`: answered at once if a line is queued, else
    /// when the next transaction is processed.
    pub fn read(&self, fh: u64, size: u32, reply: ReadReply) {
        let a = {
            let mut st = lock(&self.streams);
            let Some(s) = st.get_mut(&fh) else {
                drop(st);
                return reply(Err(Errno::EBADF));
            };
            s.parked.push_back((reply, size));
            drain(s)
        };
        answer(a);
    }

    /// The stream is closed: its parked READs get EOF.
    pub fn release(&self, fh: u64) {
        let s = lock(&self.streams).remove(&fh);
        if let Some(s) = s {
            for (reply, _) in s.parked {
                reply(Ok(&[]));
            }
        }
    }

    /// Transaction `tid` is processed: a line to every stream.
    pub fn publish(&self, tid: Tid) {
        let line = format!("{tid}\n");
        let mut a = Vec::new();
        {
            let mut st = lock(&self.streams);
            for (fh, s) in st.iter_mut() {
                if s.cut {
                    continue;
                }
                if s.out.len() + line.len() > MAX_UNREAD {
                    tracing::warn!(
                        fh,
                        ".wcfs/debug/zhead: a stream not read for {MAX_UNREAD} bytes is cut"
                    );
                    s.cut = true;
                    s.out.clear();
                } else {
                    s.out.extend(line.as_bytes());
                }
                a.extend(drain(s));
            }
        }
        answer(a);
    }

    /// Open streams.
    pub fn count(&self) -> usize {
        lock(&self.streams).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    type Got = Arc<Mutex<Vec<Result<Vec<u8>, Errno>>>>;

    fn reader(got: &Got) -> ReadReply {
        let g = got.clone();
        Box::new(move |r| g.lock().unwrap().push(r.map(|b| b.to_vec())))
    }

    #[test]
    fn lines_in_order_parked_and_queued() {
        let z = Zhead::default();
        let got = Arc::new(Mutex::new(Vec::new()));
        let a = z.open();
        z.read(a, 4096, reader(&got)); // parked
        assert!(got.lock().unwrap().is_empty());
        z.publish(Tid(1));
        z.publish(Tid(2));
        z.read(a, 4096, reader(&got)); // queued
        let b = z.open(); // sees only what comes after its open
        z.publish(Tid(3));
        z.read(b, 4096, reader(&got));
        assert_eq!(z.count(), 2);
        let g = got.lock().unwrap().clone();
        assert_eq!(
            g,
            vec![
                Ok(format!("{}\n", Tid(1)).into_bytes()),
                Ok(format!("{}\n", Tid(2)).into_bytes()),
                Ok(format!("{}\n", Tid(3)).into_bytes()),
            ]
        );
        z.read(a, 4096, reader(&got));
        z.release(a);
        assert_eq!(
            got.lock().unwrap().last(),
            Some(&Ok(format!("{}\n", Tid(3)).into_bytes()))
        );
        z.read(b, 4096, reader(&got));
        z.release(b);
        assert_eq!(got.lock().unwrap().last(), Some(&Ok(Vec::new())), "EOF");
        assert_eq!(z.count(), 0);
    }

    #[test]
    fn a_stream_not_read_is_cut() {
        let z = Zhead::default();
        let a = z.open();
        for t in 0..(MAX_UNREAD / 17 + 2) as u64 {
            z.publish(Tid(t));
        }
        let got = Arc::new(Mutex::new(Vec::new()));
        z.read(a, 4096, reader(&got));
        assert_eq!(got.lock().unwrap().clone(), vec![Err(Errno::EIO)]);
    }
}
