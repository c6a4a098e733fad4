//! The cross-list PDQ index: one multi-index segment over the PDQ parts of
//! many lists, so that a query searches them once instead of once per list.
//!
//! # Why
//!
//! A list's PDQ tier is a few segments of its own; searching 1,000 lists of
//! 100 k entries part by part costs 1,000 small searches per query, each with
//! its fixed cost (probes of every table, or a linear scan), where one list of
//! 100 M entries costs one search. The cross index holds the hashes of every
//! *coverable* part (at most [`COVER_MAX`] entries: larger parts are searched
//! well on their own) in one [`PdqSegment`], each entry carrying its
//! provenance: the source part (by segment identity) and its position there.
//!
//! # Exactness
//!
//! The index is built off the read path from one snapshot and never changes;
//! lists move on meanwhile. What a snapshot serves is decided per snapshot by
//! a [`CrossView`] built with it:
//!
//! * a source segment still a part of its list (same `Arc`, same list id) is
//!   *live*: its candidates are kept when the list is wanted, their distance
//!   is within the list's own effective threshold for the query, and their
//!   position is not retired in the snapshot's part (retirements only ever
//!   grow the dead positions of a segment, and positions dead at build time
//!   were left out);
//! * a source no longer a part (merged away, list dropped or reloaded) answers
//!   nothing: its entries live on in parts the index does not cover;
//! * every part of a list that is not a live source is searched on its own,
//!   as before ([`CrossView::rest`]).
//!
//! So each live entry is searched exactly once, whatever the age of the index,
//! and a write never waits for a rebuild: it only makes more of the list's
//! entries uncovered until the next rebuild is swapped in.
//!
//! The index holds a reference to each source segment, so segment identity
//! cannot be reused by a new segment while the index lives.
//!
//! # Cost
//!
//! The hashes are copied into the index (32 bytes), the provenance takes the
//! segment's 8-byte id slot and the tables about 44 bytes: the index adds the
//! size of a PDQ segment, ~84 bytes per covered entry (see `pdq`), on top of
//! the lists' own parts.
//!
//! The index is not written to segment files: after a restart (or a list
//! loaded from its file) the lists are served from their own parts and the
//! index is rebuilt in the background.

use std::collections::HashMap;
use std::sync::Arc;

use crate::index::ListConfig;
use crate::pdq::{hamming, Pdq, PdqSegment, Scratch};
use crate::simd::Level;
use crate::tier::{Part, Tier};

/// Parts with more entries than this (by default) are left to their own search (a part
/// that large gains little from being searched with others, and would double
/// its memory).
pub const COVER_MAX: usize = 1 << 22;

/// Uncovered coverable parts that make a rebuild worth it on their own: each
/// costs a search of its own per query.
const MAX_UNCOVERED_PARTS: usize = 32;

/// An immutable index over the coverable PDQ parts of every list, as of one
/// snapshot (see the module docs).
pub struct CrossIndex {
    /// Entry ids are provenance: `source << 32 | position in the source`.
    seg: PdqSegment,
    /// The source segments, by source number: held so that their addresses
    /// (their identity in `by_segment`) cannot pass to other segments.
    sources: Vec<Arc<PdqSegment>>,
    /// `(list, segment address)` → source number.
    by_segment: HashMap<(u32, usize), u32>,
}

fn address(seg: &Arc<PdqSegment>) -> usize {
    Arc::as_ptr(seg) as usize
}

impl CrossIndex {
    /// Builds the index over the live entries of `parts` (`(list, part)`).
    pub fn build(parts: Vec<(u32, Part<PdqSegment>)>) -> CrossIndex {
        let total = parts.iter().map(|(_, p)| p.live()).sum();
        let mut entries: Vec<(Pdq, u64)> = Vec::with_capacity(total);
        let mut sources = Vec::with_capacity(parts.len());
        let mut by_segment = HashMap::with_capacity(parts.len());
        for (s, (list, part)) in parts.into_iter().enumerate() {
            let s = u32::try_from(s).expect("fewer than 2^32 sources");
            let mut dead = part.dead.iter().peekable();
            for pos in 0..part.seg.len() as u32 {
                if dead.peek() == Some(&&pos) {
                    dead.next();
                    continue;
                }
                entries.push((part.seg.hash_at(pos), u64::from(s) << 32 | u64::from(pos)));
            }
            by_segment.insert((list, address(&part.seg)), s);
            sources.push(part.seg);
        }
        // Two lists may hold the same hash: the segment keeps both entries
        // (its search does not need unique hashes, only `find` would).
        CrossIndex {
            seg: PdqSegment::build(entries),
            sources,
            by_segment,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.seg.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seg.is_empty()
    }

    /// Approximate heap bytes held (the source segments are the lists').
    pub fn memory_bytes(&self) -> usize {
        self.seg.memory_bytes() + self.sources.len() * 48
    }
}

/// A live source: its list's settings and the part as of the snapshot.
struct Live {
    list: u32,
    config: ListConfig,
    seg: Arc<PdqSegment>,
    dead: Arc<Vec<u32>>,
}

/// The PDQ parts of one list the cross index does not cover (as of a snapshot).
pub struct Rest {
    pub list: u32,
    pub config: ListConfig,
    pub parts: Vec<Part<PdqSegment>>,
}

/// What one snapshot needs to search its PDQ entries: the cross index, which
/// of its sources are live parts, and per list the parts left to search on
/// their own. Built with every published snapshot (no lookups per query).
#[derive(Default)]
pub struct CrossView {
    index: Option<Arc<CrossIndex>>,
    /// Per source of `index`: the part it is in this snapshot, or none.
    live: Vec<Option<Live>>,
    /// Per query quality byte: the largest threshold of a list with a live
    /// source that accepts that quality (`-1`: none).
    top: Vec<i8>,
    rest: Vec<Rest>,
    /// Live entries of live sources.
    covered: usize,
    /// Entries the index holds to no use: of sources gone or retired since.
    stale: usize,
    /// Live entries, and count, of coverable parts outside the index.
    uncovered: usize,
    uncovered_parts: usize,
    /// Lists with a coverable part, covered or not.
    coverable_lists: usize,
}

impl CrossView {
    /// The view of `index` over `lists` (`(list id, config, PDQ tier)`, any
    /// order); parts of at most `cover_max` entries are coverable.
    pub fn new<'a>(
        index: Option<Arc<CrossIndex>>,
        cover_max: usize,
        lists: impl Iterator<Item = (u32, ListConfig, &'a Tier<PdqSegment>)>,
    ) -> CrossView {
        let sources = index.as_ref().map_or(0, |x| x.sources.len());
        let mut view = CrossView {
            live: Vec::new(),
            top: Vec::new(),
            rest: Vec::new(),
            covered: 0,
            stale: 0,
            uncovered: 0,
            uncovered_parts: 0,
            coverable_lists: 0,
            index: None,
        };
        view.live.resize_with(sources, || None);
        // Largest threshold per minimum quality, of lists with a live source.
        let mut by_min_quality = [-1i8; 101];
        for (list, config, tier) in lists {
            let mut rest = Vec::new();
            view.coverable_lists +=
                usize::from(tier.parts.iter().any(|p| p.seg.len() <= cover_max));
            for part in &tier.parts {
                let coverable = part.seg.len() <= cover_max;
                let source = index
                    .as_ref()
                    .and_then(|x| x.by_segment.get(&(list, address(&part.seg))));
                match source {
                    Some(&s) => {
                        view.covered += part.live();
                        let m = &mut by_min_quality[usize::from(config.pdq_min_quality.min(100))];
                        *m = (*m).max(config.pdq_threshold as i8);
                        view.live[s as usize] = Some(Live {
                            list,
                            config,
                            seg: Arc::clone(&part.seg),
                            dead: Arc::clone(&part.dead),
                        });
                    }
                    None => {
                        if coverable {
                            view.uncovered += part.live();
                            view.uncovered_parts += 1;
                        }
                        rest.push(part.clone());
                    }
                }
            }
            if !rest.is_empty() {
                view.rest.push(Rest {
                    list,
                    config,
                    parts: rest,
                });
            }
        }
        if let Some(x) = &index {
            let held = x.len();
            view.stale = held.saturating_sub(view.covered);
        }
        // A query of quality q passes lists whose minimum is at most q;
        // unknown quality (255) passes every list.
        view.top = vec![-1i8; 256];
        let mut best = -1i8;
        for (q, &m) in by_min_quality.iter().enumerate() {
            best = best.max(m);
            view.top[q] = best;
        }
        for q in 101..256 {
            view.top[q] = best;
        }
        view.index = index;
        view
    }

    /// The index this view serves, if any.
    pub fn index(&self) -> Option<&Arc<CrossIndex>> {
        self.index.as_ref()
    }

    /// Lists with PDQ parts the index does not cover, with those parts.
    pub fn rest(&self) -> &[Rest] {
        &self.rest
    }

    /// Whether a rebuild would pay off: no index yet while two lists have
    /// coverable parts (one list's parts are merged by its tier), a quarter
    /// as many entries uncovered as covered, more uncovered parts than a
    /// quarter of the sources (and [`MAX_UNCOVERED_PARTS`]), more stale
    /// entries than live ones, or an index left with fewer than two lists.
    ///
    /// Each rebuild reads every covered entry: the proportions keep the
    /// rebuilds of a growing index to a few per entry (geometric growth).
    pub fn wants_rebuild(&self) -> bool {
        match &self.index {
            None => self.coverable_lists >= 2,
            Some(_) => {
                self.coverable_lists < 2
                    || self.uncovered_parts > MAX_UNCOVERED_PARTS.max(self.live.len() / 4)
                    || self.uncovered * 4 > self.covered
                    || self.stale > self.covered
            }
        }
    }

    /// Calls `hit(list, entry id)` for every live entry the index covers that
    /// is within the effective threshold of its list (for `quality` and
    /// `max_distance`) of a hash of `qs`, in a list `wants` accepts. An entry
    /// may be reported more than once.
    #[allow(clippy::too_many_arguments)]
    pub fn search(
        &self,
        level: Level,
        qs: &[Pdq],
        quality: u8,
        max_distance: u8,
        wants: &(dyn Fn(u32) -> bool + Sync),
        scratch: &mut Scratch,
        pos: &mut Vec<u32>,
        mut hit: impl FnMut(u32, u64),
    ) {
        let Some(index) = &self.index else {
            return;
        };
        let top = self.top[usize::from(quality)];
        if top < 0 {
            return;
        }
        let t = u32::from((top as u8).min(max_distance));
        pos.clear();
        index.seg.search(level, qs, t, scratch, pos);
        for &p in pos.iter() {
            let provenance = index.seg.id_at(p);
            let Some(live) = &self.live[(provenance >> 32) as usize] else {
                continue;
            };
            let at = provenance as u32;
            let Some(own) = live.config.effective_threshold(quality, max_distance) else {
                continue;
            };
            if own < t {
                let h = index.seg.hash_at(p);
                let d = qs.iter().map(|q| hamming(q, &h)).min().unwrap_or(u32::MAX);
                if d > own {
                    continue;
                }
            }
            if !wants(live.list) {
                continue;
            }
            if !live.dead.is_empty() && live.dead.binary_search(&at).is_ok() {
                continue;
            }
            hit(live.list, live.seg.id_at(at));
        }
    }

    /// Approximate heap bytes of the index.
    pub fn memory_bytes(&self) -> usize {
        self.index.as_ref().map_or(0, |x| x.memory_bytes())
    }
}

/// The coverable parts (at most `cover_max` entries) of `lists` to build the
/// next index from; none unless they come from two lists or more.
pub fn coverable<'a>(
    lists: impl Iterator<Item = (u32, &'a Tier<PdqSegment>)>,
    cover_max: usize,
) -> Vec<(u32, Part<PdqSegment>)> {
    let mut out = Vec::new();
    for (list, tier) in lists {
        for part in &tier.parts {
            if part.seg.len() <= cover_max && part.live() > 0 {
                out.push((list, part.clone()));
            }
        }
    }
    if out
        .first()
        .is_some_and(|first| out.iter().all(|(l, _)| *l == first.0))
    {
        out.clear();
    }
    out
}
