/* test_pages.c: the pages suite (placeholder while the module is written). */
#include "tests.h"

Suite *pages_suite(void)
{
	return suite_create("pages");
}
