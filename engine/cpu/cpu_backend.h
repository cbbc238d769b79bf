/* cpu_backend.h — what the CPU backend offers beyond backend.h: the instruction set it chose.
 * Create it with eng_backend_create("cpu", ...) or eng_cpu_backend_create() (backend.h).
 */
#ifndef SLUICE_ENGINE_CPU_CPU_BACKEND_H
#define SLUICE_ENGINE_CPU_CPU_BACKEND_H

#include "engine/backend.h"

/* The name of the kernels' instruction set ("scalar", "avx2", "avx512", "amx") of a CPU backend, for
 * logs and benchmarks. Cannot fail. */
const char *eng_cpu_backend_isa(const eng_backend_t *be);

#endif
