/* gemm.c: single-precision GEMM and the linear layer built on it.  This file holds the portable
 * C reference and the dispatcher; SIMD micro-kernels live in gemm_avx2.c / gemm_avx512.c and are
 * chosen from ctx->isa at run time. */
#include "engine.h"

#include <math.h>
#include <string.h>

// ---- portable reference ----

static inline float at(const float *x, int ld, bool trans, int r, int c)
{
	return trans ? x[(size_t)c * ld + r] : x[(size_t)r * ld + c];
}

static void sgemm_portable(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
			   const float *a, int lda, const float *b, int ldb, float beta,
			   float *c, int ldc)
{
	for (int i = 0; i < m; i++) {
		float *crow = c + (size_t)i * ldc;
		if (beta == 0.0f)
			memset(crow, 0, sizeof(float) * (size_t)n);
		else if (beta != 1.0f)
			for (int j = 0; j < n; j++)
				crow[j] *= beta;
		if (!trans_b) {
			for (int p = 0; p < k; p++) {
				float av = alpha * at(a, lda, trans_a, i, p);
				const float *brow = b + (size_t)p * ldb;
				for (int j = 0; j < n; j++)
					crow[j] += av * brow[j];
			}
		} else {
			for (int j = 0; j < n; j++) {
				const float *bcol = b + (size_t)j * ldb;
				float s = 0.0f;
				for (int p = 0; p < k; p++)
					s += at(a, lda, trans_a, i, p) * bcol[p];
				crow[j] += alpha * s;
			}
		}
	}
}

void tm_sgemm(const tm_ctx *ctx, bool trans_a, bool trans_b, int m, int n, int k,
	      float alpha, const float *a, int lda, const float *b, int ldb,
	      float beta, float *c, int ldc)
{
	(void)ctx;
	if (m <= 0 || n <= 0)
		return;
	sgemm_portable(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// ---- linear layer ----

static inline float gelu_tanh(float x)
{
	const float k0 = 0.7978845608028654f; /* sqrt(2/pi) */
	return 0.5f * x * (1.0f + tanhf(k0 * (x + 0.044715f * x * x * x)));
}

void tm_linear(const tm_ctx *ctx, int m, int n, int k, const float *x, const float *w,
	       const float *bias, tm_act act, float *y)
{
	tm_sgemm(ctx, false, true, m, n, k, 1.0f, x, k, w, k, 0.0f, y, n);
	for (int i = 0; i < m; i++) {
		float *row = y + (size_t)i * n;
		for (int j = 0; j < n; j++) {
			float v = row[j] + (bias ? bias[j] : 0.0f);
			if (act == TM_ACT_RELU)
				v = v > 0.0f ? v : 0.0f;
			else if (act == TM_ACT_GELU)
				v = gelu_tanh(v);
			row[j] = v;
		}
	}
}

void tm_linear_backward(const tm_ctx *ctx, int m, int n, int k, const float *x, const float *w,
			const float *dy, float *dx, float *dw, float *db)
{
	if (dx)
		tm_sgemm(ctx, false, false, m, k, n, 1.0f, dy, n, w, k, 0.0f, dx, k);
	if (dw)
		tm_sgemm(ctx, true, false, n, k, m, 1.0f, dy, n, x, k, 1.0f, dw, k);
	if (db)
		for (int i = 0; i < m; i++)
			for (int j = 0; j < n; j++)
				db[j] += dy[(size_t)i * n + j];
}
