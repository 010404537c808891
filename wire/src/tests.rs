//! Table tests with the original's exact texts, and round trips.

use super::*;
use proptest::prelude::*;

fn oid(x: u64) -> Oid {
    Oid(x)
}

#[test]
fn frames() {
    assert_eq!(
        parse_frame("1 watch 0000000000000001 @0285cbac3851eb99"),
        Ok(Frame {
            stream: 1,
            msg: "watch 0000000000000001 @0285cbac3851eb99"
        })
    );
    assert_eq!(parse_frame("0 "), Ok(Frame { stream: 0, msg: "" }));
    // the original server's parser takes leading zeros; we never write them
    assert_eq!(parse_frame("007 ack").unwrap().stream, 7);
    assert_eq!(format_frame(7, "ack"), "7 ack\n");
    assert_eq!(format_frame(u64::MAX, "bye"), "18446744073709551615 bye\n");
    // a message may contain spaces: only the first one splits
    assert_eq!(parse_frame("2 pin a b c").unwrap().msg, "pin a b c");
}

#[test]
fn bad_frames_have_the_originals_texts() {
    let e = parse_frame("hello").unwrap_err();
    assert_eq!(e.to_string(), r#"error: invalid frame: "hello\n""#);
    let e = parse_frame("x1 ack").unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"error: invalid frame: "x1 ack\n" (invalid stream)"#
    );
    for bad in [
        " ack",
        "-1 ack",
        "+1 ack",
        "18446744073709551616 ack",
        "1\tack",
    ] {
        assert!(parse_frame(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn requests() {
    assert_eq!(parse_request("bye"), Ok(Request::Bye));
    assert_eq!(parse_request("option early-pins"), Ok(Request::EarlyPins));
    assert_eq!(Request::EarlyPins.to_string(), "option early-pins");
    assert_eq!(
        parse_request("option x").unwrap_err().to_string(),
        r#"unknown option: "x""#
    );
    assert_eq!(
        parse_request("watch 0000000000000abc @0285cbac3851eb99"),
        Ok(Request::Watch {
            oid: oid(0xabc),
            at: Some(Tid(0x0285cbac3851eb99))
        })
    );
    assert_eq!(
        parse_request("watch 0000000000000abc -"),
        Ok(Request::Watch {
            oid: oid(0xabc),
            at: None
        })
    );
    // the original's quirk: the invalid tid acts as "-"
    assert_eq!(
        parse_request("watch 0000000000000abc @ffffffffffffffff"),
        Ok(Request::Watch {
            oid: oid(0xabc),
            at: None
        })
    );
    // the original server takes upper-case hex too
    assert!(parse_request("watch 0000000000000ABC @0285CBAC3851EB99").is_ok());
}

#[test]
fn bad_requests_have_the_originals_texts() {
    let cases = [
        ("hello", r#"bad watch: not a watch request: "hello""#),
        ("watch", r#"bad watch: not a watch request: "watch""#),
        (
            "watch 0000000000000001",
            "bad watch: expected 2 arguments, got 1",
        ),
        (
            "watch 0000000000000001 @0285cbac3851eb99 x",
            "bad watch: expected 2 arguments, got 3",
        ),
        // single-space splitting: a double space makes an empty argument
        (
            "watch 0000000000000001  @0285cbac3851eb99",
            "bad watch: expected 2 arguments, got 3",
        ),
        ("watch 1 @0285cbac3851eb99", "bad watch: invalid oid"),
        (
            "watch 000000000000000g @0285cbac3851eb99",
            "bad watch: invalid oid",
        ),
        (
            "watch 0000000000000001 0285cbac3851eb99",
            "bad watch: invalid at",
        ),
        ("watch 0000000000000001 @head", "bad watch: invalid at"),
        (
            "watch 0000000000000001 @0285cbac3851eb9",
            "bad watch: invalid at",
        ),
    ];
    for (msg, want) in cases {
        let e = parse_request(msg).unwrap_err();
        assert_eq!(e.to_string(), want, "{msg:?}");
    }
}

#[test]
fn pins_and_replies() {
    let p = Pin {
        oid: oid(0x1234),
        blk: 7,
        rev: Some(Tid(0x0285cbac3851eb99)),
    };
    assert_eq!(p.to_string(), "pin 0000000000001234 #7 @0285cbac3851eb99");
    assert_eq!(parse_pin(&p.to_string()), Ok(p));
    let u = Pin { rev: None, ..p };
    assert_eq!(u.to_string(), "pin 0000000000001234 #7 @head");
    assert_eq!(parse_pin(&u.to_string()), Ok(u));
    for bad in [
        "pin 0000000000001234 #7",
        "pin 0000000000001234 7 @head",
        "pin 0000000000001234 # @head",
        "pin 0000000000001234 #+7 @head",
        "pin 1234 #7 @head",
        "pin 0000000000001234 #7 @hea",
        "pin 0000000000001234 #7 @head x",
        "pinx 0000000000001234 #7 @head",
    ] {
        assert!(parse_pin(bad).is_err(), "{bad:?}");
    }
    assert_eq!(parse_reply("ok"), Some(Reply::Ok));
    assert_eq!(
        parse_reply("error bad watch: invalid oid"),
        Some(Reply::Error("bad watch: invalid oid".into()))
    );
    assert_eq!(parse_reply("okay"), None);
    assert_eq!(Reply::Error("x y".into()).to_string(), "error x y");
    assert_eq!(ACK, "ack");
}

#[test]
fn go_quoting() {
    // what Go's strconv.Quote gives for these
    assert_eq!(go_quote("a b"), r#""a b""#);
    assert_eq!(go_quote("a\nb"), r#""a\nb""#);
    assert_eq!(go_quote("\"\\"), r#""\"\\""#);
    assert_eq!(go_quote("\0\x01\x7f"), r#""\x00\x01\x7f""#);
    assert_eq!(go_quote("\t\r\x0b\x0c\x07\x08"), r#""\t\r\v\f\a\b""#);
    assert_eq!(go_quote("héllo"), "\"héllo\"");
    assert_eq!(go_quote("\u{85}"), r#""\u0085""#);
}

fn arb_tid() -> impl Strategy<Value = Option<Tid>> {
    prop_oneof![Just(None), (0..u64::MAX).prop_map(|t| Some(Tid(t)))]
}

proptest! {
    #[test]
    fn request_round_trip(o in any::<u64>(), at in arb_tid(), bye in any::<bool>()) {
        let r = if bye { Request::Bye } else { Request::Watch { oid: Oid(o), at } };
        prop_assert_eq!(parse_request(&r.to_string()), Ok(r));
    }

    #[test]
    fn pin_round_trip(o in any::<u64>(), blk in any::<i64>(), rev in arb_tid()) {
        let p = Pin { oid: Oid(o), blk, rev };
        let line = format_frame(2, &p.to_string());
        prop_assert!(line.len() <= MAX_LINE);
        let f = parse_frame(line.strip_suffix('\n').unwrap()).unwrap();
        prop_assert_eq!(f.stream, 2);
        prop_assert_eq!(parse_pin(f.msg), Ok(p));
    }

    #[test]
    fn frame_round_trip(stream in any::<u64>(), msg in "[^\n]{0,60}") {
        let line = format_frame(stream, &msg);
        let f = parse_frame(line.strip_suffix('\n').unwrap()).unwrap();
        prop_assert_eq!(f, Frame { stream, msg: &msg });
    }

    #[test]
    fn parsers_never_panic(s in "\\PC{0,80}") {
        let _ = parse_frame(&s);
        let _ = parse_request(&s);
        let _ = parse_pin(&s);
        let _ = parse_reply(&s);
        let _ = go_quote(&s);
    }
}

#[test]
fn frames_of_any_bytes() {
    assert_eq!(
        parse_frame_bytes(b"12 \xff\xfe"),
        Ok((12, &b"\xff\xfe"[..]))
    );
    let e = parse_frame_bytes(b"\xff\xfe").unwrap_err();
    assert_eq!(e.to_string(), r#"error: invalid frame: "\xff\xfe\n""#);
    let e = parse_frame_bytes(b"1\xff x").unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"error: invalid frame: "1\xff x\n" (invalid stream)"#
    );
    // valid UTF-8 around invalid bytes is quoted as go_quote does
    assert_eq!(
        go_quote_bytes(b"a\"\xc3\xa9\xff\n"),
        "\"a\\\"\u{e9}\\xff\\n\""
    );
    assert_eq!(go_quote_bytes(b"ok"), go_quote("ok"));
}

#[test]
fn durations_as_go() {
    let t = |ns: u64| go_duration(Duration::from_nanos(ns));
    assert_eq!(t(0), "0s");
    assert_eq!(t(999), "999ns");
    assert_eq!(t(1_500), "1.5µs");
    assert_eq!(t(250_000_000), "250ms");
    assert_eq!(t(1_000_000_000), "1s");
    assert_eq!(t(60_500_000_000), "1m0.5s");
    assert_eq!(t(3_723_000_000_000), "1h2m3s");
    assert_eq!(t(90_000_000_000), "1m30s");
}

#[test]
fn go_durations_parse() {
    let ok = |s: &str| parse_go_duration(s).unwrap();
    assert_eq!(ok("30s"), 30.0);
    assert_eq!(ok("1.5s"), 1.5);
    assert_eq!(ok("100ms"), 0.1);
    assert_eq!(ok("3.0s"), 3.0);
    assert_eq!(ok("2h45m"), 9900.0);
    assert_eq!(ok("1m0.5s"), 60.5);
    assert_eq!(ok("0"), 0.0);
    assert_eq!(ok("-1s"), -1.0);
    assert!((ok("250us") - 0.00025).abs() < 1e-12);
    assert!((ok("250\u{b5}s") - 0.00025).abs() < 1e-12);
    assert_eq!(ok(".5s"), 0.5);
    assert_eq!(
        parse_go_duration("30").unwrap_err(),
        r#"time: missing unit in duration "30""#
    );
    assert_eq!(
        parse_go_duration("3x").unwrap_err(),
        r#"time: unknown unit "x" in duration "3x""#
    );
    for bad in ["", "s", ".s", "1..2s", "-", "x1s"] {
        assert!(parse_go_duration(bad).is_err(), "{bad:?}");
    }
}
