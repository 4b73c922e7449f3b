/* test_idx.c: Check suite of engine/idx.c (placeholder until the module lands). */
#include "tests.h"

Suite *idx_suite(void)
{
	return suite_create("idx");
}
