/* bench_int8.c: the `int8` section of `make bench`: our INT8 GEMM against our own FP32 GEMM in
 * the same run, single thread.  Both sides count 2*m*n*k operations, so the ratio compares like
 * with like.  INT8 is tm_qlinear_forward_q (int8 activations in, int32 sums, dequantized FP32
 * out with the per-channel scales and bias: the layer as a model runs it); FP32 is the faster
 * of tm_sgemm and tm_linear_packed (W packed once, bias fused) with the same kernel set.
 * Square 256, 512 and 1024 with the best kernels where they have VNNI (target 3x) and with the
 * AVX2 kernels forced on both sides (target 1.5x, what a machine without VNNI gets; on such a
 * machine only these rows are printed, on a VNNI machine they are informational); batch 1 on
 * the MLP's
 * 784 -> 128 layer from FP32 input (the int8 side includes quantizing the input) against FP32
 * tm_linear_packed; the transformer's projections at batch 1 and the events' other layer shapes
 * at batch 64 (informational).  Each row alternates the two sides for several rounds and keeps
 * the fastest repetition of each (min-of-N, as the machine is shared and noisy). */
#include "bench.h"

#include <stdlib.h>
#include <string.h>

typedef enum int8_op {
	OP_QGEMM = 0,      /* tm_qlinear_forward_q: int8 in, FP32 out */
	OP_QLINEAR = 1,    /* tm_qlinear_forward: FP32 in (quantized on the fly), FP32 out */
	OP_SGEMM = 2,      /* tm_sgemm NT: X * W^T */
	OP_PACKED = 3,     /* tm_linear_packed */
} int8_op;

typedef struct int8_case {
	int8_op op;
	int m, n, k;
	int reps;          /* calls per timed sample */
	const tm_ctx *ctx;
	const float *x, *w, *bias;
	const int8_t *xq;
	const tm_qlinear *ql;
	const tm_packed_w *pw;
	float *y;
} int8_case;

static void run_case(void *arg)
{
	const int8_case *g = arg;
	for (int r = 0; r < g->reps; r++) {
		switch (g->op) {
		case OP_QGEMM:
			tm_qlinear_forward_q(g->ctx, g->ql, g->m, g->xq, tm_qlinear_x_scale(g->ql),
					     TM_ACT_NONE, g->y);
			break;
		case OP_QLINEAR:
			tm_qlinear_forward(g->ctx, g->ql, g->m, g->x, TM_ACT_NONE, g->y);
			break;
		case OP_SGEMM:
			tm_sgemm(g->ctx, false, true, g->m, g->n, g->k, 1.0f, g->x, g->k, g->w, g->k,
				 0.0f, g->y, g->n);
			break;
		case OP_PACKED:
			tm_linear_packed(g->ctx, g->m, g->pw, g->x, g->bias, TM_ACT_NONE, g->y);
			break;
		}
	}
}

static int reps_for(double ops, double gops_guess)
{
	/* about 50 us per sample, so the clock's own cost does not count */
	int reps = (int)(50e3 / (ops / gops_guess)) + 1;
	return reps > 20000 ? 20000 : reps;
}

/* GOP/s of each case, measured in alternating rounds, best repetition of each. */
static void measure(bench_ctx *b, int8_case **cases, int nc, double *gops)
{
	double ops = 2.0 * cases[0]->m * cases[0]->n * cases[0]->k;
	double best[4] = { 1e30, 1e30, 1e30, 1e30 };
	double min_s = b->quick ? 0.01 : 0.06;
	int rounds = b->quick ? 1 : 5;
	for (int c = 0; c < nc; c++) {
		cases[c]->reps = reps_for(ops, cases[c]->op <= OP_QLINEAR ? 300.0 : 100.0);
		run_case(cases[c]);  /* warm caches and the allocator */
	}
	for (int r = 0; r < rounds; r++)
		for (int c = 0; c < nc; c++) {
			double t = bench_time_min(run_case, cases[c], min_s) / cases[c]->reps;
			best[c] = t < best[c] ? t : best[c];
		}
	for (int c = 0; c < nc; c++)
		gops[c] = ops / best[c] * 1e-9;
}

static float *rnd(size_t n, uint32_t seed)
{
	float *x = malloc(sizeof(float) * n);
	if (!x)
		abort();
	uint32_t s = seed * 2654435761u + 1;
	for (size_t i = 0; i < n; i++) {
		s = s * 1664525u + 1013904223u;
		x[i] = (float)(s >> 8) / 8388608.0f - 1.0f;
	}
	return x;
}

/* Operands of one shape: FP32 x, W, bias; the quantized layer and int8 x; FP32 W packed. */
typedef struct shape_data {
	int m, n, k;
	float *x, *w, *bias, *y;
	int8_t *xq;
	tm_qlinear *ql;
	tm_packed_w *pw;
} shape_data;

static void shape_init(shape_data *d, const tm_ctx *ctx, int m, int n, int k)
{
	memset(d, 0, sizeof(*d));
	d->m = m;
	d->n = n;
	d->k = k;
	d->x = rnd((size_t)m * k, 1);
	d->w = rnd((size_t)n * k, 2);
	d->bias = rnd((size_t)n, 3);
	d->y = calloc((size_t)m * n, sizeof(float));
	d->xq = malloc((size_t)m * k);
	tm_err err;
	if (!d->y || !d->xq ||
	    tm_qlinear_new(n, k, d->w, d->bias, TM_QGRAN_CHANNEL, tm_qscale(1.0f), &d->ql, &err) ||
	    tm_linear_pack(ctx, n, k, d->w, &d->pw, &err)) {
		fprintf(stderr, "bench_int8: cannot set up (%d, %d, %d)\n", m, n, k);
		abort();
	}
	tm_quantize_act((size_t)m * k, d->x, tm_qscale(1.0f), d->xq);
}

static void shape_release(shape_data *d)
{
	free(d->x);
	free(d->w);
	free(d->bias);
	free(d->y);
	free(d->xq);
	tm_qlinear_free(d->ql);
	tm_packed_w_free(d->pw);
}

static int8_case case_of(const shape_data *d, int8_op op, const tm_ctx *ctx)
{
	return (int8_case){ .op = op, .m = d->m, .n = d->n, .k = d->k, .ctx = ctx, .x = d->x,
			    .w = d->w, .bias = d->bias, .xq = d->xq, .ql = d->ql, .pw = d->pw,
			    .y = d->y };
}

/* One square size with one kernel set: int8 against the faster FP32 path. */
static void bench_square(bench_ctx *b, tm_isa isa, int s, const char *tag, double target)
{
	tm_ctx ctx = { .isa = isa, .pool = NULL };
	shape_data d;
	shape_init(&d, &ctx, s, s, s);
	int8_case q = case_of(&d, OP_QGEMM, &ctx), f1 = case_of(&d, OP_SGEMM, &ctx),
		  f2 = case_of(&d, OP_PACKED, &ctx);
	int8_case *cases[] = { &q, &f1, &f2 };
	double g[3];
	measure(b, cases, 3, g);
	double f32 = g[1] > g[2] ? g[1] : g[2];
	char name[96], anchor[96];
	snprintf(name, sizeof(name), "int8_gemm%s_%d_vs_f32", tag, s);
	snprintf(anchor, sizeof(anchor), "f32_gemm%s", tag);
	bench_add(b, name, g[0], "GOP/s", anchor, f32, true, target);
	shape_release(&d);
}

/* One layer shape at batch m, FP32 input on both sides, int8 quantizing it on the fly. */
static void bench_layer(bench_ctx *b, tm_isa isa, int m, int n, int k, double target)
{
	tm_ctx ctx = { .isa = isa, .pool = NULL };
	shape_data d;
	shape_init(&d, &ctx, m, n, k);
	int8_case q = case_of(&d, OP_QLINEAR, &ctx), f = case_of(&d, OP_PACKED, &ctx);
	int8_case *cases[] = { &q, &f };
	double g[2];
	measure(b, cases, 2, g);
	char name[96];
	snprintf(name, sizeof(name), "int8_linear_m%d_n%d_k%d_vs_f32", m, n, k);
	bench_add(b, name, g[0], "GOP/s", "f32_linear_packed", g[1], true, target);
	shape_release(&d);
}

void bench_int8(bench_ctx *b)
{
	tm_isa best = tm_isa_best(&b->cpu);
	tm_ctx probe = { .isa = best };
	printf("# int8 kernels: %s (best), FP32 kernels: %s\n", tm_qgemm_kernels_name(&probe),
	       tm_isa_name(best));
	/* issue 4: 3x where the int8 kernels have VNNI (the hardware ratio is 4x), 1.5x where
	 * only AVX2 is available; a machine without VNNI prints its rows as the AVX2 ones, and
	 * on a VNNI machine the AVX2 rows are informational (its target is the VNNI one) */
	bool vnni = strcmp(tm_qgemm_kernels_name(&probe), "avx512vnni") == 0;
	static const int squares[] = { 256, 512, 1024 };
	for (size_t i = 0; i < sizeof(squares) / sizeof(squares[0]); i++) {
		if (vnni)
			bench_square(b, best, squares[i], "", 3.0);
		if (tm_isa_supported(&b->cpu, TM_ISA_AVX2))
			bench_square(b, TM_ISA_AVX2, squares[i], "_avx2", vnni ? 0 : 1.5);
		else if (!vnni)
			bench_square(b, best, squares[i], "", 0);
	}
	bench_layer(b, best, 1, 128, 784, 2.0);
	/* batch 1 of the transformer's projections (one decoding step), informational */
	static const int decode[][2] = { { 384, 128 }, { 128, 512 }, { 512, 128 } };
	for (size_t l = 0; l < sizeof(decode) / sizeof(decode[0]); l++)
		bench_layer(b, best, 1, decode[l][0], decode[l][1], 0);
	static const int layers[][2] = {
		{ 128, 784 }, { 64, 128 }, { 10, 1600 }, { 384, 128 }, { 128, 512 }, { 512, 128 },
	};
	for (size_t l = 0; l < sizeof(layers) / sizeof(layers[0]); l++)
		bench_layer(b, best, 64, layers[l][0], layers[l][1], 0);
}
