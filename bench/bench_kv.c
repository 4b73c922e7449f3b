/* bench_kv.c: KV-cached generation vs uncached (placeholder while the section is written). */
#include "bench.h"

void bench_kv(bench_ctx *b)
{
	(void)b;
}
