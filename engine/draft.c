/* draft.c — prompt-lookup drafts (see draft.h). */
#include "engine/draft.h"

#include <string.h>

int eng_draft_lookup(const int32_t *toks, int n_toks, int min_n, int max_n, int max_draft, int32_t *out)
{
    if (max_draft <= 0)
        return 0;
    for (int n = max_n; n >= min_n; n--) {
        if (n_toks < n + 1)
            continue;
        const int32_t *suffix = toks + n_toks - n;
        int best_from = -1, best_len = 0;
        /* a match toks[i .. i + n) ends before the suffix's last token, so something follows it */
        for (int i = n_toks - n - 1; i >= 0; i--) {
            if (toks[i + n - 1] != suffix[n - 1] || memcmp(toks + i, suffix, sizeof *toks * (size_t)n))
                continue;
            int len = n_toks - (i + n);
            if (len > best_len)
                best_from = i + n, best_len = len;
            if (best_len >= max_draft)
                break;
        }
        if (best_len > 0) {
            int k = best_len < max_draft ? best_len : max_draft;
            memcpy(out, toks + best_from, sizeof *toks * (size_t)k);
            return k;
        }
    }
    return 0;
}
