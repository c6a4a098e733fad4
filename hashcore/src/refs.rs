//! Reference IDs of a list's entries: entry id → UTF-8 stored reference (the
//! reference ID, then the entry's labels, if any: see [`crate::labels`]).
//!
//! A persistent (copy-on-write) map in pages of 256 consecutive entry ids. The
//! store hands out entry ids in increasing order per list, so pages are dense.
//! A page keeps its ids' low bytes (sorted), one end offset per entry and the
//! references concatenated: 5 bytes + the reference per entry, plus ~0.5 byte
//! of per-page overhead. A write copies only the pages it touches; a removed
//! entry's bytes are gone with the old page once no snapshot holds it, and an
//! emptied page is dropped, so churn does not grow memory.

use std::collections::BTreeMap;
use std::sync::Arc;

const PAGE_BITS: u32 = 8;

/// One page: the entries whose ids share everything but the low byte.
struct Page {
    lows: Box<[u8]>,
    ends: Box<[u32]>,
    text: Box<str>,
}

impl Page {
    fn get(&self, low: u8) -> Option<&str> {
        // A page full from its first id (the usual case) needs no search.
        let i = match self.lows.get(usize::from(low)) {
            Some(&l) if l == low => usize::from(low),
            _ => self.lows.binary_search(&low).ok()?,
        };
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text.get(start..self.ends[i] as usize)
    }

    fn entries(&self) -> impl Iterator<Item = (u8, &str)> {
        let mut start = 0usize;
        self.lows
            .iter()
            .zip(self.ends.iter())
            .map(move |(&low, &end)| {
                let s = self.text.get(start..end as usize).unwrap_or("");
                start = end as usize;
                (low, s)
            })
    }

    fn build(entries: &BTreeMap<u8, &str>) -> Page {
        let bytes: usize = entries.values().map(|s| s.len()).sum();
        let mut text = String::with_capacity(bytes);
        let mut lows = Vec::with_capacity(entries.len());
        let mut ends = Vec::with_capacity(entries.len());
        for (&low, s) in entries {
            text.push_str(s);
            lows.push(low);
            // A page holds at most 256 references of at most 4 GiB in all.
            ends.push(u32::try_from(text.len()).unwrap_or(u32::MAX));
        }
        Page {
            lows: lows.into_boxed_slice(),
            ends: ends.into_boxed_slice(),
            text: text.into_boxed_str(),
        }
    }

    fn memory_bytes(&self) -> usize {
        // Struct, Arc counts, map slot and three allocations' headers.
        const OVERHEAD: usize = 48 + 16 + 16 + 3 * 16;
        self.lows.len() * 5 + self.text.len() + OVERHEAD
    }
}

/// Entry id → reference of one list; cheap to clone (pages are shared).
#[derive(Clone, Default)]
pub struct RefStore {
    pages: BTreeMap<u64, Arc<Page>>,
    len: usize,
}

impl RefStore {
    /// The reference of entry `id`.
    #[inline]
    pub fn get(&self, id: u64) -> Option<&str> {
        self.pages.get(&(id >> PAGE_BITS))?.get(id as u8)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A new store with `removed` ids dropped, then `added` inserted (a later
    /// addition of one id wins). `self` is unchanged.
    pub fn with_changes(&self, removed: &[u64], added: &[(u64, &str)]) -> RefStore {
        // Per touched page: the low bytes removed, and the (low byte, reference) added.
        type Changes<'a> = (Vec<u8>, Vec<(u8, &'a str)>);
        let mut touched: BTreeMap<u64, Changes<'_>> = BTreeMap::new();
        for &id in removed {
            if self.get(id).is_some() {
                touched.entry(id >> PAGE_BITS).or_default().0.push(id as u8);
            }
        }
        for &(id, r) in added {
            touched
                .entry(id >> PAGE_BITS)
                .or_default()
                .1
                .push((id as u8, r));
        }
        let mut out = self.clone();
        for (page_no, (gone, new)) in touched {
            let mut entries: BTreeMap<u8, &str> = self
                .pages
                .get(&page_no)
                .map(|p| p.entries().collect())
                .unwrap_or_default();
            let before = entries.len();
            for low in gone {
                entries.remove(&low);
            }
            for (low, r) in new {
                entries.insert(low, r);
            }
            out.len = out.len + entries.len() - before;
            if entries.is_empty() {
                out.pages.remove(&page_no);
            } else {
                out.pages.insert(page_no, Arc::new(Page::build(&entries)));
            }
        }
        out
    }

    /// Approximate heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.pages.values().map(|p| p.memory_bytes()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn replace_remove_and_release() {
        let s = RefStore::default().with_changes(&[], &[(1, "a"), (300, "bé"), (2, "c")]);
        assert_eq!(
            (s.get(1), s.get(300), s.get(2), s.get(3)),
            (Some("a"), Some("bé"), Some("c"), None)
        );
        assert_eq!(s.len(), 3);
        let t = s.with_changes(&[1, 7], &[(2, "d")]);
        assert_eq!((t.get(1), t.get(2)), (None, Some("d")));
        assert_eq!(s.get(1), Some("a"), "the old snapshot is unchanged");
        let u = t.with_changes(&[2, 300], &[]);
        assert!(u.is_empty());
        assert_eq!(u.memory_bytes(), 0, "emptied pages are dropped");
    }

    proptest! {
        #[test]
        fn matches_a_hash_map(ops in prop::collection::vec(
            (prop::collection::vec(0u64..2000, 0..20),
             prop::collection::vec((0u64..2000, "[a-z]{0,5}"), 0..20)), 1..10)) {
            let mut store = RefStore::default();
            let mut oracle: HashMap<u64, String> = HashMap::new();
            for (removed, added) in &ops {
                let added_refs: Vec<(u64, &str)> =
                    added.iter().map(|(i, s)| (*i, s.as_str())).collect();
                store = store.with_changes(removed, &added_refs);
                for id in removed { oracle.remove(id); }
                for (id, s) in added { oracle.insert(*id, s.clone()); }
                prop_assert_eq!(store.len(), oracle.len());
                for id in 0..2000 {
                    prop_assert_eq!(store.get(id), oracle.get(&id).map(String::as_str));
                }
            }
        }
    }
}
