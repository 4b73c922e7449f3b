/* test_model.c: Check suite of engine/model.c: specs and their limits, parameter counts and
 * FLOPs against hand-computed values, the layer list, batched against one-by-one forward,
 * the whole-model backward against central finite differences (tiny MLP and CNN), and weight
 * files: save/load round trip with bit-identical logits, and wrong family / spec / shape /
 * missing or extra tensors rejected with a message naming them. */
#include "tests.h"

#include "engine.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- helpers ----

static tm_model *new_model(const tm_model_spec *s)
{
	tm_err err = {0};
	tm_model *m = tm_model_new(s, &err);
	ck_assert_msg(m != NULL, "tm_model_new: %s", err.msg);
	return m;
}

static tm_model *mlp(int n, const int *hidden)
{
	tm_model_spec s;
	tm_model_spec_mlp(&s, n, hidden);
	return new_model(&s);
}

static tm_model *cnn(int c1, int c2)
{
	tm_model_spec s;
	tm_model_spec_cnn(&s, c1, c2);
	return new_model(&s);
}

static void plan(tm_model *m, int max_batch, bool train)
{
	tm_err err = {0};
	ck_assert_msg(tm_model_plan(m, max_batch, train, &err) == 0, "plan: %s", err.msg);
}

static uint8_t *random_pixels(size_t n, uint64_t seed)
{
	tm_rng r;
	tm_rng_seed(&r, seed);
	uint8_t *p = malloc(n);
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)tm_rng_below(&r, 256);
	return p;
}

static size_t in_size(const tm_model *m)
{
	return (size_t)m->spec.in_c * m->spec.in_h * m->spec.in_w;
}

// ---- specs, counts, FLOPs ----

START_TEST(test_param_counts)
{
	static const struct {
		int family, n_hidden, hidden[3], c1, c2;
		int64_t params, flops;
	} cases[] = {
		/* 784*128+128 + 128*64+64 + 64*10+10; 2*784*128+128 + 2*128*64+64 + 2*64*10+10 */
		{TM_FAMILY_MLP, 2, {128, 64}, 0, 0, 109386, 218570},
		/* logistic regression: 784*10+10; 2*784*10+10 */
		{TM_FAMILY_MLP, 0, {0}, 0, 0, 7850, 15690},
		/* 784*300+300 + 300*100+100 + 100*50+50 + 50*10+10 */
		{TM_FAMILY_MLP, 3, {300, 100, 50}, 0, 0, 271160,
		 2 * 784 * 300 + 300 + 2 * 300 * 100 + 100 + 2 * 100 * 50 + 50 + 2 * 50 * 10 + 10},
		/* 32*1*9+32 + 64*32*9+64 + 1600*10+10;
		 * conv1 2*1*9*32*26*26 + 32*26*26, conv2 2*32*9*64*11*11 + 64*11*11, fc 2*1600*10+10 */
		{TM_FAMILY_CNN, 0, {0}, 32, 64, 34826, 411008 + 4468288 + 32010},
		/* 8*9+8 + 16*8*9+16 + 400*10+10 */
		{TM_FAMILY_CNN, 0, {0}, 8, 16, 5258,
		 (2 * 9 * 8 * 676 + 8 * 676) + (2 * 8 * 9 * 16 * 121 + 16 * 121) + (2 * 400 * 10 + 10)},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		tm_model *m = cases[i].family == TM_FAMILY_MLP ? mlp(cases[i].n_hidden, cases[i].hidden)
							       : cnn(cases[i].c1, cases[i].c2);
		ck_assert_int_eq(tm_model_params(m), cases[i].params);
		ck_assert_int_eq(tm_model_flops(m), cases[i].flops);
		ck_assert_uint_eq(tm_model_bytes(m), (size_t)cases[i].params * 4);
		ck_assert_uint_ge(m->n_alloc, (size_t)cases[i].params);
		tm_model_free(m);
	}
	ck_assert_int_eq(411008 + 4468288 + 32010, 4911306);
}
END_TEST

START_TEST(test_layers)
{
	tm_model *m = mlp(2, (const int[]){128, 64});
	static const char *const mlp_ops[] = {"linear", "relu", "linear", "relu", "linear"};
	ck_assert_int_eq(m->n_layers, 5);
	for (int i = 0; i < 5; i++) {
		char name[16];
		snprintf(name, sizeof(name), "%d", i);
		ck_assert_str_eq(m->layers[i].name, name);
		ck_assert_str_eq(tm_op_name(m->layers[i].op), mlp_ops[i]);
	}
	ck_assert_int_eq(m->layers[0].in_c, 784);
	ck_assert_int_eq(m->layers[0].act, TM_ACT_RELU);
	ck_assert(m->layers[1].fused);
	ck_assert_int_eq(m->layers[4].act, TM_ACT_NONE);
	ck_assert_uint_eq(m->layers[2].bytes, (128 * 64 + 64) * 4);
	/* One allocation: every tensor inside params, 64-byte aligned. */
	for (int i = 0; i < 5; i += 2) {
		ck_assert((uintptr_t)m->layers[i].w % 64 == 0);
		ck_assert(m->layers[i].w >= m->params && m->layers[i].b + m->layers[i].b_len <=
							  m->params + m->n_alloc);
	}
	tm_model_free(m);

	m = cnn(32, 64);
	static const char *const cnn_ops[] = {"conv3x3", "relu", "maxpool2", "conv3x3",
					      "relu", "maxpool2", "flatten", "linear"};
	static const int out_side[] = {26, 26, 13, 11, 11, 5, 1, 1};
	ck_assert_int_eq(m->n_layers, 8);
	for (int i = 0; i < 8; i++) {
		ck_assert_str_eq(tm_op_name(m->layers[i].op), cnn_ops[i]);
		ck_assert_int_eq(m->layers[i].out_h, out_side[i]);
	}
	ck_assert_int_eq(m->layers[6].out_c, 1600);
	ck_assert_int_eq(m->layers[7].in_c, 1600);
	ck_assert_int_eq(m->layers[7].flops, 32010);
	ck_assert_int_eq(m->layers[2].flops, 0);
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	tm_model_print(m, f);
	fclose(f);
	ck_assert_ptr_nonnull(strstr(buf, "cnn c1=32 c2=64"));
	ck_assert_ptr_nonnull(strstr(buf, "4911306"));
	free(buf);
	tm_model_free(m);
}
END_TEST

START_TEST(test_spec_limits)
{
	tm_model_spec s;
	tm_err err = {0};
	tm_model_spec_mlp(&s, 2, (const int[]){128, 0});
	ck_assert_ptr_null(tm_model_new(&s, &err));
	ck_assert_int_eq(err.code, TM_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "hidden[1] is 0"));
	tm_model_spec_mlp(&s, 2, (const int[]){128, 64});
	s.n_hidden = TM_MLP_MAX_HIDDEN + 1;
	ck_assert_int_eq(tm_model_spec_check(&s, &err), TM_EINVAL);
	tm_model_spec_cnn(&s, 0, 64);
	ck_assert_int_eq(tm_model_spec_check(&s, &err), TM_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "channels"));
	tm_model_spec_cnn(&s, 32, 64);
	s.in_h = 9;
	ck_assert_int_eq(tm_model_spec_check(&s, &err), TM_EINVAL);
	s.family = TM_FAMILY_TRANSFORMER;
	ck_assert_int_eq(tm_model_spec_check(&s, &err), TM_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "transformer"));
	tm_model_spec_mlp(&s, 2, (const int[]){4096, 4096});
	s.in_h = s.in_w = 256;
	s.in_c = 4;
	ck_assert_int_eq(tm_model_spec_check(&s, &err), TM_ELIMIT);
	ck_assert_int_eq(tm_model_spec_reference(&s, "mlp_sprint", &err), 0);
	ck_assert_int_eq(s.n_hidden, 2);
	ck_assert_int_eq(s.hidden[0], 128);
	ck_assert_int_eq(s.hidden[1], 64);
	ck_assert_int_eq(tm_model_spec_reference(&s, "cnn_marathon", &err), 0);
	ck_assert_int_eq(s.c1, 32);
	ck_assert_int_eq(s.c2, 64);
	ck_assert_int_eq(tm_model_spec_reference(&s, "nope", &err), TM_EINVAL);
	char buf[64];
	tm_model_spec_mlp(&s, 2, (const int[]){128, 64});
	tm_model_spec_str(&s, buf, sizeof(buf));
	ck_assert_str_eq(buf, "mlp 784-128-64-10");
}
END_TEST

START_TEST(test_randomize)
{
	tm_model *a = mlp(2, (const int[]){128, 64}), *b = mlp(2, (const int[]){128, 64});
	tm_model_randomize(a, 7);
	tm_model_randomize(b, 7);
	ck_assert(memcmp(a->params, b->params, a->n_alloc * sizeof(float)) == 0);
	tm_model_randomize(b, 8);
	ck_assert(memcmp(a->params, b->params, a->n_alloc * sizeof(float)) != 0);
	/* PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases. */
	for (int i = 0; i < a->n_layers; i++) {
		const tm_layer *l = &a->layers[i];
		if (!l->w_len)
			continue;
		float bound = 1.0f / sqrtf((float)(l->w_len / l->b_len)), mx = 0;
		double sum = 0;
		for (size_t j = 0; j < l->w_len; j++) {
			mx = fmaxf(mx, fabsf(l->w[j]));
			sum += l->w[j];
		}
		ck_assert_float_le(mx, bound);
		ck_assert_float_gt(mx, 0.95f * bound);
		ck_assert_double_lt(fabs(sum / l->w_len), 0.1 * bound);
		for (size_t j = 0; j < l->b_len; j++)
			ck_assert_float_le(fabsf(l->b[j]), bound);
	}
	tm_model_free(a);
	tm_model_free(b);
}
END_TEST

// ---- forward ----

static void check_batch_vs_single(tm_model *m, int n)
{
	tm_pool *pool = tm_pool_new(2);
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	tm_ctx multi = {.isa = tm_isa_best(&cpu), .pool = pool};
	tm_ctx single = {.isa = tm_isa_best(&cpu), .pool = NULL};
	tm_err err = {0};
	int classes = m->spec.n_classes;
	uint8_t *px = random_pixels((size_t)n * in_size(m), 3);
	float *batch = malloc((size_t)n * classes * sizeof(float));
	float *one = malloc((size_t)classes * sizeof(float));
	tm_model_randomize(m, 11);
	plan(m, n, false);
	ck_assert_int_eq(tm_model_forward(m, &multi, n, px, batch, &err), 0);
	ck_assert(memcmp(batch, m->logits, (size_t)n * classes * sizeof(float)) == 0);
	plan(m, 1, false);
	for (int i = 0; i < n; i++) {
		ck_assert_int_eq(tm_model_forward(m, &single, 1, px + (size_t)i * in_size(m), one,
						  &err), 0);
		double d = tt_max_rel_diff(batch + (size_t)i * classes, one, (size_t)classes);
		ck_assert_msg(d <= 1e-5, "sample %d of %d: batched and single logits differ by %g",
			      i, n, d);
	}
	/* A batch above the plan and a forward before any plan are refused. */
	ck_assert_int_eq(tm_model_forward(m, &single, 2, px, NULL, &err), TM_EINVAL);
	free(px);
	free(batch);
	free(one);
	tm_pool_free(pool);
}

START_TEST(test_forward_batch_mlp)
{
	tm_model *m = mlp(2, (const int[]){128, 64});
	check_batch_vs_single(m, 37);
	tm_model_free(m);
	m = mlp(3, (const int[]){33, 17, 5});
	check_batch_vs_single(m, 9);
	tm_model_free(m);
}
END_TEST

START_TEST(test_forward_batch_cnn)
{
	tm_model *m = cnn(32, 64);
	check_batch_vs_single(m, 13);
	tm_model_free(m);
	m = cnn(3, 5);
	check_batch_vs_single(m, 6);
	tm_model_free(m);
}
END_TEST

START_TEST(test_forward_state)
{
	tm_model *m = mlp(1, (const int[]){8});
	tm_ctx ctx = {0};
	tm_err err = {0};
	uint8_t px[784] = {0};
	ck_assert_int_eq(tm_model_forward(m, &ctx, 1, px, NULL, &err), TM_ESTATE);
	plan(m, 4, false);
	ck_assert_int_eq(tm_model_forward(m, &ctx, 0, px, NULL, &err), TM_EINVAL);
	float dl[10] = {0};
	ck_assert_int_eq(tm_model_backward(m, &ctx, 1, dl, &err), TM_ESTATE);
	ck_assert_ptr_null(m->grads);
	plan(m, 4, true);
	ck_assert_ptr_nonnull(m->grads);
	ck_assert_ptr_eq(m->layers[0].dw, m->grads);
	/* Preprocessing: (x / 255 - mean) / sd. */
	px[1] = 255;
	px[2] = 51;
	float x[784];
	tm_model_preprocess(m, 1, px, x);
	ck_assert_float_eq_tol(x[0], -0.2860f / 0.3530f, 1e-6f);
	ck_assert_float_eq_tol(x[1], (1.0f - 0.2860f) / 0.3530f, 1e-6f);
	ck_assert_float_eq_tol(x[2], (0.2f - 0.2860f) / 0.3530f, 1e-6f);
	tm_model_free(m);
}
END_TEST

// ---- backward ----

/* Mean cross-entropy of the model on (x, t), in double from the float logits. */
static double loss_of(tm_model *m, const tm_ctx *ctx, int n, const float *x, const int32_t *t)
{
	tm_err err = {0};
	ck_assert_int_eq(tm_model_forward_f32(m, ctx, n, x, NULL, &err), 0);
	int v = m->spec.n_classes;
	double loss = 0;
	for (int i = 0; i < n; i++) {
		const float *z = m->logits + (size_t)i * v;
		double mx = z[0], s = 0;
		for (int j = 1; j < v; j++)
			mx = fmax(mx, z[j]);
		for (int j = 0; j < v; j++)
			s += exp(z[j] - mx);
		loss += log(s) + mx - z[t[i]];
	}
	return loss / n;
}

static void check_gradients(tm_model *m, int n)
{
	tm_ctx ctx = {.isa = TM_ISA_PORTABLE};
	tm_err err = {0};
	int v = m->spec.n_classes;
	float *x = malloc((size_t)n * in_size(m) * sizeof(float));
	float *dl = malloc((size_t)n * v * sizeof(float));
	int32_t *t = malloc((size_t)n * sizeof(int32_t));
	tt_fill_random(x, (size_t)n * in_size(m), 5);
	for (int i = 0; i < n; i++)
		t[i] = (i * 7 + 3) % v;
	tm_model_randomize(m, 21);
	plan(m, n, true);
	ck_assert_int_eq(tm_model_forward_f32(m, &ctx, n, x, NULL, &err), 0);
	tm_cross_entropy(n, v, m->logits, t, dl, NULL);
	tm_model_zero_grad(m);
	ck_assert_int_eq(tm_model_backward(m, &ctx, n, dl, &err), 0);

	/* Small enough that no ReLU or max-pool switch is crossed for these inputs (1e-2 does
	 * cross some); the loss is taken in double from the float logits. */
	const float eps = 1e-3f;
	int checked = 0, bad = 0;
	double worst = 0;
	for (int li = 0; li < m->n_layers; li++) {
		tm_layer *l = &m->layers[li];
		for (int which = 0; which < 2 && l->w_len; which++) {
			float *p = which ? l->b : l->w, *g = which ? l->db : l->dw;
			size_t len = which ? l->b_len : l->w_len;
			for (size_t j = 0; j < len; j++) {
				float keep = p[j];
				p[j] = keep + eps;
				double up = loss_of(m, &ctx, n, x, t);
				p[j] = keep - eps;
				double down = loss_of(m, &ctx, n, x, t);
				p[j] = keep;
				double num = (up - down) / (2.0 * eps), ana = g[j];
				bool off = fabs(num - ana) > 1e-4 + 1e-3 * fabs(num);
				worst = fmax(worst, fabs(num - ana));
				bad += off;
				if (off && getenv("TM_GRAD_DEBUG"))
					fprintf(stderr, "layer %d %s[%zu]: numeric %g, backward %g\n",
						li, which ? "bias" : "weight", j, num, ana);
				checked++;
			}
		}
	}
	if (getenv("TM_GRAD_DEBUG"))
		fprintf(stderr, "checked %d gradients, worst abs diff %g\n", checked, worst);
	ck_assert_int_eq(checked, (int)tm_model_params(m));
	ck_assert_msg(bad == 0, "%d of %d gradients differ from finite differences (worst %g)",
		      bad, checked, worst);
	/* Backward accumulates: a second call doubles every gradient. */
	float *once = malloc(m->n_alloc * sizeof(float));
	memcpy(once, m->grads, m->n_alloc * sizeof(float));
	ck_assert_int_eq(tm_model_forward_f32(m, &ctx, n, x, NULL, &err), 0);
	ck_assert_int_eq(tm_model_backward(m, &ctx, n, dl, &err), 0);
	for (size_t i = 0; i < m->n_alloc; i++)
		ck_assert_float_eq_tol(m->grads[i], 2 * once[i], 1e-5f * (1 + fabsf(once[i])));
	free(once);
	free(x);
	free(dl);
	free(t);
}

START_TEST(test_backward_mlp)
{
	tm_model_spec s;
	tm_model_spec_mlp(&s, 2, (const int[]){7, 5});
	s.in_h = s.in_w = 5;
	s.n_classes = 4;
	tm_model *m = new_model(&s);
	ck_assert_int_eq(tm_model_params(m), 25 * 7 + 7 + 7 * 5 + 5 + 5 * 4 + 4);
	check_gradients(m, 3);
	tm_model_free(m);
}
END_TEST

START_TEST(test_backward_cnn)
{
	tm_model_spec s;
	tm_model_spec_cnn(&s, 2, 3);
	s.in_h = s.in_w = 14; /* 12 -> 6 -> 4 -> 2: 3*2*2 = 12 features */
	s.n_classes = 4;
	tm_model *m = new_model(&s);
	ck_assert_int_eq(tm_model_params(m), 2 * 9 + 2 + 3 * 2 * 9 + 3 + 12 * 4 + 4);
	check_gradients(m, 3);
	tm_model_free(m);
}
END_TEST

// ---- weight files ----

START_TEST(test_save_load)
{
	static const struct { int family, c1, c2, n_hidden, hidden[3]; } cases[] = {
		{TM_FAMILY_MLP, 0, 0, 2, {128, 64}},
		{TM_FAMILY_MLP, 0, 0, 3, {20, 10, 5}},
		{TM_FAMILY_CNN, 32, 64, 0, {0}},
		{TM_FAMILY_CNN, 3, 4, 0, {0}},
	};
	char *dir = tt_tmpdir("model");
	tm_ctx ctx = {0};
	tm_err err = {0};
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		tm_model *m = cases[c].family == TM_FAMILY_MLP ? mlp(cases[c].n_hidden, cases[c].hidden)
							       : cnn(cases[c].c1, cases[c].c2);
		tm_model_randomize(m, 100 + c);
		char path[512];
		snprintf(path, sizeof(path), "%s/m%zu.safetensors", dir, c);
		tm_model_meta meta = {.seed = 42, .test_accuracy = 0.8765, .train_seconds = 12.5};
		snprintf(meta.recipe, sizeof(meta.recipe), "adam lr=0.001");
		ck_assert_msg(tm_model_save(m, path, &meta, &err) == 0, "save: %s", err.msg);

		tm_model_meta got;
		tm_model *l = tm_model_load(path, &m->spec, &got, &err);
		ck_assert_msg(l != NULL, "load: %s", err.msg);
		ck_assert(tm_model_spec_equal(&l->spec, &m->spec));
		ck_assert_str_eq(got.recipe, "adam lr=0.001");
		ck_assert_uint_eq(got.seed, 42);
		ck_assert_double_eq_tol(got.test_accuracy, 0.8765, 1e-9);
		ck_assert_double_eq_tol(got.train_seconds, 12.5, 1e-9);
		/* Without an expected spec, the file's metadata builds the model. */
		tm_model *l2 = tm_model_load(path, NULL, NULL, &err);
		ck_assert_msg(l2 != NULL, "load: %s", err.msg);
		ck_assert(tm_model_spec_equal(&l2->spec, &m->spec));

		int n = 5, v = m->spec.n_classes;
		uint8_t *px = random_pixels((size_t)n * in_size(m), 9);
		float *a = malloc((size_t)n * v * sizeof(float)), *b = malloc((size_t)n * v * sizeof(float));
		plan(m, n, false);
		plan(l, n, false);
		ck_assert_int_eq(tm_model_forward(m, &ctx, n, px, a, &err), 0);
		ck_assert_int_eq(tm_model_forward(l, &ctx, n, px, b, &err), 0);
		ck_assert(memcmp(a, b, (size_t)n * v * sizeof(float)) == 0);
		free(a);
		free(b);
		free(px);
		tm_model_free(l);
		tm_model_free(l2);
		tm_model_free(m);
	}
	tt_rmtree(dir);
	free(dir);
}
END_TEST

/* Write an MLP file by hand: the metadata of a [16, 8] model, with one tensor's shape changed,
 * one left out or one added. */
static void write_mlp_file(const char *path, const char *family, const char *bad_shape,
			   const char *skip, const char *extra)
{
	tm_model *m = mlp(2, (const int[]){16, 8});
	tm_st_writer *w = tm_st_writer_new();
	tm_st_writer_meta(w, "format", "tinymlperf-model");
	tm_st_writer_meta(w, "format_version", "1");
	tm_st_writer_meta(w, "family", family);
	tm_st_writer_meta(w, "input.shape", "1,28,28");
	tm_st_writer_meta(w, "input.layout", "NCHW-flat");
	tm_st_writer_meta(w, "input.scale", "0.00392156863");
	tm_st_writer_meta(w, "input.mean", "0.286");
	tm_st_writer_meta(w, "input.sd", "0.353");
	tm_st_writer_meta(w, "n_classes", "10");
	tm_st_writer_meta(w, "mlp.hidden", "16,8");
	tm_st_writer_meta(w, "cnn.channels", "16,8");
	static const char *const names[] = {"0.weight", "0.bias", "2.weight", "2.bias",
					    "4.weight", "4.bias"};
	static const int64_t shapes[][2] = {{16, 784}, {16, 0}, {8, 16}, {8, 0}, {10, 8}, {10, 0}};
	static const int64_t bad[2] = {8, 17};
	for (int i = 0; i < 6; i++) {
		if (skip && strcmp(skip, names[i]) == 0)
			continue;
		const tm_layer *l = &m->layers[(i / 2) * 2];
		bool is_bad = bad_shape && strcmp(bad_shape, names[i]) == 0;
		tm_st_writer_add(w, names[i], TM_DTYPE_F32, shapes[i][1] ? 2 : 1,
				 is_bad ? bad : shapes[i], i % 2 ? (const float *)l->b : l->w);
	}
	if (extra)
		tm_st_writer_add(w, extra, TM_DTYPE_F32, 1, (const int64_t[]){4}, m->params);
	tm_err err = {0};
	ck_assert_msg(tm_st_writer_save(w, path, &err) == 0, "save: %s", err.msg);
	tm_st_writer_free(w);
	tm_model_free(m);
}

static void expect_load_error(const char *path, const tm_model_spec *expect, const char *needle)
{
	tm_err err = {0};
	tm_model *m = tm_model_load(path, expect, NULL, &err);
	ck_assert_ptr_null(m);
	ck_assert_int_lt(err.code, 0);
	ck_assert_msg(strstr(err.msg, needle) != NULL, "error '%s' does not name '%s'", err.msg,
		      needle);
}

START_TEST(test_load_errors)
{
	char *dir = tt_tmpdir("model");
	char path[512];
	snprintf(path, sizeof(path), "%s/bad.safetensors", dir);
	tm_model_spec want;
	tm_model_spec_mlp(&want, 2, (const int[]){16, 8});
	tm_err err = {0};

	/* The hand-written file is valid when nothing is changed. */
	write_mlp_file(path, "mlp", NULL, NULL, NULL);
	tm_model *ok = tm_model_load(path, &want, NULL, &err);
	ck_assert_msg(ok != NULL, "load: %s", err.msg);
	tm_model_free(ok);

	write_mlp_file(path, "mlp", "2.weight", NULL, NULL);
	expect_load_error(path, &want, "2.weight");
	write_mlp_file(path, "mlp", NULL, "4.bias", NULL);
	expect_load_error(path, &want, "4.bias");
	write_mlp_file(path, "mlp", NULL, NULL, "9.weight");
	expect_load_error(path, &want, "9.weight");
	write_mlp_file(path, "cnn", NULL, NULL, NULL);
	expect_load_error(path, &want, "family is 'cnn'");
	write_mlp_file(path, "transformer", NULL, NULL, NULL);
	expect_load_error(path, NULL, "transformer");

	/* A real CNN file where an MLP is expected; an MLP of other sizes. */
	tm_model *c = cnn(4, 6);
	ck_assert_int_eq(tm_model_save(c, path, NULL, &err), 0);
	expect_load_error(path, &want, "family is 'cnn', expected 'mlp'");
	tm_model_free(c);
	tm_model *o = mlp(2, (const int[]){16, 4});
	ck_assert_int_eq(tm_model_save(o, path, NULL, &err), 0);
	expect_load_error(path, &want, "mlp 784-16-4-10");
	tm_model_free(o);

	/* Metadata asking for a big model the file does not hold: refused by shape, before the
	 * parameters are allocated. */
	tm_st_writer *big = tm_st_writer_new();
	static const char *const kv[][2] = {
		{"format", "tinymlperf-model"}, {"format_version", "1"}, {"family", "mlp"},
		{"input.shape", "1,28,28"}, {"input.layout", "NCHW-flat"},
		{"input.scale", "0.00392156863"}, {"input.mean", "0.286"}, {"input.sd", "0.353"},
		{"n_classes", "10"}, {"mlp.hidden", "4096,4096,4096,4096,4096,4096,4096,4096"},
	};
	for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
		tm_st_writer_meta(big, kv[i][0], kv[i][1]);
	float one[4] = {0};
	tm_st_writer_add(big, "0.weight", TM_DTYPE_F32, 2, (const int64_t[]){2, 2}, one);
	ck_assert_int_eq(tm_st_writer_save(big, path, &err), 0);
	tm_st_writer_free(big);
	expect_load_error(path, NULL, "0.weight");

	/* Not a model file at all: a safetensors file without our metadata. */
	tm_st_writer *w = tm_st_writer_new();
	float z[4] = {0};
	tm_st_writer_add(w, "x", TM_DTYPE_F32, 1, (const int64_t[]){4}, z);
	ck_assert_int_eq(tm_st_writer_save(w, path, &err), 0);
	tm_st_writer_free(w);
	expect_load_error(path, &want, "format");
	snprintf(path, sizeof(path), "%s/missing.safetensors", dir);
	expect_load_error(path, &want, "missing.safetensors");
	tt_rmtree(dir);
	free(dir);
}
END_TEST

Suite *model_suite(void)
{
	Suite *s = suite_create("model");
	TCase *tc = tcase_create("model");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_param_counts);
	tcase_add_test(tc, test_layers);
	tcase_add_test(tc, test_spec_limits);
	tcase_add_test(tc, test_randomize);
	tcase_add_test(tc, test_forward_batch_mlp);
	tcase_add_test(tc, test_forward_batch_cnn);
	tcase_add_test(tc, test_forward_state);
	tcase_add_test(tc, test_backward_mlp);
	tcase_add_test(tc, test_backward_cnn);
	tcase_add_test(tc, test_save_load);
	tcase_add_test(tc, test_load_errors);
	suite_add_tcase(s, tc);
	return s;
}
