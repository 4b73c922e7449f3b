/* test_run.c: the run suite (placeholder while the module is written). */
#include "tests.h"

Suite *run_suite(void)
{
	return suite_create("run");
}
