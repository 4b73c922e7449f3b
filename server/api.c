/* api.c: the route table of tinymlperfd and its handlers.  Each route is one row; handlers get
 * the application state (srv_app) and fill an http_reply. */
#include "server.h"
#include "engine.h"
#include "events.h"

#include <cjson/cJSON.h>
#include <string.h>
#include <sys/random.h>

// ---- authentication ----

enum api_principal { API_ANON, API_TEAM, API_ADMIN };

typedef struct api_auth {
	enum api_principal who;
	db_team team;  /* when who == API_TEAM */
} api_auth;

/* Resolve "Authorization: Bearer TOKEN".  Returns 0, or fills rep with 401/503 and returns -1.
 * A missing header is anonymous (routes decide); a present but unknown token is 401. */
static int api_authenticate(srv_app *app, const http_request *req, api_auth *auth,
			    http_reply *rep)
{
	memset(auth, 0, sizeof(*auth));
	const char *h = http_request_header(req, "Authorization");
	if (!h)
		return 0;
	if (strncmp(h, "Bearer ", 7) != 0 || h[7] == '\0' || strlen(h + 7) > 200) {
		http_reply_error(rep, 401, "unauthorized", "Authorization",
				 "'Authorization' must be 'Bearer TOKEN' with a token of at most 200 bytes");
		return -1;
	}
	uint8_t hash[32];
	sha256(h + 7, strlen(h + 7), hash);
	if (app->has_admin && ct_equal(hash, app->admin_hash, 32)) {
		auth->who = API_ADMIN;
		return 0;
	}
	int rc = db_team_by_token(app->db, hash, &auth->team);
	if (rc == DB_OK) {
		auth->who = auth->team.is_admin ? API_ADMIN : API_TEAM;
		return 0;
	}
	if (rc == DB_NOTFOUND) {
		http_reply_error(rep, 401, "unauthorized", "Authorization", "the token is not valid");
		return -1;
	}
	http_reply_error(rep, 503, "unavailable", NULL, "the database is busy, try again");
	return -1;
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
	if (api_authenticate(app, req, &auth, rep) != 0)
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

const http_route api_routes[] = {
	{ "GET", "/healthz", api_healthz },
	{ "GET", "/api/v1/healthz", api_healthz },
	{ "POST", "/api/v1/teams", api_team_create },
	{ "GET", "/api/v1/events", api_events },
	{ "POST", "/api/v1/validate", api_validate },
};
const size_t api_n_routes = sizeof(api_routes) / sizeof(api_routes[0]);
