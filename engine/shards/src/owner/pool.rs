//! One pool on its owner shard: its queue (tenants' fair shares, interactive before
//! batch within a tenant, FIFO within a class: [`FairQueue`]), its slots, its ETA model, its drain deadline, its engine and its probe —
//! every per-pool truth, in one place.

use std::rc::Rc;
use std::time::Instant;

use orchd_engine::admission::Eta;
use orchd_engine::config::PoolConfig;

use super::fair::{FairQueue, Share};
use crate::engines::Adapter;
use crate::metrics::PoolProbe;

pub(crate) struct OwnerPool {
    pub(crate) cfg: PoolConfig,
    pub(super) model_ref: String,
    /// When the pool's remaining tasks are ended: a drain's deadline (the one place it
    /// is kept; the dispatcher hears when it passed).
    pub(super) drain_at: Option<Instant>,
    /// The dispatcher was told that `drain_at` passed.
    pub(super) drained: bool,
    pub(super) probe: Rc<PoolProbe>,
    pub(crate) engine: Adapter,
    /// The engine answers its health probe (always true for the mock).
    pub(super) up: bool,
    /// The version the engine reports about itself, once probed.
    pub(super) reported_version: Option<String>,
    /// When the engine's health was last learned (a probe, or a call that found it
    /// down); never for the mock, which is not probed.
    pub(super) checked_at: Option<Instant>,
    pub(super) busy: u32,
    pub(super) queue: FairQueue,
    /// A position update of this pool's queue is due (`stream.position_update_ms`).
    pub(super) positions_due: bool,
    /// Observed service times: predictions in metrics frames, and (sent along with
    /// each task's end) the dispatcher's admission decisions.
    pub(super) eta: Eta,
}

impl OwnerPool {
    pub(super) fn new(cfg: &PoolConfig, shares: &[Share]) -> OwnerPool {
        let engine = Adapter::from_config(&cfg.adapter);
        if let Adapter::Unusable(why) = &engine {
            tracing::error!(pool = %cfg.id, error = %why, "engine url unusable; its tasks will fail");
        }
        OwnerPool {
            model_ref: cfg.model_ref.clone(),
            drain_at: None,
            drained: false,
            probe: Rc::new(PoolProbe::default()),
            engine,
            up: true,
            reported_version: None,
            checked_at: None,
            busy: 0,
            queue: FairQueue::new(shares),
            positions_due: false,
            eta: Eta::new(cfg.adapter.ttft_ms, cfg.adapter.tpot_ms),
            cfg: cfg.clone(),
        }
    }

    pub(super) fn depth(&self) -> u32 {
        self.queue.len() as u32
    }

    /// Starts (or keeps the earlier of) a drain deadline; returns the time left.
    pub(super) fn drain(
        &mut self,
        deadline: std::time::Duration,
        now: Instant,
    ) -> std::time::Duration {
        let at = now + deadline;
        let at = match self.drain_at {
            // A drain under way keeps its earlier deadline.
            Some(old) if !self.drained => old.min(at),
            // A new drain (or one after the last has passed) starts afresh.
            _ => at,
        };
        self.drain_at = Some(at);
        self.drained = false;
        at.saturating_duration_since(now)
    }
}
