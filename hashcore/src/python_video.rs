//! The binding of [`crate::video`]: class `VideoSet` of `hashmatch.server._hashcore`.
//!
//! Frames cross the binding in the packed form of [`video::unpack_frames`].

use pyo3::prelude::*;

use crate::pdq::Scratch;
use crate::simd::Level;
use crate::video::{self, VideoHit, VideoRule};

/// The listed videos of one list, indexed for vPDQ matching. Immutable.
#[pyclass(name = "VideoSet", module = "hashmatch.server._hashcore", frozen)]
struct PyVideoSet {
    inner: video::VideoSet,
}

/// `(id, query_frames, query_total, listed_frames, listed_total, first_ms, last_ms)`.
type HitTuple = (u64, u32, u32, u32, u32, u32, u32);

fn tuple(h: &VideoHit) -> HitTuple {
    (
        h.id,
        h.query_frames,
        h.query_total,
        h.listed_frames,
        h.listed_total,
        h.first_millis,
        h.last_millis,
    )
}

#[pymethods]
impl PyVideoSet {
    /// `videos`: `(id, packed frames)` per listed video.
    #[new]
    fn new(py: Python<'_>, videos: Vec<(u64, Vec<u8>)>, min_quality: u8) -> PyResult<Self> {
        let decoded = videos
            .into_iter()
            .map(|(id, packed)| Ok((id, video::unpack_frames(&packed)?)))
            .collect::<Result<Vec<_>, crate::CoreError>>()?;
        let inner = py.detach(move || video::VideoSet::build(decoded, min_quality));
        Ok(PyVideoSet { inner })
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn frames(&self) -> usize {
        self.inner.frames()
    }

    fn memory_bytes(&self) -> usize {
        self.inner.memory_bytes()
    }

    /// Every listed video sharing a frame with the query within `threshold`.
    fn compare(&self, py: Python<'_>, query: Vec<u8>, threshold: u32) -> PyResult<Vec<HitTuple>> {
        let frames = video::unpack_frames(&query)?;
        let hits = py.detach(|| {
            self.inner.compare(
                Level::current(),
                &frames,
                threshold,
                &mut Scratch::default(),
            )
        });
        Ok(hits.iter().map(tuple).collect())
    }

    /// The listed videos the query matches under the rule.
    /// The minimum quality is the set's own (its videos were prepared with it).
    #[pyo3(signature = (query, threshold=31, query_percent=80, listed_percent=0))]
    fn matches(
        &self,
        py: Python<'_>,
        query: Vec<u8>,
        threshold: u32,
        query_percent: u8,
        listed_percent: u8,
    ) -> PyResult<Vec<HitTuple>> {
        let frames = video::unpack_frames(&query)?;
        let rule = VideoRule {
            threshold,
            min_quality: self.inner.min_quality(),
            query_percent,
            listed_percent,
        };
        let hits = py.detach(|| {
            self.inner
                .matches(Level::current(), &frames, &rule, &mut Scratch::default())
        });
        Ok(hits.iter().map(tuple).collect())
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyVideoSet>()
}
