/* bench.c: tm-bench, run by `make bench`.  Runs each section of the table, prints one table
 * row per target and writes the records to a JSON file (DESIGN.md's bench format). */
#include "bench.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cjson/cJSON.h>

typedef struct bench_section {
	const char *name;
	void (*run)(bench_ctx *b);
} bench_section;

static const bench_section sections[] = {
	{ "peak", bench_peak },
	{ "gemm", bench_gemm },
	{ "int8", bench_int8 },
	{ "sparse", bench_sparse },
	{ "quality", bench_quality },
	{ "kv", bench_kv },
	{ "http", bench_http },
};

void bench_add(bench_ctx *b, const char *name, double value, const char *unit,
	       const char *anchor, double anchor_value, bool higher_is_better, double target)
{
	if (b->n_rows == b->cap_rows) {
		b->cap_rows = b->cap_rows ? 2 * b->cap_rows : 32;
		bench_record *r = realloc(b->rows, sizeof(*r) * (size_t)b->cap_rows);
		if (!r)
			abort();
		b->rows = r;
	}
	bench_record *r = &b->rows[b->n_rows++];
	memset(r, 0, sizeof(*r));
	snprintf(r->name, sizeof(r->name), "%s", name);
	snprintf(r->unit, sizeof(r->unit), "%s", unit);
	snprintf(r->anchor, sizeof(r->anchor), "%s", anchor);
	r->value = value;
	r->anchor_value = anchor_value;
	if (anchor_value > 0 && value > 0)
		r->ratio = higher_is_better ? value / anchor_value : anchor_value / value;
	r->target = target;
	r->holds = target <= 0 || r->ratio >= target;
	printf("%-40s %12.3f %-10s %-30s %12.3f %8.3f %8.2f  %s\n", r->name, r->value, r->unit,
	       r->anchor, r->anchor_value, r->ratio, r->target,
	       target <= 0 ? "info" : r->holds ? "holds" : "MISSED");
	fflush(stdout);
}

double bench_time_min(void (*fn)(void *), void *arg, double min_s)
{
	double best = 1e30, total = 0;
	int runs = 0;
	while (runs < 3 || total < min_s) {
		uint64_t t0 = tm_now_ns();
		fn(arg);
		double s = (double)(tm_now_ns() - t0) / 1e9;
		if (s < best)
			best = s;
		total += s;
		runs++;
	}
	return best;
}

void bench_peak(bench_ctx *b)
{
	double s = b->quick ? 0.2 : 1.0;
	double avx2 = tm_prof_peak_gflops(&b->cpu, TM_ISA_AVX2, s);      /* 0 if unsupported */
	double avx512 = tm_prof_peak_gflops(&b->cpu, TM_ISA_AVX512, s);
	b->peak_gflops = avx512 > avx2 ? avx512 : avx2;
	if (avx2 > 0)
		bench_add(b, "fp32_peak_avx2", avx2, "GFLOP/s", "fp32_peak", b->peak_gflops, true, 0);
	if (avx512 > 0)
		bench_add(b, "fp32_peak_avx512", avx512, "GFLOP/s", "fp32_peak", b->peak_gflops,
			  true, 0);
}

static int write_json(const bench_ctx *b, const char *path)
{
	cJSON *arr = cJSON_CreateArray();
	for (int i = 0; i < b->n_rows; i++) {
		const bench_record *r = &b->rows[i];
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "name", r->name);
		cJSON_AddNumberToObject(o, "value", r->value);
		cJSON_AddStringToObject(o, "unit", r->unit);
		cJSON_AddStringToObject(o, "anchor", r->anchor);
		cJSON_AddNumberToObject(o, "anchor_value", r->anchor_value);
		cJSON_AddNumberToObject(o, "ratio", r->ratio);
		cJSON_AddNumberToObject(o, "target", r->target);
		cJSON_AddBoolToObject(o, "holds", r->holds);
		cJSON_AddStringToObject(o, "machine", b->machine);
		cJSON_AddItemToArray(arr, o);
	}
	char *text = cJSON_Print(arr);
	cJSON_Delete(arr);
	FILE *f = fopen(path, "w");
	if (!f) {
		free(text);
		return -1;
	}
	fputs(text, f);
	fputc('\n', f);
	free(text);
	return fclose(f);
}

int main(int argc, char **argv)
{
	bench_ctx b = { 0 };
	const char *json_path = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0 && i + 1 < argc)
			json_path = argv[++i];
		else if (strcmp(argv[i], "--quick") == 0)
			b.quick = true;
		else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
			b.filter = argv[++i];
		else {
			fprintf(stderr, "usage: tm-bench [--json FILE] [--quick] [--only SECTION]\n");
			return 64;
		}
	}
	tm_cpu_detect(&b.cpu);
	/* OpenBLAS picks its kernels by CPU model when it loads, and takes a model newer than
	 * itself for an old one (Debian 12's 0.3.21 runs SSE3 kernels on an Emerald Rapids), which
	 * would make the anchor several times too slow.  Then rerun with OPENBLAS_CORETYPE naming
	 * the core for this CPU's vectors; a core the user set is kept. */
	const char *better = bench_openblas_better_core(&b.cpu);
	if (better && !getenv("OPENBLAS_CORETYPE")) {
		printf("openblas: took this CPU for %s; rerunning with OPENBLAS_CORETYPE=%s\n",
		       bench_openblas_core(), better);
		fflush(stdout);
		if (setenv("OPENBLAS_CORETYPE", better, 1) == 0)
			execv("/proc/self/exe", argv);
		fprintf(stderr, "tm-bench: cannot rerun with OPENBLAS_CORETYPE: %s\n", strerror(errno));
	}
	struct utsname u;
	uname(&u);
	snprintf(b.machine, sizeof(b.machine), "%.96s, %.32s %.32s, best kernels %s, openblas %s",
		 b.cpu.model, u.sysname, u.machine, tm_isa_name(tm_isa_best(&b.cpu)),
		 bench_openblas_core());
	printf("machine: %s\n", b.machine);
	printf("%-40s %12s %-10s %-30s %12s %8s %8s  %s\n", "name", "value", "unit", "anchor",
	       "anchor_value", "ratio", "target", "holds");
	for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++) {
		if (b.filter && strcmp(sections[i].name, "peak") != 0 &&
		    !strstr(sections[i].name, b.filter))
			continue;
		sections[i].run(&b);
	}
	int rc = 0;
	if (json_path && write_json(&b, json_path) != 0) {
		fprintf(stderr, "tm-bench: cannot write '%s'\n", json_path);
		rc = 1;
	} else if (json_path) {
		printf("wrote %s (%d records)\n", json_path, b.n_rows);
	}
	free(b.rows);
	return rc;
}
