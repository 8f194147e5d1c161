//! orchd-benches: criterion benches of the hot primitives (frame encoding, admission,
//! queue push/pop, cross-shard hop, first-token and decode latency). Filled by the
//! performance issue.
//!
//! Must not be depended on by any production crate.
