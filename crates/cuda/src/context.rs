//! The GPU context: driver and NVRTC guards, one device, one stream (and a side stream for
//! concurrent branches of a step), every kernel compiled (once per process and target) and
//! loaded, plus small buffer helpers.
//!
//! cudarc panics when `libcuda` or `libnvrtc` is missing, so [`GpuContext::new`] checks for
//! both first and returns an error ("no CUDA driver found") instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{anyhow, bail, ensure, Context, Result};
use cudarc::driver::{
    result as dresult, sys as dsys, CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream,
    DevicePtr, DevicePtrMut, DeviceRepr, ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;

use crate::kernels::KERNEL_SOURCES;
use crate::nvrtc::{self, Compiled, KernelResources};

/// Message of the error returned when the CUDA driver library is missing.
pub const NO_DRIVER: &str = "no CUDA driver found";
/// Message of the error returned when the driver sees no device.
pub const NO_DEVICE: &str = "no CUDA device found";

/// Whether the CUDA driver library (`libcuda.so`) can be loaded (never panics).
pub fn driver_available() -> bool {
    // SAFETY: only tries to dlopen the candidate library names.
    unsafe { dsys::is_culib_present() }
}

/// Number of CUDA devices; 0 when there is no driver or `cuInit` fails.
pub fn device_count() -> usize {
    if !driver_available() {
        return 0;
    }
    CudaContext::device_count().map_or(0, |n| n.max(0) as usize)
}

/// Whether [`GpuContext::new`] can succeed here: a driver, a device and NVRTC.
pub fn gpu_available() -> bool {
    device_count() > 0 && nvrtc::nvrtc_available()
}

/// The CUDA driver's version as `major * 1000 + minor * 10` (13000 for CUDA 13.0).
pub fn driver_version() -> Result<i32> {
    if !driver_available() {
        bail!(NO_DRIVER);
    }
    let mut v = 0;
    // SAFETY: valid out pointer; the library is present.
    unsafe { dsys::cuDriverGetVersion(&mut v) }
        .result()
        .map_err(|e| anyhow!("cuDriverGetVersion: {e:?}"))?;
    Ok(v)
}

type CompileCache = Mutex<HashMap<String, Arc<Vec<Compiled>>>>;

/// Every kernel file compiled for `target`, compiled at most once per process.
pub fn compiled_for(target: &str) -> Result<Arc<Vec<Compiled>>> {
    static CACHE: OnceLock<CompileCache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache
        .lock()
        .map_err(|_| anyhow!("compile cache poisoned"))?
        .get(target)
    {
        return Ok(c.clone());
    }
    let compiled = Arc::new(nvrtc::compile_all(target)?);
    cache
        .lock()
        .map_err(|_| anyhow!("compile cache poisoned"))?
        .insert(target.to_string(), compiled.clone());
    Ok(compiled)
}

/// Pick the NVRTC target for a device of compute capability `cc`: its own `sm_XY` when this
/// NVRTC supports it, else PTX for the newest older architecture (`compute_XY`, JIT-compiled
/// by the driver at load time).
pub fn target_for(cc: (i32, i32), supported: &[i32]) -> Result<String> {
    let want = cc.0 * 10 + cc.1;
    if supported.contains(&want) {
        return Ok(format!("sm_{want}"));
    }
    supported
        .iter()
        .copied()
        .filter(|&a| a <= want)
        .max()
        .map(|a| format!("compute_{a}"))
        .ok_or_else(|| anyhow!("this NVRTC supports none of the architectures up to sm_{want}"))
}

/// One CUDA device with its stream and loaded kernels.
pub struct GpuContext {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// The side branch: a second stream that launches go to between
    /// [`GpuContext::fork_side`] and [`GpuContext::back_to_main`] (copies and synchronisation
    /// stay on the main stream), with the events that order it against the main one.
    side: Arc<CudaStream>,
    on_side: AtomicBool,
    fork_event: CudaEvent,
    join_event: CudaEvent,
    name: String,
    compute_capability: (i32, i32),
    target: String,
    nvrtc_version: (i32, i32),
    driver_version: i32,
    compiled: Arc<Vec<Compiled>>,
    functions: HashMap<&'static str, CudaFunction>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("device", &self.name)
            .field("compute_capability", &self.compute_capability)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl GpuContext {
    /// Open device `ordinal`, compile (once per process) and load every kernel.
    pub fn new(ordinal: usize) -> Result<Self> {
        if !driver_available() {
            bail!(NO_DRIVER);
        }
        let count = device_count();
        if count == 0 {
            bail!(NO_DEVICE);
        }
        if ordinal >= count {
            bail!("CUDA device {ordinal} requested but only {count} found");
        }
        if !nvrtc::nvrtc_available() {
            bail!(nvrtc::NO_NVRTC);
        }
        let driver_version = driver_version()?;
        let nvrtc_version = nvrtc::nvrtc_version()?;
        if nvrtc_version.0 > driver_version / 1000 {
            bail!(
                "NVRTC {}.{} is newer than the CUDA driver ({}.{}): its code would not load; \
                 put the driver's own libnvrtc (or an older one) first on LD_LIBRARY_PATH",
                nvrtc_version.0,
                nvrtc_version.1,
                driver_version / 1000,
                driver_version % 1000 / 10
            );
        }
        let ctx = CudaContext::new(ordinal).context("creating the CUDA context")?;
        let name = ctx.name().unwrap_or_else(|_| "unknown".into());
        let compute_capability = ctx.compute_capability().context("compute capability")?;
        let target = target_for(compute_capability, &nvrtc::supported_archs()?)?;
        let compiled = compiled_for(&target)?;

        let mut functions = HashMap::new();
        for (src, c) in KERNEL_SOURCES.iter().zip(compiled.iter()) {
            let image = match &c.cubin {
                Some(cubin) => Ptx::from_binary(cubin.clone()),
                None => Ptx::from_src(c.ptx.clone()),
            };
            let module = ctx
                .load_module(image)
                .with_context(|| format!("loading kernels/{} ({target})", src.file))?;
            for &entry in src.entry_points {
                let f = module
                    .load_function(entry)
                    .with_context(|| format!("kernel {entry} in kernels/{}", src.file))?;
                functions.insert(entry, f);
            }
        }
        // A non-default stream: the legacy default stream cannot be captured into a graph.
        let stream = ctx.new_stream().context("creating a stream")?;
        let side = ctx.new_stream().context("creating the side stream")?;
        let fork_event = ctx.new_event(None).context("creating an event")?;
        let join_event = ctx.new_event(None).context("creating an event")?;
        Ok(Self {
            ctx,
            stream,
            side,
            on_side: AtomicBool::new(false),
            fork_event,
            join_event,
            name,
            compute_capability,
            target,
            nvrtc_version,
            driver_version,
            compiled,
            functions,
        })
    }

    /// The cudarc context.
    pub fn cuda(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every launcher enqueues on: the main one, or the side branch's between
    /// [`GpuContext::fork_side`] and [`GpuContext::back_to_main`].
    pub fn stream(&self) -> &Arc<CudaStream> {
        if self.on_side() {
            &self.side
        } else {
            &self.stream
        }
    }

    /// Whether launches go to the side branch.
    pub fn on_side(&self) -> bool {
        self.on_side.load(Ordering::Relaxed)
    }

    /// Later launches go to the side stream, which first waits for everything enqueued on
    /// the main stream so far (inside a graph capture, this brings the side stream into it).
    pub fn fork_side(&self) -> Result<()> {
        ensure!(
            !self.on_side(),
            "fork_side while already on the side branch"
        );
        self.fork_event
            .record(&self.stream)
            .map_err(|e| anyhow!("cuEventRecord (fork): {e:?}"))?;
        self.side
            .wait(&self.fork_event)
            .map_err(|e| anyhow!("cuStreamWaitEvent (fork): {e:?}"))?;
        self.on_side.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Later launches go to the main stream again.
    pub fn back_to_main(&self) {
        self.on_side.store(false, Ordering::Relaxed);
    }

    /// The main stream waits for everything enqueued on the side stream so far (a capture
    /// must join the side stream this way before it ends).
    pub fn join_side(&self) -> Result<()> {
        self.join_event
            .record(&self.side)
            .map_err(|e| anyhow!("cuEventRecord (join): {e:?}"))?;
        self.stream
            .wait(&self.join_event)
            .map_err(|e| anyhow!("cuStreamWaitEvent (join): {e:?}"))
    }

    /// Device name, e.g. "NVIDIA H100 80GB HBM3".
    pub fn device_name(&self) -> &str {
        &self.name
    }

    /// Compute capability, e.g. (9, 0).
    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }

    /// NVRTC target the kernels were built for, e.g. `sm_90`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// NVRTC version in use.
    pub fn nvrtc_version(&self) -> (i32, i32) {
        self.nvrtc_version
    }

    /// Driver version (`major * 1000 + minor * 10`).
    pub fn driver_version(&self) -> i32 {
        self.driver_version
    }

    /// ptxas resource report of every loaded kernel (empty for a PTX target).
    pub fn resources(&self) -> Vec<KernelResources> {
        self.compiled
            .iter()
            .flat_map(|c| c.resources.iter().cloned())
            .collect()
    }

    /// Device name, CUDA driver version (`major.minor`, e.g. `12.8`) and device memory in
    /// bytes (0 if the driver does not say), for reports naming the machine a run used.
    pub fn device_info(&self) -> (String, String, usize) {
        let driver = format!(
            "{}.{}",
            self.driver_version / 1000,
            self.driver_version % 1000 / 10
        );
        (self.name.clone(), driver, self.ctx.total_mem().unwrap_or(0))
    }

    /// One-line description: device, capability, target, driver and NVRTC versions.
    pub fn describe(&self) -> String {
        format!(
            "{} (sm_{}{}), kernels for {}, driver {}.{}, NVRTC {}.{}",
            self.name,
            self.compute_capability.0,
            self.compute_capability.1,
            self.target,
            self.driver_version / 1000,
            self.driver_version % 1000 / 10,
            self.nvrtc_version.0,
            self.nvrtc_version.1
        )
    }

    pub(crate) fn function(&self, name: &str) -> Result<&CudaFunction> {
        self.functions
            .get(name)
            .ok_or_else(|| anyhow!("kernel {name} is not loaded"))
    }

    /// Copy `host` to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        self.stream
            .clone_htod(host)
            .map_err(|e| anyhow!("upload of {} elements: {e:?}", host.len()))
    }

    /// A new zero-filled device buffer of `len` elements.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<CudaSlice<T>> {
        self.stream
            .alloc_zeros(len)
            .map_err(|e| anyhow!("allocating {len} elements: {e:?}"))
    }

    /// Copy `host` into the start of `dst` (which must be at least as long).
    pub fn write<T: DeviceRepr>(&self, host: &[T], dst: &mut dyn DevicePtrMut<T>) -> Result<()> {
        if dst.len() < host.len() {
            bail!(
                "write of {} elements into a buffer of {}",
                host.len(),
                dst.len()
            );
        }
        let n = std::mem::size_of_val(host);
        let (ptr, _guard) = dst.device_ptr_mut(&self.stream);
        // SAFETY: `dst` holds at least `n` bytes; the copy from pageable memory completes
        // before memcpy_htod_async returns.
        unsafe {
            dresult::memcpy_htod_async(ptr, host, self.stream.cu_stream())
                .map_err(|e| anyhow!("host-to-device copy of {n} bytes: {e:?}"))
        }
    }

    /// Copy a device buffer back to the host (synchronises the stream).
    pub fn download<T: DeviceRepr>(&self, src: &dyn DevicePtr<T>) -> Result<Vec<T>> {
        let len = src.len();
        let mut out: Vec<T> = Vec::with_capacity(len);
        {
            let (ptr, _guard) = src.device_ptr(&self.stream);
            // SAFETY: `out` has capacity for `len` elements, all written by the copy before
            // set_len; the stream is synchronised before returning.
            unsafe {
                dresult::memcpy_dtoh_async(out.spare_capacity_mut(), ptr, self.stream.cu_stream())
                    .map_err(|e| anyhow!("device-to-host copy of {len} elements: {e:?}"))?;
            }
        }
        self.synchronize()?;
        // SAFETY: the copy above filled `len` elements.
        unsafe { out.set_len(len) };
        Ok(out)
    }

    /// Fill a buffer with 0xFF bytes: NaN for f16 and f32, u32::MAX for u32. Used to poison
    /// outputs so a kernel that skips an element cannot pass a check.
    pub fn poison<T>(&self, dst: &mut dyn DevicePtrMut<T>) -> Result<()> {
        let bytes = dst.num_bytes();
        let (ptr, _guard) = dst.device_ptr_mut(&self.stream);
        // SAFETY: `ptr` is a live allocation of `bytes` bytes.
        unsafe { dresult::memset_d8_async(ptr, 0xff, bytes, self.stream.cu_stream()) }
            .map_err(|e| anyhow!("memset of {bytes} bytes: {e:?}"))
    }

    /// Wait for all work on both streams.
    pub fn synchronize(&self) -> Result<()> {
        self.side
            .synchronize()
            .map_err(|e| anyhow!("side stream synchronize: {e:?}"))?;
        self.stream
            .synchronize()
            .map_err(|e| anyhow!("stream synchronize: {e:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_choice() {
        let archs = [75, 80, 86, 87, 89, 90, 100, 120];
        assert_eq!(target_for((9, 0), &archs).unwrap(), "sm_90");
        assert_eq!(target_for((8, 0), &archs).unwrap(), "sm_80");
        assert_eq!(target_for((12, 1), &archs).unwrap(), "compute_120");
        assert!(target_for((7, 0), &archs).is_err());
    }

    #[test]
    fn no_driver_is_an_error_not_a_panic() {
        if driver_available() {
            return;
        }
        let err = GpuContext::new(0).unwrap_err().to_string();
        assert_eq!(err, NO_DRIVER);
        assert_eq!(device_count(), 0);
        assert!(!gpu_available());
    }
}
