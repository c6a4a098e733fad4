//! The match path on bytes: request validation, matching against a brute-force
//! oracle, response encoding, and robustness to mutated input.

use std::collections::HashSet;

use hashcore::index::Key;
use hashcore::labels;
use hashcore::pdq::{hamming, pdq_from_bytes, pdq_to_bytes};
use hashcore::proto::{put_len as len_field, put_varint as varint};
use hashcore::proto::{Reader, Value};
use hashcore::{Batch, CoreError, Index, ListConfig};
use proptest::prelude::*;

// ---- request encoding ---------------------------------------------------------------

fn hash(alg: u64, value: &[u8], quality: Option<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    if alg != 0 {
        varint(1 << 3, &mut out);
        varint(alg, &mut out);
    }
    if !value.is_empty() {
        len_field(2, value, &mut out);
    }
    if let Some(q) = quality {
        varint(3 << 3, &mut out);
        varint(q, &mut out);
    }
    out
}

fn item(id: &[u8], hashes: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    if !id.is_empty() {
        len_field(1, id, &mut out);
    }
    for h in hashes {
        len_field(2, h, &mut out);
    }
    out
}

fn batch(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in items {
        len_field(1, i, &mut out);
    }
    out
}

fn key_hash(k: &Key, quality: Option<u64>) -> Vec<u8> {
    match k {
        Key::Md5(d) => hash(1, d, quality),
        Key::Sha1(d) => hash(2, d, quality),
        Key::Sha256(d) => hash(3, d, quality),
        Key::Pdq(h) => hash(4, &pdq_to_bytes(h), quality),
        Key::Vpdq(h) => hash(5, &pdq_to_bytes(h), quality),
    }
}

fn packed(keys: &[Key]) -> (Vec<u8>, Vec<u8>) {
    let mut algs = Vec::new();
    let mut slots = Vec::new();
    for k in keys {
        let (a, d): (u8, Vec<u8>) = match k {
            Key::Md5(d) => (1, d.to_vec()),
            Key::Sha1(d) => (2, d.to_vec()),
            Key::Sha256(d) => (3, d.to_vec()),
            Key::Pdq(h) => (4, pdq_to_bytes(h).to_vec()),
            Key::Vpdq(h) => (5, pdq_to_bytes(h).to_vec()),
        };
        algs.push(a);
        let mut slot = d;
        slot.resize(32, 0);
        slots.extend(slot);
    }
    (algs, slots)
}

/// A batch of new entries: `keys[i]` with id `ids[i]` and reference `refs[i]`.
fn batch_of<'r>(keys: &[Key], ids: &[u64], refs: impl IntoIterator<Item = &'r str>) -> Batch {
    changes_of(keys, ids, refs, &[]).unwrap()
}

/// [`batch_of`], retiring `dels` too; the core's refusal when the columns do not fit.
fn changes_of<'r>(
    keys: &[Key],
    ids: &[u64],
    refs: impl IntoIterator<Item = &'r str>,
    dels: &[Key],
) -> Result<Batch, CoreError> {
    let (algs, slots) = packed(keys);
    let (dalgs, dslots) = packed(dels);
    let ids: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    let mut text = String::new();
    let mut ends = Vec::new();
    for r in refs {
        text.push_str(r);
        ends.extend((text.len() as u32).to_le_bytes());
    }
    Batch::decode(&algs, &slots, &ids, &dalgs, &dslots)?.with_refs(&ends, text.as_bytes())
}

// ---- response decoding ----------------------------------------------------------------

#[derive(Debug, Default, Clone, PartialEq)]
struct Resp {
    item_id: String,
    verdict: u64,
    refs: Vec<(String, String, u64)>,
    /// The labels of each reference (in `refs` order), as the wire carries them.
    labels: Vec<Vec<(String, String)>>,
    /// The video segment (first_ms, last_ms) of each reference a video matched.
    segments: Vec<Option<(u64, u64)>>,
    /// (code, message, details type urls)
    error: Option<(u64, String, Vec<String>)>,
}

fn fields(buf: &[u8]) -> Vec<(u32, Value<'_>)> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while let Some(f) = r.next().expect("valid response wire") {
        out.push(f);
    }
    out
}

fn text(v: &[u8]) -> String {
    String::from_utf8(v.to_vec()).expect("UTF-8")
}

fn decode_response(buf: &[u8]) -> Resp {
    let mut r = Resp::default();
    for (f, v) in fields(buf) {
        match (f, v) {
            (1, Value::Len(b)) => r.item_id = text(b),
            (2, Value::Varint(x)) => r.verdict = x,
            (3, Value::Len(b)) => {
                let mut reference = (String::new(), String::new(), 0);
                let mut labels = Vec::new();
                let mut segment = None;
                for (f, v) in fields(b) {
                    match (f, v) {
                        (1, Value::Len(b)) => reference.0 = text(b),
                        (2, Value::Len(b)) => reference.1 = text(b),
                        (3, Value::Varint(x)) => reference.2 = x,
                        (4, Value::Len(b)) => {
                            let mut pair = (String::new(), String::new());
                            for (f, v) in fields(b) {
                                match (f, v) {
                                    (1, Value::Len(b)) => pair.0 = text(b),
                                    (2, Value::Len(b)) => pair.1 = text(b),
                                    other => panic!("unexpected label field {other:?}"),
                                }
                            }
                            labels.push(pair);
                        }
                        (5, Value::Len(b)) => {
                            let mut span = (0, 0);
                            for (f, v) in fields(b) {
                                match (f, v) {
                                    (1, Value::Varint(x)) => span.0 = x,
                                    (2, Value::Varint(x)) => span.1 = x,
                                    other => panic!("unexpected segment field {other:?}"),
                                }
                            }
                            segment = Some(span);
                        }
                        other => panic!("unexpected reference field {other:?}"),
                    }
                }
                r.refs.push(reference);
                r.labels.push(labels);
                r.segments.push(segment);
            }
            (4, Value::Len(b)) => {
                let mut e = (0, String::new(), Vec::new());
                for (f, v) in fields(b) {
                    match (f, v) {
                        (1, Value::Varint(x)) => e.0 = x,
                        (2, Value::Len(b)) => e.1 = text(b),
                        (3, Value::Len(b)) => {
                            for (f, v) in fields(b) {
                                if let (1, Value::Len(url)) = (f, v) {
                                    e.2.push(text(url));
                                }
                            }
                        }
                        other => panic!("unexpected status field {other:?}"),
                    }
                }
                r.error = Some(e);
            }
            other => panic!("unexpected response field {other:?}"),
        }
    }
    r
}

fn decode_batch(buf: &[u8]) -> Vec<Resp> {
    fields(buf)
        .into_iter()
        .map(|(f, v)| match (f, v) {
            (1, Value::Len(b)) => decode_response(b),
            other => panic!("unexpected batch field {other:?}"),
        })
        .collect()
}

fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

fn violations(raw: &[u8], is_batch: bool) -> Vec<(String, String)> {
    let idx = Index::with_background(false);
    let v = idx.match_request(raw, is_batch, "t", false);
    v.request
        .violations
        .iter()
        .map(|v| (v.field.clone(), v.description.clone()))
        .collect()
}

fn balanced_pdq(seed: u8) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = if (i as u8).wrapping_add(seed).is_multiple_of(2) {
            0xf0
        } else {
            0x0f
        };
    }
    out
}

// ---- validation -----------------------------------------------------------------------

#[test]
fn each_rule_names_its_field() {
    let md5 = hash(1, &[1; 16], None);
    let long = vec![b'a'; 257];
    assert_eq!(
        violations(&item(&long, std::slice::from_ref(&md5)), false),
        vec![(
            "item_id".into(),
            "must be at most 256 bytes, got 257".into()
        )]
    );
    assert_eq!(
        pairs(&violations(
            &item(b"a\x7fb", std::slice::from_ref(&md5)),
            false
        )),
        vec![("item_id", "must not contain control characters")]
    );
    assert_eq!(
        pairs(&violations(&item(b"x", &[]), false)),
        vec![("hashes", "at least one hash is required")]
    );
    assert_eq!(
        pairs(&violations(&item(b"x", &vec![md5.clone(); 17]), false)),
        vec![("hashes", "at most 16 hashes per item")]
    );
    let bad = [
        hash(0, &[1; 16], None),
        hash(6, &[1; 16], None),
        hash(2, &[1; 16], Some(3)),
        hash(4, &balanced_pdq(0), Some(101)),
        hash(4, &balanced_pdq(0), Some(100)),
        hash(3, &[], None),
    ];
    assert_eq!(
        pairs(&violations(&item(b"x", &bad), false)),
        vec![
            ("hashes[0].algorithm", "unknown or unspecified algorithm"),
            ("hashes[1].algorithm", "unknown or unspecified algorithm"),
            (
                "hashes[2].value",
                "must be 20 bytes for this algorithm, got 16"
            ),
            ("hashes[2].quality", "only PDQ hashes carry a quality"),
            ("hashes[3].quality", "must be 0-100"),
            (
                "hashes[5].value",
                "must be 32 bytes for this algorithm, got 0"
            ),
        ]
    );
    let mut bad_utf8 = item(b"ok", std::slice::from_ref(&md5));
    len_field(1, b"\xff", &mut bad_utf8);
    assert_eq!(
        pairs(&violations(&bad_utf8, false)),
        vec![("item_id", "is not valid UTF-8")]
    );
    for garbage in [&b"\x0a\x05ab"[..], b"\x0c", b"\x0f", b"\x12\x03\x08"] {
        assert_eq!(
            pairs(&violations(garbage, false)),
            vec![("(request)", "the request is not a valid protobuf message")],
            "{garbage:?}"
        );
    }
}

#[test]
fn batch_rules() {
    assert_eq!(
        pairs(&violations(b"", true)),
        vec![("items", "at least one item is required")]
    );
    let one = item(b"", &[hash(1, &[1; 16], None)]);
    let many = batch(&vec![one.clone(); 10_001]);
    assert_eq!(
        pairs(&violations(&many, true)),
        vec![("items", "at most 10000 items, got 10001")]
    );
    assert_eq!(
        pairs(&violations(b"\x0a\x09", true)),
        vec![("(request)", "the request is not a valid protobuf message")]
    );
    // Per-item errors: the other items are answered.
    let mut bad_utf8 = Vec::new();
    len_field(1, b"\xc3", &mut bad_utf8);
    let items = [
        item(b"a", &[hash(1, &[1; 16], None)]),
        item(b"b", &[hash(1, &[1; 15], None), hash(9, &[], None)]),
        vec![0x12, 0x05, 0x08], // truncated hash
        bad_utf8,
        item(b"e", &[hash(4, &[0; 32], None)]), // degenerate: fine, never matches
    ];
    let idx = Index::with_background(false);
    let v = idx.match_request(&batch(&items), true, "t", false);
    assert!(v.request.violations.is_empty());
    assert_eq!(v.items(), 5);
    assert!(v.request.has_pdq);
    assert!(v.pdq_queries().is_empty(), "degenerate PDQ is not searched");
    let got = decode_batch(&v.encode(-1, 0));
    assert_eq!(got.len(), 5);
    assert_eq!(
        got[0],
        Resp {
            item_id: "a".into(),
            verdict: 1,
            ..Resp::default()
        }
    );
    let e = got[1].error.as_ref().unwrap();
    assert_eq!(got[1].item_id, "b");
    assert_eq!(e.0, 3);
    assert_eq!(
        e.1,
        "invalid field items[1].hashes[0].value: must be 16 bytes for this algorithm, got 15 \
         (and 1 more)"
    );
    assert_eq!(
        e.2,
        [
            "type.googleapis.com/google.rpc.ErrorInfo",
            "type.googleapis.com/google.rpc.BadRequest"
        ]
    );
    assert_eq!(
        got[2].error.as_ref().unwrap().1,
        "invalid field items[2]: is not a valid protobuf message"
    );
    assert_eq!(
        got[3].error.as_ref().unwrap().1,
        "invalid field items[3].item_id: is not valid UTF-8"
    );
    assert_eq!(got[4].verdict, 1);
    // Paused: the PDQ-bearing item gets RESOURCE_EXHAUSTED, the others are answered.
    let v = idx.match_request(&batch(&items), true, "t", true);
    let got = decode_batch(&v.encode(-1, 1500));
    assert_eq!(got[0].verdict, 1);
    let e = got[4].error.as_ref().unwrap();
    assert_eq!((e.0, got[4].item_id.as_str()), (8, "e"));
    assert_eq!(
        e.2,
        [
            "type.googleapis.com/google.rpc.ErrorInfo",
            "type.googleapis.com/google.rpc.RetryInfo"
        ]
    );
}

#[test]
fn unknown_fields_and_groups_are_skipped() {
    let md5 = [7u8; 16];
    let mut h = hash(1, &md5, None);
    h.extend([0x3b, 0x08, 0x01, 0x43, 0x44, 0x3c]); // group 7 holding a group 8
    h.extend([0x4d, 1, 2, 3, 4]); // fixed32 field 9
    let mut it = item(b"id", &[h]);
    it.extend([0x19, 0, 0, 0, 0, 0, 0, 0, 0]); // fixed64 field 3
    it.extend([0x08, 0x05]); // item_id as a varint: unknown
    let mut raw = batch(&[it]);
    raw.extend([0x13, 0x14]); // empty group field 2 at top level
    let idx = Index::with_background(false);
    idx.configure_list_named(1, ListConfig::new(31, 50).unwrap(), Some("l"));
    let (algs, slots) = packed(&[Key::Md5(md5)]);
    let b = Batch::decode(&algs, &slots, &5u64.to_le_bytes(), &[], &[])
        .unwrap()
        .with_refs(&3u32.to_le_bytes(), b"R-5")
        .unwrap();
    idx.apply_with(1, &b, Some(9)).unwrap();
    let v = idx.match_request(&raw, true, "t", false);
    assert!(v.request.violations.is_empty());
    let got = decode_batch(&v.encode(-1, 0));
    assert_eq!(
        got,
        vec![Resp {
            item_id: "id".into(),
            verdict: 2,
            refs: vec![("l".into(), "R-5".into(), 9)],
            labels: vec![vec![]],
            segments: vec![None],
            error: None
        }]
    );
    let counts: Vec<_> = idx
        .take_counts()
        .into_iter()
        .map(|(t, l, r, n, _)| (t, l, r, n))
        .collect();
    assert_eq!(counts, vec![("t".to_string(), 1, "R-5".to_string(), 1)]);
}

// ---- oracle ----------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct ListSpec {
    threshold: u8,
    min_quality: u8,
    version: u64,
    /// Label keys shown in verdicts (a mask over `labels::KEYS`).
    exposed: u8,
    /// (key, stored reference: the reference ID and its labels); keys unique
    /// within the list.
    entries: Vec<(Key, String)>,
    /// Entries added without a reference (never answered).
    unreferenced: Vec<Key>,
    quarantined: Vec<String>,
}

#[derive(Debug, Clone)]
struct Case {
    lists: Vec<ListSpec>,
    policy: Option<(bool, Vec<u32>, Vec<Key>)>,
    items: Vec<Vec<(Key, Option<u64>)>>,
}

fn flip(h: &[u64; 4], bits: &[u8]) -> [u64; 4] {
    let mut out = *h;
    for &b in bits {
        out[(b / 64) as usize] ^= 1 << (b % 64);
    }
    out
}

fn is_degenerate(h: &[u64; 4]) -> bool {
    hashcore::changes::is_degenerate_pdq(&pdq_to_bytes(h))
}

/// An answer: list id, reference ID, and the labels shown (those of the first
/// entry of the reference that matched, exposed keys only).
type Expected = (u32, String, Vec<(String, String)>);

/// Expected answers of each item.
fn oracle(case: &Case) -> Vec<Vec<Expected>> {
    let policy = case.policy.as_ref();
    case.items
        .iter()
        .map(|hashes| {
            let mut out: Vec<Expected> = Vec::new();
            for (key, quality) in hashes {
                if let Key::Pdq(h) = key {
                    if is_degenerate(h) {
                        continue;
                    }
                }
                if let Some((_, _, allow)) = policy {
                    let allowed = allow.iter().any(|a| match (a, key) {
                        (Key::Pdq(a), Key::Pdq(q)) => hamming(a, q) <= 31,
                        (a, k) => a == k,
                    });
                    if allowed {
                        continue;
                    }
                }
                for (lid, list) in case.lists.iter().enumerate() {
                    let lid = lid as u32 + 1;
                    if let Some((all, lists, _)) = policy {
                        if !all && !lists.contains(&lid) {
                            continue;
                        }
                    }
                    // Entry ids are the list's positions: sorted by id = list order.
                    for (k, stored) in &list.entries {
                        let (r, labels) = labels::split(stored);
                        let shown: Vec<(String, String)> = labels::pairs(labels)
                            .filter(|(key, _)| {
                                let i = labels::KEYS.iter().position(|k| k == key).unwrap();
                                list.exposed & 1 << i != 0
                            })
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect();
                        let hit = match (k, key) {
                            (Key::Pdq(e), Key::Pdq(q)) => {
                                let q_ok = quality.is_none_or(|q| q >= u64::from(list.min_quality));
                                q_ok && hamming(e, q) <= u32::from(list.threshold)
                            }
                            (a, b) => a == b,
                        };
                        let answered = out.iter().any(|(l, a, _)| *l == lid && a == r);
                        if hit && !list.quarantined.iter().any(|q| q == r) && !answered {
                            out.push((lid, r.to_string(), shown));
                        }
                    }
                }
            }
            out
        })
        .collect()
}

fn build(case: &Case) -> Index {
    let idx = Index::with_background(false);
    for (i, list) in case.lists.iter().enumerate() {
        let lid = i as u32 + 1;
        idx.configure_list_named(
            lid,
            ListConfig::new(i64::from(list.threshold), i64::from(list.min_quality))
                .unwrap()
                .with_exposed_labels(list.exposed),
            Some(&format!("list-{lid}")),
        );
        // Referenced entries in two batches (ids = positions), then the rest.
        let keys: Vec<Key> = list.entries.iter().map(|e| e.0).collect();
        let half = keys.len() / 2;
        for range in [0..half, half..keys.len()] {
            let ids: Vec<u64> = range.clone().map(|i| i as u64).collect();
            let refs = list.entries[range.clone()].iter().map(|(_, r)| r.as_str());
            let b = batch_of(&keys[range], &ids, refs);
            idx.apply_with(lid, &b, Some(list.version)).unwrap();
        }
        if !list.unreferenced.is_empty() {
            let (algs, slots) = packed(&list.unreferenced);
            let ids: Vec<u8> = (0..list.unreferenced.len())
                .flat_map(|i| (1000 + i as u64).to_le_bytes())
                .collect();
            idx.apply(lid, &Batch::decode(&algs, &slots, &ids, &[], &[]).unwrap())
                .unwrap();
        }
        idx.set_list_state(lid, list.version, list.quarantined.clone())
            .unwrap();
    }
    if let Some((all, lists, allow)) = &case.policy {
        idx.set_policy("tenant", *all, lists.clone(), allow.clone());
    }
    idx
}

fn any_pdq_base() -> impl Strategy<Value = [u64; 4]> {
    prop::array::uniform4(any::<u64>())
}

fn case_strategy() -> impl Strategy<Value = Case> {
    // A pool of base hashes shared by lists, queries and allow-lists.
    (
        prop::collection::vec(any_pdq_base(), 4),
        prop::collection::vec(prop::array::uniform16(0u8..4), 4),
    )
        .prop_flat_map(|(pdqs, md5s)| {
            let key = {
                let (pdqs, md5s) = (pdqs.clone(), md5s.clone());
                (
                    0usize..4,
                    0usize..4,
                    prop::collection::vec(any::<u8>(), 0..40),
                )
                    .prop_map(move |(kind, which, bits)| match kind {
                        0 | 1 => Key::Pdq(flip(&pdqs[which], &bits)),
                        2 => Key::Md5(md5s[which]),
                        _ => Key::Sha1([which as u8; 20]),
                    })
            };
            let reference = (0u8..6).prop_map(|r| format!("R{r}"));
            // A reference as stored: some carry labels, from a small pool.
            let stored = (
                0u8..6,
                prop::option::of((
                    prop::sample::select(vec![None, Some("A"), Some("B")]),
                    prop::sample::select(vec![None, Some("A1"), Some("é=2")]),
                    prop::sample::select(vec![None, Some("0-2")]),
                )),
            )
                .prop_map(|(r, labels)| match labels {
                    None => format!("R{r}"),
                    Some((category, classification, age)) => format!(
                        "R{r}{}",
                        labels::encode(&[age, None, category, classification, None])
                    ),
                });
            let list = (
                prop::sample::select(vec![0u8, 10, 31, 40]),
                prop::sample::select(vec![0u8, 50]),
                0u64..3,
                prop::collection::vec((key.clone(), stored), 0..12),
                prop::collection::vec(key.clone(), 0..3),
                prop::collection::vec(reference, 0..2),
                0u8..32,
            )
                .prop_map(
                    |(
                        threshold,
                        min_quality,
                        version,
                        mut entries,
                        mut unref,
                        quarantined,
                        exposed,
                    )| {
                        let mut seen = HashSet::new();
                        entries.retain(|e| seen.insert(e.0));
                        unref.retain(|k| seen.insert(*k));
                        ListSpec {
                            threshold,
                            min_quality,
                            version,
                            exposed,
                            entries,
                            unreferenced: unref,
                            quarantined,
                        }
                    },
                );
            let quality = prop::sample::select(vec![None, Some(0u64), Some(50), Some(90)]);
            let hashes = prop::collection::vec((key.clone(), quality), 1..4);
            let policy = prop::option::of((
                any::<bool>(),
                prop::collection::vec(1u32..4, 0..3),
                prop::collection::vec(key, 0..3),
            ));
            (
                prop::collection::vec(list, 1..4),
                policy,
                prop::collection::vec(hashes, 1..8),
            )
                .prop_map(|(lists, policy, items)| Case {
                    lists,
                    policy,
                    items,
                })
        })
}

fn request_of(case: &Case) -> Vec<u8> {
    let items: Vec<Vec<u8>> = case
        .items
        .iter()
        .enumerate()
        .map(|(i, hashes)| {
            let hs: Vec<Vec<u8>> = hashes
                .iter()
                .map(|(k, q)| key_hash(k, if matches!(k, Key::Pdq(_)) { *q } else { None }))
                .collect();
            item(format!("item-{i}").as_bytes(), &hs)
        })
        .collect();
    batch(&items)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn answers_as_the_oracle(case in case_strategy()) {
        // Qualities only travel on PDQ hashes.
        let mut case = case;
        for hashes in &mut case.items {
            for (k, q) in hashes.iter_mut() {
                if !matches!(k, Key::Pdq(_)) {
                    *q = None;
                }
            }
        }
        let idx = build(&case);
        let raw = request_of(&case);
        let v = idx.match_request(&raw, true, "tenant", false);
        prop_assert!(v.request.violations.is_empty());
        let got = decode_batch(&v.encode(-1, 0));
        let want = oracle(&case);
        prop_assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            prop_assert_eq!(&g.item_id, &format!("item-{i}"));
            let refs: Vec<Expected> = g
                .refs
                .iter()
                .zip(&g.labels)
                .map(|((name, r, version), labels)| {
                    let lid: u32 = name.trim_start_matches("list-").parse().unwrap();
                    assert_eq!(*version, case.lists[lid as usize - 1].version);
                    (lid, r.clone(), labels.clone())
                })
                .collect();
            prop_assert_eq!(&refs, w, "item {}", i);
            prop_assert_eq!(g.verdict, if w.is_empty() { 1 } else { 2 });
        }
        // Served PDQ queries: exactly those whose own answers are non-empty.
        for (item_index, value, served) in v.pdq_queries() {
            let h = pdq_from_bytes(&value);
            let alone = Case {
                items: vec![vec![(Key::Pdq(h), case.items[item_index as usize]
                    .iter()
                    .find(|(k, _)| *k == Key::Pdq(h))
                    .and_then(|(_, q)| *q))]],
                ..case.clone()
            };
            prop_assert_eq!(served, !oracle(&alone)[0].is_empty());
        }
        // Counts: one per answered (item, list, reference).
        let counted: u64 = idx.take_counts().iter().map(|c| c.3).sum();
        let answered: usize = want.iter().map(Vec::len).sum();
        prop_assert_eq!(counted, answered as u64);
        // A tenant without a policy sees every list, allow-list or not.
        let v = idx.match_request(&raw, true, "other", false);
        let got = decode_batch(&v.encode(-1, 0));
        let open = oracle(&Case { policy: None, ..case.clone() });
        for (g, w) in got.iter().zip(&open) {
            prop_assert_eq!(g.refs.len(), w.len());
        }
        // Refused from item 1 on: PDQ-bearing items there get errors, none counted.
        idx.take_counts();
        let v = idx.match_request(&raw, true, "tenant", false);
        let got = decode_batch(&v.encode(1, 250));
        let mut answered = 0;
        for (i, (g, hashes)) in got.iter().zip(&case.items).enumerate() {
            let pdq = hashes.iter().any(|(k, _)| matches!(k, Key::Pdq(_)));
            if i >= 1 && pdq {
                prop_assert_eq!(g.error.as_ref().map(|e| e.0), Some(8));
            } else {
                prop_assert!(g.error.is_none());
                answered += g.refs.len();
            }
        }
        let counted: u64 = idx.take_counts().iter().map(|c| c.3).sum();
        prop_assert_eq!(counted, answered as u64);
    }

    #[test]
    fn mutated_requests_never_panic(
        case in case_strategy(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..6),
        single in any::<bool>(),
    ) {
        let idx = build(&case);
        let mut raw = if single {
            let hs: Vec<Vec<u8>> = case.items[0].iter().map(|(k, q)| key_hash(k, *q)).collect();
            item(b"x", &hs)
        } else {
            request_of(&case)
        };
        for (at, byte, op) in edits {
            if raw.is_empty() {
                raw.push(byte);
                continue;
            }
            let i = at.index(raw.len());
            match op {
                0 => raw[i] = byte,
                1 => raw.truncate(i),
                2 => raw.insert(i, byte),
                _ => {
                    raw.remove(i);
                }
            }
        }
        for paused in [false, true] {
            let v = idx.match_request(&raw, !single, "tenant", paused);
            let out = v.encode(0, 10);
            if single {
                // Always a MatchResponse: a verdict or an error.
                let r = decode_response(&out);
                prop_assert_eq!(r.error.is_some(), !v.request.violations.is_empty() || (r.verdict == 0));
            } else if v.request.violations.is_empty() {
                prop_assert_eq!(decode_batch(&out).len(), v.items());
            } else {
                prop_assert!(out.is_empty());
            }
        }
    }
}

#[test]
fn references_follow_the_entries() {
    let idx = Index::with_background(false);
    idx.configure_list_named(1, ListConfig::new(31, 50).unwrap(), Some("l"));
    let apply = |keys: &[Key], ids: &[u64], refs: &[&str], dels: &[Key]| {
        idx.apply_with(1, &changes_of(keys, ids, refs.iter().copied(), dels)?, None)
    };
    let ask = |k: Key| {
        let raw = item(b"", &[key_hash(&k, None)]);
        decode_response(&idx.match_request(&raw, false, "t", false).encode(-1, 0)).refs
    };
    let (a, b) = (Key::Md5([1; 16]), Key::Md5([2; 16]));
    apply(&[a, b], &[0, 1], &["A", "B"], &[]).unwrap();
    assert_eq!(ask(a), vec![("l".into(), "A".into(), 0)]);
    // Replaced: new id, new reference; the old one is released.
    apply(&[a], &[2], &["A2"], &[]).unwrap();
    assert_eq!(ask(a), vec![("l".into(), "A2".into(), 0)]);
    apply(&[], &[], &[], &[b]).unwrap();
    assert!(ask(b).is_empty());
    // Reference columns that do not fit the additions are refused, nothing applied.
    assert!(apply(&[b], &[3], &["B", "C"], &[]).is_err());
    assert!(
        apply(&[b], &[3], &[], &[]).is_ok(),
        "no columns: entries without references"
    );
    assert!(
        ask(b).is_empty(),
        "an entry without its reference never answers"
    );
    let bytes = idx.reference_bytes(1).unwrap();
    for round in 0..50u64 {
        apply(&[a], &[10 + round], &["churn-ref-12"], &[]).unwrap();
    }
    assert!(
        idx.reference_bytes(1).unwrap() <= bytes + 400,
        "churn does not grow references"
    );
    idx.set_list_state(1, 7, vec!["churn-ref-12".into()])
        .unwrap();
    assert!(ask(a).is_empty(), "quarantined");
    idx.set_list_state(1, 7, vec![]).unwrap();
    assert_eq!(ask(a), vec![("l".into(), "churn-ref-12".into(), 7)]);
}

#[test]
fn reference_memory_per_entry() {
    let idx = Index::with_background(false);
    idx.configure_list(1, ListConfig::new(31, 50).unwrap());
    let n = 100_000u64;
    let keys: Vec<Key> = (0..n)
        .map(|i| {
            let mut d = [0u8; 16];
            d[..8].copy_from_slice(&i.to_le_bytes());
            Key::Md5(d)
        })
        .collect();
    let (algs, slots) = packed(&keys);
    let ids: Vec<u8> = (0..n).flat_map(|i| i.to_le_bytes()).collect();
    let mut text = String::new();
    let mut ends = Vec::new();
    for i in 0..n {
        text.push_str(&format!("REF-{i:08}")); // 12 bytes
        ends.extend((text.len() as u32).to_le_bytes());
    }
    let b = Batch::decode(&algs, &slots, &ids, &[], &[])
        .unwrap()
        .with_refs(&ends, text.as_bytes())
        .unwrap();
    idx.apply(1, &b).unwrap();
    let per = idx.reference_bytes(1).unwrap() as f64 / n as f64;
    eprintln!("reference bytes per entry (12-byte refs): {per:.2}");
    assert!(per < 18.5, "{per}");
}

#[test]
fn counts_accumulate_per_reference() {
    let idx = Index::with_background(false);
    idx.configure_list_named(3, ListConfig::new(31, 50).unwrap(), Some("l"));
    let k = Key::Sha256([5; 32]);
    let (algs, slots) = packed(&[k]);
    let b = Batch::decode(&algs, &slots, &0u64.to_le_bytes(), &[], &[])
        .unwrap()
        .with_refs(&1u32.to_le_bytes(), b"R")
        .unwrap();
    idx.apply(3, &b).unwrap();
    let raw = batch(&vec![
        item(b"", &[key_hash(&k, None), key_hash(&k, None)]);
        3
    ]);
    let v = idx.match_request(&raw, true, "p", false);
    v.encode(-1, 0);
    v.encode(-1, 0); // counted once per Verdicts
    let counts = idx.take_counts();
    assert_eq!(counts.len(), 1);
    let (tenant, list, reference, matches, last) = &counts[0];
    assert_eq!(
        (tenant.as_str(), *list, reference.as_str(), *matches),
        ("p", 3, "R", 3)
    );
    assert!(*last > 1.6e9);
    assert!(idx.take_counts().is_empty());
}

#[test]
fn exposure_follows_the_list_config_and_labels_never_touch_counts_or_quarantine() {
    let idx = Index::with_background(false);
    let config = ListConfig::new(31, 50).unwrap();
    idx.configure_list_named(1, config, Some("l"));
    let k = Key::Md5([9; 16]);
    let (algs, slots) = packed(&[k]);
    let stored = format!(
        "R{}",
        labels::encode(&[None, Some("yes"), Some("A"), None, None])
    );
    let b = Batch::decode(&algs, &slots, &0u64.to_le_bytes(), &[], &[])
        .unwrap()
        .with_refs(&(stored.len() as u32).to_le_bytes(), stored.as_bytes())
        .unwrap();
    idx.apply(1, &b).unwrap();
    let raw = item(b"x", &[key_hash(&k, None)]);
    let answer = |idx: &Index| {
        let r = decode_response(&idx.match_request(&raw, false, "p", false).encode(-1, 0));
        (r.refs[0].1.clone(), r.labels[0].clone())
    };
    assert_eq!(
        answer(&idx),
        ("R".to_string(), vec![]),
        "none shown by default"
    );
    let before = idx.match_request(&raw, false, "p", false);
    idx.configure_list_named(1, config.exposing(&["category"]).unwrap(), None);
    assert_eq!(
        answer(&idx),
        ("R".to_string(), vec![("category".into(), "A".into())])
    );
    assert!(
        decode_response(&before.encode(-1, 0)).labels[0].is_empty(),
        "a verdict keeps the snapshot it was made on"
    );
    idx.configure_list_named(1, config.exposing(&["baseline", "category"]).unwrap(), None);
    assert_eq!(answer(&idx).1.len(), 2);
    // Statistics and quarantine know the reference ID alone.
    let counted: Vec<String> = idx.take_counts().into_iter().map(|c| c.2).collect();
    assert!(counted.iter().all(|r| r == "R"), "{counted:?}");
    idx.set_list_state(1, 1, vec!["R".to_string()]).unwrap();
    let r = decode_response(&idx.match_request(&raw, false, "p", false).encode(-1, 0));
    assert_eq!(
        r.verdict, 1,
        "a quarantined reference answers NO_MATCH, labelled or not"
    );
    assert!(config.exposing(&["colour"]).is_err());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..200), single in any::<bool>()) {
        let idx = Index::with_background(false);
        idx.configure_list(1, ListConfig::new(31, 50).unwrap());
        let v = idx.match_request(&raw, !single, "t", false);
        let out = v.encode(-1, 0);
        if single {
            decode_response(&out);
        } else if v.request.violations.is_empty() {
            prop_assert_eq!(decode_batch(&out).len(), v.items());
        }
    }
}

#[test]
fn oracle_cases_do_match() {
    // The generator must produce matches (exact and PDQ near the thresholds) often.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut exact, mut pdq, mut cases) = (0, 0, 0);
    for _ in 0..200 {
        let case = case_strategy().new_tree(&mut runner).unwrap().current();
        let want = oracle(&case);
        cases += usize::from(want.iter().any(|w| !w.is_empty()));
        for (hashes, w) in case.items.iter().zip(&want) {
            if !w.is_empty() {
                if hashes.iter().any(|(k, _)| matches!(k, Key::Pdq(_))) {
                    pdq += 1;
                } else {
                    exact += 1;
                }
            }
        }
    }
    eprintln!("cases with a match: {cases}/200; matched items: {exact} exact-only, {pdq} with PDQ");
    assert!(cases > 60 && pdq > 20 && exact > 20);
}

/// A PDQ hash of random bits (seeded): far from every other one and from the degenerate.
fn random_pdq(seed: u64) -> [u8; 32] {
    let mut x = seed;
    let mut out = [0u8; 32];
    for chunk in out.chunks_mut(8) {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out
}

fn frame(h: &[u8; 32], quality: u64, millis: u64) -> Vec<u8> {
    let mut out = Vec::new();
    len_field(1, h, &mut out);
    varint(2 << 3, &mut out);
    varint(quality, &mut out);
    varint(3 << 3, &mut out);
    varint(millis, &mut out);
    out
}

fn video(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(1 << 3, &mut out);
    varint(5, &mut out);
    for f in frames {
        len_field(4, f, &mut out);
    }
    out
}

#[test]
fn a_video_item_is_answered_once_per_reference_with_the_segment_it_matched() {
    let idx = Index::with_background(false);
    idx.configure_list_named(1, ListConfig::new(31, 50).unwrap(), Some("l"));
    // Video "V": five frames; "V" also lists one image; "I" is an image alone.
    let frames: Vec<[u8; 32]> = (0..5).map(|i| random_pdq(i + 1)).collect();
    let mut distinct = HashSet::new();
    assert!(
        frames.iter().all(|f| distinct.insert(*f)),
        "distinct frames"
    );
    let image = random_pdq(40);
    let other = random_pdq(41);
    let mut keys: Vec<Key> = frames
        .iter()
        .map(|f| Key::Vpdq(pdq_from_bytes(f)))
        .collect();
    keys.push(Key::Pdq(pdq_from_bytes(&image)));
    keys.push(Key::Pdq(pdq_from_bytes(&other)));
    let names = ["V", "V", "V", "V", "V", "V", "I"];
    let b = batch_of(&keys, &[0, 1, 2, 3, 4, 5, 6], names);
    idx.apply_with(1, &b, Some(3)).unwrap();
    let ask = |hashes: &[Vec<u8>]| {
        let v = idx.match_request(&item(b"x", hashes), false, "t", false);
        assert!(
            v.request.violations.is_empty(),
            "{:?}",
            v.request.violations
        );
        decode_response(&v.encode(-1, 0))
    };
    // The whole video, out of order, with an unlisted frame: 5 of 6 frames (83 %).
    let mut query: Vec<Vec<u8>> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| frame(f, 90, 1000 * (i as u64 + 1)))
        .collect();
    query.reverse();
    query.push(frame(&random_pdq(77), 90, 9000));
    let got = ask(&[video(&query)]);
    assert_eq!(got.verdict, 2);
    assert_eq!(got.refs, vec![("l".into(), "V".into(), 3)]);
    assert_eq!(got.segments, vec![Some((1000, 5000))]);
    // With the image of "V" and the image "I" in the same item: "V" once, from the video
    // (with its segment); "I" from its image.
    let got = ask(&[
        key_hash(&Key::Pdq(pdq_from_bytes(&image)), None),
        video(&query),
        key_hash(&Key::Pdq(pdq_from_bytes(&other)), None),
    ]);
    let mut answered: Vec<_> = got
        .refs
        .iter()
        .zip(&got.segments)
        .map(|(r, s)| (r.1.clone(), *s))
        .collect();
    answered.sort();
    assert_eq!(
        answered,
        vec![("I".into(), None), ("V".into(), Some((1000, 5000)))]
    );
    // Too few of the query's frames listed (2 of 6: 33 %): no match.
    let few: Vec<Vec<u8>> = query[..2]
        .iter()
        .cloned()
        .chain((0..4).map(|i| frame(&random_pdq(90 + i), 90, 100 * i)))
        .collect();
    let got = ask(&[video(&few)]);
    assert_eq!((got.verdict, got.refs.len()), (1, 0));
}

#[test]
fn a_video_match_needs_the_shares_its_list_is_configured_with() {
    // One listed video of five frames; queries of 6 frames holding 3, 4 or 5 of them.
    let frames: Vec<[u8; 32]> = (0..5).map(|i| random_pdq(200 + i)).collect();
    let answered = |query_percent: i64, listed_percent: i64, listed_in_query: usize| {
        let idx = Index::with_background(false);
        let config = ListConfig::new(31, 50)
            .unwrap()
            .with_video(query_percent, listed_percent)
            .unwrap();
        idx.configure_list_named(1, config, Some("l"));
        let keys: Vec<Key> = frames
            .iter()
            .map(|f| Key::Vpdq(pdq_from_bytes(f)))
            .collect();
        let b = batch_of(&keys, &[0, 1, 2, 3, 4], ["V"; 5]);
        idx.apply_with(1, &b, None).unwrap();
        let query: Vec<Vec<u8>> = (0..6)
            .map(|i| {
                let h = if i < listed_in_query {
                    frames[i]
                } else {
                    random_pdq(300 + i as u64)
                };
                frame(&h, 90, 1000 * i as u64)
            })
            .collect();
        let v = idx.match_request(&item(b"x", &[video(&query)]), false, "t", false);
        decode_response(&v.encode(-1, 0)).refs.len()
    };
    // Of the query's 6 frames, 3 listed (50 %): only a list asking for 50 % or less.
    assert_eq!(answered(80, 0, 3), 0);
    assert_eq!(answered(50, 0, 3), 1);
    // Of the listed video's 5 frames, 4 in the query (80 %): not for a list asking 100 %.
    assert_eq!(answered(0, 100, 4), 0);
    assert_eq!(answered(0, 80, 4), 1);
}
