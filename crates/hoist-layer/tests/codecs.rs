//! Compression detection and round trips, and hash-while-streaming.

use std::io::{Read, Write};

use hoist_layer::{
    Compression, HashingReader, HashingWriter, compress, compress_gzip, compress_zstd, decompress,
    sniff,
};
use hoist_oci::Digest;

fn sample() -> Vec<u8> {
    (0..300_000u32)
        .flat_map(|i| (i % 1000).to_le_bytes())
        .collect()
}

fn compressed(data: &[u8], compression: Compression) -> Vec<u8> {
    let mut enc = compress(Vec::new(), compression, 6).unwrap();
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[test]
fn every_codec_is_detected_and_round_trips() {
    let data = sample();
    for compression in [
        Compression::None,
        Compression::Gzip,
        Compression::Zstd,
        Compression::Bzip2,
        Compression::Xz,
    ] {
        let blob = compressed(&data, compression);
        assert_eq!(Compression::detect(&blob), compression, "{compression:?}");
        let (sniffed, mut replay) = sniff(blob.as_slice()).unwrap();
        assert_eq!(sniffed, compression);
        let mut replayed = Vec::new();
        replay.read_to_end(&mut replayed).unwrap();
        assert_eq!(replayed, blob, "sniff must replay every byte");
        let mut out = Vec::new();
        decompress(std::io::Cursor::new(blob))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data, "{compression:?}");
    }
}

#[test]
fn short_and_empty_inputs_are_plain() {
    assert_eq!(Compression::detect(b""), Compression::None);
    assert_eq!(Compression::detect(&[0x1f]), Compression::None);
    let mut out = Vec::new();
    decompress(std::io::Cursor::new(vec![0x1f]))
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, [0x1f]);
}

/// A reader that hands out one byte per call, as pipes may.
struct Trickle<R>(R);
impl<R: Read> Read for Trickle<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(1);
        self.0.read(&mut buf[..n])
    }
}

#[test]
fn detection_survives_short_reads() {
    let blob = compressed(b"hello", Compression::Xz);
    let mut out = Vec::new();
    decompress(Trickle(std::io::Cursor::new(blob)))
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, b"hello");
}

#[test]
fn multi_member_gzip_is_read_to_the_end() {
    let mut blob = Vec::new();
    for part in [b"first ".as_slice(), b"second"] {
        let mut enc = compress_gzip(Vec::new(), 6);
        enc.write_all(part).unwrap();
        blob.extend(enc.finish().unwrap());
    }
    let mut out = Vec::new();
    decompress(std::io::Cursor::new(blob))
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, b"first second");
}

#[test]
fn gzip_and_zstd_are_deterministic() {
    let data = sample();
    let gz = |level| {
        let mut enc = compress_gzip(Vec::new(), level);
        enc.write_all(&data).unwrap();
        enc.finish().unwrap()
    };
    assert_eq!(gz(6), gz(6));
    let zst = |threads| {
        let mut enc = compress_zstd(Vec::new(), 3, threads).unwrap();
        enc.write_all(&data).unwrap();
        enc.finish().unwrap()
    };
    let multi = zst(2);
    assert_eq!(multi, zst(2));
    let mut out = Vec::new();
    decompress(std::io::Cursor::new(multi))
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, data);
}

#[test]
fn hashing_wrappers_give_diff_id_and_blob_digest_in_one_pass() {
    let data = sample();
    // tar bytes → hash (diff_id) → gzip → hash (blob digest) → sink
    let blob_hasher = HashingWriter::new(Vec::new());
    let mut diff_hasher = HashingWriter::new(compress_gzip(blob_hasher, 1));
    diff_hasher.write_all(&data).unwrap();
    let (encoder, diff_id, len) = diff_hasher.finish();
    let (blob, blob_digest, blob_len) = encoder.finish().unwrap().finish();
    assert_eq!(diff_id, Digest::sha256_of(&data));
    assert_eq!(len, data.len() as u64);
    assert_eq!(blob_digest, Digest::sha256_of(&blob));
    assert_eq!(blob_len, blob.len() as u64);

    let mut reader = HashingReader::new(blob.as_slice());
    let mut out = Vec::new();
    decompress(std::io::Cursor::new(blob.clone()))
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    std::io::copy(&mut reader, &mut std::io::sink()).unwrap();
    assert_eq!(reader.digest(), blob_digest);
    assert_eq!(reader.len(), blob.len() as u64);
    assert_eq!(out, data);
}
