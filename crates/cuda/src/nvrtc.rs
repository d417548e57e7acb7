//! NVRTC: compile `kernels/*.cu` to PTX and, for a real `sm_XY` target, to a cubin, with the
//! ptxas resource report (registers, spills, shared memory per kernel).
//!
//! Works with no GPU and no driver: only `libnvrtc.so.{13,12}` must be loadable (see
//! `crates/cuda/scripts/nvrtc-env.sh`). cudarc panics when the library is missing, so every
//! entry point checks [`nvrtc_available`] first and returns an error instead.

use std::ffi::{c_char, c_int, CStr, CString};
use std::fmt;

use anyhow::{bail, Context, Result};
use cudarc::nvrtc::sys;

use crate::kernels::{KernelSource, COMMON_HEADER, KERNEL_SOURCES};

/// Message of the error returned when no NVRTC library can be loaded.
pub const NO_NVRTC: &str = "no NVRTC library found (libnvrtc.so.13 or .so.12 on LD_LIBRARY_PATH); \
     `source crates/cuda/scripts/nvrtc-env.sh` installs one";

/// Whether an NVRTC shared library can be loaded (never panics).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the candidate library names.
    unsafe { sys::is_culib_present() }
}

fn check(r: sys::nvrtcResult, what: &str) -> Result<()> {
    if r == sys::nvrtcResult::NVRTC_SUCCESS {
        return Ok(());
    }
    // SAFETY: nvrtcGetErrorString returns a static NUL-terminated string.
    let msg = unsafe { CStr::from_ptr(sys::nvrtcGetErrorString(r)) };
    bail!("{what}: {} ({r:?})", msg.to_string_lossy())
}

fn require() -> Result<()> {
    if nvrtc_available() {
        Ok(())
    } else {
        bail!(NO_NVRTC)
    }
}

/// NVRTC's own version, e.g. (12, 9).
pub fn nvrtc_version() -> Result<(i32, i32)> {
    require()?;
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: two valid out pointers.
    check(
        unsafe { sys::nvrtcVersion(&mut major, &mut minor) },
        "nvrtcVersion",
    )?;
    Ok((major, minor))
}

/// The `sm_XY` numbers (e.g. 80, 90) this NVRTC can generate code for.
pub fn supported_archs() -> Result<Vec<i32>> {
    require()?;
    let mut n: c_int = 0;
    // SAFETY: valid out pointer; then a buffer of the reported length.
    check(
        unsafe { sys::nvrtcGetNumSupportedArchs(&mut n) },
        "nvrtcGetNumSupportedArchs",
    )?;
    let mut archs = vec![0 as c_int; n.max(0) as usize];
    check(
        unsafe { sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) },
        "nvrtcGetSupportedArchs",
    )?;
    Ok(archs)
}

/// ptxas resource usage of one kernel for one target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelResources {
    /// Entry point name.
    pub kernel: String,
    /// Target, e.g. `sm_90`.
    pub arch: String,
    /// Registers per thread.
    pub registers: u32,
    /// Bytes of static shared memory per block.
    pub smem_bytes: u32,
    /// Bytes of stack frame per thread (local memory not from spills, e.g. sincosf's slow path).
    pub stack_bytes: u32,
    /// Bytes of spill stores per thread.
    pub spill_stores: u32,
    /// Bytes of spill loads per thread.
    pub spill_loads: u32,
}

impl fmt::Display for KernelResources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<18} {:<6} regs {:>3}  smem {:>6} B  stack {:>3} B  spill st/ld {}/{} B",
            self.kernel,
            self.arch,
            self.registers,
            self.smem_bytes,
            self.stack_bytes,
            self.spill_stores,
            self.spill_loads
        )
    }
}

/// The output of one NVRTC compilation.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// Kernel file name, e.g. `linear.cu`.
    pub file: String,
    /// The `--gpu-architecture` value, e.g. `sm_90` or `compute_90`.
    pub arch: String,
    /// PTX text.
    pub ptx: String,
    /// Machine code, present for `sm_XY` targets.
    pub cubin: Option<Vec<u8>>,
    /// The full compile log (ptxas `-v` report for `sm_XY` targets).
    pub log: String,
    /// Resource report parsed from the log (empty for `compute_XY`).
    pub resources: Vec<KernelResources>,
}

impl Compiled {
    /// The PTX ISA version the PTX declares (`.version X.Y`).
    pub fn ptx_isa(&self) -> Option<&str> {
        self.ptx
            .lines()
            .find_map(|l| l.trim().strip_prefix(".version "))
            .map(str::trim)
    }
}

/// Owns an nvrtcProgram and destroys it on drop.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: the handle came from nvrtcCreateProgram and is destroyed once.
        unsafe {
            sys::nvrtcDestroyProgram(&mut self.0);
        }
    }
}

impl Program {
    fn log(&self) -> Result<String> {
        let mut n = 0usize;
        // SAFETY: valid program and out pointers; buffer sized as reported.
        check(
            unsafe { sys::nvrtcGetProgramLogSize(self.0, &mut n) },
            "nvrtcGetProgramLogSize",
        )?;
        let mut buf = vec![0u8; n.max(1)];
        check(
            unsafe { sys::nvrtcGetProgramLog(self.0, buf.as_mut_ptr() as *mut c_char) },
            "nvrtcGetProgramLog",
        )?;
        Ok(c_bytes_to_string(&buf))
    }

    fn ptx(&self) -> Result<String> {
        let mut n = 0usize;
        // SAFETY: as above.
        check(
            unsafe { sys::nvrtcGetPTXSize(self.0, &mut n) },
            "nvrtcGetPTXSize",
        )?;
        let mut buf = vec![0u8; n.max(1)];
        check(
            unsafe { sys::nvrtcGetPTX(self.0, buf.as_mut_ptr() as *mut c_char) },
            "nvrtcGetPTX",
        )?;
        Ok(c_bytes_to_string(&buf))
    }

    fn cubin(&self) -> Result<Vec<u8>> {
        let mut n = 0usize;
        // SAFETY: as above.
        check(
            unsafe { sys::nvrtcGetCUBINSize(self.0, &mut n) },
            "nvrtcGetCUBINSize",
        )?;
        let mut buf = vec![0u8; n];
        check(
            unsafe { sys::nvrtcGetCUBIN(self.0, buf.as_mut_ptr() as *mut c_char) },
            "nvrtcGetCUBIN",
        )?;
        Ok(buf)
    }
}

fn c_bytes_to_string(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Whether `arch` names a valid target: `sm_XY[a]` (machine code) or `compute_XY[a]` (PTX).
fn parse_arch(arch: &str) -> Option<(bool, u32)> {
    let (real, rest) = if let Some(r) = arch.strip_prefix("sm_") {
        (true, r)
    } else if let Some(r) = arch.strip_prefix("compute_") {
        (false, r)
    } else {
        return None;
    };
    let digits = rest.strip_suffix('a').unwrap_or(rest);
    let n: u32 = digits.parse().ok()?;
    (digits.len() >= 2).then_some((real, n))
}

/// The NVRTC options used for every kernel file.
pub fn compile_options(arch: &str) -> Vec<String> {
    let mut o = vec![format!("--gpu-architecture={arch}"), "--fmad=true".into()];
    if arch.starts_with("sm_") {
        o.push("--ptxas-options=-v".into());
    }
    o
}

/// Compile one CUDA C source (which may `#include "common.cuh"`) for `arch` (`sm_80`,
/// `sm_90`, `compute_90`, ...). Needs NVRTC only: no GPU, no driver. On failure the error
/// carries the full compile log.
pub fn compile_source(file: &str, source: &str, arch: &str) -> Result<Compiled> {
    require()?;
    let Some((real, _)) = parse_arch(arch) else {
        bail!("bad NVRTC target {arch:?}: expected sm_XY or compute_XY");
    };
    let c_src = CString::new(source).context("kernel source contains a NUL byte")?;
    let c_name = CString::new(file).context("file name contains a NUL byte")?;
    let h_src = CString::new(COMMON_HEADER.1).context("common.cuh contains a NUL byte")?;
    let h_name = CString::new(COMMON_HEADER.0)?;
    let headers = [h_src.as_ptr()];
    let include_names = [h_name.as_ptr()];

    let mut raw: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: all strings are NUL-terminated and outlive the program's creation.
    check(
        unsafe {
            sys::nvrtcCreateProgram(
                &mut raw,
                c_src.as_ptr(),
                c_name.as_ptr(),
                1,
                headers.as_ptr(),
                include_names.as_ptr(),
            )
        },
        "nvrtcCreateProgram",
    )?;
    let prog = Program(raw);

    let options = compile_options(arch);
    let c_opts: Vec<CString> = options
        .iter()
        .map(|o| CString::new(o.as_str()))
        .collect::<std::result::Result<_, _>>()?;
    let opt_ptrs: Vec<*const c_char> = c_opts.iter().map(|o| o.as_ptr()).collect();
    // SAFETY: option pointers are valid for the call.
    let r = unsafe { sys::nvrtcCompileProgram(prog.0, opt_ptrs.len() as c_int, opt_ptrs.as_ptr()) };
    let log = prog.log().unwrap_or_default();
    if r != sys::nvrtcResult::NVRTC_SUCCESS {
        bail!(
            "NVRTC failed to compile kernels/{file} for {arch} ({r:?}); options {options:?}\n{log}"
        );
    }
    let ptx = prog.ptx()?;
    let cubin = if real { Some(prog.cubin()?) } else { None };
    let resources = parse_ptxas_report(&log);
    Ok(Compiled {
        file: file.to_string(),
        arch: arch.to_string(),
        ptx,
        cubin,
        log,
        resources,
    })
}

/// Compile one of [`KERNEL_SOURCES`].
pub fn compile_kernel(k: &KernelSource, arch: &str) -> Result<Compiled> {
    compile_source(k.file, k.source, arch)
}

/// Compile every kernel file for `arch`.
pub fn compile_all(arch: &str) -> Result<Vec<Compiled>> {
    KERNEL_SOURCES
        .iter()
        .map(|k| compile_kernel(k, arch))
        .collect()
}

fn number_before(s: &str, unit: &str) -> Option<u32> {
    let i = s.find(unit)?;
    s[..i].split_whitespace().last()?.parse().ok()
}

/// Parse the `ptxas -v` lines of an NVRTC log into one entry per kernel:
///
/// ```text
/// ptxas info    : Compiling entry function 'linear_f16' for 'sm_90'
/// ptxas info    : Function properties for linear_f16
/// ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
/// ptxas info    : Used 123 registers, used 1 barriers, 2048 bytes smem
/// ```
pub fn parse_ptxas_report(log: &str) -> Vec<KernelResources> {
    let mut out: Vec<KernelResources> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let mut parts = rest.split('\'');
            let kernel = parts.next().unwrap_or_default().to_string();
            let arch = parts.nth(1).unwrap_or_default().to_string();
            out.push(KernelResources {
                kernel,
                arch,
                ..Default::default()
            });
        } else if let Some(cur) = out.last_mut() {
            if line.contains("bytes stack frame") {
                cur.stack_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
                cur.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
                cur.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
            } else if line.contains("Used") && line.contains("registers") {
                cur.registers = number_before(line, "registers").unwrap_or(0);
                cur.smem_bytes = number_before(line, "bytes smem").unwrap_or(0);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_ptxas_report() {
        let log = "ptxas info    : 24 bytes gmem\n\
ptxas info    : Compiling entry function 'attn_combine_f16' for 'sm_90'\n\
ptxas info    : Function properties for attn_combine_f16\n\
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 32 registers, used 0 barriers\n\
ptxas info    : Compiling entry function 'attn_partial_f16' for 'sm_90'\n\
ptxas info    : Function properties for attn_partial_f16\n\
ptxas         .     32 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\n\
ptxas info    : Used 48 registers, used 1 barriers, 16960 bytes smem, 400 bytes cmem[0]\n\
ptxas info    : Compile time = 237.699 ms\n";
        let r = parse_ptxas_report(log);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].kernel, "attn_combine_f16");
        assert_eq!(r[0].arch, "sm_90");
        assert_eq!((r[0].registers, r[0].smem_bytes), (32, 0));
        assert_eq!(
            r[1],
            KernelResources {
                kernel: "attn_partial_f16".into(),
                arch: "sm_90".into(),
                registers: 48,
                smem_bytes: 16960,
                stack_bytes: 32,
                spill_stores: 8,
                spill_loads: 4,
            }
        );
    }

    #[test]
    fn arch_names() {
        assert_eq!(parse_arch("sm_90"), Some((true, 90)));
        assert_eq!(parse_arch("sm_90a"), Some((true, 90)));
        assert_eq!(parse_arch("compute_80"), Some((false, 80)));
        assert_eq!(parse_arch("sm_9"), None);
        assert_eq!(parse_arch("gfx90a"), None);
        assert!(compile_options("compute_80")
            .iter()
            .all(|o| !o.contains("ptxas")));
    }
}
