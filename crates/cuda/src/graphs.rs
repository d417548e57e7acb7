//! CUDA graphs of a model's steps, one per row count M.
//!
//! A step's launches depend only on M (token ids and positions are read from device arrays
//! written before the step; the attention grid is sized for the cache capacity and its
//! blocks past the last position exit at once; every buffer is allocated once). So the
//! first step with M rows runs eagerly (it also loads the kernels lazily), the second is
//! captured (`cuStreamBeginCapture` in thread-local mode → `cuStreamEndCapture` →
//! instantiate → upload) and launched, and every later step with M rows replays the graph:
//! one `cuGraphLaunch` instead of ~9 launches per layer. The draft's 1-token decode and the
//! target's (γ+1)-token verify are the common cases; prefill chunks get graphs too (at most
//! [`MAX_ROWS`] per model).
//!
//! Captures need the context's event tracking off (cudarc would otherwise record and wait on
//! events around every buffer use, which is illegal inside a capture; sound only when all
//! work of the context goes to its one stream). A failed capture turns graphs off for the
//! model, logs a warning (the `log` facade) and continues with direct launches; the reason is
//! kept in [`GraphStats::disabled_reason`].

use anyhow::{anyhow, ensure, Context, Result};
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::CudaGraph;
use serde::Serialize;

use crate::backend::MAX_ROWS;
use crate::context::GpuContext;

/// Counters of the graph machinery of one model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GraphStats {
    /// Whether steps are recorded and replayed.
    pub enabled: bool,
    /// Graphs captured (one per distinct M).
    pub captured: usize,
    /// Steps run by replaying a graph.
    pub replays: usize,
    /// Steps run with direct launches.
    pub eager_steps: usize,
    /// Why graphs were turned off after a failure, if they were.
    pub disabled_reason: Option<String>,
}

/// Graphs of one model, by row count M (index M − 1).
#[derive(Default)]
pub(crate) struct Graphs {
    stats: GraphStats,
    /// Steps seen per M (a graph is captured on the second).
    seen: [usize; MAX_ROWS],
    by_rows: [Option<CudaGraph>; MAX_ROWS],
}

impl Graphs {
    pub(crate) fn new(enabled: bool) -> Self {
        let mut g = Graphs::default();
        g.stats.enabled = enabled;
        g
    }

    pub(crate) fn stats(&self) -> &GraphStats {
        &self.stats
    }

    /// Turn recording on or off, dropping recorded graphs either way.
    pub(crate) fn set_enabled(&mut self, enabled: bool) {
        self.clear();
        self.stats.enabled = enabled;
        if enabled {
            self.stats.disabled_reason = None;
        }
    }

    fn clear(&mut self) {
        self.by_rows.iter_mut().for_each(|g| *g = None);
        self.seen = [0; MAX_ROWS];
    }

    /// Run a step of `m` rows (1..=MAX_ROWS) whose launches `encode` enqueues on `gpu`'s
    /// stream: directly, by capturing them, or by replaying an earlier capture.
    pub(crate) fn run(
        &mut self,
        gpu: &GpuContext,
        m: usize,
        encode: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        if !self.stats.enabled {
            self.stats.eager_steps += 1;
            return encode();
        }
        let i = m - 1;
        if let Some(graph) = &self.by_rows[i] {
            graph
                .launch()
                .map_err(|e| anyhow!("cuGraphLaunch (M = {m}): {e:?}"))?;
            self.stats.replays += 1;
            return Ok(());
        }
        self.seen[i] += 1;
        if self.seen[i] == 1 {
            // First step with M rows: direct launches (kernels load lazily outside a capture).
            self.stats.eager_steps += 1;
            return encode();
        }
        match capture(gpu, encode) {
            Ok(graph) => {
                graph
                    .launch()
                    .map_err(|e| anyhow!("cuGraphLaunch (M = {m}): {e:?}"))?;
                self.by_rows[i] = Some(graph);
                self.stats.captured += 1;
                self.stats.replays += 1;
                Ok(())
            }
            Err(e) => {
                let reason = format!("capture of a {m}-row step failed: {e:#}");
                log::warn!("CUDA graphs turned off ({reason}); using direct launches");
                self.clear();
                self.stats.enabled = false;
                self.stats.disabled_reason = Some(reason);
                self.stats.eager_steps += 1;
                encode()
            }
        }
    }
}

/// Record the launches of `encode` on `gpu`'s stream into a graph (not run).
fn capture(gpu: &GpuContext, encode: &mut dyn FnMut() -> Result<()>) -> Result<CudaGraph> {
    let stream = gpu.stream().clone();
    ensure!(
        !gpu.cuda().is_event_tracking(),
        "event tracking is on for this context (graphs need it off: all work on one stream)"
    );
    stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .map_err(|e| anyhow!("cuStreamBeginCapture: {e:?}"))?;
    let recorded = encode();
    let ended = stream.end_capture(CUgraphInstantiate_flags(0));
    recorded.context("recording the step")?;
    let graph = ended
        .map_err(|e| anyhow!("cuStreamEndCapture / cuGraphInstantiate: {e:?}"))?
        .ok_or_else(|| anyhow!("the capture produced an empty graph"))?;
    graph
        .upload()
        .map_err(|e| anyhow!("cuGraphUpload: {e:?}"))?;
    Ok(graph)
}
