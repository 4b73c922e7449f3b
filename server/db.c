/* db.c: the SQLite store.  Opening applies WAL, foreign keys, a busy timeout and every migration
 * whose number is above PRAGMA user_version, each in its own transaction.  Migration 1 is
 * schema.sql (embedded at build time by schema.S). */
#include "server.h"
#include "events.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern const char db_schema_sql[];

/* Every statement the daemon runs, prepared once on first use and kept (prepared statements
 * only: no SQL is ever built from request data). */
enum db_stmt_id {
	ST_TEAM_INSERT,
	ST_TEAM_BY_TOKEN,
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_SUB_COUNT_ACTIVE,
	ST_SUB_COUNT_DAY,
	ST_SUB_INSERT,
	ST_SUB_GET,
	ST_SUB_CANCEL,
	ST_LB_ROWS,
	ST_LB_COUNT,
	ST_JOB_NEXT,
	ST_JOB_START,
	ST_REQUEUE_FAIL,
	ST_REQUEUE_ALL,
	ST_JOB_REQUEUE,
	ST_JOB_FAIL,
	ST_RESULT_INSERT,
	ST_TIMING_INSERT,
	ST_JOB_DONE,
	ST_PROGRESS_INSERT,
	ST_PROGRESS_LIST,
	ST_STATUS_COUNTS,
	ST_TIMINGS,
	ST_COUNT
};

static const char *const db_stmt_sql[ST_COUNT] = {
	[ST_TEAM_INSERT] = "INSERT INTO teams(name, token_hash) VALUES (?1, ?2)",
	[ST_TEAM_BY_TOKEN] = "SELECT id, name, is_admin FROM teams WHERE token_hash = ?1",
	[ST_BEGIN] = "BEGIN IMMEDIATE",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
	[ST_SUB_COUNT_ACTIVE] = "SELECT count(*) FROM submissions WHERE team_id = ?1 "
				"AND status IN ('queued', 'running')",
	[ST_SUB_COUNT_DAY] = "SELECT count(*) FROM submissions WHERE team_id = ?1 "
			     "AND created_at >= strftime('%Y-%m-%dT00:00:00', 'now') "
			     "AND status NOT IN ('failed', 'cancelled')",
	[ST_SUB_INSERT] = "INSERT INTO submissions(team_id, event, division, name, config, config_sha256) "
			  "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
	[ST_SUB_GET] = "SELECT s.id, s.team_id, t.name, s.event, s.division, s.name, s.config, "
		       "s.config_sha256, s.status, s.error, s.attempts, s.created_at, "
		       "coalesce(s.started_at, ''), coalesce(s.finished_at, ''), r.result "
		       "FROM submissions s JOIN teams t ON t.id = s.team_id "
		       "LEFT JOIN results r ON r.submission_id = s.id WHERE s.id = ?1",
	/* ?1 event, ?2 division, ?3 all entries (1) or the best per team (0), ?4 limit, ?5 offset.
	 * The best entry per team is its highest speedup, ties to the earlier submission. */
	[ST_LB_ROWS] = "WITH ranked AS (SELECT s.id, s.team_id, t.name AS team, s.name, r.speedup, "
		       "r.speedup_ci_low, r.speedup_ci_high, r.quality, r.latency_p90_ns, r.throughput, "
		       "r.model_bytes, r.compression, s.created_at, s.config, "
		       "row_number() OVER (PARTITION BY s.team_id ORDER BY r.speedup DESC, s.id) AS nth "
		       "FROM results r JOIN submissions s ON s.id = r.submission_id "
		       "JOIN teams t ON t.id = s.team_id "
		       "WHERE r.event = ?1 AND r.division = ?2 AND r.valid = 1 AND r.gate_passed = 1 "
		       "AND s.status = 'finished') "
		       "SELECT id, team, name, speedup, speedup_ci_low, speedup_ci_high, quality, "
		       "coalesce(latency_p90_ns, 0), coalesce(throughput, 0), coalesce(model_bytes, 0), "
		       "coalesce(compression, 1), created_at, config FROM ranked "
		       "WHERE ?3 = 1 OR nth = 1 ORDER BY speedup DESC, id LIMIT ?4 OFFSET ?5",
	[ST_LB_COUNT] = "SELECT count(*) FROM (SELECT s.team_id, "
			"row_number() OVER (PARTITION BY s.team_id ORDER BY r.speedup DESC, s.id) AS nth "
			"FROM results r JOIN submissions s ON s.id = r.submission_id "
			"WHERE r.event = ?1 AND r.division = ?2 AND r.valid = 1 AND r.gate_passed = 1 "
			"AND s.status = 'finished') WHERE ?3 = 1 OR nth = 1",
	[ST_SUB_CANCEL] = "UPDATE submissions SET status = 'cancelled', "
			  "finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
			  "WHERE id = ?1 AND status IN ('queued', 'running')",
	/* ?1..?3 the events whose reference exists (NULL otherwise), ?4 the team served last:
	 * the next team above it (wrapping around), its oldest submission. */
	/* (one parameter per event: EV_COUNT is 3) */
	[ST_JOB_NEXT] = "SELECT id, team_id, event, division, config, attempts FROM submissions "
			"WHERE status = 'queued' AND event IN (?1, ?2, ?3) "
			"ORDER BY team_id <= ?4, team_id, id LIMIT 1",
	[ST_JOB_START] = "UPDATE submissions SET status = 'running', attempts = attempts + 1, "
			 "worker_slot = ?2, error = NULL, "
			 "started_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
			 "WHERE id = ?1 AND status = 'queued'",
	[ST_REQUEUE_FAIL] = "UPDATE submissions SET status = 'failed', "
			    "error = printf('interrupted while running %d times (daemon stopped or "
			    "killed); giving up', attempts), "
			    "finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
			    "WHERE status = 'running' AND attempts >= ?1",
	[ST_REQUEUE_ALL] = "UPDATE submissions SET status = 'queued', worker_slot = NULL "
			   "WHERE status = 'running'",
	[ST_JOB_REQUEUE] = "UPDATE submissions SET status = 'queued', worker_slot = NULL, "
			   "attempts = max(attempts - 1, 0) WHERE id = ?1 AND status = 'running'",
	[ST_JOB_FAIL] = "UPDATE submissions SET status = 'failed', error = ?2, "
			"finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
			"WHERE id = ?1 AND status = 'running'",
	[ST_RESULT_INSERT] = "INSERT INTO results(submission_id, event, division, valid, gate_passed, "
			     "speedup, speedup_ci_low, speedup_ci_high, quality, latency_p90_ns, "
			     "throughput, model_bytes, compression, result) "
			     "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
	[ST_TIMING_INSERT] = "INSERT INTO timings(submission_id, series, seq, ns) "
			     "VALUES (?1, ?2, ?3, ?4)",
	[ST_JOB_DONE] = "UPDATE submissions SET status = 'finished', "
			"finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
			"WHERE id = ?1 AND status = 'running'",
	[ST_PROGRESS_INSERT] = "INSERT OR REPLACE INTO progress(submission_id, seq, line) "
			       "VALUES (?1, ?2, ?3)",
	[ST_PROGRESS_LIST] = "SELECT seq, line FROM progress WHERE submission_id = ?1 AND seq > ?2 "
			     "ORDER BY seq",
	[ST_STATUS_COUNTS] = "SELECT status, count(*) FROM submissions GROUP BY status",
	[ST_TIMINGS] = "SELECT ns FROM timings WHERE submission_id = ?1 AND series = ?2 ORDER BY seq",
};

struct db {
	sqlite3 *h;
	sqlite3_stmt *st[ST_COUNT];
};

/* Migration i (1-based) brings the database to user_version i. */
static const char *db_migration(int i)
{
	switch (i) {
	case 1:
		return db_schema_sql;
	case 2:
		/* The daily quota counts a team's submissions of the day by status: cover it. */
		return "DROP INDEX submissions_team_day;"
		       "CREATE INDEX submissions_team_day ON submissions(team_id, created_at, status);";
	}
	return NULL;
}

int db_migration_count(void)
{
	int n = 0;
	while (db_migration(n + 1))
		n++;
	return n;
}

static int db_map(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_DONE:
	case SQLITE_ROW:
		return DB_OK;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return DB_BUSY;
	case SQLITE_FULL:
		return DB_FULL;
	case SQLITE_CONSTRAINT:
		return rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY
			       ? DB_CONFLICT : DB_ERROR;
	}
	return DB_ERROR;
}

static int db_exec(db *d, const char *sql, char *err, size_t errlen)
{
	char *msg = NULL;
	int rc = sqlite3_exec(d->h, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "db: %s", msg ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
	}
	return db_map(rc);
}

int db_schema_version(db *d)
{
	sqlite3_stmt *st;
	int v = -1;
	if (sqlite3_prepare_v2(d->h, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
		return -1;
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

static int db_migrate(db *d, char *err, size_t errlen)
{
	int have = db_schema_version(d);
	int want = db_migration_count();
	if (have < 0) {
		snprintf(err, errlen, "db: cannot read user_version: %s", sqlite3_errmsg(d->h));
		return DB_ERROR;
	}
	if (have > want) {
		snprintf(err, errlen, "db: schema version %d is newer than this daemon's %d", have, want);
		return DB_ERROR;
	}
	for (int v = have + 1; v <= want; v++) {
		int rc = db_exec(d, "BEGIN IMMEDIATE", err, errlen);
		if (rc == DB_OK)
			rc = db_exec(d, db_migration(v), err, errlen);
		if (rc == DB_OK) {
			char sql[64];
			snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", v);
			rc = db_exec(d, sql, err, errlen);
		}
		if (rc == DB_OK)
			rc = db_exec(d, "COMMIT", err, errlen);
		if (rc != DB_OK) {
			char ignored[64];
			db_exec(d, "ROLLBACK", ignored, sizeof(ignored));
			size_t n = strlen(err);
			snprintf(err + n, errlen - n, " (migration %d)", v);
			return rc;
		}
	}
	return DB_OK;
}

int db_open(db **out, const char *path, char *err, size_t errlen)
{
	*out = NULL;
	db *d = calloc(1, sizeof(*d));
	if (!d) {
		snprintf(err, errlen, "db: out of memory");
		return DB_ERROR;
	}
	int rc = sqlite3_open_v2(path, &d->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				 SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "db: cannot open '%s': %s", path,
			 d->h ? sqlite3_errmsg(d->h) : sqlite3_errstr(rc));
		goto fail;
	}
	sqlite3_busy_timeout(d->h, 2000);
	rc = db_exec(d, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
		     "PRAGMA foreign_keys = ON;", err, errlen);
	if (rc != DB_OK)
		goto fail;
	rc = db_migrate(d, err, errlen);
	if (rc != DB_OK)
		goto fail;
	*out = d;
	return DB_OK;
fail:
	sqlite3_close(d->h);
	free(d);
	return rc == DB_OK ? DB_ERROR : rc;
}

void db_close(db *d)
{
	if (!d)
		return;
	for (int i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(d->st[i]);
	sqlite3_close(d->h);
	free(d);
}

int db_table_count(db *d, const char *table, long *count)
{
	static const char *const known[] = { "teams", "submissions", "progress", "results", "timings" };
	const char *sql = NULL;
	char buf[96];
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		if (strcmp(table, known[i]) == 0) {
			snprintf(buf, sizeof(buf), "SELECT count(*) FROM %s", known[i]);
			sql = buf;
		}
	}
	if (!sql)
		return DB_NOTFOUND;
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(d->h, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return db_map(rc);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*count = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? DB_OK : db_map(rc);
}

const char *db_errmsg(db *d)
{
	return sqlite3_errmsg(d->h);
}

/* The statement, reset and with bindings cleared, or NULL (the error is in db_errmsg). */
static sqlite3_stmt *db_stmt(db *d, enum db_stmt_id id)
{
	if (!d->st[id] &&
	    sqlite3_prepare_v3(d->h, db_stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &d->st[id],
			       NULL) != SQLITE_OK)
		return NULL;
	sqlite3_reset(d->st[id]);
	sqlite3_clear_bindings(d->st[id]);
	return d->st[id];
}

// ---- teams ----

int db_team_create(db *d, const char *name, const uint8_t token_hash[32], int64_t *id)
{
	sqlite3_stmt *st = db_stmt(d, ST_TEAM_INSERT);
	if (!st)
		return DB_ERROR;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
	sqlite3_bind_blob(st, 2, token_hash, 32, SQLITE_TRANSIENT);
	int rc = sqlite3_step(st);
	if (rc != SQLITE_DONE) {
		rc = sqlite3_extended_errcode(d->h);
		sqlite3_reset(st);
		return db_map(rc);
	}
	*id = sqlite3_last_insert_rowid(d->h);
	sqlite3_reset(st);
	return DB_OK;
}

int db_team_by_token(db *d, const uint8_t token_hash[32], db_team *out)
{
	sqlite3_stmt *st = db_stmt(d, ST_TEAM_BY_TOKEN);
	if (!st)
		return DB_ERROR;
	sqlite3_bind_blob(st, 1, token_hash, 32, SQLITE_TRANSIENT);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		out->id = sqlite3_column_int64(st, 0);
		snprintf(out->name, sizeof(out->name), "%s", (const char *)sqlite3_column_text(st, 1));
		out->is_admin = sqlite3_column_int(st, 2) != 0;
		sqlite3_reset(st);
		return DB_OK;
	}
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? DB_NOTFOUND : db_map(rc);
}

// ---- submissions ----

/* Run a statement that returns one integer. */
static int db_scalar(db *d, enum db_stmt_id id, int64_t arg, int64_t *out)
{
	sqlite3_stmt *st = db_stmt(d, id);
	if (!st)
		return DB_ERROR;
	sqlite3_bind_int64(st, 1, arg);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*out = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	return rc == SQLITE_ROW ? DB_OK : db_map(rc);
}

static int db_step_done(db *d, enum db_stmt_id id)
{
	sqlite3_stmt *st = db_stmt(d, id);
	if (!st)
		return DB_ERROR;
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? DB_OK : db_map(rc);
}

static long seconds_to_utc_midnight(void)
{
	time_t now = time(NULL);
	return 86400 - (long)(now % 86400);
}

int db_submission_create(db *d, int64_t team_id, const char *event, const char *division,
			 const char *name, const char *config, const char *config_sha256,
			 const db_quota *q, int64_t *id, db_quota_hit *hit)
{
	int rc = db_step_done(d, ST_BEGIN);
	if (rc != DB_OK)
		return rc;
	int64_t active = 0, today = 0;
	rc = db_scalar(d, ST_SUB_COUNT_ACTIVE, team_id, &active);
	if (rc == DB_OK)
		rc = db_scalar(d, ST_SUB_COUNT_DAY, team_id, &today);
	if (rc == DB_OK && active >= q->max_queued) {
		*hit = (db_quota_hit){ "queued", q->max_queued, 60 };
		rc = DB_QUOTA;
	} else if (rc == DB_OK && today >= q->max_per_day) {
		*hit = (db_quota_hit){ "daily", q->max_per_day, seconds_to_utc_midnight() };
		rc = DB_QUOTA;
	}
	if (rc == DB_OK) {
		sqlite3_stmt *st = db_stmt(d, ST_SUB_INSERT);
		if (!st) {
			rc = DB_ERROR;
		} else {
			sqlite3_bind_int64(st, 1, team_id);
			sqlite3_bind_text(st, 2, event, -1, SQLITE_TRANSIENT);
			sqlite3_bind_text(st, 3, division, -1, SQLITE_TRANSIENT);
			sqlite3_bind_text(st, 4, name, -1, SQLITE_TRANSIENT);
			sqlite3_bind_text(st, 5, config, -1, SQLITE_TRANSIENT);
			sqlite3_bind_text(st, 6, config_sha256, -1, SQLITE_TRANSIENT);
			int s = sqlite3_step(st);
			rc = s == SQLITE_DONE ? DB_OK : db_map(sqlite3_extended_errcode(d->h));
			sqlite3_reset(st);
			*id = sqlite3_last_insert_rowid(d->h);
		}
	}
	if (rc == DB_OK)
		rc = db_step_done(d, ST_COMMIT);
	if (rc != DB_OK)
		db_step_done(d, ST_ROLLBACK);
	return rc;
}

static char *col_dup(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	return t ? strdup((const char *)t) : NULL;
}

static void col_copy(sqlite3_stmt *st, int i, char *dst, size_t len)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	snprintf(dst, len, "%s", t ? (const char *)t : "");
}

int db_submission_get(db *d, int64_t id, db_submission *out)
{
	memset(out, 0, sizeof(*out));
	sqlite3_stmt *st = db_stmt(d, ST_SUB_GET);
	if (!st)
		return DB_ERROR;
	sqlite3_bind_int64(st, 1, id);
	int rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(st);
		return rc == SQLITE_DONE ? DB_NOTFOUND : db_map(rc);
	}
	out->id = sqlite3_column_int64(st, 0);
	out->team_id = sqlite3_column_int64(st, 1);
	col_copy(st, 2, out->team_name, sizeof(out->team_name));
	col_copy(st, 3, out->event, sizeof(out->event));
	col_copy(st, 4, out->division, sizeof(out->division));
	out->name = col_dup(st, 5);
	out->config = col_dup(st, 6);
	col_copy(st, 7, out->config_sha256, sizeof(out->config_sha256));
	col_copy(st, 8, out->status, sizeof(out->status));
	out->error = col_dup(st, 9);
	out->attempts = sqlite3_column_int(st, 10);
	col_copy(st, 11, out->created_at, sizeof(out->created_at));
	col_copy(st, 12, out->started_at, sizeof(out->started_at));
	col_copy(st, 13, out->finished_at, sizeof(out->finished_at));
	out->result = col_dup(st, 14);
	sqlite3_reset(st);
	if (!out->name || !out->config) {
		db_submission_release(out);
		return DB_ERROR;
	}
	return DB_OK;
}

void db_submission_release(db_submission *s)
{
	free(s->name);
	free(s->config);
	free(s->error);
	free(s->result);
	memset(s, 0, sizeof(*s));
}

int db_submission_cancel(db *d, int64_t id, int64_t team_id, bool admin)
{
	db_submission s;
	int rc = db_submission_get(d, id, &s);
	if (rc != DB_OK)
		return rc;
	bool mine = s.team_id == team_id;
	db_submission_release(&s);
	if (!mine && !admin)
		return DB_FORBIDDEN;
	sqlite3_stmt *st = db_stmt(d, ST_SUB_CANCEL);
	if (!st)
		return DB_ERROR;
	sqlite3_bind_int64(st, 1, id);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return db_map(rc);
	return sqlite3_changes(d->h) == 1 ? DB_OK : DB_CONFLICT;
}

// ---- leaderboard ----

int db_leaderboard(db *d, const char *event, const char *division, bool all, int limit,
		   int offset, db_lb_fn fn, void *arg, int64_t *total)
{
	sqlite3_stmt *st = db_stmt(d, ST_LB_COUNT);
	if (!st)
		return DB_ERROR;
	sqlite3_bind_text(st, 1, event, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 2, division, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, 3, all);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*total = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	if (rc != SQLITE_ROW)
		return db_map(rc);

	st = db_stmt(d, ST_LB_ROWS);
	if (!st)
		return DB_ERROR;
	sqlite3_bind_text(st, 1, event, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 2, division, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, 3, all);
	sqlite3_bind_int(st, 4, limit);
	sqlite3_bind_int(st, 5, offset);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		db_lb_row row = { 0 };
		row.submission_id = sqlite3_column_int64(st, 0);
		col_copy(st, 1, row.team, sizeof(row.team));
		col_copy(st, 2, row.name, sizeof(row.name));
		row.speedup = sqlite3_column_double(st, 3);
		row.speedup_ci_low = sqlite3_column_double(st, 4);
		row.speedup_ci_high = sqlite3_column_double(st, 5);
		row.quality = sqlite3_column_double(st, 6);
		row.latency_p90_ns = sqlite3_column_double(st, 7);
		row.throughput = sqlite3_column_double(st, 8);
		row.model_bytes = sqlite3_column_int64(st, 9);
		row.compression = sqlite3_column_double(st, 10);
		col_copy(st, 11, row.created_at, sizeof(row.created_at));
		row.config = col_dup(st, 12);
		fn(arg, &row);
		free(row.config);
	}
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? DB_OK : db_map(rc);
}

// ---- jobs (the scheduler's side) ----

/* Run a prepared UPDATE bound by the caller; *changed gets the rows it changed. */
static int db_update(db *d, sqlite3_stmt *st, int *changed)
{
	int rc = sqlite3_step(st);
	int ext = sqlite3_extended_errcode(d->h);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return db_map(ext);
	if (changed)
		*changed = sqlite3_changes(d->h);
	return DB_OK;
}

static int db_commit_or_rollback(db *d, int rc)
{
	if (rc == DB_OK)
		rc = db_step_done(d, ST_COMMIT);
	if (rc != DB_OK)
		db_step_done(d, ST_ROLLBACK);
	return rc;
}

int db_job_claim(db *d, int64_t after_team, const bool *ready, int slot, db_job *out)
{
	memset(out, 0, sizeof(*out));
	int rc = db_step_done(d, ST_BEGIN);
	if (rc != DB_OK)
		return rc;
	sqlite3_stmt *st = db_stmt(d, ST_JOB_NEXT);
	if (!st)
		return db_commit_or_rollback(d, DB_ERROR);
	for (int i = 0; i < EV_COUNT; i++) {
		if (ready[i])
			sqlite3_bind_text(st, i + 1, ev_event_at(i)->name, -1, SQLITE_STATIC);
		else
			sqlite3_bind_null(st, i + 1);
	}
	sqlite3_bind_int64(st, 4, after_team);
	int s = sqlite3_step(st);
	if (s == SQLITE_ROW) {
		out->id = sqlite3_column_int64(st, 0);
		out->team_id = sqlite3_column_int64(st, 1);
		col_copy(st, 2, out->event, sizeof(out->event));
		col_copy(st, 3, out->division, sizeof(out->division));
		out->config = col_dup(st, 4);
		out->attempts = sqlite3_column_int(st, 5) + 1;
		rc = out->config ? DB_OK : DB_ERROR;
	} else {
		rc = s == SQLITE_DONE ? DB_NOTFOUND : db_map(sqlite3_extended_errcode(d->h));
	}
	sqlite3_reset(st);
	if (rc == DB_OK) {
		st = db_stmt(d, ST_JOB_START);
		int changed = 0;
		if (!st) {
			rc = DB_ERROR;
		} else {
			sqlite3_bind_int64(st, 1, out->id);
			sqlite3_bind_int(st, 2, slot);
			rc = db_update(d, st, &changed);
			if (rc == DB_OK && changed != 1)
				rc = DB_CONFLICT;
		}
	}
	if (rc == DB_NOTFOUND) {
		db_step_done(d, ST_ROLLBACK);
		return rc;
	}
	rc = db_commit_or_rollback(d, rc);
	if (rc != DB_OK)
		db_job_release(out);
	return rc;
}

void db_job_release(db_job *j)
{
	free(j->config);
	j->config = NULL;
}

int db_requeue_running(db *d, int max_attempts, int *requeued, int *failed)
{
	*requeued = *failed = 0;
	int rc = db_step_done(d, ST_BEGIN);
	if (rc != DB_OK)
		return rc;
	sqlite3_stmt *st = db_stmt(d, ST_REQUEUE_FAIL);
	if (!st)
		return db_commit_or_rollback(d, DB_ERROR);
	sqlite3_bind_int(st, 1, max_attempts);
	rc = db_update(d, st, failed);
	if (rc == DB_OK) {
		st = db_stmt(d, ST_REQUEUE_ALL);
		rc = st ? db_update(d, st, requeued) : DB_ERROR;
	}
	return db_commit_or_rollback(d, rc);
}

static int db_update_id(db *d, enum db_stmt_id id_stmt, int64_t id, const char *text)
{
	sqlite3_stmt *st = db_stmt(d, id_stmt);
	if (!st)
		return DB_ERROR;
	sqlite3_bind_int64(st, 1, id);
	if (text)
		sqlite3_bind_text(st, 2, text, -1, SQLITE_TRANSIENT);
	int changed = 0;
	int rc = db_update(d, st, &changed);
	return rc != DB_OK ? rc : changed == 1 ? DB_OK : DB_CONFLICT;
}

int db_job_requeue(db *d, int64_t id)
{
	return db_update_id(d, ST_JOB_REQUEUE, id, NULL);
}

int db_job_fail(db *d, int64_t id, const char *error)
{
	return db_update_id(d, ST_JOB_FAIL, id, error);
}

static int db_insert_timings(db *d, int64_t id, const char *series, const int64_t *ns, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		sqlite3_stmt *st = db_stmt(d, ST_TIMING_INSERT);
		if (!st)
			return DB_ERROR;
		sqlite3_bind_int64(st, 1, id);
		sqlite3_bind_text(st, 2, series, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, (int64_t)i);
		sqlite3_bind_int64(st, 4, ns[i]);
		int rc = db_update(d, st, NULL);
		if (rc != DB_OK)
			return rc;
	}
	return DB_OK;
}

int db_job_finish(db *d, int64_t id, const char *event, const char *division,
		  const db_result *r)
{
	int rc = db_step_done(d, ST_BEGIN);
	if (rc != DB_OK)
		return rc;
	rc = db_update_id(d, ST_JOB_DONE, id, NULL);
	if (rc == DB_OK) {
		sqlite3_stmt *st = db_stmt(d, ST_RESULT_INSERT);
		if (!st) {
			rc = DB_ERROR;
		} else {
			sqlite3_bind_int64(st, 1, id);
			sqlite3_bind_text(st, 2, event, -1, SQLITE_TRANSIENT);
			sqlite3_bind_text(st, 3, division, -1, SQLITE_TRANSIENT);
			sqlite3_bind_int(st, 4, r->valid);
			sqlite3_bind_int(st, 5, r->gate_passed);
			sqlite3_bind_double(st, 6, r->speedup);
			sqlite3_bind_double(st, 7, r->speedup_ci_low);
			sqlite3_bind_double(st, 8, r->speedup_ci_high);
			sqlite3_bind_double(st, 9, r->quality);
			sqlite3_bind_double(st, 10, r->latency_p90_ns);
			sqlite3_bind_double(st, 11, r->throughput);
			sqlite3_bind_int64(st, 12, r->model_bytes);
			sqlite3_bind_double(st, 13, r->compression);
			sqlite3_bind_text(st, 14, r->json, -1, SQLITE_TRANSIENT);
			rc = db_update(d, st, NULL);
		}
	}
	if (rc == DB_OK)
		rc = db_insert_timings(d, id, "submission", r->sub_ns, r->n_sub);
	if (rc == DB_OK)
		rc = db_insert_timings(d, id, "baseline", r->base_ns, r->n_base);
	return db_commit_or_rollback(d, rc);
}

int db_progress_add(db *d, int64_t id, int seq, const char *line)
{
	sqlite3_stmt *st = db_stmt(d, ST_PROGRESS_INSERT);
	if (!st)
		return DB_ERROR;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_int(st, 2, seq);
	sqlite3_bind_text(st, 3, line, -1, SQLITE_TRANSIENT);
	return db_update(d, st, NULL);
}

int db_progress_list(db *d, int64_t id, int after, void (*fn)(void *, int, const char *),
		     void *arg)
{
	sqlite3_stmt *st = db_stmt(d, ST_PROGRESS_LIST);
	if (!st)
		return DB_ERROR;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_int(st, 2, after);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const unsigned char *line = sqlite3_column_text(st, 1);
		fn(arg, sqlite3_column_int(st, 0), line ? (const char *)line : "");
	}
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? DB_OK : db_map(rc);
}

int db_status_counts(db *d, int64_t counts[5])
{
	static const char *const names[5] = { "queued", "running", "finished", "failed",
					      "cancelled" };
	memset(counts, 0, 5 * sizeof(counts[0]));
	sqlite3_stmt *st = db_stmt(d, ST_STATUS_COUNTS);
	if (!st)
		return DB_ERROR;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const unsigned char *name = sqlite3_column_text(st, 0);
		for (int i = 0; i < 5; i++)
			if (name && strcmp((const char *)name, names[i]) == 0)
				counts[i] = sqlite3_column_int64(st, 1);
	}
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? DB_OK : db_map(rc);
}

int db_timings(db *d, int64_t id, const char *series, void (*fn)(void *, int64_t), void *arg)
{
	sqlite3_stmt *st = db_stmt(d, ST_TIMINGS);
	if (!st)
		return DB_ERROR;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_text(st, 2, series, -1, SQLITE_TRANSIENT);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		fn(arg, sqlite3_column_int64(st, 0));
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? DB_OK : db_map(rc);
}
