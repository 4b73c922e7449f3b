/* sparse_int.h: what sparse.c (pruning, the storage formats, the portable kernels, the thread
 * split and the dispatcher) shares with the SIMD kernel files sparse_avx512.c and
 * sparse_avx2.c.  It defines the stored sparse matrix (struct tm_sparse_w) and the kernel
 * table a SIMD file exports; the driver calls SIMD code only through that table.  The formats
 * are described in docs/sparsity.md: CSR over output rows, and the windowed formats WIN16 and
 * WIN8, sliced layouts of 16 (8) output rows per group whose entries are read in "slots" of
 * 16 (8) lanes that all take their input from one 32 (8) column window of x, so register
 * permutes replace a gather.  Every format holds float values, or int8 values with one float
 * scale per output row ("q8"). */
#ifndef TM_SPARSE_INT_H
#define TM_SPARSE_INT_H

#include "engine.h"

#include <stddef.h>
#include <stdint.h>

// ---- the stored matrix ----

#define SPARSE_MAX_LANES 16  /* lanes of the widest windowed format */

struct tm_sparse_w {
	int n, k;                  /* W is (n, k), PyTorch's (out, in) */
	int64_t nnz;               /* stored nonzero weights */
	tm_sparse_format format;   /* TM_SPARSE_CSR, TM_SPARSE_WIN16 or TM_SPARSE_WIN8 */
	void *block;               /* the one allocation holding every array below */
	size_t bytes;              /* its size: what the matrix costs in memory */

	bool q8;                   /* values are int8 with one scale per row (tm_sparse_new_q8) */
	float *scale;              /* q8: CSR (n) per row; windowed (groups, lanes) per lane, 0 in
				    * padding lanes */

	/* CSR (format CSR) */
	float *val;                /* (nnz) values, row by row (NULL for q8) */
	int8_t *val8;              /* q8: (nnz) quantized values, row by row */
	int32_t *row_ptr;          /* (n + 1) start of each row in val / col */
	uint16_t *col16;           /* (nnz) column of each value when k <= 65536, else NULL */
	int32_t *col32;            /* (nnz) column of each value when k > 65536, else NULL */

	/* windowed formats: WIN16 (16 lanes, step 16, span 32), WIN8 (8 lanes, step 2, span 8) */
	int lanes;                 /* output rows per group: lane l of group g is row lanes g + l */
	int step;                  /* window w covers columns [step w, step w + span): span is 32
				    * for WIN16 (two registers of x), 8 for WIN8 (one register) */
	int groups;                /* ceil(n / lanes) */
	int nwin;                  /* windows per group: ceil(k / step) */
	int64_t slots;             /* slots over all groups */
	float *slot_val;           /* (slots, lanes) value of each lane, 0 in padding (NULL for q8) */
	int8_t *slot_val8;         /* q8: (slots, lanes) quantized value of each lane, 0 in padding */
	uint8_t *slot_idx;         /* (slots, lanes) column - step w of each lane, in [0, span) */
	int32_t *group_slot;       /* (groups + 1) first slot of each group */
	int64_t windows;           /* windows with at least one slot, over all groups */
	int32_t *group_win;        /* (groups + 1) first window entry of each group */
	int32_t *win_idx;          /* (windows) window number w of each entry, ascending per group */
	uint8_t *win_cnt;          /* (windows) its slots, 1 .. lanes */
	uint16_t *slot_win;        /* WIN8 only (else NULL): (slots) window number w of each slot,
				    * so the AVX2 kernel runs one loop over slots (k <= WIN8_MAX_K) */
};

#define WIN8_STEP 2
#define WIN8_MAX_K (65536 * WIN8_STEP)  /* WIN8's window numbers fit in uint16 */

// ---- kernel sets ----

/* The rows of groups [g0, g1) of a windowed matrix for m samples:
 * Y(i, r) = act(sum_j W(r, j) X(i, j) + bias(r)) where act is ReLU when relu, else none (GELU
 * is applied by the driver afterwards); bias may be NULL.  x is (m, k), y is (m, n).  Sample
 * i's results do not depend on m or on the range. */
typedef void (*sparse_win_fn)(const struct tm_sparse_w *s, int g0, int g1, int m,
			      const float *x, const float *bias, bool relu, float *y);

/* A kernel set: the windowed format it runs and its kernel. */
typedef struct sparse_kernels {
	tm_sparse_format format;
	sparse_win_fn win;
} sparse_kernels;

extern const sparse_kernels tm_sparse_avx512;  /* sparse_avx512.c: WIN16, needs AVX-512 F/BW/VL */
extern const sparse_kernels tm_sparse_avx2;    /* sparse_avx2.c: WIN8, needs AVX2 + FMA */

#endif
