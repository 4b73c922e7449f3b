/* qgemm.c: INT8 inference.  Symmetric per-channel (or per-tensor) weight quantization, the
 * activation calibrator (min/max and a percentile of |x| from a histogram), the quantized
 * linear layer (weights quantized once and packed into the one layout all int8 kernels read,
 * see qgemm_int.h), the portable C reference kernels, the dispatcher that picks a kernel set
 * from ctx->isa and the CPU, the thread split, and an int8 conv3x3 built on the same GEMM.
 * Products are int8 x int8 summed in int32, exactly, by every kernel set; the float epilogue
 * (scale, bias, ReLU, optional requantization) is the same sequence of IEEE operations
 * everywhere, so the outputs are bit-identical across kernel sets and thread counts. */
#include "qgemm_int.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- scalar quantization ----

float tm_qscale(float amax)
{
	float s = amax / 127.0f;
	if (!(s >= FLT_MIN) || !isfinite(s))  /* zero, tiny, NaN or infinite */
		return 1.0f;
	return s;
}

void tm_quantize_act(size_t len, const float *x, float scale, int8_t *q)
{
	float inv = 1.0f / scale;
	for (size_t i = 0; i < len; i++)
		q[i] = qg_quant(x[i], inv);
}

/* q(len) = rint(w / scale) clamped, the weight rule (a true division: done once per layer). */
static void quantize_row(size_t len, const float *w, float scale, bool zero, int8_t *q)
{
	for (size_t i = 0; i < len; i++) {
		if (zero) {
			q[i] = 0;
			continue;
		}
		float t = rintf(w[i] / scale);
		t = t > -127.0f ? t : -127.0f;
		t = t < 127.0f ? t : 127.0f;
		q[i] = (int8_t)t;
	}
}

static float absmax(size_t len, const float *w)
{
	float m = 0.0f;
	for (size_t i = 0; i < len; i++) {
		float a = fabsf(w[i]);
		m = a > m ? a : m;
	}
	return m;
}

int tm_quantize_weights(int n, int k, const float *w, tm_qgran gran, int8_t *q, float *scale,
			tm_err *err)
{
	if (n < 1 || k < 1)
		return tm_err_set(err, TM_EINVAL, "quantize",
				  "quantize: weight shape (%d, %d) must be at least (1, 1)", n, k);
	size_t total = (size_t)n * k;
	for (size_t i = 0; i < total; i++)
		if (!isfinite(w[i]))
			return tm_err_set(err, TM_EINVAL, "quantize",
					  "quantize: weight (%zu, %zu) is not finite", i / k, i % k);
	float tensor_max = gran == TM_QGRAN_TENSOR ? absmax(total, w) : 0.0f;
	for (int j = 0; j < n; j++) {
		const float *row = w + (size_t)j * k;
		float amax = gran == TM_QGRAN_TENSOR ? tensor_max : absmax((size_t)k, row);
		float s = amax / 127.0f;
		bool zero = !(s >= FLT_MIN);  /* all zero (or too tiny to scale): q = 0, scale 1 */
		scale[j] = zero ? 1.0f : s;
		quantize_row((size_t)k, row, scale[j], zero, q + (size_t)j * k);
	}
	return 0;
}

// ---- calibration ----

#define QC_SHIFT 14                      /* float bits dropped: 2^-9 relative bins */
#define QC_BINS ((size_t)1 << (31 - QC_SHIFT))

struct tm_qcalib {
	tm_qcalib_method method;
	double percentile;     /* (0, 100] */
	int64_t count;         /* finite values seen */
	float min, max;
	uint64_t *hist;        /* (QC_BINS) counts of |x| by bits(|x|) >> QC_SHIFT; PERCENTILE */
};

int tm_qcalib_new(tm_qcalib_method method, double percentile, tm_qcalib **out, tm_err *err)
{
	*out = NULL;
	if (method != TM_QCALIB_MINMAX && method != TM_QCALIB_PERCENTILE)
		return tm_err_set(err, TM_EINVAL, "calibration",
				  "calibration: method %d is unknown", (int)method);
	if (method == TM_QCALIB_PERCENTILE && !(percentile > 0.0 && percentile <= 100.0))
		return tm_err_set(err, TM_EINVAL, "calibration",
				  "calibration: percentile %g must be in (0, 100]", percentile);
	tm_qcalib *c = calloc(1, sizeof(*c));
	if (!c)
		return tm_err_set(err, TM_ENOMEM, "calibration", "calibration: out of memory");
	c->method = method;
	c->percentile = percentile;
	if (method == TM_QCALIB_PERCENTILE) {
		c->hist = calloc(QC_BINS, sizeof(uint64_t));
		if (!c->hist) {
			free(c);
			return tm_err_set(err, TM_ENOMEM, "calibration",
					  "calibration: cannot allocate the %zu-bin histogram",
					  QC_BINS);
		}
	}
	*out = c;
	return 0;
}

void tm_qcalib_free(tm_qcalib *c)
{
	if (!c)
		return;
	free(c->hist);
	free(c);
}

static uint32_t float_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof(u));
	return u;
}

void tm_qcalib_add(tm_qcalib *c, size_t len, const float *x)
{
	for (size_t i = 0; i < len; i++) {
		float v = x[i];
		if (!isfinite(v))
			continue;
		if (c->count == 0 || v < c->min)
			c->min = v;
		if (c->count == 0 || v > c->max)
			c->max = v;
		c->count++;
		if (c->hist)
			c->hist[(float_bits(fabsf(v)) & 0x7fffffffu) >> QC_SHIFT]++;
	}
}

int64_t tm_qcalib_count(const tm_qcalib *c)
{
	return c->count;
}

void tm_qcalib_range(const tm_qcalib *c, float *min, float *max)
{
	*min = c->count ? c->min : 0.0f;
	*max = c->count ? c->max : 0.0f;
}

float tm_qcalib_amax(const tm_qcalib *c)
{
	if (c->count == 0)
		return 0.0f;
	float amax = fabsf(c->min) > fabsf(c->max) ? fabsf(c->min) : fabsf(c->max);
	if (c->method != TM_QCALIB_PERCENTILE)
		return amax;
	/* nearest rank: the smallest value with at least percentile% of the values <= it */
	double r = ceil(c->percentile / 100.0 * (double)c->count);
	uint64_t rank = r < 1.0 ? 1 : (uint64_t)r;
	uint64_t cum = 0;
	for (size_t b = 0; b < QC_BINS; b++) {
		cum += c->hist[b];
		if (cum < rank)
			continue;
		uint32_t top = (uint32_t)(((b + 1) << QC_SHIFT) - 1);  /* bin's largest float */
		float edge;
		memcpy(&edge, &top, sizeof(edge));
		return edge < amax ? edge : amax;
	}
	return amax;
}

float tm_qcalib_scale(const tm_qcalib *c)
{
	return tm_qscale(tm_qcalib_amax(c));
}

// ---- portable kernels ----

static void quant_portable(int m, int k, int kp, const float *x, ptrdiff_t ldx, float inv,
			   uint8_t *dst, size_t ldd)
{
	for (int i = 0; i < m; i++) {
		const float *xr = x + (ptrdiff_t)i * ldx;
		int8_t *d = (int8_t *)(dst + (size_t)i * ldd);
		for (int p = 0; p < k; p++)
			d[p] = qg_quant(xr[p], inv);
		for (int p = k; p < kp; p++)
			d[p] = 0;
	}
}

static void prep_portable(int m, int k, int kp, const int8_t *xq, size_t ldx, uint8_t *dst,
			  size_t ldd)
{
	for (int i = 0; i < m; i++) {
		memcpy(dst + (size_t)i * ldd, xq + (size_t)i * ldx, (size_t)k);
		memset(dst + (size_t)i * ldd + k, 0, (size_t)(kp - k));
	}
}

/* Write one row of up to QG_NR accumulators (columns col .. col + cnt - 1). */
static void store_portable(const qgemm_epi *e, int row, int col, int cnt, const int32_t *acc)
{
	for (int jj = 0; jj < cnt; jj++) {
		int j = col + jj;
		int32_t v = acc[jj] - (e->corr ? e->corr[j] : 0);
		ptrdiff_t at = (ptrdiff_t)row * e->ldc + j;
		if (e->kind == QGEMM_OUT_S32) {
			((int32_t *)e->c)[at] = v;
			continue;
		}
		float f = qg_dequant(v, e->x_scale, e->scale[j], e->bias, j, e->relu);
		if (e->kind == QGEMM_OUT_F32)
			((float *)e->c)[at] = f;
		else
			((int8_t *)e->c)[at] = qg_quant(f, e->out_inv);
	}
}

/* The reference: s8 activations, the exact int32 sum of products read from the packed panels. */
static void gemm_portable(int m, int ncols, int kp, const uint8_t *a, size_t lda,
			  const int8_t *wp, size_t panel_stride, const qgemm_epi *e)
{
	int32_t acc[QG_NR];
	for (int i = 0; i < m; i++) {
		const int8_t *x = (const int8_t *)(a + (size_t)i * lda);
		for (int col = 0; col < ncols; col += QG_NR) {
			const int8_t *pan = wp + (size_t)(col / QG_NR) * panel_stride;
			memset(acc, 0, sizeof(acc));
			for (int p = 0; p < kp; p += QG_KQ) {
				const int8_t *g = pan + (size_t)p * QG_NR;
				for (int jj = 0; jj < QG_NR; jj++) {
					const int8_t *wv = g + jj * QG_KQ;
					acc[jj] += (int32_t)x[p] * wv[0] + (int32_t)x[p + 1] * wv[1] +
						   (int32_t)x[p + 2] * wv[2] + (int32_t)x[p + 3] * wv[3];
				}
			}
			int cnt = ncols - col < QG_NR ? ncols - col : QG_NR;
			store_portable(e, i, col, cnt, acc);
		}
	}
}

static const qgemm_kernels qgemm_portable = {
	.name = "portable",
	.afmt = QG_A_S8,
	.abytes = 1,
	.mr = 1,
	.quant = quant_portable,
	.prep = prep_portable,
	.gemm = gemm_portable,
};

// ---- kernel selection ----

static tm_cpu g_cpu;
static pthread_once_t g_cpu_once = PTHREAD_ONCE_INIT;

static void cpu_init(void)
{
	tm_cpu_detect(&g_cpu);
}

static const qgemm_kernels *kernels_for(const tm_ctx *ctx)
{
	tm_isa isa = ctx ? ctx->isa : TM_ISA_PORTABLE;
	if (isa == TM_ISA_PORTABLE)
		return &qgemm_portable;
	pthread_once(&g_cpu_once, cpu_init);
	if (isa >= TM_ISA_AVX512 && g_cpu.avx512f && g_cpu.avx512bw && g_cpu.avx512vnni)
		return &tm_qgemm_avx512;
	if (isa >= TM_ISA_AVX2 && g_cpu.avx2)
		return &tm_qgemm_avx2;
	return &qgemm_portable;
}

const char *tm_qgemm_kernels_name(const tm_ctx *ctx)
{
	return kernels_for(ctx)->name;
}

// ---- the quantized linear layer ----

static size_t round64(size_t b)
{
	return (b + 63) & ~(size_t)63;
}

int tm_qlinear_new(int n, int k, const float *w, const float *bias, tm_qgran gran,
		   float x_scale, tm_qlinear **out, tm_err *err)
{
	*out = NULL;
	if (n < 1 || k < 1 || k > QG_KMAX || n > (1 << 24))
		return tm_err_set(err, TM_EINVAL, "qlinear",
				  "qlinear: weight shape (%d, %d) must be within (1..16777216, "
				  "1..%d)", n, k, QG_KMAX);
	if (!(x_scale > 0.0f) || !isfinite(x_scale))
		return tm_err_set(err, TM_EINVAL, "qlinear",
				  "qlinear: activation scale %g must be positive and finite",
				  (double)x_scale);
	if (bias)
		for (int j = 0; j < n; j++)
			if (!isfinite(bias[j]))
				return tm_err_set(err, TM_EINVAL, "qlinear",
						  "qlinear: bias %d is not finite", j);
	int kp = (k + QG_KQ - 1) / QG_KQ * QG_KQ;
	int panels = (n + QG_NR - 1) / QG_NR;
	size_t wbytes = round64((size_t)panels * QG_NR * kp);
	size_t vbytes = round64(sizeof(float) * (size_t)n);
	size_t bytes = wbytes + 2 * vbytes + (bias ? vbytes : 0);
	int8_t *q = malloc((size_t)n * k);
	tm_qlinear *ql = calloc(1, sizeof(*ql));
	uint8_t *block = tm_alloc_hot(bytes);
	if (!q || !ql || !block) {
		free(q);
		free(ql);
		tm_free_aligned(block);
		return tm_err_set(err, TM_ENOMEM, "qlinear",
				  "qlinear: cannot allocate %zu bytes for a (%d, %d) weight", bytes,
				  n, k);
	}
	ql->n = n;
	ql->k = k;
	ql->kp = kp;
	ql->panels = panels;
	ql->gran = gran;
	ql->x_scale = x_scale;
	ql->block = block;
	ql->bytes = bytes;
	ql->wp = (int8_t *)block;
	ql->w_scale = (float *)(block + wbytes);
	ql->corr = (int32_t *)(block + wbytes + vbytes);
	ql->bias = bias ? (float *)(block + wbytes + 2 * vbytes) : NULL;
	int rc = tm_quantize_weights(n, k, w, gran, q, ql->w_scale, err);
	if (rc != 0) {
		free(q);
		tm_qlinear_free(ql);
		return rc;
	}
	for (int j = 0; j < n; j++) {
		int32_t sum = 0;
		for (int p = 0; p < k; p++) {
			int8_t v = q[(size_t)j * k + p];
			ql->wp[qg_packed_index(j, p, kp)] = v;  /* the rest stays zero */
			sum += v;
		}
		ql->corr[j] = 128 * sum;
	}
	if (bias)
		memcpy(ql->bias, bias, sizeof(float) * (size_t)n);
	free(q);
	*out = ql;
	return 0;
}

void tm_qlinear_free(tm_qlinear *ql)
{
	if (!ql)
		return;
	tm_free_aligned(ql->block);
	free(ql);
}

size_t tm_qlinear_bytes(const tm_qlinear *ql)
{
	return ql->bytes;
}

int tm_qlinear_n(const tm_qlinear *ql)
{
	return ql->n;
}

int tm_qlinear_k(const tm_qlinear *ql)
{
	return ql->k;
}

float tm_qlinear_x_scale(const tm_qlinear *ql)
{
	return ql->x_scale;
}

void tm_qlinear_weights(const tm_qlinear *ql, int8_t *q, float *scale)
{
	if (q)
		for (int j = 0; j < ql->n; j++)
			for (int p = 0; p < ql->k; p++)
				q[(size_t)j * ql->k + p] = ql->wp[qg_packed_index(j, p, ql->kp)];
	if (scale)
		memcpy(scale, ql->w_scale, sizeof(float) * (size_t)ql->n);
}

// ---- the driver: buffers and the thread split ----

/* Per-call buffers are bounded by the layer and the batch; like gemm.c's packing buffers they
 * abort on out-of-memory rather than fail a void call. */
static void *buf_alloc(size_t bytes)
{
	void *p = NULL;
	if (posix_memalign(&p, 64, bytes + 64) != 0) {
		fprintf(stderr, "qgemm: out of memory allocating %zu bytes of buffer\n", bytes);
		abort();
	}
	return p;
}

#define QG_STACK_BYTES 16384  /* activation and scale space on the stack before the heap */

typedef struct qjob {
	const qgemm_kernels *ks;
	int m, n, kp;
	const uint8_t *a;      /* (m, lda) activations as the kernel set wants them */
	size_t lda;
	const int8_t *wp;      /* packed weights */
	size_t panel_stride;   /* bytes */
	qgemm_epi e;           /* for column 0 of row 0 */
	size_t esize;          /* bytes per output element */
	bool split_n;          /* tasks own column ranges (else row ranges) */
	int chunk;             /* columns or rows per task */
	int ntasks;
} qjob;

static void qjob_range(const qjob *j, int m0, int m1, int n0, int n1)
{
	qgemm_epi e = j->e;
	e.c = (char *)e.c + ((size_t)m0 * (size_t)e.ldc + (size_t)n0) * j->esize;
	e.corr = e.corr ? e.corr + n0 : NULL;
	e.scale = e.scale ? e.scale + n0 : NULL;
	e.bias = e.bias ? e.bias + n0 : NULL;
	j->ks->gemm(m1 - m0, n1 - n0, j->kp, j->a + (size_t)m0 * j->lda, j->lda,
		    j->wp + (size_t)(n0 / QG_NR) * j->panel_stride, j->panel_stride, &e);
}

static void qjob_task(void *arg, int task)
{
	const qjob *j = arg;
	int lo = task * j->chunk;
	if (j->split_n) {
		int hi = lo + j->chunk < j->n ? lo + j->chunk : j->n;
		qjob_range(j, 0, j->m, lo, hi);
	} else {
		int hi = lo + j->chunk < j->m ? lo + j->chunk : j->m;
		qjob_range(j, lo, hi, 0, j->n);
	}
}

#define QG_MT_MIN_MACS (1 << 20) /* multiply-adds below which one thread does it all */

/* Column ranges (whole panels) or row ranges (whole tiles), one per thread.  Every output is
 * an exact integer sum plus the same epilogue, so the split never changes a bit. */
static void qjob_run(const tm_ctx *ctx, qjob *j)
{
	int threads = tm_pool_threads(ctx ? ctx->pool : NULL);
	int mq = j->ks->mr, nq = QG_NR;
	int mb = (j->m + mq - 1) / mq, nb = (j->n + nq - 1) / nq;
	j->ntasks = 1;
	j->split_n = true;
	j->chunk = j->n;
	if (threads > 1 && (double)j->m * j->n * j->kp >= QG_MT_MIN_MACS) {
		if (nb >= threads || (nb >= mb && nb > 1)) {
			j->chunk = (nb + threads - 1) / threads * nq;
			j->ntasks = (j->n + j->chunk - 1) / j->chunk;
		} else if (mb > 1) {
			j->split_n = false;
			j->chunk = (mb + threads - 1) / threads * mq;
			j->ntasks = (j->m + j->chunk - 1) / j->chunk;
		}
	}
	if (j->ntasks == 1)
		qjob_range(j, 0, j->m, 0, j->n);
	else
		tm_pool_run(ctx->pool, j->ntasks, qjob_task, j);
}

/* The activations of one call in the kernel set's format. */
typedef struct qcall {
	const qgemm_kernels *ks;
	float x_scale;
	uint8_t *a;            /* (m, lda) */
	size_t lda;
	void *heap;
	uint8_t stack[QG_STACK_BYTES] __attribute__((aligned(64)));
} qcall;

static void qcall_init(qcall *c, const tm_ctx *ctx, const tm_qlinear *ql, int m, float x_scale,
		       bool need_a)
{
	c->ks = kernels_for(ctx);
	c->x_scale = x_scale;
	c->lda = (size_t)ql->kp * c->ks->abytes;
	size_t abytes = need_a ? (size_t)m * c->lda : 0;
	c->heap = NULL;
	c->a = NULL;
	if (need_a)
		c->a = abytes > sizeof(c->stack) ? (c->heap = buf_alloc(abytes)) : c->stack;
}

static void qcall_release(qcall *c)
{
	free(c->heap);
}

static void qlinear_run(const tm_ctx *ctx, const qcall *c, const tm_qlinear *ql, int m,
			const uint8_t *a, size_t lda, qgemm_out kind, void *out, tm_act act,
			float out_inv)
{
	qjob j = {
		.ks = c->ks,
		.m = m,
		.n = ql->n,
		.kp = ql->kp,
		.a = a,
		.lda = lda,
		.wp = ql->wp,
		.panel_stride = (size_t)ql->kp * QG_NR,
		.e = {
			.kind = kind,
			.c = out,
			.ldc = ql->n,
			.corr = c->ks->afmt == QG_A_U8 ? ql->corr : NULL,
			.x_scale = c->x_scale,
			.scale = ql->w_scale,
			.bias = kind == QGEMM_OUT_S32 ? NULL : ql->bias,
			.relu = kind != QGEMM_OUT_S32 && act == TM_ACT_RELU,
			.out_inv = out_inv,
		},
		.esize = kind == QGEMM_OUT_F32 ? sizeof(float)
		       : kind == QGEMM_OUT_S32 ? sizeof(int32_t) : sizeof(int8_t),
	};
	qjob_run(ctx, &j);
}

// ---- forward ----

void tm_qlinear_forward(const tm_ctx *ctx, const tm_qlinear *ql, int m, const float *x,
			tm_act act, float *y)
{
	if (m <= 0)
		return;
	qcall c;
	qcall_init(&c, ctx, ql, m, ql->x_scale, true);
	c.ks->quant(m, ql->k, ql->kp, x, ql->k, 1.0f / ql->x_scale, c.a, c.lda);
	qlinear_run(ctx, &c, ql, m, c.a, c.lda, QGEMM_OUT_F32, y, act, 0.0f);
	qcall_release(&c);
	if (act == TM_ACT_GELU)
		tm_gelu_forward_ctx(ctx, (size_t)m * ql->n, y, y);
}

/* Run on int8 input xq (m, k, rows ldx bytes apart): read in place where the kernel set takes s8
 * and k needs no padding, else convert into the call buffer. */
static void forward_q(const tm_ctx *ctx, const tm_qlinear *ql, int m, const int8_t *xq,
		      size_t ldx, float x_scale, qgemm_out kind, void *out, tm_act act,
		      float out_inv)
{
	if (m <= 0)
		return;
	qcall c;
	bool direct = kernels_for(ctx)->afmt == QG_A_S8 && ql->kp == ql->k;
	qcall_init(&c, ctx, ql, m, x_scale, !direct);
	if (direct) {
		qlinear_run(ctx, &c, ql, m, (const uint8_t *)xq, ldx, kind, out, act, out_inv);
	} else {
		c.ks->prep(m, ql->k, ql->kp, xq, ldx, c.a, c.lda);
		qlinear_run(ctx, &c, ql, m, c.a, c.lda, kind, out, act, out_inv);
	}
	qcall_release(&c);
}

void tm_qlinear_forward_q(const tm_ctx *ctx, const tm_qlinear *ql, int m, const int8_t *xq,
			  float x_scale, tm_act act, float *y)
{
	forward_q(ctx, ql, m, xq, (size_t)ql->k, x_scale, QGEMM_OUT_F32, y, act, 0.0f);
	if (m > 0 && act == TM_ACT_GELU)
		tm_gelu_forward_ctx(ctx, (size_t)m * ql->n, y, y);
}

void tm_qlinear_forward_q8(const tm_ctx *ctx, const tm_qlinear *ql, int m, const int8_t *xq,
			   float x_scale, tm_act act, float y_scale, int8_t *yq)
{
	if (act != TM_ACT_GELU) {
		forward_q(ctx, ql, m, xq, (size_t)ql->k, x_scale, QGEMM_OUT_S8, yq, act,
			  1.0f / y_scale);
		return;
	}
	/* GELU is not fused: float output, GELU, then the same requantization */
	if (m <= 0)
		return;
	size_t len = (size_t)m * ql->n;
	float *y = buf_alloc(sizeof(float) * len);
	tm_qlinear_forward_q(ctx, ql, m, xq, x_scale, TM_ACT_GELU, y);
	tm_quantize_act(len, y, y_scale, yq);
	free(y);
}

void tm_qgemm_s32(const tm_ctx *ctx, const tm_qlinear *ql, int m, const int8_t *xq,
		  int32_t *acc)
{
	forward_q(ctx, ql, m, xq, (size_t)ql->k, 1.0f, QGEMM_OUT_S32, acc, TM_ACT_NONE, 0.0f);
}

// ---- int8 conv3x3 ----

/* Scratch: the quantized image (cin, h, w) and its patch rows (pixels, cin*9), both int8 with
 * 4 bytes of slack for im2row3x3's 4-byte moves, and the GEMM output (pixels, cout) before it
 * is transposed to NCHW. */
size_t tm_qconv3x3_scratch_bytes(int cin, int h, int w, int cout)
{
	size_t pix = (size_t)(h - 2) * (w - 2);
	return round64((size_t)cin * h * w + 4) + round64(pix * (size_t)cin * 9 + 4) +
	       round64(pix * (size_t)cout * sizeof(float));
}

/* rows (pixels, cin*9): row (oy, ox) holds x[ci][oy + ky][ox + kx] in (ci, ky, kx) order, the
 * order of W (cout, cin, 3, 3).  Each kx triple moves as 4 bytes, in increasing address order,
 * so the spare byte is overwritten by the next move (the last one lands in the slack). */
static void im2row3x3(int cin, int h, int w, const int8_t *xq, int8_t *rows)
{
	int oh = h - 2, ow = w - 2;
	for (int oy = 0; oy < oh; oy++)
		for (int ox = 0; ox < ow; ox++) {
			int8_t *d = rows + ((size_t)oy * ow + ox) * cin * 9;
			for (int ci = 0; ci < cin; ci++) {
				const int8_t *src = xq + ((size_t)ci * h + oy) * w + ox;
				for (int ky = 0; ky < 3; ky++, d += 3) {
					uint32_t v;
					memcpy(&v, src + (size_t)ky * w, sizeof(v));
					memcpy(d, &v, sizeof(v));
				}
			}
		}
}

void tm_qconv3x3_forward(const tm_ctx *ctx, const tm_qlinear *ql, int n, int cin, int h, int w,
			 const float *x, tm_act act, float *y, void *scratch)
{
	if (n <= 0 || h < 3 || w < 3)
		return;
	int cout = ql->n, pix = (h - 2) * (w - 2);
	size_t plane = (size_t)cin * h * w;
	int8_t *xq = scratch;
	int8_t *rows = (int8_t *)scratch + round64(plane + 4);
	float *out = (float *)(rows + round64((size_t)pix * ql->k + 4));
	for (int i = 0; i < n; i++) {
		tm_quantize_act(plane, x + plane * i, ql->x_scale, xq);
		im2row3x3(cin, h, w, xq, rows);
		forward_q(ctx, ql, pix, rows, (size_t)ql->k, ql->x_scale, QGEMM_OUT_F32, out,
			  act == TM_ACT_RELU ? act : TM_ACT_NONE, 0.0f);
		float *yi = y + (size_t)cout * pix * i;
		for (int p = 0; p < pix; p++)
			for (int j = 0; j < cout; j++)
				yi[(size_t)j * pix + p] = out[(size_t)p * cout + j];
	}
	if (act == TM_ACT_GELU)
		tm_gelu_forward_ctx(ctx, (size_t)n * cout * pix, y, y);
}
