/* sandbox.c: the isolation tinymlperf-run applies to itself.  Limits first (setrlimit: address
 * space, CPU seconds, file size, open files, no core dumps) with a SIGXCPU handler and a clean
 * report of allocation failures, so hitting a limit ends the worker with exit code 3 and one
 * clear line instead of a hang or a crash; then, once the data, the weights and the threads
 * exist, PR_SET_NO_NEW_PRIVS and a seccomp allow-list of exactly what the timed loop needs
 * (memory, futexes, clocks, reads and writes on open descriptors, read-only opens, threads but
 * no processes), killing the process on anything else.  Also the CPU-set parser for --cpus and
 * the test hook that tries forbidden things. */
#include "events.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define SBX_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SBX_ASAN 1
#endif
#endif
#ifndef SBX_ASAN
#define SBX_ASAN 0
#endif

// ---- limits ----

static int64_t sbx_mem_mb;        /* the memory limit, for messages; 0: none */
static bool sbx_mem_enforced;     /* RLIMIT_AS was set */
static char sbx_cpu_msg[96];      /* prebuilt: the handler only calls write and _exit */
static size_t sbx_cpu_msg_len;
static char sbx_mem_msg[96];
static size_t sbx_mem_msg_len;

static void sbx_write_all(const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = write(STDERR_FILENO, s, n);
		if (w <= 0) {
			if (w < 0 && errno == EINTR)
				continue;
			return;
		}
		s += w;
		n -= (size_t)w;
	}
}

static void sbx_on_xcpu(int sig)
{
	(void)sig;
	sbx_write_all(sbx_cpu_msg, sbx_cpu_msg_len);
	_exit(SBX_EXIT_LIMIT);
}

/* abort() right after an allocation failed (the engine's tm_xmalloc, the C library) leaves
 * errno == ENOMEM: under a memory limit that is the limit being hit, so it is reported as such
 * and the exit is clean.  Any other abort keeps its default action (a crash the daemon
 * reports). */
static void sbx_on_abort(int sig)
{
	if (errno == ENOMEM && sbx_mem_mb > 0) {
		sbx_write_all(sbx_mem_msg, sbx_mem_msg_len);
		_exit(SBX_EXIT_LIMIT);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

static int sbx_setrlimit(int res, rlim_t soft, rlim_t hard, const char *name, tm_err *err)
{
	struct rlimit cur;
	if (getrlimit(res, &cur) == 0 && cur.rlim_max != RLIM_INFINITY) {
		/* An unprivileged process cannot raise a hard limit: stay within it. */
		if (hard == RLIM_INFINITY || hard > cur.rlim_max)
			hard = cur.rlim_max;
		if (soft == RLIM_INFINITY || soft > hard)
			soft = hard;
	}
	struct rlimit rl = { .rlim_cur = soft, .rlim_max = hard };
	if (setrlimit(res, &rl) < 0)
		return tm_err_set(err, TM_EINVAL, name, "sandbox: setrlimit(%s) failed: %s", name,
				  strerror(errno));
	return 0;
}

int sbx_limits_apply(const sbx_limits *l, tm_err *err)
{
	if (l->memory_mb < 0 || l->cpu_s < 0 || l->files < 0 || l->fsize_mb < 0 ||
	    l->memory_mb > ((int64_t)1 << 30) || l->fsize_mb > ((int64_t)1 << 30))
		return tm_err_set(err, TM_EINVAL, "limits", "sandbox: limits must be non-negative "
				  "and at most 2^30 MiB");
	int len = snprintf(sbx_cpu_msg, sizeof(sbx_cpu_msg),
			   "tinymlperf-run: cpu time limit of %lld s reached\n", (long long)l->cpu_s);
	sbx_cpu_msg_len = (size_t)len < sizeof(sbx_cpu_msg) ? (size_t)len : sizeof(sbx_cpu_msg) - 1;
	sbx_mem_mb = l->memory_mb;
	if (l->memory_mb > 0)
		len = snprintf(sbx_mem_msg, sizeof(sbx_mem_msg),
			       "tinymlperf-run: memory limit of %lld MiB reached\n",
			       (long long)l->memory_mb);
	else
		len = snprintf(sbx_mem_msg, sizeof(sbx_mem_msg), "tinymlperf-run: out of memory\n");
	sbx_mem_msg_len = (size_t)len < sizeof(sbx_mem_msg) ? (size_t)len : sizeof(sbx_mem_msg) - 1;

	int rc;
	if ((rc = sbx_setrlimit(RLIMIT_CORE, 0, 0, "RLIMIT_CORE", err)) < 0)
		return rc;
	if (l->memory_mb > 0 && !SBX_ASAN) {
		rlim_t b = (rlim_t)l->memory_mb << 20;
		if ((rc = sbx_setrlimit(RLIMIT_AS, b, b, "RLIMIT_AS", err)) < 0)
			return rc;
		sbx_mem_enforced = true;
	}
	if (l->cpu_s > 0) {
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = sbx_on_xcpu;
		sigemptyset(&sa.sa_mask);
		if (sigaction(SIGXCPU, &sa, NULL) < 0)
			return tm_err_set(err, TM_EINVAL, "SIGXCPU", "sandbox: sigaction failed: %s",
					  strerror(errno));
		/* SIGXCPU at the soft limit; the hard limit (SIGKILL) is the backstop. */
		if ((rc = sbx_setrlimit(RLIMIT_CPU, (rlim_t)l->cpu_s, (rlim_t)l->cpu_s + 5,
					"RLIMIT_CPU", err)) < 0)
			return rc;
	}
	if (l->fsize_mb > 0) {
		rlim_t b = (rlim_t)l->fsize_mb << 20;
		if ((rc = sbx_setrlimit(RLIMIT_FSIZE, b, b, "RLIMIT_FSIZE", err)) < 0)
			return rc;
		signal(SIGXFSZ, SIG_IGN); /* a write past the limit fails with EFBIG instead */
	}
	if (l->files > 0 &&
	    (rc = sbx_setrlimit(RLIMIT_NOFILE, (rlim_t)l->files, (rlim_t)l->files,
				"RLIMIT_NOFILE", err)) < 0)
		return rc;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = sbx_on_abort;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGABRT, &sa, NULL);
	return 0;
}

bool sbx_memory_limit_enforced(void)
{
	return sbx_mem_enforced;
}

void sbx_oom_exit(const char *what)
{
	(void)what;
	fflush(stdout);
	sbx_write_all(sbx_mem_msg[0] ? sbx_mem_msg : "tinymlperf-run: out of memory\n",
		      sbx_mem_msg[0] ? sbx_mem_msg_len : strlen("tinymlperf-run: out of memory\n"));
	_exit(SBX_EXIT_LIMIT);
}

void *sbx_malloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		sbx_oom_exit("malloc");
	return p;
}

void *sbx_realloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		sbx_oom_exit("realloc");
	return q;
}

// ---- seccomp ----

/* What the timed loop, the result writer and exit need, and nothing else.  No socket,
 * connect, execve, fork (clone without CLONE_THREAD), ptrace, kill of other processes, and no
 * open other than read-only.  sysinfo: qsort asks for the physical memory size. */
static const int sbx_allowed[] = {
	SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(readv), SCMP_SYS(writev),
	SCMP_SYS(pread64), SCMP_SYS(lseek), SCMP_SYS(close), SCMP_SYS(fstat),
	SCMP_SYS(newfstatat), SCMP_SYS(statx), SCMP_SYS(fcntl),
	SCMP_SYS(mmap), SCMP_SYS(munmap), SCMP_SYS(mremap), SCMP_SYS(mprotect),
	SCMP_SYS(madvise), SCMP_SYS(brk),
	SCMP_SYS(futex), SCMP_SYS(sched_yield), SCMP_SYS(sched_getaffinity),
	SCMP_SYS(set_robust_list), SCMP_SYS(rseq),
	SCMP_SYS(clock_gettime), SCMP_SYS(clock_getres), SCMP_SYS(clock_nanosleep),
	SCMP_SYS(nanosleep), SCMP_SYS(gettimeofday), SCMP_SYS(getrusage),
	SCMP_SYS(getpid), SCMP_SYS(gettid), SCMP_SYS(getrandom), SCMP_SYS(sysinfo),
	SCMP_SYS(rt_sigaction), SCMP_SYS(rt_sigprocmask), SCMP_SYS(rt_sigreturn),
	SCMP_SYS(sigaltstack), SCMP_SYS(restart_syscall),
	SCMP_SYS(exit), SCMP_SYS(exit_group),
};

int sbx_seccomp_apply(tm_err *err)
{
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return tm_err_set(err, TM_EINVAL, "seccomp", "sandbox: PR_SET_NO_NEW_PRIVS failed: %s",
				  strerror(errno));
	scmp_filter_ctx f = seccomp_init(SCMP_ACT_KILL_PROCESS);
	if (!f)
		return tm_err_set(err, TM_ENOMEM, "seccomp", "sandbox: seccomp_init failed");
	int rc = 0;
	for (size_t i = 0; i < sizeof(sbx_allowed) / sizeof(sbx_allowed[0]) && rc == 0; i++)
		rc = seccomp_rule_add(f, SCMP_ACT_ALLOW, sbx_allowed[i], 0);
	/* Signals only to this process (abort, the SIGXCPU re-raise). */
	if (rc == 0)
		rc = seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
				      SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)getpid()));
	/* Read-only opens (the C library reads /proc and /sys files now and then). */
	const scmp_datum_t wr = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND;
	if (rc == 0)
		rc = seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(openat), 1,
				      SCMP_A2(SCMP_CMP_MASKED_EQ, wr, 0));
	/* Threads, never processes: clone only with CLONE_THREAD; clone3 passes its flags in
	 * memory a filter cannot read, so it answers ENOSYS and the C library falls back to
	 * clone. */
	if (rc == 0)
		rc = seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
				      SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
	if (rc == 0)
		rc = seccomp_rule_add(f, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	if (rc == 0)
		rc = seccomp_load(f);
	seccomp_release(f);
	if (rc < 0)
		return tm_err_set(err, TM_EINVAL, "seccomp", "sandbox: seccomp filter failed: %s",
				  strerror(-rc));
	return 0;
}

// ---- CPU sets ----

static void sbx_cpus_text(sbx_cpus *c)
{
	size_t used = 0;
	c->text[0] = '\0';
	c->count = 0;
	for (int i = 0; i < SBX_MAX_CPUS; i++) {
		if (!(c->mask[i / 64] >> (i % 64) & 1))
			continue;
		int j = i;
		while (j + 1 < SBX_MAX_CPUS && (c->mask[(j + 1) / 64] >> ((j + 1) % 64) & 1))
			j++;
		c->count += j - i + 1;
		if (used < sizeof(c->text)) {
			int n = j > i ? snprintf(c->text + used, sizeof(c->text) - used, "%s%d-%d",
						 used ? "," : "", i, j)
				      : snprintf(c->text + used, sizeof(c->text) - used, "%s%d",
						 used ? "," : "", i);
			used += (size_t)n;
		}
		i = j;
	}
}

static bool sbx_cpu_num(const char **s, long *out)
{
	char *end;
	if (**s < '0' || **s > '9')
		return false;
	errno = 0;
	long v = strtol(*s, &end, 10);
	if (errno || v < 0 || v >= SBX_MAX_CPUS)
		return false;
	*s = end;
	*out = v;
	return true;
}

int sbx_cpus_parse(const char *list, sbx_cpus *out, tm_err *err)
{
	memset(out, 0, sizeof(*out));
	const char *s = list;
	for (;;) {
		long a, b;
		if (!sbx_cpu_num(&s, &a))
			goto bad;
		b = a;
		if (*s == '-') {
			s++;
			if (!sbx_cpu_num(&s, &b) || b < a)
				goto bad;
		}
		for (long i = a; i <= b; i++)
			out->mask[i / 64] |= 1ull << (i % 64);
		if (*s == '\0')
			break;
		if (*s++ != ',')
			goto bad;
	}
	sbx_cpus_text(out);
	return 0;
bad:
	return tm_err_set(err, TM_EINVAL, "--cpus", "--cpus '%.60s' is not a CPU list like 1, "
			  "0,2 or 2-3 with CPUs in [0, %d)", list, SBX_MAX_CPUS);
}

int sbx_cpus_apply(const sbx_cpus *cpus, tm_err *err)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	for (int i = 0; i < SBX_MAX_CPUS && i < CPU_SETSIZE; i++)
		if (cpus->mask[i / 64] >> (i % 64) & 1)
			CPU_SET(i, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		return tm_err_set(err, TM_EINVAL, "--cpus", "--cpus '%s': sched_setaffinity failed: "
				  "%s", cpus->text, strerror(errno));
	return 0;
}

int sbx_cpus_current(sbx_cpus *out, tm_err *err)
{
	cpu_set_t set;
	memset(out, 0, sizeof(*out));
	if (sched_getaffinity(0, sizeof(set), &set) < 0)
		return tm_err_set(err, TM_EINVAL, "cpus", "sched_getaffinity failed: %s",
				  strerror(errno));
	for (int i = 0; i < SBX_MAX_CPUS && i < CPU_SETSIZE; i++)
		if (CPU_ISSET(i, &set))
			out->mask[i / 64] |= 1ull << (i % 64);
	sbx_cpus_text(out);
	return 0;
}

// ---- the test hook ----

const char *sbx_test_actions(void)
{
	return "socket, connect, execve, fork, open-write, alloc, spin";
}

int sbx_test_action(const char *action, tm_err *err)
{
	if (strcmp(action, "socket") == 0) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd >= 0)
			close(fd);
	} else if (strcmp(action, "connect") == 0) {
		/* The raw system call on a bad descriptor: only the filter can stop it first. */
		struct sockaddr_in a;
		memset(&a, 0, sizeof(a));
		a.sin_family = AF_INET;
		(void)syscall(SYS_connect, -1, &a, sizeof(a));
	} else if (strcmp(action, "execve") == 0) {
		char *const argv[] = { (char *)"/bin/true", NULL };
		char *const envp[] = { NULL };
		execve("/bin/true", argv, envp);
	} else if (strcmp(action, "fork") == 0) {
		pid_t pid = fork();
		if (pid == 0)
			_exit(0);
		if (pid > 0)
			waitpid(pid, NULL, 0);
	} else if (strcmp(action, "open-write") == 0) {
		int fd = open("sandbox-test.out", O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd >= 0) {
			close(fd);
			unlink("sandbox-test.out");
		}
	} else if (strcmp(action, "alloc") == 0) {
		/* Twice the limit (or 64 GiB without one), touched so it is really used. */
		size_t n = sbx_mem_mb > 0 ? (size_t)sbx_mem_mb << 21 : (size_t)64 << 30;
		volatile char *p = sbx_malloc(n);
		for (size_t i = 0; i < n; i += 4096)
			p[i] = 1;
		free((void *)p);
	} else if (strcmp(action, "spin") == 0) {
		volatile double x = 1.0;
		for (;;)
			x = x * 1.0000001 + 1e-9;
	} else {
		return tm_err_set(err, TM_EINVAL, "--sandbox-test", "--sandbox-test '%.40s' is not "
				  "one of %s", action, sbx_test_actions());
	}
	return 0;
}
