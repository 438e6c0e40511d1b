//! Layer codecs: detection by magic bytes, auto-detecting decompression, and encoders.
//!
//! Gzip is decoded with `MultiGzDecoder` because parallel gzip writers (and Go's reader)
//! use multi-member streams, which a single-member decoder silently truncates.

use std::io::{self, Chain, Cursor, Read, Write};

/// A layer's compression, as told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar (or anything without a known magic).
    None,
    Gzip,
    Zstd,
    Bzip2,
    Xz,
}

/// Longest magic we look at (xz).
const MAGIC_LEN: usize = 6;

impl Compression {
    /// Detects the compression from a stream's first bytes; shorter prefixes than the magic
    /// read as [`Compression::None`].
    #[must_use]
    pub fn detect(prefix: &[u8]) -> Self {
        if prefix.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else if prefix.starts_with(b"BZh") {
            Self::Bzip2
        } else if prefix.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Self::Xz
        } else {
            Self::None
        }
    }

    /// Wraps `reader` (positioned at the start of the compressed stream) in this decoder.
    pub fn decoder<'a, R: Read + 'a>(self, reader: R) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Self::None => Box::new(reader),
            Self::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
            Self::Zstd => Box::new(zstd::stream::read::Decoder::new(reader)?),
            Self::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(reader)),
            Self::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(reader)),
        })
    }
}

/// A reader that replays the sniffed prefix before the rest of the stream.
pub type Sniffed<R> = Chain<Cursor<Vec<u8>>, R>;

/// Reads just enough of `reader` to detect its compression and hands back a reader that
/// still yields every byte.
pub fn sniff<R: Read>(mut reader: R) -> io::Result<(Compression, Sniffed<R>)> {
    let mut prefix = Vec::with_capacity(MAGIC_LEN);
    // A single read may return fewer bytes than the magic; keep going until EOF.
    (&mut reader)
        .take(MAGIC_LEN as u64)
        .read_to_end(&mut prefix)?;
    let compression = Compression::detect(&prefix);
    Ok((compression, Cursor::new(prefix).chain(reader)))
}

/// Detects the compression of `reader` and returns the decompressed stream.
pub fn decompress<'a, R: Read + 'a>(reader: R) -> io::Result<Box<dyn Read + 'a>> {
    let (compression, reader) = sniff(reader)?;
    compression.decoder(reader)
}

/// A compressing writer; call [`Encoder::finish`] to write the trailer and get the writer back.
pub struct Encoder<W: Write>(Inner<W>);

enum Inner<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Bzip2(bzip2::write::BzEncoder<W>),
    Xz(xz2::write::XzEncoder<W>),
}

impl<W: Write> Encoder<W> {
    /// Ends the stream and returns the inner writer (not flushed beyond the codec's trailer).
    pub fn finish(self) -> io::Result<W> {
        match self.0 {
            Inner::None(w) => Ok(w),
            Inner::Gzip(e) => e.finish(),
            Inner::Zstd(e) => e.finish(),
            Inner::Bzip2(e) => e.finish(),
            Inner::Xz(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Inner::None(w) => w.write(buf),
            Inner::Gzip(e) => e.write(buf),
            Inner::Zstd(e) => e.write(buf),
            Inner::Bzip2(e) => e.write(buf),
            Inner::Xz(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.0 {
            Inner::None(w) => w.flush(),
            Inner::Gzip(e) => e.flush(),
            Inner::Zstd(e) => e.flush(),
            Inner::Bzip2(e) => e.flush(),
            Inner::Xz(e) => e.flush(),
        }
    }
}

/// A single-member gzip writer at `level` (0–9). The header carries mtime 0 and OS 255
/// ("unknown"), as Go's writer does, so equal input and level give equal bytes.
pub fn compress_gzip<W: Write>(writer: W, level: u32) -> Encoder<W> {
    let encoder = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(writer, flate2::Compression::new(level.min(9)));
    Encoder(Inner::Gzip(encoder))
}

/// A zstd writer at `level`; `threads` > 0 turns on zstd's own worker threads.
pub fn compress_zstd<W: Write>(writer: W, level: i32, threads: u32) -> io::Result<Encoder<W>> {
    let mut encoder = zstd::stream::write::Encoder::new(writer, level)?;
    if threads > 0 {
        encoder.multithread(threads)?;
    }
    Ok(Encoder(Inner::Zstd(encoder)))
}

/// A writer for any [`Compression`]; `level` is clamped to each codec's range.
pub fn compress<W: Write>(
    writer: W,
    compression: Compression,
    level: u32,
) -> io::Result<Encoder<W>> {
    Ok(match compression {
        Compression::None => Encoder(Inner::None(writer)),
        Compression::Gzip => compress_gzip(writer, level),
        Compression::Zstd => compress_zstd(writer, i32::try_from(level.min(22)).unwrap_or(3), 0)?,
        Compression::Bzip2 => Encoder(Inner::Bzip2(bzip2::write::BzEncoder::new(
            writer,
            bzip2::Compression::new(level.clamp(1, 9)),
        ))),
        Compression::Xz => Encoder(Inner::Xz(xz2::write::XzEncoder::new(writer, level.min(9)))),
    })
}
