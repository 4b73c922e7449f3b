/* infer.c: optimized inference of the MLP and CNN image models (tm_infer).  tm_infer_new copies
 * a trained tm_model and applies the config's optimizations for real, in a fixed order:
 * structured pruning (the hidden neurons / conv filters of smallest L1 norm are removed and a
 * smaller model is built from the kept rows and columns) or unstructured magnitude pruning (per
 * layer or one global threshold, with masks); optional fine-tuning on the training set with the
 * masks held fixed (tm_train_config.masks); activation calibration on training images; then one
 * stored representation per layer: FP32 weights prepacked for the kernel set, the conv weights
 * for the FP32 conv kernels, INT8 (tm_qlinear, int8 conv), or sparse (tm_sparse_w, f32 or int8
 * values) where tm_sparse_decide says it pays at max_batch, the choice written into the layer's
 * kernel string.  Consecutive dense INT8 linear layers pass int8 activations (requantized in the
 * GEMM epilogue), and the first layer quantizes pixels through a 256-entry table.  Sizes are
 * the bytes allocated for the stored weights.  The forward fills one profile entry per layer. */
#include "engine.h"
#include "gemm_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CALIB_BATCH 256
#define MAX_FINETUNE_EPOCHS 100
#define MAX_SPARSITY 0.99
#define FINETUNE_MLP_LR 3e-3f       /* Adam, cosine to 0 over the fine-tuning epochs */
#define FINETUNE_MLP_BATCH 64
#define INT8_CONV_MIN_K 32          /* cin * 9 below this: the conv stays FP32 */

// ---- representation ----

typedef enum ikind {
	IK_F32_PACKED = 0,  /* linear: tm_linear_packed */
	IK_F32_CONV = 1,    /* conv: tm_conv3x3_forward on a float copy of W */
	IK_Q8_LINEAR = 2,   /* linear: tm_qlinear */
	IK_Q8_CONV = 3,     /* conv: tm_qconv3x3_forward */
	IK_SPARSE = 4,      /* linear: tm_sparse_linear (f32 or int8 values) */
	IK_RELU = 5,
	IK_POOL = 6,
	IK_FLATTEN = 7,
} ikind;

typedef struct ilayer {
	tm_infer_layer info;        /* public description */
	ikind kind;
	tm_act act;                 /* fused activation of linear / conv */
	bool fused;                 /* relu computed by the previous layer */
	int in_c, in_h, in_w;       /* input shape per sample */
	int out_c, out_h, out_w;    /* output shape per sample */
	size_t in_size, out_size;   /* floats per sample */
	tm_packed_w *pw;
	tm_qlinear *ql;
	tm_sparse_w *sp;
	float *wb;                  /* IK_F32_CONV: (w_len) weights then (out_c) bias; other
				     * linear kinds: (out_c) bias; one aligned allocation */
	const float *bias;          /* into wb */
	const float *w;             /* IK_F32_CONV: into wb */
	bool in_q8;                 /* takes int8 activations (of scale x_scale) */
	bool out_q8;                /* writes int8 activations requantized with out_scale */
	float x_scale, out_scale;
	int64_t run_flops;          /* per sample, as executed (nonzeros for sparse) */
	size_t act_in_bytes, act_out_bytes;  /* per sample */
	float *out;                 /* (max_batch, out_size) float output, or NULL */
	int8_t *outq;               /* (max_batch, out_size) int8 output, or NULL */
	int *kept;                  /* (out_c) source output indices kept, weight layers */
} ilayer;

struct tm_infer {
	tm_model_spec spec;         /* as built (after structured pruning) */
	int n_layers;
	ilayer l[TM_MODEL_MAX_LAYERS];
	int max_batch;
	int classes;
	size_t in_size;             /* pixels per sample */
	float pre[256];             /* pixel -> preprocessed float */
	int8_t pre_q[256];          /* pixel -> int8 at the first layer's x_scale */
	float *x;                   /* (max_batch, in_size) */
	int8_t *xq;                 /* (max_batch, largest input) int8 staging */
	void *scratch;              /* conv im2col (float or int8), scratch_bytes */
	size_t scratch_bytes;
	float *logits_buf;          /* (max_batch, classes) for tm_infer_evaluate */
	tm_infer_stats stats;
};

/* Activations and scratch are read and written on every query too: tm_alloc_hot, so the
 * CNN's batch-sized buffers (hundreds of KiB to MiB) sit in huge pages like the weights. */
static void *falloc(size_t bytes)
{
	return tm_alloc_hot(bytes ? bytes : 64);
}

void tm_infer_opts_default(tm_infer_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->max_batch = 1;
	o->quantize = false;
	o->gran = TM_QGRAN_CHANNEL;
	o->calib_samples = 512;
	o->calib = TM_QCALIB_MINMAX;
	o->calib_percentile = 99.99;
	o->sparsity = 0.0;
	o->structured = false;
	o->prune_global = false;
	o->finetune_epochs = 0;
	o->seed = 1;
}

void tm_infer_free(tm_infer *inf)
{
	if (!inf)
		return;
	for (int i = 0; i < inf->n_layers; i++) {
		ilayer *l = &inf->l[i];
		tm_packed_w_free(l->pw);
		tm_qlinear_free(l->ql);
		tm_sparse_free(l->sp);
		tm_free_aligned(l->wb);
		tm_free_aligned(l->out);
		tm_free_aligned(l->outq);
		free(l->kept);
	}
	tm_free_aligned(inf->x);
	tm_free_aligned(inf->xq);
	tm_free_aligned(inf->scratch);
	tm_free_aligned(inf->logits_buf);
	free(inf);
}

// ---- checks ----

static int opts_check(const tm_model *m, const tm_infer_opts *o, const tm_dataset *train,
		      tm_err *err)
{
	if (m->spec.family != TM_FAMILY_MLP && m->spec.family != TM_FAMILY_CNN)
		return tm_err_set(err, TM_EINVAL, "model",
				  "infer: model family '%s' is not an image model (mlp, cnn)",
				  tm_family_name(m->spec.family));
	if (o->max_batch < 1 || o->max_batch > 65536)
		return tm_err_set(err, TM_EINVAL, "max_batch",
				  "infer: 'max_batch' is %d, must be in [1, 65536]", o->max_batch);
	if (!(o->sparsity >= 0.0 && o->sparsity <= MAX_SPARSITY))
		return tm_err_set(err, TM_EINVAL, "sparsity",
				  "infer: 'sparsity' is %g, must be in [0, %g]", o->sparsity,
				  MAX_SPARSITY);
	if (o->finetune_epochs < 0 || o->finetune_epochs > MAX_FINETUNE_EPOCHS)
		return tm_err_set(err, TM_EINVAL, "finetune_epochs",
				  "infer: 'finetune_epochs' is %d, must be in [0, %d]",
				  o->finetune_epochs, MAX_FINETUNE_EPOCHS);
	if (o->quantize) {
		if (o->gran != TM_QGRAN_CHANNEL && o->gran != TM_QGRAN_TENSOR)
			return tm_err_set(err, TM_EINVAL, "gran",
					  "infer: weight granularity %d is unknown", (int)o->gran);
		if (o->calib != TM_QCALIB_MINMAX && o->calib != TM_QCALIB_PERCENTILE)
			return tm_err_set(err, TM_EINVAL, "calib",
					  "infer: calibration method %d is unknown", (int)o->calib);
		if (o->calib == TM_QCALIB_PERCENTILE &&
		    !(o->calib_percentile > 0.0 && o->calib_percentile <= 100.0))
			return tm_err_set(err, TM_EINVAL, "calib_percentile",
					  "infer: 'calib_percentile' is %g, must be in (0, 100]",
					  o->calib_percentile);
		if (o->calib_samples < 1)
			return tm_err_set(err, TM_EINVAL, "calib_samples",
					  "infer: 'calib_samples' is %d, must be >= 1",
					  o->calib_samples);
	}
	bool need_train = o->quantize || o->finetune_epochs > 0;
	if (need_train && !train)
		return tm_err_set(err, TM_EINVAL, "train",
				  "infer: %s needs the training set, none was given",
				  o->quantize ? "int8 calibration" : "fine-tuning");
	if (need_train) {
		const tm_model_spec *s = &m->spec;
		if (train->n < 1 || !train->images || !train->labels)
			return tm_err_set(err, TM_EINVAL, "train", "infer: the training set is empty");
		if (s->in_c != 1 || train->rows != s->in_h || train->cols != s->in_w)
			return tm_err_set(err, TM_EINVAL, "train",
					  "infer: training images are %dx%d, the model takes %dx%dx%d",
					  train->rows, train->cols, s->in_c, s->in_h, s->in_w);
	}
	return 0;
}

// ---- pruning ----

static tm_model *model_copy(const tm_model *m, tm_err *err)
{
	tm_model *c = tm_model_new(&m->spec, err);
	if (!c)
		return NULL;
	memcpy(c->params, m->params, m->n_alloc * sizeof(float));
	return c;
}

typedef struct scored {
	double score;
	int idx;
} scored;

static int scored_cmp(const void *a, const void *b)
{
	const scored *x = a, *y = b;
	if (x->score != y->score)
		return x->score < y->score ? -1 : 1;
	return x->idx - y->idx;
}

static int int_cmp(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;
	return (x > y) - (x < y);
}

static int last_weight_layer(const tm_model *m)
{
	int last = -1;
	for (int i = 0; i < m->n_layers; i++)
		if (m->layers[i].w_len)
			last = i;
	return last;
}

/* Output units (rows / filters) of layer l kept by structured pruning at sparsity: the
 * tm_prune_count(out, sparsity) of smallest L1 norm (ties: lower index first) are removed, at
 * least one is kept.  Returns the kept indices ascending (malloc'd) and their count in *n. */
static int *keep_units(const tm_layer *l, double sparsity, bool prune, int *n)
{
	int out = l->out_c;
	size_t row = l->w_len / (size_t)out;
	int remove = prune ? (int)tm_prune_count((size_t)out, sparsity) : 0;
	if (remove > out - 1)
		remove = out - 1;
	scored *s = tm_xmalloc(sizeof(*s) * (size_t)out);
	for (int r = 0; r < out; r++) {
		double sum = 0.0;
		for (size_t j = 0; j < row; j++)
			sum += fabsf(l->w[(size_t)r * row + j]);
		s[r] = (scored){ .score = sum, .idx = r };
	}
	qsort(s, (size_t)out, sizeof(*s), scored_cmp);
	int *kept = tm_xmalloc(sizeof(int) * (size_t)(out - remove));
	for (int r = remove; r < out; r++)
		kept[r - remove] = s[r].idx;
	qsort(kept, (size_t)(out - remove), sizeof(int), int_cmp);
	free(s);
	*n = out - remove;
	return kept;
}

/* Build the smaller model: every weight layer but the last loses its pruned output units, and
 * the layer after it the matching input columns (a channel of a flattened conv output is a
 * group of h*w columns).  kept[i] gets layer i's kept units (identity for the last layer). */
static tm_model *prune_structured(const tm_model *src, double sparsity, int **kept,
				  tm_err *err)
{
	int last = last_weight_layer(src), n_kept[TM_MODEL_MAX_LAYERS] = {0};
	for (int i = 0; i < src->n_layers; i++)
		if (src->layers[i].w_len)
			kept[i] = keep_units(&src->layers[i], sparsity, i != last, &n_kept[i]);
	tm_model_spec spec = src->spec;
	int h = 0;
	for (int i = 0; i < src->n_layers; i++) {
		if (!src->layers[i].w_len || i == last)
			continue;
		if (spec.family == TM_FAMILY_MLP)
			spec.hidden[h++] = n_kept[i];
		else if (h++ == 0)
			spec.c1 = n_kept[i];
		else
			spec.c2 = n_kept[i];
	}
	tm_model *dst = tm_model_new(&spec, err);
	if (!dst)
		return NULL;
	const int *prev = NULL;  /* kept units of the previous weight layer */
	int prev_src = 0, prev_n = 0;
	for (int i = 0; i < src->n_layers; i++) {
		const tm_layer *S = &src->layers[i];
		tm_layer *D = &dst->layers[i];
		if (!S->w_len)
			continue;
		bool conv = S->op == TM_OP_CONV3X3;
		int units = prev ? prev_src : S->in_c;     /* source input units */
		size_t inner = conv ? 9 : (size_t)S->in_c / (size_t)units;
		int d_units = prev ? prev_n : units;
		size_t s_row = (size_t)units * inner, d_row = (size_t)d_units * inner;
		for (int r = 0; r < n_kept[i]; r++) {
			int o = kept[i][r];
			for (int c = 0; c < d_units; c++) {
				int ic = prev ? prev[c] : c;
				memcpy(D->w + (size_t)r * d_row + (size_t)c * inner,
				       S->w + (size_t)o * s_row + (size_t)ic * inner,
				       inner * sizeof(float));
			}
			D->b[r] = S->b[o];
		}
		prev = kept[i];
		prev_src = S->out_c;
		prev_n = n_kept[i];
	}
	return dst;
}

static int prune_unstructured(tm_model *m, const tm_infer_opts *o, uint8_t **masks, tm_err *err)
{
	tm_prune_tensor t[TM_MODEL_MAX_LAYERS];
	int nt = 0, rc;
	for (int i = 0; i < m->n_layers; i++) {
		tm_layer *l = &m->layers[i];
		if (!l->w_len)
			continue;
		masks[i] = tm_xmalloc(l->w_len);
		t[nt++] = (tm_prune_tensor){ .w = l->w, .len = l->w_len, .mask = masks[i] };
	}
	if (o->prune_global)
		return tm_prune_magnitude_global(t, nt, o->sparsity, NULL, err);
	for (int i = 0; i < nt; i++)
		if ((rc = tm_prune_magnitude(t[i].w, t[i].len, o->sparsity, t[i].mask, NULL, err)) < 0)
			return rc;
	return 0;
}

static int finetune(tm_model *m, const tm_infer_opts *o, const tm_ctx *ctx,
		    const tm_dataset *train, uint8_t **masks, FILE *log, tm_err *err)
{
	tm_train_config cfg;
	const char *event = m->spec.family == TM_FAMILY_MLP ? "mlp_sprint" : "cnn_marathon";
	int rc = tm_train_config_reference(&cfg, event, err);
	if (rc < 0)
		return rc;
	if (m->spec.family == TM_FAMILY_MLP) {
		/* a pruned MLP recovers faster with a higher peak lr and smaller batches than the
		 * reference recipe's (docs/optimizations.md has the grid) */
		cfg.lr = FINETUNE_MLP_LR;
		cfg.batch = FINETUNE_MLP_BATCH;
	}
	cfg.epochs = o->finetune_epochs;
	cfg.seed = o->seed;
	cfg.log_every = 0;
	cfg.masks = (const uint8_t *const *)masks;
	tm_train_result res;
	if ((rc = tm_train(m, ctx, train, NULL, &cfg, log, &res, err)) < 0)
		return rc;
	if (log)
		fprintf(log, "infer: fine-tuned epochs=%d loss=%.4f train_acc=%.4f seconds=%.1f\n",
			res.epochs, (double)res.loss, res.train_accuracy, res.seconds);
	return 0;
}

// ---- calibration ----

/* Activation scales of the input of every linear / conv layer of m, from the FP32 activations
 * of calib_samples training images drawn (seeded) without replacement. */
static int calibrate(tm_model *m, const tm_infer_opts *o, const tm_ctx *ctx,
		     const tm_dataset *train, float *scales, tm_err *err)
{
	int n = o->calib_samples < train->n ? o->calib_samples : train->n;
	int batch = n < CALIB_BATCH ? n : CALIB_BATCH, rc;
	if ((rc = tm_model_plan(m, batch, false, err)) < 0)
		return rc;
	tm_qcalib *cal[TM_MODEL_MAX_LAYERS] = {0};
	for (int i = 0; i < m->n_layers; i++)
		if (m->layers[i].w_len &&
		    (rc = tm_qcalib_new(o->calib, o->calib_percentile, &cal[i], err)) < 0)
			goto out;
	int32_t *order = tm_xmalloc(sizeof(int32_t) * (size_t)train->n);
	for (int i = 0; i < train->n; i++)
		order[i] = i;
	tm_rng rng;
	tm_rng_seed(&rng, o->seed ^ 0x63616c6962ull);
	for (int i = 0; i < n; i++) { /* partial Fisher-Yates: the first n of a shuffle */
		int j = i + (int)tm_rng_below(&rng, (uint32_t)(train->n - i));
		int32_t t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	size_t in = (size_t)train->rows * train->cols;
	uint8_t *pix = tm_xmalloc(in * (size_t)batch);
	for (int off = 0; off < n && rc == 0; off += batch) {
		int nb = n - off < batch ? n - off : batch;
		for (int s = 0; s < nb; s++)
			memcpy(pix + in * s, train->images + in * (size_t)order[off + s], in);
		if ((rc = tm_model_forward(m, ctx, nb, pix, NULL, err)) < 0)
			break;
		for (int i = 0; i < m->n_layers; i++) {
			const tm_layer *l = &m->layers[i];
			if (!cal[i])
				continue;
			const float *x = i ? m->out[i - 1] : m->x;
			tm_qcalib_add(cal[i], (size_t)nb * l->in_c * l->in_h * l->in_w, x);
		}
	}
	for (int i = 0; i < m->n_layers; i++)
		if (cal[i])
			scales[i] = tm_qcalib_scale(cal[i]);
	free(pix);
	free(order);
out:
	for (int i = 0; i < m->n_layers; i++)
		tm_qcalib_free(cal[i]);
	return rc;
}

// ---- building the layers ----

static size_t packed_bytes(const tm_packed_w *pw)
{
	size_t rows = pw->layout == GEMM_LAYOUT_PANELS
			      ? (size_t)(pw->n + pw->nr - 1) / pw->nr * pw->nr : (size_t)pw->n;
	return rows * (size_t)pw->k * sizeof(float);
}

/* Append s to the NUL-terminated dst of capacity cap, truncating. */
static void str_append(char *dst, size_t cap, const char *s)
{
	size_t used = strlen(dst), n = strlen(s);
	if (used + 1 >= cap)
		return;
	if (n > cap - used - 1)
		n = cap - used - 1;
	memcpy(dst + used, s, n);
	dst[used + n] = '\0';
}

static int64_t count_nonzero(const float *v, size_t n)
{
	int64_t c = 0;
	for (size_t i = 0; i < n; i++)
		c += v[i] != 0.0f;
	return c;
}

/* The stored representation of weight layer ml (of the final FP32 model) as layer l. */
static int build_weights(ilayer *l, const tm_layer *ml, const tm_infer_opts *o,
			 const tm_ctx *ctx, float x_scale, bool unstructured, tm_err *err)
{
	int n = ml->out_c, k = (int)(ml->w_len / (size_t)n), rc;
	bool conv = ml->op == TM_OP_CONV3X3;
	tm_isa isa = ctx ? ctx->isa : TM_ISA_PORTABLE;
	char *kern = l->info.kernel;
	size_t kl = sizeof(l->info.kernel);
	double zeros = tm_sparsity(ml->w, ml->w_len);
	l->info.nonzero = count_nonzero(ml->w, ml->w_len) + count_nonzero(ml->b, ml->b_len);
	l->run_flops = ml->flops;
	/* bias (and the conv's float weights) in one allocation */
	/* int8 conv with a short patch (the first conv: one channel, k = 9) loses to the FP32
	 * kernel: quantizing, gathering and transposing cost more than the products save */
	bool q8 = o->quantize && !(conv && k < INT8_CONV_MIN_K);
	size_t wfloats = conv && !q8 ? ml->w_len : 0;
	l->wb = tm_alloc_hot((wfloats + (size_t)n) * sizeof(float));
	if (!l->wb)
		return tm_err_set(err, TM_ENOMEM, l->info.name, "infer: layer '%s': out of memory",
				  l->info.name);
	memcpy(l->wb, ml->w, wfloats * sizeof(float));
	memcpy(l->wb + wfloats, ml->b, (size_t)n * sizeof(float));
	l->w = wfloats ? l->wb : NULL;
	l->bias = l->wb + wfloats;
	size_t bias_bytes = (size_t)n * sizeof(float);

	bool sparse = false;
	char why[96] = "";
	if (!conv && unstructured) {
		sparse = o->quantize ? tm_sparse_decide_q8(isa, n, k, zeros, o->max_batch, why,
							   sizeof(why))
				     : tm_sparse_decide(isa, n, k, zeros, o->max_batch, why,
							sizeof(why));
	}
	if (sparse) {
		rc = o->quantize ? tm_sparse_new_q8(ctx, n, k, ml->w, TM_SPARSE_AUTO, &l->sp, err)
				 : tm_sparse_new(ctx, n, k, ml->w, TM_SPARSE_AUTO, &l->sp, err);
		if (rc < 0)
			return rc;
		tm_sparse_info si;
		tm_sparse_get_info(l->sp, &si);
		l->kind = IK_SPARSE;
		l->info.bytes = si.bytes + bias_bytes;
		l->run_flops = 2 * si.nnz + n;
		snprintf(kern, kl, "sparse %s %s, %.1f%% zeros (break-even %.0f%%)",
			 tm_sparse_format_name(si.format), si.int8 ? "int8" : "f32", 100.0 * zeros,
			 100.0 * (o->quantize ? tm_sparse_break_even_q8(isa, n, k, o->max_batch)
					      : tm_sparse_break_even(isa, n, k, o->max_batch)));
		return 0;
	}
	char dense_why[64] = "";
	if (unstructured) {
		double be = conv ? 1.0
			    : o->quantize ? tm_sparse_break_even_q8(isa, n, k, o->max_batch)
					  : tm_sparse_break_even(isa, n, k, o->max_batch);
		if (conv)
			snprintf(dense_why, sizeof(dense_why), " (%.1f%% zeros, no sparse conv)",
				 100.0 * zeros);
		else
			snprintf(dense_why, sizeof(dense_why), ": %.1f%% zeros < %.0f%% break-even",
				 100.0 * zeros, 100.0 * be);
	}
	if (q8) {
		if ((rc = tm_qlinear_new(n, k, ml->w, ml->b, o->gran, x_scale, &l->ql, err)) < 0)
			return rc;
		tm_ctx qc = { .isa = isa, .pool = NULL };
		l->kind = conv ? IK_Q8_CONV : IK_Q8_LINEAR;
		l->x_scale = x_scale;
		l->info.bytes = tm_qlinear_bytes(l->ql);  /* includes the bias */
		snprintf(kern, kl, "%sint8 %s%s", unstructured ? "dense " : "",
			 conv ? "conv " : "", tm_qgemm_kernels_name(&qc));
		str_append(kern, kl, dense_why);
		return 0;
	}
	if (conv) {
		l->kind = IK_F32_CONV;
		l->info.bytes = (ml->w_len + (size_t)n) * sizeof(float);
		snprintf(kern, kl, "f32 im2col %s", tm_isa_name(isa));
		str_append(kern, kl, dense_why);
		if (o->quantize)
			str_append(kern, kl, " (int8 does not pay at k < 32)");
		return 0;
	}
	if ((rc = tm_linear_pack(ctx, n, k, ml->w, &l->pw, err)) < 0)
		return rc;
	l->kind = IK_F32_PACKED;
	l->info.bytes = packed_bytes(l->pw) + bias_bytes;
	snprintf(kern, kl, "%sf32 packed %s", unstructured ? "dense " : "", tm_isa_name(isa));
	str_append(kern, kl, dense_why);
	return 0;
}

static int next_consumer(const tm_infer *inf, int i)
{
	int j = i + 1;
	if (j < inf->n_layers && inf->l[j].kind == IK_RELU && inf->l[j].fused)
		j++;
	return j < inf->n_layers ? j : -1;
}

/* Layers, int8 hand-offs, buffers and stats from the final FP32 model m. */
static int build(tm_infer *inf, const tm_model *m, const tm_infer_opts *o, const tm_ctx *ctx,
		 const float *scales, tm_err *err)
{
	int rc;
	inf->spec = m->spec;
	inf->n_layers = m->n_layers;
	inf->max_batch = o->max_batch;
	inf->classes = m->spec.n_classes;
	inf->in_size = (size_t)m->spec.in_c * m->spec.in_h * m->spec.in_w;
	bool unstructured = o->sparsity > 0.0 && !o->structured;
	size_t largest_in = inf->in_size, scratch = 0;
	for (int i = 0; i < m->n_layers; i++) {
		const tm_layer *ml = &m->layers[i];
		ilayer *l = &inf->l[i];
		snprintf(l->info.name, sizeof(l->info.name), "%s", ml->name);
		l->info.op = ml->op;
		l->info.in_c = ml->in_c;
		l->info.out_c = ml->out_c;
		l->info.params = (int64_t)(ml->w_len + ml->b_len);
		l->info.flops = ml->flops;
		l->act = ml->act;
		l->fused = ml->fused;
		l->in_c = ml->in_c;
		l->in_h = ml->in_h;
		l->in_w = ml->in_w;
		l->out_c = ml->out_c;
		l->out_h = ml->out_h;
		l->out_w = ml->out_w;
		l->in_size = (size_t)ml->in_c * ml->in_h * ml->in_w;
		l->out_size = (size_t)ml->out_c * ml->out_h * ml->out_w;
		l->run_flops = ml->flops;
		if (l->in_size > largest_in)
			largest_in = l->in_size;
		switch (ml->op) {
		case TM_OP_LINEAR:
		case TM_OP_CONV3X3:
			if ((rc = build_weights(l, ml, o, ctx, scales ? scales[i] : 1.0f,
						unstructured, err)) < 0)
				return rc;
			break;
		case TM_OP_RELU:
			l->kind = IK_RELU;
			snprintf(l->info.kernel, sizeof(l->info.kernel), "%s",
				 ml->fused ? "fused into the previous layer" : "portable");
			break;
		case TM_OP_MAXPOOL2:
			l->kind = IK_POOL;
			snprintf(l->info.kernel, sizeof(l->info.kernel), "portable");
			break;
		case TM_OP_FLATTEN:
			l->kind = IK_FLATTEN;
			snprintf(l->info.kernel, sizeof(l->info.kernel), "view, no data movement");
			break;
		}
		if (l->kind == IK_F32_CONV) {
			size_t s = tm_conv3x3_scratch_floats(l->in_c, l->in_h, l->in_w) * sizeof(float);
			scratch = s > scratch ? s : scratch;
		} else if (l->kind == IK_Q8_CONV) {
			size_t s = tm_qconv3x3_scratch_bytes(l->in_c, l->in_h, l->in_w, l->out_c);
			scratch = s > scratch ? s : scratch;
		}
		inf->stats.params += l->info.params;
		inf->stats.nonzero_params += l->info.nonzero;
		inf->stats.bytes += l->info.bytes;
		inf->stats.flops += l->info.flops;
	}
	/* int8 hand-offs: a dense int8 linear layer feeding another one writes int8 */
	inf->l[0].in_q8 = inf->l[0].kind == IK_Q8_LINEAR;
	for (int i = 0; i < inf->n_layers; i++) {
		ilayer *l = &inf->l[i];
		int c = next_consumer(inf, i);
		if (l->kind == IK_Q8_LINEAR && c >= 0 && inf->l[c].kind == IK_Q8_LINEAR) {
			l->out_q8 = true;
			l->out_scale = inf->l[c].x_scale;
			inf->l[c].in_q8 = true;
		}
	}
	/* buffers: fused relu and flatten pass their input through */
	size_t mb = (size_t)inf->max_batch;
	bool q8_in = inf->l[0].in_q8;  /* the current activation is int8 */
	for (int i = 0; i < inf->n_layers; i++) {
		ilayer *l = &inf->l[i];
		if (l->kind == IK_FLATTEN || (l->kind == IK_RELU && l->fused))
			continue;  /* no bytes moved */
		l->act_in_bytes = l->in_size * (q8_in ? 1 : sizeof(float));
		if (l->out_q8) {
			l->outq = falloc(mb * l->out_size);
			l->act_out_bytes = l->out_size;
		} else {
			l->out = falloc(mb * l->out_size * sizeof(float));
			l->act_out_bytes = l->out_size * sizeof(float);
		}
		if (!l->out && !l->outq)
			return tm_err_set(err, TM_ENOMEM, "infer", "infer: cannot allocate activations");
		q8_in = l->out_q8;
	}
	inf->x = falloc(mb * inf->in_size * sizeof(float));
	inf->xq = falloc(mb * largest_in);
	inf->scratch = scratch ? falloc(scratch) : NULL;
	inf->scratch_bytes = scratch;
	inf->logits_buf = falloc(mb * (size_t)inf->classes * sizeof(float));
	if (!inf->x || !inf->xq || (scratch && !inf->scratch) || !inf->logits_buf)
		return tm_err_set(err, TM_ENOMEM, "infer", "infer: cannot allocate activations");
	for (int v = 0; v < 256; v++) {
		inf->pre[v] = ((float)v / 255.0f - TM_FMNIST_MEAN) / TM_FMNIST_SD;
		if (inf->l[0].in_q8)
			tm_quantize_act(1, &inf->pre[v], inf->l[0].x_scale, &inf->pre_q[v]);
	}
	return 0;
}

int tm_infer_new(const tm_model *m, const tm_infer_opts *o, const tm_ctx *ctx,
		 const tm_dataset *train, FILE *log, tm_infer **out, tm_err *err)
{
	*out = NULL;
	int rc = opts_check(m, o, train, err);
	if (rc < 0)
		return rc;
	tm_infer *inf = tm_xcalloc(1, sizeof(*inf));
	uint8_t *masks[TM_MODEL_MAX_LAYERS] = {0};
	int *kept[TM_MODEL_MAX_LAYERS] = {0};
	float scales[TM_MODEL_MAX_LAYERS];
	tm_model *w = model_copy(m, err);
	if (!w) {
		rc = err ? err->code : TM_ENOMEM;
		goto fail;
	}
	if (o->sparsity > 0.0 && o->structured) {
		tm_model *small = prune_structured(w, o->sparsity, kept, err);
		if (!small) {
			rc = err ? err->code : TM_ENOMEM;
			goto fail;
		}
		tm_model_free(w);
		w = small;
		if (log) {
			char s[128];
			tm_model_spec_str(&w->spec, s, sizeof(s));
			fprintf(log, "infer: structured pruning %.2f -> %s\n", o->sparsity, s);
		}
	} else if (o->sparsity > 0.0 && (rc = prune_unstructured(w, o, masks, err)) < 0) {
		goto fail;
	}
	if (o->finetune_epochs > 0 && (rc = finetune(w, o, ctx, train, masks, log, err)) < 0)
		goto fail;
	if (o->quantize && (rc = calibrate(w, o, ctx, train, scales, err)) < 0)
		goto fail;
	if ((rc = build(inf, w, o, ctx, o->quantize ? scales : NULL, err)) < 0)
		goto fail;
	for (int i = 0; i < w->n_layers; i++) {
		if (!w->layers[i].w_len)
			continue;
		if (!kept[i]) { /* identity */
			kept[i] = tm_xmalloc(sizeof(int) * (size_t)w->layers[i].out_c);
			for (int r = 0; r < w->layers[i].out_c; r++)
				kept[i][r] = r;
		}
		inf->l[i].kept = kept[i];
		kept[i] = NULL;
	}
	for (int i = 0; i < TM_MODEL_MAX_LAYERS; i++)
		free(masks[i]);
	tm_model_free(w);
	*out = inf;
	return 0;
fail:
	for (int i = 0; i < TM_MODEL_MAX_LAYERS; i++) {
		free(masks[i]);
		free(kept[i]);
	}
	tm_model_free(w);
	tm_infer_free(inf);
	return rc < 0 ? rc : TM_ENOMEM;
}

// ---- forward ----

/* Max-pool 2x2 for inference: the values tm_maxpool2_forward gives (the window is compared in
 * the same order, a later element wins only when strictly greater, so ties and NaNs resolve
 * the same), without recording the argmax, so the compiler can drop the branches. */
static void maxpool2(int n, int c, int h, int w, const float *x, float *y)
{
	int oh = h / 2, ow = w / 2;
	for (size_t pl = 0; pl < (size_t)n * c; pl++) {
		const float *xp = x + pl * h * w;
		float *yp = y + pl * oh * ow;
		for (int oy = 0; oy < oh; oy++) {
			const float *r0 = xp + (size_t)2 * oy * w, *r1 = r0 + w;
			float *yr = yp + (size_t)oy * ow;
			for (int ox = 0; ox < ow; ox++) {
				float m = r0[2 * ox], v = r0[2 * ox + 1];
				m = v > m ? v : m;
				v = r1[2 * ox];
				m = v > m ? v : m;
				v = r1[2 * ox + 1];
				yr[ox] = v > m ? v : m;
			}
		}
	}
}

static void layer_run(const tm_infer *inf, const ilayer *l, const tm_ctx *ctx, int n,
		      const float *xf, const int8_t *xq)
{
	switch (l->kind) {
	case IK_F32_PACKED:
		tm_linear_packed(ctx, n, l->pw, xf, l->bias, l->act, l->out);
		break;
	case IK_SPARSE:
		tm_sparse_linear(ctx, n, l->sp, xf, l->bias, l->act, l->out);
		break;
	case IK_F32_CONV:
		tm_conv3x3_forward(ctx, n, l->in_c, l->in_h, l->in_w, l->out_c, xf, l->w, l->bias,
				   l->act, l->out, inf->scratch);
		break;
	case IK_Q8_CONV:
		tm_qconv3x3_forward(ctx, l->ql, n, l->in_c, l->in_h, l->in_w, xf, l->act, l->out,
				    inf->scratch);
		break;
	case IK_Q8_LINEAR:
		if (!xq && l->out_q8) { /* float input: quantize as tm_qlinear_forward would */
			tm_quantize_act((size_t)n * l->in_size, xf, l->x_scale, inf->xq);
			xq = inf->xq;
		}
		if (!xq)
			tm_qlinear_forward(ctx, l->ql, n, xf, l->act, l->out);
		else if (l->out_q8)
			tm_qlinear_forward_q8(ctx, l->ql, n, xq, l->x_scale, l->act, l->out_scale,
					      l->outq);
		else
			tm_qlinear_forward_q(ctx, l->ql, n, xq, l->x_scale, l->act, l->out);
		break;
	case IK_RELU:
		if (!l->fused)
			tm_relu_forward((size_t)n * l->out_size, xf, l->out);
		break;
	case IK_POOL:
		maxpool2(n, l->in_c, l->in_h, l->in_w, xf, l->out);
		break;
	case IK_FLATTEN:
		break;
	}
}

int tm_infer_forward(tm_infer *inf, const tm_ctx *ctx, int n, const uint8_t *pixels,
		     float *logits, tm_prof *prof, tm_err *err)
{
	if (n < 1 || n > inf->max_batch)
		return tm_err_set(err, TM_EINVAL, "batch", "infer: batch %d, must be in [1, %d]", n,
				  inf->max_batch);
	if (!pixels || !logits)
		return tm_err_set(err, TM_EINVAL, "infer", "infer: pixels and logits are required");
	uint64_t t = prof ? tm_now_ns() : 0;
	size_t len = (size_t)n * inf->in_size;
	const float *xf = NULL;
	const int8_t *xq = NULL;
	if (inf->l[0].in_q8) {
		for (size_t i = 0; i < len; i++)
			inf->xq[i] = inf->pre_q[pixels[i]];
		xq = inf->xq;
	} else {
		for (size_t i = 0; i < len; i++)
			inf->x[i] = inf->pre[pixels[i]];
		xf = inf->x;
	}
	for (int i = 0; i < inf->n_layers; i++) {
		const ilayer *l = &inf->l[i];
		layer_run(inf, l, ctx, n, xf, xq);
		if (l->out) {
			xf = l->out;
			xq = NULL;
		} else if (l->outq) {
			xq = l->outq;
			xf = NULL;
		}
		if (prof) {
			uint64_t now = tm_now_ns();
			tm_prof_entry *e = tm_prof_entry_get(prof, l->info.name,
							     tm_op_name(l->info.op), l->info.kernel);
			int64_t bytes = (int64_t)l->info.bytes +
					(int64_t)n * (int64_t)(l->act_in_bytes + l->act_out_bytes);
			tm_prof_add(e, (int64_t)(now - t), l->run_flops * n, bytes);
			t = now;
		}
	}
	memcpy(logits, xf, (size_t)n * inf->classes * sizeof(float));
	return 0;
}

static int argmax(const float *v, int n)
{
	int best = 0;
	for (int i = 1; i < n; i++)
		if (v[i] > v[best])
			best = i;
	return best;
}

int tm_infer_evaluate(tm_infer *inf, const tm_ctx *ctx, const tm_dataset *ds, double *accuracy,
		      tm_err *err)
{
	const tm_model_spec *s = &inf->spec;
	if (ds->n < 1)
		return tm_err_set(err, TM_EINVAL, "evaluate", "infer: evaluation set is empty");
	if ((size_t)ds->rows * ds->cols != inf->in_size)
		return tm_err_set(err, TM_EINVAL, "evaluate",
				  "infer: images are %dx%d, the model takes %dx%dx%d", ds->rows,
				  ds->cols, s->in_c, s->in_h, s->in_w);
	int64_t correct = 0;
	int rc;
	for (int off = 0; off < ds->n; off += inf->max_batch) {
		int nb = ds->n - off < inf->max_batch ? ds->n - off : inf->max_batch;
		if ((rc = tm_infer_forward(inf, ctx, nb, ds->images + (size_t)off * inf->in_size,
					   inf->logits_buf, NULL, err)) < 0)
			return rc;
		for (int i = 0; i < nb; i++)
			correct += argmax(inf->logits_buf + (size_t)i * inf->classes,
					  inf->classes) == ds->labels[off + i];
	}
	*accuracy = (double)correct / ds->n;
	return 0;
}

// ---- reporting ----

void tm_infer_get_stats(const tm_infer *inf, tm_infer_stats *st)
{
	*st = inf->stats;
}

int tm_infer_n_layers(const tm_infer *inf)
{
	return inf->n_layers;
}

const tm_infer_layer *tm_infer_layer_at(const tm_infer *inf, int i)
{
	if (!inf || i < 0 || i >= inf->n_layers)
		return NULL;
	return &inf->l[i].info;
}

const int *tm_infer_kept(const tm_infer *inf, int i, int *n)
{
	*n = 0;
	if (!inf || i < 0 || i >= inf->n_layers || !inf->l[i].kept)
		return NULL;
	*n = inf->l[i].out_c;
	return inf->l[i].kept;
}

const tm_model_spec *tm_infer_spec(const tm_infer *inf)
{
	return &inf->spec;
}
