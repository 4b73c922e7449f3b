/* test_faults.c: nothing is lost under faults.  Workers that crash, outgrow their memory
 * limit, hang past the timeout, print garbage or flood their output each fail only their own
 * submission, with the reason stored, and the next submission still runs; a daemon killed with
 * SIGKILL in the middle of a run finishes that submission after a restart; SIGTERM lets a
 * running job finish; 200 concurrent POSTs from several clients are each stored exactly once. */
#include "tests.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ADMIN "faults-admin-token-0123456789"

static int start_fake(tt_daemon *d, const char *const *more)
{
	char *fake = tt_worker_path("tm-fake-worker");
	const char *args[24] = { "--worker", fake, "--workers", "1", "--drain-grace", "0",
				 "--quota-queued", "1000", "--quota-per-day", "1000" };
	int n = 10;
	for (int i = 0; more && more[i] && n < 23; i++)
		args[n++] = more[i];
	args[n] = NULL;
	int rc = tt_daemon_start_admin(d, ADMIN, args);
	free(fake);
	return rc;
}

static int64_t submit(int port, const char *token, const char *name)
{
	char hdr[160], cfg[256];
	snprintf(hdr, sizeof(hdr), "Authorization: Bearer %s\r\n", token);
	snprintf(cfg, sizeof(cfg), "{\"event\":\"mlp_sprint\",\"name\":\"%s\"}", name);
	char *body = NULL;
	int st = tt_http(port, "POST", "/api/v1/submissions", hdr, cfg, strlen(cfg), &body);
	int64_t id = -1;
	if (st == 202) {
		cJSON *j = cJSON_Parse(body);
		id = (int64_t)cJSON_GetObjectItem(j, "id")->valuedouble;
		cJSON_Delete(j);
	}
	free(body);
	return id;
}

START_TEST(test_bad_workers_fail_alone)
{
	static const struct {
		const char *name;
		const char *reason;   /* in the stored error */
	} faults[] = {
		{ "fault:segv", "crashed: Segmentation fault" },
		{ "fault:oom", "resource limit: tm-fake-worker: memory limit of 64 MiB reached" },
		{ "fault:hang", "wall-clock limit" },
		{ "fault:garbage", "malformed output and was killed: 'this is not a protocol line'" },
		{ "fault:flood", "more than 1048576 bytes of output" },
		{ "fault:badresult", "result was rejected: 'model.bytes'" },
	};
	tt_daemon d;
	const char *more[] = { "--worker-timeout", "2", "--worker-max-output", "1048576",
			       "--worker-memory", "64", NULL };
	ck_assert_int_eq(start_fake(&d, more), 0);
	char tok[80];
	ck_assert_int_eq(tt_make_team(d.port, ADMIN, "chaos", tok, sizeof(tok)), 0);
	int n = (int)(sizeof(faults) / sizeof(faults[0]));
	int64_t ids[8];
	for (int i = 0; i < n; i++)
		ids[i] = submit(d.port, tok, faults[i].name);
	int64_t good = submit(d.port, tok, "well behaved");
	for (int i = 0; i < n; i++) {
		char *body = tt_wait_submission(d.port, ids[i], NULL, 60);
		ck_assert_msg(body != NULL, "%s: no final status", faults[i].name);
		cJSON *j = cJSON_Parse(body);
		const char *status = cJSON_GetObjectItem(j, "status")->valuestring;
		cJSON *err = cJSON_GetObjectItem(j, "error");
		ck_assert_msg(strcmp(status, "failed") == 0, "%s: status %s", faults[i].name, status);
		ck_assert_msg(cJSON_IsString(err) && strstr(err->valuestring, faults[i].reason),
			      "%s: error '%s', want '%s'", faults[i].name,
			      cJSON_IsString(err) ? err->valuestring : "(none)", faults[i].reason);
		cJSON_Delete(j);
		free(body);
	}
	char *body = tt_wait_submission(d.port, good, NULL, 30);
	ck_assert_ptr_nonnull(body);
	ck_assert_msg(strstr(body, "\"status\":\"finished\""), "%s", body);
	free(body);
	/* Failed ones wrote no result; the failures are counted by reason. */
	ck_assert_int_eq(tt_db_scalar(&d, "SELECT count(*) FROM results"), 1);
	ck_assert_int_eq(tt_http(d.port, "GET", "/metrics", NULL, NULL, 0, &body), 200);
	ck_assert_ptr_nonnull(strstr(body, "tinymlperf_worker_failures_total{reason=\"crash\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(body, "tinymlperf_worker_failures_total{reason=\"timeout\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(body, "tinymlperf_worker_failures_total{reason=\"malformed\"} 2\n"));
	ck_assert_ptr_nonnull(strstr(body, "tinymlperf_worker_failures_total{reason=\"output_limit\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(body, "tinymlperf_worker_failures_total{reason=\"resource_limit\"} 1\n"));
	free(body);
	ck_assert_int_eq(tt_daemon_stop(&d, SIGTERM), 0);
}
END_TEST

START_TEST(test_kill9_then_restart_finishes_the_run)
{
	tt_daemon d;
	ck_assert_int_eq(start_fake(&d, NULL), 0);
	char tok[80];
	ck_assert_int_eq(tt_make_team(d.port, ADMIN, "survivor", tok, sizeof(tok)), 0);
	int64_t running = submit(d.port, tok, "slow one");
	int64_t queued = submit(d.port, tok, "queued behind it");
	char *body = tt_wait_submission(d.port, running, "running", 20);
	ck_assert_ptr_nonnull(body);
	free(body);
	ck_assert_int_eq(tt_daemon_kill(&d, SIGKILL), 128 + SIGKILL);
	/* Nothing accepted is lost: both rows are there, one of them still "running". */
	ck_assert_int_eq(tt_db_scalar(&d, "SELECT count(*) FROM submissions"), 2);
	ck_assert_int_eq(tt_db_scalar(&d, "SELECT count(*) FROM submissions WHERE status='running'"), 1);

	char *fake = tt_worker_path("tm-fake-worker");
	const char *args[] = { "--worker", fake, "--workers", "1", "--drain-grace", "0", NULL };
	ck_assert_int_eq(tt_daemon_restart(&d, args), 0);
	free(fake);
	int64_t ids[2] = { running, queued };
	for (int i = 0; i < 2; i++) {
		body = tt_wait_submission(d.port, ids[i], NULL, 30);
		ck_assert_ptr_nonnull(body);
		ck_assert_msg(strstr(body, "\"status\":\"finished\""), "%s", body);
		free(body);
	}
	ck_assert_int_eq(tt_db_scalar(&d, "SELECT attempts FROM submissions WHERE id=1"), 2);
	ck_assert_int_eq(tt_db_scalar(&d, "SELECT count(*) FROM results"), 2);
	ck_assert_int_eq(tt_daemon_stop(&d, SIGTERM), 0);
}
END_TEST

/* A submission interrupted too often fails with a reason instead of looping forever. */
START_TEST(test_max_attempts)
{
	tt_daemon d;
	ck_assert_int_eq(start_fake(&d, (const char *[]){ "--max-attempts", "1", NULL }), 0);
	char tok[80];
	ck_assert_int_eq(tt_make_team(d.port, ADMIN, "unlucky", tok, sizeof(tok)), 0);
	int64_t id = submit(d.port, tok, "fault:hang");
	char *body = tt_wait_submission(d.port, id, "running", 20);
	free(body);
	tt_daemon_kill(&d, SIGKILL);
	char *fake = tt_worker_path("tm-fake-worker");
	const char *args[] = { "--worker", fake, "--max-attempts", "1", "--drain-grace", "0", NULL };
	ck_assert_int_eq(tt_daemon_restart(&d, args), 0);
	free(fake);
	body = tt_wait_submission(d.port, id, NULL, 10);
	ck_assert_ptr_nonnull(body);
	ck_assert_msg(strstr(body, "\"status\":\"failed\"") && strstr(body, "interrupted while running 1 times"),
		      "%s", body);
	free(body);
	ck_assert_int_eq(tt_daemon_stop(&d, SIGTERM), 0);
}
END_TEST

/* SIGTERM: no new requests, the running job finishes within the grace period, the queued one
 * stays queued for the next start, and the daemon exits 0. */
START_TEST(test_sigterm_drains)
{
	tt_daemon d;
	ck_assert_int_eq(start_fake(&d, (const char *[]){ "--drain-grace", "30", NULL }), 0);
	char tok[80];
	ck_assert_int_eq(tt_make_team(d.port, ADMIN, "graceful", tok, sizeof(tok)), 0);
	int64_t running = submit(d.port, tok, "slow and steady");
	submit(d.port, tok, "waiting");
	char *body = tt_wait_submission(d.port, running, "running", 20);
	ck_assert_ptr_nonnull(body);
	free(body);
	ck_assert_int_eq(tt_daemon_kill(&d, SIGTERM), 0);
	ck_assert_int_eq(tt_db_scalar(&d, "SELECT count(*) FROM submissions WHERE id=1 AND status='finished'"), 1);
	ck_assert_int_eq(tt_db_scalar(&d, "SELECT count(*) FROM submissions WHERE id=2 AND status='queued'"), 1);
	ck_assert_int_eq(tt_db_scalar(&d, "SELECT count(*) FROM results"), 1);
	char *fake = tt_worker_path("tm-fake-worker");
	const char *args[] = { "--worker", fake, "--drain-grace", "0", NULL };
	ck_assert_int_eq(tt_daemon_restart(&d, args), 0);
	free(fake);
	body = tt_wait_submission(d.port, 2, "finished", 30);
	ck_assert_ptr_nonnull(body);
	free(body);
	ck_assert_int_eq(tt_daemon_stop(&d, SIGTERM), 0);
}
END_TEST

typedef struct poster {
	int port;
	char token[80];
	int tag;
	int accepted;
	int64_t ids[50];
} poster;

static void *post_many(void *arg)
{
	poster *p = arg;
	for (int i = 0; i < 50; i++) {
		char name[32];
		snprintf(name, sizeof(name), "fault:hang c%d n%d", p->tag, i);
		int64_t id = submit(p->port, p->token, name);
		if (id > 0)
			p->ids[p->accepted++] = id;
	}
	return NULL;
}

/* Reads the daemon's log while the clients run, so a full pipe never blocks it. */
static void *drain_log(void *arg)
{
	int fd = *(int *)arg;
	char buf[4096];
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	return NULL;
}

START_TEST(test_200_concurrent_posts_stored_once)
{
	tt_daemon d;
	ck_assert_int_eq(start_fake(&d, NULL), 0);
	pthread_t logger;
	int log_fd = dup(d.log_fd);
	ck_assert_int_eq(pthread_create(&logger, NULL, drain_log, &log_fd), 0);
	poster p[4];
	pthread_t th[4];
	for (int t = 0; t < 4; t++) {
		memset(&p[t], 0, sizeof(p[t]));
		p[t].port = d.port;
		p[t].tag = t;
		char name[32];
		snprintf(name, sizeof(name), "client %d", t);
		ck_assert_int_eq(tt_make_team(d.port, ADMIN, name, p[t].token, sizeof(p[t].token)), 0);
	}
	for (int t = 0; t < 4; t++)
		ck_assert_int_eq(pthread_create(&th[t], NULL, post_many, &p[t]), 0);
	for (int t = 0; t < 4; t++)
		pthread_join(th[t], NULL);
	bool seen[256] = { false };
	for (int t = 0; t < 4; t++) {
		ck_assert_int_eq(p[t].accepted, 50);
		for (int i = 0; i < 50; i++) {
			ck_assert(p[t].ids[i] >= 1 && p[t].ids[i] <= 200);
			ck_assert_msg(!seen[p[t].ids[i]], "id %lld twice", (long long)p[t].ids[i]);
			seen[p[t].ids[i]] = true;
		}
	}
	ck_assert_int_eq(tt_db_scalar(&d, "SELECT count(*) FROM submissions"), 200);
	ck_assert_int_eq(tt_db_scalar(&d, "SELECT count(DISTINCT name) FROM submissions"), 200);
	ck_assert_int_eq(tt_daemon_stop(&d, SIGTERM), 0);
	pthread_join(logger, NULL);
	close(log_fd);
}
END_TEST

Suite *faults_suite(void)
{
	Suite *s = suite_create("faults");
	TCase *tc = tcase_create("faults");
	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, test_bad_workers_fail_alone);
	tcase_add_test(tc, test_kill9_then_restart_finishes_the_run);
	tcase_add_test(tc, test_max_attempts);
	tcase_add_test(tc, test_sigterm_drains);
	tcase_add_test(tc, test_200_concurrent_posts_stored_once);
	suite_add_tcase(s, tc);
	return s;
}
