/* sampler.h — picks the next token from one row of logits; stop-string matching for streaming.
 *
 * Pipeline, in this order (vLLM's): penalties (repetition over the last repetition_last_n tokens,
 * frequency, presence) -> greedy if temperature <= 0 or top_k == 1 -> divide by temperature ->
 * top-k (partial selection, no full sort) -> softmax -> top-p (smallest set of most probable tokens
 * whose mass reaches top_p; grows a partially sorted prefix, no full sort) -> min-p (drop tokens
 * below min_p * the top probability) -> draw from what is left.
 *
 * State: eng_sampler_t is a small value (params + its own PRNG) that a sequence embeds; it is the
 * only thing a draw changes, so a sequence's tokens depend on its seed alone, never on what else
 * is in the batch. eng_sampler_ws_t is scratch sized for the vocabulary; one per thread, shared
 * by all the sequences that thread samples. Neither is thread-safe on its own.
 */
#ifndef SLUICE_ENGINE_SAMPLER_H
#define SLUICE_ENGINE_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

typedef struct eng_sampler_params {
    float temperature;        /* > 0 scales logits; <= 0 (or so small that 1 / T overflows) = greedy.
                                 default 1.0 */
    int top_k;                /* keep the k most likely; 0 = off. default 0 */
    float top_p;              /* nucleus mass in (0, 1]; 1 = off. default 1.0 */
    float min_p;              /* drop p < min_p * p_max; 0 = off. default 0 */
    float repetition_penalty; /* > 1 discourages repeats (logit / rp if > 0, * rp if < 0); 1 = off */
    int repetition_last_n;    /* window of previous tokens the penalties see; -1 = all. default 64 */
    float frequency_penalty;  /* logit -= fp * count in the window. default 0 */
    float presence_penalty;   /* logit -= pp if present in the window. default 0 */
    uint64_t seed;            /* PRNG seed. default 0 */
} eng_sampler_params_t;

/* The defaults above. Cannot fail. */
eng_sampler_params_t eng_sampler_params_default(void);

typedef struct eng_sampler {
    eng_sampler_params_t p;
    uint64_t rng;             /* splitmix64 state */
} eng_sampler_t;

/* Initialises a sampler from params (seeds its PRNG from p->seed). Cannot fail. */
void eng_sampler_init(eng_sampler_t *s, const eng_sampler_params_t *p);

typedef struct eng_sampler_ws eng_sampler_ws_t;
/* Scratch for rows of vocab logits. NULL on out of memory or vocab <= 0. */
eng_sampler_ws_t *eng_sampler_ws_create(int vocab);
void eng_sampler_ws_free(eng_sampler_ws_t *ws);

/* Samples one token from logits[0..vocab) (vocab as the workspace was created with), given the
 * sequence's previous tokens prev[0..n_prev) (prompt and output; only the window is used). Writes
 * the token to *token and, if logprob is not NULL, its log-probability under the model's raw
 * distribution (log-softmax of the unmodified row: what logprobs and best_of report). Returns
 * SL_OK, or SL_EINVAL when the row has no finite logit (*token untouched). Previous tokens out of
 * range are ignored. Advances the sampler's PRNG only when it draws (not in greedy mode).
 * Equivalent to eng_sampler_prepare followed by eng_sampler_pick. */
int eng_sampler_sample(eng_sampler_t *s, eng_sampler_ws_t *ws, const float *logits,
                       const int32_t *prev, int n_prev, int32_t *token, float *logprob);

/* ---- the two halves of a draw, for backends that select on the device ------------------------
 *
 * A draw splits into what depends on the sequence (its parameters, the tokens its penalties see,
 * its PRNG) and a pure function of (logits row, that description). eng_sampler_prepare makes the
 * description on the host; eng_sampler_pick is the reference selection a device kernel mirrors
 * (engine/cuda: eng_cuda_launch_sample), so both give the same token for the same row.
 *
 * The selection is canonical, independent of how it is computed: top-k keeps the k largest
 * penalised logits, ties to the lower token id; top-p orders the candidates by probability, ties
 * to the lower id, and keeps the shortest prefix whose mass reaches top_p of theirs; the draw then
 * walks the survivors in token-id order and takes the first whose running mass exceeds u * total. */
typedef struct eng_sample_row {
    float temperature;        /* <= 0: greedy */
    int top_k;                /* 0: off; 1: greedy */
    float top_p;              /* 1: off */
    float min_p;              /* 0: off */
    float repetition_penalty, frequency_penalty, presence_penalty;
    int pen_off;              /* this row's first (token, count) pair in the step's pair array */
    int n_pen;                /* its pairs: pen[2 (pen_off + i)] a token, pen[2 (pen_off + i) + 1]
                                 how often it occurs in the window (each token once) */
    int pad_;
    double u;                 /* the uniform [0, 1) draw; 0 for greedy rows */
} eng_sample_row_t;

/* Pairs eng_sampler_prepare may append for a sequence with n_prev previous tokens. */
int eng_sampler_max_pairs(const eng_sampler_t *s, int n_prev);

/* Describes the sequence's next draw in *row and appends its penalty pairs at pen[2 pen_off ...]
 * (room for eng_sampler_max_pairs pairs). Draws u from the PRNG when the row samples (temperature
 * > 0 and top_k != 1), so the sequence's stream is the same as eng_sampler_sample's. Returns the
 * number of pairs appended. ws: any workspace of the model's vocabulary (scratch counts). */
int eng_sampler_prepare(eng_sampler_t *s, eng_sampler_ws_t *ws, const int32_t *prev, int n_prev,
                        eng_sample_row_t *row, int32_t *pen, int pen_off);

/* SL_OK when n_rows rows and their n_pen pairs are safe to pick with for a vocabulary of vocab:
 * every row's pairs inside pen, every pair's token inside the vocabulary. Else SL_EINVAL with
 * the first problem in err ("row 3's pairs [10, +4) are outside the 12 given"). */
int eng_sample_rows_check(const eng_sample_row_t *rows, int n_rows, const int32_t *pen, int n_pen,
                          int vocab, char *err, int errlen);

/* The selection of row over logits[0..vocab) (pen as prepared): token and raw log-probability as
 * eng_sampler_sample documents. SL_OK, or SL_EINVAL when the row has no finite logit. */
int eng_sampler_pick(eng_sampler_ws_t *ws, const float *logits, const eng_sample_row_t *row,
                     const int32_t *pen, int32_t *token, float *logprob);

/* Stop strings over streamed text. text[0..len) is everything generated so far (decoded);
 * stops[0..n_stops) the stop strings (empty ones are ignored).
 * Returns 1 when a stop string occurs: *emit_len = offset of the first occurrence (the text
 * before it is the final output). Returns 0 otherwise: *emit_len = the longest prefix that is safe
 * to send now, i.e. len minus any suffix that is a proper prefix of a stop string and minus a
 * trailing incomplete UTF-8 sequence. Cannot fail. */
int eng_stop_scan(const char *text, size_t len, const char *const *stops, int n_stops,
                  size_t *emit_len);

#endif
