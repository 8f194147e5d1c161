//! Handlers, one module per resource.

pub(crate) mod capabilities;
pub(crate) mod ops;
