/* status.c — status code names and messages, and the allocator with fault injection. */
#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *sl_strerror(int status)
{
    switch (status) {
#define SL_STATUS_MSG(name, value, msg) \
    case value:                         \
        return msg;
        SL_STATUS_MAP(SL_STATUS_MSG)
#undef SL_STATUS_MSG
    }
    return "unknown status";
}

const char *sl_status_name(int status)
{
    switch (status) {
#define SL_STATUS_NAME(name, value, msg) \
    case value:                          \
        return "SL_" #name;
        SL_STATUS_MAP(SL_STATUS_NAME)
#undef SL_STATUS_NAME
    }
    return "SL_UNKNOWN";
}

int sl_errf(char *err, size_t errlen, int status, const char *fmt, ...)
{
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return status;
}

/* Fault injection for tests: allocations left before one fails; negative = never. Atomic because
 * the engine allocates from several threads. */
static _Atomic long alloc_countdown = -1;

static int alloc_should_fail(void)
{
    long left = alloc_countdown;
    if (left < 0)
        return 0;
    alloc_countdown = left - 1;
    return left == 0;
}

void sl_alloc_fail_after(long n) { alloc_countdown = n; }

void *sl_malloc(size_t size) { return alloc_should_fail() ? NULL : malloc(size ? size : 1); }

void *sl_calloc(size_t count, size_t size)
{
    return alloc_should_fail() ? NULL : calloc(count ? count : 1, size ? size : 1);
}

void *sl_realloc(void *ptr, size_t size) { return alloc_should_fail() ? NULL : realloc(ptr, size ? size : 1); }

void sl_free(void *ptr) { free(ptr); }

char *sl_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *copy = sl_malloc(n);
    if (copy)
        memcpy(copy, s, n);
    return copy;
}
