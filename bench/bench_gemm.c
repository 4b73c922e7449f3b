/* bench_gemm.c: the `gemm` section of `make bench`: our single-thread SGEMM and linear layer
 * against OpenBLAS cblas_sgemm (forced to one thread) in the same run.  Square NN products
 * (256, 512, 1024) target 0.9x; the events' layer shapes (M rows of X times W (N out, K in),
 * Y = X W^T, compared with cblas_sgemm(RowMajor, NoTrans, Trans) on the same W every call)
 * target 1.0x, both for tm_linear (packing per call) and tm_linear_packed (W packed once, as
 * the events run it); the CNN's convolutions appear both as im2col rows of pixels (M = pixels
 * of 1 and of 64 images, N = out channels) and as the per-image NN product engine/ops.c
 * calls.  Our linear rows also add the bias (OpenBLAS does not), so the comparison is, if
 * anything, unfavourable to us.  All operands are 64-byte aligned.  Each row alternates ours
 * and theirs for several rounds and keeps the fastest repetition of each (min-of-N, as the
 * machine is shared and noisy). */
#include "bench.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum bench_op {
	OP_SGEMM = 0,      /* tm_sgemm NN vs cblas NN */
	OP_LINEAR = 1,     /* tm_linear vs cblas NT */
	OP_PACKED = 2,     /* tm_linear_packed vs cblas NT */
	OP_OPENBLAS = 3,   /* cblas_sgemm, the anchor */
} bench_op;

typedef struct gemm_case {
	bench_op op;
	bool nt;           /* OpenBLAS: B transposed (the linear layout) */
	int m, n, k;
	int reps;          /* calls per timed sample */
	const tm_ctx *ctx;
	const float *a, *b, *bias;
	const tm_packed_w *pw;
	float *c;
} gemm_case;

static void run_case(void *arg)
{
	const gemm_case *g = arg;
	for (int r = 0; r < g->reps; r++) {
		switch (g->op) {
		case OP_SGEMM:
			tm_sgemm(g->ctx, false, false, g->m, g->n, g->k, 1.0f, g->a, g->k, g->b,
				 g->n, 0.0f, g->c, g->n);
			break;
		case OP_LINEAR:
			tm_linear(g->ctx, g->m, g->n, g->k, g->a, g->b, g->bias, TM_ACT_NONE, g->c);
			break;
		case OP_PACKED:
			tm_linear_packed(g->ctx, g->m, g->pw, g->a, g->bias, TM_ACT_NONE, g->c);
			break;
		case OP_OPENBLAS:
			cblas_sgemm(CblasRowMajor, CblasNoTrans, g->nt ? CblasTrans : CblasNoTrans,
				    g->m, g->n, g->k, 1.0f, g->a, g->k, g->b, g->nt ? g->k : g->n,
				    0.0f, g->c, g->n);
			break;
		}
	}
}

/* GFLOP/s of ours and OpenBLAS, alternating rounds, best of each. */
static void measure(bench_ctx *b, gemm_case *ours, double *g_ours, double *g_blas)
{
	gemm_case theirs = *ours;
	theirs.op = OP_OPENBLAS;
	double flop = 2.0 * ours->m * ours->n * ours->k;
	/* about 50 us per sample, so the clock's own cost does not count */
	int reps = (int)(50e3 / (flop / 80.0)) + 1;
	ours->reps = theirs.reps = reps > 20000 ? 20000 : reps;
	/* short rounds, many of them: on a machine whose speed drifts for seconds at a time,
	 * both sides then see the same phases */
	double min_s = b->quick ? 0.01 : 0.04;
	int rounds = b->quick ? 1 : 8;
	double t_ours = 1e30, t_blas = 1e30;
	run_case(ours);     /* warm caches and the allocator */
	run_case(&theirs);
	for (int r = 0; r < rounds; r++) {
		double t = bench_time_min(run_case, ours, min_s);
		t_ours = t < t_ours ? t : t_ours;
		t = bench_time_min(run_case, &theirs, min_s);
		t_blas = t < t_blas ? t : t_blas;
	}
	*g_ours = flop * ours->reps / t_ours * 1e-9;
	*g_blas = flop * ours->reps / t_blas * 1e-9;
}

/* Operands are 64-byte aligned, as the engine stores weights (tm_alloc_aligned, safetensors
 * slots) and as OpenBLAS is fastest: malloc's 16-byte alignment made the row-by-row reads of
 * both libraries cross a cache line at every row and the ratio depend on where malloc put W. */
static float *rnd(size_t n, uint32_t seed)
{
	float *x = aligned_alloc(64, (sizeof(float) * n + 63) & ~(size_t)63);
	if (!x)
		abort();
	uint32_t s = seed * 2654435761u + 1;
	for (size_t i = 0; i < n; i++) {
		s = s * 1664525u + 1013904223u;
		x[i] = (float)(s >> 8) / 8388608.0f - 1.0f;
	}
	return x;
}

static void bench_square(bench_ctx *b, const tm_ctx *ctx, int s)
{
	float *a = rnd((size_t)s * s, 1), *bb = rnd((size_t)s * s, 2);
	float *c = rnd((size_t)s * s, 8);
	gemm_case g = { .op = OP_SGEMM, .m = s, .n = s, .k = s, .ctx = ctx, .a = a, .b = bb, .c = c };
	double ours, blas;
	measure(b, &g, &ours, &blas);
	char name[96];
	snprintf(name, sizeof(name), "gemm_f32_%d_vs_openblas", s);
	bench_add(b, name, ours, "GFLOP/s", "openblas", blas, true, 0.9);
	free(a);
	free(bb);
	free(c);
}

/* A plain NN product, as the convolution's im2col GEMM is called: W (cout, cin*9) times the
 * column matrix (cin*9, pixels). */
static void bench_nn(bench_ctx *b, const tm_ctx *ctx, const char *tag, int m, int n, int k)
{
	float *a = rnd((size_t)m * k, 6), *bb = rnd((size_t)k * n, 7);
	float *c = rnd((size_t)m * n, 8);
	gemm_case g = { .op = OP_SGEMM, .m = m, .n = n, .k = k, .ctx = ctx, .a = a, .b = bb, .c = c };
	double ours, blas;
	measure(b, &g, &ours, &blas);
	char name[96];
	snprintf(name, sizeof(name), "%s_m%d_n%d_k%d_vs_openblas", tag, m, n, k);
	bench_add(b, name, ours, "GFLOP/s", "openblas", blas, true, 1.0);
	free(a);
	free(bb);
	free(c);
}

/* One layer shape: tm_linear and tm_linear_packed rows. */
static void bench_layer(bench_ctx *b, const tm_ctx *ctx, const char *tag, int m, int n, int k)
{
	float *x = rnd((size_t)m * k, 3), *w = rnd((size_t)n * k, 4), *bias = rnd((size_t)n, 5);
	float *y = rnd((size_t)m * n, 8);
	tm_packed_w *pw = NULL;
	tm_err err;
	if (tm_linear_pack(ctx, n, k, w, &pw, &err) != 0) {
		fprintf(stderr, "bench_gemm: %s\n", err.msg);
		abort();
	}
	gemm_case g = { .op = OP_LINEAR, .nt = true, .m = m, .n = n, .k = k, .ctx = ctx, .a = x,
			.b = w, .bias = bias, .pw = pw, .c = y };
	double ours, blas;
	char name[96];
	measure(b, &g, &ours, &blas);
	snprintf(name, sizeof(name), "%s_m%d_n%d_k%d_vs_openblas", tag, m, n, k);
	bench_add(b, name, ours, "GFLOP/s", "openblas", blas, true, 1.0);
	g.op = OP_PACKED;
	measure(b, &g, &ours, &blas);
	snprintf(name, sizeof(name), "%s_packed_m%d_n%d_k%d_vs_openblas", tag, m, n, k);
	bench_add(b, name, ours, "GFLOP/s", "openblas", blas, true, 1.0);
	tm_packed_w_free(pw);
	free(x);
	free(w);
	free(bias);
	free(y);
}

const char *bench_openblas_core(void)
{
	return openblas_get_corename();
}

/* OpenBLAS's x86-64 cores by the vectors their SGEMM kernels use. */
static int core_vector_bits(const char *core)
{
	static const char *const wide[] = { "skylakex", "cooperlake", "sapphirerapids" };
	static const char *const avx2[] = { "haswell", "zen", "excavator" };
	for (size_t i = 0; i < sizeof(wide) / sizeof(wide[0]); i++)
		if (strcasecmp(core, wide[i]) == 0)
			return 512;
	for (size_t i = 0; i < sizeof(avx2) / sizeof(avx2[0]); i++)
		if (strcasecmp(core, avx2[i]) == 0)
			return 256;
	return 128;
}

const char *bench_openblas_better_core(const tm_cpu *cpu)
{
	int have = core_vector_bits(openblas_get_corename());
	if (cpu->avx512f && cpu->avx512bw && cpu->avx512vl && have < 512)
		return "SkylakeX";
	if (cpu->avx2 && cpu->fma && have < 256)
		return "Haswell";
	return NULL;
}

void bench_gemm(bench_ctx *b)
{
	openblas_set_num_threads(1);
	tm_ctx ctx = { .isa = tm_isa_best(&b->cpu), .pool = NULL };
	static const int squares[] = { 256, 512, 1024 };
	for (size_t i = 0; i < sizeof(squares) / sizeof(squares[0]); i++)
		bench_square(b, &ctx, squares[i]);

	/* the reference models' weight matrices as (N out, K in), M rows of activations:
	 * 1 (single-stream latency), 64 and 256 (batches) */
	static const int layers[][2] = {
		{ 128, 784 }, { 64, 128 }, { 10, 64 }, { 10, 1600 },       /* MLP, CNN head */
		{ 384, 128 }, { 128, 128 }, { 128, 512 }, { 512, 128 },    /* transformer */
	};
	static const int ms[] = { 1, 64, 256 };
	for (size_t l = 0; l < sizeof(layers) / sizeof(layers[0]); l++)
		for (size_t q = 0; q < sizeof(ms) / sizeof(ms[0]); q++)
			bench_layer(b, &ctx, "linear", ms[q], layers[l][0], layers[l][1]);

	/* the CNN's convolutions as im2col GEMMs, M = output pixels of 1 and of 64 images:
	 * conv1 (26*26 pixels, K = 1*9, N = 32), conv2 (11*11 pixels, K = 32*9, N = 64) */
	bench_layer(b, &ctx, "conv1", 26 * 26, 32, 9);
	bench_layer(b, &ctx, "conv1", 64 * 26 * 26, 32, 9);
	bench_layer(b, &ctx, "conv2", 11 * 11, 64, 288);
	bench_layer(b, &ctx, "conv2", 64 * 11 * 11, 64, 288);
	/* the same convolutions as engine/ops.c runs them, one image per NN product:
	 * Y (cout, pixels) = W (cout, cin*9) * columns (cin*9, pixels) */
	bench_nn(b, &ctx, "conv1_nn", 32, 26 * 26, 9);
	bench_nn(b, &ctx, "conv2_nn", 64, 11 * 11, 288);
}
