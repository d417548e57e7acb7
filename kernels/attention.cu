// attention.cu: causal attention of M queries over the KV cache, flash-decoding style, in
// one launch.
//
// The key axis is cut into fixed splits of ATT_SPLIT positions (a constant, never a function
// of M or of the context length), and the queries into chunks of ATT_MAX_M (16): query chunk
// c holds rows c·16 .. min(M, c·16 + 16). One block per (split, head, query chunk) computes
// scores for each of the chunk's queries against the split's keys, the split's max, Σ exp
// and Σ p·v (f32), and writes them to the scratch; then it takes a ticket from the (chunk,
// head) counter, and the block that finishes last of the chunk's live splits combines them:
// for each query and dim it rescales and adds the splits in split order (which block that is
// does not matter: every block writes its split to its own slot, and the sum runs over the
// slots in order). It resets the counter to 0 for the next launch. A decode or verify step
// (M <= 16) is one chunk; a long prompt's queries go in few launches (the launcher bounds M
// by its scratch, ATT_PREFILL_ROWS in crates/cuda/src/ops.rs).
//
// Batch invariance: what query m computes depends only on its own q, pos[m] and the cache.
// Scores are per (query, key) dot products in a fixed dim order; masked slots (key > pos[m])
// hold −inf / 0 before the fixed-shape max and sum trees over the ATT_SPLIT slots; the p·v
// sum runs over keys 0..=pos[m] of the split in key order; the combine runs over splits
// 0..=pos[m]/ATT_SPLIT in order. The other queries of its chunk only decide which key slots
// are computed at all (slots past every chunk query's position are skipped, and masked for
// query m anyway), and the chunk index only offsets the rows a block reads and writes. So a
// query's output is bit-identical whether it is computed alone (decode), among up to 16
// (verify), or in any chunk of a long prompt's launch.
//
// KV cache layout (one layer): f16 [H, max_pos, hd] for K and for V.
#include "common.cuh"

#define ATT_SPLIT 128  // keys per split = threads per block of pass 1
#define ATT_WARPS (ATT_SPLIT / 32)
#define ATT_MAX_M 16
#define ATT_MAX_HD 128

// One output element: query m (of the chunk), dim d, from the splits of query m's keys in
// split order. p: the query's position (invalid: an f16 NaN, so a bad position is loud).
__device__ __forceinline__ f16_t attn_combine_one(const float* o_part, const float* ml_part,
                                                  int p, int m, int h, int d, int H, int hd,
                                                  int max_pos, int n_split) {
    if (p < 0 || p >= max_pos) return 0x7e00;
    const int ns = min(p / ATT_SPLIT + 1, n_split);
    const size_t base = ((size_t)m * H + h) * n_split;
    float mx = NEG_INF;
    for (int s = 0; s < ns; ++s) mx = fmaxf(mx, ld_cg_f32(ml_part + (base + s) * 2));
    float l = 0.0f, acc = 0.0f;
    for (int s = 0; s < ns; ++s) {
        const float w = expf(ld_cg_f32(ml_part + (base + s) * 2) - mx);
        l = fmaf(w, ld_cg_f32(ml_part + (base + s) * 2 + 1), l);
        acc = fmaf(w, ld_cg_f32(o_part + (base + s) * hd + d), acc);
    }
    return f2h(acc / l);
}

// q:        f16 [M, H, hd]        rotated queries (hd % 8 == 0, hd <= 128), any M >= 1
// k_cache:  f16 [H, max_pos, hd]
// v_cache:  f16 [H, max_pos, hd]
// pos:      i32 [M]               query m sees keys 0..=pos[m]
// o_part:   f32 [M, H, n_split, hd] scratch: un-normalised Σ p·v of each split
// ml_part:  f32 [M, H, n_split, 2]  scratch: (max score, Σ exp(score − max)) of each split
// counters: u32 [ceil(M / ATT_MAX_M), H], zero before the launch, zero after it
// out:      f16 [M, H·hd]         (row m = heads concatenated, the input of attention.dense)
// Only splits s <= pos[m] / ATT_SPLIT are written and read for query m.
// grid (n_split, H, ceil(M / ATT_MAX_M)) with n_split = ceil(max_pos / ATT_SPLIT), block
// ATT_SPLIT: block (s, h, c) computes query rows c·ATT_MAX_M .. min(M, (c + 1)·ATT_MAX_M).
// A block whose split starts past every query's position exits at once (split 0 always
// runs, so a chunk whose positions are all invalid still writes its NaNs), so the grid can
// be sized for the cache capacity and captured once in a CUDA graph.
extern "C" __global__ void __launch_bounds__(ATT_SPLIT)
attention_f16(const f16_t* __restrict__ q, const f16_t* __restrict__ k_cache,
              const f16_t* __restrict__ v_cache, const int* __restrict__ pos,
              float* __restrict__ o_part, float* __restrict__ ml_part,
              unsigned* __restrict__ counters, f16_t* __restrict__ out, int M, int H, int hd,
              int max_pos, int n_split, float scale) {
    __shared__ float qs[ATT_MAX_M][ATT_MAX_HD];  // scaled queries
    __shared__ float ps[ATT_MAX_M][ATT_SPLIT];   // scores, then probabilities
    __shared__ float red_max[ATT_WARPS][ATT_MAX_M];
    __shared__ float red_sum[ATT_WARPS][ATT_MAX_M];
    __shared__ int spos[ATT_MAX_M];
    __shared__ int qpos[ATT_MAX_M];
    __shared__ bool last_block;

    const int s = blockIdx.x, h = blockIdx.y;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int j0 = s * ATT_SPLIT;

    // This block's query chunk: from here on, rows are the chunk's and M is its size.
    const int r0 = (int)blockIdx.z * ATT_MAX_M;
    if (r0 >= M) return;  // uniform over the block (a grid larger than M needs)
    M = min(M - r0, ATT_MAX_M);
    q += (size_t)r0 * H * hd;
    pos += r0;
    o_part += (size_t)r0 * H * n_split * hd;
    ml_part += (size_t)r0 * H * n_split * 2;
    out += (size_t)r0 * H * hd;

    if (tid < M) {
        qpos[tid] = pos[tid];
        spos[tid] = min(pos[tid], max_pos - 1);
    }
    __syncthreads();
    int last = -1;  // largest position any query sees
    for (int m = 0; m < M; ++m) last = max(last, spos[m]);
    if (j0 > last && s > 0) return;  // uniform over the block

    for (int i = tid; i < M * hd; i += ATT_SPLIT) {
        const int m = i / hd, d = i % hd;
        qs[m][d] = h2f(q[((size_t)m * H + h) * hd + d]) * scale;
    }
    __syncthreads();

    // Scores: thread tid owns key j = j0 + tid.
    const int j = j0 + tid;
    const bool live = j <= last;  // j < max_pos follows
    float acc[ATT_MAX_M];
#pragma unroll
    for (int m = 0; m < ATT_MAX_M; ++m) acc[m] = 0.0f;
    if (live) {
        const f16_t* krow = k_cache + ((size_t)h * max_pos + j) * hd;
        for (int d8 = 0; d8 < hd; d8 += 8) {
            float kf[8];
            unpack8(ld_cached16(krow + d8), kf);
#pragma unroll
            for (int m = 0; m < ATT_MAX_M; ++m) {
                if (m < M) {
#pragma unroll
                    for (int e = 0; e < 8; ++e) acc[m] = fmaf(qs[m][d8 + e], kf[e], acc[m]);
                }
            }
        }
    }

    // Per query: split max over the ATT_SPLIT slots (masked slots are −inf).
#pragma unroll
    for (int m = 0; m < ATT_MAX_M; ++m) {
        if (m < M) {
            const float sc = (live && j <= spos[m]) ? acc[m] : NEG_INF;
            acc[m] = sc;
            const float wm = warp_max(sc);
            if (lane == 0) red_max[warp][m] = wm;
        }
    }
    __syncthreads();
    // p = exp(score − max), 0 on masked slots; fixed-tree sum over the slots.
#pragma unroll
    for (int m = 0; m < ATT_MAX_M; ++m) {
        if (m < M) {
            float mx = red_max[0][m];
#pragma unroll
            for (int w = 1; w < ATT_WARPS; ++w) mx = fmaxf(mx, red_max[w][m]);
            const float p = (acc[m] == NEG_INF) ? 0.0f : expf(acc[m] - mx);
            ps[m][tid] = p;
            const float ws = warp_sum(p);
            if (lane == 0) red_sum[warp][m] = ws;
        }
    }
    __syncthreads();

    // Σ p·v: thread = (query group g, dim pair dp); keys in order over the query's live range.
    const int pairs = hd >> 1;
    const int groups = ATT_SPLIT / pairs;
    const int g = tid / pairs, dp = tid % pairs;
    if (g < groups) {
        for (int m = g; m < M; m += groups) {
            const int limit = min(ATT_SPLIT, spos[m] + 1 - j0);  // keys j0 .. j0+limit-1
            if (limit <= 0) continue;
            const unsigned int* vcol =
                reinterpret_cast<const unsigned int*>(v_cache + ((size_t)h * max_pos + j0) * hd) +
                dp;
            const int vstride = hd >> 1;  // in 32-bit words
            float a0 = 0.0f, a1 = 0.0f;
#pragma unroll 8
            for (int jj = 0; jj < limit; ++jj) {
                const unsigned int vv = vcol[(size_t)jj * vstride];
                const float p = ps[m][jj];
                a0 = fmaf(p, lo2f(vv), a0);
                a1 = fmaf(p, hi2f(vv), a1);
            }
            const size_t base = ((size_t)m * H + h) * n_split + s;
            o_part[base * hd + 2 * dp] = a0;
            o_part[base * hd + 2 * dp + 1] = a1;
            if (dp == 0) {
                float mx = red_max[0][m], sum = red_sum[0][m];
#pragma unroll
                for (int w = 1; w < ATT_WARPS; ++w) {
                    mx = fmaxf(mx, red_max[w][m]);
                    sum += red_sum[w][m];
                }
                ml_part[base * 2] = mx;
                ml_part[base * 2 + 1] = sum;
            }
        }
    }

    // The chunk's live splits: those starting at or before its last position (at least
    // split 0). The last of them to finish combines.
    const int live_splits = max(last, 0) / ATT_SPLIT + 1;
    __threadfence();
    __syncthreads();
    const unsigned ticket = blockIdx.z * (unsigned)H + h;
    if (tid == 0) last_block = atomicAdd(&counters[ticket], 1u) == (unsigned)(live_splits - 1);
    __syncthreads();
    if (!last_block) return;
    __threadfence();
    for (int i = tid; i < M * hd; i += ATT_SPLIT) {
        const int m = i / hd, d = i % hd;
        out[(size_t)m * H * hd + (size_t)h * hd + d] =
            attn_combine_one(o_part, ml_part, qpos[m], m, h, d, H, hd, max_pos, n_split);
    }
    if (tid == 0) counters[ticket] = 0u;
}
