/* vector_clones.h — the GCC vector types of the engine's plain-C vector loops, and
 * ENG_VECTOR_CLONES: a function compiled for AVX-512, AVX2 and baseline x86-64
 * and picked when the program loads (target_clones), for plain C loops over GCC vector types that
 * need no intrinsics; elsewhere a plain function. Every clone runs the same operations in the same
 * order (floating-point contraction is off in this build), so results are bitwise the same on
 * every CPU. A clone must not take or return a vector type: its ABI differs between clones. */
#ifndef SLUICE_ENGINE_VECTOR_CLONES_H
#define SLUICE_ENGINE_VECTOR_CLONES_H

#include <stdint.h>

typedef float vec8f __attribute__((vector_size(32)));
typedef float vec16f __attribute__((vector_size(64)));
typedef double vec8d __attribute__((vector_size(64)));
typedef int32_t vec16i __attribute__((vector_size(64)));

#if defined(__x86_64__) && (defined(__clang__) || __GNUC__ >= 6)
#define ENG_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ENG_VECTOR_CLONES
#endif

#endif
