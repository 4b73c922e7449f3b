/* decathlon.c: the ten generated string tasks of the Transformer Decathlon.  Each task is one
 * row of a table (name, marker, input sampler, solver); an example is the text
 * "<marker><input>=<answer>." over a fixed 50-character vocabulary.  Everything is
 * deterministic from a tm_rng.  The held-out split is a fixed hash of the prompt text, so the
 * training stream (which skips held-out prompts) and the test set (which keeps only them) can
 * never share an example.  Scoring is exact match of the greedy generation, 100 points per
 * task.  See docs/decathlon.md. */
#include "engine.h"

#include <string.h>

// ---- vocabulary ----

/* Id 0 is padding; then the punctuation, digits, lowercase letters and the task markers. */
static const char vocab[] = "_.=+0123456789abcdefghijklmnopqrstuvwxyzACDIKMNQRS";

const char *tm_dec_vocab(void)
{
	return vocab;
}

int tm_dec_vocab_size(void)
{
	return (int)sizeof(vocab) - 1;
}

int32_t tm_dec_token(char c)
{
	if (c == '\0')
		return -1;
	const char *p = strchr(vocab, c);
	return p ? (int32_t)(p - vocab) : -1;
}

int32_t tm_dec_end_token(void)
{
	return 1;
}

int tm_dec_encode(const char *s, int n, int32_t *tok)
{
	for (int i = 0; i < n; i++) {
		tok[i] = tm_dec_token(s[i]);
		if (tok[i] < 0)
			return -1;
	}
	return n;
}

int tm_dec_decode(const int32_t *tok, int n, char *s)
{
	for (int i = 0; i < n; i++) {
		if (tok[i] < 0 || tok[i] >= tm_dec_vocab_size()) {
			s[i] = '\0';
			return -1;
		}
		s[i] = vocab[tok[i]];
	}
	s[n] = '\0';
	return n;
}

// ---- samplers ----
/* Each writes a NUL-terminated input (without marker and '=') into in. */

static void sample_letters(tm_rng *r, char *in, int n, int alphabet)
{
	for (int i = 0; i < n; i++)
		in[i] = (char)('a' + tm_rng_below(r, (uint32_t)alphabet));
	in[n] = '\0';
}

static void sample_digits(tm_rng *r, char *in, int n)
{
	for (int i = 0; i < n; i++)
		in[i] = (char)('0' + tm_rng_below(r, 10));
	in[n] = '\0';
}

static int between(tm_rng *r, int lo, int hi)
{
	return lo + (int)tm_rng_below(r, (uint32_t)(hi - lo + 1));
}

static void sample_copy(tm_rng *r, char *in)
{
	sample_letters(r, in, 60, 26);
}

static void sample_sort(tm_rng *r, char *in)
{
	sample_digits(r, in, between(r, 3, 8));
}

static void sample_add(tm_rng *r, char *in)
{
	sample_digits(r, in, 3);
	in[3] = '+';
	sample_digits(r, in + 4, 3);
}

static void sample_inc(tm_rng *r, char *in)
{
	int n = between(r, 3, 8);
	sample_digits(r, in, n);
	in[0] = (char)('1' + tm_rng_below(r, 9));
	if (tm_rng_uniform(r) < 0.3f) {
		int run = between(r, 1, n);
		for (int i = n - run; i < n; i++)
			in[i] = '9';
	}
}

static void sample_max(tm_rng *r, char *in)
{
	sample_digits(r, in, between(r, 5, 15));
}

static void sample_count(tm_rng *r, char *in)
{
	sample_letters(r, in, between(r, 3, 10), 4);
}

static void sample_majority(tm_rng *r, char *in)
{
	int n = 5 + 2 * between(r, 0, 5);
	for (int i = 0; i < n; i++)
		in[i] = (char)('0' + tm_rng_below(r, 2));
	in[n] = '\0';
}

static void sample_dedup(tm_rng *r, char *in)
{
	sample_letters(r, in, between(r, 3, 10), 6);
}

static void sample_shift(tm_rng *r, char *in)
{
	sample_letters(r, in, 20, 26);
}

// ---- solvers ----
/* Each validates the input (n characters) and writes the answer; returns its length or -1. */

static bool all_in(const char *in, int n, char lo, char hi)
{
	for (int i = 0; i < n; i++)
		if (in[i] < lo || in[i] > hi)
			return false;
	return true;
}

static int solve_copy(const char *in, int n, char *ans)
{
	if (n < 1 || !all_in(in, n, 'a', 'z'))
		return -1;
	memcpy(ans, in, (size_t)n);
	return n;
}

static int solve_reverse(const char *in, int n, char *ans)
{
	if (n < 1 || !all_in(in, n, 'a', 'z'))
		return -1;
	for (int i = 0; i < n; i++)
		ans[i] = in[n - 1 - i];
	return n;
}

static int solve_sort(const char *in, int n, char *ans)
{
	if (n < 1 || !all_in(in, n, '0', '9'))
		return -1;
	int count[10] = { 0 };
	for (int i = 0; i < n; i++)
		count[in[i] - '0']++;
	int k = 0;
	for (int d = 0; d < 10; d++)
		for (int c = 0; c < count[d]; c++)
			ans[k++] = (char)('0' + d);
	return k;
}

static int solve_add(const char *in, int n, char *ans)
{
	if (n != 7 || in[3] != '+' || !all_in(in, 3, '0', '9') || !all_in(in + 4, 3, '0', '9'))
		return -1;
	int carry = 0;
	for (int i = 0; i < 3; i++) {
		int s = (in[i] - '0') + (in[4 + i] - '0') + carry;
		ans[i] = (char)('0' + s % 10);
		carry = s / 10;
	}
	ans[3] = (char)('0' + carry);
	return 4;
}

static int solve_inc(const char *in, int n, char *ans)
{
	if (n < 1 || !all_in(in, n, '0', '9'))
		return -1;
	memcpy(ans, in, (size_t)n);
	int i = n - 1;
	while (i >= 0 && ans[i] == '9')
		ans[i--] = '0';
	if (i >= 0) {
		ans[i]++;
		return n;
	}
	memmove(ans + 1, ans, (size_t)n);
	ans[0] = '1';
	return n + 1;
}

static int solve_max(const char *in, int n, char *ans)
{
	if (n < 1 || !all_in(in, n, '0', '9'))
		return -1;
	char m = '0';
	for (int i = 0; i < n; i++)
		if (in[i] > m)
			m = in[i];
	ans[0] = m;
	return 1;
}

static int solve_count(const char *in, int n, char *ans)
{
	if (n < 1 || !all_in(in, n, 'a', 'd'))
		return -1;
	int c = 0;
	for (int i = 0; i < n; i++)
		c += in[i] == 'a';
	if (c >= 10) {
		ans[0] = (char)('0' + c / 10);
		ans[1] = (char)('0' + c % 10);
		return 2;
	}
	ans[0] = (char)('0' + c);
	return 1;
}

static int solve_majority(const char *in, int n, char *ans)
{
	if (n < 1 || n % 2 == 0 || !all_in(in, n, '0', '1'))
		return -1;
	int ones = 0;
	for (int i = 0; i < n; i++)
		ones += in[i] == '1';
	ans[0] = 2 * ones > n ? '1' : '0';
	return 1;
}

static int solve_dedup(const char *in, int n, char *ans)
{
	if (n < 1 || !all_in(in, n, 'a', 'f'))
		return -1;
	bool seen[6] = { false };
	int k = 0;
	for (int i = 0; i < n; i++) {
		if (!seen[in[i] - 'a'])
			ans[k++] = in[i];
		seen[in[i] - 'a'] = true;
	}
	return k;
}

static int solve_shift(const char *in, int n, char *ans)
{
	if (n < 1 || !all_in(in, n, 'a', 'z'))
		return -1;
	for (int i = 0; i < n; i++)
		ans[i] = (char)('a' + (in[i] - 'a' + 3) % 26);
	return n;
}

// ---- the task table ----

typedef struct dec_task {
	const char *name;
	char marker;
	void (*sample)(tm_rng *r, char *in);
	int (*solve)(const char *in, int n, char *ans);
} dec_task;

static const dec_task tasks[TM_DEC_NTASKS] = {
	[TM_DEC_COPY] = { "copy", 'C', sample_copy, solve_copy },
	[TM_DEC_REVERSE] = { "reverse", 'R', sample_copy, solve_reverse },
	[TM_DEC_SORT] = { "sort", 'S', sample_sort, solve_sort },
	[TM_DEC_ADD] = { "add", 'A', sample_add, solve_add },
	[TM_DEC_INC] = { "increment", 'I', sample_inc, solve_inc },
	[TM_DEC_MAX] = { "max", 'M', sample_max, solve_max },
	[TM_DEC_COUNT] = { "count", 'N', sample_count, solve_count },
	[TM_DEC_MAJORITY] = { "majority", 'Q', sample_majority, solve_majority },
	[TM_DEC_DEDUP] = { "dedup", 'D', sample_dedup, solve_dedup },
	[TM_DEC_SHIFT] = { "shift", 'K', sample_shift, solve_shift },
};

const char *tm_dec_task_name(int task)
{
	return task >= 0 && task < TM_DEC_NTASKS ? tasks[task].name : NULL;
}

char tm_dec_task_marker(int task)
{
	return task >= 0 && task < TM_DEC_NTASKS ? tasks[task].marker : '\0';
}

int tm_dec_task_find(const char *name)
{
	for (int t = 0; t < TM_DEC_NTASKS; t++)
		if (strcmp(tasks[t].name, name) == 0)
			return t;
	return -1;
}

int tm_dec_solve(int task, const char *input, char *ans, size_t cap)
{
	size_t n = strlen(input);
	/* no answer is longer than its input plus one character (increment of 9...9) */
	if (task < 0 || task >= TM_DEC_NTASKS || n > TM_DEC_MAX_LEN || n + 2 > cap)
		return -1;
	int k = tasks[task].solve(input, (int)n, ans);
	if (k < 0)
		return -1;
	ans[k] = '\0';
	return k;
}

int tm_dec_make(int task, const char *input, tm_dec_example *ex)
{
	char ans[TM_DEC_MAX_LEN + 1];
	int k = tm_dec_solve(task, input, ans, sizeof(ans));
	if (k < 0)
		return -1;
	int n = (int)strlen(input);
	if (1 + n + 1 + k + 1 > TM_DEC_MAX_LEN)
		return -1;
	ex->task = task;
	ex->text[0] = tasks[task].marker;
	memcpy(ex->text + 1, input, (size_t)n);
	ex->text[1 + n] = '=';
	memcpy(ex->text + 2 + n, ans, (size_t)k);
	ex->text[2 + n + k] = '.';
	ex->text[3 + n + k] = '\0';
	ex->prompt_len = n + 2;
	ex->len = n + k + 3;
	return 0;
}

// ---- sampling and the split ----

void tm_dec_sample(tm_rng *r, int task, tm_dec_example *ex)
{
	char in[TM_DEC_MAX_LEN + 1];
	tasks[task].sample(r, in);
	int rc = tm_dec_make(task, in, ex);
	(void)rc;
	/* every sampler stays inside its solver's domain and the context */
}

/* FNV-1a over the prompt, then a 64-bit finaliser so that the low bits are well mixed. */
static uint64_t prompt_hash(const char *p, int n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (int i = 0; i < n; i++) {
		h ^= (uint8_t)p[i];
		h *= 0x100000001b3ull;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return h;
}

bool tm_dec_heldout(const char *prompt, int prompt_len)
{
	return prompt_hash(prompt, prompt_len) % 10 == 7;
}

void tm_dec_train_example(tm_rng *r, int task, tm_dec_example *ex)
{
	do
		tm_dec_sample(r, task, ex);
	while (tm_dec_heldout(ex->text, ex->prompt_len));
}

void tm_dec_test_set(uint64_t seed, int per_task, tm_dec_example *out)
{
	for (int t = 0; t < TM_DEC_NTASKS; t++) {
		tm_rng r;
		tm_rng_seed(&r, seed ^ (0x7e57u + 0x9E3779B97F4A7C15ull * (uint64_t)(t + 1)));
		for (int i = 0; i < per_task; i++) {
			tm_dec_example *ex = &out[t * per_task + i];
			do
				tm_dec_sample(&r, t, ex);
			while (!tm_dec_heldout(ex->text, ex->prompt_len));
		}
	}
}

// ---- tokens and scoring ----

void tm_dec_example_tokens(const tm_dec_example *ex, int32_t *tok, int32_t *tgt)
{
	tm_dec_encode(ex->text, ex->len, tok);
	for (int i = 0; i < ex->len; i++)
		tgt[i] = i + 1 >= ex->prompt_len && i + 1 < ex->len ? tok[i + 1] : -1;
}

bool tm_dec_exact_match(const tm_dec_example *ex, const int32_t *gen, int n)
{
	int want = ex->len - ex->prompt_len; /* answer and end mark */
	if (n < want)
		return false;
	for (int i = 0; i < want; i++)
		if (gen[i] != tm_dec_token(ex->text[ex->prompt_len + i]))
			return false;
	return true;
}

void tm_dec_score_init(tm_dec_score *s)
{
	memset(s, 0, sizeof(*s));
}

bool tm_dec_score_add(tm_dec_score *s, const tm_dec_example *ex, const int32_t *gen, int n)
{
	bool ok = tm_dec_exact_match(ex, gen, n);
	s->total[ex->task]++;
	s->correct[ex->task] += ok;
	return ok;
}

void tm_dec_score_finish(tm_dec_score *s)
{
	s->total_points = 0;
	for (int t = 0; t < TM_DEC_NTASKS; t++) {
		s->points[t] = s->total[t] ? 100.0 * s->correct[t] / s->total[t] : 0.0;
		s->total_points += s->points[t];
	}
}
