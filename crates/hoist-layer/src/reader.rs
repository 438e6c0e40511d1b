//! A streaming tar reader that parses headers the way Go's `archive/tar` does.
//!
//! Why not the tar crate's reader: tar 0.4.46 splits PAX records on `\n` instead of using
//! their length prefix, so a path or an xattr value containing a newline (binary
//! `security.capability` values can) is misread or dropped, and it skips the data of
//! header-only entries (symlinks, directories, …) by their size field where Go ignores it.
//! Docker and containerd read layers with Go; reading a layer differently from them is a
//! parser differential, the class of bug behind CVE-2025-62518. The tar crate still builds
//! our headers on the writing side.

use std::io::{self, Read};

use rustix::fs::Timespec;

const BLOCK: usize = 512;

/// Name/value pairs: xattrs, or PAX records.
pub(crate) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;
/// Cap on PAX and GNU long-name payloads, as Go's `maxSpecialFileSize`.
const MAX_SPECIAL: u64 = 1 << 20;

/// One archive member, with PAX and GNU extensions already folded in.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The typeflag, normalised: `0` regular (also for `\0` and `7`), `5` for old-style
    /// directories (`\0` with a trailing `/`).
    pub kind: u8,
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: Timespec,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// `SCHILY.xattr.*` records, in archive order.
    pub xattrs: Xattrs,
    /// GNU sparse data (typeflag `S` or `GNU.sparse.*` records), which we do not extract.
    pub sparse: bool,
}

/// Reads members one by one; between calls to [`TarReader::next_entry`] it reads the current
/// member's data (and nothing past it).
pub(crate) struct TarReader<R> {
    inner: R,
    remaining: u64,
    padding: u64,
    finished: bool,
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// A NUL-terminated header string.
fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// An octal or base-256 numeric field, as Go's `parseNumeric`.
fn numeric(field: &[u8]) -> io::Result<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        if field[0] == 0xff {
            return Err(invalid("negative numeric field in tar header"));
        }
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            value = value
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(|| invalid("numeric field overflow in tar header"))?;
        }
        return Ok(value);
    }
    let text = cstr(field);
    let text: Vec<u8> = text.iter().copied().filter(|&b| b != b' ').collect();
    if text.is_empty() {
        return Ok(0);
    }
    let text = std::str::from_utf8(&text).map_err(|_| invalid("bad octal field in tar header"))?;
    u64::from_str_radix(text, 8).map_err(|_| invalid("bad octal field in tar header"))
}

fn checksum_ok(block: &[u8; BLOCK]) -> io::Result<bool> {
    let stored = numeric(&block[148..156])?;
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    Ok(stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed))
}

/// PAX records: `<len> <key>=<value>\n`, where `<len>` counts the whole record.
fn parse_pax(mut data: &[u8]) -> io::Result<Xattrs> {
    let bad = || invalid("malformed PAX record");
    let mut out = Vec::new();
    while !data.is_empty() {
        let space = data.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad());
        }
        let record = &data[space + 1..len - 1];
        let eq = record.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        out.push((record[..eq].to_vec(), record[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

/// A PAX time (`1700000000.123456789`) as a timespec.
fn parse_pax_time(value: &[u8]) -> io::Result<Timespec> {
    let bad = || invalid("malformed PAX time");
    let text = std::str::from_utf8(value).map_err(|_| bad())?;
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let tv_sec: i64 = secs.parse().map_err(|_| bad())?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let digits = &frac[..frac.len().min(9)];
    let tv_nsec = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().map_err(|_| bad())?
    };
    Ok(Timespec { tv_sec, tv_nsec })
}

fn pax_number(value: &[u8]) -> io::Result<u64> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("malformed PAX number"))
}

impl<R: Read> TarReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            remaining: 0,
            padding: 0,
            finished: false,
        }
    }

    pub(crate) fn into_inner(self) -> R {
        self.inner
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
        if copied != n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "tar archive is truncated",
            ));
        }
        Ok(())
    }

    /// Reads one header block; `false` on a clean end of stream at a block boundary.
    fn read_block(&mut self, block: &mut [u8; BLOCK]) -> io::Result<bool> {
        let mut filled = 0;
        while filled < BLOCK {
            match self.inner.read(&mut block[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "tar archive is truncated",
                    ));
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn read_special(&mut self, size: u64) -> io::Result<Vec<u8>> {
        if size > MAX_SPECIAL {
            return Err(invalid("tar extension header is too large"));
        }
        let mut data = Vec::with_capacity(size as usize);
        (&mut self.inner).take(size).read_to_end(&mut data)?;
        if data.len() as u64 != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "tar archive is truncated",
            ));
        }
        self.skip(padding(size))?;
        Ok(data)
    }

    /// The next member, skipping whatever was left unread of the current one.
    pub(crate) fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        if self.finished {
            return Ok(None);
        }
        self.skip(self.remaining + self.padding)?;
        self.remaining = 0;
        self.padding = 0;
        let mut pax: Option<Xattrs> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut block = [0u8; BLOCK];
        loop {
            let pending = pax.is_some() || long_name.is_some() || long_link.is_some();
            if !self.read_block(&mut block)? || block.iter().all(|&b| b == 0) {
                self.finished = true;
                if pending {
                    return Err(invalid("tar extension header without a member"));
                }
                return Ok(None);
            }
            if !checksum_ok(&block)? {
                return Err(invalid("tar header checksum mismatch"));
            }
            let size = numeric(&block[124..136])?;
            match block[156] {
                b'x' => {
                    if pax.is_some() {
                        return Err(invalid("two PAX headers for one member"));
                    }
                    let data = self.read_special(size)?;
                    pax = Some(parse_pax(&data)?);
                }
                // Global headers carry no file; docker and containerd ignore them too.
                b'g' => {
                    self.read_special(size)?;
                }
                b'L' => long_name = Some(cstr(&self.read_special(size)?).to_vec()),
                b'K' => long_link = Some(cstr(&self.read_special(size)?).to_vec()),
                _ => {
                    return self
                        .member(&block, size, pax, long_name, long_link)
                        .map(Some);
                }
            }
        }
    }

    fn member(
        &mut self,
        block: &[u8; BLOCK],
        mut size: u64,
        pax: Option<Xattrs>,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
    ) -> io::Result<Entry> {
        let mut path = cstr(&block[..100]).to_vec();
        let is_ustar = &block[257..263] == b"ustar\0";
        let prefix = cstr(&block[345..500]);
        if is_ustar && !prefix.is_empty() {
            path = [prefix, b"/", &path].concat();
        }
        let mtime_secs = numeric(&block[136..148])?;
        let mut entry = Entry {
            kind: block[156],
            path,
            link: cstr(&block[157..257]).to_vec(),
            mode: u32::try_from(numeric(&block[100..108])? & 0o7777).unwrap_or(0),
            uid: numeric(&block[108..116])?,
            gid: numeric(&block[116..124])?,
            mtime: Timespec {
                tv_sec: i64::try_from(mtime_secs).unwrap_or(i64::MAX),
                tv_nsec: 0,
            },
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
            sparse: block[156] == b'S',
        };
        if matches!(entry.kind, b'3' | b'4') {
            let too_big = |_| invalid("device number out of range");
            entry.dev_major = u32::try_from(numeric(&block[329..337])?).map_err(too_big)?;
            entry.dev_minor = u32::try_from(numeric(&block[337..345])?).map_err(too_big)?;
        }
        for (key, value) in pax.unwrap_or_default() {
            match key.as_slice() {
                b"path" => entry.path = value,
                b"linkpath" => entry.link = value,
                b"uid" => entry.uid = pax_number(&value)?,
                b"gid" => entry.gid = pax_number(&value)?,
                b"size" => size = pax_number(&value)?,
                b"mtime" => entry.mtime = parse_pax_time(&value)?,
                _ => {
                    if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                        entry.xattrs.push((name.to_vec(), value));
                    } else if key.starts_with(b"GNU.sparse.") {
                        entry.sparse = true;
                    }
                }
            }
        }
        // As Go: GNU long names win over PAX.
        if let Some(name) = long_name {
            entry.path = name;
        }
        if let Some(link) = long_link {
            entry.link = link;
        }
        entry.kind = match entry.kind {
            b'\0' if entry.path.ends_with(b"/") => b'5',
            b'\0' | b'7' => b'0',
            kind => kind,
        };
        // As Go: header-only types have no data, whatever their size field says.
        if matches!(entry.kind, b'1'..=b'6') {
            size = 0;
        }
        self.remaining = size;
        self.padding = padding(size);
        Ok(entry)
    }
}

impl<R: Read> Read for TarReader<R> {
    /// Reads the current member's data.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "tar archive is truncated",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_may_contain_newlines() {
        let value = b"line1\nline2";
        let record = [b"20 path=".as_slice(), value, b"\n"].concat();
        assert_eq!(record.len(), 20);
        assert_eq!(
            parse_pax(&record).unwrap(),
            [(b"path".to_vec(), value.to_vec())]
        );
        assert!(parse_pax(b"5 a=b\n").is_err());
        assert!(parse_pax(b"99 a=b\n").is_err());
    }

    #[test]
    fn numeric_fields() {
        assert_eq!(numeric(b"0000644\0").unwrap(), 0o644);
        assert_eq!(numeric(b"  755 \0").unwrap(), 0o755);
        assert_eq!(
            numeric(&[0x80, 0, 0, 0, 0, 0x2d, 0xc6, 0xc0]).unwrap(),
            3_000_000
        );
        assert!(numeric(&[0xff; 8]).is_err());
        assert_eq!(parse_pax_time(b"1234.5").unwrap().tv_nsec, 500_000_000);
    }
}
