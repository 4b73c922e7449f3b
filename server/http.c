/* http.c: the HTTP front end.  libmicrohttpd runs without threads of its own in epoll mode; its
 * epoll descriptor is watched by a uv_poll_t on the daemon's libuv loop and its timeouts by a
 * uv_timer_t, so every handler runs on the loop thread next to the scheduler and the database
 * (no locks).  Requests are matched against a route table; bodies are collected up to a limit
 * (413 beyond) before the handler sees them. */
#include "server.h"
#include "engine.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cjson/cJSON.h>

struct http_server {
	uv_loop_t *loop;
	uv_poll_t poll;        /* readable when MHD's epoll set has events */
	uv_timer_t timer;      /* MHD's next timeout */
	struct MHD_Daemon *mhd;
	int listen_fd;
	int port;
	http_config cfg;
	int closing;           /* handles still to close */
	http_route_stats *stats;  /* (cfg.n_routes + 1) */
};

/* A streaming response: MHD pulls from the reader; with nothing to send the connection is
 * suspended until http_stream_wake resumes it. */
struct http_stream {
	http_server *srv;
	struct MHD_Connection *conn;
	const http_stream_ops *ops;
	void *arg;
	bool suspended;
};

const double http_lat_bounds_s[HTTP_LAT_BUCKETS] = { 0.0005, 0.001, 0.0025, 0.005, 0.01,
						      0.05, 0.25, 1.0 };

/* Per-request state, from the first call of the access handler to the completion callback. */
typedef struct http_conn_state {
	char *body;            /* (body_cap) */
	size_t body_len;
	size_t body_cap;
	bool too_large;
} http_conn_state;

// ---- replies ----

void http_reply_json(http_reply *rep, int status, char *json)
{
	free(rep->body);
	rep->status = status;
	rep->content_type = "application/json";
	rep->body = json;
	rep->len = json ? strlen(json) : 0;
}

void http_reply_error(http_reply *rep, int status, const char *code, const char *field,
		      const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	cJSON *root = cJSON_CreateObject();
	cJSON *e = cJSON_AddObjectToObject(root, "error");
	cJSON_AddStringToObject(e, "code", code);
	cJSON_AddStringToObject(e, "message", msg);
	if (field)
		cJSON_AddStringToObject(e, "field", field);
	else
		cJSON_AddNullToObject(e, "field");
	http_reply_json(rep, status, cJSON_PrintUnformatted(root));
	cJSON_Delete(root);
}

const char *http_request_header(const http_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *http_request_query(const http_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

// ---- forms ----

typedef struct form_state {
	const char *const *names;
	char **values;
	size_t *lens;
	size_t n, max_each;
	bool too_big;
} form_state;

static enum MHD_Result form_iter(void *cls, enum MHD_ValueKind kind, const char *key,
				 const char *filename, const char *content_type,
				 const char *transfer_encoding, const char *data, uint64_t off,
				 size_t size)
{
	(void)kind;
	(void)filename;
	(void)content_type;
	(void)transfer_encoding;
	(void)off;
	form_state *fs = cls;
	for (size_t i = 0; i < fs->n; i++) {
		if (strcmp(key, fs->names[i]) != 0)
			continue;
		if (fs->lens[i] + size > fs->max_each) {
			fs->too_big = true;
			return MHD_NO;
		}
		char *v = realloc(fs->values[i], fs->lens[i] + size + 1);
		if (!v)
			return MHD_NO;
		memcpy(v + fs->lens[i], data, size);
		fs->lens[i] += size;
		v[fs->lens[i]] = '\0';
		fs->values[i] = v;
	}
	return MHD_YES;
}

int http_form_fields(const http_request *req, const char *const *names, char **values,
		     size_t n, size_t max_each, char *err, size_t errlen)
{
	size_t lens[16] = { 0 };
	for (size_t i = 0; i < n; i++)
		values[i] = NULL;
	if (n > 16) {
		snprintf(err, errlen, "too many form fields requested");
		return -1;
	}
	form_state fs = { names, values, lens, n, max_each, false };
	struct MHD_PostProcessor *pp = MHD_create_post_processor(req->conn, 16 * 1024, form_iter, &fs);
	if (!pp) {
		snprintf(err, errlen, "the body must be multipart/form-data or "
			 "application/x-www-form-urlencoded (with a boundary)");
		return -1;
	}
	enum MHD_Result r = MHD_post_process(pp, req->body, req->body_len);
	MHD_destroy_post_processor(pp);
	if (fs.too_big || r != MHD_YES) {
		for (size_t i = 0; i < n; i++) {
			free(values[i]);
			values[i] = NULL;
		}
		if (fs.too_big)
			snprintf(err, errlen, "a form field is larger than %zu bytes", max_each);
		else
			snprintf(err, errlen, "the form data is malformed");
		return -1;
	}
	return 0;
}

// ---- routing ----

bool http_route_match(const char *pattern, const char *path, http_request *req)
{
	size_t used = 0;
	int np = 0;
	const char *p = pattern, *s = path;
	while (*p && *s) {
		if (p[0] == '{' && p[1] == '}') {
			const char *end = strchr(s, '/');
			size_t n = end ? (size_t)(end - s) : strlen(s);
			if (n == 0 || np == HTTP_MAX_PARAMS || used + n + 1 > sizeof(req->param_buf))
				return false;
			memcpy(req->param_buf + used, s, n);
			req->param_buf[used + n] = '\0';
			req->params[np++] = req->param_buf + used;
			used += n + 1;
			s += n;
			p += 2;
			continue;
		}
		if (*p != *s)
			return false;
		p++;
		s++;
	}
	return *p == '\0' && *s == '\0';
}

/* Returns the index of the route that answered, or n_routes. */
static size_t http_dispatch(http_server *srv, http_request *req, http_reply *rep)
{
	bool path_known = false;
	for (size_t i = 0; i < srv->cfg.n_routes; i++) {
		const http_route *r = &srv->cfg.routes[i];
		if (!http_route_match(r->pattern, req->path, req))
			continue;
		path_known = true;
		if (strcmp(r->method, req->method) == 0 ||
		    (strcmp(req->method, "HEAD") == 0 && strcmp(r->method, "GET") == 0)) {
			r->fn(srv->cfg.app, req, rep);
			return i;
		}
	}
	if (path_known)
		http_reply_error(rep, 405, "method_not_allowed", NULL, "%s is not allowed on '%s'",
				 req->method, req->path);
	else
		http_reply_error(rep, 404, "not_found", NULL, "no such resource: '%s'", req->path);
	return srv->cfg.n_routes;
}

static void http_count(http_server *srv, size_t route, int status, double seconds)
{
	http_route_stats *st = &srv->stats[route];
	st->requests++;
	if (status >= 100 && status < 600)
		st->by_class[status / 100]++;
	for (int b = 0; b < HTTP_LAT_BUCKETS; b++)
		if (seconds <= http_lat_bounds_s[b])
			st->buckets[b]++;
	st->sum_s += seconds;
}

const http_route_stats *http_server_stats(const http_server *s)
{
	return s->stats;
}

// ---- streams ----

static void http_on_timer(uv_timer_t *t);

static ssize_t http_stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)pos;
	http_stream *s = cls;
	long n = s->ops->read(s->arg, buf, max);
	if (n < 0)
		return MHD_CONTENT_READER_END_OF_STREAM;
	if (n == 0) {
		/* Nothing to send: park the connection instead of letting MHD poll us. */
		s->suspended = true;
		MHD_suspend_connection(s->conn);
		return 0;
	}
	return (ssize_t)n;
}

static void http_stream_free(void *cls)
{
	http_stream *s = cls;
	s->ops->release(s->arg);
	free(s);
}

void http_stream_wake(http_stream *s)
{
	if (!s || !s->suspended)
		return;
	s->suspended = false;
	MHD_resume_connection(s->conn);
	if (!s->srv->closing)
		uv_timer_start(&s->srv->timer, http_on_timer, 0, 0);
}

static enum MHD_Result http_send_stream(http_server *srv, struct MHD_Connection *conn,
					 http_reply *rep)
{
	http_stream *s = tm_xcalloc(1, sizeof(*s));
	s->srv = srv;
	s->conn = conn;
	s->ops = rep->stream;
	s->arg = rep->stream_arg;
	struct MHD_Response *resp = MHD_create_response_from_callback(
		MHD_SIZE_UNKNOWN, 4096, http_stream_reader, s, http_stream_free);
	if (!resp) {
		http_stream_free(s);
		return MHD_NO;
	}
	s->ops->attach(s->arg, s);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
				rep->content_type ? rep->content_type : "text/event-stream");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
	enum MHD_Result ret = MHD_queue_response(conn, (unsigned)rep->status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result http_send(struct MHD_Connection *conn, http_reply *rep)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(
		rep->len, rep->body ? rep->body : (void *)"", rep->body ? MHD_RESPMEM_MUST_FREE
									 : MHD_RESPMEM_PERSISTENT);
	if (!resp) {
		free(rep->body);
		return MHD_NO;
	}
	rep->body = NULL;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
				rep->content_type ? rep->content_type : "text/plain");
	MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (rep->retry_after_s > 0) {
		char ra[32];
		snprintf(ra, sizeof(ra), "%ld", rep->retry_after_s);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
	}
	if (rep->location[0])
		MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, rep->location);
	enum MHD_Result ret = MHD_queue_response(conn, (unsigned)rep->status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result http_access(void *cls, struct MHD_Connection *conn, const char *url,
				   const char *method, const char *version,
				   const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	(void)version;
	http_server *srv = cls;
	http_conn_state *st = *con_cls;
	if (!st) {
		st = calloc(1, sizeof(*st));
		if (!st)
			return MHD_NO;
		*con_cls = st;
		const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
							     MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl) {
			char *end;
			errno = 0;
			unsigned long long n = strtoull(cl, &end, 10);
			if (errno || *end || n > (unsigned long long)srv->cfg.max_body_bytes)
				st->too_large = true;
		}
		if (st->too_large) {
			http_reply rep = { 0 };
			http_reply_error(&rep, 413, "body_too_large", NULL,
					 "request body is larger than the limit of %ld bytes",
					 srv->cfg.max_body_bytes);
			return http_send(conn, &rep);
		}
		return MHD_YES;
	}
	if (*upload_data_size > 0) {
		size_t n = *upload_data_size;
		*upload_data_size = 0;
		if (st->too_large)
			return MHD_YES;
		if (st->body_len + n > (size_t)srv->cfg.max_body_bytes) {
			st->too_large = true;
			return MHD_YES;
		}
		if (st->body_len + n + 1 > st->body_cap) {
			size_t cap = st->body_cap ? st->body_cap : 4096;
			while (cap < st->body_len + n + 1)
				cap *= 2;
			char *b = realloc(st->body, cap);
			if (!b)
				return MHD_NO;
			st->body = b;
			st->body_cap = cap;
		}
		memcpy(st->body + st->body_len, upload_data, n);
		st->body_len += n;
		st->body[st->body_len] = '\0';
		return MHD_YES;
	}

	http_reply rep = { 0 };
	if (st->too_large) {
		http_reply_error(&rep, 413, "body_too_large", NULL,
				 "request body is larger than the limit of %ld bytes",
				 srv->cfg.max_body_bytes);
		return http_send(conn, &rep);
	}
	http_request req = { 0 };
	req.method = method;
	req.path = url;
	req.body = st->body ? st->body : "";
	req.body_len = st->body_len;
	req.conn = conn;
	uint64_t t0 = tm_now_ns();
	size_t route = http_dispatch(srv, &req, &rep);
	double seconds = (double)(tm_now_ns() - t0) / 1e9;
	http_count(srv, route, rep.status, seconds);
	log_debug(srv->cfg.log, "http request", "method=%s path=\"%s\" status=%d us=%.1f", method,
		  url, rep.status, seconds * 1e6);
	if (rep.stream)
		return http_send_stream(srv, conn, &rep);
	return http_send(conn, &rep);
}

static void http_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			   enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)conn;
	(void)toe;
	http_conn_state *st = *con_cls;
	if (st) {
		free(st->body);
		free(st);
	}
	*con_cls = NULL;
}

// ---- the loop glue ----

static void http_run(http_server *srv);

static void http_on_timer(uv_timer_t *t)
{
	http_run(t->data);
}

static void http_on_poll(uv_poll_t *p, int status, int events)
{
	(void)status;
	(void)events;
	http_run(p->data);
}

static void http_run(http_server *srv)
{
	if (srv->closing)
		return;
	MHD_run(srv->mhd);
	MHD_UNSIGNED_LONG_LONG ms;
	if (MHD_get_timeout(srv->mhd, &ms) == MHD_YES)
		uv_timer_start(&srv->timer, http_on_timer, ms > 60000 ? 60000 : ms, 0);
	else
		uv_timer_stop(&srv->timer);
}

// ---- binding ----

static int http_bind(const char *listen_addr, int *family, char *err, size_t errlen)
{
	char host[128];
	const char *port;
	if (listen_addr[0] == '[') {
		const char *close = strchr(listen_addr, ']');
		if (!close || close[1] != ':' || (size_t)(close - listen_addr - 1) >= sizeof(host)) {
			snprintf(err, errlen, "listen: '%s' is not [v6-address]:port", listen_addr);
			return -1;
		}
		memcpy(host, listen_addr + 1, (size_t)(close - listen_addr - 1));
		host[close - listen_addr - 1] = '\0';
		port = close + 2;
	} else {
		const char *colon = strrchr(listen_addr, ':');
		if (!colon || (size_t)(colon - listen_addr) >= sizeof(host)) {
			snprintf(err, errlen, "listen: '%s' is not host:port", listen_addr);
			return -1;
		}
		memcpy(host, listen_addr, (size_t)(colon - listen_addr));
		host[colon - listen_addr] = '\0';
		port = colon + 1;
	}
	char *end;
	long pn = strtol(port, &end, 10);
	if (*port == '\0' || *end != '\0' || pn < 0 || pn > 65535) {
		snprintf(err, errlen, "listen: port '%s' must be an integer in [0, 65535]", port);
		return -1;
	}
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *res;
	int gai = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
	if (gai != 0) {
		snprintf(err, errlen, "listen: cannot resolve '%s': %s", host, gai_strerror(gai));
		return -1;
	}
	int fd = -1;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			continue;
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 512) == 0) {
			*family = ai->ai_family;
			break;
		}
		snprintf(err, errlen, "listen: cannot bind '%s': %s", listen_addr, strerror(errno));
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd;
}

static int http_local_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
		return -1;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return -1;
}

int http_server_start(http_server **out, uv_loop_t *loop, const http_config *cfg,
		      char *err, size_t errlen)
{
	*out = NULL;
	int family = AF_INET;
	int fd = http_bind(cfg->listen, &family, err, errlen);
	if (fd < 0)
		return -1;
	http_server *srv = tm_xcalloc(1, sizeof(*srv));
	srv->loop = loop;
	srv->cfg = *cfg;
	srv->listen_fd = fd;
	srv->port = http_local_port(fd);
	srv->stats = tm_xcalloc(cfg->n_routes + 1, sizeof(*srv->stats));
	unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
	if (family == AF_INET6)
		flags |= MHD_USE_IPv6;
	/* MHD's per-connection memory holds a request's headers and the I/O buffers (bodies are
	 * gathered by http_access); it is zeroed between the requests of a kept-alive
	 * connection, so it stays at MHD's default size: twice that made make bench's
	 * leaderboard row miss its target, 0.63-0.76 of the static server against 0.86-0.92. */
	srv->mhd = MHD_start_daemon(flags, 0, NULL, NULL, http_access, srv,
				    MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
				    MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
				    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->conn_timeout_s,
				    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)32 * 1024,
				    MHD_OPTION_NOTIFY_COMPLETED, http_completed, srv,
				    MHD_OPTION_END);
	if (!srv->mhd) {
		snprintf(err, errlen, "http: libmicrohttpd failed to start on '%s'", cfg->listen);
		close(fd);
		free(srv->stats);
		free(srv);
		return -1;
	}
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_EPOLL_FD);
	if (!info) {
		snprintf(err, errlen, "http: libmicrohttpd has no epoll descriptor");
		MHD_stop_daemon(srv->mhd);
		close(fd);
		free(srv->stats);
		free(srv);
		return -1;
	}
	uv_poll_init(loop, &srv->poll, info->epoll_fd);
	srv->poll.data = srv;
	uv_timer_init(loop, &srv->timer);
	srv->timer.data = srv;
	uv_poll_start(&srv->poll, UV_READABLE, http_on_poll);
	http_run(srv);
	*out = srv;
	return 0;
}

int http_server_port(const http_server *srv)
{
	return srv->port;
}

static void http_on_close(uv_handle_t *h)
{
	http_server *srv = h->data;
	if (--srv->closing > 0)
		return;
	/* Both handles are gone from the loop: now MHD may close its epoll descriptor, the
	 * listening socket (it owns it since MHD_OPTION_LISTEN_SOCKET) and every connection. */
	MHD_stop_daemon(srv->mhd);
	free(srv->stats);
	free(srv);
}

void http_server_stop(http_server *srv)
{
	if (!srv)
		return;
	srv->closing = 2;
	uv_close((uv_handle_t *)&srv->poll, http_on_close);
	uv_close((uv_handle_t *)&srv->timer, http_on_close);
}
