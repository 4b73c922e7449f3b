/* ops_avx2.c: the AVX2 + FMA row of ops_kernels (ops_int.h): an 8-lane exp (range reduction by
 * ln 2 split in two, a degree-7 polynomial, the exponent added as an integer), softmax-row
 * exponentials with their sum, GELU written as x * sigmoid(2u) so no tanh is needed, and the
 * attention row primitives.  Tails use masked loads and stores (which never touch memory past
 * the end).  Built with the SIMD_AVX2 flags only; ops.c calls it only when ctx->isa says the
 * CPU has AVX2 and FMA. */
#include "ops_int.h"

#include <immintrin.h>
#include <math.h>
#include <stdint.h>

// ---- helpers ----

/* Lanes [0, n) set, n in [0, 8]. */
static inline __m256i tail_mask(size_t n)
{
	static const int32_t bits[16] = { -1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0 };
	return _mm256_loadu_si256((const __m256i *)(bits + 8 - n));
}

/* The first min(n, 8) floats; only a real tail is masked, because a masked store does not
 * forward to a later load of the same address and stalls it. */
static inline __m256 ld8(const float *p, int n)
{
	return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, tail_mask((size_t)n));
}

static inline void st8(float *p, int n, __m256 v)
{
	if (n >= 8)
		_mm256_storeu_ps(p, v);
	else
		_mm256_maskstore_ps(p, tail_mask((size_t)n), v);
}

static inline float hsum8(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

// ---- attention rows ----

static void dot_cols_avx2(int hd, const float *q, const float *kt, ptrdiff_t ldkt, int n,
			  float scale, float *s)
{
	__m256 sc = _mm256_set1_ps(scale);
	int j = 0;
	for (; j + 32 <= n; j += 32) {
		__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
		for (int c = 0; c < hd; c++) {
			const float *r = kt + (size_t)c * ldkt + j;
			__m256 qc = _mm256_set1_ps(q[c]);
			a0 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(r), a0);
			a1 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(r + 8), a1);
			a2 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(r + 16), a2);
			a3 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(r + 24), a3);
		}
		_mm256_storeu_ps(s + j, _mm256_mul_ps(a0, sc));
		_mm256_storeu_ps(s + j + 8, _mm256_mul_ps(a1, sc));
		_mm256_storeu_ps(s + j + 16, _mm256_mul_ps(a2, sc));
		_mm256_storeu_ps(s + j + 24, _mm256_mul_ps(a3, sc));
	}
	for (; j < n; j += 8) {
		/* short rows: two chains over c halve the FMA latency */
		int w = n - j;
		__m256 a = _mm256_setzero_ps(), b = a;
		const float *r = kt + j;
		int c = 0;
		for (; c + 2 <= hd; c += 2, r += 2 * ldkt) {
			a = _mm256_fmadd_ps(_mm256_set1_ps(q[c]), ld8(r, w), a);
			b = _mm256_fmadd_ps(_mm256_set1_ps(q[c + 1]), ld8(r + ldkt, w), b);
		}
		if (c < hd)
			a = _mm256_fmadd_ps(_mm256_set1_ps(q[c]), ld8(r, w), a);
		_mm256_storeu_ps(s + j, _mm256_mul_ps(_mm256_add_ps(a, b), sc)); /* padded row */
	}
}

static void axpy_rows_avx2(int n, const float *p, const float *rows, ptrdiff_t ld, int hd,
			   float *out)
{
	for (int c = 0; c < hd; c += 8) {
		int w = hd - c;
		const float *r = rows + c;
		__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
		int j = 0;
		for (; j + 4 <= n; j += 4, r += 4 * ld) {
			a0 = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), ld8(r, w), a0);
			a1 = _mm256_fmadd_ps(_mm256_set1_ps(p[j + 1]), ld8(r + ld, w), a1);
			a2 = _mm256_fmadd_ps(_mm256_set1_ps(p[j + 2]), ld8(r + 2 * ld, w), a2);
			a3 = _mm256_fmadd_ps(_mm256_set1_ps(p[j + 3]), ld8(r + 3 * ld, w), a3);
		}
		for (; j < n; j++, r += ld)
			a0 = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), ld8(r, w), a0);
		st8(out + c, w, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
	}
}

static void rank1_rows_avx2(int n, const float *a, const float *x, int hd, float *rows,
			    ptrdiff_t ld)
{
	for (int c = 0; c < hd; c += 8) {
		int w = hd - c;
		__m256 xv = ld8(x + c, w);
		float *r = rows + c;
		for (int j = 0; j < n; j++, r += ld)
			st8(r, w, _mm256_fmadd_ps(_mm256_set1_ps(a[j]), xv, ld8(r, w)));
	}
}

// ---- exp ----

/* exp(x) within ~2 ulp; x < -87.3 (and -inf) gives 0, x > 88.3 saturates, NaN stays NaN. */
static inline __m256 exp8(__m256 x)
{
	const __m256 lo = _mm256_set1_ps(-87.33654f), hi = _mm256_set1_ps(88.3762626647949f);
	__m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
	x = _mm256_max_ps(lo, _mm256_min_ps(hi, x)); /* x second: NaN propagates */
	__m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
				   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
	r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
	__m256 p = _mm256_set1_ps(1.0f / 5040);
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
	__m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
	return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

static float exp_shift_sum_avx2(float *row, int len, float mx)
{
	__m256 m = _mm256_set1_ps(mx), acc = _mm256_setzero_ps();
	int j = 0;
	for (; j + 8 <= len; j += 8) {
		__m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(row + j), m));
		_mm256_storeu_ps(row + j, e);
		acc = _mm256_add_ps(acc, e);
	}
	if (j < len) {
		__m256i k = tail_mask((size_t)(len - j));
		__m256 e = exp8(_mm256_sub_ps(_mm256_maskload_ps(row + j, k), m));
		e = _mm256_and_ps(e, _mm256_castsi256_ps(k));
		_mm256_maskstore_ps(row + j, k, e);
		acc = _mm256_add_ps(acc, e);
	}
	return hsum8(acc);
}

static inline float hmax8(__m256 v)
{
	__m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	m = _mm_max_ps(m, _mm_movehl_ps(m, m));
	m = _mm_max_ss(m, _mm_movehdup_ps(m));
	return _mm_cvtss_f32(m);
}

static void softmax_row_avx2(float *s, int n)
{
	__m256 ninf = _mm256_set1_ps(-INFINITY), m = ninf;
	/* s is padded: whole vectors are loaded and stored, the lanes past n are masked out of
	 * the max and the sum */
	for (int j = 0; j < n; j += 8) {
		__m256 k = _mm256_castsi256_ps(tail_mask(n - j >= 8 ? 8 : (size_t)(n - j)));
		m = _mm256_max_ps(m, _mm256_blendv_ps(ninf, _mm256_loadu_ps(s + j), k));
	}
	__m256 mx = _mm256_set1_ps(hmax8(m)), acc = _mm256_setzero_ps();
	for (int j = 0; j < n; j += 8) {
		__m256 k = _mm256_castsi256_ps(tail_mask(n - j >= 8 ? 8 : (size_t)(n - j)));
		__m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), mx));
		_mm256_storeu_ps(s + j, e);
		acc = _mm256_add_ps(acc, _mm256_and_ps(e, k));
	}
	__m256 iv = _mm256_set1_ps(1.0f / hsum8(acc));
	for (int j = 0; j < n; j += 8)
		_mm256_storeu_ps(s + j, _mm256_mul_ps(_mm256_loadu_ps(s + j), iv));
}

static void softmax_grad_row_avx2(int n, const float *p, float *dp, float scale)
{
	__m256 acc = _mm256_setzero_ps();
	/* p loads 0 past n, so the padding lanes of dp add nothing to the dot and become 0 */
	for (int j = 0; j < n; j += 8)
		acc = _mm256_fmadd_ps(ld8(p + j, n - j), _mm256_loadu_ps(dp + j), acc);
	__m256 dot = _mm256_set1_ps(hsum8(acc)), sc = _mm256_set1_ps(scale);
	for (int j = 0; j < n; j += 8) {
		__m256 pv = _mm256_mul_ps(ld8(p + j, n - j), sc);
		_mm256_storeu_ps(dp + j, _mm256_mul_ps(pv, _mm256_sub_ps(_mm256_loadu_ps(dp + j), dot)));
	}
}

// ---- layernorm ----

static void ln_row_avx2(int d, const float *x, const float *g, const float *b, float *y,
			 float *mean, float *rstd)
{
	__m256 s0 = _mm256_setzero_ps(), s1 = s0;
	int j = 0;
	for (; j + 16 <= d; j += 16) {
		s0 = _mm256_add_ps(s0, _mm256_loadu_ps(x + j));
		s1 = _mm256_add_ps(s1, _mm256_loadu_ps(x + j + 8));
	}
	for (; j < d; j += 8)
		s0 = _mm256_add_ps(s0, ld8(x + j, d - j));
	float mu = hsum8(_mm256_add_ps(s0, s1)) / (float)d;
	__m256 m = _mm256_set1_ps(mu), v0 = _mm256_setzero_ps(), v1 = v0;
	for (j = 0; j + 16 <= d; j += 16) {
		__m256 c0 = _mm256_sub_ps(_mm256_loadu_ps(x + j), m);
		__m256 c1 = _mm256_sub_ps(_mm256_loadu_ps(x + j + 8), m);
		v0 = _mm256_fmadd_ps(c0, c0, v0);
		v1 = _mm256_fmadd_ps(c1, c1, v1);
	}
	for (; j < d; j += 8) {
		int w = d - j;
		/* masked-off lanes load 0 and would add mu^2: mask them out of c */
		__m256 c = _mm256_sub_ps(ld8(x + j, w), m);
		c = w >= 8 ? c : _mm256_and_ps(c, _mm256_castsi256_ps(tail_mask((size_t)w)));
		v0 = _mm256_fmadd_ps(c, c, v0);
	}
	float rs = 1.0f / sqrtf(hsum8(_mm256_add_ps(v0, v1)) / (float)d + 1e-5f);
	__m256 r = _mm256_set1_ps(rs), one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
	for (j = 0; j < d; j += 8) {
		int w = d - j;
		__m256 xh = _mm256_mul_ps(_mm256_sub_ps(ld8(x + j, w), m), r);
		__m256 gv = g ? ld8(g + j, w) : one, bv = b ? ld8(b + j, w) : zero;
		st8(y + j, w, _mm256_fmadd_ps(xh, gv, bv));
	}
	if (mean)
		*mean = mu;
	if (rstd)
		*rstd = rs;
}

static void ln_row_grad_avx2(int d, const float *x, const float *g, float mu, float rs,
			      const float *dy, float *dx, float *dg, float *db)
{
	__m256 m = _mm256_set1_ps(mu), r = _mm256_set1_ps(rs), one = _mm256_set1_ps(1.0f);
	__m256 a1 = _mm256_setzero_ps(), a2 = a1;
	for (int j = 0; j < d; j += 8) {
		int w = d - j;
		__m256 gy = ld8(dy + j, w);
		__m256 xh = _mm256_mul_ps(_mm256_sub_ps(ld8(x + j, w), m), r);
		__m256 gv = _mm256_mul_ps(gy, g ? ld8(g + j, w) : one);
		a1 = _mm256_add_ps(a1, gv); /* masked lanes: gy = 0, so gv = 0 */
		a2 = _mm256_fmadd_ps(gv, xh, a2);
		if (dg)
			st8(dg + j, w, _mm256_fmadd_ps(gy, xh, ld8(dg + j, w)));
		if (db)
			st8(db + j, w, _mm256_add_ps(ld8(db + j, w), gy));
	}
	if (!dx)
		return;
	__m256 sg = _mm256_set1_ps(hsum8(a1) / (float)d), sgx = _mm256_set1_ps(hsum8(a2) / (float)d);
	for (int j = 0; j < d; j += 8) {
		int w = d - j;
		__m256 xh = _mm256_mul_ps(_mm256_sub_ps(ld8(x + j, w), m), r);
		__m256 gv = _mm256_mul_ps(ld8(dy + j, w), g ? ld8(g + j, w) : one);
		__m256 t = _mm256_sub_ps(_mm256_sub_ps(gv, sg), _mm256_mul_ps(xh, sgx));
		st8(dx + j, w, _mm256_mul_ps(r, t));
	}
}

// ---- GELU ----

/* 0.5 * (1 + tanh(u)) = sigmoid(2u) with u = sqrt(2/pi) * (x + 0.044715 x^3). */
static inline __m256 gelu_gate(__m256 x, __m256 *x2out)
{
	__m256 x2 = _mm256_mul_ps(x, x);
	__m256 m2u = _mm256_mul_ps(_mm256_mul_ps(x, _mm256_set1_ps(-1.5957691216057308f)),
				   _mm256_fmadd_ps(x2, _mm256_set1_ps(0.044715f), _mm256_set1_ps(1.0f)));
	*x2out = x2;
	return _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), exp8(m2u)));
}

static void bias_act_rows_avx2(int rows, size_t cols, float *y, const float *b, tm_act act)
{
	__m256 zero = _mm256_setzero_ps(), x2;
	for (int r = 0; r < rows; r++) {
		float *row = y + (size_t)r * cols;
		__m256 bv = _mm256_set1_ps(b ? b[r] : 0.0f);
		for (size_t j = 0; j < cols; j += 8) {
			int w = cols - j >= 8 ? 8 : (int)(cols - j);
			__m256 v = _mm256_add_ps(ld8(row + j, w), bv);
			if (act == TM_ACT_RELU)
				v = _mm256_max_ps(v, zero); /* NaN -> 0: the second operand */
			else if (act == TM_ACT_GELU)
				v = _mm256_mul_ps(v, gelu_gate(v, &x2));
			st8(row + j, w, v);
		}
	}
}

static void gelu_forward_avx2(size_t len, const float *x, float *y)
{
	size_t i = 0;
	__m256 x2;
	for (; i + 8 <= len; i += 8) {
		__m256 v = _mm256_loadu_ps(x + i);
		_mm256_storeu_ps(y + i, _mm256_mul_ps(v, gelu_gate(v, &x2)));
	}
	if (i < len) {
		__m256i k = tail_mask(len - i);
		__m256 v = _mm256_maskload_ps(x + i, k);
		_mm256_maskstore_ps(y + i, k, _mm256_mul_ps(v, gelu_gate(v, &x2)));
	}
}

/* GELU'(x) = s + x * s * (1 - s) * 2 * sqrt(2/pi) * (1 + 3 * 0.044715 x^2), s = sigmoid(2u). */
static inline __m256 gelu_grad8(__m256 v)
{
	__m256 x2, s = gelu_gate(v, &x2);
	__m256 du = _mm256_fmadd_ps(x2, _mm256_set1_ps(3.0f * 0.044715f * 1.5957691216057308f),
				    _mm256_set1_ps(1.5957691216057308f));
	__m256 ss = _mm256_mul_ps(s, _mm256_sub_ps(_mm256_set1_ps(1.0f), s));
	return _mm256_fmadd_ps(_mm256_mul_ps(v, ss), du, s);
}

static void gelu_backward_avx2(size_t len, const float *x, const float *dy, float *dx)
{
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		__m256 g = gelu_grad8(_mm256_loadu_ps(x + i));
		_mm256_storeu_ps(dx + i, _mm256_mul_ps(g, _mm256_loadu_ps(dy + i)));
	}
	if (i < len) {
		__m256i k = tail_mask(len - i);
		__m256 g = gelu_grad8(_mm256_maskload_ps(x + i, k));
		_mm256_maskstore_ps(dx + i, k, _mm256_mul_ps(g, _mm256_maskload_ps(dy + i, k)));
	}
}

// ---- kernel set ----

const ops_kernels tm_ops_avx2 = {
	.ln_row = ln_row_avx2,
	.ln_row_grad = ln_row_grad_avx2,
	.bias_act_rows = bias_act_rows_avx2,
	.softmax_row = softmax_row_avx2,
	.softmax_grad_row = softmax_grad_row_avx2,
	.dot_cols = dot_cols_avx2,
	.axpy_rows = axpy_rows_avx2,
	.rank1_rows = rank1_rows_avx2,
	.exp_shift_sum = exp_shift_sum_avx2,
	.gelu_forward = gelu_forward_avx2,
	.gelu_backward = gelu_backward_avx2,
};
