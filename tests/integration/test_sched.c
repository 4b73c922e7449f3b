/* test_sched.c: the worker pool against the real daemon: a submission runs through a worker
 * process, its progress streams as server-sent events, its result lands on the JSON and CSV
 * leaderboards with its rank and its timings in their table; cancelling a running job kills
 * it; teams take turns; /metrics and /healthz describe the pool; a missing reference model is
 * trained through the pool first while submissions for it wait. */
#include "tests.h"

#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ADMIN "sched-admin-token-0123456789"

static int start_fake(tt_daemon *d, const char *const *more)
{
	char *fake = tt_worker_path("tm-fake-worker");
	const char *args[24] = { "--worker", fake, "--workers", "1", "--drain-grace", "0" };
	int n = 6;
	for (int i = 0; more && more[i] && n < 23; i++)
		args[n++] = more[i];
	args[n] = NULL;
	int rc = tt_daemon_start_admin(d, ADMIN, args);
	free(fake);
	return rc;
}

static int64_t submit(tt_daemon *d, const char *token, const char *config)
{
	char hdr[160];
	snprintf(hdr, sizeof(hdr), "Authorization: Bearer %s\r\n", token);
	char *body = NULL;
	int st = tt_http(d->port, "POST", "/api/v1/submissions", hdr, config, strlen(config), &body);
	ck_assert_msg(st == 202, "submit: %d %s", st, body ? body : "");
	cJSON *j = cJSON_Parse(body);
	int64_t id = (int64_t)cJSON_GetObjectItem(j, "id")->valuedouble;
	cJSON_Delete(j);
	free(body);
	return id;
}

static cJSON *get_json(tt_daemon *d, const char *path)
{
	char *body = NULL;
	int st = tt_http(d->port, "GET", path, NULL, NULL, 0, &body);
	ck_assert_msg(st == 200, "GET %s: %d", path, st);
	cJSON *j = cJSON_Parse(body);
	free(body);
	ck_assert_ptr_nonnull(j);
	return j;
}

START_TEST(test_progress_result_and_leaderboards)
{
	tt_daemon d;
	ck_assert_int_eq(start_fake(&d, NULL), 0);
	char tok[80];
	ck_assert_int_eq(tt_make_team(d.port, ADMIN, "team <one>", tok, sizeof(tok)), 0);
	int64_t id = submit(&d, tok, "{\"event\":\"mlp_sprint\",\"name\":\"slow speedup:3.5\"}");

	/* The event stream follows the job to its end, then closes. */
	char path[96];
	snprintf(path, sizeof(path), "/api/v1/submissions/%lld/events", (long long)id);
	char *hdrs = NULL, *stream = NULL;
	int st = tt_http_ex(d.port, "GET", path, NULL, NULL, 0, &hdrs, &stream);
	ck_assert_int_eq(st, 200);
	ck_assert_ptr_nonnull(strstr(hdrs, "text/event-stream"));
	ck_assert_msg(strstr(stream, "event: progress\ndata: {\"seq\":1,"), "stream: %s", stream);
	ck_assert_ptr_nonnull(strstr(stream, "\"stage\":\"benchmark\""));
	ck_assert_ptr_nonnull(strstr(stream, "event: status\ndata: {\"status\":\"finished\"}"));
	/* Progress arrives in order and only once. */
	const char *p2 = strstr(stream, "\"seq\":2,"), *p3 = strstr(stream, "\"seq\":3,");
	ck_assert(p2 && p3 && p2 < p3);
	ck_assert_ptr_null(strstr(p2 + 1, "\"seq\":2,"));
	free(hdrs);
	free(stream);

	/* A late subscriber gets the stored progress and the final status. */
	st = tt_http(d.port, "GET", path, NULL, NULL, 0, &stream);
	ck_assert_int_eq(st, 200);
	ck_assert_ptr_nonnull(strstr(stream, "\"seq\":20,"));
	ck_assert_ptr_nonnull(strstr(stream, "{\"status\":\"finished\"}"));
	free(stream);

	char *body = tt_wait_submission(d.port, id, NULL, 30);
	ck_assert_ptr_nonnull(body);
	cJSON *j = cJSON_Parse(body);
	free(body);
	ck_assert_str_eq(cJSON_GetObjectItem(j, "status")->valuestring, "finished");
	cJSON *res = cJSON_GetObjectItem(j, "result");
	ck_assert(cJSON_IsObject(res));
	ck_assert_double_eq_tol(cJSON_GetObjectItem(cJSON_GetObjectItem(res, "speedup"), "value")->valuedouble,
				3.5, 1e-9);
	/* The timings moved to their table. */
	ck_assert_ptr_null(cJSON_GetObjectItem(res, "timings"));
	cJSON_Delete(j);
	ck_assert_int_eq(tt_db_scalar(&d, "SELECT count(*) FROM timings WHERE series='submission'"), 100);
	ck_assert_int_eq(tt_db_scalar(&d, "SELECT count(*) FROM timings WHERE series='baseline'"), 100);
	ck_assert_int_eq(tt_db_scalar(&d, "SELECT count(*) FROM progress"), 23);

	/* A second, slower entry of another team ranks below it. */
	char tok2[80];
	ck_assert_int_eq(tt_make_team(d.port, ADMIN, "team two", tok2, sizeof(tok2)), 0);
	int64_t id2 = submit(&d, tok2, "{\"event\":\"mlp_sprint\",\"name\":\"speedup:1.25\"}");
	body = tt_wait_submission(d.port, id2, "finished", 30);
	ck_assert_ptr_nonnull(body);
	free(body);
	j = get_json(&d, "/api/v1/leaderboard/mlp_sprint");
	cJSON *rows = cJSON_GetObjectItem(j, "rows");
	ck_assert_int_eq(cJSON_GetArraySize(rows), 2);
	cJSON *r0 = cJSON_GetArrayItem(rows, 0), *r1 = cJSON_GetArrayItem(rows, 1);
	ck_assert_int_eq((int64_t)cJSON_GetObjectItem(r0, "submission")->valuedouble, id);
	ck_assert_int_eq((int)cJSON_GetObjectItem(r0, "rank")->valuedouble, 1);
	ck_assert_str_eq(cJSON_GetObjectItem(r0, "team")->valuestring, "team <one>");
	ck_assert_int_eq((int64_t)cJSON_GetObjectItem(r1, "submission")->valuedouble, id2);
	ck_assert_int_eq((int)cJSON_GetObjectItem(r1, "rank")->valuedouble, 2);
	cJSON_Delete(j);
	st = tt_http(d.port, "GET", "/api/v1/leaderboard/mlp_sprint?format=csv", NULL, NULL, 0, &body);
	ck_assert_int_eq(st, 200);
	ck_assert_msg(strstr(body, "team <one>") && strstr(body, "3.5") && strstr(body, "1.25"),
		      "csv: %s", body);
	ck_assert(strstr(body, "team <one>") < strstr(body, "team two"));
	free(body);

	/* The pool as /metrics and /healthz see it. */
	st = tt_http(d.port, "GET", "/metrics", NULL, NULL, 0, &body);
	ck_assert_int_eq(st, 200);
	ck_assert_ptr_nonnull(strstr(body, "tinymlperf_submissions{status=\"finished\"} 2\n"));
	ck_assert_ptr_nonnull(strstr(body, "tinymlperf_worker_slots 1\n"));
	ck_assert_ptr_nonnull(strstr(body, "tinymlperf_jobs_started_total 2\n"));
	ck_assert_ptr_nonnull(strstr(body, "tinymlperf_http_requests_total{route=\"POST /api/v1/submissions\",code=\"2xx\"} 2\n"));
	ck_assert_ptr_nonnull(strstr(body, "tinymlperf_http_request_duration_seconds_count{route=\"GET /api/v1/leaderboard/{}\"} 2\n"));
	free(body);
	j = get_json(&d, "/healthz");
	ck_assert_int_eq((int)cJSON_GetObjectItem(cJSON_GetObjectItem(j, "workers"), "slots")->valuedouble, 1);
	ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "references"), "mlp_sprint")->valuestring,
			 "missing");
	cJSON_Delete(j);
	ck_assert_int_eq(tt_daemon_stop(&d, SIGTERM), 0);
}
END_TEST

START_TEST(test_cancel_kills_running_job)
{
	tt_daemon d;
	ck_assert_int_eq(start_fake(&d, NULL), 0);
	char tok[80];
	ck_assert_int_eq(tt_make_team(d.port, ADMIN, "canceller", tok, sizeof(tok)), 0);
	int64_t id = submit(&d, tok, "{\"event\":\"mlp_sprint\",\"name\":\"fault:hang\"}");
	char *body = tt_wait_submission(d.port, id, "running", 20);
	ck_assert_ptr_nonnull(body);
	free(body);
	char hdr[160], path[64];
	snprintf(hdr, sizeof(hdr), "Authorization: Bearer %s\r\n", tok);
	snprintf(path, sizeof(path), "/api/v1/submissions/%lld", (long long)id);
	ck_assert_int_eq(tt_http(d.port, "DELETE", path, hdr, NULL, 0, NULL), 200);
	/* The slot is free again: the next submission runs to its end. */
	int64_t id2 = submit(&d, tok, "{\"event\":\"cnn_marathon\",\"name\":\"after\"}");
	body = tt_wait_submission(d.port, id2, NULL, 30);
	ck_assert_ptr_nonnull(body);
	ck_assert_ptr_nonnull(strstr(body, "\"status\":\"finished\""));
	free(body);
	body = tt_wait_submission(d.port, id, NULL, 5);
	ck_assert_ptr_nonnull(strstr(body, "\"status\":\"cancelled\""));
	free(body);
	ck_assert_int_eq(tt_db_scalar(&d, "SELECT count(*) FROM results"), 1);
	ck_assert_int_eq(tt_daemon_stop(&d, SIGTERM), 0);
}
END_TEST

/* Round robin over teams: with team A's long job running and A2, A3, B1 queued in that order,
 * B1 runs before A2. */
START_TEST(test_teams_take_turns)
{
	tt_daemon d;
	ck_assert_int_eq(start_fake(&d, (const char *[]){ "--quota-queued", "10", NULL }), 0);
	char a[80], b[80];
	ck_assert_int_eq(tt_make_team(d.port, ADMIN, "aaa", a, sizeof(a)), 0);
	ck_assert_int_eq(tt_make_team(d.port, ADMIN, "bbb", b, sizeof(b)), 0);
	int64_t a1 = submit(&d, a, "{\"event\":\"mlp_sprint\",\"name\":\"slow A1\"}");
	char *body = tt_wait_submission(d.port, a1, "running", 20);
	free(body);
	int64_t a2 = submit(&d, a, "{\"event\":\"mlp_sprint\",\"name\":\"A2\"}");
	int64_t a3 = submit(&d, a, "{\"event\":\"mlp_sprint\",\"name\":\"A3\"}");
	int64_t b1 = submit(&d, b, "{\"event\":\"mlp_sprint\",\"name\":\"B1\"}");
	body = tt_wait_submission(d.port, a3, "finished", 60);
	ck_assert_ptr_nonnull(body);
	free(body);
	char sql[256];
	snprintf(sql, sizeof(sql), "SELECT (SELECT started_at FROM submissions WHERE id=%lld) < "
		 "(SELECT started_at FROM submissions WHERE id=%lld)", (long long)b1, (long long)a2);
	ck_assert_int_eq(tt_db_scalar(&d, sql), 1);
	snprintf(sql, sizeof(sql), "SELECT (SELECT started_at FROM submissions WHERE id=%lld) < "
		 "(SELECT started_at FROM submissions WHERE id=%lld)", (long long)a2, (long long)a3);
	ck_assert_int_eq(tt_db_scalar(&d, sql), 1);
	ck_assert_int_eq(tt_daemon_stop(&d, SIGTERM), 0);
}
END_TEST

/* First start without the MLP's reference: the daemon trains it through a worker slot (the
 * real tinymlperf-run), and a submission for the event waits in the queue meanwhile. */
START_TEST(test_reference_trained_first)
{
	tt_daemon d;
	char *worker = tt_worker_path("tinymlperf-run");
	const char *args[] = { "--train-references", "mlp_sprint", "--workers", "1",
			       "--drain-grace", "0", "--worker", worker, NULL };
	ck_assert_int_eq(tt_daemon_start_admin(&d, ADMIN, args), 0);
	free(worker);
	cJSON *j = get_json(&d, "/healthz");
	const char *state = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "references"),
						"mlp_sprint")->valuestring;
	ck_assert_msg(strcmp(state, "training") == 0 || strcmp(state, "queued") == 0, "%s", state);
	ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "references"),
					     "cnn_marathon")->valuestring, "missing");
	cJSON_Delete(j);
	char tok[80];
	ck_assert_int_eq(tt_make_team(d.port, ADMIN, "early bird", tok, sizeof(tok)), 0);
	int64_t id = submit(&d, tok, "{\"event\":\"mlp_sprint\"}");
	char path[64];
	snprintf(path, sizeof(path), "/api/v1/submissions/%lld", (long long)id);
	char *body = NULL;
	ck_assert_int_eq(tt_http(d.port, "GET", path, NULL, NULL, 0, &body), 200);
	ck_assert_ptr_nonnull(strstr(body, "\"status\":\"queued\""));
	free(body);
	/* Training takes seconds to a minute on a loaded machine. */
	bool ready = false;
	for (int i = 0; i < 1800 && !ready; i++) {
		j = get_json(&d, "/healthz");
		state = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "references"), "mlp_sprint")->valuestring;
		ready = strcmp(state, "ready") == 0;
		if (strcmp(state, "failed") == 0)
			ck_abort_msg("reference training failed: %s", tt_daemon_log(&d));
		cJSON_Delete(j);
		if (!ready) {
			struct timespec ts = { 0, 100 * 1000 * 1000 };
			nanosleep(&ts, NULL);
		}
	}
	ck_assert(ready);
	char model[700];
	snprintf(model, sizeof(model), "%s/models/mlp_sprint.safetensors", d.data_dir);
	ck_assert_int_eq(access(model, R_OK), 0);
	/* Now the queued submission leaves the queue. */
	body = tt_wait_submission(d.port, id, "running", 20);
	if (!body)
		body = tt_wait_submission(d.port, id, NULL, 1);
	ck_assert_ptr_nonnull(body);
	free(body);
	ck_assert_int_eq(tt_daemon_stop(&d, SIGTERM), 0);
}
END_TEST

/* The whole path with the real worker: a reference trained for one epoch, an INT8 config
 * submitted over HTTP, tinymlperf-run run as the worker (sandboxed, as the worker user when
 * root), its result stored and ranked when it is VALID and passes the gate. */
START_TEST(test_real_worker_end_to_end)
{
	tt_daemon d;
	char *run = tt_worker_path("tinymlperf-run");
	const char *args[] = { "--workers", "1", "--drain-grace", "0", "--worker-min-count", "64",
			       "--worker-min-duration", "0.3", "--worker-max-duration", "20",
			       "--worker", run, NULL };
	ck_assert_int_eq(tt_daemon_start_admin(&d, ADMIN, args), 0);
	char cmd[1400];
	snprintf(cmd, sizeof(cmd), "%s train mlp_sprint --data-dir %s --epochs 1 --threads 1 "
		 ">/dev/null 2>&1", run, d.data_dir);
	ck_assert_int_eq(system(cmd), 0);
	free(run);
	char tok[80];
	ck_assert_int_eq(tt_make_team(d.port, ADMIN, "real one", tok, sizeof(tok)), 0);
	int64_t id = submit(&d, tok, "{\"event\":\"mlp_sprint\",\"name\":\"int8\","
				      "\"optimize\":{\"quantize\":{\"dtype\":\"int8\"}}}");
	char *body = tt_wait_submission(d.port, id, NULL, 180);
	ck_assert_ptr_nonnull(body);
	cJSON *j = cJSON_Parse(body);
	free(body);
	const char *status = cJSON_GetObjectItem(j, "status")->valuestring;
	if (strcmp(status, "finished") != 0)
		ck_abort_msg("status %s: %s", status, cJSON_Print(cJSON_GetObjectItem(j, "error")));
	cJSON *res = cJSON_GetObjectItem(j, "result");
	cJSON *q = cJSON_GetObjectItem(res, "quality");
	ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(q, "passed")));
	ck_assert_double_gt(cJSON_GetObjectItem(q, "value")->valuedouble, 0.7);
	ck_assert_double_gt(cJSON_GetObjectItem(cJSON_GetObjectItem(res, "speedup"), "value")->valuedouble, 1.0);
	ck_assert_int_gt(tt_db_scalar(&d, "SELECT count(*) FROM timings WHERE series='baseline'"), 63);
	bool ranked = cJSON_IsTrue(cJSON_GetObjectItem(res, "valid"));
	cJSON_Delete(j);
	j = get_json(&d, "/api/v1/leaderboard/mlp_sprint");
	ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "rows")), ranked ? 1 : 0);
	cJSON_Delete(j);
	ck_assert_int_eq(tt_daemon_stop(&d, SIGTERM), 0);
}
END_TEST

Suite *sched_suite(void)
{
	Suite *s = suite_create("sched");
	TCase *tc = tcase_create("pool");
	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, test_progress_result_and_leaderboards);
	tcase_add_test(tc, test_cancel_kills_running_job);
	tcase_add_test(tc, test_teams_take_turns);
	tcase_add_test(tc, test_reference_trained_first);
	tcase_add_test(tc, test_real_worker_end_to_end);
	suite_add_tcase(s, tc);
	return s;
}
