//! Segment files: a list written and mapped back answers exactly as the list it
//! was written from, its digest is the store's, and it keeps taking changes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hashcore::changes::entry_term;
use hashcore::index::{Batch, Index, ListConfig, Queries};
use hashcore::pdq::{pdq_to_bytes, Pdq};
use hashcore::persist::SegmentInfo;
use proptest::prelude::*;

const ALG_LEN: [usize; 6] = [0, 16, 20, 32, 32, 32];

type Entry = ((u8, [u8; 32]), u64, String);

fn slot(alg: u8, seed: u64) -> [u8; 32] {
    let mut s = [0u8; 32];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(alg);
    for b in s[..ALG_LEN[alg as usize]].iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    s
}

fn batch(adds: &[Entry], dels: &[(u8, [u8; 32])]) -> Batch {
    let aa: Vec<u8> = adds.iter().map(|a| a.0 .0).collect();
    let ah: Vec<u8> = adds.iter().flat_map(|a| a.0 .1).collect();
    let ai: Vec<u8> = adds.iter().flat_map(|a| a.1.to_le_bytes()).collect();
    let da: Vec<u8> = dels.iter().map(|d| d.0).collect();
    let dh: Vec<u8> = dels.iter().flat_map(|d| d.1).collect();
    let mut ends = Vec::new();
    let mut refs = String::new();
    for a in adds {
        refs.push_str(&a.2);
        ends.extend_from_slice(&(refs.len() as u32).to_le_bytes());
    }
    Batch::decode(&aa, &ah, &ai, &da, &dh)
        .unwrap()
        .with_refs(&ends, refs.as_bytes())
        .unwrap()
}

fn queries(keys: &[(u8, [u8; 32])]) -> Queries {
    let a: Vec<u8> = keys.iter().map(|k| k.0).collect();
    let h: Vec<u8> = keys.iter().flat_map(|k| k.1).collect();
    Queries::decode(&a, &h, &vec![255; keys.len()], &vec![255; keys.len()]).unwrap()
}

fn near(h: &[u8; 32], bits: usize) -> [u8; 32] {
    let mut out = *h;
    for b in 0..bits {
        out[(b * 37) % 32] ^= 1 << (b % 8);
    }
    out
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hashcore-seg-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fresh(config: ListConfig) -> Index {
    let index = Index::with_background(false);
    index.configure_list(3, config);
    index
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn a_loaded_list_answers_as_the_written_one(
        rounds in prop::collection::vec(
            (prop::collection::vec((1u8..=5, 0u64..400, "[a-z]{0,6}"), 0..300),
             prop::collection::vec((1u8..=5, 0u64..400), 0..80)),
            1..6),
        after in prop::collection::vec((1u8..=5, 0u64..400), 0..40),
    ) {
        let dir = tempdir("prop");
        let config = ListConfig::new(31, 0).unwrap();
        let index = fresh(config);
        // The model: every live (alg, slot) with its id and reference.
        let mut model: BTreeMap<(u8, [u8; 32]), (u64, String)> = BTreeMap::new();
        // The store gives every new entry a fresh id.
        let mut next_id = 0u64;
        for (adds, dels) in &rounds {
            let dels: Vec<(u8, [u8; 32])> = dels.iter().map(|&(a, s)| (a, slot(a, s))).collect();
            let mut last: BTreeMap<(u8, [u8; 32]), (u64, String)> = BTreeMap::new();
            for (a, s, r) in adds {
                next_id += 1;
                last.insert((*a, slot(*a, *s)), (next_id, r.clone()));
            }
            let adds: Vec<Entry> = last.iter().map(|(k, (id, r))| (*k, *id, r.clone())).collect();
            index.apply(3, &batch(&adds, &dels)).unwrap();
            for d in &dels { model.remove(d); }
            for (k, v) in last { model.insert(k, v); }
        }
        let snap = index.list_snapshot(3).unwrap();
        let mut sum = 0u128;
        for ((alg, s), (_, r)) in &model {
            sum = sum.wrapping_add(entry_term(*alg, &s[..ALG_LEN[*alg as usize]], r.as_bytes()));
        }
        prop_assert_eq!(snap.digest(), sum.to_be_bytes(), "digest as the store sums it");
        let info = SegmentInfo { list_id: 3, version: 9, epoch: 2, digest: snap.digest() };
        let path = dir.join("list-3.seg");
        snap.save(&path, &info).unwrap();

        let loaded = fresh(config);
        loaded.load_list(&path, &info).unwrap();
        prop_assert_eq!(loaded.counts(3).unwrap(), index.counts(3).unwrap());
        prop_assert_eq!(loaded.list_snapshot(3).unwrap().digest(), snap.digest());
        prop_assert_eq!(loaded.list_snapshot(3).unwrap().version(), 9);
        let mut probe: Vec<(u8, [u8; 32])> = model.keys().copied().collect();
        probe.extend(model.keys().filter(|k| k.0 >= 4).map(|k| (4, near(&k.1, 9))));
        probe.extend((1u8..=4).map(|a| (a, slot(a, 999))));
        let q = queries(&probe);
        prop_assert_eq!(loaded.match_batch(&q), index.match_batch(&q));
        let frames: Vec<hashcore::video::Frame> = model
            .keys()
            .filter(|k| k.0 == 5)
            .enumerate()
            .map(|(i, k)| hashcore::video::Frame {
                pdq: hashcore::pdq::pdq_from_bytes(&k.1),
                quality: 100,
                millis: i as u32 * 1000,
            })
            .collect();
        prop_assert_eq!(loaded.match_video(&frames), index.match_video(&frames));

        // Changes on top of the mapped segments.
        let dels: Vec<(u8, [u8; 32])> = after.iter().map(|&(a, s)| (a, slot(a, s))).collect();
        let b = batch(&[((1, slot(1, 7777)), next_id + 1, "new".into())], &dels);
        index.apply(3, &b).unwrap();
        loaded.apply(3, &b).unwrap();
        loaded.compact();
        prop_assert_eq!(loaded.match_batch(&q), index.match_batch(&q));
        prop_assert_eq!(
            loaded.list_snapshot(3).unwrap().digest(),
            index.list_snapshot(3).unwrap().digest()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn a_refused_file_changes_nothing() {
    let dir = tempdir("refused");
    let config = ListConfig::new(31, 0).unwrap();
    let index = fresh(config);
    let pdq: Pdq = [1, 2, 3, 4];
    let entry: Entry = ((4, pdq_to_bytes(&pdq)), 5, "ref-5".into());
    index.apply(3, &batch(&[entry], &[])).unwrap();
    let snap = index.list_snapshot(3).unwrap();
    let info = SegmentInfo {
        list_id: 3,
        version: 1,
        epoch: 0,
        digest: snap.digest(),
    };
    let path = dir.join("list-3.seg");
    snap.save(&path, &info).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();

    let other = fresh(config);
    let other_entry: Entry = ((1, slot(1, 1)), 9, "kept".into());
    other.apply(3, &batch(&[other_entry], &[])).unwrap();
    let before = other.list_snapshot(3).unwrap().digest();
    let err = other.load_list(&path, &info).unwrap_err().to_string();
    assert!(err.starts_with("segment file: "), "{err}");
    assert_eq!(other.list_snapshot(3).unwrap().digest(), before);
    let unknown = SegmentInfo { list_id: 4, ..info };
    assert!(
        other.load_list(&path, &unknown).is_err(),
        "an unconfigured list"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_multi_index_segment_round_trips() {
    // Enough PDQ entries for the multi-index tables (small segments are scanned).
    let dir = tempdir("mih");
    let config = ListConfig::new(31, 0).unwrap();
    let index = fresh(config);
    let adds: Vec<Entry> = (0..6000u64)
        .map(|i| ((4, slot(4, i)), i + 1, format!("r{i}")))
        .collect();
    index.apply(3, &batch(&adds, &[])).unwrap();
    let snap = index.list_snapshot(3).unwrap();
    let info = SegmentInfo {
        list_id: 3,
        version: 1,
        epoch: 0,
        digest: snap.digest(),
    };
    let path = dir.join("list-3.seg");
    snap.save(&path, &info).unwrap();
    let loaded = fresh(config);
    loaded.load_list(&path, &info).unwrap();
    let probe: Vec<(u8, [u8; 32])> = (0..6000u64)
        .step_by(7)
        .flat_map(|i| [(4, near(&slot(4, i), 20)), (4, near(&slot(4, i), 40))])
        .collect();
    let q = queries(&probe);
    let want = index.match_batch(&q);
    assert!(want.len() >= probe.len() / 2, "the near ones match");
    assert_eq!(loaded.match_batch(&q), want);
    std::fs::remove_dir_all(&dir).unwrap();
}
