/* ops.c: forward and backward of the layers the three model families use, except the linear
 * layer (gemm.c): 3x3 convolution (im2col + tm_sgemm, bias and activation fused), 2x2 max
 * pooling, ReLU and GELU, LayerNorm, softmax, token + position embeddings, causal multi-head
 * self-attention with an optional segment mask, and softmax cross-entropy.  Work is split over
 * the ctx's pool along images, output-channel blocks or (sequence, head) pairs; the split never
 * changes what a single output element's arithmetic is, so results do not depend on the thread
 * count.  GEMMs issued from inside a task run single-threaded (the pool is not re-entrant).
 * The exponentials of attention and GELU run through the kernel set of ctx->isa (ops_int.h);
 * the functions without a ctx are the portable reference. */
#include "engine.h"
#include "ops_int.h"

#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

// ---- helpers ----

/* Output channels per dW task in the conv backward: fixed, so the GEMM calls (and with them
 * the rounding of every element) are the same for any thread count. */
#define CONV_DW_BLOCK 16

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

static inline float gelu_tanh(float x)
{
	const float k0 = 0.7978845608028654f; /* sqrt(2/pi) */
	return 0.5f * x * (1.0f + tanhf(k0 * (x + 0.044715f * x * x * x)));
}

static inline float gelu_tanh_grad(float x)
{
	const float k0 = 0.7978845608028654f;
	float x2 = x * x;
	float th = tanhf(k0 * (x + 0.044715f * x2 * x));
	return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * k0 * (1.0f + 3.0f * 0.044715f * x2);
}

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

static const ops_kernels ops_portable = {
	.exp_shift_sum = exp_shift_sum_portable,
	.gelu_forward = gelu_forward_portable,
	.gelu_backward = gelu_backward_portable,
};

static const ops_kernels *const ops_sets[] = {
	[TM_ISA_PORTABLE] = &ops_portable,
	[TM_ISA_AVX2] = &tm_ops_avx2,
	[TM_ISA_AVX512] = &tm_ops_avx512,
};

static const ops_kernels *ops_for(tm_isa isa)
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

static void bias_act(int rows, size_t cols, float *y, const float *b, tm_act act)
{
	for (int r = 0; r < rows; r++) {
		float *row = y + (size_t)r * cols;
		float bv = b ? b[r] : 0.0f;
		switch (act) {
		case TM_ACT_RELU:
			for (size_t j = 0; j < cols; j++) {
				float v = row[j] + bv;
				row[j] = v > 0.0f ? v : 0.0f;
			}
			break;
		case TM_ACT_GELU:
			for (size_t j = 0; j < cols; j++)
				row[j] = gelu_tanh(row[j] + bv);
			break;
		default:
			if (b)
				for (size_t j = 0; j < cols; j++)
					row[j] += bv;
			break;
		}
	}
}

typedef struct conv_job {
	const tm_ctx *ctx;
	int n, cin, h, w, cout;
	const float *x, *wt, *b, *dy;
	tm_act act;
	float *y, *dx, *dw;
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
		bias_act(c->cout, p, y, c->b, c->act);
	}
}

void tm_conv3x3_forward(const tm_ctx *ctx, int n, int cin, int h, int w, int cout,
			const float *x, const float *wt, const float *b, tm_act act, float *y,
			float *scratch)
{
	if (n <= 0 || cin <= 0 || cout <= 0 || h < 3 || w < 3)
		return;
	assert(scratch);
	conv_job c = { .ctx = ctx, .n = n, .cin = cin, .h = h, .w = w, .cout = cout,
		       .x = x, .wt = wt, .b = b, .act = act, .y = y };
	slots_init(&c.sl, ctx, n, scratch, tm_conv3x3_scratch_floats(cin, h, w));
	tm_pool_run(ctx_pool(ctx), c.sl.n, conv_fwd_task, &c);
	slots_release(&c.sl);
}

/* dW rows of the blocks of slot j, summed over the images in order. */
static void conv_dw_task(void *arg, int j)
{
	conv_job *c = arg;
	tm_ctx solo = ctx_solo(c->ctx);
	float *col = slots_buf(&c->sl, j);
	int k = c->cin * 9;
	int p = (c->h - 2) * (c->w - 2);
	size_t xs = (size_t)c->cin * c->h * c->w, ys = (size_t)c->cout * p;
	int nblk = (c->cout + CONV_DW_BLOCK - 1) / CONV_DW_BLOCK, lo, hi;
	split_range(nblk, c->sl.n, j, &lo, &hi);
	for (int i = 0; i < c->n; i++) {
		im2col3x3(c->cin, c->h, c->w, c->x + xs * (size_t)i, col);
		for (int blk = lo; blk < hi; blk++) {
			int r0 = blk * CONV_DW_BLOCK;
			int rows = c->cout - r0 < CONV_DW_BLOCK ? c->cout - r0 : CONV_DW_BLOCK;
			tm_sgemm(&solo, false, true, rows, k, p, 1.0f,
				 c->dy + ys * (size_t)i + (size_t)r0 * p, p, col, p,
				 1.0f, c->dw + (size_t)r0 * k, k);
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
		int nblk = (cout + CONV_DW_BLOCK - 1) / CONV_DW_BLOCK;
		slots_init(&c.sl, ctx, nblk, scratch, floats);
		tm_pool_run(ctx_pool(ctx), c.sl.n, conv_dw_task, &c);
		slots_release(&c.sl);
	}
	if (db)
		for (int co = 0; co < cout; co++) {
			double s = 0;
			for (int i = 0; i < n; i++) {
				const float *g = dy + ((size_t)i * cout + co) * p;
				for (size_t q = 0; q < p; q++)
					s += g[q];
			}
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
		y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void tm_relu_backward(size_t len, const float *x, const float *dy, float *dx)
{
	for (size_t i = 0; i < len; i++)
		dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
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
	gelu_job g = { .k = ops_for(ctx ? ctx->isa : TM_ISA_PORTABLE), .len = len, .x = x,
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
	for (int r = 0; r < rows; r++) {
		const float *xr = x + (size_t)r * d;
		float *yr = y + (size_t)r * d;
		float s = 0.0f;
		for (int j = 0; j < d; j++)
			s += xr[j];
		float mu = s / (float)d;
		float v = 0.0f;
		for (int j = 0; j < d; j++) {
			float c = xr[j] - mu;
			v += c * c;
		}
		float rs = 1.0f / sqrtf(v / (float)d + 1e-5f);
		for (int j = 0; j < d; j++) {
			float xh = (xr[j] - mu) * rs;
			yr[j] = xh * (gamma ? gamma[j] : 1.0f) + (beta ? beta[j] : 0.0f);
		}
		if (mean)
			mean[r] = mu;
		if (rstd)
			rstd[r] = rs;
	}
}

void tm_layernorm_backward(int rows, int d, const float *x, const float *gamma,
			   const float *mean, const float *rstd, const float *dy, float *dx,
			   float *dgamma, float *dbeta)
{
	for (int r = 0; r < rows; r++) {
		const float *xr = x + (size_t)r * d;
		const float *gr = dy + (size_t)r * d;
		float mu = mean[r], rs = rstd[r];
		/* dxhat = dy * gamma; dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) */
		float sg = 0.0f, sgx = 0.0f;
		for (int j = 0; j < d; j++) {
			float xh = (xr[j] - mu) * rs;
			float g = gr[j] * (gamma ? gamma[j] : 1.0f);
			sg += g;
			sgx += g * xh;
			if (dgamma)
				dgamma[j] += gr[j] * xh;
			if (dbeta)
				dbeta[j] += gr[j];
		}
		sg /= (float)d;
		sgx /= (float)d;
		if (!dx)
			continue;
		float *dr = dx + (size_t)r * d;
		for (int j = 0; j < d; j++) {
			float xh = (xr[j] - mu) * rs;
			float g = gr[j] * (gamma ? gamma[j] : 1.0f);
			dr[j] = rs * (g - sg - xh * sgx);
		}
	}
}

// ---- softmax ----

void tm_softmax_forward(int rows, int d, const float *x, float *y)
{
	for (int r = 0; r < rows; r++) {
		const float *xr = x + (size_t)r * d;
		float *yr = y + (size_t)r * d;
		float mx = -INFINITY;
		for (int j = 0; j < d; j++)
			mx = xr[j] > mx ? xr[j] : mx;
		if (yr != xr)
			memcpy(yr, xr, sizeof(float) * (size_t)d);
		float inv = 1.0f / exp_shift_sum_portable(yr, d, mx);
		for (int j = 0; j < d; j++)
			yr[j] *= inv;
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

typedef struct attn_job {
	const tm_ctx *ctx;
	int b, t, d, n_head;
	const float *qkv;
	const int32_t *seg;
	float *att;          /* forward: probabilities; backward: read */
	const float *dout;
	float *out, *dqkv, *scratch;
} attn_job;

static void attn_fwd_task(void *arg, int u)
{
	attn_job *a = arg;
	tm_ctx solo = ctx_solo(a->ctx);
	const ops_kernels *kern = ops_for(solo.isa);
	int t = a->t, d = a->d, hd = d / a->n_head;
	int bi = u / a->n_head, h = u % a->n_head;
	const float *q = a->qkv + (size_t)bi * t * 3 * d + (size_t)h * hd;
	const float *k = q + d, *v = q + 2 * d;
	const int32_t *seg = a->seg ? a->seg + (size_t)bi * t : NULL;
	float *s = a->att + (size_t)u * t * t;
	float scale = 1.0f / sqrtf((float)hd);

	tm_sgemm(&solo, false, true, t, t, hd, scale, q, 3 * d, k, 3 * d, 0.0f, s, t);
	for (int i = 0; i < t; i++) {
		float *row = s + (size_t)i * t;
		/* Masked entries (j > i, or another segment) become exactly 0. */
		float mx = -INFINITY;
		for (int j = 0; j <= i; j++) {
			if (seg && seg[j] != seg[i])
				row[j] = -INFINITY;
			else if (row[j] > mx)
				mx = row[j];
		}
		float inv = 1.0f / kern->exp_shift_sum(row, i + 1, mx);
		for (int j = 0; j <= i; j++)
			row[j] *= inv;
		for (int j = i + 1; j < t; j++)
			row[j] = 0.0f;
	}
	tm_sgemm(&solo, false, false, t, hd, t, 1.0f, s, t, v, 3 * d, 0.0f,
		 a->out + (size_t)bi * t * d + (size_t)h * hd, d);
}

void tm_attention_forward(const tm_ctx *ctx, int b, int t, int d, int n_head,
			  const float *qkv, const int32_t *seg, float *att, float *out)
{
	if (b <= 0 || t <= 0 || n_head <= 0 || d <= 0)
		return;
	assert(d % n_head == 0 && att);
	attn_job a = { .ctx = ctx, .b = b, .t = t, .d = d, .n_head = n_head, .qkv = qkv,
		       .seg = seg, .att = att, .out = out };
	tm_pool_run(ctx_pool(ctx), b * n_head, attn_fwd_task, &a);
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
	tm_ctx solo = ctx_solo(a->ctx);
	int t = a->t, d = a->d, hd = d / a->n_head;
	int bi = u / a->n_head, h = u % a->n_head;
	size_t off = (size_t)bi * t * 3 * d + (size_t)h * hd;
	const float *q = a->qkv + off, *k = q + d, *v = q + 2 * d;
	float *dq = a->dqkv + off, *dk = dq + d, *dv = dq + 2 * d;
	const float *p = a->att + (size_t)u * t * t;
	const float *dout = a->dout + (size_t)bi * t * d + (size_t)h * hd;
	float *ds = a->scratch + (size_t)u * t * t;
	float scale = 1.0f / sqrtf((float)hd);

	tm_sgemm(&solo, true, false, t, hd, t, 1.0f, p, t, dout, d, 0.0f, dv, 3 * d);
	tm_sgemm(&solo, false, true, t, t, hd, 1.0f, dout, d, v, 3 * d, 0.0f, ds, t);
	/* Softmax backward row by row: ds = p * (dp - sum(dp * p)); masked p are 0. */
	for (int i = 0; i < t; i++) {
		const float *pr = p + (size_t)i * t;
		float *dr = ds + (size_t)i * t;
		float dot = 0.0f;
		for (int j = 0; j <= i; j++)
			dot += pr[j] * dr[j];
		for (int j = 0; j <= i; j++)
			dr[j] = pr[j] * (dr[j] - dot);
		for (int j = i + 1; j < t; j++)
			dr[j] = 0.0f;
	}
	tm_sgemm(&solo, false, false, t, hd, t, scale, ds, t, k, 3 * d, 0.0f, dq, 3 * d);
	tm_sgemm(&solo, true, false, t, hd, t, scale, ds, t, q, 3 * d, 0.0f, dk, 3 * d);
}

void tm_attention_backward(const tm_ctx *ctx, int b, int t, int d, int n_head,
			   const float *qkv, const int32_t *seg, const float *att,
			   const float *dout, float *dqkv, float *scratch)
{
	(void)seg; /* the mask is already in att: masked probabilities are exactly 0 */
	if (b <= 0 || t <= 0 || n_head <= 0 || d <= 0)
		return;
	assert(d % n_head == 0 && scratch);
	attn_job a = { .ctx = ctx, .b = b, .t = t, .d = d, .n_head = n_head, .qkv = qkv,
		       .att = (float *)att, .dout = dout, .dqkv = dqkv, .scratch = scratch };
	tm_pool_run(ctx_pool(ctx), b * n_head, attn_bwd_task, &a);
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
