/* kernels_avx2.c — the x86 kernels (kernels_x86.h) for AVX2 + FMA + F16C. */
#if defined(__x86_64__)
#pragma GCC target("avx2,fma,f16c")
#define ENG_X86_VNNI 0
#define ENG_X86_TABLE eng_cpu_kernels_avx2
#define ENG_X86_ISA ENG_CPU_ISA_AVX2
#define ENG_X86_NAME "avx2"
#include "engine/cpu/kernels_x86.h"
#else
typedef int eng_cpu_kernels_avx2_unused; /* ISO C forbids an empty translation unit */
#endif
