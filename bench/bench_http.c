/* bench_http.c: the daemon under load vs a static libmicrohttpd anchor (placeholder while the section is written). */
#include "bench.h"

void bench_http(bench_ctx *b)
{
	(void)b;
}
