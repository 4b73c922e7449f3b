/* test_ops.c: Check suite of engine/ops.c.  Every forward op is compared with a plain
 * double-precision reference written here (direct 6-loop convolution, explicit attention
 * loops, ...); every backward passes a central-difference gradient check of the scalar loss
 * L = sum(y * r) with a fixed random r; parameter gradients must accumulate and input gradients
 * be overwritten; the segment mask must equal running each segment alone; ops that use the
 * pool must give bit-identical results with no pool, 2 and 3 threads; SIMD paths must match
 * the portable one on odd sizes. */
#include "tests.h"
#include "engine.h"
#include "ops_int.h"

#include <math.h>
#include <stdio.h>
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

/* got[i] is exactly 0 wherever the reference is (masked attention weights). */
static void check_zero_where(const char *what, const float *got, const double *want, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (want[i] == 0 && got[i] != 0.0f)
			ck_abort_msg("%s: masked [%zu] = %g", what, i, (double)got[i]);
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
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	for (int isa = TM_ISA_PORTABLE; isa <= TM_ISA_AVX512; isa++)
	for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++)
		for (int act = TM_ACT_NONE; act <= TM_ACT_GELU; act++) {
			if (!tm_isa_supported(&cpu, (tm_isa)isa))
				continue;
			tm_ctx ctx = { .isa = (tm_isa)isa };
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
			check_zero_where("att", att, ratt, natt);
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

// ---- backward: finite differences ----

/* A forward pass over the current inputs, returning L = sum(y * r) in double. */
typedef double (*loss_fn)(void *arg);

#define GC_H 1e-3f
#define GC_ABS 1e-3
#define GC_REL 1e-2

/* Central differences of f with respect to every element of p against the analytic gradient:
 * |numeric - analytic| <= GC_ABS + GC_REL * |numeric|. */
static void check_grad(const char *what, float *p, const float *grad, size_t n, loss_fn f,
		       void *arg)
{
	for (size_t i = 0; i < n; i++) {
		float save = p[i];
		float hi = save + GC_H, lo = save - GC_H;
		p[i] = hi;
		double lp = f(arg);
		p[i] = lo;
		double lm = f(arg);
		p[i] = save;
		double num = (lp - lm) / ((double)hi - (double)lo);
		double err = fabs(num - grad[i]);
		if (!(err <= GC_ABS + GC_REL * fabs(num)))
			ck_abort_msg("%s[%zu]: numeric %.7g analytic %.7g", what, i, num, (double)grad[i]);
	}
}

static double dot_r(const float *y, const float *r, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += (double)y[i] * r[i];
	return s;
}

typedef struct conv_case {
	tm_ctx ctx;
	int n, cin, h, w, cout;
	float *x, *wt, *b, *y, *r, *scratch;
	size_t nx, nw, ny;
} conv_case;

static void conv_case_init(conv_case *c, int n, int cin, int h, int w, int cout, uint64_t seed)
{
	c->ctx = ctx_portable();
	c->n = n, c->cin = cin, c->h = h, c->w = w, c->cout = cout;
	c->nx = (size_t)n * cin * h * w;
	c->nw = (size_t)cout * cin * 9;
	c->ny = (size_t)n * cout * (h - 2) * (w - 2);
	c->x = fvec(c->nx, seed);
	c->wt = fvec(c->nw, seed + 1);
	c->b = fvec((size_t)cout, seed + 2);
	c->r = fvec(c->ny, seed + 3);
	c->y = fvec(c->ny, 0);
	c->scratch = fvec(tm_conv3x3_scratch_floats(cin, h, w), 0);
}

static void conv_case_free(conv_case *c)
{
	free(c->x), free(c->wt), free(c->b), free(c->r), free(c->y), free(c->scratch);
}

static double conv_loss(void *arg)
{
	conv_case *c = arg;
	tm_conv3x3_forward(&c->ctx, c->n, c->cin, c->h, c->w, c->cout, c->x, c->wt, c->b,
			   TM_ACT_NONE, c->y, c->scratch);
	return dot_r(c->y, c->r, c->ny);
}

START_TEST(test_conv_backward_gradcheck)
{
	conv_case c;
	conv_case_init(&c, 2, 3, 6, 6, 4, 101);
	float *dx = fvec(c.nx, 0), *dw = fvec(c.nw, 0), *db = fvec((size_t)c.cout, 0);
	tm_conv3x3_backward(&c.ctx, c.n, c.cin, c.h, c.w, c.cout, c.x, c.wt, c.r, dx, dw, db,
			    c.scratch);
	check_grad("conv dx", c.x, dx, c.nx, conv_loss, &c);
	check_grad("conv dw", c.wt, dw, c.nw, conv_loss, &c);
	check_grad("conv db", c.b, db, (size_t)c.cout, conv_loss, &c);
	free(dx), free(dw), free(db);
	conv_case_free(&c);
}
END_TEST

/* Larger and odd shapes (several dW blocks) against direct double loops. */
START_TEST(test_conv_backward_matches_direct)
{
	static const int shapes[][5] = { { 3, 5, 7, 9, 40 }, { 1, 1, 3, 3, 1 }, { 2, 32, 13, 13, 64 },
					 { 9, 2, 5, 4, 3 } };
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
		conv_case c;
		conv_case_init(&c, shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3],
			       shapes[s][4], 111 + 10 * s);
		c.ctx.isa = s % 2 ? TM_ISA_PORTABLE : tm_isa_best(&cpu);
		int oh = c.h - 2, ow = c.w - 2;
		float *dx = fvec(c.nx, 0), *dw = fvec(c.nw, 0), *db = fvec((size_t)c.cout, 0);
		double *rdx = calloc(c.nx, sizeof(double)), *rdw = calloc(c.nw, sizeof(double));
		double *rdb = calloc((size_t)c.cout, sizeof(double));
		tm_conv3x3_backward(&c.ctx, c.n, c.cin, c.h, c.w, c.cout, c.x, c.wt, c.r, dx, dw, db,
				    c.scratch);
		for (int i = 0; i < c.n; i++)
			for (int co = 0; co < c.cout; co++)
				for (int oy = 0; oy < oh; oy++)
					for (int ox = 0; ox < ow; ox++) {
						double g = c.r[(((size_t)i * c.cout + co) * oh + oy) * ow + ox];
						rdb[co] += g;
						for (int ci = 0; ci < c.cin; ci++)
							for (int ky = 0; ky < 3; ky++)
								for (int kx = 0; kx < 3; kx++) {
									size_t xi = (((size_t)i * c.cin + ci) * c.h + oy + ky) * c.w + ox + kx;
									size_t wi = (((size_t)co * c.cin + ci) * 3 + ky) * 3 + kx;
									rdw[wi] += g * c.x[xi];
									rdx[xi] += g * c.wt[wi];
								}
					}
		check_close("conv dx", dx, rdx, c.nx, 1e-4, 1e-4);
		check_close("conv dw", dw, rdw, c.nw, 1e-4, 1e-4);
		check_close("conv db", db, rdb, (size_t)c.cout, 1e-4, 1e-4);
		free(dx), free(dw), free(db), free(rdx), free(rdw), free(rdb);
		conv_case_free(&c);
	}
}
END_TEST

START_TEST(test_conv_backward_accumulates)
{
	conv_case c;
	conv_case_init(&c, 2, 3, 6, 5, 20, 121);
	float *dx = fvec(c.nx, 0), *dw = fvec(c.nw, 0), *db = fvec((size_t)c.cout, 0);
	float *dx2 = fvec(c.nx, 0), *dw2 = fvec(c.nw, 0), *db2 = fvec((size_t)c.cout, 0);
	tm_conv3x3_backward(&c.ctx, c.n, c.cin, c.h, c.w, c.cout, c.x, c.wt, c.r, dx, dw, db,
			    c.scratch);
	for (size_t i = 0; i < c.nx; i++)
		dx2[i] = 1e30f; /* garbage: must be overwritten */
	for (size_t i = 0; i < c.nw; i++)
		dw2[i] = 0.5f;
	for (int i = 0; i < c.cout; i++)
		db2[i] = -0.25f;
	for (int round = 0; round < 2; round++)
		tm_conv3x3_backward(&c.ctx, c.n, c.cin, c.h, c.w, c.cout, c.x, c.wt, c.r, dx2, dw2,
				    db2, c.scratch);
	ck_assert_mem_eq(dx, dx2, sizeof(float) * c.nx);
	for (size_t i = 0; i < c.nw; i++)
		ck_assert_float_eq_tol(dw2[i], 0.5f + 2 * dw[i], 1e-5f);
	for (int i = 0; i < c.cout; i++)
		ck_assert_float_eq_tol(db2[i], -0.25f + 2 * db[i], 1e-5f);
	/* dx, dw and db are each optional */
	float *dw3 = fvec(c.nw, 0);
	tm_conv3x3_backward(&c.ctx, c.n, c.cin, c.h, c.w, c.cout, c.x, c.wt, c.r, NULL, dw3, NULL,
			    c.scratch);
	ck_assert_mem_eq(dw, dw3, sizeof(float) * c.nw);
	memset(dx2, 0, sizeof(float) * c.nx);
	tm_conv3x3_backward(&c.ctx, c.n, c.cin, c.h, c.w, c.cout, c.x, c.wt, c.r, dx2, NULL, NULL,
			    c.scratch);
	ck_assert_mem_eq(dx, dx2, sizeof(float) * c.nx);
	free(dx), free(dw), free(db), free(dx2), free(dw2), free(db2), free(dw3);
	conv_case_free(&c);
}
END_TEST

typedef struct pool_case {
	int n, c, h, w;
	float *x, *y, *r;
	size_t nx, ny;
} pool_case;

static double pool_loss(void *arg)
{
	pool_case *p = arg;
	tm_maxpool2_forward(p->n, p->c, p->h, p->w, p->x, p->y, NULL);
	return dot_r(p->y, p->r, p->ny);
}

START_TEST(test_maxpool_backward_gradcheck)
{
	pool_case p = { .n = 2, .c = 3, .h = 5, .w = 6 };
	p.nx = (size_t)p.n * p.c * p.h * p.w;
	p.ny = (size_t)p.n * p.c * (p.h / 2) * (p.w / 2);
	p.x = fvec(p.nx, 0);
	p.y = fvec(p.ny, 0);
	p.r = fvec(p.ny, 131);
	/* distinct values 0.01 apart, in a scrambled order, so h never changes an argmax */
	for (size_t i = 0; i < p.nx; i++)
		p.x[i] = 0.01f * (float)((i * 37) % p.nx) - 1.0f;
	int32_t *idx = malloc(sizeof(int32_t) * p.ny);
	float *dx = fvec(p.nx, 0);
	tm_maxpool2_forward(p.n, p.c, p.h, p.w, p.x, p.y, idx);
	for (size_t i = 0; i < p.nx; i++)
		dx[i] = 1e30f; /* overwritten, including the dropped last row */
	tm_maxpool2_backward(p.n, p.c, p.h, p.w, idx, p.r, dx);
	check_grad("maxpool dx", p.x, dx, p.nx, pool_loss, &p);
	free(p.x), free(p.y), free(p.r), free(idx), free(dx);
}
END_TEST

typedef struct act_case {
	bool gelu;
	size_t n;
	float *x, *y, *r;
} act_case;

static double act_loss(void *arg)
{
	act_case *a = arg;
	if (a->gelu)
		tm_gelu_forward(a->n, a->x, a->y);
	else
		tm_relu_forward(a->n, a->x, a->y);
	return dot_r(a->y, a->r, a->n);
}

START_TEST(test_activation_backward_gradcheck)
{
	for (int g = 0; g < 2; g++) {
		act_case a = { .gelu = g, .n = 200 };
		a.x = fvec(a.n, 141 + g);
		a.y = fvec(a.n, 0);
		a.r = fvec(a.n, 143);
		float *dx = fvec(a.n, 0);
		for (size_t i = 0; i < a.n; i++) {
			a.x[i] *= 4.0f;
			if (fabsf(a.x[i]) < 0.01f) /* ReLU: stay away from the kink */
				a.x[i] = 0.5f;
			dx[i] = 1e30f;
		}
		if (g)
			tm_gelu_backward(a.n, a.x, a.r, dx);
		else
			tm_relu_backward(a.n, a.x, a.r, dx);
		check_grad(g ? "gelu dx" : "relu dx", a.x, dx, a.n, act_loss, &a);
		free(a.x), free(a.y), free(a.r), free(dx);
	}
}
END_TEST

typedef struct ln_case {
	int rows, d;
	float *x, *g, *b, *y, *r, *mean, *rstd;
	size_t nx;
} ln_case;

static double ln_loss(void *arg)
{
	ln_case *l = arg;
	tm_layernorm_forward(l->rows, l->d, l->x, l->g, l->b, l->y, NULL, NULL);
	return dot_r(l->y, l->r, l->nx);
}

START_TEST(test_layernorm_backward_gradcheck)
{
	ln_case l = { .rows = 3, .d = 7 };
	l.nx = (size_t)l.rows * l.d;
	l.x = fvec(l.nx, 151);
	l.g = fvec((size_t)l.d, 152);
	l.b = fvec((size_t)l.d, 153);
	l.r = fvec(l.nx, 154);
	l.y = fvec(l.nx, 0);
	l.mean = fvec((size_t)l.rows, 0);
	l.rstd = fvec((size_t)l.rows, 0);
	for (size_t i = 0; i < l.nx; i++)
		l.x[i] = 2.0f * l.x[i] + 1.0f;
	float *dx = fvec(l.nx, 0), *dg = fvec((size_t)l.d, 0), *dbeta = fvec((size_t)l.d, 0);
	tm_layernorm_forward(l.rows, l.d, l.x, l.g, l.b, l.y, l.mean, l.rstd);
	tm_layernorm_backward(l.rows, l.d, l.x, l.g, l.mean, l.rstd, l.r, dx, dg, dbeta);
	check_grad("layernorm dx", l.x, dx, l.nx, ln_loss, &l);
	check_grad("layernorm dgamma", l.g, dg, (size_t)l.d, ln_loss, &l);
	check_grad("layernorm dbeta", l.b, dbeta, (size_t)l.d, ln_loss, &l);
	/* accumulation: dgamma/dbeta +=, dx overwritten */
	float *dx2 = fvec(l.nx, 0), *dg2 = fvec((size_t)l.d, 0), *db2 = fvec((size_t)l.d, 0);
	for (size_t i = 0; i < l.nx; i++)
		dx2[i] = 1e30f;
	for (int j = 0; j < l.d; j++)
		dg2[j] = 1.0f, db2[j] = -1.0f;
	tm_layernorm_backward(l.rows, l.d, l.x, l.g, l.mean, l.rstd, l.r, dx2, dg2, db2);
	ck_assert_mem_eq(dx, dx2, sizeof(float) * l.nx);
	for (int j = 0; j < l.d; j++) {
		ck_assert_float_eq_tol(dg2[j], 1.0f + dg[j], 1e-6f);
		ck_assert_float_eq_tol(db2[j], -1.0f + dbeta[j], 1e-6f);
	}
	free(l.x), free(l.g), free(l.b), free(l.r), free(l.y), free(l.mean), free(l.rstd);
	free(dx), free(dg), free(dbeta), free(dx2), free(dg2), free(db2);
}
END_TEST

typedef struct emb_case {
	int n, d;
	const int32_t *tok, *pos;
	float *wte, *wpe, *out, *r;
} emb_case;

static double emb_loss(void *arg)
{
	emb_case *e = arg;
	tm_embedding_forward(e->n, e->d, e->tok, e->pos, e->wte, e->wpe, e->out);
	return dot_r(e->out, e->r, (size_t)e->n * e->d);
}

START_TEST(test_embedding_backward_gradcheck)
{
	const int32_t tok[] = { 3, 0, 0, 2, 3, 3 }; /* token 1 unused: its gradient stays */
	const int32_t pos[] = { 0, 1, 2, 0, 1, 2 };
	emb_case e = { .n = 6, .d = 5, .tok = tok, .pos = pos };
	size_t nte = 4 * 5, npe = 3 * 5;
	e.wte = fvec(nte, 161);
	e.wpe = fvec(npe, 162);
	e.r = fvec((size_t)e.n * e.d, 163);
	e.out = fvec((size_t)e.n * e.d, 0);
	float *dte = fvec(nte, 0), *dpe = fvec(npe, 0);
	tm_embedding_backward(e.n, e.d, tok, pos, e.r, dte, dpe);
	check_grad("embedding dwte", e.wte, dte, nte, emb_loss, &e);
	check_grad("embedding dwpe", e.wpe, dpe, npe, emb_loss, &e);
	/* accumulates */
	float *dte2 = fvec(nte, 0), *dpe2 = fvec(npe, 0);
	for (size_t i = 0; i < nte; i++)
		dte2[i] = 2.0f;
	tm_embedding_backward(e.n, e.d, tok, pos, e.r, dte2, dpe2);
	tm_embedding_backward(e.n, e.d, tok, pos, e.r, dte2, dpe2);
	for (size_t i = 0; i < nte; i++)
		ck_assert_float_eq_tol(dte2[i], 2.0f + 2 * dte[i], 1e-6f);
	for (size_t i = 0; i < npe; i++)
		ck_assert_float_eq_tol(dpe2[i], 2 * dpe[i], 1e-6f);
	free(e.wte), free(e.wpe), free(e.r), free(e.out), free(dte), free(dpe), free(dte2), free(dpe2);
}
END_TEST

typedef struct attn_case {
	tm_ctx ctx;
	int b, t, d, nh;
	const int32_t *seg;
	float *qkv, *att, *out, *r;
	size_t nqkv, natt, nout;
} attn_case;

static double attn_loss(void *arg)
{
	attn_case *a = arg;
	tm_attention_forward(&a->ctx, a->b, a->t, a->d, a->nh, a->qkv, a->seg, a->att, a->out);
	return dot_r(a->out, a->r, a->nout);
}

START_TEST(test_attention_backward_gradcheck)
{
	/* no mask; contiguous segments; ids reused out of order (holes inside a row's range) */
	const int32_t segs[2][10] = { { 0, 0, 1, 1, 1, 4, 4, 4, 2, 2 },
				      { 3, 5, 3, 5, 3, 1, 1, 2, 1, 2 } };
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	for (int run = 0; run < 6; run++) {
		int masked = run % 3;
		attn_case a = { .ctx = ctx_portable(), .b = 2, .t = 5, .d = 8, .nh = 2,
				.seg = masked ? segs[masked - 1] : NULL };
		if (run >= 3)
			a.ctx.isa = tm_isa_best(&cpu);
		a.nqkv = (size_t)a.b * a.t * 3 * a.d;
		a.natt = (size_t)a.b * a.nh * a.t * a.t;
		a.nout = (size_t)a.b * a.t * a.d;
		a.qkv = fvec(a.nqkv, 171 + masked);
		a.att = fvec(a.natt, 0);
		a.out = fvec(a.nout, 0);
		a.r = fvec(a.nout, 173);
		for (size_t i = 0; i < a.nqkv; i++)
			a.qkv[i] *= 2.0f;
		float *dqkv = fvec(a.nqkv, 0);
		float *scratch = fvec(tm_attention_scratch_floats(a.b, a.t, a.nh), 0);
		for (size_t i = 0; i < a.nqkv; i++)
			dqkv[i] = 1e30f; /* overwritten */
		attn_loss(&a);
		tm_attention_backward(&a.ctx, a.b, a.t, a.d, a.nh, a.qkv, a.seg, a.att, a.r, dqkv,
				      scratch);
		char what[64];
		snprintf(what, sizeof(what), "attention dqkv (%s, mask %d)", tm_isa_name(a.ctx.isa),
			 masked);
		check_grad(what, a.qkv, dqkv, a.nqkv, attn_loss, &a);
		free(a.qkv), free(a.att), free(a.out), free(a.r), free(dqkv), free(scratch);
	}
}
END_TEST

typedef struct ce_case {
	int n, v;
	float *logits;
	const int32_t *targets;
} ce_case;

static double ce_loss(void *arg)
{
	ce_case *c = arg;
	return tm_cross_entropy(c->n, c->v, c->logits, c->targets, NULL, NULL);
}

START_TEST(test_cross_entropy_gradcheck)
{
	const int32_t targets[] = { 2, -1, 0, 6, 6 };
	ce_case c = { .n = 5, .v = 7, .targets = targets };
	size_t nl = (size_t)c.n * c.v;
	c.logits = fvec(nl, 181);
	for (size_t i = 0; i < nl; i++)
		c.logits[i] *= 3.0f;
	float *dl = fvec(nl, 0);
	for (size_t i = 0; i < nl; i++)
		dl[i] = 1e30f;
	int correct = -1;
	tm_cross_entropy(c.n, c.v, c.logits, targets, dl, &correct);
	check_grad("cross-entropy dlogits", c.logits, dl, nl, ce_loss, &c);
	for (int j = 0; j < c.v; j++)
		ck_assert_float_eq(dl[c.v + j], 0.0f); /* the ignored row */
	int want = 0;
	for (int r = 0; r < c.n; r++) {
		if (targets[r] < 0)
			continue;
		int arg = 0;
		for (int j = 1; j < c.v; j++)
			if (c.logits[r * c.v + j] > c.logits[r * c.v + arg])
				arg = j;
		want += arg == targets[r];
	}
	ck_assert_int_eq(correct, want);
	free(c.logits), free(dl);
}
END_TEST

START_TEST(test_backward_independent_of_threads)
{
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	tm_isa isa = tm_isa_best(&cpu);
	conv_case c;
	conv_case_init(&c, 5, 3, 10, 9, 40, 191); /* 3 dW blocks, 5 images */
	int ab = 3, at = 33, ad = 24, anh = 4;
	size_t nqkv = (size_t)ab * at * 3 * ad, natt = (size_t)ab * anh * at * at;
	float *qkv = fvec(nqkv, 192), *dout = fvec((size_t)ab * at * ad, 193);
	float *att = fvec(natt, 0), *out = fvec((size_t)ab * at * ad, 0);
	float *scratch = fvec(tm_attention_scratch_floats(ab, at, anh), 0);
	int32_t seg[3 * 33];
	for (int i = 0; i < ab * at; i++)
		seg[i] = (i % at) / 7;
	tm_ctx c0 = { .isa = isa };
	tm_attention_forward(&c0, ab, at, ad, anh, qkv, seg, att, out);
	float *dx[3], *dw[3], *db[3], *dqkv[3];
	for (int r = 0; r < 3; r++) {
		tm_ctx ctx = { .isa = isa, .pool = r ? tm_pool_new(r + 1) : NULL };
		dx[r] = fvec(c.nx, 0);
		dw[r] = fvec(c.nw, 0);
		db[r] = fvec((size_t)c.cout, 0);
		dqkv[r] = fvec(nqkv, 0);
		tm_conv3x3_backward(&ctx, c.n, c.cin, c.h, c.w, c.cout, c.x, c.wt, c.r, dx[r], dw[r],
				    db[r], c.scratch);
		tm_attention_backward(&ctx, ab, at, ad, anh, qkv, seg, att, dout, dqkv[r], scratch);
		tm_pool_free(ctx.pool);
	}
	for (int r = 1; r < 3; r++) {
		ck_assert_mem_eq(dx[0], dx[r], sizeof(float) * c.nx);
		ck_assert_mem_eq(dw[0], dw[r], sizeof(float) * c.nw);
		ck_assert_mem_eq(db[0], db[r], sizeof(float) * (size_t)c.cout);
		ck_assert_mem_eq(dqkv[0], dqkv[r], sizeof(float) * nqkv);
	}
	for (int r = 0; r < 3; r++)
		free(dx[r]), free(dw[r]), free(db[r]), free(dqkv[r]);
	free(qkv), free(dout), free(att), free(out), free(scratch);
	conv_case_free(&c);
}
END_TEST

// ---- SIMD kernels against the portable path ----

static const size_t odd_sizes[] = { 1, 3, 7, 8, 15, 16, 17, 63, 64, 65, 129 };

/* The kernel sets this CPU can run, besides portable. */
static int simd_sets(const ops_kernels **k, tm_isa *isa)
{
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	int n = 0;
	if (tm_isa_supported(&cpu, TM_ISA_AVX2))
		k[n] = &tm_ops_avx2, isa[n++] = TM_ISA_AVX2;
	if (tm_isa_supported(&cpu, TM_ISA_AVX512))
		k[n] = &tm_ops_avx512, isa[n++] = TM_ISA_AVX512;
	return n;
}

/* exp within 4e-7 relative of libm (a few ulp), -inf -> exactly 0, NaN stays NaN, the sum
 * within 1e-6 relative, and nothing written past len. */
START_TEST(test_simd_exp_matches_libm)
{
	const ops_kernels *k[2];
	tm_isa isa[2];
	int nk = simd_sets(k, isa);
	for (int ki = 0; ki < nk; ki++)
		for (size_t si = 0; si < sizeof(odd_sizes) / sizeof(odd_sizes[0]); si++) {
			int len = (int)odd_sizes[si];
			float *row = fvec((size_t)len + 1, 201 + si);
			for (int j = 0; j < len; j++)
				row[j] = 60.0f * row[j] - 50.0f; /* [-110, 10): underflow to 0 too */
			if (len > 2)
				row[1] = -INFINITY;
			row[len] = 12345.0f; /* guard */
			float mx = 3.0f;
			double want_sum = 0;
			double *want = malloc(sizeof(double) * (size_t)len);
			for (int j = 0; j < len; j++) {
				want[j] = (double)expf(row[j] - mx);
				want_sum += want[j];
			}
			float sum = k[ki]->exp_shift_sum(row, len, mx);
			for (int j = 0; j < len; j++)
				if (!(fabs(row[j] - want[j]) <= 4e-7 * want[j] + 1e-37))
					ck_abort_msg("%s exp len %d [%d]: got %.9g want %.9g",
						     tm_isa_name(isa[ki]), len, j, (double)row[j], want[j]);
			if (len > 2)
				ck_assert_float_eq(row[1], 0.0f);
			ck_assert_float_eq(row[len], 12345.0f);
			ck_assert_double_eq_tol(sum, want_sum, 1e-6 * want_sum + 1e-30);
			row[0] = NAN;
			k[ki]->exp_shift_sum(row, 1, 0.0f);
			ck_assert(isnan(row[0]));
			free(row), free(want);
		}
}
END_TEST

START_TEST(test_simd_gelu_matches_portable)
{
	const ops_kernels *k[2];
	tm_isa isa[2];
	int nk = simd_sets(k, isa);
	for (int ki = 0; ki < nk; ki++)
		for (size_t si = 0; si < sizeof(odd_sizes) / sizeof(odd_sizes[0]); si++) {
			size_t len = odd_sizes[si];
			float *x = fvec(len, 211 + si), *dy = fvec(len, 212 + si);
			float *y = fvec(len + 1, 0), *dx = fvec(len + 1, 0);
			float *py = fvec(len, 0), *pdx = fvec(len, 0);
			for (size_t i = 0; i < len; i++)
				x[i] *= 12.0f; /* both tails, where exp saturates */
			if (len > 3)
				x[0] = 0.0f, x[1] = 30.0f, x[2] = -30.0f;
			y[len] = dx[len] = 777.0f;
			tm_gelu_forward(len, x, py);
			tm_gelu_backward(len, x, dy, pdx);
			tm_ctx ctx = { .isa = isa[ki] };
			tm_gelu_forward_ctx(&ctx, len, x, y);
			tm_gelu_backward_ctx(&ctx, len, x, dy, dx);
			for (size_t i = 0; i < len; i++) {
				if (!(fabsf(y[i] - py[i]) <= 1e-6f + 1e-5f * fabsf(py[i])))
					ck_abort_msg("%s gelu len %zu [%zu] x=%g: got %.9g want %.9g",
						     tm_isa_name(isa[ki]), len, i, (double)x[i],
						     (double)y[i], (double)py[i]);
				if (!(fabsf(dx[i] - pdx[i]) <= 1e-6f + 1e-5f * fabsf(pdx[i])))
					ck_abort_msg("%s gelu' len %zu [%zu] x=%g: got %.9g want %.9g",
						     tm_isa_name(isa[ki]), len, i, (double)x[i],
						     (double)dx[i], (double)pdx[i]);
			}
			ck_assert_float_eq(y[len], 777.0f);
			ck_assert_float_eq(dx[len], 777.0f);
			free(x), free(dy), free(y), free(dx), free(py), free(pdx);
		}
}
END_TEST

/* The ctx variants: portable ctx is bit-identical to the plain functions, in place works, and
 * a long array cut into chunks over a pool gives the same bits as one thread. */
START_TEST(test_gelu_ctx_pool_and_alias)
{
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	size_t len = 100003;
	float *x = fvec(len, 221), *dy = fvec(len, 222);
	float *a = fvec(len, 0), *b = fvec(len, 0), *c = fvec(len, 0);
	tm_ctx port = ctx_portable();
	tm_gelu_forward(len, x, a);
	tm_gelu_forward_ctx(&port, len, x, b);
	ck_assert_mem_eq(a, b, sizeof(float) * len);
	tm_gelu_backward(len, x, dy, a);
	tm_gelu_backward_ctx(&port, len, x, dy, b);
	ck_assert_mem_eq(a, b, sizeof(float) * len);
	tm_ctx best = { .isa = tm_isa_best(&cpu) };
	tm_ctx pooled = { .isa = best.isa, .pool = tm_pool_new(3) };
	tm_gelu_forward_ctx(&best, len, x, a);
	tm_gelu_forward_ctx(&pooled, len, x, b);
	memcpy(c, x, sizeof(float) * len);
	tm_gelu_forward_ctx(&pooled, len, c, c);
	ck_assert_mem_eq(a, b, sizeof(float) * len);
	ck_assert_mem_eq(a, c, sizeof(float) * len);
	tm_gelu_backward_ctx(&best, len, x, dy, a);
	tm_gelu_backward_ctx(&pooled, len, x, dy, b);
	memcpy(c, dy, sizeof(float) * len);
	tm_gelu_backward_ctx(&pooled, len, x, c, c);
	ck_assert_mem_eq(a, b, sizeof(float) * len);
	ck_assert_mem_eq(a, c, sizeof(float) * len);
	tm_pool_free(pooled.pool);
	free(x), free(dy), free(a), free(b), free(c);
}
END_TEST

/* LayerNorm ctx variants on every kernel set against the plain functions: odd widths, several
 * row chunks, NULL gamma/beta, accumulation into dgamma/dbeta, in-place-free dx overwrite. */
START_TEST(test_layernorm_ctx_matches_portable)
{
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	static const int ds[] = { 1, 3, 7, 16, 17, 63, 65, 129 };
	for (int isa = TM_ISA_PORTABLE; isa <= TM_ISA_AVX512; isa++) {
		if (!tm_isa_supported(&cpu, (tm_isa)isa))
			continue;
		tm_ctx ctx = { .isa = (tm_isa)isa };
		for (size_t di = 0; di < sizeof(ds) / sizeof(ds[0]); di++) {
			int d = ds[di], rows = di % 2 ? 130 : 5;
			bool affine = di % 3 != 0;
			size_t nx = (size_t)rows * d;
			float *x = fvec(nx, 251 + di), *g = fvec((size_t)d, 252), *b = fvec((size_t)d, 253);
			float *dy = fvec(nx, 254 + di);
			float *y = fvec(nx, 0), *py = fvec(nx, 0), *mu = fvec((size_t)rows, 0);
			float *rs = fvec((size_t)rows, 0), *pmu = fvec((size_t)rows, 0);
			float *prs = fvec((size_t)rows, 0), *dx = fvec(nx, 0), *pdx = fvec(nx, 0);
			float *dg = fvec((size_t)d, 0), *db = fvec((size_t)d, 0);
			float *pdg = fvec((size_t)d, 0), *pdb = fvec((size_t)d, 0);
			for (size_t i = 0; i < nx; i++)
				x[i] = 3.0f * x[i] + 1.5f, dx[i] = 1e30f;
			for (int j = 0; j < d; j++)
				dg[j] = pdg[j] = 0.5f, db[j] = pdb[j] = -0.5f;
			const float *gg = affine ? g : NULL, *bb = affine ? b : NULL;
			tm_layernorm_forward(rows, d, x, gg, bb, py, pmu, prs);
			tm_layernorm_forward_ctx(&ctx, rows, d, x, gg, bb, y, mu, rs);
			double e1 = tt_max_rel_diff(y, py, nx), e2 = tt_max_rel_diff(rs, prs, (size_t)rows);
			ck_assert_msg(e1 < 1e-5 && e2 < 1e-5, "%s d=%d: y %g rstd %g",
				      tm_isa_name((tm_isa)isa), d, e1, e2);
			tm_layernorm_backward(rows, d, x, gg, pmu, prs, dy, pdx, pdg, pdb);
			tm_layernorm_backward_ctx(&ctx, rows, d, x, gg, pmu, prs, dy, dx, dg, db);
			double e3 = tt_max_rel_diff(dx, pdx, nx), e4 = tt_max_rel_diff(dg, pdg, (size_t)d);
			double e5 = tt_max_rel_diff(db, pdb, (size_t)d);
			ck_assert_msg(e3 < 1e-5 && e4 < 1e-5 && e5 < 1e-5, "%s d=%d: dx %g dgamma %g dbeta %g",
				      tm_isa_name((tm_isa)isa), d, e3, e4, e5);
			free(x), free(g), free(b), free(dy), free(y), free(py), free(mu), free(rs);
			free(pmu), free(prs), free(dx), free(pdx), free(dg), free(db), free(pdg), free(pdb);
		}
	}
}
END_TEST

START_TEST(test_layernorm_ctx_independent_of_threads)
{
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	int rows = 333, d = 40;
	size_t nx = (size_t)rows * d;
	float *x = fvec(nx, 261), *g = fvec((size_t)d, 262), *b = fvec((size_t)d, 263);
	float *dy = fvec(nx, 264), *mu = fvec((size_t)rows, 0), *rs = fvec((size_t)rows, 0);
	float *y[3], *dx[3], *dg[3], *db[3];
	for (int r = 0; r < 3; r++) {
		tm_ctx ctx = { .isa = tm_isa_best(&cpu), .pool = r ? tm_pool_new(r + 1) : NULL };
		y[r] = fvec(nx, 0), dx[r] = fvec(nx, 0), dg[r] = fvec((size_t)d, 0), db[r] = fvec((size_t)d, 0);
		tm_layernorm_forward_ctx(&ctx, rows, d, x, g, b, y[r], mu, rs);
		tm_layernorm_backward_ctx(&ctx, rows, d, x, g, mu, rs, dy, dx[r], dg[r], db[r]);
		tm_pool_free(ctx.pool);
	}
	for (int r = 1; r < 3; r++) {
		ck_assert_mem_eq(y[0], y[r], sizeof(float) * nx);
		ck_assert_mem_eq(dx[0], dx[r], sizeof(float) * nx);
		ck_assert_mem_eq(dg[0], dg[r], sizeof(float) * (size_t)d);
		ck_assert_mem_eq(db[0], db[r], sizeof(float) * (size_t)d);
	}
	for (int r = 0; r < 3; r++)
		free(y[r]), free(dx[r]), free(dg[r]), free(db[r]);
	free(x), free(g), free(b), free(dy), free(mu), free(rs);
}
END_TEST

/* Attention with every kernel set: forward against the explicit double loops, backward against
 * the portable backward, on odd lengths and head sizes (below, at and above the vector width),
 * without a mask, with contiguous segments and with segment ids reused out of order. */
START_TEST(test_attention_every_isa_odd_sizes)
{
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	static const int ts[] = { 1, 3, 17, 63, 65, 129 };
	static const int hds[][2] = { { 24, 3 }, { 34, 2 }, { 33, 1 }, { 64, 4 } }; /* d, n_head */
	tm_ctx port = ctx_portable();
	for (int isa = TM_ISA_PORTABLE; isa <= TM_ISA_AVX512; isa++) {
		if (!tm_isa_supported(&cpu, (tm_isa)isa))
			continue;
		tm_ctx ctx = { .isa = (tm_isa)isa };
		for (size_t ti = 0; ti < sizeof(ts) / sizeof(ts[0]); ti++)
			for (int mode = 0; mode < 3; mode++) {
				int b = 2, t = ts[ti];
				int d = hds[(ti + mode) % 4][0], nh = hds[(ti + mode) % 4][1];
				size_t nqkv = (size_t)b * t * 3 * d, nout = (size_t)b * t * d;
				size_t natt = (size_t)b * nh * t * t;
				float *qkv = fvec(nqkv, 231 + ti), *att = fvec(natt, 0), *out = fvec(nout, 0);
				float *dout = fvec(nout, 241 + ti), *dq = fvec(nqkv, 0), *pdq = fvec(nqkv, 0);
				float *patt = fvec(natt, 0), *pout = fvec(nout, 0);
				float *scr = fvec(tm_attention_scratch_floats(b, t, nh), 0);
				double *ratt = malloc(sizeof(double) * natt);
				double *rout = malloc(sizeof(double) * nout);
				int32_t *seg = malloc(sizeof(int32_t) * (size_t)b * t);
				for (size_t i = 0; i < nqkv; i++)
					qkv[i] *= 4.0f;
				for (int i = 0; i < b * t; i++)
					seg[i] = mode == 1 ? (i % t) / 10 : (i * 7 / 3) % 3;
				const int32_t *sg = mode ? seg : NULL;
				tm_attention_forward(&ctx, b, t, d, nh, qkv, sg, att, out);
				attention_ref(b, t, d, nh, qkv, sg, ratt, rout);
				check_close("attention out", out, rout, nout, 1e-5, 1e-4);
				check_close("attention att", att, ratt, natt, 1e-6, 1e-4);
				check_zero_where(tm_isa_name((tm_isa)isa), att, ratt, natt);
				tm_attention_forward(&port, b, t, d, nh, qkv, sg, patt, pout);
				tm_attention_backward(&ctx, b, t, d, nh, qkv, sg, att, dout, dq, scr);
				tm_attention_backward(&port, b, t, d, nh, qkv, sg, patt, dout, pdq, scr);
				double diff = tt_max_rel_diff(dq, pdq, nqkv);
				ck_assert_msg(diff < 1e-5, "%s t=%d d=%d nh=%d mode %d: dqkv differs by %g",
					      tm_isa_name((tm_isa)isa), t, d, nh, mode, diff);
				free(qkv), free(att), free(out), free(dout), free(dq), free(pdq);
				free(patt), free(pout), free(scr), free(ratt), free(rout), free(seg);
			}
	}
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
	TCase *bwd = tcase_create("backward");
	tcase_set_timeout(bwd, 120);
	tcase_add_test(bwd, test_conv_backward_gradcheck);
	tcase_add_test(bwd, test_conv_backward_matches_direct);
	tcase_add_test(bwd, test_conv_backward_accumulates);
	tcase_add_test(bwd, test_maxpool_backward_gradcheck);
	tcase_add_test(bwd, test_activation_backward_gradcheck);
	tcase_add_test(bwd, test_layernorm_backward_gradcheck);
	tcase_add_test(bwd, test_embedding_backward_gradcheck);
	tcase_add_test(bwd, test_attention_backward_gradcheck);
	tcase_add_test(bwd, test_cross_entropy_gradcheck);
	tcase_add_test(bwd, test_backward_independent_of_threads);
	suite_add_tcase(s, bwd);
	TCase *simd = tcase_create("simd");
	tcase_set_timeout(simd, 60);
	tcase_add_test(simd, test_simd_exp_matches_libm);
	tcase_add_test(simd, test_simd_gelu_matches_portable);
	tcase_add_test(simd, test_gelu_ctx_pool_and_alias);
	tcase_add_test(simd, test_attention_every_isa_odd_sizes);
	tcase_add_test(simd, test_layernorm_ctx_matches_portable);
	tcase_add_test(simd, test_layernorm_ctx_independent_of_threads);
	suite_add_tcase(s, simd);
	return s;
}
