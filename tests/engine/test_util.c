/* test_util.c: Check suite of engine/util.c, cpu.c and pool.c: errors, arenas, aligned
 * memory, kernel-set parsing and the thread pool. */
#include "tests.h"
#include "engine.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

START_TEST(test_err_set_formats_and_returns_code)
{
	tm_err e;
	int rc = tm_err_set(&e, TM_EINVAL, "optimize.threads", "'%s' is %d, must be in [1, 64]",
			    "optimize.threads", 0);
	ck_assert_int_eq(rc, TM_EINVAL);
	ck_assert_int_eq(e.code, TM_EINVAL);
	ck_assert_str_eq(e.field, "optimize.threads");
	ck_assert_str_eq(e.msg, "'optimize.threads' is 0, must be in [1, 64]");
	ck_assert_int_eq(tm_err_set(NULL, TM_EIO, NULL, "x"), TM_EIO);
	ck_assert_str_eq(tm_strerror(TM_ENOMEM), "out of memory");
	ck_assert_str_eq(tm_strerror(-99), "unknown error");
}
END_TEST

START_TEST(test_arena_aligns_and_refuses_overflow)
{
	tm_arena a;
	ck_assert_int_eq(tm_arena_init(&a, 1000, NULL), 0);
	char *p = tm_arena_alloc(&a, 10);
	char *q = tm_arena_alloc(&a, 100);
	ck_assert_ptr_nonnull(p);
	ck_assert_ptr_nonnull(q);
	ck_assert_int_eq((uintptr_t)p % 64, 0);
	ck_assert_int_eq((uintptr_t)q % 64, 0);
	ck_assert_int_eq(q - p, 64);
	ck_assert_ptr_null(tm_arena_alloc(&a, 1000));
	ck_assert_ptr_null(tm_arena_alloc(&a, SIZE_MAX));
	tm_arena_reset(&a);
	ck_assert_ptr_eq(tm_arena_alloc(&a, 1000), p);
	tm_arena_release(&a);
	ck_assert_ptr_null(tm_alloc_aligned(SIZE_MAX - 10));
	tm_free_aligned(NULL);
}
END_TEST

START_TEST(test_alloc_hot_alignment_and_zero_fill)
{
	/* Under the threshold: an ordinary 64-byte aligned block.  From it on: a block on a
	 * 2 MiB boundary.  Both zero-filled over what was asked, writable, freed by
	 * tm_free_aligned.  (Whether THP backs it is the kernel's choice and not checked.) */
	size_t sizes[] = { 1, 100, TM_HOT_HUGE_MIN - 1, TM_HOT_HUGE_MIN, 100 << 10,
			   TM_HUGE_PAGE + 1 };
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint8_t *p = tm_alloc_hot(sizes[i]);
		ck_assert_ptr_nonnull(p);
		size_t align = sizes[i] >= TM_HOT_HUGE_MIN ? TM_HUGE_PAGE : 64;
		ck_assert_msg((uintptr_t)p % align == 0, "%zu bytes at %p: not %zu-aligned",
			      sizes[i], (void *)p, align);
		size_t nonzero = 0;
		for (size_t j = 0; j < sizes[i]; j++)
			nonzero += p[j] != 0;
		ck_assert_uint_eq(nonzero, 0);
		memset(p, 0xa5, sizes[i]);
		tm_free_aligned(p);
	}
	ck_assert_ptr_null(tm_alloc_hot(SIZE_MAX - 100));
}
END_TEST

START_TEST(test_isa_parse)
{
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	tm_isa isa;
	tm_err e;
	ck_assert_int_eq(tm_isa_parse("portable", &cpu, &isa, &e), 0);
	ck_assert_int_eq(isa, TM_ISA_PORTABLE);
	ck_assert_int_eq(tm_isa_parse("auto", &cpu, &isa, &e), 0);
	ck_assert_int_eq(isa, tm_isa_best(&cpu));
	ck_assert_int_eq(tm_isa_parse("sse9", &cpu, &isa, &e), TM_EINVAL);
	ck_assert_ptr_nonnull(strstr(e.msg, "'sse9' is unknown"));
	tm_cpu none = { 0 };
	ck_assert_int_eq(tm_isa_parse("avx512", &none, &isa, &e), TM_EINVAL);
	ck_assert_ptr_nonnull(strstr(e.msg, "not supported"));
	ck_assert_int_eq(tm_isa_best(&none), TM_ISA_PORTABLE);
}
END_TEST

typedef struct pool_arg {
	atomic_int hits[1000];
} pool_arg;

static void pool_task(void *arg, int i)
{
	pool_arg *a = arg;
	atomic_fetch_add(&a->hits[i], 1);
}

START_TEST(test_pool_runs_every_task_once)
{
	for (int threads = 1; threads <= 4; threads++) {
		tm_pool *p = tm_pool_new(threads);
		ck_assert_int_eq(tm_pool_threads(p), threads);
		static pool_arg a;
		for (int round = 0; round < 20; round++) {
			memset(&a, 0, sizeof(a));
			int n = 1 + round * 50;
			tm_pool_run(p, n, pool_task, &a);
			for (int i = 0; i < 1000; i++)
				ck_assert_int_eq(atomic_load(&a.hits[i]), i < n ? 1 : 0);
		}
		tm_pool_free(p);
	}
	tm_pool_free(NULL);
	ck_assert_int_eq(tm_pool_threads(NULL), 1);
}
END_TEST

START_TEST(test_prof_sums_by_layer_and_caps)
{
	tm_prof p;
	tm_prof_reset(&p);
	tm_prof_entry *a = tm_prof_entry_get(&p, "0", "linear", "f32");
	tm_prof_add(a, 100, 2000, 64);
	tm_prof_entry *b = tm_prof_entry_get(&p, "1", "relu", "f32");
	tm_prof_add(b, 5, 0, 16);
	tm_prof_add(tm_prof_entry_get(&p, "0", "ignored", "ignored"), 50, 2000, 64);
	ck_assert_int_eq(p.n, 2);
	ck_assert_str_eq(p.e[0].layer, "0");
	ck_assert_str_eq(p.e[0].op, "linear");
	ck_assert_int_eq(p.e[0].calls, 2);
	ck_assert_int_eq(p.e[0].time_ns, 150);
	ck_assert_int_eq(p.e[0].flops, 4000);
	ck_assert_int_eq(p.e[0].bytes, 128);
	ck_assert_int_eq(p.e[1].calls, 1);
	/* A full table hands out NULL, which tm_prof_add ignores; NULL profiles are no-ops too. */
	char name[16];
	for (int i = 2; i < TM_PROF_MAX + 5; i++) {
		snprintf(name, sizeof(name), "l%d", i);
		tm_prof_add(tm_prof_entry_get(&p, name, "linear", "f32"), 1, 1, 1);
	}
	ck_assert_int_eq(p.n, TM_PROF_MAX);
	ck_assert_ptr_null(tm_prof_entry_get(NULL, "0", "linear", "f32"));
	tm_prof_add(NULL, 1, 1, 1);
	/* A long name is cut, not overrun. */
	tm_prof_reset(&p);
	tm_prof_entry *c = tm_prof_entry_get(&p, "a-very-long-layer-name-that-does-not-fit-in-forty",
					     "linear", "f32");
	ck_assert_uint_eq(strlen(c->layer), sizeof(c->layer) - 1);
}
END_TEST

START_TEST(test_peak_rss_grows_with_touched_memory)
{
	int64_t before = tm_peak_rss_bytes();
	ck_assert_int_gt(before, 0);
	size_t len = 64u << 20;
	char *big = malloc(len);
	ck_assert_ptr_nonnull(big);
	memset(big, 1, len);  /* touched pages count as resident */
	int64_t after = tm_peak_rss_bytes();
	ck_assert_int_ge(after, before + (int64_t)(len / 2));
	ck_assert_int_eq(big[len - 1], 1);
	free(big);
}
END_TEST

START_TEST(test_prof_peak_only_on_supported_isas)
{
	/* A CPU without any SIMD feature: only the scalar measurement runs, the others answer 0
	 * (never run an instruction the CPU lacks).  Every supported ISA gives a positive, finite
	 * figure; its size is the bench's business, not a test's. */
	tm_cpu none;
	memset(&none, 0, sizeof(none));
	ck_assert_double_eq(tm_prof_peak_gflops(&none, TM_ISA_AVX2, 0.001), 0);
	ck_assert_double_eq(tm_prof_peak_gflops(&none, TM_ISA_AVX512, 0.001), 0);
	double scalar = tm_prof_peak_gflops(&none, TM_ISA_PORTABLE, 0.001);
	ck_assert(scalar > 0 && isfinite(scalar));
	tm_cpu cpu;
	tm_cpu_detect(&cpu);
	for (int isa = TM_ISA_PORTABLE; isa <= TM_ISA_AVX512; isa++) {
		double g = tm_prof_peak_gflops(&cpu, (tm_isa)isa, 0.001);
		if (tm_isa_supported(&cpu, (tm_isa)isa))
			ck_assert(g > 0 && isfinite(g));
		else
			ck_assert_double_eq(g, 0);
	}
}
END_TEST

Suite *util_suite(void)
{
	Suite *s = suite_create("util");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_err_set_formats_and_returns_code);
	tcase_add_test(tc, test_arena_aligns_and_refuses_overflow);
	tcase_add_test(tc, test_alloc_hot_alignment_and_zero_fill);
	tcase_add_test(tc, test_isa_parse);
	tcase_add_test(tc, test_pool_runs_every_task_once);
	tcase_add_test(tc, test_prof_sums_by_layer_and_caps);
	tcase_add_test(tc, test_peak_rss_grows_with_touched_memory);
	tcase_add_test(tc, test_prof_peak_only_on_supported_isas);
	suite_add_tcase(s, tc);
	return s;
}
