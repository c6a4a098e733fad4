//! Platform policies: which lists answer for a tenant, and the hashes it
//! allow-listed (its own false positives: they produce no hits for it).

use std::collections::HashSet;

use crate::index::Key;
use crate::pdq::{Pdq, PdqSegment, Scratch};
use crate::simd::Level;

/// An allow-listed PDQ hash covers query hashes within this distance.
pub const ALLOW_PDQ_THRESHOLD: u32 = 31;

/// One tenant's subscriptions and allow-list.
pub struct Policy {
    all_lists: bool,
    /// Sorted list ids (used when `!all_lists`).
    lists: Vec<u32>,
    exact: HashSet<Key>,
    pdq: Option<PdqSegment>,
}

impl Policy {
    pub fn new(all_lists: bool, mut lists: Vec<u32>, allow: Vec<Key>) -> Policy {
        lists.sort_unstable();
        lists.dedup();
        let mut exact = HashSet::new();
        let mut pdq: Vec<Pdq> = Vec::new();
        for k in allow {
            match k {
                // A video frame is a PDQ hash: either form allow-lists it.
                Key::Pdq(h) | Key::Vpdq(h) => pdq.push(h),
                k => {
                    exact.insert(k);
                }
            }
        }
        pdq.sort_unstable();
        pdq.dedup();
        let pdq = (!pdq.is_empty()).then(|| {
            PdqSegment::build(
                pdq.into_iter()
                    .enumerate()
                    .map(|(i, h)| (h, i as u64))
                    .collect(),
            )
        });
        Policy {
            all_lists,
            lists,
            exact,
            pdq,
        }
    }

    /// Whether list `id` answers for this tenant.
    #[inline]
    pub fn wants(&self, id: u32) -> bool {
        self.all_lists || self.lists.binary_search(&id).is_ok()
    }

    pub fn has_allow_list(&self) -> bool {
        !self.exact.is_empty() || self.pdq.is_some()
    }

    /// Whether the tenant allow-listed query hash `key`.
    pub fn allows(
        &self,
        key: &Key,
        level: Level,
        scratch: &mut Scratch,
        pos: &mut Vec<u32>,
    ) -> bool {
        match key {
            Key::Pdq(h) | Key::Vpdq(h) => self.pdq.as_ref().is_some_and(|seg| {
                pos.clear();
                seg.search(
                    level,
                    std::slice::from_ref(h),
                    ALLOW_PDQ_THRESHOLD,
                    scratch,
                    pos,
                );
                !pos.is_empty()
            }),
            k => self.exact.contains(k),
        }
    }

    pub fn memory_bytes(&self) -> usize {
        self.lists.len() * 4
            + self.exact.len() * 48
            + self.pdq.as_ref().map_or(0, |s| s.memory_bytes())
    }
}
