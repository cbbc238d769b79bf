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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_continuation_of_the_last_ngram),
        cmocka_unit_test(test_most_recent_match_first),
        cmocka_unit_test(test_longer_ngram_wins_over_a_more_recent_shorter_one),
        cmocka_unit_test(test_short_continuation_takes_the_longest),
        cmocka_unit_test(test_nothing_to_propose),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
