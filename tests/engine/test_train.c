/* test_train.c: Check suite of engine/train.c on the real Fashion-MNIST: a short MLP run and a
 * small CNN run must learn (accuracy well above chance on held-out test images), the same seed
 * must give bit-identical weights (with a 2-thread pool), SGD and Adam must both lower the
 * loss, evaluation must not depend on the batch size, and bad configs are refused. */
#include "tests.h"

#include "engine.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#if defined(__SANITIZE_ADDRESS__)
#define TRAIN_SUBSET 3000 /* ASan runs the kernels several times slower */
#else
#define TRAIN_SUBSET 6000
#endif

// ---- helpers ----

static tm_dataset train_set, test_set;

static void load_data(void)
{
	tm_err err = {0};
	ck_assert_msg(tm_fmnist_load(&train_set, NULL, true, &err) == 0, "train set: %s", err.msg);
	ck_assert_msg(tm_fmnist_load(&test_set, NULL, false, &err) == 0, "test set: %s", err.msg);
}

static void free_data(void)
{
	tm_dataset_release(&train_set);
	tm_dataset_release(&test_set);
}

/* The first n samples of ds, sharing its memory. */
static tm_dataset head(const tm_dataset *ds, int n)
{
	tm_dataset v = *ds;
	v.n = n < ds->n ? n : ds->n;
	return v;
}

static tm_model *mlp(int n, const int *hidden, uint64_t seed)
{
	tm_model_spec s;
	tm_err err = {0};
	tm_model_spec_mlp(&s, n, hidden);
	tm_model *m = tm_model_new(&s, &err);
	ck_assert_msg(m != NULL, "model: %s", err.msg);
	tm_model_randomize(m, seed);
	return m;
}

static tm_ctx make_ctx(tm_pool *pool)
{
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	return (tm_ctx){.isa = tm_isa_best(&cpu), .pool = pool};
}

/* Mean cross-entropy over ds (no gradient). */
static double mean_loss(tm_model *m, const tm_ctx *ctx, const tm_dataset *ds)
{
	tm_err err = {0};
	int32_t t[256];
	double sum = 0;
	if (m->max_batch == 0)
		ck_assert_int_eq(tm_model_plan(m, 256, false, &err), 0);
	int bs = m->max_batch < 256 ? m->max_batch : 256;
	for (int off = 0; off < ds->n; off += bs) {
		int nb = ds->n - off < bs ? ds->n - off : bs;
		ck_assert_int_eq(tm_model_forward(m, ctx, nb, ds->images + (size_t)off * 784, NULL,
						  &err), 0);
		for (int i = 0; i < nb; i++)
			t[i] = ds->labels[off + i];
		sum += (double)tm_cross_entropy(nb, 10, m->logits, t, NULL, NULL) * nb;
	}
	return sum / ds->n;
}

// ---- tests ----

START_TEST(test_mlp_learns)
{
	tm_pool *pool = tm_pool_new(2);
	tm_ctx ctx = make_ctx(pool);
	tm_err err = {0};
	tm_dataset tr = head(&train_set, TRAIN_SUBSET), te = head(&test_set, 2000);
	tm_model *m = mlp(2, (const int[]){128, 64}, 1);
	tm_train_config cfg;
	tm_train_config_default(&cfg);
	cfg.epochs = 1;
	cfg.batch = 64;
	cfg.log_every = 20;
	char *log = NULL;
	size_t log_len = 0;
	FILE *f = open_memstream(&log, &log_len);
	tm_train_result res;
	int rc = tm_train(m, &ctx, &tr, &te, &cfg, f, &res, &err);
	fclose(f);
	ck_assert_msg(rc == 0, "train: %s", err.msg);
	ck_assert_int_eq(res.epochs, 1);
	ck_assert_int_eq(res.steps, (TRAIN_SUBSET + 63) / 64);
	ck_assert(!res.stopped);
	ck_assert_msg(res.test_accuracy > 0.70, "test accuracy %.4f after one epoch on %d images",
		      res.test_accuracy, TRAIN_SUBSET);
	ck_assert_double_gt(res.train_accuracy, 0.5);
	double acc;
	ck_assert_int_eq(tm_evaluate(m, &ctx, &te, &acc, &err), 0);
	ck_assert_double_eq(acc, res.test_accuracy);
	/* Progress lines: per log_every steps and per epoch, key=value. */
	ck_assert_ptr_nonnull(strstr(log, "epoch=1 step=20 loss="));
	ck_assert_ptr_nonnull(strstr(log, "train_acc="));
	ck_assert_ptr_nonnull(strstr(log, "test_acc="));
	ck_assert_ptr_nonnull(strstr(log, "elapsed_s="));
	free(log);
	tm_model_free(m);
	tm_pool_free(pool);
}
END_TEST

START_TEST(test_cnn_learns)
{
	tm_pool *pool = tm_pool_new(2);
	tm_ctx ctx = make_ctx(pool);
	tm_err err = {0};
	tm_dataset tr = head(&train_set, TRAIN_SUBSET / 2), te = head(&test_set, 1000);
	tm_model_spec s;
	tm_model_spec_cnn(&s, 8, 16);
	tm_model *m = tm_model_new(&s, &err);
	ck_assert_ptr_nonnull(m);
	tm_model_randomize(m, 3);
	tm_train_config cfg;
	tm_train_config_default(&cfg);
	cfg.epochs = 1;
	cfg.batch = 32;
	cfg.lr = 2e-3f;
	tm_train_result res;
	ck_assert_msg(tm_train(m, &ctx, &tr, &te, &cfg, NULL, &res, &err) == 0, "train: %s",
		      err.msg);
	ck_assert_msg(res.test_accuracy > 0.60, "cnn test accuracy %.4f", res.test_accuracy);
	tm_model_free(m);
	tm_pool_free(pool);
}
END_TEST

START_TEST(test_deterministic)
{
	tm_pool *pool = tm_pool_new(2);
	tm_ctx ctx = make_ctx(pool);
	tm_err err = {0};
	tm_dataset tr = head(&train_set, 1000);
	tm_train_config cfg;
	tm_train_config_default(&cfg);
	cfg.epochs = 2;
	cfg.batch = 50;
	cfg.seed = 5;
	tm_model *a = mlp(2, (const int[]){64, 32}, 5), *b = mlp(2, (const int[]){64, 32}, 5);
	tm_model *c = mlp(2, (const int[]){64, 32}, 5);
	ck_assert_int_eq(tm_train(a, &ctx, &tr, NULL, &cfg, NULL, NULL, &err), 0);
	ck_assert_int_eq(tm_train(b, &ctx, &tr, NULL, &cfg, NULL, NULL, &err), 0);
	ck_assert(memcmp(a->params, b->params, a->n_alloc * sizeof(float)) == 0);
	/* Another shuffling seed, same initial weights: other weights. */
	cfg.seed = 6;
	ck_assert_int_eq(tm_train(c, &ctx, &tr, NULL, &cfg, NULL, NULL, &err), 0);
	ck_assert(memcmp(a->params, c->params, a->n_alloc * sizeof(float)) != 0);
	/* Augmented training is seeded too, and it changes what is learned. */
	cfg.seed = 5;
	cfg.augment = TM_AUG_FLIP | TM_AUG_SHIFT;
	tm_model_randomize(b, 5);
	tm_model_randomize(c, 5);
	ck_assert_int_eq(tm_train(b, &ctx, &tr, NULL, &cfg, NULL, NULL, &err), 0);
	ck_assert_int_eq(tm_train(c, &ctx, &tr, NULL, &cfg, NULL, NULL, &err), 0);
	ck_assert(memcmp(b->params, c->params, b->n_alloc * sizeof(float)) == 0);
	ck_assert(memcmp(a->params, b->params, a->n_alloc * sizeof(float)) != 0);
	cfg.augment = 0;
	tm_model_free(a);
	tm_model_free(b);
	tm_model_free(c);

	/* The CNN path too (conv and pool backward run on the pool). */
	tm_model_spec s;
	tm_model_spec_cnn(&s, 4, 6);
	tm_model *x = tm_model_new(&s, &err), *y = tm_model_new(&s, &err);
	tm_model_randomize(x, 9);
	tm_model_randomize(y, 9);
	tr = head(&train_set, 300);
	cfg.epochs = 1;
	ck_assert_int_eq(tm_train(x, &ctx, &tr, NULL, &cfg, NULL, NULL, &err), 0);
	ck_assert_int_eq(tm_train(y, &ctx, &tr, NULL, &cfg, NULL, NULL, &err), 0);
	ck_assert(memcmp(x->params, y->params, x->n_alloc * sizeof(float)) == 0);
	tm_model_free(x);
	tm_model_free(y);
	tm_pool_free(pool);
}
END_TEST

START_TEST(test_optimizers_lower_loss)
{
	tm_ctx ctx = make_ctx(NULL);
	tm_err err = {0};
	tm_dataset tr = head(&train_set, 2000);
	static const struct { tm_optim_kind kind; float lr; tm_lr_schedule sched; } runs[] = {
		{TM_OPTIM_SGD, 0.02f, TM_LR_CONSTANT},
		{TM_OPTIM_SGD, 0.05f, TM_LR_COSINE},
		{TM_OPTIM_ADAM, 1e-3f, TM_LR_CONSTANT},
		{TM_OPTIM_ADAMW, 1e-3f, TM_LR_COSINE},
	};
	for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
		tm_model *m = mlp(1, (const int[]){32}, 2);
		double before = mean_loss(m, &ctx, &tr);
		tm_train_config cfg;
		tm_train_config_default(&cfg);
		cfg.optim = runs[i].kind;
		cfg.lr = runs[i].lr;
		cfg.schedule = runs[i].sched;
		cfg.weight_decay = runs[i].kind == TM_OPTIM_ADAMW ? 0.01f : 0.0f;
		cfg.epochs = 2;
		cfg.batch = 32;
		tm_train_result res;
		ck_assert_int_eq(tm_train(m, &ctx, &tr, NULL, &cfg, NULL, &res, &err), 0);
		double after = mean_loss(m, &ctx, &tr);
		ck_assert_msg(after < 0.5 * before, "run %zu: loss %.4f -> %.4f", i, before, after);
		ck_assert_double_lt(res.loss, before);
		tm_model_free(m);
	}
}
END_TEST

START_TEST(test_evaluate_batches)
{
	tm_ctx ctx = make_ctx(NULL);
	tm_err err = {0};
	tm_dataset te = head(&test_set, 1000);
	tm_model *m = mlp(1, (const int[]){16}, 4);
	double a, b, c;
	ck_assert_int_eq(tm_evaluate(m, &ctx, &te, &a, &err), 0); /* plans 256 */
	ck_assert_int_eq(m->max_batch, 256);
	ck_assert_int_eq(tm_model_plan(m, 7, false, &err), 0);
	ck_assert_int_eq(tm_evaluate(m, &ctx, &te, &b, &err), 0);
	ck_assert_double_eq(a, b);
	/* By hand, one image at a time. */
	int right = 0;
	for (int i = 0; i < te.n; i++) {
		ck_assert_int_eq(tm_model_forward(m, &ctx, 1, te.images + (size_t)i * 784, NULL, &err),
				 0);
		int best = 0;
		for (int j = 1; j < 10; j++)
			if (m->logits[j] > m->logits[best])
				best = j;
		right += best == te.labels[i];
	}
	c = (double)right / te.n;
	ck_assert_double_eq_tol(a, c, 1e-12);
	tm_model_free(m);
}
END_TEST

START_TEST(test_bad_config)
{
	tm_ctx ctx = make_ctx(NULL);
	tm_err err = {0};
	tm_dataset tr = head(&train_set, 100);
	tm_model *m = mlp(1, (const int[]){8}, 1);
	tm_train_config cfg;
	tm_train_config_default(&cfg);
	cfg.epochs = 0;
	ck_assert_int_eq(tm_train(m, &ctx, &tr, NULL, &cfg, NULL, NULL, &err), TM_EINVAL);
	ck_assert_str_eq(err.field, "train.epochs");
	tm_train_config_default(&cfg);
	cfg.lr = -1;
	ck_assert_int_eq(tm_train(m, &ctx, &tr, NULL, &cfg, NULL, NULL, &err), TM_EINVAL);
	tm_train_config_default(&cfg);
	tm_dataset odd = tr;
	odd.rows = 14;
	odd.cols = 56;
	ck_assert_int_eq(tm_train(m, &ctx, &odd, NULL, &cfg, NULL, NULL, &err), TM_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "14x56"));
	cfg.augment = 4;
	ck_assert_int_eq(tm_train(m, &ctx, &tr, NULL, &cfg, NULL, NULL, &err), TM_EINVAL);
	ck_assert_str_eq(err.field, "train.augment");
	cfg.augment = 0;
	/* A budget of wall-clock time stops the run and says so. */
	cfg.max_seconds = 1e-9;
	cfg.epochs = 3;
	tm_train_result res;
	ck_assert_int_eq(tm_train(m, &ctx, &tr, NULL, &cfg, NULL, &res, &err), 0);
	ck_assert(res.stopped);
	ck_assert_int_eq(res.steps, 1);
	/* Reference recipes and their description. */
	ck_assert_int_eq(tm_train_config_reference(&cfg, "mlp_sprint", &err), 0);
	char buf[256];
	tm_train_recipe_str(&cfg, buf, sizeof(buf));
	ck_assert_ptr_nonnull(strstr(buf, "adam lr=0.001"));
	ck_assert_int_eq(tm_train_config_reference(&cfg, "cnn_marathon", &err), 0);
	ck_assert_int_eq(tm_train_config_reference(&cfg, "nope", &err), TM_EINVAL);
	tm_model_free(m);
}
END_TEST

// ---- tinymlperf-run train ----

/* Run the built tinymlperf-run with args; returns its exit status, output in *out. */
static int run_cli(const char *args, char **out)
{
	char *bin = tt_build_path("tinymlperf-run");
	char cmd[2048];
	snprintf(cmd, sizeof(cmd), "%s %s 2>&1", bin, args);
	free(bin);
	FILE *p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	size_t cap = 1 << 16, len = 0, got;
	char *buf = malloc(cap);
	while ((got = fread(buf + len, 1, cap - 1 - len, p)) > 0) {
		len += got;
		if (len == cap - 1)
			buf = realloc(buf, cap *= 2);
	}
	buf[len] = 0;
	int st = pclose(p);
	*out = buf;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

START_TEST(test_cli_train)
{
	char *dir = tt_tmpdir("train"), *out = NULL, args[1024];
	snprintf(args, sizeof(args), "train mlp_sprint --epochs 1 --seed 3 --data-dir %s/var", dir);
	int rc = run_cli(args, &out);
	ck_assert_msg(rc == 0, "exit %d: %s", rc, out);
	ck_assert_ptr_nonnull(strstr(out, "epoch=1 steps=469 "));
	ck_assert_ptr_nonnull(strstr(out, "result: event=mlp_sprint test_accuracy=0.8"));
	free(out);
	/* The file is the reference architecture, loads, and records its accuracy and seed. */
	char path[1024];
	snprintf(path, sizeof(path), "%s/var/models/mlp_sprint.safetensors", dir);
	tm_model_spec ref;
	tm_err err = {0};
	tm_model_meta meta;
	ck_assert_int_eq(tm_model_spec_reference(&ref, "mlp_sprint", &err), 0);
	tm_model *m = tm_model_load(path, &ref, &meta, &err);
	ck_assert_msg(m != NULL, "load: %s", err.msg);
	ck_assert_uint_eq(meta.seed, 3);
	ck_assert_double_gt(meta.test_accuracy, 0.8);
	ck_assert_ptr_nonnull(strstr(meta.recipe, "epochs=1"));
	tm_ctx ctx = make_ctx(NULL);
	double acc;
	ck_assert_int_eq(tm_evaluate(m, &ctx, &test_set, &acc, &err), 0);
	ck_assert_double_eq_tol(acc, meta.test_accuracy, 0.0003); /* %.4f, other threads */
	tm_model_free(m);

	/* Bad arguments: exit 2 and one line on stderr. */
	static const char *const bad[] = {"train", "train nope", "train mlp_sprint --epochs 0",
					  "train mlp_sprint --seed x", "train mlp_sprint --bogus",
					  "train mlp_sprint --threads", "frobnicate"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		rc = run_cli(bad[i], &out);
		ck_assert_msg(rc == 2, "'%s': exit %d", bad[i], rc);
		ck_assert_msg(strncmp(out, "tinymlperf-run: ", 16) == 0 &&
			      strchr(out, '\n') == out + strlen(out) - 1, "'%s': %s", bad[i], out);
		free(out);
	}
	rc = run_cli("--help", &out);
	ck_assert_int_eq(rc, 0);
	ck_assert_ptr_nonnull(strstr(out, "--dataset-dir"));
	free(out);
	tt_rmtree(dir);
	free(dir);
}
END_TEST

Suite *train_suite(void)
{
	Suite *s = suite_create("train");
	TCase *tc = tcase_create("train");
	tcase_add_checked_fixture(tc, load_data, free_data);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_mlp_learns);
	tcase_add_test(tc, test_cnn_learns);
	tcase_add_test(tc, test_deterministic);
	tcase_add_test(tc, test_optimizers_lower_loss);
	tcase_add_test(tc, test_evaluate_batches);
	tcase_add_test(tc, test_bad_config);
	tcase_add_test(tc, test_cli_train);
	suite_add_tcase(s, tc);
	return s;
}
