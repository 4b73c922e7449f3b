/* train.c: mini-batch training and evaluation of the image models (tm_model) on a tm_dataset.
 * Each epoch visits the training set in an order drawn by tm_rng_shuffle from the config's
 * seed; each step runs forward, softmax cross-entropy, backward and one tm_optim step over the
 * model's flat parameter vector with a constant or cosine learning rate.  Nothing depends on
 * timing or thread scheduling (unless max_seconds stops a run), so a seed reproduces the
 * weights bit for bit on the same kernels and thread count.  With masks (fine-tuning after
 * pruning) pruned weights stay exactly zero.  Progress goes to a FILE* as key=value lines. */
#include "engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// ---- configs ----

void tm_train_config_default(tm_train_config *c)
{
	memset(c, 0, sizeof(*c));
	c->optim = TM_OPTIM_ADAM;
	c->lr = 1e-3f;
	c->momentum = 0.9f;
	c->weight_decay = 0.0f;
	c->schedule = TM_LR_COSINE;
	c->lr_min = 0.0f;
	c->epochs = 10;
	c->batch = 128;
	c->seed = 1;
	c->log_every = 100;
}

/* The reference recipes (docs/training.md has the runs that chose them). */
static const struct {
	const char *event;
	tm_optim_kind optim;
	float lr;
	int batch;
	int epochs;
	unsigned augment;
} reference_recipes[] = {
	{"mlp_sprint", TM_OPTIM_ADAM, 1e-3f, 128, 20, 0},
	{"cnn_marathon", TM_OPTIM_ADAM, 2e-3f, 64, 8, TM_AUG_FLIP},
};

int tm_train_config_reference(tm_train_config *c, const char *event, tm_err *err)
{
	tm_train_config_default(c);
	for (size_t i = 0; i < sizeof(reference_recipes) / sizeof(reference_recipes[0]); i++) {
		if (strcmp(event, reference_recipes[i].event) != 0)
			continue;
		c->optim = reference_recipes[i].optim;
		c->lr = reference_recipes[i].lr;
		c->batch = reference_recipes[i].batch;
		c->epochs = reference_recipes[i].epochs;
		c->augment = reference_recipes[i].augment;
		return 0;
	}
	return tm_err_set(err, TM_EINVAL, "event",
			  "train: no reference recipe for event '%s' (mlp_sprint, cnn_marathon)",
			  event);
}

static const char *optim_name(tm_optim_kind k)
{
	switch (k) {
	case TM_OPTIM_SGD:
		return "sgd";
	case TM_OPTIM_ADAM:
		return "adam";
	case TM_OPTIM_ADAMW:
		return "adamw";
	}
	return "unknown";
}

void tm_train_recipe_str(const tm_train_config *c, char *buf, size_t len)
{
	char sched[48], mom[32] = "";
	if (c->schedule == TM_LR_COSINE)
		snprintf(sched, sizeof(sched), "cosine(min=%g)", (double)c->lr_min);
	else
		snprintf(sched, sizeof(sched), "constant");
	if (c->optim == TM_OPTIM_SGD)
		snprintf(mom, sizeof(mom), " momentum=%g", (double)c->momentum);
	char aug[32] = "";
	if (c->augment)
		snprintf(aug, sizeof(aug), " aug=%s%s%s", c->augment & TM_AUG_FLIP ? "flip" : "",
			 (c->augment & TM_AUG_FLIP) && (c->augment & TM_AUG_SHIFT) ? "," : "",
			 c->augment & TM_AUG_SHIFT ? "shift" : "");
	snprintf(buf, len, "%s lr=%g%s %s batch=%d epochs=%d wd=%g%s seed=%llu",
		 optim_name(c->optim), (double)c->lr, mom, sched, c->batch, c->epochs,
		 (double)c->weight_decay, aug, (unsigned long long)c->seed);
}

static int config_check(const tm_train_config *c, tm_err *err)
{
	if (c->optim != TM_OPTIM_SGD && c->optim != TM_OPTIM_ADAM && c->optim != TM_OPTIM_ADAMW)
		return tm_err_set(err, TM_EINVAL, "train.optim", "train: optimizer %d is unknown",
				  (int)c->optim);
	if (!(c->lr > 0.0f && c->lr <= 10.0f))
		return tm_err_set(err, TM_EINVAL, "train.lr", "train: lr is %g, must be in (0, 10]",
				  (double)c->lr);
	if (!(c->lr_min >= 0.0f && c->lr_min <= 1.0f))
		return tm_err_set(err, TM_EINVAL, "train.lr_min",
				  "train: lr_min is %g, must be in [0, 1]", (double)c->lr_min);
	if (!(c->momentum >= 0.0f && c->momentum < 1.0f))
		return tm_err_set(err, TM_EINVAL, "train.momentum",
				  "train: momentum is %g, must be in [0, 1)", (double)c->momentum);
	if (!(c->weight_decay >= 0.0f && c->weight_decay <= 1.0f))
		return tm_err_set(err, TM_EINVAL, "train.weight_decay",
				  "train: weight_decay is %g, must be in [0, 1]",
				  (double)c->weight_decay);
	if (c->schedule != TM_LR_CONSTANT && c->schedule != TM_LR_COSINE)
		return tm_err_set(err, TM_EINVAL, "train.schedule", "train: schedule %d is unknown",
				  (int)c->schedule);
	if (c->epochs < 1 || c->epochs > 1000)
		return tm_err_set(err, TM_EINVAL, "train.epochs",
				  "train: epochs is %d, must be in [1, 1000]", c->epochs);
	if (c->batch < 1 || c->batch > 65536)
		return tm_err_set(err, TM_EINVAL, "train.batch",
				  "train: batch is %d, must be in [1, 65536]", c->batch);
	if (c->augment & ~(TM_AUG_FLIP | TM_AUG_SHIFT))
		return tm_err_set(err, TM_EINVAL, "train.augment",
				  "train: augment flags 0x%x, known are 0x%x", c->augment,
				  TM_AUG_FLIP | TM_AUG_SHIFT);
	if (c->log_every < 0)
		return tm_err_set(err, TM_EINVAL, "train.log_every",
				  "train: log_every is %d, must be >= 0", c->log_every);
	if (!(c->max_seconds >= 0))
		return tm_err_set(err, TM_EINVAL, "train.max_seconds",
				  "train: max_seconds is %g, must be >= 0", c->max_seconds);
	return 0;
}

/* The dataset's images must be the model's input and its labels the model's classes. */
static int dataset_check(const tm_model *m, const tm_dataset *ds, const char *what, tm_err *err)
{
	const tm_model_spec *s = &m->spec;
	if (ds->n < 1)
		return tm_err_set(err, TM_EINVAL, what, "%s: dataset is empty", what);
	if (s->in_c != 1 || ds->rows != s->in_h || ds->cols != s->in_w)
		return tm_err_set(err, TM_EINVAL, what,
				  "%s: images are %dx%d, the model takes %dx%dx%d", what, ds->rows,
				  ds->cols, s->in_c, s->in_h, s->in_w);
	if (ds->n_classes > s->n_classes)
		return tm_err_set(err, TM_EINVAL, what, "%s: %d classes, the model has %d", what,
				  ds->n_classes, s->n_classes);
	return 0;
}

// ---- evaluation ----

static int argmax(const float *v, int n)
{
	int best = 0;
	for (int i = 1; i < n; i++)
		if (v[i] > v[best])
			best = i;
	return best;
}

int tm_evaluate(tm_model *m, const tm_ctx *ctx, const tm_dataset *ds, double *accuracy,
		tm_err *err)
{
	int rc = dataset_check(m, ds, "evaluate", err);
	if (rc < 0)
		return rc;
	if (m->max_batch == 0 && (rc = tm_model_plan(m, 256, false, err)) < 0)
		return rc;
	size_t in = (size_t)ds->rows * ds->cols;
	int classes = m->spec.n_classes;
	int64_t correct = 0;
	for (int off = 0; off < ds->n; off += m->max_batch) {
		int nb = ds->n - off < m->max_batch ? ds->n - off : m->max_batch;
		if ((rc = tm_model_forward(m, ctx, nb, ds->images + (size_t)off * in, NULL, err)) < 0)
			return rc;
		for (int i = 0; i < nb; i++)
			correct += argmax(m->logits + (size_t)i * classes, classes) ==
				   ds->labels[off + i];
	}
	*accuracy = (double)correct / ds->n;
	return 0;
}

// ---- training ----

#define AUG_MAX_SHIFT 2

/* Copy one rows x cols image, mirrored and/or shifted as drawn from rng (zero fill). */
static void augment_image(tm_rng *rng, unsigned aug, int rows, int cols, const uint8_t *src,
			  uint8_t *dst)
{
	bool flip = (aug & TM_AUG_FLIP) && tm_rng_below(rng, 2);
	int oy = 0, ox = 0;
	if (aug & TM_AUG_SHIFT) {
		oy = (int)tm_rng_below(rng, 2 * AUG_MAX_SHIFT + 1) - AUG_MAX_SHIFT;
		ox = (int)tm_rng_below(rng, 2 * AUG_MAX_SHIFT + 1) - AUG_MAX_SHIFT;
	}
	for (int y = 0; y < rows; y++) {
		int sy = y + oy;
		for (int x = 0; x < cols; x++) {
			int sx = x + ox;
			if (flip)
				sx = cols - 1 - sx;
			bool inside = sy >= 0 && sy < rows && sx >= 0 && sx < cols;
			dst[y * cols + x] = inside ? src[sy * cols + sx] : 0;
		}
	}
}

static float lr_at(const tm_train_config *c, int64_t step, int64_t total)
{
	if (c->schedule == TM_LR_CONSTANT || total <= 1)
		return c->lr;
	double t = (double)step / (double)total;
	double f = c->lr_min + (1.0 - c->lr_min) * 0.5 * (1.0 + cos(M_PI * t));
	return (float)(c->lr * f);
}

typedef struct train_bufs {
	int32_t *order;     /* (n) sample indices, reshuffled every epoch */
	uint8_t *pixels;    /* (batch, in) */
	int32_t *targets;   /* (batch) */
	float *dlogits;     /* (batch, n_classes) */
} train_bufs;

static void train_bufs_release(train_bufs *b)
{
	free(b->order);
	free(b->pixels);
	free(b->targets);
	free(b->dlogits);
}

/* Fixed-mask fine-tuning: zero the masked gradients (before the step) or weights (after). */
static void masks_apply(tm_model *m, const uint8_t *const *masks, bool grads)
{
	if (!masks)
		return;
	for (int i = 0; i < m->n_layers; i++) {
		tm_layer *l = &m->layers[i];
		if (!masks[i] || !l->w_len)
			continue;
		if (grads)
			tm_prune_mask_apply(masks[i], l->w_len, l->w, l->dw);
		else
			tm_prune_mask_apply(masks[i], l->w_len, l->w, NULL);
	}
}

int tm_train(tm_model *m, const tm_ctx *ctx, const tm_dataset *train, const tm_dataset *test,
	     const tm_train_config *cfg, FILE *log, tm_train_result *res, tm_err *err)
{
	int rc;
	if ((rc = config_check(cfg, err)) < 0 || (rc = dataset_check(m, train, "train", err)) < 0 ||
	    (test && (rc = dataset_check(m, test, "test", err)) < 0))
		return rc;
	int batch = cfg->batch < train->n ? cfg->batch : train->n;
	if ((!m->train || m->max_batch < batch) && (rc = tm_model_plan(m, batch, true, err)) < 0)
		return rc;
	tm_optim opt;
	if ((rc = tm_optim_init(&opt, cfg->optim, m->n_alloc, err)) < 0)
		return rc;
	if (cfg->optim == TM_OPTIM_SGD)
		opt.momentum = cfg->momentum;
	opt.weight_decay = cfg->weight_decay;

	const size_t in = (size_t)train->rows * train->cols;
	const int classes = m->spec.n_classes;
	train_bufs b = {
		.order = tm_xmalloc((size_t)train->n * sizeof(int32_t)),
		.pixels = tm_xmalloc((size_t)batch * in),
		.targets = tm_xmalloc((size_t)batch * sizeof(int32_t)),
		.dlogits = tm_xmalloc((size_t)batch * classes * sizeof(float)),
	};
	for (int i = 0; i < train->n; i++)
		b.order[i] = i;
	tm_rng rng, aug_rng; /* separate streams: augmenting does not change the order */
	tm_rng_seed(&rng, cfg->seed);
	tm_rng_seed(&aug_rng, cfg->seed ^ 0x61756775ull);

	tm_train_result r = {.test_accuracy = -1};
	const int64_t per_epoch = (train->n + batch - 1) / batch;
	const int64_t total = per_epoch * cfg->epochs;
	const uint64_t t0 = tm_now_ns();
	for (int epoch = 1; epoch <= cfg->epochs && !r.stopped; epoch++) {
		tm_rng_shuffle(&rng, b.order, train->n);
		double loss_sum = 0;
		int64_t seen = 0, correct = 0;
		for (int64_t s = 0; s < per_epoch; s++) {
			int off = (int)(s * batch);
			int nb = train->n - off < batch ? train->n - off : batch;
			for (int i = 0; i < nb; i++) {
				int idx = b.order[off + i];
				const uint8_t *src = train->images + (size_t)idx * in;
				if (cfg->augment)
					augment_image(&aug_rng, cfg->augment, train->rows,
						      train->cols, src, b.pixels + (size_t)i * in);
				else
					memcpy(b.pixels + (size_t)i * in, src, in);
				b.targets[i] = train->labels[idx];
			}
			int ok = 0;
			if ((rc = tm_model_forward(m, ctx, nb, b.pixels, NULL, err)) < 0)
				goto out;
			float loss = tm_cross_entropy(nb, classes, m->logits, b.targets, b.dlogits,
						      &ok);
			if (!isfinite(loss)) {
				rc = tm_err_set(err, TM_ESTATE, "train.loss",
						"train: loss is %g at epoch %d step %lld (lr too high?)",
						(double)loss, epoch, (long long)r.steps + 1);
				goto out;
			}
			tm_model_zero_grad(m);
			if ((rc = tm_model_backward(m, ctx, nb, b.dlogits, err)) < 0)
				goto out;
			masks_apply(m, cfg->masks, true);
			tm_optim_step(&opt, m->params, m->grads, lr_at(cfg, r.steps, total));
			masks_apply(m, cfg->masks, false);
			r.steps++;
			loss_sum += (double)loss * nb;
			seen += nb;
			correct += ok;
			double elapsed = (double)(tm_now_ns() - t0) * 1e-9;
			if (log && cfg->log_every && (s + 1) % cfg->log_every == 0) {
				fprintf(log, "epoch=%d step=%lld loss=%.4f train_acc=%.4f lr=%.6f "
					"elapsed_s=%.1f\n", epoch, (long long)r.steps,
					loss_sum / seen, (double)correct / seen,
					(double)lr_at(cfg, r.steps - 1, total), elapsed);
				fflush(log);
			}
			if (cfg->max_seconds > 0 && elapsed >= cfg->max_seconds) {
				r.stopped = true;
				break;
			}
		}
		r.loss = (float)(loss_sum / seen);
		r.train_accuracy = (double)correct / seen;
		r.epochs = epoch - (r.stopped ? 1 : 0);
		if (test && (rc = tm_evaluate(m, ctx, test, &r.test_accuracy, err)) < 0)
			goto out;
		if (log) {
			fprintf(log, "epoch=%d steps=%lld loss=%.4f train_acc=%.4f", epoch,
				(long long)r.steps, (double)r.loss, r.train_accuracy);
			if (test)
				fprintf(log, " test_acc=%.4f", r.test_accuracy);
			fprintf(log, " elapsed_s=%.1f%s\n", (double)(tm_now_ns() - t0) * 1e-9,
				r.stopped ? " stopped=max_seconds" : "");
			fflush(log);
		}
	}
	r.seconds = (double)(tm_now_ns() - t0) * 1e-9;
	rc = 0;
out:
	if (res)
		*res = r;
	train_bufs_release(&b);
	tm_optim_release(&opt);
	return rc;
}
