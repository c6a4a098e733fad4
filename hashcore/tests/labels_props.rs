//! Labels in `ApplyChangesRequest`s against a brute-force oracle: what is stored
//! for each entry, which labels are refused and where, and a fingerprint that
//! does not depend on the order a map's entries were sent in.

use std::collections::{BTreeMap, HashMap};

use hashcore::changes::parse_changes;
use hashcore::labels::{KEYS, MAX_VALUE_BYTES};
use hashcore::proto::{put_len as len_field, put_varint as varint};
use proptest::prelude::*;

/// One upsert: an MD5 digest seed, its reference and its labels as sent (in
/// wire order, repeats allowed).
#[derive(Debug, Clone)]
struct Spec {
    digest: u8,
    reference: String,
    labels: Vec<(String, String)>,
}

fn encode(entries: &[Spec]) -> Vec<u8> {
    let mut raw = Vec::new();
    len_field(1, b"l", &mut raw);
    len_field(2, b"b", &mut raw);
    for e in entries {
        let mut hash = Vec::new();
        varint(1 << 3, &mut hash);
        varint(1, &mut hash);
        len_field(2, &[e.digest; 16], &mut hash);
        let mut body = Vec::new();
        len_field(1, &hash, &mut body);
        len_field(2, e.reference.as_bytes(), &mut body);
        for (k, v) in &e.labels {
            let mut pair = Vec::new();
            len_field(1, k.as_bytes(), &mut pair);
            len_field(2, v.as_bytes(), &mut pair);
            len_field(3, &pair, &mut body);
        }
        len_field(3, &body, &mut raw);
    }
    raw
}

/// What the oracle expects: each entry's stored reference, and the fields refused.
fn oracle(entries: &[Spec]) -> (Vec<String>, Vec<String>) {
    let mut stored = Vec::new();
    let mut refused = Vec::new();
    let mut first: HashMap<&str, (usize, String)> = HashMap::new();
    let mut clashes = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let last: BTreeMap<&str, &str> = e
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let unknown = last.keys().filter(|k| !KEYS.contains(k)).count();
        refused.extend(std::iter::repeat_n(format!("upserts[{i}].labels"), unknown));
        for k in KEYS {
            if let Some(v) = last.get(k) {
                if v.is_empty() || v.len() > MAX_VALUE_BYTES || v.chars().any(char::is_control) {
                    refused.push(format!("upserts[{i}].labels.{k}"));
                }
            }
        }
        let labels: String = last
            .iter()
            .filter(|(k, _)| KEYS.contains(k))
            .map(|(k, v)| format!("\0{k}={v}"))
            .collect();
        match first.get(e.reference.as_str()) {
            Some((_, l)) if *l != labels => clashes.push(format!("upserts[{i}].labels")),
            Some(_) => {}
            None => {
                first.insert(&e.reference, (i, labels.clone()));
            }
        }
        stored.push(format!("{}{labels}", e.reference));
    }
    // Duplicate hashes are refused too (after the per-entry checks), then clashes.
    let mut seen = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if seen.insert(e.digest, i).is_some() {
            refused.push(format!("upserts[{i}].hash"));
        }
    }
    refused.extend(clashes);
    (stored, refused)
}

fn spec_strategy() -> impl Strategy<Value = Spec> {
    let key = prop::sample::select(vec![
        "category",
        "age_band",
        "classification",
        "baseline",
        "source",
        "colour",
        "",
    ]);
    let value = prop_oneof![
        "[a-zA-Z0-9=é ]{1,8}",
        Just(String::new()),
        Just("x".repeat(MAX_VALUE_BYTES)),
        Just("x".repeat(MAX_VALUE_BYTES + 1)),
        Just("a\u{1}b".to_string()),
    ];
    (
        0u8..12,
        prop::sample::select(vec!["R1", "R2", "R3"]),
        prop::collection::vec((key, value), 0..5),
    )
        .prop_map(|(digest, reference, labels)| Spec {
            digest,
            reference: reference.to_string(),
            labels: labels
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn labelled_batches_read_as_the_oracle_says(
        entries in prop::collection::vec(spec_strategy(), 1..6),
    ) {
        let c = parse_changes(&encode(&entries), 50).unwrap();
        let (stored, refused) = oracle(&entries);
        let got: Vec<String> = c.violations.iter().map(|v| v.field.clone()).collect();
        prop_assert_eq!(got, refused);
        for (i, want) in stored.iter().enumerate() {
            prop_assert_eq!(c.reference(i), want.as_bytes());
        }
    }

    #[test]
    fn the_fingerprint_ignores_the_order_of_distinct_keys(
        entries in prop::collection::vec(spec_strategy(), 1..6),
        seed in any::<u64>(),
    ) {
        // Distinct keys per entry (a repeated key's last value depends on order).
        let mut entries = entries;
        for e in &mut entries {
            let mut seen = std::collections::HashSet::new();
            e.labels.retain(|(k, _)| seen.insert(k.clone()));
        }
        let mut shuffled = entries.clone();
        let mut x = seed | 1;
        for e in &mut shuffled {
            for i in (1..e.labels.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                e.labels.swap(i, (x % (i as u64 + 1)) as usize);
            }
        }
        let a = parse_changes(&encode(&entries), 50).unwrap();
        let b = parse_changes(&encode(&shuffled), 50).unwrap();
        prop_assert_eq!(a.fingerprint, b.fingerprint);
        prop_assert_eq!(a.refs, b.refs);
    }
}
