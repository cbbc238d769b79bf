/* cuda_sample.cu — token selection on the device: eng_sampler_pick (engine/sampler.h) as a
 * kernel, so that only token ids and log-probabilities cross the bus.
 *
 * One block of 1024 threads per logits row. Warp w owns the contiguous range of ids
 * [w CW, (w + 1) CW) (CW = V / 32 rounded up to a multiple of 32) and walks it in steps of 32
 * consecutive ids, lane l taking id w CW + 32 j + l at step j: every load of a pass is one
 * coalesced 128-byte line. (Until 2026-11-28 thread t owned the slice [t C, (t + 1) C), so a warp's
 * loads touched 32 lines each: ~20 us a pass, 1.2 ms a row on the H100.) "The first in token-id
 * order" is then warp order, step order, lane order: a rank is the count of matches in the warps
 * before (a scan of warp totals), in the steps before and in the lanes before (ballots). The
 * canonical tie rules of the host sampler (top-k ties and top-p ties to the lower id, the draw
 * walking ids) need exactly that.
 *
 * The logits row is only read: the row is copied into the scratch row, where the penalties apply
 * and, from step 5 on, the probabilities replace the logits; the log-probability reads the raw
 * logit of the chosen token. (Rows may share penalty pairs: nothing is stored per pair.)
 * Passes over the row (each a walk of the warps' ranges plus a block reduction):
 *   1. raw max and sum of exp (the log-probability's normaliser); the row into scratch, NaN -> -inf;
 *   2. penalties from the (token, count) pairs on the scratch row;
 *   3. argmax (first index on ties): greedy rows stop here;
 *   4. top-k: binary search over the order-preserving 32-bit key of the logit for the largest key
 *      with at least k elements at or above it (<= 32 counting passes), ties ranked by id;
 *   5. probabilities w = exp((v - max) / T) of the top-k survivors (0 for the others) into the
 *      scratch row, then top-p: binary search over the bits of w for the largest threshold whose
 *      mass at or above reaches top_p of the total (<= 30 passes, double sums), ties by id;
 *   6. min-p, then the draw: u * (kept mass) located by a scan of per-warp masses, then of each
 *      step's 32 masses in the warp that holds it.
 * Sums are in double like the host's, in another order; the device's expf is within 2 ulp of
 * glibc's, not always equal. Either can flip a choice only when u * mass, the top-p target or a
 * min-p comparison falls within ~1e-7 (relative) of a boundary: a host-side model of the kernel
 * with ±1 ulp on half the exponentials picked the host's token on 3,800 of 3,800 rows.
 */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/cuda_device.cuh"

namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFull = 0xffffffffu;
static_assert(kWarps == 32, "the block reductions finish in one warp: one slot per lane");

/* Scratch for the block reductions: one slot per warp. */
struct Reduce {
    double d[kWarps];
    int i[kWarps];
    float f[kWarps];
};

struct Add {
    template <typename T> __device__ T operator()(T a, T b) const { return a + b; }
};
struct Max {
    __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct Min {
    __device__ int operator()(int a, int b) const { return min(a, b); }
};

template <typename T, typename Op> __device__ T warp_reduce(T x, Op op) {
    for (int o = 16; o > 0; o >>= 1)
        x = op(x, __shfl_xor_sync(kFull, x, o));
    return x;
}

/* op over the block, returned to every thread; a fixed tree, so the same inputs give the same
 * bits on every call (the binary searches compare such sums with each other). */
template <typename T, typename Op> __device__ T block_reduce(T x, T *slot, Op op) {
    x = warp_reduce(x, op);
    __syncthreads();
    if ((threadIdx.x & 31) == 0)
        slot[threadIdx.x >> 5] = x;
    __syncthreads();
    return warp_reduce(slot[threadIdx.x & 31], op);
}

template <typename T> __device__ T block_sum(T x, T *slot) { return block_reduce(x, slot, Add()); }

/* Inclusive prefix over the lanes of a warp, in lane order. */
template <typename T> __device__ T lanes_inclusive(T x) {
    const int lane = threadIdx.x & 31;
    for (int o = 1; o < 32; o <<= 1) {
        T y = __shfl_up_sync(kFull, x, o);
        if (lane >= o)
            x += y;
    }
    return x;
}

/* x summed over each warp, then the sum of the warps before this one (in warp order) returned to
 * every thread; *total gets the block's sum. A fixed order, like block_reduce. */
template <typename T> __device__ T warps_before(T x, T *slot, T *total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    x = warp_reduce(x, Add());
    __syncthreads();
    if (lane == 0)
        slot[warp] = x;
    __syncthreads();
    const T inc = lanes_inclusive(slot[lane]);
    T exc = __shfl_up_sync(kFull, inc, 1);
    if (lane == 0)
        exc = 0;
    *total = __shfl_sync(kFull, inc, 31);
    return __shfl_sync(kFull, exc, warp);
}

/* Id-order ranks of the ids that match a test, walked a step at a time (every lane of the warp
 * calls next() at every step, in step order): base starts at the matches of the warps before. */
struct Ranker {
    int base;
    /* this lane's rank among the matches so far (meaningful when hit) */
    __device__ int next(bool hit) {
        const unsigned b = __ballot_sync(kFull, hit);
        const int r = base + __popc(b & ((1u << (threadIdx.x & 31)) - 1u));
        base += __popc(b);
        return r;
    }
};

/* (value, index) with the larger value, the lower index on ties; index -1 loses to any. */
__device__ void better(float *v, int *i, float ov, int oi) {
    if (oi >= 0 && (*i < 0 || ov > *v || (ov == *v && oi < *i))) {
        *v = ov;
        *i = oi;
    }
}

__device__ void block_argmax(float *v, int *i, Reduce *r) {
    for (int o = 16; o > 0; o >>= 1)
        better(v, i, __shfl_xor_sync(kFull, *v, o), __shfl_xor_sync(kFull, *i, o));
    __syncthreads();
    if ((threadIdx.x & 31) == 0) {
        r->f[threadIdx.x >> 5] = *v;
        r->i[threadIdx.x >> 5] = *i;
    }
    __syncthreads();
    *v = r->f[threadIdx.x & 31];
    *i = r->i[threadIdx.x & 31];
    for (int o = 16; o > 0; o >>= 1)
        better(v, i, __shfl_xor_sync(kFull, *v, o), __shfl_xor_sync(kFull, *i, o));
}

/* Order-preserving key of a float that is not NaN (-0 as +0, as float comparison has it). */
__device__ unsigned order_key(float v) {
    unsigned b = __float_as_uint(v == 0.0f ? 0.0f : v);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__global__ void __launch_bounds__(kThreads)
sample_kernel(int32_t *ids, float *lps, const float *logits, float *scratch,
              const eng_sample_row_t *rows, const int32_t *pen, int V) {
    __shared__ Reduce red;
    pdl_trigger();
    pdl_wait();
    const eng_sample_row_t row = rows[blockIdx.x];
    const float *raw = logits + (size_t)blockIdx.x * V;
    float *l = scratch + (size_t)blockIdx.x * V; /* the working logits */
    float *const w = l;                          /* from step 5: their probabilities, in place */
    /* this warp's ids [s0, s1), visited s0 + lane, s0 + lane + 32, ... (see the top) */
    const int lane = threadIdx.x & 31, CW = (V + kThreads - 1) / kThreads * 32;
    const int s0 = min(V, (int)(threadIdx.x >> 5) * CW), s1 = min(V, s0 + CW);
    const int i0 = s0 + lane;

    /* 1. the raw row's normaliser; the row into scratch, NaN -> -inf */
    float rmax = -INFINITY;
    for (int i = i0; i < s1; i += 32)
        rmax = fmaxf(rmax, raw[i]); /* fmaxf skips NaN */
    rmax = block_reduce(rmax, red.f, Max());
    double rsum = 0;
    for (int i = i0; i < s1; i += 32) {
        float x = raw[i];
        l[i] = isnan(x) ? -INFINITY : x;
        if (!isnan(x))
            rsum += expf(x - rmax);
    }
    rsum = block_sum(rsum, red.d); /* its barriers order the copy before the penalties */

    /* 2. penalties (each pair's token once) */
    for (int j = threadIdx.x; j < row.n_pen; j += kThreads) {
        const int32_t *pair = pen + 2 * (row.pen_off + j);
        float v = l[pair[0]];
        if (row.repetition_penalty != 1.0f)
            v = v > 0 ? v / row.repetition_penalty : v * row.repetition_penalty;
        /* _rn: no contraction into an FMA, which would round differently from the host */
        l[pair[0]] = v - __fadd_rn(__fmul_rn(row.frequency_penalty, (float)pair[1]),
                                   row.presence_penalty);
    }
    __syncthreads();

    /* 3. argmax (a thread's ids ascend: the first of its maxima; the block's ties to the lower id) */
    float bv = -INFINITY;
    int bi = -1;
    for (int i = i0; i < s1; i += 32)
        if (l[i] > bv)
            bv = l[i], bi = i;
    block_argmax(&bv, &bi, &red);
    if (bi < 0) { /* no finite logit: uniform across the block, so all return */
        if (threadIdx.x == 0)
            ids[blockIdx.x] = -1, lps[blockIdx.x] = NAN;
        return;
    }
    int chosen = bi;
    if (row.temperature > 0 && isfinite(1.0f / row.temperature) && row.top_k != 1) { /* as the host's */
        /* 4. top-k on the logits: key kt, `k_ties` elements equal to it survive, by id */
        const bool use_k = row.top_k > 0 && row.top_k < V;
        unsigned kt = 0;
        int k_ties = V, total;
        Ranker k_rank = {0};
        if (use_k) {
            unsigned lo = 0, hi = order_key(bv);
            while (lo < hi) {
                unsigned mid = (unsigned)(((uint64_t)lo + hi + 1) / 2);
                int c = 0;
                for (int i = i0; i < s1; i += 32)
                    c += order_key(l[i]) >= mid;
                if (block_sum(c, red.i) >= row.top_k)
                    lo = mid;
                else
                    hi = mid - 1;
            }
            kt = lo;
            int gt = 0, eq = 0;
            for (int i = i0; i < s1; i += 32) {
                unsigned k = order_key(l[i]);
                gt += k > kt;
                eq += k == kt;
            }
            k_ties = row.top_k - block_sum(gt, red.i);
            k_rank.base = warps_before(eq, red.i, &total);
        }
        /* 5. probabilities of the top-k survivors (steps walked by the whole warp: the ranks) */
        const float inv_t = 1.0f / row.temperature;
        double mass = 0;
        for (int b = s0; b < s1; b += 32) {
            const int i = b + lane;
            const bool ok = i < s1;
            const float v = ok ? l[i] : -INFINITY;
            const unsigned k = order_key(v);
            const bool tie = ok && use_k && k == kt;
            const int rank = k_rank.next(tie);
            const bool in = ok && (!use_k || k > kt || (tie && rank < k_ties));
            const float p = in ? expf((v - bv) * inv_t) : 0.0f;
            if (ok)
                w[i] = p;
            mass += p;
        }
        /* top-p: threshold pt, `p_ties` elements equal to it survive, by id */
        const bool use_p = row.top_p < 1.0f;
        unsigned pt = 0;
        int p_ties = V;
        Ranker p_rank = {0};
        if (use_p) {
            double want = (double)row.top_p * block_sum(mass, red.d);
            if (want <= 0) { /* the single most likely token, which has p = 1 */
                pt = __float_as_uint(1.0f);
                p_ties = 1;
            } else {
                unsigned lo = 0, hi = __float_as_uint(1.0f);
                while (lo < hi) {
                    unsigned mid = lo + (hi - lo + 1) / 2;
                    double m = 0;
                    for (int i = i0; i < s1; i += 32)
                        if (__float_as_uint(w[i]) >= mid)
                            m += w[i];
                    if (block_sum(m, red.d) >= want)
                        lo = mid;
                    else
                        hi = mid - 1;
                }
                pt = lo;
                double above = 0;
                for (int i = i0; i < s1; i += 32)
                    if (__float_as_uint(w[i]) > pt)
                        above += w[i];
                above = block_sum(above, red.d);
                double need = ceil((want - above) / (double)__uint_as_float(pt));
                p_ties = need < 1 ? 1 : need > V ? V : (int)need;
            }
            int eq = 0;
            for (int i = i0; i < s1; i += 32)
                eq += w[i] > 0 && __float_as_uint(w[i]) == pt;
            p_rank.base = warps_before(eq, red.i, &total);
        }
        /* 6. min-p, then the draw over the survivors in id order */
        double kept = 0;
        int last = -1;
        for (int b = s0; b < s1; b += 32) {
            const int i = b + lane;
            const bool ok = i < s1;
            const float p = ok ? w[i] : 0.0f;
            const unsigned k = __float_as_uint(p);
            const bool tie = use_p && p > 0 && k == pt;
            const int rank = p_rank.next(tie);
            const bool in = p > 0 && (!use_p || k > pt || (tie && rank < p_ties)) &&
                            p >= row.min_p;
            if (ok && !in)
                w[i] = 0;
            kept += in ? p : 0.0f;
            last = in ? i : last;
        }
        double all;
        double acc = warps_before(kept, red.d, &all); /* the survivors' mass before this warp */
        const double r = row.u * all;
        int pick = V;
        for (int b = s0; b < s1; b += 32) { /* the first survivor whose running mass passes r */
            const int i = b + lane;
            const double x = i < s1 ? (double)w[i] : 0.0;
            const double inc = lanes_inclusive(x);
            const unsigned hit = __ballot_sync(kFull, x > 0 && r < acc + inc);
            if (hit) {
                pick = b + __ffs(hit) - 1;
                break;
            }
            acc += __shfl_sync(kFull, inc, 31);
        }
        pick = block_reduce(pick, red.i, Min());
        if (pick == V) /* r past the scanned total by rounding: the last survivor, as the host */
            pick = -block_reduce(-last, red.i, Min());
        chosen = pick >= 0 ? pick : bi; /* no survivor with a finite mass (infinite logits) */
    }

    /* log-probability under the raw row */
    if (threadIdx.x == 0) {
        ids[blockIdx.x] = chosen;
        lps[blockIdx.x] = (float)((double)raw[chosen] - rmax - log(rsum));
    }
}

} // namespace

extern "C" int eng_cuda_launch_sample(int32_t *ids, float *lps, const float *logits, float *scratch,
                                      const eng_sample_row_t *rows, const int32_t *pen, int n,
                                      int vocab, eng_cuda_exec_t ex) {
    if (n <= 0)
        return cudaSuccess;
    return launch_kernel(ex, sample_kernel, dim3(n), dim3(kThreads), 0, ids, lps, logits, scratch,
                         rows, pen, vocab);
}
