/* sched.c: the worker pool.  Each slot runs one job at a time: a tinymlperf-run process spawned
 * with uv_spawn in its own session (so a timeout or a cancel kills its whole process group),
 * with an explicit argv, a minimal environment, its own CPU set and a private scratch
 * directory.  The data directory reaches the worker as an inherited descriptor (fd 3, read
 * through /proc/self/fd/3), so a worker that runs as an unprivileged user needs no access to
 * the directories above it.  Stdout is read line by line and bounded: progress lines are
 * stored and pushed to subscribers, the result line is validated before it is stored; any
 * other output, a crash, a signal or a timeout fails only that submission, with the reason.
 * Missing reference models are trained first, through the same slots. */
#include "server.h"
#include "engine.h"
#include "events.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <math.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SCHED_LINE_MAX (4u << 20)   /* one stdout line (the result) */
#define SCHED_ERR_TAIL 2048         /* bytes of stderr kept for the failure reason */
#define SCHED_MAX_TIMINGS 20000     /* per series, as the protocol promises */

enum job_kind { JOB_NONE, JOB_SUBMISSION, JOB_TRAIN };

/* Why the daemon killed a job (the reason stored for it). */
enum kill_reason { KILL_NONE, KILL_TIMEOUT, KILL_OUTPUT, KILL_MALFORMED, KILL_CANCEL, KILL_DRAIN };

/* Failure reasons counted for /metrics (sched_failure_name). */
enum fail_kind {
	FAIL_CRASH,      /* killed by a signal */
	FAIL_TIMEOUT,
	FAIL_OUTPUT,     /* too much output */
	FAIL_MALFORMED,  /* output that is not the protocol, or a result that does not validate */
	FAIL_CONFIG,     /* exit 2 */
	FAIL_LIMIT,      /* exit 3 */
	FAIL_INTERNAL,   /* exit 4, other exit codes, spawn failures */
	FAIL_N
};

static const char *const fail_names[FAIL_N] = { "crash", "timeout", "output_limit", "malformed",
						 "invalid_config", "resource_limit", "internal" };

const char *sched_failure_name(int i)
{
	return i >= 0 && i < FAIL_N ? fail_names[i] : NULL;
}

enum ref_state { REF_READY, REF_MISSING, REF_QUEUED, REF_TRAINING, REF_FAILED };
static const char *const ref_names[] = { "ready", "missing", "queued", "training", "failed" };

typedef struct slot {
	struct sched *s;
	int index;
	char cpus[64];            /* "1" or "1-3" */
	bool busy;
	enum job_kind kind;
	int64_t id;               /* submission */
	int event;                /* ev_event_at index */
	char division[8];
	char workdir[PATH_MAX + 64];
	int workdir_fd;
	uv_process_t proc;
	uv_pipe_t out, err;
	uv_timer_t timer;
	int pending;              /* of exit, stdout EOF, stderr EOF still to come */
	bool reading_out, reading_err;  /* not yet at EOF or stopped */
	int closing;              /* handles still closing */
	int64_t exit_status;
	int term_signal;
	enum kill_reason killed;
	char kill_detail[256];
	char *line;               /* (line_cap) the stdout line being read */
	size_t line_len, line_cap;
	size_t out_total;         /* stdout + stderr bytes read */
	char err_tail[SCHED_ERR_TAIL];
	size_t err_len;
	char *result;             /* the result line */
	int seq;                  /* progress lines stored */
	uint64_t started_ns;
} slot;

struct sched_sub {
	struct sched_sub *next;
	int64_t id;
	sched_sub_fn fn;
	void *arg;
};

struct sched {
	uv_loop_t *loop;
	db *db;
	const srv_opts *o;
	const srv_log *lg;
	int n_slots;
	slot *slots;
	uv_timer_t kick;          /* dispatch soon, outside the caller's stack */
	uv_timer_t drain_timer;
	int closing;
	int64_t last_team;
	bool draining;
	void (*drain_done)(void *);
	void *drain_arg;
	enum ref_state ref[EV_COUNT];
	char worker[PATH_MAX];
	int worker_fd;            /* the worker binary, exec'd through /proc/self/fd when dropping */
	char data_dir[PATH_MAX];
	int data_fd;
	bool drop;                /* run workers as uid/gid */
	uid_t uid;
	gid_t gid;
	uint64_t started, finished, failed;
	uint64_t failures[FAIL_N];
	sched_sub *subs;
	char readbuf[65536];      /* one loop thread: each read is consumed before the next */
};

static void sched_dispatch(sched *s);

static void on_kick(uv_timer_t *t)
{
	sched_dispatch(t->data);
}

void sched_kick(sched *s)
{
	if (s && !s->draining && !s->closing)
		uv_timer_start(&s->kick, on_kick, 0, 0);
}

// ---- subscribers ----

sched_sub *sched_subscribe(sched *s, int64_t id, sched_sub_fn fn, void *arg)
{
	sched_sub *sub = tm_xcalloc(1, sizeof(*sub));
	sub->id = id;
	sub->fn = fn;
	sub->arg = arg;
	sub->next = s->subs;
	s->subs = sub;
	return sub;
}

void sched_unsubscribe(sched *s, sched_sub *sub)
{
	for (sched_sub **p = &s->subs; *p; p = &(*p)->next) {
		if (*p == sub) {
			*p = sub->next;
			free(sub);
			return;
		}
	}
}

static void notify(sched *s, int64_t id, const char *event, const char *data)
{
	for (sched_sub *sub = s->subs, *next; sub; sub = next) {
		next = sub->next;
		if (sub->id == id)
			sub->fn(sub->arg, event, data);
	}
}

static void notify_status(sched *s, int64_t id, const char *status, const char *error)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "status", status);
	if (error)
		cJSON_AddStringToObject(o, "error", error);
	char *data = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (data)
		notify(s, id, "status", data);
	free(data);
}

// ---- files ----

static int mkdir_owned(sched *s, const char *path)
{
	if (mkdir(path, 0755) != 0 && errno != EEXIST)
		return -1;
	if (s->drop && chown(path, s->uid, s->gid) != 0)
		return -1;
	return 0;
}

static bool file_exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static void reference_path(const sched *s, int ev, char *buf, size_t len)
{
	snprintf(buf, len, "%s/models/%s.safetensors", s->data_dir, ev_event_at(ev)->name);
}

/* Remove a job's scratch directory (one level: the worker writes nothing else). */
static void workdir_remove(slot *sl)
{
	if (sl->workdir_fd >= 0) {
		close(sl->workdir_fd);
		sl->workdir_fd = -1;
	}
	if (!sl->workdir[0])
		return;
	char path[PATH_MAX + 96];
	snprintf(path, sizeof(path), "%s/config.json", sl->workdir);
	unlink(path);
	rmdir(sl->workdir);
	sl->workdir[0] = '\0';
}

// ---- finishing a job ----

static void slot_on_close(uv_handle_t *h);

static void fail_submission(slot *sl, enum fail_kind kind, const char *reason)
{
	sched *s = sl->s;
	s->failed++;
	s->failures[kind]++;
	int rc = db_job_fail(s->db, sl->id, reason);
	if (rc != DB_OK && rc != DB_CONFLICT)
		log_error(s->lg, "cannot store failure", "id=%lld db=%d reason=\"%s\"",
			  (long long)sl->id, rc, reason);
	log_warn(s->lg, "submission failed", "id=%lld slot=%d kind=%s reason=\"%s\"",
		 (long long)sl->id, sl->index, fail_names[kind], reason);
	notify_status(s, sl->id, "failed", reason);
}

/* The last non-empty stderr line, with control characters replaced, for a failure reason. */
static void err_last_line(const slot *sl, char *buf, size_t len)
{
	size_t end = sl->err_len;
	while (end > 0 && (sl->err_tail[end - 1] == '\n' || sl->err_tail[end - 1] == '\r'))
		end--;
	size_t start = end;
	while (start > 0 && sl->err_tail[start - 1] != '\n')
		start--;
	size_t n = end - start < len - 1 ? end - start : len - 1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)sl->err_tail[start + i];
		buf[i] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
	}
	buf[n] = '\0';
}

static bool json_number(const cJSON *o, const char *key, double *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
		return false;
	*out = v->valuedouble;
	return true;
}

static bool json_bool(const cJSON *o, const char *key, bool *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!cJSON_IsBool(v))
		return false;
	*out = cJSON_IsTrue(v);
	return true;
}

/* Timings array -> int64 nanoseconds; NULL (with why) when malformed. */
static int64_t *json_timings(const cJSON *arr, size_t *n, char *why, size_t len, const char *name)
{
	*n = 0;
	if (!cJSON_IsArray(arr)) {
		snprintf(why, len, "'timings.%s' is not an array", name);
		return NULL;
	}
	int count = cJSON_GetArraySize(arr);
	if (count > SCHED_MAX_TIMINGS) {
		snprintf(why, len, "'timings.%s' has %d values, at most %d are allowed", name, count,
			 SCHED_MAX_TIMINGS);
		return NULL;
	}
	int64_t *ns = tm_xmalloc(((size_t)count + 1) * sizeof(*ns));
	const cJSON *v;
	cJSON_ArrayForEach(v, arr) {
		if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0 ||
		    v->valuedouble > 1e15) {
			snprintf(why, len, "'timings.%s[%zu]' is not a duration in nanoseconds", name, *n);
			free(ns);
			return NULL;
		}
		ns[(*n)++] = (int64_t)llround(v->valuedouble);
	}
	return ns;
}

/* Check the result line against the job and the protocol, then store it with its timings. */
static int store_result(slot *sl, char *why, size_t len)
{
	sched *s = sl->s;
	cJSON *root = cJSON_Parse(sl->result);
	int rc = -1;
	int64_t *sub_ns = NULL, *base_ns = NULL;
	if (!cJSON_IsObject(root)) {
		snprintf(why, len, "the result is not a JSON object");
		goto out;
	}
	const cJSON *ev = cJSON_GetObjectItemCaseSensitive(root, "event");
	const cJSON *div = cJSON_GetObjectItemCaseSensitive(root, "division");
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "submission");
	const cJSON *quality = cJSON_GetObjectItemCaseSensitive(root, "quality");
	const cJSON *latency = cJSON_GetObjectItemCaseSensitive(root, "latency");
	const cJSON *speedup = cJSON_GetObjectItemCaseSensitive(root, "speedup");
	const cJSON *thr = cJSON_GetObjectItemCaseSensitive(root, "throughput");
	const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
	const cJSON *timings = cJSON_GetObjectItemCaseSensitive(root, "timings");
	const cJSON *reasons = cJSON_GetObjectItemCaseSensitive(root, "invalid_reasons");
	db_result r = { 0 };
	double bytes = 0;
	if (!cJSON_IsString(ev) || strcmp(ev->valuestring, ev_event_at(sl->event)->name) != 0) {
		snprintf(why, len, "'event' does not match the submission's %s",
			 ev_event_at(sl->event)->name);
	} else if (!cJSON_IsString(div) || strcmp(div->valuestring, sl->division) != 0) {
		snprintf(why, len, "'division' does not match the submission's %s", sl->division);
	} else if (!cJSON_IsNumber(id) || (int64_t)id->valuedouble != sl->id) {
		snprintf(why, len, "'submission' is not %lld", (long long)sl->id);
	} else if (!json_bool(root, "valid", &r.valid) || !cJSON_IsArray(reasons)) {
		snprintf(why, len, "'valid' or 'invalid_reasons' is missing");
	} else if (!cJSON_IsObject(quality) || !json_number(quality, "value", &r.quality) ||
		   !json_bool(quality, "passed", &r.gate_passed)) {
		snprintf(why, len, "'quality.value' or 'quality.passed' is missing");
	} else if (!cJSON_IsObject(speedup) || !json_number(speedup, "value", &r.speedup) ||
		   !json_number(speedup, "ci_low", &r.speedup_ci_low) ||
		   !json_number(speedup, "ci_high", &r.speedup_ci_high) || r.speedup <= 0 ||
		   r.speedup_ci_low > r.speedup_ci_high) {
		snprintf(why, len, "'speedup' needs value > 0 and ci_low <= ci_high");
	} else if (!cJSON_IsObject(latency) || !json_number(latency, "p90", &r.latency_p90_ns)) {
		snprintf(why, len, "'latency.p90' is missing");
	} else if (!cJSON_IsObject(thr) || !json_number(thr, "value", &r.throughput)) {
		snprintf(why, len, "'throughput.value' is missing");
	} else if (!cJSON_IsObject(model) || !json_number(model, "bytes", &bytes) || bytes < 0 ||
		   !json_number(model, "compression", &r.compression)) {
		snprintf(why, len, "'model.bytes' or 'model.compression' is missing");
	} else if (!cJSON_IsObject(timings)) {
		snprintf(why, len, "'timings' is missing");
	} else if ((sub_ns = json_timings(cJSON_GetObjectItemCaseSensitive(timings, "submission"),
					  &r.n_sub, why, len, "submission")) &&
		   (base_ns = json_timings(cJSON_GetObjectItemCaseSensitive(timings, "baseline"),
					   &r.n_base, why, len, "baseline"))) {
		r.model_bytes = (int64_t)bytes;
		r.sub_ns = sub_ns;
		r.base_ns = base_ns;
		/* The timings live in their table; the stored JSON is the rest. */
		cJSON_DeleteItemFromObjectCaseSensitive(root, "timings");
		cJSON_DeleteItemFromObjectCaseSensitive(root, "type");
		char *json = cJSON_PrintUnformatted(root);
		r.json = json;
		int dbrc = json ? db_job_finish(s->db, sl->id, ev->valuestring, div->valuestring, &r)
				: DB_ERROR;
		free(json);
		if (dbrc == DB_OK || dbrc == DB_CONFLICT) {
			rc = dbrc == DB_OK ? 0 : 1;  /* 1: cancelled meanwhile, nothing stored */
		} else {
			snprintf(why, len, "the database refused the result (%s)", db_errmsg(s->db));
			rc = -2;
		}
	}
out:
	free(sub_ns);
	free(base_ns);
	cJSON_Delete(root);
	return rc;
}

static void finish_submission(slot *sl)
{
	sched *s = sl->s;
	const int o_timeout = (int)s->o->worker_timeout_s;
	char reason[1024], tail[600];
	err_last_line(sl, tail, sizeof(tail));
	switch (sl->killed) {
	case KILL_CANCEL:
		log_info(s->lg, "submission cancelled", "id=%lld slot=%d", (long long)sl->id, sl->index);
		notify_status(s, sl->id, "cancelled", NULL);
		return;
	case KILL_DRAIN:
		if (db_job_requeue(s->db, sl->id) == DB_OK)
			log_info(s->lg, "submission requeued", "id=%lld reason=shutdown", (long long)sl->id);
		notify_status(s, sl->id, "queued", NULL);
		return;
	case KILL_TIMEOUT:
		snprintf(reason, sizeof(reason), "the worker ran longer than the %d s wall-clock limit "
			 "and was killed", o_timeout);
		fail_submission(sl, FAIL_TIMEOUT, reason);
		return;
	case KILL_OUTPUT:
		snprintf(reason, sizeof(reason), "the worker wrote more than %ld bytes of output and "
			 "was killed", s->o->worker_max_output);
		fail_submission(sl, FAIL_OUTPUT, reason);
		return;
	case KILL_MALFORMED:
		snprintf(reason, sizeof(reason), "the worker printed malformed output and was killed: %s",
			 sl->kill_detail);
		fail_submission(sl, FAIL_MALFORMED, reason);
		return;
	case KILL_NONE:
		break;
	}
	if (sl->term_signal) {
		int sig = sl->term_signal;
		if (sig == SIGSYS)
			snprintf(reason, sizeof(reason), "the worker made a system call its sandbox forbids "
				 "and was killed (SIGSYS)");
		else if (sig == SIGKILL)
			snprintf(reason, sizeof(reason), "the worker was killed (SIGKILL), e.g. by the "
				 "out-of-memory killer");
		else if (sig == SIGXCPU)
			snprintf(reason, sizeof(reason), "the worker used up its CPU-time limit of %ld s",
				 s->o->worker_cpu_s);
		else
			snprintf(reason, sizeof(reason), "the worker crashed: %s (signal %d)%s%s",
				 strsignal(sig), sig, tail[0] ? "; last message: " : "", tail);
		fail_submission(sl, sig == SIGXCPU ? FAIL_LIMIT : FAIL_CRASH, reason);
		return;
	}
	switch (sl->exit_status) {
	case 0:
		if (!sl->result) {
			fail_submission(sl, FAIL_MALFORMED, "the worker exited without a result");
			return;
		}
		char why[256];
		int rc = store_result(sl, why, sizeof(why));
		if (rc == 0) {
			s->finished++;
			log_info(s->lg, "submission finished", "id=%lld slot=%d seconds=%.1f",
				 (long long)sl->id, sl->index, (double)(tm_now_ns() - sl->started_ns) / 1e9);
			notify_status(s, sl->id, "finished", NULL);
		} else if (rc == 1) {
			notify_status(s, sl->id, "cancelled", NULL);
		} else {
			snprintf(reason, sizeof(reason), "the worker's result was rejected: %s", why);
			fail_submission(sl, rc == -2 ? FAIL_INTERNAL : FAIL_MALFORMED, reason);
		}
		return;
	case 2:
		snprintf(reason, sizeof(reason), "invalid config: %s", tail[0] ? tail : "(no message)");
		fail_submission(sl, FAIL_CONFIG, reason);
		return;
	case 3:
		snprintf(reason, sizeof(reason), "resource limit: %s", tail[0] ? tail : "(no message)");
		fail_submission(sl, FAIL_LIMIT, reason);
		return;
	default:
		snprintf(reason, sizeof(reason), "the worker failed (exit status %lld): %s",
			 (long long)sl->exit_status, tail[0] ? tail : "(no message)");
		fail_submission(sl, FAIL_INTERNAL, reason);
		return;
	}
}

static void finish_training(slot *sl)
{
	sched *s = sl->s;
	char path[PATH_MAX + 64], tail[600];
	reference_path(s, sl->event, path, sizeof(path));
	err_last_line(sl, tail, sizeof(tail));
	const char *name = ev_event_at(sl->event)->name;
	if (sl->killed == KILL_DRAIN) {
		s->ref[sl->event] = REF_QUEUED;
		return;
	}
	if (sl->killed == KILL_NONE && !sl->term_signal && sl->exit_status == 0 && file_exists(path)) {
		s->ref[sl->event] = REF_READY;
		log_info(s->lg, "reference trained", "event=%s seconds=%.1f", name,
			 (double)(tm_now_ns() - sl->started_ns) / 1e9);
	} else {
		s->ref[sl->event] = REF_FAILED;
		s->failures[sl->term_signal ? FAIL_CRASH : FAIL_INTERNAL]++;
		log_error(s->lg, "reference training failed", "event=%s status=%lld signal=%d "
			  "message=\"%s\"", name, (long long)sl->exit_status, sl->term_signal, tail);
	}
}

/* Every handle of the job is closed: record the outcome, free the slot, look for work. */
static void job_done(slot *sl)
{
	sched *s = sl->s;
	if (sl->kind == JOB_SUBMISSION)
		finish_submission(sl);
	else if (sl->kind == JOB_TRAIN)
		finish_training(sl);
	free(sl->line);
	free(sl->result);
	sl->line = sl->result = NULL;
	sl->line_len = sl->line_cap = 0;
	workdir_remove(sl);
	sl->busy = false;
	sl->kind = JOB_NONE;
	if (s->draining) {
		for (int i = 0; i < s->n_slots; i++)
			if (s->slots[i].busy)
				return;
		uv_timer_stop(&s->drain_timer);
		if (s->drain_done) {
			void (*done)(void *) = s->drain_done;
			s->drain_done = NULL;
			done(s->drain_arg);
		}
		return;
	}
	sched_kick(s);
}

static void slot_on_close(uv_handle_t *h)
{
	slot *sl = h->data;
	if (--sl->closing == 0)
		job_done(sl);
}

/* Called when one of exit / stdout EOF / stderr EOF happened; at zero close everything. */
static void job_step(slot *sl)
{
	if (--sl->pending > 0)
		return;
	uv_timer_stop(&sl->timer);
	sl->closing = 4;
	uv_close((uv_handle_t *)&sl->proc, slot_on_close);
	uv_close((uv_handle_t *)&sl->out, slot_on_close);
	uv_close((uv_handle_t *)&sl->err, slot_on_close);
	uv_close((uv_handle_t *)&sl->timer, slot_on_close);
}

/* Stop reading one of the job's streams (at EOF, or when it is killed): one step closer to
 * closing the job. */
static void stop_reading(slot *sl, uv_pipe_t *p)
{
	bool *flag = p == &sl->out ? &sl->reading_out : &sl->reading_err;
	if (!*flag)
		return;
	*flag = false;
	uv_read_stop((uv_stream_t *)p);
	job_step(sl);
}

/* Kill the job's process group and stop reading its output. */
static void job_kill(slot *sl, enum kill_reason why, const char *detail)
{
	if (sl->killed == KILL_NONE) {
		sl->killed = why;
		snprintf(sl->kill_detail, sizeof(sl->kill_detail), "%s", detail ? detail : "");
	}
	if (sl->proc.pid > 0)
		kill(-sl->proc.pid, SIGKILL);
	stop_reading(sl, &sl->out);
	stop_reading(sl, &sl->err);
}

// ---- reading the worker ----

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)suggested;
	slot *sl = h->data;
	*buf = uv_buf_init(sl->s->readbuf, sizeof(sl->s->readbuf));
}

/* A progress line: store a normalized copy and push it to subscribers. */
static bool take_progress(slot *sl, const cJSON *root)
{
	const cJSON *stage = cJSON_GetObjectItemCaseSensitive(root, "stage");
	const cJSON *pct = cJSON_GetObjectItemCaseSensitive(root, "pct");
	const cJSON *msg = cJSON_GetObjectItemCaseSensitive(root, "message");
	if (!cJSON_IsString(stage) || strlen(stage->valuestring) > 32 || !cJSON_IsNumber(pct) ||
	    !isfinite(pct->valuedouble) || pct->valuedouble < 0 || pct->valuedouble > 100 ||
	    (msg && (!cJSON_IsString(msg) || strlen(msg->valuestring) > 1024)))
		return false;
	sched *s = sl->s;
	sl->seq++;
	cJSON *o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "seq", sl->seq);
	cJSON_AddStringToObject(o, "stage", stage->valuestring);
	cJSON_AddNumberToObject(o, "pct", round(pct->valuedouble * 10) / 10);
	cJSON_AddStringToObject(o, "message", msg ? msg->valuestring : "");
	char *data = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (!data)
		return true;
	int rc = db_progress_add(s->db, sl->id, sl->seq, data);
	if (rc != DB_OK)
		log_warn(s->lg, "cannot store progress", "id=%lld db=%d", (long long)sl->id, rc);
	notify(s, sl->id, "progress", data);
	free(data);
	return true;
}

static void take_line(slot *sl, char *line, size_t len)
{
	if (sl->kind != JOB_SUBMISSION || len == 0)
		return;  /* training prints free-form progress; it is only counted */
	if (!utf8_valid(line, len)) {
		job_kill(sl, KILL_MALFORMED, "a line that is not UTF-8");
		return;
	}
	cJSON *root = cJSON_ParseWithLength(line, len);
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "type");
	bool ok = false;
	if (cJSON_IsObject(root) && cJSON_IsString(type)) {
		if (strcmp(type->valuestring, "progress") == 0 && len < 4096) {
			ok = take_progress(sl, root);
		} else if (strcmp(type->valuestring, "result") == 0 && !sl->result) {
			sl->result = tm_xmalloc(len + 1);
			memcpy(sl->result, line, len);
			sl->result[len] = '\0';
			ok = true;
		}
	}
	cJSON_Delete(root);
	if (!ok) {
		char detail[120];
		size_t n = len < 80 ? len : 80;
		size_t j = 0;
		detail[j++] = '\'';
		for (size_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)line[i];
			detail[j++] = c < 0x20 || c >= 0x7f ? '?' : (char)c;
		}
		snprintf(detail + j, sizeof(detail) - j, "%s'", len > n ? "..." : "");
		job_kill(sl, KILL_MALFORMED, detail);
	}
}

static bool count_output(slot *sl, size_t n)
{
	sl->out_total += n;
	if (sl->out_total > (size_t)sl->s->o->worker_max_output) {
		job_kill(sl, KILL_OUTPUT, NULL);
		return false;
	}
	return true;
}

static void on_stdout(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	slot *sl = st->data;
	if (nread < 0) {
		if (sl->line_len > 0 && sl->killed == KILL_NONE)
			take_line(sl, sl->line, sl->line_len);  /* a last line without newline */
		sl->line_len = 0;
		stop_reading(sl, &sl->out);
		return;
	}
	if (nread == 0 || !count_output(sl, (size_t)nread))
		return;
	const char *p = buf->base, *end = buf->base + nread;
	while (p < end && sl->killed == KILL_NONE) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = (size_t)((nl ? nl : end) - p);
		if (sl->line_len + n > SCHED_LINE_MAX) {
			job_kill(sl, KILL_MALFORMED, "a line longer than 4 MiB");
			return;
		}
		if (sl->line_len + n + 1 > sl->line_cap) {
			size_t cap = sl->line_cap ? sl->line_cap : 4096;
			while (cap < sl->line_len + n + 1)
				cap *= 2;
			sl->line = realloc(sl->line, cap);
			if (!sl->line)
				abort();
			sl->line_cap = cap;
		}
		memcpy(sl->line + sl->line_len, p, n);
		sl->line_len += n;
		if (!nl)
			break;
		take_line(sl, sl->line, sl->line_len);
		sl->line_len = 0;
		p = nl + 1;
	}
}

static void on_stderr(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	slot *sl = st->data;
	if (nread < 0) {
		stop_reading(sl, &sl->err);
		return;
	}
	if (nread == 0 || !count_output(sl, (size_t)nread))
		return;
	/* Keep the tail: the last message is what explains a failure. */
	size_t n = (size_t)nread;
	const char *p = buf->base;
	if (n >= SCHED_ERR_TAIL) {
		p += n - SCHED_ERR_TAIL;
		n = SCHED_ERR_TAIL;
		sl->err_len = 0;
	} else if (sl->err_len + n > SCHED_ERR_TAIL) {
		size_t drop = sl->err_len + n - SCHED_ERR_TAIL;
		memmove(sl->err_tail, sl->err_tail + drop, sl->err_len - drop);
		sl->err_len -= drop;
	}
	memcpy(sl->err_tail + sl->err_len, p, n);
	sl->err_len += n;
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig)
{
	slot *sl = p->data;
	sl->exit_status = status;
	sl->term_signal = sig;
	/* Anything the job left behind in its process group goes with it. */
	kill(-p->pid, SIGKILL);
	job_step(sl);
}

static void on_timeout(uv_timer_t *t)
{
	slot *sl = t->data;
	log_warn(sl->s->lg, "worker timeout", "slot=%d id=%lld seconds=%ld", sl->index,
		 (long long)sl->id, sl->s->o->worker_timeout_s);
	job_kill(sl, KILL_TIMEOUT, NULL);
}

// ---- starting a job ----

static int start_process(slot *sl, char **argv, char *err, size_t errlen)
{
	sched *s = sl->s;
	uv_pipe_init(s->loop, &sl->out, 0);
	uv_pipe_init(s->loop, &sl->err, 0);
	uv_timer_init(s->loop, &sl->timer);
	sl->out.data = sl->err.data = sl->timer.data = sl->proc.data = sl;

	static char env_path[] = "PATH=/usr/local/bin:/usr/bin:/bin";
	static char env_lang[] = "LC_ALL=C";
	char env_dataset[PATH_MAX + 32];
	char *env[4] = { env_path, env_lang, NULL, NULL };
	const char *ds = getenv("TINYMLPERF_DATASET_DIR");
	if (ds && strlen(ds) < PATH_MAX) {
		snprintf(env_dataset, sizeof(env_dataset), "TINYMLPERF_DATASET_DIR=%s", ds);
		env[2] = env_dataset;
	}

	uv_stdio_container_t stdio[6];
	stdio[0].flags = UV_IGNORE;
	stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
	stdio[1].data.stream = (uv_stream_t *)&sl->out;
	stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
	stdio[2].data.stream = (uv_stream_t *)&sl->err;
	stdio[3].flags = UV_INHERIT_FD;
	stdio[3].data.fd = s->data_fd;
	stdio[4].flags = UV_INHERIT_FD;
	stdio[4].data.fd = s->worker_fd;
	stdio[5].flags = UV_INHERIT_FD;
	stdio[5].data.fd = sl->workdir_fd;

	uv_process_options_t po = { 0 };
	po.exit_cb = on_exit_cb;
	/* Dropping privileges: reach the binary and the scratch directory through the inherited
	 * descriptors, so no directory above them needs to be searchable by the worker's user. */
	po.file = s->drop ? "/proc/self/fd/4" : s->worker;
	po.args = argv;
	po.env = env;
	po.cwd = s->drop ? "/proc/self/fd/5" : sl->workdir;
	po.stdio_count = 6;
	po.stdio = stdio;
	po.flags = UV_PROCESS_DETACHED;  /* setsid: its own process group, killed as one */
	if (s->drop) {
		po.flags |= UV_PROCESS_SETUID | UV_PROCESS_SETGID;
		po.uid = s->uid;
		po.gid = s->gid;
	}
	int rc = uv_spawn(s->loop, &sl->proc, &po);
	if (rc != 0) {
		snprintf(err, errlen, "cannot start the worker '%s': %s", s->worker, uv_strerror(rc));
		/* The process handle must be closed even when the spawn failed. */
		sl->pending = 1;
		sl->exit_status = 127;
		uv_close((uv_handle_t *)&sl->proc, NULL);
		sl->closing = 3;
		uv_close((uv_handle_t *)&sl->out, slot_on_close);
		uv_close((uv_handle_t *)&sl->err, slot_on_close);
		uv_close((uv_handle_t *)&sl->timer, slot_on_close);
		return -1;
	}
	sl->pending = 3;
	sl->reading_out = sl->reading_err = true;
	uv_read_start((uv_stream_t *)&sl->out, on_alloc, on_stdout);
	uv_read_start((uv_stream_t *)&sl->err, on_alloc, on_stderr);
	uv_timer_start(&sl->timer, on_timeout, (uint64_t)s->o->worker_timeout_s * 1000, 0);
	s->started++;
	return 0;
}

static void set_err_tail(slot *sl, const char *msg)
{
	size_t n = strlen(msg);
	if (n > sizeof(sl->err_tail))
		n = sizeof(sl->err_tail);
	memcpy(sl->err_tail, msg, n);
	sl->err_len = n;
}

static void slot_reset(slot *sl, enum job_kind kind)
{
	sl->busy = true;
	sl->kind = kind;
	sl->killed = KILL_NONE;
	sl->kill_detail[0] = '\0';
	sl->exit_status = 0;
	sl->term_signal = 0;
	sl->line_len = 0;
	sl->out_total = 0;
	sl->err_len = 0;
	sl->seq = 0;
	sl->result = NULL;
	sl->started_ns = tm_now_ns();
	memset(&sl->proc, 0, sizeof(sl->proc));
}

static int make_workdir(slot *sl, const char *name, char *err, size_t errlen)
{
	sched *s = sl->s;
	snprintf(sl->workdir, sizeof(sl->workdir), "%s/work/%s", s->data_dir, name);
	if (mkdir_owned(s, sl->workdir) != 0) {
		snprintf(err, errlen, "cannot create the scratch directory '%s': %s", sl->workdir,
			 strerror(errno));
		sl->workdir[0] = '\0';
		return -1;
	}
	sl->workdir_fd = open(sl->workdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sl->workdir_fd < 0) {
		snprintf(err, errlen, "cannot open '%s': %s", sl->workdir, strerror(errno));
		return -1;
	}
	return 0;
}

static void start_submission(slot *sl, db_job *job)
{
	sched *s = sl->s;
	slot_reset(sl, JOB_SUBMISSION);
	sl->id = job->id;
	sl->event = 0;
	for (int i = 0; i < EV_COUNT; i++)
		if (strcmp(ev_event_at(i)->name, job->event) == 0)
			sl->event = i;
	snprintf(sl->division, sizeof(sl->division), "%s", job->division);

	char err[PATH_MAX + 256], name[32];
	snprintf(name, sizeof(name), "%lld", (long long)job->id);
	int ok = make_workdir(sl, name, err, sizeof(err)) == 0;
	if (ok) {
		char path[PATH_MAX + 96];
		snprintf(path, sizeof(path), "%s/config.json", sl->workdir);
		FILE *f = fopen(path, "w");
		ok = f && fputs(job->config, f) >= 0;
		if (f && fclose(f) != 0)
			ok = 0;
		if (!ok)
			snprintf(err, sizeof(err), "cannot write the config to '%s': %s", path,
				 strerror(errno));
	}
	char sub[32], mem[32], cpu[32], minc[32], mind[32], maxd[32];
	snprintf(sub, sizeof(sub), "%lld", (long long)job->id);
	snprintf(mem, sizeof(mem), "%ld", s->o->worker_memory_mb);
	snprintf(cpu, sizeof(cpu), "%ld", s->o->worker_cpu_s);
	char *argv[32];
	int n = 0;
	argv[n++] = "tinymlperf-run";
	argv[n++] = "run";
	argv[n++] = "--json";
	argv[n++] = "--data-dir";
	argv[n++] = "/proc/self/fd/3";
	argv[n++] = "--submission";
	argv[n++] = sub;
	argv[n++] = "--cpus";
	argv[n++] = sl->cpus;
	argv[n++] = "--limit-memory";
	argv[n++] = mem;
	argv[n++] = "--limit-cpu";
	argv[n++] = cpu;
	if (s->o->worker_min_count > 0) {
		snprintf(minc, sizeof(minc), "%ld", s->o->worker_min_count);
		argv[n++] = "--min-count";
		argv[n++] = minc;
	}
	if (s->o->worker_min_duration >= 0) {
		snprintf(mind, sizeof(mind), "%g", s->o->worker_min_duration);
		argv[n++] = "--min-duration";
		argv[n++] = mind;
	}
	if (s->o->worker_max_duration >= 0) {
		snprintf(maxd, sizeof(maxd), "%g", s->o->worker_max_duration);
		argv[n++] = "--max-duration";
		argv[n++] = maxd;
	}
	argv[n++] = "config.json";
	argv[n] = NULL;
	log_info(s->lg, "submission started", "id=%lld event=%s slot=%d cpus=%s attempt=%d",
		 (long long)job->id, job->event, sl->index, sl->cpus, job->attempts);
	notify_status(s, job->id, "running", NULL);
	if (!ok) {
		fail_submission(sl, FAIL_INTERNAL, err);
		workdir_remove(sl);
		sl->busy = false;
		sl->kind = JOB_NONE;
		return;
	}
	/* A spawn failure closes the handles; job_done reports it like an internal error. */
	if (start_process(sl, argv, err, sizeof(err)) != 0) {
		set_err_tail(sl, err);
	}
}

static void start_training(slot *sl, int ev)
{
	sched *s = sl->s;
	slot_reset(sl, JOB_TRAIN);
	sl->id = 0;
	sl->event = ev;
	s->ref[ev] = REF_TRAINING;
	const char *name = ev_event_at(ev)->name;
	char err[PATH_MAX + 256], dir[64], threads[16];
	snprintf(dir, sizeof(dir), "train-%s", name);
	/* The slot's CPUs: training uses them all. */
	int ncpu = 1;
	const char *dash = strchr(sl->cpus, '-');
	if (dash)
		ncpu = (int)(strtol(dash + 1, NULL, 10) - strtol(sl->cpus, NULL, 10) + 1);
	snprintf(threads, sizeof(threads), "%d", ncpu < 1 ? 1 : ncpu);
	char *argv[] = { "tinymlperf-run", "train", (char *)name, "--data-dir", "/proc/self/fd/3",
			 "--threads", threads, NULL };
	log_info(s->lg, "reference training started", "event=%s slot=%d cpus=%s", name, sl->index,
		 sl->cpus);
	if (make_workdir(sl, dir, err, sizeof(err)) != 0) {
		log_error(s->lg, "cannot start reference training", "event=%s error=\"%s\"", name, err);
		s->ref[ev] = REF_FAILED;
		workdir_remove(sl);
		sl->busy = false;
		sl->kind = JOB_NONE;
		return;
	}
	if (start_process(sl, argv, err, sizeof(err)) != 0) {
		log_error(s->lg, "cannot start reference training", "event=%s error=\"%s\"", name, err);
		set_err_tail(sl, err);
	}
}

static void sched_dispatch(sched *s)
{
	if (s->draining || s->closing || s->o->hold_queue)
		return;
	for (int i = 0; i < s->n_slots; i++) {
		slot *sl = &s->slots[i];
		if (sl->busy)
			continue;
		int train = -1;
		for (int e = 0; e < EV_COUNT && train < 0; e++)
			if (s->ref[e] == REF_QUEUED)
				train = e;
		if (train >= 0) {
			start_training(sl, train);
			continue;
		}
		bool ready[EV_COUNT];
		for (int e = 0; e < EV_COUNT; e++)
			ready[e] = s->ref[e] != REF_QUEUED && s->ref[e] != REF_TRAINING;
		db_job job;
		int rc = db_job_claim(s->db, s->last_team, ready, i, &job);
		if (rc == DB_NOTFOUND)
			return;
		if (rc != DB_OK) {
			log_warn(s->lg, "cannot claim a job", "db=%d error=\"%s\"", rc, db_errmsg(s->db));
			uv_timer_start(&s->kick, on_kick, 200, 0);  /* busy database: try again soon */
			return;
		}
		s->last_team = job.team_id;
		start_submission(sl, &job);
		db_job_release(&job);
	}
}

void sched_cancel(sched *s, int64_t id)
{
	if (!s)
		return;
	for (int i = 0; i < s->n_slots; i++) {
		slot *sl = &s->slots[i];
		if (sl->busy && sl->kind == JOB_SUBMISSION && sl->id == id && sl->pending > 0) {
			job_kill(sl, KILL_CANCEL, NULL);
			return;
		}
	}
	notify_status(s, id, "cancelled", NULL);
}

// ---- drain and shutdown ----

static void on_drain_timeout(uv_timer_t *t)
{
	sched *s = t->data;
	for (int i = 0; i < s->n_slots; i++) {
		slot *sl = &s->slots[i];
		if (sl->busy && sl->pending > 0) {
			log_warn(s->lg, "grace period over: requeueing", "slot=%d id=%lld", i,
				 (long long)sl->id);
			job_kill(sl, KILL_DRAIN, NULL);
		}
	}
}

void sched_drain(sched *s, double grace_s, void (*done)(void *), void *arg)
{
	s->draining = true;
	uv_timer_stop(&s->kick);
	s->drain_done = done;
	s->drain_arg = arg;
	int busy = 0;
	for (int i = 0; i < s->n_slots; i++) {
		slot *sl = &s->slots[i];
		/* Reference training restarts from scratch at the next start: stop it now rather
		 * than hold the shutdown for it. */
		if (sl->busy && sl->kind == JOB_TRAIN && sl->pending > 0)
			job_kill(sl, KILL_DRAIN, NULL);
		busy += sl->busy;
	}
	if (busy == 0) {
		s->drain_done = NULL;
		done(arg);
		return;
	}
	log_info(s->lg, "draining", "running=%d grace_s=%.0f", busy, grace_s);
	uv_timer_start(&s->drain_timer, on_drain_timeout, (uint64_t)(grace_s * 1000), 0);
}

static void sched_on_close(uv_handle_t *h)
{
	sched *s = h->data;
	if (--s->closing > 0)
		return;
	while (s->subs)
		sched_unsubscribe(s, s->subs);
	if (s->data_fd >= 0)
		close(s->data_fd);
	if (s->worker_fd >= 0)
		close(s->worker_fd);
	free(s->slots);
	free(s);
}

void sched_free(sched *s)
{
	if (!s)
		return;
	s->closing = 2;
	uv_close((uv_handle_t *)&s->kick, sched_on_close);
	uv_close((uv_handle_t *)&s->drain_timer, sched_on_close);
}

// ---- start-up ----

static void metrics_queue(sched *s, int64_t *queued)
{
	int64_t counts[5];
	*queued = db_status_counts(s->db, counts) == DB_OK ? counts[0] : -1;
}

void sched_get_metrics(sched *s, sched_metrics *m)
{
	memset(m, 0, sizeof(*m));
	m->slots = s->n_slots;
	for (int i = 0; i < s->n_slots; i++)
		m->busy += s->slots[i].busy;
	metrics_queue(s, &m->queued);
	m->started = s->started;
	m->finished = s->finished;
	m->failed = s->failed;
	for (int i = 0; i < FAIL_N && i < 8; i++)
		m->failures[i] = s->failures[i];
	for (int e = 0; e < EV_COUNT; e++)
		m->references_ready += s->ref[e] == REF_READY;
}

uint64_t sched_results_version(const sched *s)
{
	return s->finished;
}

const char *sched_reference_state(sched *s, int i)
{
	return i >= 0 && i < EV_COUNT ? ref_names[s->ref[i]] : NULL;
}

static bool listed(const char *list, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = list; *p;) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		if (len == n && strncmp(p, name, n) == 0)
			return true;
		if (!comma)
			break;
		p = comma + 1;
	}
	return false;
}

/* The worker binary: the flag, or tinymlperf-run in the daemon's own directory. */
static int find_worker(sched *s, char *err, size_t errlen)
{
	if (s->o->worker_path[0]) {
		snprintf(s->worker, sizeof(s->worker), "%s", s->o->worker_path);
	} else {
		char self[PATH_MAX - 32];
		ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
		if (n <= 0) {
			snprintf(err, errlen, "cannot find our own binary: %s", strerror(errno));
			return -1;
		}
		self[n] = '\0';
		char *slash = strrchr(self, '/');
		if (slash)
			slash[1] = '\0';
		snprintf(s->worker, sizeof(s->worker), "%stinymlperf-run", self);
	}
	if (access(s->worker, X_OK) != 0) {
		snprintf(err, errlen, "the worker '%s' is not executable: %s (see --worker)", s->worker,
			 strerror(errno));
		return -1;
	}
	s->worker_fd = open(s->worker, O_RDONLY | O_CLOEXEC);
	if (s->worker_fd < 0) {
		snprintf(err, errlen, "cannot open the worker '%s': %s", s->worker, strerror(errno));
		return -1;
	}
	return 0;
}

/* CPU sets: the daemon keeps CPU 0 when there are more CPUs than slots; each slot gets one
 * CPU, and a single slot gets every CPU but the daemon's. */
static void assign_cpus(sched *s)
{
	cpu_set_t set;
	int cpus[CPU_SETSIZE], ncpu = 0;
	if (sched_getaffinity(0, sizeof(set), &set) == 0) {
		for (int c = 0; c < CPU_SETSIZE; c++)
			if (CPU_ISSET(c, &set))
				cpus[ncpu++] = c;
	}
	if (ncpu == 0)
		cpus[ncpu++] = 0;
	int first = s->n_slots < ncpu ? 1 : 0;
	for (int i = 0; i < s->n_slots; i++) {
		slot *sl = &s->slots[i];
		if (s->n_slots == 1 && ncpu - first > 1)
			snprintf(sl->cpus, sizeof(sl->cpus), "%d-%d", cpus[first], cpus[ncpu - 1]);
		else
			snprintf(sl->cpus, sizeof(sl->cpus), "%d", cpus[first + i % (ncpu - first)]);
	}
	if (first == 1) {
		CPU_ZERO(&set);
		CPU_SET(cpus[0], &set);
		sched_setaffinity(0, sizeof(set), &set);
	}
}

int sched_start(sched **out, uv_loop_t *loop, db *store, const srv_opts *o, const srv_log *lg,
		char *err, size_t errlen)
{
	*out = NULL;
	sched *s = tm_xcalloc(1, sizeof(*s));
	s->loop = loop;
	s->db = store;
	s->o = o;
	s->lg = lg;
	s->data_fd = s->worker_fd = -1;
	if (!realpath(o->data_dir, s->data_dir)) {
		snprintf(err, errlen, "cannot resolve the data directory '%s': %s", o->data_dir,
			 strerror(errno));
		free(s);
		return -1;
	}
	if (geteuid() == 0 && o->worker_user[0]) {
		struct passwd *pw = getpwnam(o->worker_user);
		if (!pw) {
			snprintf(err, errlen, "worker user '%s' does not exist (see --worker-user)",
				 o->worker_user);
			free(s);
			return -1;
		}
		s->drop = pw->pw_uid != 0;
		s->uid = pw->pw_uid;
		s->gid = pw->pw_gid;
	}
	char path[PATH_MAX + 64];
	if (s->drop) {
		/* The worker's user must be able to pass through the data directory (not list it),
		 * and must not read the database. */
		struct stat st;
		if (stat(s->data_dir, &st) == 0 && !(st.st_mode & S_IXOTH))
			chmod(s->data_dir, (st.st_mode & 07777) | S_IXOTH);
		static const char *const suffix[] = { "", "-wal", "-shm" };
		for (int i = 0; i < 3; i++) {
			snprintf(path, sizeof(path), "%s%s", o->db_path, suffix[i]);
			chmod(path, 0600);
		}
	}
	snprintf(path, sizeof(path), "%s/models", s->data_dir);
	int ok = mkdir_owned(s, path) == 0;
	snprintf(path, sizeof(path), "%s/work", s->data_dir);
	ok = ok && mkdir_owned(s, path) == 0;
	if (!ok) {
		snprintf(err, errlen, "cannot prepare '%s': %s", path, strerror(errno));
		free(s);
		return -1;
	}
	s->data_fd = open(s->data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->data_fd < 0 || find_worker(s, err, errlen) != 0) {
		if (s->data_fd < 0)
			snprintf(err, errlen, "cannot open '%s': %s", s->data_dir, strerror(errno));
		if (s->data_fd >= 0)
			close(s->data_fd);
		free(s);
		return -1;
	}

	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	s->n_slots = o->workers > 0 ? (int)o->workers : (ncpu > 1 ? (int)ncpu - 1 : 1);
	s->slots = tm_xcalloc((size_t)s->n_slots, sizeof(*s->slots));
	for (int i = 0; i < s->n_slots; i++) {
		s->slots[i].s = s;
		s->slots[i].index = i;
		s->slots[i].workdir_fd = -1;
	}
	assign_cpus(s);
	uv_timer_init(loop, &s->kick);
	uv_timer_init(loop, &s->drain_timer);
	s->kick.data = s->drain_timer.data = s;

	int requeued = 0, failed = 0;
	int rc = db_requeue_running(store, (int)o->max_attempts, &requeued, &failed);
	if (rc != DB_OK)
		log_error(lg, "cannot requeue interrupted submissions", "db=%d", rc);
	else if (requeued || failed)
		log_info(lg, "interrupted submissions", "requeued=%d failed=%d", requeued, failed);

	bool train_all = strcmp(o->train_references, "missing") == 0;
	for (int e = 0; e < EV_COUNT; e++) {
		reference_path(s, e, path, sizeof(path));
		if (file_exists(path))
			s->ref[e] = REF_READY;
		else if (train_all || listed(o->train_references, ev_event_at(e)->name))
			s->ref[e] = REF_QUEUED;
		else
			s->ref[e] = REF_MISSING;
	}
	log_info(lg, "workers", "slots=%d worker=\"%s\" user=%s cpus=%s references=%s,%s,%s",
		 s->n_slots, s->worker, s->drop ? o->worker_user : "(same)", s->slots[0].cpus,
		 ref_names[s->ref[0]], ref_names[s->ref[1]], ref_names[s->ref[2]]);
	*out = s;
	sched_kick(s);
	return 0;
}
