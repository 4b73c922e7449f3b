/* run.c: placeholder while the module is written. */
#include "events.h"
