/* test_infer.c: the infer suite (placeholder while the module is written). */
#include "tests.h"

Suite *infer_suite(void)
{
	return suite_create("infer");
}
