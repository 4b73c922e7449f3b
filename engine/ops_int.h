/* ops_int.h: what ops.c shares with its SIMD kernel files ops_avx2.c and ops_avx512.c.  A kernel
 * set is one table row holding the few element-wise loops that are worth vectorizing outside
 * GEMM: the exponentials of softmax rows (attention, which otherwise spends more time in expf
 * than in its matrix products) and GELU forward/backward.  ops.c picks the row from ctx->isa;
 * the portable row uses libm, the SIMD rows their own exp and agree with it to a few ulp. */
#ifndef TM_OPS_INT_H
#define TM_OPS_INT_H

#include "engine.h"

#include <stddef.h>

typedef struct ops_kernels {
	/* row[j] = exp(row[j] - mx) for j < len; returns the sum of the new row.  -INFINITY
	 * entries become exactly 0. */
	float (*exp_shift_sum)(float *row, int len, float mx);
	/* y = GELU(x) (tanh approximation); y may alias x. */
	void (*gelu_forward)(size_t len, const float *x, float *y);
	/* dx = dy * GELU'(x); dx may alias dy. */
	void (*gelu_backward)(size_t len, const float *x, const float *dy, float *dx);
} ops_kernels;

extern const ops_kernels tm_ops_avx2;    /* ops_avx2.c, needs AVX2 + FMA */
extern const ops_kernels tm_ops_avx512;  /* ops_avx512.c, needs AVX-512 F/BW/VL */

#endif
