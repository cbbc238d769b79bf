/* tokenizer.h — text <-> token ids from a GGUF file's tokenizer metadata.
 *
 * Two kinds, picked by tokenizer.ggml.model:
 *   "llama"  SentencePiece-style: tokens + scores; text is prefixed with a space
 *            (tokenizer.ggml.add_space_prefix, default on), spaces become U+2581 '▁', adjacent
 *            symbols are merged highest score first while the merged text is a token; a character
 *            with no token falls back to its UTF-8 bytes as <0xNN> tokens.
 *   "gpt2"   byte-level BPE: the text is split by the pre-tokenizer (tokenizer.ggml.pre: the GPT-2
 *            regex; "smollm" and the starcoder family first isolate every digit), each piece's
 *            bytes are mapped to printable code points (GPT-2's byte-to-unicode table) and merged
 *            by rank (tokenizer.ggml.merges, lowest rank first).
 * Special tokens (type control or user-defined, e.g. <|im_start|>, <s>) are matched as whole
 * strings before the split, when parse_special is set (user-defined tokens always are).
 *
 * Contract: the tokenizer is immutable after creation; every function is safe to call from any
 * number of threads at once. Encoding allocates scratch per call (sl_malloc) and is linear-ish in
 * the text length (a 2,000-token prompt in well under a millisecond on the vocabularies we ship).
 * Decoding never allocates.
 */
#ifndef SLUICE_ENGINE_TOKENIZER_H
#define SLUICE_ENGINE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

typedef enum eng_tok_kind {
    ENG_TOK_SPM = 1, /* "llama" */
    ENG_TOK_BPE = 2, /* "gpt2" */
} eng_tok_kind_t;

/* Token types as tokenizer.ggml.token_type stores them. */
typedef enum eng_tok_type {
    ENG_TOKT_NORMAL = 1,
    ENG_TOKT_UNKNOWN = 2,
    ENG_TOKT_CONTROL = 3,
    ENG_TOKT_USER_DEFINED = 4,
    ENG_TOKT_UNUSED = 5,
    ENG_TOKT_BYTE = 6,
} eng_tok_type_t;

typedef struct eng_tokenizer eng_tokenizer_t;

/* Builds the tokenizer from g's metadata (g may be closed afterwards: everything is copied).
 * SL_OK; SL_ENOTFOUND when the file has no tokenizer.ggml.model / tokens; SL_EUNSUPPORTED for
 * another model kind; SL_EFORMAT for inconsistent metadata (scores or types of the wrong length,
 * a special id out of range, a merge that is not "a b"); SL_ENOMEM. err says which. */
int eng_tok_from_gguf(eng_gguf_t *g, eng_tokenizer_t **out, char *err, int errlen);
void eng_tok_free(eng_tokenizer_t *t);

/* Encodes NUL-terminated UTF-8 text (invalid bytes are taken one at a time as U+FFFD-like
 * single-byte symbols and still round-trip through byte tokens). add_bos: prepend BOS when the
 * vocabulary has one. parse_special: match control tokens written in the text.
 * Returns the number of tokens the text encodes to; when that exceeds cap, only the first cap are
 * written (call again with a larger buffer). Negative status on error (SL_ENOMEM, SL_EINVAL). */
int eng_tok_encode(const eng_tokenizer_t *t, const char *text, int add_bos, int parse_special,
                   int32_t *out, int cap);

/* The bytes token id stands for: SPM '▁' becomes ' ', <0xNN> becomes byte NN, BPE code points map
 * back to raw bytes. A piece can be an incomplete UTF-8 sequence (streaming callers join pieces
 * before printing). Control tokens give "" unless special is set (then their text). Writes at
 * most cap bytes (no NUL) and returns the piece's full length; SL_EINVAL for an id out of range. */
int eng_tok_piece(const eng_tokenizer_t *t, int32_t id, int special, char *buf, int cap);
/* Concatenated pieces of ids[0..n). Returns the full length; writes at most cap-1 bytes plus a
 * NUL when cap > 0. SL_EINVAL when an id is out of range. */
int eng_tok_decode(const eng_tokenizer_t *t, const int32_t *ids, int n, int special, char *out,
                   int cap);

/* Raw vocabulary text of id (NUL-terminated), NULL out of range. */
const char *eng_tok_text(const eng_tokenizer_t *t, int32_t id);
/* Token type of id (eng_tok_type_t), 0 out of range. */
int eng_tok_type(const eng_tokenizer_t *t, int32_t id);
/* Id of an exact vocabulary string, -1 when absent. */
int32_t eng_tok_find(const eng_tokenizer_t *t, const char *text);

eng_tok_kind_t eng_tok_kind(const eng_tokenizer_t *t);
int eng_tok_vocab(const eng_tokenizer_t *t);
int32_t eng_tok_bos(const eng_tokenizer_t *t); /* -1 when none */
int32_t eng_tok_eos(const eng_tokenizer_t *t); /* -1 when none */
/* End of turn: tokenizer.ggml.eot_token_id, else a token named <|im_end|>, <|eot_id|> or
 * <end_of_turn>; -1 when none. */
int32_t eng_tok_eot(const eng_tokenizer_t *t);
/* 1 when id ends generation (EOS or EOT). */
int eng_tok_is_eog(const eng_tokenizer_t *t, int32_t id);
/* Whether the vocabulary asks for BOS (tokenizer.ggml.add_bos_token; default 1 for SPM, 0 BPE). */
int eng_tok_add_bos(const eng_tokenizer_t *t);

#endif
