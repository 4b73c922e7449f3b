/* tests.h: the Check suites of TinyMLPerf and the helpers they share.  tests/ mirrors the source
 * tree; every suite is one row of the table in main.c. */
#ifndef TM_TESTS_H
#define TM_TESTS_H

#include <check.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

// ---- suites (one per module) ----

Suite *util_suite(void);
Suite *gemm_suite(void);
Suite *sparse_suite(void);
Suite *qgemm_suite(void);
Suite *ops_suite(void);
Suite *idx_suite(void);
Suite *decathlon_suite(void);
Suite *safetensors_suite(void);
Suite *model_suite(void);
Suite *train_suite(void);
Suite *transformer_suite(void);
Suite *stats_suite(void);
Suite *config_suite(void);
Suite *harness_suite(void);
Suite *opts_suite(void);
Suite *db_suite(void);
Suite *sha256_suite(void);
Suite *health_suite(void);
Suite *teams_suite(void);
Suite *api_suite(void);
Suite *submissions_suite(void);
Suite *leaderboard_suite(void);
Suite *infer_suite(void);
Suite *tf_infer_suite(void);
Suite *run_suite(void);
Suite *sandbox_suite(void);
Suite *sched_suite(void);
Suite *faults_suite(void);
Suite *pages_suite(void);
Suite *browser_suite(void);

/* 1 in the sanitizer build, whose kernels run several times slower: suites that sweep many
 * shapes or prompts take a smaller sample there (the normal build runs the whole sweep). */
#if defined(__SANITIZE_ADDRESS__)
#define TT_SLOW_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TT_SLOW_BUILD 1
#endif
#endif
#ifndef TT_SLOW_BUILD
#define TT_SLOW_BUILD 0
#endif

// ---- helpers (util.c) ----

/* A fresh directory under $TMPDIR (or /tmp); caller frees the string and removes the tree
 * with tt_rmtree. */
char *tt_tmpdir(const char *tag);
void tt_rmtree(const char *path);
/* Path of a built program, from $TM_BUILD_DIR (default "build"); static buffer per call site
 * is not used: the result is malloc'd. */
char *tt_build_path(const char *name);

/* Deterministic pseudo-random floats in [-1, 1) for kernel tests. */
void tt_fill_random(float *x, size_t n, uint64_t seed);
/* Largest |a-b| / (1 + |b|) over n elements. */
double tt_max_rel_diff(const float *a, const float *b, size_t n);

/* A real tinymlperfd on a free loopback port (--listen 127.0.0.1:0, port read from its log). */
typedef struct tt_daemon {
	pid_t pid;
	int port;
	char *data_dir;
	int log_fd;        /* read end of the daemon's stderr */
} tt_daemon;

/* Extra arguments end with NULL.  Returns 0 once the daemon logs its port. */
int tt_daemon_start(tt_daemon *d, const char *const *extra_args);
/* The same with an admin token, written to DATA_DIR/admin.token and passed with
 * --admin-token-file. */
int tt_daemon_start_admin(tt_daemon *d, const char *admin_token, const char *const *extra_args);
/* Send sig and wait; returns the exit status (or 128+signal).  Removes the data directory. */
int tt_daemon_stop(tt_daemon *d, int sig);
/* The same, keeping the data directory for tt_daemon_restart (same admin token, if any). */
int tt_daemon_kill(tt_daemon *d, int sig);
int tt_daemon_restart(tt_daemon *d, const char *const *extra_args);
/* A worker program for the daemon under test: the normal build's when the tests run from the
 * sanitizer build (the daemon is the sanitized program; a worker's seccomp list and memory
 * limits are written for the program, not for the ASan runtime), else TM_BUILD_DIR's. */
char *tt_worker_path(const char *name);
/* The one integer a query on the daemon's database returns (read-only use while it runs);
 * -1 when the query fails. */
long tt_db_scalar(const tt_daemon *d, const char *sql);
/* What the daemon logged since the last call (at most 64 KiB; malloc'd). */
char *tt_daemon_log(tt_daemon *d);
/* Poll GET /api/v1/submissions/ID until its status is `until` (NULL: any final status) or
 * timeout_s passes; returns the JSON body (malloc'd) or NULL. */
char *tt_wait_submission(int port, int64_t id, const char *until, double timeout_s);
/* Create a team with the admin token; its token goes to token (len bytes).  0 or -1. */
int tt_make_team(int port, const char *admin_token, const char *name, char *token, size_t len);

/* One HTTP/1.1 request over a real socket.  Returns the status code or -1; the body (malloc'd,
 * NUL-terminated) goes to *body when body is not NULL. */
int tt_http(int port, const char *method, const char *path, const char *headers,
	    const char *req_body, size_t req_len, char **body);

/* The same with the reply's header block (malloc'd) in *resp_headers when not NULL. */
int tt_http_ex(int port, const char *method, const char *path, const char *headers,
	       const char *req_body, size_t req_len, char **resp_headers, char **body);

#endif
