/* harness.c: the measurement loop shared by the three events.  It only times and records;
 * statistics (stats.c) and verdicts are computed from what it returns.  Queries are numbered
 * consecutively per workload across warm-up and measurement, so a workload can walk a seeded
 * order of test items without repeating the warm-up's. */
#include "events.h"

#include <stdlib.h>
#include <string.h>

void hx_opts_default(hx_opts *o)
{
	o->min_count = 1024;
	o->min_duration_s = 5.0;
	o->max_duration_s = 60.0;
	o->warmup_count = 32;
	o->warmup_s = 0.2;
	o->block = 32;
	o->rewarm = 0;
	o->align = false;
	o->on_block = NULL;
	o->on_block_arg = NULL;
}

static int series_push(hx_series *s, double ns)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 1024;
		double *p = realloc(s->ns, cap * sizeof(double));
		if (!p)
			return -1;
		s->ns = p;
		s->cap = cap;
	}
	s->ns[s->n++] = ns;
	return 0;
}

static int pairs_push(hx_result *r, double sub_s, double base_s)
{
	if (r->n_pairs == r->cap_pairs) {
		size_t cap = r->cap_pairs ? 2 * r->cap_pairs : 64;
		double *a = realloc(r->pair_sub_s, cap * sizeof(double));
		if (!a)
			return -1;
		r->pair_sub_s = a;
		double *b = realloc(r->pair_base_s, cap * sizeof(double));
		if (!b)
			return -1;
		r->pair_base_s = b;
		r->cap_pairs = cap;
	}
	r->pair_sub_s[r->n_pairs] = sub_s;
	r->pair_base_s[r->n_pairs] = base_s;
	r->n_pairs++;
	return 0;
}

/* Run n queries of w starting at *next, timing each into s (NULL: untimed); returns seconds. */
static double run_block(const hx_workload *w, int64_t *next, size_t n, hx_series *s, int *oom)
{
	double total = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t t0 = tm_now_ns();
		w->query(w->arg, (*next)++);
		uint64_t dt = tm_now_ns() - t0;
		total += (double)dt * 1e-9;
		if (s && series_push(s, (double)dt) != 0)
			*oom = 1;
	}
	return total;
}

static void warm_up(const hx_opts *o, const hx_workload *w, int64_t *next)
{
	size_t done = 0;
	uint64_t t0 = tm_now_ns();
	int oom = 0;
	while (done < o->warmup_count || (double)(tm_now_ns() - t0) * 1e-9 < o->warmup_s) {
		run_block(w, next, 1, NULL, &oom);
		done++;
	}
}

int hx_measure(const hx_opts *o, const hx_workload *sub, const hx_workload *base,
	       hx_result *out, tm_err *err)
{
	memset(out, 0, sizeof(*out));
	if (o->block < 1 || o->min_count < 1)
		return tm_err_set(err, TM_EINVAL, "harness",
				  "harness: block (%zu) and min_count (%zu) must be at least 1",
				  o->block, o->min_count);
	int64_t next_sub = 0, next_base = 0;
	warm_up(o, sub, &next_sub);
	if (base)
		warm_up(o, base, &next_base);
	if (base && o->align) {
		int64_t from = next_sub > next_base ? next_sub : next_base;
		next_sub = next_base = from;
	}

	stats_plan plan;
	stats_plan_init(&plan, o->min_count, o->min_duration_s, 0);
	uint64_t start = tm_now_ns();
	int oom = 0;
	while (!stats_plan_done(&plan)) {
		double elapsed = (double)(tm_now_ns() - start) * 1e-9;
		if (o->max_duration_s > 0 && elapsed >= o->max_duration_s) {
			out->hit_max = true;
			break;
		}
		size_t before = out->sub.n;
		run_block(sub, &next_sub, o->rewarm, NULL, &oom);
		double s = run_block(sub, &next_sub, o->block, &out->sub, &oom);
		/* The plan counts the submission's queries and time; the baseline's block follows. */
		for (size_t i = before; i < out->sub.n; i++)
			stats_plan_add(&plan, out->sub.ns[i] * 1e-9);
		out->sub_elapsed_s += s;
		if (base) {
			run_block(base, &next_base, o->rewarm, NULL, &oom);
			double b = run_block(base, &next_base, o->block, &out->base, &oom);
			if (pairs_push(out, s, b) != 0)
				oom = 1;
		}
		if (o->on_block)
			o->on_block(o->on_block_arg, out->sub.n, out->sub_elapsed_s,
				    (double)(tm_now_ns() - start) * 1e-9);
		if (oom) {
			hx_result_release(out);
			return tm_err_set(err, TM_ENOMEM, "harness",
					  "harness: out of memory recording timings");
		}
	}
	out->elapsed_s = (double)(tm_now_ns() - start) * 1e-9;
	return 0;
}

void hx_result_release(hx_result *r)
{
	free(r->sub.ns);
	free(r->base.ns);
	free(r->pair_sub_s);
	free(r->pair_base_s);
	memset(r, 0, sizeof(*r));
}
