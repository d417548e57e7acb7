//! The read-bandwidth probe (`kernels/probe.cu`): a read-only kernel that streams a large f16
//! buffer and writes one u32 per block (the wrapping sum of the 32-bit words it read), the
//! floor that `spedec gpu-check` holds the linears and the decode step against. Check-only:
//! the model never launches it.

use anyhow::{anyhow, ensure, Result};
use cudarc::driver::{sys, LaunchConfig, PushKernelArg};
use half::f16;

use crate::context::GpuContext;
use crate::kernels::consts::PROBE_THREADS;
use crate::ops::{launch_err, to_i32, to_u32, In, Out};

/// f16 elements per 16-byte vector the probe reads.
pub const PROBE_VEC: usize = 8;

/// The 16-byte vectors of an f16 buffer of `len` elements (an error unless `len` is a positive
/// multiple of [`PROBE_VEC`]).
pub fn probe_vectors(len: usize) -> Result<u64> {
    ensure!(
        len > 0 && len % PROBE_VEC == 0,
        "read_probe_f16: the buffer has {len} f16, expected a positive multiple of {PROBE_VEC}"
    );
    Ok((len / PROBE_VEC) as u64)
}

/// The block of a launch of `blocks` blocks that reads vector `i` (the kernel's grid-stride
/// assignment; the CPU reference sums by it).
pub fn probe_block_of(i: u64, blocks: usize) -> usize {
    let t = PROBE_THREADS as u64;
    ((i % (blocks as u64 * t)) / t) as usize
}

/// Block counts the bandwidth measurement tries on a device with `sms` multiprocessors: 1, 2,
/// 4 and 8 blocks of [`PROBE_THREADS`] per SM (8 × 256 threads fill an SM of 2048).
pub fn probe_block_counts(sms: usize) -> Vec<usize> {
    let sms = sms.max(1);
    [1, 2, 4, 8].iter().map(|&per| per * sms).collect()
}

impl GpuContext {
    /// Number of streaming multiprocessors of the device.
    pub fn multiprocessors(&self) -> Result<usize> {
        let n = self
            .cuda()
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| anyhow!("multiprocessor count: {e:?}"))?;
        Ok(n.max(1) as usize)
    }

    /// The read-bandwidth probe: buf f16 `[len]` (len a multiple of 8, 16-byte aligned) read
    /// once by `blocks` blocks; sums u32 `[blocks]` (at least), `sums[b]` the wrapping sum of
    /// the 32-bit words block b read ([`probe_block_of`]).
    pub fn read_probe_f16(&self, buf: In<f16>, sums: Out<u32>, blocks: usize) -> Result<()> {
        let n_vec = probe_vectors(buf.len())?;
        ensure!(
            blocks > 0 && blocks <= i32::MAX as usize,
            "read_probe_f16: {blocks} blocks, expected 1..={}",
            i32::MAX
        );
        ensure!(
            sums.len() >= blocks,
            "read_probe_f16 sums: needs at least {blocks} elements, got {}",
            sums.len()
        );
        let blocks_i = to_i32("blocks", blocks)?;
        let cfg = LaunchConfig {
            grid_dim: (to_u32("blocks", blocks)?, 1, 1),
            block_dim: (PROBE_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.function("read_probe_f16")?;
        let s = self.stream();
        let (p_b, _g0) = buf.device_ptr(s);
        ensure!(
            p_b % 16 == 0,
            "read_probe_f16: the buffer is not 16-byte aligned"
        );
        let (p_s, _g1) = sums.device_ptr_mut(s);
        let mut b = s.launch_builder(f);
        b.arg(&p_b).arg(&n_vec).arg(&p_s).arg(&blocks_i);
        // SAFETY: argument list matches probe.cu; lengths and alignment checked above.
        unsafe { b.launch(cfg) }.map_err(launch_err("read_probe_f16"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_and_blocks() {
        assert_eq!(probe_vectors(16).unwrap(), 2);
        assert!(probe_vectors(0).is_err());
        assert!(probe_vectors(12).is_err());
        let t = PROBE_THREADS as u64;
        // Two blocks: vectors 0..t in block 0, t..2t in block 1, then around again.
        assert_eq!(probe_block_of(0, 2), 0);
        assert_eq!(probe_block_of(t - 1, 2), 0);
        assert_eq!(probe_block_of(t, 2), 1);
        assert_eq!(probe_block_of(2 * t, 2), 0);
        assert_eq!(probe_block_of(5 * t + 3, 1), 0);
        assert_eq!(probe_block_counts(132), vec![132, 264, 528, 1056]);
        assert_eq!(probe_block_counts(0), vec![1, 2, 4, 8]);
    }
}
