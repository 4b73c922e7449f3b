/* optim.c: optimizers over a model's flat parameter vector (SGD with momentum, Adam, AdamW),
 * gradient clipping, and the seeded random generator used for shuffling and initialisation. */
#include "engine.h"

#include <math.h>
#include <string.h>

int tm_optim_init(tm_optim *o, tm_optim_kind kind, size_t n, tm_err *err)
{
	memset(o, 0, sizeof(*o));
	o->kind = kind;
	o->n = n;
	o->momentum = 0.9f;
	o->beta1 = 0.9f;
	o->beta2 = 0.999f;
	o->eps = 1e-8f;
	o->m = tm_alloc_aligned(n * sizeof(float));
	if (kind != TM_OPTIM_SGD)
		o->v = tm_alloc_aligned(n * sizeof(float));
	if (!o->m || (kind != TM_OPTIM_SGD && !o->v)) {
		tm_optim_release(o);
		return tm_err_set(err, TM_ENOMEM, "optimizer",
				  "optimizer: cannot allocate state for %zu parameters", n);
	}
	return 0;
}

void tm_optim_release(tm_optim *o)
{
	tm_free_aligned(o->m);
	tm_free_aligned(o->v);
	o->m = o->v = NULL;
}

void tm_optim_step(tm_optim *o, float *params, const float *grads, float lr)
{
	o->step++;
	const float wd = o->weight_decay;
	if (o->kind == TM_OPTIM_SGD) {
		const float mu = o->momentum;
		for (size_t i = 0; i < o->n; i++) {
			float g = grads[i] + wd * params[i];
			o->m[i] = mu * o->m[i] + g;
			params[i] -= lr * o->m[i];
		}
		return;
	}
	const float b1 = o->beta1, b2 = o->beta2, eps = o->eps;
	const float c1 = 1.0f / (1.0f - powf(b1, (float)o->step));
	const float c2 = 1.0f / (1.0f - powf(b2, (float)o->step));
	const bool decoupled = o->kind == TM_OPTIM_ADAMW;
	for (size_t i = 0; i < o->n; i++) {
		float g = grads[i] + (decoupled ? 0.0f : wd * params[i]);
		o->m[i] = b1 * o->m[i] + (1.0f - b1) * g;
		o->v[i] = b2 * o->v[i] + (1.0f - b2) * g * g;
		float upd = (o->m[i] * c1) / (sqrtf(o->v[i] * c2) + eps);
		if (decoupled)
			upd += wd * params[i];
		params[i] -= lr * upd;
	}
}

float tm_grad_clip(float *grads, size_t n, float max_norm)
{
	double ss = 0;
	for (size_t i = 0; i < n; i++)
		ss += (double)grads[i] * grads[i];
	float norm = (float)sqrt(ss);
	if (norm > max_norm && norm > 0) {
		float s = max_norm / norm;
		for (size_t i = 0; i < n; i++)
			grads[i] *= s;
	}
	return norm;
}

// ---- random numbers ----

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

void tm_rng_seed(tm_rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t tm_rng_next(tm_rng *r)
{
	uint64_t *s = r->s;
	uint64_t result = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

float tm_rng_uniform(tm_rng *r)
{
	return (float)(tm_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

float tm_rng_normal(tm_rng *r)
{
	/* Box-Muller; u1 in (0, 1] so the log is finite. */
	float u1 = 1.0f - tm_rng_uniform(r), u2 = tm_rng_uniform(r);
	return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795864f * u2);
}

uint32_t tm_rng_below(tm_rng *r, uint32_t n)
{
	uint64_t m = (uint64_t)(uint32_t)tm_rng_next(r) * n;
	uint32_t lo = (uint32_t)m;
	if (lo < n) {
		uint32_t t = -n % n;
		while (lo < t) {
			m = (uint64_t)(uint32_t)tm_rng_next(r) * n;
			lo = (uint32_t)m;
		}
	}
	return (uint32_t)(m >> 32);
}

void tm_rng_shuffle(tm_rng *r, int32_t *v, int n)
{
	for (int i = n - 1; i > 0; i--) {
		int j = (int)tm_rng_below(r, (uint32_t)i + 1);
		int32_t t = v[i];
		v[i] = v[j];
		v[j] = t;
	}
}
