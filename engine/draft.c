/* draft.c — prompt-lookup drafts (see draft.h).
 *
 * One pass over the candidate ends e of an earlier match, most recent first: L(e) is how many
 * tokens before e equal the sequence's last ones (capped at max_n); a match of length n at e
 * proposes toks[e ..]. The continuation grows as e moves back, so for each n the first match seen
 * with max_draft tokens after it is the one to take, and failing that the last one seen has the
 * longest continuation. The pass stops once the longest n has its full match. */
#include "engine/draft.h"

#include <string.h>

int eng_draft_lookup(const int32_t *toks, int n_toks, int min_n, int max_n, int max_draft, int32_t *out)
{
    if (max_draft <= 0 || n_toks < min_n + 1)
        return 0;
    if (max_n > n_toks - 1)
        max_n = n_toks - 1;
    int from[ENG_DRAFT_MAX_NGRAM + 1]; /* per n: the chosen match's end, -1 when none yet */
    int full[ENG_DRAFT_MAX_NGRAM + 1]; /* per n: it has max_draft tokens after it */
    for (int n = min_n; n <= max_n; n++)
        from[n] = -1, full[n] = 0;
    const int32_t last = toks[n_toks - 1];
    for (int e = n_toks - 1; e >= min_n && !full[max_n]; e--) {
        if (toks[e - 1] != last)
            continue;
        int len = 1;
        while (len < max_n && len < e && toks[e - 1 - len] == toks[n_toks - 1 - len])
            len++;
        for (int n = min_n; n <= len; n++) {
            if (full[n])
                continue;
            from[n] = e;
            full[n] = n_toks - e >= max_draft;
        }
    }
    for (int n = max_n; n >= min_n; n--) {
        if (from[n] < 0)
            continue;
        int k = n_toks - from[n] < max_draft ? n_toks - from[n] : max_draft;
        memcpy(out, toks + from[n], sizeof *toks * (size_t)k);
        return k;
    }
    return 0;
}
