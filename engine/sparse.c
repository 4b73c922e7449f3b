/* sparse.c: unstructured magnitude pruning and the sparse linear layer.  Pruning finds the
 * exact |w| threshold of the requested count with a radix select over the magnitudes' bit
 * patterns (four histogram passes, no sorting, no copy) and breaks ties by position, so it is
 * exact and deterministic.  A pruned matrix is stored in one of three formats (sparse_int.h,
 * docs/sparsity.md): CSR, read by the portable kernels, and the windowed WIN16 and WIN8, whose
 * output rows are grouped 16 (8) to a register and read in slots through windows of x, which
 * the AVX-512 (AVX2) kernels of sparse_avx512.c (sparse_avx2.c) run with register permutes
 * instead of gathers.  This file holds the builders, the portable reference kernels, the
 * thread split (fixed ranges of output rows, so every output is summed in the same order
 * whatever the thread count) and the dense fallback rule. */
#include "sparse_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- pruning ----

/* |v| as an integer that orders like the value (the bits of a non-negative float do). */
static inline uint32_t mag_bits(float v)
{
	uint32_t b;
	memcpy(&b, &v, sizeof(b));
	return b & 0x7fffffffu;
}

#define MAG_INF 0x7f800000u  /* magnitudes at or above this are inf or NaN */

size_t tm_prune_count(size_t total, double sparsity)
{
	if (!(sparsity > 0.0))
		return 0;
	if (sparsity >= 1.0)
		return total;
	double c = floor(sparsity * (double)total + 0.5);
	return c >= (double)total ? total : (size_t)c;
}

static int prune_check(const tm_prune_tensor *t, int n, double sparsity, size_t *total,
		       tm_err *err)
{
	if (!(sparsity >= 0.0 && sparsity <= 1.0))
		return tm_err_set(err, TM_EINVAL, "sparsity",
				  "prune: sparsity %g must be in [0, 1]", sparsity);
	*total = 0;
	for (int i = 0; i < n; i++) {
		if (t[i].len && !t[i].w)
			return tm_err_set(err, TM_EINVAL, "prune",
					  "prune: tensor %d has %zu weights but no data", i,
					  t[i].len);
		for (size_t j = 0; j < t[i].len; j++)
			if (mag_bits(t[i].w[j]) >= MAG_INF)
				return tm_err_set(err, TM_EINVAL, "prune",
						  "prune: weight %zu of tensor %d is not finite",
						  j, i);
		*total += t[i].len;
	}
	return 0;
}

/* The magnitude (as bits) of the element of 0-based rank r in increasing |w| order, and the
 * number of elements strictly below it: one 8-bit digit per pass, most significant first,
 * counting only the elements that share the digits found so far. */
static uint32_t prune_select(const tm_prune_tensor *t, int n, size_t r, size_t *n_below)
{
	uint32_t prefix = 0;
	size_t below = 0;
	for (int shift = 24; shift >= 0; shift -= 8) {
		size_t hist[256] = { 0 };
		uint32_t hi = shift == 24 ? 0 : ~0u << (shift + 8);
		for (int i = 0; i < n; i++)
			for (size_t j = 0; j < t[i].len; j++) {
				uint32_t b = mag_bits(t[i].w[j]);
				if ((b & hi) == prefix)
					hist[(b >> shift) & 255]++;
			}
		uint32_t d = 0;
		while (below + hist[d] <= r)
			below += hist[d++];
		prefix |= d << shift;
	}
	*n_below = below;
	return prefix;
}

int tm_prune_magnitude_global(tm_prune_tensor *t, int n, double sparsity, tm_prune_result *res,
			      tm_err *err)
{
	if (n < 0 || (n > 0 && !t))
		return tm_err_set(err, TM_EINVAL, "prune", "prune: %d tensors given", n);
	size_t total = 0;
	int rc = prune_check(t, n, sparsity, &total, err);
	if (rc)
		return rc;
	size_t count = tm_prune_count(total, sparsity);
	uint32_t thr = 0;
	size_t below = 0;
	if (count > 0)
		thr = prune_select(t, n, count - 1, &below);
	size_t ties = count - below;  /* elements equal to the threshold still to prune */
	for (int i = 0; i < n; i++) {
		t[i].pruned = 0;
		for (size_t j = 0; j < t[i].len; j++) {
			uint32_t b = mag_bits(t[i].w[j]);
			bool cut = false;
			if (count > 0 && b < thr)
				cut = true;
			else if (count > 0 && b == thr && ties > 0) {
				cut = true;
				ties--;
			}
			if (cut) {
				t[i].w[j] = 0.0f;
				t[i].pruned++;
			}
			if (t[i].mask)
				t[i].mask[j] = !cut;
		}
	}
	if (res) {
		res->total = total;
		res->pruned = count;
		memcpy(&res->threshold, &thr, sizeof(float));
	}
	return 0;
}

int tm_prune_magnitude(float *w, size_t len, double sparsity, uint8_t *mask,
		       tm_prune_result *res, tm_err *err)
{
	tm_prune_tensor t = { .w = w, .len = len, .mask = mask };
	return tm_prune_magnitude_global(&t, 1, sparsity, res, err);
}

size_t tm_prune_mask_from(const float *w, size_t len, uint8_t *mask)
{
	size_t kept = 0;
	for (size_t i = 0; i < len; i++) {
		mask[i] = w[i] != 0.0f;
		kept += mask[i];
	}
	return kept;
}

void tm_prune_mask_apply(const uint8_t *mask, size_t len, float *w, float *grad)
{
	for (size_t i = 0; i < len; i++)
		if (!mask[i]) {
			if (w)
				w[i] = 0.0f;
			if (grad)
				grad[i] = 0.0f;
		}
}

double tm_sparsity(const float *w, size_t len)
{
	if (!len)
		return 0.0;
	size_t zeros = 0;
	for (size_t i = 0; i < len; i++)
		zeros += w[i] == 0.0f;
	return (double)zeros / (double)len;
}

// ---- storage ----

const char *tm_sparse_format_name(tm_sparse_format f)
{
	switch (f) {
	case TM_SPARSE_AUTO: return "auto";
	case TM_SPARSE_CSR: return "csr";
	case TM_SPARSE_WIN16: return "win16";
	case TM_SPARSE_WIN8: return "win8";
	}
	return "unknown";
}

#define CSR_IDX16_MAX_K 65536  /* columns 0..65535 fit in uint16 */

static inline int32_t csr_col(const tm_sparse_w *s, int64_t p)
{
	return s->col16 ? s->col16[p] : s->col32[p];
}

static bool windowed(tm_sparse_format f)
{
	return f == TM_SPARSE_WIN16 || f == TM_SPARSE_WIN8;
}

/* Lanes per group. */
static int window_lanes(tm_sparse_format f)
{
	return f == TM_SPARSE_WIN16 ? 16 : 8;
}

/* Columns from one window to the next: WIN16 16, WIN8 2. */
static int window_step(tm_sparse_format f)
{
	return f == TM_SPARSE_WIN16 ? 16 : WIN8_STEP;
}

/* Columns a window covers: WIN16 32 (two registers of x), WIN8 8 (one register). */
static int window_span(tm_sparse_format f)
{
	return f == TM_SPARSE_WIN16 ? 32 : 8;
}

/* One 64-byte aligned block of the layer's values and indices (tm_alloc_hot). */
static void *block_alloc(size_t bytes)
{
	return tm_alloc_hot(bytes ? bytes : 1);
}

static tm_sparse_w *sparse_alloc(int n, int k, tm_sparse_format format)
{
	tm_sparse_w *s = tm_xcalloc(1, sizeof(*s));
	s->n = n;
	s->k = k;
	s->format = format;
	return s;
}

void tm_sparse_free(tm_sparse_w *s)
{
	if (!s)
		return;
	tm_free_aligned(s->block);
	free(s);
}

/* CSR from dense W (w) or from its int8 quantization (q with one scale per row; q != NULL).
 * Float: values (64-byte aligned), row_ptr, columns.  Int8: scales (aligned), row_ptr,
 * columns, values. */
static int csr_build(int n, int k, const float *w, const int8_t *q, const float *scale,
		     tm_sparse_w **out, tm_err *err)
{
	size_t total = (size_t)n * k;
	int64_t nnz = 0;
	for (size_t i = 0; i < total; i++)
		nnz += q ? q[i] != 0 : w[i] != 0.0f;
	size_t isz = k <= CSR_IDX16_MAX_K ? sizeof(uint16_t) : sizeof(int32_t);
	size_t vsz = q ? sizeof(int8_t) : sizeof(float);
	size_t sbytes = q ? (size_t)n * sizeof(float) : 0;
	size_t bytes = sbytes + (size_t)nnz * vsz + ((size_t)n + 1) * sizeof(int32_t) +
		       (size_t)nnz * isz;
	tm_sparse_w *s = sparse_alloc(n, k, TM_SPARSE_CSR);
	s->block = block_alloc(bytes);
	if (!s->block) {
		free(s);
		return tm_err_set(err, TM_ENOMEM, "sparse",
				  "sparse: cannot allocate %zu bytes for a (%d, %d) csr matrix",
				  bytes, n, k);
	}
	s->bytes = bytes;
	s->nnz = nnz;
	s->q8 = q != NULL;
	uint8_t *b = s->block;
	if (q) {
		s->scale = (float *)b;
		memcpy(s->scale, scale, sbytes);
		b += sbytes;
	} else {
		s->val = (float *)b;
		b += (size_t)nnz * sizeof(float);
	}
	s->row_ptr = (int32_t *)b;
	b += ((size_t)n + 1) * sizeof(int32_t);
	if (isz == sizeof(uint16_t))
		s->col16 = (uint16_t *)b;
	else
		s->col32 = (int32_t *)b;
	b += (size_t)nnz * isz;
	if (q)
		s->val8 = (int8_t *)b;
	int64_t p = 0;
	for (int r = 0; r < n; r++) {
		s->row_ptr[r] = (int32_t)p;
		for (int j = 0; j < k; j++) {
			size_t at = (size_t)r * k + j;
			if (q ? q[at] == 0 : w[at] == 0.0f)
				continue;
			if (q)
				s->val8[p] = q[at];
			else
				s->val[p] = w[at];
			if (s->col16)
				s->col16[p] = (uint16_t)j;
			else
				s->col32[p] = j;
			p++;
		}
	}
	s->row_ptr[n] = (int32_t)p;
	*out = s;
	return 0;
}

/* Walk the windowed schedule of csr c with L lanes and windows of the given step and span.
 * Group g holds rows L g .. L g + L - 1 (lane l = row L g + l), each lane's entries in column
 * order.  Window w covers columns [step w, step w + span); it gets as many slots as the lane
 * with the most entries left below step w + step needs, so no entry is left behind when the
 * window moves on, and in each slot every lane takes its next entry if that lies inside the
 * window (an entry further on is taken early when the lane has a free slot).  Lanes without
 * an entry are padding (value 0, offset 0).  Only windows with slots are stored (window number
 * and count; for WIN8 also each slot's window).  With out == NULL only counts; returns the
 * number of slots and sets *windows. */
static int64_t win_schedule(const tm_sparse_w *c, int L, int step, int span, tm_sparse_w *out,
			    int64_t *windows)
{
	int n = c->n, k = c->k;
	int groups = (n + L - 1) / L, nwin = (k + step - 1) / step;
	int64_t slot = 0, nw = 0;
	for (int g = 0; g < groups; g++) {
		int64_t head[SPARSE_MAX_LANES], end[SPARSE_MAX_LANES];
		for (int l = 0; l < L; l++) {
			int r = g * L + l;
			head[l] = r < n ? c->row_ptr[r] : 0;
			end[l] = r < n ? c->row_ptr[r + 1] : 0;
		}
		if (out) {
			out->group_slot[g] = (int32_t)slot;
			out->group_win[g] = (int32_t)nw;
		}
		for (int w = 0; w < nwin; w++) {
			int lo = w * step;
			int must = 0;
			for (int l = 0; l < L; l++) {
				int64_t p = head[l];
				while (p < end[l] && csr_col(c, p) < lo + step)
					p++;
				if (p - head[l] > must)
					must = (int)(p - head[l]);
			}
			for (int q = 0; q < must; q++, slot++)
				for (int l = 0; l < L; l++) {
					bool take = head[l] < end[l] &&
						    csr_col(c, head[l]) < lo + span;
					if (out) {
						size_t at = (size_t)slot * L + l;
						if (c->q8)
							out->slot_val8[at] = take ? c->val8[head[l]] : 0;
						else
							out->slot_val[at] = take ? c->val[head[l]] : 0.0f;
						out->slot_idx[at] = take ?
							(uint8_t)(csr_col(c, head[l]) - lo) : 0;
					}
					head[l] += take;
				}
			if (out && out->slot_win)
				for (int64_t q = slot - must; q < slot; q++)
					out->slot_win[q] = (uint16_t)w;
			if (must && out) {
				out->win_idx[nw] = w;
				out->win_cnt[nw] = (uint8_t)must;
			}
			nw += must > 0;
		}
	}
	if (out) {
		out->group_slot[groups] = (int32_t)slot;
		out->group_win[groups] = (int32_t)nw;
	}
	*windows = nw;
	return slot;
}

/* A windowed block.  Float: slot values (64-byte aligned), slot offsets, group starts (slots
 * and windows), window numbers, for WIN8 each slot's window number (uint16), window
 * counts.  Int8: lane scales (aligned), then the same with int8 slot values. */
static int win_build(const tm_sparse_w *c, tm_sparse_format format, tm_sparse_w **out,
		     tm_err *err)
{
	int n = c->n, k = c->k, L = window_lanes(format);
	int step = window_step(format), span = window_span(format);
	int groups = (n + L - 1) / L, nwin = (k + step - 1) / step;
	int64_t windows;
	int64_t slots = win_schedule(c, L, step, span, NULL, &windows);
	size_t lanes = (size_t)slots * L;
	size_t nlanes = (size_t)groups * L;
	size_t sbytes = c->q8 ? nlanes * sizeof(float) : 0;
	size_t vsz = c->q8 ? sizeof(int8_t) : sizeof(float);
	size_t wbytes = format == TM_SPARSE_WIN8 ? (size_t)slots * sizeof(uint16_t) : 0;
	size_t bytes = sbytes + lanes * vsz + lanes + 2 * ((size_t)groups + 1) * sizeof(int32_t) +
		       (size_t)windows * (sizeof(int32_t) + 1) + wbytes;
	tm_sparse_w *s = sparse_alloc(n, k, format);
	s->block = block_alloc(bytes);
	if (!s->block) {
		free(s);
		return tm_err_set(err, TM_ENOMEM, "sparse",
				  "sparse: cannot allocate %zu bytes for a (%d, %d) %s matrix",
				  bytes, n, k, tm_sparse_format_name(format));
	}
	s->bytes = bytes;
	s->nnz = c->nnz;
	s->q8 = c->q8;
	s->lanes = L;
	s->step = step;
	s->groups = groups;
	s->nwin = nwin;
	s->slots = slots;
	s->windows = windows;
	uint8_t *b = s->block;
	if (c->q8) {
		s->scale = (float *)b;
		for (size_t l = 0; l < nlanes; l++)
			s->scale[l] = (int64_t)l < n ? c->scale[l] : 0.0f;
		b += sbytes;
		s->slot_val8 = (int8_t *)b;
	} else {
		s->slot_val = (float *)b;
	}
	b += lanes * vsz;
	s->slot_idx = b;
	b += lanes;
	s->group_slot = (int32_t *)b;
	b += ((size_t)groups + 1) * sizeof(int32_t);
	s->group_win = (int32_t *)b;
	b += ((size_t)groups + 1) * sizeof(int32_t);
	s->win_idx = (int32_t *)b;
	b += (size_t)windows * sizeof(int32_t);
	if (wbytes) {
		s->slot_win = (uint16_t *)(void *)b;
		b += wbytes;
	}
	s->win_cnt = b;
	win_schedule(c, L, step, span, s, &windows);
	*out = s;
	return 0;
}

/* The format each kernel set reads fastest (CSR for AVX2 past WIN8's widest k). */
static tm_sparse_format auto_format(tm_isa isa, int k)
{
	return isa >= TM_ISA_AVX512		    ? TM_SPARSE_WIN16
	       : isa >= TM_ISA_AVX2 && k <= WIN8_MAX_K ? TM_SPARSE_WIN8
						     : TM_SPARSE_CSR;
}

static int sparse_make(const tm_ctx *ctx, int n, int k, const float *w, bool q8,
		       tm_sparse_format format, tm_sparse_w **out, tm_err *err)
{
	*out = NULL;
	if (n < 1 || k < 1)
		return tm_err_set(err, TM_EINVAL, "sparse",
				  "sparse: weight shape (%d, %d) must be at least (1, 1)", n, k);
	if ((int64_t)n * k > INT32_MAX)
		return tm_err_set(err, TM_ELIMIT, "sparse",
				  "sparse: weight shape (%d, %d) has more than %d entries", n, k,
				  INT32_MAX);
	if (format < TM_SPARSE_AUTO || format > TM_SPARSE_WIN8)
		return tm_err_set(err, TM_EINVAL, "sparse", "sparse: format %d is not known",
				  (int)format);
	if (format == TM_SPARSE_AUTO)
		format = auto_format(ctx ? ctx->isa : TM_ISA_PORTABLE, k);
	if (format == TM_SPARSE_WIN8 && k > WIN8_MAX_K)
		return tm_err_set(err, TM_ELIMIT, "sparse",
				  "sparse: format win8 takes k up to %d, this layer has k = %d",
				  WIN8_MAX_K, k);
	int8_t *q = NULL;
	float *scale = NULL;
	if (q8) {
		q = malloc((size_t)n * k);
		scale = malloc(sizeof(float) * (size_t)n);
		if (!q || !scale) {
			free(q);
			free(scale);
			return tm_err_set(err, TM_ENOMEM, "sparse",
					  "sparse: cannot allocate %zu bytes to quantize (%d, %d)",
					  (size_t)n * k, n, k);
		}
		int rc = tm_quantize_weights(n, k, w, TM_QGRAN_CHANNEL, q, scale, err);
		if (rc) {
			free(q);
			free(scale);
			return rc;
		}
	}
	tm_sparse_w *c = NULL;
	int rc = csr_build(n, k, w, q, scale, &c, err);
	free(q);
	free(scale);
	if (rc || format == TM_SPARSE_CSR) {
		*out = c;
		return rc;
	}
	rc = win_build(c, format, out, err);
	tm_sparse_free(c);
	return rc;
}

int tm_sparse_new(const tm_ctx *ctx, int n, int k, const float *w, tm_sparse_format format,
		  tm_sparse_w **out, tm_err *err)
{
	return sparse_make(ctx, n, k, w, false, format, out, err);
}

int tm_sparse_new_q8(const tm_ctx *ctx, int n, int k, const float *w, tm_sparse_format format,
		     tm_sparse_w **out, tm_err *err)
{
	return sparse_make(ctx, n, k, w, true, format, out, err);
}

size_t tm_sparse_bytes(const tm_sparse_w *s)
{
	return s ? s->bytes : 0;
}

void tm_sparse_get_info(const tm_sparse_w *s, tm_sparse_info *info)
{
	memset(info, 0, sizeof(*info));
	info->n = s->n;
	info->k = s->k;
	info->format = s->format;
	info->int8 = s->q8;
	info->nnz = s->nnz;
	info->sparsity = 1.0 - (double)s->nnz / ((double)s->n * s->k);
	info->bytes = s->bytes;
	info->dense_bytes = (size_t)s->n * s->k * sizeof(float);
	info->slots = windowed(s->format) ? s->slots : 0;
	info->windows = windowed(s->format) ? s->windows : 0;
	info->fill = windowed(s->format) && s->slots ?
		     (double)s->nnz / ((double)s->slots * s->lanes) : 1.0;
}

void tm_sparse_to_dense(const tm_sparse_w *s, float *w)
{
	memset(w, 0, sizeof(float) * (size_t)s->n * s->k);
	if (s->format == TM_SPARSE_CSR) {
		for (int r = 0; r < s->n; r++)
			for (int64_t p = s->row_ptr[r]; p < s->row_ptr[r + 1]; p++)
				w[(size_t)r * s->k + csr_col(s, p)] =
					s->q8 ? s->val8[p] * s->scale[r] : s->val[p];
		return;
	}
	for (int g = 0; g < s->groups; g++) {
		int64_t q = s->group_slot[g];
		for (int64_t e = s->group_win[g]; e < s->group_win[g + 1]; e++)
			for (int c = s->win_cnt[e], win = s->win_idx[e]; c > 0; c--, q++)
				for (int l = 0; l < s->lanes; l++) {
					size_t at = (size_t)q * s->lanes + l;
					int r = g * s->lanes + l;
					float v = s->q8 ? s->slot_val8[at] * s->scale[r] : s->slot_val[at];
					if (v != 0.0f && r < s->n)
						w[(size_t)r * s->k + win * s->step +
						  s->slot_idx[at]] = v;
				}
	}
}

// ---- portable kernels ----

static inline float act_relu(float v, bool relu)
{
	return relu ? (v > 0.0f ? v : 0.0f) : v;
}

/* One CSR row against one x row with four independent partial sums (entry p goes to sum
 * p mod 4), added as (s0 + s1) + (s2 + s3); V and C are the value and column arrays. */
#define CSR_DOT(V, C)                                                                   \
	do {                                                                            \
		for (; p + 4 <= e; p += 4) {                                            \
			s0 += (float)(V)[p] * x[(C)[p]];                                \
			s1 += (float)(V)[p + 1] * x[(C)[p + 1]];                        \
			s2 += (float)(V)[p + 2] * x[(C)[p + 2]];                        \
			s3 += (float)(V)[p + 3] * x[(C)[p + 3]];                        \
		}                                                                       \
		if (p < e)                                                              \
			s0 += (float)(V)[p] * x[(C)[p]];                                \
		if (p + 1 < e)                                                          \
			s1 += (float)(V)[p + 1] * x[(C)[p + 1]];                        \
		if (p + 2 < e)                                                          \
			s2 += (float)(V)[p + 2] * x[(C)[p + 2]];                        \
	} while (0)

/* The row's sum, times its scale for int8 values. */
static float csr_dot(const tm_sparse_w *s, int r, const float *x)
{
	int64_t p = s->row_ptr[r], e = s->row_ptr[r + 1];
	float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
	if (s->q8 && s->col16)
		CSR_DOT(s->val8, s->col16);
	else if (s->q8)
		CSR_DOT(s->val8, s->col32);
	else if (s->col16)
		CSR_DOT(s->val, s->col16);
	else
		CSR_DOT(s->val, s->col32);
	float sum = (s0 + s1) + (s2 + s3);
	return s->q8 ? sum * s->scale[r] : sum;
}

#undef CSR_DOT

static void csr_rows_portable(const tm_sparse_w *s, int r0, int r1, int m, const float *x,
			      const float *bias, bool relu, float *y)
{
	int n = s->n, k = s->k;
	for (int r = r0; r < r1; r++) {
		float b = bias ? bias[r] : 0.0f;
		for (int i = 0; i < m; i++)
			y[(size_t)i * n + r] = act_relu(csr_dot(s, r, x + (size_t)i * k) + b, relu);
	}
}

/* The reference of the windowed formats, in the AVX-512 kernel's order: within a window the
 * slots go in pairs, the first of a pair to a0 and the second to a1, an odd last slot to a0;
 * the result is (a0 + a1) + bias, or (a0 + a1) * scale + bias for int8 values.  (The AVX2
 * kernel of WIN8 rotates the slots over four accumulators; tests compare within tolerance.) */
static void win_groups_portable(const tm_sparse_w *s, int g0, int g1, int m, const float *x,
				const float *bias, bool relu, float *y)
{
	int n = s->n, k = s->k, L = s->lanes;
	for (int g = g0; g < g1; g++) {
		for (int i = 0; i < m; i++) {
			const float *xr = x + (size_t)i * k;
			float a0[SPARSE_MAX_LANES] = { 0 }, a1[SPARSE_MAX_LANES] = { 0 };
			size_t q = (size_t)s->group_slot[g];
			for (int64_t e = s->group_win[g]; e < s->group_win[g + 1]; e++) {
				const float *xw = xr + (size_t)s->win_idx[e] * s->step;
				int c = s->win_cnt[e];
				for (int j = 0; j < c; j++, q++) {
					float *a = (j & 1) ? a1 : a0;
					const uint8_t *id = s->slot_idx + q * L;
					for (int l = 0; l < L; l++) {
						size_t at = q * L + l;
						float v = s->q8 ? (float)s->slot_val8[at] : s->slot_val[at];
						if (v != 0.0f)
							a[l] += v * xw[id[l]];
					}
				}
			}
			for (int l = 0; l < L; l++) {
				int r = g * L + l;
				float sum = a0[l] + a1[l];
				if (s->q8)
					sum *= s->scale[r];
				if (r < n)
					y[(size_t)i * n + r] =
						act_relu(sum + (bias ? bias[r] : 0.0f), relu);
			}
		}
	}
}

// ---- dispatch and threads ----

typedef struct sparse_job {
	const tm_sparse_w *s;
	sparse_win_fn win;      /* windowed kernel, NULL for CSR */
	int m;
	const float *x;
	const float *bias;
	bool relu;
	float *y;
	int units;              /* groups (windowed) or rows (CSR) */
	int chunk;              /* units per task */
} sparse_job;

static void sparse_task(void *arg, int task)
{
	const sparse_job *j = arg;
	int u0 = task * j->chunk;
	int u1 = u0 + j->chunk < j->units ? u0 + j->chunk : j->units;
	if (j->win)
		j->win(j->s, u0, u1, j->m, j->x, j->bias, j->relu, j->y);
	else
		csr_rows_portable(j->s, u0, u1, j->m, j->x, j->bias, j->relu, j->y);
}

#define SPARSE_MT_MIN_MACS (1 << 17)  /* multiply-adds below which one thread does it all */

/* The SIMD kernel of s's format that isa may run, or NULL (portable). */
static const sparse_kernels *kernels_for(tm_isa isa, tm_sparse_format format)
{
	if (isa >= TM_ISA_AVX512 && tm_sparse_avx512.format == format)
		return &tm_sparse_avx512;
	if (isa >= TM_ISA_AVX2 && tm_sparse_avx2.format == format)
		return &tm_sparse_avx2;
	return NULL;
}

void tm_sparse_linear(const tm_ctx *ctx, int m, const tm_sparse_w *s, const float *x,
		      const float *bias, tm_act act, float *y)
{
	if (m <= 0)
		return;
	tm_isa isa = ctx ? ctx->isa : TM_ISA_PORTABLE;
	const sparse_kernels *ks = kernels_for(isa, s->format);
	sparse_job j = {
		.s = s,
		.m = m,
		.x = x,
		.bias = bias,
		.relu = act == TM_ACT_RELU,
		.y = y,
	};
	if (windowed(s->format)) {
		j.win = ks ? ks->win : win_groups_portable;
		j.units = s->groups;
	} else {
		j.units = s->n;
	}
	int threads = tm_pool_threads(ctx ? ctx->pool : NULL);
	int ntasks = 1;
	j.chunk = j.units;
	if (threads > 1 && (double)s->nnz * m >= SPARSE_MT_MIN_MACS && j.units > 1) {
		int q = s->format == TM_SPARSE_CSR ? 4 : 1;  /* CSR: rows in multiples of 4 */
		int blocks = (j.units + q - 1) / q;
		j.chunk = (blocks + threads - 1) / threads * q;
		ntasks = (j.units + j.chunk - 1) / j.chunk;
	}
	if (ntasks == 1)
		sparse_task(&j, 0);
	else
		tm_pool_run(ctx->pool, ntasks, sparse_task, &j);
	if (act == TM_ACT_GELU)
		tm_gelu_forward_ctx(ctx, (size_t)m * s->n, y, y);
}

// ---- the dense fallback rule ----

/* Break-even sparsity (fraction of zeros) at and above which a layer runs sparse, per kernel
 * set, batch and width; the first row that matches wins.  Measured single-thread against the
 * faster of tm_linear and tm_linear_packed on the event shapes (784x128, 128x64, 64x10,
 * 1600x10, 128x384, 128x128, 512x128, 128x512) at batch 1, 4, 16 and 64, rounded up for noise
 * (docs/sparsity.md has the grid).  AVX-512 (WIN16): batch 1 crosses at 0.29-0.33 for 128
 * outputs and more, 0.50 for narrower layers (partly empty 16-row groups against dense weights
 * that fit L1); batches cross at 0.54-0.59 (0.65 for 10 outputs).  AVX2 (WIN8): the rows for
 * 128 outputs and more were measured again after WIN8 became the one-register windows read in
 * one loop over slots: `make bench` on a Zen 3 put 784x128 at 0.59 for batch 1 and 0.84 for
 * batch 64 (it had been 0.72 and 0.88 with the old kernel); narrow layers keep the earlier
 * 0.85 until measured again.  Portable CSR beats the
 * portable dense kernel at any sparsity; its row is the point where CSR (6 bytes per nonzero)
 * stops storing more than dense (4 bytes per weight). */
typedef struct sparse_break_even {
	bool q8;          /* int8 values against the dense int8 layer (tm_qlinear) */
	tm_isa isa;
	int m_max;        /* batches up to this */
	int n_min;        /* layers with at least this many outputs */
	double sparsity;
} sparse_break_even;

/* Int8 rows: the sparse formats with int8 values against tm_qlinear_forward (true int8
 * products, VNNI on this machine), on 784x128: AVX-512 crosses at 0.89 for batch 1 and
 * 0.91-0.93 for batch 16 and 64; AVX2 at 0.92 for batch 1 and not below 0.98 for batches
 * (dense int8 wins); portable at 0.70-0.72. */
static const sparse_break_even break_even_table[] = {
	{ false, TM_ISA_AVX512, 1, 128, 0.35 },
	{ false, TM_ISA_AVX512, 1, 0, 0.50 },
	{ false, TM_ISA_AVX512, INT32_MAX, 128, 0.60 },
	{ false, TM_ISA_AVX512, INT32_MAX, 0, 0.65 },
	{ false, TM_ISA_AVX2, 1, 128, 0.62 },
	{ false, TM_ISA_AVX2, 1, 0, 0.85 },
	{ false, TM_ISA_AVX2, INT32_MAX, 128, 0.86 },
	{ false, TM_ISA_AVX2, INT32_MAX, 0, 0.88 },
	{ false, TM_ISA_PORTABLE, INT32_MAX, 0, 0.34 },
	{ true, TM_ISA_AVX512, 1, 0, 0.90 },
	{ true, TM_ISA_AVX512, INT32_MAX, 0, 0.94 },
	{ true, TM_ISA_AVX2, 1, 0, 0.93 },
	{ true, TM_ISA_AVX2, INT32_MAX, 0, 0.99 },
	{ true, TM_ISA_PORTABLE, INT32_MAX, 0, 0.75 },
};

static double break_even(bool q8, tm_isa isa, int n, int m)
{
	for (size_t i = 0; i < sizeof(break_even_table) / sizeof(break_even_table[0]); i++) {
		const sparse_break_even *e = &break_even_table[i];
		if (e->q8 == q8 && e->isa == isa && m <= e->m_max && n >= e->n_min)
			return e->sparsity;
	}
	return 1.0;
}

double tm_sparse_break_even(tm_isa isa, int n, int k, int m)
{
	(void)k;
	return break_even(false, isa, n, m);
}

double tm_sparse_break_even_q8(tm_isa isa, int n, int k, int m)
{
	(void)k;
	return break_even(true, isa, n, m);
}

static bool decide(bool q8, tm_isa isa, int n, int k, double sparsity, int m, char *why,
		   size_t len)
{
	double be = break_even(q8, isa, n, m);
	bool sparse = sparsity >= be;
	if (why && len) {
		tm_sparse_format f = auto_format(isa, k);
		const char *t = q8 ? " int8" : "";
		if (sparse)
			snprintf(why, len, "sparse %s%s, %.1f%% zeros (break-even %.0f%%)",
				 tm_sparse_format_name(f), t, 100.0 * sparsity, 100.0 * be);
		else
			snprintf(why, len, "dense%s: %.1f%% zeros is below the %.0f%% break-even", t,
				 100.0 * sparsity, 100.0 * be);
	}
	return sparse;
}

bool tm_sparse_decide(tm_isa isa, int n, int k, double sparsity, int m, char *why, size_t len)
{
	return decide(false, isa, n, k, sparsity, m, why, len);
}

bool tm_sparse_decide_q8(tm_isa isa, int n, int k, double sparsity, int m, char *why,
			 size_t len)
{
	return decide(true, isa, n, k, sparsity, m, why, len);
}
