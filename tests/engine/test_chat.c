/* test_chat.c — template detection and native rendering of ChatML (with SmolLM2's default system
 * turn, read from its GGUF when present) and Llama-2 [INST]. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "engine/chat.h"
#include "engine/model.h"
#include "sched/status.h"

#define SMOLLM "models/SmolLM2-135M-Instruct.Q4_1.gguf"

/* SmolLM2's template, as its tokenizer_config.json has it */
static const char SMOL_TMPL[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

static char *render(const eng_chat_template_t *t, const eng_chat_msg_t *m, int n, int gen)
{
    char *out = NULL, err[256];
    assert_int_equal(eng_chat_render(t, m, n, gen, &out, err, sizeof err), SL_OK);
    return out;
}

static void test_chatml_adds_default_system_turn_when_none_given(void **state)
{
    eng_chat_template_t t;
    char err[256];
    assert_int_equal(eng_chat_parse(SMOL_TMPL, &t, err, sizeof err), SL_OK);
    assert_int_equal(t.kind, ENG_CHAT_CHATML);
    assert_string_equal(t.default_system, "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    eng_chat_msg_t m[] = {{"user", "Hi"}, {"assistant", "Hello!"}, {"user", "2+2?"}};
    char *s = render(&t, m, 3, 1);
    assert_string_equal(s, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                           "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
                           "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n");
    sl_free(s);
    eng_chat_msg_t sys[] = {{"system", "Be brief."}, {"user", "Hi"}};
    s = render(&t, sys, 2, 0);
    assert_string_equal(s, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
    sl_free(s);
    eng_chat_template_free(&t);
}

static void test_chatml_template_read_from_smollm2_gguf(void **state)
{
    char err[256];
    eng_model_t *m = eng_model_load(SMOLLM, err, sizeof err);
    if (!m) {
        printf("[ SKIPPED  ] %s: %s\n", SMOLLM, err);
        skip();
    }
    assert_string_equal(m->chat_template, SMOL_TMPL);
    eng_chat_template_t t;
    assert_int_equal(eng_chat_parse(m->chat_template, &t, err, sizeof err), SL_OK);
    assert_non_null(t.default_system);
    eng_chat_template_free(&t);
    eng_model_free(m);
}

static void test_llama2_folds_system_into_first_turn(void **state)
{
    eng_chat_template_t t;
    char err[256];
    assert_int_equal(eng_chat_parse("{% if messages[0]['role'] == 'system' %}...[INST] ...", &t, err, sizeof err), SL_OK);
    assert_int_equal(t.kind, ENG_CHAT_LLAMA2);
    eng_chat_msg_t m[] = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}, {"user", "Bye"}};
    char *s = render(&t, m, 4, 1);
    assert_string_equal(s, "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] Bye [/INST]");
    sl_free(s);
    eng_chat_msg_t bad[] = {{"user", "a"}, {"user", "b"}};
    char *out = (char *)1;
    assert_int_equal(eng_chat_render(&t, bad, 2, 1, &out, err, sizeof err), SL_EINVAL);
    assert_null(out);
    assert_string_equal(err, "llama2 chat: message 1 has role 'user', expected 'assistant' (user and assistant "
                             "alternate after an optional system message)");
    eng_chat_template_free(&t);
}

static void test_unknown_template_is_unsupported_and_fallback_is_explicit(void **state)
{
    eng_chat_template_t t;
    char err[256];
    assert_int_equal(eng_chat_parse("{{ bos_token }}{% for m in messages %}<|user|>{{ m.content }}{% endfor %}", &t, err,
                                    sizeof err), SL_EUNSUPPORTED);
    assert_non_null(strstr(err, "chat template is not supported (neither ChatML nor Llama-2 [INST]): '{{ bos_token }}"));
    assert_int_equal(eng_chat_parse(NULL, &t, err, sizeof err), SL_EINVAL);
    assert_string_equal(err, "model has no chat template");
    assert_int_equal(eng_chat_builtin("chatml", &t, err, sizeof err), SL_OK);
    assert_null(t.default_system);
    eng_chat_msg_t m[] = {{"user", "Hi"}};
    char *s = render(&t, m, 1, 1);
    assert_string_equal(s, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    sl_free(s);
    assert_int_equal(eng_chat_builtin("zephyr", &t, err, sizeof err), SL_ENOTFOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chatml_adds_default_system_turn_when_none_given),
        cmocka_unit_test(test_chatml_template_read_from_smollm2_gguf),
        cmocka_unit_test(test_llama2_folds_system_into_first_turn),
        cmocka_unit_test(test_unknown_template_is_unsupported_and_fallback_is_explicit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
