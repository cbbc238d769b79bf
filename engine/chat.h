/* chat.h — chat templates: render a list of {role, content} messages into a prompt string.
 *
 * sluice does not run Jinja. It recognises the template families it knows from the model's
 * tokenizer.chat_template text and renders them natively:
 *   ChatML  (the template contains "<|im_start|>"; SmolLM2, Qwen):
 *           "<|im_start|>ROLE\nCONTENT<|im_end|>\n" per message, then "<|im_start|>assistant\n"
 *           when add_generation_prompt. If the template writes a literal default system turn
 *           ("<|im_start|>system\nTEXT<|im_end|>", SmolLM2's does) it is emitted first whenever
 *           the first message is not a system message, as the Jinja template does.
 *   Llama-2 (the template contains "[INST]"):
 *           "<s>[INST] <<SYS>>\nSYSTEM\n<</SYS>>\n\nUSER [/INST] ASSISTANT </s><s>[INST] USER [/INST]"
 *           (the system prompt folds into the first user turn; add_generation_prompt has no
 *           effect because the format always ends ready for the assistant).
 * Rendered text carries its special tokens as text: encode it with parse_special = 1 and
 * add_bos = 0.
 *
 * Anything else is SL_EUNSUPPORTED ("chat template is not supported (neither ChatML nor Llama-2
 * [INST]): '{% for ...'"); a caller may then fall back on purpose with eng_chat_builtin().
 */
#ifndef SLUICE_ENGINE_CHAT_H
#define SLUICE_ENGINE_CHAT_H

#include <stddef.h>

typedef enum eng_chat_kind {
    ENG_CHAT_CHATML = 1,
    ENG_CHAT_LLAMA2 = 2,
} eng_chat_kind_t;

typedef struct eng_chat_template {
    eng_chat_kind_t kind;
    char *default_system; /* owned; NULL when the template has none */
} eng_chat_template_t;

typedef struct eng_chat_msg {
    const char *role;     /* "system", "user", "assistant" (ChatML passes any role through) */
    const char *content;
} eng_chat_msg_t;

/* Recognises a template text. SL_OK and *out filled; SL_EINVAL for NULL text ("model has no chat
 * template"), SL_EUNSUPPORTED for an unknown family, SL_ENOMEM. err says which. On error *out is
 * zeroed. Free with eng_chat_template_free. */
int eng_chat_parse(const char *template_text, eng_chat_template_t *out, char *err, int errlen);
/* A built-in template by name ("chatml", "llama2"), no default system prompt: the explicit
 * fallback. SL_ENOTFOUND for another name. */
int eng_chat_builtin(const char *name, eng_chat_template_t *out, char *err, int errlen);
void eng_chat_template_free(eng_chat_template_t *t);

/* Renders msgs[0..n) into a new NUL-terminated string (*out, free with sl_free). SL_OK;
 * SL_EINVAL for a NULL role/content or, for Llama-2, roles out of order (user and assistant must
 * alternate after an optional leading system message); SL_ENOMEM. err says which. */
int eng_chat_render(const eng_chat_template_t *t, const eng_chat_msg_t *msgs, int n,
                    int add_generation_prompt, char **out, char *err, int errlen);

#endif
