//! pigz-style parallel gzip for pushes: one gzip member whose deflate stream is cut into 1 MiB
//! blocks compressed on every core, each primed with the previous block's last 32 KiB (so the
//! ratio stays that of a serial stream) and ended with a sync flush so the blocks concatenate.
//! Output is deterministic for a given input, level and block size, whatever the thread count.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

const BLOCK: usize = 1 << 20;
const WINDOW: usize = 32 * 1024;

struct Job {
    index: u64,
    data: Arc<Vec<u8>>,
    previous: Option<Arc<Vec<u8>>>,
    last: bool,
}

/// Compresses `input` into `output` as gzip at `level` (mtime 0, OS "unknown", as Go's
/// writer), on `threads` threads; returns `output`.
pub(crate) fn compress<W: Write + Send>(
    input: &mut dyn Read,
    output: W,
    level: u32,
    threads: usize,
) -> io::Result<W> {
    let threads = threads.max(1);
    let xfl = match level {
        9.. => 2,
        0 | 1 => 4,
        _ => 0,
    };
    let (job_tx, job_rx) = sync_channel::<Job>(threads);
    let job_rx = Mutex::new(job_rx);
    std::thread::scope(|s| {
        let (done_tx, done_rx) = sync_channel::<(u64, io::Result<Vec<u8>>)>(threads * 2);
        for _ in 0..threads {
            let done_tx = done_tx.clone();
            let job_rx = &job_rx;
            s.spawn(move || {
                loop {
                    let job = match job_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let result = deflate_block(&job, level);
                    if done_tx.send((job.index, result)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        let writer = s.spawn(move || -> io::Result<W> {
            let mut output = output;
            output.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255])?;
            let mut next = 0;
            let mut pending = BTreeMap::new();
            for (index, block) in done_rx {
                pending.insert(index, block);
                while let Some(block) = pending.remove(&next) {
                    output.write_all(&block?)?;
                    next += 1;
                }
            }
            Ok(output)
        });
        let mut crc = Crc::new();
        let mut index = 0;
        let mut previous: Option<Arc<Vec<u8>>> = None;
        let mut current = read_block(input)?;
        loop {
            let following = if current.len() == BLOCK {
                read_block(input)?
            } else {
                Vec::new()
            };
            let last = following.is_empty();
            crc.update(&current);
            let data = Arc::new(current);
            let job = Job {
                index,
                data: data.clone(),
                previous: previous.take(),
                last,
            };
            if job_tx.send(job).is_err() {
                break;
            }
            index += 1;
            previous = Some(data);
            if last {
                break;
            }
            current = following;
        }
        drop(job_tx);
        let mut output = writer
            .join()
            .map_err(|_| io::Error::other("a gzip thread panicked"))??;
        output.write_all(&crc.sum().to_le_bytes())?;
        output.write_all(&crc.amount().to_le_bytes())?;
        Ok(output)
    })
}

fn read_block(input: &mut dyn Read) -> io::Result<Vec<u8>> {
    let mut block = Vec::with_capacity(BLOCK);
    input.take(BLOCK as u64).read_to_end(&mut block)?;
    Ok(block)
}

/// Whether a block will not shrink (random or already compressed data): a 64 KiB sample that
/// deflates to more than 97% of its size. Such blocks are stored, which costs a copy instead of
/// a full deflate pass; the decision depends on the bytes alone, so output stays deterministic.
fn incompressible(data: &[u8]) -> bool {
    const SAMPLE: usize = 64 * 1024;
    if data.len() < SAMPLE {
        return false;
    }
    let sample = &data[..SAMPLE];
    let mut c = Compress::new(Compression::new(1), false);
    let mut out = Vec::with_capacity(SAMPLE + 1024);
    if c.compress_vec(sample, &mut out, FlushCompress::Finish)
        .is_err()
    {
        return false;
    }
    c.total_in() as usize == SAMPLE && out.len() * 100 > SAMPLE * 97
}

fn deflate_block(job: &Job, level: u32) -> io::Result<Vec<u8>> {
    let level = if level > 0 && incompressible(&job.data) {
        0
    } else {
        level
    };
    let mut c = Compress::new(Compression::new(level), false);
    if let Some(previous) = &job.previous {
        c.set_dictionary(&previous[previous.len().saturating_sub(WINDOW)..])
            .map_err(io::Error::other)?;
    }
    let flush = if job.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let data = &job.data[..];
    let mut out = Vec::with_capacity(data.len() / 2 + 4096);
    loop {
        if out.capacity() - out.len() < 16 * 1024 {
            out.reserve(64 * 1024);
        }
        let consumed = usize::try_from(c.total_in()).unwrap_or(usize::MAX);
        let status = c
            .compress_vec(&data[consumed.min(data.len())..], &mut out, flush)
            .map_err(io::Error::other)?;
        let consumed = usize::try_from(c.total_in()).unwrap_or(usize::MAX);
        let done = match flush {
            FlushCompress::Finish => status == Status::StreamEnd,
            _ => consumed >= data.len() && out.len() < out.capacity(),
        };
        if done {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(input: &[u8], threads: usize) -> Vec<u8> {
        let gz = compress(&mut &input[..], Vec::new(), 6, threads).unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, input);
        gz
    }

    #[test]
    fn valid_gzip_and_independent_of_threads() {
        let mut text = Vec::new();
        for i in 0..400_000u32 {
            text.extend_from_slice(format!("line {} {}\n", i, i % 7).as_bytes());
        }
        let one = roundtrip(&text, 1);
        assert_eq!(roundtrip(&text, 3), one);
        assert!(one.len() < text.len() / 4);
        roundtrip(b"", 2);
        roundtrip(&vec![7u8; BLOCK], 2);
        roundtrip(&vec![7u8; BLOCK + 1], 2);
    }
}
