/* fuzz_trace.c — libFuzzer target: arbitrary bytes through the trace CSV reader (from memory).
 * Properties checked beyond "no crash, no sanitizer report": a successful read gives a trace
 * that validates; a failed read leaves the trace empty with a message. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "sched/status.h"
#include "workloads/trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wl_trace_t *t = wl_trace_create();
    if (!t)
        return 0;
    int rc = wl_trace_read_buffer(t, "fuzz.csv", (const char *)data, size);
    if (rc == SL_OK) {
        if (t->n == 0 || wl_trace_validate(t) != SL_OK)
            abort();
        wl_trace_stats_t s;
        if (wl_trace_stats(t, &s) != SL_OK)
            abort();
        (void)wl_trace_hash(t);
    } else if (t->n != 0 || t->errmsg[0] == '\0') {
        abort();
    }
    wl_trace_free(t);
    return 0;
}
