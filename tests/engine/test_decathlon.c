/* test_decathlon.c: Check suite of engine/decathlon.c (placeholder until the module lands). */
#include "tests.h"

Suite *decathlon_suite(void)
{
	return suite_create("decathlon");
}
