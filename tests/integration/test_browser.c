/* test_browser.c: the browser suite (placeholder while the module is written). */
#include "tests.h"

Suite *browser_suite(void)
{
	return suite_create("browser");
}
