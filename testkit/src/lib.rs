//! orchd-testkit: the one test-support set of orchd. Every test that talks to a live
//! orchd uses it: the `orchd-http` integration tests (`http/tests/*.rs`), the behaviour
//! suite and the provider verification (`features/`).
//!
//! - [`sse`]: an incremental Server-Sent Events parser and the [`Event`] it yields;
//!   the one SSE reader, fed by both transports below.
//! - [`frames`]: the frame rules of SPEC section 2 ([`assert_well_formed`]) and the
//!   token helpers ([`tokens`], [`token_text`]).
//! - [`http`]: a blocking HTTP/1.1 client on `std::net` that shows the exact bytes on
//!   the wire, its stream reader, and [`submit`] / [`stream`] / [`submit_and_stream`].
//!   (The suites in `features/` keep their hyper-on-tokio transport, which checks every
//!   answer against the OpenAPI documents, and feed the same parser.)
//! - [`wait`]: [`wait_until`], polling with a deadline that names what it waited for.
//! - [`task`]: request bodies with sensible defaults, fresh ids.
//! - [`fake_engine`]: an upstream engine speaking the OpenAI and llama.cpp streaming
//!   formats, with faults on request.
//! - [`seccomp`]: a real seccomp filter denying io_uring as container runtimes do (also
//!   the `deny-io-uring` wrapper binary).
//!
//! Why a crate of its own: `orchd-features` depends on `orchd-http` (it starts orchd
//! through `orchd_http::serve`), so `orchd-http`'s tests could use it only through a
//! dev-dependency cycle, which compiles `orchd-http` twice. This crate sits below both
//! and must not depend on any orchd crate: it talks HTTP like a user, so a server
//! started in-process (`orchd_http::serve`), as a process, or elsewhere are all the same
//! to it. std, libc, serde_json and uuid only; tokio's timer with the `async` feature.

pub mod fake_engine;
pub mod frames;
pub mod http;
pub mod seccomp;
pub mod sse;
pub mod task;
pub mod wait;

pub use frames::{assert_well_formed, check_well_formed, token_text, tokens};
pub use http::{
    cancel, is_uuid_v4, open_stream, stream, submit, submit_and_stream, try_send, Client, Response,
    SseReader,
};
pub use sse::Event;
pub use task::{task_body, task_request, uuid};
#[cfg(feature = "async")]
pub use wait::wait_until_async;
pub use wait::{try_wait_until, wait_until, Ready};
