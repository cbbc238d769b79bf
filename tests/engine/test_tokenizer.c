/* test_tokenizer.c — SentencePiece-style (stories260K, against llama.cpp's fixtures) and
 * byte-level BPE (SmolLM2, from first principles) tokenizers. Suites skip with a message when
 * their model file is absent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "engine/gguf.h"
#include "engine/tokenizer.h"
#include "sched/status.h"

#define STORIES "../shared/models/stories260K.gguf"
#define FIXTURE "../shared/fixtures/stories260K_greedy.txt"
#define SMOLLM "models/SmolLM2-135M-Instruct.Q4_1.gguf"

static eng_tokenizer_t *load(const char *path)
{
    eng_gguf_t *g;
    eng_tokenizer_t *t = NULL;
    char err[256];
    if (eng_gguf_open(path, &g, err, sizeof err) != SL_OK) return NULL;
    int rc = eng_tok_from_gguf(g, &t, err, sizeof err);
    eng_gguf_close(g); /* the tokenizer copies what it needs */
    if (rc != SL_OK) fail_msg("%s", err);
    return t;
}

static int setup_stories(void **state)
{
    *state = load(STORIES);
    if (!*state) printf("[ SKIPPED  ] %s is absent: SentencePiece tokenizer tests skipped\n", STORIES);
    return 0;
}

static int setup_smollm(void **state)
{
    *state = load(SMOLLM);
    if (!*state) printf("[ SKIPPED  ] %s is absent (scripts/setup.sh installs it): BPE tokenizer tests skipped\n", SMOLLM);
    return 0;
}

static int teardown(void **state)
{
    eng_tok_free(*state);
    return 0;
}

#define NEED_TOK(state) do { if (!*(state)) { skip(); } } while (0)

static void expect_ids(const eng_tokenizer_t *t, const char *text, int add_bos, const int32_t *want, int n)
{
    int32_t ids[512];
    int k = eng_tok_encode(t, text, add_bos, 1, ids, 512);
    if (k != n || memcmp(ids, want, (size_t)n * sizeof *ids) != 0) {
        char got[2048] = "";
        for (int i = 0; i < k && i < 100; i++) snprintf(got + strlen(got), sizeof got - strlen(got), " %d", ids[i]);
        fail_msg("'%s' encoded to%s (%d tokens, expected %d)", text, got, k, n);
    }
}

static void expect_round_trip(const eng_tokenizer_t *t, const char *text, const char *expect)
{
    int32_t ids[4096];
    int n = eng_tok_encode(t, text, 0, 1, ids, 4096);
    assert_in_range(n, 0, 4096);
    char out[16384];
    int k = eng_tok_decode(t, ids, n, 1, out, sizeof out);
    assert_int_equal(k, (int)strlen(expect));
    assert_string_equal(out, expect);
}

/* ---- SentencePiece (stories260K) ---- */

static void test_spm_metadata(void **state)
{
    NEED_TOK(state);
    eng_tokenizer_t *t = *state;
    assert_int_equal(eng_tok_kind(t), ENG_TOK_SPM);
    assert_int_equal(eng_tok_vocab(t), 512);
    assert_int_equal(eng_tok_bos(t), 1);
    assert_int_equal(eng_tok_eos(t), 2);
    assert_int_equal(eng_tok_add_bos(t), 1);
    assert_int_equal(eng_tok_type(t, 1), ENG_TOKT_CONTROL);
    assert_int_equal(eng_tok_type(t, 3), ENG_TOKT_BYTE);
    assert_string_equal(eng_tok_text(t, 403), "\xe2\x96\x81Once");
    assert_int_equal(eng_tok_find(t, "\xe2\x96\x81Once"), 403);
    assert_true(eng_tok_is_eog(t, 2));
}

static void test_spm_encodes_fixture_prompts_like_llama_cpp(void **state)
{
    NEED_TOK(state);
    expect_ids(*state, "Once upon a time", 1, (const int32_t[]){1, 403, 407, 261, 378}, 5);
    expect_ids(*state, "Lily wanted to", 1, (const int32_t[]){1, 317, 391, 266, 267}, 5);
    expect_ids(*state, "The little dog", 1, (const int32_t[]){1, 291, 376, 400, 428}, 5);
}

/* Reads the fixture's blocks and checks every prompt's ids and output decoding. */
static void test_spm_fixture_outputs_decode_to_their_text(void **state)
{
    NEED_TOK(state);
    FILE *f = fopen(FIXTURE, "rb");
    if (!f) {
        printf("[ SKIPPED  ] %s is absent\n", FIXTURE);
        skip();
    }
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    int blocks = 0;
    for (char *b = strstr(buf, "\n=== "); b; b = strstr(b + 1, "\n=== ")) {
        char *prompt = b + 5, *nl = strchr(prompt, '\n');
        char *pids = strstr(prompt, "prompt_ids:"), *oids = strstr(prompt, "output_ids:");
        char *text = strstr(prompt, "output_text: ");
        assert_non_null(nl); assert_non_null(pids); assert_non_null(oids); assert_non_null(text);
        *nl = 0;
        int32_t want[64], out[128];
        int nw = 0, no = 0;
        for (char *p = pids + 11; *p && *p != '\n';) want[nw++] = (int32_t)strtol(p, &p, 10);
        for (char *p = oids + 11; *p && *p != '\n';) out[no++] = (int32_t)strtol(p, &p, 10);
        text += 13;
        char *end = strstr(text, "\n=== ");
        size_t tl = end ? (size_t)(end - text) : strlen(text) - 1; /* the file's last newline */
        expect_ids(*state, prompt, 1, want, nw);
        *nl = '\n';
        char dec[4096];
        int k = eng_tok_decode(*state, out, no, 0, dec, sizeof dec);
        assert_int_equal(no, 64);
        assert_int_equal(k, (int)tl);
        assert_memory_equal(dec, text, tl);
        blocks++;
    }
    assert_int_equal(blocks, 3);
}

static void test_spm_byte_fallback_round_trips_any_bytes(void **state)
{
    NEED_TOK(state);
    /* stories260K knows no "ö", "日" or invalid bytes: they become <0xNN> tokens */
    expect_round_trip(*state, "h\xc3\xb6llo \xe6\x97\xa5 \xff\xfe x", " h\xc3\xb6llo \xe6\x97\xa5 \xff\xfe x");
    expect_round_trip(*state, "  two  spaces\nand newline", "   two  spaces\nand newline");
    /* a lead byte without its continuation must not swallow the next space (found by fuzzing) */
    expect_round_trip(*state, "Onc\xc1 0 0upon", " Onc\xc1 0 0upon");
    int32_t ids[8];
    assert_int_equal(eng_tok_encode(*state, "\xc3\xb6", 0, 0, ids, 8), 3); /* ▁ <0xC3> <0xB6> */
    char piece[8];
    assert_int_equal(eng_tok_piece(*state, ids[1], 0, piece, sizeof piece), 1);
    assert_int_equal((uint8_t)piece[0], 0xc3); /* half a character: streaming callers join pieces */
}

static void test_spm_special_tokens_only_when_parsing_special(void **state)
{
    NEED_TOK(state);
    int32_t ids[32];
    int n = eng_tok_encode(*state, "a</s>b", 0, 1, ids, 32);
    int found = 0;
    for (int i = 0; i < n; i++) found |= ids[i] == 2;
    assert_true(found);
    n = eng_tok_encode(*state, "a</s>b", 0, 0, ids, 32);
    for (int i = 0; i < n; i++) assert_int_not_equal(ids[i], 2);
    char piece[8];
    assert_int_equal(eng_tok_piece(*state, 2, 0, piece, sizeof piece), 0);
    assert_int_equal(eng_tok_piece(*state, 2, 1, piece, sizeof piece), 4);
    assert_memory_equal(piece, "</s>", 4);
}

static void test_encode_reports_count_beyond_cap(void **state)
{
    NEED_TOK(state);
    int32_t ids[2] = {-1, -1};
    int n = eng_tok_encode(*state, "Once upon a time", 1, 1, ids, 2);
    assert_int_equal(n, 5);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 403);
    assert_int_equal(eng_tok_encode(*state, "", 1, 1, ids, 2), 1);
    assert_int_equal(eng_tok_piece(*state, 512, 0, (char[4]){0}, 4), SL_EINVAL);
}

/* ---- byte-level BPE (SmolLM2) ---- */

static void test_bpe_metadata(void **state)
{
    NEED_TOK(state);
    eng_tokenizer_t *t = *state;
    assert_int_equal(eng_tok_kind(t), ENG_TOK_BPE);
    assert_int_equal(eng_tok_vocab(t), 49152);
    assert_int_equal(eng_tok_add_bos(t), 0);
    assert_string_equal(eng_tok_text(t, 1), "<|im_start|>");
    assert_string_equal(eng_tok_text(t, 2), "<|im_end|>");
    assert_int_equal(eng_tok_eos(t), 2);
    assert_int_equal(eng_tok_eot(t), 2);
}

static void test_bpe_round_trips_varied_text(void **state)
{
    NEED_TOK(state);
    static const char *const texts[] = {
        "Hello, world! It's 2024: numbers 12345 and   spaces\n\ttabs  \n\n",
        "naïve café — 日本語テキスト 🙂 don't we'll they've I'd",
        "x = f(a[i], b->c) != 0 && !done; // comment\r\n",
        "   leading and trailing   ",
        "invalid \xc3 bytes \xe2\x82 and \x80 alone",
        "<|im_start|>user\nWhat is 3+4?<|im_end|>\n<|im_start|>assistant\n",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) expect_round_trip(*state, texts[i], texts[i]);
}

static void test_bpe_pretokenizer_isolates_digits_and_spaces(void **state)
{
    NEED_TOK(state);
    eng_tokenizer_t *t = *state;
    int32_t ids[64];
    int n = eng_tok_encode(t, "It's 2024", 0, 0, ids, 64);
    /* "It" "'s" " " "2" "0" "2" "4": the space before a number stands alone, each digit too */
    static const char *const want[] = {"It", "'s", "\xc4\xa0", "2", "0", "2", "4"};
    assert_int_equal(n, 7);
    for (int i = 0; i < n; i++) assert_string_equal(eng_tok_text(t, ids[i]), want[i]);
    n = eng_tok_encode(t, "a   b", 0, 0, ids, 64); /* "a" "  " " b": the last space joins the word */
    assert_int_equal(n, 3);
    assert_string_equal(eng_tok_text(t, ids[1]), "\xc4\xa0\xc4\xa0");
    assert_string_equal(eng_tok_text(t, ids[2]), "\xc4\xa0" "b");
}

static void test_bpe_special_tokens_are_whole_strings(void **state)
{
    NEED_TOK(state);
    expect_ids(*state, "<|im_start|>user\nHi there<|im_end|>\n", 0,
               (const int32_t[]){1, 4093, 198, 26843, 665, 2, 198}, 7);
    int32_t ids[64];
    int n = eng_tok_encode(*state, "<|im_start|>", 0, 0, ids, 64); /* not parsed: plain text */
    assert_true(n > 1);
    for (int i = 0; i < n; i++) assert_int_not_equal(ids[i], 1);
}

/* Sanitizer builds run the encoder tens of times slower; the bound scales with them. */
#if defined(__SANITIZE_ADDRESS__)
#define SLOWDOWN 40.0
#else
#define SLOWDOWN 1.0
#endif

static void test_bpe_encodes_2000_token_prompt_in_under_10_ms(void **state)
{
    NEED_TOK(state);
    static char text[8000];
    text[0] = 0;
    for (size_t n = 0; n + 64 < sizeof text; n = strlen(text))
        strcat(text + n, "The quick brown fox, aged 12, jumps over the lazy dog; \xc2\xbfqu\xc3\xa9? ");
    static int32_t ids[4000];
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int n = eng_tok_encode(*state, text, 0, 1, ids, 4000);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
    printf("  encoded %zu bytes into %d tokens in %.2f ms\n", strlen(text), n, ms);
    assert_in_range(n, 2000, 4000);
    assert_true(ms < 10.0 * SLOWDOWN);
}

int main(void)
{
    const struct CMUnitTest spm[] = {
        cmocka_unit_test(test_spm_metadata),
        cmocka_unit_test(test_spm_encodes_fixture_prompts_like_llama_cpp),
        cmocka_unit_test(test_spm_fixture_outputs_decode_to_their_text),
        cmocka_unit_test(test_spm_byte_fallback_round_trips_any_bytes),
        cmocka_unit_test(test_spm_special_tokens_only_when_parsing_special),
        cmocka_unit_test(test_encode_reports_count_beyond_cap),
    };
    const struct CMUnitTest bpe[] = {
        cmocka_unit_test(test_bpe_metadata),
        cmocka_unit_test(test_bpe_round_trips_varied_text),
        cmocka_unit_test(test_bpe_pretokenizer_isolates_digits_and_spaces),
        cmocka_unit_test(test_bpe_special_tokens_are_whole_strings),
        cmocka_unit_test(test_bpe_encodes_2000_token_prompt_in_under_10_ms),
    };
    int rc = cmocka_run_group_tests_name("tokenizer_spm_stories260K", spm, setup_stories, teardown);
    return rc | cmocka_run_group_tests_name("tokenizer_bpe_smollm2", bpe, setup_smollm, teardown);
}
