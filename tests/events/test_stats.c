/* test_stats.c: Check suite of events/stats.c.  Every expected number is justified next to it:
 * by hand arithmetic, by an independent slow computation inside the test (Pascal's triangle in
 * long double, exact 64-bit integer sums, a literal transcription of LoadGen's search loop), or
 * by a value computed once at development time with python3's exact rational arithmetic
 * (fractions.Fraction and math.comb: P(X <= k) = sum(Fraction(comb(n, i)) * q**i *
 * (1 - q)**(n - i) for i in range(k + 1)), no floating point), quoted where it is used.  The
 * worked examples of docs/statistics.md are the cases below. */
#include "tests.h"
#include "events.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// ---- independent references ----

/* P(X <= k), X ~ Binomial(n, q), n <= 300: binomial coefficients from Pascal's triangle and
 * powl, summed term by term in long double.  Shares nothing with stats.c's log-space walk. */
static long double slow_binom_cdf(int k, int n, long double q)
{
	static long double row[301];
	ck_assert_int_le(n, 300);
	for (int j = 0; j <= n; j++)
		row[j] = 0;
	row[0] = 1;
	for (int r = 1; r <= n; r++)
		for (int j = r; j > 0; j--)
			row[j] += row[j - 1];
	long double s = 0;
	for (int i = 0; i <= k && i <= n; i++)
		s += row[i] * powl(q, i) * powl(1 - q, n - i);
	return s;
}

/* LoadGen's find_min_passing by linear scan with the slow CDF: smallest h >= 1 with
 * P(Binomial(h + t, 1 - p) <= t) < 1 - c (LoadGen's tolerance d is 0). */
static int slow_min_passing(int t, double p, double c)
{
	for (int h = 1; h + t <= 300; h++)
		if (slow_binom_cdf(t, h + t, 1 - (long double)p) < (long double)(1 - c))
			return h;
	return -1;
}

static void fill_iota(double *x, size_t n)
{
	for (size_t i = 0; i < n; i++)
		x[i] = (double)i;
}

// ---- percentiles and summary ----

START_TEST(test_summary_n1_n2)
{
	stats_summary s;
	double one[1] = { 42 };
	ck_assert_int_eq(stats_summary_compute(one, 1, &s, NULL), 0);
	/* One sample: every location statistic is that sample; sd is defined as 0 for n = 1. */
	ck_assert_uint_eq(s.n, 1);
	ck_assert_double_eq(s.mean, 42);
	ck_assert_double_eq(s.sd, 0);
	ck_assert_double_eq(s.min, 42);
	ck_assert_double_eq(s.max, 42);
	ck_assert_double_eq(s.median, 42);
	ck_assert_double_eq(s.p90, 42);
	ck_assert_double_eq(s.p999, 42);
	/* One query is far below LoadGen's 64: no early-stopping estimate; n < 6: no median CI. */
	ck_assert(!s.es.ok);
	ck_assert_uint_eq(s.es.min_queries, 64);
	ck_assert(!s.median_ci.exists);

	double two[2] = { 20, 10 };
	ck_assert_int_eq(stats_summary_compute(two, 2, &s, NULL), 0);
	/* mean (10+20)/2 = 15; sd = sqrt(((10-15)^2 + (20-15)^2) / (2-1)) = sqrt(50). */
	ck_assert_double_eq(s.mean, 15);
	ck_assert_double_eq_tol(s.sd, sqrt(50.0), 1e-12);
	ck_assert_double_eq(s.min, 10);
	ck_assert_double_eq(s.max, 20);
	/* Even n: the median averages the two middle values. */
	ck_assert_double_eq(s.median, 15);
	/* LoadGen percentile index floor(2 * 0.9) = 1 -> 20; floor(2 * 0.5) = 1 -> 20 too. */
	ck_assert_double_eq(s.p90, 20);
	ck_assert_double_eq(stats_percentile_sorted((double[]){ 10, 20 }, 2, 0.5), 20);
	/* floor(2 * 0.49) = 0 -> 10. */
	ck_assert_double_eq(stats_percentile_sorted((double[]){ 10, 20 }, 2, 0.49), 10);
}
END_TEST

START_TEST(test_summary_n10)
{
	/* 1..10 in a scrambled order: the summary must not depend on the order. */
	double x[10] = { 7, 3, 10, 1, 9, 2, 8, 5, 4, 6 };
	stats_summary s;
	ck_assert_int_eq(stats_summary_compute(x, 10, &s, NULL), 0);
	ck_assert_double_eq(s.mean, 5.5);                 /* 55 / 10 */
	/* sum (i - 5.5)^2 for i = 1..10 = 2 (0.25 + 2.25 + 6.25 + 12.25 + 20.25) = 82.5;
	 * sd = sqrt(82.5 / 9) = 3.0276503540974917. */
	ck_assert_double_eq_tol(s.sd, sqrt(82.5 / 9), 1e-12);
	ck_assert_double_eq(s.median, 5.5);               /* (5 + 6) / 2 */
	/* LoadGen indices: floor(10 * 0.9) = 9, floor(9.5) = 9, floor(9.9) = 9, floor(9.99) = 9:
	 * all the maximum.  Nearest-rank (ceil(p n) - 1 = 8) would give 9 for p90: we follow
	 * LoadGen, see docs/statistics.md. */
	ck_assert_double_eq(s.p90, 10);
	ck_assert_double_eq(s.p95, 10);
	ck_assert_double_eq(s.p99, 10);
	ck_assert_double_eq(s.p999, 10);
	ck_assert_double_eq(s.min, 1);
	ck_assert_double_eq(s.max, 10);
	/* Median CI for n = 10: ranks 2 and 9 (see test_median_ci_ranks) -> values 2 and 9. */
	ck_assert(s.median_ci.exists);
	ck_assert_double_eq(s.median_ci.low, 2);
	ck_assert_double_eq(s.median_ci.high, 9);
	/* Uniform spacing: median 5.5, MAD = median of |i - 5.5| = median{0.5,0.5,1.5,1.5,...,4.5,
	 * 4.5} = 2.5; the largest score is 0.6745 * 4.5 / 2.5 = 1.21 < 3.5: no outliers. */
	ck_assert_double_eq(s.outliers.mad, 2.5);
	ck_assert_uint_eq(s.outliers.count, 0);
}
END_TEST

START_TEST(test_summary_n1000)
{
	/* 1..1000 in the order (7 i mod 1000) + 1: 7 is coprime with 1000, so a permutation. */
	double x[1000];
	for (int i = 0; i < 1000; i++)
		x[i] = (double)((7 * i) % 1000 + 1);
	stats_summary s;
	ck_assert_int_eq(stats_summary_compute(x, 1000, &s, NULL), 0);
	ck_assert_double_eq(s.mean, 500.5);        /* (1 + 1000) / 2 */
	/* The sample variance of 1..n is n (n + 1) / 12: sqrt(1000 * 1001 / 12) = 288.819436... */
	ck_assert_double_eq_tol(s.sd, sqrt(1000.0 * 1001.0 / 12.0), 1e-9);
	ck_assert_double_eq(s.median, 500.5);      /* (500 + 501) / 2 */
	/* sorted[i] = i + 1; LoadGen indices floor(1000 p): 900, 950, 990, 999. */
	ck_assert_double_eq(s.p90, 901);
	ck_assert_double_eq(s.p95, 951);
	ck_assert_double_eq(s.p99, 991);
	ck_assert_double_eq(s.p999, 1000);
	/* Early stopping at n = 1000: t = 78 (python3 exact integers: 100 * sum_{i<=78} C(1000, i)
	 * 9^(1000-i) < 10^1000 and the same with 79 is not), index 1000 - 78 = 922 -> 923. */
	ck_assert(s.es.ok);
	ck_assert_uint_eq(s.es.overlatency, 78);
	ck_assert_uint_eq(s.es.index, 922);
	ck_assert_double_eq(s.es.estimate, 923);
	/* Median CI at n = 1000: ranks 469 and 532 (python3 exact, coverage 0.9537088026395019);
	 * sorted[rank - 1] = rank. */
	ck_assert_uint_eq(s.median_ci.lo_rank, 469);
	ck_assert_double_eq(s.median_ci.low, 469);
	ck_assert_double_eq(s.median_ci.high, 532);
	/* MAD of 1..1000 around 500.5 is 250; the largest score 0.6745 * 499.5 / 250 = 1.35. */
	ck_assert_double_eq(s.outliers.mad, 250);
	ck_assert_uint_eq(s.outliers.count, 0);
}
END_TEST

START_TEST(test_summary_u64_and_errors)
{
	uint64_t ns[4] = { 4000, 1000, 3000, 2000 };
	stats_summary s;
	ck_assert_int_eq(stats_summary_compute_u64(ns, 4, &s, NULL), 0);
	ck_assert_double_eq(s.mean, 2500);   /* 10000 / 4 */
	ck_assert_double_eq(s.median, 2500); /* (2000 + 3000) / 2 */
	ck_assert_double_eq(s.p90, 4000);    /* index floor(3.6) = 3 */

	tm_err e;
	ck_assert_int_eq(stats_summary_compute(NULL, 0, &s, &e), TM_EINVAL);
	ck_assert_ptr_nonnull(strstr(e.msg, "no samples"));
	double bad[3] = { 1, NAN, 3 };
	ck_assert_int_eq(stats_summary_compute(bad, 3, &s, &e), TM_EINVAL);
	ck_assert_ptr_nonnull(strstr(e.msg, "sample 1 is not finite"));
	ck_assert_int_eq(stats_summary_compute_u64(ns, 0, &s, &e), TM_EINVAL);
}
END_TEST

START_TEST(test_throughput)
{
	ck_assert_double_eq(stats_throughput(1000, 2), 500);   /* 1000 items in 2 s */
	ck_assert_double_eq(stats_throughput(10000, 0.5), 20000);
	ck_assert_double_eq(stats_throughput(5, 0), 0);        /* no time: defined as 0 */
	ck_assert_double_eq(stats_throughput(5, -1), 0);
	ck_assert_double_eq(stats_throughput(NAN, 1), 0);
}
END_TEST

// ---- binomial CDF ----

START_TEST(test_binom_cdf_vs_slow_and_python)
{
	/* Against Pascal's triangle in long double on a grid of n, k, q. */
	static const double qs[] = { 0.5, 0.1, 0.01, 0.3, 0.9 };
	for (int n = 1; n <= 200; n += 13)
		for (size_t j = 0; j < sizeof(qs) / sizeof(qs[0]); j++)
			for (int k = 0; k <= n; k += 1 + n / 17) {
				double want = (double)slow_binom_cdf(k, n, qs[j]);
				double got = stats_binom_cdf((size_t)k, (size_t)n, qs[j]);
				ck_assert_msg(fabs(got - want) <= 1e-12 * want + 1e-300,
					      "n=%d k=%d q=%g: got %.17g want %.17g", n, k, qs[j],
					      got, want);
			}
	/* python3 exact (fractions): P(Bin(64, 0.1) <= 1) = 0.0095631497130546292,
	 * P(Bin(63, 0.1) <= 1) = 0.010480164069100963, P(Bin(1024, 0.1) <= 80) =
	 * 0.0094743688745898957, P(Bin(1024, 0.1) <= 81) = 0.012711356727953628,
	 * P(Bin(10, 0.5) <= 1) = 11/1024 = 0.0107421875, P(Bin(100, 0.3) <= 30) =
	 * 0.54912360076879041. */
	ck_assert_double_eq_tol(stats_binom_cdf(1, 64, 0.1), 0.0095631497130546292, 1e-14);
	ck_assert_double_eq_tol(stats_binom_cdf(1, 63, 0.1), 0.010480164069100963, 1e-14);
	ck_assert_double_eq_tol(stats_binom_cdf(80, 1024, 0.1), 0.0094743688745898957, 1e-13);
	ck_assert_double_eq_tol(stats_binom_cdf(81, 1024, 0.1), 0.012711356727953628, 1e-13);
	ck_assert_double_eq_tol(stats_binom_cdf(1, 10, 0.5), 0.0107421875, 1e-15);
	ck_assert_double_eq_tol(stats_binom_cdf(30, 100, 0.3), 0.54912360076879041, 1e-13);
	/* Edge cases: k >= n is certain; q = 0 puts all mass on 0; q = 1 on n. */
	ck_assert_double_eq(stats_binom_cdf(5, 5, 0.3), 1);
	ck_assert_double_eq(stats_binom_cdf(0, 5, 0), 1);
	ck_assert_double_eq(stats_binom_cdf(4, 5, 1), 0);
	/* Symmetry at q = 1/2: P(X <= k) + P(X <= n - k - 1) = 1, at a size where 0.5^n underflows
	 * a linear-space sum (0.5^2000 = 8.7e-603). */
	double a = stats_binom_cdf(990, 2000, 0.5), b = stats_binom_cdf(1009, 2000, 0.5);
	ck_assert_double_eq_tol(a + b, 1, 1e-12);
	ck_assert(a > 0.3 && a < 0.5);
	/* No underflow at n = 10^6 (0.9^1000000 = 10^-45757): the mean is 10^5 and sd 300, so
	 * k = mean - 3 sd has a tail near Phi(-3) = 0.00135. */
	double t = stats_binom_cdf(99100, 1000000, 0.1);
	ck_assert(t > 0.001 && t < 0.002);
}
END_TEST

// ---- early stopping ----

START_TEST(test_es_min_passing)
{
	/* t = 0: 0.9^h < 0.01 <=> h > log(0.01) / log(0.9) = 43.71, so h = 44 (0.9^43 = 0.01078,
	 * 0.9^44 = 0.00970). */
	ck_assert_uint_eq(stats_es_min_passing(0, 0.9, 0.99), 44);
	/* t = 1: python3 exact gives 63 (P(Bin(64, 0.1) <= 1) = 0.00956 < 0.01 while
	 * P(Bin(63, 0.1) <= 1) = 0.01048), so LoadGen's minimum is 63 + 1 = 64 queries, the number
	 * its logs quote for a 90th percentile.  t = 2, 3: 79 and 94 (python3 exact). */
	ck_assert_uint_eq(stats_es_min_passing(1, 0.9, 0.99), 63);
	ck_assert_uint_eq(stats_es_min_passing(2, 0.9, 0.99), 79);
	ck_assert_uint_eq(stats_es_min_passing(3, 0.9, 0.99), 94);
	/* p99: t = 0 -> 459 (0.99^h < 0.01, log(0.01) / log(0.99) = 458.2), t = 1 -> 661, so 662
	 * queries for a 99th percentile (python3 exact). */
	ck_assert_uint_eq(stats_es_min_passing(0, 0.99, 0.99), 459);
	ck_assert_uint_eq(stats_es_min_passing(1, 0.99, 0.99), 661);
	/* The slow scan agrees for t < 15 (h + t stays within its 300 trials). */
	for (int t = 0; t < 15; t++)
		ck_assert_uint_eq(stats_es_min_passing((size_t)t, 0.9, 0.99),
				  (size_t)slow_min_passing(t, 0.9, 0.99));
	ck_assert_uint_eq(stats_es_min_passing(1, 1.0, 0.99), 0);  /* invalid p */
	ck_assert_uint_eq(stats_es_min_passing(1, 0.9, 0.0), 0);   /* invalid c */
}
END_TEST

START_TEST(test_es_estimates_python)
{
	/* sorted[i] = i, so the estimate equals its index.  (t, index) pairs from python3 exact
	 * integer arithmetic (largest t >= 1 with 100 * sum_{i<=t} C(n, i) 9^(n-i) < 10^n). */
	static const struct { size_t n, t; } cases[] = {
		{ 64, 1 }, { 65, 1 }, { 100, 3 }, { 200, 10 }, { 1024, 80 }, { 2048, 173 },
		{ 10000, 930 }, { 20000, 1901 },
	};
	double *x = malloc(20000 * sizeof(*x));
	fill_iota(x, 20000);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		stats_es es;
		ck_assert_int_eq(stats_es_compute(x, cases[i].n, 0.9, 0.99, &es, NULL), 0);
		ck_assert_msg(es.ok, "n=%zu", cases[i].n);
		ck_assert_uint_eq(es.min_queries, 64);
		ck_assert_uint_eq(es.overlatency, cases[i].t);
		ck_assert_uint_eq(es.discarded, cases[i].t - 1);
		ck_assert_uint_eq(es.index, cases[i].n - cases[i].t);
		ck_assert_double_eq(es.estimate, (double)(cases[i].n - cases[i].t));
	}
	/* n = 63 is one short of 64: not ok, the estimate falls back to the maximum. */
	stats_es es;
	ck_assert_int_eq(stats_es_compute(x, 63, 0.9, 0.99, &es, NULL), 0);
	ck_assert(!es.ok);
	ck_assert_uint_eq(es.min_queries, 64);
	ck_assert_double_eq(es.estimate, 62);
	/* Worked example of docs/statistics.md: n = 100, P(Bin(100, 0.1) <= 3) = 0.00784 < 0.01 <=
	 * P(<= 4) = 0.02371, so t = 3: two slowest discarded, estimate sorted[97]. */
	ck_assert_int_eq(stats_es_compute(x, 100, 0.9, 0.99, &es, NULL), 0);
	ck_assert_uint_eq(es.overlatency, 3);
	ck_assert_double_eq(es.estimate, 97);
	/* Bad parameters. */
	tm_err e;
	ck_assert_int_eq(stats_es_compute(x, 100, 1.5, 0.99, &es, &e), TM_EINVAL);
	ck_assert_ptr_nonnull(strstr(e.msg, "must be in (0, 1)"));
	free(x);
}
END_TEST

START_TEST(test_es_matches_loadgen_loop)
{
	/* A literal transcription of LoadGen's single-stream loop, with its find_min_passing done
	 * by the slow linear scan: h_min = minpass(1); not enough if n < h_min + 1; otherwise for
	 * i = 2.. break at the first i with n < minpass(i) + i and take t = i - 1. */
	int minpass[40];
	for (int t = 0; t < 40; t++)
		minpass[t] = slow_min_passing(t, 0.9, 0.99);
	double x[300];
	fill_iota(x, 300);
	for (int n = 1; n <= 280; n++) {
		bool ok = n >= minpass[1] + 1;
		int t = 1;
		if (ok) {
			for (int i = 2; i < 40; i++) {
				ck_assert_int_gt(minpass[i], 0);  /* within the slow scan's range */
				if (n < minpass[i] + i) {
					t = i - 1;
					break;
				}
			}
		}
		stats_es es;
		ck_assert_int_eq(stats_es_compute(x, (size_t)n, 0.9, 0.99, &es, NULL), 0);
		ck_assert_msg(es.ok == ok, "n=%d", n);
		if (ok) {
			ck_assert_msg(es.overlatency == (size_t)t, "n=%d t=%zu want %d", n,
				      es.overlatency, t);
			ck_assert_double_eq(es.estimate, x[n - t]);
		}
	}
}
END_TEST

START_TEST(test_es_and_ci_large_n_defining_property)
{
	/* At large n the walks skip the far lower tail (binom_skip); check the result against
	 * the defining inequalities evaluated by stats_binom_cdf, which sums from 0:
	 * F(t) < 0.01 <= F(t + 1) for early stopping, 1 - 2 F(l - 1) >= 0.95 > 1 - 2 F(l) for the
	 * median ranks. */
	static const size_t ns[] = { 5000, 77777, 300000 };
	double *x = malloc(300000 * sizeof(*x));
	fill_iota(x, 300000);
	for (size_t j = 0; j < sizeof(ns) / sizeof(ns[0]); j++) {
		size_t n = ns[j];
		stats_es es;
		ck_assert_int_eq(stats_es_compute(x, n, 0.9, 0.99, &es, NULL), 0);
		ck_assert(es.ok);
		ck_assert(stats_binom_cdf(es.overlatency, n, 1 - 0.9) < 1 - 0.99);
		ck_assert(stats_binom_cdf(es.overlatency + 1, n, 1 - 0.9) >= 1 - 0.99);
		/* The estimate sits near the 90th percentile plus about 2.33 sd of a binomial
		 * count: t is within 3 sqrt(0.09 n) of 0.1 n - 2.33 sqrt(0.09 n). */
		double sd = sqrt(0.09 * (double)n);
		ck_assert(fabs((double)es.overlatency - (0.1 * (double)n - 2.33 * sd)) < 3 * sd);
		stats_median_ci ci;
		ck_assert_int_eq(stats_median_ci_compute(x, n, 0.95, &ci, NULL), 0);
		ck_assert(ci.exists);
		ck_assert(1 - 2 * stats_binom_cdf(ci.lo_rank - 1, n, 0.5) >= 0.95);
		ck_assert(1 - 2 * stats_binom_cdf(ci.lo_rank, n, 0.5) < 0.95);
		ck_assert_double_eq_tol(ci.coverage, 1 - 2 * stats_binom_cdf(ci.lo_rank - 1, n, 0.5),
					1e-12);
		/* Normal approximation: l near n/2 - 1.96 sqrt(n)/2. */
		ck_assert(fabs((double)ci.lo_rank - (0.5 * (double)n - 0.98 * sqrt((double)n))) < 3);
	}
	free(x);
}
END_TEST

// ---- median confidence interval ----

START_TEST(test_median_ci_ranks)
{
	/* (n, l, u, coverage) from python3 exact fractions: largest l with
	 * sum_{i=l}^{n-l} C(n, i) / 2^n >= 0.95.  n = 10: 1 - 2 (1 + 10) / 1024 = 501/512 =
	 * 0.978515625 (with l = 3 it would be 1 - 2 * 56 / 1024 = 0.89); n = 20: 1 - 2 * 21700 /
	 * 2^20 = 125647/131072 = 0.95861 (l = 7: 0.885). */
	static const struct { size_t n, l, u; double cov; } cases[] = {
		{ 6, 1, 6, 31.0 / 32 },        /* 1 - 2 / 64 */
		{ 7, 1, 7, 63.0 / 64 },
		{ 9, 2, 8, 123.0 / 128 },      /* 1 - 2 (1 + 9) / 512 */
		{ 10, 2, 9, 501.0 / 512 },
		{ 12, 3, 10, 1969.0 / 2048 },  /* 1 - 2 (1 + 12 + 66) / 4096 */
		{ 20, 6, 15, 125647.0 / 131072 },
		{ 50, 18, 33, 0.9671608624357315 },
		{ 100, 40, 61, 0.9647997997822951 },
		{ 1024, 481, 544, 0.9510711635475109 },
	};
	double x[1024];
	for (int i = 0; i < 1024; i++)
		x[i] = 1000 + i;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		stats_median_ci ci;
		ck_assert_int_eq(stats_median_ci_compute(x, cases[i].n, 0.95, &ci, NULL), 0);
		ck_assert_msg(ci.exists, "n=%zu", cases[i].n);
		ck_assert_uint_eq(ci.lo_rank, cases[i].l);
		ck_assert_uint_eq(ci.hi_rank, cases[i].u);
		ck_assert_double_eq(ci.low, 1000 + (double)cases[i].l - 1);
		ck_assert_double_eq(ci.high, 1000 + (double)cases[i].u - 1);
		ck_assert_double_eq_tol(ci.coverage, cases[i].cov, 1e-12);
	}
	/* n = 5: even [min, max] covers only 1 - 2 / 32 = 0.9375 < 0.95: flagged, no interval. */
	stats_median_ci ci;
	ck_assert_int_eq(stats_median_ci_compute(x, 5, 0.95, &ci, NULL), 0);
	ck_assert(!ci.exists);
	ck_assert_double_eq_tol(ci.coverage, 0.9375, 1e-15);
	ck_assert_double_eq(ci.low, 1000);
	ck_assert_double_eq(ci.high, 1004);
	ck_assert_int_eq(stats_median_ci_compute(x, 1, 0.95, &ci, NULL), 0);
	ck_assert(!ci.exists);
	ck_assert_int_eq(stats_median_ci_compute(x, 10, 1.0, &ci, NULL), TM_EINVAL);
}
END_TEST

START_TEST(test_median_ci_vs_exact_integers)
{
	/* For n <= 56, 100 * 2^n fits in 64 bits: find l with exact integer coefficients. */
	double x[56];
	fill_iota(x, 56);
	for (int n = 1; n <= 56; n++) {
		uint64_t c[57];
		c[0] = 1;
		for (int i = 1; i <= n; i++)
			c[i] = c[i - 1] * (uint64_t)(n - i + 1) / (uint64_t)i;  /* exact: C(n, i) */
		size_t want = 0;
		for (int l = 1; l <= n / 2; l++) {
			uint64_t mass = 0;
			for (int i = l; i <= n - l; i++)
				mass += c[i];
			if (100 * mass >= 95 * ((uint64_t)1 << n))
				want = (size_t)l;
		}
		stats_median_ci ci;
		ck_assert_int_eq(stats_median_ci_compute(x, (size_t)n, 0.95, &ci, NULL), 0);
		ck_assert_msg(ci.exists == (want > 0), "n=%d", n);
		if (want)
			ck_assert_msg(ci.lo_rank == want, "n=%d l=%zu want %zu", n, ci.lo_rank, want);
	}
}
END_TEST

// ---- outliers ----

START_TEST(test_outliers_planted)
{
	/* Fourteen samples near 100 with 250 planted at index 9 and 10 at index 12.  Sorted:
	 * 10 97 98 99 99 100 100 100 100 101 101 102 103 250 -> median (100 + 100) / 2 = 100.
	 * |x - 100| sorted: 0 0 0 0 1 1 1 1 2 2 3 3 90 150 -> MAD = (1 + 1) / 2 = 1.
	 * Scores 0.6745 * dev: 103 and 97 -> 2.02 (kept), 250 -> 101.2 and 10 -> -60.7 (flagged). */
	double x[14] = { 100, 102, 98, 101, 99, 100, 103, 97, 100, 250, 101, 99, 10, 100 };
	size_t idx[4] = { 99, 99, 99, 99 };
	stats_outliers o;
	ck_assert_int_eq(stats_outliers_find(x, 14, idx, 4, &o, NULL), 0);
	ck_assert_double_eq(o.median, 100);
	ck_assert_double_eq(o.mad, 1);
	ck_assert(!o.mad_zero);
	ck_assert_uint_eq(o.count, 2);
	ck_assert_uint_eq(o.low, 1);
	ck_assert_uint_eq(o.high, 1);
	ck_assert_uint_eq(idx[0], 9);
	ck_assert_uint_eq(idx[1], 12);
	ck_assert_uint_eq(idx[2], 99);  /* untouched beyond count */
	/* A cap of 1 stores only the first index but still counts both. */
	ck_assert_int_eq(stats_outliers_find(x, 14, idx, 1, &o, NULL), 0);
	ck_assert_uint_eq(o.count, 2);

	/* The threshold: median 100, MAD 1 (same construction); 105 scores 0.6745 * 5 = 3.37
	 * (kept) and 94 scores -0.6745 * 6 = -4.05 (flagged). */
	double y[9] = { 99, 100, 101, 100, 105, 99, 101, 94, 100 };
	/* sorted 94 99 99 100 100 100 101 101 105: median 100; deviations sorted
	 * 0 0 0 1 1 1 1 5 6: MAD 1. */
	ck_assert_int_eq(stats_outliers_find(y, 9, idx, 4, &o, NULL), 0);
	ck_assert_double_eq(o.mad, 1);
	ck_assert_uint_eq(o.count, 1);
	ck_assert_uint_eq(idx[0], 7);
	ck_assert_uint_eq(o.low, 1);
}
END_TEST

START_TEST(test_outliers_mad_zero)
{
	/* Constant sample: MAD 0 and MeanAD 0, nothing is flagged. */
	double c[8] = { 7, 7, 7, 7, 7, 7, 7, 7 };
	stats_outliers o;
	ck_assert_int_eq(stats_outliers_find(c, 8, NULL, 0, &o, NULL), 0);
	ck_assert(o.mad_zero);
	ck_assert_double_eq(o.mad, 0);
	ck_assert_uint_eq(o.count, 0);
	/* Nine 5s and one 100: median 5, MAD 0 (nine zero deviations), MeanAD = 95 / 10 = 9.5;
	 * score (100 - 5) / (1.253314 * 9.5) = 7.98 > 3.5: flagged. */
	double d[10] = { 5, 5, 5, 5, 5, 5, 5, 5, 5, 100 };
	size_t idx[2];
	ck_assert_int_eq(stats_outliers_find(d, 10, idx, 2, &o, NULL), 0);
	ck_assert(o.mad_zero);
	ck_assert_double_eq(o.mean_ad, 9.5);
	ck_assert_uint_eq(o.count, 1);
	ck_assert_uint_eq(o.high, 1);
	ck_assert_uint_eq(idx[0], 9);
	/* The summary reports the same count, never drops the sample: max stays 100. */
	stats_summary s;
	ck_assert_int_eq(stats_summary_compute(d, 10, &s, NULL), 0);
	ck_assert_uint_eq(s.outliers.count, 1);
	ck_assert_double_eq(s.max, 100);
	ck_assert_double_eq(s.mean, 14.5);  /* (45 + 100) / 10: outlier included */
}
END_TEST

// ---- speedup ----

START_TEST(test_speedup_constant_ratio)
{
	/* base = 2 sub exactly: every resample's sum(base) is exactly 2 sum(sub) (doubling is exact
	 * in binary floating point and commutes with rounded addition), so all ratios are 2. */
	double b[25], s[25];
	for (int i = 0; i < 25; i++) {
		s[i] = 1e6 + 12345.0 * i * i;
		b[i] = 2 * s[i];
	}
	stats_speedup sp;
	ck_assert_int_eq(stats_speedup_compute(b, s, 25, 0, 7, &sp, NULL), 0);
	ck_assert_double_eq(sp.value, 2);
	ck_assert_double_eq(sp.ci_low, 2);
	ck_assert_double_eq(sp.ci_high, 2);
	ck_assert_uint_eq(sp.resamples, STATS_BOOT_RESAMPLES);  /* 0 asks for the default 2000 */
	ck_assert_uint_eq(sp.pairs, 25);
}
END_TEST

static void noisy_pairs(double *b, double *s, int k, uint64_t seed)
{
	/* Submission ~1 ms, baseline ~1.5x slower, both with 5% multiplicative noise. */
	tm_rng r;
	tm_rng_seed(&r, seed);
	for (int i = 0; i < k; i++) {
		s[i] = 1e6 * (1 + 0.05 * tm_rng_normal(&r));
		b[i] = 1.5 * 1e6 * (1 + 0.05 * tm_rng_normal(&r));
	}
}

START_TEST(test_speedup_bootstrap_seeded)
{
	double b[30], s[30];
	noisy_pairs(b, s, 30, 99);
	stats_speedup a1, a2, c;
	ck_assert_int_eq(stats_speedup_compute(b, s, 30, 2000, 1234, &a1, NULL), 0);
	ck_assert_int_eq(stats_speedup_compute(b, s, 30, 2000, 1234, &a2, NULL), 0);
	/* Same seed: bit-identical result. */
	ck_assert_int_eq(memcmp(&a1, &a2, sizeof(a1)), 0);
	/* Another seed draws other resamples: the interval moves (the point estimate does not). */
	ck_assert_int_eq(stats_speedup_compute(b, s, 30, 2000, 1235, &c, NULL), 0);
	ck_assert_double_eq(c.value, a1.value);
	ck_assert(c.ci_low != a1.ci_low || c.ci_high != a1.ci_high);
	/* Sanity: the true ratio is 1.5; 30 pairs with 5% noise on each side give a relative sd of
	 * the ratio of sums near 0.05 * sqrt(2 / 30) = 1.3%, so value within 5% of 1.5 and an
	 * interval that contains the estimate, is not degenerate, and is at most ~+-4 sd wide. */
	ck_assert(fabs(a1.value - 1.5) < 0.075);
	ck_assert(a1.ci_low < a1.value && a1.value < a1.ci_high);
	ck_assert(a1.ci_high - a1.ci_low < 0.1 * a1.value);
	ck_assert(a1.ci_high - a1.ci_low > 0.005 * a1.value);
}
END_TEST

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

START_TEST(test_speedup_bootstrap_indices)
{
	/* Redo the bootstrap by hand with the same generator and check which order statistics form
	 * the interval: 7 pairs are 7 batches of one pair; the expanded tail for g = 7 is
	 * Phi(-sqrt(7/6) * 2.446912) = 0.00411, and B = 400 leaves floor(0.00411 * 400) = 1
	 * resample out on each side, so the interval is [r(1), r(398)] (0-based). */
	double b[7], s[7];
	noisy_pairs(b, s, 7, 5);
	enum { B = 400 };
	double r[B];
	tm_rng rng;
	tm_rng_seed(&rng, 77);
	for (int i = 0; i < B; i++) {
		double rb = 0, rs = 0;
		for (int j = 0; j < 7; j++) {
			uint32_t p = tm_rng_below(&rng, 7);
			rb += b[p];
			rs += s[p];
		}
		r[i] = rb / rs;
	}
	qsort(r, B, sizeof(r[0]), cmp_dbl);
	stats_speedup sp;
	ck_assert_int_eq(stats_speedup_compute(b, s, 7, B, 77, &sp, NULL), 0);
	ck_assert_uint_eq(sp.batches, 7);
	ck_assert_double_eq(sp.ci_low, r[1]);
	ck_assert_double_eq(sp.ci_high, r[398]);
	/* value = sum b / sum s, computed here the same way. */
	double sb = 0, ss = 0;
	for (int j = 0; j < 7; j++) {
		sb += b[j];
		ss += s[j];
	}
	ck_assert_double_eq(sp.value, sb / ss);
	/* Errors: no pairs, a non-positive time, too many resamples. */
	tm_err e;
	ck_assert_int_eq(stats_speedup_compute(b, s, 0, 0, 1, &sp, &e), TM_EINVAL);
	s[3] = -1;
	ck_assert_int_eq(stats_speedup_compute(b, s, 7, 0, 1, &sp, &e), TM_EINVAL);
	ck_assert_ptr_nonnull(strstr(e.msg, "pair 3"));
	ck_assert_int_eq(stats_speedup_compute(b, s, 7, 2000000, 1, &sp, &e), TM_EINVAL);
}
END_TEST

START_TEST(test_speedup_iqm_by_hand)
{
	/* 4 pairs of blocks of 4 queries: 4 batches of one pair each.  A batch's value is the
	 * mean of its sorted queries 1 and 2 (the middle half of 4).
	 *   base batches {10 20 30 1000} {40 12 36 20} {25 25 25 25} {8 16 24 32}: 25, 28, 25, 20
	 *   sub batches  {1 2 3 100} {4 1 3 2} {2.5 2.5 2.5 2.5} {1 5 3 9}: 2.5, 2.5, 2.5, 4
	 * value = (25 + 28 + 25 + 20) / (2.5 + 2.5 + 2.5 + 4) = 98 / 11.5. */
	double base[16] = { 10, 20, 30, 1000, 40, 12, 36, 20, 25, 25, 25, 25, 8, 16, 24, 32 };
	double sub[16] = { 1, 2, 3, 100, 4, 1, 3, 2, 2.5, 2.5, 2.5, 2.5, 1, 5, 3, 9 };
	stats_speedup sp;
	ck_assert_int_eq(stats_speedup_iqm_compute(base, sub, 4, 4, 2000, 5, &sp, NULL), 0);
	ck_assert_double_eq_tol(sp.value, 98.0 / 11.5, 1e-12);
	ck_assert_uint_eq(sp.pairs, 4);
	ck_assert_uint_eq(sp.batches, 4);
	ck_assert_int_eq(sp.statistic, STATS_SPEEDUP_IQM);
	ck_assert(sp.ci_low <= sp.value && sp.value <= sp.ci_high);
	/* Every resample is a ratio of batch values drawn from these: within the extremes. */
	ck_assert_double_ge(sp.ci_low, (20.0 * 4) / (4.0 * 4) - 1e-12);
	ck_assert_double_le(sp.ci_high, (28.0 * 4) / (2.5 * 4) + 1e-12);

	/* A query slowed a millionfold (noise adds time) shifts the interquartile mean by one
	 * order statistic; it makes the total-time speedup a thousand times smaller. */
	double slow[16];
	memcpy(slow, sub, sizeof(slow));
	slow[5] = 1e6;  /* batch 1 becomes {4 1e6 3 2}: middle 3, 4 -> 3.5 */
	stats_speedup sq, tot, tot_slow;
	ck_assert_int_eq(stats_speedup_iqm_compute(base, slow, 4, 4, 2000, 5, &sq, NULL), 0);
	ck_assert_double_eq_tol(sq.value, 98.0 / 12.5, 1e-12);
	double bsum[4], ssum[4], ssum_slow[4];
	for (int j = 0; j < 4; j++) {
		bsum[j] = ssum[j] = ssum_slow[j] = 0;
		for (int i = 0; i < 4; i++) {
			bsum[j] += base[4 * j + i];
			ssum[j] += sub[4 * j + i];
			ssum_slow[j] += slow[4 * j + i];
		}
	}
	ck_assert_int_eq(stats_speedup_compute(bsum, ssum, 4, 2000, 5, &tot, NULL), 0);
	ck_assert_int_eq(stats_speedup_compute(bsum, ssum_slow, 4, 2000, 5, &tot_slow, NULL), 0);
	ck_assert_int_eq(tot.statistic, STATS_SPEEDUP_SUM);
	ck_assert_double_lt(tot_slow.value, tot.value / 1000);

	/* Fewer than 4 queries per batch: the batch's value is their mean. */
	double b3[3] = { 9, 12, 15 }, s3[3] = { 3, 3, 3 };
	ck_assert_int_eq(stats_speedup_iqm_compute(b3, s3, 3, 1, 2000, 5, &sp, NULL), 0);
	ck_assert_double_eq_tol(sp.value, 36.0 / 9.0, 1e-12);

	/* Bad input: no block, a non-positive query (named by index). */
	tm_err err = { 0 };
	ck_assert_int_eq(stats_speedup_iqm_compute(b3, s3, 3, 0, 2000, 5, &sp, &err), TM_EINVAL);
	s3[2] = 0;
	ck_assert_int_eq(stats_speedup_iqm_compute(b3, s3, 3, 1, 2000, 5, &sp, &err), TM_EINVAL);
	ck_assert_msg(strstr(err.msg, "query 2") != NULL, "%s", err.msg);
}
END_TEST

START_TEST(test_speedup_repro_by_hand)
{
	/* value 2, bootstrap [1.9, 2.1], rel 0.01: r = 1.959964 ln 1.01 = 0.0195021; the
	 * half-widths ln(2/1.9) = 0.0512933 and ln(2.1/2) = 0.0487902 become
	 * sqrt(h^2 + r^2): [1.8932056253, 2.1078968167] (worked in docs/statistics.md). */
	stats_speedup sp = { .value = 2, .ci_low = 1.9, .ci_high = 2.1, .boot_low = 1.9,
			     .boot_high = 2.1 };
	stats_speedup_add_repro(&sp, 0.01);
	ck_assert_double_eq_tol(sp.ci_low, 1.8932056253, 1e-9);
	ck_assert_double_eq_tol(sp.ci_high, 2.1078968167, 1e-9);
	ck_assert_double_eq(sp.boot_low, 1.9);
	ck_assert_double_eq(sp.boot_high, 2.1);
	ck_assert_double_eq(sp.repro, 0.01);
	/* A zero-width bootstrap interval (a run with no visible variation) gets the term
	 * alone: 50 exp(-+1.959964 ln 1.005). */
	stats_speedup z = { .value = 50, .ci_low = 50, .ci_high = 50, .boot_low = 50,
			    .boot_high = 50 };
	stats_speedup_add_repro(&z, 0.005);
	ck_assert_double_eq_tol(z.ci_low, 49.5136111061, 1e-9);
	ck_assert_double_eq_tol(z.ci_high, 50.4911668559, 1e-9);
	/* rel 0 leaves the interval as it is. */
	stats_speedup u = { .value = 2, .ci_low = 1.9, .ci_high = 2.1, .boot_low = 1.9,
			    .boot_high = 2.1 };
	stats_speedup_add_repro(&u, 0);
	ck_assert_double_eq(u.ci_low, 1.9);
	ck_assert_double_eq(u.ci_high, 2.1);
	ck_assert_double_eq(u.repro, 0);
}
END_TEST

START_TEST(test_speedup_batches)
{
	/* 45 pairs make 20 batches: batch j holds pairs floor(45 j / 20) .. floor(45 (j + 1) / 20)
	 * - 1: starts 0 2 4 6 9 ..., so sizes 2 2 2 3 ... (2 or 3).  The bootstrap resamples batch sums; redone by
	 * hand, the interval is [r(31), r(1968)] of B = 2000 (tail 0.01588 for g = 20). */
	enum { K = 45, G = 20, B = 2000 };
	double b[K], s[K];
	noisy_pairs(b, s, K, 11);
	double bb[G] = { 0 }, bs[G] = { 0 };
	int count[G] = { 0 };
	for (int j = 0; j < G; j++)
		for (int i = j * K / G; i < (j + 1) * K / G; i++) {
			bb[j] += b[i];
			bs[j] += s[i];
			count[j]++;
		}
	ck_assert_int_eq(count[0], 2);
	ck_assert_int_eq(count[2], 2);
	ck_assert_int_eq(count[3], 3);
	static double r[B];
	tm_rng rng;
	tm_rng_seed(&rng, 3);
	for (int i = 0; i < B; i++) {
		double rb = 0, rs = 0;
		for (int j = 0; j < G; j++) {
			uint32_t p = tm_rng_below(&rng, G);
			rb += bb[p];
			rs += bs[p];
		}
		r[i] = rb / rs;
	}
	qsort(r, B, sizeof(r[0]), cmp_dbl);
	stats_speedup sp;
	ck_assert_int_eq(stats_speedup_compute(b, s, K, B, 3, &sp, NULL), 0);
	ck_assert_uint_eq(sp.pairs, K);
	ck_assert_uint_eq(sp.batches, G);
	ck_assert_double_eq(sp.ci_low, r[31]);
	ck_assert_double_eq(sp.ci_high, r[1968]);

	/* A drift that independent pairs would hide: 400 pairs, the first half of the run at
	 * speedup 1.4 and the second at 1.6, each pair exact.  Resampling the 400 pairs one by one
	 * would give a share of the fast half with sd sqrt(0.25 / 400) = 0.025, an interval about
	 * 0.02 wide; resampling 20 batches gives sd sqrt(0.25 / 20) = 0.11 and about 0.1. */
	static double b2[400], s2[400];
	for (int i = 0; i < 400; i++) {
		s2[i] = 1e6;
		b2[i] = i < 200 ? 1.4e6 : 1.6e6;
	}
	ck_assert_int_eq(stats_speedup_compute(b2, s2, 400, B, 3, &sp, NULL), 0);
	ck_assert_double_eq_tol(sp.value, 1.5, 1e-12);
	ck_assert(sp.ci_high - sp.ci_low > 0.07);
	ck_assert(sp.ci_low < 1.5 && sp.ci_high > 1.5);
}
END_TEST

START_TEST(test_speedup_expanded_tail)
{
	/* Phi(-sqrt(g / (g - 1)) * t(0.975, g - 1)), worked out in docs/statistics.md. */
	ck_assert_double_eq(stats_boot_tail(1), 0);
	ck_assert_double_eq_tol(stats_boot_tail(7), 0.0041092, 1e-6);
	ck_assert_double_eq_tol(stats_boot_tail(10), 0.0085506, 1e-6);
	ck_assert_double_eq_tol(stats_boot_tail(20), 0.0158808, 1e-6);
	/* Beyond the table: t(0.975, 40) = 2.021075 gives 0.020369; t(0.975, 999) = 1.962341
	 * gives 0.024804, approaching the plain 0.025. */
	ck_assert_double_eq_tol(stats_boot_tail(41), 0.020369, 2e-5);
	ck_assert_double_eq_tol(stats_boot_tail(1000), 0.024804, 2e-5);
}
END_TEST

// ---- verdict ----

START_TEST(test_verdict_valid_and_reasons)
{
	stats_limits lim;
	stats_limits_default(&lim);
	ck_assert_uint_eq(lim.min_count, 1024);
	ck_assert_double_eq(lim.min_duration_s, 5);
	ck_assert_uint_eq(lim.min_pairs, 10);
	ck_assert_double_eq(lim.max_speedup_rel_width, 0.10);

	/* Everything met: 2000 queries over 6 s, 20 pairs, speedup 1.2 in [1.17, 1.23] (width
	 * 0.06 <= 0.12), ES ok, median 1000 in [990, 1010] (width 20 <= 100). */
	stats_speedup sp = { .value = 1.2, .ci_low = 1.17, .ci_high = 1.23, .pairs = 20 };
	stats_es es = { .n = 2000, .ok = true, .p = 0.9, .min_queries = 64 };
	stats_median_ci ci = { .n = 2000, .exists = true, .low = 990, .high = 1010, .level = 0.95 };
	stats_verdict_in in = { .unit = "queries", .count = 2000, .duration_s = 6, .speedup = &sp,
				.median_ci = &ci, .median = 1000, .es = &es };
	stats_verdict v;
	stats_verdict_decide(&in, NULL, &v);
	ck_assert(v.valid);
	ck_assert_int_eq(v.n_reasons, 0);

	/* Each failure adds its own sentence. */
	in.count = 812;
	in.duration_s = 3.2;
	sp = (stats_speedup){ .value = 1.2, .ci_low = 0.8, .ci_high = 1.9, .pairs = 4 };
	es = (stats_es){ .n = 50, .ok = false, .p = 0.9, .min_queries = 64 };
	ci = (stats_median_ci){ .n = 2000, .exists = true, .low = 900, .high = 1200, .level = 0.95 };
	stats_verdict_decide(&in, &lim, &v);
	ck_assert(!v.valid);
	ck_assert_int_eq(v.n_reasons, 6);
	ck_assert_str_eq(v.reasons[0], "only 812 queries, minimum 1024");
	ck_assert_str_eq(v.reasons[1], "only 3.2 s of measurement, minimum 5 s");
	ck_assert_str_eq(v.reasons[2], "only 4 interleaved pairs, minimum 10");
	/* width 1.1 > 0.1 * 1.2 */
	ck_assert_str_eq(v.reasons[3], "speedup interval [0.8, 1.9] is wider than 10% of 1.2");
	/* width 300 > 0.1 * 1000 */
	ck_assert_str_eq(v.reasons[4], "median interval [900, 1200] is wider than 10% of 1000");
	ck_assert_str_eq(v.reasons[5], "only 50 queries, early stopping p90 needs at least 64");

	/* Thresholds are parameters: width checks off, minimums lowered -> valid again except for
	 * the ES flag, whose minimum is statistical, not a parameter. */
	lim.min_count = 500;
	lim.min_duration_s = 3;
	lim.min_pairs = 4;
	lim.max_speedup_rel_width = 0;
	lim.max_median_rel_width = 0;
	stats_verdict_decide(&in, &lim, &v);
	ck_assert_int_eq(v.n_reasons, 1);
	ck_assert_ptr_nonnull(strstr(v.reasons[0], "early stopping"));

	/* Missing median interval and the planner's cap; unit defaults to "samples". */
	stats_verdict_in in2 = { .count = 4, .duration_s = 60, .hit_max_duration = true };
	stats_median_ci none = { .n = 4, .exists = false, .level = 0.95 };
	in2.median_ci = &none;
	stats_limits_default(&lim);
	stats_verdict_decide(&in2, &lim, &v);
	ck_assert_int_eq(v.n_reasons, 3);
	ck_assert_str_eq(v.reasons[0], "only 4 samples, minimum 1024");
	ck_assert_str_eq(v.reasons[1],
			 "stopped at the maximum duration after 60 s with a minimum unmet");
	ck_assert_str_eq(v.reasons[2], "no 95% median interval exists with only 4 samples");
}
END_TEST

// ---- planner ----

START_TEST(test_plan_minimums_and_cap)
{
	stats_plan p;
	/* Count-bound: 5 measurements and 1 s; 0.25 s each (exact in binary) reaches 1 s after 4,
	 * so the 5th one finishes it. */
	stats_plan_init(&p, 5, 1.0, 3.0);
	ck_assert(!stats_plan_done(&p));
	for (int i = 0; i < 4; i++) {
		stats_plan_add(&p, 0.25);
		ck_assert(!stats_plan_done(&p));
	}
	stats_plan_add(&p, 0.25);
	ck_assert(stats_plan_done(&p));
	ck_assert(!p.hit_max);
	ck_assert_uint_eq(p.count, 5);

	/* Duration-bound: 2 measurements, 1 s; 0.125 s each needs 8. */
	stats_plan_init(&p, 2, 1.0, 0);
	int n = 0;
	while (!stats_plan_done(&p)) {
		stats_plan_add(&p, 0.125);
		n++;
	}
	ck_assert_int_eq(n, 8);
	ck_assert(!p.hit_max);

	/* Capped: 10 measurements wanted, 0.5 s each, cap 3 s -> stops after 6 with hit_max. */
	stats_plan_init(&p, 10, 1.0, 3.0);
	n = 0;
	while (!stats_plan_done(&p)) {
		stats_plan_add(&p, 0.5);
		n++;
	}
	ck_assert_int_eq(n, 6);
	ck_assert(p.hit_max);
	ck_assert_double_eq(p.elapsed_s, 3.0);

	/* No cap (max 0): a slow start does not stop it early. */
	stats_plan_init(&p, 3, 0, 0);
	stats_plan_add(&p, 100);
	stats_plan_add(&p, 100);
	ck_assert(!stats_plan_done(&p));
	stats_plan_add(&p, 100);
	ck_assert(stats_plan_done(&p));

	/* Both minimums 0: done after the first measurement, not before. */
	stats_plan_init(&p, 0, 0, 10);
	ck_assert(!stats_plan_done(&p));
	stats_plan_add(&p, 0.001);
	ck_assert(stats_plan_done(&p));
}
END_TEST

Suite *stats_suite(void)
{
	Suite *s = suite_create("stats");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_summary_n1_n2);
	tcase_add_test(tc, test_summary_n10);
	tcase_add_test(tc, test_summary_n1000);
	tcase_add_test(tc, test_summary_u64_and_errors);
	tcase_add_test(tc, test_throughput);
	tcase_add_test(tc, test_binom_cdf_vs_slow_and_python);
	tcase_add_test(tc, test_es_min_passing);
	tcase_add_test(tc, test_es_estimates_python);
	tcase_add_test(tc, test_es_matches_loadgen_loop);
	tcase_add_test(tc, test_es_and_ci_large_n_defining_property);
	tcase_add_test(tc, test_median_ci_ranks);
	tcase_add_test(tc, test_median_ci_vs_exact_integers);
	tcase_add_test(tc, test_outliers_planted);
	tcase_add_test(tc, test_outliers_mad_zero);
	tcase_add_test(tc, test_speedup_constant_ratio);
	tcase_add_test(tc, test_speedup_bootstrap_seeded);
	tcase_add_test(tc, test_speedup_bootstrap_indices);
	tcase_add_test(tc, test_speedup_batches);
	tcase_add_test(tc, test_speedup_expanded_tail);
	tcase_add_test(tc, test_speedup_iqm_by_hand);
	tcase_add_test(tc, test_speedup_repro_by_hand);
	tcase_add_test(tc, test_verdict_valid_and_reasons);
	tcase_add_test(tc, test_plan_minimums_and_cap);
	suite_add_tcase(s, tc);
	return s;
}
