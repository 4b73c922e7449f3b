/* bench_gemm.c: placeholder until the GEMM section lands in this session. */
#include "bench.h"

void bench_gemm(bench_ctx *b)
{
	(void)b;
}
