//! A counting global allocator: live heap bytes and their peak since the last reset,
//! for the whole bench process (the dev host, the real handlers, the in-process
//! sandbox and this client; moto runs in its own process).
//!
//! Each thread keeps its own running count and adds it to the shared totals only once
//! it has moved by [`BATCH`]: updated on every allocation and free, the two shared
//! counters (three atomic operations each time, their cache line passed between the
//! cores) cost the dispatch handler about 5 % of its CPU — a cost the functions do not
//! have on Lambda, where nothing counts. So the figures are exact to within `BATCH` per
//! thread (a few MiB at most; the reports print MiB with one decimal for sizes of tens
//! to hundreds of MiB).

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;

/// The functions' allocator ([`conduit::app::Allocator`]), so the handlers run here as
/// they do on Lambda.
use conduit::app::Allocator as System;
use std::sync::atomic::{AtomicIsize, Ordering};

/// The allocator the bench binary installs.
pub struct Counting;

/// How far a thread's count may move before it is added to the shared totals.
const BATCH: isize = 256 * 1024;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    /// What this thread allocated less what it freed since it last published. No
    /// destructor, so reading it never allocates.
    static PENDING: Cell<isize> = const { Cell::new(0) };
}

fn counted(by: isize) {
    let due = PENDING.try_with(|pending| {
        let now = pending.get() + by;
        if now.abs() < BATCH {
            pending.set(now);
            0
        } else {
            pending.set(0);
            now
        }
    });
    // A thread whose locals are gone (it is exiting) counts straight away.
    publish(due.unwrap_or(by));
}

fn publish(by: isize) {
    if by == 0 {
        return;
    }
    let live = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    if by > 0 {
        PEAK.fetch_max(live, Ordering::Relaxed);
    }
}

fn size(bytes: usize) -> isize {
    isize::try_from(bytes).unwrap_or(isize::MAX)
}

// SAFETY: every call is forwarded to the functions' allocator unchanged; only counters
// are updated besides.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            counted(size(layout.size()));
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc_zeroed` is passed on.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            counted(size(layout.size()));
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on.
        unsafe { System.dealloc(ptr, layout) };
        counted(-size(layout.size()));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc` is passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            counted(size(new_size) - size(layout.size()));
        }
        p
    }
}

/// Live heap bytes now (to within [`BATCH`] per thread).
pub fn live() -> usize {
    usize::try_from(LIVE.load(Ordering::Relaxed)).unwrap_or(0)
}

/// Starts a new peak window at the current live size; returns that size.
pub fn reset_peak() -> usize {
    let live = live();
    PEAK.store(size(live), Ordering::Relaxed);
    live
}

/// The highest live size since the last [`reset_peak`].
pub fn peak() -> usize {
    usize::try_from(PEAK.load(Ordering::Relaxed)).unwrap_or(0)
}

/// The process's resident-set high-water mark (`VmHWM`), in bytes, where /proc has it.
pub fn vm_hwm() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Bytes as MiB.
pub fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An allocation larger than a thread's batch reaches the totals at once, and its
    /// free takes it off again (other threads of the test binary allocate meanwhile, so
    /// within a margin).
    #[test]
    fn a_large_allocation_is_counted_at_once() {
        const SIZE: usize = 8 << 20;
        const MARGIN: usize = 2 << 20;
        let before = live();
        let start = reset_peak();
        let block: Vec<u8> = Vec::with_capacity(SIZE);
        let during = live();
        assert!(during + MARGIN >= before + SIZE, "{before} → {during}");
        assert!(peak() >= during.min(start + SIZE));
        drop(block);
        let after = live();
        assert!(
            after <= during.saturating_sub(SIZE) + MARGIN,
            "{during} → {after}"
        );
    }
}
