//! Tiers: one hash type of one list as a short stack of immutable segments.
//!
//! A write never modifies a segment: additions become a new (small) segment,
//! retirements are recorded in the per-segment sorted list of dead positions
//! (copied on write). Readers therefore keep using whatever snapshot they
//! loaded. Segments are merged size-tiered (each segment is kept larger than
//! all newer ones together), so a tier has `O(log n)` segments and an entry is
//! rebuilt `O(log n)` times over its life; the merges run off the read path.
//!
//! Invariant: a key is live in at most one segment of a tier.

use std::collections::HashSet;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use crate::error::CoreError;
use crate::exact::ExactSegment;
use crate::pdq::{Pdq, PdqSegment};
use crate::persist::{Persist, Reader, Writer};

/// An immutable segment type.
pub trait Segment: Send + Sync + Sized + 'static {
    type Key: Copy + Ord + std::hash::Hash + Send + Sync;
    /// Merge the newest parts into an older one once they hold `1 / MERGE_FACTOR`
    /// of its entries: higher keeps fewer parts (cheaper reads, more rebuilding).
    const MERGE_FACTOR: usize = 1;
    /// Builds from entries with unique keys.
    fn build(entries: Vec<(Self::Key, u64)>) -> Self;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn find(&self, key: &Self::Key) -> Option<u32>;
    /// Calls `hit(i, pos)` for every `key(i)`, `i < n`, present.
    fn find_each<'k>(
        &self,
        n: usize,
        key: impl Fn(usize) -> &'k Self::Key,
        mut hit: impl FnMut(usize, u32),
    ) where
        Self::Key: 'k,
    {
        for i in 0..n {
            if let Some(p) = self.find(key(i)) {
                hit(i, p);
            }
        }
    }
    fn key_at(&self, pos: u32) -> Self::Key;
    fn id_at(&self, pos: u32) -> u64;
    fn memory_bytes(&self) -> usize;
}

impl<const N: usize> Segment for ExactSegment<N> {
    type Key = [u8; N];
    // Every lookup probes every part, and exact segments rebuild quickly.
    const MERGE_FACTOR: usize = 4;
    fn build(entries: Vec<([u8; N], u64)>) -> Self {
        ExactSegment::build(entries)
    }
    fn len(&self) -> usize {
        ExactSegment::len(self)
    }
    fn find(&self, key: &[u8; N]) -> Option<u32> {
        ExactSegment::find(self, key)
    }
    fn find_each<'k>(
        &self,
        n: usize,
        key: impl Fn(usize) -> &'k [u8; N],
        hit: impl FnMut(usize, u32),
    ) {
        ExactSegment::find_each(self, n, key, hit)
    }
    fn key_at(&self, pos: u32) -> [u8; N] {
        ExactSegment::key_at(self, pos)
    }
    fn id_at(&self, pos: u32) -> u64 {
        ExactSegment::id_at(self, pos)
    }
    fn memory_bytes(&self) -> usize {
        ExactSegment::memory_bytes(self)
    }
}

impl Segment for PdqSegment {
    type Key = Pdq;
    fn build(entries: Vec<(Pdq, u64)>) -> Self {
        PdqSegment::build(entries)
    }
    fn len(&self) -> usize {
        PdqSegment::len(self)
    }
    fn find(&self, key: &Pdq) -> Option<u32> {
        PdqSegment::find(self, key)
    }
    fn find_each<'k>(&self, n: usize, key: impl Fn(usize) -> &'k Pdq, hit: impl FnMut(usize, u32)) {
        PdqSegment::find_each(self, n, key, hit)
    }
    fn key_at(&self, pos: u32) -> Pdq {
        self.hash_at(pos)
    }
    fn id_at(&self, pos: u32) -> u64 {
        PdqSegment::id_at(self, pos)
    }
    fn memory_bytes(&self) -> usize {
        PdqSegment::memory_bytes(self)
    }
}

/// One segment and the sorted positions retired from it.
pub struct Part<S> {
    pub seg: Arc<S>,
    pub dead: Arc<Vec<u32>>,
}

impl<S> Clone for Part<S> {
    fn clone(&self) -> Self {
        Part {
            seg: Arc::clone(&self.seg),
            dead: Arc::clone(&self.dead),
        }
    }
}

impl<S: Segment> Part<S> {
    fn new(seg: S) -> Self {
        Part {
            seg: Arc::new(seg),
            dead: Arc::new(Vec::new()),
        }
    }

    /// Whether `pos` was retired.
    #[inline]
    pub fn is_dead(&self, pos: u32) -> bool {
        !self.dead.is_empty() && self.dead.binary_search(&pos).is_ok()
    }

    pub fn live(&self) -> usize {
        self.seg.len() - self.dead.len()
    }
}

/// Sorted union of two sorted, disjoint position lists.
fn union_sorted(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] < b[j] {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// Positions in `now` but not in `before` (both sorted, `before ⊆ now`).
fn difference_sorted(now: &[u32], before: &[u32]) -> Vec<u32> {
    now.iter()
        .copied()
        .filter(|p| before.binary_search(p).is_err())
        .collect()
}

/// Most segments a tier keeps before merging the newest ones regardless of size.
const MAX_PARTS: usize = 10;

/// A stack of segments, oldest (largest) first.
pub struct Tier<S> {
    pub parts: Vec<Part<S>>,
}

impl<S> Clone for Tier<S> {
    fn clone(&self) -> Self {
        Tier {
            parts: self.parts.clone(),
        }
    }
}

impl<S> Default for Tier<S> {
    fn default() -> Self {
        Tier { parts: Vec::new() }
    }
}

/// A merge to run: the parts at `range`, as they were when planned.
pub struct MergePlan<S> {
    pub range: Range<usize>,
    pub sources: Vec<Part<S>>,
}

impl<S: Segment> Tier<S> {
    /// Live entries.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Part::live).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn memory_bytes(&self) -> usize {
        self.parts
            .iter()
            .map(|p| p.seg.memory_bytes() + p.dead.len() * 4)
            .sum()
    }

    /// Where `key` is live: `(part, position)`.
    pub fn locate(&self, key: &S::Key) -> Option<(usize, u32)> {
        self.parts.iter().enumerate().rev().find_map(|(i, p)| {
            p.seg
                .find(key)
                .filter(|&pos| !p.is_dead(pos))
                .map(|pos| (i, pos))
        })
    }

    /// [`Tier::locate`] for many keys at once (lookups pipelined per segment).
    fn locate_many<'k, T>(
        &self,
        items: &'k [T],
        key: impl Fn(usize) -> &'k S::Key,
    ) -> Vec<Option<(usize, u32)>> {
        let mut loc = vec![None; items.len()];
        if self.parts.is_empty() {
            return loc;
        }
        for (pi, part) in self.parts.iter().enumerate().rev() {
            part.seg.find_each(items.len(), &key, |i, pos| {
                if loc[i].is_none() && !part.is_dead(pos) {
                    loc[i] = Some((pi, pos));
                }
            });
        }
        loc
    }

    /// The live id of `key`.
    pub fn get(&self, key: &S::Key) -> Option<u64> {
        self.locate(key)
            .map(|(i, pos)| self.parts[i].seg.id_at(pos))
    }

    /// A new tier with `dels` retired, then `adds` upserted (keys in `adds`
    /// must be unique). `self` is unchanged.
    pub fn with_changes(&self, dels: &[S::Key], adds: Vec<(S::Key, u64)>) -> Tier<S> {
        let mut retired: HashSet<(usize, u32)> = HashSet::new();
        for loc in self.locate_many(dels, |i| &dels[i]).into_iter().flatten() {
            retired.insert(loc);
        }
        let found = self.locate_many(&adds, |i| &adds[i].0);
        let mut fresh = Vec::with_capacity(adds.len());
        for ((k, id), loc) in adds.into_iter().zip(found) {
            match loc {
                Some(loc) if !retired.contains(&loc) => {
                    if self.parts[loc.0].seg.id_at(loc.1) == id {
                        continue; // already live with this id
                    }
                    retired.insert(loc);
                }
                _ => {}
            }
            fresh.push((k, id));
        }
        let mut out = self.clone();
        if !retired.is_empty() {
            let mut per_part: Vec<Vec<u32>> = vec![Vec::new(); out.parts.len()];
            for (i, pos) in retired {
                per_part[i].push(pos);
            }
            for (part, mut new_dead) in out.parts.iter_mut().zip(per_part) {
                if !new_dead.is_empty() {
                    new_dead.sort_unstable();
                    part.dead = Arc::new(union_sorted(&part.dead, &new_dead));
                }
            }
        }
        if !fresh.is_empty() {
            out.parts.push(Part::new(S::build(fresh)));
        }
        out.parts.retain(|p| p.live() > 0);
        out
    }

    /// The next merge worth doing, if any: the newest parts as soon as they
    /// hold at least 1 / `MERGE_FACTOR` as many live entries as the part
    /// before them; too many
    /// parts; or a part with a quarter of its entries retired.
    pub fn plan(&self) -> Option<MergePlan<S>> {
        let n = self.parts.len();
        let mut newer = 0usize;
        let mut start = None;
        for i in (0..n).rev() {
            let live = self.parts[i].live();
            if i + 1 < n && live <= newer * S::MERGE_FACTOR {
                start = Some(i);
            }
            newer += live;
        }
        if start.is_none() && n > MAX_PARTS {
            start = Some(n - 2);
        }
        let range = match start {
            Some(s) => s..n,
            None => {
                let i = self
                    .parts
                    .iter()
                    .position(|p| p.dead.len() * 4 > p.seg.len())?;
                i..i + 1
            }
        };
        Some(MergePlan {
            sources: self.parts[range.clone()].to_vec(),
            range,
        })
    }

    /// Builds the segment that replaces `plan.sources` (their live entries).
    pub fn merge(plan: &MergePlan<S>) -> S {
        let total = plan.sources.iter().map(Part::live).sum();
        let mut entries = Vec::with_capacity(total);
        for p in &plan.sources {
            let mut dead = p.dead.iter().peekable();
            for pos in 0..p.seg.len() as u32 {
                if dead.peek() == Some(&&pos) {
                    dead.next();
                    continue;
                }
                entries.push((p.seg.key_at(pos), p.seg.id_at(pos)));
            }
        }
        S::build(entries)
    }

    /// Installs `merged` for `plan` if the planned parts are still in place;
    /// retirements made since planning are carried over. Returns whether it did.
    pub fn install(&mut self, plan: &MergePlan<S>, merged: S) -> bool {
        // Parts may have moved (emptied parts are dropped): find the sources.
        let Some(first) = plan.sources.first() else {
            return false;
        };
        let Some(start) = self
            .parts
            .iter()
            .position(|p| Arc::ptr_eq(&p.seg, &first.seg))
        else {
            return false;
        };
        let range = start..start + plan.sources.len();
        let Some(current) = self.parts.get(range.clone()) else {
            return false;
        };
        if current
            .iter()
            .zip(&plan.sources)
            .any(|(c, s)| !Arc::ptr_eq(&c.seg, &s.seg))
        {
            return false;
        }
        let mut dead = Vec::new();
        for (c, s) in current.iter().zip(&plan.sources) {
            if Arc::ptr_eq(&c.dead, &s.dead) {
                continue;
            }
            for pos in difference_sorted(&c.dead, &s.dead) {
                if let Some(p) = merged.find(&c.seg.key_at(pos)) {
                    dead.push(p);
                }
            }
        }
        dead.sort_unstable();
        dead.dedup();
        let part = Part {
            seg: Arc::new(merged),
            dead: Arc::new(dead),
        };
        self.parts.splice(range, std::iter::once(part));
        self.parts.retain(|p| p.live() > 0);
        true
    }

    /// Runs every planned merge now (tests and synchronous mode).
    pub fn compact_all(&mut self) {
        while let Some(plan) = self.plan() {
            let merged = Self::merge(&plan);
            let installed = self.install(&plan, merged);
            debug_assert!(installed);
        }
    }
}

/// Every part as it is: its retired positions, then its segment.
impl<S: Segment + Persist> Persist for Tier<S> {
    fn write_to(&self, w: &mut Writer) -> io::Result<()> {
        w.word(self.parts.len() as u64);
        for p in &self.parts {
            w.array(&p.dead)?;
            p.seg.write_to(w)?;
        }
        Ok(())
    }

    fn read_from(r: &mut Reader) -> Result<Self, CoreError> {
        let n = r.word_at_most(1 << 16, "parts of a tier")?;
        let mut parts = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let dead = r.array::<u32>()?.to_vec();
            let seg = S::read_from(r)?;
            let in_order = dead.windows(2).all(|w| w[0] < w[1])
                && dead.last().is_none_or(|&p| (p as usize) < seg.len());
            if !in_order {
                return Err(CoreError::Segment("retired positions out of order".into()));
            }
            parts.push(Part {
                seg: Arc::new(seg),
                dead: Arc::new(dead),
            });
        }
        Ok(Tier { parts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    type T = Tier<ExactSegment<16>>;

    fn key(i: u8) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[0] = i.wrapping_mul(37);
        k[15] = i;
        k
    }

    proptest! {
        /// A tier behaves like a map under any sequence of batches, with and
        /// without merges, and merges planned before later writes still install.
        #[test]
        fn behaves_like_a_map(
            batches in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..8),
                 proptest::collection::vec((any::<u8>(), 0u64..3), 0..40)),
                1..30),
            compact_every in 1usize..5,
        ) {
            let mut tier = T::default();
            let mut model: BTreeMap<[u8; 16], u64> = BTreeMap::new();
            let mut pending: Option<MergePlan<ExactSegment<16>>> = None;
            for (n, (dels, adds)) in batches.into_iter().enumerate() {
                let dels: Vec<[u8; 16]> = dels.into_iter().map(key).collect();
                let mut dedup: BTreeMap<[u8; 16], u64> = BTreeMap::new();
                for (k, id) in &adds {
                    dedup.insert(key(*k), *id);
                }
                for k in &dels {
                    model.remove(k);
                }
                for (k, id) in &dedup {
                    model.insert(*k, *id);
                }
                tier = tier.with_changes(&dels, dedup.into_iter().collect());
                if let Some(plan) = pending.take() {
                    let merged = T::merge(&plan);
                    tier.install(&plan, merged);
                }
                if n % compact_every == 0 {
                    pending = tier.plan();
                }
                prop_assert_eq!(tier.len(), model.len());
                for i in 0..=255u8 {
                    prop_assert_eq!(tier.get(&key(i)), model.get(&key(i)).copied());
                }
            }
            tier.compact_all();
            prop_assert!(tier.parts.len() <= 1 || tier.plan().is_none());
            for i in 0..=255u8 {
                prop_assert_eq!(tier.get(&key(i)), model.get(&key(i)).copied());
            }
        }
    }

    #[test]
    fn size_tiered_keeps_few_parts() {
        let mut tier = T::default();
        for b in 0..200u32 {
            let adds: Vec<([u8; 16], u64)> = (0..50u32)
                .map(|i| {
                    let mut k = [0u8; 16];
                    k[..4].copy_from_slice(&(b * 50 + i).wrapping_mul(2_654_435_761).to_be_bytes());
                    (k, u64::from(i))
                })
                .collect();
            tier = tier.with_changes(&[], adds);
            tier.compact_all();
            assert!(tier.parts.len() <= 9, "{} parts", tier.parts.len());
        }
        assert_eq!(tier.len(), 10_000);
    }
}
