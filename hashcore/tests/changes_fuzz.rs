//! Fuzzing the request readers on mutated valid requests: `parse_changes`
//! (`ApplyChangesRequest`) and the match path's reader (`MatchRequest`,
//! `MatchBatchRequest`).
//!
//! Bounded property tests that run with `cargo test` (a few thousand cases in
//! all): a valid request is built, then mutated by bit flips, truncations,
//! splices, random bytes, and unknown fields of every wire type (groups, nested
//! ones included) inserted at the top level or inside a sub-message. Whatever
//! the bytes, a reader never panics and either reads them (with consistent
//! output) or reports an error; inserting well-formed unknown fields changes
//! nothing that is read, as with the protobuf runtime.

use hashcore::changes::{parse_changes, Changes, WHOLE_REQUEST};
use hashcore::{Index, ListConfig};
use proptest::prelude::*;

// ---- encoding -----------------------------------------------------------------------

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(field: u64, wire: u64, out: &mut Vec<u8>) {
    varint(field << 3 | wire, out);
}

fn len_field(field: u64, body: &[u8], out: &mut Vec<u8>) {
    key(field, 2, out);
    varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

#[derive(Debug, Clone)]
struct HashSpec {
    alg: u64,
    value: Vec<u8>,
    quality: Option<u64>,
}

fn encode_hash(h: &HashSpec) -> Vec<u8> {
    let mut out = Vec::new();
    key(1, 0, &mut out);
    varint(h.alg, &mut out);
    len_field(2, &h.value, &mut out);
    if let Some(q) = h.quality {
        key(3, 0, &mut out);
        varint(q, &mut out);
    }
    out
}

/// Where a sub-message sits in its parent, so unknown fields can be inserted in it.
#[derive(Debug, Clone, Copy)]
enum Nest {
    Top,
    Entry(usize),
    EntryHash(usize),
    Retirement(usize),
}

#[derive(Debug, Clone)]
struct Request {
    list: String,
    batch_id: String,
    upserts: Vec<(HashSpec, String)>,
    retirements: Vec<HashSpec>,
    expected_version: Option<u64>,
}

impl Request {
    /// The wire bytes, with `extra` inserted into the sub-message it names.
    fn encode(&self, extra: &[(Nest, Vec<u8>)]) -> Vec<u8> {
        let extra_for = |n: &dyn Fn(Nest) -> bool| -> Vec<u8> {
            extra
                .iter()
                .filter(|(at, _)| n(*at))
                .flat_map(|(_, b)| b.clone())
                .collect()
        };
        let mut out = extra_for(&|n| matches!(n, Nest::Top));
        len_field(1, self.list.as_bytes(), &mut out);
        len_field(2, self.batch_id.as_bytes(), &mut out);
        for (i, (h, r)) in self.upserts.iter().enumerate() {
            let mut hash = encode_hash(h);
            hash.extend(extra_for(&|n| matches!(n, Nest::EntryHash(j) if j == i)));
            let mut entry = Vec::new();
            len_field(1, &hash, &mut entry);
            entry.extend(extra_for(&|n| matches!(n, Nest::Entry(j) if j == i)));
            len_field(2, r.as_bytes(), &mut entry);
            len_field(3, &entry, &mut out);
        }
        for (i, h) in self.retirements.iter().enumerate() {
            let mut hash = encode_hash(h);
            hash.extend(extra_for(&|n| matches!(n, Nest::Retirement(j) if j == i)));
            len_field(4, &hash, &mut out);
        }
        if let Some(v) = self.expected_version {
            key(5, 0, &mut out);
            varint(v, &mut out);
        }
        out
    }
}

fn digest_len(alg: u64) -> usize {
    match alg {
        1 => 16,
        2 => 20,
        _ => 32,
    }
}

fn hash_strategy() -> impl Strategy<Value = HashSpec> {
    (1u64..=4, any::<u8>(), prop::option::of(0u64..=100)).prop_map(|(alg, seed, quality)| {
        let value: Vec<u8> = (0..digest_len(alg))
            .map(|i| {
                if alg == 4 {
                    // Balanced bits: not degenerate.
                    if (i as u8 ^ seed).is_multiple_of(2) {
                        0xf0
                    } else {
                        0x0f
                    }
                } else {
                    seed.wrapping_add(i as u8)
                }
            })
            .collect();
        HashSpec {
            alg,
            value,
            quality: if alg == 4 { quality } else { None },
        }
    })
}

fn request_strategy() -> impl Strategy<Value = Request> {
    (
        "[a-z0-9][a-z0-9._-]{0,10}",
        "[ -~]{1,12}",
        prop::collection::vec((hash_strategy(), "[A-Za-z0-9-]{1,12}"), 0..6),
        prop::collection::vec(hash_strategy(), 0..4),
        prop::option::of(any::<u64>()),
    )
        .prop_map(
            |(list, batch_id, upserts, retirements, expected_version)| Request {
                list,
                batch_id,
                upserts,
                retirements,
                expected_version,
            },
        )
}

/// One well-formed field of a random wire type; groups may nest.
fn unknown_field_strategy() -> impl Strategy<Value = Vec<u8>> {
    let leaf = (
        6u64..2000,
        0u8..5,
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..12),
    )
        .prop_map(|(field, wire, v, bytes)| {
            let mut out = Vec::new();
            match wire {
                0 => {
                    key(field, 0, &mut out);
                    varint(v, &mut out);
                }
                1 => {
                    key(field, 1, &mut out);
                    out.extend(v.to_le_bytes());
                }
                2 => len_field(field, &bytes, &mut out),
                3 => {
                    key(field, 5, &mut out);
                    out.extend((v as u32).to_le_bytes());
                }
                _ => {
                    key(field, 3, &mut out);
                    key(field, 4, &mut out);
                }
            }
            out
        });
    leaf.prop_recursive(4, 24, 4, |inner| {
        (6u64..2000, prop::collection::vec(inner, 0..4)).prop_map(|(field, body)| {
            let mut out = Vec::new();
            key(field, 3, &mut out);
            for b in body {
                out.extend(b);
            }
            key(field, 4, &mut out);
            out
        })
    })
}

fn nest_strategy() -> impl Strategy<Value = Nest> {
    prop_oneof![
        Just(Nest::Top),
        (0usize..6).prop_map(Nest::Entry),
        (0usize..6).prop_map(Nest::EntryHash),
        (0usize..4).prop_map(Nest::Retirement),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize),
    Truncate(usize),
    Splice { from: usize, len: usize, at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Overwrite { at: usize, byte: u8 },
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Flip),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 0usize..16, any::<usize>()).prop_map(|(from, len, at)| Mutation::Splice {
            from,
            len,
            at
        }),
        (
            any::<usize>(),
            prop_oneof![
                unknown_field_strategy(),
                prop::collection::vec(any::<u8>(), 1..8)
            ]
        )
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Overwrite { at, byte }),
    ]
}

fn mutate(raw: &mut Vec<u8>, m: &Mutation) {
    let n = raw.len();
    match m {
        Mutation::Flip(bit) if n > 0 => {
            let bit = bit % (n * 8);
            raw[bit / 8] ^= 1 << (bit % 8);
        }
        Mutation::Truncate(at) if n > 0 => raw.truncate(at % n),
        Mutation::Splice { from, len, at } if n > 0 => {
            let from = from % n;
            let end = (from + len).min(n);
            let chunk = raw[from..end].to_vec();
            let at = at % (n + 1);
            raw.splice(at..at, chunk);
        }
        Mutation::Insert { at, bytes } => {
            let at = at % (n + 1);
            raw.splice(at..at, bytes.iter().copied());
        }
        Mutation::Overwrite { at, byte } if n > 0 => raw[at % n] = *byte,
        _ => {}
    }
}

/// What a successful read must hold whatever the input.
fn consistent(c: &Changes) -> Result<(), TestCaseError> {
    let n = c.upserts.len();
    prop_assert_eq!(c.upserts.slots.len(), n * 32);
    prop_assert_eq!(c.upserts.qualities.len(), n);
    prop_assert_eq!(c.ref_ends.len(), n);
    prop_assert_eq!(c.retirements.slots.len(), c.retirements.len() * 32);
    prop_assert!(c.violations.len() <= hashcore::changes::MAX_VIOLATIONS);
    prop_assert!(c.violation_count >= c.violations.len());
    let mut start = 0;
    for i in 0..n {
        let end = c.ref_ends[i] as usize;
        prop_assert!(start <= end && end <= c.refs.len());
        prop_assert!(std::str::from_utf8(c.reference(i)).is_ok());
        start = end;
        // The accessors the store uses never panic on a read batch.
        let _ = c.upserts.digest(i);
        let _ = c.term(i);
    }
    for i in 0..c.retirements.len() {
        let _ = c.retirements.digest(i);
    }
    let _ = c.terms_sum();
    Ok(())
}

fn read_parts(c: &Changes) -> impl PartialEq + std::fmt::Debug + '_ {
    (
        (&c.list, &c.batch_id, c.expected_version),
        (&c.upserts, &c.refs, &c.ref_ends, &c.retirements),
        &c.violations,
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 3000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Mutated valid requests: a read or an error naming where, never a panic.
    #[test]
    fn parse_changes_survives_mutations(
        request in request_strategy(),
        mutations in prop::collection::vec(mutation_strategy(), 1..5),
        min_quality in 0u8..=100,
    ) {
        let mut raw = request.encode(&[]);
        for m in &mutations {
            mutate(&mut raw, m);
        }
        match parse_changes(&raw, min_quality) {
            Ok(c) => consistent(&c)?,
            Err(e) => {
                prop_assert!(!e.field.is_empty());
                prop_assert!(
                    e.field == WHOLE_REQUEST
                        || e.field == "list"
                        || e.field == "batch_id"
                        || e.field.starts_with("upserts[")
                        || e.field.starts_with("retirements["),
                    "{}", e
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1500,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Well-formed unknown fields anywhere, groups and nested groups included,
    /// are skipped: the request reads exactly as without them.
    #[test]
    fn unknown_fields_change_nothing(
        request in request_strategy(),
        extra in prop::collection::vec((nest_strategy(), unknown_field_strategy()), 1..5),
    ) {
        let plain = parse_changes(&request.encode(&[]), 50).unwrap();
        let raw = request.encode(&extra);
        let with = parse_changes(&raw, 50);
        prop_assert!(with.is_ok(), "{:?}", with.err());
        let with = with.unwrap();
        prop_assert_eq!(read_parts(&with), read_parts(&plain));
    }

    /// The match path's reader on mutated valid requests, single and batch.
    #[test]
    fn match_reader_survives_mutations(
        hashes in prop::collection::vec(hash_strategy(), 1..4),
        items in 1usize..4,
        batch in any::<bool>(),
        extra in prop::collection::vec(unknown_field_strategy(), 0..3),
        mutations in prop::collection::vec(mutation_strategy(), 0..4),
    ) {
        let mut item = Vec::new();
        len_field(1, b"item", &mut item);
        for h in &hashes {
            len_field(2, &encode_hash(h), &mut item);
        }
        for e in &extra {
            item.extend(e);
        }
        let mut raw = Vec::new();
        if batch {
            for _ in 0..items {
                len_field(1, &item, &mut raw);
            }
        } else {
            raw = item;
        }
        let clean = mutations.is_empty();
        for m in &mutations {
            mutate(&mut raw, m);
        }
        let idx = Index::with_background(false);
        idx.configure_list(1, ListConfig::new(31, 50).unwrap());
        let v = idx.match_request(&raw, batch, "t", false);
        if clean {
            prop_assert!(v.request.violations.is_empty(), "{:?}", v.request.violations);
            prop_assert_eq!(v.items(), if batch { items } else { 1 });
        }
        let _ = v.encode(-1, 0);
    }
}
