/* bench_cuda.c — the CUDA backend's correctness check against the CPU backend, and its benchmark.
 *
 *   bench_cuda check MODEL [CSV]   (MODEL: a GGUF path or synthetic:SHAPE[:TYPE]) CPU and CUDA
 *       backends run the same steps (three sequences: prefill, a chunked prefill on top of cached
 *       context, then 40 decode steps fed with the CPU's greedy tokens): every logits row within
 *       2e-2 relative (||a-b|| / ||b||), every greedy token equal (the CUDA argmax of
 *       forward_greedy, and of its own logits). Quantised weights: the CPU backend quantises its
 *       activations to 8-bit blocks for them (as llama.cpp does) and CUDA does not, so the
 *       reference is the CPU backend on the same weights dequantised to F32 (the function CUDA
 *       computes); the CPU on the quantised weights is reported as info. Synthetic (random)
 *       weights give nearly flat logits where argmax ties flip on rounding: there the greedy
 *       target counts only flips beyond noise (CUDA's token below the CPU's best by more than
 *       5x the row's rms logit difference); every flip is reported as info.
 *       Then GEMV vs cuBLAS: the same decode step with the projections forced onto each path,
 *       logits within 5e-3 relative (both fp16 in, fp32 accumulate).
 *   bench_cuda perf [SHAPE] [CSV]       a shape-only model (weights generated on the device; default
 *       llama2-7b): decode tok/s at batch 1 (context 128), TTFT for 128/512/2048-token prompts,
 *       decode tok/s at batch 8..256 with contexts 256..2048; medians of repeated steps. Before
 *       them: the GEMV-vs-cuBLAS logits check at batch 1 and 8, the small-M projection choice
 *       the backend made, and a profile (device time per kind: projections, attention, the
 *       rest) of a batch-1 decode step and of 512- and 2048-token prefills (CSV info rows).
 *       After the targets are timed (reported last all the same): the sampling cost rows and the
 *       wide FA2 tiles' agreement, TTFT and profile, code that may not have run on a GPU yet.
 * Each result is printed and appended to CSV as "name,measured,unit,target,cmp,result" (cmp is
 * ">=", "<=" or "info"). Exit status: 0 when every targeted result passes, 1 when one fails, 2 on
 * an error (no device, bad model).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/backend.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/model.h"
#include "engine/quant.h"
#include "sched/status.h"

#define BS 16

typedef struct out {
    FILE *csv;  /* the CSV results are appended to (NULL: none) */
    int failed; /* a targeted result missed */
} out_t;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void report(out_t *o, const char *name, double v, const char *unit, double target, const char *cmp) {
    const char *res = "info";
    if (strcmp(cmp, ">=") == 0)
        res = v >= target ? "PASS" : "FAIL";
    else if (strcmp(cmp, "<=") == 0)
        res = v <= target ? "PASS" : "FAIL";
    if (strcmp(res, "FAIL") == 0)
        o->failed = 1;
    printf("%-34s %12.4g %-6s %s %-10g %s\n", name, v, unit, cmp, target, res);
    fflush(stdout);
    if (o->csv) {
        fprintf(o->csv, "%s,%.6g,%s,%g,%s,%s\n", name, v, unit, target, cmp, res);
        fflush(o->csv);
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

static double rel_err(const float *a, const float *ref, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* ---- check: CPU vs CUDA ------------------------------------------------------------------------ */

enum { NSEQ = 3, MAXTOK = 160, DECODE_STEPS = 40 };

typedef struct seqstate {
    int32_t toks[MAXTOK];
    int32_t bt[MAXTOK / BS + 1];
    int n; /* tokens in the sequence so far (prompt + generated) */
} seqstate_t;

typedef struct cmp {
    double max_err; /* max relative error of a logits row (NaN sticks) */
    int flips;      /* greedy tokens that differ */
    int flips_beyond_noise; /* ... where CUDA's token is below the reference's best by more than
                               5x the row's rms logit difference */
} cmp_t;

static void compare_rows(const float *got, const float *ref, const int32_t *ids, int rows,
                         int vocab, cmp_t *c) {
    for (int r = 0; r < rows; r++) {
        const float *g = got + (size_t)r * vocab, *f = ref + (size_t)r * vocab;
        double e = rel_err(g, f, vocab);
        if (!(e <= c->max_err))
            c->max_err = e;
        int a = argmax(f, vocab), b = argmax(g, vocab);
        int pick = ids && ids[r] != a ? ids[r] : b;
        if (b != a || (ids && ids[r] != a)) {
            double d2 = 0;
            for (int i = 0; i < vocab; i++)
                d2 += ((double)g[i] - f[i]) * ((double)g[i] - f[i]);
            c->flips++;
            if ((double)f[a] - f[pick] > 5.0 * sqrt(d2 / vocab))
                c->flips_beyond_noise++;
        }
    }
}

/* Runs one step on the reference, CUDA (logits and greedy) and, when given, the info backend;
 * compares every logits row; returns rows or -1 on error. lc receives the reference logits. */
static int both(eng_backend_t *cpu, eng_backend_t *cpu_info, eng_backend_t *cuda,
                const eng_batch_t *b, float *lc, float *lq, float *lg, int32_t *ids, int vocab,
                cmp_t *ref, cmp_t *info) {
    int rc_rows = 0, rg_rows = 0, ri_rows = 0, rq_rows = 0;
    if (cpu->ops->forward(cpu, b, lc, &rc_rows) != SL_OK ||
        (cpu_info && cpu_info->ops->forward(cpu_info, b, lq, &rq_rows) != SL_OK)) {
        fprintf(stderr, "cpu forward: %s\n", cpu->ops->errmsg(cpu));
        return -1;
    }
    if (cuda->ops->forward(cuda, b, lg, &rg_rows) != SL_OK ||
        cuda->ops->forward_greedy(cuda, b, ids, &ri_rows) != SL_OK) {
        fprintf(stderr, "cuda forward: %s\n", cuda->ops->errmsg(cuda));
        return -1;
    }
    if (rc_rows != rg_rows || rg_rows != ri_rows || (cpu_info && rq_rows != rc_rows)) {
        fprintf(stderr, "row counts differ: cpu %d, cuda %d, cuda greedy %d\n", rc_rows, rg_rows,
                ri_rows);
        return -1;
    }
    compare_rows(lg, lc, ids, rc_rows, vocab, ref);
    if (cpu_info)
        compare_rows(lg, lq, NULL, rc_rows, vocab, info);
    return rc_rows;
}

/* The same batch through CUDA with every small-M projection on cuBLAS, then on the GEMV kernel:
 * logits within 5e-3 relative; then the GEMV kernel without its fusions (SLUICE_CUDA_FUSE=off:
 * separate RMSNorm and SiLU*mul kernels) and each other GEMV variant, which must give the same
 * bits. Leaves the backend in AUTO mode (re-timed) with the environment's fusion path. -1 on
 * error. */
static int gemv_vs_cublas(out_t *o, eng_backend_t *cuda, const eng_batch_t *b, int vocab,
                          const char *label) {
    const size_t bytes = (size_t)b->n_seqs * vocab * 4;
    float *la = malloc(bytes), *lb = malloc(bytes), *lf = malloc(bytes);
    int ra = 0, rb = 0, rf = 0, rc = -1;
    if (la && lb && lf && eng_cuda_set_gemv_mode(cuda, ENG_CUDA_GEMV_CUBLAS) == SL_OK &&
        cuda->ops->forward(cuda, b, la, &ra) == SL_OK &&
        eng_cuda_set_gemv_mode(cuda, ENG_CUDA_GEMV_FORCE) == SL_OK &&
        cuda->ops->forward(cuda, b, lb, &rb) == SL_OK && ra == rb &&
        eng_cuda_set_path(cuda, ENG_CUDA_PATH_FUSE, 1) == SL_OK &&
        cuda->ops->forward(cuda, b, lf, &rf) == SL_OK &&
        eng_cuda_set_path(cuda, ENG_CUDA_PATH_FUSE, -1) == SL_OK && rf == rb) {
        cmp_t c = {0, 0, 0}, f = {0, 0, 0}, v = {0, 0, 0};
        compare_rows(lb, la, NULL, ra, vocab, &c);
        compare_rows(lb, lf, NULL, ra, vocab, &f);
        for (int k = 1; k < ENG_CUDA_GEMV_VARIANTS && rc == -1; k++) {
            if (eng_cuda_set_gemv_mode(cuda, ENG_CUDA_GEMV_FORCE + k) != SL_OK ||
                cuda->ops->forward(cuda, b, lf, &rf) != SL_OK || rf != rb)
                rc = -2;
            else
                compare_rows(lf, lb, NULL, rb, vocab, &v);
        }
        if (rc == -2 || eng_cuda_set_gemv_mode(cuda, ENG_CUDA_GEMV_AUTO) != SL_OK) {
            fprintf(stderr, "gemv variants: %s\n", cuda->ops->errmsg(cuda));
            rc = -1;
            goto out;
        }
        char name[96];
        snprintf(name, sizeof name, "gemv vs cublas %.40s b%d rel err", label, b->n_seqs);
        report(o, name, c.max_err, "", 5e-3, "<=");
        /* fused GEMVs (RMSNorm in, SiLU*mul out) vs separate kernels: the same bits */
        snprintf(name, sizeof name, "gemv fused vs unfused %.32s b%d rel err", label, b->n_seqs);
        report(o, name, f.max_err, "", 1e-6, "<=");
        /* the variants only schedule the loads differently */
        snprintf(name, sizeof name, "gemv variants vs gemv0 %.32s b%d rel err", label, b->n_seqs);
        report(o, name, v.max_err, "", 0, "<=");
        rc = 0;
    } else {
        fprintf(stderr, "gemv vs cublas: %s\n", cuda->ops->errmsg(cuda));
    }
out:
    free(la);
    free(lb);
    free(lf);
    return rc;
}

/* The prefill paths paths_agree compares with the first: the FA2 attention kernel vs the old WMMA
 * one, the 16-byte elementwise kernels vs the scalar ones, plain launches vs PDL, and last the wide
 * FA2 tiles (not yet run on a GPU when written, so checked after the timings a faulting kernel
 * would spoil). PDL and the wide tiles must not change a bit. */
typedef struct prefill_path {
    const char *what;
    int attn, scalar, no_pdl;
    double tol;
} prefill_path_t;
static const prefill_path_t prefill_paths[] = {{"fa2+vec", ENG_CUDA_PREFILL_FA2, 0, 0, 0},
                                               {"prefill attn old", ENG_CUDA_PREFILL_OLD, 0, 0, 5e-3},
                                               {"eltwise scalar", ENG_CUDA_PREFILL_FA2, 1, 0, 5e-3},
                                               {"prefill pdl off", ENG_CUDA_PREFILL_FA2, 0, 1, 0},
                                               {"prefill attn fa2w", ENG_CUDA_PREFILL_FA2W, 0, 0, 0}};
enum { PREFILL_PATHS_RUN = 4, PREFILL_PATHS = 5 }; /* [1, RUN): have run on a GPU; [RUN, end): new */
_Static_assert(sizeof prefill_paths / sizeof prefill_paths[0] == PREFILL_PATHS, "prefill_paths");

/* Prefill through prefill_paths[k0..k1) and through prefill_paths[0]: two sequences (300 and 150
 * tokens), then chunks of 212 and 100 on top of them (64- and 128-query tiles straddling cached
 * context), logits of every chunk token compared (each path's tolerance, relative). The
 * env-selected paths are restored after. -1 on error. */
static int paths_agree(out_t *o, eng_backend_t *cuda, const int32_t *toks, const int32_t *bt,
                       int max_blocks, int vocab, int k0, int k1, const char *label) {
    enum { NA = 300, NB = 150, CA = 212, CB = 100 };
    const size_t n = (size_t)(CA + CB) * vocab;
    float *ref = malloc(n * 4), *got = malloc(n * 4);
    int rc = -1;
    for (int i = 0; i <= k1 - k0 && ref && got; i++) {
        const int k = i == 0 ? 0 : k0 + i - 1;
        const prefill_path_t *v = &prefill_paths[k];
        if (eng_cuda_set_path(cuda, ENG_CUDA_PATH_PREFILL_ATTN, v->attn) != SL_OK ||
            eng_cuda_set_path(cuda, ENG_CUDA_PATH_ELTWISE, v->scalar) != SL_OK ||
            eng_cuda_set_path(cuda, ENG_CUDA_PATH_PDL, v->no_pdl) != SL_OK)
            goto out;
        eng_batch_seq_t q[2] = {{toks, NA, 0, bt, max_blocks, 1},
                                {toks + 7, NB, 0, bt + max_blocks, max_blocks, 0}};
        eng_batch_t b = {2, q, 0, NULL, NULL};
        int rows = 0;
        float *dst = k == 0 ? ref : got;
        if (cuda->ops->forward(cuda, &b, dst, &rows) != SL_OK)
            goto out;
        q[0] = (eng_batch_seq_t){toks + NA, CA, NA, bt, max_blocks, 2};
        q[1] = (eng_batch_seq_t){toks + 11, CB, NB, bt + max_blocks, max_blocks, 2};
        if (cuda->ops->forward(cuda, &b, dst, &rows) != SL_OK || rows != CA + CB)
            goto out;
        if (k > 0) {
            cmp_t c = {0, 0, 0};
            compare_rows(got, ref, NULL, rows, vocab, &c);
            char name[96];
            snprintf(name, sizeof name, "%s vs fa2+vec %.24s rel err", v->what, label);
            report(o, name, c.max_err, "", v->tol, "<=");
        }
    }
    rc = 0;
out:
    if (rc != 0)
        fprintf(stderr, "paths_agree: %s\n", cuda->ops->errmsg(cuda));
    eng_cuda_set_path(cuda, ENG_CUDA_PATH_PREFILL_ATTN, -1);
    eng_cuda_set_path(cuda, ENG_CUDA_PATH_ELTWISE, -1);
    eng_cuda_set_path(cuda, ENG_CUDA_PATH_PDL, -1);
    free(ref);
    free(got);
    return rc;
}

/* A copy of m whose weights are all F32 (quantised types dequantised); free with free_f32_copy. */
static int to_f32(eng_tensor_t *t) {
    if (!t->data || t->type == ENG_T_F32)
        return 0;
    int64_t n_in = t->ne[0], rows = t->n_dims > 1 ? t->ne[1] : 1;
    size_t rb = eng_type_row_bytes(t->type, n_in);
    float *d = malloc((size_t)(n_in * rows) * 4);
    if (!d || rb == 0) {
        free(d);
        return -1;
    }
    for (int64_t r = 0; r < rows; r++)
        if (eng_dequantize_row(t->type, (const char *)t->data + (size_t)r * rb, d + r * n_in,
                               n_in) != SL_OK) {
            free(d);
            return -1;
        }
    t->type = ENG_T_F32;
    t->data = d;
    t->nbytes = (size_t)(n_in * rows) * 4;
    return 0;
}

static void free_f32_copy(eng_model_t *c, const eng_model_t *m) {
    if (!c)
        return;
    if (c->tok_embd.data != m->tok_embd.data)
        free((void *)c->tok_embd.data);
    if (c->output.data != m->output.data && c->output.data != c->tok_embd.data)
        free((void *)c->output.data);
    for (int l = 0; c->layers && l < m->cfg.n_layers; l++) {
        const eng_tensor_t *a[] = {&c->layers[l].wq, &c->layers[l].wk, &c->layers[l].wv,
                                   &c->layers[l].wo, &c->layers[l].w_gate, &c->layers[l].w_up,
                                   &c->layers[l].w_down},
                           *b[] = {&m->layers[l].wq, &m->layers[l].wk, &m->layers[l].wv,
                                   &m->layers[l].wo, &m->layers[l].w_gate, &m->layers[l].w_up,
                                   &m->layers[l].w_down};
        for (int i = 0; i < 7; i++)
            if (a[i]->data != b[i]->data)
                free((void *)a[i]->data);
    }
    free(c->layers);
    free(c);
}

static eng_model_t *f32_copy(const eng_model_t *m) {
    eng_model_t *c = malloc(sizeof *c);
    if (!c)
        return NULL;
    *c = *m;
    c->layers = malloc((size_t)m->cfg.n_layers * sizeof *c->layers);
    int bad = !c->layers;
    if (!bad) {
        memcpy(c->layers, m->layers, (size_t)m->cfg.n_layers * sizeof *c->layers);
        int tied = m->output.data == m->tok_embd.data;
        bad = to_f32(&c->tok_embd) != 0;
        if (tied)
            c->output = c->tok_embd;
        else
            bad = bad || to_f32(&c->output) != 0;
        for (int l = 0; !bad && l < m->cfg.n_layers; l++) {
            eng_layer_t *L = &c->layers[l];
            bad = to_f32(&L->wq) || to_f32(&L->wk) || to_f32(&L->wv) || to_f32(&L->wo) ||
                  to_f32(&L->w_gate) || to_f32(&L->w_up) || to_f32(&L->w_down);
        }
    }
    if (bad) {
        free_f32_copy(c, m);
        return NULL;
    }
    return c;
}

static int is_quantised(eng_type_t t) {
    return t != ENG_T_F32 && t != ENG_T_F16 && t != ENG_T_BF16;
}

static int run_check(out_t *o, const char *path) {
    char err[512];
    eng_model_t *m = eng_model_load(path, err, sizeof err), *mf = NULL;
    if (!m) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    const int quant = is_quantised(m->layers[0].wq.type);
    const int synthetic = strncmp(path, "synthetic:", 10) == 0;
    if (quant && !(mf = f32_copy(m))) {
        fprintf(stderr, "%s: cannot dequantise the weights for the reference\n", path);
        eng_model_free(m);
        return 2;
    }
    eng_backend_params_t pc = eng_backend_params_default(), pg = pc;
    pg.gpu_memory_utilization = 0.5;
    eng_backend_t *cpu = eng_backend_create("cpu", mf ? mf : m, &pc, err, sizeof err), *cpu_q = NULL,
                  *cuda = NULL;
    if (cpu && mf)
        cpu_q = eng_backend_create("cpu", m, &pc, err, sizeof err);
    if (cpu && (!mf || cpu_q))
        cuda = eng_backend_create("cuda", m, &pg, err, sizeof err);
    const int vocab = m->cfg.vocab, nblk = NSEQ * (MAXTOK / BS + 1);
    int rc = 2;
    float *lc = malloc((size_t)MAXTOK * NSEQ * vocab * 4), *lg = malloc((size_t)MAXTOK * NSEQ * vocab * 4);
    float *lq = mf ? malloc((size_t)MAXTOK * NSEQ * vocab * 4) : NULL;
    int32_t *ids = malloc((size_t)MAXTOK * NSEQ * 4);
    if (!cuda) {
        fprintf(stderr, "%s\n", err);
        goto out;
    }
    if (!lc || !lg || !ids || (mf && !lq) || cpu->ops->kv_alloc(cpu, nblk, BS) != SL_OK ||
        (cpu_q && cpu_q->ops->kv_alloc(cpu_q, nblk, BS) != SL_OK) ||
        cuda->ops->kv_alloc(cuda, nblk, BS) != SL_OK) {
        fprintf(stderr, "setup failed: %s / %s\n", cpu->ops->errmsg(cpu), cuda->ops->errmsg(cuda));
        goto out;
    }
    char gr[2048];
    eng_cuda_gemv_report(cuda, gr, sizeof gr);
    printf("%s", gr);
    seqstate_t s[NSEQ];
    /* C spans two 64-query tiles and two 64-key tiles of the prefill kernel; its chunk attends
     * 84 cached keys (a tile boundary inside the context) */
    const int prompt[NSEQ] = {7, 20, 100}, c_first = prompt[2] - 16;
    uint64_t x = 0x1234567;
    for (int i = 0; i < NSEQ; i++) {
        for (int j = 0; j < MAXTOK / BS + 1; j++)
            s[i].bt[j] = i * (MAXTOK / BS + 1) + (MAXTOK / BS - j); /* scattered, descending */
        for (int j = 0; j < prompt[i]; j++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            s[i].toks[j] = 1 + (int)((x >> 33) % (uint64_t)(vocab - 1));
        }
        s[i].n = prompt[i];
    }
    cmp_t ref = {0, 0, 0}, info = {0, 0, 0};
    int compared = 0;
    /* step 1: A and B whole, C's first c_first tokens without logits; step 2: C's last 16
     * (chunked) */
    eng_batch_seq_t q[NSEQ];
    for (int i = 0; i < NSEQ; i++)
        q[i] = (eng_batch_seq_t){s[i].toks, i == 2 ? c_first : s[i].n, 0, s[i].bt, MAXTOK / BS + 1,
                                 i == 2 ? 0 : 2};
    eng_batch_t b = {NSEQ, q, 0, NULL, NULL};
    int rows = both(cpu, cpu_q, cuda, &b, lc, lq, lg, ids, vocab, &ref, &info), next[NSEQ];
    if (rows < 0)
        goto out;
    compared += rows;
    next[0] = argmax(lc + (size_t)(prompt[0] - 1) * vocab, vocab); /* last rows of A and B */
    next[1] = argmax(lc + (size_t)(prompt[0] + prompt[1] - 1) * vocab, vocab);
    q[0] = (eng_batch_seq_t){s[2].toks + c_first, 16, c_first, s[2].bt, MAXTOK / BS + 1, 1};
    b.n_seqs = 1;
    if ((rows = both(cpu, cpu_q, cuda, &b, lc, lq, lg, ids, vocab, &ref, &info)) < 0)
        goto out;
    compared += rows;
    next[2] = argmax(lc, vocab);
    for (int step = 0; step < DECODE_STEPS; step++) {
        for (int i = 0; i < NSEQ; i++) {
            s[i].toks[s[i].n] = next[i];
            q[i] = (eng_batch_seq_t){s[i].toks + s[i].n, 1, s[i].n, s[i].bt, MAXTOK / BS + 1, 1};
            s[i].n++;
        }
        b.n_seqs = NSEQ;
        if ((rows = both(cpu, cpu_q, cuda, &b, lc, lq, lg, ids, vocab, &ref, &info)) < 0)
            goto out;
        compared += rows;
        for (int i = 0; i < NSEQ; i++)
            next[i] = argmax(lc + (size_t)i * vocab, vocab);
    }
    printf("check %s: %d logits rows compared, %d greedy mismatches (%d beyond noise), max relative "
           "error %.3g\n", path, compared, ref.flips, ref.flips_beyond_noise, ref.max_err);
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    char name[96];
    if (mf)
        printf("  reference: the CPU backend on the weights dequantised to F32 (what CUDA holds, "
               "in fp16);\n  info: the CPU backend on the quantised weights quantises its "
               "activations to 8-bit\n  blocks (as llama.cpp does), CUDA does not: max rel err "
               "%.3g, %d greedy flips\n", info.max_err, info.flips);
    if (synthetic)
        printf("  synthetic weights: nearly flat logits, so argmax ties flip on rounding; the "
               "greedy target\n  counts flips beyond noise (CPU margin > 5x the row's rms "
               "logit difference)\n");
    snprintf(name, sizeof name, "check %.40s max rel err", base);
    report(o, name, ref.max_err, "", 2e-2, "<=");
    snprintf(name, sizeof name, "check %.40s greedy mismatches", base);
    report(o, name, ref.flips, "", 0, synthetic ? "info" : "<=");
    if (synthetic) {
        snprintf(name, sizeof name, "check %.40s flips beyond noise", base);
        report(o, name, ref.flips_beyond_noise, "", 0, "<=");
    }
    if (mf) {
        snprintf(name, sizeof name, "check %.30s vs q8-act CPU rel err", base);
        report(o, name, info.max_err, "", 0, "info");
        snprintf(name, sizeof name, "check %.30s vs q8-act CPU flips", base);
        report(o, name, info.flips, "", 0, "info");
    }
    /* GEMV vs cuBLAS on the last decode step (M bucket 4) and on sequence A alone (M 1) */
    if (gemv_vs_cublas(o, cuda, &b, vocab, base) != 0)
        goto out;
    b.n_seqs = 1;
    if (gemv_vs_cublas(o, cuda, &b, vocab, base) != 0)
        goto out;
    rc = o->failed;
out:
    free(lc);
    free(lg);
    free(lq);
    free(ids);
    eng_backend_free(cuda);
    eng_backend_free(cpu_q);
    eng_backend_free(cpu);
    free_f32_copy(mf, m);
    eng_model_free(m);
    return rc;
}

/* ---- perf: shape-only model, weights generated on the device ------------------------------------ */

typedef struct perf {
    eng_backend_t *b;
    int vocab, num_blocks;
    int32_t *bt, *toks, *ids; /* bt: per sequence a row of max_blocks */
    int max_blocks;
    eng_batch_seq_t *q;
    eng_sample_row_t *rows; /* decode_step_s(sampled): every sequence's sampling row */
    int32_t *pen;           /* ... and their penalty pairs, 64 per sequence */
    float *lps;
} perf_t;

/* Sequence i of B at context ctx (+ 32 steps) gets its own run of blocks, wrapping round the pool
 * only when it is too small. */
static void set_tables(perf_t *p, int B, int ctx) {
    int need = (ctx + 32 + BS - 1) / BS;
    for (int i = 0; i < B; i++)
        for (int j = 0; j < p->max_blocks; j++)
            p->bt[(size_t)i * p->max_blocks + j] = (int32_t)(((int64_t)i * need + j) % p->num_blocks);
}

/* Fills B sequences to ctx tokens with prefill steps of at most 4096 tokens (real K/V, not zeros);
 * the block tables are set_tables'. */
static int fill(perf_t *p, int B, int ctx) {
    int per_step = 4096 / ctx > 0 ? 4096 / ctx : 1, chunk = ctx < 4096 ? ctx : 4096;
    for (int s0 = 0; s0 < B; s0 += per_step) {
        int n = B - s0 < per_step ? B - s0 : per_step;
        for (int done = 0; done < ctx; done += chunk) {
            for (int i = 0; i < n; i++)
                p->q[i] = (eng_batch_seq_t){p->toks + done, ctx - done < chunk ? ctx - done : chunk,
                                            done, p->bt + (size_t)(s0 + i) * p->max_blocks,
                                            p->max_blocks, 0};
            p->q[n - 1].logits = 1;
            eng_batch_t b = {n, p->q, 0, NULL, NULL};
            int rows;
            if (p->b->ops->forward_greedy(p->b, &b, p->ids, &rows) != SL_OK)
                return -1;
        }
    }
    return 0;
}

/* Median seconds of one decode step of B sequences at context ctx (growing by one per step):
 * argmax on the device, or (sampled) the device sampler with temperature 0.8, top-k 50, top-p 0.9
 * and a repetition penalty over 64 tokens per sequence. */
static double decode_step_s(perf_t *p, int B, int ctx, int steps, int sampled) {
    set_tables(p, B, ctx);
    if (fill(p, B, ctx) != 0)
        return -1;
    double t[64];
    for (int k = 0; k < steps + 3; k++) {
        for (int i = 0; i < B; i++)
            p->q[i] = (eng_batch_seq_t){p->ids + i, 1, ctx + k, p->bt + (size_t)i * p->max_blocks,
                                        p->max_blocks, 1};
        for (int i = 0; i < B; i++)
            p->ids[i] = (int32_t)((i * 7919 + k * 104729) % p->vocab);
        eng_batch_t b = {B, p->q, 0, NULL, NULL};
        int rows;
        double t0 = now_s();
        if ((sampled ? p->b->ops->forward_sample(p->b, &b, p->rows, p->pen, 64 * B, p->ids, p->lps,
                                                 &rows)
                     : p->b->ops->forward_greedy(p->b, &b, p->ids, &rows)) != SL_OK)
            return -1;
        if (k >= 3)
            t[k - 3] = now_s() - t0;
    }
    return median(t, steps);
}

static double ttft_s(perf_t *p, int n, int reps) {
    double t[16];
    set_tables(p, 1, n);
    for (int k = 0; k < reps + 1; k++) {
        p->q[0] = (eng_batch_seq_t){p->toks, n, 0, p->bt, p->max_blocks, 1};
        eng_batch_t b = {1, p->q, 0, NULL, NULL};
        int rows;
        double t0 = now_s();
        if (p->b->ops->forward_greedy(p->b, &b, p->ids, &rows) != SL_OK)
            return -1;
        if (k >= 1)
            t[k - 1] = now_s() - t0;
    }
    return median(t, reps);
}

/* Profiles the batch 5 times (eager, an event after every launch) and reports the run with the
 * median total as info rows. -1 on error. */
static int profile(out_t *o, perf_t *p, const eng_batch_t *b, const char *label) {
    eng_cuda_profile_t r[5];
    double tot[5];
    for (int k = 0; k < 5; k++) {
        if (eng_cuda_profile_step(p->b, b, p->ids, &r[k]) != SL_OK)
            return -1;
        tot[k] = r[k].total_ms;
    }
    double med = median(tot, 5);
    int k = 0;
    while (k < 4 && r[k].total_ms != med)
        k++;
    const eng_cuda_profile_t *x = &r[k];
    printf("profile %-12s projections %8.3f ms (%4.1f%%)  attention %8.3f ms (%4.1f%%)  other "
           "%8.3f ms (%4.1f%%)  step %8.3f ms, %d launches (eager)\n",
           label, x->gemm_ms, 100 * x->gemm_ms / x->total_ms, x->attn_ms,
           100 * x->attn_ms / x->total_ms, x->other_ms, 100 * x->other_ms / x->total_ms,
           x->total_ms, x->launches);
    const char *what[4] = {"projections", "attention", "other", "step"};
    const double v[4] = {x->gemm_ms, x->attn_ms, x->other_ms, x->total_ms};
    for (int i = 0; i < 4; i++) {
        char name[64];
        snprintf(name, sizeof name, "profile %s %s", label, what[i]);
        report(o, name, v[i], "ms", 0, "info");
    }
    return 0;
}

/* A decode step of 4 sequences at context 300 (graphed, every projection on the GEMV kernel) with
 * path `path` at its bypass (value 1) and at its default (0): logits within tol. The environment's
 * path and the AUTO GEMV choice are restored after. -1 on error. Used for the split-K attention +
 * reduce vs the one-pass kernel (the same sums in another order: 5e-3) and plain launches vs PDL
 * (0: the same bits). */
static int decode_paths_agree(out_t *o, perf_t *p, int path, const char *what, double tol,
                              const char *label) {
    enum { B = 4, CTX = 300 };
    float *l[2] = {malloc((size_t)B * p->vocab * 4), malloc((size_t)B * p->vocab * 4)};
    set_tables(p, B, CTX);
    int rc = l[0] && l[1] && eng_cuda_set_gemv_mode(p->b, ENG_CUDA_GEMV_FORCE) == SL_OK &&
                     fill(p, B, CTX) == 0
                 ? 0
                 : -1;
    for (int k = 0; k < 2 && rc == 0; k++) {
        for (int i = 0; i < B; i++)
            p->q[i] = (eng_batch_seq_t){p->toks + 17 + i, 1, CTX, p->bt + (size_t)i * p->max_blocks,
                                        p->max_blocks, 1};
        eng_batch_t b = {B, p->q, 0, NULL, NULL};
        int rows = 0;
        if (eng_cuda_set_path(p->b, path, 1 - k) != SL_OK ||
            p->b->ops->forward(p->b, &b, l[k], &rows) != SL_OK || rows != B)
            rc = -1;
    }
    if (eng_cuda_set_path(p->b, path, -1) != SL_OK ||
        eng_cuda_set_gemv_mode(p->b, ENG_CUDA_GEMV_AUTO) != SL_OK)
        rc = -1;
    if (rc == 0) {
        cmp_t c = {0, 0, 0};
        compare_rows(l[1], l[0], NULL, B, p->vocab, &c);
        char name[96];
        snprintf(name, sizeof name, "%s %.24s b%d rel err", what, label, B);
        report(o, name, c.max_err, "", tol, "<=");
    }
    free(l[0]);
    free(l[1]);
    return rc;
}

static int run_perf(out_t *o, const char *shape) {
    char err[512];
    eng_model_t *m = eng_model_shape_only(shape, err, sizeof err);
    if (!m) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    eng_backend_params_t params = eng_backend_params_default();
    double t0 = now_s();
    eng_backend_t *b = eng_backend_create("cuda", m, &params, err, sizeof err);
    if (!b) {
        fprintf(stderr, "%s\n", err);
        eng_model_free(m);
        return 2;
    }
    printf("backend created (weights generated on the device) in %.2f s\n", now_s() - t0);
    perf_t p = {.b = b, .vocab = m->cfg.vocab};
    const int max_seqs = 256, max_ctx = 2048 + 64;
    p.max_blocks = (max_ctx + BS - 1) / BS;
    int64_t per_block = (int64_t)BS * 2 * 2 * m->cfg.n_layers * m->cfg.n_kv_heads * m->cfg.head_dim;
    int64_t budget = b->ops->kv_budget_bytes(b);
    p.num_blocks = (int)(budget / per_block);
    printf("KV budget %.2f GiB: %d blocks of %d tokens\n", budget / 1073741824.0, p.num_blocks, BS);
    p.bt = malloc((size_t)max_seqs * p.max_blocks * 4);
    p.toks = malloc(4096 * 4);
    p.ids = malloc(4096 * 4);
    p.q = malloc((size_t)max_seqs * sizeof *p.q);
    p.rows = malloc((size_t)max_seqs * sizeof *p.rows);
    p.pen = malloc((size_t)max_seqs * 64 * 2 * 4);
    p.lps = malloc((size_t)max_seqs * 4);
    int rc = 2;
    if (!p.bt || !p.toks || !p.ids || !p.q || !p.rows || !p.pen || !p.lps ||
        b->ops->kv_alloc(b, p.num_blocks, BS) != SL_OK) {
        fprintf(stderr, "setup: %s\n", b->ops->errmsg(b));
        goto out;
    }
    for (int i = 0; i < 4096; i++)
        p.toks[i] = 1 + (i * 2654435761u) % (uint32_t)(p.vocab - 1);
    for (int i = 0; i < max_seqs; i++) {
        p.rows[i] = (eng_sample_row_t){.temperature = 0.8f, .top_k = 50, .top_p = 0.9f,
                                       .repetition_penalty = 1.1f, .pen_off = 64 * i, .n_pen = 64,
                                       .u = (double)i / max_seqs};
        for (int j = 0; j < 64; j++)
            p.pen[2 * (64 * i + j)] = p.toks[(i + 61 * j) % 4096], p.pen[2 * (64 * i + j) + 1] = 1;
    }

    /* the GEMV kernel and cuBLAS must compute the same logits (so the timed choice hides no bug) */
    set_tables(&p, 8, 0);
    for (int B = 1; B <= 8; B *= 8) {
        for (int i = 0; i < B; i++) {
            p.ids[i] = p.toks[i];
            p.q[i] = (eng_batch_seq_t){p.ids + i, 1, 0, p.bt + (size_t)i * p.max_blocks,
                                       p.max_blocks, 1};
        }
        eng_batch_t gb = {B, p.q, 0, NULL, NULL};
        if (gemv_vs_cublas(o, b, &gb, p.vocab, shape) != 0)
            goto out;
    }
    char gr[2048];
    eng_cuda_gemv_report(b, gr, sizeof gr);
    printf("%s", gr);
    set_tables(&p, 2, 512);
    if (paths_agree(o, b, p.toks, p.bt, p.max_blocks, p.vocab, 1, PREFILL_PATHS_RUN, shape) != 0)
        goto out;

    if (decode_paths_agree(o, &p, ENG_CUDA_PATH_DECODE_ATTN, "decode attn split vs single", 5e-3,
                           shape) != 0 ||
        decode_paths_agree(o, &p, ENG_CUDA_PATH_PDL, "decode pdl off vs on", 0, shape) != 0)
        goto fail;

    double v;
    if ((v = decode_step_s(&p, 1, 128, 30, 0)) < 0)
        goto fail;
    const double b1 = v;
    p.ids[0] = p.toks[0];
    p.q[0] = (eng_batch_seq_t){p.ids, 1, 128 + 40, p.bt, p.max_blocks, 1};
    eng_batch_t pb = {1, p.q, 0, NULL, NULL};
    if (profile(o, &p, &pb, "decode b1") != 0)
        goto fail;
    const int tt[] = {128, 512, 2048};
    const double tt_target[] = {0, 14, 45};
    double tt_v[3];
    for (int i = 0; i < 3; i++) {
        if ((tt_v[i] = ttft_s(&p, tt[i], 7)) < 0)
            goto fail;
        if (tt[i] >= 512) {
            char label[32];
            snprintf(label, sizeof label, "prefill %d", tt[i]);
            p.q[0] = (eng_batch_seq_t){p.toks, tt[i], 0, p.bt, p.max_blocks, 1};
            if (profile(o, &p, &pb, label) != 0)
                goto fail;
        }
    }
    /* the baseline of PDL: the same steps with plain launches (the GEMV choice re-timed for them) */
    double off[3];
    if (eng_cuda_set_path(b, ENG_CUDA_PATH_PDL, 1) != SL_OK)
        goto fail;
    eng_cuda_gemv_report(b, gr, sizeof gr);
    printf("with plain launches (SLUICE_CUDA_PDL=off):\n%s", gr);
    if ((off[0] = decode_step_s(&p, 1, 128, 30, 0)) < 0 || (off[1] = ttft_s(&p, 2048, 5)) < 0 ||
        (off[2] = decode_step_s(&p, 64, 512, 20, 0)) < 0 ||
        eng_cuda_set_path(b, ENG_CUDA_PATH_PDL, -1) != SL_OK)
        goto fail;
    report(o, "decode b1 ctx128, pdl off", 1.0 / off[0], "tok/s", 0, "info");
    report(o, "ttft 2048, pdl off", off[1] * 1e3, "ms", 0, "info");
    report(o, "decode b64 ctx512, pdl off", 64 / off[2], "tok/s", 0, "info");
    const struct {
        int B, ctx;
        double target;
    } dec[] = {{8, 2048, 0}, {32, 1024, 0}, {64, 512, 5000}, {128, 512, 0}, {256, 256, 12000}};
    enum { NDEC = sizeof dec / sizeof dec[0] };
    double dec_v[NDEC];
    for (int i = 0; i < NDEC; i++) {
        int64_t need = (int64_t)dec[i].B * ((dec[i].ctx + 32 + BS - 1) / BS);
        if (need > p.num_blocks)
            printf("(b%d ctx%d: %lld blocks needed, %d in the pool: blocks are shared)\n", dec[i].B,
                   dec[i].ctx, (long long)need, p.num_blocks);
        if ((dec_v[i] = decode_step_s(&p, dec[i].B, dec[i].ctx, 20, 0)) < 0)
            goto fail;
    }
    /* code not yet run on a GPU when written goes after every target is timed: a kernel that
     * faults leaves the context unusable for what follows it (the device sampler's warp walk,
     * 2026-11-28, and the wide FA2 tiles); an error there is a failed row, and the targets are
     * reported all the same */
    /* what sampling adds to a decode step, against the argmax the others time (one row: the host's
     * pick, ENG_CUDA_SAMPLE_DEVICE_MIN_ROWS; the batch of 2 shows the device sampler's smallest) */
    const int sample_b[] = {1, 2, 64};
    for (int si = 0; si < 3; si++) {
        const int B = sample_b[si];
        double greedy = B == 1 ? b1 : decode_step_s(&p, B, 512, 20, 0), sampled;
        if (greedy < 0 || (sampled = decode_step_s(&p, B, B == 1 ? 128 : 512, 20, 1)) < 0)
            goto late_fail;
        char name[64];
        snprintf(name, sizeof name, "sampling cost b%d (top-k 50, top-p 0.9, penalty)", B);
        report(o, name, (sampled - greedy) * 1e6, "us", 0, "info");
        snprintf(name, sizeof name, "sampling share of decode b%d", B);
        report(o, name, 100.0 * (sampled - greedy) / sampled, "%", 0, "info");
        /* the baseline: logits to the host and the host's pick (SLUICE_CUDA_SAMPLE=host) */
        double host;
        if (eng_cuda_set_path(b, ENG_CUDA_PATH_SAMPLE, 1) != SL_OK ||
            (host = decode_step_s(&p, B, B == 1 ? 128 : 512, 20, 1)) < 0 ||
            eng_cuda_set_path(b, ENG_CUDA_PATH_SAMPLE, 0) != SL_OK)
            goto late_fail;
        snprintf(name, sizeof name, "sampling cost b%d, logits to the host", B);
        report(o, name, (host - greedy) * 1e6, "us", 0, "info");
    }
    if (paths_agree(o, b, p.toks, p.bt, p.max_blocks, p.vocab, PREFILL_PATHS_RUN,
                    PREFILL_PATHS, shape) != 0)
        goto late_fail;
    /* the wide FA2 tiles (SLUICE_CUDA_PREFILL_ATTN=fa2w) on the same prompts */
    double wide[2];
    if (eng_cuda_set_path(b, ENG_CUDA_PATH_PREFILL_ATTN, ENG_CUDA_PREFILL_FA2W) != SL_OK ||
        (wide[0] = ttft_s(&p, 512, 7)) < 0 || (wide[1] = ttft_s(&p, 2048, 5)) < 0)
        goto late_fail;
    p.q[0] = (eng_batch_seq_t){p.toks, 2048, 0, p.bt, p.max_blocks, 1};
    if (profile(o, &p, &pb, "prefill 2048 fa2w") != 0 ||
        eng_cuda_set_path(b, ENG_CUDA_PATH_PREFILL_ATTN, -1) != SL_OK)
        goto late_fail;
    report(o, "ttft 512, prefill attn fa2w", wide[0] * 1e3, "ms", 0, "info");
    report(o, "ttft 2048, prefill attn fa2w", wide[1] * 1e3, "ms", 0, "info");
    goto late_done;
late_fail:
    fprintf(stderr, "cuda (after the targets were timed): %s\n", b->ops->errmsg(b));
    report(o, "sampler and fa2w steps ran without error", 0, "", 1, ">=");
late_done:
    /* the timed results after the profiles, so the summary table ends with them */
    report(o, "decode b1 ctx128", 1.0 / b1, "tok/s", 190, ">=");
    for (int i = 0; i < 3; i++) {
        char name[64];
        snprintf(name, sizeof name, "ttft %d", tt[i]);
        report(o, name, tt_v[i] * 1e3, "ms", tt_target[i], tt_target[i] > 0 ? "<=" : "info");
    }
    for (int i = 0; i < NDEC; i++) {
        char name[64];
        snprintf(name, sizeof name, "decode b%d ctx%d", dec[i].B, dec[i].ctx);
        report(o, name, dec[i].B / dec_v[i], "tok/s", dec[i].target,
               dec[i].target > 0 ? ">=" : "info");
    }
    rc = o->failed;
    goto out;
fail:
    fprintf(stderr, "cuda: %s\n", b->ops->errmsg(b));
out:
    free(p.bt);
    free(p.toks);
    free(p.ids);
    free(p.q);
    free(p.rows);
    free(p.pen);
    free(p.lps);
    eng_backend_free(b);
    eng_model_free(m);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2 || (strcmp(argv[1], "check") != 0 && strcmp(argv[1], "perf") != 0) ||
        (strcmp(argv[1], "check") == 0 && argc < 3)) {
        fprintf(stderr, "usage: %s check MODEL.gguf [CSV]\n       %s perf [SHAPE] [CSV]\n",
                argv[0], argv[0]);
        return 2;
    }
    int check = strcmp(argv[1], "check") == 0;
    const char *csv = argc > 3 ? argv[3] : NULL;
    out_t o = {NULL, 0};
    if (csv && !(o.csv = fopen(csv, "a"))) {
        perror(csv);
        return 2;
    }
    int rc = check ? run_check(&o, argv[2]) : run_perf(&o, argc > 2 ? argv[2] : "llama2-7b");
    if (o.csv)
        fclose(o.csv);
    return rc;
}
