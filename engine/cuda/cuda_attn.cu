// cuda_attn.cu — paged attention kernels of the CUDA backend: split-K rows (decode, and prefill
// when the flash kernel does not apply) with their reduce, and a flash-style causal prefill on
// tensor cores: FA2-style on mma.sync with register-resident S/P/O (the default), or the first
// WMMA kernel with shared-memory S/P/O (ENG_CUDA_PREFILL_OLD). K/V are always read from the pool
// through the block tables, so chunked prefill on top of existing context needs nothing special.
// Launchers are declared in cuda_backend.h; plan arrays (meta) as described there. Every kernel
// follows the PDL protocol of cuda_device.cuh.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>
#include <stdint.h>

#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/cuda_device.cuh"

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
// grid (n_kv, splits, R), NG * LPT threads. A group of LPT = HD/8 lanes handles one key at a time
// (16 bytes of K and of V per lane); NG keys are in flight per block. Each group keeps an
// online-softmax state for every query head of the KV head's GQA group (G >= that group's size,
// a power of two); the block then merges its groups and writes one partial (max, sum, acc[HD]) per
// (row, head, split). SINGLE (one split covers every key: short contexts): the merged result
// A / L goes straight to att (0 for a row with no keys) and no reduce kernel runs.
template <int HD, int G>
__host__ __device__ constexpr int rows_groups(bool single) {
    // NG: 128 threads split-K; one pass: up to 512 threads (256 for G > 1: no spills), <= 32 KB acc
    return single ? ((G == 1 ? 512 : 256) / (HD / 8) < 8192 / (G * HD)
                         ? (G == 1 ? 512 : 256) / (HD / 8)
                         : 8192 / (G * HD))
                  : 128 / (HD / 8);
}

template <int HD, int G, bool SINGLE>
__global__ void __launch_bounds__(rows_groups<HD, G>(SINGLE) * (HD / 8))
    attn_rows_kernel(__half *att, const __half *qkv, const __half *kc, const __half *vc,
                     const int32_t *meta, int off_row_tok, int off_row_bt, int off_row_nk,
                     int off_bt, int n_heads, int n_kv, int bs, int part, int splits, float scale,
                     float *pm, float *pl, float *pacc) {
    constexpr int LPT = HD / 8;
    constexpr int NG = rows_groups<HD, G>(SINGLE);
    __shared__ float s_m[NG][G], s_l[NG][G];
    __shared__ float s_acc[NG][G][HD];
    pdl_trigger();
    pdl_wait();

    const int kvh = blockIdx.x, split = blockIdx.y, r = blockIdx.z;
    const int nk = meta[off_row_nk + r];
    const int k0 = split * part;
    if (!SINGLE && k0 >= nk)
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
        if (SINGLE) {
            att[(int64_t)tok * n_heads * HD + (int64_t)(kvh * g + j) * HD + d] =
                __float2half_rn(L > 0.0f ? A / L : 0.0f);
            continue;
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
    pdl_trigger();
    pdl_wait();
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
    pdl_trigger();
    pdl_wait();

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

// ---- FA2 prefill (the default; SLUICE_CUDA_PREFILL_ATTN=old selects the kernel above) -----------
// grid (tiles, n_heads), 4 warps, 2 blocks per SM; a tile is up to 64 queries of one sequence,
// warp w owns query rows 16w..16w+15. Q is loaded once (cp.async) and kept as mma.sync A fragments
// in registers. K/V tiles of 64 keys are gathered through the block table with cp.async into
// double-buffered shared memory (rows padded by 16 bytes: ldmatrix is conflict-free), the next
// tile in flight while the current one is used. S = Q K^T and O += P V run on mma.sync m16n8k16
// (fp16 in, fp32 accumulate); S, the online softmax (exp2 with log2(e) folded into the scale),
// P (fp16, reused in place as A fragments) and O stay in registers. Causal: key tiles past the
// tile's last query are never loaded, a warp skips tiles wholly after its last query, and only
// tiles that cross a warp's first query are masked. Tiles run longest first.
constexpr int F2_KT = 64;  // keys per K/V tile

__device__ __forceinline__ uint32_t smem_u32(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

// 16 bytes, or 16 zero bytes (nothing read) when !valid.
__device__ __forceinline__ void cp_async16_zfill(void *dst, const void *src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
                 "r"(valid ? 16 : 0)
                 : "memory");
}

__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8x8 fp16 matrices; lane l gives the row address of matrix l / 8. TRANS: transposed.
template <bool TRANS>
__device__ __forceinline__ void ldsm_x4(uint32_t *r, const __half *p) {
    if (TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(smem_u32(p)));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(smem_u32(p)));
}

// Two 8x8 fp16 matrices; lanes 0..15 give the row addresses (lane / 8: the matrix).
__device__ __forceinline__ void ldsm_x2(uint32_t *r, const __half *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(smem_u32(p)));
}

// d (16x8 fp32) += a (16x16 fp16, row) * b (16x8 fp16, col)
__device__ __forceinline__ void mma16816(float *d, const uint32_t *a, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_h2(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *(uint32_t *)&h;
}

template <int HD, int MA>
struct fa2_smem {
    static constexpr int LD = HD + 8;      // halves per shared row (16-byte pad)
    static constexpr int TILE = 64 * LD;   // halves per 64-row tile
    static constexpr size_t bytes = (size_t)(MA + 4) * TILE * sizeof(__half);  // Q, K[2], V[2]
};

// MA: 16-row m-atoms per warp (1: 64-query tiles, Q held in registers; 2: 128-query tiles, Q
// fragments re-read from shared memory at each K tile, as the registers go to the second atom's
// S and O). Each row's sums run in the same order whatever MA, so both give the same bits.
template <int HD, int MA>
__global__ void __launch_bounds__(128, 2)
    attn_fa2_kernel(__half *att, const __half *qkv, const __half *kc, const __half *vc,
                    const int32_t *meta, int off_tiles, int off_bt, int n_heads, int n_kv, int bs,
                    int bs_shift, float scale_log2) {
    constexpr int NTHR = 128, WROWS = 16 * MA, QROWS = 4 * WROWS;
    constexpr int LD = fa2_smem<HD, MA>::LD, TILE = fa2_smem<HD, MA>::TILE, VPR = HD / 8;
    constexpr int NST = F2_KT / 8;  // 8-key n-tiles of S
    constexpr int NDT = HD / 8;     // 8-wide n-tiles of O
    constexpr int KQ = HD / 16;     // 16-wide k-chunks of Q
    static_assert(QROWS == (MA == 1 ? ENG_CUDA_FLASH_TILE : ENG_CUDA_FLASH_TILE_WIDE),
                  "the plan's tile size");
    static_assert((QROWS * VPR) % NTHR == 0 && (F2_KT * VPR) % NTHR == 0, "whole load rounds");
    extern __shared__ __align__(128) unsigned char smem[];
    __half *Qs = (__half *)smem, *Ks = Qs + MA * TILE, *Vs = Ks + 2 * TILE;
    pdl_trigger();
    pdl_wait();

    const int32_t *e = meta + off_tiles + 4 * (gridDim.x - 1 - blockIdx.x);  // longest first
    const int t0 = e[0], nq = e[1], pos0 = e[2];
    const int32_t *bt = meta + off_bt + e[3];
    const int h = blockIdx.y, kvh = h / (n_heads / n_kv);
    const int64_t stride = (int64_t)(n_heads + 2 * n_kv) * HD;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int n_keys = pos0 + nq, n_kt = (n_keys + F2_KT - 1) / F2_KT;

    // A thread copies chunk c = tid % VPR of rows tid / VPR + j * NTHR / VPR. Rows past nq and
    // keys past n_keys are zero-filled (P is 0 there; V must not hold NaN from stale shared
    // memory). Branch-free, so a thread's block-table reads all issue before its first copy waits
    // on one; a power-of-two block size (bs_shift >= 0) needs no division.
    const int c8 = (tid % VPR) * 8;
#pragma unroll
    for (int j = 0; j < QROWS * VPR / NTHR; j++) {
        const int row = (tid + j * NTHR) / VPR;
        cp_async16_zfill(Qs + row * LD + c8,
                         qkv + (int64_t)(t0 + (row < nq ? row : 0)) * stride + (int64_t)h * HD + c8,
                         row < nq);
    }
    auto load_kv = [&](int kt) {
        constexpr int PER = F2_KT * VPR / NTHR;
        __half *kd = Ks + (kt & 1) * TILE, *vd = Vs + (kt & 1) * TILE;
        int32_t blk[PER];
#pragma unroll
        for (int j = 0; j < PER; j++) {
            const int key = kt * F2_KT + (tid + j * NTHR) / VPR;
            blk[j] = key < n_keys ? bt[bs_shift >= 0 ? key >> bs_shift : key / bs] : 0;
        }
#pragma unroll
        for (int j = 0; j < PER; j++) {
            const int row = (tid + j * NTHR) / VPR, key = kt * F2_KT + row;
            const int in_blk = bs_shift >= 0 ? key & (bs - 1) : key % bs;
            const int64_t idx = (((int64_t)blk[j] * n_kv + kvh) * bs + in_blk) * HD + c8;
            cp_async16_zfill(kd + row * LD + c8, kc + idx, key < n_keys);
            cp_async16_zfill(vd + row * LD + c8, vc + idx, key < n_keys);
        }
    };
    load_kv(0);
    cp_async_commit();

    const int g = lane >> 2, t = lane & 3;
    const int wrow = warp * WROWS;  // atom a: tile rows wrow + 16a + g (c0, c1) and + 8 (c2, c3)
    const int warp_first = pos0 + wrow, warp_last = warp_first + WROWS - 1;
    const bool warp_live = wrow < nq;
    uint32_t qf[MA == 1 ? KQ : 1][4];  // MA 1: Q's A fragments, loaded once
    float o[MA][NDT][4], m[MA][2], l[MA][2];
#pragma unroll
    for (int a = 0; a < MA; a++) {
#pragma unroll
        for (int d = 0; d < NDT; d++)
            o[a][d][0] = o[a][d][1] = o[a][d][2] = o[a][d][3] = 0.0f;
        m[a][0] = m[a][1] = -INFINITY;
        l[a][0] = l[a][1] = 0.0f;
    }

    for (int kt = 0; kt < n_kt; kt++) {
        if (kt + 1 < n_kt) {
            load_kv(kt + 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        if constexpr (MA == 1) {
            if (kt == 0) {
#pragma unroll
                for (int kk = 0; kk < KQ; kk++)
                    ldsm_x4<false>(qf[kk], Qs + (wrow + (lane & 15)) * LD + kk * 16 +
                                               (lane >> 4) * 8);
            }
        }
        const int k0 = kt * F2_KT;
        if (warp_live && k0 <= warp_last) {  // warp-uniform
            const __half *kb = Ks + (kt & 1) * TILE, *vb = Vs + (kt & 1) * TILE;
            float s[MA][NST][4];
#pragma unroll
            for (int a = 0; a < MA; a++)
#pragma unroll
                for (int n = 0; n < NST; n++)
                    s[a][n][0] = s[a][n][1] = s[a][n][2] = s[a][n][3] = 0.0f;
            if constexpr (MA == 1) {
#pragma unroll
                for (int kk = 0; kk < KQ; kk += 2)
#pragma unroll
                    for (int n = 0; n < NST; n++) {
                        uint32_t b[4];  // b[0..1]: d chunk kk, b[2..3]: chunk kk + 1
                        ldsm_x4<false>(b, kb + (n * 8 + (lane & 7)) * LD + kk * 16 +
                                              (lane >> 3) * 8);
                        mma16816(s[0][n], qf[kk], b[0], b[1]);
                        mma16816(s[0][n], qf[kk + 1], b[2], b[3]);
                    }
            } else {  // one k-chunk at a time (the registers are short): the same order of sums
#pragma unroll
                for (int kk = 0; kk < KQ; kk++) {
                    uint32_t qa[MA][4];
#pragma unroll
                    for (int a = 0; a < MA; a++)
                        ldsm_x4<false>(qa[a], Qs + (wrow + 16 * a + (lane & 15)) * LD + kk * 16 +
                                                  (lane >> 4) * 8);
#pragma unroll
                    for (int n = 0; n < NST; n++) {
                        uint32_t b[2];
                        ldsm_x2(b, kb + (n * 8 + (lane & 7)) * LD + kk * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
                        for (int a = 0; a < MA; a++)
                            mma16816(s[a][n], qa[a], b[0], b[1]);
                    }
                }
            }
            uint32_t pf[MA][NST / 2][4];  // P as A fragments: 16 keys per k-chunk
#pragma unroll
            for (int a = 0; a < MA; a++) {
                const int qpos0 = warp_first + 16 * a + g, qpos1 = qpos0 + 8;
                const bool mask = k0 + F2_KT - 1 > warp_first + 16 * a;
                float mx0 = m[a][0], mx1 = m[a][1];
#pragma unroll
                for (int n = 0; n < NST; n++)
#pragma unroll
                    for (int j = 0; j < 2; j++) {
                        const int kp = k0 + n * 8 + 2 * t + j;
                        float v0 = s[a][n][j] * scale_log2, v1 = s[a][n][2 + j] * scale_log2;
                        if (mask && kp > qpos0)
                            v0 = -INFINITY;
                        if (mask && kp > qpos1)
                            v1 = -INFINITY;
                        s[a][n][j] = v0;
                        s[a][n][2 + j] = v1;
                        mx0 = fmaxf(mx0, v0);
                        mx1 = fmaxf(mx1, v1);
                    }
                mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
                mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
                mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
                mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
                // key 0 is in tile 0 and visible to every row, so mx0, mx1 are finite from tile 0
                // on; a tile wholly after a row (MA > 1 runs some) gives it p = 0 and c = 1
                const float c0 = exp2f(m[a][0] - mx0), c1 = exp2f(m[a][1] - mx1);
                m[a][0] = mx0;
                m[a][1] = mx1;
                float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
                for (int n = 0; n < NST; n++) {
                    const float p00 = exp2f(s[a][n][0] - mx0), p01 = exp2f(s[a][n][1] - mx0);
                    const float p10 = exp2f(s[a][n][2] - mx1), p11 = exp2f(s[a][n][3] - mx1);
                    sum0 += p00 + p01;
                    sum1 += p10 + p11;
                    pf[a][n / 2][(n & 1) * 2] = pack_h2(p00, p01);
                    pf[a][n / 2][(n & 1) * 2 + 1] = pack_h2(p10, p11);
                }
                l[a][0] = l[a][0] * c0 + sum0;  // this lane's columns; the quad is summed at the end
                l[a][1] = l[a][1] * c1 + sum1;
#pragma unroll
                for (int d = 0; d < NDT; d++) {
                    o[a][d][0] *= c0;
                    o[a][d][1] *= c0;
                    o[a][d][2] *= c1;
                    o[a][d][3] *= c1;
                }
            }
#pragma unroll
            for (int kc2 = 0; kc2 < NST / 2; kc2++)
#pragma unroll
                for (int d = 0; d < NDT; d += 2) {
                    uint32_t b[4];  // b[0..1]: d tile d, b[2..3]: d tile d + 1
                    ldsm_x4<true>(b, vb + (kc2 * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD +
                                         d * 8 + (lane >> 4) * 8);
#pragma unroll
                    for (int a = 0; a < MA; a++) {
                        mma16816(o[a][d], pf[a][kc2], b[0], b[1]);
                        mma16816(o[a][d + 1], pf[a][kc2], b[2], b[3]);
                    }
                }
        }
        __syncthreads();  // the buffer just read is the next prefetch's target
    }

    const int64_t ostride = (int64_t)n_heads * HD;
    __half *out = att + (int64_t)t0 * ostride + (int64_t)h * HD + 2 * t;
#pragma unroll
    for (int a = 0; a < MA; a++)
#pragma unroll
        for (int half = 0; half < 2; half++) {
            float li = l[a][half];
            li += __shfl_xor_sync(0xffffffffu, li, 1);
            li += __shfl_xor_sync(0xffffffffu, li, 2);
            const int row = wrow + 16 * a + 8 * half + g;
            if (row < nq) {
                const float inv = 1.0f / li;
#pragma unroll
                for (int d = 0; d < NDT; d++)
                    *(__half2 *)(out + row * ostride + d * 8) = __floats2half2_rn(
                        o[a][d][2 * half] * inv, o[a][d][2 * half + 1] * inv);
            }
        }
}

template <int HD, int G>
cudaError_t launch_rows(__half *att, const __half *qkv, const __half *kc, const __half *vc,
                        const int32_t *meta, int off_row_tok, int off_row_bt, int off_row_nk,
                        int off_bt, int R, int n_heads, int n_kv, int block_size, int part,
                        int splits, int single, float *partial, const eng_cuda_exec_t &ex) {
    const float scale = rsqrtf((float)HD);
    if (single)
        return launch_kernel(ex, attn_rows_kernel<HD, G, true>, dim3(n_kv, 1, R),
                             dim3(rows_groups<HD, G>(true) * (HD / 8)), 0, att, qkv, kc, vc, meta,
                             off_row_tok, off_row_bt, off_row_nk, off_bt, n_heads, n_kv,
                             block_size, part * splits, 1, scale, nullptr, nullptr, nullptr);
    const int64_t n = (int64_t)R * n_heads * splits;
    float *pm = partial, *pl = partial + n, *pacc = partial + 2 * n;
    cudaError_t e = launch_kernel(ex, attn_rows_kernel<HD, G, false>, dim3(n_kv, splits, R),
                                  dim3(128), 0, att, qkv, kc, vc, meta, off_row_tok, off_row_bt,
                                  off_row_nk, off_bt, n_heads, n_kv, block_size, part, splits,
                                  scale, pm, pl, pacc);
    if (e != cudaSuccess)
        return e;
    return launch_kernel(ex, attn_reduce_kernel, dim3(R * n_heads), dim3(HD < 32 ? 32 : HD), 0,
                         att, meta, off_row_tok, off_row_nk, n_heads, HD, part, splits, pm, pl,
                         pacc);
}

// A prefill kernel on 128 threads with `bytes` of dynamic shared memory (allowed above 48 KB).
template <typename... P, typename... A>
cudaError_t launch_with_smem(const eng_cuda_exec_t &ex, void (*kernel)(P...), dim3 grid,
                             size_t bytes, A... args) {
    cudaError_t e = cudaFuncSetAttribute((const void *)kernel,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    if (e != cudaSuccess)
        return e;
    return launch_kernel(ex, kernel, grid, dim3(128), bytes, args...);
}

template <int HD>
cudaError_t launch_flash(__half *att, const __half *qkv, const __half *kc, const __half *vc,
                         const int32_t *meta, int off_tiles, int off_bt, int NT, int n_heads,
                         int n_kv, int block_size, int impl, const eng_cuda_exec_t &ex) {
    const float scale = rsqrtf((float)HD);
    const int bs_shift = (block_size & (block_size - 1)) == 0 ? __builtin_ctz(block_size) : -1;
    if (impl == ENG_CUDA_PREFILL_OLD)
        return launch_with_smem(ex, attn_flash_kernel<HD>, dim3(NT, n_heads),
                                flash_smem<HD>::bytes, att, qkv, kc, vc, meta, off_tiles, off_bt,
                                n_heads, n_kv, block_size, scale);
    if (impl == ENG_CUDA_PREFILL_FA2W)
        return launch_with_smem(ex, attn_fa2_kernel<HD, 2>, dim3(NT, n_heads),
                                fa2_smem<HD, 2>::bytes, att, qkv, kc, vc, meta, off_tiles, off_bt,
                                n_heads, n_kv, block_size, bs_shift, scale * 1.4426950408889634f);
    return launch_with_smem(ex, attn_fa2_kernel<HD, 1>, dim3(NT, n_heads), fa2_smem<HD, 1>::bytes,
                            att, qkv, kc, vc, meta, off_tiles, off_bt, n_heads, n_kv, block_size,
                            bs_shift, scale * 1.4426950408889634f);
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
                              int single, float *partial, eng_cuda_exec_t ex) {
    if (R <= 0)
        return (int)cudaSuccess;
    const int g = n_heads / n_kv, gm = g <= 1 ? 1 : g <= 2 ? 2 : g <= 4 ? 4 : 8;
#define ROWS(HD, GM)                                                                               \
    if (head_dim == HD && gm == GM)                                                                \
    return (int)launch_rows<HD, GM>((__half *)att, (const __half *)qkv, (const __half *)kc,        \
                                    (const __half *)vc, meta, off_row_tok, off_row_bt, off_row_nk, \
                                    off_bt, R, n_heads, n_kv, block_size, part, splits, single,     \
                                    partial, ex)
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
                               int impl, eng_cuda_exec_t ex) {
    if (NT <= 0)
        return (int)cudaSuccess;
    if (head_dim == 64)
        return (int)launch_flash<64>((__half *)att, (const __half *)qkv, (const __half *)kc,
                                     (const __half *)vc, meta, off_tiles, off_bt, NT, n_heads,
                                     n_kv, block_size, impl, ex);
    if (head_dim == 128)
        return (int)launch_flash<128>((__half *)att, (const __half *)qkv, (const __half *)kc,
                                      (const __half *)vc, meta, off_tiles, off_bt, NT, n_heads,
                                      n_kv, block_size, impl, ex);
    return (int)cudaErrorInvalidValue;
}

}  // extern "C"
