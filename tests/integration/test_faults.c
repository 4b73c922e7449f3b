/* test_faults.c: the faults suite (placeholder while the module is written). */
#include "tests.h"

Suite *faults_suite(void)
{
	return suite_create("faults");
}
