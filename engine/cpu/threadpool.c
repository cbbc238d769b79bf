/* threadpool.c — persistent workers, a spinning barrier and a claim counter (see threadpool.h).
 *
 * Design notes:
 * 1. A region starts when thread 0 bumps `gen`. Workers poll it for spin_s seconds after their
 *    last region (a decode step follows the previous one within microseconds; the engine's next
 *    request may come later), reading the clock and yielding every ENG_POOL_POLLS polls, then
 *    sleep on `cv`; thread 0 always broadcasts under the mutex after bumping, so a worker that
 *    checked `gen` under the mutex before sleeping cannot miss it.
 * 2. The barrier is sense-reversing: the last thread to arrive resets the count and the claim
 *    counter, then flips `bar_phase`; the others spin (yielding after a while, so an oversubscribed
 *    machine still makes progress) until the phase changes. Spin-then-futex-wait was measured
 *    against this on the 2-core Zen 1 with a `yes` on one core: decode 18-21 tok/s against
 *    24-31 (the futex wake-up latency on every barrier costs more than yielding does).
 * 4. eng_cpu_pool_await waits the same way for a count other threads raise (a dependency on
 *    particular work rather than on every thread).
 * 5. A region ends when `done` reaches nth - 1 (every worker returned); thread 0 waits for that
 *    as in a barrier.
 */
#include "engine/cpu/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "sched/status.h"

#define ENG_POOL_POLLS 4096 /* polls of `gen` between clock reads and yields while a worker spins */
#define ENG_BARRIER_SPIN (1 << 14) /* polls in a barrier before yielding the CPU (tens of us: a
                                      * barrier on idle cores takes microseconds; on a loaded machine
                                      * the thread we wait for may need this core) */

typedef struct eng_cpu_worker {
    eng_cpu_pool_t *pool;
    int ith;
} eng_cpu_worker_t;

struct eng_cpu_pool {
    int nth;
    double spin_s;              /* polling time after a region before a worker sleeps */
    int n_started;              /* workers actually started (for cleanup on error) */
    pthread_t *threads;         /* (nth - 1) */
    eng_cpu_worker_t *workers;  /* (nth - 1) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    eng_cpu_task_fn fn;
    void *arg;
    atomic_uint gen;            /* region counter; bumped to start a region */
    atomic_int stop;
    atomic_int done;            /* workers finished with the current region */
    atomic_int bar_count;
    atomic_uint bar_phase;
    atomic_int claim;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *worker_main(void *p_)
{
    eng_cpu_worker_t *w = p_;
    eng_cpu_pool_t *p = w->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned g = atomic_load_explicit(&p->gen, memory_order_acquire);
        const double until = mono_s() + p->spin_s;
        for (int i = 1; g == seen; i++) {
            cpu_relax();
            g = atomic_load_explicit(&p->gen, memory_order_acquire);
            if (i % ENG_POOL_POLLS == 0 && g == seen) {
                if (mono_s() >= until || atomic_load(&p->stop))
                    break;
                sched_yield();
            }
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            while ((g = atomic_load(&p->gen)) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop))
            return NULL;
        seen = g;
        p->fn(p->arg, w->ith, p->nth);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
    }
}

int eng_cpu_pool_create(int n_threads, double spin_s, eng_cpu_pool_t **out)
{
    *out = NULL;
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    eng_cpu_pool_t *p = sl_calloc(1, sizeof *p);
    if (!p)
        return SL_ENOMEM;
    p->nth = n_threads;
    p->spin_s = spin_s > 0 ? spin_s : 0;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (n_threads > 1) {
        p->threads = sl_calloc((size_t)n_threads - 1, sizeof *p->threads);
        p->workers = sl_calloc((size_t)n_threads - 1, sizeof *p->workers);
        if (!p->threads || !p->workers) {
            eng_cpu_pool_free(p);
            return SL_ENOMEM;
        }
    }
    for (int i = 0; i < n_threads - 1; i++) {
        p->workers[i] = (eng_cpu_worker_t){p, i + 1};
        if (pthread_create(&p->threads[i], NULL, worker_main, &p->workers[i]) != 0) {
            eng_cpu_pool_free(p);
            return SL_EINVAL;
        }
        p->n_started++;
    }
    *out = p;
    return SL_OK;
}

void eng_cpu_pool_free(eng_cpu_pool_t *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_started; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    sl_free(p->threads);
    sl_free(p->workers);
    sl_free(p);
}

int eng_cpu_pool_size(const eng_cpu_pool_t *p)
{
    return p->nth;
}

void eng_cpu_pool_run(eng_cpu_pool_t *p, eng_cpu_task_fn fn, void *arg)
{
    if (p->nth == 1) {
        atomic_store(&p->claim, 0);
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store(&p->done, 0);
    atomic_store(&p->claim, 0);
    atomic_store(&p->bar_count, 0);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    fn(arg, 0, p->nth);
    for (int i = 0; atomic_load_explicit(&p->done, memory_order_acquire) != p->nth - 1; i++) {
        if (i < ENG_BARRIER_SPIN)
            cpu_relax();
        else
            sched_yield();
    }
}

void eng_cpu_pool_barrier(eng_cpu_pool_t *p)
{
    if (p->nth == 1) {
        atomic_store(&p->claim, 0);
        return;
    }
    unsigned phase = atomic_load_explicit(&p->bar_phase, memory_order_acquire);
    if (atomic_fetch_add_explicit(&p->bar_count, 1, memory_order_acq_rel) == p->nth - 1) {
        atomic_store_explicit(&p->bar_count, 0, memory_order_relaxed);
        atomic_store_explicit(&p->claim, 0, memory_order_relaxed);
        atomic_store_explicit(&p->bar_phase, phase + 1, memory_order_release);
        return;
    }
    for (int i = 0; atomic_load_explicit(&p->bar_phase, memory_order_acquire) == phase; i++) {
        if (i < ENG_BARRIER_SPIN)
            cpu_relax();
        else
            sched_yield();
    }
}

void eng_cpu_pool_await(const atomic_int *v, int target)
{
    for (int i = 0; atomic_load_explicit(v, memory_order_acquire) < target; i++) {
        if (i < ENG_BARRIER_SPIN)
            cpu_relax();
        else
            sched_yield();
    }
}

int eng_cpu_pool_claim(eng_cpu_pool_t *p)
{
    return atomic_fetch_add_explicit(&p->claim, 1, memory_order_relaxed);
}
