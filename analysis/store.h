/* store.h — the SQLite run store: every run, simulated or real, with its config, per-request and
 * per-step records and its summary; plus calibration fits and recommendations.
 *
 * File: SQLite in WAL mode, busy timeout 5 s. Table schema_version(version) holds the schema;
 * opening migrates an older store forward, refuses a newer one ("sluice.db has schema 7, this
 * sluice understands up to 1") and refuses a file that is not SQLite or not a sluice store.
 * Schema (v2): runs, requests, steps, summaries(run_id, key, value), calibration,
 * recommendations; store.c's migration[] lists the columns, docs/FORMATS.md explains them and
 * the version history (v2: steps is a rowid table with an index on run_id).
 *
 * Run lifecycle (one run open per store handle at a time):
 *
 *   an_run_begin ──► runs row committed with status 'running'; a transaction opens for the data
 *        │
 *        ├─ an_run_add_requests / an_run_add_steps (any number of batches, inside the transaction)
 *        │
 *        ├─ an_run_finish ──► summary written, status 'ok', wall_seconds; COMMIT
 *        └─ an_run_fail   ──► ROLLBACK of every request/step row; status 'failed' + error
 *
 * So a run is never half-written as a success: either all of its rows and its summary are there
 * with status 'ok', or none are and the status says 'failed' (or 'running' if the process died).
 * wall_seconds is measured by the store from an_run_begin to an_run_finish / an_run_fail.
 *
 * Errors: each call returns a status (sched/status.h); an_store_errmsg() has the detail.
 */
#ifndef SLUICE_AN_STORE_H
#define SLUICE_AN_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "analysis/metrics.h"

#define AN_SCHEMA_VERSION 2

typedef struct an_store an_store_t;

/* What a run is. Every string may be NULL (stored as NULL / shown as "-"), except mode. */
typedef struct an_run_info {
    const char *mode;          /* "sim" or "real" */
    const char *hardware;      /* "a100-80gb", "cpu", ... */
    const char *model;         /* "llama2-7b", a GGUF path, ... */
    const char *strategy;      /* "continuous", "naive", ... */
    const char *config_json;   /* the full configuration, JSON text */
    const char *workload_name; /* preset name or trace path */
    uint64_t workload_hash;    /* wl_trace_hash() of the workload */
    uint64_t seed;
    const char *code_revision; /* `git describe` of the build, or NULL */
} an_run_info_t;

/* One recorded run as read back. The strings in info, status, created_at and error are owned by
 * the record; free with an_run_clear(). */
typedef struct an_run {
    int64_t id;
    an_run_info_t info;
    const char *created_at;    /* UTC, "YYYY-MM-DD HH:MM:SS" */
    const char *status;        /* "running", "ok" or "failed" */
    const char *error;         /* failure message, NULL unless failed */
    double wall_seconds;       /* NaN while running */
    int has_summary;           /* 1 when summary was recorded (status ok) */
    an_summary_t summary;      /* NaN fields when !has_summary */
    char *strings_;            /* internal: storage for the strings above */
} an_run_t;

/* Opens (creating if absent) the store at path and migrates it to AN_SCHEMA_VERSION. *out is set
 * whenever a handle could be allocated, also on failure, so the caller can read
 * an_store_errmsg(*out) and must then an_store_close(*out) (SQLite's sqlite3_open convention);
 * *out is NULL only with SL_ENOMEM. Errors: SL_EDB (cannot open; not an SQLite database; not a
 * sluice store; newer schema; migration failed, the file then unchanged). */
int an_store_open(const char *path, an_store_t **out);
/* Opens a store that must already exist and be a sluice store, for readers: never creates or
 * migrates it (an older schema is read as it is). A missing file, an empty file or a foreign or
 * non-SQLite file gives SL_ENOTFOUND / SL_EDB with "sluice.db: no such file" / "x.db: empty
 * database (no sluice runs)" / "x.db: an SQLite database but not a sluice run store ..." in err,
 * the file untouched, *out NULL. On success *out is open (an_store_close it). */
int an_store_open_existing(const char *path, an_store_t **out, char *err, size_t errlen);
/* Closes the store. A run still open is failed first ("store closed while the run was open").
 * NULL is a no-op. */
void an_store_close(an_store_t *st);
/* The detail of the last error ("" when none). Cannot fail. */
const char *an_store_errmsg(const an_store_t *st);
/* The schema version of the open store. Cannot fail. */
int an_store_schema_version(const an_store_t *st);

/* Starts a run: commits its runs row (status 'running', created_at now) and opens the transaction
 * for its data; *run_id gets the new id. Errors: SL_ESTATE (a run is already open on this
 * handle), SL_EINVAL (mode not sim/real), SL_EDB, SL_ENOMEM. Nothing is written on error, except when the
 * data transaction cannot start after the runs row was committed: the run is then recorded failed. */
int an_run_begin(an_store_t *st, const an_run_info_t *info, int64_t *run_id);
/* Append rows to the open run (prepared statements, batched in the run's transaction).
 * SL_ESTATE when run_id is not the open run; SL_EDB on a write failure (the run stays open; the
 * caller should an_run_fail it). */
int an_run_add_requests(an_store_t *st, int64_t run_id, const an_request_rec_t *recs, size_t n);
int an_run_add_steps(an_store_t *st, int64_t run_id, const an_step_rec_t *recs, size_t n);
/* Writes the summary (may be NULL: none), sets status 'ok' and wall_seconds, and commits.
 * SL_ESTATE when run_id is not the open run. On SL_EDB the data is rolled back and the run is
 * recorded as failed with the database error, as an_run_fail would. */
int an_run_finish(an_store_t *st, int64_t run_id, const an_summary_t *summary);
/* Rolls back the run's rows and records it as 'failed' with message msg (NULL: "failed").
 * SL_ESTATE when run_id is not the open run; SL_EDB when even the status update fails (the run
 * then shows as 'running'). */
int an_run_fail(an_store_t *st, int64_t run_id, const char *msg);

/* Readers. They see committed data, and on a handle with an open run also that run's rows. */

/* The most recent runs, newest first, at most limit (<= 0: all). *runs is an array of *n records
 * (NULL when 0), freed with an_run_list_free. SL_EDB / SL_ENOMEM: *runs NULL, *n 0. */
int an_run_list(an_store_t *st, int limit, an_run_t **runs, size_t *n);
void an_run_list_free(an_run_t *runs, size_t n);
/* Run run_id with its summary into *out (free with an_run_clear). run_id <= 0 means the latest
 * run. SL_ENOTFOUND, SL_EDB, SL_ENOMEM; *out zeroed on error. */
int an_run_get(an_store_t *st, int64_t run_id, an_run_t *out);
/* Frees a record's strings and zeroes it. NULL is a no-op. */
void an_run_clear(an_run_t *r);
/* The run's request rows in req_id order / step rows in (replica, seq_no) order; *recs is
 * sl_malloc'd (sl_free it; NULL when *n is 0). SL_EDB / SL_ENOMEM: *recs NULL, *n 0. A run that
 * does not exist has no rows (SL_OK, 0). */
int an_run_requests(an_store_t *st, int64_t run_id, an_request_rec_t **recs, size_t *n);
int an_run_steps(an_store_t *st, int64_t run_id, an_step_rec_t **recs, size_t *n);

/* Calibration fits: the parameters (JSON) of one operator's fit for a hardware profile. Save
 * replaces an earlier fit of the same (profile, op). Load gives the latest as an sl_malloc'd
 * string (sl_free it); SL_ENOTFOUND when none. Not allowed while a run is open (SL_ESTATE). */
int an_calib_save(an_store_t *st, const char *profile, const char *op, const char *params_json);
int an_calib_load(an_store_t *st, const char *profile, const char *op, char **params_json);

/* Records a recommendation (JSON) derived from n runs; *id gets its id. SL_ESTATE while a run is
 * open, SL_EDB, SL_ENOMEM. */
int an_reco_save(an_store_t *st, const int64_t *run_ids, size_t n, const char *json, int64_t *id);

/* Recommendation id (0 = the latest) as JSON, sl_malloc'd into *json (sl_free it), its id into
 * *got_id. SL_ENOTFOUND ("sluice.db: no recommendation 7 (sluice tune stores them)"), SL_EDB,
 * SL_ENOMEM; *json NULL on error. */
int an_reco_get(an_store_t *st, int64_t id, int64_t *got_id, char **json);

#endif
