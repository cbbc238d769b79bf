/* fwd_bench.h — forward passes timed through the backend interface at hand-built step shapes:
 * the grid `sluice profile` fits its step-time model to, and the anchor shapes `sluice validate`
 * times to see how fast the machine runs now against its profile.
 *
 * A bench owns a model, a backend of the engine's kind (threads as given) and a KV pool; a shape is
 * n_pre prompt chunks of q tokens after ctx_pre cached tokens (a logits row each when pre_rows)
 * plus n_dec decoding sequences at context ctx_dec, on disjoint blocks from the bottom of the pool.
 * The KV a shape reads is whatever the pool holds (the timing does not depend on its values);
 * cli_fwd_bench_touch writes the pool first so that attention reads real memory, as in the engine.
 * Not thread-safe: one bench per thread. Errors: a status with the reason in err.
 */
#ifndef SLUICE_CLI_FWD_BENCH_H
#define SLUICE_CLI_FWD_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "include/sluice.h"
#include "sim/profile.h"

enum { CLI_FWD_MAX_SEQS = 256 };

typedef struct cli_fwd_bench cli_fwd_bench_t;

/* Loads model for backend ("cpu", "cuda") with threads (0: all cores), the KV cache's elements kv
 * (the engine's sluice_engine_params.kv_dtype), and sizes scratch for steps of up to max_tokens tokens
 * and CLI_FWD_MAX_SEQS sequences. The pool is allocated by cli_fwd_bench_pool. NULL with err on
 * error. */
cli_fwd_bench_t *cli_fwd_bench_open(const char *model, const char *backend, int threads, sluice_kv_dtype kv,
                                    int max_tokens, char *err, size_t errlen);

/* What the backend offers for the KV pool, in bytes (0: no limit known). */
int64_t cli_fwd_bench_kv_budget(const cli_fwd_bench_t *b);

/* The most blocks of block_size tokens that budget offers (INT_MAX when no limit is known). */
int cli_fwd_bench_blocks_that_fit(const cli_fwd_bench_t *b, int block_size);

/* Allocates the KV pool (num_blocks of block_size tokens), then writes one token into each of its
 * blocks, for at most touch_s seconds: a pool page never written reads as the kernel's shared zero
 * page, which sits in L1 and would make attention over long contexts far cheaper than the engine's.
 * Returns the blocks written (>= 0), or -1 with err. */
int cli_fwd_bench_pool(cli_fwd_bench_t *b, int num_blocks, int block_size, double touch_s, char *err,
                       size_t errlen);

/* Builds a shape (file comment) as the next forward, *pt its work (t = 0). false when it does not
 * fit in CLI_FWD_MAX_SEQS sequences, the scratch or the pool. */
bool cli_fwd_bench_shape(cli_fwd_bench_t *b, int n_pre, int q, int ctx_pre, bool pre_rows, int n_dec, int ctx_dec,
                         sim_profile_point_t *pt);

/* Runs the shape built last once, its time in *t (s): the forward and, where the backend samples
 * (forward_sample), its greedy pick of every row, as the engine's step forward_s counts it. */
int cli_fwd_bench_run(cli_fwd_bench_t *b, double *t, char *err, size_t errlen);

/* Runs it at least once and up to max_reps times while the runs took under max_s in all; *t the
 * median. */
int cli_fwd_bench_median(cli_fwd_bench_t *b, int max_reps, double max_s, double *t, char *err, size_t errlen);

/* One run to warm up (the engine's next step mostly reads what its last one did; a warm-up that
 * took max_s or more is the result), then the same runs, *t their mean: what a long run of steps
 * of this shape costs on average, its rare slow runs included (back to back, stories260K's 0.06-ms
 * decode averaged 1.075x its median, SmolLM2's 15-ms one 1.015x, prompt steps of 50 ms and more
 * 1.00x). */
int cli_fwd_bench_mean(cli_fwd_bench_t *b, int max_reps, double max_s, double *t, char *err, size_t errlen);

/* The anchor shapes (sim_profile_t.anchor_s): decode of 1 sequence at contexts 63 and 255, of 4
 * at 127 and of 8 at 63; prompt chunks of 32 and 128 tokens (each capped at max_tokens). Times
 * each, the median of up to 7 runs within 0.3 s, into t[i] (0 for a shape that does not fit
 * max_seqs, max_seq_len, max_tokens or the pool) and its token count into m[i]. */
enum { CLI_FWD_ANCHORS = SIM_PROFILE_ANCHORS };
int cli_fwd_bench_anchors(cli_fwd_bench_t *b, int max_seqs, int max_seq_len, int max_tokens,
                          double t[CLI_FWD_ANCHORS], int m[CLI_FWD_ANCHORS], char *err, size_t errlen);

/* How long the backend's workers poll after a forward before they sleep, from the next wait on
 * (the bench opens the backend with its default, eng_backend_params_t.idle_spin_s). A no-op for a
 * backend without such workers. */
void cli_fwd_bench_set_idle_spin(cli_fwd_bench_t *b, double spin_s);

/* The median of v[0..n) (sorts v); NAN when n is 0. */
double cli_median(double *v, int n);

void cli_fwd_bench_free(cli_fwd_bench_t *b);

#endif
