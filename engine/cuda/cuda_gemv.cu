// cuda_gemv.cu — the small-M projection kernel of the CUDA backend: Y (M x n_out) = X (M x n_in)
// W^T for M <= ENG_CUDA_GEMV_MAX_M, fp16 W and X, fp32 accumulation, with the same three output
// modes as the cuBLAS path (fp16 store, fp32 add onto Y = the residual add, fp32 store = logits).
// Whether it (and which variant) or cuBLAS runs is decided per (projection, M bucket) by timing
// them at backend creation (cuda_backend.c). Launcher declared in cuda_backend.h.
//
// The weights are the bytes to move (M x n_in of X is tiny and stays in L1/L2), so: each warp owns
// R rows; each lane streams 16-byte chunks of those rows (coalesced: the 32 lanes of a warp cover
// 512 contiguous bytes of a row), R x U loads issued before their first use, with the L1-bypassing
// non-coherent load; the matching 16 bytes of each X row come through L1; every lane accumulates
// M x R fp32 partial dots, reduced across the warp with shuffles at the end.
// Under PDL (cuda_device.cuh) the first R x U weight chunks are loaded before the wait, so a
// projection streams its weights while the kernel before it finishes.
//
// Variants (ENG_CUDA_GEMV_VARIANTS; 1.. only for M <= ENG_CUDA_GEMV_VARIANT_MAX_M) differ in how
// the loads are scheduled, never in the arithmetic: a lane sums the same chunks in the same order
// (k = 8 lane + 256 j, j = 0, 1, ...) whatever R and U are, so every variant gives the same bits.
//   0: R 2, U 4                      the first kernel: a burst of 8 loads, then their products
//   1: R 2, U 4, pipelined, L2 256B  the next burst is issued before the current one is used, and
//                                    each load asks L2 for 256-byte sectors
//   2: R 1, U 8, pipelined, L2 256B  twice the blocks (finer tail), the same bytes per lane
//   3: R 1, U 4, pipelined, L2 256B  four times the blocks of 0, half its bytes per lane
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/cuda_device.cuh"

namespace {

constexpr int GEMV_WARPS = 4;  // warps per block

template <bool HINT>
__device__ __forceinline__ uint4 ld_stream(const void *p) {
    uint4 v;
    if constexpr (HINT)
        asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
                     : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                     : "l"(p));
    else
        asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                     : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                     : "l"(p));
    return v;
}

__device__ __forceinline__ float dot8(const uint4 &w, const float2 *x) {
    const __half2 *h = (const __half2 *)&w;
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 f = __half22float2(h[i]);
        s = fmaf(f.x, x[i].x, s);
        s = fmaf(f.y, x[i].y, s);
    }
    return s;
}

// A variant's load schedule: R rows per warp (mode 3: always its gate and up row), U 512-byte
// chunks per row in a burst, PIPE: the next burst in flight while the current one is used, HINT:
// the 256-byte L2 prefetch size.
template <int R_, int U_, bool PIPE_, bool HINT_>
struct sched {
    static constexpr int R = R_, U = U_;
    static constexpr bool PIPE = PIPE_, HINT = HINT_;
};
using V0 = sched<2, 4, false, false>;
using V1 = sched<2, 4, true, true>;
using V2 = sched<1, 8, true, true>;
using V3 = sched<1, 4, true, true>;
static_assert(ENG_CUDA_GEMV_VARIANTS == 4, "one sched per variant");

template <class S, int MODE>
__host__ __device__ constexpr int rows_per_warp() { return MODE == 3 ? 2 : S::R; }

// grid ceil(n_out / (GEMV_WARPS * R)) (MODE 3: ceil(n_out / GEMV_WARPS)), GEMV_WARPS * 32
// threads. n_in % 8 == 0, W and X 16-byte aligned. MODE 0: Y fp16 = ; 1: Y fp32 += ; 2: Y fp32 = ;
// 3: W holds 2 n_out rows (gate rows, then up rows), warp pair j computes rows j and n_out + j and
// stores Y fp16 = silu(fp16(gate)) * fp16(up) (what the GEMV in mode 0 and the SiLU*mul kernel give).
// NORM: the input row m is fp16(nx[rows ? rows[m] : m] * inv_rms * nw), built by the block in
// shared memory (M * n_in halves) with the RMSNorm kernel's rounding; X is unused.
template <int M, int MODE, bool NORM, class S>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_kernel(const __half *__restrict__ W, const __half *__restrict__ X, void *Y, int n_out,
                int n_in, const float *__restrict__ nx, const float *__restrict__ nw,
                const int32_t *__restrict__ rows, float eps) {
    extern __shared__ uint4 xs_raw[];  // NORM: the M normalised input rows
    __shared__ float s_inv[NORM ? M : 1];
    constexpr int GEMV_R = rows_per_warp<S, MODE>(), GEMV_U = S::U;
    pdl_trigger();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int row0 = MODE == 3 ? blockIdx.x * GEMV_WARPS + warp
                               : (blockIdx.x * GEMV_WARPS + warp) * GEMV_R;
    float acc[GEMV_R][M];
#pragma unroll
    for (int r = 0; r < GEMV_R; r++)
#pragma unroll
        for (int m = 0; m < M; m++)
            acc[r][m] = 0.0f;
    const __half *wr[GEMV_R];
#pragma unroll
    for (int r = 0; r < GEMV_R; r++)  // rows past n_out re-read the last row; never stored
        wr[r] = MODE == 3 ? W + ((int64_t)r * n_out + min(row0, n_out - 1)) * n_in
                          : W + (int64_t)min(row0 + r, n_out - 1) * n_in;
    uint4 w[GEMV_R][GEMV_U], wn[S::PIPE ? GEMV_R : 1][S::PIPE ? GEMV_U : 1];
    auto load_w = [&](uint4(&dst)[GEMV_R][GEMV_U], int k0) {
#pragma unroll
        for (int u = 0; u < GEMV_U; u++)
#pragma unroll
            for (int r = 0; r < GEMV_R; r++)
                dst[r][u] = k0 + u * 256 < n_in ? ld_stream<S::HINT>(wr[r] + k0 + u * 256)
                                                : make_uint4(0, 0, 0, 0);
    };
    int k0 = lane * 8;
    load_w(w, k0);  // the first weights are in flight while the kernel before ends, and the input is
                 // normalised
    pdl_wait();
    if (!NORM && row0 >= n_out)
        return;  // whole warp (NORM: every warp helps build the input, stores are guarded)
    const __half *Xin = X;
    if constexpr (NORM) {
        __half *xs = (__half *)xs_raw;
        for (int m = warp; m < M; m += GEMV_WARPS) {
            const float inv = warp_inv_rms(nx + (int64_t)(rows ? rows[m] : m) * n_in, n_in, eps);
            if (lane == 0)
                s_inv[m] = inv;
        }
        __syncthreads();
        for (int i = threadIdx.x * 8; i < M * n_in; i += GEMV_WARPS * 32 * 8) {
            const int m = i / n_in, k = i % n_in;
            const float *xr = nx + (int64_t)(rows ? rows[m] : m) * n_in + k;
            const float4 x0 = *(const float4 *)xr, x1 = *(const float4 *)(xr + 4);
            const float4 w0 = *(const float4 *)(nw + k), w1 = *(const float4 *)(nw + k + 4);
            const float inv = s_inv[m];
            __half2 h[4] = {__halves2half2(norm_elem(x0.x, inv, w0.x), norm_elem(x0.y, inv, w0.y)),
                            __halves2half2(norm_elem(x0.z, inv, w0.z), norm_elem(x0.w, inv, w0.w)),
                            __halves2half2(norm_elem(x1.x, inv, w1.x), norm_elem(x1.y, inv, w1.y)),
                            __halves2half2(norm_elem(x1.z, inv, w1.z), norm_elem(x1.w, inv, w1.w))};
            *(uint4 *)(xs + i) = *(const uint4 *)h;
        }
        __syncthreads();
        Xin = xs;
    }
    for (; k0 < n_in; k0 += 32 * 8 * GEMV_U) {
        if constexpr (S::PIPE)  // the next burst flies while this one is used
            if (k0 + 32 * 8 * GEMV_U < n_in)
                load_w(wn, k0 + 32 * 8 * GEMV_U);
#pragma unroll
        for (int u = 0; u < GEMV_U; u++) {
            const int k = k0 + u * 256;
            if (k >= n_in)
                break;
#pragma unroll
            for (int m = 0; m < M; m++) {
                const uint4 xv = NORM ? *(const uint4 *)(Xin + m * n_in + k)
                                      : __ldg((const uint4 *)(Xin + (int64_t)m * n_in + k));
                const __half2 *xh = (const __half2 *)&xv;
                float2 xf[4];
#pragma unroll
                for (int i = 0; i < 4; i++)
                    xf[i] = __half22float2(xh[i]);
#pragma unroll
                for (int r = 0; r < GEMV_R; r++)
                    acc[r][m] += dot8(w[r][u], xf);
            }
        }
        if constexpr (S::PIPE) {
#pragma unroll
            for (int u = 0; u < GEMV_U; u++)
#pragma unroll
                for (int r = 0; r < GEMV_R; r++)
                    w[r][u] = wn[r][u];
        } else if (k0 + 32 * 8 * GEMV_U < n_in) {
            load_w(w, k0 + 32 * 8 * GEMV_U);
        }
    }
#pragma unroll
    for (int r = 0; r < GEMV_R; r++)
#pragma unroll
        for (int m = 0; m < M; m++)
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
                acc[r][m] += __shfl_xor_sync(0xffffffffu, acc[r][m], o);
    // value (r, m) is stored by lane (r * M + m) % 32, spreading the stores
#pragma unroll
    for (int m = 0; m < M; m++) {
        if constexpr (MODE == 3) {
            if (lane == (m & 31) && row0 < n_out)
                ((__half *)Y)[(int64_t)m * n_out + row0] = __float2half_rn(
                    silu_mul_elem(__half2float(__float2half_rn(acc[0][m])),
                                  __half2float(__float2half_rn(acc[1][m]))));
        } else {
#pragma unroll
            for (int r = 0; r < GEMV_R; r++)
                if (lane == ((r * M + m) & 31) && row0 + r < n_out) {
                    const int64_t idx = (int64_t)m * n_out + row0 + r;
                    if (MODE == 0)
                        ((__half *)Y)[idx] = __float2half_rn(acc[r][m]);
                    else if (MODE == 1)
                        ((float *)Y)[idx] += acc[r][m];
                    else
                        ((float *)Y)[idx] = acc[r][m];
                }
        }
    }
}

template <int M, bool NORM, class S>
cudaError_t launch_m(const __half *W, const __half *X, void *Y, int n_out, int n_in, int mode,
                     const eng_cuda_gemv_norm_t *nm, const eng_cuda_exec_t &ex) {
    const int rows_per_block = GEMV_WARPS * (mode == 3 ? 1 : S::R);
    const dim3 grid((n_out + rows_per_block - 1) / rows_per_block), block(GEMV_WARPS * 32);
    const size_t sh = NORM ? (size_t)M * n_in * sizeof(__half) : 0;
    const float *nx = NORM ? nm->x : nullptr, *nw = NORM ? nm->w : nullptr;
    const int32_t *rows = NORM ? nm->rows : nullptr;
    const float eps = NORM ? nm->eps : 0.0f;
    decltype(&gemv_kernel<M, 0, NORM, S>) kernel = nullptr;
    if (mode == 0)
        kernel = gemv_kernel<M, 0, NORM, S>;
    else if (mode == 2)
        kernel = gemv_kernel<M, 2, NORM, S>;
    else if (mode == 3)
        kernel = gemv_kernel<M, 3, NORM, S>;
    else if constexpr (!NORM)  // a normalised input is never added onto the residual
        if (mode == 1)
            kernel = gemv_kernel<M, 1, NORM, S>;
    if (!kernel)
        return cudaErrorInvalidValue;
    return launch_kernel(ex, kernel, grid, block, sh, W, X, Y, n_out, n_in, nx, nw, rows, eps);
}

// NORM is instantiated for M <= ENG_CUDA_GEMV_NORM_MAX_M only (the launcher rejects larger M).
template <int M, class S>
cudaError_t launch_norm(const __half *W, const __half *X, void *Y, int n_out, int n_in, int mode,
                        const eng_cuda_gemv_norm_t *nm, const eng_cuda_exec_t &ex) {
    if (nm)
        return launch_m<(M <= ENG_CUDA_GEMV_NORM_MAX_M ? M : 1), true, S>(W, X, Y, n_out, n_in,
                                                                           mode, nm, ex);
    return launch_m<M, false, S>(W, X, Y, n_out, n_in, mode, nm, ex);
}

// Variants 1.. are instantiated for M <= ENG_CUDA_GEMV_VARIANT_MAX_M only (the launcher checks).
template <int M>
cudaError_t launch_variant(const __half *W, const __half *X, void *Y, int n_out, int n_in,
                           int mode, int variant, const eng_cuda_gemv_norm_t *nm,
                           const eng_cuda_exec_t &ex) {
    if constexpr (M <= ENG_CUDA_GEMV_VARIANT_MAX_M) {
        if (variant == 1)
            return launch_norm<M, V1>(W, X, Y, n_out, n_in, mode, nm, ex);
        if (variant == 2)
            return launch_norm<M, V2>(W, X, Y, n_out, n_in, mode, nm, ex);
        if (variant == 3)
            return launch_norm<M, V3>(W, X, Y, n_out, n_in, mode, nm, ex);
    }
    return launch_norm<M, V0>(W, X, Y, n_out, n_in, mode, nm, ex);
}

}  // namespace

extern "C" {

int eng_cuda_gemv_supported(const void *W, const void *X, int M, int n_in) {
    return M >= 1 && M <= ENG_CUDA_GEMV_MAX_M && n_in % 8 == 0 && ((uintptr_t)W & 15) == 0 &&
           ((uintptr_t)X & 15) == 0;
}

int eng_cuda_gemv_norm_supported(int M, int n_in) {
    return M >= 1 && M <= ENG_CUDA_GEMV_NORM_MAX_M && n_in % 8 == 0 &&
           (int64_t)M * n_in * 2 <= ENG_CUDA_GEMV_NORM_SMEM;
}

int eng_cuda_gemv_variant_supported(int variant, int M) {
    return variant == 0 ||
           (variant > 0 && variant < ENG_CUDA_GEMV_VARIANTS && M <= ENG_CUDA_GEMV_VARIANT_MAX_M);
}

int eng_cuda_launch_gemv(const uint16_t *W, const uint16_t *X, void *Y, int M, int n_out,
                         int n_in, int mode, int variant, const eng_cuda_gemv_norm_t *norm,
                         eng_cuda_exec_t ex) {
    if (!eng_cuda_gemv_supported(W, norm ? (const void *)norm->x : X, M, n_in) || mode < 0 ||
        mode > 3 || n_out < 1 || (norm && (!eng_cuda_gemv_norm_supported(M, n_in) || mode == 1)) ||
        !eng_cuda_gemv_variant_supported(variant, M))
        return (int)cudaErrorInvalidValue;
    const __half *w = (const __half *)W, *x = (const __half *)X;
    switch (M) {
    case 1: return (int)launch_variant<1>(w, x, Y, n_out, n_in, mode, variant, norm, ex);
    case 2: return (int)launch_variant<2>(w, x, Y, n_out, n_in, mode, variant, norm, ex);
    case 3: return (int)launch_variant<3>(w, x, Y, n_out, n_in, mode, variant, norm, ex);
    case 4: return (int)launch_variant<4>(w, x, Y, n_out, n_in, mode, variant, norm, ex);
    case 5: return (int)launch_variant<5>(w, x, Y, n_out, n_in, mode, variant, norm, ex);
    case 6: return (int)launch_variant<6>(w, x, Y, n_out, n_in, mode, variant, norm, ex);
    case 7: return (int)launch_variant<7>(w, x, Y, n_out, n_in, mode, variant, norm, ex);
    default: return (int)launch_variant<8>(w, x, Y, n_out, n_in, mode, variant, norm, ex);
    }
}

}  // extern "C"
