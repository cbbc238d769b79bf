/* threadpool.h — a persistent pool of worker threads running one parallel region at a time.
 *
 * The pool owns n_threads - 1 workers; the caller of eng_cpu_pool_run() is thread 0. A region is
 * one function run by every thread at once (ith = 0..nth-1), the way ggml runs a whole graph: the
 * backend runs a full forward pass as one region and separates its operations with
 * eng_cpu_pool_barrier(), so no thread is created or woken per operation.
 *
 * Work inside a region is split either statically (eng_cpu_split) or dynamically: every thread
 * calls eng_cpu_pool_claim() (items in one shared order) or eng_cpu_pool_claim_own() (each thread
 * its own contiguous range first, then a share of the others') until it returns a value past its
 * work list. The claims are reset by each barrier, so every dynamic loop must be separated from
 * the next one by a barrier.
 *
 * Between regions workers poll for the next one for spin_s seconds (yielding the CPU now and then),
 * then sleep on a condition variable: a region that starts within spin_s finds them running, on
 * cores at full speed; waking a sleeping worker took ~9 ms on a 2-core VM. Not reentrant: one
 * region at a time, run from one thread.
 *
 * An adaptive pool runs its regions on fewer threads while other processes hold its cores. Every
 * barrier waits for every running thread, so one worker that the OS has descheduled stalls all the
 * others until it gets a core back: on 2 cores with one busy, 2 threads decoded at 40 tok/s where
 * 1 thread decoded at 70. Thread 0 times its waits that outlast the spin (a worker that is
 * computing arrives within the spin; one that is not running does not); two windows of 20 ms of
 * regions in a row with waits over 35% of the time drop a thread, and after a backoff a region
 * runs on one thread more again (eng_cpu_adapt_update). Regions are of a kind, and each kind has a
 * count of its own: with one of 2 cores busy, decode steps (barriers every ~80 us, so an absent
 * worker stalls thread 0 at once) ran at 70 tok/s on 1 thread against 40 on 2, while 512-token
 * prompt steps (phases of ~20 ms, which thread 0 mostly finishes alone; 2% waiting) ran at 190 on
 * 2 threads against 160 on 1. Results do not depend on the count: work is split by items, not
 * by threads, wherever the order of a sum could change.
 */
#ifndef SLUICE_ENGINE_CPU_THREADPOOL_H
#define SLUICE_ENGINE_CPU_THREADPOOL_H

#include <stdatomic.h>

typedef struct eng_cpu_pool eng_cpu_pool_t;

/* The body of a region: thread ith of nth. */
typedef void (*eng_cpu_task_fn)(void *arg, int ith, int nth);

/* Creates a pool of n_threads threads in all (the caller counts as one; n_threads <= 0 means the
 * number of online CPUs) whose workers poll spin_s seconds after a region before sleeping; with
 * adaptive set, regions run on fewer threads while the machine is oversubscribed (above). SL_OK,
 * SL_ENOMEM, or SL_EINVAL when threads cannot be started (or n_threads >= 65536); *out is NULL on
 * error and nothing leaks. */
int eng_cpu_pool_create(int n_threads, double spin_s, int adaptive, eng_cpu_pool_t **out);
/* Stops and joins the workers. NULL is a no-op. */
void eng_cpu_pool_free(eng_cpu_pool_t *p);
/* Sets how long workers poll after a region before they sleep (spin_s <= 0: not at all), from
 * the wait after their current region on. Cannot fail. */
void eng_cpu_pool_set_spin(eng_cpu_pool_t *p, double spin_s);
/* Threads in the pool, the caller included. */
int eng_cpu_pool_size(const eng_cpu_pool_t *p);

#define ENG_CPU_POOL_KINDS 2 /* kinds of regions with a thread count each (0: short steps, 1: long) */

/* Threads the next region of a kind runs on (eng_cpu_pool_size unless an adaptive pool dropped
 * some), and how many times the pool has dropped a thread, all kinds, since it was created. */
int eng_cpu_pool_active(const eng_cpu_pool_t *p, int kind);
long eng_cpu_pool_drops(const eng_cpu_pool_t *p);

/* Runs fn(arg, ith, nth) on nth = eng_cpu_pool_active(p, kind) threads and returns when all have
 * returned. kind is 0..ENG_CPU_POOL_KINDS-1. Cannot fail. */
void eng_cpu_pool_run(eng_cpu_pool_t *p, int kind, eng_cpu_task_fn fn, void *arg);
/* Inside a region: waits until every thread has arrived, and resets the claim counter. */
void eng_cpu_pool_barrier(eng_cpu_pool_t *p);
/* Inside a region: waits until *v >= target (a count other threads raise with release
 * increments as pieces of work finish), so a task can start as soon as the work it reads is done
 * instead of at a barrier. */
void eng_cpu_pool_await(const atomic_int *v, int target);
/* Inside a region: the next unclaimed work item (0, 1, 2, ...) since the last barrier. */
int eng_cpu_pool_claim(eng_cpu_pool_t *p);
/* Inside a region: the next item of a work list of n items for thread ith, or n when none is
 * left. The list is split as eng_cpu_split splits it; a thread takes its own range's items in
 * order, then the back half of what is left of the fullest other range (and goes on from there in
 * order). A matrix product's rows stream from memory: in order, each thread's prefetch of the rows
 * after a chunk is for its own next chunk (claimed in one shared order, every other chunk started
 * cold: a 16-sequence decode step's products ran 20-30% slower), while stealing still evens out a
 * thread that the host slows. Every thread must pass the same n until the next barrier; not to be
 * mixed with eng_cpu_pool_claim in one loop. */
int eng_cpu_pool_claim_own(eng_cpu_pool_t *p, int ith, int n);

/* Static split of n items: thread ith of nth gets [*lo, *hi). Cannot fail. */
static inline void eng_cpu_split(int n, int ith, int nth, int *lo, int *hi)
{
    int per = (n + nth - 1) / nth;
    *lo = ith * per < n ? ith * per : n;
    *hi = *lo + per < n ? *lo + per : n;
}

/* ---- the adaptive thread count (pure: time is an argument) ---- */

#define ENG_ADAPT_WINDOW_S 0.02    /* regions' time judged at once */
#define ENG_ADAPT_WAIT_SHARE 0.35  /* thread 0's long waits over this share of ENG_ADAPT_WINDOWS
                                    * windows in a row drop a thread (a quiet 2-core VM: 0% in most
                                    * windows, up to 28% in one; one busy core: 23-55%, most over 35%) */
#define ENG_ADAPT_WINDOWS 2
#define ENG_ADAPT_BACKOFF_MIN_S 0.25 /* first wait before a dropped thread is tried again */
#define ENG_ADAPT_BACKOFF_MAX_S 8.0  /* the wait doubles after each try that fails, up to this */
#define ENG_ADAPT_TRY_S 1.0          /* a drop this soon after a thread was tried is the try failing */

typedef struct eng_cpu_adapt {
    int max;           /* the pool's threads */
    int active;        /* threads the next region runs on */
    double win_s;      /* regions' time in the current window */
    double wait_s;     /* thread 0's long waits in them */
    double probe_at;   /* when active < max: from this time on, try one thread more */
    double backoff_s;  /* the wait set at the next drop */
    int over;          /* windows in a row over the share */
    int probing;       /* a thread was added and no window under the share has followed yet */
    int tried;         /* a thread has been tried, at tried_at */
    double tried_at;
    int warmup;        /* the next region is not counted (a worker that slept is waking up) */
    long drops;
} eng_cpu_adapt_t;

void eng_cpu_adapt_init(eng_cpu_adapt_t *a, int max);
/* Counts one region: its wall time and thread 0's long waits in it, ended at time now (seconds,
 * any fixed origin). Returns the threads for the next region (a->active). */
int eng_cpu_adapt_update(eng_cpu_adapt_t *a, double region_s, double wait_s, double now);

#endif
