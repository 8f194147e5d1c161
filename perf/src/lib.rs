//! orchd-perf: `orchd-load`, an open-loop SSE load generator, and the recorded results
//! under `perf/results/`.
//!
//! Must not depend on orchd internals: it measures orchd from the outside, over HTTP.

pub mod plot;
