/* ops_avx2.c: the AVX2 + FMA row of ops_kernels (ops_int.h): an 8-lane exp (range reduction by
 * ln 2 split in two, a degree-7 polynomial, the exponent added as an integer), softmax-row
 * exponentials with their sum, and GELU written as x * sigmoid(2u) so no tanh is needed.
 * Tails use masked loads and stores.  Built with the SIMD_AVX2 flags only; ops.c calls it only
 * when ctx->isa says the CPU has AVX2 and FMA. */
#include "ops_int.h"

#include <immintrin.h>
#include <stdint.h>

// ---- helpers ----

/* Lanes [0, n) set, n in [0, 8]. */
static inline __m256i tail_mask(size_t n)
{
	static const int32_t bits[16] = { -1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0 };
	return _mm256_loadu_si256((const __m256i *)(bits + 8 - n));
}

static inline float hsum8(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
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
	.exp_shift_sum = exp_shift_sum_avx2,
	.gelu_forward = gelu_forward_avx2,
	.gelu_backward = gelu_backward_avx2,
};
