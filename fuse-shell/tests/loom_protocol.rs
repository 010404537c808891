//! Loom models of head publication and the pin protocol (issue 13): a READ
//! racing a commit, a new watch, a watch moving forward and a watch
//! removal, with two blocks and two watches (on two links). Run with
//! `cargo test --release -p wcfs --test loom_protocol` (4-8 s on two
//! cores).
//!
//! The server's code is not loom-instrumented, so this file restates the
//! protocol's concurrency in a small model; it uses loom directly (no
//! `cfg(loom)`). Every shared structure has the shape it has in
//! `src/serve/`, with loom's primitives:
//!
//! | model | the server |
//! | --- | --- |
//! | `Fs::view`: `Mutex<Arc<View>>`, loads clone the `Arc` | `Head::view`, an RCU cell (the loom shim of `rcu` has the same shape) |
//! | `Fs::ft_rw`: `RwLock<Hist>`, block revisions `rev↑` | `Wcfs::ft_rw` around `Wcfs::ft` (ΔFtail) |
//! | `Fs::mu`: the tracked blocks | ΔFtail's `mu` (the explicitly tracked blocks) |
//! | `Fs::watchers`: `RwLock<Vec<Arc<Watch>>>` | `Isolation::watchers` (one file) |
//! | `Watch::st`: at, generation, pinned, removed | `Watch::st` |
//! | `Link::watch` | `Isolation::by_link` (one link, one file) |
//! | `Link::queue`: `Mutex<VecDeque<Msg>>` | the link's outgoing lines |
//! | `Fs::pages[b]`: the page lock and the cache entry | the kernel's page cache of head/bigfile/f |
//! | `Fs::head_at`: `AtomicUsize` (Release / Acquire) | `Head::at` |
//! | `Fs::view_cv`, `Fs::head_cv` | `Head::view_cv`, `Isolation::head_cv` (waits without timeouts) |
//!
//! The steps, by function of the server:
//!
//! - [`read`]: `read_for` + `read_head` (`read.rs`: load the view, load
//!   the block at its `at`, `ft_rw` R; if ΔFtail's head is not `at`,
//!   release, `wait_view_past` and start again; else Track) +
//!   `pin_watchers` (`isolation.rs`: for each watch read `(at, gen)`,
//!   decide, lock `st`, queue only if `gen` is unchanged, else decide
//!   again) + the reply. The kernel holds the page locked from before the
//!   request until the reply.
//! - [`commit`]: `handle_commit` (`head.rs`: `ft_rw` W around `Update`,
//!   which appends the revision and yields δF, the changed blocks that
//!   are tracked; then `publish_view`) + the lane of `inval.rs` (lock the
//!   page, drop it) + `publish` (head/at, then `wake_setups`).
//! - [`setup`]: `setup_watch` (`isolation.rs`: wait for head/at ≥ at) +
//!   `setup_pins` (`ft_rw` R; register the at, bumping the generation,
//!   or insert the new watch into `by_link` and `watchers`; slice the
//!   tracked blocks changed in `(at, head]` and pin them to
//!   `BlkRevAt(b, at)`; unpin the pinned blocks not named and unchanged in
//!   `(at, head]`) + `ok`.
//! - [`remove`]: the `watch <oid> -` branch of `setup_watch` (out of
//!   `by_link`, `removed`, out of `watchers`, `ok`).
//! - `Watch::pin_locked`: [`Fs::pin_locked`].
//!
//! Abstracted away: storage I/O and the block cache (`load_blk` is a pure
//! function of the static database); ΔFtail's internals (a list of block
//! revisions: no ΔBtail, rebuilds, `ForgetPast`, epochs or size changes;
//! `blkRevMax` is not modelled, `BlkRevAt` is exact); READs of several
//! blocks (a READ here is one block) and the `READ_RETRIES` fallback
//! (with one commit a READ retries at most once); lookups; the wire
//! format, the latency of acks, pin timeouts and faulty clients: acks are
//! instant, so a pin takes effect on the client when it is queued, and
//! the client applies a link's lines in queue order (the checks replay
//! the queue); the setup lock (each link has at most one setup or removal
//! per model); the invalidation lanes (one commit); the error replies of
//! a setup (no model goes back in history or before the tail).
//!
//! Checked at the end of every execution, and when a setup sends `ok`
//! (the client uses its mapping from then on: each page it touches, once
//! a READ in flight has replied):
//!
//! ```text
//! head/at = T ∧ b cached with data D            ⇒  D = data(b, T)   (at the end)
//! ∀ live watch w, block b: what the client of w shows for b
//!     (its pin, in queue order, else the cached head data) = data(b, w.at)
//! no pin on a link after the `ok` of its removal
//! ```
//!
//! The two-thread models are explored exhaustively, the three-thread ones
//! with a preemption bound ([`BOUND3`]). Each property has a test with one
//! step broken ([`Bug`]) that asserts loom finds the violation, so the
//! model is shown to be able to fail.

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Condvar, Mutex, RwLock};
use loom::thread;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;

/// A revision; 0 is the tail (the oldest state the model knows).
type Rev = usize;
/// A block number.
type Blk = usize;

/// Blocks of the file.
const NBLK: usize = 2;
/// Links, each with at most one watch of the file.
const NLINK: usize = 2;

/// The one step a broken variant gets wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bug {
    /// The protocol as the server implements it.
    None,
    /// A READ does not compare ΔFtail's head with its view's `at`.
    NoHeadCheck,
    /// The page is locked only to fill it at the reply, not from the
    /// request on (the reply's data can land after the invalidation).
    PageUnlockedEarly,
    /// A new watch's setup slices ΔFtail before it registers.
    SliceBeforeRegister,
    /// A READ queues its pins without checking the watch's generation.
    NoGenCheck,
    /// A removal does not mark its watch removed.
    NoRemovedFlag,
    /// A setup does not wait for head/at ≥ at.
    NoHeadAtWait,
}

/// The head view (`HeadView`, `head.rs`): immutable once published.
struct View {
    at: Rev,
}

/// ΔFtail's history: which blocks changed at which revision.
struct Hist {
    head: Rev,
    /// (rev, blk), rev↑
    changes: Vec<(Rev, Blk)>,
}

impl Hist {
    /// `BlkRevAt(b, at)`: the last revision ≤ at that changed b, else the
    /// tail.
    fn blk_rev_at(&self, b: Blk, at: Rev) -> Rev {
        last_change(self.changes.iter().copied(), b, at)
    }

    /// b changed in `(lo, hi]`.
    fn changed_in(&self, b: Blk, lo: Rev, hi: Rev) -> bool {
        self.changes
            .iter()
            .any(|&(r, x)| x == b && lo < r && r <= hi)
    }
}

fn last_change(changes: impl Iterator<Item = (Rev, Blk)>, b: Blk, at: Rev) -> Rev {
    changes
        .filter(|&(r, x)| x == b && r <= at)
        .map(|(r, _)| r)
        .max()
        .unwrap_or(0)
}

/// What `Watch::st` guards.
struct WatchState {
    at: Rev,
    gen: usize,
    /// blk -> the rev it is pinned to
    pinned: [Option<Rev>; NBLK],
    removed: bool,
}

struct Watch {
    /// The link it is on (`Watch::link`).
    link: usize,
    st: Mutex<WatchState>,
}

/// A line the server queues on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    /// `pin f #blk @rev` (`None`: `@head`)
    Pin { blk: Blk, rev: Option<Rev> },
    /// `ok` of a setup, or of a removal
    Ok { removal: bool },
}

/// A `head/watch` link of one client.
struct Link {
    /// Its watch of the model's one file (`Isolation::by_link`).
    watch: Mutex<Option<Arc<Watch>>>,
    /// Lines to the client, in order.
    queue: Mutex<VecDeque<Msg>>,
    /// The client's pins from before the model.
    pins0: [Option<Rev>; NBLK],
}

/// The model's initial state and its concurrent operations.
struct Scenario {
    /// The database: (rev, changed blocks), rev↑. Those ≤ `head` are
    /// committed and in ΔFtail before the model starts.
    db: &'static [(Rev, &'static [Blk])],
    head: Rev,
    tracked: [bool; NBLK],
    /// blk -> the data cached (the revision of its content)
    cache: [Option<Rev>; NBLK],
    /// link -> its watch: (at, pinned, as the server and the client agree)
    watches: [Option<(Rev, [Option<Rev>; NBLK])>; NLINK],
    /// One thread each; the last runs on the model's main thread.
    ops: &'static [Op],
}

#[derive(Debug, Clone, Copy)]
enum Op {
    /// READ of one block of head/bigfile/f.
    Read(Blk),
    /// The commit of this revision of `db`.
    Commit(Rev),
    /// `watch f @at` on a link: new, or moving its watch forward.
    Setup(usize, Rev),
    /// `watch f -` on a link.
    Remove(usize),
}

/// The server, the kernel's page cache and the links.
struct Fs {
    bug: Bug,
    db: &'static [(Rev, &'static [Blk])],
    view: Mutex<Arc<View>>,
    ft_rw: RwLock<Hist>,
    /// blk -> explicitly tracked
    mu: Mutex<[bool; NBLK]>,
    watchers: RwLock<Vec<Arc<Watch>>>,
    links: [Link; NLINK],
    /// blk -> the page: its lock, and the data cached (`None`: not cached)
    pages: [Mutex<Option<Rev>>; NBLK],
    /// Stored (Release) after the commit's invalidations; loaded (Acquire)
    /// by setups waiting for it.
    head_at: AtomicUsize,
    /// Notified when head/at moves (`Isolation::head_cv`).
    head_cv: (Mutex<()>, Condvar),
    /// Notified when a view is published (`Head::view_cv`).
    view_cv: (Mutex<()>, Condvar),
    /// The checker's notes, not part of the model (a std mutex: loom does
    /// not see it). A check that fails while other model threads run
    /// records here; the model panics once they are joined (loom cannot
    /// unwind live threads).
    violations: std::sync::Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> loom::sync::MutexGuard<'_, T> {
    m.lock().unwrap()
}

impl Fs {
    fn new(sc: &Scenario, bug: Bug) -> Fs {
        let changes = sc
            .db
            .iter()
            .filter(|(r, _)| *r <= sc.head)
            .flat_map(|&(r, bs)| bs.iter().map(move |&b| (r, b)))
            .collect();
        let watches: [Option<Arc<Watch>>; NLINK] = std::array::from_fn(|l| {
            sc.watches[l].map(|(at, pinned)| {
                Arc::new(Watch {
                    link: l,
                    st: Mutex::new(WatchState {
                        at,
                        gen: 0,
                        pinned,
                        removed: false,
                    }),
                })
            })
        });
        Fs {
            bug,
            db: sc.db,
            view: Mutex::new(Arc::new(View { at: sc.head })),
            ft_rw: RwLock::new(Hist {
                head: sc.head,
                changes,
            }),
            mu: Mutex::new(sc.tracked),
            watchers: RwLock::new(watches.iter().flatten().cloned().collect()),
            links: std::array::from_fn(|l| Link {
                watch: Mutex::new(watches[l].clone()),
                queue: Mutex::new(VecDeque::new()),
                pins0: sc.watches[l].map_or([None; NBLK], |(_, p)| p),
            }),
            pages: std::array::from_fn(|b| Mutex::new(sc.cache[b])),
            head_at: AtomicUsize::new(sc.head),
            head_cv: (Mutex::new(()), Condvar::new()),
            view_cv: (Mutex::new(()), Condvar::new()),
            violations: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The storage: block b's content as of `at` (the revision that wrote
    /// it).
    fn data_at(&self, b: Blk, at: Rev) -> Rev {
        let changes = self
            .db
            .iter()
            .flat_map(|&(r, bs)| bs.iter().map(move |&x| (r, x)));
        last_change(changes, b, at)
    }

    /// `self.head.view.with(|v| v.at)`: no lock in the server, a brief one
    /// here.
    fn view_at(&self) -> Rev {
        let v = lock(&self.view).clone();
        v.at
    }

    fn run(&self, op: Op) {
        match op {
            Op::Read(b) => read(self, b),
            Op::Commit(rev) => commit(self, rev),
            Op::Setup(l, at) => setup(self, l, at),
            Op::Remove(l) => remove(self, l),
        }
    }

    /// `Watch::pin_locked`, with the watch's `st` held: queue
    /// `pin #b @rev` on the watch's link unless the watch was removed or
    /// the pin is in force already.
    fn pin_locked(&self, link: usize, st: &mut WatchState, b: Blk, rev: Option<Rev>) {
        if st.removed || st.pinned[b] == rev {
            return;
        }
        lock(&self.links[link].queue).push_back(Msg::Pin { blk: b, rev });
        st.pinned[b] = rev;
    }

    /// `pin_watchers`, with `ft_rw` R held and ΔFtail at `head`.
    fn pin_watchers(&self, hist: &Hist, head: Rev, b: Blk) {
        let ws = self.watchers.read().unwrap().clone();
        for w in &ws {
            loop {
                let (at, gen) = {
                    let st = lock(&w.st);
                    (st.at, st.gen)
                };
                let want = (hist.blk_rev_at(b, head) > at).then(|| hist.blk_rev_at(b, at));
                let mut st = lock(&w.st);
                if st.gen != gen && self.bug != Bug::NoGenCheck {
                    continue; // a setup moved the watch: decide again
                }
                if let Some(rev) = want {
                    self.pin_locked(w.link, &mut st, b, Some(rev));
                }
                break;
            }
        }
    }
}

// ---- 1) READ → track → pin → reply ----

/// A READ of block `b` of head/bigfile/f (`read_for` → `read_head` →
/// `pin_watchers` → reply).
fn read(fs: &Fs, b: Blk) {
    // the kernel locks the page before it sends the READ, and serves a
    // cached page without one
    let mut page = Some(lock(&fs.pages[b]));
    if page.as_ref().is_some_and(|p| p.is_some()) {
        return;
    }
    if fs.bug == Bug::PageUnlockedEarly {
        page = None;
    }
    let data = loop {
        let at = fs.view_at();
        let data = fs.data_at(b, at); // load_blk: no lock
        let hist = fs.ft_rw.read().unwrap();
        if hist.head != at && fs.bug != Bug::NoHeadCheck {
            // a commit moved ΔFtail past `at`: wait_view_past, again
            drop(hist);
            let mut g = lock(&fs.view_cv.0);
            while fs.view_at() == at {
                g = fs.view_cv.1.wait(g).unwrap();
            }
            continue;
        }
        lock(&fs.mu)[b] = true; // ΔFtail.Track
        fs.pin_watchers(&hist, at, b);
        break data; // ft_rw released; the acks are instant
    };
    // the reply: the data reaches the page cache, and the page is unlocked
    let mut page = page.unwrap_or_else(|| lock(&fs.pages[b]));
    *page = Some(data);
}

// ---- 2) commit → δF → view → invalidate → head/at ----

/// The commit of revision `rev` of the database (`handle_commit`, its
/// lane, `publish`).
fn commit(fs: &Fs, rev: Rev) {
    let blocks = fs.db.iter().find(|(r, _)| *r == rev).unwrap().1;
    let df: Vec<Blk> = {
        let mut hist = fs.ft_rw.write().unwrap();
        hist.changes.extend(blocks.iter().map(|&b| (rev, b)));
        hist.head = rev;
        // δF: only tracked blocks (b ∈ cache ⇒ b tracked)
        let tracked = lock(&fs.mu);
        blocks.iter().copied().filter(|&b| tracked[b]).collect()
    };
    *lock(&fs.view) = Arc::new(View { at: rev }); // publish_view
    {
        let _g = lock(&fs.view_cv.0);
        fs.view_cv.1.notify_all();
    }
    for b in df {
        // the kernel waits for the page lock of a READ in flight
        *lock(&fs.pages[b]) = None;
    }
    fs.head_at.store(rev, Ordering::Release); // publish
    let _g = lock(&fs.head_cv.0); // wake_setups
    fs.head_cv.1.notify_all();
}

// ---- 3) watch setup and removal ----

/// `watch f @at` on link `l` (`setup_watch` → `setup_pins` → `ok`): a new
/// watch, or the link's watch moved forward to `at`.
fn setup(fs: &Fs, l: usize, at: Rev) {
    let link = &fs.links[l];
    // head/at ≥ at: the page cache holds nothing newer than pins account for
    let mut g = lock(&fs.head_cv.0);
    while fs.head_at.load(Ordering::Acquire) < at && fs.bug != Bug::NoHeadAtWait {
        g = fs.head_cv.1.wait(g).unwrap();
    }
    drop(g);
    let hist = fs.ft_rw.read().unwrap();
    let head = hist.head;
    // slice_by_file_rev_ex(at, head, only explicitly tracked)
    let slice = || -> [bool; NBLK] {
        let tracked = *lock(&fs.mu);
        std::array::from_fn(|b| tracked[b] && hist.changed_in(b, at, head))
    };
    let early = (fs.bug == Bug::SliceBeforeRegister).then(slice);
    // register `at` before the slice
    let existing = lock(&link.watch).clone();
    let w = match existing {
        Some(w) => {
            let mut st = lock(&w.st);
            st.at = at;
            st.gen += 1;
            drop(st);
            w
        }
        None => {
            let w = Arc::new(Watch {
                link: l,
                st: Mutex::new(WatchState {
                    at,
                    gen: 0,
                    pinned: [None; NBLK],
                    removed: false,
                }),
            });
            *lock(&link.watch) = Some(w.clone());
            fs.watchers.write().unwrap().push(w.clone());
            w
        }
    };
    let changed = early.unwrap_or_else(slice);
    let mut want: Vec<(Blk, Option<Rev>)> = (0..NBLK)
        .filter(|&b| changed[b])
        .map(|b| (b, Some(hist.blk_rev_at(b, at))))
        .collect();
    // pinned blocks not named: unpin those unchanged in (at, head]
    let pinned = lock(&w.st).pinned;
    for b in (0..NBLK).filter(|&b| pinned[b].is_some() && !changed[b]) {
        let rev = (hist.blk_rev_at(b, head) > at).then(|| hist.blk_rev_at(b, at));
        want.push((b, rev));
    }
    let mut st = lock(&w.st);
    for (b, rev) in want {
        fs.pin_locked(l, &mut st, b, rev);
    }
    drop(st);
    drop(hist);
    // wait_pins: the acks are instant
    lock(&link.queue).push_back(Msg::Ok { removal: false });
    fs.check_at_ok(l, at);
}

/// `watch f -` on link `l` (the removal branch of `setup_watch`).
fn remove(fs: &Fs, l: usize) {
    let link = &fs.links[l];
    let w = lock(&link.watch).take();
    if let Some(w) = w {
        if fs.bug != Bug::NoRemovedFlag {
            lock(&w.st).removed = true;
        }
        fs.watchers.write().unwrap().retain(|x| !Arc::ptr_eq(x, &w));
    }
    lock(&link.queue).push_back(Msg::Ok { removal: true });
}

// ---- 4) the properties ----

impl Fs {
    fn violation(&self, msg: String) {
        self.violations.lock().unwrap().push(msg);
    }

    /// The client of link `l`: its pins after the lines queued so far,
    /// applied in order. A pin after the `ok` of the watch's removal is a
    /// violation (the client forgot the file: it would fail the pin).
    fn client_pins(&self, l: usize) -> [Option<Rev>; NBLK] {
        let link = &self.links[l];
        let mut pins = link.pins0;
        let mut forgotten = false;
        for m in lock(&link.queue).iter() {
            match *m {
                Msg::Pin { blk, rev } => {
                    if forgotten {
                        self.violation(format!("pin after the removal's ok: link {l}, #{blk}"));
                    }
                    pins[blk] = rev;
                }
                Msg::Ok { removal } => {
                    forgotten = removal;
                    if removal {
                        pins = [None; NBLK];
                    }
                }
            }
        }
        pins
    }

    /// Block `b` as the client of a watch @at shows it (`pin`, else the
    /// cached head data) is the data of @at.
    fn check_shown(
        &self,
        what: &str,
        l: usize,
        at: Rev,
        b: Blk,
        pin: Option<Rev>,
        cache: Option<Rev>,
    ) {
        match pin.map(|r| self.data_at(b, r)).or(cache) {
            Some(d) if d != self.data_at(b, at) => self.violation(format!(
                "isolation {what}: link {l}, watch @{at} shows block {b} as @{d} \
                 (pin {pin:?}, cache {cache:?})"
            )),
            _ => {}
        }
    }

    /// The client of link `l` uses its mapping from the `ok` of its setup
    /// @at on: each block it touches then (a fault waits for the page lock
    /// of a READ in flight) shows the data of @at.
    fn check_at_ok(&self, l: usize, at: Rev) {
        for b in 0..NBLK {
            // page, then the queue: a pin for b queued before the page was
            // filled is in the queue by then
            let page = lock(&self.pages[b]);
            let pins = self.client_pins(l);
            self.check_shown("at ok", l, at, b, pins[b], *page);
        }
    }

    /// The properties of the module docs, once every operation is done.
    fn check(&self) {
        let head_at = self.head_at.load(Ordering::Acquire);
        let cache: [Option<Rev>; NBLK] = std::array::from_fn(|b| *lock(&self.pages[b]));
        for (b, c) in cache.iter().enumerate() {
            match *c {
                Some(d) if d != self.data_at(b, head_at) => self.violation(format!(
                    "stale cache: head/at = {head_at}, block {b} cached with the data of @{d}"
                )),
                _ => {}
            }
        }
        for l in 0..NLINK {
            let pins = self.client_pins(l);
            let Some(w) = lock(&self.links[l].watch).clone() else {
                continue;
            };
            let at = lock(&w.st).at;
            for b in 0..NBLK {
                self.check_shown("at the end", l, at, b, pins[b], cache[b]);
            }
        }
        let v = self.violations.lock().unwrap();
        assert!(v.is_empty(), "{}", v.join("; "));
    }
}

// ---- 5) the models ----

/// Explores every execution of `sc` with at most `bound` preemptions
/// (`None`: unbounded; `LOOM_MAX_PREEMPTIONS` may raise a bound); returns
/// how many there were.
fn model(sc: &'static Scenario, bug: Bug, bound: Option<usize>) -> usize {
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut b = loom::model::Builder::new();
    b.preemption_bound = bound.map(|n| b.preemption_bound.map_or(n, |env| env.max(n)));
    let n = runs.clone();
    b.check(move || {
        n.fetch_add(1, Ordering::Relaxed);
        let fs = Arc::new(Fs::new(sc, bug));
        fs.check(); // the initial state is consistent
        let (last, rest) = sc.ops.split_last().unwrap();
        let ts: Vec<_> = rest
            .iter()
            .map(|&op| {
                let fs = fs.clone();
                thread::spawn(move || fs.run(op))
            })
            .collect();
        fs.run(*last);
        for t in ts {
            t.join().unwrap();
        }
        fs.check();
    });
    let n = runs.load(Ordering::Relaxed);
    println!("{n} executions");
    n
}

/// Runs `sc` with `bug` and asserts that loom finds a violation whose
/// message contains `what`.
fn must_fail(sc: &'static Scenario, bug: Bug, bound: Option<usize>, what: &str) {
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| model(sc, bug, bound)));
    let Err(e) = r else {
        panic!("{bug:?}: loom found no violation");
    };
    let msg = e
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(
        msg.contains(what),
        "{bug:?}: expected a violation of {what:?}, got: {msg}"
    );
}

/// Models of two threads are explored exhaustively (no preemption bound).
const EXHAUSTIVE: Option<usize> = None;
/// The preemption bound of the three-thread models: with 4 they take
/// 34 000 and 55 000 executions (1-2 s each in release mode); 5 takes
/// 200 000 (8 s), 6 a million (40 s).
const BOUND3: Option<usize> = Some(4);

const NO_PINS: [Option<Rev>; NBLK] = [None; NBLK];

/// A READ of block 0 while the commit of @1 changes blocks 0 and 1;
/// block 1 is tracked and cached, two watches are at @0.
static READ_VS_COMMIT: Scenario = Scenario {
    db: &[(1, &[0, 1])],
    head: 0,
    tracked: [false, true],
    cache: [None, Some(0)],
    watches: [Some((0, NO_PINS)), Some((0, NO_PINS))],
    ops: &[Op::Read(0), Op::Commit(1)],
};

/// At head @1: a READ of block 0 while link 0 sets up a new watch @0
/// (block 1, changed at @1, is tracked and cached); link 1 watches @1.
static READ_VS_NEW_WATCH: Scenario = Scenario {
    db: &[(1, &[0, 1])],
    head: 1,
    tracked: [false, true],
    cache: [None, Some(1)],
    watches: [None, Some((1, NO_PINS))],
    ops: &[Op::Read(0), Op::Setup(0, 0)],
};

/// At head @1: a READ of block 0 while link 0 moves its watch from @0 to
/// @1 (block 1 is pinned @0 on both watches, and is to be unpinned on
/// link 0); link 1 stays @0.
static READ_VS_MOVE: Scenario = Scenario {
    db: &[(1, &[0, 1])],
    head: 1,
    tracked: [false, true],
    cache: [None, Some(1)],
    watches: [Some((0, [None, Some(0)])), Some((0, [None, Some(0)]))],
    ops: &[Op::Read(0), Op::Setup(0, 1)],
};

/// At head @1: a READ of block 0, which both watches @0 need pinned,
/// while link 0 removes its watch.
static READ_VS_REMOVE: Scenario = Scenario {
    db: &[(1, &[0])],
    head: 1,
    tracked: [false, false],
    cache: [None, None],
    watches: [Some((0, NO_PINS)), Some((0, NO_PINS))],
    ops: &[Op::Read(0), Op::Remove(0)],
};

/// All three: a READ of block 0, the commit of @1 (blocks 0 and 1), and
/// link 0 moving its watch from @0 to @1 (it waits for head/at); link 1
/// stays @0.
static READ_VS_COMMIT_VS_MOVE: Scenario = Scenario {
    db: &[(1, &[0, 1])],
    head: 0,
    tracked: [false, true],
    cache: [None, Some(0)],
    watches: [Some((0, NO_PINS)), Some((0, NO_PINS))],
    ops: &[Op::Read(0), Op::Commit(1), Op::Setup(0, 1)],
};

/// All three with a new watch: link 0 sets up a watch @0 while the commit
/// of @1 changes blocks 0 and 1 and a READ tracks block 0 for the first
/// time; link 1 watches @0.
static READ_VS_COMMIT_VS_NEW_WATCH: Scenario = Scenario {
    db: &[(1, &[0, 1])],
    head: 0,
    tracked: [false, true],
    cache: [None, Some(0)],
    watches: [None, Some((0, NO_PINS))],
    ops: &[Op::Read(0), Op::Commit(1), Op::Setup(0, 0)],
};

/// (1) The data of a READ that a commit overtook never stays in the page
/// cache once head/at moved, and pins are for the data replied.
#[test]
fn read_vs_commit() {
    model(&READ_VS_COMMIT, Bug::None, EXHAUSTIVE);
}

/// (1) Without the ΔFtail head check, a READ tracks its block after the
/// commit's δF was computed without it: its old data stays cached.
#[test]
fn read_vs_commit_without_head_check_fails() {
    must_fail(&READ_VS_COMMIT, Bug::NoHeadCheck, EXHAUSTIVE, "stale cache");
}

/// (1) Without the page lock held from request to reply, the reply lands
/// after the invalidation.
#[test]
fn read_vs_commit_page_unlocked_early_fails() {
    must_fail(
        &READ_VS_COMMIT,
        Bug::PageUnlockedEarly,
        EXHAUSTIVE,
        "stale cache",
    );
}

/// (2) A READ that tracks a block for the first time while a new watch is
/// set up: the READ pins for the new watch, or the setup's slice sees the
/// block.
#[test]
fn read_vs_new_watch() {
    model(&READ_VS_NEW_WATCH, Bug::None, EXHAUSTIVE);
}

/// (2) Slicing before registering leaves the window: the block reaches
/// the page cache unpinned for the new watch.
#[test]
fn read_vs_new_watch_slice_before_register_fails() {
    must_fail(
        &READ_VS_NEW_WATCH,
        Bug::SliceBeforeRegister,
        EXHAUSTIVE,
        "isolation",
    );
}

/// (3) A READ that decided its pins for the old at of a watch being moved
/// decides again: no stale pin outlives the setup.
#[test]
fn read_vs_move() {
    model(&READ_VS_MOVE, Bug::None, EXHAUSTIVE);
}

/// (3) Without the generation check the READ's pin for the old at lands
/// after the setup: the client shows @0 at @1.
#[test]
fn read_vs_move_without_gen_check_fails() {
    must_fail(&READ_VS_MOVE, Bug::NoGenCheck, EXHAUSTIVE, "isolation");
}

/// (4) A READ racing `watch f -`: no pin follows the removal's `ok`.
#[test]
fn read_vs_remove() {
    model(&READ_VS_REMOVE, Bug::None, EXHAUSTIVE);
}

/// (4) Without the removed flag, a READ that listed the watch before its
/// removal pins it after the `ok`.
#[test]
fn read_vs_remove_without_removed_flag_fails() {
    must_fail(&READ_VS_REMOVE, Bug::NoRemovedFlag, EXHAUSTIVE, "pin after");
}

/// READ vs commit vs watch setup, all at once.
#[test]
fn read_vs_commit_vs_move() {
    model(&READ_VS_COMMIT_VS_MOVE, Bug::None, BOUND3);
}

/// Without the wait for head/at, the `ok` can come while the page cache
/// still holds a block of @0 that the commit is about to invalidate: the
/// client shows it at @1.
#[test]
fn read_vs_commit_vs_move_without_head_at_wait_fails() {
    must_fail(
        &READ_VS_COMMIT_VS_MOVE,
        Bug::NoHeadAtWait,
        BOUND3,
        "isolation at ok",
    );
}

/// READ vs commit vs a new watch: the setup's head is at least that of
/// every READ that tracked before it.
#[test]
fn read_vs_commit_vs_new_watch() {
    model(&READ_VS_COMMIT_VS_NEW_WATCH, Bug::None, BOUND3);
}
