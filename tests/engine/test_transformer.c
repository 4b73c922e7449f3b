/* test_transformer.c: Check suite of engine/transformer.c (placeholder until the module lands). */
#include "tests.h"

Suite *transformer_suite(void)
{
	return suite_create("transformer");
}
