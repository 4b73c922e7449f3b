/* test_pages.c: the pages suite: the HTML of tinymlperfd checked over HTTP, without a browser.
 * Results are written into the daemon's SQLite file the way the scheduler stores a finished
 * worker's result (the test plays the worker), so the leaderboard, event and submission pages
 * have rows to render.  Checked: the leaderboard is rendered on the server (readable without
 * JavaScript) with the API's figures; team and entry names such as <img src=x onerror=...>
 * and <script> are escaped on every page; unknown events and submissions are 404 pages; the
 * static files come with their content types and a path outside web/ is never served; the
 * example configs validate. */
#include "tests.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ADMIN "admin-secret-for-pages-tests-0123"
#define XSS_NAME "<img src=x onerror=alert(1)>"
#define XSS_TEAM "<script>alert(\\\"t\\\")</script>"  /* as a JSON string body */
#define XSS_TEAM_RAW "<script>alert(\"t\")</script>"

/* A daemon with three teams and five mlp_sprint submissions on one worker slot (the test
 * worker): 1 hangs in the slot (running), 2..4 are finished with the results written here,
 * 5 stays queued behind 1. */
typedef struct fixture {
	tt_daemon d;
	char tokens[3][80];
} fixture;

static const char *const team_names[3] = { "alpha", XSS_TEAM, "gamma & <b>co</b>" };
static const char *const entry_names[5] = { "fault:hang", XSS_NAME, "pruned </td></tr>",
					   "int8 fast", "" };

static int request(tt_daemon *d, const char *method, const char *path, const char *headers,
		   const char *body, char **hdrs, char **reply)
{
	return tt_http_ex(d->port, method, path, headers, body, body ? strlen(body) : 0, hdrs, reply);
}

static void result_json(char *buf, size_t n, double speedup, double quality, long bytes)
{
	snprintf(buf, n,
		 "{\"type\":\"result\",\"event\":\"mlp_sprint\",\"division\":\"closed\",\"valid\":true,"
		 "\"invalid_reasons\":[],\"quality\":{\"metric\":\"accuracy\",\"value\":%.17g,"
		 "\"reference\":0.8926,\"ratio\":1,\"gate\":0.99,\"passed\":true},"
		 "\"latency\":{\"unit\":\"ns\",\"query\":\"image\",\"n\":1024,\"mean\":12000,"
		 "\"median\":11800,\"min\":9000,\"max\":40000,\"p90\":%.17g,\"p95\":14000,\"p99\":18000,"
		 "\"early_stopping_p90\":13500,\"early_stopping_ok\":true},"
		 "\"baseline_latency\":{\"unit\":\"ns\",\"query\":\"image\",\"p90\":26000,\"median\":25000},"
		 "\"throughput\":{\"value\":%.17g,\"unit\":\"images/s\"},"
		 "\"baseline_throughput\":{\"value\":40000,\"unit\":\"images/s\"},"
		 "\"speedup\":{\"value\":%.17g,\"ci_low\":%.17g,\"ci_high\":%.17g,\"pairs\":40,\"level\":0.95},"
		 "\"model\":{\"params\":109386,\"nonzero_params\":109386,\"bytes\":%ld,"
		 "\"baseline_bytes\":437544,\"compression\":%.17g,\"flops_per_inference\":218000},"
		 "\"memory\":{\"peak_rss_bytes\":50000000},"
		 "\"profile\":[{\"layer\":\"<b>fc1</b>\",\"op\":\"linear\",\"kernel\":\"avx2\","
		 "\"time_ns\":8000,\"flops\":200000,\"bytes\":400000,\"gflops\":25,\"peak_fraction\":0.1}],"
		 "\"stages\":{\"load_s\":0.2,\"optimize_s\":0.1,\"quality_s\":0.5,\"benchmark_s\":5.2,"
		 "\"total_s\":6.0},\"environment\":{\"cpu_model\":\"<i>cpu</i>\",\"cpu_features\":"
		 "[\"avx2\"],\"threads\":1,\"compiler\":\"gcc\"}}",
		 quality, 12000 / speedup, 40000 * speedup, speedup, speedup * 0.95, speedup * 1.05,
		 bytes, 437544.0 / (double)bytes);
}

static void submission_status(fixture *f, int id, char *out, size_t n)
{
	char path[64], *reply;
	snprintf(path, sizeof(path), "/api/v1/submissions/%d", id);
	ck_assert_int_eq(request(&f->d, "GET", path, NULL, NULL, NULL, &reply), 200);
	cJSON *j = cJSON_Parse(reply);
	free(reply);
	snprintf(out, n, "%s", cJSON_GetObjectItem(j, "status")->valuestring);
	cJSON_Delete(j);
}

static void fixture_start(fixture *f, const char *const *extra)
{
	char *fake = tt_build_path("tm-fake-worker");
	const char *args[16] = { "--worker", fake, "--workers", "1", "--drain-grace", "0" };
	int na = 6;
	for (int i = 0; extra && extra[i] && na < 15; i++)
		args[na++] = extra[i];
	args[na] = NULL;
	ck_assert_int_eq(tt_daemon_start_admin(&f->d, ADMIN, args), 0);
	free(fake);
	char admin[128];
	snprintf(admin, sizeof(admin), "Authorization: Bearer %s\r\n", ADMIN);
	for (int t = 0; t < 3; t++) {
		char body[160], *reply;
		snprintf(body, sizeof(body), "{\"name\":\"%s\"}", team_names[t]);
		ck_assert_int_eq(request(&f->d, "POST", "/api/v1/teams", admin, body, NULL, &reply), 201);
		cJSON *j = cJSON_Parse(reply);
		free(reply);
		snprintf(f->tokens[t], sizeof(f->tokens[t]), "%s",
			 cJSON_GetObjectItem(j, "token")->valuestring);
		cJSON_Delete(j);
	}
	for (int i = 0; i < 5; i++) {
		char auth[160], body[256], *reply;
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", f->tokens[i % 3]);
		cJSON *cfg = cJSON_CreateObject();
		cJSON_AddStringToObject(cfg, "event", "mlp_sprint");
		cJSON_AddStringToObject(cfg, "name", entry_names[i]);
		if (i == 3)
			cJSON_AddItemToObject(cJSON_AddObjectToObject(cfg, "optimize"), "quantize",
					      cJSON_CreateObject());
		char *text = cJSON_PrintUnformatted(cfg);
		cJSON_Delete(cfg);
		snprintf(body, sizeof(body), "%s", text);
		free(text);
		ck_assert_int_eq(request(&f->d, "POST", "/api/v1/submissions", auth, body, NULL, &reply), 202);
		free(reply);
		if (i > 0)
			continue;
		/* The hanging job holds the only slot before anything else is queued. */
		char st[16] = "";
		for (int k = 0; k < 200 && strcmp(st, "running") != 0; k++) {
			submission_status(f, 1, st, sizeof(st));
			if (strcmp(st, "running") != 0)
				usleep(50 * 1000);
		}
		ck_assert_str_eq(st, "running");
	}
	char dbp[700];
	snprintf(dbp, sizeof(dbp), "%s/tinymlperf.db", f->d.data_dir);
	sqlite3 *h;
	ck_assert_int_eq(sqlite3_open(dbp, &h), SQLITE_OK);
	sqlite3_busy_timeout(h, 5000);
	static const struct { int id; double speedup, quality; long bytes; } res[3] = {
		{ 2, 3.1, 0.8791, 437544 }, { 3, 1.7, 0.889, 90000 }, { 4, 2.3, 0.885, 120000 },
	};
	for (int i = 0; i < 3; i++) {
		char json[4096];
		result_json(json, sizeof(json), res[i].speedup, res[i].quality, res[i].bytes);
		sqlite3_stmt *st;
		ck_assert_int_eq(sqlite3_prepare_v2(h,
			"INSERT INTO results(submission_id, event, division, valid, gate_passed, speedup,"
			" speedup_ci_low, speedup_ci_high, quality, latency_p90_ns, throughput, model_bytes,"
			" compression, result) VALUES (?, 'mlp_sprint', 'closed', 1, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
			-1, &st, NULL), SQLITE_OK);
		sqlite3_bind_int(st, 1, res[i].id);
		sqlite3_bind_double(st, 2, res[i].speedup);
		sqlite3_bind_double(st, 3, res[i].speedup * 0.95);
		sqlite3_bind_double(st, 4, res[i].speedup * 1.05);
		sqlite3_bind_double(st, 5, res[i].quality);
		sqlite3_bind_double(st, 6, 12000 / res[i].speedup);
		sqlite3_bind_double(st, 7, 40000 * res[i].speedup);
		sqlite3_bind_int64(st, 8, res[i].bytes);
		sqlite3_bind_double(st, 9, 437544.0 / (double)res[i].bytes);
		sqlite3_bind_text(st, 10, json, -1, SQLITE_TRANSIENT);
		ck_assert_int_eq(sqlite3_step(st), SQLITE_DONE);
		sqlite3_finalize(st);
		char sql[300];
		snprintf(sql, sizeof(sql), "UPDATE submissions SET status='finished', "
			 "started_at='2026-01-01T00:00:00Z', finished_at='2026-01-01T00:01:00Z' "
			 "WHERE id=%d; INSERT INTO timings(submission_id, series, seq, ns) VALUES "
			 "(%d, 'submission', 0, 11000), (%d, 'submission', 1, 12000), "
			 "(%d, 'baseline', 0, 25000)", res[i].id, res[i].id, res[i].id, res[i].id);
		ck_assert_int_eq(sqlite3_exec(h, sql, NULL, NULL, NULL), SQLITE_OK);
	}
	sqlite3_close(h);
}

static void fixture_stop(fixture *f)
{
	ck_assert_int_eq(tt_daemon_stop(&f->d, SIGTERM), 0);
}

/* A page: 200 (or want), HTML, with the frame every page has, and no raw markup from a name. */
static char *page(fixture *f, const char *path, int want)
{
	char *hdrs, *body;
	int st = request(&f->d, "GET", path, NULL, NULL, &hdrs, &body);
	ck_assert_msg(st == want, "%s gave %d, want %d", path, st, want);
	ck_assert_msg(strstr(hdrs, "Content-Type: text/html; charset=utf-8") != NULL,
		      "%s: headers %s", path, hdrs);
	free(hdrs);
	ck_assert_msg(strncmp(body, "<!doctype html>\n<html lang=\"en\">", 32) == 0, "%s", path);
	ck_assert_ptr_nonnull(strstr(body, "<meta name=\"viewport\""));
	ck_assert_ptr_nonnull(strstr(body, "Content-Security-Policy"));
	ck_assert_ptr_nonnull(strstr(body, "<main id=\"main\">"));
	ck_assert_msg(strstr(body, "<img") == NULL, "%s: raw <img", path);
	ck_assert_msg(strstr(body, "<script>") == NULL, "%s: raw <script>", path);
	ck_assert_msg(strstr(body, "<b>") == NULL, "%s: raw <b>", path);
	ck_assert_msg(strstr(body, "<i>") == NULL, "%s: raw <i>", path);
	return body;
}

static int count(const char *s, const char *needle)
{
	int n = 0;
	for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

/* The exact value in data-value="..." of the td with data-key key in the row of submission. */
static double cell_value(const char *html, int submission, const char *key)
{
	char needle[64];
	snprintf(needle, sizeof(needle), "<tr data-submission=\"%d\">", submission);
	const char *row = strstr(html, needle);
	ck_assert_msg(row != NULL, "no row for submission %d", submission);
	const char *end = strstr(row, "</tr>");
	snprintf(needle, sizeof(needle), "data-key=\"%s\" data-value=\"", key);
	const char *c = strstr(row, needle);
	ck_assert_msg(c && c < end, "no %s in row %d", key, submission);
	return strtod(c + strlen(needle), NULL);
}

START_TEST(test_leaderboard_page)
{
	fixture f;
	fixture_start(&f, NULL);
	char *html = page(&f, "/", 200);
	/* Server-rendered: the three entries, the pinned baseline, the names as text. */
	ck_assert_int_eq(count(html, "<tr data-submission="), 3);
	ck_assert_ptr_nonnull(strstr(html, "<tbody class=\"pinned\"><tr class=\"baseline\">"));
	ck_assert_ptr_nonnull(strstr(html, "&lt;img src=x onerror=alert(1)&gt;"));
	ck_assert_ptr_nonnull(strstr(html, "&lt;script&gt;alert(&quot;t&quot;)&lt;/script&gt;"));
	ck_assert_ptr_nonnull(strstr(html, "gamma &amp; &lt;b&gt;co&lt;/b&gt;"));
	ck_assert_ptr_nonnull(strstr(html, "pruned &lt;/td&gt;&lt;/tr&gt;"));
	ck_assert_ptr_nonnull(strstr(html, "format=csv"));
	ck_assert_ptr_nonnull(strstr(html, "aria-current=\"page\">MLP Sprint</a>"));
	ck_assert_ptr_nonnull(strstr(html, "title=\"higher is better\""));
	ck_assert_ptr_nonnull(strstr(html, "title=\"lower is better\""));
	ck_assert_ptr_nonnull(strstr(html, "<li>int8 per_channel</li>"));
	/* Ranked by speedup: 2 (3.1), 4 (2.3), 3 (1.7). */
	const char *r2 = strstr(html, "<tr data-submission=\"2\">");
	const char *r4 = strstr(html, "<tr data-submission=\"4\">");
	const char *r3 = strstr(html, "<tr data-submission=\"3\">");
	ck_assert(r2 && r4 && r3 && r2 < r4 && r4 < r3);

	/* The same figures as the API, row by row. */
	char *reply;
	ck_assert_int_eq(request(&f.d, "GET", "/api/v1/leaderboard/mlp_sprint", NULL, NULL, NULL,
				 &reply), 200);
	cJSON *api = cJSON_Parse(reply);
	free(reply);
	const cJSON *row;
	static const char *const keys[] = { "rank", "speedup", "latency_p90_ms", "throughput",
					    "quality", "model_bytes", "compression" };
	cJSON_ArrayForEach(row, cJSON_GetObjectItem(api, "rows")) {
		int sub = cJSON_GetObjectItem(row, "submission")->valueint;
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
			ck_assert_msg(cell_value(html, sub, keys[k]) ==
				      cJSON_GetObjectItem(row, keys[k])->valuedouble,
				      "row %d %s", sub, keys[k]);
	}
	cJSON_Delete(api);
	ck_assert_ptr_nonnull(strstr(html, "<strong>3.10\xc3\x97</strong>"));
	free(html);

	html = page(&f, "/?event=mlp_sprint&division=closed&all=1", 200);
	ck_assert_ptr_nonnull(strstr(html, "data-all=\"1\""));
	ck_assert_ptr_nonnull(strstr(html, "aria-current=\"page\">All entries</a>"));
	free(html);
	html = page(&f, "/?event=cnn_marathon&division=open", 200);
	ck_assert_int_eq(count(html, "<tr data-submission="), 0);
	ck_assert_ptr_nonnull(strstr(html, "No ranked entries yet"));
	ck_assert_ptr_nonnull(strstr(html, "aria-current=\"page\">Open</a>"));
	ck_assert_ptr_nonnull(strstr(html, "images/s"));
	free(html);
	html = page(&f, "/?event=transformer_decathlon", 200);
	ck_assert_ptr_nonnull(strstr(html, "tokens/s"));
	free(html);
	free(page(&f, "/?event=nope", 404));
	html = page(&f, "/?division=premier", 400);
	ck_assert_ptr_nonnull(strstr(html, "premier"));
	free(html);
	html = page(&f, "/?event=%3Cscript%3E", 404);
	free(html);
	fixture_stop(&f);
}
END_TEST

START_TEST(test_submission_and_event_pages)
{
	fixture f;
	fixture_start(&f, NULL);
	char *html = page(&f, "/submissions/2", 200);
	ck_assert_ptr_nonnull(strstr(html, "<span class=\"entry-name\">&lt;img src=x onerror=alert(1)&gt;</span>"));
	ck_assert_ptr_nonnull(strstr(html, "&lt;script&gt;alert(&quot;t&quot;)&lt;/script&gt;"));
	ck_assert_ptr_nonnull(strstr(html, "data-status=\"finished\""));
	ck_assert_ptr_nonnull(strstr(html, "id=\"card-speedup\""));
	ck_assert_ptr_nonnull(strstr(html, "3.10\xc3\x97"));
	ck_assert_ptr_nonnull(strstr(html, "&lt;b&gt;fc1&lt;/b&gt;"));   /* profile layer */
	ck_assert_ptr_nonnull(strstr(html, "&lt;i&gt;cpu&lt;/i&gt;"));   /* environment */
	ck_assert_ptr_nonnull(strstr(html, "<dt>Benchmark</dt><dd>5.20 s</dd>"));
	ck_assert_ptr_nonnull(strstr(html, "id=\"histogram\""));
	ck_assert_ptr_nonnull(strstr(html, "id=\"config-hidden\""));  /* anonymous viewer */
	ck_assert_ptr_null(strstr(html, "id=\"live\""));
	free(html);

	html = page(&f, "/submissions/5", 200);  /* queued, unnamed */
	ck_assert_ptr_nonnull(strstr(html, "data-status=\"queued\""));
	ck_assert_ptr_nonnull(strstr(html, "<progress id=\"progress\""));
	ck_assert_ptr_nonnull(strstr(html, "(unnamed)"));
	ck_assert_ptr_null(strstr(html, "id=\"result\""));
	free(html);
	html = page(&f, "/submissions/1", 200);  /* running in the slot */
	ck_assert_ptr_nonnull(strstr(html, "data-status=\"running\""));
	ck_assert_ptr_nonnull(strstr(html, "id=\"live\""));
	free(html);

	/* The raw timings behind the histogram. */
	char *reply;
	ck_assert_int_eq(request(&f.d, "GET", "/api/v1/submissions/2/timings", NULL, NULL, NULL,
				 &reply), 200);
	cJSON *t = cJSON_Parse(reply);
	free(reply);
	ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(t, "submission")), 2);
	ck_assert_int_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(t, "submission"), 1)->valueint, 12000);
	ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(t, "baseline")), 1);
	cJSON_Delete(t);
	ck_assert_int_eq(request(&f.d, "GET", "/api/v1/submissions/999/timings", NULL, NULL, NULL,
				 &reply), 404);
	free(reply);
	free(page(&f, "/submissions/999", 404));
	free(page(&f, "/submissions/abc", 404));
	free(page(&f, "/submissions/0", 404));

	html = page(&f, "/events/mlp_sprint", 200);
	ck_assert_ptr_nonnull(strstr(html, "<h1>MLP Sprint</h1>"));
	ck_assert_ptr_nonnull(strstr(html, "at least 99% of the reference"));
	ck_assert_ptr_nonnull(strstr(html, "Fashion-MNIST"));
	ck_assert_ptr_nonnull(strstr(html, "<dt>p90 latency</dt><dd>26 \xc2\xb5s per image</dd>"));
	ck_assert_ptr_nonnull(strstr(html, "<a href=\"/submissions/2\">&lt;img src=x onerror=alert(1)&gt;</a>"));
	free(html);
	html = page(&f, "/events/transformer_decathlon", 200);
	ck_assert_ptr_nonnull(strstr(html, "decathlon points"));
	ck_assert_ptr_nonnull(strstr(html, "No measurement yet"));
	free(html);
	free(page(&f, "/events/nope", 404));
	free(page(&f, "/events/%3Cimg%20src%3Dx%3E", 404));
	fixture_stop(&f);
}
END_TEST

START_TEST(test_published_config_escaped)
{
	fixture f;
	const char *extra[] = { "--publish-configs", NULL };
	fixture_start(&f, extra);
	char *html = page(&f, "/submissions/2", 200);
	ck_assert_ptr_nonnull(strstr(html, "<pre id=\"config\" class=\"code\">"));
	ck_assert_ptr_nonnull(strstr(html, "&quot;name&quot;:\t&quot;&lt;img src=x onerror=alert(1)&gt;&quot;"));
	ck_assert_ptr_null(strstr(html, "id=\"config-hidden\""));
	free(html);
	fixture_stop(&f);
}
END_TEST

START_TEST(test_submit_page_and_examples)
{
	fixture f;
	fixture_start(&f, NULL);
	char *html = page(&f, "/submit", 200);
	/* Every control has a label. */
	static const char *const ids[] = { "token", "remember", "event", "example", "config", "file" };
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		char want[64];
		snprintf(want, sizeof(want), "id=\"%s\"", ids[i]);
		ck_assert_msg(strstr(html, want) != NULL, "no control %s", ids[i]);
		if (strcmp(ids[i], "remember") == 0)
			continue;  /* wrapped in its label */
		snprintf(want, sizeof(want), "<label for=\"%s\">", ids[i]);
		ck_assert_msg(strstr(html, want) != NULL, "no label for %s", ids[i]);
	}
	ck_assert_ptr_nonnull(strstr(html, "<label class=\"check\"><input type=\"checkbox\" id=\"remember\">"));
	ck_assert_ptr_nonnull(strstr(html, "action=\"/api/v1/submissions\""));
	ck_assert_ptr_nonnull(strstr(html, "&quot;event&quot;: &quot;mlp_sprint&quot;"));
	free(html);
	html = page(&f, "/submit?event=cnn_marathon", 200);
	ck_assert_ptr_nonnull(strstr(html, "<option value=\"cnn_marathon\" selected>"));
	ck_assert_ptr_nonnull(strstr(html, "&quot;event&quot;: &quot;cnn_marathon&quot;"));
	free(html);

	/* Each event's examples are valid configs of that event. */
	static const char *const events[] = { "mlp_sprint", "cnn_marathon", "transformer_decathlon" };
	for (int e = 0; e < 3; e++) {
		char path[128], *reply, *hdrs;
		snprintf(path, sizeof(path), "/api/v1/events/%s/examples", events[e]);
		ck_assert_int_eq(request(&f.d, "GET", path, NULL, NULL, NULL, &reply), 200);
		cJSON *j = cJSON_Parse(reply);
		free(reply);
		const cJSON *ex;
		int n = 0;
		cJSON_ArrayForEach(ex, cJSON_GetObjectItem(j, "examples")) {
			const char *cfg = cJSON_GetObjectItem(ex, "config")->valuestring;
			ck_assert_int_eq(request(&f.d, "POST", "/api/v1/validate", NULL, cfg, NULL, &reply), 200);
			cJSON *v = cJSON_Parse(reply);
			ck_assert_msg(cJSON_IsTrue(cJSON_GetObjectItem(v, "valid")), "%s example %s: %s",
				      events[e], cJSON_GetObjectItem(ex, "name")->valuestring, reply);
			ck_assert_str_eq(cJSON_GetObjectItem(v, "event")->valuestring, events[e]);
			cJSON_Delete(v);
			free(reply);
			n++;
		}
		ck_assert_int_ge(n, 1);
		cJSON_Delete(j);
		snprintf(path, sizeof(path), "/api/v1/events/%s/example", events[e]);
		ck_assert_int_eq(request(&f.d, "GET", path, NULL, NULL, &hdrs, &reply), 200);
		ck_assert_ptr_nonnull(strstr(hdrs, "application/json"));
		ck_assert_ptr_nonnull(strstr(reply, events[e]));
		free(hdrs);
		free(reply);
	}
	char *reply;
	ck_assert_int_eq(request(&f.d, "GET", "/api/v1/events/nope/examples", NULL, NULL, NULL, &reply), 404);
	free(reply);
	fixture_stop(&f);
}
END_TEST

START_TEST(test_static_files)
{
	/* A private web directory: our files plus a symlink pointing outside it. */
	char *dir = tt_tmpdir("webdir");
	char *web = tt_tmpdir("webroot");
	ck_assert_ptr_nonnull(dir);
	char cwd[PATH_MAX], link[PATH_MAX + 32], src[PATH_MAX + 32];
	ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
	static const char *const files[] = { "style.css", "common.js", "leaderboard.js", "submit.js",
					     "submission.js", "favicon.svg" };
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(src, sizeof(src), "%s/web/%s", cwd, files[i]);
		snprintf(link, sizeof(link), "%s/%s", web, files[i]);
		FILE *in = fopen(src, "rb"), *out = fopen(link, "wb");
		ck_assert_msg(in && out, "copy %s", src);
		char buf[8192];
		size_t n;
		while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
			ck_assert_uint_eq(fwrite(buf, 1, n, out), n);
		fclose(in);
		fclose(out);
	}
	snprintf(link, sizeof(link), "%s/passwd.txt", web);
	ck_assert_int_eq(symlink("/etc/passwd", link), 0);
	snprintf(link, sizeof(link), "%s/secret.txt", dir);
	FILE *sf = fopen(link, "w");
	fputs("marker-7f3a\n", sf);
	fclose(sf);

	tt_daemon d;
	const char *extra[] = { "--web-dir", web, NULL };
	ck_assert_int_eq(tt_daemon_start(&d, extra), 0);
	static const struct { const char *path, *type; } ok[] = {
		{ "/static/style.css", "text/css; charset=utf-8" },
		{ "/static/common.js", "text/javascript; charset=utf-8" },
		{ "/static/submission.js", "text/javascript; charset=utf-8" },
		{ "/static/favicon.svg", "image/svg+xml" },
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		char *hdrs, *body, want[96];
		ck_assert_int_eq(tt_http_ex(d.port, "GET", ok[i].path, NULL, NULL, 0, &hdrs, &body), 200);
		snprintf(want, sizeof(want), "Content-Type: %s\r\n", ok[i].type);
		ck_assert_msg(strstr(hdrs, want) != NULL, "%s: %s", ok[i].path, hdrs);
		ck_assert_ptr_nonnull(strstr(hdrs, "X-Content-Type-Options: nosniff"));
		ck_assert_uint_gt(strlen(body), 100);
		free(hdrs);
		free(body);
	}
	/* Outside the web directory, hidden, unknown types, symlinks: never served. */
	static const char *const refused[] = {
		"/static/passwd.txt", "/static/..", "/static/%2e%2e", "/static/..%2Fsecret.txt",
		"/static/..%2f..%2f..%2fetc%2fpasswd", "/static/../secret.txt", "/static/.hidden.css",
		"/static/nope.css", "/static/web.c", "/static/",
		"/static/style.css/", "/static/%2Fetc%2Fpasswd",
	};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		char *body;
		int st = tt_http(d.port, "GET", refused[i], NULL, NULL, 0, &body);
		ck_assert_msg(st == 404 || st == 400, "%s gave %d", refused[i], st);
		ck_assert_msg(strstr(body, "root:") == NULL && strstr(body, "marker-7f3a") == NULL,
			      "%s leaked", refused[i]);
		free(body);
	}
	char *body;
	ck_assert_int_eq(tt_http(d.port, "POST", "/static/style.css", NULL, "x", 1, &body), 405);
	free(body);
	ck_assert_int_eq(tt_daemon_stop(&d, SIGTERM), 0);
	tt_rmtree(web);
	tt_rmtree(dir);
	free(web);
	free(dir);
}
END_TEST

Suite *pages_suite(void)
{
	Suite *s = suite_create("pages");
	TCase *tc = tcase_create("html");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_leaderboard_page);
	tcase_add_test(tc, test_submission_and_event_pages);
	tcase_add_test(tc, test_published_config_escaped);
	tcase_add_test(tc, test_submit_page_and_examples);
	tcase_add_test(tc, test_static_files);
	suite_add_tcase(s, tc);
	return s;
}
