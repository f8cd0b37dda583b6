/* Private: CNNB_CLONES marks a hot element-wise loop to be compiled twice, for AVX2 and for the
 * baseline (-march=x86-64-v2), with the copy picked at load time by the CPU (GCC's
 * target_clones, an ifunc). The build stays portable and the loops run 8 floats wide where the
 * CPU can. Element-wise code only: without FP contraction (-std=c11) both copies give the same
 * bits. */
#ifndef CNNB_CORE_SIMD_H
#define CNNB_CORE_SIMD_H

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CNNB_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CNNB_CLONES
#endif

#endif
