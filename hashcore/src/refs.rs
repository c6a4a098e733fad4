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
use std::io;
use std::sync::Arc;

use crate::error::CoreError;
use crate::mem::HugeBuf;
use crate::persist::{Persist, Reader, Writer};

const PAGE_BITS: u32 = 8;

/// One page: the entries whose ids share everything but the low byte.
/// (Its arrays may point into a segment file: see [`crate::persist`].)
struct Page {
    lows: HugeBuf<u8>,
    ends: HugeBuf<u32>,
    /// The references, UTF-8 (checked when read: a file's bytes could be anything).
    text: HugeBuf<u8>,
}

impl Page {
    fn text(&self, start: usize, end: usize) -> Option<&str> {
        std::str::from_utf8(self.text.get(start..end)?).ok()
    }

    fn get(&self, low: u8) -> Option<&str> {
        let (start, end) = self.range(low)?;
        self.text(start, end)
    }

    /// Where the reference of `low` lies in `text`.
    #[inline]
    fn range(&self, low: u8) -> Option<(usize, usize)> {
        // A page full from its first id (the usual case) needs no search.
        let i = match self.lows.get(usize::from(low)) {
            Some(&l) if l == low => usize::from(low),
            _ => self.lows.binary_search(&low).ok()?,
        };
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        Some((start, self.ends[i] as usize))
    }

    fn entries(&self) -> impl Iterator<Item = (u8, &str)> {
        let mut start = 0usize;
        self.lows
            .iter()
            .zip(self.ends.iter())
            .map(move |(&low, &end)| {
                let s = self.text(start, end as usize).unwrap_or("");
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
            lows: HugeBuf::from_slice(&lows),
            ends: HugeBuf::from_slice(&ends),
            text: HugeBuf::from_slice(text.as_bytes()),
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
    /// `(page number, page)`, ascending by page number. A flat array rather
    /// than a tree: pages are dense (see above), so page `no` is nearly always
    /// at `no - first page number`, found with one read instead of a descent
    /// through tree nodes (each a dependent cache miss).
    pages: Vec<(u64, Arc<Page>)>,
    len: usize,
    /// The pages' [`Page::memory_bytes`], summed as pages change: asked for
    /// every second by the metrics, and at 100 M entries a walk over the
    /// pages took a tenth of a core.
    bytes: usize,
}

impl RefStore {
    /// The reference of entry `id`.
    #[inline]
    pub fn get(&self, id: u64) -> Option<&str> {
        self.page(id >> PAGE_BITS)?.get(id as u8)
    }

    /// Page `no`, if any: at its dense position, else searched.
    #[inline]
    fn page(&self, no: u64) -> Option<&Page> {
        let first = self.pages.first()?.0;
        let guess = usize::try_from(no.wrapping_sub(first)).unwrap_or(usize::MAX);
        match self.pages.get(guess) {
            Some((n, p)) if *n == no => Some(p),
            _ => {
                let i = self.pages.binary_search_by_key(&no, |e| e.0).ok()?;
                Some(&self.pages[i].1)
            }
        }
    }

    /// `out[i]` = `lookups[i].0.get(lookups[i].1)`, for many lookups at once
    /// (`out` is cleared first). A lookup is a chain of dependent cache misses
    /// (the page, its index arrays, the text); here each link is fetched for
    /// every lookup (prefetched) before the next link of any is read, so the
    /// misses of different lookups overlap instead of queueing.
    pub fn get_many<'a>(lookups: &[(&'a RefStore, u64)], out: &mut Vec<Option<&'a str>>) {
        out.clear();
        // The page of each lookup; its header fetched.
        let pages: Vec<Option<&'a Page>> = lookups
            .iter()
            .map(|&(store, id)| {
                let page = store.page(id >> PAGE_BITS);
                if let Some(p) = page {
                    crate::mem::prefetch(p);
                }
                page
            })
            .collect();
        // Its low bytes and ends, at the position of a full page.
        for (page, &(_, id)) in pages.iter().zip(lookups) {
            if let Some(p) = page {
                let low = usize::from(id as u8);
                if let Some(l) = p.lows.get(low) {
                    crate::mem::prefetch(l);
                }
                if let Some(e) = p.ends.get(low.saturating_sub(1)..=low) {
                    crate::mem::prefetch_range(e);
                }
            }
        }
        // The byte range of each reference; its text fetched.
        let ranges: Vec<Option<(usize, usize)>> = pages
            .iter()
            .zip(lookups)
            .map(|(page, &(_, id))| {
                let (start, end) = page.as_ref()?.range(id as u8)?;
                if let Some(t) = page.as_ref()?.text.get(start..end) {
                    crate::mem::prefetch_range(t);
                }
                Some((start, end))
            })
            .collect();
        out.extend(
            pages
                .iter()
                .zip(&ranges)
                .map(|(page, range)| page.as_ref()?.text(range.as_ref()?.0, range.as_ref()?.1)),
        );
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
        // The untouched pages are shared; both sides are in page order.
        let (mut len, mut bytes) = (self.len, self.bytes);
        let mut pages = Vec::with_capacity(self.pages.len() + touched.len());
        let mut old = self.pages.iter().peekable();
        for (page_no, (gone, new)) in touched {
            while let Some((no, p)) = old.next_if(|e| e.0 < page_no) {
                pages.push((*no, Arc::clone(p)));
            }
            let mut entries: BTreeMap<u8, &str> = match old.next_if(|e| e.0 == page_no) {
                Some((_, p)) => {
                    bytes -= p.memory_bytes();
                    p.entries().collect()
                }
                None => BTreeMap::new(),
            };
            let before = entries.len();
            for low in gone {
                entries.remove(&low);
            }
            for (low, r) in new {
                entries.insert(low, r);
            }
            len = len + entries.len() - before;
            if !entries.is_empty() {
                let page = Page::build(&entries);
                bytes += page.memory_bytes();
                pages.push((page_no, Arc::new(page)));
            }
        }
        pages.extend(old.map(|(no, p)| (*no, Arc::clone(p))));
        RefStore { pages, len, bytes }
    }

    /// Approximate heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.bytes
    }

    /// Every `(id, reference)`, in id order.
    pub fn entries(&self) -> impl Iterator<Item = (u64, &str)> {
        self.pages.iter().flat_map(|(no, page)| {
            let no = *no;
            page.entries()
                .map(move |(low, s)| ((no << PAGE_BITS) | u64::from(low), s))
        })
    }
}

/// Written as six arrays: page numbers; per page its first index into the low
/// bytes and ends (plus one final index), and its first text byte (idem); the
/// low bytes, ends (relative to the page's text) and texts of every page.
impl Persist for RefStore {
    fn write_to(&self, w: &mut Writer) -> io::Result<()> {
        let n = self.pages.len();
        let (mut nos, mut firsts, mut text_firsts) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n + 1),
            Vec::with_capacity(n + 1),
        );
        let (mut lows, mut ends, mut text) = (Vec::new(), Vec::new(), Vec::new());
        for (no, page) in &self.pages {
            nos.push(*no);
            firsts.push(lows.len() as u64);
            text_firsts.push(text.len() as u64);
            lows.extend_from_slice(&page.lows);
            ends.extend_from_slice(&page.ends);
            text.extend_from_slice(&page.text);
        }
        firsts.push(lows.len() as u64);
        text_firsts.push(text.len() as u64);
        w.word(self.len as u64);
        w.array(&nos)?;
        w.array(&firsts)?;
        w.array(&text_firsts)?;
        w.array(&lows)?;
        w.array(&ends)?;
        w.array(&text)
    }

    fn read_from(r: &mut Reader) -> Result<Self, CoreError> {
        let bad = |why: &str| CoreError::Segment(format!("references: {why}"));
        let len = r.word()? as usize;
        let nos = r.array::<u64>()?;
        let firsts = r.array_of::<u64>(nos.len() + 1)?;
        let text_firsts = r.array_of::<u64>(nos.len() + 1)?;
        let lows = r.array::<u8>()?;
        let ends = r.array_of::<u32>(lows.len())?;
        let text = r.array::<u8>()?;
        if lows.len() != len
            || firsts.last().map(|&x| x as usize) != Some(len)
            || text_firsts.last().map(|&x| x as usize) != Some(text.len())
        {
            return Err(bad("counts do not agree"));
        }
        let mut pages: Vec<(u64, Arc<Page>)> = Vec::with_capacity(nos.len());
        for (i, &no) in nos.iter().enumerate() {
            let (a, b) = (firsts[i] as usize, firsts[i + 1] as usize);
            let (ta, tb) = (text_firsts[i] as usize, text_firsts[i + 1] as usize);
            let in_order = a < b && b - a <= 256 && ta <= tb && tb <= text.len();
            let page = in_order
                .then(|| {
                    Some(Page {
                        lows: lows.slice(a, b - a)?,
                        ends: ends.slice(a, b - a)?,
                        text: text.slice(ta, tb - ta)?,
                    })
                })
                .flatten()
                .filter(|p| {
                    p.lows.windows(2).all(|w| w[0] < w[1])
                        && p.ends.windows(2).all(|w| w[0] <= w[1])
                        && p.ends.last().is_some_and(|&e| e as usize == tb - ta)
                })
                .ok_or_else(|| bad("a page out of order"))?;
            pages.push((no, Arc::new(page)));
        }
        // Written in page order; sorted anyway, as a map would be.
        if !pages.is_sorted_by_key(|e| e.0) {
            pages.sort_by_key(|e| e.0);
        }
        if pages.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(bad("a page twice"));
        }
        let bytes = pages.iter().map(|(_, p)| p.memory_bytes()).sum();
        Ok(RefStore { pages, len, bytes })
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
                let walked: usize = store.pages.iter().map(|(_, p)| p.memory_bytes()).sum();
                prop_assert_eq!(store.memory_bytes(), walked);
                for id in 0..2000 {
                    prop_assert_eq!(store.get(id), oracle.get(&id).map(String::as_str));
                }
            }
        }
    }
}
