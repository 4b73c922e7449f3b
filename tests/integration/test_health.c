/* test_health.c: integration suite: the real tinymlperfd on a free loopback port, /healthz
 * over a real socket, errors for unknown routes, and a clean stop on SIGTERM and SIGINT. */
#include "tests.h"
#include "server.h"

#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

START_TEST(test_healthz_over_a_real_socket)
{
	tt_daemon d;
	ck_assert_int_eq(tt_daemon_start(&d, NULL), 0);
	char *body;
	int status = tt_http(d.port, "GET", "/healthz", NULL, NULL, 0, &body);
	ck_assert_int_eq(status, 200);
	cJSON *j = cJSON_Parse(body);
	ck_assert_ptr_nonnull(j);
	ck_assert_str_eq(cJSON_GetObjectItem(j, "status")->valuestring, "ok");
	ck_assert(cJSON_IsString(cJSON_GetObjectItem(j, "version")));
	ck_assert_int_eq(cJSON_GetObjectItem(j, "schema_version")->valueint, db_migration_count());
	cJSON_Delete(j);
	free(body);

	char db_path[600];
	snprintf(db_path, sizeof(db_path), "%s/tinymlperf.db", d.data_dir);
	ck_assert_int_eq(access(db_path, F_OK), 0);
	ck_assert_int_eq(tt_daemon_stop(&d, SIGTERM), 0);
}
END_TEST

START_TEST(test_errors_are_json_and_sigint_stops)
{
	tt_daemon d;
	ck_assert_int_eq(tt_daemon_start(&d, NULL), 0);
	char *body;
	ck_assert_int_eq(tt_http(d.port, "GET", "/no/such/thing", NULL, NULL, 0, &body), 404);
	cJSON *j = cJSON_Parse(body);
	ck_assert_ptr_nonnull(j);
	cJSON *e = cJSON_GetObjectItem(j, "error");
	ck_assert_str_eq(cJSON_GetObjectItem(e, "code")->valuestring, "not_found");
	cJSON_Delete(j);
	free(body);
	ck_assert_int_eq(tt_http(d.port, "DELETE", "/healthz", NULL, NULL, 0, &body), 405);
	free(body);
	/* A body over the limit is refused with 413 before it is read. */
	size_t big = 2u << 20;
	char *payload = calloc(1, big);
	memset(payload, 'a', big - 1);
	int st = tt_http(d.port, "POST", "/healthz", NULL, payload, big - 1, &body);
	ck_assert(st == 413 || st == -1);
	free(body);
	free(payload);
	ck_assert_int_eq(tt_http(d.port, "GET", "/healthz", NULL, NULL, 0, NULL), 200);
	ck_assert_int_eq(tt_daemon_stop(&d, SIGINT), 0);
}
END_TEST

Suite *health_suite(void)
{
	Suite *s = suite_create("health");
	TCase *tc = tcase_create("daemon");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_healthz_over_a_real_socket);
	tcase_add_test(tc, test_errors_are_json_and_sigint_stops);
	suite_add_tcase(s, tc);
	return s;
}
