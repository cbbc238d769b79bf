/* bench_spec.c — what speculative decoding by prompt lookup buys on real prompts: each prompt is
 * generated greedily (chat template, up to N tokens) with drafts off and with K drafts per step,
 * alternating R rounds in one process, on one engine per setting; prints per prompt the median
 * decode tokens/s of each, their ratio, the acceptance (drafts kept / drafts run), and whether the
 * two outputs are the same tokens (they must be: speculation changes how many forwards a sequence
 * takes, never its tokens), then the median ratio over the prompts.
 *
 * The prompts span what prompt lookup is for (answers that quote or rework their prompt: a
 * summary, an extraction, a code edit) and what it is not (an open question, a story), so the
 * table shows the gain where text repeats and the cost where it does not.
 *
 *   bench_spec MODEL [-t THREADS] [-k K] [-n MAX_TOKENS] [-r ROUNDS] [--min N] [--max N]
 * (defaults: all cores, K 2, 128 tokens, 5 rounds, the engine's prompt lookup lengths)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "include/sluice.h"

static const struct {
    const char *name, *prompt;
} prompts[] = {
    {"summary",
     "Summarize this text in two sentences. Text: The city council met on Tuesday to discuss the new park. "
     "The park will have a playground, a pond and a garden. The council said the park will open next "
     "spring. Some residents asked about parking near the park, and the council said a new parking lot "
     "will be built next to the garden."},
    {"extraction",
     "List every person and the city they live in, one per line as 'name: city'. Anna lives in Paris and "
     "works with Ben, who lives in Berlin. Carla moved from Rome to Madrid last year. David still lives in "
     "London, and his sister Emma lives in Oslo."},
    {"code edit",
     "Rename the variable total to sum in this function and show the whole function.\n"
     "int add_all(const int *values, int count)\n{\n    int total = 0;\n    for (int i = 0; i < count; i++)\n"
     "        total += values[i];\n    return total;\n}"},
    {"open question", "What are three good habits for staying healthy?"},
    {"story", "Write a short story about a cat who learns to fly."},
};
#define N_PROMPTS ((int)(sizeof prompts / sizeof prompts[0]))

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

typedef struct run {
    double tps;        /* decode tokens/s: tokens after the first over first token -> finish */
    int n_ids;
    int32_t ids[1024];
} run_t;

static int generate(sluice_engine *e, const char *prompt, int max_tokens, run_t *out)
{
    sluice_request_params r = sluice_request_default_params();
    r.prompt = prompt;
    r.chat = true;
    r.max_tokens = max_tokens;
    r.temperature = 0;
    sluice_request_id id;
    sluice_result *res = NULL;
    if (sluice_submit(e, &r, &id) != SLUICE_OK || sluice_wait(e, id, -1, &res) != SLUICE_OK ||
        res->status != SLUICE_OK) {
        fprintf(stderr, "bench_spec: generation failed: %s\n", sluice_engine_errmsg(e));
        sluice_result_free(res);
        return 1;
    }
    const sluice_sample *s = &res->samples[0];
    double t = res->t_finish - res->t_first_token;
    out->tps = s->n_ids > 1 && t > 0 ? (s->n_ids - 1) / t : 0;
    out->n_ids = s->n_ids < 1024 ? s->n_ids : 1024;
    memcpy(out->ids, s->ids, sizeof(int32_t) * (size_t)out->n_ids);
    sluice_result_free(res);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_spec MODEL [-t THREADS] [-k K] [-n MAX_TOKENS] [-r ROUNDS] [--min N] [--max N]\n");
        return 2;
    }
    const sluice_engine_params defaults = sluice_engine_default_params();
    int threads = 0, k = 2, max_tokens = 128, rounds = 5;
    int lmin = defaults.prompt_lookup_min, lmax = defaults.prompt_lookup_max;
    for (int i = 2; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "-t")) threads = v;
        else if (!strcmp(argv[i], "-k")) k = v;
        else if (!strcmp(argv[i], "-n")) max_tokens = v;
        else if (!strcmp(argv[i], "-r")) rounds = v;
        else if (!strcmp(argv[i], "--min")) lmin = v;
        else if (!strcmp(argv[i], "--max")) lmax = v;
        else {
            fprintf(stderr, "bench_spec: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (k < 1 || rounds < 1 || rounds > 64 || max_tokens < 2 || max_tokens > 1024) {
        fprintf(stderr, "bench_spec: need -k >= 1, -r 1..64, -n 2..1024\n");
        return 2;
    }
    sluice_engine *eng[2];
    for (int s = 0; s < 2; s++) {
        sluice_engine_params p = sluice_engine_default_params();
        p.model = argv[1];
        p.n_threads = threads;
        p.max_num_seqs = 1;
        p.num_speculative_tokens = s ? k : 0;
        p.prompt_lookup_min = lmin;
        p.prompt_lookup_max = lmax;
        char err[512];
        if (!(eng[s] = sluice_engine_create(&p, err, sizeof err))) {
            fprintf(stderr, "bench_spec: %s\n", err);
            return 1;
        }
    }
    printf("bench_spec: %s, %d threads, greedy, chat template, up to %d tokens, drafts %d (prompt lookup %d..%d), "
           "%d rounds alternating\n",
           argv[1], threads, max_tokens, k, lmin, lmax, rounds);
    printf("%-14s %6s %12s %12s %7s %11s %5s\n", "prompt", "tokens", "off tok/s", "on tok/s", "ratio", "acceptance",
           "same");
    double ratios[N_PROMPTS];
    int status = 0;
    for (int q = 0; q < N_PROMPTS; q++) {
        double tps[2][64];
        static run_t runs[2];
        sluice_stats before, after;
        sluice_get_stats(eng[1], &before);
        bool same = true;
        for (int r = 0; r < rounds && !status; r++) {
            for (int s = 0; s < 2 && !status; s++) {
                int which = r % 2 ? 1 - s : s; /* alternate which setting goes first */
                status = generate(eng[which], prompts[q].prompt, max_tokens, &runs[which]);
                tps[which][r] = runs[which].tps;
            }
            same = same && runs[0].n_ids == runs[1].n_ids &&
                   !memcmp(runs[0].ids, runs[1].ids, sizeof(int32_t) * (size_t)runs[0].n_ids);
        }
        if (status)
            break;
        sluice_get_stats(eng[1], &after);
        int64_t drafts = after.spec_draft_tokens - before.spec_draft_tokens;
        int64_t kept = after.spec_accepted_tokens - before.spec_accepted_tokens;
        double off = median(tps[0], rounds), on = median(tps[1], rounds);
        ratios[q] = off > 0 ? on / off : 0;
        printf("%-14s %6d %12.1f %12.1f %6.2fx %10.1f%% %5s\n", prompts[q].name, runs[0].n_ids, off, on, ratios[q],
               drafts > 0 ? 100.0 * (double)kept / (double)drafts : 0.0, same ? "yes" : "NO");
        if (!same)
            status = 1;
    }
    if (!status)
        printf("median ratio over the prompts: %.2fx\n", median(ratios, N_PROMPTS));
    for (int s = 0; s < 2; s++)
        sluice_engine_free(eng[s]);
    return status;
}
