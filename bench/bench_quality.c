/* bench_quality.c: quality after INT8 and pruning on the real test sets (placeholder while the section is written). */
#include "bench.h"

void bench_quality(bench_ctx *b)
{
	(void)b;
}
