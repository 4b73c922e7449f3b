/* ops.c: forward and backward of the layers the three model families use, except the linear
 * layer (gemm.c): 3x3 convolution (im2col + tm_sgemm with a fused bias + activation epilogue),
 * 2x2 max pooling, ReLU and GELU, LayerNorm, softmax, token + position embeddings, causal
 * multi-head self-attention with an optional segment mask, and softmax cross-entropy.  Work is
 * split over the ctx's pool by images, fixed image groups, fixed row chunks or (sequence, head)
 * pairs; no split depends on the thread count in a way that changes an element's arithmetic,
 * so results are bit-identical for any pool.  GEMMs issued from inside a task run
 * single-threaded (the pool is not re-entrant).  The loops worth vectorizing outside GEMM go
 * through the kernel set of ctx->isa (ops_int.h: attention rows, conv epilogue, LayerNorm and
 * GELU rows); functions without a ctx use the portable set, which is the reference. */
#include "engine.h"
#include "ops_int.h"

#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// ---- helpers ----

/* Image groups of the conv dW reduction: each group sums its images' GEMMs in order, then the
 * groups are added in order.  Fixed (not the thread count), so the rounding of every element
 * is the same for any pool. */
#define CONV_DW_GROUPS 4

/* The ctx for GEMMs issued inside a pool task: same kernels, no pool. */
static tm_ctx ctx_solo(const tm_ctx *ctx)
{
	tm_ctx c = { .isa = ctx ? ctx->isa : TM_ISA_PORTABLE, .pool = NULL };
	return c;
}

static tm_pool *ctx_pool(const tm_ctx *ctx)
{
	return ctx ? ctx->pool : NULL;
}

/* Per-task work buffers: slot 0 is the caller's scratch, slots 1.. come from one allocation.
 * When that allocation fails the work runs in one slot, which gives identical results. */
typedef struct slots {
	int n;          /* slots in use, >= 1 */
	size_t stride;  /* floats between slot buffers (rounded to 64 bytes) */
	float *first;   /* the caller's scratch */
	float *extra;   /* (n - 1, stride) or NULL */
} slots;

static void slots_init(slots *s, const tm_ctx *ctx, int units, float *scratch, size_t floats)
{
	int n = tm_pool_threads(ctx_pool(ctx));
	if (n > units)
		n = units;
	if (n < 1)
		n = 1;
	s->first = scratch;
	s->stride = (floats + 15) & ~(size_t)15;
	s->extra = NULL;
	if (n > 1) {
		size_t total = s->stride * (size_t)(n - 1);
		if (s->stride && total / s->stride == (size_t)(n - 1) && total < SIZE_MAX / sizeof(float))
			s->extra = tm_alloc_aligned(total * sizeof(float));
		if (!s->extra)
			n = 1;
	}
	s->n = n;
}

static float *slots_buf(const slots *s, int j)
{
	return j == 0 ? s->first : s->extra + s->stride * (size_t)(j - 1);
}

static void slots_release(slots *s)
{
	tm_free_aligned(s->extra);
	s->extra = NULL;
}

/* Units [lo, hi) of slot j when units are spread evenly over nslots. */
static void split_range(int units, int nslots, int j, int *lo, int *hi)
{
	*lo = (int)((int64_t)units * j / nslots);
	*hi = (int)((int64_t)units * (j + 1) / nslots);
}

/* GELU, tanh approximation, evaluated as x * sigmoid(2u) = 0.5 x (1 + tanh(u)) with
 * u = sqrt(2/pi) (x + 0.044715 x^3): the same function, without the cancellation of
 * 1 + tanh(u) for negative x, and one expf instead of a tanhf. */
static inline float gelu_gate(float x)
{
	const float k2 = 1.5957691216057308f; /* 2 sqrt(2/pi) */
	return 1.0f / (1.0f + expf(-k2 * x * (1.0f + 0.044715f * x * x)));
}

static inline float gelu_tanh(float x)
{
	return x * gelu_gate(x);
}

/* GELU'(x) = s + x s (1 - s) 2 sqrt(2/pi) (1 + 3 * 0.044715 x^2), s = sigmoid(2u). */
static inline float gelu_tanh_grad(float x)
{
	const float k2 = 1.5957691216057308f;
	float s = gelu_gate(x);
	return s + x * s * (1.0f - s) * k2 * (1.0f + 3.0f * 0.044715f * x * x);
}

/* x > 0 ? v : 0 without a branch (GCC keeps a compare-and-jump for the ternary, which
 * mispredicts on activations of random sign); NaN and -0 give +0 like the ternary. */
static inline float keep_if_positive(float x, float v)
{
	uint32_t u;
	memcpy(&u, &v, sizeof(u));
	u &= 0u - (uint32_t)(x > 0.0f);
	memcpy(&v, &u, sizeof(v));
	return v;
}

// ---- portable kernels (the reference row of ops_kernels) ----

/* row[j] = exp(row[j] - mx) for j < len; returns the sum. */
static float exp_shift_sum_portable(float *row, int len, float mx)
{
	float s = 0.0f;
	for (int j = 0; j < len; j++) {
		float e = expf(row[j] - mx);
		row[j] = e;
		s += e;
	}
	return s;
}

static void gelu_forward_portable(size_t len, const float *x, float *y)
{
	for (size_t i = 0; i < len; i++)
		y[i] = gelu_tanh(x[i]);
}

static void gelu_backward_portable(size_t len, const float *x, const float *dy, float *dx)
{
	for (size_t i = 0; i < len; i++)
		dx[i] = dy[i] * gelu_tanh_grad(x[i]);
}

static void dot_cols_portable(int hd, const float *q, const float *kt, ptrdiff_t ldkt, int n,
			      float scale, float *s)
{
	for (int j = 0; j < n; j++)
		s[j] = 0.0f;
	for (int c = 0; c < hd; c++) {
		const float *r = kt + (size_t)c * ldkt;
		float qc = q[c];
		for (int j = 0; j < n; j++)
			s[j] += qc * r[j];
	}
	for (int j = 0; j < n; j++)
		s[j] *= scale;
}

static void axpy_rows_portable(int n, const float *p, const float *rows, ptrdiff_t ld, int hd,
			       float *out)
{
	for (int c = 0; c < hd; c++)
		out[c] = 0.0f;
	for (int j = 0; j < n; j++) {
		const float *r = rows + (size_t)j * ld;
		float pj = p[j];
		for (int c = 0; c < hd; c++)
			out[c] += pj * r[c];
	}
}

static void rank1_rows_portable(int n, const float *a, const float *x, int hd, float *rows,
				ptrdiff_t ld)
{
	for (int j = 0; j < n; j++) {
		float *r = rows + (size_t)j * ld;
		float aj = a[j];
		for (int c = 0; c < hd; c++)
			r[c] += aj * x[c];
	}
}

static void bias_act_rows_portable(int rows, size_t cols, float *y, const float *b, tm_act act)
{
	for (int r = 0; r < rows; r++) {
		float *row = y + (size_t)r * cols;
		float bv = b ? b[r] : 0.0f;
		if (act == TM_ACT_RELU)
			for (size_t j = 0; j < cols; j++)
				row[j] = keep_if_positive(row[j] + bv, row[j] + bv);
		else if (act == TM_ACT_GELU)
			for (size_t j = 0; j < cols; j++)
				row[j] = gelu_tanh(row[j] + bv);
		else if (b)
			for (size_t j = 0; j < cols; j++)
				row[j] += bv;
	}
}

/* Sums in eight independent chains: one chain is bound by the add latency. */
static void ln_row_portable(int d, const float *x, const float *g, const float *b, float *y,
			    float *mean, float *rstd)
{
	float acc[8] = { 0 };
	int j = 0;
	for (; j + 8 <= d; j += 8)
		for (int l = 0; l < 8; l++)
			acc[l] += x[j + l];
	float s = 0.0f;
	for (int l = 0; l < 8; l++)
		s += acc[l];
	for (; j < d; j++)
		s += x[j];
	float mu = s / (float)d;
	for (int l = 0; l < 8; l++)
		acc[l] = 0.0f;
	for (j = 0; j + 8 <= d; j += 8)
		for (int l = 0; l < 8; l++)
			acc[l] += (x[j + l] - mu) * (x[j + l] - mu);
	float v = 0.0f;
	for (int l = 0; l < 8; l++)
		v += acc[l];
	for (; j < d; j++)
		v += (x[j] - mu) * (x[j] - mu);
	float rs = 1.0f / sqrtf(v / (float)d + 1e-5f);
	for (j = 0; j < d; j++)
		y[j] = (x[j] - mu) * rs * (g ? g[j] : 1.0f) + (b ? b[j] : 0.0f);
	if (mean)
		*mean = mu;
	if (rstd)
		*rstd = rs;
}

/* dxhat = dy * gamma; dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)). */
static void ln_row_grad_portable(int d, const float *x, const float *g, float mu, float rs,
				 const float *dy, float *dx, float *dg, float *db)
{
	float a1[8] = { 0 }, a2[8] = { 0 };
	int j = 0;
	for (; j + 8 <= d; j += 8)
		for (int l = 0; l < 8; l++) {
			float gv = dy[j + l] * (g ? g[j + l] : 1.0f);
			a1[l] += gv;
			a2[l] += gv * (x[j + l] - mu) * rs;
		}
	float sg = 0.0f, sgx = 0.0f;
	for (int l = 0; l < 8; l++)
		sg += a1[l], sgx += a2[l];
	for (; j < d; j++) {
		float gv = dy[j] * (g ? g[j] : 1.0f);
		sg += gv;
		sgx += gv * (x[j] - mu) * rs;
	}
	sg /= (float)d;
	sgx /= (float)d;
	for (j = 0; j < d; j++) {
		float xh = (x[j] - mu) * rs;
		if (dg)
			dg[j] += dy[j] * xh;
		if (db)
			db[j] += dy[j];
		if (dx)
			dx[j] = rs * (dy[j] * (g ? g[j] : 1.0f) - sg - xh * sgx);
	}
}

static void softmax_row_portable(float *s, int n)
{
	float mx = -INFINITY;
	for (int j = 0; j < n; j++)
		mx = s[j] > mx ? s[j] : mx;
	float inv = 1.0f / exp_shift_sum_portable(s, n, mx);
	for (int j = 0; j < n; j++)
		s[j] *= inv;
}

static void softmax_grad_row_portable(int n, const float *p, float *dp, float scale)
{
	float dot = 0.0f;
	for (int j = 0; j < n; j++)
		dot += p[j] * dp[j];
	for (int j = 0; j < n; j++)
		dp[j] = scale * p[j] * (dp[j] - dot);
}

static const ops_kernels ops_portable = {
	.ln_row = ln_row_portable,
	.ln_row_grad = ln_row_grad_portable,
	.bias_act_rows = bias_act_rows_portable,
	.softmax_row = softmax_row_portable,
	.softmax_grad_row = softmax_grad_row_portable,
	.dot_cols = dot_cols_portable,
	.axpy_rows = axpy_rows_portable,
	.rank1_rows = rank1_rows_portable,
	.exp_shift_sum = exp_shift_sum_portable,
	.gelu_forward = gelu_forward_portable,
	.gelu_backward = gelu_backward_portable,
};

static const ops_kernels *const ops_sets[] = {
	[TM_ISA_PORTABLE] = &ops_portable,
	[TM_ISA_AVX2] = &tm_ops_avx2,
	[TM_ISA_AVX512] = &tm_ops_avx512,
};

const ops_kernels *tm_ops_for(tm_isa isa)
{
	if ((unsigned)isa < sizeof(ops_sets) / sizeof(ops_sets[0]) && ops_sets[isa])
		return ops_sets[isa];
	return &ops_portable;
}

// ---- conv3x3 ----

size_t tm_conv3x3_scratch_floats(int cin, int h, int w)
{
	if (cin <= 0 || h < 3 || w < 3)
		return 0;
	return (size_t)cin * 9 * (size_t)(h - 2) * (size_t)(w - 2);
}

/* Sum of n floats in eight independent chains (a single chain is bound by add latency). */
static double sum8(const float *x, size_t n)
{
	float acc[8] = { 0 };
	size_t i = 0;
	for (; i + 8 <= n; i += 8)
		for (int l = 0; l < 8; l++)
			acc[l] += x[i + l];
	double s = 0;
	for (int l = 0; l < 8; l++)
		s += acc[l];
	for (; i < n; i++)
		s += x[i];
	return s;
}

/* col (cin*9, oh*ow): row (ci, ky, kx) holds x[ci][oy + ky][ox + kx] over all outputs. */
static void im2col3x3(int cin, int h, int w, const float *x, float *col)
{
	int oh = h - 2, ow = w - 2;
	size_t p = (size_t)oh * ow;
	for (int ci = 0; ci < cin; ci++)
		for (int ky = 0; ky < 3; ky++)
			for (int kx = 0; kx < 3; kx++) {
				float *dst = col + ((size_t)ci * 9 + ky * 3 + kx) * p;
				const float *src = x + (size_t)ci * h * w + (size_t)ky * w + kx;
				for (int oy = 0; oy < oh; oy++)
					memcpy(dst + (size_t)oy * ow, src + (size_t)oy * w,
					       sizeof(float) * (size_t)ow);
			}
}

/* The adjoint of im2col3x3: dx (cin, h, w) = sum of col entries over the taps that read it. */
static void col2im3x3(int cin, int h, int w, const float *col, float *dx)
{
	int oh = h - 2, ow = w - 2;
	size_t p = (size_t)oh * ow;
	memset(dx, 0, sizeof(float) * (size_t)cin * h * w);
	for (int ci = 0; ci < cin; ci++)
		for (int ky = 0; ky < 3; ky++)
			for (int kx = 0; kx < 3; kx++) {
				const float *src = col + ((size_t)ci * 9 + ky * 3 + kx) * p;
				float *dst = dx + (size_t)ci * h * w + (size_t)ky * w + kx;
				for (int oy = 0; oy < oh; oy++) {
					float *d = dst + (size_t)oy * w;
					const float *s = src + (size_t)oy * ow;
					for (int ox = 0; ox < ow; ox++)
						d[ox] += s[ox];
				}
			}
}

typedef struct conv_job {
	const tm_ctx *ctx;
	const ops_kernels *kern;
	int n, cin, h, w, cout;
	const float *x, *wt, *b, *dy;
	tm_act act;
	float *y, *dx, *dw;
	int groups;          /* dW image groups */
	float *partial;      /* (groups - 1, cout * cin * 9): dW of groups 1.. */
	slots sl;
} conv_job;

static void conv_fwd_task(void *arg, int j)
{
	conv_job *c = arg;
	tm_ctx solo = ctx_solo(c->ctx);
	float *col = slots_buf(&c->sl, j);
	int k = c->cin * 9;
	size_t p = (size_t)(c->h - 2) * (c->w - 2);
	size_t xs = (size_t)c->cin * c->h * c->w, ys = (size_t)c->cout * p;
	int lo, hi;
	split_range(c->n, c->sl.n, j, &lo, &hi);
	for (int i = lo; i < hi; i++) {
		float *y = c->y + ys * (size_t)i;
		im2col3x3(c->cin, c->h, c->w, c->x + xs * (size_t)i, col);
		tm_sgemm(&solo, false, false, c->cout, (int)p, k, 1.0f, c->wt, k, col, (int)p,
			 0.0f, y, (int)p);
		c->kern->bias_act_rows(c->cout, p, y, c->b, c->act);
	}
}

void tm_conv3x3_forward(const tm_ctx *ctx, int n, int cin, int h, int w, int cout,
			const float *x, const float *wt, const float *b, tm_act act, float *y,
			float *scratch)
{
	if (n <= 0 || cin <= 0 || cout <= 0 || h < 3 || w < 3)
		return;
	assert(scratch);
	conv_job c = { .ctx = ctx, .kern = tm_ops_for(ctx ? ctx->isa : TM_ISA_PORTABLE), .n = n,
		       .cin = cin, .h = h, .w = w, .cout = cout, .x = x, .wt = wt, .b = b,
		       .act = act, .y = y };
	slots_init(&c.sl, ctx, n, scratch, tm_conv3x3_scratch_floats(cin, h, w));
	tm_pool_run(ctx_pool(ctx), c.sl.n, conv_fwd_task, &c);
	slots_release(&c.sl);
}

/* dW of the image groups of slot j: group 0 accumulates into dw, the others into partials. */
static void conv_dw_task(void *arg, int j)
{
	conv_job *c = arg;
	tm_ctx solo = ctx_solo(c->ctx);
	float *col = slots_buf(&c->sl, j);
	int k = c->cin * 9;
	int p = (c->h - 2) * (c->w - 2);
	size_t xs = (size_t)c->cin * c->h * c->w, ys = (size_t)c->cout * p;
	int glo, ghi;
	split_range(c->groups, c->sl.n, j, &glo, &ghi);
	for (int g = glo; g < ghi; g++) {
		float *dst = g == 0 ? c->dw : c->partial + (size_t)(g - 1) * c->cout * k;
		int lo, hi;
		split_range(c->n, c->groups, g, &lo, &hi);
		for (int i = lo; i < hi; i++) {
			im2col3x3(c->cin, c->h, c->w, c->x + xs * (size_t)i, col);
			tm_sgemm(&solo, false, true, c->cout, k, p, 1.0f, c->dy + ys * (size_t)i, p,
				 col, p, 1.0f, dst, k);
		}
	}
}

/* dx of the images of slot j: dcol = W^T dy, then col2im. */
static void conv_dx_task(void *arg, int j)
{
	conv_job *c = arg;
	tm_ctx solo = ctx_solo(c->ctx);
	float *dcol = slots_buf(&c->sl, j);
	int k = c->cin * 9;
	int p = (c->h - 2) * (c->w - 2);
	size_t xs = (size_t)c->cin * c->h * c->w, ys = (size_t)c->cout * p;
	int lo, hi;
	split_range(c->n, c->sl.n, j, &lo, &hi);
	for (int i = lo; i < hi; i++) {
		tm_sgemm(&solo, true, false, k, p, c->cout, 1.0f, c->wt, k, c->dy + ys * (size_t)i,
			 p, 0.0f, dcol, p);
		col2im3x3(c->cin, c->h, c->w, dcol, c->dx + xs * (size_t)i);
	}
}

void tm_conv3x3_backward(const tm_ctx *ctx, int n, int cin, int h, int w, int cout,
			 const float *x, const float *wt, const float *dy, float *dx, float *dw,
			 float *db, float *scratch)
{
	if (n <= 0 || cin <= 0 || cout <= 0 || h < 3 || w < 3)
		return;
	assert(scratch);
	size_t floats = tm_conv3x3_scratch_floats(cin, h, w);
	size_t p = (size_t)(h - 2) * (w - 2);
	conv_job c = { .ctx = ctx, .n = n, .cin = cin, .h = h, .w = w, .cout = cout,
		       .x = x, .wt = wt, .dy = dy, .dx = dx, .dw = dw };
	if (dw) {
		size_t nw = (size_t)cout * cin * 9;
		c.groups = n < CONV_DW_GROUPS ? n : CONV_DW_GROUPS;
		c.partial = c.groups > 1 ? tm_xcalloc((size_t)(c.groups - 1) * nw, sizeof(float)) : NULL;
		slots_init(&c.sl, ctx, c.groups, scratch, floats);
		tm_pool_run(ctx_pool(ctx), c.sl.n, conv_dw_task, &c);
		slots_release(&c.sl);
		for (int g = 1; g < c.groups; g++) {
			const float *pg = c.partial + (size_t)(g - 1) * nw;
			for (size_t q = 0; q < nw; q++)
				dw[q] += pg[q];
		}
		free(c.partial);
	}
	if (db)
		for (int co = 0; co < cout; co++) {
			double s = 0;
			for (int i = 0; i < n; i++)
				s += sum8(dy + ((size_t)i * cout + co) * p, p);
			db[co] += (float)s;
		}
	if (dx) {
		slots_init(&c.sl, ctx, n, scratch, floats);
		tm_pool_run(ctx_pool(ctx), c.sl.n, conv_dx_task, &c);
		slots_release(&c.sl);
	}
}

// ---- maxpool 2x2 ----

void tm_maxpool2_forward(int n, int c, int h, int w, const float *x, float *y, int32_t *idx)
{
	int oh = h / 2, ow = w / 2;
	for (size_t pl = 0; pl < (size_t)n * c; pl++) {
		const float *xp = x + pl * h * w;
		float *yp = y + pl * oh * ow;
		int32_t *ip = idx ? idx + pl * oh * ow : NULL;
		for (int oy = 0; oy < oh; oy++)
			for (int ox = 0; ox < ow; ox++) {
				int best = 2 * oy * w + 2 * ox;
				const int cand[3] = { best + 1, best + w, best + w + 1 };
				for (int q = 0; q < 3; q++)
					if (xp[cand[q]] > xp[best])
						best = cand[q];
				yp[oy * ow + ox] = xp[best];
				if (ip)
					ip[oy * ow + ox] = best;
			}
	}
}

void tm_maxpool2_backward(int n, int c, int h, int w, const int32_t *idx, const float *dy,
			  float *dx)
{
	int oh = h / 2, ow = w / 2;
	memset(dx, 0, sizeof(float) * (size_t)n * c * h * w);
	for (size_t pl = 0; pl < (size_t)n * c; pl++) {
		float *dp = dx + pl * h * w;
		const float *gp = dy + pl * oh * ow;
		const int32_t *ip = idx + pl * oh * ow;
		for (int q = 0; q < oh * ow; q++)
			dp[ip[q]] += gp[q];
	}
}

// ---- activations ----

void tm_relu_forward(size_t len, const float *x, float *y)
{
	for (size_t i = 0; i < len; i++)
		y[i] = keep_if_positive(x[i], x[i]);
}

void tm_relu_backward(size_t len, const float *x, const float *dy, float *dx)
{
	for (size_t i = 0; i < len; i++)
		dx[i] = keep_if_positive(x[i], dy[i]);
}

void tm_gelu_forward(size_t len, const float *x, float *y)
{
	gelu_forward_portable(len, x, y);
}

void tm_gelu_backward(size_t len, const float *x, const float *dy, float *dx)
{
	gelu_backward_portable(len, x, dy, dx);
}

/* Element-wise work is cut into fixed chunks; each element's result is independent of them. */
#define GELU_CHUNK 16384

typedef struct gelu_job {
	const ops_kernels *k;
	size_t len;
	const float *x, *dy;
	float *out;
} gelu_job;

static void gelu_task(void *arg, int task)
{
	gelu_job *g = arg;
	size_t lo = (size_t)task * GELU_CHUNK;
	size_t n = g->len - lo < GELU_CHUNK ? g->len - lo : GELU_CHUNK;
	if (g->dy)
		g->k->gelu_backward(n, g->x + lo, g->dy + lo, g->out + lo);
	else
		g->k->gelu_forward(n, g->x + lo, g->out + lo);
}

static void gelu_run(const tm_ctx *ctx, size_t len, const float *x, const float *dy, float *out)
{
	gelu_job g = { .k = tm_ops_for(ctx ? ctx->isa : TM_ISA_PORTABLE), .len = len, .x = x,
		       .dy = dy, .out = out };
	size_t chunks = (len + GELU_CHUNK - 1) / GELU_CHUNK;
	if (chunks <= 1 || tm_pool_threads(ctx_pool(ctx)) == 1 || chunks > INT32_MAX) {
		if (dy)
			g.k->gelu_backward(len, x, dy, out);
		else
			g.k->gelu_forward(len, x, out);
		return;
	}
	tm_pool_run(ctx_pool(ctx), (int)chunks, gelu_task, &g);
}

void tm_gelu_forward_ctx(const tm_ctx *ctx, size_t len, const float *x, float *y)
{
	if (len)
		gelu_run(ctx, len, x, NULL, y);
}

void tm_gelu_backward_ctx(const tm_ctx *ctx, size_t len, const float *x, const float *dy,
			  float *dx)
{
	if (len)
		gelu_run(ctx, len, x, dy, dx);
}

// ---- layernorm ----

void tm_layernorm_forward(int rows, int d, const float *x, const float *gamma,
			  const float *beta, float *y, float *mean, float *rstd)
{
	for (int r = 0; r < rows; r++)
		ln_row_portable(d, x + (size_t)r * d, gamma, beta, y + (size_t)r * d,
				mean ? mean + r : NULL, rstd ? rstd + r : NULL);
}

void tm_layernorm_backward(int rows, int d, const float *x, const float *gamma,
			   const float *mean, const float *rstd, const float *dy, float *dx,
			   float *dgamma, float *dbeta)
{
	for (int r = 0; r < rows; r++)
		ln_row_grad_portable(d, x + (size_t)r * d, gamma, mean[r], rstd[r],
				     dy + (size_t)r * d, dx ? dx + (size_t)r * d : NULL, dgamma, dbeta);
}

/* Rows per task of the ctx variants.  Fixed, so the dgamma/dbeta partial sums (one per chunk,
 * added in chunk order) do not depend on the thread count. */
#define LN_CHUNK 64

typedef struct ln_job {
	const ops_kernels *k;
	int rows, d;
	const float *x, *gamma, *beta, *mean, *rstd, *dy;
	float *y, *mu_out, *rs_out, *dx, *dgamma, *dbeta;
	float *partial;  /* (chunks - 1, 2d): dgamma then dbeta of chunks 1.. */
} ln_job;

static void ln_fwd_task(void *arg, int task)
{
	ln_job *l = arg;
	int lo = task * LN_CHUNK, hi = lo + LN_CHUNK < l->rows ? lo + LN_CHUNK : l->rows;
	for (int r = lo; r < hi; r++)
		l->k->ln_row(l->d, l->x + (size_t)r * l->d, l->gamma, l->beta,
			     l->y + (size_t)r * l->d, l->mu_out ? l->mu_out + r : NULL,
			     l->rs_out ? l->rs_out + r : NULL);
}

static void ln_bwd_task(void *arg, int task)
{
	ln_job *l = arg;
	int lo = task * LN_CHUNK, hi = lo + LN_CHUNK < l->rows ? lo + LN_CHUNK : l->rows;
	float *dg = l->dgamma, *db = l->dbeta;
	if (task > 0 && l->partial) {
		float *part = l->partial + (size_t)(task - 1) * 2 * l->d;
		dg = dg ? part : NULL;
		db = db ? part + l->d : NULL;
	}
	for (int r = lo; r < hi; r++)
		l->k->ln_row_grad(l->d, l->x + (size_t)r * l->d, l->gamma, l->mean[r], l->rstd[r],
				  l->dy + (size_t)r * l->d, l->dx ? l->dx + (size_t)r * l->d : NULL,
				  dg, db);
}

void tm_layernorm_forward_ctx(const tm_ctx *ctx, int rows, int d, const float *x,
			      const float *gamma, const float *beta, float *y, float *mean,
			      float *rstd)
{
	if (rows <= 0 || d <= 0)
		return;
	ln_job l = { .k = tm_ops_for(ctx ? ctx->isa : TM_ISA_PORTABLE), .rows = rows, .d = d, .x = x,
		     .gamma = gamma, .beta = beta, .y = y, .mu_out = mean, .rs_out = rstd };
	tm_pool_run(ctx_pool(ctx), (rows + LN_CHUNK - 1) / LN_CHUNK, ln_fwd_task, &l);
}

void tm_layernorm_backward_ctx(const tm_ctx *ctx, int rows, int d, const float *x,
			       const float *gamma, const float *mean, const float *rstd,
			       const float *dy, float *dx, float *dgamma, float *dbeta)
{
	if (rows <= 0 || d <= 0)
		return;
	int chunks = (rows + LN_CHUNK - 1) / LN_CHUNK;
	ln_job l = { .k = tm_ops_for(ctx ? ctx->isa : TM_ISA_PORTABLE), .rows = rows, .d = d, .x = x,
		     .gamma = gamma, .mean = mean, .rstd = rstd, .dy = dy, .dx = dx,
		     .dgamma = dgamma, .dbeta = dbeta };
	if (chunks > 1 && (dgamma || dbeta))
		l.partial = tm_xcalloc((size_t)(chunks - 1) * 2 * d, sizeof(float));
	tm_pool_run(ctx_pool(ctx), chunks, ln_bwd_task, &l);
	if (!l.partial)
		return;
	for (int c = 1; c < chunks; c++) {
		const float *part = l.partial + (size_t)(c - 1) * 2 * d;
		for (int j = 0; j < d; j++) {
			if (dgamma)
				dgamma[j] += part[j];
			if (dbeta)
				dbeta[j] += part[d + j];
		}
	}
	free(l.partial);
}

// ---- softmax ----

void tm_softmax_forward(int rows, int d, const float *x, float *y)
{
	for (int r = 0; r < rows; r++) {
		const float *xr = x + (size_t)r * d;
		float *yr = y + (size_t)r * d;
		if (yr != xr)
			memcpy(yr, xr, sizeof(float) * (size_t)d);
		softmax_row_portable(yr, d);
	}
}

// ---- embedding ----

void tm_embedding_forward(int n, int d, const int32_t *tok, const int32_t *pos,
			  const float *wte, const float *wpe, float *out)
{
	for (int t = 0; t < n; t++) {
		const float *te = wte + (size_t)tok[t] * d;
		const float *pe = wpe + (size_t)pos[t] * d;
		float *o = out + (size_t)t * d;
		for (int j = 0; j < d; j++)
			o[j] = te[j] + pe[j];
	}
}

void tm_embedding_backward(int n, int d, const int32_t *tok, const int32_t *pos,
			   const float *dout, float *dwte, float *dwpe)
{
	for (int t = 0; t < n; t++) {
		const float *g = dout + (size_t)t * d;
		if (dwte) {
			float *te = dwte + (size_t)tok[t] * d;
			for (int j = 0; j < d; j++)
				te[j] += g[j];
		}
		if (dwpe) {
			float *pe = dwpe + (size_t)pos[t] * d;
			for (int j = 0; j < d; j++)
				pe[j] += g[j];
		}
	}
}

// ---- attention ----
/* Row by row over one (sequence, head): scores for the attended columns only (causal, and
 * from the start of the row's segment), softmax, then sum p * V; backward likewise with rank-1
 * updates of dK and dV.  The dot products run over columns of K^T (or V^T), copied once per
 * head, so every kernel is a run of vector FMAs along one contiguous axis. */

/* Attended range of each position: j0[i] is the first j with seg[j] == seg[i]; holes[i] says
 * some j in [j0[i], i] belongs to another segment (ids reused out of order), so the range
 * must still be masked entry by entry. */
typedef struct attn_rows {
	int32_t *j0;     /* (b, t) */
	uint8_t *holes;  /* (b, t) */
} attn_rows;

static void attn_rows_init(attn_rows *r, int b, int t, const int32_t *seg)
{
	r->j0 = NULL;
	r->holes = NULL;
	if (!seg)
		return;
	r->j0 = tm_xmalloc(sizeof(int32_t) * (size_t)b * t);
	r->holes = tm_xmalloc((size_t)b * t);
	for (int bi = 0; bi < b; bi++) {
		const int32_t *sg = seg + (size_t)bi * t;
		int32_t *j0 = r->j0 + (size_t)bi * t;
		uint8_t *holes = r->holes + (size_t)bi * t;
		for (int i = 0; i < t; i++) {
			if (i > 0 && sg[i] == sg[i - 1]) {
				j0[i] = j0[i - 1];
				holes[i] = holes[i - 1];
				continue;
			}
			int first = 0;
			while (sg[first] != sg[i])
				first++;
			j0[i] = first;
			holes[i] = 0;
			for (int j = first; j < i; j++)
				if (sg[j] != sg[i])
					holes[i] = 1;
		}
	}
}

static void attn_rows_release(attn_rows *r)
{
	free(r->j0);
	free(r->holes);
}

typedef struct attn_job {
	const ops_kernels *kern;
	int b, t, d, n_head;
	const float *qkv;
	const int32_t *seg;
	attn_rows rows;
	float *att;          /* forward: probabilities; backward: read */
	const float *dout;
	float *out, *dqkv, *scratch;
} attn_job;

/* Rows ahead that the row loops prefetch: q, k, v, dout and att rows are 0.5 to 1.5 KB apart,
 * a stride the hardware prefetchers follow poorly. */
#define ATTN_PREFETCH 8

/* xt (cols, rows) = x (rows, cols) read with leading dimension ld. */
static void transpose_to(int rows, int cols, const float *x, size_t ld, float *xt)
{
	for (int c = 0; c < cols; c++)
		for (int j = 0; j < rows; j++)
			xt[(size_t)c * rows + j] = x[(size_t)j * ld + c];
}

static void attn_fwd_task(void *arg, int u)
{
	attn_job *a = arg;
	const ops_kernels *kern = a->kern;
	int t = a->t, d = a->d, hd = d / a->n_head;
	size_t ld = (size_t)3 * d;
	int bi = u / a->n_head, h = u % a->n_head;
	const float *q = a->qkv + (size_t)bi * t * ld + (size_t)h * hd;
	const float *k = q + d, *v = q + 2 * d;
	const int32_t *seg = a->seg ? a->seg + (size_t)bi * t : NULL;
	const int32_t *j0s = a->rows.j0 ? a->rows.j0 + (size_t)bi * t : NULL;
	const uint8_t *holes = a->rows.holes ? a->rows.holes + (size_t)bi * t : NULL;
	float *att = a->att + (size_t)u * t * t;
	float *out = a->out + (size_t)bi * t * d + (size_t)h * hd;
	float scale = 1.0f / sqrtf((float)hd);
	size_t tpad = ((size_t)t + OPS_ROW_PAD - 1) / OPS_ROW_PAD * OPS_ROW_PAD;
	float *kt = tm_xmalloc(sizeof(float) * ((size_t)hd * t + tpad));
	float *s = kt + (size_t)hd * t; /* the padded row */

	transpose_to(t, hd, k, ld, kt);
	for (int i = 0; i < t; i++) {
		int j0 = j0s ? j0s[i] : 0, n = i - j0 + 1;
		float *row = att + (size_t)i * t;
		if (i + ATTN_PREFETCH < t) {
			__builtin_prefetch(q + (size_t)(i + ATTN_PREFETCH) * ld);
			__builtin_prefetch(v + (size_t)(i + ATTN_PREFETCH) * ld);
		}
		kern->dot_cols(hd, q + (size_t)i * ld, kt + j0, t, n, scale, s);
		if (holes && holes[i])
			for (int j = 0; j < n; j++)
				if (seg[j0 + j] != seg[i])
					s[j] = -INFINITY;
		kern->softmax_row(s, n);
		kern->axpy_rows(n, s, v + (size_t)j0 * ld, (ptrdiff_t)ld, hd, out + (size_t)i * d);
		memset(row, 0, sizeof(float) * (size_t)j0);
		memcpy(row + j0, s, sizeof(float) * (size_t)n);
		memset(row + i + 1, 0, sizeof(float) * (size_t)(t - i - 1));
	}
	free(kt);
}

void tm_attention_forward(const tm_ctx *ctx, int b, int t, int d, int n_head,
			  const float *qkv, const int32_t *seg, float *att, float *out)
{
	if (b <= 0 || t <= 0 || n_head <= 0 || d <= 0)
		return;
	assert(d % n_head == 0 && att);
	attn_job a = { .kern = tm_ops_for(ctx ? ctx->isa : TM_ISA_PORTABLE), .b = b, .t = t, .d = d,
		       .n_head = n_head, .qkv = qkv, .seg = seg, .att = att, .out = out };
	attn_rows_init(&a.rows, b, t, seg);
	tm_pool_run(ctx_pool(ctx), b * n_head, attn_fwd_task, &a);
	attn_rows_release(&a.rows);
}

size_t tm_attention_scratch_floats(int b, int t, int n_head)
{
	if (b <= 0 || t <= 0 || n_head <= 0)
		return 0;
	return (size_t)b * n_head * (size_t)t * t;
}

static void attn_bwd_task(void *arg, int u)
{
	attn_job *a = arg;
	const ops_kernels *kern = a->kern;
	int t = a->t, d = a->d, hd = d / a->n_head;
	size_t ld = (size_t)3 * d;
	int bi = u / a->n_head, h = u % a->n_head;
	size_t off = (size_t)bi * t * ld + (size_t)h * hd;
	const float *q = a->qkv + off, *k = q + d, *v = q + 2 * d;
	float *dq = a->dqkv + off, *dk = dq + d, *dv = dq + 2 * d;
	const float *p = a->att + (size_t)u * t * t;
	const float *dout = a->dout + (size_t)bi * t * d + (size_t)h * hd;
	const int32_t *j0s = a->rows.j0 ? a->rows.j0 + (size_t)bi * t : NULL;
	float scale = 1.0f / sqrtf((float)hd);
	/* V^T and one padded row of dP: in this head's scratch when it is big enough. */
	size_t tpad = ((size_t)t + OPS_ROW_PAD - 1) / OPS_ROW_PAD * OPS_ROW_PAD;
	size_t need = (size_t)hd * t + tpad;
	float *work = need <= (size_t)t * t ? a->scratch + (size_t)u * t * t
					    : tm_xmalloc(sizeof(float) * need);
	float *vt = work, *dp = work + (size_t)hd * t;

	transpose_to(t, hd, v, ld, vt);
	for (int j = 0; j < t; j++) {
		memset(dk + (size_t)j * ld, 0, sizeof(float) * (size_t)hd);
		memset(dv + (size_t)j * ld, 0, sizeof(float) * (size_t)hd);
	}
	for (int i = 0; i < t; i++) {
		int j0 = j0s ? j0s[i] : 0, n = i - j0 + 1;
		const float *pr = p + (size_t)i * t + j0;
		const float *go = dout + (size_t)i * d;
		if (i + ATTN_PREFETCH < t) {
			int ia = i + ATTN_PREFETCH, ja = j0s ? j0s[ia] : 0;
			__builtin_prefetch(p + (size_t)ia * t + ja);
			__builtin_prefetch(p + (size_t)ia * t + ia);
			__builtin_prefetch(dout + (size_t)ia * d);
			__builtin_prefetch(q + (size_t)ia * ld);
		}
		/* dP = dO V^T; dS = P * (dP - sum(P * dP)), scaled for dQ and dK; masked P are 0 */
		kern->dot_cols(hd, go, vt + j0, t, n, 1.0f, dp);
		kern->softmax_grad_row(n, pr, dp, scale);
		kern->rank1_rows(n, pr, go, hd, dv + (size_t)j0 * ld, (ptrdiff_t)ld);
		kern->axpy_rows(n, dp, k + (size_t)j0 * ld, (ptrdiff_t)ld, hd, dq + (size_t)i * ld);
		kern->rank1_rows(n, dp, q + (size_t)i * ld, hd, dk + (size_t)j0 * ld, (ptrdiff_t)ld);
	}
	if (work != a->scratch + (size_t)u * t * t)
		free(work);
}

void tm_attention_backward(const tm_ctx *ctx, int b, int t, int d, int n_head,
			   const float *qkv, const int32_t *seg, const float *att,
			   const float *dout, float *dqkv, float *scratch)
{
	if (b <= 0 || t <= 0 || n_head <= 0 || d <= 0)
		return;
	assert(d % n_head == 0 && scratch);
	attn_job a = { .kern = tm_ops_for(ctx ? ctx->isa : TM_ISA_PORTABLE), .b = b, .t = t, .d = d,
		       .n_head = n_head, .qkv = qkv, .seg = seg, .att = (float *)att, .dout = dout,
		       .dqkv = dqkv, .scratch = scratch };
	attn_rows_init(&a.rows, b, t, seg);
	tm_pool_run(ctx_pool(ctx), b * n_head, attn_bwd_task, &a);
	attn_rows_release(&a.rows);
}

// ---- cross-entropy ----

float tm_cross_entropy(int n, int v, const float *logits, const int32_t *targets,
		       float *dlogits, int *correct)
{
	int counted = 0, right = 0;
	for (int r = 0; r < n; r++)
		counted += targets[r] >= 0 && targets[r] < v;
	double loss = 0;
	for (int r = 0; r < n; r++) {
		const float *x = logits + (size_t)r * v;
		float *g = dlogits ? dlogits + (size_t)r * v : NULL;
		int tg = targets[r];
		if (tg < 0 || tg >= v) {
			if (g)
				memset(g, 0, sizeof(float) * (size_t)v);
			continue;
		}
		int arg = 0;
		for (int j = 1; j < v; j++)
			if (x[j] > x[arg])
				arg = j;
		right += arg == tg;
		float mx = x[arg];
		double s = 0;
		for (int j = 0; j < v; j++)
			s += exp((double)x[j] - mx);
		loss += log(s) + mx - x[tg];
		if (g)
			for (int j = 0; j < v; j++)
				g[j] = (float)((exp((double)x[j] - mx) / s - (j == tg)) / counted);
	}
	if (correct)
		*correct = right;
	return counted ? (float)(loss / counted) : 0.0f;
}
