/* prof.c: the per-layer profiler and the OS's peak-memory figure.  A profile is a fixed table of
 * named entries filled in first-call order; layers look their entry up by name once per call
 * and add the time, FLOPs and bytes of that call.  Nothing here allocates, so profiling a run
 * does not change its memory footprint. */
#include "engine.h"
#include "gemm_int.h"

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

#define PEAK_CHAINS 12  /* independent chains, as the SIMD variants in gemm_avx2/avx512.c */

/* Scalar chains for CPUs without AVX2: the compiler may not fuse them, so each step is counted
 * as a multiply and an add. */
static double peak_scalar(double seconds)
{
	float acc[PEAK_CHAINS];
	for (int i = 0; i < PEAK_CHAINS; i++)
		acc[i] = (float)i * 1e-3f;
	uint64_t iters = 0, t0 = tm_now_ns(), t1;
	do {
		for (int r = 0; r < 1000; r++)
			for (int i = 0; i < PEAK_CHAINS; i++)
				acc[i] = acc[i] * 0.999999f + 1e-7f;
		iters += 1000;
		t1 = tm_now_ns();
	} while ((double)(t1 - t0) < seconds * 1e9);
	volatile float sink = 0;
	for (int i = 0; i < PEAK_CHAINS; i++)
		sink += acc[i];
	(void)sink;
	return (double)iters * PEAK_CHAINS * 2 / (double)(t1 - t0);
}

double tm_prof_peak_gflops(const tm_cpu *cpu, tm_isa isa, double seconds)
{
	if (!tm_isa_supported(cpu, isa))
		return 0;
	if (!(seconds > 0))
		seconds = 0.05;
	switch (isa) {
	case TM_ISA_AVX512: return gemm_peak_avx512(seconds);
	case TM_ISA_AVX2: return gemm_peak_avx2(seconds);
	case TM_ISA_PORTABLE: break;
	}
	return peak_scalar(seconds);
}
