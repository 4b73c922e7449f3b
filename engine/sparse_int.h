/* sparse_int.h: what sparse.c (pruning, the storage formats, the portable kernels, the thread
 * split and the dispatcher) shares with the SIMD kernel file sparse_avx512.c.  It defines the
 * stored sparse matrix (struct tm_sparse_w) in its two formats and the kernel table a SIMD
 * file exports; the driver calls SIMD code only through that table.  The formats are
 * described in docs/sparsity.md: CSR over output rows, and WIN16, a sliced layout of 16 output
 * rows per group whose entries are read in "slots" of 16 lanes that all take their input from
 * one 32-column window of x, so a permute of two registers replaces a gather.  Either format
 * holds float values, or int8 values with one float scale per output row ("q8"). */
#ifndef TM_SPARSE_INT_H
#define TM_SPARSE_INT_H

#include "engine.h"

#include <stddef.h>
#include <stdint.h>

// ---- the stored matrix ----

#define SPARSE_LANES 16   /* WIN16: output rows per group (one AVX-512 register) */
#define SPARSE_STEP 16    /* WIN16: window w covers columns [16 w, 16 w + 32) */
#define SPARSE_WIDTH 32

struct tm_sparse_w {
	int n, k;                  /* W is (n, k), PyTorch's (out, in) */
	int64_t nnz;               /* stored nonzero weights */
	tm_sparse_format format;   /* TM_SPARSE_CSR or TM_SPARSE_WIN16 */
	void *block;               /* the one allocation holding every array below */
	size_t bytes;              /* its size: what the matrix costs in memory */

	bool q8;                   /* values are int8 with one scale per row (tm_sparse_new_q8) */
	float *scale;              /* q8: CSR (n) per row; WIN16 (groups, 16) per lane, 0 in padding */

	/* CSR (format CSR) */
	float *val;                /* (nnz) values, row by row (NULL for q8) */
	int8_t *val8;              /* q8: (nnz) quantized values, row by row */
	int32_t *row_ptr;          /* (n + 1) start of each row in val / col */
	uint16_t *col16;           /* (nnz) column of each value when k <= 65536, else NULL */
	int32_t *col32;            /* (nnz) column of each value when k > 65536, else NULL */

	/* WIN16 (format WIN16) */
	int groups;                /* ceil(n / 16) */
	int nwin;                  /* windows per group: ceil(k / 16) */
	int64_t slots;             /* slots over all groups */
	float *slot_val;           /* (slots, 16) value of lane l, 0 in padding lanes (NULL for q8) */
	int8_t *slot_val8;         /* q8: (slots, 16) quantized value of lane l, 0 in padding */
	uint8_t *slot_idx;         /* (slots, 16) column - 16 w of lane l, in [0, 32) */
	int32_t *group_slot;       /* (groups + 1) first slot of each group */
	uint8_t *win_slots;        /* (groups, nwin) slots of each window, at most 16 */
};

// ---- kernel sets ----

/* y rows [16 g0, min(n, 16 g1)) of m samples: Y(i, r) = act(sum_j W(r, j) X(i, j) + bias(r))
 * where act is ReLU when relu, else none (GELU is applied by the driver afterwards); bias may
 * be NULL.  x is (m, k), y is (m, n).  Sample i's results do not depend on m or on the range. */
typedef void (*sparse_win16_fn)(const struct tm_sparse_w *s, int g0, int g1, int m,
				const float *x, const float *bias, bool relu, float *y);

typedef struct sparse_kernels {
	sparse_win16_fn win16;
} sparse_kernels;

extern const sparse_kernels tm_sparse_avx512;  /* sparse_avx512.c, needs AVX-512 F/BW/VL */

#endif
