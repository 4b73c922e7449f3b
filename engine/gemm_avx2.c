/* gemm_avx2.c: the AVX2 + FMA kernel set of the GEMM (built with AVX2 flags, called only when
 * ctx->isa is TM_ISA_AVX2).  The micro-kernel holds a 6 x 16 tile of C in 12 ymm
 * accumulators: per step of k it loads one row of B (two vectors, from a packed panel or from
 * B's own rows) and broadcasts six values of A (from a packed panel or A's own rows).
 * Partial tiles use lane masks and instantiations for fewer rows or one vector column, so an
 * element is computed by the same sequence of FMAs wherever it sits.  The epilogue is fused:
 * the bias seeds the accumulators, ReLU/GELU, alpha and beta are applied before the single
 * store.  Also here: the packing routines (8 x 8 in-register transposes for transposed
 * operands), a dot-product kernel along k for X * W^T with few rows or columns, and two
 * matrix-vector kernels (one row of X against W's rows, or against column panels). */
#include "gemm_int.h"

#include <immintrin.h>
#include <string.h>

#define MR 6
#define NR 16
#define INLINE static inline __attribute__((always_inline))

// ---- epilogue ----

/* e^x for x in about [-87, 88] (clamped): 2^n * p(r), r = x - n ln2, p of degree 6. */
INLINE __m256 exp_ps(__m256 x)
{
	x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
	__m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
				   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
	r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
	__m256 p = _mm256_set1_ps(1.0f / 720);
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
	__m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
				      23);
	return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* GELU, tanh form: 0.5 x (1 + tanh(u)) = x / (1 + e^(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3). */
INLINE __m256 gelu_ps(__m256 x)
{
	__m256 x2 = _mm256_mul_ps(x, x);
	__m256 u = _mm256_mul_ps(_mm256_mul_ps(x, _mm256_set1_ps(-2.0f * 0.7978845608028654f)),
				 _mm256_fmadd_ps(x2, _mm256_set1_ps(0.044715f), _mm256_set1_ps(1.0f)));
	return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), exp_ps(u)));
}

/* All-ones in the first n lanes (n clamped to [0, 8]). */
INLINE __m256i lane_mask(int n)
{
	n = n < 0 ? 0 : n > 8 ? 8 : n;
	return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

INLINE __m256 load_lanes(const float *p, int n, __m256i mask)
{
	return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask);
}

/* c[first n lanes] = act(alpha * acc + beta * c + bias) */
INLINE void epi_store(__m256 acc, float *c, int n, __m256i mask, const float *bias,
		      const gemm_epi *e)
{
	__m256 v = acc;
	if (e->alpha != 1.0f)
		v = _mm256_mul_ps(v, _mm256_set1_ps(e->alpha));
	if (e->beta == 1.0f)
		v = _mm256_add_ps(v, load_lanes(c, n, mask));
	else if (e->beta != 0.0f)
		v = _mm256_fmadd_ps(load_lanes(c, n, mask), _mm256_set1_ps(e->beta), v);
	if (bias)
		v = _mm256_add_ps(v, load_lanes(bias, n, mask));
	if (e->act == TM_ACT_RELU)
		v = _mm256_max_ps(v, _mm256_setzero_ps());
	else if (e->act == TM_ACT_GELU)
		v = gelu_ps(v);
	if (n >= 8)
		_mm256_storeu_ps(c, v);
	else
		_mm256_maskstore_ps(c, mask, v);
}

// ---- micro-kernel ----

/* The tile body for a compile-time row count; half: only the first 8 columns are live.  A is
 * a packed panel (cs == MR, compile-time) or rows read in place (rs apart, cs == 1). */
INLINE void tile_rows(const int mr, const bool half, int nr, int kc, const float *a,
		      ptrdiff_t rs, ptrdiff_t cs, const float *b, ptrdiff_t ldb, float *c,
		      ptrdiff_t ldc, const gemm_epi *e)
{
	gemm_epi ev = *e;
	int n1 = nr - 8;
	__m256i bm0 = lane_mask(nr), bm1 = lane_mask(n1);
	/* with alpha == 1 the bias seeds the accumulators (one load per tile, no add per row) */
	__m256 init0 = _mm256_setzero_ps(), init1 = _mm256_setzero_ps();
	if (ev.bias && ev.alpha == 1.0f) {
		init0 = load_lanes(ev.bias, nr, bm0);
		if (!half && n1 > 0)
			init1 = load_lanes(ev.bias + 8, n1, bm1);
		ev.bias = NULL;
	}
	__m256 c0[MR], c1[MR];
#pragma GCC unroll 6
	for (int i = 0; i < MR; i++) {
		if (i < mr) {
			c0[i] = init0;
			c1[i] = init1;
			if (kc >= 32) {
				_mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
				if (!half)
					_mm_prefetch((const char *)(c + i * ldc + 15), _MM_HINT_T0);
			}
		}
	}
	/* rows read in place: two base pointers, rows at +0, +rs, +2rs of each */
	const float *a0 = a, *a1 = a + 3 * rs;
	const bool plain_b = ldb == NR || nr >= (half ? 8 : 16);
#pragma GCC unroll 4
	for (int p = 0; p < kc; p++) {
		__m256 b0, b1;
		if (plain_b) {
			b0 = _mm256_loadu_ps(b);
			b1 = half ? b0 : _mm256_loadu_ps(b + 8);
		} else {
			/* B's rows read in place, a partial tile: lanes past nr are not ours */
			b0 = _mm256_maskload_ps(b, bm0);
			b1 = half ? b0 : _mm256_maskload_ps(b + 8, bm1);
		}
#pragma GCC unroll 6
		for (int i = 0; i < MR; i++) {
			if (i < mr) {
				const float *ab = i < 3 ? a0 : a1;
				__m256 av = _mm256_broadcast_ss(cs == MR ? a + i : ab + (i % 3) * rs);
				c0[i] = _mm256_fmadd_ps(av, b0, c0[i]);
				if (!half)
					c1[i] = _mm256_fmadd_ps(av, b1, c1[i]);
			}
		}
		if (cs == MR) {
			a += MR;
		} else {
			a0 += cs;
			a1 += cs;
		}
		b += ldb;
	}
	__m256i m0 = bm0, m1 = bm1;
	/* the common stores without the epilogue's per-row tests (short k makes them count):
	 * alpha 1, beta 0 (store) or 1 (accumulate), no activation or ReLU */
	bool fast = ev.alpha == 1.0f && !ev.bias && (ev.beta == 0.0f || ev.beta == 1.0f) &&
		    ev.act != TM_ACT_GELU;
	if (fast) {
		bool accum = ev.beta == 1.0f, relu = ev.act == TM_ACT_RELU;
		bool full0 = nr >= 8, full1 = n1 >= 8;
		const __m256 zero = _mm256_setzero_ps();
#pragma GCC unroll 6
		for (int i = 0; i < MR; i++) {
			if (i < mr) {
				float *ci = c + i * ldc;
				__m256 v0 = c0[i], v1 = c1[i];
				if (accum) {
					v0 = _mm256_add_ps(v0, load_lanes(ci, nr, m0));
					if (!half && n1 > 0)
						v1 = _mm256_add_ps(v1, load_lanes(ci + 8, n1, m1));
				}
				if (relu) {
					v0 = _mm256_max_ps(v0, zero);
					v1 = _mm256_max_ps(v1, zero);
				}
				if (full0)
					_mm256_storeu_ps(ci, v0);
				else
					_mm256_maskstore_ps(ci, m0, v0);
				if (!half && n1 > 0) {
					if (full1)
						_mm256_storeu_ps(ci + 8, v1);
					else
						_mm256_maskstore_ps(ci + 8, m1, v1);
				}
			}
		}
		return;
	}
	const float *bias1 = ev.bias ? ev.bias + 8 : NULL;
#pragma GCC unroll 6
	for (int i = 0; i < MR; i++) {
		if (i < mr) {
			epi_store(c0[i], c + i * ldc, nr, m0, ev.bias, &ev);
			if (!half && n1 > 0)
				epi_store(c1[i], c + i * ldc + 8, n1, m1, bias1, &ev);
		}
	}
}

#define TILE_CASE(MRC, RS, CS)                                                          \
	case MRC:                                                                        \
		if (nr <= 8)                                                             \
			tile_rows(MRC, true, nr, kc, a, RS, CS, b, ldb, c, ldc, e);           \
		else                                                                     \
			tile_rows(MRC, false, nr, kc, a, RS, CS, b, ldb, c, ldc, e);          \
		break;

#define TILE_CASES(RS, CS)                                                              \
	switch (mr) {                                                                    \
	TILE_CASE(1, RS, CS)                                                             \
	TILE_CASE(2, RS, CS)                                                             \
	TILE_CASE(3, RS, CS)                                                             \
	TILE_CASE(4, RS, CS)                                                             \
	TILE_CASE(5, RS, CS)                                                             \
	default:                                                                         \
		TILE_CASE(6, RS, CS)                                                     \
	}

/* A is a packed panel (1, MR) or rows read in place (rs, 1); the driver packs any other. */
static void tile(int mr, int nr, int kc, const float *a, ptrdiff_t rs_a, ptrdiff_t cs_a,
		 const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc, const gemm_epi *e)
{
	if (cs_a == MR) {
		TILE_CASES(1, MR)
	} else {
		TILE_CASES(rs_a, 1)
	}
}

// ---- short k ----

#define SMALLK_ROWS 128  /* rows of A per pass over the strips (their block stays in L1) */

/* One row of C's strip: a plain store, or the full epilogue. */
INLINE void smallk_store(const bool full, const bool plain, __m256 v, float *ci, int nr,
			 __m256i mask, const gemm_epi *ev)
{
	if (plain && full)
		_mm256_storeu_ps(ci, v);
	else if (plain)
		_mm256_maskstore_ps(ci, mask, v);
	else
		epi_store(v, ci, nr, mask, ev->bias, ev);
}

/* The sum of one row's K products, started from init (zero, or the bias). */
INLINE __m256 smallk_dot(const int K, const float *r, const __m256 *bv, __m256 init)
{
	__m256 acc = init;
#pragma GCC unroll 12
	for (int p = 0; p < K; p++)
		acc = _mm256_fmadd_ps(_mm256_broadcast_ss(r + p), bv[p], acc);
	return acc;
}

/* Rows 0 .. m-1 of a strip, two at a time (plain: alpha 1, beta 0, no bias, no
 * activation; otherwise the full epilogue). */
INLINE void smallk_rows(const int K, const bool full, const bool plain, int m,
			const float *a, ptrdiff_t lda, const __m256 *bv, __m256 init, float *c,
			ptrdiff_t ldc, int nr, __m256i mask, const gemm_epi *ev)
{
	int i = 0;
	for (; i + 2 <= m; i += 2) {
		__m256 c0 = smallk_dot(K, a + i * lda, bv, init);
		__m256 c1 = smallk_dot(K, a + (i + 1) * lda, bv, init);
		smallk_store(full, plain, c0, c + i * ldc, nr, mask, ev);
		smallk_store(full, plain, c1, c + (i + 1) * ldc, nr, mask, ev);
	}
	if (i < m)
		smallk_store(full, plain, smallk_dot(K, a + i * lda, bv, init),
			     c + i * ldc, nr, mask, ev);
}

/* C(m, nr <= 8) = epi(A(m, K) * B(K, nr)) for a compile-time K: B's rows stay in registers
 * while the rows of A go by two at a time, each row's values broadcast from A in place.  An
 * element is the same FMA sequence as in tile_rows (seeded with the bias or zero, p = 0 up),
 * so this path and the blocked one give the same bits. */
INLINE void smallk_strip(const int K, int m, const float *a, ptrdiff_t lda, const float *b,
			 ptrdiff_t ldb, float *c, ptrdiff_t ldc, int nr, const gemm_epi *e)
{
	gemm_epi ev = *e;
	__m256i mask = lane_mask(nr);
	__m256 init = _mm256_setzero_ps();
	if (ev.bias && ev.alpha == 1.0f) {
		init = load_lanes(ev.bias, nr, mask);
		ev.bias = NULL;
	}
	bool plain = ev.alpha == 1.0f && ev.beta == 0.0f && !e->bias && ev.act == TM_ACT_NONE;
	__m256 bv[GEMM_SMALLK_KMAX];
#pragma GCC unroll 12
	for (int p = 0; p < K; p++)
		bv[p] = load_lanes(b + p * ldb, nr, mask);
	if (plain && nr == 8)
		smallk_rows(K, true, true, m, a, lda, bv, init, c, ldc, nr, mask, &ev);
	else if (plain)
		smallk_rows(K, false, true, m, a, lda, bv, init, c, ldc, nr, mask, &ev);
	else
		smallk_rows(K, false, false, m, a, lda, bv, init, c, ldc, nr, mask, &ev);
}

#define SMALLK_CASE(K)                                                                  \
	case K:                                                                          \
		smallk_strip(K, mb, a + i0 * lda, lda, b + j, ldb, c + i0 * ldc + j, ldc, nr, \
			     &ev);                                                       \
		break;

/* C(m, n) = epi(A(m, k) * B(k, n)) for k <= GEMM_SMALLK_KMAX, A's and B's rows read in
 * place. */
static void smallk(int m, int n, int k, const float *a, ptrdiff_t lda, const float *b,
		   ptrdiff_t ldb, float *c, ptrdiff_t ldc, const gemm_epi *e)
{
	for (int i0 = 0; i0 < m; i0 += SMALLK_ROWS) {
		int mb = m - i0 < SMALLK_ROWS ? m - i0 : SMALLK_ROWS;
		for (int j = 0; j < n; j += 8) {
			int nr = n - j < 8 ? n - j : 8;
			gemm_epi ev = *e;
			ev.bias = e->bias ? e->bias + j : NULL;
			GEMM_SMALLK_SWITCH(k, SMALLK_CASE)
		}
	}
}

// ---- packing ----

/* In-place transpose of 8 rows of 8 floats: afterwards r[q] holds column q. */
INLINE void transpose8(__m256 r[8])
{
	__m256 t[8], u[8];
#pragma GCC unroll 16
	for (int i = 0; i < 4; i++) {
		t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
		t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
	}
#pragma GCC unroll 16
	for (int i = 0; i < 2; i++) {
		u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
		u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
		u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
		u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
	}
	/* u[4g + e] holds, for rows 4g..4g+3, columns e (low 128 bits) and e + 4 (high) */
#pragma GCC unroll 16
	for (int e = 0; e < 4; e++) {
		r[e] = _mm256_permute2f128_ps(u[e], u[4 + e], 0x20);
		r[e + 4] = _mm256_permute2f128_ps(u[e], u[4 + e], 0x31);
	}
}

/* dst[p * ld + q] = src row q (of nrows, rs apart), element p, for p < np <= 8 and q < nq;
 * rows past nrows give zeros. */
INLINE void transpose_block(int nrows, int np, const float *src, ptrdiff_t rs, float *dst,
			    ptrdiff_t ld, int nq)
{
	__m256 r[8];
	__m256i lm = lane_mask(np);
#pragma GCC unroll 8
	for (int q = 0; q < 8; q++)
		r[q] = q < nrows ? load_lanes(src + q * rs, np, lm) : _mm256_setzero_ps();
	transpose8(r);
	if (nq == 8) {
#pragma GCC unroll 8
		for (int p = 0; p < 8; p++)
			if (p < np)
				_mm256_storeu_ps(dst + p * ld, r[p]);
	} else {
		__m256i sm = lane_mask(nq);
#pragma GCC unroll 8
		for (int p = 0; p < 8; p++)
			if (p < np)
				_mm256_maskstore_ps(dst + p * ld, sm, r[p]);
	}
}

static void pack_b(int kc, int nc, const float *b, ptrdiff_t rs, ptrdiff_t cs, float *dst,
		   size_t panel_stride)
{
	for (int j0 = 0; j0 < nc; j0 += NR, dst += panel_stride) {
		int nj = nc - j0 < NR ? nc - j0 : NR;
		const float *src = b + j0 * cs;
		if (cs == 1) {
			__m256i m0 = lane_mask(nj), m1 = lane_mask(nj - 8);
			for (int p = 0; p < kc; p++) {
				_mm256_store_ps(dst + p * NR, load_lanes(src + p * rs, nj, m0));
				_mm256_store_ps(dst + p * NR + 8,
						nj > 8 ? load_lanes(src + p * rs + 8, nj - 8, m1)
						       : _mm256_setzero_ps());
			}
		} else if (rs == 1) {
			for (int p = 0; p < kc; p += 8) {
				int np = kc - p < 8 ? kc - p : 8;
				for (int h = 0; h < NR; h += 8)
					transpose_block(nj - h, np, src + h * cs + p, cs,
							dst + p * NR + h, NR, 8);
			}
		} else {
			for (int p = 0; p < kc; p++)
				for (int j = 0; j < NR; j++)
					dst[p * NR + j] = j < nj ? src[p * rs + j * cs] : 0.0f;
		}
	}
}

static void pack_a(int mc, int kc, const float *a, ptrdiff_t rs, ptrdiff_t cs, float *dst)
{
	for (int i0 = 0; i0 < mc; i0 += MR, dst += (size_t)kc * MR) {
		int ni = mc - i0 < MR ? mc - i0 : MR;
		const float *src = a + i0 * rs;
		if (cs == 1) {
			for (int p = 0; p < kc; p += 8) {
				int np = kc - p < 8 ? kc - p : 8;
				transpose_block(ni, np, src + p, rs, dst + p * MR, MR, MR);
			}
		} else if (rs == 1) {
			__m256i lm = lane_mask(ni), sm = lane_mask(MR);
			for (int p = 0; p < kc; p++)
				_mm256_maskstore_ps(dst + p * MR, sm, _mm256_maskload_ps(src + p * cs, lm));
		} else {
			for (int p = 0; p < kc; p++)
				for (int i = 0; i < MR; i++)
					dst[p * MR + i] = i < ni ? src[i * rs + p * cs] : 0.0f;
		}
	}
}

// ---- dot-product kernel (X * W^T along k) ----

/* Eight vectors to one: lane a = sum of the lanes of v[a], the same tree for every a. */
INLINE __m256 hsum8(__m256 v[8])
{
	__m256 s1[4], s2[2];
#pragma GCC unroll 16
	for (int a = 0; a < 4; a++)
		s1[a] = _mm256_add_ps(_mm256_unpacklo_ps(v[2 * a], v[2 * a + 1]),
				      _mm256_unpackhi_ps(v[2 * a], v[2 * a + 1]));
#pragma GCC unroll 16
	for (int a = 0; a < 2; a++)
		s2[a] = _mm256_add_ps(_mm256_shuffle_ps(s1[2 * a], s1[2 * a + 1], 0x44),
				      _mm256_shuffle_ps(s1[2 * a], s1[2 * a + 1], 0xEE));
	return _mm256_add_ps(_mm256_permute2f128_ps(s2[0], s2[1], 0x20),
			     _mm256_permute2f128_ps(s2[0], s2[1], 0x31));
}

/* R rows of X against W = 8/R rows of W (nw of them real); C rows get nw values each. */
INLINE void dot_tile(const int R, int nw, int k, const float *x, ptrdiff_t ldx, const float *w,
		     ptrdiff_t ldw, float *c, ptrdiff_t ldc, const gemm_epi *e, const float *bias)
{
	const int W = 8 / R;
	__m256 acc[8];
	const float *wr[8];
#pragma GCC unroll 8
	for (int q = 0; q < W; q++)
		wr[q] = w + (q < nw ? q : 0) * ldw;
#pragma GCC unroll 8
	for (int a = 0; a < 8; a++)
		acc[a] = _mm256_setzero_ps();
	int p = 0;
	for (; p + 8 <= k; p += 8) {
		__m256 xv[8], wv[8];
#pragma GCC unroll 8
		for (int r = 0; r < R; r++)
			xv[r] = _mm256_loadu_ps(x + r * ldx + p);
#pragma GCC unroll 8
		for (int q = 0; q < W; q++)
			wv[q] = _mm256_loadu_ps(wr[q] + p);
#pragma GCC unroll 8
		for (int r = 0; r < R; r++)
#pragma GCC unroll 8
			for (int q = 0; q < W; q++)
				acc[r * W + q] = _mm256_fmadd_ps(xv[r], wv[q], acc[r * W + q]);
	}
	if (p < k) {
		__m256i m = lane_mask(k - p);
		__m256 xv[8], wv[8];
#pragma GCC unroll 8
		for (int r = 0; r < R; r++)
			xv[r] = _mm256_maskload_ps(x + r * ldx + p, m);
#pragma GCC unroll 8
		for (int q = 0; q < W; q++)
			wv[q] = _mm256_maskload_ps(wr[q] + p, m);
#pragma GCC unroll 8
		for (int r = 0; r < R; r++)
#pragma GCC unroll 8
			for (int q = 0; q < W; q++)
				acc[r * W + q] = _mm256_fmadd_ps(xv[r], wv[q], acc[r * W + q]);
	}
	__m256 sums = hsum8(acc);
	gemm_epi ev = *e;
	__m256i nm = lane_mask(nw);
	if (R == 1) {
		epi_store(sums, c, nw, nm, bias, &ev);
		return;
	}
	/* lane r * W + q holds row r, column q: shift each row's lanes down for its store */
	const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
#pragma GCC unroll 8
	for (int r = 0; r < R; r++)
		epi_store(_mm256_permutevar8x32_ps(sums, _mm256_add_epi32(iota, _mm256_set1_epi32(r * W))),
			  c + r * ldc, nw, nm, bias, &ev);
}

static void dot(int m, int n, int k, const float *x, ptrdiff_t ldx, const float *w,
		ptrdiff_t ldw, float *c, ptrdiff_t ldc, const gemm_epi *e)
{
	/* rows of X per tile (8 / rt rows of W): the least padding of n, then 2 x 4 */
	static const int cand[3] = { 2, 4, 1 };
	int rt = 2, waste = 8;
	for (int t = 0; t < 3; t++) {
		int wdt = 8 / cand[t], wst = (wdt - n % wdt) % wdt;
		if (wst < waste) {
			waste = wst;
			rt = cand[t];
		}
	}
	int i = 0;
	while (i < m) {
		int r = m - i >= rt ? rt : m - i >= 2 ? 2 : 1;
		int wdt = 8 / r;
		for (int j = 0; j < n; j += wdt) {
			int nw = n - j < wdt ? n - j : wdt;
			const float *xb = x + i * ldx, *wb = w + j * ldw;
			float *cb = c + i * ldc + j;
			const float *bias = e->bias ? e->bias + j : NULL;
			switch (r) {
			case 4: dot_tile(4, nw, k, xb, ldx, wb, ldw, cb, ldc, e, bias); break;
			case 2: dot_tile(2, nw, k, xb, ldx, wb, ldw, cb, ldc, e, bias); break;
			default: dot_tile(1, nw, k, xb, ldx, wb, ldw, cb, ldc, e, bias); break;
			}
		}
		i += r;
	}
}

// ---- matrix-vector on rows of W ----

#define GEMV_RG 4 /* rows of W streamed side by side */

/* Rows q0..q0+RG-1 of an 8-row tile: RG rows side by side, two accumulators each taking
 * alternate chunks of 8; v[q] gets each row's vector of partial sums. */
INLINE void gemv_rows_group(const int RG, int q0, int nw, int k, const float *x,
			    const float *w, ptrdiff_t ldw, __m256 v[8])
{
	__m256 a0[4], a1[4];
	const float *wr[4];
	int k16 = k & ~15, k8 = k & ~7;
#pragma GCC unroll 4
	for (int r = 0; r < RG; r++) {
		a0[r] = _mm256_setzero_ps();
		a1[r] = _mm256_setzero_ps();
		wr[r] = w + (q0 + r < nw ? q0 + r : 0) * ldw;
	}
	int p = 0;
	for (; p < k16; p += 16) {
		__m256 x0 = _mm256_loadu_ps(x + p), x1 = _mm256_loadu_ps(x + p + 8);
#pragma GCC unroll 4
		for (int r = 0; r < RG; r++) {
			a0[r] = _mm256_fmadd_ps(x0, _mm256_loadu_ps(wr[r] + p), a0[r]);
			a1[r] = _mm256_fmadd_ps(x1, _mm256_loadu_ps(wr[r] + p + 8), a1[r]);
		}
	}
	if (p < k8) {
		__m256 x0 = _mm256_loadu_ps(x + p);
#pragma GCC unroll 4
		for (int r = 0; r < RG; r++)
			a0[r] = _mm256_fmadd_ps(x0, _mm256_loadu_ps(wr[r] + p), a0[r]);
		p += 8;
		if (p < k) {
			__m256i tm = lane_mask(k - p);
			__m256 x1 = _mm256_maskload_ps(x + p, tm);
#pragma GCC unroll 4
			for (int r = 0; r < RG; r++)
				a1[r] = _mm256_fmadd_ps(x1, _mm256_maskload_ps(wr[r] + p, tm), a1[r]);
		}
	} else if (p < k) {
		__m256i tm = lane_mask(k - p);
		__m256 x0 = _mm256_maskload_ps(x + p, tm);
#pragma GCC unroll 4
		for (int r = 0; r < RG; r++)
			a0[r] = _mm256_fmadd_ps(x0, _mm256_maskload_ps(wr[r] + p, tm), a0[r]);
	}
#pragma GCC unroll 4
	for (int r = 0; r < RG; r++)
		v[q0 + r] = _mm256_add_ps(a0[r], a1[r]);
}

/* y(1, nw) = epi(x(1, k) * W(nw, k)^T) for nw <= 8 rows of W, reduced together. */
INLINE void gemv_rows_tile(int nw, int k, const float *x, const float *w, ptrdiff_t ldw,
			   float *y, const gemm_epi *e, const float *bias)
{
	__m256 v[8];
#pragma GCC unroll 8
	for (int q = 0; q < 8; q++)
		v[q] = _mm256_setzero_ps();
	/* whole groups, then the rows left over in smaller ones (same sums per row) */
	int q0 = 0;
	for (; q0 + GEMV_RG <= nw; q0 += GEMV_RG)
		gemv_rows_group(GEMV_RG, q0, nw, k, x, w, ldw, v);
	for (; q0 + 2 <= nw; q0 += 2)
		gemv_rows_group(2, q0, nw, k, x, w, ldw, v);
	if (q0 < nw)
		gemv_rows_group(1, q0, nw, k, x, w, ldw, v);
	const gemm_epi ev = *e;
	epi_store(hsum8(v), y, nw, lane_mask(nw), bias, &ev);
}

static void gemv_rows(int n, int k, const float *x, const float *w, ptrdiff_t ldw, float *y,
		      const gemm_epi *e)
{
	for (int j = 0; j < n; j += 8)
		gemv_rows_tile(n - j < 8 ? n - j : 8, k, x, w + j * ldw, ldw, y + j, e,
			       e->bias ? e->bias + j : NULL);
}

// ---- matrix-vector on column panels ----

/* G panels side by side (G compile-time); the last one has nlast live columns, and only
 * live columns are loaded (B may be read in place). */
INLINE void gemv_group(const int G, int nlast, int k, const float *x, const float *pan,
		       size_t pstride, ptrdiff_t rstride, float *y, const gemm_epi *e)
{
	__m256i lm[8];
	int ln[8];
#pragma GCC unroll 4
	for (int g = 0; g < G; g++) {
		int nv = g == G - 1 ? nlast : NR;
		ln[2 * g] = nv;
		ln[2 * g + 1] = nv - 8;
		lm[2 * g] = lane_mask(nv);
		lm[2 * g + 1] = lane_mask(nv - 8);
	}
	/* two steps of k in flight: acc takes even p, acc2 odd p, added at the end */
	__m256 acc[8], acc2[8];
#pragma GCC unroll 8
	for (int a = 0; a < 2 * G; a++) {
		acc[a] = _mm256_setzero_ps();
		acc2[a] = _mm256_setzero_ps();
	}
	int p = 0;
	for (; p + 2 <= k; p += 2) {
		__m256 xv = _mm256_broadcast_ss(x + p), xw = _mm256_broadcast_ss(x + p + 1);
#pragma GCC unroll 4
		for (int g = 0; g < G; g++) {
			const float *bp = pan + g * pstride + p * rstride;
#pragma GCC unroll 2
			for (int h = 0; h < 2; h++) {
				int a = 2 * g + h;
				acc[a] = _mm256_fmadd_ps(xv, load_lanes(bp + 8 * h, ln[a], lm[a]), acc[a]);
				acc2[a] = _mm256_fmadd_ps(xw, load_lanes(bp + rstride + 8 * h, ln[a], lm[a]),
							  acc2[a]);
			}
		}
	}
	if (p < k) {
		__m256 xv = _mm256_broadcast_ss(x + p);
#pragma GCC unroll 4
		for (int g = 0; g < G; g++) {
			const float *bp = pan + g * pstride + p * rstride;
#pragma GCC unroll 2
			for (int h = 0; h < 2; h++) {
				int a = 2 * g + h;
				acc[a] = _mm256_fmadd_ps(xv, load_lanes(bp + 8 * h, ln[a], lm[a]), acc[a]);
			}
		}
	}
	const gemm_epi ev = *e;
#pragma GCC unroll 4
	for (int g = 0; g < G; g++) {
		int nv = g == G - 1 ? nlast : NR;
		const float *bias = ev.bias ? ev.bias + g * NR : NULL;
		epi_store(_mm256_add_ps(acc[2 * g], acc2[2 * g]), y + g * NR, nv, lm[2 * g], bias,
			  &ev);
		if (nv > 8)
			epi_store(_mm256_add_ps(acc[2 * g + 1], acc2[2 * g + 1]), y + g * NR + 8,
				  nv - 8, lm[2 * g + 1], bias ? bias + 8 : NULL, &ev);
	}
}

static void gemv_panels(int n, int k, const float *x, const float *b, size_t pstride,
			ptrdiff_t rstride, float *y, const gemm_epi *e)
{
	for (int j = 0; j < n; j += 4 * NR) {
		int rest = n - j;
		int g = rest >= 4 * NR ? 4 : (rest + NR - 1) / NR;
		int nlast = rest >= g * NR ? NR : rest - (g - 1) * NR;
		gemm_epi ej = *e;
		ej.bias = e->bias ? e->bias + j : NULL;
		const float *pan = b + (size_t)(j / NR) * pstride;
		switch (g) {
		case 4: gemv_group(4, nlast, k, x, pan, pstride, rstride, y + j, &ej); break;
		case 3: gemv_group(3, nlast, k, x, pan, pstride, rstride, y + j, &ej); break;
		case 2: gemv_group(2, nlast, k, x, pan, pstride, rstride, y + j, &ej); break;
		default: gemv_group(1, nlast, k, x, pan, pstride, rstride, y + j, &ej); break;
		}
	}
}

// ---- the kernel set ----

const gemm_kernels tm_gemm_avx2 = {
	.mr = MR,
	.nr = NR,
	.kc = 256,
	.mc = 72,
	.nc = 512,
	.tile = tile,
	.pack_b = pack_b,
	.pack_a = pack_a,
	.dot = dot,
	.gemv_panels = gemv_panels,
	.gemv_rows = gemv_rows,
	.smallk = smallk,
	.smallk_kmax = GEMM_SMALLK_KMAX,
};

// ---- measured peak ----

#define PEAK_CHAINS 12  /* enough independent FMAs in flight to hide their latency */

double gemm_peak_avx2(double seconds)
{
	__m256 acc[PEAK_CHAINS];
	for (int i = 0; i < PEAK_CHAINS; i++)
		acc[i] = _mm256_set1_ps((float)i * 1e-3f);
	const __m256 a = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
	uint64_t iters = 0, t0 = tm_now_ns(), t1;
	do {
		for (int r = 0; r < 1000; r++) {
#pragma GCC unroll 12
			for (int i = 0; i < PEAK_CHAINS; i++)
				acc[i] = _mm256_fmadd_ps(acc[i], a, c);
		}
		iters += 1000;
		t1 = tm_now_ns();
	} while ((double)(t1 - t0) < seconds * 1e9);
	float out[8];
	volatile float sink = 0;
	for (int i = 0; i < PEAK_CHAINS; i++) {
		_mm256_storeu_ps(out, acc[i]);
		sink += out[0];
	}
	(void)sink;
	return (double)iters * PEAK_CHAINS * 8 * 2 / (double)(t1 - t0);
}
