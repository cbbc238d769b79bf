/* sampler.c — token selection from a logits row (pipeline in sampler.h) and stop-string scanning.
 *
 * Cost per call: one copy of the row, O(window) for penalties, O(V) for greedy or top-k
 * selection (quickselect), O(V) exps for the softmax when top-k is off, and for top-p a partial
 * sort of a prefix that grows 4x at a time until it holds the nucleus (usually a few hundred
 * tokens). The full 49,152-entry row is never sorted.
 */
#include "sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/vector_clones.h"
#include "sched/status.h"

struct eng_sampler_ws {
    int vocab;
    float *val;     /* penalised, tempered logits, then probabilities */
    int32_t *idx;   /* candidate token ids */
    int32_t *count; /* occurrences in the penalty window, zero between calls */
    int32_t *pen;   /* eng_sampler_sample's (token, count) pairs: 2 vocab entries */
};

eng_sampler_params_t eng_sampler_params_default(void)
{
    return (eng_sampler_params_t){.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f,
                                  .repetition_penalty = 1.0f, .repetition_last_n = 64,
                                  .frequency_penalty = 0.0f, .presence_penalty = 0.0f, .seed = 0};
}

void eng_sampler_init(eng_sampler_t *s, const eng_sampler_params_t *p)
{
    s->p = *p;
    s->rng = p->seed;
}

eng_sampler_ws_t *eng_sampler_ws_create(int vocab)
{
    if (vocab <= 0) return NULL;
    eng_sampler_ws_t *ws = sl_calloc(1, sizeof *ws);
    if (!ws) return NULL;
    ws->vocab = vocab;
    ws->val = sl_malloc((size_t)vocab * sizeof *ws->val);
    ws->idx = sl_malloc((size_t)vocab * sizeof *ws->idx);
    ws->count = sl_calloc((size_t)vocab, sizeof *ws->count);
    ws->pen = sl_malloc(2 * (size_t)vocab * sizeof *ws->pen);
    if (!ws->val || !ws->idx || !ws->count || !ws->pen) {
        eng_sampler_ws_free(ws);
        return NULL;
    }
    return ws;
}

void eng_sampler_ws_free(eng_sampler_ws_t *ws)
{
    if (!ws) return;
    sl_free(ws->val);
    sl_free(ws->idx);
    sl_free(ws->count);
    sl_free(ws->pen);
    sl_free(ws);
}

/* splitmix64 -> uniform double in [0, 1) */
static double uniform(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1p-53;
}

static bool penalises(const eng_sampler_params_t *p)
{
    return p->repetition_penalty != 1.0f || p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f;
}

/* The window a sequence's penalties see: its last tokens. */
static int window(const eng_sampler_params_t *p, int n_prev)
{
    return p->repetition_last_n < 0 || p->repetition_last_n > n_prev ? n_prev : p->repetition_last_n;
}

int eng_sampler_max_pairs(const eng_sampler_t *s, int n_prev)
{
    return penalises(&s->p) ? window(&s->p, n_prev) : 0;
}

/* Appends the distinct in-range tokens of the window with their counts at pen[2 off ...]. */
static int window_pairs(const eng_sampler_params_t *p, eng_sampler_ws_t *ws, const int32_t *prev, int n_prev,
                        int32_t *pen, int off)
{
    if (!penalises(p))
        return 0;
    int n = window(p, n_prev), k = 0;
    const int32_t *w = prev + (n_prev - n);
    for (int i = 0; i < n; i++)
        if (w[i] >= 0 && w[i] < ws->vocab) ws->count[w[i]]++;
    for (int i = 0; i < n; i++) {
        int32_t t = w[i];
        if (t < 0 || t >= ws->vocab || ws->count[t] == 0) continue; /* done (or out of range) */
        pen[2 * (off + k)] = t;
        pen[2 * (off + k) + 1] = ws->count[t];
        k++;
        ws->count[t] = 0; /* each token once; leaves the counts zeroed */
    }
    return k;
}

static void penalise(const eng_sample_row_t *r, const int32_t *pen, float *val)
{
    for (int i = 0; i < r->n_pen; i++) {
        const int32_t *pair = pen + 2 * (r->pen_off + i);
        float *v = &val[pair[0]];
        if (r->repetition_penalty != 1.0f) *v = *v > 0 ? *v / r->repetition_penalty : *v * r->repetition_penalty;
        *v -= r->frequency_penalty * (float)pair[1] + r->presence_penalty;
    }
}

/* The canonical order of candidates: larger value first, ties to the lower token id. */
static inline bool above(const float *val, int32_t a, int32_t b)
{
    return val[a] > val[b] || (val[a] == val[b] && a < b);
}

/* Orders idx[lo..hi) so that its k first (by `above`) come first. */
static void select_top(const float *val, int32_t *idx, int lo, int hi, int k)
{
    while (hi - lo > 1) {
        int32_t a = idx[lo], b = idx[lo + (hi - lo) / 2], c = idx[hi - 1];
        int32_t pivot = above(val, b, a) ? (above(val, c, b) ? b : (above(val, c, a) ? c : a))
                                         : (above(val, c, a) ? a : (above(val, c, b) ? c : b));
        int i = lo, j = hi - 1;
        while (i <= j) { /* Hoare partition, descending */
            while (above(val, idx[i], pivot)) i++;
            while (above(val, pivot, idx[j])) j--;
            if (i <= j) {
                int32_t t = idx[i];
                idx[i++] = idx[j];
                idx[j--] = t;
            }
        }
        if (k <= j + 1) hi = j + 1;
        else if (k >= i) lo = i;
        else return;
    }
}

/* Sorts idx[lo..hi) by `above` (insertion sort for short runs, else select + recurse). */
static void sort_desc(const float *val, int32_t *idx, int lo, int hi)
{
    if (hi - lo <= 16) {
        for (int i = lo + 1; i < hi; i++) {
            int32_t t = idx[i];
            int j = i;
            for (; j > lo && above(val, t, idx[j - 1]); j--) idx[j] = idx[j - 1];
            idx[j] = t;
        }
        return;
    }
    int mid = lo + (hi - lo) / 2;
    select_top(val, idx, lo, hi, mid);
    sort_desc(val, idx, lo, mid);
    sort_desc(val, idx, mid, hi);
}

/* Row passes over the vocabulary, 16 lanes at a time (a sampled token costs several: 49,152 logits
 * each, on every sequence of a batched step). Comparisons with NaN are false, so NaN never wins. */

/* take ? a : b per lane (macros: a function returning a vector changes the ABI in the
 * non-AVX clones) */
#define PICK16(take, a, b) ((vec16f)(((take) & (vec16i)(a)) | (~(take) & (vec16i)(b))))

/* The first index of the largest finite-or-+inf value of v (NaN and -inf never win), -1 when
 * there is none, and that value in *max (-inf when none). With dst, also copies v there with every
 * NaN made -inf, in the same pass (a sampled token's row is 49,152 logits: each pass over it
 * counts). Each lane keeps its first maximum; of the lanes' maxima the largest wins, a tie going
 * to the lower index; the tail (higher indices) wins only when strictly larger. */
ENG_VECTOR_CLONES static int argmax(const float *v, int n, float *dst, float *max)
{
    const vec16f ninf = (vec16f){0} - INFINITY;
    vec16f m = ninf;
    vec16i at = (vec16i){0} - 1, idx = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    int i = 0;
    for (; i + 16 <= n; i += 16, idx += 16) {
        vec16f y;
        memcpy(&y, v + i, sizeof y);
        if (dst) {
            y = PICK16(y == y, y, ninf);
            memcpy(dst + i, &y, sizeof y);
        }
        vec16i gt = y > m;
        m = PICK16(gt, y, m);
        at = (gt & idx) | (~gt & at);
    }
    float bv = -INFINITY;
    int best = -1;
    for (int j = 0; j < 16; j++)
        if (m[j] > bv || (m[j] == bv && at[j] >= 0 && at[j] < best))
            bv = m[j], best = at[j];
    for (; i < n; i++) {
        if (dst)
            dst[i] = isnan(v[i]) ? -INFINITY : v[i];
        if (v[i] > bv) bv = v[i], best = i;
    }
    *max = bv;
    return best;
}

/* sum of exp(x[i] - mx) over n values <= mx (NaN counts as 0), 16 lanes at a time: exp(y) =
 * 2^k e^r with k = round(y / ln 2) (into the exponent bits) and e^r by a degree-6 polynomial,
 * relative error ~1e-7. A row of 49,152 logits took ~0.9 ms with libm's exp per element, which
 * the engine thread paid for every sampled token (it reports every token's logprob). */
ENG_VECTOR_CLONES static double sum_exp(const float *x, int n, float mx)
{
    const vec16f floor_ = (vec16f){0} - 87.0f;
    vec16f acc = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        vec16f y;
        memcpy(&y, x + i, sizeof y);
        y -= mx;
        vec16i keep = y > floor_; /* false for NaN */
        y = (vec16f)((keep & (vec16i)y) | (~keep & (vec16i)floor_));
        vec16i k = __builtin_convertvector(y * 1.44269504f - 0.5f, vec16i); /* y <= 0: round to nearest */
        vec16f kf = __builtin_convertvector(k, vec16f);
        vec16f r = y - kf * 0.693359375f + kf * 2.12194440e-4f;
        vec16f p = (vec16f){0} + 1.3981999507e-3f;
        p = p * r + 8.3334519073e-3f;
        p = p * r + 4.1665795894e-2f;
        p = p * r + 1.6666665459e-1f;
        p = p * r + 5.0000001201e-1f;
        p = p * r * r + r + 1.0f;
        vec16i bits = (k + 127) << 23;
        vec16f scale;
        memcpy(&scale, &bits, sizeof scale);
        acc += p * scale;
    }
    double sum = 0;
    for (int j = 0; j < 16; j++)
        sum += acc[j];
    for (; i < n; i++)
        if (!isnan(x[i])) sum += exp((double)x[i] - mx);
    return sum;
}

/* log-softmax of the raw row at token, mx the row's largest value (NaN ignored) */
static float raw_logprob(const float *logits, int vocab, float mx, int32_t token)
{
    return (float)((double)logits[token] - mx - log(sum_exp(logits, vocab, mx)));
}

static int by_id(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Greedy also when 1 / temperature overflows (a temperature in the float denormals): the scaled
 * logits would be infinite and no probability finite. The CUDA sampler uses the same test. */
static bool samples(float temperature, int top_k)
{
    return temperature > 0 && isfinite(1.0f / temperature) && top_k != 1;
}

int eng_sampler_prepare(eng_sampler_t *s, eng_sampler_ws_t *ws, const int32_t *prev, int n_prev,
                        eng_sample_row_t *row, int32_t *pen, int pen_off)
{
    const eng_sampler_params_t *p = &s->p;
    int n = window_pairs(p, ws, prev, n_prev, pen, pen_off);
    *row = (eng_sample_row_t){.temperature = p->temperature, .top_k = p->top_k, .top_p = p->top_p,
                              .min_p = p->min_p, .repetition_penalty = p->repetition_penalty,
                              .frequency_penalty = p->frequency_penalty,
                              .presence_penalty = p->presence_penalty, .pen_off = pen_off, .n_pen = n,
                              .u = samples(p->temperature, p->top_k) ? uniform(&s->rng) : 0};
    return n;
}

int eng_sample_rows_check(const eng_sample_row_t *rows, int n_rows, const int32_t *pen, int n_pen,
                          int vocab, char *err, int errlen)
{
    if (n_pen < 0 || (n_pen > 0 && !pen)) {
        snprintf(err, (size_t)errlen, "%d penalty pairs", n_pen);
        return SL_EINVAL;
    }
    for (int j = 0; j < n_pen; j++)
        if (pen[2 * j] < 0 || pen[2 * j] >= vocab) {
            snprintf(err, (size_t)errlen, "pair %d names token %d outside the vocabulary of %d", j,
                     pen[2 * j], vocab);
            return SL_EINVAL;
        }
    for (int r = 0; r < n_rows; r++)
        if (rows[r].pen_off < 0 || rows[r].n_pen < 0 || rows[r].pen_off > n_pen - rows[r].n_pen) {
            snprintf(err, (size_t)errlen, "row %d's pairs [%d, +%d) are outside the %d given", r,
                     rows[r].pen_off, rows[r].n_pen, n_pen);
            return SL_EINVAL;
        }
    return SL_OK;
}

int eng_sampler_pick(eng_sampler_ws_t *ws, const float *logits, const eng_sample_row_t *row,
                     const int32_t *pen, int32_t *token, float *logprob)
{
    int V = ws->vocab;
    float *val = ws->val, raw_max, max;
    int best = argmax(logits, V, val, &raw_max); /* val: the logits, NaN as -inf */
    if (row->n_pen > 0) {
        penalise(row, pen, val);
        best = argmax(val, V, NULL, &max);
    }
    if (best < 0) return SL_EINVAL;
    int32_t chosen = best;
    if (samples(row->temperature, row->top_k)) {
        int32_t *idx = ws->idx;
        int n = V;
        bool reordered = false;
        for (int i = 0; i < V; i++) idx[i] = i;
        if (row->top_k > 0 && row->top_k < n) {
            select_top(val, idx, 0, n, row->top_k);
            n = row->top_k;
            reordered = true;
        }
        /* probabilities (unnormalised, top = 1) in place of the logits of the candidates */
        float mx = val[best], inv_t = 1.0f / row->temperature;
        double sum = 0;
        for (int i = 0; i < n; i++) sum += val[idx[i]] = expf((val[idx[i]] - mx) * inv_t);
        if (row->top_p < 1.0f) { /* grow a sorted prefix until it holds top_p of the mass */
            int sorted = 0;
            double mass = 0, want = (double)row->top_p * sum;
            for (int m = 64;; m *= 4) {
                int end = m < n ? m : n;
                select_top(val, idx, sorted, n, end);
                sort_desc(val, idx, sorted, end);
                for (; sorted < end; sorted++) {
                    mass += val[idx[sorted]];
                    if (mass >= want) break;
                }
                if (sorted < end || end == n) {
                    n = sorted < end ? sorted + 1 : n;
                    break;
                }
            }
            reordered = true;
        }
        if (row->min_p > 0) { /* the top probability is 1 here; keeps the order */
            int k = 0;
            for (int i = 0; i < n; i++)
                if (val[idx[i]] >= row->min_p) idx[k++] = idx[i];
            n = k; /* the top token always survives: min_p <= 1 */
        }
        if (reordered) qsort(idx, (size_t)n, sizeof *idx, by_id); /* the draw walks token ids */
        sum = 0;
        for (int i = 0; i < n; i++) sum += val[idx[i]];
        double r = row->u * sum, acc = 0;
        chosen = idx[n - 1];
        for (int i = 0; i < n; i++) {
            acc += val[idx[i]];
            if (r < acc) {
                chosen = idx[i];
                break;
            }
        }
    }
    *token = chosen;
    if (logprob) *logprob = raw_logprob(logits, V, raw_max, chosen);
    return SL_OK;
}

int eng_sampler_sample(eng_sampler_t *s, eng_sampler_ws_t *ws, const float *logits, const int32_t *prev,
                       int n_prev, int32_t *token, float *logprob)
{
    eng_sample_row_t row;
    eng_sampler_prepare(s, ws, prev, n_prev, &row, ws->pen, 0);
    return eng_sampler_pick(ws, logits, &row, ws->pen, token, logprob);
}

/* ---------------------------------------------------------------- stop strings ---------------- */

int eng_stop_scan(const char *text, size_t len, const char *const *stops, int n_stops, size_t *emit_len)
{
    size_t first = len;
    int found = 0;
    for (int i = 0; i < n_stops; i++) {
        size_t sl = strlen(stops[i]);
        if (sl == 0 || sl > len) continue;
        for (size_t at = 0; at + sl <= len && at < first; at++)
            if (memcmp(text + at, stops[i], sl) == 0) {
                first = at;
                found = 1;
                break;
            }
    }
    if (found) {
        *emit_len = first;
        return 1;
    }
    size_t safe = len;
    for (int i = 0; i < n_stops; i++) { /* hold back a suffix that may grow into a stop string */
        size_t sl = strlen(stops[i]);
        for (size_t k = sl > len + 1 ? len : sl - (sl > 0); k > 0; k--)
            if (memcmp(text + len - k, stops[i], k) == 0) {
                if (len - k < safe) safe = len - k;
                break;
            }
    }
    /* hold back an incomplete UTF-8 sequence at the end */
    size_t back = 0;
    while (back < 3 && back < safe && ((uint8_t)text[safe - 1 - back] & 0xc0) == 0x80) back++;
    if (back < safe) {
        uint8_t lead = (uint8_t)text[safe - 1 - back];
        int need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
        if (need > (int)back + 1) safe -= back + 1;
    }
    *emit_len = safe;
    return 0;
}
