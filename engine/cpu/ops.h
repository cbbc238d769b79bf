/* ops.h — the row operations of the Llama forward that are not matrix products: RMSNorm and
 * rotary position embeddings. Vector loops compiled for each instruction set, bitwise the same
 * results on every one; none allocate and none can fail.
 */
#ifndef SLUICE_ENGINE_CPU_OPS_H
#define SLUICE_ENGINE_CPU_OPS_H

/* y = x / sqrt(mean(x^2) + eps) * w over n elements (sum of squares in double, as ggml does).
 * y may equal x. */
void eng_cpu_rmsnorm(const float *x, const float *w, float *y, int n, float eps);

/* Rotation table of one position, for pair i < head_dim / 2 at angle a_i = pos *
 * theta^(-2i/head_dim) (in double, rounded to float once): cs[2i] = cs[2i + 1] = cos a_i, and
 * cs[head_dim + 2i] = -sin a_i, cs[head_dim + 2i + 1] = sin a_i. cs holds 2 head_dim floats. */
void eng_cpu_rope_table(int pos, int head_dim, float theta, float *cs);

/* Rotates elements [e0, e1) of a row of heads of head_dim floats in place (e0 and e1 even) by a
 * table from eng_cpu_rope_table, in ggml's "normal" mode (the llama layout of GGUF files):
 * adjacent pairs (x[2i], x[2i+1]) of each head. A row rotated in pieces equals the row rotated
 * whole, so the thread owning some rows of a projection rotates just those. */
void eng_cpu_rope(float *x, int e0, int e1, int head_dim, const float *cs);

#endif
