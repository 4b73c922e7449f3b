/* test_tf_infer.c: the tf_infer suite: transformer inference with a KV cache, INT8 and pruning.
 * A small Decathlon model (d 64, 4 heads, 2 blocks, FFN 128, context 128) is trained for a few
 * hundred steps once per test case (an unchecked fixture, in the parent before Check forks), so
 * its greedy answers are real predictions and logit ties are rare.  Cached and uncached
 * generation must give identical tokens and bit-identical logits, equal to
 * tm_transformer_generate's tokens, for prompts of all ten tasks and one sample that fills the
 * whole context, with every kernel set; INT8 must mostly agree; structured pruning must equal
 * the dense model with the removed heads and neurons zeroed; FLOP and parameter counts are
 * checked against hand-computed values and bad options are refused. */
#include "tests.h"

#include "engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PER_TASK 3
/* Prompts per task of the cached = uncached check: every kernel set runs four generation
 * paths per prompt, the uncached ones quadratic in the length, so the sanitizer build takes
 * one prompt of each task. */
#define CACHED_PER_TASK (TT_SLOW_BUILD ? 1 : PER_TASK)

static tm_transformer *g_model;

static void train_model(void)
{
	tm_decathlon_train_opts o;
	tm_decathlon_train_defaults(&o);
	o.spec.d_model = 64;
	o.spec.n_head = 4;
	o.spec.n_layer = 2;
	o.spec.d_ff = 128;
	o.rows = 6;
	o.steps = 200;
	o.warmup = 20;
	o.eval_every = 0;
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	tm_ctx ctx = { .isa = tm_isa_best(&cpu) };
	tm_decathlon_train_stats st;
	tm_err e;
	if (tm_decathlon_train(&o, &ctx, &g_model, &st, NULL, &e) != 0)
		g_model = NULL;
}

static void free_model(void)
{
	tm_transformer_free(g_model);
	g_model = NULL;
}

static int n_isas(tm_isa *isas)
{
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	int n = 0;
	for (int i = TM_ISA_PORTABLE; i <= TM_ISA_AVX512; i++)
		if (tm_isa_supported(&cpu, (tm_isa)i))
			isas[n++] = (tm_isa)i;
	return n;
}

static tm_tf_infer *build(const tm_transformer *m, const tm_tf_infer_opts *o, const tm_ctx *ctx,
			  const tm_dec_example *calib, int n_calib)
{
	tm_tf_infer *t = NULL;
	tm_err e;
	int rc = tm_tf_infer_new(m, o, ctx, calib, n_calib, &t, &e);
	ck_assert_msg(rc == 0, "tm_tf_infer_new: %s", e.msg);
	return t;
}

static int gen(tm_tf_infer *t, const tm_ctx *ctx, const int32_t *p, int np, int cap,
	       int32_t stop, int32_t *out)
{
	tm_err e;
	int n = tm_tf_infer_generate(t, ctx, p, np, cap, stop, out, NULL, &e);
	ck_assert_msg(n >= 0, "generate: %s", e.msg);
	return n;
}

/* Training examples for calibration. */
static tm_dec_example *calib_set(int n)
{
	tm_dec_example *c = malloc(sizeof(*c) * (size_t)n);
	tm_rng r;
	tm_rng_seed(&r, 99);
	for (int i = 0; i < n; i++)
		tm_dec_train_example(&r, i % TM_DEC_NTASKS, &c[i]);
	return c;
}

// ---- KV cache ----

/* Every kernel set: the cached path, the uncached path (replay) and the plain recompute give
 * the same tokens as tm_transformer_generate, and cached and uncached the same logits bit
 * for bit; prompts of all ten tasks, answers capped a little past their end mark. */
START_TEST(test_cached_equals_uncached)
{
	ck_assert_ptr_nonnull(g_model);
	tm_isa isas[3];
	int ni = n_isas(isas);
	int n = CACHED_PER_TASK * TM_DEC_NTASKS, V = g_model->spec.vocab;
	tm_dec_example *ex = malloc(sizeof(*ex) * (size_t)n);
	tm_dec_test_set(5, CACHED_PER_TASK, ex);
	int32_t end = tm_dec_end_token();
	for (int k = 0; k < ni; k++) {
		tm_ctx ctx = { .isa = isas[k] };
		tm_tf_infer_opts o;
		tm_tf_infer_opts_default(&o);
		o.kv_cache = true;
		tm_tf_infer *tc = build(g_model, &o, &ctx, NULL, 0);
		o.kv_cache = false;
		tm_tf_infer *tu = build(g_model, &o, &ctx, NULL, 0);
		int tokens = 0;
		for (int i = 0; i < n; i++) {
			int32_t p[TM_DEC_MAX_LEN], a[TM_DEC_MAX_LEN], b[TM_DEC_MAX_LEN];
			int32_t r[TM_DEC_MAX_LEN], g[TM_DEC_MAX_LEN];
			float la[128], lb[128];
			int np = tm_dec_encode(ex[i].text, ex[i].prompt_len, p);
			int cap = ex[i].len - ex[i].prompt_len + 3;
			tm_err e;
			int na = gen(tc, &ctx, p, np, cap, end, a);
			memcpy(la, tm_tf_infer_logits(tc), sizeof(float) * (size_t)V);
			int nb = gen(tu, &ctx, p, np, cap, end, b);
			memcpy(lb, tm_tf_infer_logits(tu), sizeof(float) * (size_t)V);
			int nr = tm_tf_infer_generate_recompute(tu, &ctx, p, np, cap, end, r, NULL,
								&e);
			int ng = tm_transformer_generate(g_model, &ctx, p, np, cap, end, g, &e);
			ck_assert_int_ge(na, 1);
			ck_assert_msg(na == nb && memcmp(a, b, sizeof(int32_t) * (size_t)na) == 0,
				      "%s: cached and uncached differ on '%s'",
				      tm_isa_name(ctx.isa), ex[i].text);
			ck_assert_msg(memcmp(la, lb, sizeof(float) * (size_t)V) == 0, "%s: logits of '%s' not bit-identical",
				      tm_isa_name(ctx.isa), ex[i].text);
			ck_assert_msg(na == nr && memcmp(a, r, sizeof(int32_t) * (size_t)na) == 0,
				      "%s: recompute differs on '%s'", tm_isa_name(ctx.isa),
				      ex[i].text);
			ck_assert_msg(na == ng && memcmp(a, g, sizeof(int32_t) * (size_t)na) == 0,
				      "%s: tm_transformer_generate differs on '%s'",
				      tm_isa_name(ctx.isa), ex[i].text);
			tokens += na;
		}
		ck_assert_int_gt(tokens, n * 2);
		tm_tf_infer_free(tc);
		tm_tf_infer_free(tu);
	}
	free(ex);
}
END_TEST

/* A prompt of 62 tokens generating until the context is full (total length 128), with a
 * pool of two threads: the same tokens cached, uncached and from tm_transformer_generate. */
START_TEST(test_full_context)
{
	ck_assert_ptr_nonnull(g_model);
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	tm_ctx ctx = { .isa = tm_isa_best(&cpu), .pool = tm_pool_new(2) };
	tm_dec_example ex;
	tm_rng r;
	tm_rng_seed(&r, 3);
	tm_dec_sample(&r, TM_DEC_REVERSE, &ex);
	int32_t p[TM_DEC_MAX_LEN], a[128], b[128], g[128];
	int np = tm_dec_encode(ex.text, ex.prompt_len, p);
	tm_tf_infer_opts o;
	tm_tf_infer_opts_default(&o);
	o.kv_cache = true;
	tm_tf_infer *tc = build(g_model, &o, &ctx, NULL, 0);
	o.kv_cache = false;
	tm_tf_infer *tu = build(g_model, &o, &ctx, NULL, 0);
	int na = gen(tc, &ctx, p, np, 500, -1, a);
	ck_assert_int_eq(np + na, 128);
	tm_ctx solo = { .isa = ctx.isa };
	int nb = gen(tu, &solo, p, np, 500, -1, b);
	tm_err e;
	int ng = tm_transformer_generate(g_model, &ctx, p, np, 500, -1, g, &e);
	ck_assert_int_eq(nb, na);
	ck_assert_int_eq(ng, na);
	ck_assert(memcmp(a, b, sizeof(int32_t) * (size_t)na) == 0);
	ck_assert(memcmp(a, g, sizeof(int32_t) * (size_t)na) == 0);
	/* a full prompt leaves no room; max_new 0 gives nothing */
	int32_t full[128];
	for (int i = 0; i < 128; i++)
		full[i] = p[i % np];
	ck_assert_int_eq(gen(tc, &ctx, full, 128, 5, -1, a), 0);
	ck_assert_int_eq(gen(tc, &ctx, p, np, 0, -1, a), 0);
	ck_assert_int_eq(tm_tf_infer_cache_bytes(tc),
			 2 * sizeof(float) * 2 * 128 * 64);  /* K and V, 2 blocks, ctx x d */
	ck_assert_int_eq(tm_tf_infer_cache_bytes(tu), 0);
	tm_tf_infer_free(tc);
	tm_tf_infer_free(tu);
	tm_pool_free(ctx.pool);
}
END_TEST

/* The cache is reset between prompts: A, B, A gives A's tokens and logits twice. */
START_TEST(test_reset_between_prompts)
{
	ck_assert_ptr_nonnull(g_model);
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	tm_ctx ctx = { .isa = tm_isa_best(&cpu) };
	tm_tf_infer_opts o;
	tm_tf_infer_opts_default(&o);
	o.kv_cache = true;
	tm_tf_infer *t = build(g_model, &o, &ctx, NULL, 0);
	tm_dec_example ea, eb;
	ck_assert_int_eq(tm_dec_make(TM_DEC_SORT, "719222", &ea), 0);
	tm_rng r;
	tm_rng_seed(&r, 8);
	tm_dec_sample(&r, TM_DEC_COPY, &eb);
	int32_t pa[TM_DEC_MAX_LEN], pb[TM_DEC_MAX_LEN], a1[64], b1[64], a2[64];
	float la[128];
	int npa = tm_dec_encode(ea.text, ea.prompt_len, pa);
	int npb = tm_dec_encode(eb.text, eb.prompt_len, pb);
	int n1 = gen(t, &ctx, pa, npa, 20, -1, a1);
	memcpy(la, tm_tf_infer_logits(t), sizeof(float) * (size_t)g_model->spec.vocab);
	int nb = gen(t, &ctx, pb, npb, 40, -1, b1);
	int n2 = gen(t, &ctx, pa, npa, 20, -1, a2);
	ck_assert_int_eq(n1, 20);
	ck_assert_int_eq(nb, 40);
	ck_assert_int_eq(n2, n1);
	ck_assert(memcmp(a1, a2, sizeof(int32_t) * (size_t)n1) == 0);
	ck_assert(memcmp(la, tm_tf_infer_logits(t), sizeof(float) * (size_t)g_model->spec.vocab)
		  == 0);
	tm_tf_infer_free(t);
}
END_TEST

/* tm_tf_infer_evaluate scores like tm_decathlon_evaluate (generation). */
START_TEST(test_evaluate_matches)
{
	ck_assert_ptr_nonnull(g_model);
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	tm_ctx ctx = { .isa = tm_isa_best(&cpu) };
	int per = 4, n = per * TM_DEC_NTASKS;
	tm_dec_example *ex = malloc(sizeof(*ex) * (size_t)n);
	tm_dec_test_set(1, per, ex);
	tm_tf_infer_opts o;
	tm_tf_infer_opts_default(&o);
	o.kv_cache = true;
	tm_tf_infer *t = build(g_model, &o, &ctx, NULL, 0);
	tm_dec_score a, b;
	tm_err e;
	ck_assert_int_eq(tm_tf_infer_evaluate(t, &ctx, ex, n, &a, &e), 0);
	ck_assert_int_eq(tm_decathlon_evaluate(g_model, &ctx, ex, n, true, &b, &e), 0);
	for (int k = 0; k < TM_DEC_NTASKS; k++) {
		ck_assert_int_eq(a.total[k], per);
		ck_assert_int_eq(a.correct[k], b.correct[k]);
	}
	ck_assert(a.total_points == b.total_points);
	ck_assert_msg(a.total_points > 0, "the trained model scores nothing");
	tm_tf_infer_free(t);
	free(ex);
}
END_TEST

// ---- profile and counts ----

/* Profile entries summed over the steps: one head call per token, the qkv FLOPs of every row
 * run (prompt once, then one row per step), calls of every named layer. */
START_TEST(test_profile)
{
	ck_assert_ptr_nonnull(g_model);
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	tm_ctx ctx = { .isa = tm_isa_best(&cpu) };
	tm_tf_infer_opts o;
	tm_tf_infer_opts_default(&o);
	o.kv_cache = true;
	tm_tf_infer *t = build(g_model, &o, &ctx, NULL, 0);
	int32_t p[10] = { 5, 6, 7, 8, 9, 10, 11, 12, 13, 14 }, out[32];
	tm_prof prof;
	tm_prof_reset(&prof);
	tm_err e;
	int n = tm_tf_infer_generate(t, &ctx, p, 10, 30, -1, out, &prof, &e);
	ck_assert_int_eq(n, 30);
	const char *names[] = { "embedding", "blocks.0.ln1", "blocks.0.qkv", "blocks.0.attn",
				"blocks.0.proj", "blocks.0.ln2", "blocks.0.fc", "blocks.0.fc2",
				"blocks.1.fc2", "lnf", "head" };
	int64_t d = 64, rows = 10 + n - 1;  /* the last token is never run */
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const tm_prof_entry *pe = NULL;
		for (int j = 0; j < prof.n; j++)
			if (strcmp(prof.e[j].layer, names[i]) == 0)
				pe = &prof.e[j];
		ck_assert_msg(pe != NULL, "no profile entry '%s'", names[i]);
		ck_assert_int_eq(pe->calls, n);  /* prefill + n - 1 steps */
		ck_assert(pe->time_ns >= 0 && pe->bytes > 0 && pe->flops > 0);
		if (strcmp(names[i], "blocks.0.qkv") == 0)
			ck_assert_int_eq(pe->flops, 2 * rows * 3 * d * d);
		if (strcmp(names[i], "head") == 0)
			ck_assert_int_eq(pe->flops, 2 * (int64_t)n * g_model->spec.vocab * d);
		if (strcmp(names[i], "blocks.0.attn") == 0) /* 4 d per attended position */
			ck_assert_int_eq(pe->flops, 4 * d * (rows * (rows + 1) / 2));
	}
	tm_tf_infer_free(t);
}
END_TEST

/* Parameters, FLOPs and bytes against hand-computed values, unpruned and pruned. */
START_TEST(test_counts)
{
	ck_assert_ptr_nonnull(g_model);
	const tm_tf_spec *s = &g_model->spec;
	tm_ctx ctx = { .isa = TM_ISA_PORTABLE };
	tm_tf_infer_opts o;
	tm_tf_infer_opts_default(&o);
	tm_tf_infer *t = build(g_model, &o, &ctx, NULL, 0);
	tm_infer_stats st;
	tm_tf_infer_get_stats(t, &st);
	ck_assert_int_eq(st.params, (int64_t)tm_tf_spec_params(s));
	ck_assert(st.flops == (int64_t)tm_tf_flops_per_token(s, s->ctx));
	ck_assert_int_eq(tm_tf_infer_n_layers(t), 4 * s->n_layer + 1);
	ck_assert_ptr_null(tm_tf_infer_layer_at(t, -1));
	ck_assert_ptr_null(tm_tf_infer_layer_at(t, 4 * s->n_layer + 1));
	const tm_infer_layer *qkv = tm_tf_infer_layer_at(t, 0);
	ck_assert_str_eq(qkv->name, "blocks.0.qkv");
	ck_assert_int_eq(qkv->out_c, 3 * 64);
	ck_assert_int_eq(qkv->flops, 2 * 3 * 64 * 64);
	ck_assert_int_eq(qkv->bytes, (3 * 64 * 64 + 3 * 64) * sizeof(float)); /* portable: rows */
	ck_assert_str_eq(tm_tf_infer_layer_at(t, 4 * s->n_layer)->name, "head");
	size_t f32_bytes = st.bytes;
	ck_assert_int_ge(f32_bytes, st.params * sizeof(float));
	tm_tf_infer_free(t);

	/* half the heads and a quarter of the neurons: (d 64, hd 16) 2 heads, 96 neurons */
	o.prune_heads = 0.5;
	o.prune_ffn = 0.25;
	t = build(g_model, &o, &ctx, NULL, 0);
	tm_tf_infer_get_stats(t, &st);
	int64_t d = 64, dh = 32, ff = 96, V = s->vocab, L = s->n_layer;
	int64_t per_layer = 3 * dh * d + 3 * dh + d * dh + d + ff * d + ff + d * ff + d + 4 * d;
	ck_assert_int_eq(st.params, L * per_layer + 2 * V * d + s->ctx * d + 2 * d);
	int64_t flops = L * 2 * (3 * dh * d + d * dh + 2 * ff * d) + 2 * V * d +
			L * 4 * dh * s->ctx;
	ck_assert_int_eq(st.flops, flops);
	ck_assert_int_eq(tm_tf_infer_block_heads(t, 0), 2);
	ck_assert_int_eq(tm_tf_infer_block_ff(t, 1), 96);
	ck_assert_int_eq(tm_tf_infer_block_heads(t, 2), -1);
	ck_assert_int_lt(st.bytes, f32_bytes);
	tm_tf_infer_free(t);

	/* int8 stores a byte per weight (plus scales): well under half the f32 bytes */
	tm_dec_example *c = calib_set(20);
	tm_tf_infer_opts_default(&o);
	o.quantize = true;
	t = build(g_model, &o, &ctx, c, 20);
	tm_tf_infer_get_stats(t, &st);
	size_t emb = (size_t)(V * d + s->ctx * d) * sizeof(float);  /* wte and wpe stay f32 */
	ck_assert_int_lt(st.bytes - emb, (f32_bytes - emb) / 2);
	ck_assert(strstr(tm_tf_infer_layer_at(t, 0)->kernel, "int8") != NULL);
	tm_tf_infer_free(t);
	free(c);
}
END_TEST

// ---- INT8 ----

/* INT8 with calibrated activation scales mostly agrees with FP32, and its own cached and
 * uncached paths give identical tokens. */
START_TEST(test_int8_agrees)
{
	ck_assert_ptr_nonnull(g_model);
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	tm_ctx ctx = { .isa = tm_isa_best(&cpu) };
	int nc = 64;
	tm_dec_example *c = calib_set(nc);
	tm_tf_infer_opts o;
	tm_tf_infer_opts_default(&o);
	o.kv_cache = true;
	tm_tf_infer *tf = build(g_model, &o, &ctx, NULL, 0);
	o.quantize = true;
	tm_tf_infer *tq = build(g_model, &o, &ctx, c, nc);
	o.kv_cache = false;
	tm_tf_infer *tqu = build(g_model, &o, &ctx, c, nc);
	int n = PER_TASK * TM_DEC_NTASKS, same_seq = 0, same_tok = 0, total = 0;
	tm_dec_example *ex = malloc(sizeof(*ex) * (size_t)n);
	tm_dec_test_set(11, PER_TASK, ex);
	for (int i = 0; i < n; i++) {
		int32_t p[TM_DEC_MAX_LEN], a[TM_DEC_MAX_LEN], q[TM_DEC_MAX_LEN], u[TM_DEC_MAX_LEN];
		int np = tm_dec_encode(ex[i].text, ex[i].prompt_len, p);
		int cap = ex[i].len - ex[i].prompt_len;
		int na = gen(tf, &ctx, p, np, cap, -1, a);
		int nq = gen(tq, &ctx, p, np, cap, -1, q);
		int nu = gen(tqu, &ctx, p, np, cap, -1, u);
		ck_assert_int_eq(na, cap);
		ck_assert_int_eq(nq, cap);
		ck_assert(nu == nq && memcmp(q, u, sizeof(int32_t) * (size_t)nq) == 0);
		same_seq += memcmp(a, q, sizeof(int32_t) * (size_t)na) == 0;
		for (int j = 0; j < na; j++) {
			same_tok += a[j] == q[j];
			total++;
		}
	}
	ck_assert_msg(same_tok >= 0.9 * total && same_seq >= 0.7 * n,
		      "int8 agrees on %d of %d tokens, %d of %d answers", same_tok, total,
		      same_seq, n);
	/* percentile calibration and per-tensor scales build and run too */
	o.calib = TM_QCALIB_PERCENTILE;
	o.calib_percentile = 99.9;
	o.gran = TM_QGRAN_TENSOR;
	o.calib_prompts = 16;
	tm_tf_infer *tp = build(g_model, &o, &ctx, c, nc);
	int32_t p[4] = { 30, 31, 32, 2 }, out[8];
	ck_assert_int_eq(gen(tp, &ctx, p, 4, 8, -1, out), 8);
	tm_tf_infer_free(tp);
	tm_tf_infer_free(tf);
	tm_tf_infer_free(tq);
	tm_tf_infer_free(tqu);
	free(ex);
	free(c);
}
END_TEST

// ---- pruning ----

/* Fractions of 0 build exactly the unpruned model: same logits bit for bit. */
START_TEST(test_prune_zero_is_unpruned)
{
	ck_assert_ptr_nonnull(g_model);
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	tm_ctx ctx = { .isa = tm_isa_best(&cpu) };
	tm_tf_infer_opts o;
	tm_tf_infer_opts_default(&o);
	o.kv_cache = true;
	tm_tf_infer *a = build(g_model, &o, &ctx, NULL, 0);
	o.prune_heads = 0.0;
	o.prune_ffn = 0.0;
	o.sparsity = 0.0;
	o.seed = 77;
	tm_tf_infer *b = build(g_model, &o, &ctx, NULL, 0);
	int32_t p[12] = { 44, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 2 }, x[40], y[40];
	int nx = gen(a, &ctx, p, 12, 40, -1, x), ny = gen(b, &ctx, p, 12, 40, -1, y);
	ck_assert_int_eq(nx, ny);
	ck_assert(memcmp(x, y, sizeof(int32_t) * (size_t)nx) == 0);
	ck_assert(memcmp(tm_tf_infer_logits(a), tm_tf_infer_logits(b),
			 sizeof(float) * (size_t)g_model->spec.vocab) == 0);
	tm_tf_infer_free(a);
	tm_tf_infer_free(b);
}
END_TEST

/* The rule of structured pruning, recomputed here: heads of smallest L1 norm (q, k, v rows and
 * projection columns), neurons of smallest L2 norm (fc row and fc2 column), ties to the lower
 * index removed first. */
static void removed_units(const tm_transformer *m, int l, int rm_heads, int rm_ff,
			  uint8_t *head_gone, uint8_t *ff_gone)
{
	const tm_tf_block *w = &m->w.block[l];
	int d = m->spec.d_model, H = m->spec.n_head, hd = d / H, ff = m->spec.d_ff;
	double hn[64], *fn = malloc(sizeof(double) * (size_t)ff);
	for (int h = 0; h < H; h++) {
		double a = 0;
		for (int part = 0; part < 3; part++)
			for (int r = 0; r < hd; r++)
				for (int c = 0; c < d; c++)
					a += fabsf(w->qkv_w[((size_t)part * d + h * hd + r) * d + c]);
		for (int r = 0; r < d; r++)
			for (int c = 0; c < hd; c++)
				a += fabsf(w->proj_w[(size_t)r * d + h * hd + c]);
		hn[h] = a;
		head_gone[h] = 0;
	}
	for (int j = 0; j < ff; j++) {
		double a = 0;
		for (int c = 0; c < d; c++) {
			double u = w->fc_w[(size_t)j * d + c], v = w->fc2_w[(size_t)c * ff + j];
			a += u * u + v * v;
		}
		fn[j] = sqrt(a);
		ff_gone[j] = 0;
	}
	for (int k = 0; k < rm_heads; k++) {
		int best = -1;
		for (int h = 0; h < H; h++)
			if (!head_gone[h] && (best < 0 || hn[h] < hn[best]))
				best = h;
		head_gone[best] = 1;
	}
	for (int k = 0; k < rm_ff; k++) {
		int best = -1;
		for (int j = 0; j < ff; j++)
			if (!ff_gone[j] && (best < 0 || fn[j] < fn[best]))
				best = j;
		ff_gone[best] = 1;
	}
	free(fn);
}

/* Structured pruning equals the dense model with the removed heads' q/k/v rows and biases
 * and the removed neurons' fc rows and biases zeroed (a zero value row makes a head's output
 * 0, GELU(0) = 0): logits within float rounding, tokens equal. */
START_TEST(test_structured_equals_masked)
{
	ck_assert_ptr_nonnull(g_model);
	const tm_tf_spec *s = &g_model->spec;
	tm_ctx ctx = { .isa = TM_ISA_PORTABLE };
	tm_transformer *mk;
	tm_err e;
	ck_assert_int_eq(tm_transformer_new(&mk, s, &e), 0);
	memcpy(mk->params, g_model->params, sizeof(float) * g_model->n_floats);
	int d = s->d_model, hd = d / s->n_head, ff = s->d_ff;
	for (int l = 0; l < s->n_layer; l++) {
		uint8_t hg[64], fg[512];
		removed_units(g_model, l, 2, 64, hg, fg);
		tm_tf_block *w = &mk->w.block[l];
		for (int h = 0; h < s->n_head; h++) {
			if (!hg[h])
				continue;
			for (int part = 0; part < 3; part++)
				for (int r = 0; r < hd; r++) {
					size_t row = (size_t)part * d + h * hd + r;
					memset(w->qkv_w + row * d, 0, sizeof(float) * (size_t)d);
					w->qkv_b[row] = 0;
				}
		}
		for (int j = 0; j < ff; j++)
			if (fg[j]) {
				memset(w->fc_w + (size_t)j * d, 0, sizeof(float) * (size_t)d);
				w->fc_b[j] = 0;
			}
	}
	tm_tf_infer_opts o;
	tm_tf_infer_opts_default(&o);
	o.kv_cache = true;
	tm_tf_infer *dense = build(mk, &o, &ctx, NULL, 0);
	o.prune_heads = 0.5;
	o.prune_ffn = 0.5;
	tm_tf_infer *pruned = build(g_model, &o, &ctx, NULL, 0);
	ck_assert_int_eq(tm_tf_infer_block_heads(pruned, 1), 2);
	ck_assert_int_eq(tm_tf_infer_block_ff(pruned, 0), 64);
	tm_dec_example *ex = malloc(sizeof(*ex) * TM_DEC_NTASKS);
	tm_dec_test_set(9, 1, ex);
	for (int i = 0; i < TM_DEC_NTASKS; i++) {
		int32_t p[TM_DEC_MAX_LEN], a[TM_DEC_MAX_LEN], b[TM_DEC_MAX_LEN];
		int np = tm_dec_encode(ex[i].text, ex[i].prompt_len, p);
		int cap = ex[i].len - ex[i].prompt_len;
		int na = gen(dense, &ctx, p, np, cap, -1, a);
		int nb = gen(pruned, &ctx, p, np, cap, -1, b);
		ck_assert_int_eq(na, nb);
		ck_assert_msg(memcmp(a, b, sizeof(int32_t) * (size_t)na) == 0,
			      "pruned and masked differ on '%s'", ex[i].text);
		double diff = tt_max_rel_diff(tm_tf_infer_logits(pruned),
					      tm_tf_infer_logits(dense), (size_t)s->vocab);
		ck_assert_msg(diff < 1e-4, "logits differ by %g", diff);
	}
	free(ex);
	tm_tf_infer_free(dense);
	tm_tf_infer_free(pruned);
	tm_transformer_free(mk);
}
END_TEST

/* Unstructured sparsity: the block matrices lose the asked fraction of weights, each says
 * whether it runs sparse or dense and why, the head stays dense; cached == uncached still;
 * also combined with int8 and structured pruning. */
START_TEST(test_unstructured)
{
	ck_assert_ptr_nonnull(g_model);
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	tm_ctx ctx = { .isa = tm_isa_best(&cpu) };
	tm_tf_infer_opts o;
	tm_tf_infer_opts_default(&o);
	tm_tf_infer *dense = build(g_model, &o, &ctx, NULL, 0);
	o.sparsity = 0.95;
	o.kv_cache = true;
	tm_tf_infer *sc = build(g_model, &o, &ctx, NULL, 0);
	o.kv_cache = false;
	tm_tf_infer *su = build(g_model, &o, &ctx, NULL, 0);
	tm_infer_stats a, b;
	tm_tf_infer_get_stats(dense, &a);
	tm_tf_infer_get_stats(sc, &b);
	ck_assert_int_eq(a.params, b.params);
	const tm_tf_spec *s = &g_model->spec;
	int64_t block = (int64_t)s->n_layer * (4 * s->d_model * s->d_model +
					       2 * s->d_model * s->d_ff);
	int64_t removed = a.nonzero_params - b.nonzero_params;
	ck_assert_msg(llabs(removed - (int64_t)(0.95 * block)) < block / 100,
		      "removed %lld of %lld block weights", (long long)removed, (long long)block);
	for (int i = 0; i < tm_tf_infer_n_layers(sc); i++) {
		const tm_infer_layer *x = tm_tf_infer_layer_at(sc, i);
		if (strcmp(x->name, "head") == 0) {
			ck_assert(strstr(x->kernel, "f32") != NULL);
			continue;
		}
		ck_assert_msg(strstr(x->kernel, "sparse") || strstr(x->kernel, "dense"),
			      "layer %s kernel '%s' gives no choice", x->name, x->kernel);
		ck_assert(strstr(x->kernel, "break-even") != NULL);
		ck_assert_int_lt(x->nonzero, x->params / 10);
	}
	int32_t p[12] = { 44, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 2 }, x[40], y[40];
	int nx = gen(sc, &ctx, p, 12, 40, -1, x), ny = gen(su, &ctx, p, 12, 40, -1, y);
	ck_assert_int_eq(nx, ny);
	ck_assert(memcmp(x, y, sizeof(int32_t) * (size_t)nx) == 0);
	tm_tf_infer_free(sc);
	tm_tf_infer_free(su);
	/* prune, then quantize */
	tm_dec_example *c = calib_set(16);
	o.quantize = true;
	o.prune_heads = 0.25;
	o.prune_ffn = 0.5;
	o.sparsity = 0.5;
	o.kv_cache = true;
	tm_tf_infer *all = build(g_model, &o, &ctx, c, 16);
	ck_assert_int_eq(gen(all, &ctx, p, 12, 40, -1, x), 40);
	tm_tf_infer_get_stats(all, &b);
	ck_assert_int_lt(b.bytes, a.bytes);
	tm_tf_infer_free(all);
	tm_tf_infer_free(dense);
	free(c);
}
END_TEST

// ---- errors ----

START_TEST(test_bad_options)
{
	ck_assert_ptr_nonnull(g_model);
	tm_ctx ctx = { .isa = TM_ISA_PORTABLE };
	tm_tf_infer *t = (tm_tf_infer *)&ctx;
	tm_err e;
	tm_tf_infer_opts o;
	tm_dec_example *c = calib_set(4);
	struct {
		double heads, ffn, sparsity;
		bool quantize;
		int calib_prompts, n_calib;
		tm_qcalib_method calib;
		double pct;
		const char *field;
	} bad[] = {
		{ 1.0, 0, 0, false, 1, 0, TM_QCALIB_MINMAX, 1, "prune_heads" },
		{ -0.1, 0, 0, false, 1, 0, TM_QCALIB_MINMAX, 1, "prune_heads" },
		{ 0.9, 0, 0, false, 1, 0, TM_QCALIB_MINMAX, 1, "prune_heads" }, /* all 4 heads */
		{ 0, 1.0, 0, false, 1, 0, TM_QCALIB_MINMAX, 1, "prune_ffn" },
		{ 0, NAN, 0, false, 1, 0, TM_QCALIB_MINMAX, 1, "prune_ffn" },
		{ 0, 0, 1.5, false, 1, 0, TM_QCALIB_MINMAX, 1, "sparsity" },
		{ 0, 0, -1, false, 1, 0, TM_QCALIB_MINMAX, 1, "sparsity" },
		{ 0, 0, 0, true, 1, 0, TM_QCALIB_MINMAX, 1, "calib" },       /* no examples */
		{ 0, 0, 0, true, 0, 4, TM_QCALIB_MINMAX, 1, "calib_prompts" },
		{ 0, 0, 0, true, 1, 4, TM_QCALIB_PERCENTILE, 0, "calib_percentile" },
		{ 0, 0, 0, true, 1, 4, TM_QCALIB_PERCENTILE, 101, "calib_percentile" },
		{ 0, 0, 0, true, 1, 4, (tm_qcalib_method)7, 1, "calib" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		tm_tf_infer_opts_default(&o);
		o.prune_heads = bad[i].heads;
		o.prune_ffn = bad[i].ffn;
		o.sparsity = bad[i].sparsity;
		o.quantize = bad[i].quantize;
		o.calib_prompts = bad[i].calib_prompts;
		o.calib = bad[i].calib;
		o.calib_percentile = bad[i].pct;
		t = (tm_tf_infer *)&ctx;
		memset(&e, 0, sizeof(e));
		ck_assert_int_eq(tm_tf_infer_new(g_model, &o, &ctx, bad[i].n_calib ? c : NULL,
						 bad[i].n_calib, &t, &e), TM_EINVAL);
		ck_assert_ptr_null(t);
		ck_assert_msg(strcmp(e.field, bad[i].field) == 0, "case %zu: field '%s', want "
			      "'%s' (%s)", i, e.field, bad[i].field, e.msg);
		ck_assert(strlen(e.msg) > 10);
	}
	/* a calibration example outside the vocabulary */
	tm_tf_infer_opts_default(&o);
	o.quantize = true;
	c[2].text[1] = '#';
	ck_assert_int_eq(tm_tf_infer_new(g_model, &o, &ctx, c, 4, &t, &e), TM_EINVAL);
	free(c);

	/* generation arguments */
	tm_tf_infer_opts_default(&o);
	o.kv_cache = true;
	t = build(g_model, &o, &ctx, NULL, 0);
	int32_t p[3] = { 1, 2, 3 }, out[4];
	ck_assert_int_eq(tm_tf_infer_generate(t, &ctx, p, 0, 4, -1, out, NULL, &e), TM_EINVAL);
	ck_assert_int_eq(tm_tf_infer_generate(t, &ctx, p, 129, 4, -1, out, NULL, &e), TM_EINVAL);
	ck_assert_int_eq(tm_tf_infer_generate(t, &ctx, p, 3, -1, -1, out, NULL, &e), TM_EINVAL);
	p[1] = 99;
	ck_assert_int_eq(tm_tf_infer_generate(t, &ctx, p, 3, 4, -1, out, NULL, &e), TM_EINVAL);
	p[1] = -1;
	ck_assert_int_eq(tm_tf_infer_generate_recompute(t, &ctx, p, 3, 4, -1, out, NULL, &e),
			 TM_EINVAL);
	ck_assert_str_eq(e.field, "prompt");
	p[1] = 2;
	ck_assert_int_eq(tm_tf_infer_generate(t, &ctx, p, 3, 4, -1, out, NULL, &e), 4);
	tm_tf_infer_free(t);
	tm_tf_infer_free(NULL);
}
END_TEST

Suite *tf_infer_suite(void)
{
	Suite *s = suite_create("tf_infer");
	TCase *tc = tcase_create("trained");
	tcase_add_unchecked_fixture(tc, train_model, free_model);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_cached_equals_uncached);
	tcase_add_test(tc, test_full_context);
	tcase_add_test(tc, test_reset_between_prompts);
	tcase_add_test(tc, test_evaluate_matches);
	tcase_add_test(tc, test_profile);
	tcase_add_test(tc, test_counts);
	tcase_add_test(tc, test_int8_agrees);
	tcase_add_test(tc, test_prune_zero_is_unpruned);
	tcase_add_test(tc, test_structured_equals_masked);
	tcase_add_test(tc, test_unstructured);
	tcase_add_test(tc, test_bad_options);
	suite_add_tcase(s, tc);
	return s;
}
