/* threadpool.h — a persistent pool of worker threads running one parallel region at a time.
 *
 * The pool owns n_threads - 1 workers; the caller of eng_cpu_pool_run() is thread 0. A region is
 * one function run by every thread at once (ith = 0..nth-1), the way ggml runs a whole graph: the
 * backend runs a full forward pass as one region and separates its operations with
 * eng_cpu_pool_barrier(), so no thread is created or woken per operation.
 *
 * Work inside a region is split either statically (eng_cpu_split) or dynamically: every thread
 * calls eng_cpu_pool_claim() until it returns a value past its work list. The claim counter is reset
 * by each barrier, so every dynamic loop must be separated from the next one by a barrier.
 *
 * Between regions workers poll for the next one for spin_s seconds (yielding the CPU now and then),
 * then sleep on a condition variable: a region that starts within spin_s finds them running, on
 * cores at full speed; waking a sleeping worker took ~9 ms on a 2-core VM. Not reentrant: one
 * region at a time, run from one thread.
 */
#ifndef SLUICE_ENGINE_CPU_THREADPOOL_H
#define SLUICE_ENGINE_CPU_THREADPOOL_H

#include <stdatomic.h>

typedef struct eng_cpu_pool eng_cpu_pool_t;

/* The body of a region: thread ith of nth. */
typedef void (*eng_cpu_task_fn)(void *arg, int ith, int nth);

/* Creates a pool of n_threads threads in all (the caller counts as one; n_threads <= 0 means the
 * number of online CPUs) whose workers poll spin_s seconds after a region before sleeping. SL_OK,
 * SL_ENOMEM, or SL_EINVAL when threads cannot be started; *out is NULL on error and nothing
 * leaks. */
int eng_cpu_pool_create(int n_threads, double spin_s, eng_cpu_pool_t **out);
/* Stops and joins the workers. NULL is a no-op. */
void eng_cpu_pool_free(eng_cpu_pool_t *p);
/* Threads in the pool, the caller included. */
int eng_cpu_pool_size(const eng_cpu_pool_t *p);

/* Runs fn(arg, ith, nth) on every thread and returns when all have returned. Cannot fail. */
void eng_cpu_pool_run(eng_cpu_pool_t *p, eng_cpu_task_fn fn, void *arg);
/* Inside a region: waits until every thread has arrived, and resets the claim counter. */
void eng_cpu_pool_barrier(eng_cpu_pool_t *p);
/* Inside a region: waits until *v >= target (a count other threads raise with release
 * increments as pieces of work finish), so a task can start as soon as the work it reads is done
 * instead of at a barrier. */
void eng_cpu_pool_await(const atomic_int *v, int target);
/* Inside a region: the next unclaimed work item (0, 1, 2, ...) since the last barrier. */
int eng_cpu_pool_claim(eng_cpu_pool_t *p);

/* Static split of n items: thread ith of nth gets [*lo, *hi). Cannot fail. */
static inline void eng_cpu_split(int n, int ith, int nth, int *lo, int *hi)
{
    int per = (n + nth - 1) / nth;
    *lo = ith * per < n ? ith * per : n;
    *hi = *lo + per < n ? *lo + per : n;
}

#endif
