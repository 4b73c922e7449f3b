/* web.c: the HTML pages of tinymlperfd and the static files of web/.  The leaderboard (/), the
 * event pages (/events/{id}), the submit form (/submit) and the submission page
 * (/submissions/{id}) are rendered here on the server, so they read without JavaScript; the
 * scripts in web/ add sorting, charts, live progress and refresh on top.  The leaderboard and
 * submission pages render the JSON of the API's own handlers (called through api_routes), so a
 * page and /api/v1 can never disagree on a figure or on who may see a config.  Every string
 * that came from a user (team and entry names, configs) goes through web_esc; pages carry a
 * Content-Security-Policy that allows only our own scripts and styles. */
#include "server.h"
#include "engine.h"
#include "events.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define WEB_STATIC_MAX (4 << 20)  /* bytes: larger static files are refused */
#define WEB_MAX_EXAMPLES 16       /* example configs listed per event */

// ---- output buffer ----

/* A growing, always NUL-terminated text buffer; the reply takes p over. */
typedef struct wb {
	char *p;
	size_t len, cap;
} wb;

static void wb_reserve(wb *b, size_t extra)
{
	if (b->len + extra + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 8192;
	while (cap < b->len + extra + 1)
		cap *= 2;
	char *p = realloc(b->p, cap);
	if (!p)
		abort();
	b->p = p;
	b->cap = cap;
}

static void wb_put(wb *b, const char *s, size_t n)
{
	wb_reserve(b, n);
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void wb_puts(wb *b, const char *s)
{
	wb_put(b, s, strlen(s));
}

/* Formatted text: only for markup and numbers; user strings go through wb_esc. */
static void wb_printf(wb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void wb_printf(wb *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n <= 0)
		return;
	wb_reserve(b, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

/* HTML-escape s for text and for quoted attribute values. */
static void wb_esc(wb *b, const char *s)
{
	const char *run = s;
	for (; *s; s++) {
		const char *rep;
		switch (*s) {
		case '&': rep = "&amp;"; break;
		case '<': rep = "&lt;"; break;
		case '>': rep = "&gt;"; break;
		case '"': rep = "&quot;"; break;
		case '\'': rep = "&#39;"; break;
		default: continue;
		}
		wb_put(b, run, (size_t)(s - run));
		wb_puts(b, rep);
		run = s + 1;
	}
	wb_put(b, run, (size_t)(s - run));
}

static void web_reply(http_reply *rep, int status, const char *type, wb *b)
{
	free(rep->body);
	rep->status = status;
	rep->content_type = type;
	rep->body = b->p;
	rep->len = b->len;
	b->p = NULL;
	b->len = b->cap = 0;
}

// ---- JSON access ----

static const cJSON *jget(const cJSON *o, const char *key)
{
	return cJSON_GetObjectItemCaseSensitive(o, key);
}

static double jnum(const cJSON *o, const char *key, double dflt)
{
	const cJSON *v = jget(o, key);
	return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

static const char *jstr(const cJSON *o, const char *key, const char *dflt)
{
	const cJSON *v = jget(o, key);
	return cJSON_IsString(v) ? v->valuestring : dflt;
}

/* Call the API's GET handler for pattern with one path parameter, as the page's own request
 * (same query arguments and headers).  Returns the parsed JSON body (caller deletes) and the
 * status; NULL when the body is not JSON. */
static cJSON *web_api_get(void *app, const http_request *req, const char *pattern,
			  const char *param, int *status)
{
	*status = 500;
	const http_route *route = NULL;
	for (size_t i = 0; i < api_n_routes; i++)
		if (strcmp(api_routes[i].method, "GET") == 0 &&
		    strcmp(api_routes[i].pattern, pattern) == 0)
			route = &api_routes[i];
	size_t n = strlen(param);
	if (!route || n >= sizeof(req->param_buf))
		return NULL;
	http_request sub = *req;
	memcpy(sub.param_buf, param, n + 1);
	sub.params[0] = sub.param_buf;
	sub.method = "GET";
	sub.body = "";
	sub.body_len = 0;
	http_reply rep = { 0 };
	route->fn(app, &sub, &rep);
	*status = rep.status;
	cJSON *j = rep.body ? cJSON_ParseWithLength(rep.body, rep.len) : NULL;
	free(rep.body);
	return j;
}

// ---- formatting ----

/* Numbers as shown; the exact value goes into data-value (%.17g) for sorting and tests. */
static void fmt_bytes(char *buf, size_t n, double bytes)
{
	if (bytes >= 1048576)
		snprintf(buf, n, "%.2f MiB", bytes / 1048576);
	else if (bytes >= 1024)
		snprintf(buf, n, "%.1f KiB", bytes / 1024);
	else
		snprintf(buf, n, "%.0f B", bytes);
}

static void fmt_ns(char *buf, size_t n, double ns)
{
	if (ns >= 1e9)
		snprintf(buf, n, "%.3g s", ns / 1e9);
	else if (ns >= 1e6)
		snprintf(buf, n, "%.3g ms", ns / 1e6);
	else if (ns >= 1e3)
		snprintf(buf, n, "%.3g \xc2\xb5s", ns / 1e3);
	else
		snprintf(buf, n, "%.0f ns", ns);
}

static void fmt_count(char *buf, size_t n, double v)
{
	if (v >= 1e9)
		snprintf(buf, n, "%.3g G", v / 1e9);
	else if (v >= 1e6)
		snprintf(buf, n, "%.3g M", v / 1e6);
	else if (v >= 1e4)
		snprintf(buf, n, "%.3g k", v / 1e3);
	else
		snprintf(buf, n, "%.4g", v);
}

static bool ev_is_decathlon(const ev_event *ev)
{
	return ev->id == EV_TRANSFORMER_DECATHLON;
}

static void fmt_quality(char *buf, size_t n, const ev_event *ev, double q)
{
	if (ev && ev_is_decathlon(ev))
		snprintf(buf, n, "%.1f pts", q);
	else
		snprintf(buf, n, "%.2f%%", q * 100);
}

static const char *throughput_unit(const ev_event *ev)
{
	return ev_is_decathlon(ev) ? "tokens/s" : "images/s";
}

// ---- page frame ----

static const char *const web_csp =
	"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'";

/* The head, the site header and the opening of <main>.  script: a file of web/ or NULL. */
static void page_begin(wb *b, const char *title, const char *nav, const char *script)
{
	wb_puts(b, "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
		   "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
	wb_printf(b, "<meta http-equiv=\"Content-Security-Policy\" content=\"%s\">\n", web_csp);
	wb_puts(b, "<meta name=\"referrer\" content=\"same-origin\">\n<title>");
	wb_esc(b, title);
	wb_puts(b, " \xc2\xb7 TinyMLPerf</title>\n"
		   "<link rel=\"stylesheet\" href=\"/static/style.css\">\n"
		   "<link rel=\"icon\" href=\"/static/favicon.svg\" type=\"image/svg+xml\">\n"
		   "<script src=\"/static/common.js\" defer></script>\n");
	if (script)
		wb_printf(b, "<script src=\"/static/%s\" defer></script>\n", script);
	wb_puts(b, "</head>\n<body>\n<a class=\"skip\" href=\"#main\">Skip to the content</a>\n"
		   "<header class=\"site\"><nav aria-label=\"Site\">"
		   "<a class=\"brand\" href=\"/\">TinyMLPerf</a><ul>");
	static const struct { const char *key, *href, *label; } items[] = {
		{ "leaderboard", "/", "Leaderboard" },
		{ "mlp_sprint", "/events/mlp_sprint", "MLP Sprint" },
		{ "cnn_marathon", "/events/cnn_marathon", "CNN Marathon" },
		{ "transformer_decathlon", "/events/transformer_decathlon", "Decathlon" },
		{ "submit", "/submit", "Submit" },
	};
	for (size_t i = 0; i < sizeof(items) / sizeof(items[0]); i++)
		wb_printf(b, "<li><a href=\"%s\"%s>%s</a></li>", items[i].href,
			  nav && strcmp(nav, items[i].key) == 0 ? " aria-current=\"page\"" : "",
			  items[i].label);
	wb_puts(b, "</ul></nav></header>\n<main id=\"main\">\n");
}

static void page_end(wb *b)
{
	wb_printf(b, "</main>\n<footer class=\"site\"><p>TinyMLPerf %s \xc2\xb7 "
		     "<a href=\"/api/v1/events\">API</a> \xc2\xb7 "
		     "<a href=\"/healthz\">health</a></p></footer>\n</body>\n</html>\n",
		  TM_ENGINE_VERSION);
}

/* An error page: status, a title and a message (escaped). */
static void page_error(http_reply *rep, int status, const char *title, const char *msg)
{
	wb b = { 0 };
	page_begin(&b, title, NULL, NULL);
	wb_puts(&b, "<h1>");
	wb_esc(&b, title);
	wb_puts(&b, "</h1>\n<p class=\"notice\">");
	wb_esc(&b, msg);
	wb_puts(&b, "</p>\n<p><a href=\"/\">Back to the leaderboard</a></p>\n");
	page_end(&b);
	web_reply(rep, status, "text/html; charset=utf-8", &b);
}

static void page_api_error(http_reply *rep, int status, const cJSON *j)
{
	const char *msg = jstr(jget(j, "error"), "message", "the request failed");
	page_error(rep, status == 404 ? 404 : status >= 500 ? status : 400,
		   status == 404 ? "Not found" : status >= 500 ? "Server error" : "Bad request", msg);
}

// ---- leaderboard (/) ----

/* One column of the page's table: which key of the API row it shows and how. */
enum col_kind { COL_RANK, COL_TEXT, COL_ENTRY, COL_SPEEDUP, COL_LATENCY, COL_THROUGHPUT,
		COL_QUALITY, COL_BYTES, COL_RATIO, COL_TECH, COL_DATE };

static const struct web_col {
	const char *key;       /* key in the API's row */
	const char *title;
	const char *unit;      /* shown in the header, NULL for none */
	const char *better;    /* "higher", "lower" or NULL */
	enum col_kind kind;
} web_cols[] = {
	{ "rank", "Rank", NULL, NULL, COL_RANK },
	{ "team", "Team", NULL, NULL, COL_TEXT },
	{ "name", "Entry", NULL, NULL, COL_ENTRY },
	{ "speedup", "Speedup", "\xc3\x97 baseline, 95% CI", "higher", COL_SPEEDUP },
	{ "latency_p90_ms", "p90 latency", "per query", "lower", COL_LATENCY },
	{ "throughput", "Throughput", NULL, "higher", COL_THROUGHPUT },
	{ "quality", "Quality", NULL, "higher", COL_QUALITY },
	{ "model_bytes", "Model size", "bytes stored", "lower", COL_BYTES },
	{ "compression", "Compression", "\xc3\x97", "higher", COL_RATIO },
	{ "techniques", "Techniques", "from the config", NULL, COL_TECH },
	{ "submitted_at", "Submitted", "UTC", NULL, COL_DATE },
};
#define WEB_NCOLS (sizeof(web_cols) / sizeof(web_cols[0]))

static void lb_header(wb *b, const ev_event *ev)
{
	wb_puts(b, "<thead><tr>");
	for (size_t i = 0; i < WEB_NCOLS; i++) {
		const struct web_col *c = &web_cols[i];
		bool num = c->kind != COL_TEXT && c->kind != COL_ENTRY && c->kind != COL_TECH &&
			   c->kind != COL_DATE;
		wb_printf(b, "<th scope=\"col\" data-key=\"%s\" data-type=\"%s\"%s>"
			     "<button type=\"button\" class=\"sort\">%s", c->key,
			  num ? "num" : "text", i == 0 ? " aria-sort=\"ascending\"" : "", c->title);
		const char *unit = c->unit;
		if (c->kind == COL_THROUGHPUT)
			unit = throughput_unit(ev);
		if (c->kind == COL_QUALITY)
			unit = ev_is_decathlon(ev) ? "points of 1000" : "top-1 accuracy";
		if (unit)
			wb_printf(b, " <span class=\"unit\">(%s)</span>", unit);
		if (c->better)
			wb_printf(b, " <span class=\"better\" title=\"%s is better\">"
				     "<span aria-hidden=\"true\">%s</span>"
				     "<span class=\"sr\">, %s is better</span></span>",
				  c->better, strcmp(c->better, "higher") == 0 ? "\xe2\x86\x91" : "\xe2\x86\x93",
				  c->better);
		wb_puts(b, "</button></th>");
	}
	wb_puts(b, "</tr></thead>\n");
}

/* A numeric cell: the shown text and the exact value for sorting and comparison. */
static void lb_num_cell(wb *b, const char *key, double v, const char *text)
{
	wb_printf(b, "<td class=\"num\" data-key=\"%s\" data-value=\"%.17g\">%s</td>", key, v, text);
}

static void lb_row(wb *b, const ev_event *ev, const cJSON *row)
{
	double sub = jnum(row, "submission", 0);
	wb_printf(b, "<tr data-submission=\"%.0f\">", sub);
	char t[160];
	for (size_t i = 0; i < WEB_NCOLS; i++) {
		const struct web_col *c = &web_cols[i];
		double v = jnum(row, c->key, 0);
		switch (c->kind) {
		case COL_RANK:
			snprintf(t, sizeof(t), "%.0f", v);
			lb_num_cell(b, c->key, v, t);
			break;
		case COL_TEXT:
			wb_printf(b, "<td data-key=\"%s\">", c->key);
			wb_esc(b, jstr(row, c->key, ""));
			wb_puts(b, "</td>");
			break;
		case COL_ENTRY: {
			const char *name = jstr(row, c->key, "");
			wb_printf(b, "<td data-key=\"%s\"><a href=\"/submissions/%.0f\">", c->key, sub);
			if (*name)
				wb_esc(b, name);
			else
				wb_printf(b, "#%.0f", sub);
			wb_puts(b, "</a></td>");
			break;
		}
		case COL_SPEEDUP: {
			double lo = jnum(row, "speedup_ci_low", 0), hi = jnum(row, "speedup_ci_high", 0);
			wb_printf(b, "<td class=\"num\" data-key=\"speedup\" data-value=\"%.17g\" "
				     "data-ci-low=\"%.17g\" data-ci-high=\"%.17g\">"
				     "<strong>%.2f\xc3\x97</strong> <span class=\"ci\">[%.2f, %.2f]</span></td>",
				  v, lo, hi, v, lo, hi);
			break;
		}
		case COL_LATENCY:
			if (v > 0)
				fmt_ns(t, sizeof(t), v * 1e6);
			else
				snprintf(t, sizeof(t), "\xe2\x80\x94");
			lb_num_cell(b, c->key, v, t);
			break;
		case COL_THROUGHPUT:
			fmt_count(t, sizeof(t), v);
			lb_num_cell(b, c->key, v, v > 0 ? t : "\xe2\x80\x94");
			break;
		case COL_QUALITY:
			fmt_quality(t, sizeof(t), ev, v);
			lb_num_cell(b, c->key, v, t);
			break;
		case COL_BYTES:
			fmt_bytes(t, sizeof(t), v);
			lb_num_cell(b, c->key, v, t);
			break;
		case COL_RATIO:
			snprintf(t, sizeof(t), "%.2f\xc3\x97", v);
			lb_num_cell(b, c->key, v, t);
			break;
		case COL_TECH: {
			wb_printf(b, "<td data-key=\"%s\"><ul class=\"chips\">", c->key);
			const cJSON *it;
			cJSON_ArrayForEach(it, jget(row, c->key)) {
				if (!cJSON_IsString(it))
					continue;
				wb_puts(b, "<li>");
				wb_esc(b, it->valuestring);
				wb_puts(b, "</li>");
			}
			if (cJSON_GetArraySize(jget(row, c->key)) == 0)
				wb_puts(b, "<li class=\"plain\">FP32, reference kernels</li>");
			wb_puts(b, "</ul></td>");
			break;
		}
		case COL_DATE: {
			const char *d = jstr(row, c->key, "");
			wb_printf(b, "<td data-key=\"%s\" data-value=\"", c->key);
			wb_esc(b, d);
			wb_puts(b, "\"><time datetime=\"");
			wb_esc(b, d);
			wb_puts(b, "\">");
			/* "2024-05-01T12:34:56.789Z" shown as "2024-05-01 12:34" */
			char shown[17] = "";
			if (strlen(d) >= 16) {
				memcpy(shown, d, 16);
				shown[10] = ' ';
			}
			wb_esc(b, shown[0] ? shown : d);
			wb_puts(b, "</time></td>");
			break;
		}
		}
	}
	wb_puts(b, "</tr>\n");
}

static void lb_baseline_row(wb *b, const cJSON *base)
{
	wb_puts(b, "<tbody class=\"pinned\"><tr class=\"baseline\">");
	for (size_t i = 0; i < WEB_NCOLS; i++) {
		const struct web_col *c = &web_cols[i];
		switch (c->kind) {
		case COL_TEXT:
			wb_printf(b, "<td data-key=\"%s\">", c->key);
			wb_esc(b, jstr(base, "team", "baseline"));
			wb_puts(b, "</td>");
			break;
		case COL_ENTRY:
			wb_printf(b, "<td data-key=\"%s\">", c->key);
			wb_esc(b, jstr(base, "name", "reference model"));
			wb_puts(b, "</td>");
			break;
		case COL_SPEEDUP:
			wb_printf(b, "<td class=\"num\" data-key=\"speedup\" data-value=\"%.17g\">"
				     "<strong>%.2f\xc3\x97</strong> <span class=\"ci\">by definition</span></td>",
				  jnum(base, "speedup", 1), jnum(base, "speedup", 1));
			break;
		case COL_TECH:
			wb_printf(b, "<td data-key=\"%s\"><ul class=\"chips\"><li class=\"plain\">"
				     "FP32, portable kernels, 1 thread</li></ul></td>", c->key);
			break;
		default:
			wb_printf(b, "<td data-key=\"%s\">%s</td>", c->key,
				  c->kind == COL_RANK ? "<abbr title=\"baseline\">B</abbr>" : "\xe2\x80\x94");
			break;
		}
	}
	wb_puts(b, "</tr></tbody>\n");
}

/* Query-string of the leaderboard page for event, division and all. */
static void lb_href(wb *b, const char *event, const char *division, bool all)
{
	wb_printf(b, "/?event=%s&amp;division=%s%s", event, division, all ? "&amp;all=1" : "");
}

static void web_leaderboard(void *app, const http_request *req, http_reply *rep)
{
	const char *event = http_request_query(req, "event");
	const ev_event *ev = ev_event_find(event ? event : "mlp_sprint");
	if (!ev) {
		page_error(rep, 404, "Not found", "there is no such event; see the tabs above");
		return;
	}
	int status;
	cJSON *j = web_api_get(app, req, "/api/v1/leaderboard/{}", ev->name, &status);
	if (status != 200 || !cJSON_IsObject(j)) {
		page_api_error(rep, status == 200 ? 500 : status, j);
		cJSON_Delete(j);
		return;
	}
	const char *division = jstr(j, "division", "closed");
	bool open = strcmp(division, "open") == 0;
	bool all = cJSON_IsTrue(jget(j, "all_entries"));
	const cJSON *rows = jget(j, "rows");
	double total = jnum(j, "total", 0), limit = jnum(j, "limit", 100), offset = jnum(j, "offset", 0);

	wb b = { 0 };
	page_begin(&b, "Leaderboard", "leaderboard", "leaderboard.js");
	wb_puts(&b, "<h1>Leaderboard</h1>\n<nav class=\"tabs\" aria-label=\"Events\"><ul>");
	for (int i = 0; i < EV_COUNT; i++) {
		const ev_event *e = ev_event_at(i);
		wb_puts(&b, "<li><a href=\"");
		lb_href(&b, e->name, division, all);
		wb_printf(&b, "\"%s>%s</a></li>", e == ev ? " aria-current=\"page\"" : "", e->title);
	}
	wb_puts(&b, "</ul></nav>\n<div class=\"toolbar\">"
		    "<nav class=\"switch\" aria-label=\"Division\"><span class=\"label\">Division:</span>");
	for (int d = 0; d < 2; d++) {
		const char *dn = d ? "open" : "closed";
		wb_puts(&b, "<a href=\"");
		lb_href(&b, ev->name, dn, all);
		wb_printf(&b, "\"%s>%s</a>", (d == 1) == open ? " aria-current=\"page\"" : "",
			  d ? "Open" : "Closed");
	}
	wb_puts(&b, "</nav><nav class=\"switch\" aria-label=\"Entries\"><span class=\"label\">Show:</span>");
	for (int a = 0; a < 2; a++) {
		wb_puts(&b, "<a href=\"");
		lb_href(&b, ev->name, division, a == 1);
		wb_printf(&b, "\"%s>%s</a>", (a == 1) == all ? " aria-current=\"page\"" : "",
			  a ? "All entries" : "Best per team");
	}
	wb_printf(&b, "</nav><a class=\"button\" download href=\"/api/v1/leaderboard/%s?division=%s%s"
		      "&amp;limit=1000&amp;format=csv\">Download CSV</a></div>\n",
		  ev->name, division, all ? "&amp;all=1" : "");

	wb_printf(&b, "<p class=\"lede\"><a href=\"/events/%s\">%s</a>: %s. Ranked by speedup over "
		      "the baseline; quality must reach %.0f%% of the reference (%s division). Only "
		      "valid, gate-passing results are listed.</p>\n",
		  ev->name, ev->title, ev->scenario_text,
		  (open ? ev->open_gate : ev->closed_gate) * 100, division);

	wb_printf(&b, "<div class=\"scroll\" role=\"region\" aria-labelledby=\"board-caption\" "
		      "tabindex=\"0\">\n<table id=\"board\" class=\"board\" data-event=\"%s\" "
		      "data-division=\"%s\" data-all=\"%d\">\n"
		      "<caption id=\"board-caption\">%s, %s division, %s: %.0f ranked "
		      "entr%s</caption>\n",
		  ev->name, division, all ? 1 : 0, ev->title, division,
		  all ? "all entries" : "best entry per team", total, total == 1 ? "y" : "ies");
	lb_header(&b, ev);
	lb_baseline_row(&b, jget(j, "baseline"));
	wb_puts(&b, "<tbody id=\"rows\">\n");
	const cJSON *row;
	cJSON_ArrayForEach(row, rows)
		lb_row(&b, ev, row);
	if (cJSON_GetArraySize(rows) == 0)
		wb_printf(&b, "<tr class=\"empty\"><td colspan=\"%zu\">No ranked entries yet. "
			      "<a href=\"/submit\">Submit one</a>.</td></tr>\n", WEB_NCOLS);
	wb_puts(&b, "</tbody>\n</table>\n</div>\n");
	if (offset > 0 || offset + limit < total) {
		wb_puts(&b, "<nav class=\"pages\" aria-label=\"Pages\">");
		if (offset > 0)
			wb_printf(&b, "<a href=\"/?event=%s&amp;division=%s%s&amp;offset=%.0f\">Previous</a> ",
				  ev->name, division, all ? "&amp;all=1" : "",
				  offset > limit ? offset - limit : 0);
		if (offset + limit < total)
			wb_printf(&b, "<a href=\"/?event=%s&amp;division=%s%s&amp;offset=%.0f\">Next</a>",
				  ev->name, division, all ? "&amp;all=1" : "", offset + limit);
		wb_puts(&b, "</nav>\n");
	}
	wb_printf(&b, "<section class=\"chart-section\" aria-labelledby=\"pareto-h\">\n"
		      "<h2 id=\"pareto-h\">Quality against speed</h2>\n"
		      "<figure><div id=\"pareto\" class=\"chart\" data-src=\"/api/v1/leaderboard/%s?"
		      "division=%s&amp;all=1&amp;limit=1000\" data-quality=\"%s\"></div>\n"
		      "<figcaption>Every ranked entry of the %s division (all entries, not only the "
		      "best per team): speedup across, quality up. The entries no other entry beats "
		      "on both are the Pareto frontier, joined by the line.</figcaption></figure>\n"
		      "<noscript><p class=\"notice\">The chart is drawn by JavaScript; the table "
		      "above holds the same figures.</p></noscript>\n</section>\n",
		  ev->name, division, ev_is_decathlon(ev) ? "points" : "accuracy", division);
	page_end(&b);
	cJSON_Delete(j);
	web_reply(rep, 200, "text/html; charset=utf-8", &b);
}

// ---- event pages (/events/{id}) ----

typedef struct lb_first {
	int64_t ids[5];
	int n;
} lb_first;

static void lb_first_fn(void *arg, const db_lb_row *r)
{
	lb_first *f = arg;
	if (f->n < 5)
		f->ids[f->n++] = r->submission_id;
}

/* The top entries of a division as a short list (names escaped). */
static void event_top(wb *b, srv_app *app, const ev_event *ev, const char *division)
{
	lb_first f = { 0 };
	int64_t total = 0;
	if (db_leaderboard(app->db, ev->name, division, false, 5, 0, lb_first_fn, &f, &total) != DB_OK) {
		wb_puts(b, "<p class=\"notice\">The leaderboard is not available right now.</p>\n");
		return;
	}
	if (f.n == 0) {
		wb_puts(b, "<p>No ranked entries yet.</p>\n");
		return;
	}
	wb_puts(b, "<ol class=\"top\">");
	for (int i = 0; i < f.n; i++) {
		db_submission s;
		if (db_submission_get(app->db, f.ids[i], &s) != DB_OK)
			continue;
		cJSON *res = s.result ? cJSON_Parse(s.result) : NULL;
		wb_printf(b, "<li><a href=\"/submissions/%lld\">", (long long)s.id);
		if (s.name && *s.name)
			wb_esc(b, s.name);
		else
			wb_printf(b, "#%lld", (long long)s.id);
		wb_puts(b, "</a> by <span class=\"team\">");
		wb_esc(b, s.team_name);
		wb_printf(b, "</span>: %.2f\xc3\x97</li>",
			  jnum(jget(res, "speedup"), "value", 0));
		cJSON_Delete(res);
		db_submission_release(&s);
	}
	wb_puts(b, "</ol>\n");
}

/* Baseline figures as measured next to the most recent ranked entry. */
static void event_baseline(wb *b, srv_app *app, const ev_event *ev)
{
	int64_t best = 0;
	db_submission s;
	bool have = false;
	for (int d = 0; d < 2 && !have; d++) {
		lb_first f = { 0 };
		int64_t total = 0;
		if (db_leaderboard(app->db, ev->name, d ? "open" : "closed", true, 5, 0, lb_first_fn,
				   &f, &total) != DB_OK || f.n == 0)
			continue;
		best = f.ids[0];
		for (int i = 1; i < f.n; i++)
			if (f.ids[i] > best)
				best = f.ids[i];
		have = db_submission_get(app->db, best, &s) == DB_OK;
	}
	if (!have) {
		wb_puts(b, "<p>No measurement yet: the baseline is timed inside every submission's "
			   "worker, interleaved with the entry, so its figures appear here with the "
			   "first ranked result.</p>\n");
		return;
	}
	cJSON *res = s.result ? cJSON_Parse(s.result) : NULL;
	char t[64];
	wb_printf(b, "<p>As measured next to <a href=\"/submissions/%lld\">submission %lld</a> on "
		     "this server:</p>\n<dl class=\"facts\">", (long long)s.id, (long long)s.id);
	const cJSON *bl = jget(res, "baseline_latency");
	if (jnum(bl, "p90", 0) > 0) {
		fmt_ns(t, sizeof(t), jnum(bl, "p90", 0));
		wb_printf(b, "<dt>p90 latency</dt><dd>%s per ", t);
		wb_esc(b, jstr(bl, "query", "query"));
		wb_puts(b, "</dd>");
	}
	const cJSON *bt = jget(res, "baseline_throughput");
	if (jnum(bt, "value", 0) > 0) {
		fmt_count(t, sizeof(t), jnum(bt, "value", 0));
		wb_printf(b, "<dt>Throughput</dt><dd>%s ", t);
		wb_esc(b, jstr(bt, "unit", throughput_unit(ev)));
		wb_puts(b, "</dd>");
	}
	const cJSON *q = jget(res, "quality");
	if (cJSON_IsObject(q)) {
		fmt_quality(t, sizeof(t), ev, jnum(q, "reference", 0));
		wb_printf(b, "<dt>Reference quality</dt><dd>%s</dd>", t);
	}
	double bytes = jnum(jget(res, "model"), "baseline_bytes", 0);
	if (bytes > 0) {
		fmt_bytes(t, sizeof(t), bytes);
		wb_printf(b, "<dt>Model size</dt><dd>%s (FP32)</dd>", t);
	}
	wb_puts(b, "</dl>\n");
	cJSON_Delete(res);
	db_submission_release(&s);
}

static void web_event(void *app_, const http_request *req, http_reply *rep)
{
	srv_app *app = app_;
	const ev_event *ev = ev_event_find(req->params[0]);
	if (!ev) {
		char msg[160];
		snprintf(msg, sizeof(msg), "there is no such event (events: %s)", ev_event_names());
		page_error(rep, 404, "Not found", msg);
		return;
	}
	cfg_limits lim;
	cfg_limits_default(&lim);
	wb b = { 0 };
	page_begin(&b, ev->title, ev->name, NULL);
	wb_printf(&b, "<h1>%s</h1>\n<p class=\"lede\">Event id <code>%s</code> \xc2\xb7 "
		      "<a href=\"/?event=%s\">leaderboard</a> \xc2\xb7 "
		      "<a href=\"/submit?event=%s\">submit an entry</a></p>\n",
		  ev->title, ev->name, ev->name, ev->name);
	wb_puts(&b, "<section aria-labelledby=\"task-h\"><h2 id=\"task-h\">The task</h2>\n"
		    "<dl class=\"facts\">");
	wb_printf(&b, "<dt>Data</dt><dd>%s</dd>", ev->dataset);
	wb_printf(&b, "<dt>Reference model</dt><dd>%s, with the project's reference weights "
		      "(trained reproducibly from the data)</dd>", ev->reference);
	wb_printf(&b, "<dt>Scenario</dt><dd>%s</dd>", ev->scenario_text);
	wb_printf(&b, "<dt>Primary metric</dt><dd>%s</dd>", ev->primary_metric);
	wb_printf(&b, "<dt>Quality metric</dt><dd>%s</dd>", ev->quality_metric);
	wb_printf(&b, "<dt>Quality gate</dt><dd>closed division: at least %.0f%% of the reference "
		      "model's quality; open division: at least %.0f%%</dd>",
		  ev->closed_gate * 100, ev->open_gate * 100);
	wb_puts(&b, "<dt>Ranking</dt><dd>speedup over the baseline (higher is better), measured "
		    "by interleaving the entry and the baseline in one worker; ties go to the "
		    "earlier submission. Only finished, valid, gate-passing results are ranked; one "
		    "best entry per team is shown by default.</dd></dl></section>\n");

	wb_puts(&b, "<section aria-labelledby=\"base-h\"><h2 id=\"base-h\">Baseline</h2>\n"
		    "<p>The reference model with the reference weights, FP32, portable C kernels, "
		    "one thread, no cache.</p>\n");
	event_baseline(&b, app, ev);
	wb_puts(&b, "</section>\n");

	wb_puts(&b, "<section aria-labelledby=\"div-h\"><h2 id=\"div-h\">Divisions</h2>\n"
		    "<div class=\"cards\">");
	wb_printf(&b, "<article class=\"card\"><h3>Closed</h3><ul>"
		      "<li>The reference architecture and the reference weights.</li>"
		      "<li>Any of the engine's optimizations: kernels, threads, INT8 quantization, "
		      "pruning%s%s.</li>"
		      "<li>Pruning may fine-tune for at most 3 epochs on the training set.</li>"
		      "<li>Quality must be at least %.0f%% of the reference's.</li></ul></article>",
		  ev->id == EV_TRANSFORMER_DECATHLON ? ", the KV cache" : "",
		  ev->id == EV_CNN_MARATHON ? ", the batch size" : "", ev->closed_gate * 100);
	wb_printf(&b, "<article class=\"card\"><h3>Open</h3><ul>"
		      "<li>Any architecture of the model family within the resource limits, "
		      "trained by the engine with the config's recipe.</li>"
		      "<li>The same optimizations as the closed division.</li>"
		      "<li>Quality must be at least %.0f%% of the reference's.</li>"
		      "<li>Ranked separately from the closed division.</li></ul></article>",
		  ev->open_gate * 100);
	wb_puts(&b, "</div>\n<h3>Resource limits</h3>\n<dl class=\"facts\">");
	wb_printf(&b, "<dt>Parameters</dt><dd>%lld</dd>", (long long)lim.max_params);
	wb_printf(&b, "<dt>FLOPs per inference</dt><dd>%lld</dd>", (long long)lim.max_flops);
	wb_printf(&b, "<dt>Memory (estimate)</dt><dd>%lld MiB</dd>",
		  (long long)(lim.max_memory_bytes >> 20));
	wb_printf(&b, "<dt>Training time (open)</dt><dd>%.0f minutes</dd></dl>\n"
		      "<p>The full config reference is <code>docs/config.md</code>; an example "
		      "config: <a href=\"/api/v1/events/%s/example\">%s example</a>.</p></section>\n",
		  lim.max_train_minutes, ev->name, ev->name);

	wb_puts(&b, "<section aria-labelledby=\"top-h\"><h2 id=\"top-h\">Leading entries</h2>\n"
		    "<h3>Closed division</h3>\n");
	event_top(&b, app, ev, "closed");
	wb_puts(&b, "<h3>Open division</h3>\n");
	event_top(&b, app, ev, "open");
	wb_puts(&b, "</section>\n");
	page_end(&b);
	web_reply(rep, 200, "text/html; charset=utf-8", &b);
}

// ---- example configs (/api/v1/events/{id}/example[s]) ----

static char web_root[PATH_MAX];     /* resolved web directory */
static char examples_root[PATH_MAX]; /* its sibling examples/ */

/* --web-dir, else ./web when it holds our style sheet, else the installed copy; examples/
 * sits next to it (repository and $(SHAREDIR) alike). */
static void web_resolve(const srv_app *app)
{
	if (web_root[0])
		return;
	const char *dir = app->opts->web_dir;
	if (!dir[0])
		dir = access("web/style.css", R_OK) == 0 ? "web" : TM_SHAREDIR "/web";
	char real[PATH_MAX];
	if (!realpath(dir, real))
		snprintf(real, sizeof(real), "%s", dir);
	snprintf(web_root, sizeof(web_root), "%s", real);
	char parent[PATH_MAX];
	snprintf(parent, sizeof(parent), "%s", real);
	char *slash = strrchr(parent, '/');
	if (slash && slash != parent)
		*slash = '\0';
	if (snprintf(examples_root, sizeof(examples_root), "%s/examples", parent) >=
	    (int)sizeof(examples_root))
		examples_root[0] = '\0';
}

/* A whole small file (at most max bytes) as a malloc'd NUL-terminated string. */
static char *read_small_file(const char *path, size_t max, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return NULL;
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > max) {
		close(fd);
		return NULL;
	}
	size_t n = (size_t)st.st_size;
	char *buf = tm_xmalloc(n + 1);
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	buf[got] = '\0';
	*len = got;
	return buf;
}

static int name_cmp(const void *a, const void *b)
{
	const char *x = *(const char *const *)a, *y = *(const char *const *)b;
	/* the baseline first, then alphabetical */
	bool bx = strstr(x, "-baseline.") != NULL, by = strstr(y, "-baseline.") != NULL;
	if (bx != by)
		return bx ? -1 : 1;
	return strcmp(x, y);
}

/* File names EVENT-*.json in examples/, sorted; returns how many (names malloc'd). */
static int examples_list(const ev_event *ev, char **names, int cap)
{
	DIR *dir = examples_root[0] ? opendir(examples_root) : NULL;
	if (!dir)
		return 0;
	int n = 0;
	size_t el = strlen(ev->name);
	struct dirent *de;
	while ((de = readdir(dir)) && n < cap) {
		size_t l = strlen(de->d_name);
		if (l > el + 6 && strncmp(de->d_name, ev->name, el) == 0 && de->d_name[el] == '-' &&
		    strcmp(de->d_name + l - 5, ".json") == 0)
			names[n++] = tm_xstrdup(de->d_name);
	}
	closedir(dir);
	qsort(names, (size_t)n, sizeof(*names), name_cmp);
	return n;
}

/* The built-in example when examples/ is not installed: the baseline-equivalent config. */
static char *example_builtin(const ev_event *ev)
{
	char buf[512];
	snprintf(buf, sizeof(buf),
		 "{\n  \"event\": \"%s\",\n  \"division\": \"closed\",\n  \"name\": \"baseline\",\n"
		 "  \"optimize\": {\n    \"kernels\": \"portable\",\n    \"threads\": 1\n  }%s\n}\n",
		 ev->name, ev->id == EV_CNN_MARATHON ? ",\n  \"batch_size\": 256" : "");
	return tm_xstrdup(buf);
}

/* The examples of ev: names[i] ("baseline", "optimized", ...) and texts[i]; returns n >= 1. */
static int examples_load(const ev_event *ev, char **names, char **texts, int cap)
{
	char *files[WEB_MAX_EXAMPLES];
	int nf = examples_list(ev, files, cap < WEB_MAX_EXAMPLES ? cap : WEB_MAX_EXAMPLES);
	int n = 0;
	for (int i = 0; i < nf; i++) {
		char path[PATH_MAX];
		size_t len;
		char *text = NULL;
		if (snprintf(path, sizeof(path), "%s/%s", examples_root, files[i]) < (int)sizeof(path))
			text = read_small_file(path, CFG_MAX_BYTES, &len);
		if (text) {
			size_t el = strlen(ev->name) + 1, fl = strlen(files[i]);
			names[n] = tm_xmalloc(fl - el - 5 + 1);
			memcpy(names[n], files[i] + el, fl - el - 5);
			names[n][fl - el - 5] = '\0';
			texts[n++] = text;
		}
		free(files[i]);
	}
	if (n == 0) {
		names[0] = tm_xstrdup("baseline");
		texts[0] = example_builtin(ev);
		n = 1;
	}
	return n;
}

static void examples_free(char **names, char **texts, int n)
{
	for (int i = 0; i < n; i++) {
		free(names[i]);
		free(texts[i]);
	}
}

static void web_examples(void *app, const http_request *req, http_reply *rep)
{
	web_resolve(app);
	const ev_event *ev = ev_event_find(req->params[0]);
	if (!ev) {
		http_reply_error(rep, 404, "not_found", "event", "no event '%.40s' (events: %s)",
				 req->params[0], ev_event_names());
		return;
	}
	char *names[WEB_MAX_EXAMPLES], *texts[WEB_MAX_EXAMPLES];
	int n = examples_load(ev, names, texts, WEB_MAX_EXAMPLES);
	cJSON *root = cJSON_CreateObject();
	cJSON_AddStringToObject(root, "event", ev->name);
	cJSON *arr = cJSON_AddArrayToObject(root, "examples");
	for (int i = 0; i < n; i++) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "name", names[i]);
		cJSON_AddStringToObject(o, "config", texts[i]);
		cJSON_AddItemToArray(arr, o);
	}
	examples_free(names, texts, n);
	http_reply_json(rep, 200, cJSON_PrintUnformatted(root));
	cJSON_Delete(root);
}

/* The first example (the baseline) as the config document itself. */
static void web_example(void *app, const http_request *req, http_reply *rep)
{
	web_resolve(app);
	const ev_event *ev = ev_event_find(req->params[0]);
	if (!ev) {
		http_reply_error(rep, 404, "not_found", "event", "no event '%.40s' (events: %s)",
				 req->params[0], ev_event_names());
		return;
	}
	char *names[WEB_MAX_EXAMPLES], *texts[WEB_MAX_EXAMPLES];
	int n = examples_load(ev, names, texts, WEB_MAX_EXAMPLES);
	char *text = texts[0];
	texts[0] = NULL;
	examples_free(names, texts, n);
	http_reply_json(rep, 200, text);
}

// ---- submit (/submit) ----

static void web_submit(void *app, const http_request *req, http_reply *rep)
{
	web_resolve(app);
	const char *event = http_request_query(req, "event");
	const ev_event *ev = ev_event_find(event ? event : "mlp_sprint");
	if (!ev)
		ev = ev_event_at(0);
	char *names[WEB_MAX_EXAMPLES], *texts[WEB_MAX_EXAMPLES];
	int n = examples_load(ev, names, texts, WEB_MAX_EXAMPLES);
	wb b = { 0 };
	page_begin(&b, "Submit an entry", "submit", "submit.js");
	wb_puts(&b, "<h1>Submit an entry</h1>\n"
		    "<p class=\"lede\">Paste or upload a config, validate it, then submit it with "
		    "your team's token. The same config runs locally with <code>tinymlperf-run run "
		    "CONFIG.json</code>.</p>\n"
		    "<form id=\"submit-form\" class=\"form\" method=\"post\" action=\"/api/v1/submissions\" "
		    "enctype=\"multipart/form-data\" novalidate>\n"
		    "<div class=\"field\"><label for=\"token\">Team token</label>"
		    "<input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" "
		    "spellcheck=\"false\" required aria-describedby=\"token-help token-error\">"
		    "<p id=\"token-help\" class=\"help\">The token shown once when your team was "
		    "created (<code>tmlp_...</code>).</p>"
		    "<p id=\"token-error\" class=\"field-error\" hidden></p>"
		    "<label class=\"check\"><input type=\"checkbox\" id=\"remember\"> Remember the "
		    "token in this browser</label></div>\n"
		    "<div class=\"field row\"><div><label for=\"event\">Event</label>"
		    "<select id=\"event\">");
	for (int i = 0; i < EV_COUNT; i++) {
		const ev_event *e = ev_event_at(i);
		wb_printf(&b, "<option value=\"%s\"%s>%s</option>", e->name,
			  e == ev ? " selected" : "", e->title);
	}
	wb_puts(&b, "</select></div><div><label for=\"example\">Example</label>"
		    "<select id=\"example\">");
	for (int i = 0; i < n; i++) {
		wb_puts(&b, "<option value=\"");
		wb_esc(&b, names[i]);
		wb_puts(&b, "\">");
		wb_esc(&b, names[i]);
		wb_puts(&b, "</option>");
	}
	wb_puts(&b, "</select></div><div class=\"end\"><button type=\"button\" id=\"load-example\">"
		    "Load the example</button></div></div>\n"
		    "<div class=\"field\"><label for=\"config\">Config (JSON)</label>"
		    "<div class=\"editor\"><pre id=\"gutter\" class=\"gutter\" aria-hidden=\"true\">"
		    "</pre><textarea id=\"config\" name=\"config\" rows=\"18\" spellcheck=\"false\" "
		    "autocapitalize=\"off\" autocomplete=\"off\" required "
		    "aria-describedby=\"config-help\">");
	wb_esc(&b, texts[0]);
	wb_puts(&b, "</textarea></div><p id=\"config-help\" class=\"help\">Fields and limits: "
		    "<code>docs/config.md</code>. Unknown keys are errors.</p></div>\n"
		    "<div class=\"field\"><label for=\"file\">Or load a file</label>"
		    "<input id=\"file\" name=\"config_file\" type=\"file\" "
		    "accept=\".json,application/json\"></div>\n"
		    "<div class=\"actions\"><button type=\"button\" id=\"validate\">Validate</button>"
		    "<button type=\"submit\" id=\"submit\" class=\"primary\">Submit</button></div>\n"
		    "<div id=\"status\" class=\"status\" role=\"status\" aria-live=\"polite\"></div>\n"
		    "<ul id=\"errors\" class=\"errors\" aria-live=\"polite\"></ul>\n"
		    "</form>\n"
		    "<noscript><p class=\"notice\">Without JavaScript the form still submits (paste the "
		    "config); the API answers with the submission's id and links.</p></noscript>\n");
	examples_free(names, texts, n);
	page_end(&b);
	web_reply(rep, 200, "text/html; charset=utf-8", &b);
}

// ---- submission page (/submissions/{id}) ----

static bool status_terminal(const char *s)
{
	return strcmp(s, "finished") == 0 || strcmp(s, "failed") == 0 || strcmp(s, "cancelled") == 0;
}

static void dl_item(wb *b, const char *term, const char *value)
{
	wb_printf(b, "<dt>%s</dt><dd>", term);
	wb_esc(b, value);
	wb_puts(b, "</dd>");
}

static void sub_result(wb *b, const ev_event *ev, const cJSON *res)
{
	char t[96], u[96], v[96];
	bool valid = cJSON_IsTrue(jget(res, "valid"));
	const cJSON *q = jget(res, "quality");
	bool passed = cJSON_IsTrue(jget(q, "passed"));
	wb_printf(b, "<section id=\"result\" aria-labelledby=\"result-h\" data-valid=\"%d\">\n"
		     "<h2 id=\"result-h\">Result</h2>\n<p class=\"verdict %s\"><strong>%s</strong>",
		  valid ? 1 : 0, valid && passed ? "good" : "bad",
		  !valid ? "INVALID" : passed ? "VALID, ranked" : "VALID, below the quality gate");
	wb_puts(b, "</p>\n");
	const cJSON *reasons = jget(res, "invalid_reasons");
	if (cJSON_GetArraySize(reasons) > 0) {
		wb_puts(b, "<ul class=\"reasons\">");
		const cJSON *it;
		cJSON_ArrayForEach(it, reasons) {
			if (!cJSON_IsString(it))
				continue;
			wb_puts(b, "<li>");
			wb_esc(b, it->valuestring);
			wb_puts(b, "</li>");
		}
		wb_puts(b, "</ul>\n");
	}
	wb_puts(b, "<div class=\"cards\">\n");

	/* quality against its gate */
	double qv = jnum(q, "value", 0), qref = jnum(q, "reference", 0), gate = jnum(q, "gate", 0);
	fmt_quality(t, sizeof(t), ev, qv);
	fmt_quality(u, sizeof(u), ev, qref * gate);
	fmt_quality(v, sizeof(v), ev, qref);
	wb_printf(b, "<article class=\"card\" id=\"card-quality\"><h3>Quality</h3>"
		     "<p class=\"big\" data-value=\"%.17g\">%s</p>"
		     "<p>gate %s (%.0f%% of the reference %s): <strong>%s</strong></p>",
		  qv, t, u, gate * 100, v, passed ? "passed" : "failed");
	if (qref * gate > 0) {
		double hi = fmax(qv, qref) * 1.02;
		wb_printf(b, "<meter min=\"0\" max=\"%.6g\" low=\"%.6g\" optimum=\"%.6g\" value=\"%.6g\" "
			     "aria-label=\"quality against the gate\">%s</meter>",
			  hi, qref * gate, hi, qv, t);
	}
	wb_puts(b, "</article>\n");

	/* speedup */
	const cJSON *sp = jget(res, "speedup");
	wb_printf(b, "<article class=\"card\" id=\"card-speedup\"><h3>Speedup <span class=\"better\" "
		     "title=\"higher is better\">\xe2\x86\x91</span></h3>"
		     "<p class=\"big\" data-value=\"%.17g\">%.2f\xc3\x97</p>"
		     "<p>%.0f%% CI [%.3f, %.3f] over %.0f interleaved pairs</p></article>\n",
		  jnum(sp, "value", 0), jnum(sp, "value", 0), jnum(sp, "level", 0.95) * 100,
		  jnum(sp, "ci_low", 0), jnum(sp, "ci_high", 0), jnum(sp, "pairs", 0));

	/* latency and throughput */
	const cJSON *lat = jget(res, "latency"), *blat = jget(res, "baseline_latency");
	fmt_ns(t, sizeof(t), jnum(lat, "p90", 0));
	fmt_ns(u, sizeof(u), jnum(blat, "p90", 0));
	wb_printf(b, "<article class=\"card\" id=\"card-latency\"><h3>p90 latency <span "
		     "class=\"better\" title=\"lower is better\">\xe2\x86\x93</span></h3>"
		     "<p class=\"big\" data-value=\"%.17g\">%s</p><p>per ", jnum(lat, "p90", 0), t);
	wb_esc(b, jstr(lat, "query", "query"));
	wb_printf(b, "; baseline %s; %.0f queries", u, jnum(lat, "n", 0));
	if (jget(lat, "early_stopping_p90")) {
		fmt_ns(u, sizeof(u), jnum(lat, "early_stopping_p90", 0));
		wb_printf(b, "; early-stopping p90 %s", u);
	}
	const cJSON *tp = jget(res, "throughput");
	fmt_count(t, sizeof(t), jnum(tp, "value", 0));
	wb_printf(b, "</p><p>Throughput %s ", t);
	wb_esc(b, jstr(tp, "unit", throughput_unit(ev)));
	wb_puts(b, "</p></article>\n");

	/* model */
	const cJSON *m = jget(res, "model");
	fmt_bytes(t, sizeof(t), jnum(m, "bytes", 0));
	fmt_bytes(u, sizeof(u), jnum(m, "baseline_bytes", 0));
	wb_printf(b, "<article class=\"card\" id=\"card-model\"><h3>Model</h3>"
		     "<p class=\"big\" data-value=\"%.17g\">%s</p><p>baseline %s; compression "
		     "%.2f\xc3\x97; %.0f parameters, %.0f non-zero; %.0f FLOPs per inference</p>",
		  jnum(m, "bytes", 0), t, u, jnum(m, "compression", 0), jnum(m, "params", 0),
		  jnum(m, "nonzero_params", 0), jnum(m, "flops_per_inference", 0));
	double rss = jnum(jget(res, "memory"), "peak_rss_bytes", 0);
	if (rss > 0) {
		fmt_bytes(t, sizeof(t), rss);
		wb_printf(b, "<p>peak RSS of the worker %s</p>", t);
	}
	wb_puts(b, "</article>\n</div>\n");

	/* charts (drawn by submission.js from the API's JSON) */
	wb_puts(b, "<div class=\"charts\">\n<figure><div id=\"histogram\" class=\"chart\"></div>"
		   "<figcaption>Latency distribution of the entry and of the baseline (per-query "
		   "times, log scale).</figcaption></figure>\n"
		   "<figure><div id=\"profile-chart\" class=\"chart\"></div>"
		   "<figcaption>Time per layer (per-layer profile).</figcaption></figure>\n</div>\n");

	/* per-layer profile as a table too */
	const cJSON *prof = jget(res, "profile");
	if (cJSON_GetArraySize(prof) > 0) {
		wb_puts(b, "<h3>Per-layer profile</h3>\n<div class=\"scroll\" role=\"region\" "
			   "aria-label=\"Per-layer profile\" tabindex=\"0\"><table class=\"plain\">"
			   "<thead><tr><th scope=\"col\">Layer</th><th scope=\"col\">Op</th>"
			   "<th scope=\"col\">Kernel</th><th scope=\"col\">Time</th>"
			   "<th scope=\"col\">FLOPs</th><th scope=\"col\">Bytes</th>"
			   "<th scope=\"col\">GFLOP/s</th><th scope=\"col\">Of peak</th></tr></thead><tbody>");
		const cJSON *l;
		cJSON_ArrayForEach(l, prof) {
			wb_puts(b, "<tr><td>");
			wb_esc(b, jstr(l, "layer", ""));
			wb_puts(b, "</td><td>");
			wb_esc(b, jstr(l, "op", ""));
			wb_puts(b, "</td><td>");
			wb_esc(b, jstr(l, "kernel", ""));
			fmt_ns(t, sizeof(t), jnum(l, "time_ns", 0));
			fmt_count(u, sizeof(u), jnum(l, "flops", 0));
			fmt_bytes(v, sizeof(v), jnum(l, "bytes", 0));
			wb_printf(b, "</td><td class=\"num\">%s</td><td class=\"num\">%s</td>"
				     "<td class=\"num\">%s</td><td class=\"num\">%.2f</td>",
				  t, u, v, jnum(l, "gflops", 0));
			if (cJSON_IsNumber(jget(l, "peak_fraction")))
				wb_printf(b, "<td class=\"num\">%.1f%%</td></tr>",
					  jnum(l, "peak_fraction", 0) * 100);
			else
				wb_puts(b, "<td class=\"num\">&mdash;</td></tr>");
		}
		wb_puts(b, "</tbody></table></div>\n");
	}

	/* stage times */
	const cJSON *st = jget(res, "stages");
	if (cJSON_IsObject(st)) {
		static const struct { const char *key, *label; } stages[] = {
			{ "load_s", "Load" }, { "train_s", "Train" }, { "optimize_s", "Optimize" },
			{ "quality_s", "Quality" }, { "benchmark_s", "Benchmark" }, { "total_s", "Total" },
		};
		wb_puts(b, "<h3>Stage times</h3>\n<dl class=\"facts stages\">");
		for (size_t i = 0; i < sizeof(stages) / sizeof(stages[0]); i++)
			if (cJSON_IsNumber(jget(st, stages[i].key)))
				wb_printf(b, "<dt>%s</dt><dd>%.2f s</dd>", stages[i].label,
					  jnum(st, stages[i].key, 0));
		wb_puts(b, "</dl>\n");
	}

	/* environment */
	const cJSON *env = jget(res, "environment");
	if (cJSON_IsObject(env)) {
		wb_puts(b, "<h3>Environment</h3>\n<dl class=\"facts\">");
		const cJSON *it;
		cJSON_ArrayForEach(it, env) {
			char key[64];
			snprintf(key, sizeof(key), "%s", it->string);
			for (char *k = key; *k; k++)
				*k = *k == '_' ? ' ' : *k;
			wb_puts(b, "<dt>");
			wb_esc(b, key);
			wb_puts(b, "</dt><dd>");
			if (cJSON_IsString(it)) {
				wb_esc(b, it->valuestring);
			} else if (cJSON_IsNumber(it)) {
				wb_printf(b, "%g", it->valuedouble);
			} else if (cJSON_IsArray(it)) {
				const cJSON *x;
				bool first = true;
				cJSON_ArrayForEach(x, it) {
					if (!first)
						wb_puts(b, " ");
					first = false;
					if (cJSON_IsString(x))
						wb_esc(b, x->valuestring);
					else if (cJSON_IsNumber(x))
						wb_printf(b, "%g", x->valuedouble);
				}
			} else if (cJSON_IsBool(it)) {
				wb_puts(b, cJSON_IsTrue(it) ? "yes" : "no");
			}
			wb_puts(b, "</dd>");
		}
		wb_puts(b, "</dl>\n");
	}
	wb_puts(b, "</section>\n");
}

static void web_submission(void *app, const http_request *req, http_reply *rep)
{
	int status;
	cJSON *j = web_api_get(app, req, "/api/v1/submissions/{}", req->params[0], &status);
	if (status != 200 || !cJSON_IsObject(j)) {
		if (status == 404)
			page_error(rep, 404, "Not found", "there is no such submission");
		else
			page_api_error(rep, status == 200 ? 500 : status, j);
		cJSON_Delete(j);
		return;
	}
	int64_t id = (int64_t)jnum(j, "id", 0);
	const char *name = jstr(j, "name", "");
	const char *st = jstr(j, "status", "queued");
	const ev_event *ev = ev_event_find(jstr(j, "event", ""));
	if (!ev)
		ev = ev_event_at(0);
	char title[96];
	snprintf(title, sizeof(title), "Submission %lld", (long long)id);
	wb b = { 0 };
	page_begin(&b, title, NULL, "submission.js");
	wb_printf(&b, "<div id=\"sub\" data-id=\"%lld\" data-status=\"%s\" data-event=\"%s\">\n",
		  (long long)id, st, ev->name);
	wb_printf(&b, "<h1>Submission %lld: <span class=\"entry-name\">", (long long)id);
	if (*name)
		wb_esc(&b, name);
	else
		wb_puts(&b, "(unnamed)");
	wb_puts(&b, "</span></h1>\n<section id=\"summary\" aria-label=\"Summary\"><dl class=\"facts\">");
	dl_item(&b, "Team", jstr(j, "team", ""));
	wb_printf(&b, "<dt>Event</dt><dd><a href=\"/events/%s\">%s</a></dd>", ev->name, ev->title);
	dl_item(&b, "Division", jstr(j, "division", ""));
	wb_printf(&b, "<dt>Status</dt><dd><span id=\"status-badge\" class=\"badge %s\">%s</span>"
		      "</dd>", st, st);
	dl_item(&b, "Submitted", jstr(j, "created_at", ""));
	if (*jstr(j, "started_at", ""))
		dl_item(&b, "Started", jstr(j, "started_at", ""));
	if (*jstr(j, "finished_at", ""))
		dl_item(&b, "Finished", jstr(j, "finished_at", ""));
	wb_printf(&b, "<dt>Attempts</dt><dd>%.0f</dd>", jnum(j, "attempts", 0));
	if (cJSON_IsString(jget(j, "error")))
		dl_item(&b, "Error", jstr(j, "error", ""));
	wb_puts(&b, "</dl></section>\n");

	if (!status_terminal(st))
		wb_puts(&b, "<section id=\"live\" aria-labelledby=\"live-h\"><h2 id=\"live-h\">"
			    "Progress</h2>\n<p><label for=\"progress\" id=\"stage\">Waiting for a "
			    "worker</label></p>\n<progress id=\"progress\" max=\"100\" value=\"0\">"
			    "0%</progress>\n<p id=\"progress-message\" class=\"help\" role=\"status\" "
			    "aria-live=\"polite\"></p>\n<ol id=\"stages\" class=\"stages\"></ol>\n"
			    "<noscript><p class=\"notice\">Reload the page to see the progress."
			    "</p></noscript>\n</section>\n");

	const cJSON *res = jget(j, "result");
	if (cJSON_IsObject(res))
		sub_result(&b, ev, res);

	wb_puts(&b, "<section id=\"config-section\" aria-labelledby=\"config-h\"><h2 id=\"config-h\">"
		    "Config</h2>\n");
	const cJSON *cfg = jget(j, "config");
	if (cJSON_IsObject(cfg)) {
		char *text = cJSON_Print(cfg);
		wb_puts(&b, "<pre id=\"config\" class=\"code\">");
		wb_esc(&b, text ? text : "");
		wb_puts(&b, "</pre>\n");
		free(text);
	} else {
		wb_puts(&b, "<p id=\"config-hidden\">The config is visible to its team (with a "
			    "remembered token) and to the organisers.</p>\n"
			    "<pre id=\"config\" class=\"code\" hidden></pre>\n");
	}
	wb_printf(&b, "<p class=\"help\">SHA-256 <code>%.64s</code></p></section>\n</div>\n",
		  jstr(j, "config_sha256", ""));
	page_end(&b);
	cJSON_Delete(j);
	web_reply(rep, 200, "text/html; charset=utf-8", &b);
}

// ---- raw timings (/api/v1/submissions/{id}/timings) ----

static void timing_add(void *arg, int64_t ns)
{
	cJSON_AddItemToArray(arg, cJSON_CreateNumber((double)ns));
}

/* The stored per-query nanoseconds of the entry and its baseline, for the histogram:
 * {"submission": [ns, ...], "baseline": [ns, ...]}. */
static void web_timings(void *app_, const http_request *req, http_reply *rep)
{
	srv_app *app = app_;
	char *end;
	errno = 0;
	long long id = strtoll(req->params[0], &end, 10);
	db_submission s;
	int rc = DB_NOTFOUND;
	if (!errno && *end == '\0' && id > 0 && req->params[0][0] != '+')
		rc = db_submission_get(app->db, id, &s);
	if (rc == DB_NOTFOUND) {
		http_reply_error(rep, 404, "not_found", "id", "no submission '%.40s'", req->params[0]);
		return;
	}
	if (rc != DB_OK) {
		http_reply_error(rep, 503, "unavailable", NULL, "the database is busy, try again");
		return;
	}
	db_submission_release(&s);
	cJSON *root = cJSON_CreateObject();
	static const char *const series[] = { "submission", "baseline" };
	for (int i = 0; i < 2 && rc == DB_OK; i++)
		rc = db_timings(app->db, id, series[i], timing_add,
				cJSON_AddArrayToObject(root, series[i]));
	if (rc != DB_OK)
		http_reply_error(rep, 503, "unavailable", NULL, "the database is busy, try again");
	else
		http_reply_json(rep, 200, cJSON_PrintUnformatted(root));
	cJSON_Delete(root);
}

// ---- static files (/static/{name}) ----

static const struct { const char *ext, *type; } web_types[] = {
	{ ".css", "text/css; charset=utf-8" },
	{ ".js", "text/javascript; charset=utf-8" },
	{ ".svg", "image/svg+xml" },
	{ ".png", "image/png" },
	{ ".ico", "image/x-icon" },
	{ ".json", "application/json" },
	{ ".txt", "text/plain; charset=utf-8" },
	{ ".md", "text/plain; charset=utf-8" },
};

/* A file name we serve: [A-Za-z0-9_.-], not starting with a dot, at most 64 bytes. */
static bool static_name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 64 || s[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.'))
			return false;
	}
	return strstr(s, "..") == NULL;
}

static void web_static(void *app, const http_request *req, http_reply *rep)
{
	web_resolve(app);
	const char *name = req->params[0];
	const char *type = NULL;
	if (static_name_ok(name)) {
		size_t n = strlen(name);
		for (size_t i = 0; i < sizeof(web_types) / sizeof(web_types[0]); i++) {
			size_t el = strlen(web_types[i].ext);
			if (n > el && strcmp(name + n - el, web_types[i].ext) == 0)
				type = web_types[i].type;
		}
	}
	char path[PATH_MAX];
	size_t len = 0;
	char *data = NULL;
	if (type && snprintf(path, sizeof(path), "%s/%s", web_root, name) < (int)sizeof(path))
		data = read_small_file(path, WEB_STATIC_MAX, &len);
	if (!data) {
		free(rep->body);
		rep->status = 404;
		rep->content_type = "text/plain; charset=utf-8";
		rep->body = tm_xstrdup("not found\n");
		rep->len = strlen(rep->body);
		return;
	}
	free(rep->body);
	rep->status = 200;
	rep->content_type = type;
	rep->body = data;
	rep->len = len;
}

// ---- route table ----

const http_route web_routes[] = {
	{ "GET", "/", web_leaderboard },
	{ "GET", "/events/{}", web_event },
	{ "GET", "/submit", web_submit },
	{ "GET", "/submissions/{}", web_submission },
	{ "GET", "/static/{}", web_static },
	{ "GET", "/api/v1/events/{}/examples", web_examples },
	{ "GET", "/api/v1/events/{}/example", web_example },
	{ "GET", "/api/v1/submissions/{}/timings", web_timings },
};
const size_t web_n_routes = sizeof(web_routes) / sizeof(web_routes[0]);
