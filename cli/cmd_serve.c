/* cmd_serve.c — `sluice serve`: the OpenAI-compatible HTTP server (engine/http/server.h) on one
 * engine. Starts listening first (/health answers 503 while the model loads), then loads the
 * model, serves until SIGINT or SIGTERM, then stops accepting, lets in-flight requests finish
 * within --shutdown-timeout (aborting the rest) and exits 0.
 *
 * Signals: SIGINT and SIGTERM are blocked before any thread starts (so every thread inherits the
 * mask) and the main thread takes them with sigwait(): no handler, no global flag. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "engine/engine.h"
#include "engine/http/server.h"

static const char usage[] =
    "usage: sluice serve -m MODEL [options]\n"
    "  -m, --model PATH            GGUF file or synthetic:SHAPE\n"
    "  --host ADDR                 IPv4 address to bind (default 127.0.0.1)\n"
    "  --port N                    TCP port; 0 = any free port (default 8080)\n"
    "  --served-model-name NAME    the id clients send as \"model\" (default: file name without .gguf)\n"
    "  --chat-template chatml|llama2  template for models without one sluice can render\n"
    "  --backend cpu|cuda          (default cpu)\n"
    "  --threads N                 cpu threads (default: all cores)\n"
    "  --max-queue N               waiting requests before 429 (default 4096)\n"
    "  --max-body BYTES            request body limit before 413 (default 1048576)\n"
    "  --max-connections N         concurrent connections (default 512)\n"
    "  --shutdown-timeout S        seconds in-flight requests get on SIGINT/SIGTERM (default 10)\n"
    "  scheduler: --strategy naive|bucketed|memory_aware|continuous, --max-num-seqs N,\n"
    "             --max-num-batched-tokens N, --max-model-len N, --block-size N,\n"
    "             --kv-memory-mb MB, --no-prefix-caching\n"
    "  --settings-from DB [--recommendation ID]   (not supported yet)\n";

static int num_arg(const char *flag, const char *v, double lo, double hi, double *out)
{
    char *end = NULL;
    double x = v ? strtod(v, &end) : 0;
    if (!v || end == v || *end || x < lo || x > hi) {
        cli_fail("serve", "%s: expected a number in %g..%g, got '%s'", flag, lo, hi, v ? v : "");
        return 0;
    }
    *out = x;
    return 1;
}

/* "path/to/stories260K.gguf" -> "stories260K" into buf. */
static const char *default_model_name(const char *path, char *buf, size_t cap)
{
    const char *base = strrchr(path, '/');
    snprintf(buf, cap, "%s", base ? base + 1 : path);
    size_t n = strlen(buf);
    if (n > 5 && !strcmp(buf + n - 5, ".gguf")) buf[n - 5] = '\0';
    return buf;
}

int cmd_serve(int argc, char **argv)
{
    sluice_engine_params ep = sluice_engine_default_params();
    srv_config_t sc = srv_config_default();
    double shutdown_s = 10, x;
    const char *settings_db = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes_value = strcmp(a, "--no-prefix-caching") != 0 && strcmp(a, "-h") != 0 && strcmp(a, "--help") != 0;
        if (takes_value && !v) return cli_fail("serve", "%s needs a value", a);
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage, stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            ep.model = v;
        } else if (!strcmp(a, "--host")) {
            sc.host = v;
        } else if (!strcmp(a, "--port")) {
            if (!num_arg(a, v, 0, 65535, &x)) return 2;
            sc.port = (int)x;
        } else if (!strcmp(a, "--served-model-name")) {
            sc.model_name = v;
        } else if (!strcmp(a, "--chat-template")) {
            sc.chat_template = v;
        } else if (!strcmp(a, "--backend")) {
            ep.backend = v;
        } else if (!strcmp(a, "--threads")) {
            if (!num_arg(a, v, 0, 4096, &x)) return 2;
            ep.n_threads = (int)x;
        } else if (!strcmp(a, "--max-queue")) {
            if (!num_arg(a, v, 1, 1 << 24, &x)) return 2;
            ep.max_waiting_requests = (int)x;
        } else if (!strcmp(a, "--max-body")) {
            if (!num_arg(a, v, 64, 1 << 30, &x)) return 2;
            sc.max_body = (size_t)x;
        } else if (!strcmp(a, "--max-connections")) {
            if (!num_arg(a, v, 1, 65536, &x)) return 2;
            sc.max_connections = (int)x;
        } else if (!strcmp(a, "--shutdown-timeout")) {
            if (!num_arg(a, v, 0, 3600, &x)) return 2;
            shutdown_s = x;
        } else if (!strcmp(a, "--strategy")) {
            static const char *const names[] = {"naive", "bucketed", "memory_aware", "continuous"};
            int k = 0;
            while (k < 4 && strcmp(v, names[k]) != 0) k++;
            if (k == 4) return cli_fail("serve", "--strategy: expected naive, bucketed, memory_aware or continuous, got '%s'", v);
            ep.strategy = (sluice_strategy)k;
        } else if (!strcmp(a, "--max-num-seqs")) {
            if (!num_arg(a, v, 1, 65536, &x)) return 2;
            ep.max_num_seqs = ep.max_batch_size = (int)x;
        } else if (!strcmp(a, "--max-num-batched-tokens")) {
            if (!num_arg(a, v, 1, 1 << 24, &x)) return 2;
            ep.max_num_batched_tokens = (int)x;
        } else if (!strcmp(a, "--max-model-len")) {
            if (!num_arg(a, v, 1, 1 << 24, &x)) return 2;
            ep.max_sequence_length = (int)x;
        } else if (!strcmp(a, "--block-size")) {
            if (!num_arg(a, v, 1, 1024, &x)) return 2;
            ep.block_size = (int)x;
        } else if (!strcmp(a, "--kv-memory-mb")) {
            if (!num_arg(a, v, 0, 1 << 24, &x)) return 2;
            ep.kv_memory_mb = x;
        } else if (!strcmp(a, "--no-prefix-caching")) {
            ep.enable_prefix_caching = false;
            continue;
        } else if (!strcmp(a, "--settings-from")) {
            settings_db = v;
        } else if (!strcmp(a, "--recommendation")) {
            if (!num_arg(a, v, 0, 1e15, &x)) return 2;
        } else {
            fputs(usage, stderr);
            return cli_fail("serve", "unknown option '%s'", a);
        }
        i++; /* the value */
    }
    if (settings_db)
        return cli_fail("serve", "--settings-from %s: not supported yet (needs the analysis module's recommendations); "
                                 "pass the scheduler flags instead", settings_db);
    if (!ep.model) {
        fputs(usage, stderr);
        return cli_fail("serve", "-m MODEL is required");
    }
    char name[256];
    if (!sc.model_name) sc.model_name = default_model_name(ep.model, name, sizeof name);

    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL); /* before any thread exists */

    char err[512];
    srv_t *srv = srv_create(&sc, err, sizeof err);
    if (!srv) return cli_fail("serve", "%s", err);
    fprintf(stderr, "sluice serve: loading %s (listening on http://%s:%d, /health is 503 until ready)\n", ep.model, sc.host,
            srv_port(srv));
    sluice_engine *e = sluice_engine_create(&ep, err, sizeof err);
    if (!e) {
        srv_free(srv);
        return cli_fail("serve", "%s", err);
    }
    if (srv_attach(srv, e, err, sizeof err) != 0) {
        srv_free(srv);
        sluice_engine_free(e);
        return cli_fail("serve", "%s", err);
    }
    fprintf(stderr, "sluice serve: ready: model '%s' on http://%s:%d\n", sc.model_name, sc.host, srv_port(srv));

    int sig = 0;
    sigwait(&stop_signals, &sig);
    fprintf(stderr, "sluice serve: %s: stopping (in-flight requests get %.0f s)\n", sig == SIGINT ? "SIGINT" : "SIGTERM",
            shutdown_s);
    int aborted = srv_shutdown(srv, shutdown_s);
    srv_free(srv);
    sluice_engine_free(e);
    fprintf(stderr, "sluice serve: stopped (%d request%s aborted)\n", aborted, aborted == 1 ? "" : "s");
    return 0;
}
