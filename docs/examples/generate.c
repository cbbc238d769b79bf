/* generate.c — the smallest complete use of the sluice C API: load a model, stream one
 * completion to stdout, print its timing, shut down.
 *
 *   build (from the repository root, after `make`):
 *     cc -std=c11 -I. docs/examples/generate.c build/libengine.a build/libsched.a \
 *        -lm -lpthread -ldl -o generate
 *   (a build with the CUDA backend also needs: -L/usr/local/cuda/lib64 -lcublasLt -lcublas
 *    -lcudart -lstdc++; `make examples` passes the right libraries)
 *   run:
 *     ./generate ../shared/models/stories260K.gguf "Once upon a time" 64
 */
#include <stdio.h>
#include <stdlib.h>

#include "include/sluice.h"

/* Called on the engine thread for every token; returning false would cancel the request. */
static bool print_piece(const sluice_token *tok, void *user)
{
    (void)user;
    fwrite(tok->piece, 1, tok->piece_len, stdout);
    fflush(stdout);
    return true;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf PROMPT [MAX_TOKENS]\n", argv[0]);
        return 2;
    }
    sluice_engine_params ep = sluice_engine_default_params();
    ep.model = argv[1];
    ep.max_num_seqs = 4; /* a small KV pool is enough for one request */

    char err[512];
    sluice_engine *e = sluice_engine_create(&ep, err, sizeof err);
    if (!e) {
        fprintf(stderr, "cannot create the engine: %s\n", err);
        return 1;
    }

    sluice_request_params rp = sluice_request_default_params();
    rp.prompt = argv[2];
    rp.max_tokens = argc > 3 ? atoi(argv[3]) : 64;
    rp.temperature = 0; /* greedy */
    rp.on_token = print_piece;

    sluice_request_id id;
    int rc = sluice_submit(e, &rp, &id);
    if (rc != SLUICE_OK) {
        fprintf(stderr, "submit: %s (%s)\n", sluice_strerror(rc), sluice_engine_errmsg(e));
        sluice_engine_free(e);
        return 1;
    }

    sluice_result *r = NULL;
    rc = sluice_wait(e, id, -1, &r);
    if (rc == SLUICE_OK) {
        const sluice_sample *s = &r->samples[0];
        double gen = r->t_finish - r->t_first_token;
        printf("\n[%d prompt tokens, %d generated, finish: %s, TTFT %.1f ms, %.1f tok/s]\n",
               r->n_prompt_ids, s->n_ids, sluice_finish_reason_name(s->finish_reason),
               1e3 * (r->t_first_token - r->t_arrival), s->n_ids > 1 && gen > 0 ? (s->n_ids - 1) / gen : 0.0);
        sluice_result_free(r);
    }
    sluice_engine_free(e);
    return rc == SLUICE_OK ? 0 : 1;
}
