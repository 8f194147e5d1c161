//! The built-in mock engine: deterministic tokens ([`MockTokens`]) paced like a real
//! engine (`ttft_ms` before the first, `tpot_ms` between tokens, on the shard's timer
//! grid), faults on request, and model loads that take `load_ms` (a model named
//! `fail:...` cannot be loaded).

use std::borrow::Cow;
use std::future::pending;
use std::time::{Duration, Instant};

use uuid::Uuid;

use orchd_engine::config::AdapterConfig;
use orchd_engine::generation::{Generation, Input};
use orchd_engine::mock::{embedding, MockTokens, EMBEDDING_DIMENSIONS};
use orchd_engine::EngineError;

use super::{EngineAdapter, Health, Piece, TokenStream, Usage};
use crate::rt;

/// Tokens produced back to back (tpot 0) before the stream lets the shard's other
/// tasks run.
const BURST: u32 = 16;

pub struct MockEngine {
    ttft: Duration,
    tpot: Duration,
    load: Duration,
    /// Dies (`WORKER_RESET`) once this many tokens are out.
    fail_after: Option<u32>,
    /// Goes silent once this many tokens are out, until the task ends elsewhere.
    stall_after: Option<u32>,
}

impl MockEngine {
    pub fn new(cfg: &AdapterConfig) -> MockEngine {
        MockEngine {
            ttft: Duration::from_millis(cfg.ttft_ms),
            tpot: Duration::from_millis(cfg.tpot_ms),
            load: Duration::from_millis(cfg.load_ms),
            fail_after: cfg.fail_after_tokens,
            stall_after: cfg.stall_after_tokens,
        }
    }
}

/// One mock generation.
pub struct MockStream {
    tokens: MockTokens,
    max_tokens: u32,
    produced: u32,
    /// When the next token is due.
    due: Instant,
    ttft: Duration,
    tpot: Duration,
    burst: u32,
    fail_after: Option<u32>,
    stall_after: Option<u32>,
    prompt_tokens: u64,
    /// Stop sequences: the text ends before the first one it would contain.
    stop: Vec<String>,
    /// The text so far, kept only when there are stop sequences.
    text: String,
    /// Ends at its end of sequence, the end of its first sentence (an open-ended
    /// generation without `ignore_eos`).
    eos: bool,
    /// The last token ended the text (a sentence end, or a stop sequence cut it).
    ended: bool,
    /// An embedding request's vectors, handed out (after `ttft`) instead of tokens.
    vectors: Option<Vec<Vec<f32>>>,
}

impl EngineAdapter for MockEngine {
    type Stream = MockStream;

    async fn open(&self, _task: Uuid, g: &Generation) -> Result<MockStream, EngineError> {
        Ok(MockStream {
            tokens: MockTokens::for_generation(g),
            max_tokens: g.sampling.max_tokens,
            produced: 0,
            due: Instant::now() + self.ttft,
            ttft: self.ttft,
            tpot: self.tpot,
            burst: 0,
            fail_after: self.fail_after,
            stall_after: self.stall_after,
            prompt_tokens: g.input.words(),
            stop: g.sampling.stop.clone(),
            text: String::new(),
            eos: g.sampling.stops_at_eos(),
            ended: false,
            vectors: match &g.input {
                Input::Embed(texts) => {
                    let dims = g.sampling.dimensions.unwrap_or(EMBEDDING_DIMENSIONS);
                    Some(texts.iter().map(|t| embedding(&g.model, t, dims)).collect())
                }
                _ => None,
            },
        })
    }

    fn retries(&self) -> u32 {
        0
    }

    fn health_interval(&self) -> Option<Duration> {
        None
    }

    async fn health(&self) -> Health {
        Health {
            up: true,
            version: None,
            slots: None,
        }
    }

    async fn load(&self, model: &str) -> Result<(), String> {
        rt::sleep(self.load).await;
        if model.starts_with("fail:") {
            return Err(format!("the engine could not load model {model:?}"));
        }
        Ok(())
    }
}

impl TokenStream for MockStream {
    async fn next(&mut self) -> Result<Option<Piece>, EngineError> {
        // Tokens are due at start + ttft + k * tpot, on the shard's timer grid, so that
        // tasks due in the same millisecond share one wakeup (a running engine's decode
        // step serves all its sequences at once, too). A shard that falls behind does
        // not catch up in a burst: the next token is due a tpot after the late one.
        // A zero ttft or tpot means no wait at all (not the next tick).
        if let Some(vectors) = self.vectors.take() {
            if !self.ttft.is_zero() {
                rt::sleep_until_tick(self.due).await;
            }
            self.ended = true;
            return Ok(Some(Piece::Embeddings(vectors)));
        }
        if self.ended && self.produced == 0 {
            // An embedding request: its vectors are out, nothing else follows.
            return Ok(Some(self.end()));
        }
        let wait = if self.produced == 0 {
            !self.ttft.is_zero()
        } else if self.tpot.is_zero() {
            self.burst += 1;
            if self.burst >= BURST {
                self.burst = 0;
                rt::yield_now().await;
            }
            false
        } else {
            let now = Instant::now();
            self.due = if self.due + self.tpot > now {
                self.due + self.tpot
            } else {
                now + self.tpot
            };
            true
        };
        if wait {
            rt::sleep_until_tick(self.due).await;
        }
        if self.fail_after == Some(self.produced) {
            let n = self.produced;
            return Err(EngineError::Died(format!(
                "mock engine failed after {n} tokens (fail_after_tokens)"
            )));
        }
        if self.stall_after == Some(self.produced) {
            // Silent until the watchdog (or a cancel, drain, deadline) ends the task,
            // which drops this stream.
            return pending().await;
        }
        if self.produced >= self.max_tokens || self.ended {
            return Ok(Some(self.end()));
        }
        self.produced += 1;
        let token = self.tokens.next_token();
        if self.eos && matches!(token, "." | "!" | "?") {
            self.ended = true;
        }
        if self.stop.is_empty() {
            return Ok(Some(Piece::Text(Cow::Borrowed(token))));
        }
        let start = self.text.len();
        self.text.push_str(token);
        let cut = self
            .stop
            .iter()
            .filter_map(|s| self.text.find(s.as_str()))
            .min();
        match cut {
            None => Ok(Some(Piece::Text(Cow::Borrowed(token)))),
            // The text before the stop sequence; nothing if it began in earlier text.
            Some(at) if at > start => {
                self.ended = true;
                Ok(Some(Piece::Text(Cow::Owned(
                    self.text[start..at].to_string(),
                ))))
            }
            Some(_) => {
                self.produced -= 1;
                Ok(Some(self.end()))
            }
        }
    }

    async fn finish(self) {}
}

impl MockStream {
    fn end(&self) -> Piece {
        Piece::End(Usage {
            prompt_tokens: Some(self.prompt_tokens),
            completion_tokens: Some(u64::from(self.produced)),
        })
    }
}
