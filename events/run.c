/* run.c: what `tinymlperf-run run CONFIG.json` does, from a config to a result you can trust.
 * The flow is DESIGN.md's: validate, limits, load data and weights (or train, open division),
 * sandbox, build the baseline (reference model, FP32, portable kernels, one thread, no cache)
 * and the submission (the engine's optimized inference with the config's options), quality of
 * both on the full held-out test set, timed runs of both interleaved in blocks (hx_measure),
 * statistics and the verdict, then the result object (docs/results.md, key by key).  One
 * run_state holds everything of a run; each event supplies its workloads as table rows.
 * Allocations we make go through sbx_malloc, so running out of memory under the sandbox's
 * limit ends the worker with exit code 3 and a clear message, never a crash. */
#include "events.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#define RUN_DEC_TEST_SEED 1       /* the Decathlon's held-out test set (docs/decathlon.md) */
#define RUN_DEC_SAMPLE 200        /* prompts in the timed sample: 20 per task */
#define RUN_CNN_BASE_BATCH 256    /* the baseline's batch size in the Marathon */
#define RUN_PROFILE_IMAGES 256    /* MLP queries of the profile run */
#define RUN_MLP_PERF_SAMPLES 1024 /* MLP images the timed queries cycle through (LoadGen's
				   * performance sample count; quality uses all 10,000) */
#define RUN_PROFILE_PROMPTS 20    /* Decathlon queries of the profile run */
#define RUN_PEAK_S 0.05           /* seconds spent measuring the FP32 peak for the profile */

// ---- a JSON writer ----

typedef struct jbuf {
	char *p;
	size_t n, cap;
	int depth;
	bool first[32];   /* no element written yet at this depth */
} jbuf;

static void jb_raw(jbuf *b, const char *s, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (b->n + n + 1 > cap)
			cap *= 2;
		b->p = sbx_realloc(b->p, cap);
		b->cap = cap;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = '\0';
}

static void jb_printf(jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void jb_printf(jbuf *b, const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	jb_raw(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

static void jb_quote(jbuf *b, const char *s)
{
	jb_raw(b, "\"", 1);
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		if (*c == '"' || *c == '\\') {
			char e[2] = { '\\', (char)*c };
			jb_raw(b, e, 2);
		} else if (*c < 0x20 || *c == 0x7f) {
			jb_printf(b, "\\u%04x", *c);
		} else {
			jb_raw(b, (const char *)c, 1);
		}
	}
	jb_raw(b, "\"", 1);
}

/* The comma and the key (NULL inside an array) of the next value. */
static void jb_sep(jbuf *b, const char *key)
{
	if (!b->first[b->depth])
		jb_raw(b, ",", 1);
	b->first[b->depth] = false;
	if (key) {
		jb_quote(b, key);
		jb_raw(b, ":", 1);
	}
}

static void jb_open(jbuf *b, const char *key, char c)
{
	if (b->depth > 0 || !b->first[0])
		jb_sep(b, key);
	jb_raw(b, &c, 1);
	if (b->depth < 31)
		b->depth++;
	b->first[b->depth] = true;
}

static void jb_close(jbuf *b, char c)
{
	jb_raw(b, &c, 1);
	if (b->depth > 0)
		b->depth--;
}

static void jb_str(jbuf *b, const char *key, const char *s)
{
	jb_sep(b, key);
	jb_quote(b, s ? s : "");
}

static void jb_num(jbuf *b, const char *key, double v)
{
	jb_sep(b, key);
	if (isfinite(v))
		jb_printf(b, "%.10g", v);
	else
		jb_raw(b, "null", 4);
}

static void jb_int(jbuf *b, const char *key, int64_t v)
{
	jb_sep(b, key);
	jb_printf(b, "%lld", (long long)v);
}

static void jb_bool(jbuf *b, const char *key, bool v)
{
	jb_sep(b, key);
	jb_raw(b, v ? "true" : "false", v ? 4 : 5);
}

static void jb_null(jbuf *b, const char *key)
{
	jb_sep(b, key);
	jb_raw(b, "null", 4);
}

static void jb_reset(jbuf *b)
{
	b->n = 0;
	b->depth = 0;
	b->first[0] = true;
	if (b->p)
		b->p[0] = '\0';
}

// ---- the state of one run ----

enum run_stage { ST_LOAD, ST_TRAIN, ST_OPTIMIZE, ST_QUALITY, ST_BENCHMARK, ST_COUNT };

static const char *const stage_names[ST_COUNT] = {
	"load", "train", "optimize", "quality", "benchmark",
};
/* Overall percentage at the start of each stage; the benchmark ends at 99. */
static const double stage_pct[ST_COUNT + 1] = { 0, 8, 40, 45, 55, 99 };

typedef struct run_state {
	const run_opts *o;
	cfg_config cfg;
	const ev_event *ev;
	tm_cpu cpu;
	tm_isa isa;                  /* the submission's kernel set */
	tm_ctx sub_ctx;              /* isa, pool of cfg.threads */
	tm_ctx base_ctx;             /* portable, one thread */
	tm_ctx fast_ctx;             /* best kernels with the submission's pool: reference quality */
	sbx_cpus cpus;
	char host[128];
	double stage_s[ST_COUNT];
	uint64_t t_start, t_stage;
	int stage;
	double last_pct;
	bool bar_open;               /* a progress bar line is pending on the terminal */
	jbuf jb;

	/* data */
	tm_dataset train, test;      /* MLP, CNN */
	tm_dec_example *dec_test;    /* (n_dec_test) Decathlon held-out prompts, task-major */
	int n_dec_test;
	tm_dec_example *dec_calib;   /* (n_dec_calib) training examples for calibration */
	int n_dec_calib;

	/* models */
	tm_model *ref;               /* reference (MLP, CNN), planned for the baseline */
	tm_model *own;               /* open division: the trained model; else NULL */
	tm_infer *inf;               /* the submission (MLP, CNN) */
	tm_transformer *tf_ref;
	tm_transformer *tf_own;
	tm_tf_infer *tf_inf;         /* the submission (Decathlon) */
	tm_tf_infer *tf_base;        /* the baseline: FP32, portable, uncached (Decathlon) */
	tm_tf_infer_opts tf_opts;    /* the submission's options */
	double train_seconds;        /* open division */

	/* quality */
	double q_value, q_ref;
	tm_dec_score sub_score, ref_score;

	/* workloads */
	int32_t *order;              /* (n_order) seeded order of test items (MLP, Decathlon) */
	int n_order;
	uint8_t *perf_px;            /* (n_order, 784) the Sprint's timed images in query order */
	float *logits;               /* (batch, 10) */
	int32_t *gen;                /* (TM_DEC_MAX_LEN) generated ids */
	int32_t *tok;                /* (TM_DEC_MAX_LEN) prompt ids */
	int32_t *tokens_log;         /* tokens generated by each call of the submission */
	size_t n_tokens_log, cap_tokens_log;
	int qerr;                    /* first error in a query (0: none) */
	tm_err qerr_detail;

	hx_opts hx;
	hx_result res;
	tm_prof prof;
	double peak_gflops;          /* the machine's measured single-core FP32 peak */
	int prof_queries;
} run_state;

static int run_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int run_fail(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fflush(stdout);
	fputs("tinymlperf-run: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	fflush(stderr);
	va_end(ap);
	return code;
}

/* An engine error: out of memory is the memory limit (exit 3), anything else internal. */
static int run_engine_fail(run_state *s, const char *what, const tm_err *err)
{
	(void)s;
	if (err->code == TM_ENOMEM)
		sbx_oom_exit(what);
	if (err->code == TM_ELIMIT)
		return run_fail(RUN_EXIT_LIMIT, "%s: %s", what, err->msg);
	return run_fail(RUN_EXIT_INTERNAL, "%s: %s", what, err->msg[0] ? err->msg :
			tm_strerror(err->code));
}

// ---- progress ----

static void bar_end(run_state *s)
{
	if (s->bar_open) {
		fputc('\n', s->o->out);
		s->bar_open = false;
	}
}

static void progress(run_state *s, double pct, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void progress(run_state *s, double pct, const char *fmt, ...)
{
	char msg[201];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (pct < s->last_pct)
		pct = s->last_pct;
	if (pct > 100)
		pct = 100;
	s->last_pct = pct;
	FILE *out = s->o->out;
	if (s->o->json) {
		jbuf b = { 0 };
		jb_reset(&b);
		jb_open(&b, NULL, '{');
		jb_str(&b, "type", "progress");
		jb_str(&b, "stage", stage_names[s->stage]);
		jb_sep(&b, "pct");
		jb_printf(&b, "%.1f", pct);
		jb_str(&b, "message", msg);
		jb_close(&b, '}');
		fprintf(out, "%s\n", b.p);
		free(b.p);
	} else {
		bar_end(s);
		fprintf(out, "[%5.1f%%] %-9s %s\n", pct, stage_names[s->stage], msg);
	}
	fflush(out);
}

/* The benchmark's progress bar on a terminal (one line redrawn), JSON lines at most every
 * 2 percent otherwise. */
static void progress_bar(run_state *s, double frac, const char *msg)
{
	double pct = stage_pct[ST_BENCHMARK] + frac * (stage_pct[ST_BENCHMARK + 1] -
						       stage_pct[ST_BENCHMARK]);
	if (s->o->json || !s->o->tty) {
		if (pct >= s->last_pct + 2.0)
			progress(s, pct, "%s", msg);
		return;
	}
	int fill = (int)(frac * 30 + 0.5);
	char bar[31];
	for (int i = 0; i < 30; i++)
		bar[i] = i < fill ? '#' : '.';
	bar[30] = '\0';
	fprintf(s->o->out, "\r[%s] %5.1f%% %-60.60s", bar, frac * 100, msg);
	fflush(s->o->out);
	s->bar_open = true;
	s->last_pct = pct;
}

static void stage_begin(run_state *s, int stage, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void stage_begin(run_state *s, int stage, const char *fmt, ...)
{
	uint64_t now = tm_now_ns();
	s->stage_s[s->stage] += (double)(now - s->t_stage) * 1e-9;
	s->t_stage = now;
	s->stage = stage;
	char msg[201];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	progress(s, stage_pct[stage], "%s", msg);
}

static void stage_end(run_state *s)
{
	uint64_t now = tm_now_ns();
	s->stage_s[s->stage] += (double)(now - s->t_stage) * 1e-9;
	s->t_stage = now;
}

// ---- options ----

void run_opts_default(run_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->config_path = "config";
	o->data_dir = "./var";
	o->submission = -1;
	o->min_duration_s = -1;
	o->max_duration_s = -1;
	o->limits.memory_mb = 4096;
	o->limits.cpu_s = 3600;
	o->limits.files = 64;
	o->limits.fsize_mb = 64;
	o->sandbox = true;
	o->seed = 1;
	o->speedup_repro = STATS_SPEEDUP_REPRO_DEFAULT;
	o->result_fd = -1;
	o->out = stdout;
}

void run_event_timing(ev_id id, hx_opts *h)
{
	hx_opts_default(h);
	h->max_duration_s = 120;
	switch (id) {
	case EV_MLP_SPRINT:
		/* DESIGN.md's 1024 queries in blocks of 32, warm-up 32 and 0.2 s; 1 s of the
		 * submission, not 5: the baseline's blocks match the submission's, and 5 s of an
		 * int8 entry 30x faster than the portable baseline would be 150 s of baseline. */
		h->min_duration_s = 1;
		/* The first query after 32 of the other model's finds its weights out of the
		 * caches: ~3 us against 1.5 for the INT8 MLP, a tail set by the interleaving, not
		 * by the model, that moved the mean by 2% from run to run.  One untimed query
		 * per block re-warms each side, as a model serving a stream of queries is warm. */
		h->rewarm = 1;
		break;
	case EV_CNN_MARATHON:
		h->min_count = 10;    /* passes: 10 pairs for the speedup, >= 6 for a median CI */
		h->block = 1;
		h->warmup_count = 1;
		h->max_duration_s = 600;  /* a portable FP32 pass takes 10-20 s */
		break;
	case EV_TRANSFORMER_DECATHLON:
		h->min_count = 100;   /* prompts: 10 pairs of blocks */
		h->min_duration_s = 0; /* count only: the uncached baseline is ~1000x slower than
					* a cached entry, so 1 s of it would be 1000 s of baseline */
		h->block = 10;        /* one prompt of each task per block */
		h->warmup_count = 10;
		h->max_duration_s = 300;
		h->align = true;      /* prompts differ in length: pair the same ones */
		break;
	case EV_COUNT:
		break;
	}
}

// ---- loading ----

static int load_weights_path(run_state *s, char *path, size_t len)
{
	if (snprintf(path, len, "%s/models/%s.safetensors", s->o->data_dir, s->ev->name) >=
	    (int)len)
		return run_fail(RUN_EXIT_CONFIG, "--data-dir is too long");
	struct stat st;
	if (stat(path, &st) < 0)
		return run_fail(RUN_EXIT_INTERNAL, "no reference weights at '%s': run "
				"tinymlperf-run train %s --data-dir %s", path, s->ev->name,
				s->o->data_dir);
	return 0;
}

static int load_images(run_state *s, const char *weights)
{
	tm_err err = { 0 };
	progress(s, 1, "loading the Fashion-MNIST test set");
	if (tm_fmnist_load(&s->test, s->o->dataset_dir, false, &err) < 0)
		return run_engine_fail(s, "load", &err);
	if (s->o->max_test_items > 0 && s->o->max_test_items < s->test.n)
		s->test.n = s->o->max_test_items;
	/* Training images: calibration, fine-tuning, and the open division's training. */
	bool need_train = s->cfg.quantize || (s->cfg.prune && s->cfg.finetune_epochs > 0) ||
			  s->cfg.open;
	if (need_train) {
		progress(s, 3, "loading the Fashion-MNIST training set");
		if (tm_fmnist_load(&s->train, s->o->dataset_dir, true, &err) < 0)
			return run_engine_fail(s, "load", &err);
	}
	progress(s, 6, "loading the reference weights");
	tm_model_spec spec;
	if (tm_model_spec_reference(&spec, s->ev->name, &err) < 0)
		return run_engine_fail(s, "load", &err);
	s->ref = tm_model_load(weights, &spec, NULL, &err);
	if (!s->ref)
		return run_engine_fail(s, "load", &err);
	int batch = s->ev->id == EV_CNN_MARATHON ? RUN_CNN_BASE_BATCH : 1;
	if (tm_model_plan(s->ref, batch, false, &err) < 0)
		return run_engine_fail(s, "load", &err);
	return 0;
}

static int load_decathlon(run_state *s, const char *weights)
{
	tm_err err = { 0 };
	progress(s, 1, "generating the Decathlon's held-out test set");
	int per_task = TM_DEC_TEST_PER_TASK;
	if (s->o->max_test_items > 0 && s->o->max_test_items < per_task * TM_DEC_NTASKS)
		per_task = s->o->max_test_items / TM_DEC_NTASKS > 0 ?
			   s->o->max_test_items / TM_DEC_NTASKS : 1;
	s->n_dec_test = per_task * TM_DEC_NTASKS;
	s->dec_test = sbx_malloc(sizeof(tm_dec_example) * (size_t)s->n_dec_test);
	tm_dec_test_set(RUN_DEC_TEST_SEED, per_task, s->dec_test);
	if (s->cfg.quantize) {
		s->n_dec_calib = s->cfg.calibration_samples;
		s->dec_calib = sbx_malloc(sizeof(tm_dec_example) * (size_t)s->n_dec_calib);
		tm_rng r;
		tm_rng_seed(&r, (uint64_t)s->cfg.seed * 7919u + 17u);
		for (int i = 0; i < s->n_dec_calib; i++)
			tm_dec_train_example(&r, i % TM_DEC_NTASKS, &s->dec_calib[i]);
	}
	progress(s, 6, "loading the reference weights");
	if (tm_transformer_load(&s->tf_ref, weights, &err) < 0)
		return run_engine_fail(s, "load", &err);
	tm_tf_spec ref;
	tm_tf_spec_reference(&ref);
	if (memcmp(&ref, &s->tf_ref->spec, sizeof(ref)) != 0)
		return run_fail(RUN_EXIT_INTERNAL, "load: '%s' is not the Decathlon's reference "
				"model (ctx %d, d_model %d, %d heads, %d layers, ffn %d)", weights,
				ref.ctx, ref.d_model, ref.n_head, ref.n_layer, ref.d_ff);
	return 0;
}

// ---- open division: train the config's architecture ----

static int train_open(run_state *s)
{
	tm_err err = { 0 };
	cfg_limits lim;
	cfg_limits_default(&lim);
	if (s->ev->id == EV_TRANSFORMER_DECATHLON) {
		tm_decathlon_train_opts t;
		tm_decathlon_train_defaults(&t);
		t.spec.ctx = s->cfg.context;
		t.spec.d_model = s->cfg.d_model;
		t.spec.n_head = s->cfg.heads;
		t.spec.n_layer = s->cfg.layers;
		t.spec.d_ff = s->cfg.ffn;
		t.seed = (uint64_t)s->cfg.seed;
		t.steps = 0;
		t.minutes = s->cfg.train_minutes < lim.max_train_minutes ? s->cfg.train_minutes
									 : lim.max_train_minutes;
		t.rows = s->cfg.batch * 40 / 128 > 0 ? s->cfg.batch * 40 / 128 : 1;
		t.threads = s->cfg.threads;
		t.isa = s->isa;
		t.lr = (float)s->cfg.lr;
		t.eval_every = 0;
		stage_begin(s, ST_TRAIN, "training the transformer for %.1f minutes "
			    "(d_model %d, %d layers, %d heads, ffn %d)", t.minutes, t.spec.d_model,
			    t.spec.n_layer, t.spec.n_head, t.spec.d_ff);
		tm_decathlon_train_stats st;
		if (tm_decathlon_train(&t, &s->sub_ctx, &s->tf_own, &st, NULL, &err) < 0)
			return run_engine_fail(s, "train", &err);
		s->train_seconds = st.seconds;
		progress(s, stage_pct[ST_OPTIMIZE] - 1, "trained %d steps in %.1f s, loss %.3f",
			 st.steps, st.seconds, st.final_loss);
		return 0;
	}
	tm_model_spec spec;
	if (s->ev->id == EV_MLP_SPRINT)
		tm_model_spec_mlp(&spec, s->cfg.n_hidden, s->cfg.hidden);
	else
		tm_model_spec_cnn(&spec, s->cfg.c1, s->cfg.c2);
	s->own = tm_model_new(&spec, &err);
	if (!s->own)
		return run_engine_fail(s, "train", &err);
	tm_model_randomize(s->own, (uint64_t)s->cfg.seed);
	tm_train_config tc;
	tm_train_config_default(&tc);
	tc.optim = s->cfg.optimizer == CFG_OPT_SGD ? TM_OPTIM_SGD :
		   s->cfg.optimizer == CFG_OPT_ADAMW ? TM_OPTIM_ADAMW : TM_OPTIM_ADAM;
	tc.lr = (float)s->cfg.lr;
	tc.batch = s->cfg.batch;
	tc.epochs = s->cfg.epochs;
	tc.seed = (uint64_t)s->cfg.seed;
	tc.schedule = TM_LR_COSINE;
	tc.max_seconds = lim.max_train_minutes * 60;
	char desc[96];
	tm_model_spec_str(&spec, desc, sizeof(desc));
	stage_begin(s, ST_TRAIN, "training %s for %d epochs", desc, tc.epochs);
	tm_train_result tr;
	if (tm_train(s->own, &s->sub_ctx, &s->train, NULL, &tc, NULL, &tr, &err) < 0)
		return run_engine_fail(s, "train", &err);
	s->train_seconds = tr.seconds;
	progress(s, stage_pct[ST_OPTIMIZE] - 1, "trained %d epochs in %.1f s%s, training "
		 "accuracy %.4f", tr.epochs, tr.seconds, tr.stopped ? " (stopped at the budget)" : "",
		 tr.train_accuracy);
	return 0;
}

// ---- optimize: build the submission ----

static int build_submission(run_state *s)
{
	tm_err err = { 0 };
	const cfg_config *c = &s->cfg;
	if (s->ev->id == EV_TRANSFORMER_DECATHLON) {
		tm_tf_infer_opts t;
		tm_tf_infer_opts_default(&t);
		t.kv_cache = c->kv_cache;
		t.quantize = c->quantize;
		t.gran = c->per_channel ? TM_QGRAN_CHANNEL : TM_QGRAN_TENSOR;
		t.calib_prompts = c->calibration_samples;
		t.calib = c->calibration == CFG_CALIB_PERCENTILE ? TM_QCALIB_PERCENTILE
								  : TM_QCALIB_MINMAX;
		t.calib_percentile = c->calibration_percentile;
		if (c->prune && c->structured) {
			t.prune_heads = c->sparsity;
			t.prune_ffn = c->sparsity;
		} else if (c->prune) {
			t.sparsity = c->sparsity;
		}
		t.seed = (uint64_t)c->seed;
		const tm_transformer *m = s->tf_own ? s->tf_own : s->tf_ref;
		s->tf_opts = t;
		if (tm_tf_infer_new(m, &t, &s->sub_ctx, s->dec_calib, s->n_dec_calib, &s->tf_inf,
				    &err) < 0)
			return run_engine_fail(s, "optimize", &err);
		/* The baseline: the reference weights as they are, FP32, portable, no cache. */
		tm_tf_infer_opts_default(&t);
		if (tm_tf_infer_new(s->tf_ref, &t, &s->base_ctx, NULL, 0, &s->tf_base, &err) < 0)
			return run_engine_fail(s, "optimize", &err);
		return 0;
	}
	tm_infer_opts io;
	tm_infer_opts_default(&io);
	io.max_batch = s->ev->id == EV_CNN_MARATHON ? c->batch_size : 1;
	io.quantize = c->quantize;
	io.gran = c->per_channel ? TM_QGRAN_CHANNEL : TM_QGRAN_TENSOR;
	io.calib_samples = c->calibration_samples;
	io.calib = c->calibration == CFG_CALIB_PERCENTILE ? TM_QCALIB_PERCENTILE : TM_QCALIB_MINMAX;
	io.calib_percentile = c->calibration_percentile;
	io.sparsity = c->prune ? c->sparsity : 0;
	io.structured = c->prune && c->structured;
	io.prune_global = c->prune && c->prune_global;
	io.finetune_epochs = c->prune ? c->finetune_epochs : 0;
	io.seed = (uint64_t)c->seed;
	const tm_model *m = s->own ? s->own : s->ref;
	if (tm_infer_new(m, &io, &s->sub_ctx, s->train.n ? &s->train : NULL, NULL, &s->inf,
			 &err) < 0)
		return run_engine_fail(s, "optimize", &err);
	return 0;
}

// ---- quality ----

static int measure_quality(run_state *s)
{
	tm_err err = { 0 };
	if (s->ev->id == EV_TRANSFORMER_DECATHLON) {
		progress(s, stage_pct[ST_QUALITY], "submission: greedy generation of %d held-out "
			 "prompts", s->n_dec_test);
		/* Cached and uncached generation give bit-identical logits (engine.h), so an
		 * entry without the cache is scored through a cached twin built the same way:
		 * the same tokens in a fraction of the time. */
		tm_tf_infer *twin = NULL;
		if (!s->cfg.kv_cache) {
			tm_tf_infer_opts t = s->tf_opts;
			t.kv_cache = true;
			const tm_transformer *m = s->tf_own ? s->tf_own : s->tf_ref;
			if (tm_tf_infer_new(m, &t, &s->sub_ctx, s->dec_calib, s->n_dec_calib, &twin,
					    &err) < 0)
				return run_engine_fail(s, "quality", &err);
		}
		int qrc = tm_tf_infer_evaluate(twin ? twin : s->tf_inf, &s->sub_ctx, s->dec_test,
					       s->n_dec_test, &s->sub_score, &err);
		tm_tf_infer_free(twin);
		if (qrc < 0)
			return run_engine_fail(s, "quality", &err);
		s->q_value = s->sub_score.total_points;
		progress(s, (stage_pct[ST_QUALITY] + stage_pct[ST_BENCHMARK]) / 2,
			 "submission: %.1f points; reference: fp32 with the KV cache",
			 s->q_value);
		/* The reference with the fp32 KV-cached path: the same tokens as uncached
		 * generation, in a fraction of the time. */
		tm_tf_infer_opts t;
		tm_tf_infer_opts_default(&t);
		t.kv_cache = true;
		tm_tf_infer *ref = NULL;
		if (tm_tf_infer_new(s->tf_ref, &t, &s->fast_ctx, NULL, 0, &ref, &err) < 0)
			return run_engine_fail(s, "quality", &err);
		int rc = tm_tf_infer_evaluate(ref, &s->fast_ctx, s->dec_test, s->n_dec_test,
					      &s->ref_score, &err);
		tm_tf_infer_free(ref);
		if (rc < 0)
			return run_engine_fail(s, "quality", &err);
		s->q_ref = s->ref_score.total_points;
		return 0;
	}
	progress(s, stage_pct[ST_QUALITY], "submission: top-1 accuracy on %d test images",
		 s->test.n);
	if (tm_infer_evaluate(s->inf, &s->sub_ctx, &s->test, &s->q_value, &err) < 0)
		return run_engine_fail(s, "quality", &err);
	progress(s, (stage_pct[ST_QUALITY] + stage_pct[ST_BENCHMARK]) / 2,
		 "submission: accuracy %.4f; reference model", s->q_value);
	if (tm_evaluate(s->ref, &s->fast_ctx, &s->test, &s->q_ref, &err) < 0)
		return run_engine_fail(s, "quality", &err);
	return 0;
}

// ---- workloads ----

static void query_error(run_state *s, const tm_err *err)
{
	if (err->code == TM_ENOMEM)
		sbx_oom_exit("query");
	if (!s->qerr) {
		s->qerr = err->code ? err->code : TM_EINVAL;
		s->qerr_detail = *err;
	}
}

static void mlp_sub(void *arg, int64_t i)
{
	run_state *s = arg;
	tm_err err = { 0 };
	const uint8_t *px = s->perf_px + (size_t)(i % s->n_order) * 784;
	if (tm_infer_forward(s->inf, &s->sub_ctx, 1, px, s->logits, NULL, &err) < 0)
		query_error(s, &err);
}

static void mlp_base(void *arg, int64_t i)
{
	run_state *s = arg;
	tm_err err = { 0 };
	const uint8_t *px = s->perf_px + (size_t)(i % s->n_order) * 784;
	if (tm_model_forward(s->ref, &s->base_ctx, 1, px, s->logits, &err) < 0)
		query_error(s, &err);
}

static void cnn_sub(void *arg, int64_t i)
{
	run_state *s = arg;
	(void)i;
	tm_err err = { 0 };
	int bs = s->cfg.batch_size;
	for (int b = 0; b < s->test.n; b += bs) {
		int n = s->test.n - b < bs ? s->test.n - b : bs;
		if (tm_infer_forward(s->inf, &s->sub_ctx, n, s->test.images + (size_t)b * 784,
				     s->logits, NULL, &err) < 0) {
			query_error(s, &err);
			return;
		}
	}
}

static void cnn_base(void *arg, int64_t i)
{
	run_state *s = arg;
	(void)i;
	tm_err err = { 0 };
	for (int b = 0; b < s->test.n; b += RUN_CNN_BASE_BATCH) {
		int n = s->test.n - b < RUN_CNN_BASE_BATCH ? s->test.n - b : RUN_CNN_BASE_BATCH;
		if (tm_model_forward(s->ref, &s->base_ctx, n, s->test.images + (size_t)b * 784,
				     NULL, &err) < 0) {
			query_error(s, &err);
			return;
		}
	}
}

/* The prompt of query i as ids in s->tok; returns its length and the generation cap
 * (the answer and the end mark) in *cap. */
static int dec_prompt(run_state *s, int64_t i, int *cap)
{
	const tm_dec_example *ex = &s->dec_test[s->order[i % s->n_order]];
	tm_dec_encode(ex->text, ex->prompt_len, s->tok);
	*cap = ex->len - ex->prompt_len;
	return ex->prompt_len;
}

/* Greedy generation of the submission: with its KV cache, or without one by the plain
 * uncached path (one forward over the whole prefix per step), the baseline's. */
static int dec_generate(run_state *s, tm_tf_infer *t, const tm_ctx *ctx, int np, int cap,
			bool cache, tm_prof *prof, tm_err *err)
{
	if (cache)
		return tm_tf_infer_generate(t, ctx, s->tok, np, cap, tm_dec_end_token(), s->gen,
					    prof, err);
	return tm_tf_infer_generate_recompute(t, ctx, s->tok, np, cap, tm_dec_end_token(),
					      s->gen, prof, err);
}

static void dec_sub(void *arg, int64_t i)
{
	run_state *s = arg;
	tm_err err = { 0 };
	int cap;
	int np = dec_prompt(s, i, &cap);
	int n = dec_generate(s, s->tf_inf, &s->sub_ctx, np, cap, s->cfg.kv_cache, NULL, &err);
	if (n < 0) {
		query_error(s, &err);
		n = 0;
	}
	if (s->n_tokens_log == s->cap_tokens_log) {
		s->cap_tokens_log = s->cap_tokens_log ? 2 * s->cap_tokens_log : 1024;
		s->tokens_log = sbx_realloc(s->tokens_log, s->cap_tokens_log * sizeof(int32_t));
	}
	s->tokens_log[s->n_tokens_log++] = n;
}

static void dec_base(void *arg, int64_t i)
{
	run_state *s = arg;
	tm_err err = { 0 };
	int cap;
	int np = dec_prompt(s, i, &cap);
	if (dec_generate(s, s->tf_base, &s->base_ctx, np, cap, false, NULL, &err) < 0)
		query_error(s, &err);
}

typedef struct run_event_ops {
	void (*sub)(void *arg, int64_t i);
	void (*base)(void *arg, int64_t i);
	const char *query;            /* what one query is: latency.query */
	const char *queries;          /* its plural, for messages */
	const char *throughput_unit;
} run_event_ops;

static const run_event_ops event_ops[EV_COUNT] = {
	[EV_MLP_SPRINT] = { mlp_sub, mlp_base, "image", "images", "images/s" },
	[EV_CNN_MARATHON] = { cnn_sub, cnn_base, "pass", "passes", "images/s" },
	[EV_TRANSFORMER_DECATHLON] = { dec_sub, dec_base, "prompt", "prompts", "tokens/s" },
};

static void on_block(void *arg, size_t count, double sub_s, double elapsed_s)
{
	run_state *s = arg;
	const hx_opts *h = &s->hx;
	double fc = h->min_count ? (double)count / (double)h->min_count : 1;
	double fd = h->min_duration_s > 0 ? sub_s / h->min_duration_s : 1;
	double f = fc < fd ? fc : fd;
	if (h->max_duration_s > 0 && elapsed_s / h->max_duration_s > f)
		f = elapsed_s / h->max_duration_s;
	if (f > 1)
		f = 1;
	char msg[96];
	snprintf(msg, sizeof(msg), "%zu %s timed, %.1f s", count, event_ops[s->ev->id].queries,
		 elapsed_s);
	progress_bar(s, f, msg);
}

static int benchmark(run_state *s)
{
	tm_err err = { 0 };
	const run_opts *o = s->o;
	run_event_timing(s->ev->id, &s->hx);
	if (o->min_count > 0)
		s->hx.min_count = o->min_count;
	if (o->min_duration_s >= 0)
		s->hx.min_duration_s = o->min_duration_s;
	if (o->max_duration_s >= 0)
		s->hx.max_duration_s = o->max_duration_s;
	if (o->warmup_count > 0)
		s->hx.warmup_count = o->warmup_count;
	if (s->hx.block > s->hx.min_count)
		s->hx.block = s->hx.min_count;
	s->hx.on_block = on_block;
	s->hx.on_block_arg = s;

	/* The seeded order of test items: a permutation of the test images (MLP), a sample of
	 * held-out prompts across the ten tasks (Decathlon). */
	tm_rng r;
	tm_rng_seed(&r, o->seed);
	if (s->ev->id == EV_MLP_SPRINT) {
		/* The first RUN_MLP_PERF_SAMPLES of a seeded permutation: the images stay in the
		 * caches, so a query times the model, not the host's memory traffic. */
		s->order = sbx_malloc(sizeof(int32_t) * (size_t)s->test.n);
		for (int i = 0; i < s->test.n; i++)
			s->order[i] = i;
		tm_rng_shuffle(&r, s->order, s->test.n);
		s->n_order = s->test.n < RUN_MLP_PERF_SAMPLES ? s->test.n : RUN_MLP_PERF_SAMPLES;
		/* Loaded into one block in query order, as LoadGen loads its performance samples:
		 * where each query's image lands in memory is then the same in every run. */
		s->perf_px = tm_alloc_hot((size_t)s->n_order * 784);
		if (!s->perf_px)
			sbx_oom_exit("the performance sample set");
		for (int i = 0; i < s->n_order; i++)
			memcpy(s->perf_px + (size_t)i * 784,
			       s->test.images + (size_t)s->order[i] * 784, 784);
	} else if (s->ev->id == EV_TRANSFORMER_DECATHLON) {
		/* Stratified: query k is task k % 10, so every block of 10 holds one prompt of
		 * each task and blocks are comparable (the test set is task-major). */
		int per_task = s->n_dec_test / TM_DEC_NTASKS;
		int m = per_task < RUN_DEC_SAMPLE / TM_DEC_NTASKS ? per_task
								   : RUN_DEC_SAMPLE / TM_DEC_NTASKS;
		int32_t *perm = sbx_malloc(sizeof(int32_t) * (size_t)per_task);
		s->n_order = m * TM_DEC_NTASKS;
		s->order = sbx_malloc(sizeof(int32_t) * (size_t)s->n_order);
		for (int t = 0; t < TM_DEC_NTASKS; t++) {
			for (int j = 0; j < per_task; j++)
				perm[j] = j;
			tm_rng_shuffle(&r, perm, per_task);
			for (int j = 0; j < m; j++)
				s->order[j * TM_DEC_NTASKS + t] = t * per_task + perm[j];
		}
		free(perm);
	}
	const run_event_ops *ops = &event_ops[s->ev->id];
	hx_workload sub = { ops->sub, s }, base = { ops->base, s };
	progress(s, stage_pct[ST_BENCHMARK], "timing the submission against the baseline: at "
		 "least %zu %s and %.3g s (cap %.3g s), blocks of %zu", s->hx.min_count,
		 ops->queries, s->hx.min_duration_s, s->hx.max_duration_s, s->hx.block);
	s->n_tokens_log = 0;
	if (hx_measure(&s->hx, &sub, &base, &s->res, &err) < 0)
		return run_engine_fail(s, "benchmark", &err);
	bar_end(s);
	if (s->qerr)
		return run_engine_fail(s, "benchmark", &s->qerr_detail);

	/* The per-layer profile: a few more queries of the submission with the profiler on. */
	tm_prof_reset(&s->prof);
	if (s->ev->id == EV_MLP_SPRINT) {
		s->prof_queries = RUN_PROFILE_IMAGES < s->test.n ? RUN_PROFILE_IMAGES : s->test.n;
		for (int i = 0; i < s->prof_queries; i++)
			if (tm_infer_forward(s->inf, &s->sub_ctx, 1,
					     s->test.images + (size_t)s->order[i] * 784, s->logits,
					     &s->prof, &err) < 0)
				return run_engine_fail(s, "profile", &err);
	} else if (s->ev->id == EV_CNN_MARATHON) {
		s->prof_queries = 1;
		int bs = s->cfg.batch_size;
		for (int b = 0; b < s->test.n; b += bs) {
			int n = s->test.n - b < bs ? s->test.n - b : bs;
			if (tm_infer_forward(s->inf, &s->sub_ctx, n, s->test.images + (size_t)b * 784,
					     s->logits, &s->prof, &err) < 0)
				return run_engine_fail(s, "profile", &err);
		}
	} else {
		s->prof_queries = RUN_PROFILE_PROMPTS < s->n_order ? RUN_PROFILE_PROMPTS : s->n_order;
		for (int i = 0; i < s->prof_queries; i++) {
			int cap;
			int np = dec_prompt(s, i, &cap);
			if (dec_generate(s, s->tf_inf, &s->sub_ctx, np, cap, s->cfg.kv_cache,
					 &s->prof, &err) < 0)
				return run_engine_fail(s, "profile", &err);
		}
	}
	/* What the profile's GFLOP/s are a fraction of: the widest vectors this CPU has. */
	s->peak_gflops = tm_prof_peak_gflops(&s->cpu, tm_isa_best(&s->cpu), RUN_PEAK_S);
	return 0;
}

// ---- the result ----

static void write_summary(jbuf *b, const char *key, const stats_summary *m, const char *query)
{
	jb_open(b, key, '{');
	jb_str(b, "unit", "ns");
	if (query)
		jb_str(b, "query", query);
	jb_int(b, "n", (int64_t)m->n);
	jb_num(b, "mean", m->mean);
	jb_num(b, "sd", m->sd);
	jb_num(b, "min", m->min);
	jb_num(b, "max", m->max);
	jb_num(b, "median", m->median);
	jb_num(b, "p90", m->p90);
	jb_num(b, "p95", m->p95);
	jb_num(b, "p99", m->p99);
	jb_num(b, "p999", m->p999);
	jb_num(b, "early_stopping_p90", m->es.estimate);
	jb_bool(b, "early_stopping_ok", m->es.ok);
	jb_open(b, "median_ci", '[');
	jb_num(b, NULL, m->median_ci.low);
	jb_num(b, NULL, m->median_ci.high);
	jb_close(b, ']');
	jb_bool(b, "median_ci_exact", m->median_ci.exists);
	jb_int(b, "outliers", (int64_t)m->outliers.count);
	jb_close(b, '}');
}

static void write_timings(jbuf *b, const char *key, const hx_series *x, bool *truncated)
{
	jb_open(b, key, '[');
	size_t n = x->n, k = n > RUN_TIMINGS_MAX ? RUN_TIMINGS_MAX : n;
	if (n > RUN_TIMINGS_MAX)
		*truncated = true;
	for (size_t j = 0; j < k; j++) {
		size_t idx = n > RUN_TIMINGS_MAX ? (size_t)((double)j * (double)n / (double)k) : j;
		jb_int(b, NULL, (int64_t)x->ns[idx]);
	}
	jb_close(b, ']');
}

static double sum_ns(const hx_series *x)
{
	double t = 0;
	for (size_t i = 0; i < x->n; i++)
		t += x->ns[i];
	return t;
}

typedef struct run_numbers {
	stats_summary sub, base, token;
	bool have_token;
	stats_speedup speedup;
	stats_verdict verdict;
	double thr_sub, thr_base;     /* items (images or tokens) per second */
	double tokens_total;
	tm_infer_stats ist;
	size_t baseline_bytes;
	bool gate_passed;
	double gate;
} run_numbers;

static int compute_numbers(run_state *s, run_numbers *nb)
{
	tm_err err = { 0 };
	const hx_result *r = &s->res;
	if (stats_summary_compute(r->sub.ns, r->sub.n, &nb->sub, &err) < 0 ||
	    stats_summary_compute(r->base.ns, r->base.n, &nb->base, &err) < 0)
		return run_engine_fail(s, "statistics", &err);
	/* The Sprint is a latency event: its speedup compares the typical query, batch by batch
	 * (stats_speedup_iqm_compute); the others compare total times, as throughput does. */
	int src = s->ev->id == EV_MLP_SPRINT && r->sub.n == r->n_pairs * s->hx.block &&
			  r->base.n == r->sub.n
		  ? stats_speedup_iqm_compute(r->base.ns, r->sub.ns, r->n_pairs, s->hx.block, 0,
						 s->o->seed, &nb->speedup, &err)
		  : stats_speedup_compute(r->pair_base_s, r->pair_sub_s, r->n_pairs, 0, s->o->seed,
					  &nb->speedup, &err);
	if (src < 0)
		return run_engine_fail(s, "statistics", &err);
	stats_speedup_add_repro(&nb->speedup, s->o->speedup_repro);
	double sub_s = sum_ns(&r->sub) * 1e-9, base_s = sum_ns(&r->base) * 1e-9;
	switch (s->ev->id) {
	case EV_MLP_SPRINT:
		nb->thr_sub = stats_throughput((double)r->sub.n, sub_s);
		nb->thr_base = stats_throughput((double)r->base.n, base_s);
		break;
	case EV_CNN_MARATHON:
		nb->thr_sub = stats_throughput((double)r->sub.n * s->test.n, sub_s);
		nb->thr_base = stats_throughput((double)r->base.n * s->test.n, base_s);
		break;
	default: {
		/* The measured calls are the last r->sub.n of the log (warm-up came first); with
		 * aligned items the baseline generated the same prompts, and greedy decoding of the
		 * same model gives (up to rounding) the same number of tokens. */
		size_t first = s->n_tokens_log - r->sub.n;
		double *per_tok = sbx_malloc(sizeof(double) * (r->sub.n ? r->sub.n : 1));
		double tokens = 0;
		for (size_t i = 0; i < r->sub.n; i++) {
			int t = s->tokens_log[first + i];
			tokens += t;
			per_tok[i] = r->sub.ns[i] / (t > 0 ? t : 1);
		}
		nb->tokens_total = tokens;
		nb->thr_sub = stats_throughput(tokens, sub_s);
		nb->thr_base = stats_throughput(tokens * (double)r->base.n /
						(double)(r->sub.n ? r->sub.n : 1), base_s);
		int rc = stats_summary_compute(per_tok, r->sub.n, &nb->token, &err);
		free(per_tok);
		if (rc < 0)
			return run_engine_fail(s, "statistics", &err);
		nb->have_token = true;
		break;
	}
	}

	stats_limits lim;
	stats_limits_default(&lim);
	lim.min_count = s->hx.min_count;
	lim.min_duration_s = s->hx.min_duration_s;
	const ev_event *ev = s->ev;
	stats_verdict_in vin = {
		.unit = event_ops[ev->id].queries,
		.count = r->sub.n,
		.duration_s = r->sub_elapsed_s,
		.hit_max_duration = r->hit_max,
		.speedup = &nb->speedup,
		/* Decathlon: prompts of ten tasks (61 tokens for a copy, 2 for a max) make a
		 * ten-modal latency whose median is no measure of stability; the speedup's
		 * interval over blocks of one prompt per task is. */
		.median_ci = nb->have_token ? NULL : &nb->sub.median_ci,
		.median = nb->sub.median,
		.es = ev->scenario == EV_SCENARIO_SINGLE_STREAM ? &nb->sub.es : NULL,
	};
	stats_verdict_decide(&vin, &lim, &nb->verdict);
	if (s->o->max_test_items > 0 && nb->verdict.n_reasons < STATS_MAX_REASONS) {
		snprintf(nb->verdict.reasons[nb->verdict.n_reasons++], STATS_REASON_LEN,
			 "the test set was cut to %d items (--max-test-items, for tests only)",
			 ev->id == EV_TRANSFORMER_DECATHLON ? s->n_dec_test : s->test.n);
		nb->verdict.valid = false;
	}

	nb->gate = s->cfg.open ? ev->open_gate : ev->closed_gate;
	nb->gate_passed = s->q_value >= nb->gate * s->q_ref;
	if (ev->id == EV_TRANSFORMER_DECATHLON) {
		tm_tf_infer_get_stats(s->tf_inf, &nb->ist);
		nb->baseline_bytes = tm_tf_spec_params(&s->tf_ref->spec) * sizeof(float);
	} else {
		tm_infer_get_stats(s->inf, &nb->ist);
		nb->baseline_bytes = tm_model_bytes(s->ref);
	}
	return 0;
}

static void write_layers(jbuf *b, run_state *s)
{
	bool tf = s->ev->id == EV_TRANSFORMER_DECATHLON;
	int n = tf ? tm_tf_infer_n_layers(s->tf_inf) : tm_infer_n_layers(s->inf);
	jb_open(b, "layers", '[');
	for (int i = 0; i < n; i++) {
		const tm_infer_layer *l = tf ? tm_tf_infer_layer_at(s->tf_inf, i)
					     : tm_infer_layer_at(s->inf, i);
		if (!l)
			continue;
		jb_open(b, NULL, '{');
		jb_str(b, "name", l->name);
		jb_str(b, "op", tf ? "linear" : tm_op_name(l->op));
		jb_str(b, "kernel", l->kernel);
		jb_int(b, "in", l->in_c);
		jb_int(b, "out", l->out_c);
		jb_int(b, "params", l->params);
		jb_int(b, "nonzero", l->nonzero);
		jb_int(b, "bytes", (int64_t)l->bytes);
		jb_int(b, "flops", l->flops);
		jb_close(b, '}');
	}
	jb_close(b, ']');
}

static void write_quality(jbuf *b, run_state *s, const run_numbers *nb)
{
	bool tf = s->ev->id == EV_TRANSFORMER_DECATHLON;
	jb_open(b, "quality", '{');
	jb_str(b, "metric", tf ? "decathlon_points" : "accuracy");
	jb_num(b, "value", s->q_value);
	jb_num(b, "reference", s->q_ref);
	/* 1 when both are 0 (an untrained reference), null (infinite) when only the
	 * reference is 0. */
	jb_num(b, "ratio", s->q_ref > 0 ? s->q_value / s->q_ref : s->q_value > 0 ? INFINITY : 1);
	jb_num(b, "gate", nb->gate);
	jb_bool(b, "passed", nb->gate_passed);
	jb_int(b, "test_items", tf ? s->n_dec_test : s->test.n);
	if (tf) {
		jb_open(b, "per_task", '{');
		for (int t = 0; t < TM_DEC_NTASKS; t++)
			jb_num(b, tm_dec_task_name(t), s->sub_score.points[t]);
		jb_close(b, '}');
		jb_open(b, "reference_per_task", '{');
		for (int t = 0; t < TM_DEC_NTASKS; t++)
			jb_num(b, tm_dec_task_name(t), s->ref_score.points[t]);
		jb_close(b, '}');
	}
	jb_close(b, '}');
}

static void write_optimizations(jbuf *b, run_state *s)
{
	const cfg_config *c = &s->cfg;
	jb_open(b, "optimizations", '{');
	jb_str(b, "kernels", tm_isa_name(s->isa));
	jb_str(b, "kernels_requested", c->kernels);
	jb_int(b, "threads", c->threads);
	if (c->quantize) {
		jb_open(b, "quantize", '{');
		jb_str(b, "dtype", "int8");
		jb_str(b, "granularity", c->per_channel ? "per_channel" : "per_tensor");
		jb_int(b, "calibration_samples", c->calibration_samples);
		jb_str(b, "calibration", c->calibration == CFG_CALIB_PERCENTILE ? "percentile"
										: "minmax");
		if (c->calibration == CFG_CALIB_PERCENTILE)
			jb_num(b, "percentile", c->calibration_percentile);
		jb_close(b, '}');
	} else {
		jb_bool(b, "quantize", false);
	}
	if (c->prune) {
		jb_open(b, "prune", '{');
		jb_str(b, "method", "magnitude");
		jb_num(b, "sparsity", c->sparsity);
		jb_bool(b, "structured", c->structured);
		jb_str(b, "scope", c->prune_global ? "global" : "layer");
		jb_int(b, "finetune_epochs", c->finetune_epochs);
		jb_close(b, '}');
	} else {
		jb_bool(b, "prune", false);
	}
	if (s->ev->id == EV_TRANSFORMER_DECATHLON) {
		jb_bool(b, "kv_cache", c->kv_cache);
		jb_int(b, "kv_cache_bytes", (int64_t)tm_tf_infer_cache_bytes(s->tf_inf));
	}
	if (s->ev->id == EV_CNN_MARATHON)
		jb_int(b, "batch_size", c->batch_size);
	jb_close(b, '}');
}

static void write_environment(jbuf *b, run_state *s)
{
	const tm_cpu *c = &s->cpu;
	jb_open(b, "environment", '{');
	jb_str(b, "cpu_model", c->model);
	jb_open(b, "cpu_features", '[');
	const struct { const char *name; bool on; } feats[] = {
		{ "avx2", c->avx2 }, { "fma", c->fma }, { "avx512f", c->avx512f },
		{ "avx512bw", c->avx512bw }, { "avx512vl", c->avx512vl },
		{ "avx512vnni", c->avx512vnni }, { "avxvnni", c->avxvnni },
	};
	for (size_t i = 0; i < sizeof(feats) / sizeof(feats[0]); i++)
		if (feats[i].on)
			jb_str(b, NULL, feats[i].name);
	jb_close(b, ']');
	jb_str(b, "kernels", tm_isa_name(s->isa));
	jb_str(b, "baseline_kernels", tm_isa_name(TM_ISA_PORTABLE));
	jb_int(b, "threads", s->cfg.threads);
	jb_str(b, "cpu_set", s->cpus.text);
	jb_num(b, "peak_gflops", s->peak_gflops);
#if defined(__clang__)
	jb_str(b, "compiler", "clang " __clang_version__);
#elif defined(__GNUC__)
	jb_str(b, "compiler", "gcc " __VERSION__);
#else
	jb_str(b, "compiler", "unknown");
#endif
	jb_str(b, "engine_version", TM_ENGINE_VERSION);
	jb_str(b, "git_revision", tm_git_revision());
	jb_str(b, "host", s->host);
	jb_bool(b, "sandbox", s->o->sandbox);
	jb_bool(b, "memory_limit_enforced", sbx_memory_limit_enforced());
	jb_close(b, '}');
}

static void build_result(run_state *s, const run_numbers *nb, uint64_t seconds_total_ns)
{
	jbuf *b = &s->jb;
	const hx_result *r = &s->res;
	const ev_event *ev = s->ev;
	const run_event_ops *ops = &event_ops[ev->id];
	jb_reset(b);
	jb_open(b, NULL, '{');
	jb_str(b, "type", "result");
	jb_str(b, "event", ev->name);
	jb_str(b, "division", s->cfg.open ? "open" : "closed");
	if (s->o->submission >= 0)
		jb_int(b, "submission", s->o->submission);
	else
		jb_null(b, "submission");
	jb_str(b, "name", s->cfg.name);
	jb_str(b, "status", "finished");
	jb_bool(b, "valid", nb->verdict.valid);
	jb_open(b, "invalid_reasons", '[');
	for (int i = 0; i < nb->verdict.n_reasons; i++)
		jb_str(b, NULL, nb->verdict.reasons[i]);
	jb_close(b, ']');
	write_quality(b, s, nb);
	write_summary(b, "latency", &nb->sub, ops->query);
	write_summary(b, "baseline_latency", &nb->base, ops->query);
	if (nb->have_token) {
		write_summary(b, "token_latency", &nb->token, "token");
		jb_num(b, "tokens_generated", nb->tokens_total);
	}
	jb_open(b, "throughput", '{');
	jb_num(b, "value", nb->thr_sub);
	jb_str(b, "unit", ops->throughput_unit);
	jb_close(b, '}');
	jb_open(b, "baseline_throughput", '{');
	jb_num(b, "value", nb->thr_base);
	jb_str(b, "unit", ops->throughput_unit);
	jb_close(b, '}');
	jb_open(b, "speedup", '{');
	jb_num(b, "value", nb->speedup.value);
	jb_num(b, "ci_low", nb->speedup.ci_low);
	jb_num(b, "ci_high", nb->speedup.ci_high);
	jb_int(b, "pairs", (int64_t)nb->speedup.pairs);
	jb_int(b, "batches", (int64_t)nb->speedup.batches);
	jb_str(b, "statistic",
	       nb->speedup.statistic == STATS_SPEEDUP_IQM ? "interquartile_mean" : "total_time");
	jb_num(b, "boot_low", nb->speedup.boot_low);
	jb_num(b, "boot_high", nb->speedup.boot_high);
	jb_num(b, "reproducibility", nb->speedup.repro);
	jb_num(b, "level", STATS_BOOT_LEVEL);
	jb_int(b, "resamples", nb->speedup.resamples);
	jb_int(b, "seed", (int64_t)nb->speedup.seed);
	jb_close(b, '}');

	jb_open(b, "model", '{');
	jb_int(b, "params", nb->ist.params);
	jb_int(b, "nonzero_params", nb->ist.nonzero_params);
	jb_int(b, "bytes", (int64_t)nb->ist.bytes);
	jb_int(b, "baseline_bytes", (int64_t)nb->baseline_bytes);
	jb_num(b, "compression", nb->ist.bytes ? (double)nb->baseline_bytes /
						  (double)nb->ist.bytes : 0);
	jb_int(b, "flops_per_inference", nb->ist.flops);
	jb_str(b, "flops_per", ev->id == EV_TRANSFORMER_DECATHLON ? "token" : "image");
	write_layers(b, s);
	jb_close(b, '}');

	jb_open(b, "memory", '{');
	jb_int(b, "peak_rss_bytes", tm_peak_rss_bytes());
	jb_close(b, '}');

	jb_open(b, "profile", '[');
	double q = s->prof_queries > 0 ? s->prof_queries : 1;
	for (int i = 0; i < s->prof.n; i++) {
		const tm_prof_entry *e = &s->prof.e[i];
		double t = (double)e->time_ns / q;
		jb_open(b, NULL, '{');
		jb_str(b, "layer", e->layer);
		jb_str(b, "op", e->op);
		jb_str(b, "kernel", e->kernel);
		jb_num(b, "time_ns", t);
		jb_num(b, "flops", (double)e->flops / q);
		jb_num(b, "bytes", (double)e->bytes / q);
		double gflops = t > 0 ? (double)e->flops / q / t : 0;
		jb_num(b, "gflops", gflops);
		if (s->peak_gflops > 0)
			jb_num(b, "peak_fraction", gflops / s->peak_gflops);
		else
			jb_null(b, "peak_fraction");
		jb_close(b, '}');
	}
	jb_close(b, ']');

	jb_open(b, "stages", '{');
	for (int i = 0; i < ST_COUNT; i++) {
		char key[24];
		snprintf(key, sizeof(key), "%s_s", stage_names[i]);
		jb_num(b, key, s->stage_s[i]);
	}
	jb_num(b, "total_s", (double)seconds_total_ns * 1e-9);
	jb_close(b, '}');

	jb_open(b, "measurement", '{');
	jb_int(b, "min_count", (int64_t)s->hx.min_count);
	jb_num(b, "min_duration_s", s->hx.min_duration_s);
	jb_num(b, "max_duration_s", s->hx.max_duration_s);
	jb_int(b, "warmup_count", (int64_t)s->hx.warmup_count);
	jb_num(b, "warmup_s", s->hx.warmup_s);
	jb_int(b, "block", (int64_t)s->hx.block);
	jb_int(b, "rewarm", (int64_t)s->hx.rewarm);
	jb_num(b, "elapsed_s", r->elapsed_s);
	jb_num(b, "submission_s", r->sub_elapsed_s);
	jb_bool(b, "hit_max", r->hit_max);
	jb_int(b, "seed", (int64_t)s->o->seed);
	jb_close(b, '}');

	write_optimizations(b, s);
	write_environment(b, s);

	bool truncated = false;
	jb_open(b, "timings", '{');
	write_timings(b, "submission", &r->sub, &truncated);
	write_timings(b, "baseline", &r->base, &truncated);
	jb_bool(b, "truncated", truncated);
	jb_close(b, '}');
	jb_close(b, '}');
}

/* A human-readable unit for nanoseconds. */
static void fmt_ns(double ns, char *buf, size_t len)
{
	if (ns >= 1e9)
		snprintf(buf, len, "%.3f s", ns * 1e-9);
	else if (ns >= 1e6)
		snprintf(buf, len, "%.3f ms", ns * 1e-6);
	else if (ns >= 1e3)
		snprintf(buf, len, "%.2f us", ns * 1e-3);
	else
		snprintf(buf, len, "%.0f ns", ns);
}

static void print_table(run_state *s, const run_numbers *nb)
{
	FILE *out = s->o->out;
	const ev_event *ev = s->ev;
	const run_event_ops *ops = &event_ops[ev->id];
	char a[32], b2[32], c[32], d[32];
	fprintf(out, "\nresult: %s (%s division) \"%s\": %s\n", ev->name,
		s->cfg.open ? "open" : "closed", s->cfg.name, nb->verdict.valid ? "VALID" : "INVALID");
	for (int i = 0; i < nb->verdict.n_reasons; i++)
		fprintf(out, "  invalid:     %s\n", nb->verdict.reasons[i]);
	if (ev->id == EV_TRANSFORMER_DECATHLON)
		fprintf(out, "  quality:     %.1f points (reference %.1f, ratio %.4f, gate %.2f): %s\n",
			s->q_value, s->q_ref, s->q_ref > 0 ? s->q_value / s->q_ref : 0, nb->gate,
			nb->gate_passed ? "passed" : "FAILED");
	else
		fprintf(out, "  quality:     accuracy %.4f (reference %.4f, ratio %.4f, gate %.2f): "
			"%s\n", s->q_value, s->q_ref, s->q_ref > 0 ? s->q_value / s->q_ref : 0,
			nb->gate, nb->gate_passed ? "passed" : "FAILED");
	fprintf(out, "  speedup:     %.3fx, 95%% CI [%.3f, %.3f] over %zu pairs\n",
		nb->speedup.value, nb->speedup.ci_low, nb->speedup.ci_high, nb->speedup.pairs);
	fmt_ns(nb->sub.median, a, sizeof(a));
	fmt_ns(nb->sub.p90, b2, sizeof(b2));
	fmt_ns(nb->sub.es.estimate, c, sizeof(c));
	fmt_ns(nb->base.median, d, sizeof(d));
	fprintf(out, "  latency:     per %s: median %s, p90 %s (early stopping %s), n %zu; "
		"baseline median %s\n", ops->query, a, b2, c, nb->sub.n, d);
	if (nb->have_token) {
		fmt_ns(nb->token.median, a, sizeof(a));
		fmt_ns(nb->token.p90, b2, sizeof(b2));
		fprintf(out, "  per token:   median %s, p90 %s\n", a, b2);
	}
	fprintf(out, "  throughput:  %.1f %s (baseline %.1f)\n", nb->thr_sub, ops->throughput_unit,
		nb->thr_base);
	fprintf(out, "  model:       %lld params (%lld nonzero), %zu bytes, compression %.2fx, "
		"%lld FLOPs per %s\n", (long long)nb->ist.params, (long long)nb->ist.nonzero_params,
		nb->ist.bytes, nb->ist.bytes ? (double)nb->baseline_bytes / (double)nb->ist.bytes : 0,
		(long long)nb->ist.flops, ev->id == EV_TRANSFORMER_DECATHLON ? "token" : "image");
	fprintf(out, "  memory:      peak RSS %.1f MiB\n", (double)tm_peak_rss_bytes() / 1048576.0);
	fprintf(out, "  kernels:     %s, %d thread%s, CPUs %s\n", tm_isa_name(s->isa),
		s->cfg.threads, s->cfg.threads > 1 ? "s" : "", s->cpus.text);
	fflush(out);
}

// ---- the run ----

static void run_release(run_state *s)
{
	tm_infer_free(s->inf);
	tm_tf_infer_free(s->tf_inf);
	tm_tf_infer_free(s->tf_base);
	tm_model_free(s->ref);
	tm_model_free(s->own);
	tm_transformer_free(s->tf_ref);
	tm_transformer_free(s->tf_own);
	tm_dataset_release(&s->train);
	tm_dataset_release(&s->test);
	free(s->dec_test);
	free(s->dec_calib);
	free(s->order);
	tm_free_aligned(s->perf_px);
	free(s->logits);
	free(s->gen);
	free(s->tok);
	free(s->tokens_log);
	free(s->jb.p);
	hx_result_release(&s->res);
	if (s->sub_ctx.pool)
		tm_pool_free(s->sub_ctx.pool);
}

static int config_errors(const cfg_errors *errs, int rc)
{
	/* One line on stderr: the messages joined with "; ". */
	char line[2048];
	size_t used = 0;
	line[0] = '\0';
	for (int i = 0; i < errs->n && used < sizeof(line); i++)
		used += (size_t)snprintf(line + used, sizeof(line) - used, "%s%s", i ? "; " : "",
					 errs->e[i].msg);
	if (errs->dropped && used < sizeof(line))
		snprintf(line + used, sizeof(line) - used, "; and %d more", errs->dropped);
	return run_fail(rc == TM_ELIMIT ? RUN_EXIT_LIMIT : RUN_EXIT_CONFIG, "config: %s", line);
}

static int run_steps(run_state *s, const char *config, size_t len)
{
	const run_opts *o = s->o;
	tm_err err = { 0 };
	cfg_errors errs;
	int rc = cfg_parse(config, len, NULL, &s->cfg, &errs);
	if (rc != 0)
		return config_errors(&errs, rc);
	s->ev = s->cfg.event;

	/* Limits and the CPU set come first: everything after runs under them. */
	if (o->have_cpus && sbx_cpus_apply(&o->cpus, &err) < 0)
		return run_fail(RUN_EXIT_CONFIG, "%s", err.msg);
	if (sbx_cpus_current(&s->cpus, &err) < 0)
		return run_fail(RUN_EXIT_INTERNAL, "%s", err.msg);
	if (sbx_limits_apply(&o->limits, &err) < 0)
		return run_fail(RUN_EXIT_INTERNAL, "%s", err.msg);
	tm_cpu_detect(&s->cpu);
	if (tm_isa_parse(s->cfg.kernels, &s->cpu, &s->isa, &err) < 0)
		return run_fail(RUN_EXIT_CONFIG, "config: 'optimize.kernels': %s", err.msg);
	struct utsname u;
	snprintf(s->host, sizeof(s->host), "%s", uname(&u) == 0 ? u.nodename : "unknown");

	if (o->sandbox_test) {
		/* The test hook: no data, straight to the sandbox and the forbidden action. */
		if (o->sandbox && sbx_seccomp_apply(&err) < 0)
			return run_fail(RUN_EXIT_INTERNAL, "%s", err.msg);
		if (sbx_test_action(o->sandbox_test, &err) < 0)
			return run_fail(RUN_EXIT_CONFIG, "%s", err.msg);
		fprintf(o->out, "sandbox-test: '%s' was not stopped\n", o->sandbox_test);
		return RUN_EXIT_OK;
	}

	uint64_t t0 = tm_now_ns();
	s->t_start = s->t_stage = t0;
	s->stage = ST_LOAD;
	char weights[4096];
	if ((rc = load_weights_path(s, weights, sizeof(weights))) != 0)
		return rc;
	stage_begin(s, ST_LOAD, "%s, %s division: loading data and weights", s->ev->name,
		    s->cfg.open ? "open" : "closed");
	rc = s->ev->id == EV_TRANSFORMER_DECATHLON ? load_decathlon(s, weights)
						   : load_images(s, weights);
	if (rc != 0)
		return rc;

	/* Threads exist before the sandbox (it allows no new processes, and the pool is made
	 * once); the baseline is always portable and single-threaded. */
	s->sub_ctx.isa = s->isa;
	s->sub_ctx.pool = s->cfg.threads > 1 ? tm_pool_new(s->cfg.threads) : NULL;
	s->base_ctx.isa = TM_ISA_PORTABLE;
	s->base_ctx.pool = NULL;
	s->fast_ctx.isa = tm_isa_best(&s->cpu);
	s->fast_ctx.pool = s->sub_ctx.pool;
	int max_batch = s->ev->id == EV_CNN_MARATHON ? s->cfg.batch_size : 1;
	if (max_batch < RUN_CNN_BASE_BATCH)
		max_batch = RUN_CNN_BASE_BATCH;
	s->logits = sbx_malloc(sizeof(float) * 10 * (size_t)max_batch);
	s->gen = sbx_malloc(sizeof(int32_t) * (TM_DEC_MAX_LEN + 1));
	s->tok = sbx_malloc(sizeof(int32_t) * (TM_DEC_MAX_LEN + 1));

	if (s->cfg.open && (rc = train_open(s)) != 0)
		return rc;

	if (o->sandbox) {
		if (sbx_seccomp_apply(&err) < 0)
			return run_fail(RUN_EXIT_INTERNAL, "%s", err.msg);
	}

	stage_begin(s, ST_OPTIMIZE, "building the submission: kernels %s, %d thread%s%s%s%s",
		    tm_isa_name(s->isa), s->cfg.threads, s->cfg.threads > 1 ? "s" : "",
		    s->cfg.quantize ? ", int8" : "", s->cfg.prune ? ", pruned" : "",
		    s->cfg.kv_cache ? ", kv cache" : "");
	if ((rc = build_submission(s)) != 0)
		return rc;

	stage_begin(s, ST_QUALITY, "quality on the full held-out test set");
	if ((rc = measure_quality(s)) != 0)
		return rc;
	if (s->ev->id == EV_TRANSFORMER_DECATHLON)
		progress(s, stage_pct[ST_BENCHMARK] - 0.5, "quality: %.1f points, reference %.1f",
			 s->q_value, s->q_ref);
	else
		progress(s, stage_pct[ST_BENCHMARK] - 0.5, "quality: accuracy %.4f, reference "
			 "%.4f", s->q_value, s->q_ref);

	stage_begin(s, ST_BENCHMARK, "timed runs interleaved with the baseline");
	if ((rc = benchmark(s)) != 0)
		return rc;
	stage_end(s);

	run_numbers nb;
	memset(&nb, 0, sizeof(nb));
	if ((rc = compute_numbers(s, &nb)) != 0)
		return rc;
	build_result(s, &nb, tm_now_ns() - t0);
	s->last_pct = 99;
	if (o->json) {
		fprintf(o->out, "%s\n", s->jb.p);
	} else {
		progress(s, 100, "done");
		print_table(s, &nb);
	}
	fflush(o->out);
	if (o->result_fd >= 0) {
		const char *p = s->jb.p;
		size_t left = s->jb.n;
		while (left > 0) {
			ssize_t w = write(o->result_fd, p, left);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				return run_fail(RUN_EXIT_INTERNAL, "cannot write the result file: %s",
						strerror(errno));
			p += w;
			left -= (size_t)w;
		}
		if (write(o->result_fd, "\n", 1) != 1)
			return run_fail(RUN_EXIT_INTERNAL, "cannot write the result file");
	}
	return RUN_EXIT_OK;
}

int run_config(const run_opts *o, const char *config, size_t len)
{
	run_state *s = calloc(1, sizeof(*s));
	if (!s)
		return run_fail(RUN_EXIT_LIMIT, "out of memory");
	s->o = o;
	s->jb.first[0] = true;
	int rc = run_steps(s, config, len);
	run_release(s);
	free(s);
	return rc;
}
