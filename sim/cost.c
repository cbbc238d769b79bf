/* cost.c — pricing a scheduler step: dense operators, attention, LM head, all-reduce, host.
 *
 * Notes
 * 1. op_time() is the one place an operator is priced. With a table for the card: the table at
 *    M clamped to its range, times roof(shape, card, M) / roof(reference shape, reference card,
 *    clamped M). On the reference shape, card and TP inside the table the ratio is exactly 1.
 * 2. Dense and LM-head times are tabled per M up to SIM_COST_TABLE_M at creation; larger M is
 *    priced directly (same function, slower).
 */
#include "sim/cost.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sched/status.h"
#include "sim/profile.h"

enum { SIM_COST_TABLE_M = 8192 };

/* kernels per layer: 2 norms, QKV, RoPE, attention, O, 2 adds, gate+up, act, down */
enum { KERNELS_PER_LAYER = 11, KERNELS_PER_STEP = 4 /* embedding, final norm, LM head, sampler */ };

struct sim_cost {
    sim_profile_t *prof;          /* non-NULL: every step is priced by the engine profile */
    sched_model_shape_t m;
    sim_hw_t hw;
    int tp;
    bool have_table;
    sim_op_table_t tab;           /* shallow copy of the chosen table's fit + pointers: see below */
    double *tab_m, *tab_t[SIM_N_OPS];
    sched_model_shape_t ref;
    double bw_scale, flop_scale;  /* reference card / this card */
    sim_attn_fit_t attn;
    double attn_bw_scale, attn_flop_scale;
    sim_ar_table_t ar;            /* the all-reduce table for this tp (owned copy; n = 0: none) */
    double dense[SIM_COST_TABLE_M + 1];
    double lm[SIM_COST_TABLE_M + 1];
    double allreduce[SIM_COST_TABLE_M + 1];
};

static double roof_physical(const sim_cost_t *c, sim_op_t op, double m)
{
    double bytes, flops;
    sim_op_work(&c->m, c->tp, op, m, &bytes, &flops);
    double eff_bw = sim_op_is_gemm(op) ? c->hw.gemm_eff_bw : c->hw.elem_eff_bw;
    return fmax(c->hw.kernel_floor_s + bytes / (c->hw.hbm_bw * eff_bw),
                flops / (c->hw.peak_flops * c->hw.gemm_eff_flops));
}

static double op_time(const sim_cost_t *c, sim_op_t op, double m)
{
    if (m <= 0)
        return 0;
    if (!c->have_table)
        return roof_physical(c, op, m);
    const sim_op_table_t *t = &c->tab;
    double mc = fmin(fmax(m, t->m[0]), t->m[t->n - 1]);
    double base = sim_calib_interp(t, op, mc);
    double num = sim_roof_eval(&t->fit[op], &c->m, c->tp, op, m, c->bw_scale, c->flop_scale);
    double den = sim_roof_eval(&t->fit[op], &c->ref, t->tp, op, mc, 1, 1);
    return num == den ? base : base * num / den;
}

/* LM head: a vocab/tp x hidden GEMM, priced as mlp_up_proj scaled by the ratio of the two
 * GEMMs' rooflines (the same rule as other shapes). */
static double lm_head_time(const sim_cost_t *c, double rows)
{
    if (rows <= 0)
        return 0;
    double n = (double)c->m.vocab / c->tp, k = c->m.hidden, a = 2.0;
    double bytes = n * k * c->m.bytes_per_weight + rows * (n + k) * a, flops = 2 * rows * n * k;
    double up_bytes, up_flops;
    sim_op_work(&c->m, c->tp, SIM_OP_UP, rows, &up_bytes, &up_flops);
    if (!c->have_table)
        return fmax(c->hw.kernel_floor_s + bytes / (c->hw.hbm_bw * c->hw.gemm_eff_bw),
                    flops / (c->hw.peak_flops * c->hw.gemm_eff_flops));
    const sim_roof_fit_t *f = &c->tab.fit[SIM_OP_UP];
    double lm = fmax(f->xb * c->bw_scale * bytes, f->xf * c->flop_scale * flops);
    double up = fmax(f->xb * c->bw_scale * up_bytes, f->xf * c->flop_scale * up_flops);
    return op_time(c, SIM_OP_UP, rows) * lm / up;
}

static double allreduce_time(const sim_cost_t *c, double m)
{
    if (c->tp <= 1 || m <= 0)
        return 0;
    double bytes = m * c->m.hidden * 2.0;
    if (c->ar.n > 0)
        return sim_ar_interp(&c->ar, bytes);
    /* ring all-reduce: 2 (tp - 1) / tp of the buffer over each link, plus a latency floor */
    return 10e-6 + 2.0 * (c->tp - 1) / c->tp * bytes / c->hw.nvlink_bw;
}

static double dense_time(const sim_cost_t *c, double m)
{
    static const sim_op_t per_layer[] = {SIM_OP_INPUT_NORM, SIM_OP_QKV,  SIM_OP_ROPE, SIM_OP_O,
                                         SIM_OP_ADD,        SIM_OP_POST_NORM, SIM_OP_UP, SIM_OP_ACT,
                                         SIM_OP_DOWN,       SIM_OP_ADD};
    double layer = 0;
    for (size_t i = 0; i < sizeof per_layer / sizeof per_layer[0]; i++)
        layer += op_time(c, per_layer[i], m);
    /* embedding and the final norm once per step */
    return c->m.n_layers * layer + op_time(c, SIM_OP_EMB, m) + op_time(c, SIM_OP_INPUT_NORM, m);
}

sim_cost_t *sim_cost_create(const sched_model_shape_t *m, const sim_hw_t *hw, int tp,
                            const sim_calib_t *calib, char *err, int errlen)
{
    char why[256];
    if (sim_hw_validate(hw, why, sizeof why) != SL_OK) {
        snprintf(err, errlen, "GPU profile %s: %s", hw->name, why);
        return NULL;
    }
    if (tp < 1 || tp > 64 || m->n_heads % tp || m->n_kv_heads % tp || m->intermediate % tp) {
        snprintf(err, errlen, "tensor parallel %d: must be 1..64 and divide %s's heads (%d), KV heads (%d) "
                 "and FFN width (%d)", tp, m->name, m->n_heads, m->n_kv_heads, m->intermediate);
        return NULL;
    }
    sim_cost_t *c = sl_calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->m = *m, c->hw = *hw, c->tp = tp;
    c->attn = calib ? calib->attn : sim_attn_fit_builtin();
    c->attn_bw_scale = c->attn.ref_hbm_bw / hw->hbm_bw;
    c->attn_flop_scale = c->attn.ref_peak_flops / hw->peak_flops;
    if (calib && calib->n_tables > 0 && !strcmp(calib->gpu, hw->calib_gpu)) {
        const sim_op_table_t *pick = &calib->tables[0]; /* exact TP, else TP 1 scaled by roofline */
        for (int i = 0; i < calib->n_tables; i++)
            if (calib->tables[i].tp == tp)
                pick = &calib->tables[i];
        c->have_table = true;
        c->ref = calib->ref;
        c->bw_scale = calib->ref_hbm_bw / hw->hbm_bw;
        c->flop_scale = calib->ref_peak_flops / hw->peak_flops;
        c->tab = *pick;
        c->tab.hm = NULL;
        c->tab.m = c->tab_m = sl_malloc(sizeof(double) * pick->n);
        bool ok = c->tab_m != NULL;
        for (int op = 0; op < SIM_N_OPS; op++) {
            c->tab.ht[op] = NULL;
            c->tab.t[op] = c->tab_t[op] = sl_malloc(sizeof(double) * pick->n);
            ok = ok && c->tab_t[op];
        }
        for (int i = 0; ok && i < calib->n_ar; i++)
            if (calib->ar[i].workers == tp && calib->ar[i].n > 0) {
                int n = calib->ar[i].n;
                c->ar.workers = tp;
                c->ar.bytes = sl_malloc(sizeof(double) * n);
                c->ar.t = sl_malloc(sizeof(double) * n);
                ok = c->ar.bytes && c->ar.t;
                if (ok) {
                    c->ar.n = n;
                    memcpy(c->ar.bytes, calib->ar[i].bytes, sizeof(double) * n);
                    memcpy(c->ar.t, calib->ar[i].t, sizeof(double) * n);
                }
            }
        if (!ok) {
            sim_cost_free(c);
            snprintf(err, errlen, "out of memory");
            return NULL;
        }
        memcpy(c->tab_m, pick->m, sizeof(double) * pick->n);
        for (int op = 0; op < SIM_N_OPS; op++)
            memcpy(c->tab_t[op], pick->t[op], sizeof(double) * pick->n);
    }
    for (int i = 0; i <= SIM_COST_TABLE_M; i++) {
        c->dense[i] = dense_time(c, i);
        c->lm[i] = lm_head_time(c, i);
        c->allreduce[i] = 2.0 * c->m.n_layers * allreduce_time(c, i);
    }
    return c;
}

sim_cost_t *sim_cost_create_profile(const sim_profile_t *p, char *err, int errlen)
{
    sim_cost_t *c = sl_calloc(1, sizeof *c);
    if (c && !(c->prof = sl_malloc(sizeof *c->prof))) {
        sl_free(c);
        c = NULL;
    }
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    *c->prof = *p;
    c->m = p->model, c->tp = 1;
    return c;
}

void sim_cost_free(sim_cost_t *c)
{
    if (!c)
        return;
    sl_free(c->prof);
    sl_free(c->tab_m);
    for (int op = 0; op < SIM_N_OPS; op++)
        sl_free(c->tab_t[op]);
    sl_free(c->ar.bytes);
    sl_free(c->ar.t);
    sl_free(c);
}

double sim_cost_dense(const sim_cost_t *c, int m)
{
    return m <= SIM_COST_TABLE_M ? c->dense[m < 0 ? 0 : m] : dense_time(c, m);
}

double sim_cost_lm_head(const sim_cost_t *c, int rows)
{
    return rows <= SIM_COST_TABLE_M ? c->lm[rows < 0 ? 0 : rows] : lm_head_time(c, rows);
}

double sim_cost_peak_flops(const sim_cost_t *c) { return c->hw.peak_flops * c->tp; }

double sim_cost_step(const sim_cost_t *c, const sched_step_t *step, sim_cost_parts_t *parts)
{
    if (c->prof)
        return sim_profile_step(c->prof, step, parts);
    const sim_attn_fit_t *a = &c->attn;
    int m = step->n_tokens + step->n_padded_tokens, rows = 0, n_pre = 0, n_dec = 0;
    double pre_flops = 0, pre_q = 0, useful_attn_flops = 0, kv_sum = 0, kv_max = 0;
    for (int i = 0; i < step->n_seqs; i++) {
        const sched_seq_step_t *s = &step->seqs[i];
        if (s->sample)
            rows += 1 + s->n_draft;
        if (s->is_prefill) {
            double q = s->n_tokens + s->padded_tokens;
            pre_flops += sim_attn_prefill_flops(&c->m, c->tp, q, s->context_len);
            useful_attn_flops += sim_attn_prefill_flops(&c->m, c->tp, s->n_tokens, s->context_len);
            pre_q += q;
            n_pre++;
        } else {
            double kv = s->context_len + s->n_tokens;
            double b = sim_attn_kv_bytes(&c->m, c->tp, kv);
            kv_sum += b;
            kv_max = fmax(kv_max, b);
            useful_attn_flops += 4.0 * c->m.n_heads / c->tp * c->m.head_dim * s->n_tokens * kv;
            n_dec++;
        }
    }
    double attn = 0;
    if (n_pre)
        attn += fmax(a->a0, a->a3 + a->a1 * c->attn_flop_scale * pre_flops + a->a2 * c->attn_bw_scale * pre_q);
    if (n_dec)
        attn += a->d0 + (a->d1 * kv_sum + a->d2 * kv_max) * c->attn_bw_scale + a->d3 * n_dec;
    attn *= c->m.n_layers;

    sim_cost_parts_t p = {0};
    p.dense = sim_cost_dense(c, m);
    p.attention = attn;
    p.lm_head = sim_cost_lm_head(c, rows);
    p.allreduce = m <= SIM_COST_TABLE_M ? c->allreduce[m] : 2.0 * c->m.n_layers * allreduce_time(c, m);
    double gpu = p.dense + p.attention + p.lm_head + p.allreduce;
    bool graph = c->hw.cuda_graphs && step->n_prefill_tokens == 0 && step->n_padded_tokens == 0;
    if (!graph) {
        int kernels = c->m.n_layers * (KERNELS_PER_LAYER + (c->tp > 1 ? 2 : 0)) + KERNELS_PER_STEP;
        p.launch = fmax(0.0, kernels * c->hw.launch_gap_s - gpu);
    }
    p.host = c->hw.host_overhead_s;
    p.total = gpu + p.launch + p.host;
    /* useful FLOPs of the whole replica: 2 per weight per real token, attention, LM head */
    double w_layer = (double)c->m.hidden * (c->m.n_heads + 2 * c->m.n_kv_heads) * c->m.head_dim +
                     (double)c->m.n_heads * c->m.head_dim * c->m.hidden + 3.0 * c->m.hidden * c->m.intermediate;
    p.flops = 2.0 * step->n_tokens * w_layer * c->m.n_layers + useful_attn_flops * c->tp * c->m.n_layers +
              2.0 * rows * c->m.vocab * c->m.hidden;
    if (parts)
        *parts = p;
    return p.total;
}
