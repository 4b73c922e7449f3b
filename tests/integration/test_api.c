/* test_api.c: integration suite for the read-only and validation endpoints of the real daemon:
 * GET /api/v1/events mirrors the event table, POST /api/v1/validate returns every config error
 * with its field path, and hostile bodies get clear JSON errors. */
#include "tests.h"
#include "events.h"

#include <cjson/cJSON.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static cJSON *call(tt_daemon *d, const char *method, const char *path, const char *body,
		   size_t len, int *status)
{
	char *reply;
	*status = tt_http(d->port, method, path, NULL, body, len, &reply);
	cJSON *j = cJSON_Parse(reply);
	free(reply);
	return j;
}

START_TEST(test_events_and_validate)
{
	tt_daemon d;
	ck_assert_int_eq(tt_daemon_start(&d, NULL), 0);
	int st;
	cJSON *j = call(&d, "GET", "/api/v1/events", NULL, 0, &st);
	ck_assert_int_eq(st, 200);
	cJSON *arr = cJSON_GetObjectItem(j, "events");
	ck_assert_int_eq(cJSON_GetArraySize(arr), EV_COUNT);
	for (int i = 0; i < EV_COUNT; i++)
		ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, i), "id")->valuestring,
				 ev_event_at(i)->name);
	cJSON_Delete(j);

	const char *ok = "{\"event\":\"mlp_sprint\",\"optimize\":{\"threads\":2}}";
	j = call(&d, "POST", "/api/v1/validate", ok, strlen(ok), &st);
	ck_assert_int_eq(st, 200);
	ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "valid")));
	ck_assert_int_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "estimates"), "params")->valueint,
			 109386);
	cJSON_Delete(j);

	const char *bad = "{\"event\":\"mlp_sprint\",\"optimize\":{\"threads\":0,\"kv_cache\":true}}";
	j = call(&d, "POST", "/api/v1/validate", bad, strlen(bad), &st);
	ck_assert_int_eq(st, 200);
	ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(j, "valid")));
	cJSON *errs = cJSON_GetObjectItem(j, "errors");
	ck_assert_int_eq(cJSON_GetArraySize(errs), 2);
	ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(errs, 0), "field")->valuestring,
			 "optimize.threads");
	ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(errs, 1), "field")->valuestring,
			 "optimize.kv_cache");
	cJSON_Delete(j);

	/* Invalid UTF-8 is a 400 with a JSON error. */
	j = call(&d, "POST", "/api/v1/validate", "{\"event\":\"\xff\"}", 12, &st);
	ck_assert_int_eq(st, 400);
	ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "code")->valuestring,
			 "invalid_utf8");
	cJSON_Delete(j);
	ck_assert_int_eq(tt_daemon_stop(&d, SIGTERM), 0);
}
END_TEST

Suite *api_suite(void)
{
	Suite *s = suite_create("api");
	TCase *tc = tcase_create("read");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_events_and_validate);
	suite_add_tcase(s, tc);
	return s;
}
