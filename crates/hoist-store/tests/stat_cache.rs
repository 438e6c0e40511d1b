//! The stat cache: a digest is returned only for a path whose recorded stat is the same now.

use hoist_oci::Digest;
use hoist_store::{FileStat, Store};

fn stat(n: u64) -> FileStat {
    FileStat {
        dev: 1,
        ino: n,
        size: n * 10,
        mtime_ns: 1_000 + n as i64,
        ctime_ns: 2_000 + n as i64,
    }
}

fn digest(n: u8) -> Digest {
    Digest::from_sha256([n; 32])
}

#[test]
fn lookup_answers_each_path_in_the_order_asked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let base = "/ctx";
    let recorded: Vec<(String, FileStat, Digest)> =
        [("a", 1), ("b/c", 2), ("b/c.txt", 3), ("b.txt", 4), ("z", 5)]
            .iter()
            .map(|(p, n)| (format!("{base}/{p}"), stat(*n), digest(*n as u8)))
            .collect();
    store
        .stat_record(recorded.iter().map(|(p, s, d)| (p.as_str(), s, d)))
        .unwrap();
    // Rows outside the asked paths' common prefix must not confuse the scan.
    store
        .stat_record([("/other/a", &stat(1), &digest(9))])
        .unwrap();

    let mut changed = stat(3);
    changed.mtime_ns += 1;
    let asked = [
        (format!("{base}/z"), stat(5)),
        (format!("{base}/b/c.txt"), changed),
        (format!("{base}/new"), stat(6)),
        (format!("{base}/a"), stat(1)),
        (format!("{base}/b.txt"), stat(4)),
        (format!("{base}/b/c"), stat(2)),
        (format!("{base}/a"), stat(1)),
    ];
    let found = store.stat_lookup(&asked).unwrap();
    assert_eq!(
        found,
        [
            Some(digest(5)),
            None,
            None,
            Some(digest(1)),
            Some(digest(4)),
            Some(digest(2)),
            Some(digest(1)),
        ]
    );
    assert_eq!(
        store.stat_lookup(&[]).unwrap(),
        Vec::<Option<Digest>>::new()
    );
}
