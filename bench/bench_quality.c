/* bench_quality.c: the `quality` section of `make bench`: what the optimizations of tm_infer
 * cost in accuracy on the real Fashion-MNIST test set (10k images) and what they buy end to
 * end, measured in the same run.  The reference MLP and CNN are loaded from
 * $TINYMLPERF_DATA_DIR/models (default ./var/models) when present, else trained here with a
 * short recipe (MLP: the reference recipe for 5 epochs; CNN: 2 epochs, 1 with --quick).
 * Accuracy rows (docs/optimizations.md): value = top-1 after the optimization, anchor = the
 * FP32 tm_infer of the same weights; ratio = after / before, and the target ratio is
 * 1 - allowed_loss / before, so a row holds exactly when the loss is within the allowed points
 * (INT8 MLP and CNN: 0.5 pt; MLP at 87% unstructured sparsity with one fine-tuning epoch:
 * 1.0 pt).  Speed rows time whole inferences (preprocessing included) with the best kernel
 * set on one thread, the optimized and the FP32 tm_infer alternating for several rounds,
 * keeping the fastest repetition of each (min-of-N): structured 50% MLP at batch 1 (target
 * 1.7x), INT8 MLP at batch 1 and INT8 CNN at batch 256 (informational), plus the stored bytes
 * of the 87% sparse MLP against the FP32 one. */
#include "bench.h"

#include <stdlib.h>
#include <string.h>

#define MLP_QUICK_EPOCHS 5
#define CNN_QUICK_EPOCHS 2

typedef struct q_env {
	bench_ctx *b;
	tm_ctx ctx;          /* best kernels, one thread: inference */
	tm_ctx train_ctx;    /* best kernels, two threads: training and fine-tuning */
	tm_dataset train, test;
} q_env;

static void die(const char *what, const tm_err *err)
{
	fprintf(stderr, "bench_quality: %s: %s\n", what, err->msg);
	exit(1);
}

/* The reference weights of event: from the data directory, or trained now. */
static tm_model *reference(q_env *e, const char *event)
{
	tm_err err = { 0 };
	const char *dir = getenv("TINYMLPERF_DATA_DIR");
	char path[512];
	snprintf(path, sizeof(path), "%s/models/%s.safetensors", dir && *dir ? dir : "./var",
		 event);
	tm_model_spec spec;
	if (tm_model_spec_reference(&spec, event, &err) < 0)
		die(event, &err);
	FILE *f = fopen(path, "rb");
	if (f) {
		fclose(f);
		tm_model *m = tm_model_load(path, &spec, NULL, &err);
		if (!m)
			die(path, &err);
		printf("  %s: reference weights from %s\n", event, path);
		return m;
	}
	tm_model *m = tm_model_new(&spec, &err);
	if (!m)
		die(event, &err);
	tm_train_config cfg;
	if (tm_train_config_reference(&cfg, event, &err) < 0)
		die(event, &err);
	bool mlp = spec.family == TM_FAMILY_MLP;
	cfg.epochs = mlp ? MLP_QUICK_EPOCHS : e->b->quick ? 1 : CNN_QUICK_EPOCHS;
	cfg.log_every = 0;
	tm_model_randomize(m, cfg.seed);
	tm_train_result res;
	if (tm_train(m, &e->train_ctx, &e->train, NULL, &cfg, NULL, &res, &err) < 0)
		die(event, &err);
	printf("  %s: no %s, trained %d epochs in %.1f s\n", event, path, res.epochs,
	       res.seconds);
	return m;
}

static tm_infer *make(q_env *e, const tm_model *m, const tm_infer_opts *o, const char *what)
{
	tm_err err = { 0 };
	tm_infer *inf = NULL;
	uint64_t t0 = tm_now_ns();
	if (tm_infer_new(m, o, &e->train_ctx, &e->train, NULL, &inf, &err) < 0)
		die(what, &err);
	tm_infer_stats st;
	tm_infer_get_stats(inf, &st);
	printf("  %s: built in %.1f s, %lld params (%lld nonzero), %zu bytes stored\n", what,
	       (double)(tm_now_ns() - t0) * 1e-9, (long long)st.params,
	       (long long)st.nonzero_params, st.bytes);
	for (int i = 0; i < tm_infer_n_layers(inf); i++) {
		const tm_infer_layer *l = tm_infer_layer_at(inf, i);
		if (l->op == TM_OP_LINEAR || l->op == TM_OP_CONV3X3)
			printf("    layer %s %s %d->%d: %s, %zu bytes\n", l->name, tm_op_name(l->op),
			       l->in_c, l->out_c, l->kernel, l->bytes);
	}
	return inf;
}

/* Top-1 on the test set, in percent. */
static double accuracy(q_env *e, tm_infer *inf, const char *what)
{
	tm_err err = { 0 };
	double acc = 0;
	if (tm_infer_evaluate(inf, &e->ctx, &e->test, &acc, &err) < 0)
		die(what, &err);
	printf("  %s: top-1 %.2f%%\n", what, 100.0 * acc);
	return 100.0 * acc;
}

/* "loss <= allowed points" as a higher-is-better ratio: after / before >= 1 - allowed / before */
static void loss_row(bench_ctx *b, const char *name, double after, double before,
		     double allowed)
{
	bench_add(b, name, after, "% top-1", "fp32_infer_accuracy", before, true,
		  1.0 - allowed / before);
}

// ---- end-to-end timing ----

typedef struct q_run {
	tm_infer *inf;
	const tm_ctx *ctx;
	const tm_dataset *ds;
	int batch;           /* images per call */
	int images;          /* images per timed repetition */
	float *logits;
} q_run;

static void run_images(void *arg)
{
	const q_run *r = arg;
	size_t in = (size_t)r->ds->rows * r->ds->cols;
	tm_err err;
	for (int off = 0; off < r->images; off += r->batch) {
		int nb = r->images - off < r->batch ? r->images - off : r->batch;
		if (tm_infer_forward(r->inf, r->ctx, nb, r->ds->images + in * (size_t)off,
				     r->logits, NULL, &err) < 0)
			die("forward", &err);
	}
}

/* Seconds per image of opt and of base (alternating rounds, fastest repetition of each). */
static void time_pair(q_env *e, tm_infer *opt, tm_infer *base, int batch, int images,
		      double *t_opt, double *t_base)
{
	float *logits = malloc(sizeof(float) * 10 * (size_t)batch);
	if (!logits)
		abort();
	q_run r[2] = {
		{ .inf = opt, .ctx = &e->ctx, .ds = &e->test, .batch = batch, .images = images,
		  .logits = logits },
		{ .inf = base, .ctx = &e->ctx, .ds = &e->test, .batch = batch, .images = images,
		  .logits = logits },
	};
	double best[2] = { 1e30, 1e30 };
	int rounds = e->b->quick ? 3 : 8;
	double min_s = e->b->quick ? 0.05 : 0.2;
	for (int k = 0; k < rounds; k++)
		for (int i = 0; i < 2; i++) {
			double t = bench_time_min(run_images, &r[i], min_s) / images;
			best[i] = t < best[i] ? t : best[i];
		}
	*t_opt = best[0];
	*t_base = best[1];
	free(logits);
}

static void speed_row(q_env *e, const char *name, tm_infer *opt, tm_infer *base, int batch,
		      int images, double target)
{
	double t_opt, t_base;
	time_pair(e, opt, base, batch, images, &t_opt, &t_base);
	if (batch == 1)
		bench_add(e->b, name, t_opt * 1e6, "us/image", "fp32_infer", t_base * 1e6, false,
			  target);
	else
		bench_add(e->b, name, 1.0 / t_opt, "images/s", "fp32_infer", 1.0 / t_base, true,
			  target);
}

// ---- the events ----

static void mlp_rows(q_env *e)
{
	tm_model *m = reference(e, "mlp_sprint");
	tm_infer_opts o;
	tm_infer_opts_default(&o);
	o.max_batch = 1;
	tm_infer *fp = make(e, m, &o, "mlp fp32");
	double acc_fp = accuracy(e, fp, "mlp fp32");
	tm_infer_stats st_fp;
	tm_infer_get_stats(fp, &st_fp);

	o.quantize = true;
	tm_infer *q = make(e, m, &o, "mlp int8");
	loss_row(e->b, "int8_mlp_accuracy_loss", accuracy(e, q, "mlp int8"), acc_fp, 0.5);
	speed_row(e, "int8_mlp_end_to_end_speedup_b1", q, fp, 1, 2000, 0);
	tm_infer_free(q);

	tm_infer_opts_default(&o);
	o.max_batch = 1;
	o.sparsity = 0.87;
	o.prune_global = true;
	o.finetune_epochs = 1;
	tm_infer *sp = make(e, m, &o, "mlp sparse 87% global + 1 epoch");
	loss_row(e->b, "sparse87_mlp_finetune1_accuracy_loss",
		 accuracy(e, sp, "mlp sparse 87% + 1 epoch"), acc_fp, 1.0);
	tm_infer_stats st;
	tm_infer_get_stats(sp, &st);
	bench_add(e->b, "sparse87_mlp_stored_bytes_compression", (double)st.bytes, "bytes",
		  "fp32_infer_bytes", (double)st_fp.bytes, false, 0);
	speed_row(e, "sparse87_mlp_end_to_end_speedup_b1", sp, fp, 1, 2000, 0);
	tm_infer_free(sp);

	tm_infer_opts_default(&o);
	o.max_batch = 1;
	o.sparsity = 0.5;
	o.structured = true;
	o.finetune_epochs = 1;
	tm_infer *st50 = make(e, m, &o, "mlp structured 50% + 1 epoch");
	bench_add(e->b, "structured50_mlp_finetune1_accuracy",
		  accuracy(e, st50, "mlp structured 50% + 1 epoch"), "% top-1",
		  "fp32_infer_accuracy", acc_fp, true, 0);
	speed_row(e, "structured50_mlp_end_to_end_speedup", st50, fp, 1, 2000, 1.7);
	tm_infer_free(st50);

	tm_infer_free(fp);
	tm_model_free(m);
}

static void cnn_rows(q_env *e)
{
	tm_model *m = reference(e, "cnn_marathon");
	tm_infer_opts o;
	tm_infer_opts_default(&o);
	o.max_batch = 256;
	tm_infer *fp = make(e, m, &o, "cnn fp32");
	double acc_fp = accuracy(e, fp, "cnn fp32");
	o.quantize = true;
	tm_infer *q = make(e, m, &o, "cnn int8");
	loss_row(e->b, "int8_cnn_accuracy_loss", accuracy(e, q, "cnn int8"), acc_fp, 0.5);
	speed_row(e, "int8_cnn_throughput_speedup_b256", q, fp, 256, 1024, 0);
	tm_infer_free(q);
	tm_infer_free(fp);
	tm_model_free(m);
}

void bench_quality(bench_ctx *b)
{
	q_env e = { .b = b };
	tm_err err = { 0 };
	if (tm_fmnist_load(&e.train, NULL, true, &err) < 0 ||
	    tm_fmnist_load(&e.test, NULL, false, &err) < 0) {
		printf("  quality: skipped, %s\n", err.msg);
		return;
	}
	tm_isa isa = tm_isa_best(&b->cpu);
	tm_pool *pool = tm_pool_new(2);
	e.ctx = (tm_ctx){ .isa = isa, .pool = NULL };
	e.train_ctx = (tm_ctx){ .isa = isa, .pool = pool };
	mlp_rows(&e);
	cnn_rows(&e);
	tm_pool_free(pool);
	tm_dataset_release(&e.train);
	tm_dataset_release(&e.test);
}
