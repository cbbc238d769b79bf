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
    float temperature;        /* > 0 scales logits; <= 0 = greedy. default 1.0 */
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
 * range are ignored. Advances the sampler's PRNG only when it draws (not in greedy mode). */
int eng_sampler_sample(eng_sampler_t *s, eng_sampler_ws_t *ws, const float *logits,
                       const int32_t *prev, int n_prev, int32_t *token, float *logprob);

/* Stop strings over streamed text. text[0..len) is everything generated so far (decoded);
 * stops[0..n_stops) the stop strings (empty ones are ignored).
 * Returns 1 when a stop string occurs: *emit_len = offset of the first occurrence (the text
 * before it is the final output). Returns 0 otherwise: *emit_len = the longest prefix that is safe
 * to send now, i.e. len minus any suffix that is a proper prefix of a stop string and minus a
 * trailing incomplete UTF-8 sequence. Cannot fail. */
int eng_stop_scan(const char *text, size_t len, const char *const *stops, int n_stops,
                  size_t *emit_len);

#endif
