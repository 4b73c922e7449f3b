/* api.c: the route table of tinymlperfd and its handlers.  Each route is one row; handlers get
 * the application state (srv_app) and fill an http_reply. */
#include "server.h"
#include "engine.h"
#include "events.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

// ---- authentication ----

enum api_principal { API_ANON, API_TEAM, API_ADMIN };

typedef struct api_auth {
	enum api_principal who;
	db_team team;  /* when who == API_TEAM */
} api_auth;

/* Resolve a token (from the header, or a form field named field) to the admin or a team.
 * Returns 0, or fills rep with 401/503 and returns -1. */
static int api_auth_token(srv_app *app, const char *token, const char *field, api_auth *auth,
			  http_reply *rep)
{
	uint8_t hash[32];
	sha256(token, strlen(token), hash);
	if (app->has_admin && ct_equal(hash, app->admin_hash, 32)) {
		auth->who = API_ADMIN;
		return 0;
	}
	int rc = db_team_by_token(app->db, hash, &auth->team);
	if (rc == DB_OK) {
		auth->who = auth->team.is_admin ? API_ADMIN : API_TEAM;
		return 0;
	}
	if (rc == DB_NOTFOUND)
		http_reply_error(rep, 401, "unauthorized", field, "the token is not valid");
	else
		http_reply_error(rep, 503, "unavailable", NULL, "the database is busy, try again");
	return -1;
}

/* Resolve "Authorization: Bearer TOKEN", or form_token when the header is absent (a browser
 * form carries the token as a field).  Neither is anonymous (routes decide); a present but
 * unknown token is 401. */
static int api_authenticate(srv_app *app, const http_request *req, const char *form_token,
			    api_auth *auth, http_reply *rep)
{
	memset(auth, 0, sizeof(*auth));
	const char *h = http_request_header(req, "Authorization");
	if (!h)
		return form_token ? api_auth_token(app, form_token, "token", auth, rep) : 0;
	if (strncmp(h, "Bearer ", 7) != 0 || h[7] == '\0' || strlen(h + 7) > 200) {
		http_reply_error(rep, 401, "unauthorized", "Authorization",
				 "'Authorization' must be 'Bearer TOKEN' with a token of at most 200 bytes");
		return -1;
	}
	return api_auth_token(app, h + 7, "Authorization", auth, rep);
}

/* Map a db status to a reply; returns true when rc was an error. */
static bool api_db_failed(srv_app *app, int rc, http_reply *rep)
{
	switch (rc) {
	case DB_OK:
		return false;
	case DB_BUSY:
	case DB_FULL:
		http_reply_error(rep, 503, "unavailable", NULL,
				 "the database is %s; nothing was written, try again",
				 rc == DB_BUSY ? "busy" : "full");
		return true;
	default:
		log_error(app->log, "database error", "error=\"%s\"", db_errmsg(app->db));
		http_reply_error(rep, 500, "internal", NULL, "internal database error");
		return true;
	}
}

/* Parse a JSON object body; fills rep with 400 on failure. */
static cJSON *api_parse_object(const http_request *req, http_reply *rep)
{
	if (!utf8_valid(req->body, req->body_len)) {
		http_reply_error(rep, 400, "invalid_utf8", NULL, "the request body is not valid UTF-8");
		return NULL;
	}
	if (strlen(req->body) != req->body_len) {
		http_reply_error(rep, 400, "invalid_json", NULL, "the request body contains a NUL byte");
		return NULL;
	}
	const char *end = NULL;
	cJSON *j = cJSON_ParseWithOpts(req->body, &end, true);
	if (!j) {
		size_t off = end ? (size_t)(end - req->body) : 0;
		http_reply_error(rep, 400, "invalid_json", NULL,
				 "the request body is not valid JSON (error near byte %zu)", off);
		return NULL;
	}
	if (!cJSON_IsObject(j)) {
		cJSON_Delete(j);
		http_reply_error(rep, 400, "invalid_json", NULL, "the request body must be a JSON object");
		return NULL;
	}
	return j;
}

/* A display name: 1..64 bytes of UTF-8 without control characters. */
static bool api_name_ok(const cJSON *v, const char *field, http_reply *rep)
{
	if (!cJSON_IsString(v)) {
		http_reply_error(rep, 400, "invalid_field", field, "'%s' must be a string", field);
		return false;
	}
	size_t n = strlen(v->valuestring);
	if (n < 1 || n > 64) {
		http_reply_error(rep, 400, "invalid_field", field,
				 "'%s' is %zu bytes long, must be 1 to 64", field, n);
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v->valuestring[i];
		if (c < 0x20 || c == 0x7f) {
			http_reply_error(rep, 400, "invalid_field", field,
					 "'%s' contains a control character at byte %zu", field, i);
			return false;
		}
	}
	return true;
}

// ---- teams ----

static void api_team_create(void *app_, const http_request *req, http_reply *rep)
{
	srv_app *app = app_;
	api_auth auth;
	if (api_authenticate(app, req, NULL, &auth, rep) != 0)
		return;
	if (auth.who != API_ADMIN && !app->opts->open_registration) {
		if (auth.who == API_ANON)
			http_reply_error(rep, 401, "unauthorized", "Authorization",
					 "creating a team needs the admin token");
		else
			http_reply_error(rep, 403, "forbidden", "Authorization",
					 "creating a team needs the admin token");
		return;
	}
	cJSON *body = api_parse_object(req, rep);
	if (!body)
		return;
	const cJSON *it;
	cJSON_ArrayForEach(it, body) {
		if (strcmp(it->string, "name") != 0) {
			http_reply_error(rep, 400, "unknown_field", it->string,
					 "'%s' is not a field of a team (allowed: name)", it->string);
			cJSON_Delete(body);
			return;
		}
	}
	const cJSON *name = cJSON_GetObjectItemCaseSensitive(body, "name");
	if (!name) {
		http_reply_error(rep, 400, "missing_field", "name", "'name' is required");
		cJSON_Delete(body);
		return;
	}
	if (!api_name_ok(name, "name", rep)) {
		cJSON_Delete(body);
		return;
	}
	uint8_t raw[32], hash[32];
	if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
		http_reply_error(rep, 503, "unavailable", NULL, "no randomness available, try again");
		cJSON_Delete(body);
		return;
	}
	char token[5 + 65];
	memcpy(token, "tmlp_", 5);
	hex_encode(raw, sizeof(raw), token + 5);
	sha256(token, strlen(token), hash);
	int64_t id = 0;
	int rc = db_team_create(app->db, name->valuestring, hash, &id);
	if (rc == DB_CONFLICT) {
		http_reply_error(rep, 409, "conflict", "name", "a team named '%s' already exists",
				 name->valuestring);
	} else if (!api_db_failed(app, rc, rep)) {
		cJSON *out = cJSON_CreateObject();
		cJSON_AddNumberToObject(out, "id", (double)id);
		cJSON_AddStringToObject(out, "name", name->valuestring);
		cJSON_AddStringToObject(out, "token", token);
		cJSON_AddStringToObject(out, "note", "the token is shown once; store it now");
		http_reply_json(rep, 201, cJSON_PrintUnformatted(out));
		cJSON_Delete(out);
		log_info(app->log, "team created", "id=%lld", (long long)id);
	}
	memset(token, 0, sizeof(token));
	cJSON_Delete(body);
}

static void api_healthz(void *app_, const http_request *req, http_reply *rep)
{
	(void)req;
	srv_app *app = app_;
	cJSON *root = cJSON_CreateObject();
	cJSON_AddStringToObject(root, "status", "ok");
	cJSON_AddStringToObject(root, "version", TM_ENGINE_VERSION);
	cJSON_AddStringToObject(root, "git_revision", tm_git_revision());
	cJSON_AddNumberToObject(root, "schema_version", db_schema_version(app->db));
	cJSON_AddNumberToObject(root, "uptime_s", (double)(tm_now_ns() - app->started_ns) / 1e9);
	if (app->sched) {
		sched_metrics m;
		sched_get_metrics(app->sched, &m);
		cJSON *w = cJSON_AddObjectToObject(root, "workers");
		cJSON_AddNumberToObject(w, "slots", m.slots);
		cJSON_AddNumberToObject(w, "busy", m.busy);
		cJSON_AddNumberToObject(root, "queued", (double)m.queued);
		cJSON *refs = cJSON_AddObjectToObject(root, "references");
		for (int i = 0; i < EV_COUNT; i++)
			cJSON_AddStringToObject(refs, ev_event_at(i)->name,
						sched_reference_state(app->sched, i));
	}
	http_reply_json(rep, 200, cJSON_PrintUnformatted(root));
	cJSON_Delete(root);
}

// ---- events and validation ----

static void api_events(void *app_, const http_request *req, http_reply *rep)
{
	(void)app_;
	(void)req;
	static const char *const scenarios[] = { "single_stream", "offline", "generation" };
	cJSON *arr = cJSON_CreateArray();
	for (int i = 0; i < EV_COUNT; i++) {
		const ev_event *e = ev_event_at(i);
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "id", e->name);
		cJSON_AddStringToObject(o, "title", e->title);
		cJSON_AddStringToObject(o, "dataset", e->dataset);
		cJSON_AddStringToObject(o, "reference", e->reference);
		cJSON_AddStringToObject(o, "scenario", scenarios[e->scenario]);
		cJSON_AddStringToObject(o, "scenario_text", e->scenario_text);
		cJSON_AddStringToObject(o, "primary_metric", e->primary_metric);
		cJSON_AddStringToObject(o, "quality_metric", e->quality_metric);
		cJSON *gate = cJSON_AddObjectToObject(o, "quality_gate");
		cJSON_AddNumberToObject(gate, "closed", e->closed_gate);
		cJSON_AddNumberToObject(gate, "open", e->open_gate);
		cJSON_AddItemToArray(arr, o);
	}
	cJSON *root = cJSON_CreateObject();
	cJSON_AddItemToObject(root, "events", arr);
	http_reply_json(rep, 200, cJSON_PrintUnformatted(root));
	cJSON_Delete(root);
}

/* The config errors as {"valid":false,"errors":[{field,message}...]}. */
static cJSON *api_config_errors_json(const cfg_errors *errs)
{
	cJSON *root = cJSON_CreateObject();
	cJSON_AddBoolToObject(root, "valid", false);
	cJSON_AddBoolToObject(root, "over_limit", errs->over_limit);
	cJSON *arr = cJSON_AddArrayToObject(root, "errors");
	for (int i = 0; i < errs->n; i++) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "field", errs->e[i].field);
		cJSON_AddStringToObject(o, "message", errs->e[i].msg);
		cJSON_AddItemToArray(arr, o);
	}
	if (errs->dropped)
		cJSON_AddNumberToObject(root, "more_errors", errs->dropped);
	return root;
}

static void api_validate(void *app_, const http_request *req, http_reply *rep)
{
	(void)app_;
	if (!utf8_valid(req->body, req->body_len)) {
		http_reply_error(rep, 400, "invalid_utf8", NULL, "the request body is not valid UTF-8");
		return;
	}
	cfg_config c;
	cfg_errors errs;
	int rc = cfg_parse(req->body, req->body_len, NULL, &c, &errs);
	cJSON *root;
	if (rc == 0) {
		root = cJSON_CreateObject();
		cJSON_AddBoolToObject(root, "valid", true);
		cJSON_AddStringToObject(root, "event", c.event->name);
		cJSON_AddStringToObject(root, "division", c.open ? "open" : "closed");
		cJSON *est = cJSON_AddObjectToObject(root, "estimates");
		cJSON_AddNumberToObject(est, "params", (double)c.params);
		cJSON_AddNumberToObject(est, "flops_per_inference", (double)c.flops);
		cJSON_AddNumberToObject(est, "memory_bytes", (double)c.memory_bytes);
	} else {
		root = api_config_errors_json(&errs);
	}
	/* 200 either way: validating is the request, the verdict is the answer. */
	http_reply_json(rep, 200, cJSON_PrintUnformatted(root));
	cJSON_Delete(root);
}

// ---- submissions ----

/* Strict positive integer id from a path segment. */
static bool api_parse_id(const char *s, int64_t *id)
{
	if (!*s || strlen(s) > 18)
		return false;
	int64_t v = 0;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return false;
		v = v * 10 + (*p - '0');
	}
	*id = v;
	return v > 0;
}

/* A form post (multipart, or urlencoded with a config= field).  `curl -d @config.json` sends
 * a JSON document labelled as urlencoded: a body starting with '{' is taken as JSON. */
static bool api_is_form(const http_request *req)
{
	const char *ct = http_request_header(req, "Content-Type");
	if (!ct)
		return false;
	if (strncmp(ct, "multipart/form-data", 19) == 0)
		return true;
	if (strncmp(ct, "application/x-www-form-urlencoded", 33) != 0)
		return false;
	const char *p = req->body;
	while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
		p++;
	return *p != '{';
}

static void api_submission_create(void *app_, const http_request *req, http_reply *rep)
{
	srv_app *app = app_;
	char *form[2] = { NULL, NULL }; /* config, token */
	const char *config = req->body;
	size_t config_len = req->body_len;
	if (api_is_form(req)) {
		static const char *const names[] = { "config", "token" };
		char err[160];
		if (http_form_fields(req, names, form, 2, CFG_MAX_BYTES, err, sizeof(err)) != 0) {
			http_reply_error(rep, 400, "invalid_form", NULL, "%s", err);
			return;
		}
		if (!form[0]) {
			http_reply_error(rep, 400, "missing_field", "config",
					 "the form needs a 'config' field (text or file)");
			goto out;
		}
		config = form[0];
		config_len = strlen(form[0]);
	}
	api_auth auth;
	if (api_authenticate(app, req, form[1], &auth, rep) != 0)
		goto out;
	if (auth.who == API_ANON) {
		http_reply_error(rep, 401, "unauthorized", "Authorization",
				 "submitting needs a team token: 'Authorization: Bearer TOKEN'");
		goto out;
	}
	if (auth.who != API_TEAM) {
		http_reply_error(rep, 403, "forbidden", "Authorization",
				 "submissions belong to a team: use a team's token, not the admin token");
		goto out;
	}
	if (!utf8_valid(config, config_len)) {
		http_reply_error(rep, 400, "invalid_utf8", "config", "the config is not valid UTF-8");
		goto out;
	}
	cfg_config c;
	cfg_errors errs;
	int rc = cfg_parse(config, config_len, NULL, &c, &errs);
	if (rc != 0) {
		cJSON *root = cJSON_CreateObject();
		cJSON *e = cJSON_AddObjectToObject(root, "error");
		cJSON_AddStringToObject(e, "code", errs.over_limit ? "resource_limit" : "invalid_config");
		cJSON_AddStringToObject(e, "message", errs.e[0].msg);
		cJSON_AddStringToObject(e, "field", errs.e[0].field);
		cJSON *details = api_config_errors_json(&errs);
		cJSON_AddItemToObject(root, "errors",
				      cJSON_DetachItemFromObject(details, "errors"));
		cJSON_Delete(details);
		http_reply_json(rep, 400, cJSON_PrintUnformatted(root));
		cJSON_Delete(root);
		goto out;
	}
	uint8_t digest[32];
	char sha_hex[65];
	sha256(config, config_len, digest);
	hex_encode(digest, 32, sha_hex);
	char *config_copy = tm_xmalloc(config_len + 1);
	memcpy(config_copy, config, config_len);
	config_copy[config_len] = '\0';
	db_quota q = { (int)app->opts->quota_queued, (int)app->opts->quota_per_day };
	db_quota_hit hit = { 0 };
	int64_t id = 0;
	rc = db_submission_create(app->db, auth.team.id, c.event->name, c.open ? "open" : "closed",
				  c.name, config_copy, sha_hex, &q, &id, &hit);
	free(config_copy);
	if (rc == DB_QUOTA) {
		http_reply_error(rep, 429, "quota", NULL,
				 "team '%s' has reached its %s quota of %d submissions", auth.team.name,
				 hit.which, hit.limit);
		rep->retry_after_s = hit.retry_after_s;
		goto out;
	}
	if (api_db_failed(app, rc, rep))
		goto out;
	cJSON *root = cJSON_CreateObject();
	cJSON_AddNumberToObject(root, "id", (double)id);
	cJSON_AddStringToObject(root, "status", "queued");
	cJSON_AddStringToObject(root, "event", c.event->name);
	cJSON_AddStringToObject(root, "division", c.open ? "open" : "closed");
	cJSON *links = cJSON_AddObjectToObject(root, "links");
	char buf[96];
	snprintf(buf, sizeof(buf), "/api/v1/submissions/%lld", (long long)id);
	cJSON_AddStringToObject(links, "self", buf);
	snprintf(rep->location, sizeof(rep->location), "%s", buf);
	snprintf(buf, sizeof(buf), "/api/v1/submissions/%lld/events", (long long)id);
	cJSON_AddStringToObject(links, "events", buf);
	snprintf(buf, sizeof(buf), "/submissions/%lld", (long long)id);
	cJSON_AddStringToObject(links, "page", buf);
	snprintf(buf, sizeof(buf), "/api/v1/leaderboard/%s", c.event->name);
	cJSON_AddStringToObject(links, "leaderboard", buf);
	http_reply_json(rep, 202, cJSON_PrintUnformatted(root));
	cJSON_Delete(root);
	log_info(app->log, "submission accepted", "id=%lld team=%lld event=%s", (long long)id,
		 (long long)auth.team.id, c.event->name);
	sched_kick(app->sched);
out:
	free(form[0]);
	free(form[1]);
}

/* The submission id of the route ({} of /submissions/{}): false with a 404 when malformed. */
static bool api_submission_id(const http_request *req, http_reply *rep, int64_t *id)
{
	if (api_parse_id(req->params[0], id))
		return true;
	http_reply_error(rep, 404, "not_found", "id", "no submission '%.40s'", req->params[0]);
	return false;
}

/* The route's submission as stored: false with the reply filled (404, 503, 500) otherwise. */
static bool api_submission_load(srv_app *app, const http_request *req, http_reply *rep,
				db_submission *s)
{
	int64_t id;
	if (!api_submission_id(req, rep, &id))
		return false;
	int rc = db_submission_get(app->db, id, s);
	if (rc == DB_NOTFOUND) {
		http_reply_error(rep, 404, "not_found", "id", "no submission %lld", (long long)id);
		return false;
	}
	return !api_db_failed(app, rc, rep);
}

static void api_submission_get(void *app_, const http_request *req, http_reply *rep)
{
	srv_app *app = app_;
	db_submission s;
	if (!api_submission_load(app, req, rep, &s))
		return;
	api_auth auth;
	if (api_authenticate(app, req, NULL, &auth, rep) != 0) {
		db_submission_release(&s);
		return;
	}
	bool visible = app->opts->publish_configs || auth.who == API_ADMIN ||
		       (auth.who == API_TEAM && auth.team.id == s.team_id);
	cJSON *root = cJSON_CreateObject();
	cJSON_AddNumberToObject(root, "id", (double)s.id);
	cJSON_AddStringToObject(root, "team", s.team_name);
	cJSON_AddStringToObject(root, "event", s.event);
	cJSON_AddStringToObject(root, "division", s.division);
	cJSON_AddStringToObject(root, "name", s.name);
	cJSON_AddStringToObject(root, "status", s.status);
	if (s.error)
		cJSON_AddStringToObject(root, "error", s.error);
	else
		cJSON_AddNullToObject(root, "error");
	cJSON_AddNumberToObject(root, "attempts", s.attempts);
	cJSON_AddStringToObject(root, "created_at", s.created_at);
	cJSON_AddStringToObject(root, "started_at", s.started_at);
	cJSON_AddStringToObject(root, "finished_at", s.finished_at);
	cJSON_AddStringToObject(root, "config_sha256", s.config_sha256);
	cJSON *cfg = visible ? cJSON_Parse(s.config) : NULL;
	if (cfg)
		cJSON_AddItemToObject(root, "config", cfg);
	else
		cJSON_AddNullToObject(root, "config");
	cJSON_AddBoolToObject(root, "config_visible", visible);
	cJSON *res = s.result ? cJSON_Parse(s.result) : NULL;
	if (res)
		cJSON_AddItemToObject(root, "result", res);
	else
		cJSON_AddNullToObject(root, "result");
	http_reply_json(rep, 200, cJSON_PrintUnformatted(root));
	cJSON_Delete(root);
	db_submission_release(&s);
}

static void api_submission_cancel(void *app_, const http_request *req, http_reply *rep)
{
	srv_app *app = app_;
	int64_t id;
	if (!api_submission_id(req, rep, &id))
		return;
	api_auth auth;
	if (api_authenticate(app, req, NULL, &auth, rep) != 0)
		return;
	if (auth.who == API_ANON) {
		http_reply_error(rep, 401, "unauthorized", "Authorization",
				 "cancelling needs the token of the submission's team");
		return;
	}
	int rc = db_submission_cancel(app->db, id, auth.team.id, auth.who == API_ADMIN);
	switch (rc) {
	case DB_NOTFOUND:
		http_reply_error(rep, 404, "not_found", "id", "no submission %lld", (long long)id);
		return;
	case DB_FORBIDDEN:
		http_reply_error(rep, 403, "forbidden", "id",
				 "submission %lld belongs to another team", (long long)id);
		return;
	case DB_CONFLICT:
		http_reply_error(rep, 409, "conflict", "status",
				 "submission %lld has already ended", (long long)id);
		return;
	}
	if (api_db_failed(app, rc, rep))
		return;
	cJSON *root = cJSON_CreateObject();
	cJSON_AddNumberToObject(root, "id", (double)id);
	cJSON_AddStringToObject(root, "status", "cancelled");
	http_reply_json(rep, 200, cJSON_PrintUnformatted(root));
	cJSON_Delete(root);
	log_info(app->log, "submission cancelled", "id=%lld", (long long)id);
	sched_cancel(app->sched, id);
}

// ---- server-sent progress ----

static void *api_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n);
	if (!q)
		abort();  /* as tm_xmalloc: small buffers, out of memory is fatal */
	return q;
}

/* One event-stream connection: text waiting to be sent, fed by the stored progress first and
 * then by the scheduler; a keep-alive comment every 15 s also notices a client that left. */
typedef struct sse_conn {
	srv_app *app;
	int64_t id;
	char *buf;                /* (cap) pending text: buf[off, len) */
	size_t off, len, cap;
	int last_seq;             /* progress lines sent */
	bool done;                /* end the stream once buf is drained */
	bool released;            /* the connection is gone */
	sched_sub *sub;
	http_stream *stream;
	uv_timer_t keepalive;
} sse_conn;

#define SSE_MAX_PENDING (1u << 20)

static void sse_append(sse_conn *c, const char *event, int seq, const char *data)
{
	size_t need = strlen(event) + strlen(data) + 48;
	if (c->len - c->off + need > SSE_MAX_PENDING) {
		c->done = true;  /* a client that does not read: stop feeding it */
		return;
	}
	if (c->off > 0 && c->len + need > c->cap) {
		memmove(c->buf, c->buf + c->off, c->len - c->off);
		c->len -= c->off;
		c->off = 0;
	}
	if (c->len + need > c->cap) {
		size_t cap = c->cap ? c->cap : 4096;
		while (cap < c->len + need)
			cap *= 2;
		c->buf = api_xrealloc(c->buf, cap);
		c->cap = cap;
	}
	int n;
	if (seq > 0)
		n = snprintf(c->buf + c->len, c->cap - c->len, "id: %d\nevent: %s\ndata: %s\n\n", seq,
			     event, data);
	else if (event[0])
		n = snprintf(c->buf + c->len, c->cap - c->len, "event: %s\ndata: %s\n\n", event, data);
	else
		n = snprintf(c->buf + c->len, c->cap - c->len, "%s", data);
	if (n > 0)
		c->len += (size_t)n;
}

static bool status_terminal(const char *status)
{
	return strcmp(status, "finished") == 0 || strcmp(status, "failed") == 0 ||
	       strcmp(status, "cancelled") == 0;
}

static void sse_on_progress(void *arg, int seq, const char *line)
{
	sse_conn *c = arg;
	if (seq <= c->last_seq)
		return;
	c->last_seq = seq;
	sse_append(c, "progress", seq, line);
}

static void sse_on_event(void *arg, const char *event, const char *data)
{
	sse_conn *c = arg;
	if (c->done)
		return;
	if (strcmp(event, "progress") == 0) {
		cJSON *o = cJSON_Parse(data);
		const cJSON *seq = cJSON_GetObjectItemCaseSensitive(o, "seq");
		if (cJSON_IsNumber(seq))
			sse_on_progress(c, seq->valueint, data);
		cJSON_Delete(o);
	} else {
		sse_append(c, event, 0, data);
		cJSON *o = cJSON_Parse(data);
		const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "status");
		if (cJSON_IsString(st) && status_terminal(st->valuestring))
			c->done = true;
		cJSON_Delete(o);
	}
	http_stream_wake(c->stream);
}

static long sse_read(void *arg, char *buf, size_t max)
{
	sse_conn *c = arg;
	size_t avail = c->len - c->off;
	if (avail == 0)
		return c->done ? -1 : 0;
	size_t n = avail < max ? avail : max;
	memcpy(buf, c->buf + c->off, n);
	c->off += n;
	if (c->off == c->len)
		c->off = c->len = 0;
	return (long)n;
}

static void sse_attach(void *arg, http_stream *s)
{
	((sse_conn *)arg)->stream = s;
}

static void sse_on_keepalive(uv_timer_t *t)
{
	sse_conn *c = t->data;
	sse_append(c, "", 0, ": keep-alive\n\n");
	http_stream_wake(c->stream);
}

static void sse_free(uv_handle_t *h)
{
	sse_conn *c = h->data;
	free(c->buf);
	free(c);
}

static void sse_release(void *arg)
{
	sse_conn *c = arg;
	c->released = true;
	if (c->sub && c->app->sched)
		sched_unsubscribe(c->app->sched, c->sub);
	c->sub = NULL;
	c->stream = NULL;
	uv_timer_stop(&c->keepalive);
	uv_close((uv_handle_t *)&c->keepalive, sse_free);
}

static const http_stream_ops sse_ops = { sse_read, sse_attach, sse_release };

static void api_submission_events(void *app_, const http_request *req, http_reply *rep)
{
	srv_app *app = app_;
	db_submission s;
	if (!api_submission_load(app, req, rep, &s))
		return;
	int64_t id = s.id;
	sse_conn *c = tm_xcalloc(1, sizeof(*c));
	c->app = app;
	c->id = id;
	/* A reconnecting EventSource says where it stopped. */
	const char *last = http_request_header(req, "Last-Event-ID");
	if (last) {
		char *end;
		long v = strtol(last, &end, 10);
		if (*end == '\0' && v > 0 && v < INT_MAX)
			c->last_seq = (int)v;
	}
	sse_append(c, "", 0, "retry: 2000\n\n");
	if (!status_terminal(s.status)) {
		char data[64];
		snprintf(data, sizeof(data), "{\"status\":\"%s\"}", s.status);
		sse_append(c, "status", 0, data);
	}
	db_progress_list(app->db, id, c->last_seq, sse_on_progress, c);
	if (status_terminal(s.status)) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "status", s.status);
		if (s.error)
			cJSON_AddStringToObject(o, "error", s.error);
		char *json = cJSON_PrintUnformatted(o);
		cJSON_Delete(o);
		sse_append(c, "status", 0, json ? json : "{}");
		free(json);
		c->done = true;
	} else if (app->sched) {
		c->sub = sched_subscribe(app->sched, id, sse_on_event, c);
	} else {
		c->done = true;
	}
	db_submission_release(&s);
	uv_timer_init(app->loop, &c->keepalive);
	c->keepalive.data = c;
	if (!c->done)
		uv_timer_start(&c->keepalive, sse_on_keepalive, 15000, 15000);
	rep->status = 200;
	rep->content_type = "text/event-stream";
	rep->stream = &sse_ops;
	rep->stream_arg = c;
}

// ---- metrics (Prometheus text format) ----

static void metric_line(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void metric_line(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
		va_end(ap);
		if (n >= 0 && (size_t)n < *cap - *len) {
			*len += (size_t)n;
			return;
		}
		*cap *= 2;
		*buf = api_xrealloc(*buf, *cap);
	}
}

static void api_metrics(void *app_, const http_request *req, http_reply *rep)
{
	(void)req;
	srv_app *app = app_;
	size_t cap = 16384, len = 0;
	char *b = tm_xmalloc(cap);
	b[0] = '\0';
	static const char *const status_names[5] = { "queued", "running", "finished", "failed",
						      "cancelled" };
	int64_t counts[5];
	if (db_status_counts(app->db, counts) == DB_OK) {
		metric_line(&b, &len, &cap, "# HELP tinymlperf_submissions Submissions by status.\n"
			    "# TYPE tinymlperf_submissions gauge\n");
		for (int i = 0; i < 5; i++)
			metric_line(&b, &len, &cap, "tinymlperf_submissions{status=\"%s\"} %lld\n",
				    status_names[i], (long long)counts[i]);
		metric_line(&b, &len, &cap, "# HELP tinymlperf_queue_depth Submissions waiting for a "
			    "worker.\n# TYPE tinymlperf_queue_depth gauge\ntinymlperf_queue_depth %lld\n",
			    (long long)counts[0]);
	}
	if (app->sched) {
		sched_metrics m;
		sched_get_metrics(app->sched, &m);
		metric_line(&b, &len, &cap, "# HELP tinymlperf_worker_slots Worker slots.\n"
			    "# TYPE tinymlperf_worker_slots gauge\ntinymlperf_worker_slots %d\n"
			    "# HELP tinymlperf_worker_slots_busy Worker slots running a job.\n"
			    "# TYPE tinymlperf_worker_slots_busy gauge\n"
			    "tinymlperf_worker_slots_busy %d\n", m.slots, m.busy);
		metric_line(&b, &len, &cap, "# HELP tinymlperf_jobs_started_total Worker jobs started.\n"
			    "# TYPE tinymlperf_jobs_started_total counter\n"
			    "tinymlperf_jobs_started_total %llu\n", (unsigned long long)m.started);
		metric_line(&b, &len, &cap, "# HELP tinymlperf_worker_failures_total Failed "
			    "submissions by reason.\n# TYPE tinymlperf_worker_failures_total counter\n");
		for (int i = 0; sched_failure_name(i); i++)
			metric_line(&b, &len, &cap,
				    "tinymlperf_worker_failures_total{reason=\"%s\"} %llu\n",
				    sched_failure_name(i), (unsigned long long)m.failures[i]);
		metric_line(&b, &len, &cap, "# HELP tinymlperf_reference_ready Whether an event's "
			    "reference model exists (1) or not (0).\n"
			    "# TYPE tinymlperf_reference_ready gauge\n");
		for (int i = 0; i < EV_COUNT; i++)
			metric_line(&b, &len, &cap,
				    "tinymlperf_reference_ready{event=\"%s\",state=\"%s\"} %d\n",
				    ev_event_at(i)->name, sched_reference_state(app->sched, i),
				    strcmp(sched_reference_state(app->sched, i), "ready") == 0);
	}
	if (app->http) {
		const http_route_stats *st = http_server_stats(app->http);
		metric_line(&b, &len, &cap, "# HELP tinymlperf_http_requests_total HTTP requests by "
			    "route and status class.\n# TYPE tinymlperf_http_requests_total counter\n");
		for (size_t r = 0; r <= app->n_routes; r++) {
			char route[160];
			if (r < app->n_routes)
				snprintf(route, sizeof(route), "%s %s", app->routes[r].method,
					 app->routes[r].pattern);
			else
				snprintf(route, sizeof(route), "unmatched");
			for (int k = 1; k < 6; k++)
				if (st[r].by_class[k])
					metric_line(&b, &len, &cap, "tinymlperf_http_requests_total{"
						    "route=\"%s\",code=\"%dxx\"} %llu\n", route, k,
						    (unsigned long long)st[r].by_class[k]);
		}
		metric_line(&b, &len, &cap, "# HELP tinymlperf_http_request_duration_seconds Time to "
			    "answer a request, by route.\n"
			    "# TYPE tinymlperf_http_request_duration_seconds histogram\n");
		for (size_t r = 0; r <= app->n_routes; r++) {
			if (!st[r].requests)
				continue;
			char route[160];
			if (r < app->n_routes)
				snprintf(route, sizeof(route), "%s %s", app->routes[r].method,
					 app->routes[r].pattern);
			else
				snprintf(route, sizeof(route), "unmatched");
			for (int k = 0; k < HTTP_LAT_BUCKETS; k++)
				metric_line(&b, &len, &cap, "tinymlperf_http_request_duration_seconds_bucket{"
					    "route=\"%s\",le=\"%g\"} %llu\n", route, http_lat_bounds_s[k],
					    (unsigned long long)st[r].buckets[k]);
			metric_line(&b, &len, &cap, "tinymlperf_http_request_duration_seconds_bucket{"
				    "route=\"%s\",le=\"+Inf\"} %llu\n"
				    "tinymlperf_http_request_duration_seconds_sum{route=\"%s\"} %.9f\n"
				    "tinymlperf_http_request_duration_seconds_count{route=\"%s\"} %llu\n",
				    route, (unsigned long long)st[r].requests, route, st[r].sum_s, route,
				    (unsigned long long)st[r].requests);
		}
	}
	metric_line(&b, &len, &cap, "# HELP tinymlperf_uptime_seconds Seconds since start-up.\n"
		    "# TYPE tinymlperf_uptime_seconds gauge\ntinymlperf_uptime_seconds %.3f\n",
		    (double)(tm_now_ns() - app->started_ns) / 1e9);
	free(rep->body);
	rep->status = 200;
	rep->content_type = "text/plain; version=0.0.4; charset=utf-8";
	rep->body = b;
	rep->len = len;
}

// ---- leaderboard ----

/* The techniques an entry uses, read from its config (never from free text). */
static cJSON *api_techniques(const char *config)
{
	cJSON *out = cJSON_CreateArray();
	cJSON *c = config ? cJSON_Parse(config) : NULL;
	if (!c)
		return out;
	char buf[64];
	const cJSON *div = cJSON_GetObjectItemCaseSensitive(c, "division");
	if (cJSON_IsString(div) && strcmp(div->valuestring, "open") == 0)
		cJSON_AddItemToArray(out, cJSON_CreateString("own model"));
	const cJSON *opt = cJSON_GetObjectItemCaseSensitive(c, "optimize");
	const cJSON *q = cJSON_GetObjectItemCaseSensitive(opt, "quantize");
	if (cJSON_IsObject(q)) {
		const cJSON *g = cJSON_GetObjectItemCaseSensitive(q, "granularity");
		snprintf(buf, sizeof(buf), "int8 %s",
			 cJSON_IsString(g) ? g->valuestring : "per_channel");
		cJSON_AddItemToArray(out, cJSON_CreateString(buf));
	}
	const cJSON *pr = cJSON_GetObjectItemCaseSensitive(opt, "prune");
	if (cJSON_IsObject(pr)) {
		const cJSON *sp = cJSON_GetObjectItemCaseSensitive(pr, "sparsity");
		const cJSON *st = cJSON_GetObjectItemCaseSensitive(pr, "structured");
		snprintf(buf, sizeof(buf), "%s pruning %.0f%%",
			 cJSON_IsTrue(st) ? "structured" : "unstructured",
			 cJSON_IsNumber(sp) ? sp->valuedouble * 100 : 0.0);
		cJSON_AddItemToArray(out, cJSON_CreateString(buf));
	}
	if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(opt, "kv_cache")))
		cJSON_AddItemToArray(out, cJSON_CreateString("kv cache"));
	const cJSON *th = cJSON_GetObjectItemCaseSensitive(opt, "threads");
	if (cJSON_IsNumber(th) && th->valuedouble > 1) {
		snprintf(buf, sizeof(buf), "%d threads", (int)th->valuedouble);
		cJSON_AddItemToArray(out, cJSON_CreateString(buf));
	}
	const cJSON *k = cJSON_GetObjectItemCaseSensitive(opt, "kernels");
	if (cJSON_IsString(k) && strcmp(k->valuestring, "auto") != 0) {
		snprintf(buf, sizeof(buf), "%s kernels", k->valuestring);
		cJSON_AddItemToArray(out, cJSON_CreateString(buf));
	}
	const cJSON *bs = cJSON_GetObjectItemCaseSensitive(c, "batch_size");
	if (cJSON_IsNumber(bs)) {
		snprintf(buf, sizeof(buf), "batch %d", (int)bs->valuedouble);
		cJSON_AddItemToArray(out, cJSON_CreateString(buf));
	}
	cJSON_Delete(c);
	return out;
}

/* Strict integer query parameter in [lo, hi]; absent gives dflt.  Fills rep on error. */
static bool api_query_int(const http_request *req, const char *name, long lo, long hi,
			  long dflt, long *out, http_reply *rep)
{
	const char *v = http_request_query(req, name);
	*out = dflt;
	if (!v)
		return true;
	char *end;
	errno = 0;
	long x = strtol(v, &end, 10);
	if (errno || end == v || *end || x < lo || x > hi) {
		http_reply_error(rep, 400, "invalid_parameter", name,
				 "'%s' is '%.40s', must be an integer in [%ld, %ld]", name, v, lo, hi);
		return false;
	}
	*out = x;
	return true;
}

typedef struct lb_collect {
	cJSON *rows;
	long rank;
} lb_collect;

static void lb_row_json(void *arg, const db_lb_row *r)
{
	lb_collect *lc = arg;
	cJSON *o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "rank", (double)++lc->rank);
	cJSON_AddBoolToObject(o, "baseline", false);
	cJSON_AddNumberToObject(o, "submission", (double)r->submission_id);
	cJSON_AddStringToObject(o, "team", r->team);
	cJSON_AddStringToObject(o, "name", r->name);
	cJSON_AddNumberToObject(o, "speedup", r->speedup);
	cJSON_AddNumberToObject(o, "speedup_ci_low", r->speedup_ci_low);
	cJSON_AddNumberToObject(o, "speedup_ci_high", r->speedup_ci_high);
	cJSON_AddNumberToObject(o, "latency_p90_ms", r->latency_p90_ns / 1e6);
	cJSON_AddNumberToObject(o, "throughput", r->throughput);
	cJSON_AddNumberToObject(o, "quality", r->quality);
	cJSON_AddNumberToObject(o, "model_bytes", (double)r->model_bytes);
	cJSON_AddNumberToObject(o, "compression", r->compression);
	cJSON_AddItemToObject(o, "techniques", api_techniques(r->config));
	cJSON_AddStringToObject(o, "submitted_at", r->created_at);
	cJSON_AddItemToArray(lc->rows, o);
}

static const struct lb_column {
	const char *key, *title, *unit, *better;  /* better: "higher", "lower" or NULL */
} lb_columns[] = {
	{ "rank", "Rank", NULL, NULL },
	{ "team", "Team", NULL, NULL },
	{ "name", "Entry", NULL, NULL },
	{ "speedup", "Speedup", "x", "higher" },
	{ "speedup_ci_low", "Speedup CI low", "x", "higher" },
	{ "speedup_ci_high", "Speedup CI high", "x", "higher" },
	{ "latency_p90_ms", "p90 latency", "ms", "lower" },
	{ "throughput", "Throughput", "items/s", "higher" },
	{ "quality", "Quality", NULL, "higher" },
	{ "model_bytes", "Model size", "bytes", "lower" },
	{ "compression", "Compression", "x", "higher" },
	{ "techniques", "Techniques", NULL, NULL },
};

/* One CSV cell: quoted, quotes doubled, and a leading = + - @ neutralised (CSV injection). */
static void csv_cell(char **buf, size_t *len, size_t *cap, const char *s, bool last)
{
	size_t need = *len + 2 * strlen(s) + 8;
	if (need > *cap) {
		while (*cap < need)
			*cap *= 2;
		*buf = realloc(*buf, *cap);
		if (!*buf)
			abort();
	}
	char *p = *buf + *len;
	*p++ = '"';
	if (*s == '=' || *s == '+' || *s == '-' || *s == '@')
		*p++ = '\'';
	for (; *s; s++) {
		if (*s == '"')
			*p++ = '"';
		*p++ = *s;
	}
	*p++ = '"';
	*p++ = last ? '\n' : ',';
	*len = (size_t)(p - *buf);
}

static char *lb_csv(const cJSON *rows)
{
	size_t cap = 4096, len = 0;
	char *buf = tm_xmalloc(cap);
	size_t nc = sizeof(lb_columns) / sizeof(lb_columns[0]);
	for (size_t i = 0; i < nc; i++)
		csv_cell(&buf, &len, &cap, lb_columns[i].key, i + 1 == nc);
	const cJSON *row;
	cJSON_ArrayForEach(row, rows) {
		for (size_t i = 0; i < nc; i++) {
			const cJSON *v = cJSON_GetObjectItemCaseSensitive(row, lb_columns[i].key);
			char cell[512] = "";
			if (cJSON_IsString(v)) {
				snprintf(cell, sizeof(cell), "%s", v->valuestring);
			} else if (cJSON_IsNumber(v)) {
				snprintf(cell, sizeof(cell), "%.10g", v->valuedouble);
			} else if (cJSON_IsArray(v)) {
				size_t used = 0;
				const cJSON *t;
				cJSON_ArrayForEach(t, v)
					used += (size_t)snprintf(cell + used, sizeof(cell) - used, "%s%s",
								 used ? "; " : "", t->valuestring);
			}
			csv_cell(&buf, &len, &cap, cell, i + 1 == nc);
		}
	}
	buf[len] = '\0';
	return buf;
}

/* Leaderboard replies are cached by query until the next result is stored (the scheduler's
 * results version); a busy page costs one lookup instead of a query and a JSON build. */
static bool lb_cache_get(srv_app *app, const char *key, http_reply *rep)
{
	if (!app->sched)
		return false;
	uint64_t version = sched_results_version(app->sched);
	for (int i = 0; i < SRV_LB_CACHE; i++) {
		srv_cache_entry *e = &app->lb_cache[i];
		if (e->body && e->version == version && strcmp(e->key, key) == 0) {
			free(rep->body);
			rep->status = 200;
			rep->content_type = e->content_type;
			rep->body = tm_xmalloc(e->len + 1);
			memcpy(rep->body, e->body, e->len + 1);
			rep->len = e->len;
			return true;
		}
	}
	return false;
}

static void lb_cache_put(srv_app *app, const char *key, const http_reply *rep)
{
	if (!app->sched || rep->status != 200 || !rep->body)
		return;
	srv_cache_entry *e = &app->lb_cache[app->lb_cache_next];
	app->lb_cache_next = (app->lb_cache_next + 1) % SRV_LB_CACHE;
	free(e->body);
	snprintf(e->key, sizeof(e->key), "%s", key);
	e->version = sched_results_version(app->sched);
	e->content_type = rep->content_type;
	e->body = tm_xmalloc(rep->len + 1);
	memcpy(e->body, rep->body, rep->len);
	e->body[rep->len] = '\0';
	e->len = rep->len;
}

static void api_leaderboard(void *app_, const http_request *req, http_reply *rep)
{
	srv_app *app = app_;
	const ev_event *ev = ev_event_find(req->params[0]);
	if (!ev) {
		http_reply_error(rep, 404, "not_found", "event", "no event '%.40s' (events: %s)",
				 req->params[0], ev_event_names());
		return;
	}
	const char *division = http_request_query(req, "division");
	if (!division)
		division = "closed";
	if (strcmp(division, "closed") != 0 && strcmp(division, "open") != 0) {
		http_reply_error(rep, 400, "invalid_parameter", "division",
				 "'division' is '%.40s', must be closed or open", division);
		return;
	}
	const char *format = http_request_query(req, "format");
	if (!format)
		format = "json";
	if (strcmp(format, "json") != 0 && strcmp(format, "csv") != 0) {
		http_reply_error(rep, 400, "invalid_parameter", "format",
				 "'format' is '%.40s', must be json or csv", format);
		return;
	}
	long limit, offset, all;
	if (!api_query_int(req, "limit", 1, 1000, 100, &limit, rep) ||
	    !api_query_int(req, "offset", 0, 1000000, 0, &offset, rep) ||
	    !api_query_int(req, "all", 0, 1, 0, &all, rep))
		return;
	char key[sizeof(app->lb_cache[0].key)];
	snprintf(key, sizeof(key), "%s|%s|%ld|%ld|%ld|%s", ev->name, division, all, limit, offset,
		 format);
	if (lb_cache_get(app, key, rep))
		return;
	lb_collect lc = { cJSON_CreateArray(), offset };
	int64_t total = 0;
	int rc = db_leaderboard(app->db, ev->name, division, all != 0, (int)limit, (int)offset,
				lb_row_json, &lc, &total);
	if (api_db_failed(app, rc, rep)) {
		cJSON_Delete(lc.rows);
		return;
	}
	if (strcmp(format, "csv") == 0) {
		char *csv = lb_csv(lc.rows);
		cJSON_Delete(lc.rows);
		free(rep->body);
		rep->status = 200;
		rep->content_type = "text/csv; charset=utf-8";
		rep->body = csv;
		rep->len = strlen(csv);
		lb_cache_put(app, key, rep);
		return;
	}
	cJSON *root = cJSON_CreateObject();
	cJSON_AddStringToObject(root, "event", ev->name);
	cJSON_AddStringToObject(root, "division", division);
	cJSON_AddBoolToObject(root, "all_entries", all != 0);
	cJSON_AddNumberToObject(root, "total", (double)total);
	cJSON_AddNumberToObject(root, "limit", (double)limit);
	cJSON_AddNumberToObject(root, "offset", (double)offset);
	cJSON *cols = cJSON_AddArrayToObject(root, "columns");
	for (size_t i = 0; i < sizeof(lb_columns) / sizeof(lb_columns[0]); i++) {
		cJSON *c = cJSON_CreateObject();
		cJSON_AddStringToObject(c, "key", lb_columns[i].key);
		cJSON_AddStringToObject(c, "title", lb_columns[i].title);
		if (lb_columns[i].unit)
			cJSON_AddStringToObject(c, "unit", lb_columns[i].unit);
		else
			cJSON_AddNullToObject(c, "unit");
		if (lb_columns[i].better)
			cJSON_AddStringToObject(c, "better", lb_columns[i].better);
		else
			cJSON_AddNullToObject(c, "better");
		cJSON_AddItemToArray(cols, c);
	}
	/* The baseline: the reference model, FP32, portable kernels, one thread: speedup 1 by
	 * definition, timed inside every submission's worker. */
	cJSON *base = cJSON_AddObjectToObject(root, "baseline");
	cJSON_AddBoolToObject(base, "baseline", true);
	cJSON_AddStringToObject(base, "team", "baseline");
	cJSON_AddStringToObject(base, "name", "reference model, FP32, portable kernels, 1 thread");
	cJSON_AddNumberToObject(base, "speedup", 1.0);
	cJSON_AddNumberToObject(base, "speedup_ci_low", 1.0);
	cJSON_AddNumberToObject(base, "speedup_ci_high", 1.0);
	cJSON_AddItemToObject(root, "rows", lc.rows);
	http_reply_json(rep, 200, cJSON_PrintUnformatted(root));
	cJSON_Delete(root);
	lb_cache_put(app, key, rep);
}

const http_route api_routes[] = {
	{ "GET", "/healthz", api_healthz },
	{ "GET", "/api/v1/healthz", api_healthz },
	{ "POST", "/api/v1/teams", api_team_create },
	{ "GET", "/api/v1/events", api_events },
	{ "POST", "/api/v1/validate", api_validate },
	{ "POST", "/api/v1/submissions", api_submission_create },
	{ "GET", "/api/v1/submissions/{}", api_submission_get },
	{ "DELETE", "/api/v1/submissions/{}", api_submission_cancel },
	{ "GET", "/api/v1/submissions/{}/events", api_submission_events },
	{ "GET", "/metrics", api_metrics },
	{ "GET", "/api/v1/leaderboard/{}", api_leaderboard },
};
const size_t api_n_routes = sizeof(api_routes) / sizeof(api_routes[0]);
