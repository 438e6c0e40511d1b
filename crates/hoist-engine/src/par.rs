//! The engine's one worker pool: scoped threads, one per core, claiming work in runs.

use crate::BuildError;

/// Most members per claim of a worker.
const CHUNK: usize = 256;

/// Most bytes per claim: a few large files in one directory must not all land on one worker.
const CLAIM_BYTES: u64 = 4 << 20;

/// Runs `f` over `items` on every core, each worker with its own state from `init`, claiming
/// runs of neighbours with the same `group` (for files, their parent directory: a worker keeps
/// its descriptor, and two workers writing into one directory would queue on its lock) and
/// together at most [`CLAIM_BYTES`] of `bytes`; stops at the first error and returns it.
pub(crate) fn for_each_parallel<T: Sync, S, G: PartialEq>(
    items: &[T],
    group: impl Fn(&T) -> G,
    bytes: impl Fn(&T) -> u64,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, &T) -> Result<(), BuildError> + Sync,
) -> Result<(), BuildError> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut claimed = 0;
    for i in 1..=items.len() {
        claimed += bytes(&items[i - 1]);
        if i == items.len()
            || i - start >= CHUNK
            || claimed >= CLAIM_BYTES
            || group(&items[i]) != group(&items[start])
        {
            chunks.push(start..i);
            start = i;
            claimed = 0;
        }
    }
    let workers = std::thread::available_parallelism()
        .map_or(2, std::num::NonZero::get)
        .clamp(1, 8)
        .min(chunks.len().max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut state = init();
                while !failed.load(Ordering::Relaxed) {
                    let Some(range) = chunks.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    for item in &items[range.clone()] {
                        if let Err(e) = f(&mut state, item) {
                            failed.store(true, Ordering::Relaxed);
                            first_error
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .get_or_insert(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    match first_error
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_item_once_however_claims_are_cut() {
        let items: Vec<usize> = (0..2000).collect();
        for (group_of, big_every) in [(1, 1), (37, 5), (5000, 3), (5000, 0)] {
            let seen: Vec<AtomicUsize> = items.iter().map(|_| AtomicUsize::new(0)).collect();
            for_each_parallel(
                &items,
                |&i| i / group_of,
                |&i| {
                    if big_every > 0 && i % big_every == 0 {
                        CLAIM_BYTES
                    } else {
                        1
                    }
                },
                || (),
                |(), &i| {
                    seen[i].fetch_add(1, Ordering::Relaxed);
                    Ok(())
                },
            )
            .unwrap();
            assert!(seen.iter().all(|n| n.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn the_first_error_stops_the_workers() {
        let items: Vec<usize> = (0..100_000).collect();
        let done = AtomicUsize::new(0);
        let got = for_each_parallel(
            &items,
            |&i| i / 10,
            |_| 0,
            || (),
            |(), &i| {
                done.fetch_add(1, Ordering::Relaxed);
                if i == 5 {
                    return Err(BuildError::Invalid("item 5".into()));
                }
                Ok(())
            },
        );
        assert!(matches!(got, Err(BuildError::Invalid(m)) if m == "item 5"));
        assert!(done.load(Ordering::Relaxed) < items.len());
    }
}
