/* gemm_int.h: what gemm.c (the blocking driver, the thread split and the dispatcher) shares
 * with the SIMD kernel files gemm_avx2.c and gemm_avx512.c.  A kernel set is one table row:
 * its register tile, its cache blocks and the routines the driver calls (a broadcast
 * micro-kernel on B panels, the packing routines, a dot-product kernel for X * W^T with few
 * rows or columns, and matrix-vector kernels for a single row of X).  Everything the SIMD
 * files export goes through this table, so the driver never calls SIMD code itself. */
#ifndef TM_GEMM_INT_H
#define TM_GEMM_INT_H

#include "engine.h"

#include <stddef.h>

// ---- epilogue ----

/* How a tile of results is written: C = act(alpha * acc + beta * C + bias).  beta == 0 means C
 * is not read at all (it may hold NaN garbage).  bias points at the tile's first column (or is
 * NULL); act and bias are applied only once, after the last block of k. */
typedef struct gemm_epi {
	float alpha;
	float beta;
	const float *bias;  /* (tile columns) or NULL */
	tm_act act;
} gemm_epi;

// ---- kernel sets ----

/* Operands are described by strides: element (i, p) of an m x k operand is x[i*rs + p*cs], so
 * one routine covers both transposes.  Packed layouts:
 *   A panel: MR rows, element (i, p) at [p * MR + i], rows past the edge are zero;
 *   B panel: NR columns, element (p, j) at [p * NR + j], columns past the edge are zero.
 * A packed B block of nc columns is ceil(nc / NR) panels, each kc * NR floats apart; prepacked
 * weights are panels of the full k (k * NR floats apart). */
typedef struct gemm_kernels {
	int mr, nr;     /* register tile: rows (broadcast) x columns (vector lanes) */
	int kc, mc, nc; /* cache blocks: depth, rows and columns of one packed block */

	/* C(mr, nr) = epi(A-panel(mr, kc) * B-panel(kc, nr)) for mr <= MR, nr <= NR.  A is read
	 * through (rs_a, cs_a): (1, MR) for a packed panel, (row stride, 1) for rows in place.
	 * Row p of B is at b + p * ldb: NR for a packed panel, or B's own row stride when its
	 * rows are read in place (only the nr live columns are loaded). */
	void (*tile)(int mr, int nr, int kc, const float *a, ptrdiff_t rs_a, ptrdiff_t cs_a,
		     const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc, const gemm_epi *e);
	/* Pack op(B)(kc, nc), element (p, j) at b[p*rs + j*cs], into ceil(nc/NR) panels of
	 * kc * NR floats each, starting panel_stride floats apart. */
	void (*pack_b)(int kc, int nc, const float *b, ptrdiff_t rs, ptrdiff_t cs, float *dst,
		       size_t panel_stride);
	/* Pack op(A)(mc, kc), element (i, p) at a[i*rs + p*cs], into ceil(mc/MR) panels of
	 * kc * MR floats each. */
	void (*pack_a)(int mc, int kc, const float *a, ptrdiff_t rs, ptrdiff_t cs, float *dst);
	/* C(m, n) = epi(X(m, k) * W(n, k)^T) with both operands read in place along k; the
	 * result of an element depends only on its row of X and row of W, not on m, n or the
	 * position in the tile. */
	void (*dot)(int m, int n, int k, const float *x, ptrdiff_t ldx, const float *w,
		    ptrdiff_t ldw, float *c, ptrdiff_t ldc, const gemm_epi *e);
	/* The same product for n <= 16 and k <= narrow_kmax with columns and steps of k sharing
	 * the vector lanes (W laid out per call); NULL when the set has none.  An element's
	 * result depends on its row of X, its row of W, k and n, not on m or its row's place. */
	void (*narrow)(int m, int n, int k, const float *x, ptrdiff_t ldx, const float *w,
		       ptrdiff_t ldw, float *c, ptrdiff_t ldc, const gemm_epi *e);
	int narrow_kmax;
	/* y(1, n) = epi(x(1, k) * W(n, k)^T), W's rows streamed in order. */
	void (*gemv_rows)(int n, int k, const float *x, const float *w, ptrdiff_t ldw, float *y,
			  const gemm_epi *e);
	/* y(1, n) = epi(x(1, k) * B(k, n)), B in NR-column panels pstride floats apart, rows of
	 * a panel rstride apart: prepacked full-k panels (k * NR, NR), or B's own rows read in
	 * place (NR, ldb; only the n live columns are loaded). */
	void (*gemv_panels)(int n, int k, const float *x, const float *b, size_t pstride,
			    ptrdiff_t rstride, float *y, const gemm_epi *e);
	/* C(m, n) = epi(A(m, k) * B(k, n)) for 1 <= k <= smallk_kmax, A's and B's rows read in
	 * place (rows lda and ldb apart): B's rows of a column strip stay in registers while
	 * A's rows go by.  Each element is the tile's FMA sequence (the same bits as the
	 * blocked path).  NULL when the set has none. */
	void (*smallk)(int m, int n, int k, const float *a, ptrdiff_t lda, const float *b,
		       ptrdiff_t ldb, float *c, ptrdiff_t ldc, const gemm_epi *e);
	int smallk_kmax;
} gemm_kernels;

/* The short-k kernels hold B's k rows of a column strip in registers (AVX-512: 2k zmm for
 * 32 columns; AVX2: k ymm for 8), so k is a compile-time constant: CASE(K) is instantiated for
 * every K up to the bound, the largest taking the default. */
#define GEMM_SMALLK_KMAX 12
#define GEMM_SMALLK_SWITCH(k, CASE)                                                      \
	switch (k) {                                                                     \
	CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6)                                  \
	CASE(7) CASE(8) CASE(9) CASE(10) CASE(11)                                        \
	default:                                                                         \
		CASE(12)                                                                 \
	}

extern const gemm_kernels tm_gemm_avx2;    /* gemm_avx2.c, needs AVX2 + FMA */
extern const gemm_kernels tm_gemm_avx512;  /* gemm_avx512.c, needs AVX-512 F/BW/VL */

/* The FP32 peak in GFLOP/s of one core for one ISA: independent FMA chains held in registers,
 * run for about `seconds` (tm_prof_peak_gflops picks the variant the CPU supports). */
double gemm_peak_avx2(double seconds);    /* gemm_avx2.c */
double gemm_peak_avx512(double seconds);  /* gemm_avx512.c */

// ---- prepacked weights ----

/* How tm_linear_pack stored W. */
typedef enum gemm_layout {
	GEMM_LAYOUT_ROWS = 0,    /* a copy of W (n, k): dot-product kernel (small n), portable */
	GEMM_LAYOUT_PANELS = 1,  /* ceil(n / nr) panels of k * nr floats, zero padded */
} gemm_layout;

struct tm_packed_w {
	int n, k;              /* W is (n, k), PyTorch's (out, in) */
	tm_isa isa;            /* kernel set the layout was made for */
	gemm_layout layout;
	int nr;                /* panel width (PANELS) */
	float *data;           /* (n, k) for ROWS, (ceil(n/nr), k, nr) for PANELS; aligned */
};

#endif
