/* opts.c: the daemon's options, declared once in a table (redis static_configs style): flag,
 * environment variable, type, default, bounds and help.  Defaults are applied first, then
 * TINYMLPERF_* variables, then the command line, so containers and shells both work. */
#include "server.h"
#include "engine.h"
#include "events.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

enum opt_type { OPT_STR, OPT_LONG, OPT_DOUBLE, OPT_BOOL, OPT_ACTION };

typedef struct opt_def {
	const char *name;     /* --name; the variable is TINYMLPERF_NAME with - as _ */
	enum opt_type type;
	size_t offset;        /* into srv_opts */
	size_t size;          /* OPT_STR: buffer size */
	const char *def;      /* default as text ("" for none) */
	long min, max;        /* OPT_LONG bounds */
	const char *help;
	bool env_only;        /* secrets: never on the command line (visible in ps) */
} opt_def;

#define STR(field) OPT_STR, offsetof(srv_opts, field), sizeof(((srv_opts *)0)->field)
#define LONG(field) OPT_LONG, offsetof(srv_opts, field), 0
#define BOOL(field) OPT_BOOL, offsetof(srv_opts, field), 0
#define DOUBLE(field) OPT_DOUBLE, offsetof(srv_opts, field), 0

static const opt_def opt_table[] = {
	{ "listen", STR(listen), "127.0.0.1:8080", 0, 0, "address to listen on, host:port or [v6]:port", false },
	{ "data-dir", STR(data_dir), "./var", 0, 0, "data directory: database and reference models", false },
	{ "db", STR(db_path), "", 0, 0, "SQLite database path (default DATA_DIR/tinymlperf.db)", false },
	{ "web-dir", STR(web_dir), "", 0, 0, "directory of the web pages (default ./web or the installed copy)", false },
	{ "log-level", STR(log_level), "info", 0, 0, "debug, info, warn or error", false },
	{ "max-connections", LONG(max_connections), "256", 1, 65536, "concurrent HTTP connections", false },
	{ "conn-timeout", LONG(conn_timeout_s), "30", 1, 3600, "idle seconds before a connection is closed", false },
	{ "max-body", LONG(max_body_bytes), "1048576", 1024, 67108864, "request body limit in bytes", false },
	{ "admin-token-file", STR(admin_token_file), "", 0, 0, "file holding the admin token (or env TINYMLPERF_ADMIN_TOKEN)", false },
	{ "admin-token", STR(admin_token), "", 0, 0, "the admin token itself (environment only)", true },
	{ "open-registration", BOOL(open_registration), "0", 0, 0, "let anyone create a team (classrooms)", false },
	{ "publish-configs", BOOL(publish_configs), "0", 0, 0, "show every team's configs to everyone", false },
	{ "quota-per-day", LONG(quota_per_day), "50", 1, 100000, "submissions per team per UTC day", false },
	{ "quota-queued", LONG(quota_queued), "4", 1, 10000, "submissions per team queued or running at once", false },
	{ "workers", LONG(workers), "0", 0, 256, "worker slots, each on its own CPU (0: one per core minus one, at least one)", false },
	{ "worker", STR(worker_path), "", 0, 0, "worker binary (default: tinymlperf-run next to tinymlperfd)", false },
	{ "worker-user", STR(worker_user), "nobody", 0, 0, "user the workers run as when the daemon runs as root (\"\": same user)", false },
	{ "worker-timeout", LONG(worker_timeout_s), "3600", 1, 604800, "wall-clock seconds per job before its processes are killed", false },
	{ "worker-memory", LONG(worker_memory_mb), "4096", 64, 1048576, "address-space limit of a worker in MiB", false },
	{ "worker-cpu", LONG(worker_cpu_s), "3600", 1, 604800, "CPU-time limit of a worker in seconds", false },
	{ "worker-max-output", LONG(worker_max_output), "16777216", 65536, 1073741824, "bytes of output read from one job before it is killed", false },
	{ "worker-min-count", LONG(worker_min_count), "0", 0, 100000000, "timed queries at least (0: the worker's per-event default)", false },
	{ "worker-min-duration", DOUBLE(worker_min_duration), "-1", 0, 86400, "timed seconds at least (-1: the worker's default)", false },
	{ "worker-max-duration", DOUBLE(worker_max_duration), "-1", 0, 86400, "cap on the timed loop in seconds (-1: the worker's default)", false },
	{ "max-attempts", LONG(max_attempts), "3", 1, 100, "starts of one submission (daemon restarts) before it fails", false },
	{ "drain-grace", LONG(drain_grace_s), "30", 0, 86400, "SIGTERM: seconds running jobs get to finish before they are requeued", false },
	{ "train-references", STR(train_references), "missing", 0, 0, "train missing reference models at start: missing, no, or a comma list of events", false },
	{ "hold-queue", BOOL(hold_queue), "0", 0, 0, "accept and queue submissions but start no jobs (maintenance, load tests)", false },
	{ "check", BOOL(check_only), "0", 0, 0, "validate the configuration and exit", false },
	{ "help", OPT_ACTION, 0, 0, "", 0, 0, "print this help and exit", false },
	{ "version", OPT_ACTION, 0, 0, "", 0, 0, "print the version and exit", false },
};
#define N_OPTS (sizeof(opt_table) / sizeof(opt_table[0]))

static void env_name(const opt_def *d, char *buf, size_t len)
{
	size_t n = (size_t)snprintf(buf, len, "TINYMLPERF_%s", d->name);
	for (size_t i = 11; i < n && i < len; i++)
		buf[i] = buf[i] == '-' ? '_' : (char)(buf[i] >= 'a' && buf[i] <= 'z' ? buf[i] - 32 : buf[i]);
}

static int opt_set(srv_opts *o, const opt_def *d, const char *val, const char *origin,
		   char *err, size_t errlen)
{
	void *field = (char *)o + d->offset;
	switch (d->type) {
	case OPT_STR:
		if (strlen(val) >= d->size) {
			snprintf(err, errlen, "%s: '%s' is %zu bytes long, must be under %zu", origin,
				 d->name, strlen(val), d->size);
			return -1;
		}
		memcpy(field, val, strlen(val) + 1);
		return 0;
	case OPT_LONG: {
		char *end;
		errno = 0;
		long v = strtol(val, &end, 10);
		if (errno || end == val || *end != '\0' || v < d->min || v > d->max) {
			snprintf(err, errlen, "%s: '%s' is '%s', must be an integer in [%ld, %ld]",
				 origin, d->name, val, d->min, d->max);
			return -1;
		}
		*(long *)field = v;
		return 0;
	}
	case OPT_DOUBLE: {
		char *end;
		errno = 0;
		double v = strtod(val, &end);
		if (errno || end == val || *end != '\0' || !(v == -1 || (v >= d->min && v <= d->max))) {
			snprintf(err, errlen, "%s: '%s' is '%s', must be -1 or a number in [%ld, %ld]",
				 origin, d->name, val, d->min, d->max);
			return -1;
		}
		*(double *)field = v;
		return 0;
	}
	case OPT_BOOL:
		if (strcmp(val, "1") == 0 || strcmp(val, "true") == 0 || strcmp(val, "yes") == 0) {
			*(bool *)field = true;
		} else if (strcmp(val, "0") == 0 || strcmp(val, "false") == 0 || strcmp(val, "no") == 0) {
			*(bool *)field = false;
		} else {
			snprintf(err, errlen, "%s: '%s' is '%s', must be 0 or 1", origin, d->name, val);
			return -1;
		}
		return 0;
	case OPT_ACTION:
		return 0;
	}
	return -1;
}

void srv_opts_usage(FILE *out)
{
	fprintf(out, "usage: tinymlperfd [options]\n\n"
		     "The TinyMLPerf competition server.  Every option can also be set with the\n"
		     "environment variable shown; the command line wins.\n\n");
	for (size_t i = 0; i < N_OPTS; i++) {
		const opt_def *d = &opt_table[i];
		char env[64];
		env_name(d, env, sizeof(env));
		if (d->env_only) {
			fprintf(out, "  %-26s %s\n", env, d->help);
			continue;
		}
		char flag[64];
		snprintf(flag, sizeof(flag), "--%s%s", d->name,
			 d->type == OPT_STR || d->type == OPT_LONG || d->type == OPT_DOUBLE ? "=VALUE"
											      : "");
		fprintf(out, "  %-26s %s", flag, d->help);
		if (d->type == OPT_LONG)
			fprintf(out, " [%ld..%ld]", d->min, d->max);
		if (d->type == OPT_DOUBLE)
			fprintf(out, " [%ld..%ld]", d->min, d->max);
		if (d->type != OPT_ACTION && d->def[0] && d->type != OPT_BOOL)
			fprintf(out, " (default %s)", d->def);
		if (d->type != OPT_ACTION)
			fprintf(out, "\n  %-26s env %s", "", env);
		fputc('\n', out);
	}
}

static int opts_finish(srv_opts *o, char *err, size_t errlen)
{
	if (srv_log_level_parse(o->log_level) < 0) {
		snprintf(err, errlen, "'log-level' is '%s', must be one of debug, info, warn, error",
			 o->log_level);
		return -1;
	}
	if (o->data_dir[0] == '\0') {
		snprintf(err, errlen, "'data-dir' is empty, must name a directory");
		return -1;
	}
	if (strcmp(o->train_references, "missing") != 0 && strcmp(o->train_references, "no") != 0) {
		char list[sizeof(o->train_references)];
		memcpy(list, o->train_references, sizeof(list));
		for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
		     tok = strtok_r(NULL, ",", &save)) {
			if (!ev_event_find(tok)) {
				snprintf(err, errlen, "'train-references' names '%s', must be missing, no, "
					 "or a comma list of %s", tok, ev_event_names());
				return -1;
			}
		}
	}
	if (o->db_path[0] == '\0') {
		int n = snprintf(o->db_path, sizeof(o->db_path), "%s/tinymlperf.db", o->data_dir);
		if (n < 0 || (size_t)n >= sizeof(o->db_path)) {
			snprintf(err, errlen, "'data-dir' is too long, must be under %zu bytes",
				 sizeof(o->db_path) - 16);
			return -1;
		}
	}
	return 0;
}

int srv_opts_parse(srv_opts *o, int argc, char **argv, char *const *env, FILE *out,
		   char *err, size_t errlen)
{
	memset(o, 0, sizeof(*o));
	for (size_t i = 0; i < N_OPTS; i++)
		if (opt_table[i].type != OPT_ACTION &&
		    opt_set(o, &opt_table[i], opt_table[i].def, "default", err, errlen) < 0)
			return SRV_OPTS_ERROR;

	for (char *const *e = env; e && *e; e++) {
		for (size_t i = 0; i < N_OPTS; i++) {
			char name[64];
			env_name(&opt_table[i], name, sizeof(name));
			size_t n = strlen(name);
			if (opt_table[i].type == OPT_ACTION || strncmp(*e, name, n) != 0 || (*e)[n] != '=')
				continue;
			char origin[80];
			snprintf(origin, sizeof(origin), "env %s", name);
			if (opt_set(o, &opt_table[i], *e + n + 1, origin, err, errlen) < 0)
				return SRV_OPTS_ERROR;
		}
	}

	struct option longopts[N_OPTS + 1];
	size_t nl = 0;
	for (size_t i = 0; i < N_OPTS; i++) {
		const opt_def *d = &opt_table[i];
		if (d->env_only)
			continue;
		longopts[nl++] = (struct option){ d->name,
			d->type == OPT_STR || d->type == OPT_LONG || d->type == OPT_DOUBLE
				? required_argument : no_argument,
			NULL, (int)i + 256 };
	}
	longopts[nl] = (struct option){ 0, 0, 0, 0 };

	optind = 1;
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, ":hV", longopts, NULL)) != -1) {
		if (c == 'h' || (c >= 256 && strcmp(opt_table[c - 256].name, "help") == 0)) {
			srv_opts_usage(out);
			return SRV_OPTS_EXIT;
		}
		if (c == 'V' || (c >= 256 && strcmp(opt_table[c - 256].name, "version") == 0)) {
			fprintf(out, "tinymlperfd %s (%s)\n", TM_ENGINE_VERSION, tm_git_revision());
			return SRV_OPTS_EXIT;
		}
		if (c == ':') {
			snprintf(err, errlen, "option '%s' needs a value", argv[optind - 1]);
			return SRV_OPTS_ERROR;
		}
		if (c == '?' || c < 256) {
			snprintf(err, errlen, "unknown option '%s' (see --help)", argv[optind - 1]);
			return SRV_OPTS_ERROR;
		}
		const opt_def *d = &opt_table[c - 256];
		char origin[80];
		snprintf(origin, sizeof(origin), "--%s", d->name);
		if (opt_set(o, d, d->type == OPT_BOOL ? "1" : optarg, origin, err, errlen) < 0)
			return SRV_OPTS_ERROR;
	}
	if (optind < argc) {
		snprintf(err, errlen, "unexpected argument '%s' (see --help)", argv[optind]);
		return SRV_OPTS_ERROR;
	}
	return opts_finish(o, err, errlen) < 0 ? SRV_OPTS_ERROR : SRV_OPTS_RUN;
}
