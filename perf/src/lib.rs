//! orchd-perf: `orchd-load`, an open-loop SSE load generator, and the recorded results
//! under `perf/results/`. Filled by the performance issue.
//!
//! Must not depend on orchd internals: it measures orchd from the outside, over HTTP.
