/* safetensors.c: the weight-file format, read and written.  A file is an 8-byte little-endian
 * header length N, N bytes of UTF-8 JSON ({name: {dtype, shape, data_offsets}, "__metadata__":
 * {str: str}}, padded with spaces), then the tensor bytes; this is Hugging Face's safetensors,
 * so PyTorch loads our files with safetensors.torch.load_file.  The reader trusts nothing: the
 * header length is bounded, the JSON is parsed with cJSON and every entry checked (keys, dtype,
 * shape, offsets, sizes, overlaps, duplicates) before a byte of tensor data is touched, and then
 * each tensor is copied to its own 64-byte aligned slot so kernels can use the pointers as they
 * are.  The writer references the caller's tensors, lays them out in insertion order, pads the
 * header so the data starts 8-byte aligned, and replaces the target file atomically (temporary
 * file in the same directory, fsync, rename).  docs/weights.md is the user-facing description. */
#include "engine.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_NAME_MAX 128                 /* bytes, including the NUL: names are < 128 bytes */
#define ST_INT_MAX 9007199254740992.0   /* 2^53: integers above this are inexact in JSON */
#define ST_ALIGN 64                     /* every tensor's data pointer is aligned to this */
#define ST_MAX_SEPARATORS (1u << 20)    /* ',' and ':' in a header: bounds cJSON's memory */

// ---- dtypes ----

/* Every dtype name safetensors defines; only the first three are supported by the engine. */
static const struct st_dtype_row {
	const char *name;
	size_t size;       /* bytes per element */
	bool supported;
	tm_dtype dtype;
} st_dtypes[] = {
	{ "F32", 4, true, TM_DTYPE_F32 },
	{ "I8", 1, true, TM_DTYPE_I8 },
	{ "I32", 4, true, TM_DTYPE_I32 },
	{ "BOOL", 1, false, 0 },
	{ "U8", 1, false, 0 },
	{ "I16", 2, false, 0 },
	{ "U16", 2, false, 0 },
	{ "F16", 2, false, 0 },
	{ "BF16", 2, false, 0 },
	{ "U32", 4, false, 0 },
	{ "I64", 8, false, 0 },
	{ "U64", 8, false, 0 },
	{ "F64", 8, false, 0 },
	{ "C64", 8, false, 0 },
	{ "F8_E5M2", 1, false, 0 },
	{ "F8_E4M3", 1, false, 0 },
	{ "F8_E8M0", 1, false, 0 },
	{ "F6_E2M3", 1, false, 0 },
	{ "F6_E3M2", 1, false, 0 },
	{ "F4", 1, false, 0 },
};

#define ST_N_SUPPORTED 3

const char *tm_dtype_name(tm_dtype dtype)
{
	if ((unsigned)dtype >= ST_N_SUPPORTED)
		return NULL;
	return st_dtypes[dtype].name;
}

size_t tm_dtype_size(tm_dtype dtype)
{
	if ((unsigned)dtype >= ST_N_SUPPORTED)
		return 0;
	return st_dtypes[dtype].size;
}

static const struct st_dtype_row *st_dtype_find(const char *name)
{
	for (size_t i = 0; i < sizeof(st_dtypes) / sizeof(st_dtypes[0]); i++)
		if (strcmp(st_dtypes[i].name, name) == 0)
			return &st_dtypes[i];
	return NULL;
}

// ---- text helpers ----

/* Strict UTF-8 (no overlongs, no surrogates, nothing past U+10FFFF, no NUL).  On failure *bad
 * is the offset of the first bad sequence. */
static bool st_utf8_valid(const uint8_t *s, size_t len, size_t *bad)
{
	size_t i = 0;
	while (i < len) {
		uint8_t c = s[i];
		size_t n;
		uint32_t cp;
		if (c == 0)
			goto invalid;
		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			goto invalid;
		}
		if (len - i <= n)
			goto invalid;
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				goto invalid;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			goto invalid;
		i += n + 1;
	}
	return true;
invalid:
	*bad = i;
	return false;
}

/* A printable rendering of an untrusted string for messages: control characters become '?',
 * long strings are cut with "...". */
static const char *st_show(char *out, size_t cap, const char *s)
{
	size_t o = 0, limit = cap - 4; /* room for "..." and the NUL */
	for (; s[o] && o < limit; o++)
		out[o] = ((unsigned char)s[o] < 0x20 || s[o] == 0x7f) ? '?' : s[o];
	if (s[o]) {
		while (o > 0 && ((unsigned char)s[o] & 0xc0) == 0x80)
			o--; /* never cut a UTF-8 sequence in two */
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = 0;
	return out;
}

/* The error of a file: "weights 'NAME': <message>", field NAME. */
__attribute__((format(printf, 4, 5)))
static int st_fail(tm_err *err, int code, const char *name, const char *fmt, ...)
{
	char msg[320];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return tm_err_set(err, code, name, "weights '%s': %s", name, msg);
}

// ---- the parsed file ----

struct tm_st_file {
	char *name;               /* for messages */
	int n;                    /* tensors */
	tm_st_tensor *tensors;    /* (n) in header order */
	int *by_name;             /* (n) indices into tensors, sorted by name */
	int n_meta;
	char **meta_key;          /* (n_meta) in header order */
	char **meta_val;          /* (n_meta) */
	uint8_t *data;            /* tm_alloc_aligned: each tensor in its own 64-byte aligned slot */
	size_t data_bytes;
};

/* Where each tensor's bytes are, while parsing. */
typedef struct st_span {
	uint64_t begin, end;  /* bytes, relative to the start of the data buffer */
	int idx;              /* tensor index */
} st_span;

/* Where the tensor bytes come from: memory or a file descriptor. */
typedef struct st_source {
	const uint8_t *mem;   /* the data buffer, or NULL to read from fd */
	int fd;
	uint64_t base;        /* file offset of the data buffer */
} st_source;

void tm_st_free(tm_st_file *f)
{
	if (!f)
		return;
	for (int i = 0; i < f->n_meta; i++) {
		free(f->meta_key[i]);
		free(f->meta_val[i]);
	}
	free(f->meta_key);
	free(f->meta_val);
	free(f->tensors);
	free(f->by_name);
	tm_free_aligned(f->data);
	free(f->name);
	free(f);
}

static int st_cmp_span(const void *a, const void *b)
{
	const st_span *x = a, *y = b;
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return 0;
}

/* A name and its tensor index: sorting these needs no global comparator state. */
typedef struct st_name_ref {
	const char *name;
	int idx;
} st_name_ref;

static int st_cmp_ref(const void *a, const void *b)
{
	return strcmp(((const st_name_ref *)a)->name, ((const st_name_ref *)b)->name);
}

/* Sort tensor indices by name into f->by_name. */
static void st_sort_names(tm_st_file *f)
{
	st_name_ref *refs = tm_xcalloc((size_t)f->n ? (size_t)f->n : 1, sizeof(*refs));
	for (int i = 0; i < f->n; i++) {
		refs[i].name = f->tensors[i].name;
		refs[i].idx = i;
	}
	qsort(refs, (size_t)f->n, sizeof(*refs), st_cmp_ref);
	for (int i = 0; i < f->n; i++)
		f->by_name[i] = refs[i].idx;
	free(refs);
}

/* A string that occurs twice among n (sorting a copy: O(n log n) for hostile headers), or NULL. */
static const char *st_find_duplicate(char *const *strs, int n)
{
	st_name_ref *refs = tm_xcalloc((size_t)n ? (size_t)n : 1, sizeof(*refs));
	for (int i = 0; i < n; i++)
		refs[i].name = strs[i];
	qsort(refs, (size_t)n, sizeof(*refs), st_cmp_ref);
	const char *dup = NULL;
	for (int i = 1; i < n && !dup; i++)
		if (strcmp(refs[i - 1].name, refs[i].name) == 0)
			dup = refs[i].name;
	free(refs);
	return dup;
}

/* A JSON number that must be a non-negative integer below 2^53; describes the problem in why. */
static bool st_json_uint(const cJSON *v, uint64_t *out, char *why, size_t cap)
{
	if (!cJSON_IsNumber(v)) {
		snprintf(why, cap, "is not a number");
		return false;
	}
	double d = v->valuedouble;
	if (!isfinite(d) || d != floor(d)) {
		snprintf(why, cap, "is %.17g, must be a non-negative integer", d);
		return false;
	}
	if (d < 0) {
		snprintf(why, cap, "is %.0f, must be a non-negative integer", d);
		return false;
	}
	if (d >= ST_INT_MAX) {
		snprintf(why, cap, "is %g, must be below 2^53", d);
		return false;
	}
	*out = (uint64_t)d;
	return true;
}

/* After cJSON accepted the header: every number in a valid header is a shape entry or an
 * offset, so each must be written as a plain integer (no fraction, no exponent, no leading
 * zero).  cJSON keeps only the double, so this looks at the text.  Returns the offset of the
 * first bad number or SIZE_MAX. */
static size_t st_find_non_integer(const char *s, size_t len, size_t *tok_len)
{
	size_t i = 0;
	while (i < len) {
		char c = s[i];
		if (c == '"') {
			for (i++; i < len && s[i] != '"'; i++)
				if (s[i] == '\\')
					i++;
			i++;
			continue;
		}
		if (c == '-' || (c >= '0' && c <= '9')) {
			size_t j = i + (c == '-');
			bool bad = false;
			size_t digits = j;
			while (j < len && ((s[j] >= '0' && s[j] <= '9') || s[j] == '.' || s[j] == 'e' ||
					   s[j] == 'E' || s[j] == '+' || s[j] == '-')) {
				if (!(s[j] >= '0' && s[j] <= '9'))
					bad = true;
				j++;
			}
			if (j - digits > 1 && s[digits] == '0')
				bad = true;
			if (bad) {
				*tok_len = j - i;
				return i;
			}
			i = j;
			continue;
		}
		i++;
	}
	return SIZE_MAX;
}

/* Commas and colons outside strings: one per object member or array element, so this bounds
 * the number of nodes cJSON would allocate (~100 bytes each) before it allocates them. */
static size_t st_count_separators(const char *s, size_t len)
{
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '"') {
			for (i++; i < len && s[i] != '"'; i++)
				if (s[i] == '\\')
					i++;
		} else if (s[i] == ',' || s[i] == ':') {
			n++;
		}
	}
	return n;
}

/* An escaped NUL ("\u0000") inside a string: cJSON would silently cut the string there, so a
 * name "a\u0000b" would become "a".  Returns its offset or SIZE_MAX.  Runs on text cJSON
 * accepted, so strings are well-formed. */
static size_t st_find_escaped_nul(const char *s, size_t len)
{
	bool in_str = false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '"') {
			in_str = !in_str;
		} else if (in_str && s[i] == '\\') {
			if (len - i >= 6 && s[i + 1] == 'u' && memcmp(s + i + 2, "0000", 4) == 0)
				return i;
			i++;
		}
	}
	return SIZE_MAX;
}

static bool st_is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Parse and validate the header (hdr, hlen bytes) of a file whose data buffer holds buf_len
 * bytes, then copy every tensor from src into an aligned arena.  f->name is set. */
static int st_load(tm_st_file *f, const uint8_t *hdr, size_t hlen, uint64_t buf_len,
		   const st_source *src, tm_err *err)
{
	const char *name = f->name;
	char show[80], show2[80], why[128];
	int rc = 0;
	size_t bad;
	st_span *spans = NULL;
	cJSON *root = NULL;

	if (!st_utf8_valid(hdr, hlen, &bad))
		return st_fail(err, TM_EFORMAT, name,
			       "header is not valid UTF-8 (bad byte 0x%02x at header byte %zu)",
			       hdr[bad], bad);
	/* A NUL-terminated private copy: cJSON never reads past it whatever the input. */
	char *text = tm_xmalloc(hlen + 1);
	memcpy(text, hdr, hlen);
	text[hlen] = 0;

	size_t seps = st_count_separators(text, hlen);
	if (seps > ST_MAX_SEPARATORS) {
		rc = st_fail(err, TM_ELIMIT, name,
			     "header has %zu entries and list items, more than the limit of %u",
			     seps, ST_MAX_SEPARATORS);
		goto out;
	}
	const char *end = NULL;
	root = cJSON_ParseWithLengthOpts(text, hlen, &end, 0);
	if (!root) {
		size_t at = end && end >= text && end <= text + hlen ? (size_t)(end - text) : 0;
		rc = st_fail(err, TM_EFORMAT, name,
			     "header is not valid JSON (syntax error at header byte %zu of %zu)", at,
			     hlen);
		goto out;
	}
	for (const char *p = end; p < text + hlen; p++) {
		if (!st_is_space(*p)) {
			rc = st_fail(err, TM_EFORMAT, name,
				     "header has data after the JSON value at header byte %zu, only spaces may pad it",
				     (size_t)(p - text));
			goto out;
		}
	}
	size_t nul = st_find_escaped_nul(text, (size_t)(end - text));
	if (nul != SIZE_MAX) {
		rc = st_fail(err, TM_EFORMAT, name,
			     "header has an escaped NUL (\\u0000) in a string at header byte %zu", nul);
		goto out;
	}
	if (!cJSON_IsObject(root)) {
		rc = st_fail(err, TM_EFORMAT, name, "header is not a JSON object");
		goto out;
	}

	int count = 0, n_meta = 0;
	bool have_meta = false;
	for (const cJSON *e = root->child; e; e = e->next) {
		if (e->string && strcmp(e->string, "__metadata__") == 0) {
			if (have_meta) {
				rc = st_fail(err, TM_EFORMAT, name, "'__metadata__' appears twice");
				goto out;
			}
			have_meta = true;
			if (!cJSON_IsObject(e)) {
				rc = st_fail(err, TM_EFORMAT, name, "'__metadata__' is not an object");
				goto out;
			}
			for (const cJSON *m = e->child; m; m = m->next) {
				if (!cJSON_IsString(m)) {
					rc = st_fail(err, TM_EFORMAT, name,
						     "metadata '%s' is not a string, values must be strings",
						     st_show(show, sizeof(show), m->string));
					goto out;
				}
				n_meta++;
			}
		} else {
			count++;
		}
	}
	f->tensors = tm_xcalloc((size_t)count ? (size_t)count : 1, sizeof(*f->tensors));
	f->by_name = tm_xcalloc((size_t)count ? (size_t)count : 1, sizeof(*f->by_name));
	spans = tm_xcalloc((size_t)count ? (size_t)count : 1, sizeof(*spans));
	f->meta_key = tm_xcalloc((size_t)n_meta ? (size_t)n_meta : 1, sizeof(char *));
	f->meta_val = tm_xcalloc((size_t)n_meta ? (size_t)n_meta : 1, sizeof(char *));

	for (const cJSON *e = root->child; e; e = e->next) {
		const char *tname = e->string;
		if (strcmp(tname, "__metadata__") == 0) {
			for (const cJSON *m = e->child; m; m = m->next) {
				f->meta_key[f->n_meta] = tm_xstrdup(m->string);
				f->meta_val[f->n_meta] = tm_xstrdup(m->valuestring);
				f->n_meta++;
			}
			continue;
		}
		size_t nlen = strlen(tname);
		if (nlen == 0 || nlen >= ST_NAME_MAX) {
			rc = st_fail(err, TM_EFORMAT, name,
				     "tensor name '%s' is %zu bytes, must be 1 to %d bytes",
				     st_show(show, sizeof(show), tname), nlen, ST_NAME_MAX - 1);
			goto out;
		}
		st_show(show, sizeof(show), tname);
		if (!cJSON_IsObject(e)) {
			rc = st_fail(err, TM_EFORMAT, name, "tensor '%s' is not an object", show);
			goto out;
		}
		const cJSON *dtype = NULL, *shape = NULL, *offs = NULL;
		for (const cJSON *k = e->child; k; k = k->next) {
			const cJSON **slot = strcmp(k->string, "dtype") == 0 ? &dtype
					   : strcmp(k->string, "shape") == 0 ? &shape
					   : strcmp(k->string, "data_offsets") == 0 ? &offs : NULL;
			if (!slot) {
				rc = st_fail(err, TM_EFORMAT, name,
					     "tensor '%s' has unknown key '%s', allowed: dtype, shape, data_offsets",
					     show, st_show(show2, sizeof(show2), k->string));
				goto out;
			}
			if (*slot) {
				rc = st_fail(err, TM_EFORMAT, name, "tensor '%s' has key '%s' twice",
					     show, k->string);
				goto out;
			}
			*slot = k;
		}
		const char *missing = !dtype ? "dtype" : !shape ? "shape" : !offs ? "data_offsets" : NULL;
		if (missing) {
			rc = st_fail(err, TM_EFORMAT, name, "tensor '%s' has no '%s'", show, missing);
			goto out;
		}

		tm_st_tensor *t = &f->tensors[f->n];
		memcpy(t->name, tname, nlen + 1);

		if (!cJSON_IsString(dtype)) {
			rc = st_fail(err, TM_EFORMAT, name, "tensor '%s': dtype is not a string", show);
			goto out;
		}
		const struct st_dtype_row *dt = st_dtype_find(dtype->valuestring);
		if (!dt) {
			rc = st_fail(err, TM_EFORMAT, name, "tensor '%s': unknown dtype '%s'", show,
				     st_show(show2, sizeof(show2), dtype->valuestring));
			goto out;
		}
		if (!dt->supported) {
			rc = st_fail(err, TM_EFORMAT, name,
				     "tensor '%s': unsupported dtype '%s', must be F32, I8 or I32",
				     show, dt->name);
			goto out;
		}
		t->dtype = dt->dtype;

		if (!cJSON_IsArray(shape)) {
			rc = st_fail(err, TM_EFORMAT, name, "tensor '%s': shape is not a list", show);
			goto out;
		}
		int ndim = cJSON_GetArraySize(shape);
		if (ndim > TM_ST_MAX_DIMS) {
			rc = st_fail(err, TM_EFORMAT, name,
				     "tensor '%s': shape has %d dimensions, at most %d", show, ndim,
				     TM_ST_MAX_DIMS);
			goto out;
		}
		t->ndim = ndim;
		uint64_t numel = 1;
		bool overflow = false;
		int d = 0;
		for (const cJSON *v = shape->child; v; v = v->next, d++) {
			uint64_t dim;
			if (!st_json_uint(v, &dim, why, sizeof(why))) {
				rc = st_fail(err, TM_EFORMAT, name, "tensor '%s': shape[%d] %s", show,
					     d, why);
				goto out;
			}
			t->shape[d] = (int64_t)dim;
			overflow = overflow || __builtin_mul_overflow(numel, dim, &numel);
		}
		uint64_t need;
		if (overflow || __builtin_mul_overflow(numel, (uint64_t)dt->size, &need) ||
		    need > SIZE_MAX) {
			rc = st_fail(err, TM_EFORMAT, name,
				     "tensor '%s': shape product overflows 64 bits", show);
			goto out;
		}

		if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2) {
			rc = st_fail(err, TM_EFORMAT, name,
				     "tensor '%s': data_offsets is not a list of two integers", show);
			goto out;
		}
		uint64_t begin, fin;
		if (!st_json_uint(offs->child, &begin, why, sizeof(why))) {
			rc = st_fail(err, TM_EFORMAT, name, "tensor '%s': data_offsets[0] %s",
				     show, why);
			goto out;
		}
		if (!st_json_uint(offs->child->next, &fin, why, sizeof(why))) {
			rc = st_fail(err, TM_EFORMAT, name, "tensor '%s': data_offsets[1] %s",
				     show, why);
			goto out;
		}
		if (fin < begin) {
			rc = st_fail(err, TM_EFORMAT, name,
				     "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end before begin",
				     show, begin, fin);
			goto out;
		}
		if (fin > buf_len) {
			rc = st_fail(err, TM_EFORMAT, name,
				     "tensor '%s': data_offsets end %" PRIu64 " is past the end of the %" PRIu64 "-byte data buffer",
				     show, fin, buf_len);
			goto out;
		}
		if (fin - begin != need) {
			rc = st_fail(err, TM_EFORMAT, name,
				     "tensor '%s': data_offsets span %" PRIu64 " bytes, shape needs %" PRIu64 " bytes of %s",
				     show, fin - begin, need, dt->name);
			goto out;
		}
		t->nbytes = (size_t)need;
		spans[f->n].begin = begin;
		spans[f->n].end = fin;
		spans[f->n].idx = f->n;
		f->n++;
	}

	/* Metadata keys and tensor names are unique (cJSON keeps duplicate keys, so look). */
	const char *dup = st_find_duplicate(f->meta_key, f->n_meta);
	if (dup) {
		rc = st_fail(err, TM_EFORMAT, name, "metadata key '%s' appears twice",
			     st_show(show, sizeof(show), dup));
		goto out;
	}
	st_sort_names(f);
	for (int i = 1; i < f->n; i++) {
		const char *a = f->tensors[f->by_name[i - 1]].name;
		if (strcmp(a, f->tensors[f->by_name[i]].name) == 0) {
			rc = st_fail(err, TM_EFORMAT, name, "tensor '%s' appears twice",
				     st_show(show, sizeof(show), a));
			goto out;
		}
	}

	/* The tensors tile the data buffer: no overlap, no gap, nothing after the last one (the
	 * same rule as the reference implementation, so what we accept PyTorch loads). */
	qsort(spans, (size_t)f->n, sizeof(*spans), st_cmp_span);
	uint64_t pos = 0;
	for (int i = 0; i < f->n; i++) {
		if (spans[i].begin < pos) {
			rc = st_fail(err, TM_EFORMAT, name,
				     "tensors '%s' and '%s' overlap at data bytes [%" PRIu64 ", %" PRIu64 ")",
				     st_show(show, sizeof(show), f->tensors[spans[i - 1].idx].name),
				     st_show(show2, sizeof(show2), f->tensors[spans[i].idx].name),
				     spans[i].begin, pos);
			goto out;
		}
		if (spans[i].begin > pos) {
			rc = st_fail(err, TM_EFORMAT, name,
				     "data bytes [%" PRIu64 ", %" PRIu64 ") before tensor '%s' belong to no tensor",
				     pos, spans[i].begin,
				     st_show(show, sizeof(show), f->tensors[spans[i].idx].name));
			goto out;
		}
		pos = spans[i].end;
	}
	if (pos != buf_len) {
		rc = st_fail(err, TM_EFORMAT, name,
			     "data buffer has %" PRIu64 " bytes after the last tensor, which belong to no tensor",
			     buf_len - pos);
		goto out;
	}

	/* Numbers are written as integers (cJSON accepted 1.0 or 1e3 as doubles above). */
	size_t tok_len = 0;
	size_t at = st_find_non_integer(text, (size_t)(end - text), &tok_len);
	if (at != SIZE_MAX) {
		char tok[32];
		snprintf(tok, sizeof(tok), "%.*s", (int)(tok_len < 24 ? tok_len : 24), text + at);
		rc = st_fail(err, TM_EFORMAT, name,
			     "number '%s' at header byte %zu is not a plain integer", tok, at);
		goto out;
	}

	/* Copy each tensor into its own aligned slot (spans are in file order now). */
	size_t total = 0;
	for (int i = 0; i < f->n; i++) {
		size_t sz = f->tensors[spans[i].idx].nbytes;
		size_t rounded = (sz + ST_ALIGN - 1) & ~(size_t)(ST_ALIGN - 1);
		if (rounded < sz || __builtin_add_overflow(total, rounded, &total)) {
			rc = st_fail(err, TM_ENOMEM, name, "tensor data does not fit in memory");
			goto out;
		}
	}
	f->data = tm_alloc_aligned(total ? total : ST_ALIGN);
	if (!f->data) {
		rc = st_fail(err, TM_ENOMEM, name, "cannot allocate %zu bytes for tensor data", total);
		goto out;
	}
	f->data_bytes = total;
	size_t off = 0;
	for (int i = 0; i < f->n; i++) {
		tm_st_tensor *t = &f->tensors[spans[i].idx];
		uint8_t *dst = f->data + off;
		if (src->mem) {
			if (t->nbytes)
				memcpy(dst, src->mem + spans[i].begin, t->nbytes);
		} else {
			size_t got = 0;
			while (got < t->nbytes) {
				ssize_t r = pread(src->fd, dst + got, t->nbytes - got,
						  (off_t)(src->base + spans[i].begin + got));
				if (r < 0 && errno == EINTR)
					continue;
				if (r < 0) {
					rc = st_fail(err, TM_EIO, name, "read failed: %s",
						     strerror(errno));
					goto out;
				}
				if (r == 0) {
					rc = st_fail(err, TM_EFORMAT, name,
						     "file shrank while reading tensor '%s'",
						     st_show(show, sizeof(show), t->name));
					goto out;
				}
				got += (size_t)r;
			}
		}
		t->data = dst;
		off += (t->nbytes + ST_ALIGN - 1) & ~(size_t)(ST_ALIGN - 1);
	}

out:
	cJSON_Delete(root);
	free(text);
	free(spans);
	return rc;
}

// ---- reading ----

/* The 8-byte prefix: header length n, checked against the limit and the file length. */
static int st_prefix(const uint8_t p[8], uint64_t file_len, const char *name, uint64_t *n,
		     tm_err *err)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	if (v > TM_ST_MAX_HEADER)
		return st_fail(err, TM_ELIMIT, name,
			       "header length %" PRIu64 " exceeds the limit of %u bytes", v,
			       TM_ST_MAX_HEADER);
	if (v > file_len - 8)
		return st_fail(err, TM_EFORMAT, name,
			       "header length %" PRIu64 " is past the end of the %" PRIu64 "-byte file",
			       v, file_len);
	*n = v;
	return 0;
}

static tm_st_file *st_new(const char *name)
{
	tm_st_file *f = tm_xcalloc(1, sizeof(*f));
	f->name = tm_xstrdup(name ? name : "<memory>");
	return f;
}

int tm_st_parse(tm_st_file **out, const uint8_t *buf, size_t len, const char *name, tm_err *err)
{
	*out = NULL;
	tm_st_file *f = st_new(name);
	uint64_t n = 0;
	int rc;
	if (len < 8) {
		rc = st_fail(err, TM_EFORMAT, f->name,
			     "file is %zu bytes, shorter than the 8-byte header length", len);
		goto fail;
	}
	rc = st_prefix(buf, len, f->name, &n, err);
	if (rc)
		goto fail;
	st_source src = { .mem = buf + 8 + n, .fd = -1, .base = 0 };
	rc = st_load(f, buf + 8, (size_t)n, len - 8 - n, &src, err);
	if (rc)
		goto fail;
	*out = f;
	return 0;
fail:
	tm_st_free(f);
	return rc;
}

static int st_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	size_t got = 0;
	while (got < len) {
		ssize_t r = pread(fd, (uint8_t *)buf + got, len - got, (off_t)(off + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? -errno : -EIO;
		got += (size_t)r;
	}
	return 0;
}

int tm_st_open(tm_st_file **out, const char *path, tm_err *err)
{
	*out = NULL;
	tm_st_file *f = st_new(path);
	uint8_t *hdr = NULL;
	int rc;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block us */
	if (fd < 0) {
		rc = st_fail(err, TM_EIO, f->name, "cannot open: %s", strerror(errno));
		goto fail;
	}
	struct stat sb;
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		rc = st_fail(err, TM_EIO, f->name, "not a regular file");
		goto fail;
	}
	uint64_t len = (uint64_t)sb.st_size, n = 0;
	uint8_t prefix[8];
	if (len < 8) {
		rc = st_fail(err, TM_EFORMAT, f->name,
			     "file is %" PRIu64 " bytes, shorter than the 8-byte header length", len);
		goto fail;
	}
	int e = st_pread_all(fd, prefix, 8, 0);
	if (e == 0) {
		rc = st_prefix(prefix, len, f->name, &n, err);
		if (rc)
			goto fail;
		hdr = tm_xmalloc((size_t)n ? (size_t)n : 1);
		e = st_pread_all(fd, hdr, (size_t)n, 8);
	}
	if (e < 0) {
		rc = st_fail(err, TM_EIO, f->name, "read failed: %s",
			     e == -EIO ? "file shrank while reading" : strerror(-e));
		goto fail;
	}
	st_source src = { .mem = NULL, .fd = fd, .base = 8 + n };
	rc = st_load(f, hdr, (size_t)n, len - 8 - n, &src, err);
	if (rc)
		goto fail;
	free(hdr);
	close(fd);
	*out = f;
	return 0;
fail:
	free(hdr);
	if (fd >= 0)
		close(fd);
	tm_st_free(f);
	return rc;
}

int tm_st_count(const tm_st_file *f)
{
	return f ? f->n : 0;
}

const tm_st_tensor *tm_st_at(const tm_st_file *f, int i)
{
	if (!f || i < 0 || i >= f->n)
		return NULL;
	return &f->tensors[i];
}

const tm_st_tensor *tm_st_get(const tm_st_file *f, const char *name)
{
	if (!f || !name)
		return NULL;
	int lo = 0, hi = f->n - 1;
	while (lo <= hi) {
		int mid = lo + (hi - lo) / 2;
		const tm_st_tensor *t = &f->tensors[f->by_name[mid]];
		int c = strcmp(name, t->name);
		if (c == 0)
			return t;
		if (c < 0)
			hi = mid - 1;
		else
			lo = mid + 1;
	}
	return NULL;
}

const char *tm_st_meta(const tm_st_file *f, const char *key)
{
	if (!f || !key)
		return NULL;
	for (int i = 0; i < f->n_meta; i++)
		if (strcmp(f->meta_key[i], key) == 0)
			return f->meta_val[i];
	return NULL;
}

static void st_shape_str(char *out, size_t cap, int ndim, const int64_t *shape)
{
	size_t o = 0;
	o += (size_t)snprintf(out, cap, "(");
	for (int i = 0; i < ndim && o < cap; i++)
		o += (size_t)snprintf(out + o, cap - o, "%s%" PRId64, i ? ", " : "", shape[i]);
	if (o < cap)
		snprintf(out + o, cap - o, ")");
}

int tm_st_expect(const tm_st_file *f, const char *name, tm_dtype dtype, int ndim,
		 const int64_t *shape, const void **data, tm_err *err)
{
	if (data)
		*data = NULL;
	const tm_st_tensor *t = tm_st_get(f, name);
	const char *file = f ? f->name : "<none>";
	if (!t)
		return tm_err_set(err, TM_EFORMAT, name, "weights '%s': tensor '%s' is missing",
				  file, name);
	if (t->dtype != dtype)
		return tm_err_set(err, TM_EFORMAT, name,
				  "weights '%s': tensor '%s' is %s, expected %s", file, name,
				  tm_dtype_name(t->dtype),
				  tm_dtype_name(dtype) ? tm_dtype_name(dtype) : "an unknown dtype");
	bool same = t->ndim == ndim;
	for (int i = 0; same && i < ndim; i++)
		same = t->shape[i] == shape[i];
	if (!same) {
		char have[96], want[96];
		st_shape_str(have, sizeof(have), t->ndim, t->shape);
		st_shape_str(want, sizeof(want), ndim >= 0 && ndim <= TM_ST_MAX_DIMS ? ndim : 0,
			     shape);
		return tm_err_set(err, TM_EFORMAT, name,
				  "weights '%s': tensor '%s' has shape %s, expected %s", file, name,
				  have, want);
	}
	if (data)
		*data = t->data;
	return 0;
}

// ---- writing ----

typedef struct st_wtensor {
	char *name;
	tm_dtype dtype;
	int ndim;
	int64_t shape[TM_ST_MAX_DIMS];
	const void *data;   /* the caller's, not copied */
	size_t nbytes;
} st_wtensor;

struct tm_st_writer {
	st_wtensor *t;      /* (n) in insertion order */
	int n, cap;
	char **meta_key;    /* (n_meta) in insertion order */
	char **meta_val;    /* (n_meta) */
	int n_meta, cap_meta;
	char bad[320];      /* the first invalid add/meta call, reported by save */
};

tm_st_writer *tm_st_writer_new(void)
{
	return tm_xcalloc(1, sizeof(tm_st_writer));
}

void tm_st_writer_free(tm_st_writer *w)
{
	if (!w)
		return;
	for (int i = 0; i < w->n; i++)
		free(w->t[i].name);
	for (int i = 0; i < w->n_meta; i++) {
		free(w->meta_key[i]);
		free(w->meta_val[i]);
	}
	free(w->t);
	free(w->meta_key);
	free(w->meta_val);
	free(w);
}

__attribute__((format(printf, 2, 3)))
static void st_writer_bad(tm_st_writer *w, const char *fmt, ...)
{
	if (w->bad[0])
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(w->bad, sizeof(w->bad), fmt, ap);
	va_end(ap);
}

static bool st_text_ok(const char *s)
{
	size_t bad;
	return st_utf8_valid((const uint8_t *)s, strlen(s), &bad);
}

void tm_st_writer_meta(tm_st_writer *w, const char *key, const char *value)
{
	char show[80];
	if (!key || !value) {
		st_writer_bad(w, "metadata key and value must not be NULL");
		return;
	}
	if (!st_text_ok(key) || !st_text_ok(value)) {
		st_writer_bad(w, "metadata '%s' is not valid UTF-8", st_show(show, sizeof(show), key));
		return;
	}
	for (int i = 0; i < w->n_meta; i++) {
		if (strcmp(w->meta_key[i], key) == 0) {
			free(w->meta_val[i]);
			w->meta_val[i] = tm_xstrdup(value);
			return;
		}
	}
	if (w->n_meta == w->cap_meta) {
		w->cap_meta = w->cap_meta ? 2 * w->cap_meta : 8;
		w->meta_key = realloc(w->meta_key, (size_t)w->cap_meta * sizeof(char *));
		w->meta_val = realloc(w->meta_val, (size_t)w->cap_meta * sizeof(char *));
		if (!w->meta_key || !w->meta_val)
			abort(); /* small allocation: out of memory is fatal, as tm_xmalloc */
	}
	w->meta_key[w->n_meta] = tm_xstrdup(key);
	w->meta_val[w->n_meta] = tm_xstrdup(value);
	w->n_meta++;
}

void tm_st_writer_add(tm_st_writer *w, const char *name, tm_dtype dtype, int ndim,
		      const int64_t *shape, const void *data)
{
	char show[80];
	if (!name || !*name || strlen(name) >= ST_NAME_MAX || !st_text_ok(name) ||
	    strcmp(name, "__metadata__") == 0) {
		st_writer_bad(w, "tensor name '%s' is invalid, must be 1 to %d bytes of UTF-8 and not '__metadata__'",
			      name ? st_show(show, sizeof(show), name) : "(null)", ST_NAME_MAX - 1);
		return;
	}
	st_show(show, sizeof(show), name);
	if (!tm_dtype_name(dtype)) {
		st_writer_bad(w, "tensor '%s': dtype %d is unknown", show, (int)dtype);
		return;
	}
	if (ndim < 0 || ndim > TM_ST_MAX_DIMS || (ndim > 0 && !shape)) {
		st_writer_bad(w, "tensor '%s': ndim is %d, must be in [0, %d]", show, ndim,
			      TM_ST_MAX_DIMS);
		return;
	}
	uint64_t numel = 1;
	for (int i = 0; i < ndim; i++) {
		if (shape[i] < 0 || (double)shape[i] >= ST_INT_MAX ||
		    __builtin_mul_overflow(numel, (uint64_t)shape[i], &numel)) {
			st_writer_bad(w, "tensor '%s': shape[%d] is %" PRId64 " or the shape overflows",
				      show, i, shape[i]);
			return;
		}
	}
	uint64_t nbytes;
	if (__builtin_mul_overflow(numel, (uint64_t)tm_dtype_size(dtype), &nbytes) ||
	    (double)nbytes >= ST_INT_MAX) {
		st_writer_bad(w, "tensor '%s': size overflows", show);
		return;
	}
	if (nbytes && !data) {
		st_writer_bad(w, "tensor '%s': data is NULL", show);
		return;
	}
	for (int i = 0; i < w->n; i++) {
		if (strcmp(w->t[i].name, name) == 0) {
			st_writer_bad(w, "tensor '%s' is added twice", show);
			return;
		}
	}
	if (w->n == w->cap) {
		w->cap = w->cap ? 2 * w->cap : 16;
		w->t = realloc(w->t, (size_t)w->cap * sizeof(*w->t));
		if (!w->t)
			abort(); /* small allocation: out of memory is fatal, as tm_xmalloc */
	}
	st_wtensor *t = &w->t[w->n++];
	memset(t, 0, sizeof(*t));
	t->name = tm_xstrdup(name);
	t->dtype = dtype;
	t->ndim = ndim;
	for (int i = 0; i < ndim; i++)
		t->shape[i] = shape[i];
	t->data = data;
	t->nbytes = (size_t)nbytes;
}

static cJSON *st_json_int(uint64_t v)
{
	char buf[24];
	snprintf(buf, sizeof(buf), "%" PRIu64, v);
	return cJSON_CreateRaw(buf);
}

/* The header: JSON, then spaces up to a multiple of 8 bytes.  Caller frees; *len is N. */
static char *st_header_build(const tm_st_writer *w, size_t *len)
{
	cJSON *root = cJSON_CreateObject();
	if (w->n_meta) {
		cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
		for (int i = 0; i < w->n_meta; i++)
			cJSON_AddItemToObject(meta, w->meta_key[i],
					      cJSON_CreateString(w->meta_val[i]));
	}
	uint64_t off = 0;
	for (int i = 0; i < w->n; i++) {
		const st_wtensor *t = &w->t[i];
		cJSON *e = cJSON_CreateObject();
		cJSON_AddItemToObject(root, t->name, e);
		cJSON_AddStringToObject(e, "dtype", tm_dtype_name(t->dtype));
		cJSON *shape = cJSON_AddArrayToObject(e, "shape");
		for (int d = 0; d < t->ndim; d++)
			cJSON_AddItemToArray(shape, st_json_int((uint64_t)t->shape[d]));
		cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
		cJSON_AddItemToArray(offs, st_json_int(off));
		cJSON_AddItemToArray(offs, st_json_int(off + t->nbytes));
		off += t->nbytes;
	}
	char *json = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	if (!json)
		return NULL;
	size_t jlen = strlen(json);
	size_t n = (jlen + 7) & ~(size_t)7;
	char *out = tm_xmalloc(n + 1);
	memcpy(out, json, jlen);
	memset(out + jlen, ' ', n - jlen);
	out[n] = 0;
	cJSON_free(json);
	*len = n;
	return out;
}

static int st_write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (len) {
		ssize_t r = write(fd, p, len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

/* fsync the directory holding path, so the rename itself is durable. */
static void st_sync_dir(const char *path)
{
	char dir[4096];
	const char *slash = strrchr(path, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == path)
		snprintf(dir, sizeof(dir), "/");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

int tm_st_writer_save(tm_st_writer *w, const char *path, tm_err *err)
{
	if (!path || !*path)
		return tm_err_set(err, TM_EINVAL, "", "weights: no path given");
	if (w->bad[0])
		return st_fail(err, TM_EINVAL, path, "%s", w->bad);
	size_t n = 0;
	char *hdr = st_header_build(w, &n);
	if (!hdr)
		return st_fail(err, TM_ENOMEM, path, "cannot build the header");
	if (n > TM_ST_MAX_HEADER) {
		free(hdr);
		return st_fail(err, TM_ELIMIT, path,
			       "header of %zu bytes exceeds the limit of %u bytes", n,
			       TM_ST_MAX_HEADER);
	}

	char tmp[4096];
	int k = snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path);
	if (k < 0 || (size_t)k >= sizeof(tmp)) {
		free(hdr);
		return st_fail(err, TM_EINVAL, path, "path is too long");
	}
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		free(hdr);
		return st_fail(err, TM_EIO, path, "cannot create a temporary file: %s", strerror(e));
	}
	uint8_t prefix[8];
	for (int i = 0; i < 8; i++)
		prefix[i] = (uint8_t)((uint64_t)n >> (8 * i));
	const char *what = NULL;
	int e = 0;
	if (fchmod(fd, 0644) != 0)
		what = "chmod";
	else if (st_write_all(fd, prefix, 8) != 0 || st_write_all(fd, hdr, n) != 0)
		what = "write";
	for (int i = 0; !what && i < w->n; i++)
		if (st_write_all(fd, w->t[i].data, w->t[i].nbytes) != 0)
			what = "write";
	if (!what && fsync(fd) != 0)
		what = "fsync";
	if (what)
		e = errno;
	if (close(fd) != 0 && !what) {
		e = errno;
		what = "close";
	}
	if (!what && rename(tmp, path) != 0) {
		e = errno;
		what = "rename";
	}
	free(hdr);
	if (what) {
		unlink(tmp);
		return st_fail(err, TM_EIO, path, "%s failed: %s", what, strerror(e));
	}
	st_sync_dir(path);
	return 0;
}
