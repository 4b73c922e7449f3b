/* test_ops.c: Check suite of engine/ops.c.  Every forward op is compared with a plain
 * double-precision reference written here (direct 6-loop convolution, explicit attention
 * loops, ...); every backward passes a central-difference gradient check of the scalar loss
 * L = sum(y * r) with a fixed random r; parameter gradients must accumulate and input gradients
 * be overwritten; the segment mask must equal running each segment alone; ops that use the
 * pool must give bit-identical results with no pool, 2 and 3 threads; SIMD paths must match
 * the portable one on odd sizes. */
#include "tests.h"
#include "engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// ---- helpers ----

static float *fvec(size_t n, uint64_t seed)
{
	float *v = malloc(sizeof(float) * (n ? n : 1));
	ck_assert_ptr_nonnull(v);
	if (seed)
		tt_fill_random(v, n, seed);
	else
		memset(v, 0, sizeof(float) * (n ? n : 1));
	return v;
}

static double gelu_ref(double x)
{
	return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

/* |got - want| <= abs_tol + rel_tol * |want| for every element, with a message naming i. */
static void check_close(const char *what, const float *got, const double *want, size_t n,
			double abs_tol, double rel_tol)
{
	for (size_t i = 0; i < n; i++) {
		double err = fabs((double)got[i] - want[i]);
		if (!(err <= abs_tol + rel_tol * fabs(want[i])))
			ck_abort_msg("%s[%zu]: got %.9g want %.9g", what, i, (double)got[i], want[i]);
	}
}

static tm_ctx ctx_portable(void)
{
	tm_ctx c = { .isa = TM_ISA_PORTABLE, .pool = NULL };
	return c;
}

// ---- forward: convolution ----

static void conv_ref(int n, int cin, int h, int w, int cout, const float *x, const float *wt,
		     const float *b, tm_act act, double *y)
{
	int oh = h - 2, ow = w - 2;
	for (int i = 0; i < n; i++)
		for (int co = 0; co < cout; co++)
			for (int oy = 0; oy < oh; oy++)
				for (int ox = 0; ox < ow; ox++) {
					double s = b ? b[co] : 0.0;
					for (int ci = 0; ci < cin; ci++)
						for (int ky = 0; ky < 3; ky++)
							for (int kx = 0; kx < 3; kx++)
								s += (double)x[(((size_t)i * cin + ci) * h + oy + ky) * w + ox + kx] *
								     wt[(((size_t)co * cin + ci) * 3 + ky) * 3 + kx];
					if (act == TM_ACT_RELU)
						s = s > 0 ? s : 0;
					else if (act == TM_ACT_GELU)
						s = gelu_ref(s);
					y[(((size_t)i * cout + co) * oh + oy) * ow + ox] = s;
				}
}

START_TEST(test_conv_forward_matches_direct)
{
	static const int shapes[][5] = { /* n, cin, h, w, cout */
		{ 2, 3, 6, 6, 4 }, { 1, 1, 3, 3, 1 }, { 3, 2, 7, 5, 17 }, { 2, 5, 9, 11, 33 },
		{ 1, 1, 28, 28, 32 }, { 2, 32, 13, 13, 64 },
	};
	tm_ctx ctx = ctx_portable();
	for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++)
		for (int act = TM_ACT_NONE; act <= TM_ACT_GELU; act++) {
			int n = shapes[s][0], cin = shapes[s][1], h = shapes[s][2], w = shapes[s][3];
			int cout = shapes[s][4];
			size_t ny = (size_t)n * cout * (h - 2) * (w - 2);
			float *x = fvec((size_t)n * cin * h * w, 1 + s);
			float *wt = fvec((size_t)cout * cin * 9, 2 + s);
			float *b = fvec((size_t)cout, 3 + s);
			float *y = fvec(ny, 0);
			float *scratch = fvec(tm_conv3x3_scratch_floats(cin, h, w), 0);
			double *ref = malloc(sizeof(double) * ny);
			const float *bias = act == TM_ACT_RELU ? NULL : b; /* also cover b == NULL */
			tm_conv3x3_forward(&ctx, n, cin, h, w, cout, x, wt, bias, (tm_act)act, y, scratch);
			conv_ref(n, cin, h, w, cout, x, wt, bias, (tm_act)act, ref);
			check_close("conv y", y, ref, ny, 1e-5, 1e-4);
			free(x), free(wt), free(b), free(y), free(scratch), free(ref);
		}
	ck_assert_uint_eq(tm_conv3x3_scratch_floats(3, 6, 5), 3 * 9 * 4 * 3);
}
END_TEST

// ---- forward: pooling, activations, normalisation ----

START_TEST(test_maxpool_known_values)
{
	/* one 4x5 plane (odd width: the last column is dropped) and one 2x2 plane of a second
	 * channel; ties keep the first element of the window in row-major order. */
	const float x[] = {
		1, 5, 2, 0, 9,
		3, 4, 8, 7, 9,
		-1, -2, 6, 6, 9,
		-3, -4, 6, 1, 9,
	};
	float y[4];
	int32_t idx[4];
	tm_maxpool2_forward(1, 1, 4, 5, x, y, idx);
	const float want[] = { 5, 8, -1, 6 };
	const int32_t want_idx[] = { 1, 7, 10, 12 };
	for (int i = 0; i < 4; i++) {
		ck_assert_float_eq(y[i], want[i]);
		ck_assert_int_eq(idx[i], want_idx[i]);
	}
	const float x2[] = { 1, 2, 3, 4, -4, -3, -2, -1 };
	float y2[2];
	tm_maxpool2_forward(1, 2, 2, 2, x2, y2, NULL);
	ck_assert_float_eq(y2[0], 4);
	ck_assert_float_eq(y2[1], -1);
}
END_TEST

START_TEST(test_relu_gelu_forward)
{
	size_t n = 1000;
	float *x = fvec(n, 7), *y = fvec(n, 0);
	double *ref = malloc(sizeof(double) * n);
	for (size_t i = 0; i < n; i++)
		x[i] *= 6.0f; /* [-6, 6): both GELU tails */
	tm_relu_forward(n, x, y);
	for (size_t i = 0; i < n; i++)
		ref[i] = x[i] > 0 ? x[i] : 0;
	check_close("relu", y, ref, n, 0, 0);
	tm_gelu_forward(n, x, y);
	for (size_t i = 0; i < n; i++)
		ref[i] = gelu_ref(x[i]);
	check_close("gelu", y, ref, n, 1e-6, 1e-5);
	free(x), free(y), free(ref);
}
END_TEST

START_TEST(test_layernorm_forward)
{
	static const int shapes[][2] = { { 3, 7 }, { 1, 1 }, { 5, 128 }, { 2, 129 } };
	for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
		int rows = shapes[s][0], d = shapes[s][1];
		size_t nx = (size_t)rows * d;
		float *x = fvec(nx, 11 + s), *g = fvec((size_t)d, 12 + s), *b = fvec((size_t)d, 13 + s);
		float *y = fvec(nx, 0), *mean = fvec((size_t)rows, 0), *rstd = fvec((size_t)rows, 0);
		double *ref = malloc(sizeof(double) * nx);
		for (size_t i = 0; i < nx; i++)
			x[i] = 3.0f * x[i] + 2.0f; /* an offset mean */
		tm_layernorm_forward(rows, d, x, g, b, y, mean, rstd);
		for (int r = 0; r < rows; r++) {
			double mu = 0, var = 0;
			for (int j = 0; j < d; j++)
				mu += x[(size_t)r * d + j];
			mu /= d;
			for (int j = 0; j < d; j++)
				var += (x[(size_t)r * d + j] - mu) * (x[(size_t)r * d + j] - mu);
			var /= d;
			double rs = 1.0 / sqrt(var + 1e-5);
			ck_assert_double_eq_tol(mean[r], mu, 1e-5);
			ck_assert_double_eq_tol(rstd[r], rs, 1e-4 * rs);
			for (int j = 0; j < d; j++)
				ref[(size_t)r * d + j] = (x[(size_t)r * d + j] - mu) * rs * g[j] + b[j];
		}
		check_close("layernorm", y, ref, nx, 1e-5, 1e-4);
		/* mean and rstd may be NULL at inference */
		float *y2 = fvec(nx, 0);
		tm_layernorm_forward(rows, d, x, g, b, y2, NULL, NULL);
		ck_assert_mem_eq(y, y2, sizeof(float) * nx);
		free(x), free(g), free(b), free(y), free(y2), free(mean), free(rstd), free(ref);
	}
}
END_TEST

START_TEST(test_softmax_forward)
{
	static const int shapes[][2] = { { 4, 10 }, { 1, 1 }, { 3, 17 }, { 2, 129 } };
	for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
		int rows = shapes[s][0], d = shapes[s][1];
		size_t nx = (size_t)rows * d;
		float *x = fvec(nx, 21 + s), *y = fvec(nx, 0);
		double *ref = malloc(sizeof(double) * nx);
		for (size_t i = 0; i < nx; i++)
			x[i] = 40.0f * x[i] + 60.0f; /* expf would overflow without the max shift */
		for (int r = 0; r < rows; r++) {
			double mx = -INFINITY, sum = 0;
			for (int j = 0; j < d; j++)
				mx = fmax(mx, x[(size_t)r * d + j]);
			for (int j = 0; j < d; j++)
				sum += exp(x[(size_t)r * d + j] - mx);
			for (int j = 0; j < d; j++)
				ref[(size_t)r * d + j] = exp(x[(size_t)r * d + j] - mx) / sum;
		}
		tm_softmax_forward(rows, d, x, y);
		check_close("softmax", y, ref, nx, 1e-7, 1e-5);
		for (int r = 0; r < rows; r++) {
			double sum = 0;
			for (int j = 0; j < d; j++)
				sum += y[(size_t)r * d + j];
			ck_assert_double_eq_tol(sum, 1.0, 1e-5);
		}
		tm_softmax_forward(rows, d, x, x); /* in place */
		ck_assert_mem_eq(x, y, sizeof(float) * nx);
		free(x), free(y), free(ref);
	}
}
END_TEST

START_TEST(test_embedding_forward)
{
	int n = 6, d = 5, vocab = 4, ctxlen = 8;
	const int32_t tok[] = { 3, 0, 0, 2, 1, 3 };
	const int32_t pos[] = { 0, 1, 2, 0, 1, 7 };
	float *wte = fvec((size_t)vocab * d, 31), *wpe = fvec((size_t)ctxlen * d, 32);
	float *out = fvec((size_t)n * d, 0);
	tm_embedding_forward(n, d, tok, pos, wte, wpe, out);
	for (int t = 0; t < n; t++)
		for (int j = 0; j < d; j++)
			ck_assert_float_eq(out[t * d + j], wte[tok[t] * d + j] + wpe[pos[t] * d + j]);
	free(wte), free(wpe), free(out);
}
END_TEST

// ---- forward: attention ----

static void attention_ref(int b, int t, int d, int n_head, const float *qkv, const int32_t *seg,
			  double *att, double *out)
{
	int hd = d / n_head;
	double scale = 1.0 / sqrt((double)hd);
	double *s = malloc(sizeof(double) * (size_t)t);
	for (int bi = 0; bi < b; bi++)
		for (int h = 0; h < n_head; h++)
			for (int i = 0; i < t; i++) {
				const float *q = qkv + ((size_t)bi * t + i) * 3 * d + h * hd;
				double mx = -INFINITY, sum = 0;
				for (int j = 0; j < t; j++) {
					bool ok = j <= i && (!seg || seg[bi * t + j] == seg[bi * t + i]);
					s[j] = -INFINITY;
					if (!ok)
						continue;
					const float *k = qkv + ((size_t)bi * t + j) * 3 * d + d + h * hd;
					double dot = 0;
					for (int c = 0; c < hd; c++)
						dot += (double)q[c] * k[c];
					s[j] = dot * scale;
					mx = fmax(mx, s[j]);
				}
				for (int j = 0; j < t; j++)
					sum += s[j] == -INFINITY ? 0 : exp(s[j] - mx);
				double *o = out + ((size_t)bi * t + i) * d + h * hd;
				for (int c = 0; c < hd; c++)
					o[c] = 0;
				for (int j = 0; j < t; j++) {
					double p = s[j] == -INFINITY ? 0 : exp(s[j] - mx) / sum;
					if (att)
						att[(((size_t)bi * n_head + h) * t + i) * t + j] = p;
					const float *v = qkv + ((size_t)bi * t + j) * 3 * d + 2 * d + h * hd;
					for (int c = 0; c < hd; c++)
						o[c] += p * v[c];
				}
			}
	free(s);
}

START_TEST(test_attention_forward_matches_loops)
{
	static const int shapes[][4] = { /* b, t, d, n_head */
		{ 2, 5, 8, 2 }, { 1, 1, 4, 1 }, { 3, 17, 12, 3 }, { 1, 65, 32, 4 }, { 2, 128, 128, 8 },
	};
	tm_ctx ctx = ctx_portable();
	for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++)
		for (int masked = 0; masked < 2; masked++) {
			int b = shapes[s][0], t = shapes[s][1], d = shapes[s][2], nh = shapes[s][3];
			size_t nqkv = (size_t)b * t * 3 * d, nout = (size_t)b * t * d;
			size_t natt = (size_t)b * nh * t * t;
			float *qkv = fvec(nqkv, 41 + s), *att = fvec(natt, 0), *out = fvec(nout, 0);
			double *ratt = malloc(sizeof(double) * natt), *rout = malloc(sizeof(double) * nout);
			for (size_t i = 0; i < nqkv; i++)
				qkv[i] *= 3.0f; /* peaky attention */
			int32_t *seg = malloc(sizeof(int32_t) * (size_t)b * t);
			for (int i = 0; i < b * t; i++)
				seg[i] = (i % t) / 3 + (i / t); /* segments of 3, ids differ per row */
			const int32_t *sg = masked ? seg : NULL;
			tm_attention_forward(&ctx, b, t, d, nh, qkv, sg, att, out);
			attention_ref(b, t, d, nh, qkv, sg, ratt, rout);
			check_close("attention out", out, rout, nout, 1e-5, 1e-4);
			check_close("attention att", att, ratt, natt, 1e-6, 1e-4);
			for (size_t i = 0; i < natt; i++)
				if (ratt[i] == 0)
					ck_assert_msg(att[i] == 0.0f, "masked att[%zu] = %g", i, (double)att[i]);
			free(qkv), free(att), free(out), free(ratt), free(rout), free(seg);
		}
}
END_TEST

START_TEST(test_attention_segments_equal_separate_runs)
{
	/* one packed row of 9 positions holding segments of 2, 4 and 3 */
	int t = 9, d = 12, nh = 3;
	const int32_t seg[] = { 5, 5, 1, 1, 1, 1, 7, 7, 7 };
	const int starts[] = { 0, 2, 6, 9 };
	tm_ctx ctx = ctx_portable();
	float *qkv = fvec((size_t)t * 3 * d, 51), *out = fvec((size_t)t * d, 0);
	float *att = fvec((size_t)nh * t * t, 0);
	tm_attention_forward(&ctx, 1, t, d, nh, qkv, seg, att, out);
	for (int sgi = 0; sgi < 3; sgi++) {
		int lo = starts[sgi], len = starts[sgi + 1] - lo;
		float *o1 = fvec((size_t)len * d, 0), *a1 = fvec((size_t)nh * len * len, 0);
		tm_attention_forward(&ctx, 1, len, d, nh, qkv + (size_t)lo * 3 * d, NULL, a1, o1);
		double diff = tt_max_rel_diff(out + (size_t)lo * d, o1, (size_t)len * d);
		ck_assert_msg(diff < 1e-6, "segment %d differs by %g", sgi, diff);
		free(o1), free(a1);
	}
	free(qkv), free(out), free(att);
}
END_TEST

// ---- forward: cross-entropy ----

START_TEST(test_cross_entropy_hand_example)
{
	/* row 0: [1, 2, 3] target 2; row 1: [1, 3, 1] target 0 (wrong argmax); row 2 ignored */
	const float logits[] = { 1, 2, 3, 1, 3, 1, 9, -9, 0 };
	const int32_t targets[] = { 2, 0, -1 };
	float dl[9];
	int correct = -1;
	float loss = tm_cross_entropy(3, 3, logits, targets, dl, &correct);
	/* log(e^1 + e^2 + e^3) - 3 = 0.4076059644, log(2e + e^3) - 1 = 2.2395447662 */
	ck_assert_double_eq_tol(loss, (0.4076059644443806 + 2.2395447662218846) / 2, 1e-6);
	ck_assert_int_eq(correct, 1);
	const double p0[] = { 0.09003057317038046, 0.24472847105479764, 0.6652409557748218 };
	const double p1[] = { 0.10650697891920073, 0.7869860421615984, 0.10650697891920073 };
	const double want[] = {
		p0[0] / 2, p0[1] / 2, (p0[2] - 1) / 2, (p1[0] - 1) / 2, p1[1] / 2, p1[2] / 2, 0, 0, 0,
	};
	check_close("dlogits", dl, want, 9, 1e-7, 1e-6);
	ck_assert_double_eq_tol(tm_cross_entropy(2, 3, logits, targets, NULL, NULL), loss, 1e-7);
	/* all ignored: loss 0, zero gradient, no correct rows */
	const int32_t none[] = { -1, -1, -1 };
	ck_assert_float_eq(tm_cross_entropy(3, 3, logits, none, dl, &correct), 0.0f);
	ck_assert_int_eq(correct, 0);
	for (int i = 0; i < 9; i++)
		ck_assert_float_eq(dl[i], 0.0f);
	/* huge logits: log-sum-exp stays finite */
	const float big[] = { 1000, 0, -1000 };
	const int32_t t1[] = { 1 };
	ck_assert_double_eq_tol(tm_cross_entropy(1, 3, big, t1, dl, NULL), 1000.0, 1e-3);
	ck_assert(isfinite(dl[0]) && isfinite(dl[2]));
}
END_TEST

// ---- threads ----

START_TEST(test_forward_independent_of_threads)
{
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	tm_isa isa = tm_isa_best(&cpu);
	int n = 5, cin = 3, h = 10, w = 9, cout = 20;
	size_t ny = (size_t)n * cout * (h - 2) * (w - 2);
	float *x = fvec((size_t)n * cin * h * w, 61), *wt = fvec((size_t)cout * cin * 9, 62);
	float *b = fvec((size_t)cout, 63), *scratch = fvec(tm_conv3x3_scratch_floats(cin, h, w), 0);
	int ab = 3, at = 33, ad = 24, anh = 4;
	size_t nqkv = (size_t)ab * at * 3 * ad, natt = (size_t)ab * anh * at * at;
	float *qkv = fvec(nqkv, 64);
	int32_t seg[3 * 33];
	for (int i = 0; i < ab * at; i++)
		seg[i] = (i % at) / 7;
	float *y[3], *att[3], *out[3];
	for (int r = 0; r < 3; r++) {
		tm_ctx ctx = { .isa = isa, .pool = r ? tm_pool_new(r + 1) : NULL };
		y[r] = fvec(ny, 0);
		att[r] = fvec(natt, 0);
		out[r] = fvec((size_t)ab * at * ad, 0);
		tm_conv3x3_forward(&ctx, n, cin, h, w, cout, x, wt, b, TM_ACT_GELU, y[r], scratch);
		tm_attention_forward(&ctx, ab, at, ad, anh, qkv, seg, att[r], out[r]);
		tm_pool_free(ctx.pool);
	}
	for (int r = 1; r < 3; r++) {
		ck_assert_mem_eq(y[0], y[r], sizeof(float) * ny);
		ck_assert_mem_eq(att[0], att[r], sizeof(float) * natt);
		ck_assert_mem_eq(out[0], out[r], sizeof(float) * (size_t)ab * at * ad);
	}
	for (int r = 0; r < 3; r++)
		free(y[r]), free(att[r]), free(out[r]);
	free(x), free(wt), free(b), free(scratch), free(qkv);
}
END_TEST

// ---- suite ----

Suite *ops_suite(void)
{
	Suite *s = suite_create("ops");
	TCase *fwd = tcase_create("forward");
	tcase_set_timeout(fwd, 60);
	tcase_add_test(fwd, test_conv_forward_matches_direct);
	tcase_add_test(fwd, test_maxpool_known_values);
	tcase_add_test(fwd, test_relu_gelu_forward);
	tcase_add_test(fwd, test_layernorm_forward);
	tcase_add_test(fwd, test_softmax_forward);
	tcase_add_test(fwd, test_embedding_forward);
	tcase_add_test(fwd, test_attention_forward_matches_loops);
	tcase_add_test(fwd, test_attention_segments_equal_separate_runs);
	tcase_add_test(fwd, test_cross_entropy_hand_example);
	tcase_add_test(fwd, test_forward_independent_of_threads);
	suite_add_tcase(s, fwd);
	return s;
}
