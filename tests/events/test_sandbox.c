/* test_sandbox.c: the sandbox suite (placeholder while the module is written). */
#include "tests.h"

Suite *sandbox_suite(void)
{
	return suite_create("sandbox");
}
