//! The GPU backend of the engine: [`CudaOps`] runs each kernel through `spedec_cuda`'s typed
//! launchers on one stream, owns the attention scratch, and records the launches of a step
//! into a CUDA graph per row count M.
//!
//! Graph design: a step's launches depend only on M (token ids and positions are read from
//! device arrays written before the step; the attention grid is sized for the cache capacity
//! and its blocks past the last position exit at once; every buffer is allocated once). So
//! the first step with M rows runs eagerly (it also loads the kernels lazily), the second is
//! captured (`cuStreamBeginCapture` in thread-local mode → `cuStreamEndCapture` →
//! instantiate → upload) and launched, and every later step with M rows replays the graph:
//! one `cuGraphLaunch` instead of ~9 launches per layer. The draft's 1-token decode and the
//! target's (γ+1)-token verify are the common cases; prefill chunks get graphs too (at most
//! 16 per model). Captures need the context's event tracking off ([`super::shared_gpu`]
//! turns it off; all work is on one stream). A failed capture prints one warning, turns
//! graphs off for the model and continues with direct launches; `SPEDEC_CUDA_GRAPHS=0`
//! turns them off from the start.

use std::sync::Arc;

use anyhow::{anyhow, ensure, Context, Result};
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaGraph, CudaSlice};
use serde::Serialize;
use spedec_cuda::backend::{Elem, GpuKernels};
use spedec_cuda::{AttnScratch, AttnShape, GpuContext};

use super::engine::{ForwardBackend, MAX_ROWS};

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
struct Graphs {
    stats: GraphStats,
    /// Steps seen per M (a graph is captured on the second).
    seen: [usize; MAX_ROWS],
    by_rows: Vec<Option<CudaGraph>>,
}

impl Graphs {
    fn new(enabled: bool) -> Self {
        Graphs {
            stats: GraphStats {
                enabled,
                ..GraphStats::default()
            },
            seen: [0; MAX_ROWS],
            by_rows: (0..MAX_ROWS).map(|_| None).collect(),
        }
    }

    fn clear(&mut self) {
        self.by_rows.iter_mut().for_each(|g| *g = None);
        self.seen = [0; MAX_ROWS];
    }
}

/// Kernels on one GPU stream, with a per-model attention scratch and graph cache.
pub struct CudaOps {
    gpu: Arc<GpuContext>,
    /// f32 partial results of the two-pass attention, for up to [`MAX_ROWS`] queries.
    scratch: Option<AttnScratch>,
    graphs: Graphs,
}

impl CudaOps {
    /// Kernels on `gpu` (whose event tracking must be off for graphs; see
    /// [`super::shared_gpu`]); `graphs` turns step recording on.
    pub fn new(gpu: Arc<GpuContext>, graphs: bool) -> Self {
        CudaOps {
            gpu,
            scratch: None,
            graphs: Graphs::new(graphs),
        }
    }

    /// The device context.
    pub fn gpu(&self) -> &Arc<GpuContext> {
        &self.gpu
    }

    /// Graph counters.
    pub fn graph_stats(&self) -> &GraphStats {
        &self.graphs.stats
    }

    /// Turn step recording on or off (dropping recorded graphs either way).
    pub fn set_graphs(&mut self, enabled: bool) {
        self.graphs.clear();
        self.graphs.stats.enabled = enabled;
        if enabled {
            self.graphs.stats.disabled_reason = None;
        }
    }

    /// Record the launches of `encode` into a graph (not run).
    fn capture(&mut self, encode: &mut dyn FnMut(&mut Self) -> Result<()>) -> Result<CudaGraph> {
        let stream = self.gpu.stream().clone();
        ensure!(
            !self.gpu.cuda().is_event_tracking(),
            "event tracking is on for this context (create it with shared_gpu())"
        );
        stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| anyhow!("cuStreamBeginCapture: {e:?}"))?;
        let recorded = encode(self);
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
}

impl GpuKernels for CudaOps {
    fn gpu(&self) -> &GpuContext {
        &self.gpu
    }

    fn gpu_and_scratch(&mut self, shape: &AttnShape) -> Result<(&GpuContext, &mut AttnScratch)> {
        let stale = self.scratch.as_ref().is_none_or(|s| s.shape() != shape);
        if stale {
            self.scratch = Some(AttnScratch::new(&self.gpu, shape, MAX_ROWS)?);
        }
        let scratch = self.scratch.as_mut().expect("scratch was just set");
        Ok((&self.gpu, scratch))
    }

    fn gpu_and_existing_scratch(&mut self) -> (&GpuContext, Option<&mut AttnScratch>) {
        (&self.gpu, self.scratch.as_mut())
    }
}

impl ForwardBackend for CudaOps {
    fn prepare(&mut self, shape: &AttnShape) -> Result<()> {
        self.gpu_and_scratch(shape)?;
        Ok(())
    }

    fn write<T: Elem>(&mut self, host: &[T], dst: &mut CudaSlice<T>) -> Result<()> {
        self.gpu.write(host, dst)
    }

    fn read_into<T: Elem>(&mut self, src: &CudaSlice<T>, dst: &mut [T]) -> Result<()> {
        ensure!(
            dst.len() <= src.len(),
            "read of {} elements from a buffer of {}",
            dst.len(),
            src.len()
        );
        let view = src.slice(0..dst.len());
        self.gpu
            .stream()
            .memcpy_dtoh(&view, dst)
            .map_err(|e| anyhow!("device-to-host copy of {} elements: {e:?}", dst.len()))?;
        self.gpu.synchronize()
    }

    fn run_step(
        &mut self,
        m: usize,
        encode: &mut dyn FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        ensure!((1..=MAX_ROWS).contains(&m), "step of {m} rows");
        if !self.graphs.stats.enabled {
            self.graphs.stats.eager_steps += 1;
            return encode(self);
        }
        let i = m - 1;
        if let Some(graph) = &self.graphs.by_rows[i] {
            graph
                .launch()
                .map_err(|e| anyhow!("cuGraphLaunch (M = {m}): {e:?}"))?;
            self.graphs.stats.replays += 1;
            return Ok(());
        }
        self.graphs.seen[i] += 1;
        if self.graphs.seen[i] == 1 {
            // First step with M rows: direct launches (kernels load lazily outside a capture).
            self.graphs.stats.eager_steps += 1;
            return encode(self);
        }
        match self.capture(encode) {
            Ok(graph) => {
                graph
                    .launch()
                    .map_err(|e| anyhow!("cuGraphLaunch (M = {m}): {e:?}"))?;
                self.graphs.by_rows[i] = Some(graph);
                self.graphs.stats.captured += 1;
                self.graphs.stats.replays += 1;
                Ok(())
            }
            Err(e) => {
                let reason = format!("capture of a {m}-row step failed: {e:#}");
                eprintln!("warning: CUDA graphs turned off ({reason}); using direct launches");
                self.graphs.clear();
                self.graphs.stats.enabled = false;
                self.graphs.stats.disabled_reason = Some(reason);
                self.graphs.stats.eager_steps += 1;
                encode(self)
            }
        }
    }
}
