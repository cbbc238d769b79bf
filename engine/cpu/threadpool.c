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
 * 3. eng_cpu_pool_await waits the same way for a count other threads raise (a dependency on
 *    particular work rather than on every thread).
 * 4. A region ends when `done` reaches nth - 1 (every worker returned); thread 0 waits for that
 *    as in a barrier.
 * 5. eng_cpu_pool_claim_own: thread i's range [front, back) is one 64-bit word (front << 32 |
 *    back, or RANGE_UNSET until someone first claims from it after a barrier, since the size of
 *    the work list is known only then), so the owner taking the front and a thief taking the back
 *    half are each one compare-and-swap. A thief's new range goes into its own word, which is
 *    empty then and which nobody else writes while it is empty.
 * 6. Adaptive pools: a region's thread count travels in the low bits of `gen` with its number
 *    (ENG_GEN_NTH_BITS), so a worker reads both in one load: reading a separate count after `gen`
 *    could see the next region's, which thread 0 may write while a worker left out of the current
 *    region is still looking at it. A worker with ith >= that count skips the region, and its idle
 *    time runs from the last region it took part in, so a dropped worker goes to sleep after
 *    spin_s. A region on one thread runs on the caller alone, with no wake-up at all. Thread 0 (tl_wait points at its accumulator) times
 *    each wait from the end of the spin: one clock read pair per long wait, none on a quiet run.
 */
#include "engine/cpu/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "sched/status.h"

#define ENG_GEN_NTH_BITS 16 /* a pool has fewer than 2^16 threads */
#define ENG_POOL_POLLS 4096 /* polls of `gen` between clock reads and yields while a worker spins */
#define ENG_BARRIER_SPIN (1 << 14) /* polls in a barrier before yielding the CPU (tens of us: a
                                      * barrier on idle cores takes microseconds; on a loaded machine
                                      * the thread we wait for may need this core) */

#define RANGE_UNSET UINT64_MAX

typedef struct eng_cpu_range {
    _Alignas(64) _Atomic uint64_t word; /* front << 32 | back, or RANGE_UNSET (5) */
} eng_cpu_range_t;

typedef struct eng_cpu_worker {
    eng_cpu_pool_t *pool;
    int ith;
} eng_cpu_worker_t;

struct eng_cpu_pool {
    int nth;
    int run_nth;                /* threads of the current region (5) */
    int adaptive;
    eng_cpu_adapt_t adapt[ENG_CPU_POOL_KINDS];
    _Atomic double spin_s;      /* polling time after a region before a worker sleeps */
    int n_started;              /* workers actually started (for cleanup on error) */
    pthread_t *threads;         /* (nth - 1) */
    eng_cpu_worker_t *workers;  /* (nth - 1) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    eng_cpu_task_fn fn;
    void *arg;
    atomic_ullong gen;          /* region number << ENG_GEN_NTH_BITS | its thread count (5) */
    atomic_int stop;
    atomic_int done;            /* workers finished with the current region */
    atomic_int bar_count;
    atomic_uint bar_phase;
    atomic_int claim;
    eng_cpu_range_t *ranges;    /* (nth) eng_cpu_pool_claim_own's ranges (5) */
};

static void reset_ranges(eng_cpu_pool_t *p)
{
    for (int j = 0; j < p->nth; j++)
        atomic_store_explicit(&p->ranges[j].word, RANGE_UNSET, memory_order_relaxed);
}

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

static _Thread_local double *tl_wait; /* thread 0's long-wait time during a region, else NULL */

static int phase_moved(const void *phase, int seen)
{
    return atomic_load_explicit((const atomic_uint *)phase, memory_order_acquire) != (unsigned)seen;
}

static int count_reached(const void *count, int target)
{
    return atomic_load_explicit((const atomic_int *)count, memory_order_acquire) >= target;
}

/* Spins until ready(v, arg), yielding after ENG_BARRIER_SPIN polls; thread 0 adds the time past
 * the spin to its long waits. */
static void wait_until(int (*ready)(const void *, int), const void *v, int arg)
{
    for (int i = 0; i < ENG_BARRIER_SPIN; i++) {
        if (ready(v, arg))
            return;
        cpu_relax();
    }
    const double t0 = tl_wait ? mono_s() : 0;
    while (!ready(v, arg))
        sched_yield();
    if (tl_wait)
        *tl_wait += mono_s() - t0;
}

static void *worker_main(void *p_)
{
    eng_cpu_worker_t *w = p_;
    eng_cpu_pool_t *p = w->pool;
    unsigned long long seen = 0;
    double last_region = mono_s();
    for (;;) {
        unsigned long long g = atomic_load_explicit(&p->gen, memory_order_acquire);
        const double until = last_region + atomic_load_explicit(&p->spin_s, memory_order_relaxed);
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
        const int nth = (int)(g & ((1u << ENG_GEN_NTH_BITS) - 1));
        if (w->ith >= nth)
            continue;
        p->fn(p->arg, w->ith, nth);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
        last_region = mono_s();
    }
}

void eng_cpu_pool_set_spin(eng_cpu_pool_t *p, double spin_s)
{
    atomic_store_explicit(&p->spin_s, spin_s > 0 ? spin_s : 0, memory_order_relaxed);
}

int eng_cpu_pool_create(int n_threads, double spin_s, int adaptive, eng_cpu_pool_t **out)
{
    *out = NULL;
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    if (n_threads >= 1 << ENG_GEN_NTH_BITS)
        return SL_EINVAL;
    eng_cpu_pool_t *p = sl_calloc(1, sizeof *p);
    if (!p)
        return SL_ENOMEM;
    p->nth = p->run_nth = n_threads;
    p->ranges = aligned_alloc(_Alignof(eng_cpu_range_t), (size_t)n_threads * sizeof *p->ranges);
    if (!p->ranges) {
        sl_free(p);
        return SL_ENOMEM;
    }
    reset_ranges(p);
    p->adaptive = adaptive != 0 && n_threads > 1;
    for (int k = 0; k < ENG_CPU_POOL_KINDS; k++)
        eng_cpu_adapt_init(&p->adapt[k], n_threads);
    eng_cpu_pool_set_spin(p, spin_s);
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
    free(p->ranges);
    sl_free(p);
}

int eng_cpu_pool_size(const eng_cpu_pool_t *p)
{
    return p->nth;
}

int eng_cpu_pool_active(const eng_cpu_pool_t *p, int kind)
{
    return p->adaptive ? p->adapt[kind].active : p->nth;
}

long eng_cpu_pool_drops(const eng_cpu_pool_t *p)
{
    long n = 0;
    for (int k = 0; k < ENG_CPU_POOL_KINDS; k++)
        n += p->adapt[k].drops;
    return n;
}

/* One region on p->run_nth threads. */
static void run_region(eng_cpu_pool_t *p, eng_cpu_task_fn fn, void *arg)
{
    atomic_store(&p->claim, 0);
    reset_ranges(p);
    if (p->run_nth == 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store(&p->done, 0);
    atomic_store(&p->bar_count, 0);
    pthread_mutex_lock(&p->mu);
    const unsigned long long next = (atomic_load_explicit(&p->gen, memory_order_relaxed) >> ENG_GEN_NTH_BITS) + 1;
    atomic_store_explicit(&p->gen, next << ENG_GEN_NTH_BITS | (unsigned)p->run_nth, memory_order_release);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    fn(arg, 0, p->run_nth);
    wait_until(count_reached, &p->done, p->run_nth - 1);
}

void eng_cpu_pool_run(eng_cpu_pool_t *p, int kind, eng_cpu_task_fn fn, void *arg)
{
    if (!p->adaptive) {
        run_region(p, fn, arg);
        return;
    }
    double wait_s = 0;
    eng_cpu_adapt_t *a = &p->adapt[kind];
    p->run_nth = a->active;
    tl_wait = &wait_s;
    const double t0 = mono_s();
    run_region(p, fn, arg);
    const double t1 = mono_s();
    tl_wait = NULL;
    eng_cpu_adapt_update(a, t1 - t0, wait_s, t1);
}

void eng_cpu_pool_barrier(eng_cpu_pool_t *p)
{
    if (p->run_nth == 1) {
        atomic_store(&p->claim, 0);
        reset_ranges(p);
        return;
    }
    unsigned phase = atomic_load_explicit(&p->bar_phase, memory_order_acquire);
    if (atomic_fetch_add_explicit(&p->bar_count, 1, memory_order_acq_rel) == p->run_nth - 1) {
        atomic_store_explicit(&p->bar_count, 0, memory_order_relaxed);
        atomic_store_explicit(&p->claim, 0, memory_order_relaxed);
        reset_ranges(p);
        atomic_store_explicit(&p->bar_phase, phase + 1, memory_order_release);
        return;
    }
    wait_until(phase_moved, &p->bar_phase, (int)phase);
}

void eng_cpu_pool_await(const atomic_int *v, int target)
{
    wait_until(count_reached, v, target);
}

int eng_cpu_pool_claim(eng_cpu_pool_t *p)
{
    return atomic_fetch_add_explicit(&p->claim, 1, memory_order_relaxed);
}

static uint64_t range_word(uint32_t front, uint32_t back)
{
    return (uint64_t)front << 32 | back;
}

/* Thread j's range of n items as its word w says: [*front, *back) */
static void range_of(const eng_cpu_pool_t *p, uint64_t w, int j, int n, int *front, int *back)
{
    if (w == RANGE_UNSET) {
        eng_cpu_split(n, j, p->run_nth, front, back);
        return;
    }
    *front = (int)(w >> 32);
    *back = (int)(uint32_t)w;
}

int eng_cpu_pool_claim_own(eng_cpu_pool_t *p, int ith, int n)
{
    _Atomic uint64_t *own = &p->ranges[ith].word;
    for (;;) { /* the own range, from the front */
        uint64_t w = atomic_load_explicit(own, memory_order_acquire);
        int front, back;
        range_of(p, w, ith, n, &front, &back);
        if (front >= back)
            break;
        if (atomic_compare_exchange_weak_explicit(own, &w, range_word((uint32_t)front + 1, (uint32_t)back),
                                                  memory_order_acq_rel, memory_order_acquire))
            return front;
    }
    for (;;) { /* the back half of the fullest other range */
        int victim = -1, most = 0;
        uint64_t seen = 0;
        for (int j = 0; j < p->run_nth; j++) {
            const uint64_t w = atomic_load_explicit(&p->ranges[j].word, memory_order_acquire);
            int front, back;
            range_of(p, w, j, n, &front, &back);
            if (j != ith && back - front > most)
                victim = j, most = back - front, seen = w;
        }
        if (victim < 0)
            return n;
        int front, back;
        range_of(p, seen, victim, n, &front, &back);
        const int first = back - (back - front + 1) / 2;
        if (atomic_compare_exchange_strong_explicit(&p->ranges[victim].word, &seen,
                                                    range_word((uint32_t)front, (uint32_t)first),
                                                    memory_order_acq_rel, memory_order_acquire)) {
            atomic_store_explicit(own, range_word((uint32_t)first + 1, (uint32_t)back), memory_order_release);
            return first;
        }
    }
}

/* ---- the adaptive thread count ---- */

void eng_cpu_adapt_init(eng_cpu_adapt_t *a, int max)
{
    *a = (eng_cpu_adapt_t){.max = max, .active = max, .backoff_s = ENG_ADAPT_BACKOFF_MIN_S};
}

int eng_cpu_adapt_update(eng_cpu_adapt_t *a, double region_s, double wait_s, double now)
{
    if (a->warmup) {
        a->warmup = 0;
        return a->active;
    }
    a->win_s += region_s;
    a->wait_s += wait_s;
    if (a->win_s >= ENG_ADAPT_WINDOW_S) {
        const int over = a->wait_s > ENG_ADAPT_WAIT_SHARE * a->win_s;
        a->over = over ? a->over + 1 : 0;
        const int contended = a->over >= ENG_ADAPT_WINDOWS;
        a->win_s = a->wait_s = 0;
        if (contended && a->active > 1) {
            /* a drop soon after a try is the try failing: the next waits twice as long; a drop
             * long after one starts over */
            const int failed = a->tried && now - a->tried_at < ENG_ADAPT_TRY_S;
            a->backoff_s = !failed ? ENG_ADAPT_BACKOFF_MIN_S
                           : 2 * a->backoff_s < ENG_ADAPT_BACKOFF_MAX_S ? 2 * a->backoff_s
                                                                         : ENG_ADAPT_BACKOFF_MAX_S;
            a->probing = 0;
            a->over = 0;
            a->active--;
            a->drops++;
            a->probe_at = now + a->backoff_s;
            return a->active;
        }
        if (!over)
            a->probing = 0; /* a window under the share lets the next thread be tried */
    }
    if (!a->probing && a->active < a->max && now >= a->probe_at) {
        a->active++;
        a->probing = 1;
        a->tried = 1;
        a->tried_at = now;
        a->warmup = 1;
        a->win_s = a->wait_s = 0;
        a->over = 0;
    }
    return a->active;
}
