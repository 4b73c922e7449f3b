/* sparse_avx2.c: the AVX2 kernels of the WIN8 sparse format (sparse_int.h), for CPUs without
 * AVX-512.  A group of 8 output rows is one register of accumulators; x is read as a rolling
 * pair of registers holding the window's 16 columns, and each slot picks the 8 lanes' inputs
 * with two vpermps (one per register, on the offsets' low 3 bits) and a vblendvps on bit 3,
 * then one FMA with the slot's 8 values: no gather.  Slots of a window alternate between two
 * accumulators (a0, a1); the batch kernel runs two samples per pass over the weights (AVX2
 * has 16 registers) with the same order per sample, so a sample's result does not depend on
 * the batch.  Int8 values (q8) are widened to float and the row scale is applied at the end.
 * Built with the AVX2 flags from the Makefile and called only when the CPU has AVX2 + FMA. */
#include "sparse_int.h"

#include <immintrin.h>

#define LANES 8  /* WIN8: rows per group, one register */
#define STEP 8   /* window w covers columns [8 w, 8 w + 16) */

// ---- helpers ----

static inline __m256i lane_mask(int n)
{
	const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
	return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), iota);
}

/* x[o .. o + 8) with the columns at or beyond k read as zero. */
static inline __m256 load_x(const float *x, int o, int k)
{
	if (o + 8 <= k)
		return _mm256_loadu_ps(x + o);
	if (o >= k)
		return _mm256_setzero_ps();
	return _mm256_maskload_ps(x + o, lane_mask(k - o));
}

static inline __m256i load_idx(const uint8_t *id)
{
	return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)id));
}

/* The 8 values of a slot: floats, or int8 converted to float. */
static inline __attribute__((always_inline)) __m256 load_vals(const void *v, bool q8)
{
	if (q8)
		return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)v)));
	return _mm256_load_ps(v);
}

/* The inputs of the 8 lanes: column 8 w + idx, from xa (offsets 0-7) or xb (8-15). */
static inline __m256 pick(__m256 xa, __m256 xb, __m256i idx)
{
	__m256 lo = _mm256_permutevar8x32_ps(xa, idx);
	__m256 hi = _mm256_permutevar8x32_ps(xb, idx);
	return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

/* Rows 8 g .. of y: (a0 + a1) (times the lane scales for int8) + bias, ReLU, stored to the
 * rows below n. */
static inline void store_rows(const tm_sparse_w *s, int g, __m256 a0, __m256 a1,
			      const float *bias, bool relu, float *y)
{
	int r0 = g * LANES;
	int rows = s->n - r0 < LANES ? s->n - r0 : LANES;
	__m256 acc = _mm256_add_ps(a0, a1);
	if (s->q8)
		acc = _mm256_mul_ps(acc, _mm256_load_ps(s->scale + r0));
	if (rows == LANES) {
		if (bias)
			acc = _mm256_add_ps(acc, _mm256_loadu_ps(bias + r0));
		if (relu)
			acc = _mm256_max_ps(acc, _mm256_setzero_ps());
		_mm256_storeu_ps(y + r0, acc);
		return;
	}
	__m256i mk = lane_mask(rows);
	if (bias)
		acc = _mm256_add_ps(acc, _mm256_maskload_ps(bias + r0, mk));
	if (relu)
		acc = _mm256_max_ps(acc, _mm256_setzero_ps());
	_mm256_maskstore_ps(y + r0, mk, acc);
}

// ---- one sample ----

static inline __attribute__((always_inline)) void
win8_one_body(const tm_sparse_w *s, int g, const float *x, const float *bias, bool relu,
	      float *y, bool q8)
{
	const int k = s->k;
	const size_t vsz = q8 ? 1 : sizeof(float);  /* bytes per value */
	const int32_t *wi = s->win_idx + s->group_win[g], *we = s->win_idx + s->group_win[g + 1];
	const uint8_t *cnt = s->win_cnt + s->group_win[g];
	const uint8_t *id = s->slot_idx + (size_t)s->group_slot[g] * LANES;
	const uint8_t *v = (const uint8_t *)(q8 ? (const void *)s->slot_val8
						: (const void *)s->slot_val) +
			   (size_t)s->group_slot[g] * LANES * vsz;
	__m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
	const int wlast = k >= 2 * STEP ? (k - 2 * STEP) / STEP : -1;  /* inside x up to here */
	for (; wi < we; wi++, cnt++) {
		int w = *wi;
		__m256 xa, xn;
		if (w <= wlast) {
			xa = _mm256_loadu_ps(x + w * STEP);
			xn = _mm256_loadu_ps(x + w * STEP + STEP);
		} else {
			xa = load_x(x, w * STEP, k);
			xn = load_x(x, w * STEP + STEP, k);
		}
		int c = *cnt;
		for (; c >= 2; c -= 2, id += 16, v += 16 * vsz) {
			__m256 p0 = pick(xa, xn, load_idx(id));
			__m256 p1 = pick(xa, xn, load_idx(id + 8));
			a0 = _mm256_fmadd_ps(p0, load_vals(v, q8), a0);
			a1 = _mm256_fmadd_ps(p1, load_vals(v + 8 * vsz, q8), a1);
		}
		if (c) {
			a0 = _mm256_fmadd_ps(pick(xa, xn, load_idx(id)), load_vals(v, q8), a0);
			id += 8;
			v += 8 * vsz;
		}
	}
	store_rows(s, g, a0, a1, bias, relu, y);
}

static void win8_one(const tm_sparse_w *s, int g, const float *x, const float *bias, bool relu,
		     float *y)
{
	if (s->q8)
		win8_one_body(s, g, x, bias, relu, y, true);
	else
		win8_one_body(s, g, x, bias, relu, y, false);
}

// ---- two samples ----

/* The same as win8_one for samples x and x + k, reading the weights once. */
static inline __attribute__((always_inline)) void
win8_two_body(const tm_sparse_w *s, int g, const float *x, const float *bias, bool relu,
	      float *y, bool q8)
{
	const int k = s->k;
	const size_t vsz = q8 ? 1 : sizeof(float);
	const int32_t *wi = s->win_idx + s->group_win[g], *we = s->win_idx + s->group_win[g + 1];
	const uint8_t *cnt = s->win_cnt + s->group_win[g];
	const uint8_t *id = s->slot_idx + (size_t)s->group_slot[g] * LANES;
	const uint8_t *v = (const uint8_t *)(q8 ? (const void *)s->slot_val8
						: (const void *)s->slot_val) +
			   (size_t)s->group_slot[g] * LANES * vsz;
	const float *x0 = x, *x1 = x + k;
	__m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00;
	const int wlast = k >= 2 * STEP ? (k - 2 * STEP) / STEP : -1;  /* inside x up to here */
	for (; wi < we; wi++, cnt++) {
		int w = *wi, o = w * STEP;
		__m256 w0, w1, n0, n1;
		if (w <= wlast) {
			w0 = _mm256_loadu_ps(x0 + o);
			w1 = _mm256_loadu_ps(x1 + o);
			n0 = _mm256_loadu_ps(x0 + o + STEP);
			n1 = _mm256_loadu_ps(x1 + o + STEP);
		} else {
			w0 = load_x(x0, o, k);
			w1 = load_x(x1, o, k);
			n0 = load_x(x0, o + STEP, k);
			n1 = load_x(x1, o + STEP, k);
		}
		int c = *cnt;
		for (; c >= 2; c -= 2, id += 16, v += 16 * vsz) {
			__m256i i0 = load_idx(id), i1 = load_idx(id + 8);
			__m256 v0 = load_vals(v, q8), v1 = load_vals(v + 8 * vsz, q8);
			a00 = _mm256_fmadd_ps(pick(w0, n0, i0), v0, a00);
			a10 = _mm256_fmadd_ps(pick(w1, n1, i0), v0, a10);
			a01 = _mm256_fmadd_ps(pick(w0, n0, i1), v1, a01);
			a11 = _mm256_fmadd_ps(pick(w1, n1, i1), v1, a11);
		}
		if (c) {
			__m256i i0 = load_idx(id);
			__m256 v0 = load_vals(v, q8);
			a00 = _mm256_fmadd_ps(pick(w0, n0, i0), v0, a00);
			a10 = _mm256_fmadd_ps(pick(w1, n1, i0), v0, a10);
			id += 8;
			v += 8 * vsz;
		}
	}
	store_rows(s, g, a00, a01, bias, relu, y);
	store_rows(s, g, a10, a11, bias, relu, y + s->n);
}

static void win8_two(const tm_sparse_w *s, int g, const float *x, const float *bias, bool relu,
		     float *y)
{
	if (s->q8)
		win8_two_body(s, g, x, bias, relu, y, true);
	else
		win8_two_body(s, g, x, bias, relu, y, false);
}

// ---- the kernel set ----

static void win8_groups(const tm_sparse_w *s, int g0, int g1, int m, const float *x,
			const float *bias, bool relu, float *y)
{
	const size_t k = (size_t)s->k, n = (size_t)s->n;
	for (int g = g0; g < g1; g++) {
		int i = 0;
		for (; i + 2 <= m; i += 2)
			win8_two(s, g, x + i * k, bias, relu, y + i * n);
		for (; i < m; i++)
			win8_one(s, g, x + i * k, bias, relu, y + i * n);
	}
}

const sparse_kernels tm_sparse_avx2 = {
	.format = TM_SPARSE_WIN8,
	.win = win8_groups,
};
