//! One connection to a ZEO server: the socket, the reader thread that
//! dispatches replies by msgid and invalidations to watchers, the heartbeat.
//!
//! Callers of [`Conn::call`] register a one-shot channel under a fresh msgid,
//! write the whole frame under `writer`, and block on the channel; the
//! reader thread sends the reply there. When the connection breaks (EOF, an
//! I/O error, a message we cannot decode) the reader records why in
//! `St::broken`, drops every pending channel (waking their callers, who then
//! report that reason) and ends every watcher queue. Nothing reconnects: a
//! broken connection stays broken: `link.rs` replaces a broken connection with a new
//! one.

use super::wire::{self, Msg, Remote, ZeoError, FLAG_ASYNC, FLAG_EXCEPTION};
use crate::error::{Error, Result};
use crate::pickle::Value;
use crate::storage::TxnInfo;
use crate::types::{Oid, Tid};
use bytes::Bytes;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long connecting, the handshake and `register` may take.
pub(super) const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Heartbeat period (as ZEO's client: `heartbeat_interval` 60 s).
const HEARTBEAT: Duration = Duration::from_secs(60);

/// The TCP address `addr` names (`:port` is this host's), or `None` for a
/// UNIX socket path.
fn tcp_target(addr: &str) -> Option<String> {
    if addr.contains('/') {
        return None;
    }
    let (h, p) = addr.rsplit_once(':')?;
    p.parse::<u16>().ok()?;
    Some(if h.is_empty() {
        format!("localhost:{p}")
    } else {
        addr.to_owned()
    })
}

#[cfg(test)]
#[test]
fn tcp_or_unix() {
    assert_eq!(tcp_target("h:8100").as_deref(), Some("h:8100"));
    assert_eq!(tcp_target(":8100").as_deref(), Some("localhost:8100"));
    assert_eq!(tcp_target("[::1]:8100").as_deref(), Some("[::1]:8100"));
    assert_eq!(tcp_target("/run/zeo.sock"), None);
    assert_eq!(tcp_target("zeo.sock"), None);
    assert_eq!(tcp_target("./a:1"), None);
    assert_eq!(tcp_target("a:notaport"), None);
}

/// A TCP or UNIX stream socket.
#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// `host:port` (IPv6 as `[addr]:port`) is TCP, and so is `:port`, to
    /// this host (as Go dials it: what wendelin.core writes for a ZEO
    /// server listening on all addresses); anything with a `/`, or that
    /// does not end in `:port`, is a UNIX socket path.
    fn connect(addr: &str) -> io::Result<Stream> {
        let Some(addr) = tcp_target(addr) else {
            return UnixStream::connect(addr).map(Stream::Unix);
        };
        let addr = addr.as_str();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "address resolves to nothing");
        for sa in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&sa, OPEN_TIMEOUT) {
                Ok(s) => {
                    s.set_nodelay(true)?;
                    return Ok(Stream::Tcp(s));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(d),
            Stream::Unix(s) => s.set_read_timeout(d),
        }
    }

    fn shutdown(&self) {
        // Errors only mean it is already shut down or gone.
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// A reply as the reader hands it to the caller.
type Reply = std::result::Result<Value, Remote>;

/// Transactions pushed to one watcher. Lock order: `Shared::st` > `WatchQ::q`.
#[derive(Debug, Default)]
pub(super) struct WatchQ {
    pub(super) q: Mutex<WatchItems>,
    pub(super) cv: Condvar,
}

/// Protected by `WatchQ::q`.
#[derive(Debug, Default)]
pub(super) struct WatchItems {
    /// Invalidations received, oldest first.
    pub(super) items: VecDeque<TxnInfo>,
    /// Set when the connection broke: why.
    pub(super) end: Option<ZeoError>,
}

/// What the reader thread and callers share.
#[derive(Debug)]
struct Shared {
    addr: String,
    /// Writes whole frames. Protected by: itself (one frame per hold).
    writer: Mutex<Stream>,
    /// Another handle of the socket, only to shut it down (never behind
    /// `writer`, which a blocked write may hold).
    ctl: Stream,
    /// Next call msgid (1, 2, ...; 0 and -1 are taken by the protocol).
    next_id: AtomicI64,
    st: Mutex<St>,
    /// Signalled when `St::head` advances or the connection breaks.
    head_cv: Condvar,
}

/// Protected by `Shared::st` (held briefly, never across I/O).
#[derive(Debug, Default)]
struct St {
    /// msgid -> the caller waiting for its reply.
    pending: HashMap<i64, SyncSender<Reply>>,
    /// Why the connection is unusable (first cause wins).
    broken: Option<ZeoError>,
    /// False until `register` returned: invalidations wait in `early`.
    registered: bool,
    /// `(tid, oids)` received before the register reply (spec §5.2).
    early: Vec<(Tid, Vec<Oid>)>,
    /// The last transaction we know committed: the register reply, then
    /// each invalidation's tid (strictly increasing).
    head: Tid,
    /// Queues of live watchers.
    watchers: Vec<Weak<WatchQ>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its state consistent at each step.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn err(&self, op: &'static str, e: ZeoError) -> Error {
        let kind = e.io_kind();
        Error::io(&self.addr, op, io::Error::new(kind, e))
    }

    /// Mark the connection broken: wake all callers and watchers.
    fn fail(&self, why: ZeoError) {
        let mut st = lock(&self.st);
        if st.broken.is_none() {
            tracing::debug!(addr = %self.addr, error = %why, "zeo connection broken");
            st.broken = Some(why.clone());
        }
        let why = st.broken.clone().unwrap_or(why);
        st.pending.clear();
        for w in st.watchers.drain(..).filter_map(|w| w.upgrade()) {
            lock(&w.q).end = Some(why.clone());
            w.cv.notify_all();
        }
        drop(st);
        self.head_cv.notify_all();
        self.ctl.shutdown();
    }

    /// Write one message; on failure the connection is broken.
    fn send(&self, body: &[u8]) -> std::result::Result<(), ZeoError> {
        let res = wire::write_frame(&mut *lock(&self.writer), body);
        res.map_err(|e| {
            let z = ZeoError::Disconnected(format!("write: {e}"));
            self.fail(z.clone());
            z
        })
    }

    /// Record a committed transaction and hand it to every watcher.
    fn deliver(&self, st: &mut St, tid: Tid, oids: Vec<Oid>) -> std::result::Result<(), ZeoError> {
        if tid <= st.head {
            return Err(ZeoError::Protocol(format!(
                "invalidateTransaction {tid} not after {}",
                st.head
            )));
        }
        st.head = tid;
        let info = TxnInfo {
            tid,
            status: b' ',
            user: Bytes::new(),
            description: Bytes::new(),
            extension: Bytes::new(),
            oids,
        };
        st.watchers.retain(|w| match w.upgrade() {
            Some(w) => {
                lock(&w.q).items.push_back(info.clone());
                w.cv.notify_all();
                true
            }
            None => false,
        });
        self.head_cv.notify_all();
        Ok(())
    }

    /// Handle one message from the server. An error breaks the connection.
    fn dispatch(&self, m: Msg) -> std::result::Result<(), ZeoError> {
        if m.msgid == -1 {
            return Ok(()); // heartbeat
        }
        if m.method == ".reply" {
            let reply = if m.flags & FLAG_EXCEPTION != 0 {
                Err(wire::remote(m.args)?)
            } else {
                Ok(m.args)
            };
            let waiter = lock(&self.st).pending.remove(&m.msgid);
            match waiter {
                // The caller may have given up (timeout): ignore.
                Some(tx) => drop(tx.try_send(reply)),
                None => {
                    tracing::debug!(addr = %self.addr, msgid = m.msgid, "reply to no pending call")
                }
            }
            return Ok(());
        }
        if m.flags & FLAG_ASYNC == 0 {
            // The server never calls us synchronously; we could not answer.
            return Err(ZeoError::Protocol(format!(
                "server made a synchronous call {:?}",
                m.method
            )));
        }
        match m.method.as_str() {
            "invalidateTransaction" => {
                let a = wire::seq(&m.args, "invalidateTransaction args")?;
                let [t, oids] = a else {
                    return Err(ZeoError::Protocol(format!(
                        "invalidateTransaction with {} args",
                        a.len()
                    )));
                };
                let tid = wire::tid(t, "invalidateTransaction tid")?;
                let mut seen = HashSet::new();
                let mut list = Vec::new();
                for o in wire::seq(oids, "invalidateTransaction oids")? {
                    let o = wire::oid(o, "invalidateTransaction oid")?;
                    if seen.insert(o) {
                        list.push(o);
                    }
                }
                let mut st = lock(&self.st);
                if st.registered {
                    self.deliver(&mut st, tid, list)?;
                } else {
                    st.early.push((tid, list));
                }
            }
            // Size info, blob transfer: nothing a read-only client needs.
            other => tracing::trace!(addr = %self.addr, method = other, "ignored async message"),
        }
        Ok(())
    }
}

/// The reader thread: frames in, until the connection ends.
fn reader(shared: Arc<Shared>, stream: Stream) {
    let mut r = BufReader::with_capacity(1 << 16, stream);
    let why = loop {
        match wire::read_frame(&mut r, wire::MAX_FRAME) {
            Ok(Some(frame)) => {
                if let Err(e) = wire::decode(frame).and_then(|m| shared.dispatch(m)) {
                    break e;
                }
            }
            Ok(None) => break ZeoError::Disconnected("server closed the connection".into()),
            Err(e) => match e.into_inner() {
                Some(inner) => match inner.downcast::<ZeoError>() {
                    Ok(z) => break *z,
                    Err(other) => break ZeoError::Disconnected(format!("read: {other}")),
                },
                None => break ZeoError::Disconnected("read failed".into()),
            },
        }
    };
    shared.fail(why);
}

/// A connection to one storage of a ZEO server, registered read-only.
#[derive(Debug)]
pub(super) struct Conn {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Dropping it stops the heartbeat thread.
    heartbeat_stop: Mutex<Option<SyncSender<()>>>,
}

impl Conn {
    /// Connect, handshake, start the reader, `register(storage, True)`.
    /// Returns the connection and the register reply (the head).
    pub(super) fn open(addr: &str, storage: &str, read_only: bool) -> Result<(Conn, Tid)> {
        let zerr = |op, e: ZeoError| {
            let kind = e.io_kind();
            Error::io(addr, op, io::Error::new(kind, e))
        };
        let mut s = Stream::connect(addr).map_err(|e| Error::io(addr, "connect", e))?;
        s.set_read_timeout(Some(OPEN_TIMEOUT))
            .map_err(|e| Error::io(addr, "set timeout", e))?;
        let hello = match wire::read_frame(&mut s, wire::MAX_HANDSHAKE) {
            Ok(Some(h)) => h,
            Ok(None) => {
                return Err(zerr(
                    "handshake",
                    ZeoError::NotZeo("closed the connection without a protocol string".into()),
                ))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(zerr(
                    "handshake",
                    ZeoError::NotZeo(format!("no protocol string within {OPEN_TIMEOUT:?}")),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(zerr(
                    "handshake",
                    ZeoError::NotZeo(
                        "its first message is not a short protocol string".to_string(),
                    ),
                ))
            }
            Err(e) => return Err(Error::io(addr, "handshake", e)),
        };
        let ours = wire::handshake_reply(&hello).map_err(|e| match e {
            ZeoError::Unsupported(m) => Error::Unsupported(format!("{addr}: {m}")),
            e => zerr("handshake", e),
        })?;
        wire::write_frame(&mut s, ours).map_err(|e| Error::io(addr, "handshake", e))?;
        s.set_read_timeout(None)
            .map_err(|e| Error::io(addr, "set timeout", e))?;

        let rs = s
            .try_clone()
            .map_err(|e| Error::io(addr, "dup socket", e))?;
        let ctl = s
            .try_clone()
            .map_err(|e| Error::io(addr, "dup socket", e))?;
        let shared = Arc::new(Shared {
            addr: addr.to_owned(),
            writer: Mutex::new(s),
            ctl,
            next_id: AtomicI64::new(1),
            st: Mutex::new(St::default()),
            head_cv: Condvar::new(),
        });
        let sh = shared.clone();
        let rd = std::thread::Builder::new()
            .name("zeo-reader".into())
            .spawn(move || reader(sh, rs))
            .map_err(|e| Error::io(addr, "spawn reader", e))?;
        let (stop_tx, stop_rx) = mpsc::sync_channel::<()>(0);
        // From here on, dropping `conn` (any error return) stops the threads.
        let conn = Conn {
            shared: shared.clone(),
            threads: Mutex::new(vec![rd]),
            heartbeat_stop: Mutex::new(Some(stop_tx)),
        };
        let sh = shared;
        let hb = std::thread::Builder::new()
            .name("zeo-heartbeat".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stop_rx.recv_timeout(HEARTBEAT) {
                    let msg = wire::encode(-1, Value::Int(0), ".reply", Value::None);
                    if sh.send(&msg).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::io(addr, "spawn heartbeat", e))?;
        lock(&conn.threads).push(hb);

        // 2) register; invalidations may arrive before the reply (§5.2)
        let reply = conn.call_timeout(
            "register",
            vec![Value::Unicode(storage.to_owned()), Value::Bool(read_only)],
            Some(OPEN_TIMEOUT),
        )?;
        let at0 = match reply {
            Ok(v) => wire::tid(&v, "register reply").map_err(|e| zerr("register", e))?,
            Err(r) if r.is("builtins.ValueError") => {
                return Err(zerr(
                    "register",
                    ZeoError::Remote {
                        class: r.class,
                        args: format!(
                            "{}: the server has no storage named {storage:?}",
                            wire::repr(&r.args)
                        ),
                    },
                ))
            }
            Err(r) => return Err(zerr("register", r.into_error())),
        };
        {
            let sh = &conn.shared;
            let mut st = lock(&sh.st);
            st.registered = true;
            st.head = at0;
            for (tid, oids) in std::mem::take(&mut st.early) {
                if tid > st.head {
                    sh.deliver(&mut st, tid, oids)
                        .map_err(|e| zerr("register", e))?;
                }
            }
        }
        Ok((conn, at0))
    }

    /// The error to report for a failure of `op`.
    pub(super) fn err(&self, op: &'static str, e: ZeoError) -> Error {
        self.shared.err(op, e)
    }

    /// Call `method(*args)` and wait for the reply. The outer error is the
    /// connection's; the inner one an exception the server raised.
    pub(super) fn call(&self, method: &'static str, args: Vec<Value>) -> Result<Reply> {
        self.call_timeout(method, args, None)
    }

    /// Why the connection broke, if it did.
    pub(super) fn broken(&self) -> Option<ZeoError> {
        lock(&self.shared.st).broken.clone()
    }

    /// Block until the connection breaks; why it did.
    pub(super) fn wait_broken(&self) -> ZeoError {
        let sh = &self.shared;
        let mut st = lock(&sh.st);
        loop {
            if let Some(why) = &st.broken {
                return why.clone();
            }
            st = sh.head_cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Break the connection on purpose (the storage is closing, or it is
    /// not one we may use): callers and watchers get `why`.
    pub(super) fn close(&self, why: ZeoError) {
        self.shared.fail(why);
    }

    /// As [`Conn::call`], but give up after `timeout` (the connection stays
    /// usable; a late reply is dropped).
    pub(super) fn call_timeout(
        &self,
        method: &'static str,
        args: Vec<Value>,
        timeout: Option<Duration>,
    ) -> Result<Reply> {
        let sh = &self.shared;
        let id = sh.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::sync_channel(1);
        {
            let mut st = lock(&sh.st);
            if let Some(why) = &st.broken {
                return Err(sh.err(method, why.clone()));
            }
            st.pending.insert(id, tx);
        }
        let body = wire::encode_call(id, false, method, args);
        if let Err(e) = sh.send(&body) {
            lock(&sh.st).pending.remove(&id);
            return Err(sh.err(method, e));
        }
        let got = match timeout {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(d) => rx.recv_timeout(d),
        };
        match got {
            Ok(reply) => Ok(reply),
            Err(RecvTimeoutError::Timeout) => {
                lock(&sh.st).pending.remove(&id);
                Err(sh.err(
                    method,
                    ZeoError::Protocol(format!(
                        "no reply within {:?}",
                        timeout.unwrap_or_default()
                    )),
                ))
            }
            Err(RecvTimeoutError::Disconnected) => {
                let why = lock(&sh.st)
                    .broken
                    .clone()
                    .unwrap_or_else(|| ZeoError::Disconnected("reply lost".into()));
                Err(sh.err(method, why))
            }
        }
    }

    /// As [`Conn::call`], giving up at `deadline`.
    pub(super) fn call_until(
        &self,
        method: &'static str,
        args: Vec<Value>,
        deadline: Instant,
    ) -> Result<Reply> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.call_timeout(method, args, Some(left.max(Duration::from_millis(1))))
    }

    /// Send a one-way call (no reply).
    pub(super) fn call_oneway(&self, method: &'static str, args: Vec<Value>) -> Result<()> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let body = wire::encode_call(id, true, method, args);
        self.shared.send(&body).map_err(|e| self.err(method, e))
    }

    /// The last committed tid we know of.
    pub(super) fn head(&self) -> Tid {
        lock(&self.shared.st).head
    }

    /// Wait until the invalidation of `tid` arrived (head >= tid).
    pub(super) fn wait_head(&self, tid: Tid, timeout: Duration) -> Result<Tid> {
        let sh = &self.shared;
        let deadline = Instant::now() + timeout;
        let mut st = lock(&sh.st);
        loop {
            if st.head >= tid {
                return Ok(st.head);
            }
            if let Some(why) = &st.broken {
                return Err(sh.err("sync", why.clone()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(sh.err(
                    "sync",
                    ZeoError::Protocol(format!(
                        "lastTransaction is {tid} but its invalidation did not arrive within \
                         {timeout:?} (head {})",
                        st.head
                    )),
                ));
            }
            st = sh
                .head_cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// A new watcher queue, receiving every invalidation after the returned
    /// head.
    pub(super) fn subscribe(&self) -> Result<(Arc<WatchQ>, Tid)> {
        let sh = &self.shared;
        let mut st = lock(&sh.st);
        if let Some(why) = &st.broken {
            return Err(sh.err("watch", why.clone()));
        }
        let q = Arc::new(WatchQ::default());
        st.watchers.push(Arc::downgrade(&q));
        Ok((q, st.head))
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shared
            .fail(ZeoError::Disconnected("storage closed".into()));
        drop(lock(&self.heartbeat_stop).take());
        for t in lock(&self.threads).drain(..) {
            let _ = t.join();
        }
    }
}
