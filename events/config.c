/* config.c: config v1, parsed with cJSON and validated against one table of fields (path,
 * type, bounds, choices, the events and divisions it applies to, where it is stored).  The walk
 * reports every problem with the field's path, the value and the allowed range; cross-field
 * rules and the resource limits run after it.  docs/config.md documents every row. */
#include "events.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

// ---- the field table ----

enum cfg_type { T_OBJ, T_INT, T_NUM, T_BOOL, T_ENUM, T_STR, T_INT_LIST };
enum cfg_store { S_NONE, S_INT, S_I64, S_DOUBLE, S_BOOL, S_ENUM_INT, S_ENUM_BOOL, S_STR };

#define EV_ALL 0u
#define EV_BIT(e) (1u << (e))
#define DIV_ANY 0u
#define DIV_OPEN_ONLY 1u

typedef struct cfg_field {
	const char *path;
	enum cfg_type type;
	double min, max;               /* T_INT, T_NUM, T_INT_LIST (per element) */
	const char *const *choices;    /* T_ENUM, NULL-terminated */
	unsigned events;               /* EV_BIT mask; EV_ALL = every event */
	unsigned divisions;            /* DIV_OPEN_ONLY: rejected in the closed division */
	enum cfg_store store;
	size_t offset, size;           /* into cfg_config */
	int max_len;                   /* T_INT_LIST: elements */
} cfg_field;

static const char *const div_choices[] = { "closed", "open", NULL };
static const char *const kernel_choices[] = { "auto", "portable", "avx2", "avx512", NULL };
static const char *const dtype_choices[] = { "int8", NULL };
static const char *const gran_choices[] = { "per_tensor", "per_channel", NULL };
static const char *const calib_choices[] = { "minmax", "percentile", NULL };
static const char *const method_choices[] = { "magnitude", NULL };
static const char *const scope_choices[] = { "layer", "global", NULL };
static const char *const optim_choices[] = { "sgd", "adam", "adamw", NULL };

#define AT(f) offsetof(cfg_config, f), sizeof(((cfg_config *)0)->f)
#define MLP EV_BIT(EV_MLP_SPRINT)
#define CNN EV_BIT(EV_CNN_MARATHON)
#define TF EV_BIT(EV_TRANSFORMER_DECATHLON)

static const cfg_field fields[] = {
	{ "event", T_STR, 0, 0, NULL, EV_ALL, DIV_ANY, S_NONE, 0, 0, 0 },
	{ "division", T_ENUM, 0, 0, div_choices, EV_ALL, DIV_ANY, S_ENUM_BOOL, AT(open), 0 },
	{ "name", T_STR, 0, 64, NULL, EV_ALL, DIV_ANY, S_STR, AT(name), 0 },
	{ "model", T_OBJ, 0, 0, NULL, EV_ALL, DIV_OPEN_ONLY, S_NONE, 0, 0, 0 },
	{ "model.hidden", T_INT_LIST, 1, 4096, NULL, MLP, DIV_OPEN_ONLY, S_NONE, AT(hidden), 8 },
	{ "model.c1", T_INT, 1, 256, NULL, CNN, DIV_OPEN_ONLY, S_INT, AT(c1), 0 },
	{ "model.c2", T_INT, 1, 256, NULL, CNN, DIV_OPEN_ONLY, S_INT, AT(c2), 0 },
	{ "model.context", T_INT, 128, 256, NULL, TF, DIV_OPEN_ONLY, S_INT, AT(context), 0 },
	{ "model.d_model", T_INT, 8, 512, NULL, TF, DIV_OPEN_ONLY, S_INT, AT(d_model), 0 },
	{ "model.heads", T_INT, 1, 16, NULL, TF, DIV_OPEN_ONLY, S_INT, AT(heads), 0 },
	{ "model.layers", T_INT, 1, 8, NULL, TF, DIV_OPEN_ONLY, S_INT, AT(layers), 0 },
	{ "model.ffn", T_INT, 8, 2048, NULL, TF, DIV_OPEN_ONLY, S_INT, AT(ffn), 0 },
	{ "train", T_OBJ, 0, 0, NULL, EV_ALL, DIV_OPEN_ONLY, S_NONE, 0, 0, 0 },
	{ "train.epochs", T_INT, 1, 50, NULL, MLP | CNN, DIV_OPEN_ONLY, S_INT, AT(epochs), 0 },
	{ "train.lr", T_NUM, 1e-6, 1.0, NULL, EV_ALL, DIV_OPEN_ONLY, S_DOUBLE, AT(lr), 0 },
	{ "train.batch", T_INT, 1, 4096, NULL, EV_ALL, DIV_OPEN_ONLY, S_INT, AT(batch), 0 },
	{ "train.seed", T_INT, 0, 9007199254740991.0, NULL, EV_ALL, DIV_OPEN_ONLY, S_I64, AT(seed), 0 },
	{ "train.optimizer", T_ENUM, 0, 0, optim_choices, EV_ALL, DIV_OPEN_ONLY, S_ENUM_INT, AT(optimizer), 0 },
	{ "train.minutes", T_NUM, 0.1, 60, NULL, TF, DIV_OPEN_ONLY, S_DOUBLE, AT(train_minutes), 0 },
	{ "optimize", T_OBJ, 0, 0, NULL, EV_ALL, DIV_ANY, S_NONE, 0, 0, 0 },
	{ "optimize.kernels", T_ENUM, 0, 0, kernel_choices, EV_ALL, DIV_ANY, S_STR, AT(kernels), 0 },
	{ "optimize.threads", T_INT, 1, 64, NULL, EV_ALL, DIV_ANY, S_INT, AT(threads), 0 },
	{ "optimize.quantize", T_OBJ, 0, 0, NULL, EV_ALL, DIV_ANY, S_NONE, 0, 0, 0 },
	{ "optimize.quantize.dtype", T_ENUM, 0, 0, dtype_choices, EV_ALL, DIV_ANY, S_NONE, 0, 0, 0 },
	{ "optimize.quantize.granularity", T_ENUM, 0, 0, gran_choices, EV_ALL, DIV_ANY, S_ENUM_BOOL, AT(per_channel), 0 },
	{ "optimize.quantize.calibration_samples", T_INT, 1, 10000, NULL, EV_ALL, DIV_ANY, S_INT, AT(calibration_samples), 0 },
	{ "optimize.quantize.calibration", T_ENUM, 0, 0, calib_choices, EV_ALL, DIV_ANY, S_ENUM_INT, AT(calibration), 0 },
	{ "optimize.quantize.percentile", T_NUM, 90, 100, NULL, EV_ALL, DIV_ANY, S_DOUBLE, AT(calibration_percentile), 0 },
	{ "optimize.prune", T_OBJ, 0, 0, NULL, EV_ALL, DIV_ANY, S_NONE, 0, 0, 0 },
	{ "optimize.prune.method", T_ENUM, 0, 0, method_choices, EV_ALL, DIV_ANY, S_NONE, 0, 0, 0 },
	{ "optimize.prune.sparsity", T_NUM, 0, 0.99, NULL, EV_ALL, DIV_ANY, S_DOUBLE, AT(sparsity), 0 },
	{ "optimize.prune.structured", T_BOOL, 0, 0, NULL, EV_ALL, DIV_ANY, S_BOOL, AT(structured), 0 },
	{ "optimize.prune.scope", T_ENUM, 0, 0, scope_choices, EV_ALL, DIV_ANY, S_ENUM_BOOL, AT(prune_global), 0 },
	{ "optimize.prune.finetune_epochs", T_INT, 0, 3, NULL, EV_ALL, DIV_ANY, S_INT, AT(finetune_epochs), 0 },
	{ "optimize.kv_cache", T_BOOL, 0, 0, NULL, TF, DIV_ANY, S_BOOL, AT(kv_cache), 0 },
	{ "batch_size", T_INT, 1, 10000, NULL, CNN, DIV_ANY, S_INT, AT(batch_size), 0 },
};
#define N_FIELDS (sizeof(fields) / sizeof(fields[0]))
_Static_assert(N_FIELDS <= 64, "cfg_config.given has one bit per field row");

/* Whether the document gave the field at path (a row of the table). */
static bool cfg_given(const cfg_config *c, const char *path)
{
	for (size_t i = 0; i < N_FIELDS; i++)
		if (strcmp(fields[i].path, path) == 0)
			return (c->given >> i) & 1;
	return false;
}

// ---- errors ----

static void cfg_fail(cfg_errors *errs, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void cfg_fail(cfg_errors *errs, const char *field, const char *fmt, ...)
{
	if (errs->n == CFG_MAX_ERRORS) {
		errs->dropped++;
		return;
	}
	cfg_error *e = &errs->e[errs->n++];
	snprintf(e->field, sizeof(e->field), "%s", field);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
}

void cfg_errors_print(const cfg_errors *errs, FILE *out)
{
	for (int i = 0; i < errs->n; i++)
		fprintf(out, "config: %s\n", errs->e[i].msg);
	if (errs->dropped)
		fprintf(out, "config: ... and %d more errors\n", errs->dropped);
}

/* A short rendering of a JSON value for messages: 1.5, "abc", true, an object. */
static void cfg_show(const cJSON *v, char *buf, size_t len)
{
	if (cJSON_IsString(v))
		snprintf(buf, len, "\"%.40s%s\"", v->valuestring, strlen(v->valuestring) > 40 ? "..." : "");
	else if (cJSON_IsNumber(v))
		snprintf(buf, len, "%.17g", v->valuedouble);
	else if (cJSON_IsBool(v))
		snprintf(buf, len, "%s", cJSON_IsTrue(v) ? "true" : "false");
	else if (cJSON_IsNull(v))
		snprintf(buf, len, "null");
	else if (cJSON_IsArray(v))
		snprintf(buf, len, "an array");
	else
		snprintf(buf, len, "an object");
}

static void cfg_choices_str(const char *const *c, char *buf, size_t len)
{
	size_t used = 0;
	buf[0] = '\0';
	for (int i = 0; c[i] && used < len; i++)
		used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? ", " : "", c[i]);
}

// ---- the walk ----

static const cfg_field *cfg_field_find(const char *path)
{
	for (size_t i = 0; i < N_FIELDS; i++)
		if (strcmp(fields[i].path, path) == 0)
			return &fields[i];
	return NULL;
}

/* The names allowed directly under prefix ("" for the top level), for unknown-key messages. */
static void cfg_children(const char *prefix, char *buf, size_t len)
{
	size_t plen = strlen(prefix), used = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < N_FIELDS && used < len; i++) {
		const char *p = fields[i].path;
		if (plen && (strncmp(p, prefix, plen) != 0 || p[plen] != '.'))
			continue;
		const char *rest = plen ? p + plen + 1 : p;
		if (strchr(rest, '.'))
			continue;
		used += (size_t)snprintf(buf + used, len - used, "%s%s", used ? ", " : "", rest);
	}
}

static bool is_integer(const cJSON *v)
{
	return cJSON_IsNumber(v) && isfinite(v->valuedouble) && floor(v->valuedouble) == v->valuedouble;
}

static void cfg_store_value(const cfg_field *f, const cJSON *v, cfg_config *c, int choice)
{
	char *dst = (char *)c + f->offset;
	switch (f->store) {
	case S_INT:
		*(int *)dst = (int)v->valuedouble;
		break;
	case S_I64:
		*(int64_t *)dst = (int64_t)v->valuedouble;
		break;
	case S_DOUBLE:
		*(double *)dst = v->valuedouble;
		break;
	case S_BOOL:
		*(bool *)dst = cJSON_IsTrue(v);
		break;
	case S_ENUM_INT:
		*(int *)dst = choice;
		break;
	case S_ENUM_BOOL:
		*(bool *)dst = choice != 0;
		break;
	case S_STR:
		snprintf(dst, f->size, "%s", v->valuestring);
		break;
	case S_NONE:
		break;
	}
}

static void cfg_walk(const cJSON *obj, const char *prefix, cfg_config *c, cfg_errors *errs);

static void cfg_value(const cfg_field *f, const cJSON *v, cfg_config *c, cfg_errors *errs)
{
	char shown[64];
	cfg_show(v, shown, sizeof(shown));
	const char *p = f->path;
	if (f->events != EV_ALL && c->event && !(f->events & EV_BIT(c->event->id))) {
		char where[96] = "";
		for (int i = 0, used = 0; i < EV_COUNT; i++)
			if (f->events & EV_BIT(i))
				used += snprintf(where + used, sizeof(where) - (size_t)used, "%s%s",
						 used ? ", " : "", ev_event_at(i)->name);
		cfg_fail(errs, p, "'%s' applies only to %s, not to %s", p, where, c->event->name);
		return;
	}
	if (f->divisions == DIV_OPEN_ONLY && !c->open) {
		cfg_fail(errs, p, "'%s' is only allowed in the open division (the closed division "
			 "uses the reference model and weights)", p);
		return;
	}
	switch (f->type) {
	case T_OBJ:
		if (!cJSON_IsObject(v)) {
			cfg_fail(errs, p, "'%s' is %s, must be an object", p, shown);
			return;
		}
		c->given |= 1ull << (f - fields);
		cfg_walk(v, p, c, errs);
		return;
	case T_INT:
		if (!is_integer(v) || v->valuedouble < f->min || v->valuedouble > f->max) {
			cfg_fail(errs, p, "'%s' is %s, must be an integer in [%.17g, %.17g]", p, shown,
				 f->min, f->max);
			return;
		}
		break;
	case T_NUM:
		if (!cJSON_IsNumber(v) || !(v->valuedouble >= f->min && v->valuedouble <= f->max)) {
			cfg_fail(errs, p, "'%s' is %s, must be a number in [%g, %g]", p, shown, f->min,
				 f->max);
			return;
		}
		break;
	case T_BOOL:
		if (!cJSON_IsBool(v)) {
			cfg_fail(errs, p, "'%s' is %s, must be true or false", p, shown);
			return;
		}
		break;
	case T_STR:
		/* Free text: a string of at most max bytes without control characters. */
		if (!cJSON_IsString(v) || strlen(v->valuestring) > (size_t)f->max) {
			cfg_fail(errs, p, "'%s' is %s, must be a string of at most %.0f bytes", p, shown,
				 f->max);
			return;
		}
		for (const char *s = v->valuestring; *s; s++)
			if ((unsigned char)*s < 0x20 || *s == 0x7f) {
				cfg_fail(errs, p, "'%s' contains a control character", p);
				return;
			}
		break;
	case T_ENUM:
		if (cJSON_IsString(v)) {
			for (int i = 0; f->choices[i]; i++)
				if (strcmp(v->valuestring, f->choices[i]) == 0) {
					cfg_store_value(f, v, c, i);
					c->given |= 1ull << (f - fields);
					return;
				}
		}
		char allowed[160];
		cfg_choices_str(f->choices, allowed, sizeof(allowed));
		cfg_fail(errs, p, "'%s' is %s, must be one of %s", p, shown, allowed);
		return;
	case T_INT_LIST: {
		int n = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
		if (n < 1 || n > f->max_len) {
			cfg_fail(errs, p, "'%s' is %s, must be a list of 1 to %d integers in [%.0f, %.0f]",
				 p, shown, f->max_len, f->min, f->max);
			return;
		}
		int i = 0;
		const cJSON *el;
		cJSON_ArrayForEach(el, v) {
			char item[64];
			cfg_show(el, item, sizeof(item));
			if (!is_integer(el) || el->valuedouble < f->min || el->valuedouble > f->max) {
				cfg_fail(errs, p, "'%s[%d]' is %s, must be an integer in [%.0f, %.0f]", p,
					 i, item, f->min, f->max);
				return;
			}
			c->hidden[i++] = (int)el->valuedouble;
		}
		c->n_hidden = n;
		c->given |= 1ull << (f - fields);
		return;
	}
	}
	cfg_store_value(f, v, c, 0);
	c->given |= 1ull << (f - fields);
}

static void cfg_walk(const cJSON *obj, const char *prefix, cfg_config *c, cfg_errors *errs)
{
	const cJSON *it;
	cJSON_ArrayForEach(it, obj) {
		char path[96];
		int n = snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "", it->string);
		const cfg_field *f = n < (int)sizeof(path) ? cfg_field_find(path) : NULL;
		if (!f) {
			char allowed[256];
			cfg_children(prefix, allowed, sizeof(allowed));
			cfg_fail(errs, path, "'%.80s' is not a config field (allowed%s%s: %s)", path,
				 *prefix ? " in " : "", prefix, allowed);
			continue;
		}
		if (strcmp(path, "event") == 0) {
			c->given |= 1ull << (f - fields); /* read and checked first, by cfg_parse */
			continue;
		}
		cfg_value(f, it, c, errs);
	}
}

// ---- defaults, estimates and limits ----

void cfg_limits_default(cfg_limits *lim)
{
	lim->max_params = 10 * 1000 * 1000;
	lim->max_flops = 500 * 1000 * 1000;
	lim->max_memory_bytes = (int64_t)2 << 30;
	lim->max_train_minutes = 10;
}

void cfg_defaults(cfg_config *c, const ev_event *ev)
{
	memset(c, 0, sizeof(*c));
	c->event = ev;
	c->n_hidden = 2;
	c->hidden[0] = 128;
	c->hidden[1] = 64;
	c->c1 = 32;
	c->c2 = 64;
	c->context = 128;
	c->d_model = 128;
	c->heads = 8;
	c->layers = 2;
	c->ffn = 512;
	c->epochs = ev && ev->id == EV_CNN_MARATHON ? 3 : 10;
	c->lr = ev && ev->id == EV_TRANSFORMER_DECATHLON ? 3e-3 : 1e-3;
	c->batch = ev && ev->id == EV_TRANSFORMER_DECATHLON ? 128 : 64;
	c->seed = 1;
	c->optimizer = ev && ev->id == EV_TRANSFORMER_DECATHLON ? CFG_OPT_ADAMW : CFG_OPT_ADAM;
	c->train_minutes = 10;
	snprintf(c->kernels, sizeof(c->kernels), "auto");
	c->threads = 1;
	c->per_channel = true;
	c->calibration_samples = 512;
	c->calibration = CFG_CALIB_MINMAX;
	c->calibration_percentile = 99.99;
	c->batch_size = 256;
}

/* Parameters and FLOPs per inference come from the engine, computed from the same layer list
 * the model is built from (tm_model_spec_counts, tm_tf_spec_params, tm_tf_flops_per_token), so
 * the validator and the worker cannot disagree.  Memory is an estimate: weights, gradients and
 * two optimizer moments, plus the activations of the largest batch, plus 64 MiB. */
static int cfg_estimate(cfg_config *c, cfg_errors *errs)
{
	int64_t act; /* floats of activations and scratch */
	if (c->event->id == EV_TRANSFORMER_DECATHLON) {
		tm_tf_spec s = { .ctx = c->context, .d_model = c->d_model, .n_head = c->heads,
				 .n_layer = c->layers, .d_ff = c->ffn, .vocab = tm_dec_vocab_size() };
		c->params = (int64_t)tm_tf_spec_params(&s);
		c->flops = (int64_t)tm_tf_flops_per_token(&s, s.ctx);
		act = (int64_t)s.n_layer * ((int64_t)s.ctx * (12 * s.d_model + 2 * s.d_ff) +
					    (int64_t)s.n_head * s.ctx * s.ctx) * 16;
	} else {
		tm_model_spec s;
		if (c->event->id == EV_MLP_SPRINT)
			tm_model_spec_mlp(&s, c->n_hidden, c->hidden);
		else
			tm_model_spec_cnn(&s, c->c1, c->c2);
		tm_err err = { 0 };
		if (tm_model_spec_counts(&s, &c->params, &c->flops, &err) < 0) {
			cfg_fail(errs, "model", "model: %s", err.msg);
			return -1;
		}
		if (c->event->id == EV_MLP_SPRINT) {
			act = 784 + 10;
			for (int i = 0; i < c->n_hidden; i++)
				act += c->hidden[i];
			act *= 256;
		} else {
			/* per image: conv1 output, conv2's im2col, conv2 output; times the batch */
			int64_t c1 = c->c1, c2 = c->c2;
			int64_t batch = c->batch_size > c->batch ? c->batch_size : c->batch;
			act = (c1 * 26 * 26 * 2 + c1 * 9 * 11 * 11 + c2 * 11 * 11 * 2 + 784) * batch;
		}
	}
	c->memory_bytes = c->params * 4 * 4 + act * 4 + ((int64_t)64 << 20);
	return 0;
}

static void cfg_check_rules(cfg_config *c, const cfg_limits *lim, cfg_errors *errs)
{
	if (cfg_given(c, "optimize.quantize.percentile") && c->calibration != CFG_CALIB_PERCENTILE)
		cfg_fail(errs, "optimize.quantize.percentile",
			 "'optimize.quantize.percentile' needs 'optimize.quantize.calibration' to be "
			 "\"percentile\"");
	if (c->prune && c->structured && c->prune_global)
		cfg_fail(errs, "optimize.prune.scope",
			 "'optimize.prune.scope' is \"global\", but structured pruning removes the same "
			 "fraction of every layer: use \"layer\"");
	if (c->event->id == EV_TRANSFORMER_DECATHLON && c->d_model % c->heads != 0)
		cfg_fail(errs, "model.heads", "'model.heads' is %d, must divide 'model.d_model' (%d)",
			 c->heads, c->d_model);

	int before = errs->n;
	if (cfg_estimate(c, errs) < 0)
		return;
	if (c->params > lim->max_params)
		cfg_fail(errs, "model", "the model has %lld parameters, the limit is %lld",
			 (long long)c->params, (long long)lim->max_params);
	if (c->flops > lim->max_flops)
		cfg_fail(errs, "model", "the model needs %lld FLOPs per inference, the limit is %lld",
			 (long long)c->flops, (long long)lim->max_flops);
	if (c->memory_bytes > lim->max_memory_bytes)
		cfg_fail(errs, "model", "the run needs an estimated %lld MiB of memory, the limit is "
			 "%lld MiB", (long long)(c->memory_bytes >> 20),
			 (long long)(lim->max_memory_bytes >> 20));
	if (c->open && c->event->id == EV_TRANSFORMER_DECATHLON &&
	    c->train_minutes > lim->max_train_minutes)
		cfg_fail(errs, "train.minutes", "'train.minutes' is %g, the training budget is %g",
			 c->train_minutes, lim->max_train_minutes);
	if (c->open && c->event->id != EV_TRANSFORMER_DECATHLON) {
		/* Three passes (forward, backward for inputs and weights) over the training set
		 * per epoch at a conservative 5 GFLOP/s on one core. */
		double minutes = (double)c->epochs * 60000.0 * 3.0 * (double)c->flops / 5e9 / 60.0;
		if (minutes > lim->max_train_minutes)
			cfg_fail(errs, "train.epochs", "'train.epochs' is %d: training would take an "
				 "estimated %.1f minutes, the budget is %g", c->epochs, minutes,
				 lim->max_train_minutes);
	}
	if (errs->n > before)
		errs->over_limit = true;
}

// ---- entry point ----

int cfg_parse(const char *json, size_t len, const cfg_limits *lim, cfg_config *out,
	      cfg_errors *errs)
{
	cfg_limits dflt;
	if (!lim) {
		cfg_limits_default(&dflt);
		lim = &dflt;
	}
	memset(errs, 0, sizeof(*errs));
	cfg_defaults(out, NULL);
	if (len > CFG_MAX_BYTES) {
		cfg_fail(errs, "", "the config is %zu bytes, the limit is %d", len, CFG_MAX_BYTES);
		return TM_EINVAL;
	}
	const char *end = NULL;
	cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, false);
	if (!root) {
		cfg_fail(errs, "", "the config is not valid JSON (error near byte %zu)",
			 end ? (size_t)(end - json) : 0);
		return TM_EINVAL;
	}
	for (const char *p = end; p && p < json + len; p++)
		if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t') {
			cfg_fail(errs, "", "the config has trailing data after the JSON document (byte %zu)",
				 (size_t)(p - json));
			cJSON_Delete(root);
			return TM_EINVAL;
		}
	if (!cJSON_IsObject(root)) {
		cfg_fail(errs, "", "the config must be a JSON object");
		cJSON_Delete(root);
		return TM_EINVAL;
	}
	const cJSON *ev = cJSON_GetObjectItemCaseSensitive(root, "event");
	const ev_event *event = cJSON_IsString(ev) ? ev_event_find(ev->valuestring) : NULL;
	if (!ev) {
		cfg_fail(errs, "event", "'event' is required, one of %s", ev_event_names());
	} else if (!event) {
		char shown[64];
		cfg_show(ev, shown, sizeof(shown));
		cfg_fail(errs, "event", "'event' is %s, must be one of %s", shown, ev_event_names());
	}
	cfg_defaults(out, event);
	/* The division decides what else is allowed, so it is read before the walk. */
	const cJSON *div = cJSON_GetObjectItemCaseSensitive(root, "division");
	if (cJSON_IsString(div) && strcmp(div->valuestring, "open") == 0)
		out->open = true;
	if (event) {
		cfg_walk(root, "", out, errs);
		out->quantize = cfg_given(out, "optimize.quantize");
		out->prune = cfg_given(out, "optimize.prune");
	}
	if (errs->n == 0)
		cfg_check_rules(out, lim, errs);
	cJSON_Delete(root);
	if (errs->n == 0)
		return 0;
	return errs->over_limit ? TM_ELIMIT : TM_EINVAL;
}
