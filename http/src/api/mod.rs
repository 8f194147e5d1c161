//! Handlers, one module per resource.

pub(crate) mod artifacts;
pub(crate) mod capabilities;
pub(crate) mod metrics;
pub(crate) mod openai;
pub(crate) mod ops;
pub(crate) mod pools;
pub(crate) mod sessions;
pub(crate) mod tasks;
