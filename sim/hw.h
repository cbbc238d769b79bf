/* hw.h — hardware profiles for the simulator: what one GPU can do, and what the host adds per step.
 *
 * A profile is a plain struct; the cost model takes any filled one. Three are built in (a100-40gb,
 * a100-80gb, h100-sxm); more come from a key=value file (sim_hw_load_file) or from any other
 * source that fills the struct (the hook for SQLite profiles written by `sluice profile`: fill a
 * sim_hw_t, check it with sim_hw_validate, hand it to sim_cost_create).
 *
 * Units are SI throughout: bytes, FLOP/s, bytes/s, seconds.
 */
#ifndef SLUICE_SIM_HW_H
#define SLUICE_SIM_HW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sim_hw {
    char name[32];            /* "a100-80gb" */
    char calib_gpu[16];       /* calibration folder whose tables describe this card ("a100", "h100"),
                                 "" = none: pure roofline with the efficiencies below */
    int64_t mem_bytes;        /* device memory */
    double peak_flops;        /* dense fp16 tensor-core FLOP/s (datasheet) */
    double hbm_bw;            /* HBM bytes/s (datasheet) */
    double nvlink_bw;         /* per-GPU NVLink bytes/s, one direction; all-reduce fallback */
    double gemm_eff_flops;    /* roofline efficiencies of a large GEMM / a small-M GEMM (fitted) */
    double gemm_eff_bw;
    double elem_eff_bw;       /* elementwise ops (norm, rope, act, add): bandwidth efficiency */
    double attn_eff_flops;    /* prefill attention: fraction of peak on causal q*kv work */
    double attn_eff_bw;       /* decode attention: fraction of HBM bandwidth on KV bytes */
    double kernel_floor_s;    /* shortest kernel (tail of a launch): ~3-5 us */
    double host_overhead_s;   /* fixed host time per step: schedule, prepare inputs, sample */
    double launch_gap_s;      /* CPU cost of one kernel launch outside a CUDA graph */
    bool cuda_graphs;         /* decode-only steps run as a CUDA graph (no launch gap) */
    double gpu_mem_util;      /* fraction of memory the engine may use (weights + KV + workspace) */
} sim_hw_t;

/* Fills *out with a built-in profile. SL_ENOTFOUND for an unknown name (see sim_hw_names). */
int sim_hw_builtin(const char *name, sim_hw_t *out);
/* "a100-40gb, a100-80gb, h100-sxm". Cannot fail. */
const char *sim_hw_names(void);

/* Reads a profile file: one `key = value` per line, '#' comments, keys as the struct fields
 * (name, calib_gpu, mem_bytes or mem_gb, peak_flops or peak_tflops, hbm_bw or hbm_tbps, ...).
 * `base = a100-80gb` first starts from a built-in. On error returns SL_EIO / SL_EFORMAT /
 * SL_EINVAL with "FILE:LINE: why" in err; *out is then unspecified. */
int sim_hw_load_file(const char *path, sim_hw_t *out, char *err, int errlen);

/* Resolves NAME as a built-in, else as a profile file path. Errors say what is accepted. */
int sim_hw_resolve(const char *name_or_path, sim_hw_t *out, char *err, int errlen);

/* A profile as a JSON object of the file keys above ({"name": "a100-80gb", "mem_bytes": ...}),
 * for the run store's calibration table. Returns false when buf is too small. */
bool sim_hw_to_json(const sim_hw_t *hw, char *buf, size_t len);
/* Reads sim_hw_to_json's text (any key of the file format; numbers or strings) and validates it.
 * SL_EFORMAT (not a JSON object) / SL_EINVAL with the key in err; *out is then unspecified. */
int sim_hw_from_json(const char *json, sim_hw_t *out, char *err, int errlen);

/* Checks every field is in range. SL_EINVAL with "hbm_bw: must be > 0" in err. Cannot fail otherwise. */
int sim_hw_validate(const sim_hw_t *hw, char *err, int errlen);

#endif
