/* test_decathlon.c: Check suite of engine/decathlon.c: deterministic generation, every task's
 * answer on hand-worked inputs, lengths within the context, the two long tasks, disjoint
 * train and test sets, the tokenizer round trip and exact-match scoring. */
#include "tests.h"
#include "engine.h"

#include <stdlib.h>
#include <string.h>

static void expect_answer(int task, const char *input, const char *want)
{
	char ans[TM_DEC_MAX_LEN + 1];
	int k = tm_dec_solve(task, input, ans, sizeof(ans));
	ck_assert_msg(k == (int)strlen(want), "%s '%s': length %d, want '%s'",
		      tm_dec_task_name(task), input, k, want);
	ck_assert_str_eq(ans, want);
}

START_TEST(test_answers_by_hand)
{
	expect_answer(TM_DEC_COPY, "mdtbhjc", "mdtbhjc");
	expect_answer(TM_DEC_REVERSE, "xepjmwb", "bwmjpex");
	expect_answer(TM_DEC_SORT, "719222", "122279");
	expect_answer(TM_DEC_SORT, "000", "000");
	/* units first: 567 + 312 = 879 -> "9780"; 999 + 999 = 1998 -> "8991" */
	expect_answer(TM_DEC_ADD, "765+213", "9780");
	expect_answer(TM_DEC_ADD, "999+999", "8991");
	expect_answer(TM_DEC_ADD, "500+500", "0100"); /* 5 + 5 */
	expect_answer(TM_DEC_ADD, "005+005", "0001"); /* 500 + 500 */
	expect_answer(TM_DEC_INC, "537346", "537347");
	expect_answer(TM_DEC_INC, "199", "200");
	expect_answer(TM_DEC_INC, "12999", "13000");
	expect_answer(TM_DEC_INC, "999", "1000");
	expect_answer(TM_DEC_MAX, "3377858469", "9");
	expect_answer(TM_DEC_MAX, "01010", "1");
	expect_answer(TM_DEC_COUNT, "ddcacaa", "3");
	expect_answer(TM_DEC_COUNT, "bcd", "0");
	expect_answer(TM_DEC_COUNT, "aaaaaaaaaa", "10");
	expect_answer(TM_DEC_MAJORITY, "10001110010", "0");
	expect_answer(TM_DEC_MAJORITY, "11011", "1");
	expect_answer(TM_DEC_DEDUP, "ebdebeaecb", "ebdac");
	expect_answer(TM_DEC_DEDUP, "bdebeaecb", "bdeac");
	expect_answer(TM_DEC_DEDUP, "fff", "f");
	expect_answer(TM_DEC_SHIFT, "abcxyz", "defabc");

	/* inputs outside a task's domain are refused */
	char ans[TM_DEC_MAX_LEN + 1];
	ck_assert_int_eq(tm_dec_solve(TM_DEC_SORT, "12a", ans, sizeof(ans)), -1);
	ck_assert_int_eq(tm_dec_solve(TM_DEC_ADD, "12+345", ans, sizeof(ans)), -1);
	ck_assert_int_eq(tm_dec_solve(TM_DEC_MAJORITY, "1100", ans, sizeof(ans)), -1);
	ck_assert_int_eq(tm_dec_solve(TM_DEC_COUNT, "abe", ans, sizeof(ans)), -1);
	ck_assert_int_eq(tm_dec_solve(TM_DEC_DEDUP, "abg", ans, sizeof(ans)), -1);
	ck_assert_int_eq(tm_dec_solve(TM_DEC_COPY, "", ans, sizeof(ans)), -1);
	ck_assert_int_eq(tm_dec_solve(TM_DEC_NTASKS, "abc", ans, sizeof(ans)), -1);
	ck_assert_int_eq(tm_dec_solve(TM_DEC_COPY, "abc", ans, 4), -1);

	tm_dec_example ex;
	ck_assert_int_eq(tm_dec_make(TM_DEC_ADD, "765+213", &ex), 0);
	ck_assert_str_eq(ex.text, "A765+213=9780.");
	ck_assert_int_eq(ex.prompt_len, 9);
	ck_assert_int_eq(ex.len, 14);
	/* 63 + 63 + 3 > 128: does not fit the context */
	char long_in[64];
	memset(long_in, 'a', 63);
	long_in[63] = '\0';
	ck_assert_int_eq(tm_dec_make(TM_DEC_COPY, long_in, &ex), -1);
}
END_TEST

START_TEST(test_task_table)
{
	char seen[TM_DEC_NTASKS + 1] = { 0 };
	for (int t = 0; t < TM_DEC_NTASKS; t++) {
		const char *name = tm_dec_task_name(t);
		ck_assert_ptr_nonnull(name);
		ck_assert_int_eq(tm_dec_task_find(name), t);
		char m = tm_dec_task_marker(t);
		ck_assert_int_ge(tm_dec_token(m), 0);
		ck_assert_ptr_null(memchr(seen, m, (size_t)t)); /* markers are distinct */
		seen[t] = m;
	}
	ck_assert_ptr_null(tm_dec_task_name(-1));
	ck_assert_ptr_null(tm_dec_task_name(TM_DEC_NTASKS));
	ck_assert_int_eq(tm_dec_task_find("parity"), -1);
}
END_TEST

START_TEST(test_generation_is_deterministic)
{
	tm_rng a, b, c;
	tm_rng_seed(&a, 42);
	tm_rng_seed(&b, 42);
	tm_rng_seed(&c, 43);
	int differ = 0;
	for (int i = 0; i < 500; i++) {
		int task = i % TM_DEC_NTASKS;
		tm_dec_example ea, eb, ec;
		tm_dec_train_example(&a, task, &ea);
		tm_dec_train_example(&b, task, &eb);
		tm_dec_train_example(&c, task, &ec);
		ck_assert_str_eq(ea.text, eb.text);
		ck_assert_int_eq(ea.len, eb.len);
		differ += strcmp(ea.text, ec.text) != 0;
	}
	ck_assert_int_gt(differ, 400);

	int n = TM_DEC_NTASKS * 20;
	tm_dec_example *s1 = calloc((size_t)n, sizeof(*s1));
	tm_dec_example *s2 = calloc((size_t)n, sizeof(*s2));
	tm_dec_example *s3 = calloc((size_t)n, sizeof(*s3));
	tm_dec_test_set(7, 20, s1);
	tm_dec_test_set(7, 20, s2);
	tm_dec_test_set(8, 20, s3);
	differ = 0;
	for (int i = 0; i < n; i++) {
		ck_assert_str_eq(s1[i].text, s2[i].text);
		ck_assert_int_eq(s1[i].task, i / 20);
		differ += strcmp(s1[i].text, s3[i].text) != 0;
	}
	ck_assert_int_gt(differ, n / 2);
	/* a task's test set does not depend on how many prompts the others get */
	tm_dec_example *s4 = calloc((size_t)TM_DEC_NTASKS * 5, sizeof(*s4));
	tm_dec_test_set(7, 5, s4);
	for (int t = 0; t < TM_DEC_NTASKS; t++)
		for (int i = 0; i < 5; i++)
			ck_assert_str_eq(s4[t * 5 + i].text, s1[t * 20 + i].text);
	free(s1);
	free(s2);
	free(s3);
	free(s4);
}
END_TEST

/* Every sampled example: correct answer, valid tokens, lengths within the context. */
START_TEST(test_examples_are_well_formed)
{
	tm_rng r;
	tm_rng_seed(&r, 1);
	int max_len[TM_DEC_NTASKS] = { 0 }, min_ans[TM_DEC_NTASKS];
	for (int t = 0; t < TM_DEC_NTASKS; t++)
		min_ans[t] = 1 << 20;
	int nines = 0, incs = 0;
	for (int i = 0; i < 20000; i++) {
		int task = i % TM_DEC_NTASKS;
		tm_dec_example ex;
		tm_dec_sample(&r, task, &ex);
		ck_assert_int_eq(ex.task, task);
		ck_assert_int_eq((int)strlen(ex.text), ex.len);
		ck_assert_int_le(ex.len, TM_DEC_MAX_LEN);
		ck_assert_int_eq(ex.text[0], tm_dec_task_marker(task));
		ck_assert_int_eq(ex.text[ex.prompt_len - 1], '=');
		ck_assert_int_eq(ex.text[ex.len - 1], '.');
		char in[TM_DEC_MAX_LEN + 1], ans[TM_DEC_MAX_LEN + 1];
		int n = ex.prompt_len - 2;
		memcpy(in, ex.text + 1, (size_t)n);
		in[n] = '\0';
		int k = tm_dec_solve(task, in, ans, sizeof(ans));
		ck_assert_int_eq(k, ex.len - ex.prompt_len - 1);
		ck_assert_int_eq(memcmp(ans, ex.text + ex.prompt_len, (size_t)k), 0);
		int32_t tok[TM_DEC_MAX_LEN];
		ck_assert_int_eq(tm_dec_encode(ex.text, ex.len, tok), ex.len);
		if (ex.len > max_len[task])
			max_len[task] = ex.len;
		if (k < min_ans[task])
			min_ans[task] = k;
		if (task == TM_DEC_INC) {
			incs++;
			nines += in[n - 1] == '9';
		}
	}
	/* copy and reverse answer 60 characters: 1 + 60 + 1 + 60 + 1 = 123 */
	ck_assert_int_eq(min_ans[TM_DEC_COPY], 60);
	ck_assert_int_eq(min_ans[TM_DEC_REVERSE], 60);
	ck_assert_int_eq(max_len[TM_DEC_COPY], 123);
	int long_tasks = 0;
	for (int t = 0; t < TM_DEC_NTASKS; t++)
		long_tasks += min_ans[t] >= 60;
	ck_assert_int_ge(long_tasks, 2);
	/* about 30% + 70% * 10% of increments end in a 9 */
	ck_assert_int_gt(nines, incs * 30 / 100);
	ck_assert_int_lt(nines, incs * 45 / 100);
}
END_TEST

/* The training stream never produces a prompt of the test set, and the test set is only
 * held-out prompts. */
START_TEST(test_train_and_test_are_disjoint)
{
	int per = TM_DEC_TEST_PER_TASK, n = TM_DEC_NTASKS * per;
	tm_dec_example *test = calloc((size_t)n, sizeof(*test));
	tm_dec_test_set(2024, per, test);
	for (int i = 0; i < n; i++)
		ck_assert(tm_dec_heldout(test[i].text, test[i].prompt_len));

	/* a hash set of the test prompts */
	enum { SLOTS = 1 << 14 };
	const char **slot = calloc(SLOTS, sizeof(*slot));
	for (int i = 0; i < n; i++) {
		uint64_t h = 1469598103934665603ull;
		for (int j = 0; j < test[i].prompt_len; j++)
			h = (h ^ (uint8_t)test[i].text[j]) * 1099511628211ull;
		size_t s = h % SLOTS;
		while (slot[s] && strcmp(slot[s], test[i].text) != 0)
			s = (s + 1) % SLOTS;
		slot[s] = test[i].text;
	}
	tm_rng r;
	tm_rng_seed(&r, 2024);
	int heldout_sampled = 0, sampled = 0;
	for (int i = 0; i < 200000; i++) {
		int task = (int)tm_rng_below(&r, TM_DEC_NTASKS);
		tm_dec_example ex;
		tm_dec_train_example(&r, task, &ex);
		ck_assert(!tm_dec_heldout(ex.text, ex.prompt_len));
		uint64_t h = 1469598103934665603ull;
		for (int j = 0; j < ex.prompt_len; j++)
			h = (h ^ (uint8_t)ex.text[j]) * 1099511628211ull;
		for (size_t s = h % SLOTS; slot[s]; s = (s + 1) % SLOTS)
			ck_assert_msg(strcmp(slot[s], ex.text) != 0,
				      "train example '%s' is in the test set", ex.text);
		/* the split holds out about one prompt in ten of the raw distribution */
		tm_dec_sample(&r, task, &ex);
		sampled++;
		heldout_sampled += tm_dec_heldout(ex.text, ex.prompt_len);
	}
	ck_assert_int_gt(heldout_sampled, sampled / 20);
	ck_assert_int_lt(heldout_sampled, sampled / 6);
	free(slot);
	free(test);
}
END_TEST

START_TEST(test_tokenizer_round_trip)
{
	const char *v = tm_dec_vocab();
	int nv = tm_dec_vocab_size();
	ck_assert_int_eq((int)strlen(v), nv);
	ck_assert_int_eq(v[TM_DEC_PAD], '_');
	ck_assert_int_eq(v[tm_dec_end_token()], '.');
	for (int i = 0; i < nv; i++)
		ck_assert_int_eq(tm_dec_token(v[i]), i);
	ck_assert_int_eq(tm_dec_token('Z'), -1);
	ck_assert_int_eq(tm_dec_token('\0'), -1);

	const char *s = "Debdebeaecb=ebdac.";
	int32_t tok[32];
	char back[33];
	ck_assert_int_eq(tm_dec_encode(s, (int)strlen(s), tok), (int)strlen(s));
	ck_assert_int_eq(tm_dec_decode(tok, (int)strlen(s), back), (int)strlen(s));
	ck_assert_str_eq(back, s);
	ck_assert_int_eq(tm_dec_encode("ab!", 3, tok), -1);
	tok[0] = nv;
	ck_assert_int_eq(tm_dec_decode(tok, 1, back), -1);
	tok[0] = -1;
	ck_assert_int_eq(tm_dec_decode(tok, 1, back), -1);

	/* targets: only the answer characters and the end mark are predicted */
	tm_dec_example ex;
	ck_assert_int_eq(tm_dec_make(TM_DEC_SORT, "719222", &ex), 0);
	int32_t tt[32], tg[32];
	tm_dec_example_tokens(&ex, tt, tg);
	for (int i = 0; i < ex.len; i++) {
		if (i >= ex.prompt_len - 1 && i < ex.len - 1)
			ck_assert_int_eq(tg[i], tt[i + 1]);
		else
			ck_assert_int_eq(tg[i], -1);
	}
	ck_assert_int_eq(tg[ex.len - 2], tm_dec_end_token());
}
END_TEST

START_TEST(test_scoring)
{
	tm_dec_example ex;
	ck_assert_int_eq(tm_dec_make(TM_DEC_SORT, "719222", &ex), 0);
	int32_t good[16], bad[16];
	int n = tm_dec_encode("122279.", 7, good);
	ck_assert(tm_dec_exact_match(&ex, good, n));
	/* tokens after the end mark are ignored; a missing end mark or one wrong digit is not */
	n = tm_dec_encode("122279.99", 9, good);
	ck_assert(tm_dec_exact_match(&ex, good, n));
	ck_assert(!tm_dec_exact_match(&ex, good, 6));
	n = tm_dec_encode("122297.", 7, bad);
	ck_assert(!tm_dec_exact_match(&ex, bad, n));
	n = tm_dec_encode("1222799", 7, bad);
	ck_assert(!tm_dec_exact_match(&ex, bad, n));
	n = tm_dec_encode("12227.", 6, bad);
	ck_assert(!tm_dec_exact_match(&ex, bad, n));

	tm_dec_score s;
	tm_dec_score_init(&s);
	int per = 4, total = TM_DEC_NTASKS * per;
	tm_dec_example *set = calloc((size_t)total, sizeof(*set));
	tm_dec_test_set(3, per, set);
	for (int i = 0; i < total; i++) {
		int32_t gen[TM_DEC_MAX_LEN];
		const tm_dec_example *e = &set[i];
		int k = tm_dec_encode(e->text + e->prompt_len, e->len - e->prompt_len, gen);
		/* perfect, except that half the prompts of task 3 get a wrong first token */
		if (e->task == 3 && i % 2 == 0)
			gen[0] = gen[0] == 4 ? 5 : 4;
		ck_assert_int_eq(tm_dec_score_add(&s, e, gen, k), !(e->task == 3 && i % 2 == 0));
	}
	tm_dec_score_finish(&s);
	for (int t = 0; t < TM_DEC_NTASKS; t++) {
		ck_assert_int_eq(s.total[t], per);
		ck_assert(s.points[t] == (t == 3 ? 50.0 : 100.0));
	}
	ck_assert(s.total_points == 950.0);
	tm_dec_score_init(&s);
	tm_dec_score_finish(&s);
	ck_assert(s.total_points == 0.0);
	free(set);
}
END_TEST

Suite *decathlon_suite(void)
{
	Suite *s = suite_create("decathlon");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_answers_by_hand);
	tcase_add_test(tc, test_task_table);
	tcase_add_test(tc, test_generation_is_deterministic);
	tcase_add_test(tc, test_examples_are_well_formed);
	tcase_add_test(tc, test_train_and_test_are_disjoint);
	tcase_add_test(tc, test_tokenizer_round_trip);
	tcase_add_test(tc, test_scoring);
	suite_add_tcase(s, tc);
	return s;
}
