/* prof.c: the per-layer profiler and the OS's peak-memory figure.  A profile is a fixed table of
 * named entries filled in first-call order; layers look their entry up by name once per call
 * and add the time, FLOPs and bytes of that call.  Nothing here allocates, so profiling a run
 * does not change its memory footprint. */
#include "engine.h"

#include <string.h>
#include <sys/resource.h>

static void copy_str(char *dst, size_t cap, const char *src)
{
	size_t n = src ? strlen(src) : 0;
	if (n >= cap)
		n = cap - 1;
	if (n)
		memcpy(dst, src, n);
	dst[n] = '\0';
}

void tm_prof_reset(tm_prof *p)
{
	if (p)
		p->n = 0;
}

tm_prof_entry *tm_prof_entry_get(tm_prof *p, const char *layer, const char *op,
				 const char *kernel)
{
	if (!p)
		return NULL;
	for (int i = 0; i < p->n; i++)
		if (strncmp(p->e[i].layer, layer, sizeof(p->e[i].layer) - 1) == 0)
			return &p->e[i];
	if (p->n >= TM_PROF_MAX)
		return NULL;
	tm_prof_entry *e = &p->e[p->n++];
	memset(e, 0, sizeof(*e));
	copy_str(e->layer, sizeof(e->layer), layer);
	copy_str(e->op, sizeof(e->op), op);
	copy_str(e->kernel, sizeof(e->kernel), kernel);
	return e;
}

void tm_prof_add(tm_prof_entry *e, int64_t time_ns, int64_t flops, int64_t bytes)
{
	if (!e)
		return;
	e->calls++;
	e->time_ns += time_ns;
	e->flops += flops;
	e->bytes += bytes;
}

int64_t tm_peak_rss_bytes(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return 0;
	return (int64_t)ru.ru_maxrss * 1024;  /* Linux reports kilobytes */
}
