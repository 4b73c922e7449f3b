/* test_db.c: Check suite of server/db.c on real SQLite files: creation, WAL, migrations,
 * reopening, and refusing a database from a newer daemon. */
#include "tests.h"
#include "server.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

START_TEST(test_open_creates_schema_in_wal)
{
	char *dir = tt_tmpdir("db");
	char path[600];
	snprintf(path, sizeof(path), "%s/t.db", dir);
	db *d;
	char err[256];
	ck_assert_int_eq(db_open(&d, path, err, sizeof(err)), DB_OK);
	ck_assert_int_eq(db_schema_version(d), db_migration_count());
	ck_assert_int_ge(db_migration_count(), 1);
	const char *tables[] = { "teams", "submissions", "progress", "results", "timings" };
	for (size_t i = 0; i < 5; i++) {
		long n = -1;
		ck_assert_int_eq(db_table_count(d, tables[i], &n), DB_OK);
		ck_assert_int_eq(n, 0);
	}
	long n;
	ck_assert_int_eq(db_table_count(d, "sqlite_master; DROP TABLE teams", &n), DB_NOTFOUND);
	db_close(d);

	/* Reopening is idempotent and the journal is WAL. */
	ck_assert_int_eq(db_open(&d, path, err, sizeof(err)), DB_OK);
	db_close(d);
	sqlite3 *h;
	ck_assert_int_eq(sqlite3_open(path, &h), SQLITE_OK);
	sqlite3_stmt *st;
	ck_assert_int_eq(sqlite3_prepare_v2(h, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	sqlite3_close(h);
	tt_rmtree(dir);
	free(dir);
}
END_TEST

START_TEST(test_refuses_newer_schema_and_bad_path)
{
	char *dir = tt_tmpdir("db");
	char path[600];
	snprintf(path, sizeof(path), "%s/t.db", dir);
	sqlite3 *h;
	ck_assert_int_eq(sqlite3_open(path, &h), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(h, "PRAGMA user_version = 999", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(h);
	db *d;
	char err[256];
	ck_assert_int_eq(db_open(&d, path, err, sizeof(err)), DB_ERROR);
	ck_assert_ptr_nonnull(strstr(err, "newer"));
	ck_assert_ptr_null(d);

	snprintf(path, sizeof(path), "%s/missing/dir/t.db", dir);
	ck_assert_int_ne(db_open(&d, path, err, sizeof(err)), DB_OK);
	ck_assert_ptr_nonnull(strstr(err, "cannot open"));

	/* A file that is not a database is refused, not overwritten. */
	snprintf(path, sizeof(path), "%s/junk.db", dir);
	FILE *f = fopen(path, "w");
	fputs("this is not an sqlite database, just some text that is long enough to look like a header..", f);
	fclose(f);
	ck_assert_int_ne(db_open(&d, path, err, sizeof(err)), DB_OK);
	tt_rmtree(dir);
	free(dir);
}
END_TEST

Suite *db_suite(void)
{
	Suite *s = suite_create("db");
	TCase *tc = tcase_create("open");
	tcase_add_test(tc, test_open_creates_schema_in_wal);
	tcase_add_test(tc, test_refuses_newer_schema_and_bad_path);
	suite_add_tcase(s, tc);
	return s;
}
