/* test_ops.c: Check suite of engine/ops.c (placeholder until the module lands). */
#include "tests.h"

Suite *ops_suite(void)
{
	return suite_create("ops");
}
