/* bench_sparse.c: the `sparse` section of `make bench`.  The sparse linear layer (magnitude
 * pruned, stored by tm_sparse_new in the format of the best kernel set) against our fastest
 * dense FP32 layer on the same weights, single thread, side by side in one run: the anchor is
 * the faster of tm_linear and tm_linear_packed (weights packed once) with the best kernel set.
 * The target row is the MLP's 784x128 layer (n = 128 out, k = 784 in) at 90% sparsity and batch
 * 1 (target 3x); 50, 80, 87, 95 and 99% and batch 64 are context, as are the AVX2 (WIN8) and
 * portable kernels.  Every row alternates dense and sparse for several rounds and keeps the
 * fastest repetition of each (min-of-N: the machine is shared and noisy).  Also reported: the
 * stored bytes at 87% (dense bytes / CSR bytes and / WIN16 bytes, for the layer and for the
 * whole MLP pruned with one global threshold; also with int8 values), prune-then-quantize
 * (int8 sparse against the dense int8 layer tm_qlinear), and the break-even sparsity measured
 * on a grid, next to the one tm_sparse_decide uses. */
#include "bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef enum sp_kind {
	SP_LINEAR = 0,   /* tm_linear on the dense (masked) W */
	SP_PACKED = 1,   /* tm_linear_packed on the same W packed once */
	SP_SPARSE = 2,   /* tm_sparse_linear */
	SP_QLINEAR = 3,  /* tm_qlinear_forward: the dense int8 layer */
} sp_kind;

typedef struct sp_case {
	sp_kind kind;
	const tm_ctx *ctx;
	int m, n, k;
	const float *x, *w, *bias;
	const tm_packed_w *pw;
	const tm_sparse_w *s;
	const tm_qlinear *ql;
	float *y;
	int reps;            /* calls per timed sample */
} sp_case;

static void run_case(void *arg)
{
	const sp_case *c = arg;
	for (int r = 0; r < c->reps; r++) {
		switch (c->kind) {
		case SP_LINEAR:
			tm_linear(c->ctx, c->m, c->n, c->k, c->x, c->w, c->bias, TM_ACT_RELU, c->y);
			break;
		case SP_PACKED:
			tm_linear_packed(c->ctx, c->m, c->pw, c->x, c->bias, TM_ACT_RELU, c->y);
			break;
		case SP_SPARSE:
			tm_sparse_linear(c->ctx, c->m, c->s, c->x, c->bias, TM_ACT_RELU, c->y);
			break;
		case SP_QLINEAR:
			tm_qlinear_forward(c->ctx, c->ql, c->m, c->x, TM_ACT_RELU, c->y);
			break;
		}
	}
}

/* Seconds per call of one run, roughly, to size the repetitions (about 40 us per sample). */
static int reps_for(sp_case *c)
{
	c->reps = 1;
	run_case(c);
	double t = bench_time_min(run_case, c, 0.002);
	int reps = (int)(40e-6 / (t > 1e-9 ? t : 1e-9)) + 1;
	return reps > 100000 ? 100000 : reps;
}

static float *rnd(size_t n, uint32_t seed, float scale)
{
	float *x = malloc(sizeof(float) * (n ? n : 1));
	if (!x)
		abort();
	uint32_t s = seed * 2654435761u + 1;
	for (size_t i = 0; i < n; i++) {
		s = s * 1664525u + 1013904223u;
		x[i] = scale * ((float)(s >> 8) / 8388608.0f - 1.0f);
	}
	return x;
}

/* A layer at one sparsity: dense W (masked), its packed copy and its sparse copy. */
typedef struct sp_layer {
	int n, k;
	double sparsity;
	float *w, *bias;
	tm_packed_w *pw;     /* NULL when packing is not asked for */
	tm_sparse_w *s;
} sp_layer;

static void layer_init(sp_layer *l, const tm_ctx *ctx, int n, int k, double sparsity, bool pack)
{
	tm_err err;
	memset(l, 0, sizeof(*l));
	l->n = n;
	l->k = k;
	l->sparsity = sparsity;
	l->w = rnd((size_t)n * k, 11, 1.0f);
	l->bias = rnd((size_t)n, 12, 0.1f);
	if (tm_prune_magnitude(l->w, (size_t)n * k, sparsity, NULL, NULL, &err) != 0 ||
	    (pack && tm_linear_pack(ctx, n, k, l->w, &l->pw, &err) != 0) ||
	    tm_sparse_new(ctx, n, k, l->w, TM_SPARSE_AUTO, &l->s, &err) != 0) {
		fprintf(stderr, "bench_sparse: %s\n", err.msg);
		abort();
	}
}

static void layer_release(sp_layer *l)
{
	free(l->w);
	free(l->bias);
	tm_packed_w_free(l->pw);
	tm_sparse_free(l->s);
}

typedef struct sp_times {
	double dense;        /* seconds per call: the faster dense path */
	double sparse;       /* seconds per call */
	bool packed_won;     /* the dense anchor was tm_linear_packed */
} sp_times;

/* Dense (tm_linear and, if packed, tm_linear_packed) and sparse at batch m, interleaved. */
static sp_times measure(bench_ctx *b, const tm_ctx *ctx, const sp_layer *l, int m)
{
	float *x = rnd((size_t)m * l->k, 21, 1.0f);
	float *y = malloc(sizeof(float) * (size_t)m * l->n);
	if (!y)
		abort();
	sp_case cs[3];
	for (int i = 0; i < 3; i++)
		cs[i] = (sp_case){ .kind = (sp_kind)i, .ctx = ctx, .m = m, .n = l->n, .k = l->k,
				   .x = x, .w = l->w, .bias = l->bias, .pw = l->pw, .s = l->s,
				   .y = y };
	int ncases = l->pw ? 3 : 2;
	if (!l->pw)
		cs[1] = cs[2];
	for (int i = 0; i < ncases; i++)
		cs[i].reps = reps_for(&cs[i]);
	double best[3] = { 1e30, 1e30, 1e30 };
	double min_s = b->quick ? 0.01 : 0.04;
	int rounds = b->quick ? 2 : 6;
	for (int r = 0; r < rounds; r++)
		for (int i = 0; i < ncases; i++) {
			double t = bench_time_min(run_case, &cs[i], min_s) / cs[i].reps;
			best[i] = t < best[i] ? t : best[i];
		}
	sp_times t = { .dense = best[0], .sparse = best[ncases - 1] };
	if (l->pw && best[1] < best[0]) {
		t.dense = best[1];
		t.packed_won = true;
	}
	free(x);
	free(y);
	return t;
}

static void row(bench_ctx *b, const char *name, const sp_times *t, double target)
{
	bench_add(b, name, t->sparse * 1e6, "us", "dense_f32_linear", t->dense * 1e6, false,
		  target);
}

/* The sparsity at which sparse and dense take the same time, interpolated on the grid;
 * 0 when sparse wins everywhere, 1 when it never does. */
static double crossing(const double *sp, const double *ratio, int n)
{
	if (ratio[0] >= 1.0)
		return 0.0;
	for (int i = 1; i < n; i++)
		if (ratio[i] >= 1.0)
			return sp[i - 1] + (sp[i] - sp[i - 1]) * (1.0 - ratio[i - 1]) /
					   (ratio[i] - ratio[i - 1]);
	return 1.0;
}

/* Break-even grid for one kernel set and batch. */
static void break_even(bench_ctx *b, const tm_ctx *ctx, int m, const char *tag)
{
	static const double grid[] = { 0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9 };
	enum { NG = sizeof(grid) / sizeof(grid[0]) };
	double ratio[NG];
	for (int i = 0; i < NG; i++) {
		sp_layer l;
		layer_init(&l, ctx, 128, 784, grid[i], ctx->isa != TM_ISA_PORTABLE);
		sp_times t = measure(b, ctx, &l, m);
		ratio[i] = t.dense / t.sparse;
		printf("  %s m=%d sparsity %.2f: dense %.2f us, sparse %.2f us, ratio %.2f\n", tag, m,
		       grid[i], t.dense * 1e6, t.sparse * 1e6, ratio[i]);
		layer_release(&l);
	}
	char name[96];
	snprintf(name, sizeof(name), "sparse_break_even_%s_m%d_784x128", tag, m);
	bench_add(b, name, crossing(grid, ratio, NG), "sparsity", "tm_sparse_break_even",
		  tm_sparse_break_even(ctx->isa, 128, 784, m), true, 0);
}

/* Prune then quantize: the int8 sparse layer against the dense int8 layer (activation scale
 * from the input's range, as a calibration would give) at batch m. */
static void q8_row(bench_ctx *b, const tm_ctx *ctx, double sparsity, int m)
{
	int n = 128, k = 784;
	float *w = rnd((size_t)n * k, 11, 1.0f), *bias = rnd((size_t)n, 12, 0.1f);
	float *x = rnd((size_t)m * k, 21, 1.0f), *y = malloc(sizeof(float) * (size_t)m * n);
	tm_err err;
	tm_sparse_w *s = NULL;
	tm_qlinear *ql = NULL;
	if (!y || tm_prune_magnitude(w, (size_t)n * k, sparsity, NULL, NULL, &err) != 0 ||
	    tm_sparse_new_q8(ctx, n, k, w, TM_SPARSE_AUTO, &s, &err) != 0 ||
	    tm_qlinear_new(n, k, w, bias, TM_QGRAN_CHANNEL, tm_qscale(1.0f), &ql, &err) != 0) {
		fprintf(stderr, "bench_sparse: %s\n", err.msg);
		abort();
	}
	sp_case cs[2] = {
		{ .kind = SP_QLINEAR, .ctx = ctx, .m = m, .n = n, .k = k, .x = x, .bias = bias,
		  .ql = ql, .y = y },
		{ .kind = SP_SPARSE, .ctx = ctx, .m = m, .n = n, .k = k, .x = x, .bias = bias,
		  .s = s, .y = y },
	};
	for (int i = 0; i < 2; i++)
		cs[i].reps = reps_for(&cs[i]);
	double best[2] = { 1e30, 1e30 };
	for (int r = 0; r < (b->quick ? 2 : 6); r++)
		for (int i = 0; i < 2; i++) {
			double t = bench_time_min(run_case, &cs[i], b->quick ? 0.01 : 0.04) / cs[i].reps;
			best[i] = t < best[i] ? t : best[i];
		}
	char name[96];
	snprintf(name, sizeof(name), "sparse_int8_%02d_m%d_784x128_vs_qlinear",
		 (int)(sparsity * 100 + 0.5), m);
	bench_add(b, name, best[1] * 1e6, "us", "dense_int8_qlinear", best[0] * 1e6, false, 0);
	tm_sparse_free(s);
	tm_qlinear_free(ql);
	free(w);
	free(bias);
	free(x);
	free(y);
}

/* Stored bytes at 87%: the 784x128 layer and the MLP's three weight matrices pruned with one
 * global threshold (biases stay dense and are counted on both sides). */
static void bytes_rows(bench_ctx *b)
{
	static const int mlp[][2] = { { 128, 784 }, { 64, 128 }, { 10, 64 } };
	float *w[3];
	tm_prune_tensor t[3];
	size_t dense = 0, csr = 0, win = 0, csr_layer = 0, win_layer = 0;
	for (int i = 0; i < 3; i++) {
		int n = mlp[i][0], k = mlp[i][1];
		/* PyTorch's default init range, so the global threshold sees realistic scales */
		w[i] = rnd((size_t)n * k, 31 + i, 1.0f / sqrtf((float)k));
		t[i] = (tm_prune_tensor){ .w = w[i], .len = (size_t)n * k };
	}
	tm_err err;
	if (tm_prune_magnitude_global(t, 3, 0.87, NULL, &err) != 0)
		abort();
	for (int i = 0; i < 3; i++) {
		int n = mlp[i][0], k = mlp[i][1];
		tm_sparse_w *sc = NULL, *sw = NULL;
		if (tm_sparse_new(NULL, n, k, w[i], TM_SPARSE_CSR, &sc, &err) != 0 ||
		    tm_sparse_new(NULL, n, k, w[i], TM_SPARSE_WIN16, &sw, &err) != 0)
			abort();
		size_t bias = (size_t)n * sizeof(float);
		dense += (size_t)n * k * sizeof(float) + bias;
		csr += tm_sparse_bytes(sc) + bias;
		win += tm_sparse_bytes(sw) + bias;
		tm_sparse_free(sc);
		tm_sparse_free(sw);
		free(w[i]);
	}
	/* the layer alone at exactly 87% */
	float *wl = rnd(784 * 128, 41, 1.0f);
	tm_sparse_w *sc = NULL, *sw = NULL;
	if (tm_prune_magnitude(wl, 784 * 128, 0.87, NULL, NULL, &err) != 0 ||
	    tm_sparse_new(NULL, 128, 784, wl, TM_SPARSE_CSR, &sc, &err) != 0 ||
	    tm_sparse_new(NULL, 128, 784, wl, TM_SPARSE_WIN16, &sw, &err) != 0)
		abort();
	csr_layer = tm_sparse_bytes(sc);
	win_layer = tm_sparse_bytes(sw);
	tm_sparse_free(sc);
	tm_sparse_free(sw);
	if (tm_sparse_new_q8(NULL, 128, 784, wl, TM_SPARSE_CSR, &sc, &err) != 0 ||
	    tm_sparse_new_q8(NULL, 128, 784, wl, TM_SPARSE_WIN16, &sw, &err) != 0)
		abort();
	size_t csr8_layer = tm_sparse_bytes(sc), win8_layer = tm_sparse_bytes(sw);
	tm_sparse_free(sc);
	tm_sparse_free(sw);
	free(wl);
	double dl = 784.0 * 128 * sizeof(float);
	bench_add(b, "sparse_bytes_87_784x128_csr", (double)csr_layer, "bytes", "dense_f32_bytes",
		  dl, false, 0);
	bench_add(b, "sparse_bytes_87_784x128_win16", (double)win_layer, "bytes",
		  "dense_f32_bytes", dl, false, 0);
	bench_add(b, "sparse_bytes_87_784x128_csr_int8", (double)csr8_layer, "bytes",
		  "dense_f32_bytes", dl, false, 0);
	bench_add(b, "sparse_bytes_87_784x128_win16_int8", (double)win8_layer, "bytes",
		  "dense_f32_bytes", dl, false, 0);
	bench_add(b, "sparse_bytes_87_mlp_global_csr", (double)csr, "bytes", "dense_f32_bytes",
		  (double)dense, false, 0);
	bench_add(b, "sparse_bytes_87_mlp_global_win16", (double)win, "bytes", "dense_f32_bytes",
		  (double)dense, false, 0);
}

void bench_sparse(bench_ctx *b)
{
	tm_isa best = tm_isa_best(&b->cpu);
	tm_ctx ctx = { .isa = best, .pool = NULL };
	tm_ctx port = { .isa = TM_ISA_PORTABLE, .pool = NULL };
	printf("  sparse: single thread, kernels %s, format %s; dense anchor: the faster of "
	       "tm_linear and tm_linear_packed\n", tm_isa_name(best),
	       tm_sparse_format_name(best >= TM_ISA_AVX512 ? TM_SPARSE_WIN16 : TM_SPARSE_CSR));

	/* the target first, then the context rows */
	static const struct { double sp; int m; double target; } rows[] = {
		{ 0.90, 1, 3.0 },
		{ 0.50, 1, 0 }, { 0.80, 1, 0 }, { 0.87, 1, 0 }, { 0.95, 1, 0 }, { 0.99, 1, 0 },
		{ 0.50, 64, 0 }, { 0.80, 64, 0 }, { 0.90, 64, 0 }, { 0.95, 64, 0 }, { 0.99, 64, 0 },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		sp_layer l;
		layer_init(&l, &ctx, 128, 784, rows[i].sp, true);
		sp_times t = measure(b, &ctx, &l, rows[i].m);
		tm_sparse_info info;
		tm_sparse_get_info(l.s, &info);
		char name[96];
		snprintf(name, sizeof(name), "sparse_linear_%02d_m%d_784x128_vs_dense",
			 (int)(rows[i].sp * 100 + 0.5), rows[i].m);
		row(b, name, &t, rows[i].target);
		printf("  (dense anchor %s; %s fill %.2f, %zu bytes)\n",
		       t.packed_won ? "tm_linear_packed" : "tm_linear",
		       tm_sparse_format_name(info.format), info.fill, info.bytes);
		layer_release(&l);
	}

	/* the AVX2 kernels (WIN8), for machines without AVX-512 */
	tm_ctx avx2 = { .isa = TM_ISA_AVX2, .pool = NULL };
	if (best > TM_ISA_AVX2 && tm_isa_supported(&b->cpu, TM_ISA_AVX2)) {
		sp_layer l;
		layer_init(&l, &avx2, 128, 784, 0.9, true);
		sp_times t = measure(b, &avx2, &l, 1);
		row(b, "sparse_linear_90_m1_784x128_avx2", &t, 0);
		layer_release(&l);
	}

	/* the portable kernels, for the fallback rule of `kernels: portable` */
	{
		sp_layer l;
		layer_init(&l, &port, 128, 784, 0.9, false);
		sp_times t = measure(b, &port, &l, 1);
		row(b, "sparse_linear_90_m1_784x128_portable", &t, 0);
		layer_release(&l);
	}

	/* prune then quantize, against the dense int8 layer */
	q8_row(b, &ctx, 0.90, 1);
	q8_row(b, &ctx, 0.95, 1);
	q8_row(b, &ctx, 0.95, 64);

	bytes_rows(b);

	if (!b->quick) {
		break_even(b, &ctx, 1, tm_isa_name(best));
		break_even(b, &ctx, 64, tm_isa_name(best));
		if (best > TM_ISA_AVX2 && tm_isa_supported(&b->cpu, TM_ISA_AVX2))
			break_even(b, &avx2, 1, "avx2");
		break_even(b, &port, 1, "portable");
	}
}
