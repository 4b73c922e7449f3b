/* gemm_avx512.c: the AVX-512 kernel set of the GEMM (built with AVX-512 flags, called only
 * when ctx->isa is TM_ISA_AVX512).  The micro-kernel holds a 12 x 32 tile of C in 24 zmm
 * accumulators: per step of k it loads one row of B (two vectors, from a packed panel or
 * from B's own rows) and broadcasts twelve values of A (from a packed panel or A's own rows).
 * Partial tiles use lane masks and instantiations for fewer rows or one vector column, so an
 * element is computed by the same sequence of FMAs wherever it sits.  The epilogue is fused:
 * the bias seeds the accumulators, ReLU/GELU, alpha and beta are applied before the single
 * store.  Also here: the packing routines (16 x 16 in-register transposes for transposed
 * operands), a dot-product kernel along k for X * W^T with few rows or columns, a kernel
 * for narrow layers (n <= 16) that shares the lanes between columns and steps of k, and two
 * matrix-vector kernels (one row of X against W's rows, four rows streamed side by side with
 * their loads lined up with 64 bytes, or against column panels). */
#include "gemm_int.h"

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define MR 12
#define NR 32
#define INLINE static inline __attribute__((always_inline))

// ---- epilogue ----

/* e^x for x in about [-87, 88] (clamped): 2^n * p(r), r = x - n ln2, p of degree 6. */
INLINE __m512 exp_ps(__m512 x)
{
	x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
	__m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
					_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
	r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
	__m512 p = _mm512_set1_ps(1.0f / 720);
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
	return _mm512_scalef_ps(p, n);
}

/* GELU, tanh form: 0.5 x (1 + tanh(u)) = x / (1 + e^(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3). */
INLINE __m512 gelu_ps(__m512 x)
{
	__m512 x2 = _mm512_mul_ps(x, x);
	__m512 u = _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(-2.0f * 0.7978845608028654f)),
				 _mm512_fmadd_ps(x2, _mm512_set1_ps(0.044715f), _mm512_set1_ps(1.0f)));
	return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), exp_ps(u)));
}

/* c[lanes of mask] = act(alpha * acc + beta * c + bias) */
INLINE void epi_store(__m512 acc, float *c, __mmask16 mask, const float *bias,
		      const gemm_epi *e)
{
	__m512 v = acc;
	if (e->alpha != 1.0f)
		v = _mm512_mul_ps(v, _mm512_set1_ps(e->alpha));
	if (e->beta == 1.0f)
		v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, c));
	else if (e->beta != 0.0f)
		v = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, c), _mm512_set1_ps(e->beta), v);
	if (bias)
		v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, bias));
	if (e->act == TM_ACT_RELU)
		v = _mm512_max_ps(v, _mm512_setzero_ps());
	else if (e->act == TM_ACT_GELU)
		v = gelu_ps(v);
	_mm512_mask_storeu_ps(c, mask, v);
}

INLINE __mmask16 lane_mask(int n)
{
	return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

// ---- micro-kernel ----

/* The tile body for a compile-time row count mr and width (half: only the first vector of
 * columns is live); (rs, cs) are compile-time (1, MR) for a packed A panel. */
INLINE void tile_rows(const int mr, const bool half, int nr, int kc, const float *a,
		      ptrdiff_t rs, ptrdiff_t cs, const float *b, ptrdiff_t ldb, float *c,
		      ptrdiff_t ldc, const gemm_epi *e)
{
	gemm_epi ev = *e;
	__mmask16 m0 = lane_mask(nr), m1 = lane_mask(nr - 16);
	/* with alpha == 1 the bias seeds the accumulators (one load per tile, no add per row) */
	__m512 init0 = _mm512_setzero_ps(), init1 = _mm512_setzero_ps();
	if (ev.bias && ev.alpha == 1.0f) {
		init0 = _mm512_maskz_loadu_ps(m0, ev.bias);
		if (!half)
			init1 = _mm512_maskz_loadu_ps(m1, ev.bias + 16);
		ev.bias = NULL;
	}
	__m512 c0[MR], c1[MR];
#pragma GCC unroll 12
	for (int i = 0; i < MR; i++) {
		if (i < mr) {
			c0[i] = init0;
			c1[i] = init1;
			if (kc >= 32) {
				_mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
				if (!half)
					_mm_prefetch((const char *)(c + i * ldc + 16), _MM_HINT_T0);
			}
		}
	}
	/* rows read in place: four base pointers, rows at +0, +rs, +2rs of each, so the
	 * addresses fit x86 scaled-index modes without running out of registers */
	const float *a0 = a, *a1 = a + 3 * rs, *a2 = a + 6 * rs, *a3 = a + 9 * rs;
#pragma GCC unroll 4
	for (int p = 0; p < kc; p++) {
		/* masked: B's rows may be read in place, where lanes past nr are not ours */
		__m512 b0 = _mm512_maskz_loadu_ps(m0, b);
		__m512 b1 = half ? b0 : _mm512_maskz_loadu_ps(m1, b + 16);
#pragma GCC unroll 12
		for (int i = 0; i < MR; i++) {
			if (i < mr) {
				const float *ab = i < 3 ? a0 : i < 6 ? a1 : i < 9 ? a2 : a3;
				__m512 av = _mm512_set1_ps(cs == MR ? a[i] : ab[(i % 3) * rs]);
				c0[i] = _mm512_fmadd_ps(av, b0, c0[i]);
				if (!half)
					c1[i] = _mm512_fmadd_ps(av, b1, c1[i]);
			}
		}
		if (cs == MR) {
			a += MR;
		} else {
			a0 += cs;
			a1 += cs;
			a2 += cs;
			a3 += cs;
		}
		b += ldb;
	}
	/* the common stores without the epilogue's per-row tests (short k makes them count):
	 * alpha 1, beta 0 (store) or 1 (accumulate), no activation or ReLU */
	bool fast = ev.alpha == 1.0f && !ev.bias && (ev.beta == 0.0f || ev.beta == 1.0f) &&
		    ev.act != TM_ACT_GELU;
	if (fast) {
		bool accum = ev.beta == 1.0f, relu = ev.act == TM_ACT_RELU;
		const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 12
		for (int i = 0; i < MR; i++) {
			if (i < mr) {
				float *ci = c + i * ldc;
				__m512 v0 = c0[i], v1 = c1[i];
				if (accum) {
					v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, ci));
					if (!half && m1)
						v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, ci + 16));
				}
				if (relu) {
					v0 = _mm512_max_ps(v0, zero);
					v1 = _mm512_max_ps(v1, zero);
				}
				_mm512_mask_storeu_ps(ci, m0, v0);
				if (!half && m1)
					_mm512_mask_storeu_ps(ci + 16, m1, v1);
			}
		}
		return;
	}
	const float *bias1 = ev.bias ? ev.bias + 16 : NULL;
#pragma GCC unroll 12
	for (int i = 0; i < MR; i++) {
		if (i < mr) {
			epi_store(c0[i], c + i * ldc, m0, ev.bias, &ev);
			if (!half && m1)
				epi_store(c1[i], c + i * ldc + 16, m1, bias1, &ev);
		}
	}
}

#define TILE_CASE(MRC, RS, CS)                                                          \
	case MRC:                                                                        \
		if (nr <= 16)                                                            \
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
	TILE_CASE(6, RS, CS)                                                             \
	TILE_CASE(7, RS, CS)                                                             \
	TILE_CASE(8, RS, CS)                                                             \
	TILE_CASE(9, RS, CS)                                                             \
	TILE_CASE(10, RS, CS)                                                            \
	TILE_CASE(11, RS, CS)                                                            \
	default:                                                                         \
		TILE_CASE(12, RS, CS)                                                    \
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
INLINE void smallk_store(const bool plain, __m512 v0, __m512 v1, float *ci, __mmask16 m0,
			 __mmask16 m1, const gemm_epi *ev)
{
	if (plain) {
		_mm512_mask_storeu_ps(ci, m0, v0);
		_mm512_mask_storeu_ps(ci + 16, m1, v1);
		return;
	}
	epi_store(v0, ci, m0, ev->bias, ev);
	if (m1)
		epi_store(v1, ci + 16, m1, ev->bias ? ev->bias + 16 : NULL, ev);
}

/* Rows 0 .. m-1 of a strip, two at a time, the sums started from init (zero, or the bias).
 * plain: alpha 1, beta 0, no bias, no activation (a plain store); otherwise the full
 * epilogue. */
INLINE void smallk_rows(const int K, const bool plain, int m, const float *a, ptrdiff_t lda,
			const __m512 *b0, const __m512 *b1, __m512 init0, __m512 init1,
			float *c, ptrdiff_t ldc, __mmask16 m0, __mmask16 m1, const gemm_epi *ev)
{
	int i = 0;
	for (; i + 2 <= m; i += 2) {
		const float *r0 = a + i * lda, *r1 = r0 + lda;
		__m512 x0 = _mm512_set1_ps(r0[0]), x1 = _mm512_set1_ps(r1[0]);
		__m512 c00 = _mm512_fmadd_ps(x0, b0[0], init0);
		__m512 c01 = _mm512_fmadd_ps(x0, b1[0], init1);
		__m512 c10 = _mm512_fmadd_ps(x1, b0[0], init0);
		__m512 c11 = _mm512_fmadd_ps(x1, b1[0], init1);
#pragma GCC unroll 12
		for (int p = 1; p < K; p++) {
			x0 = _mm512_set1_ps(r0[p]);
			x1 = _mm512_set1_ps(r1[p]);
			c00 = _mm512_fmadd_ps(x0, b0[p], c00);
			c01 = _mm512_fmadd_ps(x0, b1[p], c01);
			c10 = _mm512_fmadd_ps(x1, b0[p], c10);
			c11 = _mm512_fmadd_ps(x1, b1[p], c11);
		}
		smallk_store(plain, c00, c01, c + i * ldc, m0, m1, ev);
		smallk_store(plain, c10, c11, c + (i + 1) * ldc, m0, m1, ev);
	}
	if (i < m) {
		const float *r0 = a + i * lda;
		__m512 x0 = _mm512_set1_ps(r0[0]);
		__m512 c00 = _mm512_fmadd_ps(x0, b0[0], init0);
		__m512 c01 = _mm512_fmadd_ps(x0, b1[0], init1);
#pragma GCC unroll 12
		for (int p = 1; p < K; p++) {
			x0 = _mm512_set1_ps(r0[p]);
			c00 = _mm512_fmadd_ps(x0, b0[p], c00);
			c01 = _mm512_fmadd_ps(x0, b1[p], c01);
		}
		smallk_store(plain, c00, c01, c + i * ldc, m0, m1, ev);
	}
}

/* C(m, nr <= 32) = epi(A(m, K) * B(K, nr)) for a compile-time K: B's rows stay in registers
 * while the rows of A go by two at a time, each row's values broadcast from A in place.  An
 * element is the same FMA sequence as in tile_rows (seeded with the bias or zero, p = 0 up),
 * so this path and the blocked one give the same bits. */
INLINE void smallk_strip(const int K, int m, const float *a, ptrdiff_t lda, const float *b,
			 ptrdiff_t ldb, float *c, ptrdiff_t ldc, int nr, const gemm_epi *e)
{
	gemm_epi ev = *e;
	__mmask16 m0 = lane_mask(nr), m1 = lane_mask(nr - 16);
	__m512 init0 = _mm512_setzero_ps(), init1 = _mm512_setzero_ps();
	if (ev.bias && ev.alpha == 1.0f) {
		init0 = _mm512_maskz_loadu_ps(m0, ev.bias);
		init1 = _mm512_maskz_loadu_ps(m1, ev.bias + 16);
		ev.bias = NULL;
	}
	bool plain = ev.alpha == 1.0f && ev.beta == 0.0f && !e->bias && ev.act == TM_ACT_NONE;
	__m512 b0[GEMM_SMALLK_KMAX], b1[GEMM_SMALLK_KMAX];
#pragma GCC unroll 12
	for (int p = 0; p < K; p++) {
		b0[p] = _mm512_maskz_loadu_ps(m0, b + p * ldb);
		b1[p] = _mm512_maskz_loadu_ps(m1, b + p * ldb + 16);
	}
	if (plain)
		smallk_rows(K, true, m, a, lda, b0, b1, init0, init1, c, ldc, m0, m1, &ev);
	else
		smallk_rows(K, false, m, a, lda, b0, b1, init0, init1, c, ldc, m0, m1, &ev);
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
		for (int j = 0; j < n; j += NR) {
			int nr = n - j < NR ? n - j : NR;
			gemm_epi ev = *e;
			ev.bias = e->bias ? e->bias + j : NULL;
			GEMM_SMALLK_SWITCH(k, SMALLK_CASE)
		}
	}
}

// ---- packing ----

/* In-place transpose of 16 rows of 16 floats: afterwards r[q] holds column q. */
INLINE void transpose16(__m512 r[16])
{
	__m512 t[16], u[16];
#pragma GCC unroll 16
	for (int i = 0; i < 8; i++) {
		t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
		t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
	}
#pragma GCC unroll 16
	for (int i = 0; i < 4; i++) {
		u[4 * i + 0] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
		u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
		u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
		u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
	}
	/* u[4g + e] holds, for rows 4g..4g+3, columns e, e+4, e+8, e+12 (one per 128-bit lane) */
#pragma GCC unroll 16
	for (int e = 0; e < 4; e++) {
		__m512 v0 = _mm512_shuffle_f32x4(u[e], u[4 + e], 0x88);
		__m512 v1 = _mm512_shuffle_f32x4(u[e], u[4 + e], 0xDD);
		__m512 v2 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0x88);
		__m512 v3 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0xDD);
		r[e] = _mm512_shuffle_f32x4(v0, v2, 0x88);
		r[e + 8] = _mm512_shuffle_f32x4(v0, v2, 0xDD);
		r[e + 4] = _mm512_shuffle_f32x4(v1, v3, 0x88);
		r[e + 12] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
	}
}

/* dst[p * ld + q] = src row q (of nrows, rs apart), element p, for p < np <= 16; rows past
 * nrows give zeros; only the lanes in store_mask are written. */
INLINE void transpose_block(int nrows, int np, const float *src, ptrdiff_t rs, float *dst,
			    ptrdiff_t ld, __mmask16 store_mask)
{
	__m512 r[16];
	__mmask16 lm = lane_mask(np);
#pragma GCC unroll 16
	for (int q = 0; q < 16; q++)
		r[q] = q < nrows ? _mm512_maskz_loadu_ps(lm, src + q * rs) : _mm512_setzero_ps();
	transpose16(r);
#pragma GCC unroll 16
	for (int p = 0; p < 16; p++)
		if (p < np)
			_mm512_mask_storeu_ps(dst + p * ld, store_mask, r[p]);
}

static void pack_b(int kc, int nc, const float *b, ptrdiff_t rs, ptrdiff_t cs, float *dst,
		   size_t panel_stride)
{
	for (int j0 = 0; j0 < nc; j0 += NR, dst += panel_stride) {
		int nj = nc - j0 < NR ? nc - j0 : NR;
		const float *src = b + j0 * cs;
		if (cs == 1) {
			__mmask16 m0 = lane_mask(nj), m1 = lane_mask(nj - 16);
			for (int p = 0; p < kc; p++) {
				_mm512_store_ps(dst + p * NR, _mm512_maskz_loadu_ps(m0, src + p * rs));
				_mm512_store_ps(dst + p * NR + 16,
						_mm512_maskz_loadu_ps(m1, src + p * rs + 16));
			}
		} else if (rs == 1) {
			for (int p = 0; p < kc; p += 16) {
				int np = kc - p < 16 ? kc - p : 16;
				for (int h = 0; h < NR; h += 16)
					transpose_block(nj - h, np, src + h * cs + p, cs,
							dst + p * NR + h, NR, 0xFFFF);
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
			for (int p = 0; p < kc; p += 16) {
				int np = kc - p < 16 ? kc - p : 16;
				transpose_block(ni, np, src + p, rs, dst + p * MR, MR, lane_mask(MR));
			}
		} else if (rs == 1) {
			__mmask16 m = lane_mask(ni);
			for (int p = 0; p < kc; p++)
				_mm512_mask_storeu_ps(dst + p * MR, lane_mask(MR),
						      _mm512_maskz_loadu_ps(m, src + p * cs));
		} else {
			for (int p = 0; p < kc; p++)
				for (int i = 0; i < MR; i++)
					dst[p * MR + i] = i < ni ? src[i * rs + p * cs] : 0.0f;
		}
	}
}

// ---- dot-product kernel (X * W^T along k) ----

/* Sixteen vectors to one: lane a = sum of the lanes of v[a], the same tree for every a. */
INLINE __m512 hsum16(__m512 v[16])
{
	__m512 s1[8], s2[4];
#pragma GCC unroll 16
	for (int a = 0; a < 8; a++)
		s1[a] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * a], v[2 * a + 1]),
				      _mm512_unpackhi_ps(v[2 * a], v[2 * a + 1]));
#pragma GCC unroll 16
	for (int a = 0; a < 4; a++)
		s2[a] = _mm512_add_ps(_mm512_shuffle_ps(s1[2 * a], s1[2 * a + 1], 0x44),
				      _mm512_shuffle_ps(s1[2 * a], s1[2 * a + 1], 0xEE));
	__m512 s30 = _mm512_add_ps(_mm512_shuffle_f32x4(s2[0], s2[1], 0x88),
				   _mm512_shuffle_f32x4(s2[0], s2[1], 0xDD));
	__m512 s31 = _mm512_add_ps(_mm512_shuffle_f32x4(s2[2], s2[3], 0x88),
				   _mm512_shuffle_f32x4(s2[2], s2[3], 0xDD));
	return _mm512_add_ps(_mm512_shuffle_f32x4(s30, s31, 0x88),
			     _mm512_shuffle_f32x4(s30, s31, 0xDD));
}

/* R rows of X against W = 16/R rows of W (nw of them real); C rows get nw values each. */
INLINE void dot_tile(const int R, int nw, int k, const float *x, ptrdiff_t ldx, const float *w,
		     ptrdiff_t ldw, float *c, ptrdiff_t ldc, const gemm_epi *e, const float *bias)
{
	const int W = 16 / R;
	__m512 acc[16];
	const float *wr[16];
#pragma GCC unroll 16
	for (int q = 0; q < W; q++)
		wr[q] = w + (q < nw ? q : 0) * ldw;
#pragma GCC unroll 16
	for (int a = 0; a < 16; a++)
		acc[a] = _mm512_setzero_ps();
	int p = 0;
	for (; p + 16 <= k; p += 16) {
		__m512 xv[16], wv[16];
#pragma GCC unroll 16
		for (int r = 0; r < R; r++)
			xv[r] = _mm512_loadu_ps(x + r * ldx + p);
#pragma GCC unroll 16
		for (int q = 0; q < W; q++)
			wv[q] = _mm512_loadu_ps(wr[q] + p);
#pragma GCC unroll 16
		for (int r = 0; r < R; r++)
#pragma GCC unroll 16
			for (int q = 0; q < W; q++)
				acc[r * W + q] = _mm512_fmadd_ps(xv[r], wv[q], acc[r * W + q]);
	}
	if (p < k) {
		__mmask16 m = lane_mask(k - p);
		__m512 xv[16], wv[16];
#pragma GCC unroll 16
		for (int r = 0; r < R; r++)
			xv[r] = _mm512_maskz_loadu_ps(m, x + r * ldx + p);
#pragma GCC unroll 16
		for (int q = 0; q < W; q++)
			wv[q] = _mm512_maskz_loadu_ps(m, wr[q] + p);
#pragma GCC unroll 16
		for (int r = 0; r < R; r++)
#pragma GCC unroll 16
			for (int q = 0; q < W; q++)
				acc[r * W + q] = _mm512_fmadd_ps(xv[r], wv[q], acc[r * W + q]);
	}
	__m512 sums = hsum16(acc);
	gemm_epi ev = *e;
	__mmask16 nm = lane_mask(nw);
	if (R == 1) {
		epi_store(sums, c, nm, bias, &ev);
		return;
	}
	/* lane r * W + q holds row r, column q: shift each row's lanes down for its store */
	const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
					       14, 15);
	if (ev.beta == 0.0f) {
		/* C is not read: the epilogue runs once on the whole tile */
		__m512 v = sums;
		if (ev.alpha != 1.0f)
			v = _mm512_mul_ps(v, _mm512_set1_ps(ev.alpha));
		if (bias) {
			__m512i col = _mm512_and_si512(iota, _mm512_set1_epi32(W - 1));
			v = _mm512_add_ps(v, _mm512_permutexvar_ps(col, _mm512_maskz_loadu_ps(nm, bias)));
		}
		if (ev.act == TM_ACT_RELU)
			v = _mm512_max_ps(v, _mm512_setzero_ps());
		else if (ev.act == TM_ACT_GELU)
			v = gelu_ps(v);
#pragma GCC unroll 16
		for (int r = 0; r < R; r++)
			_mm512_mask_storeu_ps(c + r * ldc, nm,
					      _mm512_permutexvar_ps(_mm512_add_epi32(iota,
							_mm512_set1_epi32(r * W)), v));
		return;
	}
#pragma GCC unroll 16
	for (int r = 0; r < R; r++)
		epi_store(_mm512_permutexvar_ps(_mm512_add_epi32(iota, _mm512_set1_epi32(r * W)), sums),
			  c + r * ldc, nm, bias, &ev);
}

static void dot(int m, int n, int k, const float *x, ptrdiff_t ldx, const float *w,
		ptrdiff_t ldw, float *c, ptrdiff_t ldc, const gemm_epi *e)
{
	/* rows of X per tile (16 / rt rows of W): the least padding of n, then 4 x 4 */
	static const int cand[3] = { 4, 8, 2 };
	int rt = 4, waste = 16;
	for (int t = 0; t < 3; t++) {
		int wdt = 16 / cand[t], wst = (wdt - n % wdt) % wdt;
		if (wst < waste) {
			waste = wst;
			rt = cand[t];
		}
	}
	int i = 0;
	while (i < m) {
		int r = m - i >= rt ? rt : m - i >= 4 ? 4 : m - i >= 2 ? 2 : 1;
		int wdt = 16 / r;
		for (int j = 0; j < n; j += wdt) {
			int nw = n - j < wdt ? n - j : wdt;
			const float *xb = x + i * ldx, *wb = w + j * ldw;
			float *cb = c + i * ldc + j;
			const float *bias = e->bias ? e->bias + j : NULL;
			switch (r) {
			case 8: dot_tile(8, nw, k, xb, ldx, wb, ldw, cb, ldc, e, bias); break;
			case 4: dot_tile(4, nw, k, xb, ldx, wb, ldw, cb, ldc, e, bias); break;
			case 2: dot_tile(2, nw, k, xb, ldx, wb, ldw, cb, ldc, e, bias); break;
			default: dot_tile(1, nw, k, xb, ldx, wb, ldw, cb, ldc, e, bias); break;
			}
		}
		i += r;
	}
}

// ---- matrix-vector on rows of W ----

/* R <= 4 rows of W against x: each row has two accumulators taking alternate chunks of 16
 * (eight FMA chains for four rows), x is loaded once per chunk for all R rows.  Four rows
 * side by side read W at the L2 cache's full rate (measured: 16 streams lose 8%, one or two
 * lose 5%).  head elements are taken first under a mask, which lines W's loads up with 64
 * bytes when every row has the same alignment.  v[r] gets row r's vector of partial sums;
 * every row runs the same sequence of operations whatever R is. */
INLINE void gemv_rows_group(const int R, int k, int head, const float *x, const float *w,
			    ptrdiff_t ldw, __m512 *v)
{
	__m512 a0[4], a1[4];
	const float *wr[4];
#pragma GCC unroll 4
	for (int r = 0; r < R; r++) {
		a0[r] = _mm512_setzero_ps();
		a1[r] = _mm512_setzero_ps();
		wr[r] = w + r * ldw;
	}
	int p = 0;
	if (head > 0) {
		__mmask16 hm = lane_mask(head);
		__m512 xv = _mm512_maskz_loadu_ps(hm, x);
#pragma GCC unroll 4
		for (int r = 0; r < R; r++)
			a1[r] = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(hm, wr[r]), a1[r]);
		p = head;
	}
	for (; p + 32 <= k; p += 32) {
		__m512 x0 = _mm512_loadu_ps(x + p), x1 = _mm512_loadu_ps(x + p + 16);
#pragma GCC unroll 4
		for (int r = 0; r < R; r++)
			a0[r] = _mm512_fmadd_ps(x0, _mm512_loadu_ps(wr[r] + p), a0[r]);
#pragma GCC unroll 4
		for (int r = 0; r < R; r++)
			a1[r] = _mm512_fmadd_ps(x1, _mm512_loadu_ps(wr[r] + p + 16), a1[r]);
	}
	if (p + 16 <= k) {
		__m512 x0 = _mm512_loadu_ps(x + p);
#pragma GCC unroll 4
		for (int r = 0; r < R; r++)
			a0[r] = _mm512_fmadd_ps(x0, _mm512_loadu_ps(wr[r] + p), a0[r]);
		p += 16;
	}
	if (p < k) {
		__mmask16 tm = lane_mask(k - p);
		__m512 x1 = _mm512_maskz_loadu_ps(tm, x + p);
#pragma GCC unroll 4
		for (int r = 0; r < R; r++)
			a1[r] = _mm512_fmadd_ps(x1, _mm512_maskz_loadu_ps(tm, wr[r] + p), a1[r]);
	}
#pragma GCC unroll 4
	for (int r = 0; r < R; r++)
		v[r] = _mm512_add_ps(a0[r], a1[r]);
}

/* Four vectors to four sums: lane r of the result is the sum of v[r]'s lanes. */
INLINE __m128 hsum4(const __m512 v[4])
{
	__m512 t0 = _mm512_add_ps(_mm512_unpacklo_ps(v[0], v[1]), _mm512_unpackhi_ps(v[0], v[1]));
	__m512 t1 = _mm512_add_ps(_mm512_unpacklo_ps(v[2], v[3]), _mm512_unpackhi_ps(v[2], v[3]));
	__m512 u = _mm512_add_ps(_mm512_shuffle_ps(t0, t1, 0x44), _mm512_shuffle_ps(t0, t1, 0xEE));
	u = _mm512_add_ps(u, _mm512_shuffle_f32x4(u, u, 0x4E));
	u = _mm512_add_ps(u, _mm512_shuffle_f32x4(u, u, 0xB1));
	return _mm512_castps512_ps128(u);
}

/* y(1, NW) = epi(x * W(NW, k)^T) for a tile of NW <= 16 rows (compile-time), groups of four
 * rows each reduced as soon as it is done. */
INLINE void gemv_rows_tile(const int NW, int k, int head, const float *x, const float *w,
			   ptrdiff_t ldw, float *y, const float *bias, const gemm_epi *e)
{
	__m512 sums = _mm512_setzero_ps();
#pragma GCC unroll 4
	for (int q = 0; q < NW; q += 4) {
		__m512 v[4] = { _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
				_mm512_setzero_ps() };
		if (NW - q >= 4)
			gemv_rows_group(4, k, head, x, w + q * ldw, ldw, v);
		else
			gemv_rows_group(NW % 4, k, head, x, w + q * ldw, ldw, v);
		__m128 h = hsum4(v);
		switch (q / 4) {
		case 0: sums = _mm512_insertf32x4(sums, h, 0); break;
		case 1: sums = _mm512_insertf32x4(sums, h, 1); break;
		case 2: sums = _mm512_insertf32x4(sums, h, 2); break;
		default: sums = _mm512_insertf32x4(sums, h, 3); break;
		}
	}
	epi_store(sums, y, lane_mask(NW), bias, e);
}

#define GEMV_ROWS_CASE(NW)                                                              \
	case NW:                                                                         \
		gemv_rows_tile(NW, k, head, x, w, ldw, y + j, bias, &ev);                \
		break;

/* y(1, n) = epi(x(1, k) * W(n, k)^T) in tiles of 16 rows.  A row's sum depends only on k and
 * the alignment of W's rows, not on n or the row's place in a tile. */
static void gemv_rows(int n, int k, const float *x, const float *w, ptrdiff_t ldw, float *y,
		      const gemm_epi *e)
{
	/* line W up with 64 bytes when all its rows share one alignment */
	int head = 0;
	if (ldw % 16 == 0 && k >= 64)
		head = (int)((16 - ((uintptr_t)w / sizeof(float)) % 16) % 16);
	const gemm_epi ev = *e;
	for (int j = 0; j < n; j += 16, w += 16 * ldw) {
		const float *bias = ev.bias ? ev.bias + j : NULL;
		switch (n - j < 16 ? n - j : 16) {
		GEMV_ROWS_CASE(1)
		GEMV_ROWS_CASE(2)
		GEMV_ROWS_CASE(3)
		GEMV_ROWS_CASE(4)
		GEMV_ROWS_CASE(5)
		GEMV_ROWS_CASE(6)
		GEMV_ROWS_CASE(7)
		GEMV_ROWS_CASE(8)
		GEMV_ROWS_CASE(9)
		GEMV_ROWS_CASE(10)
		GEMV_ROWS_CASE(11)
		GEMV_ROWS_CASE(12)
		GEMV_ROWS_CASE(13)
		GEMV_ROWS_CASE(14)
		GEMV_ROWS_CASE(15)
		default:
			GEMV_ROWS_CASE(16)
		}
	}
}

// ---- matrix-vector on column panels ----

/* G panels side by side (G compile-time); with TAIL the last one has nlast < NR live
 * columns and only live columns are loaded (B may be read in place), else every load is a
 * whole vector. */
INLINE void gemv_group(const int G, const bool TAIL, int nlast, int k, const float *x,
		       const float *pan, size_t pstride, ptrdiff_t rstride, float *y,
		       const gemm_epi *e)
{
	__mmask16 lm[8];
#pragma GCC unroll 4
	for (int g = 0; g < G; g++) {
		int nv = TAIL && g == G - 1 ? nlast : NR;
		lm[2 * g] = lane_mask(nv);
		lm[2 * g + 1] = lane_mask(nv - 16);
	}
	/* two steps of k in flight: acc takes even p, acc2 odd p, added at the end */
	__m512 acc[8], acc2[8];
#pragma GCC unroll 8
	for (int a = 0; a < 2 * G; a++) {
		acc[a] = _mm512_setzero_ps();
		acc2[a] = _mm512_setzero_ps();
	}
#define GEMV_LOAD(g, h, ptr)                                                            \
	(TAIL && (g) == G - 1 ? _mm512_maskz_loadu_ps(lm[2 * (g) + (h)], (ptr))          \
			      : _mm512_loadu_ps(ptr))
	int p = 0;
	for (; p + 2 <= k; p += 2) {
		__m512 xv = _mm512_set1_ps(x[p]), xw = _mm512_set1_ps(x[p + 1]);
#pragma GCC unroll 4
		for (int g = 0; g < G; g++) {
			const float *bp = pan + g * pstride + p * rstride;
#pragma GCC unroll 2
			for (int h = 0; h < 2; h++)
				acc[2 * g + h] = _mm512_fmadd_ps(xv, GEMV_LOAD(g, h, bp + 16 * h),
								 acc[2 * g + h]);
#pragma GCC unroll 2
			for (int h = 0; h < 2; h++)
				acc2[2 * g + h] = _mm512_fmadd_ps(xw,
					GEMV_LOAD(g, h, bp + rstride + 16 * h), acc2[2 * g + h]);
		}
	}
	if (p < k) {
		__m512 xv = _mm512_set1_ps(x[p]);
#pragma GCC unroll 4
		for (int g = 0; g < G; g++) {
			const float *bp = pan + g * pstride + p * rstride;
#pragma GCC unroll 2
			for (int h = 0; h < 2; h++)
				acc[2 * g + h] = _mm512_fmadd_ps(xv, GEMV_LOAD(g, h, bp + 16 * h),
								 acc[2 * g + h]);
		}
	}
#undef GEMV_LOAD
	const gemm_epi ev = *e;
#pragma GCC unroll 4
	for (int g = 0; g < G; g++) {
		int nv = TAIL && g == G - 1 ? nlast : NR;
		const float *bias = ev.bias ? ev.bias + g * NR : NULL;
		epi_store(_mm512_add_ps(acc[2 * g], acc2[2 * g]), y + g * NR, lm[2 * g], bias, &ev);
		if (nv > 16)
			epi_store(_mm512_add_ps(acc[2 * g + 1], acc2[2 * g + 1]), y + g * NR + 16,
				  lm[2 * g + 1], bias ? bias + 16 : NULL, &ev);
	}
}

#define GEMV_GROUP_CASE(GC)                                                             \
	case GC:                                                                         \
		if (nlast < NR)                                                          \
			gemv_group(GC, true, nlast, k, x, pan, pstride, rstride, y + j, &ej); \
		else                                                                     \
			gemv_group(GC, false, NR, k, x, pan, pstride, rstride, y + j, &ej); \
		break;

/* Panels four at a time for a long k, one at a time (a single sequential stream) for a short
 * one: measured about 1% apart either way, at the L2 cache's bandwidth. */
static void gemv_panels(int n, int k, const float *x, const float *b, size_t pstride,
			ptrdiff_t rstride, float *y, const gemm_epi *e)
{
	int gmax = k >= 256 ? 4 : 1;
	for (int j = 0; j < n; j += gmax * NR) {
		int rest = n - j;
		int g = rest >= gmax * NR ? gmax : (rest + NR - 1) / NR;
		int nlast = rest >= g * NR ? NR : rest - (g - 1) * NR;
		gemm_epi ej = *e;
		ej.bias = e->bias ? e->bias + j : NULL;
		const float *pan = b + (size_t)(j / NR) * pstride;
		switch (g) {
		GEMV_GROUP_CASE(4)
		GEMV_GROUP_CASE(3)
		GEMV_GROUP_CASE(2)
		default:
			GEMV_GROUP_CASE(1)
		}
	}
}

// ---- narrow layers: columns and steps of k share the lanes ----

/* Y(m, n) = epi(X(m, k) W(n, k)^T) for n <= 16 and k <= NARROW_KMAX.  With n along the lanes a
 * tile would leave most of them idle (10 of 16 at n = 10), so here a vector holds columns and
 * steps of k together and every lane does useful work:
 *   - each group of four columns takes four steps of k per vector: lane 4c + j is column c at
 *     step 4s + j, against X[4s .. 4s + 3] broadcast to the four 128-bit lanes; two groups
 *     share each broadcast (a last group of three columns gets a zero column);
 *   - one or two columns left over form a pair that takes eight steps: lane 8c + j is column
 *     c at step 8q + j, against X[8q .. 8q + 7] broadcast to both halves.
 * Either way a vector is 16 multiply-adds of the result, one FMA, and X is read in place.
 * W is laid out that way once per call (wl: one vector per step of each group, zero past k).
 * Eight rows at a time, one accumulator per row and group; the partial sums of a column (four,
 * or eight for the pair) are added at the end by narrow_sum4, into a small row-major tile that
 * is written to C after the next block's products.  An element's value depends on its row of
 * X, its row of W, k and the group its column falls in (fixed by n and the column), not on m
 * or the row's place, so a split of the rows between threads does not change its bits. */
#define NARROW_KMAX 255
#define NARROW_ROWS 8
#define NARROW_WL_VECS (4 * ((NARROW_KMAX + 3) / 4)) /* the most vectors, at n = 15 or 16 */

/* Four columns of W (rows w, w + ldw, ...; only the first ncols are read, the rest are zero):
 * vector s of dst holds W[c][4s + j] at lane 4c + j, for s < ceil(k / 4), zero past k. */
static void narrow_lay4(int k, int ncols, const float *w, ptrdiff_t ldw, float *dst)
{
	int vecs = (k + 3) / 4;
	for (int p0 = 0; p0 < k; p0 += 16) {
		__mmask16 lm = lane_mask(k - p0);
		__m512 r[4];
#pragma GCC unroll 4
		for (int c = 0; c < 4; c++)
			r[c] = c < ncols ? _mm512_maskz_loadu_ps(lm, w + c * ldw + p0)
					 : _mm512_setzero_ps();
		/* a 4 x 4 transpose of 128-bit chunks: chunk s of row c to chunk c of vector s */
		__m512 t0 = _mm512_shuffle_f32x4(r[0], r[1], 0x44);  /* r0.0 r0.1 r1.0 r1.1 */
		__m512 t1 = _mm512_shuffle_f32x4(r[0], r[1], 0xEE);  /* r0.2 r0.3 r1.2 r1.3 */
		__m512 t2 = _mm512_shuffle_f32x4(r[2], r[3], 0x44);
		__m512 t3 = _mm512_shuffle_f32x4(r[2], r[3], 0xEE);
		__m512 o[4] = {
			_mm512_shuffle_f32x4(t0, t2, 0x88), _mm512_shuffle_f32x4(t0, t2, 0xDD),
			_mm512_shuffle_f32x4(t1, t3, 0x88), _mm512_shuffle_f32x4(t1, t3, 0xDD),
		};
		int nv = vecs - p0 / 4 < 4 ? vecs - p0 / 4 : 4;
#pragma GCC unroll 4
		for (int i = 0; i < 4; i++)
			if (i < nv)
				_mm512_store_ps(dst + (p0 / 4 + i) * 16, o[i]);
	}
}

/* Two columns w0 and w1 (NULL: a zero column): vector q of dst holds W[c][8q + s] at lane
 * 8c + s, for q < ceil(k / 8), zero past k. */
static void narrow_lay2(int k, const float *w0, const float *w1, float *dst)
{
	for (int q = 0; 8 * q < k; q++) {
		__mmask8 lm = k - 8 * q >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << (k - 8 * q)) - 1);
		__m256d lo = _mm256_castps_pd(_mm256_maskz_loadu_ps(lm, w0 + 8 * q));
		__m256d hi = w1 ? _mm256_castps_pd(_mm256_maskz_loadu_ps(lm, w1 + 8 * q))
				: _mm256_setzero_pd();
		_mm512_store_pd((double *)(dst + 16 * q),
				_mm512_insertf64x4(_mm512_castpd256_pd512(lo), hi, 1));
	}
}

/* Lane sums of four vectors at once: lane 4L + a of the result is the sum of the four lanes
 * of 128-bit lane L of v[a] (the same tree, (s0 + s1) + (s2 + s3), for every lane). */
INLINE __m512 narrow_sum4(__m512 v0, __m512 v1, __m512 v2, __m512 v3)
{
	__m512 a = _mm512_add_ps(_mm512_shuffle_ps(v0, v1, 0x88), _mm512_shuffle_ps(v0, v1, 0xDD));
	__m512 b = _mm512_add_ps(_mm512_shuffle_ps(v2, v3, 0x88), _mm512_shuffle_ps(v2, v3, 0xDD));
	return _mm512_add_ps(_mm512_shuffle_ps(a, b, 0x88), _mm512_shuffle_ps(a, b, 0xDD));
}

/* G (1 or 2) groups of four columns for eight rows of X (ldx apart), sharing each broadcast
 * of X[4s .. 4s + 3]: t[r * ts + c] = row r, column c of the groups. */
INLINE void narrow_quads(const int G, int k, const float *x, ptrdiff_t ldx, const float *wl,
			 size_t wstride, float *t, int ts)
{
	__m512 acc[2][NARROW_ROWS];
#pragma GCC unroll 16
	for (int r = 0; r < NARROW_ROWS; r++)
		for (int g = 0; g < G; g++)
			acc[g][r] = _mm512_setzero_ps();
	int k4 = k / 4;
#pragma GCC unroll 2
	for (int s = 0; s < k4; s++) {
		__m512 w0 = _mm512_load_ps(wl + 16 * s);
		__m512 w1 = G > 1 ? _mm512_load_ps(wl + wstride + 16 * s) : w0;
#pragma GCC unroll 8
		for (int r = 0; r < NARROW_ROWS; r++) {
			__m512 xv = _mm512_broadcast_f32x4(_mm_loadu_ps(x + r * ldx + 4 * s));
			acc[0][r] = _mm512_fmadd_ps(xv, w0, acc[0][r]);
			if (G > 1)
				acc[1][r] = _mm512_fmadd_ps(xv, w1, acc[1][r]);
		}
	}
	if (k & 3) {
		__mmask8 lm = (__mmask8)((1u << (k & 3)) - 1);
		__m512 w0 = _mm512_load_ps(wl + 16 * k4);
		__m512 w1 = G > 1 ? _mm512_load_ps(wl + wstride + 16 * k4) : w0;
#pragma GCC unroll 8
		for (int r = 0; r < NARROW_ROWS; r++) {
			__m512 xv = _mm512_broadcast_f32x4(_mm_maskz_loadu_ps(lm, x + r * ldx + 4 * k4));
			acc[0][r] = _mm512_fmadd_ps(xv, w0, acc[0][r]);
			if (G > 1)
				acc[1][r] = _mm512_fmadd_ps(xv, w1, acc[1][r]);
		}
	}
	/* lane 4L + a of a sum holds column L of the a-th vector summed; gathering lanes
	 * L, L + 4, ... in the order below lines up four runs of four */
	const __m512i order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
	if (G == 2) {
		/* rows r and r + 1: (row r, cols 0-3 | 4-7 | row r + 1, cols 0-3 | 4-7) */
#pragma GCC unroll 4
		for (int r = 0; r < NARROW_ROWS; r += 2) {
			__m512 z = _mm512_permutexvar_ps(
				order, narrow_sum4(acc[0][r], acc[1][r], acc[0][r + 1], acc[1][r + 1]));
			_mm256_storeu_ps(t + r * ts, _mm512_castps512_ps256(z));
			_mm256_storeu_ps(t + (r + 1) * ts, _mm512_extractf32x8_ps(z, 1));
		}
	} else {
		/* rows r .. r + 3, four columns each */
#pragma GCC unroll 2
		for (int r = 0; r < NARROW_ROWS; r += 4) {
			__m512 z = _mm512_permutexvar_ps(
				order, narrow_sum4(acc[0][r], acc[0][r + 1], acc[0][r + 2], acc[0][r + 3]));
			/* spelled out: the lane index must be an immediate at any -O level */
			_mm_storeu_ps(t + r * ts, _mm512_castps512_ps128(z));
			_mm_storeu_ps(t + (r + 1) * ts, _mm512_extractf32x4_ps(z, 1));
			_mm_storeu_ps(t + (r + 2) * ts, _mm512_extractf32x4_ps(z, 2));
			_mm_storeu_ps(t + (r + 3) * ts, _mm512_extractf32x4_ps(z, 3));
		}
	}
}

/* One pair of columns for eight rows: t[r * ts + c], c = 0 and (when two) 1. */
INLINE void narrow_g2(int k, const float *x, ptrdiff_t ldx, const float *wl, float *t, int ts,
		      bool two)
{
	__m512 acc[NARROW_ROWS];
#pragma GCC unroll 8
	for (int r = 0; r < NARROW_ROWS; r++)
		acc[r] = _mm512_setzero_ps();
	int k8 = k / 8;
	for (int q = 0; q < k8; q++) {
		__m512 wv = _mm512_load_ps(wl + 16 * q);
#pragma GCC unroll 8
		for (int r = 0; r < NARROW_ROWS; r++) {
			__m256d xv = _mm256_castps_pd(_mm256_loadu_ps(x + r * ldx + 8 * q));
			acc[r] = _mm512_fmadd_ps(_mm512_castpd_ps(_mm512_broadcast_f64x4(xv)), wv,
						 acc[r]);
		}
	}
	if (k & 7) {
		__mmask8 lm = (__mmask8)((1u << (k & 7)) - 1);
		__m512 wv = _mm512_load_ps(wl + 16 * k8);
#pragma GCC unroll 8
		for (int r = 0; r < NARROW_ROWS; r++) {
			__m256d xv =
				_mm256_castps_pd(_mm256_maskz_loadu_ps(lm, x + r * ldx + 8 * k8));
			acc[r] = _mm512_fmadd_ps(_mm512_castpd_ps(_mm512_broadcast_f64x4(xv)), wv,
						 acc[r]);
		}
	}
	/* Eight partial sums per column and row: four rows at a time summed within each 128-bit
	 * lane, then the two lanes of each column added. */
	__m512 u[2] = { narrow_sum4(acc[0], acc[1], acc[2], acc[3]),
			narrow_sum4(acc[4], acc[5], acc[6], acc[7]) };
	/* 128-bit lane 0: column 0 of rows 0..3, lane 1: column 1 of rows 0..3, lanes 2 and 3:
	 * the same for rows 4..7 */
	__m512 f = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], 0x88),
				 _mm512_shuffle_f32x4(u[0], u[1], 0xDD));
	float s[16] __attribute__((aligned(64)));
	_mm512_store_ps(s, f);
	for (int r = 0; r < NARROW_ROWS; r++) {
		int base = (r / 4) * 8 + r % 4;
		t[r * ts] = s[base];
		if (two)
			t[r * ts + 1] = s[base + 4];
	}
}

static void narrow(int m, int n, int k, const float *x, ptrdiff_t ldx, const float *w,
		   ptrdiff_t ldw, float *c, ptrdiff_t ldc, const gemm_epi *e)
{
	float wl[NARROW_WL_VECS * 16] __attribute__((aligned(64)));
	/* two result tiles: a block's results are stored to c after the next block's products,
	 * when the partial stores that assembled them have left the store buffer (reading them
	 * back at once stalled on store forwarding) */
	float t[2][NARROW_ROWS * 16] __attribute__((aligned(64))) = { { 0 } };
	float xtail[NARROW_ROWS * NARROW_KMAX];
	/* four-column groups (a last one of three columns padded), then at most one pair */
	int quads = n / 4 + (n % 4 == 3), pair = n - 4 * quads > 0 ? 4 * quads : -1;
	size_t v4 = (size_t)(k + 3) / 4 * 16;
	for (int g = 0; g < quads; g++)
		narrow_lay4(k, n - 4 * g < 4 ? n - 4 * g : 4, w + 4 * g * ldw, ldw, wl + g * v4);
	float *wl2 = wl + quads * v4;
	if (pair >= 0)
		narrow_lay2(k, w + pair * ldw, pair + 1 < n ? w + (pair + 1) * ldw : NULL, wl2);
	/* Rows of C next to each other (ldc == n, a linear layer's output) are written as one
	 * run of rows * n floats, full vectors against a bias repeated per row; otherwise row by
	 * row under a mask of n lanes. */
	bool flat = ldc == n;
	int ts = flat ? n : 16;
	float bt[NARROW_ROWS * 16] __attribute__((aligned(64)));
	if (flat && e->bias)
		for (int r = 0; r < NARROW_ROWS; r++)
			memcpy(bt + r * n, e->bias, sizeof(float) * (size_t)n);
	__mmask16 nm = lane_mask(n);
	for (int i0 = 0, b = 0; i0 < m; i0 += NARROW_ROWS, b ^= 1) {
		int rows = m - i0 < NARROW_ROWS ? m - i0 : NARROW_ROWS;
		const float *xb = x + i0 * ldx;
		ptrdiff_t ldb = ldx;
		if (rows < NARROW_ROWS) {
			/* the last rows, copied into a full block (the rest zero, not stored) */
			memset(xtail, 0, sizeof(float) * NARROW_ROWS * (size_t)k);
			for (int r = 0; r < rows; r++)
				memcpy(xtail + r * k, xb + r * ldx, sizeof(float) * (size_t)k);
			xb = xtail;
			ldb = k;
		}
		float *tb = t[b];
		/* a lone last group first: when it is padded, its fourth column lands on the
		 * next row's first when rows are n apart, and the pairs overwrite it */
		int g = quads;
		if (g % 2) {
			g--;
			narrow_quads(1, k, xb, ldb, wl + g * v4, v4, tb + 4 * g, ts);
		}
		while (g > 0) {
			g -= 2;
			narrow_quads(2, k, xb, ldb, wl + g * v4, v4, tb + 4 * g, ts);
		}
		if (pair >= 0)
			narrow_g2(k, xb, ldb, wl2, tb + pair, ts, pair + 1 < n);
		/* the previous block's results, then this one's if it is the last */
		for (int h = i0 > 0 ? 1 : 0; h >= 0; h--) {
			if (h == 0 && i0 + NARROW_ROWS < m)
				break;
			const float *tr = t[b ^ h];
			int i = i0 - h * NARROW_ROWS, nrows = h ? NARROW_ROWS : rows;
			if (flat) {
				int len = nrows * n;
				for (int o = 0; o < len; o += 16)
					epi_store(_mm512_load_ps(tr + o), c + i * ldc + o,
						  lane_mask(len - o), e->bias ? bt + o : NULL, e);
			} else {
				for (int r = 0; r < nrows; r++)
					epi_store(_mm512_load_ps(tr + r * 16), c + (i + r) * ldc, nm,
						  e->bias, e);
			}
		}
	}
}

// ---- the kernel set ----

const gemm_kernels tm_gemm_avx512 = {
	.mr = MR,
	.nr = NR,
	.kc = 384,
	.mc = 120,
	.nc = 480,
	.tile = tile,
	.pack_b = pack_b,
	.pack_a = pack_a,
	.dot = dot,
	.narrow = narrow,
	.narrow_kmax = NARROW_KMAX,
	.gemv_panels = gemv_panels,
	.gemv_rows = gemv_rows,
	.smallk = smallk,
	.smallk_kmax = GEMM_SMALLK_KMAX,
};

// ---- measured peak ----

#define PEAK_CHAINS 12  /* enough independent FMAs in flight to hide their latency */

double gemm_peak_avx512(double seconds)
{
	__m512 acc[PEAK_CHAINS];
	for (int i = 0; i < PEAK_CHAINS; i++)
		acc[i] = _mm512_set1_ps((float)i * 1e-3f);
	const __m512 a = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
	uint64_t iters = 0, t0 = tm_now_ns(), t1;
	do {
		for (int r = 0; r < 1000; r++) {
			/* Fully unrolled so the chains live in registers, not in acc[] in memory. */
#pragma GCC unroll 12
			for (int i = 0; i < PEAK_CHAINS; i++)
				acc[i] = _mm512_fmadd_ps(acc[i], a, c);
		}
		iters += 1000;
		t1 = tm_now_ns();
	} while ((double)(t1 - t0) < seconds * 1e9);
	volatile float sink = 0;
	for (int i = 0; i < PEAK_CHAINS; i++)
		sink += _mm512_reduce_add_ps(acc[i]);
	(void)sink;
	return (double)iters * PEAK_CHAINS * 16 * 2 / (double)(t1 - t0);
}
