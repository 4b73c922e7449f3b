/* ops_avx512.c: the AVX-512 row of ops_kernels (ops_int.h): a 16-lane exp (range reduction by
 * ln 2 split in two, a degree-7 polynomial, the exponent added as an integer), softmax-row
 * exponentials with their sum, GELU written as x * sigmoid(2u) so no tanh is needed, and the
 * attention row primitives.  Tails use masked loads and stores (which never touch memory past
 * the end).  Built with the SIMD_AVX512 flags only; ops.c calls it
 * only when ctx->isa says the CPU has AVX-512. */
#include "ops_int.h"

#include <immintrin.h>
#include <math.h>

static inline __mmask16 lanes(int n)
{
	return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
}

/* The first min(n, 16) floats; only a real tail is masked, because a masked store does not
 * forward to a later load of the same address and stalls it. */
static inline __m512 ld16(const float *p, int n)
{
	return n >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(lanes(n), p);
}

static inline void st16(float *p, int n, __m512 v)
{
	if (n >= 16)
		_mm512_storeu_ps(p, v);
	else
		_mm512_mask_storeu_ps(p, lanes(n), v);
}

// ---- attention rows ----

/* Four column blocks of 16 at a time for independent FMA chains, then single blocks. */
static void dot_cols_avx512(int hd, const float *q, const float *kt, ptrdiff_t ldkt, int n,
			    float scale, float *s)
{
	__m512 sc = _mm512_set1_ps(scale);
	int j = 0;
	for (; j + 64 <= n; j += 64) {
		__m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
		for (int c = 0; c < hd; c++) {
			const float *r = kt + (size_t)c * ldkt + j;
			__m512 qc = _mm512_set1_ps(q[c]);
			a0 = _mm512_fmadd_ps(qc, _mm512_loadu_ps(r), a0);
			a1 = _mm512_fmadd_ps(qc, _mm512_loadu_ps(r + 16), a1);
			a2 = _mm512_fmadd_ps(qc, _mm512_loadu_ps(r + 32), a2);
			a3 = _mm512_fmadd_ps(qc, _mm512_loadu_ps(r + 48), a3);
		}
		_mm512_storeu_ps(s + j, _mm512_mul_ps(a0, sc));
		_mm512_storeu_ps(s + j + 16, _mm512_mul_ps(a1, sc));
		_mm512_storeu_ps(s + j + 32, _mm512_mul_ps(a2, sc));
		_mm512_storeu_ps(s + j + 48, _mm512_mul_ps(a3, sc));
	}
	for (; j < n; j += 16) {
		/* short rows: two chains over c halve the FMA latency */
		int w = n - j;
		__m512 a = _mm512_setzero_ps(), b = a;
		const float *r = kt + j;
		int c = 0;
		for (; c + 2 <= hd; c += 2, r += 2 * ldkt) {
			a = _mm512_fmadd_ps(_mm512_set1_ps(q[c]), ld16(r, w), a);
			b = _mm512_fmadd_ps(_mm512_set1_ps(q[c + 1]), ld16(r + ldkt, w), b);
		}
		if (c < hd)
			a = _mm512_fmadd_ps(_mm512_set1_ps(q[c]), ld16(r, w), a);
		_mm512_storeu_ps(s + j, _mm512_mul_ps(_mm512_add_ps(a, b), sc)); /* padded row */
	}
}

static void axpy_rows_avx512(int n, const float *p, const float *rows, ptrdiff_t ld, int hd,
			     float *out)
{
	for (int c = 0; c < hd; c += 16) {
		int w = hd - c;
		const float *r = rows + c;
		__m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
		int j = 0;
		for (; j + 4 <= n; j += 4, r += 4 * ld) {
			a0 = _mm512_fmadd_ps(_mm512_set1_ps(p[j]), ld16(r, w), a0);
			a1 = _mm512_fmadd_ps(_mm512_set1_ps(p[j + 1]), ld16(r + ld, w), a1);
			a2 = _mm512_fmadd_ps(_mm512_set1_ps(p[j + 2]), ld16(r + 2 * ld, w), a2);
			a3 = _mm512_fmadd_ps(_mm512_set1_ps(p[j + 3]), ld16(r + 3 * ld, w), a3);
		}
		for (; j < n; j++, r += ld)
			a0 = _mm512_fmadd_ps(_mm512_set1_ps(p[j]), ld16(r, w), a0);
		st16(out + c, w, _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
	}
}

static void rank1_rows_avx512(int n, const float *a, const float *x, int hd, float *rows,
			      ptrdiff_t ld)
{
	for (int c = 0; c < hd; c += 16) {
		int w = hd - c;
		__m512 xv = ld16(x + c, w);
		float *r = rows + c;
		for (int j = 0; j < n; j++, r += ld)
			st16(r, w, _mm512_fmadd_ps(_mm512_set1_ps(a[j]), xv, ld16(r, w)));
	}
}

// ---- exp ----

/* exp(x) within ~2 ulp; x < -87.3 (and -inf) gives 0, x > 88.3 saturates, NaN stays NaN. */
static inline __m512 exp16(__m512 x)
{
	const __m512 lo = _mm512_set1_ps(-87.33654f), hi = _mm512_set1_ps(88.3762626647949f);
	__mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
	x = _mm512_max_ps(lo, _mm512_min_ps(hi, x)); /* x second: NaN propagates */
	__m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
					_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
	r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
	__m512 p = _mm512_set1_ps(1.0f / 5040);
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
	__m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
	return _mm512_maskz_mov_ps((__mmask16)~under, _mm512_mul_ps(p, _mm512_castsi512_ps(e)));
}

static float exp_shift_sum_avx512(float *row, int len, float mx)
{
	__m512 m = _mm512_set1_ps(mx), acc = _mm512_setzero_ps();
	int j = 0;
	for (; j + 16 <= len; j += 16) {
		__m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(row + j), m));
		_mm512_storeu_ps(row + j, e);
		acc = _mm512_add_ps(acc, e);
	}
	if (j < len) {
		__mmask16 k = lanes(len - j);
		__m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, row + j), m));
		_mm512_mask_storeu_ps(row + j, k, e);
		acc = _mm512_mask_add_ps(acc, k, acc, e);
	}
	return _mm512_reduce_add_ps(acc);
}

static void softmax_row_avx512(float *s, int n)
{
	__m512 m = _mm512_set1_ps(-INFINITY);
	/* s is padded: whole vectors are loaded and stored, the lanes past n are masked out of
	 * the max and the sum */
	for (int j = 0; j < n; j += 16)
		m = _mm512_mask_max_ps(m, lanes(n - j), m, _mm512_loadu_ps(s + j));
	__m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(m)), acc = _mm512_setzero_ps();
	for (int j = 0; j < n; j += 16) {
		__m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(s + j), mx));
		_mm512_storeu_ps(s + j, e);
		acc = _mm512_mask_add_ps(acc, lanes(n - j), acc, e);
	}
	__m512 iv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(acc));
	for (int j = 0; j < n; j += 16)
		_mm512_storeu_ps(s + j, _mm512_mul_ps(_mm512_loadu_ps(s + j), iv));
}

static void softmax_grad_row_avx512(int n, const float *p, float *dp, float scale)
{
	__m512 acc = _mm512_setzero_ps();
	/* p loads 0 past n, so the padding lanes of dp add nothing to the dot and become 0 */
	for (int j = 0; j < n; j += 16)
		acc = _mm512_fmadd_ps(ld16(p + j, n - j), _mm512_loadu_ps(dp + j), acc);
	__m512 dot = _mm512_set1_ps(_mm512_reduce_add_ps(acc)), sc = _mm512_set1_ps(scale);
	for (int j = 0; j < n; j += 16) {
		__m512 pv = _mm512_mul_ps(ld16(p + j, n - j), sc);
		_mm512_storeu_ps(dp + j, _mm512_mul_ps(pv, _mm512_sub_ps(_mm512_loadu_ps(dp + j), dot)));
	}
}

// ---- layernorm ----

static void ln_row_avx512(int d, const float *x, const float *g, const float *b, float *y,
			 float *mean, float *rstd)
{
	__m512 s0 = _mm512_setzero_ps(), s1 = s0;
	int j = 0;
	for (; j + 32 <= d; j += 32) {
		s0 = _mm512_add_ps(s0, _mm512_loadu_ps(x + j));
		s1 = _mm512_add_ps(s1, _mm512_loadu_ps(x + j + 16));
	}
	for (; j < d; j += 16)
		s0 = _mm512_add_ps(s0, ld16(x + j, d - j));
	float mu = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)) / (float)d;
	__m512 m = _mm512_set1_ps(mu), v0 = _mm512_setzero_ps(), v1 = v0;
	for (j = 0; j + 32 <= d; j += 32) {
		__m512 c0 = _mm512_sub_ps(_mm512_loadu_ps(x + j), m);
		__m512 c1 = _mm512_sub_ps(_mm512_loadu_ps(x + j + 16), m);
		v0 = _mm512_fmadd_ps(c0, c0, v0);
		v1 = _mm512_fmadd_ps(c1, c1, v1);
	}
	for (; j < d; j += 16) {
		int w = d - j;
		/* masked-off lanes load 0 and would add mu^2: mask them out of c */
		__m512 c = _mm512_sub_ps(ld16(x + j, w), m);
		c = w >= 16 ? c : _mm512_maskz_mov_ps(lanes(w), c);
		v0 = _mm512_fmadd_ps(c, c, v0);
	}
	float rs = 1.0f / sqrtf(_mm512_reduce_add_ps(_mm512_add_ps(v0, v1)) / (float)d + 1e-5f);
	__m512 r = _mm512_set1_ps(rs), one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
	for (j = 0; j < d; j += 16) {
		int w = d - j;
		__m512 xh = _mm512_mul_ps(_mm512_sub_ps(ld16(x + j, w), m), r);
		__m512 gv = g ? ld16(g + j, w) : one, bv = b ? ld16(b + j, w) : zero;
		st16(y + j, w, _mm512_fmadd_ps(xh, gv, bv));
	}
	if (mean)
		*mean = mu;
	if (rstd)
		*rstd = rs;
}

static void ln_row_grad_avx512(int d, const float *x, const float *g, float mu, float rs,
			      const float *dy, float *dx, float *dg, float *db)
{
	__m512 m = _mm512_set1_ps(mu), r = _mm512_set1_ps(rs), one = _mm512_set1_ps(1.0f);
	__m512 a1 = _mm512_setzero_ps(), a2 = a1;
	for (int j = 0; j < d; j += 16) {
		int w = d - j;
		__m512 gy = ld16(dy + j, w);
		__m512 xh = _mm512_mul_ps(_mm512_sub_ps(ld16(x + j, w), m), r);
		__m512 gv = _mm512_mul_ps(gy, g ? ld16(g + j, w) : one);
		a1 = _mm512_add_ps(a1, gv); /* masked lanes: gy = 0, so gv = 0 */
		a2 = _mm512_fmadd_ps(gv, xh, a2);
		if (dg)
			st16(dg + j, w, _mm512_fmadd_ps(gy, xh, ld16(dg + j, w)));
		if (db)
			st16(db + j, w, _mm512_add_ps(ld16(db + j, w), gy));
	}
	if (!dx)
		return;
	__m512 sg = _mm512_set1_ps(_mm512_reduce_add_ps(a1) / (float)d), sgx = _mm512_set1_ps(_mm512_reduce_add_ps(a2) / (float)d);
	for (int j = 0; j < d; j += 16) {
		int w = d - j;
		__m512 xh = _mm512_mul_ps(_mm512_sub_ps(ld16(x + j, w), m), r);
		__m512 gv = _mm512_mul_ps(ld16(dy + j, w), g ? ld16(g + j, w) : one);
		__m512 t = _mm512_sub_ps(_mm512_sub_ps(gv, sg), _mm512_mul_ps(xh, sgx));
		st16(dx + j, w, _mm512_mul_ps(r, t));
	}
}

// ---- GELU ----

/* 0.5 * (1 + tanh(u)) = sigmoid(2u) with u = sqrt(2/pi) * (x + 0.044715 x^3). */
static inline __m512 gelu_gate(__m512 x, __m512 *x2out)
{
	__m512 x2 = _mm512_mul_ps(x, x);
	__m512 m2u = _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(-1.5957691216057308f)),
				   _mm512_fmadd_ps(x2, _mm512_set1_ps(0.044715f), _mm512_set1_ps(1.0f)));
	*x2out = x2;
	return _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), exp16(m2u)));
}

static void bias_act_rows_avx512(int rows, size_t cols, float *y, const float *b, tm_act act)
{
	__m512 zero = _mm512_setzero_ps(), x2;
	for (int r = 0; r < rows; r++) {
		float *row = y + (size_t)r * cols;
		__m512 bv = _mm512_set1_ps(b ? b[r] : 0.0f);
		for (size_t j = 0; j < cols; j += 16) {
			int w = cols - j >= 16 ? 16 : (int)(cols - j);
			__m512 v = _mm512_add_ps(ld16(row + j, w), bv);
			if (act == TM_ACT_RELU)
				v = _mm512_max_ps(v, zero); /* NaN -> 0: the second operand */
			else if (act == TM_ACT_GELU)
				v = _mm512_mul_ps(v, gelu_gate(v, &x2));
			st16(row + j, w, v);
		}
	}
}

static void gelu_forward_avx512(size_t len, const float *x, float *y)
{
	size_t i = 0;
	__m512 x2;
	for (; i + 16 <= len; i += 16) {
		__m512 v = _mm512_loadu_ps(x + i);
		_mm512_storeu_ps(y + i, _mm512_mul_ps(v, gelu_gate(v, &x2)));
	}
	if (i < len) {
		__mmask16 k = lanes((int)(len - i));
		__m512 v = _mm512_maskz_loadu_ps(k, x + i);
		_mm512_mask_storeu_ps(y + i, k, _mm512_mul_ps(v, gelu_gate(v, &x2)));
	}
}

/* GELU'(x) = s + x * s * (1 - s) * 2 * sqrt(2/pi) * (1 + 3 * 0.044715 x^2), s = sigmoid(2u). */
static inline __m512 gelu_grad16(__m512 v)
{
	__m512 x2, s = gelu_gate(v, &x2);
	__m512 du = _mm512_fmadd_ps(x2, _mm512_set1_ps(3.0f * 0.044715f * 1.5957691216057308f),
				    _mm512_set1_ps(1.5957691216057308f));
	__m512 ss = _mm512_mul_ps(s, _mm512_sub_ps(_mm512_set1_ps(1.0f), s));
	return _mm512_fmadd_ps(_mm512_mul_ps(v, ss), du, s);
}

static void gelu_backward_avx512(size_t len, const float *x, const float *dy, float *dx)
{
	size_t i = 0;
	for (; i + 16 <= len; i += 16) {
		__m512 g = gelu_grad16(_mm512_loadu_ps(x + i));
		_mm512_storeu_ps(dx + i, _mm512_mul_ps(g, _mm512_loadu_ps(dy + i)));
	}
	if (i < len) {
		__mmask16 k = lanes((int)(len - i));
		__m512 g = gelu_grad16(_mm512_maskz_loadu_ps(k, x + i));
		_mm512_mask_storeu_ps(dx + i, k, _mm512_mul_ps(g, _mm512_maskz_loadu_ps(k, dy + i)));
	}
}

// ---- kernel set ----

const ops_kernels tm_ops_avx512 = {
	.ln_row = ln_row_avx512,
	.ln_row_grad = ln_row_grad_avx512,
	.bias_act_rows = bias_act_rows_avx512,
	.softmax_row = softmax_row_avx512,
	.softmax_grad_row = softmax_grad_row_avx512,
	.dot_cols = dot_cols_avx512,
	.axpy_rows = axpy_rows_avx512,
	.rank1_rows = rank1_rows_avx512,
	.exp_shift_sum = exp_shift_sum_avx512,
	.gelu_forward = gelu_forward_avx512,
	.gelu_backward = gelu_backward_avx512,
};
