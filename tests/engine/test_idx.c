/* test_idx.c: Check suite of engine/idx.c.  Loads the real Fashion-MNIST files (both splits,
 * checked against label histograms and pixel sums computed once with an independent reader),
 * reads small well-formed IDX files gzip'd and plain, and feeds the reader malformed files
 * written into a temporary directory, checking each error message names the file and says
 * what is wrong. */
#include "tests.h"
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

// ---- helpers ----

static char *tmp;

static void setup(void)
{
	tmp = tt_tmpdir("idx");
	ck_assert_ptr_nonnull(tmp);
}

static void teardown(void)
{
	tt_rmtree(tmp);
	free(tmp);
	tmp = NULL;
}

/* tmp/name, in a static buffer per call (tests use at most a few at once). */
static const char *tpath(const char *name)
{
	static char bufs[4][1024];
	static int next;
	char *b = bufs[next++ % 4];
	snprintf(b, sizeof(bufs[0]), "%s/%s", tmp, name);
	return b;
}

static void write_file(const char *path, const uint8_t *bytes, size_t len, bool gz)
{
	if (gz) {
		gzFile f = gzopen(path, "wb");
		ck_assert_ptr_nonnull(f);
		if (len)
			ck_assert_int_eq(gzwrite(f, bytes, (unsigned)len), (int)len);
		ck_assert_int_eq(gzclose(f), Z_OK);
	} else {
		FILE *f = fopen(path, "wb");
		ck_assert_ptr_nonnull(f);
		ck_assert_uint_eq(fwrite(bytes, 1, len, f), len);
		ck_assert_int_eq(fclose(f), 0);
	}
}

/* An IDX image: magic (0, 0, dtype, ndim), the dims big-endian, then payload bytes with value
 * (i * 7 + 3) & 0xff.  Returns a malloc'd buffer and its length. */
static uint8_t *make_idx(uint8_t dtype, int ndim, const uint32_t *dims, size_t payload,
			 size_t *len)
{
	*len = 4 + 4 * (size_t)ndim + payload;
	uint8_t *b = malloc(*len);
	b[0] = 0;
	b[1] = 0;
	b[2] = dtype;
	b[3] = (uint8_t)ndim;
	for (int i = 0; i < ndim; i++) {
		b[4 + 4 * i] = (uint8_t)(dims[i] >> 24);
		b[5 + 4 * i] = (uint8_t)(dims[i] >> 16);
		b[6 + 4 * i] = (uint8_t)(dims[i] >> 8);
		b[7 + 4 * i] = (uint8_t)dims[i];
	}
	for (size_t i = 0; i < payload; i++)
		b[4 + 4 * ndim + i] = (uint8_t)((i * 7 + 3) & 0xff);
	return b;
}

/* Write an IDX file (gzip'd) and expect tm_idx_read(ndim 3, max_dim 1000, max_bytes 1 MiB) to
 * fail with code and a message containing want and the path. */
static void expect_reject_file(const char *path, int expect_ndim, size_t max_bytes, int code,
			       const char *want)
{
	uint8_t *data = (uint8_t *)1;
	int dims[3] = { -1, -1, -1 };
	tm_err e = { 0 };
	int rc = tm_idx_read(path, expect_ndim, 1000, max_bytes, &data, dims, &e);
	ck_assert_msg(rc == code, "%s: rc %d, expected %d (%s)", path, rc, code, e.msg);
	ck_assert_int_eq(e.code, code);
	ck_assert_ptr_null(data);
	ck_assert_int_eq(dims[0], 0);
	ck_assert_msg(strstr(e.msg, want) != NULL, "message '%s' lacks '%s'", e.msg, want);
	ck_assert_msg(strstr(e.msg, path) != NULL, "message '%s' lacks the path", e.msg);
	ck_assert_str_eq(e.field, path);
}

static void expect_reject(const uint8_t *bytes, size_t len, bool gz, int code, const char *want)
{
	const char *p = tpath(gz ? "bad-idx3-ubyte.gz" : "bad-idx3-ubyte");
	write_file(p, bytes, len, gz);
	expect_reject_file(p, 3, 1u << 20, code, want);
}

// ---- the real Fashion-MNIST ----

static void check_split(bool train, int n, long long pixel_sum, long long first_sum,
			long long last_sum, const uint8_t first_labels[10])
{
	tm_dataset ds;
	tm_err e = { 0 };
	int rc = tm_fmnist_load(&ds, NULL, train, &e);
	ck_assert_msg(rc == 0, "fmnist load failed: %s", e.msg);
	ck_assert_int_eq(ds.n, n);
	ck_assert_int_eq(ds.rows, 28);
	ck_assert_int_eq(ds.cols, 28);
	ck_assert_int_eq(ds.n_classes, 10);
	int hist[10] = { 0 };
	for (int i = 0; i < ds.n; i++) {
		ck_assert_int_lt(ds.labels[i], 10);
		hist[ds.labels[i]]++;
	}
	for (int c = 0; c < 10; c++)
		ck_assert_int_eq(hist[c], n / 10);
	ck_assert_mem_eq(ds.labels, first_labels, 10);
	long long sum = 0, first = 0, last = 0;
	size_t npix = (size_t)n * 784;
	for (size_t i = 0; i < npix; i++)
		sum += ds.images[i];
	for (size_t i = 0; i < 784; i++) {
		first += ds.images[i];
		last += ds.images[npix - 784 + i];
	}
	ck_assert_int_eq(sum, pixel_sum);
	ck_assert_int_eq(first, first_sum);
	ck_assert_int_eq(last, last_sum);
	tm_dataset_release(&ds);
	ck_assert_ptr_null(ds.images);
	ck_assert_int_eq(ds.n, 0);
	tm_dataset_release(&ds); /* twice is harmless */
}

/* The reference values come from Python's gzip module over the same files. */
START_TEST(test_fmnist_train)
{
	static const uint8_t first[10] = { 9, 0, 0, 3, 0, 2, 7, 2, 5, 5 };
	check_split(true, 60000, 3431114169LL, 76247, 16684, first);
}
END_TEST

START_TEST(test_fmnist_test)
{
	static const uint8_t first[10] = { 9, 2, 1, 1, 6, 1, 4, 6, 5, 7 };
	check_split(false, 10000, 573469082LL, 33456, 24390, first);
}
END_TEST

START_TEST(test_fmnist_explicit_dir_and_raw_read)
{
	int dims[3];
	uint8_t *data;
	tm_err e = { 0 };
	ck_assert_int_eq(tm_idx_read(TM_FMNIST_DIR "/t10k-labels-idx1-ubyte.gz", 1, 10000, 10000,
				     &data, dims, &e), 0);
	ck_assert_int_eq(dims[0], 10000);
	ck_assert_int_eq(dims[1], 0);
	free(data);
	/* The limit applies: 10000 labels do not fit in 9999 bytes. */
	ck_assert_int_eq(tm_idx_read(TM_FMNIST_DIR "/t10k-labels-idx1-ubyte.gz", 1, 10000, 9999,
				     &data, dims, &e), TM_ELIMIT);
	ck_assert_ptr_nonnull(strstr(e.msg, "exceeds the limit of 9999 bytes"));
	tm_dataset ds;
	ck_assert_int_eq(tm_fmnist_load(&ds, TM_FMNIST_DIR, false, &e), 0);
	ck_assert_int_eq(ds.n, 10000);
	tm_dataset_release(&ds);
}
END_TEST

// ---- well-formed small files ----

START_TEST(test_small_roundtrip_gz_and_plain)
{
	for (int gz = 0; gz < 2; gz++) {
		uint32_t d[3] = { 2, 3, 4 };
		size_t len;
		uint8_t *b = make_idx(0x08, 3, d, 24, &len);
		const char *p = tpath(gz ? "ok.gz" : "ok");
		write_file(p, b, len, gz);
		uint8_t *data;
		int dims[3];
		tm_err e = { 0 };
		ck_assert_int_eq(tm_idx_read(p, 3, 4, 24, &data, dims, &e), 0);
		ck_assert_int_eq(dims[0], 2);
		ck_assert_int_eq(dims[1], 3);
		ck_assert_int_eq(dims[2], 4);
		ck_assert_mem_eq(data, b + 16, 24);
		free(data);
		/* Tighter limits reject the same file: a dimension over max_dim, bytes over max. */
		ck_assert_int_eq(tm_idx_read(p, 3, 3, 24, &data, dims, &e), TM_EFORMAT);
		ck_assert_ptr_nonnull(strstr(e.msg, "dimension 2 is 4, must be in [1, 3]"));
		ck_assert_int_eq(tm_idx_read(p, 3, 4, 23, &data, dims, &e), TM_ELIMIT);
		ck_assert_ptr_nonnull(strstr(e.msg, "payload of 2x3x4 bytes exceeds the limit of 23 bytes"));
		free(b);
	}
}
END_TEST

START_TEST(test_bad_arguments)
{
	uint8_t *data;
	int dims[3];
	tm_err e = { 0 };
	ck_assert_int_eq(tm_idx_read("/nonexistent", 4, 10, 10, &data, dims, &e), TM_EINVAL);
	ck_assert_int_eq(tm_idx_read("/nonexistent", 0, 10, 10, &data, dims, &e), TM_EINVAL);
	ck_assert_int_eq(tm_idx_read("/nonexistent", 1, 0, 10, &data, dims, &e), TM_EINVAL);
}
END_TEST

// ---- malformed files ----

START_TEST(test_reject_wrong_magic)
{
	uint32_t d[3] = { 1, 1, 1 };
	size_t len;
	uint8_t *b = make_idx(0x08, 3, d, 1, &len);
	b[0] = 0x1f;
	expect_reject(b, len, false, TM_EFORMAT, "bad magic 0x1f000803, must start with 0x0000");
	b[0] = 0;
	b[1] = 0x01;
	expect_reject(b, len, true, TM_EFORMAT, "bad magic 0x00010803");
	free(b);
}
END_TEST

START_TEST(test_reject_wrong_dtype)
{
	uint32_t d[3] = { 1, 1, 1 };
	size_t len;
	uint8_t *b = make_idx(0x0d, 3, d, 4, &len); /* 0x0d is float in IDX */
	expect_reject(b, len, true, TM_EFORMAT,
		      "dtype 0x0d is unsupported, must be 0x08 (unsigned byte)");
	b[2] = 0x09; /* signed byte */
	expect_reject(b, len, false, TM_EFORMAT, "dtype 0x09 is unsupported");
	free(b);
}
END_TEST

START_TEST(test_reject_wrong_ndim)
{
	uint32_t d[3] = { 2, 2, 2 };
	size_t len;
	uint8_t *b = make_idx(0x08, 2, d, 4, &len);
	expect_reject(b, len, true, TM_EFORMAT, "ndim is 2, expected 3");
	free(b);
	b = make_idx(0x08, 3, d, 8, &len);
	b[3] = 0xff;
	expect_reject(b, len, true, TM_EFORMAT, "ndim is 255, expected 3");
	free(b);
}
END_TEST

START_TEST(test_reject_zero_dimension)
{
	uint32_t d[3] = { 5, 0, 5 };
	size_t len;
	uint8_t *b = make_idx(0x08, 3, d, 0, &len);
	expect_reject(b, len, true, TM_EFORMAT, "dimension 1 is 0, must be in [1, 1000]");
	free(b);
}
END_TEST

START_TEST(test_reject_huge_dimension)
{
	uint32_t d[3] = { 0x7fffffff, 1, 1 };
	size_t len;
	uint8_t *b = make_idx(0x08, 3, d, 16, &len);
	expect_reject(b, len, true, TM_EFORMAT, "dimension 0 is 2147483647, must be in [1, 1000]");
	d[0] = 1;
	d[2] = 0xffffffffu;
	free(b);
	b = make_idx(0x08, 3, d, 16, &len);
	expect_reject(b, len, false, TM_EFORMAT, "dimension 2 is 4294967295");
	free(b);
}
END_TEST

START_TEST(test_reject_over_byte_limit)
{
	/* 1000^3 bytes: every dimension is allowed, the product is not (limit 1 MiB). */
	uint32_t d[3] = { 1000, 1000, 1000 };
	size_t len;
	uint8_t *b = make_idx(0x08, 3, d, 16, &len);
	expect_reject(b, len, true, TM_ELIMIT,
		      "payload of 1000x1000x1000 bytes exceeds the limit of 1048576 bytes");
	free(b);
	/* A product that overflows size_t cannot sneak under the limit. */
	d[0] = d[1] = d[2] = 0x7fffffff;
	b = make_idx(0x08, 3, d, 16, &len);
	const char *p = tpath("overflow.gz");
	write_file(p, b, len, true);
	uint8_t *data;
	int dims[3];
	tm_err e = { 0 };
	ck_assert_int_eq(tm_idx_read(p, 3, 0x7fffffff, SIZE_MAX, &data, dims, &e), TM_ELIMIT);
	ck_assert_ptr_nonnull(strstr(e.msg, "exceeds the limit"));
	free(b);
}
END_TEST

START_TEST(test_reject_truncated_payload)
{
	uint32_t d[3] = { 2, 3, 4 };
	size_t len;
	uint8_t *b = make_idx(0x08, 3, d, 24, &len);
	expect_reject(b, len - 4, true, TM_EFORMAT, "truncated: expected 24 bytes, got 20");
	expect_reject(b, len - 24, false, TM_EFORMAT, "truncated: expected 24 bytes, got 0");
	free(b);
}
END_TEST

START_TEST(test_reject_trailing_bytes)
{
	uint32_t d[3] = { 2, 3, 4 };
	size_t len;
	uint8_t *b = make_idx(0x08, 3, d, 25, &len);
	expect_reject(b, len, true, TM_EFORMAT, "oversized");
	expect_reject(b, len, false, TM_EFORMAT, "past the 24 payload bytes");
	free(b);
}
END_TEST

START_TEST(test_reject_truncated_header)
{
	uint32_t d[3] = { 2, 3, 4 };
	size_t len;
	uint8_t *b = make_idx(0x08, 3, d, 24, &len);
	expect_reject(b, 0, true, TM_EFORMAT, "truncated header: expected 4 bytes, got 0");
	expect_reject(b, 2, false, TM_EFORMAT, "truncated header: expected 4 bytes, got 2");
	expect_reject(b, 4, true, TM_EFORMAT, "truncated header: expected 12 bytes, got 0");
	expect_reject(b, 10, true, TM_EFORMAT, "truncated header: expected 12 bytes, got 6");
	free(b);
}
END_TEST

START_TEST(test_reject_corrupt_gzip)
{
	uint32_t d[3] = { 10, 28, 28 };
	size_t len;
	uint8_t *b = make_idx(0x08, 3, d, 7840, &len);
	const char *p = tpath("corrupt.gz");
	write_file(p, b, len, true);
	FILE *f = fopen(p, "rb");
	ck_assert_ptr_nonnull(f);
	uint8_t gz[65536];
	size_t glen = fread(gz, 1, sizeof(gz), f);
	fclose(f);
	ck_assert_uint_gt(glen, 40);
	ck_assert_uint_lt(glen, sizeof(gz));

	/* Damage the deflate data (bytes 10.. are the compressed stream, the last 8 the
	 * trailer): zlib reports an invalid stream or a failed CRC, either way named. */
	uint8_t bad[65536];
	memcpy(bad, gz, glen);
	for (size_t i = 12; i < glen - 8; i += 3)
		bad[i] ^= 0x5a;
	write_file(p, bad, glen, false);
	expect_reject_file(p, 3, 1u << 20, TM_EFORMAT, "corrupt gzip stream: ");

	/* A wrong CRC alone: the payload decodes, the trailer check must still fail. */
	memcpy(bad, gz, glen);
	bad[glen - 8] ^= 0xff;
	write_file(p, bad, glen, false);
	expect_reject_file(p, 3, 1u << 20, TM_EFORMAT, "corrupt gzip stream: incorrect data check");

	/* A gzip stream cut short: truncated, with zlib's reason. */
	write_file(p, gz, glen / 2, false);
	expect_reject_file(p, 3, 1u << 20, TM_EFORMAT, "unexpected end of file");
	free(b);
}
END_TEST

START_TEST(test_reject_missing_file)
{
	expect_reject_file(tpath("no-such-file.gz"), 3, 1u << 20, TM_EIO,
			   "cannot open: No such file or directory");
	/* A directory opens but cannot be read. */
	expect_reject_file(tmp, 3, 1u << 20, TM_EIO, "read error: Is a directory");
}
END_TEST

// ---- tm_fmnist_load on synthetic directories ----

static void write_set(int n_images, int rows, int cols, int n_labels, int bad_label_at)
{
	uint32_t d[3] = { (uint32_t)n_images, (uint32_t)rows, (uint32_t)cols };
	size_t len;
	uint8_t *b = make_idx(0x08, 3, d, (size_t)n_images * rows * cols, &len);
	write_file(tpath("t10k-images-idx3-ubyte.gz"), b, len, true);
	free(b);
	uint32_t l[1] = { (uint32_t)n_labels };
	b = make_idx(0x08, 1, l, (size_t)n_labels, &len);
	for (int i = 0; i < n_labels; i++)
		b[8 + i] = (uint8_t)(i % 10);
	if (bad_label_at >= 0)
		b[8 + bad_label_at] = 10;
	write_file(tpath("t10k-labels-idx1-ubyte.gz"), b, len, true);
	free(b);
}

static void expect_fmnist_reject(const char *want, const char *path_in_msg)
{
	tm_dataset ds;
	tm_err e = { 0 };
	ck_assert_int_eq(tm_fmnist_load(&ds, tmp, false, &e), TM_EFORMAT);
	ck_assert_msg(strstr(e.msg, want) != NULL, "message '%s' lacks '%s'", e.msg, want);
	ck_assert_msg(strstr(e.msg, path_in_msg) != NULL, "message '%s' lacks '%s'", e.msg,
		      path_in_msg);
	ck_assert_ptr_null(ds.images);
	ck_assert_ptr_null(ds.labels);
	ck_assert_int_eq(ds.n, 0);
}

START_TEST(test_fmnist_label_count_mismatch)
{
	write_set(4, 28, 28, 3, -1);
	expect_fmnist_reject("3 labels for 4 images", "t10k-labels-idx1-ubyte.gz");
}
END_TEST

START_TEST(test_fmnist_label_out_of_range)
{
	write_set(12, 28, 28, 12, 7);
	expect_fmnist_reject("label 7 is 10, must be < 10", "t10k-labels-idx1-ubyte.gz");
}
END_TEST

START_TEST(test_fmnist_wrong_image_size_and_count)
{
	write_set(4, 28, 27, 4, -1);
	expect_fmnist_reject("images are 28x27, expected 28x28", "t10k-images-idx3-ubyte.gz");
	write_set(4, 28, 28, 4, -1);
	expect_fmnist_reject("has 4 images, expected 10000 for the test split",
			     "t10k-images-idx3-ubyte.gz");
}
END_TEST

START_TEST(test_fmnist_missing_files)
{
	tm_dataset ds;
	tm_err e = { 0 };
	ck_assert_int_eq(tm_fmnist_load(&ds, tmp, true, &e), TM_EIO);
	ck_assert_ptr_nonnull(strstr(e.msg, "train-images-idx3-ubyte.gz': cannot open"));
	write_set(4, 28, 28, 4, -1);
	ck_assert_int_eq(remove(tpath("t10k-labels-idx1-ubyte.gz")), 0);
	ck_assert_int_eq(tm_fmnist_load(&ds, tmp, false, &e), TM_EIO);
	ck_assert_ptr_nonnull(strstr(e.msg, "t10k-labels-idx1-ubyte.gz': cannot open"));
	ck_assert_ptr_null(ds.images);
}
END_TEST

Suite *idx_suite(void)
{
	Suite *s = suite_create("idx");
	TCase *real = tcase_create("fashion_mnist");
	tcase_set_timeout(real, 60);
	tcase_add_test(real, test_fmnist_train);
	tcase_add_test(real, test_fmnist_test);
	tcase_add_test(real, test_fmnist_explicit_dir_and_raw_read);
	suite_add_tcase(s, real);

	TCase *bad = tcase_create("malformed");
	tcase_add_checked_fixture(bad, setup, teardown);
	tcase_add_test(bad, test_small_roundtrip_gz_and_plain);
	tcase_add_test(bad, test_bad_arguments);
	tcase_add_test(bad, test_reject_wrong_magic);
	tcase_add_test(bad, test_reject_wrong_dtype);
	tcase_add_test(bad, test_reject_wrong_ndim);
	tcase_add_test(bad, test_reject_zero_dimension);
	tcase_add_test(bad, test_reject_huge_dimension);
	tcase_add_test(bad, test_reject_over_byte_limit);
	tcase_add_test(bad, test_reject_truncated_payload);
	tcase_add_test(bad, test_reject_trailing_bytes);
	tcase_add_test(bad, test_reject_truncated_header);
	tcase_add_test(bad, test_reject_corrupt_gzip);
	tcase_add_test(bad, test_reject_missing_file);
	tcase_add_test(bad, test_fmnist_label_count_mismatch);
	tcase_add_test(bad, test_fmnist_label_out_of_range);
	tcase_add_test(bad, test_fmnist_wrong_image_size_and_count);
	tcase_add_test(bad, test_fmnist_missing_files);
	suite_add_tcase(s, bad);
	return s;
}
