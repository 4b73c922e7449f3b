/* run_main.c: tinymlperf-run, the worker the daemon spawns and the local runner competitors
 * use.  Subcommands grow with the Events issue; this is the command-line skeleton. */
#include "engine.h"

#include <stdio.h>
#include <string.h>
#include <sysexits.h>

static void usage(FILE *out)
{
	fprintf(out, "usage: tinymlperf-run COMMAND [options]\n\n"
		     "commands:\n"
		     "  cpu          print this CPU's features and the kernel set 'auto' picks\n"
		     "  --help       print this help\n"
		     "  --version    print the version\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EX_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("tinymlperf-run %s (%s)\n", TM_ENGINE_VERSION, tm_git_revision());
		return 0;
	}
	if (strcmp(argv[1], "cpu") == 0) {
		tm_cpu cpu;
		tm_cpu_detect(&cpu);
		printf("model: %s\navx2: %d\nfma: %d\navx512f: %d\navx512bw: %d\navx512vl: %d\n"
		       "avx512vnni: %d\navxvnni: %d\nkernels: %s\n", cpu.model, cpu.avx2, cpu.fma,
		       cpu.avx512f, cpu.avx512bw, cpu.avx512vl, cpu.avx512vnni, cpu.avxvnni,
		       tm_isa_name(tm_isa_best(&cpu)));
		return 0;
	}
	fprintf(stderr, "tinymlperf-run: unknown command '%s' (see --help)\n", argv[1]);
	return EX_USAGE;
}
