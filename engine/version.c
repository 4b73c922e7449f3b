/* version.c: the build's git revision.  Only this file is compiled with TM_GIT_REV, so a new
 * commit rebuilds one object instead of the whole tree. */
#include "engine.h"

#ifndef TM_GIT_REV
#define TM_GIT_REV "unknown"
#endif

const char *tm_git_revision(void)
{
	return TM_GIT_REV;
}
