//! The PyO3 binding: module `hashmatch.server._hashcore`.
//!
//! A list of thin adapters over [`crate::index::Index`]. Rules kept here:
//! arguments are copied into owned buffers before the GIL is released (once,
//! through [`detached`]); core errors become Python exceptions in exactly one
//! place (`From<CoreError> for PyErr`); no panic crosses into Python because
//! the core validates every input and returns errors instead.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::error::CoreError;
use crate::index::{self, Batch, ListConfig, Queries};

impl From<CoreError> for PyErr {
    fn from(err: CoreError) -> PyErr {
        // Every core error is caused by malformed or unknown input.
        PyValueError::new_err(err.to_string())
    }
}

/// The one way this binding leaves the GIL: `f` must own everything it uses.
fn detached<T, F>(py: Python<'_>, f: F) -> T
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    py.detach(f)
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

    fn configure_list(
        &self,
        list_id: i64,
        pdq_threshold: i64,
        pdq_min_quality: i64,
    ) -> Result<(), CoreError> {
        let id = index::list_id(list_id)?;
        let config = ListConfig::new(pdq_threshold, pdq_min_quality)?;
        self.inner.configure_list(id, config);
        Ok(())
    }

    fn drop_list(&self, list_id: i64) -> Result<(), CoreError> {
        self.inner.drop_list(index::list_id(list_id)?);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        py: Python<'_>,
        list_id: i64,
        add_algs: &[u8],
        add_hashes: &[u8],
        add_ids: &[u8],
        del_algs: &[u8],
        del_hashes: &[u8],
    ) -> Result<(), CoreError> {
        let id = index::list_id(list_id)?;
        let batch = Batch::decode(add_algs, add_hashes, add_ids, del_algs, del_hashes)?;
        detached(py, || self.inner.apply(id, &batch))
    }

    fn match_batch(
        &self,
        py: Python<'_>,
        algs: &[u8],
        hashes: &[u8],
        qualities: &[u8],
        max_distances: &[u8],
    ) -> Result<Vec<(u32, u32, u64)>, CoreError> {
        let queries = Queries::decode(algs, hashes, qualities, max_distances)?;
        Ok(detached(py, || self.inner.match_batch(&queries)))
    }

    fn counts(&self, list_id: i64) -> Result<(usize, usize, usize, usize), CoreError> {
        self.inner.counts(index::list_id(list_id)?)
    }

    fn memory_bytes(&self) -> usize {
        self.inner.memory_bytes()
    }
}

#[pymodule]
fn _hashcore(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyIndex>()?;
    Ok(())
}
