/* kernels_x86.h — the x86 SIMD kernels, written once and compiled twice: kernels_avx2.c (AVX2,
 * FMA, F16C) and kernels_avx512.c (the same plus AVX-512 VNNI, whose vpdpbusd replaces the
 * maddubs + madd pair of every 8-bit block product). Include it only from those two files, after
 * a `#pragma GCC target` and with these macros defined:
 *   ENG_X86_VNNI   1 to use vpdpbusd, 0 for maddubs + madd
 *   ENG_X86_TABLE  the name of the eng_cpu_kernels_t table to define
 *   ENG_X86_ISA    its eng_cpu_isa_t value;  ENG_X86_NAME  its name
 *
 * Matrix products run over tiles of RM weight rows x RN tokens (constants at every call site, so
 * the accumulators stay in registers): each weight block is loaded and unpacked once per RN
 * tokens, each activation block once per RM rows.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "engine/cpu/kernels.h"
#include "engine/model.h"
#include "engine/quant.h"

#define ENG_INLINE static inline __attribute__((always_inline))

ENG_INLINE float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

ENG_INLINE float hmax8(__m256 v)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 8 int32 lanes, each the sum of 4 products of unsigned u and signed s bytes */
ENG_INLINE __m256i dot_u8s8(__m256i u, __m256i s)
{
#if ENG_X86_VNNI
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

ENG_INLINE float f16_at(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return _cvtsh_ss(h);
}

/* 16 bytes of nibbles -> 32 bytes 0..15: low nibbles are elements 0..15, high ones 16..31 */
ENG_INLINE __m256i unpack_q4(const uint8_t *qs)
{
    __m128i x = _mm_loadu_si128((const __m128i *)qs);
    __m128i m = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(x, 4), m), _mm_and_si128(x, m));
}

ENG_INLINE __m256 exp8(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r);
    y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

/* ---- activation quantisation --------------------------------------------------------------- */

static void quantize_q8(const float *x, void *row, int k)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    int8_t *qs = row;
    float *dd = eng_cpu_q8_d(row, k), *ss = eng_cpu_q8_s(row, k);
    for (int b = 0; b < k / ENG_CPU_QK; b++, x += ENG_CPU_QK) {
        __m256 v[4];
        for (int i = 0; i < 4; i++)
            v[i] = _mm256_loadu_ps(x + 8 * i);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                                 _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
        float d = hmax8(m) / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        __m256i q[4];
        for (int i = 0; i < 4; i++)
            q[i] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[i], _mm256_set1_ps(id)),
                                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        __m256i s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
        /* packs interleave 128-bit lanes; the permute puts elements back in order */
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(qs + b * ENG_CPU_QK), p);
        dd[b] = d;
        ss[b] = d * (float)_mm_cvtsi128_si32(s4);
    }
}

/* ---- matrix product tiles ------------------------------------------------------------------ */

ENG_INLINE __m256 load8f(const int type, const void *w, int i)
{
    if (type == ENG_T_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
    if (type == ENG_T_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i))), 16));
    return _mm256_loadu_ps((const float *)w + i);
}

ENG_INLINE float load1f(const int type, const void *w, int i)
{
    if (type == ENG_T_F16)
        return _cvtsh_ss(((const uint16_t *)w)[i]);
    if (type == ENG_T_BF16)
        return eng_bf16_to_f32(((const uint16_t *)w)[i]);
    return ((const float *)w)[i];
}

/* 32 unpacked Q6_K values (0..63) of group g of a half: low nibbles from ql0 / ql1, 2 bits of qh */
ENG_INLINE __m256i q6_group(__m256i ql0, __m256i ql1, __m256i qh, int g)
{
    __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    __m256i lo = (g & 1) ? ql1 : ql0;
    lo = (g & 2) ? _mm256_and_si256(_mm256_srli_epi16(lo, 4), m4) : _mm256_and_si256(lo, m4);
    __m256i hi = g == 0 ? _mm256_slli_epi16(qh, 4) : g == 1 ? _mm256_slli_epi16(qh, 2)
               : g == 2 ? qh : _mm256_srli_epi16(qh, 2);
    return _mm256_or_si256(lo, _mm256_and_si256(hi, m30));
}

/* An RM x RN tile of a float-weight or Q6_K product. */
ENG_INLINE void tile(const int type, const int RM, const int RN, const eng_cpu_gemm_t *g, int r, int t)
{
    const uint8_t *w[4];
    const char *x[4];
    __m256 acc[4][4];
    float off[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < RM; i++)
        w[i] = (const uint8_t *)g->w + (size_t)(r + i) * g->w_stride;
#pragma GCC unroll 4
    for (int j = 0; j < RN; j++) {
        x[j] = (const char *)g->x + (size_t)(t + j) * g->x_stride;
#pragma GCC unroll 4
        for (int i = 0; i < RM; i++) {
            acc[i][j] = _mm256_setzero_ps();
            off[i][j] = 0.0f;
        }
    }

    if (type != ENG_T_Q6_K) { /* F32, F16, BF16 */
        int k = 0;
        for (; k + 8 <= g->k; k += 8) {
            __m256 wv[4];
#pragma GCC unroll 4
            for (int i = 0; i < RM; i++)
                wv[i] = load8f(type, w[i], k);
#pragma GCC unroll 4
            for (int j = 0; j < RN; j++) {
                __m256 xv = _mm256_loadu_ps((const float *)x[j] + k);
#pragma GCC unroll 4
                for (int i = 0; i < RM; i++)
                    acc[i][j] = _mm256_fmadd_ps(wv[i], xv, acc[i][j]);
            }
        }
        for (; k < g->k; k++)
            for (int j = 0; j < RN; j++)
                for (int i = 0; i < RM; i++)
                    off[i][j] += load1f(type, w[i], k) * ((const float *)x[j])[k];
    } else {
        const int nsb = g->k / ENG_QK_K;
        for (int sb = 0; sb < nsb; sb++) {
            for (int h = 0; h < 2; h++) {
                __m256i ql0[4], ql1[4], qh[4];
                float d[4];
                const int8_t *sc[4];
#pragma GCC unroll 4
                for (int i = 0; i < RM; i++) {
                    const eng_block_q6_K *blk = (const eng_block_q6_K *)w[i] + sb;
                    ql0[i] = _mm256_loadu_si256((const __m256i *)(blk->ql + 64 * h));
                    ql1[i] = _mm256_loadu_si256((const __m256i *)(blk->ql + 64 * h + 32));
                    qh[i] = _mm256_loadu_si256((const __m256i *)(blk->qh + 32 * h));
                    sc[i] = blk->scales + 8 * h;
                    d[i] = _cvtsh_ss(blk->d);
                }
                for (int gi = 0; gi < 4; gi++) {
#pragma GCC unroll 4
                    for (int j = 0; j < RN; j++) {
                        const int blk = sb * 8 + h * 4 + gi;
                        __m256i av = _mm256_loadu_si256((const __m256i *)(x[j] + blk * ENG_CPU_QK));
                        const float da = eng_cpu_q8_d(x[j], g->k)[blk];
                        __m256i a32 = _mm256_maddubs_epi16(_mm256_set1_epi8(32), av);
#pragma GCC unroll 4
                        for (int i = 0; i < RM; i++) {
                            __m256i q = q6_group(ql0[i], ql1[i], qh[i], gi);
                            __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(q, av), a32);
                            __m256i s = _mm256_set_m128i(_mm_set1_epi16(sc[i][2 * gi + 1]),
                                                         _mm_set1_epi16(sc[i][2 * gi]));
                            acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, s)),
                                                        _mm256_set1_ps(d[i] * da), acc[i][j]);
                        }
                    }
                }
            }
        }
    }

#pragma GCC unroll 4
    for (int j = 0; j < RN; j++) {
        float *o = g->out + (size_t)(t + j) * g->ldo + r;
#pragma GCC unroll 4
        for (int i = 0; i < RM; i++) {
            float v = hsum8(acc[i][j]) + off[i][j];
            o[i] = g->accumulate ? o[i] + v : v;
        }
    }
}

/* rows [r0, r1) x all tokens in RM x RN tiles, then the row and token remainders */
ENG_INLINE void drive(const int type, const int RM, const int RN, const eng_cpu_gemm_t *g, int r0, int r1)
{
    int t = 0;
    for (; t + RN <= g->n_tok; t += RN) {
        int r = r0;
        for (; r + RM <= r1; r += RM)
            tile(type, RM, RN, g, r, t);
        for (; r < r1; r++)
            tile(type, 1, RN, g, r, t);
    }
    for (; t < g->n_tok; t++) {
        int r = r0;
        for (; r + RM <= r1; r += RM)
            tile(type, RM, 1, g, r, t);
        for (; r < r1; r++)
            tile(type, 1, 1, g, r, t);
    }
}

/* ---- Q4_0 / Q4_1 / Q8_0 products: unpack a group of rows once, then every token ------------ */

/* lane u = the sum of the 8 int32 lanes of v[u] */
ENG_INLINE __m256i reduce8(const __m256i v[8])
{
    __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    __m256i b = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31));
}

/* integer dot of one unpacked weight block with one activation block, 8 partial sums */
ENG_INLINE __m256i block_dot(const int type, const int8_t *w, const int8_t *a)
{
    __m256i wv = _mm256_load_si256((const __m256i *)w), av = _mm256_loadu_si256((const __m256i *)a);
    if (type == ENG_T_Q8_0) /* signed x signed: |w| times a with w's sign */
        return dot_u8s8(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(av, wv));
    return dot_u8s8(wv, av);
}

/* blocks [b, b + m) of one row x one token (m <= 8): acc lanes gather d_w d_a isum + m_w s_a */
ENG_INLINE __m256 block_group(const int type, const int m, const int8_t *w, const float *dw, const float *mw,
                              const int8_t *aq, const float *ad, const float *as, int b, __m256 acc)
{
    __m256i v[8];
#pragma GCC unroll 8
    for (int u = 0; u < 8; u++)
        v[u] = u < m ? block_dot(type, w + (b + u) * ENG_CPU_QK, aq + (b + u) * ENG_CPU_QK)
                     : _mm256_setzero_si256();
    __m256 da, sa;
    if (m == 8) {
        da = _mm256_loadu_ps(ad + b);
        sa = _mm256_loadu_ps(as + b);
    } else { /* the row's last blocks: do not read past the activation row */
        __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(m), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        da = _mm256_maskload_ps(ad + b, mask);
        sa = _mm256_maskload_ps(as + b, mask);
    }
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(reduce8(v)), _mm256_mul_ps(_mm256_load_ps(dw + b), da), acc);
    if (type != ENG_T_Q8_0)
        acc = _mm256_fmadd_ps(_mm256_load_ps(mw + b), sa, acc);
    return acc;
}

#define ENG_UNPACK_ROWS 16

ENG_INLINE void gemm_q32(const int type, const eng_cpu_gemm_t *g, int r0, int r1)
{
    _Alignas(32) int8_t wbuf[ENG_CPU_UNPACK_BYTES];              /* (rows, k) unpacked weights */
    _Alignas(32) float dw[ENG_CPU_UNPACK_BYTES / ENG_CPU_QK + 8 * ENG_UNPACK_ROWS]; /* (rows, nb8) */
    _Alignas(32) float mw[ENG_CPU_UNPACK_BYTES / ENG_CPU_QK + 8 * ENG_UNPACK_ROWS];
    const int k = g->k, nb = k / ENG_CPU_QK, nb8 = (nb + 7) & ~7;
    const size_t bsz = type == ENG_T_Q8_0 ? 34 : type == ENG_T_Q4_1 ? 20 : 18;
    int rows = ENG_CPU_UNPACK_BYTES / k;
    rows = rows > ENG_UNPACK_ROWS ? ENG_UNPACK_ROWS : rows;
    for (int r = r0; r < r1; r += rows) {
        const int n = r1 - r < rows ? r1 - r : rows;
        for (int i = 0; i < n; i++) {
            const uint8_t *blk = (const uint8_t *)g->w + (size_t)(r + i) * g->w_stride;
            for (int b = 0; b < nb; b++, blk += bsz) {
                float d = f16_at(blk);
                __m256i q;
                if (type == ENG_T_Q8_0) {
                    q = _mm256_loadu_si256((const __m256i *)(blk + 2));
                    mw[i * nb8 + b] = 0.0f;
                } else if (type == ENG_T_Q4_1) {
                    q = unpack_q4(blk + 4);
                    mw[i * nb8 + b] = f16_at(blk + 2);
                } else {
                    q = unpack_q4(blk + 2);
                    mw[i * nb8 + b] = -8.0f * d;
                }
                _mm256_store_si256((__m256i *)(wbuf + (size_t)i * k + b * ENG_CPU_QK), q);
                dw[i * nb8 + b] = d;
            }
            for (int b = nb; b < nb8; b++)
                dw[i * nb8 + b] = mw[i * nb8 + b] = 0.0f;
        }
        for (int t = 0; t < g->n_tok; t++) {
            const int8_t *aq = (const int8_t *)((const char *)g->x + (size_t)t * g->x_stride);
            const float *ad = eng_cpu_q8_d(aq, k), *as = eng_cpu_q8_s(aq, k);
            float *o = g->out + (size_t)t * g->ldo + r;
            for (int i = 0; i < n; i++) {
                const int8_t *w = wbuf + (size_t)i * k;
                const float *dwi = dw + i * nb8, *mwi = mw + i * nb8;
                __m256 acc = _mm256_setzero_ps();
                int b = 0;
                for (; b + 8 <= nb; b += 8)
                    acc = block_group(type, 8, w, dwi, mwi, aq, ad, as, b, acc);
                if (b < nb)
                    acc = block_group(type, nb - b, w, dwi, mwi, aq, ad, as, b, acc);
                float v = hsum8(acc);
                o[i] = g->accumulate ? o[i] + v : v;
            }
        }
    }
}

static void gemm(const eng_cpu_gemm_t *g, int r0, int r1)
{
    switch (g->type) {
    case ENG_T_F32: drive(ENG_T_F32, 4, 2, g, r0, r1); break;
    case ENG_T_F16: drive(ENG_T_F16, 4, 2, g, r0, r1); break;
    case ENG_T_BF16: drive(ENG_T_BF16, 4, 2, g, r0, r1); break;
    case ENG_T_Q4_0: gemm_q32(ENG_T_Q4_0, g, r0, r1); break;
    case ENG_T_Q4_1: gemm_q32(ENG_T_Q4_1, g, r0, r1); break;
    case ENG_T_Q8_0: gemm_q32(ENG_T_Q8_0, g, r0, r1); break;
    case ENG_T_Q6_K: drive(ENG_T_Q6_K, 2, 1, g, r0, r1); break;
    default: break;
    }
}

/* ---- vector helpers ------------------------------------------------------------------------ */

static float dot_f32(const float *a, const float *b, int n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static float dot_f16(const float *a, const uint16_t *b, int n)
{
    __m256 s0 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load8f(ENG_T_F16, b, i), s0);
    float s = hsum8(s0);
    for (; i < n; i++)
        s += a[i] * _cvtsh_ss(b[i]);
    return s;
}

static void axpy_f32(float a, const float *x, float *y, int n)
{
    __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * x[i];
}

static void axpy_f16(float a, const uint16_t *x, float *y, int n)
{
    __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, load8f(ENG_T_F16, x, i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * _cvtsh_ss(x[i]);
}

static void to_f16(const float *x, uint16_t *y, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        y[i] = eng_f32_to_f16(x[i]);
}

static float exp_sum(float *x, int n, float max)
{
    __m256 mv = _mm256_set1_ps(max), s = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv));
        _mm256_storeu_ps(x + i, e);
        s = _mm256_add_ps(s, e);
    }
    float sum = hsum8(s);
    for (; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    return sum;
}

static void silu_mul(float *g, const float *u, int n)
{
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gv = _mm256_loadu_ps(g + i);
        __m256 den = _mm256_add_ps(one, exp8(_mm256_sub_ps(zero, gv)));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(gv, den), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

const eng_cpu_kernels_t ENG_X86_TABLE = {
    .isa = ENG_X86_ISA,
    .name = ENG_X86_NAME,
    .quantize_q8 = quantize_q8,
    .gemm = gemm,
    .dot_f32 = dot_f32,
    .dot_f16 = dot_f16,
    .axpy_f32 = axpy_f32,
    .axpy_f16 = axpy_f16,
    .to_f16 = to_f16,
    .exp_sum = exp_sum,
    .silu_mul = silu_mul,
};
