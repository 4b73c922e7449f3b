/* test_transformer.c: Check suite of engine/transformer.c: the parameter count against the
 * hand formula, packed rows against examples run alone (segment mask, restarting positions),
 * the full backward against finite differences on a tiny model, save/load bit-identical,
 * generation (single, batched, teacher-forced evaluation agree) and a short real training run
 * that must learn. */
#include "tests.h"
#include "engine.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static tm_tf_spec tiny_spec(int ctx, int d, int heads, int layers, int ff, int vocab)
{
	tm_tf_spec s = { .ctx = ctx, .d_model = d, .n_head = heads, .n_layer = layers,
			 .d_ff = ff, .vocab = vocab };
	return s;
}

/* Random weights large enough that every path carries a visible gradient. */
static void randomize(tm_transformer *m, uint64_t seed)
{
	tt_fill_random(m->params, m->n_floats, seed);
	for (size_t i = 0; i < m->n_floats; i++)
		m->params[i] *= 0.5f;
	for (int l = 0; l < m->spec.n_layer; l++)
		for (int j = 0; j < m->spec.d_model; j++) {
			m->w.block[l].ln1_w[j] += 1.0f;
			m->w.block[l].ln2_w[j] += 1.0f;
		}
	for (int j = 0; j < m->spec.d_model; j++)
		m->w.lnf_w[j] += 1.0f;
}

START_TEST(test_param_count)
{
	tm_tf_spec s;
	tm_tf_spec_reference(&s);
	ck_assert_int_eq(s.vocab, 50);
	/* per block: qkv 3*128*128 + 384, proj 128*128 + 128, fc 512*128 + 512,
	 * proj 128*512 + 128, two LayerNorms 4*128 */
	size_t block = (49152 + 384) + (16384 + 128) + (65536 + 512) + (65536 + 128) + 512;
	size_t want = 2 * block + 50 * 128 + 128 * 128 + 2 * 128 + 50 * 128;
	ck_assert_uint_eq(want, 425984);
	ck_assert_uint_eq(tm_tf_spec_params(&s), want);
	tm_transformer *m;
	tm_err e;
	ck_assert_int_eq(tm_transformer_new(&m, &s, &e), 0);
	ck_assert_uint_eq(m->n_params, want);
	ck_assert_uint_ge(m->n_floats, want);
	/* the decayed range holds exactly the weight matrices */
	ck_assert_uint_eq(m->n_decay, 2 * (49152 + 16384 + 65536 + 65536) + 50 * 128);
	ck_assert_ptr_eq(m->w.block[0].qkv_w, m->params);
	ck_assert((uintptr_t)m->w.block[1].fc_b % 64 == 0);
	/* FLOPs per token: 2 * (matrix weights) + 4 L d n_attend */
	double f = tm_tf_flops_per_token(&s, 10);
	ck_assert(fabs(f - (2.0 * 2 * (4 * 16384 + 2 * 65536) + 2.0 * 50 * 128 +
			    4.0 * 2 * 128 * 10)) < 1);
	tm_transformer_free(m);

	tm_tf_spec bad = s;
	bad.n_head = 7;
	ck_assert_int_eq(tm_transformer_new(&m, &bad, &e), TM_EINVAL);
	ck_assert_ptr_nonnull(strstr(e.msg, "n_head"));
	bad = s;
	bad.n_layer = 0;
	ck_assert_int_eq(tm_tf_spec_check(&bad, &e), TM_EINVAL);
}
END_TEST

/* Logits of several examples packed in one row equal those of each example run alone. */
START_TEST(test_packed_equals_alone)
{
	tm_tf_spec s = tiny_spec(32, 16, 2, 2, 32, 50);
	tm_transformer *m;
	tm_err e;
	ck_assert_int_eq(tm_transformer_new(&m, &s, &e), 0);
	randomize(m, 5);
	tm_ctx ctx = { .isa = TM_ISA_PORTABLE };
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	ctx.isa = tm_isa_best(&cpu);
	ctx.pool = tm_pool_new(2);

	const char *ex[3] = { "S719=179.", "M33778584=8.", "Nabcd=1." };
	int32_t tok[32], pos[32], seg[32];
	int fill = 0, start[3], len[3];
	for (int i = 0; i < 3; i++) {
		len[i] = (int)strlen(ex[i]);
		start[i] = fill;
		ck_assert_int_eq(tm_dec_encode(ex[i], len[i], tok + fill), len[i]);
		for (int j = 0; j < len[i]; j++) {
			pos[fill + j] = j;
			seg[fill + j] = i;
		}
		fill += len[i];
	}
	for (int j = fill; j < 32; j++) {
		tok[j] = 0;
		pos[j] = 0;
		seg[j] = -1;
	}
	tm_tf_acts *a;
	ck_assert_int_eq(tm_tf_acts_new(&a, m, 1, false, &e), 0);
	tm_tf_batch b = { .rows = 1, .tok = tok, .pos = pos, .seg = seg, .n_out = 32 };
	ck_assert_int_eq(tm_transformer_forward(m, &ctx, a, &b, NULL, &e), 0);
	float *packed = malloc(sizeof(float) * 32 * 50);
	memcpy(packed, tm_tf_acts_logits(a), sizeof(float) * 32 * 50);

	for (int i = 0; i < 3; i++) {
		int32_t t1[32], p1[32];
		for (int j = 0; j < 32; j++) {
			t1[j] = j < len[i] ? tok[start[i] + j] : 0;
			p1[j] = j < len[i] ? j : 0;
		}
		/* no seg: causal only, the padding after the example cannot reach it */
		tm_tf_batch b1 = { .rows = 1, .tok = t1, .pos = p1, .n_out = 32 };
		ck_assert_int_eq(tm_transformer_forward(m, &ctx, a, &b1, NULL, &e), 0);
		const float *alone = tm_tf_acts_logits(a);
		double diff = tt_max_rel_diff(packed + (size_t)start[i] * 50, alone,
					      (size_t)len[i] * 50);
		ck_assert_msg(diff < 1e-5, "example %d differs by %g", i, diff);
	}
	/* without the mask the second example would see the first: the test can fail */
	tm_tf_batch nomask = { .rows = 1, .tok = tok, .pos = pos, .n_out = 32 };
	ck_assert_int_eq(tm_transformer_forward(m, &ctx, a, &nomask, NULL, &e), 0);
	ck_assert(tt_max_rel_diff(packed + (size_t)start[1] * 50,
				  tm_tf_acts_logits(a) + (size_t)start[1] * 50, 50) > 1e-3);

	/* out_idx picks rows of the same logits */
	int32_t idx[2] = { start[2] + 3, start[0] };
	tm_tf_batch sel = { .rows = 1, .tok = tok, .pos = pos, .seg = seg, .n_out = 2,
			    .out_idx = idx };
	ck_assert_int_eq(tm_transformer_forward(m, &ctx, a, &sel, NULL, &e), 0);
	ck_assert(tt_max_rel_diff(tm_tf_acts_logits(a), packed + (size_t)idx[0] * 50, 50) < 1e-5);
	ck_assert(tt_max_rel_diff(tm_tf_acts_logits(a) + 50, packed + (size_t)idx[1] * 50, 50) <
		  1e-5);

	/* invalid ids are refused */
	tok[3] = 50;
	ck_assert_int_eq(tm_transformer_forward(m, &ctx, a, &b, NULL, &e), TM_EINVAL);
	tok[3] = 4;
	pos[3] = 32;
	ck_assert_int_eq(tm_transformer_forward(m, &ctx, a, &b, NULL, &e), TM_EINVAL);
	pos[3] = 3;
	b.rows = 2;
	ck_assert_int_eq(tm_transformer_forward(m, &ctx, a, &b, NULL, &e), TM_EINVAL);
	idx[0] = 32;
	ck_assert_int_eq(tm_transformer_forward(m, &ctx, a, &sel, NULL, &e), TM_EINVAL);

	free(packed);
	tm_tf_acts_free(a);
	tm_pool_free(ctx.pool);
	tm_transformer_free(m);
}
END_TEST

/* A tiny packed batch with a few targets, for the gradient check. */
typedef struct fd_case {
	int32_t tok[24], pos[24], seg[24], idx[24], tgt[24];
	int n_out;
} fd_case;

static void fd_case_init(fd_case *c, int vocab)
{
	/* two rows of 12: sequences of 5 + 7 and 9 + padding */
	int lens[2][2] = { { 5, 7 }, { 9, 0 } };
	uint64_t x = 12345;
	c->n_out = 0;
	for (int r = 0; r < 2; r++) {
		int at = 0;
		for (int q = 0; q < 2; q++)
			for (int j = 0; j < lens[r][q]; j++, at++) {
				int i = r * 12 + at;
				x = x * 6364136223846793005ull + 1442695040888963407ull;
				c->tok[i] = (int32_t)((x >> 33) % (uint64_t)vocab);
				c->pos[i] = j;
				c->seg[i] = q;
				if (j >= 2) {
					c->idx[c->n_out] = i;
					c->tgt[c->n_out++] = (int32_t)((x >> 45) % (uint64_t)vocab);
				}
			}
		for (; at < 12; at++) {
			c->tok[r * 12 + at] = 0;
			c->pos[r * 12 + at] = 0;
			c->seg[r * 12 + at] = -1;
		}
	}
	c->tgt[3] = -1; /* an ignored target */
}

static double fd_loss(const tm_transformer *m, tm_tf_acts *a, const tm_tf_batch *b)
{
	tm_ctx ctx = { .isa = TM_ISA_PORTABLE };
	float loss = 0;
	tm_err e;
	ck_assert_int_eq(tm_transformer_forward(m, &ctx, a, b, &loss, &e), 0);
	return loss;
}

START_TEST(test_backward_finite_differences)
{
	tm_tf_spec s = tiny_spec(12, 8, 2, 2, 16, 13);
	tm_transformer *m;
	tm_err e;
	ck_assert_int_eq(tm_transformer_new(&m, &s, &e), 0);
	randomize(m, 9);
	fd_case c;
	fd_case_init(&c, s.vocab);
	tm_tf_batch b = { .rows = 2, .tok = c.tok, .pos = c.pos, .seg = c.seg, .n_out = c.n_out,
			  .out_idx = c.idx, .targets = c.tgt };
	tm_tf_acts *a;
	ck_assert_int_eq(tm_tf_acts_new(&a, m, 2, true, &e), 0);
	tm_ctx ctx = { .isa = TM_ISA_PORTABLE };
	/* backward refuses to run before a forward with targets */
	ck_assert_int_eq(tm_transformer_backward(m, &ctx, a, &b, &e), TM_ESTATE);
	tm_transformer_zero_grad(m);
	fd_loss(m, a, &b);
	ck_assert_int_eq(tm_transformer_backward(m, &ctx, a, &b, &e), 0);
	float *grad = malloc(sizeof(float) * m->n_floats);
	memcpy(grad, m->grads, sizeof(float) * m->n_floats);

	/* every real parameter: central differences in double around float weights */
	const float h = 1e-2f;
	int checked = 0, nonzero = 0;
	double worst = 0;
	for (size_t i = 0; i < m->n_floats; i++) {
		float keep = m->params[i];
		m->params[i] = keep + h;
		double lp = fd_loss(m, a, &b);
		m->params[i] = keep - h;
		double lm = fd_loss(m, a, &b);
		m->params[i] = keep;
		double fd = (lp - lm) / (2.0 * h);
		double an = grad[i];
		double err = fabs(fd - an) / (2e-3 + fabs(fd) + fabs(an));
		if (err > worst)
			worst = err;
		ck_assert_msg(fabs(fd - an) < 2e-3 + 2e-2 * fabs(fd),
			      "param %zu: analytic %g, finite difference %g", i, an, fd);
		checked++;
		nonzero += fabs(an) > 1e-4;
	}
	/* padding floats between tensors have zero gradient; real ones mostly do not */
	ck_assert_int_gt(nonzero, (int)m->n_params * 3 / 4);
	ck_assert_int_eq(checked, (int)m->n_floats);

	/* gradients accumulate until zeroed */
	fd_loss(m, a, &b);
	ck_assert_int_eq(tm_transformer_backward(m, &ctx, a, &b, &e), 0);
	for (size_t i = 0; i < m->n_floats; i += 7)
		ck_assert(fabsf(m->grads[i] - 2 * grad[i]) <= 1e-5f + 1e-4f * fabsf(grad[i]));
	free(grad);
	tm_tf_acts_free(a);
	tm_transformer_free(m);
}
END_TEST

static bool files_equal(const char *a, const char *b)
{
	FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
	bool same = fa && fb;
	while (same) {
		int ca = fgetc(fa), cb = fgetc(fb);
		same = ca == cb;
		if (ca == EOF)
			break;
	}
	if (fa)
		fclose(fa);
	if (fb)
		fclose(fb);
	return same;
}

START_TEST(test_save_load_bit_identical)
{
	tm_tf_spec s = tiny_spec(16, 16, 4, 2, 24, 50);
	tm_transformer *m, *m2;
	tm_err e;
	ck_assert_int_eq(tm_transformer_new(&m, &s, &e), 0);
	tm_transformer_init(m, 77);
	randomize(m, 77);
	char *dir = tt_tmpdir("tf");
	char path[512];
	snprintf(path, sizeof(path), "%s/model.safetensors", dir);
	const char *meta[] = { "decathlon_points", "123.5", "vocabulary", tm_dec_vocab(), NULL };
	ck_assert_int_eq(tm_transformer_save(m, path, meta, &e), 0);
	ck_assert_int_eq(tm_transformer_load(&m2, path, &e), 0);
	ck_assert(memcmp(&m->spec, &m2->spec, sizeof(s)) == 0);
	/* saving the loaded model writes the same bytes */
	char path2[512];
	snprintf(path2, sizeof(path2), "%s/again.safetensors", dir);
	ck_assert_int_eq(tm_transformer_save(m2, path2, meta, &e), 0);
	ck_assert(files_equal(path, path2));

	/* the file has PyTorch names and shapes, the spec and the extra metadata */
	tm_st_file *f;
	ck_assert_int_eq(tm_st_open(&f, path, &e), 0);
	ck_assert_int_eq(tm_st_count(f), 2 + 12 * 2 + 3);
	size_t floats = 0;
	for (int i = 0; i < tm_st_count(f); i++)
		floats += tm_st_at(f, i)->nbytes / 4;
	ck_assert_uint_eq(floats, m->n_params);
	const tm_st_tensor *t = tm_st_get(f, "blocks.1.attn.qkv.weight");
	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(t->ndim, 2);
	ck_assert_int_eq(t->shape[0], 48);
	ck_assert_int_eq(t->shape[1], 16);
	t = tm_st_get(f, "blocks.0.mlp.proj.weight");
	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(t->shape[0], 16);
	ck_assert_int_eq(t->shape[1], 24);
	ck_assert(memcmp(t->data, m->w.block[0].fc2_w, t->nbytes) == 0);
	ck_assert_ptr_nonnull(tm_st_get(f, "head.weight"));
	ck_assert_ptr_nonnull(tm_st_get(f, "ln_f.bias"));
	ck_assert_str_eq(tm_st_meta(f, "n_head"), "4");
	ck_assert_str_eq(tm_st_meta(f, "decathlon_points"), "123.5");
	ck_assert_str_eq(tm_st_meta(f, "vocabulary"), tm_dec_vocab());
	tm_st_free(f);

	/* same logits, bit for bit */
	tm_ctx ctx = { .isa = TM_ISA_PORTABLE };
	int32_t tok[16], pos[16];
	for (int i = 0; i < 16; i++) {
		tok[i] = (i * 7) % 50;
		pos[i] = i;
	}
	tm_tf_batch b = { .rows = 1, .tok = tok, .pos = pos, .n_out = 16 };
	tm_tf_acts *a1, *a2;
	ck_assert_int_eq(tm_tf_acts_new(&a1, m, 1, false, &e), 0);
	ck_assert_int_eq(tm_tf_acts_new(&a2, m2, 1, false, &e), 0);
	ck_assert_int_eq(tm_transformer_forward(m, &ctx, a1, &b, NULL, &e), 0);
	ck_assert_int_eq(tm_transformer_forward(m2, &ctx, a2, &b, NULL, &e), 0);
	ck_assert(memcmp(tm_tf_acts_logits(a1), tm_tf_acts_logits(a2), sizeof(float) * 16 * 50) ==
		  0);
	tm_tf_acts_free(a1);
	tm_tf_acts_free(a2);
	tm_transformer_free(m2);

	/* a file with a tensor of the wrong shape is refused, naming the tensor */
	tm_st_writer *w = tm_st_writer_new();
	const char *keys[] = { "format", "tinymlperf-transformer-v1", "ctx", "16", "d_model", "16",
			       "n_head", "4", "n_layer", "2", "d_ff", "24", "vocab", "50" };
	for (int i = 0; i < 14; i += 2)
		tm_st_writer_meta(w, keys[i], keys[i + 1]);
	int64_t shape[2] = { 50, 15 };
	tm_st_writer_add(w, "wte.weight", TM_DTYPE_F32, 2, shape, m->params);
	snprintf(path, sizeof(path), "%s/bad.safetensors", dir);
	ck_assert_int_eq(tm_st_writer_save(w, path, &e), 0);
	tm_st_writer_free(w);
	ck_assert_int_ne(tm_transformer_load(&m2, path, &e), 0);
	ck_assert_ptr_nonnull(strstr(e.msg, "wte.weight"));
	ck_assert_ptr_null(m2);
	tm_transformer_free(m);
	tt_rmtree(dir);
	free(dir);
}
END_TEST

/* Batched generation equals one-by-one generation; it stops at the stop id or max_new. */
START_TEST(test_generate)
{
	tm_tf_spec s = tiny_spec(24, 16, 2, 1, 32, 50);
	tm_transformer *m;
	tm_err e;
	ck_assert_int_eq(tm_transformer_new(&m, &s, &e), 0);
	randomize(m, 3);
	tm_ctx ctx = { .isa = TM_ISA_PORTABLE };
	int32_t p[5][20];
	int np[5] = { 3, 10, 20, 1, 7 };
	const int32_t *pp[5];
	for (int i = 0; i < 5; i++) {
		for (int j = 0; j < np[i]; j++)
			p[i][j] = (i * 11 + j * 5) % 50;
		pp[i] = p[i];
	}
	int32_t out[5][8];
	int len[5];
	ck_assert_int_eq(tm_transformer_generate_batch(m, &ctx, 5, pp, np, 8, -1, &out[0][0], len,
						       &e), 0);
	for (int i = 0; i < 5; i++) {
		/* the 20-token prompt stops at the context (24) */
		ck_assert_int_eq(len[i], i == 2 ? 4 : 8);
		int32_t one[8];
		int k = tm_transformer_generate(m, &ctx, p[i], np[i], 8, -1, one, &e);
		ck_assert_int_eq(k, len[i]);
		ck_assert(memcmp(one, out[i], sizeof(int32_t) * (size_t)k) == 0);
		/* greedy: token j is the argmax of a forward over prompt + tokens < j */
		int32_t seq[24], ps[24];
		memcpy(seq, p[i], sizeof(int32_t) * (size_t)np[i]);
		memcpy(seq + np[i], one, sizeof(int32_t) * (size_t)k);
		for (int j = np[i] + k; j < 24; j++)
			seq[j] = 0;
		for (int j = 0; j < 24; j++)
			ps[j] = j;
		tm_tf_acts *a;
		ck_assert_int_eq(tm_tf_acts_new(&a, m, 1, false, &e), 0);
		tm_tf_batch b = { .rows = 1, .tok = seq, .pos = ps, .n_out = 24 };
		ck_assert_int_eq(tm_transformer_forward(m, &ctx, a, &b, NULL, &e), 0);
		for (int j = 0; j < k; j++) {
			const float *lg = tm_tf_acts_logits(a) + (size_t)(np[i] - 1 + j) * 50;
			int best = 0;
			for (int v = 1; v < 50; v++)
				best = lg[v] > lg[best] ? v : best;
			ck_assert_int_eq(best, one[j]);
		}
		tm_tf_acts_free(a);
	}
	/* a stop id ends the sequence, included */
	int32_t stop = out[1][2];
	int32_t one[8];
	int k = tm_transformer_generate(m, &ctx, p[1], np[1], 8, stop, one, &e);
	ck_assert_int_le(k, 3);
	ck_assert_int_eq(one[k - 1], stop);
	/* bad prompts */
	ck_assert_int_eq(tm_transformer_generate(m, &ctx, p[0], 0, 8, -1, one, &e), TM_EINVAL);
	p[0][1] = 99;
	ck_assert_int_eq(tm_transformer_generate(m, &ctx, p[0], 3, 8, -1, one, &e), TM_EINVAL);
	tm_transformer_free(m);
}
END_TEST

/* A short real run of the Decathlon trainer on three easy tasks must learn them; greedy
 * generation and the teacher-forced evaluation must agree. */
START_TEST(test_training_learns)
{
	tm_decathlon_train_opts o;
	tm_decathlon_train_defaults(&o);
	o.spec.d_model = 64;
	o.spec.n_head = 4;
	o.spec.n_layer = 1;
	o.spec.d_ff = 128;
	o.rows = 6;
	o.steps = TT_SLOW_BUILD ? 120 : 300;
	o.warmup = 20;
	o.eval_every = 0;
	o.threads = 2;
	for (int t = 0; t < TM_DEC_NTASKS; t++)
		o.task_weight[t] = 0;
	o.task_weight[TM_DEC_MAX] = 1;
	o.task_weight[TM_DEC_MAJORITY] = 1;
	o.task_weight[TM_DEC_SHIFT] = 1;
	tm_ctx ctx;
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	ctx.isa = tm_isa_best(&cpu);
	ctx.pool = tm_pool_new(2);
	tm_transformer *m;
	tm_decathlon_train_stats st;
	tm_err e;
	ck_assert_int_eq(tm_decathlon_train(&o, &ctx, &m, &st, NULL, &e), 0);
	ck_assert_int_eq(st.steps, o.steps);
	ck_assert(st.tokens > 0 && st.examples > 0);

	int per = 40, n = per * TM_DEC_NTASKS;
	tm_dec_example *test = malloc(sizeof(*test) * (size_t)n);
	tm_dec_test_set(o.seed, per, test);
	tm_dec_score forced, gen;
	ck_assert_int_eq(tm_decathlon_evaluate(m, &ctx, test, n, false, &forced, &e), 0);
	ck_assert_int_eq(tm_decathlon_evaluate(m, &ctx, test, n, true, &gen, &e), 0);
	for (int t = 0; t < TM_DEC_NTASKS; t++) {
		ck_assert_int_eq(forced.total[t], per);
		ck_assert_msg(abs(forced.correct[t] - gen.correct[t]) <= 1,
			      "task %s: forced %d, generated %d", tm_dec_task_name(t),
			      forced.correct[t], gen.correct[t]);
	}
	/* majority and max are well above chance (50% and ~30% for a constant answer) */
	double learned = gen.points[TM_DEC_MAX] + gen.points[TM_DEC_MAJORITY] +
			 gen.points[TM_DEC_SHIFT];
	ck_assert_msg(learned > (TT_SLOW_BUILD ? 120 : 180), "learned only %.1f points (max %.1f, "
		      "majority %.1f, shift %.1f), loss %.3f", learned, gen.points[TM_DEC_MAX],
		      gen.points[TM_DEC_MAJORITY], gen.points[TM_DEC_SHIFT],
		      (double)st.final_loss);
	free(test);
	tm_transformer_free(m);
	tm_pool_free(ctx.pool);
}
END_TEST

/* A step budget is bit-reproducible, whatever the thread count. */
START_TEST(test_training_is_deterministic)
{
	tm_decathlon_train_opts o;
	tm_decathlon_train_defaults(&o);
	o.spec.d_model = 32;
	o.spec.n_head = 4;
	o.spec.n_layer = 1;
	o.spec.d_ff = 64;
	o.rows = 3;
	o.steps = 4;
	o.warmup = 2;
	o.eval_every = 0;
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	tm_ctx one = { .isa = tm_isa_best(&cpu) };
	tm_ctx two = { .isa = one.isa, .pool = tm_pool_new(2) };
	tm_transformer *m1, *m2, *m3;
	tm_decathlon_train_stats s1, s2, s3;
	tm_err e;
	ck_assert_int_eq(tm_decathlon_train(&o, &one, &m1, &s1, NULL, &e), 0);
	ck_assert_int_eq(tm_decathlon_train(&o, &two, &m2, &s2, NULL, &e), 0);
	ck_assert(memcmp(m1->params, m2->params, sizeof(float) * m1->n_floats) == 0);
	ck_assert(s1.final_loss == s2.final_loss);
	ck_assert(s1.tokens == s2.tokens);
	o.seed = 2;
	ck_assert_int_eq(tm_decathlon_train(&o, &two, &m3, &s3, NULL, &e), 0);
	ck_assert(memcmp(m1->params, m3->params, sizeof(float) * m1->n_floats) != 0);
	tm_transformer_free(m1);
	tm_transformer_free(m2);
	tm_transformer_free(m3);
	/* bad options are refused */
	o.steps = 0;
	o.minutes = 0;
	ck_assert_int_eq(tm_decathlon_train(&o, &two, &m3, &s3, NULL, &e), TM_EINVAL);
	ck_assert_ptr_null(m3);
	tm_pool_free(two.pool);
}
END_TEST

Suite *transformer_suite(void)
{
	Suite *s = suite_create("transformer");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_param_count);
	tcase_add_test(tc, test_packed_equals_alone);
	tcase_add_test(tc, test_backward_finite_differences);
	tcase_add_test(tc, test_save_load_bit_identical);
	tcase_add_test(tc, test_generate);
	tcase_add_test(tc, test_training_is_deterministic);
	suite_add_tcase(s, tc);
	TCase *slow = tcase_create("training");
	tcase_set_timeout(slow, 180);
	tcase_add_test(slow, test_training_learns);
	suite_add_tcase(s, slow);
	return s;
}
