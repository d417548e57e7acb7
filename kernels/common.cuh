// common.cuh: device helpers shared by every kernel file.
//
// Header-free on purpose: NVRTC alone (no cuda_fp16.h, no CUDA toolkit) compiles every
// kernel. f16 values travel as raw IEEE binary16 bits in `unsigned short`; the conversions
// below are single PTX instructions (round-to-nearest-even on the way down).
// The Rust side passes this file to NVRTC as an in-memory header named "common.cuh".
// With SPEDEC_HOST_EMU defined (crates/check/emu) the few PTX lines are replaced by
// host C++ so the kernels' logic can be tested on a CPU.
#pragma once

typedef unsigned short f16_t;  // IEEE binary16 bits

#define NEG_INF (__int_as_float(0xff800000))

#ifndef SPEDEC_HOST_EMU
__device__ __forceinline__ float h2f(f16_t h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ f16_t f2h(float f) {
    f16_t h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
#else  // host emulation (crates/check/emu): same semantics without PTX
__device__ __forceinline__ float h2f(f16_t h) { return emu_h2f(h); }
__device__ __forceinline__ f16_t f2h(float f) { return emu_f2h(f); }
#endif

// Low and high halves of a 32-bit word holding two f16 values (element 2i, 2i+1).
__device__ __forceinline__ float lo2f(unsigned int w) { return h2f((f16_t)(w & 0xffffu)); }
__device__ __forceinline__ float hi2f(unsigned int w) { return h2f((f16_t)(w >> 16)); }

// Eight f16 values from one 16-byte word, in memory order.
__device__ __forceinline__ void unpack8(uint4 v, float out[8]) {
    out[0] = lo2f(v.x); out[1] = hi2f(v.x);
    out[2] = lo2f(v.y); out[3] = hi2f(v.y);
    out[4] = lo2f(v.z); out[5] = hi2f(v.z);
    out[6] = lo2f(v.w); out[7] = hi2f(v.w);
}

// 16-byte global load through the read-only path that does not allocate in L1: for
// streamed data read exactly once (weights).
__device__ __forceinline__ uint4 ld_stream16(const void* p) {
#ifndef SPEDEC_HOST_EMU
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
#else
    return *reinterpret_cast<const uint4*>(p);
#endif
}

// 16-byte global load that may be cached (activations reused by many blocks).
__device__ __forceinline__ uint4 ld_cached16(const void* p) {
    return *reinterpret_cast<const uint4*>(p);
}

// Butterfly reductions over a full warp: every lane ends with the same value and the
// pairing order is fixed (xor 16, 8, 4, 2, 1), so results never depend on launch sizes.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Block-wide sum for blocks of NWARPS full warps. `scratch` holds NWARPS floats. Warp
// partials are added in warp order 0, 1, 2, ... so the tree is fixed for a given block size.
// Every thread gets the result. Contains two __syncthreads().
template <int NWARPS>
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float s = scratch[0];
#pragma unroll
    for (int i = 1; i < NWARPS; ++i) s += scratch[i];
    __syncthreads();
    return s;
}

template <int NWARPS>
__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_max(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float s = scratch[0];
#pragma unroll
    for (int i = 1; i < NWARPS; ++i) s = fmaxf(s, scratch[i]);
    __syncthreads();
    return s;
}

// Exact GELU (erf form), as GPT-NeoX's "gelu".
__device__ __forceinline__ float gelu_erf(float x) {
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

// ---- Tensor cores and asynchronous copies (sm_80+; used by linear_tc.cu) ----------------
//
// mma_16816_f16f32: D = A·B + C for one warp, A f16 16×16 (row), B f16 16×8 (col, i.e. given
// as 8 columns of 16 k), C and D f32 16×8. Fragments per lane (PTX ISA, "Matrix Fragments for
// mma.m16n8k16 with floating point type"), g = lane >> 2, t = lane & 3, each f16x2 word with
// the lower column (or k) in its low half:
//   a[0] = A[g][2t, 2t+1]     a[1] = A[g+8][2t, 2t+1]
//   a[2] = A[g][2t+8, 2t+9]   a[3] = A[g+8][2t+8, 2t+9]
//   b[0] = B[2t, 2t+1][g]     b[1] = B[2t+8, 2t+9][g]
//   c[0], c[1] = C[g][2t], C[g][2t+1]     c[2], c[3] = C[g+8][2t], C[g+8][2t+1]   (D alike)
// Warp-collective: all 32 lanes execute it together (never under divergent control flow).
// The host emulation (emu.h, emu_mma_16816) gathers every lane's fragments at a warp barrier
// and computes each element as c + (Σ_k a·b summed in f32 in k order 0..15); the tensor
// core's internal rounding differs slightly, but it, too, is the same for every M.
#ifndef SPEDEC_HOST_EMU
__device__ __forceinline__ void mma_16816_f16f32(float d[4], const unsigned a[4],
                                                 const unsigned b[2], const float c[4]) {
#if __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]),
          "f"(c[1]), "f"(c[2]), "f"(c[3]));
#else
    asm volatile("trap;");
#endif
}

// 16-byte global → shared copy that does not wait (cp.async.cg: L2 only); with valid false
// the 16 shared bytes are zero-filled and nothing is read. Completion: cp_async_commit()
// closes a group, cp_async_wait<N>() waits until at most N groups are pending.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
#if __CUDA_ARCH__ >= 800
    unsigned s;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(s) : "l"(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
                 :
                 : "r"(s), "l"(gmem), "r"(valid ? 16 : 0)
                 : "memory");
#else
    asm volatile("trap;");
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

// f32 load from L2 (ld.global.cg), for data other blocks wrote during this launch.
__device__ __forceinline__ float ld_cg_f32(const float* p) {
    float v;
    asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p));
    return v;
}
#else  // host emulation: the copies happen at once; the mma is a warp barrier (emu.h)
__device__ __forceinline__ void mma_16816_f16f32(float d[4], const unsigned a[4],
                                                 const unsigned b[2], const float c[4]) {
    emu_mma_16816(d, a, b, c);
}
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
    if (valid) std::memcpy(smem, gmem, 16);
    else std::memset(smem, 0, 16);
}
__device__ __forceinline__ void cp_async_commit() {}
template <int N>
__device__ __forceinline__ void cp_async_wait() {}
__device__ __forceinline__ float ld_cg_f32(const float* p) { return *p; }
#endif

// 32-bit shared-memory load of two adjacent f16 (4-byte aligned).
__device__ __forceinline__ unsigned lds_u32(const f16_t* p) {
    return *reinterpret_cast<const unsigned*>(p);
}

// ---- Philox4x32-10: the sampler's counter-based generator (used by sampling.cu) ----------
//
// Salmon, Moraes, Dror & Shaw (SC 2011). Ten rounds of
//   [c0, c1, c2, c3] → [hi(M1·c2) ^ c1 ^ k0, lo(M1·c2), hi(M0·c0) ^ c3 ^ k1, lo(M0·c0)]
// with M0 = 0xD2511F53, M1 = 0xCD9E8D57, the key bumped by (0x9E3779B9, 0xBB67AE85) between
// rounds. The Rust twin is spedec_sampling::philox (tested against Random123's known-answer
// vectors; this one is tested equal to it bit for bit through the host emulation).
// Sampler counters: key = seed (k0 low word, k1 high word), counter = (position, stream,
// index, 0); only output word 0 is used, as u = (word >> 8) · 2^-24 (exact in f32 and f64).
#define PHILOX_STREAM_FIRST 0     // first generated token (and plain autoregressive draws)
#define PHILOX_STREAM_DRAFT 1     // a draft token
#define PHILOX_STREAM_ACCEPT 2    // the acceptance test of a draft token
#define PHILOX_STREAM_RESIDUAL 3  // the residual draw at the first rejection, or the bonus

__device__ __forceinline__ uint4 philox4x32_10(uint4 c, unsigned k0, unsigned k1) {
#pragma unroll
    for (int r = 0; r < 10; ++r) {
        if (r > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const unsigned long long p0 = (unsigned long long)0xD2511F53u * c.x;
        const unsigned long long p1 = (unsigned long long)0xCD9E8D57u * c.z;
        uint4 n;
        n.x = (unsigned)(p1 >> 32) ^ c.y ^ k0;
        n.y = (unsigned)p1;
        n.z = (unsigned)(p0 >> 32) ^ c.w ^ k1;
        n.w = (unsigned)p0;
        c = n;
    }
    return c;
}

// Output word 0 for counter (position, stream, index, 0) under key seed.
__device__ __forceinline__ unsigned philox_word(unsigned long long seed, unsigned position,
                                                unsigned stream, unsigned index) {
    uint4 c;
    c.x = position;
    c.y = stream;
    c.z = index;
    c.w = 0u;
    return philox4x32_10(c, (unsigned)seed, (unsigned)(seed >> 32)).x;
}

// The uniform in [0, 1) of a Philox word: its top 24 bits · 2^-24.
__device__ __forceinline__ float philox_to_uniform(unsigned word) {
    return (float)(word >> 8) * (1.0f / 16777216.0f);
}
