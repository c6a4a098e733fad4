//! The answer to one match request, and its wire encoding.
//!
//! [`Verdicts`] holds what the index found for a request (the references of
//! each item, in the order the hits came out) and writes the
//! `MatchResponse` / `MatchBatchResponse` bytes. Field numbers follow
//! `proto/hashmatch/v1/match.proto` and `google/rpc/{status,error_details}.proto`;
//! proto3 defaults are omitted, as the protobuf runtime omits them.
//!
//! Encoding counts match events into [`Counts`] (once per `Verdicts`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::changes::{Violation, MAX_VIOLATIONS};
use crate::index::Key;
use crate::labels;
use crate::pdq::pdq_to_bytes;
use crate::proto::{len_field_size, put_len, put_str, put_uint, put_varint, varint_len};
use crate::request::Request;

pub const VERDICT_NO_MATCH: u64 = 1;
pub const VERDICT_MATCH: u64 = 2;
const CODE_INVALID_ARGUMENT: u64 = 3;
const CODE_RESOURCE_EXHAUSTED: u64 = 8;
const DOMAIN: &[u8] = b"hashmatch.v1";
pub const PAUSED_MESSAGE: &str =
    "PDQ queries from this tenant are paused: its recent queries look like a probe of a listed hash";
const TYPE_ERROR_INFO: &[u8] = b"type.googleapis.com/google.rpc.ErrorInfo";
const TYPE_BAD_REQUEST: &[u8] = b"type.googleapis.com/google.rpc.BadRequest";
const TYPE_RETRY_INFO: &[u8] = b"type.googleapis.com/google.rpc.RetryInfo";

/// One reference answered for one item.
#[derive(Debug, Clone)]
pub struct Answer {
    pub item: u32,
    pub list_id: u32,
    pub list_version: u64,
    pub list_name: Arc<str>,
    /// `Verdicts::texts[reference.0..reference.1]`.
    pub reference: (u32, u32),
    /// `Verdicts::texts[labels.0..labels.1]`: the exposed labels, in their
    /// stored form (see [`crate::labels`]); empty when none are shown.
    pub labels: (u32, u32),
    /// For a video query: the first and last timestamp (ms) of its matching frames.
    pub segment: Option<(u32, u32)>,
}

/// What one request gets: its items' references, ready to encode.
pub struct Verdicts {
    pub request: Request,
    pub tenant: Box<str>,
    pub pdq_paused: bool,
    /// In item order; one per (item, list, reference), first hit first.
    pub answers: Vec<Answer>,
    /// Reference IDs of `answers`, concatenated.
    pub texts: String,
    /// Per query: it produced at least one hit served to this tenant (empty
    /// when nothing was hit).
    pub served: Vec<bool>,
    counts: Arc<Counts>,
    counted: AtomicBool,
}

impl Verdicts {
    pub fn new(request: Request, tenant: &str, pdq_paused: bool, counts: Arc<Counts>) -> Verdicts {
        Verdicts {
            request,
            tenant: tenant.into(),
            pdq_paused,
            answers: Vec::new(),
            texts: String::new(),
            served: Vec::new(),
            counts,
            counted: AtomicBool::new(false),
        }
    }

    pub fn reference(&self, a: &Answer) -> &str {
        self.texts
            .get(a.reference.0 as usize..a.reference.1 as usize)
            .unwrap_or("")
    }

    /// The labels answer `a` shows, in their stored form.
    pub fn labels(&self, a: &Answer) -> &str {
        self.texts
            .get(a.labels.0 as usize..a.labels.1 as usize)
            .unwrap_or("")
    }

    /// Items of the request (0 when the call itself was refused unread).
    pub fn items(&self) -> usize {
        self.request.items.len()
    }

    /// What the request costs a tenant's rate limit: its items, a video item counting
    /// one per frame searched (each frame is a PDQ search, as an image item is).
    pub fn cost(&self) -> usize {
        let frames: usize = self
            .request
            .videos
            .iter()
            .map(|v| v.frames.len().saturating_sub(1))
            .sum();
        self.items() + frames
    }

    /// `(item, frames, matched)` of every video query, for probe detection: at most
    /// `limit` of its frames (spread over the whole video), and whether the item was
    /// answered a video match.
    pub fn video_queries(&self, limit: usize) -> Vec<(u32, Vec<[u8; 32]>, bool)> {
        self.request
            .videos
            .iter()
            .map(|v| {
                let step = v.frames.len().div_ceil(limit.max(1)).max(1);
                let frames = v.frames.iter().step_by(step).map(|f| pdq_to_bytes(&f.pdq));
                let matched = self
                    .answers
                    .iter()
                    .any(|a| a.item == v.owner && a.segment.is_some());
                (v.owner, frames.collect(), matched)
            })
            .collect()
    }

    /// `(item, PDQ value, served hit)` of every PDQ hash searched.
    pub fn pdq_queries(&self) -> Vec<(u32, [u8; 32], bool)> {
        let q = &self.request.queries;
        q.keys
            .iter()
            .zip(&self.request.pdq_query)
            .filter_map(|(key, &query)| match key {
                Key::Pdq(h) => Some((
                    self.request.owners[query as usize],
                    pdq_to_bytes(h),
                    self.served.get(query as usize).copied().unwrap_or(false),
                )),
                _ => None,
            })
            .collect()
    }

    /// The response bytes: a `MatchResponse` for a single request, a
    /// `MatchBatchResponse` for a batch (empty when the whole call was
    /// refused: the caller answers with `violations`). PDQ-bearing items
    /// with index `>= refuse_from` (when `refuse_from >= 0`), and all of them
    /// when PDQ is paused, get a RESOURCE_EXHAUSTED error carrying
    /// `retry_after_ms`. The first call counts the match events answered.
    pub fn encode(&self, refuse_from: i64, retry_after_ms: u64) -> Vec<u8> {
        let req = &self.request;
        if req.batch && !req.violations.is_empty() {
            return Vec::new();
        }
        let refuse_from = if self.pdq_paused {
            0
        } else if refuse_from >= 0 {
            usize::try_from(refuse_from).unwrap_or(usize::MAX)
        } else {
            usize::MAX
        };
        let count = !self.counted.swap(true, Ordering::Relaxed);
        let now = if count && !self.answers.is_empty() {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        } else {
            0.0
        };
        let mut paused_status: Vec<u8> = Vec::new();
        let mut out =
            Vec::with_capacity(req.items.len() * 8 + req.ids.len() + self.answers.len() * 48);
        let mut body = Vec::new();
        // (list, reference) of each answer written, counted at the end in one go.
        let mut counted: Vec<(u32, &str)> = Vec::new();
        let mut next = 0usize; // first answer not yet written
        for (i, item) in req.items.iter().enumerate() {
            let id = req.item_id(i);
            let start = next;
            while next < self.answers.len() && self.answers[next].item as usize == i {
                next += 1;
            }
            let answers = &self.answers[start..next];
            if let Some(violations) = req.item_errors(i) {
                body.clear();
                put_str(1, id, &mut body);
                put_len(4, &invalid_status(violations), &mut body);
            } else if item.has_pdq && i >= refuse_from {
                if paused_status.is_empty() {
                    paused_status = paused_status_bytes(retry_after_ms);
                }
                body.clear();
                put_str(1, id, &mut body);
                put_len(4, &paused_status, &mut body);
            } else if answers.is_empty() && req.batch && !id.is_empty() && id.len() < 124 {
                // The common case, in one go: `results` (1) holding `item_id` (1,
                // one-byte length) and `verdict` (2) NO_MATCH; under 128 bytes.
                let len = id.len() as u8;
                out.extend_from_slice(&[0x0a, len + 4, 0x0a, len]);
                out.extend_from_slice(id);
                out.extend_from_slice(&[0x10, VERDICT_NO_MATCH as u8]);
                continue;
            } else if answers.is_empty() {
                // Written in place.
                let size = if id.is_empty() {
                    0
                } else {
                    len_field_size(id.len())
                } + 2;
                if req.batch {
                    out.push(0x0a);
                    put_varint(size as u64, &mut out);
                }
                put_str(1, id, &mut out);
                out.extend_from_slice(&[0x10, VERDICT_NO_MATCH as u8]);
                continue;
            } else {
                body.clear();
                put_str(1, id, &mut body);
                put_uint(2, VERDICT_MATCH, &mut body);
                for a in answers {
                    let reference = self.reference(a).as_bytes();
                    let name = a.list_name.as_bytes();
                    let shown = self.labels(a);
                    let segment = a.segment.map(|(first, last)| {
                        let mut msg = Vec::with_capacity(12);
                        put_uint(1, u64::from(first), &mut msg);
                        put_uint(2, u64::from(last), &mut msg);
                        msg
                    });
                    let size = segment.as_ref().map_or(0, |m| len_field_size(m.len()))
                        + str_size(name)
                        + str_size(reference)
                        + if a.list_version == 0 {
                            0
                        } else {
                            1 + varint_len(a.list_version)
                        }
                        + labels::pairs(shown)
                            .map(|(k, v)| len_field_size(label_entry_size(k, v)))
                            .sum::<usize>();
                    body.push(3 << 3 | 2);
                    put_varint(size as u64, &mut body);
                    put_str(1, name, &mut body);
                    put_str(2, reference, &mut body);
                    put_uint(3, a.list_version, &mut body);
                    // map<string, string> labels = 4: one entry message per label.
                    for (k, v) in labels::pairs(shown) {
                        body.push(4 << 3 | 2);
                        put_varint(label_entry_size(k, v) as u64, &mut body);
                        put_str(1, k.as_bytes(), &mut body);
                        put_str(2, v.as_bytes(), &mut body);
                    }
                    if let Some(msg) = &segment {
                        // VideoSegment video_segment = 5 (present even when empty).
                        put_len(5, msg, &mut body);
                    }
                    if count {
                        counted.push((a.list_id, self.reference(a)));
                    }
                }
            }
            if req.batch {
                put_len(1, &body, &mut out);
            } else {
                out.extend_from_slice(&body);
            }
        }
        self.counts.add_all(&self.tenant, &counted, now);
        out
    }
}

/// Bytes of one `labels` map entry message (key 1, value 2).
fn label_entry_size(key: &str, value: &str) -> usize {
    str_size(key.as_bytes()) + str_size(value.as_bytes())
}

fn str_size(s: &[u8]) -> usize {
    if s.is_empty() {
        0
    } else {
        len_field_size(s.len())
    }
}

fn any(type_url: &[u8], value: &[u8], out: &mut Vec<u8>) {
    let mut msg = Vec::with_capacity(type_url.len() + value.len() + 8);
    put_len(1, type_url, &mut msg);
    put_str(2, value, &mut msg);
    put_len(3, &msg, out);
}

fn error_info(reason: &[u8]) -> Vec<u8> {
    let mut info = Vec::new();
    put_str(1, reason, &mut info);
    put_str(2, DOMAIN, &mut info);
    info
}

/// `google.rpc.Status` of an invalid item, as `errors.invalid(...).to_status()`.
pub fn invalid_status(violations: &[Violation]) -> Vec<u8> {
    let mut status = Vec::new();
    put_uint(1, CODE_INVALID_ARGUMENT, &mut status);
    if let Some(first) = violations.first() {
        let mut message = format!("invalid field {}: {}", first.field, first.description);
        if violations.len() > 1 {
            message.push_str(&format!(" (and {} more)", violations.len() - 1));
        }
        put_str(2, message.as_bytes(), &mut status);
    }
    any(
        TYPE_ERROR_INFO,
        &error_info(b"ERROR_REASON_INVALID_FIELD"),
        &mut status,
    );
    let mut bad = Vec::new();
    for v in violations.iter().take(MAX_VIOLATIONS) {
        let mut fv = Vec::with_capacity(v.field.len() + v.description.len() + 6);
        put_str(1, v.field.as_bytes(), &mut fv);
        put_str(2, v.description.as_bytes(), &mut fv);
        put_len(1, &fv, &mut bad);
    }
    if !bad.is_empty() {
        any(TYPE_BAD_REQUEST, &bad, &mut status);
    }
    status
}

/// `google.rpc.Status` of a paused tenant's PDQ query.
pub fn paused_status_bytes(retry_after_ms: u64) -> Vec<u8> {
    let mut status = Vec::new();
    put_uint(1, CODE_RESOURCE_EXHAUSTED, &mut status);
    put_str(2, PAUSED_MESSAGE.as_bytes(), &mut status);
    any(
        TYPE_ERROR_INFO,
        &error_info(b"ERROR_REASON_RATE_LIMITED"),
        &mut status,
    );
    let mut duration = Vec::new();
    put_uint(1, retry_after_ms / 1000, &mut duration);
    put_uint(2, (retry_after_ms % 1000) * 1_000_000, &mut duration);
    let mut retry = Vec::new();
    put_len(1, &duration, &mut retry); // a set message field, even when empty
    any(TYPE_RETRY_INFO, &retry, &mut status);
    status
}

/// One counted (tenant, list, reference): matches and the time of the last.
struct Counted {
    tenant: Arc<str>,
    list_id: u32,
    /// `Shard::text[reference.0..reference.1]`.
    reference: (u32, u32),
    matches: u64,
    last: f64,
    /// The next counted of the same key in `Shard::counted` (a key collision),
    /// or `NONE`.
    next: u32,
}

const NONE: u32 = u32::MAX;

const SHARDS: usize = 16;

/// Keys of [`Counts`] are already XXH3 hashes: used as they are.
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// The counts of one shard, in three flat arrays rather than one allocation
/// per count: a request answering thousands of hits adds thousands of counts.
#[derive(Default)]
struct Shard {
    /// Key → the first counted of that key in `counted`.
    first: HashMap<u64, u32, std::hash::BuildHasherDefault<KeyHasher>>,
    counted: Vec<Counted>,
    /// The references of `counted`, concatenated.
    text: String,
}

impl Shard {
    /// An empty shard with room for as many counts as `self` holds: counts
    /// come at a steady rate between takes, so the next period needs about as
    /// many, without growing (rehashing) its arrays step by step.
    fn sized_like(&self) -> Shard {
        Shard {
            first: HashMap::with_capacity_and_hasher(self.first.len(), Default::default()),
            counted: Vec::with_capacity(self.counted.len()),
            text: String::with_capacity(self.text.len()),
        }
    }

    fn reference(&self, c: &Counted) -> &str {
        self.text
            .get(c.reference.0 as usize..c.reference.1 as usize)
            .unwrap_or("")
    }
}

/// Match events per (tenant, list, reference), until taken. Sharded so
/// concurrent encoders rarely meet on a lock.
pub struct Counts {
    shards: Vec<Mutex<Shard>>,
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }
}

impl Counts {
    /// Counts one match of each `(list_id, reference)` of `matches` for
    /// `tenant` at `now`: each shard locked once, the tenant copied at most once.
    pub fn add_all(&self, tenant: &str, matches: &[(u32, &str)], now: f64) {
        if matches.is_empty() {
            return;
        }
        let seed = xxh3_64(tenant.as_bytes());
        let keyed: Vec<(u64, u32, &str)> = matches
            .iter()
            .map(|&(list_id, reference)| {
                let key = xxh3_64_with_seed(
                    reference.as_bytes(),
                    seed ^ u64::from(list_id).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                );
                (key, list_id, reference)
            })
            .collect();
        let shard_of = |key: u64| (key >> 60) as usize % SHARDS;
        // Grouped by shard: a counting sort (a comparison sort of thousands
        // of counts showed in the profile of a batch with hits).
        let mut starts = [0usize; SHARDS + 1];
        for e in &keyed {
            starts[shard_of(e.0) + 1] += 1;
        }
        for i in 0..SHARDS {
            starts[i + 1] += starts[i];
        }
        let mut grouped = vec![(0u64, 0u32, ""); keyed.len()];
        for &e in &keyed {
            let slot = &mut starts[shard_of(e.0)];
            grouped[*slot] = e;
            *slot += 1;
        }
        let keyed = grouped;
        let mut shared_tenant: Option<Arc<str>> = None;
        for group in keyed.chunk_by(|a, b| shard_of(a.0) == shard_of(b.0)) {
            let shard = &self.shards[shard_of(group[0].0)];
            let mut guard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let sh = &mut *guard;
            for &(key, list_id, reference) in group {
                let head = sh.first.get(&key).copied().unwrap_or(NONE);
                let mut at = head;
                while at != NONE {
                    let c = &sh.counted[at as usize];
                    if c.list_id == list_id && &*c.tenant == tenant && sh.reference(c) == reference
                    {
                        break;
                    }
                    at = c.next;
                }
                if at != NONE {
                    let c = &mut sh.counted[at as usize];
                    c.matches += 1;
                    c.last = c.last.max(now);
                    continue;
                }
                if sh.counted.len() >= NONE as usize
                    || sh.text.len() + reference.len() > u32::MAX as usize
                {
                    // 4 GiB of references in one period: the rest go uncounted.
                    continue;
                }
                let index = sh.counted.len() as u32;
                let start = sh.text.len() as u32;
                sh.text.push_str(reference);
                sh.counted.push(Counted {
                    tenant: Arc::clone(shared_tenant.get_or_insert_with(|| tenant.into())),
                    list_id,
                    reference: (start, sh.text.len() as u32),
                    matches: 1,
                    last: now,
                    next: head,
                });
                sh.first.insert(key, index);
            }
        }
    }

    /// Every count, cleared: `(tenant, list_id, reference, matches, last unix time)`.
    pub fn take(&self) -> Vec<(String, u32, String, u64, f64)> {
        self.take_all()
            .iter()
            .map(|(tenant, list_id, reference, matches, last)| {
                (
                    tenant.to_owned(),
                    list_id,
                    reference.to_owned(),
                    matches,
                    last,
                )
            })
            .collect()
    }

    /// Every count, cleared, as it was kept: read with [`TakenCounts::iter`]
    /// without a string allocated per count.
    pub fn take_all(&self) -> TakenCounts {
        TakenCounts {
            shards: self
                .shards
                .iter()
                .map(|shard| {
                    let mut guard = shard.lock().unwrap_or_else(|e| e.into_inner());
                    let fresh = guard.sized_like();
                    std::mem::replace(&mut *guard, fresh)
                })
                .collect(),
        }
    }
}

/// Counts taken from [`Counts`].
pub struct TakenCounts {
    shards: Vec<Shard>,
}

impl TakenCounts {
    /// `(tenant, list_id, reference, matches, last unix time)` of every count.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32, &str, u64, f64)> {
        self.shards.iter().flat_map(|sh| {
            sh.counted
                .iter()
                .map(move |c| (&*c.tenant, c.list_id, sh.reference(c), c.matches, c.last))
        })
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|sh| sh.counted.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
