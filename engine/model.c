/* model.c — the tensor type table, Llama-family models from GGUF files, and synthetic models.
 *
 * eng_model_load("x.gguf"):  open (gguf.c validates bounds) -> architecture "llama" ->
 *   hyperparameters (llama.*) -> tokenizer (tokenizer.c) -> every tensor looked up by name and
 *   its type and shape checked against the hyperparameters -> views into the mapping.
 * eng_model_load("synthetic:SHAPE[:TYPE]"): a built-in shape (sched/memest.h) with random
 *   weights in one owned buffer: uniform values with standard deviation 0.02 (a real init's
 *   scale, so activations stay finite through any depth), norms 1, quantised to TYPE (default
 *   f16, the dtype the built-in shapes assume), seed 0. No tokenizer.
 * eng_model_shape_only("SHAPE"): the same tensors typed and shaped, no data (data NULL, owned
 *   NULL): for backends that generate their weights themselves (CUDA). eng_model_load_for(path,
 *   "cuda") loads one for "synthetic:SHAPE[:f16]", so 13.5 GB of Llama-2-7B never exist on the host.
 */
#include "model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "gguf.h"
#include "quant.h"
#include "sched/memest.h"
#include "sched/status.h"
#include "tokenizer.h"

/* ---------------------------------------------------------------- type table ------------------ */

typedef struct type_info {
    const char *name;
    int block_elems; /* 0: a ggml type sluice does not compute with */
    int block_bytes;
} type_info_t;

/* Indexed by ggml type number; names for the types we refuse too, so errors can say which. */
static const type_info_t TYPES[] = {
    [0] = {"f32", 1, 4},       [1] = {"f16", 1, 2},      [2] = {"q4_0", 32, 18},
    [3] = {"q4_1", 32, 20},    [6] = {"q5_0", 32, 22},     [7] = {"q5_1", 32, 24},
    [8] = {"q8_0", 32, 34},    [9] = {"q8_1", 0, 0},     [10] = {"q2_K", 0, 0},
    [11] = {"q3_K", 0, 0},     [12] = {"q4_K", 256, 144},    [13] = {"q5_K", 256, 176},
    [14] = {"q6_K", 256, 210}, [15] = {"q8_K", 0, 0},    [16] = {"iq2_xxs", 0, 0},
    [17] = {"iq2_xs", 0, 0},   [18] = {"iq3_xxs", 0, 0}, [19] = {"iq1_s", 0, 0},
    [20] = {"iq4_nl", 0, 0},   [21] = {"iq3_s", 0, 0},   [22] = {"iq2_s", 0, 0},
    [23] = {"iq4_xs", 0, 0},   [24] = {"i8", 0, 0},      [25] = {"i16", 0, 0},
    [26] = {"i32", 0, 0},      [27] = {"i64", 0, 0},     [28] = {"f64", 0, 0},
    [29] = {"iq1_m", 0, 0},    [30] = {"bf16", 1, 2},    [34] = {"tq1_0", 0, 0},
    [35] = {"tq2_0", 0, 0},    [39] = {"mxfp4", 0, 0},
};
#define N_TYPES ((int)(sizeof TYPES / sizeof TYPES[0]))

const char *eng_type_name(int type)
{
    return type >= 0 && type < N_TYPES && TYPES[type].name ? TYPES[type].name : "?";
}

int eng_type_block_elems(int type)
{
    return type >= 0 && type < N_TYPES ? TYPES[type].block_elems : 0;
}

int eng_type_block_bytes(int type)
{
    return type >= 0 && type < N_TYPES ? TYPES[type].block_bytes : 0;
}

size_t eng_type_row_bytes(int type, int64_t n)
{
    int be = eng_type_block_elems(type);
    if (be == 0 || n <= 0 || n % be != 0) return 0;
    return (size_t)(n / be) * (size_t)eng_type_block_bytes(type);
}

/* ---------------------------------------------------------------- helpers --------------------- */

void eng_model_free(eng_model_t *m)
{
    if (!m) return;
    eng_tok_free(m->tok);
    eng_gguf_close(m->gguf);
    sl_free(m->layers);
    sl_free(m->owned);
    sl_free(m->chat_template);
    sl_free(m);
}

/* The shape every weight has: norms (dim), projections (n_in -> n_out). */
typedef struct wspec {
    const char *suffix; /* tensor name after "blk.N." (or the whole name for globals) */
    size_t field;       /* offset in eng_layer_t or eng_model_t */
    int n_in, n_out;    /* n_out 0: a 1-D norm of n_in */
} wspec_t;

static int n_layer_specs(const eng_model_config_t *c, wspec_t *s)
{
    int q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
    const wspec_t specs[] = {
        {"attn_norm.weight", offsetof(eng_layer_t, attn_norm), c->dim, 0},
        {"attn_q.weight", offsetof(eng_layer_t, wq), c->dim, q},
        {"attn_k.weight", offsetof(eng_layer_t, wk), c->dim, kv},
        {"attn_v.weight", offsetof(eng_layer_t, wv), c->dim, kv},
        {"attn_output.weight", offsetof(eng_layer_t, wo), q, c->dim},
        {"ffn_norm.weight", offsetof(eng_layer_t, ffn_norm), c->dim, 0},
        {"ffn_gate.weight", offsetof(eng_layer_t, w_gate), c->dim, c->ffn_dim},
        {"ffn_up.weight", offsetof(eng_layer_t, w_up), c->dim, c->ffn_dim},
        {"ffn_down.weight", offsetof(eng_layer_t, w_down), c->ffn_dim, c->dim},
    };
    memcpy(s, specs, sizeof specs);
    return (int)(sizeof specs / sizeof specs[0]);
}

static void global_specs(const eng_model_config_t *c, wspec_t s[3])
{
    s[0] = (wspec_t){"token_embd.weight", offsetof(eng_model_t, tok_embd), c->dim, c->vocab};
    s[1] = (wspec_t){"output_norm.weight", offsetof(eng_model_t, out_norm), c->dim, 0};
    s[2] = (wspec_t){"output.weight", offsetof(eng_model_t, output), c->dim, c->vocab};
}

/* ---------------------------------------------------------------- GGUF models ----------------- */

/* Binds one tensor view after checking its shape and (for norms) type. */
static int bind(const eng_gguf_tensor_t *t, const char *file, const char *name, const wspec_t *w,
                eng_tensor_t *out, char *err, int errlen)
{
    int n_dims = w->n_out ? 2 : 1;
    int64_t want[4] = {w->n_in, w->n_out ? w->n_out : 1, 1, 1};
    if (memcmp(t->ne, want, sizeof want) != 0)
        return sl_errf(err, errlen, SL_EFORMAT,
                    "%s: tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%d, %d, 1, 1]",
                    file, name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                    (long long)t->ne[3], w->n_in, w->n_out ? w->n_out : 1);
    if (n_dims == 1 && t->type != ENG_T_F32)
        return sl_errf(err, errlen, SL_EUNSUPPORTED, "%s: norm tensor '%s' is %s, expected f32", file,
                    name, eng_type_name(t->type));
    *out = (eng_tensor_t){(eng_type_t)t->type, n_dims, {want[0], want[1], 1, 1}, t->data,
                          t->nbytes};
    return SL_OK;
}

static int find_bind(eng_gguf_t *g, const char *name, const wspec_t *w, eng_tensor_t *out,
                     char *err, int errlen)
{
    const eng_gguf_tensor_t *t = eng_gguf_find_tensor(g, name);
    if (!t)
        return sl_errf(err, errlen, SL_EFORMAT, "%s: tensor '%s' is missing", eng_gguf_name(g), name);
    return bind(t, eng_gguf_name(g), name, w, out, err, errlen);
}

/* A required positive integer hyperparameter. */
static int hparam(eng_gguf_t *g, const char *key, int required, int def, int *out, char *err,
                  int errlen)
{
    int64_t v;
    int rc = eng_gguf_get_i64(g, key, &v);
    if (rc == SL_ENOTFOUND && !required) {
        *out = def;
        return SL_OK;
    }
    if (rc == SL_ENOTFOUND)
        return sl_errf(err, errlen, SL_EFORMAT, "%s: metadata key '%s' is missing", eng_gguf_name(g), key);
    if (rc != SL_OK) return sl_errf(err, errlen, rc, "%s", eng_gguf_errmsg(g));
    if (v <= 0 || v > (1 << 30))
        return sl_errf(err, errlen, SL_EFORMAT, "%s: %s = %lld is out of range", eng_gguf_name(g), key,
                    (long long)v);
    *out = (int)v;
    return SL_OK;
}

static int fparam(eng_gguf_t *g, const char *key, double def, float *out, char *err, int errlen)
{
    double v = def;
    int rc = eng_gguf_get_f64(g, key, &v);
    if (rc != SL_OK && rc != SL_ENOTFOUND) return sl_errf(err, errlen, rc, "%s", eng_gguf_errmsg(g));
    if (!(v > 0) || !isfinite(v))
        return sl_errf(err, errlen, SL_EFORMAT, "%s: %s = %g is out of range", eng_gguf_name(g), key, v);
    *out = (float)v;
    return SL_OK;
}

static int read_config(eng_gguf_t *g, eng_model_config_t *c, char *err, int errlen)
{
    const char *file = eng_gguf_name(g);
    eng_gguf_str_t s;
    int rc = eng_gguf_get_str(g, "general.architecture", &s);
    if (rc == SL_ENOTFOUND)
        return sl_errf(err, errlen, SL_EFORMAT, "%s: metadata key 'general.architecture' is missing", file);
    if (rc != SL_OK) return sl_errf(err, errlen, rc, "%s", eng_gguf_errmsg(g));
    if (s.n != 5 || memcmp(s.p, "llama", 5) != 0)
        return sl_errf(err, errlen, SL_EUNSUPPORTED,
                    "%s: architecture '%.*s' is not supported (sluice runs 'llama')", file,
                    (int)(s.n > 64 ? 64 : s.n), s.p);
    snprintf(c->arch, sizeof c->arch, "llama");
    if (eng_gguf_get_str(g, "general.name", &s) == SL_OK)
        snprintf(c->name, sizeof c->name, "%.*s", (int)(s.n > 63 ? 63 : s.n), s.p);
    if ((rc = hparam(g, "llama.block_count", 1, 0, &c->n_layers, err, errlen)) ||
        (rc = hparam(g, "llama.embedding_length", 1, 0, &c->dim, err, errlen)) ||
        (rc = hparam(g, "llama.attention.head_count", 1, 0, &c->n_heads, err, errlen)) ||
        (rc = hparam(g, "llama.attention.head_count_kv", 0, c->n_heads, &c->n_kv_heads, err, errlen)) ||
        (rc = hparam(g, "llama.feed_forward_length", 1, 0, &c->ffn_dim, err, errlen)) ||
        (rc = hparam(g, "llama.context_length", 1, 0, &c->n_ctx_train, err, errlen)) ||
        (rc = hparam(g, "llama.attention.key_length", 0, c->dim / c->n_heads, &c->head_dim, err,
                     errlen)) ||
        (rc = fparam(g, "llama.rope.freq_base", 10000.0, &c->rope_theta, err, errlen)) ||
        (rc = fparam(g, "llama.attention.layer_norm_rms_epsilon", 1e-5, &c->norm_eps, err, errlen)))
        return rc;
    if (c->n_heads % c->n_kv_heads != 0 || c->head_dim == 0)
        return sl_errf(err, errlen, SL_EFORMAT,
                    "%s: %d attention heads do not divide into %d KV heads of %d dimensions", file,
                    c->n_heads, c->n_kv_heads, c->head_dim);
    return SL_OK;
}

static int load_gguf(eng_model_t *m, const char *path, char *err, int errlen)
{
    int rc = eng_gguf_open(path, &m->gguf, err, errlen);
    if (rc != SL_OK) return rc;
    eng_gguf_t *g = m->gguf;
    eng_model_config_t *c = &m->cfg;
    if ((rc = read_config(g, c, err, errlen)) != SL_OK) return rc;
    if ((rc = eng_tok_from_gguf(g, &m->tok, err, errlen)) != SL_OK) return rc;
    c->vocab = eng_tok_vocab(m->tok);

    wspec_t gs[3];
    global_specs(c, gs);
    if ((rc = find_bind(g, gs[0].suffix, &gs[0], &m->tok_embd, err, errlen)) ||
        (rc = find_bind(g, gs[1].suffix, &gs[1], &m->out_norm, err, errlen)))
        return rc;
    c->tied_output = eng_gguf_find_tensor(g, gs[2].suffix) == NULL;
    if (c->tied_output) m->output = m->tok_embd;
    else if ((rc = find_bind(g, gs[2].suffix, &gs[2], &m->output, err, errlen)) != SL_OK)
        return rc;

    if (!(m->layers = sl_calloc((size_t)c->n_layers, sizeof *m->layers)))
        return sl_errf(err, errlen, SL_ENOMEM, "%s: out of memory", path);
    wspec_t ls[9];
    int n = n_layer_specs(c, ls);
    for (int l = 0; l < c->n_layers; l++)
        for (int i = 0; i < n; i++) {
            char name[96];
            snprintf(name, sizeof name, "blk.%d.%s", l, ls[i].suffix);
            eng_tensor_t *t = (eng_tensor_t *)((char *)&m->layers[l] + ls[i].field);
            if ((rc = find_bind(g, name, &ls[i], t, err, errlen)) != SL_OK) return rc;
        }

    eng_gguf_str_t tmpl;
    if (eng_gguf_get_str(g, "tokenizer.chat_template", &tmpl) == SL_OK) {
        if (!(m->chat_template = sl_malloc((size_t)tmpl.n + 1)))
            return sl_errf(err, errlen, SL_ENOMEM, "%s: out of memory", path);
        memcpy(m->chat_template, tmpl.p, (size_t)tmpl.n);
        m->chat_template[tmpl.n] = 0;
    }
    return SL_OK;
}

/* ---------------------------------------------------------------- synthetic models ------------ */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Fills t (already typed and shaped, data pointing into the owned buffer) row by row. */
static void fill_tensor(eng_tensor_t *t, float *row, uint64_t *rng)
{
    const float a = 0.02f * 1.7320508f; /* uniform(-a, a) has standard deviation 0.02 */
    size_t rb = eng_type_row_bytes(t->type, t->ne[0]);
    for (int64_t r = 0; r < t->ne[1]; r++) {
        for (int64_t i = 0; i < t->ne[0]; i++)
            row[i] = t->n_dims == 1 ? 1.0f
                                    : a * (float)((double)(splitmix64(rng) >> 11) * 0x1p-52 - 1.0);
        eng_quantize_row(t->type, row, (char *)t->data + (size_t)r * rb, t->ne[0]);
    }
}

/* A model of a built-in shape: config and layers, no tensors yet. NULL + err on an unknown shape
 * or out of memory. */
static eng_model_t *model_of_shape(const char *shape, char *err, int errlen)
{
    sched_model_shape_t s;
    if (sched_model_shape_builtin(shape, &s) != SL_OK) {
        sl_errf(err, errlen, SL_ENOTFOUND, "synthetic:%s: unknown shape (built-in shapes: %s)", shape,
             sched_model_shape_names());
        return NULL;
    }
    eng_model_t *m = sl_calloc(1, sizeof *m);
    if (m && !(m->layers = sl_calloc((size_t)s.n_layers, sizeof *m->layers))) {
        sl_free(m);
        m = NULL;
    }
    if (!m) {
        sl_errf(err, errlen, SL_ENOMEM, "synthetic:%s: out of memory", shape);
        return NULL;
    }
    eng_model_config_t *c = &m->cfg;
    *c = (eng_model_config_t){.n_layers = s.n_layers, .dim = s.hidden, .n_heads = s.n_heads,
                              .n_kv_heads = s.n_kv_heads, .head_dim = s.head_dim,
                              .ffn_dim = s.intermediate, .vocab = s.vocab,
                              .n_ctx_train = s.max_context, .rope_theta = 10000.0f,
                              .norm_eps = 1e-5f, .tied_output = s.tied_embeddings};
    snprintf(c->arch, sizeof c->arch, "llama");
    snprintf(c->name, sizeof c->name, "%s", s.name);
    return m;
}

/* Types and shapes every tensor of m (projections weight_type, norms F32) and places each at its
 * 64-byte aligned offset from base, or leaves data NULL when base is NULL. With row (scratch of
 * the widest row) also fills them, seeded. Returns the bytes the tensors span; 0 + err when a
 * row is not a whole number of the type's blocks. */
static size_t place_tensors(eng_model_t *m, eng_type_t weight_type, char *base, float *row,
                            uint64_t seed, char *err, int errlen)
{
    const eng_model_config_t *c = &m->cfg;
    wspec_t gs[3], ls[9];
    global_specs(c, gs);
    int nl = n_layer_specs(c, ls);
    size_t off = 0;
    for (int l = -1; l < c->n_layers; l++) {
        int n = l < 0 ? (c->tied_output ? 2 : 3) : nl;
        for (int i = 0; i < n; i++) {
            const wspec_t *w = l < 0 ? &gs[i] : &ls[i];
            char *owner = l < 0 ? (char *)m : (char *)&m->layers[l];
            eng_tensor_t *t = (eng_tensor_t *)(owner + w->field);
            eng_type_t type = w->n_out ? weight_type : ENG_T_F32;
            size_t rb = eng_type_row_bytes(type, w->n_in);
            if (rb == 0) {
                sl_errf(err, errlen, SL_EUNSUPPORTED,
                     "synthetic:%s: %s rows of %d elements are not a multiple of the %s block (%d)",
                     c->name, w->suffix, w->n_in, eng_type_name(type), eng_type_block_elems(type));
                return 0;
            }
            int64_t rows = w->n_out ? w->n_out : 1;
            *t = (eng_tensor_t){type, w->n_out ? 2 : 1, {w->n_in, rows, 1, 1},
                                base ? base + off : NULL, rb * (size_t)rows};
            off += (t->nbytes + 63) & ~(size_t)63;
            if (row) {
                uint64_t rng = seed ^ (0x51ed270b27a1f5c3ull * (uint64_t)(l + 2) + (uint64_t)i);
                fill_tensor(t, row, &rng);
            }
        }
    }
    if (c->tied_output) m->output = m->tok_embd;
    return off;
}

eng_model_t *eng_model_shape_only(const char *shape, char *err, int errlen)
{
    eng_model_t *m = model_of_shape(shape, err, errlen);
    if (m && place_tensors(m, ENG_T_F16, NULL, NULL, 0, err, errlen) == 0) {
        eng_model_free(m);
        return NULL;
    }
    return m; /* gguf == NULL && owned == NULL: a backend generates the weights */
}

eng_model_t *eng_model_synthetic(const char *shape, eng_type_t weight_type, uint64_t seed, char *err,
                                 int errlen)
{
    if (weight_type != ENG_T_F32 && weight_type != ENG_T_F16 && weight_type != ENG_T_BF16 &&
        weight_type != ENG_T_Q8_0 && weight_type != ENG_T_Q4_0 && weight_type != ENG_T_Q4_1) {
        sl_errf(err, errlen, SL_EUNSUPPORTED,
             "synthetic:%s: weights of type %s cannot be generated (f32, f16, bf16, q8_0, q4_0, q4_1)",
             shape, eng_type_name(weight_type));
        return NULL;
    }
    eng_model_t *m = model_of_shape(shape, err, errlen);
    if (!m) return NULL;
    /* Pass 1: type and shape every tensor and add up the buffer; pass 2: place and fill. */
    const eng_model_config_t *c = &m->cfg;
    size_t total = place_tensors(m, weight_type, NULL, NULL, seed, err, errlen);
    if (total == 0) {
        eng_model_free(m);
        return NULL;
    }
    int64_t widest = c->dim > c->ffn_dim ? c->dim : c->ffn_dim; /* the longest row */
    if ((int64_t)c->n_heads * c->head_dim > widest) widest = (int64_t)c->n_heads * c->head_dim;
    /* the row scratch lives after the weights */
    if (!(m->owned = sl_malloc(total + (size_t)widest * sizeof(float)))) {
        eng_model_free(m);
        sl_errf(err, errlen, SL_ENOMEM, "synthetic:%s: out of memory for the weights", shape);
        return NULL;
    }
    place_tensors(m, weight_type, m->owned, (float *)((char *)m->owned + total), seed, err, errlen);
    return m;
}

/* ---------------------------------------------------------------- entry point ----------------- */

/* "SHAPE[:TYPE]" -> shape name and type. */
static int parse_synthetic(const char *spec, char *shape, size_t cap, eng_type_t *type, char *err,
                           int errlen)
{
    const char *colon = strchr(spec, ':');
    size_t n = colon ? (size_t)(colon - spec) : strlen(spec);
    if (n == 0 || n >= cap)
        return sl_errf(err, errlen, SL_EINVAL, "synthetic:%s: expected synthetic:SHAPE[:TYPE]", spec);
    memcpy(shape, spec, n);
    shape[n] = 0;
    *type = ENG_T_F16;
    if (!colon) return SL_OK;
    for (int t = 0; t < N_TYPES; t++)
        if (TYPES[t].block_elems && strcmp(colon + 1, TYPES[t].name) == 0) {
            *type = (eng_type_t)t;
            return SL_OK;
        }
    return sl_errf(err, errlen, SL_EINVAL,
                "synthetic:%s: unknown weight type '%s' (f32, f16, bf16, q8_0, q4_0, q4_1)", spec,
                colon + 1);
}

static const char SYNTH_PREFIX[] = "synthetic:";

eng_model_t *eng_model_load(const char *path_or_synthetic, char *err, int errlen)
{
    if (strncmp(path_or_synthetic, SYNTH_PREFIX, sizeof SYNTH_PREFIX - 1) == 0) {
        char shape[64];
        eng_type_t type;
        if (parse_synthetic(path_or_synthetic + sizeof SYNTH_PREFIX - 1, shape, sizeof shape, &type,
                            err, errlen) != SL_OK)
            return NULL;
        return eng_model_synthetic(shape, type, 0, err, errlen);
    }
    eng_model_t *m = sl_calloc(1, sizeof *m);
    if (!m) {
        sl_errf(err, errlen, SL_ENOMEM, "%s: out of memory", path_or_synthetic);
        return NULL;
    }
    if (load_gguf(m, path_or_synthetic, err, errlen) != SL_OK) {
        eng_model_free(m);
        return NULL;
    }
    return m;
}

eng_model_t *eng_model_load_for(const char *path_or_synthetic, const char *backend, char *err,
                                int errlen)
{
    if (strcmp(backend, "cuda") != 0 ||
        strncmp(path_or_synthetic, SYNTH_PREFIX, sizeof SYNTH_PREFIX - 1) != 0)
        return eng_model_load(path_or_synthetic, err, errlen);
    const char *spec = path_or_synthetic + sizeof SYNTH_PREFIX - 1;
    char shape[64];
    eng_type_t type;
    if (parse_synthetic(spec, shape, sizeof shape, &type, err, errlen) != SL_OK) return NULL;
    if (type != ENG_T_F16) {
        sl_errf(err, errlen, SL_EUNSUPPORTED,
                "synthetic:%s: synthetic weights on the CUDA backend are fp16, generated on the "
                "device: use synthetic:SHAPE or synthetic:SHAPE:f16",
                spec);
        return NULL;
    }
    return eng_model_shape_only(shape, err, errlen);
}
