/* engine.h: the public API of the TinyMLPerf engine (libtinymlperf.a).
 *
 * Everything the events, the server, the tests and the bench use from the engine is declared
 * here: errors, CPU feature detection and kernel-set selection, aligned memory and arenas, the
 * thread pool, GEMM and the other ops (each with a portable C reference and SIMD versions
 * chosen at run time), datasets, weight files, models, training and the optimizations.
 * Row-major everywhere; shapes are given in comments as (rows, cols).  Functions that can fail
 * return 0 or a negative TM_E* code and fill a caller-provided tm_err. */
#ifndef TM_ENGINE_H
#define TM_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TM_ENGINE_VERSION "0.1.0"

/* The git revision the engine was built from ("unknown" outside a checkout). */
const char *tm_git_revision(void);

// ---- errors ----

enum tm_status {
	TM_OK = 0,
	TM_EINVAL = -1,   /* invalid argument or configuration */
	TM_ENOMEM = -2,   /* allocation failed */
	TM_EIO = -3,      /* read or write failed */
	TM_EFORMAT = -4,  /* malformed file or data */
	TM_ELIMIT = -5,   /* a resource limit would be exceeded */
	TM_ESTATE = -6,   /* call not valid in the object's current state */
};

typedef struct tm_err {
	int code;          /* enum tm_status */
	char field[128];   /* what the error is about: a config path, a file name, a tensor name */
	char msg[384];     /* lowercase, names the subject, gives the limit */
} tm_err;

/* Fill err (may be NULL) and return code, so callers can write `return tm_err_set(...)`. */
int tm_err_set(tm_err *err, int code, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
const char *tm_strerror(int code);

// ---- memory and time ----

/* Small allocations that abort on out-of-memory (STYLE: xmalloc). */
void *tm_xmalloc(size_t n);
void *tm_xcalloc(size_t n, size_t size);
char *tm_xstrdup(const char *s);

/* Model-sized buffers: 64-byte aligned, fallible (NULL on failure), zero-filled.  Free with
 * tm_free_aligned; tm_free_aligned(NULL) is a no-op. */
void *tm_alloc_aligned(size_t bytes);
void tm_free_aligned(void *p);

/* Blocks read on every query (inference weights: packed, int8, sparse; tm_infer's
 * activations and scratch; a benchmark's sample set): like tm_alloc_aligned, but a block of
 * TM_HOT_HUGE_MIN bytes or more starts on a 2 MiB boundary, is rounded up to whole 2 MiB and
 * is advised into transparent huge pages (MADV_HUGEPAGE), so it is one physically contiguous
 * page where the kernel allows (THP "madvise" or "always").  On 4 KiB pages a block ran at a
 * speed that depended on which pages it got: the INT8 MLP's query took 1.47 to 1.85 us from
 * process to process and between copies of its weights in one process, and the CNN's
 * throughput moved 4% between runs (docs/results.md).  The cost is resident memory: a
 * 100 KiB block holds a 2 MiB page.  Free with tm_free_aligned. */
#define TM_HOT_HUGE_MIN (64u << 10)
#define TM_HUGE_PAGE (2u << 20)
void *tm_alloc_hot(size_t bytes);

/* One allocation carved into 64-byte aligned pieces; everything is freed together. */
typedef struct tm_arena {
	uint8_t *base;  /* tm_alloc_aligned'd block */
	size_t cap;     /* bytes */
	size_t used;    /* bytes handed out so far */
} tm_arena;

int tm_arena_init(tm_arena *a, size_t cap, tm_err *err);
void tm_arena_release(tm_arena *a);
void *tm_arena_alloc(tm_arena *a, size_t bytes); /* NULL when the arena is full */
void tm_arena_reset(tm_arena *a);

uint64_t tm_now_ns(void); /* CLOCK_MONOTONIC, nanoseconds */

// ---- CPU features and kernel sets ----

typedef struct tm_cpu {
	bool avx2, fma, avx512f, avx512bw, avx512vl, avx512vnni, avxvnni;
	char model[96];  /* from /proc/cpuinfo or cpuid brand string */
} tm_cpu;

void tm_cpu_detect(tm_cpu *cpu);

/* A kernel set: which implementation of every op runs.  Ordered from portable to widest. */
typedef enum tm_isa {
	TM_ISA_PORTABLE = 0,  /* plain C, any CPU */
	TM_ISA_AVX2 = 1,      /* AVX2 + FMA */
	TM_ISA_AVX512 = 2,    /* AVX-512 F/BW/VL (+VNNI for int8 where present) */
} tm_isa;

tm_isa tm_isa_best(const tm_cpu *cpu);
bool tm_isa_supported(const tm_cpu *cpu, tm_isa isa);
const char *tm_isa_name(tm_isa isa);
/* "auto" resolves to tm_isa_best; unknown or unsupported names are an error. */
int tm_isa_parse(const char *name, const tm_cpu *cpu, tm_isa *out, tm_err *err);

// ---- thread pool ----

typedef struct tm_pool tm_pool;
typedef void (*tm_task_fn)(void *arg, int task);

/* nthreads >= 1 (the caller counts as one of them); caller frees with tm_pool_free. */
tm_pool *tm_pool_new(int nthreads);
void tm_pool_free(tm_pool *pool);
int tm_pool_threads(const tm_pool *pool); /* 1 for NULL */
/* Run fn(arg, 0..ntasks-1) across the pool and wait; a NULL pool runs them in order. */
void tm_pool_run(tm_pool *pool, int ntasks, tm_task_fn fn, void *arg);

/* What every compute call needs: the kernel set and the (optional) pool. */
typedef struct tm_ctx {
	tm_isa isa;
	tm_pool *pool;  /* NULL: single thread */
} tm_ctx;

// ---- GEMM ----

typedef enum tm_act {
	TM_ACT_NONE = 0,
	TM_ACT_RELU = 1,
	TM_ACT_GELU = 2,  /* tanh approximation, as torch.nn.GELU(approximate='tanh') */
} tm_act;

/* C(m,n) = alpha * op(A)(m,k) * op(B)(k,n) + beta * C, row-major, op(X) = X or X^T.
 * A is (m,k) with leading dimension lda, or (k,m) when trans_a; likewise B. */
void tm_sgemm(const tm_ctx *ctx, bool trans_a, bool trans_b, int m, int n, int k,
	      float alpha, const float *a, int lda, const float *b, int ldb,
	      float beta, float *c, int ldc);

/* A linear layer: Y(m,n) = act(X(m,k) * W(n,k)^T + bias(n)); bias may be NULL.
 * W has PyTorch's nn.Linear layout (out, in). */
void tm_linear(const tm_ctx *ctx, int m, int n, int k, const float *x, const float *w,
	       const float *bias, tm_act act, float *y);

/* Backward of tm_linear without the activation (apply the activation's backward to dy first):
 * dx(m,k) = dy(m,n) * W(n,k) (overwritten; skipped when dx is NULL), dw(n,k) += dy^T * x,
 * db(n) += column sums of dy (skipped when db is NULL). */
void tm_linear_backward(const tm_ctx *ctx, int m, int n, int k, const float *x, const float *w,
			const float *dy, float *dx, float *dw, float *db);

/* Prepacked weights for a linear layer that runs many times (inference): tm_linear_pack copies
 * W (n, k) once into the layout ctx's kernel set reads fastest (column panels for wide layers,
 * rows for narrow ones), so tm_linear_packed skips the per-call packing.  The copy does not
 * refer to w afterwards.  Caller frees with tm_packed_w_free; tm_packed_w_free(NULL) is a
 * no-op.  Fails with TM_EINVAL for n or k < 1 and TM_ENOMEM. */
typedef struct tm_packed_w tm_packed_w;
int tm_linear_pack(const tm_ctx *ctx, int n, int k, const float *w, tm_packed_w **out,
		   tm_err *err);
void tm_packed_w_free(tm_packed_w *pw);
/* tm_linear with a prepacked W: Y(m, n) = act(X(m, k) * W^T + bias).  The kernels are those
 * the weights were packed for, or the portable path when ctx asks for a lower kernel set. */
void tm_linear_packed(const tm_ctx *ctx, int m, const tm_packed_w *pw, const float *x,
		      const float *bias, tm_act act, float *y);

// ---- int8 (qgemm.c) ----
/* INT8 inference (docs/int8.md): symmetric int8 weights with one scale per output channel (or
 * per tensor), symmetric int8 activations with one calibrated scale per tensor, int8 x int8
 * products summed exactly in int32, then y = acc * (x_scale * w_scale[j]) + bias[j].  Kernels:
 * portable C, AVX2 (int8 weights widened to int16, vpmaddwd, exact), AVX-512 VNNI (vpdpbusd
 * on u8 = q + 128 with a precomputed correction); every set gives the same int32 sums and the
 * same float outputs.  ctx->isa selects the set (AVX512 uses VNNI where the CPU has it, else AVX2). */

typedef enum tm_qgran {
	TM_QGRAN_CHANNEL = 0,  /* one scale per output channel (row of W) */
	TM_QGRAN_TENSOR = 1,   /* one scale for the whole matrix */
} tm_qgran;

/* q(n, k) = rint(W / scale) clamped to [-127, 127] with scale = max |W| / 127 per row (per
 * tensor: over all of W, written to every scale[j]); an all-zero row (or tensor) gets scale 1
 * and q = 0.  Fails with TM_EINVAL for n, k < 1 or a weight that is not finite. */
int tm_quantize_weights(int n, int k, const float *w, tm_qgran gran, int8_t *q, float *scale,
			tm_err *err);
/* The activation scale for a calibrated range: amax / 127, or 1 when amax is 0, tiny or not
 * finite. */
float tm_qscale(float amax);
/* q[i] = rint(x[i] / scale) clamped to [-127, 127] (computed as x * (1 / scale)), the rounding
 * every kernel set uses. */
void tm_quantize_act(size_t len, const float *x, float scale, int8_t *q);

/* Activation calibration: feed batches of activations, read a symmetric scale.  MINMAX keeps
 * the exact min and max (amax = max |x|); PERCENTILE also keeps a histogram of |x| (bins of
 * 2^-9 relative width) and amax is the nearest-rank percentile of |x|, rounded up to its bin's
 * upper edge (within 0.2% above the exact value, never above the max). */
typedef enum tm_qcalib_method { TM_QCALIB_MINMAX = 0, TM_QCALIB_PERCENTILE = 1 } tm_qcalib_method;
typedef struct tm_qcalib tm_qcalib;
/* percentile in (0, 100] (ignored for MINMAX); caller frees with tm_qcalib_free. */
int tm_qcalib_new(tm_qcalib_method method, double percentile, tm_qcalib **out, tm_err *err);
void tm_qcalib_free(tm_qcalib *c);
void tm_qcalib_add(tm_qcalib *c, size_t len, const float *x);  /* non-finite values skipped */
int64_t tm_qcalib_count(const tm_qcalib *c);                    /* values seen */
void tm_qcalib_range(const tm_qcalib *c, float *min, float *max);  /* 0, 0 before any value */
float tm_qcalib_amax(const tm_qcalib *c);
float tm_qcalib_scale(const tm_qcalib *c);                      /* tm_qscale(amax) */

/* A quantized linear layer Y(m, n) = act(X(m, k) W(n, k)^T + bias): W quantized once and packed
 * for the int8 kernels, x_scale the calibrated activation scale.  Stores int8 weights (n
 * rounded up to 16, k to 4), n float scales, n int32 row-sum corrections and the n float biases
 * in one allocation (tm_qlinear_bytes).  Fails with TM_EINVAL (shapes, k > 65536, non-finite
 * weights, x_scale not positive) and TM_ENOMEM.  Caller frees with tm_qlinear_free. */
typedef struct tm_qlinear tm_qlinear;
int tm_qlinear_new(int n, int k, const float *w, const float *bias, tm_qgran gran,
		   float x_scale, tm_qlinear **out, tm_err *err);
void tm_qlinear_free(tm_qlinear *ql);
size_t tm_qlinear_bytes(const tm_qlinear *ql);  /* bytes allocated for the stored layer */
int tm_qlinear_n(const tm_qlinear *ql);
int tm_qlinear_k(const tm_qlinear *ql);
float tm_qlinear_x_scale(const tm_qlinear *ql);
/* Copy the quantized weights out: q (n, k) and scale (n); either may be NULL. */
void tm_qlinear_weights(const tm_qlinear *ql, int8_t *q, float *scale);
/* Forward from float input (quantized on the fly with the layer's x_scale).  ReLU is fused;
 * GELU is applied to the float output with tm_gelu_forward_ctx. */
void tm_qlinear_forward(const tm_ctx *ctx, const tm_qlinear *ql, int m, const float *x,
			tm_act act, float *y);
/* Forward from int8 input xq (m, k) of scale x_scale; float output, or (the _q8 variant)
 * int8 output requantized with y_scale (as tm_quantize_act), for chaining layers. */
void tm_qlinear_forward_q(const tm_ctx *ctx, const tm_qlinear *ql, int m, const int8_t *xq,
			  float x_scale, tm_act act, float *y);
void tm_qlinear_forward_q8(const tm_ctx *ctx, const tm_qlinear *ql, int m, const int8_t *xq,
			   float x_scale, tm_act act, float y_scale, int8_t *yq);
/* The raw int32 sums acc(m, n) = xq(m, k) * q(n, k)^T, for tests and composition. */
void tm_qgemm_s32(const tm_ctx *ctx, const tm_qlinear *ql, int m, const int8_t *xq,
		  int32_t *acc);
/* Name of the int8 kernel set ctx selects: "portable", "avx2" or "avx512vnni". */
const char *tm_qgemm_kernels_name(const tm_ctx *ctx);

/* int8 conv3x3 (stride 1, no padding, NCHW like tm_conv3x3_forward): the input is quantized
 * with x_scale, patches are gathered as int8 rows and multiplied by the int8 filters
 * (cout, cin*9) with tm_qlinear's kernels.  Build the layer with
 * tm_qlinear_new(cout, cin * 9, w, b, ...); scratch holds tm_qconv3x3_scratch_bytes bytes. */
size_t tm_qconv3x3_scratch_bytes(int cin, int h, int w, int cout);
void tm_qconv3x3_forward(const tm_ctx *ctx, const tm_qlinear *ql, int n, int cin, int h, int w,
			 const float *x, tm_act act, float *y, void *scratch);

// ---- sparse (sparse.c) ----
/* Unstructured magnitude pruning and sparse linear layers (docs/sparsity.md).  Pruning zeroes
 * exactly tm_prune_count(total, sparsity) weights of smallest |w|, per tensor or over several
 * tensors with one global threshold; ties go to the earlier position (earlier tensor, then
 * lower flat index), so the result is deterministic.  A mask has one byte per weight: 1 kept,
 * 0 pruned.  A pruned W (n, k) is stored sparsely by tm_sparse_new in the format the kernel
 * set reads fastest and run by tm_sparse_linear; its size is the bytes of the one allocation
 * holding it.  tm_sparse_decide is the dense fallback rule. */

typedef struct tm_prune_result {
	size_t total;      /* weights considered */
	size_t pruned;     /* weights zeroed: tm_prune_count(total, sparsity) */
	float threshold;   /* largest |w| pruned (0 when none) */
} tm_prune_result;

/* Weights pruned out of total at sparsity: floor(sparsity * total + 0.5). */
size_t tm_prune_count(size_t total, double sparsity);
/* Zero the tm_prune_count(len, sparsity) smallest-|w| weights of w; mask (len) and res may be
 * NULL.  Fails with TM_EINVAL (nothing changed) when sparsity is not in [0, 1] or a weight
 * is not finite. */
int tm_prune_magnitude(float *w, size_t len, double sparsity, uint8_t *mask,
		       tm_prune_result *res, tm_err *err);

/* One tensor of a global pruning. */
typedef struct tm_prune_tensor {
	float *w;          /* (len) weights, pruned in place */
	size_t len;
	uint8_t *mask;     /* (len) or NULL */
	size_t pruned;     /* out: weights zeroed in this tensor */
} tm_prune_tensor;
/* One |w| threshold over n tensors: zero the tm_prune_count(sum of len, sparsity) smallest. */
int tm_prune_magnitude_global(tm_prune_tensor *t, int n, double sparsity, tm_prune_result *res,
			      tm_err *err);

/* mask = (w != 0); returns how many weights are kept. */
size_t tm_prune_mask_from(const float *w, size_t len, uint8_t *mask);
/* Zero w, and grad when not NULL, wherever mask is 0.  Fine-tuning with a fixed mask: apply it
 * to the gradient before each optimizer step and to the weights after it, so pruned weights
 * (and their optimizer moments) stay exactly zero. */
void tm_prune_mask_apply(const uint8_t *mask, size_t len, float *w, float *grad);
/* Fraction of exact zeros among len weights (0 for len 0). */
double tm_sparsity(const float *w, size_t len);

typedef enum tm_sparse_format {
	TM_SPARSE_AUTO = 0,   /* the fastest for ctx's kernel set: WIN16, WIN8 (AVX2) or CSR */
	TM_SPARSE_CSR = 1,    /* row_ptr (n+1) int32, col (nnz) uint16 (int32 if k > 65536), val float */
	TM_SPARSE_WIN16 = 2,  /* 16-row groups read through 32-column windows of x (AVX-512) */
	TM_SPARSE_WIN8 = 3,   /* 8-row groups read through 16-column windows of x (AVX2) */
} tm_sparse_format;

typedef struct tm_sparse_w tm_sparse_w;

/* Store the nonzeros of W (n, k) (PyTorch's (out, in); exact zeros are dropped) in format.
 * The copy does not refer to w afterwards.  Caller frees with tm_sparse_free;
 * tm_sparse_free(NULL) is a no-op.  Fails with TM_EINVAL for n or k < 1 or a format out of
 * range, TM_ELIMIT when n * k > 2^31 - 1, TM_ENOMEM. */
int tm_sparse_new(const tm_ctx *ctx, int n, int k, const float *w, tm_sparse_format format,
		  tm_sparse_w **out, tm_err *err);
/* Prune then quantize: the same with int8 values and one float scale per output row, by
 * tm_quantize_weights' per-channel rule (scale = max |row| / 127, q = rint(w / scale));
 * weights that round to 0 are dropped.  The kernels widen the values to float and apply the
 * scale at the end (x stays float); tm_sparse_to_dense gives q * scale.  Also fails with
 * TM_EINVAL for a weight that is not finite. */
int tm_sparse_new_q8(const tm_ctx *ctx, int n, int k, const float *w, tm_sparse_format format,
		     tm_sparse_w **out, tm_err *err);
void tm_sparse_free(tm_sparse_w *s);

typedef struct tm_sparse_info {
	int n, k;
	tm_sparse_format format;  /* CSR, WIN16 or WIN8, never AUTO */
	bool int8;                /* int8 values and row scales (tm_sparse_new_q8) */
	int64_t nnz;              /* nonzero weights stored */
	double sparsity;          /* 1 - nnz / (n k) */
	size_t bytes;             /* the allocation holding indices, values and pointers */
	size_t dense_bytes;       /* n * k * sizeof(float) */
	int64_t slots;            /* WIN16/WIN8: 16/8-lane slots read per sample; CSR: 0 */
	int64_t windows;          /* WIN16/WIN8: windows of x with slots (stored); CSR: 0 */
	double fill;              /* WIN16/WIN8: nnz / (lanes * slots), real lanes; CSR: 1 */
} tm_sparse_info;
void tm_sparse_get_info(const tm_sparse_w *s, tm_sparse_info *info);
size_t tm_sparse_bytes(const tm_sparse_w *s);
const char *tm_sparse_format_name(tm_sparse_format f);  /* "auto", "csr", "win16", "win8" */
/* W back as a dense (n, k) matrix. */
void tm_sparse_to_dense(const tm_sparse_w *s, float *w);

/* Y(m, n) = act(X(m, k) * W^T + bias(n)), bias may be NULL: tm_linear on the stored W, with
 * ctx's SIMD kernels when the format has them (portable C otherwise) and ctx's pool over
 * output rows.  Results are bit-identical for any thread count, and a sample's row of Y does
 * not depend on the other samples of the batch. */
void tm_sparse_linear(const tm_ctx *ctx, int m, const tm_sparse_w *s, const float *x,
		      const float *bias, tm_act act, float *y);

/* The dense fallback rule (docs/sparsity.md): a linear layer (n out, k in) runs sparse at
 * batch m on isa when its fraction of zero weights reaches the break-even sparsity measured by
 * `make bench` for that kernel set and batch.  tm_sparse_decide returns the choice and writes
 * it to why (may be NULL) as "sparse win16, 90.1% zeros (break-even 60%)" or "dense: 31.0%
 * zeros is below the 60% break-even". */
double tm_sparse_break_even(tm_isa isa, int n, int k, int m);
bool tm_sparse_decide(tm_isa isa, int n, int k, double sparsity, int m, char *why, size_t len);
/* The same for prune then quantize: int8 sparse (tm_sparse_new_q8) against the dense int8
 * layer (tm_qlinear); why reads "sparse win16 int8, 95.0% zeros (break-even 90%)" or
 * "dense int8: 80.0% zeros is below the 90% break-even". */
double tm_sparse_break_even_q8(tm_isa isa, int n, int k, int m);
bool tm_sparse_decide_q8(tm_isa isa, int n, int k, double sparsity, int m, char *why,
			 size_t len);

// ---- ops (ops.c) ----
/* Forward and backward of every layer the three model families use.  Images are NCHW like
 * PyTorch; sequences are (B, T, C).  Backward functions overwrite input gradients (dx) and
 * ACCUMULATE (+=) parameter gradients (dw, db, dgamma, ...), so a caller zeroes those once per
 * step.  Each op has a portable C reference; SIMD versions are picked from ctx->isa. */

/* conv2d 3x3, stride 1, no padding: x (n, cin, h, w), w (cout, cin, 3, 3), b (cout) or NULL,
 * y (n, cout, h-2, w-2).  scratch holds tm_conv3x3_scratch_floats(...) floats (im2col). */
size_t tm_conv3x3_scratch_floats(int cin, int h, int w);
void tm_conv3x3_forward(const tm_ctx *ctx, int n, int cin, int h, int w, int cout,
			const float *x, const float *wt, const float *b, tm_act act, float *y,
			float *scratch);
/* dy is the gradient w.r.t. the conv output before the activation (apply act backward
 * first).  dx may be NULL (first layer). */
void tm_conv3x3_backward(const tm_ctx *ctx, int n, int cin, int h, int w, int cout,
			 const float *x, const float *wt, const float *dy, float *dx, float *dw,
			 float *db, float *scratch);

/* maxpool 2x2 stride 2 (floor): x (n, c, h, w) -> y (n, c, h/2, w/2); idx (same size as y)
 * records the argmax offset within each plane for backward (may be NULL at inference). */
void tm_maxpool2_forward(int n, int c, int h, int w, const float *x, float *y, int32_t *idx);
void tm_maxpool2_backward(int n, int c, int h, int w, const int32_t *idx, const float *dy,
			  float *dx);

/* Element-wise activations over len values; backward takes the forward INPUT x. */
void tm_relu_forward(size_t len, const float *x, float *y);
void tm_relu_backward(size_t len, const float *x, const float *dy, float *dx);
void tm_gelu_forward(size_t len, const float *x, float *y);
void tm_gelu_backward(size_t len, const float *x, const float *dy, float *dx);
/* GELU with the kernels of ctx->isa (SIMD: within 1e-6 absolute + 1e-5 relative of the portable
 * functions above) and, for long arrays, the ctx's pool; y may alias x and dx may alias dy. */
void tm_gelu_forward_ctx(const tm_ctx *ctx, size_t len, const float *x, float *y);
void tm_gelu_backward_ctx(const tm_ctx *ctx, size_t len, const float *x, const float *dy,
			  float *dx);

/* LayerNorm over the last dimension d, eps 1e-5: x (rows, d) -> y; mean and rstd (rows) are
 * saved for backward (may be NULL at inference). */
void tm_layernorm_forward(int rows, int d, const float *x, const float *gamma,
			  const float *beta, float *y, float *mean, float *rstd);
void tm_layernorm_backward(int rows, int d, const float *x, const float *gamma,
			   const float *mean, const float *rstd, const float *dy, float *dx,
			   float *dgamma, float *dbeta);
/* LayerNorm with the kernels of ctx->isa (SIMD within 1e-5 relative of the functions above)
 * and rows split over the ctx's pool in fixed chunks, so results do not depend on the thread
 * count.  gamma and beta may be NULL (1 and 0); dx, dgamma and dbeta may be NULL. */
void tm_layernorm_forward_ctx(const tm_ctx *ctx, int rows, int d, const float *x,
			      const float *gamma, const float *beta, float *y, float *mean,
			      float *rstd);
void tm_layernorm_backward_ctx(const tm_ctx *ctx, int rows, int d, const float *x,
			       const float *gamma, const float *mean, const float *rstd,
			       const float *dy, float *dx, float *dgamma, float *dbeta);

/* Row-wise softmax, numerically stable: x (rows, d) -> y (may alias x). */
void tm_softmax_forward(int rows, int d, const float *x, float *y);

/* Token + position embedding: out(t, :) = wte[tok[t]] + wpe[pos[t]] for t in [0, n).
 * Token and position ids must already be validated (0 <= id < rows of the table). */
void tm_embedding_forward(int n, int d, const int32_t *tok, const int32_t *pos,
			  const float *wte, const float *wpe, float *out);
void tm_embedding_backward(int n, int d, const int32_t *tok, const int32_t *pos,
			   const float *dout, float *dwte, float *dwpe);

/* Causal multi-head self-attention over b sequences of t positions, d = n_head * head_dim:
 * qkv (b, t, 3d) holds q, k, v side by side; out (b, t, d).  Position i attends to j <= i
 * with seg[j] == seg[i] (seg (b, t) may be NULL: one segment per row), which lets several
 * examples share one packed row.  att (b, n_head, t, t) keeps the probabilities for backward
 * (masked entries exactly 0); it is required, also at inference, as the score buffer.
 * Scale 1/sqrt(head_dim).  The exponentials use the kernels of ctx->isa. */
void tm_attention_forward(const tm_ctx *ctx, int b, int t, int d, int n_head,
			  const float *qkv, const int32_t *seg, float *att, float *out);
void tm_attention_backward(const tm_ctx *ctx, int b, int t, int d, int n_head,
			   const float *qkv, const int32_t *seg, const float *att,
			   const float *dout, float *dqkv, float *scratch);
/* scratch for tm_attention_backward, in floats. */
size_t tm_attention_scratch_floats(int b, int t, int n_head);

/* Softmax cross-entropy over n rows of v classes; targets < 0 are ignored.  Returns the mean
 * loss over counted rows (0 when none) and, when dlogits is not NULL, writes its gradient
 * (softmax - onehot) / counted (zero rows for ignored targets; targets >= v are ignored too,
 * though callers should never pass them). *correct (may be NULL) gets the
 * number of counted rows whose argmax equals the target. */
float tm_cross_entropy(int n, int v, const float *logits, const int32_t *targets,
		       float *dlogits, int *correct);

// ---- datasets (idx.c) ----

#define TM_FMNIST_DIR "/usr/share/datasets/fashion-mnist"

/* An image-classification set: n images of rows x cols bytes and their labels. */
typedef struct tm_dataset {
	int n;
	int rows, cols;
	int n_classes;
	uint8_t *images;  /* (n, rows * cols), 0..255 */
	uint8_t *labels;  /* (n), < n_classes */
} tm_dataset;

/* Read one gzip'd (or plain) IDX file of unsigned bytes: validates magic, dtype, ndim ==
 * expect_ndim, every dimension in [1, max_dim], total size <= max_bytes, and that the payload
 * is exactly as long as the header says.  *data is malloc'd; dims gets ndim entries. */
int tm_idx_read(const char *path, int expect_ndim, int max_dim, size_t max_bytes,
		uint8_t **data, int dims[3], tm_err *err);
/* Fashion-MNIST train (60k) or test (10k) split from dir (NULL: TM_FMNIST_DIR), images and
 * labels checked against each other. */
int tm_fmnist_load(tm_dataset *ds, const char *dir, bool train, tm_err *err);
void tm_dataset_release(tm_dataset *ds);

// ---- weight files (safetensors.c) ----
/* safetensors: 8-byte little-endian header length, a JSON header {name: {dtype, shape,
 * data_offsets}, "__metadata__": {str: str}}, then the tensor bytes.  The reader validates
 * everything (header bound, JSON, dtype names, shapes vs byte sizes, offsets inside the file,
 * no overlaps, no gaps) before anything is used; messages read "weights 'FILE': ..." with FILE
 * in err->field.  docs/weights.md describes the format and every rule. */

typedef enum tm_dtype { TM_DTYPE_F32 = 0, TM_DTYPE_I8 = 1, TM_DTYPE_I32 = 2 } tm_dtype;

/* The safetensors name ("F32", "I8", "I32") and element size in bytes; NULL / 0 for a value
 * outside the enum. */
const char *tm_dtype_name(tm_dtype dtype);
size_t tm_dtype_size(tm_dtype dtype);

#define TM_ST_MAX_DIMS 4
#define TM_ST_MAX_HEADER (16u << 20) /* bytes */

typedef struct tm_st_tensor {
	char name[128];
	tm_dtype dtype;
	int ndim;
	int64_t shape[TM_ST_MAX_DIMS];
	const void *data;   /* 64-byte aligned copy of the bytes, valid until tm_st_free */
	size_t nbytes;
} tm_st_tensor;

typedef struct tm_st_file tm_st_file;

/* Read and validate a whole file; caller frees with tm_st_free. */
int tm_st_open(tm_st_file **out, const char *path, tm_err *err);
/* The same from memory (buf is copied); name is used in error messages. */
int tm_st_parse(tm_st_file **out, const uint8_t *buf, size_t len, const char *name, tm_err *err);
void tm_st_free(tm_st_file *f);
int tm_st_count(const tm_st_file *f);
const tm_st_tensor *tm_st_at(const tm_st_file *f, int i);
const tm_st_tensor *tm_st_get(const tm_st_file *f, const char *name); /* NULL if absent */
const char *tm_st_meta(const tm_st_file *f, const char *key);         /* NULL if absent */
/* Find name and check its dtype and shape; the error names the tensor and what differs. */
int tm_st_expect(const tm_st_file *f, const char *name, tm_dtype dtype, int ndim,
		 const int64_t *shape, const void **data, tm_err *err);

typedef struct tm_st_writer tm_st_writer;
tm_st_writer *tm_st_writer_new(void);
void tm_st_writer_free(tm_st_writer *w);
void tm_st_writer_meta(tm_st_writer *w, const char *key, const char *value);
/* data is referenced, not copied: it must stay valid until tm_st_writer_save returns. */
void tm_st_writer_add(tm_st_writer *w, const char *name, tm_dtype dtype, int ndim,
		      const int64_t *shape, const void *data);
/* Write to path atomically (temporary file, fsync, rename). */
int tm_st_writer_save(tm_st_writer *w, const char *path, tm_err *err);

// ---- models (model.c) ----
/* The image models of the MLP Sprint and the CNN Marathon, built from a spec.  A model owns ONE
 * allocation of parameters carved into per-layer tensors with PyTorch's layouts (a flat vector
 * the optimizer runs over), a second allocation with the same layout for gradients (only when
 * planned for training), and one arena of activations and scratch sized by tm_model_plan for a
 * maximum batch.  Layers are the modules of the equivalent torch.nn.Sequential, named by their
 * index; a ReLU that follows a linear or conv layer is computed inside it ("fused").  Input is
 * uint8 pixels, preprocessed to (x / 255 - TM_FMNIST_MEAN) / TM_FMNIST_SD, NCHW (the MLP sees
 * the same values flattened row-major).  FLOPs, bytes and the file format: docs/models.md. */

#include <stdio.h> /* FILE, for tm_model_print and training progress */

typedef enum tm_family {
	TM_FAMILY_MLP = 0,
	TM_FAMILY_CNN = 1,
	TM_FAMILY_TRANSFORMER = 2,  /* reserved: implemented by transformer.c, not tm_model */
} tm_family;

#define TM_MLP_MAX_HIDDEN 8
#define TM_MODEL_MAX_LAYERS 24
#define TM_MODEL_MAX_WIDTH 4096   /* MLP hidden width and CNN channels, inclusive */
#define TM_FMNIST_MEAN 0.2860f    /* of x / 255 over the training images */
#define TM_FMNIST_SD 0.3530f

typedef struct tm_model_spec {
	tm_family family;
	int in_c, in_h, in_w;           /* input image (channels, rows, cols): (1, 28, 28) */
	int n_classes;                  /* 10 */
	int n_hidden;                   /* MLP: hidden layers, 0..TM_MLP_MAX_HIDDEN */
	int hidden[TM_MLP_MAX_HIDDEN];  /* MLP: their widths */
	int c1, c2;                     /* CNN: output channels of conv1 and conv2 */
} tm_model_spec;

/* Fill a spec for Fashion-MNIST input (1, 28, 28) and 10 classes. */
void tm_model_spec_mlp(tm_model_spec *s, int n_hidden, const int *hidden);
void tm_model_spec_cnn(tm_model_spec *s, int c1, int c2);
/* The reference model of an event id ("mlp_sprint", "cnn_marathon"). */
int tm_model_spec_reference(tm_model_spec *s, const char *event, tm_err *err);
int tm_model_spec_check(const tm_model_spec *s, tm_err *err);
bool tm_model_spec_equal(const tm_model_spec *a, const tm_model_spec *b);
/* A one-line description: "mlp 784-128-64-10", "cnn c1=32 c2=64 (1x28x28 -> 10)". */
void tm_model_spec_str(const tm_model_spec *s, char *buf, size_t len);
const char *tm_family_name(tm_family f);  /* "mlp", "cnn", "transformer" */

typedef enum tm_op {
	TM_OP_LINEAR = 0,
	TM_OP_CONV3X3 = 1,   /* stride 1, no padding */
	TM_OP_RELU = 2,
	TM_OP_MAXPOOL2 = 3,  /* 2x2, stride 2, floor */
	TM_OP_FLATTEN = 4,   /* (C, H, W) -> (C*H*W): no data movement */
} tm_op;

const char *tm_op_name(tm_op op);  /* "linear", "conv3x3", "relu", "maxpool2", "flatten" */

/* One module of the Sequential.  Shapes are per sample; a vector is (features, 1, 1). */
typedef struct tm_layer {
	tm_op op;
	char name[16];               /* PyTorch module name: the Sequential index, "0", "1", ... */
	int in_c, in_h, in_w;        /* input shape */
	int out_c, out_h, out_w;     /* output shape */
	tm_act act;                  /* linear/conv: activation computed inside (the next ReLU) */
	bool fused;                  /* ReLU computed by the previous layer; output aliases its */
	float *w;                    /* linear (out, in); conv (cout, cin, 3, 3); NULL otherwise */
	float *b;                    /* (out) / (cout); NULL otherwise */
	float *dw, *db;              /* same layouts, in grads; NULL until planned for training */
	size_t w_len, b_len;         /* floats */
	int64_t flops;               /* per sample (docs/models.md) */
	size_t bytes;                /* bytes of w and b as stored */
} tm_layer;

typedef struct tm_model {
	tm_model_spec spec;
	int n_layers;
	tm_layer layers[TM_MODEL_MAX_LAYERS];
	float *params;               /* (n_alloc) the one parameter allocation */
	float *grads;                /* (n_alloc) same layout; NULL until planned for training */
	size_t n_alloc;              /* floats in params/grads, with zero padding between tensors */
	int64_t n_params;            /* parameters (no padding) */
	/* The plan: buffers for batches of up to max_batch samples, carved from arena. */
	int max_batch;               /* 0: not planned */
	bool train;                  /* planned with backward buffers */
	tm_arena arena;
	float *x;                    /* (max_batch, in_c*in_h*in_w) preprocessed input */
	float *out[TM_MODEL_MAX_LAYERS];        /* (max_batch, layer i output), may alias */
	int32_t *pool_idx[TM_MODEL_MAX_LAYERS]; /* (max_batch, layer i output) argmax, training */
	float *scratch;              /* (scratch_len) conv im2col */
	size_t scratch_len;          /* floats */
	float *g0, *g1;              /* (max_batch, largest layer size) gradient ping-pong */
	float *logits;               /* (max_batch, n_classes) = out[n_layers - 1] */
} tm_model;

/* Build a model with zero parameters (see tm_model_randomize); NULL on error with err filled.
 * Caller frees with tm_model_free. */
tm_model *tm_model_new(const tm_model_spec *spec, tm_err *err);
void tm_model_free(tm_model *m);
/* PyTorch's default initialisation (kaiming_uniform_ with a = sqrt(5)): every weight and bias
 * uniform in [-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn in layer order from tm_rng seeded by seed. */
void tm_model_randomize(tm_model *m, uint64_t seed);
/* (Re)size the activation arena for batches of 1..max_batch; train also allocates gradients
 * (zeroed) and the buffers backward needs.  Parameters are kept. */
int tm_model_plan(tm_model *m, int max_batch, bool train, tm_err *err);

/* Parameters and FLOPs per inference of a spec, computed from the same layer list tm_model_new
 * builds but without allocating anything (validators use it for resource limits). */
int tm_model_spec_counts(const tm_model_spec *s, int64_t *params, int64_t *flops, tm_err *err);
int64_t tm_model_params(const tm_model *m);
size_t tm_model_bytes(const tm_model *m);   /* bytes stored for all weight tensors */
int64_t tm_model_flops(const tm_model *m);  /* per inference (one sample) */

/* pixels (n, in_c*in_h*in_w) uint8 -> x (same shape) float. */
void tm_model_preprocess(const tm_model *m, int n, const uint8_t *pixels, float *x);
/* Forward for n samples (1 <= n <= max_batch): logits (n, n_classes) are left in m->logits
 * and copied to logits when it is not NULL.  The _f32 variant takes preprocessed input. */
int tm_model_forward(tm_model *m, const tm_ctx *ctx, int n, const uint8_t *pixels,
		     float *logits, tm_err *err);
int tm_model_forward_f32(tm_model *m, const tm_ctx *ctx, int n, const float *x, float *logits,
			 tm_err *err);
/* Backward of the last forward (same n) given dlogits (n, n_classes): ACCUMULATES into
 * m->grads (zero them with tm_model_zero_grad).  Needs a training plan. */
int tm_model_backward(tm_model *m, const tm_ctx *ctx, int n, const float *dlogits, tm_err *err);
void tm_model_zero_grad(tm_model *m);

/* What a weight file records besides the spec and the tensors. */
typedef struct tm_model_meta {
	char recipe[256];       /* training recipe (tm_train_recipe_str), "" if unknown */
	uint64_t seed;          /* initialisation and shuffling seed */
	double test_accuracy;   /* top-1 on the test set in [0, 1]; < 0 if not measured */
	double train_seconds;   /* wall-clock training time; < 0 if unknown */
} tm_model_meta;

/* Save as safetensors with PyTorch state_dict names ("0.weight", ...) and __metadata__
 * (format version, family, spec, preprocessing, n_classes, meta).  meta may be NULL. */
int tm_model_save(const tm_model *m, const char *path, const tm_model_meta *meta, tm_err *err);
/* Load a model file.  When expect is not NULL the file's family and spec must equal it; every
 * tensor's dtype and shape is checked and no tensor may be missing or extra (the error names
 * it).  meta (may be NULL) gets the recorded metadata.  Caller frees with tm_model_free. */
tm_model *tm_model_load(const char *path, const tm_model_spec *expect, tm_model_meta *meta,
			tm_err *err);
/* Print the per-layer table (name, op, shapes, params, flops, bytes) and the totals. */
void tm_model_print(const tm_model *m, FILE *out);

// ---- decathlon tasks (decathlon.c) ----
/* The ten generated string tasks of the Transformer Decathlon (docs/decathlon.md).  Every
 * example is the text "<marker><input>=<answer>." over a fixed character vocabulary whose id 0
 * is the padding character '_'.  Generation is deterministic from a tm_rng; a prompt belongs to
 * the held-out split iff a fixed hash of its text says so, so the training stream (which skips
 * held-out prompts) and the test set (which keeps only them) are disjoint by construction. */

typedef struct tm_rng tm_rng;  /* defined with the optimizers below */

typedef enum tm_dec_task {
	TM_DEC_COPY = 0,      /* 'C', 60 letters, copied */
	TM_DEC_REVERSE = 1,   /* 'R', 60 letters, reversed */
	TM_DEC_SORT = 2,      /* 'S', 3-8 digits, sorted ascending */
	TM_DEC_ADD = 3,       /* 'A', two 3-digit numbers units-first, 4-digit sum units-first */
	TM_DEC_INC = 4,       /* 'I', 3-8 digits plus one (30% end in a run of 9s) */
	TM_DEC_MAX = 5,       /* 'M', the largest of 5-15 digits */
	TM_DEC_COUNT = 6,     /* 'N', how many 'a's in 3-10 letters over abcd */
	TM_DEC_MAJORITY = 7,  /* 'Q', the majority bit of an odd number (5-15) of bits */
	TM_DEC_DEDUP = 8,     /* 'D', 3-10 letters over a-f, first occurrences kept */
	TM_DEC_SHIFT = 9,     /* 'K', 20 letters each shifted by +3 (mod 26) */
	TM_DEC_NTASKS = 10,
} tm_dec_task;

#define TM_DEC_MAX_LEN 128       /* tokens of the longest possible example */
#define TM_DEC_TEST_PER_TASK 200 /* held-out prompts per task in the reference test set */
#define TM_DEC_PAD 0             /* token id of the padding character '_' */

typedef struct tm_dec_example {
	int task;                       /* enum tm_dec_task */
	int prompt_len;                 /* characters of "<marker><input>=" */
	int len;                        /* characters of the whole example, end mark included */
	char text[TM_DEC_MAX_LEN + 1];  /* "<marker><input>=<answer>.", NUL-terminated */
} tm_dec_example;

/* The vocabulary as a string: character i is token id i. */
const char *tm_dec_vocab(void);
int tm_dec_vocab_size(void);
int32_t tm_dec_token(char c);       /* id of c, or -1 when c is not in the vocabulary */
int32_t tm_dec_end_token(void);     /* id of '.' */
/* Text to ids: returns n, or -1 (nothing meaningful in tok) on a character outside the
 * vocabulary.  Ids to text: writes n characters and a NUL (s holds n + 1), returns -1 on an
 * id outside the vocabulary. */
int tm_dec_encode(const char *s, int n, int32_t *tok);
int tm_dec_decode(const int32_t *tok, int n, char *s);

const char *tm_dec_task_name(int task);   /* "copy", "reverse", ...; NULL when out of range */
char tm_dec_task_marker(int task);
int tm_dec_task_find(const char *name);   /* task index, or -1 */
/* The answer of task for input (the characters between the marker and '='): writes a
 * NUL-terminated answer into ans (cap >= strlen(input) + 2) and returns its length, or -1 when
 * the input is not valid for the task. */
int tm_dec_solve(int task, const char *input, char *ans, size_t cap);
/* Build an example from task and input (validated as tm_dec_solve does). */
int tm_dec_make(int task, const char *input, tm_dec_example *ex);

/* One example of task drawn from its input distribution, ignoring the split. */
void tm_dec_sample(tm_rng *r, int task, tm_dec_example *ex);
/* Whether a prompt ("<marker><input>=") is held out for testing (about one in ten). */
bool tm_dec_heldout(const char *prompt, int prompt_len);
/* A training example: tm_dec_sample until the prompt is not held out. */
void tm_dec_train_example(tm_rng *r, int task, tm_dec_example *ex);
/* The held-out test set of seed: per_task examples of every task, task-major (out holds
 * TM_DEC_NTASKS * per_task); each task draws from its own stream, so the set of one task does
 * not depend on the others. */
void tm_dec_test_set(uint64_t seed, int per_task, tm_dec_example *out);

/* Tokens and next-token targets of one example (len entries each): tgt[i] is the id of
 * text[i + 1] for the answer characters and the end mark, -1 elsewhere (prompt, last). */
void tm_dec_example_tokens(const tm_dec_example *ex, int32_t *tok, int32_t *tgt);
/* Exact match of a generation (n ids produced after the prompt): the ids up to and including
 * the first end mark must spell "<answer>.".  Anything after the end mark is ignored. */
bool tm_dec_exact_match(const tm_dec_example *ex, const int32_t *gen, int n);

/* Decathlon points: 100 x exact-match accuracy per task, summed (max 1000). */
typedef struct tm_dec_score {
	int correct[TM_DEC_NTASKS];
	int total[TM_DEC_NTASKS];
	double points[TM_DEC_NTASKS];  /* 100 * correct / total, 0 when total is 0 */
	double total_points;           /* sum of points, in [0, 100 * TM_DEC_NTASKS] */
} tm_dec_score;

void tm_dec_score_init(tm_dec_score *s);
/* Count one generation; returns whether it matched. */
bool tm_dec_score_add(tm_dec_score *s, const tm_dec_example *ex, const int32_t *gen, int n);
void tm_dec_score_finish(tm_dec_score *s);

// ---- transformer (transformer.c) ----
/* A decoder-only transformer (GPT-2 style, pre-LayerNorm, learned positions, GELU MLP, untied
 * head without bias) over packed rows: each row of spec.ctx positions may hold several
 * sequences, positions restart at 0 for each and attention never crosses between them (the
 * seg ids).  Parameters live in one allocation and gradients in a second one with the same
 * layout; activations come from one arena sized per (model, rows).  The Decathlon trainer,
 * evaluator and reference recipe are here too.  Names and formulas: docs/decathlon.md. */

#include <stdio.h> /* FILE, for the trainer's progress lines */

typedef struct tm_tf_spec {
	int ctx;      /* positions per row (128) */
	int d_model;  /* width (128) */
	int n_head;   /* attention heads (8), divides d_model */
	int n_layer;  /* blocks (2) */
	int d_ff;     /* MLP hidden width (512) */
	int vocab;    /* token ids (tm_dec_vocab_size()) */
} tm_tf_spec;

#define TM_TF_MAX_LAYERS 64

/* The reference model of the Decathlon: ctx 128, d 128, 8 heads, 2 layers, FFN 512. */
void tm_tf_spec_reference(tm_tf_spec *s);
int tm_tf_spec_check(const tm_tf_spec *s, tm_err *err);
/* L * (4d^2 + 2 d ff + 9d + ff) + 2 V d + ctx d + 2d */
size_t tm_tf_spec_params(const tm_tf_spec *s);
/* Forward FLOPs (2 per multiply-add) of one token that attends to n_attend positions (its
 * own included): 2 L (4d^2 + 2 d ff) + 2 V d + 4 L d n_attend.  Generation with a KV cache
 * costs this per new token at n_attend = its position + 1; without a cache every step
 * recomputes the whole prefix. */
double tm_tf_flops_per_token(const tm_tf_spec *s, int n_attend);

typedef struct tm_tf_block {
	float *ln1_w, *ln1_b;    /* (d) */
	float *qkv_w;            /* (3d, d): q, k, v stacked (out, in) */
	float *qkv_b;            /* (3d) */
	float *proj_w;           /* (d, d) */
	float *proj_b;           /* (d) */
	float *ln2_w, *ln2_b;    /* (d) */
	float *fc_w;             /* (ff, d) */
	float *fc_b;             /* (ff) */
	float *fc2_w;            /* (d, ff) */
	float *fc2_b;            /* (d) */
} tm_tf_block;

/* Pointers into a flat parameter (or gradient) vector. */
typedef struct tm_tf_weights {
	float *wte;              /* (vocab, d) token embedding */
	float *wpe;              /* (ctx, d) position embedding */
	tm_tf_block block[TM_TF_MAX_LAYERS];
	float *lnf_w, *lnf_b;    /* (d) final LayerNorm */
	float *head_w;           /* (vocab, d) output projection, untied, no bias */
} tm_tf_weights;

typedef struct tm_transformer {
	tm_tf_spec spec;
	size_t n_params;      /* real parameters (tm_tf_spec_params) */
	size_t n_floats;      /* floats in params and grads: tensors start 64-byte aligned */
	size_t n_decay;       /* params[0, n_decay) are the weight matrices (weight decay applies);
			       * embeddings, LayerNorms and biases follow */
	float *params;        /* (n_floats) one allocation */
	float *grads;         /* (n_floats) same layout */
	tm_tf_weights w;      /* into params */
	tm_tf_weights g;      /* into grads */
} tm_transformer;

/* A zero-filled model (LayerNorm gains 0 too: call tm_transformer_init or load weights);
 * caller frees with tm_transformer_free. */
int tm_transformer_new(tm_transformer **out, const tm_tf_spec *spec, tm_err *err);
void tm_transformer_free(tm_transformer *m);
/* GPT-2 style initialisation: normal(0, 0.02) matrices and embeddings, residual projections
 * scaled by 1/sqrt(2 L), zero biases, unit LayerNorm gains. */
void tm_transformer_init(tm_transformer *m, uint64_t seed);
void tm_transformer_zero_grad(tm_transformer *m);

/* One packed batch: rows x spec.ctx positions (pad unused positions with token 0 and any seg
 * id that no real sequence of the row uses). */
typedef struct tm_tf_batch {
	int rows;
	const int32_t *tok;      /* (rows, ctx) token ids */
	const int32_t *pos;      /* (rows, ctx) position of each token within its sequence */
	const int32_t *seg;      /* (rows, ctx) sequence id: attention stays within one id;
				  * NULL: each row is one sequence */
	int n_out;               /* positions whose logits are computed */
	const int32_t *out_idx;  /* (n_out) flat positions row * ctx + t; NULL: all, in order
				  * (n_out must then be rows * ctx) */
	const int32_t *targets;  /* (n_out) next-token ids, < 0 ignored; NULL: no loss */
} tm_tf_batch;

/* Activations for up to max_rows packed rows; with train, every layer's are kept for
 * tm_transformer_backward.  Caller frees with tm_tf_acts_free. */
typedef struct tm_tf_acts tm_tf_acts;
int tm_tf_acts_new(tm_tf_acts **out, const tm_transformer *m, int max_rows, bool train,
		   tm_err *err);
void tm_tf_acts_free(tm_tf_acts *a);
size_t tm_tf_acts_bytes(const tm_tf_acts *a);
const float *tm_tf_acts_logits(const tm_tf_acts *a); /* (n_out, vocab) of the last forward */

/* Forward; *loss (may be NULL) gets the mean cross-entropy over counted targets, and with
 * train activations the loss gradient is kept for backward.  Ids, positions, rows and out_idx
 * are validated (TM_EINVAL). */
int tm_transformer_forward(const tm_transformer *m, const tm_ctx *ctx, tm_tf_acts *a,
			   const tm_tf_batch *b, float *loss, tm_err *err);
/* Backward of the last forward (same batch, targets required): ACCUMULATES into m->grads. */
int tm_transformer_backward(tm_transformer *m, const tm_ctx *ctx, tm_tf_acts *a,
			    const tm_tf_batch *b, tm_err *err);

/* Greedy generation without a cache: every step recomputes the whole prefix.  Appends up to
 * max_new ids to out, stopping after the stop id (included; stop < 0: never) or when the
 * context is full.  Returns the number of ids written, or a negative TM_E* code. */
int tm_transformer_generate(const tm_transformer *m, const tm_ctx *ctx, const int32_t *prompt,
			    int n_prompt, int max_new, int32_t stop, int32_t *out, tm_err *err);
/* The same for n prompts at once (packed several per row): out is (n, max_new), out_len (n)
 * gets each count.  Tokens are identical to n calls of tm_transformer_generate up to float
 * rounding of the packed forward. */
int tm_transformer_generate_batch(const tm_transformer *m, const tm_ctx *ctx, int n,
				  const int32_t *const *prompts, const int *n_prompt, int max_new,
				  int32_t stop, int32_t *out, int *out_len, tm_err *err);

/* safetensors with PyTorch-style names ("wte.weight", "blocks.0.attn.qkv.weight", ...) and
 * the spec in __metadata__; meta is extra key, value pairs ending with NULL (may be NULL). */
int tm_transformer_save(const tm_transformer *m, const char *path, const char *const *meta,
			tm_err *err);
/* Spec from the metadata, every tensor checked by name, dtype and shape; caller frees. */
int tm_transformer_load(tm_transformer **out, const char *path, tm_err *err);

/* Decathlon quality of m on n examples: with generate, greedy generation from each prompt
 * (capped at the answer's length plus the end mark, which decides exact match); without,
 * the teacher-forced check (every answer token and the end mark is the argmax given the
 * true prefix), which is equivalent for greedy decoding and costs one forward. */
int tm_decathlon_evaluate(const tm_transformer *m, const tm_ctx *ctx, const tm_dec_example *ex,
			  int n, bool generate, tm_dec_score *score, tm_err *err);

typedef struct tm_decathlon_train_opts {
	tm_tf_spec spec;
	uint64_t seed;         /* initialisation, data stream and test set */
	int steps;             /* > 0: this many steps (reproducible for a seed and thread count) */
	double minutes;        /* steps == 0: train for this wall-clock budget */
	int rows;              /* packed rows of spec.ctx positions per step (40: ~128 examples) */
	int threads;           /* thread pool size (2) */
	tm_isa isa;            /* kernel set */
	float lr;              /* peak learning rate (3e-3) */
	float lr_final;        /* final learning rate as a fraction of the peak (0.05) */
	int warmup;            /* linear warm-up steps (100) */
	float beta1, beta2;    /* AdamW (0.9, 0.98) */
	float weight_decay;    /* on the weight matrices only (0.1) */
	float clip;            /* gradient L2 norm clip (1.0) */
	float task_weight[TM_DEC_NTASKS]; /* relative sampling weight of each task */
	int eval_every;        /* steps between progress evaluations (0: none) */
	int eval_per_task;     /* test prompts per task in progress evaluations */
	int test_per_task;     /* test prompts per task of the final evaluation */
	const char *out_path;  /* tm_decathlon_train_reference writes the weights here */
} tm_decathlon_train_opts;

typedef struct tm_decathlon_train_stats {
	int steps;
	double seconds;          /* training wall time */
	double tokens;           /* real (non-padding) tokens processed */
	double examples;
	float final_loss;        /* mean loss of the last 50 steps */
	tm_dec_score score;      /* final evaluation (by generation) */
	double eval_seconds;
} tm_decathlon_train_stats;

/* The reference recipe: reference spec, seed 1, the step budget that fits 10 minutes. */
void tm_decathlon_train_defaults(tm_decathlon_train_opts *o);
/* Train a new model (caller frees *out); progress (may be NULL) gets one key=value line per
 * eval_every steps (step, loss, lr, tokens_per_s, teacher-forced points per task); st->score
 * is left empty. */
int tm_decathlon_train(const tm_decathlon_train_opts *o, const tm_ctx *ctx,
		       tm_transformer **out, tm_decathlon_train_stats *st, FILE *progress,
		       tm_err *err);
/* What `tinymlperf-run train transformer_decathlon` runs: make the pool, train, evaluate by
 * generation on the held-out test set, save to o->out_path with the points in the metadata,
 * and print a final key=value line "decathlon: steps=... points=... copy=..." to progress. */
int tm_decathlon_train_reference(const tm_decathlon_train_opts *o, FILE *progress,
				 tm_decathlon_train_stats *st, tm_err *err);

// ---- optimizers (optim.c) ----

typedef enum tm_optim_kind { TM_OPTIM_SGD = 0, TM_OPTIM_ADAM = 1, TM_OPTIM_ADAMW = 2 } tm_optim_kind;

/* One optimizer over a flat parameter vector of n floats (a model's single allocation). */
typedef struct tm_optim {
	tm_optim_kind kind;
	size_t n;
	float momentum;      /* SGD */
	float beta1, beta2;  /* Adam(W) */
	float eps;
	float weight_decay;  /* SGD/Adam: L2 added to the gradient; AdamW: decoupled */
	int64_t step;        /* steps taken */
	float *m;            /* (n) momentum or first moment */
	float *v;            /* (n) second moment (Adam only) */
} tm_optim;

/* Defaults: momentum 0.9, betas (0.9, 0.999), eps 1e-8, no weight decay; set fields after. */
int tm_optim_init(tm_optim *o, tm_optim_kind kind, size_t n, tm_err *err);
void tm_optim_release(tm_optim *o);
/* params -= update(grads) with learning rate lr; grads are not modified. */
void tm_optim_step(tm_optim *o, float *params, const float *grads, float lr);
/* Scale grads so their L2 norm is at most max_norm; returns the norm before clipping. */
float tm_grad_clip(float *grads, size_t n, float max_norm);

/* A seeded generator (xoshiro256**) for shuffling and initialisation; deterministic. */
typedef struct tm_rng { uint64_t s[4]; } tm_rng;
void tm_rng_seed(tm_rng *r, uint64_t seed);
uint64_t tm_rng_next(tm_rng *r);
float tm_rng_uniform(tm_rng *r);                 /* [0, 1) */
float tm_rng_normal(tm_rng *r);                  /* mean 0, sd 1 */
uint32_t tm_rng_below(tm_rng *r, uint32_t n);    /* [0, n), unbiased */
void tm_rng_shuffle(tm_rng *r, int32_t *v, int n);

// ---- training (train.c) ----
/* Mini-batch training of a tm_model on an image dataset: seeded shuffling, SGD with momentum
 * or Adam(W) over the flat parameter vector, constant or cosine learning rate, progress lines
 * to a FILE*.  Deterministic: the same seed, data, config and thread count give bit-identical
 * weights.  Evaluation is top-1 accuracy over a whole dataset in batches. */

typedef enum tm_lr_schedule {
	TM_LR_CONSTANT = 0,
	TM_LR_COSINE = 1,    /* lr * (min + (1 - min) * 0.5 * (1 + cos(pi * step / steps))) */
} tm_lr_schedule;

#define TM_AUG_FLIP 1u   /* mirror left-right with probability 1/2 */
#define TM_AUG_SHIFT 2u  /* translate by -2..2 pixels along each axis, zero fill */

typedef struct tm_train_config {
	tm_optim_kind optim;
	float lr;                 /* peak learning rate */
	float momentum;           /* SGD */
	float weight_decay;       /* as tm_optim */
	tm_lr_schedule schedule;
	float lr_min;             /* cosine floor, fraction of lr */
	int epochs;               /* >= 1 */
	int batch;                /* samples per step, >= 1 */
	uint64_t seed;            /* shuffling and augmentation (tm_model_randomize takes its own) */
	unsigned augment;         /* TM_AUG_* flags applied to training images, 0: none */
	int log_every;            /* steps between progress lines; 0: one line per epoch */
	double max_seconds;       /* stop after this wall-clock time, 0: no limit (a stop that
				   * triggers makes the result timing-dependent) */
	const uint8_t *const *masks; /* fine-tuning with fixed masks: (model's n_layers) entries,
				      * masks[i] (layer i's w_len bytes, 1 kept, 0 pruned) or NULL;
				      * applied with tm_prune_mask_apply to the gradient before and
				      * to the weights after every step.  NULL (default): none */
} tm_train_config;

typedef struct tm_train_result {
	int epochs;               /* completed */
	int64_t steps;
	float loss;               /* mean training loss of the last epoch */
	double train_accuracy;    /* of the last epoch, on the fly */
	double test_accuracy;     /* after the last epoch; -1 without a test set */
	double seconds;           /* wall clock, training and per-epoch evaluation */
	bool stopped;             /* max_seconds reached */
} tm_train_result;

/* Defaults: Adam, lr 1e-3, cosine to 0, batch 128, 10 epochs, seed 1, no weight decay. */
void tm_train_config_default(tm_train_config *c);
/* The recipe of an event's reference model ("mlp_sprint", "cnn_marathon"). */
int tm_train_config_reference(tm_train_config *c, const char *event, tm_err *err);
/* "adam lr=0.001 cosine(min=0) batch=128 epochs=10 wd=0 seed=1" */
void tm_train_recipe_str(const tm_train_config *c, char *buf, size_t len);

/* Train m in place on train (test, if not NULL, is evaluated after every epoch); progress lines
 * go to log (NULL: quiet); res may be NULL.  Plans m for training with cfg->batch. */
int tm_train(tm_model *m, const tm_ctx *ctx, const tm_dataset *train, const tm_dataset *test,
	     const tm_train_config *cfg, FILE *log, tm_train_result *res, tm_err *err);
/* Top-1 accuracy of m over all of ds, in batches of m->max_batch (plans 256 if unplanned). */
int tm_evaluate(tm_model *m, const tm_ctx *ctx, const tm_dataset *ds, double *accuracy,
		tm_err *err);

// ---- profiler (prof.c) ----
/* Per-layer profile of inference: what ran in each layer, how long it took (CLOCK_MONOTONIC,
 * tm_now_ns), its FLOPs (2 per multiply-add) and the bytes it touched (weights as stored plus
 * the activations read and written).  Entries are summed over calls until tm_prof_reset, so a
 * caller divides by calls for one inference.  Peak memory comes from the OS (getrusage). */

#define TM_PROF_MAX 96

typedef struct tm_prof_entry {
	char layer[40];     /* "0", "3", "blocks.1.attn.qkv", "head" */
	char op[16];        /* "linear", "conv3x3", "maxpool2", "attention", "layernorm", ... */
	char kernel[64];    /* what ran: "f32 avx512 packed", "int8 avx512vnni", "sparse win16 f32" */
	int64_t calls;
	int64_t time_ns;    /* summed over calls */
	int64_t flops;      /* summed over calls */
	int64_t bytes;      /* summed over calls */
} tm_prof_entry;

typedef struct tm_prof {
	int n;                          /* entries in use, in first-call order */
	tm_prof_entry e[TM_PROF_MAX];
} tm_prof;

void tm_prof_reset(tm_prof *p);
/* The entry named layer (created with op and kernel on first use); NULL when p is NULL or
 * full, and tm_prof_add(NULL, ...) is a no-op, so callers need no checks. */
tm_prof_entry *tm_prof_entry_get(tm_prof *p, const char *layer, const char *op,
				 const char *kernel);
void tm_prof_add(tm_prof_entry *e, int64_t time_ns, int64_t flops, int64_t bytes);
/* Peak resident set size of this process so far (getrusage ru_maxrss), bytes; 0 if unknown. */
int64_t tm_peak_rss_bytes(void);
/* One core's measured FP32 peak in GFLOP/s (2 per multiply-add) with isa's vectors:
 * independent multiply-add chains held in registers for about `seconds` (scalar C for
 * TM_ISA_PORTABLE); 0 if cpu lacks isa.  A profile entry's achieved GFLOP/s over the peak of
 * tm_isa_best is its fraction of the machine's peak. */
double tm_prof_peak_gflops(const tm_cpu *cpu, tm_isa isa, double seconds);

// ---- optimized inference of the MLP and the CNN (infer.c) ----
/* An inference-only copy of a trained tm_model with the config's optimizations really applied:
 * FP32 layers prepacked for the kernel set (tm_linear_pack), INT8 layers (tm_qlinear, int8
 * conv) with activation scales calibrated on training images, unstructured magnitude pruning
 * stored sparsely (tm_sparse_w, f32 or int8) where tm_sparse_decide says it pays and dense
 * otherwise (the choice is reported per layer), and structured pruning that physically removes
 * MLP neurons / CNN filters (smallest L1 norm) and shrinks the next layer's inputs.  Pruning
 * may fine-tune on the training set for a bounded number of epochs with the mask (or the
 * reduced architecture) held fixed.  Sizes are the bytes actually allocated for the stored
 * weights of the representation that runs. */

typedef struct tm_infer_opts {
	int max_batch;               /* largest n of tm_infer_forward (>= 1) */
	bool quantize;               /* int8 weights and activations */
	tm_qgran gran;               /* per channel or per tensor weight scales */
	int calib_samples;           /* training images for activation calibration (>= 1) */
	tm_qcalib_method calib;      /* min/max or percentile */
	double calib_percentile;     /* percentile calibration, in (0, 100] */
	double sparsity;             /* 0: no pruning; unstructured: fraction of weights zeroed;
				      * structured: fraction of hidden neurons / filters removed */
	bool structured;
	bool prune_global;           /* unstructured: one threshold over all layers */
	int finetune_epochs;         /* after pruning, 0: none */
	uint64_t seed;               /* fine-tuning shuffle and calibration sample choice */
} tm_infer_opts;

/* max_batch 1, no quantization (per channel, 512 samples, min/max, 99.99), no pruning, seed 1. */
void tm_infer_opts_default(tm_infer_opts *o);

typedef struct tm_infer_layer {
	char name[16];               /* the source model's layer name */
	tm_op op;
	char kernel[64];             /* representation and kernel: "f32 packed avx512",
				      * "int8 avx512vnni", "sparse csr f32, 90.0% zeros (break-even
				      * 62%)", "dense int8: 40.0% zeros below break-even 75%" */
	int in_c, out_c;             /* after structured pruning */
	int64_t params;              /* weights + biases of the layer as built */
	int64_t nonzero;             /* of those, nonzero */
	size_t bytes;                /* bytes allocated for the stored weights */
	int64_t flops;               /* per sample, dense count of the layer as built */
} tm_infer_layer;

typedef struct tm_infer_stats {
	int64_t params;              /* parameters after structured pruning */
	int64_t nonzero_params;
	size_t bytes;                /* stored weight bytes, summed over layers */
	int64_t flops;               /* per inference (one sample or one token), as built */
} tm_infer_stats;

typedef struct tm_infer tm_infer;
/* Build from m (read only: pruning and fine-tuning work on a copy).  train supplies calibration
 * images and fine-tuning data (may be NULL when neither is asked for); log (may be NULL) gets
 * progress lines.  ctx chooses the kernel set and threads the layers are built for. */
int tm_infer_new(const tm_model *m, const tm_infer_opts *o, const tm_ctx *ctx,
		 const tm_dataset *train, FILE *log, tm_infer **out, tm_err *err);
void tm_infer_free(tm_infer *inf);
/* logits (n, classes) of n images (n <= max_batch); prof (may be NULL) gets one entry per layer. */
int tm_infer_forward(tm_infer *inf, const tm_ctx *ctx, int n, const uint8_t *pixels,
		     float *logits, tm_prof *prof, tm_err *err);
/* Top-1 accuracy over all of ds in batches of max_batch. */
int tm_infer_evaluate(tm_infer *inf, const tm_ctx *ctx, const tm_dataset *ds, double *accuracy,
		      tm_err *err);
void tm_infer_get_stats(const tm_infer *inf, tm_infer_stats *st);
int tm_infer_n_layers(const tm_infer *inf);
const tm_infer_layer *tm_infer_layer_at(const tm_infer *inf, int i);  /* NULL out of range */
/* The spec as built (structured pruning makes hidden layers / conv channels narrower). */
const tm_model_spec *tm_infer_spec(const tm_infer *inf);
/* Layer i's output units (neurons or filters) as indices into the source model's layer i,
 * ascending, *n of them: the units structured pruning kept (all of them without it).  NULL and
 * *n = 0 for a layer without weights or i out of range. */
const int *tm_infer_kept(const tm_infer *inf, int i, int *n);

// ---- transformer inference: KV cache, INT8, pruning (tf_infer.c) ----
/* An inference-only copy of a trained tm_transformer for greedy generation with the config's
 * optimizations: a KV cache (per-layer K and V preallocated for the full context, prefill of
 * the prompt, then one-token decode steps, reset between prompts); INT8 projections and FFN
 * (tm_qlinear, activation scales calibrated on training prompts); structured pruning of
 * attention heads and FFN neurons (removed physically, dependent matrices resized); and
 * unstructured magnitude pruning of the block matrices stored sparsely where it pays.  Without
 * any option it computes exactly what tm_transformer_generate does, and cached and uncached
 * generation give identical tokens. */

typedef struct tm_tf_infer_opts {
	bool kv_cache;
	bool quantize;               /* int8 qkv, proj, fc, fc2 and head */
	tm_qgran gran;
	int calib_prompts;           /* training examples used for calibration (>= 1) */
	tm_qcalib_method calib;
	double calib_percentile;
	double prune_heads;          /* fraction of heads removed per layer (structured), 0: none */
	double prune_ffn;            /* fraction of FFN neurons removed per layer, 0: none */
	double sparsity;             /* unstructured, block matrices, 0: none */
	uint64_t seed;
} tm_tf_infer_opts;

/* No cache, no quantization (per channel, 256 prompts, min/max, 99.99), no pruning, seed 1. */
void tm_tf_infer_opts_default(tm_tf_infer_opts *o);

typedef struct tm_tf_infer tm_tf_infer;
/* Build from m (read only).  calib (n_calib examples, may be NULL when not quantizing) are
 * training examples for activation calibration. */
int tm_tf_infer_new(const tm_transformer *m, const tm_tf_infer_opts *o, const tm_ctx *ctx,
		    const tm_dec_example *calib, int n_calib, tm_tf_infer **out, tm_err *err);
void tm_tf_infer_free(tm_tf_infer *t);
/* Greedy generation as tm_transformer_generate (same stop rule and return value); prof (may be
 * NULL) gets one entry per layer, summed over the steps. */
int tm_tf_infer_generate(tm_tf_infer *t, const tm_ctx *ctx, const int32_t *prompt, int n_prompt,
			 int max_new, int32_t stop, int32_t *out, tm_prof *prof, tm_err *err);
/* Decathlon points of the generated answers on n examples (as tm_decathlon_evaluate with
 * generate = true). */
int tm_tf_infer_evaluate(tm_tf_infer *t, const tm_ctx *ctx, const tm_dec_example *ex, int n,
			 tm_dec_score *score, tm_err *err);
void tm_tf_infer_get_stats(const tm_tf_infer *t, tm_infer_stats *st);
/* One line per optimized matrix like tm_infer_layer (kernel choice, sizes); NULL out of range. */
int tm_tf_infer_n_layers(const tm_tf_infer *t);
const tm_infer_layer *tm_tf_infer_layer_at(const tm_tf_infer *t, int i);
size_t tm_tf_infer_cache_bytes(const tm_tf_infer *t);  /* 0 without a cache */
/* Without the cache, tm_tf_infer_generate recomputes the state from nothing at every step in
 * the cached path's decomposition (the prompt's rows in one forward, then one row per
 * generated token), so both give bit-identical logits with any kernel set.  This is the plain
 * uncached path instead: one forward over the whole prefix per step (GEMM over all its rows),
 * the fastest way without a cache; its tokens equal the others' up to float rounding (bitwise
 * with the portable kernels).  Options as tm_tf_infer_generate; kv_cache is ignored. */
int tm_tf_infer_generate_recompute(tm_tf_infer *t, const tm_ctx *ctx, const int32_t *prompt,
				   int n_prompt, int max_new, int32_t stop, int32_t *out,
				   tm_prof *prof, tm_err *err);
/* (vocab) logits of the last generated step, valid until the next call on t. */
const float *tm_tf_infer_logits(const tm_tf_infer *t);
/* Heads and FFN neurons block layer kept after structured pruning (-1 out of range). */
int tm_tf_infer_block_heads(const tm_tf_infer *t, int layer);
int tm_tf_infer_block_ff(const tm_tf_infer *t, int layer);

#endif
