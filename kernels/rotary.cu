// rotary.cu: partial rotary embedding (rotate-half) fused with the KV-cache write.
//
// KV cache layout (one layer): f16 [H, max_pos, hd], K and V in separate buffers; the
// whole cache is [layers][H][max_pos][hd]. A head's keys are contiguous in position, which is
// what attention streams.
// Positions come from device memory (pos[M]) so one captured CUDA graph serves every step.
#include "common.cuh"

// qkv:     f16 [M, H, 3, hd]  fused QKV projection output, per head q | k | v
// pos:     i32 [M]            absolute position of each row
// q_out:   f16 [M, H, hd]     rotated queries
// k_cache: f16 [H, max_pos, hd] rotated keys written at pos[m]
// v_cache: f16 [H, max_pos, hd] values written at pos[m]
// Rotary on the first `rot` dims (even): for i < rot/2, with a = pos · base^(−2i/rot),
//   out[i]         = x[i]·cos a − x[i + rot/2]·sin a
//   out[i + rot/2] = x[i + rot/2]·cos a + x[i]·sin a
// grid (H, M), block = hd rounded up to a multiple of 32 (one thread per dim).
// A position outside [0, max_pos) writes nothing to the cache (and its q row is NaN).
extern "C" __global__ void rotary_kv_f16(const f16_t* __restrict__ qkv,
                                         const int* __restrict__ pos, f16_t* __restrict__ q_out,
                                         f16_t* __restrict__ k_cache,
                                         f16_t* __restrict__ v_cache, int H, int hd, int rot,
                                         int max_pos, float base) {
    const int h = blockIdx.x, m = blockIdx.y, d = threadIdx.x;
    if (d >= hd) return;
    const int p = pos[m];
    const f16_t* src = qkv + ((size_t)m * H + h) * 3 * hd;
    const size_t qo = ((size_t)m * H + h) * hd + d;
    if (p < 0 || p >= max_pos) {
        q_out[qo] = 0x7e00;  // f16 NaN
        return;
    }
    float q = h2f(src[d]);
    float k = h2f(src[hd + d]);
    const f16_t v = src[2 * hd + d];
    if (d < rot) {
        const int half = rot >> 1;
        const int i = d < half ? d : d - half;
        const int partner = d < half ? d + half : d - half;
        // inv_freq = base^(−2i/rot) in f32, angle = pos · inv_freq in f32 (as HF computes).
        const float inv_freq = 1.0f / powf(base, (float)(2 * i) / (float)rot);
        const float a = (float)p * inv_freq;
        float s, c;
        sincosf(a, &s, &c);
        const float qp = h2f(src[partner]), kp = h2f(src[hd + partner]);
        if (d < half) {
            q = q * c - qp * s;
            k = k * c - kp * s;
        } else {
            q = q * c + qp * s;
            k = k * c + kp * s;
        }
    }
    q_out[qo] = f2h(q);
    const size_t co = ((size_t)h * max_pos + p) * hd + d;
    k_cache[co] = f2h(k);
    v_cache[co] = v;
}
