//! Cross-list PDQ indexes: multi-index segments over the PDQ parts of many
//! lists, so that a query searches them once instead of once per list.
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
//! # Rebuilds
//!
//! A snapshot holds a short stack of such indexes, oldest and largest first,
//! each part covered by at most one. The compactor (off the write lock)
//! builds a new one over the coverable parts no index covers once there are
//! a few, taking in the newest indexes while what is newer than one holds at
//! least half as many entries (size-tiered, as a tier's parts: an entry is
//! rebuilt `O(log n)` times, and a build after a few writes reads only the
//! recent entries), and any index mostly stale (see [`CrossView::plan`]).
//!
//! # Cost
//!
//! The hashes are copied into the index (32 bytes), the provenance takes the
//! segment's 8-byte id slot and the tables about 44 bytes: the index adds the
//! size of a PDQ segment, ~84 bytes per covered entry (see `pdq`), on top of
//! the lists' own parts, plus the source segments an index keeps alive
//! after their lists merged them away, until it is rebuilt. A build needs
//! 40 bytes per entry more while it runs.
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

impl Live {
    fn part(&self) -> Part<PdqSegment> {
        Part {
            seg: Arc::clone(&self.seg),
            dead: Arc::clone(&self.dead),
        }
    }
}

/// The PDQ parts of one list no cross index covers (as of a snapshot).
pub struct Rest {
    pub list: u32,
    pub config: ListConfig,
    pub parts: Vec<Part<PdqSegment>>,
}

/// One cross index as one snapshot serves it.
struct Served {
    index: Arc<CrossIndex>,
    /// Per source: the part it is in this snapshot, or none.
    live: Vec<Option<Live>>,
    /// Live entries of live sources.
    covered: usize,
}

impl Served {
    /// Entries held to no use: of sources gone or retired since the build.
    fn stale(&self) -> usize {
        self.index.len().saturating_sub(self.covered)
    }
}

/// Most cross indexes kept at once (each costs a search per query).
const MAX_INDEXES: usize = 6;

/// A build takes in an index once what is newer holds `1 / MERGE_FACTOR` of
/// its entries: indexes then shrink by this factor from the oldest, so the
/// newer ones cost little next to it per query.
const MERGE_FACTOR: usize = 8;

/// What one snapshot needs to search its PDQ entries: the cross indexes
/// (oldest, largest first; each part is covered by at most one), which of
/// their sources are live parts, and per list the parts left to search on
/// their own. Built with every published snapshot (no lookups per query).
#[derive(Default)]
pub struct CrossView {
    served: Vec<Served>,
    /// Per query quality byte: the largest threshold of a list with a live
    /// source that accepts that quality (`-1`: none).
    top: Vec<i8>,
    rest: Vec<Rest>,
    cover_max: usize,
    /// Live entries, and count, of coverable parts outside every index.
    uncovered: usize,
    uncovered_parts: usize,
    /// Lists with a coverable part, covered or not.
    coverable_lists: usize,
}

/// A rebuild to run: keep the first `keep` indexes, replace the others by
/// one built over `parts` (their live sources and every uncovered coverable
/// part), or by none when `parts` is empty.
pub struct Rebuild {
    pub keep: usize,
    pub parts: Vec<(u32, Part<PdqSegment>)>,
}

impl CrossView {
    /// The view of `indexes` over `lists` (`(list id, config, PDQ tier)`, any
    /// order); parts of at most `cover_max` entries are coverable.
    pub fn new<'a>(
        indexes: &[Arc<CrossIndex>],
        cover_max: usize,
        lists: impl Iterator<Item = (u32, ListConfig, &'a Tier<PdqSegment>)>,
    ) -> CrossView {
        let mut view = CrossView {
            served: indexes
                .iter()
                .map(|x| Served {
                    index: Arc::clone(x),
                    live: std::iter::repeat_with(|| None)
                        .take(x.sources.len())
                        .collect(),
                    covered: 0,
                })
                .collect(),
            top: vec![-1i8; 256],
            rest: Vec::new(),
            cover_max,
            uncovered: 0,
            uncovered_parts: 0,
            coverable_lists: 0,
        };
        // Largest threshold per minimum quality, of lists with a live source.
        let mut by_min_quality = [-1i8; 101];
        for (list, config, tier) in lists {
            let mut rest = Vec::new();
            view.coverable_lists +=
                usize::from(tier.parts.iter().any(|p| p.seg.len() <= cover_max));
            for part in &tier.parts {
                let key = (list, address(&part.seg));
                let source = view.served.iter_mut().find_map(|x| {
                    let s = *x.index.by_segment.get(&key)?;
                    Some((x, s))
                });
                match source {
                    Some((x, s)) => {
                        x.covered += part.live();
                        let m = &mut by_min_quality[usize::from(config.pdq_min_quality.min(100))];
                        *m = (*m).max(config.pdq_threshold as i8);
                        x.live[s as usize] = Some(Live {
                            list,
                            config,
                            seg: Arc::clone(&part.seg),
                            dead: Arc::clone(&part.dead),
                        });
                    }
                    None => {
                        if part.seg.len() <= cover_max {
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
        // A query of quality q passes lists whose minimum is at most q;
        // unknown quality (255) passes every list.
        let mut best = -1i8;
        for (q, &m) in by_min_quality.iter().enumerate() {
            best = best.max(m);
            view.top[q] = best;
        }
        view.top[101..].fill(best);
        view
    }

    /// Whether any cross index serves this snapshot.
    pub fn has_index(&self) -> bool {
        !self.served.is_empty()
    }

    /// Lists with PDQ parts no index covers, with those parts.
    pub fn rest(&self) -> &[Rest] {
        &self.rest
    }

    /// The rebuild worth doing now, if any (`force`: one index over every
    /// coverable part). A build is wanted as soon as a coverable part is
    /// outside every index (each costs a search of its own per query), or an
    /// index holds more stale entries than live ones; no index is kept while
    /// fewer than two lists have coverable parts (one list's parts are merged
    /// by its own tier).
    ///
    /// The indexes are size-tiered like a tier's parts: a build takes in the
    /// newest indexes as long as what is newer than one holds at least
    /// `1 / MERGE_FACTOR` as many entries, so a build after a few writes
    /// reads only the recent entries, and an entry is rebuilt a bounded
    /// number of times per level.
    pub fn plan(&self, force: bool) -> Option<Rebuild> {
        let n = self.served.len();
        if self.coverable_lists < 2 {
            return (n > 0).then(|| Rebuild {
                keep: 0,
                parts: Vec::new(),
            });
        }
        let stale_from = self
            .served
            .iter()
            .position(|x| x.stale() > x.covered)
            .unwrap_or(n);
        let wanted = n == 0 || self.uncovered_parts > 0 || stale_from < n;
        if !force && !wanted {
            return None;
        }
        let mut keep = n;
        let mut newer = self.uncovered;
        while keep > 0 && self.served[keep - 1].covered <= newer * MERGE_FACTOR {
            keep -= 1;
            newer += self.served[keep].covered;
        }
        keep = keep.min(stale_from).min(MAX_INDEXES - 1);
        if force {
            keep = 0;
        }
        let mut parts = Vec::new();
        for x in &self.served[keep..] {
            for live in x.live.iter().flatten() {
                let part = live.part();
                if part.live() > 0 {
                    parts.push((live.list, part));
                }
            }
        }
        for rest in &self.rest {
            for part in &rest.parts {
                if part.seg.len() <= self.cover_max && part.live() > 0 {
                    parts.push((rest.list, part.clone()));
                }
            }
        }
        if keep == n && parts.is_empty() {
            return None;
        }
        Some(Rebuild { keep, parts })
    }

    /// Calls `hit(list, entry id)` for every live entry an index covers that
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
        let top = self.top[usize::from(quality)];
        if top < 0 {
            return;
        }
        let t = u32::from((top as u8).min(max_distance));
        for x in &self.served {
            if x.covered == 0 {
                continue;
            }
            let seg = &x.index.seg;
            pos.clear();
            seg.search(level, qs, t, scratch, pos);
            for &p in pos.iter() {
                let provenance = seg.id_at(p);
                let Some(live) = &x.live[(provenance >> 32) as usize] else {
                    continue;
                };
                let at = provenance as u32;
                let Some(own) = live.config.effective_threshold(quality, max_distance) else {
                    continue;
                };
                if own < t {
                    let h = seg.hash_at(p);
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
    }

    /// `(indexes, entries, approximate heap bytes)` of the indexes.
    pub fn size(&self) -> (usize, usize, usize) {
        (
            self.served.len(),
            self.served.iter().map(|x| x.index.len()).sum(),
            self.served.iter().map(|x| x.index.memory_bytes()).sum(),
        )
    }
}
