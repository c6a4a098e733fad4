//! Index-level properties: the whole `Index` against a brute-force model, and
//! readers racing a writer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hashcore::index::{Batch, GroupQueries, Index, ListConfig, Queries};
use hashcore::pdq::{hamming, pdq_from_bytes, pdq_to_bytes, Pdq};
use proptest::prelude::*;

const ALG_LEN: [usize; 5] = [0, 16, 20, 32, 32];

/// One hash in wire form: algorithm byte and 32-byte slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct H {
    alg: u8,
    slot: [u8; 32],
}

fn exact(alg: u8, seed: u8) -> H {
    let mut slot = [0u8; 32];
    for (i, b) in slot[..ALG_LEN[alg as usize]].iter_mut().enumerate() {
        *b = seed.wrapping_mul(31).wrapping_add(i as u8);
    }
    H { alg, slot }
}

fn pdq(h: Pdq) -> H {
    H {
        alg: 4,
        slot: pdq_to_bytes(&h),
    }
}

fn flip(h: &Pdq, n: usize, salt: u64) -> Pdq {
    let mut out = *h;
    let mut bits: Vec<usize> = (0..256).collect();
    // Deterministic shuffle.
    let mut x = salt.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for i in (1..256).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bits.swap(i, (x % (i as u64 + 1)) as usize);
    }
    for &b in &bits[..n] {
        out[b / 64] ^= 1 << (b % 64);
    }
    out
}

fn encode_batch(adds: &[(H, u64)], dels: &[H]) -> Batch {
    let aa: Vec<u8> = adds.iter().map(|a| a.0.alg).collect();
    let ah: Vec<u8> = adds.iter().flat_map(|a| a.0.slot).collect();
    let ai: Vec<u8> = adds.iter().flat_map(|a| a.1.to_le_bytes()).collect();
    let da: Vec<u8> = dels.iter().map(|d| d.alg).collect();
    let dh: Vec<u8> = dels.iter().flat_map(|d| d.slot).collect();
    Batch::decode(&aa, &ah, &ai, &da, &dh).unwrap()
}

fn encode_queries(qs: &[(H, u8, u8)]) -> Queries {
    let a: Vec<u8> = qs.iter().map(|q| q.0.alg).collect();
    let h: Vec<u8> = qs.iter().flat_map(|q| q.0.slot).collect();
    let qual: Vec<u8> = qs.iter().map(|q| q.1).collect();
    let dist: Vec<u8> = qs.iter().map(|q| q.2).collect();
    Queries::decode(&a, &h, &qual, &dist).unwrap()
}

/// The model: per list, its config and every live (hash → id).
#[derive(Default)]
struct Model {
    lists: BTreeMap<u32, (ListConfig, BTreeMap<H, u64>)>,
}

impl Model {
    fn answer(&self, qs: &[(H, u8, u8)]) -> Vec<(u32, u32, u64)> {
        let mut out = vec![];
        for (qi, (q, quality, maxd)) in qs.iter().enumerate() {
            for (&lid, (cfg, entries)) in &self.lists {
                for (h, &id) in entries {
                    if h.alg != q.alg {
                        continue;
                    }
                    let hit = if q.alg == 4 {
                        match cfg.effective_threshold(*quality, *maxd) {
                            Some(t) => {
                                hamming(&pdq_from_bytes(&h.slot), &pdq_from_bytes(&q.slot)) <= t
                            }
                            None => false,
                        }
                    } else {
                        h.slot == q.slot
                    };
                    if hit {
                        out.push((qi as u32, lid, id));
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[derive(Debug, Clone)]
enum Op {
    Configure(u32, u8, u8),
    Drop(u32),
    Apply(u32, Vec<(usize, u64)>, Vec<usize>),
    Compact,
}

/// A small universe of hashes so that operations collide: exact digests of
/// every algorithm, PDQ seeds, near-duplicates at t−1, t, t+1 of seed 0 (t =
/// 31 and 20), all-zero and all-one PDQ hashes.
fn universe(seeds: &[Pdq]) -> Vec<H> {
    let mut u = vec![];
    for alg in 1..=3 {
        for s in 0..4 {
            u.push(exact(alg, s));
        }
    }
    for s in seeds {
        u.push(pdq(*s));
    }
    for d in [19, 20, 21, 30, 31, 32] {
        u.push(pdq(flip(&seeds[0], d, d as u64)));
    }
    u.push(pdq([0; 4]));
    u.push(pdq([u64::MAX; 4]));
    u
}

fn op_strategy(n: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u32..3, 0u8..=63, 0u8..=100).prop_map(|(l, t, q)| Op::Configure(l, t, q)),
        (0u32..3).prop_map(Op::Drop),
        (
            0u32..3,
            proptest::collection::vec((0..n, 0u64..4), 0..12),
            proptest::collection::vec(0..n, 0..6)
        )
            .prop_map(|(l, a, d)| Op::Apply(l, a, d)),
        Just(Op::Compact),
    ]
}

fn run_ops(
    index: &Index,
    u: &[H],
    ops: &[Op],
    queries: &[(H, u8, u8)],
) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    // The empty index answers nothing.
    prop_assert!(index.match_batch(&encode_queries(queries)).is_empty());
    for op in ops {
        match op {
            Op::Configure(l, t, q) => {
                let cfg = ListConfig::new(i64::from(*t), i64::from(*q)).unwrap();
                index.configure_list(*l, cfg);
                model
                    .lists
                    .entry(*l)
                    .or_insert_with(|| (cfg, BTreeMap::new()))
                    .0 = cfg;
            }
            Op::Drop(l) => {
                index.drop_list(*l);
                model.lists.remove(l);
            }
            Op::Apply(l, adds, dels) => {
                let adds: Vec<(H, u64)> = adds.iter().map(|&(i, id)| (u[i], id)).collect();
                let dels: Vec<H> = dels.iter().map(|&i| u[i]).collect();
                let res = index.apply(*l, &encode_batch(&adds, &dels));
                match model.lists.get_mut(l) {
                    None => prop_assert!(res.is_err()),
                    Some((_, entries)) => {
                        prop_assert!(res.is_ok());
                        for d in &dels {
                            entries.remove(d);
                        }
                        for (h, id) in &adds {
                            entries.insert(*h, *id);
                        }
                    }
                }
            }
            Op::Compact => index.compact(),
        }
        prop_assert_eq!(
            index.match_batch(&encode_queries(queries)),
            model.answer(queries)
        );
        for (&l, (_, entries)) in &model.lists {
            let (m5, s1, s2, p, _) = index.counts(l).unwrap();
            let count = |a: u8| entries.keys().filter(|h| h.alg == a).count();
            prop_assert_eq!((m5, s1, s2, p), (count(1), count(2), count(3), count(4)));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Any sequence of list operations answers like the brute-force model:
    /// duplicates across lists, retire then re-add, replaced ids, thresholds
    /// at t−1 / t / t+1, quality filters and tightened distances.
    #[test]
    fn index_matches_model(
        seeds in proptest::collection::vec(any::<[u64; 4]>(), 3..6),
        ops in proptest::collection::vec(op_strategy(30), 1..40),
        background in any::<bool>(),
        qual in prop_oneof![Just(255u8), 0u8..=100],
        maxd in prop_oneof![Just(255u8), 0u8..=63],
    ) {
        let u = universe(&seeds);
        let ops: Vec<Op> = ops
            .into_iter()
            .map(|op| match op {
                Op::Apply(l, a, d) => Op::Apply(
                    l,
                    a.into_iter().map(|(i, id)| (i % u.len(), id)).collect(),
                    d.into_iter().map(|i| i % u.len()).collect(),
                ),
                other => other,
            })
            .collect();
        let mut queries: Vec<(H, u8, u8)> = u.iter().map(|h| (*h, qual, maxd)).collect();
        queries.push((pdq(flip(&seeds[0], 31, 99)), 255, 255));
        queries.push((pdq(flip(&seeds[1], 10, 5)), 50, 255));
        let index = Index::with_background(background);
        run_ops(&index, &u, &ops, &queries)?;
    }
}

/// A large list (segments with multi-index tables) with retirements, re-adds
/// and merges, against brute force.
#[test]
fn large_list_with_merges_matches_brute_force() {
    let mut x = 1u64;
    let mut next = || {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut hashes: Vec<Pdq> = (0..6000)
        .map(|_| [next(), next(), next(), next()])
        .collect();
    // Clusters: near-duplicates of the first 100 hashes.
    for i in 0..1000 {
        let h = flip(&hashes[i % 100], (i % 40) + 1, i as u64);
        hashes.push(h);
    }
    hashes.sort_unstable();
    hashes.dedup();
    let index = Index::with_background(true);
    index.configure_list(7, ListConfig::new(31, 0).unwrap());
    let mut live: BTreeMap<Pdq, u64> = BTreeMap::new();
    for (b, chunk) in hashes.chunks(700).enumerate() {
        let adds: Vec<(H, u64)> = chunk.iter().map(|h| (pdq(*h), b as u64)).collect();
        // Retire every third hash of the previous chunk.
        let dels: Vec<H> = if b > 0 {
            hashes[(b - 1) * 700..b * 700]
                .iter()
                .step_by(3)
                .map(|h| pdq(*h))
                .collect()
        } else {
            vec![]
        };
        index.apply(7, &encode_batch(&adds, &dels)).unwrap();
        for d in &dels {
            live.remove(&pdq_from_bytes(&d.slot));
        }
        for (h, id) in &adds {
            live.insert(pdq_from_bytes(&h.slot), *id);
        }
    }
    // Re-add some retired ones with a new id.
    let readd: Vec<(H, u64)> = hashes[..700]
        .iter()
        .step_by(3)
        .map(|h| (pdq(*h), 99))
        .collect();
    index.apply(7, &encode_batch(&readd, &[])).unwrap();
    for (h, id) in &readd {
        live.insert(pdq_from_bytes(&h.slot), *id);
    }
    index.compact();
    let queries: Vec<(H, u8, u8)> = (0..300)
        .map(|i| {
            let base = hashes[(i * 23) % hashes.len()];
            (
                pdq(flip(&base, i % 40, i as u64 + 7)),
                255,
                if i % 5 == 0 { 20 } else { 255 },
            )
        })
        .collect();
    let got = index.match_batch(&encode_queries(&queries));
    let mut want = vec![];
    for (qi, (q, _, maxd)) in queries.iter().enumerate() {
        let t = u32::from((*maxd).min(31));
        let q = pdq_from_bytes(&q.slot);
        for (h, &id) in &live {
            if hamming(h, &q) <= t {
                want.push((qi as u32, 7, id));
            }
        }
    }
    want.sort_unstable();
    want.dedup();
    assert_eq!(got, want);
    assert_eq!(index.counts(7).unwrap().3, live.len());

    // Groups answer like their single queries.
    let hs: Vec<u8> = queries[..240].iter().flat_map(|q| q.0.slot).collect();
    let groups = GroupQueries::decode(&hs, &[8u8; 30], &[255; 30], &[255; 30]).unwrap();
    let got = index.match_groups(&groups);
    let mut want: Vec<(u32, u32, u64)> = vec![];
    for (qi, q) in queries.iter().enumerate().take(240) {
        let single = index.match_batch(&encode_queries(&[(q.0, 255, 255)]));
        want.extend(
            single
                .into_iter()
                .map(|(_, l, id)| ((qi / 8) as u32, l, id)),
        );
    }
    want.sort_unstable();
    want.dedup();
    assert_eq!(got, want);
}

/// Readers never see part of a batch while a writer replaces whole batches
/// and the background compactor merges segments.
#[test]
fn readers_see_whole_batches() {
    const K: usize = 300;
    let index = Arc::new(Index::with_background(true));
    index.configure_list(1, ListConfig::new(31, 0).unwrap());
    index.configure_list(2, ListConfig::new(10, 0).unwrap());
    let hashes: Vec<H> = (0..K)
        .map(|i| {
            let mut slot = [0u8; 32];
            slot[..8]
                .copy_from_slice(&(i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
            slot[8..16].copy_from_slice(&(i as u64).to_le_bytes());
            if i % 2 == 0 {
                H {
                    alg: 1,
                    slot: {
                        let mut s = slot;
                        s[16..].fill(0);
                        s
                    },
                }
            } else {
                slot[16..].copy_from_slice(&[0xa5; 16]);
                H { alg: 4, slot }
            }
        })
        .collect();
    let queries: Vec<(H, u8, u8)> = hashes.iter().map(|h| (*h, 255, 0)).collect();
    let q = encode_queries(&queries);
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (index, stop, q) = (Arc::clone(&index), Arc::clone(&stop), q.clone());
            std::thread::spawn(move || {
                let mut seen = 0;
                while !stop.load(Ordering::Relaxed) {
                    let got = index.match_batch(&q);
                    if got.is_empty() {
                        continue; // before the first batch
                    }
                    // Each apply touches one list: per list, one batch fully
                    // (all K hashes with one id) or, for list 2, nothing.
                    for list in [1u32, 2] {
                        let ids: Vec<u64> =
                            got.iter().filter(|m| m.1 == list).map(|m| m.2).collect();
                        if list == 2 && ids.is_empty() {
                            continue;
                        }
                        assert_eq!(ids.len(), K, "partial batch visible in list {list}");
                        assert!(ids.iter().all(|&i| i == ids[0]), "two batches mixed");
                    }
                    seen += 1;
                }
                seen
            })
        })
        .collect();
    for b in 0..200u64 {
        let adds: Vec<(H, u64)> = hashes.iter().map(|h| (*h, b)).collect();
        // List 2 holds the even batches only.
        index.apply(1, &encode_batch(&adds, &[])).unwrap();
        if b % 2 == 0 {
            index.apply(2, &encode_batch(&adds, &[])).unwrap();
        } else {
            index.apply(2, &encode_batch(&[], &hashes)).unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
}
