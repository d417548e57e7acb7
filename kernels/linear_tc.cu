// linear_tc.cu: y = x · Wᵀ + b on tensor cores (mma.sync m16n8k16, f16 in, f32 accumulate)
// for any number of rows M, with a per-output reduction order that never depends on M.
//
// x: f16 [M, K], W: f16 [N, K] (PyTorch Linear layout, used as the "col" B operand as is: no
// re-layout), f32 accumulation, the 4 epilogues of linear.cu (f16, f16+GELU, f32, f32 +=).
// Needs sm_80+ (mma.sync m16n8k16 and cp.async); on older targets the entry points trap.
//
// ## The reduction order (what makes it batch invariant)
//
// K is cut into k-tiles of LTC_BK = 32 (the last one zero-filled past K). The k-tiles are
// split into `splits` contiguous ranges of `tiles_per_split` tiles (the last may be shorter);
// both numbers are chosen by the host from (N, K) only (`spedec_cuda::linear_tc::splits`),
// never from M. Output (m, n) is then, for every M and whichever block computes it:
//   p_s = mma-chain over the k16 steps of split s in increasing k, starting from 0.0f
//         (acc = mma(x[m, k16], W[n, k16], acc), one f32 accumulator per output)
//   y   = ((p_0 + p_1) + ... + p_{S-1}) + b[n]      (S = 1: y = p_0 + b[n])
// then the epilogue. The split partials go to a scratch buffer `part` f32 [S, M, N]; every
// block of an output tile bumps that tile's counter after writing its partial, and the block
// that finds the count complete sums the S partials of the tile in the fixed order s = 0, 1,
// ... (which block arrives last varies from run to run; the order of the sum does not), then
// resets the counter to 0 for the next launch. No atomics touch a value.
// Inside one mma the tensor core's own summation is fixed by the hardware and the same for
// every row and column slot; a row also keeps its slot (m mod 16) in every launch shape,
// because row tiles and host-side row chunks start at multiples of 16.
//
// ## Tiling
//
// 4 warps (LTC_THREADS = 128). A warp computes (16·MT) rows × 32 columns (MT m16 tiles × 4
// n8 tiles), the block WARPS_M × WARPS_N warps. Two instances of the same body:
//   linear_tc16_f16:  MT 1, warps 1×4: block 16 rows × 128 columns, 4 stages (M <= 16: decode
//                     and verify). Grid (ceil(N/128), ceil(M/16), S).
//   linear_tc128_f16: MT 4, warps 2×2: block 128 rows × 64 columns, 3 stages (prefill).
//                     Grid (ceil(N/64), ceil(M/128), S).
// Both produce bit-identical outputs (same K order); the host picks by M.
// Each k-tile stage holds x [BM][32] and W [BN][32] f16 in shared memory, rows padded to 40
// halves (80 B) so the fragment reads (row g, word t of lane g·4+t) hit 32 distinct banks.
// Stages are filled by cp.async.cg (16 B per copy, zero-fill for rows ≥ M or N and k ≥ K),
// STAGES−1 tiles ahead of the tensor cores. Rows of x past M are zeros and never stored.
//
// ## Expected figures (a model, to be measured on the next GPU run)
//
// linear_tc16_f16 at M ≤ 16 is a W stream: per block 4 stages × 8 KB of W (+ 1 KB of x),
// 46,080 B static shared memory, ≤ 128 registers → 4 blocks per SM (shared memory bound on
// H100/H200: 228 KB), so ~3 × 8 KB × 4 ≈ 96 KB of W in flight per SM (~12.7 MB over 132 SMs,
// well above the ~3–4 MB that 4 TB/s × ~0.8 µs latency needs). W is read exactly once per
// launch for M ≤ 16, so time ≈ N·K·2 B / read bandwidth: embed_out 2.8b (257.6 MB) ≈ 64 µs at
// 4.05 TB/s, and M = 16 costs the same bytes (S = 1 there: no partials). A split matrix adds
// S·M·N·8 B of partial traffic (written, read back from L2): at M = 16 for 2.8b's 4h_to_h
// (S = 14) 4.6 MB next to 52 MB of W (~9 %), at M = 1 under 0.6 %.
// ptxas (NVRTC 12.9, sm_80 / sm_90): linear_tc16_f16 80 / 80 registers, linear_tc128_f16
// 129 / 134, both 46,084 B static shared memory, 0 spills.
// linear_tc128_f16 at large M: per k16 step a warp reads 2 KB of x and 1 KB of W fragments
// from shared memory for 16 mma (64×32×16), so shared-memory bandwidth caps it near 2/3 of the
// mma.sync peak; x and W are re-read from L2 once per 64-column / 128-row block.
#include "common.cuh"

#define LTC_THREADS 128
#define LTC_WARPS 4
#define LTC_BK 32        // k per k-tile (one pipeline stage)
#define LTC_LD 40        // shared row length in halves (LTC_BK + 8 padding)
#define LTC_WARP_N 32    // columns per warp
#define LTC16_BM 16      // rows per block, linear_tc16_f16
#define LTC16_BN 128     // columns per block, linear_tc16_f16
#define LTC16_STAGES 4
#define LTC128_BM 128    // rows per block, linear_tc128_f16
#define LTC128_BN 64     // columns per block, linear_tc128_f16
#define LTC128_STAGES 3

// Epilogue modes (as linear.cu).
#define LTC_OUT_F16 0
#define LTC_OUT_F16_GELU 1
#define LTC_OUT_F32 2
#define LTC_ADD_F32 3

__device__ __forceinline__ void ltc_store(f16_t* out_h, float* out_f, const f16_t* bias,
                                          int mode, size_t o, int n, float v) {
    if (bias != nullptr) v += h2f(bias[n]);
    switch (mode) {
        case LTC_OUT_F16: out_h[o] = f2h(v); break;
        case LTC_OUT_F16_GELU: out_h[o] = f2h(gelu_erf(v)); break;
        case LTC_OUT_F32: out_f[o] = v; break;
        default: out_f[o] = out_f[o] + v; break;
    }
}

// Copy rows [row0, row0 + ROWS) × k [k0, k0 + 32) of a [rows, K] f16 matrix into a shared
// tile [ROWS][LTC_LD], zero-filling rows >= nrows and k >= K (K % 8 == 0, 16-byte chunks).
template <int ROWS>
__device__ __forceinline__ void ltc_load_tile(f16_t* s, const f16_t* g, int row0, int nrows,
                                              int k0, int K) {
    for (int c = threadIdx.x; c < ROWS * (LTC_BK / 8); c += LTC_THREADS) {
        const int r = c / (LTC_BK / 8), kc = (c % (LTC_BK / 8)) * 8;
        const int row = row0 + r, k = k0 + kc;
        const bool valid = row < nrows && k < K;
        const f16_t* src = valid ? g + (size_t)row * K + k : g;
        cp_async16(s + r * LTC_LD + kc, src, valid);
    }
}

template <int MT, int WARPS_M, int STAGES>
__device__ __forceinline__ void ltc_body(const f16_t* __restrict__ x,
                                         const f16_t* __restrict__ w,
                                         const f16_t* __restrict__ bias,
                                         f16_t* __restrict__ out_h, float* __restrict__ out_f,
                                         float* __restrict__ part,
                                         unsigned* __restrict__ counters, int M, int N, int K,
                                         int tiles_per_split, int splits, int mode) {
    constexpr int WARPS_N = LTC_WARPS / WARPS_M;
    constexpr int NT = LTC_WARP_N / 8;
    constexpr int BM = 16 * MT * WARPS_M;
    constexpr int BN = LTC_WARP_N * WARPS_N;
    constexpr int STAGE = (BM + BN) * LTC_LD;  // halves per stage: x tile, then W tile
    __shared__ uint4 smem[STAGES * STAGE / 8];
    __shared__ unsigned last_flag;
    f16_t* sbase = reinterpret_cast<f16_t*>(smem);

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int g = lane >> 2, tq = lane & 3;
    const int wm = warp / WARPS_N, wn = warp % WARPS_N;
    const int n_base = blockIdx.x * BN, m_base = blockIdx.y * BM, s = blockIdx.z;
    const int k_tiles = (K + LTC_BK - 1) / LTC_BK;
    const int kt0 = s * tiles_per_split;
    const int nt = min(kt0 + tiles_per_split, k_tiles) - kt0;  // >= 1 (host plan)

    float acc[MT][NT][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

    // Prologue: STAGES-1 tiles in flight (an empty group where there are fewer tiles).
#pragma unroll
    for (int st = 0; st < STAGES - 1; ++st) {
        if (st < nt) {
            f16_t* sx = sbase + st * STAGE;
            ltc_load_tile<BM>(sx, x, m_base, M, (kt0 + st) * LTC_BK, K);
            ltc_load_tile<BN>(sx + BM * LTC_LD, w, n_base, N, (kt0 + st) * LTC_BK, K);
        }
        cp_async_commit();
    }

    for (int i = 0; i < nt; ++i) {
        cp_async_wait<STAGES - 2>();  // tile i has landed (this thread's copies)
        __syncthreads();              // ... everyone's, and stage (i-1) % STAGES is free
        {
            const int j = i + STAGES - 1;
            if (j < nt) {
                f16_t* sx = sbase + (j % STAGES) * STAGE;
                ltc_load_tile<BM>(sx, x, m_base, M, (kt0 + j) * LTC_BK, K);
                ltc_load_tile<BN>(sx + BM * LTC_LD, w, n_base, N, (kt0 + j) * LTC_BK, K);
            }
            cp_async_commit();
        }
        const f16_t* sx = sbase + (i % STAGES) * STAGE;
        const f16_t* sw = sx + BM * LTC_LD;
#pragma unroll
        for (int kk = 0; kk < LTC_BK; kk += 16) {
            unsigned af[MT][4], bf[NT][2];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                const f16_t* p = sx + ((wm * MT + mt) * 16 + g) * LTC_LD + kk + 2 * tq;
                af[mt][0] = lds_u32(p);
                af[mt][1] = lds_u32(p + 8 * LTC_LD);
                af[mt][2] = lds_u32(p + 8);
                af[mt][3] = lds_u32(p + 8 * LTC_LD + 8);
            }
#pragma unroll
            for (int j = 0; j < NT; ++j) {
                const f16_t* q = sw + (wn * LTC_WARP_N + j * 8 + g) * LTC_LD + kk + 2 * tq;
                bf[j][0] = lds_u32(q);
                bf[j][1] = lds_u32(q + 8);
            }
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int j = 0; j < NT; ++j) mma_16816_f16f32(acc[mt][j], af[mt], bf[j], acc[mt][j]);
        }
    }
    cp_async_wait<0>();

    // Fragment element e of (mt, j) is output (row0 + mt·16 + g + 8·(e >= 2), col0 + j·8 +
    // 2·tq + (e & 1)).
    const int row0 = m_base + wm * MT * 16 + g;
    const int col0 = n_base + wn * LTC_WARP_N + 2 * tq;
    if (splits == 1) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int j = 0; j < NT; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int r = row0 + mt * 16 + (e >> 1) * 8, c = col0 + j * 8 + (e & 1);
                    if (r < M && c < N)
                        ltc_store(out_h, out_f, bias, mode, (size_t)r * N + c, c, acc[mt][j][e]);
                }
        return;
    }

    // Split-K: publish this split's partial, then the tile's last block sums all of them.
    const size_t plane = (size_t)M * N;
    float* mine = part + (size_t)s * plane;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int r = row0 + mt * 16 + (e >> 1) * 8, c = col0 + j * 8 + (e & 1);
                if (r < M && c < N) mine[(size_t)r * N + c] = acc[mt][j][e];
            }
    __threadfence();
    __syncthreads();
    const int n_tiles = (N + BN - 1) / BN;
    const unsigned tile = blockIdx.y * (unsigned)n_tiles + blockIdx.x;
    if (tid == 0) last_flag = atomicAdd(&counters[tile], 1u) == (unsigned)(splits - 1);
    __syncthreads();
    if (!last_flag) return;
    __threadfence();
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int r = row0 + mt * 16 + (e >> 1) * 8, c = col0 + j * 8 + (e & 1);
                if (r < M && c < N) {
                    const size_t o = (size_t)r * N + c;
                    float v = ld_cg_f32(part + o);
                    for (int t = 1; t < splits; ++t) v += ld_cg_f32(part + t * plane + o);
                    ltc_store(out_h, out_f, bias, mode, o, c, v);
                }
            }
    if (tid == 0) counters[tile] = 0u;
}

// x:        f16 [M, K]   16-byte aligned, K % 8 == 0
// w:        f16 [N, K]   16-byte aligned
// bias:     f16 [N]      or null
// out_h:    f16 [M, N]   modes 0, 1 (else unused)
// out_f:    f32 [M, N]   modes 2, 3 (else unused)
// part:     f32 [splits, M, N] scratch (unused when splits == 1)
// counters: u32 [ceil(M/BM) · ceil(N/BN)], zero before the launch, zero after it
// tiles_per_split, splits: from the host plan (functions of N and K only)
extern "C" __global__ void __launch_bounds__(LTC_THREADS, 4)
linear_tc16_f16(const f16_t* __restrict__ x, const f16_t* __restrict__ w,
                const f16_t* __restrict__ bias, f16_t* __restrict__ out_h,
                float* __restrict__ out_f, float* __restrict__ part,
                unsigned* __restrict__ counters, int M, int N, int K, int tiles_per_split,
                int splits, int mode) {
    ltc_body<1, 1, LTC16_STAGES>(x, w, bias, out_h, out_f, part, counters, M, N, K,
                                 tiles_per_split, splits, mode);
}

extern "C" __global__ void __launch_bounds__(LTC_THREADS, 3)
linear_tc128_f16(const f16_t* __restrict__ x, const f16_t* __restrict__ w,
                 const f16_t* __restrict__ bias, f16_t* __restrict__ out_h,
                 float* __restrict__ out_f, float* __restrict__ part,
                 unsigned* __restrict__ counters, int M, int N, int K, int tiles_per_split,
                 int splits, int mode) {
    ltc_body<4, 2, LTC128_STAGES>(x, w, bias, out_h, out_f, part, counters, M, N, K,
                                  tiles_per_split, splits, mode);
}
