/* store.c — the SQLite run store (store.h).
 *
 * Design notes
 * 1. One handle = one sqlite3 connection + the prepared inserts for request, step and summary
 *    rows (prepared once at open; a run's rows are inserted by re-binding them).
 * 2. Migrations: migration[v] takes a store from schema v to v + 1 and is run inside one
 *    IMMEDIATE transaction that re-reads the version first, so two processes opening a fresh
 *    file at once migrate it once. A new schema version appends an entry; nothing else changes.
 *    History (docs/FORMATS.md): v1 the first schema; v2 steps as a rowid table + index(run_id).
 *    an_store_open_existing never migrates: every statement here reads and writes v1 and v2
 *    alike (same tables and columns).
 * 3. Run states: none --an_run_begin--> open (runs row 'running' committed; data transaction
 *    open) --an_run_finish--> none ('ok', data committed) or --an_run_fail--> none ('failed',
 *    data rolled back). open_run is the id of the open run, 0 when none.
 */
#include "analysis/store.h"

#include <math.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "sched/status.h"

struct an_store {
    sqlite3 *db;
    char *path;
    int schema;
    int64_t open_run;          /* the run in progress, 0 = none */
    double run_started;        /* monotonic seconds at an_run_begin */
    sqlite3_stmt *ins_request, *ins_step, *ins_summary;
    char errmsg[512];
};

static const char *const migration[AN_SCHEMA_VERSION] = {
    /* 0 -> 1 */
    "CREATE TABLE schema_version(version INTEGER NOT NULL);"
    "INSERT INTO schema_version VALUES(0);"
    "CREATE TABLE runs(id INTEGER PRIMARY KEY AUTOINCREMENT, created_at TEXT NOT NULL,"
    " mode TEXT NOT NULL CHECK(mode IN ('sim','real')),"
    " status TEXT NOT NULL CHECK(status IN ('running','ok','failed')), error TEXT,"
    " hardware TEXT, model TEXT, strategy TEXT, config_json TEXT, workload_name TEXT,"
    " workload_hash TEXT, seed INTEGER, code_revision TEXT, wall_seconds REAL);"
    "CREATE TABLE requests(run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    " req_id INTEGER NOT NULL, replica INTEGER, priority INTEGER, arrival REAL, first_scheduled REAL,"
    " first_token REAL, finished REAL, prompt_len INTEGER, output_len INTEGER,"
    " cached_prompt_len INTEGER, preemptions INTEGER, finish_reason INTEGER,"
    " PRIMARY KEY(run_id, req_id)) WITHOUT ROWID;"
    "CREATE TABLE steps(run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    " replica INTEGER NOT NULL, seq_no INTEGER NOT NULL, t_start REAL, t_end REAL, n_seqs INTEGER, n_tokens INTEGER,"
    " n_prefill_tokens INTEGER, n_decode_seqs INTEGER, n_padded_tokens INTEGER, kv_used_blocks INTEGER,"
    " kv_reserved_slots INTEGER, kv_used_slots INTEGER, kv_naive_slots INTEGER, n_preempted INTEGER,"
    " PRIMARY KEY(run_id, replica, seq_no)) WITHOUT ROWID;"
    "CREATE TABLE summaries(run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    " key TEXT NOT NULL, value REAL, PRIMARY KEY(run_id, key)) WITHOUT ROWID;"
    "CREATE TABLE calibration(profile TEXT NOT NULL, op TEXT NOT NULL, params_json TEXT NOT NULL,"
    " created_at TEXT NOT NULL, PRIMARY KEY(profile, op));"
    "CREATE TABLE recommendations(id INTEGER PRIMARY KEY AUTOINCREMENT, created_at TEXT NOT NULL,"
    " run_ids TEXT NOT NULL, json TEXT NOT NULL);",
    /* 1 -> 2: steps becomes a plain rowid table indexed on run_id. Rows arrive in time order, not
       key order, and the composite WITHOUT ROWID key made every insert a B-tree seek; appends to
       a rowid table are sequential. Readers sort (replica, seq_no) per run. Same columns. */
    "CREATE TABLE steps_v2(run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    " replica INTEGER NOT NULL, seq_no INTEGER NOT NULL, t_start REAL, t_end REAL, n_seqs INTEGER, n_tokens INTEGER,"
    " n_prefill_tokens INTEGER, n_decode_seqs INTEGER, n_padded_tokens INTEGER, kv_used_blocks INTEGER,"
    " kv_reserved_slots INTEGER, kv_used_slots INTEGER, kv_naive_slots INTEGER, n_preempted INTEGER);"
    "INSERT INTO steps_v2 SELECT * FROM steps ORDER BY run_id, replica, seq_no;"
    "DROP TABLE steps;"
    "ALTER TABLE steps_v2 RENAME TO steps;"
    "CREATE INDEX steps_run ON steps(run_id);",
};

static int set_err(an_store_t *st, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int set_err(an_store_t *st, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->errmsg, sizeof st->errmsg, fmt, ap);
    va_end(ap);
    return status;
}

/* SL_EDB with "PATH: WHAT: sqlite's message". */
static int db_err(an_store_t *st, const char *what)
{
    return set_err(st, SL_EDB, "%s: %s: %s", st->path, what, sqlite3_errmsg(st->db));
}

static double now_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *an_store_errmsg(const an_store_t *st)
{
    return st->errmsg;
}

int an_store_schema_version(const an_store_t *st)
{
    return st->schema;
}

/* ---- open, migrate, close ----------------------------------------------------------------- */

/* Single integer from sql into *v; SQLITE_DONE (no row) leaves *v. Returns an sqlite code. */
static int query_int(sqlite3 *db, const char *sql, int64_t *v)
{
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *v = sqlite3_column_int64(s, 0);
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE)
        rc = SQLITE_OK;
    sqlite3_finalize(s);
    return rc;
}

/* Reads the schema version into *version (0 for an empty database). */
static int read_version(an_store_t *st, int64_t *version)
{
    int64_t has_table = 0, n_objects = 0;
    int rc = query_int(st->db, "SELECT count(*) FROM sqlite_master", &n_objects);
    if (rc == SQLITE_NOTADB)
        return set_err(st, SL_EDB, "%s: not an SQLite database, so not a sluice run store", st->path);
    if (rc != SQLITE_OK)
        return db_err(st, "cannot read the database");
    rc = query_int(st->db, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='schema_version'",
                   &has_table);
    if (rc != SQLITE_OK)
        return db_err(st, "cannot read the database");
    *version = 0;
    if (!has_table) {
        if (n_objects > 0)
            return set_err(st, SL_EDB, "%s: an SQLite database but not a sluice run store (no schema_version table)",
                           st->path);
        return SL_OK;
    }
    if (query_int(st->db, "SELECT max(version) FROM schema_version", version) != SQLITE_OK)
        return db_err(st, "cannot read the schema version");
    if (*version > AN_SCHEMA_VERSION)
        return set_err(st, SL_EDB, "%s has schema %lld, this sluice understands up to %d (use a newer sluice)",
                       st->path, (long long)*version, AN_SCHEMA_VERSION);
    return SL_OK;
}

static int migrate(an_store_t *st)
{
    int64_t v;
    int rc = read_version(st, &v);
    if (rc || v == AN_SCHEMA_VERSION) {
        st->schema = (int)v;
        return rc;
    }
    if (sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return db_err(st, "cannot start the schema migration");
    rc = read_version(st, &v); /* again, under the write lock */
    for (; !rc && v < AN_SCHEMA_VERSION; v++) {
        char bump[64];
        snprintf(bump, sizeof bump, "UPDATE schema_version SET version = %lld", (long long)v + 1);
        if (sqlite3_exec(st->db, migration[v], NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(st->db, bump, NULL, NULL, NULL) != SQLITE_OK)
            rc = db_err(st, "schema migration failed");
    }
    if (rc || sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        rc = rc ? rc : db_err(st, "cannot commit the schema migration");
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    st->schema = AN_SCHEMA_VERSION;
    return SL_OK;
}

static int prepare(an_store_t *st, const char *sql, sqlite3_stmt **out)
{
    if (sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL) != SQLITE_OK)
        return db_err(st, "cannot prepare a statement");
    return SL_OK;
}

/* Opens path; existing: the file must already be a sluice store (never created or migrated). */
static int store_open(const char *path, bool existing, an_store_t **out)
{
    an_store_t *st = sl_calloc(1, sizeof *st);
    *out = st;
    if (!st)
        return SL_ENOMEM;
    st->path = sl_strdup(path);
    if (!st->path)
        return set_err(st, SL_ENOMEM, "out of memory");
    struct stat sb;
    if (existing && stat(path, &sb) != 0)
        return set_err(st, SL_ENOTFOUND, "%s: no such file", path);
    if (existing && sb.st_size == 0)
        return set_err(st, SL_EDB, "%s: empty database (no sluice runs)", path);
    int flags = SQLITE_OPEN_READWRITE | (existing ? 0 : SQLITE_OPEN_CREATE);
    if (sqlite3_open_v2(path, &st->db, flags, NULL) != SQLITE_OK)
        return set_err(st, SL_EDB, "%s: cannot open: %s", path, st->db ? sqlite3_errmsg(st->db) : "out of memory");
    sqlite3_busy_timeout(st->db, 5000);
    int rc;
    if (existing) {
        int64_t v;
        if ((rc = read_version(st, &v)) != SL_OK)
            return rc;
        if (v == 0)
            return set_err(st, SL_EDB, "%s: empty database (no sluice runs)", path);
        st->schema = (int)v;
    } else if ((rc = migrate(st)) != SL_OK) {
        return rc;
    }
    if (sqlite3_exec(st->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"
                     " PRAGMA cache_size=-65536", NULL,
                     NULL, NULL) != SQLITE_OK)
        return db_err(st, "cannot configure the database");
    if ((rc = prepare(st,
                      "INSERT INTO requests VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)",
                      &st->ins_request)) ||
        (rc = prepare(st, "INSERT INTO steps VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15)",
                      &st->ins_step)) ||
        (rc = prepare(st, "INSERT INTO summaries VALUES(?1,?2,?3)", &st->ins_summary)))
        return rc;
    return SL_OK;
}

int an_store_open(const char *path, an_store_t **out) { return store_open(path, false, out); }

int an_store_open_existing(const char *path, an_store_t **out, char *err, size_t errlen)
{
    int rc = store_open(path, true, out);
    if (rc != SL_OK) {
        snprintf(err, errlen, "%s", *out ? an_store_errmsg(*out) : sl_strerror(rc));
        an_store_close(*out);
        *out = NULL;
    }
    return rc;
}

void an_store_close(an_store_t *st)
{
    if (!st)
        return;
    if (st->open_run)
        an_run_fail(st, st->open_run, "store closed while the run was open");
    sqlite3_finalize(st->ins_request);
    sqlite3_finalize(st->ins_step);
    sqlite3_finalize(st->ins_summary);
    sqlite3_close_v2(st->db);
    sl_free(st->path);
    sl_free(st);
}

/* ---- writing a run ------------------------------------------------------------------------ */

static void bind_text(sqlite3_stmt *s, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(s, i);
}

static void bind_real(sqlite3_stmt *s, int i, double v)
{
    if (isnan(v))
        sqlite3_bind_null(s, i);
    else
        sqlite3_bind_double(s, i, v);
}

/* Runs a prepared statement to completion and resets it; 0 on success. */
static int step_reset(sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : -1;
}

int an_run_begin(an_store_t *st, const an_run_info_t *info, int64_t *run_id)
{
    if (st->open_run)
        return set_err(st, SL_ESTATE, "run %lld is still open; finish or fail it first", (long long)st->open_run);
    if (!info->mode || (strcmp(info->mode, "sim") && strcmp(info->mode, "real")))
        return set_err(st, SL_EINVAL, "run mode must be 'sim' or 'real', got '%s'", info->mode ? info->mode : "(null)");
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db,
                           "INSERT INTO runs(created_at, mode, status, hardware, model, strategy, config_json,"
                           " workload_name, workload_hash, seed, code_revision)"
                           " VALUES(datetime('now'), ?1, 'running', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                           -1, &s, NULL) != SQLITE_OK)
        return db_err(st, "cannot record the run");
    char hash[24];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)info->workload_hash);
    bind_text(s, 1, info->mode);
    bind_text(s, 2, info->hardware);
    bind_text(s, 3, info->model);
    bind_text(s, 4, info->strategy);
    bind_text(s, 5, info->config_json);
    bind_text(s, 6, info->workload_name);
    bind_text(s, 7, hash);
    sqlite3_bind_int64(s, 8, (sqlite3_int64)info->seed);
    bind_text(s, 9, info->code_revision);
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE)
        return db_err(st, "cannot record the run");
    int64_t id = sqlite3_last_insert_rowid(st->db);
    st->open_run = id;
    st->run_started = now_monotonic();
    if (sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        rc = db_err(st, "cannot start the run's transaction");
        char msg[sizeof st->errmsg];
        memcpy(msg, st->errmsg, sizeof msg);
        an_run_fail(st, id, msg);
        memcpy(st->errmsg, msg, sizeof msg);
        return rc;
    }
    *run_id = id;
    return SL_OK;
}

static int check_open(an_store_t *st, int64_t run_id)
{
    if (!st->open_run || st->open_run != run_id)
        return set_err(st, SL_ESTATE, "run %lld is not the open run (%lld)", (long long)run_id, (long long)st->open_run);
    return SL_OK;
}

int an_run_add_requests(an_store_t *st, int64_t run_id, const an_request_rec_t *recs, size_t n)
{
    int rc = check_open(st, run_id);
    sqlite3_stmt *s = st->ins_request;
    for (size_t i = 0; !rc && i < n; i++) {
        const an_request_rec_t *r = &recs[i];
        sqlite3_bind_int64(s, 1, run_id);
        sqlite3_bind_int64(s, 2, r->req_id);
        sqlite3_bind_int(s, 3, r->replica);
        sqlite3_bind_int(s, 4, r->priority);
        sqlite3_bind_double(s, 5, r->arrival);
        sqlite3_bind_double(s, 6, r->first_scheduled);
        sqlite3_bind_double(s, 7, r->first_token);
        sqlite3_bind_double(s, 8, r->finished);
        sqlite3_bind_int(s, 9, r->prompt_len);
        sqlite3_bind_int(s, 10, r->output_len);
        sqlite3_bind_int(s, 11, r->cached_prompt_len);
        sqlite3_bind_int(s, 12, r->preemptions);
        sqlite3_bind_int(s, 13, r->finish_reason);
        if (step_reset(s))
            rc = db_err(st, "cannot write request rows");
    }
    return rc;
}

int an_run_add_steps(an_store_t *st, int64_t run_id, const an_step_rec_t *recs, size_t n)
{
    int rc = check_open(st, run_id);
    sqlite3_stmt *s = st->ins_step;
    for (size_t i = 0; !rc && i < n; i++) {
        const an_step_rec_t *r = &recs[i];
        sqlite3_bind_int64(s, 1, run_id);
        sqlite3_bind_int(s, 2, r->replica);
        sqlite3_bind_int64(s, 3, r->seq_no);
        sqlite3_bind_double(s, 4, r->t_start);
        sqlite3_bind_double(s, 5, r->t_end);
        sqlite3_bind_int(s, 6, r->n_seqs);
        sqlite3_bind_int(s, 7, r->n_tokens);
        sqlite3_bind_int(s, 8, r->n_prefill_tokens);
        sqlite3_bind_int(s, 9, r->n_decode_seqs);
        sqlite3_bind_int(s, 10, r->n_padded_tokens);
        sqlite3_bind_int(s, 11, r->kv_used_blocks);
        sqlite3_bind_int64(s, 12, r->kv_reserved_slots);
        sqlite3_bind_int64(s, 13, r->kv_used_slots);
        sqlite3_bind_int64(s, 14, r->kv_naive_slots);
        sqlite3_bind_int(s, 15, r->n_preempted);
        if (step_reset(s))
            rc = db_err(st, "cannot write step rows");
    }
    return rc;
}

/* Sets the run's final status; the statement runs in whatever transaction is current. */
static int set_status(an_store_t *st, int64_t run_id, const char *status, const char *error)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "UPDATE runs SET status = ?1, error = ?2, wall_seconds = ?3 WHERE id = ?4", -1, &s,
                           NULL) != SQLITE_OK)
        return -1;
    bind_text(s, 1, status);
    bind_text(s, 2, error);
    sqlite3_bind_double(s, 3, now_monotonic() - st->run_started);
    sqlite3_bind_int64(s, 4, run_id);
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? 0 : -1;
}

int an_run_finish(an_store_t *st, int64_t run_id, const an_summary_t *summary)
{
    int rc = check_open(st, run_id);
    if (rc)
        return rc;
    sqlite3_stmt *s = st->ins_summary;
    for (size_t i = 0; summary && !rc && i < an_summary_field_count(); i++) {
        const an_summary_field_t *f = an_summary_field_at(i);
        sqlite3_bind_int64(s, 1, run_id);
        sqlite3_bind_text(s, 2, f->name, -1, SQLITE_STATIC);
        bind_real(s, 3, *(const double *)((const char *)summary + f->offset));
        if (step_reset(s))
            rc = db_err(st, "cannot write the summary");
    }
    if (!rc && set_status(st, run_id, "ok", NULL))
        rc = db_err(st, "cannot set the run's status");
    if (!rc && sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        rc = db_err(st, "cannot commit the run");
    if (rc) {
        char msg[sizeof st->errmsg];
        memcpy(msg, st->errmsg, sizeof msg);
        an_run_fail(st, run_id, msg);
        memcpy(st->errmsg, msg, sizeof msg);
        return rc;
    }
    st->open_run = 0;
    return SL_OK;
}

int an_run_fail(an_store_t *st, int64_t run_id, const char *msg)
{
    int rc = check_open(st, run_id);
    if (rc)
        return rc;
    if (!sqlite3_get_autocommit(st->db))
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    st->open_run = 0;
    if (set_status(st, run_id, "failed", msg ? msg : "failed"))
        return db_err(st, "cannot record the run as failed");
    return SL_OK;
}

/* ---- reading runs ------------------------------------------------------------------------- */

#define RUN_COLUMNS                                                                                                \
    "id, created_at, mode, status, error, hardware, model, strategy, config_json, workload_name, workload_hash,"   \
    " seed, code_revision, wall_seconds"

void an_run_clear(an_run_t *r)
{
    if (!r)
        return;
    sl_free(r->strings_);
    memset(r, 0, sizeof *r);
}

/* A REAL column as a number; NAN for NULL (not measured) and for text or a blob, which only a
 * hand-edited store holds (sqlite3_column_double would read them as 0, a plausible figure). */
static double column_number(sqlite3_stmt *s, int i)
{
    const int t = sqlite3_column_type(s, i);
    return t == SQLITE_INTEGER || t == SQLITE_FLOAT ? sqlite3_column_double(s, i) : NAN;
}

/* Fills *r from a row of RUN_COLUMNS; its strings are packed into one allocation. */
static int run_from_row(sqlite3_stmt *s, an_run_t *r)
{
    enum { N_TEXT = 10 };
    static const int col[N_TEXT] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 12};
    size_t total = 0;
    for (int i = 0; i < N_TEXT; i++)
        total += (size_t)sqlite3_column_bytes(s, col[i]) + 1;
    memset(r, 0, sizeof *r);
    r->strings_ = sl_malloc(total);
    if (!r->strings_)
        return SL_ENOMEM;
    const char *v[N_TEXT];
    char *p = r->strings_;
    for (int i = 0; i < N_TEXT; i++) {
        const unsigned char *t = sqlite3_column_text(s, col[i]);
        size_t len = (size_t)sqlite3_column_bytes(s, col[i]);
        if (!t) {
            v[i] = NULL;
            continue;
        }
        memcpy(p, t, len);
        p[len] = '\0';
        v[i] = p;
        p += len + 1;
    }
    r->id = sqlite3_column_int64(s, 0);
    r->created_at = v[0];
    r->info.mode = v[1];
    r->status = v[2];
    r->error = v[3];
    r->info.hardware = v[4];
    r->info.model = v[5];
    r->info.strategy = v[6];
    r->info.config_json = v[7];
    r->info.workload_name = v[8];
    r->info.code_revision = v[9];
    const unsigned char *hash = sqlite3_column_text(s, 10);
    r->info.workload_hash = hash ? strtoull((const char *)hash, NULL, 16) : 0;
    r->info.seed = (uint64_t)sqlite3_column_int64(s, 11);
    r->wall_seconds = column_number(s, 13);
    an_summary_init(&r->summary);
    return SL_OK;
}

static int load_summary(an_store_t *st, an_run_t *r)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "SELECT key, value FROM summaries WHERE run_id = ?1", -1, &s, NULL) != SQLITE_OK)
        return db_err(st, "cannot read the summary");
    sqlite3_bind_int64(s, 1, r->id);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        r->has_summary = 1;
        const an_summary_field_t *f = an_summary_field_find((const char *)sqlite3_column_text(s, 0));
        if (f) /* keys of a newer sluice's summary are skipped */
            *(double *)((char *)&r->summary + f->offset) = column_number(s, 1);
    }
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? SL_OK : db_err(st, "cannot read the summary");
}

void an_run_list_free(an_run_t *runs, size_t n)
{
    for (size_t i = 0; runs && i < n; i++)
        an_run_clear(&runs[i]);
    sl_free(runs);
}

/* Runs the query (one optional int64 parameter) and collects up to cap rows. */
static int collect_runs(an_store_t *st, const char *sql, int64_t param, an_run_t **runs, size_t *n)
{
    *runs = NULL;
    *n = 0;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK)
        return db_err(st, "cannot list runs");
    sqlite3_bind_int64(s, 1, param);
    an_run_t *out = NULL;
    size_t cnt = 0, cap = 0;
    int rc = SL_OK, step;
    while (!rc && (step = sqlite3_step(s)) == SQLITE_ROW) {
        if (cnt == cap) {
            an_run_t *grown = sl_realloc(out, (cap ? cap * 2 : 16) * sizeof *grown);
            if (!grown) {
                rc = set_err(st, SL_ENOMEM, "out of memory listing runs");
                break;
            }
            out = grown, cap = cap ? cap * 2 : 16;
        }
        if ((rc = run_from_row(s, &out[cnt])) != SL_OK) {
            set_err(st, rc, "out of memory listing runs");
            break;
        }
        cnt++;
        rc = load_summary(st, &out[cnt - 1]);
    }
    if (!rc && step != SQLITE_DONE)
        rc = db_err(st, "cannot list runs");
    sqlite3_finalize(s);
    if (rc) {
        an_run_list_free(out, cnt);
        return rc;
    }
    *runs = out;
    *n = cnt;
    return SL_OK;
}

int an_run_list(an_store_t *st, int limit, an_run_t **runs, size_t *n)
{
    return collect_runs(st, "SELECT " RUN_COLUMNS " FROM runs ORDER BY id DESC LIMIT ?1", limit > 0 ? limit : -1, runs,
                        n);
}

int an_run_get(an_store_t *st, int64_t run_id, an_run_t *out)
{
    an_run_t *runs;
    size_t n;
    memset(out, 0, sizeof *out);
    int rc = collect_runs(st,
                          run_id > 0 ? "SELECT " RUN_COLUMNS " FROM runs WHERE id = ?1"
                                     : "SELECT " RUN_COLUMNS " FROM runs ORDER BY id DESC LIMIT 1",
                          run_id, &runs, &n);
    if (rc)
        return rc;
    if (n == 0)
        return run_id > 0 ? set_err(st, SL_ENOTFOUND, "%s: no run %lld", st->path, (long long)run_id)
                          : set_err(st, SL_ENOTFOUND, "%s: no runs recorded yet", st->path);
    *out = runs[0];
    sl_free(runs);
    return SL_OK;
}

/* Loads the rows of sql (parameter: run id) into an array of elem-sized records via fill. */
static int load_rows(an_store_t *st, const char *what, const char *sql, int64_t run_id, size_t elem,
                     void (*fill)(sqlite3_stmt *, void *), void **recs, size_t *n)
{
    *recs = NULL;
    *n = 0;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK)
        return db_err(st, what);
    sqlite3_bind_int64(s, 1, run_id);
    char *out = NULL;
    size_t cnt = 0, cap = 0;
    int rc = SL_OK, step;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        if (cnt == cap) {
            char *grown = sl_realloc(out, (cap ? cap * 2 : 1024) * elem);
            if (!grown) {
                rc = set_err(st, SL_ENOMEM, "out of memory: %s", what);
                break;
            }
            out = grown, cap = cap ? cap * 2 : 1024;
        }
        fill(s, out + cnt++ * elem);
    }
    if (!rc && step != SQLITE_DONE)
        rc = db_err(st, what);
    sqlite3_finalize(s);
    if (rc) {
        sl_free(out);
        return rc;
    }
    *recs = out;
    *n = cnt;
    return SL_OK;
}

static void fill_request(sqlite3_stmt *s, void *p)
{
    an_request_rec_t *r = p;
    r->req_id = sqlite3_column_int64(s, 0);
    r->replica = sqlite3_column_int(s, 1);
    r->priority = sqlite3_column_int(s, 2);
    r->arrival = sqlite3_column_double(s, 3);
    r->first_scheduled = sqlite3_column_double(s, 4);
    r->first_token = sqlite3_column_double(s, 5);
    r->finished = sqlite3_column_double(s, 6);
    r->prompt_len = sqlite3_column_int(s, 7);
    r->output_len = sqlite3_column_int(s, 8);
    r->cached_prompt_len = sqlite3_column_int(s, 9);
    r->preemptions = sqlite3_column_int(s, 10);
    r->finish_reason = sqlite3_column_int(s, 11);
}

static void fill_step(sqlite3_stmt *s, void *p)
{
    an_step_rec_t *r = p;
    r->replica = sqlite3_column_int(s, 0);
    r->seq_no = sqlite3_column_int64(s, 1);
    r->t_start = sqlite3_column_double(s, 2);
    r->t_end = sqlite3_column_double(s, 3);
    r->n_seqs = sqlite3_column_int(s, 4);
    r->n_tokens = sqlite3_column_int(s, 5);
    r->n_prefill_tokens = sqlite3_column_int(s, 6);
    r->n_decode_seqs = sqlite3_column_int(s, 7);
    r->n_padded_tokens = sqlite3_column_int(s, 8);
    r->kv_used_blocks = sqlite3_column_int(s, 9);
    r->kv_reserved_slots = sqlite3_column_int64(s, 10);
    r->kv_used_slots = sqlite3_column_int64(s, 11);
    r->kv_naive_slots = sqlite3_column_int64(s, 12);
    r->n_preempted = sqlite3_column_int(s, 13);
}

int an_run_requests(an_store_t *st, int64_t run_id, an_request_rec_t **recs, size_t *n)
{
    return load_rows(st, "cannot read request rows",
                     "SELECT req_id, replica, priority, arrival, first_scheduled, first_token, finished, prompt_len,"
                     " output_len, cached_prompt_len, preemptions, finish_reason FROM requests WHERE run_id = ?1"
                     " ORDER BY req_id",
                     run_id, sizeof **recs, fill_request, (void **)recs, n);
}

int an_run_steps(an_store_t *st, int64_t run_id, an_step_rec_t **recs, size_t *n)
{
    return load_rows(st, "cannot read step rows",
                     "SELECT replica, seq_no, t_start, t_end, n_seqs, n_tokens, n_prefill_tokens, n_decode_seqs,"
                     " n_padded_tokens, kv_used_blocks, kv_reserved_slots, kv_used_slots, kv_naive_slots, n_preempted"
                     " FROM steps WHERE run_id = ?1 ORDER BY replica, seq_no",
                     run_id, sizeof **recs, fill_step, (void **)recs, n);
}

/* ---- calibration and recommendations ------------------------------------------------------ */

static int no_open_run(an_store_t *st, const char *what)
{
    if (st->open_run)
        return set_err(st, SL_ESTATE, "cannot %s while run %lld is open", what, (long long)st->open_run);
    return SL_OK;
}

int an_calib_save(an_store_t *st, const char *profile, const char *op, const char *params_json)
{
    int rc = no_open_run(st, "save a calibration");
    if (rc)
        return rc;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "INSERT OR REPLACE INTO calibration VALUES(?1, ?2, ?3, datetime('now'))", -1, &s,
                           NULL) != SQLITE_OK)
        return db_err(st, "cannot save the calibration");
    bind_text(s, 1, profile);
    bind_text(s, 2, op);
    bind_text(s, 3, params_json);
    rc = sqlite3_step(s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? SL_OK : db_err(st, "cannot save the calibration");
}

int an_calib_load(an_store_t *st, const char *profile, const char *op, char **params_json)
{
    int rc = no_open_run(st, "load a calibration");
    if (rc)
        return rc;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "SELECT params_json FROM calibration WHERE profile = ?1 AND op = ?2", -1, &s,
                           NULL) != SQLITE_OK)
        return db_err(st, "cannot load the calibration");
    bind_text(s, 1, profile);
    bind_text(s, 2, op);
    int step = sqlite3_step(s);
    if (step == SQLITE_ROW) {
        *params_json = sl_strdup((const char *)sqlite3_column_text(s, 0));
        rc = *params_json ? SL_OK : set_err(st, SL_ENOMEM, "out of memory");
    } else if (step == SQLITE_DONE)
        rc = set_err(st, SL_ENOTFOUND, "%s: no calibration for %s / %s", st->path, profile, op);
    else
        rc = db_err(st, "cannot load the calibration");
    sqlite3_finalize(s);
    return rc;
}

int an_reco_save(an_store_t *st, const int64_t *run_ids, size_t n, const char *json, int64_t *id)
{
    int rc = no_open_run(st, "save a recommendation");
    if (rc)
        return rc;
    char *ids = sl_malloc(n * 22 + 3);
    if (!ids)
        return set_err(st, SL_ENOMEM, "out of memory");
    size_t used = 0;
    ids[used++] = '[';
    for (size_t i = 0; i < n; i++)
        used += (size_t)sprintf(ids + used, "%s%lld", i ? "," : "", (long long)run_ids[i]);
    ids[used++] = ']';
    ids[used] = '\0';
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "INSERT INTO recommendations(created_at, run_ids, json) VALUES(datetime('now'), ?1, ?2)",
                           -1, &s, NULL) != SQLITE_OK) {
        sl_free(ids);
        return db_err(st, "cannot save the recommendation");
    }
    bind_text(s, 1, ids);
    bind_text(s, 2, json);
    rc = sqlite3_step(s) == SQLITE_DONE ? SL_OK : db_err(st, "cannot save the recommendation");
    sqlite3_finalize(s);
    sl_free(ids);
    if (!rc)
        *id = sqlite3_last_insert_rowid(st->db);
    return rc;
}

int an_reco_get(an_store_t *st, int64_t id, int64_t *got_id, char **json)
{
    *json = NULL;
    sqlite3_stmt *s;
    const char *sql = id > 0 ? "SELECT id, json FROM recommendations WHERE id = ?1"
                             : "SELECT id, json FROM recommendations ORDER BY id DESC LIMIT 1";
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK)
        return db_err(st, "cannot read the recommendations");
    sqlite3_bind_int64(s, 1, id);
    int step = sqlite3_step(s), rc;
    if (step == SQLITE_ROW) {
        *got_id = sqlite3_column_int64(s, 0);
        *json = sl_strdup((const char *)sqlite3_column_text(s, 1));
        rc = *json ? SL_OK : set_err(st, SL_ENOMEM, "out of memory");
    } else if (step == SQLITE_DONE) {
        rc = id > 0 ? set_err(st, SL_ENOTFOUND, "%s: no recommendation %lld (sluice tune stores them)", st->path,
                              (long long)id)
                    : set_err(st, SL_ENOTFOUND, "%s: no recommendation yet (run sluice tune first)", st->path);
    } else {
        rc = db_err(st, "cannot read the recommendations");
    }
    sqlite3_finalize(s);
    return rc;
}
