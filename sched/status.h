/* status.h — the project-wide status codes (0 = OK, negative = error) and the replaceable allocator.
 *
 * Every fallible function in sluice returns one of these codes; the detail a user can act on
 * ("trace.csv:812: column 3: expected a number") goes into the last-error string of the object
 * that failed (each module's *_errmsg()). sl_strerror() names the code itself.
 *
 * The codes come from one X-macro table so names and messages never drift apart (libuv's habit).
 * This header lives in sched/ because sched/ is the root of the dependency graph: every other
 * folder may include it, and it includes nothing of ours.
 */
#ifndef SLUICE_STATUS_H
#define SLUICE_STATUS_H

#include <stddef.h>

#define SL_STATUS_MAP(X)                                                              \
    X(OK, 0, "success")                                                               \
    X(ENOMEM, -1, "out of memory")                                                    \
    X(EINVAL, -2, "invalid argument")                                                 \
    X(EIO, -3, "input/output error")                                                  \
    X(EFORMAT, -4, "malformed input")                                                 \
    X(EUNSUPPORTED, -5, "not supported")                                              \
    X(ENOTFOUND, -6, "not found")                                                     \
    X(EQUEUE_FULL, -7, "queue full")                                                  \
    X(ETOO_LONG, -8, "request longer than the context or the KV pool")                \
    X(ENOBLOCKS, -9, "no free KV block")                                              \
    X(EBUSY, -10, "busy")                                                             \
    X(ESTATE, -11, "call not valid in the current state")                             \
    X(EDEVICE, -12, "device error")                                                   \
    X(EDB, -13, "database error")                                                     \
    X(ECANCELED, -14, "canceled")                                                     \
    X(ETHRESHOLD, -15, "threshold exceeded")

typedef enum sl_status {
#define SL_STATUS_ENUM(name, value, msg) SL_##name = value,
    SL_STATUS_MAP(SL_STATUS_ENUM)
#undef SL_STATUS_ENUM
} sl_status_t;

/* The message for a status code; "unknown status" for a value outside the table. Cannot fail. */
const char *sl_strerror(int status);
/* The symbolic name ("SL_EINVAL") for a status code; "SL_UNKNOWN" outside the table. Cannot fail. */
const char *sl_status_name(int status);

/* Writes a printf-style message into err (when err != NULL and errlen > 0) and returns status:
 * `return sl_errf(err, errlen, SL_EFORMAT, "%s:%d: ...", file, line);`. Cannot fail. */
int sl_errf(char *err, size_t errlen, int status, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* ---- allocation ---------------------------------------------------------------------------
 * All of sluice allocates through these, so tests can fail the Nth allocation and prove that
 * every error path is clean (SQLite's test_malloc habit). They behave as malloc/calloc/realloc/
 * free. sl_alloc_fail_after(n): the (n+1)th allocation from now returns NULL, then all succeed
 * again; n < 0 disables injection. The counter is the only mutable global outside cli/ and it
 * exists for tests alone. */
void *sl_malloc(size_t size);
void *sl_calloc(size_t count, size_t size);
void *sl_realloc(void *ptr, size_t size);
void sl_free(void *ptr);
char *sl_strdup(const char *s);
void sl_alloc_fail_after(long n);

#endif
