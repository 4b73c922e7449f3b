/* test_sched.c: the sched suite (placeholder while the module is written). */
#include "tests.h"

Suite *sched_suite(void)
{
	return suite_create("sched");
}
