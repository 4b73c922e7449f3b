/* peak.c: the machine's measured single-core FP32 peak: independent FMA chains on registers,
 * long enough to hide latency, for AVX-512 and AVX2.  Built with SIMD flags; the caller only
 * calls the variant the CPU supports. */
#include "bench.h"

#include <immintrin.h>

#define CHAINS 12

double bench_peak_gflops_avx512(double seconds)
{
	__m512 acc[CHAINS];
	for (int i = 0; i < CHAINS; i++)
		acc[i] = _mm512_set1_ps((float)i * 1e-3f);
	const __m512 a = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
	uint64_t iters = 0, t0 = tm_now_ns(), t1;
	do {
		for (int r = 0; r < 1000; r++) {
			/* Fully unrolled so the chains live in registers, not in acc[] in memory. */
#pragma GCC unroll 12
			for (int i = 0; i < CHAINS; i++)
				acc[i] = _mm512_fmadd_ps(acc[i], a, c);
		}
		iters += 1000;
		t1 = tm_now_ns();
	} while ((double)(t1 - t0) < seconds * 1e9);
	volatile float sink = 0;
	for (int i = 0; i < CHAINS; i++)
		sink += _mm512_reduce_add_ps(acc[i]);
	(void)sink;
	return (double)iters * CHAINS * 16 * 2 / ((double)(t1 - t0));
}

double bench_peak_gflops_avx2(double seconds)
{
	__m256 acc[CHAINS];
	for (int i = 0; i < CHAINS; i++)
		acc[i] = _mm256_set1_ps((float)i * 1e-3f);
	const __m256 a = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
	uint64_t iters = 0, t0 = tm_now_ns(), t1;
	do {
		for (int r = 0; r < 1000; r++) {
#pragma GCC unroll 12
			for (int i = 0; i < CHAINS; i++)
				acc[i] = _mm256_fmadd_ps(acc[i], a, c);
		}
		iters += 1000;
		t1 = tm_now_ns();
	} while ((double)(t1 - t0) < seconds * 1e9);
	float out[8];
	volatile float sink = 0;
	for (int i = 0; i < CHAINS; i++) {
		_mm256_storeu_ps(out, acc[i]);
		sink += out[0];
	}
	(void)sink;
	return (double)iters * CHAINS * 8 * 2 / ((double)(t1 - t0));
}
