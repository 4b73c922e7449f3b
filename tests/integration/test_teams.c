/* test_teams.c: integration suite for teams and tokens against the real daemon: the admin
 * creates a team and gets its token once, the token authenticates, bad bodies and bad tokens
 * are 4xx JSON errors that write nothing, hostile names are stored verbatim. */
#include "tests.h"

#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ADMIN "admin-secret-for-tests-0123456789"

typedef struct fixture {
	tt_daemon d;
	char auth[128];
} fixture;

static void start(fixture *f, bool open_registration)
{
	const char *args[] = { open_registration ? "--open-registration" : NULL, NULL };
	ck_assert_int_eq(tt_daemon_start_admin(&f->d, ADMIN, args), 0);
	snprintf(f->auth, sizeof(f->auth), "Authorization: Bearer %s\r\n", ADMIN);
}

static void stop(fixture *f)
{
	ck_assert_int_eq(tt_daemon_stop(&f->d, SIGTERM), 0);
}

/* POST a body; returns the status and the parsed JSON reply (caller deletes). */
static int post(fixture *f, const char *headers, const char *body, cJSON **out)
{
	char *reply;
	int st = tt_http(f->d.port, "POST", "/api/v1/teams", headers, body, strlen(body), &reply);
	*out = cJSON_Parse(reply);
	free(reply);
	return st;
}

static const char *error_field(cJSON *j)
{
	cJSON *e = cJSON_GetObjectItem(j, "error");
	cJSON *fld = cJSON_GetObjectItem(e, "field");
	return cJSON_IsString(fld) ? fld->valuestring : "";
}

START_TEST(test_admin_creates_team_and_token_works)
{
	fixture f;
	start(&f, false);
	cJSON *j;
	const char *hostile = "Robert'); DROP TABLE teams;-- <script>alert(1)</script>";
	char body[256];
	snprintf(body, sizeof(body), "{\"name\": \"Robert'); DROP TABLE teams;-- <script>alert(1)</script>\"}");
	ck_assert_int_eq(post(&f, f.auth, body, &j), 201);
	ck_assert_str_eq(cJSON_GetObjectItem(j, "name")->valuestring, hostile);
	const char *token = cJSON_GetObjectItem(j, "token")->valuestring;
	ck_assert_int_eq(strlen(token), 5 + 64);
	ck_assert(strncmp(token, "tmlp_", 5) == 0);
	char team_auth[128];
	snprintf(team_auth, sizeof(team_auth), "Authorization: Bearer %s\r\n", token);
	cJSON_Delete(j);

	/* The team's token authenticates (a team is not admin: 403, not 401). */
	ck_assert_int_eq(post(&f, team_auth, "{\"name\":\"other\"}", &j), 403);
	cJSON_Delete(j);
	/* Same name again: 409. */
	ck_assert_int_eq(post(&f, f.auth, body, &j), 409);
	ck_assert_str_eq(error_field(j), "name");
	cJSON_Delete(j);
	stop(&f);
}
END_TEST

START_TEST(test_bad_requests_are_4xx_and_write_nothing)
{
	fixture f;
	start(&f, false);
	cJSON *j;
	static const struct {
		const char *headers;  /* NULL: the admin's */
		const char *body;
		int status;
		const char *field;
	} cases[] = {
		{ "", "{\"name\":\"x\"}", 401, "Authorization" },
		{ "Authorization: Bearer wrong-token\r\n", "{\"name\":\"x\"}", 401, "Authorization" },
		{ "Authorization: Basic abc\r\n", "{\"name\":\"x\"}", 401, "Authorization" },
		{ NULL, "{\"name\":", 400, "" },
		{ NULL, "[1,2]", 400, "" },
		{ NULL, "{\"name\": 42}", 400, "name" },
		{ NULL, "{\"name\": \"\"}", 400, "name" },
		{ NULL, "{\"name\": \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}", 400, "name" },
		{ NULL, "{\"name\": \"tab\\there\"}", 400, "name" },
		{ NULL, "{\"name\": \"ok\", \"admin\": true}", 400, "admin" },
		{ NULL, "{}", 400, "name" },
		{ NULL, "{\"name\": \"\xc3\x28\"}", 400, "" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int st = post(&f, cases[i].headers ? cases[i].headers : f.auth, cases[i].body, &j);
		if (st != cases[i].status || strcmp(error_field(j), cases[i].field) != 0)
			ck_abort_msg("case %zu (%s): status %d field '%s', want %d '%s'", i,
				     cases[i].body, st, error_field(j), cases[i].status, cases[i].field);
		ck_assert_ptr_nonnull(cJSON_GetObjectItem(j, "error"));
		cJSON_Delete(j);
	}
	/* Nothing was written: the first valid team gets id 1. */
	ck_assert_int_eq(post(&f, f.auth, "{\"name\":\"first\"}", &j), 201);
	ck_assert_int_eq(cJSON_GetObjectItem(j, "id")->valueint, 1);
	cJSON_Delete(j);
	stop(&f);
}
END_TEST

START_TEST(test_open_registration)
{
	fixture f;
	start(&f, true);
	cJSON *j;
	ck_assert_int_eq(post(&f, "", "{\"name\":\"class-team\"}", &j), 201);
	cJSON_Delete(j);
	stop(&f);
}
END_TEST

Suite *teams_suite(void)
{
	Suite *s = suite_create("teams");
	TCase *tc = tcase_create("api");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_admin_creates_team_and_token_works);
	tcase_add_test(tc, test_bad_requests_are_4xx_and_write_nothing);
	tcase_add_test(tc, test_open_registration);
	suite_add_tcase(s, tc);
	return s;
}
