//! orchd-benches: criterion benches of the hot primitives and of first-token latency
//! through a live server. The benches are under `benches/`; see `benches/README.md`.
//!
//! Must not be depended on by any production crate.
