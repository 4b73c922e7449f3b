/* test_safetensors.c: Check suite of engine/safetensors.c (placeholder until the module lands). */
#include "tests.h"

Suite *safetensors_suite(void)
{
	return suite_create("safetensors");
}
