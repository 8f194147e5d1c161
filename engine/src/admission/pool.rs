//! The dispatcher's view of each pool (occupancy, readiness, the ETA its owner last
//! reported), the pool lifecycle (drain, reload) and the model catalogue
//! (`model_state`), and the capabilities document built from them.

use super::Admission;
use crate::config::{AdapterKind, PoolConfig};
use crate::error::{ApiError, ErrorClass, ErrorKind};
use crate::eta::Eta;
use crate::task::TaskSpec;
use crate::types::{Engine, ModelState};

/// Most model ids `model_state` keeps (its label budget).
pub const MAX_MODELS: usize = 1024;

/// The lifecycle of a pool as admission sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolState {
    Ready,
    /// Admission closed; running and queued tasks go on until the drain deadline,
    /// which the pool's owner shard holds (it reports when the deadline passed).
    Draining,
    /// The drain deadline passed; the pool admits nothing until a reload.
    Drained,
    /// A model switch is under way; the pool keeps admitting unless it was drained.
    /// `was_drained` is the state to return to if the engine cannot load the model.
    Reloading {
        was_drained: bool,
    },
}

impl PoolState {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolState::Ready => "ready",
            PoolState::Draining => "draining",
            PoolState::Drained => "drained",
            PoolState::Reloading { .. } => "reloading",
        }
    }
}

/// The dispatcher's view of one pool.
#[derive(Debug)]
pub struct PoolMirror {
    pub cfg: PoolConfig,
    /// The model currently served (`*` = any).
    pub model_ref: String,
    pub state: PoolState,
    /// The engine answers its health probe (for a replica set: one replica does).
    pub up: bool,
    /// Slots of the replicas that take tasks (issue 20): the pool's `slots` for each
    /// ready replica, as its owner last reported.
    pub slots: u32,
    pub(super) running: u32,
    /// Tasks waiting, by class (0 interactive, 1 batch). The queue itself (which task,
    /// in which order) is the owner shard's; this count is what admission needs.
    pub(super) queued: [u32; 2],
    /// The pool's ETA model as its owner shard last reported it.
    pub(super) eta: Eta,
    /// Each tenant's running and queued tasks here, by [`crate::tenant::TenantId`].
    pub(super) tenants: Vec<super::tenant::Load>,
}

impl PoolMirror {
    pub(super) fn new(cfg: PoolConfig, tenants: usize) -> PoolMirror {
        PoolMirror {
            model_ref: cfg.model_ref.clone(),
            state: PoolState::Ready,
            // A pool that discovers its engines has none until its name resolves.
            up: !cfg.replicas().is_empty(),
            slots: cfg.slots * cfg.replicas().len() as u32,
            running: 0,
            queued: [0, 0],
            eta: Eta::new(cfg.adapter.ttft_ms, cfg.adapter.tpot_ms),
            tenants: vec![super::tenant::Load::default(); tenants],
            cfg,
        }
    }

    pub fn queued_len(&self) -> usize {
        (self.queued[0] + self.queued[1]) as usize
    }

    pub fn running(&self) -> u32 {
        self.running
    }

    /// Admitting new tasks.
    pub fn ready(&self) -> bool {
        self.up
            && matches!(
                self.state,
                PoolState::Ready | PoolState::Reloading { was_drained: false }
            )
    }

    pub(super) fn serves(&self, spec: &TaskSpec) -> bool {
        spec.engine.is_none_or(|e| e == self.cfg.engine)
            && (self.model_ref == "*" || self.model_ref == spec.model_ref)
    }

    /// A task admitted now would start at once: a slot is free and nobody waits.
    pub(super) fn has_free_slot(&self) -> bool {
        self.running < self.slots && self.queued_len() == 0
    }

    pub(super) fn occupancy(&self) -> f64 {
        (f64::from(self.running) + self.queued_len() as f64) / f64::from(self.slots.max(1))
    }

    /// Predicted time from admission to the end of decode, without queueing.
    pub fn predicted_decode_ms(&self, spec: &TaskSpec) -> u64 {
        self.eta.predicted_decode_ms(spec.expected_out())
    }

    /// Predicted wait before a task at `position` starts.
    pub fn predicted_start_ms(&self, position: u32) -> u64 {
        self.eta.predicted_start_ms(position, self.slots.max(1))
    }

    /// Predicted time until everything admitted now has finished: the retry advice of
    /// a full queue.
    pub fn predicted_drain_ms(&self) -> u64 {
        let work = f64::from(self.running) + self.queued_len() as f64;
        self.eta.predicted_drain_ms(work, self.slots.max(1))
    }
}

fn conflict(pool: &str, why: &str) -> ApiError {
    ApiError::new(
        ErrorClass::Conflict,
        ErrorKind::InvalidParams,
        format!("pool {pool}: {why}"),
    )
    .with_pool(pool)
}

impl Admission {
    /// Every model seen and its state now.
    pub fn model_states(&self) -> &[(String, ModelState)] {
        &self.models
    }

    pub(super) fn set_model_state(&mut self, model: &str, state: ModelState) {
        match self.models.iter_mut().find(|(m, _)| m == model) {
            Some(entry) => entry.1 = state,
            None => {
                if self.models.len() >= MAX_MODELS {
                    if let Some(i) = self
                        .models
                        .iter()
                        .position(|(_, s)| matches!(s, ModelState::Retired | ModelState::Failed))
                    {
                        self.models.remove(i);
                    }
                }
                self.models.push((model.to_string(), state));
            }
        }
    }

    /// The state a model is in given the pools serving it now.
    fn settle_model(&mut self, model: &str) {
        let states: Vec<PoolState> = self
            .pools
            .iter()
            .filter(|p| p.model_ref == model)
            .map(|p| p.state)
            .collect();
        let state = if states.iter().any(|s| {
            matches!(
                s,
                PoolState::Ready | PoolState::Reloading { was_drained: false }
            )
        }) {
            ModelState::Ready
        } else if states.contains(&PoolState::Draining) {
            ModelState::Draining
        } else if states.is_empty() {
            ModelState::Retired
        } else {
            ModelState::Drained
        };
        self.set_model_state(model, state);
    }

    /// The engine of a pool went down (no new tasks) or came back, or a replica of
    /// its set did: `slots` are the ready replicas' (0 with none up).
    pub fn set_up(&mut self, pool: usize, up: bool, slots: u32) {
        if let Some(p) = self.pools.get_mut(pool) {
            p.up = up;
            p.slots = slots;
            self.pools_version += 1;
        }
    }

    /// The index of the pool named `id`.
    pub fn pool_index(&self, id: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.cfg.id == id)
    }

    /// Closes admission to a pool (its owner shard holds the deadline). Draining a
    /// draining pool changes nothing here; refused while a reload is in progress.
    pub fn drain(&mut self, pool: usize) -> Result<(), ApiError> {
        let p = &mut self.pools[pool];
        match p.state {
            PoolState::Draining => Ok(()),
            PoolState::Reloading { .. } => Err(conflict(&p.cfg.id, "a reload is in progress")),
            PoolState::Ready | PoolState::Drained => {
                p.state = PoolState::Draining;
                self.pools_version += 1;
                let model = p.model_ref.clone();
                self.settle_model(&model);
                Ok(())
            }
        }
    }

    /// The owner shard ended a draining pool's tasks: its deadline passed.
    pub fn drained(&mut self, pool: usize) {
        let Some(p) = self.pools.get_mut(pool) else {
            return;
        };
        if p.state == PoolState::Draining {
            p.state = PoolState::Drained;
            self.pools_version += 1;
            let model = p.model_ref.clone();
            self.settle_model(&model);
        }
    }

    /// Starts a switch to `model`; refused while another reload or a drain is in
    /// progress.
    pub fn begin_reload(&mut self, pool: usize, model: &str) -> Result<(), ApiError> {
        let p = &mut self.pools[pool];
        p.state = match p.state {
            PoolState::Reloading { .. } => {
                return Err(conflict(&p.cfg.id, "another reload is in progress"))
            }
            PoolState::Draining => return Err(conflict(&p.cfg.id, "a drain is in progress")),
            PoolState::Ready => PoolState::Reloading { was_drained: false },
            PoolState::Drained => PoolState::Reloading { was_drained: true },
        };
        self.pools_version += 1;
        if self.pools[pool].model_ref != model {
            self.set_model_state(model, ModelState::Loading);
        }
        Ok(())
    }

    /// Ends a switch to `model`: on success the pool serves it (a drained pool comes
    /// back ready); on failure the pool returns to its previous state and model.
    pub fn end_reload(&mut self, pool: usize, model: &str, loaded: bool) {
        let p = &mut self.pools[pool];
        let PoolState::Reloading { was_drained } = p.state else {
            return;
        };
        let engine = Engine::ALL
            .iter()
            .position(|e| *e == p.cfg.engine)
            .unwrap_or(0);
        self.catalog[engine][usize::from(!loaded)] += 1;
        let old = p.model_ref.clone();
        self.pools_version += 1;
        if loaded {
            p.model_ref = model.to_string();
            p.state = PoolState::Ready;
        } else {
            p.state = if was_drained {
                PoolState::Drained
            } else {
                PoolState::Ready
            };
        }
        self.settle_model(&old);
        if loaded {
            self.settle_model(model);
        } else if model != old {
            self.set_model_state(model, ModelState::Failed);
        }
    }

    /// The models the pools serve now, each once, in pool order: a pool's model, or
    /// its id when it serves any model (`*`), which then names it to clients.
    pub fn models_served(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in &self.pools {
            let name = if p.model_ref == "*" {
                &p.cfg.id
            } else {
                &p.model_ref
            };
            if !out.contains(name) {
                out.push(name.clone());
            }
        }
        out
    }

    /// `GET /v1/capabilities` from the pools as they are now: concurrency counts the
    /// slots of pools that admit tasks, and each pool shows its model and state;
    /// `runtime` names the runtime under the shards.
    pub fn capabilities(&self, max_body_bytes: usize, runtime: &str) -> serde_json::Value {
        let mut engines: Vec<serde_json::Value> = Vec::new();
        for engine in Engine::ALL {
            let pools: Vec<&PoolMirror> = self
                .pools
                .iter()
                .filter(|p| p.cfg.engine == engine)
                .collect();
            if pools.is_empty() {
                continue;
            }
            let mut workloads = Vec::new();
            let mut policies = Vec::new();
            for p in &pools {
                for w in &p.cfg.workloads {
                    if !workloads.contains(w) {
                        workloads.push(*w);
                    }
                }
                if !policies.contains(&p.cfg.policy.as_str()) {
                    policies.push(p.cfg.policy.as_str());
                }
            }
            let ready = pools.iter().filter(|p| p.ready());
            engines.push(serde_json::json!({
                "engine": engine,
                "ctx_max": pools.iter().map(|p| p.cfg.ctx_max).max(),
                "supported_workloads": workloads,
                "concurrency": ready.clone().map(|p| u64::from(p.slots)).sum::<u64>(),
                "rate_limits": {
                    "queue_capacity": ready.map(|p| u64::from(p.cfg.queue_capacity)).sum::<u64>(),
                    "queue_policies": policies,
                    "max_body_bytes": max_body_bytes,
                },
                // Capability name -> true, or its parameters (the seed's contract).
                "features": {
                    "sse": true, "sse-resume": true, "cancel": true, "sessions": true,
                    "budgets": true, "kv-affinity": true,
                    "deterministic-mock": pools.iter().any(|p| p.cfg.adapter.kind == AdapterKind::Mock),
                    "openai-compatible": {"routes": ["/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/models"]},
                },
                "pools": pools.iter().map(|p| serde_json::json!({
                    "id": p.cfg.id, "model_ref": p.model_ref, "state": p.state.as_str(),
                    "ready": p.ready(), "slots": p.slots, "engine_version": p.cfg.engine_version,
                })).collect::<Vec<_>>(),
            }));
        }
        serde_json::json!({"api_version": "1.0.0", "runtime": runtime, "engines": engines})
    }
}
