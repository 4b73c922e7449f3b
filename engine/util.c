/* util.c: errors, allocation, arenas and the clock, shared by every engine module. */
#include "engine.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

// ---- errors ----

int tm_err_set(tm_err *err, int code, const char *field, const char *fmt, ...)
{
	if (!err)
		return code;
	err->code = code;
	snprintf(err->field, sizeof(err->field), "%s", field ? field : "");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return code;
}

const char *tm_strerror(int code)
{
	static const char *const names[] = {
		[0] = "ok",
		[-TM_EINVAL] = "invalid argument",
		[-TM_ENOMEM] = "out of memory",
		[-TM_EIO] = "i/o error",
		[-TM_EFORMAT] = "malformed data",
		[-TM_ELIMIT] = "resource limit exceeded",
		[-TM_ESTATE] = "invalid state",
	};
	if (code > 0 || -code >= (int)(sizeof(names) / sizeof(names[0])))
		return "unknown error";
	return names[-code];
}

// ---- memory ----

/* Out of memory in an allocation that cannot fail: abort.  A program that handles SIGABRT
 * itself (tinymlperf-run's sandbox) reports the error in its own one line, so the message here
 * is only for programs that do not. */
static void tm_oom(size_t n)
{
	struct sigaction sa;
	if (sigaction(SIGABRT, NULL, &sa) != 0 || sa.sa_handler == SIG_DFL ||
	    sa.sa_handler == SIG_IGN)
		fprintf(stderr, "level=fatal msg=\"out of memory\" bytes=%zu\n", n);
	abort();
}

void *tm_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		tm_oom(n);
	return p;
}

void *tm_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		tm_oom(n * size);
	return p;
}

char *tm_xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = tm_xmalloc(n);
	memcpy(p, s, n);
	return p;
}

void *tm_alloc_aligned(size_t bytes)
{
	size_t rounded = (bytes + 63) & ~(size_t)63;
	if (rounded < bytes)
		return NULL;
	void *p = aligned_alloc(64, rounded ? rounded : 64);
	if (p)
		memset(p, 0, rounded ? rounded : 64);
	return p;
}

void *tm_alloc_hot(size_t bytes)
{
	if (bytes < TM_HOT_HUGE_MIN)
		return tm_alloc_aligned(bytes);
	size_t rounded = (bytes + TM_HUGE_PAGE - 1) & ~(size_t)(TM_HUGE_PAGE - 1);
	if (rounded < bytes)
		return NULL;
	void *p = NULL;
	if (posix_memalign(&p, TM_HUGE_PAGE, rounded) != 0)
		return NULL;
	/* Advice before the first touch, so the zero-fill faults in huge pages.  It fails only
	 * where THP is compiled out; the block then stays on 4 KiB pages, as it would anyway. */
	(void)madvise(p, rounded, MADV_HUGEPAGE);
	memset(p, 0, rounded);
	return p;
}

void tm_free_aligned(void *p)
{
	free(p);
}

// ---- arena ----

int tm_arena_init(tm_arena *a, size_t cap, tm_err *err)
{
	a->base = tm_alloc_aligned(cap);
	a->cap = a->base ? cap : 0;
	a->used = 0;
	if (!a->base)
		return tm_err_set(err, TM_ENOMEM, "arena", "arena: cannot allocate %zu bytes", cap);
	return 0;
}

void tm_arena_release(tm_arena *a)
{
	tm_free_aligned(a->base);
	a->base = NULL;
	a->cap = a->used = 0;
}

void *tm_arena_alloc(tm_arena *a, size_t bytes)
{
	size_t start = (a->used + 63) & ~(size_t)63;
	if (start > a->cap || bytes > a->cap - start)
		return NULL;
	a->used = start + bytes;
	return a->base + start;
}

void tm_arena_reset(tm_arena *a)
{
	a->used = 0;
}

// ---- time ----

uint64_t tm_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
