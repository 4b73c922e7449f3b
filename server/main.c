/* main.c: tinymlperfd start-up and shutdown.  Parse options, create the data directory, open
 * the database (applying schema migrations), bind and serve HTTP on the libuv loop, and stop
 * cleanly on SIGINT or SIGTERM with exit status 0. */
#include "server.h"
#include "engine.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>

extern char **environ;

typedef struct daemon_state {
	uv_loop_t loop;
	uv_signal_t sigint, sigterm;
	http_server *http;
	sched *sched;
	srv_log log;
	int signo;  /* the signal that stopped us */
	long drain_grace_s;
} daemon_state;

/* Every job has ended or was requeued: release the last handles so the loop ends. */
static void on_drained(void *arg)
{
	daemon_state *d = arg;
	sched_free(d->sched);
	d->sched = NULL;
	uv_close((uv_handle_t *)&d->sigint, NULL);
	uv_close((uv_handle_t *)&d->sigterm, NULL);
}

/* SIGINT or SIGTERM: stop accepting requests, let running jobs finish within the grace
 * period (the rest go back to the queue), then stop. */
static void on_signal(uv_signal_t *h, int signo)
{
	daemon_state *d = h->data;
	if (d->signo)
		return;
	d->signo = signo;
	log_info(&d->log, "shutting down", "signal=%s", strsignal(signo));
	http_server_stop(d->http);
	d->http = NULL;
	if (d->sched)
		sched_drain(d->sched, (double)d->drain_grace_s, on_drained, d);
	else
		on_drained(d);
}

static int mkdir_p(const char *path)
{
	char buf[PATH_MAX];
	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -1;
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* The admin token comes from --admin-token-file or TINYMLPERF_ADMIN_TOKEN; only its SHA-256
 * is kept.  Tokens shorter than 16 bytes are refused. */
static int load_admin_token(srv_opts *o, srv_app *app, char *err, size_t errlen)
{
	char buf[257];
	size_t n = 0;
	if (o->admin_token_file[0]) {
		FILE *f = fopen(o->admin_token_file, "r");
		if (!f) {
			snprintf(err, errlen, "'admin-token-file' '%.300s': %s", o->admin_token_file,
				 strerror(errno));
			return -1;
		}
		n = fread(buf, 1, sizeof(buf) - 1, f);
		bool more = fgetc(f) != EOF;
		fclose(f);
		if (more) {
			snprintf(err, errlen, "'admin-token-file' '%.300s' is longer than %zu bytes",
				 o->admin_token_file, sizeof(buf) - 1);
			return -1;
		}
		while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
			n--;
	} else if (o->admin_token[0]) {
		n = strlen(o->admin_token);
		memcpy(buf, o->admin_token, n);
	} else {
		return 0;
	}
	buf[n] = '\0';
	if (n < 16) {
		snprintf(err, errlen, "the admin token is %zu bytes long, must be at least 16", n);
		return -1;
	}
	sha256(buf, n, app->admin_hash);
	app->has_admin = true;
	memset(buf, 0, sizeof(buf));
	memset(o->admin_token, 0, sizeof(o->admin_token));
	return 0;
}

int main(int argc, char **argv)
{
	srv_opts opts;
	char err[512];
	int r = srv_opts_parse(&opts, argc, argv, environ, stdout, err, sizeof(err));
	if (r == SRV_OPTS_EXIT)
		return 0;
	if (r == SRV_OPTS_ERROR) {
		fprintf(stderr, "tinymlperfd: %s\n", err);
		return EX_USAGE;
	}

	daemon_state d = { 0 };
	d.log.level = srv_log_level_parse(opts.log_level);
	d.log.out = stderr;
	signal(SIGPIPE, SIG_IGN);

	if (mkdir_p(opts.data_dir) != 0) {
		log_error(&d.log, "cannot create data directory", "path=\"%s\" error=\"%s\"",
			  opts.data_dir, strerror(errno));
		return EX_CANTCREAT;
	}
	db *store;
	if (db_open(&store, opts.db_path, err, sizeof(err)) != DB_OK) {
		log_error(&d.log, "cannot open database", "path=\"%s\" error=\"%s\"", opts.db_path, err);
		return EX_CANTCREAT;
	}
	if (opts.check_only) {
		srv_app probe = { 0 };
		if (load_admin_token(&opts, &probe, err, sizeof(err)) != 0) {
			fprintf(stderr, "tinymlperfd: %s\n", err);
			db_close(store);
			return EX_CONFIG;
		}
		printf("configuration ok: listen=%s data-dir=%s db=%s schema_version=%d\n", opts.listen,
		       opts.data_dir, opts.db_path, db_schema_version(store));
		db_close(store);
		return 0;
	}

	srv_app app = { .db = store, .opts = &opts, .log = &d.log, .started_ns = tm_now_ns(),
			.loop = &d.loop };
	d.drain_grace_s = opts.drain_grace_s;
	if (load_admin_token(&opts, &app, err, sizeof(err)) != 0) {
		log_error(&d.log, "bad admin token", "error=\"%s\"", err);
		db_close(store);
		return EX_CONFIG;
	}
	uv_loop_init(&d.loop);
	/* One route table: the API's rows, then the pages'. */
	size_t n_routes = api_n_routes + web_n_routes;
	http_route *routes = tm_xmalloc(n_routes * sizeof(*routes));
	memcpy(routes, api_routes, api_n_routes * sizeof(*routes));
	memcpy(routes + api_n_routes, web_routes, web_n_routes * sizeof(*routes));
	http_config hc = {
		.listen = opts.listen,
		.max_connections = opts.max_connections,
		.conn_timeout_s = opts.conn_timeout_s,
		.max_body_bytes = opts.max_body_bytes,
		.log = &d.log,
		.routes = routes,
		.n_routes = n_routes,
		.app = &app,
	};
	if (http_server_start(&d.http, &d.loop, &hc, err, sizeof(err)) != 0) {
		log_error(&d.log, "cannot start http", "error=\"%s\"", err);
		free(routes);
		db_close(store);
		uv_loop_close(&d.loop);
		return EX_UNAVAILABLE;
	}
	app.http = d.http;
	app.routes = routes;
	app.n_routes = n_routes;
	if (sched_start(&d.sched, &d.loop, store, &opts, &d.log, err, sizeof(err)) != 0) {
		log_error(&d.log, "cannot start the workers", "error=\"%s\"", err);
		http_server_stop(d.http);
		uv_run(&d.loop, UV_RUN_DEFAULT);
		uv_loop_close(&d.loop);
		free(routes);
		db_close(store);
		return EX_CONFIG;
	}
	app.sched = d.sched;
	uv_signal_init(&d.loop, &d.sigint);
	uv_signal_init(&d.loop, &d.sigterm);
	d.sigint.data = d.sigterm.data = &d;
	uv_signal_start(&d.sigint, on_signal, SIGINT);
	uv_signal_start(&d.sigterm, on_signal, SIGTERM);
	log_info(&d.log, "listening", "addr=%s port=%d data_dir=\"%s\" db=\"%s\" version=%s",
		 opts.listen, http_server_port(d.http), opts.data_dir, opts.db_path,
		 TM_ENGINE_VERSION);

	uv_run(&d.loop, UV_RUN_DEFAULT);
	uv_loop_close(&d.loop);
	db_close(store);
	free(routes);
	for (int i = 0; i < SRV_LB_CACHE; i++)
		free(app.lb_cache[i].body);
	log_info(&d.log, "stopped", "%s", "status=0");
	return 0;
}
