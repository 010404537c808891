//! `head/watch` links: the isolation protocol's message layer on the server
//! (spec §4, §7). The protocol's meaning — watch setup, which blocks to pin
//! — is in [`super::fs`]; here are the links, their message queues, pins
//! in flight and what happens to a client whose pin fails.
//!
//! # A link
//!
//! Every open of `head/watch` is one [`WatchLink`]. Client lines arrive as
//! FUSE WRITEs (on the session thread: nothing here blocks it); lines to
//! the client are queued and handed to READs. A READ that finds nothing
//! queued is *parked*: its reply is kept and sent when a line is queued or
//! the link goes down (then with EOF). No thread waits for a client.
//!
//! A parked READ must also end when its caller is killed: the kernel waits
//! for our reply even for a SIGKILLed thread, and fuser does not pass
//! FUSE_INTERRUPT on, so [`Registry::reap_parked`] (every 100 ms) answers
//! EINTR to parked READs whose thread has SIGKILL pending or is gone.
//!
//! # Pins
//!
//! A pin is a server request on an even stream: [`WatchLink::send_pin`]
//! queues it and returns a [`PinWait`] that the client's reply completes.
//! The waiter gives up at its deadline (`--pintimeout`); then, and on any
//! reply other than `ack`, the link is shut down with `0 fatal: ...` and
//! the client killed (spec §7): SIGBUS, then SIGKILL; a client that closed
//! the link without `bye` while a pin was in flight (an unexpected EOF: the
//! pin failed) is given a moment to die by itself first, then killed.
//! `bye` cancels the pins in flight without killing.
//!
//! # Locks
//!
//! `LinkState` (the `st` mutex of one link) is innermost: nothing is
//! called and nothing waited for while it is held (parked replies are sent
//! after unlocking). `Registry::links` is held briefly, never with `st`.

use super::hist::LatencyHist;
use super::kill::{thread_dying, ClientProc};
use super::pin::{PinEnd, PinWait};
use fuser::Errno;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use zodb::Oid;

/// The longest client line (without its LF): a longer one, or that many
/// bytes without an LF, is a protocol error that closes the link. A sane
/// line is under 100 bytes (`<stream> watch <oid> @<tid>`).
pub const MAX_LINE: usize = 4096;

/// Bytes queued to a client that does not read them, past which a line
/// from it (whose replies would queue more) closes the link.
pub const MAX_UNREAD: usize = 16 << 20;

/// Watch requests of one link being set up at once (each runs on its own
/// thread until head/at reaches its at and its pins are acked); more is a
/// flood and closes the link.
pub const MAX_SETUPS: usize = 1024;

/// How a parked READ of `head/watch` is answered.
pub type ReadReply = Box<dyn FnOnce(Result<&[u8], Errno>) + Send>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---- a link ----

/// A READ waiting for lines.
struct Parked {
    reply: ReadReply,
    size: u32,
    /// The reading thread (FUSE header pid).
    tid: u32,
}

#[derive(Default)]
struct LinkState {
    /// Bytes queued to the client.
    out: VecDeque<u8>,
    /// READs waiting for bytes, oldest first.
    parked: VecDeque<Parked>,
    /// Server requests waiting for the client's reply: stream -> waiter.
    pending: HashMap<u64, Arc<PinWait>>,
    /// The last server stream id used (even).
    last_stream: u64,
    /// No more lines in or out; READs get what is queued, then EOF.
    down: bool,
    /// Why the link went down.
    why: Option<DownWhy>,
    /// Bytes of a client line not yet terminated by LF.
    inbuf: Vec<u8>,
}

/// One open of `head/watch`.
pub struct WatchLink {
    /// The FUSE file handle.
    pub id: u64,
    pub client: ClientProc,
    st: Mutex<LinkState>,
    /// One setup at a time per file: foid -> its setup lock.
    setup_mu: Mutex<HashMap<Oid, Arc<Mutex<()>>>>,
    /// Watch setups running for this link (bounded by [`MAX_SETUPS`]).
    /// Relaxed: a counter read as a bound, no data published through it.
    pub setups: AtomicUsize,
    /// Where acked pins' round trips go (shared by all links).
    rtt: Arc<LatencyHist>,
    /// Set by the first to handle a failed pin (one killer per link).
    /// AcqRel: a plain claim flag, no data is published through it.
    kill_claimed: std::sync::atomic::AtomicBool,
    /// Set by the killer when it is done (the client dead, or given up
    /// on); others who found the link failed wait for it. Release/Acquire:
    /// the killer's verdict (the client's death) happens before a waiter
    /// goes on.
    kill_done: std::sync::atomic::AtomicBool,
    /// The client asked for early pins (`option early-pins`): its watches
    /// are pinned before a commit's invalidation drops a changed block
    /// (see `serve::early`). Relaxed: it is set before that request's `ok`
    /// is queued, and every watch it matters for is registered after the
    /// client read that `ok`, through this link's and the watch table's
    /// locks, which order the store before any load that needs it.
    early_pins: std::sync::atomic::AtomicBool,
}

/// Why a link went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownWhy {
    /// The client said `bye`.
    Bye,
    /// The client closed it (release) without `bye`: pins in flight fail
    /// (spec §7).
    Closed,
    /// The client broke the grammar (bad frame, reply on a stream nobody
    /// asked on).
    Protocol,
    /// A pin to it failed (timeout, not `ack`).
    PinFailed,
    /// A watched file's epoch: its view can no longer be kept isolated.
    Epoch,
}

/// What a client line asks the server to do (returned by
/// [`WatchLink::input`], done by the caller).
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// A watch request on an odd stream.
    Watch {
        stream: u64,
        oid: Oid,
        at: Option<zodb::Tid>,
    },
    /// `bye`, or a fatal protocol error: the link is down now.
    Down,
}

/// The pieces of a replied READ: sent after the link's lock is released.
type Delivery = Vec<(ReadReply, Result<Vec<u8>, Errno>)>;

fn deliver(d: Delivery) {
    for (reply, r) in d {
        match r {
            Ok(b) => reply(Ok(&b)),
            Err(e) => reply(Err(e)),
        }
    }
}

impl WatchLink {
    pub fn new(id: u64, client: ClientProc, rtt: Arc<LatencyHist>) -> WatchLink {
        WatchLink {
            id,
            client,
            rtt,
            st: Mutex::new(LinkState::default()),
            setup_mu: Mutex::new(HashMap::new()),
            setups: AtomicUsize::new(0),
            kill_claimed: Default::default(),
            kill_done: Default::default(),
            early_pins: Default::default(),
        }
    }

    /// The client asked for early pins.
    pub fn early_pins(&self) -> bool {
        self.early_pins.load(Ordering::Relaxed)
    }

    /// When the oldest pin still waiting for this client's reply was sent.
    pub fn oldest_pending(&self) -> Option<Instant> {
        lock(&self.st).pending.values().map(|w| w.sent).min()
    }

    /// The lock serializing setups of `foid` on this link.
    pub fn setup_lock(&self, foid: Oid) -> Arc<Mutex<()>> {
        lock(&self.setup_mu).entry(foid).or_default().clone()
    }

    pub fn is_down(&self) -> bool {
        lock(&self.st).down
    }

    /// Why the link is down (`None` while up).
    pub fn down_why(&self) -> Option<DownWhy> {
        lock(&self.st).why
    }

    /// True the first time only: whoever gets it deals with the client
    /// and then calls [`kill_finished`](Self::kill_finished).
    pub fn claim_kill(&self) -> bool {
        !self.kill_claimed.swap(true, Ordering::AcqRel)
    }

    pub fn kill_finished(&self) {
        self.kill_done.store(true, Ordering::Release);
    }

    /// Wait (polling) until the killer is done, `limit` passed or `stop()`.
    pub fn wait_kill(&self, limit: Duration, stop: &dyn Fn() -> bool) {
        let end = Instant::now() + limit;
        while !self.kill_done.load(Ordering::Acquire) && Instant::now() < end && !stop() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Hand queued bytes to parked READs (EOF to all once down and empty).
    fn drain(st: &mut LinkState) -> Delivery {
        let mut d = Vec::new();
        while !st.parked.is_empty() {
            if st.out.is_empty() {
                if !st.down {
                    break;
                }
                let p = st.parked.pop_front().expect("non-empty");
                d.push((p.reply, Ok(Vec::new())));
                continue;
            }
            let p = st.parked.pop_front().expect("non-empty");
            let n = (p.size as usize).min(st.out.len());
            d.push((p.reply, Ok(st.out.drain(..n).collect())));
        }
        d
    }

    fn queue_locked(st: &mut LinkState, line: &str) {
        st.out.extend(line.as_bytes());
    }

    /// Queue one frame to the client (dropped if the link is down).
    pub fn send(&self, stream: u64, msg: &str) {
        let d = {
            let mut st = lock(&self.st);
            if st.down {
                return;
            }
            Self::queue_locked(&mut st, &wire::format_frame(stream, msg));
            Self::drain(&mut st)
        };
        deliver(d);
    }

    /// Send `msg` as a server request; its reply completes the returned
    /// waiter (at once with `LinkDown` if the link is down).
    pub fn send_pin(&self, msg: &str) -> Arc<PinWait> {
        let w = Arc::new(PinWait::default());
        let d = {
            let mut st = lock(&self.st);
            if st.down {
                w.finish(PinEnd::LinkDown);
                return w;
            }
            let mut s = st.last_stream.wrapping_add(2);
            if s == 0 {
                s = 2;
            }
            st.last_stream = s;
            st.pending.insert(s, w.clone());
            Self::queue_locked(&mut st, &wire::format_frame(s, msg));
            Self::drain(&mut st)
        };
        deliver(d);
        w
    }

    /// A READ of `size` bytes by thread `tid`: answered now if bytes are
    /// queued or the link is down, else parked.
    pub fn read(&self, size: u32, tid: u32, reply: ReadReply) {
        let d = {
            let mut st = lock(&self.st);
            st.parked.push_back(Parked { reply, size, tid });
            Self::drain(&mut st)
        };
        deliver(d);
    }

    /// Take the link down: queue `last` (a stream-0 message) first, fail
    /// pins in flight with `LinkDown`, let READs drain to EOF. Returns
    /// false if it was down already. The caller drops the watches.
    pub fn shutdown(&self, last: Option<&str>, why: DownWhy) -> bool {
        let (d, pending) = {
            let mut st = lock(&self.st);
            if st.down {
                return false;
            }
            if let Some(m) = last {
                Self::queue_locked(&mut st, &wire::format_frame(0, m));
            }
            st.down = true;
            st.why = Some(why);
            let pending: Vec<_> = st.pending.drain().map(|(_, w)| w).collect();
            (Self::drain(&mut st), pending)
        };
        for w in pending {
            w.finish(PinEnd::LinkDown);
        }
        deliver(d);
        true
    }

    /// Bytes the client wrote: complete replies to pins, return the watch
    /// requests for the caller to run. A protocol error shuts the link down
    /// with the error text (spec §4) and returns [`Input::Down`] last.
    pub fn input(&self, data: &[u8]) -> Vec<Input> {
        let mut out = Vec::new();
        let mut replies = Vec::new();
        let mut fatal = None;
        {
            let mut st = lock(&self.st);
            if st.down {
                return out;
            }
            st.inbuf.extend_from_slice(data);
            while let Some(nl) = st.inbuf.iter().position(|&b| b == b'\n') {
                if nl > MAX_LINE {
                    fatal = Some(format!("error: input line too long (> {MAX_LINE} bytes)"));
                    break;
                }
                let raw: Vec<u8> = st.inbuf.drain(..=nl).collect();
                // lines are bytes: a client may send anything
                let (stream, msg) = match wire::parse_frame_bytes(&raw[..raw.len() - 1]) {
                    Ok(f) => f,
                    Err(e) => {
                        fatal = Some(e.to_string());
                        break;
                    }
                };
                if stream % 2 == 0 {
                    match st.pending.remove(&stream) {
                        Some(w) if msg == wire::ACK.as_bytes() => {
                            self.rtt.record(w.sent.elapsed());
                            replies.push((w, PinEnd::Ack))
                        }
                        Some(w) => replies
                            .push((w, PinEnd::Nak(String::from_utf8_lossy(msg).into_owned()))),
                        None => {
                            fatal = Some(format!("error: {stream}: reply on unexpected stream"));
                            break;
                        }
                    }
                    continue;
                }
                let Ok(msg) = std::str::from_utf8(msg) else {
                    let e = format!(
                        "error bad watch: not a watch request: {}",
                        wire::go_quote_bytes(msg)
                    );
                    Self::queue_locked(&mut st, &wire::format_frame(stream, &e));
                    continue;
                };
                let f = wire::Frame { stream, msg };
                match wire::parse_request(f.msg) {
                    Ok(wire::Request::Bye) => {
                        fatal = Some(String::new());
                        break;
                    }
                    Ok(wire::Request::EarlyPins) => {
                        self.early_pins.store(true, Ordering::Relaxed);
                        let ok = wire::Reply::Ok.to_string();
                        Self::queue_locked(&mut st, &wire::format_frame(f.stream, &ok));
                    }
                    Ok(wire::Request::Watch { oid, at }) => out.push(Input::Watch {
                        stream: f.stream,
                        oid,
                        at,
                    }),
                    Err(e) => {
                        let msg = wire::Reply::Error(e.to_string()).to_string();
                        Self::queue_locked(&mut st, &wire::format_frame(f.stream, &msg));
                    }
                }
            }
            if fatal.is_none() && st.inbuf.len() > MAX_LINE {
                fatal = Some(format!("error: input line too long (> {MAX_LINE} bytes)"));
            }
            if fatal.is_none() && st.out.len() > MAX_UNREAD {
                // replies to its own requests pile up unread: a flood
                fatal = Some(format!(
                    "error: too many replies unread (> {MAX_UNREAD} bytes queued)"
                ));
            }
            if fatal.is_none() && self.setups.load(Ordering::Relaxed) + out.len() > MAX_SETUPS {
                fatal = Some(format!(
                    "error: too many watch requests in flight (> {MAX_SETUPS})"
                ));
                out.clear();
            }
            if fatal.is_some() {
                st.inbuf = Vec::new();
            }
            let d = Self::drain(&mut st);
            drop(st);
            deliver(d);
        }
        for (w, e) in replies {
            w.finish(e);
        }
        if let Some(m) = fatal {
            if !m.is_empty() {
                tracing::warn!(link = self.id, pid = self.client.pid, "head/watch: {m}");
            }
            let why = if m.is_empty() {
                DownWhy::Bye
            } else {
                DownWhy::Protocol
            };
            self.shutdown((!m.is_empty()).then_some(m.as_str()), why);
            out.push(Input::Down);
        }
        out
    }

    /// Parked READs whose thread is dying get EINTR.
    fn reap_parked(&self) {
        let d = {
            let mut st = lock(&self.st);
            if st.parked.is_empty() {
                return;
            }
            let mut keep = VecDeque::new();
            let mut d: Delivery = Vec::new();
            for p in st.parked.drain(..) {
                if thread_dying(p.tid) {
                    d.push((p.reply, Err(Errno::EINTR)));
                } else {
                    keep.push_back(p);
                }
            }
            st.parked = keep;
            d
        };
        deliver(d);
    }
}

// ---- all links ----

/// The open links by file handle.
#[derive(Default)]
pub struct Registry {
    links: Mutex<HashMap<u64, Arc<WatchLink>>>,
    next: AtomicU64,
    /// Round trips of all acked pins.
    pub rtt: Arc<LatencyHist>,
}

impl Registry {
    /// Register a new link opened by thread `tid`; None if that process is
    /// gone already.
    pub fn open(&self, tid: u32) -> Option<Arc<WatchLink>> {
        let client = ClientProc::of_thread(tid)?;
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let l = Arc::new(WatchLink::new(id, client, self.rtt.clone()));
        lock(&self.links).insert(id, l.clone());
        Some(l)
    }

    pub fn get(&self, id: u64) -> Option<Arc<WatchLink>> {
        lock(&self.links).get(&id).cloned()
    }

    pub fn remove(&self, id: u64) -> Option<Arc<WatchLink>> {
        lock(&self.links).remove(&id)
    }

    pub fn count(&self) -> usize {
        lock(&self.links).len()
    }

    /// Answer EINTR to parked READs of dying threads, on every link.
    pub fn reap_parked(&self) {
        let all: Vec<_> = lock(&self.links).values().cloned().collect();
        for l in all {
            l.reap_parked();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> ClientProc {
        ClientProc::of_thread(std::process::id()).expect("this process")
    }

    /// Lines in, pins out and back, protocol errors, parked READs.
    #[test]
    fn link_lines() {
        let l = WatchLink::new(1, me(), Default::default());
        // a parked READ gets the next queued line
        let (tx, rx) = std::sync::mpsc::channel::<Result<Vec<u8>, Errno>>();
        let t2 = tx.clone();
        l.read(
            100,
            std::process::id(),
            Box::new(move |r| {
                t2.send(r.map(|b| b.to_vec())).unwrap();
            }),
        );
        assert!(rx.try_recv().is_err(), "parked");
        let w = l.send_pin("pin 0000000000000001 #3 @head");
        assert_eq!(
            rx.recv().unwrap().unwrap(),
            b"2 pin 0000000000000001 #3 @head\n"
        );
        // replies in pieces; a watch request; a bad one
        assert!(l.input(b"2 ac").is_empty());
        assert_eq!(
            l.input(b"k\n1 watch 0000000000000001 @0000000000000002\n3 watch x\n"),
            vec![Input::Watch {
                stream: 1,
                oid: Oid(1),
                at: Some(zodb::Tid(2))
            }]
        );
        assert_eq!(w.wait(Instant::now()), Some(PinEnd::Ack));
        let t3 = tx.clone();
        l.read(
            100,
            1,
            Box::new(move |r| {
                t3.send(r.map(|b| b.to_vec())).unwrap();
            }),
        );
        assert_eq!(
            rx.recv().unwrap().unwrap(),
            b"3 error bad watch: expected 2 arguments, got 1\n"
        );
        // a reply on a stream nobody asked on is fatal; EOF follows
        let w2 = l.send_pin("pin 0000000000000001 #4 @head");
        assert_eq!(l.input(b"8 ack\n"), vec![Input::Down]);
        assert_eq!(w2.wait(Instant::now()), Some(PinEnd::LinkDown));
        let mut got = Vec::new();
        loop {
            let t = tx.clone();
            l.read(
                1000,
                1,
                Box::new(move |r| t.send(r.map(|b| b.to_vec())).unwrap()),
            );
            let b = rx.recv().unwrap().unwrap();
            if b.is_empty() {
                break;
            }
            got.extend(b);
        }
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "4 pin 0000000000000001 #4 @head\n0 error: 8: reply on unexpected stream\n"
        );
    }

    #[test]
    fn bad_frames_are_fatal() {
        let l = WatchLink::new(1, me(), Default::default());
        assert_eq!(l.input(b"hello\n"), vec![Input::Down]);
        let (tx, rx) = std::sync::mpsc::channel();
        l.read(
            1000,
            1,
            Box::new(move |r| tx.send(r.map(|b| b.to_vec())).unwrap()),
        );
        assert_eq!(
            rx.recv().unwrap().unwrap(),
            b"0 error: invalid frame: \"hello\\n\"\n"
        );
        assert!(l.is_down());
    }

    /// What the link queued for the client, up to `size` bytes.
    fn queued(l: &WatchLink, size: u32) -> Vec<u8> {
        let (tx, rx) = std::sync::mpsc::channel();
        l.read(
            size,
            1,
            Box::new(move |r| tx.send(r.map(|b| b.to_vec())).unwrap()),
        );
        rx.recv().unwrap().unwrap()
    }

    /// A line longer than MAX_LINE, in one write or dribbled in without an
    /// LF, closes the link with an error frame and keeps no more of it.
    #[test]
    fn overlong_lines_are_fatal() {
        let want = format!("0 error: input line too long (> {MAX_LINE} bytes)\n");
        let l = WatchLink::new(1, me(), Default::default());
        let mut line = vec![b'1'; MAX_LINE + 1];
        line.push(b'\n');
        assert_eq!(l.input(&line), vec![Input::Down]);
        assert_eq!(queued(&l, 1000), want.as_bytes());
        assert!(l.is_down());

        let l = WatchLink::new(2, me(), Default::default());
        for _ in 0..MAX_LINE / 100 {
            assert_eq!(l.input(&[b'7'; 100]), vec![], "under the bound: kept");
        }
        assert_eq!(l.input(&[b'7'; 200]), vec![Input::Down]);
        assert_eq!(queued(&l, 1000), want.as_bytes());
        assert!(lock(&l.st).inbuf.is_empty(), "nothing kept");
        // a sane line just under the bound is fine
        let l = WatchLink::new(3, me(), Default::default());
        let mut ok = format!("1 watch 0000000000000001 @{}", "0".repeat(16)).into_bytes();
        ok.resize(MAX_LINE, b' ');
        ok.push(b'\n');
        assert!(matches!(l.input(&ok)[..], [Input::Watch { .. }] | []));
        assert!(!l.is_down());
    }

    /// A flood of watch requests (more in flight than MAX_SETUPS), or of
    /// lines whose replies the client never reads, closes the link.
    #[test]
    fn request_floods_are_fatal() {
        let l = WatchLink::new(1, me(), Default::default());
        let req = b"1 watch 0000000000000001 @0000000000000001\n";
        let mut flood = Vec::new();
        for _ in 0..MAX_SETUPS / 2 {
            flood.extend_from_slice(req);
        }
        let got = l.input(&flood);
        assert_eq!(got.len(), MAX_SETUPS / 2, "within the bound: run");
        l.setups.fetch_add(got.len(), Ordering::Relaxed); // what the caller does
        flood.extend_from_slice(req);
        let got = l.input(&flood);
        assert!(
            got == [Input::Down],
            "past it: fatal, got {} inputs",
            got.len()
        );
        assert_eq!(
            queued(&l, 1000),
            format!("0 error: too many watch requests in flight (> {MAX_SETUPS})\n").as_bytes()
        );

        let l = WatchLink::new(2, me(), Default::default());
        // bad requests are answered (not fatal) ... until nobody reads them
        let bad = b"1 watch nonsense\n".repeat(4096);
        let mut n = 0;
        while l.input(&bad) != [Input::Down] {
            n += 1;
            assert!(n < 10_000, "unread replies must be bounded");
        }
        assert!(l.is_down());
        // at most one write's replies past the bound
        assert!(lock(&l.st).out.len() < MAX_UNREAD + (1 << 20));
    }
}
