/* kernels_amx.c — the x86 kernels (kernels_x86.h) of kernels_avx512.c, plus AMX-INT8 tiles for the
 * quantised products of steps of 16 tokens or more; chosen only when the CPU reports AMX-TILE and
 * AMX-INT8 and the kernel grants this process the tile state (eng_cpu_isa_detect). */
#if defined(__x86_64__)
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,amx-tile,amx-int8")
#define ENG_X86_VNNI 1
#define ENG_X86_AMX 1
#define ENG_X86_TABLE eng_cpu_kernels_amx
#define ENG_X86_ISA ENG_CPU_ISA_AMX
#define ENG_X86_NAME "amx"
#include "engine/cpu/kernels_x86.h"
#else
typedef int eng_cpu_kernels_amx_unused; /* ISO C forbids an empty translation unit */
#endif
