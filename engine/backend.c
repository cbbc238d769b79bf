/* backend.c — backend parameters, creation by name, and the stub for a build without CUDA. */
#include "engine/backend.h"

#include "engine/cpu/kernels.h"

#include <stdio.h>
#include <string.h>

eng_backend_params_t eng_backend_params_default(void)
{
    return (eng_backend_params_t){
        .n_threads = 0,
        .kv_dtype = eng_cpu_prefers_f16_kv() ? ENG_KV_F16 : ENG_KV_F32,
        .gpu_memory_utilization = 0.9,
        .device = 0,
        .use_graphs = 1,
        .idle_spin_s = 0.002,
    };
}

double eng_kv_elem_bytes(eng_kv_dtype_t type, int head_dim)
{
    return type == ENG_KV_F32 ? 4 : type == ENG_KV_F16 ? 2 : (head_dim + 4.0) / head_dim;
}

eng_backend_t *eng_backend_create(const char *name, const eng_model_t *model,
                                  const eng_backend_params_t *params, char *err, int errlen)
{
    if (!name || !model) {
        snprintf(err, errlen, "backend: no %s given", name ? "model" : "backend name");
        return NULL;
    }
    if (strcmp(name, "cpu") == 0)
        return eng_cpu_backend_create(model, params, err, errlen);
    if (strcmp(name, "cuda") == 0)
        return eng_cuda_backend_create(model, params, err, errlen);
    snprintf(err, errlen, "backend: unknown backend '%s' (cpu, cuda)", name);
    return NULL;
}

void eng_backend_free(eng_backend_t *b)
{
    if (b)
        b->ops->free(b);
}

#ifndef SLUICE_HAVE_CUDA
eng_backend_t *eng_cuda_backend_create(const eng_model_t *model, const eng_backend_params_t *params,
                                       char *err, int errlen)
{
    snprintf(err, errlen, "cuda: not built: nvcc was not found at build time (or CUDA=0)");
    return NULL;
}
#endif
