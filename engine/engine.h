/* engine.h — the serving loop: what sluice's own code (cli/, engine/http/) uses beyond include/sluice.h.
 *
 * The engine IS the public API: engine/engine.c implements every sluice_* function of
 * include/sluice.h (one source of truth: the types there are the engine's types). This header adds
 * what only in-tree callers need, with the eng_ prefix:
 *   - creating an engine from a full sched_config_t (cli/sched_opts parses one from flags and JSON),
 *     so every scheduler knob, not only the public subset, reaches the one scheduler;
 *   - read access to the loaded model (tokenizer, chat template) and the scheduler's config.
 * Run records (analysis/) are built from sluice_result (timeline, token times) and on_step.
 *
 * Design (details at the top of engine.c): one engine thread owns the sched_t and the backend.
 * Callers' threads only take the engine lock to submit (sched_submit), cancel (sched_abort) or read
 * stats; the engine thread plans under the lock, runs the forward pass and sampling outside it,
 * commits under it, then calls the token and completion callbacks outside it.
 */
#ifndef SLUICE_ENGINE_ENGINE_H
#define SLUICE_ENGINE_ENGINE_H

#include "engine/model.h"
#include "include/sluice.h"
#include "sched/sched.h"

/* Like sluice_engine_create(), but the scheduler runs with *sched exactly (strategy, knobs, KV block
 * size). sched->num_blocks and sched->model are filled by the engine (KV pool sizing and the
 * model's real shape for MEMORY_AWARE); sched->max_sequence_length 0 means "from params". The
 * batching fields of params are ignored. NULL + err on error, as sluice_engine_create(). */
sluice_engine *eng_engine_create(const sluice_engine_params *params, const sched_config_t *sched,
                                 char *err, size_t errlen);

/* Maps the batching fields of params onto sched_config_default(). Cannot fail (validation happens
 * in create). */
sched_config_t eng_sched_config_from_params(const sluice_engine_params *params);

/* The loaded model (immutable; tokenizer and chat template for the HTTP layer). Cannot fail. */
const eng_model_t *eng_engine_model(const sluice_engine *e);

/* The scheduler's config as the engine built it (num_blocks, block_size, max_sequence_length are
 * the effective values): the starting config; with params.adaptive the live token budget and batch
 * timeout may have moved since (sluice_get_stats reports them). Cannot fail. */
const sched_config_t *eng_engine_sched_config(const sluice_engine *e);

/* The backend's name ("cpu", "cuda"). Cannot fail. */
const char *eng_engine_backend_name(const sluice_engine *e);

#endif
