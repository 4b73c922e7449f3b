/* server.h: the internals of tinymlperfd shared between its modules: options, logging, the
 * SQLite store and the HTTP front end driven by the libuv loop.  main.c wires them together. */
#ifndef TM_SERVER_H
#define TM_SERVER_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <uv.h>

// ---- options (opts.c) ----

/* Every daemon option: a flag, an environment variable, a default and bounds (one table). */
typedef struct srv_opts {
	char listen[128];            /* host:port or [v6]:port */
	char data_dir[PATH_MAX];
	char db_path[PATH_MAX];      /* default <data_dir>/tinymlperf.db */
	char web_dir[PATH_MAX];      /* default ./web if present, else the installed copy */
	char log_level[16];          /* debug, info, warn, error */
	long max_connections;        /* concurrent HTTP connections */
	long conn_timeout_s;         /* idle seconds before a connection is closed */
	long max_body_bytes;         /* request body limit (413 beyond) */
	char admin_token_file[PATH_MAX];
	char admin_token[256];       /* env TINYMLPERF_ADMIN_TOKEN only, never a flag */
	bool open_registration;      /* anyone may POST /api/v1/teams */
	bool publish_configs;        /* every viewer sees every config */
	long quota_per_day;          /* submissions per team per UTC day */
	long quota_queued;           /* submissions per team queued or running at once */
	bool check_only;             /* --check: validate the configuration and exit */
	/* workers */
	long workers;                /* worker slots; 0: one per core minus one, at least one */
	char worker_path[PATH_MAX];  /* the worker binary; default tinymlperf-run next to us */
	char worker_user[64];        /* run workers as this user when started as root */
	long worker_timeout_s;       /* wall clock per job before its process group is killed */
	long worker_memory_mb;       /* the worker's address-space limit */
	long worker_cpu_s;           /* the worker's CPU-time limit */
	long worker_max_output;      /* bytes of stdout + stderr read from one job */
	long worker_min_count;       /* timing minimums passed to the worker; 0: its defaults */
	double worker_min_duration;  /* seconds; < 0: the worker's default */
	double worker_max_duration;  /* seconds; < 0: the worker's default */
	long max_attempts;           /* starts of one submission before it fails */
	long drain_grace_s;          /* SIGTERM: seconds running jobs get to finish */
	char train_references[128];  /* missing, no, or a comma list of events */
	bool hold_queue;             /* accept and queue submissions, start no jobs */
} srv_opts;

enum srv_opts_result {
	SRV_OPTS_RUN = 0,     /* start the daemon */
	SRV_OPTS_EXIT = 1,    /* --help or --version was printed; exit 0 */
	SRV_OPTS_ERROR = -1,  /* bad flag or value; message in err */
};

/* Defaults, then TINYMLPERF_* environment variables (env may be NULL for none), then argv. */
int srv_opts_parse(srv_opts *o, int argc, char **argv, char *const *env, FILE *out,
		   char *err, size_t errlen);
void srv_opts_usage(FILE *out);

// ---- logging (log.c) ----

enum srv_log_level { SRV_LOG_DEBUG, SRV_LOG_INFO, SRV_LOG_WARN, SRV_LOG_ERROR };

typedef struct srv_log {
	int level;  /* enum srv_log_level: messages below it are dropped */
	FILE *out;  /* stderr in the daemon */
} srv_log;

int srv_log_level_parse(const char *name);
/* One line: level=info msg="..." then the caller's key=value pairs (fmt). */
void srv_log_at(const srv_log *lg, int level, const char *msg, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
#define log_debug(lg, msg, ...) srv_log_at((lg), SRV_LOG_DEBUG, (msg), __VA_ARGS__)
#define log_info(lg, msg, ...) srv_log_at((lg), SRV_LOG_INFO, (msg), __VA_ARGS__)
#define log_warn(lg, msg, ...) srv_log_at((lg), SRV_LOG_WARN, (msg), __VA_ARGS__)
#define log_error(lg, msg, ...) srv_log_at((lg), SRV_LOG_ERROR, (msg), __VA_ARGS__)

// ---- storage (db.c) ----

typedef struct db db;

enum db_status {
	DB_OK = 0,
	DB_ERROR = -1,     /* anything else: logged, 500 */
	DB_BUSY = -2,      /* SQLITE_BUSY/LOCKED: 503, nothing written */
	DB_FULL = -3,      /* SQLITE_FULL: 503, nothing written */
	DB_NOTFOUND = -4,
	DB_CONFLICT = -5,  /* a UNIQUE constraint, or a state change that no longer applies: 409 */
	DB_FORBIDDEN = -6, /* the row belongs to another team: 403 */
	DB_QUOTA = -7,     /* a per-team quota would be exceeded: 429 */
};

typedef struct db_team {
	int64_t id;
	char name[72];   /* 1..64 bytes of UTF-8 */
	bool is_admin;
} db_team;

int db_team_create(db *d, const char *name, const uint8_t token_hash[32], int64_t *id);
int db_team_by_token(db *d, const uint8_t token_hash[32], db_team *out);
const char *db_errmsg(db *d);

/* A submission as stored; text fields are malloc'd (db_submission_release frees them). */
typedef struct db_submission {
	int64_t id;
	int64_t team_id;
	char team_name[72];
	char event[32];
	char division[8];
	char *name;
	char *config;         /* the config JSON as submitted */
	char config_sha256[65];
	char status[12];      /* queued, running, finished, failed, cancelled */
	char *error;          /* NULL unless failed */
	int attempts;
	char created_at[32], started_at[32], finished_at[32];  /* ISO 8601 UTC or "" */
	char *result;         /* the result JSON, NULL until finished */
} db_submission;

void db_submission_release(db_submission *s);

/* One ranked row of a leaderboard. */
typedef struct db_lb_row {
	int64_t submission_id;
	char team[72];
	char name[72];
	double speedup, speedup_ci_low, speedup_ci_high;
	double quality;
	double latency_p90_ns;   /* single-stream events; 0 when not measured */
	double throughput;       /* items (images, tokens) per second */
	int64_t model_bytes;
	double compression;
	char created_at[32];
	char *config;            /* for the techniques column; malloc'd */
} db_lb_row;

typedef void (*db_lb_fn)(void *arg, const db_lb_row *row);

/* Ranked rows of event/division: finished, valid, gate-passing results, the best per team
 * unless all, ordered by speedup (ties to the earlier submission).  *total gets the number
 * of rows before limit/offset. */
int db_leaderboard(db *d, const char *event, const char *division, bool all, int limit,
		   int offset, db_lb_fn fn, void *arg, int64_t *total);

typedef struct db_quota {
	int max_queued;       /* queued + running at once */
	int max_per_day;      /* per UTC day; failed and cancelled ones do not count */
} db_quota;

typedef struct db_quota_hit {
	const char *which;    /* "queued" or "daily" */
	int limit;
	long retry_after_s;   /* seconds until a retry can succeed (estimate for "queued") */
} db_quota_hit;

/* One transaction: check the team's quotas, then insert the submission as queued.  DB_QUOTA
 * fills hit. */
int db_submission_create(db *d, int64_t team_id, const char *event, const char *division,
			 const char *name, const char *config, const char *config_sha256,
			 const db_quota *q, int64_t *id, db_quota_hit *hit);
int db_submission_get(db *d, int64_t id, db_submission *out);
/* Cancel a queued or running submission of team_id (any team when admin).  DB_FORBIDDEN for
 * another team's, DB_CONFLICT when it already ended, DB_NOTFOUND. */
int db_submission_cancel(db *d, int64_t id, int64_t team_id, bool admin);

/* The next queued submission for a worker slot, fair across teams: the lowest team id above
 * after_team (wrapping around), FIFO within the team; only events with ready[i] set
 * (ev_event_at order).  Marks it running with attempts + 1 in the same transaction. */
typedef struct db_job {
	int64_t id, team_id;
	char event[32];
	char division[8];
	char *config;      /* malloc'd */
	int attempts;      /* including this start */
} db_job;
int db_job_claim(db *d, int64_t after_team, const bool *ready, int slot, db_job *out);
void db_job_release(db_job *j);
/* Start-up: running submissions go back to queued, those with attempts >= max_attempts fail
 * with a reason instead. */
int db_requeue_running(db *d, int max_attempts, int *requeued, int *failed);
/* SIGTERM drain: a running submission goes back to queued without using up an attempt. */
int db_job_requeue(db *d, int64_t id);
int db_job_fail(db *d, int64_t id, const char *error);
/* One transaction: the results row, the timings, status finished (DB_CONFLICT when the
 * submission is no longer running, e.g. cancelled). */
typedef struct db_result {
	bool valid, gate_passed;
	double speedup, speedup_ci_low, speedup_ci_high;
	double quality, latency_p90_ns, throughput;
	int64_t model_bytes;
	double compression;
	const char *json;                    /* the result without its timings */
	const int64_t *sub_ns, *base_ns;     /* raw timings */
	size_t n_sub, n_base;
} db_result;
int db_job_finish(db *d, int64_t id, const char *event, const char *division,
		  const db_result *r);
int db_progress_add(db *d, int64_t id, int seq, const char *line);
/* Stored progress lines of id with seq > after, in order. */
int db_progress_list(db *d, int64_t id, int after, void (*fn)(void *, int, const char *),
		     void *arg);
/* Submissions per status (queued, running, finished, failed, cancelled). */
int db_status_counts(db *d, int64_t counts[5]);
/* Raw timings of a submission's series ("submission" or "baseline"), in order. */
int db_timings(db *d, int64_t id, const char *series, void (*fn)(void *, int64_t), void *arg);

/* Open or create the database, enable WAL and apply pending migrations. Caller frees with
 * db_close. */
int db_open(db **out, const char *path, char *err, size_t errlen);
void db_close(db *d);
int db_schema_version(db *d);
int db_migration_count(void);
/* Counts rows of a table in the schema (health and tests). */
int db_table_count(db *d, const char *table, long *count);

// ---- tokens and text (sha256.c) ----

void sha256(const void *data, size_t len, uint8_t out[32]);
void hex_encode(const uint8_t *in, size_t n, char *out); /* out holds 2n+1 chars */
bool ct_equal(const void *a, const void *b, size_t n);   /* constant time in n */
bool utf8_valid(const char *s, size_t n);                /* strict: no overlongs, surrogates */

// ---- HTTP (http.c) ----

typedef struct http_server http_server;

#define HTTP_MAX_PARAMS 4

/* One request as the handlers see it; the body is complete and NUL-terminated. */
typedef struct http_request {
	const char *method;
	const char *path;                     /* without the query string */
	const char *params[HTTP_MAX_PARAMS];  /* the {} segments of the route, in order */
	char param_buf[256];                  /* storage for params */
	const char *body;                     /* NUL-terminated; body_len excludes the NUL */
	size_t body_len;
	void *conn;                           /* struct MHD_Connection *, for headers and query */
} http_request;

/* What a handler fills; body is malloc'd and owned by the reply until it is sent. */
typedef struct http_stream http_stream;

/* A streaming body (server-sent events): read copies up to max bytes into buf and returns the
 * count, 0 when nothing is ready yet (the connection is parked until http_stream_wake), or -1
 * at the end.  attach hands over the stream's handle once; release runs when the connection
 * is gone, after which the handle must not be used. */
typedef struct http_stream_ops {
	long (*read)(void *arg, char *buf, size_t max);
	void (*attach)(void *arg, http_stream *s);
	void (*release)(void *arg);
} http_stream_ops;

typedef struct http_reply {
	int status;
	const char *content_type;  /* static string */
	char *body;
	size_t len;
	long retry_after_s;        /* > 0: a Retry-After header */
	char location[96];         /* non-empty: a Location header */
	const http_stream_ops *stream;  /* non-NULL: stream the body (body must be NULL) */
	void *stream_arg;
} http_reply;

/* Resume a parked stream so its read runs again. */
void http_stream_wake(http_stream *s);

typedef void (*http_handler_fn)(void *app, const http_request *req, http_reply *rep);

/* A route: METHOD and a path whose "{}" segments match one path segment each. */
typedef struct http_route {
	const char *method;
	const char *pattern;
	http_handler_fn fn;
} http_route;

typedef struct http_config {
	const char *listen;       /* host:port */
	long max_connections;
	long conn_timeout_s;
	long max_body_bytes;
	const srv_log *log;
	const http_route *routes; /* table, n_routes rows */
	size_t n_routes;
	void *app;                /* handed to every handler */
} http_config;

/* Fill rep with a JSON error {"error":{"code","message","field"}}. */
void http_reply_error(http_reply *rep, int status, const char *code, const char *field,
		      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* A request header or query argument, NULL when absent. */
const char *http_request_header(const http_request *req, const char *name);
const char *http_request_query(const http_request *req, const char *name);
/* Parse a multipart/form-data or application/x-www-form-urlencoded body: values[i] gets a
 * malloc'd copy of field names[i] (text field or uploaded file), or NULL when absent.  Returns
 * 0, or -1 with a message in err when the body is not a form or a field is over max_each. */
int http_form_fields(const http_request *req, const char *const *names, char **values,
		     size_t n, size_t max_each, char *err, size_t errlen);
/* Take ownership of a malloc'd JSON string as the reply body. */
void http_reply_json(http_reply *rep, int status, char *json);
/* Match path against pattern; on success the {} segments are copied into req->params. */
bool http_route_match(const char *pattern, const char *path, http_request *req);

/* Bind the listening socket (before privileges are dropped) and start serving on loop.
 * The bound address is logged with its real port (port 0 asks the kernel for a free one). */
int http_server_start(http_server **out, uv_loop_t *loop, const http_config *cfg,
		      char *err, size_t errlen);
int http_server_port(const http_server *s);

/* Request counts and latencies per route (index into the route table; the last slot counts
 * unmatched paths), for /metrics. */
#define HTTP_LAT_BUCKETS 8
extern const double http_lat_bounds_s[HTTP_LAT_BUCKETS];  /* upper bounds, seconds */
typedef struct http_route_stats {
	uint64_t requests;
	uint64_t by_class[6];             /* 1xx..5xx at [1..5] */
	uint64_t buckets[HTTP_LAT_BUCKETS]; /* cumulative counts of latency <= bound */
	double sum_s;
} http_route_stats;
/* n_routes + 1 rows (the last: no route matched). */
const http_route_stats *http_server_stats(const http_server *s);
/* Close the listening socket and every connection; handles close through the loop. */
void http_server_stop(http_server *s);

// ---- API (api.c) ----

// ---- scheduler and workers (sched.c) ----
/* The worker pool: N slots, each pinned to its own CPU set, fed from the queued submissions
 * in SQLite (round robin over teams, FIFO within a team), each job a tinymlperf-run process
 * spawned with uv_spawn (explicit argv, env and cwd; its own process group; a wall-clock
 * timeout; bounded output).  Progress lines are stored and pushed to event-stream
 * subscribers; results are validated before they are stored.  Reference models missing from
 * the data directory are trained first, through the same slots. */

typedef struct sched sched;

typedef struct sched_metrics {
	int slots, busy;
	int64_t queued;                  /* queued submissions in the database */
	uint64_t started, finished, failed;
	uint64_t failures[8];            /* by reason, names from sched_failure_name */
	int references_ready;            /* events whose reference weights exist */
} sched_metrics;

const char *sched_failure_name(int i);  /* NULL past the last */
int sched_start(sched **out, uv_loop_t *loop, db *store, const srv_opts *o, const srv_log *lg,
		char *err, size_t errlen);
/* A submission was queued: look for a free slot. */
void sched_kick(sched *s);
/* A submission was cancelled: kill its job if one runs. */
void sched_cancel(sched *s, int64_t id);
/* SIGTERM: take no new jobs, give running ones grace_s seconds, then kill and requeue them;
 * done(arg) runs when no job is left. */
void sched_drain(sched *s, double grace_s, void (*done)(void *), void *arg);
void sched_free(sched *s);
void sched_get_metrics(sched *s, sched_metrics *m);
/* "ready", "training", "queued", "missing" or "failed" for event i (ev_event_at order). */
const char *sched_reference_state(sched *s, int i);

/* An event-stream subscriber: fn(arg, event, data) is called for each progress line and
 * status change of submission id until sched_unsubscribe. */
typedef void (*sched_sub_fn)(void *arg, const char *event, const char *data);
typedef struct sched_sub sched_sub;
sched_sub *sched_subscribe(sched *s, int64_t id, sched_sub_fn fn, void *arg);
void sched_unsubscribe(sched *s, sched_sub *sub);

typedef struct srv_app {
	db *db;
	sched *sched;               /* NULL in tests that run the API alone */
	http_server *http;
	uv_loop_t *loop;
	const http_route *routes;   /* the whole table, for /metrics */
	size_t n_routes;
	bool has_admin;             /* an admin token is configured */
	uint8_t admin_hash[32];     /* SHA-256 of the admin token */
	const srv_opts *opts;
	const srv_log *log;
	uint64_t started_ns;  /* tm_now_ns at start-up */
} srv_app;

extern const http_route api_routes[];
extern const size_t api_n_routes;

// ---- web pages (web.c) ----
/* The HTML pages (leaderboard, event, submit, submission) and the static files of web/,
 * served next to the API; main.c appends these rows to the API's route table. */
extern const http_route web_routes[];
extern const size_t web_n_routes;

#endif
