//! orchd-features: the behaviour suite of orchd in plain language (cucumber, under
//! `tests/features/`) and the provider verification of `contracts/openapi/*.yaml`, both
//! run against a real orchd on an ephemeral port.
//!
//! This library is what both suites share beyond the test support of every orchd test
//! (`orchd_testkit`: the SSE parser, the frame rules, `wait_until`, task bodies): a
//! server started in-process through `orchd_http::serve` ([`Orchd`]), an async
//! HTTP/1.1 client whose streams feed the shared SSE parser ([`Client`], [`SseStream`]),
//! and the OpenAPI documents loaded as validators ([`Contract`]), through which every
//! response the suites see is checked.
//!
//! Must not depend on orchd internals beyond `orchd_http::serve` and its config: the
//! suites talk HTTP like a user.

mod client;
mod contract;
mod server;

pub use client::{Client, Opened, Response, SseStream};
pub use contract::{Contract, Violation};
pub use orchd_testkit::{uuid, Event};
pub use server::{temp_dir, Orchd};
