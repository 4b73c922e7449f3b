/* test_browser.c: the browser suite.  Debian's chromium runs headless and is driven over the
 * DevTools protocol through a pipe (--remote-debugging-pipe: JSON messages ended by a NUL byte,
 * chromium reads fd 3 and writes fd 4), by the small client below.  The flow is a competitor's:
 * /submit, a broken config shows its field error, a good one is submitted, the live page is
 * followed until the result shows, then / shows the entry with the figures of
 * /api/v1/leaderboard/mlp_sprint (row by row) and the event page lists it.  The entry is named
 * <img src=x onerror=alert(1)> and must show as text everywhere with no dialog opening.
 * Screenshots go to $TM_BUILD_DIR/screenshots.  Every wait has a deadline; chromium's whole
 * process group is killed at the end.  Skipped (with a message) when /usr/bin/chromium is
 * absent, and in the sanitizer build (the normal build runs it). */
#include "tests.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHROMIUM "/usr/bin/chromium"
#define ADMIN "admin-secret-for-browser-tests-0123"
#define XSS_NAME "<img src=x onerror=alert(1)>"
#define XSS_TEAM "<script>alert('team')</script>"

// ---- time ----

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };
	nanosleep(&ts, NULL);
}

// ---- a DevTools protocol client over the pipe ----

typedef struct cdp {
	pid_t pid;            /* chromium, leader of its own process group */
	int to_fd;            /* our end of chromium's fd 3 */
	int from_fd;          /* our end of chromium's fd 4 */
	char *buf;            /* bytes read but not yet split into messages */
	size_t len, cap;
	int next_id;
	char session[128];    /* the flattened session of our page */
	int dialogs;          /* Page.javascriptDialogOpening seen */
	char dialog_msg[256];
	int errors;           /* uncaught exceptions and console/log errors (CSP violations too) */
	char error_msg[512];
	char *profile;        /* --user-data-dir, removed at the end */
} cdp;

/* Move fd to a number >= 10 so that dup2 onto 3 and 4 cannot clobber it. */
static int fd_high(int fd)
{
	int h = fcntl(fd, F_DUPFD_CLOEXEC, 10);
	close(fd);
	return h;
}

static int cdp_start(cdp *c)
{
	memset(c, 0, sizeof(*c));
	c->next_id = 1;
	c->profile = tt_tmpdir("chromium");
	int in[2], out[2];
	if (!c->profile || pipe(in) != 0 || pipe(out) != 0)
		return -1;
	in[0] = fd_high(in[0]);
	in[1] = fd_high(in[1]);
	out[0] = fd_high(out[0]);
	out[1] = fd_high(out[1]);
	char profile_arg[600];
	snprintf(profile_arg, sizeof(profile_arg), "--user-data-dir=%s", c->profile);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		setpgid(0, 0);
		int devnull = open("/dev/null", O_RDWR);
		dup2(devnull, 0);
		dup2(devnull, 1);
		dup2(devnull, 2);
		dup2(in[0], 3);
		dup2(out[1], 4);
		execl(CHROMIUM, CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
		      "--no-first-run", "--disable-background-networking",
		      "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		      "--disable-extensions", "--mute-audio", "--hide-scrollbars",
		      "--remote-debugging-pipe", profile_arg, "about:blank", (char *)NULL);
		_exit(127);
	}
	setpgid(pid, pid);
	close(in[0]);
	close(out[1]);
	c->pid = pid;
	c->to_fd = in[1];
	c->from_fd = out[0];
	return 0;
}

static void cdp_stop(cdp *c)
{
	if (c->pid > 0) {
		kill(-c->pid, SIGKILL);
		kill(c->pid, SIGKILL);
		waitpid(c->pid, NULL, 0);
		c->pid = 0;
	}
	if (c->to_fd > 0)
		close(c->to_fd);
	if (c->from_fd > 0)
		close(c->from_fd);
	c->to_fd = c->from_fd = -1;
	free(c->buf);
	c->buf = NULL;
	tt_rmtree(c->profile);
	free(c->profile);
	c->profile = NULL;
}

static int cdp_send(cdp *c, const char *method, cJSON *params, bool on_session)
{
	int id = c->next_id++;
	cJSON *m = cJSON_CreateObject();
	cJSON_AddNumberToObject(m, "id", id);
	cJSON_AddStringToObject(m, "method", method);
	cJSON_AddItemToObject(m, "params", params ? params : cJSON_CreateObject());
	if (on_session && c->session[0])
		cJSON_AddStringToObject(m, "sessionId", c->session);
	char *text = cJSON_PrintUnformatted(m);
	cJSON_Delete(m);
	size_t n = strlen(text) + 1; /* with the NUL terminator */
	size_t off = 0;
	while (off < n) {
		ssize_t w = write(c->to_fd, text + off, n - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			free(text);
			return -1;
		}
		off += (size_t)w;
	}
	free(text);
	return id;
}

static void cdp_error(cdp *c, const char *what, const cJSON *detail)
{
	char *t = cJSON_PrintUnformatted(detail);
	if (c->errors++ == 0)
		snprintf(c->error_msg, sizeof(c->error_msg), "%s: %.400s", what, t ? t : "?");
	fprintf(stderr, "browser: %s: %.600s\n", what, t ? t : "?");
	free(t);
}

/* An event: dialogs are counted and accepted at once, so a page never hangs on one; script
 * exceptions and error-level log entries are counted. */
static void cdp_event(cdp *c, const cJSON *m)
{
	const cJSON *method = cJSON_GetObjectItem(m, "method");
	const cJSON *params = cJSON_GetObjectItem(m, "params");
	if (!cJSON_IsString(method))
		return;
	if (strcmp(method->valuestring, "Runtime.exceptionThrown") == 0) {
		cdp_error(c, "uncaught exception", params);
		return;
	}
	if (strcmp(method->valuestring, "Log.entryAdded") == 0) {
		const cJSON *entry = cJSON_GetObjectItem(params, "entry");
		const cJSON *level = cJSON_GetObjectItem(entry, "level");
		if (cJSON_IsString(level) && strcmp(level->valuestring, "error") == 0)
			cdp_error(c, "console error", entry);
		return;
	}
	if (strcmp(method->valuestring, "Page.javascriptDialogOpening") != 0)
		return;
	c->dialogs++;
	const cJSON *msg = cJSON_GetObjectItem(params, "message");
	snprintf(c->dialog_msg, sizeof(c->dialog_msg), "%s",
		 cJSON_IsString(msg) ? msg->valuestring : "?");
	cJSON *p = cJSON_CreateObject();
	cJSON_AddBoolToObject(p, "accept", true);
	cdp_send(c, "Page.handleJavaScriptDialog", p, true);
}

/* Read messages until the reply to id arrives (returned, caller deletes) or the deadline. */
static cJSON *cdp_wait_reply(cdp *c, int id, long deadline)
{
	for (;;) {
		char *nul;
		while ((nul = c->len ? memchr(c->buf, '\0', c->len) : NULL)) {
			cJSON *m = cJSON_Parse(c->buf);
			size_t used = (size_t)(nul - c->buf) + 1;
			memmove(c->buf, c->buf + used, c->len - used);
			c->len -= used;
			if (!m)
				continue;
			const cJSON *mid = cJSON_GetObjectItem(m, "id");
			if (cJSON_IsNumber(mid) && mid->valueint == id)
				return m;
			if (!mid)
				cdp_event(c, m);
			cJSON_Delete(m);
		}
		long left = deadline - now_ms();
		if (left <= 0)
			return NULL;
		struct pollfd pfd = { .fd = c->from_fd, .events = POLLIN };
		if (poll(&pfd, 1, (int)(left > 200 ? 200 : left)) <= 0)
			continue;
		if (c->len + 65536 + 1 > c->cap) {
			c->cap = c->cap ? c->cap * 2 : 1 << 20;
			while (c->cap < c->len + 65536 + 1)
				c->cap *= 2;
			c->buf = realloc(c->buf, c->cap);
		}
		ssize_t n = read(c->from_fd, c->buf + c->len, 65536);
		if (n <= 0)
			return NULL;
		c->len += (size_t)n;
	}
}

/* One command; returns its "result" object (caller deletes the returned message root via
 * *root) or NULL with the protocol error printed. */
static cJSON *cdp_call(cdp *c, const char *method, cJSON *params, bool on_session, long timeout_ms,
		       cJSON **root)
{
	*root = NULL;
	int id = cdp_send(c, method, params, on_session);
	if (id < 0)
		return NULL;
	cJSON *m = cdp_wait_reply(c, id, now_ms() + timeout_ms);
	if (!m) {
		fprintf(stderr, "browser: %s: no reply within %ld ms\n", method, timeout_ms);
		return NULL;
	}
	*root = m;
	cJSON *err = cJSON_GetObjectItem(m, "error");
	if (err) {
		char *t = cJSON_PrintUnformatted(err);
		fprintf(stderr, "browser: %s failed: %s\n", method, t);
		free(t);
		return NULL;
	}
	return cJSON_GetObjectItem(m, "result");
}

/* Call and discard the result; true on success. */
static bool cdp_do(cdp *c, const char *method, cJSON *params, bool on_session)
{
	cJSON *root;
	bool ok = cdp_call(c, method, params, on_session, 20000, &root) != NULL;
	cJSON_Delete(root);
	return ok;
}

static int cdp_open_page(cdp *c)
{
	cJSON *root, *p = cJSON_CreateObject();
	cJSON_AddStringToObject(p, "url", "about:blank");
	cJSON *r = cdp_call(c, "Target.createTarget", p, false, 30000, &root);
	const cJSON *tid = cJSON_GetObjectItem(r, "targetId");
	if (!cJSON_IsString(tid)) {
		cJSON_Delete(root);
		return -1;
	}
	p = cJSON_CreateObject();
	cJSON_AddStringToObject(p, "targetId", tid->valuestring);
	cJSON_AddBoolToObject(p, "flatten", true);
	cJSON *root2;
	r = cdp_call(c, "Target.attachToTarget", p, false, 20000, &root2);
	cJSON_Delete(root);
	const cJSON *sid = cJSON_GetObjectItem(r, "sessionId");
	if (!cJSON_IsString(sid)) {
		cJSON_Delete(root2);
		return -1;
	}
	snprintf(c->session, sizeof(c->session), "%s", sid->valuestring);
	cJSON_Delete(root2);
	return cdp_do(c, "Page.enable", NULL, true) && cdp_do(c, "Runtime.enable", NULL, true) &&
			       cdp_do(c, "Log.enable", NULL, true)
		       ? 0 : -1;
}

static bool cdp_viewport(cdp *c, int width, int height, bool mobile)
{
	cJSON *p = cJSON_CreateObject();
	cJSON_AddNumberToObject(p, "width", width);
	cJSON_AddNumberToObject(p, "height", height);
	cJSON_AddNumberToObject(p, "deviceScaleFactor", 1);
	cJSON_AddBoolToObject(p, "mobile", mobile);
	return cdp_do(c, "Emulation.setDeviceMetricsOverride", p, true);
}

/* Evaluate a JavaScript expression (promises awaited); returns a copy of its JSON value, or
 * NULL on an exception (printed). */
static cJSON *cdp_eval(cdp *c, const char *expr)
{
	cJSON *root, *p = cJSON_CreateObject();
	cJSON_AddStringToObject(p, "expression", expr);
	cJSON_AddBoolToObject(p, "returnByValue", true);
	cJSON_AddBoolToObject(p, "awaitPromise", true);
	cJSON *r = cdp_call(c, "Runtime.evaluate", p, true, 20000, &root);
	cJSON *out = NULL;
	if (r) {
		const cJSON *ex = cJSON_GetObjectItem(r, "exceptionDetails");
		if (ex) {
			char *t = cJSON_PrintUnformatted(ex);
			fprintf(stderr, "browser: exception in '%.120s': %.600s\n", expr, t);
			free(t);
		} else {
			const cJSON *v = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "result"), "value");
			out = v ? cJSON_Duplicate(v, true) : cJSON_CreateNull();
		}
	}
	cJSON_Delete(root);
	return out;
}

static bool cdp_eval_true(cdp *c, const char *expr)
{
	cJSON *v = cdp_eval(c, expr);
	bool t = cJSON_IsTrue(v);
	cJSON_Delete(v);
	return t;
}

/* Poll expr every 100 ms until it is true; false at the deadline. */
static bool cdp_wait_for(cdp *c, const char *expr, long timeout_ms)
{
	long deadline = now_ms() + timeout_ms;
	while (now_ms() < deadline) {
		if (cdp_eval_true(c, expr))
			return true;
		sleep_ms(100);
	}
	fprintf(stderr, "browser: waited %ld ms in vain for: %s\n", timeout_ms, expr);
	return false;
}

/* Load url and wait until its document is complete with our scripts loaded (a marker set on
 * the old window tells the two documents apart). */
static bool cdp_navigate(cdp *c, const char *url)
{
	cJSON_Delete(cdp_eval(c, "window.__tm_old = true"));
	cJSON *p = cJSON_CreateObject();
	cJSON_AddStringToObject(p, "url", url);
	if (!cdp_do(c, "Page.navigate", p, true))
		return false;
	return cdp_wait_for(c, "!window.__tm_old && document.readyState === 'complete' && "
			    "typeof TM === 'object'", 20000);
}

static int b64_value(int ch)
{
	if (ch >= 'A' && ch <= 'Z') return ch - 'A';
	if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9') return ch - '0' + 52;
	if (ch == '+') return 62;
	if (ch == '/') return 63;
	return -1;
}

/* A full-page PNG into dir/name; returns the byte count written, 0 on failure. */
static size_t cdp_screenshot(cdp *c, const char *dir, const char *name)
{
	cJSON *root, *p = cJSON_CreateObject();
	cJSON_AddStringToObject(p, "format", "png");
	cJSON_AddBoolToObject(p, "captureBeyondViewport", true);
	cJSON *r = cdp_call(c, "Page.captureScreenshot", p, true, 30000, &root);
	const cJSON *data = cJSON_GetObjectItem(r, "data");
	size_t n = 0;
	if (cJSON_IsString(data)) {
		const char *s = data->valuestring;
		size_t len = strlen(s);
		unsigned char *png = malloc(len / 4 * 3 + 3);
		unsigned acc = 0;
		int bits = 0;
		for (size_t i = 0; i < len; i++) {
			int v = b64_value((unsigned char)s[i]);
			if (v < 0)
				continue;
			acc = (acc << 6) | (unsigned)v;
			bits += 6;
			if (bits >= 8) {
				bits -= 8;
				png[n++] = (unsigned char)(acc >> bits);
			}
		}
		char path[1024];
		snprintf(path, sizeof(path), "%s/%s", dir, name);
		FILE *f = fopen(path, "wb");
		if (!f || fwrite(png, 1, n, f) != n)
			n = 0;
		if (f)
			fclose(f);
		free(png);
	}
	cJSON_Delete(root);
	return n;
}

/* s as a JavaScript string literal (JSON's is one). */
static char *js_str(const char *s)
{
	cJSON *j = cJSON_CreateString(s);
	char *t = cJSON_PrintUnformatted(j);
	cJSON_Delete(j);
	return t;
}

// ---- the daemon side ----

/* Run argv to completion within timeout_s; returns its exit status or -1. */
static int run_cmd(char *const *argv, int timeout_s)
{
	pid_t pid = fork();
	if (pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);
		dup2(devnull, 1);
		execv(argv[0], argv);
		_exit(127);
	}
	if (pid < 0)
		return -1;
	long deadline = now_ms() + timeout_s * 1000L;
	int status;
	while (now_ms() < deadline) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
		sleep_ms(50);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	return -1;
}

static char *create_team(int port, const char *name)
{
	char hdr[128], body[256], *reply;
	snprintf(hdr, sizeof(hdr), "Authorization: Bearer %s\r\nContent-Type: application/json\r\n",
		 ADMIN);
	char *lit = js_str(name);
	snprintf(body, sizeof(body), "{\"name\":%s}", lit);
	free(lit);
	int st = tt_http(port, "POST", "/api/v1/teams", hdr, body, strlen(body), &reply);
	cJSON *j = cJSON_Parse(reply);
	free(reply);
	const cJSON *tok = cJSON_GetObjectItem(j, "token");
	char *out = st == 201 && cJSON_IsString(tok) ? strdup(tok->valuestring) : NULL;
	cJSON_Delete(j);
	return out;
}

static bool near(double a, double b)
{
	return fabs(a - b) <= 1e-12 * fmax(1.0, fabs(b));
}

/* The page's ranked rows, as the DOM holds them (exact values from data-value). */
static const char *const rows_js =
	"Array.from(document.querySelectorAll('#rows tr[data-submission]')).map((tr) => {"
	" const v = (k) => Number(tr.querySelector(`td[data-key=\"${k}\"]`).dataset.value);"
	" const t = (k) => tr.querySelector(`td[data-key=\"${k}\"]`).textContent;"
	" const sp = tr.querySelector('td[data-key=\"speedup\"]');"
	" return { submission: Number(tr.dataset.submission), rank: v('rank'), team: t('team'),"
	"  name: t('name'), speedup: v('speedup'), speedup_ci_low: Number(sp.dataset.ciLow),"
	"  speedup_ci_high: Number(sp.dataset.ciHigh), speedup_text: sp.querySelector('strong').textContent,"
	"  latency_p90_ms: v('latency_p90_ms'), throughput: v('throughput'), quality: v('quality'),"
	"  model_bytes: v('model_bytes'), compression: v('compression'),"
	"  techniques: Array.from(tr.querySelectorAll('td[data-key=\"techniques\"] li:not(.plain)'))"
	"   .map((li) => li.textContent) }; })";

/* No element was made from the entry's name on this page, and no dialog opened. */
static const char *const no_injection_js =
	"document.querySelectorAll('img[src=\"x\"], img[onerror], script:not([src])').length === 0";

START_TEST(test_browser_flow)
{
	if (access(CHROMIUM, X_OK) != 0) {
		printf("browser: SKIPPED: %s is absent (make deps installs the chromium package)\n",
		       CHROMIUM);
		return;
	}
	const char *bd = getenv("TM_BUILD_DIR");
	if (bd && strstr(bd, "asan")) {
		printf("browser: SKIPPED in the sanitizer build %s: the normal build runs it\n", bd);
		return;
	}
	/* The MLP reference weights, trained for one epoch into the daemon's data directory. */
	char *data = tt_tmpdir("browser-data");
	ck_assert_ptr_nonnull(data);
	char *runner = tt_build_path("tinymlperf-run");
	char *train[] = { runner, "train", "mlp_sprint", "--data-dir", data, "--epochs", "1", NULL };
	ck_assert_msg(run_cmd(train, 120) == 0, "tinymlperf-run train mlp_sprint failed");

	tt_daemon d;
	const char *args[] = { "--data-dir", data, "--train-references", "no",
			       "--worker-min-count", "64", "--worker-min-duration", "0.5",
			       "--worker-max-duration", "20", NULL };
	ck_assert_int_eq(tt_daemon_start_admin(&d, ADMIN, args), 0);
	char *token = create_team(d.port, XSS_TEAM);
	ck_assert_ptr_nonnull(token);

	char *shots = tt_build_path("screenshots");
	mkdir(shots, 0755);
	printf("browser: screenshots in %s\n", shots);
	fflush(stdout);

	cdp c;
	ck_assert_int_eq(cdp_start(&c), 0);
	char url[256], expr[2048], main_session[128], board_session[128];
	/* A second page holds the empty leaderboard from the start, to see it refresh itself. */
	ck_assert_int_eq(cdp_open_page(&c), 0);
	snprintf(board_session, sizeof(board_session), "%s", c.session);
	ck_assert(cdp_viewport(&c, 1280, 900, false));
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/?event=mlp_sprint", d.port);
	ck_assert(cdp_navigate(&c, url));
	ck_assert(cdp_eval_true(&c, "document.querySelectorAll('#rows tr[data-submission]').length === 0"));
	ck_assert_int_eq(cdp_open_page(&c), 0);
	snprintf(main_session, sizeof(main_session), "%s", c.session);
	ck_assert(cdp_viewport(&c, 1280, 900, false));

	/* A good config named like an injection. */
	char good[512];
	char *name_lit = js_str(XSS_NAME);
	snprintf(good, sizeof(good), "{\n  \"event\": \"mlp_sprint\",\n  \"division\": \"closed\",\n"
		 "  \"name\": %s,\n  \"optimize\": {\n    \"kernels\": \"auto\",\n    \"threads\": 1\n"
		 "  }\n}\n", name_lit);
	free(name_lit);

	/* A result can come out INVALID when the shared machine is too noisy for a tight speedup
	 * interval (it is then shown with its reasons but not ranked): submit again, three times
	 * with the real worker, then once with the tests' stand-in worker. */
	int sub_id = 0;
	cJSON *v;
	char *fake_data = NULL, *fake = NULL;
	int ranked_at = 0;  /* the attempt whose result was ranked */
	for (int attempt = 0; attempt < 4; attempt++) {
		snprintf(url, sizeof(url), "http://127.0.0.1:%d/submit", d.port);
		ck_assert(cdp_navigate(&c, url));
		char *tok_lit = js_str(token);
		snprintf(expr, sizeof(expr), "(() => { const t = document.getElementById('token'); "
			 "t.value = %s; t.dispatchEvent(new Event('input')); return true; })()", tok_lit);
		free(tok_lit);
		ck_assert(cdp_eval_true(&c, expr));
		if (attempt == 0) {
			/* A broken config shows its field's error, its line marked in the gutter. */
			char *bad_lit = js_str("{\n  \"event\": \"mlp_sprint\",\n  \"name\": \"broken\",\n"
					       "  \"optimize\": {\n    \"threads\": 0\n  }\n}\n");
			snprintf(expr, sizeof(expr), "(() => { const e = document.getElementById('config'); "
				 "e.value = %s; e.dispatchEvent(new Event('input')); "
				 "document.getElementById('validate').click(); return true; })()", bad_lit);
			free(bad_lit);
			ck_assert(cdp_eval_true(&c, expr));
			ck_assert(cdp_wait_for(&c, "!!document.querySelector('#errors li[data-field="
					       "\"optimize.threads\"]')", 10000));
			v = cdp_eval(&c, "document.querySelector('#errors li[data-field=\"optimize.threads\"]')"
				     ".textContent + '|' + document.querySelector('#gutter .bad').textContent");
			ck_assert(cJSON_IsString(v));
			ck_assert_msg(strstr(v->valuestring, "optimize.threads") != NULL, "error text: %s",
				      v->valuestring);
			ck_assert_msg(strstr(v->valuestring, "|5") != NULL,
				      "the threads line (5) is marked: %s", v->valuestring);
			cJSON_Delete(v);
			ck_assert(cdp_screenshot(&c, shots, "submit-invalid.png") > 0);
		}
		/* The good config: valid, then submitted. */
		char *good_lit = js_str(good);
		snprintf(expr, sizeof(expr), "(() => { const e = document.getElementById('config'); "
			 "e.value = %s; e.dispatchEvent(new Event('input')); "
			 "document.getElementById('validate').click(); return true; })()", good_lit);
		free(good_lit);
		ck_assert(cdp_eval_true(&c, expr));
		ck_assert(cdp_wait_for(&c, "document.getElementById('status').classList.contains('good')",
				       10000));
		ck_assert(cdp_eval_true(&c, "document.querySelectorAll('#errors li').length === 0"));
		if (attempt == 0)
			ck_assert(cdp_screenshot(&c, shots, "submit-valid.png") > 0);
		ck_assert(cdp_eval_true(&c, "document.getElementById('submit').click(), true"));
		ck_assert(cdp_wait_for(&c, "location.pathname.startsWith('/submissions/') && "
				       "document.readyState === 'complete' && typeof TM === 'object'", 15000));
		v = cdp_eval(&c, "Number(location.pathname.split('/')[2])");
		ck_assert(cJSON_IsNumber(v));
		sub_id = v->valueint;
		cJSON_Delete(v);
		ck_assert_int_gt(sub_id, 0);

		/* The live page until the result shows; note the progress seen on the way. */
		double max_pct = 0;
		bool done = false;
		long deadline = now_ms() + 150000;
		while (now_ms() < deadline) {
			v = cdp_eval(&c, "(() => { const s = document.getElementById('sub'); "
				     "const p = document.getElementById('progress'); "
				     "return [s ? s.dataset.status : '', p ? p.value : -1, "
				     "!!document.getElementById('result') && "
				     "!!document.querySelector('#histogram svg')]; })()");
			if (cJSON_IsArray(v)) {
				const char *st = cJSON_GetArrayItem(v, 0)->valuestring;
				double pct = cJSON_GetArrayItem(v, 1)->valuedouble;
				max_pct = pct > max_pct ? pct : max_pct;
				done = strcmp(st, "finished") == 0 && cJSON_IsTrue(cJSON_GetArrayItem(v, 2));
				ck_assert_msg(strcmp(st, "failed") != 0 && strcmp(st, "cancelled") != 0,
					      "submission %d ended %s", sub_id, st);
			}
			cJSON_Delete(v);
			if (done)
				break;
			sleep_ms(200);
		}
		ck_assert_msg(done, "submission %d did not finish on its page within 150 s", sub_id);
		printf("browser: submission %d finished; the progress bar showed up to %.1f%% before "
		       "the result\n", sub_id, max_pct);
		ck_assert(cdp_eval_true(&c, "document.querySelector('.entry-name').textContent === "
				       "'" XSS_NAME "'"));
		ck_assert(cdp_eval_true(&c, no_injection_js));
		ck_assert(cdp_eval_true(&c, "!!document.querySelector('#profile-chart svg') && "
				       "document.getElementById('card-speedup') !== null"));
		ck_assert(cdp_screenshot(&c, shots, attempt == 0 ? "submission.png"
							      : "submission-last.png") > 0);

		/* Ranked (valid and through the gate), or shown with its reasons and tried again. */
		v = cdp_eval(&c, "(() => { const r = document.getElementById('result'); "
			     "return [r.dataset.valid === '1', r.querySelector('.verdict').textContent, "
			     "Array.from(r.querySelectorAll('.reasons li')).map((li) => li.textContent)"
			     ".join('; ')]; })()");
		ck_assert(cJSON_IsArray(v));
		bool ranked = cJSON_IsTrue(cJSON_GetArrayItem(v, 0)) &&
			      strstr(cJSON_GetArrayItem(v, 1)->valuestring, "ranked") != NULL;
		if (!ranked)
			printf("browser: submission %d is '%s' (%s); submitting again\n", sub_id,
			       cJSON_GetArrayItem(v, 1)->valuestring, cJSON_GetArrayItem(v, 2)->valuestring);
		fflush(stdout);
		cJSON_Delete(v);
		if (ranked) {
			ranked_at = attempt;
			break;
		}
		char load[64] = "?";
		FILE *lf = fopen("/proc/loadavg", "r");
		if (lf) {
			if (!fgets(load, sizeof(load), lf))
				snprintf(load, sizeof(load), "?");
			fclose(lf);
		}
		ck_assert_msg(attempt < 3, "four submissions in a row were not ranked (load average "
			      "%.14s)", load);
		if (attempt < 1)
			continue;
		/* Two real results too noisy to rank: the rest of the flow (ranking, leaderboard
		 * against the API, refresh, event page) runs on a fresh daemon whose worker is the
		 * tests' stand-in (tm-fake-worker prints the protocol with a valid result). */
		printf("browser: two real results were INVALID (load average %.14s); the last round "
		       "uses tm-fake-worker\n", load);
		fflush(stdout);
		ck_assert_int_eq(tt_daemon_stop(&d, SIGTERM), 0);
		fake_data = tt_tmpdir("browser-fake");
		fake = tt_build_path("tm-fake-worker");
		const char *fargs[] = { "--data-dir", fake_data, "--worker", fake, "--workers", "1", NULL };
		ck_assert_int_eq(tt_daemon_start_admin(&d, ADMIN, fargs), 0);
		free(token);
		token = create_team(d.port, XSS_TEAM);
		ck_assert_ptr_nonnull(token);
		snprintf(c.session, sizeof(c.session), "%s", board_session);
		snprintf(url, sizeof(url), "http://127.0.0.1:%d/?event=mlp_sprint", d.port);
		ck_assert(cdp_navigate(&c, url));
		snprintf(c.session, sizeof(c.session), "%s", main_session);
	}

	/* The leaderboard opened before the result refreshes itself (the timer's refresh, run at
	 * once by a visibility change) and shows the entry without a reload. */
	snprintf(c.session, sizeof(c.session), "%s", board_session);
	ck_assert(cdp_do(&c, "Page.bringToFront", NULL, true));
	ck_assert(cdp_wait_for(&c, "!document.hidden", 5000));
	ck_assert(cdp_eval_true(&c, "window.__tm_kept = true, document.dispatchEvent("
			       "new Event('visibilitychange')), true"));
	snprintf(expr, sizeof(expr), "window.__tm_kept === true && "
		 "!!document.querySelector('#rows tr[data-submission=\"%d\"]') && "
		 "document.getElementById('refresh-note').textContent.includes('new results')", sub_id);
	ck_assert(cdp_wait_for(&c, expr, 10000));
	snprintf(c.session, sizeof(c.session), "%s", main_session);
	ck_assert(cdp_do(&c, "Page.bringToFront", NULL, true));

	/* The API's figures for the submission and the leaderboard. */
	char *reply;
	ck_assert_int_eq(tt_http(d.port, "GET", "/api/v1/leaderboard/mlp_sprint", NULL, NULL, 0,
				 &reply), 200);
	cJSON *api = cJSON_Parse(reply);
	free(reply);
	cJSON *api_rows = cJSON_GetObjectItem(api, "rows");
	ck_assert_int_ge(cJSON_GetArraySize(api_rows), 1);

	/* /: the same rows, value by value, the name as text. */
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/?event=mlp_sprint", d.port);
	ck_assert(cdp_navigate(&c, url));
	ck_assert(cdp_wait_for(&c, "!!document.querySelector('#pareto svg circle')", 10000));
	cJSON *rows = cdp_eval(&c, rows_js);
	ck_assert(cJSON_IsArray(rows));
	ck_assert_int_eq(cJSON_GetArraySize(rows), cJSON_GetArraySize(api_rows));
	static const char *const num_keys[] = { "submission", "rank", "speedup", "speedup_ci_low",
						"speedup_ci_high", "latency_p90_ms", "throughput",
						"quality", "model_bytes", "compression" };
	bool found = false;
	for (int i = 0; i < cJSON_GetArraySize(rows); i++) {
		cJSON *pr = cJSON_GetArrayItem(rows, i), *ar = cJSON_GetArrayItem(api_rows, i);
		for (size_t k = 0; k < sizeof(num_keys) / sizeof(num_keys[0]); k++) {
			double pv = cJSON_GetObjectItem(pr, num_keys[k])->valuedouble;
			double av = cJSON_GetObjectItem(ar, num_keys[k])->valuedouble;
			ck_assert_msg(near(pv, av), "row %d %s: page %.17g, api %.17g", i, num_keys[k], pv, av);
		}
		ck_assert_str_eq(cJSON_GetObjectItem(pr, "team")->valuestring,
				 cJSON_GetObjectItem(ar, "team")->valuestring);
		ck_assert_str_eq(cJSON_GetObjectItem(pr, "name")->valuestring,
				 cJSON_GetObjectItem(ar, "name")->valuestring);
		char shown[64];
		snprintf(shown, sizeof(shown), "%.2f\xc3\x97", cJSON_GetObjectItem(ar, "speedup")->valuedouble);
		ck_assert_str_eq(cJSON_GetObjectItem(pr, "speedup_text")->valuestring, shown);
		cJSON *pt = cJSON_GetObjectItem(pr, "techniques"), *at = cJSON_GetObjectItem(ar, "techniques");
		ck_assert_int_eq(cJSON_GetArraySize(pt), cJSON_GetArraySize(at));
		for (int t = 0; t < cJSON_GetArraySize(at); t++)
			ck_assert_str_eq(cJSON_GetArrayItem(pt, t)->valuestring,
					 cJSON_GetArrayItem(at, t)->valuestring);
		if (cJSON_GetObjectItem(pr, "submission")->valueint == sub_id) {
			found = true;
			ck_assert_str_eq(cJSON_GetObjectItem(pr, "name")->valuestring, XSS_NAME);
			ck_assert_str_eq(cJSON_GetObjectItem(pr, "team")->valuestring, XSS_TEAM);
		}
	}
	ck_assert_msg(found, "submission %d is not on the leaderboard page", sub_id);
	printf("browser: / shows %d row(s) equal to /api/v1/leaderboard/mlp_sprint\n",
	       cJSON_GetArraySize(rows));
	cJSON_Delete(rows);
	cJSON_Delete(api);
	ck_assert(cdp_eval_true(&c, no_injection_js));
	ck_assert(cdp_screenshot(&c, shots, "leaderboard.png") > 0);

	/* Sorting by a column keeps the baseline pinned and reorders by data-value. */
	ck_assert(cdp_eval_true(&c, "document.querySelector('th[data-key=\"model_bytes\"] button').click(), "
			       "document.querySelector('th[data-key=\"model_bytes\"]').getAttribute('aria-sort') "
			       "=== 'ascending' && document.querySelector('tbody.pinned tr.baseline') !== null"));

	/* The same page at phone width. */
	ck_assert(cdp_viewport(&c, 390, 844, true));
	ck_assert(cdp_navigate(&c, url));
	ck_assert(cdp_eval_true(&c, "document.documentElement.scrollWidth <= window.innerWidth + 1"));
	ck_assert(cdp_screenshot(&c, shots, "leaderboard-phone.png") > 0);
	ck_assert(cdp_viewport(&c, 1280, 900, false));

	/* The event page lists the entry, as text. */
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/events/mlp_sprint", d.port);
	ck_assert(cdp_navigate(&c, url));
	snprintf(expr, sizeof(expr), "Array.from(document.querySelectorAll('ol.top a')).some((a) => "
		 "a.textContent === '" XSS_NAME "' && a.getAttribute('href') === '/submissions/%d')",
		 sub_id);
	ck_assert(cdp_eval_true(&c, expr));
	ck_assert(cdp_eval_true(&c, no_injection_js));
	ck_assert(cdp_screenshot(&c, shots, "event.png") > 0);

	ck_assert_msg(c.dialogs == 0, "a dialog opened: '%s'", c.dialog_msg);
	ck_assert_msg(c.errors == 0, "%d script or console error(s), the first: %s", c.errors,
		      c.error_msg);
	printf("browser: no dialog opened; screenshots submit-invalid.png submit-valid.png "
	       "submission.png (the first result)%s leaderboard.png leaderboard-phone.png event.png "
	       "in %s\n", ranked_at > 0 ? " submission-last.png (the ranked one)" : "",
	       shots);
	cdp_stop(&c);
	free(token);
	free(shots);
	ck_assert_int_eq(tt_daemon_stop(&d, SIGTERM), 0);
	tt_rmtree(data);
	free(data);
	free(runner);
	tt_rmtree(fake_data);
	free(fake_data);
	free(fake);
}
END_TEST

Suite *browser_suite(void)
{
	Suite *s = suite_create("browser");
	TCase *tc = tcase_create("chromium");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_browser_flow);
	suite_add_tcase(s, tc);
	return s;
}
