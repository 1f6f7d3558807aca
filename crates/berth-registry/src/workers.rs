//! A small pool of scoped threads: every thread is joined before
//! [`for_each`] returns, so callers may fork afterwards.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Runs `f` on every item, `jobs` at a time. After the first error no new
/// item is started and the flag handed to `f` is set, so running ones can
/// stop early; that first error (the cause, not the cancellations it led
/// to) is returned.
pub(crate) fn for_each<T: Sync, E: Send>(
    items: &[T],
    jobs: usize,
    f: impl Fn(&T, &AtomicBool) -> Result<(), E> + Sync,
) -> Result<(), E> {
    let cancel = AtomicBool::new(false);
    let next = AtomicUsize::new(0);
    let errors: Mutex<Vec<E>> = Mutex::new(Vec::new());
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= items.len() || cancel.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = f(&items[i], &cancel) {
            let mut errs = errors.lock().unwrap_or_else(|e| e.into_inner());
            errs.push(e);
            cancel.store(true, Ordering::Relaxed);
        }
    };
    let threads = jobs.clamp(1, items.len().max(1));
    if threads == 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(work);
            }
        });
    }
    match errors
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .next()
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_all_or_stops_at_first_error() {
        let seen = Mutex::new(Vec::new());
        for_each(&[1, 2, 3, 4, 5], 3, |i, _| {
            seen.lock().unwrap().push(*i);
            Ok::<(), ()>(())
        })
        .unwrap();
        let mut v = seen.into_inner().unwrap();
        v.sort();
        assert_eq!(v, [1, 2, 3, 4, 5]);
        let err = for_each(&[1, 2, 3], 2, |i, cancel| {
            if *i == 2 {
                return Err("two");
            }
            while *i == 1 && !cancel.load(Ordering::Relaxed) {
                std::thread::yield_now();
            }
            Err("cancelled")
        });
        assert_eq!(err, Err("two"));
    }
}
