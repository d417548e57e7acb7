// launch.cpp: C entry points that run kernels/*.cu under emu.h with the same launch
// configurations as crates/cuda/src/ops.rs (host pointers instead of device pointers).
// Each returns 0, or 1 when the emulator found a deadlock.
#include "embedding.cu"
#include "layernorm.cu"
#include "linear.cu"
#include "rotary.cu"
#include "attention.cu"
#include "logits.cu"

static unsigned round32(int n) { return (unsigned)((n + 31) / 32 * 32); }

extern "C" int emu_embedding_f16(const unsigned* ids, const f16_t* table, float* out, int M,
                                  int V, int d) {
    return emu_launch(M, 1, EMB_THREADS, [=] { embedding_f16(ids, table, out, V, d); });
}

extern "C" int emu_add_layernorm_f16(float* x, const f16_t* a, const f16_t* b,
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
                                  const int* pos, float* o_part, float* ml_part, f16_t* out,
                                  int M, int H, int hd, int max_pos, int n_split, float scale) {
    if (emu_launch(n_split, H, ATT_SPLIT, [=] {
            attn_partial_f16(q, kc, vc, pos, o_part, ml_part, M, H, hd, max_pos, n_split, scale);
        }))
        return 1;
    return emu_launch(H, M, round32(hd),
               [=] { attn_combine_f16(o_part, ml_part, pos, out, H, hd, max_pos, n_split); });
}

extern "C" int emu_argmax_f32(const float* logits, unsigned* out, int M, int V) {
    return emu_launch(M, 1, VOCAB_THREADS, [=] { argmax_f32(logits, out, V); });
}

extern "C" int emu_softmax_f32(const float* logits, float* probs, int M, int V, float inv_t) {
    return emu_launch(M, 1, VOCAB_THREADS, [=] { softmax_f32(logits, probs, V, inv_t); });
}
