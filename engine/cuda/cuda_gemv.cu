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
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "engine/cuda/cuda_backend.h"

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

// grid ceil(n_out / (GEMV_WARPS * GEMV_R)), GEMV_WARPS * 32 threads. n_in % 8 == 0, W and X
// 16-byte aligned. MODE 0: Y fp16 = ; 1: Y fp32 += ; 2: Y fp32 = .
template <int M, int MODE>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_kernel(const __half *__restrict__ W, const __half *__restrict__ X, void *Y, int n_out,
                int n_in) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int row0 = (blockIdx.x * GEMV_WARPS + warp) * GEMV_R;
    if (row0 >= n_out)
        return;  // whole warp
    float acc[GEMV_R][M];
#pragma unroll
    for (int r = 0; r < GEMV_R; r++)
#pragma unroll
        for (int m = 0; m < M; m++)
            acc[r][m] = 0.0f;
    const __half *wr[GEMV_R];
#pragma unroll
    for (int r = 0; r < GEMV_R; r++)  // rows past n_out re-read the last row; never stored
        wr[r] = W + (int64_t)min(row0 + r, n_out - 1) * n_in;

    for (int k0 = lane * 8; k0 < n_in; k0 += 32 * 8 * GEMV_U) {
        uint4 w[GEMV_R][GEMV_U];
#pragma unroll
        for (int u = 0; u < GEMV_U; u++)
#pragma unroll
            for (int r = 0; r < GEMV_R; r++)
                w[r][u] = k0 + u * 256 < n_in ? ld_stream(wr[r] + k0 + u * 256)
                                              : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int u = 0; u < GEMV_U; u++) {
            const int k = k0 + u * 256;
            if (k >= n_in)
                break;
#pragma unroll
            for (int m = 0; m < M; m++) {
                const uint4 xv = __ldg((const uint4 *)(X + (int64_t)m * n_in + k));
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
    }
#pragma unroll
    for (int r = 0; r < GEMV_R; r++)
#pragma unroll
        for (int m = 0; m < M; m++) {
            float v = acc[r][m];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
                v += __shfl_xor_sync(0xffffffffu, v, o);
            // value (r, m) is stored by lane (r * M + m) % 32, spreading the stores
            if (lane == ((r * M + m) & 31) && row0 + r < n_out) {
                const int64_t idx = (int64_t)m * n_out + row0 + r;
                if (MODE == 0)
                    ((__half *)Y)[idx] = __float2half_rn(v);
                else if (MODE == 1)
                    ((float *)Y)[idx] += v;
                else
                    ((float *)Y)[idx] = v;
            }
        }
}

template <int M>
cudaError_t launch_m(const __half *W, const __half *X, void *Y, int n_out, int n_in, int mode,
                     cudaStream_t s) {
    const int rows_per_block = GEMV_WARPS * GEMV_R;
    const dim3 grid((n_out + rows_per_block - 1) / rows_per_block), block(GEMV_WARPS * 32);
    if (mode == 0)
        gemv_kernel<M, 0><<<grid, block, 0, s>>>(W, X, Y, n_out, n_in);
    else if (mode == 1)
        gemv_kernel<M, 1><<<grid, block, 0, s>>>(W, X, Y, n_out, n_in);
    else
        gemv_kernel<M, 2><<<grid, block, 0, s>>>(W, X, Y, n_out, n_in);
    return cudaGetLastError();
}

}  // namespace

extern "C" {

int eng_cuda_gemv_supported(const void *W, const void *X, int M, int n_in) {
    return M >= 1 && M <= ENG_CUDA_GEMV_MAX_M && n_in % 8 == 0 && ((uintptr_t)W & 15) == 0 &&
           ((uintptr_t)X & 15) == 0;
}

int eng_cuda_launch_gemv(const uint16_t *W, const uint16_t *X, void *Y, int M, int n_out,
                         int n_in, int mode, eng_cuda_stream_t s) {
    if (!eng_cuda_gemv_supported(W, X, M, n_in) || mode < 0 || mode > 2 || n_out < 1)
        return (int)cudaErrorInvalidValue;
    const __half *w = (const __half *)W, *x = (const __half *)X;
    switch (M) {
    case 1: return (int)launch_m<1>(w, x, Y, n_out, n_in, mode, s);
    case 2: return (int)launch_m<2>(w, x, Y, n_out, n_in, mode, s);
    case 3: return (int)launch_m<3>(w, x, Y, n_out, n_in, mode, s);
    case 4: return (int)launch_m<4>(w, x, Y, n_out, n_in, mode, s);
    case 5: return (int)launch_m<5>(w, x, Y, n_out, n_in, mode, s);
    case 6: return (int)launch_m<6>(w, x, Y, n_out, n_in, mode, s);
    case 7: return (int)launch_m<7>(w, x, Y, n_out, n_in, mode, s);
    default: return (int)launch_m<8>(w, x, Y, n_out, n_in, mode, s);
    }
}

}  // extern "C"
