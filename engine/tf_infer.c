/* tf_infer.c: greedy generation with the Decathlon transformer, optimized for inference
 * (tm_tf_infer).  tm_tf_infer_new copies a trained tm_transformer and applies the options in a
 * fixed order: structured pruning (the attention heads whose q/k/v rows and projection columns
 * have the smallest L1 norm, and the FFN neurons whose fc row and fc2 column have the smallest
 * L2 norm, are removed and smaller matrices are built), unstructured magnitude pruning of the
 * block matrices, activation calibration (a teacher-forced FP32 forward over training examples
 * feeding one tm_qcalib per matrix input), then one stored representation per matrix: FP32
 * prepacked (tm_linear_pack), INT8 (tm_qlinear), or sparse (tm_sparse_w, f32 or int8 values)
 * where tm_sparse_decide says it pays for one-token steps.  Generation runs rows of positions
 * through the blocks; keys (transposed, per head) and values of every computed position are
 * written to per-layer buffers preallocated for the whole context.  With the KV cache the
 * prompt is one batched forward (GEMM over its rows) and each new token a one-row step whose
 * attention reads the cached positions.  Without it, every step recomputes the state from
 * nothing with the same decomposition (prompt rows in one forward, then one row per generated
 * token), so cached and uncached give bit-identical logits and tokens with any kernel set;
 * tm_tf_infer_generate_recompute is the plain uncached path (one forward over the whole prefix
 * per step), the fastest without a cache.  Attention uses the row kernels of ops (ops_int.h)
 * in the order tm_attention_forward uses them.  See docs/kv-cache.md. */
#include "engine.h"
#include "gemm_int.h"
#include "ops_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TFI_MAX_SPARSITY 0.99
#define TFI_ATTN_POOL_MIN 4096  /* row-positions of attention above which heads use the pool */

// ---- attention row kernels ----
/* The row primitives of ops.c's attention, from its kernel table (portable or SIMD by isa), so
 * cached, uncached and training-time attention do the same operations in the same order. */

static const ops_kernels *attn_kernels(const tm_ctx *ctx)
{
	return tm_ops_for(ctx ? ctx->isa : TM_ISA_PORTABLE);
}

// ---- matrices ----

typedef enum tfi_kind {
	TFI_BUILD = 0,       /* float weights, tm_linear (while pruning and calibrating) */
	TFI_F32 = 1,         /* tm_linear_packed */
	TFI_Q8 = 2,          /* tm_qlinear */
	TFI_SPARSE = 3,      /* tm_sparse_linear, f32 or int8 values */
} tfi_kind;

/* One linear layer Y(m, n) = X(m, k) W(n, k)^T + b. */
typedef struct tfi_mat {
	tfi_kind kind;
	int n, k;
	float *w;            /* (n, k) float weights while building, then freed */
	float *b;            /* (n) bias, NULL for the head; owned */
	tm_packed_w *pw;
	tm_qlinear *ql;
	tm_sparse_w *sw;
	tm_qcalib *cal;      /* input calibration while building */
	tm_infer_layer info;
} tfi_mat;

static void mat_release(tfi_mat *x)
{
	free(x->w);
	free(x->b);
	tm_packed_w_free(x->pw);
	tm_qlinear_free(x->ql);
	tm_sparse_free(x->sw);
	tm_qcalib_free(x->cal);
	memset(x, 0, sizeof(*x));
}

/* The bytes of the stored weight representation plus the float bias. */
static size_t packed_bytes(const tm_packed_w *pw)
{
	size_t rows = pw->layout == GEMM_LAYOUT_PANELS
		? (size_t)(pw->n + pw->nr - 1) / pw->nr * pw->nr : (size_t)pw->n;
	return rows * (size_t)pw->k * sizeof(float);
}

static void mat_forward(const tm_ctx *ctx, const tfi_mat *x, int m, const float *in, float *out)
{
	switch (x->kind) {
	case TFI_BUILD:
		tm_linear(ctx, m, x->n, x->k, in, x->w, x->b, TM_ACT_NONE, out);
		break;
	case TFI_F32:
		tm_linear_packed(ctx, m, x->pw, in, x->b, TM_ACT_NONE, out);
		break;
	case TFI_Q8:
		tm_qlinear_forward(ctx, x->ql, m, in, TM_ACT_NONE, out);
		break;
	case TFI_SPARSE:
		tm_sparse_linear(ctx, m, x->sw, in, x->b, TM_ACT_NONE, out);
		break;
	}
}

// ---- the model ----

typedef struct tfi_block {
	int n_head;          /* heads kept */
	int dh;              /* n_head * head_dim: width of q, k, v and of the attention output */
	int ff;              /* FFN neurons kept */
	float *ln1_w, *ln1_b, *ln2_w, *ln2_b;  /* (d) */
	tfi_mat qkv;         /* (3 dh, d): q, k, v of the kept heads */
	tfi_mat proj;        /* (d, dh) */
	tfi_mat fc;          /* (ff, d) */
	tfi_mat fc2;         /* (d, ff) */
	float *kt;           /* (n_head, head_dim, ctx) keys of the positions, transposed */
	float *v;            /* (ctx, dh) values of the positions */
	char pname[8][24];   /* profile names: ln1 qkv attn proj ln2 fc fc2 */
} tfi_block;

struct tm_tf_infer {
	tm_tf_spec spec;
	tm_tf_infer_opts o;
	int hd;              /* head dimension (d_model / n_head of the source) */
	float *wte;          /* (vocab, d) */
	float *wpe;          /* (ctx, d) */
	float *lnf_w, *lnf_b;  /* (d) */
	tfi_block block[TM_TF_MAX_LAYERS];
	tfi_mat head;        /* (vocab, d), no bias */
	int n_mats;
	tfi_mat *mats[4 * TM_TF_MAX_LAYERS + 1];  /* in model order, for the layer list */
	size_t kv_bytes;     /* bytes of the key and value buffers */
	float *kv;           /* one allocation: every block's kt and v */
	/* scratch for up to ctx rows */
	float *x;            /* (ctx, d) residual stream */
	float *ln;           /* (ctx, d) LayerNorm output */
	float *qkv;          /* (ctx, 3 dh_max) */
	float *att;          /* (ctx, dh_max) attention output */
	float *tmp;          /* (ctx, d) projection output */
	float *hid;          /* (ctx, ff_max) FFN hidden */
	float *srow;         /* (n_head_max, ctx padded) attention scores, one row per head */
	float *logits;       /* (vocab) of the last row */
	int32_t *seq;        /* (ctx) the tokens of the sequence being generated */
	size_t scratch_bytes;
	bool calibrating;    /* forward feeds the matrices' calibrators */
};

static int head_kept(int n_head, double frac)
{
	return n_head - (int)floor(frac * n_head + 0.5);
}

// ---- options ----

void tm_tf_infer_opts_default(tm_tf_infer_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->kv_cache = false;
	o->quantize = false;
	o->gran = TM_QGRAN_CHANNEL;
	o->calib_prompts = 256;
	o->calib = TM_QCALIB_MINMAX;
	o->calib_percentile = 99.99;
	o->seed = 1;
}

static int check_opts(const tm_transformer *m, const tm_tf_infer_opts *o,
		      const tm_dec_example *calib, int n_calib, tm_err *err)
{
	const tm_tf_spec *s = &m->spec;
	if (!(o->prune_heads >= 0 && o->prune_heads < 1))
		return tm_err_set(err, TM_EINVAL, "prune_heads", "tf_infer: 'prune_heads' is %g, "
				  "must be in [0, 1)", o->prune_heads);
	if (head_kept(s->n_head, o->prune_heads) < 1)
		return tm_err_set(err, TM_EINVAL, "prune_heads", "tf_infer: 'prune_heads' %g "
				  "removes all %d heads, at least one must stay", o->prune_heads,
				  s->n_head);
	if (!(o->prune_ffn >= 0 && o->prune_ffn < 1))
		return tm_err_set(err, TM_EINVAL, "prune_ffn", "tf_infer: 'prune_ffn' is %g, "
				  "must be in [0, 1)", o->prune_ffn);
	if (head_kept(s->d_ff, o->prune_ffn) < 1)
		return tm_err_set(err, TM_EINVAL, "prune_ffn", "tf_infer: 'prune_ffn' %g removes "
				  "all %d neurons, at least one must stay", o->prune_ffn, s->d_ff);
	if (!(o->sparsity >= 0 && o->sparsity <= TFI_MAX_SPARSITY))
		return tm_err_set(err, TM_EINVAL, "sparsity", "tf_infer: 'sparsity' is %g, must "
				  "be in [0, %g]", o->sparsity, TFI_MAX_SPARSITY);
	if (!o->quantize)
		return 0;
	if (o->gran != TM_QGRAN_CHANNEL && o->gran != TM_QGRAN_TENSOR)
		return tm_err_set(err, TM_EINVAL, "gran", "tf_infer: granularity %d is not "
				  "per channel (0) or per tensor (1)", (int)o->gran);
	if (o->calib != TM_QCALIB_MINMAX && o->calib != TM_QCALIB_PERCENTILE)
		return tm_err_set(err, TM_EINVAL, "calib", "tf_infer: calibration method %d is "
				  "not minmax (0) or percentile (1)", (int)o->calib);
	if (o->calib == TM_QCALIB_PERCENTILE &&
	    !(o->calib_percentile > 0 && o->calib_percentile <= 100))
		return tm_err_set(err, TM_EINVAL, "calib_percentile", "tf_infer: "
				  "'calib_percentile' is %g, must be in (0, 100]",
				  o->calib_percentile);
	if (o->calib_prompts < 1)
		return tm_err_set(err, TM_EINVAL, "calib_prompts", "tf_infer: 'calib_prompts' is "
				  "%d, must be at least 1", o->calib_prompts);
	if (!calib || n_calib < 1)
		return tm_err_set(err, TM_EINVAL, "calib", "tf_infer: quantizing needs "
				  "calibration examples, got %d", calib ? n_calib : 0);
	return 0;
}

// ---- structured pruning ----

typedef struct rank_item {
	double norm;
	int idx;
} rank_item;

/* Ascending norm, ties to the lower index: the first ones are removed. */
static int rank_cmp(const void *a, const void *b)
{
	const rank_item *x = a, *y = b;
	if (x->norm != y->norm)
		return x->norm < y->norm ? -1 : 1;
	return x->idx - y->idx;
}

/* keep[i] = 1 for the n - removed items of largest norm. */
static void choose_kept(int n, const double *norm, int removed, uint8_t *keep)
{
	rank_item *r = tm_xmalloc(sizeof(*r) * (size_t)n);
	for (int i = 0; i < n; i++) {
		r[i].norm = norm[i];
		r[i].idx = i;
		keep[i] = 1;
	}
	qsort(r, (size_t)n, sizeof(*r), rank_cmp);
	for (int i = 0; i < removed; i++)
		keep[r[i].idx] = 0;
	free(r);
}

static float *copy_floats(const float *src, size_t n)
{
	float *p = tm_xmalloc(sizeof(float) * (n ? n : 1));
	memcpy(p, src, sizeof(float) * n);
	return p;
}

static void mat_init(tfi_mat *x, int n, int k, float *w, float *b, const char *name)
{
	memset(x, 0, sizeof(*x));
	x->kind = TFI_BUILD;
	x->n = n;
	x->k = k;
	x->w = w;
	x->b = b;
	snprintf(x->info.name, sizeof(x->info.name), "%.15s", name);
	x->info.op = TM_OP_LINEAR;
	x->info.in_c = k;
	x->info.out_c = n;
}

/* Copy block l of m into t, keeping the heads and neurons the options leave. */
static void build_block(tm_tf_infer *t, const tm_transformer *m, int l)
{
	const tm_tf_spec *s = &m->spec;
	const tm_tf_block *w = &m->w.block[l];
	tfi_block *b = &t->block[l];
	const int d = s->d_model, H = s->n_head, hd = t->hd, ff = s->d_ff;
	uint8_t *hkeep = tm_xmalloc((size_t)H), *fkeep = tm_xmalloc((size_t)ff);
	double *norm = tm_xmalloc(sizeof(double) * (size_t)(H > ff ? H : ff));

	/* heads: L1 norm of their q, k, v rows and of their projection columns */
	for (int h = 0; h < H; h++) {
		double a = 0;
		for (int part = 0; part < 3; part++)
			for (int r = 0; r < hd; r++) {
				const float *row = w->qkv_w + ((size_t)part * d + (size_t)h * hd + r) * d;
				for (int c = 0; c < d; c++)
					a += fabsf(row[c]);
			}
		for (int r = 0; r < d; r++)
			for (int c = 0; c < hd; c++)
				a += fabsf(w->proj_w[(size_t)r * d + (size_t)h * hd + c]);
		norm[h] = a;
	}
	choose_kept(H, norm, H - head_kept(H, t->o.prune_heads), hkeep);
	/* neurons: L2 norm of the fc row and the fc2 column */
	for (int j = 0; j < ff; j++) {
		double a = 0;
		for (int c = 0; c < d; c++) {
			double u = w->fc_w[(size_t)j * d + c], v = w->fc2_w[(size_t)c * ff + j];
			a += u * u + v * v;
		}
		norm[j] = sqrt(a);
	}
	choose_kept(ff, norm, ff - head_kept(ff, t->o.prune_ffn), fkeep);

	int nh = 0, nf = 0;
	for (int h = 0; h < H; h++)
		nh += hkeep[h];
	for (int j = 0; j < ff; j++)
		nf += fkeep[j];
	int dh = nh * hd;
	b->n_head = nh;
	b->dh = dh;
	b->ff = nf;
	float *qkv_w = tm_xmalloc(sizeof(float) * (size_t)3 * dh * d);
	float *qkv_b = tm_xmalloc(sizeof(float) * (size_t)3 * dh);
	float *proj_w = tm_xmalloc(sizeof(float) * (size_t)d * dh);
	for (int part = 0; part < 3; part++) {
		int o = 0;
		for (int h = 0; h < H; h++) {
			if (!hkeep[h])
				continue;
			size_t src = (size_t)part * d + (size_t)h * hd, dst = (size_t)part * dh + o;
			memcpy(qkv_w + dst * d, w->qkv_w + src * d, sizeof(float) * (size_t)hd * d);
			memcpy(qkv_b + dst, w->qkv_b + src, sizeof(float) * (size_t)hd);
			o += hd;
		}
	}
	for (int r = 0; r < d; r++) {
		int o = 0;
		for (int h = 0; h < H; h++) {
			if (!hkeep[h])
				continue;
			memcpy(proj_w + (size_t)r * dh + o, w->proj_w + (size_t)r * d + (size_t)h * hd,
			       sizeof(float) * (size_t)hd);
			o += hd;
		}
	}
	float *fc_w = tm_xmalloc(sizeof(float) * (size_t)nf * d);
	float *fc_b = tm_xmalloc(sizeof(float) * (size_t)nf);
	float *fc2_w = tm_xmalloc(sizeof(float) * (size_t)d * nf);
	for (int j = 0, o = 0; j < ff; j++) {
		if (!fkeep[j])
			continue;
		memcpy(fc_w + (size_t)o * d, w->fc_w + (size_t)j * d, sizeof(float) * (size_t)d);
		fc_b[o] = w->fc_b[j];
		for (int r = 0; r < d; r++)
			fc2_w[(size_t)r * nf + o] = w->fc2_w[(size_t)r * ff + j];
		o++;
	}
	char name[32];  /* "blocks.63.proj" fits the layer name (16) */
	snprintf(name, sizeof(name), "blocks.%d.qkv", l);
	mat_init(&b->qkv, 3 * dh, d, qkv_w, qkv_b, name);
	snprintf(name, sizeof(name), "blocks.%d.proj", l);
	mat_init(&b->proj, d, dh, proj_w, copy_floats(w->proj_b, (size_t)d), name);
	snprintf(name, sizeof(name), "blocks.%d.fc", l);
	mat_init(&b->fc, nf, d, fc_w, fc_b, name);
	snprintf(name, sizeof(name), "blocks.%d.fc2", l);
	mat_init(&b->fc2, d, nf, fc2_w, copy_floats(w->fc2_b, (size_t)d), name);
	b->ln1_w = copy_floats(w->ln1_w, (size_t)d);
	b->ln1_b = copy_floats(w->ln1_b, (size_t)d);
	b->ln2_w = copy_floats(w->ln2_w, (size_t)d);
	b->ln2_b = copy_floats(w->ln2_b, (size_t)d);
	static const char *const part_names[7] = { "ln1", "qkv", "attn", "proj", "ln2", "fc",
						   "fc2" };
	for (int i = 0; i < 7; i++)
		snprintf(b->pname[i], sizeof(b->pname[i]), "blocks.%d.%s", l, part_names[i]);
	free(hkeep);
	free(fkeep);
	free(norm);
}

// ---- forward over rows ----

enum { P_LN1 = 0, P_QKV, P_ATTN, P_PROJ, P_LN2, P_FC, P_FC2 };

/* The profile of one call: entries looked up once per generate. */
typedef struct tfi_prof {
	tm_prof *p;          /* the caller's profile */
	tm_prof_entry *emb, *lnf, *head;
	tm_prof_entry *blk[TM_TF_MAX_LAYERS][7];
} tfi_prof;

typedef struct attn_job {
	const tm_tf_infer *t;
	const tfi_block *b;
	const ops_kernels *k;
	int r0, m;
} attn_job;

/* Head h of rows r0 .. r0 + m - 1: position i attends to 0 .. i, keys and values from the
 * block's buffers (rows below r0 computed earlier, the others just written). */
static void attn_head(void *arg, int h)
{
	const attn_job *a = arg;
	const tm_tf_infer *t = a->t;
	const tfi_block *b = a->b;
	const int hd = t->hd, T = t->spec.ctx, dh = b->dh;
	const float scale = 1.0f / sqrtf((float)hd);
	size_t tpad = ((size_t)T + OPS_ROW_PAD - 1) / OPS_ROW_PAD * OPS_ROW_PAD;
	float *s = t->srow + (size_t)h * tpad;
	const float *kt = b->kt + (size_t)h * hd * T;
	for (int i = 0; i < a->m; i++) {
		int n = a->r0 + i + 1;
		a->k->dot_cols(hd, t->qkv + (size_t)i * 3 * dh + (size_t)h * hd, kt, T, n, scale, s);
		a->k->softmax_row(s, n);
		a->k->axpy_rows(n, s, b->v + (size_t)h * hd, dh, hd,
			       t->att + (size_t)i * dh + (size_t)h * hd);
	}
}

static void prof_add(tm_prof_entry *e, uint64_t t0, int64_t flops, int64_t bytes)
{
	if (e)
		tm_prof_add(e, (int64_t)(tm_now_ns() - t0), flops, bytes);
}

static void mat_call(const tm_ctx *ctx, tm_tf_infer *t, const tfi_mat *x, int m, const float *in,
		     float *out, tm_prof_entry *pe)
{
	if (t->calibrating && x->cal)
		tm_qcalib_add(x->cal, (size_t)m * x->k, in);
	uint64_t t0 = pe ? tm_now_ns() : 0;
	mat_forward(ctx, x, m, in, out);
	prof_add(pe, t0, 2 * (int64_t)m * x->n * x->k,
		 (int64_t)x->info.bytes + 4 * (int64_t)m * (x->n + x->k));
}

static void add_rows(size_t len, const float *src, float *dst)
{
	for (size_t i = 0; i < len; i++)
		dst[i] += src[i];
}

/* Rows r0 .. r1 - 1 of the sequence t->seq: writes their keys and values and, when
 * want_logits, the logits of row r1 - 1 to t->logits.  Rows below r0 must be in the buffers. */
static void forward_rows(tm_tf_infer *t, const tm_ctx *ctx, int r0, int r1, bool want_logits,
			 tfi_prof *pf)
{
	const tm_tf_spec *s = &t->spec;
	const int d = s->d_model, T = s->ctx, hd = t->hd, m = r1 - r0;
	uint64_t t0 = pf ? tm_now_ns() : 0;
	for (int i = 0; i < m; i++) {
		const float *te = t->wte + (size_t)t->seq[r0 + i] * d;
		const float *pe = t->wpe + (size_t)(r0 + i) * d;
		float *o = t->x + (size_t)i * d;
		for (int j = 0; j < d; j++)
			o[j] = te[j] + pe[j];
	}
	if (pf)
		prof_add(pf->emb, t0, (int64_t)m * d, 12 * (int64_t)m * d);
	const ops_kernels *ak = attn_kernels(ctx);
	for (int l = 0; l < s->n_layer; l++) {
		tfi_block *b = &t->block[l];
		tm_prof_entry *const *pe = pf ? pf->blk[l] : NULL;
		const int dh = b->dh;
		t0 = pe ? tm_now_ns() : 0;
		tm_layernorm_forward_ctx(ctx, m, d, t->x, b->ln1_w, b->ln1_b, t->ln, NULL, NULL);
		if (pe)
			prof_add(pe[P_LN1], t0, 8 * (int64_t)m * d, 4 * (int64_t)(2 * m * d + 2 * d));
		mat_call(ctx, t, &b->qkv, m, t->ln, t->qkv, pe ? pe[P_QKV] : NULL);

		t0 = pe ? tm_now_ns() : 0;
		for (int i = 0; i < m; i++) {
			const float *row = t->qkv + (size_t)i * 3 * dh;
			for (int h = 0; h < b->n_head; h++)
				for (int c = 0; c < hd; c++)
					b->kt[((size_t)h * hd + c) * T + r0 + i] = row[dh + h * hd + c];
			memcpy(b->v + (size_t)(r0 + i) * dh, row + 2 * dh, sizeof(float) * (size_t)dh);
		}
		attn_job aj = { .t = t, .b = b, .k = ak, .r0 = r0, .m = m };
		int64_t cells = (int64_t)m * (2 * r0 + m + 1) / 2;  /* positions attended */
		if (ctx && ctx->pool && cells * b->n_head >= TFI_ATTN_POOL_MIN)
			tm_pool_run(ctx->pool, b->n_head, attn_head, &aj);
		else
			for (int h = 0; h < b->n_head; h++)
				attn_head(&aj, h);
		if (pe)
			prof_add(pe[P_ATTN], t0, 4 * cells * dh,
				 4 * (2 * cells * dh + 4 * (int64_t)m * dh));
		mat_call(ctx, t, &b->proj, m, t->att, t->tmp, pe ? pe[P_PROJ] : NULL);
		add_rows((size_t)m * d, t->tmp, t->x);

		t0 = pe ? tm_now_ns() : 0;
		tm_layernorm_forward_ctx(ctx, m, d, t->x, b->ln2_w, b->ln2_b, t->ln, NULL, NULL);
		if (pe)
			prof_add(pe[P_LN2], t0, 8 * (int64_t)m * d, 4 * (int64_t)(2 * m * d + 2 * d));
		t0 = pe ? tm_now_ns() : 0;
		mat_call(ctx, t, &b->fc, m, t->ln, t->hid, NULL);
		tm_gelu_forward_ctx(ctx, (size_t)m * b->ff, t->hid, t->hid);
		if (pe)
			prof_add(pe[P_FC], t0, 2 * (int64_t)m * b->fc.n * b->fc.k,
				 (int64_t)b->fc.info.bytes + 4 * (int64_t)m * (b->fc.n + b->fc.k));
		mat_call(ctx, t, &b->fc2, m, t->hid, t->tmp, pe ? pe[P_FC2] : NULL);
		add_rows((size_t)m * d, t->tmp, t->x);
	}
	if (t->calibrating) {
		/* the head's input at every position */
		tm_layernorm_forward_ctx(ctx, m, d, t->x, t->lnf_w, t->lnf_b, t->ln, NULL, NULL);
		tm_qcalib_add(t->head.cal, (size_t)m * d, t->ln);
		return;
	}
	if (!want_logits)
		return;
	const float *last = t->x + (size_t)(m - 1) * d;
	t0 = pf ? tm_now_ns() : 0;
	tm_layernorm_forward_ctx(ctx, 1, d, last, t->lnf_w, t->lnf_b, t->ln, NULL, NULL);
	if (pf)
		prof_add(pf->lnf, t0, 8 * (int64_t)d, 16 * (int64_t)d);
	mat_call(ctx, t, &t->head, 1, t->ln, t->logits, pf ? pf->head : NULL);
}

// ---- build ----

static void mats_list(tm_tf_infer *t)
{
	t->n_mats = 0;
	for (int l = 0; l < t->spec.n_layer; l++) {
		tfi_block *b = &t->block[l];
		t->mats[t->n_mats++] = &b->qkv;
		t->mats[t->n_mats++] = &b->proj;
		t->mats[t->n_mats++] = &b->fc;
		t->mats[t->n_mats++] = &b->fc2;
	}
	t->mats[t->n_mats++] = &t->head;
}

/* The next n floats of a scratch block, rounded up to 16 so each piece is 64-byte aligned. */
static float *take(float **sc, size_t n)
{
	float *p = *sc;
	*sc += (n + 15) & ~(size_t)15;
	return p;
}

static int alloc_buffers(tm_tf_infer *t, tm_err *err)
{
	const tm_tf_spec *s = &t->spec;
	size_t T = (size_t)s->ctx, d = (size_t)s->d_model;
	size_t kv = 0, dh_max = 1, ff_max = 1, h_max = 1;
	for (int l = 0; l < s->n_layer; l++) {
		const tfi_block *b = &t->block[l];
		kv += 2 * T * (size_t)b->dh;
		dh_max = (size_t)b->dh > dh_max ? (size_t)b->dh : dh_max;
		ff_max = (size_t)b->ff > ff_max ? (size_t)b->ff : ff_max;
		h_max = (size_t)b->n_head > h_max ? (size_t)b->n_head : h_max;
	}
	t->kv_bytes = kv * sizeof(float);
	t->kv = tm_alloc_aligned(t->kv_bytes);
	size_t tpad = (T + OPS_ROW_PAD - 1) / OPS_ROW_PAD * OPS_ROW_PAD;
	size_t fl = 3 * T * d + 3 * T * dh_max + T * dh_max + T * ff_max + h_max * tpad +
		    (size_t)s->vocab + 16 * 8;
	t->scratch_bytes = fl * sizeof(float) + T * sizeof(int32_t);
	float *sc = tm_alloc_aligned(t->scratch_bytes);
	if (!t->kv || !sc) {
		tm_free_aligned(sc);
		return tm_err_set(err, TM_ENOMEM, "tf_infer", "tf_infer: cannot allocate %zu "
				  "bytes of key/value buffers and scratch", t->kv_bytes +
				  t->scratch_bytes);
	}
	float *kvp = t->kv;
	for (int l = 0; l < s->n_layer; l++) {
		tfi_block *b = &t->block[l];
		b->kt = kvp;
		kvp += T * (size_t)b->dh;
		b->v = kvp;
		kvp += T * (size_t)b->dh;
	}
	t->x = take(&sc, T * d);
	t->ln = take(&sc, T * d);
	t->tmp = take(&sc, T * d);
	t->qkv = take(&sc, 3 * T * dh_max);
	t->att = take(&sc, T * dh_max);
	t->hid = take(&sc, T * ff_max);
	t->srow = take(&sc, h_max * tpad);
	t->logits = take(&sc, (size_t)s->vocab);
	t->seq = (int32_t *)sc;
	return 0;
}

/* Teacher-forced FP32 forward over the calibration examples (a seeded choice of
 * calib_prompts of them), every matrix input into its calibrator. */
static int calibrate(tm_tf_infer *t, const tm_ctx *ctx, const tm_dec_example *ex, int n,
		     tm_err *err)
{
	for (int i = 0; i < t->n_mats; i++) {
		int rc = tm_qcalib_new(t->o.calib, t->o.calib_percentile, &t->mats[i]->cal, err);
		if (rc)
			return rc;
	}
	int32_t *order = tm_xmalloc(sizeof(int32_t) * (size_t)n);
	for (int i = 0; i < n; i++)
		order[i] = i;
	int use = n;
	if (t->o.calib_prompts < n) {
		tm_rng r;
		tm_rng_seed(&r, t->o.seed ^ 0xCA11B4A7Eull);
		tm_rng_shuffle(&r, order, n);
		use = t->o.calib_prompts;
	}
	t->calibrating = true;
	int rc = 0;
	for (int i = 0; i < use; i++) {
		const tm_dec_example *e = &ex[order[i]];
		int len = e->len < t->spec.ctx ? e->len : t->spec.ctx;
		if (len < 1 || tm_dec_encode(e->text, len, t->seq) != len) {
			rc = tm_err_set(err, TM_EINVAL, "calib", "tf_infer: calibration example %d "
					"is empty or has a character outside the vocabulary",
					order[i]);
			break;
		}
		for (int j = 0; j < len; j++)
			if (t->seq[j] >= t->spec.vocab) {
				rc = tm_err_set(err, TM_EINVAL, "calib", "tf_infer: calibration "
						"example %d has token %d, the model's vocabulary "
						"is %d", order[i], t->seq[j], t->spec.vocab);
				break;
			}
		if (rc)
			break;
		forward_rows(t, ctx, 0, len, false, NULL);
	}
	t->calibrating = false;
	free(order);
	return rc;
}

/* Final representation of one matrix; x->w is freed. */
static int finish_mat(tm_tf_infer *t, const tm_ctx *ctx, tfi_mat *x, bool sparse_candidate,
		      tm_err *err)
{
	tm_isa isa = ctx ? ctx->isa : TM_ISA_PORTABLE;
	size_t nk = (size_t)x->n * x->k;
	int64_t nz = 0;
	for (size_t i = 0; i < nk; i++)
		nz += x->w[i] != 0.0f;
	double zeros = 1.0 - (double)nz / (double)nk;
	char why[64] = "";
	bool sparse = false;
	int rc = 0;
	if (sparse_candidate && t->o.sparsity > 0)
		sparse = t->o.quantize
			? tm_sparse_decide_q8(isa, x->n, x->k, zeros, 1, why, sizeof(why))
			: tm_sparse_decide(isa, x->n, x->k, zeros, 1, why, sizeof(why));
	size_t bias_bytes = x->b ? sizeof(float) * (size_t)x->n : 0;
	if (sparse) {
		rc = t->o.quantize
			? tm_sparse_new_q8(ctx, x->n, x->k, x->w, TM_SPARSE_AUTO, &x->sw, err)
			: tm_sparse_new(ctx, x->n, x->k, x->w, TM_SPARSE_AUTO, &x->sw, err);
		if (rc)
			return rc;
		x->kind = TFI_SPARSE;
		x->info.bytes = tm_sparse_bytes(x->sw) + bias_bytes;
		snprintf(x->info.kernel, sizeof(x->info.kernel), "%s", why);
	} else if (t->o.quantize) {
		float xs = tm_qcalib_scale(x->cal);
		rc = tm_qlinear_new(x->n, x->k, x->w, x->b, t->o.gran, xs, &x->ql, err);
		if (rc)
			return rc;
		x->kind = TFI_Q8;
		x->info.bytes = tm_qlinear_bytes(x->ql);
		tm_ctx qc = { .isa = isa };
		if (why[0])
			snprintf(x->info.kernel, sizeof(x->info.kernel), "%s", why);
		else
			snprintf(x->info.kernel, sizeof(x->info.kernel), "int8 %s",
				 tm_qgemm_kernels_name(&qc));
	} else {
		rc = tm_linear_pack(ctx, x->n, x->k, x->w, &x->pw, err);
		if (rc)
			return rc;
		x->kind = TFI_F32;
		x->info.bytes = packed_bytes(x->pw) + bias_bytes;
		if (why[0])
			snprintf(x->info.kernel, sizeof(x->info.kernel), "%s", why);
		else
			snprintf(x->info.kernel, sizeof(x->info.kernel), "f32 packed %s",
				 tm_isa_name(x->pw->isa));
	}
	x->info.params = (int64_t)nk + (x->b ? x->n : 0);
	x->info.nonzero = nz;
	for (int j = 0; x->b && j < x->n; j++)
		x->info.nonzero += x->b[j] != 0.0f;
	x->info.flops = 2 * (int64_t)nk;
	free(x->w);
	x->w = NULL;
	tm_qcalib_free(x->cal);
	x->cal = NULL;
	return 0;
}

int tm_tf_infer_new(const tm_transformer *m, const tm_tf_infer_opts *o, const tm_ctx *ctx,
		    const tm_dec_example *calib, int n_calib, tm_tf_infer **out, tm_err *err)
{
	*out = NULL;
	if (!m || !o)
		return tm_err_set(err, TM_EINVAL, "tf_infer", "tf_infer: no model or options");
	int rc = tm_tf_spec_check(&m->spec, err);
	if (rc)
		return rc;
	if ((rc = check_opts(m, o, calib, n_calib, err)))
		return rc;
	const tm_tf_spec *s = &m->spec;
	const size_t d = (size_t)s->d_model;
	tm_tf_infer *t = tm_xcalloc(1, sizeof(*t));
	t->spec = *s;
	t->o = *o;
	t->hd = s->d_model / s->n_head;
	t->wte = copy_floats(m->w.wte, (size_t)s->vocab * d);
	t->wpe = copy_floats(m->w.wpe, (size_t)s->ctx * d);
	t->lnf_w = copy_floats(m->w.lnf_w, d);
	t->lnf_b = copy_floats(m->w.lnf_b, d);
	for (int l = 0; l < s->n_layer; l++)
		build_block(t, m, l);
	mat_init(&t->head, s->vocab, s->d_model, copy_floats(m->w.head_w, (size_t)s->vocab * d),
		 NULL, "head");
	mats_list(t);
	if ((rc = alloc_buffers(t, err)))
		goto fail;

	/* unstructured magnitude pruning of the block matrices, one threshold per matrix */
	for (int i = 0; i < t->n_mats && o->sparsity > 0; i++) {
		tfi_mat *x = t->mats[i];
		if (x == &t->head)
			continue;
		if ((rc = tm_prune_magnitude(x->w, (size_t)x->n * x->k, o->sparsity, NULL, NULL,
					     err)))
			goto fail;
	}
	if (o->quantize && (rc = calibrate(t, ctx, calib, n_calib, err)))
		goto fail;
	for (int i = 0; i < t->n_mats; i++)
		if ((rc = finish_mat(t, ctx, t->mats[i], t->mats[i] != &t->head, err)))
			goto fail;
	*out = t;
	return 0;
fail:
	tm_tf_infer_free(t);
	return rc;
}

void tm_tf_infer_free(tm_tf_infer *t)
{
	if (!t)
		return;
	free(t->wte);
	free(t->wpe);
	free(t->lnf_w);
	free(t->lnf_b);
	for (int l = 0; l < t->spec.n_layer; l++) {
		tfi_block *b = &t->block[l];
		mat_release(&b->qkv);
		mat_release(&b->proj);
		mat_release(&b->fc);
		mat_release(&b->fc2);
		free(b->ln1_w);
		free(b->ln1_b);
		free(b->ln2_w);
		free(b->ln2_b);
	}
	mat_release(&t->head);
	tm_free_aligned(t->kv);
	tm_free_aligned(t->x);  /* the scratch block starts at x */
	free(t);
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

static void prof_open(tm_tf_infer *t, tm_prof *p, tfi_prof *pf)
{
	memset(pf, 0, sizeof(*pf));
	pf->p = p;
	pf->emb = tm_prof_entry_get(p, "embedding", "embedding", "f32");
	for (int l = 0; l < t->spec.n_layer; l++) {
		tfi_block *b = &t->block[l];
		pf->blk[l][P_LN1] = tm_prof_entry_get(p, b->pname[P_LN1], "layernorm", "f32");
		pf->blk[l][P_QKV] = tm_prof_entry_get(p, b->pname[P_QKV], "linear",
						      b->qkv.info.kernel);
		pf->blk[l][P_ATTN] = tm_prof_entry_get(p, b->pname[P_ATTN], "attention",
						       t->o.kv_cache ? "f32 kv cache" : "f32 recompute");
		pf->blk[l][P_PROJ] = tm_prof_entry_get(p, b->pname[P_PROJ], "linear",
						       b->proj.info.kernel);
		pf->blk[l][P_LN2] = tm_prof_entry_get(p, b->pname[P_LN2], "layernorm", "f32");
		pf->blk[l][P_FC] = tm_prof_entry_get(p, b->pname[P_FC], "linear+gelu",
						     b->fc.info.kernel);
		pf->blk[l][P_FC2] = tm_prof_entry_get(p, b->pname[P_FC2], "linear",
						      b->fc2.info.kernel);
	}
	pf->lnf = tm_prof_entry_get(p, "lnf", "layernorm", "f32");
	pf->head = tm_prof_entry_get(p, "head", "linear", t->head.info.kernel);
}

typedef enum gen_mode {
	GEN_CACHED = 0,      /* prefill, then one row per token reading the cache */
	GEN_REPLAY = 1,      /* no cache: every step recomputes prefill and rows, same math */
	GEN_RECOMPUTE = 2,   /* no cache: every step one forward over the whole prefix */
} gen_mode;

static int generate(tm_tf_infer *t, const tm_ctx *ctx, gen_mode mode, const int32_t *prompt,
		    int n_prompt, int max_new, int32_t stop, int32_t *out, tm_prof *prof,
		    tm_err *err)
{
	const int T = t->spec.ctx, V = t->spec.vocab;
	if (max_new < 0)
		return tm_err_set(err, TM_EINVAL, "generate", "generate: max_new is %d, must be "
				  "non-negative", max_new);
	if (n_prompt < 1 || n_prompt > T)
		return tm_err_set(err, TM_EINVAL, "prompt", "generate: prompt has %d tokens, must "
				  "be in [1, %d]", n_prompt, T);
	for (int j = 0; j < n_prompt; j++)
		if (prompt[j] < 0 || prompt[j] >= V)
			return tm_err_set(err, TM_EINVAL, "prompt", "generate: prompt token %d is "
					  "out of range [0, %d)", prompt[j], V);
	if (max_new == 0 || n_prompt >= T)
		return 0;
	tfi_prof pfs, *pf = NULL;
	if (prof) {
		prof_open(t, prof, &pfs);
		pf = &pfs;
	}
	memcpy(t->seq, prompt, sizeof(int32_t) * (size_t)n_prompt);
	int n = 0;
	if (mode == GEN_CACHED)
		forward_rows(t, ctx, 0, n_prompt, true, pf);
	for (;;) {
		int len = n_prompt + n;
		if (mode == GEN_REPLAY) {
			forward_rows(t, ctx, 0, n_prompt, len == n_prompt, pf);
			for (int r = n_prompt; r < len; r++)
				forward_rows(t, ctx, r, r + 1, r == len - 1, pf);
		} else if (mode == GEN_RECOMPUTE) {
			forward_rows(t, ctx, 0, len, true, pf);
		}
		int32_t tok = argmax(t->logits, V);
		out[n++] = tok;
		t->seq[len] = tok;
		if (tok == stop || n == max_new || n_prompt + n >= T)
			break;
		if (mode == GEN_CACHED)
			forward_rows(t, ctx, len, len + 1, true, pf);
	}
	return n;
}

int tm_tf_infer_generate(tm_tf_infer *t, const tm_ctx *ctx, const int32_t *prompt, int n_prompt,
			 int max_new, int32_t stop, int32_t *out, tm_prof *prof, tm_err *err)
{
	return generate(t, ctx, t->o.kv_cache ? GEN_CACHED : GEN_REPLAY, prompt, n_prompt,
			max_new, stop, out, prof, err);
}

int tm_tf_infer_generate_recompute(tm_tf_infer *t, const tm_ctx *ctx, const int32_t *prompt,
				   int n_prompt, int max_new, int32_t stop, int32_t *out,
				   tm_prof *prof, tm_err *err)
{
	return generate(t, ctx, GEN_RECOMPUTE, prompt, n_prompt, max_new, stop, out, prof, err);
}

const float *tm_tf_infer_logits(const tm_tf_infer *t)
{
	return t->logits;
}

int tm_tf_infer_evaluate(tm_tf_infer *t, const tm_ctx *ctx, const tm_dec_example *ex, int n,
			 tm_dec_score *score, tm_err *err)
{
	tm_dec_score_init(score);
	if (t->spec.vocab != tm_dec_vocab_size())
		return tm_err_set(err, TM_EINVAL, "vocab", "evaluate: model vocabulary is %d, the "
				  "decathlon's is %d", t->spec.vocab, tm_dec_vocab_size());
	int32_t end = tm_dec_end_token();
	int32_t prompt[TM_DEC_MAX_LEN], gen[TM_DEC_MAX_LEN + 1];
	int rc = 0;
	for (int i = 0; i < n && rc == 0; i++) {
		int np = tm_dec_encode(ex[i].text, ex[i].prompt_len, prompt);
		if (np < 1) {
			rc = tm_err_set(err, TM_EINVAL, "examples", "evaluate: example %d has an "
					"empty prompt or a character outside the vocabulary", i);
			break;
		}
		/* the answer's length plus the end mark decides exact match */
		int cap = ex[i].len - ex[i].prompt_len;
		int got = tm_tf_infer_generate(t, ctx, prompt, np, cap, end, gen, NULL, err);
		if (got < 0) {
			rc = got;
			break;
		}
		tm_dec_score_add(score, &ex[i], gen, got);
	}
	tm_dec_score_finish(score);
	return rc;
}

// ---- stats ----

void tm_tf_infer_get_stats(const tm_tf_infer *t, tm_infer_stats *st)
{
	const tm_tf_spec *s = &t->spec;
	const int64_t d = s->d_model, V = s->vocab;
	memset(st, 0, sizeof(*st));
	/* embeddings and LayerNorms, stored as float copies */
	int64_t other = V * d + (int64_t)s->ctx * d + 2 * d + 4 * d * s->n_layer;
	int64_t other_nz = 0;
	const float *arrs[2] = { t->wte, t->wpe };
	size_t lens[2] = { (size_t)(V * d), (size_t)s->ctx * (size_t)d };
	for (int a = 0; a < 2; a++)
		for (size_t i = 0; i < lens[a]; i++)
			other_nz += arrs[a][i] != 0.0f;
	for (int j = 0; j < d; j++)
		other_nz += (t->lnf_w[j] != 0.0f) + (t->lnf_b[j] != 0.0f);
	for (int l = 0; l < s->n_layer; l++) {
		const tfi_block *b = &t->block[l];
		for (int j = 0; j < d; j++)
			other_nz += (b->ln1_w[j] != 0.0f) + (b->ln1_b[j] != 0.0f) +
				    (b->ln2_w[j] != 0.0f) + (b->ln2_b[j] != 0.0f);
	}
	st->params = other;
	st->nonzero_params = other_nz;
	st->bytes = (size_t)other * sizeof(float);
	for (int i = 0; i < t->n_mats; i++) {
		const tm_infer_layer *x = &t->mats[i]->info;
		st->params += x->params;
		st->nonzero_params += x->nonzero;
		st->bytes += x->bytes;
		st->flops += x->flops;
	}
	/* one token attending to the whole context: scores and weighted sum per kept head */
	for (int l = 0; l < s->n_layer; l++)
		st->flops += 4 * (int64_t)t->block[l].dh * s->ctx;
}

int tm_tf_infer_n_layers(const tm_tf_infer *t)
{
	return t->n_mats;
}

const tm_infer_layer *tm_tf_infer_layer_at(const tm_tf_infer *t, int i)
{
	return i >= 0 && i < t->n_mats ? &t->mats[i]->info : NULL;
}

size_t tm_tf_infer_cache_bytes(const tm_tf_infer *t)
{
	return t->o.kv_cache ? t->kv_bytes : 0;
}

int tm_tf_infer_block_heads(const tm_tf_infer *t, int layer)
{
	return layer >= 0 && layer < t->spec.n_layer ? t->block[layer].n_head : -1;
}

int tm_tf_infer_block_ff(const tm_tf_infer *t, int layer)
{
	return layer >= 0 && layer < t->spec.n_layer ? t->block[layer].ff : -1;
}
