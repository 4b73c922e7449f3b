/* ops_int.h: what ops.c shares with its SIMD kernel files ops_avx2.c and ops_avx512.c.  A kernel
 * set is one table row holding the loops worth vectorizing outside GEMM: the three row
 * primitives attention is built from (scores along columns of K^T, a weighted sum of rows, a
 * rank-1 row update; head_dim is small, so these beat GEMM calls on 128x128x16 blocks), softmax
 * rows forward and backward with the exponentials they need, GELU forward/backward, LayerNorm
 * rows, and the bias + activation epilogue of the convolution.  ops.c picks the row from ctx->isa;
 * the portable row uses libm, the SIMD rows their own exp and agree with it to a few ulp. */
#ifndef TM_OPS_INT_H
#define TM_OPS_INT_H

#include "engine.h"

#include <stddef.h>

/* Rows that the attention kernels write whole vectors into are padded to this many floats. */
#define OPS_ROW_PAD 16

typedef struct ops_kernels {
	/* One LayerNorm row of d: y = (x - mean) * rstd * g + b (g, b may be NULL: 1 and 0);
	 * mean and rstd may be NULL. */
	void (*ln_row)(int d, const float *x, const float *g, const float *b, float *y,
		       float *mean, float *rstd);
	/* Its backward: dx (may be NULL) overwritten, dg and db (may be NULL) accumulated. */
	void (*ln_row_grad)(int d, const float *x, const float *g, float mean, float rstd,
			    const float *dy, float *dx, float *dg, float *db);
	/* y (rows, cols) = act(y + b[row]) (b may be NULL): the conv epilogue; ReLU maps NaN to 0. */
	void (*bias_act_rows)(int rows, size_t cols, float *y, const float *b, tm_act act);
	/* s[j] = scale * sum_c q[c] * kt[c * ldkt + j] for j < n, c < hd.  s is a padded row: it
	 * has room for n rounded up to OPS_ROW_PAD floats, and the kernels may store whole vectors
	 * there (the lanes past n hold unspecified values), because a masked store does not
	 * forward to the load of the next kernel and stalls it.  kt is read only below n. */
	void (*dot_cols)(int hd, const float *q, const float *kt, ptrdiff_t ldkt, int n,
			 float scale, float *s);
	/* out[c] = sum_j p[j] * rows[j * ld + c] for c < hd, j < n (out overwritten). */
	void (*axpy_rows)(int n, const float *p, const float *rows, ptrdiff_t ld, int hd,
			  float *out);
	/* rows[j * ld + c] += a[j] * x[c] for j < n, c < hd. */
	void (*rank1_rows)(int n, const float *a, const float *x, int hd, float *rows,
			   ptrdiff_t ld);
	/* s (n) = softmax(s) in place; -INFINITY entries become exactly 0 (one must be finite).
	 * s is a padded row (see dot_cols). */
	void (*softmax_row)(float *s, int n);
	/* dp[j] = scale * p[j] * (dp[j] - sum_k p[k] * dp[k]) for j < n: softmax backward.  dp is
	 * a padded row; p is read only below n. */
	void (*softmax_grad_row)(int n, const float *p, float *dp, float scale);
	/* row[j] = exp(row[j] - mx) for j < len; returns the sum of the new row.  -INFINITY
	 * entries become exactly 0. */
	float (*exp_shift_sum)(float *row, int len, float mx);
	/* y = GELU(x) (tanh approximation); y may alias x. */
	void (*gelu_forward)(size_t len, const float *x, float *y);
	/* dx = dy * GELU'(x); dx may alias dy. */
	void (*gelu_backward)(size_t len, const float *x, const float *dy, float *dx);
} ops_kernels;

/* The kernel set for isa (the portable one for anything the table does not hold); other
 * modules that build on these rows (the transformer's inference) take them from here. */
const ops_kernels *tm_ops_for(tm_isa isa);

extern const ops_kernels tm_ops_avx2;    /* ops_avx2.c, needs AVX2 + FMA */
extern const ops_kernels tm_ops_avx512;  /* ops_avx512.c, needs AVX-512 F/BW/VL */

#endif
