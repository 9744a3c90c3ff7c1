//! How many sequences a backend holds, seen from as close to the model as it gets.
//!
//! mistral.rs exposes no scheduler counts. Every request carries an [`EngineProbe`], a logits
//! processor that changes nothing (`mistral::probe`): the engine calls it once per sampled
//! token and drops it with the sequence. So "queued" (admitted, no token sampled yet) and
//! "running" (sampling) count what the engine really holds, and a cancelled generation visibly
//! leaves it: this is what an autoscaler scales on, and what the cancellation tests check. An
//! upstream backend counts the same way from its response stream (a chunk of text is a token
//! sampled upstream).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};

use crate::telemetry::GenAiMetrics;

/// The counts, shared by every probe of one backend.
#[derive(Default)]
pub struct SequenceGauges {
    queued: AtomicI64,
    running: AtomicI64,
    sampled_tokens: AtomicU64,
}

/// A moment's view of the engine's load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineLoad {
    /// Admitted by the engine, no token sampled yet (waiting or in prefill).
    pub queued: i64,
    /// Sampling tokens.
    pub running: i64,
    /// Tokens sampled since the backend started, over every sequence.
    pub sampled_tokens: u64,
}

impl SequenceGauges {
    pub fn snapshot(&self) -> EngineLoad {
        EngineLoad {
            queued: self.queued.load(Ordering::Relaxed),
            running: self.running.load(Ordering::Relaxed),
            sampled_tokens: self.sampled_tokens.load(Ordering::Relaxed),
        }
    }
}

/// What the engine did for one request, seen by its probe: the usage even when the engine's
/// final chunk never comes (see `stream.rs`).
#[derive(Default)]
pub struct SequenceStats {
    prompt_tokens: AtomicUsize,
    sampled_tokens: AtomicUsize,
}

impl SequenceStats {
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens.load(Ordering::Relaxed)
    }

    pub fn sampled_tokens(&self) -> usize {
        self.sampled_tokens.load(Ordering::Relaxed)
    }
}

/// Rides along with one request inside the engine (see the module docs).
pub struct EngineProbe {
    gauges: Arc<SequenceGauges>,
    stats: Arc<SequenceStats>,
    metrics: GenAiMetrics,
    started: AtomicBool,
}

impl EngineProbe {
    pub fn new(
        gauges: Arc<SequenceGauges>,
        stats: Arc<SequenceStats>,
        metrics: GenAiMetrics,
    ) -> Self {
        gauges.queued.fetch_add(1, Ordering::Relaxed);
        metrics.sequences_queued.add(1, &[]);
        Self {
            gauges,
            stats,
            metrics,
            started: AtomicBool::new(false),
        }
    }
}

impl EngineProbe {
    /// One token sampled; `context_len` is the sequence's length before it (at the first token:
    /// the prompt's).
    pub fn on_token(&self, context_len: usize) {
        if !self.started.swap(true, Ordering::Relaxed) {
            self.stats
                .prompt_tokens
                .store(context_len, Ordering::Relaxed);
            self.gauges.queued.fetch_sub(1, Ordering::Relaxed);
            self.gauges.running.fetch_add(1, Ordering::Relaxed);
            self.metrics.sequences_queued.add(-1, &[]);
            self.metrics.sequences_running.add(1, &[]);
        }
        self.gauges.sampled_tokens.fetch_add(1, Ordering::Relaxed);
        self.stats.sampled_tokens.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for EngineProbe {
    fn drop(&mut self) {
        if *self.started.get_mut() {
            self.gauges.running.fetch_sub(1, Ordering::Relaxed);
            self.metrics.sequences_running.add(-1, &[]);
        } else {
            self.gauges.queued.fetch_sub(1, Ordering::Relaxed);
            self.metrics.sequences_queued.add(-1, &[]);
        }
    }
}
