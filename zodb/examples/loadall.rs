//! Load every block of a ZBigFile and report the speed (a profiling aid for
//! the load bench): `loadall <Data.fs> <oid> [passes]`. Every block's bytes
//! are read once, as the bench does.
use std::time::Instant;
use zodb::zbigfile::ZBigFile;
use zodb::Storage;

/// Read every byte once, as the load bench does.
fn fold(b: &[u8]) -> u64 {
    b.chunks_exact(8).fold(0u64, |a, w| {
        a.wrapping_add(u64::from_le_bytes(w.try_into().unwrap()))
    })
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 3 {
        eprintln!("usage: loadall <Data.fs> <oid> [passes]");
        std::process::exit(2);
    }
    let oid = a[2].parse().expect("oid");
    let passes: usize = a.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    for _ in 0..passes {
        // a fresh storage per pass, as the bench does (its mapping's pages
        // fault in again)
        let stor = zodb::fs1::FileStorage::open(&a[1]).expect("open");
        let at = stor.last_tid().unwrap();
        let t = Instant::now();
        let f = ZBigFile::load(&stor, oid, at).unwrap();
        let n = (f.size(&stor, at).unwrap() / f.blksize) as i64;
        for b in 0..n {
            let blk = f.load_blk(&stor, b, at).unwrap();
            std::hint::black_box(fold(&blk.data));
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "{:.0} MiB/s",
            (n as u64 * f.blksize) as f64 / (1 << 20) as f64 / s
        );
    }
}
