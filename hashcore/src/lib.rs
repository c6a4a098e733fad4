//! `hashcore` — the matching core of hashmatch.
//!
//! The crate is pure Rust and knows nothing of Python: the indexes live in
//! [`exact`], [`pdq`] and [`index`]; the PyO3 binding (module
//! `hashmatch.server._hashcore`) lives in `python.rs` behind the cargo feature
//! `python`, so `cargo test` runs without an interpreter.
//!
//! * [`exact::ExactSet`] — MD5 / SHA-1 / SHA-256 digests → entry id.
//! * [`pdq::PdqIndex`] — 256-bit PDQ hashes, every entry within a Hamming
//!   distance threshold (exact recall).
//! * [`index::Index`] — all hash lists of one serving process; one atomic batch
//!   of additions and deletions per call, batch matching across every list.
//!
//! Wire encoding shared with the binding (see [`index`]): one algorithm byte per
//! entry (`1` MD5, `2` SHA-1, `3` SHA-256, `4` PDQ), one 32-byte slot per hash
//! with the digest left-aligned and zero padding, entry ids as little-endian
//! `u64`.

pub mod changes;
pub mod error;
pub mod exact;
pub mod index;
mod mem;
pub mod pdq;
pub mod simd;
pub mod stats;
pub mod tier;

#[cfg(feature = "python")]
mod python;

pub use error::CoreError;
pub use index::{Alg, Batch, GroupQueries, Index, ListConfig, Match, Queries};
