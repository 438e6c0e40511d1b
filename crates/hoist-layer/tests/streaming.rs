//! Layers stream: applying and writing a big file keeps peak memory flat.
//! (Its own test binary, so no other test's allocations share the process.)

mod common;

use std::io::{self, Read};

use common::*;
use hoist_layer::{ApplyOptions, HashingReader, WriteOptions, apply_layer, write_tree};

const SIZE: u64 = 96 * 1024 * 1024;

/// Peak resident set size of this process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_big_layer_streams_through_fixed_buffers() {
    require_root();
    let mut header = tar::Header::new_ustar();
    header.as_mut_bytes()[..3].copy_from_slice(b"big");
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(SIZE);
    header.set_cksum();
    let tar = io::Cursor::new(header.as_bytes().to_vec())
        .chain(io::repeat(0x5a).take(SIZE))
        .chain(io::Cursor::new(vec![0u8; 1024]));

    let before = peak_rss_kib();
    let root = tempfile::tempdir().unwrap();
    let mut hashing = HashingReader::new(tar);
    apply_layer(&mut hashing, root.path(), &ApplyOptions::default()).unwrap();
    assert_eq!(
        hashing.len(),
        512 + SIZE + 1024,
        "the whole stream is consumed"
    );

    let summary = write_tree(root.path(), io::sink(), &WriteOptions::default()).unwrap();
    assert_eq!(summary.size, 512 + SIZE + 1024);

    let grown_mib = (peak_rss_kib() - before) / 1024;
    assert!(
        grown_mib < 32,
        "peak memory grew by {grown_mib} MiB for a {} MiB layer",
        SIZE >> 20
    );
}
