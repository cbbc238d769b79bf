/* fuzz_tokenizer.c — libFuzzer target: arbitrary bytes encoded with the stories260K vocabulary
 * (SentencePiece-style) and decoded again; SPM byte fallback must reproduce the input exactly
 * (after the space prefix) unless it holds special-token text or a literal U+2581.
 * Needs ../shared/models/stories260K.gguf (run from the repository root). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"
#include "engine/tokenizer.h"

static eng_tokenizer_t *tok; /* loaded once: the fuzzer's only state */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!tok) {
        eng_gguf_t *g;
        char err[256];
        if (eng_gguf_open("../shared/models/stories260K.gguf", &g, err, sizeof err) != 0 ||
            eng_tok_from_gguf(g, &tok, err, sizeof err) != 0) {
            fprintf(stderr, "fuzz_tokenizer: %s\n", err);
            abort();
        }
        eng_gguf_close(g);
    }
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;
    size_t len = strlen(text);
    int32_t ids[4096];
    int n = eng_tok_encode(tok, text, 1, 1, ids, 4096);
    if (n > 4096) n = 4096;
    char out[4 * 4096 + 8];
    int k = eng_tok_decode(tok, ids, n, 0, out, sizeof out);
    /* no special tokens in the text and no truncation: decode = " " + text */
    if (n < 4096 && !strstr(text, "<s>") && !strstr(text, "</s>") && !strstr(text, "<unk>") &&
        !strstr(text, "\xe2\x96\x81") && len > 0 &&
        ((size_t)k != len + 1 || memcmp(out + 1, text, len) != 0))
        __builtin_trap();
    free(text);
    return 0;
}
