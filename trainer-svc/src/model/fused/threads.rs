//! The worker threads, held for a whole training step.
//!
//! faer hands each product to the workers through spindle. Outside a held region every product
//! injects a job into rayon's pool, wakes the other workers and waits on a latch: futex calls,
//! barrier waits and spinning took ~12% of a SmolLM2 step's samples on a quiet machine (README,
//! "Trainer speed") and ~30% beside another process. Inside [`hold`] the workers stay in
//! spindle's loop between products (spinning a little, then asleep) and take each one as it
//! comes.
//!
//! While they are held, rayon's workers are spindle's: a rayon iterator would run on the calling
//! thread alone. So the fused kernels' own parallel passes go through [`for_each`], which
//! spindle hands to the held workers, or to rayon's pool outside a held region.

use rayon::iter::IndexedParallelIterator;

/// At most this many pieces per thread: enough to even out uneven pieces, few enough that
/// handing one out costs nothing beside its work.
const PIECES_PER_THREAD: usize = 4;

/// How long a held worker spins for the next product before it sleeps (spindle's unit: pauses;
/// its default, 65,536, is ~1.5 ms here). Measured on SmolLM2 steps (README, session 35): held
/// threads at this limit train 10-14% faster than one hand-off per product on a quiet machine and
/// level with it beside another busy process, where the default limit ran 40% slower: a worker
/// spinning on a shared core takes the time its own partner needs. The limit is spindle's, so
/// it is the whole process's.
const SPIN_LIMIT: u32 = 4096;

/// Runs `f` (a training step) with every worker thread held for it, unless
/// `ARF_TRAINER_HOLD_THREADS` is `off` (each product then hands off on its own).
pub fn hold<R: Send>(f: impl Send + FnOnce() -> R) -> R {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *OFF.get_or_init(configure_once) {
        return f();
    }
    spindle::with_lock(rayon::current_num_threads(), f)
}

/// Sets spindle's spin limit for the process, and reads whether holding is switched off.
fn configure_once() -> bool {
    spindle::SPIN_LIMIT.store(SPIN_LIMIT, std::sync::atomic::Ordering::Relaxed);
    std::env::var("ARF_TRAINER_HOLD_THREADS").is_ok_and(|v| v == "off")
}

/// Runs `f` (a whole training run) on one of rayon's workers, so that every step [`hold`]s the
/// workers from that same thread. Called from outside the pool, each step would start on
/// whichever worker took it, and its activations, freed into that thread's glibc arena, would
/// be cached once per worker: SmolLM2's peak RSS read 1.1 to 1.7 GB from run to run.
pub fn on_one_worker<R: Send>(f: impl Send + FnOnce() -> R) -> R {
    rayon::scope(|_| f())
}

/// Calls `f` on every item, on all worker threads: the items cut into runs of neighbours, none
/// shorter than `min_len` (unless there are fewer items).
pub fn for_each<I: IndexedParallelIterator>(items: I, min_len: usize, f: impl Sync + Fn(I::Item)) {
    let len = items.len();
    if len == 0 {
        return;
    }
    let pieces = (len / min_len.max(1)).clamp(1, rayon::current_num_threads() * PIECES_PER_THREAD);
    spindle::for_each(pieces, items, f);
}

#[cfg(test)]
mod tests {
    use rayon::prelude::*;

    use super::*;

    #[test]
    fn every_item_once_inside_and_outside_a_held_region() {
        for held in [false, true] {
            for n in [0, 1, 3, 17, 1000] {
                let mut seen = vec![0u32; n];
                let mut pass = || for_each(seen.par_iter_mut().enumerate(), 3, |(_, s)| *s += 1);
                if held {
                    hold(pass)
                } else {
                    pass()
                }
                assert!(seen.iter().all(|&s| s == 1), "held {held}, {n} items");
            }
        }
    }

    #[test]
    fn a_held_region_runs_on_more_than_one_thread() {
        if rayon::current_num_threads() < 2 {
            return;
        }
        let threads = std::sync::Mutex::new(std::collections::HashSet::new());
        hold(|| {
            for_each((0..64usize).into_par_iter(), 1, |_| {
                std::thread::sleep(std::time::Duration::from_millis(2));
                threads.lock().unwrap().insert(std::thread::current().id());
            })
        });
        assert!(threads.into_inner().unwrap().len() >= 2);
    }
}
