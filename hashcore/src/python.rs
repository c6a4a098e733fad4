//! The PyO3 binding: module `hashmatch.server._hashcore`.
//!
//! A list of thin adapters over [`crate::index::Index`]. Rules kept here:
//! arguments are copied into owned buffers before the GIL is released (once,
//! through [`detached`]); core errors become Python exceptions in exactly one
//! place (`From<CoreError> for PyErr`); no panic crosses into Python because
//! the core validates every input and returns errors instead.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::changes;
use crate::error::CoreError;
use crate::index::{self, Batch, GroupQueries, ListConfig, ListSnapshot, Queries};
use crate::persist::{self, SegmentInfo};
use crate::verdicts;

impl From<CoreError> for PyErr {
    fn from(err: CoreError) -> PyErr {
        // Every core error is caused by malformed or unknown input.
        PyValueError::new_err(err.to_string())
    }
}

/// The one way this binding leaves the GIL: `f` must own everything it uses,
/// but for the bytes of `bytes` arguments and `&str` arguments (immutable
/// objects the caller keeps alive until the call returns).
fn detached<T, F>(py: Python<'_>, f: F) -> T
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    py.detach(f)
}

thread_local! {
    /// Decoded-query buffers reused by this thread's batch calls (a fresh
    /// multi-megabyte allocation per call costs page faults).
    static QUERIES: std::cell::RefCell<Queries> = std::cell::RefCell::new(Queries::default());
}

/// Copies and validates a query batch into this thread's reusable buffers,
/// then runs `f` on it with the GIL released.
fn with_queries<T: Send>(
    py: Python<'_>,
    args: (&[u8], &[u8], &[u8], &[u8]),
    f: impl FnOnce(&Queries) -> T + Send,
) -> Result<T, CoreError> {
    const KEEP: usize = 1 << 16;
    QUERIES.with(|cell| match cell.try_borrow_mut() {
        Ok(mut q) => {
            q.decode_into(args.0, args.1, args.2, args.3)?;
            let shared: &Queries = &q;
            let out = detached(py, || f(shared));
            if q.keys.capacity() > KEEP {
                *q = Queries::default();
            }
            Ok(out)
        }
        Err(_) => {
            let q = Queries::decode(args.0, args.1, args.2, args.3)?;
            Ok(detached(py, || f(&q)))
        }
    })
}

/// All hash lists of one serving process. Thread-safe.
#[pyclass(name = "Index", module = "hashmatch.server._hashcore", frozen)]
struct PyIndex {
    inner: index::Index,
}

#[pymethods]
impl PyIndex {
    #[new]
    fn new() -> Self {
        PyIndex {
            inner: index::Index::new(),
        }
    }

    #[pyo3(signature = (list_id, pdq_threshold, pdq_min_quality, name=None, exposed_labels=Vec::new(), video_query_percent=80, video_listed_percent=0))]
    #[allow(clippy::too_many_arguments)]
    fn configure_list(
        &self,
        list_id: i64,
        pdq_threshold: i64,
        pdq_min_quality: i64,
        name: Option<&str>,
        exposed_labels: Vec<String>,
        video_query_percent: i64,
        video_listed_percent: i64,
    ) -> Result<(), CoreError> {
        let id = index::list_id(list_id)?;
        let config = ListConfig::new(pdq_threshold, pdq_min_quality)?
            .exposing(&exposed_labels)?
            .with_video(video_query_percent, video_listed_percent)?;
        self.inner.configure_list_named(id, config, name);
        Ok(())
    }

    fn set_list_state(
        &self,
        list_id: i64,
        version: u64,
        quarantined: Vec<String>,
    ) -> Result<(), CoreError> {
        self.inner
            .set_list_state(index::list_id(list_id)?, version, quarantined)
    }

    fn set_policy(
        &self,
        py: Python<'_>,
        tenant: &str,
        all_lists: bool,
        lists: Vec<i64>,
        allow_algs: &[u8],
        allow_slots: &[u8],
    ) -> Result<(), CoreError> {
        let lists = lists
            .into_iter()
            .map(index::list_id)
            .collect::<Result<Vec<u32>, _>>()?;
        let allow = index::decode_keys("allow_algs", "allow_slots", allow_algs, allow_slots)?;
        let tenant = tenant.to_owned();
        detached(py, || {
            self.inner.set_policy(&tenant, all_lists, lists, allow)
        });
        Ok(())
    }

    fn remove_policy(&self, tenant: &str) {
        self.inner.remove_policy(tenant);
    }

    fn take_counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        // Straight from the counts' own arrays to Python strings: a string per
        // count in between was two small heap blocks per count, freed at once,
        // which later large allocations of the match path paid to consolidate.
        let taken = self.inner.take_all_counts();
        PyList::new(py, taken.iter())
    }

    fn reference_bytes(&self, list_id: i64) -> Result<usize, CoreError> {
        self.inner.reference_bytes(index::list_id(list_id)?)
    }

    #[pyo3(signature = (raw, batch, tenant, pdq_paused=false))]
    fn match_request(
        &self,
        py: Python<'_>,
        raw: &[u8],
        batch: bool,
        tenant: &str,
        pdq_paused: bool,
    ) -> PyVerdicts {
        // `raw` is borrowed, not copied (hundreds of KiB per batch): it is the
        // buffer of a `bytes` object (the only type `&[u8]` is extracted from),
        // which is immutable and kept alive by the caller for this whole call,
        // GIL or not. The request keeps no reference to it.
        let inner = detached(py, || {
            self.inner.match_request(raw, batch, tenant, pdq_paused)
        });
        PyVerdicts { inner }
    }

    fn drop_list(&self, list_id: i64) -> Result<(), CoreError> {
        self.inner.drop_list(index::list_id(list_id)?);
        Ok(())
    }

    fn list_snapshot(&self, list_id: i64) -> Result<PyListSnapshot, CoreError> {
        Ok(PyListSnapshot {
            inner: self.inner.list_snapshot(index::list_id(list_id)?)?,
        })
    }

    /// Serves the list from `file` (see `check_list_file`); a file serves once.
    fn install_list(&self, py: Python<'_>, file: &PyCheckedList) -> PyResult<()> {
        let taken = file.inner.lock().map_err(|_| poisoned())?.take();
        let file = taken.ok_or_else(|| PyValueError::new_err("this file was installed already"))?;
        Ok(detached(py, || self.inner.install_list(file))?)
    }

    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (
        list_id, add_algs, add_hashes, add_ids, del_algs, del_hashes,
        ref_ends=None, refs=None, version=None
    ))]
    fn apply(
        &self,
        py: Python<'_>,
        list_id: i64,
        add_algs: &[u8],
        add_hashes: &[u8],
        add_ids: &[u8],
        del_algs: &[u8],
        del_hashes: &[u8],
        ref_ends: Option<&[u8]>,
        refs: Option<&[u8]>,
        version: Option<u64>,
    ) -> Result<(), CoreError> {
        let id = index::list_id(list_id)?;
        let batch = Batch::decode(add_algs, add_hashes, add_ids, del_algs, del_hashes)?
            .with_refs(ref_ends.unwrap_or_default(), refs.unwrap_or_default())?;
        detached(py, || self.inner.apply_with(id, &batch, version))
    }

    fn match_batch(
        &self,
        py: Python<'_>,
        algs: &[u8],
        hashes: &[u8],
        qualities: &[u8],
        max_distances: &[u8],
    ) -> Result<Vec<(u32, u32, u64)>, CoreError> {
        let args = (algs, hashes, qualities, max_distances);
        with_queries(py, args, |q| self.inner.match_batch(q))
    }

    fn match_batch_packed<'py>(
        &self,
        py: Python<'py>,
        algs: &[u8],
        hashes: &[u8],
        qualities: &[u8],
        max_distances: &[u8],
    ) -> Result<Bound<'py, PyBytes>, CoreError> {
        let args = (algs, hashes, qualities, max_distances);
        let packed = with_queries(py, args, |q| {
            index::pack_matches(&self.inner.match_batch(q))
        })?;
        Ok(PyBytes::new(py, &packed))
    }

    fn match_pdq_groups(
        &self,
        py: Python<'_>,
        hashes: &[u8],
        group_sizes: &[u8],
        qualities: &[u8],
        max_distances: &[u8],
    ) -> Result<Vec<(u32, u32, u64)>, CoreError> {
        let groups = GroupQueries::decode(hashes, group_sizes, qualities, max_distances)?;
        Ok(detached(py, || self.inner.match_groups(&groups)))
    }

    fn compact(&self, py: Python<'_>) {
        detached(py, || self.inner.compact());
    }

    fn segments(&self, list_id: i64) -> Result<index::Counts5, CoreError> {
        self.inner.segments(index::list_id(list_id)?)
    }

    fn counts(&self, list_id: i64) -> Result<index::Counts5, CoreError> {
        self.inner.counts(index::list_id(list_id)?)
    }

    fn memory_bytes(&self) -> usize {
        self.inner.memory_bytes()
    }

    fn cross_size(&self) -> (usize, usize, usize) {
        self.inner.cross_size()
    }
}

/// The answer to one match request: its violations, and its response bytes.
#[pyclass(name = "Verdicts", module = "hashmatch.server._hashcore", frozen)]
struct PyVerdicts {
    inner: verdicts::Verdicts,
}

#[pymethods]
impl PyVerdicts {
    #[getter]
    fn violations(&self) -> Vec<(String, String)> {
        let v = &self.inner.request.violations;
        v.iter()
            .map(|v| (v.field.clone(), v.description.clone()))
            .collect()
    }

    #[getter]
    fn items(&self) -> usize {
        self.inner.items()
    }

    #[getter]
    fn cost(&self) -> usize {
        self.inner.cost()
    }

    #[getter]
    fn has_pdq(&self) -> bool {
        self.inner.request.has_pdq
    }

    fn pdq_queries<'py>(&self, py: Python<'py>) -> Vec<(u32, Bound<'py, PyBytes>, bool)> {
        self.inner
            .pdq_queries()
            .into_iter()
            .map(|(item, value, hit)| (item, PyBytes::new(py, &value), hit))
            .collect()
    }

    fn video_queries<'py>(
        &self,
        py: Python<'py>,
        limit: usize,
    ) -> Vec<(u32, Vec<Bound<'py, PyBytes>>, bool)> {
        self.inner
            .video_queries(limit)
            .into_iter()
            .map(|(item, frames, matched)| {
                let frames = frames.iter().map(|f| PyBytes::new(py, f)).collect();
                (item, frames, matched)
            })
            .collect()
    }

    #[pyo3(signature = (refuse_from=-1, retry_after_ms=0))]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        refuse_from: i64,
        retry_after_ms: u64,
    ) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.encode(refuse_from, retry_after_ms))
    }
}

/// One `ApplyChangesRequest`, read from its wire bytes and checked (see
/// [`crate::changes`]): the store takes its packed buffers as they are.
fn segment_info(
    list_id: i64,
    version: u64,
    epoch: u64,
    digest: &[u8],
) -> Result<SegmentInfo, CoreError> {
    let digest: [u8; 16] = digest.try_into().map_err(|_| CoreError::LengthMismatch {
        field: "digest",
        expected: 16,
        actual: digest.len(),
    })?;
    Ok(SegmentInfo {
        list_id: index::list_id(list_id)?,
        version,
        epoch,
        digest,
    })
}

/// One list as served at one moment, to write to a segment file.
#[pyclass(name = "ListSnapshot", module = "hashmatch.server._hashcore", frozen)]
struct PyListSnapshot {
    inner: ListSnapshot,
}

#[pymethods]
impl PyListSnapshot {
    #[getter]
    fn version(&self) -> u64 {
        self.inner.version()
    }

    fn digest<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let d = detached(py, || self.inner.digest());
        PyBytes::new(py, &d)
    }

    fn save(
        &self,
        py: Python<'_>,
        path: std::path::PathBuf,
        list_id: i64,
        version: u64,
        epoch: u64,
        digest: &[u8],
    ) -> Result<u64, CoreError> {
        let info = segment_info(list_id, version, epoch, digest)?;
        detached(py, || self.inner.save(&path, &info))
    }
}

/// A segment file mapped and checked whole, not yet served (`Index.install_list`).
#[pyclass(name = "CheckedList", module = "hashmatch.server._hashcore", frozen)]
struct PyCheckedList {
    inner: std::sync::Mutex<Option<index::CheckedList>>,
}

fn poisoned() -> PyErr {
    PyValueError::new_err("a checked file was left half taken")
}

/// Maps the segment file at `path` and checks it whole: it must hold this list at
/// this version, epoch and digest; ValueError / OSError say why not.
#[pyfunction]
fn check_list_file(
    py: Python<'_>,
    path: std::path::PathBuf,
    list_id: i64,
    version: u64,
    epoch: u64,
    digest: &[u8],
) -> Result<PyCheckedList, CoreError> {
    let info = segment_info(list_id, version, epoch, digest)?;
    let checked = detached(py, || index::CheckedList::open(&path, &info))?;
    Ok(PyCheckedList {
        inner: std::sync::Mutex::new(Some(checked)),
    })
}

#[pyfunction]
fn read_segment_info<'py>(
    py: Python<'py>,
    path: std::path::PathBuf,
) -> Result<(u32, u64, u64, Bound<'py, PyBytes>), CoreError> {
    let info = persist::read_info(&path)?;
    Ok((
        info.list_id,
        info.version,
        info.epoch,
        PyBytes::new(py, &info.digest),
    ))
}

#[pyclass(name = "Changes", module = "hashmatch.server._hashcore", frozen)]
struct PyChanges {
    inner: changes::Changes,
}

#[pymethods]
impl PyChanges {
    #[getter]
    fn list(&self) -> &str {
        &self.inner.list
    }

    #[getter]
    fn batch_id(&self) -> &str {
        &self.inner.batch_id
    }

    #[getter]
    fn expected_version(&self) -> Option<u64> {
        self.inner.expected_version
    }

    #[getter]
    fn fingerprint(&self) -> [u8; 16] {
        self.inner.fingerprint.to_be_bytes()
    }

    #[getter]
    fn violations(&self) -> Vec<(String, String)> {
        let v = &self.inner.violations;
        v.iter()
            .map(|v| (v.field.clone(), v.description.clone()))
            .collect()
    }

    #[getter]
    fn violation_count(&self) -> usize {
        self.inner.violation_count
    }

    #[getter]
    fn n_upserts(&self) -> usize {
        self.inner.upserts.len()
    }

    #[getter]
    fn n_retirements(&self) -> usize {
        self.inner.retirements.len()
    }

    /// (algs, slots) of the upserts, in the index's packed form.
    fn upsert_packed<'py>(&self, py: Python<'py>) -> (Bound<'py, PyBytes>, Bound<'py, PyBytes>) {
        let p = &self.inner.upserts;
        (PyBytes::new(py, &p.algs), PyBytes::new(py, &p.slots))
    }

    fn retire_packed<'py>(&self, py: Python<'py>) -> (Bound<'py, PyBytes>, Bound<'py, PyBytes>) {
        let p = &self.inner.retirements;
        (PyBytes::new(py, &p.algs), PyBytes::new(py, &p.slots))
    }

    /// Store keys of the upserts: `prefix` + algorithm byte + digest.
    fn upsert_keys<'py>(&self, py: Python<'py>, prefix: &[u8]) -> Vec<Bound<'py, PyBytes>> {
        keys(py, prefix, &self.inner.upserts)
    }

    fn retire_keys<'py>(&self, py: Python<'py>, prefix: &[u8]) -> Vec<Bound<'py, PyBytes>> {
        keys(py, prefix, &self.inner.retirements)
    }

    /// `refs` rows for the upserts as new entries: (list id u32 BE + entry id u64 BE,
    /// UTF-8 reference ID), in id order.
    fn ref_pairs<'py>(
        &self,
        py: Python<'py>,
        list_id: u32,
        first_id: u64,
    ) -> Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
        let mut key = [0u8; 12];
        key[..4].copy_from_slice(&list_id.to_be_bytes());
        (0..self.inner.upserts.len())
            .map(|i| {
                key[4..].copy_from_slice(&(first_id + i as u64).to_be_bytes());
                (
                    PyBytes::new(py, &key),
                    PyBytes::new(py, self.inner.reference(i)),
                )
            })
            .collect()
    }

    /// The change log's reference columns: u32 LE end offsets, then the UTF-8 bytes.
    fn reference_columns<'py>(
        &self,
        py: Python<'py>,
    ) -> (Bound<'py, PyBytes>, Bound<'py, PyBytes>) {
        let ends: Vec<u8> = self
            .inner
            .ref_ends
            .iter()
            .flat_map(|end| end.to_le_bytes())
            .collect();
        (PyBytes::new(py, &ends), PyBytes::new(py, &self.inner.refs))
    }

    /// The UTF-8 reference IDs of the upserts.
    fn references<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyBytes>> {
        (0..self.inner.upserts.len())
            .map(|i| PyBytes::new(py, self.inner.reference(i)))
            .collect()
    }

    /// The list-digest term of upsert `i`, and the sum of all of them (mod 2^128).
    fn term(&self, i: usize) -> PyResult<u128> {
        if i >= self.inner.upserts.len() {
            return Err(PyValueError::new_err("upsert index out of range"));
        }
        Ok(self.inner.term(i))
    }

    fn terms_sum(&self) -> u128 {
        self.inner.terms_sum()
    }
}

/// `entries` rows of a group of batches' upserts as new entries, in key order:
/// (`prefix` + algorithm + digest, entry id as u64 LE), the upserts numbered from
/// `first_id` in batch order. An iterator: the rows are made one at a time as LMDB
/// takes them, so a group of millions holds 41 bytes per entry here, not a Python
/// tuple of two bytes objects per entry.
///
/// Why key order: entries are keyed by hash, so each batch's inserts land on pages all
/// over the B-tree; in key order across a whole group each page is written once.
#[pyclass(name = "EntryPairs", module = "hashmatch.server._hashcore")]
struct PyEntryPairs {
    prefix: Vec<u8>,
    /// Algorithm byte then digest, zero-padded: all digests of one algorithm have one
    /// length, so the padded order is the order of the keys.
    rows: Vec<([u8; 33], u64)>,
    next: usize,
}

#[pymethods]
impl PyEntryPairs {
    fn __len__(&self) -> usize {
        self.rows.len()
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(
        &mut self,
        py: Python<'py>,
    ) -> Option<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
        let (padded, id) = self.rows.get(self.next)?;
        self.next += 1;
        let len = 1 + changes::digest_len(u32::from(padded[0]));
        let mut key = Vec::with_capacity(self.prefix.len() + len);
        key.extend_from_slice(&self.prefix);
        key.extend_from_slice(&padded[..len]);
        Some((PyBytes::new(py, &key), PyBytes::new(py, &id.to_le_bytes())))
    }
}

/// The `entries` rows of `batches`' upserts as new entries (see [`PyEntryPairs`]).
#[pyfunction]
fn entry_pairs(
    py: Python<'_>,
    batches: Vec<PyRef<'_, PyChanges>>,
    prefix: Vec<u8>,
    first_id: u64,
) -> PyEntryPairs {
    let groups: Vec<&changes::Packed> = batches.iter().map(|b| &b.inner.upserts).collect();
    let rows = detached(py, || {
        let mut rows = Vec::with_capacity(groups.iter().map(|p| p.len()).sum());
        let mut id = first_id;
        for packed in groups {
            for i in 0..packed.len() {
                let mut padded = [0u8; 33];
                let digest = packed.digest(i);
                padded[0] = packed.algs[i];
                padded[1..=digest.len()].copy_from_slice(digest);
                rows.push((padded, id));
                id += 1;
            }
        }
        rows.sort_unstable();
        rows
    });
    PyEntryPairs {
        prefix,
        rows,
        next: 0,
    }
}

fn keys<'py>(py: Python<'py>, prefix: &[u8], packed: &changes::Packed) -> Vec<Bound<'py, PyBytes>> {
    let mut key = Vec::with_capacity(prefix.len() + 33);
    (0..packed.len())
        .map(|i| {
            key.clear();
            key.extend_from_slice(prefix);
            key.push(packed.algs[i]);
            key.extend_from_slice(packed.digest(i));
            PyBytes::new(py, &key)
        })
        .collect()
}

/// Reads an `ApplyChangesRequest` from its wire bytes; ValueError if undecodable.
#[pyfunction]
fn parse_changes(py: Python<'_>, raw: Vec<u8>, pdq_min_quality: u8) -> PyResult<PyChanges> {
    let parsed = detached(py, move || changes::parse_changes(&raw, pdq_min_quality));
    parsed
        .map(|inner| PyChanges { inner })
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Protobuf wire bytes of change-log upsert columns as repeated `Entry` field `field`.
#[pyfunction]
fn encode_entries<'py>(
    py: Python<'py>,
    field: u32,
    algs: &[u8],
    slots: &[u8],
    ref_ends: &[u8],
    refs: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    changes::encode_entries(field, algs, slots, ref_ends, refs)
        .map(|raw| PyBytes::new(py, &raw))
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Protobuf wire bytes of packed hashes as repeated `Hash` field `field`.
#[pyfunction]
fn encode_hashes<'py>(
    py: Python<'py>,
    field: u32,
    algs: &[u8],
    slots: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    changes::encode_hashes(field, algs, slots)
        .map(|raw| PyBytes::new(py, &raw))
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// True for the PDQ hash of a flat or blank image (see [`changes::is_degenerate_pdq`]).
#[pyfunction]
fn is_degenerate_pdq(value: &[u8]) -> bool {
    changes::is_degenerate_pdq(value)
}

/// The list-digest term of one entry (for entries the store handles one by one).
#[pyfunction]
fn entry_term(alg: u8, digest: &[u8], reference: &[u8]) -> u128 {
    changes::entry_term(alg, digest, reference)
}

/// The `list` field of an `ApplyChangesRequest`'s wire bytes; ValueError if undecodable.
#[pyfunction]
fn request_list(raw: &[u8]) -> PyResult<String> {
    changes::request_list(raw).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Sum of the digest terms of stored entries (store keys from byte `skip`: algorithm,
/// digest) with their references, in one call; ValueError on mismatched input.
#[pyfunction]
fn stored_terms_sum(keys: Vec<Vec<u8>>, refs: Vec<Vec<u8>>, skip: usize) -> PyResult<u128> {
    changes::stored_terms_sum(&keys, &refs, skip)
        .ok_or_else(|| PyValueError::new_err("keys and references do not pair up"))
}

/// The label keys an entry may carry, in the order of their stored form.
#[pyfunction]
fn label_keys() -> Vec<&'static str> {
    crate::labels::KEYS.to_vec()
}

/// Caps the threads one large batch call uses (process-wide); 0 = every core.
#[pyfunction]
fn set_max_threads(n: usize) {
    index::set_max_threads(n);
}

/// CPU level of the hot loops: "avx512", "avx2", "popcnt" or "portable".
#[pyfunction]
fn cpu_level() -> &'static str {
    match crate::simd::Level::current() {
        crate::simd::Level::Avx512 => "avx512",
        crate::simd::Level::Avx2 => "avx2",
        crate::simd::Level::Popcnt => "popcnt",
        crate::simd::Level::Portable => "portable",
    }
}

#[pymodule]
fn _hashcore(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyIndex>()?;
    m.add_class::<PyVerdicts>()?;
    m.add_function(wrap_pyfunction!(set_max_threads, m)?)?;
    m.add_function(wrap_pyfunction!(cpu_level, m)?)?;
    m.add_class::<PyChanges>()?;
    m.add_class::<PyEntryPairs>()?;
    m.add_function(wrap_pyfunction!(entry_pairs, m)?)?;
    m.add_class::<PyListSnapshot>()?;
    m.add_function(wrap_pyfunction!(read_segment_info, m)?)?;
    m.add_class::<PyCheckedList>()?;
    m.add_function(wrap_pyfunction!(check_list_file, m)?)?;
    m.add_function(wrap_pyfunction!(parse_changes, m)?)?;
    m.add_function(wrap_pyfunction!(entry_term, m)?)?;
    m.add_function(wrap_pyfunction!(request_list, m)?)?;
    m.add_function(wrap_pyfunction!(stored_terms_sum, m)?)?;
    m.add_function(wrap_pyfunction!(is_degenerate_pdq, m)?)?;
    m.add_function(wrap_pyfunction!(encode_entries, m)?)?;
    m.add_function(wrap_pyfunction!(encode_hashes, m)?)?;
    m.add_function(wrap_pyfunction!(label_keys, m)?)?;
    Ok(())
}
