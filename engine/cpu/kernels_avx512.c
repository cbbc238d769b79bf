/* kernels_avx512.c — the x86 kernels (kernels_x86.h) with AVX-512 VNNI block products; chosen only
 * when the CPU reports AVX-512 F/BW/VL and VNNI (eng_cpu_isa_detect). */
#if defined(__x86_64__)
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")
#define ENG_X86_VNNI 1
#define ENG_X86_TABLE eng_cpu_kernels_avx512
#define ENG_X86_ISA ENG_CPU_ISA_AVX512
#define ENG_X86_NAME "avx512"
#include "engine/cpu/kernels_x86.h"
#else
typedef int eng_cpu_kernels_avx512_unused; /* ISO C forbids an empty translation unit */
#endif
