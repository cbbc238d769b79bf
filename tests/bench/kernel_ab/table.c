/* table.c — one copy of the x86 kernels for scripts/kernel-ab.sh: compiled twice, from the
 * kernels_x86.h of two revisions (KERNEL_AB_HEADER), into the tables KERNEL_AB_TABLE
 * (kernel_ab_base, kernel_ab_test) at the instruction set KERNEL_AB_ISA (eng_cpu_isa_t: 1 AVX2, 2 AVX-512, 3 AMX),
 * as engine/cpu/kernels_{avx2,avx512,amx}.c compile the one header. */
#if KERNEL_AB_ISA == 3
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,amx-tile,amx-int8")
#define ENG_X86_VNNI 1
#define ENG_X86_AMX 1
#define ENG_X86_ISA ENG_CPU_ISA_AMX
#elif KERNEL_AB_ISA == 2
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")
#define ENG_X86_VNNI 1
#define ENG_X86_ISA ENG_CPU_ISA_AVX512
#else
#pragma GCC target("avx2,fma,f16c")
#define ENG_X86_VNNI 0
#define ENG_X86_ISA ENG_CPU_ISA_AVX2
#endif
#define ENG_X86_TABLE KERNEL_AB_TABLE
#define ENG_X86_NAME "kernel-ab"
#include KERNEL_AB_HEADER
