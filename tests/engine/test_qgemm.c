/* test_qgemm.c: Check suite of engine/qgemm*.c (INT8).  Weight quantization (half-step error
 * per channel, per tensor vs per channel, zero rows, +-max, non-finite input), the activation
 * rounding, the calibrator (min/max and percentile on known data), and every int8 kernel set
 * the CPU has against a plain reference written here from the unpacked int8 weights: the int32
 * sums must be EXACTLY equal, and so must the float outputs (the same scale * acc + bias steps),
 * on odd shapes and the events' layer shapes, with saturation-prone inputs (x = -128, +-127,
 * weights at +-127) that would overflow a naive vpmaddubsw.  Also: the quantized layer against
 * the FP32 layer within a bound derived from the scales, requantized int8 output, GELU, the int8
 * conv3x3, bit-identical results for 1, 2 and 3 threads, stored bytes, argument errors.  The
 * sanitizer build uses fewer shapes. */
#include "tests.h"
#include "engine.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

// ---- helpers ----

static float *rnd(size_t n, uint64_t seed)
{
	float *x = malloc(sizeof(float) * (n ? n : 1));
	ck_assert_ptr_nonnull(x);
	tt_fill_random(x, n, seed);
	return x;
}

static void *xalloc(size_t bytes)
{
	void *p = malloc(bytes ? bytes : 1);
	ck_assert_ptr_nonnull(p);
	return p;
}

/* The kernel sets to compare: portable always, then every ISA the CPU supports. */
static int isas_get(tm_isa *out)
{
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	int n = 0;
	out[n++] = TM_ISA_PORTABLE;
	if (tm_isa_supported(&cpu, TM_ISA_AVX2))
		out[n++] = TM_ISA_AVX2;
	if (tm_isa_supported(&cpu, TM_ISA_AVX512))
		out[n++] = TM_ISA_AVX512;
	return n;
}

static tm_qlinear *make_layer(int n, int k, const float *w, const float *b, tm_qgran g,
			      float xs)
{
	tm_qlinear *ql = NULL;
	tm_err err;
	int rc = tm_qlinear_new(n, k, w, b, g, xs, &ql, &err);
	ck_assert_msg(rc == 0, "qlinear_new (%d, %d): %s", n, k, err.msg);
	return ql;
}

/* acc(m, n) = xq(m, k) * q(n, k)^T in int64 (and checked to fit int32). */
static void ref_s32(int m, int n, int k, const int8_t *xq, const int8_t *q, int32_t *acc)
{
	for (int i = 0; i < m; i++)
		for (int j = 0; j < n; j++) {
			int64_t s = 0;
			for (int p = 0; p < k; p++)
				s += (int64_t)xq[(size_t)i * k + p] * q[(size_t)j * k + p];
			ck_assert(s >= INT32_MIN && s <= INT32_MAX);
			acc[(size_t)i * n + j] = (int32_t)s;
		}
}

/* The documented epilogue: (float)acc * (xs * ws[j]), + bias, ReLU. */
static void ref_dequant(int m, int n, const int32_t *acc, float xs, const float *ws,
			const float *b, bool relu, float *y)
{
	for (int i = 0; i < m; i++)
		for (int j = 0; j < n; j++) {
			float s = xs * ws[j];
			float v = (float)acc[(size_t)i * n + j] * s;
			if (b)
				v = v + b[j];
			if (relu)
				v = v > 0.0f ? v : 0.0f;
			y[(size_t)i * n + j] = v;
		}
}

static bool same_bits(const void *a, const void *b, size_t bytes)
{
	return memcmp(a, b, bytes) == 0;
}

// ---- weight quantization ----

START_TEST(test_weights_half_step)
{
	int n = 37, k = 101;
	float *w = rnd((size_t)n * k, 11);
	for (int p = 0; p < k; p++)      /* row 3 small, row 5 large: per channel must adapt */
		w[3 * k + p] *= 1e-3f, w[5 * k + p] *= 50.0f;
	int8_t *q = xalloc((size_t)n * k), *qt = xalloc((size_t)n * k);
	float *s = xalloc(sizeof(float) * n), *st = xalloc(sizeof(float) * n);
	tm_err err;
	ck_assert_int_eq(tm_quantize_weights(n, k, w, TM_QGRAN_CHANNEL, q, s, &err), 0);
	ck_assert_int_eq(tm_quantize_weights(n, k, w, TM_QGRAN_TENSOR, qt, st, &err), 0);
	double err_c = 0, err_t = 0;
	for (int j = 0; j < n; j++) {
		float amax = 0;
		for (int p = 0; p < k; p++)
			amax = fmaxf(amax, fabsf(w[j * k + p]));
		ck_assert_float_eq(s[j], amax / 127.0f);
		ck_assert_float_eq(st[j], st[0]);
		bool hit = false;
		for (int p = 0; p < k; p++) {
			size_t i = (size_t)j * k + p;
			if (q[i] < -127)
				ck_abort_msg("row %d col %d: q %d below -127", j, p, q[i]);
			hit |= q[i] == 127 || q[i] == -127;
			double e = fabs((double)w[i] - (double)q[i] * s[j]);
			if (!(e <= s[j] * 0.5 * (1 + 1e-6) + 1e-30))
				ck_abort_msg("row %d col %d: error %g > half step %g", j, p, e,
					     s[j] * 0.5);
			double et = fabs((double)w[i] - (double)qt[i] * st[j]);
			if (!(et <= st[j] * 0.5 * (1 + 1e-6) + 1e-30))
				ck_abort_msg("row %d col %d: per-tensor error %g > half step %g", j,
					     p, et, st[j] * 0.5);
			if (j == 3) {
				err_c += e;
				err_t += et;
			}
		}
		ck_assert_msg(hit, "row %d: the largest weight must map to +-127", j);
	}
	/* per tensor has one scale, set by row 5; the small row 3 loses almost everything */
	float gmax = 0;
	for (size_t i = 0; i < (size_t)n * k; i++)
		gmax = fmaxf(gmax, fabsf(w[i]));
	ck_assert_float_eq(st[0], gmax / 127.0f);
	ck_assert_msg(err_c * 100 < err_t, "per channel error %g vs per tensor %g", err_c, err_t);
	free(w);
	free(q);
	free(qt);
	free(s);
	free(st);
}
END_TEST

START_TEST(test_weights_extremes)
{
	int n = 4, k = 6;
	float w[24] = {
		0, 0, 0, 0, 0, 0,                        /* zero row: scale 1, q 0 */
		127, -127, 63.5f, -63.5f, 62.5f, 0.4f,   /* scale 1: +-max -> +-127, half to even */
		1e-44f, -1e-44f, 0, 0, 0, 0,             /* too tiny to scale: treated as zero */
		-63.5f, 1.25f, 0.75f, 0, 0, 0,           /* negative max: scale 0.5 */
	};
	int8_t q[24];
	float s[4];
	tm_err err;
	ck_assert_int_eq(tm_quantize_weights(n, k, w, TM_QGRAN_CHANNEL, q, s, &err), 0);
	ck_assert_float_eq(s[0], 1.0f);
	for (int p = 0; p < k; p++)
		ck_assert_int_eq(q[p], 0);
	ck_assert_float_eq(s[1], 1.0f);
	static const int8_t row1[6] = { 127, -127, 64, -64, 62, 0 };
	for (int p = 0; p < k; p++)
		ck_assert_int_eq(q[6 + p], row1[p]);
	ck_assert_float_eq(s[2], 1.0f);
	ck_assert_int_eq(q[12], 0);
	ck_assert_float_eq(s[3], 0.5f);
	ck_assert_int_eq(q[18], -127);
	ck_assert_int_eq(q[19], 2);      /* 2.5 -> 2 */
	ck_assert_int_eq(q[20], 2);      /* 1.5 -> 2 */
	/* all-zero tensor per tensor */
	float z[6] = { 0 };
	ck_assert_int_eq(tm_quantize_weights(1, 6, z, TM_QGRAN_TENSOR, q, s, &err), 0);
	ck_assert_float_eq(s[0], 1.0f);
	/* non-finite and bad shapes */
	w[13] = NAN;
	ck_assert_int_eq(tm_quantize_weights(n, k, w, TM_QGRAN_CHANNEL, q, s, &err), TM_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "not finite"));
	w[13] = INFINITY;
	ck_assert_int_eq(tm_quantize_weights(n, k, w, TM_QGRAN_TENSOR, q, s, &err), TM_EINVAL);
	ck_assert_int_eq(tm_quantize_weights(0, k, w, TM_QGRAN_TENSOR, q, s, &err), TM_EINVAL);
}
END_TEST

START_TEST(test_act_rounding)
{
	ck_assert_float_eq(tm_qscale(127.0f), 1.0f);
	ck_assert_float_eq(tm_qscale(0.0f), 1.0f);
	ck_assert_float_eq(tm_qscale(NAN), 1.0f);
	ck_assert_float_eq(tm_qscale(INFINITY), 1.0f);
	ck_assert_float_eq(tm_qscale(1e-40f), 1.0f);
	float x[] = { 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 126.6f, 127.4f, 1e30f, -1e30f, NAN,
		      -0.0f, 3.49f };
	int8_t want[] = { 0, 2, 2, 0, -2, 127, 127, 127, -127, -127, 0, 3 };
	int8_t q[12];
	tm_quantize_act(12, x, 1.0f, q);
	for (int i = 0; i < 12; i++)
		ck_assert_msg(q[i] == want[i], "x=%g: got %d want %d", (double)x[i], q[i], want[i]);
	tm_quantize_act(3, x, 0.5f, q);  /* x / 0.5 = 1, 3, 5 */
	ck_assert_int_eq(q[0], 1);
	ck_assert_int_eq(q[1], 3);
	ck_assert_int_eq(q[2], 5);
}
END_TEST

// ---- calibration ----

START_TEST(test_calib_minmax)
{
	tm_qcalib *c = NULL;
	tm_err err;
	ck_assert_int_eq(tm_qcalib_new(TM_QCALIB_MINMAX, 0, &c, &err), 0);
	float lo, hi;
	tm_qcalib_range(c, &lo, &hi);
	ck_assert(lo == 0 && hi == 0);
	ck_assert_float_eq(tm_qcalib_scale(c), 1.0f);  /* nothing seen */
	float a[] = { 0.5f, -3.0f, 2.0f, NAN };
	float b[] = { 1.0f, 2.5f, INFINITY, -1.0f };
	tm_qcalib_add(c, 4, a);
	tm_qcalib_add(c, 4, b);
	ck_assert_int_eq(tm_qcalib_count(c), 6);
	tm_qcalib_range(c, &lo, &hi);
	ck_assert_float_eq(lo, -3.0f);
	ck_assert_float_eq(hi, 2.5f);
	ck_assert_float_eq(tm_qcalib_amax(c), 3.0f);
	ck_assert_float_eq(tm_qcalib_scale(c), 3.0f / 127.0f);
	tm_qcalib_free(c);
	/* all zeros: scale 1, no division by zero anywhere */
	ck_assert_int_eq(tm_qcalib_new(TM_QCALIB_PERCENTILE, 99.99, &c, &err), 0);
	float z[16] = { 0 };
	tm_qcalib_add(c, 16, z);
	ck_assert_float_eq(tm_qcalib_amax(c), 0.0f);
	ck_assert_float_eq(tm_qcalib_scale(c), 1.0f);
	tm_qcalib_free(c);
	ck_assert_int_eq(tm_qcalib_new(TM_QCALIB_PERCENTILE, 0.0, &c, &err), TM_EINVAL);
	ck_assert_int_eq(tm_qcalib_new(TM_QCALIB_PERCENTILE, 100.5, &c, &err), TM_EINVAL);
	ck_assert_ptr_null(c);
	tm_qcalib_free(NULL);
}
END_TEST

/* |x| = 1 .. N with alternating signs: the nearest-rank p-th percentile is ceil(p N / 100). */
static void check_percentile(int N, double pct, int feed)
{
	tm_qcalib *c = NULL;
	tm_err err;
	ck_assert_int_eq(tm_qcalib_new(TM_QCALIB_PERCENTILE, pct, &c, &err), 0);
	float *x = xalloc(sizeof(float) * N);
	for (int i = 0; i < N; i++)  /* a scrambled order: 7919 is prime to N's factors */
		x[i] = (float)((long)i * 7919 % N + 1) * (i % 2 ? -1.0f : 1.0f);
	for (int i = 0; i < N; i += feed)
		tm_qcalib_add(c, (size_t)(N - i < feed ? N - i : feed), x + i);
	double want = ceil(pct / 100.0 * N);
	float got = tm_qcalib_amax(c);
	ck_assert_msg(got >= want && got <= want * (1 + 1.0 / 512) && got <= N,
		      "p%g of 1..%d: got %g want %g", pct, N, (double)got, want);
	ck_assert_float_eq(tm_qcalib_scale(c), got / 127.0f);
	free(x);
	tm_qcalib_free(c);
}

START_TEST(test_calib_percentile)
{
	check_percentile(10000, 99.99, 10000);
	check_percentile(10000, 99.99, 37);  /* batches give the same histogram */
	check_percentile(1000, 50, 100);
	check_percentile(1000, 100, 1);      /* 100th percentile = max */
	check_percentile(7, 1, 7);           /* rank 1 = min |x| */
	/* one outlier among many: 99.9th ignores it, min/max does not */
	tm_qcalib *c = NULL;
	tm_err err;
	ck_assert_int_eq(tm_qcalib_new(TM_QCALIB_PERCENTILE, 99.9, &c, &err), 0);
	float *x = rnd(100000, 5);
	x[777] = 1000.0f;
	tm_qcalib_add(c, 100000, x);
	ck_assert(tm_qcalib_amax(c) < 1.01f);
	float lo, hi;
	tm_qcalib_range(c, &lo, &hi);
	ck_assert_float_eq(hi, 1000.0f);
	free(x);
	tm_qcalib_free(c);
}
END_TEST

// ---- kernels against the reference ----

/* One (m, n, k) case on every kernel set: int32 sums exact, float outputs bit-identical to the
 * reference epilogue, with and without bias, ReLU, per channel and per tensor.  mode 0:
 * random data; 1: saturation-prone (x in {-128, -127, 127}, weights at +-127 with signs
 * that make every pair of products add up). */
static void check_case(int m, int n, int k, uint64_t seed, int mode)
{
	tm_isa isas[3];
	int nisa = isas_get(isas);
	float *w = rnd((size_t)n * k, seed), *b = rnd((size_t)n, seed + 1);
	int8_t *xq = xalloc((size_t)m * k);
	float *xf = rnd((size_t)m * k, seed + 2);
	if (mode == 1) {
		for (size_t i = 0; i < (size_t)n * k; i++)
			w[i] = (i % 3 == 2) ? -1.0f : 1.0f;
		for (size_t i = 0; i < (size_t)m * k; i++)
			xq[i] = (int8_t)((i % 3 == 2) ? -128 : (i % 5 == 4) ? -127 : 127);
	} else {
		tm_quantize_act((size_t)m * k, xf, 1.0f / 127.0f, xq);
	}
	int8_t *q = xalloc((size_t)n * k);
	float *ws = xalloc(sizeof(float) * n);
	int32_t *acc = xalloc(sizeof(int32_t) * m * n), *got = xalloc(sizeof(int32_t) * m * n);
	float *yref = xalloc(sizeof(float) * m * n), *y = xalloc(sizeof(float) * m * n);
	for (int g = 0; g < 2; g++) {
		tm_qgran gran = g ? TM_QGRAN_TENSOR : TM_QGRAN_CHANNEL;
		float xs = 0.0173f;
		tm_qlinear *ql = make_layer(n, k, w, g ? NULL : b, gran, xs);
		tm_qlinear_weights(ql, q, ws);
		ref_s32(m, n, k, xq, q, acc);
		for (int t = 0; t < nisa; t++) {
			tm_ctx ctx = { .isa = isas[t], .pool = NULL };
			const char *kn = tm_qgemm_kernels_name(&ctx);
			memset(got, 0x5a, sizeof(int32_t) * m * n);
			tm_qgemm_s32(&ctx, ql, m, xq, got);
			for (size_t i = 0; i < (size_t)m * n; i++)
				if (got[i] != acc[i])
					ck_abort_msg("%s m=%d n=%d k=%d mode %d: acc[%zu] = %d, want %d",
						     kn, m, n, k, mode, i, got[i], acc[i]);
			for (int relu = 0; relu < 2; relu++) {
				ref_dequant(m, n, acc, xs, ws, g ? NULL : b, relu, yref);
				tm_qlinear_forward_q(&ctx, ql, m, xq, xs,
						     relu ? TM_ACT_RELU : TM_ACT_NONE, y);
				ck_assert_msg(same_bits(y, yref, sizeof(float) * m * n),
					      "%s m=%d n=%d k=%d relu %d: float outputs differ", kn,
					      m, n, k, relu);
			}
		}
		tm_qlinear_free(ql);
	}
	free(w);
	free(b);
	free(xq);
	free(xf);
	free(q);
	free(ws);
	free(acc);
	free(got);
	free(yref);
	free(y);
}

START_TEST(test_kernels_odd_shapes)
{
	static const int sizes[] = { 1, 3, 17, 63, 65, 129 };
	uint64_t seed = 100;
	for (int a = 0; a < 6; a++)
		for (int c = 0; c < 6; c++)
			for (int d = 0; d < 6; d++)
				if (!TT_SLOW_BUILD || (a + c + d) % 3 == 0)
					check_case(sizes[a], sizes[c], sizes[d], seed++, 0);
}
END_TEST

START_TEST(test_kernels_event_shapes)
{
	static const int layers[][2] = {
		{ 128, 784 }, { 64, 128 }, { 10, 64 }, { 10, 1600 },
		{ 384, 128 }, { 512, 128 }, { 128, 512 },
	};
	static const int ms[] = { 1, 2, 7, 64 };
	int nm = TT_SLOW_BUILD ? 3 : 4;
	for (size_t l = 0; l < sizeof(layers) / sizeof(layers[0]); l++)
		for (int i = 0; i < nm; i++)
			check_case(ms[i], layers[l][0], layers[l][1], 200 + l * 10 + i, 0);
}
END_TEST

START_TEST(test_kernels_saturation)
{
	/* Pairs of products reach 2 * 128 * 127 = 32512 in magnitude, the most a 16-bit lane of
	 * vpmaddubsw sees with the sign trick; u8 + 128 would need 2 * 255 * 127. */
	check_case(5, 33, 64, 1, 1);
	check_case(17, 16, 1600, 2, 1);
	check_case(1, 128, 784, 3, 1);
	check_case(64, 64, 129, 4, 1);
	/* the largest k: every accumulator near the int32 bound */
	int k = TT_SLOW_BUILD ? 4099 : 65536, n = 3;
	float *w = xalloc(sizeof(float) * n * k);
	int8_t *xq = xalloc((size_t)k);
	for (int i = 0; i < n * k; i++)
		w[i] = i < k ? 1.0f : i < 2 * k ? -1.0f : (i % 2 ? 1.0f : -1.0f);
	memset(xq, 0x80, (size_t)k);  /* -128 everywhere */
	tm_qlinear *ql = make_layer(n, k, w, NULL, TM_QGRAN_CHANNEL, 1.0f);
	tm_isa isas[3];
	int nisa = isas_get(isas);
	for (int t = 0; t < nisa; t++) {
		tm_ctx ctx = { .isa = isas[t] };
		int32_t acc[3];
		tm_qgemm_s32(&ctx, ql, 1, xq, acc);
		ck_assert_int_eq(acc[0], -128 * 127 * k);
		ck_assert_int_eq(acc[1], 128 * 127 * k);
		ck_assert_int_eq(acc[2], k % 2 ? 128 * 127 : 0);  /* one more -127 when k is odd */
	}
	tm_qlinear_free(ql);
	free(w);
	free(xq);
}
END_TEST

// ---- the layer as a whole ----

/* Float input: equals quantize-then-reference, bit for bit, on every kernel set; and stays
 * within the quantization error bound of the FP32 layer. */
START_TEST(test_forward_vs_fp32)
{
	tm_isa isas[3];
	int nisa = isas_get(isas);
	static const int shapes[][3] = { { 1, 128, 784 }, { 9, 64, 128 }, { 33, 10, 1600 },
					 { 4, 17, 3 }, { 65, 129, 63 } };
	for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
		int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
		float *x = rnd((size_t)m * k, 40 + s), *w = rnd((size_t)n * k, 50 + s);
		float *b = rnd((size_t)n, 60 + s);
		for (size_t i = 0; i < (size_t)m * k; i++)
			x[i] *= 2.5f;
		tm_qcalib *cal = NULL;
		tm_err err;
		ck_assert_int_eq(tm_qcalib_new(TM_QCALIB_MINMAX, 0, &cal, &err), 0);
		tm_qcalib_add(cal, (size_t)m * k, x);
		float xs = tm_qcalib_scale(cal);
		tm_qcalib_free(cal);
		tm_qlinear *ql = make_layer(n, k, w, b, TM_QGRAN_CHANNEL, xs);
		ck_assert_float_eq(tm_qlinear_x_scale(ql), xs);
		ck_assert_int_eq(tm_qlinear_n(ql), n);
		ck_assert_int_eq(tm_qlinear_k(ql), k);
		int8_t *xq = xalloc((size_t)m * k), *q = xalloc((size_t)n * k);
		float *ws = xalloc(sizeof(float) * n);
		int32_t *acc = xalloc(sizeof(int32_t) * m * n);
		float *yref = xalloc(sizeof(float) * m * n), *y = xalloc(sizeof(float) * m * n);
		float *yf = xalloc(sizeof(float) * m * n);
		tm_quantize_act((size_t)m * k, x, xs, xq);
		tm_qlinear_weights(ql, q, ws);
		ref_s32(m, n, k, xq, q, acc);
		ref_dequant(m, n, acc, xs, ws, b, false, yref);
		tm_linear(NULL, m, n, k, x, w, b, TM_ACT_NONE, yf);
		for (int t = 0; t < nisa; t++) {
			tm_ctx ctx = { .isa = isas[t] };
			tm_qlinear_forward(&ctx, ql, m, x, TM_ACT_NONE, y);
			ck_assert_msg(same_bits(y, yref, sizeof(float) * m * n),
				      "%s (%d, %d, %d): float-input forward differs from reference",
				      tm_qgemm_kernels_name(&ctx), m, n, k);
		}
		/* |x w - x^ w^| <= |x| dw + |w| dx + dx dw, dx <= xs / 2, dw <= ws / 2 */
		for (int i = 0; i < m; i++)
			for (int j = 0; j < n; j++) {
				double bound = 0;
				for (int p = 0; p < k; p++)
					bound += fabs(x[(size_t)i * k + p]) * ws[j] / 2 +
						 fabs(w[(size_t)j * k + p]) * xs / 2 + xs * ws[j] / 4;
				double d = fabs((double)yref[(size_t)i * n + j] - yf[(size_t)i * n + j]);
				ck_assert_msg(d <= bound * 1.001 + 1e-5,
					      "(%d, %d, %d) y[%d][%d]: |int8 - fp32| = %g > bound %g", m,
					      n, k, i, j, d, bound);
			}
		/* and the typical error is far below the worst-case bound: about 1% in norm */
		double e2 = 0, y2 = 0;
		for (size_t i = 0; i < (size_t)m * n; i++) {
			e2 += ((double)yref[i] - yf[i]) * ((double)yref[i] - yf[i]);
			y2 += (double)yf[i] * yf[i];
		}
		ck_assert_msg(e2 < 0.03 * 0.03 * y2, "(%d, %d, %d): relative error %g in norm", m, n,
			      k, sqrt(e2 / y2));
		tm_qlinear_free(ql);
		free(x);
		free(w);
		free(b);
		free(xq);
		free(q);
		free(ws);
		free(acc);
		free(yref);
		free(y);
		free(yf);
	}
}
END_TEST

START_TEST(test_forward_q8_and_gelu)
{
	tm_isa isas[3];
	int nisa = isas_get(isas);
	int m = 7, n = 40, k = 70;
	float *x = rnd((size_t)m * k, 71), *w = rnd((size_t)n * k, 72), *b = rnd((size_t)n, 73);
	tm_qlinear *ql = make_layer(n, k, w, b, TM_QGRAN_CHANNEL, 1.0f / 127);
	int8_t *xq = xalloc((size_t)m * k), *yq = xalloc((size_t)m * n), *want = xalloc((size_t)m * n);
	float *y = xalloc(sizeof(float) * m * n), *yg = xalloc(sizeof(float) * m * n);
	tm_quantize_act((size_t)m * k, x, 1.0f / 127, xq);
	float ys = 0.05f;
	for (int t = 0; t < nisa; t++) {
		tm_ctx ctx = { .isa = isas[t] };
		for (int relu = 0; relu < 2; relu++) {
			tm_act act = relu ? TM_ACT_RELU : TM_ACT_NONE;
			tm_qlinear_forward_q(&ctx, ql, m, xq, 1.0f / 127, act, y);
			tm_quantize_act((size_t)m * n, y, ys, want);
			tm_qlinear_forward_q8(&ctx, ql, m, xq, 1.0f / 127, act, ys, yq);
			ck_assert_msg(same_bits(yq, want, (size_t)m * n), "%s relu %d: int8 output",
				      tm_qgemm_kernels_name(&ctx), relu);
		}
		tm_qlinear_forward(&ctx, ql, m, x, TM_ACT_NONE, y);
		tm_gelu_forward_ctx(&ctx, (size_t)m * n, y, y);
		tm_qlinear_forward(&ctx, ql, m, x, TM_ACT_GELU, yg);
		ck_assert(same_bits(y, yg, sizeof(float) * m * n));
		tm_qlinear_forward_q(&ctx, ql, m, xq, 1.0f / 127, TM_ACT_GELU, y);
		tm_quantize_act((size_t)m * n, y, ys, want);
		tm_qlinear_forward_q8(&ctx, ql, m, xq, 1.0f / 127, TM_ACT_GELU, ys, yq);
		ck_assert_msg(same_bits(yq, want, (size_t)m * n), "%s gelu: int8 output",
			      tm_qgemm_kernels_name(&ctx));
	}
	tm_qlinear_free(ql);
	free(x);
	free(w);
	free(b);
	free(xq);
	free(yq);
	free(want);
	free(y);
	free(yg);
}
END_TEST

/* One int8 conv3x3 case on every kernel set: bit-identical to a direct int8 convolution with
 * the documented epilogue, and close to the FP32 convolution. */
static void check_conv(int n, int cin, int h, int w, int cout, uint64_t seed)
{
	tm_isa isas[3];
	int nisa = isas_get(isas);
	int oh = h - 2, ow = w - 2, k = cin * 9;
	float *x = rnd((size_t)n * cin * h * w, seed), *wt = rnd((size_t)cout * k, seed + 1);
	float *b = rnd((size_t)cout, seed + 2);
	for (size_t i = 0; i < (size_t)n * cin * h * w; i++)
		x[i] = 0.5f * (x[i] + 1.0f);  /* image-like: [0, 1) */
	float xs = 1.0f / 127;
	tm_qlinear *ql = make_layer(cout, k, wt, b, TM_QGRAN_CHANNEL, xs);
	int8_t *xq = xalloc((size_t)n * cin * h * w), *q = xalloc((size_t)cout * k);
	float *ws = xalloc(sizeof(float) * cout);
	size_t ylen = (size_t)n * cout * oh * ow;
	float *yref = xalloc(sizeof(float) * ylen), *y = xalloc(sizeof(float) * ylen);
	float *yf = xalloc(sizeof(float) * ylen);
	tm_quantize_act((size_t)n * cin * h * w, x, xs, xq);
	tm_qlinear_weights(ql, q, ws);
	for (int i = 0; i < n; i++)
		for (int co = 0; co < cout; co++)
			for (int oy = 0; oy < oh; oy++)
				for (int ox = 0; ox < ow; ox++) {
					int32_t acc = 0;
					for (int ci = 0; ci < cin; ci++)
						for (int t = 0; t < 9; t++)
							acc += xq[(((size_t)i * cin + ci) * h + oy +
								   t / 3) * w + ox + t % 3] *
							       q[(size_t)co * k + ci * 9 + t];
					float v = (float)acc * (xs * ws[co]) + b[co];
					yref[(((size_t)i * cout + co) * oh + oy) * ow + ox] =
						v > 0 ? v : 0;
				}
	void *scratch = xalloc(tm_qconv3x3_scratch_bytes(cin, h, w, cout));
	for (int t = 0; t < nisa; t++) {
		tm_ctx ctx = { .isa = isas[t] };
		tm_qconv3x3_forward(&ctx, ql, n, cin, h, w, x, TM_ACT_RELU, y, scratch);
		ck_assert_msg(same_bits(y, yref, sizeof(float) * ylen),
			      "%s (%d, %d, %d, %d, %d): int8 conv differs",
			      tm_qgemm_kernels_name(&ctx), n, cin, h, w, cout);
	}
	float *fscratch = xalloc(sizeof(float) * tm_conv3x3_scratch_floats(cin, h, w));
	tm_conv3x3_forward(NULL, n, cin, h, w, cout, x, wt, b, TM_ACT_RELU, yf, fscratch);
	double e2 = 0, y2 = 0;
	for (size_t i = 0; i < ylen; i++) {
		e2 += ((double)y[i] - yf[i]) * ((double)y[i] - yf[i]);
		y2 += (double)yf[i] * yf[i];
	}
	ck_assert_msg(e2 < 0.03 * 0.03 * y2, "int8 conv vs fp32: relative error %g in norm",
		      sqrt(e2 / y2));
	tm_qlinear_free(ql);
	free(x);
	free(wt);
	free(b);
	free(xq);
	free(q);
	free(ws);
	free(yref);
	free(y);
	free(yf);
	free(scratch);
	free(fscratch);
}

START_TEST(test_conv3x3)
{
	check_conv(2, 3, 9, 7, 20, 81);     /* odd sizes, k = 27 (padded to 28) */
	check_conv(2, 1, 28, 28, 32, 84);   /* the CNN's conv1 */
	check_conv(1, 32, 13, 13, 64, 87);  /* the CNN's conv2 */
}
END_TEST

// ---- threads ----

START_TEST(test_threads_bit_identical)
{
	tm_isa isas[3];
	int nisa = isas_get(isas);
	static const int shapes[][3] = { { 64, 128, 784 }, { 1, 512, 2048 }, { 300, 16, 512 },
					 { 129, 65, 255 } };
	tm_pool *pools[3] = { NULL, tm_pool_new(2), tm_pool_new(3) };
	for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
		int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
		float *x = rnd((size_t)m * k, 90 + s), *w = rnd((size_t)n * k, 95 + s);
		float *b = rnd((size_t)n, 99 + s);
		tm_qlinear *ql = make_layer(n, k, w, b, TM_QGRAN_CHANNEL, 1.0f / 127);
		float *y0 = xalloc(sizeof(float) * m * n), *y = xalloc(sizeof(float) * m * n);
		for (int t = 0; t < nisa; t++)
			for (int p = 0; p < 3; p++) {
				tm_ctx ctx = { .isa = isas[t], .pool = pools[p] };
				tm_qlinear_forward(&ctx, ql, m, x, TM_ACT_RELU, p ? y : y0);
				if (p)
					ck_assert_msg(same_bits(y, y0, sizeof(float) * m * n),
						      "%s (%d, %d, %d): %d threads differ",
						      tm_qgemm_kernels_name(&ctx), m, n, k, p + 1);
			}
		tm_qlinear_free(ql);
		free(x);
		free(w);
		free(b);
		free(y0);
		free(y);
	}
	tm_pool_free(pools[1]);
	tm_pool_free(pools[2]);
}
END_TEST

// ---- storage and errors ----

START_TEST(test_stored_bytes)
{
	float *w = rnd(512 * 784, 7), *b = rnd(512, 8);
	/* no padding: int8 weights n*k, then float scales, int32 corrections, float biases */
	tm_qlinear *ql = make_layer(128, 784, w, b, TM_QGRAN_CHANNEL, 0.01f);
	ck_assert_uint_eq(tm_qlinear_bytes(ql), 128 * 784 + 4 * 128 + 4 * 128 + 4 * 128);
	tm_qlinear_free(ql);
	ql = make_layer(128, 784, w, NULL, TM_QGRAN_CHANNEL, 0.01f);
	ck_assert_uint_eq(tm_qlinear_bytes(ql), 128 * 784 + 4 * 128 + 4 * 128);
	tm_qlinear_free(ql);
	/* n rounded up to 16 and k to 4 in the packed weights, each piece to 64 bytes */
	ql = make_layer(10, 63, w, b, TM_QGRAN_TENSOR, 0.01f);
	ck_assert_uint_eq(tm_qlinear_bytes(ql), 16 * 64 + 64 + 64 + 64);
	tm_qlinear_free(ql);
	/* a quarter of the FP32 weight bytes, plus the per-channel vectors */
	ql = make_layer(512, 128, w, b, TM_QGRAN_CHANNEL, 0.01f);
	ck_assert_uint_eq(tm_qlinear_bytes(ql), 512 * 128 + 3 * 4 * 512);
	ck_assert(tm_qlinear_bytes(ql) * 3 < 512 * 128 * sizeof(float));
	tm_qlinear_free(ql);
	tm_qlinear_free(NULL);
	free(w);
	free(b);
}
END_TEST

START_TEST(test_errors)
{
	float w[8] = { 1, 2, 3, 4, 5, 6, 7, 8 }, b[2] = { 0, NAN };
	tm_qlinear *ql = (tm_qlinear *)1;
	tm_err err;
	ck_assert_int_eq(tm_qlinear_new(0, 4, w, NULL, TM_QGRAN_CHANNEL, 1.0f, &ql, &err),
			 TM_EINVAL);
	ck_assert_ptr_null(ql);
	ck_assert_ptr_nonnull(strstr(err.msg, "qlinear"));
	ck_assert_int_eq(tm_qlinear_new(1, 65537, w, NULL, TM_QGRAN_CHANNEL, 1.0f, &ql, &err),
			 TM_EINVAL);
	ck_assert_int_eq(tm_qlinear_new(2, 4, w, NULL, TM_QGRAN_CHANNEL, 0.0f, &ql, &err),
			 TM_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "scale"));
	ck_assert_int_eq(tm_qlinear_new(2, 4, w, NULL, TM_QGRAN_CHANNEL, NAN, &ql, &err),
			 TM_EINVAL);
	ck_assert_int_eq(tm_qlinear_new(2, 4, w, b, TM_QGRAN_CHANNEL, 1.0f, &ql, &err),
			 TM_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "bias"));
	w[5] = INFINITY;
	ck_assert_int_eq(tm_qlinear_new(2, 4, w, NULL, TM_QGRAN_CHANNEL, 1.0f, &ql, &err),
			 TM_EINVAL);
	ck_assert_ptr_null(ql);
	/* m = 0 does nothing */
	w[5] = 6;
	ql = make_layer(2, 4, w, NULL, TM_QGRAN_CHANNEL, 1.0f);
	float y = 42;
	tm_qlinear_forward(NULL, ql, 0, w, TM_ACT_NONE, &y);
	ck_assert_float_eq(y, 42);
	tm_qlinear_free(ql);
}
END_TEST

Suite *qgemm_suite(void)
{
	Suite *s = suite_create("qgemm");
	TCase *tq = tcase_create("quantize");
	tcase_add_test(tq, test_weights_half_step);
	tcase_add_test(tq, test_weights_extremes);
	tcase_add_test(tq, test_act_rounding);
	tcase_add_test(tq, test_calib_minmax);
	tcase_add_test(tq, test_calib_percentile);
	suite_add_tcase(s, tq);
	TCase *tk = tcase_create("kernels");
	tcase_set_timeout(tk, 120);
	tcase_add_test(tk, test_kernels_odd_shapes);
	tcase_add_test(tk, test_kernels_event_shapes);
	tcase_add_test(tk, test_kernels_saturation);
	suite_add_tcase(s, tk);
	TCase *tl = tcase_create("layer");
	tcase_set_timeout(tl, 120);
	tcase_add_test(tl, test_forward_vs_fp32);
	tcase_add_test(tl, test_forward_q8_and_gelu);
	tcase_add_test(tl, test_conv3x3);
	tcase_add_test(tl, test_threads_bit_identical);
	tcase_add_test(tl, test_stored_bytes);
	tcase_add_test(tl, test_errors);
	suite_add_tcase(s, tl);
	return s;
}
