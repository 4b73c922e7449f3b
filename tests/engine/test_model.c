/* test_model.c: Check suite of engine/model.c (placeholder until the module lands). */
#include "tests.h"

Suite *model_suite(void)
{
	return suite_create("model");
}
