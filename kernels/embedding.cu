// embedding.cu: token embedding gather into the f32 residual stream.
//
// The residual stream is kept in f32 (4 bytes × d per row: negligible traffic next to the
// weights) so that 32 layers of residual adds do not round to f16 each time.
#include "common.cuh"

#define EMB_THREADS 256

// ids:   u32 [M]        token ids (device memory, so a captured graph can be replayed)
// table: f16 [V, d]     gpt_neox.embed_in.weight
// out:   f32 [M, d]     residual stream
// grid (M), block EMB_THREADS. An id >= V writes NaN to its row: loud, never out of bounds.
extern "C" __global__ void __launch_bounds__(EMB_THREADS)
embedding_f16(const unsigned int* __restrict__ ids, const f16_t* __restrict__ table,
              float* __restrict__ out, int V, int d) {
    const int m = blockIdx.x;
    const unsigned int id = ids[m];
    float* row_out = out + (size_t)m * d;
    if (id >= (unsigned int)V) {
        for (int i = threadIdx.x; i < d; i += EMB_THREADS) row_out[i] = __int_as_float(0x7fffffff);
        return;
    }
    const f16_t* row = table + (size_t)id * d;
    for (int i = threadIdx.x; i < d; i += EMB_THREADS) row_out[i] = h2f(row[i]);
}

// pos: i32 [M] = b + start, b + start + 1, …: a step's positions, written by a launch (its
// arguments travel with the launch) rather than by a copy from pageable host memory, which
// would make the host wait for the stream — so a chain of steps (the device speculative
// step) enqueues without waiting. b = base[0] when base is given (read when the kernel runs,
// so a recorded chain of steps replays at new positions), else 0. grid (1), block
// EMB_THREADS.
extern "C" __global__ void __launch_bounds__(EMB_THREADS)
positions_i32(int* __restrict__ pos, const int* __restrict__ base, int start, int M) {
    const int b = base != nullptr ? base[0] : 0;
    for (int i = threadIdx.x; i < M; i += EMB_THREADS) pos[i] = b + start + i;
}
