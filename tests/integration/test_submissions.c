/* test_submissions.c: integration suite for submissions against the real daemon: JSON and
 * multipart submission, status and config visibility, cancel rules, quotas with Retry-After,
 * and bad input that is refused with a JSON error and writes no row. */
#include "tests.h"

#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ADMIN "admin-secret-for-tests-0123456789"

typedef struct fx {
	tt_daemon d;
	char admin[128];
	char team1[128], team2[128];  /* "Authorization: Bearer ...\r\n" */
	char token1[80];
} fx;

static cJSON *req(fx *f, const char *method, const char *path, const char *headers,
		  const char *body, size_t len, int *status, char **resp_headers)
{
	char *reply;
	*status = tt_http_ex(f->d.port, method, path, headers, body, len, resp_headers, &reply);
	cJSON *j = cJSON_Parse(reply);
	free(reply);
	return j;
}

static void make_team(fx *f, const char *name, char *auth, size_t len, char *token)
{
	char body[96];
	snprintf(body, sizeof(body), "{\"name\":\"%s\"}", name);
	int st;
	cJSON *j = req(f, "POST", "/api/v1/teams", f->admin, body, strlen(body), &st, NULL);
	ck_assert_int_eq(st, 201);
	const char *tok = cJSON_GetObjectItem(j, "token")->valuestring;
	snprintf(auth, len, "Authorization: Bearer %s\r\n", tok);
	if (token)
		snprintf(token, 80, "%s", tok);
	cJSON_Delete(j);
}

/* One worker slot running tm-fake-worker: configs named "fault:hang" stay running until
 * cancelled, which keeps the quota arithmetic exact. */
static void start(fx *f, const char *quota_queued)
{
	char *fake = tt_worker_path("tm-fake-worker");
	const char *args[] = { "--quota-queued", quota_queued, "--max-body", "65536", "--worker", fake,
			       "--workers", "1", "--drain-grace", "0", NULL };
	ck_assert_int_eq(tt_daemon_start_admin(&f->d, ADMIN, args), 0);
	free(fake);
	snprintf(f->admin, sizeof(f->admin), "Authorization: Bearer %s\r\n", ADMIN);
	make_team(f, "team one", f->team1, sizeof(f->team1), f->token1);
	make_team(f, "team two", f->team2, sizeof(f->team2), NULL);
}

static void stop(fx *f)
{
	ck_assert_int_eq(tt_daemon_stop(&f->d, SIGTERM), 0);
}

static int64_t submit(fx *f, const char *auth, const char *config)
{
	int st;
	cJSON *j = req(f, "POST", "/api/v1/submissions", auth, config, strlen(config), &st, NULL);
	ck_assert_msg(st == 202, "submit %s: status %d", config, st);
	int64_t id = (int64_t)cJSON_GetObjectItem(j, "id")->valuedouble;
	ck_assert_str_eq(cJSON_GetObjectItem(j, "status")->valuestring, "queued");
	cJSON_Delete(j);
	return id;
}

START_TEST(test_json_and_multipart_submission)
{
	fx f;
	start(&f, "10");
	const char *cfg = "{\"event\":\"mlp_sprint\",\"name\":\"<img src=x onerror=alert(1)>\"}";
	int64_t id = submit(&f, f.team1, cfg);
	ck_assert_int_eq(id, 1);

	/* multipart/form-data with the config as a file and the token as a field */
	char body[2048];
	const char *cnn = "{\"event\":\"cnn_marathon\",\"batch_size\":128}";
	int n = snprintf(body, sizeof(body),
			 "--XyZ\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\n%s\r\n"
			 "--XyZ\r\nContent-Disposition: form-data; name=\"config\"; filename=\"c.json\"\r\n"
			 "Content-Type: application/json\r\n\r\n%s\r\n--XyZ--\r\n", f.token1, cnn);
	int st;
	char *hdrs;
	cJSON *j = req(&f, "POST", "/api/v1/submissions",
		       "Content-Type: multipart/form-data; boundary=XyZ\r\n", body, (size_t)n, &st, &hdrs);
	ck_assert_int_eq(st, 202);
	ck_assert_ptr_nonnull(strstr(hdrs, "Location: /api/v1/submissions/2"));
	free(hdrs);
	cJSON_Delete(j);

	/* A wrong token in the form field is refused like a wrong header. */
	n = snprintf(body, sizeof(body),
		     "--XyZ\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\ntmlp_wrong\r\n"
		     "--XyZ\r\nContent-Disposition: form-data; name=\"config\"\r\n\r\n%s\r\n--XyZ--\r\n", cnn);
	j = req(&f, "POST", "/api/v1/submissions",
		"Content-Type: multipart/form-data; boundary=XyZ\r\n", body, (size_t)n, &st, NULL);
	ck_assert_int_eq(st, 401);
	ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "field")->valuestring, "token");
	cJSON_Delete(j);

	/* Status: the owner sees the config, others and anonymous viewers do not. */
	j = req(&f, "GET", "/api/v1/submissions/1", f.team1, NULL, 0, &st, NULL);
	ck_assert_int_eq(st, 200);
	const char *status = cJSON_GetObjectItem(j, "status")->valuestring;
	ck_assert_msg(strcmp(status, "queued") == 0 || strcmp(status, "running") == 0 ||
		      strcmp(status, "finished") == 0, "status %s", status);
	ck_assert_str_eq(cJSON_GetObjectItem(j, "name")->valuestring, "<img src=x onerror=alert(1)>");
	ck_assert_str_eq(cJSON_GetObjectItem(j, "team")->valuestring, "team one");
	ck_assert(cJSON_IsObject(cJSON_GetObjectItem(j, "config")));
	cJSON_Delete(j);
	j = req(&f, "GET", "/api/v1/submissions/1", f.team2, NULL, 0, &st, NULL);
	ck_assert_int_eq(st, 200);
	ck_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "config")));
	cJSON_Delete(j);
	j = req(&f, "GET", "/api/v1/submissions/1", NULL, NULL, 0, &st, NULL);
	ck_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "config")));
	cJSON_Delete(j);
	stop(&f);
}
END_TEST

START_TEST(test_cancel_rules)
{
	fx f;
	start(&f, "10");
	int64_t id = submit(&f, f.team1, "{\"event\":\"mlp_sprint\",\"name\":\"fault:hang\"}");
	int st;
	char path[64];
	snprintf(path, sizeof(path), "/api/v1/submissions/%lld", (long long)id);
	cJSON *j = req(&f, "DELETE", path, f.team2, NULL, 0, &st, NULL);
	ck_assert_int_eq(st, 403);
	cJSON_Delete(j);
	j = req(&f, "DELETE", path, NULL, NULL, 0, &st, NULL);
	ck_assert_int_eq(st, 401);
	cJSON_Delete(j);
	j = req(&f, "DELETE", path, f.team1, NULL, 0, &st, NULL);
	ck_assert_int_eq(st, 200);
	ck_assert_str_eq(cJSON_GetObjectItem(j, "status")->valuestring, "cancelled");
	cJSON_Delete(j);
	j = req(&f, "DELETE", path, f.team1, NULL, 0, &st, NULL);
	ck_assert_int_eq(st, 409);
	cJSON_Delete(j);
	j = req(&f, "GET", path, NULL, NULL, 0, &st, NULL);
	ck_assert_str_eq(cJSON_GetObjectItem(j, "status")->valuestring, "cancelled");
	cJSON_Delete(j);
	const char *bad_ids[] = { "/api/v1/submissions/0", "/api/v1/submissions/-1",
				  "/api/v1/submissions/abc", "/api/v1/submissions/99999999999999999999",
				  "/api/v1/submissions/999" };
	for (size_t i = 0; i < 5; i++) {
		j = req(&f, "GET", bad_ids[i], NULL, NULL, 0, &st, NULL);
		ck_assert_int_eq(st, 404);
		ck_assert_ptr_nonnull(cJSON_GetObjectItem(j, "error"));
		cJSON_Delete(j);
	}
	stop(&f);
}
END_TEST

START_TEST(test_quota_queued_gives_429)
{
	fx f;
	start(&f, "2");
	const char *cfg = "{\"event\":\"mlp_sprint\",\"name\":\"fault:hang\"}";
	submit(&f, f.team1, cfg);
	submit(&f, f.team1, cfg);
	int st;
	char *hdrs;
	cJSON *j = req(&f, "POST", "/api/v1/submissions", f.team1, cfg, strlen(cfg), &st, &hdrs);
	ck_assert_int_eq(st, 429);
	ck_assert_ptr_nonnull(strstr(hdrs, "Retry-After: "));
	ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "code")->valuestring, "quota");
	free(hdrs);
	cJSON_Delete(j);
	/* Another team is not affected; cancelling frees a slot. */
	submit(&f, f.team2, cfg);
	j = req(&f, "DELETE", "/api/v1/submissions/1", f.team1, NULL, 0, &st, NULL);
	cJSON_Delete(j);
	submit(&f, f.team1, cfg);
	stop(&f);
}
END_TEST

START_TEST(test_bad_input_writes_nothing)
{
	fx f;
	start(&f, "10");
	static const struct {
		int auth;  /* 0 none, 1 team1, 2 admin, 3 wrong */
		const char *body;
		int status;
		const char *field;
	} cases[] = {
		{ 1, "{\"event\":", 400, "" },
		{ 1, "{\"event\":\"imagenet\"}", 400, "event" },
		{ 1, "{\"event\":\"mlp_sprint\",\"optimize\":{\"threads\":\"two\"}}", 400, "optimize.threads" },
		{ 1, "{\"event\":\"mlp_sprint\",\"name\":\"\xc3\x28\"}", 400, "config" },
		{ 1, "[]", 400, "" },
		{ 0, "{\"event\":\"mlp_sprint\"}", 401, "Authorization" },
		{ 3, "{\"event\":\"mlp_sprint\"}", 401, "Authorization" },
		{ 2, "{\"event\":\"mlp_sprint\"}", 403, "Authorization" },
		{ 1, "{\"event\":\"mlp_sprint\",\"division\":\"open\",\"model\":{\"hidden\":[4096,4096,4096,4096,4096,4096,4096,4096]}}", 400, "model" },
	};
	const char *auths[] = { "", f.team1, f.admin, "Authorization: Bearer nope\r\n" };
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int st;
		cJSON *j = req(&f, "POST", "/api/v1/submissions", auths[cases[i].auth], cases[i].body,
			       strlen(cases[i].body), &st, NULL);
		cJSON *e = cJSON_GetObjectItem(j, "error");
		cJSON *fld = cJSON_GetObjectItem(e, "field");
		const char *fs = cJSON_IsString(fld) ? fld->valuestring : "";
		if (st != cases[i].status || strcmp(fs, cases[i].field) != 0)
			ck_abort_msg("case %zu: status %d field '%s', want %d '%s'", i, st, fs,
				     cases[i].status, cases[i].field);
		cJSON_Delete(j);
	}
	/* Oversized body: 413 before it is read. */
	size_t big = 100000;
	char *payload = malloc(big);
	memset(payload, ' ', big);
	payload[0] = '{';
	payload[big - 1] = '}';
	int st;
	cJSON *j = req(&f, "POST", "/api/v1/submissions", f.team1, payload, big, &st, NULL);
	ck_assert(st == 413 || st == -1);
	cJSON_Delete(j);
	free(payload);
	/* Nothing was written: the first accepted submission is number 1. */
	ck_assert_int_eq(submit(&f, f.team1, "{\"event\":\"mlp_sprint\"}"), 1);
	stop(&f);
}
END_TEST

Suite *submissions_suite(void)
{
	Suite *s = suite_create("submissions");
	TCase *tc = tcase_create("api");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_json_and_multipart_submission);
	tcase_add_test(tc, test_cancel_rules);
	tcase_add_test(tc, test_quota_queued_gives_429);
	tcase_add_test(tc, test_bad_input_writes_nothing);
	suite_add_tcase(s, tc);
	return s;
}
