// layernorm.cu: LayerNorm over the f32 residual stream, fused with the residual add.
//
// One block per row, fixed block size: the mean and variance reductions have a fixed order
// that depends only on d, never on the number of rows M (batch invariant).
#include "common.cuh"

#define LN_THREADS 256
#define LN_WARPS (LN_THREADS / 32)

// x:      f32 [M, d]  residual stream, updated in place when add_a / add_b are given:
//                     x = (x + add_a) + add_b
// add_a:  f32 [M, d]  or null (e.g. the attention branch's output, bias included)
// add_b:  f32 [M, d]  or null (e.g. the MLP branch's output)
//                     The same f32 adds, in the same order, as two LIN_ADD_F32 epilogues.
// w0, b0: f16 [d]     first LayerNorm weight and bias; out0: f16 [M, d]
// w1, b1: f16 [d]     second LayerNorm (or null); out1: f16 [M, d] (or null)
//                     (Pythia's parallel residual normalises the same x twice: ln1, ln2.)
// grid (M), block LN_THREADS. Two passes (mean, then centred variance) in f32.
extern "C" __global__ void __launch_bounds__(LN_THREADS)
add_layernorm_f16(float* __restrict__ x, const float* __restrict__ add_a,
                  const float* __restrict__ add_b, const f16_t* __restrict__ w0,
                  const f16_t* __restrict__ b0, f16_t* __restrict__ out0,
                  const f16_t* __restrict__ w1, const f16_t* __restrict__ b1,
                  f16_t* __restrict__ out1, int d, float eps) {
    __shared__ float scratch[LN_WARPS];
    const size_t base = (size_t)blockIdx.x * d;
    float* xr = x + base;
    const bool has_add = (add_a != nullptr) || (add_b != nullptr);

    float sum = 0.0f;
    for (int i = threadIdx.x; i < d; i += LN_THREADS) {
        float v = xr[i];
        if (has_add) {
            if (add_a != nullptr) v += add_a[base + i];
            if (add_b != nullptr) v += add_b[base + i];
            xr[i] = v;  // read back below by this same thread only
        }
        sum += v;
    }
    const float mean = block_sum<LN_WARPS>(sum, scratch) / (float)d;

    float sq = 0.0f;
    for (int i = threadIdx.x; i < d; i += LN_THREADS) {
        const float c = xr[i] - mean;
        sq = fmaf(c, c, sq);
    }
    const float var = block_sum<LN_WARPS>(sq, scratch) / (float)d;
    const float rstd = 1.0f / sqrtf(var + eps);

    for (int i = threadIdx.x; i < d; i += LN_THREADS) {
        const float n = (xr[i] - mean) * rstd;
        out0[base + i] = f2h(fmaf(n, h2f(w0[i]), h2f(b0[i])));
        if (out1 != nullptr) out1[base + i] = f2h(fmaf(n, h2f(w1[i]), h2f(b1[i])));
    }
}
