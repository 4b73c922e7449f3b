/* sparse_avx2.c: the AVX2 kernels of the WIN8 sparse format (sparse_int.h), for CPUs without
 * AVX-512.  A group of 8 output rows is one register of accumulators.  A WIN8 window is 8
 * columns of x at a step of 2 columns, so one register holds it and each slot picks the 8
 * lanes' inputs with one register vpermps on its offsets, then one FMA with the slot's 8
 * values: no gather, no blend.  The kernel runs one loop over the group's slots, each slot's
 * window read from slot_win, so no branch depends on how the slots fall into windows (a
 * window holds 1-3 slots at 90% sparsity), and the slots
 * rotate over four accumulators.  The batch kernel runs two samples per pass over the weights
 * in the same order per sample, so a sample's result does not depend on the batch.  Int8
 * values (q8) are widened to float and the row scale is applied at the end.  Built with the
 * AVX2 flags from the Makefile and called only when the CPU has AVX2 + FMA. */
#include "sparse_int.h"

#include <immintrin.h>

#define LANES 8  /* WIN8: rows per group, one register */
#define STEP WIN8_STEP  /* window w covers columns [2 w, 2 w + 8): one register of x */
#define SPAN 8

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

// ---- the slot loop ----

/* The first slot of [q0, q1) from which on the windows reach past x (w > wlast): those come
 * last, since a group's slots go in window order. */
static inline int inside_end(const uint16_t *sw, int q0, int q1, int wlast)
{
	int e = q1;
	while (e > q0 && sw[e - 1] > wlast)
		e--;
	return e;
}

/* Group g for S samples (1 or 2: x and x + k, reading the weights once).  One loop over the
 * group's slots, the window of each read from slot_win, so that no branch depends on how many
 * slots a window holds.  Slot j of the group (j = q - q0) goes to accumulator j % 4 while j
 * is below the last multiple of 4 before the windows that reach past x; the 0-3 slots left
 * before those go to accumulators 0, 1, 2; the reaching ones to accumulator 3.  The result is
 * (a0 + a1) + (a2 + a3), for each sample alike whatever S. */
static inline __attribute__((always_inline)) void
win8_body(const tm_sparse_w *s, int g, int S, const float *x, const float *bias, bool relu,
	  float *y, bool q8)
{
	const int k = s->k;
	const size_t vsz = q8 ? 1 : sizeof(float);
	const int q0 = s->group_slot[g], q1 = s->group_slot[g + 1];
	const int wlast = k >= SPAN ? (k - SPAN) / STEP : -1;  /* inside x up to here */
	const uint16_t *sw = s->slot_win;
	const uint8_t *id = s->slot_idx;
	const uint8_t *v = (const uint8_t *)(q8 ? (const void *)s->slot_val8
						: (const void *)s->slot_val);
	const int qe = inside_end(sw, q0, q1, wlast), q4 = q0 + (qe - q0) / 4 * 4;
	__m256 a[2][4];
	for (int i = 0; i < 2; i++)
		for (int j = 0; j < 4; j++)
			a[i][j] = _mm256_setzero_ps();
#define SLOT(Q, J, REACH)                                                                     \
	do {                                                                                  \
		__m256i ix = load_idx(id + (size_t)(Q) * LANES);                              \
		__m256 vl = load_vals(v + (size_t)(Q) * LANES * vsz, q8);                     \
		int o_ = sw[Q] * STEP;                                                        \
		for (int i_ = 0; i_ < S; i_++) {                                              \
			const float *xi_ = x + (size_t)i_ * k;                                \
			__m256 xa = REACH ? load_x(xi_, o_, k) : _mm256_loadu_ps(xi_ + o_);    \
			/* a register operand: vpermps with a memory one is twice as slow */  \
			__asm__("" : "+x"(xa));                                               \
			a[i_][J] = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(xa, ix), vl, a[i_][J]); \
		}                                                                             \
	} while (0)
	int q = q0;
	for (; q < q4; q += 4) {
		SLOT(q, 0, false);
		SLOT(q + 1, 1, false);
		SLOT(q + 2, 2, false);
		SLOT(q + 3, 3, false);
	}
	if (q < qe)
		SLOT(q, 0, false);
	if (q + 1 < qe)
		SLOT(q + 1, 1, false);
	if (q + 2 < qe)
		SLOT(q + 2, 2, false);
	for (q = qe; q < q1; q++)
		SLOT(q, 3, true);
#undef SLOT
	for (int i = 0; i < S; i++)
		store_rows(s, g, _mm256_add_ps(a[i][0], a[i][1]), _mm256_add_ps(a[i][2], a[i][3]),
			   bias, relu, y + (size_t)i * s->n);
}

static void win8_one(const tm_sparse_w *s, int g, const float *x, const float *bias, bool relu,
		     float *y)
{
	if (s->q8)
		win8_body(s, g, 1, x, bias, relu, y, true);
	else
		win8_body(s, g, 1, x, bias, relu, y, false);
}

static void win8_two(const tm_sparse_w *s, int g, const float *x, const float *bias, bool relu,
		     float *y)
{
	if (s->q8)
		win8_body(s, g, 2, x, bias, relu, y, true);
	else
		win8_body(s, g, 2, x, bias, relu, y, false);
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
