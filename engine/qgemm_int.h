/* qgemm_int.h: what qgemm.c (quantization, the quantized layers, the portable reference, the
 * dispatcher and the thread split) shares with the SIMD kernel files qgemm_avx2.c and
 * qgemm_avx512.c.  Weights live in one packed layout that every kernel set reads: panels of
 * QG_NR output channels, k padded to a multiple of 4, four consecutive k of one channel in
 * four consecutive bytes (the operand shape of vpdpbusd; vpmovsxbw widens four channels).  A
 * kernel set is one table row: how it wants the activations (s8, u8 = s8 + 128 corrected by
 * 128 * the weight row sums, or s16), its row tile, the activation quantizer and converter, and
 * the GEMM routine with the dequantizing epilogue fused into its stores.  docs/int8.md describes the scheme. */
#ifndef TM_QGEMM_INT_H
#define TM_QGEMM_INT_H

#include "engine.h"

#include <stddef.h>
#include <stdint.h>

#define QG_NR 16   /* output channels per weight panel */
#define QG_KQ 4    /* k values per group (one int32 lane) */
#define QG_KMAX 65536 /* k bound: 255 * 127 * k must fit an int32 accumulator */

/* Packed weights of an (n, k) matrix: ceil(n / QG_NR) panels of kp * QG_NR bytes, kp = k
 * rounded up to QG_KQ; element (j, p) of W at
 *   panel[j / QG_NR] + (p / QG_KQ) * (QG_NR * QG_KQ) + (j % QG_NR) * QG_KQ + p % QG_KQ,
 * zero past the edges, so padding adds nothing to any accumulator. */
static inline size_t qg_packed_index(int j, int p, int kp)
{
	return (size_t)(j / QG_NR) * kp * QG_NR + (size_t)(p / QG_KQ) * (QG_NR * QG_KQ) +
	       (size_t)(j % QG_NR) * QG_KQ + (size_t)(p % QG_KQ);
}

// ---- epilogue ----

typedef enum qgemm_out {
	QGEMM_OUT_S32 = 0,  /* the exact int32 sum of s8 x s8 products */
	QGEMM_OUT_F32 = 1,  /* act((float)acc * scale[j] + bias[j]) */
	QGEMM_OUT_S8 = 2,   /* the F32 value requantized: rint(clamp(v * out_inv, -127, 127)) */
} qgemm_out;

/* How a block of accumulators is written.  Every pointer is already offset to the block's first
 * column (and c to its first row).  The float steps are the same in every kernel set
 * (x_scale * w_scale, times the converted sum, plus the bias, max with 0; no fused multiply-add)
 * so all sets produce the same bits. */
typedef struct qgemm_epi {
	qgemm_out kind;
	void *c;               /* int32_t, float or int8_t, by kind */
	ptrdiff_t ldc;         /* elements between rows of c */
	const int32_t *corr;   /* (cols) subtracted from u8 accumulators: 128 * row sums of W */
	float x_scale;         /* activation scale (F32, S8) */
	const float *scale;    /* (cols) w_scale[j]; the epilogue uses x_scale * scale[j] */
	const float *bias;     /* (cols) or NULL */
	bool relu;
	float out_inv;         /* S8: 1 / the output scale */
} qgemm_epi;

/* The scalar epilogue, the definition every SIMD epilogue reproduces lane by lane. */
static inline float qg_dequant(int32_t acc, float x_scale, float w_scale, const float *bias,
			       int j, bool relu)
{
	float v = (float)acc * (x_scale * w_scale);
	if (bias)
		v = v + bias[j];
	if (relu)
		v = v > 0.0f ? v : 0.0f;
	return v;
}

/* Symmetric int8 rounding of v * inv: clamp first (NaN goes to -127, like max_ps), then round
 * half to even (the default rounding mode, as cvtps2dq). */
static inline int8_t qg_quant(float v, float inv)
{
	float t = v * inv;
	t = t > -127.0f ? t : -127.0f;
	t = t < 127.0f ? t : 127.0f;
	return (int8_t)__builtin_rintf(t);
}

// ---- kernel sets ----

/* Activation formats: s8 (q), u8 (q + 128, corrected with corr) or s16 (q sign-extended). */
typedef enum qgemm_afmt { QG_A_S8 = 0, QG_A_U8 = 1, QG_A_S16 = 2 } qgemm_afmt;

typedef struct qgemm_kernels {
	const char *name;   /* "portable", "avx2", "avx512vnni" */
	qgemm_afmt afmt;    /* how the activations are stored for gemm */
	int abytes;         /* bytes per stored activation */
	int mr;             /* rows of the register tile (granularity of the row split) */
	/* dst(m, ldd bytes) = quantized x(m, k) (row stride ldx floats): q = qg_quant(x, inv)
	 * in the set's format; columns k..kp-1 are filled with the format's zero. */
	void (*quant)(int m, int k, int kp, const float *x, ptrdiff_t ldx, float inv, uint8_t *dst,
		      size_t ldd);
	/* The same from int8 activations xq(m, k) (row stride ldx bytes). */
	void (*prep)(int m, int k, int kp, const int8_t *xq, size_t ldx, uint8_t *dst, size_t ldd);
	/* C(m, ncols) = epi(A(m, kp) * W^T) for the panels starting at wp (panel_stride bytes
	 * apart, ceil(ncols / QG_NR) of them); A rows are lda bytes apart, kp % 4 == 0. */
	void (*gemm)(int m, int ncols, int kp, const uint8_t *a, size_t lda, const int8_t *wp,
		     size_t panel_stride, const qgemm_epi *e);
} qgemm_kernels;

extern const qgemm_kernels tm_qgemm_avx2;     /* qgemm_avx2.c: AVX2, vpmaddwd on s16 */
extern const qgemm_kernels tm_qgemm_avx512;   /* qgemm_avx512.c: AVX-512 BW + VNNI */

// ---- the quantized linear layer ----

struct tm_qlinear {
	int n, k;              /* W is (n, k), PyTorch's (out, in) */
	int kp;                /* k rounded up to QG_KQ */
	int panels;            /* ceil(n / QG_NR) */
	tm_qgran gran;
	float x_scale;         /* activation scale the layer was calibrated with */
	int8_t *wp;            /* (panels, kp, QG_NR) packed, see qg_packed_index */
	float *w_scale;        /* (n) per channel (per tensor: all equal) */
	int32_t *corr;         /* (n) 128 * sum_p q(j, p) */
	float *bias;           /* (n) or NULL */
	void *block;           /* the one allocation wp, w_scale, corr and bias are carved from */
	size_t bytes;          /* its size */
};

#endif
