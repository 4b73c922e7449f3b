/* util.c: helpers shared by the suites: temporary directories, deterministic data, numeric
 * comparison, and a real tinymlperfd on a free loopback port with a minimal HTTP client. */
#include "tests.h"

#include <sqlite3.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

char *tt_tmpdir(const char *tag)
{
	const char *base = getenv("TMPDIR");
	char tmpl[512];
	snprintf(tmpl, sizeof(tmpl), "%s/tinymlperf-%s-XXXXXX", base && *base ? base : "/tmp", tag);
	if (!mkdtemp(tmpl))
		return NULL;
	return strdup(tmpl);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void tt_rmtree(const char *path)
{
	if (path)
		nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

char *tt_build_path(const char *name)
{
	const char *dir = getenv("TM_BUILD_DIR");
	char buf[1024];
	snprintf(buf, sizeof(buf), "%s/%s", dir && *dir ? dir : "build", name);
	return strdup(buf);
}

void tt_fill_random(float *x, size_t n, uint64_t seed)
{
	uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
	for (size_t i = 0; i < n; i++) {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		x[i] = (float)((double)(s >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
	}
}

double tt_max_rel_diff(const float *a, const float *b, size_t n)
{
	double worst = 0;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)a[i] - (double)b[i]) / (1.0 + fabs((double)b[i]));
		if (d > worst || isnan(d))
			worst = isnan(d) ? INFINITY : d;
	}
	return worst;
}

// ---- a real daemon ----

int tt_daemon_start(tt_daemon *d, const char *const *extra_args)
{
	return tt_daemon_start_admin(d, NULL, extra_args);
}

static int tt_daemon_spawn(tt_daemon *d, bool admin, const char *const *extra_args);

int tt_daemon_start_admin(tt_daemon *d, const char *admin_token, const char *const *extra_args)
{
	memset(d, 0, sizeof(*d));
	d->data_dir = tt_tmpdir("daemon");
	if (!d->data_dir)
		return -1;
	char token_path[600];
	snprintf(token_path, sizeof(token_path), "%s/admin.token", d->data_dir);
	if (admin_token) {
		FILE *f = fopen(token_path, "w");
		if (!f)
			return -1;
		fputs(admin_token, f);
		fclose(f);
	}
	return tt_daemon_spawn(d, admin_token != NULL, extra_args);
}

int tt_daemon_restart(tt_daemon *d, const char *const *extra_args)
{
	char token_path[600];
	snprintf(token_path, sizeof(token_path), "%s/admin.token", d->data_dir);
	return tt_daemon_spawn(d, access(token_path, R_OK) == 0, extra_args);
}

static int tt_daemon_spawn(tt_daemon *d, bool admin, const char *const *extra_args)
{
	const char *admin_token = admin ? "" : NULL;
	char token_path[600];
	snprintf(token_path, sizeof(token_path), "%s/admin.token", d->data_dir);
	char *bin = tt_build_path("tinymlperfd");
	const char *argv[32];
	int argc = 0;
	argv[argc++] = bin;
	argv[argc++] = "--listen";
	argv[argc++] = "127.0.0.1:0";
	argv[argc++] = "--data-dir";
	argv[argc++] = d->data_dir;
	/* Tests bring their own reference models (extra_args may say otherwise). */
	argv[argc++] = "--train-references";
	argv[argc++] = "no";
	if (admin_token) {
		argv[argc++] = "--admin-token-file";
		argv[argc++] = token_path;
	}
	for (int i = 0; extra_args && extra_args[i] && argc < 31; i++)
		argv[argc++] = extra_args[i];
	argv[argc] = NULL;

	int fds[2];
	if (pipe2(fds, O_CLOEXEC) != 0) {
		free(bin);
		return -1;
	}
	pid_t pid = fork();
	if (pid == 0) {
		dup2(fds[1], 2);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	free(bin);
	close(fds[1]);
	if (pid < 0) {
		close(fds[0]);
		return -1;
	}
	d->pid = pid;
	d->log_fd = fds[0];

	/* Read the log until the "listening" line gives the port (10 s at most). */
	char buf[8192];
	size_t len = 0;
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		long waited_ms = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
		if (waited_ms > 10000)
			break;
		struct pollfd pfd = { .fd = d->log_fd, .events = POLLIN };
		if (poll(&pfd, 1, 100) <= 0)
			continue;
		ssize_t n = read(d->log_fd, buf + len, sizeof(buf) - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
		buf[len] = '\0';
		const char *p = strstr(buf, "msg=\"listening\"");
		const char *q = p ? strstr(p, " port=") : NULL;
		if (q && strchr(q, '\n')) {
			d->port = (int)strtol(q + 6, NULL, 10);
			return d->port > 0 ? 0 : -1;
		}
		if (len == sizeof(buf) - 1)
			break;
	}
	fprintf(stderr, "tt_daemon_start: no port in daemon log:\n%.*s\n", (int)len, buf);
	tt_daemon_stop(d, SIGKILL);
	return -1;
}

int tt_daemon_stop(tt_daemon *d, int sig)
{
	int code = tt_daemon_kill(d, sig);
	tt_rmtree(d->data_dir);
	free(d->data_dir);
	d->data_dir = NULL;
	return code;
}

int tt_daemon_kill(tt_daemon *d, int sig)
{
	int code = -1;
	if (d->pid > 0) {
		kill(d->pid, sig);
		int status;
		for (int i = 0; i < 100; i++) {
			pid_t r = waitpid(d->pid, &status, WNOHANG);
			if (r == d->pid) {
				code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
				break;
			}
			struct timespec ts = { 0, 50 * 1000 * 1000 };
			nanosleep(&ts, NULL);
		}
		if (code < 0) {
			kill(d->pid, SIGKILL);
			waitpid(d->pid, &status, 0);
			code = 128 + SIGKILL;
		}
		d->pid = 0;
	}
	if (d->log_fd > 0)
		close(d->log_fd);
	d->log_fd = -1;
	return code;
}

int tt_http(int port, const char *method, const char *path, const char *headers,
	    const char *req_body, size_t req_len, char **body)
{
	return tt_http_ex(port, method, path, headers, req_body, req_len, NULL, body);
}

int tt_http_ex(int port, const char *method, const char *path, const char *headers,
	       const char *req_body, size_t req_len, char **resp_headers, char **body)
{
	if (body)
		*body = NULL;
	if (resp_headers)
		*resp_headers = NULL;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct timeval tv = { .tv_sec = 30 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		close(fd);
		return -1;
	}
	char head[4096];
	int hn = snprintf(head, sizeof(head),
			  "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n"
			  "Content-Length: %zu\r\n%s\r\n",
			  method, path, port, req_body ? req_len : 0, headers ? headers : "");
	if (hn < 0 || (size_t)hn >= sizeof(head) || write(fd, head, (size_t)hn) != hn ||
	    (req_body && req_len && write(fd, req_body, req_len) != (ssize_t)req_len)) {
		close(fd);
		return -1;
	}
	size_t cap = 65536, len = 0;
	char *buf = malloc(cap);
	for (;;) {
		if (len + 1 >= cap) {
			cap *= 2;
			buf = realloc(buf, cap);
		}
		ssize_t n = read(fd, buf + len, cap - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	int status = -1;
	if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
		status = -1;
	char *sep = strstr(buf, "\r\n\r\n");
	if (body)
		*body = strdup(sep ? sep + 4 : "");
	if (resp_headers)
		*resp_headers = strndup(buf, sep ? (size_t)(sep - buf) : len);
	free(buf);
	return status;
}

char *tt_wait_submission(int port, int64_t id, const char *until, double timeout_s)
{
	char path[64];
	snprintf(path, sizeof(path), "/api/v1/submissions/%lld", (long long)id);
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		char *body = NULL;
		int st = tt_http(port, "GET", path, NULL, NULL, 0, &body);
		if (st == 200 && body) {
			const char *p = strstr(body, "\"status\":\"");
			if (p) {
				p += 10;
				bool hit = until ? strncmp(p, until, strlen(until)) == 0 &&
						   p[strlen(until)] == '"'
						 : strncmp(p, "finished\"", 9) == 0 ||
						   strncmp(p, "failed\"", 7) == 0 ||
						   strncmp(p, "cancelled\"", 10) == 0;
				if (hit)
					return body;
			}
		}
		free(body);
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9 >
		    timeout_s)
			return NULL;
		struct timespec ts = { 0, 50 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}

int tt_make_team(int port, const char *admin_token, const char *name, char *token, size_t len)
{
	char hdr[256], body[256];
	snprintf(hdr, sizeof(hdr), "Authorization: Bearer %s\r\n", admin_token);
	snprintf(body, sizeof(body), "{\"name\":\"%s\"}", name);
	char *reply = NULL;
	int st = tt_http(port, "POST", "/api/v1/teams", hdr, body, strlen(body), &reply);
	const char *p = reply ? strstr(reply, "\"token\":\"") : NULL;
	int rc = -1;
	if (st == 201 && p) {
		p += 9;
		const char *q = strchr(p, '"');
		if (q && (size_t)(q - p) < len) {
			memcpy(token, p, (size_t)(q - p));
			token[q - p] = '\0';
			rc = 0;
		}
	}
	free(reply);
	return rc;
}

char *tt_daemon_log(tt_daemon *d)
{
	size_t cap = 65536, len = 0;
	char *buf = malloc(cap);
	for (;;) {
		struct pollfd pfd = { .fd = d->log_fd, .events = POLLIN };
		if (d->log_fd < 0 || poll(&pfd, 1, 0) <= 0 || len + 1 >= cap)
			break;
		ssize_t n = read(d->log_fd, buf + len, cap - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	return buf;
}

char *tt_worker_path(const char *name)
{
	const char *dir = getenv("TM_BUILD_DIR");
	char plain[256];
	snprintf(plain, sizeof(plain), "build/%s", name);
	if (dir && strstr(dir, "asan") && access(plain, X_OK) == 0)
		return strdup(plain);
	return tt_build_path(name);
}

long tt_db_scalar(const tt_daemon *d, const char *sql)
{
	char path[700];
	snprintf(path, sizeof(path), "%s/tinymlperf.db", d->data_dir);
	sqlite3 *h;
	long n = -1;
	if (sqlite3_open(path, &h) != SQLITE_OK) {
		sqlite3_close(h);
		return -1;
	}
	sqlite3_busy_timeout(h, 5000);
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW)
			n = (long)sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
	}
	sqlite3_close(h);
	return n;
}
