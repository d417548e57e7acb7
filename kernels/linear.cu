// linear.cu: skinny matrix product y = x · Wᵀ + b for M <= 16 activation rows.
//
// x: f16 [M, K], W: f16 [N, K] (PyTorch Linear layout), f32 accumulation.
//
// Work split: a block of LIN_THREADS threads owns LIN_COLS consecutive output columns n and
// reads those weight rows exactly once for all M rows (memory-bandwidth bound for small M).
// K is cut into 8-element (16-byte) chunks; chunk c belongs to thread c % LIN_THREADS, which
// walks its chunks in increasing c with one fmaf chain per (row, column). The per-thread
// partials are then reduced by a fixed xor-butterfly inside each warp and added over warps
// in warp order. Nothing in that order depends on M: M is a runtime value, every row runs
// the same instructions, so a row's output is bit-identical for M = 1, 5 or 16
// (batch invariance).
#include "common.cuh"

#define LIN_THREADS 256
#define LIN_WARPS (LIN_THREADS / 32)
#define LIN_COLS 4
#define LIN_MAX_M 16

// Epilogue modes.
#define LIN_OUT_F16 0       // out_h[m, n] = f16(acc + b)
#define LIN_OUT_F16_GELU 1  // out_h[m, n] = f16(gelu(acc + b))
#define LIN_OUT_F32 2       // out_f[m, n] = acc + b               (logits)
#define LIN_ADD_F32 3       // out_f[m, n] = out_f[m, n] + (acc + b) (residual stream)

// x:     f16 [M, K]   16-byte aligned, K % 8 == 0
// w:     f16 [N, K]   16-byte aligned
// bias:  f16 [N]      or null
// out_h: f16 [M, N]   modes 0, 1 (else unused)
// out_f: f32 [M, N]   modes 2, 3 (else unused)
// grid (ceil(N / LIN_COLS)), block LIN_THREADS, no dynamic shared memory.
extern "C" __global__ void __launch_bounds__(LIN_THREADS, 2)
linear_f16(const f16_t* __restrict__ x, const f16_t* __restrict__ w,
           const f16_t* __restrict__ bias, f16_t* __restrict__ out_h,
           float* __restrict__ out_f, int M, int N, int K, int mode) {
    __shared__ float red[LIN_WARPS][LIN_MAX_M * LIN_COLS];

    const int n0 = blockIdx.x * LIN_COLS;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int chunks = K >> 3;

    // Weight row pointers; columns past N re-read row N-1 and are never stored.
    const f16_t* wrow[LIN_COLS];
#pragma unroll
    for (int c = 0; c < LIN_COLS; ++c) wrow[c] = w + (size_t)min(n0 + c, N - 1) * K;

    float acc[LIN_MAX_M][LIN_COLS];
#pragma unroll
    for (int m = 0; m < LIN_MAX_M; ++m)
#pragma unroll
        for (int c = 0; c < LIN_COLS; ++c) acc[m][c] = 0.0f;

    for (int ch = tid; ch < chunks; ch += LIN_THREADS) {
        uint4 wv[LIN_COLS];
#pragma unroll
        for (int c = 0; c < LIN_COLS; ++c) wv[c] = ld_stream16(wrow[c] + ch * 8);
        float wf[LIN_COLS][8];
#pragma unroll
        for (int c = 0; c < LIN_COLS; ++c) unpack8(wv[c], wf[c]);
#pragma unroll
        for (int m = 0; m < LIN_MAX_M; ++m) {
            if (m < M) {
                float xf[8];
                unpack8(ld_cached16(x + (size_t)m * K + ch * 8), xf);
#pragma unroll
                for (int c = 0; c < LIN_COLS; ++c)
#pragma unroll
                    for (int e = 0; e < 8; ++e) acc[m][c] = fmaf(xf[e], wf[c][e], acc[m][c]);
            }
        }
    }

#pragma unroll
    for (int m = 0; m < LIN_MAX_M; ++m) {
        if (m < M) {
#pragma unroll
            for (int c = 0; c < LIN_COLS; ++c) {
                const float v = warp_sum(acc[m][c]);
                if (lane == 0) red[warp][m * LIN_COLS + c] = v;
            }
        }
    }
    __syncthreads();

    if (tid < M * LIN_COLS) {
        const int m = tid / LIN_COLS, c = tid % LIN_COLS, n = n0 + c;
        if (n < N) {
            float s = red[0][tid];
#pragma unroll
            for (int i = 1; i < LIN_WARPS; ++i) s += red[i][tid];
            if (bias != nullptr) s += h2f(bias[n]);
            const size_t o = (size_t)m * N + n;
            switch (mode) {
                case LIN_OUT_F16: out_h[o] = f2h(s); break;
                case LIN_OUT_F16_GELU: out_h[o] = f2h(gelu_erf(s)); break;
                case LIN_OUT_F32: out_f[o] = s; break;
                default: out_f[o] = out_f[o] + s; break;
            }
        }
    }
}
