/* calib.h — calibration data for the cost model: operator tables, fits, and held-out checks.
 *
 * Reads the calibration folder of one GPU (../shared/calibration/<gpu>/):
 *   vidur_llama2-7b_mlp.csv    per-operator kernel times (ms) of Llama-2-7B, M = 1..4096 tokens,
 *                              tensor parallel 1/2/4/8 (the medians are used)
 *   vidur_dgx_all_reduce.csv   NCCL all-reduce times (ms) by bytes and workers (one node)
 *   measured_attention.csv     (h100 only) flash-attention prefill and decode times (us)
 * and fits, with GSL weighted least squares (relative error), per operator and TP degree:
 *   GEMMs        t = max(xb * bytes, xf * flops)   memory side on M <= 32, compute side on M >= 1024
 *   elementwise  t = c0 + xb * bytes
 *   prefill attention   t = max(a0, a3 + sum_i (a1 * causal_flops_i + a2 * q_i))
 *   decode attention    t = d0 + d1 * sum_i kv_bytes_i + d2 * max_i kv_bytes_i + d3 * n_seqs
 * Fits use only the "fit" points; the check (sim_calib_check) reports each operator's median
 * absolute percentage error on the held-out points: every other M of the operator tables, every
 * third row of the attention table, every other size of the all-reduce table.
 *
 * The attention fit exists only where measured_attention.csv does (H100); sim_calib_load for
 * another GPU borrows it from the sibling "h100" folder and the cost model carries it over by
 * the ratio of peak FLOP/s (prefill) and HBM bandwidth (decode). Without any attention table the
 * built-in coefficients (the H100 fit recorded in docs/SIMULATOR.md) are used.
 *
 * Ownership: sim_calib_t owns its arrays; free with sim_calib_free. Not thread-safe to mutate;
 * read-only sharing across threads is fine.
 */
#ifndef SLUICE_SIM_CALIB_H
#define SLUICE_SIM_CALIB_H

#include <stdbool.h>

#include "sched/memest.h"

/* The operator columns of Vidur's MLP table, in its order. */
typedef enum sim_op {
    SIM_OP_EMB = 0,
    SIM_OP_INPUT_NORM,
    SIM_OP_QKV,      /* attn_pre_proj */
    SIM_OP_ROPE,
    SIM_OP_O,        /* attn_post_proj */
    SIM_OP_POST_NORM,
    SIM_OP_UP,       /* mlp_up_proj: gate + up */
    SIM_OP_ACT,
    SIM_OP_DOWN,
    SIM_OP_ADD,
    SIM_N_OPS
} sim_op_t;

/* Vidur's column stem ("attn_pre_proj"). Cannot fail. */
const char *sim_op_name(sim_op_t op);
/* True for the four projections (GEMMs). */
bool sim_op_is_gemm(sim_op_t op);

enum { SIM_CALIB_MAX_TP = 4 };

/* Where the tables are looked for unless told otherwise (relative to the working directory). */
#define SIM_CALIB_DEFAULT_DIR "../shared/calibration"

/* One operator's fitted roofline on the table's reference card:
 * seconds = max(c0 + xb * bytes, xf * flops). */
typedef struct sim_roof_fit {
    double c0;  /* s: kernel floor */
    double xb;  /* s per byte moved (1 / effective bandwidth) */
    double xf;  /* s per FLOP (GEMMs only; 0 otherwise) */
} sim_roof_fit_t;

typedef struct sim_op_table {
    int tp;                       /* tensor-parallel degree of these rows */
    int n;                        /* fit points, M ascending, duplicates averaged */
    double *m;                    /* (n) tokens */
    double *t[SIM_N_OPS];         /* (n) seconds per operator */
    int n_held;                   /* held-out points (holdout loads only) */
    double *hm;                   /* (n_held) */
    double *ht[SIM_N_OPS];        /* (n_held) */
    sim_roof_fit_t fit[SIM_N_OPS];
} sim_op_table_t;

typedef struct sim_ar_table {
    int workers;
    int n, n_held;
    double *bytes; /* (n) ascending; then (n_held) held-out sizes */
    double *t;     /* (n) seconds; then (n_held) */
} sim_ar_table_t;

/* One measured attention call (one layer, one sequence shape repeated `batch` times). */
typedef struct sim_attn_point {
    bool prefill, held;
    int batch, q_len, kv_len;
    double t; /* seconds */
} sim_attn_point_t;

typedef struct sim_attn_fit {
    double a0, a1, a2, a3; /* prefill: floor s, s/FLOP, s/query token, intercept s (reference card) */
    double d0, d1, d2, d3; /* decode: s, s/byte, s/byte of the longest sequence, s/sequence */
    double ref_peak_flops, ref_hbm_bw; /* the card they were fitted on */
} sim_attn_fit_t;

typedef struct sim_calib {
    char gpu[16];               /* "a100", "h100" */
    sched_model_shape_t ref;    /* the model shape the operator table was measured on */
    double ref_peak_flops;      /* datasheet figures of the card the tables were measured on */
    double ref_hbm_bw;
    int n_tables;               /* operator tables, one per TP degree, tp ascending */
    sim_op_table_t tables[SIM_CALIB_MAX_TP];
    int n_ar;
    sim_ar_table_t ar[SIM_CALIB_MAX_TP];
    sim_attn_fit_t attn;
    int n_attn;
    sim_attn_point_t *attn_pts; /* (n_attn) the measured rows, for the check */
    bool attn_fitted;           /* from a measured table (else built-in coefficients) */
    char attn_source[64];       /* "h100/measured_attention.csv" or "built-in" */
} sim_calib_t;

/* Loads and fits the calibration folder dir/<gpu> (gpu = "a100" or "h100"). The operator table is
 * required; the all-reduce and attention tables are optional. Fits use only fit points when
 * holdout is true (for --check), all points otherwise. On error returns NULL and writes
 * "FILE:LINE: why" into err (SL_EIO / SL_EFORMAT class problems, out of memory). */
sim_calib_t *sim_calib_load(const char *dir, const char *gpu, bool holdout, char *err, int errlen);
void sim_calib_free(sim_calib_t *c);

/* The fitted attention time of one measured row. Cannot fail. */
double sim_attn_predict_point(const sim_attn_fit_t *a, const sched_model_shape_t *s,
                              const sim_attn_point_t *p);
/* The built-in attention coefficients (an H100 fit). Cannot fail. */
sim_attn_fit_t sim_attn_fit_builtin(void);

/* Work of one operator at m tokens for model shape s split over tp GPUs: bytes moved (fp16
 * activations, the shape's weight bytes) and FLOPs (GEMMs; 0 for elementwise). Cannot fail. */
void sim_op_work(const sched_model_shape_t *s, int tp, sim_op_t op, double m, double *bytes,
                 double *flops);
/* Causal attention FLOPs of one sequence running q new tokens after ctx cached ones, one layer,
 * heads split over tp. Cannot fail. Inline: the cost model calls both once per sequence per step. */
static inline double sim_attn_prefill_flops(const sched_model_shape_t *s, int tp, double q, double ctx)
{
    /* QK^T and PV: 2 FLOPs per multiply-add each, over the causal triangle after ctx. */
    return 4.0 * s->n_heads / tp * s->head_dim * (q * ctx + q * (q + 1) / 2);
}
/* KV bytes one layer reads for a sequence of kv tokens, heads split over tp. Cannot fail. */
static inline double sim_attn_kv_bytes(const sched_model_shape_t *s, int tp, double kv)
{
    return 2.0 * kv * s->n_kv_heads / tp * s->head_dim * s->bytes_per_kv;
}

/* A fitted roofline evaluated for shape s at m tokens over tp GPUs, on a card whose bandwidth
 * and peak are 1/bw_scale and 1/flop_scale times the reference card's. Cannot fail. */
double sim_roof_eval(const sim_roof_fit_t *f, const sched_model_shape_t *s, int tp, sim_op_t op,
                     double m, double bw_scale, double flop_scale);
/* The table interpolated linearly in log M (clamped to its range). Cannot fail. */
double sim_calib_interp(const sim_op_table_t *tab, sim_op_t op, double m);
/* All-reduce seconds for `bytes` over `workers` GPUs, interpolated in log bytes, extrapolated
 * linearly in bytes beyond the table; < 0 when the table lacks that worker count. */
double sim_calib_allreduce(const sim_calib_t *c, int workers, double bytes);
/* The same over one table (n >= 1). Cannot fail. */
double sim_ar_interp(const sim_ar_table_t *a, double bytes);

/* One row of the held-out check. */
typedef struct sim_check_row {
    char op[32];       /* "attn_pre_proj", "attention_decode", "all_reduce" */
    int tp;            /* 0 where not applicable */
    int n_fit, n_held;
    double mape_model; /* median |pred - meas| / meas over held-out points, the model as the
                          simulator uses it (table interpolation; fitted formula for attention) */
    double mape_roof;  /* the same for the fitted roofline alone (what other shapes/M rely on) */
    bool gated;        /* counts toward the 5% target */
} sim_check_row_t;

/* Runs the held-out check on a calibration loaded with holdout = true: fills up to cap rows,
 * returns how many. Cannot fail. */
int sim_calib_check(const sim_calib_t *c, sim_check_row_t *rows, int cap);

/* Weighted least squares y ~ X c with weights 1/y^2, i.e. minimising relative error, over n rows
 * of p columns (X row-major); c receives p coefficients. SL_EINVAL when n < p or GSL finds the
 * system singular, SL_ENOMEM. Shared by the operator fits here and the engine profile fit. */
int sim_fit_relative(const double *x, const double *y, int n, int p, double *c);

#endif
