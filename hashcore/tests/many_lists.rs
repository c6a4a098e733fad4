//! Many lists and the cross-list PDQ index against a brute-force oracle.
//!
//! Rounds of changes over up to a few hundred lists (upserts, retirements,
//! re-adds, list drops and re-creations, re-configurations, subscriptions),
//! with the cross index rebuilt at random moments (or whenever compaction
//! wants it) and parts larger than a random bound left out of it; after every
//! round `match_batch` and `match_request` answer exactly as the oracle does,
//! at distances around every list's threshold.

use std::collections::{BTreeMap, HashMap};

use hashcore::changes::is_degenerate_pdq;
use hashcore::index::{ListConfig, Queries, QUALITY_UNKNOWN};
use hashcore::pdq::{hamming, pdq_to_bytes, Pdq};
use hashcore::proto::{put_len as len_field, put_varint as varint};
use hashcore::{Batch, GroupQueries, Index, Match};
use proptest::prelude::*;

// ---- request encoding (the wire format of `MatchRequest`) -----------------------------

fn pdq_hash(h: &Pdq, quality: Option<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    varint(1 << 3, &mut out);
    varint(4, &mut out);
    len_field(2, &pdq_to_bytes(h), &mut out);
    if let Some(q) = quality {
        varint(3 << 3, &mut out);
        varint(u64::from(q), &mut out);
    }
    out
}

fn request(items: &[Vec<(Pdq, Option<u8>)>]) -> Vec<u8> {
    let mut raw = Vec::new();
    for (i, hashes) in items.iter().enumerate() {
        let mut body = Vec::new();
        len_field(1, format!("item-{i}").as_bytes(), &mut body);
        for (h, q) in hashes {
            len_field(2, &pdq_hash(h, *q), &mut body);
        }
        len_field(1, &body, &mut raw);
    }
    raw
}

// ---- the model --------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn hash(&mut self) -> Pdq {
        [self.next(), self.next(), self.next(), self.next()]
    }
    /// `h` with exactly `d` distinct bits flipped.
    fn flip(&mut self, h: &Pdq, d: u32) -> Pdq {
        let mut out = *h;
        let mut flipped = 0;
        while flipped < d {
            let b = self.below(256) as usize;
            if out[b / 64] >> (b % 64) & 1 == h[b / 64] >> (b % 64) & 1 {
                out[b / 64] ^= 1 << (b % 64);
                flipped += 1;
            }
        }
        out
    }
}

#[derive(Clone)]
struct ListModel {
    config: ListConfig,
    /// hash → entry id (ids unique across lists and time).
    entries: HashMap<Pdq, u64>,
}

struct World {
    idx: Index,
    rng: Rng,
    lists: BTreeMap<u32, ListModel>,
    /// Every hash ever listed (for re-adds, and queries near gone entries).
    seen: Vec<Pdq>,
    next_id: u64,
    /// The tenant's subscriptions (None: no policy, every list).
    subscribed: Option<Vec<u32>>,
    max_list: u32,
}

fn reference(lid: u32, id: u64) -> String {
    format!("L{lid}-e{id}")
}

impl World {
    fn config(&mut self) -> ListConfig {
        let thresholds = [0u8, 8, 16, 24, 31, 31, 31, 40, 48];
        let t = thresholds[self.rng.below(thresholds.len() as u64) as usize];
        let q = [0u8, 0, 30, 50, 80, 100][self.rng.below(6) as usize];
        ListConfig::new(i64::from(t), i64::from(q)).unwrap()
    }

    fn create(&mut self, lid: u32) {
        let config = self.config();
        self.idx.configure_list(lid, config);
        self.lists.insert(
            lid,
            ListModel {
                config,
                entries: HashMap::new(),
            },
        );
    }

    fn apply(&mut self, lid: u32, adds: Vec<(Pdq, u64)>, dels: Vec<Pdq>) {
        let mut add_algs = Vec::new();
        let mut add_hashes = Vec::new();
        let mut add_ids = Vec::new();
        let mut refs = String::new();
        let mut ends = Vec::new();
        for (h, id) in &adds {
            add_algs.push(4u8);
            add_hashes.extend_from_slice(&pdq_to_bytes(h));
            add_ids.extend_from_slice(&id.to_le_bytes());
            refs.push_str(&reference(lid, *id));
            ends.extend_from_slice(&(refs.len() as u32).to_le_bytes());
        }
        let del_algs = vec![4u8; dels.len()];
        let del_hashes: Vec<u8> = dels.iter().flat_map(pdq_to_bytes).collect();
        let batch = Batch::decode(&add_algs, &add_hashes, &add_ids, &del_algs, &del_hashes)
            .unwrap()
            .with_refs(&ends, refs.as_bytes())
            .unwrap();
        self.idx.apply(lid, &batch).unwrap();
        let list = self.lists.get_mut(&lid).unwrap();
        for h in &dels {
            list.entries.remove(h);
        }
        // Batch order: the last id of a hash wins.
        for (h, id) in adds {
            list.entries.insert(h, id);
        }
    }

    fn random_list(&mut self) -> Option<u32> {
        if self.lists.is_empty() {
            return None;
        }
        let k = self.rng.below(self.lists.len() as u64) as usize;
        self.lists.keys().nth(k).copied()
    }

    /// Additions to `lid`: fresh hashes, near copies of listed ones, hashes
    /// another list holds, re-adds of gone hashes, new ids for live ones.
    fn upsert(&mut self, lid: u32, n: usize) {
        let mut adds = Vec::with_capacity(n);
        for _ in 0..n {
            let h = match self.rng.below(10) {
                0..=4 => self.rng.hash(),
                5 | 6 if !self.seen.is_empty() => {
                    let base = self.seen[self.rng.below(self.seen.len() as u64) as usize];
                    let d = 1 + self.rng.below(40) as u32;
                    self.rng.flip(&base, d)
                }
                7 | 8 if !self.seen.is_empty() => {
                    self.seen[self.rng.below(self.seen.len() as u64) as usize]
                }
                _ => {
                    let live: Vec<Pdq> = self.lists[&lid].entries.keys().copied().collect();
                    if live.is_empty() {
                        self.rng.hash()
                    } else {
                        live[self.rng.below(live.len() as u64) as usize]
                    }
                }
            };
            self.next_id += 1;
            adds.push((h, self.next_id));
            self.seen.push(h);
        }
        self.apply(lid, adds, vec![]);
    }

    fn retire(&mut self, lid: u32, n: usize) {
        let live: Vec<Pdq> = self.lists[&lid].entries.keys().copied().collect();
        let mut dels = Vec::new();
        for _ in 0..n {
            if !live.is_empty() && self.rng.chance(85) {
                dels.push(live[self.rng.below(live.len() as u64) as usize]);
            } else {
                dels.push(self.rng.hash()); // not listed: ignored
            }
        }
        self.apply(lid, vec![], dels);
    }

    /// A query near some hash: of a live entry, a gone one, or none.
    fn query(&mut self) -> (Pdq, u8, u8) {
        let base = if self.seen.is_empty() || self.rng.chance(15) {
            self.rng.hash()
        } else {
            self.seen[self.rng.below(self.seen.len() as u64) as usize]
        };
        // Distances around the thresholds in use.
        let around = [0u8, 8, 16, 24, 31, 40, 48][self.rng.below(7) as usize];
        let d = match self.rng.below(4) {
            0 => around,
            1 => around.saturating_sub(1),
            2 => around + 1,
            _ => self.rng.below(50) as u8,
        };
        let q = self.rng.flip(&base, u32::from(d));
        let quality = match self.rng.below(5) {
            0 => QUALITY_UNKNOWN,
            _ => [0u8, 29, 30, 49, 50, 79, 80, 99, 100][self.rng.below(9) as usize],
        };
        let max_distance = match self.rng.below(4) {
            0 => [0u8, 15, 24, 30, 31, 32, 63][self.rng.below(7) as usize],
            _ => 255,
        };
        (q, quality, max_distance)
    }

    fn wants(&self, lid: u32) -> bool {
        self.subscribed.as_ref().is_none_or(|s| s.contains(&lid))
    }

    /// Every `(query, list, entry)` hit, brute force.
    fn oracle(&self, qs: &[(Pdq, u8, u8)], tenant: bool) -> Vec<Match> {
        let mut out = Vec::new();
        for (i, (q, quality, max_distance)) in qs.iter().enumerate() {
            for (&lid, list) in &self.lists {
                if tenant && !self.wants(lid) {
                    continue;
                }
                let Some(t) = list.config.effective_threshold(*quality, *max_distance) else {
                    continue;
                };
                for (h, &id) in &list.entries {
                    if hamming(h, q) <= t {
                        out.push((i as u32, lid, id));
                    }
                }
            }
        }
        out.sort_unstable();
        out
    }

    fn check(&mut self) -> Result<(), TestCaseError> {
        let n = 1 + self.rng.below(40) as usize;
        let qs: Vec<(Pdq, u8, u8)> = (0..n).map(|_| self.query()).collect();
        // match_batch: every list.
        let algs = vec![4u8; n];
        let hashes: Vec<u8> = qs.iter().flat_map(|q| pdq_to_bytes(&q.0)).collect();
        let qualities: Vec<u8> = qs.iter().map(|q| q.1).collect();
        let distances: Vec<u8> = qs.iter().map(|q| q.2).collect();
        let queries = Queries::decode(&algs, &hashes, &qualities, &distances).unwrap();
        prop_assert_eq!(self.idx.match_batch(&queries), self.oracle(&qs, false));
        // match_groups: consecutive queries as groups of one to eight hashes,
        // each group with the quality and max distance of its first.
        let mut sizes = Vec::new();
        let mut at = 0;
        while at < n {
            let g = (1 + self.rng.below(8) as usize).min(n - at);
            sizes.push(g as u8);
            at += g;
        }
        let mut firsts = Vec::new();
        let mut owner = Vec::new();
        for (g, &size) in sizes.iter().enumerate() {
            firsts.push(owner.len());
            owner.extend(std::iter::repeat_n(g as u32, usize::from(size)));
        }
        let groups = GroupQueries::decode(
            &hashes,
            &sizes,
            &firsts.iter().map(|&f| qs[f].1).collect::<Vec<_>>(),
            &firsts.iter().map(|&f| qs[f].2).collect::<Vec<_>>(),
        )
        .unwrap();
        let as_group: Vec<(Pdq, u8, u8)> = qs
            .iter()
            .zip(&owner)
            .map(|(q, &g)| (q.0, qs[firsts[g as usize]].1, qs[firsts[g as usize]].2))
            .collect();
        let mut want: Vec<Match> = self
            .oracle(&as_group, false)
            .into_iter()
            .map(|(qi, lid, id)| (owner[qi as usize], lid, id))
            .collect();
        want.sort_unstable();
        want.dedup();
        prop_assert_eq!(self.idx.match_groups(&groups), want);
        // match_request: the tenant's lists, the lists' own thresholds, items
        // of one to three hashes.
        let qs: Vec<(Pdq, u8, u8)> = qs
            .into_iter()
            .filter(|q| !is_degenerate_pdq(&pdq_to_bytes(&q.0)))
            .map(|(h, quality, _)| (h, quality, 255))
            .collect();
        let mut items: Vec<Vec<(Pdq, Option<u8>)>> = Vec::new();
        let mut owner = Vec::new();
        for (h, quality, _) in &qs {
            if items.is_empty() || self.rng.chance(50) {
                items.push(Vec::new());
            }
            let quality = (*quality != QUALITY_UNKNOWN).then_some(*quality);
            items.last_mut().unwrap().push((*h, quality));
            owner.push(items.len() - 1);
        }
        if items.is_empty() {
            return Ok(());
        }
        let v = self.idx.match_request(&request(&items), true, "t", false);
        prop_assert!(v.request.violations.is_empty());
        // Per item: hash by hash, list by list, entry by entry, each
        // (list, reference) once (references are one per entry here).
        let mut want: Vec<(usize, u32, String)> = Vec::new();
        for (qi, lid, id) in self.oracle(&qs, true) {
            let w = (owner[qi as usize], lid, reference(lid, id));
            if !want.contains(&w) {
                want.push(w);
            }
        }
        let got: Vec<(usize, u32, String)> = v
            .answers
            .iter()
            .map(|a| (a.item as usize, a.list_id, v.reference(a).to_owned()))
            .collect();
        prop_assert_eq!(got, want);
        Ok(())
    }

    fn round(&mut self) -> Result<(), TestCaseError> {
        let steps = 1 + self.rng.below(12);
        for _ in 0..steps {
            match self.rng.below(100) {
                0..=39 => {
                    if let Some(lid) = self.random_list() {
                        let n = if self.rng.chance(10) {
                            200 + self.rng.below(2000) as usize
                        } else {
                            1 + self.rng.below(20) as usize
                        };
                        self.upsert(lid, n);
                    }
                }
                40..=59 => {
                    if let Some(lid) = self.random_list() {
                        let n = 1 + self.rng.below(8) as usize;
                        self.retire(lid, n);
                    }
                }
                60..=64 => {
                    if let Some(lid) = self.random_list() {
                        self.idx.drop_list(lid);
                        self.lists.remove(&lid);
                    }
                }
                65..=69 => {
                    // A new list, or a dropped id again (empty).
                    let lid = 1 + self.rng.below(u64::from(self.max_list)) as u32;
                    if !self.lists.contains_key(&lid) {
                        self.create(lid);
                    }
                }
                70..=76 => {
                    if let Some(lid) = self.random_list() {
                        let config = self.config();
                        self.idx.configure_list(lid, config);
                        self.lists.get_mut(&lid).unwrap().config = config;
                    }
                }
                77..=81 => {
                    if self.rng.chance(25) {
                        self.idx.remove_policy("t");
                        self.subscribed = None;
                    } else {
                        let ids: Vec<u32> = self
                            .lists
                            .keys()
                            .copied()
                            .filter(|_| self.rng.chance(40))
                            .collect();
                        self.idx.set_policy("t", false, ids.clone(), vec![]);
                        self.subscribed = Some(ids);
                    }
                }
                82..=91 => self.idx.rebuild_cross(),
                _ => self.idx.compact(),
            }
        }
        self.check()
    }
}

fn world(seed: u64, lists: u32, auto: bool, cover_max: usize) -> World {
    let idx = Index::with_background(false);
    idx.set_cross_rebuilds(auto);
    idx.set_cross_cover_max(cover_max);
    let mut w = World {
        idx,
        rng: Rng(seed | 1),
        lists: BTreeMap::new(),
        seen: Vec::new(),
        next_id: 0,
        subscribed: None,
        max_list: lists + lists / 4,
    };
    for lid in 1..=lists {
        w.create(lid);
        let n = if w.rng.chance(5) {
            1000 + w.rng.below(3000) as usize // large: tables of its own
        } else {
            w.rng.below(30) as usize
        };
        if n > 0 {
            w.upsert(lid, n);
        }
    }
    w
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn many_lists_agree_with_brute_force(
        seed in any::<u64>(),
        lists in 50u32..300,
        auto in any::<bool>(),
        cover_max in prop_oneof![Just(usize::MAX), Just(1500usize), Just(100usize)],
        rounds in 4usize..12,
    ) {
        let mut w = world(seed, lists, auto, cover_max);
        w.check()?;
        w.idx.rebuild_cross();
        w.check()?;
        for _ in 0..rounds {
            w.round()?;
        }
    }
}

fn one(idx: &Index, lid: u32, adds: &[(Pdq, u64)], dels: &[Pdq]) {
    let add_hashes: Vec<u8> = adds.iter().flat_map(|a| pdq_to_bytes(&a.0)).collect();
    let add_ids: Vec<u8> = adds.iter().flat_map(|a| a.1.to_le_bytes()).collect();
    let del_hashes: Vec<u8> = dels.iter().flat_map(pdq_to_bytes).collect();
    let batch = Batch::decode(
        &vec![4u8; adds.len()],
        &add_hashes,
        &add_ids,
        &vec![4u8; dels.len()],
        &del_hashes,
    )
    .unwrap();
    idx.apply(lid, &batch).unwrap();
}

fn find(idx: &Index, h: &Pdq) -> Vec<Match> {
    let q = Queries::decode(&[4], &pdq_to_bytes(h), &[255], &[255]).unwrap();
    idx.match_batch(&q)
}

/// Lists of 50 entries each, one cross index over them, then changes the
/// index has not seen: a retired entry is not answered, nor an entry of a
/// dropped list (nor after its id is configured again), and an entry
/// re-added after its retirement is answered once, with its new id.
#[test]
fn changes_after_the_build_are_served_exactly() {
    let idx = Index::with_background(false);
    idx.set_cross_rebuilds(false);
    let mut rng = Rng(99);
    let mut listed: Vec<(u32, Pdq, u64)> = Vec::new();
    for lid in 1..=20u32 {
        idx.configure_list(lid, ListConfig::new(31, 0).unwrap());
        let adds: Vec<(Pdq, u64)> = (0..50)
            .map(|i| (rng.hash(), u64::from(lid) * 1000 + i))
            .collect();
        one(&idx, lid, &adds, &[]);
        listed.extend(adds.iter().map(|&(h, id)| (lid, h, id)));
    }
    idx.rebuild_cross();
    assert_eq!(idx.cross_size().1, 1000, "every entry is covered");
    for &(lid, h, id) in listed.iter().step_by(37) {
        assert_eq!(find(&idx, &rng.flip(&h, 31)), vec![(0, lid, id)]);
        assert!(find(&idx, &rng.flip(&h, 32)).is_empty());
    }
    // Retired after the build.
    let (lid, h, _) = listed[3];
    one(&idx, lid, &[], &[h]);
    assert!(find(&idx, &h).is_empty());
    // A dropped list, then the same id again, empty.
    let (dropped, dh, _) = listed[500];
    idx.drop_list(dropped);
    assert!(find(&idx, &dh).is_empty());
    idx.configure_list(dropped, ListConfig::new(31, 0).unwrap());
    assert!(find(&idx, &dh).is_empty());
    // Re-added after its retirement (new id): answered once.
    one(&idx, lid, &[(h, 777_777)], &[]);
    assert_eq!(find(&idx, &h), vec![(0, lid, 777_777)]);
    // A new id for a covered entry replaces the old one.
    let (lid2, h2, _) = listed[42];
    one(&idx, lid2, &[(h2, 888_888)], &[]);
    assert_eq!(find(&idx, &h2), vec![(0, lid2, 888_888)]);
    // The same, once the index is rebuilt over the changes.
    idx.rebuild_cross();
    assert_eq!(find(&idx, &h), vec![(0, lid, 777_777)]);
    assert_eq!(find(&idx, &h2), vec![(0, lid2, 888_888)]);
    assert!(find(&idx, &dh).is_empty());
    assert_eq!(idx.cross_size().1, 1000 - 50);
    // A retired covered entry whose list then merges: still not answered.
    let (lid3, h3, _) = listed[100];
    one(&idx, lid3, &[], &[h3]);
    idx.compact();
    assert!(find(&idx, &h3).is_empty());
}

/// The same hash in two lists with different thresholds: each list answers at
/// its own threshold and minimum quality, once.
#[test]
fn a_hash_in_two_lists_answers_per_list() {
    let idx = Index::with_background(false);
    idx.configure_list(1, ListConfig::new(10, 0).unwrap());
    idx.configure_list(2, ListConfig::new(40, 60).unwrap());
    let mut rng = Rng(5);
    let h = rng.hash();
    one(&idx, 1, &[(h, 1)], &[]);
    one(&idx, 2, &[(h, 2)], &[]);
    idx.rebuild_cross();
    assert_eq!(idx.cross_size().1, 2);
    let mut at = |d: u32, quality: u8| {
        let q = rng.flip(&h, d);
        let q = Queries::decode(&[4], &pdq_to_bytes(&q), &[quality], &[255]).unwrap();
        idx.match_batch(&q)
    };
    assert_eq!(at(10, 255), vec![(0, 1, 1), (0, 2, 2)]);
    assert_eq!(at(10, 59), vec![(0, 1, 1)]);
    assert_eq!(at(11, 255), vec![(0, 2, 2)]);
    assert_eq!(at(40, 60), vec![(0, 2, 2)]);
    assert!(at(41, 255).is_empty());
}

/// A list loaded from its segment file has new segments: the cross index
/// built before no longer covers it, its own parts answer (once), and the
/// next rebuild covers them again.
#[test]
fn a_loaded_list_is_served_from_its_own_parts_until_covered() {
    let idx = Index::with_background(false);
    idx.set_cross_rebuilds(false);
    let mut rng = Rng(17);
    let mut listed: Vec<(u32, Pdq, u64)> = Vec::new();
    for lid in 1..=3u32 {
        idx.configure_list(lid, ListConfig::new(31, 0).unwrap());
        let adds: Vec<(Pdq, u64)> = (0..40)
            .map(|i| (rng.hash(), u64::from(lid) * 100 + i))
            .collect();
        one(&idx, lid, &adds, &[]);
        listed.extend(adds.iter().map(|&(h, id)| (lid, h, id)));
    }
    idx.rebuild_cross();
    assert_eq!(idx.cross_size().1, 120);
    let dir = std::env::temp_dir().join(format!("hashcore-many-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("list-2.seg");
    let snap = idx.list_snapshot(2).unwrap();
    let info = hashcore::persist::SegmentInfo {
        list_id: 2,
        version: 5,
        epoch: 1,
        digest: snap.digest(),
    };
    snap.save(&path, &info).unwrap();
    idx.load_list(&path, &info).unwrap();
    let check = |rng: &mut Rng| {
        for &(lid, h, id) in &listed {
            assert_eq!(find(&idx, &rng.flip(&h, 20)), vec![(0, lid, id)]);
        }
    };
    check(&mut rng);
    idx.rebuild_cross();
    assert_eq!(idx.cross_size().1, 120);
    check(&mut rng);
    std::fs::remove_dir_all(&dir).unwrap();
}
