/* test_opts.c: Check suite of server/opts.c: defaults, environment, flags, bounds and the
 * messages a user sees for bad values. */
#include "tests.h"
#include "server.h"

#include <string.h>

static int parse(srv_opts *o, char **argv, char *const *env, char *err)
{
	int argc = 0;
	while (argv[argc])
		argc++;
	FILE *out = fopen("/dev/null", "w");
	int r = srv_opts_parse(o, argc, argv, env, out, err, 512);
	fclose(out);
	return r;
}

START_TEST(test_defaults)
{
	srv_opts o;
	char err[512];
	char *argv[] = { "tinymlperfd", NULL };
	ck_assert_int_eq(parse(&o, argv, NULL, err), SRV_OPTS_RUN);
	ck_assert_str_eq(o.listen, "127.0.0.1:8080");
	ck_assert_str_eq(o.data_dir, "./var");
	ck_assert_str_eq(o.db_path, "./var/tinymlperf.db");
	ck_assert_int_eq(o.max_body_bytes, 1048576);
	ck_assert(!o.check_only);
}
END_TEST

START_TEST(test_env_then_flags)
{
	srv_opts o;
	char err[512];
	char *env[] = { "TINYMLPERF_LISTEN=127.0.0.1:9", "TINYMLPERF_DATA_DIR=/srv/t",
			"TINYMLPERF_MAX_BODY=4096", "PATH=/bin", NULL };
	char *argv[] = { "tinymlperfd", "--listen", "[::1]:7", "--check", NULL };
	ck_assert_int_eq(parse(&o, argv, env, err), SRV_OPTS_RUN);
	ck_assert_str_eq(o.listen, "[::1]:7");
	ck_assert_str_eq(o.data_dir, "/srv/t");
	ck_assert_str_eq(o.db_path, "/srv/t/tinymlperf.db");
	ck_assert_int_eq(o.max_body_bytes, 4096);
	ck_assert(o.check_only);
}
END_TEST

START_TEST(test_bad_values_name_the_option_and_limit)
{
	srv_opts o;
	char err[512];
	char *a1[] = { "tinymlperfd", "--max-connections", "0", NULL };
	ck_assert_int_eq(parse(&o, a1, NULL, err), SRV_OPTS_ERROR);
	ck_assert_ptr_nonnull(strstr(err, "'max-connections' is '0', must be an integer in [1, 65536]"));
	char *a2[] = { "tinymlperfd", "--max-body", "12abc", NULL };
	ck_assert_int_eq(parse(&o, a2, NULL, err), SRV_OPTS_ERROR);
	ck_assert_ptr_nonnull(strstr(err, "max-body"));
	char *a3[] = { "tinymlperfd", "--frobnicate", NULL };
	ck_assert_int_eq(parse(&o, a3, NULL, err), SRV_OPTS_ERROR);
	ck_assert_ptr_nonnull(strstr(err, "unknown option '--frobnicate'"));
	char *a4[] = { "tinymlperfd", "--listen", NULL };
	ck_assert_int_eq(parse(&o, a4, NULL, err), SRV_OPTS_ERROR);
	ck_assert_ptr_nonnull(strstr(err, "needs a value"));
	char *a5[] = { "tinymlperfd", "--log-level", "loud", NULL };
	ck_assert_int_eq(parse(&o, a5, NULL, err), SRV_OPTS_ERROR);
	ck_assert_ptr_nonnull(strstr(err, "'log-level' is 'loud'"));
	char *env[] = { "TINYMLPERF_CONN_TIMEOUT=-5", NULL };
	char *a6[] = { "tinymlperfd", NULL };
	ck_assert_int_eq(parse(&o, a6, env, err), SRV_OPTS_ERROR);
	ck_assert_ptr_nonnull(strstr(err, "env TINYMLPERF_CONN_TIMEOUT"));
	char longdir[5000];
	memset(longdir, 'x', sizeof(longdir) - 1);
	longdir[sizeof(longdir) - 1] = '\0';
	char *a7[] = { "tinymlperfd", "--data-dir", longdir, NULL };
	ck_assert_int_eq(parse(&o, a7, NULL, err), SRV_OPTS_ERROR);
	ck_assert_ptr_nonnull(strstr(err, "must be under"));
	char *a8[] = { "tinymlperfd", "stray", NULL };
	ck_assert_int_eq(parse(&o, a8, NULL, err), SRV_OPTS_ERROR);
	ck_assert_ptr_nonnull(strstr(err, "unexpected argument 'stray'"));
}
END_TEST

START_TEST(test_help_and_version_exit)
{
	srv_opts o;
	char err[512];
	char *a1[] = { "tinymlperfd", "--help", NULL };
	ck_assert_int_eq(parse(&o, a1, NULL, err), SRV_OPTS_EXIT);
	char *a2[] = { "tinymlperfd", "--version", NULL };
	ck_assert_int_eq(parse(&o, a2, NULL, err), SRV_OPTS_EXIT);
}
END_TEST

Suite *opts_suite(void)
{
	Suite *s = suite_create("opts");
	TCase *tc = tcase_create("parse");
	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_env_then_flags);
	tcase_add_test(tc, test_bad_values_name_the_option_and_limit);
	tcase_add_test(tc, test_help_and_version_exit);
	suite_add_tcase(s, tc);
	return s;
}
