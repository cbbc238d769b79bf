// cuda_device.cuh — device functions that more than one kernel of the CUDA backend computes and
// that must round identically wherever they run: the RMSNorm scale (one warp, a fixed summation
// order independent of the block size and of the access width), the normalised fp16 element,
// SiLU*mul, and the RoPE rotation of one pair (fused multiply-adds written out, so no compiler
// contraction choice can differ between kernels). A fused path built from these computes the same
// bits as the separate kernels it replaces.
//
// Also the programmatic dependent launch (PDL) protocol every step kernel follows, and the launch
// helper that applies it. A kernel launched with PDL may start while the kernel before it on the
// stream is still running; so every step kernel calls pdl_trigger() first (its own dependents may
// then be scheduled once all its blocks have started) and pdl_wait() before it reads anything an
// earlier kernel wrote or writes anything at all (before the wait it may only read weights and the
// step plan, which no kernel of the step writes). pdl_wait() returns once the previous kernel has
// completed and its writes are visible; since that kernel waited in turn, every earlier one has
// too. Without PDL (a plain launch, or a GPU before sm_90) both are no-ops, so the results are the
// same bits either way.
#ifndef SLUICE_ENGINE_CUDA_DEVICE_CUH
#define SLUICE_ENGINE_CUDA_DEVICE_CUH

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "engine/cuda/cuda_backend.h"

__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Launches kernel<<<grid, block, smem, ex.stream>>>(args...), with programmatic stream
// serialisation when ex.pdl; returns the launch's error (cudaGetLastError() included).
template <typename... Params, typename... Args>
cudaError_t launch_kernel(const eng_cuda_exec_t &ex, void (*kernel)(Params...), dim3 grid,
                          dim3 block, size_t smem, Args... args) {
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = (cudaStream_t)ex.stream;
    cfg.attrs = attr;
    cfg.numAttrs = ex.pdl ? 1 : 0;
    const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...);
    return e != cudaSuccess ? e : cudaGetLastError();
}

// 1 / sqrt(mean(x^2) + eps) of one fp32 row, computed by one whole warp (every lane gets it).
// Lane l sums elements 4l..4l+3, 4l+128.., in that order (16-byte loads when dim % 4 == 0, else
// the same elements one by one), then a butterfly over the lanes.
__device__ __forceinline__ float warp_inv_rms(const float *x, int dim, float eps) {
    const int lane = threadIdx.x & 31;
    float ss = 0.0f;
    if (dim % 4 == 0) {
        for (int k = lane * 4; k < dim; k += 128) {
            const float4 v = *(const float4 *)(x + k);
            ss = fmaf(v.x, v.x, ss);
            ss = fmaf(v.y, v.y, ss);
            ss = fmaf(v.z, v.z, ss);
            ss = fmaf(v.w, v.w, ss);
        }
    } else {
        for (int k = lane * 4; k < dim; k += 128)
            for (int i = 0; i < 4 && k + i < dim; i++)
                ss = fmaf(x[k + i], x[k + i], ss);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        ss += __shfl_xor_sync(0xffffffffu, ss, o);
    return rsqrtf(ss / (float)dim + eps);
}

// The normalised element as the projections read it: fp16(x * inv * w).
__device__ __forceinline__ __half norm_elem(float x, float inv, float w) {
    return __float2half_rn(__fmul_rn(__fmul_rn(x, inv), w));
}

// silu(g) * u in fp32 from the fp16 gate and up values.
__device__ __forceinline__ float silu_mul_elem(float g, float u) {
    return __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, __expf(-g))), u);
}

// (a, b) rotated by the angle whose cosine and sine are c, s.
__device__ __forceinline__ float2 rope_pair(float a, float b, float c, float s) {
    return make_float2(__fmaf_rn(a, c, -__fmul_rn(b, s)), __fmaf_rn(a, s, __fmul_rn(b, c)));
}

#endif
