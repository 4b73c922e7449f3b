/* sparse_avx512.c: the AVX-512 kernels of the WIN16 sparse format (sparse_int.h).  A group of
 * 16 output rows is one register of accumulators; x is read as a rolling pair of registers
 * holding the window's 32 columns, and each slot is one vpermt2ps (the 16 lanes' inputs picked
 * from the window by their 5-bit offsets) and one FMA with the slot's 16 values, so no gather
 * is needed.  Slots of a window alternate between two accumulators (a0, a1) to hide the FMA
 * latency; the batch kernel runs four samples per pass over the weights with the same order
 * per sample, so a sample's result does not depend on the batch.  Int8 values (q8) are
 * widened to float in the kernel and the row scale is applied once at the end.  Built with
 * the AVX-512 flags from the Makefile and called only when the CPU has AVX-512. */
#include "sparse_int.h"

#include <immintrin.h>
#include <string.h>

#define LANES 16  /* WIN16: rows per group, one register */
#define STEP 16   /* window w covers columns [16 w, 16 w + 32) */

// ---- helpers ----

/* x[o .. o + 16) with the columns at or beyond k read as zero. */
static inline __m512 load_x(const float *x, int o, int k)
{
	if (o + 16 <= k)
		return _mm512_loadu_ps(x + o);
	if (o >= k)
		return _mm512_setzero_ps();
	return _mm512_maskz_loadu_ps((__mmask16)((1u << (k - o)) - 1), x + o);
}

static inline __m512i load_idx(const uint8_t *id)
{
	return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)id));
}

/* The 16 values of a slot: floats, or int8 converted to float (the row scale comes last). */
static inline __attribute__((always_inline)) __m512 load_vals(const void *v, bool q8)
{
	if (q8)
		return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)v)));
	return _mm512_load_ps(v);
}

/* Rows 16 g .. of y: (a0 + a1) (times the lane scales for int8) + bias, ReLU, stored under
 * the mask of rows below n. */
static inline void store_rows(const tm_sparse_w *s, int g, __m512 a0, __m512 a1,
			      const float *bias, bool relu, float *y)
{
	int r0 = g * LANES;
	int rows = s->n - r0 < LANES ? s->n - r0 : LANES;
	__mmask16 mk = (__mmask16)(rows == 16 ? 0xffffu : (1u << rows) - 1);
	__m512 acc = _mm512_add_ps(a0, a1);
	if (s->q8)
		acc = _mm512_mul_ps(acc, _mm512_load_ps(s->scale + r0));
	if (bias)
		acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(mk, bias + r0));
	if (relu)
		acc = _mm512_max_ps(acc, _mm512_setzero_ps());
	_mm512_mask_storeu_ps(y + r0, mk, acc);
}

// ---- one sample ----

static inline __attribute__((always_inline)) void
win16_one_body(const tm_sparse_w *s, int g, const float *x, const float *bias, bool relu,
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
	__m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
	const int wlast = k >= 2 * STEP ? (k - 2 * STEP) / STEP : -1;  /* inside x up to here */
	for (; wi < we; wi++, cnt++) {
		int w = *wi;
		__m512 xa, xn;
		if (w <= wlast) {
			xa = _mm512_loadu_ps(x + w * STEP);
			xn = _mm512_loadu_ps(x + w * STEP + STEP);
		} else {
			xa = load_x(x, w * STEP, k);
			xn = load_x(x, w * STEP + STEP, k);
		}
		int c = *cnt;
		for (; c >= 2; c -= 2, id += 32, v += 32 * vsz) {
			__m512 p0 = _mm512_permutex2var_ps(xa, load_idx(id), xn);
			__m512 p1 = _mm512_permutex2var_ps(xa, load_idx(id + 16), xn);
			a0 = _mm512_fmadd_ps(p0, load_vals(v, q8), a0);
			a1 = _mm512_fmadd_ps(p1, load_vals(v + 16 * vsz, q8), a1);
		}
		if (c) {
			__m512 p0 = _mm512_permutex2var_ps(xa, load_idx(id), xn);
			a0 = _mm512_fmadd_ps(p0, load_vals(v, q8), a0);
			id += 16;
			v += 16 * vsz;
		}
	}
	store_rows(s, g, a0, a1, bias, relu, y);
}

static void win16_one(const tm_sparse_w *s, int g, const float *x, const float *bias, bool relu,
		      float *y)
{
	if (s->q8)
		win16_one_body(s, g, x, bias, relu, y, true);
	else
		win16_one_body(s, g, x, bias, relu, y, false);
}

// ---- four samples ----

/* The same as win16_one for samples x, x + ldx, x + 2 ldx, x + 3 ldx, reading the weights
 * once. */
static inline __attribute__((always_inline)) void
win16_four_body(const tm_sparse_w *s, int g, const float *x, size_t ldx, const float *bias,
		bool relu, float *y, bool q8)
{
	const int k = s->k, n = s->n;
	const size_t vsz = q8 ? 1 : sizeof(float);  /* bytes per value */
	const int32_t *wi = s->win_idx + s->group_win[g], *we = s->win_idx + s->group_win[g + 1];
	const uint8_t *cnt = s->win_cnt + s->group_win[g];
	const uint8_t *id = s->slot_idx + (size_t)s->group_slot[g] * LANES;
	const uint8_t *v = (const uint8_t *)(q8 ? (const void *)s->slot_val8
						: (const void *)s->slot_val) +
			   (size_t)s->group_slot[g] * LANES * vsz;
	const float *x0 = x, *x1 = x + ldx, *x2 = x + 2 * ldx, *x3 = x + 3 * ldx;
	__m512 a00 = _mm512_setzero_ps(), a01 = a00, a10 = a00, a11 = a00;
	__m512 a20 = a00, a21 = a00, a30 = a00, a31 = a00;
	const int wlast = k >= 2 * STEP ? (k - 2 * STEP) / STEP : -1;  /* inside x up to here */
	for (; wi < we; wi++, cnt++) {
		int w = *wi, o = w * STEP;
		__m512 w0, w1, w2, w3, n0, n1, n2, n3;
		if (w <= wlast) {
			w0 = _mm512_loadu_ps(x0 + o);
			w1 = _mm512_loadu_ps(x1 + o);
			w2 = _mm512_loadu_ps(x2 + o);
			w3 = _mm512_loadu_ps(x3 + o);
			n0 = _mm512_loadu_ps(x0 + o + STEP);
			n1 = _mm512_loadu_ps(x1 + o + STEP);
			n2 = _mm512_loadu_ps(x2 + o + STEP);
			n3 = _mm512_loadu_ps(x3 + o + STEP);
		} else {
			w0 = load_x(x0, o, k);
			w1 = load_x(x1, o, k);
			w2 = load_x(x2, o, k);
			w3 = load_x(x3, o, k);
			n0 = load_x(x0, o + STEP, k);
			n1 = load_x(x1, o + STEP, k);
			n2 = load_x(x2, o + STEP, k);
			n3 = load_x(x3, o + STEP, k);
		}
		int c = *cnt;
		for (; c >= 2; c -= 2, id += 32, v += 32 * vsz) {
			__m512i i0 = load_idx(id), i1 = load_idx(id + 16);
			__m512 v0 = load_vals(v, q8), v1 = load_vals(v + 16 * vsz, q8);
			a00 = _mm512_fmadd_ps(_mm512_permutex2var_ps(w0, i0, n0), v0, a00);
			a10 = _mm512_fmadd_ps(_mm512_permutex2var_ps(w1, i0, n1), v0, a10);
			a20 = _mm512_fmadd_ps(_mm512_permutex2var_ps(w2, i0, n2), v0, a20);
			a30 = _mm512_fmadd_ps(_mm512_permutex2var_ps(w3, i0, n3), v0, a30);
			a01 = _mm512_fmadd_ps(_mm512_permutex2var_ps(w0, i1, n0), v1, a01);
			a11 = _mm512_fmadd_ps(_mm512_permutex2var_ps(w1, i1, n1), v1, a11);
			a21 = _mm512_fmadd_ps(_mm512_permutex2var_ps(w2, i1, n2), v1, a21);
			a31 = _mm512_fmadd_ps(_mm512_permutex2var_ps(w3, i1, n3), v1, a31);
		}
		if (c) {
			__m512i i0 = load_idx(id);
			__m512 v0 = load_vals(v, q8);
			a00 = _mm512_fmadd_ps(_mm512_permutex2var_ps(w0, i0, n0), v0, a00);
			a10 = _mm512_fmadd_ps(_mm512_permutex2var_ps(w1, i0, n1), v0, a10);
			a20 = _mm512_fmadd_ps(_mm512_permutex2var_ps(w2, i0, n2), v0, a20);
			a30 = _mm512_fmadd_ps(_mm512_permutex2var_ps(w3, i0, n3), v0, a30);
			id += 16;
			v += 16 * vsz;
		}
	}
	store_rows(s, g, a00, a01, bias, relu, y);
	store_rows(s, g, a10, a11, bias, relu, y + n);
	store_rows(s, g, a20, a21, bias, relu, y + 2 * (size_t)n);
	store_rows(s, g, a30, a31, bias, relu, y + 3 * (size_t)n);
}

static void win16_four(const tm_sparse_w *s, int g, const float *x, size_t ldx,
		       const float *bias, bool relu, float *y)
{
	if (s->q8)
		win16_four_body(s, g, x, ldx, bias, relu, y, true);
	else
		win16_four_body(s, g, x, ldx, bias, relu, y, false);
}

// ---- the kernel set ----

/* Samples [i0, i1) of x (rows ldx apart) for groups [g0, g1). */
static void win16_rows(const tm_sparse_w *s, int g0, int g1, int i0, int i1, const float *x,
		       size_t ldx, const float *bias, bool relu, float *y)
{
	const size_t n = (size_t)s->n;
	for (int g = g0; g < g1; g++) {
		int i = i0;
		for (; i + 4 <= i1; i += 4)
			win16_four(s, g, x + (size_t)(i - i0) * ldx, ldx, bias, relu, y + i * n);
		for (; i < i1; i++)
			win16_one(s, g, x + (size_t)(i - i0) * ldx, bias, relu, y + i * n);
	}
}

#define X_COPY_FLOATS 4096  /* the aligned copy of x: 16 KB of stack */

/* The windows read x at 64-byte steps, so x's rows should start on a cache line: otherwise
 * every read of x spans two lines, which a timing program outside the repository found
 * costs the 90% layer much of its speed, more or less by the offset.  Rows that do not are
 * copied, as many as fit, to an aligned buffer with rows a multiple of 16 floats apart; the
 * arithmetic is the same, so are the results. */
static void win16_groups(const tm_sparse_w *s, int g0, int g1, int m, const float *x,
			 const float *bias, bool relu, float *y)
{
	const size_t k = (size_t)s->k, kp = (k + 15) / 16 * 16;
	bool aligned = (uintptr_t)x % 64 == 0 && (m == 1 || k % 16 == 0);
	if (aligned || kp > X_COPY_FLOATS) {
		win16_rows(s, g0, g1, 0, m, x, k, bias, relu, y);
		return;
	}
	float buf[X_COPY_FLOATS] __attribute__((aligned(64)));
	int per = (int)(X_COPY_FLOATS / kp);
	for (int i0 = 0; i0 < m; i0 += per) {
		int i1 = m - i0 < per ? m : i0 + per;
		for (int i = i0; i < i1; i++)
			memcpy(buf + (size_t)(i - i0) * kp, x + (size_t)i * k, k * sizeof(float));
		win16_rows(s, g0, g1, i0, i1, buf, kp, bias, relu, y);
	}
}

const sparse_kernels tm_sparse_avx512 = {
	.format = TM_SPARSE_WIN16,
	.win = win16_groups,
};
