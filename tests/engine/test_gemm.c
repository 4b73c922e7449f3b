/* test_gemm.c: Check suite of engine/gemm*.c: every kernel set against a double-precision
 * reference, all transpose combinations, odd shapes, alpha/beta, and the linear layer. */
#include "tests.h"
#include "engine.h"

#include <math.h>
#include <stdlib.h>

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

static const int shapes[][3] = {
	{ 1, 1, 1 }, { 1, 10, 64 }, { 3, 17, 5 }, { 17, 63, 65 }, { 64, 128, 784 },
	{ 65, 129, 33 }, { 1, 128, 784 }, { 256, 10, 1600 }, { 7, 384, 128 },
};

START_TEST(test_sgemm_matches_reference)
{
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
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

Suite *gemm_suite(void)
{
	Suite *s = suite_create("gemm");
	TCase *tc = tcase_create("sgemm");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_sgemm_matches_reference);
	tcase_add_test(tc, test_linear_bias_and_activations);
	suite_add_tcase(s, tc);
	return s;
}
