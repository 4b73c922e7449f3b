/* model.c: the MLP and CNN image models, built from a tm_model_spec as the modules of the
 * equivalent torch.nn.Sequential.  Parameters live in one allocation carved into per-layer
 * tensors (PyTorch layouts), gradients in a second one with the same layout, activations and
 * scratch in one arena sized by tm_model_plan for a maximum batch.  Forward and backward walk
 * the layer list through a table of ops; a ReLU after a linear or conv layer is computed inside
 * it.  The model also reports parameters, stored bytes and FLOPs (formulas in docs/models.md)
 * and saves/loads itself as safetensors with PyTorch state_dict names and checked metadata. */
#include "engine.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define MODEL_FORMAT "tinymlperf-model"
#define MODEL_FORMAT_VERSION "1"
#define MAX_PARAMS ((int64_t)1 << 28)  /* sanity bound: 1 GiB of float32 */
#define ALIGN_FLOATS 16                /* tensors start on 64-byte boundaries */

// ---- specs ----

static const char *const family_names[] = {
	[TM_FAMILY_MLP] = "mlp",
	[TM_FAMILY_CNN] = "cnn",
	[TM_FAMILY_TRANSFORMER] = "transformer",
};

const char *tm_family_name(tm_family f)
{
	if ((unsigned)f >= sizeof(family_names) / sizeof(family_names[0]))
		return "unknown";
	return family_names[f];
}

static void spec_image_defaults(tm_model_spec *s, tm_family family)
{
	memset(s, 0, sizeof(*s));
	s->family = family;
	s->in_c = 1;
	s->in_h = 28;
	s->in_w = 28;
	s->n_classes = 10;
}

void tm_model_spec_mlp(tm_model_spec *s, int n_hidden, const int *hidden)
{
	spec_image_defaults(s, TM_FAMILY_MLP);
	s->n_hidden = n_hidden;
	for (int i = 0; i < n_hidden && i < TM_MLP_MAX_HIDDEN; i++)
		s->hidden[i] = hidden[i];
}

void tm_model_spec_cnn(tm_model_spec *s, int c1, int c2)
{
	spec_image_defaults(s, TM_FAMILY_CNN);
	s->c1 = c1;
	s->c2 = c2;
}

int tm_model_spec_reference(tm_model_spec *s, const char *event, tm_err *err)
{
	if (strcmp(event, "mlp_sprint") == 0) {
		tm_model_spec_mlp(s, 2, (const int[]){128, 64});
		return 0;
	}
	if (strcmp(event, "cnn_marathon") == 0) {
		tm_model_spec_cnn(s, 32, 64);
		return 0;
	}
	return tm_err_set(err, TM_EINVAL, "event",
			  "model: no image reference model for event '%s' (mlp_sprint, cnn_marathon)",
			  event);
}

/* Output side of the CNN's feature extractor: conv3x3, pool2, conv3x3, pool2. */
static int cnn_feature_side(int side)
{
	return ((side - 2) / 2 - 2) / 2;
}

/* Parameters of a spec whose sizes are in range (int64: no overflow for any valid spec). */
static int64_t spec_params(const tm_model_spec *s)
{
	int64_t in = (int64_t)s->in_c * s->in_h * s->in_w, params = 0;
	if (s->family == TM_FAMILY_MLP) {
		for (int i = 0; i < s->n_hidden; i++) {
			params += in * s->hidden[i] + s->hidden[i];
			in = s->hidden[i];
		}
		return params + in * s->n_classes + s->n_classes;
	}
	int64_t feat = (int64_t)s->c2 * cnn_feature_side(s->in_h) * cnn_feature_side(s->in_w);
	return (int64_t)s->c1 * s->in_c * 9 + s->c1 + (int64_t)s->c2 * s->c1 * 9 + s->c2 +
	       feat * s->n_classes + s->n_classes;
}

int tm_model_spec_check(const tm_model_spec *s, tm_err *err)
{
	if (s->family == TM_FAMILY_TRANSFORMER)
		return tm_err_set(err, TM_EINVAL, "family",
				  "model: family 'transformer' is built by the transformer module, "
				  "not tm_model_new");
	if (s->family != TM_FAMILY_MLP && s->family != TM_FAMILY_CNN)
		return tm_err_set(err, TM_EINVAL, "family", "model: family %d is unknown",
				  (int)s->family);
	if (s->in_c < 1 || s->in_c > 4)
		return tm_err_set(err, TM_EINVAL, "in_c", "model: input channels %d, must be in [1, 4]",
				  s->in_c);
	if (s->in_h < 1 || s->in_h > 256 || s->in_w < 1 || s->in_w > 256)
		return tm_err_set(err, TM_EINVAL, "in_h", "model: input %dx%d, sides must be in [1, 256]",
				  s->in_h, s->in_w);
	if (s->n_classes < 2 || s->n_classes > 1000)
		return tm_err_set(err, TM_EINVAL, "n_classes",
				  "model: n_classes %d, must be in [2, 1000]", s->n_classes);
	if (s->family == TM_FAMILY_MLP) {
		if (s->n_hidden < 0 || s->n_hidden > TM_MLP_MAX_HIDDEN)
			return tm_err_set(err, TM_EINVAL, "hidden",
					  "model: %d hidden layers, must be in [0, %d]", s->n_hidden,
					  TM_MLP_MAX_HIDDEN);
		for (int i = 0; i < s->n_hidden; i++)
			if (s->hidden[i] < 1 || s->hidden[i] > TM_MODEL_MAX_WIDTH)
				return tm_err_set(err, TM_EINVAL, "hidden",
						  "model: hidden[%d] is %d, must be in [1, %d]", i,
						  s->hidden[i], TM_MODEL_MAX_WIDTH);
	} else {
		if (s->c1 < 1 || s->c1 > TM_MODEL_MAX_WIDTH || s->c2 < 1 || s->c2 > TM_MODEL_MAX_WIDTH)
			return tm_err_set(err, TM_EINVAL, "channels",
					  "model: channels %d, %d, each must be in [1, %d]", s->c1,
					  s->c2, TM_MODEL_MAX_WIDTH);
		if (s->in_h < 10 || s->in_w < 10)
			return tm_err_set(err, TM_EINVAL, "in_h",
					  "model: input %dx%d too small for the cnn, sides must be >= 10",
					  s->in_h, s->in_w);
	}
	int64_t params = spec_params(s);
	if (params > MAX_PARAMS)
		return tm_err_set(err, TM_ELIMIT, "params",
				  "model: %" PRId64 " parameters, must be at most %" PRId64, params,
				  MAX_PARAMS);
	return 0;
}

bool tm_model_spec_equal(const tm_model_spec *a, const tm_model_spec *b)
{
	if (a->family != b->family || a->in_c != b->in_c || a->in_h != b->in_h ||
	    a->in_w != b->in_w || a->n_classes != b->n_classes)
		return false;
	if (a->family == TM_FAMILY_CNN)
		return a->c1 == b->c1 && a->c2 == b->c2;
	if (a->n_hidden != b->n_hidden)
		return false;
	for (int i = 0; i < a->n_hidden && i < TM_MLP_MAX_HIDDEN; i++)
		if (a->hidden[i] != b->hidden[i])
			return false;
	return true;
}

void tm_model_spec_str(const tm_model_spec *s, char *buf, size_t len)
{
	if (len == 0)
		return;
	buf[0] = 0;
	if (s->family == TM_FAMILY_MLP) {
		size_t o = (size_t)snprintf(buf, len, "mlp %d", s->in_c * s->in_h * s->in_w);
		for (int i = 0; i < s->n_hidden && i < TM_MLP_MAX_HIDDEN && o < len; i++)
			o += (size_t)snprintf(buf + o, len - o, "-%d", s->hidden[i]);
		if (o < len)
			snprintf(buf + o, len - o, "-%d", s->n_classes);
	} else if (s->family == TM_FAMILY_CNN) {
		snprintf(buf, len, "cnn c1=%d c2=%d (%dx%dx%d -> %d)", s->c1, s->c2, s->in_c, s->in_h,
			 s->in_w, s->n_classes);
	} else {
		snprintf(buf, len, "%s", tm_family_name(s->family));
	}
}

// ---- layers ----

static const char *const op_names[] = {
	[TM_OP_LINEAR] = "linear",
	[TM_OP_CONV3X3] = "conv3x3",
	[TM_OP_RELU] = "relu",
	[TM_OP_MAXPOOL2] = "maxpool2",
	[TM_OP_FLATTEN] = "flatten",
};

const char *tm_op_name(tm_op op)
{
	if ((unsigned)op >= sizeof(op_names) / sizeof(op_names[0]))
		return "unknown";
	return op_names[op];
}

static size_t layer_in_size(const tm_layer *l)
{
	return (size_t)l->in_c * l->in_h * l->in_w;
}

static size_t layer_out_size(const tm_layer *l)
{
	return (size_t)l->out_c * l->out_h * l->out_w;
}

/* Append a layer whose input is the previous layer's output (or the model input). */
static tm_layer *layer_add(tm_model *m, tm_op op, int out_c, int out_h, int out_w)
{
	assert(m->n_layers < TM_MODEL_MAX_LAYERS);
	tm_layer *l = &m->layers[m->n_layers];
	memset(l, 0, sizeof(*l));
	l->op = op;
	snprintf(l->name, sizeof(l->name), "%d", m->n_layers);
	if (m->n_layers == 0) {
		l->in_c = m->spec.in_c;
		l->in_h = m->spec.in_h;
		l->in_w = m->spec.in_w;
		if (op == TM_OP_LINEAR) { /* the MLP sees the image flattened */
			l->in_c = l->in_c * l->in_h * l->in_w;
			l->in_h = l->in_w = 1;
		}
	} else {
		const tm_layer *p = &m->layers[m->n_layers - 1];
		l->in_c = p->out_c;
		l->in_h = p->out_h;
		l->in_w = p->out_w;
	}
	l->out_c = out_c;
	l->out_h = out_h;
	l->out_w = out_w;
	m->n_layers++;
	return l;
}

static void layer_linear(tm_model *m, int out)
{
	tm_layer *l = layer_add(m, TM_OP_LINEAR, out, 1, 1);
	size_t in = layer_in_size(l);
	l->w_len = in * (size_t)out;
	l->b_len = (size_t)out;
	l->flops = 2 * (int64_t)in * out + out;
}

static void layer_conv(tm_model *m, int cout)
{
	const tm_layer *p = m->n_layers ? &m->layers[m->n_layers - 1] : NULL;
	int h = p ? p->out_h : m->spec.in_h, w = p ? p->out_w : m->spec.in_w;
	tm_layer *l = layer_add(m, TM_OP_CONV3X3, cout, h - 2, w - 2);
	l->w_len = (size_t)cout * l->in_c * 9;
	l->b_len = (size_t)cout;
	int64_t positions = (int64_t)l->out_h * l->out_w;
	l->flops = 2 * (int64_t)l->in_c * 9 * cout * positions + cout * positions;
}

/* A ReLU after a linear or conv layer is computed by it: same output buffer, no extra pass. */
static void layer_relu(tm_model *m)
{
	const tm_layer *p = &m->layers[m->n_layers - 1];
	tm_layer *l = layer_add(m, TM_OP_RELU, p->out_c, p->out_h, p->out_w);
	tm_layer *prev = &m->layers[m->n_layers - 2];
	if (prev->op == TM_OP_LINEAR || prev->op == TM_OP_CONV3X3) {
		prev->act = TM_ACT_RELU;
		l->fused = true;
	}
}

static void layer_pool(tm_model *m)
{
	const tm_layer *p = &m->layers[m->n_layers - 1];
	layer_add(m, TM_OP_MAXPOOL2, p->out_c, p->out_h / 2, p->out_w / 2);
}

static void layer_flatten(tm_model *m)
{
	const tm_layer *p = &m->layers[m->n_layers - 1];
	layer_add(m, TM_OP_FLATTEN, (int)layer_out_size(p), 1, 1);
}

static void model_build_layers(tm_model *m)
{
	const tm_model_spec *s = &m->spec;
	if (s->family == TM_FAMILY_MLP) {
		for (int i = 0; i < s->n_hidden; i++) {
			layer_linear(m, s->hidden[i]);
			layer_relu(m);
		}
		layer_linear(m, s->n_classes);
	} else {
		layer_conv(m, s->c1);
		layer_relu(m);
		layer_pool(m);
		layer_conv(m, s->c2);
		layer_relu(m);
		layer_pool(m);
		layer_flatten(m);
		layer_linear(m, s->n_classes);
	}
}

static size_t align_floats(size_t n)
{
	return (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
}

/* Point every layer's w/b (base == params) or dw/db (base == grads) into one block; with
 * base NULL only count the floats (n_alloc). */
static void model_carve(tm_model *m, float *base, bool grads)
{
	size_t off = 0;
	for (int i = 0; i < m->n_layers; i++) {
		tm_layer *l = &m->layers[i];
		if (!l->w_len)
			continue;
		size_t w_off = off, b_off = align_floats(off + l->w_len);
		off = align_floats(b_off + l->b_len);
		if (!base)
			continue;
		if (grads) {
			l->dw = base + w_off;
			l->db = base + b_off;
		} else {
			l->w = base + w_off;
			l->b = base + b_off;
		}
	}
	m->n_alloc = off;
}

/* The layer list and sizes of a valid spec, without parameters. */
static tm_model *model_build(const tm_model_spec *spec)
{
	tm_model *m = tm_xcalloc(1, sizeof(*m));
	m->spec = *spec;
	model_build_layers(m);
	model_carve(m, NULL, false); /* sizes only */
	for (int i = 0; i < m->n_layers; i++) {
		tm_layer *l = &m->layers[i];
		l->bytes = (l->w_len + l->b_len) * sizeof(float);
		m->n_params += (int64_t)(l->w_len + l->b_len);
	}
	return m;
}

static int model_alloc_params(tm_model *m, tm_err *err)
{
	m->params = tm_alloc_aligned(m->n_alloc * sizeof(float));
	if (!m->params)
		return tm_err_set(err, TM_ENOMEM, "params", "model: cannot allocate %zu parameters",
				  m->n_alloc);
	model_carve(m, m->params, false);
	return 0;
}

tm_model *tm_model_new(const tm_model_spec *spec, tm_err *err)
{
	if (tm_model_spec_check(spec, err) < 0)
		return NULL;
	tm_model *m = model_build(spec);
	if (model_alloc_params(m, err) < 0) {
		tm_model_free(m);
		return NULL;
	}
	return m;
}

void tm_model_free(tm_model *m)
{
	if (!m)
		return;
	tm_arena_release(&m->arena);
	tm_free_aligned(m->grads);
	tm_free_aligned(m->params);
	free(m);
}

void tm_model_randomize(tm_model *m, uint64_t seed)
{
	tm_rng rng;
	tm_rng_seed(&rng, seed);
	for (int i = 0; i < m->n_layers; i++) {
		tm_layer *l = &m->layers[i];
		if (!l->w_len)
			continue;
		size_t fan_in = l->w_len / l->b_len;
		float bound = 1.0f / sqrtf((float)fan_in);
		for (size_t j = 0; j < l->w_len; j++)
			l->w[j] = (2.0f * tm_rng_uniform(&rng) - 1.0f) * bound;
		for (size_t j = 0; j < l->b_len; j++)
			l->b[j] = (2.0f * tm_rng_uniform(&rng) - 1.0f) * bound;
	}
}

// ---- plan ----

/* Carve from a (or only count into *need when a is NULL), rounding like tm_arena_alloc. */
static void *plan_take(tm_arena *a, size_t *need, size_t bytes)
{
	*need += (bytes + 63) & ~(size_t)63;
	if (!a)
		return NULL;
	void *p = tm_arena_alloc(a, bytes);
	assert(p);
	return p;
}

static void plan_layout(tm_model *m, tm_arena *a, size_t *need, int nb, bool train)
{
	size_t in = (size_t)m->spec.in_c * m->spec.in_h * m->spec.in_w, largest = in;
	m->x = plan_take(a, need, (size_t)nb * in * sizeof(float));
	m->scratch_len = 0;
	for (int i = 0; i < m->n_layers; i++) {
		tm_layer *l = &m->layers[i];
		size_t out = layer_out_size(l);
		if (out > largest)
			largest = out;
		m->pool_idx[i] = NULL;
		if (l->fused || l->op == TM_OP_FLATTEN)
			m->out[i] = i ? m->out[i - 1] : m->x;
		else
			m->out[i] = plan_take(a, need, (size_t)nb * out * sizeof(float));
		if (l->op == TM_OP_MAXPOOL2 && train)
			m->pool_idx[i] = plan_take(a, need, (size_t)nb * out * sizeof(int32_t));
		if (l->op == TM_OP_CONV3X3) {
			size_t s = tm_conv3x3_scratch_floats(l->in_c, l->in_h, l->in_w);
			if (s > m->scratch_len)
				m->scratch_len = s;
		}
	}
	m->scratch = m->scratch_len ? plan_take(a, need, m->scratch_len * sizeof(float)) : NULL;
	m->g0 = train ? plan_take(a, need, (size_t)nb * largest * sizeof(float)) : NULL;
	m->g1 = train ? plan_take(a, need, (size_t)nb * largest * sizeof(float)) : NULL;
	m->logits = m->out[m->n_layers - 1];
}

int tm_model_plan(tm_model *m, int max_batch, bool train, tm_err *err)
{
	if (max_batch < 1 || max_batch > 65536)
		return tm_err_set(err, TM_EINVAL, "max_batch",
				  "model: max batch %d, must be in [1, 65536]", max_batch);
	if (train && !m->grads) {
		m->grads = tm_alloc_aligned(m->n_alloc * sizeof(float));
		if (!m->grads)
			return tm_err_set(err, TM_ENOMEM, "grads",
					  "model: cannot allocate %zu gradients", m->n_alloc);
		model_carve(m, m->grads, true);
	}
	tm_arena_release(&m->arena);
	m->max_batch = 0;
	size_t need = 0;
	plan_layout(m, NULL, &need, max_batch, train);
	int rc = tm_arena_init(&m->arena, need, err);
	if (rc < 0)
		return rc;
	size_t again = 0;
	plan_layout(m, &m->arena, &again, max_batch, train);
	m->max_batch = max_batch;
	m->train = train;
	return 0;
}

// ---- reporting ----

int tm_model_spec_counts(const tm_model_spec *s, int64_t *params, int64_t *flops, tm_err *err)
{
	int rc = tm_model_spec_check(s, err);
	if (rc < 0)
		return rc;
	tm_model *m = model_build(s);
	*params = m->n_params;
	*flops = tm_model_flops(m);
	tm_model_free(m);
	return 0;
}

int64_t tm_model_params(const tm_model *m)
{
	return m->n_params;
}

size_t tm_model_bytes(const tm_model *m)
{
	size_t bytes = 0;
	for (int i = 0; i < m->n_layers; i++)
		bytes += m->layers[i].bytes;
	return bytes;
}

int64_t tm_model_flops(const tm_model *m)
{
	int64_t flops = 0;
	for (int i = 0; i < m->n_layers; i++)
		flops += m->layers[i].flops;
	return flops;
}

static void shape_str(char *buf, size_t len, int c, int h, int w)
{
	if (h == 1 && w == 1)
		snprintf(buf, len, "%d", c);
	else
		snprintf(buf, len, "%dx%dx%d", c, h, w);
}

void tm_model_print(const tm_model *m, FILE *out)
{
	char spec[128];
	tm_model_spec_str(&m->spec, spec, sizeof(spec));
	fprintf(out, "model: %s\n", spec);
	fprintf(out, "%-6s %-9s %-10s %-10s %10s %12s %10s\n", "layer", "op", "in", "out",
		"params", "flops", "bytes");
	for (int i = 0; i < m->n_layers; i++) {
		const tm_layer *l = &m->layers[i];
		char in[32], o[32];
		shape_str(in, sizeof(in), l->in_c, l->in_h, l->in_w);
		shape_str(o, sizeof(o), l->out_c, l->out_h, l->out_w);
		fprintf(out, "%-6s %-9s %-10s %-10s %10zu %12" PRId64 " %10zu%s\n", l->name,
			tm_op_name(l->op), in, o, l->w_len + l->b_len, l->flops, l->bytes,
			l->fused ? "  (fused)" : "");
	}
	fprintf(out, "%-6s %-9s %-10s %-10s %10" PRId64 " %12" PRId64 " %10zu\n", "total", "", "",
		"", tm_model_params(m), tm_model_flops(m), tm_model_bytes(m));
}

// ---- forward and backward ----

/* One op of the layer table: forward reads in and writes out; backward reads dy and writes
 * dx (NULL when the input gradient is not needed) and accumulates the parameter gradients. */
typedef struct layer_io {
	tm_model *m;
	const tm_ctx *ctx;
	int n;            /* samples */
	int i;            /* layer index */
	const float *in;  /* (n, layer input) */
	float *out;       /* (n, layer output) */
} layer_io;

typedef struct layer_ops {
	void (*forward)(const layer_io *io, const tm_layer *l);
	void (*backward)(const layer_io *io, const tm_layer *l, const float *dy, float *dx);
} layer_ops;

static void linear_forward(const layer_io *io, const tm_layer *l)
{
	tm_linear(io->ctx, io->n, l->out_c, (int)layer_in_size(l), io->in, l->w, l->b, l->act,
		  io->out);
}

static void linear_backward(const layer_io *io, const tm_layer *l, const float *dy, float *dx)
{
	tm_linear_backward(io->ctx, io->n, l->out_c, (int)layer_in_size(l), io->in, l->w, dy, dx,
			   l->dw, l->db);
}

static void conv_forward(const layer_io *io, const tm_layer *l)
{
	tm_conv3x3_forward(io->ctx, io->n, l->in_c, l->in_h, l->in_w, l->out_c, io->in, l->w, l->b,
			   l->act, io->out, io->m->scratch);
}

static void conv_backward(const layer_io *io, const tm_layer *l, const float *dy, float *dx)
{
	tm_conv3x3_backward(io->ctx, io->n, l->in_c, l->in_h, l->in_w, l->out_c, io->in, l->w, dy,
			    dx, l->dw, l->db, io->m->scratch);
}

/* ReLU and max-pool take no ctx: the model splits them over the pool itself, by whole images,
 * so every element's arithmetic is the same for any thread count. */
typedef struct split_job {
	const layer_io *io;
	const tm_layer *l;
	int parts;
	const float *dy;  /* backward only */
	float *dx;        /* backward only; NULL: forward */
} split_job;

static void split_task(void *arg, int part)
{
	const split_job *j = arg;
	const layer_io *io = j->io;
	const tm_layer *l = j->l;
	int lo = (int)((int64_t)io->n * part / j->parts);
	int hi = (int)((int64_t)io->n * (part + 1) / j->parts);
	size_t is = layer_in_size(l), os = layer_out_size(l), n = (size_t)(hi - lo);
	const float *in = io->in + is * lo;
	int32_t *idx = io->m->pool_idx[io->i] ? io->m->pool_idx[io->i] + os * lo : NULL;
	if (l->op == TM_OP_RELU && !j->dx)
		tm_relu_forward(n * os, in, io->out + os * lo);
	else if (l->op == TM_OP_RELU)
		tm_relu_backward(n * os, in, j->dy + os * lo, j->dx + is * lo);
	else if (!j->dx)
		tm_maxpool2_forward((int)n, l->in_c, l->in_h, l->in_w, in, io->out + os * lo, idx);
	else
		tm_maxpool2_backward((int)n, l->in_c, l->in_h, l->in_w, idx, j->dy + os * lo,
				     j->dx + is * lo);
}

static void split_run(const layer_io *io, const tm_layer *l, const float *dy, float *dx)
{
	tm_pool *pool = io->ctx ? io->ctx->pool : NULL;
	int parts = tm_pool_threads(pool);
	if ((size_t)io->n * layer_out_size(l) < 16384) /* not worth waking the pool */
		parts = 1;
	if (parts > io->n)
		parts = io->n;
	split_job j = {.io = io, .l = l, .parts = parts, .dy = dy, .dx = dx};
	tm_pool_run(pool, parts, split_task, &j);
}

static void relu_forward(const layer_io *io, const tm_layer *l)
{
	if (!l->fused) /* else the previous layer applied it to this very buffer */
		split_run(io, l, NULL, NULL);
}

static void relu_backward(const layer_io *io, const tm_layer *l, const float *dy, float *dx)
{
	/* For a fused ReLU, in is its output: positive exactly where the input was. */
	if (dx)
		split_run(io, l, dy, dx);
}

static void pool_forward(const layer_io *io, const tm_layer *l)
{
	split_run(io, l, NULL, NULL);
}

static void pool_backward(const layer_io *io, const tm_layer *l, const float *dy, float *dx)
{
	if (dx)
		split_run(io, l, dy, dx);
}

static void flatten_forward(const layer_io *io, const tm_layer *l)
{
	(void)io;
	(void)l;
}

static void flatten_backward(const layer_io *io, const tm_layer *l, const float *dy, float *dx)
{
	(void)l;
	if (dx && dx != dy)
		memcpy(dx, dy, (size_t)io->n * layer_out_size(l) * sizeof(float));
}

static const layer_ops op_table[] = {
	[TM_OP_LINEAR] = {linear_forward, linear_backward},
	[TM_OP_CONV3X3] = {conv_forward, conv_backward},
	[TM_OP_RELU] = {relu_forward, relu_backward},
	[TM_OP_MAXPOOL2] = {pool_forward, pool_backward},
	[TM_OP_FLATTEN] = {flatten_forward, flatten_backward},
};

static int check_batch(const tm_model *m, int n, bool backward, tm_err *err)
{
	if (m->max_batch == 0)
		return tm_err_set(err, TM_ESTATE, "plan", "model: not planned (call tm_model_plan)");
	if (backward && !m->train)
		return tm_err_set(err, TM_ESTATE, "plan",
				  "model: backward needs a training plan (tm_model_plan train)");
	if (n < 1 || n > m->max_batch)
		return tm_err_set(err, TM_EINVAL, "batch", "model: batch %d, must be in [1, %d]", n,
				  m->max_batch);
	return 0;
}

static void model_run_forward(tm_model *m, const tm_ctx *ctx, int n, float *logits)
{
	layer_io io = {.m = m, .ctx = ctx, .n = n, .in = m->x};
	for (int i = 0; i < m->n_layers; i++) {
		io.i = i;
		io.out = m->out[i];
		op_table[m->layers[i].op].forward(&io, &m->layers[i]);
		io.in = io.out;
	}
	if (logits)
		memcpy(logits, m->logits, (size_t)n * m->spec.n_classes * sizeof(float));
}

void tm_model_preprocess(const tm_model *m, int n, const uint8_t *pixels, float *x)
{
	float table[256];
	for (int v = 0; v < 256; v++)
		table[v] = ((float)v / 255.0f - TM_FMNIST_MEAN) / TM_FMNIST_SD;
	size_t len = (size_t)n * m->spec.in_c * m->spec.in_h * m->spec.in_w;
	for (size_t i = 0; i < len; i++)
		x[i] = table[pixels[i]];
}

int tm_model_forward(tm_model *m, const tm_ctx *ctx, int n, const uint8_t *pixels,
		     float *logits, tm_err *err)
{
	int rc = check_batch(m, n, false, err);
	if (rc < 0)
		return rc;
	tm_model_preprocess(m, n, pixels, m->x);
	model_run_forward(m, ctx, n, logits);
	return 0;
}

int tm_model_forward_f32(tm_model *m, const tm_ctx *ctx, int n, const float *x, float *logits,
			 tm_err *err)
{
	int rc = check_batch(m, n, false, err);
	if (rc < 0)
		return rc;
	if (x != m->x)
		memcpy(m->x, x, (size_t)n * m->spec.in_c * m->spec.in_h * m->spec.in_w * sizeof(float));
	model_run_forward(m, ctx, n, logits);
	return 0;
}

int tm_model_backward(tm_model *m, const tm_ctx *ctx, int n, const float *dlogits, tm_err *err)
{
	int rc = check_batch(m, n, true, err);
	if (rc < 0)
		return rc;
	float *dy = m->g0, *dx = m->g1;
	memcpy(dy, dlogits, (size_t)n * m->spec.n_classes * sizeof(float));
	layer_io io = {.m = m, .ctx = ctx, .n = n};
	for (int i = m->n_layers - 1; i >= 0; i--) {
		const tm_layer *l = &m->layers[i];
		io.i = i;
		io.in = i ? m->out[i - 1] : m->x;
		io.out = m->out[i];
		/* The model input needs no gradient: layer 0 only accumulates its parameters'. */
		op_table[l->op].backward(&io, l, dy, i ? dx : NULL);
		float *t = dy;
		dy = dx;
		dx = t;
	}
	return 0;
}

void tm_model_zero_grad(tm_model *m)
{
	if (m->grads)
		memset(m->grads, 0, m->n_alloc * sizeof(float));
}

// ---- weight files ----

static void tensor_name(char *buf, size_t len, const tm_layer *l, bool bias)
{
	snprintf(buf, len, "%s.%s", l->name, bias ? "bias" : "weight");
}

/* PyTorch shapes: Linear weight (out, in), Conv2d weight (out, in, 3, 3), biases (out). */
static int tensor_shape(const tm_layer *l, bool bias, int64_t shape[TM_ST_MAX_DIMS])
{
	shape[0] = l->out_c;
	if (bias)
		return 1;
	if (l->op == TM_OP_LINEAR) {
		shape[1] = (int64_t)layer_in_size(l);
		return 2;
	}
	shape[1] = l->in_c;
	shape[2] = 3;
	shape[3] = 3;
	return 4;
}

static void int_list_str(char *buf, size_t len, const int *v, int n)
{
	size_t o = 0;
	buf[0] = 0;
	for (int i = 0; i < n && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, i ? ",%d" : "%d", v[i]);
}

static const char *layout_name(tm_family f)
{
	return f == TM_FAMILY_CNN ? "NCHW" : "NCHW-flat";
}

/* tm_st_writer_meta's copies are not promised by the API, so every value keeps its own
 * buffer until the file is written. */
#define SAVE_META_MAX 24

typedef struct save_meta {
	char val[SAVE_META_MAX][256];
	int n;
} save_meta;

static void save_meta_add(tm_st_writer *w, save_meta *sm, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void save_meta_add(tm_st_writer *w, save_meta *sm, const char *key, const char *fmt, ...)
{
	assert(sm->n < SAVE_META_MAX);
	char *v = sm->val[sm->n++];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(v, sizeof(sm->val[0]), fmt, ap);
	va_end(ap);
	tm_st_writer_meta(w, key, v);
}

int tm_model_save(const tm_model *m, const char *path, const tm_model_meta *meta, tm_err *err)
{
	tm_st_writer *w = tm_st_writer_new();
	save_meta *sm = tm_xcalloc(1, sizeof(*sm));
	char buf[256], names[2 * TM_MODEL_MAX_LAYERS][64];
	int nn = 0;
	const tm_model_spec *s = &m->spec;
	save_meta_add(w, sm, "format", "%s", MODEL_FORMAT);
	save_meta_add(w, sm, "format_version", "%s", MODEL_FORMAT_VERSION);
	save_meta_add(w, sm, "engine_version", "%s", TM_ENGINE_VERSION);
	save_meta_add(w, sm, "family", "%s", tm_family_name(s->family));
	tm_model_spec_str(s, buf, sizeof(buf));
	save_meta_add(w, sm, "spec", "%s", buf);
	save_meta_add(w, sm, "input.shape", "%d,%d,%d", s->in_c, s->in_h, s->in_w);
	save_meta_add(w, sm, "input.layout", "%s", layout_name(s->family));
	save_meta_add(w, sm, "input.scale", "%.9g", 1.0 / 255.0);
	save_meta_add(w, sm, "input.mean", "%.6g", (double)TM_FMNIST_MEAN);
	save_meta_add(w, sm, "input.sd", "%.6g", (double)TM_FMNIST_SD);
	save_meta_add(w, sm, "n_classes", "%d", s->n_classes);
	if (s->family == TM_FAMILY_MLP) {
		int_list_str(buf, sizeof(buf), s->hidden, s->n_hidden);
		save_meta_add(w, sm, "mlp.hidden", "%s", buf);
	} else {
		save_meta_add(w, sm, "cnn.channels", "%d,%d", s->c1, s->c2);
	}
	if (meta) {
		save_meta_add(w, sm, "train.recipe", "%s", meta->recipe);
		save_meta_add(w, sm, "train.seed", "%" PRIu64, meta->seed);
		if (meta->train_seconds >= 0)
			save_meta_add(w, sm, "train.seconds", "%.1f", meta->train_seconds);
		if (meta->test_accuracy >= 0)
			save_meta_add(w, sm, "test_accuracy", "%.4f", meta->test_accuracy);
	}
	for (int i = 0; i < m->n_layers; i++) {
		const tm_layer *l = &m->layers[i];
		if (!l->w_len)
			continue;
		for (int bias = 0; bias < 2; bias++) {
			int64_t shape[TM_ST_MAX_DIMS];
			int nd = tensor_shape(l, bias, shape);
			tensor_name(names[nn], sizeof(names[nn]), l, bias);
			tm_st_writer_add(w, names[nn], TM_DTYPE_F32, nd, shape, bias ? l->b : l->w);
			nn++;
		}
	}
	int rc = tm_st_writer_save(w, path, err);
	tm_st_writer_free(w);
	free(sm);
	return rc;
}

/* A comma-separated list of 0..max positive ints; false if malformed. */
static bool parse_int_list(const char *s, int *out, int max, int *count)
{
	*count = 0;
	if (!*s)
		return true;
	for (;;) {
		char *end;
		errno = 0;
		long v = strtol(s, &end, 10);
		if (end == s || errno || v < 1 || v > 1000000 || *count >= max)
			return false;
		out[(*count)++] = (int)v;
		if (*end == 0)
			return true;
		if (*end != ',')
			return false;
		s = end + 1;
	}
}

static const char *meta_need(const tm_st_file *f, const char *path, const char *key, tm_err *err)
{
	const char *v = tm_st_meta(f, key);
	if (!v)
		tm_err_set(err, TM_EFORMAT, key, "model file '%s': __metadata__ has no '%s'", path,
			   key);
	return v;
}

static int meta_ints(const tm_st_file *f, const char *path, const char *key, int *out, int min,
		     int max, int *count, tm_err *err)
{
	const char *v = meta_need(f, path, key, err);
	if (!v)
		return TM_EFORMAT;
	if (!parse_int_list(v, out, max, count) || *count < min)
		return tm_err_set(err, TM_EFORMAT, key,
				  "model file '%s': __metadata__ '%s' is '%s', expected %d to %d "
				  "comma-separated positive integers", path, key, v, min, max);
	return 0;
}

static int meta_float_is(const tm_st_file *f, const char *path, const char *key, double want,
			 tm_err *err)
{
	const char *v = meta_need(f, path, key, err);
	if (!v)
		return TM_EFORMAT;
	char *end;
	double d = strtod(v, &end);
	if (end == v || *end || fabs(d - want) > 1e-6 * fabs(want))
		return tm_err_set(err, TM_EFORMAT, key,
				  "model file '%s': '%s' is '%s', this engine preprocesses with %.9g",
				  path, key, v, want);
	return 0;
}

/* The spec recorded in the file's metadata, and the preprocessing it was trained with; the
 * family is compared with the expected one (may be NULL) before anything else. */
static int spec_from_meta(const tm_st_file *f, const char *path, const tm_model_spec *expect,
			  tm_model_spec *s, tm_err *err)
{
	const char *v = meta_need(f, path, "format", err);
	if (!v)
		return TM_EFORMAT;
	if (strcmp(v, MODEL_FORMAT) != 0)
		return tm_err_set(err, TM_EFORMAT, "format",
				  "model file '%s': format is '%s', expected '%s'", path, v,
				  MODEL_FORMAT);
	if (!(v = meta_need(f, path, "format_version", err)))
		return TM_EFORMAT;
	if (strcmp(v, MODEL_FORMAT_VERSION) != 0)
		return tm_err_set(err, TM_EFORMAT, "format_version",
				  "model file '%s': format_version is '%s', this engine reads '%s'",
				  path, v, MODEL_FORMAT_VERSION);
	if (!(v = meta_need(f, path, "family", err)))
		return TM_EFORMAT;
	tm_family family;
	if (strcmp(v, "mlp") == 0)
		family = TM_FAMILY_MLP;
	else if (strcmp(v, "cnn") == 0)
		family = TM_FAMILY_CNN;
	else
		return tm_err_set(err, TM_EFORMAT, "family",
				  "model file '%s': family '%s' is not an image model (mlp, cnn)",
				  path, v);
	if (expect && expect->family != family)
		return tm_err_set(err, TM_EFORMAT, "family",
				  "model file '%s': family is '%s', expected '%s'", path,
				  tm_family_name(family), tm_family_name(expect->family));
	int shape[3], n, rc;
	memset(s, 0, sizeof(*s));
	s->family = family;
	if ((rc = meta_ints(f, path, "input.shape", shape, 3, 3, &n, err)) < 0)
		return rc;
	s->in_c = shape[0];
	s->in_h = shape[1];
	s->in_w = shape[2];
	if ((rc = meta_ints(f, path, "n_classes", &s->n_classes, 1, 1, &n, err)) < 0)
		return rc;
	if (family == TM_FAMILY_MLP) {
		rc = meta_ints(f, path, "mlp.hidden", s->hidden, 0, TM_MLP_MAX_HIDDEN, &s->n_hidden,
			       err);
	} else {
		int ch[2];
		rc = meta_ints(f, path, "cnn.channels", ch, 2, 2, &n, err);
		s->c1 = ch[0];
		s->c2 = ch[1];
	}
	if (rc < 0)
		return rc;
	if (!(v = meta_need(f, path, "input.layout", err)))
		return TM_EFORMAT;
	if (strcmp(v, layout_name(family)) != 0)
		return tm_err_set(err, TM_EFORMAT, "input.layout",
				  "model file '%s': input.layout is '%s', expected '%s'", path, v,
				  layout_name(family));
	if ((rc = meta_float_is(f, path, "input.scale", 1.0 / 255.0, err)) < 0 ||
	    (rc = meta_float_is(f, path, "input.mean", TM_FMNIST_MEAN, err)) < 0 ||
	    (rc = meta_float_is(f, path, "input.sd", TM_FMNIST_SD, err)) < 0)
		return rc;
	return 0;
}

static void meta_read(const tm_st_file *f, tm_model_meta *meta)
{
	memset(meta, 0, sizeof(*meta));
	meta->test_accuracy = -1;
	meta->train_seconds = -1;
	const char *v;
	if ((v = tm_st_meta(f, "train.recipe")))
		snprintf(meta->recipe, sizeof(meta->recipe), "%s", v);
	if ((v = tm_st_meta(f, "train.seed")))
		meta->seed = strtoull(v, NULL, 10);
	if ((v = tm_st_meta(f, "test_accuracy")))
		meta->test_accuracy = strtod(v, NULL);
	if ((v = tm_st_meta(f, "train.seconds")))
		meta->train_seconds = strtod(v, NULL);
}

/* Check every tensor of m against the file (and, once the parameters exist, copy it). */
static int load_tensors(tm_model *m, const tm_st_file *f, const char *path, tm_err *err)
{
	int expected = 0;
	for (int i = 0; i < m->n_layers; i++) {
		tm_layer *l = &m->layers[i];
		if (!l->w_len)
			continue;
		for (int bias = 0; bias < 2; bias++) {
			char name[64];
			int64_t shape[TM_ST_MAX_DIMS];
			const void *data;
			int nd = tensor_shape(l, bias, shape);
			tensor_name(name, sizeof(name), l, bias);
			int rc = tm_st_expect(f, name, TM_DTYPE_F32, nd, shape, &data, err);
			if (rc < 0)
				return rc;
			if (m->params)
				memcpy(bias ? l->b : l->w, data,
				       (bias ? l->b_len : l->w_len) * sizeof(float));
			expected++;
		}
	}
	if (tm_st_count(f) == expected)
		return 0;
	for (int i = 0; i < tm_st_count(f); i++) { /* name the first tensor we do not use */
		const char *name = tm_st_at(f, i)->name, *dot = strchr(name, '.');
		char *end;
		long idx = strtol(name, &end, 10);
		bool known = dot && end == dot && idx >= 0 && idx < m->n_layers &&
			     m->layers[idx].w_len &&
			     (strcmp(dot, ".weight") == 0 || strcmp(dot, ".bias") == 0);
		if (!known)
			return tm_err_set(err, TM_EFORMAT, name,
					  "model file '%s': unexpected tensor '%s'", path, name);
	}
	return tm_err_set(err, TM_EFORMAT, "tensors", "model file '%s': %d tensors, expected %d",
			  path, tm_st_count(f), expected);
}

tm_model *tm_model_load(const char *path, const tm_model_spec *expect, tm_model_meta *meta,
			tm_err *err)
{
	tm_st_file *f = NULL;
	tm_model *m = NULL;
	tm_model_spec spec;
	if (tm_st_open(&f, path, err) < 0)
		return NULL;
	if (spec_from_meta(f, path, expect, &spec, err) < 0)
		goto fail;
	if (expect && !tm_model_spec_equal(expect, &spec)) {
		char have[128], want[128];
		tm_model_spec_str(&spec, have, sizeof(have));
		tm_model_spec_str(expect, want, sizeof(want));
		tm_err_set(err, TM_EFORMAT, "spec", "model file '%s': model is '%s', expected '%s'",
			   path, have, want);
		goto fail;
	}
	if (tm_model_spec_check(&spec, err) < 0)
		goto fail;
	/* Shapes first: nothing the metadata asks for is allocated before the file matches. */
	m = model_build(&spec);
	if (load_tensors(m, f, path, err) < 0 || model_alloc_params(m, err) < 0 ||
	    load_tensors(m, f, path, err) < 0)
		goto fail;
	if (meta)
		meta_read(f, meta);
	tm_st_free(f);
	return m;
fail:
	tm_model_free(m);
	tm_st_free(f);
	return NULL;
}
