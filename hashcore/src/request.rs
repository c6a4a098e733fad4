//! Match requests read from their wire bytes and validated: a
//! `hashmatch.v1.MatchRequest` or `MatchBatchRequest` (see
//! `proto/hashmatch/v1/match.proto`) becomes the items' ids, their violations
//! and the packed query hashes for the index.
//!
//! The rules and texts are those of the service's `validation.py`:
//!
//! * `item_id`: at most 256 bytes of UTF-8 without control characters;
//! * `hashes`: 1 to 16; each a known algorithm with a digest of its length,
//!   `quality` only on PDQ and at most 100; at most one VPDQ hash (a video),
//!   which carries no value and no quality but 1 to [`MAX_VIDEO_FRAMES`]
//!   `frames`, each a 32-byte PDQ hash with a quality of at most 100; only VPDQ
//!   carries frames. A request holds at most [`MAX_VIDEO_FRAMES`] frames in all.
//!   Degenerate frames, like degenerate PDQ hashes, are not searched.
//! * a batch holds 1 to 10,000 items; an item's paths are prefixed `items[i].`.
//!
//! Undecodable input: bytes that are not a protobuf message are one
//! whole-call violation `(request)`. In a batch whose framing is readable, an
//! item whose own body is not (truncated, bad wire type…) is refused alone,
//! with the violation `items[i]` "is not a valid protobuf message"; an
//! `item_id` that is not UTF-8 refuses its item with `…item_id` "is not valid
//! UTF-8" (for a single request these two are the request's violations).
//! Unknown fields, fields with an unexpected wire type, and groups are
//! skipped as the protobuf runtime skips them; a singular field given twice
//! keeps its last value.
//!
//! Exact digests (MD5, SHA-1, SHA-256) are not copied out: a query keeps the
//! offset of its digest in the request bytes, so the index looks them up in
//! place ([`Request::digest`]). Items in the shape every protobuf runtime
//! writes for the common case (a printable ASCII item_id, then exact hashes of
//! just an algorithm and a value) are read by a dedicated reader
//! (`fast_item`) that takes no detour through the general field loop; any
//! other item goes through the general reader, with the same outcome.

use crate::changes::{is_degenerate_pdq, Violation};
use crate::index::{Key, Queries, DISTANCE_DEFAULT, QUALITY_UNKNOWN};
use crate::pdq::pdq_from_bytes;
use crate::proto::{Reader, Value};
use crate::video::Frame;

pub const MAX_ITEM_ID_BYTES: usize = 256;
pub const MAX_HASHES_PER_ITEM: usize = 16;
pub const MAX_BATCH_ITEMS: usize = 10_000;
/// Most frames of one video query, and of all the video queries of one request.
pub const MAX_VIDEO_FRAMES: usize = 100_000;
/// Invalid frames named one by one per hash; the rest are counted.
const NAMED_FRAMES: usize = 10;
const VPDQ: i32 = 5;

pub const NOT_PROTOBUF: &str = "the request is not a valid protobuf message";
const ITEM_NOT_PROTOBUF: &str = "is not a valid protobuf message";
const NOT_UTF8: &str = "is not valid UTF-8";

/// One item of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Item {
    /// `ids[id.0..id.1]` is the item_id (empty when not readable).
    pub id: (u32, u32),
    /// The item has at least one well-formed PDQ hash (degenerate or not);
    /// always false for an invalid item.
    pub has_pdq: bool,
    /// Index into [`Request::errors`] + 1 when the item is invalid, else 0.
    pub error: u32,
}

/// A request, read and checked.
#[derive(Debug, Default)]
pub struct Request {
    pub batch: bool,
    /// Whole-call violations: the call is to be refused (for a single request,
    /// its item's violations).
    pub violations: Vec<Violation>,
    pub items: Vec<Item>,
    /// Item ids, concatenated.
    pub ids: Vec<u8>,
    /// Violations of each invalid item, all of them.
    pub errors: Vec<Vec<Violation>>,
    /// Searched hashes ("queries"), numbered in request order: `owners[q]`
    /// is the item of query `q` (non-decreasing).
    pub owners: Vec<u32>,
    /// Exact queries of MD5, SHA-1 and SHA-256, each ascending: `(query,
    /// offset)`, the digest being at `offset` in the bytes parsed.
    pub exact: [Vec<(u32, u32)>; 3],
    /// PDQ queries (left out when paused, degenerate ones always).
    pub queries: Queries,
    /// `pdq_query[k]`: the query number of `queries.keys[k]` (ascending).
    pub pdq_query: Vec<u32>,
    /// Some valid item has a well-formed PDQ hash.
    pub has_pdq: bool,
    /// The video of each valid item that has one (PDQ left out when paused).
    pub videos: Vec<VideoQuery>,
    /// Room made in an `exact` list when its first query comes.
    exact_capacity: usize,
}

/// One video to match: its item and its frames, degenerate ones left out.
#[derive(Debug, Clone, Default)]
pub struct VideoQuery {
    pub owner: u32,
    pub frames: Vec<Frame>,
}

/// One `Hash` as read.
#[derive(Clone, Copy)]
struct HashField<'a> {
    alg: u64,
    value: &'a [u8],
    quality: Option<u64>,
    /// Number of `frames`, read again from `body` when needed.
    frames: usize,
    body: &'a [u8],
}

/// One `VideoFrame` as read: `(pdq, quality, timestamp_ms)`, the varints as
/// protobuf keeps a `uint32` (low 32 bits).
fn video_frames<'a>(body: &'a [u8]) -> impl Iterator<Item = (&'a [u8], u32, u32)> + 'a {
    let mut reader = Reader::new(body);
    std::iter::from_fn(move || loop {
        match reader.next().ok()?? {
            (4, Value::Len(frame)) => return Some(read_frame(frame)),
            _ => continue,
        }
    })
}

fn read_frame(body: &[u8]) -> (&[u8], u32, u32) {
    let (mut pdq, mut quality, mut millis): (&[u8], u32, u32) = (&[], 0, 0);
    let mut reader = Reader::new(body);
    while let Ok(Some((field, value))) = reader.next() {
        match (field, value) {
            (1, Value::Len(v)) => pdq = v,
            (2, Value::Varint(v)) => quality = v as u32,
            (3, Value::Varint(v)) => millis = v as u32,
            _ => {}
        }
    }
    (pdq, quality, millis)
}

impl Request {
    /// Number of searched hashes.
    pub fn query_count(&self) -> usize {
        self.owners.len()
    }

    /// The `N`-byte digest at `offset` of `raw` (see [`Request::exact`]).
    #[inline(always)]
    pub fn digest<const N: usize>(raw: &[u8], offset: u32) -> &[u8; N] {
        let at = offset as usize;
        raw[at..at + N].try_into().expect("an N-byte slice")
    }

    /// The key of query `q` (`raw`: the bytes this request was read from).
    pub fn key(&self, raw: &[u8], q: u32) -> Option<Key> {
        for (a, list) in self.exact.iter().enumerate() {
            if let Ok(i) = list.binary_search_by_key(&q, |e| e.0) {
                let off = list[i].1;
                return Some(match a {
                    0 => Key::Md5(*Self::digest(raw, off)),
                    1 => Key::Sha1(*Self::digest(raw, off)),
                    _ => Key::Sha256(*Self::digest(raw, off)),
                });
            }
        }
        let k = self.pdq_query.binary_search(&q).ok()?;
        self.queries.keys.get(k).copied()
    }

    pub fn item_id(&self, i: usize) -> &[u8] {
        let (a, b) = self.items[i].id;
        &self.ids[a as usize..b as usize]
    }

    /// Violations of item `i`, if it is invalid.
    pub fn item_errors(&self, i: usize) -> Option<&[Violation]> {
        match self.items[i].error {
            0 => None,
            e => self.errors.get(e as usize - 1).map(Vec::as_slice),
        }
    }

    /// Reads and checks a `MatchRequest` (`batch == false`) or a
    /// `MatchBatchRequest`. PDQ hashes are not queued for search when
    /// `pdq_paused`. Never panics.
    pub fn parse(raw: &[u8], batch: bool, pdq_paused: bool) -> Request {
        let mut req = Request {
            batch,
            ..Request::default()
        };
        let mut scratch = Vec::new();
        if !batch {
            match read_item(raw, &mut scratch) {
                Ok(fields) => req.add_item(raw, fields, Prefix(None), &scratch, pdq_paused),
                Err(Undecodable::Wire) => {
                    req.refuse_item(None, vec![violation("(request)", NOT_PROTOBUF)])
                }
                Err(Undecodable::Utf8) => {
                    req.refuse_item(None, vec![violation("item_id", NOT_UTF8)])
                }
            }
            if let Some(v) = req.item_errors(0) {
                req.violations = v.to_vec();
            }
            req.fill_distances();
            return req;
        }
        // Items are read as their framing is: the whole call's violations
        // (unreadable framing, no items, too many) then replace what was read.
        let refused = |v: Violation| Request {
            batch,
            violations: vec![v],
            ..Request::default()
        };
        // An item takes at least 24 bytes (a tag, a length and one MD5 hash).
        let guess = (raw.len() / 24).min(MAX_BATCH_ITEMS);
        req.items.reserve(guess);
        req.owners.reserve(guess);
        // Growing these step by step costs more than the lookups of a batch
        // without hits (a reallocation is a copy, and a malloc that often
        // has to consolidate freed chunks). Ids: an item of one hash is
        // ~20 bytes more than its id.
        req.ids.reserve(raw.len().saturating_sub(20 * guess));
        req.exact_capacity = guess;
        let mut n = 0usize;
        // Items framed as every runtime frames them (tag 0x0a, a length of at
        // most two bytes) are taken here; anything else, from there on, by the
        // general reader below (other fields may come in any order).
        let mut at = 0usize;
        while let [0x0a, ..] = raw[at..] {
            let Some((len, next)) = short_len(raw, at + 1) else {
                break;
            };
            let Some(body) = raw.get(next..next + len) else {
                break;
            };
            if n < MAX_BATCH_ITEMS {
                req.add_batch_item(raw, body, n, &mut scratch, pdq_paused);
            }
            n += 1;
            at = next + len;
        }
        let mut reader = Reader::new(&raw[at..]);
        loop {
            match reader.next() {
                Ok(Some((1, Value::Len(body)))) => {
                    if n < MAX_BATCH_ITEMS {
                        req.add_batch_item(raw, body, n, &mut scratch, pdq_paused);
                    }
                    n += 1;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return refused(violation("(request)", NOT_PROTOBUF)),
            }
        }
        if n == 0 {
            return refused(violation("items", "at least one item is required"));
        }
        if n > MAX_BATCH_ITEMS {
            return refused(violation(
                "items",
                format!("at most {MAX_BATCH_ITEMS} items, got {n}"),
            ));
        }
        let frames: usize = req.videos.iter().map(|v| v.frames.len()).sum();
        if frames > MAX_VIDEO_FRAMES {
            req.violations.push(violation(
                "items",
                format!("at most {MAX_VIDEO_FRAMES} video frames per request, got {frames}"),
            ));
            return req;
        }
        req.fill_distances();
        req
    }

    /// Every query uses its lists' own thresholds.
    fn fill_distances(&mut self) {
        self.queries.max_distances.clear();
        self.queries
            .max_distances
            .resize(self.queries.keys.len(), DISTANCE_DEFAULT);
    }

    fn refuse_item(&mut self, id: Option<&[u8]>, violations: Vec<Violation>) {
        let start = self.ids.len() as u32;
        if let Some(id) = id {
            self.ids.extend_from_slice(id);
        }
        self.errors.push(violations);
        self.items.push(Item {
            id: (start, self.ids.len() as u32),
            has_pdq: false,
            error: self.errors.len() as u32,
        });
    }

    /// Reads and checks item `i` of a batch, `body` (a slice of `raw`).
    fn add_batch_item<'a>(
        &mut self,
        raw: &'a [u8],
        body: &'a [u8],
        i: usize,
        scratch: &mut Vec<HashField<'a>>,
        pdq_paused: bool,
    ) {
        if self.add_fast_item(raw, body) {
            return;
        }
        match read_item(body, scratch) {
            Ok(fields) => self.add_item(raw, fields, Prefix(Some(i)), scratch, pdq_paused),
            Err(Undecodable::Wire) => self.refuse_item(
                None,
                vec![violation(format!("items[{i}]"), ITEM_NOT_PROTOBUF)],
            ),
            Err(Undecodable::Utf8) => self.refuse_item(
                None,
                vec![violation(format!("items[{i}].item_id"), NOT_UTF8)],
            ),
        }
    }

    /// Adds item `body` (a slice of `raw`) if it has the common shape (see
    /// [`fast_item`]); otherwise leaves the request as it was.
    #[inline]
    fn add_fast_item(&mut self, raw: &[u8], body: &[u8]) -> bool {
        let owner = self.items.len() as u32;
        let first = self.owners.len();
        let Some(id) = fast_item(raw, body, |a, offset| {
            let q = self.owners.len() as u32;
            if self.exact[a].capacity() == 0 {
                // Most batches hold hashes of one algorithm: room for one per item.
                self.exact[a].reserve(self.exact_capacity);
            }
            self.exact[a].push((q, offset));
            self.owners.push(owner);
        }) else {
            // Undo the hashes read before the item turned out otherwise.
            for list in &mut self.exact {
                while list.last().is_some_and(|e| e.0 as usize >= first) {
                    list.pop();
                }
            }
            self.owners.truncate(first);
            return false;
        };
        let start = self.ids.len() as u32;
        self.ids.extend_from_slice(id);
        self.items.push(Item {
            id: (start, self.ids.len() as u32),
            has_pdq: false,
            error: 0,
        });
        true
    }

    /// Checks one decoded item (its hashes in `hashes`, slices of `raw`).
    fn add_item(
        &mut self,
        raw: &[u8],
        id: &[u8],
        prefix: Prefix,
        hashes: &[HashField<'_>],
        pdq_paused: bool,
    ) {
        let mut out: Vec<Violation> = Vec::new();
        if id.len() > MAX_ITEM_ID_BYTES {
            out.push(violation(
                format!("{prefix}item_id"),
                format!(
                    "must be at most {MAX_ITEM_ID_BYTES} bytes, got {}",
                    id.len()
                ),
            ));
        } else if id.iter().any(|&b| b < 0x20 || b == 0x7f) {
            out.push(violation(
                format!("{prefix}item_id"),
                "must not contain control characters",
            ));
        }
        if hashes.is_empty() {
            out.push(violation(
                format!("{prefix}hashes"),
                "at least one hash is required",
            ));
        } else if hashes.len() > MAX_HASHES_PER_ITEM {
            out.push(violation(
                format!("{prefix}hashes"),
                format!("at most {MAX_HASHES_PER_ITEM} hashes per item"),
            ));
        }
        for (j, h) in hashes.iter().enumerate() {
            check_hash(h, prefix, j, &mut out);
        }
        if hashes.iter().filter(|h| alg_number(h.alg) == VPDQ).count() > 1 {
            out.push(violation(
                format!("{prefix}hashes"),
                "at most one VPDQ hash (one video) per item",
            ));
        }
        if !out.is_empty() {
            self.refuse_item(Some(id), out);
            return;
        }
        let owner = self.items.len() as u32;
        let mut has_pdq = false;
        for h in hashes {
            if alg_number(h.alg) == VPDQ {
                has_pdq = true;
                if !pdq_paused {
                    let frames = video_frames(h.body)
                        .filter(|(pdq, _, _)| !is_degenerate_pdq(pdq))
                        .map(|(pdq, quality, millis)| Frame {
                            pdq: pdq_from_bytes(pdq.try_into().expect("checked: 32 bytes")),
                            quality: quality as u8,
                            millis,
                        })
                        .collect();
                    self.videos.push(VideoQuery { owner, frames });
                }
                continue;
            }
            let q = self.owners.len() as u32;
            match alg_number(h.alg) {
                a @ 1..=3 => {
                    self.exact[a as usize - 1].push((q, offset_in(raw, h.value)));
                }
                4 => {
                    has_pdq = true;
                    if pdq_paused || is_degenerate_pdq(h.value) {
                        continue;
                    }
                    let value = h.value.try_into().expect("checked: 32 bytes");
                    self.queries.keys.push(Key::Pdq(pdq_from_bytes(value)));
                    let quality = h
                        .quality
                        .map_or(QUALITY_UNKNOWN, |q| (q as u32).min(100) as u8);
                    self.queries.qualities.push(quality);
                    self.pdq_query.push(q);
                }
                _ => continue,
            }
            self.owners.push(owner);
        }
        self.has_pdq |= has_pdq;
        let start = self.ids.len() as u32;
        self.ids.extend_from_slice(id);
        self.items.push(Item {
            id: (start, self.ids.len() as u32),
            has_pdq,
            error: 0,
        });
    }
}

/// An item's path prefix (`""` or `"items[i]."`), formatted only into a violation.
#[derive(Clone, Copy)]
struct Prefix(Option<usize>);

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(i) => write!(f, "items[{i}]."),
            None => Ok(()),
        }
    }
}

fn violation(field: impl Into<String>, description: impl Into<String>) -> Violation {
    Violation {
        field: field.into(),
        description: description.into(),
    }
}

/// The enum value protobuf keeps for a varint: its low 32 bits as `int32`.
fn alg_number(alg: u64) -> i32 {
    alg as u32 as i32
}

fn expected_len(alg: i32) -> Option<usize> {
    match alg {
        1 => Some(16),
        2 => Some(20),
        3 | 4 => Some(32),
        VPDQ => Some(0),
        _ => None,
    }
}

/// The checks of `validation.check_hash`, appended to `out`.
fn check_hash(h: &HashField<'_>, prefix: Prefix, j: usize, out: &mut Vec<Violation>) {
    let alg = alg_number(h.alg);
    let Some(expected) = expected_len(alg) else {
        out.push(violation(
            format!("{prefix}hashes[{j}].algorithm"),
            "unknown or unspecified algorithm",
        ));
        return;
    };
    if alg == VPDQ {
        check_video(h, prefix, j, out);
        return;
    }
    if h.value.len() != expected {
        out.push(violation(
            format!("{prefix}hashes[{j}].value"),
            format!(
                "must be {expected} bytes for this algorithm, got {}",
                h.value.len()
            ),
        ));
    }
    if h.frames > 0 {
        out.push(violation(
            format!("{prefix}hashes[{j}].frames"),
            "only a VPDQ hash carries frames",
        ));
    }
    if let Some(q) = h.quality {
        // uint32 on the wire: protobuf keeps the low 32 bits.
        if alg != 4 {
            out.push(violation(
                format!("{prefix}hashes[{j}].quality"),
                "only PDQ hashes carry a quality",
            ));
        } else if q as u32 > 100 {
            out.push(violation(
                format!("{prefix}hashes[{j}].quality"),
                "must be 0-100",
            ));
        }
    }
}

/// The checks of a VPDQ query hash: no value or quality, and 1 to
/// [`MAX_VIDEO_FRAMES`] well-formed frames (the first few bad ones named).
fn check_video(h: &HashField<'_>, prefix: Prefix, j: usize, out: &mut Vec<Violation>) {
    let path = format!("{prefix}hashes[{j}]");
    if !h.value.is_empty() {
        out.push(violation(
            format!("{path}.value"),
            "must be empty in a VPDQ query: the video's frames go in frames",
        ));
    }
    if h.quality.is_some() {
        out.push(violation(
            format!("{path}.quality"),
            "must be absent in a VPDQ query: each frame carries its quality",
        ));
    }
    if h.frames == 0 {
        out.push(violation(
            format!("{path}.frames"),
            "a VPDQ query needs at least one frame",
        ));
        return;
    }
    if h.frames > MAX_VIDEO_FRAMES {
        out.push(violation(
            format!("{path}.frames"),
            format!(
                "at most {MAX_VIDEO_FRAMES} frames per video, got {}",
                h.frames
            ),
        ));
        return;
    }
    let mut bad = 0usize;
    for (k, (pdq, quality, _)) in video_frames(h.body).enumerate() {
        let mut problems = Vec::new();
        if pdq.len() != 32 {
            problems.push(violation(
                format!("{path}.frames[{k}].pdq"),
                format!("must be 32 bytes, got {}", pdq.len()),
            ));
        }
        if quality > 100 {
            problems.push(violation(
                format!("{path}.frames[{k}].quality"),
                "must be 0-100",
            ));
        }
        if !problems.is_empty() {
            bad += 1;
            if bad <= NAMED_FRAMES {
                out.append(&mut problems);
            }
        }
    }
    if bad > NAMED_FRAMES {
        out.push(violation(
            format!("{path}.frames"),
            format!("{bad} frames are invalid (the first {NAMED_FRAMES} are named)"),
        ));
    }
}

/// Where `part` (a slice of `raw`) starts in `raw`.
fn offset_in(raw: &[u8], part: &[u8]) -> u32 {
    let at = part.as_ptr() as usize - raw.as_ptr() as usize;
    debug_assert!(at + part.len() <= raw.len());
    at as u32
}

/// Reads a valid item of the common shape, or `None` for anything else (which
/// the general reader then handles): `item_id` (field 1) at most once and
/// first, printable ASCII of at most [`MAX_ITEM_ID_BYTES`] bytes (so valid
/// UTF-8 without control characters), then 1 to [`MAX_HASHES_PER_ITEM`]
/// `hashes` (field 2), each exactly `algorithm` (1 to 3, one byte) then
/// `value` of that algorithm's length, and nothing else. Such an item has no
/// violation, and the general reader would read the same id and digests.
/// Returns the id, having called `hash(algorithm index, digest offset in
/// raw)` for each hash; `None` may come after some calls.
#[inline]
fn fast_item<'a>(raw: &[u8], body: &'a [u8], mut hash: impl FnMut(usize, u32)) -> Option<&'a [u8]> {
    let mut at = 0usize;
    let mut id: &[u8] = &[];
    if body.first() == Some(&0x0a) {
        let (len, next) = short_len(body, 1)?;
        id = body.get(next..next + len)?;
        if len > MAX_ITEM_ID_BYTES || !printable_ascii(id) {
            return None;
        }
        at = next + len;
    }
    let base = offset_in(raw, body) as usize;
    let mut n = 0usize;
    while at < body.len() {
        // 0x12 len 0x08 alg 0x12 dlen digest: a one-byte length and algorithm.
        let [0x12, len, 0x08, alg, 0x12, dlen] = *body.get(at..at + 6)? else {
            return None;
        };
        let digest_len = match alg {
            1 => 16,
            2 => 20,
            3 => 32,
            _ => return None,
        };
        if usize::from(dlen) != digest_len || usize::from(len) != digest_len + 4 {
            return None;
        }
        let end = at + 6 + digest_len;
        if end > body.len() || n == MAX_HASHES_PER_ITEM {
            return None;
        }
        hash(usize::from(alg - 1), (base + at + 6) as u32);
        n += 1;
        at = end;
    }
    (n > 0).then_some(id)
}

/// Whether every byte of `s` is printable ASCII (`0x20..0x7f`), checked 8
/// bytes at a time (byte by byte it was a quarter of reading a batch).
#[inline]
fn printable_ascii(s: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Per byte b, with no carry or borrow between bytes: the high bit of
    // `(b | 0x80) - 0x20` is set iff `b & 0x7f >= 0x20`, that of
    // `(b & 0x7f) + 1` iff `b & 0x7f == 0x7f`; b's own high bit must be clear.
    let bad = |w: u64| {
        let low_ok = (w | HIGH).wrapping_sub(0x2020_2020_2020_2020);
        let del = (w & !HIGH).wrapping_add(0x0101_0101_0101_0101);
        (w | !low_ok | del) & HIGH != 0
    };
    let word = |at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    let n = s.len();
    if n < 8 {
        return s.iter().all(|&b| (0x20..0x7f).contains(&b));
    }
    // Whole words, then the last 8 bytes (overlapping the previous word).
    (0..n / 8).all(|i| !bad(word(8 * i))) && !bad(word(n - 8))
}

/// A length varint of at most two bytes at `body[at..]`: `(length, next position)`.
#[inline(always)]
fn short_len(body: &[u8], at: usize) -> Option<(usize, usize)> {
    let b0 = *body.get(at)?;
    if b0 < 0x80 {
        return Some((usize::from(b0), at + 1));
    }
    let b1 = *body.get(at + 1)?;
    if b1 >= 0x80 {
        return None;
    }
    Some((usize::from(b0 & 0x7f) | usize::from(b1) << 7, at + 2))
}

enum Undecodable {
    Wire,
    Utf8,
}

/// Reads one `MatchRequest`: its item_id, with its hashes left in `hashes`.
fn read_item<'a>(body: &'a [u8], hashes: &mut Vec<HashField<'a>>) -> Result<&'a [u8], Undecodable> {
    hashes.clear();
    let mut id: &[u8] = &[];
    let mut reader = Reader::new(body);
    let mut bad_utf8 = false;
    while let Some((field, value)) = reader.next().map_err(|_| Undecodable::Wire)? {
        match (field, value) {
            (1, Value::Len(v)) => {
                // Every occurrence is checked, as the runtime does.
                bad_utf8 |= std::str::from_utf8(v).is_err();
                id = v;
            }
            (2, Value::Len(v)) => hashes.push(read_hash(v).ok_or(Undecodable::Wire)?),
            _ => {}
        }
    }
    if bad_utf8 {
        return Err(Undecodable::Utf8);
    }
    Ok(id)
}

fn read_hash(body: &[u8]) -> Option<HashField<'_>> {
    let mut h = HashField {
        alg: 0,
        value: &[],
        quality: None,
        frames: 0,
        body,
    };
    let mut reader = Reader::new(body);
    while let Some((field, value)) = reader.next().ok()? {
        match (field, value) {
            (1, Value::Varint(v)) => h.alg = v,
            (2, Value::Len(v)) => h.value = v,
            (3, Value::Varint(v)) => h.quality = Some(v),
            (4, Value::Len(frame)) => {
                // A frame that is not a message makes the item undecodable.
                let mut r = Reader::new(frame);
                while r.next().ok()?.is_some() {}
                h.frames += 1;
            }
            _ => {}
        }
    }
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn printable_ascii_is_bytewise(s in prop::collection::vec(any::<u8>(), 0..40),
                                      fill in prop::collection::vec(0x20u8..0x7f, 0..40)) {
            let bytewise = |s: &[u8]| s.iter().all(|&b| (0x20..0x7f).contains(&b));
            prop_assert_eq!(printable_ascii(&s), bytewise(&s));
            prop_assert!(printable_ascii(&fill));
            // One byte changed in an otherwise printable id.
            for b in [0u8, 0x1f, 0x20, 0x7e, 0x7f, 0x80, 0x9f, 0xa0, 0xff] {
                for i in 0..fill.len() {
                    let mut t = fill.clone();
                    t[i] = b;
                    prop_assert_eq!(printable_ascii(&t), bytewise(&t));
                }
            }
        }
    }
}
