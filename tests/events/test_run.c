/* test_run.c: Check suite of `tinymlperf-run run` (events/run.c) end to end.  A fixture trains
 * small reference models into a temporary data directory with the engine's own trainers (MLP
 * and CNN one epoch on a subset of Fashion-MNIST, the Decathlon transformer a few dozen steps),
 * then the real build/tinymlperf-run runs configs of every event with tiny timing flags.  The
 * checks: stdout is JSON lines only (progress with stages in order and a non-decreasing pct,
 * then one result line with every key of docs/results.md), quality within bounds and measured
 * on the full test set, consistent statistics, the human output and --result file, and the exit
 * codes: 2 for a bad config or flag, 3 over a resource limit or a CPU limit hit mid-run, 4 for
 * missing weights, each with one line on stderr. */
#include "tests.h"
#include "events.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

// ---- fixture: a data directory with small trained models ----

static char *data_dir;      /* with models/<event>.safetensors */
static char *empty_dir;     /* no models */
static char fixture_err[512];

static int fixture_images(const char *event, int n_train, int epochs)
{
	tm_err err = { 0 };
	tm_dataset train = { 0 };
	tm_model_spec spec;
	tm_train_config cfg;
	tm_model *m = NULL;
	int rc = -1;
	char path[1024];
	if (tm_fmnist_load(&train, NULL, true, &err) < 0 ||
	    tm_model_spec_reference(&spec, event, &err) < 0 ||
	    tm_train_config_reference(&cfg, event, &err) < 0 || !(m = tm_model_new(&spec, &err)))
		goto out;
	train.n = n_train;
	cfg.epochs = epochs;
	tm_model_randomize(m, 1);
	tm_ctx ctx = { 0 };
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	ctx.isa = tm_isa_best(&cpu);
	if (tm_train(m, &ctx, &train, NULL, &cfg, NULL, NULL, &err) < 0)
		goto out;
	snprintf(path, sizeof(path), "%s/models/%s.safetensors", data_dir, event);
	if (tm_model_save(m, path, NULL, &err) < 0)
		goto out;
	rc = 0;
out:
	if (rc < 0)
		snprintf(fixture_err, sizeof(fixture_err), "%s: %s", event, err.msg);
	tm_model_free(m);
	tm_dataset_release(&train);
	return rc;
}

static int fixture_decathlon(int steps)
{
	tm_err err = { 0 };
	tm_decathlon_train_opts o;
	tm_decathlon_train_defaults(&o);
	o.steps = steps;
	o.rows = 8;
	o.threads = 1;
	o.warmup = 5;
	o.eval_every = 0;
	tm_transformer *m = NULL;
	tm_decathlon_train_stats st;
	tm_ctx ctx = { .isa = o.isa };
	char path[1024];
	snprintf(path, sizeof(path), "%s/models/transformer_decathlon.safetensors", data_dir);
	if (tm_decathlon_train(&o, &ctx, &m, &st, NULL, &err) < 0 ||
	    tm_transformer_save(m, path, NULL, &err) < 0) {
		snprintf(fixture_err, sizeof(fixture_err), "decathlon: %s", err.msg);
		tm_transformer_free(m);
		return -1;
	}
	tm_transformer_free(m);
	return 0;
}

static void fixture_setup(void)
{
	data_dir = tt_tmpdir("run-data");
	empty_dir = tt_tmpdir("run-empty");
	char models[1024];
	snprintf(models, sizeof(models), "%s/models", data_dir);
	if (!data_dir || !empty_dir || mkdir(models, 0755) < 0) {
		snprintf(fixture_err, sizeof(fixture_err), "cannot create the data directory");
		return;
	}
	if (fixture_images("mlp_sprint", 20000, 1) < 0 || fixture_images("cnn_marathon", 4000, 1) < 0)
		return;
	fixture_decathlon(40);
}

static void fixture_teardown(void)
{
	tt_rmtree(data_dir);
	tt_rmtree(empty_dir);
	free(data_dir);
	free(empty_dir);
}

static void need_fixture(void)
{
	ck_assert_msg(fixture_err[0] == '\0', "fixture failed: %s", fixture_err);
}

// ---- running the worker ----

typedef struct run_out {
	int status;
	char *out;   /* stdout, malloc'd */
	char *err;   /* stderr, malloc'd */
} run_out;

static void buf_append(char **buf, size_t *len, size_t *cap, const char *src, size_t n)
{
	if (*len + n + 1 > *cap) {
		*cap = (*len + n + 1) * 2;
		*buf = realloc(*buf, *cap);
		ck_assert_ptr_nonnull(*buf);
	}
	memcpy(*buf + *len, src, n);
	*len += n;
	(*buf)[*len] = '\0';
}

/* tinymlperf-run run ARGS... (NULL-terminated); env_asan: keep the caller's ASAN_OPTIONS
 * (leak checks; only with --no-sandbox) instead of turning leak detection off. */
static run_out run_cli(const char *const *args, int timeout_s, bool env_asan)
{
	char *prog = tt_build_path("tinymlperf-run");
	int po[2], pe[2];
	ck_assert_int_eq(pipe(po), 0);
	ck_assert_int_eq(pipe(pe), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		dup2(po[1], STDOUT_FILENO);
		dup2(pe[1], STDERR_FILENO);
		close(po[0]);
		close(pe[0]);
		if (!env_asan)
			setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
		unsetenv("TINYMLPERF_DATA_DIR");
		const char *argv[48];
		int n = 0;
		argv[n++] = prog;
		argv[n++] = "run";
		for (int i = 0; args[i] && n < 47; i++)
			argv[n++] = args[i];
		argv[n] = NULL;
		execv(prog, (char *const *)argv);
		_exit(127);
	}
	close(po[1]);
	close(pe[1]);
	run_out r = { 0 };
	size_t lo = 0, co = 0, le = 0, ce = 0;
	buf_append(&r.out, &lo, &co, "", 0);
	buf_append(&r.err, &le, &ce, "", 0);
	time_t start = time(NULL);
	bool open_o = true, open_e = true, killed = false;
	while (open_o || open_e) {
		struct pollfd p[2] = { { po[0], POLLIN, 0 }, { pe[0], POLLIN, 0 } };
		int k = poll(p, 2, 1000);
		char chunk[65536];
		if (k > 0 && open_o && (p[0].revents & (POLLIN | POLLHUP))) {
			ssize_t n = read(po[0], chunk, sizeof(chunk));
			if (n > 0)
				buf_append(&r.out, &lo, &co, chunk, (size_t)n);
			else
				open_o = false;
		}
		if (k > 0 && open_e && (p[1].revents & (POLLIN | POLLHUP))) {
			ssize_t n = read(pe[0], chunk, sizeof(chunk));
			if (n > 0)
				buf_append(&r.err, &le, &ce, chunk, (size_t)n);
			else
				open_e = false;
		}
		if (!killed && time(NULL) - start > timeout_s) {
			kill(pid, SIGKILL);
			killed = true;
		}
	}
	close(po[0]);
	close(pe[0]);
	waitpid(pid, &r.status, 0);
	free(prog);
	return r;
}

static void run_out_free(run_out *r)
{
	free(r->out);
	free(r->err);
}

static char *write_config(const char *name, const char *json)
{
	char *path = malloc(1024);
	snprintf(path, 1024, "%s/%s", data_dir, name);
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(json, f);
	fclose(f);
	return path;
}

static int exit_code(const run_out *r)
{
	return WIFEXITED(r->status) ? WEXITSTATUS(r->status) : 128 + WTERMSIG(r->status);
}

// ---- checking the output ----

static const cJSON *get(const cJSON *o, const char *path)
{
	const cJSON *cur = o;
	for (const char *p = path; *p;) {
		const char *dot = strchr(p, '.');
		size_t n = dot ? (size_t)(dot - p) : strlen(p);
		char key[64];
		snprintf(key, sizeof(key), "%.*s", (int)n, p);
		cur = cJSON_GetObjectItemCaseSensitive(cur, key);
		ck_assert_msg(cur != NULL, "result has no '%s'", path);
		p += n + (dot ? 1 : 0);
	}
	return cur;
}

static double num(const cJSON *o, const char *path)
{
	const cJSON *v = get(o, path);
	ck_assert_msg(cJSON_IsNumber(v), "'%s' is not a number", path);
	return v->valuedouble;
}

/* Every line is JSON; progress lines in stage order with a non-decreasing pct; the last line
 * is the result with every key of docs/results.md.  Returns the parsed result. */
static cJSON *check_lines(const run_out *r, const char *event, const char *division)
{
	ck_assert_msg(exit_code(r) == 0, "exit %d, stderr: %s", exit_code(r), r->err);
	static const char *const stages[] = { "load", "train", "optimize", "quality",
					      "benchmark" };
	int stage = 0;
	double pct = 0;
	cJSON *result = NULL;
	int progress_lines = 0;
	for (const char *line = r->out; *line;) {
		const char *nl = strchr(line, '\n');
		ck_assert_msg(nl != NULL, "the output does not end with a newline");
		size_t len = (size_t)(nl - line);
		ck_assert_msg(result == NULL, "a line follows the result");
		cJSON *j = cJSON_ParseWithLength(line, len);
		ck_assert_msg(j != NULL, "not JSON: %.200s", line);
		const char *type = cJSON_GetStringValue(cJSON_GetObjectItem(j, "type"));
		ck_assert_ptr_nonnull(type);
		if (strcmp(type, "progress") == 0) {
			ck_assert_uint_lt(len, 1024);
			const char *st = cJSON_GetStringValue(cJSON_GetObjectItem(j, "stage"));
			const char *msg = cJSON_GetStringValue(cJSON_GetObjectItem(j, "message"));
			ck_assert_ptr_nonnull(st);
			ck_assert_ptr_nonnull(msg);
			ck_assert_uint_le(strlen(msg), 200);
			int k = 0;
			while (k < 5 && strcmp(stages[k], st) != 0)
				k++;
			ck_assert_msg(k < 5 && k >= stage, "stage '%s' out of order", st);
			stage = k;
			double p = num(j, "pct");
			ck_assert_msg(p >= pct && p <= 100, "pct %g after %g", p, pct);
			pct = p;
			progress_lines++;
			cJSON_Delete(j);
		} else {
			ck_assert_str_eq(type, "result");
			ck_assert_uint_lt(len, 4u << 20);
			result = j;
		}
		line = nl + 1;
	}
	ck_assert_int_ge(progress_lines, 5);
	ck_assert_msg(result != NULL, "no result line");
	ck_assert_int_eq(stage, 4);

	cJSON *o = result;
	ck_assert_str_eq(cJSON_GetStringValue(get(o, "event")), event);
	ck_assert_str_eq(cJSON_GetStringValue(get(o, "division")), division);
	ck_assert_str_eq(cJSON_GetStringValue(get(o, "status")), "finished");
	ck_assert(cJSON_IsBool(get(o, "valid")));
	ck_assert(cJSON_IsArray(get(o, "invalid_reasons")));
	ck_assert_int_eq(cJSON_IsTrue(get(o, "valid")),
			 cJSON_GetArraySize(get(o, "invalid_reasons")) == 0);
	ck_assert(cJSON_IsBool(get(o, "quality.passed")));
	double q = num(o, "quality.value"), ref = num(o, "quality.reference");
	if (ref > 0)
		ck_assert(fabs(num(o, "quality.ratio") - q / ref) < 1e-6);
	else
		ck_assert(q > 0 ? cJSON_IsNull(get(o, "quality.ratio"))
				: num(o, "quality.ratio") == 1);
	ck_assert_int_eq(cJSON_IsTrue(get(o, "quality.passed")), q >= num(o, "quality.gate") * ref);
	static const char *const lat[] = { "n", "mean", "sd", "min", "max", "median", "p90", "p95",
					   "p99", "p999", "early_stopping_p90", "outliers" };
	for (size_t i = 0; i < sizeof(lat) / sizeof(lat[0]); i++) {
		char k[64];
		snprintf(k, sizeof(k), "latency.%s", lat[i]);
		num(o, k);
		snprintf(k, sizeof(k), "baseline_latency.%s", lat[i]);
		num(o, k);
	}
	ck_assert(num(o, "latency.min") <= num(o, "latency.median"));
	ck_assert(num(o, "latency.median") <= num(o, "latency.p90"));
	ck_assert(num(o, "latency.p90") <= num(o, "latency.max"));
	ck_assert_int_eq(cJSON_GetArraySize(get(o, "latency.median_ci")), 2);
	ck_assert(num(o, "throughput.value") > 0);
	ck_assert(num(o, "baseline_throughput.value") > 0);
	double sp = num(o, "speedup.value");
	ck_assert(num(o, "speedup.ci_low") <= sp + 1e-9 && sp <= num(o, "speedup.ci_high") + 1e-9);
	ck_assert(num(o, "speedup.pairs") >= 1);
	ck_assert(num(o, "model.params") > 0);
	ck_assert(num(o, "model.nonzero_params") <= num(o, "model.params"));
	ck_assert(num(o, "model.bytes") > 0);
	ck_assert(fabs(num(o, "model.compression") -
		       num(o, "model.baseline_bytes") / num(o, "model.bytes")) < 1e-6);
	ck_assert(num(o, "model.flops_per_inference") > 0);
	ck_assert_int_ge(cJSON_GetArraySize(get(o, "model.layers")), 1);
	ck_assert(num(o, "memory.peak_rss_bytes") > 1 << 20);
	ck_assert_int_ge(cJSON_GetArraySize(get(o, "profile")), 1);
	const cJSON *pe = cJSON_GetArrayItem(get(o, "profile"), 0);
	num(pe, "time_ns");
	num(pe, "flops");
	num(pe, "bytes");
	static const char *const stg[] = { "load_s", "train_s", "optimize_s", "quality_s",
					   "benchmark_s", "total_s" };
	for (size_t i = 0; i < sizeof(stg) / sizeof(stg[0]); i++) {
		char k[64];
		snprintf(k, sizeof(k), "stages.%s", stg[i]);
		ck_assert(num(o, k) >= 0);
	}
	get(o, "optimizations.kernels");
	get(o, "optimizations.threads");
	static const char *const env[] = { "cpu_model", "kernels", "cpu_set", "compiler",
					   "engine_version", "git_revision", "host" };
	for (size_t i = 0; i < sizeof(env) / sizeof(env[0]); i++) {
		char k[64];
		snprintf(k, sizeof(k), "environment.%s", env[i]);
		ck_assert(cJSON_IsString(get(o, k)));
	}
	ck_assert(cJSON_IsArray(get(o, "environment.cpu_features")));
	num(o, "environment.threads");
	int n = (int)num(o, "latency.n");
	int nt = cJSON_GetArraySize(get(o, "timings.submission"));
	ck_assert_int_eq(nt, n < RUN_TIMINGS_MAX ? n : RUN_TIMINGS_MAX);
	ck_assert_int_eq(cJSON_GetArraySize(get(o, "timings.baseline")),
			 (int)num(o, "baseline_latency.n") < RUN_TIMINGS_MAX ?
			 (int)num(o, "baseline_latency.n") : RUN_TIMINGS_MAX);
	ck_assert(cJSON_IsBool(get(o, "timings.truncated")));
	/* The timings are the latency's samples: their minimum is the reported minimum. */
	double mn = INFINITY;
	const cJSON *t;
	cJSON_ArrayForEach(t, get(o, "timings.submission"))
		mn = t->valuedouble < mn ? t->valuedouble : mn;
	if (n <= RUN_TIMINGS_MAX)
		ck_assert(fabs(mn - num(o, "latency.min")) < 0.5);
	return result;
}

static bool has_reason(const cJSON *o, const char *text)
{
	const cJSON *r;
	cJSON_ArrayForEach(r, get(o, "invalid_reasons"))
		if (strstr(r->valuestring, text))
			return true;
	return false;
}

// ---- the events end to end ----

START_TEST(test_mlp_optimized_json)
{
	need_fixture();
	char *cfg = write_config("mlp-int8.json",
		"{\"event\": \"mlp_sprint\", \"name\": \"int8\", \"optimize\": {\"kernels\": \"auto\", "
		"\"quantize\": {\"calibration_samples\": 256}}}");
	const char *args[] = { "--json", "--data-dir", data_dir, "--submission", "7", "--cpus",
			       "0", "--min-count", "128", "--min-duration", "0", "--max-duration",
			       "30", "--warmup", "8", cfg, NULL };
	run_out r = run_cli(args, 240, false);
	cJSON *o = check_lines(&r, "mlp_sprint", "closed");
	ck_assert_int_eq((int)num(o, "submission"), 7);
	ck_assert_str_eq(cJSON_GetStringValue(get(o, "name")), "int8");
	ck_assert_str_eq(cJSON_GetStringValue(get(o, "quality.metric")), "accuracy");
	ck_assert_int_eq((int)num(o, "quality.test_items"), 10000);  /* the full test set */
	double q = num(o, "quality.value");
	ck_assert_msg(q > 0.70 && q <= 1.0, "accuracy %g", q);
	ck_assert_msg(fabs(num(o, "quality.ratio") - 1) < 0.03, "ratio %g", num(o, "quality.ratio"));
	ck_assert_str_eq(cJSON_GetStringValue(get(o, "latency.query")), "image");
	ck_assert_str_eq(cJSON_GetStringValue(get(o, "throughput.unit")), "images/s");
	ck_assert(num(o, "latency.n") >= 128);
	ck_assert(cJSON_IsObject(get(o, "optimizations.quantize")));
	ck_assert_str_eq(cJSON_GetStringValue(get(o, "environment.cpu_set")), "0");
	/* int8 weights: a quarter of the FP32 bytes plus scales. */
	ck_assert(num(o, "model.compression") > 2.5);
	/* --min-count 128 is below the 1024 the verdict asks for. */
	ck_assert(has_reason(o, "minimum"));
	cJSON_Delete(o);
	run_out_free(&r);
	free(cfg);
}
END_TEST

START_TEST(test_mlp_baseline_equivalent_no_sandbox_human)
{
	/* Without --json and not on a terminal: stage lines and the table.  --no-sandbox keeps
	 * the sanitizers' leak check possible in the ASan build. */
	need_fixture();
	char *cfg = write_config("mlp-base.json",
		"{\"event\": \"mlp_sprint\", \"name\": \"baseline\", \"optimize\": {\"kernels\": "
		"\"portable\", \"threads\": 1}}");
	char result[1100];
	snprintf(result, sizeof(result), "%s/mlp-base.result.json", data_dir);
	const char *args[] = { "--data-dir", data_dir, "--no-sandbox", "--min-count", "64",
			       "--min-duration", "0", "--warmup", "4", "--result", result, cfg,
			       NULL };
	run_out r = run_cli(args, 240, true);
	ck_assert_msg(exit_code(&r) == 0, "exit %d, stderr: %s", exit_code(&r), r.err);
	ck_assert_ptr_nonnull(strstr(r.out, "result: mlp_sprint (closed division) \"baseline\""));
	ck_assert_ptr_nonnull(strstr(r.out, "speedup:"));
	ck_assert_ptr_nonnull(strstr(r.out, "quality:     accuracy"));
	ck_assert_ptr_null(strstr(r.out, "{\"type\""));
	/* --result holds the result object. */
	FILE *f = fopen(result, "r");
	ck_assert_ptr_nonnull(f);
	static char buf[8 << 20];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	cJSON *o = cJSON_Parse(buf);
	ck_assert_ptr_nonnull(o);
	/* Portable FP32, same weights: the same predictions as the reference up to rounding. */
	ck_assert_msg(fabs(num(o, "quality.ratio") - 1) < 0.002, "ratio %g",
		      num(o, "quality.ratio"));
	ck_assert(cJSON_IsTrue(get(o, "quality.passed")));
	ck_assert_str_eq(cJSON_GetStringValue(get(o, "optimizations.kernels")), "portable");
	ck_assert(cJSON_IsFalse(get(o, "environment.sandbox")));
	ck_assert(fabs(num(o, "model.compression") - 1) < 0.05);
	cJSON_Delete(o);
	run_out_free(&r);
	free(cfg);
}
END_TEST

START_TEST(test_cnn_json)
{
	need_fixture();
	char *cfg = write_config("cnn-int8.json",
		"{\"event\": \"cnn_marathon\", \"name\": \"int8 b128\", \"batch_size\": 128, "
		"\"optimize\": {\"quantize\": {}}}");
	const char *args[] = { "--json", "--data-dir", data_dir, "--max-test-items", "500",
			       "--min-count", "2", "--min-duration", "0", cfg, NULL };
	run_out r = run_cli(args, 280, false);
	cJSON *o = check_lines(&r, "cnn_marathon", "closed");
	ck_assert_int_eq((int)num(o, "quality.test_items"), 500);
	double q = num(o, "quality.value");
	ck_assert_msg(q > 0.5 && q <= 1.0, "accuracy %g", q);
	ck_assert_str_eq(cJSON_GetStringValue(get(o, "latency.query")), "pass");
	ck_assert(num(o, "latency.n") >= 2);
	ck_assert_int_eq((int)num(o, "optimizations.batch_size"), 128);
	/* One pass = 500 images: throughput is images per second of the passes. */
	ck_assert(fabs(num(o, "throughput.value") - 500 / (num(o, "latency.mean") * 1e-9)) <
		  1e-3 * num(o, "throughput.value"));
	ck_assert(!cJSON_IsTrue(get(o, "valid")));
	ck_assert(has_reason(o, "--max-test-items"));
	cJSON_Delete(o);
	run_out_free(&r);
	free(cfg);
}
END_TEST

START_TEST(test_decathlon_json)
{
	need_fixture();
	char *cfg = write_config("dec-kv.json",
		"{\"event\": \"transformer_decathlon\", \"name\": \"kv\", \"optimize\": "
		"{\"kv_cache\": true}}");
	const char *args[] = { "--json", "--data-dir", data_dir, "--max-test-items", "10",
			       "--min-count", "2", "--min-duration", "0", "--warmup", "1", cfg,
			       NULL };
	run_out r = run_cli(args, 280, false);
	cJSON *o = check_lines(&r, "transformer_decathlon", "closed");
	ck_assert_str_eq(cJSON_GetStringValue(get(o, "quality.metric")), "decathlon_points");
	double q = num(o, "quality.value"), sum = 0;
	ck_assert(q >= 0 && q <= 1000);
	const cJSON *t;
	int tasks = 0;
	cJSON_ArrayForEach(t, get(o, "quality.per_task")) {
		sum += t->valuedouble;
		tasks++;
	}
	ck_assert_int_eq(tasks, 10);
	ck_assert(fabs(sum - q) < 1e-6);
	/* The cache changes speed, not tokens: the same points as the reference. */
	ck_assert_msg(fabs(q - num(o, "quality.reference")) < 1e-9, "%g vs %g", q,
		      num(o, "quality.reference"));
	ck_assert_str_eq(cJSON_GetStringValue(get(o, "latency.query")), "prompt");
	ck_assert_str_eq(cJSON_GetStringValue(get(o, "throughput.unit")), "tokens/s");
	ck_assert(num(o, "token_latency.p90") > 0);
	ck_assert(num(o, "tokens_generated") >= 1);
	ck_assert(cJSON_IsTrue(get(o, "optimizations.kv_cache")));
	ck_assert(num(o, "optimizations.kv_cache_bytes") > 0);
	cJSON_Delete(o);
	run_out_free(&r);
	free(cfg);
}
END_TEST

// ---- exit codes ----

static void expect_exit(const char *const *args, int code, const char *text)
{
	run_out r = run_cli(args, 120, false);
	ck_assert_msg(exit_code(&r) == code, "exit %d (want %d), stderr: %s", exit_code(&r), code,
		      r.err);
	ck_assert_msg(strstr(r.err, text) != NULL, "stderr lacks '%s': %s", text, r.err);
	ck_assert_msg(strncmp(r.err, "tinymlperf-run: ", 16) == 0, "stderr: %s", r.err);
	ck_assert_msg(strchr(r.err, '\n') == r.err + strlen(r.err) - 1, "not one line: %s", r.err);
	ck_assert_msg(strstr(r.out, "\"result\"") == NULL, "a result was printed");
	run_out_free(&r);
}

START_TEST(test_bad_config_exit_2)
{
	need_fixture();
	char *cfg = write_config("bad.json",
		"{\"event\": \"mlp_sprint\", \"optimize\": {\"threads\": 0, \"kv_cache\": true}}");
	const char *args[] = { "--json", "--data-dir", data_dir, cfg, NULL };
	expect_exit(args, 2, "'optimize.threads' is 0");
	expect_exit(args, 2, "'optimize.kv_cache' applies only to transformer_decathlon");
	free(cfg);
	char *notjson = write_config("notjson.json", "{\"event\": ");
	const char *args2[] = { "--json", "--data-dir", data_dir, notjson, NULL };
	expect_exit(args2, 2, "not valid JSON");
	free(notjson);
	const char *args3[] = { "--json", "--data-dir", data_dir, "/nonexistent/c.json", NULL };
	expect_exit(args3, 2, "cannot read '/nonexistent/c.json'");
	const char *args4[] = { "--json", "--min-count", "many", "x.json", NULL };
	expect_exit(args4, 2, "--min-count 'many'");
	const char *args5[] = { "--json", "--cpus", "3-1", "x.json", NULL };
	expect_exit(args5, 2, "--cpus '3-1'");
}
END_TEST

START_TEST(test_over_limit_exit_3)
{
	need_fixture();
	/* 8 x 4096-wide hidden layers: ~120M parameters, over the 10M limit, rejected before
	 * anything is loaded or trained. */
	char *cfg = write_config("huge.json",
		"{\"event\": \"mlp_sprint\", \"division\": \"open\", \"model\": {\"hidden\": "
		"[4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096]}}");
	const char *args[] = { "--json", "--data-dir", data_dir, cfg, NULL };
	expect_exit(args, 3, "parameters, the limit is 10000000");
	free(cfg);
}
END_TEST

START_TEST(test_missing_weights_exit_4)
{
	need_fixture();
	char *cfg = write_config("mlp-plain.json", "{\"event\": \"mlp_sprint\"}");
	const char *args[] = { "--json", "--data-dir", empty_dir, cfg, NULL };
	expect_exit(args, 4, "run tinymlperf-run train mlp_sprint");
	free(cfg);
}
END_TEST

START_TEST(test_cpu_limit_mid_run_exit_3)
{
	need_fixture();
	char *cfg = write_config("mlp-long.json", "{\"event\": \"mlp_sprint\"}");
	const char *args[] = { "--json", "--data-dir", data_dir, "--limit-cpu", "1",
			       "--min-duration", "600", "--max-duration", "0", cfg, NULL };
	expect_exit(args, 3, "cpu time limit of 1 s reached");
	free(cfg);
}
END_TEST

START_TEST(test_help_lists_every_flag)
{
	char *prog = tt_build_path("tinymlperf-run");
	char cmd[1200];
	snprintf(cmd, sizeof(cmd), "%s --help", prog);
	FILE *p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	static char buf[65536];
	size_t n = fread(buf, 1, sizeof(buf) - 1, p);
	buf[n] = 0;
	ck_assert_int_eq(pclose(p), 0);
	static const char *const flags[] = {
		"--json", "--data-dir", "--submission", "--cpus", "--min-count", "--min-duration",
		"--max-duration", "--limit-memory", "--limit-cpu", "--limit-files", "--limit-fsize",
		"--no-sandbox", "--sandbox-test", "--max-test-items", "--warmup", "--seed",
		"--result", "--dataset-dir", "run CONFIG.json",
	};
	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
		ck_assert_msg(strstr(buf, flags[i]) != NULL, "--help lacks %s", flags[i]);
	free(prog);
}
END_TEST

Suite *run_suite(void)
{
	Suite *s = suite_create("run");
	TCase *tc = tcase_create("run");
	tcase_add_unchecked_fixture(tc, fixture_setup, fixture_teardown);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_mlp_optimized_json);
	tcase_add_test(tc, test_mlp_baseline_equivalent_no_sandbox_human);
	tcase_add_test(tc, test_cnn_json);
	tcase_add_test(tc, test_decathlon_json);
	tcase_add_test(tc, test_bad_config_exit_2);
	tcase_add_test(tc, test_over_limit_exit_3);
	tcase_add_test(tc, test_missing_weights_exit_4);
	tcase_add_test(tc, test_cpu_limit_mid_run_exit_3);
	tcase_add_test(tc, test_help_lists_every_flag);
	suite_add_tcase(s, tc);
	return s;
}
