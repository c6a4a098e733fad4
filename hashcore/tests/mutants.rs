//! Written for the mutants cargo-mutants found alive in the matching modules
//! (scripts/mutation.sh, benchmarks/mutation/survivors.md): exact values where
//! the other tests only check that something was found.

use hashcore::exact::ExactSegment;
use hashcore::index::{pack_matches, PACKED_MATCH};
use hashcore::{CoreError, RefColumns};

fn key(i: u32) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(&i.wrapping_mul(0x9E37_79B9).to_be_bytes());
    k[4..8].copy_from_slice(&i.to_le_bytes());
    k
}

#[test]
fn exact_segment_memory_is_keys_ids_and_directory() {
    // Per cell also a 2-byte summary of its keys.
    // Fewer than 4 entries: no directory bits, one cell (two offsets).
    let small = ExactSegment::<16>::build((0..3).map(|i| (key(i), u64::from(i))).collect());
    assert_eq!(small.memory_bytes(), 3 * (16 + 8) + 2 * 4 + 2);
    // n = 4: floor(log2 4) - 1 = 1 directory bit, two cells, three offsets.
    let four = ExactSegment::<16>::build((0..4).map(|i| (key(i), u64::from(i))).collect());
    assert_eq!(four.memory_bytes(), 4 * (16 + 8) + 3 * 4 + 2 * 2);
    // n = 1000: floor(log2 1000) - 1 = 8 bits, 256 cells, 257 offsets.
    let many = ExactSegment::<16>::build((0..1000).map(|i| (key(i), u64::from(i))).collect());
    assert_eq!(many.memory_bytes(), 1000 * (16 + 8) + 257 * 4 + 256 * 2);
    for i in 0..1000 {
        let pos = many.find(&key(i)).expect("present");
        assert_eq!(many.id_at(pos), u64::from(i));
    }
}

#[test]
fn packed_matches_are_little_endian_records() {
    assert!(pack_matches(&[]).is_empty());
    let packed = pack_matches(&[(1, 2, 3), (0x0102_0304, 7, u64::MAX - 1)]);
    assert_eq!(packed.len(), 2 * PACKED_MATCH);
    let mut want = Vec::new();
    want.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]);
    want.extend_from_slice(&[4, 3, 2, 1, 7, 0, 0, 0]);
    want.extend_from_slice(&(u64::MAX - 1).to_le_bytes());
    assert_eq!(packed, want);
}

fn ends(offsets: &[u32]) -> Vec<u8> {
    offsets.iter().flat_map(|o| o.to_le_bytes()).collect()
}

#[test]
fn reference_ends_must_rise_stay_inside_and_fall_on_characters() {
    let ok = RefColumns::decode(3, &ends(&[3, 3, 6]), "abcdéf".as_bytes()).expect("valid");
    assert_eq!(ok.ends, vec![3, 3, 6]);
    assert_eq!(ok.text, "abcdéf");
    let refused = |offsets: &[u32], text: &str| match RefColumns::decode(
        offsets.len(),
        &ends(offsets),
        text.as_bytes(),
    ) {
        Err(CoreError::InvalidReference { index, offset }) => (index, offset),
        other => panic!("{offsets:?} in {text:?}: {:?}", other.map(|r| r.ends)),
    };
    // Going back.
    assert_eq!(refused(&[3, 1], "abc"), (1, 1));
    // Past the end of the text.
    assert_eq!(refused(&[1, 4], "abc"), (1, 4));
    // Inside a character (é is two bytes, at 4..6).
    assert_eq!(refused(&[5], "abcdéf"), (0, 5));
}

#[test]
fn index_memory_grows_with_each_algorithm() {
    use hashcore::index::{Alg, Batch, Index, ListConfig, SLOT};
    let idx = Index::with_background(false);
    idx.configure_list(1, ListConfig::new(31, 50).expect("valid"));
    let mut last = idx.memory_bytes();
    for (alg, len) in [
        (Alg::Md5, 16),
        (Alg::Sha1, 20),
        (Alg::Sha256, 32),
        (Alg::Pdq, 32),
        (Alg::Vpdq, 32),
    ] {
        let n = 500u32;
        let mut hashes = Vec::new();
        for i in 0..n {
            let mut slot = [0u8; SLOT];
            // Distinct, and far apart for PDQ: a mix of the index into every byte.
            for (b, byte) in slot[..len].iter_mut().enumerate() {
                *byte = (i.wrapping_mul(2_654_435_761).rotate_left(b as u32 % 32) >> 3) as u8
                    ^ (b as u8).wrapping_mul(37);
            }
            slot[..4].copy_from_slice(&i.to_be_bytes());
            hashes.extend_from_slice(&slot);
        }
        let ids: Vec<u8> = (0..u64::from(n))
            .flat_map(|i| (i + 1000 * alg as u64).to_le_bytes())
            .collect();
        let algs = vec![alg as u8; n as usize];
        let batch = Batch::decode(&algs, &hashes, &ids, &[], &[]).expect("valid batch");
        idx.apply(1, &batch).expect("applied");
        let now = idx.memory_bytes();
        // Each entry holds at least its digest and its 8-byte id.
        assert!(
            now >= last + n as usize * (len + 8),
            "{alg:?}: {last} -> {now} bytes for {n} entries"
        );
        last = now;
    }
}

#[test]
fn diagnostics_count_segments_and_reference_bytes() {
    use hashcore::index::{Alg, Batch, Index, ListConfig, SLOT};
    let idx = Index::with_background(false);
    idx.configure_list(1, ListConfig::new(31, 50).expect("valid"));
    assert_eq!(idx.segments(1).expect("known list"), (0, 0, 0, 0, 0));
    assert_eq!(idx.reference_bytes(1).expect("known list"), 0);
    let refs: Vec<String> = (0..100).map(|i| format!("reference-{i:04}")).collect();
    let mut hashes = Vec::new();
    let mut ends = Vec::new();
    let mut text = String::new();
    for (i, r) in refs.iter().enumerate() {
        let mut slot = [0u8; SLOT];
        slot[..4].copy_from_slice(&(i as u32 + 1).to_be_bytes());
        hashes.extend_from_slice(&slot);
        text.push_str(r);
        ends.extend_from_slice(&(text.len() as u32).to_le_bytes());
    }
    let ids: Vec<u8> = (0..100u64).flat_map(|i| i.to_le_bytes()).collect();
    let batch = Batch::decode(&[Alg::Md5 as u8; 100], &hashes, &ids, &[], &[])
        .and_then(|b| b.with_refs(&ends, text.as_bytes()))
        .expect("valid batch");
    idx.apply(1, &batch).expect("applied");
    // One MD5 segment, nothing in the other tiers.
    assert_eq!(idx.segments(1).expect("known list"), (1, 0, 0, 0, 0));
    // At least the text of the hundred references is held.
    assert!(idx.reference_bytes(1).expect("known list") >= text.len());
    assert!(idx.segments(2).is_err() && idx.reference_bytes(2).is_err());
}

#[test]
fn a_group_holds_one_to_eight_hashes() {
    use hashcore::index::MAX_GROUP;
    use hashcore::GroupQueries;
    let group = |sizes: &[u8]| {
        let total: usize = sizes.iter().map(|&g| usize::from(g)).sum();
        let hashes: Vec<u8> = (0..total * 32).map(|i| (i * 7 + 3) as u8).collect();
        let per_group = vec![100u8; sizes.len()];
        GroupQueries::decode(&hashes, sizes, &per_group, &vec![31u8; sizes.len()])
    };
    let full = group(&[1, MAX_GROUP]).expect("a group of 8 is an item's dihedral variants");
    assert_eq!(full.bounds, vec![(0, 1), (1, 1 + u32::from(MAX_GROUP))]);
    assert_eq!(full.hashes.len(), 1 + usize::from(MAX_GROUP));
    assert!(matches!(
        group(&[1, MAX_GROUP + 1]),
        Err(CoreError::InvalidGroup { index: 1 })
    ));
    assert!(matches!(
        group(&[2, 0]),
        Err(CoreError::InvalidGroup { index: 1 })
    ));
}

#[test]
fn pdq_segment_memory_counts_four_bytes_per_table_entry() {
    use hashcore::pdq::PdqSegment;
    let n: u64 = 20_000;
    let entries = (0..n)
        .map(|i| {
            let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            ([x, x.rotate_left(17) ^ i, !x, x.rotate_right(29)], i)
        })
        .collect();
    let seg = PdqSegment::build(entries);
    // 32-byte hash and 8-byte id per entry, and at least 7 secondary tables holding a
    // 4-byte position per entry each.
    let n = n as usize;
    assert!(
        seg.memory_bytes() >= n * (40 + 7 * 4),
        "{}",
        seg.memory_bytes()
    );
}
