/* test_safetensors.c: Check suite of engine/safetensors.c.  Round-trips F32/I8/I32 tensors and
 * metadata through the writer and both readers (file and memory), checks the written header is
 * the JSON the format defines with the data 8-byte aligned and every tensor pointer 64-byte
 * aligned, checks the atomic save and its failures, rejects a table of malformed headers with
 * their messages, and mutates a valid file byte by byte and bit by bit (runs under ASan) to show
 * hostile input yields an error or a consistent file, never a crash or an out-of-bounds read. */
#include "tests.h"
#include "engine.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

// ---- helpers ----

static char *tmp;

static void setup(void)
{
	tmp = tt_tmpdir("st");
	ck_assert_ptr_nonnull(tmp);
}

static void teardown(void)
{
	tt_rmtree(tmp);
	free(tmp);
	tmp = NULL;
}

static char *tpath(const char *name)
{
	static char buf[1024];
	snprintf(buf, sizeof(buf), "%s/%s", tmp, name);
	return buf;
}

static uint8_t *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	ck_assert_ptr_nonnull(f);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *b = malloc((size_t)n + 1);
	ck_assert_uint_eq(fread(b, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return b;
}

static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	ck_assert_ptr_nonnull(d);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

/* A file from a header text and data_len bytes of data (value i & 0xff); the length prefix
 * is the header's length unless hlen_override is not UINT64_MAX. */
static uint8_t *mkfile(const char *json, size_t data_len, uint64_t hlen_override, size_t *len)
{
	size_t h = strlen(json);
	*len = 8 + h + data_len;
	uint8_t *b = malloc(*len);
	uint64_t n = hlen_override == UINT64_MAX ? h : hlen_override;
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(n >> (8 * i));
	memcpy(b + 8, json, h);
	for (size_t i = 0; i < data_len; i++)
		b[8 + h + i] = (uint8_t)i;
	return b;
}

/* Touch every byte of every tensor (ASan checks the reads) and check the invariants. */
static void check_consistent(const tm_st_file *f)
{
	unsigned sum = 0;
	for (int i = 0; i < tm_st_count(f); i++) {
		const tm_st_tensor *t = tm_st_at(f, i);
		ck_assert_ptr_nonnull(t);
		ck_assert_ptr_nonnull(t->data);
		ck_assert_int_eq((uintptr_t)t->data % 64, 0);
		ck_assert_int_le(t->ndim, TM_ST_MAX_DIMS);
		size_t numel = 1;
		for (int d = 0; d < t->ndim; d++) {
			ck_assert_int_ge(t->shape[d], 0);
			numel *= (size_t)t->shape[d];
		}
		ck_assert_uint_eq(numel * tm_dtype_size(t->dtype), t->nbytes);
		for (size_t k = 0; k < t->nbytes; k++)
			sum += ((const uint8_t *)t->data)[k];
		ck_assert_ptr_eq(tm_st_get(f, t->name), t);
	}
	(void)sum;
}

// ---- round trip ----

enum { NA = 15, NB = 7, NC = 8 };

static float ta[NA];
static int8_t tb[NB];
static int32_t tc[NC];

static tm_st_writer *sample_writer(void)
{
	tt_fill_random(ta, NA, 42);
	ta[3] = -0.0f;
	for (int i = 0; i < NB; i++)
		tb[i] = (int8_t)(i * 37 - 128);
	for (int i = 0; i < NC; i++)
		tc[i] = (int32_t)(0x7fffffff - i * 1000003);
	tc[1] = INT32_MIN;
	tm_st_writer *w = tm_st_writer_new();
	tm_st_writer_meta(w, "format", "pt");
	tm_st_writer_meta(w, "note", "quote\" back\\slash\nnewline \xc3\xa9");
	tm_st_writer_meta(w, "format", "pt"); /* a repeated key replaces */
	/* I8 first, with an odd size, so the F32 after it is unaligned inside the file. */
	tm_st_writer_add(w, "layers.0.q", TM_DTYPE_I8, 1, (int64_t[]){ NB }, tb);
	tm_st_writer_add(w, "layers.0.weight", TM_DTYPE_F32, 2, (int64_t[]){ 3, 5 }, ta);
	tm_st_writer_add(w, "layers.0.idx", TM_DTYPE_I32, 3, (int64_t[]){ 2, 2, 2 }, tc);
	tm_st_writer_add(w, "scalar", TM_DTYPE_F32, 0, NULL, ta + 1);
	tm_st_writer_add(w, "empty", TM_DTYPE_F32, 2, (int64_t[]){ 0, 4 }, NULL);
	return w;
}

static void check_sample(const tm_st_file *f)
{
	static const char *const names[] = { "layers.0.q", "layers.0.weight", "layers.0.idx",
					     "scalar", "empty" };
	ck_assert_int_eq(tm_st_count(f), 5);
	for (int i = 0; i < 5; i++)
		ck_assert_str_eq(tm_st_at(f, i)->name, names[i]);
	ck_assert_ptr_null(tm_st_at(f, 5));
	ck_assert_ptr_null(tm_st_at(f, -1));
	check_consistent(f);

	const tm_st_tensor *t = tm_st_get(f, "layers.0.weight");
	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(t->dtype, TM_DTYPE_F32);
	ck_assert_int_eq(t->ndim, 2);
	ck_assert_int_eq(t->shape[0], 3);
	ck_assert_int_eq(t->shape[1], 5);
	ck_assert_uint_eq(t->nbytes, sizeof(ta));
	ck_assert_mem_eq(t->data, ta, sizeof(ta)); /* bit-identical, -0.0 included */
	t = tm_st_get(f, "layers.0.q");
	ck_assert_int_eq(t->dtype, TM_DTYPE_I8);
	ck_assert_int_eq(t->shape[0], NB);
	ck_assert_mem_eq(t->data, tb, sizeof(tb));
	t = tm_st_get(f, "layers.0.idx");
	ck_assert_int_eq(t->dtype, TM_DTYPE_I32);
	ck_assert_int_eq(t->ndim, 3);
	ck_assert_mem_eq(t->data, tc, sizeof(tc));
	t = tm_st_get(f, "scalar");
	ck_assert_int_eq(t->ndim, 0);
	ck_assert_uint_eq(t->nbytes, 4);
	ck_assert_mem_eq(t->data, ta + 1, 4);
	t = tm_st_get(f, "empty");
	ck_assert_int_eq(t->shape[0], 0);
	ck_assert_uint_eq(t->nbytes, 0);
	ck_assert_ptr_null(tm_st_get(f, "layers.0"));
	ck_assert_ptr_null(tm_st_get(f, "zzz"));

	ck_assert_str_eq(tm_st_meta(f, "format"), "pt");
	ck_assert_str_eq(tm_st_meta(f, "note"), "quote\" back\\slash\nnewline \xc3\xa9");
	ck_assert_ptr_null(tm_st_meta(f, "missing"));
}

START_TEST(test_roundtrip_file_and_memory)
{
	tm_st_writer *w = sample_writer();
	tm_err e = { 0 };
	const char *path = tpath("model.safetensors");
	ck_assert_int_eq(tm_st_writer_save(w, path, &e), 0);
	tm_st_writer_free(w);
	ck_assert_int_eq(count_entries(tmp), 1); /* no temporary file left */

	tm_st_file *f;
	ck_assert_msg(tm_st_open(&f, path, &e) == 0, "%s", e.msg);
	check_sample(f);
	tm_st_free(f);

	/* The same bytes from memory, also from a deliberately misaligned buffer. */
	size_t len;
	uint8_t *b = read_all(path, &len);
	uint8_t *odd = malloc(len + 1);
	memcpy(odd + 1, b, len);
	ck_assert_int_eq(tm_st_parse(&f, odd + 1, len, "mem", &e), 0);
	check_sample(f);
	tm_st_free(f);
	free(odd);
	free(b);
	tm_st_free(NULL);
}
END_TEST

START_TEST(test_header_layout)
{
	tm_st_writer *w = sample_writer();
	tm_err e = { 0 };
	const char *path = tpath("layout.safetensors");
	ck_assert_int_eq(tm_st_writer_save(w, path, &e), 0);
	tm_st_writer_free(w);
	size_t len;
	uint8_t *b = read_all(path, &len);
	uint64_t n = 0;
	for (int i = 7; i >= 0; i--)
		n = n << 8 | b[i];
	ck_assert_uint_eq((8 + n) % 8, 0); /* the data region starts 8-byte aligned */
	ck_assert_uint_eq(len, 8 + n + NB + sizeof(ta) + sizeof(tc) + 4);
	ck_assert_int_eq(b[8], '{');

	/* Valid JSON, padded with spaces only. */
	char *text = malloc(n + 1);
	memcpy(text, b + 8, n);
	text[n] = 0;
	const char *end;
	cJSON *root = cJSON_ParseWithOpts(text, &end, 0);
	ck_assert_ptr_nonnull(root);
	for (const char *p = end; *p; p++)
		ck_assert_int_eq(*p, ' ');
	cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "__metadata__");
	ck_assert(cJSON_IsObject(meta));
	ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(meta, "format")->valuestring, "pt");
	ck_assert_int_eq(cJSON_GetArraySize(meta), 2);

	/* Offsets in insertion order, contiguous, and the bytes at them are the tensors. */
	static const char *const names[] = { "layers.0.q", "layers.0.weight", "layers.0.idx",
					     "scalar", "empty" };
	const void *src[] = { tb, ta, tc, ta + 1, NULL };
	const size_t size[] = { sizeof(tb), sizeof(ta), sizeof(tc), 4, 0 };
	static const char *const dtypes[] = { "I8", "F32", "I32", "F32", "F32" };
	double pos = 0;
	for (int i = 0; i < 5; i++) {
		cJSON *t = cJSON_GetObjectItemCaseSensitive(root, names[i]);
		ck_assert(cJSON_IsObject(t));
		ck_assert_int_eq(cJSON_GetArraySize(t), 3);
		ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(t, "dtype")->valuestring,
				 dtypes[i]);
		ck_assert(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(t, "shape")));
		cJSON *o = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
		ck_assert_int_eq(cJSON_GetArraySize(o), 2);
		ck_assert_double_eq(cJSON_GetArrayItem(o, 0)->valuedouble, pos);
		ck_assert_double_eq(cJSON_GetArrayItem(o, 1)->valuedouble, pos + (double)size[i]);
		if (size[i])
			ck_assert_mem_eq(b + 8 + n + (size_t)pos, src[i], size[i]);
		pos += (double)size[i];
	}
	cJSON *shape = cJSON_GetObjectItemCaseSensitive(
		cJSON_GetObjectItemCaseSensitive(root, "layers.0.weight"), "shape");
	ck_assert_int_eq(cJSON_GetArraySize(shape), 2);
	ck_assert_double_eq(cJSON_GetArrayItem(shape, 0)->valuedouble, 3);
	ck_assert_double_eq(cJSON_GetArrayItem(shape, 1)->valuedouble, 5);
	cJSON_Delete(root);
	free(text);
	free(b);
}
END_TEST

START_TEST(test_empty_file_and_dtype_helpers)
{
	tm_st_writer *w = tm_st_writer_new();
	tm_err e = { 0 };
	ck_assert_int_eq(tm_st_writer_save(w, tpath("empty.safetensors"), &e), 0);
	tm_st_writer_free(w);
	tm_st_writer_free(NULL);
	size_t len;
	uint8_t *b = read_all(tpath("empty.safetensors"), &len);
	ck_assert_uint_eq(len, 16);
	ck_assert_mem_eq(b + 8, "{}      ", 8);
	free(b);
	tm_st_file *f;
	ck_assert_int_eq(tm_st_open(&f, tpath("empty.safetensors"), &e), 0);
	ck_assert_int_eq(tm_st_count(f), 0);
	ck_assert_ptr_null(tm_st_get(f, "x"));
	ck_assert_ptr_null(tm_st_meta(f, "x"));
	tm_st_free(f);

	ck_assert_str_eq(tm_dtype_name(TM_DTYPE_F32), "F32");
	ck_assert_str_eq(tm_dtype_name(TM_DTYPE_I8), "I8");
	ck_assert_str_eq(tm_dtype_name(TM_DTYPE_I32), "I32");
	ck_assert_ptr_null(tm_dtype_name((tm_dtype)3));
	ck_assert_uint_eq(tm_dtype_size(TM_DTYPE_F32), 4);
	ck_assert_uint_eq(tm_dtype_size(TM_DTYPE_I8), 1);
	ck_assert_uint_eq(tm_dtype_size(TM_DTYPE_I32), 4);
	ck_assert_uint_eq(tm_dtype_size((tm_dtype)-1), 0);
}
END_TEST

/* A file as another writer might lay it out: header not padded to 8, an odd-sized I8 tensor
 * first, so the F32 data sits at an odd file offset; pointers must still be aligned. */
START_TEST(test_foreign_unaligned_file)
{
	char json[256];
	int h = snprintf(json, sizeof(json), "%s",
			 "{\"__metadata__\":{\"format\":\"pt\"},"
			 "\"q\":{\"dtype\":\"I8\",\"shape\":[3],\"data_offsets\":[0,3]},"
			 "\"w\":{\"shape\":[2],\"data_offsets\":[3,11],\"dtype\":\"F32\"}} ");
	while ((8 + h + 3) % 4 != 1) /* pad with spaces until the F32 data is misaligned */
		json[h++] = ' ';
	json[h] = 0;
	size_t len;
	uint8_t *b = mkfile(json, 11, UINT64_MAX, &len);
	float want[2] = { 1.5f, -2.25f };
	memcpy(b + len - 8, want, 8);
	ck_assert_uint_eq((len - 8) % 4, 1);
	tm_st_file *f;
	tm_err e = { 0 };
	ck_assert_msg(tm_st_parse(&f, b, len, "foreign", &e) == 0, "%s", e.msg);
	const float *w;
	ck_assert_int_eq(tm_st_expect(f, "w", TM_DTYPE_F32, 1, (int64_t[]){ 2 },
				      (const void **)&w, &e), 0);
	ck_assert_int_eq((uintptr_t)w % 64, 0);
	ck_assert_float_eq(w[0], 1.5f);
	ck_assert_float_eq(w[1], -2.25f);
	ck_assert_mem_eq(tm_st_get(f, "q")->data, "\x00\x01\x02", 3);
	ck_assert_str_eq(tm_st_meta(f, "format"), "pt");
	tm_st_free(f);
	free(b);
}
END_TEST

START_TEST(test_expect_messages)
{
	tm_st_writer *w = sample_writer();
	tm_err e = { 0 };
	ck_assert_int_eq(tm_st_writer_save(w, tpath("m.safetensors"), &e), 0);
	tm_st_writer_free(w);
	tm_st_file *f;
	ck_assert_int_eq(tm_st_open(&f, tpath("m.safetensors"), &e), 0);
	const void *data = NULL;
	ck_assert_int_eq(tm_st_expect(f, "layers.0.weight", TM_DTYPE_F32, 2,
				      (int64_t[]){ 3, 5 }, &data, &e), 0);
	ck_assert_ptr_eq(data, tm_st_get(f, "layers.0.weight")->data);

	ck_assert_int_eq(tm_st_expect(f, "layers.0.weight", TM_DTYPE_I8, 2, (int64_t[]){ 3, 5 },
				      &data, &e), TM_EFORMAT);
	ck_assert_ptr_null(data);
	ck_assert_str_eq(e.field, "layers.0.weight");
	ck_assert_ptr_nonnull(strstr(e.msg, "tensor 'layers.0.weight' is F32, expected I8"));
	ck_assert_ptr_nonnull(strstr(e.msg, "m.safetensors"));

	ck_assert_int_eq(tm_st_expect(f, "layers.0.weight", TM_DTYPE_F32, 2, (int64_t[]){ 5, 3 },
				      &data, &e), TM_EFORMAT);
	ck_assert_ptr_nonnull(strstr(e.msg, "has shape (3, 5), expected (5, 3)"));
	ck_assert_int_eq(tm_st_expect(f, "layers.0.weight", TM_DTYPE_F32, 1, (int64_t[]){ 15 },
				      &data, &e), TM_EFORMAT);
	ck_assert_ptr_nonnull(strstr(e.msg, "has shape (3, 5), expected (15)"));
	ck_assert_int_eq(tm_st_expect(f, "scalar", TM_DTYPE_F32, 0, NULL, &data, &e), 0);
	ck_assert_int_eq(tm_st_expect(f, "layers.1.weight", TM_DTYPE_F32, 0, NULL, &data, &e),
			 TM_EFORMAT);
	ck_assert_ptr_nonnull(strstr(e.msg, "tensor 'layers.1.weight' is missing"));
	tm_st_free(f);
}
END_TEST

// ---- saving ----

START_TEST(test_save_replaces_atomically)
{
	tm_err e = { 0 };
	const char *path = tpath("w.safetensors");
	float v1[4] = { 1, 2, 3, 4 }, v2[2] = { 5, 6 };
	tm_st_writer *w = tm_st_writer_new();
	tm_st_writer_add(w, "a", TM_DTYPE_F32, 1, (int64_t[]){ 4 }, v1);
	ck_assert_int_eq(tm_st_writer_save(w, path, &e), 0);
	tm_st_writer_free(w);
	w = tm_st_writer_new();
	tm_st_writer_add(w, "b", TM_DTYPE_F32, 1, (int64_t[]){ 2 }, v2);
	ck_assert_int_eq(tm_st_writer_save(w, path, &e), 0);
	tm_st_writer_free(w);
	ck_assert_int_eq(count_entries(tmp), 1);
	struct stat sb;
	ck_assert_int_eq(stat(path, &sb), 0);
	ck_assert_int_eq(sb.st_mode & 0777, 0644);
	tm_st_file *f;
	ck_assert_int_eq(tm_st_open(&f, path, &e), 0);
	ck_assert_int_eq(tm_st_count(f), 1);
	ck_assert_mem_eq(tm_st_get(f, "b")->data, v2, sizeof(v2));
	tm_st_free(f);
}
END_TEST

START_TEST(test_save_failures_clean_up)
{
	tm_err e = { 0 };
	float v[2] = { 1, 2 };
	tm_st_writer *w = tm_st_writer_new();
	tm_st_writer_add(w, "a", TM_DTYPE_F32, 1, (int64_t[]){ 2 }, v);

	/* The directory does not exist: no temporary file can be made. */
	char *missing = strdup(tpath("no/such/dir/w.safetensors"));
	ck_assert_int_eq(tm_st_writer_save(w, missing, &e), TM_EIO);
	ck_assert_ptr_nonnull(strstr(e.msg, missing));
	ck_assert_ptr_nonnull(strstr(e.msg, "cannot create a temporary file"));
	ck_assert_str_eq(e.field, missing);
	free(missing);

	/* The target is a directory: the rename fails and the temporary file is removed. */
	char *dir = strdup(tpath("target"));
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	ck_assert_int_eq(tm_st_writer_save(w, dir, &e), TM_EIO);
	ck_assert_ptr_nonnull(strstr(e.msg, "rename failed"));
	ck_assert_ptr_nonnull(strstr(e.msg, dir));
	ck_assert_int_eq(count_entries(tmp), 1); /* only the directory itself */
	free(dir);
	ck_assert_int_eq(tm_st_writer_save(w, "", &e), TM_EINVAL);
	tm_st_writer_free(w);
}
END_TEST

START_TEST(test_writer_rejects_bad_input)
{
	static const struct {
		const char *name;
		tm_dtype dtype;
		int ndim;
		int64_t shape[5];
		const char *want;
	} cases[] = {
		{ "", TM_DTYPE_F32, 1, { 1 }, "tensor name '' is invalid" },
		{ "__metadata__", TM_DTYPE_F32, 1, { 1 }, "tensor name '__metadata__' is invalid" },
		{ "a", (tm_dtype)7, 1, { 1 }, "dtype 7 is unknown" },
		{ "a", TM_DTYPE_F32, 5, { 1, 1, 1, 1, 1 }, "ndim is 5, must be in [0, 4]" },
		{ "a", TM_DTYPE_F32, 2, { 2, -1 }, "shape[1] is -1" },
		{ "dup", TM_DTYPE_F32, 1, { 1 }, "tensor 'dup' is added twice" },
	};
	static float v[4];
	char longname[200];
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		tm_st_writer *w = tm_st_writer_new();
		tm_st_writer_add(w, "dup", TM_DTYPE_F32, 1, (int64_t[]){ 1 }, v);
		tm_st_writer_add(w, cases[i].name, cases[i].dtype, cases[i].ndim, cases[i].shape, v);
		tm_err e = { 0 };
		ck_assert_int_eq(tm_st_writer_save(w, tpath("bad.safetensors"), &e), TM_EINVAL);
		ck_assert_msg(strstr(e.msg, cases[i].want) != NULL, "case %zu: '%s' lacks '%s'", i,
			      e.msg, cases[i].want);
		tm_st_writer_free(w);
	}
	tm_st_writer *w = tm_st_writer_new();
	tm_st_writer_add(w, longname, TM_DTYPE_F32, 1, (int64_t[]){ 1 }, v);
	tm_err e = { 0 };
	ck_assert_int_eq(tm_st_writer_save(w, tpath("bad.safetensors"), &e), TM_EINVAL);
	ck_assert_ptr_nonnull(strstr(e.msg, "must be 1 to 127 bytes"));
	tm_st_writer_free(w);
	w = tm_st_writer_new();
	tm_st_writer_add(w, "a", TM_DTYPE_F32, 1, (int64_t[]){ 2 }, NULL);
	ck_assert_int_eq(tm_st_writer_save(w, tpath("bad.safetensors"), &e), TM_EINVAL);
	ck_assert_ptr_nonnull(strstr(e.msg, "data is NULL"));
	tm_st_writer_free(w);
	w = tm_st_writer_new();
	tm_st_writer_meta(w, "k", "\xff");
	ck_assert_int_eq(tm_st_writer_save(w, tpath("bad.safetensors"), &e), TM_EINVAL);
	ck_assert_ptr_nonnull(strstr(e.msg, "metadata 'k' is not valid UTF-8"));
	tm_st_writer_free(w);
	ck_assert_int_eq(count_entries(tmp), 0); /* nothing was written */
}
END_TEST

// ---- malformed files ----

#define T(dtype, shape, offs) "{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":" offs "}"

static const struct bad_case {
	const char *what;
	const char *json;       /* NULL: use raw/raw_len */
	size_t data_len;
	uint64_t hlen;          /* UINT64_MAX: the JSON's length */
	int code;
	const char *want;
} bad_cases[] = {
	{ "header not an object", "[1,2]", 0, UINT64_MAX, TM_EFORMAT, "header is not a JSON object" },
	{ "json syntax", "{\"a\":{\"dtype\":\"F32\",", 0, UINT64_MAX, TM_EFORMAT,
	  "header is not valid JSON (syntax error at header byte" },
	{ "json trailing garbage", "{} x", 0, UINT64_MAX, TM_EFORMAT,
	  "data after the JSON value at header byte 3" },
	{ "not utf-8", "{\"\xc3\x28\":1}", 0, UINT64_MAX, TM_EFORMAT,
	  "header is not valid UTF-8 (bad byte 0xc3 at header byte 2)" },
	{ "header length past end", "{}", 0, 100, TM_EFORMAT,
	  "header length 100 is past the end of the 10-byte file" },
	{ "header length over limit", "{}", 0, (16u << 20) + 1, TM_ELIMIT,
	  "header length 16777217 exceeds the limit of 16777216 bytes" },
	{ "header length huge", "{}", 0, UINT64_MAX - 1, TM_ELIMIT, "exceeds the limit" },
	{ "unknown dtype", "{\"a\":" T("Q7", "[1]", "[0,4]") "}", 4, UINT64_MAX, TM_EFORMAT,
	  "tensor 'a': unknown dtype 'Q7'" },
	{ "unsupported dtype", "{\"a\":" T("F16", "[2]", "[0,4]") "}", 4, UINT64_MAX, TM_EFORMAT,
	  "tensor 'a': unsupported dtype 'F16', must be F32, I8 or I32" },
	{ "unsupported dtype bf16", "{\"a\":" T("BF16", "[2]", "[0,4]") "}", 4, UINT64_MAX,
	  TM_EFORMAT, "unsupported dtype 'BF16'" },
	{ "dtype not a string", "{\"a\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
	  UINT64_MAX, TM_EFORMAT, "tensor 'a': dtype is not a string" },
	{ "negative shape", "{\"a\":" T("F32", "[-2]", "[0,4]") "}", 4, UINT64_MAX, TM_EFORMAT,
	  "tensor 'a': shape[0] is -2, must be a non-negative integer" },
	{ "float shape", "{\"a\":" T("F32", "[1,2.5]", "[0,4]") "}", 4, UINT64_MAX, TM_EFORMAT,
	  "tensor 'a': shape[1] is 2.5, must be a non-negative integer" },
	{ "integral float shape", "{\"a\":" T("F32", "[1.0]", "[0,4]") "}", 4, UINT64_MAX,
	  TM_EFORMAT, "number '1.0' at header byte" },
	{ "exponent offset", "{\"a\":" T("F32", "[1]", "[0,4e0]") "}", 4, UINT64_MAX, TM_EFORMAT,
	  "number '4e0' at header byte" },
	{ "leading zero", "{\"a\":" T("F32", "[01]", "[0,4]") "}", 4, UINT64_MAX, TM_EFORMAT,
	  "number '01' at header byte" },
	{ "string shape entry", "{\"a\":" T("F32", "[\"1\"]", "[0,4]") "}", 4, UINT64_MAX,
	  TM_EFORMAT, "shape[0] is not a number" },
	{ "shape not a list", "{\"a\":" T("F32", "{}", "[0,4]") "}", 4, UINT64_MAX, TM_EFORMAT,
	  "tensor 'a': shape is not a list" },
	{ "huge shape entry", "{\"a\":" T("F32", "[1e300]", "[0,4]") "}", 4, UINT64_MAX,
	  TM_EFORMAT, "shape[0] is 1e+300, must be below 2^53" },
	{ "too many dims", "{\"a\":" T("F32", "[1,1,1,1,1]", "[0,4]") "}", 4, UINT64_MAX,
	  TM_EFORMAT, "tensor 'a': shape has 5 dimensions, at most 4" },
	{ "shape product overflow", "{\"a\":" T("F32", "[4294967296,4294967296,2]", "[0,4]") "}",
	  4, UINT64_MAX, TM_EFORMAT, "tensor 'a': shape product overflows 64 bits" },
	{ "byte size overflow", "{\"a\":" T("F32", "[4294967296,4294967296]", "[0,4]") "}",
	  4, UINT64_MAX, TM_EFORMAT, "tensor 'a': shape product overflows 64 bits" },
	{ "offsets past the end", "{\"a\":" T("F32", "[4]", "[0,16]") "}", 8, UINT64_MAX,
	  TM_EFORMAT, "tensor 'a': data_offsets end 16 is past the end of the 8-byte data buffer" },
	{ "end before begin", "{\"a\":" T("F32", "[1]", "[8,4]") "}", 8, UINT64_MAX, TM_EFORMAT,
	  "tensor 'a': data_offsets [8, 4] end before begin" },
	{ "negative offset", "{\"a\":" T("F32", "[1]", "[-4,0]") "}", 8, UINT64_MAX, TM_EFORMAT,
	  "data_offsets[0] is -4, must be a non-negative integer" },
	{ "three offsets", "{\"a\":" T("F32", "[1]", "[0,4,8]") "}", 8, UINT64_MAX, TM_EFORMAT,
	  "data_offsets is not a list of two integers" },
	{ "size mismatch", "{\"a\":" T("F32", "[3]", "[0,8]") "}", 8, UINT64_MAX, TM_EFORMAT,
	  "tensor 'a': data_offsets span 8 bytes, shape needs 12 bytes of F32" },
	{ "overlap", "{\"a\":" T("F32", "[2]", "[0,8]") ",\"b\":" T("F32", "[2]", "[4,12]") "}", 12,
	  UINT64_MAX, TM_EFORMAT, "tensors 'a' and 'b' overlap at data bytes [4, 8)" },
	{ "same range", "{\"b\":" T("I8", "[4]", "[0,4]") ",\"a\":" T("I32", "[1]", "[0,4]") "}",
	  4, UINT64_MAX, TM_EFORMAT, "overlap" },
	{ "gap", "{\"a\":" T("F32", "[1]", "[0,4]") ",\"b\":" T("F32", "[1]", "[8,12]") "}", 12,
	  UINT64_MAX, TM_EFORMAT, "data bytes [4, 8) before tensor 'b' belong to no tensor" },
	{ "trailing data", "{\"a\":" T("F32", "[1]", "[0,4]") "}", 9, UINT64_MAX, TM_EFORMAT,
	  "data buffer has 5 bytes after the last tensor" },
	{ "duplicate names", "{\"a\":" T("F32", "[1]", "[0,4]") ",\"a\":" T("F32", "[1]", "[4,8]") "}",
	  8, UINT64_MAX, TM_EFORMAT, "tensor 'a' appears twice" },
	{ "non-string metadata", "{\"__metadata__\":{\"k\":\"v\",\"n\":1}}", 0, UINT64_MAX,
	  TM_EFORMAT, "metadata 'n' is not a string, values must be strings" },
	{ "metadata not an object", "{\"__metadata__\":[]}", 0, UINT64_MAX, TM_EFORMAT,
	  "'__metadata__' is not an object" },
	{ "metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, UINT64_MAX, TM_EFORMAT,
	  "'__metadata__' appears twice" },
	{ "metadata key twice", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, UINT64_MAX,
	  TM_EFORMAT, "metadata key 'k' appears twice" },
	{ "entry not an object", "{\"a\":5}", 0, UINT64_MAX, TM_EFORMAT,
	  "tensor 'a' is not an object" },
	{ "unknown key", "{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4],\"foo\":1}}",
	  4, UINT64_MAX, TM_EFORMAT, "tensor 'a' has unknown key 'foo'" },
	{ "missing key", "{\"a\":{\"dtype\":\"F32\",\"shape\":[]}}", 4, UINT64_MAX, TM_EFORMAT,
	  "tensor 'a' has no 'data_offsets'" },
	{ "key twice", "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}",
	  4, UINT64_MAX, TM_EFORMAT, "tensor 'a' has key 'dtype' twice" },
	{ "empty name", "{\"\":" T("F32", "[1]", "[0,4]") "}", 4, UINT64_MAX, TM_EFORMAT,
	  "tensor name '' is 0 bytes, must be 1 to 127 bytes" },
	{ "escaped nul in a name", "{\"a\\u0000b\":" T("F32", "[1]", "[0,4]") "}", 4, UINT64_MAX,
	  TM_EFORMAT, "header has an escaped NUL (\\u0000) in a string at header byte 3" },
	{ "control chars shown safely", "{\"a\\nb\":" T("X\\u0001", "[1]", "[0,4]") "}", 4,
	  UINT64_MAX, TM_EFORMAT, "tensor 'a?b': unknown dtype 'X?'" },
};

START_TEST(test_reject_malformed)
{
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const struct bad_case *c = &bad_cases[i];
		size_t len;
		uint8_t *b = mkfile(c->json, c->data_len, c->hlen, &len);
		tm_st_file *f = (tm_st_file *)1;
		tm_err e = { 0 };
		int rc = tm_st_parse(&f, b, len, "bad.safetensors", &e);
		ck_assert_msg(rc == c->code, "%s: rc %d, expected %d (%s)", c->what, rc, c->code,
			      e.msg);
		ck_assert_ptr_null(f);
		ck_assert_msg(strstr(e.msg, c->want) != NULL, "%s: '%s' lacks '%s'", c->what,
			      e.msg, c->want);
		ck_assert_msg(strncmp(e.msg, "weights 'bad.safetensors': ", 27) == 0, "%s: '%s'",
			      c->what, e.msg);
		ck_assert_str_eq(e.field, "bad.safetensors");
		free(b);
	}
}
END_TEST

START_TEST(test_reject_long_name_and_short_files)
{
	char json[512];
	char name[200];
	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = 0;
	snprintf(json, sizeof(json), "{\"%s\":" T("F32", "[1]", "[0,4]") "}", name);
	size_t len;
	uint8_t *b = mkfile(json, 4, UINT64_MAX, &len);
	tm_st_file *f;
	tm_err e = { 0 };
	ck_assert_int_eq(tm_st_parse(&f, b, len, "x", &e), TM_EFORMAT);
	ck_assert_ptr_nonnull(strstr(e.msg, "is 199 bytes, must be 1 to 127 bytes"));
	ck_assert_ptr_nonnull(strstr(e.msg, "nnnn..."));
	free(b);

	/* A 127-byte name is the longest allowed. */
	name[127] = 0;
	snprintf(json, sizeof(json), "{\"%s\":" T("F32", "[1]", "[0,4]") "}", name);
	b = mkfile(json, 4, UINT64_MAX, &len);
	ck_assert_int_eq(tm_st_parse(&f, b, len, "x", &e), 0);
	ck_assert_ptr_nonnull(tm_st_get(f, name));
	tm_st_free(f);
	free(b);

	for (size_t n = 0; n < 8; n++) {
		ck_assert_int_eq(tm_st_parse(&f, (const uint8_t *)"\0\0\0\0\0\0\0", n, NULL, &e),
				 TM_EFORMAT);
		ck_assert_ptr_nonnull(strstr(e.msg, "shorter than the 8-byte header length"));
	}
	/* Header length 0: not JSON. */
	ck_assert_int_eq(tm_st_parse(&f, (const uint8_t *)"\0\0\0\0\0\0\0\0", 8, NULL, &e),
			 TM_EFORMAT);
	ck_assert_ptr_nonnull(strstr(e.msg, "not valid JSON"));

	/* The file reader: missing, a directory, too short, and a bad header on disk. */
	ck_assert_int_eq(tm_st_open(&f, tpath("none.safetensors"), &e), TM_EIO);
	ck_assert_ptr_nonnull(strstr(e.msg, "cannot open: No such file or directory"));
	ck_assert_int_eq(tm_st_open(&f, tmp, &e), TM_EIO);
	ck_assert_ptr_nonnull(strstr(e.msg, "not a regular file"));
	FILE *fp = fopen(tpath("short.safetensors"), "wb");
	fwrite("\x02\0\0", 1, 3, fp);
	fclose(fp);
	ck_assert_int_eq(tm_st_open(&f, tpath("short.safetensors"), &e), TM_EFORMAT);
	ck_assert_ptr_nonnull(strstr(e.msg, "file is 3 bytes, shorter than the 8-byte header"));
	fp = fopen(tpath("long.safetensors"), "wb");
	fwrite("\x40\0\0\0\0\0\0\0{}", 1, 10, fp);
	fclose(fp);
	ck_assert_int_eq(tm_st_open(&f, tpath("long.safetensors"), &e), TM_EFORMAT);
	ck_assert_ptr_nonnull(strstr(e.msg, "header length 64 is past the end of the 10-byte file"));
	ck_assert_ptr_nonnull(strstr(e.msg, "long.safetensors"));
	ck_assert_ptr_null(f);
}
END_TEST

/* A header of a million list items is refused before cJSON builds a node for each. */
START_TEST(test_reject_too_many_values)
{
	size_t items = (1u << 20) + 2;
	size_t h = 2 + 2 * items;
	uint8_t *b = malloc(8 + h);
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)((uint64_t)h >> (8 * i));
	b[8] = '[';
	for (size_t i = 0; i < items; i++)
		memcpy(b + 9 + 2 * i, "0,", 2);
	b[8 + h - 2] = '0';
	b[8 + h - 1] = ']';
	tm_st_file *f;
	tm_err e = { 0 };
	ck_assert_int_eq(tm_st_parse(&f, b, 8 + h, "many", &e), TM_ELIMIT);
	ck_assert_ptr_nonnull(strstr(e.msg, "header has 1048577 entries and list items, more than the limit of 1048576"));
	/* Separators inside strings do not count. */
	const char *json = "{\"__metadata__\":{\"k\":\",,,,:::\"}}";
	size_t len;
	uint8_t *ok = mkfile(json, 0, UINT64_MAX, &len);
	ck_assert_int_eq(tm_st_parse(&f, ok, len, "ok", &e), 0);
	ck_assert_str_eq(tm_st_meta(f, "k"), ",,,,:::");
	tm_st_free(f);
	free(ok);
	free(b);
}
END_TEST

// ---- hostile input ----

static size_t n_ok, n_err;

static void try_parse(const uint8_t *b, size_t len)
{
	tm_st_file *f = NULL;
	tm_err e = { 0 };
	int rc = tm_st_parse(&f, b, len, "fuzz", &e);
	if (rc == 0) {
		check_consistent(f);
		tm_st_free(f);
		n_ok++;
	} else {
		ck_assert_ptr_null(f);
		ck_assert_int_lt(rc, 0);
		ck_assert_msg(e.msg[0] != 0, "error without a message");
		n_err++;
	}
}

/* A valid file, then every header byte with each bit flipped, every header byte replaced by
 * characters that matter to JSON, and every truncation. */
START_TEST(test_mutations_never_crash)
{
	tm_st_writer *w = sample_writer();
	tm_err e = { 0 };
	ck_assert_int_eq(tm_st_writer_save(w, tpath("fuzz.safetensors"), &e), 0);
	tm_st_writer_free(w);
	size_t len;
	uint8_t *orig = read_all(tpath("fuzz.safetensors"), &len);
	uint64_t n = 0;
	for (int i = 7; i >= 0; i--)
		n = n << 8 | orig[i];
	uint8_t *b = malloc(len);
	static const uint8_t specials[] = { '"', '\\', '{', '}', '[', ']', ',', ':', '-', '0',
					    '9', '.', 'e', ' ', 0, 0x80, 0xff, 'u' };
	n_ok = n_err = 0;
	for (size_t pos = 0; pos < 8 + n; pos++) {
		for (int bit = 0; bit < 8; bit++) {
			memcpy(b, orig, len);
			b[pos] ^= (uint8_t)(1u << bit);
			try_parse(b, len);
		}
		for (size_t s = 0; s < sizeof(specials); s++) {
			memcpy(b, orig, len);
			b[pos] = specials[s];
			try_parse(b, len);
		}
	}
	/* Truncations: copy into an exact-size buffer so ASan sees any read past the end. */
	for (size_t cut = 0; cut < len; cut++) {
		uint8_t *t = malloc(cut ? cut : 1);
		memcpy(t, orig, cut);
		try_parse(t, cut);
		free(t);
	}
	/* The header length prefix set to every value around the real one. */
	for (uint64_t h = 0; h < n + 64; h++) {
		memcpy(b, orig, len);
		for (int i = 0; i < 8; i++)
			b[i] = (uint8_t)(h >> (8 * i));
		try_parse(b, len);
	}
	try_parse(orig, len);
	/* Most mutations must be caught, and the untouched file and harmless ones (a space, a
	 * changed metadata letter) accepted: both outcomes occurred. */
	ck_assert_uint_gt(n_ok, 10);
	ck_assert_uint_gt(n_err, 8 * n);
	free(b);
	free(orig);
}
END_TEST

Suite *safetensors_suite(void)
{
	Suite *s = suite_create("safetensors");
	TCase *rt = tcase_create("roundtrip");
	tcase_add_checked_fixture(rt, setup, teardown);
	tcase_add_test(rt, test_roundtrip_file_and_memory);
	tcase_add_test(rt, test_header_layout);
	tcase_add_test(rt, test_empty_file_and_dtype_helpers);
	tcase_add_test(rt, test_foreign_unaligned_file);
	tcase_add_test(rt, test_expect_messages);
	tcase_add_test(rt, test_save_replaces_atomically);
	tcase_add_test(rt, test_save_failures_clean_up);
	tcase_add_test(rt, test_writer_rejects_bad_input);
	suite_add_tcase(s, rt);

	TCase *bad = tcase_create("malformed");
	tcase_add_checked_fixture(bad, setup, teardown);
	tcase_set_timeout(bad, 120);
	tcase_add_test(bad, test_reject_malformed);
	tcase_add_test(bad, test_reject_long_name_and_short_files);
	tcase_add_test(bad, test_reject_too_many_values);
	tcase_add_test(bad, test_mutations_never_crash);
	suite_add_tcase(s, bad);
	return s;
}
