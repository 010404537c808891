//! Table tests of `KeyRange`, `RangedKeySet` and `RangedMap`, written in
//! the text form (`{[1,3) [5,∞)}`, half-open in text, closed in code).
//! Every result is also `verify()`d and printed back to its expected text,
//! and every mutation is checked against its expected text both ways
//! (`==` on the parsed value and on the printed string).

use rangeset::{KeyRange, RangedKeySet, RangedMap};

const MIN: i64 = i64::MIN;
const MAX: i64 = i64::MAX;

fn s(text: &str) -> RangedKeySet {
    let s: RangedKeySet = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
    s.verify();
    s
}

fn m(text: &str) -> RangedMap<char> {
    let m: RangedMap<char> = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
    m.verify();
    m
}

fn r(text: &str) -> KeyRange {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn check_set(what: &str, got: &RangedKeySet, want: &str) {
    got.verify();
    assert_eq!(got.to_string(), want, "{what}");
    assert_eq!(*got, s(want), "{what}");
}

fn check_map(what: &str, got: &RangedMap<char>, want: &str) {
    got.verify();
    assert_eq!(got.to_string(), want, "{what}");
    assert_eq!(*got, m(want), "{what}");
}

#[test]
fn keyrange_basics() {
    assert_eq!(KeyRange::FULL.to_string(), "[-∞,∞)");
    assert_eq!(KeyRange::EMPTY.to_string(), "[0,0)");
    assert_eq!(KeyRange::point(MAX).to_string(), "[9223372036854775807,∞)");
    assert_eq!(
        KeyRange::point(MIN).to_string(),
        "[-∞,-9223372036854775807)"
    );
    assert_eq!(KeyRange::new(1, 2).to_string(), "[1,3)");
    assert_eq!(
        KeyRange::new(1, MAX - 1).to_string(),
        "[1,9223372036854775807)"
    );
    assert_eq!(r("[1,3)"), KeyRange::new(1, 2));
    assert_eq!(r("[-∞,∞)"), KeyRange::FULL);
    assert_eq!(r("[-inf,+inf)"), KeyRange::FULL);
    assert_eq!(r("[-9223372036854775808,∞)"), KeyRange::FULL);
    assert_eq!(r("[5,5)"), KeyRange::new(5, 4));
    assert!(r("[5,5)").is_empty());

    assert_eq!(KeyRange::FULL.len(), 1u128 << 64);
    assert_eq!(KeyRange::EMPTY.len(), 0);
    assert_eq!(KeyRange::new(7, 3).len(), 0);
    assert_eq!(KeyRange::point(MIN).len(), 1);
    assert_eq!(KeyRange::new(-1, 1).len(), 3);
    assert_eq!(KeyRange::default(), KeyRange::EMPTY);

    assert!(KeyRange::FULL.contains(MIN) && KeyRange::FULL.contains(MAX));
    assert!(!KeyRange::EMPTY.contains(0) && !KeyRange::EMPTY.contains(-1));
    assert!(KeyRange::new(1, 2).intersects(&KeyRange::new(2, 5)));
    assert!(!KeyRange::new(1, 2).intersects(&KeyRange::new(3, 5)));
    assert!(!KeyRange::FULL.intersects(&KeyRange::EMPTY));
    assert_eq!(
        KeyRange::new(1, 5).intersection(&KeyRange::new(3, MAX)),
        KeyRange::new(3, 5)
    );
    assert_eq!(
        KeyRange::new(1, 2).intersection(&KeyRange::new(3, 5)),
        KeyRange::EMPTY
    );
    assert!(KeyRange::FULL.covers(&KeyRange::point(MAX)));
    assert!(KeyRange::point(3).covers(&KeyRange::EMPTY));
    assert!(!KeyRange::new(1, 5).covers(&KeyRange::new(0, 5)));

    for bad in [
        "", "[1,3]", "(1,3)", "[1 3)", "[x,3)", "[1,y)", "[∞,3)", "[1,-∞)",
    ] {
        assert!(bad.parse::<KeyRange>().is_err(), "{bad:?} parsed");
    }
    // [x, MIN) would need hi = MIN - 1
    assert!("[1,-9223372036854775808)".parse::<KeyRange>().is_err());
}

#[test]
fn set_text_roundtrip_and_errors() {
    for t in [
        "{}",
        "{[1,3)}",
        "{[1,3) [5,∞)}",
        "{[-∞,∞)}",
        "{[-∞,-9223372036854775807) [9223372036854775807,∞)}",
        "{[-8,-7) [0,1) [7,8)}",
    ] {
        assert_eq!(s(t).to_string(), t);
    }
    // lenient whitespace, coalescing of touching ranges
    assert_eq!(
        s("  {  [1,2)\t[2,3)   [5,6) }").to_string(),
        "{[1,3) [5,6)}"
    );
    for bad in [
        "",
        "{",
        "[1,3)",
        "{[1,3)",
        "{[3,3)}",       // empty range
        "{[5,6) [1,2)}", // not increasing
        "{[1,5) [4,6)}", // overlap
        "{[1,3):a}",     // a map
        "{[1,3)[5,6)}",  // missing space
        "{[1,3) junk}",  // not a range
        "{[1,∞) [5,6)}", // below previous
    ] {
        assert!(bad.parse::<RangedKeySet>().is_err(), "{bad:?} parsed");
    }
    let err = "{[5,6) [1,2)}".parse::<RangedKeySet>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "parse \"[1,2)\": overlaps or is below the previous range [5,6)"
    );
}

#[test]
fn map_text_roundtrip_and_errors() {
    for t in [
        "{}",
        "{[1,3):a [3,4):b}",
        "{[-∞,0):x [0,∞):y}",
        "{[1,2):a [3,4):a}",
    ] {
        assert_eq!(m(t).to_string(), t);
    }
    assert_eq!(m("{[1,2):a [2,4):a}").to_string(), "{[1,4):a}");
    assert_eq!(format!("{:?}", m("{[1,2):a}")), "{[1,2):'a'}");
    for bad in [
        "{[1,3)}",
        "{[1,3):}",
        "{[1,3):ab}",
        "{[3,1):a}",
        "{[1,3):a [2,4):b}",
    ] {
        assert!(bad.parse::<RangedMap<char>>().is_err(), "{bad:?} parsed");
    }
    let nums: RangedMap<u64> = "{[0,10):7 [10,∞):18446744073709551615}".parse().unwrap();
    assert_eq!(nums.get(MAX), Some((&u64::MAX, KeyRange::new(10, MAX))));
}

#[test]
fn set_add_range() {
    // (set, range to add, result)
    let cases = [
        ("{}", "[1,3)", "{[1,3)}"),
        ("{}", "[3,3)", "{}"),                             // empty range: no-op
        ("{[1,3)}", "[3,5)", "{[1,5)}"),                   // touch right
        ("{[3,5)}", "[1,3)", "{[1,5)}"),                   // touch left
        ("{[1,3) [5,7)}", "[3,5)", "{[1,7)}"),             // fill the hole
        ("{[1,3) [6,7)}", "[4,5)", "{[1,3) [4,5) [6,7)}"), // alone in a hole
        ("{[1,3) [5,7) [9,11) [13,15)}", "[2,14)", "{[1,15)}"), // across many
        ("{[1,3) [5,7) [9,11)}", "[0,20)", "{[0,20)}"),    // cover all
        ("{[1,10)}", "[3,5)", "{[1,10)}"),                 // inside
        ("{[1,3) [5,7)}", "[5,7)", "{[1,3) [5,7)}"),       // same
        ("{[1,3) [5,7)}", "[6,9)", "{[1,3) [5,9)}"),       // extend right
        ("{[1,3) [5,7)}", "[0,2)", "{[0,3) [5,7)}"),       // extend left
        ("{}", "[-∞,∞)", "{[-∞,∞)}"),
        ("{[1,3)}", "[-∞,∞)", "{[-∞,∞)}"),
        ("{[-∞,0)}", "[0,∞)", "{[-∞,∞)}"),
        ("{[5,∞)}", "[-∞,5)", "{[-∞,∞)}"),
        ("{[5,∞)}", "[9223372036854775807,∞)", "{[5,∞)}"),
        (
            "{[5,9223372036854775807)}",
            "[9223372036854775807,∞)",
            "{[5,∞)}",
        ),
        (
            "{[5,9223372036854775806)}",
            "[9223372036854775807,∞)",
            "{[5,9223372036854775806) [9223372036854775807,∞)}",
        ),
        (
            "{[-9223372036854775807,0)}",
            "[-∞,-9223372036854775807)",
            "{[-∞,0)}",
        ),
        (
            "{[-9223372036854775806,0)}",
            "[-∞,-9223372036854775807)",
            "{[-∞,-9223372036854775807) [-9223372036854775806,0)}",
        ),
    ];
    for (set, add, want) in cases {
        let mut got = s(set);
        got.add_range(r(add));
        check_set(&format!("{set} + {add}"), &got, want);
    }
    let mut x = s("{[1,3)}");
    x.add(3);
    x.add(MAX);
    x.add(MIN);
    check_set(
        "add keys",
        &x,
        "{[-∞,-9223372036854775807) [1,4) [9223372036854775807,∞)}",
    );
}

#[test]
fn set_del_range() {
    // (set, range to delete, result)
    let cases = [
        ("{}", "[1,3)", "{}"),
        ("{[1,3)}", "[3,3)", "{[1,3)}"),
        ("{[1,10)}", "[3,5)", "{[1,3) [5,10)}"), // split in the middle
        ("{[1,10)}", "[1,5)", "{[5,10)}"),       // cut left
        ("{[1,10)}", "[5,10)", "{[1,5)}"),       // cut right
        ("{[1,10)}", "[0,20)", "{}"),
        ("{[1,3) [5,7) [9,11) [13,15)}", "[2,14)", "{[1,2) [14,15)}"),
        ("{[1,3) [5,7) [9,11)}", "[3,5)", "{[1,3) [5,7) [9,11)}"), // in a hole
        ("{[1,3) [5,7)}", "[20,30)", "{[1,3) [5,7)}"),
        ("{[-∞,∞)}", "[0,1)", "{[-∞,0) [1,∞)}"),
        ("{[-∞,∞)}", "[-∞,0)", "{[0,∞)}"),
        ("{[-∞,∞)}", "[0,∞)", "{[-∞,0)}"),
        (
            "{[-∞,∞)}",
            "[9223372036854775807,∞)",
            "{[-∞,9223372036854775807)}",
        ),
        (
            "{[-∞,∞)}",
            "[-∞,-9223372036854775807)",
            "{[-9223372036854775807,∞)}",
        ),
        ("{[-∞,∞)}", "[-∞,∞)", "{}"),
    ];
    for (set, del, want) in cases {
        let mut got = s(set);
        got.del_range(r(del));
        check_set(&format!("{set} - {del}"), &got, want);
    }
    let mut x = s("{[-∞,∞)}");
    x.del(MAX);
    x.del(MIN);
    x.del(0);
    check_set(
        "del keys",
        &x,
        "{[-9223372036854775807,0) [1,9223372036854775807)}",
    );
}

#[test]
fn set_queries() {
    let x = s("{[1,3) [5,7) [9,∞)}");
    // (range, has_range, intersects_range)
    let cases = [
        ("[1,3)", true, true),
        ("[1,4)", false, true),
        ("[0,1)", false, false),
        ("[3,5)", false, false),
        ("[2,6)", false, true),
        ("[6,7)", true, true),
        ("[9,∞)", true, true),
        ("[100,∞)", true, true),
        ("[-∞,∞)", false, true),
        ("[-∞,1)", false, false),
        ("[4,4)", true, false), // empty: has, never intersects
    ];
    for (q, has, int) in cases {
        assert_eq!(x.has_range(r(q)), has, "{x} has_range {q}");
        assert_eq!(x.intersects_range(r(q)), int, "{x} intersects_range {q}");
    }
    assert!(x.has(1) && x.has(2) && !x.has(3) && x.has(MAX) && !x.has(MIN));
    assert_eq!(x.range_of(6), Some(KeyRange::new(5, 6)));
    assert_eq!(x.range_of(MAX), Some(KeyRange::new(9, MAX)));
    assert_eq!(x.range_of(4), None);
    assert!(s("{}").has_range(KeyRange::EMPTY));
    assert!(!s("{}").intersects_range(KeyRange::FULL));
    assert_eq!(x.len_ranges(), 3);
    assert_eq!(
        x.ranges().rev().collect::<Vec<_>>(),
        [
            KeyRange::new(9, MAX),
            KeyRange::new(5, 6),
            KeyRange::new(1, 2)
        ]
    );
    let mut y = x.clone();
    assert!(!y.is_empty());
    y.clear();
    assert!(y.is_empty() && y == RangedKeySet::new());
}

#[test]
fn set_algebra() {
    // (a, b, a ∪ b, a \ b, a ∩ b)
    let cases = [
        ("{}", "{}", "{}", "{}", "{}"),
        ("{[1,3)}", "{}", "{[1,3)}", "{[1,3)}", "{}"),
        ("{}", "{[1,3)}", "{[1,3)}", "{}", "{}"),
        ("{[1,3)}", "{[3,5)}", "{[1,5)}", "{[1,3)}", "{}"),
        ("{[1,5)}", "{[2,3)}", "{[1,5)}", "{[1,2) [3,5)}", "{[2,3)}"),
        (
            "{[1,3) [5,7) [9,11)}",
            "{[2,10)}",
            "{[1,11)}",
            "{[1,2) [10,11)}",
            "{[2,3) [5,7) [9,10)}",
        ),
        (
            "{[1,3) [5,7) [9,11) [13,15) [17,19)}",
            "{[3,5) [7,9) [11,13) [15,17) [19,21)}",
            "{[1,21)}",
            "{[1,3) [5,7) [9,11) [13,15) [17,19)}",
            "{}",
        ),
        (
            "{[0,10) [20,30) [40,50) [60,70) [80,90)}",
            "{[5,25) [45,46) [65,85) [95,99) [100,101)}",
            "{[0,30) [40,50) [60,90) [95,99) [100,101)}",
            "{[0,5) [25,30) [40,45) [46,50) [60,65) [85,90)}",
            "{[5,10) [20,25) [45,46) [65,70) [80,85)}",
        ),
        (
            "{[-∞,∞)}",
            "{[0,1)}",
            "{[-∞,∞)}",
            "{[-∞,0) [1,∞)}",
            "{[0,1)}",
        ),
        (
            "{[-∞,0) [5,∞)}",
            "{[-∞,-9223372036854775807) [9223372036854775807,∞)}",
            "{[-∞,0) [5,∞)}",
            "{[-9223372036854775807,0) [5,9223372036854775807)}",
            "{[-∞,-9223372036854775807) [9223372036854775807,∞)}",
        ),
        (
            "{[-∞,0) [1,2) [3,4) [5,6) [7,8) [9,∞)}",
            "{[0,1) [2,3) [4,5) [6,7) [8,9)}",
            "{[-∞,∞)}",
            "{[-∞,0) [1,2) [3,4) [5,6) [7,8) [9,∞)}",
            "{}",
        ),
    ];
    for (a, b, u, d, i) in cases {
        let (sa, sb) = (s(a), s(b));
        check_set(&format!("{a} ∪ {b}"), &sa.union(&sb), u);
        check_set(&format!("{b} ∪ {a}"), &sb.union(&sa), u);
        check_set(&format!("{a} \\ {b}"), &sa.difference(&sb), d);
        check_set(&format!("{a} ∩ {b}"), &sa.intersection(&sb), i);
        check_set(&format!("{b} ∩ {a}"), &sb.intersection(&sa), i);

        let mut x = sa.clone();
        x.union_in_place(&sb);
        check_set(&format!("{a} ∪= {b}"), &x, u);
        let mut x = sb.clone();
        x.union_in_place(&sa);
        check_set(&format!("{b} ∪= {a}"), &x, u);
        let mut x = sa.clone();
        x.difference_in_place(&sb);
        check_set(&format!("{a} \\= {b}"), &x, d);
        let mut x = sa.clone();
        x.intersection_in_place(&sb);
        check_set(&format!("{a} ∩= {b}"), &x, i);
    }
}

#[test]
fn set_from_iter() {
    let x: RangedKeySet = [3, 1, 2, 7, MAX].into_iter().collect();
    check_set("from keys", &x, "{[1,4) [7,8) [9223372036854775807,∞)}");
    let y: RangedKeySet = [KeyRange::new(5, 6), KeyRange::EMPTY, KeyRange::new(1, 4)]
        .into_iter()
        .collect();
    check_set("from ranges", &y, "{[1,7)}");
}

#[test]
fn map_set_range() {
    // (map, range:value to set, result)
    let cases = [
        ("{}", "[1,3)", 'a', "{[1,3):a}"),
        ("{}", "[3,3)", 'a', "{}"),
        ("{[1,3):a}", "[3,5)", 'a', "{[1,5):a}"), // coalesce right
        ("{[1,3):a}", "[3,5)", 'b', "{[1,3):a [3,5):b}"), // touch, no coalesce
        ("{[3,5):a}", "[1,3)", 'a', "{[1,5):a}"), // coalesce left
        ("{[1,3):a [5,7):a}", "[3,5)", 'a', "{[1,7):a}"), // both sides
        ("{[1,3):a [5,7):b}", "[3,5)", 'a', "{[1,5):a [5,7):b}"),
        ("{[1,3):a [5,7):b}", "[3,5)", 'b', "{[1,3):a [3,7):b}"),
        (
            "{[1,3):a [5,7):b}",
            "[3,5)",
            'c',
            "{[1,3):a [3,5):c [5,7):b}",
        ),
        ("{[1,10):a}", "[3,5)", 'b', "{[1,3):a [3,5):b [5,10):a}"), // split
        ("{[1,10):a}", "[3,5)", 'a', "{[1,10):a}"),
        ("{[1,10):a}", "[1,5)", 'b', "{[1,5):b [5,10):a}"),
        ("{[1,10):a}", "[5,10)", 'b', "{[1,5):a [5,10):b}"),
        // overwrite across many, cutting both ends
        (
            "{[1,3):a [3,5):b [5,7):c [7,9):d [9,11):e}",
            "[2,10)",
            'x',
            "{[1,2):a [2,10):x [10,11):e}",
        ),
        // overwrite across many, absorbing equal ends and neighbours
        (
            "{[0,1):x [1,3):a [3,5):x [5,7):c [7,9):x [10,11):x}",
            "[2,8)",
            'x',
            "{[0,1):x [1,2):a [2,9):x [10,11):x}",
        ),
        ("{[1,3):a [3,5):b [5,7):a}", "[3,5)", 'a', "{[1,7):a}"),
        ("{[1,3):a [4,5):b [6,7):a}", "[3,6)", 'a', "{[1,7):a}"),
        ("{}", "[-∞,∞)", 'z', "{[-∞,∞):z}"),
        ("{[-∞,∞):z}", "[0,1)", 'y', "{[-∞,0):z [0,1):y [1,∞):z}"),
        ("{[-∞,∞):z}", "[-∞,0)", 'y', "{[-∞,0):y [0,∞):z}"),
        (
            "{[-∞,∞):z}",
            "[9223372036854775807,∞)",
            'y',
            "{[-∞,9223372036854775807):z [9223372036854775807,∞):y}",
        ),
        ("{[-∞,0):a [0,∞):b}", "[-5,5)", 'a', "{[-∞,5):a [5,∞):b}"),
        ("{[-∞,0):a [0,∞):b}", "[-∞,∞)", 'b', "{[-∞,∞):b}"),
    ];
    for (map, set, v, want) in cases {
        let mut got = m(map);
        got.set_range(r(set), v);
        check_map(&format!("{map} + {set}:{v}"), &got, want);
    }
    let mut x = m("{[1,3):a}");
    x.set(3, 'a');
    x.set(MAX, 'b');
    x.set(MAX - 1, 'b');
    check_map("set keys", &x, "{[1,4):a [9223372036854775806,∞):b}");
}

#[test]
fn map_del_range() {
    let cases = [
        ("{[1,10):a}", "[3,5)", "{[1,3):a [5,10):a}"),
        ("{[1,3):a [3,5):b [5,7):c}", "[2,6)", "{[1,2):a [6,7):c}"),
        ("{[1,3):a [3,5):b [5,7):c}", "[3,5)", "{[1,3):a [5,7):c}"),
        ("{[-∞,0):a [0,∞):b}", "[-1,1)", "{[-∞,-1):a [1,∞):b}"),
        ("{[-∞,0):a [0,∞):b}", "[-∞,∞)", "{}"),
    ];
    for (map, del, want) in cases {
        let mut got = m(map);
        got.del_range(r(del));
        check_map(&format!("{map} - {del}"), &got, want);
    }
    let mut x = m("{[1,5):a}");
    x.del(2);
    check_map("del key", &x, "{[1,2):a [3,5):a}");
}

#[test]
fn map_queries() {
    let x = m("{[-∞,0):a [0,3):b [5,∞):a}");
    assert_eq!(x.get(MIN), Some((&'a', KeyRange::new(MIN, -1))));
    assert_eq!(x.get(-1), Some((&'a', KeyRange::new(MIN, -1))));
    assert_eq!(x.get(0), Some((&'b', KeyRange::new(0, 2))));
    assert_eq!(x.get(3), None);
    assert_eq!(x.get(MAX), Some((&'a', KeyRange::new(5, MAX))));
    assert!(x.has(2) && !x.has(4));
    assert!(
        x.has_range(r("[-∞,3)")),
        "touching ranges of different values cover"
    );
    assert!(!x.has_range(r("[-∞,4)")));
    assert!(x.has_range(r("[4,4)")));
    assert!(x.intersects_range(r("[3,6)")));
    assert!(!x.intersects_range(r("[3,5)")));
    assert!(!x.intersects_range(r("[4,4)")));
    assert_eq!(
        x.ranges().map(|(r, v)| (r, *v)).collect::<Vec<_>>(),
        [
            (KeyRange::new(MIN, -1), 'a'),
            (KeyRange::new(0, 2), 'b'),
            (KeyRange::new(5, MAX), 'a')
        ]
    );
    assert_eq!((&x).into_iter().len(), 3);
    assert_eq!(x.len_ranges(), 3);
    let y: RangedMap<char> = [(r("[0,5)"), 'a'), (r("[2,3)"), 'b')].into_iter().collect();
    check_map("from iter", &y, "{[0,2):a [2,3):b [3,5):a}");
    let mut z = y.clone();
    z.clear();
    assert!(z.is_empty() && z == RangedMap::default());
}

/// The concurrency contract: plain data, `Send + Sync` as `V` is.
#[test]
fn send_sync() {
    fn plain<T: Send + Sync + Clone>() {}
    plain::<KeyRange>();
    plain::<RangedKeySet>();
    plain::<RangedMap<u64>>();
    plain::<rangeset::SetRanges<'static>>();
    plain::<rangeset::MapRanges<'static, u64>>();
    plain::<rangeset::ParseError>();
}
