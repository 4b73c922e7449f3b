/* fake_worker.c: tm-fake-worker, a stand-in for tinymlperf-run in the daemon's fault tests
 * (tinymlperfd --worker build/tm-fake-worker).  It takes the same command line, reads the
 * config's "name" and misbehaves as told: "fault:segv" crashes, "fault:hang" never ends,
 * "fault:garbage" prints a line that is not the protocol, "fault:flood" prints without end,
 * "fault:oom" allocates past its --limit-memory address-space limit, "fault:badresult" prints a
 * result that does not validate, a name containing "slow" takes about two seconds; any other name prints
 * progress and a valid result whose speedup is read from the name ("speedup:1.5"). */
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *buf = calloc(1, 1 << 20);
	size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
	(void)n;
	fclose(f);
	return buf;
}

static void progress(const char *stage, double pct)
{
	printf("{\"type\":\"progress\",\"stage\":\"%s\",\"pct\":%.1f,\"message\":\"fake %s\"}\n",
	       stage, pct, stage);
	fflush(stdout);
}

static void result(const char *event, const char *division, long id, double speedup, bool good)
{
	cJSON *r = cJSON_CreateObject();
	cJSON_AddStringToObject(r, "type", "result");
	cJSON_AddStringToObject(r, "event", event);
	cJSON_AddStringToObject(r, "division", division);
	cJSON_AddNumberToObject(r, "submission", (double)id);
	cJSON_AddStringToObject(r, "status", "finished");
	cJSON_AddBoolToObject(r, "valid", true);
	cJSON_AddArrayToObject(r, "invalid_reasons");
	cJSON *q = cJSON_AddObjectToObject(r, "quality");
	cJSON_AddStringToObject(q, "metric", "accuracy");
	cJSON_AddNumberToObject(q, "value", 0.88);
	cJSON_AddNumberToObject(q, "reference", 0.89);
	cJSON_AddBoolToObject(q, "passed", true);
	cJSON *l = cJSON_AddObjectToObject(r, "latency");
	cJSON_AddNumberToObject(l, "p90", 1000.0 / speedup);
	cJSON *t = cJSON_AddObjectToObject(r, "throughput");
	cJSON_AddNumberToObject(t, "value", 1e6 * speedup);
	cJSON_AddStringToObject(t, "unit", "queries/s");
	cJSON *s = cJSON_AddObjectToObject(r, "speedup");
	cJSON_AddNumberToObject(s, "value", speedup);
	cJSON_AddNumberToObject(s, "ci_low", speedup * 0.95);
	cJSON_AddNumberToObject(s, "ci_high", speedup * 1.05);
	if (good) {
		cJSON *m = cJSON_AddObjectToObject(r, "model");
		cJSON_AddNumberToObject(m, "bytes", 1000);
		cJSON_AddNumberToObject(m, "compression", 1.0);
	}
	cJSON *tm = cJSON_AddObjectToObject(r, "timings");
	cJSON *a = cJSON_AddArrayToObject(tm, "submission");
	cJSON *b = cJSON_AddArrayToObject(tm, "baseline");
	for (int i = 0; i < 100; i++) {
		cJSON_AddItemToArray(a, cJSON_CreateNumber(1000.0 / speedup + i));
		cJSON_AddItemToArray(b, cJSON_CreateNumber(1000.0 + i));
	}
	cJSON_AddBoolToObject(tm, "truncated", false);
	char *json = cJSON_PrintUnformatted(r);
	puts(json);
	fflush(stdout);
	free(json);
	cJSON_Delete(r);
}

int main(int argc, char **argv)
{
	long id = 0, mem_mb = 0;
	for (int i = 1; i + 1 < argc; i++) {
		if (strcmp(argv[i], "--submission") == 0)
			id = strtol(argv[i + 1], NULL, 10);
		if (strcmp(argv[i], "--limit-memory") == 0)
			mem_mb = strtol(argv[i + 1], NULL, 10);
	}
	if (argc < 3 || strcmp(argv[1], "run") != 0) {
		fprintf(stderr, "tm-fake-worker: only 'run' is faked\n");
		return 4;
	}
	char *text = slurp(argv[argc - 1]);
	cJSON *cfg = text ? cJSON_Parse(text) : NULL;
	const cJSON *ev = cJSON_GetObjectItemCaseSensitive(cfg, "event");
	const cJSON *nm = cJSON_GetObjectItemCaseSensitive(cfg, "name");
	const cJSON *dv = cJSON_GetObjectItemCaseSensitive(cfg, "division");
	if (!cJSON_IsString(ev)) {
		fprintf(stderr, "tm-fake-worker: cannot read the config '%s'\n", argv[argc - 1]);
		return 2;
	}
	const char *name = cJSON_IsString(nm) ? nm->valuestring : "";
	const char *division = cJSON_IsString(dv) ? dv->valuestring : "closed";
	progress("load", 5);
	if (strcmp(name, "fault:segv") == 0) {
		fprintf(stderr, "about to crash\n");
		fflush(stderr);
		signal(SIGSEGV, SIG_DFL);  /* die by the signal even under a sanitizer's handler */
		raise(SIGSEGV);
	} else if (strcmp(name, "fault:hang") == 0) {
		for (;;)
			sleep_ms(1000);
	} else if (strcmp(name, "fault:garbage") == 0) {
		puts("this is not a protocol line");
		fflush(stdout);
		sleep_ms(5000);
	} else if (strcmp(name, "fault:flood") == 0) {
		static char line[65536];
		memset(line, 'x', sizeof(line) - 2);
		line[sizeof(line) - 2] = '\n';
		for (;;)
			fputs(line, stderr);
	} else if (strcmp(name, "fault:oom") == 0) {
		struct rlimit rl = { (rlim_t)mem_mb << 20, (rlim_t)mem_mb << 20 };
		setrlimit(RLIMIT_AS, &rl);
		for (size_t total = 0;; total += 16u << 20) {
			char *p = malloc(16u << 20);
			if (!p) {
				fprintf(stderr, "tm-fake-worker: memory limit of %ld MiB reached\n", mem_mb);
				return 3;
			}
			memset(p, 1, 16u << 20);
		}
	} else if (strcmp(name, "fault:badresult") == 0) {
		result(ev->valuestring, division, id, 2.0, false);
		return 0;
	} else if (strstr(name, "slow")) {
		for (int i = 1; i <= 20; i++) {
			sleep_ms(100);
			progress("benchmark", 5 + i * 4.5);
		}
	}
	double speedup = 2.0;
	const char *sp = strstr(name, "speedup:");
	if (sp)
		speedup = strtod(sp + 8, NULL);
	progress("quality", 40);
	progress("benchmark", 90);
	result(ev->valuestring, division, id, speedup > 0 ? speedup : 2.0, true);
	cJSON_Delete(cfg);
	free(text);
	return 0;
}
