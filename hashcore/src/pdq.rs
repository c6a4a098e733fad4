//! PDQ segments: immutable sets of 256-bit hashes with exact-recall Hamming
//! search by multi-index hashing.
//!
//! # Layout
//!
//! A segment of `n` hashes keeps them in one array sorted by their top bits
//! (`h[3]` first), with the entry ids in a parallel array. The 256 bits are cut
//! into `m` disjoint substrings ("tables"; 11 by default):
//!
//! * the **primary** table is the top `d` bits (`d` ≈ log2(n) − 3, so ~8
//!   entries per bucket). Because the hash array is sorted by them, its
//!   buckets are contiguous ranges of the hash array: a directory of `2^d`
//!   offsets is all it needs, and scanning a bucket verifies whole hashes
//!   sequentially.
//! * the other `256 − d` bits are split evenly among the **secondary** tables
//!   (23–24 bits each at 10 M entries; every bit they get halves their random
//!   candidates). Each is a directory of `2^d` offsets into a `u32` array
//!   that packs the entry position with the `b − d` key bits below the
//!   directory bits. A bucket scan filters on those bits (sixteen entries per
//!   instruction with AVX-512) before touching the hash array, and positions
//!   within a bucket are ascending, so verification walks memory forwards.
//!
//! That is 4 bytes per entry per secondary table plus ~0.5 byte of directory:
//! ~84 bytes per entry in total with the 32-byte hash and 8-byte id.
//!
//! # Search (exact recall)
//!
//! For a threshold `t`, radii `r_i` with `Σ (r_i + 1) ≥ t + 1` are assigned to
//! the tables (generalised pigeonhole: if every substring differed in more
//! than `r_i` bits, the distance would exceed `t`). Every entry whose
//! substring `i` is within `r_i` of the query's is a candidate; candidates are
//! verified with a full 256-bit popcount, so precision is exact too. For
//! each threshold the segment compares the expected cost of this plan with a
//! linear scan and uses the cheaper one; small segments are always scanned.

use std::io;

use crate::dispatch;
use crate::error::CoreError;
use crate::mem::{prefetch, prefetch_range, HugeBuf};
use crate::persist::{check_offsets, Persist, Reader, Writer};
use crate::simd::Level;
use crate::stats;

/// A PDQ hash as four 64-bit words (bytes `8k..8k+8` little-endian form word `k`).
pub type Pdq = [u64; 4];

/// Largest supported threshold + 1.
pub const THRESHOLDS: usize = 64;

/// Reads a 32-byte PDQ digest.
pub fn pdq_from_bytes(bytes: &[u8; 32]) -> Pdq {
    let mut out = [0u64; 4];
    for (w, chunk) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        *w = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
    }
    out
}

/// Writes a PDQ hash back to its 32-byte digest.
pub fn pdq_to_bytes(h: &Pdq) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (chunk, w) in out.chunks_exact_mut(8).zip(h) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// Hamming distance of two PDQ hashes.
#[inline(always)]
pub fn hamming(a: &Pdq, b: &Pdq) -> u32 {
    (a[0] ^ b[0]).count_ones()
        + (a[1] ^ b[1]).count_ones()
        + (a[2] ^ b[2]).count_ones()
        + (a[3] ^ b[3]).count_ones()
}

/// Order of the hash array: top word first.
#[inline]
pub fn sort_key(h: &Pdq) -> (u64, u64, u64, u64) {
    (h[3], h[2], h[1], h[0])
}

/// Bits `[start, start + len)` of `h` (bit `k` is bit `k % 64` of word `k / 64`), `len ≤ 32`.
#[inline(always)]
fn extract(h: &Pdq, start: u32, len: u32) -> u32 {
    let w = (start / 64) as usize;
    let off = start % 64;
    let mut v = h[w] >> off;
    if off + len > 64 {
        v |= h[w + 1] << (64 - off);
    }
    (v & ((1u64 << len) - 1)) as u32
}

/// Build parameters (the defaults are what the index uses; benchmarks vary them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Number of substrings, primary included (8..=16, so each is ≤ 32 bits).
    pub tables: u32,
    /// Segments smaller than this are scanned linearly and get no tables.
    pub mih_min: usize,
    /// Directory bits = floor(log2(n)) − `dir_slack` (≈ 2^slack entries per bucket).
    pub dir_slack: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            tables: 11,
            mih_min: 2048,
            dir_slack: 3,
        }
    }
}

/// One secondary table.
#[derive(Clone)]
struct Table {
    start: u32,
    bits: u32,
    dir_bits: u32,
    /// `b − d`: key bits stored in each entry.
    low_bits: u32,
    /// Entry = `(low << idx_bits) | position`.
    idx_bits: u32,
    offsets: HugeBuf<u32>,
    entries: HugeBuf<u32>,
    /// Mean bucket size seen by an entry (Σ size² / n): above the plain mean
    /// when data is clustered.
    skew: f64,
}

/// Search plan for one threshold.
#[derive(Clone, Copy, Debug)]
enum Plan {
    Flat,
    /// Radius per table (primary first); negative = not probed.
    Mih([i8; 16]),
}

/// An immutable set of PDQ hashes with ids. Positions (`u32`) index both.
#[derive(Clone)]
pub struct PdqSegment {
    hashes: HugeBuf<Pdq>,
    ids: HugeBuf<u64>,
    /// Primary table (the top substring): directory over its top `primary_dir` bits.
    primary_dir: u32,
    primary_offsets: HugeBuf<u32>,
    primary_skew: f64,
    tables: Box<[Table]>,
    plans: Box<[Plan]>,
}

fn log2_floor(n: usize) -> u32 {
    if n <= 1 {
        0
    } else {
        usize::BITS - 1 - n.leading_zeros()
    }
}

fn log2_ceil(n: usize) -> u32 {
    if n <= 1 {
        0
    } else {
        log2_floor(n - 1) + 1
    }
}

/// Σ_{k ≤ r} C(n, k).
fn ball(n: u32, r: i32) -> f64 {
    let mut sum = 0.0;
    let mut c = 1.0;
    for k in 0..=r.max(-1) {
        if k as u32 > n {
            break;
        }
        sum += c;
        c = c * f64::from(n - k as u32) / f64::from(k as u32 + 1);
    }
    sum
}

/// Calls `f(cell, flips)` for every `cell` within Hamming radius `r` of `base` over `d` bits.
#[inline(always)]
fn for_each_cell(base: u32, d: u32, r: u32, f: &mut impl FnMut(u32, u32)) {
    f(base, 0);
    if r == 0 || d == 0 {
        return;
    }
    #[inline(always)]
    fn rec(cur: u32, from: u32, d: u32, left: u32, flips: u32, f: &mut impl FnMut(u32, u32)) {
        for b in from..d {
            let c = cur ^ (1 << b);
            f(c, flips + 1);
            if left > 1 {
                rec(c, b + 1, d, left - 1, flips + 1, f);
            }
        }
    }
    rec(base, 0, d, r, 0, f);
}

/// Σ size² / n over the buckets of a directory: the size of the bucket an
/// entry (or a query near it) falls in, on average.
fn bucket_skew(offsets: &[u32], n: usize) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let sq: f64 = offsets
        .windows(2)
        .map(|w| f64::from(w[1] - w[0]).powi(2))
        .sum();
    sq / n as f64
}

/// Counting sort of positions by `hi(key)` → (offsets, packed entries).
fn build_table(hashes: &[Pdq], start: u32, bits: u32, dir_bits: u32) -> Table {
    let low_bits = bits - dir_bits;
    let idx_bits = 32 - low_bits;
    let cells = 1usize << dir_bits;
    let mut offsets = HugeBuf::<u32>::zeroed(cells + 1);
    for h in hashes {
        let key = extract(h, start, bits);
        offsets[(key >> low_bits) as usize + 1] += 1;
    }
    for c in 0..cells {
        offsets[c + 1] += offsets[c];
    }
    let mut fill: Vec<u32> = offsets[..cells].to_vec();
    let mut entries = HugeBuf::<u32>::zeroed(hashes.len());
    let low_mask = ((1u64 << low_bits) - 1) as u32;
    for (pos, h) in hashes.iter().enumerate() {
        let key = extract(h, start, bits);
        let cell = (key >> low_bits) as usize;
        let low = (key & low_mask) as u64;
        entries[fill[cell] as usize] = ((low << idx_bits) | pos as u64) as u32;
        fill[cell] += 1;
    }
    let skew = bucket_skew(&offsets, hashes.len());
    Table {
        start,
        bits,
        dir_bits,
        low_bits,
        idx_bits,
        offsets,
        entries,
        skew,
    }
}

/// Reusable buffers of one searching thread.
#[derive(Default)]
pub struct Scratch {
    /// Candidate positions, grouped by query.
    cands: Vec<u32>,
    /// End of each query's candidates in `cands`.
    ends: Vec<u32>,
    probes: Vec<Probe>,
    masks: Masks,
}

impl PdqSegment {
    /// Builds a segment; `entries` must not repeat a hash.
    pub fn build(entries: Vec<(Pdq, u64)>) -> PdqSegment {
        PdqSegment::build_with(entries, Params::default())
    }

    /// Builds a segment with explicit parameters.
    pub fn build_with(mut entries: Vec<(Pdq, u64)>, params: Params) -> PdqSegment {
        let m = params.tables.clamp(8, 16);
        entries.sort_unstable_by_key(|e| sort_key(&e.0));
        let n = entries.len();
        assert!(n < u32::MAX as usize, "segment too large");
        let mut hashes = HugeBuf::<Pdq>::zeroed(n);
        let mut ids = HugeBuf::<u64>::zeroed(n);
        for (i, (h, id)) in entries.into_iter().enumerate() {
            hashes[i] = h;
            ids[i] = id;
        }

        let want_dir = log2_floor(n).saturating_sub(params.dir_slack);
        let primary_dir = want_dir.min(24);
        // The primary's substring is exactly its directory bits: its buckets
        // are verified whole, so key bits beyond the directory would filter
        // nothing. The other 256 − d bits go to the secondaries (longest
        // first), whose candidates fall with every bit they get.
        let rest = 256 - primary_dir;
        let (base, extra) = match rest / (m - 1) {
            // Few tables on a tiny segment: bits left over are simply not indexed
            // (the substrings stay disjoint, which is all the pigeonhole needs).
            b if b >= 32 => (32, 0),
            b => (b, rest % (m - 1)),
        };
        let lens: Vec<u32> = (0..m - 1).map(|i| base + u32::from(i < extra)).collect();

        let mut primary_offsets = HugeBuf::<u32>::zeroed((1usize << primary_dir) + 1);
        for h in hashes.iter() {
            primary_offsets[Self::primary_cell(h, primary_dir) as usize + 1] += 1;
        }
        for c in 0..(1usize << primary_dir) {
            primary_offsets[c + 1] += primary_offsets[c];
        }

        let mut tables = Vec::new();
        if n >= params.mih_min {
            let idx_need = log2_ceil(n).max(1);
            let mut start = 0;
            let mut specs = Vec::new();
            for &bits in &lens {
                // Entries keep `bits − d` key bits next to a position of `idx_need` bits.
                let min_dir = bits.saturating_sub(32 - idx_need);
                let dir = want_dir.clamp(min_dir.max(1), bits).min(26);
                specs.push((start, bits, dir));
                start += bits;
            }
            debug_assert!(start + primary_dir <= 256);
            tables = std::thread::scope(|s| {
                let half = specs.len() / 2;
                let (a, b) = specs.split_at(half);
                let hashes = &hashes;
                let other = s.spawn(move || {
                    a.iter()
                        .map(|&(st, bi, d)| build_table(hashes, st, bi, d))
                        .collect::<Vec<_>>()
                });
                let mut mine: Vec<Table> = b
                    .iter()
                    .map(|&(st, bi, d)| build_table(hashes, st, bi, d))
                    .collect();
                let mut all = other.join().expect("table build thread panicked");
                all.append(&mut mine);
                all
            });
        }

        let mut seg = PdqSegment {
            hashes,
            ids,
            primary_dir,
            primary_skew: bucket_skew(&primary_offsets, n),
            primary_offsets,
            tables: tables.into_boxed_slice(),
            plans: Box::new([]),
        };
        seg.plans = (0..THRESHOLDS as u32).map(|t| seg.plan(t)).collect();
        seg
    }

    #[inline(always)]
    fn primary_cell(h: &Pdq, dir: u32) -> u32 {
        if dir == 0 {
            0
        } else {
            (h[3] >> (64 - dir)) as u32
        }
    }

    /// Radii for threshold `t` over `m` tables (primary first): `Σ (r_i + 1) =
    /// t + 1`, the larger radii going to the secondaries in order (their
    /// buckets are compact) and the primary last (its buckets hold whole
    /// hashes).
    fn radii(m: u32, t: u32) -> [i8; 16] {
        let mut r = [-1i8; 16];
        let q = (t + 1) / m;
        let rem = (t + 1) % m;
        for (k, ri) in r.iter_mut().enumerate().take(m as usize) {
            // Rank of table k in receiving the extra radius: secondaries 0.., primary last.
            let rank = if k == 0 { m - 1 } else { k as u32 - 1 };
            *ri = (q as i32 - 1 + i32::from(rank < rem)) as i8;
        }
        r
    }

    /// Chooses between multi-index search and a linear scan for threshold `t`.
    fn plan(&self, t: u32) -> Plan {
        if self.tables.is_empty() {
            return Plan::Flat;
        }
        // Rough costs in nanoseconds, measured on the reference machine.
        const PROBE: f64 = 25.0;
        const SCAN: f64 = 1.0;
        const PRIMARY_SCAN: f64 = 2.0;
        const VERIFY: f64 = 12.0;
        const FLAT: f64 = 0.6;
        let n = self.hashes.len() as f64;
        let m = self.tables.len() as u32 + 1;
        let r = Self::radii(m, t);
        // Clustered data: the query's own bucket holds its cluster (`skew`
        // entries on average, not the plain mean), all of them candidates.
        // Accounting for it makes a badly skewed segment fall back to the scan
        // instead of doing worse than it.
        let mut cost = 0.0;
        if r[0] >= 0 {
            let cells = ball(self.primary_dir, i32::from(r[0]));
            let mean = n / f64::from(1u32 << self.primary_dir);
            cost += cells * (PROBE + mean * PRIMARY_SCAN);
            cost += (self.primary_skew - mean).max(0.0) * PRIMARY_SCAN;
        }
        for (tab, &ri) in self.tables.iter().zip(&r[1..]) {
            if ri < 0 {
                continue;
            }
            let cells = ball(tab.dir_bits, i32::from(ri));
            let mean = n / (1u64 << tab.dir_bits) as f64;
            cost += cells * (PROBE + mean * SCAN);
            cost += ball(tab.bits, i32::from(ri)) * n / (1u64 << tab.bits) as f64 * VERIFY;
            cost += (tab.skew - mean).max(0.0) * (SCAN + VERIFY);
        }
        if cost < n * FLAT {
            Plan::Mih(r)
        } else {
            Plan::Flat
        }
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    pub fn hash_at(&self, pos: u32) -> Pdq {
        self.hashes[pos as usize]
    }

    pub fn id_at(&self, pos: u32) -> u64 {
        self.ids[pos as usize]
    }

    /// Whether this segment has multi-index tables (else it is always scanned).
    pub fn is_indexed(&self) -> bool {
        !self.tables.is_empty()
    }

    /// Position of `h`, if present.
    pub fn find(&self, h: &Pdq) -> Option<u32> {
        let c = Self::primary_cell(h, self.primary_dir) as usize;
        let (lo, hi) = (
            self.primary_offsets[c] as usize,
            self.primary_offsets[c + 1] as usize,
        );
        let key = sort_key(h);
        self.hashes[lo..hi]
            .binary_search_by(|x| sort_key(x).cmp(&key))
            .ok()
            .map(|i| (lo + i) as u32)
    }

    /// Calls `hit(i, pos)` for every `key(i)`, `i < n`, present; lookups are
    /// software-pipelined (directory, then bucket, then search).
    pub fn find_each<'k>(
        &self,
        n: usize,
        key: impl Fn(usize) -> &'k Pdq,
        mut hit: impl FnMut(usize, u32),
    ) {
        const D: usize = 16;
        let mut ranges = [(0u32, 0u32); 2 * D];
        let dir = self.primary_dir;
        for i in 0..n + 2 * D {
            if i < n {
                prefetch(&self.primary_offsets[Self::primary_cell(key(i), dir) as usize]);
            }
            if i >= D && i - D < n {
                let j = i - D;
                let c = Self::primary_cell(key(j), dir) as usize;
                let (lo, hi) = (self.primary_offsets[c], self.primary_offsets[c + 1]);
                ranges[j % (2 * D)] = (lo, hi);
                prefetch_range(&self.hashes[lo as usize..hi as usize]);
            }
            if i >= 2 * D && i - 2 * D < n {
                let j = i - 2 * D;
                let (lo, hi) = ranges[j % (2 * D)];
                let k = sort_key(key(j));
                if let Ok(p) =
                    self.hashes[lo as usize..hi as usize].binary_search_by(|x| sort_key(x).cmp(&k))
                {
                    hit(j, lo + p as u32);
                }
            }
        }
    }

    /// Approximate heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        let tables: usize = self
            .tables
            .iter()
            .map(|t| (t.offsets.len() + t.entries.len()) * 4)
            .sum();
        self.hashes.len() * 40 + self.primary_offsets.len() * 4 + tables
    }

    /// Appends to `out` the position of every entry within `t` of any hash in
    /// `queries` (a dihedral group, or one hash). Positions may repeat.
    pub fn search(
        &self,
        level: Level,
        queries: &[Pdq],
        t: u32,
        scratch: &mut Scratch,
        out: &mut Vec<u32>,
    ) {
        if queries.is_empty() || self.hashes.is_empty() {
            return;
        }
        let t = t.min(THRESHOLDS as u32 - 1);
        match self.plans[t as usize] {
            Plan::Flat => self.search_linear(level, queries, t, out),
            Plan::Mih(radii) => dispatch!(level, (
                seg: &PdqSegment = self,
                level: Level = level.clamp_to_cpu(),
                qs: &[Pdq] = queries,
                t: u32 = t,
                radii: &[i8; 16] = &radii,
                scratch: &mut Scratch = scratch,
                out: &mut Vec<u32> = out,
            ) -> () {
                mih_body(seg, level, qs, t, radii, scratch, out)
            }),
        }
    }

    /// Appends every entry within `t` by a linear scan (the oracle for tests).
    pub fn search_linear(&self, level: Level, queries: &[Pdq], t: u32, out: &mut Vec<u32>) {
        dispatch!(level, (
            seg: &PdqSegment = self,
            qs: &[Pdq] = queries,
            t: u32 = t,
            out: &mut Vec<u32> = out,
        ) -> () {
            scan_body(seg, qs, t, out)
        })
    }
}

#[inline(always)]
fn scan_body(seg: &PdqSegment, qs: &[Pdq], t: u32, out: &mut Vec<u32>) {
    const CHUNK: usize = 32;
    let mut dist = [0u32; CHUNK];
    for (ci, chunk) in seg.hashes.chunks(CHUNK).enumerate() {
        // Distances first (vectorisable), matches after.
        dist.fill(u32::MAX);
        for q in qs {
            for (d, h) in dist.iter_mut().zip(chunk) {
                *d = (*d).min(hamming(h, q));
            }
        }
        for (i, &d) in dist.iter().enumerate().take(chunk.len()) {
            if d <= t {
                out.push((ci * CHUNK + i) as u32);
            }
        }
    }
}

/// One bucket to scan: table (0 = primary), cell, remaining radius, then its range.
#[derive(Clone, Copy, Default)]
struct Probe {
    table: u32,
    /// Index of the query within its group.
    query: u32,
    cell: u32,
    rem: u32,
    /// Query key bits below the directory bits (secondaries).
    qlo: u32,
    lo: u32,
    hi: u32,
}

#[inline(always)]
fn mih_body(
    seg: &PdqSegment,
    level: Level,
    qs: &[Pdq],
    t: u32,
    radii: &[i8; 16],
    scratch: &mut Scratch,
    out: &mut Vec<u32>,
) {
    let Scratch {
        cands,
        ends,
        probes,
        masks,
    } = scratch;
    cands.clear();
    ends.clear();
    probes.clear();
    let hashes = &seg.hashes[..];
    let m = stats::mark();
    // 1. Every bucket to visit, for every query of the group (no memory
    //    traffic yet). Each query's own probes find all of its matches, so a
    //    candidate is verified against its own query only.
    for (qi, q) in qs.iter().enumerate() {
        let query = qi as u32;
        if radii[0] >= 0 {
            let base = PdqSegment::primary_cell(q, seg.primary_dir);
            for &(mask, flips) in masks.get(seg.primary_dir, radii[0] as u32) {
                probes.push(Probe {
                    table: 0,
                    query,
                    cell: base ^ mask,
                    rem: flips,
                    qlo: 0,
                    lo: 0,
                    hi: 0,
                });
            }
        }
        for (ti, (tab, &r)) in seg.tables.iter().zip(&radii[1..]).enumerate() {
            if r < 0 {
                continue;
            }
            let key = extract(q, tab.start, tab.bits);
            let base = key >> tab.low_bits;
            let qlo = key & (((1u64 << tab.low_bits) - 1) as u32);
            for &(mask, flips) in masks.get(tab.dir_bits, r as u32) {
                probes.push(Probe {
                    table: ti as u32 + 1,
                    query,
                    cell: base ^ mask,
                    rem: r as u32 - flips,
                    qlo,
                    lo: 0,
                    hi: 0,
                });
            }
        }
    }
    let m = stats::lap(0, m);
    // 2. Software pipeline over the probes: prefetch the directory word of
    //    probe i, read the directory of probe i − D and prefetch its bucket,
    //    scan the bucket of probe i − 2D. About D misses stay in flight at
    //    each stage and data arrives just before it is needed.
    const D: usize = 16;
    // Directory, bucket array and position bits per table (0 = primary): the
    // pipeline indexes these instead of branching on the table.
    let mut dirs: [&[u32]; 16] = [&[]; 16];
    let mut ents: [&[u32]; 16] = [&[]; 16];
    let mut idx_bits = [0u32; 16];
    dirs[0] = &seg.primary_offsets;
    for (k, tab) in seg.tables.iter().enumerate() {
        dirs[k + 1] = &tab.offsets;
        ents[k + 1] = &tab.entries;
        idx_bits[k + 1] = tab.idx_bits;
    }
    let n = probes.len();
    let avx512 = cfg!(target_arch = "x86_64") && level == Level::Avx512;
    let mut cur_query = 0;
    for i in 0..n + 2 * D {
        if i < n {
            let p = &probes[i];
            prefetch(&dirs[p.table as usize][p.cell as usize]);
        }
        if (D..n + D).contains(&i) {
            let p = &mut probes[i - D];
            let offs = dirs[p.table as usize];
            p.lo = offs[p.cell as usize];
            p.hi = offs[p.cell as usize + 1];
            let (lo, hi) = (p.lo as usize, p.hi as usize);
            if p.table == 0 {
                prefetch_range(&hashes[lo..hi]);
            } else {
                prefetch_range(&ents[p.table as usize][lo..hi]);
            }
        }
        if i < 2 * D || i - 2 * D >= n {
            continue;
        }
        let p = &probes[i - 2 * D];
        let (lo, hi) = (p.lo as usize, p.hi as usize);
        if p.table == 0 {
            let q = &qs[p.query as usize];
            for (k, h) in hashes[lo..hi].iter().enumerate() {
                if hamming(h, q) <= t {
                    out.push((lo + k) as u32);
                }
            }
            continue;
        }
        // Candidates are grouped by query (probes are): `ends[q]` closes query q's.
        while cur_query < p.query {
            ends.push(cands.len() as u32);
            cur_query += 1;
        }
        let bucket = &ents[p.table as usize][lo..hi];
        let bits = idx_bits[p.table as usize];
        #[cfg(target_arch = "x86_64")]
        if avx512 {
            // SAFETY: `level` is `Avx512` only when the CPU has these features
            // (`Level::clamp_to_cpu`, checked by `search`).
            unsafe { filter_avx512(bucket, bits, p.qlo, p.rem, cands) };
            continue;
        }
        filter_scalar(bucket, bits, p.qlo, p.rem, cands);
    }
    while ends.len() < qs.len() {
        ends.push(cands.len() as u32);
    }
    let m = stats::lap(2, m);
    stats::add(4, probes.len() as u64);
    stats::add(5, probes.iter().map(|p| u64::from(p.hi - p.lo)).sum());
    stats::add(6, cands.len() as u64);
    // 3. Verification, prefetching the candidate hash well ahead: candidates
    //    are independent misses, so many can be in flight.
    const V: usize = 32;
    let mut start = 0;
    for (q, &end) in qs.iter().zip(ends.iter()) {
        let end = end as usize;
        for i in start..end {
            if let Some(&ahead) = cands.get(i + V) {
                prefetch(&hashes[ahead as usize]);
            }
            let p = cands[i];
            if hamming(&hashes[p as usize], q) <= t {
                out.push(p);
            }
        }
        start = end;
    }
    stats::lap(3, m);
}

/// Appends to `out` the position of every entry of `bucket` whose stored key
/// bits (above `idx_bits`) are within `rem` of `qlo`. Branch-free: about one
/// entry in eight passes, so a branch per entry would mispredict often.
#[inline(always)]
fn filter_scalar(bucket: &[u32], idx_bits: u32, qlo: u32, rem: u32, out: &mut Vec<u32>) {
    let idx_mask = ((1u64 << idx_bits) - 1) as u32;
    let mut len = out.len();
    out.resize(len + bucket.len(), 0);
    let dst = &mut out[..];
    for &e in bucket {
        let key = (u64::from(e) >> idx_bits) as u32;
        dst[len] = e & idx_mask;
        len += usize::from((key ^ qlo).count_ones() <= rem);
    }
    out.truncate(len);
}

/// [`filter_scalar`], sixteen entries at a time.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512 VPOPCNTDQ.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vpopcntdq")]
unsafe fn filter_avx512(bucket: &[u32], idx_bits: u32, qlo: u32, rem: u32, out: &mut Vec<u32>) {
    use std::arch::x86_64::*;
    let idx_mask = ((1u64 << idx_bits) - 1) as u32;
    // Each step stores a full vector (compressing into a register, then one
    // plain store, is much faster than a compressing store on some CPUs).
    out.reserve(bucket.len() + 16);
    let start = out.len();
    let mut len = start;
    let shift = _mm_cvtsi32_si128(idx_bits as i32);
    let vq = _mm512_set1_epi32(qlo as i32);
    let vrem = _mm512_set1_epi32(rem as i32);
    let vmask = _mm512_set1_epi32(idx_mask as i32);
    for chunk in bucket.chunks(16) {
        let live: __mmask16 = if chunk.len() == 16 {
            0xffff
        } else {
            (1u16 << chunk.len()) - 1
        };
        // SAFETY: lanes outside `live` are not read (masked load).
        let v = unsafe { _mm512_maskz_loadu_epi32(live, chunk.as_ptr().cast()) };
        let d = _mm512_popcnt_epi32(_mm512_xor_si512(_mm512_srl_epi32(v, shift), vq));
        let pass = _mm512_mask_cmple_epu32_mask(live, d, vrem);
        let pos = _mm512_maskz_compress_epi32(pass, _mm512_and_si512(v, vmask));
        // SAFETY: `len + 16 <= start + bucket.len() + 16 <= capacity` (reserved above).
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(len).cast(), pos) };
        len += pass.count_ones() as usize;
    }
    // SAFETY: elements below `len` were written (the compressed lanes first).
    unsafe { out.set_len(len) };
}

/// Cached XOR masks of the Hamming ball, per (bits, radius).
#[derive(Default)]
pub struct Masks {
    /// `((bits, radius), [(mask, popcount)])`.
    cache: Vec<MaskSet>,
}

type MaskSet = ((u32, u32), Vec<(u32, u32)>);

/// Largest radius whose masks are shared by every thread (ball(26, 4) is
/// ~18k masks); larger balls are cached per [`Scratch`].
const SHARED_RADIUS: u32 = 4;

/// Masks shared process-wide, per (bits ≤ 26, radius ≤ [`SHARED_RADIUS`]):
/// a caller that builds a new [`Scratch`] per request (one query through the
/// binding) would otherwise regenerate and sort them every time.
static SHARED_MASKS: [[SharedBall; SHARED_RADIUS as usize + 1]; 27] =
    [const { [const { SharedBall::new() }; SHARED_RADIUS as usize + 1] }; 27];

type SharedBall = std::sync::OnceLock<Box<[(u32, u32)]>>;

/// Every `(mask, popcount(mask))` over `d` bits with popcount ≤ `r`, in
/// ascending mask order: cells `base ^ mask` that share their high bits come
/// together, so consecutive probes read neighbouring directory words and
/// bucket entries.
fn ball_masks(d: u32, r: u32) -> Vec<(u32, u32)> {
    let mut v = Vec::new();
    for_each_cell(0, d, r, &mut |c, f| v.push((c, f)));
    v.sort_unstable();
    v
}

impl Masks {
    /// Every `(mask, popcount(mask))` over `d` bits with popcount ≤ `r`, ascending.
    fn get(&mut self, d: u32, r: u32) -> &[(u32, u32)] {
        if d <= 26 && r <= SHARED_RADIUS {
            return SHARED_MASKS[d as usize][r as usize]
                .get_or_init(|| ball_masks(d, r).into_boxed_slice());
        }
        let i = match self.cache.iter().position(|(k, _)| *k == (d, r)) {
            Some(i) => i,
            None => {
                self.cache.push(((d, r), ball_masks(d, r)));
                self.cache.len() - 1
            }
        };
        &self.cache[i].1
    }
}

impl Persist for PdqSegment {
    fn write_to(&self, w: &mut Writer) -> io::Result<()> {
        w.word(u64::from(self.primary_dir));
        w.word(self.primary_skew.to_bits());
        w.word(self.tables.len() as u64);
        w.array(&self.hashes)?;
        w.array(&self.ids)?;
        w.array(&self.primary_offsets)?;
        for t in self.tables.iter() {
            w.word(u64::from(t.start));
            w.word(u64::from(t.bits));
            w.word(u64::from(t.dir_bits));
            w.word(t.skew.to_bits());
            w.array(&t.offsets)?;
            w.array(&t.entries)?;
        }
        Ok(())
    }

    fn read_from(r: &mut Reader) -> Result<Self, CoreError> {
        let primary_dir = r.word_at_most(24, "primary directory bits")? as u32;
        let primary_skew = f64::from_bits(r.word()?);
        let n_tables = r.word_at_most(15, "secondary tables")? as usize;
        let hashes = r.array::<Pdq>()?;
        let n = hashes.len();
        let ids = r.array_of::<u64>(n)?;
        let primary_offsets = r.array_of::<u32>((1usize << primary_dir) + 1)?;
        check_offsets(&primary_offsets, n, "primary directory")?;
        let mut tables = Vec::with_capacity(n_tables);
        // Exact recall rests on disjoint substrings (the pigeonhole); the
        // primary's are its directory bits, the top ones.
        let mut used = [false; 256];
        used[256 - primary_dir as usize..].fill(true);
        for _ in 0..n_tables {
            let start = r.word_at_most(255, "table start")? as u32;
            let bits = r.word_at_most(32, "table bits")? as u32;
            let dir_bits = r.word_at_most(u64::from(bits.min(26)), "table directory bits")? as u32;
            let skew = f64::from_bits(r.word()?);
            if start + bits > 256 || bits == 0 {
                return Err(CoreError::Segment("a table outside the hash".into()));
            }
            let span = &mut used[start as usize..(start + bits) as usize];
            if span.iter().any(|&u| u) {
                return Err(CoreError::Segment("overlapping tables".into()));
            }
            span.fill(true);
            let low_bits = bits - dir_bits;
            if (n as u64) > 1u64 << (32 - low_bits) {
                return Err(CoreError::Segment(
                    "a table too narrow for its positions".into(),
                ));
            }
            let offsets = r.array_of::<u32>((1usize << dir_bits) + 1)?;
            check_offsets(&offsets, n, "table directory")?;
            let entries = r.array_of::<u32>(n)?;
            tables.push(Table {
                start,
                bits,
                dir_bits,
                low_bits,
                idx_bits: 32 - low_bits,
                offsets,
                entries,
                skew,
            });
        }
        let mut seg = PdqSegment {
            hashes,
            ids,
            primary_dir,
            primary_skew,
            primary_offsets,
            tables: tables.into_boxed_slice(),
            plans: Box::new([]),
        };
        seg.plans = (0..THRESHOLDS as u32).map(|t| seg.plan(t)).collect();
        Ok(seg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn flip(h: &Pdq, bits: &[usize]) -> Pdq {
        let mut out = *h;
        for &b in bits {
            out[b / 64] ^= 1 << (b % 64);
        }
        out
    }

    fn min_dist(h: &Pdq, qs: &[Pdq]) -> u32 {
        qs.iter().map(|q| hamming(h, q)).min().unwrap_or(u32::MAX)
    }

    fn oracle(entries: &[(Pdq, u64)], qs: &[Pdq], t: u32) -> Vec<u64> {
        let mut v: Vec<u64> = entries
            .iter()
            .filter(|(h, _)| min_dist(h, qs) <= t)
            .map(|e| e.1)
            .collect();
        v.sort_unstable();
        v
    }

    fn ids(seg: &PdqSegment, level: Level, qs: &[Pdq], t: u32) -> Vec<u64> {
        let mut out = vec![];
        seg.search(level, qs, t, &mut Scratch::default(), &mut out);
        let mut v: Vec<u64> = out.iter().map(|&p| seg.id_at(p)).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// A listed hash at distance exactly `t` that only the primary table's
    /// bucket holds: every secondary substring differs by one bit more than its
    /// radius, the primary's by exactly its radius. The primary bucket's own
    /// scan must keep it (`<= t`).
    #[test]
    fn a_match_only_the_primary_table_finds_is_kept_at_the_threshold() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let entries: Vec<(Pdq, u64)> = (0..300_000u64)
            .map(|i| ([next(), next(), next(), next()], i))
            .collect();
        let seg = PdqSegment::build(entries.clone());
        let t = 31u32;
        let Plan::Mih(r) = seg.plans[t as usize] else {
            panic!("a segment of 300,000 is searched by its tables at t = 31");
        };
        assert!(r[0] >= 0, "the primary table is probed");
        let mut bits: Vec<usize> = (0..r[0] as usize).map(|k| 255 - k).collect();
        for (tab, &ri) in seg.tables.iter().zip(&r[1..]) {
            let over = (ri + 1).max(0) as u32;
            bits.extend((tab.start..tab.start + over).map(|b| b as usize));
        }
        assert_eq!(bits.len(), t as usize, "radii + 1 sum to t + 1");
        for (target, id) in entries.iter().step_by(9973) {
            let query = flip(target, &bits);
            assert_eq!(hamming(target, &query), t);
            let mut out = Vec::new();
            seg.search(
                Level::current(),
                &[query],
                t,
                &mut Scratch::default(),
                &mut out,
            );
            assert!(
                out.iter().any(|&p| seg.id_at(p) == *id),
                "entry {id} at distance {t} not found"
            );
        }
    }

    #[test]
    fn sizing_helpers_compute_what_they_say() {
        let floor = [
            (0, 0),
            (1, 0),
            (2, 1),
            (3, 1),
            (4, 2),
            (1023, 9),
            (1024, 10),
        ];
        for (n, want) in floor {
            assert_eq!(log2_floor(n), want, "log2_floor({n})");
        }
        let ceil = [
            (0, 0),
            (1, 0),
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 3),
            (1024, 10),
            (1025, 11),
        ];
        for (n, want) in ceil {
            assert_eq!(log2_ceil(n), want, "log2_ceil({n})");
        }
        // Σ_{k ≤ r} C(n, k), against Pascal's triangle.
        for n in 0..=20u32 {
            let mut row = vec![1.0f64];
            for _ in 0..n {
                let mut next = vec![1.0; row.len() + 1];
                for k in 1..row.len() {
                    next[k] = row[k - 1] + row[k];
                }
                row = next;
            }
            for r in -1..=22i32 {
                let want: f64 = row.iter().take((r + 1).max(0) as usize).sum();
                assert_eq!(ball(n, r), want, "ball({n}, {r})");
            }
        }
    }

    #[test]
    fn cells_within_a_radius_are_each_visited_once_with_their_flips() {
        for d in 0..=10u32 {
            for r in 0..=4u32 {
                for base in [0u32, 1, 0b1011, (1 << d) - 1, 0x2aa & ((1 << d) - 1)] {
                    let base = base & ((1u32 << d) - 1);
                    let mut got = Vec::new();
                    for_each_cell(base, d, r, &mut |c, f| got.push((c, f)));
                    got.sort_unstable();
                    let want: Vec<(u32, u32)> = (0..1u32 << d)
                        .map(|c| (c, (c ^ base).count_ones()))
                        .filter(|&(_, f)| f <= r)
                        .collect();
                    assert_eq!(got, want, "d={d} r={r} base={base:#b}");
                }
            }
        }
    }

    /// Small `mih_min` so that tiny proptest segments use the tables.
    fn small_params(tables: u32) -> Params {
        Params {
            tables,
            mih_min: 0,
            dir_slack: 3,
        }
    }

    #[test]
    fn hamming_and_bytes() {
        assert_eq!(hamming(&[0; 4], &[0; 4]), 0);
        assert_eq!(hamming(&[0; 4], &[u64::MAX; 4]), 256);
        assert_eq!(hamming(&[1, 0, 0, 0], &[0, 0, 0, 1 << 63]), 2);
        let h = [1, 2, 3, u64::MAX];
        assert_eq!(pdq_from_bytes(&pdq_to_bytes(&h)), h);
        assert_eq!(extract(&[0, 0, 0, 1 << 63], 255, 1), 1);
        assert_eq!(extract(&[1 << 63, 1, 0, 0], 63, 2), 3);
    }

    #[test]
    fn radii_cover_threshold() {
        for m in 8..=16 {
            for t in 0..64 {
                let r = PdqSegment::radii(m, t);
                let s: i32 = r[..m as usize].iter().map(|&x| i32::from(x) + 1).sum();
                assert!(s > t as i32, "m={m} t={t}");
                assert!(r[1..m as usize].windows(2).all(|w| w[0] >= w[1]));
            }
        }
    }

    #[test]
    fn empty_and_find() {
        let seg = PdqSegment::build(vec![]);
        assert!(ids(&seg, Level::current(), &[[0; 4]], 63).is_empty());
        assert_eq!(seg.find(&[0; 4]), None);
        let seg = PdqSegment::build_with(
            vec![([0; 4], 1), ([u64::MAX; 4], 2), ([5, 6, 7, 8], 3)],
            small_params(11),
        );
        assert_eq!(seg.find(&[5, 6, 7, 8]).map(|p| seg.id_at(p)), Some(3));
        assert_eq!(seg.find(&[5, 6, 7, 9]), None);
        for level in Level::available() {
            assert_eq!(ids(&seg, level, &[[0; 4]], 0), vec![1]);
            assert_eq!(ids(&seg, level, &[[u64::MAX; 4]], 63), vec![2]);
        }
    }

    /// Degenerate data (every hash alike outside 16 bits) puts whole segments
    /// in one bucket per table: the plan falls back to the linear scan rather
    /// than doing worse than it, and answers stay exact.
    #[test]
    fn skewed_segment_plans_a_scan() {
        let entries: Vec<(Pdq, u64)> = (0..65536u64).map(|i| ([i, 0, 0, 0], i)).collect();
        let seg = PdqSegment::build(entries.clone());
        assert!(seg.is_indexed());
        assert!(matches!(seg.plans[31], Plan::Flat));
        let q = [5, 0, 0, 1];
        assert_eq!(
            ids(&seg, Level::current(), &[q], 31),
            oracle(&entries, &[q], 31)
        );
        let random = PdqSegment::build(
            (0..65536u64)
                .map(|i| {
                    let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    (
                        [
                            x,
                            x.rotate_left(17),
                            x.rotate_left(31),
                            x.rotate_left(47) ^ i,
                        ],
                        i,
                    )
                })
                .collect(),
        );
        assert!(matches!(random.plans[31], Plan::Mih(_)));
    }

    /// The pigeonhole needs disjoint substrings: the secondaries never overlap
    /// each other or the primary's directory bits, whatever the size and table count.
    #[test]
    fn substrings_are_disjoint_and_fit_their_entries() {
        for n in [0usize, 1, 300, 2048, 5000, 70_000] {
            for tables in 8..=16 {
                let entries: Vec<(Pdq, u64)> = (0..n as u64)
                    .map(|i| {
                        let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                        ([x, x.rotate_left(9), x.rotate_left(27), x ^ i], i)
                    })
                    .collect();
                let seg = PdqSegment::build_with(entries, small_params(tables));
                let mut used = [false; 256];
                for b in 256 - seg.primary_dir..256 {
                    used[b as usize] = true;
                }
                for tab in seg.tables.iter() {
                    assert!(tab.bits <= 32 && tab.start + tab.bits <= 256);
                    assert!(tab.dir_bits <= tab.bits);
                    assert!(n as u64 <= 1u64 << tab.idx_bits, "n={n} positions fit");
                    for b in tab.start..tab.start + tab.bits {
                        assert!(!used[b as usize], "n={n} tables={tables}: bit {b} twice");
                        used[b as usize] = true;
                    }
                }
            }
        }
    }

    /// Buckets of every size, from one entry to several SIMD widths, against
    /// the linear scan on every level, at thresholds around the radius steps.
    #[test]
    fn bucket_filters_match_the_scan() {
        let mut x = 7u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut entries: Vec<(Pdq, u64)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while entries.len() < 20_000 {
            let centre = [next(), next(), next(), next()];
            for _ in 0..1 + next() % 40 {
                let bits: Vec<usize> = (0..next() % 24).map(|_| (next() % 256) as usize).collect();
                let h = flip(&centre, &bits);
                if seen.insert(h) {
                    entries.push((h, entries.len() as u64));
                }
            }
        }
        for dir_slack in [0, 3, 6] {
            let seg = PdqSegment::build_with(
                entries.clone(),
                Params {
                    tables: 11,
                    mih_min: 0,
                    dir_slack,
                },
            );
            let queries: Vec<Pdq> = (0..40)
                .map(|i| {
                    let bits: Vec<usize> = (0..i % 36).map(|_| (next() % 256) as usize).collect();
                    flip(&entries[(next() % 20_000) as usize].0, &bits)
                })
                .collect();
            for t in [10, 21, 31, 32, 42] {
                for q in &queries {
                    let mut want = vec![];
                    seg.search_linear(Level::Portable, &[*q], t, &mut want);
                    for level in Level::available() {
                        let mut got = vec![];
                        seg.search(level, &[*q], t, &mut Scratch::default(), &mut got);
                        got.sort_unstable();
                        got.dedup();
                        assert_eq!(got, want, "slack={dir_slack} t={t} {level:?}");
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_brute_force(
            seeds in proptest::collection::vec(any::<[u64; 4]>(), 1..300),
            t in 0u32..64,
            tables in 8u32..=16,
            flips in proptest::collection::vec(0usize..256, 0..80),
            qseed in any::<[u64; 4]>(),
        ) {
            let mut bits = flips.clone();
            bits.sort_unstable();
            bits.dedup();
            // Entries: the seeds, plus near-duplicates of seed 0 at t-1, t, t+1 and
            // the all-zero / all-one hashes.
            let mut entries: Vec<(Pdq, u64)> = vec![];
            let push = |h: Pdq, entries: &mut Vec<(Pdq, u64)>| {
                if !entries.iter().any(|e| e.0 == h) {
                    let id = entries.len() as u64;
                    entries.push((h, id));
                }
            };
            for s in &seeds {
                push(*s, &mut entries);
            }
            for d in [t.saturating_sub(1), t, t + 1] {
                let d = (d as usize).min(bits.len());
                push(flip(&seeds[0], &bits[..d]), &mut entries);
            }
            push([0; 4], &mut entries);
            push([u64::MAX; 4], &mut entries);
            let seg = PdqSegment::build_with(entries.clone(), small_params(tables));
            let queries = [seeds[0], qseed, [0; 4], [u64::MAX; 4], flip(&seeds[0], &bits)];
            for level in Level::available() {
                for q in &queries {
                    prop_assert_eq!(ids(&seg, level, &[*q], t), oracle(&entries, &[*q], t));
                }
                prop_assert_eq!(ids(&seg, level, &queries, t), oracle(&entries, &queries, t));
            }
            for (h, id) in &entries {
                prop_assert_eq!(seg.find(h).map(|p| seg.id_at(p)), Some(*id));
            }
            let keys: Vec<Pdq> = entries.iter().map(|e| e.0).chain(queries).collect();
            let mut got = vec![];
            seg.find_each(keys.len(), |i| &keys[i], |i, p| got.push((i, p)));
            let want: Vec<(usize, u32)> =
                keys.iter().enumerate().filter_map(|(i, k)| seg.find(k).map(|p| (i, p))).collect();
            prop_assert_eq!(got, want);
        }
    }
}
