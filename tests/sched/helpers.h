/* helpers.h — shared fixtures for the sched/ suites: small configs, submit, plan, commit. */
#ifndef SLUICE_TESTS_SCHED_HELPERS_H
#define SLUICE_TESTS_SCHED_HELPERS_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sched/sched.h"

/* A small pool (64 blocks of 4 tokens) so block pressure is easy to craft. */
static inline sched_config_t small_config(sched_strategy_t strategy)
{
    sched_config_t c = sched_config_default();
    c.strategy = strategy;
    c.block_size = 4;
    c.num_blocks = 64;
    c.max_sequence_length = 256;
    c.max_num_batched_tokens = 64;
    c.max_num_seqs = 16;
    c.max_batch_size = 4;
    c.batch_timeout_ms = 100;
    return c;
}

static inline sched_t *make_sched(const sched_config_t *c)
{
    char err[256] = "";
    sched_t *s = sched_create(c, err, sizeof err);
    if (!s)
        fail_msg("sched_create: %s", err);
    return s;
}

static inline void assert_invariants(const sched_t *s)
{
    char err[256] = "";
    int rc = sched_check_invariants(s, err, sizeof err);
    if (rc != SL_OK)
        fail_msg("invariant broken: %s", err);
}

/* Length-only request (prompt NULL). */
static inline int submit_len(sched_t *s, uint64_t id, int priority, double arrival, int prompt_len, int max_new)
{
    sched_request_t r = {.id = id, .priority = priority, .arrival = arrival, .prompt_len = prompt_len,
                         .max_new_tokens = max_new};
    return sched_submit(s, &r, arrival);
}

/* Request with token ids. */
static inline int submit_tokens(sched_t *s, uint64_t id, double arrival, const int32_t *prompt, int prompt_len,
                                int max_new)
{
    sched_request_t r = {.id = id, .arrival = arrival, .prompt = prompt, .prompt_len = prompt_len,
                         .max_new_tokens = max_new};
    return sched_submit(s, &r, arrival);
}

static inline int plan(sched_t *s, double now, sched_step_t *step)
{
    double wake;
    return sched_plan(s, now, step, &wake);
}

static inline const sched_seq_step_t *seq_of(const sched_step_t *step, uint64_t id)
{
    for (int i = 0; i < step->n_seqs; i++)
        if (step->seqs[i].req_id == id)
            return &step->seqs[i];
    return NULL;
}

/* Commits a step: each sampling sequence produces 1 + accepted[i] tokens (accepted NULL: none
 * accepted) with id 7000 + step token index; a finish reason for id `eos_id` (0: none). */
static inline void commit_step(sched_t *s, const sched_step_t *step, double now, const int *accepted,
                               uint64_t eos_id)
{
    sched_seq_result_t res[256];
    int32_t toks[256][17];
    assert_true(step->n_seqs <= 256);
    for (int i = 0; i < step->n_seqs; i++) {
        const sched_seq_step_t *q = &step->seqs[i];
        int n = q->sample ? 1 + (accepted ? accepted[i] : 0) : 0;
        for (int t = 0; t < n; t++)
            toks[i][t] = 7000 + t;
        res[i] = (sched_seq_result_t){.n_tokens = n, .tokens = toks[i],
                                      .finish = q->req_id == eos_id && eos_id ? SCHED_FINISH_EOS : SCHED_FINISH_NONE};
    }
    sched_result_t r = {.n_seqs = step->n_seqs, .seqs = res};
    assert_int_equal(sched_commit(s, step, &r, now), SL_OK);
}

/* Plans and commits until idle; returns the number of steps. */
static inline int run_until_idle(sched_t *s, double now, int max_steps)
{
    sched_step_t step;
    int n = 0;
    while (n < max_steps && plan(s, now, &step) == SCHED_PLAN_STEP) {
        commit_step(s, &step, now, NULL, 0);
        assert_invariants(s);
        n++;
    }
    return n;
}

#endif
