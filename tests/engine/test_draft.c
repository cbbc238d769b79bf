/* test_draft.c — prompt-lookup drafts: exact proposals on crafted token sequences. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "engine/draft.h"

#define LEN(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Looks up toks with the given bounds and checks the proposal is exactly want[0 .. n_want). */
static void expect(const int32_t *toks, int n, int min_n, int max_n, int max_draft, const int32_t *want, int n_want)
{
    int32_t out[16] = {0};
    int k = eng_draft_lookup(toks, n, min_n, max_n, max_draft, out);
    assert_int_equal(k, n_want);
    for (int i = 0; i < n_want; i++)
        assert_int_equal(out[i], want[i]);
}

static void test_continuation_of_the_last_ngram(void **state)
{
    (void)state;
    const int32_t t[] = {1, 2, 3, 4, 1, 2};
    const int32_t want[] = {3, 4, 1};
    expect(t, LEN(t), 1, 3, 3, want, 3); /* "4 1 2" never came before; "1 2" did, at 0 */
}

static void test_most_recent_match_first(void **state)
{
    (void)state;
    const int32_t t[] = {1, 2, 9, 1, 2, 8, 8, 1, 2};
    const int32_t want[] = {8, 8, 1};
    expect(t, LEN(t), 1, 3, 3, want, 3); /* not 9, 1, 2: the match at 3 is the most recent */
}

static void test_longer_ngram_wins_over_a_more_recent_shorter_one(void **state)
{
    (void)state;
    const int32_t t[] = {7, 1, 2, 3, 9, 2, 3, 5, 1, 2, 3};
    const int32_t want[] = {9, 2, 3};
    expect(t, LEN(t), 1, 3, 3, want, 3); /* "1 2 3" at 1, although "2 3" at 5 is more recent */
    const int32_t want2[] = {5, 1, 2};
    expect(t, LEN(t), 1, 2, 3, want2, 3); /* capped at bigrams: the most recent "2 3" */
}

static void test_short_continuation_takes_the_longest(void **state)
{
    (void)state;
    const int32_t t[] = {4, 4, 5, 4, 4};
    /* "4 4" at 0 (3 tokens follow); the unigram "4" at 3 and 1 is never reached */
    const int32_t want[] = {5, 4, 4};
    expect(t, LEN(t), 1, 3, 4, want, 3);
    const int32_t u[] = {6, 1, 2, 1, 2};
    /* "1 2" at 1 only: 2 tokens follow it, fewer than asked */
    const int32_t want_u[] = {1, 2};
    expect(u, LEN(u), 2, 2, 4, want_u, 2);
}

static void test_nothing_to_propose(void **state)
{
    (void)state;
    const int32_t t[] = {1, 2, 3, 1};
    const int32_t want[] = {2, 3, 1};
    expect(t, LEN(t), 2, 3, 4, NULL, 0);   /* "3 1" never came before */
    expect(t, LEN(t), 1, 3, 4, want, 3);   /* "1" did, at 0 */
    expect(t, LEN(t), 1, 3, 0, NULL, 0);   /* no draft slots */
    const int32_t one[] = {5};
    expect(one, 1, 1, 3, 4, NULL, 0);      /* nothing before the last token */
    expect(one, 0, 1, 3, 4, NULL, 0);      /* empty */
    const int32_t distinct[] = {1, 2, 3, 4, 5, 6};
    expect(distinct, LEN(distinct), 1, 3, 4, NULL, 0);
}

/* The contract of draft.h written the plain way: for n = max_n down to min_n, scan the matches of
 * the last n tokens from the most recent back; take the first with max_draft tokens after it, else
 * the one with the longest continuation. */
static int reference(const int32_t *t, int n_toks, int min_n, int max_n, int max_draft, int32_t *out)
{
    if (max_draft <= 0)
        return 0;
    for (int n = max_n; n >= min_n; n--) {
        int best_from = -1, best_len = 0;
        for (int i = n_toks - n - 1; i >= 0 && best_len < max_draft; i--) {
            int j = 0;
            while (j < n && t[i + j] == t[n_toks - n + j])
                j++;
            if (j == n && n_toks - (i + n) > best_len)
                best_from = i + n, best_len = n_toks - (i + n);
        }
        if (best_len > 0) {
            int k = best_len < max_draft ? best_len : max_draft;
            for (int j = 0; j < k; j++)
                out[j] = t[best_from + j];
            return k;
        }
    }
    return 0;
}

/* 20,000 random sequences over small alphabets (so matches of every length happen), every bound:
 * the lookup proposes exactly what the plain reading of the contract does. */
static void test_lookup_equals_the_plain_reference(void **state)
{
    (void)state;
    uint64_t rng = 12345;
    int32_t t[64], got[16], want[16];
    for (int iter = 0; iter < 20000; iter++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        int n = (int)(rng >> 58), alphabet = 2 + (int)((rng >> 40) % 5);
        int min_n = 1 + (int)((rng >> 20) % 3), max_n = min_n + (int)((rng >> 24) % 3);
        int max_draft = (int)((rng >> 28) % 6);
        for (int i = 0; i < n; i++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            t[i] = (int32_t)((rng >> 33) % (uint64_t)alphabet);
        }
        int k = eng_draft_lookup(t, n, min_n, max_n, max_draft, got);
        int kr = reference(t, n, min_n, max_n, max_draft, want);
        if (k != kr)
            print_error("n %d, bounds %d..%d, max_draft %d: %d tokens, want %d\n", n, min_n, max_n, max_draft, k, kr);
        assert_int_equal(k, kr);
        for (int i = 0; i < k; i++)
            assert_int_equal(got[i], want[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_continuation_of_the_last_ngram),
        cmocka_unit_test(test_most_recent_match_first),
        cmocka_unit_test(test_longer_ngram_wins_over_a_more_recent_shorter_one),
        cmocka_unit_test(test_short_continuation_takes_the_longest),
        cmocka_unit_test(test_nothing_to_propose),
        cmocka_unit_test(test_lookup_equals_the_plain_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
