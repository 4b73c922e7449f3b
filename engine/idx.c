/* idx.c: the IDX file reader and the Fashion-MNIST loader.  IDX (LeCun's MNIST format) is a
 * 4-byte magic (0x00 0x00 dtype ndim), ndim big-endian u32 dimensions, then the payload in
 * row-major order; the files ship gzip'd and are read through zlib, which also reads plain
 * files transparently.  Every header field is checked against the caller's limits before any
 * allocation, the payload must be exactly as long as the header says, and every error message
 * names the file, so a damaged or hostile dataset is rejected with a reason instead of being
 * half-read.  tm_fmnist_load puts two of these files together into a tm_dataset and checks
 * them against each other and against the published split sizes. */
#include "engine.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

// ---- reading through zlib ----

#define IDX_DTYPE_U8 0x08
#define IDX_MAX_NDIM 3
#define IDX_CHUNK (1u << 30) /* gzread takes an unsigned length: read big payloads in pieces */

/* zlib's description of the stream's error state, or NULL when there is none (a clean end of
 * file is not an error).  zlib prefixes its messages with the path, which ours already name. */
static const char *idx_gz_error(gzFile gz, const char *path, int *errnum)
{
	int e = Z_OK;
	const char *msg = gzerror(gz, &e);
	if (errnum)
		*errnum = e;
	if (e == Z_OK)
		return NULL;
	if (e == Z_ERRNO)
		return strerror(errno);
	if (!msg || !*msg)
		return "unknown zlib error";
	size_t plen = strlen(path);
	if (strncmp(msg, path, plen) == 0 && msg[plen] == ':' && msg[plen + 1] == ' ')
		msg += plen + 2;
	return msg;
}

/* Read up to len bytes; returns how many were read (short only at end of file or on error). */
static size_t idx_gz_read(gzFile gz, uint8_t *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		size_t want = len - got;
		unsigned chunk = want > IDX_CHUNK ? IDX_CHUNK : (unsigned)want;
		int n = gzread(gz, buf + got, chunk);
		if (n <= 0)
			break;
		got += (size_t)n;
		if ((unsigned)n < chunk)
			break;
	}
	return got;
}

/* A short read: either zlib failed (name its message) or the file simply ended. */
static int idx_short(gzFile gz, const char *path, const char *what, size_t want, size_t got,
		     tm_err *err)
{
	int e;
	const char *zmsg = idx_gz_error(gz, path, &e);
	if (zmsg && e == Z_ERRNO)
		return tm_err_set(err, TM_EIO, path, "idx '%s': read error: %s", path, zmsg);
	if (zmsg && e != Z_BUF_ERROR)
		return tm_err_set(err, TM_EFORMAT, path,
				  "idx '%s': corrupt gzip stream: %s", path, zmsg);
	if (zmsg)
		return tm_err_set(err, TM_EFORMAT, path,
				  "idx '%s': truncated%s: expected %zu bytes, got %zu (zlib: %s)",
				  path, what, want, got, zmsg);
	return tm_err_set(err, TM_EFORMAT, path,
			  "idx '%s': truncated%s: expected %zu bytes, got %zu", path, what, want,
			  got);
}

// ---- tm_idx_read ----

int tm_idx_read(const char *path, int expect_ndim, int max_dim, size_t max_bytes,
		uint8_t **data, int dims[3], tm_err *err)
{
	*data = NULL;
	if (expect_ndim < 1 || expect_ndim > IDX_MAX_NDIM || max_dim < 1)
		return tm_err_set(err, TM_EINVAL, path ? path : "",
				  "idx: expected ndim %d must be in [1, %d] and max_dim %d >= 1",
				  expect_ndim, IDX_MAX_NDIM, max_dim);
	for (int i = 0; i < IDX_MAX_NDIM; i++)
		dims[i] = 0;

	errno = 0;
	gzFile gz = gzopen(path, "rb");
	if (!gz)
		return tm_err_set(err, TM_EIO, path, "idx '%s': cannot open: %s", path,
				  errno ? strerror(errno) : "out of memory");
	gzbuffer(gz, 1u << 17);

	int rc;
	uint8_t *buf = NULL;
	uint8_t magic[4];
	size_t got = idx_gz_read(gz, magic, sizeof(magic));
	if (got < sizeof(magic)) {
		rc = idx_short(gz, path, " header", sizeof(magic), got, err);
		goto fail;
	}
	if (magic[0] != 0 || magic[1] != 0) {
		rc = tm_err_set(err, TM_EFORMAT, path,
				"idx '%s': bad magic 0x%02x%02x%02x%02x, must start with 0x0000",
				path, magic[0], magic[1], magic[2], magic[3]);
		goto fail;
	}
	if (magic[2] != IDX_DTYPE_U8) {
		rc = tm_err_set(err, TM_EFORMAT, path,
				"idx '%s': dtype 0x%02x is unsupported, must be 0x08 (unsigned byte)",
				path, magic[2]);
		goto fail;
	}
	if (magic[3] != expect_ndim) {
		rc = tm_err_set(err, TM_EFORMAT, path,
				"idx '%s': ndim is %d, expected %d", path, magic[3], expect_ndim);
		goto fail;
	}

	uint8_t raw[4 * IDX_MAX_NDIM];
	size_t hdr = 4 * (size_t)expect_ndim;
	got = idx_gz_read(gz, raw, hdr);
	if (got < hdr) {
		rc = idx_short(gz, path, " header", hdr, got, err);
		goto fail;
	}
	for (int i = 0; i < expect_ndim; i++) {
		const uint8_t *p = raw + 4 * i;
		uint32_t d = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
		if (d < 1 || d > (uint32_t)max_dim) {
			rc = tm_err_set(err, TM_EFORMAT, path,
					"idx '%s': dimension %d is %u, must be in [1, %d]", path, i,
					d, max_dim);
			goto fail;
		}
		dims[i] = (int)d;
	}
	size_t total = 1;
	bool over = false;
	for (int i = 0; i < expect_ndim; i++)
		over = over || __builtin_mul_overflow(total, (size_t)dims[i], &total);
	if (over || total > max_bytes) {
		char shape[64];
		snprintf(shape, sizeof(shape), expect_ndim == 1 ? "%d" : expect_ndim == 2 ? "%dx%d" : "%dx%dx%d",
			 dims[0], dims[1], dims[2]);
		rc = tm_err_set(err, TM_ELIMIT, path,
				"idx '%s': payload of %s bytes exceeds the limit of %zu bytes", path,
				shape, max_bytes);
		goto fail;
	}

	buf = malloc(total);
	if (!buf) {
		rc = tm_err_set(err, TM_ENOMEM, path, "idx '%s': cannot allocate %zu bytes", path,
				total);
		goto fail;
	}
	got = idx_gz_read(gz, buf, total);
	if (got < total) {
		rc = idx_short(gz, path, "", total, got, err);
		goto fail;
	}
	/* Exactly the declared size: one more byte means the file is longer than its header says;
	 * reading to the end also runs zlib's trailer check (CRC and length). */
	uint8_t extra;
	int n = gzread(gz, &extra, 1);
	int e;
	const char *zmsg = idx_gz_error(gz, path, &e);
	if (n > 0) {
		rc = tm_err_set(err, TM_EFORMAT, path,
				"idx '%s': oversized: data continues past the %zu payload bytes the header declares",
				path, total);
		goto fail;
	}
	if (zmsg) {
		rc = tm_err_set(err, TM_EFORMAT, path,
				"idx '%s': corrupt gzip stream: %s", path, zmsg);
		goto fail;
	}
	int zc = gzclose_r(gz);
	gz = NULL;
	if (zc != Z_OK) {
		rc = tm_err_set(err, TM_EFORMAT, path, "idx '%s': gzip stream error %d on close",
				path, zc);
		goto fail;
	}
	*data = buf;
	return 0;

fail:
	free(buf);
	if (gz)
		gzclose_r(gz);
	for (int i = 0; i < IDX_MAX_NDIM; i++)
		dims[i] = 0;
	return rc;
}

// ---- Fashion-MNIST ----

#define FMNIST_SIDE 28
#define FMNIST_CLASSES 10
#define FMNIST_TRAIN 60000
#define FMNIST_TEST 10000

static int fmnist_path(char *out, size_t cap, const char *dir, const char *split,
		       const char *kind, tm_err *err)
{
	int k = snprintf(out, cap, "%s/%s-%s", dir, split, kind);
	if (k < 0 || (size_t)k >= cap)
		return tm_err_set(err, TM_EINVAL, dir, "fmnist: directory '%s' is too long, must be under %zu bytes",
				  dir, cap - 40);
	return 0;
}

int tm_fmnist_load(tm_dataset *ds, const char *dir, bool train, tm_err *err)
{
	memset(ds, 0, sizeof(*ds));
	if (!dir)
		dir = TM_FMNIST_DIR;
	const char *split = train ? "train" : "t10k";
	const int expect_n = train ? FMNIST_TRAIN : FMNIST_TEST;
	char ipath[4096], lpath[4096];
	int rc = fmnist_path(ipath, sizeof(ipath), dir, split, "images-idx3-ubyte.gz", err);
	if (rc == 0)
		rc = fmnist_path(lpath, sizeof(lpath), dir, split, "labels-idx1-ubyte.gz", err);
	if (rc)
		return rc;

	uint8_t *images = NULL, *labels = NULL;
	int idims[3], ldims[3];
	rc = tm_idx_read(ipath, 3, FMNIST_TRAIN, (size_t)FMNIST_TRAIN * FMNIST_SIDE * FMNIST_SIDE,
			 &images, idims, err);
	if (rc)
		return rc;
	if (idims[1] != FMNIST_SIDE || idims[2] != FMNIST_SIDE) {
		rc = tm_err_set(err, TM_EFORMAT, ipath,
				"fmnist '%s': images are %dx%d, expected %dx%d", ipath, idims[1],
				idims[2], FMNIST_SIDE, FMNIST_SIDE);
		goto fail;
	}
	rc = tm_idx_read(lpath, 1, FMNIST_TRAIN, FMNIST_TRAIN, &labels, ldims, err);
	if (rc)
		goto fail;
	if (ldims[0] != idims[0]) {
		rc = tm_err_set(err, TM_EFORMAT, lpath,
				"fmnist '%s': %d labels for %d images in '%s', counts must be equal",
				lpath, ldims[0], idims[0], ipath);
		goto fail;
	}
	for (int i = 0; i < ldims[0]; i++) {
		if (labels[i] >= FMNIST_CLASSES) {
			rc = tm_err_set(err, TM_EFORMAT, lpath,
					"fmnist '%s': label %d is %d, must be < %d", lpath, i,
					labels[i], FMNIST_CLASSES);
			goto fail;
		}
	}
	if (idims[0] != expect_n) {
		rc = tm_err_set(err, TM_EFORMAT, ipath,
				"fmnist '%s': has %d images, expected %d for the %s split", ipath,
				idims[0], expect_n, train ? "train" : "test");
		goto fail;
	}
	ds->n = idims[0];
	ds->rows = FMNIST_SIDE;
	ds->cols = FMNIST_SIDE;
	ds->n_classes = FMNIST_CLASSES;
	ds->images = images;
	ds->labels = labels;
	return 0;

fail:
	free(images);
	free(labels);
	return rc;
}

void tm_dataset_release(tm_dataset *ds)
{
	if (!ds)
		return;
	free(ds->images);
	free(ds->labels);
	memset(ds, 0, sizeof(*ds));
}
