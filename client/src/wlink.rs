//! The watch link: one opened `head/watch`, shared by the user threads that
//! send requests and the pinner thread that is its only reader.
//!
//! - Requests ([`WatchLink::request`]) take the next odd stream id,
//!   register a reply slot in `pending`, write their line and wait for the
//!   slot to be filled.
//! - The pinner reads lines ([`read_line`]) and either fills the slot of an
//!   odd stream ([`WatchLink::deliver`]), handles a pin (even stream) and
//!   answers with [`WatchLink::send`], or takes the link down (stream 0,
//!   EOF, garbage): [`WatchLink::down`] records the first reason and drops
//!   every slot, so that every waiter wakes up with [`Error::Down`].
//!
//! Nothing here knows about files or mappings: the pinner (in `conn.rs`)
//! does.

use crate::error::{Error, Result};
use crate::proto::{format_frame, Reply};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, PoisonError};

/// Longest line the pinner accepts; a longer one is a protocol error. The
/// server's lines are well under [`crate::proto::MAX_LINE`]; we are lenient.
pub(crate) const MAX_RX_LINE: usize = 4096;

/// Reply slots and the down state, under one lock so that a request
/// registered after the link went down sees it (no lost wakeups).
#[derive(Default)]
struct Pending {
    /// stream -> where the pinner puts the reply.
    waiters: HashMap<u64, mpsc::SyncSender<Reply>>,
    /// Why the link is down, if it is. Set once, never cleared.
    down: Option<String>,
}

/// One watch link (see the module docs).
pub(crate) struct WatchLink {
    /// The opened `head/watch` (or a socket in tests). Read only by the
    /// pinner; written under `tx_mu`.
    file: File,
    /// `file`'s descriptor number, immutable: the fork child handler points
    /// it at /dev/null without touching `file`.
    fd: RawFd,
    /// Serializes writes so that lines of concurrent senders do not mix.
    tx_mu: Mutex<()>,
    /// Reply slots and the down state.
    pending: Mutex<Pending>,
    /// The next client stream id (odd, starting at 1).
    next_stream: AtomicU64,
    /// The process that opened the link: a forked child sends nothing.
    pid: u32,
}

impl WatchLink {
    /// A link over an opened `head/watch` (or anything speaking its
    /// grammar, e.g. one end of a `UnixStream` pair in tests).
    pub(crate) fn from_fd(fd: OwnedFd) -> WatchLink {
        let file = File::from(fd);
        let raw = file.as_raw_fd();
        WatchLink {
            file,
            fd: raw,
            tx_mu: Mutex::new(()),
            pending: Mutex::new(Pending::default()),
            next_stream: AtomicU64::new(1),
            pid: std::process::id(),
        }
    }

    /// Point the link's descriptor at /dev/null (the link is done: the
    /// pinner has seen its EOF and is gone), so that it no longer holds
    /// `head/watch` open; the number stays owned by `file` for its close.
    pub(crate) fn release_file(&self) {
        // SAFETY: open(2) of a constant path; dup3 onto the descriptor
        // number this link owns (nobody reads it any more: the caller
        // joined the pinner); close of the temporary descriptor.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            if null >= 0 {
                libc::dup3(null, self.fd, libc::O_CLOEXEC);
                libc::close(null);
            }
        }
    }

    /// The descriptor number (for the fork child handler).
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd
    }

    /// The file to read from (for the pinner only).
    pub(crate) fn reader(&self) -> &File {
        &self.file
    }

    fn check_pid(&self) -> Result<()> {
        if std::process::id() != self.pid {
            return Err(Error::Forked);
        }
        Ok(())
    }

    /// Why the link is down, if it is.
    pub(crate) fn down_reason(&self) -> Option<String> {
        self.lock_pending().down.clone()
    }

    /// Take the link down (first reason wins) and wake every waiter.
    pub(crate) fn down(&self, reason: impl Into<String>) {
        let mut p = self.lock_pending();
        if p.down.is_none() {
            p.down = Some(reason.into());
        }
        // Dropping the senders wakes the receivers with RecvError.
        p.waiters.clear();
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Write one frame.
    pub(crate) fn send(&self, stream: u64, msg: &str) -> Result<()> {
        self.check_pid()?;
        if msg.contains('\n') {
            return Err(Error::InvalidArg(format!("message with LF: {msg:?}")));
        }
        let line = format_frame(stream, msg);
        let _tx = self.tx_mu.lock().unwrap_or_else(PoisonError::into_inner);
        (&self.file).write_all(line.as_bytes()).map_err(|e| {
            let err = Error::Sys {
                op: "write head/watch",
                source: e,
            };
            self.down(err.to_string());
            err
        })
    }

    /// Send `msg` on a new odd stream and wait for the reply.
    ///
    /// Never called with `FileH::mmap_mu` held: the reply may need pins to
    /// be handled first.
    pub(crate) fn request(&self, msg: &str) -> Result<Reply> {
        self.check_pid()?;
        let stream = self.next_stream.fetch_add(2, Ordering::Relaxed);
        let (tx, rx) = mpsc::sync_channel(1);
        {
            let mut p = self.lock_pending();
            if let Some(r) = &p.down {
                return Err(Error::Down(r.clone()));
            }
            p.waiters.insert(stream, tx);
        }
        if let Err(e) = self.send(stream, msg) {
            self.lock_pending().waiters.remove(&stream);
            return Err(e);
        }
        match rx.recv() {
            Ok(reply) => Ok(reply),
            Err(mpsc::RecvError) => Err(Error::Down(
                self.down_reason()
                    .unwrap_or_else(|| "reply slot dropped".into()),
            )),
        }
    }

    /// Send `bye` (no reply: the server closes the link).
    pub(crate) fn bye(&self) -> Result<()> {
        let stream = self.next_stream.fetch_add(2, Ordering::Relaxed);
        self.send(stream, "bye")
    }

    /// Hand a reply to the waiter of `stream`; false if nobody waits there.
    pub(crate) fn deliver(&self, stream: u64, reply: Reply) -> bool {
        let tx = self.lock_pending().waiters.remove(&stream);
        match tx {
            // A receiver that gave up is fine: capacity 1, never blocks.
            Some(tx) => {
                let _ = tx.try_send(reply);
                true
            }
            None => false,
        }
    }
}

/// Read one LF-terminated line into `buf` (without the LF).
///
/// `Ok(false)` on EOF (a partial last line is dropped: the server always
/// ends its lines). A line longer than `max` is an `InvalidData` error.
pub(crate) fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<bool> {
    buf.clear();
    loop {
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(false);
        }
        let (used, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => {
                buf.extend_from_slice(&avail[..i]);
                (i + 1, true)
            }
            None => {
                buf.extend_from_slice(avail);
                (avail.len(), false)
            }
        };
        r.consume(used);
        if buf.len() > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("input line is too long (> {max} bytes)"),
            ));
        }
        if done {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let data = b"2 pin a\n\n1 ok\npartial";
        let mut r = io::BufReader::with_capacity(3, &data[..]);
        let mut buf = Vec::new();
        assert!(read_line(&mut r, &mut buf, 100).unwrap());
        assert_eq!(buf, b"2 pin a");
        assert!(read_line(&mut r, &mut buf, 100).unwrap());
        assert_eq!(buf, b"");
        assert!(read_line(&mut r, &mut buf, 100).unwrap());
        assert_eq!(buf, b"1 ok");
        assert!(!read_line(&mut r, &mut buf, 100).unwrap());
    }

    #[test]
    fn long_line() {
        let data = [b'x'; 50];
        let mut r = io::BufReader::with_capacity(8, &data[..]);
        let mut buf = Vec::new();
        let e = read_line(&mut r, &mut buf, 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
