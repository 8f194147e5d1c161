//! orchd-features: the behaviour suite of orchd, in plain language (cucumber), run
//! against a real orchd on an ephemeral port. The contracts issue fills it; until then
//! the foundation's behaviour is covered by `http/tests/`.
//!
//! Must not depend on orchd internals beyond `orchd_http::serve` and its config: the
//! suite talks HTTP like a user.
