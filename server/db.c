/* db.c: the SQLite store.  Opening applies WAL, foreign keys, a busy timeout and every migration
 * whose number is above PRAGMA user_version, each in its own transaction.  Migration 1 is
 * schema.sql (embedded at build time by schema.S). */
#include "server.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

extern const char db_schema_sql[];

struct db {
	sqlite3 *h;
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
