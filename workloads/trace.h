/* trace.h — a workload trace: one row per request (arrival time, prompt and output lengths,
 * priority, prefix group), its CSV format, and helpers over it.
 *
 * CSV format (compatible with Vidur's processed traces):
 *   header line naming the columns, in any order; required
 *     arrived_at          seconds since the trace start, non-decreasing, >= 0
 *     num_prefill_tokens  prompt length, integer >= 1
 *     num_decode_tokens   output length, integer >= 1
 *   optional
 *     priority            integer, lower = more urgent, default 0
 *     prefix_group        integer >= 0 (requests of a group share a prompt prefix), -1 or empty = none
 *     prefix_len          integer >= 0, tokens of the shared prefix (<= prompt length), default 0
 *   Any other column is ignored. Empty lines are skipped; "\r\n" line ends are accepted.
 * Every bad row is reported as "FILE:LINE: column C (NAME): what was expected, got 'TEXT'" in the
 * trace's last-error string; the first error stops the read.
 *
 * A trace is struct-of-arrays: index i of every array describes request i. The arrays are owned
 * by the trace; callers may read (and modify in place) rows [0, n) but must not reallocate them.
 */
#ifndef SLUICE_WL_TRACE_H
#define SLUICE_WL_TRACE_H

#include <stddef.h>
#include <stdint.h>

typedef struct wl_trace {
    size_t n;           /* rows */
    size_t cap;         /* allocated rows (internal) */
    double *arrival;    /* (n) seconds since the trace start, non-decreasing */
    int *prompt_len;    /* (n) tokens, >= 1 */
    int *output_len;    /* (n) tokens, >= 1 */
    int *priority;      /* (n) lower = more urgent; 0 by default */
    int *prefix_group;  /* (n) shared-prefix group id >= 0, or -1 for none */
    int *prefix_len;    /* (n) tokens of the shared prefix, 0 when prefix_group == -1 */
    char errmsg[512];   /* last error detail; "" when none */
} wl_trace_t;

/* One row, for appending and reading back a single request. */
typedef struct wl_request {
    double arrival;
    int prompt_len, output_len, priority, prefix_group, prefix_len;
} wl_request_t;

/* Descriptive statistics of a trace (wl_trace_stats). Lengths in tokens, times in seconds. */
typedef struct wl_trace_stats {
    size_t n;
    double duration;                 /* last arrival - first arrival */
    double rate;                     /* (n - 1) / duration; 0 when duration is 0 */
    double prompt_mean, prompt_median, prompt_p90;
    int prompt_max;
    double output_mean, output_median, output_p90;
    int output_max;
    int64_t prompt_tokens, output_tokens;
    size_t n_priorities;             /* distinct priority values */
    size_t n_in_prefix_groups;       /* rows with prefix_group >= 0 */
} wl_trace_stats_t;

/* An empty trace; NULL when out of memory. */
wl_trace_t *wl_trace_create(void);
/* Frees the trace and its arrays; NULL is a no-op. */
void wl_trace_free(wl_trace_t *t);
/* The detail of the last error ("" when none). Cannot fail. */
const char *wl_trace_errmsg(const wl_trace_t *t);
/* Removes all rows (keeps the allocation). Cannot fail. */
void wl_trace_clear(wl_trace_t *t);
/* Makes room for at least cap rows. SL_ENOMEM leaves the trace unaltered. */
int wl_trace_reserve(wl_trace_t *t, size_t cap);

/* Appends one row as given (no validation; the writer and wl_trace_validate check rows).
 * SL_ENOMEM leaves the trace unaltered. */
int wl_trace_append(wl_trace_t *t, const wl_request_t *r);
/* Row i (i < n) into *out. Cannot fail. */
void wl_trace_get(const wl_trace_t *t, size_t i, wl_request_t *out);

/* Replaces the trace's rows with the CSV file at path. On error (SL_EIO: cannot open or read;
 * SL_EFORMAT: a bad header or row, or no rows; SL_ENOMEM) the trace is left empty and errmsg
 * says what and where. */
int wl_trace_read_file(wl_trace_t *t, const char *path);
/* The same over len bytes of CSV in memory (need not be NUL-terminated); name is used in error
 * messages in place of the file name. */
int wl_trace_read_buffer(wl_trace_t *t, const char *name, const char *buf, size_t len);

/* Checks every row against the format's rules (lengths >= 1, arrivals >= 0 and non-decreasing,
 * prefix fields consistent) and that n > 0. SL_EFORMAT with "row R: ..." in errmsg (R is the
 * 0-based row index) on the first violation; the trace is unaltered either way. */
int wl_trace_validate(wl_trace_t *t);

/* Writes the trace as CSV (arrival with microsecond precision, "%.6f"). The optional columns are
 * written only when some row has a non-default value. Validates first (SL_EFORMAT, nothing
 * written); SL_EIO when the file cannot be written (a partial file is removed). */
int wl_trace_write_file(wl_trace_t *t, const char *path);

/* FNV-1a 64 over the parsed arrays (n, then per row arrival bits, prompt, output, priority,
 * prefix_group, prefix_len, each as little-endian bytes): equal traces hash equal whatever their
 * CSV spelling. The run store records it as the workload hash. Cannot fail. */
uint64_t wl_trace_hash(const wl_trace_t *t);

/* Divides every arrival time by factor, so factor 2 doubles the request rate. SL_EINVAL (trace
 * unaltered) when factor is not a finite number > 0. */
int wl_trace_rate_scale(wl_trace_t *t, double factor);
/* Keeps the first n rows (no-op when n >= t->n). Cannot fail. */
void wl_trace_truncate(wl_trace_t *t, size_t n);
/* Fills *out. SL_EINVAL on an empty trace, SL_ENOMEM (medians need a sorted copy); *out is
 * unaltered on error. */
int wl_trace_stats(const wl_trace_t *t, wl_trace_stats_t *out);

#endif
