//! Times `Index::match_request` + `Verdicts::encode` against the bare
//! `Index::match_batch` on the same queries (`cargo run --release --example
//! match_request_bench [n_entries] [n_items]`).

use std::time::Instant;

use hashcore::proto::put_len as len_field;
use hashcore::{Batch, Index, ListConfig, Queries};

/// xorshift digests: deterministic, no dependency.
fn digest(state: &mut u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    for chunk in out.chunks_exact_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        chunk.copy_from_slice(&state.to_le_bytes());
    }
    out
}

fn best(runs: usize, mut f: impl FnMut()) -> f64 {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(1_000_000);
    let items = args.get(1).copied().unwrap_or(10_000);
    let runs = args.get(2).copied().unwrap_or(50);
    let idx = Index::new();
    idx.configure_list_named(1, ListConfig::new(31, 50).unwrap(), Some("md5-list"));
    let mut state = 88172645463325252u64;
    let digests: Vec<[u8; 16]> = (0..n).map(|_| digest(&mut state)).collect();
    let mut algs = vec![1u8; n];
    let mut slots = Vec::with_capacity(n * 32);
    let mut ids = Vec::with_capacity(n * 8);
    let mut ends = Vec::with_capacity(n * 4);
    let mut refs = Vec::with_capacity(n * 12);
    for (i, d) in digests.iter().enumerate() {
        slots.extend_from_slice(d);
        slots.extend_from_slice(&[0; 16]);
        ids.extend_from_slice(&(i as u64).to_le_bytes());
        refs.extend_from_slice(format!("REF-{i:08}").as_bytes());
        ends.extend_from_slice(&(refs.len() as u32).to_le_bytes());
    }
    let b = Batch::decode(&algs, &slots, &ids, &[], &[])
        .unwrap()
        .with_refs(&ends, &refs)
        .unwrap();
    idx.apply_with(1, &b, Some(1)).unwrap();
    idx.compact();
    for rate in [0u64, 50] {
        let mut raw = Vec::new();
        let mut qalgs = Vec::new();
        let mut qslots = Vec::new();
        for i in 0..items {
            let d = if (i as u64 * 7919) % 100 < rate {
                digests[(i * 104729) % n]
            } else {
                digest(&mut state)
            };
            let mut hash = vec![0x08, 1];
            len_field(2, &d, &mut hash);
            let mut item = Vec::new();
            len_field(1, format!("upload-{i:06}").as_bytes(), &mut item);
            len_field(2, &hash, &mut item);
            len_field(1, &item, &mut raw);
            qalgs.push(1u8);
            qslots.extend_from_slice(&d);
            qslots.extend_from_slice(&[0; 16]);
        }
        let q = Queries::decode(&qalgs, &qslots, &vec![255; items], &vec![255; items]).unwrap();
        let req = best(runs, || {
            let v = idx.match_request(&raw, true, "p", false);
            std::hint::black_box(v.encode(-1, 0));
        });
        let bare = best(runs, || {
            std::hint::black_box(idx.match_batch(&q));
        });
        let v = idx.match_request(&raw, true, "p", false);
        let enc = best(runs, || {
            std::hint::black_box(v.encode(-1, 0));
        });
        let parse = best(runs, || {
            std::hint::black_box(hashcore::request::Request::parse(&raw, true, false));
        });
        println!(
            "MD5 {items} items {rate}% match: request path {req:.3} ms (parse {parse:.3}, encode {enc:.3}); bare match_batch {bare:.3} ms"
        );
    }
    algs.clear();
}
