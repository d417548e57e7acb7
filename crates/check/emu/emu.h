// emu.h: a small host emulation of the CUDA execution model, to test the logic of
// kernels/*.cu on a machine without a GPU (force-included before the kernel sources, with
// SPEDEC_HOST_EMU defined). x86-64 Linux only.
//
// Every CUDA thread of a block is a fiber (its own stack, switched by a few lines of
// assembly); blocks run one after another on the calling thread. The scheduler resumes each
// runnable fiber up to its next synchronisation point:
// - __syncthreads(): released when every live thread of the block waits at it;
// - __shfl_xor_sync(): released when every live lane of the warp waits at it;
// - mma_16816_f16f32() (common.cuh → emu_mma_16816): released when all 32 lanes of the warp
//   wait at it (a lane that returned makes it a deadlock, as mma.sync.aligned needs them all).
// cp.async copies happen at once; atomics and fences are plain (fibers never preempt).
// Threads that return drop out (as on sm_70+). A block whose threads wait at different kinds
// of barrier (divergent __syncthreads or shuffle) is reported as a deadlock.
// __shared__ variables are function statics: blocks never overlap, so that is per-block state.
// Floating point is the host's (expf, erff, ...): results agree with the GPU to rounding, and
// the order of every reduction (hence batch invariance) is exactly the kernel's.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __shared__ static

struct alignas(16) uint4 {
    unsigned int x, y, z, w;
};

struct emu_dim3 {
    unsigned int x = 0, y = 0, z = 0;
};

inline emu_dim3 threadIdx, blockIdx;

using std::max;
using std::min;

inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
inline float __int_as_float(unsigned int i) { return __int_as_float((int)i); }

inline float emu_h2f(unsigned short h) {
    _Float16 x;
    std::memcpy(&x, &h, 2);
    return (float)x;
}

inline unsigned short emu_f2h(float f) {
    _Float16 x = (_Float16)f;  // round to nearest even
    unsigned short h;
    std::memcpy(&h, &x, 2);
    return h;
}

// emu_switch(&save_sp, new_sp): save callee-saved registers on the current stack, store the
// stack pointer in *save_sp, continue on new_sp (a stack saved the same way).
extern "C" void emu_switch(void** save_sp, void* new_sp);
asm(R"(
    .text
    .globl emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");

enum EmuState { EMU_RUN, EMU_BLOCK_WAIT, EMU_WARP_WAIT, EMU_DONE };

struct EmuFiber {
    void* sp = nullptr;
    EmuState state = EMU_RUN;
    unsigned syncs = 0;     // __syncthreads reached
    unsigned shuffles = 0;  // warp-collective operations reached (shuffles and mma)
    unsigned char warp_op = 0;  // kind of the one it waits at: EMU_OP_SHFL or EMU_OP_MMA
};

enum { EMU_OP_SHFL = 0, EMU_OP_MMA = 1 };

struct EmuRuntime {
    static constexpr size_t kStack = 256 * 1024;
    std::vector<EmuFiber> fibers;
    std::vector<char*> stacks;
    void* sched_sp = nullptr;
    unsigned current = 0;
    void (*body)(void*) = nullptr;
    void* body_arg = nullptr;
    std::vector<uint32_t> lanes[2];  // shuffle exchange, double buffered by parity
    std::vector<uint32_t> mma[2];    // mma fragments, kMmaWords per thread, same parity
    static constexpr unsigned kMmaWords = 10;  // a[4], b[2], c[4]
    bool failed = false;

    ~EmuRuntime() {
        for (char* s : stacks) std::free(s);
    }
};

inline EmuRuntime* emu_rt = nullptr;

inline void emu_yield(EmuState s) {
    EmuFiber& f = emu_rt->fibers[emu_rt->current];
    f.state = s;
    emu_switch(&f.sp, emu_rt->sched_sp);
}

extern "C" inline void emu_fiber_entry() {
    emu_rt->body(emu_rt->body_arg);
    emu_yield(EMU_DONE);
    std::abort();  // a finished fiber is never resumed
}

inline void __syncthreads() {
    emu_rt->fibers[emu_rt->current].syncs++;
    emu_yield(EMU_BLOCK_WAIT);
}

template <class T>
inline T __shfl_xor_sync(unsigned, T v, int offset) {
    static_assert(sizeof(T) == 4, "32-bit shuffles only");
    EmuFiber& f = emu_rt->fibers[emu_rt->current];
    const unsigned t = emu_rt->current, lane = t & 31, base = t & ~31u;
    const unsigned parity = f.shuffles++ & 1;
    f.warp_op = EMU_OP_SHFL;
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    emu_rt->lanes[parity][t] = bits;
    emu_yield(EMU_WARP_WAIT);
    bits = emu_rt->lanes[parity][base + (lane ^ (unsigned)offset)];
    T out;
    std::memcpy(&out, &bits, 4);
    return out;
}

// mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 for the calling lane, as a warp
// barrier: every lane deposits its fragments (layouts in common.cuh), and once all 32 have,
// each computes its four D elements from the gathered A, B and C. Host model of one element:
// s = Σ_{k=0..15} A[r][k]·B[k][c] in f32, k in increasing order (each product of two f16 is
// exact in f32), then d = C[r][c] + s.
inline void emu_mma_16816(float d[4], const unsigned a[4], const unsigned b[2],
                          const float c[4]) {
    EmuFiber& f = emu_rt->fibers[emu_rt->current];
    const unsigned t = emu_rt->current, lane = t & 31, base = t & ~31u;
    const unsigned parity = f.shuffles++ & 1;
    f.warp_op = EMU_OP_MMA;
    uint32_t* mine = &emu_rt->mma[parity][t * EmuRuntime::kMmaWords];
    for (int i = 0; i < 4; ++i) mine[i] = a[i];
    mine[4] = b[0];
    mine[5] = b[1];
    std::memcpy(mine + 6, c, 16);
    emu_yield(EMU_WARP_WAIT);
    const uint32_t* w = &emu_rt->mma[parity][base * EmuRuntime::kMmaWords];
    auto half_of = [](uint32_t word, unsigned k) {
        return emu_h2f((unsigned short)((k & 1) ? word >> 16 : word & 0xffffu));
    };
    // A[r][k] lives in lane (r % 8)·4 + (k % 8)/2, word (r >= 8) + 2·(k >= 8).
    auto A = [&](unsigned r, unsigned k) {
        const unsigned l = (r & 7) * 4 + (k & 7) / 2, reg = (r >> 3) + 2 * (k >> 3);
        return half_of(w[l * EmuRuntime::kMmaWords + reg], k);
    };
    // B[k][n] lives in lane n·4 + (k % 8)/2, word 4 + (k >= 8).
    auto B = [&](unsigned k, unsigned n) {
        const unsigned l = n * 4 + (k & 7) / 2;
        return half_of(w[l * EmuRuntime::kMmaWords + 4 + (k >> 3)], k);
    };
    const unsigned g = lane >> 2, tq = lane & 3;
    float cv[4];
    std::memcpy(cv, mine + 6, 16);
    for (unsigned e = 0; e < 4; ++e) {
        const unsigned r = g + 8 * (e >> 1), col = 2 * tq + (e & 1);
        float s = 0.0f;
        for (unsigned k = 0; k < 16; ++k) s += A(r, k) * B(k, col);
        d[e] = cv[e] + s;
    }
}

inline unsigned atomicAdd(unsigned* p, unsigned v) {
    const unsigned old = *p;
    *p = old + v;
    return old;
}

inline void __threadfence() {}

// Run one block of `threads` fibers executing body(arg). Returns false on a deadlock.
inline bool emu_run_block(EmuRuntime& rt, unsigned threads) {
    rt.fibers.assign(threads, EmuFiber{});
    rt.lanes[0].assign((threads + 31) & ~31u, 0);
    rt.lanes[1].assign((threads + 31) & ~31u, 0);
    rt.mma[0].assign(((threads + 31) & ~31u) * EmuRuntime::kMmaWords, 0);
    rt.mma[1].assign(((threads + 31) & ~31u) * EmuRuntime::kMmaWords, 0);
    while (rt.stacks.size() < threads) rt.stacks.push_back((char*)std::malloc(EmuRuntime::kStack));
    for (unsigned t = 0; t < threads; ++t) {
        // Initial frame: six zeroed registers, then the return address emu_fiber_entry, at
        // a 16-byte aligned slot so the entry sees a normal call alignment.
        uintptr_t top = ((uintptr_t)(rt.stacks[t] + EmuRuntime::kStack)) & ~(uintptr_t)15;
        void** sp = (void**)(top - 16);
        sp[0] = (void*)&emu_fiber_entry;
        sp -= 6;
        for (int i = 0; i < 6; ++i) sp[i] = nullptr;
        rt.fibers[t].sp = sp;
    }
    for (;;) {
        bool progressed = false;
        for (unsigned t = 0; t < threads; ++t) {
            if (rt.fibers[t].state != EMU_RUN) continue;
            rt.current = t;
            threadIdx = {t, 0, 0};
            emu_switch(&rt.sched_sp, rt.fibers[t].sp);
            progressed = true;
        }
        // Release a block barrier when every live thread waits at it.
        bool all_done = true, all_block = true;
        for (auto& f : rt.fibers) {
            if (f.state != EMU_DONE) all_done = false;
            if (f.state != EMU_DONE && f.state != EMU_BLOCK_WAIT) all_block = false;
        }
        if (all_done) return true;
        if (all_block) {
            for (auto& f : rt.fibers)
                if (f.state == EMU_BLOCK_WAIT) f.state = EMU_RUN;
            continue;
        }
        // Release each warp whose live lanes all wait at the same shuffle.
        for (unsigned w = 0; w * 32 < threads; ++w) {
            bool all = true, any = false, done_lane = false;
            unsigned seq = 0, op = 0;
            for (unsigned t = w * 32; t < std::min(threads, w * 32 + 32); ++t) {
                EmuFiber& f = rt.fibers[t];
                if (f.state == EMU_DONE) {
                    done_lane = true;
                    continue;
                }
                if (f.state != EMU_WARP_WAIT || (any && (f.shuffles != seq || f.warp_op != op)))
                    all = false;
                if (!any) {
                    seq = f.shuffles;
                    op = f.warp_op;
                }
                any = true;
            }
            // mma needs the whole warp: lanes that returned (or a partial warp) never arrive.
            if (op == EMU_OP_MMA && (done_lane || w * 32 + 32 > threads)) all = false;
            if (all && any) {
                for (unsigned t = w * 32; t < std::min(threads, w * 32 + 32); ++t)
                    if (rt.fibers[t].state == EMU_WARP_WAIT) rt.fibers[t].state = EMU_RUN;
                progressed = true;
            }
        }
        if (!progressed) {
            std::fprintf(stderr, "emu: deadlock in block (%u, %u): divergent barrier or shuffle\n",
                         blockIdx.x, blockIdx.y);
            return false;
        }
    }
}

// Run `kernel` (a callable) over grid (gx, gy) with `threads` threads per block.
// Returns 0, or 1 after a deadlock.
template <class F>
int emu_launch(unsigned gx, unsigned gy, unsigned threads, F kernel) {
    EmuRuntime rt;
    emu_rt = &rt;
    rt.body = [](void* p) { (*static_cast<F*>(p))(); };
    rt.body_arg = &kernel;
    for (unsigned by = 0; by < gy; ++by) {
        for (unsigned bx = 0; bx < gx; ++bx) {
            blockIdx = {bx, by, 0};
            if (!emu_run_block(rt, threads)) {
                emu_rt = nullptr;
                return 1;  // the stuck fibers' stacks are freed with rt: nothing runs on them
            }
        }
    }
    emu_rt = nullptr;
    return 0;
}

// As emu_launch over a 3-D grid (gx, gy, gz); blocks run x fastest, then y, then z.
template <class F>
int emu_launch3(unsigned gx, unsigned gy, unsigned gz, unsigned threads, F kernel) {
    EmuRuntime rt;
    emu_rt = &rt;
    rt.body = [](void* p) { (*static_cast<F*>(p))(); };
    rt.body_arg = &kernel;
    for (unsigned bz = 0; bz < gz; ++bz) {
        for (unsigned by = 0; by < gy; ++by) {
            for (unsigned bx = 0; bx < gx; ++bx) {
                blockIdx = {bx, by, bz};
                if (!emu_run_block(rt, threads)) {
                    emu_rt = nullptr;
                    return 1;
                }
            }
        }
    }
    emu_rt = nullptr;
    return 0;
}

// ---- What kernels/sampling.cu needs beyond the above (plain: fibers never preempt) ------
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    const unsigned long long old = *p;
    *p = old + v;
    return old;
}

inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}

// __shfl_up_sync: lane reads lane − delta (its own value when lane < delta); a warp barrier
// like __shfl_xor_sync.
template <class T>
inline T __shfl_up_sync(unsigned, T v, unsigned delta) {
    static_assert(sizeof(T) == 4, "32-bit shuffles only");
    EmuFiber& f = emu_rt->fibers[emu_rt->current];
    const unsigned t = emu_rt->current, lane = t & 31, base = t & ~31u;
    const unsigned parity = f.shuffles++ & 1;
    f.warp_op = EMU_OP_SHFL;
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    emu_rt->lanes[parity][t] = bits;
    emu_yield(EMU_WARP_WAIT);
    bits = emu_rt->lanes[parity][base + (lane >= delta ? lane - delta : lane)];
    T out;
    std::memcpy(&out, &bits, 4);
    return out;
}
