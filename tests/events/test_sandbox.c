/* test_sandbox.c: Check suite of events/sandbox.c.  Spawns the real build/tinymlperf-run with
 * the test hook (`run --sandbox-test ACTION`), which applies the limits and the seccomp filter
 * and then tries something forbidden: socket, connect, execve, fork and opening a file for
 * writing must kill the worker with SIGSYS; the same action with --no-sandbox goes through
 * (so the test can fail); an allocation over --limit-memory ends with exit 3 and "memory limit
 * of N MiB reached"; a 1-second --limit-cpu on an endless loop ends with exit 3 and "cpu time
 * limit of 1 s reached", not a hang.  Also the --cpus list parser. */
#include "tests.h"
#include "events.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define TT_ASAN 1
#else
#define TT_ASAN 0
#endif

/* A valid config in a fresh directory (the hook never reads data or weights). */
static char *write_config(char **dir)
{
	*dir = tt_tmpdir("sandbox");
	ck_assert_ptr_nonnull(*dir);
	char path[600];
	snprintf(path, sizeof(path), "%s/mlp.json", *dir);
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs("{\"event\": \"mlp_sprint\", \"name\": \"sandbox test\"}\n", f);
	fclose(f);
	return strdup(path);
}

/* Run tinymlperf-run with args (NULL-terminated, after "run") in dir, killing it after
 * timeout_s.  Returns the wait status; stderr (at most cap - 1 bytes) goes to err_buf. */
static int spawn_run(const char *dir, const char *const *args, int timeout_s, char *err_buf,
		     size_t cap)
{
	char *rel = tt_build_path("tinymlperf-run");
	char *prog = realpath(rel, NULL);  /* the child changes directory */
	ck_assert_msg(prog != NULL, "%s not built", rel);
	free(rel);
	int pipefd[2];
	ck_assert_int_eq(pipe(pipefd), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		dup2(pipefd[1], STDERR_FILENO);
		int null = open("/dev/null", O_WRONLY);
		if (null >= 0)
			dup2(null, STDOUT_FILENO);
		close(pipefd[0]);
		if (chdir(dir) != 0)
			_exit(126);
		/* LeakSanitizer's exit-time scan starts a process the filter forbids. */
		setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
		const char *argv[32];
		int n = 0;
		argv[n++] = prog;
		argv[n++] = "run";
		for (int i = 0; args[i] && n < 31; i++)
			argv[n++] = args[i];
		argv[n] = NULL;
		execv(prog, (char *const *)argv);
		_exit(127);
	}
	close(pipefd[1]);
	size_t len = 0;
	int status = 0;
	time_t start = time(NULL);
	fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
	for (;;) {
		ssize_t r = read(pipefd[0], err_buf + len, cap - 1 - len);
		if (r > 0) {
			len += (size_t)r;
			if (len == cap - 1)
				len = 0; /* keep the tail */
			continue;
		}
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		if (time(NULL) - start > timeout_s) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			break;
		}
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	ssize_t r;
	while ((r = read(pipefd[0], err_buf + len, cap - 1 - len)) > 0)
		len += (size_t)r;
	err_buf[len] = '\0';
	close(pipefd[0]);
	free(prog);
	return status;
}

static void expect_sigsys(const char *action)
{
	char *dir;
	char *cfg = write_config(&dir);
	const char *args[] = { "--sandbox-test", action, cfg, NULL };
	char err[4096];
	int st = spawn_run(dir, args, 60, err, sizeof(err));
	ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS,
		      "%s: expected death by SIGSYS, got status 0x%x, stderr: %s", action, st, err);
	/* Nothing was created by open-write. */
	char path[700];
	snprintf(path, sizeof(path), "%s/sandbox-test.out", dir);
	ck_assert_int_ne(access(path, F_OK), 0);
	free(cfg);
	tt_rmtree(dir);
	free(dir);
}

START_TEST(test_forbidden_syscalls_kill)
{
	static const char *const actions[] = { "socket", "connect", "execve", "fork",
					       "open-write" };
	expect_sigsys(actions[_i]);
}
END_TEST

START_TEST(test_without_sandbox_the_action_runs)
{
	/* The control: the hook really attempts the call, so SIGSYS above is the filter's. */
	char *dir;
	char *cfg = write_config(&dir);
	const char *args[] = { "--no-sandbox", "--sandbox-test", "socket", cfg, NULL };
	char err[4096];
	int st = spawn_run(dir, args, 60, err, sizeof(err));
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status 0x%x, stderr: %s", st, err);
	free(cfg);
	tt_rmtree(dir);
	free(dir);
}
END_TEST

START_TEST(test_unknown_action_is_exit_2)
{
	char *dir;
	char *cfg = write_config(&dir);
	const char *args[] = { "--sandbox-test", "teleport", cfg, NULL };
	char err[4096];
	int st = spawn_run(dir, args, 60, err, sizeof(err));
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2, "status 0x%x", st);
	ck_assert_ptr_nonnull(strstr(err, "teleport"));
	free(cfg);
	tt_rmtree(dir);
	free(dir);
}
END_TEST

START_TEST(test_memory_limit_exit_3)
{
	if (TT_ASAN)
		return; /* RLIMIT_AS is not set under AddressSanitizer (its shadow exceeds it) */
	char *dir;
	char *cfg = write_config(&dir);
	const char *args[] = { "--limit-memory", "64", "--sandbox-test", "alloc", cfg, NULL };
	char err[4096];
	int st = spawn_run(dir, args, 60, err, sizeof(err));
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 3, "status 0x%x, stderr: %s", st, err);
	ck_assert_msg(strstr(err, "memory limit of 64 MiB reached") != NULL, "stderr: %s", err);
	/* One line. */
	ck_assert_ptr_eq(strchr(err, '\n'), err + strlen(err) - 1);
	free(cfg);
	tt_rmtree(dir);
	free(dir);
}
END_TEST

START_TEST(test_cpu_limit_exit_3_not_a_hang)
{
	char *dir;
	char *cfg = write_config(&dir);
	const char *args[] = { "--limit-cpu", "1", "--sandbox-test", "spin", cfg, NULL };
	char err[4096];
	/* 1 CPU second takes longer in wall time on a busy machine; 90 s means a hang. */
	int st = spawn_run(dir, args, 90, err, sizeof(err));
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 3, "status 0x%x, stderr: %s", st, err);
	ck_assert_msg(strstr(err, "tinymlperf-run: cpu time limit of 1 s reached") != NULL,
		      "stderr: %s", err);
	free(cfg);
	tt_rmtree(dir);
	free(dir);
}
END_TEST

START_TEST(test_cpus_parse)
{
	sbx_cpus c;
	tm_err err = { 0 };
	ck_assert_int_eq(sbx_cpus_parse("1", &c, &err), 0);
	ck_assert_int_eq(c.count, 1);
	ck_assert_str_eq(c.text, "1");
	ck_assert_int_eq(sbx_cpus_parse("2-3", &c, &err), 0);
	ck_assert_int_eq(c.count, 2);
	ck_assert_str_eq(c.text, "2-3");
	ck_assert_int_eq(sbx_cpus_parse("5,0,1,2", &c, &err), 0);
	ck_assert_int_eq(c.count, 4);
	ck_assert_str_eq(c.text, "0-2,5");
	ck_assert(c.mask[0] == 0x27);
	ck_assert_int_eq(sbx_cpus_parse("64-65", &c, &err), 0);
	ck_assert(c.mask[1] == 3 && c.mask[0] == 0);
	static const char *const bad[] = { "", "a", "1,", ",1", "3-1", "1-", "-1", "1024",
					   "0-99999", "1 2", "1;2" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&err, 0, sizeof(err));
		ck_assert_msg(sbx_cpus_parse(bad[i], &c, &err) == TM_EINVAL, "'%s' accepted", bad[i]);
		ck_assert_str_eq(err.field, "--cpus");
	}
}
END_TEST

START_TEST(test_cpus_apply_and_read_back)
{
	sbx_cpus cur, one, back;
	tm_err err = { 0 };
	ck_assert_int_eq(sbx_cpus_current(&cur, &err), 0);
	ck_assert_int_ge(cur.count, 1);
	/* Pin to the first CPU of the current set (this test runs in its own process). */
	int first = 0;
	while (!(cur.mask[first / 64] >> (first % 64) & 1))
		first++;
	char list[16];
	snprintf(list, sizeof(list), "%d", first);
	ck_assert_int_eq(sbx_cpus_parse(list, &one, &err), 0);
	ck_assert_int_eq(sbx_cpus_apply(&one, &err), 0);
	ck_assert_int_eq(sbx_cpus_current(&back, &err), 0);
	ck_assert_int_eq(back.count, 1);
	ck_assert_str_eq(back.text, list);
}
END_TEST

Suite *sandbox_suite(void)
{
	Suite *s = suite_create("sandbox");
	TCase *tc = tcase_create("sandbox");
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, test_forbidden_syscalls_kill, 0, 5);
	tcase_add_test(tc, test_without_sandbox_the_action_runs);
	tcase_add_test(tc, test_unknown_action_is_exit_2);
	tcase_add_test(tc, test_memory_limit_exit_3);
	tcase_add_test(tc, test_cpu_limit_exit_3_not_a_hang);
	tcase_add_test(tc, test_cpus_parse);
	tcase_add_test(tc, test_cpus_apply_and_read_back);
	suite_add_tcase(s, tc);
	return s;
}
