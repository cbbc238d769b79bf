// cuda_gemv.cu — the small-M projection kernel of the CUDA backend: Y (M x n_out) = X (M x n_in)
// W^T for M <= ENG_CUDA_GEMV_MAX_M, fp16 W and X, fp32 accumulation, with the same three output
// modes as the cuBLAS path (fp16 store, fp32 add onto Y = the residual add, fp32 store = logits).
// Whether it or cuBLAS runs is decided per (projection, M bucket) by timing both at backend
// creation (cuda_backend.c). Launcher declared in cuda_backend.h.
//
// The weights are the bytes to move (M x n_in of X is tiny and stays in L1/L2), so: each warp owns
// GEMV_R rows; each lane streams 16-byte chunks of those rows (coalesced: the 32 lanes of a warp
// cover 512 contiguous bytes of a row), GEMV_R x GEMV_U loads issued before the first use, with
// the L1-bypassing non-coherent load; the matching 16 bytes of each X row come through L1; every
// lane accumulates M x GEMV_R fp32 partial dots, reduced across the warp with shuffles at the end.
// Under PDL (cuda_device.cuh) the first GEMV_R x GEMV_U weight chunks are loaded before the wait,
// so a projection streams its weights while the kernel before it finishes.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/cuda_device.cuh"

namespace {

constexpr int GEMV_WARPS = 4;  // warps per block
constexpr int GEMV_R = 2;      // rows per warp
constexpr int GEMV_U = 4;      // 512-byte row chunks per lane in flight, per row

__device__ __forceinline__ uint4 ld_stream(const void *p) {
    uint4 v;
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

// grid ceil(n_out / (GEMV_WARPS * GEMV_R)) (MODE 3: ceil(n_out / GEMV_WARPS)), GEMV_WARPS * 32
// threads. n_in % 8 == 0, W and X 16-byte aligned. MODE 0: Y fp16 = ; 1: Y fp32 += ; 2: Y fp32 = ;
// 3: W holds 2 n_out rows (gate rows, then up rows), warp pair j computes rows j and n_out + j and
// stores Y fp16 = silu(fp16(gate)) * fp16(up) (what the GEMV in mode 0 and the SiLU*mul kernel give).
// NORM: the input row m is fp16(nx[rows ? rows[m] : m] * inv_rms * nw), built by the block in
// shared memory (M * n_in halves) with the RMSNorm kernel's rounding; X is unused.
template <int M, int MODE, bool NORM>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_kernel(const __half *__restrict__ W, const __half *__restrict__ X, void *Y, int n_out,
                int n_in, const float *__restrict__ nx, const float *__restrict__ nw,
                const int32_t *__restrict__ rows, float eps) {
    extern __shared__ uint4 xs_raw[];  // NORM: the M normalised input rows
    __shared__ float s_inv[NORM ? M : 1];
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
    uint4 w[GEMV_R][GEMV_U];
    auto load_w = [&](int k0) {
#pragma unroll
        for (int u = 0; u < GEMV_U; u++)
#pragma unroll
            for (int r = 0; r < GEMV_R; r++)
                w[r][u] = k0 + u * 256 < n_in ? ld_stream(wr[r] + k0 + u * 256)
                                              : make_uint4(0, 0, 0, 0);
    };
    int k0 = lane * 8;
    load_w(k0);  // the first weights are in flight while the kernel before ends, and the input is
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
        if (k0 + 32 * 8 * GEMV_U < n_in)
            load_w(k0 + 32 * 8 * GEMV_U);
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

template <int M, bool NORM>
cudaError_t launch_m(const __half *W, const __half *X, void *Y, int n_out, int n_in, int mode,
                     const eng_cuda_gemv_norm_t *nm, const eng_cuda_exec_t &ex) {
    const int rows_per_block = mode == 3 ? GEMV_WARPS : GEMV_WARPS * GEMV_R;
    const dim3 grid((n_out + rows_per_block - 1) / rows_per_block), block(GEMV_WARPS * 32);
    const size_t sh = NORM ? (size_t)M * n_in * sizeof(__half) : 0;
    const float *nx = NORM ? nm->x : nullptr, *nw = NORM ? nm->w : nullptr;
    const int32_t *rows = NORM ? nm->rows : nullptr;
    const float eps = NORM ? nm->eps : 0.0f;
    decltype(&gemv_kernel<M, 0, NORM>) kernel = nullptr;
    if (mode == 0)
        kernel = gemv_kernel<M, 0, NORM>;
    else if (mode == 2)
        kernel = gemv_kernel<M, 2, NORM>;
    else if (mode == 3)
        kernel = gemv_kernel<M, 3, NORM>;
    else if constexpr (!NORM)  // a normalised input is never added onto the residual
        if (mode == 1)
            kernel = gemv_kernel<M, 1, NORM>;
    if (!kernel)
        return cudaErrorInvalidValue;
    return launch_kernel(ex, kernel, grid, block, sh, W, X, Y, n_out, n_in, nx, nw, rows, eps);
}

// NORM is instantiated for M <= ENG_CUDA_GEMV_NORM_MAX_M only (the launcher rejects larger M).
template <int M>
cudaError_t launch_norm(const __half *W, const __half *X, void *Y, int n_out, int n_in, int mode,
                        const eng_cuda_gemv_norm_t *nm, const eng_cuda_exec_t &ex) {
    if (nm)
        return launch_m<(M <= ENG_CUDA_GEMV_NORM_MAX_M ? M : 1), true>(W, X, Y, n_out, n_in, mode,
                                                                        nm, ex);
    return launch_m<M, false>(W, X, Y, n_out, n_in, mode, nm, ex);
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

int eng_cuda_launch_gemv(const uint16_t *W, const uint16_t *X, void *Y, int M, int n_out,
                         int n_in, int mode, const eng_cuda_gemv_norm_t *norm,
                         eng_cuda_exec_t ex) {
    if (!eng_cuda_gemv_supported(W, norm ? (const void *)norm->x : X, M, n_in) || mode < 0 ||
        mode > 3 || n_out < 1 || (norm && (!eng_cuda_gemv_norm_supported(M, n_in) || mode == 1)))
        return (int)cudaErrorInvalidValue;
    const __half *w = (const __half *)W, *x = (const __half *)X;
    switch (M) {
    case 1: return (int)launch_norm<1>(w, x, Y, n_out, n_in, mode, norm, ex);
    case 2: return (int)launch_norm<2>(w, x, Y, n_out, n_in, mode, norm, ex);
    case 3: return (int)launch_norm<3>(w, x, Y, n_out, n_in, mode, norm, ex);
    case 4: return (int)launch_norm<4>(w, x, Y, n_out, n_in, mode, norm, ex);
    case 5: return (int)launch_norm<5>(w, x, Y, n_out, n_in, mode, norm, ex);
    case 6: return (int)launch_norm<6>(w, x, Y, n_out, n_in, mode, norm, ex);
    case 7: return (int)launch_norm<7>(w, x, Y, n_out, n_in, mode, norm, ex);
    default: return (int)launch_norm<8>(w, x, Y, n_out, n_in, mode, norm, ex);
    }
}

}  // extern "C"
