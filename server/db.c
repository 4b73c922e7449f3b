/* db.c: the SQLite store.  Opening applies WAL, foreign keys, a busy timeout and every migration
 * whose number is above PRAGMA user_version, each in its own transaction.  Migration 1 is
 * schema.sql (embedded at build time by schema.S). */
#include "server.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

extern const char db_schema_sql[];

/* Every statement the daemon runs, prepared once on first use and kept (prepared statements
 * only: no SQL is ever built from request data). */
enum db_stmt_id {
	ST_TEAM_INSERT,
	ST_TEAM_BY_TOKEN,
	ST_COUNT
};

static const char *const db_stmt_sql[ST_COUNT] = {
	[ST_TEAM_INSERT] = "INSERT INTO teams(name, token_hash) VALUES (?1, ?2)",
	[ST_TEAM_BY_TOKEN] = "SELECT id, name, is_admin FROM teams WHERE token_hash = ?1",
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
