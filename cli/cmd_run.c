/* cmd_run.c — `sluice run`: generate a continuation of one prompt through the engine, streaming
 * it to stdout; --print-ids adds the prompt and output token ids in the fixtures' format
 * (../shared/fixtures/stories260K_greedy.txt); timing goes to stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "include/sluice.h"

static const char usage[] =
    "usage: sluice run -m MODEL -p PROMPT [options]\n"
    "  -m, --model PATH        GGUF file or synthetic:SHAPE\n"
    "  -p, --prompt TEXT       the prompt\n"
    "  -n, --max-tokens N      tokens to generate (default 128; 0 = up to the context)\n"
    "  --temp T                temperature; 0 = greedy (default 0.8)\n"
    "  --top-k K               (default 40; 0 = off)\n"
    "  --top-p P               (default 0.95; 1 = off)\n"
    "  --min-p P               (default 0.05; 0 = off)\n"
    "  --repeat-penalty R      (default 1.0 = off)\n"
    "  --seed S                sampling seed (default: random)\n"
    "  --chat                  wrap the prompt as a user turn of the model's chat template\n"
    "  --ignore-eos            keep generating past end-of-sequence\n"
    "  --print-ids             print prompt_ids: and output_ids: lines after the text\n"
    "  --backend cpu|cuda      (default cpu)\n"
    "  --threads N             cpu threads (default: all cores)\n"
    "  --fixed-threads         every step on all N threads, even while other processes hold cores\n"
    "                          (default: fewer threads then)\n"
    "  --kv-dtype f32|f16|int8 KV cache elements on the cpu backend (default f16 on CPUs with\n"
    "                          AVX-512, f32 elsewhere; int8: half f16's memory; cuda: always f16);\n"
    "                          alias --kv-cache-dtype\n"
    "  --num-speculative-tokens K  speculative decoding: up to K draft tokens per step by prompt lookup\n"
    "                          (what followed an earlier occurrence of the last few tokens), verified in\n"
    "                          the same forward; the output is the same (default 0 = off)\n"
    "  --prompt-lookup-min N, --prompt-lookup-max N  n-gram lengths matched (default 2, 3)\n";

/* Parses a number flag value into *out; prints the error and returns 0 when it is not one. */
static int num_arg(const char *flag, const char *v, double lo, double hi, double *out)
{
    char *end = NULL;
    double x = v ? strtod(v, &end) : 0;
    if (!v || end == v || *end || x < lo || x > hi) {
        cli_fail("run", "%s: expected a number in %g..%g, got '%s'", flag, lo, hi, v ? v : "");
        return 0;
    }
    *out = x;
    return 1;
}

static bool on_token(const sluice_token *t, void *user)
{
    (void)user;
    fwrite(t->piece, 1, t->piece_len, stdout);
    fflush(stdout);
    return true;
}

static void print_ids(const char *label, const int32_t *ids, int n)
{
    printf("%s:", label);
    for (int i = 0; i < n; i++)
        printf(" %d", ids[i]);
    putchar('\n');
}

int cmd_run(int argc, char **argv)
{
    sluice_engine_params ep = sluice_engine_default_params();
    sluice_request_params rp = sluice_request_default_params();
    ep.max_num_seqs = 1;
    ep.max_batch_size = 1;
    ep.batch_timeout_ms = 0;
    rp.max_tokens = 128;
    bool want_ids = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double x;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage, stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!v)
                return cli_fail("run", "%s needs a value", a);
            ep.model = v, i++;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            if (!v)
                return cli_fail("run", "%s needs a value", a);
            rp.prompt = v, i++;
        } else if (!strcmp(a, "--backend")) {
            if (!v)
                return cli_fail("run", "%s needs a value", a);
            ep.backend = v, i++;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) {
            if (!num_arg(a, v, 0, 1 << 20, &x))
                return 2;
            rp.max_tokens = (int)x, i++;
        } else if (!strcmp(a, "--temp")) {
            if (!num_arg(a, v, 0, 100, &x))
                return 2;
            rp.temperature = (float)x, i++;
        } else if (!strcmp(a, "--top-k")) {
            if (!num_arg(a, v, 0, 1 << 30, &x))
                return 2;
            rp.top_k = (int)x, i++;
        } else if (!strcmp(a, "--top-p")) {
            if (!num_arg(a, v, 0, 1, &x))
                return 2;
            rp.top_p = (float)x, i++;
        } else if (!strcmp(a, "--min-p")) {
            if (!num_arg(a, v, 0, 1, &x))
                return 2;
            rp.min_p = (float)x, i++;
        } else if (!strcmp(a, "--repeat-penalty")) {
            if (!num_arg(a, v, 0, 100, &x))
                return 2;
            rp.repeat_penalty = (float)x, i++;
        } else if (!strcmp(a, "--seed")) {
            if (!num_arg(a, v, 0, 1.8e19, &x))
                return 2;
            rp.seed = (uint64_t)x, i++;
        } else if (!strcmp(a, "--threads")) {
            if (!num_arg(a, v, 0, 4096, &x))
                return 2;
            ep.n_threads = (int)x, i++;
        } else if (!strcmp(a, "--num-speculative-tokens")) {
            if (!num_arg(a, v, 0, 16, &x))
                return 2;
            ep.num_speculative_tokens = (int)x, i++;
        } else if (!strcmp(a, "--prompt-lookup-min") || !strcmp(a, "--prompt-lookup-max")) {
            if (!num_arg(a, v, 1, 16, &x))
                return 2;
            *(!strcmp(a, "--prompt-lookup-min") ? &ep.prompt_lookup_min : &ep.prompt_lookup_max) = (int)x, i++;
        } else if (cli_is_kv_dtype_flag(a)) {
            if (cli_kv_dtype("run", a, v, &ep.kv_dtype))
                return 2;
            i++;
        } else if (!strcmp(a, "--chat")) {
            rp.chat = true;
        } else if (!strcmp(a, "--ignore-eos")) {
            rp.ignore_eos = true;
        } else if (!strcmp(a, "--fixed-threads")) {
            ep.fixed_threads = true;
        } else if (!strcmp(a, "--print-ids")) {
            want_ids = true;
        } else {
            fputs(usage, stderr);
            return cli_fail("run", "unknown option '%s'", a);
        }
    }
    if (!ep.model || !rp.prompt) {
        fputs(usage, stderr);
        return cli_fail("run", "-m MODEL and -p PROMPT are required");
    }
    rp.on_token = on_token;

    char err[512];
    sluice_engine *e = sluice_engine_create(&ep, err, sizeof err);
    if (!e)
        return cli_fail("run", "%s", err);
    sluice_request_id id;
    int rc = sluice_submit(e, &rp, &id);
    if (rc != SLUICE_OK) {
        cli_fail("run", "%s", sluice_engine_errmsg(e));
        sluice_engine_free(e);
        return 2;
    }
    sluice_result *r = NULL;
    rc = sluice_wait(e, id, -1, &r);
    int status = 0;
    if (rc != SLUICE_OK || r->status != SLUICE_OK) {
        cli_fail("run", "generation failed: %s",
                 rc != SLUICE_OK ? sluice_strerror(rc) : sluice_engine_errmsg(e));
        status = 1;
    }
    if (r) {
        const sluice_sample *s = &r->samples[0];
        putchar('\n');
        if (want_ids) {
            print_ids("prompt_ids", r->prompt_ids, r->n_prompt_ids);
            print_ids("output_ids", s->ids, s->n_ids);
        }
        fflush(stdout);
        double pp = r->t_first_token - r->t_first_scheduled;
        double tg = r->t_finish - r->t_first_token;
        fprintf(stderr, "\nprompt: %d tokens in %.3f s (%.1f tok/s)\n", r->n_prompt_ids, pp,
                pp > 0 ? r->n_prompt_ids / pp : 0.0);
        fprintf(stderr, "generation: %d tokens in %.3f s (%.1f tok/s), finish: %s\n", s->n_ids, tg,
                s->n_ids > 1 && tg > 0 ? (s->n_ids - 1) / tg : 0.0,
                sluice_finish_reason_name(s->finish_reason));
        if (ep.num_speculative_tokens > 0) {
            sluice_stats st;
            sluice_get_stats(e, &st);
            const cli_spec_counts_t c = {st.spec_draft_tokens, st.spec_accepted_tokens, st.spec_rejections,
                                         st.spec_lookups, st.spec_proposals};
            cli_print_speculation(stderr, "speculation: ", &c, ep.prompt_lookup_min, ep.prompt_lookup_max);
        }
        cli_print_thread_drops(stderr, "", e);
        sluice_result_free(r);
    }
    sluice_engine_free(e);
    return status;
}
