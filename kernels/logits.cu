// logits.cu: argmax and softmax over the vocabulary (f32 logits).
//
// One block per row with a fixed block size: every reduction order depends only on V.
#include "common.cuh"

#define VOCAB_THREADS 1024
#define VOCAB_WARPS (VOCAB_THREADS / 32)

// Larger value wins; on equal values the smaller index wins (NaN never wins).
__device__ __forceinline__ void better(float& v, int& i, float ov, int oi) {
    if (ov > v || (ov == v && oi < i)) {
        v = ov;
        i = oi;
    }
}

// logits: f32 [M, V]; out: u32 [M] index of the largest logit (first one on ties).
// grid (M), block VOCAB_THREADS.
extern "C" __global__ void __launch_bounds__(VOCAB_THREADS)
argmax_f32(const float* __restrict__ logits, unsigned int* __restrict__ out, int V) {
    __shared__ float sv[VOCAB_WARPS];
    __shared__ int si[VOCAB_WARPS];
    const float* row = logits + (size_t)blockIdx.x * V;
    float bv = NEG_INF;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < V; i += VOCAB_THREADS) better(bv, bi, row[i], i);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        better(bv, bi, ov, oi);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        sv[warp] = bv;
        si[warp] = bi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float v = sv[0];
        int i = si[0];
        for (int w = 1; w < VOCAB_WARPS; ++w) better(v, i, sv[w], si[w]);
        out[blockIdx.x] = (i == 0x7fffffff) ? 0u : (unsigned int)i;  // all NaN / -inf: 0
    }
}

// logits: f32 [M, V]; probs: f32 [M, V] = softmax(logits · inv_temp) per row.
// grid (M), block VOCAB_THREADS.
extern "C" __global__ void __launch_bounds__(VOCAB_THREADS)
softmax_f32(const float* __restrict__ logits, float* __restrict__ probs, int V,
            float inv_temp) {
    __shared__ float scratch[VOCAB_WARPS];
    const float* row = logits + (size_t)blockIdx.x * V;
    float* prow = probs + (size_t)blockIdx.x * V;
    float mx = NEG_INF;
    for (int i = threadIdx.x; i < V; i += VOCAB_THREADS) mx = fmaxf(mx, row[i] * inv_temp);
    mx = block_max<VOCAB_WARPS>(mx, scratch);
    float sum = 0.0f;
    for (int i = threadIdx.x; i < V; i += VOCAB_THREADS) {
        const float e = expf(row[i] * inv_temp - mx);
        prow[i] = e;
        sum += e;
    }
    const float inv = 1.0f / block_sum<VOCAB_WARPS>(sum, scratch);
    for (int i = threadIdx.x; i < V; i += VOCAB_THREADS) prow[i] *= inv;
}
