/* cpu.c: CPU feature detection and the kernel sets (ISAs) the dispatcher chooses between.
 * Features come from __builtin_cpu_supports, so a binary built for baseline x86-64 picks its
 * SIMD kernels at run time; the model name comes from /proc/cpuinfo. */
#include "engine.h"

#include <stdio.h>
#include <string.h>

void tm_cpu_detect(tm_cpu *cpu)
{
	memset(cpu, 0, sizeof(*cpu));
#if defined(__x86_64__) || defined(__i386__)
	__builtin_cpu_init();
	cpu->avx2 = __builtin_cpu_supports("avx2");
	cpu->fma = __builtin_cpu_supports("fma");
	cpu->avx512f = __builtin_cpu_supports("avx512f");
	cpu->avx512bw = __builtin_cpu_supports("avx512bw");
	cpu->avx512vl = __builtin_cpu_supports("avx512vl");
	cpu->avx512vnni = __builtin_cpu_supports("avx512vnni");
#if __GNUC__ >= 11
	cpu->avxvnni = __builtin_cpu_supports("avxvnni");
#endif
#endif
	snprintf(cpu->model, sizeof(cpu->model), "unknown");
	FILE *f = fopen("/proc/cpuinfo", "r");
	if (!f)
		return;
	char line[512];
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "model name", 10) != 0)
			continue;
		const char *colon = strchr(line, ':');
		if (!colon)
			break;
		colon++;
		while (*colon == ' ' || *colon == '\t')
			colon++;
		snprintf(cpu->model, sizeof(cpu->model), "%s", colon);
		cpu->model[strcspn(cpu->model, "\n")] = '\0';
		break;
	}
	fclose(f);
}

static const char *const isa_names[] = {
	[TM_ISA_PORTABLE] = "portable",
	[TM_ISA_AVX2] = "avx2",
	[TM_ISA_AVX512] = "avx512",
};

bool tm_isa_supported(const tm_cpu *cpu, tm_isa isa)
{
	switch (isa) {
	case TM_ISA_PORTABLE:
		return true;
	case TM_ISA_AVX2:
		return cpu->avx2 && cpu->fma;
	case TM_ISA_AVX512:
		return cpu->avx512f && cpu->avx512bw && cpu->avx512vl && cpu->fma;
	}
	return false;
}

tm_isa tm_isa_best(const tm_cpu *cpu)
{
	if (tm_isa_supported(cpu, TM_ISA_AVX512))
		return TM_ISA_AVX512;
	if (tm_isa_supported(cpu, TM_ISA_AVX2))
		return TM_ISA_AVX2;
	return TM_ISA_PORTABLE;
}

const char *tm_isa_name(tm_isa isa)
{
	if ((unsigned)isa >= sizeof(isa_names) / sizeof(isa_names[0]))
		return "unknown";
	return isa_names[isa];
}

int tm_isa_parse(const char *name, const tm_cpu *cpu, tm_isa *out, tm_err *err)
{
	if (strcmp(name, "auto") == 0) {
		*out = tm_isa_best(cpu);
		return 0;
	}
	for (unsigned i = 0; i < sizeof(isa_names) / sizeof(isa_names[0]); i++) {
		if (strcmp(name, isa_names[i]) != 0)
			continue;
		if (!tm_isa_supported(cpu, (tm_isa)i))
			return tm_err_set(err, TM_EINVAL, "kernels",
					  "kernels: '%s' is not supported by this cpu", name);
		*out = (tm_isa)i;
		return 0;
	}
	return tm_err_set(err, TM_EINVAL, "kernels",
			  "kernels: '%s' is unknown, must be one of auto, portable, avx2, avx512", name);
}
