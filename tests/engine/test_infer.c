/* test_infer.c: the infer suite.  tm_infer against the plain model it was built from: FP32
 * inference equals tm_model_forward; INT8 stays close to FP32 (argmax agreement, bounded
 * logit error) on small models trained quickly on real Fashion-MNIST images; unstructured
 * pruning equals the same pruning applied to the dense model, at 0, 50, 90 and 99%, per layer
 * and global; structured pruning equals the dense network with the same neurons / filters
 * zeroed, and removes those of smallest L1 norm; fine-tuning with a fixed mask keeps pruned
 * weights at exactly zero; sizes come from the allocations; every kernel set gives the same
 * result; the profile has one entry per layer; bad options are rejected with a message. */
#include "tests.h"

#include "engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define TRAIN_SUBSET 2000
#else
#define TRAIN_SUBSET 6000
#endif

// ---- helpers ----

static tm_dataset train_set, test_set;

static void load_data(void)
{
	tm_err err = {0};
	if (tm_fmnist_load(&train_set, NULL, true, &err) != 0 ||
	    tm_fmnist_load(&test_set, NULL, false, &err) != 0) {
		fprintf(stderr, "infer tests: %s\n", err.msg);
		abort();
	}
}

static void free_data(void)
{
	tm_dataset_release(&train_set);
	tm_dataset_release(&test_set);
}

static tm_dataset head(const tm_dataset *ds, int n)
{
	tm_dataset v = *ds;
	v.n = n < ds->n ? n : ds->n;
	return v;
}

static tm_ctx best_ctx(void)
{
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	return (tm_ctx){ .isa = tm_isa_best(&cpu), .pool = NULL };
}

static tm_model *new_model(const tm_model_spec *s, uint64_t seed)
{
	tm_err err = {0};
	tm_model *m = tm_model_new(s, &err);
	ck_assert_msg(m != NULL, "model: %s", err.msg);
	tm_model_randomize(m, seed);
	return m;
}

static tm_model *mlp(int n, const int *hidden, uint64_t seed)
{
	tm_model_spec s;
	tm_model_spec_mlp(&s, n, hidden);
	return new_model(&s, seed);
}

static tm_model *cnn(int c1, int c2, uint64_t seed)
{
	tm_model_spec s;
	tm_model_spec_cnn(&s, c1, c2);
	return new_model(&s, seed);
}

/* m trained for one epoch on the first n training images. */
static void train_quick(tm_model *m, int n)
{
	tm_ctx ctx = best_ctx();
	tm_train_config cfg;
	tm_train_config_default(&cfg);
	cfg.epochs = 1;
	cfg.batch = 64;
	cfg.lr = 2e-3f;
	cfg.log_every = 0;
	tm_dataset tr = head(&train_set, n);
	tm_err err = {0};
	ck_assert_msg(tm_train(m, &ctx, &tr, NULL, &cfg, NULL, NULL, &err) == 0, "train: %s",
		      err.msg);
}

static tm_model *copy_model(const tm_model *m)
{
	tm_err err = {0};
	tm_model *c = tm_model_new(&m->spec, &err);
	ck_assert_msg(c != NULL, "copy: %s", err.msg);
	memcpy(c->params, m->params, m->n_alloc * sizeof(float));
	return c;
}

static tm_infer *build(const tm_model *m, const tm_infer_opts *o, const tm_ctx *ctx)
{
	tm_err err = {0};
	tm_infer *inf = NULL;
	tm_dataset tr = head(&train_set, TRAIN_SUBSET);
	int rc = tm_infer_new(m, o, ctx, &tr, NULL, &inf, &err);
	ck_assert_msg(rc == 0 && inf != NULL, "tm_infer_new: %s", err.msg);
	return inf;
}

/* Logits of the n test images starting at off, in batches of the infer's max_batch mb. */
static float *infer_logits(tm_infer *inf, const tm_ctx *ctx, int mb, int off, int n)
{
	float *y = malloc(sizeof(float) * 10 * (size_t)n);
	size_t in = (size_t)test_set.rows * test_set.cols;
	tm_err err = {0};
	for (int i = 0; i < n; i += mb) {
		int nb = n - i < mb ? n - i : mb;
		ck_assert_msg(tm_infer_forward(inf, ctx, nb, test_set.images + in * (off + i),
					       y + 10 * (size_t)i, NULL, &err) == 0,
			      "forward: %s", err.msg);
	}
	return y;
}

static float *model_logits(tm_model *m, const tm_ctx *ctx, int off, int n)
{
	tm_err err = {0};
	ck_assert(tm_model_plan(m, 64, false, &err) == 0);
	float *y = malloc(sizeof(float) * 10 * (size_t)n);
	size_t in = (size_t)test_set.rows * test_set.cols;
	for (int i = 0; i < n; i += 64) {
		int nb = n - i < 64 ? n - i : 64;
		ck_assert(tm_model_forward(m, ctx, nb, test_set.images + in * (off + i),
					   y + 10 * (size_t)i, &err) == 0);
	}
	return y;
}

static int argmax10(const float *v)
{
	int b = 0;
	for (int i = 1; i < 10; i++)
		if (v[i] > v[b])
			b = i;
	return b;
}

static double agreement(const float *a, const float *b, int n)
{
	int same = 0;
	for (int i = 0; i < n; i++)
		same += argmax10(a + 10 * i) == argmax10(b + 10 * i);
	return (double)same / n;
}

/* Largest |a - b| relative to the largest |b|. */
static double rel_to_max(const float *a, const float *b, size_t n)
{
	double d = 0, mx = 1e-12;
	for (size_t i = 0; i < n; i++) {
		d = fmax(d, fabs((double)a[i] - b[i]));
		mx = fmax(mx, fabs((double)b[i]));
	}
	return d / mx;
}

// ---- FP32 ----

START_TEST(test_fp32_equals_model)
{
	tm_ctx ctx = best_ctx();
	tm_model *models[2] = { mlp(2, (const int[]){ 128, 64 }, 3), cnn(6, 10, 4) };
	for (int mi = 0; mi < 2; mi++) {
		for (int mb = 1; mb <= 7; mb += 6) {
			tm_infer_opts o;
			tm_infer_opts_default(&o);
			o.max_batch = mb;
			tm_infer *inf = build(models[mi], &o, &ctx);
			float *a = infer_logits(inf, &ctx, mb, 100, 21);
			float *b = model_logits(models[mi], &ctx, 100, 21);
			double d = tt_max_rel_diff(a, b, 210);
			ck_assert_msg(d < 1e-4, "model %d max_batch %d: rel diff %g", mi, mb, d);
			tm_infer_stats st;
			tm_infer_get_stats(inf, &st);
			ck_assert_int_eq(st.params, tm_model_params(models[mi]));
			ck_assert_int_eq(st.flops, tm_model_flops(models[mi]));
			/* stored bytes: at least the floats, panels may pad */
			ck_assert_uint_ge(st.bytes, (size_t)st.params * sizeof(float));
			ck_assert_uint_le(st.bytes, (size_t)st.params * sizeof(float) * 2);
			free(a);
			free(b);
			tm_infer_free(inf);
		}
		tm_model_free(models[mi]);
	}
}
END_TEST

/* A sample's logits do not depend on the other samples of the batch. */
START_TEST(test_batch_independent)
{
	tm_ctx ctx = best_ctx();
	tm_model *m = mlp(2, (const int[]){ 64, 32 }, 9);
	tm_infer_opts o;
	tm_infer_opts_default(&o);
	o.max_batch = 16;
	o.quantize = true;
	o.calib_samples = 256;
	tm_infer *inf = build(m, &o, &ctx);
	float *all = infer_logits(inf, &ctx, 16, 0, 16);
	float *one = infer_logits(inf, &ctx, 1, 0, 16);
	ck_assert_msg(tt_max_rel_diff(all, one, 160) < 1e-5, "batch changes results");
	free(all);
	free(one);
	tm_infer_free(inf);
	tm_model_free(m);
}
END_TEST

// ---- INT8 ----

/* max_bytes: int8 stored bytes over FP32 stored bytes (per-channel scales, corrections and
 * biases weigh more in tiny layers, and int8 rows are padded to 16). */
static void int8_case(tm_model *m, const char *what, double min_agree, double max_err,
		      double max_bytes)
{
	tm_ctx ctx = best_ctx();
	tm_infer_opts o;
	tm_infer_opts_default(&o);
	o.max_batch = 32;
	tm_infer *f = build(m, &o, &ctx);
	o.quantize = true;
	o.calib_samples = 512;
	tm_infer *q = build(m, &o, &ctx);
	enum { N = 500 };
	float *a = infer_logits(f, &ctx, 32, 0, N);
	float *b = infer_logits(q, &ctx, 32, 0, N);
	double agree = agreement(a, b, N), err = rel_to_max(b, a, 10 * N);
	ck_assert_msg(agree >= min_agree, "%s: int8 argmax agreement %.3f < %.3f", what, agree,
		      min_agree);
	ck_assert_msg(err <= max_err, "%s: int8 logit error %.4f of the largest logit > %.4f",
		      what, err, max_err);
	ck_assert_msg(err > 0.0, "%s: int8 output identical to fp32: not quantized?", what);
	/* every weight layer really is int8, but a conv with a patch shorter than 32 (the first
	 * conv, k = 9), which stays FP32 and says so */
	for (int i = 0; i < tm_infer_n_layers(q); i++) {
		const tm_infer_layer *l = tm_infer_layer_at(q, i);
		if (l->op == TM_OP_CONV3X3 && l->in_c * 9 < 32)
			ck_assert_msg(strstr(l->kernel, "f32") && strstr(l->kernel, "does not pay"),
				      "%s layer %s: '%s'", what, l->name, l->kernel);
		else if (l->op == TM_OP_LINEAR || l->op == TM_OP_CONV3X3)
			ck_assert_msg(strstr(l->kernel, "int8") != NULL, "%s layer %s: '%s'", what,
				      l->name, l->kernel);
	}
	tm_infer_stats sf, sq;
	tm_infer_get_stats(f, &sf);
	tm_infer_get_stats(q, &sq);
	ck_assert_msg(sq.bytes < max_bytes * sf.bytes, "%s: int8 %zu bytes vs fp32 %zu", what,
		      sq.bytes, sf.bytes);
	ck_assert_int_eq(sq.params, sf.params);
	free(a);
	free(b);
	tm_infer_free(f);
	tm_infer_free(q);
}

START_TEST(test_int8_mlp_close)
{
	tm_model *m = mlp(2, (const int[]){ 128, 64 }, 5);
	train_quick(m, TRAIN_SUBSET);
	int8_case(m, "mlp", 0.97, 0.05, 0.3);
	tm_model_free(m);
}
END_TEST

START_TEST(test_int8_cnn_close)
{
	tm_model *m = cnn(8, 16, 6);
	train_quick(m, TRAIN_SUBSET / 3);
	int8_case(m, "cnn", 0.97, 0.05, 0.45);
	tm_model_free(m);
}
END_TEST

/* Percentile calibration and per-tensor scales work too, and differ from min/max. */
START_TEST(test_int8_options)
{
	tm_ctx ctx = best_ctx();
	tm_model *m = mlp(1, (const int[]){ 64 }, 8);
	train_quick(m, 3000);
	tm_infer_opts o;
	tm_infer_opts_default(&o);
	o.max_batch = 32;
	tm_infer *f = build(m, &o, &ctx);
	o.quantize = true;
	o.calib_samples = 300;
	o.calib = TM_QCALIB_PERCENTILE;
	o.calib_percentile = 99.9;
	tm_infer *p = build(m, &o, &ctx);
	o.calib = TM_QCALIB_MINMAX;
	o.gran = TM_QGRAN_TENSOR;
	tm_infer *t = build(m, &o, &ctx);
	float *a = infer_logits(f, &ctx, 32, 0, 320);
	float *b = infer_logits(p, &ctx, 32, 0, 320);
	float *c = infer_logits(t, &ctx, 32, 0, 320);
	ck_assert_msg(agreement(a, b, 320) > 0.95, "percentile calibration");
	ck_assert_msg(agreement(a, c, 320) > 0.95, "per-tensor scales");
	ck_assert_msg(memcmp(b, c, sizeof(float) * 3200) != 0, "options had no effect");
	free(a);
	free(b);
	free(c);
	tm_infer_free(f);
	tm_infer_free(p);
	tm_infer_free(t);
	tm_model_free(m);
}
END_TEST

// ---- unstructured pruning ----

static void prune_dense(tm_model *m, double sp, bool global)
{
	tm_err err = {0};
	tm_prune_tensor t[TM_MODEL_MAX_LAYERS];
	int nt = 0;
	for (int i = 0; i < m->n_layers; i++)
		if (m->layers[i].w_len)
			t[nt++] = (tm_prune_tensor){ .w = m->layers[i].w, .len = m->layers[i].w_len };
	if (global) {
		ck_assert(tm_prune_magnitude_global(t, nt, sp, NULL, &err) == 0);
		return;
	}
	for (int i = 0; i < nt; i++)
		ck_assert(tm_prune_magnitude(t[i].w, t[i].len, sp, NULL, NULL, &err) == 0);
}

START_TEST(test_unstructured_equals_masked)
{
	static const double sps[] = { 0.0, 0.5, 0.9, 0.99 };
	tm_ctx ctx = best_ctx();
	tm_model *src = mlp(2, (const int[]){ 128, 64 }, 11);
	tm_model *csrc = cnn(6, 12, 12);
	for (int g = 0; g < 2; g++)
		for (size_t s = 0; s < sizeof(sps) / sizeof(sps[0]); s++) {
			for (int mi = 0; mi < 2; mi++) {
				tm_model *m = mi ? csrc : src;
				tm_model *ref = copy_model(m);
				prune_dense(ref, sps[s], g);
				for (int mb = 1; mb <= 8; mb += 7) {
					tm_infer_opts o;
					tm_infer_opts_default(&o);
					o.max_batch = mb;
					o.sparsity = sps[s];
					o.prune_global = g;
					tm_infer *inf = build(m, &o, &ctx);
					float *a = infer_logits(inf, &ctx, mb, 0, 16);
					float *b = model_logits(ref, &ctx, 0, 16);
					double d = tt_max_rel_diff(a, b, 160);
					ck_assert_msg(d < 1e-4, "model %d sparsity %.2f global %d "
						      "batch %d: rel diff %g", mi, sps[s], g, mb, d);
					tm_infer_stats st;
					tm_infer_get_stats(inf, &st);
					int64_t nz = 0;
					for (int i = 0; i < ref->n_layers; i++) {
						const tm_layer *l = &ref->layers[i];
						for (size_t j = 0; j < l->w_len; j++)
							nz += l->w[j] != 0.0f;
						for (size_t j = 0; j < l->b_len; j++)
							nz += l->b[j] != 0.0f;
					}
					ck_assert_int_eq(st.nonzero_params, nz);
					/* the MLP's big layer runs sparse at 90% (every kernel set) */
					if (mi == 0 && sps[s] >= 0.9 && !g)
						ck_assert_msg(strstr(tm_infer_layer_at(inf, 0)->kernel,
								     "sparse") != NULL, "'%s'",
							      tm_infer_layer_at(inf, 0)->kernel);
					if (sps[s] >= 0.9 && !g && mi == 0) {
						tm_infer_opts d0;
						tm_infer_opts_default(&d0);
						d0.max_batch = mb;
						tm_infer *dense = build(m, &d0, &ctx);
						tm_infer_stats sd;
						tm_infer_get_stats(dense, &sd);
						ck_assert_msg(st.bytes < sd.bytes / 2,
							      "sparse %zu bytes vs dense %zu", st.bytes,
							      sd.bytes);
						tm_infer_free(dense);
					}
					free(a);
					free(b);
					tm_infer_free(inf);
				}
				tm_model_free(ref);
			}
		}
	tm_model_free(src);
	tm_model_free(csrc);
}
END_TEST

/* Low sparsity runs dense and says why. */
START_TEST(test_unstructured_dense_fallback)
{
	tm_ctx ctx = { .isa = TM_ISA_PORTABLE };
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	ctx.isa = tm_isa_best(&cpu);
	tm_model *m = mlp(2, (const int[]){ 128, 64 }, 13);
	tm_infer_opts o;
	tm_infer_opts_default(&o);
	o.max_batch = 64;
	o.sparsity = 0.2;
	tm_infer *inf = build(m, &o, &ctx);
	const tm_infer_layer *l = tm_infer_layer_at(inf, 0);
	ck_assert_msg(strstr(l->kernel, "dense") && strstr(l->kernel, "break-even"), "'%s'",
		      l->kernel);
	tm_infer_free(inf);
	o.quantize = true;
	o.sparsity = 0.5;
	inf = build(m, &o, &ctx);
	l = tm_infer_layer_at(inf, 0);
	ck_assert_msg(strstr(l->kernel, "dense int8") && strstr(l->kernel, "break-even"), "'%s'",
		      l->kernel);
	tm_infer_free(inf);
	/* prune then quantize at 99%: sparse int8, close to the pruned float model */
	o.max_batch = 1;
	o.sparsity = 0.99;
	inf = build(m, &o, &ctx);
	l = tm_infer_layer_at(inf, 0);
	ck_assert_msg(strstr(l->kernel, "sparse") && strstr(l->kernel, "int8"), "'%s'", l->kernel);
	tm_model *ref = copy_model(m);
	prune_dense(ref, 0.99, false);
	float *a = infer_logits(inf, &ctx, 1, 0, 50);
	float *b = model_logits(ref, &ctx, 0, 50);
	ck_assert_msg(rel_to_max(a, b, 500) < 0.05, "sparse int8 error %g", rel_to_max(a, b, 500));
	free(a);
	free(b);
	tm_model_free(ref);
	tm_infer_free(inf);
	tm_model_free(m);
}
END_TEST

// ---- structured pruning ----

static double row_l1(const tm_layer *l, int r)
{
	size_t row = l->w_len / (size_t)l->out_c;
	double s = 0;
	for (size_t j = 0; j < row; j++)
		s += fabsf(l->w[(size_t)r * row + j]);
	return s;
}

static void structured_case(tm_model *m, double sp, const int *expect_widths, int n_widths)
{
	tm_ctx ctx = best_ctx();
	tm_infer_opts o;
	tm_infer_opts_default(&o);
	o.max_batch = 4;
	o.sparsity = sp;
	o.structured = true;
	tm_infer *inf = build(m, &o, &ctx);
	const tm_model_spec *s = tm_infer_spec(inf);
	if (s->family == TM_FAMILY_MLP) {
		ck_assert_int_eq(s->n_hidden, n_widths);
		for (int i = 0; i < n_widths; i++)
			ck_assert_int_eq(s->hidden[i], expect_widths[i]);
	} else {
		ck_assert_int_eq(s->c1, expect_widths[0]);
		ck_assert_int_eq(s->c2, expect_widths[1]);
	}
	/* the dense network with the removed units zeroed (weights and bias) */
	tm_model *ref = copy_model(m);
	for (int i = 0; i < ref->n_layers; i++) {
		tm_layer *l = &ref->layers[i];
		if (!l->w_len)
			continue;
		int n = 0;
		const int *kept = tm_infer_kept(inf, i, &n);
		ck_assert_ptr_nonnull(kept);
		ck_assert_int_eq(n, tm_infer_layer_at(inf, i)->out_c);
		uint8_t *keep = calloc((size_t)l->out_c, 1);
		for (int r = 0; r < n; r++)
			keep[kept[r]] = 1;
		double min_kept = 1e30, max_removed = -1;
		size_t row = l->w_len / (size_t)l->out_c;
		for (int r = 0; r < l->out_c; r++) {
			double nrm = row_l1(&m->layers[i], r);
			if (keep[r]) {
				min_kept = fmin(min_kept, nrm);
				continue;
			}
			max_removed = fmax(max_removed, nrm);
			memset(l->w + (size_t)r * row, 0, row * sizeof(float));
			l->b[r] = 0.0f;
		}
		ck_assert_msg(max_removed <= min_kept, "layer %d removed a unit of L1 %g, kept %g",
			      i, max_removed, min_kept);
		free(keep);
	}
	float *a = infer_logits(inf, &ctx, 4, 0, 20);
	float *b = model_logits(ref, &ctx, 0, 20);
	double d = tt_max_rel_diff(a, b, 200);
	ck_assert_msg(d < 1e-4, "structured %.2f: rel diff %g vs the masked dense network", sp, d);
	tm_infer_stats st;
	tm_infer_get_stats(inf, &st);
	ck_assert_int_lt(st.params, tm_model_params(m));
	ck_assert_int_lt(st.flops, tm_model_flops(m));
	free(a);
	free(b);
	tm_model_free(ref);
	tm_infer_free(inf);
}

START_TEST(test_structured_mlp)
{
	tm_model *m = mlp(2, (const int[]){ 128, 64 }, 21);
	train_quick(m, 2000); /* trained weights: the L1 norms differ more */
	structured_case(m, 0.5, (const int[]){ 64, 32 }, 2);
	structured_case(m, 0.9, (const int[]){ 13, 6 }, 2);
	tm_model_free(m);
	tm_model *m3 = mlp(3, (const int[]){ 17, 3, 9 }, 22);
	structured_case(m3, 0.99, (const int[]){ 1, 1, 1 }, 3);
	tm_model_free(m3);
}
END_TEST

START_TEST(test_structured_cnn)
{
	tm_model *m = cnn(8, 12, 23);
	structured_case(m, 0.5, (const int[]){ 4, 6 }, 2);
	structured_case(m, 0.25, (const int[]){ 6, 9 }, 2);
	tm_model_free(m);
}
END_TEST

/* Structured pruning then INT8: the smaller model, quantized. */
START_TEST(test_structured_int8)
{
	tm_ctx ctx = best_ctx();
	tm_model *m = mlp(2, (const int[]){ 128, 64 }, 24);
	train_quick(m, 3000);
	tm_infer_opts o;
	tm_infer_opts_default(&o);
	o.max_batch = 1;
	o.sparsity = 0.5;
	o.structured = true;
	tm_infer *f = build(m, &o, &ctx);
	o.quantize = true;
	tm_infer *q = build(m, &o, &ctx);
	float *a = infer_logits(f, &ctx, 1, 0, 200);
	float *b = infer_logits(q, &ctx, 1, 0, 200);
	ck_assert_msg(agreement(a, b, 200) > 0.95, "agreement %g", agreement(a, b, 200));
	ck_assert_int_eq(tm_infer_spec(q)->hidden[0], 64);
	free(a);
	free(b);
	tm_infer_free(f);
	tm_infer_free(q);
	tm_model_free(m);
}
END_TEST

// ---- fine-tuning ----

START_TEST(test_finetune_mask_fixed)
{
	tm_ctx ctx = best_ctx();
	tm_model *m = mlp(2, (const int[]){ 64, 32 }, 31);
	tm_prune_tensor t[3];
	uint8_t *masks[TM_MODEL_MAX_LAYERS] = { 0 };
	int nt = 0;
	for (int i = 0; i < m->n_layers; i++)
		if (m->layers[i].w_len) {
			masks[i] = malloc(m->layers[i].w_len);
			t[nt++] = (tm_prune_tensor){ .w = m->layers[i].w, .len = m->layers[i].w_len,
						     .mask = masks[i] };
		}
	tm_err err = {0};
	ck_assert(tm_prune_magnitude_global(t, nt, 0.8, NULL, &err) == 0);
	tm_model *before = copy_model(m);
	tm_train_config cfg;
	tm_train_config_default(&cfg);
	cfg.epochs = 1;
	cfg.batch = 32;
	cfg.log_every = 0;
	cfg.weight_decay = 0.01f;
	cfg.optim = TM_OPTIM_ADAMW;
	cfg.masks = (const uint8_t *const *)masks;
	tm_dataset tr = head(&train_set, 1000);
	ck_assert_msg(tm_train(m, &ctx, &tr, NULL, &cfg, NULL, NULL, &err) == 0, "%s", err.msg);
	size_t changed = 0, kept = 0;
	for (int i = 0; i < m->n_layers; i++) {
		const tm_layer *l = &m->layers[i];
		for (size_t j = 0; j < l->w_len; j++) {
			if (!masks[i][j]) {
				ck_assert_msg(l->w[j] == 0.0f, "layer %d weight %zu pruned but %g", i,
					      j, (double)l->w[j]);
				continue;
			}
			kept++;
			changed += l->w[j] != before->layers[i].w[j];
		}
	}
	ck_assert_msg(changed > kept / 2, "fine-tuning changed only %zu of %zu kept weights",
		      changed, kept);
	/* without masks the same training does move pruned weights (the test can fail) */
	tm_model *free_run = copy_model(before);
	cfg.masks = NULL;
	ck_assert(tm_train(free_run, &ctx, &tr, NULL, &cfg, NULL, NULL, &err) == 0);
	ck_assert_double_lt(tm_sparsity(free_run->layers[0].w, free_run->layers[0].w_len), 0.5);
	tm_model_free(free_run);
	tm_model_free(before);
	for (int i = 0; i < TM_MODEL_MAX_LAYERS; i++)
		free(masks[i]);
	tm_model_free(m);
}
END_TEST

/* Through tm_infer: pruned + fine-tuned keeps exactly the pruned count of zeros, and learns. */
START_TEST(test_finetune_infer)
{
	tm_ctx ctx = best_ctx();
	tm_model *m = mlp(2, (const int[]){ 64, 32 }, 32);
	train_quick(m, 3000);
	tm_infer_opts o;
	tm_infer_opts_default(&o);
	o.max_batch = 50;
	o.sparsity = 0.9;
	o.prune_global = true;
	tm_infer *p = build(m, &o, &ctx);
	o.finetune_epochs = 1;
	tm_infer *ft = build(m, &o, &ctx);
	tm_infer_stats sp, sf;
	tm_infer_get_stats(p, &sp);
	tm_infer_get_stats(ft, &sf);
	size_t weights = 0;
	for (int i = 0; i < m->n_layers; i++)
		weights += m->layers[i].w_len;
	int64_t biases = sf.params - (int64_t)weights;
	int64_t max_nz = (int64_t)(weights - tm_prune_count(weights, 0.9)) + biases;
	ck_assert_int_le(sp.nonzero_params, max_nz);
	ck_assert_int_le(sf.nonzero_params, max_nz);
	ck_assert_int_ge(sf.nonzero_params, max_nz - 20);
	tm_dataset te = head(&test_set, 1000);
	double ap = 0, af = 0;
	tm_err err = {0};
	ck_assert(tm_infer_evaluate(p, &ctx, &te, &ap, &err) == 0);
	ck_assert(tm_infer_evaluate(ft, &ctx, &te, &af, &err) == 0);
	ck_assert_msg(af > ap, "fine-tuning did not help: %.3f -> %.3f", ap, af);
	tm_infer_free(p);
	tm_infer_free(ft);
	tm_model_free(m);
}
END_TEST

// ---- kernel sets ----

START_TEST(test_kernel_sets_agree)
{
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	tm_model *ms[2] = { mlp(2, (const int[]){ 128, 64 }, 41), cnn(8, 16, 42) };
	train_quick(ms[0], 2000);
	train_quick(ms[1], 600);
	for (int mi = 0; mi < 2; mi++)
		for (int v = 0; v < 4; v++) {
			/* v: fp32, int8, sparse 90% f32, sparse 95% int8 */
			tm_infer_opts o;
			tm_infer_opts_default(&o);
			o.max_batch = 3;
			o.quantize = v == 1 || v == 3;
			o.sparsity = v == 2 ? 0.9 : v == 3 ? 0.95 : 0.0;
			tm_ctx pc = { .isa = TM_ISA_PORTABLE };
			tm_infer *ref = build(ms[mi], &o, &pc);
			float *r = infer_logits(ref, &pc, 3, 0, 12);
			for (int isa = TM_ISA_AVX2; isa <= TM_ISA_AVX512; isa++) {
				if (!tm_isa_supported(&cpu, (tm_isa)isa))
					continue;
				tm_ctx c = { .isa = (tm_isa)isa };
				/* the same layers run with other kernels: int8 sums are exact */
				float *a = infer_logits(ref, &c, 3, 0, 12);
				double d = tt_max_rel_diff(a, r, 120);
				ck_assert_msg(d < (o.quantize ? 1e-6 : 1e-4), "model %d variant %d "
					      "isa %s on portable layers: %g", mi, v,
					      tm_isa_name((tm_isa)isa), d);
				/* layers built for the kernel set */
				tm_infer *inf = build(ms[mi], &o, &c);
				float *b = infer_logits(inf, &c, 3, 0, 12);
				d = rel_to_max(b, r, 120);
				ck_assert_msg(d < (o.quantize ? 0.02 : 1e-4), "model %d variant %d "
					      "isa %s: %g", mi, v, tm_isa_name((tm_isa)isa), d);
				free(a);
				free(b);
				tm_infer_free(inf);
			}
			free(r);
			tm_infer_free(ref);
		}
	tm_model_free(ms[0]);
	tm_model_free(ms[1]);
}
END_TEST

// ---- profile and stats ----

START_TEST(test_profile)
{
	tm_ctx ctx = best_ctx();
	tm_model *m = cnn(4, 8, 51);
	tm_infer_opts o;
	tm_infer_opts_default(&o);
	o.max_batch = 2;
	tm_infer *inf = build(m, &o, &ctx);
	tm_prof prof;
	tm_prof_reset(&prof);
	float y[20];
	tm_err err = {0};
	for (int r = 0; r < 3; r++)
		ck_assert(tm_infer_forward(inf, &ctx, 2, test_set.images, y, &prof, &err) == 0);
	ck_assert_int_eq(prof.n, tm_infer_n_layers(inf));
	ck_assert_int_eq(prof.n, m->n_layers);
	int64_t flops = 0;
	for (int i = 0; i < prof.n; i++) {
		const tm_infer_layer *l = tm_infer_layer_at(inf, i);
		ck_assert_str_eq(prof.e[i].layer, l->name);
		ck_assert_str_eq(prof.e[i].op, tm_op_name(l->op));
		ck_assert_int_eq(prof.e[i].calls, 3);
		ck_assert_int_ge(prof.e[i].time_ns, 0);
		if (l->op == TM_OP_CONV3X3 || l->op == TM_OP_LINEAR) {
			ck_assert_int_gt(prof.e[i].time_ns, 0);
			/* weights as stored plus activations in and out, per call */
			ck_assert_int_gt(prof.e[i].bytes, 3 * (int64_t)l->bytes);
		}
		flops += prof.e[i].flops;
	}
	ck_assert_int_eq(flops, 3 * 2 * tm_model_flops(m));
	/* hand-computed: conv1 1->4 on 28x28 -> 26x26 */
	ck_assert_int_eq(tm_infer_layer_at(inf, 0)->flops, (2 * 9 * 4 + 4) * 26 * 26);
	ck_assert_ptr_null(tm_infer_layer_at(inf, -1));
	ck_assert_ptr_null(tm_infer_layer_at(inf, m->n_layers));
	ck_assert_int_eq(tm_infer_forward(inf, &ctx, 3, test_set.images, y, NULL, &err),
			 TM_EINVAL);
	tm_infer_free(inf);
	tm_model_free(m);
}
END_TEST

// ---- errors ----

START_TEST(test_bad_options)
{
	tm_ctx ctx = best_ctx();
	tm_model *m = mlp(1, (const int[]){ 16 }, 61);
	tm_dataset tr = head(&train_set, 100);
	static const struct {
		const char *field;
		bool with_train;
	} cases[] = {
		{ "sparsity", true },          /* 1.5 */
		{ "max_batch", true },         /* 0 */
		{ "train", false },            /* quantize without a training set */
		{ "train", false },            /* fine-tune without a training set */
		{ "calib_percentile", true },  /* 0 */
		{ "finetune_epochs", true },   /* -1 */
		{ "sparsity", true },          /* NaN */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		tm_infer_opts o;
		tm_infer_opts_default(&o);
		switch (i) {
		case 0: o.sparsity = 1.5; break;
		case 1: o.max_batch = 0; break;
		case 2: o.quantize = true; break;
		case 3: o.finetune_epochs = 1; break;
		case 4: o.quantize = true; o.calib = TM_QCALIB_PERCENTILE;
			o.calib_percentile = 0; break;
		case 5: o.finetune_epochs = -1; break;
		case 6: o.sparsity = NAN; break;
		}
		tm_err err = {0};
		tm_infer *inf = (tm_infer *)&err; /* must be reset to NULL */
		int rc = tm_infer_new(m, &o, &ctx, cases[i].with_train ? &tr : NULL, NULL, &inf,
				      &err);
		ck_assert_int_eq(rc, TM_EINVAL);
		ck_assert_ptr_null(inf);
		ck_assert_str_eq(err.field, cases[i].field);
		ck_assert_msg(strlen(err.msg) > 10 && strstr(err.msg, "infer"), "case %zu: '%s'", i,
			      err.msg);
	}
	tm_model_free(m);
}
END_TEST

Suite *infer_suite(void)
{
	Suite *s = suite_create("infer");
	TCase *tc = tcase_create("infer");
	tcase_add_unchecked_fixture(tc, load_data, free_data);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_fp32_equals_model);
	tcase_add_test(tc, test_batch_independent);
	tcase_add_test(tc, test_int8_mlp_close);
	tcase_add_test(tc, test_int8_cnn_close);
	tcase_add_test(tc, test_int8_options);
	tcase_add_test(tc, test_unstructured_equals_masked);
	tcase_add_test(tc, test_unstructured_dense_fallback);
	tcase_add_test(tc, test_structured_mlp);
	tcase_add_test(tc, test_structured_cnn);
	tcase_add_test(tc, test_structured_int8);
	tcase_add_test(tc, test_finetune_mask_fixed);
	tcase_add_test(tc, test_finetune_infer);
	tcase_add_test(tc, test_kernel_sets_agree);
	tcase_add_test(tc, test_profile);
	tcase_add_test(tc, test_bad_options);
	suite_add_tcase(s, tc);
	return s;
}
