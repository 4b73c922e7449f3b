/* qgemm_avx512.c: the AVX-512 VNNI int8 kernel set (built with AVX-512 flags, called only when
 * ctx->isa is TM_ISA_AVX512 and the CPU has AVX512_VNNI).  Activations are stored as u8 =
 * q + 128 because vpdpbusd multiplies unsigned by signed bytes; each int32 lane sums four
 * u8 x s8 products without saturation, and the epilogue subtracts 128 * (row sum of the int8
 * weights), precomputed per layer, which leaves exactly the s8 x s8 sum.  The register tile is
 * 6 rows x 4 weight panels (64 output channels) in 24 zmm accumulators: per group of four k it
 * loads four panel vectors and broadcasts four activation bytes of each row.  One row (batch-1
 * latency) takes a tile of 8 panels, so eight independent chains hide the vpdpbusd latency.
 * The dequantizing epilogue (scale, bias, ReLU, optional requantization) is the same sequence of
 * IEEE operations as qg_dequant / qg_quant, in masked lanes for the last partial panel. */
#include "qgemm_int.h"

#include <immintrin.h>
#include <string.h>

#define MR 6     /* rows of the tile */
#define NV 4     /* panels of the tile */
#define NV1 8    /* panels of the one-row tile */
#define MC 96    /* rows of activations kept hot in L2 while the panels stream by */
#define NC_BYTES (256u << 10) /* weight bytes of one column block */
#define INLINE static inline __attribute__((always_inline))

// ---- epilogue ----

INLINE __mmask16 lane_mask(int cnt)
{
	return cnt >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << cnt) - 1);
}

/* Store 16 (or cnt) accumulators of one row at columns col.. of the block. */
INLINE void epi_store(__m512i acc, const qgemm_epi *e, int row, int col, int cnt)
{
	__mmask16 mk = lane_mask(cnt);
	ptrdiff_t at = (ptrdiff_t)row * e->ldc + col;
	if (e->corr)
		acc = _mm512_sub_epi32(acc, _mm512_maskz_loadu_epi32(mk, e->corr + col));
	if (e->kind == QGEMM_OUT_S32) {
		_mm512_mask_storeu_epi32((int32_t *)e->c + at, mk, acc);
		return;
	}
	__m512 s = _mm512_mul_ps(_mm512_set1_ps(e->x_scale), _mm512_maskz_loadu_ps(mk, e->scale + col));
	__m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), s);
	if (e->bias)
		v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, e->bias + col));
	if (e->relu)
		v = _mm512_max_ps(v, _mm512_setzero_ps());
	if (e->kind == QGEMM_OUT_F32) {
		_mm512_mask_storeu_ps((float *)e->c + at, mk, v);
		return;
	}
	__m512 t = _mm512_mul_ps(v, _mm512_set1_ps(e->out_inv));
	t = _mm512_max_ps(t, _mm512_set1_ps(-127.0f));
	t = _mm512_min_ps(t, _mm512_set1_ps(127.0f));
	_mm512_mask_cvtepi32_storeu_epi8((int8_t *)e->c + at, mk, _mm512_cvtps_epi32(t));
}

// ---- the tile ----

INLINE __m512i bcast4(const uint8_t *p)
{
	int32_t v;
	memcpy(&v, p, sizeof(v));
	return _mm512_set1_epi32(v);
}

/* C(mr rows, nv panels) of the block at (row0, col0); ncols bounds the last panel. */
INLINE void tile(const int mr, const int nv, int kp, const uint8_t *a, size_t lda,
		 const int8_t *w, size_t ps, const qgemm_epi *e, int row0, int col0, int ncols)
{
	__m512i acc[MR > NV1 ? MR : NV1][NV1];
#pragma GCC unroll 8
	for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
		for (int v = 0; v < nv; v++)
			acc[r][v] = _mm512_setzero_si512();
	for (int p = 0; p < kp; p += QG_KQ) {
		__m512i b[NV1];
#pragma GCC unroll 8
		for (int v = 0; v < nv; v++)
			b[v] = _mm512_loadu_si512(w + (size_t)v * ps + (size_t)p * QG_NR);
#pragma GCC unroll 8
		for (int r = 0; r < mr; r++) {
			__m512i x = bcast4(a + (size_t)r * lda + p);
#pragma GCC unroll 8
			for (int v = 0; v < nv; v++)
				acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], x, b[v]);
		}
	}
#pragma GCC unroll 8
	for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
		for (int v = 0; v < nv; v++) {
			int col = col0 + v * QG_NR, cnt = ncols - col;
			if (cnt > 0)
				epi_store(acc[r][v], e, row0 + r, col, cnt);
		}
}

static void tile_rows(int mr, int nv, int kp, const uint8_t *a, size_t lda, const int8_t *w,
		      size_t ps, const qgemm_epi *e, int row0, int col0, int ncols)
{
#define T(R, V) tile(R, V, kp, a, lda, w, ps, e, row0, col0, ncols)
	switch (nv) {
	case 4:
		switch (mr) {
		case 6: T(6, 4); return;
		case 5: T(5, 4); return;
		case 4: T(4, 4); return;
		case 3: T(3, 4); return;
		case 2: T(2, 4); return;
		default: T(1, 4); return;
		}
	case 3:
		switch (mr) {
		case 6: T(6, 3); return;
		case 5: T(5, 3); return;
		case 4: T(4, 3); return;
		case 3: T(3, 3); return;
		case 2: T(2, 3); return;
		default: T(1, 3); return;
		}
	case 2:
		switch (mr) {
		case 6: T(6, 2); return;
		case 5: T(5, 2); return;
		case 4: T(4, 2); return;
		case 3: T(3, 2); return;
		case 2: T(2, 2); return;
		default: T(1, 2); return;
		}
	default:
		switch (mr) {
		case 6: T(6, 1); return;
		case 5: T(5, 1); return;
		case 4: T(4, 1); return;
		case 3: T(3, 1); return;
		case 2: T(2, 1); return;
		default: T(1, 1); return;
		}
	}
#undef T
}

/* One row against up to NV1 panels at a time. */
static void row1(int nv, int kp, const uint8_t *a, const int8_t *w, size_t ps,
		 const qgemm_epi *e, int col0, int ncols)
{
	switch (nv) {
	case 8: tile(1, 8, kp, a, 0, w, ps, e, 0, col0, ncols); return;
	case 7: tile(1, 7, kp, a, 0, w, ps, e, 0, col0, ncols); return;
	case 6: tile(1, 6, kp, a, 0, w, ps, e, 0, col0, ncols); return;
	case 5: tile(1, 5, kp, a, 0, w, ps, e, 0, col0, ncols); return;
	default: tile_rows(1, nv, kp, a, 0, w, ps, e, 0, col0, ncols); return;
	}
}

// ---- the kernel set ----

static void gemm(int m, int ncols, int kp, const uint8_t *a, size_t lda, const int8_t *wp,
		 size_t ps, const qgemm_epi *e)
{
	int npan = (ncols + QG_NR - 1) / QG_NR;
	if (m == 1) {
		for (int pan = 0; pan < npan; pan += NV1) {
			int nv = npan - pan < NV1 ? npan - pan : NV1;
			row1(nv, kp, a, wp + (size_t)pan * ps, ps, e, pan * QG_NR, ncols);
		}
		return;
	}
	/* column blocks of at most NC_BYTES of weights, so that they and the MC rows of
	 * activations stay in L2 together (a weight stream larger than L2 would evict them) */
	int pb = (int)(NC_BYTES / ps);
	pb = pb < NV ? NV : pb / NV * NV;
	for (int p0 = 0; p0 < npan; p0 += pb) {
		int p1 = npan - p0 < pb ? npan : p0 + pb;
		for (int i0 = 0; i0 < m; i0 += MC) {
			int i1 = m - i0 < MC ? m : i0 + MC;
			for (int pan = p0; pan < p1; pan += NV) {
				int nv = p1 - pan < NV ? p1 - pan : NV;
				for (int i = i0; i < i1; i += MR)
					tile_rows(i1 - i < MR ? i1 - i : MR, nv, kp,
						  a + (size_t)i * lda, lda, wp + (size_t)pan * ps, ps,
						  e, i, pan * QG_NR, ncols);
			}
		}
	}
}

/* u8 = rint(clamp(x * inv, -127, 127)) + 128, sixteen at a time, the tail in masked lanes. */
static void quant(int m, int k, int kp, const float *x, ptrdiff_t ldx, float inv, uint8_t *dst,
		  size_t ldd)
{
	const __m512 vinv = _mm512_set1_ps(inv), lo = _mm512_set1_ps(-127.0f),
		     hi = _mm512_set1_ps(127.0f);
	const __m512i zp = _mm512_set1_epi32(128);
	for (int i = 0; i < m; i++) {
		const float *xr = x + (ptrdiff_t)i * ldx;
		uint8_t *d = dst + (size_t)i * ldd;
		for (int p = 0; p < k; p += 16) {
			__mmask16 mk = lane_mask(k - p);
			__m512 t = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, xr + p), vinv);
			t = _mm512_min_ps(_mm512_max_ps(t, lo), hi);
			__m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(t), zp);
			_mm512_mask_cvtepi32_storeu_epi8(d + p, mk, q);
		}
		memset(d + k, 128, (size_t)(kp - k));
	}
}

/* u8 = q + 128 (the sign bit flipped), 64 at a time. */
static void prep(int m, int k, int kp, const int8_t *xq, size_t ldx, uint8_t *dst, size_t ldd)
{
	const __m512i flip = _mm512_set1_epi8((char)0x80);
	for (int i = 0; i < m; i++) {
		const int8_t *src = xq + (size_t)i * ldx;
		uint8_t *d = dst + (size_t)i * ldd;
		for (int p = 0; p < k; p += 64) {
			__mmask64 mk = k - p >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (k - p)) - 1);
			__m512i v = _mm512_maskz_loadu_epi8(mk, src + p);
			_mm512_mask_storeu_epi8(d + p, mk, _mm512_xor_si512(v, flip));
		}
		memset(d + k, 128, (size_t)(kp - k));
	}
}

const qgemm_kernels tm_qgemm_avx512 = {
	.name = "avx512vnni",
	.afmt = QG_A_U8,
	.abytes = 1,
	.mr = MR,
	.quant = quant,
	.prep = prep,
	.gemm = gemm,
};
