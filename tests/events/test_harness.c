/* test_harness.c: Check suite of events/harness.c with synthetic workloads: warm-up is not
 * recorded, blocks alternate and pair up, the minimum count and duration are both met, the
 * maximum duration caps the loop, and query numbers continue across warm-up. */
#include "tests.h"
#include "events.h"

#include <stdlib.h>

typedef struct counter {
	int64_t calls;
	int64_t last;      /* last query index seen */
	bool ordered;      /* every index was last + 1 */
	int spin;          /* work per query */
	volatile double sink;
} counter;

static void count_query(void *arg, int64_t i)
{
	counter *c = arg;
	if (i != c->last + 1)
		c->ordered = false;
	c->last = i;
	c->calls++;
	double x = 1.0;
	for (int k = 0; k < c->spin; k++)
		x = x * 1.0000001 + 1e-9;
	c->sink = x;
}

START_TEST(test_blocks_pairs_and_warmup)
{
	counter a = { .last = -1, .ordered = true, .spin = 200 };
	counter b = { .last = -1, .ordered = true, .spin = 200 };
	hx_workload wa = { count_query, &a }, wb = { count_query, &b };
	hx_opts o;
	hx_opts_default(&o);
	o.min_count = 100;
	o.min_duration_s = 0.0;
	o.warmup_count = 7;
	o.warmup_s = 0.0;
	o.block = 16;
	hx_result r;
	ck_assert_int_eq(hx_measure(&o, &wa, &wb, &r, NULL), 0);
	/* 100 queries in blocks of 16: 7 blocks = 112 recorded, warm-up not recorded. */
	ck_assert_int_eq(r.sub.n, 112);
	ck_assert_int_eq(r.base.n, 112);
	ck_assert_int_eq(r.n_pairs, 7);
	ck_assert_int_eq(a.calls, 112 + 7);
	ck_assert_int_eq(b.calls, 112 + 7);
	ck_assert(a.ordered && b.ordered);
	ck_assert(!r.hit_max);
	double sum = 0;
	for (size_t i = 0; i < r.sub.n; i++) {
		ck_assert(r.sub.ns[i] > 0);
		sum += r.sub.ns[i];
	}
	/* The pair times are the block sums of the per-query times. */
	double pairs = 0;
	for (size_t i = 0; i < r.n_pairs; i++)
		pairs += r.pair_sub_s[i];
	ck_assert_double_eq_tol(pairs, sum * 1e-9, 1e-9);
	ck_assert_double_eq_tol(r.sub_elapsed_s, pairs, 1e-12);
	hx_result_release(&r);
}
END_TEST

START_TEST(test_duration_minimum_and_cap)
{
	counter a = { .last = -1, .ordered = true, .spin = 1000 };
	hx_workload wa = { count_query, &a };
	hx_opts o;
	hx_opts_default(&o);
	o.min_count = 1;
	o.min_duration_s = 0.05;
	o.warmup_count = 0;
	o.warmup_s = 0.0;
	o.block = 4;
	hx_result r;
	ck_assert_int_eq(hx_measure(&o, &wa, NULL, &r, NULL), 0);
	ck_assert(r.sub_elapsed_s >= 0.05);   /* the duration minimum, not the count, decided */
	ck_assert_int_eq(r.n_pairs, 0);       /* no baseline, no pairs */
	ck_assert_int_eq(r.base.n, 0);
	hx_result_release(&r);

	o.min_count = 100000000;
	o.min_duration_s = 0;
	o.max_duration_s = 0.05;
	ck_assert_int_eq(hx_measure(&o, &wa, NULL, &r, NULL), 0);
	ck_assert(r.hit_max);
	ck_assert(r.sub.n < 100000000);
	hx_result_release(&r);

	o.block = 0;
	tm_err e;
	ck_assert_int_eq(hx_measure(&o, &wa, NULL, &r, &e), TM_EINVAL);
}
END_TEST

START_TEST(test_speedup_direction)
{
	/* A workload doing 1/20 of the baseline's work must come out faster: a check that the
	 * pairs are not swapped, with a margin far beyond any timing noise. */
	counter fast = { .last = -1, .ordered = true, .spin = 500 };
	counter slow = { .last = -1, .ordered = true, .spin = 10000 };
	hx_workload wf = { count_query, &fast }, ws = { count_query, &slow };
	hx_opts o;
	hx_opts_default(&o);
	o.min_count = 320;
	o.min_duration_s = 0;
	o.warmup_count = 8;
	o.warmup_s = 0;
	o.block = 32;
	hx_result r;
	ck_assert_int_eq(hx_measure(&o, &wf, &ws, &r, NULL), 0);
	stats_speedup sp;
	ck_assert_int_eq(stats_speedup_compute(r.pair_base_s, r.pair_sub_s, r.n_pairs, 500, 7, &sp, NULL), 0);
	ck_assert(sp.value > 2.0);
	ck_assert(sp.ci_low <= sp.value && sp.value <= sp.ci_high);
	hx_result_release(&r);
}
END_TEST

Suite *harness_suite(void)
{
	Suite *s = suite_create("harness");
	TCase *tc = tcase_create("loop");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_blocks_pairs_and_warmup);
	tcase_add_test(tc, test_duration_minimum_and_cap);
	tcase_add_test(tc, test_speedup_direction);
	suite_add_tcase(s, tc);
	return s;
}
