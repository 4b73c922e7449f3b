/* run_main.c: tinymlperf-run, the worker the daemon spawns and the local runner competitors
 * use.  Subcommands are rows of a table: `run` measures a config against the event's baseline
 * (events/run.c; the daemon's protocol in docs/results.md), `validate` checks a config,
 * `events` lists the events, `cpu` prints the CPU's features, `train` rebuilds an event's
 * reference weights from the real data (DIR/models/<event>.safetensors).  Exit codes: 0 ok,
 * 2 bad arguments or an invalid config, 3 a resource limit, 4 internal error (data, training
 * or file failure); errors go to stderr as one line. */
#include "engine.h"
#include "events.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXIT_BADARGS 2   /* also: an invalid config */
#define EXIT_LIMIT 3     /* a config over a resource limit */
#define EXIT_INTERNAL 4

typedef struct command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *args;
	const char *help;
} command;

static int cmd_cpu(int argc, char **argv);
static int cmd_train(int argc, char **argv);
static int cmd_validate(int argc, char **argv);
static int cmd_events(int argc, char **argv);
static int cmd_run(int argc, char **argv);

static const command commands[] = {
	{"run", cmd_run, "CONFIG.json [options]",
	 "measure a config against its event's baseline: quality on the\n"
	 "                         full test set, timed runs, statistics, the result"},
	{"cpu", cmd_cpu, "", "print this CPU's features and the kernel set 'auto' picks"},
	{"validate", cmd_validate, "CONFIG.json",
	 "check a config (every error with its field path); exit 0 valid,\n"
	 "                         2 invalid, 3 over a resource limit"},
	{"events", cmd_events, "", "list the events with their rules"},
	{"train", cmd_train, "EVENT [options]",
	 "train EVENT's reference model (mlp_sprint, cnn_marathon on\n"
	 "                         Fashion-MNIST; transformer_decathlon on the ten tasks),\n"
	 "                         write DIR/models/EVENT.safetensors"},
};

static void usage(FILE *out)
{
	fprintf(out, "usage: tinymlperf-run COMMAND [options]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		char head[64];
		snprintf(head, sizeof(head), "%s %s", commands[i].name, commands[i].args);
		fprintf(out, "  %-22s %s\n", head, commands[i].help);
	}
	fprintf(out, "  %-22s %s\n  %-22s %s\n", "--help", "print this help", "--version",
		"print the version");
	fprintf(out, "\nrun options (the daemon passes them; all have defaults):\n"
		     "  --json              JSON lines on stdout: progress, then the result\n"
		     "                      (default on a terminal: stage lines, a progress bar\n"
		     "                      and a result table)\n"
		     "  --data-dir DIR      reference weights in DIR/models (TINYMLPERF_DATA_DIR,\n"
		     "                      default ./var)\n"
		     "  --dataset-dir DIR   Fashion-MNIST directory (TINYMLPERF_DATASET_DIR,\n"
		     "                      default " TM_FMNIST_DIR ")\n"
		     "  --submission ID     the daemon's submission id, recorded (default null)\n"
		     "  --cpus LIST         pin to these CPUs, e.g. 1 or 2-3 (default: inherited)\n"
		     "  --min-count N       timed queries at least; 0: the event's default\n"
		     "                      (mlp 1024 images, cnn 10 passes, decathlon 100 prompts)\n"
		     "  --min-duration S    timed seconds of the submission at least; -1: the\n"
		     "                      event's default (mlp 1, cnn 5, decathlon 0)\n"
		     "  --max-duration S    cap on the timed loop with the baseline; -1: the\n"
		     "                      default 120 (cnn 600, decathlon 300); 0: none\n"
		     "  --warmup N          warm-up queries of each side, untimed, also at least\n"
		     "                      0.2 s (0: the event's default: mlp 32, cnn 1,\n"
		     "                      decathlon 10)\n"
		     "  --seed N            query order and bootstrap seed (default 1)\n"
		     "  --repro F           run-to-run relative uncertainty of the speedup, added\n"
		     "                      to its bootstrap interval (default 0.005; 0: none)\n"
		     "  --limit-memory MB   address-space limit, MiB (default 4096; 0: none)\n"
		     "  --limit-cpu S       CPU-time limit, seconds (default 3600; 0: none)\n"
		     "  --limit-files N     open-file limit (default 64; 0: unchanged)\n"
		     "  --limit-fsize MB    file-size limit, MiB (default 64; 0: none)\n"
		     "  --result FILE       also write the result object to FILE\n"
		     "  --no-sandbox        no seccomp filter (debugging only; limits still apply)\n"
		     "  --sandbox-test ACT  for tests: skip the work, apply the sandbox and try\n"
		     "                      ACT (socket, connect, execve, fork, open-write, alloc,\n"
		     "                      spin); the sandbox must stop it\n"
		     "  --max-test-items N  for tests: use the first N test items only (the result\n"
		     "                      is INVALID)\n");
	fprintf(out, "\ntrain options:\n"
		     "  --data-dir DIR     data directory (TINYMLPERF_DATA_DIR, default ./var)\n"
		     "  --dataset-dir DIR  Fashion-MNIST directory (TINYMLPERF_DATASET_DIR,\n"
		     "                     default " TM_FMNIST_DIR ")\n"
		     "  --seed N           initialisation and shuffling seed (default 1)\n"
		     "  --epochs N         epochs, 1..1000 (default: the event's recipe)\n"
		     "  --threads N        threads, 1..64 (default 2)\n"
		     "  --lr X, --batch N  override the recipe's peak learning rate and batch size\n"
		     "  --augment A        override the recipe's augmentation: none, flip, shift,\n"
		     "                     flip,shift\n"
		     "  --kernels NAME     auto, portable, avx2, avx512 (default auto)\n"
		     "  --out FILE         weight file (default DIR/models/EVENT.safetensors)\n"
		     "  --steps N          transformer_decathlon: training steps (default 3000)\n"
		     "  --minutes M        transformer_decathlon: a wall-clock budget instead\n");
}

static int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("tinymlperf-run: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return code;
}

// ---- validate and events ----

/* Read a whole file of at most max bytes; *len gets its size.  NULL with errno on failure
 * (EFBIG when over max). */
static char *read_file(const char *path, size_t max, size_t *len)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	if (!f)
		return NULL;
	char *buf = malloc(max + 1);
	size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
	if (f != stdin)
		fclose(f);
	if (!buf)
		return NULL;
	if (n > max) {
		free(buf);
		errno = EFBIG;
		return NULL;
	}
	buf[n] = '\0';
	*len = n;
	return buf;
}

static int cmd_validate(int argc, char **argv)
{
	if (argc != 2)
		return fail(EXIT_BADARGS, "validate: usage: tinymlperf-run validate CONFIG.json");
	size_t len;
	char *text = read_file(argv[1], CFG_MAX_BYTES, &len);
	if (!text)
		return fail(EXIT_BADARGS, "validate: cannot read '%s': %s", argv[1],
			    errno == EFBIG ? "larger than the 256 KiB limit" : strerror(errno));
	cfg_config c;
	cfg_errors errs;
	int rc = cfg_parse(text, len, NULL, &c, &errs);
	free(text);
	if (rc != 0) {
		cfg_errors_print(&errs, stderr);
		return errs.over_limit ? EXIT_LIMIT : EXIT_BADARGS;
	}
	printf("valid: event=%s division=%s params=%lld flops_per_inference=%lld "
	       "memory_estimate_bytes=%lld\n", c.event->name, c.open ? "open" : "closed",
	       (long long)c.params, (long long)c.flops, (long long)c.memory_bytes);
	return 0;
}

static int cmd_events(int argc, char **argv)
{
	(void)argv;
	if (argc != 1)
		return fail(EXIT_BADARGS, "events: takes no arguments");
	for (int i = 0; i < EV_COUNT; i++) {
		const ev_event *e = ev_event_at(i);
		printf("%s: %s\n  data:      %s\n  reference: %s\n  scenario:  %s\n"
		       "  metric:    %s\n  quality:   %s\n  gate:      closed >= %.0f%% of the "
		       "reference, open >= %.0f%%\n\n", e->name, e->title, e->dataset, e->reference,
		       e->scenario_text, e->primary_metric, e->quality_metric, e->closed_gate * 100,
		       e->open_gate * 100);
	}
	return 0;
}

// ---- cpu ----

static int cmd_cpu(int argc, char **argv)
{
	(void)argv;
	if (argc > 1)
		return fail(EXIT_BADARGS, "cpu: takes no arguments (see --help)");
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	printf("model: %s\navx2: %d\nfma: %d\navx512f: %d\navx512bw: %d\navx512vl: %d\n"
	       "avx512vnni: %d\navxvnni: %d\nkernels: %s\n", cpu.model, cpu.avx2, cpu.fma,
	       cpu.avx512f, cpu.avx512bw, cpu.avx512vl, cpu.avx512vnni, cpu.avxvnni,
	       tm_isa_name(tm_isa_best(&cpu)));
	return 0;
}

// ---- train ----

static bool parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (end == s || *end || errno || v < min || v > max)
		return false;
	*out = v;
	return true;
}

static bool parse_u64(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	if (*s < '0' || *s > '9')
		return false;
	unsigned long long v = strtoull(s, &end, 10);
	if (*end || errno)
		return false;
	*out = v;
	return true;
}

/* mkdir -p of the directory part of path. */
static int make_parent_dirs(const char *path)
{
	char buf[4096];
	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	char *slash = strrchr(buf, '/');
	if (!slash || slash == buf)
		return 0;
	*slash = 0;
	for (char *p = buf + 1; ; p++) {
		if (*p == '/' || *p == 0) {
			char keep = *p;
			*p = 0;
			if (mkdir(buf, 0755) < 0 && errno != EEXIST)
				return -errno;
			*p = keep;
			if (!keep)
				break;
		}
	}
	return 0;
}

typedef struct train_args {
	const char *event;
	const char *data_dir;
	const char *dataset_dir;
	const char *out;
	const char *kernels;
	uint64_t seed;
	long epochs;    /* 0: the recipe's */
	long threads;
	long batch;     /* 0: the recipe's */
	double lr;      /* 0: the recipe's */
	int augment;    /* -1: the recipe's, else TM_AUG_* */
	long steps;     /* transformer: 0: the recipe's */
	double minutes; /* transformer: > 0: a wall-clock budget instead of steps */
} train_args;

static int train_parse(int argc, char **argv, train_args *a)
{
	static const struct option longopts[] = {
		{"data-dir", required_argument, NULL, 'd'},
		{"dataset-dir", required_argument, NULL, 'D'},
		{"seed", required_argument, NULL, 's'},
		{"epochs", required_argument, NULL, 'e'},
		{"threads", required_argument, NULL, 't'},
		{"kernels", required_argument, NULL, 'k'},
		{"out", required_argument, NULL, 'o'},
		{"lr", required_argument, NULL, 'l'},
		{"batch", required_argument, NULL, 'b'},
		{"augment", required_argument, NULL, 'a'},
		{"steps", required_argument, NULL, 'S'},
		{"minutes", required_argument, NULL, 'm'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *env;
	memset(a, 0, sizeof(*a));
	a->data_dir = (env = getenv("TINYMLPERF_DATA_DIR")) && *env ? env : "./var";
	a->dataset_dir = (env = getenv("TINYMLPERF_DATASET_DIR")) && *env ? env : NULL;
	a->seed = 1;
	a->threads = 2;
	a->kernels = "auto";
	a->augment = -1;
	optind = 1;
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			a->data_dir = optarg;
			break;
		case 'D':
			a->dataset_dir = optarg;
			break;
		case 's':
			if (!parse_u64(optarg, &a->seed))
				return fail(EXIT_BADARGS, "train: --seed '%s' is not an integer in "
					    "[0, 2^64)", optarg);
			break;
		case 'e':
			if (!parse_long(optarg, 1, 1000, &a->epochs))
				return fail(EXIT_BADARGS, "train: --epochs '%s', must be in [1, 1000]",
					    optarg);
			break;
		case 't':
			if (!parse_long(optarg, 1, 64, &a->threads))
				return fail(EXIT_BADARGS, "train: --threads '%s', must be in [1, 64]",
					    optarg);
			break;
		case 'k':
			a->kernels = optarg;
			break;
		case 'o':
			a->out = optarg;
			break;
		case 'l': {
			char *end;
			errno = 0;
			a->lr = strtod(optarg, &end);
			if (end == optarg || *end || errno || !(a->lr > 0 && a->lr <= 10))
				return fail(EXIT_BADARGS, "train: --lr '%s', must be in (0, 10]",
					    optarg);
			break;
		}
		case 'a':
			if (strcmp(optarg, "none") == 0)
				a->augment = 0;
			else if (strcmp(optarg, "flip") == 0)
				a->augment = TM_AUG_FLIP;
			else if (strcmp(optarg, "shift") == 0)
				a->augment = TM_AUG_SHIFT;
			else if (strcmp(optarg, "flip,shift") == 0)
				a->augment = TM_AUG_FLIP | TM_AUG_SHIFT;
			else
				return fail(EXIT_BADARGS, "train: --augment '%s', must be none, flip, "
					    "shift or flip,shift", optarg);
			break;
		case 'b':
			if (!parse_long(optarg, 1, 4096, &a->batch))
				return fail(EXIT_BADARGS, "train: --batch '%s', must be in [1, 4096]",
					    optarg);
			break;
		case 'S':
			if (!parse_long(optarg, 1, 1000000, &a->steps))
				return fail(EXIT_BADARGS, "train: --steps '%s', must be in [1, 1000000]",
					    optarg);
			break;
		case 'm': {
			char *end;
			errno = 0;
			a->minutes = strtod(optarg, &end);
			if (end == optarg || *end || errno || !(a->minutes > 0 && a->minutes <= 600))
				return fail(EXIT_BADARGS, "train: --minutes '%s', must be in (0, 600]",
					    optarg);
			break;
		}
		case 'h':
			usage(stdout);
			return 1;
		case ':':
			return fail(EXIT_BADARGS, "train: option '%s' needs a value", argv[optind - 1]);
		default:
			return fail(EXIT_BADARGS, "train: unknown option '%s' (see --help)",
				    argv[optind - 1]);
		}
	}
	if (optind != argc - 1)
		return fail(EXIT_BADARGS, "train: expected one EVENT (mlp_sprint, cnn_marathon, "
			    "transformer_decathlon), "
			    "got %d arguments", argc - optind);
	a->event = argv[optind];
	return 0;
}

/* The Decathlon's reference: the transformer trained on the ten tasks with the recipe of
 * docs/decathlon.md, evaluated by greedy generation on the held-out prompts. */
static int train_decathlon(const train_args *a)
{
	tm_err err = {0};
	if (a->epochs || a->batch || a->lr > 0 || a->augment >= 0 || a->dataset_dir)
		return fail(EXIT_BADARGS, "train: --epochs, --batch, --lr, --augment and "
			    "--dataset-dir do not apply to transformer_decathlon (use --steps or "
			    "--minutes)");
	tm_decathlon_train_opts o;
	tm_decathlon_train_defaults(&o);
	o.seed = a->seed;
	o.threads = (int)a->threads;
	if (a->steps)
		o.steps = (int)a->steps;
	if (a->minutes > 0) {
		o.steps = 0;
		o.minutes = a->minutes;
	}
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	if (tm_isa_parse(a->kernels, &cpu, &o.isa, &err) < 0)
		return fail(EXIT_BADARGS, "train: --kernels: %s", err.msg);
	char out[4096];
	if (a->out)
		snprintf(out, sizeof(out), "%s", a->out);
	else if (snprintf(out, sizeof(out), "%s/models/transformer_decathlon.safetensors",
			  a->data_dir) >= (int)sizeof(out))
		return fail(EXIT_BADARGS, "train: --data-dir is too long");
	int mk = make_parent_dirs(out);
	if (mk < 0)
		return fail(EXIT_INTERNAL, "train: cannot create the directory of '%s': %s", out,
			    strerror(-mk));
	o.out_path = out;
	printf("train: event=transformer_decathlon steps=%d minutes=%g threads=%d kernels=%s "
	       "seed=%llu\n", o.steps, o.steps ? 0.0 : o.minutes, o.threads, tm_isa_name(o.isa),
	       (unsigned long long)o.seed);
	fflush(stdout);
	tm_decathlon_train_stats st;
	if (tm_decathlon_train_reference(&o, stdout, &st, &err) < 0)
		return fail(EXIT_INTERNAL, "train: %s", err.msg);
	printf("result: event=transformer_decathlon points=%.1f train_seconds=%.1f steps=%d "
	       "tokens_per_s=%.0f out=%s\n", st.score.total_points, st.seconds, st.steps,
	       st.seconds > 0 ? st.tokens / st.seconds : 0.0, out);
	return 0;
}

static int cmd_train(int argc, char **argv)
{
	train_args a;
	int rc = train_parse(argc, argv, &a);
	if (rc)
		return rc == 1 ? 0 : rc;
	if (strcmp(a.event, "transformer_decathlon") == 0)
		return train_decathlon(&a);
	if (a.steps || a.minutes > 0)
		return fail(EXIT_BADARGS, "train: --steps and --minutes apply to "
			    "transformer_decathlon only (use --epochs)");
	tm_err err = {0};
	tm_model_spec spec;
	tm_train_config cfg;
	if (tm_model_spec_reference(&spec, a.event, &err) < 0 ||
	    tm_train_config_reference(&cfg, a.event, &err) < 0)
		return fail(EXIT_BADARGS, "train: %s", err.msg);
	cfg.seed = a.seed;
	if (a.epochs)
		cfg.epochs = (int)a.epochs;
	if (a.batch)
		cfg.batch = (int)a.batch;
	if (a.lr > 0)
		cfg.lr = (float)a.lr;
	if (a.augment >= 0)
		cfg.augment = (unsigned)a.augment;
	tm_cpu cpu;
	tm_ctx ctx = {0};
	tm_cpu_detect(&cpu);
	if (tm_isa_parse(a.kernels, &cpu, &ctx.isa, &err) < 0)
		return fail(EXIT_BADARGS, "train: --kernels: %s", err.msg);
	char out[4096];
	if (a.out)
		snprintf(out, sizeof(out), "%s", a.out);
	else if (snprintf(out, sizeof(out), "%s/models/%s.safetensors", a.data_dir, a.event) >=
		 (int)sizeof(out))
		return fail(EXIT_BADARGS, "train: --data-dir is too long");

	tm_dataset train = {0}, test = {0};
	tm_model *m = NULL;
	int code = EXIT_INTERNAL;
	if (tm_fmnist_load(&train, a.dataset_dir, true, &err) < 0 ||
	    tm_fmnist_load(&test, a.dataset_dir, false, &err) < 0) {
		fail(EXIT_INTERNAL, "train: %s", err.msg);
		goto out;
	}
	if (!(m = tm_model_new(&spec, &err))) {
		fail(EXIT_INTERNAL, "train: %s", err.msg);
		goto out;
	}
	tm_model_randomize(m, cfg.seed);
	ctx.pool = a.threads > 1 ? tm_pool_new((int)a.threads) : NULL;

	tm_model_meta meta = {.seed = cfg.seed};
	char recipe[192];
	tm_train_recipe_str(&cfg, recipe, sizeof(recipe));
	snprintf(meta.recipe, sizeof(meta.recipe), "%s threads=%ld kernels=%s", recipe, a.threads,
		 tm_isa_name(ctx.isa));
	tm_model_print(m, stdout);
	printf("train: event=%s train=%d test=%d recipe=\"%s\"\n", a.event, train.n, test.n,
	       meta.recipe);
	fflush(stdout);

	tm_train_result res;
	if (tm_train(m, &ctx, &train, &test, &cfg, stdout, &res, &err) < 0) {
		fail(EXIT_INTERNAL, "train: %s", err.msg);
		goto out;
	}
	meta.test_accuracy = res.test_accuracy;
	meta.train_seconds = res.seconds;
	int mk = make_parent_dirs(out);
	if (mk < 0) {
		fail(EXIT_INTERNAL, "train: cannot create the directory of '%s': %s", out,
		     strerror(-mk));
		goto out;
	}
	if (tm_model_save(m, out, &meta, &err) < 0) {
		fail(EXIT_INTERNAL, "train: %s", err.msg);
		goto out;
	}
	printf("result: event=%s test_accuracy=%.4f train_seconds=%.1f epochs=%d out=%s\n",
	       a.event, res.test_accuracy, res.seconds, res.epochs, out);
	code = 0;
out:
	tm_model_free(m);
	tm_pool_free(ctx.pool);
	tm_dataset_release(&train);
	tm_dataset_release(&test);
	return code;
}

// ---- run ----

static bool parse_double(const char *s, double min, double max, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || *end || errno || !(v >= min && v <= max))
		return false;
	*out = v;
	return true;
}

static int cmd_run(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"json", no_argument, NULL, 'j'},
		{"data-dir", required_argument, NULL, 'd'},
		{"dataset-dir", required_argument, NULL, 'D'},
		{"submission", required_argument, NULL, 'i'},
		{"cpus", required_argument, NULL, 'c'},
		{"min-count", required_argument, NULL, 'n'},
		{"min-duration", required_argument, NULL, 'm'},
		{"max-duration", required_argument, NULL, 'M'},
		{"seed", required_argument, NULL, 's'},
		{"repro", required_argument, NULL, 'R'},
		{"warmup", required_argument, NULL, 'W'},
		{"limit-memory", required_argument, NULL, 'A'},
		{"limit-cpu", required_argument, NULL, 'C'},
		{"limit-files", required_argument, NULL, 'F'},
		{"limit-fsize", required_argument, NULL, 'Z'},
		{"result", required_argument, NULL, 'r'},
		{"no-sandbox", no_argument, NULL, 'N'},
		{"sandbox-test", required_argument, NULL, 'T'},
		{"max-test-items", required_argument, NULL, 'X'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	run_opts o;
	run_opts_default(&o);
	const char *env;
	if ((env = getenv("TINYMLPERF_DATA_DIR")) && *env)
		o.data_dir = env;
	if ((env = getenv("TINYMLPERF_DATASET_DIR")) && *env)
		o.dataset_dir = env;
	const char *result_path = NULL;
	long v;
	tm_err err = {0};
	optind = 1;
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		switch (c) {
		case 'j':
			o.json = true;
			break;
		case 'd':
			o.data_dir = optarg;
			break;
		case 'D':
			o.dataset_dir = optarg;
			break;
		case 'i':
			if (!parse_long(optarg, 0, 0x7fffffffffffffffL, &v))
				return fail(EXIT_BADARGS, "run: --submission '%s' is not an integer >= 0",
					    optarg);
			o.submission = v;
			break;
		case 'c':
			if (sbx_cpus_parse(optarg, &o.cpus, &err) < 0)
				return fail(EXIT_BADARGS, "run: %s", err.msg);
			o.have_cpus = true;
			break;
		case 'n':
			if (!parse_long(optarg, 0, 100000000, &v))
				return fail(EXIT_BADARGS, "run: --min-count '%s', must be in [0, 1e8]",
					    optarg);
			o.min_count = (size_t)v;
			break;
		case 'm':
			if (!parse_double(optarg, -1, 86400, &o.min_duration_s))
				return fail(EXIT_BADARGS, "run: --min-duration '%s', must be in [0, "
					    "86400] seconds (-1: the default)", optarg);
			break;
		case 'M':
			if (!parse_double(optarg, -1, 86400, &o.max_duration_s))
				return fail(EXIT_BADARGS, "run: --max-duration '%s', must be in [0, "
					    "86400] seconds (-1: the default)", optarg);
			break;
		case 's':
			if (!parse_u64(optarg, &o.seed))
				return fail(EXIT_BADARGS, "run: --seed '%s' is not an integer in "
					    "[0, 2^64)", optarg);
			break;
		case 'R':
			if (!parse_double(optarg, 0, 0.5, &o.speedup_repro))
				return fail(EXIT_BADARGS, "run: --repro '%s', must be a fraction in "
					    "[0, 0.5]", optarg);
			break;
		case 'W':
			if (!parse_long(optarg, 0, 1000000, &v))
				return fail(EXIT_BADARGS, "run: --warmup '%s', must be in [0, 1e6]",
					    optarg);
			o.warmup_count = (size_t)v;
			break;
		case 'A':
			if (!parse_long(optarg, 0, 1L << 30, &v) || (v > 0 && v < 16))
				return fail(EXIT_BADARGS, "run: --limit-memory '%s', must be 0 or in "
					    "[16, 2^30] MiB", optarg);
			o.limits.memory_mb = v;
			break;
		case 'C':
			if (!parse_long(optarg, 0, 100000000, &v))
				return fail(EXIT_BADARGS, "run: --limit-cpu '%s', must be in [0, 1e8] "
					    "seconds", optarg);
			o.limits.cpu_s = v;
			break;
		case 'F':
			if (!parse_long(optarg, 0, 1000000, &v) || (v > 0 && v < 16))
				return fail(EXIT_BADARGS, "run: --limit-files '%s', must be 0 or in "
					    "[16, 1e6]", optarg);
			o.limits.files = v;
			break;
		case 'Z':
			if (!parse_long(optarg, 0, 1L << 30, &v))
				return fail(EXIT_BADARGS, "run: --limit-fsize '%s', must be in [0, 2^30] "
					    "MiB", optarg);
			o.limits.fsize_mb = v;
			break;
		case 'r':
			result_path = optarg;
			break;
		case 'N':
			o.sandbox = false;
			break;
		case 'T':
			o.sandbox_test = optarg;
			break;
		case 'X':
			if (!parse_long(optarg, 1, 10000, &v))
				return fail(EXIT_BADARGS, "run: --max-test-items '%s', must be in "
					    "[1, 10000]", optarg);
			o.max_test_items = (int)v;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case ':':
			return fail(EXIT_BADARGS, "run: option '%s' needs a value", argv[optind - 1]);
		default:
			return fail(EXIT_BADARGS, "run: unknown option '%s' (see --help)",
				    argv[optind - 1]);
		}
	}
	if (optind != argc - 1)
		return fail(EXIT_BADARGS, "run: expected one CONFIG.json, got %d arguments",
			    argc - optind);
	o.config_path = argv[optind];
	o.tty = !o.json && isatty(STDOUT_FILENO);
	size_t len;
	char *text = read_file(o.config_path, CFG_MAX_BYTES, &len);
	if (!text)
		return fail(EXIT_BADARGS, "run: cannot read '%s': %s", o.config_path,
			    errno == EFBIG ? "larger than the 256 KiB limit" : strerror(errno));
	if (result_path) {
		/* Opened now: the sandbox allows no opening for writing later. */
		o.result_fd = open(result_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (o.result_fd < 0) {
			free(text);
			return fail(EXIT_BADARGS, "run: cannot create '%s': %s", result_path,
				    strerror(errno));
		}
	}
	int rc = run_config(&o, text, len);
	free(text);
	if (o.result_fd >= 0)
		close(o.result_fd);
	return rc;
}

// ---- main ----

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_BADARGS;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("tinymlperf-run %s (%s)\n", TM_ENGINE_VERSION, tm_git_revision());
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].run(argc - 1, argv + 1);
	return fail(EXIT_BADARGS, "unknown command '%s' (see --help)", argv[1]);
}
