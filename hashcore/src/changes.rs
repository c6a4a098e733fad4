//! Bulk list changes: the entries of one `hashmatch.v1.ApplyChangesRequest`,
//! read straight from its wire bytes, checked, and packed for the store and
//! the indexes.
//!
//! A hotline loads millions of entries in batches of up to 100,000; reading and
//! checking them entry by entry in Python costs more than storing them. This
//! module does that one pass in Rust and hands back packed buffers, so the
//! store's per-entry work is a few C-level LMDB calls.
//!
//! Field numbers follow `proto/hashmatch/v1/lists.proto` and `hashes.proto`;
//! the Python tests check this reader against the protobuf runtime.

use std::collections::HashMap;
use std::fmt;

use xxhash_rust::xxh3::{xxh3_128, Xxh3};

use crate::labels::{self, KEYS};
use crate::proto::{Reader, Value};

/// Digest length of each algorithm number, `0` for unknown ones.
pub fn digest_len(alg: u32) -> usize {
    match alg {
        1 => 16,
        2 => 20,
        3..=5 => 32,
        _ => 0,
    }
}

const PDQ: u8 = 4;
/// One frame of a listed video: a PDQ hash under PDQ's rules, in a tier of its own.
const VPDQ: u8 = 5;
/// The largest algorithm number.
const LAST_ALG: u64 = VPDQ as u64;
/// Same bounds as the match path: fewer or more set bits than this is the hash
/// of a flat or blank image, which would match other such images.
pub const PDQ_MIN_BITS: u32 = 16;
pub const PDQ_MAX_BITS: u32 = 240;
pub const MAX_REFERENCE_BYTES: usize = 128;

/// True for the PDQ hash of a flat or blank image: one that would match other such
/// images. The one rule for list entries and for queries alike.
pub fn is_degenerate_pdq(value: &[u8]) -> bool {
    let ones: u32 = value.iter().map(|b| b.count_ones()).sum();
    !(PDQ_MIN_BITS..=PDQ_MAX_BITS).contains(&ones)
}
/// Field violations reported per batch; more would only grow the error.
pub const MAX_VIOLATIONS: usize = 100;
pub const UNKNOWN_QUALITY: u8 = 255;

/// One refused field, named by its path in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub description: String,
}

/// Hashes in the core's packed form: one algorithm byte and one 32-byte slot
/// (digest left-aligned, zero padding) per hash.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Packed {
    pub algs: Vec<u8>,
    pub slots: Vec<u8>,
    pub qualities: Vec<u8>,
}

impl Packed {
    pub fn len(&self) -> usize {
        self.algs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.algs.is_empty()
    }

    /// The digest of hash `i` without its padding.
    pub fn digest(&self, i: usize) -> &[u8] {
        let len = digest_len(u32::from(self.algs[i]));
        &self.slots[i * 32..i * 32 + len]
    }

    fn push(&mut self, alg: u8, value: &[u8], quality: u8) {
        self.algs.push(alg);
        let start = self.slots.len();
        self.slots.resize(start + 32, 0);
        self.slots[start..start + value.len()].copy_from_slice(value);
        self.qualities.push(quality);
    }
}

/// An `ApplyChangesRequest`, read and checked.
#[derive(Debug, Default)]
pub struct Changes {
    pub list: String,
    pub batch_id: String,
    pub expected_version: Option<u64>,
    pub upserts: Packed,
    /// Stored references of the upserts (UTF-8 reference ID, then its labels:
    /// see [`crate::labels`]), concatenated; `ref_ends[i]` is where the i-th one
    /// ends.
    pub refs: Vec<u8>,
    pub ref_ends: Vec<u32>,
    pub retirements: Packed,
    pub violations: Vec<Violation>,
    /// How many violations were found in all (only the first few are kept).
    pub violation_count: usize,
    /// Identifies the batch's content (list, upserts, retirements), so a
    /// re-sent batch_id can be told from one reused for other content.
    pub fingerprint: u128,
    /// Some upsert carries labels.
    pub labelled: bool,
}

impl Changes {
    pub fn reference(&self, i: usize) -> &[u8] {
        let start = if i == 0 {
            0
        } else {
            self.ref_ends[i - 1] as usize
        };
        &self.refs[start..self.ref_ends[i] as usize]
    }

    /// The labels part of upsert `i`'s stored reference (empty without labels).
    pub fn labels(&self, i: usize) -> &[u8] {
        let stored = self.reference(i);
        let at = stored
            .iter()
            .position(|&b| b == labels::SEPARATOR)
            .unwrap_or(stored.len());
        &stored[at..]
    }

    /// The list-digest term of upsert `i`: XXH3-128 of algorithm byte, digest
    /// and stored reference (UTF-8 reference ID, then its labels).
    pub fn term(&self, i: usize) -> u128 {
        let mut h = Xxh3::new();
        h.update(&[self.upserts.algs[i]]);
        h.update(self.upserts.digest(i));
        h.update(self.reference(i));
        h.digest128()
    }

    /// The sum modulo 2^128 of every upsert's term.
    pub fn terms_sum(&self) -> u128 {
        (0..self.upserts.len()).fold(0u128, |acc, i| acc.wrapping_add(self.term(i)))
    }

    fn refuse(&mut self, field: String, description: impl Into<String>) {
        self.violation_count += 1;
        if self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(Violation {
                field,
                description: description.into(),
            });
        }
    }
}

/// The wire bytes could not be read as an `ApplyChangesRequest`: `field` names
/// where (`"(request)"` for the request's own framing, `"upserts[3]"` for an
/// entry whose body is not a message, `"upserts[3].reference_id"` for a string
/// that is not UTF-8…). Displayed as `"{field}: {description}"`, which is how
/// the binding's `ValueError` carries it to the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub field: String,
    pub description: &'static str,
}

/// Where a [`WireError`] is not about one field.
pub const WHOLE_REQUEST: &str = "(request)";
const NOT_A_MESSAGE: &str = "is not a valid protobuf message";
const NOT_UTF8: &str = "is not valid UTF-8";

impl WireError {
    fn new(field: impl Into<String>, description: &'static str) -> Self {
        WireError {
            field: field.into(),
            description,
        }
    }

    /// The request's own framing is unreadable.
    pub fn request() -> Self {
        WireError::new(WHOLE_REQUEST, NOT_A_MESSAGE)
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

impl std::error::Error for WireError {}

/// Where a field of the request is (`upserts[3].hash`), written out only when a
/// problem is reported: most requests have none, and formatting three paths per
/// entry cost more than reading the entry.
#[derive(Clone, Copy)]
struct At<'a> {
    side: &'static str,
    index: usize,
    suffix: &'a str,
}

impl<'a> At<'a> {
    fn new(side: &'static str, index: usize, suffix: &'a str) -> Self {
        At {
            side,
            index,
            suffix,
        }
    }
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]{}", self.side, self.index, self.suffix)
    }
}

/// Reads the fields of one message, naming `field` when it cannot be read.
fn fields<'a>(
    body: &'a [u8],
    field: impl fmt::Display,
    mut each: impl FnMut(u32, Value<'a>) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let mut reader = Reader::new(body);
    loop {
        match reader.next() {
            Ok(Some((number, value))) => each(number, value)?,
            Ok(None) => return Ok(()),
            Err(_) => return Err(WireError::new(field.to_string(), NOT_A_MESSAGE)),
        }
    }
}

/// Reads one request. Field checks become violations (the batch is then to be
/// refused whole); only undecodable bytes are an error. Unknown fields of every
/// wire type (groups, nested ones included) and known fields of an unexpected
/// wire type are skipped, as the protobuf runtime skips them.
pub fn parse_changes(raw: &[u8], pdq_min_quality: u8) -> Result<Changes, WireError> {
    let mut out = Changes::default();
    let mut fingerprint = Xxh3::new();
    fields(raw, WHOLE_REQUEST, |field, value| {
        match (field, value) {
            (1, Value::Len(body)) => {
                out.list = utf8(body, "list")?;
                fingerprint.update(&(body.len() as u64).to_le_bytes());
                fingerprint.update(body);
            }
            (2, Value::Len(body)) => out.batch_id = utf8(body, "batch_id")?,
            (3, Value::Len(body)) => {
                let index = out.upserts.len();
                let unlabelled = read_entry(body, index, pdq_min_quality, &mut out)?;
                // Labels as stored, not as sent: a map's wire order is the encoder's
                // choice, and a resent batch must keep its fingerprint. An entry
                // without labels is fingerprinted as it always was.
                let kept = unlabelled.as_deref().unwrap_or(body);
                fingerprint.update(&[3]);
                fingerprint.update(&(kept.len() as u64).to_le_bytes());
                fingerprint.update(kept);
                if unlabelled.is_some() {
                    fingerprint.update(out.labels(index));
                }
            }
            (4, Value::Len(body)) => {
                fingerprint.update(&[4]);
                fingerprint.update(&(body.len() as u64).to_le_bytes());
                fingerprint.update(body);
                let index = out.retirements.len();
                let path = At::new("retirements", index, "");
                let hash = read_hash(body, path)?;
                check_hash(&hash, path, None, &mut out);
                out.retirements
                    .push(hash.alg_byte(), hash.stored_value(), UNKNOWN_QUALITY);
            }
            (5, Value::Varint(v)) => out.expected_version = Some(v),
            _ => {} // unknown fields are skipped, as protobuf does
        }
        Ok(())
    })?;
    out.fingerprint = fingerprint.digest128();
    check_duplicates(&mut out);
    if out.labelled {
        check_label_agreement(&mut out);
    }
    Ok(out)
}

struct HashField<'a> {
    alg: u64,
    value: &'a [u8],
    quality: Option<u64>,
    /// Video frames (a query's form of VPDQ) were given.
    frames: bool,
}

impl HashField<'_> {
    fn alg_byte(&self) -> u8 {
        u8::try_from(self.alg).unwrap_or(0)
    }

    /// The value as it may be stored: unusable values become empty (the batch
    /// is refused anyway, but the buffers keep one slot per hash).
    fn stored_value(&self) -> &[u8] {
        if digest_len(self.alg as u32) == self.value.len() && self.alg <= LAST_ALG {
            self.value
        } else {
            &[]
        }
    }
}

fn read_hash<'a>(body: &'a [u8], path: At<'_>) -> Result<HashField<'a>, WireError> {
    let mut hash = HashField {
        alg: 0,
        value: &[],
        quality: None,
        frames: false,
    };
    fields(body, path, |field, value| {
        match (field, value) {
            (1, Value::Varint(v)) => hash.alg = v,
            (2, Value::Len(v)) => hash.value = v,
            (3, Value::Varint(v)) => hash.quality = Some(v),
            (4, Value::Len(_)) => hash.frames = true,
            _ => {}
        }
        Ok(())
    })?;
    Ok(hash)
}

/// Reads upsert `index` into `out`. When it carries labels, returns its body
/// without them (what the batch fingerprint takes, with the stored labels).
fn read_entry(
    body: &[u8],
    index: usize,
    pdq_min_quality: u8,
    out: &mut Changes,
) -> Result<Option<Vec<u8>>, WireError> {
    let path = At::new("upserts", index, "");
    let hash_path = At::new("upserts", index, ".hash");
    let mut hash: Option<HashField<'_>> = None;
    let mut reference: &[u8] = &[];
    // The last value of each key (a map keeps the last one), and unknown keys.
    let mut values: [Option<&str>; KEYS.len()] = [None; KEYS.len()];
    let mut unknown: Vec<&[u8]> = Vec::new();
    let mut unlabelled: Option<Vec<u8>> = None;
    let labels_path = || format!("{path}.labels");
    let mut reader = Reader::new(body);
    let mut start = 0usize;
    loop {
        let field = reader
            .next()
            .map_err(|_| WireError::new(path.to_string(), NOT_A_MESSAGE))?;
        let Some((number, value)) = field else { break };
        let end = reader.position();
        match (number, value) {
            (1, Value::Len(v)) => hash = Some(read_hash(v, hash_path)?),
            (2, Value::Len(v)) => reference = v,
            (3, Value::Len(v)) => {
                unlabelled.get_or_insert_with(|| body[..start].to_vec());
                let (key, value) =
                    read_label(v).map_err(|problem| WireError::new(labels_path(), problem))?;
                match labels::key_index(key) {
                    Some(k) => values[k] = Some(value),
                    None if !unknown.contains(&key) => unknown.push(key),
                    None => {}
                }
                start = end;
                continue;
            }
            _ => {}
        }
        if let Some(kept) = unlabelled.as_mut() {
            kept.extend_from_slice(&body[start..end]);
        }
        start = end;
    }
    let (alg, value, quality) = match &hash {
        None => {
            out.refuse(hash_path.to_string(), "is required");
            (0, &[][..], UNKNOWN_QUALITY)
        }
        Some(h) => {
            check_hash(h, hash_path, Some(pdq_min_quality), out);
            let q = h
                .quality
                .and_then(|q| u8::try_from(q).ok())
                .filter(|q| *q <= 100)
                .unwrap_or(UNKNOWN_QUALITY);
            (h.alg_byte(), h.stored_value(), q)
        }
    };
    check_reference(reference, At::new("upserts", index, ".reference_id"), out)?;
    for key in unknown {
        out.refuse(labels_path(), unknown_key(key));
    }
    for (key, value) in KEYS.iter().zip(values) {
        if let Some(problem) = value.and_then(labels::value_problem) {
            out.refuse(format!("{path}.labels.{key}"), problem);
        }
    }
    out.upserts.push(alg, value, quality);
    out.refs.extend_from_slice(reference);
    if unlabelled.is_some() {
        out.labelled = true;
        labels::encode_into(&values, &mut out.refs);
    }
    out.ref_ends.push(out.refs.len() as u32);
    Ok(unlabelled)
}

/// One `labels` map entry: (key, value), both UTF-8 as protobuf requires; else why not.
fn read_label(body: &[u8]) -> Result<(&[u8], &str), &'static str> {
    let (mut key, mut value): (&[u8], &[u8]) = (&[], &[]);
    let mut reader = Reader::new(body);
    while let Some((field, v)) = reader.next().map_err(|_| NOT_A_MESSAGE)? {
        match (field, v) {
            (1, Value::Len(k)) => key = k,
            (2, Value::Len(v)) => value = v,
            _ => {}
        }
    }
    if std::str::from_utf8(key).is_err() {
        return Err(NOT_UTF8);
    }
    let value = std::str::from_utf8(value).map_err(|_| NOT_UTF8)?;
    Ok((key, value))
}

/// Names an unknown label key, quoted, as far as it is printable text.
fn unknown_key(key: &[u8]) -> String {
    let text = String::from_utf8_lossy(key);
    let shown: String = text.chars().take(64).collect();
    format!(
        "unknown label key {shown:?}; the keys are {}",
        KEYS.join(", ")
    )
}

/// All upserts of one reference in one batch carry the same labels: a list file
/// that labels one reference two ways is a mistake to show, not to settle by
/// row order.
fn check_label_agreement(out: &mut Changes) {
    let mut first: HashMap<&[u8], usize> = HashMap::new();
    let mut clashes: Vec<(usize, usize)> = Vec::new();
    for i in 0..out.upserts.len() {
        let stored = out.reference(i);
        let id = &stored[..stored.len() - out.labels(i).len()];
        match first.get(id) {
            Some(&j) if out.labels(j) != out.labels(i) => clashes.push((i, j)),
            Some(_) => {}
            None => {
                first.insert(id, i);
            }
        }
    }
    for (i, j) in clashes {
        out.refuse(
            format!("upserts[{i}].labels"),
            format!("differ from the labels of upserts[{j}], which has the same reference_id"),
        );
    }
}

fn check_hash(hash: &HashField<'_>, path: At<'_>, min_quality: Option<u8>, out: &mut Changes) {
    let expected = if hash.alg <= LAST_ALG {
        digest_len(hash.alg as u32)
    } else {
        0
    };
    if expected == 0 {
        out.refuse(
            format!("{path}.algorithm"),
            "unknown or unspecified algorithm",
        );
        return;
    }
    if hash.frames {
        out.refuse(
            format!("{path}.frames"),
            "frames are for queries: list each frame of a video as its own VPDQ entry",
        );
        return;
    }
    if hash.value.len() != expected {
        out.refuse(
            format!("{path}.value"),
            format!(
                "must be {expected} bytes for this algorithm, got {}",
                hash.value.len()
            ),
        );
        return;
    }
    let is_pdq = hash.alg == u64::from(PDQ) || hash.alg == u64::from(VPDQ);
    if let Some(q) = hash.quality {
        if !is_pdq {
            out.refuse(format!("{path}.quality"), "only PDQ hashes carry a quality");
            return;
        }
        if q > 100 {
            out.refuse(format!("{path}.quality"), "must be 0-100");
            return;
        }
    }
    let Some(min_quality) = min_quality else {
        return;
    };
    if is_pdq {
        if is_degenerate_pdq(hash.value) {
            out.refuse(format!("{path}.value"), "is a degenerate PDQ hash");
        } else if hash.quality.is_some_and(|q| q < u64::from(min_quality)) {
            out.refuse(
                format!("{path}.quality"),
                format!("is below the list's minimum PDQ quality {min_quality}"),
            );
        }
    }
}

fn check_reference(reference: &[u8], path: At<'_>, out: &mut Changes) -> Result<(), WireError> {
    let text =
        std::str::from_utf8(reference).map_err(|_| WireError::new(path.to_string(), NOT_UTF8))?;
    if text.is_empty() {
        out.refuse(path.to_string(), "is required");
    } else if reference.len() > MAX_REFERENCE_BYTES {
        out.refuse(
            path.to_string(),
            format!(
                "must be at most {MAX_REFERENCE_BYTES} bytes, got {}",
                reference.len()
            ),
        );
    } else if text.chars().any(|c| c.is_ascii_control()) {
        out.refuse(path.to_string(), "must not contain control characters");
    }
    Ok(())
}

/// A hash may appear once per batch: the order of two changes to one hash
/// would otherwise decide the outcome silently.
fn check_duplicates(out: &mut Changes) {
    // (algorithm, digest, side, index), sorted: equal hashes become neighbours, the
    // first of them in request order (upserts, then retirements) leading. Sorting
    // rather than hashing: no allocation per hash, and no input is slow to sort.
    let sides = [&out.upserts, &out.retirements];
    let mut rows: Vec<(u8, &[u8], u8, u32)> = Vec::with_capacity(sides[0].len() + sides[1].len());
    for (side, packed) in sides.iter().enumerate() {
        for i in 0..packed.len() {
            let digest = packed.digest(i);
            if !digest.is_empty() {
                rows.push((packed.algs[i], digest, side as u8, i as u32));
            }
        }
    }
    rows.sort_unstable();
    let mut dups: Vec<((u8, u32), (u8, u32))> = Vec::new();
    let mut first = 0;
    for k in 1..rows.len() {
        let (alg, digest, side, i) = rows[k];
        if (alg, digest) == (rows[first].0, rows[first].1) {
            dups.push(((side, i), (rows[first].2, rows[first].3)));
        } else {
            first = k;
        }
    }
    // Refused in request order, as the fields come.
    dups.sort_unstable();
    let name = |(side, i): (u8, u32)| {
        if side == 0 {
            At::new("upserts", i as usize, ".hash")
        } else {
            At::new("retirements", i as usize, "")
        }
    };
    for (dup, first) in dups {
        out.refuse(
            name(dup).to_string(),
            format!("repeats the hash of {}", name(first)),
        );
    }
}

fn utf8(body: &[u8], field: &str) -> Result<String, WireError> {
    std::str::from_utf8(body)
        .map(str::to_owned)
        .map_err(|_| WireError::new(field, NOT_UTF8))
}

/// The XXH3-128 of one (algorithm, digest, reference) entry, as the list digest
/// adds it. Exposed for the store's per-entry paths.
/// The `list` field of an `ApplyChangesRequest` (the last one, as protobuf reads it),
/// read without checking the rest: the store needs the list's settings before the whole
/// request is read against them.
pub fn request_list(raw: &[u8]) -> Result<String, WireError> {
    let mut list = String::new();
    fields(raw, WHOLE_REQUEST, |field, value| {
        if let (1, Value::Len(body)) = (field, value) {
            list = utf8(body, "list")?;
        }
        Ok(())
    })?;
    Ok(list)
}

/// Sum (mod 2^128) of the list-digest terms of stored entries: each `keys[i]` is a store
/// key whose byte `skip` is the algorithm and the rest the digest, `refs[i]` its reference.
pub fn stored_terms_sum(keys: &[Vec<u8>], refs: &[Vec<u8>], skip: usize) -> Option<u128> {
    if keys.len() != refs.len() {
        return None;
    }
    let mut sum = 0u128;
    for (key, reference) in keys.iter().zip(refs) {
        let (&alg, digest) = key.get(skip..)?.split_first()?;
        sum = sum.wrapping_add(entry_term(alg, digest, reference));
    }
    Some(sum)
}

pub fn entry_term(alg: u8, digest: &[u8], reference: &[u8]) -> u128 {
    let mut data = Vec::with_capacity(1 + digest.len() + reference.len());
    data.push(alg);
    data.extend_from_slice(digest);
    data.extend_from_slice(reference);
    xxh3_128(&data)
}

const COLUMNS: &str = "does not fit the other columns";

/// Protobuf wire bytes of change-log columns: one `field` of message `Entry { Hash hash
/// = 1; string reference_id = 2; map<string, string> labels = 3; }` per upsert, with
/// `Hash { algorithm = 1; value = 2; }` (`refs` holds stored references: see
/// [`crate::labels`]).
/// `ref_ends` holds u32 LE end offsets into `refs`. Used to send committed batches to
/// replicas without building a message per entry.
pub fn encode_entries(
    field: u32,
    algs: &[u8],
    slots: &[u8],
    ref_ends: &[u8],
    refs: &[u8],
) -> Result<Vec<u8>, WireError> {
    let n = algs.len();
    if slots.len() != n * 32 || ref_ends.len() != n * 4 {
        return Err(WireError::new("ref_ends", COLUMNS));
    }
    let mut out = Vec::with_capacity(n * 64 + refs.len());
    let mut start = 0usize;
    for (i, &alg) in algs.iter().enumerate() {
        let end = u32::from_le_bytes(
            ref_ends[i * 4..i * 4 + 4]
                .try_into()
                .map_err(|_| WireError::new("ref_ends", COLUMNS))?,
        ) as usize;
        let stored = refs
            .get(start..end)
            .ok_or(WireError::new("ref_ends", COLUMNS))?;
        start = end;
        let stored = std::str::from_utf8(stored).map_err(|_| WireError::new("refs", NOT_UTF8))?;
        let (reference, labels) = labels::split(stored);
        let hash = hash_message(alg, &slots[i * 32..i * 32 + 32])?;
        let mut entry = Vec::with_capacity(hash.len() + stored.len() + 8);
        put_len_field(1, &hash, &mut entry);
        put_len_field(2, reference.as_bytes(), &mut entry);
        for (key, value) in labels::pairs(labels) {
            let mut pair = Vec::with_capacity(key.len() + value.len() + 4);
            put_len_field(1, key.as_bytes(), &mut pair);
            put_len_field(2, value.as_bytes(), &mut pair);
            put_len_field(3, &pair, &mut entry);
        }
        put_len_field(field, &entry, &mut out);
    }
    Ok(out)
}

/// Protobuf wire bytes of one `field` of message `Hash` per packed hash.
pub fn encode_hashes(field: u32, algs: &[u8], slots: &[u8]) -> Result<Vec<u8>, WireError> {
    if slots.len() != algs.len() * 32 {
        return Err(WireError::new("slots", COLUMNS));
    }
    let mut out = Vec::with_capacity(algs.len() * 40);
    for (i, &alg) in algs.iter().enumerate() {
        put_len_field(
            field,
            &hash_message(alg, &slots[i * 32..i * 32 + 32])?,
            &mut out,
        );
    }
    Ok(out)
}

fn hash_message(alg: u8, slot: &[u8]) -> Result<Vec<u8>, WireError> {
    let len = digest_len(u32::from(alg));
    if len == 0 {
        return Err(WireError::new("algs", "holds an unknown algorithm byte"));
    }
    let mut hash = Vec::with_capacity(len + 4);
    put_varint(1 << 3, &mut hash);
    put_varint(u64::from(alg), &mut hash);
    put_len_field(2, &slot[..len], &mut hash);
    Ok(hash)
}

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_len_field(field: u32, body: &[u8], out: &mut Vec<u8>) {
    put_varint(u64::from(field) << 3 | 2, out);
    put_varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn len_field(field: u64, body: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }

    fn hash(alg: u64, value: &[u8], quality: Option<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        varint(1 << 3, &mut out);
        varint(alg, &mut out);
        len_field(2, value, &mut out);
        if let Some(q) = quality {
            varint(3 << 3, &mut out);
            varint(q, &mut out);
        }
        out
    }

    fn entry(alg: u64, value: &[u8], reference: &str) -> Vec<u8> {
        let mut out = Vec::new();
        len_field(1, &hash(alg, value, None), &mut out);
        len_field(2, reference.as_bytes(), &mut out);
        out
    }

    fn balanced_pdq(seed: u8) -> Vec<u8> {
        (0..32)
            .map(|i| {
                if (i + seed).is_multiple_of(2) {
                    0xf0
                } else {
                    0x0f
                }
            })
            .collect()
    }

    #[test]
    fn reads_a_valid_batch() {
        let mut raw = Vec::new();
        len_field(1, b"iwf", &mut raw);
        len_field(2, b"b1", &mut raw);
        len_field(3, &entry(1, &[7; 16], "R-1"), &mut raw);
        len_field(3, &entry(4, &balanced_pdq(0), "R-2"), &mut raw);
        len_field(4, &hash(2, &[9; 20], None), &mut raw);
        varint(5 << 3, &mut raw);
        varint(41, &mut raw);
        let c = parse_changes(&raw, 50).unwrap();
        assert_eq!((c.list.as_str(), c.batch_id.as_str()), ("iwf", "b1"));
        assert_eq!(c.expected_version, Some(41));
        assert!(c.violations.is_empty(), "{:?}", c.violations);
        assert_eq!(c.upserts.algs, vec![1, 4]);
        assert_eq!(c.upserts.digest(0), &[7; 16]);
        assert_eq!(&c.upserts.slots[16..32], &[0; 16]);
        assert_eq!(c.reference(1), b"R-2");
        assert_eq!(c.retirements.digest(0), &[9; 20]);
        assert_eq!(c.term(0), entry_term(1, &[7; 16], b"R-1"));
        assert_eq!(
            c.terms_sum(),
            c.term(0).wrapping_add(c.term(1)),
            "terms add modulo 2^128"
        );
    }

    #[test]
    fn names_each_bad_field() {
        let mut raw = Vec::new();
        len_field(1, b"iwf", &mut raw);
        len_field(3, &entry(1, &[7; 15], "R"), &mut raw);
        len_field(3, &entry(9, &[7; 16], "R"), &mut raw);
        len_field(3, &entry(4, &[0; 32], "R"), &mut raw);
        len_field(3, &entry(1, &[8; 16], ""), &mut raw);
        len_field(3, &entry(1, &[6; 16], "a\nb"), &mut raw);
        let mut low = Vec::new();
        len_field(1, &hash(4, &balanced_pdq(1), Some(10)), &mut low);
        len_field(2, b"R", &mut low);
        len_field(3, &low, &mut raw);
        len_field(4, &hash(1, &[8; 16], None), &mut raw);
        let c = parse_changes(&raw, 50).unwrap();
        let fields: Vec<&str> = c.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "upserts[0].hash.value",
                "upserts[1].hash.algorithm",
                "upserts[2].hash.value",
                "upserts[3].reference_id",
                "upserts[4].reference_id",
                "upserts[5].hash.quality",
                "retirements[0]",
            ]
        );
        assert!(c.violations[6].description.contains("upserts[3].hash"));
        assert_eq!(c.upserts.len(), 6, "one slot per entry, even a refused one");
    }

    #[test]
    fn every_repeat_of_a_hash_names_its_first_in_request_order() {
        let (a, b, c, d) = ([1; 16], [2; 16], [3; 16], [4; 16]);
        let mut raw = Vec::new();
        len_field(1, b"iwf", &mut raw);
        for (value, reference) in [(a, "A"), (b, "B"), (a, "A2"), (c, "C"), (a, "A3")] {
            len_field(3, &entry(1, &value, reference), &mut raw);
        }
        // The same bytes under another algorithm are another hash.
        len_field(3, &entry(2, &[1; 20], "S"), &mut raw);
        for value in [b, d, a, d] {
            len_field(4, &hash(1, &value, None), &mut raw);
        }
        let parsed = parse_changes(&raw, 0).unwrap();
        let got: Vec<(&str, &str)> = parsed
            .violations
            .iter()
            .map(|v| (v.field.as_str(), v.description.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("upserts[2].hash", "repeats the hash of upserts[0].hash"),
                ("upserts[4].hash", "repeats the hash of upserts[0].hash"),
                ("retirements[0]", "repeats the hash of upserts[1].hash"),
                ("retirements[2]", "repeats the hash of upserts[0].hash"),
                ("retirements[3]", "repeats the hash of retirements[1]"),
            ]
        );
    }

    #[test]
    fn undecodable_bytes_are_an_error_naming_where() {
        let err = parse_changes(&[0x1a, 0x05, 1], 50).unwrap_err();
        assert_eq!(err, WireError::request());
        assert_eq!(
            err.to_string(),
            "(request): is not a valid protobuf message"
        );
        let mut raw = Vec::new();
        len_field(3, &entry(1, &[7; 16], "x"), &mut raw);
        let last = raw.len() - 1;
        raw[last] = 0xff;
        let err = parse_changes(&raw, 50).unwrap_err();
        assert_eq!(
            err.field, "upserts[0].reference_id",
            "invalid UTF-8 reference"
        );
        let mut raw = Vec::new();
        len_field(3, &entry(1, &[7; 16], "x"), &mut raw);
        len_field(3, &[0x0a, 9, 1], &mut raw); // an entry whose hash overruns it
        assert_eq!(parse_changes(&raw, 50).unwrap_err().field, "upserts[1]");
        let mut raw = Vec::new();
        len_field(4, &[0x08], &mut raw);
        assert_eq!(parse_changes(&raw, 50).unwrap_err().field, "retirements[0]");
        let mut raw = Vec::new();
        len_field(1, &[0xc3, 0x28], &mut raw);
        assert_eq!(parse_changes(&raw, 50).unwrap_err().field, "list");
    }

    #[test]
    fn skips_unknown_fields_of_every_wire_type_groups_included() {
        let mut plain = Vec::new();
        len_field(1, b"iwf", &mut plain);
        len_field(2, b"b1", &mut plain);
        len_field(3, &entry(1, &[7; 16], "R-1"), &mut plain);
        len_field(4, &hash(2, &[9; 20], None), &mut plain);
        let want = parse_changes(&plain, 50).unwrap();
        // A group holding every wire type and a nested group, at the top level,
        // inside an entry, and inside a hash; a known field number as a group.
        let mut group = Vec::new();
        varint(99 << 3 | 3, &mut group);
        varint(100 << 3 | 3, &mut group);
        varint(1 << 3, &mut group);
        varint(5, &mut group);
        varint(100 << 3 | 4, &mut group);
        varint(2 << 3 | 1, &mut group);
        group.extend([0; 8]);
        varint(3 << 3 | 5, &mut group);
        group.extend([0; 4]);
        len_field(4, b"ab", &mut group);
        varint(99 << 3 | 4, &mut group);
        let mut known_as_group = Vec::new();
        varint(3 << 3 | 3, &mut known_as_group);
        varint(3 << 3 | 4, &mut known_as_group);

        let mut hash_body = hash(2, &[9; 20], None);
        hash_body.extend(&group);
        let mut entry_body = entry(1, &[7; 16], "R-1");
        entry_body.extend(&group);
        let mut raw = Vec::new();
        raw.extend(&group);
        len_field(1, b"iwf", &mut raw);
        raw.extend(&known_as_group);
        len_field(2, b"b1", &mut raw);
        len_field(3, &entry_body, &mut raw);
        len_field(4, &hash_body, &mut raw);
        raw.extend(&group);
        let got = parse_changes(&raw, 50).unwrap();
        assert!(got.violations.is_empty(), "{:?}", got.violations);
        assert_eq!((got.list.as_str(), got.batch_id.as_str()), ("iwf", "b1"));
        assert_eq!(got.upserts, want.upserts);
        assert_eq!(got.refs, want.refs);
        assert_eq!(got.retirements, want.retirements);

        // Malformed groups are undecodable, and say so.
        for bad in [&[0x9b, 0x06][..], &[0x9b, 0x06, 0x94, 0x06], &[0x9c, 0x06]] {
            let mut raw = plain.clone();
            raw.extend(bad);
            assert_eq!(parse_changes(&raw, 50).unwrap_err(), WireError::request());
        }
    }

    #[test]
    fn encoded_entries_read_back_as_upserts() {
        let mut raw = Vec::new();
        len_field(3, &entry(1, &[7; 16], "R-1"), &mut raw);
        len_field(3, &entry(4, &balanced_pdq(0), "R-2"), &mut raw);
        len_field(4, &hash(2, &[9; 20], None), &mut raw);
        let c = parse_changes(&raw, 50).unwrap();
        let ends: Vec<u8> = c.ref_ends.iter().flat_map(|e| e.to_le_bytes()).collect();
        let mut again =
            encode_entries(3, &c.upserts.algs, &c.upserts.slots, &ends, &c.refs).unwrap();
        again.extend(encode_hashes(4, &c.retirements.algs, &c.retirements.slots).unwrap());
        assert_eq!(again, raw, "the same bytes a protobuf encoder writes");
        assert!(encode_entries(3, &[9], &[0; 32], &[0; 4], &[]).is_err());
    }

    fn label(key: &str, value: &str) -> Vec<u8> {
        let mut pair = Vec::new();
        len_field(1, key.as_bytes(), &mut pair);
        len_field(2, value.as_bytes(), &mut pair);
        let mut out = Vec::new();
        len_field(3, &pair, &mut out);
        out
    }

    fn labelled(alg: u64, value: &[u8], reference: &str, labels: &[(&str, &str)]) -> Vec<u8> {
        let mut out = entry(alg, value, reference);
        for (k, v) in labels {
            out.extend(label(k, v));
        }
        out
    }

    fn one_batch(entries: &[Vec<u8>]) -> Changes {
        let mut raw = Vec::new();
        len_field(1, b"iwf", &mut raw);
        len_field(2, b"b1", &mut raw);
        for e in entries {
            len_field(3, e, &mut raw);
        }
        parse_changes(&raw, 50).unwrap()
    }

    #[test]
    fn labels_are_stored_after_the_reference_in_key_order() {
        let c = one_batch(&[
            labelled(
                1,
                &[7; 16],
                "R-1",
                &[
                    ("classification", "A1"),
                    ("category", "x"),
                    ("category", "A"),
                ],
            ),
            entry(1, &[8; 16], "R-2"),
        ]);
        assert!(c.violations.is_empty(), "{:?}", c.violations);
        assert_eq!(
            c.reference(0),
            b"R-1\0category=A\0classification=A1",
            "last value wins"
        );
        assert_eq!(c.labels(0), b"\0category=A\0classification=A1");
        assert_eq!(c.reference(1), b"R-2");
        assert!(c.labels(1).is_empty());
        assert_eq!(c.term(0), entry_term(1, &[7; 16], c.reference(0)));
        assert_eq!(
            c.term(1),
            entry_term(1, &[8; 16], b"R-2"),
            "an unlabelled entry's digest term is as before labels"
        );
        assert!(c.labelled);
    }

    #[test]
    fn bad_labels_are_named() {
        let long = "v".repeat(65);
        let c = one_batch(&[
            labelled(1, &[1; 16], "R", &[("colour", "red")]),
            labelled(1, &[2; 16], "R2", &[("category", "")]),
            labelled(1, &[3; 16], "R3", &[("source", &long)]),
            labelled(1, &[4; 16], "R4", &[("baseline", "a\u{7}")]),
        ]);
        let got: Vec<(&str, &str)> = c
            .violations
            .iter()
            .map(|v| (v.field.as_str(), v.description.as_str()))
            .collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0].0, "upserts[0].labels");
        assert!(got[0].1.contains("\"colour\""), "{}", got[0].1);
        assert!(
            got[0].1.contains("age_band, baseline, category"),
            "{}",
            got[0].1
        );
        assert_eq!(got[1].0, "upserts[1].labels.category");
        assert_eq!(
            got[2],
            (
                "upserts[2].labels.source",
                "must be 1-64 bytes of UTF-8, got 65"
            )
        );
        assert_eq!(got[3].0, "upserts[3].labels.baseline");
        // A label that is not UTF-8 cannot be read, as protobuf would not read it.
        let mut pair = Vec::new();
        len_field(1, b"category", &mut pair);
        len_field(2, &[0xff], &mut pair);
        let mut body = entry(1, &[1; 16], "R");
        len_field(3, &pair, &mut body);
        let mut raw = Vec::new();
        len_field(3, &body, &mut raw);
        assert_eq!(
            parse_changes(&raw, 50).unwrap_err().field,
            "upserts[0].labels"
        );
    }

    #[test]
    fn one_reference_is_labelled_one_way_per_batch() {
        let c = one_batch(&[
            labelled(1, &[1; 16], "R", &[("category", "A")]),
            labelled(2, &[1; 20], "R", &[("category", "A")]),
            labelled(3, &[1; 32], "R", &[("category", "B")]),
            entry(1, &[2; 16], "R"),
            entry(1, &[3; 16], "S"),
            labelled(2, &[3; 20], "S", &[("category", "A")]),
        ]);
        let fields: Vec<&str> = c.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "upserts[2].labels",
                "upserts[3].labels",
                "upserts[5].labels"
            ]
        );
        assert!(c.violations[0].description.contains("upserts[0]"));
    }

    #[test]
    fn labels_keep_the_fingerprint_whatever_their_wire_order() {
        let fingerprint =
            |labels: &[(&str, &str)]| one_batch(&[labelled(1, &[7; 16], "R", labels)]).fingerprint;
        let a = fingerprint(&[("category", "A"), ("source", "s")]);
        assert_eq!(a, fingerprint(&[("source", "s"), ("category", "A")]));
        assert_ne!(a, fingerprint(&[("category", "B"), ("source", "s")]));
        assert_ne!(a, fingerprint(&[]));
        // Without labels, the fingerprint is the one batches always had: the list,
        // then each entry's body as sent.
        let body = entry(1, &[7; 16], "R");
        let mut want = Xxh3::new();
        want.update(&3u64.to_le_bytes());
        want.update(b"iwf");
        want.update(&[3]);
        want.update(&(body.len() as u64).to_le_bytes());
        want.update(&body);
        assert_eq!(fingerprint(&[]), want.digest128());
        // Labels between the hash and the reference are left out the same way.
        let mut mixed = Vec::new();
        len_field(1, &hash(1, &[7; 16], None), &mut mixed);
        mixed.extend(label("source", "s"));
        len_field(2, b"R", &mut mixed);
        mixed.extend(label("category", "A"));
        assert_eq!(one_batch(&[mixed]).fingerprint, a);
    }

    #[test]
    fn encoded_entries_carry_their_labels() {
        let mut raw = Vec::new();
        len_field(
            3,
            &labelled(1, &[7; 16], "R-1", &[("category", "A"), ("source", "s=1")]),
            &mut raw,
        );
        len_field(3, &entry(4, &balanced_pdq(0), "R-2"), &mut raw);
        let c = parse_changes(&raw, 50).unwrap();
        let ends: Vec<u8> = c.ref_ends.iter().flat_map(|e| e.to_le_bytes()).collect();
        let again = encode_entries(3, &c.upserts.algs, &c.upserts.slots, &ends, &c.refs).unwrap();
        assert_eq!(
            again, raw,
            "labels in key order, as a protobuf encoder writes a sorted map"
        );
        let back = parse_changes(&again, 50).unwrap();
        assert_eq!(back.refs, c.refs);
    }

    #[test]
    fn fingerprint_follows_content_not_batch_id() {
        let build = |batch: &[u8], reference: &str| {
            let mut raw = Vec::new();
            len_field(1, b"iwf", &mut raw);
            len_field(2, batch, &mut raw);
            len_field(3, &entry(1, &[7; 16], reference), &mut raw);
            parse_changes(&raw, 50).unwrap().fingerprint
        };
        assert_eq!(build(b"a", "R"), build(b"b", "R"));
        assert_ne!(build(b"a", "R"), build(b"a", "S"));
    }
}
