//! The request path of `MatchBatch` on exact hashes, as `benchmarks/core/bench_exact.py`
//! measures it, without Python: `Index::match_request` on the request bytes, then
//! `Verdicts::encode`, the match counts taken between rounds (untimed), as the
//! server's flush does. One list of `n` entries of one algorithm, each with a
//! reference `r` + 8 digits; batches of 10,000 items of one hash, every other one
//! a hit (or none: `no hits`). Prints millions of lookups per second in the
//! fastest round, and the parts: parse alone, and encode of an already-counted
//! answer.
//!
//! `cargo run --release --example exact_request_bench [n_entries] [md5|sha256] [rounds]`

use std::time::Instant;

use hashcore::proto::put_len;
use hashcore::request::Request;
use hashcore::{Batch, Index, ListConfig};

const BATCH: usize = 10_000;
const BATCHES: usize = 20;

/// xorshift digests: deterministic, no dependency.
fn digest(state: &mut u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    for chunk in out.chunks_exact_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        chunk.copy_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let alg = args.get(1).map_or("md5", String::as_str);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100);
    let (code, len) = match alg {
        "md5" => (1u8, 16usize),
        "sha256" => (3, 32),
        _ => panic!("md5 or sha256"),
    };
    let idx = Index::new();
    idx.configure_list_named(1, ListConfig::new(31, 50).unwrap(), Some("bench-list"));
    let mut state = 88172645463325252u64 ^ u64::from(code);
    let digests: Vec<Vec<u8>> = (0..n).map(|_| digest(&mut state, len)).collect();
    let t = Instant::now();
    let chunk = 2_000_000;
    for s in (0..n).step_by(chunk) {
        let e = (s + chunk).min(n);
        let algs = vec![code; e - s];
        let mut slots = Vec::with_capacity((e - s) * 32);
        let mut ids = Vec::with_capacity((e - s) * 8);
        let mut ends = Vec::with_capacity((e - s) * 4);
        let mut refs = Vec::with_capacity((e - s) * 9);
        for (i, d) in digests.iter().enumerate().take(e).skip(s) {
            slots.extend_from_slice(d);
            slots.resize(slots.len() + 32 - len, 0);
            ids.extend_from_slice(&(i as u64).to_le_bytes());
            refs.extend_from_slice(format!("r{i:08}").as_bytes());
            ends.extend_from_slice(&(refs.len() as u32).to_le_bytes());
        }
        let b = Batch::decode(&algs, &slots, &ids, &[], &[])
            .unwrap()
            .with_refs(&ends, &refs)
            .unwrap();
        idx.apply(1, &b).unwrap();
    }
    idx.compact();
    eprintln!("loaded {n} {alg} in {:.1} s", t.elapsed().as_secs_f64());
    // Whether the segment arrays got huge pages (see `mem.rs`).
    if let Ok(s) = std::fs::read_to_string("/proc/self/smaps_rollup") {
        for line in s
            .lines()
            .filter(|l| l.starts_with("Rss") || l.starts_with("AnonHuge"))
        {
            eprintln!("{line}");
        }
    }
    let only = std::env::var("EXACT_BENCH_ONLY").unwrap_or_default();
    let request = |b: usize, hits: bool| -> Vec<u8> {
        let mut raw = Vec::new();
        let mut s = 0x9e37_79b9_7f4a_7c15u64 ^ b as u64;
        for i in 0..BATCH {
            let d = if hits && i % 2 == 0 {
                digests[(b * BATCH + i) * 7919 % n].clone()
            } else {
                digest(&mut s, len)
            };
            let mut hash = vec![0x08, code];
            put_len(2, &d, &mut hash);
            let mut item = Vec::new();
            put_len(1, format!("item-{b}-{i}").as_bytes(), &mut item);
            put_len(2, &hash, &mut item);
            put_len(1, &item, &mut raw);
        }
        raw
    };
    for hits in [false, true] {
        if (only == "hits" && !hits) || (only == "misses" && hits) {
            continue;
        }
        let batches: Vec<Vec<u8>> = (0..BATCHES).map(|b| request(b, hits)).collect();
        let mut best = f64::INFINITY;
        let mut answers = 0;
        for r in 0..rounds {
            idx.take_all_counts();
            let raw = &batches[r % BATCHES];
            let t = Instant::now();
            let v = idx.match_request(raw, true, "bench", false);
            let out = v.encode(-1, 0);
            best = best.min(t.elapsed().as_secs_f64());
            answers = v.answers.len();
            std::hint::black_box(out);
        }
        if !only.is_empty() {
            println!(
                "{alg} {}: {:.2} M lookups/s",
                if hits { "request" } else { "request, no hits" },
                BATCH as f64 / best / 1e6
            );
            continue;
        }
        let mut parse = f64::INFINITY;
        let mut encode = f64::INFINITY;
        for r in 0..rounds {
            let raw = &batches[r % BATCHES];
            let t = Instant::now();
            std::hint::black_box(Request::parse(raw, true, false));
            parse = parse.min(t.elapsed().as_secs_f64());
        }
        let v = idx.match_request(&batches[0], true, "bench", false);
        v.encode(-1, 0);
        for _ in 0..rounds {
            let t = Instant::now();
            std::hint::black_box(v.encode(-1, 0));
            encode = encode.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{alg} n={n} {}: {:.2} M lookups/s ({:.3} ms; parse {:.3} ms, encode counted {:.3} ms; {answers} answers)",
            if hits { "request" } else { "request, no hits" },
            BATCH as f64 / best / 1e6,
            best * 1e3,
            parse * 1e3,
            encode * 1e3,
        );
    }
}
