//! orchd-features: the behaviour suite of orchd in plain language (cucumber, under
//! `tests/features/`) and the provider verification of `contracts/openapi/*.yaml`, both
//! run against a real orchd on an ephemeral port.
//!
//! This library is what both suites share: a server started in-process through
//! `orchd_http::serve` ([`Orchd`]), an HTTP/1.1 client that also reads Server-Sent Events
//! incrementally ([`Client`], [`SseStream`]), and the OpenAPI documents loaded as
//! validators ([`Contract`]), through which every response the suites see is checked.
//!
//! Must not depend on orchd internals beyond `orchd_http::serve` and its config: the
//! suites talk HTTP like a user.

mod client;
mod contract;
mod server;

pub use client::{Client, Opened, Response, SseEvent, SseStream};
pub use contract::{Contract, Violation};
pub use server::{temp_dir, Orchd};

/// A fresh random UUIDv4 as text, for task and session ids.
pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}
