/* test_leaderboard.c: integration suite for GET /api/v1/leaderboard/{event} on the real daemon.
 * Results are written into the daemon's SQLite file the way the scheduler stores a finished
 * worker's result (until the worker pool lands, the test plays the worker): ranking by
 * speedup, best entry per team, ties to the earlier submission, INVALID and gate-failing
 * entries absent, all=1, CSV, and bad pagination refused. */
#include "tests.h"

#include <cjson/cJSON.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ADMIN "admin-secret-for-tests-0123456789"

static cJSON *get(tt_daemon *d, const char *path, int *st, const char *headers, const char *body)
{
	char *reply;
	*st = tt_http(d->port, body ? "POST" : "GET", path, headers, body, body ? strlen(body) : 0, &reply);
	cJSON *j = cJSON_Parse(reply);
	free(reply);
	return j;
}

START_TEST(test_ranking_rules)
{
	tt_daemon d;
	/* The results are written below; the worker only hangs until the daemon stops. */
	char *fake = tt_worker_path("tm-fake-worker");
	const char *args[] = { "--worker", fake, "--workers", "1", "--drain-grace", "0", NULL };
	ck_assert_int_eq(tt_daemon_start_admin(&d, ADMIN, args), 0);
	free(fake);
	char admin[128], auth[3][128];
	snprintf(admin, sizeof(admin), "Authorization: Bearer %s\r\n", ADMIN);
	const char *names[3] = { "alpha", "=cmd|' /C calc'!A0", "<b>gamma</b>" };
	int st;
	for (int t = 0; t < 3; t++) {
		char body[96];
		snprintf(body, sizeof(body), "{\"name\":\"%s\"}", names[t]);
		cJSON *j = get(&d, "/api/v1/teams", &st, admin, body);
		ck_assert_int_eq(st, 201);
		snprintf(auth[t], sizeof(auth[t]), "Authorization: Bearer %s\r\n",
			 cJSON_GetObjectItem(j, "token")->valuestring);
		cJSON_Delete(j);
	}
	/* submissions 1..6: team, speedup, valid, gate */
	static const struct { int team; double speedup; int valid, gate; } subs[] = {
		{ 0, 2.0, 1, 1 }, { 0, 3.0, 1, 1 }, { 1, 3.0, 1, 1 },
		{ 1, 9.0, 0, 1 }, { 2, 9.5, 1, 0 }, { 2, 1.5, 1, 1 },
	};
	for (int i = 0; i < 6; i++) {
		const char *cfg = i == 1 ? "{\"event\":\"mlp_sprint\",\"name\":\"fault:hang\","
					   "\"optimize\":{\"threads\":2,\"quantize\":{}}}"
					 : "{\"event\":\"mlp_sprint\",\"name\":\"fault:hang\"}";
		cJSON *j = get(&d, "/api/v1/submissions", &st, auth[subs[i].team], cfg);
		ck_assert_int_eq(st, 202);
		cJSON_Delete(j);
	}
	char dbp[700];
	snprintf(dbp, sizeof(dbp), "%s/tinymlperf.db", d.data_dir);
	sqlite3 *h;
	ck_assert_int_eq(sqlite3_open(dbp, &h), SQLITE_OK);
	sqlite3_busy_timeout(h, 5000);
	for (int i = 0; i < 6; i++) {
		char sql[512];
		snprintf(sql, sizeof(sql),
			 "UPDATE submissions SET status='finished' WHERE id=%d;"
			 "INSERT INTO results(submission_id, event, division, valid, gate_passed, speedup,"
			 " speedup_ci_low, speedup_ci_high, quality, latency_p90_ns, model_bytes, compression,"
			 " result) VALUES (%d, 'mlp_sprint', 'closed', %d, %d, %g, %g, %g, 0.88, 12000, 437544,"
			 " 1.0, '{}');", i + 1, i + 1, subs[i].valid, subs[i].gate, subs[i].speedup,
			 subs[i].speedup * 0.9, subs[i].speedup * 1.1);
		ck_assert_int_eq(sqlite3_exec(h, sql, NULL, NULL, NULL), SQLITE_OK);
	}
	sqlite3_close(h);

	cJSON *j = get(&d, "/api/v1/leaderboard/mlp_sprint", &st, NULL, NULL);
	ck_assert_int_eq(st, 200);
	cJSON *rows = cJSON_GetObjectItem(j, "rows");
	/* Best per team: alpha #2 (3.0, earlier than team 1's 3.0), team 1 #3, gamma #6. */
	ck_assert_int_eq(cJSON_GetArraySize(rows), 3);
	int want[3] = { 2, 3, 6 };
	for (int i = 0; i < 3; i++) {
		cJSON *r = cJSON_GetArrayItem(rows, i);
		ck_assert_int_eq(cJSON_GetObjectItem(r, "submission")->valueint, want[i]);
		ck_assert_int_eq(cJSON_GetObjectItem(r, "rank")->valueint, i + 1);
	}
	cJSON *first = cJSON_GetArrayItem(rows, 0);
	ck_assert_str_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(first, "techniques"), 0)->valuestring,
			 "int8 per_channel");
	ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 2), "team")->valuestring,
			 "<b>gamma</b>");
	ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "baseline"), "baseline")));
	ck_assert_int_eq(cJSON_GetObjectItem(j, "total")->valueint, 3);
	cJSON *cols = cJSON_GetObjectItem(j, "columns");
	ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(cols, 3), "better")->valuestring, "higher");
	cJSON_Delete(j);

	j = get(&d, "/api/v1/leaderboard/mlp_sprint?all=1&limit=2&offset=1", &st, NULL, NULL);
	ck_assert_int_eq(st, 200);
	ck_assert_int_eq(cJSON_GetObjectItem(j, "total")->valueint, 4);
	rows = cJSON_GetObjectItem(j, "rows");
	ck_assert_int_eq(cJSON_GetArraySize(rows), 2);
	ck_assert_int_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "submission")->valueint, 3);
	ck_assert_int_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "rank")->valueint, 2);
	cJSON_Delete(j);

	char *csv;
	ck_assert_int_eq(tt_http(d.port, "GET", "/api/v1/leaderboard/mlp_sprint?format=csv", NULL, NULL, 0, &csv), 200);
	ck_assert(strncmp(csv, "\"rank\",\"team\"", 13) == 0);
	ck_assert_ptr_nonnull(strstr(csv, "\"'=cmd|' /C calc'!A0\""));  /* neutralised formula */
	int lines = 0;
	for (char *p = csv; *p; p++)
		lines += *p == '\n';
	ck_assert_int_eq(lines, 4);
	free(csv);

	const char *bad[] = { "?limit=0", "?limit=1001", "?limit=-5", "?offset=-1", "?offset=abc",
			      "?limit=99999999999999999999", "?division=premier", "?format=xml", "?all=2" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char path[128];
		snprintf(path, sizeof(path), "/api/v1/leaderboard/mlp_sprint%s", bad[i]);
		j = get(&d, path, &st, NULL, NULL);
		ck_assert_msg(st == 400, "%s gave %d", bad[i], st);
		ck_assert_ptr_nonnull(cJSON_GetObjectItem(j, "error"));
		cJSON_Delete(j);
	}
	j = get(&d, "/api/v1/leaderboard/nope", &st, NULL, NULL);
	ck_assert_int_eq(st, 404);
	cJSON_Delete(j);
	j = get(&d, "/api/v1/leaderboard/cnn_marathon?division=open", &st, NULL, NULL);
	ck_assert_int_eq(st, 200);
	ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "rows")), 0);
	cJSON_Delete(j);
	ck_assert_int_eq(tt_daemon_stop(&d, SIGTERM), 0);
}
END_TEST

Suite *leaderboard_suite(void)
{
	Suite *s = suite_create("leaderboard");
	TCase *tc = tcase_create("api");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_ranking_rules);
	suite_add_tcase(s, tc);
	return s;
}
