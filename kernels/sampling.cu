// sampling.cu: the device sampler on f32 rows [rows, V] — processing (temperature → top-k →
// top-p, HF order and semantics as spedec_sampling::process), the categorical draw, one
// row's pick (processing and draw, or argmax, routed to the models' input ids), and the
// speculative decision (accept with u < min(1, p/q), residual norm(max(0, p − q)) at the
// first rejection, bonus from the last target row). Uniforms come from Philox4x32-10
// (common.cuh) with counter (position, stream, index, 0).
//
// One block of SAMPLE_THREADS per row; every reduction has a fixed order, and the selection
// sums are integers, so results never depend on timing or on how many rows run together.
//
// Selection (top-k, top-p) is a radix select, not a sort: the rank of a token is its logit
// mapped to an order-preserving 32-bit key (ties: lower id first, as the CPU). Four passes
// of 8 bits each build, over the tokens still matching the key prefix chosen so far, a
// histogram of counts and of fixed-point mass (RADIX_COPIES copies indexed by warp to spread
// shared-memory atomic contention), and a warp scan from the top bin picks the bin in which
// the running total crosses the target. Top-k: target k, counts → the k-th largest key.
// Top-p: target ceil(top_p · total mass) in units of 2^-48 → the key t whose tokens the
// nucleus boundary falls in; among the tokens tied at t (equal logits, hence equal p) the
// number kept follows by division, and if only some are kept a second radix select over
// their ids finds the last one. Mass as integers keeps the sums exact and order-free.
#include "common.cuh"

#define SAMPLE_THREADS 1024
#define SAMPLE_WARPS (SAMPLE_THREADS / 32)
#define RADIX_BINS 256
#define RADIX_COPIES 4
#define PHILOX_THREADS 256

typedef unsigned long long u64;

// Fixed-point unit of probability mass: p · 2^48, truncated (p <= 1, V · 2^48 < 2^64).
#define MASS_SCALE 281474976710656.0f

__device__ __forceinline__ u64 mass_fix(float p) { return (u64)(p * MASS_SCALE); }

// Order-preserving key of a logit: larger logit → larger key. −0 ranks as +0 (they compare
// equal on the CPU), NaN ranks below everything.
__device__ __forceinline__ unsigned logit_key(float x) {
    if (x != x) return 0u;
    const unsigned b = (x == 0.0f) ? 0u : __float_as_uint(x);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ u64 shfl_up_u64(u64 v, unsigned d) {
    const unsigned lo = __shfl_up_sync(0xffffffffu, (unsigned)v, d);
    const unsigned hi = __shfl_up_sync(0xffffffffu, (unsigned)(v >> 32), d);
    return ((u64)hi << 32) | lo;
}

__device__ __forceinline__ int warp_max_int(int v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const int w = __shfl_xor_sync(0xffffffffu, v, o);
        v = w > v ? w : v;
    }
    return v;
}

// ---- radix select -----------------------------------------------------------------------

struct SelectShared {
    unsigned cnt[RADIX_COPIES][RADIX_BINS];
    u64 wt[RADIX_COPIES][RADIX_BINS];
    unsigned digit;  // the bin chosen in this pass
    u64 above;       // weight in bins above it (within the current prefix)
    u64 at_w;        // weight in it
    unsigned at_c;   // count in it
};

struct SelectResult {
    unsigned key;  // the selected key t
    u64 above;     // total weight of candidates with key > t
    u64 at_w;      // total weight of candidates with key == t
    unsigned at_c; // number of candidates with key == t
};

// Src: u64 weight(i) (0: not a candidate), unsigned key(i). Finds the key t with
// above(t) < target <= above(t) + weight(key == t), scanning keys from the largest. If the
// candidates weigh less than target in all, t is the smallest candidate key (everything is
// kept). target >= 1. Block-wide: every thread calls it and gets the result.
template <class Src>
__device__ SelectResult radix_select(const Src& src, int V, u64 target, SelectShared* sh) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int copy = warp & (RADIX_COPIES - 1);
    unsigned prefix = 0u, mask = 0u;
    u64 above = 0;
    SelectResult res;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int j = tid; j < RADIX_COPIES * RADIX_BINS; j += SAMPLE_THREADS) {
            sh->cnt[j / RADIX_BINS][j % RADIX_BINS] = 0u;
            sh->wt[j / RADIX_BINS][j % RADIX_BINS] = 0ull;
        }
        __syncthreads();
        for (int i = tid; i < V; i += SAMPLE_THREADS) {
            const u64 w = src.weight(i);
            if (w == 0) continue;
            const unsigned k = src.key(i);
            if ((k & mask) != prefix) continue;
            const unsigned d = (k >> shift) & (RADIX_BINS - 1);
            atomicAdd(&sh->cnt[copy][d], 1u);
            atomicAdd(&sh->wt[copy][d], w);
        }
        __syncthreads();
        if (tid < RADIX_BINS) {
            unsigned c = sh->cnt[0][tid];
            u64 w = sh->wt[0][tid];
            for (int k = 1; k < RADIX_COPIES; ++k) {
                c += sh->cnt[k][tid];
                w += sh->wt[k][tid];
            }
            sh->cnt[0][tid] = c;
            sh->wt[0][tid] = w;
        }
        __syncthreads();
        if (warp == 0) {
            // Lane L owns bins 255 − 8L down to 248 − 8L: lanes in rank order.
            const int top = RADIX_BINS - 1 - 8 * lane;
            u64 mine = 0;
            for (int j = 0; j < 8; ++j) mine += sh->wt[0][top - j];
            u64 incl = mine;
#pragma unroll
            for (unsigned o = 1; o < 32; o <<= 1) {
                const u64 v = shfl_up_u64(incl, o);
                if ((unsigned)lane >= o) incl += v;
            }
            u64 acc = above + (incl - mine);  // weight ranked above this lane's bins
            int found = 0, low = -1;
            u64 low_acc = 0;
            for (int j = 0; j < 8; ++j) {
                const int d = top - j;
                const u64 w = sh->wt[0][d];
                if (w == 0) continue;
                if (acc < target && acc + w >= target) {
                    found = 1;
                    sh->digit = (unsigned)d;
                    sh->above = acc - above;
                    sh->at_w = w;
                    sh->at_c = sh->cnt[0][d];
                }
                low = d;
                low_acc = acc;
                acc += w;
            }
            // Nobody crossed the target: take the lowest non-empty bin (the last lane that
            // has one), keeping every candidate.
            const int any_found = warp_max_int(found);
            const int last_lane = warp_max_int(low >= 0 ? lane : -1);
            if (!any_found && lane == last_lane) {
                sh->digit = (unsigned)low;
                sh->above = low_acc - above;
                sh->at_w = sh->wt[0][low];
                sh->at_c = sh->cnt[0][low];
            }
            if (!any_found && last_lane < 0 && lane == 0) {  // no candidate at all
                sh->digit = 0u;
                sh->above = 0;
                sh->at_w = 0;
                sh->at_c = 0u;
            }
        }
        __syncthreads();
        prefix |= sh->digit << shift;
        mask |= (unsigned)(RADIX_BINS - 1) << shift;
        above += sh->above;
        res.at_w = sh->at_w;
        res.at_c = sh->at_c;
        __syncthreads();  // sh is cleared by the next pass
    }
    res.key = prefix;
    res.above = above;
    return res;
}

// Every token, weight 1, ranked by logit.
struct TopKSrc {
    const float* row;
    __device__ u64 weight(int) const { return 1; }
    __device__ unsigned key(int i) const { return logit_key(row[i]); }
};

// Tokens with fixed-point mass > 0, weighted by it, ranked by logit.
struct MassSrc {
    const float* row;
    const float* probs;
    __device__ u64 weight(int i) const { return mass_fix(probs[i]); }
    __device__ unsigned key(int i) const { return logit_key(row[i]); }
};

// The candidates tied at key `tie`, weight 1, ranked by lower id first.
struct TieIdSrc {
    const float* row;
    const float* probs;
    unsigned tie;
    __device__ u64 weight(int i) const {
        return (mass_fix(probs[i]) != 0 && logit_key(row[i]) == tie) ? 1 : 0;
    }
    __device__ unsigned key(int i) const { return ~(unsigned)i; }
};

// Shared memory of one row's processing.
struct ProcessShared {
    SelectShared sel;
    float scratch[SAMPLE_WARPS];
    u64 total_fix;
};

// One row's processed distribution: row f32 [V] → prow f32 [V]: z = logit / temperature;
// top-k (0 < top_k < V) removes every token whose logit is strictly below the k-th largest
// (ties with it kept); softmax; top-p (top_p < 1) keeps, in rank order (larger logit first,
// then lower id), each token whose mass ranked above it is < top_p of the total;
// renormalised, removed tokens exactly 0. A row with a NaN or without a finite logit gives
// NaN (the CPU sampler refuses such rows). Block-wide; the writes of prow are not yet
// visible to other threads on return (the caller synchronises before reading them). The one
// body of sample_process_f32 and sample_pick_f32, so both give the same bits.
__device__ void process_row(const float* __restrict__ row, float* __restrict__ prow, int V,
                            float temperature, int top_k, float top_p, ProcessShared* sh) {
    const int tid = threadIdx.x;

    float mx = NEG_INF;
    for (int i = tid; i < V; i += SAMPLE_THREADS) mx = fmaxf(mx, row[i]);
    mx = block_max<SAMPLE_WARPS>(mx, sh->scratch);

    unsigned kmin = 0u;  // top-k: keep logit_key >= kmin
    if (top_k > 0 && top_k < V) kmin = radix_select(TopKSrc{row}, V, (u64)top_k, &sh->sel).key;

    float sum = 0.0f;
    for (int i = tid; i < V; i += SAMPLE_THREADS) {
        const float l = row[i];
        const float e = logit_key(l) >= kmin ? expf((l - mx) / temperature) : 0.0f;
        prow[i] = e;
        sum += e;
    }
    const float total = block_sum<SAMPLE_WARPS>(sum, sh->scratch);
    if (tid == 0) sh->total_fix = 0;
    u64 fix = 0;
    for (int i = tid; i < V; i += SAMPLE_THREADS) {
        const float p = prow[i] / total;
        prow[i] = p;
        fix += mass_fix(p);
    }
    if (!(top_p < 1.0f)) return;  // uniform across the block

    __syncthreads();  // total_fix = 0 is visible
    atomicAdd(&sh->total_fix, fix);
    __syncthreads();
    u64 tp = (u64)ceil((double)top_p * (double)sh->total_fix);
    if (tp == 0) tp = 1;
    const SelectResult r = radix_select(MassSrc{row, prow}, V, tp, &sh->sel);
    // The tokens tied at r.key share one p; keep the first n of them (by id), n >= 1.
    unsigned id_last = 0xffffffffu;
    if (r.at_c > 1) {
        const u64 w_tie = r.at_w / r.at_c;
        const u64 need = tp > r.above ? tp - r.above : 1;
        u64 n = w_tie ? (need + w_tie - 1) / w_tie : (u64)r.at_c;
        if (n < (u64)r.at_c) {
            if (n == 0) n = 1;
            id_last = ~radix_select(TieIdSrc{row, prow, r.key}, V, n, &sh->sel).key;
        }
    }
    float kept = 0.0f;
    for (int i = tid; i < V; i += SAMPLE_THREADS) {
        const float p = prow[i];
        const unsigned k = logit_key(row[i]);
        const bool keep = mass_fix(p) != 0 && (k > r.key || (k == r.key && (unsigned)i <= id_last));
        kept += keep ? p : 0.0f;
    }
    const float mass = block_sum<SAMPLE_WARPS>(kept, sh->scratch);
    for (int i = tid; i < V; i += SAMPLE_THREADS) {
        const float p = prow[i];
        const unsigned k = logit_key(row[i]);
        const bool keep = mass_fix(p) != 0 && (k > r.key || (k == r.key && (unsigned)i <= id_last));
        prow[i] = keep ? p / mass : 0.0f;
    }
}

// logits: f32 [M, V]; probs: f32 [M, V] = the processed distribution of each row
// (process_row). grid (M), block SAMPLE_THREADS.
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
sample_process_f32(const float* __restrict__ logits, float* __restrict__ probs, int V,
                   float temperature, int top_k, float top_p) {
    __shared__ ProcessShared sh;
    process_row(logits + (size_t)blockIdx.x * V, probs + (size_t)blockIdx.x * V, V,
                temperature, top_k, top_p, &sh);
}

// ---- categorical draw by inverse CDF ----------------------------------------------------

struct DrawShared {
    double part[SAMPLE_THREADS];  // each thread's chunk sum
    double wpre[SAMPLE_WARPS + 1];
    int pick;
};

// The first token whose cumulative weight exceeds u · total (weights >= 0, in f64), never a
// zero-weight token; −1 when the total is 0. Thread t owns the contiguous chunk
// [t·C, (t+1)·C), C = ceil(V / SAMPLE_THREADS); chunk sums are prefixed in a fixed order
// (within a warp sequentially, then across warps), the one thread whose prefix interval holds
// the target walks its chunk. Block-wide; every thread gets the token.
template <class W>
__device__ int cdf_pick(const W& w, int V, double u, DrawShared* sh) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int chunk = (V + SAMPLE_THREADS - 1) / SAMPLE_THREADS;
    const int lo = tid * chunk < V ? tid * chunk : V;
    const int hi = lo + chunk < V ? lo + chunk : V;
    double s = 0.0;
    for (int i = lo; i < hi; ++i) {
        const double x = w(i);
        if (x > 0.0) s += x;
    }
    sh->part[tid] = s;
    if (tid == 0) sh->pick = -1;
    __syncthreads();
    if (tid < SAMPLE_WARPS) {
        double t = 0.0;
        for (int j = 0; j < 32; ++j) t += sh->part[tid * 32 + j];
        sh->wpre[tid + 1] = t;  // this warp's total, prefixed below
    }
    __syncthreads();
    if (tid == 0) {
        sh->wpre[0] = 0.0;
        for (int j = 1; j <= SAMPLE_WARPS; ++j) sh->wpre[j] += sh->wpre[j - 1];
    }
    __syncthreads();
    double local = 0.0;  // this warp's chunks before mine, summed in the same order as above
    for (int j = warp * 32; j < tid; ++j) local += sh->part[j];
    const double begin = sh->wpre[warp] + local;
    const double end = lane == 31 ? sh->wpre[warp + 1] : sh->wpre[warp] + (local + s);
    const double total = sh->wpre[SAMPLE_WARPS];
    const double target = u * total;
    if (total > 0.0 && begin <= target && target < end) {
        double cum = begin;
        int last = -1, got = -1;
        for (int i = lo; i < hi; ++i) {
            const double x = w(i);
            if (x > 0.0) {
                cum += x;
                last = i;
                if (cum > target) {
                    got = i;
                    break;
                }
            }
        }
        sh->pick = got >= 0 ? got : last;
    }
    __syncthreads();
    const int pick = sh->pick;
    __syncthreads();  // sh may be reused right after
    return pick;
}

struct ProbW {
    const float* p;
    __device__ double operator()(int i) const { return (double)p[i]; }
};

// max(0, p − q), exact in f64.
struct ResidualW {
    const float* p;
    const float* q;
    __device__ double operator()(int i) const {
        const double d = (double)p[i] - (double)q[i];
        return d > 0.0 ? d : 0.0;
    }
};

// probs: f32 [M, V] (any non-negative weights, need not be normalised); out: i32 [M], row r
// drawn with the uniform of counter (position + r, stream, index, 0) under seed; −1 for a
// row without mass. grid (M), block SAMPLE_THREADS.
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
sample_draw_f32(const float* __restrict__ probs, int* __restrict__ out, int V,
                unsigned long long seed, unsigned position, unsigned stream, unsigned index) {
    __shared__ DrawShared sh;
    const unsigned r = blockIdx.x;
    const double u = philox_to_uniform(philox_word(seed, position + r, stream, index));
    const int tok = cdf_pick(ProbW{probs + (size_t)r * V}, V, u, &sh);
    if (threadIdx.x == 0) out[r] = tok;
}

// ---- the speculative decision -----------------------------------------------------------

// Larger value wins; on equal values the smaller index wins (NaN never wins).
__device__ __forceinline__ void sample_better(float& v, int& i, float ov, int oi) {
    if (ov > v || (ov == v && oi < i)) {
        v = ov;
        i = oi;
    }
}

struct ArgmaxShared {
    float v[SAMPLE_WARPS];
    int i[SAMPLE_WARPS];
    int best;
};

// Index of the largest value of row (first on ties; 0 when nothing compares). Block-wide.
__device__ int block_argmax(const float* row, int V, ArgmaxShared* sh) {
    float bv = NEG_INF;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < V; i += SAMPLE_THREADS) sample_better(bv, bi, row[i], i);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        sample_better(bv, bi, ov, oi);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        sh->v[warp] = bv;
        sh->i[warp] = bi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float v = sh->v[0];
        int i = sh->i[0];
        for (int w = 1; w < SAMPLE_WARPS; ++w) sample_better(v, i, sh->v[w], sh->i[w]);
        sh->best = i == 0x7fffffff ? 0 : i;
    }
    __syncthreads();
    const int best = sh->best;
    __syncthreads();
    return best;
}

// ---- one row's token -------------------------------------------------------------------

// A counter's position and index: from the launch, or (step_state non-null, i32 [2]) the
// state's base position plus `position`, and its index. Read at the point of use (volatile,
// so it is not kept in registers across the kernel).
__device__ __forceinline__ unsigned state_position(const int* step_state, unsigned position) {
    if (step_state == nullptr) return position;
    return (unsigned)*(const volatile int*)step_state + position;
}
__device__ __forceinline__ unsigned state_index(const int* step_state, unsigned index) {
    if (step_state == nullptr) return index;
    return (unsigned)((const volatile int*)step_state)[1];
}

// One token from one row, in one launch (the device-resident decode step).
//   row: f32 [V] logits; probs_row: f32 [V] (written when greedy == 0, unused otherwise);
//   token: i32 [1]; draft_input, verify_input: u32 [1] each, or null.
// Greedy (greedy != 0): the argmax of row (lowest id on ties). Random: row processed by
// process_row into probs_row, then drawn by inverse CDF (as sample_draw_f32) with the uniform
// of counter (position, stream, index, 0) under seed — or, when step_state (i32 [2]) is
// given, of (step_state[0] + position, stream, step_state[1], 0), read when the kernel runs. A row with a NaN or +inf, without a
// finite logit, or (random) without mass gives token −1 and input ids 0 (the CPU sampler
// refuses such rows). grid (1), block SAMPLE_THREADS.
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
sample_pick_f32(const float* __restrict__ row, float* __restrict__ probs_row,
                int* __restrict__ token, unsigned* __restrict__ draft_input,
                unsigned* __restrict__ verify_input, int V, int greedy, float temperature,
                int top_k, float top_p, unsigned long long seed,
                const int* __restrict__ step_state, unsigned position, unsigned stream,
                unsigned index) {
    __shared__ ProcessShared psh;
    __shared__ DrawShared dsh;
    __shared__ ArgmaxShared ash;
    const int tid = threadIdx.x;

    // The row's check (as spedec_sampling's): no NaN, no +inf, some finite logit.
    float mx = NEG_INF, nan = 0.0f;
    for (int i = tid; i < V; i += SAMPLE_THREADS) {
        const float x = row[i];
        if (x != x) nan = 1.0f;
        mx = fmaxf(mx, x);
    }
    mx = block_max<SAMPLE_WARPS>(mx, psh.scratch);
    nan = block_max<SAMPLE_WARPS>(nan, psh.scratch);
    const bool bad = nan > 0.0f || !(mx > NEG_INF) || mx == -NEG_INF;

    int tok;
    if (greedy) {
        tok = block_argmax(row, V, &ash);
    } else {
        process_row(row, probs_row, V, temperature, top_k, top_p, &psh);
        __syncthreads();  // probs_row is read in other threads' chunks
        const double u = philox_to_uniform(philox_word(
            seed, state_position(step_state, position), stream, state_index(step_state, index)));
        tok = cdf_pick(ProbW{probs_row}, V, u, &dsh);
    }
    if (bad) tok = -1;
    if (tid == 0) {
        token[0] = tok;
        const unsigned id = tok < 0 ? 0u : (unsigned)tok;
        if (draft_input) draft_input[0] = id;
        if (verify_input) verify_input[0] = id;
    }
}

// Verifies gamma drafted tokens against the target's gamma + 1 rows.
//   target: f32 [gamma + 1, V] processed target rows (greedy: the raw logits);
//   draft:  f32 [gamma, V] processed draft rows (unused when greedy);
//   drafts: i32 [gamma]; out: i32 [gamma + 2].
// Random (greedy = 0): draft i (row i, sequence position position + i) is accepted iff
// p(d) >= q(d) or u < p(d) / q(d) (in f64), u from (position + i, ACCEPT, index). At the
// first rejection i the next token is drawn from max(0, p_i − q_i) (from p_i if that has no
// mass) with u from (position + i, RESIDUAL, index); if all are accepted the bonus is drawn
// from target row gamma with u from (position + gamma, RESIDUAL, index).
// Greedy (greedy != 0): accept while d_i is row i's argmax (lowest id on ties); the next
// token is the argmax of the first disagreeing row (row gamma if none).
// step_state (i32 [2]) or null: when given, position and index are step_state[0] + position
// and step_state[1], read when the kernel runs (a recorded chain replays with new ones).
// out[0] = accepted count a, out[1 .. a] = the accepted drafts, out[1 + a] = the next token,
// the rest −1. A draft id outside [0, V) or a row without mass writes out[0] = −1.
// grid (1), block SAMPLE_THREADS.
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
spec_verify_f32(const float* __restrict__ target, const float* __restrict__ draft,
                const int* __restrict__ drafts, int* __restrict__ out, int gamma, int V,
                int greedy, unsigned long long seed, const int* __restrict__ step_state,
                unsigned position, unsigned index) {
    __shared__ DrawShared dsh;
    __shared__ ArgmaxShared ash;
    int accepted = gamma, next = -1;
    bool bad = false;
    for (int i = 0; i < gamma; ++i) {
        const int d = drafts[i];
        if (d < 0 || d >= V) {
            bad = true;
            break;
        }
        const float* prow = target + (size_t)i * V;
        if (greedy) {
            const int best = block_argmax(prow, V, &ash);
            if (best != d) {
                accepted = i;
                next = best;
                break;
            }
            continue;
        }
        const float* qrow = draft + (size_t)i * V;
        const double px = (double)prow[d], qx = (double)qrow[d];
        const double u = philox_to_uniform(philox_word(
            seed, state_position(step_state, position) + (unsigned)i, PHILOX_STREAM_ACCEPT,
            state_index(step_state, index)));
        if (px >= qx || u < px / qx) continue;
        accepted = i;
        const double ur = philox_to_uniform(philox_word(
            seed, state_position(step_state, position) + (unsigned)i, PHILOX_STREAM_RESIDUAL,
            state_index(step_state, index)));
        next = cdf_pick(ResidualW{prow, qrow}, V, ur, &dsh);
        if (next < 0) next = cdf_pick(ProbW{prow}, V, ur, &dsh);
        break;
    }
    if (!bad && accepted == gamma) {
        const float* prow = target + (size_t)gamma * V;
        if (greedy) {
            next = block_argmax(prow, V, &ash);
        } else {
            const double u = philox_to_uniform(philox_word(
                seed, state_position(step_state, position) + (unsigned)gamma,
                PHILOX_STREAM_RESIDUAL, state_index(step_state, index)));
            next = cdf_pick(ProbW{prow}, V, u, &dsh);
        }
    }
    if (threadIdx.x == 0) {
        if (bad || next < 0) {
            out[0] = -1;
            for (int j = 1; j < gamma + 2; ++j) out[j] = -1;
        } else {
            out[0] = accepted;
            for (int j = 0; j < accepted; ++j) out[1 + j] = drafts[j];
            out[1 + accepted] = next;
            for (int j = accepted + 2; j < gamma + 2; ++j) out[j] = -1;
        }
    }
}

// ---- Philox words -----------------------------------------------------------------------

// words: u32 [n, 4] = philox4x32_10((position + j, stream, index, 0), seed) for j < n;
// uniforms: f32 [n] = the uniform of word 0. grid (ceil(n / PHILOX_THREADS)), block
// PHILOX_THREADS.
extern "C" __global__ void __launch_bounds__(PHILOX_THREADS)
philox_uniform_f32(unsigned long long seed, unsigned position, unsigned stream, unsigned index,
                   unsigned* __restrict__ words, float* __restrict__ uniforms, int n) {
    const int j = blockIdx.x * PHILOX_THREADS + threadIdx.x;
    if (j >= n) return;
    uint4 c;
    c.x = position + (unsigned)j;
    c.y = stream;
    c.z = index;
    c.w = 0u;
    const uint4 w = philox4x32_10(c, (unsigned)seed, (unsigned)(seed >> 32));
    words[4 * j + 0] = w.x;
    words[4 * j + 1] = w.y;
    words[4 * j + 2] = w.z;
    words[4 * j + 3] = w.w;
    uniforms[j] = philox_to_uniform(w.x);
}
