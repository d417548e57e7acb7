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
