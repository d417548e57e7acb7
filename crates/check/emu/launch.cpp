// launch.cpp: C entry points that run kernels/*.cu under emu.h with the same launch
// configurations as crates/cuda/src/ops.rs (host pointers instead of device pointers).
// Each returns 0, or 1 when the emulator found a deadlock.
#include "embedding.cu"
#include "layernorm.cu"
#include "linear.cu"
#include "linear_tc.cu"
#include "rotary.cu"
#include "attention.cu"
#include "logits.cu"

static unsigned round32(int n) { return (unsigned)((n + 31) / 32 * 32); }

extern "C" int emu_embedding_f16(const unsigned* ids, const f16_t* table, float* out, int M,
                                  int V, int d) {
    return emu_launch(M, 1, EMB_THREADS, [=] { embedding_f16(ids, table, out, V, d); });
}

extern "C" int emu_positions_i32(int* pos, const int* base, int start, int M) {
    return emu_launch(1, 1, EMB_THREADS, [=] { positions_i32(pos, base, start, M); });
}

extern "C" int emu_add_layernorm_f16(float* x, const float* a, const float* b,
                                      const f16_t* w0, const f16_t* b0, f16_t* o0,
                                      const f16_t* w1, const f16_t* b1, f16_t* o1, int M, int d,
                                      float eps) {
    return emu_launch(M, 1, LN_THREADS,
               [=] { add_layernorm_f16(x, a, b, w0, b0, o0, w1, b1, o1, d, eps); });
}

extern "C" int emu_linear_f16(const f16_t* x, const f16_t* w, const f16_t* bias, f16_t* out_h,
                               float* out_f, int M, int N, int K, int mode) {
    return emu_launch((N + LIN_COLS - 1) / LIN_COLS, 1, LIN_THREADS,
               [=] { linear_f16(x, w, bias, out_h, out_f, M, N, K, mode); });
}

extern "C" int emu_rotary_kv_f16(const f16_t* qkv, const int* pos, f16_t* q, f16_t* kc,
                                  f16_t* vc, int M, int H, int hd, int rot, int max_pos,
                                  float base) {
    return emu_launch(H, M, round32(hd),
               [=] { rotary_kv_f16(qkv, pos, q, kc, vc, H, hd, rot, max_pos, base); });
}

extern "C" int emu_attention_f16(const f16_t* q, const f16_t* kc, const f16_t* vc,
                                  const int* pos, float* o_part, float* ml_part,
                                  unsigned* counters, f16_t* out, int M, int H, int hd,
                                  int max_pos, int n_split, float scale) {
    const unsigned chunks = (unsigned)((M + ATT_MAX_M - 1) / ATT_MAX_M);
    return emu_launch3(n_split, H, chunks, ATT_SPLIT, [=] {
        attention_f16(q, kc, vc, pos, o_part, ml_part, counters, out, M, H, hd, max_pos, n_split,
                      scale);
    });
}

extern "C" int emu_argmax_f32(const float* logits, unsigned* out, int M, int V) {
    return emu_launch(M, 1, VOCAB_THREADS, [=] { argmax_f32(logits, out, V); });
}

extern "C" int emu_softmax_f32(const float* logits, float* probs, int M, int V, float inv_t) {
    return emu_launch(M, 1, VOCAB_THREADS, [=] { softmax_f32(logits, probs, V, inv_t); });
}

// One launch of linear_tc16_f16 (wide == 0) or linear_tc128_f16 (wide != 0) over M rows; the
// host plan (spedec_cuda::linear_tc) gives tiles_per_split, splits and the row chunks.
extern "C" int emu_linear_tc_f16(const f16_t* x, const f16_t* w, const f16_t* bias,
                                  f16_t* out_h, float* out_f, float* part, unsigned* counters,
                                  int M, int N, int K, int tiles_per_split, int splits, int wide,
                                  int mode) {
    if (wide)
        return emu_launch3((N + LTC128_BN - 1) / LTC128_BN, (M + LTC128_BM - 1) / LTC128_BM,
                           splits, LTC_THREADS, [=] {
                               linear_tc128_f16(x, w, bias, out_h, out_f, part, counters, M, N,
                                                K, tiles_per_split, splits, mode);
                           });
    return emu_launch3((N + LTC16_BN - 1) / LTC16_BN, (M + LTC16_BM - 1) / LTC16_BM, splits,
                       LTC_THREADS, [=] {
                           linear_tc16_f16(x, w, bias, out_h, out_f, part, counters, M, N, K,
                                           tiles_per_split, splits, mode);
                       });
}

// The device sampler (sampling.cu), with the launch shapes of spedec_cuda::sampling_ops.
#include "sampling.cu"

extern "C" int emu_sample_process_f32(const float* logits, float* probs, int M, int V,
                                       float temperature, int top_k, float top_p) {
    return emu_launch(M, 1, SAMPLE_THREADS,
                      [=] { sample_process_f32(logits, probs, V, temperature, top_k, top_p); });
}

extern "C" int emu_sample_draw_f32(const float* probs, int* out, int M, int V,
                                    unsigned long long seed, unsigned position, unsigned stream,
                                    unsigned index) {
    return emu_launch(M, 1, SAMPLE_THREADS,
                      [=] { sample_draw_f32(probs, out, V, seed, position, stream, index); });
}

extern "C" int emu_spec_verify_f32(const float* target, const float* draft, const int* drafts,
                                    int* out, int gamma, int V, int greedy,
                                    unsigned long long seed, const int* step_state,
                                    unsigned position, unsigned index) {
    return emu_launch(1, 1, SAMPLE_THREADS, [=] {
        spec_verify_f32(target, draft, drafts, out, gamma, V, greedy, seed, step_state, position,
                        index);
    });
}

extern "C" int emu_philox_uniform_f32(unsigned long long seed, unsigned position,
                                       unsigned stream, unsigned index, unsigned* words,
                                       float* uniforms, int n) {
    return emu_launch((n + PHILOX_THREADS - 1) / PHILOX_THREADS, 1, PHILOX_THREADS, [=] {
        philox_uniform_f32(seed, position, stream, index, words, uniforms, n);
    });
}

// The read-bandwidth probe (probe.cu), with the launch shape of spedec_cuda::probe.
#include "probe.cu"

extern "C" int emu_read_probe_f16(const uint4* buf, unsigned long long n_vec, unsigned* sums,
                                   int blocks) {
    return emu_launch(blocks, 1, PROBE_THREADS,
                      [=] { read_probe_f16(buf, n_vec, sums, blocks); });
}

extern "C" int emu_sample_pick_f32(const float* row, float* probs_row, int* token,
                                    unsigned* draft_input, unsigned* verify_input, int V,
                                    int greedy, float temperature, int top_k, float top_p,
                                    unsigned long long seed, const int* step_state,
                                    unsigned position, unsigned stream, unsigned index) {
    return emu_launch(1, 1, SAMPLE_THREADS, [=] {
        sample_pick_f32(row, probs_row, token, draft_input, verify_input, V, greedy, temperature,
                        top_k, top_p, seed, step_state, position, stream, index);
    });
}
