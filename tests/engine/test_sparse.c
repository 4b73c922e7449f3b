/* test_sparse.c: Check suite of engine/sparse*.c.  Pruning: exact counts per tensor and
 * globally, every pruned |w| at most every kept |w|, ties broken by position, errors leave the
 * weights alone, masks keep pruned weights at zero through simulated optimizer steps.  Sparse
 * storage (CSR, WIN16, WIN8): the round trip to dense is exact, stored bytes equal the
 * allocation's formula.  Sparse linear: every format with every kernel set the CPU has,
 * against a double-precision reference and against the dense tm_linear on the same masked
 * weights, at sparsities 0, 50%, 90%, 99% and 100%, with empty rows, empty columns and an
 * empty 16-row group, on odd shapes (1, 3, 17, 63, 65, 129), a k above 65536 and the MLP's
 * 784x128, batch 1 and batches that leave samples after the groups of four (two); SIMD
 * against the portable kernel of the same format; results bit-identical for 1, 2 and 3
 * threads and independent of the batch.  The int8-valued variant (prune then quantize) the
 * same way against its dequantized weights q * scale, which it must give back exactly and
 * within half a step of w.  Tolerance: |got - ref| / (1 + |ref|) <= 1e-5 * sqrt(k), as
 * test_gemm.c.  The fallback rule on hand-picked cases. */
#include "tests.h"
#include "engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double tol_for(int k)
{
	return 1e-5 * sqrt((double)(k > 1 ? k : 1));
}

static float *rnd(size_t n, uint64_t seed)
{
	float *x = malloc(sizeof(float) * (n ? n : 1));
	ck_assert_ptr_nonnull(x);
	tt_fill_random(x, n, seed);
	return x;
}

static tm_cpu cpu_get(void)
{
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	return cpu;
}

static int cmp_float_abs(const void *a, const void *b)
{
	float x = fabsf(*(const float *)a), y = fabsf(*(const float *)b);
	return x < y ? -1 : x > y;
}

static double gelu_ref(double s)
{
	return 0.5 * s * (1 + tanh(sqrt(2 / M_PI) * (s + 0.044715 * s * s * s)));
}

/* Y = act(X W^T + b) in double. */
static void ref_linear(int m, int n, int k, const float *x, const float *w, const float *b,
		       tm_act act, float *y)
{
	for (int i = 0; i < m; i++)
		for (int j = 0; j < n; j++) {
			double s = b ? b[j] : 0.0;
			for (int p = 0; p < k; p++)
				s += (double)x[(size_t)i * k + p] * w[(size_t)j * k + p];
			if (act == TM_ACT_RELU)
				s = s > 0 ? s : 0;
			else if (act == TM_ACT_GELU)
				s = gelu_ref(s);
			y[(size_t)i * n + j] = (float)s;
		}
}

/* Random W (n, k) magnitude-pruned to sparsity. */
static float *pruned_w(int n, int k, double sparsity, uint64_t seed)
{
	float *w = rnd((size_t)n * k, seed);
	tm_err err;
	ck_assert_int_eq(tm_prune_magnitude(w, (size_t)n * k, sparsity, NULL, NULL, &err), 0);
	return w;
}

static tm_sparse_w *sparse_of(tm_isa isa, int n, int k, const float *w, tm_sparse_format f)
{
	tm_ctx ctx = { .isa = isa };
	tm_sparse_w *s = NULL;
	tm_err err;
	int rc = tm_sparse_new(&ctx, n, k, w, f, &s, &err);
	ck_assert_msg(rc == 0, "tm_sparse_new: %s", err.msg);
	return s;
}

static tm_sparse_w *sparse_q8_of(tm_isa isa, int n, int k, const float *w, tm_sparse_format f)
{
	tm_ctx ctx = { .isa = isa };
	tm_sparse_w *s = NULL;
	tm_err err;
	int rc = tm_sparse_new_q8(&ctx, n, k, w, f, &s, &err);
	ck_assert_msg(rc == 0, "tm_sparse_new_q8: %s", err.msg);
	return s;
}

/* W quantized per row and back (q * scale), as the int8 sparse layer stores it. */
static float *dequantized(int n, int k, const float *w)
{
	int8_t *q = malloc((size_t)n * k);
	float *scale = malloc(sizeof(float) * (size_t)n), *d = malloc(sizeof(float) * (size_t)n * k);
	ck_assert_int_eq(tm_quantize_weights(n, k, w, TM_QGRAN_CHANNEL, q, scale, NULL), 0);
	for (int r = 0; r < n; r++)
		for (int j = 0; j < k; j++)
			d[(size_t)r * k + j] = q[(size_t)r * k + j] * scale[r];
	free(q);
	free(scale);
	return d;
}

// ---- pruning ----

static void check_pruned(const float *orig, const float *w, const uint8_t *mask, size_t len,
			 size_t expect, float threshold)
{
	size_t pruned = 0;
	float max_pruned = 0.0f, min_kept = INFINITY;
	/* ck_abort_msg only on a failure: a passing ck_assert writes to Check's log, too much
	 * per element */
	for (size_t i = 0; i < len; i++) {
		bool cut = mask[i] == 0;
		if (cut) {
			if (!(w[i] == 0.0f && !signbit(w[i])))
				ck_abort_msg("pruned weight %zu is %g", i, w[i]);
			pruned++;
			if (fabsf(orig[i]) > max_pruned)
				max_pruned = fabsf(orig[i]);
		} else {
			if (w[i] != orig[i])
				ck_abort_msg("kept weight %zu changed", i);
			if (fabsf(orig[i]) < min_kept)
				min_kept = fabsf(orig[i]);
		}
	}
	ck_assert_uint_eq(pruned, expect);
	ck_assert_msg(max_pruned <= min_kept, "pruned %g above kept %g", max_pruned, min_kept);
	if (expect)
		ck_assert_float_eq(threshold, max_pruned);
}

START_TEST(test_prune_exact_count)
{
	static const size_t lens[] = { 1, 3, 17, 1000, 784 * 128 };
	static const double sps[] = { 0.0, 0.3, 0.5, 0.87, 0.9, 0.99, 1.0 };
	for (size_t a = 0; a < sizeof(lens) / sizeof(lens[0]); a++)
		for (size_t b = 0; b < sizeof(sps) / sizeof(sps[0]); b++) {
			size_t len = lens[a];
			float *orig = rnd(len, 100 + a);
			float *w = malloc(sizeof(float) * len);
			uint8_t *mask = malloc(len);
			memcpy(w, orig, sizeof(float) * len);
			tm_prune_result res;
			tm_err err;
			ck_assert_int_eq(tm_prune_magnitude(w, len, sps[b], mask, &res, &err), 0);
			size_t expect = (size_t)floor(sps[b] * (double)len + 0.5);
			ck_assert_uint_eq(tm_prune_count(len, sps[b]), expect);
			ck_assert_uint_eq(res.pruned, expect);
			ck_assert_uint_eq(res.total, len);
			check_pruned(orig, w, mask, len, expect, res.threshold);
			/* the threshold is the expect-th smallest |w| */
			if (expect > 0 && len <= 1000) {
				float *sorted = malloc(sizeof(float) * len);
				memcpy(sorted, orig, sizeof(float) * len);
				qsort(sorted, len, sizeof(float), cmp_float_abs);
				ck_assert_float_eq(res.threshold, fabsf(sorted[expect - 1]));
				free(sorted);
			}
			ck_assert_double_eq_tol(tm_sparsity(w, len), (double)expect / len, 1e-12);
			free(orig);
			free(w);
			free(mask);
		}
}
END_TEST

/* Equal magnitudes (with both signs) are pruned in position order, and the run repeats. */
START_TEST(test_prune_ties)
{
	enum { LEN = 999 };
	float w[LEN], w2[LEN], orig[LEN];
	uint8_t mask[LEN];
	for (int i = 0; i < LEN; i++)
		orig[i] = (float)((i * 7) % 5 - 2) * 0.25f;  /* |w| in {0, 0.25, 0.5}, many ties */
	static const double sps[] = { 0.1, 0.25, 0.5, 0.77, 0.9 };
	for (size_t b = 0; b < sizeof(sps) / sizeof(sps[0]); b++) {
		memcpy(w, orig, sizeof(w));
		tm_prune_result res;
		ck_assert_int_eq(tm_prune_magnitude(w, LEN, sps[b], mask, &res, NULL), 0);
		size_t expect = tm_prune_count(LEN, sps[b]);
		check_pruned(orig, w, mask, LEN, expect, res.threshold);
		/* among the weights at the threshold, the pruned ones come first */
		bool seen_kept = false;
		for (int i = 0; i < LEN; i++) {
			if (fabsf(orig[i]) != res.threshold)
				continue;
			if (mask[i])
				seen_kept = true;
			else
				ck_assert_msg(!seen_kept, "tie at %d pruned after a kept one", i);
		}
		memcpy(w2, orig, sizeof(w2));
		ck_assert_int_eq(tm_prune_magnitude(w2, LEN, sps[b], NULL, NULL, NULL), 0);
		ck_assert_mem_eq(w, w2, sizeof(w));
	}
	/* all equal: the first round(s * len) go */
	for (int i = 0; i < LEN; i++)
		w[i] = (i & 1) ? -1.5f : 1.5f;
	ck_assert_int_eq(tm_prune_magnitude(w, LEN, 0.4, mask, NULL, NULL), 0);
	size_t expect = tm_prune_count(LEN, 0.4);
	for (int i = 0; i < LEN; i++)
		ck_assert_int_eq(mask[i], (size_t)i >= expect);
}
END_TEST

START_TEST(test_prune_global)
{
	static const size_t lens[] = { 784 * 128, 128 * 64, 64 * 10 };
	static const float scale[] = { 0.05f, 0.2f, 1.0f };
	tm_prune_tensor t[3];
	float *orig[3];
	size_t total = 0;
	for (int i = 0; i < 3; i++) {
		orig[i] = rnd(lens[i], 200 + i);
		for (size_t j = 0; j < lens[i]; j++)
			orig[i][j] *= scale[i];
		t[i] = (tm_prune_tensor){ .w = malloc(sizeof(float) * lens[i]), .len = lens[i],
					   .mask = malloc(lens[i]) };
		memcpy(t[i].w, orig[i], sizeof(float) * lens[i]);
		total += lens[i];
	}
	tm_prune_result res;
	tm_err err;
	ck_assert_int_eq(tm_prune_magnitude_global(t, 3, 0.87, &res, &err), 0);
	size_t expect = tm_prune_count(total, 0.87);
	ck_assert_uint_eq(res.pruned, expect);
	ck_assert_uint_eq(res.total, total);
	size_t sum = 0;
	float max_pruned = 0.0f, min_kept = INFINITY;
	for (int i = 0; i < 3; i++) {
		size_t here = 0;
		for (size_t j = 0; j < lens[i]; j++) {
			float a = fabsf(orig[i][j]);
			if (!t[i].mask[j]) {
				ck_assert(t[i].w[j] == 0.0f);
				here++;
				max_pruned = a > max_pruned ? a : max_pruned;
			} else {
				ck_assert(t[i].w[j] == orig[i][j]);
				min_kept = a < min_kept ? a : min_kept;
			}
		}
		ck_assert_uint_eq(here, t[i].pruned);
		sum += here;
	}
	ck_assert_uint_eq(sum, expect);
	ck_assert(max_pruned <= min_kept);
	ck_assert_float_eq(res.threshold, max_pruned);
	/* the small-scale layer loses more than the per-layer rate, the large one less */
	ck_assert(t[0].pruned > tm_prune_count(lens[0], 0.87));
	ck_assert(t[2].pruned < tm_prune_count(lens[2], 0.87));
	for (int i = 0; i < 3; i++) {
		free(orig[i]);
		free(t[i].w);
		free(t[i].mask);
	}

	/* ties across tensors go to the earlier tensor */
	float a[4] = { 1, 1, 1, 1 }, b[4] = { -1, 1, -1, 1 };
	tm_prune_tensor tt[2] = { { .w = b, .len = 4 }, { .w = a, .len = 4 } };
	ck_assert_int_eq(tm_prune_magnitude_global(tt, 2, 0.75, NULL, NULL), 0);
	ck_assert_uint_eq(tt[0].pruned, 4);
	ck_assert_uint_eq(tt[1].pruned, 2);
	ck_assert(a[0] == 0 && a[1] == 0 && a[2] == 1 && a[3] == 1);
}
END_TEST

START_TEST(test_prune_errors)
{
	float w[8] = { 1, 2, 3, 4, 5, 6, 7, 8 }, orig[8];
	memcpy(orig, w, sizeof(w));
	tm_err err;
	ck_assert_int_eq(tm_prune_magnitude(w, 8, -0.1, NULL, NULL, &err), TM_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "sparsity"));
	ck_assert_int_eq(tm_prune_magnitude(w, 8, 1.5, NULL, NULL, &err), TM_EINVAL);
	ck_assert_int_eq(tm_prune_magnitude(w, 8, NAN, NULL, NULL, &err), TM_EINVAL);
	w[5] = NAN;
	ck_assert_int_eq(tm_prune_magnitude(w, 8, 0.5, NULL, NULL, &err), TM_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "weight 5"));
	w[5] = INFINITY;
	ck_assert_int_eq(tm_prune_magnitude(w, 8, 0.5, NULL, NULL, &err), TM_EINVAL);
	w[5] = orig[5];
	ck_assert_mem_eq(w, orig, sizeof(w));
	ck_assert_int_eq(tm_prune_magnitude(w, 0, 0.5, NULL, NULL, &err), 0);
}
END_TEST

/* Fine-tuning with a fixed mask: after any number of steps pruned weights are still 0. */
START_TEST(test_mask_reapply)
{
	enum { LEN = 5000 };
	float *w = rnd(LEN, 7), *g = malloc(sizeof(float) * LEN);
	uint8_t *mask = malloc(LEN), *mask2 = malloc(LEN);
	ck_assert_int_eq(tm_prune_magnitude(w, LEN, 0.87, mask, NULL, NULL), 0);
	for (int step = 0; step < 5; step++) {
		tt_fill_random(g, LEN, 50 + step);
		tm_prune_mask_apply(mask, LEN, NULL, g);
		for (int i = 0; i < LEN; i++) {
			if (!mask[i])
				ck_assert(g[i] == 0.0f);
			w[i] -= 0.1f * g[i] + 0.01f;  /* an update that moves even zero-gradient weights */
		}
		tm_prune_mask_apply(mask, LEN, w, g);
		for (int i = 0; i < LEN; i++)
			if (!mask[i])
				ck_assert(w[i] == 0.0f && g[i] == 0.0f);
	}
	ck_assert_uint_eq(LEN - tm_prune_mask_from(w, LEN, mask2), tm_prune_count(LEN, 0.87));
	for (int i = 0; i < LEN; i++)
		ck_assert_int_eq(mask2[i], mask[i]);
	free(w);
	free(g);
	free(mask);
	free(mask2);
}
END_TEST

// ---- storage ----

START_TEST(test_storage_bytes_and_round_trip)
{
	static const int shapes[][2] = { { 1, 1 }, { 3, 17 }, { 17, 3 }, { 63, 65 }, { 129, 129 },
					 { 128, 784 } };
	static const double sps[] = { 0.0, 0.5, 0.87, 0.99, 1.0 };
	for (size_t a = 0; a < sizeof(shapes) / sizeof(shapes[0]); a++)
		for (size_t b = 0; b < sizeof(sps) / sizeof(sps[0]); b++) {
			int n = shapes[a][0], k = shapes[a][1];
			float *w = pruned_w(n, k, sps[b], 300 + a);
			float *back = malloc(sizeof(float) * (size_t)n * k);
			int64_t nnz = (int64_t)n * k - (int64_t)tm_prune_count((size_t)n * k, sps[b]);
			for (int f = TM_SPARSE_CSR; f <= TM_SPARSE_WIN8; f++) {
				/* windowed: lanes per group and the window step */
				size_t L = f == TM_SPARSE_WIN16 ? 16 : 8, step = f == TM_SPARSE_WIN16 ? 16 : 2;
				size_t groups = ((size_t)n + L - 1) / L, nwin = ((size_t)k + step - 1) / step;
				size_t sw = f == TM_SPARSE_WIN8 ? 2 : 0;  /* slot window bytes */
				tm_sparse_w *s = sparse_of(TM_ISA_PORTABLE, n, k, w, f);
				tm_sparse_info info;
				tm_sparse_get_info(s, &info);
				ck_assert_int_eq(info.n, n);
				ck_assert_int_eq(info.k, k);
				ck_assert_int_eq(info.format, f);
				ck_assert_int_eq(info.nnz, nnz);
				ck_assert_uint_eq(info.dense_bytes, (size_t)n * k * 4);
				ck_assert_uint_eq(info.bytes, tm_sparse_bytes(s));
				if (f == TM_SPARSE_CSR) {
					ck_assert_uint_eq(info.bytes,
							  (size_t)(n + 1) * 4 + (size_t)nnz * (2 + 4));
				} else {
					/* slots of L lanes (4-byte value + 1-byte offset), group
					 * starts in slots and in windows (int32), per window with
					 * slots its number (int32) and slot count (uint8), and for
					 * WIN8 each slot's window number (uint16) */
					ck_assert_uint_eq(info.bytes, (size_t)info.slots * L * 5 +
								      2 * (groups + 1) * 4 +
								      (size_t)info.windows * 5 +
								      (size_t)info.slots * sw);
					ck_assert(info.windows <= (int64_t)(groups * nwin));
					ck_assert(info.windows <= info.slots);
					ck_assert(info.slots * (int64_t)L >= nnz);
					ck_assert(info.slots <= nnz);
				}
				tm_sparse_to_dense(s, back);
				ck_assert_mem_eq(back, w, sizeof(float) * (size_t)n * k);
				tm_sparse_free(s);

				/* int8 values: q * scale back exactly, within half a step of w,
				 * weights rounding to 0 dropped */
				float *d = dequantized(n, k, w);
				int64_t nnz8 = 0;
				for (size_t i = 0; i < (size_t)n * k; i++)
					nnz8 += d[i] != 0.0f;
				s = sparse_q8_of(TM_ISA_PORTABLE, n, k, w, f);
				tm_sparse_get_info(s, &info);
				ck_assert(info.int8);
				ck_assert_int_eq(info.nnz, nnz8);
				if (f == TM_SPARSE_CSR)
					ck_assert_uint_eq(info.bytes, (size_t)n * 4 + (size_t)(n + 1) * 4 +
								      (size_t)nnz8 * (2 + 1));
				else
					ck_assert_uint_eq(info.bytes, groups * L * 4 +
								      (size_t)info.slots * L * 2 +
								      2 * (groups + 1) * 4 +
								      (size_t)info.windows * 5 +
								      (size_t)info.slots * sw);
				tm_sparse_to_dense(s, back);
				ck_assert_mem_eq(back, d, sizeof(float) * (size_t)n * k);
				/* ck_abort_msg only on a failure (a passing ck_assert writes to
				 * Check's log, too much per element) */
				for (int r = 0; r < n; r++) {
					float amax = 0.0f;
					for (int j = 0; j < k; j++)
						amax = fmaxf(amax, fabsf(w[(size_t)r * k + j]));
					for (int j = 0; j < k; j++) {
						size_t at = (size_t)r * k + j;
						if (!(fabsf(back[at] - w[at]) <= amax / 127 * 0.5001f))
							ck_abort_msg("(%d, %d) [%zu]: %g is more than half "
								     "a step from %g", n, k, at,
								     (double)back[at], (double)w[at]);
						if (w[at] == 0.0f && back[at] != 0.0f)
							ck_abort_msg("(%d, %d) [%zu]: zero weight came "
								     "back as %g", n, k, at,
								     (double)back[at]);
					}
				}
				tm_sparse_free(s);
				free(d);
			}
			free(w);
			free(back);
		}
	tm_sparse_free(NULL);
}
END_TEST

/* k > 65536 needs 32-bit column indices. */
START_TEST(test_storage_wide_k)
{
	int n = 2, k = 70001;
	float *w = pruned_w(n, k, 0.9, 11);
	w[k - 1] = 0.5f;      /* a column beyond 65535 */
	w[k + 65536] = -0.25f;
	int64_t nnz = 0;
	for (int i = 0; i < n * k; i++)
		nnz += w[i] != 0.0f;
	float *x = rnd(k, 12), y[2], ref[2];
	ref_linear(1, n, k, x, w, NULL, TM_ACT_NONE, ref);
	for (int f = TM_SPARSE_CSR; f <= TM_SPARSE_WIN8; f++) {
		tm_sparse_w *s = sparse_of(TM_ISA_PORTABLE, n, k, w, f);
		if (f == TM_SPARSE_CSR)
			ck_assert_uint_eq(tm_sparse_bytes(s), (size_t)(n + 1) * 4 + (size_t)nnz * 8);
		float *back = malloc(sizeof(float) * (size_t)n * k);
		tm_sparse_to_dense(s, back);
		ck_assert_mem_eq(back, w, sizeof(float) * (size_t)n * k);
		free(back);
		tm_sparse_linear(NULL, 1, s, x, NULL, TM_ACT_NONE, y);
		ck_assert(tt_max_rel_diff(y, ref, 2) <= tol_for(k));
		tm_cpu cpu = cpu_get();
		tm_ctx ctx = { .isa = tm_isa_best(&cpu) };
		tm_sparse_linear(&ctx, 1, s, x, NULL, TM_ACT_NONE, y);
		ck_assert(tt_max_rel_diff(y, ref, 2) <= tol_for(k));
		tm_sparse_free(s);
	}
	free(w);
	free(x);
}
END_TEST

START_TEST(test_sparse_new_errors)
{
	float w[4] = { 1, 0, 0, 1 };
	tm_sparse_w *s = (tm_sparse_w *)w;
	tm_err err;
	ck_assert_int_eq(tm_sparse_new(NULL, 0, 4, w, TM_SPARSE_AUTO, &s, &err), TM_EINVAL);
	ck_assert_ptr_null(s);
	ck_assert_ptr_nonnull(strstr(err.msg, "(0, 4)"));
	ck_assert_int_eq(tm_sparse_new(NULL, 2, -1, w, TM_SPARSE_AUTO, &s, &err), TM_EINVAL);
	ck_assert_int_eq(tm_sparse_new(NULL, 2, 2, w, (tm_sparse_format)7, &s, &err), TM_EINVAL);
	ck_assert_int_eq(tm_sparse_new(NULL, 65536, 65536, w, TM_SPARSE_CSR, &s, &err), TM_ELIMIT);
	/* WIN8 stores each slot's window in 16 bits: k up to 131072; AUTO on AVX2 takes CSR past
	 * that */
	{
		int kw = 131073;
		float *wide_w = calloc((size_t)kw, sizeof(float));
		ck_assert_ptr_nonnull(wide_w);
		wide_w[kw - 1] = 1.0f;
		ck_assert_int_eq(tm_sparse_new(NULL, 1, kw, wide_w, TM_SPARSE_WIN8, &s, &err),
				 TM_ELIMIT);
		ck_assert_ptr_null(s);
		ck_assert_msg(strstr(err.msg, "131072") && strstr(err.msg, "131073"), "%s", err.msg);
		tm_ctx avx2 = { .isa = TM_ISA_AVX2 };
		ck_assert_int_eq(tm_sparse_new(&avx2, 1, kw, wide_w, TM_SPARSE_AUTO, &s, &err), 0);
		tm_sparse_info info;
		tm_sparse_get_info(s, &info);
		ck_assert_int_eq(info.format, TM_SPARSE_CSR);
		tm_sparse_free(s);
		ck_assert_int_eq(tm_sparse_new(NULL, 1, kw - 1, wide_w, TM_SPARSE_WIN8, &s, &err), 0);
		tm_sparse_free(s);
		free(wide_w);
	}
	float bad[4] = { 1, 0, NAN, 1 };
	ck_assert_int_eq(tm_sparse_new_q8(NULL, 2, 2, bad, TM_SPARSE_CSR, &s, &err), TM_EINVAL);
	ck_assert_ptr_null(s);
	/* AUTO follows the kernel set */
	tm_ctx port = { .isa = TM_ISA_PORTABLE }, wide = { .isa = TM_ISA_AVX512 };
	ck_assert_int_eq(tm_sparse_new(&port, 2, 2, w, TM_SPARSE_AUTO, &s, &err), 0);
	tm_sparse_info info;
	tm_sparse_get_info(s, &info);
	ck_assert_int_eq(info.format, TM_SPARSE_CSR);
	tm_sparse_free(s);
	ck_assert_int_eq(tm_sparse_new(&wide, 2, 2, w, TM_SPARSE_AUTO, &s, &err), 0);
	tm_sparse_get_info(s, &info);
	ck_assert_int_eq(info.format, TM_SPARSE_WIN16);
	ck_assert_str_eq(tm_sparse_format_name(info.format), "win16");
	tm_sparse_free(s);
	tm_ctx avx2 = { .isa = TM_ISA_AVX2 };
	ck_assert_int_eq(tm_sparse_new(&avx2, 2, 2, w, TM_SPARSE_AUTO, &s, &err), 0);
	tm_sparse_get_info(s, &info);
	ck_assert_int_eq(info.format, TM_SPARSE_WIN8);
	ck_assert_str_eq(tm_sparse_format_name(info.format), "win8");
	tm_sparse_free(s);
}
END_TEST

// ---- sparse linear against dense ----

/* One case: every format and kernel set against the double reference and the dense kernels;
 * SIMD against the portable kernel of the same format. */
static void check_case(int m, int n, int k, const float *w, const float *bias, tm_act act,
		       uint64_t seed)
{
	tm_cpu cpu = cpu_get();
	float *x = rnd((size_t)m * k, seed);
	float *ref = malloc(sizeof(float) * (size_t)m * n);
	float *dense = malloc(sizeof(float) * (size_t)m * n);
	float *y = malloc(sizeof(float) * (size_t)m * n);
	float *port = malloc(sizeof(float) * (size_t)m * n);
	double tol = tol_for(k);
	float *d = dequantized(n, k, w);
	for (int v = 0; v < 6; v++) {
		int f = TM_SPARSE_CSR + v % 3;  /* CSR, WIN16, WIN8; float, then int8 */
		bool q8 = v >= 3;
		const float *wv = q8 ? d : w;  /* what the layer computes with */
		if (v == 0 || v == 3)
			ref_linear(m, n, k, x, wv, bias, act, ref);
		tm_sparse_w *s = q8 ? sparse_q8_of(TM_ISA_PORTABLE, n, k, w, f)
				    : sparse_of(TM_ISA_PORTABLE, n, k, w, f);
		tm_sparse_linear(NULL, m, s, x, bias, act, port);
		double e = tt_max_rel_diff(port, ref, (size_t)m * n);
		ck_assert_msg(e <= tol, "%s%s portable m=%d n=%d k=%d act=%d: diff %g",
			      tm_sparse_format_name(f), q8 ? " int8" : "", m, n, k, act, e);
		for (int isa = TM_ISA_PORTABLE; isa <= TM_ISA_AVX512; isa++) {
			if (!tm_isa_supported(&cpu, (tm_isa)isa))
				continue;
			tm_ctx ctx = { .isa = (tm_isa)isa };
			tm_linear(&ctx, m, n, k, x, wv, bias, act, dense);
			tm_sparse_linear(&ctx, m, s, x, bias, act, y);
			e = tt_max_rel_diff(y, ref, (size_t)m * n);
			ck_assert_msg(e <= tol, "%s%s isa %s m=%d n=%d k=%d act=%d: diff %g",
				      tm_sparse_format_name(f), q8 ? " int8" : "",
				      tm_isa_name((tm_isa)isa), m, n, k, act, e);
			e = tt_max_rel_diff(y, dense, (size_t)m * n);
			ck_assert_msg(e <= 2 * tol, "%s%s vs dense %s m=%d n=%d k=%d: diff %g",
				      tm_sparse_format_name(f), q8 ? " int8" : "",
				      tm_isa_name((tm_isa)isa), m, n, k, e);
			e = tt_max_rel_diff(y, port, (size_t)m * n);
			ck_assert_msg(e <= tol, "%s%s %s vs portable m=%d n=%d k=%d: diff %g",
				      tm_sparse_format_name(f), q8 ? " int8" : "",
				      tm_isa_name((tm_isa)isa), m, n, k, e);
		}
		tm_sparse_free(s);
	}
	free(d);
	free(x);
	free(ref);
	free(dense);
	free(y);
	free(port);
}

START_TEST(test_linear_odd_shapes)
{
	static const int dims[] = { 1, 3, 17, 63, 65, 129 };
	static const double sps[] = { 0.0, 0.5, 0.9, 0.99, 1.0 };
	static const int ms[] = { 1, 2, 7 };
	int nd = TT_SLOW_BUILD ? 4 : 6;
	uint64_t seed = 1000;
	for (int a = 0; a < nd; a++)
		for (int b = 0; b < nd; b++)
			for (size_t c = 0; c < sizeof(sps) / sizeof(sps[0]); c++) {
				int n = dims[a], k = dims[b];
				float *w = pruned_w(n, k, sps[c], seed++);
				float *bias = rnd((size_t)n, seed++);
				int m = ms[(a + b + c) % 3];
				tm_act act = (tm_act)((a + c) % 3);
				check_case(m, n, k, w, (a + b) % 2 ? bias : NULL, act, seed++);
				free(w);
				free(bias);
			}
}
END_TEST

START_TEST(test_linear_mlp_layer)
{
	static const double sps[] = { 0.0, 0.5, 0.9, 0.99, 1.0 };
	static const int ms[] = { 1, 4, 6, 9 };
	int n = 128, k = 784;
	for (size_t c = 0; c < sizeof(sps) / sizeof(sps[0]); c++) {
		float *w = pruned_w(n, k, sps[c], 77 + c);
		float *bias = rnd((size_t)n, 78);
		for (size_t q = 0; q < sizeof(ms) / sizeof(ms[0]); q++) {
			if (TT_SLOW_BUILD && q > 1)
				break;
			check_case(ms[q], n, k, w, bias, q % 2 ? TM_ACT_RELU : TM_ACT_NONE, 90 + q);
		}
		free(w);
		free(bias);
	}
}
END_TEST

/* Empty rows (first, last, a whole 16-row group), empty columns (first, last, a 16-column
 * window), and one dense column. */
START_TEST(test_linear_empty_rows_and_columns)
{
	int n = 65, k = 129;
	float *w = pruned_w(n, k, 0.8, 5);
	for (int j = 0; j < k; j++) {
		w[j] = 0.0f;
		w[(size_t)(n - 1) * k + j] = 0.0f;
		for (int r = 16; r < 32; r++)
			w[(size_t)r * k + j] = 0.0f;
	}
	for (int r = 0; r < n; r++) {
		w[(size_t)r * k] = 0.0f;
		w[(size_t)r * k + k - 1] = 0.0f;
		for (int j = 48; j < 64; j++)
			w[(size_t)r * k + j] = 0.0f;
		if (r != 0 && r != n - 1 && (r < 16 || r >= 32))
			w[(size_t)r * k + 100] = 0.5f;
	}
	float *bias = rnd((size_t)n, 6);
	check_case(1, n, k, w, bias, TM_ACT_NONE, 7);
	check_case(5, n, k, w, bias, TM_ACT_RELU, 8);
	/* the empty rows give exactly the bias */
	tm_cpu cpu = cpu_get();
	tm_ctx ctx = { .isa = tm_isa_best(&cpu) };
	float *x = rnd(k, 9), y[65];
	tm_sparse_w *s = sparse_of(ctx.isa, n, k, w, TM_SPARSE_AUTO);
	tm_sparse_linear(&ctx, 1, s, x, bias, TM_ACT_NONE, y);
	ck_assert_float_eq(y[0], bias[0]);
	ck_assert_float_eq(y[20], bias[20]);
	ck_assert_float_eq(y[n - 1], bias[n - 1]);
	tm_sparse_free(s);
	free(w);
	free(bias);
	free(x);
}
END_TEST

/* A sample's output does not depend on the batch it comes in (groups of four and the rest). */
START_TEST(test_linear_batch_independent)
{
	int n = 70, k = 200, m = 11;
	float *w = pruned_w(n, k, 0.9, 21), *bias = rnd((size_t)n, 22), *x = rnd((size_t)m * k, 23);
	float *yb = malloc(sizeof(float) * (size_t)m * n), y1[70];
	tm_cpu cpu = cpu_get();
	for (int isa = TM_ISA_PORTABLE; isa <= TM_ISA_AVX512; isa++) {
		if (!tm_isa_supported(&cpu, (tm_isa)isa))
			continue;
		tm_ctx ctx = { .isa = (tm_isa)isa };
		for (int v = 0; v < 6; v++) {
			int f = TM_SPARSE_CSR + v % 3;
			tm_sparse_w *s = v >= 3 ? sparse_q8_of((tm_isa)isa, n, k, w, f)
					        : sparse_of((tm_isa)isa, n, k, w, f);
			tm_sparse_linear(&ctx, m, s, x, bias, TM_ACT_RELU, yb);
			for (int i = 0; i < m; i++) {
				tm_sparse_linear(&ctx, 1, s, x + (size_t)i * k, bias, TM_ACT_RELU, y1);
				ck_assert_mem_eq(y1, yb + (size_t)i * n, sizeof(y1));
			}
			tm_sparse_free(s);
		}
	}
	free(w);
	free(bias);
	free(x);
	free(yb);
}
END_TEST

/* The result does not depend on where x lies, for every format and kernel set: the AVX-512
 * WIN16 kernel copies a misaligned x to an aligned buffer (up to a size), which must not
 * change a bit, nor may reading x in place past that size (k = 5000). */
START_TEST(test_linear_x_alignment)
{
	static const int ks[] = { 784, 200, 5000 };
	int n = 40;
	tm_cpu cpu = cpu_get();
	for (size_t a = 0; a < sizeof(ks) / sizeof(ks[0]); a++)
		for (int m = 1; m <= 5; m += 4) {
			int k = ks[a];
			float *w = pruned_w(n, k, 0.9, 41 + a), *bias = rnd((size_t)n, 42);
			float *x = rnd((size_t)m * k, 43 + m);
			/* aligned_alloc wants a multiple of the alignment */
			size_t bytes = (sizeof(float) * ((size_t)m * k + 16) + 63) / 64 * 64;
			float *buf = aligned_alloc(64, bytes);
			float *y0 = malloc(sizeof(float) * (size_t)m * n);
			float *y1 = malloc(sizeof(float) * (size_t)m * n);
			ck_assert(buf && y0 && y1);
			for (int isa = TM_ISA_PORTABLE; isa <= TM_ISA_AVX512; isa++) {
				if (!tm_isa_supported(&cpu, (tm_isa)isa))
					continue;
				tm_ctx ctx = { .isa = (tm_isa)isa };
				for (int f = TM_SPARSE_CSR; f <= TM_SPARSE_WIN8; f++) {
					tm_sparse_w *s = sparse_of((tm_isa)isa, n, k, w, f);
					memcpy(buf, x, sizeof(float) * (size_t)m * k);
					tm_sparse_linear(&ctx, m, s, buf, bias, TM_ACT_NONE, y0);
					for (int off = 1; off < 16; off++) {
						memcpy(buf + off, x, sizeof(float) * (size_t)m * k);
						tm_sparse_linear(&ctx, m, s, buf + off, bias, TM_ACT_NONE,
								 y1);
						if (memcmp(y0, y1, sizeof(float) * (size_t)m * n) != 0)
							ck_abort_msg("%s %s k=%d m=%d: x at +%d floats "
								     "differs", tm_isa_name((tm_isa)isa),
								     tm_sparse_format_name(f), k, m, off);
					}
					tm_sparse_free(s);
				}
			}
			free(w);
			free(bias);
			free(x);
			free(buf);
			free(y0);
			free(y1);
		}
}
END_TEST

START_TEST(test_threads_bit_identical)
{
	int n = 400, k = 784, m = 9;
	float *w = pruned_w(n, k, 0.5, 31), *bias = rnd((size_t)n, 32), *x = rnd((size_t)m * k, 33);
	float *y[3];
	for (int p = 0; p < 3; p++)
		y[p] = malloc(sizeof(float) * (size_t)m * n);
	tm_pool *pools[3] = { NULL, tm_pool_new(2), tm_pool_new(3) };
	tm_cpu cpu = cpu_get();
	for (int isa = TM_ISA_PORTABLE; isa <= TM_ISA_AVX512; isa++) {
		if (!tm_isa_supported(&cpu, (tm_isa)isa))
			continue;
		for (int v = 0; v < 6; v++) {
			int f = TM_SPARSE_CSR + v % 3;
			tm_sparse_w *s = v >= 3 ? sparse_q8_of((tm_isa)isa, n, k, w, f)
					        : sparse_of((tm_isa)isa, n, k, w, f);
			for (int mm = 1; mm <= m; mm += m - 1) {
				for (int p = 0; p < 3; p++) {
					tm_ctx ctx = { .isa = (tm_isa)isa, .pool = pools[p] };
					tm_sparse_linear(&ctx, mm, s, x, bias, TM_ACT_GELU, y[p]);
				}
				ck_assert_mem_eq(y[0], y[1], sizeof(float) * (size_t)mm * n);
				ck_assert_mem_eq(y[0], y[2], sizeof(float) * (size_t)mm * n);
			}
			tm_sparse_free(s);
		}
	}
	tm_pool_free(pools[1]);
	tm_pool_free(pools[2]);
	for (int p = 0; p < 3; p++)
		free(y[p]);
	free(w);
	free(bias);
	free(x);
}
END_TEST

// ---- the dense fallback rule ----

START_TEST(test_decide)
{
	char why[128];
	/* 90% zeros on the MLP layer at batch 1: sparse on every kernel set */
	for (int isa = TM_ISA_PORTABLE; isa <= TM_ISA_AVX512; isa++) {
		ck_assert(tm_sparse_decide((tm_isa)isa, 128, 784, 0.901, 1, why, sizeof(why)));
		ck_assert_msg(strstr(why, "90.1% zeros") != NULL, "%s", why);
		ck_assert(strncmp(why, "sparse ", 7) == 0);
	}
	ck_assert(!tm_sparse_decide(TM_ISA_AVX2, 128, 784, 0.6, 1, why, sizeof(why)));
	ck_assert_str_eq(why, "dense: 60.0% zeros is below the 62% break-even");
	/* narrow layers and batches need more zeros on AVX-512 */
	ck_assert(tm_sparse_decide(TM_ISA_AVX512, 128, 784, 0.45, 1, NULL, 0));
	ck_assert(!tm_sparse_decide(TM_ISA_AVX512, 64, 128, 0.45, 1, NULL, 0));
	ck_assert(!tm_sparse_decide(TM_ISA_AVX512, 128, 784, 0.45, 64, NULL, 0));
	ck_assert(tm_sparse_decide(TM_ISA_AVX512, 128, 784, 0.8, 64, NULL, 0));
	ck_assert(tm_sparse_decide(TM_ISA_AVX512, 128, 784, 0.9, 1, why, sizeof(why)));
	ck_assert_ptr_nonnull(strstr(why, "sparse win16"));
	ck_assert(tm_sparse_decide(TM_ISA_PORTABLE, 128, 784, 0.9, 1, why, sizeof(why)));
	ck_assert_ptr_nonnull(strstr(why, "sparse csr"));
	ck_assert(tm_sparse_decide(TM_ISA_AVX2, 128, 784, 0.97, 1, why, sizeof(why)));
	ck_assert_ptr_nonnull(strstr(why, "sparse win8"));
	/* 31% zeros: dense where SIMD dense is fast */
	ck_assert(!tm_sparse_decide(TM_ISA_AVX512, 128, 784, 0.31, 1, why, sizeof(why)));
	ck_assert_msg(strncmp(why, "dense: 31.0% zeros is below the ", 32) == 0, "%s", why);
	ck_assert_ptr_nonnull(strstr(why, "% break-even"));
	ck_assert(!tm_sparse_decide(TM_ISA_AVX2, 128, 784, 0.31, 64, why, sizeof(why)));
	ck_assert(!tm_sparse_decide(TM_ISA_AVX512, 128, 784, 0.0, 1, NULL, 0));
	/* everything pruned is always sparse */
	ck_assert(tm_sparse_decide(TM_ISA_AVX512, 10, 64, 1.0, 256, NULL, 0));
	/* int8: against dense int8, which is much faster than dense float */
	ck_assert(!tm_sparse_decide_q8(TM_ISA_AVX512, 128, 784, 0.8, 1, why, sizeof(why)));
	ck_assert_str_eq(why, "dense int8: 80.0% zeros is below the 90% break-even");
	ck_assert(tm_sparse_decide_q8(TM_ISA_AVX512, 128, 784, 0.95, 1, why, sizeof(why)));
	ck_assert_str_eq(why, "sparse win16 int8, 95.0% zeros (break-even 90%)");
	ck_assert(tm_sparse_decide_q8(TM_ISA_PORTABLE, 128, 784, 0.8, 1, why, sizeof(why)));
	ck_assert_ptr_nonnull(strstr(why, "sparse csr int8"));
	/* the break-even is a fraction and does not fall with the batch */
	for (int isa = TM_ISA_PORTABLE; isa <= TM_ISA_AVX512; isa++) {
		double b1 = tm_sparse_break_even((tm_isa)isa, 128, 784, 1);
		double b64 = tm_sparse_break_even((tm_isa)isa, 128, 784, 64);
		ck_assert(b1 > 0.0 && b1 < 1.0);
		ck_assert(b64 >= b1 && b64 < 1.0);
		double q1 = tm_sparse_break_even_q8((tm_isa)isa, 128, 784, 1);
		ck_assert(q1 > 0.0 && q1 < 1.0);
		ck_assert(tm_sparse_break_even_q8((tm_isa)isa, 128, 784, 64) >= q1);
	}
}
END_TEST

Suite *sparse_suite(void)
{
	Suite *s = suite_create("sparse");
	TCase *tp = tcase_create("prune");
	tcase_set_timeout(tp, 60);
	tcase_add_test(tp, test_prune_exact_count);
	tcase_add_test(tp, test_prune_ties);
	tcase_add_test(tp, test_prune_global);
	tcase_add_test(tp, test_prune_errors);
	tcase_add_test(tp, test_mask_reapply);
	suite_add_tcase(s, tp);
	TCase *ts = tcase_create("storage");
	tcase_set_timeout(ts, 60);
	tcase_add_test(ts, test_storage_bytes_and_round_trip);
	tcase_add_test(ts, test_storage_wide_k);
	tcase_add_test(ts, test_sparse_new_errors);
	suite_add_tcase(s, ts);
	TCase *tl = tcase_create("linear");
	tcase_set_timeout(tl, 120);
	tcase_add_test(tl, test_linear_odd_shapes);
	tcase_add_test(tl, test_linear_mlp_layer);
	tcase_add_test(tl, test_linear_empty_rows_and_columns);
	tcase_add_test(tl, test_linear_batch_independent);
	tcase_add_test(tl, test_linear_x_alignment);
	tcase_add_test(tl, test_threads_bit_identical);
	suite_add_tcase(s, tl);
	TCase *td = tcase_create("decide");
	tcase_add_test(td, test_decide);
	suite_add_tcase(s, td);
	return s;
}
