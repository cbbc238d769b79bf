/* draft.h — draft tokens for speculative decoding by prompt lookup (n-gram matching): the tokens
 * that followed an earlier occurrence of the sequence's own last n tokens, in its prompt or its
 * output. No draft model: proposing costs a scan of the sequence, nothing on the backend.
 *
 * The engine runs a decoding sequence's last token and its drafts in one forward and keeps the
 * drafts its sampler would have produced anyway (engine.c), so drafts change how many forwards a
 * sequence takes, never which tokens it gets. They pay off where text repeats what came before
 * (code edits, summaries and answers quoting their prompt, loops of a small model).
 */
#ifndef SLUICE_ENGINE_DRAFT_H
#define SLUICE_ENGINE_DRAFT_H

#include <stdint.h>

#define ENG_DRAFT_MAX_NGRAM 16 /* longest n-gram a lookup may match */

/* Proposes up to max_draft tokens to follow toks[0 .. n_toks). For n = max_n down to min_n
 * (longest first), it looks for toks' last n tokens ending earlier in toks, most recent match
 * first; the proposal is what followed that match, up to max_draft tokens and never past
 * toks' end. A match with max_draft tokens after it is taken at once; otherwise the longest
 * continuation among that n's matches, and only if no longer n gave any. Writes the proposal to
 * out[0 ..) and returns its length, 0 when nothing matches (or max_draft <= 0). Requires
 * 1 <= min_n <= max_n <= ENG_DRAFT_MAX_NGRAM. Cannot fail. One pass over toks, most recent first,
 * ending early once a max_n match with max_draft tokens after it is found: ~40 us for 32k tokens
 * with no match on the 2-core Zen 1, per decoding sequence and step. */
int eng_draft_lookup(const int32_t *toks, int n_toks, int min_n, int max_n, int max_draft, int32_t *out);

#endif
