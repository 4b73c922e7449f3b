/* api.c: the route table of tinymlperfd and its handlers.  Each route is one row; handlers get
 * the application state (srv_app) and fill an http_reply. */
#include "server.h"
#include "engine.h"

#include <cjson/cJSON.h>

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

const http_route api_routes[] = {
	{ "GET", "/healthz", api_healthz },
	{ "GET", "/api/v1/healthz", api_healthz },
};
const size_t api_n_routes = sizeof(api_routes) / sizeof(api_routes[0]);
