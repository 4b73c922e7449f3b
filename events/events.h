/* events.h: the public API of the events/ subsystem: the three events, the measurement harness
 * and its statistics, the config parser and validator, scoring, and the pieces tinymlperf-run
 * is built from.  Each module of events/ owns one section below, banner and prefix included;
 * everything here is linked into libtinymlperf.a next to the engine, whose header it includes
 * for tm_err, the tm_rng generator and the TM_E* codes.  docs/statistics.md explains the
 * statistics section with formulas, defaults, references and worked examples. */
#ifndef TM_EVENTS_H
#define TM_EVENTS_H

#include "engine.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

// ---- statistics (stats.c) ----
/* Pure, deterministic statistics over timing samples (nanoseconds, or any unit: nothing here
 * assumes one).  Functions that need sorted data say "sorted" in their name and expect
 * ascending order; the others copy and sort internally.  Functions that can fail return 0 or a
 * negative TM_E* code and fill err (may be NULL): empty input, NaN or infinite samples,
 * out-of-range parameters, or an allocation failure. */

#define STATS_ES_PERCENTILE 0.90    /* the early-stopping target percentile of the summary */
#define STATS_ES_CONFIDENCE 0.99    /* its confidence, as MLPerf LoadGen */
#define STATS_MEDIAN_CI_LEVEL 0.95  /* coverage of the median's confidence interval */
#define STATS_OUTLIER_Z 3.5         /* |modified z-score| above which a sample is flagged */
#define STATS_BOOT_RESAMPLES 2000   /* default bootstrap resamples for the speedup interval */
#define STATS_BOOT_LEVEL 0.95       /* coverage of the speedup's bootstrap interval */
#define STATS_BOOT_BATCHES 20       /* at most this many contiguous batches of pairs are resampled */

/* The LoadGen percentile: sorted[floor(n * p)] (0-based), clamped to sorted[n - 1]; p in
 * [0, 1].  E.g. n = 10, p = 0.9 gives sorted[9], the maximum.  n must be >= 1. */
double stats_percentile_sorted(const double *sorted, size_t n, double p);
/* The usual median: the middle element, or the mean of the two middle ones when n is even. */
double stats_median_sorted(const double *sorted, size_t n);

/* P(X <= k) for X ~ Binomial(n, q), summed in log space so it neither underflows (n = 10^6) nor
 * loses the tail; 1 when k >= n.  q in [0, 1]. */
double stats_binom_cdf(size_t k, size_t n, double q);

/* MLPerf LoadGen's early-stopping percentile estimate (single-stream).  With n queries, a
 * target percentile p and confidence c, t is the largest number of "overlatency" queries
 * (t >= 1) for which P(Binomial(n, 1 - p) <= t) < 1 - c; the estimate is sorted[n - t], i.e.
 * the t - 1 slowest queries are discarded.  If even t = 1 fails there are not enough queries
 * (ok = false, estimate = the maximum). */
typedef struct stats_es {
	size_t n;            /* samples */
	bool ok;             /* n >= min_queries: the estimate is a valid early-stopping bound */
	size_t min_queries;  /* LoadGen's minimum: the smallest n for which t = 1 passes */
	size_t overlatency;  /* t, queries at or above the estimate (0 when !ok) */
	size_t discarded;    /* t - 1 slowest queries ignored (0 when !ok) */
	size_t index;        /* 0-based index of the estimate in the sorted samples */
	double estimate;     /* sorted[index], sample units */
	double p, confidence;
} stats_es;

/* The smallest h such that P(Binomial(h + t, 1 - p) <= t) < 1 - c: with h queries under the
 * latency and t over it, the true p-quantile is below that latency with confidence c.
 * stats_es_min_passing(0, 0.9, 0.99) = 44, (1, 0.9, 0.99) = 63.  0 for invalid p or c. */
size_t stats_es_min_passing(size_t t, double p, double c);
int stats_es_compute(const double *sorted, size_t n, double p, double c, stats_es *out,
		     tm_err *err);

/* Distribution-free confidence interval of the median from order statistics: the largest rank
 * l (1-based) with P(l <= B <= n - l) >= level, B ~ Binomial(n, 1/2), and u = n - l + 1; the
 * interval is [sorted[l - 1], sorted[u - 1]].  For level 0.95 it exists from n = 6 on; below
 * that exists = false and the interval is [min, max] with its (too small) coverage. */
typedef struct stats_median_ci {
	size_t n;         /* samples */
	bool exists;      /* some symmetric pair of ranks reaches the level */
	size_t lo_rank;   /* l, 1-based */
	size_t hi_rank;   /* u = n - l + 1, 1-based */
	double low;       /* sorted[l - 1], sample units */
	double high;      /* sorted[u - 1], sample units */
	double coverage;  /* exact P(l <= B <= n - l), in [0, 1] */
	double level;     /* the level asked for */
} stats_median_ci;

int stats_median_ci_compute(const double *sorted, size_t n, double level, stats_median_ci *out,
			    tm_err *err);

/* Outliers by the modified z-score of Iglewicz and Hoaglin: M_i = 0.6745 (x_i - median) / MAD,
 * MAD = median |x_i - median|, flagged when |M_i| > 3.5.  When MAD = 0 the mean absolute
 * deviation stands in: M_i = (x_i - median) / (1.253314 MeanAD); when that is 0 too (all
 * samples equal) nothing is flagged.  Samples are flagged, never removed. */
typedef struct stats_outliers {
	size_t count;      /* flagged samples */
	size_t low, high;  /* of which below / above the median */
	double median;     /* sample units */
	double mad;        /* median absolute deviation, sample units */
	double mean_ad;    /* mean absolute deviation around the median (used when mad == 0) */
	bool mad_zero;     /* the MeanAD fallback was used */
} stats_outliers;

/* x in its original order; idx (may be NULL) receives the 0-based indices of flagged samples in
 * ascending order, at most idx_cap of them (out->count is the full count). */
int stats_outliers_find(const double *x, size_t n, size_t *idx, size_t idx_cap,
			stats_outliers *out, tm_err *err);

/* Everything the result's latency{} object reports about one set of samples. */
typedef struct stats_summary {
	size_t n;
	double mean, sd;        /* sd: sample standard deviation (n - 1); 0 when n == 1 */
	double min, max, median;
	double p90, p95, p99, p999;  /* LoadGen percentiles (stats_percentile_sorted) */
	stats_es es;                 /* STATS_ES_PERCENTILE at STATS_ES_CONFIDENCE */
	stats_median_ci median_ci;   /* STATS_MEDIAN_CI_LEVEL */
	stats_outliers outliers;     /* STATS_OUTLIER_Z */
} stats_summary;

int stats_summary_compute(const double *x, size_t n, stats_summary *out, tm_err *err);
int stats_summary_compute_u64(const uint64_t *x, size_t n, stats_summary *out, tm_err *err);

/* items / seconds; 0 when seconds <= 0 or either is not finite. */
double stats_throughput(double items, double seconds);

/* Speedup of k interleaved pairs (baseline block time base[i], submission block time sub[i],
 * same work in both, in time order): value = sum(base) / sum(sub).  Its interval is a
 * bootstrap over g = min(k, STATS_BOOT_BATCHES) contiguous batches of pairs (batch j holds pairs
 * floor(j k / g) .. floor((j + 1) k / g) - 1), so a slow drift of the machine that spans many
 * pairs widens the interval instead of being averaged away as if every pair were independent;
 * with k <= STATS_BOOT_BATCHES each batch is one pair.  B resamples draw g batches with
 * replacement by a tm_rng seeded with seed, each giving sum(base*) / sum(sub*); the interval is
 * the expanded percentile interval at STATS_BOOT_LEVEL (stats_boot_tail): with few batches the
 * plain percentile interval is too narrow.  The same inputs and seed give the same interval bit
 * for bit.  resamples 0 means STATS_BOOT_RESAMPLES; at most 1000000. */
typedef enum stats_speedup_stat {
	STATS_SPEEDUP_SUM = 0,   /* batch values are total times (throughput events) */
	STATS_SPEEDUP_IQM,       /* batch values are interquartile means of query times
				  * (latency events) */
} stats_speedup_stat;

typedef struct stats_speedup {
	double value;        /* sum over batches of base / of sub; > 1: the submission is faster */
	stats_speedup_stat statistic;
	double ci_low;       /* expanded percentile bootstrap interval */
	double ci_high;
	size_t pairs;        /* k */
	size_t batches;      /* g: the units resampled */
	double boot_low;     /* the bootstrap interval alone (run-internal variation) */
	double boot_high;
	double repro;        /* relative standard uncertainty added for run-to-run spread */
	unsigned resamples;  /* B actually used */
	uint64_t seed;
} stats_speedup;

/* The fraction of the sorted bootstrap ratios left out on each side of the interval for g
 * resampled units at STATS_BOOT_LEVEL (two-sided alpha = 0.05): the expanded percentile
 * interval (Hesterberg 2015) uses Phi(-sqrt(g / (g - 1)) * t(0.975, g - 1)) instead of 0.025,
 * which widens the interval by the small-sample factor a t-interval has (g = 10: 0.00856;
 * g = 20: 0.01588; large g: 0.025).  g <= 1 gives 0 (the interval is the range). */
double stats_boot_tail(size_t g);

/* Add a Type B term (GUM) for what one run cannot see: a process's speed differs from the
 * next process's by a relative standard uncertainty rel (the Sprint's INT8 MLP: 0.26% over
 * eleven runs, docs/statistics.md).  On the log scale each half-width of the bootstrap
 * interval becomes sqrt(h^2 + (z ln(1 + rel))^2) with z = 1.959964; rel = 0 changes nothing.
 * rel must be in [0, 0.5]. */
#define STATS_SPEEDUP_REPRO_DEFAULT 0.005
void stats_speedup_add_repro(stats_speedup *sp, double rel);

/* The speedup of k pairs (block times of base and sub) with its bootstrap interval over
 * min(k, STATS_BOOT_BATCHES) contiguous batches; ci and boot hold the same interval until
 * stats_speedup_add_repro widens ci. */
int stats_speedup_compute(const double *base, const double *sub, size_t k, unsigned resamples,
			  uint64_t seed, stats_speedup *out, tm_err *err);
/* The same from the queries themselves: base and sub hold k * block query times each, pair i
 * being queries [i * block, (i + 1) * block) of either side.  A batch's value is the
 * interquartile mean of its queries (the mean of the middle half) instead of their sum, so a
 * stretch of host noise, which only ever adds time and adds the same nanoseconds to a 1.5 us
 * query as to an 87 us one, moves the speedup only when it slows more than a quarter of a
 * batch's queries.  Unlike a median it is not held to the clock's ticks (10 ns on this VM,
 * 0.7% of a 1.5 us query).  Same errors. */
int stats_speedup_iqm_compute(const double *base, const double *sub, size_t k,
				 size_t block, unsigned resamples, uint64_t seed,
				 stats_speedup *out, tm_err *err);

/* The VALID/INVALID decision.  Thresholds live in stats_limits (stats_limits_default fills the
 * documented defaults); the measurement's facts in stats_verdict_in.  A width threshold <= 0
 * disables that check; a NULL pointer in stats_verdict_in skips the checks about it. */
typedef struct stats_limits {
	size_t min_count;              /* default 1024 (the harness uses 5 for offline passes) */
	double min_duration_s;         /* seconds, default 5 */
	size_t min_pairs;              /* interleaved pairs behind a speedup, default 10 */
	double max_speedup_rel_width;  /* (ci_high - ci_low) / value, default 0.10 */
	double max_median_rel_width;   /* (ci high - ci low) / median, default 0.10 */
} stats_limits;

void stats_limits_default(stats_limits *lim);

typedef struct stats_verdict_in {
	const char *unit;                  /* what count counts: "queries", "passes"; NULL: "samples" */
	size_t count;                      /* measurements taken */
	double duration_s;                 /* seconds of measurement */
	bool hit_max_duration;             /* the planner stopped at its cap (stats_plan.hit_max) */
	const stats_speedup *speedup;      /* NULL: no speedup check */
	const stats_median_ci *median_ci;  /* NULL: no median check */
	double median;                     /* the median the interval belongs to (with median_ci) */
	const stats_es *es;                /* NULL: no early-stopping check */
} stats_verdict_in;

#define STATS_MAX_REASONS 8
#define STATS_REASON_LEN 160

typedef struct stats_verdict {
	bool valid;                                       /* no reasons */
	int n_reasons;
	char reasons[STATS_MAX_REASONS][STATS_REASON_LEN];  /* lowercase, one fact each */
} stats_verdict;

/* lim NULL means the defaults. */
void stats_verdict_decide(const stats_verdict_in *in, const stats_limits *lim,
			  stats_verdict *out);

/* The timing-loop planner: feed it each measurement's duration; it is done once both minimums
 * are met (at least one measurement), or when the elapsed time reaches max_duration_s
 * (hit_max = true if the minimums were not met then).  max_duration_s <= 0: no cap. */
typedef struct stats_plan {
	size_t min_count;       /* measurements */
	double min_duration_s;  /* seconds */
	double max_duration_s;  /* seconds, <= 0 for no cap */
	size_t count;           /* measurements so far */
	double elapsed_s;       /* seconds so far (sum of what stats_plan_add was given) */
	bool done;
	bool hit_max;           /* stopped by the cap with a minimum unmet */
} stats_plan;

void stats_plan_init(stats_plan *p, size_t min_count, double min_duration_s,
		     double max_duration_s);
void stats_plan_add(stats_plan *p, double seconds);
bool stats_plan_done(const stats_plan *p);

// ---- measurement harness (harness.c) ----
/* The timed loop of DESIGN.md: warm-up (not counted), then the submission and the baseline
 * alternate in blocks until both the minimum count and the minimum duration of the submission's
 * measurements are met (or the maximum duration is reached).  Every query is timed with
 * CLOCK_MONOTONIC; each block of the submission and the baseline block after it form one pair
 * for the speedup.  The workload decides what a query is: one image (single-stream), one pass
 * over the test set (offline), one prompt (generation). */

typedef struct hx_workload {
	void (*query)(void *arg, int64_t i);  /* run query number i (0, 1, 2, ...) */
	void *arg;
} hx_workload;

typedef struct hx_opts {
	size_t min_count;        /* submission queries, default 1024 */
	double min_duration_s;   /* seconds of submission queries, default 5 */
	double max_duration_s;   /* cap on the whole loop incl. baseline, default 60 */
	size_t warmup_count;     /* warm-up queries of each workload, default 32 */
	double warmup_s;         /* and at least this long, default 0.2 */
	size_t block;            /* queries per block, default 32 */
	size_t rewarm;           /* untimed queries before each block of either workload, so a
				  * block does not start cold from the other's (default 0) */
	bool align;              /* after warm-up both workloads continue from the same query
				  * number, so the blocks of a pair cover the same items (default
				  * false) */
	/* Called after every block pair with the submission's queries and seconds so far and
	 * the loop's elapsed seconds (progress reports); NULL: none (default). */
	void (*on_block)(void *arg, size_t count, double sub_s, double elapsed_s);
	void *on_block_arg;
} hx_opts;

typedef struct hx_series {
	double *ns;              /* (n) per-query nanoseconds, in order */
	size_t n, cap;
} hx_series;

typedef struct hx_result {
	hx_series sub, base;     /* per-query times */
	double *pair_sub_s;      /* (n_pairs) block seconds of the submission */
	double *pair_base_s;     /* (n_pairs) block seconds of the baseline after it */
	size_t n_pairs, cap_pairs;
	double sub_elapsed_s;    /* seconds spent in submission queries */
	double elapsed_s;        /* seconds of the whole loop (without warm-up) */
	bool hit_max;            /* stopped by max_duration_s with a minimum unmet */
} hx_result;

void hx_opts_default(hx_opts *o);
/* Measure sub against base (base may be NULL: the submission alone, no pairs). */
int hx_measure(const hx_opts *o, const hx_workload *sub, const hx_workload *base,
	       hx_result *out, tm_err *err);
void hx_result_release(hx_result *r);

// ---- events (event.c) ----
/* The three events as table rows (STYLE: tables over switch ladders): everything a page, the
 * validator and the worker need to know about an event comes from here. */

typedef enum ev_id {
	EV_MLP_SPRINT = 0,
	EV_CNN_MARATHON = 1,
	EV_TRANSFORMER_DECATHLON = 2,
	EV_COUNT
} ev_id;

typedef enum ev_scenario {
	EV_SCENARIO_SINGLE_STREAM = 0,  /* one query at a time; p90 latency */
	EV_SCENARIO_OFFLINE = 1,        /* the whole test set per pass; items per second */
	EV_SCENARIO_GENERATION = 2,     /* greedy decoding of every held-out prompt; tokens/s */
} ev_scenario;

typedef struct ev_event {
	ev_id id;
	const char *name;            /* "mlp_sprint" */
	const char *title;           /* "MLP Sprint" */
	const char *dataset;         /* what the data is and where it comes from */
	const char *reference;       /* the reference model in words */
	ev_scenario scenario;
	const char *scenario_text;   /* what one query / pass is */
	const char *primary_metric;  /* "p90 latency per query (ns)" */
	const char *quality_metric;  /* "top-1 accuracy on the 10k test images" */
	double closed_gate;          /* closed division: quality >= closed_gate * reference */
	double open_gate;            /* open division: quality >= open_gate * reference */
} ev_event;

const ev_event *ev_event_at(int i);              /* 0 <= i < EV_COUNT, else NULL */
const ev_event *ev_event_find(const char *name); /* NULL when unknown */
/* "mlp_sprint, cnn_marathon, transformer_decathlon", for messages. */
const char *ev_event_names(void);

// ---- config (config.c) ----
/* Config v1 (docs/config.md, docs/config.schema.json): parsed with cJSON and validated
 * completely before anything runs.  Every problem is reported, not just the first, each with
 * the field's path, the value and the allowed range. */

#define CFG_MAX_ERRORS 32
#define CFG_MAX_BYTES (256 * 1024)   /* a config document larger than this is refused */

typedef struct cfg_error {
	char field[96];   /* "optimize.prune.sparsity"; "" for the document itself */
	char msg[320];    /* "'optimize.prune.sparsity' is 1.5, must be in [0, 0.99]" */
} cfg_error;

typedef struct cfg_errors {
	int n;                         /* errors recorded (at most CFG_MAX_ERRORS) */
	int dropped;                   /* errors past the cap, counted only */
	bool over_limit;               /* at least one error is a resource limit (exit code 3) */
	cfg_error e[CFG_MAX_ERRORS];
} cfg_errors;

/* Resource limits checked before anything runs; the daemon can lower them. */
typedef struct cfg_limits {
	int64_t max_params;            /* parameters of the model */
	int64_t max_flops;             /* FLOPs per inference (one image, or one token) */
	int64_t max_memory_bytes;      /* estimated peak memory of the worker */
	double max_train_minutes;      /* training budget of the open division */
} cfg_limits;

void cfg_limits_default(cfg_limits *lim);

typedef enum cfg_calibration { CFG_CALIB_MINMAX = 0, CFG_CALIB_PERCENTILE = 1 } cfg_calibration;
typedef enum cfg_optimizer { CFG_OPT_SGD = 0, CFG_OPT_ADAM = 1, CFG_OPT_ADAMW = 2 } cfg_optimizer;

typedef struct cfg_config {
	const ev_event *event;
	bool open;                     /* division: open (true) or closed */
	char name[72];                 /* entry name, 0..64 bytes of UTF-8, shown verbatim */

	/* model (open division; closed uses the reference) */
	int n_hidden;                  /* MLP */
	int hidden[8];
	int c1, c2;                    /* CNN channels */
	int context, d_model, heads, layers, ffn;  /* transformer */

	/* train (open division) */
	int epochs;
	double lr;
	int batch;
	int64_t seed;
	cfg_optimizer optimizer;
	double train_minutes;          /* transformer wall-clock budget */

	/* optimize */
	char kernels[16];              /* auto, portable, avx2, avx512 */
	int threads;
	bool quantize;
	bool per_channel;              /* granularity per_channel (true) or per_tensor */
	int calibration_samples;
	cfg_calibration calibration;
	double calibration_percentile; /* percentile calibration: e.g. 99.99 */
	bool prune;
	double sparsity;               /* fraction of weights (or neurons/filters/heads) removed */
	bool structured;
	bool prune_global;             /* unstructured: one global threshold instead of per layer */
	int finetune_epochs;
	bool kv_cache;

	int batch_size;                /* CNN Marathon: images per batch */

	/* derived by the validator */
	uint64_t given;                /* bit i: row i of the field table appeared in the document */
	int64_t params;                /* parameters of the model before optimization */
	int64_t flops;                 /* FLOPs per inference */
	int64_t memory_bytes;          /* estimated peak memory */
} cfg_config;

/* Parse and validate json (len bytes, need not be NUL-terminated).  Returns 0, TM_EINVAL
 * (errors in errs) or TM_ELIMIT (a resource limit; errs->over_limit).  lim may be NULL for
 * the defaults. */
int cfg_parse(const char *json, size_t len, const cfg_limits *lim, cfg_config *out,
	      cfg_errors *errs);
/* Defaults for an event (the closed-division baseline-equivalent config). */
void cfg_defaults(cfg_config *c, const ev_event *ev);
/* One message per line ("field: message"), for stderr and tests. */
void cfg_errors_print(const cfg_errors *errs, FILE *out);

// ---- sandbox (sandbox.c) ----
/* The worker's isolation (DESIGN.md "Workers, isolation, scale"): resource limits with
 * setrlimit, applied first, then, once data and weights are loaded and the threads exist,
 * PR_SET_NO_NEW_PRIVS and a libseccomp allow-list that kills the process on anything else.
 * Hitting a limit ends the worker with exit code 3 and one line on stderr: "cpu time limit of N
 * s reached" (SIGXCPU) or "memory limit of N MiB reached" (an allocation that failed under
 * RLIMIT_AS; sbx_oom_exit for the paths we control, an abort after ENOMEM for the engine's
 * small tm_xmalloc allocations).  docs/results.md lists the allowed system calls. */

#define SBX_EXIT_LIMIT 3

typedef struct sbx_limits {
	int64_t memory_mb;     /* RLIMIT_AS, MiB; 0: unlimited */
	int64_t cpu_s;         /* RLIMIT_CPU soft limit, seconds (hard: +5 s); 0: unlimited */
	int64_t files;         /* RLIMIT_NOFILE; 0: unchanged */
	int64_t fsize_mb;      /* RLIMIT_FSIZE, MiB; 0: unlimited */
} sbx_limits;

/* setrlimit for every field, RLIMIT_CORE 0, the SIGXCPU handler and the allocation-failure
 * report.  Not under AddressSanitizer, whose shadow mappings exceed any RLIMIT_AS: the memory
 * limit is then recorded for messages but not set (sbx_memory_limit_enforced says which). */
int sbx_limits_apply(const sbx_limits *l, tm_err *err);
bool sbx_memory_limit_enforced(void);
/* PR_SET_NO_NEW_PRIVS and the seccomp allow-list (default action: kill the process). */
int sbx_seccomp_apply(tm_err *err);
/* Report "memory limit of N MiB reached" (or "out of memory" without a limit) on stderr and
 * _exit(3).  For allocation failures the caller detected. */
void sbx_oom_exit(const char *what) __attribute__((noreturn));
/* malloc that ends the worker cleanly through sbx_oom_exit when it fails. */
void *sbx_malloc(size_t n);
void *sbx_realloc(void *p, size_t n);

/* A CPU set of at most SBX_MAX_CPUS CPUs, parsed from a list ("1", "0,2", "2-3"). */
#define SBX_MAX_CPUS 1024
typedef struct sbx_cpus {
	uint64_t mask[SBX_MAX_CPUS / 64];  /* bit i: CPU i */
	int count;                         /* CPUs in the set */
	char text[128];                    /* canonical list: "1", "0,2-3" */
} sbx_cpus;

/* Fails with TM_EINVAL on a malformed or empty list or a CPU >= SBX_MAX_CPUS. */
int sbx_cpus_parse(const char *list, sbx_cpus *out, tm_err *err);
/* sched_setaffinity of the calling thread (threads created later inherit it). */
int sbx_cpus_apply(const sbx_cpus *cpus, tm_err *err);
/* The calling thread's current affinity (sched_getaffinity). */
int sbx_cpus_current(sbx_cpus *out, tm_err *err);

/* The test hook (tinymlperf-run run --sandbox-test ACTION): do something the sandbox must stop
 * ("socket", "connect", "execve", "fork", "open-write", "alloc", "spin").  Returns only when
 * the action was not stopped (0), or TM_EINVAL for an unknown action. */
int sbx_test_action(const char *action, tm_err *err);
const char *sbx_test_actions(void);  /* "socket, connect, ..." for --help */

// ---- run (run.c) ----
/* `tinymlperf-run run CONFIG.json` (DESIGN.md "How a submission flows", docs/results.md):
 * validate the config, apply the limits, load the data and the weights (closed: the reference
 * weights; open: train the config's architecture with its recipe), apply the sandbox, build
 * the baseline (reference model, FP32, portable kernels, one thread, no cache) and the
 * submission (tm_infer / tm_tf_infer with the config's optimizations), measure quality on the
 * full held-out test set for both, time them interleaved (hx_measure), and print the result.
 * Output on o->out: JSON lines (progress, then the result) with json, else stage lines, a
 * progress bar on a terminal and a result table.  Exit codes: RUN_EXIT_*. */

#define RUN_EXIT_OK 0
#define RUN_EXIT_CONFIG 2     /* invalid config or arguments */
#define RUN_EXIT_LIMIT 3      /* a resource limit: config over a limit, RLIMIT_AS, RLIMIT_CPU */
#define RUN_EXIT_INTERNAL 4   /* missing weights or data, a failed engine call */

#define RUN_TIMINGS_MAX 20000 /* values per series in the result's timings (subsampled) */

typedef struct run_opts {
	const char *config_path;     /* for messages */
	const char *data_dir;        /* DATA: models/EVENT.safetensors ("./var") */
	const char *dataset_dir;     /* Fashion-MNIST directory, NULL: TM_FMNIST_DIR */
	bool json;                   /* JSON lines (the daemon's protocol) */
	bool tty;                    /* human output with a progress bar */
	int64_t submission;          /* the daemon's submission id, < 0: null */
	size_t min_count;            /* timed queries at least, 0: the event's default */
	double min_duration_s;       /* < 0: the event's default */
	double max_duration_s;       /* < 0: the event's default; 0: no cap */
	size_t warmup_count;         /* warm-up queries of each side, 0: the event's default */
	sbx_limits limits;
	bool have_cpus;              /* pin to cpus (--cpus) */
	sbx_cpus cpus;
	bool sandbox;                /* seccomp after loading (--no-sandbox clears it) */
	const char *sandbox_test;    /* test hook: an action of sbx_test_action, NULL: none */
	int max_test_items;          /* test hook: first N test items only (result INVALID), 0: all */
	uint64_t seed;               /* query order and bootstrap (1) */
	double speedup_repro;        /* stats_speedup_add_repro's rel (STATS_SPEEDUP_REPRO_DEFAULT) */
	int result_fd;               /* also write the result object here, -1: no */
	FILE *out;                   /* stdout */
} run_opts;

void run_opts_default(run_opts *o);

/* Per-event timing defaults (docs/results.md): MLP 1024 images and 1 s in blocks of 32; CNN
 * 10 passes and 5 s, one pass per block, one warm-up pass; Decathlon 100 prompts and no
 * minimum duration in blocks of 10 (one prompt per task), items aligned between the pair's
 * blocks.  The cap is 120 s (CNN 600 s, Decathlon 300 s). */
void run_event_timing(ev_id id, hx_opts *h);

/* Run the config text (len bytes); returns the exit code.  Errors go to stderr as one line. */
int run_config(const run_opts *o, const char *config, size_t len);

#endif
