//! Exact digests looked up in place in the request bytes, against a brute-force
//! oracle (hash maps per list): mixed algorithms, PDQ hashes between them,
//! duplicates, misses, several lists with retired and replaced entries, a
//! tenant's subscriptions and allow-list, and items written in the common shape
//! as well as in every other way the wire format allows.

use std::collections::{BTreeMap, HashMap};

use hashcore::index::Key;
use hashcore::pdq::{hamming, pdq_from_bytes, pdq_to_bytes, Pdq};
use hashcore::proto::{put_len as len_field, put_varint as varint};
use hashcore::{Batch, Index, ListConfig};
use proptest::prelude::*;

const THRESHOLD: u32 = 31;

fn alg_value(k: &Key) -> (u64, Vec<u8>) {
    match k {
        Key::Md5(d) => (1, d.to_vec()),
        Key::Sha1(d) => (2, d.to_vec()),
        Key::Sha256(d) => (3, d.to_vec()),
        Key::Pdq(h) => (4, pdq_to_bytes(h).to_vec()),
        Key::Vpdq(h) => (5, pdq_to_bytes(h).to_vec()),
    }
}

/// How one item is written; all but `Common` take the general reader.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Common,
    /// `value` before `algorithm` in each hash.
    ValueFirst,
    /// `item_id` after the hashes.
    IdLast,
    /// An unknown varint field (15) at the end of each hash.
    UnknownField,
    /// A non-ASCII (valid UTF-8) item_id.
    Unicode,
    /// The algorithm as a two-byte varint.
    LongVarint,
    /// One hash's value one byte short: the item is refused.
    BadLength,
    /// A printable item_id of 8 to 255 bytes (the common shape; a two-byte
    /// length from 128 bytes on).
    LongId(u8),
    /// An item_id with a control character (the item is refused) at a given
    /// position of a long id.
    Control(u8),
}

/// How one item of a batch is framed; all are read alike.
#[derive(Debug, Clone, Copy)]
enum Framing {
    Plain,
    /// An unknown varint field (3) of the batch just before the item.
    UnknownBefore,
    /// The item's length as a three-byte (non-minimal) varint.
    PaddedLength,
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        8 => Just(Framing::Plain),
        1 => Just(Framing::UnknownBefore),
        1 => Just(Framing::PaddedLength),
    ]
}

fn frame_item(body: &[u8], framing: Framing, raw: &mut Vec<u8>) {
    match framing {
        Framing::Plain => len_field(1, body, raw),
        Framing::UnknownBefore => {
            raw.extend_from_slice(&[3 << 3, 0x96, 0x01]);
            len_field(1, body, raw);
        }
        Framing::PaddedLength => {
            let n = body.len();
            assert!(n < 1 << 14);
            raw.extend_from_slice(&[0x0a, (n & 0x7f) as u8 | 0x80, (n >> 7) as u8 | 0x80, 0]);
            raw.extend_from_slice(body);
        }
    }
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        6 => Just(Shape::Common),
        1 => Just(Shape::ValueFirst),
        1 => Just(Shape::IdLast),
        1 => Just(Shape::UnknownField),
        1 => Just(Shape::Unicode),
        1 => Just(Shape::LongVarint),
        1 => Just(Shape::BadLength),
        1 => any::<u8>().prop_map(Shape::LongId),
        1 => any::<u8>().prop_map(Shape::Control),
    ]
}

/// The item_id item `id` is written with in `shape`.
fn shaped_id(id: &str, shape: Shape) -> String {
    let long = |n: u8| {
        let mut id = format!("{id}-{}", "0123456789~ ".repeat(22));
        id.truncate(usize::from(n).max(8));
        id
    };
    match shape {
        Shape::Unicode => format!("{id}-é"),
        Shape::LongId(n) => long(n),
        Shape::Control(n) => {
            let mut id = long(n).into_bytes();
            let at = usize::from(n) % id.len();
            id[at] = [0x00, 0x07, 0x1f, 0x7f][usize::from(n) % 4];
            String::from_utf8(id).unwrap()
        }
        _ => id.to_owned(),
    }
}

fn encode_item(id: &str, keys: &[Key], shape: Shape) -> Vec<u8> {
    let id = shaped_id(id, shape);
    let mut hashes = Vec::new();
    for (j, k) in keys.iter().enumerate() {
        let (alg, mut value) = alg_value(k);
        if matches!(shape, Shape::BadLength) && j == 0 {
            value.pop();
        }
        let mut h = Vec::new();
        let alg_field = |h: &mut Vec<u8>| {
            h.push(0x08);
            if matches!(shape, Shape::LongVarint) {
                h.extend_from_slice(&[alg as u8 | 0x80, 0x00]);
            } else {
                varint(alg, h);
            }
        };
        if matches!(shape, Shape::ValueFirst) {
            len_field(2, &value, &mut h);
            alg_field(&mut h);
        } else {
            alg_field(&mut h);
            len_field(2, &value, &mut h);
        }
        if matches!(shape, Shape::UnknownField) {
            h.extend_from_slice(&[15 << 3, 7]);
        }
        len_field(2, &h, &mut hashes);
    }
    let mut out = Vec::new();
    if matches!(shape, Shape::IdLast) {
        out.extend_from_slice(&hashes);
        len_field(1, id.as_bytes(), &mut out);
    } else {
        if !id.is_empty() {
            len_field(1, id.as_bytes(), &mut out);
        }
        out.extend_from_slice(&hashes);
    }
    out
}

/// A pool key: `(algorithm 0-3, seed)`, digests derived from the seed.
fn make_key(alg: u8, seed: u64) -> Key {
    let mut bytes = [0u8; 32];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(alg);
    for chunk in bytes.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    match alg {
        0 => Key::Md5(bytes[..16].try_into().unwrap()),
        1 => Key::Sha1(bytes[..20].try_into().unwrap()),
        2 => Key::Sha256(bytes),
        _ => Key::Pdq(pdq_from_bytes(&bytes)),
    }
}

fn apply(idx: &Index, list: u32, adds: &[(Key, u64, String)], dels: &[Key]) {
    let mut algs = Vec::new();
    let mut slots = Vec::new();
    let mut ids = Vec::new();
    let mut refs = String::new();
    let mut ends = Vec::new();
    for (k, id, r) in adds {
        let (alg, value) = alg_value(k);
        algs.push(alg as u8);
        slots.extend_from_slice(&value);
        slots.resize(slots.len() + 32 - value.len(), 0);
        ids.extend_from_slice(&id.to_le_bytes());
        refs.push_str(r);
        ends.extend_from_slice(&(refs.len() as u32).to_le_bytes());
    }
    let mut del_algs = Vec::new();
    let mut del_slots = Vec::new();
    for k in dels {
        let (alg, value) = alg_value(k);
        del_algs.push(alg as u8);
        del_slots.extend_from_slice(&value);
        del_slots.resize(del_slots.len() + 32 - value.len(), 0);
    }
    let batch = Batch::decode(&algs, &slots, &ids, &del_algs, &del_slots)
        .unwrap()
        .with_refs(&ends, refs.as_bytes())
        .unwrap();
    idx.apply(list, &batch).unwrap();
}

/// One list: entries as (pool index, reference number), then retired pool indexes.
type ListCase = (Vec<(usize, u8)>, Vec<usize>);
/// One query hash: a pool index, or a miss as (algorithm, seed).
type HashCase = Result<usize, (u8, u64)>;

#[derive(Debug, Clone)]
struct Case {
    lists: Vec<ListCase>,
    /// Items: (hashes, shape, framing in a batch).
    items: Vec<(Vec<HashCase>, Shape, Framing)>,
    /// Lists the tenant reads (None: all), and allow-listed pool indexes.
    subscribed: Option<Vec<u32>>,
    allow: Vec<usize>,
    batch: bool,
}

fn case() -> impl Strategy<Value = (Vec<(u8, u64)>, Case)> {
    let pool = proptest::collection::vec((0u8..4, any::<u64>()), 1..40);
    pool.prop_flat_map(|pool| {
        let n = pool.len();
        let entries = proptest::collection::vec((0..n, 0u8..6), 0..30);
        let retired = proptest::collection::vec(0..n, 0..5);
        let lists = proptest::collection::vec((entries, retired), 1..4);
        let hash = prop_oneof![
            3 => (0..n).prop_map(Ok),
            1 => (0u8..4, any::<u64>()).prop_map(Err),
        ];
        let items = proptest::collection::vec(
            (proptest::collection::vec(hash, 1..5), shape(), framing()),
            1..30,
        );
        let subscribed = proptest::option::of(proptest::collection::vec(1u32..4, 0..3));
        let allow = proptest::collection::vec(0..n, 0..3);
        (Just(pool), lists, items, subscribed, allow, any::<bool>()).prop_map(
            |(pool, lists, items, subscribed, allow, batch)| {
                (
                    pool,
                    Case {
                        lists,
                        items,
                        subscribed,
                        allow,
                        batch,
                    },
                )
            },
        )
    })
}

/// Whether `q` hits `entry` in a list: equal digests, or PDQ within the threshold.
fn hits(q: &Key, entry: &Key) -> bool {
    match (q, entry) {
        (Key::Pdq(a), Key::Pdq(b)) => hamming(a, b) <= THRESHOLD,
        _ => q == entry,
    }
}

fn is_pdq(k: &Key) -> Option<Pdq> {
    match k {
        Key::Pdq(h) => Some(*h),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn exact_lookups_in_place_agree_with_the_oracle((pool, case) in case()) {
        let keys: Vec<Key> = pool.iter().map(|&(a, s)| make_key(a, s)).collect();
        let idx = Index::with_background(false);
        // Per list id: key -> (entry id, reference), as the oracle keeps it.
        let mut oracle: BTreeMap<u32, HashMap<Key, String>> = BTreeMap::new();
        let mut next_id = 1u64;
        for (l, (entries, retired)) in case.lists.iter().enumerate() {
            let lid = l as u32 + 1;
            idx.configure_list(lid, ListConfig::new(i64::from(THRESHOLD), 0).unwrap());
            let map = oracle.entry(lid).or_default();
            // Two batches: the second replaces half the entries, so a list has
            // several segments and retired positions.
            let (first, second) = entries.split_at(entries.len() / 2);
            for part in [first, second] {
                let mut adds: Vec<(Key, u64, String)> = Vec::new();
                for &(k, r) in part {
                    let reference = format!("L{lid}-r{r}");
                    adds.retain(|a| a.0 != keys[k]);
                    adds.push((keys[k], next_id, reference.clone()));
                    next_id += 1;
                }
                apply(&idx, lid, &adds, &[]);
                for (k, _, r) in adds {
                    map.insert(k, r);
                }
            }
            let dels: Vec<Key> = retired.iter().map(|&k| keys[k]).collect();
            apply(&idx, lid, &[], &dels);
            for k in &dels {
                map.remove(k);
            }
        }
        let allow: Vec<Key> = case.allow.iter().map(|&k| keys[k]).collect();
        if let Some(lists) = &case.subscribed {
            idx.set_policy("t", false, lists.clone(), allow.clone());
        } else if !allow.is_empty() {
            idx.set_policy("t", true, vec![], allow.clone());
        }
        let items: Vec<(Vec<Key>, Shape)> = case
            .items
            .iter()
            .map(|(hs, shape, _)| {
                let ks = hs
                    .iter()
                    .map(|h| match *h {
                        Ok(k) => keys[k],
                        Err((a, s)) => make_key(a, s ^ 0x5555),
                    })
                    .collect();
                (ks, *shape)
            })
            .collect();
        let items = if case.batch { items } else { items[..1].to_vec() };
        let bodies: Vec<Vec<u8>> = items
            .iter()
            .enumerate()
            .map(|(i, (ks, shape))| encode_item(&format!("item-{i}"), ks, *shape))
            .collect();
        let raw = if case.batch {
            let mut raw = Vec::new();
            for (b, item) in bodies.iter().zip(&case.items) {
                frame_item(b, item.2, &mut raw);
            }
            raw
        } else {
            bodies[0].clone()
        };
        let v = idx.match_request(&raw, case.batch, "t", false);
        let is_refused = |s: &Shape| matches!(s, Shape::BadLength | Shape::Control(_));
        let refused = items.iter().any(|(_, s)| is_refused(s));
        if !case.batch && refused {
            prop_assert!(!v.request.violations.is_empty());
            return Ok(());
        }
        prop_assert!(v.request.violations.is_empty(), "{:?}", v.request.violations);
        let reads = |lid: u32| case.subscribed.as_ref().is_none_or(|l| l.contains(&lid));
        let allowed = |q: &Key| {
            allow.iter().any(|a| match (is_pdq(q), is_pdq(a)) {
                (Some(x), Some(y)) => hamming(&x, &y) <= THRESHOLD,
                _ => a == q,
            })
        };
        for (i, (ks, shape)) in items.iter().enumerate() {
            let got: Vec<(u32, &str)> = v
                .answers
                .iter()
                .filter(|a| a.item as usize == i)
                .map(|a| (a.list_id, v.reference(a)))
                .collect();
            if is_refused(shape) {
                prop_assert!(v.request.item_errors(i).is_some());
                prop_assert!(got.is_empty());
                continue;
            }
            prop_assert!(v.request.item_errors(i).is_none());
            let id = shaped_id(&format!("item-{i}"), *shape);
            prop_assert_eq!(v.request.item_id(i), id.as_bytes());
            // Hash by hash, list by list (entries of one list by entry id: the
            // order they were added in), one answer per (list, reference).
            let mut want: Vec<(u32, &str)> = Vec::new();
            for q in ks {
                if allowed(q) {
                    continue;
                }
                for (&lid, map) in &oracle {
                    if !reads(lid) {
                        continue;
                    }
                    let mut found: Vec<(u64, &str)> = map
                        .iter()
                        .filter(|(k, _)| hits(q, k))
                        .map(|(k, r)| (entry_order(&case, &keys, lid, k), r.as_str()))
                        .collect();
                    found.sort_unstable();
                    for (_, r) in found {
                        if !want.contains(&(lid, r)) {
                            want.push((lid, r));
                        }
                    }
                }
            }
            prop_assert_eq!(got, want, "item {}", i);
        }
    }
}

/// The entry id the index holds for `key` in list `lid` (the last one added).
fn entry_order(case: &Case, keys: &[Key], lid: u32, key: &Key) -> u64 {
    let mut id = 1u64;
    let mut found = 0;
    for (l, (entries, _)) in case.lists.iter().enumerate() {
        for &(k, _) in entries {
            if l as u32 + 1 == lid && keys[k] == *key {
                found = id;
            }
            id += 1;
        }
    }
    found
}
