/* qgemm_avx2.c: the AVX2 int8 kernel set (built with AVX2 flags, called only when ctx->isa is
 * TM_ISA_AVX2, or TM_ISA_AVX512 on a CPU without VNNI).  vpmaddubsw (u8 x s8, pairs added with
 * int16 SATURATION) is not used: with u8 = q + 128 a pair reaches 2 * 255 * 127 = 64770 and
 * would be clipped, and the exact alternative, the sign trick (|x| x sign-moved weights), costs
 * vpsignb + vpmaddubsw + vpmaddwd per 32 products, which on Zen 4 all issue to the same two
 * pipes (measured: no faster than FP32 FMA).  Instead the int8 weights are sign-extended to
 * int16 with vpmovsxbw (a shuffle-pipe op) as they are loaded, activations are stored as int16,
 * and vpmaddwd multiplies and adds pairs straight into int32 lanes: exact, one multiply-pipe op
 * per 16 products.  A vector holds four channels x two partial sums (k even and odd halves of
 * a group of four), folded with vphaddd in the epilogue.  Register tile: 5 rows x 8 channels
 * (10 ymm accumulators); one row (batch-1 latency) takes 32 channels.  The epilogue is
 * qg_dequant / qg_quant lane by lane. */
#include "qgemm_int.h"

#include <immintrin.h>
#include <string.h>

#define MR 6     /* rows of the tile */
#define NG 2     /* 4-channel groups of the tile */
#define NG1 8    /* 4-channel groups of the one-row tile */
#define MC 96    /* rows of activations kept hot in L2 while the panels stream by (16 tiles) */
#define NC_BYTES (128u << 10) /* weight bytes of one column block */
#define WIDE_K 2048 /* deepest k whose half panels are widened into a stack buffer (32 KB) */
#define INLINE static inline __attribute__((always_inline))

// ---- epilogue ----

INLINE __m256i lane_mask(int cnt)
{
	return _mm256_cmpgt_epi32(_mm256_set1_epi32(cnt), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* Store 8 (or cnt) accumulators of one row at columns col.. of the block.  Whole vectors use
 * plain loads and stores (VEX masked stores are slow on AMD); the last partial one masks. */
INLINE void epi_store(__m256i acc, const qgemm_epi *e, int row, int col, int cnt)
{
	bool full = cnt >= 8;
	__m256i mk = full ? _mm256_set1_epi32(-1) : lane_mask(cnt);
	ptrdiff_t at = (ptrdiff_t)row * e->ldc + col;
	if (e->corr)
		acc = _mm256_sub_epi32(acc, full ? _mm256_loadu_si256((const __m256i *)(e->corr + col))
						 : _mm256_maskload_epi32(e->corr + col, mk));
	if (e->kind == QGEMM_OUT_S32) {
		if (full)
			_mm256_storeu_si256((__m256i *)((int32_t *)e->c + at), acc);
		else
			_mm256_maskstore_epi32((int32_t *)e->c + at, mk, acc);
		return;
	}
	__m256 s = _mm256_mul_ps(_mm256_set1_ps(e->x_scale),
				 full ? _mm256_loadu_ps(e->scale + col)
				      : _mm256_maskload_ps(e->scale + col, mk));
	__m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), s);
	if (e->bias)
		v = _mm256_add_ps(v, full ? _mm256_loadu_ps(e->bias + col)
					  : _mm256_maskload_ps(e->bias + col, mk));
	if (e->relu)
		v = _mm256_max_ps(v, _mm256_setzero_ps());
	if (e->kind == QGEMM_OUT_F32) {
		if (full)
			_mm256_storeu_ps((float *)e->c + at, v);
		else
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

/* Two group accumulators (channels 0-3 and 4-7, two partial sums each) -> 8 channel sums. */
INLINE __m256i fold(__m256i a, __m256i b)
{
	__m256i h = _mm256_hadd_epi32(a, b);       /* a0 a1 b0 b1 | a2 a3 b2 b3 (channels) */
	return _mm256_permute4x64_epi64(h, 0xd8);  /* a0 a1 a2 a3 b0 b1 b2 b3 */
}

// ---- the tile ----

/* Group g (4 channels x 4 k) of the k-quad at p, sign-extended to int16. */
INLINE __m256i wload(const int8_t *w, size_t ps, int g, int p)
{
	const int8_t *src = w + (size_t)(g / 4) * ps + (size_t)p * QG_NR + (g % 4) * 16;
	return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)src));
}

/* Four int16 activations x[p..p+3] in every 64-bit lane. */
INLINE __m256i xload(const uint8_t *a, int p)
{
	int64_t v;
	memcpy(&v, a + (size_t)p * 2, sizeof(v));
	return _mm256_set1_epi64x(v);
}

/* Group g of the k-quad at p from a half panel already widened by widen_half. */
INLINE __m256i wload16(const int16_t *wide, int g, int p)
{
	return _mm256_loadu_si256((const __m256i *)(const void *)(wide + (size_t)p * 8 + g * 16));
}

/* C(mr rows, ng groups of 4 channels) of the block at (row0, col0); ncols bounds the last
 * channels.  ng is even; the groups start at w (panel_stride ps apart every 4 groups), or,
 * when wide is not NULL (ng == 2), come sign-extended from it. */
INLINE void tile(const int mr, const int ng, int kp, const uint8_t *a, size_t lda,
		 const int8_t *w, const int16_t *wide, size_t ps, const qgemm_epi *ep, int row0,
		 int col0, int ncols)
{
	const qgemm_epi ev = *ep, *e = &ev;  /* a local copy: its fields stay in registers */
	__m256i acc[MR][NG1];
#pragma GCC unroll 8
	for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
		for (int g = 0; g < ng; g++)
			acc[r][g] = _mm256_setzero_si256();
#pragma GCC unroll 2
	for (int p = 0; p < kp; p += QG_KQ) {
		if (mr == 1) {
			__m256i x = xload(a, p);
#pragma GCC unroll 8
			for (int g = 0; g < ng; g++)
				acc[0][g] = _mm256_add_epi32(acc[0][g],
							     _mm256_madd_epi16(wload(w, ps, g, p), x));
			continue;
		}
		__m256i b[NG1];
#pragma GCC unroll 8
		for (int g = 0; g < ng; g++)
			b[g] = wide ? wload16(wide, g, p) : wload(w, ps, g, p);
#pragma GCC unroll 8
		for (int r = 0; r < mr; r++) {
			__m256i x = xload(a + (size_t)r * lda, p);
#pragma GCC unroll 8
			for (int g = 0; g < ng; g++)
				acc[r][g] = _mm256_add_epi32(acc[r][g], _mm256_madd_epi16(b[g], x));
		}
	}
#pragma GCC unroll 8
	for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
		for (int g = 0; g < ng; g += 2) {
			int col = col0 + g * 4, cnt = ncols - col;
			if (cnt > 0)
				epi_store(fold(acc[r][g], acc[r][g + 1]), e, row0 + r, col, cnt);
		}
}

static void tile_rows(int mr, int kp, const uint8_t *a, size_t lda, const int8_t *w,
		      const int16_t *wide, size_t ps, const qgemm_epi *e, int row0, int col0,
		      int ncols)
{
#define T(R) tile(R, NG, kp, a, lda, w, wide, ps, e, row0, col0, ncols)
	if (wide) {
		switch (mr) {
		case 6: T(6); return;
		case 5: T(5); return;
		case 4: T(4); return;
		case 3: T(3); return;
		case 2: T(2); return;
		default: T(1); return;
		}
	}
	/* the same with the constant NULL, so the narrow loads are the ones compiled in */
	wide = NULL;
	switch (mr) {
	case 6: T(6); return;
	case 5: T(5); return;
	case 4: T(4); return;
	case 3: T(3); return;
	case 2: T(2); return;
	default: T(1); return;
	}
#undef T
}

static void row1(int ng, int kp, const uint8_t *a, const int8_t *w, size_t ps,
		 const qgemm_epi *e, int col0, int ncols)
{
	switch (ng) {
	case 8: tile(1, 8, kp, a, 0, w, NULL, ps, e, 0, col0, ncols); return;
	case 6: tile(1, 6, kp, a, 0, w, NULL, ps, e, 0, col0, ncols); return;
	case 4: tile(1, 4, kp, a, 0, w, NULL, ps, e, 0, col0, ncols); return;
	default: tile(1, 2, kp, a, 0, w, NULL, ps, e, 0, col0, ncols); return;
	}
}

/* The half panel at w (8 channels: two groups per k-quad, 32 bytes) sign-extended once into
 * wide (kp * 8 int16), so the row tiles that reuse it load it without vpmovsxbw. */
static void widen_half(int kp, const int8_t *w, int16_t *wide)
{
	for (int p = 0; p < kp; p += QG_KQ) {
		const int8_t *src = w + (size_t)p * QG_NR;
		_mm256_storeu_si256((__m256i *)(void *)(wide + (size_t)p * 8),
				    _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)src)));
		_mm256_storeu_si256((__m256i *)(void *)(wide + (size_t)p * 8 + 16),
				    _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(src + 16))));
	}
}

// ---- the kernel set ----

static void gemm(int m, int ncols, int kp, const uint8_t *a, size_t lda, const int8_t *wp,
		 size_t ps, const qgemm_epi *e)
{
	int halves = (ncols + 7) / 8;  /* 8-channel halves of panels that hold any column */
	if (m == 1) {
		for (int h = 0; h < halves; h += NG1 / 2) {
			int nh = halves - h < NG1 / 2 ? halves - h : NG1 / 2;
			row1(2 * nh, kp, a, wp + (size_t)(h / 2) * ps, ps, e, h * 8, ncols);
		}
		return;
	}
	/* Column blocks of at most NC_BYTES of weights, so that they and the MC rows of
	 * activations stay in L2 together (a weight stream larger than L2 would evict them).
	 * Within a block each half panel is widened once and reused by the row tiles of MC
	 * rows (up to WIDE_K deep; deeper layers widen as they load). */
	int hb = (int)(NC_BYTES / ((size_t)kp * 8));
	hb = hb < 2 ? 2 : hb / 2 * 2;
	int16_t wide[WIDE_K * 8] __attribute__((aligned(64)));
	bool widen = kp <= WIDE_K && m > MR;
	for (int h0 = 0; h0 < halves; h0 += hb) {
		int h1 = halves - h0 < hb ? halves : h0 + hb;
		for (int i0 = 0; i0 < m; i0 += MC) {
			int i1 = m - i0 < MC ? m : i0 + MC;
			for (int h = h0; h < h1; h++) {
				const int8_t *w = wp + (size_t)(h / 2) * ps + (h % 2) * 32;
				if (widen)
					widen_half(kp, w, wide);
				for (int i = i0; i < i1; i += MR)
					tile_rows(i1 - i < MR ? i1 - i : MR, kp, a + (size_t)i * lda,
						  lda, w, widen ? wide : NULL, ps, e, i, h * 8,
						  ncols);
			}
		}
	}
}

/* s16 = rint(clamp(x * inv, -127, 127)), 16 at a time (the tail scalar, same rounding). */
static void quant(int m, int k, int kp, const float *x, ptrdiff_t ldx, float inv, uint8_t *dst,
		  size_t ldd)
{
	const __m256 vinv = _mm256_set1_ps(inv), lo = _mm256_set1_ps(-127.0f),
		     hi = _mm256_set1_ps(127.0f);
	for (int i = 0; i < m; i++) {
		const float *xr = x + (ptrdiff_t)i * ldx;
		int16_t *d = (int16_t *)(void *)(dst + (size_t)i * ldd);
		int p = 0;
		for (; p + 16 <= k; p += 16) {
			__m256 t0 = _mm256_mul_ps(_mm256_loadu_ps(xr + p), vinv);
			__m256 t1 = _mm256_mul_ps(_mm256_loadu_ps(xr + p + 8), vinv);
			__m256i q0 = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(t0, lo), hi));
			__m256i q1 = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(t1, lo), hi));
			/* packs works per 128-bit lane; the permute restores the element order */
			__m256i v = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xd8);
			_mm256_storeu_si256((__m256i *)(void *)(d + p), v);
		}
		for (; p < k; p++)
			d[p] = qg_quant(xr[p], inv);
		memset(d + k, 0, sizeof(int16_t) * (size_t)(kp - k));
	}
}

/* s16 = sign-extended q, 16 at a time. */
static void prep(int m, int k, int kp, const int8_t *xq, size_t ldx, uint8_t *dst, size_t ldd)
{
	for (int i = 0; i < m; i++) {
		const int8_t *src = xq + (size_t)i * ldx;
		int16_t *d = (int16_t *)(void *)(dst + (size_t)i * ldd);
		int p = 0;
		for (; p + 16 <= k; p += 16)
			_mm256_storeu_si256((__m256i *)(void *)(d + p),
					    _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(src + p))));
		for (; p < k; p++)
			d[p] = src[p];
		memset(d + k, 0, sizeof(int16_t) * (size_t)(kp - k));
	}
}

const qgemm_kernels tm_qgemm_avx2 = {
	.name = "avx2",
	.afmt = QG_A_S16,
	.abytes = 2,
	.mr = MR,
	.quant = quant,
	.prep = prep,
	.gemm = gemm,
};
