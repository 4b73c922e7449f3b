/* test_tf_infer.c: the tf_infer suite (placeholder while the module is written). */
#include "tests.h"

Suite *tf_infer_suite(void)
{
	return suite_create("tf_infer");
}
