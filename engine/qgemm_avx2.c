/* qgemm_avx2.c: the AVX2 int8 kernel set (built with AVX2 flags, called only when ctx->isa is
 * TM_ISA_AVX2, or TM_ISA_AVX512 on a CPU without VNNI).  vpmaddubsw multiplies unsigned by
 * signed bytes and adds adjacent pairs with int16 SATURATION: with u8 = q + 128 a pair could
 * reach 2 * 255 * 127 = 64770 and be clipped.  So activations stay signed and the sign moves
 * to the weights (the sign trick): |x| * (w * sign(x)) = x * w, with |x| <= 128 unsigned and
 * |w * sign(x)| <= 127 (weights are quantized to [-127, 127], so the negation never
 * overflows); a pair is at most 2 * 128 * 127 = 32512 < 32767 and never saturates.  vpmaddwd
 * with ones then widens the pairs into int32 lanes of four products, the same lanes as
 * vpdpbusd.  Register tile: 4 rows x one 16-channel panel (8 ymm accumulators); one row
 * (batch-1 latency) takes 4 panels.  The epilogue is qg_dequant / qg_quant lane by lane. */
#include "qgemm_int.h"

#include <immintrin.h>
#include <string.h>

#define MR 4     /* rows of the tile */
#define NP1 4    /* panels of the one-row tile */
#define MC 96    /* rows of activations kept hot in L2 while the panels stream by */
#define INLINE static inline __attribute__((always_inline))

// ---- epilogue ----

INLINE __m256i lane_mask(int cnt)
{
	return _mm256_cmpgt_epi32(_mm256_set1_epi32(cnt), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* Store 8 (or cnt) accumulators of one row at columns col.. of the block. */
INLINE void epi_store(__m256i acc, const qgemm_epi *e, int row, int col, int cnt)
{
	__m256i mk = lane_mask(cnt);
	ptrdiff_t at = (ptrdiff_t)row * e->ldc + col;
	if (e->corr)
		acc = _mm256_sub_epi32(acc, _mm256_maskload_epi32(e->corr + col, mk));
	if (e->kind == QGEMM_OUT_S32) {
		_mm256_maskstore_epi32((int32_t *)e->c + at, mk, acc);
		return;
	}
	__m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_maskload_ps(e->scale + col, mk));
	if (e->bias)
		v = _mm256_add_ps(v, _mm256_maskload_ps(e->bias + col, mk));
	if (e->relu)
		v = _mm256_max_ps(v, _mm256_setzero_ps());
	if (e->kind == QGEMM_OUT_F32) {
		_mm256_maskstore_ps((float *)e->c + at, mk, v);
		return;
	}
	__m256 t = _mm256_mul_ps(v, _mm256_set1_ps(e->out_inv));
	t = _mm256_max_ps(t, _mm256_set1_ps(-127.0f));
	t = _mm256_min_ps(t, _mm256_set1_ps(127.0f));
	__m256i q = _mm256_cvtps_epi32(t);
	__m256i w16 = _mm256_packs_epi32(q, q);       /* q0-3 q0-3 | q4-7 q4-7 */
	__m256i b8 = _mm256_packs_epi16(w16, w16);    /* bytes q0-3 ... | q4-7 ... */
	int32_t lo = _mm256_cvtsi256_si32(b8), hi = _mm256_extract_epi32(b8, 4);
	uint8_t bytes[8];
	memcpy(bytes, &lo, 4);
	memcpy(bytes + 4, &hi, 4);
	memcpy((int8_t *)e->c + at, bytes, (size_t)(cnt < 8 ? cnt : 8));
}

// ---- the tile ----

INLINE __m256i bcast4(const uint8_t *p)
{
	int32_t v;
	memcpy(&v, p, sizeof(v));
	return _mm256_set1_epi32(v);
}

/* acc += x * w for 8 channels x 4 k: sign onto w, |x| unsigned, pairs to int16 (exact), then
 * pairs of pairs to int32. */
INLINE __m256i dot4(__m256i acc, __m256i xabs, __m256i xsgn, __m256i w, __m256i ones)
{
	__m256i t = _mm256_maddubs_epi16(xabs, _mm256_sign_epi8(w, xsgn));
	return _mm256_add_epi32(acc, _mm256_madd_epi16(t, ones));
}

/* C(mr rows, np panels) of the block at (row0, col0); ncols bounds the last panel. */
INLINE void tile(const int mr, const int np, int kp, const uint8_t *a, size_t lda,
		 const int8_t *w, size_t ps, const qgemm_epi *e, int row0, int col0, int ncols)
{
	const __m256i ones = _mm256_set1_epi16(1);
	__m256i acc[MR][2 * NP1];
#pragma GCC unroll 8
	for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
		for (int v = 0; v < 2 * np; v++)
			acc[r][v] = _mm256_setzero_si256();
	for (int p = 0; p < kp; p += QG_KQ) {
		if (mr == 1) {
			__m256i x = bcast4(a + p), xa = _mm256_abs_epi8(x);
#pragma GCC unroll 8
			for (int v = 0; v < 2 * np; v++) {
				const int8_t *wv = w + (size_t)(v / 2) * ps + (size_t)p * QG_NR + (v % 2) * 32;
				acc[0][v] = dot4(acc[0][v], xa, x,
						 _mm256_loadu_si256((const __m256i *)wv), ones);
			}
			continue;
		}
		__m256i b[2 * NP1];
#pragma GCC unroll 8
		for (int v = 0; v < 2 * np; v++)
			b[v] = _mm256_loadu_si256((const __m256i *)(w + (size_t)(v / 2) * ps +
								    (size_t)p * QG_NR + (v % 2) * 32));
#pragma GCC unroll 8
		for (int r = 0; r < mr; r++) {
			__m256i x = bcast4(a + (size_t)r * lda + p), xa = _mm256_abs_epi8(x);
#pragma GCC unroll 8
			for (int v = 0; v < 2 * np; v++)
				acc[r][v] = dot4(acc[r][v], xa, x, b[v], ones);
		}
	}
#pragma GCC unroll 8
	for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
		for (int v = 0; v < 2 * np; v++) {
			int col = col0 + v * 8, cnt = ncols - col;
			if (cnt > 0)
				epi_store(acc[r][v], e, row0 + r, col, cnt);
		}
}

static void tile_rows(int mr, int kp, const uint8_t *a, size_t lda, const int8_t *w, size_t ps,
		      const qgemm_epi *e, int row0, int col0, int ncols)
{
	switch (mr) {
	case 4: tile(4, 1, kp, a, lda, w, ps, e, row0, col0, ncols); return;
	case 3: tile(3, 1, kp, a, lda, w, ps, e, row0, col0, ncols); return;
	case 2: tile(2, 1, kp, a, lda, w, ps, e, row0, col0, ncols); return;
	default: tile(1, 1, kp, a, lda, w, ps, e, row0, col0, ncols); return;
	}
}

static void row1(int np, int kp, const uint8_t *a, const int8_t *w, size_t ps,
		 const qgemm_epi *e, int col0, int ncols)
{
	switch (np) {
	case 4: tile(1, 4, kp, a, 0, w, ps, e, 0, col0, ncols); return;
	case 3: tile(1, 3, kp, a, 0, w, ps, e, 0, col0, ncols); return;
	case 2: tile(1, 2, kp, a, 0, w, ps, e, 0, col0, ncols); return;
	default: tile(1, 1, kp, a, 0, w, ps, e, 0, col0, ncols); return;
	}
}

// ---- the kernel set ----

static void gemm(int m, int ncols, int kp, const uint8_t *a, size_t lda, const int8_t *wp,
		 size_t ps, const qgemm_epi *e)
{
	int npan = (ncols + QG_NR - 1) / QG_NR;
	if (m == 1) {
		for (int pan = 0; pan < npan; pan += NP1) {
			int np = npan - pan < NP1 ? npan - pan : NP1;
			row1(np, kp, a, wp + (size_t)pan * ps, ps, e, pan * QG_NR, ncols);
		}
		return;
	}
	for (int i0 = 0; i0 < m; i0 += MC) {
		int i1 = m - i0 < MC ? m : i0 + MC;
		for (int pan = 0; pan < npan; pan++)
			for (int i = i0; i < i1; i += MR)
				tile_rows(i1 - i < MR ? i1 - i : MR, kp, a + (size_t)i * lda, lda,
					  wp + (size_t)pan * ps, ps, e, i, pan * QG_NR, ncols);
	}
}

/* s8 = rint(clamp(x * inv, -127, 127)), 32 at a time (the tail scalar, same rounding). */
static void quant(int m, int k, int kp, const float *x, ptrdiff_t ldx, float inv, uint8_t *dst,
		  size_t ldd)
{
	const __m256 vinv = _mm256_set1_ps(inv), lo = _mm256_set1_ps(-127.0f),
		     hi = _mm256_set1_ps(127.0f);
	const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
	for (int i = 0; i < m; i++) {
		const float *xr = x + (ptrdiff_t)i * ldx;
		int8_t *d = (int8_t *)(dst + (size_t)i * ldd);
		int p = 0;
		for (; p + 32 <= k; p += 32) {
			__m256i q[4];
#pragma GCC unroll 4
			for (int u = 0; u < 4; u++) {
				__m256 t = _mm256_mul_ps(_mm256_loadu_ps(xr + p + 8 * u), vinv);
				q[u] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(t, lo), hi));
			}
			/* packs work per 128-bit lane; the permute restores the element order */
			__m256i ab = _mm256_packs_epi32(q[0], q[1]), cd = _mm256_packs_epi32(q[2], q[3]);
			__m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), order);
			_mm256_storeu_si256((__m256i *)(d + p), bytes);
		}
		for (; p < k; p++)
			d[p] = qg_quant(xr[p], inv);
		memset(d + k, 0, (size_t)(kp - k));
	}
}

const qgemm_kernels tm_qgemm_avx2 = {
	.name = "avx2",
	.u8 = false,
	.mr = MR,
	.quant = quant,
	.gemm = gemm,
};
