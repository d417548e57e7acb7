// probe.cu: the read-bandwidth probe of `spedec gpu-check` (a check-only kernel, never in the
// model's path).
//
// Every thread streams 16-byte vectors of a large f16 buffer (as the linears read their
// weights: ld.global.nc, no L1 allocation, four loads in flight per thread) and adds their
// 32-bit words into one u32 (wrapping), reduced to one value per block; the sums are written
// out, so no load can be elided, and integer adds keep the ALU work negligible next to the
// loads and the check exact. Wrapping addition is associative, so the result of a block does
// not depend on the order of its adds.
#include "common.cuh"

#define PROBE_THREADS 256
#define PROBE_UNROLL 4

__device__ __forceinline__ unsigned probe_words(uint4 v) { return v.x + v.y + v.z + v.w; }

// buf: f16 [n_vec · 8], read as n_vec 16-byte vectors (16-byte aligned); sums: u32 [blocks],
// sums[b] = the wrapping sum of the 32-bit words of every vector i whose
// i mod (blocks · PROBE_THREADS) lies in [b · PROBE_THREADS, (b + 1) · PROBE_THREADS)
// (thread t of block b reads vectors b · PROBE_THREADS + t, then every blocks · PROBE_THREADS).
// grid (blocks), block PROBE_THREADS.
extern "C" __global__ void __launch_bounds__(PROBE_THREADS)
read_probe_f16(const uint4* __restrict__ buf, unsigned long long n_vec,
               unsigned int* __restrict__ sums, int blocks) {
    __shared__ unsigned int warp_sums[PROBE_THREADS / 32];
    const unsigned long long stride = (unsigned long long)blocks * PROBE_THREADS;
    unsigned long long i = (unsigned long long)blockIdx.x * PROBE_THREADS + threadIdx.x;
    unsigned int acc = 0;
    for (; i + (PROBE_UNROLL - 1) * stride < n_vec; i += PROBE_UNROLL * stride) {
        uint4 v[PROBE_UNROLL];
#pragma unroll
        for (int u = 0; u < PROBE_UNROLL; ++u) v[u] = ld_stream16(buf + i + u * stride);
#pragma unroll
        for (int u = 0; u < PROBE_UNROLL; ++u) acc += probe_words(v[u]);
    }
    for (; i < n_vec; i += stride) acc += probe_words(ld_stream16(buf + i));
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned int s = 0;
        for (int w = 0; w < PROBE_THREADS / 32; ++w) s += warp_sums[w];
        sums[blockIdx.x] = s;
    }
}
