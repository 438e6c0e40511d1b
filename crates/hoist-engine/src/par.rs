//! The engine's one worker pool: scoped threads, one per core, claiming work in runs.

use crate::BuildError;

/// Most members per claim of a worker.
const CHUNK: usize = 256;

/// Runs `f` over `items` on every core, each worker with its own state from `init`, claiming
/// runs of neighbours with the same `group` (for files, their parent directory: a worker keeps
/// its descriptor, and two workers writing into one directory would queue on its lock); stops at
/// the first error and returns it.
pub(crate) fn for_each_parallel<T: Sync, S, G: PartialEq>(
    items: &[T],
    group: impl Fn(&T) -> G,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, &T) -> Result<(), BuildError> + Sync,
) -> Result<(), BuildError> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let mut chunks = Vec::new();
    let mut start = 0;
    for i in 1..=items.len() {
        if i == items.len() || i - start >= CHUNK || group(&items[i]) != group(&items[start]) {
            chunks.push(start..i);
            start = i;
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
