//! orchd-engine: the domain of orchd, free of any runtime.
//!
//! Tasks and their validation, the error taxonomy (one `ErrorKind` plus the class of
//! response it maps to), the typed configuration with its loader and cross-field
//! checks, and (as the data plane grows) queues, admission, sessions and the SSE frame
//! encoder. Everything here is plain synchronous Rust, driven directly by unit tests and
//! criterion benches.
//!
//! Must not depend on: glommio, hyper, tokio, or anything else that owns threads or
//! sockets. The Cargo graph enforces it: this crate's only dependencies are serde-level.

pub mod admission;
pub mod artifact;
pub mod config;
pub mod error;
pub mod eta;
pub mod types;

pub use config::Config;
pub use error::{parse_json, ApiError, EngineError, ErrorClass, ErrorKind, Policy};
pub use types::{CancelReason, Engine, ModelState, Priority, Workload};
pub mod frame;
pub mod generation;
pub mod mock;
pub mod task;
pub mod tenant;
