/* test_train.c: Check suite of engine/train.c (placeholder until the module lands). */
#include "tests.h"

Suite *train_suite(void)
{
	return suite_create("train");
}
