// cuda_attn.cu — paged attention kernels of the CUDA backend: split-K rows (decode, and prefill
// when the flash kernel does not apply) with their reduce, and a flash-style causal prefill on
// tensor cores (WMMA, fp16 in, fp32 accumulate). K/V are always read from the pool through the
// block tables, so chunked prefill on top of existing context needs nothing special. Launchers are
// declared in cuda_backend.h; plan arrays (meta) as described there.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>
#include <stdint.h>

#include "engine/cuda/cuda_backend.h"

namespace {

__device__ __forceinline__ void h8_to_f(const uint4 &v, float *f) {
    const __half2 *h = (const __half2 *)&v;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 p = __half22float2(h[i]);
        f[2 * i] = p.x;
        f[2 * i + 1] = p.y;
    }
}

// ---- split-K rows ---------------------------------------------------------------------------
// grid (n_kv, splits, R), 128 threads. A group of LPT = HD/8 lanes handles one key at a time
// (16 bytes of K and of V per lane); NG = 128/LPT keys are in flight per block. Each group keeps an
// online-softmax state for every query head of the KV head's GQA group (G >= that group's size,
// a power of two); the block then merges its groups and writes one partial (max, sum, acc[HD]) per
// (row, head, split).
template <int HD, int G>
__global__ void __launch_bounds__(128)
    attn_rows_kernel(const __half *qkv, const __half *kc, const __half *vc, const int32_t *meta,
                     int off_row_tok, int off_row_bt, int off_row_nk, int off_bt, int n_heads,
                     int n_kv, int bs, int part, int splits, float scale, float *pm, float *pl,
                     float *pacc) {
    constexpr int LPT = HD / 8;
    constexpr int NG = 128 / LPT;
    __shared__ float s_m[NG][G], s_l[NG][G];
    __shared__ float s_acc[NG][G][HD];

    const int kvh = blockIdx.x, split = blockIdx.y, r = blockIdx.z;
    const int nk = meta[off_row_nk + r];
    const int k0 = split * part;
    if (k0 >= nk)
        return;  // uniform over the block; the reduce ignores this split
    const int k1 = min(nk, k0 + part);
    const int tok = meta[off_row_tok + r];
    const int32_t *bt = meta + off_bt + meta[off_row_bt + r];
    const int g = n_heads / n_kv;
    const int grp = threadIdx.x / LPT, ln = threadIdx.x % LPT;
    const int64_t stride = (int64_t)(n_heads + 2 * n_kv) * HD;
    const __half *qrow = qkv + tok * stride + (int64_t)kvh * g * HD + ln * 8;

    float q[G][8], acc[G][8], m[G], l[G];
#pragma unroll
    for (int j = 0; j < G; j++) {
        m[j] = -INFINITY;
        l[j] = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; i++)
            acc[j][i] = q[j][i] = 0.0f;
        if (j < g) {
            h8_to_f(*(const uint4 *)(qrow + j * HD), q[j]);
#pragma unroll
            for (int i = 0; i < 8; i++)
                q[j][i] *= scale;
        }
    }

    for (int base = k0; base < k1; base += NG) {
        const int k = base + grp;
        const bool valid = k < k1;
        float kf[8], vf[8];
        if (valid) {
            const int64_t blk = bt[k / bs];
            const int64_t idx = ((blk * n_kv + kvh) * bs + k % bs) * HD + ln * 8;
            h8_to_f(*(const uint4 *)(kc + idx), kf);
            h8_to_f(*(const uint4 *)(vc + idx), vf);
        } else {
#pragma unroll
            for (int i = 0; i < 8; i++)
                kf[i] = vf[i] = 0.0f;
        }
#pragma unroll
        for (int j = 0; j < G; j++) {
            float s = 0.0f;
#pragma unroll
            for (int i = 0; i < 8; i++)
                s += q[j][i] * kf[i];
#pragma unroll
            for (int o = LPT / 2; o > 0; o >>= 1)
                s += __shfl_xor_sync(0xffffffffu, s, o);
            if (valid && j < g) {
                const float mn = fmaxf(m[j], s);
                const float corr = __expf(m[j] - mn), p = __expf(s - mn);
                l[j] = l[j] * corr + p;
#pragma unroll
                for (int i = 0; i < 8; i++)
                    acc[j][i] = acc[j][i] * corr + p * vf[i];
                m[j] = mn;
            }
        }
    }

#pragma unroll
    for (int j = 0; j < G; j++) {
        if (j < g) {
            if (ln == 0) {
                s_m[grp][j] = m[j];
                s_l[grp][j] = l[j];
            }
#pragma unroll
            for (int i = 0; i < 8; i++)
                s_acc[grp][j][ln * 8 + i] = acc[j][i];
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < g * HD; e += blockDim.x) {
        const int j = e / HD, d = e % HD;
        float M = -INFINITY;
        for (int q2 = 0; q2 < NG; q2++)
            M = fmaxf(M, s_m[q2][j]);
        float L = 0.0f, A = 0.0f;
        for (int q2 = 0; q2 < NG; q2++) {
            const float mq = s_m[q2][j];
            const float w = mq == -INFINITY ? 0.0f : __expf(mq - M);
            L += s_l[q2][j] * w;
            A += s_acc[q2][j][d] * w;
        }
        const int64_t pidx = ((int64_t)r * n_heads + kvh * g + j) * splits + split;
        if (d == 0) {
            pm[pidx] = M;
            pl[pidx] = L;
        }
        pacc[pidx * HD + d] = A;
    }
}

// grid (R * n_heads), >= head_dim threads: merges the splits of one (row, head).
__global__ void attn_reduce_kernel(__half *att, const int32_t *meta, int off_row_tok,
                                   int off_row_nk, int n_heads, int hd, int part, int splits,
                                   const float *pm, const float *pl, const float *pacc) {
    const int r = blockIdx.x / n_heads, h = blockIdx.x % n_heads, d = threadIdx.x;
    if (d >= hd)
        return;
    const int nk = meta[off_row_nk + r], tok = meta[off_row_tok + r];
    const int ns = min(splits, (nk + part - 1) / part);
    const int64_t base = ((int64_t)r * n_heads + h) * splits;
    float M = -INFINITY;
    for (int s = 0; s < ns; s++)
        M = fmaxf(M, pm[base + s]);
    float L = 0.0f, A = 0.0f;
    for (int s = 0; s < ns; s++) {
        const float w = __expf(pm[base + s] - M);
        L += pl[base + s] * w;
        A += pacc[(base + s) * hd + d] * w;
    }
    att[(int64_t)tok * n_heads * hd + (int64_t)h * hd + d] = __float2half_rn(ns > 0 ? A / L : 0.0f);
}

// ---- flash prefill ----------------------------------------------------------------------------
// grid (tiles, n_heads), 4 warps; a tile is up to 64 queries of one sequence, warp w owns query
// rows 16w..16w+15. Per 64-key block: K/V tiles into shared memory (through the block table),
// S = Q K^T on tensor cores into shared fp32, causal mask + online softmax by two lanes per row
// (P as fp16 in shared memory, O rows rescaled in shared memory), then O += P V on tensor cores.
constexpr int FBQ = ENG_CUDA_FLASH_TILE, FBK = 64;

template <int HD>
struct flash_smem {
    static constexpr int LDH = HD + 8, LDS = FBK + 4, LDP = FBK + 8, LDO = HD + 4;
    static constexpr size_t q = 0, k = q + 2 * FBQ * LDH, v = k + 2 * FBK * LDH,
                            s = v + 2 * FBK * LDH, p = s + 4 * FBQ * LDS, o = p + 2 * FBQ * LDP,
                            bytes = o + 4 * FBQ * LDO;
};

template <int HD>
__global__ void __launch_bounds__(128)
    attn_flash_kernel(__half *att, const __half *qkv, const __half *kc, const __half *vc,
                      const int32_t *meta, int off_tiles, int off_bt, int n_heads, int n_kv,
                      int bs, float scale) {
    using namespace nvcuda;
    using L = flash_smem<HD>;
    constexpr int LDH = L::LDH, LDS = L::LDS, LDP = L::LDP, LDO = L::LDO, VPR = HD / 8;
    extern __shared__ __align__(128) unsigned char smem[];
    __half *Qs = (__half *)(smem + L::q), *Ks = (__half *)(smem + L::k),
           *Vs = (__half *)(smem + L::v), *Ps = (__half *)(smem + L::p);
    float *Ss = (float *)(smem + L::s), *Os = (float *)(smem + L::o);

    const int32_t *e = meta + off_tiles + 4 * blockIdx.x;
    const int t0 = e[0], nq = e[1], pos0 = e[2];
    const int32_t *bt = meta + off_bt + e[3];
    const int h = blockIdx.y, kvh = h / (n_heads / n_kv);
    const int64_t stride = (int64_t)(n_heads + 2 * n_kv) * HD;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;

    for (int i = threadIdx.x; i < FBQ * VPR; i += blockDim.x) {
        const int row = i / VPR, c = i % VPR;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (row < nq)
            v = *(const uint4 *)(qkv + (t0 + row) * stride + (int64_t)h * HD + c * 8);
        *(uint4 *)(Qs + row * LDH + c * 8) = v;
    }
    for (int i = threadIdx.x; i < FBQ * LDO; i += blockDim.x)
        Os[i] = 0.0f;
    __syncthreads();

    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> qf[HD / 16];
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++)
        wmma::load_matrix_sync(qf[kk], Qs + warp * 16 * LDH + kk * 16, LDH);

    const int qrow = warp * 16 + (lane >> 1);  // two lanes per query row
    const bool qvalid = qrow < nq;
    const int qpos = pos0 + qrow;
    const int c0 = (lane & 1) * (FBK / 2), d0 = (lane & 1) * (HD / 2);
    float m_i = -INFINITY, l_i = 0.0f;
    const int n_keys = pos0 + nq;

    for (int k0 = 0; k0 < n_keys; k0 += FBK) {
        for (int i = threadIdx.x; i < FBK * VPR; i += blockDim.x) {
            const int row = i / VPR, c = i % VPR, key = k0 + row;
            uint4 kv = make_uint4(0, 0, 0, 0), vv = kv;
            if (key < n_keys) {
                const int64_t blk = bt[key / bs];
                const int64_t idx = ((blk * n_kv + kvh) * bs + key % bs) * HD + c * 8;
                kv = *(const uint4 *)(kc + idx);
                vv = *(const uint4 *)(vc + idx);
            }
            *(uint4 *)(Ks + row * LDH + c * 8) = kv;
            *(uint4 *)(Vs + row * LDH + c * 8) = vv;
        }
        __syncthreads();

#pragma unroll
        for (int nt = 0; nt < FBK / 16; nt++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> sf;
            wmma::fill_fragment(sf, 0.0f);
#pragma unroll
            for (int kk = 0; kk < HD / 16; kk++) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> kf;
                wmma::load_matrix_sync(kf, Ks + nt * 16 * LDH + kk * 16, LDH);
                wmma::mma_sync(sf, qf[kk], kf, sf);
            }
            wmma::store_matrix_sync(Ss + warp * 16 * LDS + nt * 16, sf, LDS, wmma::mem_row_major);
        }
        __syncwarp();

        {
            float *srow = Ss + qrow * LDS;
            __half *prow = Ps + qrow * LDP;
            float mx = -INFINITY;
            for (int c = c0; c < c0 + FBK / 2; c++) {
                const float s = (qvalid && k0 + c <= qpos) ? srow[c] * scale : -INFINITY;
                srow[c] = s;
                mx = fmaxf(mx, s);
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            const float m_new = fmaxf(m_i, mx);
            float corr = 1.0f, sum = 0.0f;
            if (m_new == -INFINITY) {
                for (int c = c0; c < c0 + FBK / 2; c++)
                    prow[c] = __float2half_rn(0.0f);
            } else {
                corr = __expf(m_i - m_new);
                for (int c = c0; c < c0 + FBK / 2; c++) {
                    const float p = __expf(srow[c] - m_new);
                    prow[c] = __float2half_rn(p);
                    sum += p;
                }
            }
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            l_i = l_i * corr + sum;
            m_i = m_new;
            float *orow = Os + qrow * LDO;
            for (int d = d0; d < d0 + HD / 2; d++)
                orow[d] *= corr;
        }
        __syncwarp();

#pragma unroll
        for (int nt = 0; nt < HD / 16; nt++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> of;
            wmma::load_matrix_sync(of, Os + warp * 16 * LDO + nt * 16, LDO, wmma::mem_row_major);
#pragma unroll
            for (int kk = 0; kk < FBK / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> pf;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> vf;
                wmma::load_matrix_sync(pf, Ps + warp * 16 * LDP + kk * 16, LDP);
                wmma::load_matrix_sync(vf, Vs + kk * 16 * LDH + nt * 16, LDH);
                wmma::mma_sync(of, pf, vf, of);
            }
            wmma::store_matrix_sync(Os + warp * 16 * LDO + nt * 16, of, LDO, wmma::mem_row_major);
        }
        __syncthreads();
    }

    if (qvalid) {
        const float inv = 1.0f / l_i;
        const float *orow = Os + qrow * LDO;
        __half *out = att + (int64_t)(t0 + qrow) * n_heads * HD + (int64_t)h * HD;
        for (int d = d0; d < d0 + HD / 2; d++)
            out[d] = __float2half_rn(orow[d] * inv);
    }
}

template <int HD, int G>
cudaError_t launch_rows(__half *att, const __half *qkv, const __half *kc, const __half *vc,
                        const int32_t *meta, int off_row_tok, int off_row_bt, int off_row_nk,
                        int off_bt, int R, int n_heads, int n_kv, int block_size, int part,
                        int splits, float *partial, cudaStream_t s) {
    const int64_t n = (int64_t)R * n_heads * splits;
    float *pm = partial, *pl = partial + n, *pacc = partial + 2 * n;
    attn_rows_kernel<HD, G><<<dim3(n_kv, splits, R), 128, 0, s>>>(
        qkv, kc, vc, meta, off_row_tok, off_row_bt, off_row_nk, off_bt, n_heads, n_kv, block_size,
        part, splits, rsqrtf((float)HD), pm, pl, pacc);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return e;
    attn_reduce_kernel<<<R * n_heads, HD < 32 ? 32 : HD, 0, s>>>(
        att, meta, off_row_tok, off_row_nk, n_heads, HD, part, splits, pm, pl, pacc);
    return cudaGetLastError();
}

template <int HD>
cudaError_t launch_flash(__half *att, const __half *qkv, const __half *kc, const __half *vc,
                         const int32_t *meta, int off_tiles, int off_bt, int NT, int n_heads,
                         int n_kv, int block_size, cudaStream_t s) {
    const size_t bytes = flash_smem<HD>::bytes;
    cudaError_t e = cudaFuncSetAttribute(attn_flash_kernel<HD>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    if (e != cudaSuccess)
        return e;
    attn_flash_kernel<HD><<<dim3(NT, n_heads), 128, bytes, s>>>(
        att, qkv, kc, vc, meta, off_tiles, off_bt, n_heads, n_kv, block_size, rsqrtf((float)HD));
    return cudaGetLastError();
}

}  // namespace

extern "C" {

int eng_cuda_attn_rows_supported(int head_dim, int gqa) {
    return (head_dim == 8 || head_dim == 16 || head_dim == 32 || head_dim == 64 ||
            head_dim == 128 || head_dim == 256) &&
           gqa >= 1 && gqa <= ENG_CUDA_MAX_GQA;
}

int eng_cuda_attn_flash_supported(int head_dim) { return head_dim == 64 || head_dim == 128; }

int eng_cuda_launch_attn_rows(uint16_t *att, const uint16_t *qkv, const uint16_t *kc,
                              const uint16_t *vc, const int32_t *meta, int off_row_tok,
                              int off_row_bt, int off_row_nk, int off_bt, int R, int n_heads,
                              int n_kv, int head_dim, int block_size, int part, int splits,
                              float *partial, eng_cuda_stream_t s) {
    if (R <= 0)
        return (int)cudaSuccess;
    const int g = n_heads / n_kv, gm = g <= 1 ? 1 : g <= 2 ? 2 : g <= 4 ? 4 : 8;
#define ROWS(HD, GM)                                                                               \
    if (head_dim == HD && gm == GM)                                                                \
    return (int)launch_rows<HD, GM>((__half *)att, (const __half *)qkv, (const __half *)kc,        \
                                    (const __half *)vc, meta, off_row_tok, off_row_bt, off_row_nk, \
                                    off_bt, R, n_heads, n_kv, block_size, part, splits, partial, s)
#define ROWS_G(HD) ROWS(HD, 1); ROWS(HD, 2); ROWS(HD, 4); ROWS(HD, 8)
    ROWS_G(8);
    ROWS_G(16);
    ROWS_G(32);
    ROWS_G(64);
    ROWS_G(128);
    ROWS_G(256);
#undef ROWS_G
#undef ROWS
    return (int)cudaErrorInvalidValue;
}

int eng_cuda_launch_attn_flash(uint16_t *att, const uint16_t *qkv, const uint16_t *kc,
                               const uint16_t *vc, const int32_t *meta, int off_tiles, int off_bt,
                               int NT, int n_heads, int n_kv, int head_dim, int block_size,
                               eng_cuda_stream_t s) {
    if (NT <= 0)
        return (int)cudaSuccess;
    if (head_dim == 64)
        return (int)launch_flash<64>((__half *)att, (const __half *)qkv, (const __half *)kc,
                                     (const __half *)vc, meta, off_tiles, off_bt, NT, n_heads,
                                     n_kv, block_size, s);
    if (head_dim == 128)
        return (int)launch_flash<128>((__half *)att, (const __half *)qkv, (const __half *)kc,
                                      (const __half *)vc, meta, off_tiles, off_bt, NT, n_heads,
                                      n_kv, block_size, s);
    return (int)cudaErrorInvalidValue;
}

}  // extern "C"
