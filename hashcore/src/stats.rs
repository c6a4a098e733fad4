//! Per-thread search counters for tuning (`--features stats`); no-ops otherwise.

#[cfg(feature = "stats")]
thread_local! {
    static STATS: std::cell::Cell<[u64; 8]> = const { std::cell::Cell::new([0; 8]) };
}

/// Slots: phase times in ns (enumerate, directory + prefetch, bucket scan,
/// verify), then probes, bucket entries scanned, candidates.
pub const NAMES: [&str; 7] = [
    "enum_ns",
    "dir_ns",
    "scan_ns",
    "verify_ns",
    "probes",
    "scanned",
    "candidates",
];

#[cfg(feature = "stats")]
pub type Mark = std::time::Instant;
/// A point in time (nothing without the `stats` feature).
#[cfg(not(feature = "stats"))]
#[derive(Clone, Copy)]
pub struct Mark;

#[inline(always)]
pub fn mark() -> Mark {
    #[cfg(feature = "stats")]
    return std::time::Instant::now();
    #[cfg(not(feature = "stats"))]
    Mark
}

/// Adds `n` to `slot`.
#[inline(always)]
pub fn add(slot: usize, n: u64) {
    #[cfg(feature = "stats")]
    STATS.with(|s| {
        let mut v = s.get();
        v[slot] += n;
        s.set(v);
    });
    #[cfg(not(feature = "stats"))]
    let _ = (slot, n);
}

/// Adds the nanoseconds since `since` to `slot`; returns a new mark.
#[inline(always)]
pub fn lap(slot: usize, since: Mark) -> Mark {
    #[cfg(feature = "stats")]
    {
        add(slot, since.elapsed().as_nanos() as u64);
        mark()
    }
    #[cfg(not(feature = "stats"))]
    {
        let _ = slot;
        since
    }
}

/// Returns and resets this thread's counters.
pub fn take() -> [u64; 8] {
    #[cfg(feature = "stats")]
    return STATS.with(|s| s.replace([0; 8]));
    #[cfg(not(feature = "stats"))]
    [0; 8]
}
