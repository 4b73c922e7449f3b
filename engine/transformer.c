/* transformer.c: the decoder-only transformer of the Transformer Decathlon and its trainer.
 * The model (pre-LayerNorm GPT-2 blocks, learned positions, GELU MLP, untied head) runs over
 * packed rows: several sequences share a row of spec.ctx positions, positions restart for each
 * and the attention mask (seg ids) keeps them apart.  Parameters are one allocation carved into
 * tensors, weight matrices first so that weight decay covers one contiguous range; gradients
 * mirror it; activations come from one arena per (model, rows).  Forward computes logits only
 * where asked (the answer positions when training, the last position of each sequence when
 * generating).  Then greedy generation without a cache, safetensors save/load with PyTorch
 * names, the Decathlon evaluator and the AdamW training recipe.  See docs/decathlon.md. */
#include "engine.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TF_CHUNKS 16      /* fixed work split of the element-wise ops */
#define TF_GEN_ROWS 16    /* packed rows per forward when generating */
#define TF_EVAL_ROWS 32   /* packed rows per forward in teacher-forced evaluation */

// ---- spec ----

void tm_tf_spec_reference(tm_tf_spec *s)
{
	s->ctx = 128;
	s->d_model = 128;
	s->n_head = 8;
	s->n_layer = 2;
	s->d_ff = 512;
	s->vocab = tm_dec_vocab_size();
}

int tm_tf_spec_check(const tm_tf_spec *s, tm_err *err)
{
	static const struct {
		const char *name;
		size_t off;
		int lo, hi;
	} lim[] = {
		{ "ctx", offsetof(tm_tf_spec, ctx), 1, 4096 },
		{ "d_model", offsetof(tm_tf_spec, d_model), 1, 4096 },
		{ "n_head", offsetof(tm_tf_spec, n_head), 1, 256 },
		{ "n_layer", offsetof(tm_tf_spec, n_layer), 1, TM_TF_MAX_LAYERS },
		{ "d_ff", offsetof(tm_tf_spec, d_ff), 1, 65536 },
		{ "vocab", offsetof(tm_tf_spec, vocab), 1, 1 << 20 },
	};
	for (size_t i = 0; i < sizeof(lim) / sizeof(lim[0]); i++) {
		int v = *(const int *)((const char *)s + lim[i].off);
		if (v < lim[i].lo || v > lim[i].hi)
			return tm_err_set(err, TM_EINVAL, lim[i].name,
					  "transformer: '%s' is %d, must be in [%d, %d]",
					  lim[i].name, v, lim[i].lo, lim[i].hi);
	}
	if (s->d_model % s->n_head != 0)
		return tm_err_set(err, TM_EINVAL, "n_head",
				  "transformer: 'n_head' is %d, must divide d_model %d", s->n_head,
				  s->d_model);
	if (tm_tf_spec_params(s) > ((size_t)1 << 31))
		return tm_err_set(err, TM_ELIMIT, "params",
				  "transformer: %zu parameters, must be at most 2^31",
				  tm_tf_spec_params(s));
	return 0;
}

size_t tm_tf_spec_params(const tm_tf_spec *s)
{
	size_t d = (size_t)s->d_model, ff = (size_t)s->d_ff, v = (size_t)s->vocab;
	size_t per_layer = 4 * d * d + 2 * d * ff + 9 * d + ff;
	return (size_t)s->n_layer * per_layer + 2 * v * d + (size_t)s->ctx * d + 2 * d;
}

double tm_tf_flops_per_token(const tm_tf_spec *s, int n_attend)
{
	double d = s->d_model, ff = s->d_ff, v = s->vocab, l = s->n_layer;
	return 2.0 * l * (4.0 * d * d + 2.0 * d * ff) + 2.0 * v * d + 4.0 * l * d * n_attend;
}

// ---- parameters ----

/* Round a tensor size up to 16 floats so every tensor starts 64-byte aligned. */
static size_t pad16(size_t n)
{
	return (n + 15) & ~(size_t)15;
}

static float *carve(float *base, size_t *off, size_t n)
{
	float *p = base ? base + *off : NULL;
	*off += pad16(n);
	return p;
}

/* Point w into base (NULL: just count) and return the floats used; weight matrices come first
 * and end at *n_decay. */
static size_t weights_layout(const tm_tf_spec *s, float *base, tm_tf_weights *w,
			     size_t *n_decay)
{
	size_t d = (size_t)s->d_model, ff = (size_t)s->d_ff, v = (size_t)s->vocab;
	size_t off = 0;
	memset(w, 0, sizeof(*w));
	for (int l = 0; l < s->n_layer; l++) {
		tm_tf_block *b = &w->block[l];
		b->qkv_w = carve(base, &off, 3 * d * d);
		b->proj_w = carve(base, &off, d * d);
		b->fc_w = carve(base, &off, ff * d);
		b->fc2_w = carve(base, &off, d * ff);
	}
	w->head_w = carve(base, &off, v * d);
	if (n_decay)
		*n_decay = off;
	w->wte = carve(base, &off, v * d);
	w->wpe = carve(base, &off, (size_t)s->ctx * d);
	for (int l = 0; l < s->n_layer; l++) {
		tm_tf_block *b = &w->block[l];
		b->ln1_w = carve(base, &off, d);
		b->ln1_b = carve(base, &off, d);
		b->qkv_b = carve(base, &off, 3 * d);
		b->proj_b = carve(base, &off, d);
		b->ln2_w = carve(base, &off, d);
		b->ln2_b = carve(base, &off, d);
		b->fc_b = carve(base, &off, ff);
		b->fc2_b = carve(base, &off, d);
	}
	w->lnf_w = carve(base, &off, d);
	w->lnf_b = carve(base, &off, d);
	return off;
}

int tm_transformer_new(tm_transformer **out, const tm_tf_spec *spec, tm_err *err)
{
	*out = NULL;
	int rc = tm_tf_spec_check(spec, err);
	if (rc)
		return rc;
	tm_transformer *m = tm_xcalloc(1, sizeof(*m));
	m->spec = *spec;
	m->n_params = tm_tf_spec_params(spec);
	m->n_floats = weights_layout(spec, NULL, &m->w, &m->n_decay);
	m->params = tm_alloc_aligned(m->n_floats * sizeof(float));
	m->grads = tm_alloc_aligned(m->n_floats * sizeof(float));
	if (!m->params || !m->grads) {
		size_t np = m->n_params;
		tm_transformer_free(m);
		return tm_err_set(err, TM_ENOMEM, "transformer",
				  "transformer: cannot allocate %zu parameters", np);
	}
	weights_layout(spec, m->params, &m->w, NULL);
	weights_layout(spec, m->grads, &m->g, NULL);
	*out = m;
	return 0;
}

void tm_transformer_free(tm_transformer *m)
{
	if (!m)
		return;
	tm_free_aligned(m->params);
	tm_free_aligned(m->grads);
	free(m);
}

static void fill_normal(tm_rng *r, float *x, size_t n, float sd)
{
	for (size_t i = 0; i < n; i++)
		x[i] = sd * tm_rng_normal(r);
}

static void fill_const(float *x, size_t n, float v)
{
	for (size_t i = 0; i < n; i++)
		x[i] = v;
}

void tm_transformer_init(tm_transformer *m, uint64_t seed)
{
	const tm_tf_spec *s = &m->spec;
	size_t d = (size_t)s->d_model, ff = (size_t)s->d_ff, v = (size_t)s->vocab;
	float sd = 0.02f, sd_res = 0.02f / sqrtf(2.0f * (float)s->n_layer);
	tm_rng r;
	tm_rng_seed(&r, seed);
	memset(m->params, 0, m->n_floats * sizeof(float));
	fill_normal(&r, m->w.wte, v * d, sd);
	fill_normal(&r, m->w.wpe, (size_t)s->ctx * d, sd);
	for (int l = 0; l < s->n_layer; l++) {
		tm_tf_block *b = &m->w.block[l];
		fill_const(b->ln1_w, d, 1.0f);
		fill_const(b->ln2_w, d, 1.0f);
		fill_normal(&r, b->qkv_w, 3 * d * d, sd);
		fill_normal(&r, b->proj_w, d * d, sd_res);
		fill_normal(&r, b->fc_w, ff * d, sd);
		fill_normal(&r, b->fc2_w, d * ff, sd_res);
	}
	fill_const(m->w.lnf_w, d, 1.0f);
	fill_normal(&r, m->w.head_w, v * d, sd);
}

void tm_transformer_zero_grad(tm_transformer *m)
{
	memset(m->grads, 0, m->n_floats * sizeof(float));
}

// ---- activations ----

typedef struct tf_layer_acts {
	float *x;              /* (N, d) input of the block (the residual stream) */
	float *ln1;            /* (N, d) */
	float *mean1, *rstd1;  /* (N) */
	float *qkv;            /* (N, 3d) */
	float *att;            /* (rows, n_head, T, T) attention probabilities */
	float *attn;           /* (N, d) attention output before the projection */
	float *xm;             /* (N, d) x + proj(attn) */
	float *ln2;            /* (N, d) */
	float *mean2, *rstd2;  /* (N) */
	float *fc;             /* (N, ff) before GELU */
	float *act;            /* (N, ff) after GELU */
} tf_layer_acts;

struct tm_tf_acts {
	tm_arena arena;
	tm_tf_spec spec;
	int max_rows;
	bool train;
	tf_layer_acts layer[TM_TF_MAX_LAYERS + 1]; /* [n_layer].x is the final stream */
	float *xg, *lnf;       /* (N, d) gathered output positions, their LayerNorm */
	float *meanf, *rstdf;  /* (N) */
	float *logits;         /* (N, vocab) */
	int32_t *idx;          /* (N) output positions of the last forward */
	int n_out;
	int rows;              /* rows of the last forward */
	bool have_grad;        /* dlogits holds the loss gradient of the last forward */
	/* backward only */
	float *dlogits;        /* (N, vocab) */
	float *dlnf, *dxg;     /* (N, d) */
	float *dx, *dtmp, *dln, *dattn;  /* (N, d) */
	float *dqkv;           /* (N, 3d) */
	float *dff;            /* (N, ff) */
	float *scratch;        /* attention backward */
};

/* With ar NULL, count bytes into *total; else carve from ar. */
static void *take(tm_arena *ar, size_t *total, size_t bytes)
{
	if (!ar) {
		*total += (bytes + 63) & ~(size_t)63;
		return NULL;
	}
	return tm_arena_alloc(ar, bytes);
}

static size_t acts_layout(tm_tf_acts *a, tm_arena *ar)
{
	const tm_tf_spec *s = &a->spec;
	size_t n = (size_t)a->max_rows * s->ctx, d = (size_t)s->d_model, ff = (size_t)s->d_ff;
	size_t v = (size_t)s->vocab, att = (size_t)a->max_rows * s->n_head * s->ctx * s->ctx;
	size_t total = 0, F = sizeof(float);
	int kept = a->train ? s->n_layer : 1;
	for (int l = 0; l < kept; l++) {
		tf_layer_acts *la = &a->layer[l];
		la->x = take(ar, &total, n * d * F);
		la->ln1 = take(ar, &total, n * d * F);
		la->mean1 = take(ar, &total, n * F);
		la->rstd1 = take(ar, &total, n * F);
		la->qkv = take(ar, &total, n * 3 * d * F);
		la->att = take(ar, &total, att * F);
		la->attn = take(ar, &total, n * d * F);
		la->xm = take(ar, &total, n * d * F);
		la->ln2 = take(ar, &total, n * d * F);
		la->mean2 = take(ar, &total, n * F);
		la->rstd2 = take(ar, &total, n * F);
		la->fc = take(ar, &total, n * ff * F);
		la->act = take(ar, &total, n * ff * F);
	}
	if (a->train) {
		a->layer[s->n_layer].x = take(ar, &total, n * d * F);
	} else {
		/* one set shared by all blocks; the stream alternates between x and xm */
		for (int l = 1; l <= s->n_layer; l++)
			a->layer[l] = a->layer[0];
	}
	a->xg = take(ar, &total, n * d * F);
	a->lnf = take(ar, &total, n * d * F);
	a->meanf = take(ar, &total, n * F);
	a->rstdf = take(ar, &total, n * F);
	a->logits = take(ar, &total, n * v * F);
	a->idx = take(ar, &total, n * sizeof(int32_t));
	if (a->train) {
		a->dlogits = take(ar, &total, n * v * F);
		a->dlnf = take(ar, &total, n * d * F);
		a->dxg = take(ar, &total, n * d * F);
		a->dx = take(ar, &total, n * d * F);
		a->dtmp = take(ar, &total, n * d * F);
		a->dln = take(ar, &total, n * d * F);
		a->dattn = take(ar, &total, n * d * F);
		a->dqkv = take(ar, &total, n * 3 * d * F);
		a->dff = take(ar, &total, n * ff * F);
		a->scratch = take(ar, &total,
				  tm_attention_scratch_floats(a->max_rows, s->ctx, s->n_head) * F);
	}
	return total;
}

int tm_tf_acts_new(tm_tf_acts **out, const tm_transformer *m, int max_rows, bool train,
		   tm_err *err)
{
	*out = NULL;
	if (max_rows < 1 || max_rows > 65536)
		return tm_err_set(err, TM_EINVAL, "rows",
				  "transformer: 'rows' is %d, must be in [1, 65536]", max_rows);
	tm_tf_acts *a = tm_xcalloc(1, sizeof(*a));
	a->spec = m->spec;
	a->max_rows = max_rows;
	a->train = train;
	size_t bytes = acts_layout(a, NULL);
	int rc = tm_arena_init(&a->arena, bytes, err);
	if (rc) {
		free(a);
		return rc;
	}
	acts_layout(a, &a->arena);
	*out = a;
	return 0;
}

void tm_tf_acts_free(tm_tf_acts *a)
{
	if (!a)
		return;
	tm_arena_release(&a->arena);
	free(a);
}

size_t tm_tf_acts_bytes(const tm_tf_acts *a)
{
	return a->arena.cap;
}

const float *tm_tf_acts_logits(const tm_tf_acts *a)
{
	return a->logits;
}

// ---- element-wise ops over the pool ----
/* The work is cut into TF_CHUNKS pieces whatever the thread count. */

typedef struct par_job {
	size_t len;
	const float *x;
	float *y;
} par_job;

static void chunk_range(size_t n, int c, size_t *lo, size_t *hi)
{
	*lo = n * (size_t)c / TF_CHUNKS;
	*hi = n * (size_t)(c + 1) / TF_CHUNKS;
}

static void add_task(void *arg, int c)
{
	par_job *j = arg;
	size_t lo, hi;
	chunk_range(j->len, c, &lo, &hi);
	for (size_t i = lo; i < hi; i++)
		j->y[i] += j->x[i];
}

/* y += x over len floats. */
static void par_add(const tm_ctx *ctx, size_t len, const float *x, float *y)
{
	par_job j = { .len = len, .x = x, .y = y };
	tm_pool_run(ctx->pool, TF_CHUNKS, add_task, &j);
}

// ---- forward ----

static int check_batch(const tm_transformer *m, const tm_tf_acts *a, const tm_tf_batch *b,
		       tm_err *err)
{
	const tm_tf_spec *s = &m->spec;
	if (memcmp(&a->spec, s, sizeof(*s)) != 0)
		return tm_err_set(err, TM_EINVAL, "acts",
				  "transformer: activations were sized for another spec");
	if (b->rows < 1 || b->rows > a->max_rows)
		return tm_err_set(err, TM_EINVAL, "rows", "transformer: batch has %d rows, must be "
				  "in [1, %d]", b->rows, a->max_rows);
	int n = b->rows * s->ctx;
	for (int i = 0; i < n; i++) {
		if (b->tok[i] < 0 || b->tok[i] >= s->vocab)
			return tm_err_set(err, TM_EINVAL, "tok", "transformer: token %d at %d is "
					  "out of range [0, %d)", b->tok[i], i, s->vocab);
		if (b->pos[i] < 0 || b->pos[i] >= s->ctx)
			return tm_err_set(err, TM_EINVAL, "pos", "transformer: position %d at %d "
					  "is out of range [0, %d)", b->pos[i], i, s->ctx);
	}
	if (!b->out_idx && b->n_out != n)
		return tm_err_set(err, TM_EINVAL, "n_out", "transformer: 'n_out' is %d without "
				  "out_idx, must be rows * ctx = %d", b->n_out, n);
	if (b->n_out < 0 || b->n_out > n)
		return tm_err_set(err, TM_EINVAL, "n_out", "transformer: 'n_out' is %d, must be "
				  "in [0, %d]", b->n_out, n);
	for (int i = 0; b->out_idx && i < b->n_out; i++)
		if (b->out_idx[i] < 0 || b->out_idx[i] >= n)
			return tm_err_set(err, TM_EINVAL, "out_idx", "transformer: output "
					  "position %d is out of range [0, %d)", b->out_idx[i], n);
	return 0;
}

int tm_transformer_forward(const tm_transformer *m, const tm_ctx *ctx, tm_tf_acts *a,
			   const tm_tf_batch *b, float *loss, tm_err *err)
{
	int rc = check_batch(m, a, b, err);
	if (rc)
		return rc;
	const tm_tf_spec *s = &m->spec;
	const int T = s->ctx, d = s->d_model, ff = s->d_ff, V = s->vocab, H = s->n_head;
	const int n = b->rows * T;
	a->have_grad = false;
	a->rows = b->rows;

	tm_embedding_forward(n, d, b->tok, b->pos, m->w.wte, m->w.wpe, a->layer[0].x);
	for (int l = 0; l < s->n_layer; l++) {
		const tm_tf_block *w = &m->w.block[l];
		tf_layer_acts *la = &a->layer[l];
		float *next = a->layer[l + 1].x;
		tm_layernorm_forward_ctx(ctx, n, d, la->x, w->ln1_w, w->ln1_b, la->ln1, la->mean1,
					 la->rstd1);
		tm_linear(ctx, n, 3 * d, d, la->ln1, w->qkv_w, w->qkv_b, TM_ACT_NONE, la->qkv);
		tm_attention_forward(ctx, b->rows, T, d, H, la->qkv, b->seg, la->att, la->attn);
		tm_linear(ctx, n, d, d, la->attn, w->proj_w, w->proj_b, TM_ACT_NONE, la->xm);
		par_add(ctx, (size_t)n * d, la->x, la->xm);
		tm_layernorm_forward_ctx(ctx, n, d, la->xm, w->ln2_w, w->ln2_b, la->ln2, la->mean2,
					 la->rstd2);
		tm_linear(ctx, n, ff, d, la->ln2, w->fc_w, w->fc_b, TM_ACT_NONE, la->fc);
		tm_gelu_forward_ctx(ctx, (size_t)n * ff, la->fc, la->act);
		/* at inference next aliases la->x, which is no longer needed */
		tm_linear(ctx, n, d, ff, la->act, w->fc2_w, w->fc2_b, TM_ACT_NONE, next);
		par_add(ctx, (size_t)n * d, la->xm, next);
	}

	const float *xl = a->layer[s->n_layer].x;
	a->n_out = b->n_out;
	for (int i = 0; i < b->n_out; i++) {
		a->idx[i] = b->out_idx ? b->out_idx[i] : i;
		memcpy(a->xg + (size_t)i * d, xl + (size_t)a->idx[i] * d,
		       sizeof(float) * (size_t)d);
	}
	tm_layernorm_forward_ctx(ctx, b->n_out, d, a->xg, m->w.lnf_w, m->w.lnf_b, a->lnf, a->meanf,
				 a->rstdf);
	tm_linear(ctx, b->n_out, V, d, a->lnf, m->w.head_w, NULL, TM_ACT_NONE, a->logits);
	if (b->targets) {
		float l = tm_cross_entropy(b->n_out, V, a->logits, b->targets,
					   a->train ? a->dlogits : NULL, NULL);
		a->have_grad = a->train;
		if (loss)
			*loss = l;
	} else if (loss) {
		*loss = 0.0f;
	}
	return 0;
}

// ---- backward ----

int tm_transformer_backward(tm_transformer *m, const tm_ctx *ctx, tm_tf_acts *a,
			    const tm_tf_batch *b, tm_err *err)
{
	if (!a->train || !a->have_grad || b->rows != a->rows || b->n_out != a->n_out)
		return tm_err_set(err, TM_ESTATE, "backward", "transformer: backward needs a "
				  "training forward of the same batch with targets");
	const tm_tf_spec *s = &m->spec;
	const int T = s->ctx, d = s->d_model, ff = s->d_ff, V = s->vocab, H = s->n_head;
	const int n = b->rows * T;
	tm_tf_weights *g = &m->g;

	tm_linear_backward(ctx, a->n_out, V, d, a->lnf, m->w.head_w, a->dlogits, a->dlnf,
			   g->head_w, NULL);
	tm_layernorm_backward_ctx(ctx, a->n_out, d, a->xg, m->w.lnf_w, a->meanf, a->rstdf,
				  a->dlnf, a->dxg, g->lnf_w, g->lnf_b);
	memset(a->dx, 0, sizeof(float) * (size_t)n * d);
	for (int i = 0; i < a->n_out; i++) {
		float *dst = a->dx + (size_t)a->idx[i] * d;
		const float *src = a->dxg + (size_t)i * d;
		for (int j = 0; j < d; j++)
			dst[j] += src[j];
	}
	for (int l = s->n_layer - 1; l >= 0; l--) {
		const tm_tf_block *w = &m->w.block[l];
		tm_tf_block *gb = &g->block[l];
		tf_layer_acts *la = &a->layer[l];
		/* dx: gradient of the block output x + attn + mlp */
		tm_linear_backward(ctx, n, d, ff, la->act, w->fc2_w, a->dx, a->dff, gb->fc2_w,
				   gb->fc2_b);
		tm_gelu_backward_ctx(ctx, (size_t)n * ff, la->fc, a->dff, a->dff);
		tm_linear_backward(ctx, n, ff, d, la->ln2, w->fc_w, a->dff, a->dln, gb->fc_w,
				   gb->fc_b);
		tm_layernorm_backward_ctx(ctx, n, d, la->xm, w->ln2_w, la->mean2, la->rstd2,
					  a->dln, a->dtmp, gb->ln2_w, gb->ln2_b);
		par_add(ctx, (size_t)n * d, a->dtmp, a->dx);
		/* dx: gradient of xm = x + proj(attn) */
		tm_linear_backward(ctx, n, d, d, la->attn, w->proj_w, a->dx, a->dattn, gb->proj_w,
				   gb->proj_b);
		tm_attention_backward(ctx, b->rows, T, d, H, la->qkv, b->seg, la->att, a->dattn,
				      a->dqkv, a->scratch);
		tm_linear_backward(ctx, n, 3 * d, d, la->ln1, w->qkv_w, a->dqkv, a->dln, gb->qkv_w,
				   gb->qkv_b);
		tm_layernorm_backward_ctx(ctx, n, d, la->x, w->ln1_w, la->mean1, la->rstd1,
					  a->dln, a->dtmp, gb->ln1_w, gb->ln1_b);
		par_add(ctx, (size_t)n * d, a->dtmp, a->dx);
	}
	tm_embedding_backward(n, d, b->tok, b->pos, a->dx, g->wte, g->wpe);
	return 0;
}

// ---- generation ----

static int argmax(const float *x, int n)
{
	int best = 0;
	for (int j = 1; j < n; j++)
		if (x[j] > x[best])
			best = j;
	return best;
}

static void pad_row_tail(int32_t *tok, int32_t *pos, int32_t *seg, int from, int to)
{
	for (int i = from; i < to; i++) {
		tok[i] = 0;
		pos[i] = 0;
		seg[i] = -1;
	}
}

/* The state of a batched generation: packed rows of the current round and the sequences. */
typedef struct gen_state {
	const tm_transformer *m;
	const tm_ctx *ctx;
	tm_tf_acts *a;
	int rows, n, max_new;
	int32_t stop;
	const int32_t *const *prompts;
	const int *n_prompt;
	int32_t *out;            /* (n, max_new) */
	int *out_len;            /* (n) */
	bool *done;              /* (n) */
	int32_t *tok, *pos, *seg, *idx;  /* (rows, ctx) */
	int *who;                /* (rows * ctx) sequence of each output position */
	int r, fill, n_out;      /* current row, its used positions, outputs so far */
} gen_state;

/* Forward the packed rows and append one token to each sequence in them. */
static int gen_flush(gen_state *g, tm_err *err)
{
	const int T = g->m->spec.ctx, V = g->m->spec.vocab;
	if (g->fill > 0) {
		pad_row_tail(g->tok + (size_t)g->r * T, g->pos + (size_t)g->r * T,
			     g->seg + (size_t)g->r * T, g->fill, T);
		g->r++;
	}
	if (g->n_out == 0)
		return 0;
	tm_tf_batch b = { .rows = g->r, .tok = g->tok, .pos = g->pos, .seg = g->seg,
			  .n_out = g->n_out, .out_idx = g->idx };
	int rc = tm_transformer_forward(g->m, g->ctx, g->a, &b, NULL, err);
	for (int k = 0; k < g->n_out && rc == 0; k++) {
		int q = g->who[k];
		int32_t t = argmax(g->a->logits + (size_t)k * V, V);
		g->out[(size_t)q * g->max_new + g->out_len[q]++] = t;
		if (t == g->stop || g->out_len[q] == g->max_new ||
		    g->n_prompt[q] + g->out_len[q] >= T)
			g->done[q] = true;
	}
	g->r = g->fill = g->n_out = 0;
	return rc;
}

/* Place sequence i (prompt and what it generated so far) in the current row or the next. */
static int gen_place(gen_state *g, int i, tm_err *err)
{
	const int T = g->m->spec.ctx;
	int len = g->n_prompt[i] + g->out_len[i];
	if (g->fill + len > T) {
		pad_row_tail(g->tok + (size_t)g->r * T, g->pos + (size_t)g->r * T,
			     g->seg + (size_t)g->r * T, g->fill, T);
		g->r++;
		g->fill = 0;
		if (g->r == g->rows) {
			int rc = gen_flush(g, err);
			if (rc)
				return rc;
		}
	}
	size_t at = (size_t)g->r * T + g->fill;
	memcpy(g->tok + at, g->prompts[i], sizeof(int32_t) * (size_t)g->n_prompt[i]);
	memcpy(g->tok + at + g->n_prompt[i], g->out + (size_t)i * g->max_new,
	       sizeof(int32_t) * (size_t)g->out_len[i]);
	for (int j = 0; j < len; j++) {
		g->pos[at + j] = j;
		g->seg[at + j] = i;
	}
	g->idx[g->n_out] = (int32_t)(at + len - 1);
	g->who[g->n_out++] = i;
	g->fill += len;
	return 0;
}

int tm_transformer_generate_batch(const tm_transformer *m, const tm_ctx *ctx, int n,
				  const int32_t *const *prompts, const int *n_prompt, int max_new,
				  int32_t stop, int32_t *out, int *out_len, tm_err *err)
{
	const int T = m->spec.ctx, V = m->spec.vocab;
	if (n < 0 || max_new < 0)
		return tm_err_set(err, TM_EINVAL, "generate", "generate: %d prompts and max_new "
				  "%d, must be non-negative", n, max_new);
	for (int i = 0; i < n; i++) {
		if (n_prompt[i] < 1 || n_prompt[i] > T)
			return tm_err_set(err, TM_EINVAL, "prompt", "generate: prompt %d has %d "
					  "tokens, must be in [1, %d]", i, n_prompt[i], T);
		for (int j = 0; j < n_prompt[i]; j++)
			if (prompts[i][j] < 0 || prompts[i][j] >= V)
				return tm_err_set(err, TM_EINVAL, "prompt", "generate: prompt %d "
						  "token %d is out of range [0, %d)", i,
						  prompts[i][j], V);
		out_len[i] = 0;
	}
	if (n == 0 || max_new == 0)
		return 0;

	gen_state g = { .m = m, .ctx = ctx, .rows = n < TF_GEN_ROWS ? n : TF_GEN_ROWS, .n = n,
			.max_new = max_new, .stop = stop, .prompts = prompts,
			.n_prompt = n_prompt, .out = out, .out_len = out_len };
	int rc = tm_tf_acts_new(&g.a, m, g.rows, false, err);
	if (rc)
		return rc;
	size_t cells = (size_t)g.rows * T;
	g.tok = tm_xmalloc(cells * sizeof(int32_t));
	g.pos = tm_xmalloc(cells * sizeof(int32_t));
	g.seg = tm_xmalloc(cells * sizeof(int32_t));
	g.idx = tm_xmalloc(cells * sizeof(int32_t));
	g.who = tm_xmalloc(cells * sizeof(int));
	g.done = tm_xcalloc((size_t)n, sizeof(bool));
	for (int i = 0; i < n; i++)
		g.done[i] = n_prompt[i] >= T;
	for (;;) {
		/* one round: every active sequence gets one more token */
		int active = 0;
		for (int i = 0; i < n && rc == 0; i++) {
			if (g.done[i])
				continue;
			active++;
			rc = gen_place(&g, i, err);
		}
		if (rc == 0)
			rc = gen_flush(&g, err);
		if (rc || active == 0)
			break;
	}
	free(g.tok);
	free(g.pos);
	free(g.seg);
	free(g.idx);
	free(g.who);
	free(g.done);
	tm_tf_acts_free(g.a);
	return rc;
}

int tm_transformer_generate(const tm_transformer *m, const tm_ctx *ctx, const int32_t *prompt,
			    int n_prompt, int max_new, int32_t stop, int32_t *out, tm_err *err)
{
	int len = 0;
	int rc = tm_transformer_generate_batch(m, ctx, 1, &prompt, &n_prompt, max_new, stop, out,
					       &len, err);
	return rc ? rc : len;
}

// ---- save and load ----

typedef struct tf_named {
	char name[64];
	float *data;
	int ndim;
	int64_t shape[2];
} tf_named;

/* The tensors of w with their PyTorch names; returns the count (2 + 12 L + 3). */
static int named_tensors(const tm_tf_spec *s, const tm_tf_weights *w, tf_named *t)
{
	int64_t d = s->d_model, ff = s->d_ff, v = s->vocab, c = s->ctx;
	int k = 0;
#define TF_ADD(nm, ptr, r, cc)                                                             \
	do {                                                                               \
		snprintf(t[k].name, sizeof(t[k].name), "%s", nm);                          \
		t[k].data = (ptr);                                                         \
		t[k].ndim = (cc) ? 2 : 1;                                                  \
		t[k].shape[0] = (r);                                                       \
		t[k].shape[1] = (cc);                                                      \
		k++;                                                                       \
	} while (0)
	TF_ADD("wte.weight", w->wte, v, d);
	TF_ADD("wpe.weight", w->wpe, c, d);
	for (int l = 0; l < s->n_layer; l++) {
		const tm_tf_block *b = &w->block[l];
		static const char *const part[12] = {
			"ln1.weight", "ln1.bias", "attn.qkv.weight", "attn.qkv.bias",
			"attn.proj.weight", "attn.proj.bias", "ln2.weight", "ln2.bias",
			"mlp.fc.weight", "mlp.fc.bias", "mlp.proj.weight", "mlp.proj.bias",
		};
		float *ptr[12] = { b->ln1_w, b->ln1_b, b->qkv_w, b->qkv_b, b->proj_w, b->proj_b,
				   b->ln2_w, b->ln2_b, b->fc_w, b->fc_b, b->fc2_w, b->fc2_b };
		int64_t rows[12] = { d, d, 3 * d, 3 * d, d, d, d, d, ff, ff, d, d };
		int64_t cols[12] = { 0, 0, d, 0, d, 0, 0, 0, d, 0, ff, 0 };
		for (int i = 0; i < 12; i++) {
			char nm[64];
			snprintf(nm, sizeof(nm), "blocks.%d.%s", l, part[i]);
			TF_ADD(nm, ptr[i], rows[i], cols[i]);
		}
	}
	TF_ADD("ln_f.weight", w->lnf_w, d, 0);
	TF_ADD("ln_f.bias", w->lnf_b, d, 0);
	TF_ADD("head.weight", w->head_w, v, d);
#undef TF_ADD
	return k;
}

static const struct {
	const char *key;
	size_t off;
} spec_keys[] = {
	{ "ctx", offsetof(tm_tf_spec, ctx) },
	{ "d_model", offsetof(tm_tf_spec, d_model) },
	{ "n_head", offsetof(tm_tf_spec, n_head) },
	{ "n_layer", offsetof(tm_tf_spec, n_layer) },
	{ "d_ff", offsetof(tm_tf_spec, d_ff) },
	{ "vocab", offsetof(tm_tf_spec, vocab) },
};

#define TF_FORMAT "tinymlperf-transformer-v1"

int tm_transformer_save(const tm_transformer *m, const char *path, const char *const *meta,
			tm_err *err)
{
	const tm_tf_spec *s = &m->spec;
	tf_named *t = tm_xcalloc((size_t)(5 + 12 * s->n_layer), sizeof(*t));
	int nt = named_tensors(s, &m->w, t);
	char vals[sizeof(spec_keys) / sizeof(spec_keys[0])][16];
	tm_st_writer *w = tm_st_writer_new();
	tm_st_writer_meta(w, "format", TF_FORMAT);
	for (size_t i = 0; i < sizeof(spec_keys) / sizeof(spec_keys[0]); i++) {
		snprintf(vals[i], sizeof(vals[i]), "%d",
			 *(const int *)((const char *)s + spec_keys[i].off));
		tm_st_writer_meta(w, spec_keys[i].key, vals[i]);
	}
	for (int i = 0; meta && meta[i] && meta[i + 1]; i += 2)
		tm_st_writer_meta(w, meta[i], meta[i + 1]);
	for (int i = 0; i < nt; i++)
		tm_st_writer_add(w, t[i].name, TM_DTYPE_F32, t[i].ndim, t[i].shape, t[i].data);
	int rc = tm_st_writer_save(w, path, err);
	tm_st_writer_free(w);
	free(t);
	return rc;
}

int tm_transformer_load(tm_transformer **out, const char *path, tm_err *err)
{
	*out = NULL;
	tm_st_file *f;
	int rc = tm_st_open(&f, path, err);
	if (rc)
		return rc;
	const char *fmt = tm_st_meta(f, "format");
	if (!fmt || strcmp(fmt, TF_FORMAT) != 0) {
		tm_st_free(f);
		return tm_err_set(err, TM_EFORMAT, path, "%s: metadata 'format' is '%s', must be "
				  "'%s'", path, fmt ? fmt : "(absent)", TF_FORMAT);
	}
	tm_tf_spec s;
	for (size_t i = 0; i < sizeof(spec_keys) / sizeof(spec_keys[0]); i++) {
		const char *v = tm_st_meta(f, spec_keys[i].key);
		char *end = NULL;
		long x = v ? strtol(v, &end, 10) : 0;
		if (!v || end == v || *end || x < 1 || x > 1 << 20) {
			tm_st_free(f);
			return tm_err_set(err, TM_EFORMAT, spec_keys[i].key, "%s: metadata '%s' is "
					  "'%s', must be an integer in [1, %d]", path,
					  spec_keys[i].key, v ? v : "(absent)", 1 << 20);
		}
		*(int *)((char *)&s + spec_keys[i].off) = (int)x;
	}
	tm_transformer *m;
	rc = tm_transformer_new(&m, &s, err);
	if (rc) {
		tm_st_free(f);
		return rc;
	}
	tf_named *t = tm_xcalloc((size_t)(5 + 12 * s.n_layer), sizeof(*t));
	int nt = named_tensors(&s, &m->w, t);
	for (int i = 0; i < nt && rc == 0; i++) {
		const void *data;
		rc = tm_st_expect(f, t[i].name, TM_DTYPE_F32, t[i].ndim, t[i].shape, &data, err);
		if (rc == 0)
			memcpy(t[i].data, data, sizeof(float) * (size_t)t[i].shape[0] *
			       (size_t)(t[i].ndim == 2 ? t[i].shape[1] : 1));
	}
	free(t);
	tm_st_free(f);
	if (rc) {
		tm_transformer_free(m);
		return rc;
	}
	*out = m;
	return 0;
}

// ---- decathlon evaluation ----

/* Teacher-forced exact match: pack examples, one forward per chunk of rows, check the argmax
 * at every answer position. */
static int eval_forced(const tm_transformer *m, const tm_ctx *ctx, const tm_dec_example *ex,
		       int n, tm_dec_score *score, tm_err *err)
{
	const int T = m->spec.ctx, V = m->spec.vocab;
	for (int i = 0; i < n; i++)
		if (ex[i].len > T)
			return tm_err_set(err, TM_EINVAL, "example", "evaluate: example %d has %d "
					  "tokens, the context is %d", i, ex[i].len, T);
	int rows = TF_EVAL_ROWS;
	tm_tf_acts *a;
	int rc = tm_tf_acts_new(&a, m, rows, false, err);
	if (rc)
		return rc;
	size_t cells = (size_t)rows * T;
	int32_t *tok = tm_xmalloc(cells * sizeof(int32_t));
	int32_t *pos = tm_xmalloc(cells * sizeof(int32_t));
	int32_t *seg = tm_xmalloc(cells * sizeof(int32_t));
	int32_t *tgt = tm_xmalloc(cells * sizeof(int32_t));
	int32_t *idx = tm_xmalloc(cells * sizeof(int32_t));
	int32_t *want = tm_xmalloc(cells * sizeof(int32_t));
	int *who = tm_xmalloc(cells * sizeof(int));
	bool *ok = tm_xmalloc((size_t)n * sizeof(bool));

	int i = 0;
	while (i < n && rc == 0) {
		int r = 0, fill = 0, n_out = 0;
		while (i < n) {
			const tm_dec_example *e = &ex[i];
			if (fill + e->len > T) {
				pad_row_tail(tok + (size_t)r * T, pos + (size_t)r * T,
					     seg + (size_t)r * T, fill, T);
				fill = 0;
				if (++r == rows)
					break;
			}
			size_t at = (size_t)r * T + fill;
			tm_dec_example_tokens(e, tok + at, tgt + at);
			for (int j = 0; j < e->len; j++) {
				pos[at + j] = j;
				seg[at + j] = i;
				if (tgt[at + j] >= 0) {
					idx[n_out] = (int32_t)(at + j);
					want[n_out] = tgt[at + j];
					who[n_out++] = i;
				}
			}
			ok[i] = true;
			fill += e->len;
			i++;
		}
		if (r < rows && fill > 0) {
			pad_row_tail(tok + (size_t)r * T, pos + (size_t)r * T, seg + (size_t)r * T,
				     fill, T);
			r++;
		}
		tm_tf_batch b = { .rows = r, .tok = tok, .pos = pos, .seg = seg, .n_out = n_out,
				  .out_idx = idx };
		rc = tm_transformer_forward(m, ctx, a, &b, NULL, err);
		for (int k = 0; k < n_out && rc == 0; k++)
			if (argmax(a->logits + (size_t)k * V, V) != want[k])
				ok[who[k]] = false;
	}
	for (int k = 0; k < n && rc == 0; k++) {
		score->total[ex[k].task]++;
		score->correct[ex[k].task] += ok[k];
	}
	free(tok);
	free(pos);
	free(seg);
	free(tgt);
	free(idx);
	free(want);
	free(who);
	free(ok);
	tm_tf_acts_free(a);
	return rc;
}

/* Greedy generation, one call per run of examples of the same task so that the cap (answer
 * length + end mark) stays tight. */
static int eval_generate(const tm_transformer *m, const tm_ctx *ctx, const tm_dec_example *ex,
			 int n, tm_dec_score *score, tm_err *err)
{
	int32_t end = tm_dec_end_token();
	int rc = 0;
	for (int lo = 0; lo < n && rc == 0;) {
		int hi = lo, cap = 0;
		while (hi < n && ex[hi].task == ex[lo].task) {
			int want = ex[hi].len - ex[hi].prompt_len;
			cap = want > cap ? want : cap;
			hi++;
		}
		int k = hi - lo;
		int32_t *toks = tm_xmalloc((size_t)k * TM_DEC_MAX_LEN * sizeof(int32_t));
		const int32_t **prompts = tm_xmalloc((size_t)k * sizeof(*prompts));
		int *np = tm_xmalloc((size_t)k * sizeof(int));
		int32_t *gen = tm_xmalloc((size_t)k * (size_t)cap * sizeof(int32_t));
		int *glen = tm_xmalloc((size_t)k * sizeof(int));
		for (int j = 0; j < k; j++) {
			int32_t *p = toks + (size_t)j * TM_DEC_MAX_LEN;
			np[j] = tm_dec_encode(ex[lo + j].text, ex[lo + j].prompt_len, p);
			prompts[j] = p;
		}
		rc = tm_transformer_generate_batch(m, ctx, k, prompts, np, cap, end, gen, glen,
						   err);
		for (int j = 0; j < k && rc == 0; j++)
			tm_dec_score_add(score, &ex[lo + j], gen + (size_t)j * cap, glen[j]);
		free(toks);
		free(prompts);
		free(np);
		free(gen);
		free(glen);
		lo = hi;
	}
	return rc;
}

int tm_decathlon_evaluate(const tm_transformer *m, const tm_ctx *ctx, const tm_dec_example *ex,
			  int n, bool generate, tm_dec_score *score, tm_err *err)
{
	tm_dec_score_init(score);
	if (m->spec.vocab != tm_dec_vocab_size())
		return tm_err_set(err, TM_EINVAL, "vocab", "evaluate: model vocabulary is %d, the "
				  "decathlon's is %d", m->spec.vocab, tm_dec_vocab_size());
	int rc = generate ? eval_generate(m, ctx, ex, n, score, err)
			  : eval_forced(m, ctx, ex, n, score, err);
	tm_dec_score_finish(score);
	return rc;
}

// ---- training ----

#define TF_CARRY 64       /* examples that did not fit a step, placed first in the next */

/* Fills a fixed number of packed rows per step with training examples (first fit); examples
 * that do not fit are carried over to the next step. */
typedef struct tf_packer {
	int rows, t;
	int32_t *tok, *pos, *seg;   /* (rows, t) */
	int32_t *idx, *tgt;         /* (rows * t) answer positions and their targets */
	int n_out;
	int *fill;                  /* (rows) */
	int *nseq;                  /* (rows) sequences in each row */
	tm_dec_example carry[TF_CARRY];
	int n_carry;
	long tokens;                /* real tokens of the last batch */
	int examples;               /* examples of the last batch */
} tf_packer;

static void packer_init(tf_packer *p, int rows, int t)
{
	memset(p, 0, sizeof(*p));
	p->rows = rows;
	p->t = t;
	size_t cells = (size_t)rows * t;
	p->tok = tm_xmalloc(cells * sizeof(int32_t));
	p->pos = tm_xmalloc(cells * sizeof(int32_t));
	p->seg = tm_xmalloc(cells * sizeof(int32_t));
	p->idx = tm_xmalloc(cells * sizeof(int32_t));
	p->tgt = tm_xmalloc(cells * sizeof(int32_t));
	p->fill = tm_xmalloc((size_t)rows * sizeof(int));
	p->nseq = tm_xmalloc((size_t)rows * sizeof(int));
}

static void packer_release(tf_packer *p)
{
	free(p->tok);
	free(p->pos);
	free(p->seg);
	free(p->idx);
	free(p->tgt);
	free(p->fill);
	free(p->nseq);
}

static bool packer_place(tf_packer *p, const tm_dec_example *e)
{
	for (int r = 0; r < p->rows; r++) {
		if (p->fill[r] + e->len > p->t)
			continue;
		size_t at = (size_t)r * p->t + p->fill[r];
		int32_t tgt[TM_DEC_MAX_LEN];
		tm_dec_example_tokens(e, p->tok + at, tgt);
		for (int j = 0; j < e->len; j++) {
			p->pos[at + j] = j;
			p->seg[at + j] = p->nseq[r];
			if (tgt[j] >= 0) {
				p->idx[p->n_out] = (int32_t)(at + j);
				p->tgt[p->n_out++] = tgt[j];
			}
		}
		p->nseq[r]++;
		p->fill[r] += e->len;
		p->tokens += e->len;
		p->examples++;
		return true;
	}
	return false;
}

static int pick_task(tm_rng *r, const float *w)
{
	float total = 0;
	for (int t = 0; t < TM_DEC_NTASKS; t++)
		total += w[t];
	float u = tm_rng_uniform(r) * total;
	for (int t = 0; t < TM_DEC_NTASKS; t++) {
		if (u < w[t])
			return t;
		u -= w[t];
	}
	return TM_DEC_NTASKS - 1;
}

/* One step's batch: carried examples first, then fresh ones until four in a row do not fit
 * or no row has room for the shortest possible example. */
static void packer_fill(tf_packer *p, tm_rng *r, const float *weights)
{
	memset(p->fill, 0, (size_t)p->rows * sizeof(int));
	memset(p->nseq, 0, (size_t)p->rows * sizeof(int));
	p->n_out = 0;
	p->tokens = 0;
	p->examples = 0;
	tm_dec_example queue[TF_CARRY];
	int nq = p->n_carry, misses = 0;
	memcpy(queue, p->carry, (size_t)nq * sizeof(tm_dec_example));
	p->n_carry = 0;
	for (int qi = 0; misses < 4; qi++) {
		tm_dec_example e;
		if (qi < nq)
			e = queue[qi];
		else
			tm_dec_train_example(r, pick_task(r, weights), &e);
		if (packer_place(p, &e))
			continue;
		if (p->n_carry < TF_CARRY)
			p->carry[p->n_carry++] = e;
		if (qi >= nq)
			misses++;
		int room = 0;
		for (int k = 0; k < p->rows; k++)
			room = p->t - p->fill[k] > room ? p->t - p->fill[k] : room;
		if (room < 7) /* "N" + 3 letters + "=" + 1 digit + "." */
			break;
	}
	for (int k = 0; k < p->rows; k++)
		pad_row_tail(p->tok + (size_t)k * p->t, p->pos + (size_t)k * p->t,
			     p->seg + (size_t)k * p->t, p->fill[k], p->t);
}

void tm_decathlon_train_defaults(tm_decathlon_train_opts *o)
{
	memset(o, 0, sizeof(*o));
	tm_tf_spec_reference(&o->spec);
	o->seed = 1;
	o->steps = 3000; /* about 7 minutes on the idle 2-core reference machine */
	o->rows = 40;
	o->threads = 2;
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	o->isa = tm_isa_best(&cpu);
	o->lr = 3e-3f;
	o->lr_final = 0.05f;
	o->warmup = 100;
	o->beta1 = 0.9f;
	o->beta2 = 0.98f;
	o->weight_decay = 0.1f;
	o->clip = 1.0f;
	for (int t = 0; t < TM_DEC_NTASKS; t++)
		o->task_weight[t] = 1.0f;
	o->task_weight[TM_DEC_ADD] = 3.0f; /* learns within the budget only when weighted up */
	o->eval_every = 250;
	o->eval_per_task = 50;
	o->test_per_task = TM_DEC_TEST_PER_TASK;
}

/* Linear warm-up, then cosine from the peak to lr_final * peak over the rest of the budget;
 * frac is the fraction of the budget (steps or wall clock) spent after the warm-up. */
static float lr_at(const tm_decathlon_train_opts *o, int step, double frac)
{
	if (step < o->warmup)
		return o->lr * (float)(step + 1) / (float)o->warmup;
	frac = frac < 0 ? 0 : frac > 1 ? 1 : frac;
	double f = o->lr_final + (1.0 - o->lr_final) * 0.5 * (1.0 + cos(M_PI * frac));
	return (float)(o->lr * f);
}

static void print_score(FILE *f, const tm_dec_score *s)
{
	fprintf(f, " points=%.1f", s->total_points);
	for (int t = 0; t < TM_DEC_NTASKS; t++)
		fprintf(f, " %s=%.1f", tm_dec_task_name(t), s->points[t]);
}

static int check_opts(const tm_decathlon_train_opts *o, tm_err *err)
{
	if (o->steps < 0 || (o->steps == 0 && !(o->minutes > 0 && o->minutes <= 24 * 60)))
		return tm_err_set(err, TM_EINVAL, "steps", "train: 'steps' is %d and 'minutes' "
				  "%g: give steps > 0 or minutes in (0, 1440]", o->steps,
				  o->minutes);
	if (o->rows < 1 || o->rows > 4096)
		return tm_err_set(err, TM_EINVAL, "rows", "train: 'rows' is %d, must be in "
				  "[1, 4096]", o->rows);
	if (o->spec.vocab != tm_dec_vocab_size() || o->spec.ctx < TM_DEC_MAX_LEN)
		return tm_err_set(err, TM_EINVAL, "spec", "train: the decathlon needs vocab %d "
				  "and ctx >= %d (got %d, %d)", tm_dec_vocab_size(),
				  TM_DEC_MAX_LEN, o->spec.vocab, o->spec.ctx);
	if (!(o->lr > 0 && o->lr < 1) || o->warmup < 0)
		return tm_err_set(err, TM_EINVAL, "lr", "train: 'lr' is %g, must be in (0, 1)",
				  (double)o->lr);
	float tw = 0;
	for (int t = 0; t < TM_DEC_NTASKS; t++) {
		if (!(o->task_weight[t] >= 0))
			return tm_err_set(err, TM_EINVAL, "task_weight", "train: task weight %d "
					  "is negative", t);
		tw += o->task_weight[t];
	}
	if (!(tw > 0))
		return tm_err_set(err, TM_EINVAL, "task_weight", "train: all task weights are 0");
	return 0;
}

int tm_decathlon_train(const tm_decathlon_train_opts *o, const tm_ctx *ctx,
		       tm_transformer **out, tm_decathlon_train_stats *st, FILE *progress,
		       tm_err *err)
{
	*out = NULL;
	memset(st, 0, sizeof(*st));
	int rc = check_opts(o, err);
	if (rc)
		return rc;
	tm_transformer *m = NULL;
	tm_tf_acts *a = NULL;
	tm_optim od = { 0 }, on = { 0 };
	tf_packer p;
	packer_init(&p, o->rows, o->spec.ctx);
	int n_eval = o->eval_per_task * TM_DEC_NTASKS;
	tm_dec_example *evalset = NULL;
	if ((rc = tm_transformer_new(&m, &o->spec, err)) ||
	    (rc = tm_tf_acts_new(&a, m, o->rows, true, err)) ||
	    (rc = tm_optim_init(&od, TM_OPTIM_ADAMW, m->n_decay, err)) ||
	    (rc = tm_optim_init(&on, TM_OPTIM_ADAMW, m->n_floats - m->n_decay, err)))
		goto fail;
	tm_transformer_init(m, o->seed);
	od.beta1 = on.beta1 = o->beta1;
	od.beta2 = on.beta2 = o->beta2;
	od.weight_decay = o->weight_decay;
	on.weight_decay = 0.0f;
	if (o->eval_every > 0 && n_eval > 0) {
		evalset = tm_xmalloc((size_t)n_eval * sizeof(*evalset));
		tm_dec_test_set(o->seed, o->eval_per_task, evalset);
	}

	tm_rng data;
	tm_rng_seed(&data, o->seed ^ 0xDA7A5EEDull);
	const double budget_s = o->steps > 0 ? 0 : o->minutes * 60.0;
	double warm_end_s = 0, eval_s = 0, loss_sum = 0;
	int loss_n = 0;
	uint64_t t0 = tm_now_ns();
	for (int step = 0;; step++) {
		double elapsed = (double)(tm_now_ns() - t0) * 1e-9 - eval_s;
		if (o->steps > 0 ? step >= o->steps : elapsed >= budget_s)
			break;
		packer_fill(&p, &data, o->task_weight);
		tm_tf_batch b = { .rows = o->rows, .tok = p.tok, .pos = p.pos, .seg = p.seg,
				  .n_out = p.n_out, .out_idx = p.idx, .targets = p.tgt };
		float loss;
		tm_transformer_zero_grad(m);
		if ((rc = tm_transformer_forward(m, ctx, a, &b, &loss, err)) ||
		    (rc = tm_transformer_backward(m, ctx, a, &b, err)))
			goto fail;
		if (!isfinite(loss)) {
			rc = tm_err_set(err, TM_ESTATE, "loss", "train: loss is %g at step %d",
					(double)loss, step);
			goto fail;
		}
		float norm = tm_grad_clip(m->grads, m->n_floats, o->clip);
		if (step + 1 == o->warmup)
			warm_end_s = elapsed;
		double frac = o->steps > 0
			? (double)(step - o->warmup) / (double)(o->steps > o->warmup + 1 ?
								 o->steps - o->warmup - 1 : 1)
			: (elapsed - warm_end_s) / (budget_s - warm_end_s > 1e-9 ?
						    budget_s - warm_end_s : 1e-9);
		float lr = lr_at(o, step, frac);
		tm_optim_step(&od, m->params, m->grads, lr);
		tm_optim_step(&on, m->params + m->n_decay, m->grads + m->n_decay, lr);
		st->steps = step + 1;
		st->tokens += (double)p.tokens;
		st->examples += p.examples;
		loss_sum += loss;
		loss_n++;
		bool report = o->eval_every > 0 && ((step + 1) % o->eval_every == 0);
		if (report && progress) {
			double now = (double)(tm_now_ns() - t0) * 1e-9 - eval_s;
			fprintf(progress, "step=%d loss=%.4f grad_norm=%.3f lr=%.6f elapsed_s=%.1f "
				"steps_per_s=%.3f tokens_per_s=%.0f", step + 1, loss_sum / loss_n,
				(double)norm, (double)lr, now, (step + 1) / now, st->tokens / now);
			if (evalset) {
				uint64_t e0 = tm_now_ns();
				tm_dec_score sc;
				if ((rc = tm_decathlon_evaluate(m, ctx, evalset, n_eval, false, &sc,
								err)))
					goto fail;
				print_score(progress, &sc);
				eval_s += (double)(tm_now_ns() - e0) * 1e-9;
			}
			fprintf(progress, "\n");
			fflush(progress);
		}
		if (report || step + 1 == o->steps) {
			st->final_loss = (float)(loss_sum / loss_n);
			loss_sum = 0;
			loss_n = 0;
		}
	}
	st->seconds = (double)(tm_now_ns() - t0) * 1e-9 - eval_s;
	if (loss_n)
		st->final_loss = (float)(loss_sum / loss_n);
	*out = m;
	m = NULL;
	rc = 0;
fail:
	free(evalset);
	packer_release(&p);
	tm_optim_release(&od);
	tm_optim_release(&on);
	tm_tf_acts_free(a);
	tm_transformer_free(m);
	return rc;
}

int tm_decathlon_train_reference(const tm_decathlon_train_opts *o, FILE *progress,
				 tm_decathlon_train_stats *st, tm_err *err)
{
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	if (!tm_isa_supported(&cpu, o->isa))
		return tm_err_set(err, TM_EINVAL, "kernels", "train: kernel set '%s' is not "
				  "supported by this CPU", tm_isa_name(o->isa));
	if (o->threads < 1 || o->threads > 256)
		return tm_err_set(err, TM_EINVAL, "threads", "train: 'threads' is %d, must be in "
				  "[1, 256]", o->threads);
	tm_ctx ctx = { .isa = o->isa, .pool = o->threads > 1 ? tm_pool_new(o->threads) : NULL };
	tm_transformer *m = NULL;
	tm_dec_example *test = NULL;
	int rc = tm_decathlon_train(o, &ctx, &m, st, progress, err);
	if (rc)
		goto out;
	int n = o->test_per_task * TM_DEC_NTASKS;
	test = tm_xmalloc((size_t)(n > 0 ? n : 1) * sizeof(*test));
	tm_dec_test_set(o->seed, o->test_per_task, test);
	uint64_t e0 = tm_now_ns();
	if ((rc = tm_decathlon_evaluate(m, &ctx, test, n, true, &st->score, err)))
		goto out;
	st->eval_seconds = (double)(tm_now_ns() - e0) * 1e-9;

	if (o->out_path) {
		char seed[32], points[32], steps[32], secs[32], tasks[256], tpoints[256];
		snprintf(seed, sizeof(seed), "%llu", (unsigned long long)o->seed);
		snprintf(points, sizeof(points), "%.1f", st->score.total_points);
		snprintf(steps, sizeof(steps), "%d", st->steps);
		snprintf(secs, sizeof(secs), "%.1f", st->seconds);
		size_t a = 0, b = 0;
		for (int t = 0; t < TM_DEC_NTASKS; t++) {
			a += (size_t)snprintf(tasks + a, sizeof(tasks) - a, "%s%s", t ? "," : "",
					      tm_dec_task_name(t));
			b += (size_t)snprintf(tpoints + b, sizeof(tpoints) - b, "%s%.1f",
					      t ? "," : "", st->score.points[t]);
		}
		const char *meta[] = { "vocabulary", tm_dec_vocab(), "tasks", tasks,
				       "task_points", tpoints, "decathlon_points", points,
				       "seed", seed, "train_steps", steps, "train_seconds", secs,
				       NULL };
		if ((rc = tm_transformer_save(m, o->out_path, meta, err)))
			goto out;
	}
	if (progress) {
		fprintf(progress, "decathlon: steps=%d train_s=%.1f eval_s=%.1f tokens_per_s=%.0f "
			"steps_per_s=%.3f final_loss=%.4f params=%zu", st->steps, st->seconds,
			st->eval_seconds, st->tokens / st->seconds, st->steps / st->seconds,
			(double)st->final_loss, m->n_params);
		print_score(progress, &st->score);
		fprintf(progress, "\n");
		fflush(progress);
	}
out:
	free(test);
	tm_transformer_free(m);
	tm_pool_free(ctx.pool);
	return rc;
}
