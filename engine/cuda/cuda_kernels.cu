// cuda_kernels.cu — the CUDA backend's elementwise kernels: synthetic weights, fp32->fp16,
// embedding gather, RMSNorm (its residual add is fused into the projections' epilogue), RoPE fused
// with the KV write, SiLU*mul (these three with 16-byte accesses where the shape allows; vec = 0
// forces the scalar path), greedy argmax, copy-on-write block copies. Launchers are declared in
// cuda_backend.h; each enqueues on the given stream and returns cudaGetLastError() without
// synchronising. The step kernels (all but the three weight-loading ones) follow the PDL protocol
// of cuda_device.cuh.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/cuda_device.cuh"

namespace {

__device__ __forceinline__ uint64_t mix64(uint64_t z) {  // splitmix64 finaliser
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

__global__ void synth_f16(__half *dst, int64_t n, uint64_t seed, float scale) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        uint64_t h = mix64(seed + 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1));
        float u = (float)(h >> 40) * (1.0f / 16777216.0f);  // [0, 1)
        dst[i] = __float2half_rn((2.0f * u - 1.0f) * scale);
    }
}

__global__ void fill_f32(float *dst, int64_t n, float v) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = v;
}

__global__ void f32_to_f16(__half *dst, const float *src, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = __float2half_rn(src[i]);
}

__global__ void embed(float *x, const __half *embd, const int32_t *tokens, int dim) {
    pdl_trigger();
    pdl_wait();
    int t = blockIdx.x;
    const __half *row = embd + (int64_t)tokens[t] * dim;
    for (int d = threadIdx.x; d < dim; d += blockDim.x)
        x[(int64_t)t * dim + d] = __half2float(row[d]);
}

// V-element accesses: V = 8 is one 16-byte access of fp16 (two of fp32); V = 1 or 2 is the
// scalar path the launchers fall back to (shapes not a multiple of 8, or vec == 0).
template <int V>
struct hvec;
template <>
struct hvec<1> {
    using T = __half;
};
template <>
struct hvec<2> {
    using T = __half2;
};
template <>
struct hvec<8> {
    using T = uint4;
};

template <int V>
__device__ __forceinline__ void load_h(const __half *p, float *f) {
    const typename hvec<V>::T v = *(const typename hvec<V>::T *)p;
    const __half *h = (const __half *)&v;
#pragma unroll
    for (int i = 0; i < V; i++)
        f[i] = __half2float(h[i]);
}

template <int V>
__device__ __forceinline__ void store_h(__half *p, const float *f) {
    typename hvec<V>::T v;
    __half *h = (__half *)&v;
#pragma unroll
    for (int i = 0; i < V; i++)
        h[i] = __float2half_rn(f[i]);
    *(typename hvec<V>::T *)p = v;
}

template <int V>
__device__ __forceinline__ void load_f(const float *p, float *f) {
    if constexpr (V % 4 == 0) {
#pragma unroll
        for (int i = 0; i < V; i += 4)
            *(float4 *)(f + i) = *(const float4 *)(p + i);
    } else {
#pragma unroll
        for (int i = 0; i < V; i++)
            f[i] = p[i];
    }
}

// One block per output row; blockDim a multiple of 32; dim % V == 0. (The residual add happens
// before, in the epilogue of the o / down projections: beta = 1 onto the fp32 residual.) The scale
// comes from warp_inv_rms (warp 0), so both access widths and the fused GEMV input round alike.
template <int V>
__global__ void rmsnorm(const float *x, const float *w, __half *out, const int32_t *rows, int dim,
                        float eps) {
    __shared__ float s_inv;
    pdl_trigger();
    pdl_wait();
    const int r = blockIdx.x;
    const float *xr = x + (int64_t)(rows ? rows[r] : r) * dim;
    __half *orow = out + (int64_t)r * dim;
    if (threadIdx.x < 32) {
        const float inv = warp_inv_rms(xr, dim, eps);
        if (threadIdx.x == 0)
            s_inv = inv;
    }
    __syncthreads();
    const float inv = s_inv;
    for (int d = threadIdx.x * V; d < dim; d += blockDim.x * V) {
        float v[V], wv[V];
        load_f<V>(xr + d, v);  // the row is in L1 from the first pass
        load_f<V>(w + d, wv);
        typename hvec<V>::T o;
        __half *h = (__half *)&o;
#pragma unroll
        for (int i = 0; i < V; i++)
            h[i] = norm_elem(v[i], inv, wv[i]);
        *(typename hvec<V>::T *)(orow + d) = o;
    }
}

// One block per token. Pairs (2i, 2i+1) of every Q and K head rotate by pos * theta^(-2i/hd).
// The angle, its cosine and sine are computed in double and rounded to float once per (token, i),
// exactly as engine/cpu/ops.c eng_cpu_rope_table does, into a shared table all heads use. Each
// thread takes V elements (V / 2 pairs) of a head at a time; hd % V == 0, V even.
template <int V>
__global__ void rope_kv(__half *qkv, const int32_t *pos, const int32_t *slot, __half *kc,
                        __half *vc, int n_heads, int n_kv, int hd, int bs, float theta) {
    extern __shared__ float cs[];  // cos[hd/2], sin[hd/2]
    pdl_trigger();
    const int t = blockIdx.x;
    const int stride = (n_heads + 2 * n_kv) * hd;
    __half *row = qkv + (int64_t)t * stride;
    const int sl = slot[t];
    const int64_t blk = sl >= 0 ? sl / bs : 0, off = sl >= 0 ? sl % bs : 0;
    const int half_hd = hd / 2;
    for (int k = threadIdx.x; k < half_hd; k += blockDim.x) {
        double angle = (double)pos[t] * pow((double)theta, -2.0 * k / hd);
        double s, c;
        sincos(angle, &s, &c);
        cs[k] = (float)c;
        cs[half_hd + k] = (float)s;
    }
    pdl_wait();  // the angles come from the plan; the rows from the QKV projection
    __syncthreads();
    const int per_head = hd / V, n_chunks = (n_heads + n_kv) * per_head;
    for (int i = threadIdx.x; i < n_chunks; i += blockDim.x) {
        const int head = i / per_head, e0 = (i % per_head) * V;
        __half *e = row + head * hd + e0;
        float f[V];
        load_h<V>(e, f);
#pragma unroll
        for (int j = 0; j < V; j += 2) {
            const int k = (e0 + j) / 2;
            const float2 r = rope_pair(f[j], f[j + 1], cs[k], cs[half_hd + k]);
            f[j] = r.x;
            f[j + 1] = r.y;
        }
        store_h<V>(e, f);
        if (head >= n_heads && sl >= 0)
            store_h<V>(kc + ((blk * n_kv + (head - n_heads)) * bs + off) * hd + e0, f);
    }
    if (sl < 0)
        return;
    const __half *v = row + (n_heads + n_kv) * hd;
    for (int i = threadIdx.x * V; i < n_kv * hd; i += blockDim.x * V) {
        const int h = i / hd, d = i % hd;
        *(typename hvec<V>::T *)(vc + ((blk * n_kv + h) * bs + off) * hd + d) =
            *(const typename hvec<V>::T *)(v + i);
    }
}

// grid (ceil(ffn / V / 256), T), 256 threads; ffn % V == 0.
template <int V>
__global__ void silu_mul(__half *h, const __half *gu, int ffn) {
    pdl_trigger();
    pdl_wait();
    const int j = (blockIdx.x * blockDim.x + threadIdx.x) * V;
    if (j >= ffn)
        return;
    const int64_t t = blockIdx.y;
    float g[V], u[V];
    load_h<V>(gu + t * 2 * ffn + j, g);
    load_h<V>(gu + t * 2 * ffn + ffn + j, u);
#pragma unroll
    for (int i = 0; i < V; i++)
        g[i] = silu_mul_elem(g[i], u[i]);
    store_h<V>(h + t * ffn + j, g);
}

// One block of 1024 threads per row.
__global__ void argmax_rows(int32_t *ids, const float *logits, int vocab) {
    __shared__ float sv[32];
    __shared__ int si[32];
    pdl_trigger();
    pdl_wait();
    const float *row = logits + (int64_t)blockIdx.x * vocab;
    float best = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        float v = row[i];
        if (v > best) {  // ascending i per thread: first maximum wins
            best = v;
            bi = i;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, best, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > best || (ov == best && oi < bi)) {
            best = ov;
            bi = oi;
        }
    }
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) {
        sv[warp] = best;
        si[warp] = bi;
    }
    __syncthreads();
    if (warp == 0) {
        int nw = blockDim.x >> 5;
        best = lane < nw ? sv[lane] : -INFINITY;
        bi = lane < nw ? si[lane] : 0x7fffffff;
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, best, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ov > best || (ov == best && oi < bi)) {
                best = ov;
                bi = oi;
            }
        }
        if (lane == 0)
            ids[blockIdx.x] = bi == 0x7fffffff ? 0 : bi;  // all-NaN row: token 0
    }
}

// grid (n copies, n_pools); 16-byte copies.
__global__ void copy_blocks(__half *base, int64_t pool_elems, const int32_t *copies,
                            int64_t block_elems) {
    pdl_trigger();
    pdl_wait();
    int c = blockIdx.x;
    __half *pool = base + (int64_t)blockIdx.y * pool_elems;
    const uint4 *src = (const uint4 *)(pool + (int64_t)copies[2 * c] * block_elems);
    uint4 *dst = (uint4 *)(pool + (int64_t)copies[2 * c + 1] * block_elems);
    for (int64_t i = threadIdx.x; i < block_elems / 8; i += blockDim.x)
        dst[i] = src[i];
}

int grid_for(int64_t n, int threads) {
    int64_t g = (n + threads - 1) / threads;
    return (int)(g < 1 ? 1 : g > 65535 * 8 ? 65535 * 8 : g);
}

}  // namespace

extern "C" {

int eng_cuda_launch_synth_f16(uint16_t *dst, int64_t n, uint64_t seed, float scale,
                              eng_cuda_stream_t s) {
    synth_f16<<<grid_for(n, 256), 256, 0, s>>>((__half *)dst, n, seed, scale);
    return (int)cudaGetLastError();
}

int eng_cuda_launch_fill_f32(float *dst, int64_t n, float value, eng_cuda_stream_t s) {
    fill_f32<<<grid_for(n, 256), 256, 0, s>>>(dst, n, value);
    return (int)cudaGetLastError();
}

int eng_cuda_launch_f32_to_f16(uint16_t *dst, const float *src, int64_t n, eng_cuda_stream_t s) {
    f32_to_f16<<<grid_for(n, 256), 256, 0, s>>>((__half *)dst, src, n);
    return (int)cudaGetLastError();
}

int eng_cuda_launch_embed(float *x, const uint16_t *embd, const int32_t *tokens, int T, int dim,
                          eng_cuda_exec_t ex) {
    return (int)launch_kernel(ex, embed, dim3(T), dim3(256), 0, x, (const __half *)embd, tokens,
                              dim);
}

int eng_cuda_launch_rmsnorm(const float *x, const float *w, uint16_t *out, const int32_t *rows,
                            int n, int dim, float eps, int vec, eng_cuda_exec_t ex) {
    if (vec && dim % 8 == 0) {
        const int threads = dim / 8 >= 1024 ? 1024 : ((dim / 8 + 31) / 32) * 32;
        return (int)launch_kernel(ex, rmsnorm<8>, dim3(n), dim3(threads), 0, x, w,
                                  (__half *)out, rows, dim, eps);
    }
    const int threads = dim >= 1024 ? 1024 : ((dim + 31) / 32) * 32;
    return (int)launch_kernel(ex, rmsnorm<1>, dim3(n), dim3(threads), 0, x, w, (__half *)out, rows,
                              dim, eps);
}

int eng_cuda_launch_rope_kv(uint16_t *qkv, const int32_t *pos, const int32_t *slot, uint16_t *kc,
                            uint16_t *vc, int T, int n_heads, int n_kv, int head_dim,
                            int block_size, float theta, int vec, eng_cuda_exec_t ex) {
    const size_t sh = (size_t)head_dim * sizeof(float);
    return (int)launch_kernel(ex, vec && head_dim % 8 == 0 ? rope_kv<8> : rope_kv<2>, dim3(T),
                              dim3(256), sh, (__half *)qkv, pos, slot, (__half *)kc, (__half *)vc,
                              n_heads, n_kv, head_dim, block_size, theta);
}

int eng_cuda_launch_silu_mul(uint16_t *h, const uint16_t *gu, int T, int ffn, int vec,
                             eng_cuda_exec_t ex) {
    if (T <= 0)
        return (int)cudaSuccess;
    const int v = vec && ffn % 8 == 0 ? 8 : 1;
    return (int)launch_kernel(ex, v == 8 ? silu_mul<8> : silu_mul<1>,
                              dim3((ffn / v + 255) / 256, T), dim3(256), 0, (__half *)h,
                              (const __half *)gu, ffn);
}

int eng_cuda_launch_argmax(int32_t *ids, const float *logits, int rows, int vocab,
                           eng_cuda_exec_t ex) {
    return (int)launch_kernel(ex, argmax_rows, dim3(rows), dim3(1024), 0, ids, logits, vocab);
}

int eng_cuda_launch_copy_blocks(uint16_t *base, int64_t pool_elems, int n_pools,
                                const int32_t *copies, int n, int64_t block_elems,
                                eng_cuda_exec_t ex) {
    if (n <= 0)
        return (int)cudaSuccess;
    return (int)launch_kernel(ex, copy_blocks, dim3(n, n_pools), dim3(256), 0, (__half *)base,
                              pool_elems, copies, block_elems);
}

}  // extern "C"
