/* kernels_x86.h — the x86 SIMD kernels, written once and compiled twice: kernels_avx2.c (AVX2,
 * FMA, F16C) and kernels_avx512.c (the same plus AVX-512 VNNI, whose vpdpbusd replaces the
 * maddubs + madd pair of every 8-bit block product). Include it only from those two files, after
 * a `#pragma GCC target` and with these macros defined:
 *   ENG_X86_VNNI   1 to use vpdpbusd, 0 for maddubs + madd
 *   ENG_X86_TABLE  the name of the eng_cpu_kernels_t table to define
 *   ENG_X86_ISA    its eng_cpu_isa_t value;  ENG_X86_NAME  its name
 *   ENG_X86_AMX    1 (optional, with ENG_X86_VNNI) to run steps of 16+ tokens on AMX-INT8 tiles
 *
 * Matrix products run over tiles of RM weight rows x RN tokens (constants at every call site, so
 * the accumulators stay in registers): each weight block is loaded and unpacked once per RN
 * tokens, each activation block once per RM rows.
 */
#include <immintrin.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "engine/cpu/kernels.h"
#include "engine/model.h"
#include "engine/quant.h"

#define ENG_INLINE static inline __attribute__((always_inline))

#ifndef ENG_X86_AMX
#define ENG_X86_AMX 0
#endif

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

/* e^x on every lane of one vector, defined once for 8 lanes (exp8) and for 16 (exp16, AVX-512) so
 * both give bitwise the same values: P is the intrinsics' prefix, V the float vector, ROUND rounds
 * to nearest, CAST reads an integer vector's bits as floats. */
#define ENG_DEFINE_EXP(NAME, V, P, ROUND, CAST)                                                          \
    ENG_INLINE V NAME(V x)                                                                              \
    {                                                                                                   \
        x = P##_min_ps(P##_max_ps(x, P##_set1_ps(-87.0f)), P##_set1_ps(88.0f));                         \
        const V n = ROUND(P##_mul_ps(x, P##_set1_ps(1.44269504088896341f)));                            \
        V r = P##_fnmadd_ps(n, P##_set1_ps(0.693359375f), x);                                           \
        r = P##_fnmadd_ps(n, P##_set1_ps(-2.12194440e-4f), r);                                          \
        V y = P##_set1_ps(1.9875691500e-4f);                                                            \
        y = P##_fmadd_ps(y, r, P##_set1_ps(1.3981999507e-3f));                                          \
        y = P##_fmadd_ps(y, r, P##_set1_ps(8.3334519073e-3f));                                          \
        y = P##_fmadd_ps(y, r, P##_set1_ps(4.1665795894e-2f));                                          \
        y = P##_fmadd_ps(y, r, P##_set1_ps(1.6666665459e-1f));                                          \
        y = P##_fmadd_ps(y, r, P##_set1_ps(5.0000001201e-1f));                                          \
        y = P##_fmadd_ps(y, P##_mul_ps(r, r), r);                                                       \
        y = P##_add_ps(y, P##_set1_ps(1.0f));                                                           \
        return P##_mul_ps(y, CAST(P##_slli_epi32(P##_add_epi32(P##_cvtps_epi32(n), P##_set1_epi32(127)), 23))); \
    }

ENG_INLINE __m256 round8(__m256 v)
{
    return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
ENG_DEFINE_EXP(exp8, __m256, _mm256, round8, _mm256_castsi256_ps)

#if ENG_X86_VNNI
ENG_INLINE __m512 round16(__m512 v)
{
    return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
ENG_DEFINE_EXP(exp16, __m512, _mm512, round16, _mm512_castsi512_ps)
#endif

/* ---- activation quantisation --------------------------------------------------------------- */

static void quantize_q8(const float *x, void *row, int k)
{
    int8_t *qs = row;
    float *dd = eng_cpu_q8_d(row, k), *ss = eng_cpu_q8_s(row, k);
    int32_t *s128 = eng_cpu_q8_s128(row, k);
#if ENG_X86_VNNI
    /* a block is two 16-lane vectors (~15% faster than four 8-lane ones), the same bytes */
    for (int b = 0; b < k / ENG_CPU_QK; b++, x += ENG_CPU_QK) {
        const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
        const float d = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1))) / 127.0f;
        const __m512 id = _mm512_set1_ps(d > 0.0f ? 1.0f / d : 0.0f);
        const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, id)), q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, id));
        const int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        _mm_storeu_si128((__m128i *)(qs + b * ENG_CPU_QK), _mm512_cvtsepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(qs + b * ENG_CPU_QK + 16), _mm512_cvtsepi32_epi8(q1));
        dd[b] = d;
        ss[b] = d * (float)sum;
        s128[b] = 128 * sum;
    }
#else
    const __m256 sign = _mm256_set1_ps(-0.0f);
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
        s128[b] = 128 * _mm_cvtsi128_si32(s4);
    }
#endif
}

/* ---- matrix product tiles ------------------------------------------------------------------ */

ENG_INLINE __m256 load8f(const int type, const void *w, int i)
{
    if (type == ENG_CPU_T_I8)
        return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)w + i))));
    if (type == ENG_T_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
    if (type == ENG_T_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i))), 16));
    return _mm256_loadu_ps((const float *)w + i);
}

ENG_INLINE float load1f(const int type, const void *w, int i)
{
    if (type == ENG_CPU_T_I8)
        return (float)((const int8_t *)w)[i];
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
            /* the next RM rows' super-block, in step (a prefetch past the tensor is harmless) */
#pragma GCC unroll 4
            for (int i = 0; i < RM; i++)
                for (size_t o = 0; o < sizeof(eng_block_q6_K); o += 64)
                    _mm_prefetch((const char *)((const eng_block_q6_K *)(w[i] + RM * g->w_stride) + sb) + o,
                                 _MM_HINT_T0);
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

/* ---- Q4_0 / Q4_1 / Q8_0 / Q4_K / Q5_0 products: 8 rows interleaved, integer sums per block -- */

/* Rows go in groups of 8, interleaved by 4 elements: for block b and chunk c (elements 4c..4c+3)
 * one 32-byte vector holds the chunk of rows 0..7, row i in bytes 4i..4i+3. The product of a chunk
 * with 4 activation bytes broadcast to all lanes then leaves each row's partial sums in its own
 * lane: no horizontal sums. Q4 partial sums stay 16-bit over a block (16 products of at most
 * 15 x 127 per lane), so a block costs 8 maddubs + 8 adds + one madd for 8 rows; Q8_0
 * (|w| x sign(a, w)) widens every chunk. Block scales d (and offsets m) of the 8 rows are one float
 * vector per block. Up to 3 tokens (decode, small speculative steps) build the chunks from the
 * packed blocks in registers; with more tokens a slice of at most ENG_Q_SLICE blocks is unpacked once and serves tiles of 8 rows x
 * RN tokens. Both run block_acc per block and token, so results do not depend on the step's size.
 * A Q4_K sub-block of 32 is a block here: its value d sc q - dmin m is Q4_1's q D + M with
 * D = d sc and M = -dmin m, and its nibbles come from 32 bytes (low ones for even sub-blocks);
 * Q5_K adds its fifth bits the same way (values 0..31, widened like Q5_0 below).
 * Q5_0 blocks are unpacked to bytes 0..31 (nibbles as Q4_0, fifth bits from qh) with the offset
 * M = -16 d; their 16-bit sums are widened after 4 of the 8 chunks (8 would overflow). */

/* signed weight bytes, widened every chunk (Q8_0) */
ENG_INLINE int q_signed(const int type)
{
    return type == ENG_T_Q8_0;
}
#define ENG_Q_ROWS 8
#define ENG_Q_SLICE 64 /* blocks per unpacked slice: 8 rows x 2048 elements = 16 KiB, L1-resident */

/* 8 rows x 4 dwords (xmm p[i] = row i) -> c[d] = dword d of rows 0..7 */
ENG_INLINE void transpose_8x4(const __m128i p[8], __m256i c[4])
{
    __m256i x0 = _mm256_set_m128i(p[4], p[0]), x1 = _mm256_set_m128i(p[5], p[1]);
    __m256i x2 = _mm256_set_m128i(p[6], p[2]), x3 = _mm256_set_m128i(p[7], p[3]);
    __m256i t0 = _mm256_unpacklo_epi32(x0, x1), t1 = _mm256_unpackhi_epi32(x0, x1);
    __m256i t2 = _mm256_unpacklo_epi32(x2, x3), t3 = _mm256_unpackhi_epi32(x2, x3);
    c[0] = _mm256_unpacklo_epi64(t0, t2);
    c[1] = _mm256_unpackhi_epi64(t0, t2);
    c[2] = _mm256_unpacklo_epi64(t1, t3);
    c[3] = _mm256_unpackhi_epi64(t1, t3);
}

/* What the 8 sub-blocks of one Q4_K / Q5_K super-block of a row group share: their D and M (the
 * 6-bit scales decoded once, not once per sub-block) and Q5_K's qh bytes transposed like the
 * nibbles (bit j of them is sub-block j's fifth bits). One per product; it refills itself when the
 * row group or the super-block changes. */
typedef struct qk_superblock {
    const uint8_t *row0; /* the row group's first row (NULL: empty) */
    int sb;
    __m256 d[8], m[8]; /* sub-block j: lane i = row i */
    __m256i h[8];      /* Q5_K: chunk k of the qh bytes */
    int pair;          /* sub-blocks 2 pair and 2 pair + 1 share their 32 qs bytes: */
    __m256i qs[8];     /* chunk k of them, transposed (low nibbles: the even sub-block) */
} qk_superblock_t;

/* r[i] (8 rows of 8 floats) -> r[j] = element j of rows 0..7 */
ENG_INLINE void transpose_8x8_ps(__m256 r[8])
{
    __m256 t[8], u[8];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++) {
        u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x20);
        r[4 + i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x31);
    }
}

ENG_INLINE void qk_superblock_fill(const int type, const uint8_t *const row[8], int sb, qk_superblock_t *q)
{
    const int five = type == ENG_T_Q5_K;
    const size_t bsz = five ? sizeof(eng_block_q5_K) : sizeof(eng_block_q4_K);
    __m128i hlo[8], hhi[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        const uint8_t *blk = row[i] + (size_t)sb * bsz;
        if (five) {
            hlo[i] = _mm_loadu_si128((const __m128i *)(blk + offsetof(eng_block_q5_K, qh)));
            hhi[i] = _mm_loadu_si128((const __m128i *)(blk + offsetof(eng_block_q5_K, qh) + 16));
        }
        uint16_t dh, mh;
        memcpy(&dh, blk, 2);
        memcpy(&mh, blk + 2, 2);
        uint64_t sc, mn;
        eng_q4_K_scales_mins(blk + 4, &sc, &mn);
        /* row i's D = d sc and M = -dmin m for sub-blocks 0..7, exactly the scalar products */
        q->d[i] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)sc))),
                                _mm256_set1_ps(_cvtsh_ss(dh)));
        q->m[i] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)mn))),
                                _mm256_set1_ps(-_cvtsh_ss(mh)));
    }
    transpose_8x8_ps(q->d); /* lane i = row i, one vector per sub-block */
    transpose_8x8_ps(q->m);
    if (five) {
        transpose_8x4(hlo, q->h);
        transpose_8x4(hhi, q->h + 4);
    }
    q->row0 = row[0];
    q->sb = sb;
    q->pair = -1;
}

/* Sub-block b of a Q4_K or Q5_K row group (see above): nibbles, Q5_K's fifth bits, D and M of the
 * 8 rows; what the super-block's sub-blocks share comes from q. */
ENG_INLINE void load_block_qk(const int type, const uint8_t *const row[8], int b, __m256i c[8], __m256 *d,
                              __m256 *m, qk_superblock_t *q)
{
    const int five = type == ENG_T_Q5_K, sb = b / 8, j = b % 8;
    const size_t bsz = five ? sizeof(eng_block_q5_K) : sizeof(eng_block_q4_K);
    const size_t qs_off = five ? offsetof(eng_block_q5_K, qs) : offsetof(eng_block_q4_K, qs);
    if (q->row0 != row[0] || q->sb != sb)
        qk_superblock_fill(type, row, sb, q);
    if (q->pair != j / 2) {
        __m128i lo[8], hi[8];
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) {
            const uint8_t *qs = row[i] + (size_t)sb * bsz + qs_off + 32 * (j / 2);
            lo[i] = _mm_loadu_si128((const __m128i *)qs);
            hi[i] = _mm_loadu_si128((const __m128i *)(qs + 16));
        }
        transpose_8x4(lo, q->qs);
        transpose_8x4(hi, q->qs + 4);
        q->pair = j / 2;
    }
    const __m256i m4 = _mm256_set1_epi8(0x0F);
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        c[i] = _mm256_and_si256(j & 1 ? _mm256_srli_epi16(q->qs[i], 4) : q->qs[i], m4);
    if (five) {
        const __m256i bit = _mm256_set1_epi8((char)(1 << j));
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++)
            c[i] = _mm256_or_si256(c[i], _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(q->h[i], bit), bit),
                                                          _mm256_set1_epi8(16)));
    }
    *d = q->d[j];
    *m = q->m[j];
}

/* c[k] |= 0x10 in the bytes whose element's bit is set in qh (lane i: row i's qh): chunk k holds
 * elements 4k..4k+3, so bits 4k..4k+3, each spread to its byte. Chunks 2n and 2n + 1 take the low
 * and high nibble of qh's byte n, copied to the dword's 4 bytes by one shuffle; byte b keeps bit b
 * of the nibble, and a table lookup turns 1, 2, 4, 8 into 16 (4 operations a chunk, not 6). */
ENG_INLINE void q5_0_fifth_bits(__m256i qh, __m256i c[8])
{
    const __m256i bit = _mm256_set1_epi32(0x08040201);
    const __m256i to16 = _mm256_setr_epi8(0, 16, 16, 0, 16, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0,
                                          0, 16, 16, 0, 16, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0);
#pragma GCC unroll 4
    for (int n = 0; n < 4; n++) {
        const __m256i spread = _mm256_add_epi8(_mm256_setr_epi8(0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12,
                                                                0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12),
                                               _mm256_set1_epi8((char)n));
        const __m256i lo = _mm256_shuffle_epi8(qh, spread), hi = _mm256_srli_epi16(lo, 4);
        c[2 * n] = _mm256_or_si256(c[2 * n], _mm256_shuffle_epi8(to16, _mm256_and_si256(lo, bit)));
        c[2 * n + 1] = _mm256_or_si256(c[2 * n + 1], _mm256_shuffle_epi8(to16, _mm256_and_si256(hi, bit)));
    }
}

/* Bytes per 32 weights of the types the 8-bit block products read (a K super-block counts as 8
 * equal blocks): a constant in each inlined copy, not a call or a division per block. */
ENG_INLINE size_t bytes_per_32(const int type)
{
    return type == ENG_T_Q4_0   ? sizeof(eng_block_q4_0)
           : type == ENG_T_Q4_1 ? sizeof(eng_block_q4_1)
           : type == ENG_T_Q8_0 ? sizeof(eng_block_q8_0)
           : type == ENG_T_Q5_0 ? sizeof(eng_block_q5_0)
           : type == ENG_T_Q5_1 ? sizeof(eng_block_q5_1)
           : type == ENG_T_Q5_K ? sizeof(eng_block_q5_K) / 8
                                : sizeof(eng_block_q4_K) / 8;
}

/* d (lane i: row i) from the f16 scale that starts each of the 8 blocks blk[i] (rows row[i]), and m
 * from the f16 after it for the types that store a minimum (Q4_1, Q5_1). */
ENG_INLINE void block_scales(const int type, const uint8_t *const row[8], const uint8_t *const blk[8], __m256 *d,
                             __m256 *m)
{
    const int has_min = type == ENG_T_Q4_1 || type == ENG_T_Q5_1;
#if ENG_X86_VNNI
    /* one gather of the blocks' leading dwords: 8 scalar stores read back as a vector cannot be
     * forwarded and stall (bench_gemm Q4_1 decode +20..45% against them on Sapphire Rapids) */
    const __m256i off = _mm256_setr_epi32(0, (int)(row[1] - row[0]), (int)(row[2] - row[0]), (int)(row[3] - row[0]),
                                          (int)(row[4] - row[0]), (int)(row[5] - row[0]), (int)(row[6] - row[0]),
                                          (int)(row[7] - row[0]));
    const __m256i dm = _mm256_i32gather_epi32((const int *)blk[0], off, 1);
    *d = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(dm));
    if (has_min)
        *m = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(_mm256_srli_epi32(dm, 16)));
#else
    uint16_t dh[8], mh[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        memcpy(&dh[i], blk[i], 2);
        memcpy(&mh[i], blk[i] + 2, 2);
    }
    *d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)dh));
    if (has_min)
        *m = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)mh));
#endif
}

/* Block b of rows row[0..7] -> its 8 chunk vectors c, scales d and offsets m (Q4_0: -8 d; Q8_0:
 * 0, unused); q: the K types' super-block cache. Read block by block, the 8 rows jump back and
 * forth; the callers prefetch the rows after them (prefetch_after). */
ENG_INLINE void load_block(const int type, const uint8_t *const row[8], int b, __m256i c[8], __m256 *d,
                           __m256 *m, qk_superblock_t *q)
{
    const int k_type = type == ENG_T_Q4_K || type == ENG_T_Q5_K;
    const size_t bsz = bytes_per_32(type);
    if (k_type) {
        load_block_qk(type, row, b, c, d, m, q);
        return;
    }
    const int five = type == ENG_T_Q5_0 || type == ENG_T_Q5_1, hoff = type == ENG_T_Q5_1 ? 4 : 2;
    const int qoff = five ? hoff + 4 : type == ENG_T_Q4_1 ? 4 : 2;
    const uint8_t *blk[8];
    __m128i p[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        blk[i] = row[i] + (size_t)b * bsz;
        p[i] = _mm_loadu_si128((const __m128i *)(blk[i] + qoff));
    }
    if (type == ENG_T_Q8_0) {
        transpose_8x4(p, c);
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++)
            p[i] = _mm_loadu_si128((const __m128i *)(blk[i] + qoff + 16));
        transpose_8x4(p, c + 4);
    } else { /* byte j: element j in the low nibble, element j + 16 in the high one */
        const __m256i m4 = _mm256_set1_epi8(0x0F);
        transpose_8x4(p, c);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            c[4 + i] = _mm256_and_si256(_mm256_srli_epi16(c[i], 4), m4);
            c[i] = _mm256_and_si256(c[i], m4);
        }
        if (five) {
            int32_t qh[8];
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++)
                memcpy(&qh[i], blk[i] + hoff, 4);
            /* built from registers: a vector load of 8 fresh scalar stores would stall */
            q5_0_fifth_bits(_mm256_set_epi32(qh[7], qh[6], qh[5], qh[4], qh[3], qh[2], qh[1], qh[0]), c);
        }
    }
    block_scales(type, row, blk, d, m);
    if (type != ENG_T_Q4_1 && type != ENG_T_Q5_1)
        *m = type == ENG_T_Q4_0   ? _mm256_mul_ps(*d, _mm256_set1_ps(-8.0f))
             : type == ENG_T_Q5_0 ? _mm256_mul_ps(*d, _mm256_set1_ps(-16.0f))
                                  : _mm256_setzero_ps();
}

/* the quants of block b of the packed 16-row group at grp (k = 32 nb elements) */
ENG_INLINE const uint8_t *packed_quants(const int type, const uint8_t *grp, int b)
{
    return grp + (size_t)b * (type == ENG_T_Q8_0 ? 512 : 256);
}

/* Block b of the 8-row half (0: rows 0..7, 1: rows 8..15) of the packed group grp (kernels.h,
 * eng_cpu_pack16) -> what load_block gives for those rows: the low or high 32 bytes of each packed
 * vector are the half's chunk, the half's 8 scales (and minimums) are 16 bytes of the group's 32;
 * Q8_0 bytes lose their +128 again (chunk_dot wants them signed). */
ENG_INLINE void load_packed8(const int type, const uint8_t *grp, int nb, int half, int b, __m256i c[8], __m256 *d,
                             __m256 *m)
{
    const uint8_t *q = packed_quants(type, grp, b) + 32 * half;
    const uint8_t *scales = packed_quants(type, grp, nb) + (size_t)b * 32 + 16 * half;
    if (type == ENG_T_Q8_0) {
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++)
            c[i] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(q + 64 * i)), _mm256_set1_epi8((char)0x80));
    } else {
        const __m256i m4 = _mm256_set1_epi8(0x0F);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(q + 64 * i));
            c[i] = _mm256_and_si256(v, m4);
            c[4 + i] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        }
    }
    *d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)scales));
    *m = type == ENG_T_Q4_1   ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(scales + (size_t)nb * 32)))
         : type == ENG_T_Q4_0 ? _mm256_mul_ps(*d, _mm256_set1_ps(-8.0f))
                              : _mm256_setzero_ps();
}

/* Block b of the 8 rows starting at row r (row[i]: row r + i, or a repeat for a short group) from
 * the packed weights or the file's blocks */
ENG_INLINE void load_block8(const int type, const eng_cpu_gemm_t *g, const uint8_t *const row[8], int r, int b,
                            __m256i c[8], __m256 *d, __m256 *m, qk_superblock_t *q)
{
    if (g->packed)
        load_packed8(type, (const uint8_t *)g->w + (size_t)(r & ~(ENG_CPU_PACK_ROWS - 1)) * g->w_stride,
                     g->k / ENG_CPU_QK, (r / ENG_Q_ROWS) & 1, b, c, d, m);
    else
        load_block(type, row, b, c, d, m, q);
}

/* Share b (of k / 32) of the weights after rows [r, r + rows): the next 16-row group when packed
 * (from its first 8-row half only), the next `rows` rows otherwise; a K super-block's bytes count
 * as 8 equal blocks. The products stream their weights from memory (SmolLM2: 96 MB a token), so
 * every product prefetches the rows after those it computes, in step with its blocks (a prefetch
 * past the tensor's end is harmless). Paths that read blocks straight into registers call it per
 * block as they load; a slice is unpacked in a burst of loads and then its first tile calls it as
 * it computes (prefetching in the burst stalled on the line fill buffers: 16 streams' decode step
 * ran at half the rate of the same product from cache). */
ENG_INLINE void prefetch_after(const int type, const eng_cpu_gemm_t *g, int r, int rows, int b)
{
    if (g->packed && (r & (ENG_CPU_PACK_ROWS - 1)) != 0)
        return;
    const int span = g->packed ? ENG_CPU_PACK_ROWS : rows;
    const char *next = (const char *)g->w + (size_t)(r + span) * g->w_stride;
    /* one block's share; a division by the blocks per row here cost 12% of a 1-token product */
    const size_t per = (size_t)span * bytes_per_32(type);
    for (size_t o = (size_t)b * per & ~(size_t)63; o < (size_t)(b + 1) * per; o += 64)
        _mm_prefetch(next + o, _MM_HINT_T0);
}

/* s += the products of one chunk vector w (8 rows) with 4 activation bytes a in every lane */
ENG_INLINE __m256i chunk_dot(const int type, __m256i s, __m256i w, __m256i a)
{
    if (q_signed(type))
        a = _mm256_sign_epi8(a, w), w = _mm256_sign_epi8(w, w);
#if ENG_X86_VNNI
    return _mm256_dpbusd_epi32(s, w, a);
#else
    __m256i p = _mm256_maddubs_epi16(w, a);
    if (q_signed(type))
        return _mm256_add_epi32(s, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
    return _mm256_add_epi16(s, p);
#endif
}

/* acc (lane i: row i) += one block's product with one token's activation block a (scale ad,
 * scaled sum as): d ad isum + m as. Every path runs exactly these operations per row and block. */
ENG_INLINE __m256 block_acc(const int type, const __m256i c[8], __m256 d, __m256 m, const int8_t *a, float ad,
                            float as, __m256 acc)
{
    __m256i s = _mm256_setzero_si256(), half = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        int32_t a4;
        memcpy(&a4, a + 4 * i, sizeof a4);
        s = chunk_dot(type, s, c[i], _mm256_set1_epi32(a4));
        if (!ENG_X86_VNNI && (type == ENG_T_Q5_0 || type == ENG_T_Q5_1 || type == ENG_T_Q5_K) && i == 3) {
            /* 16-bit sums of 4 chunks at most */
            half = _mm256_madd_epi16(s, _mm256_set1_epi16(1));
            s = _mm256_setzero_si256();
        }
    }
    if (!ENG_X86_VNNI && !q_signed(type))
        s = _mm256_add_epi32(_mm256_madd_epi16(s, _mm256_set1_epi16(1)), half);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(d, _mm256_set1_ps(ad)), acc);
    if (!q_signed(type))
        acc = _mm256_fmadd_ps(m, _mm256_set1_ps(as), acc);
    return acc;
}

/* out rows [r, r + n) (n <= 8) of token t: v (lane i: row i), added when `add` */
ENG_INLINE void store_rows(const eng_cpu_gemm_t *g, int t, int r, int n, __m256 v, int add)
{
    float *o = g->out + (size_t)t * g->ldo + r;
    if (n == ENG_Q_ROWS) {
        _mm256_storeu_ps(o, add ? _mm256_add_ps(_mm256_loadu_ps(o), v) : v);
    } else {
        _Alignas(32) float f[8];
        _mm256_store_ps(f, v);
        for (int i = 0; i < n; i++)
            o[i] = add ? o[i] + f[i] : f[i];
    }
}

/* rows [r, r + n) x tokens [t, t + RN), from blocks [b0, b0 + nbs) unpacked into w, d, m */
/* token t's q8 activation row (kernels.h): its bytes, block scales, scaled sums and 128 x sums */
typedef struct q8_row {
    const int8_t *q;
    const float *d, *s;
    const int32_t *s128;
} q8_row_t;

ENG_INLINE q8_row_t q8_row(const eng_cpu_gemm_t *g, int t)
{
    const void *row = (const char *)g->x + (size_t)t * g->x_stride;
    return (q8_row_t){row, eng_cpu_q8_d(row, g->k), eng_cpu_q8_s(row, g->k), eng_cpu_q8_s128(row, g->k)};
}

ENG_INLINE void qtile(const int type, const int RN, const eng_cpu_gemm_t *g, const __m256i *w, const __m256 *d,
                      const __m256 *m, int b0, int nbs, int r, int n, int t, int add, int pf)
{
    q8_row_t a[4];
    __m256 acc[4];
#pragma GCC unroll 4
    for (int j = 0; j < RN; j++) {
        a[j] = q8_row(g, t + j);
        acc[j] = _mm256_setzero_ps();
    }
    for (int b = 0; b < nbs; b++) {
        __m256i c[8];
        if (pf)
            prefetch_after(type, g, r, ENG_Q_ROWS, b0 + b);
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++)
            c[i] = _mm256_load_si256(w + 8 * b + i);
#pragma GCC unroll 4
        for (int j = 0; j < RN; j++)
            acc[j] = block_acc(type, c, d[b], m[b], a[j].q + (b0 + b) * ENG_CPU_QK, a[j].d[b0 + b], a[j].s[b0 + b],
                               acc[j]);
    }
#pragma GCC unroll 4
    for (int j = 0; j < RN; j++)
        store_rows(g, t + j, r, n, acc[j], add);
}

/* rows [r, r + n) x all RN tokens straight from the packed blocks: each block is loaded and
 * unpacked once in registers and serves every token. For up to 3 tokens (decode, small
 * speculative steps) this beats unpacking a slice to memory (SmolLM2, 2 threads: 3 tokens +10%,
 * 2 tokens +8%); at 4 the accumulators no longer fit the registers and it loses (-3..9%). */
ENG_INLINE void direct_rows(const int type, const int RN, const eng_cpu_gemm_t *g, const uint8_t *const row[8],
                            int r, int n)
{
    qk_superblock_t qk = {.row0 = NULL};
    const int nb = g->k / ENG_CPU_QK;
    q8_row_t a[4];
#pragma GCC unroll 4
    for (int j = 0; j < RN; j++)
        a[j] = q8_row(g, j);
    /* summed and stored slice by slice, as the unpacked path does, so both round alike */
    for (int b0 = 0; b0 < nb; b0 += ENG_Q_SLICE) {
        const int b1 = nb - b0 < ENG_Q_SLICE ? nb : b0 + ENG_Q_SLICE;
        __m256 acc[4];
#pragma GCC unroll 4
        for (int j = 0; j < RN; j++)
            acc[j] = _mm256_setzero_ps();
        for (int b = b0; b < b1; b++) {
            __m256i c[8];
            __m256 dv, mv;
            prefetch_after(type, g, r, ENG_Q_ROWS, b);
            load_block8(type, g, row, r, b, c, &dv, &mv, &qk);
#pragma GCC unroll 4
            for (int j = 0; j < RN; j++)
                acc[j] = block_acc(type, c, dv, mv, a[j].q + b * ENG_CPU_QK, a[j].d[b], a[j].s[b], acc[j]);
        }
#pragma GCC unroll 4
        for (int j = 0; j < RN; j++)
            store_rows(g, j, r, n, acc[j], g->accumulate || b0 > 0);
    }
}

#if ENG_X86_VNNI
/* AVX-512: steps of several tokens run 16-row tiles on 512-bit vectors. vpdpbusd on a zmm costs
 * what it costs on a ymm here (two a cycle) and does twice the products, and the per-block float
 * work serves 16 rows instead of 8. A 16-row group unpacks as two 8-row groups side by side (low
 * half: rows 0..7); the operations per lane are exactly block_acc's, so the outputs are bitwise
 * those of the 8-row tiles. Signed weights (Q8_0) unpack with 128 added (AVX-512 has no vpsignb
 * for the sign trick of chunk_dot): the integer sum gains 128 times the activation block's sum,
 * which the tile takes off again (the q8 row's s128), exactly, before the float work. */
#define ENG_Q_ROWS16 16

/* out rows [r, r + n) (n <= 16) of token t: v (lane i: row r + i), added when `add` */
ENG_INLINE void store_rows16(const eng_cpu_gemm_t *g, int t, int r, int n, __m512 v, int add)
{
    const __mmask16 keep = (__mmask16)((1u << n) - 1);
    float *o = g->out + (size_t)t * g->ldo + r;
    _mm512_mask_storeu_ps(o, keep, add ? _mm512_add_ps(_mm512_maskz_loadu_ps(keep, o), v) : v);
}

/* acc (lane i: row i of 16) += block blk's product with token x: block_acc's operations per lane */
ENG_INLINE __m512 block_acc16(const int type, const __m512i c[8], __m512 d, __m512 m, const q8_row_t *x, int blk,
                              __m512 acc)
{
    const int8_t *a = x->q + blk * ENG_CPU_QK;
    __m512i s = _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        int32_t a4;
        memcpy(&a4, a + 4 * i, sizeof a4);
        s = _mm512_dpbusd_epi32(s, c[i], _mm512_set1_epi32(a4));
    }
    if (q_signed(type))
        s = _mm512_sub_epi32(s, _mm512_set1_epi32(x->s128[blk]));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(d, _mm512_set1_ps(x->d[blk])), acc);
    if (!q_signed(type))
        acc = _mm512_fmadd_ps(m, _mm512_set1_ps(x->s[blk]), acc);
    return acc;
}

/* rows [r, r + n) (n <= 16) x tokens [t, t + RN), from blocks [b0, b0 + nbs) unpacked into w, d, m */
ENG_INLINE void qtile16(const int type, const int RN, const eng_cpu_gemm_t *g, const __m512i *w, const __m512 *d,
                        const __m512 *m, int b0, int nbs, int r, int n, int t, int add, int pf)
{
    q8_row_t x[4];
    __m512 acc[4];
#pragma GCC unroll 4
    for (int j = 0; j < RN; j++) {
        x[j] = q8_row(g, t + j);
        acc[j] = _mm512_setzero_ps();
    }
    for (int b = 0; b < nbs; b++) {
        __m512i c[8];
        if (pf)
            prefetch_after(type, g, r, ENG_Q_ROWS16, b0 + b);
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++)
            c[i] = _mm512_loadu_si512(w + 8 * b + i);
#pragma GCC unroll 4
        for (int j = 0; j < RN; j++)
            acc[j] = block_acc16(type, c, d[b], m[b], &x[j], b0 + b, acc[j]);
    }
#pragma GCC unroll 4
    for (int j = 0; j < RN; j++)
        store_rows16(g, t + j, r, n, acc[j], add);
}

/* ---- packed weights (kernels.h, eng_cpu_pack16) ---- */

/* Block b of the packed group grp -> its 8 chunk vectors c (Q8_0: plus 128, as the 16-row tiles
 * want them), scales d and offsets m, as load_block gives them for two 8-row halves. (The
 * packed decode's prefetch, against none: bench_cpu tg128 median 141 -> 148 t/s over six
 * alternations, 16 streams unchanged: within this machine's noise.) */
ENG_INLINE void load_packed16(const int type, const uint8_t *grp, int nb, int b, __m512i c[8], __m512 *d,
                              __m512 *m)
{
    const uint8_t *q = packed_quants(type, grp, b);
    const uint8_t *scales = packed_quants(type, grp, nb) + (size_t)b * 32;
    if (type == ENG_T_Q8_0) {
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++)
            c[i] = _mm512_loadu_si512(q + 64 * i);
    } else {
        const __m512i m4 = _mm512_set1_epi8(0x0F);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            const __m512i v = _mm512_loadu_si512(q + 64 * i);
            c[i] = _mm512_and_si512(v, m4);
            c[4 + i] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        }
    }
    *d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)scales));
    *m = type == ENG_T_Q4_1   ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(scales + (size_t)nb * 32)))
         : type == ENG_T_Q4_0 ? _mm512_mul_ps(*d, _mm512_set1_ps(-8.0f))
                              : _mm512_setzero_ps();
}

/* packed rows [r, r + 16) x tokens 0..RN-1 (RN <= ENG_PACKED_DIRECT_TOK) straight from the group:
 * each block is loaded once in registers and serves every token (decode, speculative steps, small
 * batches: unpacking a slice to memory first made 4 tokens slower than 2); summed and stored
 * slice by slice like the unpacked path, so both round alike */
#define ENG_PACKED_DIRECT_TOK 8
ENG_INLINE void packed_rows16(const int type, const int RN, const eng_cpu_gemm_t *g, int r, int n)
{
    const int nb = g->k / ENG_CPU_QK;
    const uint8_t *grp = (const uint8_t *)g->w + (size_t)r * g->w_stride;
    q8_row_t x[ENG_PACKED_DIRECT_TOK];
#pragma GCC unroll 8
    for (int j = 0; j < RN; j++)
        x[j] = q8_row(g, j);
    for (int b0 = 0; b0 < nb; b0 += ENG_Q_SLICE) {
        const int b1 = nb - b0 < ENG_Q_SLICE ? nb : b0 + ENG_Q_SLICE;
        __m512 acc[ENG_PACKED_DIRECT_TOK];
#pragma GCC unroll 8
        for (int j = 0; j < RN; j++)
            acc[j] = _mm512_setzero_ps();
        for (int b = b0; b < b1; b++) {
            __m512i c[8];
            __m512 d, m;
            prefetch_after(type, g, r, ENG_Q_ROWS16, b);
            load_packed16(type, grp, nb, b, c, &d, &m);
#pragma GCC unroll 8
            for (int j = 0; j < RN; j++)
                acc[j] = block_acc16(type, c, d, m, &x[j], b, acc[j]);
        }
#pragma GCC unroll 8
        for (int j = 0; j < RN; j++)
            store_rows16(g, j, r, n, acc[j], g->accumulate || b0 > 0);
    }
}

ENG_INLINE __m512i join_i(__m256i lo, __m256i hi)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

ENG_INLINE __m512 join_ps(__m256 lo, __m256 hi)
{
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(lo)), _mm256_castps_pd(hi), 1));
}

/* A 16-row group's rows in the file's layout as the unpacker reads them: rows 0-7 (lo) and 8-15
 * (hi), a short group repeating its first row, with each half's K-quant super-block state */
typedef struct group16 {
    const uint8_t *lo[8], *hi[8];
    qk_superblock_t qk_lo, qk_hi;
} group16_t;

/* Block b (of k / 32) of the 16-row group at row r -> chunk vectors w[0..7], scale *d, offset *m
 * (packed Q8_0, whose quants the products read in place, fills just *d and *m) */
ENG_INLINE void unpack_block16(const int type, const eng_cpu_gemm_t *g, group16_t *rows, int r, int b, __m512i *w,
                               __m512 *d, __m512 *m)
{
    if (g->packed) {
        __m512i c[8];
        load_packed16(type, (const uint8_t *)g->w + (size_t)r * g->w_stride, g->k / ENG_CPU_QK, b, c, d, m);
        if (type != ENG_T_Q8_0)
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++)
                w[i] = c[i];
        return;
    }
    __m256i cl[8], ch[8];
    __m256 dl, dh, ml, mh;
    load_block(type, rows->lo, b, cl, &dl, &ml, &rows->qk_lo);
    load_block(type, rows->hi, b, ch, &dh, &mh, &rows->qk_hi);
    const __m512i bias = _mm512_set1_epi8(q_signed(type) ? (char)0x80 : 0);
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        w[i] = _mm512_xor_si512(join_i(cl[i], ch[i]), bias);
    *d = join_ps(dl, dh);
    *m = join_ps(ml, mh);
}

/* The chunk vectors the products of slice b0 read: the unpacked w, or packed Q8_0's quants */
ENG_INLINE const __m512i *slice_chunks(const int type, const eng_cpu_gemm_t *g, int r, int b0, const __m512i *w)
{
    if (g->packed && type == ENG_T_Q8_0)
        return (const __m512i *)packed_quants(type, (const uint8_t *)g->w + (size_t)r * g->w_stride, b0);
    return w;
}

/* Block slice [b0, b0 + nbs) of the 16-row group at row r -> w, d, m; returns slice_chunks */
ENG_INLINE const __m512i *unpack_slice16(const int type, const eng_cpu_gemm_t *g, group16_t *rows, int r, int b0,
                                         int nbs, __m512i *w, __m512 *d, __m512 *m)
{
    for (int b = 0; b < nbs; b++)
        unpack_block16(type, g, rows, r, b0 + b, w + 8 * b, &d[b], &m[b]);
    return slice_chunks(type, g, r, b0, w);
}

#if ENG_X86_AMX
/* AMX: one tile instruction multiplies a block of 16 tokens by the same block of 16 rows. The
 * unpacked slice w holds each block's chunk i (elements 4i..4i+3) of the 16 rows in 64 bytes,
 * which is the VNNI layout of the B operand (8 rows of 64 bytes for 32 elements); the 16 tokens'
 * activation blocks, x_stride apart, are the A operand (16 rows of 32 bytes). tdpbsud (signed
 * activations x unsigned weights) leaves the 16 x 16 integer block sums, exactly vpdpbusd's, and
 * the float work per lane is qtile16's, so the outputs are bitwise those of the 16-row tiles. */
#define ENG_AMX_TOK 16

/* Two sets of tile registers, each the activations (A), the weights (B) and the sums (C): tiles
 * 0, 1, 2 and 3, 4, 5. Tiles are not renamed, so while the float work uses one block's sums the
 * next block's product runs on the other set. GCC's tile intrinsics paste their register argument
 * into the assembly, so it must be a literal. */
#define ENG_AMX_PRODUCT(A, B, C, a, xs, w) \
    do {                                   \
        _tile_zero(C);                     \
        _tile_loadd(A, a, xs);             \
        _tile_loadd(B, w, 64);             \
        _tile_dpbsud(C, A, B);             \
    } while (0)

typedef struct amx_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config_t;

/* The tile shapes, loaded once per thread and kept: loading and releasing them around every
 * product cost about 0.4 us a call here (a 16-token product of 16 rows fell below the AVX-512
 * one). The price is 8 KiB more state that context switches save. */
static _Thread_local int amx_configured;

ENG_INLINE void amx_begin(void)
{
    if (amx_configured)
        return;
    amx_configured = 1;
    amx_config_t c = {.palette = 1};
    for (int set = 0; set < 6; set += 3) {
        c.rows[set] = ENG_AMX_TOK, c.colsb[set] = ENG_CPU_QK;
        c.rows[set + 1] = ENG_CPU_QK / 4, c.colsb[set + 1] = 64;
        c.rows[set + 2] = ENG_AMX_TOK, c.colsb[set + 2] = 64;
    }
    _tile_loadconfig(&c);
}

/* rows [r, r + n) (n <= 16) x tokens [t, t + 16), from blocks [b0, b0 + nbs) unpacked into wbuf
 * (read from w = slice_chunks), d, m. The slice's first tile (fill: the group's rows) unpacks the
 * blocks as it goes, a block ahead of its product, and prefetches the rows after the group; the
 * others read what it left. (Unpacking the whole slice first stalled the first product: a tile
 * load waits for the stores before it, and a slice is up to 512 of them.) */
ENG_INLINE void amx_tile(const int type, const eng_cpu_gemm_t *g, group16_t *fill, __m512i *wbuf, const __m512i *w,
                         __m512 *d, __m512 *m, int b0, int nbs, int r, int n, int t, int add)
{
    const q8_row_t x = q8_row(g, t);
    const size_t xs = g->x_stride;
    const ptrdiff_t s_at = (const char *)x.s - (const char *)x.d, s128_at = (const char *)x.s128 - (const char *)x.d;
    /* block b's sums: tile set b % 2, buffer b % 2. Block b + 2's product is issued and block
     * b + 1's sums stored before the float work of block b: a store waits for its product, so
     * each product has a block of float work to finish in, and each store a block to land in
     * memory before its sums are read (storing right after the product stalled every block) */
    _Alignas(64) int32_t sums[2][ENG_AMX_TOK][16]; /* [block % 2][token][row] */
    __m512 acc[ENG_AMX_TOK];
#pragma GCC unroll 16
    for (int j = 0; j < ENG_AMX_TOK; j++)
        acc[j] = _mm512_setzero_ps();
    const int8_t *a = x.q + b0 * ENG_CPU_QK;
    for (int b = 0; fill && b < 3 && b < nbs; b++)
        unpack_block16(type, g, fill, r, b0 + b, wbuf + 8 * b, &d[b], &m[b]);
    ENG_AMX_PRODUCT(0, 1, 2, a, xs, w);
    if (nbs > 1)
        ENG_AMX_PRODUCT(3, 4, 5, a + ENG_CPU_QK, xs, w + 8);
    _tile_stored(2, sums[0], 64);
    for (int b = 0; b < nbs; b++) {
        const int blk = b0 + b, ahead = b + 2;
        if (fill)
            prefetch_after(type, g, r, ENG_Q_ROWS16, blk);
        if (b % 2 == 0) {
            if (b + 1 < nbs)
                _tile_stored(5, sums[1], 64);
            if (ahead < nbs)
                ENG_AMX_PRODUCT(0, 1, 2, a + ahead * ENG_CPU_QK, xs, w + 8 * ahead);
        } else {
            if (b + 1 < nbs)
                _tile_stored(2, sums[0], 64);
            if (ahead < nbs)
                ENG_AMX_PRODUCT(3, 4, 5, a + ahead * ENG_CPU_QK, xs, w + 8 * ahead);
        }
        if (fill && ahead + 1 < nbs)
            unpack_block16(type, g, fill, r, b0 + ahead + 1, wbuf + 8 * (ahead + 1), &d[ahead + 1], &m[ahead + 1]);
        /* token j's scale, sum and s128 of this block: one pointer stepped by the row stride (a
         * pointer per token spilled to vector registers, two moves per token on the vector ports) */
        const char *xj = (const char *)(x.d + blk);
#pragma GCC unroll 16
        for (int j = 0; j < ENG_AMX_TOK; j++, xj += xs) {
            __m512i s = _mm512_load_si512(sums[b % 2][j]);
            if (q_signed(type))
                s = _mm512_sub_epi32(s, _mm512_set1_epi32(*(const int32_t *)(xj + s128_at)));
            const __m512 scale = _mm512_mul_ps(d[b], _mm512_set1_ps(*(const float *)xj));
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, acc[j]);
            if (!q_signed(type))
                acc[j] = _mm512_fmadd_ps(m[b], _mm512_set1_ps(*(const float *)(xj + s_at)), acc[j]);
        }
    }
#pragma GCC unroll 16
    for (int j = 0; j < ENG_AMX_TOK; j++)
        store_rows16(g, t + j, r, n, acc[j], add);
}
#endif

/* rows [r0, r1), 4 tokens or more */
ENG_INLINE void gemm_q32_wide(const int type, const eng_cpu_gemm_t *g, int r0, int r1)
{
    _Alignas(64) __m512i w[ENG_Q_SLICE * 8];
    _Alignas(64) __m512 d[ENG_Q_SLICE], m[ENG_Q_SLICE];
    const int nb = g->k / ENG_CPU_QK;
#if ENG_X86_AMX
    if (g->n_tok >= ENG_AMX_TOK)
        amx_begin();
#endif
    for (int r = r0; r < r1; r += ENG_Q_ROWS16) {
        const int n = r1 - r < ENG_Q_ROWS16 ? r1 - r : ENG_Q_ROWS16;
        group16_t rows = {.qk_lo = {.row0 = NULL}, .qk_hi = {.row0 = NULL}};
        for (int i = 0; i < 8; i++) { /* a short group repeats its first row; those lanes are dropped */
            rows.lo[i] = (const uint8_t *)g->w + (size_t)(r + (i < n ? i : 0)) * g->w_stride;
            rows.hi[i] = (const uint8_t *)g->w + (size_t)(r + (8 + i < n ? 8 + i : 0)) * g->w_stride;
        }
        for (int b0 = 0; b0 < nb; b0 += ENG_Q_SLICE) {
            const int nbs = nb - b0 < ENG_Q_SLICE ? nb - b0 : ENG_Q_SLICE, add = g->accumulate || b0 > 0;
            const __m512i *ws;
            int t = 0;
#if ENG_X86_AMX
            if (g->n_tok >= ENG_AMX_TOK) {
                ws = slice_chunks(type, g, r, b0, w);
                for (; t + ENG_AMX_TOK <= g->n_tok; t += ENG_AMX_TOK)
                    amx_tile(type, g, t == 0 ? &rows : NULL, w, ws, d, m, b0, nbs, r, n, t, add);
            } else
#endif
                ws = unpack_slice16(type, g, &rows, r, b0, nbs, w, d, m);
            for (; t + 4 <= g->n_tok; t += 4)
                qtile16(type, 4, g, ws, d, m, b0, nbs, r, n, t, add, t == 0);
            for (; t < g->n_tok; t++)
                qtile16(type, 1, g, ws, d, m, b0, nbs, r, n, t, add, t == 0);
        }
    }
}

/* packed rows [r0, r1), 1..ENG_PACKED_DIRECT_TOK tokens */
ENG_INLINE void gemm_packed_narrow(const int type, const eng_cpu_gemm_t *g, int r0, int r1)
{
    for (int r = r0; r < r1; r += ENG_Q_ROWS16) {
        const int n = r1 - r < ENG_Q_ROWS16 ? r1 - r : ENG_Q_ROWS16;
        switch (g->n_tok) {
        case 1: packed_rows16(type, 1, g, r, n); break;
        case 2: packed_rows16(type, 2, g, r, n); break;
        case 3: packed_rows16(type, 3, g, r, n); break;
        case 4: packed_rows16(type, 4, g, r, n); break;
        case 5: packed_rows16(type, 5, g, r, n); break;
        case 6: packed_rows16(type, 6, g, r, n); break;
        case 7: packed_rows16(type, 7, g, r, n); break;
        default: packed_rows16(type, 8, g, r, n); break;
        }
    }
}
#endif

ENG_INLINE void gemm_q32(const int type, const eng_cpu_gemm_t *g, int r0, int r1)
{
#if ENG_X86_VNNI
    if (g->packed && g->n_tok <= ENG_PACKED_DIRECT_TOK) {
        gemm_packed_narrow(type, g, r0, r1);
        return;
    }
    if (g->n_tok >= 4) {
        gemm_q32_wide(type, g, r0, r1);
        return;
    }
#endif
    _Alignas(32) __m256i w[ENG_Q_SLICE * 8];
    _Alignas(32) __m256 d[ENG_Q_SLICE], m[ENG_Q_SLICE];
    qk_superblock_t qk = {.row0 = NULL};
    const int nb = g->k / ENG_CPU_QK;
    for (int r = r0; r < r1; r += ENG_Q_ROWS) {
        const int n = r1 - r < ENG_Q_ROWS ? r1 - r : ENG_Q_ROWS;
        const uint8_t *row[8];
        for (int i = 0; i < 8; i++) /* a short group repeats its first row; those lanes are dropped */
            row[i] = (const uint8_t *)g->w + (size_t)(r + (i < n ? i : 0)) * g->w_stride;
        switch (g->n_tok) {
        case 1: direct_rows(type, 1, g, row, r, n); continue;
        case 2: direct_rows(type, 2, g, row, r, n); continue;
        case 3: direct_rows(type, 3, g, row, r, n); continue;
        default: break;
        }
        for (int b0 = 0; b0 < nb; b0 += ENG_Q_SLICE) {
            const int nbs = nb - b0 < ENG_Q_SLICE ? nb - b0 : ENG_Q_SLICE, add = g->accumulate || b0 > 0;
            for (int b = 0; b < nbs; b++)
                load_block8(type, g, row, r, b0 + b, w + 8 * b, &d[b], &m[b], &qk);
            int t = 0;
            for (; t + 4 <= g->n_tok; t += 4)
                qtile(type, 4, g, w, d, m, b0, nbs, r, n, t, add, t == 0);
            for (; t < g->n_tok; t++)
                qtile(type, 1, g, w, d, m, b0, nbs, r, n, t, add, t == 0);
        }
    }
}

#define ENG_WIDEN_FLOATS 32768 /* F32 elements of rows widened at once (128 KiB of stack) */
#define ENG_WIDEN_MIN_TOK 4    /* steps of fewer tokens widen each tile's rows as they load */

/* F16 / BF16 rows [r0, r1): a step of several tokens widens blocks of rows to F32 once and runs
 * the F32 tiles on them, instead of widening every row again for each pair of tokens (F16 prompts
 * ran 25% slower than F32 ones). Widening is exact and the tiles sum in the same order, so the
 * products are bitwise those of the per-tile path. Steps of several tokens use 3 x 3 tiles (9
 * accumulators, 6 loads per 9 FMAs: prompts +17% over 4 x 2), one token 4-row tiles (4 rows
 * stream at once); every tile shape sums each output in the same order. */
ENG_INLINE void gemm_widened(const int type, const eng_cpu_gemm_t *g, int r0, int r1)
{
    const int rb = ENG_WIDEN_FLOATS / g->k / 4 * 4;
    if (g->n_tok < ENG_WIDEN_MIN_TOK || rb < 4) {
        drive(type, 4, 2, g, r0, r1);
        return;
    }
    float buf[ENG_WIDEN_FLOATS] __attribute__((aligned(32)));
    for (int r = r0; r < r1; r += rb) {
        const int n = r1 - r < rb ? r1 - r : rb;
        for (int i = 0; i < n; i++) {
            const void *w = (const uint8_t *)g->w + (size_t)(r + i) * g->w_stride;
            float *f = buf + (size_t)i * g->k;
            int e = 0;
            for (; e + 8 <= g->k; e += 8)
                _mm256_storeu_ps(f + e, load8f(type, w, e));
            for (; e < g->k; e++)
                f[e] = load1f(type, w, e);
        }
        eng_cpu_gemm_t wide = *g;
        wide.type = ENG_T_F32;
        wide.w = buf;
        wide.w_stride = (size_t)g->k * sizeof(float);
        wide.out = g->out + r;
        drive(ENG_T_F32, 3, 3, &wide, 0, n);
    }
}

static void gemm(const eng_cpu_gemm_t *g, int r0, int r1)
{
    switch (g->type) {
    case ENG_T_F32:
        if (g->n_tok >= ENG_WIDEN_MIN_TOK)
            drive(ENG_T_F32, 3, 3, g, r0, r1);
        else
            drive(ENG_T_F32, 4, 2, g, r0, r1);
        break;
    case ENG_T_F16: gemm_widened(ENG_T_F16, g, r0, r1); break;
    case ENG_T_BF16: gemm_widened(ENG_T_BF16, g, r0, r1); break;
    case ENG_T_Q4_0: gemm_q32(ENG_T_Q4_0, g, r0, r1); break;
    case ENG_T_Q4_1: gemm_q32(ENG_T_Q4_1, g, r0, r1); break;
    case ENG_T_Q8_0: gemm_q32(ENG_T_Q8_0, g, r0, r1); break;
    case ENG_T_Q6_K: drive(ENG_T_Q6_K, 2, 1, g, r0, r1); break;
    case ENG_T_Q4_K: gemm_q32(ENG_T_Q4_K, g, r0, r1); break;
    case ENG_T_Q5_K: gemm_q32(ENG_T_Q5_K, g, r0, r1); break;
    case ENG_T_Q5_1: gemm_q32(ENG_T_Q5_1, g, r0, r1); break;
    case ENG_T_Q5_0: gemm_q32(ENG_T_Q5_0, g, r0, r1); break;
    default: break;
    }
}

/* ---- vector helpers ------------------------------------------------------------------------ */

/* The attention helpers read K/V rows of F32, F16 or int8 (`type`, a constant at every call site,
 * as in the products): F16 elements are widened by F16C on load and int8 ones converted, exactly,
 * so all run the same FMAs. */
ENG_INLINE const void *row_at(const int type, const void *rows, int i, int hd)
{
    return (const char *)rows + (size_t)i * hd * (type == ENG_T_F16 ? 2 : type == ENG_CPU_T_I8 ? 1 : 4);
}

/* dot of n floats a with n elements b of type */
ENG_INLINE float dot_t(const int type, const float *a, const void *b, int n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load8f(type, b, i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), load8f(type, b, i + 8), s1);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load8f(type, b, i), s0);
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++)
        s += a[i] * load1f(type, b, i);
    return s;
}

/* y += a * x for n elements x of type */
ENG_INLINE void axpy_t(const int type, float a, const void *x, float *y, int n)
{
    __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, load8f(type, x, i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * load1f(type, x, i);
}

static float dot_f32(const float *a, const float *b, int n)
{
    return dot_t(ENG_T_F32, a, b, n);
}

static void axpy_f32(float a, const float *x, float *y, int n)
{
    axpy_t(ENG_T_F32, a, x, y, n);
}

/* 4 rows at a time: 4 dot products accumulate side by side and reduce together (one horizontal
 * sum for 4 rows instead of one per row) */
ENG_INLINE void dot_rows(const int type, const float *q, const void *rows, int n, int hd, float scale, float *out)
{
    int i = 0;
    if (hd % 8 == 0) {
        for (; i + 4 <= n; i += 4) {
            const void *r0 = row_at(type, rows, i, hd), *r1 = row_at(type, rows, i + 1, hd),
                       *r2 = row_at(type, rows, i + 2, hd), *r3 = row_at(type, rows, i + 3, hd);
            __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(),
                   s3 = _mm256_setzero_ps();
            for (int k = 0; k < hd; k += 8) {
                __m256 qv = _mm256_loadu_ps(q + k);
                s0 = _mm256_fmadd_ps(qv, load8f(type, r0, k), s0);
                s1 = _mm256_fmadd_ps(qv, load8f(type, r1, k), s1);
                s2 = _mm256_fmadd_ps(qv, load8f(type, r2, k), s2);
                s3 = _mm256_fmadd_ps(qv, load8f(type, r3, k), s3);
            }
            __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(s0, s1), _mm256_hadd_ps(s2, s3));
            __m128 v = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
            _mm_storeu_ps(out + i, _mm_mul_ps(v, _mm_set1_ps(scale)));
        }
    }
    for (; i < n; i++)
        out[i] = scale * dot_t(type, q, row_at(type, rows, i, hd), hd);
}

#if ENG_X86_VNNI
/* 16 elements of type at w + i, as floats */
ENG_INLINE __m512 load16f(const int type, const void *w, int i)
{
    if (type == ENG_CPU_T_I8)
        return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)((const int8_t *)w + i))));
    if (type == ENG_T_F16)
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i)));
    return _mm512_loadu_ps((const float *)w + i);
}

/* o[r] = the sum of v[r]'s 16 lanes, r = 0..15: pairs of vectors, then pairs of pairs, are
 * interleaved and added within 128-bit lanes, then the lanes are added across (45 operations for
 * 16 sums, where one horizontal sum each would take 8) */
ENG_INLINE __m512 hsum16x16(const __m512 v[16])
{
    __m512 a[8], b[4];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) /* lane: v2i's and v2i+1's elements 0+2, 0+2, 1+3, 1+3 */
        a[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) { /* lane: the lane sums of v4i .. v4i+3 */
        const __m512d x = _mm512_castps_pd(a[2 * i]), y = _mm512_castps_pd(a[2 * i + 1]);
        b[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
    const __m512 d0 = _mm512_add_ps(_mm512_shuffle_f32x4(b[0], b[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                    _mm512_shuffle_f32x4(b[0], b[1], _MM_SHUFFLE(3, 2, 3, 2)));
    const __m512 d1 = _mm512_add_ps(_mm512_shuffle_f32x4(b[2], b[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                    _mm512_shuffle_f32x4(b[2], b[3], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(d0, d1, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(d0, d1, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* v[0..N) = the 16 N floats at p (N <= 8, a constant at each call) */
ENG_INLINE void load_floats16(const float *p, const int N, __m512 v[8])
{
#pragma GCC unroll 8
    for (int j = 0; j < N; j++)
        v[j] = _mm512_loadu_ps(p + 16 * j);
}

/* For G query heads (q + g hd, out + g out_stride; G NC <= 16, constants at each call): out[i] =
 * scale * dot(q, rows[i]) for rows in groups of 16 (returns how many: n rounded down to 16). The
 * queries stay in G NC registers (NC = hd / 16), a row's NC vectors load (and widen) once for all
 * G heads, and each head's 16 sums of a group reduce together (hsum16x16): with G > 1 they wait
 * in memory, and each head's outputs are bitwise its outputs alone. The 8-lane kernel reloaded q
 * for every 4 rows and reduced 4 rows at a time; converting an F16 row per head cost more than
 * its FMAs (grouped-query attention reads each row for 3 heads in SmolLM2). */
#define ENG_DOT_HEADS 4 /* most heads dot_rows16 takes at once */
ENG_INLINE int dot_rows16(const int type, const int NC, const int G, const float *q, const void *rows, int n, int hd,
                          float scale, float *out, size_t out_stride)
{
    __m512 qv[ENG_DOT_HEADS][8];
#pragma GCC unroll 4
    for (int g = 0; g < G; g++)
        load_floats16(q + g * hd, NC, qv[g]);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 s[ENG_DOT_HEADS][16];
#pragma GCC unroll 16
        for (int r = 0; r < 16; r++) {
            const void *row = row_at(type, rows, i + r, hd);
            __m512 c[8];
#pragma GCC unroll 8
            for (int k = 0; k < NC; k++)
                c[k] = load16f(type, row, 16 * k);
#pragma GCC unroll 4
            for (int g = 0; g < G; g++) {
                s[g][r] = _mm512_mul_ps(qv[g][0], c[0]);
#pragma GCC unroll 8
                for (int k = 1; k < NC; k++)
                    s[g][r] = _mm512_fmadd_ps(qv[g][k], c[k], s[g][r]);
            }
        }
#pragma GCC unroll 4
        for (int g = 0; g < G; g++)
            _mm512_storeu_ps(out + g * out_stride + i, _mm512_mul_ps(hsum16x16(s[g]), _mm512_set1_ps(scale)));
    }
    return i;
}

/* For G heads (weights w + g w_stride, outputs y + g hd; G M <= 16, constants at each call):
 * y[0, 16 M) += sum_i w[i] rows[i][k0, k0 + 16 M) in G M accumulators. A row's M vectors load
 * (and widen) once for all G heads, and each head's FMA chains, in row order, are its chains
 * alone (one head's M = 4 chains also waited on the FMA latency, G of them do not). */
ENG_INLINE void axpy_rows16(const int type, const int M, const int G, const float *w, size_t w_stride, const void *rows,
                            int n, int hd, int k0, float *y)
{
    __m512 acc[ENG_DOT_HEADS][8];
#pragma GCC unroll 4
    for (int g = 0; g < G; g++)
        load_floats16(y + g * hd, M, acc[g]);
    for (int i = 0; i < n; i++) {
        const void *r = row_at(type, rows, i, hd);
        __m512 c[8];
#pragma GCC unroll 8
        for (int j = 0; j < M; j++)
            c[j] = load16f(type, r, k0 + 16 * j);
#pragma GCC unroll 4
        for (int g = 0; g < G; g++) {
            const __m512 wv = _mm512_set1_ps(w[g * w_stride + i]);
#pragma GCC unroll 8
            for (int j = 0; j < M; j++)
                acc[g][j] = _mm512_fmadd_ps(wv, c[j], acc[g][j]);
        }
    }
#pragma GCC unroll 4
    for (int g = 0; g < G; g++)
#pragma GCC unroll 8
        for (int j = 0; j < M; j++)
            _mm512_storeu_ps(y + g * hd + 16 * j, acc[g][j]);
}

/* How many of the nh - h heads left the fused kernels take next at head size hd: as many as fit
 * in 16 accumulators (4 at 64, 2 at 128), or 1 */
ENG_INLINE int heads_together(int nh, int h, int hd)
{
    const int fit = hd == 64 ? 4 : hd == 128 ? 2 : 1;
    return nh - h < fit ? nh - h : fit;
}
#endif

/* y += sum_i w[i] rows[i], 64 elements of y in registers at a time across all the rows (128 on
 * zmm). Each element's sum is the same chain of FMAs, in row order, whatever the vector width. */
ENG_INLINE void axpy_rows(const int type, const float *w, const void *rows, int n, int hd, float *y)
{
#if ENG_X86_VNNI
    if (hd % 16 == 0) {
        int k0 = 0;
        for (; k0 + 128 <= hd; k0 += 128)
            axpy_rows16(type, 8, 1, w, 0, rows, n, hd, k0, y + k0);
        switch ((hd - k0) / 16) { /* head sizes 64 and 128 take one call */
        case 1: axpy_rows16(type, 1, 1, w, 0, rows, n, hd, k0, y + k0); break;
        case 2: axpy_rows16(type, 2, 1, w, 0, rows, n, hd, k0, y + k0); break;
        case 3: axpy_rows16(type, 3, 1, w, 0, rows, n, hd, k0, y + k0); break;
        case 4: axpy_rows16(type, 4, 1, w, 0, rows, n, hd, k0, y + k0); break;
        case 5: axpy_rows16(type, 5, 1, w, 0, rows, n, hd, k0, y + k0); break;
        case 6: axpy_rows16(type, 6, 1, w, 0, rows, n, hd, k0, y + k0); break;
        case 7: axpy_rows16(type, 7, 1, w, 0, rows, n, hd, k0, y + k0); break;
        default: break;
        }
        return;
    }
#endif
    if (hd % 8 != 0) {
        for (int i = 0; i < n; i++)
            axpy_t(type, w[i], row_at(type, rows, i, hd), y, hd);
        return;
    }
    for (int k0 = 0; k0 < hd; k0 += 64) {
        const int m = hd - k0 < 64 ? (hd - k0) / 8 : 8;
        __m256 acc[8];
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            acc[j] = j < m ? _mm256_loadu_ps(y + k0 + 8 * j) : _mm256_setzero_ps();
        for (int i = 0; i < n; i++) {
            const void *r = row_at(type, rows, i, hd);
            __m256 wv = _mm256_set1_ps(w[i]);
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++)
                if (j < m)
                    acc[j] = _mm256_fmadd_ps(wv, load8f(type, r, k0 + 8 * j), acc[j]);
        }
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            if (j < m)
                _mm256_storeu_ps(y + k0 + 8 * j, acc[j]);
    }
}

/* nh heads, G at a time (heads_together): on AVX-512 groups of 16 rows by dot_rows16 for head
 * sizes 16..128 in steps of 16 (several heads at once at 64 and 128); the rest of the rows (and
 * other sizes, and AVX2) 4 rows at a time, head by head */
#define ENG_DOT16(NC, G) dot_rows16(type, NC, G, q + h * hd, rows, n, hd, scale, out + h * out_stride, out_stride)
ENG_INLINE void dot_rows_heads(const int type, const float *q, int nh, const void *rows, int n, int hd, float scale,
                               float *out, size_t out_stride)
{
    for (int h = 0, g = 1; h < nh; h += g) {
        int done = 0;
#if ENG_X86_VNNI
        g = heads_together(nh, h, hd);
        switch (hd % 16 == 0 ? hd / 16 * 8 + g : 0) { /* (NC, G) */
        case 1 * 8 + 1: done = ENG_DOT16(1, 1); break;
        case 2 * 8 + 1: done = ENG_DOT16(2, 1); break;
        case 3 * 8 + 1: done = ENG_DOT16(3, 1); break;
        case 4 * 8 + 1: done = ENG_DOT16(4, 1); break;
        case 5 * 8 + 1: done = ENG_DOT16(5, 1); break;
        case 6 * 8 + 1: done = ENG_DOT16(6, 1); break;
        case 7 * 8 + 1: done = ENG_DOT16(7, 1); break;
        case 8 * 8 + 1: done = ENG_DOT16(8, 1); break;
        case 4 * 8 + 2: done = ENG_DOT16(4, 2); break;
        case 4 * 8 + 3: done = ENG_DOT16(4, 3); break;
        case 4 * 8 + 4: done = ENG_DOT16(4, 4); break;
        case 8 * 8 + 2: done = ENG_DOT16(8, 2); break;
        default: g = 1; break;
        }
#endif
        for (int j = h; j < h + g; j++)
            dot_rows(type, q + j * hd, row_at(type, rows, done, hd), n - done, hd, scale, out + j * out_stride + done);
    }
}
#undef ENG_DOT16

ENG_INLINE void axpy_rows_heads(const int type, const float *w, size_t w_stride, int nh, const void *rows, int n, int hd,
                                float *y)
{
    for (int h = 0, g = 1; h < nh; h += g) {
        g = 1;
#if ENG_X86_VNNI
        g = heads_together(nh, h, hd);
        switch (hd / 16 * 8 + g) {
        case 4 * 8 + 2: axpy_rows16(type, 4, 2, w + h * w_stride, w_stride, rows, n, hd, 0, y + h * hd); continue;
        case 4 * 8 + 3: axpy_rows16(type, 4, 3, w + h * w_stride, w_stride, rows, n, hd, 0, y + h * hd); continue;
        case 4 * 8 + 4: axpy_rows16(type, 4, 4, w + h * w_stride, w_stride, rows, n, hd, 0, y + h * hd); continue;
        case 8 * 8 + 2: axpy_rows16(type, 8, 2, w + h * w_stride, w_stride, rows, n, hd, 0, y + h * hd); continue;
        default: g = 1; break;
        }
#endif
        axpy_rows(type, w + h * w_stride, rows, n, hd, y + h * hd);
    }
}

static void dot_rows_f32(const float *q, int nh, const float *rows, int n, int hd, float scale, float *out,
                         size_t out_stride)
{
    dot_rows_heads(ENG_T_F32, q, nh, rows, n, hd, scale, out, out_stride);
}

static void dot_rows_f16(const float *q, int nh, const uint16_t *rows, int n, int hd, float scale, float *out,
                         size_t out_stride)
{
    dot_rows_heads(ENG_T_F16, q, nh, rows, n, hd, scale, out, out_stride);
}

static void axpy_rows_f32(const float *w, size_t w_stride, int nh, const float *rows, int n, int hd, float *y)
{
    axpy_rows_heads(ENG_T_F32, w, w_stride, nh, rows, n, hd, y);
}

static void axpy_rows_f16(const float *w, size_t w_stride, int nh, const uint16_t *rows, int n, int hd, float *y)
{
    axpy_rows_heads(ENG_T_F16, w, w_stride, nh, rows, n, hd, y);
}

static void dot_rows_i8(const float *q, int nh, const int8_t *rows, int n, int hd, float scale, float *out,
                        size_t out_stride)
{
    dot_rows_heads(ENG_CPU_T_I8, q, nh, rows, n, hd, scale, out, out_stride);
}

static void axpy_rows_i8(const float *w, size_t w_stride, int nh, const int8_t *rows, int n, int hd, float *y)
{
    axpy_rows_heads(ENG_CPU_T_I8, w, w_stride, nh, rows, n, hd, y);
}

static void i8_to_f32(const int8_t *x, float *y, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, load8f(ENG_CPU_T_I8, x, i));
    for (; i < n; i++)
        y[i] = (float)x[i];
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

static void to_f32(const uint16_t *x, float *y, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
    for (; i < n; i++)
        y[i] = eng_f16_to_f32(x[i]);
}

#if ENG_X86_VNNI
ENG_INLINE __m256 high8(__m512 v) /* lanes 8..15 (AVX-512F alone: no extractf32x8) */
{
    return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
}
#endif

/* AVX-512 takes 16 elements a step (the exponentials are exp8's per element; the sum's order
 * differs, so the two tables' sums can differ in the last bits) */
static float exp_sum(float *x, int n)
{
    __m256 m8 = _mm256_set1_ps(-INFINITY);
    int i = 0;
#if ENG_X86_VNNI
    __m512 m16 = _mm512_set1_ps(-INFINITY);
    for (; i + 16 <= n; i += 16)
        m16 = _mm512_max_ps(m16, _mm512_loadu_ps(x + i));
    m8 = _mm256_max_ps(_mm512_castps512_ps256(m16), high8(m16));
#endif
    for (; i + 8 <= n; i += 8)
        m8 = _mm256_max_ps(m8, _mm256_loadu_ps(x + i));
    float max = hmax8(m8);
    for (; i < n; i++)
        max = x[i] > max ? x[i] : max;
    __m256 mv = _mm256_set1_ps(max), s = _mm256_setzero_ps();
    i = 0;
#if ENG_X86_VNNI
    const __m512 mv16 = _mm512_set1_ps(max);
    __m512 s16 = _mm512_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), mv16));
        _mm512_storeu_ps(x + i, e);
        s16 = _mm512_add_ps(s16, e);
    }
    s = _mm256_add_ps(_mm512_castps512_ps256(s16), high8(s16));
#endif
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


/* SiLU(g) * u; AVX-512 takes 16 elements a step where AVX2 takes two times 8, with the same
 * operations per element (and the same scalar tail), so both give bitwise the same values */
static void silu_mul(float *g, const float *u, int n)
{
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    int i = 0;
#if ENG_X86_VNNI
    for (; i + 16 <= n; i += 16) {
        __m512 gv = _mm512_loadu_ps(g + i);
        __m512 den = _mm512_add_ps(_mm512_set1_ps(1.0f), exp16(_mm512_sub_ps(_mm512_setzero_ps(), gv)));
        _mm512_storeu_ps(g + i, _mm512_mul_ps(_mm512_div_ps(gv, den), _mm512_loadu_ps(u + i)));
    }
#endif
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
    .pack16 = 1, /* AVX2 reads the packed groups as two 8-row halves (load_packed8) */
    .dot_f32 = dot_f32,
    .axpy_f32 = axpy_f32,
    .dot_rows_f32 = dot_rows_f32,
    .dot_rows_f16 = dot_rows_f16,
    .axpy_rows_f32 = axpy_rows_f32,
    .axpy_rows_f16 = axpy_rows_f16,
    .dot_rows_i8 = dot_rows_i8,
    .axpy_rows_i8 = axpy_rows_i8,
    .to_f16 = to_f16,
    .to_f32 = to_f32,
    .i8_to_f32 = i8_to_f32,
    .exp_sum = exp_sum,
    .silu_mul = silu_mul,
};
