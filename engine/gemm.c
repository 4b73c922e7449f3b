/* gemm.c: single-precision GEMM and the linear layer built on it.  This file holds the portable
 * C reference, the dispatcher and the blocking driver; SIMD kernels live in gemm_avx2.c /
 * gemm_avx512.c and are reached through their gemm_kernels table, chosen from ctx->isa.  The
 * driver is GotoBLAS/BLIS-style: C is cut into column blocks (NC), k into near-equal blocks
 * (at most KC deep), and a register-blocked micro-kernel computes each tile with the bias and
 * activation fused into its store.  op(B) is packed per call into contiguous panels unless
 * its rows can be read in place (few row tiles, or a compact block); op(A) is read in place
 * when its rows run along k, packed otherwise.  A single row of X takes a matrix-vector
 * kernel (called directly, without building a job, when one thread does it: batch 1 is
 * latency-bound and a small layer takes tens of nanoseconds), narrow layers with a long k a
 * dot-product kernel, narrow layers (n <= 16) with k < 256 a kernel whose lanes hold columns and
 * steps of k together, and tm_linear_pack keeps W in the panel layout for layers run many times.  With a pool the work is split into column or row ranges of whole tiles; the k
 * blocking depends only on k, so every element is summed in the same order whatever the
 * thread count. */
#include "gemm_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
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

static inline float gelu_tanh(float x)
{
	const float k0 = 0.7978845608028654f; /* sqrt(2/pi) */
	return 0.5f * x * (1.0f + tanhf(k0 * (x + 0.044715f * x * x * x)));
}

/* y(m, n) = act(y + bias), the portable epilogue of tm_linear. */
static void epilogue_portable(int m, int n, const float *bias, tm_act act, float *y)
{
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

/* C = beta * C, the whole product when alpha == 0 or k == 0 (A and B are not read). */
static void scale_c(int m, int n, float beta, float *c, int ldc)
{
	for (int i = 0; i < m; i++) {
		float *crow = c + (size_t)i * ldc;
		if (beta == 0.0f)
			memset(crow, 0, sizeof(float) * (size_t)n);
		else if (beta != 1.0f)
			for (int j = 0; j < n; j++)
				crow[j] *= beta;
	}
}

// ---- kernel sets and buffers ----

static const gemm_kernels *kernels_for(tm_isa isa)
{
	switch (isa) {
	case TM_ISA_AVX512: return &tm_gemm_avx512;
	case TM_ISA_AVX2: return &tm_gemm_avx2;
	default: return NULL;
	}
}

static tm_isa ctx_isa(const tm_ctx *ctx)
{
	return ctx ? ctx->isa : TM_ISA_PORTABLE;
}

/* Packing buffers are bounded by the cache blocks (about a megabyte at most), so like
 * tm_xmalloc they abort on out-of-memory instead of failing the void GEMM call. */
static float *buf_alloc(size_t floats)
{
	void *p = NULL;
	if (posix_memalign(&p, 64, floats * sizeof(float) + 64) != 0) {
		fprintf(stderr, "gemm: out of memory allocating %zu bytes of packing buffer\n",
			floats * sizeof(float));
		abort();
	}
	return p;
}

#define GEMM_STACK_FLOATS 8192 /* packing space on the stack before the heap is used */

// ---- the blocked driver ----

typedef enum gemm_mode {
	GEMM_BLOCKED = 0,  /* packed panels and the register-tile micro-kernel */
	GEMM_DOT = 1,      /* X * W^T along k, no packing */
	GEMM_GEMV = 2,     /* one row against prepacked panels, or B's rows in place */
	GEMM_GEMV_ROWS = 3, /* one row against the rows of W (n, k) */
	GEMM_NARROW = 4,   /* X * W^T with n <= 16: columns and steps of k along the lanes */
	GEMM_SMALLK = 5,   /* A * B with short k: B's rows in registers, A's rows in place */
} gemm_mode;

typedef struct gemm_job {
	const gemm_kernels *ks;
	gemm_mode mode;
	int m, n, k;
	const float *a;     /* op(A)(i, p) = a[i*rs_a + p*cs_a] */
	ptrdiff_t rs_a, cs_a;
	const float *b;     /* op(B)(p, j) = b[p*rs_b + j*cs_b] (unused with bp) */
	ptrdiff_t rs_b, cs_b;
	const float *bp;    /* prepacked full-k panels of B, or NULL */
	float *c;
	ptrdiff_t ldc;
	float alpha, beta;
	const float *bias;  /* (n) or NULL */
	tm_act act;
	bool split_n;       /* tasks own column ranges (else row ranges) */
	int chunk;          /* columns or rows per task */
	int ntasks;
} gemm_job;

/* Read op(A) in place when its rows are contiguous along k (the micro-kernel broadcasts from
 * them; measured faster than packing for every shape we run), else pack: a transposed A, or a
 * row stride of a multiple of 4 KB, which would make the tile's rows collide in one L1 set. */
static bool want_pack_a(const gemm_job *j)
{
	return j->cs_a != 1 || (j->rs_a * (ptrdiff_t)sizeof(float)) % 4096 == 0;
}

/* Read op(B) in place when its rows are contiguous along n and a packed copy would not pay:
 * few row tiles to reuse it, or a block of B rows that spans little memory (measured: a
 * panel spread over a megabyte of rows costs TLB and cache misses that packing avoids).  Not
 * at a row stride of a multiple of 4 KB, whose rows would collide in one L1 set. */
static bool want_direct_b(const gemm_job *j, int rows, int kcb)
{
	size_t span = (size_t)kcb * (size_t)j->rs_b * sizeof(float);
	return j->cs_b == 1 && (j->rs_b * (ptrdiff_t)sizeof(float)) % 4096 != 0 &&
	       (rows <= 6 * j->ks->mr || span <= (256u << 10));
}

/* noinline: its packing space on the stack stays out of the other paths' frames */
static __attribute__((noinline)) void run_blocked(const gemm_job *j, int m0, int m1, int n0,
						 int n1)
{
	const gemm_kernels *ks = j->ks;
	const int MR = ks->mr, NR = ks->nr, k = j->k;
	/* k in near-equal blocks (a function of k alone: the summation order), columns in
	 * near-equal blocks of whole panels */
	int nkb = (k + ks->kc - 1) / ks->kc, kcb = (k + nkb - 1) / nkb;
	int nnb = (n1 - n0 + ks->nc - 1) / ks->nc;
	int ncmax = ((n1 - n0 + nnb - 1) / nnb + NR - 1) / NR * NR;
	int mcmax = m1 - m0 < ks->mc ? (m1 - m0 + MR - 1) / MR * MR : ks->mc;
	bool pack_a = want_pack_a(j);
	bool direct_b = !j->bp && want_direct_b(j, m1 - m0, kcb);
	size_t bfl = j->bp || direct_b ? 0 : (size_t)kcb * ncmax;
	size_t afl = pack_a ? (size_t)kcb * mcmax : 0;
	float stackbuf[GEMM_STACK_FLOATS] __attribute__((aligned(64)));
	float *heap = NULL, *bbuf = stackbuf;
	if (afl + bfl > GEMM_STACK_FLOATS)
		bbuf = heap = buf_alloc(afl + bfl);
	float *abuf = bbuf + bfl;

	for (int jc = n0; jc < n1; jc += ncmax) {
		int nc = n1 - jc < ncmax ? n1 - jc : ncmax;
		for (int kb = 0; kb < nkb; kb++) {
			int pc = kb * kcb, kc = k - pc < kcb ? k - pc : kcb;
			const float *bb;
			size_t bstride;
			if (j->bp) {
				bstride = (size_t)k * NR;
				bb = j->bp + (size_t)(jc / NR) * bstride + (size_t)pc * NR;
			} else if (direct_b) {
				bstride = 0;
				bb = j->b + pc * j->rs_b + jc;
			} else {
				bstride = (size_t)kc * NR;
				ks->pack_b(kc, nc, j->b + pc * j->rs_b + jc * j->cs_b, j->rs_b, j->cs_b,
					   bbuf, bstride);
				bb = bbuf;
			}
			bool last = kb == nkb - 1;
			gemm_epi e = {
				.alpha = j->alpha,
				.beta = kb == 0 ? j->beta : 1.0f,
				.bias = last && j->bias ? j->bias + jc : NULL,
				.act = last ? j->act : TM_ACT_NONE,
			};
			for (int ic = m0; ic < m1; ic += ks->mc) {
				int mc = m1 - ic < ks->mc ? m1 - ic : ks->mc;
				const float *ab = j->a + ic * j->rs_a + pc * j->cs_a;
				ptrdiff_t rs = j->rs_a, cs = j->cs_a, pstride = MR * j->rs_a;
				if (pack_a) {
					ks->pack_a(mc, kc, ab, rs, cs, abuf);
					ab = abuf;
					rs = 1;
					cs = MR;
					pstride = (ptrdiff_t)kc * MR;
				}
				for (int ir = 0; ir < mc; ir += MR) {
					int mr = mc - ir < MR ? mc - ir : MR;
					const float *ap = ab + (ir / MR) * pstride;
					float *crow = j->c + (ic + ir) * j->ldc + jc;
					for (int jr = 0; jr < nc; jr += NR) {
						gemm_epi te = e;
						te.bias = e.bias ? e.bias + jr : NULL;
						const float *bt = direct_b ? bb + jr : bb + (jr / NR) * bstride;
						ks->tile(mr, nc - jr < NR ? nc - jr : NR, kc, ap, rs, cs,
							 bt, direct_b ? j->rs_b : NR, crow + jr, j->ldc, &te);
					}
				}
			}
		}
	}
	free(heap);
}

static void run_range(const gemm_job *j, int m0, int m1, int n0, int n1)
{
	gemm_epi e = {
		.alpha = j->alpha,
		.beta = j->beta,
		.bias = j->bias ? j->bias + n0 : NULL,
		.act = j->act,
	};
	switch (j->mode) {
	case GEMM_DOT:
		j->ks->dot(m1 - m0, n1 - n0, j->k, j->a + m0 * j->rs_a, j->rs_a, j->b + n0 * j->cs_b,
			   j->cs_b, j->c + m0 * j->ldc + n0, j->ldc, &e);
		break;
	case GEMM_NARROW:
		j->ks->narrow(m1 - m0, n1 - n0, j->k, j->a + m0 * j->rs_a, j->rs_a,
			      j->b + n0 * j->cs_b, j->cs_b, j->c + m0 * j->ldc + n0, j->ldc, &e);
		break;
	case GEMM_SMALLK:
		j->ks->smallk(m1 - m0, n1 - n0, j->k, j->a + m0 * j->rs_a, j->rs_a, j->b + n0,
			      j->rs_b, j->c + m0 * j->ldc + n0, j->ldc, &e);
		break;
	case GEMM_GEMV_ROWS:
		j->ks->gemv_rows(n1 - n0, j->k, j->a, j->b + n0 * j->cs_b, j->cs_b, j->c + n0, &e);
		break;
	case GEMM_GEMV:
		if (j->bp)
			j->ks->gemv_panels(n1 - n0, j->k, j->a,
					   j->bp + (size_t)(n0 / j->ks->nr) * j->k * j->ks->nr,
					   (size_t)j->k * j->ks->nr, j->ks->nr, j->c + n0, &e);
		else
			j->ks->gemv_panels(n1 - n0, j->k, j->a, j->b + n0, j->ks->nr, j->rs_b,
					   j->c + n0, &e);
		break;
	default:
		run_blocked(j, m0, m1, n0, n1);
		break;
	}
}

static void run_task(void *arg, int task)
{
	const gemm_job *j = arg;
	int lo = task * j->chunk;
	if (j->split_n) {
		int hi = lo + j->chunk < j->n ? lo + j->chunk : j->n;
		run_range(j, 0, j->m, lo, hi);
	} else {
		int hi = lo + j->chunk < j->m ? lo + j->chunk : j->m;
		run_range(j, lo, hi, 0, j->n);
	}
}

#define GEMM_MT_MIN_FLOPS (1 << 18) /* multiply-adds below which one thread does it all */
#define GEMM_TASKS_PER_THREAD 3     /* smaller tasks balance a pool sharing busy cores */

/* Cut the job into column ranges (or row ranges when there are too few columns), whole tiles
 * each, a few per thread; the pool hands them out as threads become free. */
static void run_job(const tm_ctx *ctx, gemm_job *j)
{
	int threads = tm_pool_threads(ctx ? ctx->pool : NULL);
	int mq = j->mode == GEMM_BLOCKED ? j->ks->mr : j->mode == GEMM_NARROW ? 32 : 4;
	int nq = j->mode == GEMM_DOT ? 16 : j->ks->nr;
	int mb = (j->m + mq - 1) / mq, nb = (j->n + nq - 1) / nq;
	double work = (double)j->m * j->n * j->k;
	j->ntasks = 1;
	j->split_n = true;
	j->chunk = j->n;
	if (threads > 1 && work >= GEMM_MT_MIN_FLOPS) {
		int want = threads * GEMM_TASKS_PER_THREAD;
		if (work / want < GEMM_MT_MIN_FLOPS / 2)
			want = threads;
		if (nb >= threads || (nb >= mb && nb > 1)) {
			int per = (nb + want - 1) / want;
			j->chunk = per * nq;
			j->ntasks = (j->n + j->chunk - 1) / j->chunk;
		} else if (mb > 1) {
			int per = (mb + want - 1) / want;
			j->split_n = false;
			j->chunk = per * mq;
			j->ntasks = (j->m + j->chunk - 1) / j->chunk;
		}
	}
	if (j->ntasks == 1)
		run_range(j, 0, j->m, 0, j->n);
	else
		tm_pool_run(ctx->pool, j->ntasks, run_task, j);
}

/* True when one thread does a job of m * n * k multiply-adds (run_job's rule), so a single
 * row can go straight to its kernel without building a job (batch 1 is latency-bound). */
static bool one_thread(const tm_ctx *ctx, int m, int n, int k)
{
	return !ctx || !ctx->pool || (double)m * n * k < GEMM_MT_MIN_FLOPS ||
	       tm_pool_threads(ctx->pool) <= 1;
}

/* The dot-product kernel wins when few rows or few columns leave the tile half empty. */
static bool want_dot(int m, int n, int k)
{
	return (m <= 2 || (n <= 16 && k >= 256)) && k >= 8;
}

/* The narrow kernel fills the lanes with columns and steps of k when few columns would leave
 * most of the tile's lanes idle (timed at k = 64, m 64 and 256: faster than the tile up to
 * n = 16; make bench's n = 10 rows are in docs/gemm.md). */
static bool want_narrow(const gemm_kernels *ks, int m, int n, int k)
{
	return ks->narrow && n <= 16 && m >= 16 && k <= ks->narrow_kmax;
}

/* With a short k the blocked tile does little arithmetic per call and per stored vector;
 * holding B's few rows in registers and streaming A's rows past them beat it (and OpenBLAS)
 * on the CNN's first convolution, k = 9 (make bench's conv1_nn row, docs/gemm.md). */
static bool want_smallk(const gemm_kernels *ks, int k)
{
	return ks->smallk && k <= ks->smallk_kmax;
}

static void sgemm_simd(const tm_ctx *ctx, const gemm_kernels *ks, bool trans_a, bool trans_b,
		       int m, int n, int k, float alpha, const float *a, int lda,
		       const float *b, int ldb, float beta, float *c, int ldc,
		       const float *bias, tm_act act)
{
	gemm_job j = {
		.ks = ks,
		.mode = m == 1 && (!trans_a || lda == 1) ? (trans_b ? GEMM_GEMV_ROWS : GEMM_GEMV)
		      : !trans_a && trans_b && want_dot(m, n, k) ? GEMM_DOT
		      : !trans_a && trans_b && want_narrow(ks, m, n, k) ? GEMM_NARROW
		      : !trans_a && !trans_b && want_smallk(ks, k) ? GEMM_SMALLK
		      : GEMM_BLOCKED,
		.m = m, .n = n, .k = k,
		.a = a,
		.rs_a = trans_a ? 1 : lda,
		.cs_a = trans_a ? lda : 1,
		.b = b,
		.rs_b = trans_b ? 1 : ldb,
		.cs_b = trans_b ? ldb : 1,
		.c = c,
		.ldc = ldc,
		.alpha = alpha,
		.beta = beta,
		.bias = bias,
		.act = act,
	};
	run_job(ctx, &j);
}

// ---- public entry points ----

void tm_sgemm(const tm_ctx *ctx, bool trans_a, bool trans_b, int m, int n, int k,
	      float alpha, const float *a, int lda, const float *b, int ldb,
	      float beta, float *c, int ldc)
{
	if (m <= 0 || n <= 0)
		return;
	if (k <= 0 || alpha == 0.0f) {
		scale_c(m, n, beta, c, ldc);
		return;
	}
	const gemm_kernels *ks = kernels_for(ctx_isa(ctx));
	if (!ks) {
		sgemm_portable(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
		return;
	}
	sgemm_simd(ctx, ks, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, NULL,
		   TM_ACT_NONE);
}

// ---- linear layer ----

void tm_linear(const tm_ctx *ctx, int m, int n, int k, const float *x, const float *w,
	       const float *bias, tm_act act, float *y)
{
	if (m <= 0 || n <= 0)
		return;
	const gemm_kernels *ks = kernels_for(ctx_isa(ctx));
	if (!ks || k <= 0) {
		tm_sgemm(NULL, false, true, m, n, k, 1.0f, x, k, w, k, 0.0f, y, n);
		epilogue_portable(m, n, bias, act, y);
		return;
	}
	if (m == 1 && one_thread(ctx, m, n, k)) {
		gemm_epi e = { .alpha = 1.0f, .beta = 0.0f, .bias = bias, .act = act };
		ks->gemv_rows(n, k, x, w, k, y, &e);
		return;
	}
	sgemm_simd(ctx, ks, false, true, m, n, k, 1.0f, x, k, w, k, 0.0f, y, n, bias, act);
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

// ---- prepacked weights ----

int tm_linear_pack(const tm_ctx *ctx, int n, int k, const float *w, tm_packed_w **out,
		   tm_err *err)
{
	*out = NULL;
	if (n < 1 || k < 1)
		return tm_err_set(err, TM_EINVAL, "linear_pack",
				  "linear_pack: weight shape (%d, %d) must be at least (1, 1)", n, k);
	tm_isa isa = ctx_isa(ctx);
	const gemm_kernels *ks = kernels_for(isa);
	bool panels = ks && n > 16;
	int nr = panels ? ks->nr : 1;
	size_t rows = panels ? (size_t)(n + nr - 1) / nr * nr : (size_t)n;
	size_t floats = rows * (size_t)k;
	if (floats > SIZE_MAX / sizeof(float) / 2)
		return tm_err_set(err, TM_ELIMIT, "linear_pack",
				  "linear_pack: weight shape (%d, %d) is too large", n, k);
	tm_packed_w *pw = calloc(1, sizeof(*pw));
	float *data = tm_alloc_hot(floats * sizeof(float));
	if (!pw || !data) {
		free(pw);
		tm_free_aligned(data);
		return tm_err_set(err, TM_ENOMEM, "linear_pack",
				  "linear_pack: cannot allocate %zu bytes for a (%d, %d) weight",
				  floats * sizeof(float), n, k);
	}
	pw->n = n;
	pw->k = k;
	pw->isa = isa;
	pw->layout = panels ? GEMM_LAYOUT_PANELS : GEMM_LAYOUT_ROWS;
	pw->nr = nr;
	pw->data = data;
	if (panels)
		ks->pack_b(k, n, w, 1, k, data, (size_t)k * nr);
	else
		memcpy(data, w, sizeof(float) * (size_t)n * k);
	*out = pw;
	return 0;
}

void tm_packed_w_free(tm_packed_w *pw)
{
	if (!pw)
		return;
	tm_free_aligned(pw->data);
	free(pw);
}

/* The portable reference on the panel layout: same order of operations as tm_linear's. */
static void linear_panels_portable(int m, const tm_packed_w *pw, const float *x, float *y)
{
	int n = pw->n, k = pw->k, nr = pw->nr;
	for (int i = 0; i < m; i++) {
		const float *xr = x + (size_t)i * k;
		for (int jj = 0; jj < n; jj++) {
			const float *col = pw->data + (size_t)(jj / nr) * k * nr + jj % nr;
			float s = 0.0f;
			for (int p = 0; p < k; p++)
				s += xr[p] * col[(size_t)p * nr];
			y[(size_t)i * n + jj] = 0.0f + s;
		}
	}
}

void tm_linear_packed(const tm_ctx *ctx, int m, const tm_packed_w *pw, const float *x,
		      const float *bias, tm_act act, float *y)
{
	if (m <= 0)
		return;
	int n = pw->n, k = pw->k;
	tm_isa isa = ctx_isa(ctx);
	const gemm_kernels *ks = isa >= pw->isa ? kernels_for(pw->isa) : NULL;
	if (ks && m == 1 && one_thread(ctx, m, n, k)) {
		gemm_epi e = { .alpha = 1.0f, .beta = 0.0f, .bias = bias, .act = act };
		if (pw->layout == GEMM_LAYOUT_ROWS)
			ks->gemv_rows(n, k, x, pw->data, k, y, &e);
		else
			ks->gemv_panels(n, k, x, pw->data, (size_t)k * pw->nr, pw->nr, y, &e);
		return;
	}
	if (pw->layout == GEMM_LAYOUT_ROWS) {
		tm_ctx c2 = { .isa = ks ? pw->isa : TM_ISA_PORTABLE, .pool = ctx ? ctx->pool : NULL };
		tm_linear(&c2, m, n, k, x, pw->data, bias, act, y);
		return;
	}
	if (!ks) {
		linear_panels_portable(m, pw, x, y);
		epilogue_portable(m, n, bias, act, y);
		return;
	}
	gemm_job j = {
		.ks = ks,
		.mode = m == 1 ? GEMM_GEMV : GEMM_BLOCKED,
		.m = m, .n = n, .k = k,
		.a = x,
		.rs_a = k,
		.cs_a = 1,
		.bp = pw->data,
		.c = y,
		.ldc = n,
		.alpha = 1.0f,
		.beta = 0.0f,
		.bias = bias,
		.act = act,
	};
	run_job(ctx, &j);
}
