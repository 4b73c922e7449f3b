/* test_gemm.c: Check suite of engine/gemm*.c: every kernel set the CPU has against a
 * double-precision reference on odd shapes (1, 3, 17, 63, 65, 129) and the events' layer
 * shapes, all transpose combinations, alpha/beta (beta = 0 must ignore NaN garbage in C),
 * leading dimensions wider than the matrix, the short-k path (k <= 12, the same bits as the
 * blocked tile), the fused bias + activation epilogue, prepacked weights, the linear layer's
 * backward, and results bit-identical across 1, 2 and 3 threads.
 * Tolerance: |got - ref| / (1 + |ref|) <= 1e-5 * sqrt(k) (float accumulation error grows about
 * like sqrt(k) for inputs in [-1, 1]); the sanitizer build uses smaller shapes. */
#include "tests.h"
#include "engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double tol_for(int k)
{
	return 1e-5 * sqrt((double)(k > 1 ? k : 1));
}

static void ref_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float *a,
		     int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
	for (int i = 0; i < m; i++)
		for (int j = 0; j < n; j++) {
			double s = 0;
			for (int p = 0; p < k; p++) {
				double av = ta ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
				double bv = tb ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j];
				s += av * bv;
			}
			float *cv = &c[(size_t)i * ldc + j];
			*cv = (float)(alpha * s + (beta == 0.0f ? 0.0 : beta * (double)*cv));
		}
}

static double gelu_ref(double s)
{
	return 0.5 * s * (1 + tanh(sqrt(2 / M_PI) * (s + 0.044715 * s * s * s)));
}

/* Y = act(X W^T + b) in double. */
static void ref_linear(int m, int n, int k, const float *x, const float *w, const float *b,
		       tm_act act, float *y)
{
	for (int i = 0; i < m; i++)
		for (int j = 0; j < n; j++) {
			double s = b ? b[j] : 0.0;
			for (int p = 0; p < k; p++)
				s += (double)x[(size_t)i * k + p] * w[(size_t)j * k + p];
			if (act == TM_ACT_RELU)
				s = s > 0 ? s : 0;
			else if (act == TM_ACT_GELU)
				s = gelu_ref(s);
			y[(size_t)i * n + j] = (float)s;
		}
}

static float *rnd(size_t n, uint64_t seed)
{
	float *x = malloc(sizeof(float) * (n ? n : 1));
	ck_assert_ptr_nonnull(x);
	tt_fill_random(x, n, seed);
	return x;
}

static tm_cpu cpu_get(void)
{
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	return cpu;
}

// ---- sgemm against the reference ----

static const int shapes[][3] = {
	{ 1, 1, 1 }, { 1, 10, 64 }, { 3, 17, 5 }, { 17, 63, 65 }, { 64, 128, 784 },
	{ 65, 129, 33 }, { 1, 128, 784 }, { 256, 10, 1600 }, { 7, 384, 128 },
};

START_TEST(test_sgemm_matches_reference)
{
	tm_cpu cpu = cpu_get();
	for (int isa = TM_ISA_PORTABLE; isa <= TM_ISA_AVX512; isa++) {
		if (!tm_isa_supported(&cpu, (tm_isa)isa))
			continue;
		tm_ctx ctx = { .isa = (tm_isa)isa };
		for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
			int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
			for (int t = 0; t < 4; t++) {
				bool ta = t & 1, tb = t & 2;
				float *a = malloc(sizeof(float) * (size_t)m * k);
				float *b = malloc(sizeof(float) * (size_t)k * n);
				float *c = malloc(sizeof(float) * (size_t)m * n);
				float *r = malloc(sizeof(float) * (size_t)m * n);
				tt_fill_random(a, (size_t)m * k, 1 + s);
				tt_fill_random(b, (size_t)k * n, 2 + s);
				tt_fill_random(c, (size_t)m * n, 3 + s);
				for (size_t i = 0; i < (size_t)m * n; i++)
					r[i] = c[i];
				float alpha = t == 3 ? 0.5f : 1.0f, beta = t == 1 ? 1.0f : t == 2 ? -0.25f : 0.0f;
				tm_sgemm(&ctx, ta, tb, m, n, k, alpha, a, ta ? m : k, b, tb ? k : n, beta, c, n);
				ref_gemm(ta, tb, m, n, k, alpha, a, ta ? m : k, b, tb ? k : n, beta, r, n);
				double d = tt_max_rel_diff(c, r, (size_t)m * n);
				if (d > 1e-4 * sqrt((double)k))
					ck_abort_msg("isa %s m=%d n=%d k=%d ta=%d tb=%d: max rel diff %g",
						     tm_isa_name((tm_isa)isa), m, n, k, ta, tb, d);
				free(a);
				free(b);
				free(c);
				free(r);
			}
		}
	}
}
END_TEST

/* One sgemm with padded leading dimensions; C's padding must be left untouched. */
static void check_one(const tm_ctx *ctx, bool ta, bool tb, int m, int n, int k, float alpha,
		      float beta, int pad, uint64_t seed)
{
	int arows = ta ? k : m, acols = ta ? m : k, brows = tb ? n : k, bcols = tb ? k : n;
	int lda = acols + pad, ldb = bcols + pad, ldc = n + pad;
	float *a = rnd((size_t)arows * lda, seed);
	float *b = rnd((size_t)brows * ldb, seed + 1);
	float *c = rnd((size_t)m * ldc, seed + 2);
	float *r = malloc(sizeof(float) * (size_t)m * ldc);
	memcpy(r, c, sizeof(float) * (size_t)m * ldc);
	tm_sgemm(ctx, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
	ref_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, r, ldc);
	double d = tt_max_rel_diff(c, r, (size_t)m * ldc);
	if (d > tol_for(k))
		ck_abort_msg("isa %s m=%d n=%d k=%d ta=%d tb=%d alpha=%g beta=%g pad=%d: "
			     "max rel diff %g > %g", tm_isa_name(ctx->isa), m, n, k, ta, tb,
			     alpha, beta, pad, d, tol_for(k));
	free(a);
	free(b);
	free(c);
	free(r);
}

START_TEST(test_sgemm_odd_shapes)
{
	static const int full[] = { 1, 3, 17, 63, 65, 129 };
	static const int small[] = { 1, 3, 17, 65 };
	const int *dims = TT_SLOW_BUILD ? small : full;
	int nd = TT_SLOW_BUILD ? 4 : 6;
	tm_cpu cpu = cpu_get();
	for (int isa = TM_ISA_PORTABLE; isa <= TM_ISA_AVX512; isa++) {
		if (!tm_isa_supported(&cpu, (tm_isa)isa))
			continue;
		tm_ctx ctx = { .isa = (tm_isa)isa };
		uint64_t seed = 100;
		for (int im = 0; im < nd; im++)
			for (int in = 0; in < nd; in++)
				for (int ik = 0; ik < nd; ik++)
					for (int t = 0; t < 4; t++, seed += 3)
						check_one(&ctx, t & 1, t & 2, dims[im], dims[in],
							  dims[ik], 1.0f, 0.0f, 0, seed);
	}
}
END_TEST

START_TEST(test_sgemm_alpha_beta_ld)
{
	static const int dims[][3] = { { 1, 1, 1 }, { 3, 17, 63 }, { 65, 33, 129 },
				       { 13, 70, 400 }, { 1, 100, 17 }, { 40, 5, 300 },
				       { 7, 1000, 70 } };
	static const float ab[][2] = { { 1, 0 }, { 0.5f, 1 }, { -1.5f, -0.25f }, { 2, 1 },
				       { 1, 3 } };
	tm_cpu cpu = cpu_get();
	for (int isa = TM_ISA_PORTABLE; isa <= TM_ISA_AVX512; isa++) {
		if (!tm_isa_supported(&cpu, (tm_isa)isa))
			continue;
		tm_ctx ctx = { .isa = (tm_isa)isa };
		uint64_t seed = 900;
		for (size_t s = 0; s < sizeof(dims) / sizeof(dims[0]); s++)
			for (size_t q = 0; q < sizeof(ab) / sizeof(ab[0]); q++)
				for (int t = 0; t < 4; t++, seed += 3)
					check_one(&ctx, t & 1, t & 2, dims[s][0], dims[s][1],
						  dims[s][2], ab[q][0], ab[q][1], 1 + (int)s * 7,
						  seed);
	}
}
END_TEST

/* Leading dimensions of 1024 floats (4 KB, where op(A) is packed instead of read in place)
 * and blocks of rows, columns and depth larger than one cache block. */
START_TEST(test_sgemm_big_strides_and_blocks)
{
	static const int dims[][3] = { { 13, 37, 1024 }, { 130, 50, 1024 }, { 25, 1024, 40 },
				       { 150, 600, 450 } };
	tm_cpu cpu = cpu_get();
	for (int isa = TM_ISA_AVX2; isa <= TM_ISA_AVX512; isa++) {
		if (!tm_isa_supported(&cpu, (tm_isa)isa))
			continue;
		tm_ctx ctx = { .isa = (tm_isa)isa };
		uint64_t seed = 700;
		int nd = TT_SLOW_BUILD ? 3 : 4;
		for (int s = 0; s < nd; s++)
			for (int t = 0; t < 4; t++, seed += 3)
				check_one(&ctx, t & 1, t & 2, dims[s][0], dims[s][1], dims[s][2],
					  1.0f, t == 2 ? 1.0f : 0.0f, 0, seed);
	}
}
END_TEST

/* beta == 0 must not read C (NaN garbage stays out); alpha == 0 or k == 0 only scales C. */
START_TEST(test_sgemm_beta_zero_ignores_nan)
{
	static const int dims[][3] = { { 1, 10, 64 }, { 17, 63, 65 }, { 64, 128, 784 },
				       { 5, 3, 1 }, { 30, 40, 900 } };
	tm_cpu cpu = cpu_get();
	for (int isa = TM_ISA_PORTABLE; isa <= TM_ISA_AVX512; isa++) {
		if (!tm_isa_supported(&cpu, (tm_isa)isa))
			continue;
		tm_ctx ctx = { .isa = (tm_isa)isa };
		for (size_t s = 0; s < sizeof(dims) / sizeof(dims[0]); s++) {
			int m = dims[s][0], n = dims[s][1], k = dims[s][2];
			for (int t = 0; t < 4; t++) {
				bool ta = t & 1, tb = t & 2;
				float *a = rnd((size_t)m * k, 7 + s), *b = rnd((size_t)k * n, 8 + s);
				float *c = malloc(sizeof(float) * (size_t)m * n);
				float *r = malloc(sizeof(float) * (size_t)m * n);
				for (size_t i = 0; i < (size_t)m * n; i++)
					c[i] = NAN;
				tm_sgemm(&ctx, ta, tb, m, n, k, 0.75f, a, ta ? m : k, b, tb ? k : n,
					 0.0f, c, n);
				ref_gemm(ta, tb, m, n, k, 0.75f, a, ta ? m : k, b, tb ? k : n, 0.0f,
					 r, n);
				double d = tt_max_rel_diff(c, r, (size_t)m * n);
				ck_assert_msg(d <= tol_for(k), "isa %s m=%d n=%d k=%d t=%d: diff %g",
					      tm_isa_name((tm_isa)isa), m, n, k, t, d);
				/* alpha == 0: C = beta * C, A and B not used */
				for (size_t i = 0; i < (size_t)m * n; i++)
					c[i] = (float)i;
				a[0] = NAN;
				tm_sgemm(&ctx, ta, tb, m, n, k, 0.0f, a, ta ? m : k, b, tb ? k : n,
					 2.0f, c, n);
				for (size_t i = 0; i < (size_t)m * n; i++)
					if (c[i] != 2.0f * (float)i)
						ck_abort_msg("alpha 0: c[%zu] = %g, want %g", i,
							     (double)c[i], 2.0 * (double)i);
				for (size_t i = 0; i < (size_t)m * n; i++)
					c[i] = NAN;
				tm_sgemm(&ctx, ta, tb, m, n, 0, 1.0f, a, 1, b, 1, 0.0f, c, n);
				for (size_t i = 0; i < (size_t)m * n; i++)
					if (c[i] != 0.0f)
						ck_abort_msg("k 0: c[%zu] = %g, want 0", i,
							     (double)c[i]);
				free(a);
				free(b);
				free(c);
				free(r);
			}
		}
	}
}
END_TEST

/* k up to one past the short-k kernel's bound (12): row counts on either side of its 2-row
 * step and 128-row block, column counts on either side of its strip (32 columns, 8 on AVX2),
 * with alpha and beta, wide leading dimensions, and beta = 0 over NaN garbage in C; and the
 * same bits as the blocked tile computing the product from a transposed B. */
START_TEST(test_sgemm_short_k)
{
	static const int ms_full[] = { 2, 3, 17, 129, 260 }, ns_full[] = { 1, 15, 16, 17, 32, 33, 676 };
	static const int ms_small[] = { 2, 3, 129 }, ns_small[] = { 1, 17, 33 };
	const int *ms = TT_SLOW_BUILD ? ms_small : ms_full, *ns = TT_SLOW_BUILD ? ns_small : ns_full;
	int nm = TT_SLOW_BUILD ? 3 : 5, nn = TT_SLOW_BUILD ? 3 : 7;
	tm_cpu cpu = cpu_get();
	for (int isa = TM_ISA_AVX2; isa <= TM_ISA_AVX512; isa++) {
		if (!tm_isa_supported(&cpu, (tm_isa)isa))
			continue;
		tm_ctx ctx = { .isa = (tm_isa)isa };
		uint64_t seed = 5000;
		for (int k = 1; k <= 13; k++)
			for (int im = 0; im < nm; im++)
				for (int in = 0; in < nn; in++, seed += 7) {
					int m = ms[im], n = ns[in];
					check_one(&ctx, false, false, m, n, k, 1.0f, 1.0f, 0, seed);
					check_one(&ctx, false, false, m, n, k, 0.5f, -0.25f, 3, seed + 3);
					float *a = rnd((size_t)m * k, seed + 5), *b = rnd((size_t)k * n, seed + 6);
					float *c = malloc(sizeof(float) * (size_t)m * n);
					float *r = malloc(sizeof(float) * (size_t)m * n);
					for (size_t i = 0; i < (size_t)m * n; i++)
						c[i] = NAN;
					tm_sgemm(&ctx, false, false, m, n, k, 1.0f, a, k, b, n, 0.0f, c, n);
					ref_gemm(false, false, m, n, k, 1.0f, a, k, b, n, 0.0f, r, n);
					double d = tt_max_rel_diff(c, r, (size_t)m * n);
					if (!(d <= tol_for(k)))
						ck_abort_msg("isa %s m=%d n=%d k=%d beta 0 over NaN: diff %g",
							     tm_isa_name((tm_isa)isa), m, n, k, d);
					/* the same product with B given transposed runs the blocked
					 * tile (m > 2, n > 16): the same FMA sequence, the same bits */
					if (m > 2 && n > 16) {
						float *bt = malloc(sizeof(float) * (size_t)k * n);
						for (int p = 0; p < k; p++)
							for (int j = 0; j < n; j++)
								bt[(size_t)j * k + p] = b[(size_t)p * n + j];
						tm_sgemm(&ctx, false, true, m, n, k, 1.0f, a, k, bt, k, 0.0f,
							 r, n);
						if (memcmp(c, r, sizeof(float) * (size_t)m * n) != 0)
							ck_abort_msg("isa %s m=%d n=%d k=%d: short-k and blocked "
								     "paths differ", tm_isa_name((tm_isa)isa),
								     m, n, k);
						free(bt);
					}
					free(a);
					free(b);
					free(c);
					free(r);
				}
	}
}
END_TEST

// ---- the events' shapes ----

/* (n out, k in) of the reference models' layers, the conv layers as im2col matrices. */
static const int layers[][2] = {
	{ 128, 784 }, { 64, 128 }, { 10, 64 }, { 10, 1600 }, { 32, 9 }, { 64, 288 },
	{ 384, 128 }, { 128, 128 }, { 128, 512 }, { 512, 128 },
};

START_TEST(test_linear_event_shapes)
{
	static const int ms_full[] = { 1, 2, 5, 64, 121, 256 };
	static const int ms_small[] = { 1, 2, 5, 64 };
	const int *ms = TT_SLOW_BUILD ? ms_small : ms_full;
	int nm = TT_SLOW_BUILD ? 4 : 6;
	tm_cpu cpu = cpu_get();
	for (int isa = TM_ISA_PORTABLE; isa <= TM_ISA_AVX512; isa++) {
		if (!tm_isa_supported(&cpu, (tm_isa)isa))
			continue;
		tm_ctx ctx = { .isa = (tm_isa)isa };
		for (size_t l = 0; l < sizeof(layers) / sizeof(layers[0]); l++)
			for (int q = 0; q < nm; q++) {
				int m = ms[q], n = layers[l][0], k = layers[l][1];
				float *x = rnd((size_t)m * k, 20 + l), *w = rnd((size_t)n * k, 21 + l);
				float *b = rnd((size_t)n, 22 + l);
				float *y = malloc(sizeof(float) * (size_t)m * n);
				float *r = malloc(sizeof(float) * (size_t)m * n);
				tm_act act = (tm_act)((l + (size_t)q) % 3);
				for (size_t i = 0; i < (size_t)m * n; i++)
					y[i] = NAN;
				tm_linear(&ctx, m, n, k, x, w, b, act, y);
				ref_linear(m, n, k, x, w, b, act, r);
				double d = tt_max_rel_diff(y, r, (size_t)m * n);
				ck_assert_msg(d <= tol_for(k), "isa %s linear m=%d n=%d k=%d act=%d: "
					      "diff %g", tm_isa_name((tm_isa)isa), m, n, k, act, d);
				free(x);
				free(w);
				free(b);
				free(y);
				free(r);
			}
	}
}
END_TEST

START_TEST(test_linear_bias_and_activations)
{
	int m = 5, n = 7, k = 3;
	float x[15], w[21], b[7], y[35];
	tt_fill_random(x, 15, 11);
	tt_fill_random(w, 21, 12);
	tt_fill_random(b, 7, 13);
	tm_ctx ctx = { .isa = TM_ISA_PORTABLE };
	for (int act = TM_ACT_NONE; act <= TM_ACT_GELU; act++) {
		tm_linear(&ctx, m, n, k, x, w, b, (tm_act)act, y);
		for (int i = 0; i < m; i++)
			for (int j = 0; j < n; j++) {
				double s = b[j];
				for (int p = 0; p < k; p++)
					s += (double)x[i * k + p] * w[j * k + p];
				if (act == TM_ACT_RELU)
					s = s > 0 ? s : 0;
				if (act == TM_ACT_GELU)
					s = 0.5 * s * (1 + tanh(sqrt(2 / M_PI) * (s + 0.044715 * s * s * s)));
				ck_assert_double_eq_tol(y[i * n + j], s, 1e-5);
			}
	}
}
END_TEST

/* The fused epilogue over the whole range of GELU/ReLU inputs, bias NULL and not, every
 * path (dot, blocked with one and several k blocks, odd widths). */
START_TEST(test_linear_fused_epilogue)
{
	static const int dims[][3] = { { 3, 5, 40 }, { 1, 33, 50 }, { 29, 70, 20 },
				       { 13, 47, 1000 }, { 2, 200, 64 }, { 40, 12, 30 } };
	tm_cpu cpu = cpu_get();
	for (int isa = TM_ISA_PORTABLE; isa <= TM_ISA_AVX512; isa++) {
		if (!tm_isa_supported(&cpu, (tm_isa)isa))
			continue;
		tm_ctx ctx = { .isa = (tm_isa)isa };
		for (size_t s = 0; s < sizeof(dims) / sizeof(dims[0]); s++) {
			int m = dims[s][0], n = dims[s][1], k = dims[s][2];
			float *x = rnd((size_t)m * k, 40 + s), *w = rnd((size_t)n * k, 41 + s);
			float *b = rnd((size_t)n, 42 + s);
			/* spread pre-activations over about [-12, 12] so GELU's tails are hit */
			for (size_t i = 0; i < (size_t)m * k; i++)
				x[i] *= 12.0f / sqrtf((float)k);
			for (size_t i = 0; i < (size_t)n; i++)
				b[i] *= 3.0f;
			float *y = malloc(sizeof(float) * (size_t)m * n);
			float *r = malloc(sizeof(float) * (size_t)m * n);
			for (int act = TM_ACT_NONE; act <= TM_ACT_GELU; act++)
				for (int wb = 0; wb < 2; wb++) {
					const float *bias = wb ? b : NULL;
					tm_linear(&ctx, m, n, k, x, w, bias, (tm_act)act, y);
					ref_linear(m, n, k, x, w, bias, (tm_act)act, r);
					double d = tt_max_rel_diff(y, r, (size_t)m * n);
					ck_assert_msg(d <= tol_for(k) * 4, "isa %s m=%d n=%d k=%d "
						      "act=%d bias=%d: diff %g",
						      tm_isa_name((tm_isa)isa), m, n, k, act, wb, d);
				}
			free(x);
			free(w);
			free(b);
			free(y);
			free(r);
		}
	}
}
END_TEST

// ---- one row (matrix-vector kernels) ----

/* A single row of X: every tile height of the row kernel (n = 1..17 and wider), k around
 * the vector width and the 64-byte peel, W at every 4-byte misalignment (its rows may share
 * one alignment or not), bias and activation, unpacked and prepacked, with and without a
 * pool big enough to split the columns (the bits must not change). */
START_TEST(test_linear_single_row)
{
	static const int ns[] = { 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 15, 16, 17, 33, 129, 300 };
	static const int ks[] = { 1, 5, 16, 17, 31, 32, 48, 63, 64, 65, 80, 129, 784 };
	tm_cpu cpu = cpu_get();
	tm_pool *pool = tm_pool_new(3);
	for (int isa = TM_ISA_PORTABLE; isa <= TM_ISA_AVX512; isa++) {
		if (!tm_isa_supported(&cpu, (tm_isa)isa))
			continue;
		tm_ctx ctx = { .isa = (tm_isa)isa }, pctx = { .isa = (tm_isa)isa, .pool = pool };
		for (size_t a = 0; a < sizeof(ns) / sizeof(ns[0]); a++)
			for (size_t b = 0; b < sizeof(ks) / sizeof(ks[0]); b++) {
				int n = ns[a], k = ks[b], off = (int)((a + b) % 4);
				if (TT_SLOW_BUILD && n * k > 40000)
					continue;
				float *wbuf = rnd((size_t)n * k + 4, 100 + a), *w = wbuf + off;
				float *x = rnd((size_t)k + 4, 101 + b) + off, *bias = rnd((size_t)n, 102);
				float *y = malloc(sizeof(float) * (size_t)n);
				float *y2 = malloc(sizeof(float) * (size_t)n);
				float *r = malloc(sizeof(float) * (size_t)n);
				tm_act act = (tm_act)((a + b) % 3);
				const float *bb = (a + b) % 2 ? bias : NULL;
				ref_linear(1, n, k, x, w, bb, act, r);
				for (int i = 0; i < n; i++)
					y[i] = NAN;
				tm_linear(&ctx, 1, n, k, x, w, bb, act, y);
				double d = tt_max_rel_diff(y, r, (size_t)n);
				ck_assert_msg(d <= tol_for(k), "isa %s m=1 n=%d k=%d off=%d: diff %g",
					      tm_isa_name((tm_isa)isa), n, k, off, d);
				tm_linear(&pctx, 1, n, k, x, w, bb, act, y2);
				ck_assert_msg(memcmp(y, y2, sizeof(float) * (size_t)n) == 0,
					      "isa %s m=1 n=%d k=%d: pool changes the bits",
					      tm_isa_name((tm_isa)isa), n, k);
				tm_packed_w *pw = NULL;
				ck_assert_int_eq(tm_linear_pack(&ctx, n, k, w, &pw, NULL), 0);
				tm_linear_packed(&ctx, 1, pw, x, bb, act, y);
				d = tt_max_rel_diff(y, r, (size_t)n);
				ck_assert_msg(d <= tol_for(k), "isa %s packed m=1 n=%d k=%d: diff %g",
					      tm_isa_name((tm_isa)isa), n, k, d);
				tm_linear_packed(&pctx, 1, pw, x, bb, act, y2);
				ck_assert_msg(memcmp(y, y2, sizeof(float) * (size_t)n) == 0,
					      "isa %s packed m=1 n=%d k=%d: pool changes the bits",
					      tm_isa_name((tm_isa)isa), n, k);
				tm_packed_w_free(pw);
				free(wbuf);
				free(x - off);
				free(bias);
				free(y);
				free(y2);
				free(r);
			}
	}
	tm_pool_free(pool);
}
END_TEST

// ---- narrow layers (columns and steps of k share the lanes) ----

/* n <= 16 with m >= 16 and k < 256 takes the narrow kernel: every mix of four-column groups (a padded
 * last one at n % 4 == 3) and a column pair (a padded one at n % 4 == 1), rows in whole and
 * partial 8-row blocks, k around the 4- and 8-step vectors up to the kernel's limit (and
 * just past it), through tm_linear (bias, activations, rows of C written as one run),
 * tm_linear_packed, tm_sgemm NT with padded leading dimensions and alpha/beta (row by row),
 * and a pool (bits unchanged). */
START_TEST(test_linear_narrow)
{
	static const int ms[] = { 15, 16, 17, 31, 32, 33, 48, 63, 64, 100 };
	static const int ns[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17 };
	static const int ks[] = { 1, 5, 15, 16, 17, 33, 64, 100, 255, 256 };
	tm_cpu cpu = cpu_get();
	tm_pool *pool = tm_pool_new(3);
	for (int isa = TM_ISA_PORTABLE; isa <= TM_ISA_AVX512; isa++) {
		if (!tm_isa_supported(&cpu, (tm_isa)isa))
			continue;
		tm_ctx ctx = { .isa = (tm_isa)isa }, pctx = { .isa = (tm_isa)isa, .pool = pool };
		for (size_t a = 0; a < sizeof(ms) / sizeof(ms[0]); a++)
			for (size_t b = 0; b < sizeof(ns) / sizeof(ns[0]); b++)
				for (size_t c = 0; c < sizeof(ks) / sizeof(ks[0]); c++) {
			int m = ms[a], n = ns[b], k = ks[c];
			if (TT_SLOW_BUILD && (a + b + c) % 4 != 0)
				continue;
			uint64_t seed = 700 + 100 * a + 10 * b + c;
			float *x = rnd((size_t)m * k, seed), *w = rnd((size_t)n * k, seed + 1);
			float *bias = rnd((size_t)n, seed + 2);
			float *y = malloc(sizeof(float) * (size_t)m * n);
			float *y2 = malloc(sizeof(float) * (size_t)m * n);
			float *r = malloc(sizeof(float) * (size_t)m * n);
			tm_act act = (tm_act)((a + b + c) % 3);
			const float *bb = (a + c) % 2 ? bias : NULL;
			ref_linear(m, n, k, x, w, bb, act, r);
			for (size_t i = 0; i < (size_t)m * n; i++)
				y[i] = NAN;
			tm_linear(&ctx, m, n, k, x, w, bb, act, y);
			double d = tt_max_rel_diff(y, r, (size_t)m * n);
			ck_assert_msg(d <= tol_for(k), "isa %s m=%d n=%d k=%d act=%d: diff %g",
				      tm_isa_name((tm_isa)isa), m, n, k, act, d);
			tm_linear(&pctx, m, n, k, x, w, bb, act, y2);
			ck_assert_msg(memcmp(y, y2, sizeof(float) * (size_t)m * n) == 0,
				      "isa %s m=%d n=%d k=%d: pool changes the bits",
				      tm_isa_name((tm_isa)isa), m, n, k);
			tm_packed_w *pw = NULL;
			ck_assert_int_eq(tm_linear_pack(&ctx, n, k, w, &pw, NULL), 0);
			for (size_t i = 0; i < (size_t)m * n; i++)
				y2[i] = NAN;
			tm_linear_packed(&ctx, m, pw, x, bb, act, y2);
			d = tt_max_rel_diff(y2, r, (size_t)m * n);
			ck_assert_msg(d <= tol_for(k), "isa %s packed m=%d n=%d k=%d: diff %g",
				      tm_isa_name((tm_isa)isa), m, n, k, d);
			tm_packed_w_free(pw);
			if (c % 3 == 0 || m == 33)
				check_one(&ctx, false, true, m, n, k, (a + b) % 2 ? 0.5f : 1.0f,
					  b % 3 == 0 ? 0.0f : b % 3 == 1 ? 1.0f : -0.25f,
					  (int)(1 + c % 5), seed + 3);
			free(x);
			free(w);
			free(bias);
			free(y);
			free(y2);
			free(r);
		}
	}
	tm_pool_free(pool);
}
END_TEST

// ---- prepacked weights ----

START_TEST(test_linear_packed)
{
	static const int ms[] = { 1, 2, 13, 64 };
	tm_cpu cpu = cpu_get();
	for (int isa = TM_ISA_PORTABLE; isa <= TM_ISA_AVX512; isa++) {
		if (!tm_isa_supported(&cpu, (tm_isa)isa))
			continue;
		tm_ctx ctx = { .isa = (tm_isa)isa };
		for (size_t l = 0; l < sizeof(layers) / sizeof(layers[0]) + 2; l++) {
			/* the event layers, then two odd ones */
			int n = l == 10 ? 33 : l == 11 ? 129 : layers[l][0];
			int k = l == 10 ? 17 : l == 11 ? 3 : layers[l][1];
			float *w = rnd((size_t)n * k, 60 + l), *b = rnd((size_t)n, 61 + l);
			tm_packed_w *pw = NULL;
			tm_err err;
			ck_assert_int_eq(tm_linear_pack(&ctx, n, k, w, &pw, &err), 0);
			ck_assert_ptr_nonnull(pw);
			for (size_t q = 0; q < sizeof(ms) / sizeof(ms[0]); q++) {
				int m = ms[q];
				float *x = rnd((size_t)m * k, 62 + l + q);
				float *y = malloc(sizeof(float) * (size_t)m * n);
				float *y2 = malloc(sizeof(float) * (size_t)m * n);
				float *r = malloc(sizeof(float) * (size_t)m * n);
				tm_act act = (tm_act)((l + q) % 3);
				const float *bias = q == 2 ? NULL : b;
				for (size_t i = 0; i < (size_t)m * n; i++)
					y[i] = NAN;
				tm_linear_packed(&ctx, m, pw, x, bias, act, y);
				ref_linear(m, n, k, x, w, bias, act, r);
				double d = tt_max_rel_diff(y, r, (size_t)m * n);
				ck_assert_msg(d <= tol_for(k), "isa %s packed m=%d n=%d k=%d: diff %g",
					      tm_isa_name((tm_isa)isa), m, n, k, d);
				/* a lower kernel set than the weights were packed for takes the
				 * portable path, which must agree too */
				for (int lower = TM_ISA_PORTABLE; lower < isa; lower++) {
					tm_ctx lc = { .isa = (tm_isa)lower };
					tm_linear_packed(&lc, m, pw, x, bias, act, y2);
					d = tt_max_rel_diff(y2, r, (size_t)m * n);
					ck_assert_msg(d <= tol_for(k), "isa %s packed, run as %s, m=%d "
						      "n=%d: %g", tm_isa_name((tm_isa)isa),
						      tm_isa_name((tm_isa)lower), m, n, d);
				}
				free(x);
				free(y);
				free(y2);
				free(r);
			}
			tm_packed_w_free(pw);
			free(w);
			free(b);
		}
	}
	tm_packed_w_free(NULL);
}
END_TEST

START_TEST(test_linear_pack_rejects_bad_shape)
{
	tm_packed_w *pw = (tm_packed_w *)&pw;
	tm_err err = { 0 };
	float w[4] = { 0 };
	ck_assert_int_eq(tm_linear_pack(NULL, 0, 4, w, &pw, &err), TM_EINVAL);
	ck_assert_ptr_null(pw);
	ck_assert_int_eq(err.code, TM_EINVAL);
	ck_assert_msg(strstr(err.msg, "(0, 4)") != NULL, "message: %s", err.msg);
	ck_assert_int_eq(tm_linear_pack(NULL, 4, -1, w, &pw, NULL), TM_EINVAL);
}
END_TEST

// ---- backward ----

START_TEST(test_linear_backward)
{
	static const int dims[][3] = { { 1, 10, 64 }, { 17, 63, 65 }, { 64, 128, 784 },
				       { 3, 5, 7 } };
	tm_cpu cpu = cpu_get();
	for (int isa = TM_ISA_PORTABLE; isa <= TM_ISA_AVX512; isa++) {
		if (!tm_isa_supported(&cpu, (tm_isa)isa))
			continue;
		tm_ctx ctx = { .isa = (tm_isa)isa };
		for (size_t s = 0; s < sizeof(dims) / sizeof(dims[0]); s++) {
			int m = dims[s][0], n = dims[s][1], k = dims[s][2];
			float *x = rnd((size_t)m * k, 80 + s), *w = rnd((size_t)n * k, 81 + s);
			float *dy = rnd((size_t)m * n, 82 + s);
			float *dx = malloc(sizeof(float) * (size_t)m * k);
			float *dw = rnd((size_t)n * k, 83 + s), *db = rnd((size_t)n, 84 + s);
			float *rdx = malloc(sizeof(float) * (size_t)m * k);
			float *rdw = malloc(sizeof(float) * (size_t)n * k);
			float *rdb = malloc(sizeof(float) * (size_t)n);
			memcpy(rdw, dw, sizeof(float) * (size_t)n * k);
			memcpy(rdb, db, sizeof(float) * (size_t)n);
			for (size_t i = 0; i < (size_t)m * k; i++)
				dx[i] = NAN;
			tm_linear_backward(&ctx, m, n, k, x, w, dy, dx, dw, db);
			ref_gemm(false, false, m, k, n, 1.0f, dy, n, w, k, 0.0f, rdx, k);
			ref_gemm(true, false, n, k, m, 1.0f, dy, n, x, k, 1.0f, rdw, k);
			for (int j = 0; j < n; j++) {
				double acc = rdb[j];
				for (int i = 0; i < m; i++)
					acc += dy[(size_t)i * n + j];
				rdb[j] = (float)acc;
			}
			ck_assert_msg(tt_max_rel_diff(dx, rdx, (size_t)m * k) <= tol_for(n),
				      "isa %s dx m=%d n=%d k=%d", tm_isa_name((tm_isa)isa), m, n, k);
			ck_assert_msg(tt_max_rel_diff(dw, rdw, (size_t)n * k) <= tol_for(m),
				      "isa %s dw m=%d n=%d k=%d", tm_isa_name((tm_isa)isa), m, n, k);
			ck_assert_msg(tt_max_rel_diff(db, rdb, (size_t)n) <= tol_for(m),
				      "isa %s db m=%d n=%d k=%d", tm_isa_name((tm_isa)isa), m, n, k);
			/* dx and db may be NULL */
			tm_linear_backward(&ctx, m, n, k, x, w, dy, NULL, dw, NULL);
			free(x);
			free(w);
			free(dy);
			free(dx);
			free(dw);
			free(db);
			free(rdx);
			free(rdw);
			free(rdb);
		}
	}
}
END_TEST

// ---- threads ----

/* Every path with a pool of 1, 2 and 3 threads must give the same bits. */
START_TEST(test_threads_bit_identical)
{
	static const int dims[][3] = { { 200, 300, 500 }, { 64, 128, 784 }, { 256, 10, 1600 },
				       { 1, 384, 128 }, { 1, 10, 1600 }, { 97, 65, 129 },
				       { 5, 1000, 70 }, { 700, 32, 9 }, { 64, 676, 9 } };
	tm_cpu cpu = cpu_get();
	tm_pool *pools[3] = { NULL, tm_pool_new(2), tm_pool_new(3) };
	for (int isa = TM_ISA_PORTABLE; isa <= TM_ISA_AVX512; isa++) {
		if (!tm_isa_supported(&cpu, (tm_isa)isa))
			continue;
		for (size_t s = 0; s < sizeof(dims) / sizeof(dims[0]); s++) {
			int m = dims[s][0], n = dims[s][1], k = dims[s][2];
			float *a = rnd((size_t)m * k, 90 + s), *b = rnd((size_t)n * k, 91 + s);
			float *bias = rnd((size_t)n, 92 + s), *c0 = rnd((size_t)m * n, 93 + s);
			float *out[3][7];
			tm_packed_w *pw = NULL;
			tm_ctx c1 = { .isa = (tm_isa)isa };
			ck_assert_int_eq(tm_linear_pack(&c1, n, k, b, &pw, NULL), 0);
			for (int p = 0; p < 3; p++) {
				tm_ctx ctx = { .isa = (tm_isa)isa, .pool = pools[p] };
				for (int v = 0; v < 7; v++) {
					out[p][v] = malloc(sizeof(float) * (size_t)m * n);
					memcpy(out[p][v], c0, sizeof(float) * (size_t)m * n);
				}
				for (int t = 0; t < 4; t++)
					tm_sgemm(&ctx, t & 1, t & 2, m, n, k, 1.0f, a, t & 1 ? m : k, b,
						 t & 2 ? k : n, t == 1 ? 0.5f : 0.0f, out[p][t], n);
				tm_linear(&ctx, m, n, k, a, b, bias, TM_ACT_GELU, out[p][4]);
				tm_linear_packed(&ctx, m, pw, a, bias, TM_ACT_RELU, out[p][5]);
				tm_linear_packed(&ctx, 1, pw, a, bias, TM_ACT_NONE, out[p][6]);
			}
			for (int p = 1; p < 3; p++)
				for (int v = 0; v < 7; v++)
					ck_assert_msg(memcmp(out[0][v], out[p][v],
							     sizeof(float) * (size_t)(v == 6 ? n : m * n)) == 0,
						      "isa %s m=%d n=%d k=%d variant %d: %d threads differ",
						      tm_isa_name((tm_isa)isa), m, n, k, v, p + 1);
			for (int p = 0; p < 3; p++)
				for (int v = 0; v < 7; v++)
					free(out[p][v]);
			tm_packed_w_free(pw);
			free(a);
			free(b);
			free(bias);
			free(c0);
		}
	}
	tm_pool_free(pools[1]);
	tm_pool_free(pools[2]);
}
END_TEST

/* A NULL ctx is the portable path, single thread. */
START_TEST(test_null_ctx_is_portable)
{
	int m = 9, n = 11, k = 13;
	float *a = rnd((size_t)m * k, 1), *b = rnd((size_t)n * k, 2);
	float c1[99], c2[99];
	tm_ctx portable = { .isa = TM_ISA_PORTABLE };
	tm_sgemm(NULL, false, true, m, n, k, 1.0f, a, k, b, k, 0.0f, c1, n);
	tm_sgemm(&portable, false, true, m, n, k, 1.0f, a, k, b, k, 0.0f, c2, n);
	ck_assert_int_eq(memcmp(c1, c2, sizeof(c1)), 0);
	tm_linear(NULL, m, n, k, a, b, NULL, TM_ACT_RELU, c1);
	tm_linear(&portable, m, n, k, a, b, NULL, TM_ACT_RELU, c2);
	ck_assert_int_eq(memcmp(c1, c2, sizeof(c1)), 0);
	free(a);
	free(b);
}
END_TEST

Suite *gemm_suite(void)
{
	Suite *s = suite_create("gemm");
	TCase *tc = tcase_create("sgemm");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_sgemm_matches_reference);
	tcase_add_test(tc, test_sgemm_odd_shapes);
	tcase_add_test(tc, test_sgemm_alpha_beta_ld);
	tcase_add_test(tc, test_sgemm_big_strides_and_blocks);
	tcase_add_test(tc, test_sgemm_beta_zero_ignores_nan);
	tcase_add_test(tc, test_sgemm_short_k);
	tcase_add_test(tc, test_null_ctx_is_portable);
	suite_add_tcase(s, tc);
	TCase *tl = tcase_create("linear");
	tcase_set_timeout(tl, 120);
	tcase_add_test(tl, test_linear_bias_and_activations);
	tcase_add_test(tl, test_linear_event_shapes);
	tcase_add_test(tl, test_linear_fused_epilogue);
	tcase_add_test(tl, test_linear_packed);
	tcase_add_test(tl, test_linear_single_row);
	tcase_add_test(tl, test_linear_narrow);
	tcase_add_test(tl, test_linear_pack_rejects_bad_shape);
	tcase_add_test(tl, test_linear_backward);
	suite_add_tcase(s, tl);
	TCase *tt = tcase_create("threads");
	tcase_set_timeout(tt, 120);
	tcase_add_test(tt, test_threads_bit_identical);
	suite_add_tcase(s, tt);
	return s;
}
