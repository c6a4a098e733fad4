//! Exact-set microbenchmark: `cargo run --release --example exactbench -- N`.
//!
//! N random MD5 digests in one list; batches of 10,000 queries, half hits.
//! Reports lookups per second through `Index::match_batch` (decode, lookup,
//! sorted results; one thread and all cores) and through the bare segment.

use std::time::Instant;

use hashcore::exact::ExactSegment;
use hashcore::index::{Batch, Index, ListConfig, Queries};

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn digest(x: &mut u64) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&splitmix(x).to_le_bytes());
    d[8..].copy_from_slice(&splitmix(x).to_le_bytes());
    d
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    let mut seed = 7u64;
    let keys: Vec<[u8; 16]> = (0..n).map(|_| digest(&mut seed)).collect();
    const BATCH: usize = 10_000;
    let batches = 100;
    let mut queries: Vec<[u8; 16]> = Vec::with_capacity(BATCH * batches);
    for i in 0..BATCH * batches {
        queries.push(if i % 2 == 0 {
            keys[(splitmix(&mut seed) % n as u64) as usize]
        } else {
            digest(&mut seed)
        });
    }

    let t0 = Instant::now();
    let seg = ExactSegment::build(
        keys.iter()
            .enumerate()
            .map(|(i, k)| (*k, i as u64))
            .collect(),
    );
    println!("n={n} segment build {:.2}s", t0.elapsed().as_secs_f64());
    let refs: Vec<&[u8; 16]> = queries.iter().collect();
    let t0 = Instant::now();
    let mut hits = 0usize;
    for chunk in refs.chunks(BATCH) {
        seg.find_many(chunk, |_, _| hits += 1);
    }
    let dt = t0.elapsed().as_secs_f64();
    println!(
        "  segment find_many: {:.1} M lookups/s ({hits} hits)",
        refs.len() as f64 / dt / 1e6
    );

    hashcore::index::set_max_threads(1);
    let index = Index::with_background(false);
    index.configure_list(1, ListConfig::new(31, 50).unwrap());
    let mut algs = vec![1u8; n];
    let mut slots = vec![0u8; 32 * n];
    let mut ids = vec![0u8; 8 * n];
    for (i, k) in keys.iter().enumerate() {
        slots[32 * i..32 * i + 16].copy_from_slice(k);
        ids[8 * i..8 * i + 8].copy_from_slice(&(i as u64).to_le_bytes());
    }
    let t0 = Instant::now();
    index
        .apply(1, &Batch::decode(&algs, &slots, &ids, &[], &[]).unwrap())
        .unwrap();
    println!("  index load {:.2}s", t0.elapsed().as_secs_f64());
    algs.truncate(BATCH);
    let encoded: Vec<Vec<u8>> = queries
        .chunks(BATCH)
        .map(|c| {
            let mut s = vec![0u8; 32 * c.len()];
            for (i, k) in c.iter().enumerate() {
                s[32 * i..32 * i + 16].copy_from_slice(k);
            }
            s
        })
        .collect();
    let unknown = vec![255u8; BATCH];
    let decoded: Vec<Queries> = encoded
        .iter()
        .map(|s| Queries::decode(&algs, s, &unknown, &unknown).unwrap())
        .collect();
    let t0 = Instant::now();
    let mut found = 0usize;
    let repeat: usize = std::env::var("EXACTBENCH_REPEAT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    for _ in 0..repeat {
        for q in &decoded {
            found += index.match_batch(q).len();
        }
    }
    found /= repeat;
    let dt = t0.elapsed().as_secs_f64();
    println!(
        "  Index::match_batch (batches of {BATCH}): {:.1} M lookups/s ({found} hits)",
        (BATCH * batches * repeat) as f64 / dt / 1e6
    );
    let t0 = Instant::now();
    for s in &encoded {
        let q = Queries::decode(&algs, s, &unknown, &unknown).unwrap();
        std::hint::black_box(index.match_batch(&q));
    }
    let dt = t0.elapsed().as_secs_f64();
    println!(
        "  decode + match_batch: {:.1} M lookups/s",
        (BATCH * batches) as f64 / dt / 1e6
    );
}
