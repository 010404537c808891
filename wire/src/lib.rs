//! The `head/watch` wire format (wcfs-protocol.md §4), for both ends.
//!
//! A watch link carries lines in both directions:
//!
//! ```text
//! frame = stream SP message LF        stream: decimal u64, no sign, no leading zeros
//! ```
//!
//! Client requests use odd streams and get their reply on the same stream;
//! server requests (pins) use even streams other than 0 and get the
//! client's reply on the same stream; stream 0 carries server control
//! messages that get no reply.
//!
//! Everything here is pure text processing: parsing is strict where the
//! original is (a frame without a space or with a non-decimal stream is
//! fatal for the link) and error texts are the original's, so that a
//! client written against the original grammar sees the same lines.

use std::fmt;
use std::time::Duration;
use ztypes::{Oid, Tid};

/// Longest line either end should send: the original C++ client rejects
/// received messages over 246 bytes.
pub const MAX_LINE: usize = 246;

/// One frame: a stream id and a message (without the trailing LF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The stream id.
    pub stream: u64,
    /// The message text; never contains LF.
    pub msg: &'a str,
}

/// A line that is not a frame. Fatal for the link on the server side,
/// which answers `0 <this error's text>` and closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// No space separates a stream from a message.
    #[error("error: invalid frame: {}", go_quote_bytes(.line))]
    NoSpace {
        /// The line as received, with its LF (any bytes).
        line: Vec<u8>,
    },
    /// The stream is not a decimal u64.
    #[error("error: invalid frame: {} (invalid stream)", go_quote_bytes(.line))]
    BadStream {
        /// The line as received, with its LF (any bytes).
        line: Vec<u8>,
    },
}

/// Parse one received line (`line` without its LF; the LF is put back into
/// error texts, as the original quotes the raw line).
///
/// Stream ids are accepted the way the original server's parser accepts
/// them (decimal digits, leading zeros allowed); [`format_frame`] never
/// writes leading zeros.
pub fn parse_frame(line: &str) -> Result<Frame<'_>, FrameError> {
    let (stream, msg) = parse_frame_bytes(line.as_bytes())?;
    // the stream is ASCII digits and the split is at a space: `msg` starts
    // on a char boundary
    Ok(Frame {
        stream,
        msg: &line[line.len() - msg.len()..],
    })
}

/// [`parse_frame`] of a line that may not be UTF-8 (a server reads bytes
/// from any client): `(stream, message bytes)`.
pub fn parse_frame_bytes(line: &[u8]) -> Result<(u64, &[u8]), FrameError> {
    let raw = || [line, b"\n"].concat();
    let Some(sp) = line.iter().position(|&b| b == b' ') else {
        return Err(FrameError::NoSpace { line: raw() });
    };
    let (stream, msg) = (&line[..sp], &line[sp + 1..]);
    if stream.is_empty() || !stream.iter().all(|b| b.is_ascii_digit()) {
        return Err(FrameError::BadStream { line: raw() });
    }
    let stream = std::str::from_utf8(stream)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| FrameError::BadStream { line: raw() })?;
    Ok((stream, msg))
}

/// The line for a frame, LF included.
///
/// # Panics
///
/// If `msg` contains LF: that would be two frames, a bug of the caller.
pub fn format_frame(stream: u64, msg: &str) -> String {
    assert!(!msg.contains('\n'), "frame message with LF: {msg:?}");
    format!("{stream} {msg}\n")
}

/// What a client asks on an odd stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `watch <oid> @<at>`: set up or move the watch of a file to view
    /// `at`; `at: None` is `watch <oid> -`, remove it.
    Watch {
        /// The file.
        oid: Oid,
        /// The view, `None` to stop watching.
        at: Option<Tid>,
    },
    /// `bye`: close the link; no reply.
    Bye,
    /// `option early-pins` (an extension of this server; the original
    /// replies `error bad watch: ...`): from now on, pin this link's
    /// watches *before* the kernel drops a changed block from head/'s
    /// cache, not only when a READ needs it. A client whose threads fault
    /// on its mappings needs this: a page fault that is retried holds the
    /// process's mmap lock while it reads, and a READ that then needs this
    /// process's pin would wait for a pinner that needs that lock. Replied
    /// `ok`.
    EarlyPins,
}

/// The message of [`Request::EarlyPins`].
pub const OPTION_EARLY_PINS: &str = "option early-pins";

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Watch { oid, at: Some(at) } => write!(f, "watch {oid} @{at}"),
            Request::Watch { oid, at: None } => write!(f, "watch {oid} -"),
            Request::Bye => f.write_str("bye"),
            Request::EarlyPins => f.write_str(OPTION_EARLY_PINS),
        }
    }
}

/// A watch request that does not parse; the server replies
/// `error <this error's text>` on the request's stream and keeps the link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not `watch ...`.
    #[error("bad watch: not a watch request: {}", go_quote(.0))]
    NotWatch(String),
    /// `option <name>` with a name this server does not know.
    #[error("unknown option: {}", go_quote(.0))]
    Option(String),
    /// Not exactly two arguments.
    #[error("bad watch: expected 2 arguments, got {0}")]
    Args(usize),
    /// The oid is not 16 hex digits.
    #[error("bad watch: invalid oid")]
    Oid,
    /// The view is neither `-` nor `@` + 16 hex digits.
    #[error("bad watch: invalid at")]
    At,
}

/// Parse a client request (any odd-stream message).
///
/// As in the original, tokens are split on single spaces, and
/// `@ffffffffffffffff` (the invalid tid) means the same as `-`.
pub fn parse_request(msg: &str) -> Result<Request, RequestError> {
    if msg == "bye" {
        return Ok(Request::Bye);
    }
    if msg == OPTION_EARLY_PINS {
        return Ok(Request::EarlyPins);
    }
    if let Some(name) = msg.strip_prefix("option ") {
        return Err(RequestError::Option(name.to_owned()));
    }
    let Some(args) = msg.strip_prefix("watch ") else {
        return Err(RequestError::NotWatch(msg.to_owned()));
    };
    let argv: Vec<&str> = args.split(' ').collect();
    if argv.len() != 2 {
        return Err(RequestError::Args(argv.len()));
    }
    let oid = parse_hex16(argv[0]).map(Oid).ok_or(RequestError::Oid)?;
    let at = match argv[1] {
        "-" => None,
        a => {
            let t = a
                .strip_prefix('@')
                .and_then(parse_hex16)
                .ok_or(RequestError::At)?;
            (t != u64::MAX).then_some(Tid(t))
        }
    };
    Ok(Request::Watch { oid, at })
}

/// Exactly 16 hex digits (either case, as the original server accepts).
fn parse_hex16(s: &str) -> Option<u64> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// A server request on an even stream: `pin <oid> #<blk> @<rev>`, where
/// `rev: None` is `@head` (unpin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    /// The file.
    pub oid: Oid,
    /// The block.
    pub blk: i64,
    /// Show the block as of this revision; `None`: as of head again.
    pub rev: Option<Tid>,
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pin {} #{} ", self.oid, self.blk)?;
        match self.rev {
            Some(r) => write!(f, "@{r}"),
            None => f.write_str("@head"),
        }
    }
}

/// A `pin` message that does not parse (the client nacks it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pin message {}", go_quote(.0))]
pub struct PinError(pub String);

/// Parse a `pin` message.
pub fn parse_pin(msg: &str) -> Result<Pin, PinError> {
    let bad = || PinError(msg.to_owned());
    let mut it = msg.split(' ');
    let (Some("pin"), Some(oid), Some(blk), Some(rev), None) =
        (it.next(), it.next(), it.next(), it.next(), it.next())
    else {
        return Err(bad());
    };
    let oid = parse_hex16(oid).map(Oid).ok_or_else(bad)?;
    let blk = blk
        .strip_prefix('#')
        .filter(|b| !b.is_empty() && !b.starts_with('+'))
        .and_then(|b| b.parse::<i64>().ok())
        .ok_or_else(bad)?;
    let rev = match rev.strip_prefix('@').ok_or_else(bad)? {
        "head" => None,
        t => Some(Tid(parse_hex16(t).ok_or_else(bad)?)),
    };
    Ok(Pin { oid, blk, rev })
}

/// The server's reply to a watch request: `ok`, or `error <text>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The watch is set up (all pins acknowledged).
    Ok,
    /// The request failed; the link stays up.
    Error(String),
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Ok => f.write_str("ok"),
            Reply::Error(e) => write!(f, "error {e}"),
        }
    }
}

/// Parse a reply; `None` if it is neither form.
pub fn parse_reply(msg: &str) -> Option<Reply> {
    match msg {
        "ok" => Some(Reply::Ok),
        _ => msg
            .strip_prefix("error ")
            .map(|e| Reply::Error(e.to_owned())),
    }
}

/// The client's acknowledgement of a pin (exact string).
pub const ACK: &str = "ack";

/// Go's `%q` of a byte string that may not be UTF-8: as [`go_quote`], with
/// each byte that is not part of valid UTF-8 written `\xNN` (as Go does).
pub fn go_quote_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len() + 2);
    out.push('"');
    for chunk in b.utf8_chunks() {
        let q = go_quote(chunk.valid());
        out.push_str(&q[1..q.len() - 1]);
        for x in chunk.invalid() {
            out.push_str(&format!("\\x{x:02x}"));
        }
    }
    out.push('"');
    out
}

/// Quote a string as Go's `%q` does (`strconv.Quote`): the original's error
/// texts embed raw lines so. Exact for ASCII (`\"`, `\\`, the C escapes,
/// `\xNN` for other control bytes); beyond ASCII, control characters are
/// escaped as `\uNNNN` and everything else is kept, where Go also escapes
/// the few other non-printable runes.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => {
                if (c as u32) <= 0xffff {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `time.ParseDuration` (`300ms`, `1.5s`, `2h45m`, `-1s`; `0`): the
/// seconds, or Go's error text. For the Go server's `-pintimeout`.
pub fn parse_go_duration(s: &str) -> Result<f64, String> {
    let invalid = || format!("time: invalid duration {}", go_quote(s));
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0.0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0.0f64;
    while !rest.is_empty() {
        // [0-9]*(\.[0-9]*)?
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(invalid());
        }
        let v: f64 = num.parse().map_err(|_| invalid())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration {}", go_quote(s)));
        }
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    go_quote(u),
                    go_quote(s)
                ))
            }
        };
        total += v * scale;
        rest = &rest[unit_len..];
    }
    Ok(if neg { -total } else { total })
}

/// Go's `time.Duration.String()` of `d` (as in the original's error texts:
/// `1m0.5s`, `250ms`, `0s`).
pub fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    let frac = |v: u128, unit: u128| -> String {
        let (i, f) = (v / unit, v % unit);
        if f == 0 {
            return i.to_string();
        }
        let width = unit.ilog10() as usize;
        let s = format!("{f:0width$}");
        format!("{i}.{}", s.trim_end_matches('0'))
    };
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", frac(ns, 1_000));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", frac(ns, 1_000_000));
    }
    let secs_ns = ns % 60_000_000_000;
    let mins = ns / 60_000_000_000;
    let (h, m) = (mins / 60, mins % 60);
    let mut s = String::new();
    if h > 0 {
        s += &format!("{h}h");
    }
    if h > 0 || m > 0 {
        s += &format!("{m}m");
    }
    s += &format!("{}s", frac(secs_ns, 1_000_000_000));
    s
}

#[cfg(test)]
mod tests;
