/* main.c: the one test runner.  Runs every suite in the table (or those named in
 * CK_RUN_SUITE, Check's own variable) and prints Check's summary line. */
#include "tests.h"

#include <stdlib.h>

typedef Suite *(*suite_fn)(void);

static const suite_fn suites[] = {
	util_suite,
	gemm_suite,
	sparse_suite,
	qgemm_suite,
	ops_suite,
	idx_suite,
	decathlon_suite,
	safetensors_suite,
	model_suite,
	train_suite,
	transformer_suite,
	infer_suite,
	tf_infer_suite,
	stats_suite,
	config_suite,
	harness_suite,
	run_suite,
	sandbox_suite,
	opts_suite,
	db_suite,
	sha256_suite,
	health_suite,
	teams_suite,
	api_suite,
	submissions_suite,
	leaderboard_suite,
	sched_suite,
	faults_suite,
	pages_suite,
	browser_suite,
};

int main(void)
{
	SRunner *sr = srunner_create(NULL);
	for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++)
		srunner_add_suite(sr, suites[i]());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
