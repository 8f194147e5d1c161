//! The ETA model of a pool: what admission predicts (start, decode, drain) and what the
//! `metrics` frames of its tasks say, from one set of moving averages.
//!
//! One source: the pool's owner shard observes each task's [`Outcome`] into its [`Eta`]
//! and hands the updated value to the dispatcher with the task's end, so the `started`
//! frame (admission's prediction) and later `metrics` frames come from the same model.

const EWMA_ALPHA: f64 = 0.2;

/// An exponentially weighted moving average.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ewma(f64);

impl Ewma {
    pub fn new(v: f64) -> Ewma {
        Ewma(v)
    }

    pub fn get(self) -> f64 {
        self.0
    }

    fn observe(&mut self, v: f64) {
        self.0 += EWMA_ALPHA * (v - self.0);
    }
}

/// How a task ended, as its owner shard reports it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    pub tokens_out: u32,
    /// First to last token.
    pub decode_ms: u64,
    /// Admission to first token, if a token came.
    pub ttft_ms: Option<u64>,
    /// Start of execution to end, if it ran.
    pub service_ms: Option<u64>,
    pub ran: bool,
}

/// Observed service times of one pool.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Eta {
    /// Start to end of a task that ran.
    service_ms: Ewma,
    /// Admission to first token.
    ttft_ms: Ewma,
    /// Between two tokens.
    tpot_ms: Ewma,
}

impl Eta {
    /// Before any task has run: the engine's configured timings and a typical task of
    /// 64 tokens.
    pub fn new(ttft_ms: u64, tpot_ms: u64) -> Eta {
        let (ttft, tpot) = (ttft_ms as f64, tpot_ms as f64);
        Eta {
            service_ms: Ewma(ttft + 64.0 * tpot),
            ttft_ms: Ewma(ttft),
            tpot_ms: Ewma(tpot),
        }
    }

    /// Learns from a task that ended.
    pub fn observe(&mut self, o: &Outcome) {
        if let Some(s) = o.service_ms {
            self.service_ms.observe(s as f64);
        }
        if let Some(t) = o.ttft_ms {
            self.ttft_ms.observe(t as f64);
        }
        if o.tokens_out > 1 {
            self.tpot_ms
                .observe(o.decode_ms as f64 / f64::from(o.tokens_out - 1));
        }
    }

    pub fn service_ms(&self) -> f64 {
        self.service_ms.get()
    }

    /// Predicted wait before a task at `position` (0 = a free slot) starts, with
    /// `slots` slots serving the queue.
    pub fn predicted_start_ms(&self, position: u32, slots: u32) -> u64 {
        if position == 0 {
            return 0;
        }
        let rounds = (f64::from(position) / f64::from(slots.max(1))).ceil();
        (rounds * self.service_ms.get()).ceil() as u64
    }

    /// Predicted time from admission to the end of decode of `tokens` tokens, without
    /// queueing.
    pub fn predicted_decode_ms(&self, tokens: u32) -> u64 {
        self.predicted_left_ms(tokens, true).ceil() as u64
    }

    /// Predicted time a running (or starting) task still needs for `tokens` more
    /// tokens; `before_first` adds the time to the first token.
    pub fn predicted_left_ms(&self, tokens: u32, before_first: bool) -> f64 {
        let ttft = if before_first {
            self.ttft_ms.get()
        } else {
            0.0
        };
        ttft + f64::from(tokens) * self.tpot_ms.get()
    }

    /// Predicted time until `work` tasks (running and queued) are done on `slots`
    /// slots: the retry advice of a full queue (at least 1 ms).
    pub fn predicted_drain_ms(&self, work: f64, slots: u32) -> u64 {
        ((work / f64::from(slots.max(1))) * self.service_ms.get())
            .ceil()
            .max(1.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictions_follow_what_was_observed() {
        let mut eta = Eta::new(10, 5);
        assert_eq!(eta.predicted_start_ms(0, 1), 0);
        assert_eq!(eta.predicted_start_ms(1, 1), 330);
        assert_eq!(eta.predicted_start_ms(3, 2), 660, "two rounds of two slots");
        assert_eq!(eta.predicted_decode_ms(4), 30);
        let before = eta.predicted_start_ms(1, 1);
        eta.observe(&Outcome {
            tokens_out: 11,
            decode_ms: 100,
            ttft_ms: Some(20),
            service_ms: Some(5000),
            ran: true,
        });
        assert!(eta.predicted_start_ms(1, 1) > before);
        assert!(
            (eta.predicted_left_ms(1, false) - 6.0).abs() < 1e-9,
            "tpot 5 -> 6"
        );
        assert_eq!(eta.predicted_drain_ms(0.0, 4), 1, "never 0");
    }
}
