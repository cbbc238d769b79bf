/* fuzz_gguf.c — libFuzzer target: arbitrary bytes -> the GGUF reader (from memory). Every accessor
 * is then exercised over what was accepted, so a validation gap shows up as an ASan report. */
#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    eng_gguf_t *g;
    char err[256];
    if (eng_gguf_open_memory(data, size, "fuzz.gguf", &g, err, sizeof err) != 0) return 0;
    volatile double sink = 0;
    for (int64_t i = 0; i < eng_gguf_n_kv(g); i++) {
        const char *key = eng_gguf_kv_key(g, i);
        eng_gguf_arr_t a, sub;
        eng_gguf_str_t s;
        double f;
        if (eng_gguf_get_f64(g, key, &f) == 0) sink += f;
        if (eng_gguf_get_str(g, key, &s) == 0 && s.n) sink += (uint8_t)s.p[s.n - 1];
        if (eng_gguf_get_arr(g, key, &a) != 0) continue;
        for (uint64_t k = 0; k < a.n && k < 64; k++) {
            sink += eng_gguf_arr_num(&a, k);
            if (eng_gguf_arr_sub(&a, k, &sub) == 0 && sub.n) sink += eng_gguf_arr_num(&sub, sub.n - 1);
        }
    }
    for (int64_t i = 0; i < eng_gguf_n_tensors(g); i++) {
        const eng_gguf_tensor_t *t = eng_gguf_tensor_at(g, i);
        if (eng_gguf_find_tensor(g, t->name) != t) __builtin_trap();
        sink += ((const uint8_t *)t->data)[0] + ((const uint8_t *)t->data)[t->nbytes - 1];
    }
    (void)sink;
    eng_gguf_close(g);
    return 0;
}
