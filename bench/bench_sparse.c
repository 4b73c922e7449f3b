/* bench_sparse.c: placeholder, replaced below. */
#include "bench.h"

void bench_sparse(bench_ctx *b)
{
	(void)b;
}
