/* bench.h: the `make bench` harness.  Each section measures something and its anchor in the
 * same run and records one row per target: {name, value, unit, anchor, anchor_value, ratio,
 * target, holds, machine} (DESIGN.md).  A missed target is reported, never an error. */
#ifndef TM_BENCH_H
#define TM_BENCH_H

#include "engine.h"

#include <stdbool.h>
#include <stdio.h>

typedef struct bench_record {
	char name[96];
	double value;
	char unit[24];
	char anchor[96];
	double anchor_value;
	double ratio;        /* oriented so that higher is better */
	double target;       /* the ratio the issue asks for; 0 = informational */
	bool holds;
} bench_record;

typedef struct bench_ctx {
	tm_cpu cpu;
	char machine[256];
	bench_record *rows;  /* (n_rows) */
	int n_rows, cap_rows;
	double peak_gflops;  /* measured single-core FP32 peak, for context */
	bool quick;          /* --quick: shorter timings */
	const char *filter;  /* run only sections whose name contains this */
} bench_ctx;

/* Append a row and print it.  ratio and holds are computed here: ratio = value/anchor_value
 * when higher_is_better, anchor_value/value otherwise. */
void bench_add(bench_ctx *b, const char *name, double value, const char *unit,
	       const char *anchor, double anchor_value, bool higher_is_better, double target);

/* Run fn repeatedly for at least min_s seconds (and 3 times); return the fastest run's
 * seconds.  Used for every timing so sections agree on the method. */
double bench_time_min(void (*fn)(void *), void *arg, double min_s);

// ---- sections: one row each in bench.c's table ----
void bench_peak(bench_ctx *b);
void bench_gemm(bench_ctx *b);   /* bench_gemm.c: our sgemm vs OpenBLAS cblas_sgemm */
/* bench_gemm.c: the OpenBLAS core (kernel set) loaded, and the one that uses cpu's widest
 * vectors when OpenBLAS chose one with narrower vectors (an unknown, newer CPU model is
 * taken for an old one), else NULL. */
const char *bench_openblas_core(void);
const char *bench_openblas_better_core(const tm_cpu *cpu);
void bench_int8(bench_ctx *b);   /* bench_int8.c: our INT8 GEMM vs our FP32 GEMM */
void bench_sparse(bench_ctx *b); /* bench_sparse.c: sparse linear vs our fastest dense */
void bench_quality(bench_ctx *b); /* bench_quality.c: accuracy after INT8 / pruning, end-to-end speed */
void bench_kv(bench_ctx *b);     /* bench_kv.c: KV-cached vs uncached generation */
void bench_http(bench_ctx *b);   /* bench_http.c: tinymlperfd under wrk vs a static MHD server */

#endif
