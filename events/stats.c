/* stats.c: the statistics of the measurement harness: summaries with LoadGen percentiles, the
 * LoadGen early-stopping percentile estimate, the order-statistic confidence interval of the
 * median, modified z-score outliers, throughput, the bootstrap interval of an interleaved
 * speedup, the VALID/INVALID verdict and the timing-loop planner.  Everything is pure and
 * deterministic (the bootstrap draws from a seeded tm_rng); docs/statistics.md gives the
 * definitions, the derivations and the worked examples that tests/events/test_stats.c checks. */
#include "events.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- sorting and order statistics ----

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static void sort_doubles(double *x, size_t n)
{
	qsort(x, n, sizeof(*x), cmp_double);
}

double stats_percentile_sorted(const double *sorted, size_t n, double p)
{
	/* LoadGen indexes its sorted latencies with sample_count * percentile converted to an
	 * integer, i.e. floor(n * p).  p = 1 would run past the end: clamp. */
	if (!(p > 0))
		return sorted[0];
	double pos = floor((double)n * p);
	size_t i = pos >= (double)n ? n - 1 : (size_t)pos;
	return sorted[i];
}

double stats_median_sorted(const double *sorted, size_t n)
{
	if (n % 2)
		return sorted[n / 2];
	return 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
}

static int check_samples(const double *x, size_t n, const char *what, tm_err *err)
{
	if (n == 0 || !x)
		return tm_err_set(err, TM_EINVAL, what, "stats: '%s' has no samples, need at least 1",
				  what);
	for (size_t i = 0; i < n; i++)
		if (!isfinite(x[i]))
			return tm_err_set(err, TM_EINVAL, what,
					  "stats: '%s' sample %zu is not finite", what, i);
	return 0;
}

static double *sorted_copy(const double *x, size_t n, const char *what, tm_err *err)
{
	double *s = malloc(n * sizeof(*s));
	if (!s) {
		tm_err_set(err, TM_ENOMEM, what, "stats: cannot allocate %zu samples for '%s'", n,
			   what);
		return NULL;
	}
	memcpy(s, x, n * sizeof(*s));
	sort_doubles(s, n);
	return s;
}

// ---- binomial distribution ----
/* The CDF is accumulated term by term in log space: log pmf(0) = n log(1 - q), then
 * pmf(i + 1) / pmf(i) = (n - i) / (i + 1) * q / (1 - q), in long double (64-bit mantissa on
 * x86-64).  Each step adds an absolute rounding error of about |log pmf(0)| * 5e-20 to the log,
 * so after k steps a term is off by a relative k n 5e-20 or so (5e-10 at n = 10^6, k = 10^5),
 * and no term underflows however large n is (0.9^10000 does in linear space). */

typedef struct binom_walk {
	size_t n;            /* trials */
	size_t i;            /* the current k */
	long double lratio;  /* log(q / (1 - q)) */
	long double lpmf;    /* log P(X = i) */
	long double lcdf;    /* log P(X <= i) */
} binom_walk;

static long double log_add(long double a, long double b)
{
	if (a < b) {
		long double t = a;
		a = b;
		b = t;
	}
	if (b == -INFINITY)
		return a;
	return a + log1pl(expl(b - a));
}

/* Requires 0 < q < 1. */
static void binom_walk_init(binom_walk *w, size_t n, double q)
{
	w->n = n;
	w->i = 0;
	w->lratio = logl(q) - log1pl(-(long double)q);
	w->lpmf = (long double)n * log1pl(-(long double)q);
	w->lcdf = w->lpmf;
}

/* How much of the lower tail a walk that only compares the CDF against a threshold may skip:
 * by Hoeffding's inequality P(X <= n q - a) <= exp(-2 a^2 / n), so with a = sqrt(50 n) the mass
 * up to the returned index is below e^-100 = 3.7e-44, far under any threshold 1 - c or
 * 1 - level that a double c < 1 can express (>= 1.1e-16).  0 when there is nothing to skip.
 * This turns the 500000 steps of a median interval at n = 10^6 into about 7000. */
static size_t binom_skip(size_t n, double q)
{
	double s = (double)n * q - sqrt(50.0 * (double)n);
	return s >= 1 ? (size_t)s : 0;
}

static long double lgamma_pos(long double x)
{
	int sign;  /* lgammal_r: no write to the global signgam */
	return lgammal_r(x, &sign);
}

/* Start at i0 with log P(X = i0) from log-gamma functions; the CDF then leaves out
 * P(X < i0), which the caller has bounded with binom_skip.  Requires 0 < q < 1, i0 <= n. */
static void binom_walk_init_at(binom_walk *w, size_t n, double q, size_t i0)
{
	binom_walk_init(w, n, q);
	if (i0 == 0)
		return;
	long double ln = (long double)n, li = (long double)i0;
	w->i = i0;
	w->lpmf = lgamma_pos(ln + 1) - lgamma_pos(li + 1) - lgamma_pos(ln - li + 1) +
		  li * logl(q) + (ln - li) * log1pl(-(long double)q);
	w->lcdf = w->lpmf;
}

/* Advance to i + 1; requires i < n. */
static void binom_walk_step(binom_walk *w)
{
	w->lpmf += logl((long double)(w->n - w->i) / (long double)(w->i + 1)) + w->lratio;
	w->i++;
	w->lcdf = log_add(w->lcdf, w->lpmf);
}

static double binom_walk_cdf(const binom_walk *w)
{
	double c = (double)expl(w->lcdf);
	return c > 1 ? 1 : c;
}

double stats_binom_cdf(size_t k, size_t n, double q)
{
	if (k >= n || !(q > 0))
		return 1;
	if (q >= 1)
		return 0;
	binom_walk w;
	binom_walk_init(&w, n, q);
	while (w.i < k)
		binom_walk_step(&w);
	return binom_walk_cdf(&w);
}

// ---- early stopping (MLPerf LoadGen) ----
/* A query is "overlatency" when it is slower than the latency L we want to claim as the
 * p-percentile.  If the true probability of overlatency were 1 - p or more, the count X of
 * overlatency queries among m would be at least Binomial(m, 1 - p) stochastically, so seeing
 * X <= t has probability at most P(Binomial(m, 1 - p) <= t).  When that is below 1 - c, the
 * claim "the p-percentile is at most L" holds with confidence c.  LoadGen counts the query at
 * the estimate itself among the t, so with n sorted samples and the largest passing t, the
 * estimate is sorted[n - t]. */

static bool es_args_ok(double p, double c)
{
	return p > 0 && p < 1 && c > 0 && c < 1;
}

/* P(Binomial(h + t, 1 - p) <= t) < 1 - c, exactly as LoadGen compares it. */
static bool es_passes(size_t h, size_t t, double p, double c)
{
	return stats_binom_cdf(t, h + t, 1 - p) < 1 - c;
}

size_t stats_es_min_passing(size_t t, double p, double c)
{
	if (!es_args_ok(p, c))
		return 0;
	/* The tail probability falls as h grows (more queries under the latency with the same t),
	 * so bracket the smallest passing h by doubling, then bisect.  h = 0 never passes: the
	 * probability is then 1. */
	const size_t cap = (size_t)1 << 40;
	size_t hi = 1;
	while (!es_passes(hi, t, p, c)) {
		if (hi >= cap)
			return 0;
		hi *= 2;
	}
	size_t lo = hi / 2;  /* fails (or is 0) */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (es_passes(mid, t, p, c))
			hi = mid;
		else
			lo = mid;
	}
	return hi;
}

int stats_es_compute(const double *sorted, size_t n, double p, double c, stats_es *out,
		     tm_err *err)
{
	memset(out, 0, sizeof(*out));
	out->n = n;
	out->p = p;
	out->confidence = c;
	if (!es_args_ok(p, c))
		return tm_err_set(err, TM_EINVAL, "early_stopping",
				  "stats: early stopping percentile %g and confidence %g must be in (0, 1)",
				  p, c);
	int rc = check_samples(sorted, n, "early_stopping", err);
	if (rc)
		return rc;
	out->min_queries = stats_es_min_passing(1, p, c) + 1;
	/* LoadGen tries t = 1, 2, ... and keeps the last t with n >= min_passing(t) + t.  For a
	 * fixed n that is P(Binomial(n, 1 - p) <= t) < 1 - c, which grows with t, so the passing
	 * t form a prefix and one walk up the CDF finds the largest. */
	size_t t = 0;
	if (n >= 2) {
		/* Every t up to the skipped tail passes: its CDF is below e^-100 < 1 - c. */
		binom_walk w;
		t = binom_skip(n, 1 - p);
		binom_walk_init_at(&w, n, 1 - p, t);
		while (w.i + 1 < n) {
			binom_walk_step(&w);
			if (!(binom_walk_cdf(&w) < 1 - c))
				break;
			t = w.i;
		}
	}
	if (t == 0) {
		out->index = n - 1;
		out->estimate = sorted[n - 1];
		return 0;
	}
	out->ok = true;
	out->overlatency = t;
	out->discarded = t - 1;
	out->index = n - t;
	out->estimate = sorted[n - t];
	return 0;
}

// ---- confidence interval of the median ----
/* X_(l) <= m <= X_(u) fails only if at least u samples are below the median m or at least
 * n - l + 1 are above it; with B ~ Binomial(n, 1/2) samples below m, the coverage of
 * [X_(l), X_(n-l+1)] is P(l <= B <= n - l) = 1 - 2 P(B <= l - 1). */

int stats_median_ci_compute(const double *sorted, size_t n, double level, stats_median_ci *out,
			    tm_err *err)
{
	memset(out, 0, sizeof(*out));
	out->n = n;
	out->level = level;
	if (!(level > 0 && level < 1))
		return tm_err_set(err, TM_EINVAL, "median_ci",
				  "stats: median interval level %g must be in (0, 1)", level);
	int rc = check_samples(sorted, n, "median_ci", err);
	if (rc)
		return rc;
	size_t l = 0;
	double cov = 0;
	/* w is at i = cand - 1 when rank cand is tried.  Ranks up to skip + 1 pass (coverage
	 * above 1 - 2e^-100), and skip + 1 <= n / 2 since sqrt(50 n) > 1. */
	binom_walk w;
	const size_t skip = binom_skip(n, 0.5);
	binom_walk_init_at(&w, n, 0.5, skip);
	for (size_t cand = skip + 1; cand <= n / 2; cand++) {
		if (cand > skip + 1)
			binom_walk_step(&w);
		double c = 1 - 2 * binom_walk_cdf(&w);
		if (c < level) {
			if (cand == 1)
				cov = c > 0 ? c : 0;
			break;
		}
		l = cand;
		cov = c;
	}
	if (l == 0) {
		out->lo_rank = 1;
		out->hi_rank = n;
		out->low = sorted[0];
		out->high = sorted[n - 1];
		out->coverage = cov;
		return 0;
	}
	out->exists = true;
	out->lo_rank = l;
	out->hi_rank = n - l + 1;
	out->low = sorted[l - 1];
	out->high = sorted[n - l];
	out->coverage = cov;
	return 0;
}

// ---- outliers (Iglewicz and Hoaglin) ----

int stats_outliers_find(const double *x, size_t n, size_t *idx, size_t idx_cap,
			stats_outliers *out, tm_err *err)
{
	memset(out, 0, sizeof(*out));
	int rc = check_samples(x, n, "outliers", err);
	if (rc)
		return rc;
	double *s = sorted_copy(x, n, "outliers", err);
	if (!s)
		return TM_ENOMEM;
	const double med = stats_median_sorted(s, n);
	double sum_ad = 0;
	for (size_t i = 0; i < n; i++) {
		s[i] = fabs(x[i] - med);
		sum_ad += s[i];
	}
	sort_doubles(s, n);
	out->median = med;
	out->mad = stats_median_sorted(s, n);
	out->mean_ad = sum_ad / (double)n;
	free(s);

	/* scale turns a deviation into a z-like score: 0.6745 / MAD (0.6745 is the 75th
	 * percentile of the standard normal, so E[MAD] = 0.6745 sigma for normal data), or
	 * 1 / (1.253314 MeanAD) when MAD = 0 (E[MeanAD] = sqrt(2 / pi) sigma = sigma / 1.253314). */
	double scale;
	if (out->mad > 0) {
		scale = 0.6745 / out->mad;
	} else {
		out->mad_zero = true;
		if (!(out->mean_ad > 0))
			return 0;  /* all samples equal: nothing stands out */
		scale = 1.0 / (1.253314 * out->mean_ad);
	}
	for (size_t i = 0; i < n; i++) {
		double m = scale * (x[i] - med);
		if (fabs(m) > STATS_OUTLIER_Z) {
			if (idx && out->count < idx_cap)
				idx[out->count] = i;
			out->count++;
			if (m < 0)
				out->low++;
			else
				out->high++;
		}
	}
	return 0;
}

// ---- summary ----

static int summary_sorted(const double *x, const double *s, size_t n, stats_summary *out,
			  tm_err *err)
{
	/* Two passes: the mean, then squared deviations from it (no cancellation). */
	double sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += x[i];
	out->n = n;
	out->mean = sum / (double)n;
	double ss = 0;
	for (size_t i = 0; i < n; i++) {
		double d = x[i] - out->mean;
		ss += d * d;
	}
	out->sd = n > 1 ? sqrt(ss / (double)(n - 1)) : 0;
	out->min = s[0];
	out->max = s[n - 1];
	out->median = stats_median_sorted(s, n);
	out->p90 = stats_percentile_sorted(s, n, 0.90);
	out->p95 = stats_percentile_sorted(s, n, 0.95);
	out->p99 = stats_percentile_sorted(s, n, 0.99);
	out->p999 = stats_percentile_sorted(s, n, 0.999);
	int rc = stats_es_compute(s, n, STATS_ES_PERCENTILE, STATS_ES_CONFIDENCE, &out->es, err);
	if (!rc)
		rc = stats_median_ci_compute(s, n, STATS_MEDIAN_CI_LEVEL, &out->median_ci, err);
	if (!rc)
		rc = stats_outliers_find(x, n, NULL, 0, &out->outliers, err);
	return rc;
}

int stats_summary_compute(const double *x, size_t n, stats_summary *out, tm_err *err)
{
	memset(out, 0, sizeof(*out));
	int rc = check_samples(x, n, "samples", err);
	if (rc)
		return rc;
	double *s = sorted_copy(x, n, "samples", err);
	if (!s)
		return TM_ENOMEM;
	rc = summary_sorted(x, s, n, out, err);
	free(s);
	return rc;
}

int stats_summary_compute_u64(const uint64_t *x, size_t n, stats_summary *out, tm_err *err)
{
	memset(out, 0, sizeof(*out));
	if (n == 0 || !x)
		return tm_err_set(err, TM_EINVAL, "samples",
				  "stats: 'samples' has no samples, need at least 1");
	double *d = malloc(n * sizeof(*d));
	if (!d)
		return tm_err_set(err, TM_ENOMEM, "samples",
				  "stats: cannot allocate %zu samples for 'samples'", n);
	for (size_t i = 0; i < n; i++)
		d[i] = (double)x[i];  /* exact below 2^53 ns (104 days) */
	int rc = stats_summary_compute(d, n, out, err);
	free(d);
	return rc;
}

double stats_throughput(double items, double seconds)
{
	if (!(seconds > 0) || !isfinite(seconds) || !isfinite(items))
		return 0;
	return items / seconds;
}

// ---- speedup of interleaved pairs ----

double stats_boot_tail(size_t g)
{
	/* t quantiles at 0.975 for 1 .. 29 degrees of freedom; 30 and beyond use the Cornish-Fisher
	 * expansion around the normal quantile to second order (within 0.001 of the exact value). */
	static const double t975[30] = {
		0, 12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624,
		2.306004, 2.262157, 2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450,
		2.119905, 2.109816, 2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658,
		2.063899, 2.059539, 2.055529, 2.051831, 2.048407, 2.045230,
	};
	if (g <= 1)
		return 0;
	double nu = (double)(g - 1), z = 1.959964;
	double z3 = z * z * z, z5 = z3 * z * z;
	double t = g - 1 < 30 ? t975[g - 1]
			      : z + (z3 + z) / (4 * nu) + (5 * z5 + 16 * z3 + 3 * z) / (96 * nu * nu);
	double zp = sqrt((double)g / nu) * t;
	return 0.5 * erfc(zp / sqrt(2.0));  /* Phi(-zp) */
}

/* Both speedups' input: resamples in range (0: the default), k pairs of block values each,
 * and every one of the k * block values of either side positive and finite (a bad one is
 * named as "<what> <index>"). */
static int speedup_check(const double *base, const double *sub, size_t k, size_t block,
			 const char *what, unsigned *resamples, tm_err *err)
{
	if (*resamples == 0)
		*resamples = STATS_BOOT_RESAMPLES;
	if (*resamples > 1000000)
		return tm_err_set(err, TM_EINVAL, "speedup",
				  "stats: %u bootstrap resamples, must be in [1, 1000000]", *resamples);
	if (k == 0 || !base || !sub)
		return tm_err_set(err, TM_EINVAL, "speedup",
				  "stats: speedup has no pairs, need at least 1");
	if (k > UINT32_MAX)
		return tm_err_set(err, TM_EINVAL, "speedup",
				  "stats: speedup has %zu pairs, at most %u", k, UINT32_MAX);
	if (block == 0 || k > SIZE_MAX / block)
		return tm_err_set(err, TM_EINVAL, "speedup",
				  "stats: speedup block of %zu queries, need 1 or more", block);
	for (size_t i = 0; i < k * block; i++)
		if (!(isfinite(base[i]) && base[i] > 0 && isfinite(sub[i]) && sub[i] > 0))
			return tm_err_set(err, TM_EINVAL, "speedup",
					  "stats: speedup %s %zu (%g, %g) must be positive and finite",
					  what, i, base[i], sub[i]);
	return 0;
}

/* The value and interval from g batch values of each side: value = sum(bb) / sum(bs), and
 * each resample draws g batches with replacement and takes the same ratio. */
static int speedup_boot(const double *bb, const double *bs, size_t g, size_t k,
			unsigned resamples, uint64_t seed, stats_speedup *out, tm_err *err)
{
	double sb = 0, ss = 0;
	for (size_t j = 0; j < g; j++) {
		sb += bb[j];
		ss += bs[j];
	}
	out->value = sb / ss;
	out->pairs = k;
	out->batches = g;
	out->resamples = resamples;
	out->seed = seed;

	double *r = malloc((size_t)resamples * sizeof(*r));
	if (!r)
		return tm_err_set(err, TM_ENOMEM, "speedup",
				  "stats: cannot allocate %u bootstrap resamples", resamples);
	tm_rng rng;
	tm_rng_seed(&rng, seed);
	for (unsigned b = 0; b < resamples; b++) {
		double rb = 0, rs = 0;
		for (size_t j = 0; j < g; j++) {
			uint32_t pick = tm_rng_below(&rng, (uint32_t)g);
			rb += bb[pick];
			rs += bs[pick];
		}
		r[b] = rb / rs;
	}
	sort_doubles(r, resamples);
	/* With B sorted resamples the interval leaves floor(tail * B) values out on each side:
	 * B = 2000 and 20 batches give r[31] and r[1968]. */
	size_t tail = (size_t)floor(stats_boot_tail(g) * resamples + 1e-9);
	out->ci_low = out->boot_low = r[tail];
	out->ci_high = out->boot_high = r[resamples - 1 - tail];
	free(r);
	return 0;
}

void stats_speedup_add_repro(stats_speedup *sp, double rel)
{
	if (!(rel > 0) || !(sp->value > 0) || !(sp->boot_low > 0))
		return;
	if (rel > 0.5)
		rel = 0.5;
	double r = 1.959964 * log1p(rel);
	double lo = log(sp->value / sp->boot_low), hi = log(sp->boot_high / sp->value);
	sp->ci_low = sp->value * exp(-sqrt(lo * lo + r * r));
	sp->ci_high = sp->value * exp(sqrt(hi * hi + r * r));
	sp->repro = rel;
}

int stats_speedup_compute(const double *base, const double *sub, size_t k, unsigned resamples,
			  uint64_t seed, stats_speedup *out, tm_err *err)
{
	memset(out, 0, sizeof(*out));
	int rc = speedup_check(base, sub, k, 1, "pair", &resamples, err);
	if (rc != 0)
		return rc;
	size_t g = k < STATS_BOOT_BATCHES ? k : STATS_BOOT_BATCHES;
	double bb[STATS_BOOT_BATCHES] = { 0 }, bs[STATS_BOOT_BATCHES] = { 0 };
	for (size_t j = 0; j < g; j++)
		for (size_t i = j * k / g; i < (j + 1) * k / g; i++) {
			bb[j] += base[i];
			bs[j] += sub[i];
		}
	out->statistic = STATS_SPEEDUP_SUM;
	return speedup_boot(bb, bs, g, k, resamples, seed, out, err);
}

/* The interquartile mean of x[0..n): the mean of the sorted values x[n/4] .. x[n - 1 - n/4]
 * (all of them for n < 4), sorting x. */
static double iqm_sorting(double *x, size_t n)
{
	sort_doubles(x, n);
	size_t lo = n / 4, hi = n - n / 4;
	double sum = 0;
	for (size_t i = lo; i < hi; i++)
		sum += x[i];
	return sum / (double)(hi - lo);
}

int stats_speedup_iqm_compute(const double *base, const double *sub, size_t k,
				 size_t block, unsigned resamples, uint64_t seed,
				 stats_speedup *out, tm_err *err)
{
	memset(out, 0, sizeof(*out));
	int rc = speedup_check(base, sub, k, block, "query", &resamples, err);
	if (rc != 0)
		return rc;
	size_t g = k < STATS_BOOT_BATCHES ? k : STATS_BOOT_BATCHES;
	size_t most = (k / g + 1) * block;
	double *tmp = malloc(most * sizeof(*tmp));
	if (!tmp)
		return tm_err_set(err, TM_ENOMEM, "speedup",
				  "stats: cannot allocate %zu values for the batch means", most);
	double bb[STATS_BOOT_BATCHES] = { 0 }, bs[STATS_BOOT_BATCHES] = { 0 };
	for (size_t j = 0; j < g; j++) {
		size_t from = j * k / g * block, m = ((j + 1) * k / g - j * k / g) * block;
		memcpy(tmp, base + from, m * sizeof(*tmp));
		bb[j] = iqm_sorting(tmp, m);
		memcpy(tmp, sub + from, m * sizeof(*tmp));
		bs[j] = iqm_sorting(tmp, m);
	}
	free(tmp);
	out->statistic = STATS_SPEEDUP_IQM;
	return speedup_boot(bb, bs, g, k, resamples, seed, out, err);
}

// ---- verdict ----

void stats_limits_default(stats_limits *lim)
{
	lim->min_count = 1024;
	lim->min_duration_s = 5;
	lim->min_pairs = 10;
	lim->max_speedup_rel_width = 0.10;
	lim->max_median_rel_width = 0.10;
}

static void verdict_add(stats_verdict *v, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void verdict_add(stats_verdict *v, const char *fmt, ...)
{
	v->valid = false;
	if (v->n_reasons >= STATS_MAX_REASONS)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(v->reasons[v->n_reasons++], STATS_REASON_LEN, fmt, ap);
	va_end(ap);
}

void stats_verdict_decide(const stats_verdict_in *in, const stats_limits *lim,
			  stats_verdict *out)
{
	stats_limits def;
	if (!lim) {
		stats_limits_default(&def);
		lim = &def;
	}
	memset(out, 0, sizeof(*out));
	out->valid = true;
	const char *unit = in->unit ? in->unit : "samples";

	if (in->count < lim->min_count)
		verdict_add(out, "only %zu %s, minimum %zu", in->count, unit, lim->min_count);
	if (!(in->duration_s >= lim->min_duration_s))
		verdict_add(out, "only %.3g s of measurement, minimum %.3g s", in->duration_s,
			    lim->min_duration_s);
	if (in->hit_max_duration)
		verdict_add(out, "stopped at the maximum duration after %.3g s with a minimum unmet",
			    in->duration_s);

	const stats_speedup *sp = in->speedup;
	if (sp) {
		if (sp->pairs < lim->min_pairs)
			verdict_add(out, "only %zu interleaved pairs, minimum %zu", sp->pairs,
				    lim->min_pairs);
		double w = sp->ci_high - sp->ci_low;
		if (lim->max_speedup_rel_width > 0 &&
		    !(sp->value > 0 && w <= lim->max_speedup_rel_width * sp->value))
			verdict_add(out, "speedup interval [%.4g, %.4g] is wider than %.4g%% of %.4g",
				    sp->ci_low, sp->ci_high, 100 * lim->max_speedup_rel_width,
				    sp->value);
	}

	const stats_median_ci *ci = in->median_ci;
	if (ci) {
		if (!ci->exists) {
			verdict_add(out, "no %.4g%% median interval exists with only %zu %s",
				    100 * ci->level, ci->n, unit);
		} else if (lim->max_median_rel_width > 0 &&
			   !(in->median > 0 &&
			     ci->high - ci->low <= lim->max_median_rel_width * in->median)) {
			verdict_add(out, "median interval [%.6g, %.6g] is wider than %.4g%% of %.6g",
				    ci->low, ci->high, 100 * lim->max_median_rel_width, in->median);
		}
	}

	const stats_es *es = in->es;
	if (es && !es->ok)
		verdict_add(out, "only %zu %s, early stopping p%.4g needs at least %zu",
			    es->n, unit, 100 * es->p, es->min_queries);
}

// ---- timing-loop planner ----

void stats_plan_init(stats_plan *p, size_t min_count, double min_duration_s,
		     double max_duration_s)
{
	memset(p, 0, sizeof(*p));
	p->min_count = min_count;
	p->min_duration_s = min_duration_s;
	p->max_duration_s = max_duration_s;
}

void stats_plan_add(stats_plan *p, double seconds)
{
	p->count++;
	if (seconds > 0)
		p->elapsed_s += seconds;
	if (p->done)
		return;
	if (p->count >= p->min_count && p->elapsed_s >= p->min_duration_s) {
		p->done = true;
	} else if (p->max_duration_s > 0 && p->elapsed_s >= p->max_duration_s) {
		p->done = true;
		p->hit_max = true;
	}
}

bool stats_plan_done(const stats_plan *p)
{
	return p->done;
}
